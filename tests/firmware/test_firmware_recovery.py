"""Crash-point sweeps of the recovery copy: kill the master after every
event of the copy and check the remote after T.

Claim: the remote equals the suspension-time image for every pair that the
consistency unit rolls back (unit ldev: pairs without "recovery reached";
unit group: every pair of a group in which one did not reach) and equals the
master for the others.  With method "none" some crash point violates this
(the check can fail).
"""
import pytest

from firmware.store import SaveRow
from support.fw_harness import (LDEV_OF, LDEV_TRACKS, T_NS, check, crash_run, events_to_finish,
                                form_pairs, make_rack, start_recovery, suspend_and_write)



@pytest.mark.parametrize("window", [1, 8])
@pytest.mark.parametrize("unit", ["ldev", "group"])
@pytest.mark.parametrize("method", ["save-old", "stage-new"])
def test_master_killed_at_every_point(method, unit, window):
    """Kill the master after each event of the recovery copy; after T the
    remote is consistent per unit, and the sweep saw partial outcomes."""
    total = events_to_finish(method, unit, window)
    outcomes = set()
    for kill_after in range(0, total + 2):
        h, susp = crash_run(method, unit, window, kill_after)
        ok, rolled = check(h, susp, unit)
        assert ok, f"{method}/{unit}/W={window}: kill after {kill_after} events, rolled={rolled}"
        outcomes.add(len(rolled))
    assert 0 in outcomes and 3 in outcomes  # complete and full rollback both occur
    if unit == "ldev":
        assert len(outcomes) >= 3  # and partial (some reached, some rolled back)


@pytest.mark.parametrize("method", ["save-old", "stage-new"])
def test_time_order_crash_points(method):
    """Time-series order (claim 3) with the same protection: consistent at every crash point."""
    total = events_to_finish(method, "ldev", 4, "time")
    for kill_after in range(0, total + 2, 2):
        h, susp = crash_run(method, "ldev", 4, kill_after, order="time")
        assert check(h, susp, "ldev")[0], kill_after


@pytest.mark.parametrize("method", ["save-old", "stage-new"])
def test_remote_restarted_from_snapshot_mid_recovery(method):
    """The remote firmware is snapshotted and restored mid-recovery (a DKC
    process restart); the watchdog still fires and the rollback is correct."""
    total = events_to_finish(method, "ldev", 1)
    rollbacks = 0
    for kill_after in range(2, total, 3):
        h, susp = crash_run(method, "ldev", 1, kill_after, snapshot_remote=True)
        assert check(h, susp, "ldev")[0], kill_after
        last = h.fw["R"].last_recovery
        rollbacks += bool(last and last["outcome"] == "rolled_back" and last["rolled_back"])
    assert rollbacks >= 3  # the re-armed watchdog fired on the restored firmware


def test_no_protection_can_fail():
    """Method none + bitmap order: some crash point leaves the remote neither
    at the suspension image nor at the master's data (the check can fail)."""
    total = events_to_finish("none", "ldev", 1)
    mixed = 0
    for kill_after in range(0, total + 2):
        h, susp = crash_run("none", "ldev", 1, kill_after)
        for ldev in sorted(LDEV_TRACKS):
            img = h.image("R", ldev)
            mixed += img != susp[ldev] and img != h.image("M", ldev)
    assert mixed > 0


@pytest.mark.parametrize("method", ["save-old", "stage-new"])
def test_track_written_twice_during_recovery(method):
    """A track is sent, then written twice more by the host during the
    recovery copy (mirrored), then the master dies: the rollback restores
    the suspension-time version (the old track is saved only on the FIRST
    overwrite)."""
    h, susp = start_recovery(method, "ldev", 1, latency_ns=100_000)
    remote = h.fw["R"]
    while not (remote.rsession and remote.rsession.saved.find(1, 0)):
        assert h.step()
    h.run(max_events=2)
    h.write_track("M", "t1", 1, 0, "during-1")
    h.run(max_events=2)
    h.write_track("M", "t2", 1, 0, "during-2")
    h.run(max_events=3)
    assert h.fw["M"].pairs.get("p1").state == "COPY"
    h.kill("M")
    h.run(until_ns=h.now_ns + 3 * T_NS)
    assert "p1" in remote.last_recovery["rolled_back"]
    assert h.image("R", 1) == susp[1]


def test_double_fault_reported_not_hidden():
    """Saved tracks on a parity row whose small disk fails: the rollback
    reports a double fault and never writes wrong data over a track."""
    h = make_rack(cache_tracks=0, save_rows=[SaveRow(0, "parity", 32)])
    form_pairs(h)
    susp = suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "window": 1})
    h.run(max_events=25)
    h.kill("M")
    h.fw["R"].save_media.fail_row(0)
    h.run(until_ns=h.now_ns + 3 * T_NS)
    last = h.fw["R"].last_recovery
    assert last["double_faults"]
    bad = {(f["ldev"], f["track"]) for f in last["double_faults"]}
    for name, ldev in sorted(LDEV_OF.items()):
        if name not in last["rolled_back"]:
            continue
        img = h.image("R", ldev)
        for track in range(LDEV_TRACKS[ldev]):
            span = slice(track * 1024, (track + 1) * 1024)
            if (ldev, track) not in bad:
                assert img[span] == susp[ldev][span], (name, track)
    assert any(t.event == "double_fault" for _, t in h.traces)
    show = h.command("R", {"cmd": "show", "what": "save-area"})
    assert show["double_faults"]
