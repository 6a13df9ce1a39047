"""The patent's example rack (paragraph 0047) gives n = 16 in the recovery
plan the SVP shows, and n follows the user's conditions (step 404):
keeping RAID5 removes the 4 parity-disk equivalents (n = floor(64/24 x 2) = 5),
unusable spares remove the 2 spares (n = floor(64/24 x 4) = 10)."""

from pathlib import Path

import pytest

from controllers.rack.storage import StorageRack

CFG = str(Path(__file__).resolve().parents[2] / "configs" / "patent-example.toml")
MS = 1_000_000


@pytest.mark.parametrize("settings,expected_n", [
    ({}, 16),
    ({"keep_raid5": "on"}, 5),
    ({"spares_usable": "off"}, 10),
])
def test_recovery_plan_n(settings, expected_n):
    with StorageRack(CFG, backend="inline") as r:
        for k, v in settings.items():
            r.set(k, v)
        r.paircreate("all")
        r.wait_mirrored()
        assert {row["state"] for row in r.pairdisplay()} == {"PAIR"}
        r.workload_start("w", "rw=randwrite bs=4KiB iodepth=8 ldevs=0-63 seed=1")
        r.run(20 * MS)
        r.fault_link("down")
        r.run(30 * MS)
        r.fault_link("up")
        r.pairresync("all")
        r.run(5 * MS)
        plan = r.show("recovery-plan")["main"]["sessions"][-1]["plan"]
        assert plan["n"] == expected_n, plan
        assert len(r.spec.actors) == 2 * (24 + 2 + 3) + 1   # 24 small disks + 2 spares per site
