"""What these tests prove about stamping, the write log and the checker.

* Stamps: applying random overlapping stamped writes to a bytearray in
  order, ``read_stamps`` recovers exactly the log's latest write per sector;
  torn, bit-flipped, misplaced and foreign sectors read as corrupt, never as
  a write id; ``image_from_ids`` builds the same bytes as applying payloads.
* Write log: CSV round trip with the exact header; unacknowledged writes
  stay empty; bad rows are rejected naming file and line.
* Checker: accepts any prefix of completed writes, writes fully overwritten
  by later present writes, and concurrent overlapping writes landing in
  either order; REJECTS an image where a dependent write is present but an
  earlier completed one is missing (the checker can fail), corrupt sectors,
  stamps of unknown or misplaced writes; reports RPO; ``equals`` and the
  sync-PAIR "every acknowledged write" check; the CLI's exit codes.
* Properties (hypothesis, numpy-seeded): for random concurrent overlapping
  write sequences and a random dependency-respecting cut (with in-flight
  writes torn at sector granularity) the checker says consistent; for a
  constructed violation it says inconsistent; for random tampering it
  agrees with a naive oracle written straight from the definition.
Every generated case carries its seed in the assertion message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.verify.checker import check, equals, holds_all_acknowledged, main
from controllers.formats.stamp import (CORRUPT, UNWRITTEN, image_from_ids, make_payload, read_stamps,
                               scan_image, verify_sector)
from controllers.formats.writelog import HEADER, WriteLog, WriteRecord

SB = 512


# ---------------------------------------------------------------------------
# helpers: a tiny host + device model

@dataclass
class W:
    wid: int
    ldev: int
    lba: int
    sectors: int
    issue: int
    complete: int | None
    apply: float          # when the device applied it (issue < apply < complete)


def gen_writes(seed: int, n: int, ldev_sectors: dict[int, int], max_sectors: int = 6,
               crash_ns: int | None = None) -> list[W]:
    """Random overlapping, partly concurrent writes; ids in issue order."""
    rng = np.random.default_rng(seed)
    t = 0
    out = []
    ldevs = sorted(ldev_sectors)
    for wid in range(1, n + 1):
        t += int(rng.integers(0, 30)) * 100
        ldev = ldevs[int(rng.integers(len(ldevs)))]
        size = ldev_sectors[ldev]
        sectors = int(rng.integers(1, min(max_sectors, size) + 1))
        lba = int(rng.integers(0, size - sectors + 1))
        dur = int(rng.integers(1, 60)) * 100
        complete = t + dur
        apply = t + dur * float(rng.uniform(0.01, 0.99))
        out.append(W(wid, ldev, lba, sectors, t, complete, apply))
    if crash_ns is not None:
        for w in out:
            if w.complete is not None and w.complete > crash_ns:
                w.complete = None
    return out


def to_log(writes: list[W], site: str = "M") -> WriteLog:
    log = WriteLog()
    for w in writes:
        log.add(WriteRecord(w.wid, site, w.ldev, w.lba, w.sectors, w.issue, w.complete))
    return log


def precedes(a: W, b: W) -> bool:
    """a -> b: a completed before (or when) b was issued."""
    return a is not b and a.complete is not None and a.complete <= b.issue


def ids_after(writes: list[W], ldev_sectors: dict[int, int], torn: dict[int, set[int]] | None = None):
    """Per-sector latest write id after applying ``writes`` in apply order.

    ``torn[wid]`` = sectors (absolute lba) of that write that did NOT land.
    """
    ids = {ldev: np.zeros(n, dtype=np.int64) for ldev, n in ldev_sectors.items()}
    for w in sorted(writes, key=lambda w: w.apply):
        skip = (torn or {}).get(w.wid, set())
        for s in range(w.lba, w.lba + w.sectors):
            if s not in skip:
                ids[w.ldev][s] = w.wid
    return ids


def images_of(ids: dict[int, np.ndarray]) -> dict[int, bytes]:
    return {ldev: image_from_ids(a, ldev) for ldev, a in ids.items()}


def closure(writes: list[W], chosen: set[int]) -> set[int]:
    """Downward closure of ``chosen`` under -> (one step suffices: -> is transitive)."""
    by_id = {w.wid: w for w in writes}
    out = set(chosen)
    for b in chosen:
        out |= {a.wid for a in writes if precedes(a, by_id[b])}
    return out


def oracle(ids: dict[int, np.ndarray], writes: list[W], corrupt: set[tuple[int, int]] = frozenset()) -> bool:
    """The checker's definition, written naively (tests only, small inputs)."""
    by_id = {w.wid: w for w in writes}
    if corrupt:
        return False
    for ldev, arr in ids.items():
        for s, c in enumerate(arr):
            if c and (c not in by_id or by_id[c].ldev != ldev or not by_id[c].lba <= s < by_id[c].lba + by_id[c].sectors):
                return False
    visible = {int(c) for arr in ids.values() for c in arr if c}
    for b in visible:
        for a in writes:
            if not precedes(a, by_id[b]):
                continue
            for s in range(a.lba, a.lba + a.sectors):
                c = int(ids[a.ldev][s])
                if c == a.wid:
                    continue
                if c == 0 or precedes(by_id[c], a):
                    return False
    return True


# ---------------------------------------------------------------------------
# stamps

@pytest.mark.parametrize("seed", range(5))
def test_stamps_recover_latest_write_per_sector(seed):
    """Random overlapping writes applied in order: stamps == log's latest write per sector."""
    rng = np.random.default_rng(seed)
    n_sectors, ldev = 200, 3
    image = bytearray(n_sectors * SB)
    log = WriteLog()
    for _ in range(300):
        sectors = int(rng.integers(1, 17))
        lba = int(rng.integers(0, n_sectors - sectors + 1))
        wid = log.next_id()
        log.issue(wid, "M", ldev, lba, sectors, wid * 10)
        image[lba * SB:(lba + sectors) * SB] = make_payload(ldev, lba, sectors, wid)
    expected = np.zeros(n_sectors, dtype=np.int64)
    for rec in log:                      # the log is in issue order = apply order here
        expected[rec.lba:rec.lba + rec.sectors] = rec.write_id
    got = read_stamps(bytes(image), ldev)
    assert np.array_equal(got, expected), f"seed={seed}"
    assert image_from_ids(expected, ldev) == bytes(image), f"seed={seed}"


def test_payload_layout():
    """Header is EMUW, u32 ldev, u64 lba, u64 write id, little-endian, in every sector."""
    p = make_payload(7, 100, 2, 0x1122334455)
    assert len(p) == 2 * SB
    assert p[0:4] == b"EMUW" and p[512:516] == b"EMUW"
    assert int.from_bytes(p[4:8], "little") == 7
    assert int.from_bytes(p[8:16], "little") == 100 and int.from_bytes(p[520:528], "little") == 101
    assert int.from_bytes(p[16:24], "little") == 0x1122334455
    assert p[24:512] != make_payload(7, 100, 1, 0x1122334456)[24:512]   # filler depends on write id
    assert p[24:512] != p[512 + 24:]                                    # and on lba


def test_corrupt_sectors_are_not_write_ids():
    """Torn, bit-flipped, misplaced and foreign sectors are corrupt; zeros are unwritten."""
    old = make_payload(0, 5, 1, 1)
    new = make_payload(0, 5, 1, 2)
    assert verify_sector(new, 0, 5).write_id == 2 and verify_sector(new, 0, 5).ok
    torn = new[:256] + old[256:]
    assert verify_sector(torn, 0, 5).state == "corrupt"
    flipped = bytearray(new)
    flipped[400] ^= 0x10
    assert verify_sector(bytes(flipped), 0, 5).state == "corrupt"
    assert verify_sector(new, 0, 6).state == "corrupt"          # misplaced
    assert verify_sector(new, 1, 5).state == "corrupt"          # wrong LDEV
    assert verify_sector(bytes(SB), 0, 5).state == "unwritten"
    assert verify_sector(b"\x01" + bytes(SB - 1), 0, 5).state == "corrupt"
    assert verify_sector(new, 0, 5, expected_write_id=1).state == "corrupt"
    image = bytes(SB * 5) + torn + bytes(SB)
    scan = scan_image(image, 0)
    assert list(scan.state) == [UNWRITTEN] * 5 + [CORRUPT, UNWRITTEN]
    assert list(read_stamps(image, 0)) == [0] * 5 + [-1, 0]
    with pytest.raises(ValueError, match="multiple of 512"):
        scan_image(b"x" * 100, 0)
    with pytest.raises(ValueError, match="write_id"):
        make_payload(0, 0, 1, 0)


# ---------------------------------------------------------------------------
# write log

def test_writelog_csv_round_trip(tmp_path):
    """Exact header, empty complete_ns for unacknowledged writes, -1 accepted on load."""
    log = WriteLog()
    log.issue(1, "M", 0, 8, 8, 100)
    log.issue(2, "M", 1, 0, 1, 150)
    log.complete(1, 300)
    path = tmp_path / "w.csv"
    log.save(path)
    text = path.read_text()
    assert text.splitlines()[0] == "write_id,site,ldev,lba,sectors,issue_ns,complete_ns"
    assert text.splitlines()[2] == "2,M,1,0,1,150,"
    back = WriteLog.load(path)
    assert list(back) == list(log)
    assert back[2].complete_ns is None
    assert WriteLog.loads(",".join(HEADER) + "\n3,R,0,0,1,5,-1\n")[3].complete_ns is None


@pytest.mark.parametrize("body, match", [
    ("write_id,site\n", "header"),
    (",".join(HEADER) + "\n1,M,0,0,1,5\n", ":2: expected 7 fields"),
    (",".join(HEADER) + "\n1,M,0,0,x,5,6\n", ":2: sectors: expected an integer"),
    (",".join(HEADER) + "\n1,M,0,0,1,5,6\n1,M,0,0,1,5,6\n", ":3: duplicate write_id 1"),
    (",".join(HEADER) + "\n1,M,0,0,1,9,6\n", ":2: .*complete_ns 6 < issue_ns 9"),
])
def test_writelog_rejects_bad_rows(body, match):
    with pytest.raises(ValueError, match=match):
        WriteLog.loads(body, "log.csv")


# ---------------------------------------------------------------------------
# checker: hand-made cases

SIZES = {0: 64, 1: 64}


def test_prefix_of_completed_writes_is_consistent():
    """Closed-loop host (iodepth 1): any prefix of the writes is consistent; RPO = the rest."""
    writes = []
    t = 0
    rng = np.random.default_rng(1)
    for wid in range(1, 41):
        ldev, n = wid % 2, int(rng.integers(1, 9))
        lba = int(rng.integers(0, 64 - n + 1))
        writes.append(W(wid, ldev, lba, n, t, t + 50, t + 25))
        t += 50                         # next issued exactly when this one completes
    log = to_log(writes)
    for k in (0, 1, 17, 40):
        ids = ids_after(writes[:k], SIZES)
        v = check(images_of(ids), log, [[0, 1]])
        assert v.consistent, (k, v.reasons)
        assert v.missing_acked <= 40 - k and (k == 40) == (v.missing_acked == 0)


def test_rejects_missing_earlier_completed_write():
    """B issued after A completed is present, A is missing: INCONSISTENT, naming both."""
    a = W(1, 0, 10, 4, 0, 100, 50)
    b = W(2, 1, 0, 2, 100, 200, 150)
    log = to_log([a, b])
    v = check(images_of(ids_after([b], SIZES)), log, [[0, 1]])
    assert not v.consistent
    assert "write 1" in v.reasons[0] and "dependent write 2" in v.reasons[0] and "ldev 0 lba 10" in v.reasons[0]
    # per-LDEV units: A and B are in different units, so each unit alone is consistent
    assert check(images_of(ids_after([b], SIZES)), log).consistent
    # and with A there too, the group is consistent
    assert check(images_of(ids_after([a, b], SIZES)), log, [[0, 1]]).consistent


def test_partially_present_required_write_is_rejected():
    """A required write with one sector still showing older data is not held."""
    old = W(1, 0, 0, 8, 0, 100, 50)
    a = W(2, 0, 0, 8, 100, 200, 150)
    b = W(3, 0, 20, 1, 200, 300, 250)
    ids = ids_after([old, a, b], SIZES, torn={2: {5}})
    v = check(images_of(ids), to_log([old, a, b]))
    assert not v.consistent and "older write 1" in v.reasons[0]


def test_overwritten_and_concurrent_writes_are_fine():
    """A fully overwritten by later present writes counts as held; concurrent overlaps may land either way."""
    a = W(1, 0, 0, 8, 0, 100, 50)
    c = W(2, 0, 0, 4, 100, 200, 150)     # after a, covers a's first half
    d = W(3, 0, 4, 4, 100, 250, 160)     # after a, covers the second half
    b = W(4, 1, 0, 1, 300, 400, 350)     # depends on everything
    log = to_log([a, c, d, b])
    ids = ids_after([a, c, d, b], SIZES)
    assert not (ids[0][:8] == 1).any()
    assert check(images_of(ids), log, [[0, 1]]).consistent
    # concurrent x (0-3) and y (2-5): on the overlap either may win
    x = W(1, 0, 0, 4, 0, 100, 60)
    y = W(2, 0, 2, 4, 10, 110, 40)
    z = W(3, 0, 30, 1, 200, 300, 250)
    for order in ((x, y), (y, x)):
        for i, w in enumerate(order):
            w.apply = 40 + 20 * i
        v = check(images_of(ids_after([x, y, z], SIZES)), to_log([x, y, z]))
        assert v.consistent, v.reasons


def test_zero_latency_write_does_not_depend_on_itself():
    """issue_ns == complete_ns: the write is not required by its own presence; held ids are reported."""
    a = W(1, 0, 0, 4, 100, 100, 100)
    ids = ids_after([a], SIZES, torn={1: {2}})
    v = check(images_of(ids), to_log([a]))
    assert v.consistent and v.counts["required_writes"] == 0 and v.missing_acked == 1
    b = W(2, 0, 10, 1, 100, 150, 120)                  # issued when a completed: depends on a
    v = check(images_of(ids_after([a, b], SIZES, torn={1: {2}})), to_log([a, b]))
    assert not v.consistent and v.reasons[0].startswith("write 1 ")
    v = check(images_of(ids_after([a, b], SIZES)), to_log([a, b]))
    assert v.consistent and list(v.held_write_ids) == [1, 2]


def test_rejects_corrupt_unknown_and_misplaced():
    a = W(1, 0, 0, 4, 0, 100, 50)
    log = to_log([a])
    img = bytearray(image_from_ids(ids_after([a], SIZES)[0], 0))
    img[2 * SB + 300] ^= 1
    v = check({0: bytes(img)}, log)
    assert not v.consistent and v.counts["corrupt_sectors"] == 1 and "ldev 0 lba 2" in v.reasons[0]
    ids = np.zeros(64, dtype=np.int64)
    ids[9] = 77
    v = check({0: image_from_ids(ids, 0)}, log)
    assert not v.consistent and v.counts["unknown_stamps"] == 1 and "77" in v.reasons[0]
    ids[9] = 1                              # write 1 exists but covers lba 0-3 only
    v = check({0: image_from_ids(ids, 0)}, log)
    assert not v.consistent and v.counts["misplaced_stamps"] == 1


def test_rpo_and_sync_pair_requirement():
    """Unacknowledged-but-missing is fine; acknowledged-but-missing counts as RPO, and fails in sync mode."""
    a = W(1, 0, 0, 4, 0, 100, 50)
    b = W(2, 0, 8, 4, 50, 150, 120)      # concurrent with a, acknowledged
    c = W(3, 0, 16, 4, 60, None, 120)    # never acknowledged
    log = to_log([a, b, c])
    ids = ids_after([a], SIZES)
    v = check(images_of(ids), log)
    assert v.consistent and v.missing_acked == 1 and v.missing_acked_max_complete_ns == 150
    s = holds_all_acknowledged(images_of(ids), log)
    assert not s.consistent and "acknowledged write 2" in s.reasons[0]
    assert holds_all_acknowledged(images_of(ids_after([a, b], SIZES)), log).consistent
    # writes issued at another site are ignored when the check is restricted to one site
    other = to_log([a, b, c]).filter()
    other.add(WriteRecord(9, "R", 0, 30, 1, 0, 10))
    assert holds_all_acknowledged(images_of(ids_after([a, b], SIZES)), other, sites=["M"]).consistent
    assert not holds_all_acknowledged(images_of(ids_after([a, b], SIZES)), other).consistent


def test_equals_reference_image():
    a = W(1, 0, 0, 4, 0, 100, 50)
    b = W(2, 0, 2, 4, 200, 300, 250)
    ref = images_of(ids_after([a], SIZES))
    assert equals(ref, dict(ref))
    v = equals(images_of(ids_after([a, b], SIZES)), ref)
    assert not v and v.counts["differing_sectors"] == 4
    assert "ldev 0 lba 2: image shows write 2, reference shows write 1" in v.reasons[0]


def test_log_extent_past_image_is_bad_input():
    with pytest.raises(ValueError, match="runs past the end"):
        check({0: bytes(4 * SB)}, to_log([W(1, 0, 2, 4, 0, 10, 5)]))


def test_cli_exit_codes(tmp_path, capsys):
    """emu check: 0 consistent, 1 inconsistent, 2 bad input with a one-line message."""
    a = W(1, 0, 10, 4, 0, 100, 50)
    b = W(2, 1, 0, 2, 100, 200, 150)
    to_log([a, b]).save(tmp_path / "w.csv")
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, writes in ((good, [a, b]), (bad, [b])):
        folder.mkdir()
        for ldev, img in images_of(ids_after(writes, SIZES)).items():
            (folder / f"ldev{ldev}.img").write_bytes(img)
    assert main([str(good), str(tmp_path / "w.csv"), "--unit", "group"]) == 0
    assert capsys.readouterr().out.startswith("CONSISTENT")
    assert main([str(bad), str(tmp_path / "w.csv"), "--group", "0,1"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("INCONSISTENT") and out.count("\n") == 1
    assert main([str(bad), str(tmp_path / "w.csv")]) == 0          # per-LDEV units
    capsys.readouterr()
    assert main([str(tmp_path / "nope"), str(tmp_path / "w.csv")]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "broken.csv").write_text("write_id,site,ldev,lba,sectors,issue_ns,complete_ns\n1,M,0\n")
    assert main([str(good), str(tmp_path / "broken.csv")]) == 2
    err = capsys.readouterr().err
    assert "broken.csv:2" in err and "Traceback" not in err
    assert main([str(good), str(tmp_path / "w.csv"), "--group", "0,9"]) == 2
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "ldev0.img").write_bytes(bytes(4 * SB))
    capsys.readouterr()
    assert main([str(tmp_path / "small"), str(tmp_path / "w.csv")]) == 2
    assert "w.csv does not fit" in capsys.readouterr().err
    (tmp_path / "small" / "ldev1.img").write_bytes(bytes(100))
    assert main([str(tmp_path / "small"), str(tmp_path / "w.csv")]) == 2
    assert "ldev1.img: size 100 B" in capsys.readouterr().err
    assert main([str(good)]) == 2
    capsys.readouterr()


def test_large_log_smoke():
    """100k writes over 4 x 1 MiB LDEVs: the vectorised path agrees with the simulation (consistent)."""
    rng = np.random.default_rng(2024)
    n, sizes = 100_000, {l: 2048 for l in range(4)}
    ldev = rng.integers(0, 4, n)
    sectors = rng.integers(1, 9, n)
    lba = rng.integers(0, 2048 - 8, n)
    issue = np.arange(n, dtype=np.int64) * 10
    complete = issue + rng.integers(5, 40, n)
    log = WriteLog(WriteRecord(i + 1, "M", int(ldev[i]), int(lba[i]), int(sectors[i]), int(issue[i]),
                               int(complete[i])) for i in range(n))
    ids = {l: np.zeros(2048, dtype=np.int64) for l in sizes}
    cut = 80_000
    for i in range(cut):                               # apply in id order (a linear extension of ->)
        ids[int(ldev[i])][lba[i]:lba[i] + sectors[i]] = i + 1
    v = check(images_of(ids), log, [list(sizes)])
    assert v.consistent, v.reasons
    assert v.missing_acked >= 1
    victim = int(np.flatnonzero((ids[0] > 0) & (ids[0] < 70_000))[0])   # a write well before the cut
    ids[0][victim] = 0                                 # lose one sector of a required write
    assert not check(images_of(ids), log, [list(sizes)]).consistent


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_held_scan_matches_the_definition(seed):
    """The compiled per-sector 'held' scan (which replaced the chunked numpy
    expansion) gives, for every write, the first sector where it is not held
    exactly as the definition written out in Python does."""
    import controllers.verify.checker as chk
    rng = np.random.default_rng(seed)
    n, space = 40, 300
    sectors = rng.integers(1, 9, n)
    start = rng.integers(0, space - 8, n)
    issue = np.sort(rng.integers(0, 1000, n))
    complete = issue + rng.integers(0, 200, n)
    complete[rng.random(n) < 0.2] = chk._INF
    cidx = rng.integers(-2, n, space)
    log = chk._Log(np.arange(1, n + 1), np.zeros(n, np.int64), start, sectors, issue, complete)
    got = chk._first_unheld_sector(np.arange(n), start, log, cidx)
    for a in range(n):
        want = -1
        for g in range(start[a], start[a] + sectors[a]):
            c = cidx[g]
            if not (c == a or (c >= 0 and complete[c] > issue[a])):
                want = g
                break
        assert got[a] == want, (seed, a)


# ---------------------------------------------------------------------------
# properties

PROP_SIZES = {0: 24, 1: 24}
_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), mode=st.sampled_from(["time", "closure"]))
def test_property_dependency_respecting_cut_is_consistent(seed, n, mode):
    """Any cut closed under -> (crash at a time, or a random closed set), with torn in-flight writes, is consistent."""
    rng = np.random.default_rng(seed + 1)
    if mode == "time":
        writes = gen_writes(seed, n, PROP_SIZES)
        crash = float(rng.uniform(0, max(w.apply for w in writes) + 1))
        chosen = {w.wid for w in writes if w.apply <= crash}
        for w in writes:                 # the host only knows completions before the crash
            if w.complete is not None and w.complete > crash:
                w.complete = None
        kept = chosen
    else:
        writes = gen_writes(seed, n, PROP_SIZES)
        pick = {w.wid for w in writes if rng.random() < 0.3}
        kept = closure(writes, pick)
    by_id = {w.wid: w for w in writes}
    inset = [by_id[i] for i in sorted(kept)]
    maximal = [w for w in inset if not any(precedes(w, o) for o in inset)]
    torn = {w.wid: {s for s in range(w.lba, w.lba + w.sectors) if rng.random() < 0.3} for w in maximal}
    ids = ids_after(inset, PROP_SIZES, torn)
    v = check(images_of(ids), to_log(writes), [[0, 1]])
    assert v.consistent, f"seed={seed} n={n} mode={mode}: {v.reasons}"
    assert oracle(ids, writes), f"seed={seed}: oracle disagrees"


@_settings
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 30))
def test_property_missing_dependency_is_inconsistent(seed, n):
    """Random history, then A issued after all of it completed, then B after A: B present without A is caught (and only A is blamed)."""
    rng = np.random.default_rng(seed)
    writes = gen_writes(seed, n, PROP_SIZES) if n else []
    end = max((w.complete for w in writes), default=0)
    a_len = int(rng.integers(1, 6))
    a = W(n + 1, int(rng.integers(2)), int(rng.integers(0, 24 - a_len + 1)), a_len, end + 100, end + 200, end + 150)
    b = W(n + 2, 1 - a.ldev, int(rng.integers(0, 24)), 1, end + 200, end + 300, end + 250)
    writes += [a, b]
    ids = ids_after(writes[:n] + [b], PROP_SIZES)        # B depends on everything, A is lost
    v = check(images_of(ids), to_log(writes), [[0, 1]])
    assert not v.consistent, f"seed={seed} n={n}: checker missed the violation"
    assert v.counts["missing_required"] == 1, f"seed={seed}: {v.reasons}"
    assert v.reasons[0].startswith(f"write {a.wid} "), f"seed={seed}: {v.reasons}"


@_settings
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 30), how=st.sampled_from(["drop", "zero", "stale"]))
def test_property_random_tampering_matches_oracle(seed, n, how):
    """Random damage to a consistent image: the vectorised checker agrees with the naive definition."""
    rng = np.random.default_rng(seed)
    writes = gen_writes(seed, n, PROP_SIZES)
    by_id = {w.wid: w for w in writes}
    kept = closure(writes, {w.wid for w in writes if rng.random() < 0.5} | {writes[-1].wid})
    if how == "drop":
        kept.discard(int(rng.choice(sorted(kept))))
        ids = ids_after([by_id[i] for i in sorted(kept)], PROP_SIZES)
    else:
        ids = ids_after([by_id[i] for i in sorted(kept)], PROP_SIZES)
        ldev = int(rng.integers(2))
        s = int(rng.integers(24))
        covering = [w.wid for w in writes if w.ldev == ldev and w.lba <= s < w.lba + w.sectors]
        ids[ldev][s] = 0 if how == "zero" or not covering else int(rng.choice(covering))
    v = check(images_of(ids), to_log(writes), [[0, 1]])
    assert v.consistent == oracle(ids, writes), f"seed={seed} n={n} how={how}: {v.reasons}"


def test_scan_chunking_is_invisible(monkeypatch):
    """Scanning in chunks (bounded memory on big LDEVs) reads the same stamps."""
    import controllers.formats.stamp as stamp_mod
    ids = np.random.default_rng(3).integers(0, 50, 300)
    image = bytearray(image_from_ids(ids, 2))
    image[17 * SB + 99] ^= 4
    whole = read_stamps(bytes(image), 2)
    monkeypatch.setattr(stamp_mod, "_SCAN_CHUNK_SECTORS", 16)
    assert np.array_equal(read_stamps(bytes(image), 2), whole)
    expected = ids.copy()
    expected[17] = -1
    assert np.array_equal(whole, expected)
