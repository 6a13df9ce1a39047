"""The rollback as a sequence of timed restores (issue 10 item 4), sans-I/O:
each restored track is its own event; a "recovery reached" that arrives
after the rollback began frees nothing; a remote killed at any restore and
restarted from its NVM snapshot ends at the suspension image."""
from firmware.dkc import DkcFirmware
from firmware.protocol import MsgKind
from support.fw_harness import T_NS, check, start_recovery


def _run_to_rollback(h) -> None:
    while h.heap:                          # until the remote saved a few old tracks
        rs = h.fw["R"].rsession
        if rs is not None and len(rs.saved) >= 3:
            break
        h.step()
    h.set_link("M", "R", False)          # the master is cut off: the remote's T expires
    end = h.now_ns + 2 * T_NS
    while h.heap and h.now_ns < end:
        rs = h.fw["R"].rsession
        if rs is not None and rs.rolling_back:
            return
        h.step()
    raise AssertionError("the remote never began a rollback")


def test_restores_are_separate_events_and_a_late_reached_frees_nothing():
    h, susp = start_recovery("save-old", "ldev", 4)
    _run_to_rollback(h)
    rs = h.fw["R"].rsession
    nodes_before = len(rs.saved)
    assert nodes_before > 1, "nothing saved: the test proves nothing"
    acts = h.fw["R"].peer_message(h.now_ns, "M", {"kind": MsgKind.RC_REACHED.value, "sid": rs.sid,
                                                  "pair": rs.rollback_pairs[0]})
    h._apply("R", acts)
    assert len(rs.saved) == nodes_before
    assert any(t.event == "rc_reached_too_late" for _, t in h.traces)
    h.run()
    restored = [t for site, t in h.traces if site == "R" and t.step in (518, 519)]
    assert len(restored) == nodes_before
    ok, bad = check(h, susp, "ldev")
    assert ok, bad


def test_remote_killed_at_each_restore_finishes_from_nvm():
    h0, _ = start_recovery("save-old", "ldev", 4)
    _run_to_rollback(h0)
    total = len(h0.fw["R"].rsession.restore_queue)
    assert total > 1
    for kill_at in range(1, total + 1):
        h, susp = start_recovery("save-old", "ldev", 4)
        _run_to_rollback(h)
        done = 0
        while done < kill_at and h.heap:
            before = sum(1 for s, t in h.traces if s == "R" and t.step in (518, 519))
            h.step()
            done = sum(1 for s, t in h.traces if s == "R" and t.step in (518, 519))
            if done > before:
                break
        old = h.fw["R"]
        # kill: the process and its in-flight timing are gone; restart from the NVM image
        h.fw["R"] = DkcFirmware.restore(old.snapshot(), old.store, old.save_media)
        h.restart_timers("R")
        h.run()
        ok, bad = check(h, susp, "ldev")
        assert ok, (kill_at, bad)
        assert h.fw["R"].rsession is None, "the rollback never ended after the restart"


def test_a_read_of_a_cached_track_costs_no_disk_read():
    """The remote's old-track reads (510) and merges charge the disks only
    on a cache miss: a cached track is read from the DKC's cache."""
    from firmware.protocol import DiskCost
    from firmware.store import MemorySaveMedia, MemoryTrackStore

    class Cached(MemoryTrackStore):
        hits: set = set()

        def cached(self, ldev, track):
            return (ldev, track) in self.hits

    store = Cached(1024, {0: 4})
    fw = DkcFirmware("R", store, MemorySaveMedia([]), {})
    fw.read_home(0, 1)
    assert [a for a in fw._flush() if isinstance(a, DiskCost)], "a miss must cost a disk read"
    Cached.hits = {(0, 1)}
    fw.read_home(0, 1)
    assert not [a for a in fw._flush() if isinstance(a, DiskCost)], "a cache hit was charged to the disks"
