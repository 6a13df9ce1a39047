"""Sweeps and campaigns on a Dask distributed cluster (``--scheduler tcp://HOST:PORT``).

The work is cut into tasks that are pure functions of what they are sent:

* ``count``: the crash points of (config, script, seed, settings);
* ``block``: a run of consecutive crash points sharing one preamble (the
  worker runs the preamble once and forks a snapshot at each point, as a
  local fork sweep does: ``sweep._fork_results``);
* ``seed``: one campaign seed.

Each task's Dask key is made of what determines its result (the sha256 of
the config and of the script, the settings, the fault, the seed, the
points), so a task the scheduler runs again, because the worker running it
died, gives the same result, and one submitted twice is computed once.
Tasks carry the config's and the script's text, not their paths, so a
worker needs the project installed (``pip install -e .``), not a copy of
the caller's files. Results come back in point (or seed) order, so the
stream, and everything made from it, is byte-identical to a local run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

#: crash points per block task: enough to share a preamble, few enough to spread
BLOCK_POINTS = 10


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _settings_tag(settings: dict) -> str:
    return sha(json.dumps(settings, sort_keys=True))[:12]


class _ConfigFile:
    """The config's text as a file of the same name in a private temporary
    folder (the rack's name defaults to the file's stem)."""

    def __init__(self, name: str, text: str):
        self._dir = tempfile.TemporaryDirectory(prefix="emu-task-")
        self.path = str(Path(self._dir.name) / name)
        Path(self.path).write_text(text)

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc):
        self._dir.cleanup()


# -- the tasks (run on a worker) ------------------------------------------------------------------
def count_task(config_name: str, config_text: str, preamble: list[str], seed: int, settings: dict) -> int:
    from controllers.verify import sweep as sw
    with _ConfigFile(config_name, config_text) as config:
        return sw.count_points(config, preamble, seed, settings)


def block_task(config_name: str, config_text: str, preamble: list[str], seed: int, settings: dict,
               fault: str, points: list[int]) -> list[dict]:
    """Crash points ``points`` (sorted) of one preamble, by fork snapshots."""
    from controllers.verify import checker, sweep as sw
    from firmware.raid import parity
    parity.warm_up()    # once per worker process: its forked points find the kernels loaded
    checker.warm_up()
    with _ConfigFile(config_name, config_text) as config:
        rack = sw._rack(config, preamble, seed, settings)
        return list(sw._fork_results(rack, fault, points, 1))


def seed_task(config_name: str, config_text: str, seed: int, steps: int) -> dict:
    from controllers.verify import campaign
    with _ConfigFile(config_name, config_text) as config:
        return campaign._seed_outcome(config, seed, steps)


# -- the client side --------------------------------------------------------------------------------
def connect(address):
    """A client of the cluster at ``address`` (tcp://HOST:PORT), or of a
    ``LocalCluster`` object (tests, bench)."""
    from dask.distributed import Client
    return Client(address)


def sweep_points(client, config: str, preamble: list[str], seed: int, settings: dict, fault: str,
                 points_spec: str, block_points: int = BLOCK_POINTS):
    """(total, points, results in point order) of a sweep run on the cluster."""
    from dask.distributed import as_completed
    from controllers.verify import sweep as sw
    name, text = Path(config).name, Path(config).read_text()
    tag = f"{sha(text)[:16]}-{sha(chr(10).join(preamble))[:16]}-{_settings_tag(settings)}-seed{seed}"
    total = client.submit(count_task, name, text, preamble, seed, settings, key=f"count-{tag}").result()
    points = sw.choose_points(points_spec, total, seed)
    blocks = [points[i:i + block_points] for i in range(0, len(points), block_points)]
    futures = [client.submit(block_task, name, text, preamble, seed, settings, fault, b,
                             key=f"block-{tag}-{fault}-k{b[0]}-{b[-1]}-n{len(b)}") for b in blocks]
    return total, points, _in_order(futures, as_completed)


def campaign_outcomes(client, config: str, seeds: list[int], steps: int):
    """Campaign outcomes in seed order, each seed a task on the cluster."""
    from dask.distributed import as_completed
    name, text = Path(config).name, Path(config).read_text()
    futures = [client.submit(seed_task, name, text, seed, steps, key=f"seed-{sha(text)[:16]}-s{seed}-steps{steps}")
               for seed in seeds]
    for block in _in_order(futures, as_completed, flat=False):
        yield block


def _in_order(futures, as_completed, flat: bool = True):
    """Each future's result in submission order, as soon as it and all
    before it are done (a reorder buffer; results leave it as they go)."""
    index = {f.key: i for i, f in enumerate(futures)}
    ready, nxt = {}, 0
    try:
        for fut in as_completed(futures):
            ready[index[fut.key]] = fut.result()
            fut.release()
            while nxt in ready:
                out = ready.pop(nxt)
                if flat:
                    yield from out
                else:
                    yield out
                nxt += 1
    finally:
        for fut in futures:
            fut.release()
