"""Remote-copy modes and topologies on the real rack.

* async: the host completes locally; the remote applies updates in order,
  so at any instant the remote image is dependent-write consistent;
* N sites: one master, two remotes with their own pairs; cutting one link
  suspends only that remote's pairs, and a master loss mid-resync leaves
  both remotes consistent;
* takeover: the remote's R-DEVs become writable (SSWS) and a workload runs
  on them;
* trace replay: MSR and MQSim samples drive the host through the rack.
"""

from pathlib import Path

import pytest

from controllers.verify.checker import check
from controllers.rack.storage import StorageRack
from controllers.verify.rack_verify import verify_rack

ROOT = Path(__file__).resolve().parents[2]
TWO = str(ROOT / "configs" / "two-site.toml")
THREE = str(ROOT / "configs" / "three-site.toml")
MS = 1_000_000


def remote_consistent(r, group):
    g = r.groups[group]
    pairs = [r.pairs[n] for n in g["pairs"]]
    images = {p["m_ldev"]: r.export_bytes(p["r_site"], p["r_ldev"]) for p in pairs}
    return check(images, r.writelog().filter(sites=[g["master"]]), [[p["m_ldev"] for p in pairs]])


def mean_write_latency(mode, seed):
    with StorageRack(TWO, backend="inline", seed=seed) as r:
        r.paircreate("g0", mode=mode)
        r.wait_mirrored()
        r.workload_start("w", f"rw=randwrite bs=4KiB iodepth=1 ldevs=0-3 seed={seed}")
        r.run(50 * MS)
        lat = r.host_stats()["main"]["phases"]["main"]["write"]
        return sum(lat) / len(lat)


def test_async_completes_without_the_round_trip():
    """One write at a time: sync pays the 1 ms link round trip, async does not."""
    sync_ns, async_ns = mean_write_latency("sync", 4), mean_write_latency("async", 4)
    assert sync_ns > 1_000_000 > async_ns, (sync_ns, async_ns)


@pytest.mark.parametrize("seed", [1, 2])
def test_async_remote_is_consistent_at_every_pause(seed):
    with StorageRack(TWO, backend="inline", seed=seed) as r:
        r.paircreate("g0", mode="async")
        r.wait_mirrored()
        assert {row["state"] for row in r.pairdisplay()} == {"PAIR"}
        r.workload_start("w", f"rw=randwrite bs=4KiB iodepth=8 ldevs=0-3 seed={seed}")
        for step in range(6):
            r.run((7 + 3 * step) * MS)
            v = remote_consistent(r, "g0")
            assert v.consistent, f"seed={seed} step={step}: {v.reasons}"


def test_three_sites_each_remote_has_its_own_pairs():
    with StorageRack(THREE, backend="inline", seed=3) as r:
        r.paircreate("gnear")
        r.paircreate("gfar")
        r.wait_mirrored()
        assert {row["state"] for row in r.pairdisplay()} == {"PAIR"}
        r.workload_start("w", "rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=3")
        r.run(30 * MS)
        r.fault_link("down", "ln_far")
        r.run(50 * MS)
        states = {row["name"]: row["state"] for row in r.pairdisplay()}
        assert {states[p] for p in ("p0", "p1", "p2", "p3")} == {"PAIR"}, states
        assert {states[p] for p in ("f0", "f1", "f2", "f3")} == {"PSUE"}, states
        r.fault_link("up", "ln_far")
        r.pairresync("gfar")
        r.run(20 * MS)
        r.fault_site_down("main")
        r.run(1_500 * MS)
        for group in ("gnear", "gfar"):
            v = remote_consistent(r, group)
            assert v.consistent, f"{group}: {v.reasons}"
        verdict = verify_rack(r)
        assert verdict["consistent"], verdict["groups"]


def test_takeover_makes_the_remote_writable():
    with StorageRack(TWO, backend="inline", seed=5) as r:
        r.paircreate("g0")
        r.wait_mirrored()
        r.workload_start("w", "rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=5")
        r.run(20 * MS)
        r.fault_site_down("main")
        r.run(10 * MS)
        r.horctakeover("g0")
        assert {row["state"] for row in r.pairdisplay()} == {"SSWS"}
        r.workload_start("dr", "site=remote rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=6")
        r.run(30 * MS)
        st = r.host_stats()["remote"]
        assert st["errors"] == 0 and len(st["phases"]["main"]["write"]) > 10, st["workloads"]


@pytest.mark.parametrize("sample,fmt", [("msr-tiny.csv", "msr"), ("mqsim-tiny.trace", "mqsim")])
def test_trace_replay_drives_the_rack(sample, fmt):
    path = ROOT / "tests" / "data" / sample
    with StorageRack(TWO, backend="inline", seed=1) as r:
        out = r.workload_start("t", f"trace={path} format={fmt} scale=0.001")
        r.run(2_000 * MS)
        st = r.host_stats()["main"]
        done = sum(len(p["read"]) + len(p["write"]) for p in st["phases"].values())
        assert done == out["ios"] and st["errors"] == 0 and st["bad_reads"] == 0, (out, st["workloads"])


def test_trace_replay_rejects_bad_input():
    with StorageRack(TWO, backend="inline") as r:
        with pytest.raises(ValueError, match="no-such"):
            r.workload_start("t", "trace=/no-such-file format=msr")
        with pytest.raises(ValueError, match="unknown trace replay key"):
            r.workload_start("t", f"trace={ROOT / 'tests/data/msr-tiny.csv'} speed=2")
