"""The DKC's NVM tables end to end (processes backend): the remote DKC
process SIGKILLed from outside during a recovery copy restarts from its
tables (saved-data queue, save-area bitmap, saved tracks in cache), and
after the master's loss rolls back to the suspension image; the DKCs count
the NVM bytes they write, a few per event, not the state's size per round."""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

from controllers.rack.storage import StorageRack
from controllers.verify.rack_verify import verify_rack

CFG = str(Path(__file__).resolve().parents[2] / "configs" / "two-site.toml")
MS = 1_000_000


def test_remote_dkc_sigkilled_mid_copy_restarts_from_its_tables():
    with StorageRack(CFG, backend="processes", seed=3) as r:
        r.set("method", "save-old")
        r.set("max_time", "400ms")
        r.paircreate("g0")
        r.wait_mirrored()
        r.workload_start("w", "rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=3")
        r.run(30 * MS)
        r.fault_link("down")
        r.run(60 * MS)
        r.fault_link("up")
        r.pairresync("g0")
        r.run(8 * MS)
        saved = r.show("save-area")["remote"]["saved_nodes"]
        assert saved > 0, "nothing saved yet: the kill would prove nothing"
        victim = next(p for p in r.show("processes")["processes"] if p["name"] == "remote.dkc")
        fd = os.pidfd_open(victim["pid"])
        try:
            os.kill(victim["pid"], signal.SIGKILL)
            select.select([fd], [], [], 30)   # wait on the process's exit, not on a clock
        finally:
            os.close(fd)
        r.run(1 * MS)
        r.fault_restart("remote.dkc")
        assert r.show("save-area")["remote"]["saved_nodes"] >= saved, "the saved-data queue was lost"
        r.run(2 * MS)
        r.fault_site_down("main")
        r.run(600 * MS)
        r.wait_rollbacks()
        verdict = verify_rack(r)
        last = r.show("recovery-plan")["remote"]["last_remote"]
        dkc = r.device_stats()["dkcs"]["remote.dkc"]
        events = r.rack.events_handled
    assert last["outcome"] != "complete"
    assert verdict["consistent"], verdict["groups"]
    reached = set(last.get("reached", []))
    for pair, facts in verdict["pairs"].items():
        if pair not in reached:
            assert facts.get("equals_suspension_image"), pair
    assert 0 < dkc["nvm_bytes_written"] and dkc["nvm_commits"] > 0
    assert dkc["nvm_bytes_written"] < 2048 * events, (dkc["nvm_bytes_written"], events)
