"""The copy reads at the pace of the disks and the link (issue 10 item 8).

Proves: a bitmap-order copy (initial or recovery) sends a track only after
its read (CopyRead) completed; the reads being timed, the tracks read and
not yet sent and the messages in flight never exceed the window plus
``copy_read_ahead`` (and reach it: the loop is not starved); a master DKC
restarted from its non-volatile memory with reads outstanding issues them
again and the copy completes.
"""
import heapq

import pytest

from firmware.dkc import DkcFirmware
from support.fw_harness import LDEV_TRACKS, T_NS, form_pairs, make_rack, suspend_and_write


def _held(h, site: str = "M") -> int:
    reads = sum(1 for e in h.heap if e[2] == "copy_read" and e[3][0] == site)
    msgs = len(h.in_flight("copy_track")) + len(h.in_flight("copy_track_ack"))
    return reads + msgs + sum(len(s.ready) for s in h.fw[site].sessions.values())


def _read_before_send(h, completed: set, first: int) -> None:
    for s, t in h.traces[first:]:
        if s == "M" and t.event in ("initial_track_sent", "track_sent"):
            assert (t.fields["sid"], t.fields["pair"], t.fields["track"]) in completed, \
                f"{t.fields} sent before its read completed"


def _run_watching(h, window: int, ahead: int) -> int:
    completed, peak, first = set(), 0, len(h.traces)
    while h.heap:
        head = h.heap[0]
        if head[2] == "copy_read":
            completed.add(head[3][1:])
        h.step()
        held = _held(h)
        assert held <= window + ahead, f"{held} tracks held > window {window} + read-ahead {ahead}"
        peak = max(peak, held)
    _read_before_send(h, completed, first)
    return peak


@pytest.mark.parametrize("window, ahead", [(1, 0), (2, 3), (8, 8)])
def test_initial_copy_reads_are_bounded(window, ahead):
    h = make_rack(params={"init_window": window, "copy_read_ahead": ahead})
    for ldev, tracks in sorted(LDEV_TRACKS.items()):
        for track in range(tracks):
            h.write_track("M", f"w{ldev}-{track}", ldev, track, f"v0-{ldev}-{track}")
    h.command("M", {"cmd": "paircreate", "target": "*"})
    peak = _run_watching(h, window, ahead)
    assert peak == window + ahead, f"the loop never filled its budget ({peak})"
    assert h.copy_reads == sum(LDEV_TRACKS.values()), "one read per track of the initial copy"
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev)


@pytest.mark.parametrize("window", [1, 4])
def test_recovery_copy_reads_are_bounded(window):
    h = make_rack(params={"copy_read_ahead": 2})
    form_pairs(h)
    suspend_and_write(h)
    h.copy_reads = 0
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "window": window})
    _run_watching(h, window, 2)
    assert h.fw["R"].last_recovery["outcome"] == "complete"
    assert h.copy_reads > 0
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev)


@pytest.mark.parametrize("after_reads", [1, 5, 12])
def test_master_restart_issues_its_reads_again(after_reads):
    """The DKC's read timings are volatile: after a restart from NVM the
    firmware issues the outstanding reads again, and the copy completes."""
    h = make_rack()
    for ldev, tracks in sorted(LDEV_TRACKS.items()):
        for track in range(tracks):
            h.write_track("M", f"w{ldev}-{track}", ldev, track, f"v0-{ldev}-{track}")
    h.command("M", {"cmd": "paircreate", "target": "*"})
    while h.copy_reads < after_reads:
        assert h.step()
    old = h.fw["M"]
    assert any(s.reading for s in old.sessions.values()), "no read outstanding at the restart"
    h.heap = [e for e in h.heap if not (e[2] == "copy_read" and e[3][0] == "M")]   # lost with the process
    heapq.heapify(h.heap)
    h.fw["M"] = DkcFirmware.restore(old.snapshot(), old.store, old.save_media)
    h.restart_timers("M")
    h.run()
    assert not h.fw["M"].sessions, "the initial copy never ended"
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev)
