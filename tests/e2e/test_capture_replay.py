"""What these tests prove about replaying a capture on the rack (``workload start W trace=F format=capture``).

* The captured bytes land: after the replay the master LDEV and (sync
  pair) its remote hold exactly the captured writes.
* Happens-before: a request arriving after another was acknowledged is
  issued only after that one completed in the replay; a request that was
  concurrent in the capture is issued at its own arrival time, before the
  other completes; a flush is a barrier (what follows waits for it).
* Honesty: the stamp checker does not judge LDEVs of client bytes:
  ``verify`` lists them as not judged and ``expect consistent`` fails
  (no verdict is claimed); the stamped LDEVs beside them are still judged.
* Bad captures are refused with the file and the record named.
* Both backends give the same trace sha256.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from controllers.formats.capture import CaptureWriter
from controllers.operator.console import SvpConsole, run_script
from controllers.rack.storage import CommandError, StorageRack

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "two-site.toml")
LDEV_BYTES = 1 << 20


def _capture(path: Path) -> list[tuple[int, bytes]]:
    """Writes on LDEV 0: 0 and 1 concurrent, then a flush after both acks, then 2 after the flush."""
    blocks = [(0, b"A" * 4096), (65536, b"B" * 8192), (200 * 512, b"C" * 512)]
    with CaptureWriter(path, "main", {0: LDEV_BYTES, 1: LDEV_BYTES}, "unit-test") as w:
        w.record("write", 0, 1000, 50_000, blocks[0][0], 4096, data=blocks[0][1])
        w.record("write", 0, 2000, 60_000, blocks[1][0], 8192, data=blocks[1][1])   # concurrent with 0
        w.record("flush", 0, 61_000, 70_000, 0, 0)                                    # after both acks
        w.record("write", 0, 71_000, 90_000, blocks[2][0], 512, flags=1, data=blocks[2][1])
        w.record("read", 0, 95_000, 99_000, 0, 4096)
    return blocks


def _rack(tmp_path, backend="inline", extra=()):
    cap = tmp_path / "t.cap"
    blocks = _capture(cap)
    rack = StorageRack(CFG, backend=backend, seed=3)
    console = SvpConsole(rack, stdout=io.StringIO())
    lines = ["paircreate g0", "run until pair.mirroring 5s",
             f"workload start c trace={cap} format=capture", *extra, "run 50ms"]
    code, error = run_script(console, lines, "<test>")
    assert error is None, error
    return rack, console, blocks


def test_captured_bytes_land_on_master_and_remote_in_happens_before_order(tmp_path):
    rack, console, blocks = _rack(tmp_path)
    with rack:
        master, remote = rack.export_bytes("main", 0), rack.export_bytes("remote", 0)
        for off, data in blocks:
            assert master[off:off + len(data)] == data
            assert remote[off:off + len(data)] == data
        raw = rack.rawlog()["main"]
        times = {seq: (i, c) for seq, i, c in raw["captures"]["c"]["times"]}
        assert all(c is not None for _, c in times.values()), times
        assert times[1][0] < times[0][1], "request 1 was concurrent with 0 in the capture"
        assert times[2][0] >= max(times[0][1], times[1][1]), "the flush waits for both writes"
        assert times[3][0] >= times[2][1], "the write after the flush waits for it"
        assert [r[7] for r in raw["rows"]] == [0, 1, 3] and all(r[5] is not None for r in raw["rows"])
        assert rack.host_stats()["main"]["bad_reads"] == 0   # client bytes are not read as stamps


def test_the_stamp_checker_does_not_judge_client_bytes(tmp_path):
    rack, console, _ = _rack(tmp_path, extra=["workload start w rw=randwrite bs=4KiB iodepth=2 ldevs=1 seed=2"])
    with rack:
        rack.workload_stop("w")
        rack.run(20_000_000)
        console.onecmd("verify")
        out = console.stdout.getvalue()
        assert "pair p0 (remote ldev 0): not judged, written with unstamped client bytes" in out, out
        from controllers.verify.rack_verify import verify_rack
        v = verify_rack(rack)
        assert [u["pair"] for u in v["unjudged"]] == ["p0"]
        judged = [tuple(u) for g in v["groups"] for u in g["units"]]
        assert (0,) not in judged and (1,) in judged, judged
        assert v["raw_writes"] == 3
        console.onecmd("expect consistent")
        assert "cannot judge 1 LDEV(s) written with client bytes" in console.stdout.getvalue()


@pytest.mark.parametrize("bad, match", [
    (lambda w: w.record("write", 0, 0, 10, 100, 512, data=b"x" * 512), r"record 0: a write at 100\+512 is not 512"),
])
def test_unreplayable_captures_are_refused_naming_file_and_record(tmp_path, bad, match):
    cap = tmp_path / "bad.cap"
    with CaptureWriter(cap, "main", {0: LDEV_BYTES}, "t") as w:
        bad(w)
    with StorageRack(CFG, backend="inline", seed=1) as rack:
        with pytest.raises(CommandError, match=rf"bad\.cap: {match}"):
            rack.workload_start("c", f"trace={cap} format=capture")
        big = tmp_path / "big.cap"
        with CaptureWriter(big, "main", {9: LDEV_BYTES}, "t") as w:
            w.record("write", 9, 0, 10, 0, 512, data=b"x" * 512)
        with pytest.raises(CommandError, match=r"big\.cap: record 0: ldev 9 .* not inside this site's LDEVs"):
            rack.workload_start("c", f"trace={big} format=capture")
        with pytest.raises(CommandError, match=r"nope\.cap: cannot read"):
            rack.workload_start("c", f"trace={tmp_path / 'nope.cap'} format=capture")


def test_both_backends_give_the_same_trace(tmp_path):
    hashes = []
    for backend in ("inline", "processes"):
        rack, _, _ = _rack(tmp_path, backend)
        with rack:
            hashes.append(rack.rack.finish_trace())
    assert hashes[0] == hashes[1]
