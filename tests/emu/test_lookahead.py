"""Lookahead from minimum service times (``emu.actor.Promise`` and
``Actor.send_floors``) keeps the schedule exact and lets the ``processes``
coordinator run actors further ahead.

Proves: (1) an actor's promises change nothing an actor sees: the trace is
the same in both backends and with or without promises, for several seeds;
(2) they cut the coordinator's rounds: a static promise (reaction and least
delay) fewer than none, the dynamic floor fewer still; (3) a broken promise
is a bug that stops the run in both backends, naming the actor and the
invariant, instead of letting the schedule go inexact; (4) the disk model's
``min_service_ns``, which the disks promise as their reaction, is a lower
bound of every request's service on every preset.
"""

from __future__ import annotations

import numpy as np
import pytest

from controllers.devices.disk.model import PRESETS, DiskModel
from emu.backends.base import ActorFailed
from emu.rack import Rack
from support.actors import fifo_spec

SEEDS = [1, 7, 2024]


def _run(promise: str, backend: str, seed: int) -> tuple[str, int, int]:
    with Rack(fifo_spec(promise, seed=seed), backend=backend) as rack:
        rack.run_until_idle()
        return rack.finish_trace(), rack.events_handled, rack.backend.rounds


@pytest.mark.parametrize("seed", SEEDS)
def test_promises_keep_the_trace_and_cut_rounds(seed):
    runs = {(p, b): _run(p, b, seed) for p in ("none", "static", "dynamic") for b in ("inline", "processes")}
    shas = {sha for sha, _events, _rounds in runs.values()}
    assert len(shas) == 1, f"seed={seed}: traces differ: {runs}"
    assert {events for _sha, events, _rounds in runs.values()} == {4 * 200 * 2}, f"seed={seed}: {runs}"
    rounds = [runs[(p, "processes")][2] for p in ("none", "static", "dynamic")]
    assert rounds[0] > rounds[1] > rounds[2], f"seed={seed}: rounds none/static/dynamic {rounds}"


@pytest.mark.parametrize("backend", ["inline", "processes"])
def test_broken_promise_stops_the_run(backend):
    with Rack(fifo_spec("liar"), backend=backend) as rack:
        with pytest.raises(ActorFailed) as err:
            rack.run_until_idle()
    assert err.value.actor == "server", str(err.value)
    assert "lookahead invariant violated" in str(err.value), str(err.value)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("seed", SEEDS)
def test_min_service_bounds_every_request(preset, seed):
    model = DiskModel(PRESETS[preset])
    floor = model.min_service_ns()
    assert floor > 0, f"{preset}: a drive with no overhead promises nothing"
    rng = np.random.default_rng(seed)
    now = 0
    for _ in range(400):
        now += int(rng.choice([0, 1_000, int(rng.integers(1, 30_000_000))]))
        op = "R" if rng.random() < 0.5 else "W"
        sectors = int(rng.choice([1, 8, 32, 128]))
        # sequential runs (cache hits, appending writes) as well as random ones
        lba = int(rng.integers(0, model.lba_count - sectors)) if rng.random() < 0.5 else \
            min(model.lba_count - sectors, int(rng.integers(0, 64)) * sectors)
        res = model.access(now, op, lba, sectors)
        assert res.done_ns - now >= floor, f"seed={seed} {preset}: {op} {lba}+{sectors} at {now}: {res}"
