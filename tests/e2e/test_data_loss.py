"""Double faults during a recovery copy (issue 10, items 1 and 4): a track
whose suspension image cannot be restored is marked lost in the remote
DKC's NVM, reads and exports of it fail whatever the cache holds, verify
names every affected LDEV and track range; a degraded save place takes no
more saved tracks; the rollback takes disk time, one restored track after
another, and a remote DKC killed in the middle finishes it after restart."""
import io
from pathlib import Path

import pytest

from controllers.operator.console import SvpConsole
from controllers.rack.storage import CommandError, StorageRack
from controllers.verify.rack_verify import verify_rack
from emu.trace import parse_line

CFG = str(Path(__file__).resolve().parents[2] / "configs" / "two-site.toml")
MS = 1_000_000
SPARE = 4          # remote.disk4: the spare of the 3D+1P group


def _suspended(r: StorageRack, seed: int = 3) -> None:
    r.set("max_time", "300ms")
    r.set("window", "16")
    r.paircreate("g0")
    r.wait_mirrored()
    r.fault_link("down")
    r.workload_start("w", f"rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed={seed} runtime=40ms")
    r.run(60 * MS)
    r.fault_link("up")
    r.run(1 * MS)
    assert {row["state"] for row in r.pairdisplay()} == {"PSUE"}


def _records(r: StorageRack, event: str | None = None) -> list[dict]:
    r.rack.sink.flush_all()
    rows = [parse_line(line) for line in r.rack.sink.lines]
    return [x for x in rows if event is None or x["event"] == event]


def _saved_on(r: StorageRack, row: int) -> set[tuple[int, int]]:
    return {(x["fields"]["ldev"], x["fields"]["track"]) for x in _records(r, "save_track_found")
            if x["fields"]["row"] == row}


def test_parity_save_area_with_a_failed_disk_reports_data_loss_never_wrong_bytes():
    """The issue's scenario: parity tracks only, a remote disk fails 10 ms
    into the copy, the master site 1 ms later; after T the rollback cannot
    restore what sat on the failed disk."""
    with StorageRack(CFG, backend="inline", keep_trace=True) as r:
        _suspended(r)
        for key, value in (("cache_save_threshold", "0"), ("spares_usable", "off"), ("keep_raid5", "off")):
            r.set(key, value)
        r.pairresync("g0")
        r.run(10 * MS)
        r.fault_disk_fail("remote", 0)
        t_fail = r.now_ns
        r.run(1 * MS)
        r.fault_site_down("main")
        assert r.run_until("recovery.rolled_back", 2000 * MS) is not None
        # the degraded group's parity took no saved track after the failure
        withdrawn = _records(r, "save_place_withdrawn")
        assert withdrawn and withdrawn[0]["fields"]["row"] == 0
        late = [x for x in _records(r, "save_track_found") if x["time_ns"] > t_fail and x["fields"]["row"] == 0]
        assert late == [], late
        v = verify_rack(r)
        assert not v["consistent"]
        (g,) = v["groups"]
        assert sorted(loss["ldev"] for loss in g["data_loss"]) == [0, 1, 2, 3]
        assert all(loss["tracks"] for loss in g["data_loss"])
        for ldev in range(4):       # no export carries bytes nobody can vouch for
            with pytest.raises(CommandError):
                r.export_bytes("remote", ldev)
        out = io.StringIO()
        SvpConsole(r, stdout=out).onecmd("verify")
        text = out.getvalue()
        assert "verify: INCONSISTENT" in text
        for ldev in range(4):
            assert f"DATA LOSS at remote ldev {ldev}" in text


def _rolled_back_equal_suspension(r: StorageRack, v: dict) -> None:
    last = r.show("recovery-plan")["remote"]["last_remote"]
    assert last["outcome"] == "rolled_back" and last["rolled_back"]
    for name in last["rolled_back"]:
        assert v["pairs"][name]["equals_suspension_image"], (name, v["pairs"])


def _master_lost_mid_copy(r: StorageRack) -> None:
    """Saved tracks on the spare only; resync; the master is lost 15 ms in."""
    _suspended(r)
    _spare_only(r)
    r.pairresync("g0")
    r.run(15 * MS)
    r.fault_site_down("main")


def _spare_only(r: StorageRack) -> None:
    for key, value in (("cache_save_threshold", "0"), ("spares_usable", "on"), ("keep_raid5", "on")):
        r.set(key, value)


def test_lost_spare_marks_exactly_its_saved_tracks_and_reads_fail_until_rewritten():
    """Saved tracks on the spare only; the spare fails mid-copy, then the
    master. Exactly the tracks saved there are lost, whatever the cache
    holds; the rest of every LDEV is consistent; the marks survive a DKC
    restart (NVM); a whole-track write after takeover clears one."""
    with StorageRack(CFG, backend="inline", keep_trace=True) as r:
        _suspended(r)
        _spare_only(r)
        r.pairresync("g0")
        r.run(15 * MS)
        r.fault_disk_fail("remote", SPARE)
        r.fault_site_down("main")
        assert r.run_until("recovery.rolled_back", 2000 * MS) is not None
        last = r.show("recovery-plan")["remote"]["last_remote"]
        rolled = {r.pairs[n]["r_ldev"] for n in last["rolled_back"]}
        # row 1 is the spare (row 0, the parity group, is kept); a pair that
        # reached freed its saves (unit ldev), so only the rolled back ones count
        saved = {(ldev, t) for ldev, t in _saved_on(r, 1) if ldev in rolled}
        assert saved, "the copy saved nothing on the spare for a rolled-back pair: the test proves nothing"
        lost = {(ldev, t) for ldev, runs in r.lost_tracks("remote").items()
                for run in runs for t in range(run["first"], run["last"] + 1)}
        assert lost == saved
        v = verify_rack(r)
        (g,) = v["groups"]
        assert {loss["ldev"] for loss in g["data_loss"]} == {ldev for ldev, _ in saved}
        assert g["consistent"], g["reasons"][:3]     # what can be read is right
        clean = sorted(set(range(4)) - {ldev for ldev, _ in saved})
        for ldev in clean:
            r.export_bytes("remote", ldev)
        ldev, track = sorted(saved)[0]
        with pytest.raises(CommandError, match=rf"data loss: export of ldev {ldev} tracks .*{track}"):
            r.export_bytes("remote", ldev)
        # NVM: a restarted DKC (cold cache) knows the same lost tracks
        r.fault_kill("remote.dkc")
        r.fault_restart("remote.dkc")
        r.run(1 * MS)
        assert {(l, t) for l, runs in r.lost_tracks("remote").items()
                for run in runs for t in range(run["first"], run["last"] + 1)} == saved
        # reads of a lost track fail (never wrong bytes); a whole-track write clears it
        r.horctakeover("g0")
        tb_sectors = 16 * 1024 // 512
        r.workload_start("rd", f"site=remote rw=read bs=16KiB iodepth=1 ldevs={ldev} seed=1 runtime=400ms")
        r.run(410 * MS)
        stats = r.host_stats()["remote"]
        assert stats["bad_reads"] == 0
        assert stats["errors"] > 0, "reads of lost tracks were answered"
        r.workload_start("wr", f"site=remote rw=write bs=16KiB iodepth=1 ldevs={ldev} seed=1 runtime=400ms")
        r.run(410 * MS)
        assert r.lost_tracks("remote").get(ldev) is None, "whole-track writes did not clear the marks"
        r.export_bytes("remote", ldev)


def test_rollback_takes_disk_time_one_track_after_another():
    with StorageRack(CFG, backend="inline", keep_trace=True) as r:
        _master_lost_mid_copy(r)
        t_done = r.run_until("recovery.rolled_back", 2000 * MS)
        restores = _records(r, "restored_from_save_area")
        assert len(restores) >= 3
        times = [x["time_ns"] for x in restores]
        assert len(set(times)) == len(times), "restored tracks share an instant"
        (start,) = _records(r, "rc_rollback_started")
        # each restore read the spare: at least a few ms of disk per track
        assert t_done - start["time_ns"] >= len(restores) * 2 * MS
        v = verify_rack(r)
        assert v["consistent"]
        _rolled_back_equal_suspension(r, v)


@pytest.mark.parametrize("kill_at", [1, 2, 5])
def test_remote_dkc_killed_mid_rollback_finishes_it_after_restart(kill_at):
    with StorageRack(CFG, backend="inline", keep_trace=True) as r:
        _master_lost_mid_copy(r)
        t = r.rack.run_until_record({518, 519}, kill_at, 2000 * MS)
        assert t is not None
        r.fault_kill("remote.dkc")
        r.fault_restart("remote.dkc")
        assert r.run_until("recovery.rolled_back", 2000 * MS) is not None
        v = verify_rack(r)
        assert v["consistent"], [g["reasons"][:2] for g in v["groups"]]
        _rolled_back_equal_suspension(r, v)
        assert r.lost_tracks("remote") == {}


def test_takeover_during_a_copy_waits_for_the_rollback():
    with StorageRack(CFG, backend="inline") as r:
        _suspended(r)
        _spare_only(r)
        r.pairresync("g0")
        r.run(15 * MS)
        r.fault_site_down("main")
        out = r.horctakeover("g0")
        assert "SSWS" not in {row["state"] for row in r.pairdisplay("g0")}, "SSWS before the rollback ended"
        assert out["results"][0]["waiting_for_rollback"]["tracks_left"] > 0
        assert r.run_until("recovery.rolled_back", 2000 * MS) is not None
        assert {row["state"] for row in r.pairdisplay("g0")} == {"SSWS"}
        _rolled_back_equal_suspension(r, verify_rack(r))
