"""Trust under faults (issue 10): a copy with no save area is refused, not
started and silently rolled back; a second pairresync never tears down the
running copy; a group's suspended pairs resync while its PAIR pairs stay;
the reason the master records for a rollback is the remote's."""
import io
from pathlib import Path

import pytest

from controllers import cli
from controllers.rack.storage import CommandError, StorageRack
from controllers.verify.rack_verify import verify_rack

CFG = str(Path(__file__).resolve().parents[2] / "configs" / "two-site.toml")
MS = 1_000_000


def _suspended_with_writes(r: StorageRack) -> None:
    r.set("max_time", "300ms")
    r.set("window", "16")
    r.paircreate("g0")
    r.wait_mirrored()
    assert {row["state"] for row in r.pairdisplay()} == {"PAIR"}
    r.fault_link("down")
    r.workload_start("w", "rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=3 runtime=40ms")
    r.run(60 * MS)
    r.fault_link("up")
    r.run(1 * MS)
    assert {row["state"] for row in r.pairdisplay()} == {"PSUE"}


def test_no_save_area_is_refused_and_changes_nothing():
    with StorageRack(CFG, backend="inline") as r:
        _suspended_with_writes(r)
        for key, value in (("keep_raid5", "on"), ("spares_usable", "off"), ("cache_save_threshold", "0")):
            r.set(key, value)
        assert r.show("config")["settings"]["cache_save_threshold"] == 0
        before, t0 = r.pairdisplay("g0"), r.now_ns
        need = max(row["diff_tracks"] for row in before)
        with pytest.raises(CommandError, match=rf"the save area at remote holds 0 tracks .*this copy needs {need}"):
            r.pairresync("g0")
        assert r.pairdisplay("g0") == before and r.now_ns == t0
        assert r.show("recovery-plan")["remote"]["last_remote"] is None, "the remote was told"
        r.pairresync("g0", method="none", window=16)   # unprotected: the user's explicit choice
        r.run(200 * MS)
        assert {row["state"] for row in r.pairdisplay()} == {"PAIR"}


def test_cache_threshold_alone_makes_room():
    with StorageRack(CFG, backend="inline") as r:
        _suspended_with_writes(r)
        r.set("keep_raid5", "on")
        r.set("spares_usable", "off")
        r.set("cache_save_threshold", "4096")
        r.pairresync("g0")
        r.run(250 * MS)
        assert {row["state"] for row in r.pairdisplay()} == {"PAIR"}


def test_refusal_is_exit_2_in_a_script(tmp_path, capsys):
    script = tmp_path / "s.emu"
    script.write_text("set max_time 300ms\n" + "\n".join([
        "paircreate g0", "run until pair.mirroring 5s", "fault link down",
        "workload start w rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=3 runtime=40ms", "run 60ms",
        "fault link up", "set keep_raid5 on", "set spares_usable off", "set cache_save_threshold 0",
        "pairresync g0", "run 10ms"]) + "\n")
    code = cli.main(["run", CFG, str(script), "--backend", "inline"])
    out = capsys.readouterr()
    assert code == 2, out.err
    assert "the save area at remote holds 0 tracks" in out.out + out.err


def test_second_pairresync_is_refused_naming_the_running_copy():
    with StorageRack(CFG, backend="inline") as r:
        _suspended_with_writes(r)
        r.pairresync("p0")
        r.run(2 * MS)
        with pytest.raises(CommandError, match=r"recovery copy \d+ to remote is running \(p0\)"):
            r.pairresync("p1")
        r.run(300 * MS)
        states = {row["name"]: row["state"] for row in r.pairdisplay()}
        assert states["p0"] == "PAIR", states                      # never rolled back by the second command
        assert r.show("recovery-plan")["remote"]["last_remote"]["outcome"] == "complete"


def test_group_resync_leaves_pair_pairs_alone():
    with StorageRack(CFG, backend="inline") as r:
        _suspended_with_writes(r)
        r.pairresync("p0")
        r.run(250 * MS)
        assert {row["name"]: row["state"] for row in r.pairdisplay()}["p0"] == "PAIR"
        out = r.pairresync("g0")                                   # p0 is PAIR: resync p1..p3 only
        assert sorted(out["pairs"]) == ["p1", "p2", "p3"]
        r.run(300 * MS)
        assert {row["state"] for row in r.pairdisplay()} == {"PAIR"}
        with pytest.raises(CommandError, match="no suspended pair"):
            r.pairresync("g0")


def test_run_until_mirroring_waits_for_every_pair():
    """Item 6: the signal is the end of 353 (every pair PAIR), not the first initial-copy track."""
    with StorageRack(CFG, backend="inline") as r:
        r.paircreate("g0")
        t = r.run_until("pair.mirroring", 5_000 * MS)
        assert t is not None
        assert {row["state"] for row in r.pairdisplay("g0")} == {"PAIR"}


def test_paircreate_all_means_every_pair():
    with StorageRack(CFG, backend="inline") as r:
        r.paircreate("all")
        assert {row["state"] for row in r.pairdisplay("all")} == {"COPY"}


def test_emu_run_keeps_the_evidence_on_error(tmp_path, capsys):
    """Item 10: --json, --writes and --trace are written up to the failing
    line, and the report names it."""
    import json
    import subprocess
    import sys
    script = tmp_path / "s.emu"
    # a trace far larger than a pipe's buffer, so the reader's going away is felt
    script.write_text("paircreate g0\nrun until pair.mirroring 5s\nworkload start w rw=randwrite bs=4KiB iodepth=4 ldevs=0-3\n"
                      "run 100ms\npairsplit nosuchgroup\nrun 1s\n")
    files = {k: tmp_path / f"out.{k}" for k in ("json", "writes", "trace")}
    code = cli.main(["run", CFG, str(script), "--backend", "inline", "--json", str(files["json"]),
                     "--writes", str(files["writes"]), "--trace", str(files["trace"])])
    assert code == 2
    assert all(f.exists() and f.stat().st_size > 0 for f in files.values()), files
    report = json.loads(files["json"].read_text())
    assert report["error"].startswith(f"{script}:5: ") and "nosuchgroup" in report["error"]
    # Item 11: `emu trace FILE | head -1` ends quietly
    p = subprocess.Popen([sys.executable, "-m", "controllers.cli", "trace", str(files["trace"])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 0 and "BrokenPipe" not in err and "Traceback" not in err, err
    assert files["trace"].stat().st_size > 1 << 16   # more than a pipe buffer (64 KiB)


def test_disks_sort_naturally():
    from controllers.operator.report import natural_key
    names = ["remote.disk10", "remote.disk2", "remote.disk1", "main.disk0"]
    assert sorted(names, key=natural_key) == ["main.disk0", "remote.disk1", "remote.disk2", "remote.disk10"]


def test_verify_judges_by_the_unit_of_the_last_copy_after_the_master_is_lost():
    """Item 5: after `set unit group`, a resync and the master's loss, verify
    uses unit group (the master's SVP, which held the setting, is gone)."""
    with StorageRack(CFG, backend="inline") as r:
        _suspended_with_writes(r)
        r.set("unit", "group")
        r.pairresync("g0")
        r.run(5 * MS)
        r.fault_site_down("main")
        r.run(400 * MS)
        r.wait_rollbacks()
        v = verify_rack(r)
        assert v["unit"] == "group" and [g["unit"] for g in v["groups"]] == ["group"], v
        assert v["consistent"], v


def test_process_deaths_are_visible():
    """Item 9: each actor process names itself, `show processes` lists them,
    and a kill -9 from outside is a console notice and a reported fault."""
    import os
    import select
    import signal
    with StorageRack(CFG, backend="processes") as r:
        out = io.StringIO()
        from controllers.operator.console import SvpConsole
        console = SvpConsole(r, stdout=out)
        console.onecmd("show processes")
        table = r.show("processes")["processes"]
        victim = next(p for p in table if p["name"] == "remote.disk4")
        assert victim["alive"] and victim["pid"] != os.getpid()
        title = Path(f"/proc/{victim['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert f"emu:{r.spec.name}:remote.disk4" in title, title
        assert "remote.disk4" in out.getvalue()
        fd = os.pidfd_open(victim["pid"])
        try:
            os.kill(victim["pid"], signal.SIGKILL)
            select.select([fd], [], [], 30)   # wait on the process's exit, not on a clock
        finally:
            os.close(fd)
        console.onecmd("run 20ms")
        assert "notice: process remote.disk4 died at" in out.getvalue(), out.getvalue()
        row = next(p for p in r.show("processes")["processes"] if p["name"] == "remote.disk4")
        assert not row["alive"] and row["pid"] is None
        assert any(f["actor"] == "remote.disk4" and f["fault"] == "died" for f in r.rack.faults)


def test_link_bandwidth_and_latency_are_settable_at_run_time():
    """Item 2: set link0.bandwidth / link0.latency change the path at once and show in show config;
    a latency below the configured propagation (the scheduler's lookahead) is refused."""
    with StorageRack(CFG, backend="inline") as r:
        base = r.show("config")["links"][0]["latency_ns"]
        with pytest.raises(CommandError, match="can grow, not shrink"):
            r.set("link0.latency", "1us")
        with pytest.raises(CommandError, match="unknown link setting"):
            r.set("link0.colour", "red")
        r.set("link0.bandwidth", "10Mb/s")
        r.set("link0.latency", "5ms")
        link = r.show("config")["links"][0]
        assert link["bandwidth_bps"] == 10_000_000 and link["latency_ns"] == 5 * MS > base
        r.paircreate("g0")
        r.run_until("pair.mirroring", 20_000 * MS)
        r.phase("slow")
        r.workload_start("w", "rw=randwrite bs=4KiB iodepth=1 ldevs=0 runtime=200ms")
        r.run(300 * MS)
        lat = r.host_stats()["main"]["phases"]["slow"]["write"]
        assert lat and min(lat) > 2 * 5 * MS, lat[:5]   # a sync write waits a round trip of 5 ms each way


def test_a_lost_site_stays_in_the_report():
    """Item 11: the master's disks and DKC keep their counters up to the loss, marked failed."""
    from controllers.operator.report import build_report
    with StorageRack(CFG, backend="inline") as r:
        r.paircreate("g0")
        r.wait_mirrored()
        r.workload_start("w", "rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 runtime=30ms")
        r.run(50 * MS)
        before = r.device_stats()
        lost_at_ns = r.now_ns
        r.fault_site_down("main")
        r.run(10 * MS)
        dev = build_report(r)["devices"]
        for section in ("disks", "dkcs"):
            lost = {n: d for n, d in dev[section].items() if n.startswith("main.")}
            assert lost and sorted(lost) == sorted(n for n in before[section] if n.startswith("main."))
            assert all(d["failed"] and d["lost_at_ns"] == lost_at_ns for d in lost.values()), lost
        assert dev["dkcs"]["main.dkc"]["writes"] == before["dkcs"]["main.dkc"]["writes"] > 0


def test_recovery_plan_on_demand_names_the_save_places_and_the_limit():
    """Item 11: step 404's plan for a group before any pairresync: n, the
    capacity of each save place, what limits n; a refusal is foretold."""
    from controllers.operator.console import SvpConsole
    with StorageRack(CFG, backend="inline") as r:
        _suspended_with_writes(r)
        (plan,) = r.show("recovery-plan")["groups"]
        assert plan["group"] == "g0" and plan["n"] == 2 and plan["refused"] is None
        assert [(p["kind"], p["usable"]) for p in plan["places"]] == [("parity", True), ("spare", True),
                                                                       ("cache", True)]
        assert plan["capacity_tracks"] == sum(p["tracks"] for p in plan["places"])
        assert plan["largest_pair_tracks"] == max(row["diff_tracks"] for row in r.pairdisplay("g0"))
        for key, value in (("keep_raid5", "on"), ("spares_usable", "off"), ("cache_save_threshold", "0")):
            r.set(key, value)
        (plan,) = r.show("recovery-plan")["groups"]
        assert plan["capacity_tracks"] == 0 and "holds 0 tracks" in plan["refused"]
        out = io.StringIO()
        console = SvpConsole(r, stdout=out)
        console.onecmd("show recovery-plan")
        text = out.getvalue()
        assert "Save place" in text and "REFUSED" in text and "n = floor(4 LDEVs / 4 disks x 0 save disks)" in text
        out.truncate(0)
        console.onecmd("show recovery-plan --json")
        import json
        assert json.loads(out.getvalue().strip("\x00"))["groups"][0]["refused"]


def test_timeline_bands_one_per_pair():
    """Item 11: one band per pair, its state runs in time order, none hidden."""
    from controllers.operator.plots import pair_bands
    samples = [{"time_ns": 0, "pairs": {"p0": ("PAIR", 0), "p1": ("PAIR", 0)}},
               {"time_ns": 10, "pairs": {"p0": ("PSUE", 3), "p1": ("PAIR", 0)}},
               {"time_ns": 20, "pairs": {"p0": ("COPY", 2), "p1": ("PAIR", 0)}}]
    bands = pair_bands(samples)
    assert bands["p0"] == [(0, 10, "PAIR"), (10, 20, "PSUE"), (20, 20, "COPY")]
    assert bands["p1"] == [(0, 20, "PAIR")]
