"""Pairs, mirroring, differential bitmap, resync and commands of the DKC firmware."""
import pytest

from firmware.protocol import HostDone
from firmware.fig05_recovery_master import compute_n
from firmware.store import SaveRow
from support.fw_harness import (LDEV_TRACKS, T_NS, form_pairs, make_rack, stamp,
                              suspend_and_write)


def states(h, site):
    return {row["name"]: row["state"] for row in h.command(site, {"cmd": "pairdisplay"})["pairs"]}


def test_pairs_form_and_mirror():
    """paircreate copies every track (COPY -> PAIR on both sides) and later
    sync writes reach the remote before the host is told they completed."""
    h = make_rack()
    form_pairs(h)
    assert states(h, "M") == {"p0": "PAIR", "p1": "PAIR", "p2": "PAIR"}
    assert states(h, "R") == {"p0": "PAIR", "p1": "PAIR", "p2": "PAIR"}
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev)
    h.write_track("M", "w", 0, 3, "late")
    assert "w" not in h.done  # sync: waits for the remote's ack
    h.run()
    assert h.done["w"].ok and h.image("R", 0) == h.image("M", 0)


def test_async_completes_locally_and_applies_in_order():
    """Async mode: the host completes before the remote is updated; the
    remote applies the updates in sequence order and ends equal."""
    h = make_rack()
    form_pairs(h, mode="async")
    for i in range(5):
        h.write_track("M", f"a{i}", 1, i % 2, f"async-{i}")
        assert h.done[f"a{i}"].ok
    assert h.image("R", 1) != h.image("M", 1)
    h.run()
    assert h.image("R", 1) == h.image("M", 1)


def test_link_down_suspends_and_sets_bits():
    """Link down -> PSUE; host writes continue and set one bit per track (Fig. 7)."""
    h = make_rack()
    form_pairs(h)
    suspend_and_write(h)
    assert states(h, "M") == {"p0": "PSUE", "p1": "PSUE", "p2": "PSUE"}
    bits = h.command("M", {"cmd": "show", "what": "bitmap", "ldev": 0})
    assert bits == {"p0": [1, 3, 5]}
    assert all(d.ok for k, d in h.done.items() if str(k).startswith("sw"))


def test_fence_data_fails_host_write_when_suspended():
    """Fence level data: a write that cannot reach the remote fails."""
    h = make_rack()
    form_pairs(h, fence="data")
    h.set_link("M", "R", False)
    h.write_track("M", "f", 0, 0, "fenced")
    assert not h.done["f"].ok and "fence" in h.done["f"].error


def test_sync_write_in_flight_when_link_drops():
    """A sync write whose ack is lost: fence never completes it and marks its bit."""
    h = make_rack()
    form_pairs(h)
    h.write_track("M", "x", 2, 6, "inflight")
    h.set_link("M", "R", False)
    assert h.done["x"].ok
    assert h.command("M", {"cmd": "show", "what": "bitmap", "ldev": 2}) == {"p2": [6]}


@pytest.mark.parametrize("method", ["save-old", "stage-new", "none"])
@pytest.mark.parametrize("order", ["bitmap", "time"])
def test_resync_completes(method, order):
    """pairresync sends the differential tracks; all pairs back to PAIR,
    remote equal to master, save area released."""
    h = make_rack()
    form_pairs(h)
    suspend_and_write(h)
    res = h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS,
                          "method": method, "order": order, "window": 2})
    assert res["ok"]
    h.run()
    assert states(h, "M") == {"p0": "PAIR", "p1": "PAIR", "p2": "PAIR"}
    assert states(h, "R") == {"p0": "PAIR", "p1": "PAIR", "p2": "PAIR"}
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev), ldev
    assert h.fw["R"].rsession is None and h.fw["R"].last_recovery["outcome"] == "complete"
    assert not h.fw["R"].save_media.lent


def test_writes_during_recovery_reach_remote():
    """0014: host writes continue during the recovery copy; a track already
    sent is mirrored, one not yet sent only sets its bit; at the end the
    remote equals the master."""
    h = make_rack(latency_ns=50_000, save_rows=[SaveRow(0, "parity", 24)])
    form_pairs(h)
    suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "window": 1})
    for i in range(30):
        h.run(max_events=3)
        h.write_track("M", f"d{i}", i % 3, (i * 5) % 8, f"during-{i}")
    h.run()
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev), ldev
    assert all(d.ok for d in h.done.values())
    assert h.fw["R"].last_recovery["outcome"] == "complete"


def test_save_area_full_is_refused_and_rolled_back():
    """When writes during the copy overflow the save area, the remote refuses
    the track (never acknowledges unprotected data), the master restores its
    bits and suspends, the remote rolls back after T; a second resync then
    brings the remote equal to the master."""
    h = make_rack(latency_ns=50_000)
    form_pairs(h)
    susp = suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "window": 1,
                    "unit": "group"})
    for i in range(30):
        h.run(max_events=3)
        h.write_track("M", f"d{i}", i % 3, (i * 5) % 8, f"during-{i}")
    h.run()
    last = h.fw["R"].last_recovery
    assert last["outcome"] == "rolled_back"
    for name, ldev in (("p0", 0), ("p1", 1), ("p2", 2)):
        if name in last["rolled_back"]:
            assert h.image("R", ldev) == susp[ldev], name
    assert any(e.event == "save_area_full" for _, e in h.traces)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "method": "none"})
    h.run()
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev), ldev


def test_compute_n_patent_example():
    """Patent 0047: 64 LDEVs on 24 disks, 4 parity equivalents, 2 spares -> n = 16."""
    assert compute_n(64, 24, 4, 2) == 16
    assert compute_n(64, 24, 4, 2, keep_raid5=True) == 5
    assert compute_n(64, 24, 4, 2, spares_usable=False) == 10


def test_recovery_plan_shows_n():
    """The recovery plan exposes n from the patent formula (counts in params)."""
    counts = {"n_ldevs": 64, "n_disks": 24, "n_parity_disks": 4, "n_spare_disks": 2}
    h = make_rack(params=counts)
    form_pairs(h)
    suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS})
    h.run(max_events=2)
    plan = h.command("M", {"cmd": "show", "what": "recovery-plan"})
    assert plan["sessions"][0]["plan"]["n"] == 16


def test_bad_commands_leave_state_unchanged():
    """A bad command raises ValueError with a message and changes nothing."""
    h = make_rack()
    form_pairs(h)
    before = h.fw["M"].snapshot()
    for cmd in ({"cmd": "nope"}, {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS},
                {"cmd": "pairresync", "target": "zz", "max_time_ns": 1},
                {"cmd": "paircreate", "target": "g0"}, {"cmd": "paircreate"},
                {"cmd": "pairsplit", "target": "nope"}, {"cmd": "set", "key": "bogus", "value": 1},
                {"cmd": "show", "what": "nothing"}, {"cmd": "horctakeover", "target": "g0"}):
        with pytest.raises(ValueError):
            h.fw["M"].command(0, cmd)
    assert h.fw["M"].snapshot() == before


def test_split_resync_and_delete():
    """pairsplit -> PSUS (writes set bits), resync -> PAIR, pairsplit -S -> SMPL."""
    h = make_rack()
    form_pairs(h)
    h.command("M", {"cmd": "pairsplit", "target": "g1"})
    h.run()
    assert states(h, "R")["p2"] == "PSUS"
    h.write_track("M", "s", 2, 4, "split")
    h.run()
    h.command("M", {"cmd": "pairresync", "target": "g1", "max_time_ns": T_NS})
    h.run()
    assert h.image("R", 2) == h.image("M", 2)
    h.command("M", {"cmd": "pairsplit", "target": "g1", "delete": True})
    h.run()
    assert states(h, "M")["p2"] == "SMPL" and states(h, "R")["p2"] == "SMPL"


def test_takeover_makes_rdev_writable():
    """R-DEVs refuse host writes until horctakeover (SSWS)."""
    h = make_rack()
    form_pairs(h)
    h.write_track("R", "r1", 0, 0, "remote")
    assert not h.done["r1"].ok
    h.set_link("M", "R", False)
    res = h.command("R", {"cmd": "horctakeover", "target": "*"})
    assert res["ok"] and states(h, "R")["p0"] == "SSWS"
    h.write_track("R", "r2", 0, 0, "remote")
    assert h.done["r2"].ok


def test_host_read_and_bad_write():
    """host_read returns the stored sectors; an out-of-range write fails cleanly."""
    h = make_rack()
    form_pairs(h)
    acts = h.fw["M"].host_read(0, "rd", 0, 0, 2)
    assert acts[0].ok and acts[0].data == stamp("v1-0-0", 1024)
    acts = h.fw["M"].host_write(0, "bad", 0, 10_000, 1, b"x" * 512)
    assert isinstance(acts[0], HostDone) and not acts[0].ok
