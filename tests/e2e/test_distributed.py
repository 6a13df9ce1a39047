"""Sweeps on a Dask cluster (``--scheduler``), here a LocalCluster of two
worker processes: the point stream is byte-identical to a local fork sweep,
and a worker killed (SIGKILL) while it runs a block loses nothing: the
scheduler runs the lost block again, keyed by what determines it, and the
matrix row is complete and identical. A campaign's seeds run as tasks too."""

import json
import os
import signal
from pathlib import Path

import pytest
from dask import distributed   # a dependency: missing, this test fails rather than skips

from controllers.verify import campaign, sweep as sw

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "two-site.toml")
PREAMBLE = (ROOT / "scenarios" / "sweep.emu").read_text().splitlines()
SETTINGS = {"method": "none", "order": "bitmap"}   # failures too, so the verdicts are not all alike


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import dask
    scratch = str(tmp_path_factory.mktemp("dask"))
    with dask.config.set({"temporary-directory": scratch}):   # no dask-scratch-space left in /tmp
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      local_directory=scratch, silence_logs=40) as c:
            with distributed.Client(c) as client:
                client.run(_warm)   # both workers equally ready: blocks finish in the order of their cost
                yield client


def _warm():
    import controllers.verify.sweep  # noqa: F401 - imported here once, not inside the first task
    from firmware.raid.parity import warm_up
    warm_up()


def _lines(client=None, on_line=lambda: None):
    lines = []

    def keep(r):
        lines.append(sw.point_line(1, SETTINGS, "master-loss", r))
        on_line()
    # one point per block: block 1 (the earliest point) is the cheapest, so when it is back
    # the others, started no earlier and longer, are still in flight
    s = sw.sweep(CFG, PREAMBLE, 1, SETTINGS, "master-loss", "sample:6", 2, progress=lambda m: None,
                 on_result=keep, client=client, block_points=1)
    return s, lines


def test_a_killed_worker_loses_nothing_and_results_equal_a_local_run(cluster):
    local, local_lines = _lines()
    killed = {}

    def kill_a_busy_worker():
        """After the first block's results: SIGKILL a worker that holds a block."""
        if killed:
            return
        busy = [w for w, keys in cluster.processing().items() if keys]
        assert busy, "no block in flight when the first one came back: the kill would prove nothing"
        pids = cluster.run(os.getpid, workers=[busy[0]])
        killed.update(pids)
        os.kill(pids[busy[0]], signal.SIGKILL)
    remote, remote_lines = _lines(cluster, kill_a_busy_worker)
    assert killed, "no worker was killed"
    assert remote_lines == local_lines   # complete, in point order, byte for byte
    assert len(remote_lines) == 6 and any(not json.loads(ln)["consistent"] for ln in remote_lines)
    assert sw._row(SETTINGS, [remote]) == sw._row(SETTINGS, [local])
    assert remote["method"] == "dask" and local["method"] == "fork"


def test_campaign_seeds_as_tasks_equal_local_seeds(cluster):
    local = list(campaign.run_seeds(CFG, [2, 1], 3, jobs=1))
    remote = list(campaign.run_seeds(CFG, [2, 1], 3, jobs=1, client=cluster))
    assert remote == local
