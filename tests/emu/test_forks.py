"""Fork snapshots (emu.forks, emu.shm.PrivateRegion): a forked child works on
a copy-on-write image and never writes the parent's regions; its result,
its exception, or its death comes back to the parent; at most ``jobs``
children run; an aborted pool kills and reaps its children (no leak).
A paused child (a checkpoint) runs on the image of the instant it was
forked, whatever the parent did since, only when resumed, within the jobs
limit; a discarded or aborted one leaves and is reaped."""

import os
import signal

import numpy as np
import pytest

from emu.forks import ForkPool
from support.procs import our_children
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


def test_a_paused_child_runs_on_the_image_of_its_fork_when_resumed():
    state = {"x": 1}
    with ForkPool(1) as pool:
        first = pool.pause(lambda arg: {"x": state["x"], "arg": arg})
        state["x"] = 2
        second = pool.pause(lambda arg: {"x": state["x"], "arg": arg})
        state["x"] = 3
        done = pool.resume(second, "b", [7]) + pool.resume(first, "a", {"n": 5})
        done += pool.drain()
    assert dict(done) == {"a": {"ok": True, "result": {"x": 1, "arg": {"n": 5}}},
                          "b": {"ok": True, "result": {"x": 2, "arg": [7]}}}


def test_resumed_children_keep_to_the_jobs_limit():
    with ForkPool(1) as pool:
        paused = [pool.pause(lambda arg: arg * 2) for _ in range(4)]
        results, most = {}, 0
        for i, p in enumerate(paused):
            results.update(pool.resume(p, i, i))
            most = max(most, pool.running)
        results.update(pool.drain())
    assert most == 1
    assert {k: v["result"] for k, v in results.items()} == {0: 0, 1: 2, 2: 4, 3: 6}


def test_discarded_and_aborted_paused_children_leave_no_process():
    before = set(our_children())
    pool = ForkPool(2)
    ran = os.pipe()
    kept = pool.pause(lambda arg: os.write(ran[1], b"x"))
    gone = pool.pause(lambda arg: os.write(ran[1], b"x"))
    assert len(set(our_children()) - before) == 2
    pool.discard(gone)
    with pytest.raises(ValueError):
        pool.resume(gone, "again", 1)   # a discarded child cannot be resumed
    pool.close()                        # kills the paused one
    for pid in (kept.pid, gone.pid):
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)   # reaped: no zombie, no orphan
    os.close(ran[1])
    assert os.read(ran[0], 8) == b"", "a paused child ran without being resumed"
    os.close(ran[0])
    assert set(our_children()) <= before
