"""Flowchart coverage and claim-3 ordering.

- every step id of Figs. 4, 5, 6, 9, 12/13 is emitted as a Trace by the
  firmware in a scenario that forms pairs, suspends, recovers to completion
  and crashes a recovery;
- time-series order without the format-write shortcut is prefix-consistent
  at every crash point (method none: no protection at all), and with the
  shortcut some crash point is not (measured, not assumed);
- admission by n and by real differential-track counts;
- N sites: one master, two remotes, each pair with its own recovery.
"""
import pytest

from firmware.store import SaveRow
from support.fw_harness import (LDEV_TRACKS, PAIRS, T_NS, form_pairs, make_rack, stamp,
                              suspend_and_write)
from support.fw_harness import crash_run, events_to_finish, start_recovery

REQUIRED = (set(range(350, 354)) | set(range(401, 414)) | set(range(501, 521))
            | set(range(751, 758)) | set(range(1201, 1209)))


def test_every_step_is_traced():
    """Steps 350-353, 401-413, 501-520 (505/514/515 each), 751-757 and
    1201-1208 are all emitted."""
    seen = set()
    h, _ = start_recovery("save-old", "ldev", 1, order="time")
    h.run()
    seen |= set(h.steps())
    assert h.fw["R"].last_recovery["outcome"] == "complete"
    total = events_to_finish("save-old", "ldev", 1)
    for kill_after in range(total):
        h, susp = crash_run("save-old", "ldev", 1, kill_after)
        steps = set(h.steps("R"))
        if {513, 518, 519} <= steps:
            seen |= set(h.steps())
            break
    missing = sorted(REQUIRED - seen)
    assert not missing, missing


def ordered_scenario(format_shortcut: bool, window: int = 1):
    """Suspended writes to ldev 0 with a format/partial/format pattern on one
    track; returns the rack (resync issued) and the master's image after every
    prefix of the writes."""
    h = make_rack(params={"format_shortcut": format_shortcut})
    form_pairs(h)
    h.set_link("M", "R", False)
    prefixes = [h.image("M", 0)]
    writes = [(0, False, "F1"), (1, True, "P1"), (0, False, "F2"), (2, False, "F3"),
              (1, True, "P2"), (0, True, "P3"), (3, False, "F4")]
    for i, (track, partial, tag) in enumerate(writes):
        if partial:
            h.write("M", f"o{i}", 0, track * 2 + 1, stamp(tag, 512))
        else:
            h.write_track("M", f"o{i}", 0, track, tag)
        prefixes.append(h.image("M", 0))
    h.set_link("M", "R", True)
    h.command("M", {"cmd": "pairresync", "target": "p0", "max_time_ns": T_NS, "method": "none",
                    "order": "time", "window": window})
    return h, prefixes


def sweep_prefix(format_shortcut: bool, window: int = 1) -> list[bool]:
    h, _ = ordered_scenario(format_shortcut, window)
    before = h.events
    h.run()
    total = h.events - before
    results = []
    for kill_after in range(total + 1):
        h, prefixes = ordered_scenario(format_shortcut, window)
        h.run(max_events=kill_after)
        h.kill("M")
        h.run(until_ns=h.now_ns + 3 * T_NS)
        results.append(h.image("R", 0) in prefixes)
    return results


@pytest.mark.parametrize("window", [1, 3])
def test_time_order_is_prefix_consistent_without_shortcut(window):
    """Claim 3: sending the time-series queue oldest first leaves the remote
    at a prefix of the updates at every crash point, even unprotected."""
    assert all(sweep_prefix(False, window))


def test_format_shortcut_breaks_prefix_consistency():
    """1207 drops an earlier format write: some crash point is not a prefix."""
    results = sweep_prefix(True)
    assert not all(results)


def test_queue_show_and_shortcut_invalidation():
    """show queue lists nodes; a second format write to a track invalidates the first (1207)."""
    h, _ = ordered_scenario(True)
    q = h.command("M", {"cmd": "show", "what": "queue", "ldev": 0})["ldev:0@R"]
    assert q["usable"] and [n["valid"] for n in q["nodes"] if n["track"] == 0][0] is False


@pytest.mark.parametrize("n_parity_disks, rows, want_max_active", [(2, 24, 1), (12, 7, 2)])
def test_admission_limited_by_n_and_capacity(n_parity_disks, rows, want_max_active):
    """n from the patent formula caps the active pairs (n=1), or the save
    capacity (real differential-track counts: 3+6+2 tracks, 7 save tracks)
    holds the third pair back until a reached pair frees its saves; all complete."""
    counts = {"n_ldevs": 3, "n_disks": 6, "n_parity_disks": n_parity_disks, "n_spare_disks": 0}
    h = make_rack(params=counts, cache_tracks=0, save_rows=[SaveRow(0, "parity", rows)])
    form_pairs(h)
    suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "window": 4})
    max_active = 0
    while h.step():
        for s in h.command("M", {"cmd": "show", "what": "recovery-plan"})["sessions"]:
            max_active = max(max_active, len(s["active"]))
    assert max_active == want_max_active
    assert h.fw["R"].last_recovery["outcome"] == "complete"
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev)


def test_save_area_too_small_for_a_pair_is_reported():
    """A pair whose differential tracks exceed the whole save area is not
    started: the copy is aborted with a trace, nothing is overwritten."""
    h = make_rack(cache_tracks=0, save_rows=[SaveRow(0, "spare", 2)])
    form_pairs(h)
    susp = suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS})
    h.run()
    assert any(t.event == "save_area_too_small" for _, t in h.traces)
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == susp[ldev]


def test_n_sites_one_master_two_remotes():
    """p0,p1 -> R and p2 -> R2: two recovery copies; the master dies; each
    remote is consistent on its own."""
    pairs = [dict(p) for p in PAIRS]
    pairs[2]["r_site"] = "R2"
    for kill_after in range(0, 40, 3):
        h = make_rack(remotes=("R", "R2"), pairs=pairs)
        form_pairs(h)
        h.set_link("M", "R", False)
        h.set_link("M", "R2", False)
        susp = {(s, l): h.image(s, l) for s in ("R", "R2") for l in sorted(LDEV_TRACKS)}
        for i in range(8):
            h.write_track("M", f"n{i}", i % 3, (i * 3) % 8, f"nsite-{i}")
        h.set_link("M", "R", True)
        h.set_link("M", "R2", True)
        res = h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS})
        assert len(res["sids"]) == 2
        h.run(max_events=kill_after)
        h.kill("M")
        h.run(until_ns=h.now_ns + 3 * T_NS)
        for name, site, ldev in (("p0", "R", 0), ("p1", "R", 1), ("p2", "R2", 2)):
            last = h.fw[site].last_recovery
            rolled = last is None or name in last.get("rolled_back", [])
            want = susp[(site, ldev)] if rolled else h.image("M", ldev)
            assert h.image(site, ldev) == want, (kill_after, name)


def _run_until_saved_on_disk(h) -> None:
    """Run until the remote wrote its first saved track to a save row (512)."""
    while not any(s == "R" and t.step == 512 for s, t in h.traces):
        assert h.step(), "the copy never saved a track on disk"


def test_parity_rows_lent_and_released():
    """Saving on a parity row lends it (the group's redundancy is dropped)
    for the copy only; completion releases it (parity recomputed)."""
    h = make_rack(cache_tracks=0, save_rows=[SaveRow(0, "parity", 24)])
    form_pairs(h)
    suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "unit": "group"})
    _run_until_saved_on_disk(h)
    media = h.fw["R"].save_media
    assert media.lent == {0}
    rows = h.command("R", {"cmd": "show", "what": "save-area"})["rows"]
    assert rows[0]["lent"] and rows[0]["used"] > 0
    h.run()
    assert media.lent == set() and media.release_count == 1


def test_keep_raid5_uses_spares_only():
    """keep_raid5: parity rows may not be used ('may be used' flag off); spares are."""
    h = make_rack(cache_tracks=0, save_rows=[SaveRow(0, "parity", 24), SaveRow(1, "spare", 24)])
    form_pairs(h)
    suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "keep_raid5": True,
                    "unit": "group"})
    _run_until_saved_on_disk(h)
    rows = {r["row_id"]: r for r in h.command("R", {"cmd": "show", "what": "save-area"})["rows"]}
    assert not rows[0]["may_be_used"] and rows[0]["used"] == 0 and rows[1]["used"] > 0
    h.run()
    assert h.fw["R"].save_media.lend_count == 0
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev)


def test_one_ldev_mirrored_to_two_remotes():
    """M:0 -> R:0 and M:0 -> R2:0, each pair with its own bitmap and queue;
    both resync to the master's data; sync writes wait for both acks."""
    pairs = [PAIRS[0], {"name": "p3", "group": "g3", "m_site": "M", "m_ldev": 0, "r_site": "R2",
                        "r_ldev": 0}]
    h = make_rack(remotes=("R", "R2"), pairs=pairs)
    form_pairs(h)
    h.set_link("M", "R2", False)
    h.write_track("M", "x1", 0, 4, "only-R")
    h.run()
    assert h.done["x1"].ok
    assert h.command("M", {"cmd": "show", "what": "bitmap", "ldev": 0}) == {"p0": [], "p3": [4]}
    h.set_link("M", "R2", True)
    h.command("M", {"cmd": "pairresync", "target": "p3", "max_time_ns": T_NS, "order": "time"})
    h.run()
    assert h.image("R", 0) == h.image("M", 0) == h.image("R2", 0)
