"""The DKC's non-volatile state as the patent's tables, written in place
(firmware/nvm_tables.py), sans-I/O:

* a kill at any write into the NVM -- before it, or tearing it half way
  (a log entry, a group, a header cut short; a table record scribbled
  over) -- leaves exactly the state of the last commit, whatever round
  the firmware was in: mirroring, suspension (bitmap and time-series
  queue), the recovery copy (save-area bitmap, saved-data queue, saved
  tracks in cache) and the rollback;
* a restart from such a state goes on: a remote killed mid-round during
  the copy still ends at the right images;
* persistence costs O(changes): a round that sets one bit writes a few
  hundred bytes, however large the tables are;
* a full table is a clear error or the patent's fallback, never growth.
"""
from __future__ import annotations

import numpy as np
import pytest

from firmware.dkc import _VOLATILE, DkcFirmware
from firmware.nvm_tables import GROUPS, BlobMap, NvmFull, NvmLayoutError, NvmSpace, SegmentPool
from support.fw_harness import T_NS, check, form_pairs, make_rack, suspend_and_write

#: small capacities, so each write point's copy of the NVM is cheap
SMALL = {"max_saved_nodes": 256, "tsq_max_nodes": 64, "nvm_pool_bytes": 1 << 20, "max_lost_tracks": 64,
         "max_pending_writes": 64, "max_cached_saves": 16, "nvm_group_bytes": 64 << 10}


class Killed(Exception):
    """The DKC process died here."""


def canonical(fw: DkcFirmware) -> tuple:
    """What the firmware keeps in NVM, independent of where free bytes lie:
    the pickled groups, every table but the pool's data and links (free
    segments hold garbage), and the values the pool holds."""
    state = {k: v for k, v in fw.__dict__.items() if k not in _VOLATILE}
    hot = {k: state.pop(k) for k in ("next_seq", "seq_base", "host_waits", "expect_seq", "reorder", "link_up")}
    groups = (norm(state), norm(hot))
    tables = tuple((name, view.tobytes()) for name, view in sorted(fw.nvm._arrays.items())
                   if name not in ("pool.data", "pool.link"))
    values = [sorted((repr(k), repr(v)) for k, v in fw.pending.items()),
              sorted(repr(x) for x in fw.lost.table.items())]
    if fw.rsession is not None:
        values.append(sorted((k, v) for k, v in fw.rsession.cache.items()))
    for unit, q in sorted(fw.tsq.items()):
        values.append((unit, [(n.node_id, n.valid, n.seg >= 0 and fw._pool.get(n.seg, n.nbytes)) for n in q.walk()]))
    return groups, tables, repr(values)


def norm(x):
    """A structural normal form of the firmware's state: equal states give
    equal forms, whichever objects happen to be shared in memory."""
    if isinstance(x, (NvmSpace, SegmentPool)):
        return type(x).__name__
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, BlobMap):
        return ("map", x.name, tuple((repr(k), repr(v)) for k, v in x.items()))
    if isinstance(x, dict):
        return ("dict", tuple(sorted((repr(k), norm(v)) for k, v in x.items())))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(norm(v) for v in x))
    if hasattr(x, "__getstate__") and hasattr(x, "__dict__"):
        state = x.__getstate__()
        return (type(x).__name__, norm(state if isinstance(state, dict) else x.__dict__))
    if hasattr(x, "__dict__"):
        return (type(x).__name__, norm(x.__dict__))
    return x


def torn_copy(buf: np.ndarray, kind: str, off: int, what) -> np.ndarray:
    """The NVM as a kill in the middle of this write leaves it."""
    cut = buf.copy()
    if kind == "put":
        half = what[:len(what) // 2]
        cut[off:off + len(half)] = np.frombuffer(half, dtype=np.uint8)
    else:
        cut[off:off + what] = 0x5A   # a table record half written: garbage
    return cut


def _story(h, every: int, on_event) -> None:
    """Mirroring, suspension with time-order queues, a save-old copy that
    the master's loss turns into a rollback: every event of either site is
    a round (``on_event`` before it when its count is a multiple of
    ``every``, a commit after it)."""
    plain_step = h.step
    count = {"n": 0}

    def step():
        if not h.heap:
            return False
        site = h.heap[0][3][0]
        if site in h.dead:
            return plain_step()
        count["n"] += 1
        rs = h.fw["R"].rsession
        if "M" not in h.dead and rs is not None and len(rs.saved) >= 3:
            h.kill("M")   # the master is lost mid-copy: the remote rolls back after T
        on_event(h, site, count["n"] % every == 0)
        try:
            return plain_step()
        finally:
            h.fw[site].commit()   # the commit's own writes are kill points too
            h.fw[site].nvm.on_write = None
    h.step = step
    form_pairs(h)
    h.command("M", {"cmd": "set", "key": "queue_unit", "value": "ldev"})
    suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "method": "save-old",
                    "unit": "ldev", "window": 2, "order": "time"})
    h.run()


def test_a_kill_at_any_nvm_write_leaves_the_last_commit():
    h = make_rack(params=SMALL)
    points = {"put": 0, "table": 0}
    rounds = set()

    expected = {}

    def on_event(h, site, watch):
        fw = h.fw[site]
        # each commit (a barrier's in the middle of an event too) moves what a kill must leave
        fw.nvm.on_commit = lambda fw=fw: expected.__setitem__(fw.site, canonical(fw))
        fw.commit()
        expected[site] = canonical(fw)
        if not watch:
            return

        def on_write(kind, off, what):
            points[kind] += 1
            rounds.add((site, h.events))
            again = DkcFirmware.reopen(torn_copy(fw.nvm.buf, kind, off, what), fw.store, fw.save_media)
            assert canonical(again) == expected[site], (site, h.events, kind, off)
        fw.nvm.on_write = on_write

    _story(h, 1, on_event)
    assert h.fw["R"].last_recovery["outcome"] != "complete", "the copy was not interrupted"
    assert points["put"] > 100 and points["table"] > 100, points
    assert len(rounds) > 20, rounds
    print(f"kills tested: {points} in {len(rounds)} rounds")


@pytest.mark.parametrize("seed", range(6))
def test_remote_killed_mid_round_restarts_and_ends_right(seed):
    """A kill at a pseudo-random write of a pseudo-random round of the
    remote (seeded) during the copy: the round's NVM changes are undone,
    its outputs lost (as a killed process's); the restarted remote goes on
    from the last commit and the images end right."""
    rng = np.random.default_rng(seed)
    h = make_rack(params=SMALL)
    form_pairs(h)
    susp = suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "method": "save-old",
                    "unit": "ldev", "window": 2})
    for fw in h.fw.values():
        fw.commit()
    target, n, killed = int(rng.integers(2, 14)), 0, False
    writes = {"left": int(rng.integers(1, 40))}
    while h.heap:
        site = h.heap[0][3][0]
        if site in h.dead:
            h.step()
            continue
        n += site == "R"
        fw = h.fw[site]
        if site == "R" and n == target:
            def on_write(kind, off, what, fw=fw):
                writes["left"] -= 1
                if writes["left"] == 0:
                    writes["image"] = torn_copy(fw.nvm.buf, kind, off, what)
                    raise Killed()
            fw.nvm.on_write = on_write
        try:
            h.step()
            fw.commit()
        except Killed:
            # the process is gone with the round's outputs; it restarts from its NVM
            h.fw["R"] = DkcFirmware.reopen(writes["image"], fw.store, fw.save_media)
            h.restart_timers("R")
            killed = True
        rs = h.fw["R"].rsession
        if killed and seed % 2 and "M" not in h.dead and rs is not None and len(rs.saved) >= 3:
            h.kill("M")   # odd seeds: the master is lost too, the remote rolls back
    assert killed, f"seed {seed}: the kill never came (round {target})"
    ok, bad = check(h, susp, "ldev")
    assert ok, (seed, target, bad)


def test_a_round_costs_what_it_changes():
    """One host write of a track while suspended: the round writes the
    update into the time-series queue (the track's bytes once) and a few
    records (the write-ahead record, the bit, the node, undo entries,
    the small groups): under twice the track, with tables
    of a million records."""
    h = make_rack(params={"max_saved_nodes": 1 << 20})
    form_pairs(h)
    h.set_link("M", "R", False)
    m = h.fw["M"]
    h.write_track("M", "w0", 0, 2, "x")   # the first one also sets up the unit's queue
    h.run()
    m.commit()
    before = m.nvm.total_written
    h.write_track("M", "w1", 0, 3, "x")
    h.run()
    m.commit()
    written = m.nvm.total_written - before   # the write-ahead record before the media write included
    assert m.pairs.get("p0").bitmap.test(3)
    assert 1024 < written < 2 * 1024, written
    assert m.nvm.total_bytes > 40 << 20, "the tables are not large: the test proves nothing"
    assert m.commit() == 0, "a round that changes nothing writes nothing"


def test_restart_sees_the_tables():
    h = make_rack(params=SMALL)
    form_pairs(h)
    suspend_and_write(h)
    m = h.fw["M"]
    m.mark_lost(1, 2, "test loss")
    image = m.snapshot()
    again = DkcFirmware.restore(image, m.store, m.save_media)
    for name in sorted(m.pairs.pairs):
        assert again.pairs.get(name).bitmap.set_tracks() == m.pairs.get(name).bitmap.set_tracks()
    assert again.lost.ranges() == m.lost.ranges() == {1: [{"first": 2, "last": 2, "why": "test loss"}]}
    assert canonical(again) == canonical(m)


def test_full_tables_are_clear():
    space = NvmSpace(np.zeros(1 << 16, dtype=np.uint8))
    space.plan("x", np.int64, 1 << 20)
    with pytest.raises(NvmLayoutError, match="too small"):
        space.seal()
    h = make_rack(params={**SMALL, "tsq_max_nodes": 4})
    form_pairs(h)
    h.command("M", {"cmd": "set", "key": "queue_unit", "value": "ldev"})
    suspend_and_write(h)   # more than 4 updates to LDEV 0 and 1: the queue overflows (bitmap order then)
    assert any(t.event == "tsq_overflow" for _, t in h.traces)
    pool = h.fw["M"]._pool
    with pytest.raises(NvmFull, match="pool"):
        pool.put(bytes(pool.seg_bytes * (pool.segs + 1)))


def test_groups_named_in_one_header():
    """The commit point is one header naming every group's slot and checksum."""
    h = make_rack(params=SMALL)
    fw = h.fw["M"]
    fields = NvmSpace.read_header(fw.nvm.buf)
    assert fields[1] == fw.nvm.gen and len(fields) == 2 + 3 * len(GROUPS) + 1


def _pool_space(buf=None, segs: int = 4, seg_bytes: int = 256):
    space = NvmSpace(buf, group_bytes=1 << 12)
    pool = SegmentPool(space, "p", seg_bytes, segs)
    space.seal()
    pool.attach()
    return space, pool


@pytest.mark.parametrize("values", [2, 4])
def test_a_segment_freed_in_a_round_is_reused_only_when_no_fresh_one_is_left(values):
    """A value freed in a round keeps its bytes until the commit: a new
    value takes a fresh segment (no undo entry) while there is one, and a
    just-freed segment only when the pool has no other (then undo-logged).
    A kill before the commit finds every value of the last commit, bytes
    and all, in both cases."""
    space, pool = _pool_space()
    groups = {g: {} for g in GROUPS}
    old = [bytes([i + 1]) * 256 for i in range(values)]
    firsts = [pool.put(v) for v in old]
    space.commit(groups)
    for f in firsts[:2]:
        pool.release(f)
    undo_before = space._undo_n
    news = [pool.put(bytes([0xEE]) * 256) for _ in range(2)]
    if values == 2:   # two fresh segments left: neither freed one is touched
        assert not set(news) & set(firsts[:2]) and space._undo_n == undo_before
    else:             # the pool is full: the freed ones are reused, with undo
        assert set(news) == set(firsts[:2]) and space._undo_n > undo_before
    with pytest.raises(NvmFull):
        pool.put(bytes(256 * 3))
    # killed here: the restart rolls the round back
    again_space, again = _pool_space(space.buf.copy())
    again_space.open()
    assert [again.get(f, 256) for f in firsts] == old
    assert len(again.free) == 4 - values and again.held == []
    # committed instead: the held segments are fresh again
    space.commit(groups)
    assert len(pool.free) == 4 - values and pool.held == []
