"""Fork snapshots (emu.forks, emu.shm.PrivateRegion): a forked child works on
a copy-on-write image and never writes the parent's regions; its result,
its exception, or its death comes back to the parent; at most ``jobs``
children run; an aborted pool kills and reaps its children (no leak)."""

import os
import signal

import numpy as np
import pytest

from emu.forks import ForkPool
from emu.shm import PrivateRegion, SharedRegion, leftover_segments, new_rack_id


def test_a_child_writes_its_own_copy_of_a_private_region():
    region = PrivateRegion("media", 1 << 20)
    region.buf[:4] = [1, 2, 3, 4]

    def scribble():
        region.buf[:4] = 9
        return int(region.buf[:4].sum())
    try:
        with ForkPool(1) as pool:
            pool.submit("w", scribble)
            (key, answer), = pool.drain()
        assert key == "w" and answer == {"ok": True, "result": 36}
        assert list(region.buf[:4]) == [1, 2, 3, 4], "the child wrote the parent's region"
    finally:
        region.unlink()


def test_a_shared_segment_would_be_written_by_the_child():
    """Why the inline backend uses private regions: the same scribble through
    a /dev/shm segment reaches the parent (so this test can tell them apart)."""
    rack_id = new_rack_id()
    region = SharedRegion.create(rack_id, "media", 4096)
    try:
        with ForkPool(1) as pool:
            pool.submit("w", lambda: region.buf.__setitem__(slice(0, 4), 9))
            pool.drain()
        assert list(region.buf[:4]) == [9, 9, 9, 9]
    finally:
        region.unlink()
    assert not leftover_segments(rack_id)


def test_an_exception_and_a_death_come_back_as_errors():
    def boom():
        raise KeyError("no such track")
    with ForkPool(2) as pool:
        pool.submit("boom", boom)
        pool.submit("dies", lambda: os.kill(os.getpid(), signal.SIGKILL))
        answers = dict(pool.drain())
    assert not answers["boom"]["ok"] and "KeyError" in answers["boom"]["error"]
    assert not answers["dies"]["ok"] and "signal 9" in answers["dies"]["error"]


@pytest.mark.parametrize("jobs", [1, 3])
def test_at_most_jobs_children_run_and_every_result_arrives(jobs):
    pool = ForkPool(jobs)
    results, most = {}, 0
    with pool:
        for i in range(7):
            results.update(pool.submit(i, lambda i=i: i * i))
            most = max(most, pool.running)
        results.update(pool.drain())
    assert most == jobs
    assert {k: v["result"] for k, v in results.items()} == {i: i * i for i in range(7)}
    assert pool.forked == 7


def test_an_aborted_pool_kills_and_reaps_its_children():
    r, w = os.pipe()
    try:
        pool = ForkPool(2)
        pool.submit("stuck", lambda: os.read(r, 1))   # blocks until killed
        pid = next(iter(pool._running.values()))[0]
        pool.close()
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)   # already reaped: no zombie, no orphan
    finally:
        os.close(r)
        os.close(w)


def test_a_private_region_cannot_be_attached_elsewhere():
    region = PrivateRegion("nvm", 4096)
    try:
        assert isinstance(region.buf, np.ndarray) and region.buf.sum() == 0
        with pytest.raises(TypeError):
            region.spec()
    finally:
        region.unlink()
