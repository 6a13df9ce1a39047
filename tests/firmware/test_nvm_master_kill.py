"""A kill -9 of the MASTER DKC in the middle of a host write (issue 11,
"a kill -9 at any instant leaves a state the restart can use"), sans-I/O.

The media are written in place during a round and survive the kill; the
NVM's round is undone. Proved here, at every NVM write of the host write's
event (before it, or tearing it) and between the media write and the
commit:

* suspended (link down, PSUE), in either resync order: after the restart
  and the resync the remote equals the master on every LDEV -- no track
  the media changed is unknown to the bitmap or the time-series queue;
* mirrored (sync, PAIR): after the restart the remote equals the master
  with the pairs still in PAIR, no resync needed;
* a second kill during the restart (at any NVM write of the reopening,
  the replay and its commit) still finds the write in doubt;
* the restart acts only on the writes in doubt: a kill after the
  round's commit replays nothing.
"""
from __future__ import annotations

import numpy as np
import pytest

from firmware.dkc import DkcFirmware
from firmware import nvm_tables
from firmware.nvm_tables import NvmSpace
from support.fw_harness import LDEV_TRACKS, T_NS, form_pairs, make_rack, stamp

SMALL = {"max_saved_nodes": 256, "tsq_max_nodes": 64, "nvm_pool_bytes": 1 << 20, "max_lost_tracks": 64,
         "max_pending_writes": 64, "max_cached_saves": 16, "nvm_group_bytes": 64 << 10}

#: the write killed: (ldev, lba, sectors) -- a whole track, a partial one, one across two tracks
WRITES = [(0, 6, 2), (1, 3, 1), (2, 5, 2)]


class Killed(Exception):
    """The DKC process died here."""


def _torn(buf: np.ndarray, kind: str, off: int, what) -> np.ndarray:
    cut = buf.copy()
    if kind == "put":
        half = what[:len(what) // 2]
        cut[off:off + len(half)] = np.frombuffer(half, dtype=np.uint8)
    else:
        cut[off:off + what] = 0x5A   # a table record half written: garbage
    return cut


def _rack(suspended: bool):
    h = make_rack(params=SMALL)
    form_pairs(h)
    if suspended:
        h.set_link("M", "R", False)
        for i, (ldev, track) in enumerate([(0, 1), (1, 2), (2, 5)]):   # earlier updates, committed
            h.write_track("M", f"pre{i}", ldev, track, f"pre{i}")
        h.run()
    for fw in h.fw.values():
        fw.commit()
    return h


def _kill_during_write(h, point: int, write) -> str | None:
    """Run the host write on M with a kill at its ``point``-th kill point
    (NVM writes, and the instant after the media write); restart M from
    what the kill left. None when the event has fewer points."""
    m = h.fw["M"]
    seen = {"n": 0}
    image = {}

    def at_point(take):
        seen["n"] += 1
        if seen["n"] == point:
            image["buf"] = take()
            raise Killed()

    m.nvm.on_write = lambda kind, off, what: at_point(lambda: _torn(m.nvm.buf, kind, off, what))
    media_write = m.store.write_sectors

    def write_then_maybe_die(ldev, lba, data):
        media_write(ldev, lba, data)
        at_point(lambda: m.nvm.buf.copy())
    m.store.write_sectors = write_then_maybe_die
    ldev, lba, sectors = write
    try:
        h.write("M", "killed", ldev, lba, stamp("killed", sectors * 512))
        m.commit()   # the round's commit point: its writes are kill points too
    except Killed:
        pass
    finally:
        m.nvm.on_write = None
        m.store.write_sectors = media_write
    if "buf" not in image:
        return None
    again = DkcFirmware.reopen(image["buf"], m.store, m.save_media)
    h.fw["M"] = again
    h._apply("M", again.after_restart(h.now_ns))
    h.restart_timers("M")
    return "killed"


def _points(suspended: bool, write) -> int:
    h = _rack(suspended)
    n = 1
    while _kill_during_write(h, n, write) is not None:
        n += 1
        h = _rack(suspended)
    return n - 1


def _same(h) -> list[int]:
    return [ldev for ldev in sorted(LDEV_TRACKS) if h.image("R", ldev) != h.image("M", ldev)]


@pytest.mark.parametrize("order", ["bitmap", "time"])
@pytest.mark.parametrize("write", WRITES, ids=["track", "partial", "two-tracks"])
def test_suspended_master_killed_mid_write_resyncs_right(order, write):
    n = _points(True, write)
    assert n >= 3, f"only {n} kill points: the test proves nothing"
    for point in range(1, n + 1):
        h = _rack(True)
        assert _kill_during_write(h, point, write) == "killed"
        h.run()
        h.set_link("M", "R", True)
        h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "method": "save-old",
                        "unit": "ldev", "window": 2, "order": order})
        h.run()
        assert h.fw["R"].last_recovery["outcome"] == "complete", (point, h.fw["R"].last_recovery)
        assert _same(h) == [], f"kill point {point} of {n}: remote differs from master on ldevs {_same(h)}"


@pytest.mark.parametrize("write", WRITES, ids=["track", "partial", "two-tracks"])
def test_mirrored_master_killed_mid_write_stays_in_pair_and_equal(write):
    n = _points(False, write)
    assert n >= 3, f"only {n} kill points: the test proves nothing"
    for point in range(1, n + 1):
        h = _rack(False)
        assert _kill_during_write(h, point, write) == "killed"
        h.run()
        states = {p.name: p.state for p in h.fw["M"].pairs.pairs.values()}
        assert set(states.values()) == {"PAIR"}, (point, states)
        assert _same(h) == [], f"kill point {point} of {n}: remote differs from master on ldevs {_same(h)}"


def test_a_kill_after_the_commit_replays_nothing():
    """Between rounds (as the emulator's `fault kill`) the write is
    recorded: the restart has nothing in doubt and sends nothing."""
    h = _rack(False)
    h.write("M", "w", 0, 6, stamp("w", 1024))
    h.fw["M"].commit()
    m = h.fw["M"]
    again = DkcFirmware.reopen(m.nvm.buf.copy(), m.store, m.save_media)
    assert again.after_restart(h.now_ns) == []


def test_a_second_kill_during_the_restart_still_finds_the_write_in_doubt(monkeypatch):
    """Killed right after the media write of a suspended master; the
    restart is killed again at each of its own NVM writes (reopening,
    replay, commit); the third life resyncs the remote right."""
    write = (0, 6, 2)
    put = NvmSpace._put
    point, tested = 0, 0
    while True:
        point += 1
        h = _rack(True)
        m = h.fw["M"]
        seen = {"n": 0}
        killed = {}

        def media_then_die(ldev, lba, data, media_write=m.store.write_sectors):
            media_write(ldev, lba, data)
            raise Killed()
        m.store.write_sectors = media_then_die
        try:
            h.write("M", "killed", write[0], write[1], stamp("killed", write[2] * 512))
        except Killed:
            pass
        buf = m.nvm.buf.copy()
        m.store.write_sectors = m.store.__class__.write_sectors.__get__(m.store)

        def counting_put(self, off, data):
            seen["n"] += 1
            if seen["n"] == point:
                killed["buf"] = _torn(self.buf, "put", off, data)
                raise Killed()
            put(self, off, data)
        monkeypatch.setattr(NvmSpace, "_put", counting_put)
        try:
            second = DkcFirmware.reopen(buf, m.store, m.save_media)
            second.after_restart(h.now_ns)
            second.commit()
        except Killed:
            pass
        finally:
            monkeypatch.setattr(NvmSpace, "_put", put)
        if "buf" not in killed:
            break
        tested += 1
        third = DkcFirmware.reopen(killed["buf"], m.store, m.save_media)
        h.fw["M"] = third
        h._apply("M", third.after_restart(h.now_ns))
        h.restart_timers("M")
        h.run()
        h.set_link("M", "R", True)
        h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "method": "save-old",
                        "unit": "ldev", "window": 2})
        h.run()
        assert _same(h) == [], f"second kill at restart write {point}: remote differs on ldevs {_same(h)}"
    assert tested >= 3, f"only {tested} kill points in the restart: the test proves nothing"


def test_a_full_write_ahead_log_commits_first(monkeypatch):
    """More host writes in one round than the write-ahead log holds: a
    commit makes room (the earlier writes are recorded by then), and a
    kill after the last media write still resyncs right."""
    monkeypatch.setattr(nvm_tables, "INTENT_CAP", 2)
    h = _rack(True)
    m = h.fw["M"]
    commits = m.nvm.commits
    for i, track in enumerate([0, 2, 4]):
        h.write_track("M", f"more{i}", 1, track, f"more{i}")
    assert m.nvm.commits == commits + 1, "the log of 2 records took 3 writes without a commit"
    # one more write, killed just after its media write: it and the third are in doubt
    assert _kill_during_write(h, 2, (2, 0, 2)) == "killed"   # point 1 is its write-ahead record
    replayed = [(t.fields["ldev"], t.fields["tracks"]) for _, t in h.traces if t.event == "write_in_doubt_replayed"]
    assert replayed == [(1, [4]), (2, [0])], replayed
    h.run()
    h.set_link("M", "R", True)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "method": "save-old",
                    "unit": "ldev", "window": 2})
    h.run()
    assert _same(h) == [], _same(h)
