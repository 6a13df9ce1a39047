"""``emu sweep``: crash-point exploration of the recovery copy.

A crash point is the k-th trace record of a recovery-copy step (Figs. 5, 6
and 9: steps 401-413, 501-520, 751-757) after the preamble script has
started the copy. At each chosen point the sweep stops right after that
record (inline backend), injects the fault (``FAULTS``: master-site loss,
link loss, a remote disk failure, or a remote DKC kill/restart), runs past
T, and checks the remote: every consistency unit passes the
dependent-write checker, and every pair that did not reach equals its
suspension-time image. Every failure is printed with a command that
reproduces it.

Two ways to reach the points, with the same verdicts and the same per-point
trace sha256 (``tests/e2e/test_sweep.py`` compares them):

* fork snapshots (the default): one rack runs the preamble once and steps
  from point to point; at each it forks a copy-on-write child that injects,
  finishes and judges, up to ``--jobs`` children at once (``emu.forks``);
* ``--replay``: every point from scratch (rack, preamble, copy up to k) in a
  pool of ``--jobs`` processes; the reference.

Results stream: ``--jsonl F`` gets one line per point, in point order; the
sweep itself keeps counts and the failures only (``Tally``), and
``--artifacts DIR`` keeps a failed point's trace, images and reproduce
command. ``--matrix`` runs the same sweep over method x order x
format-write shortcut x consistency unit x window and prints the matrix,
each proportion as ``n/N [lo–hi]`` with its 95% Wilson interval.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import io
import itertools
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from emu.forks import ForkPool
from firmware.protocol import METHODS, ORDERS
from firmware.raid import parity
from controllers.verify import checker
from controllers.verify.rack_verify import verify_rack

RECOVERY_STEPS = frozenset([*range(401, 414), *range(501, 521), *range(751, 758)])
SETTLE_NS = 300_000_000
LIMIT_NS = 60 * 10 ** 9
#: z of a two-sided 95% interval
Z95 = 1.959963984540054


class SweepUsage(ValueError):
    pass


# -- faults: one function per kind, (rack, master site, remote site, point k) -> None ---------------
def _master_loss(rack, master: str, remote: str, k: int) -> None:
    rack.fault_site_down(master)


def _link_loss(rack, master: str, remote: str, k: int) -> None:
    rack.fault_link("down")


def _remote_disk(rack, master: str, remote: str, k: int) -> None:
    rack.fault_disk_fail(remote, 1)


def _remote_dkc_restart(rack, master: str, remote: str, k: int) -> None:
    rack.fault_kill(f"{remote}.dkc")
    rack.fault_restart(f"{remote}.dkc")


#: restore points cycled through by remote-dkc-kill-during-rollback
ROLLBACK_KILL_POINTS = 8


def _remote_dkc_kill_during_rollback(rack, master: str, remote: str, k: int) -> None:
    """The master is lost at point k; after T the remote rolls back, and its
    DKC is killed right after its j-th restored track (j = 1 + (k-1) mod 8,
    so a sweep walks the restore points), then restarted: the rollback must
    finish from NVM and end at the suspension image."""
    rack.fault_site_down(master)
    j = 1 + (k - 1) % ROLLBACK_KILL_POINTS
    if rack.rack.run_until_record({518, 519}, j, LIMIT_NS) is not None:
        rack.fault_kill(f"{remote}.dkc")
        rack.fault_restart(f"{remote}.dkc")
        return f"remote DKC killed after restored track {j}"
    return f"no restored track {j} to kill at (rollback shorter, or none)"


#: the faults a sweep injects at a crash point; a new kind is one function and one entry
FAULTS = {"master-loss": _master_loss, "link-loss": _link_loss, "remote-disk": _remote_disk,
          "remote-dkc-restart": _remote_dkc_restart,
          "remote-dkc-kill-during-rollback": _remote_dkc_kill_during_rollback}
METHODS_RUN = ("fork", "replay")


def _rack(config: str, preamble: list[str], seed: int, settings: dict, trace_out=None):
    from controllers.operator.console import SvpConsole, run_script
    from controllers.rack.storage import StorageRack
    rack = StorageRack(config, backend="inline", seed=seed, trace_out=trace_out)
    console = SvpConsole(rack, stdout=io.StringIO())
    lines = [f"set {k} {v}" for k, v in settings.items()] + preamble
    code, error = run_script(console, lines, "<preamble>")
    if error:
        rack.close()
        raise SweepUsage(error)
    return rack


def _recovery_records(sink) -> int:
    return sum(n for s, n in sink.steps_seen.items() if s in RECOVERY_STEPS)


def _count_from_here(rack) -> int:
    """Recovery-step records from this moment of a run of the copy without a crash."""
    before = _recovery_records(rack.rack.sink)
    rack.run(rack.settings()["max_time"] + SETTLE_NS)
    rack.rack.sink.flush_all()
    return _recovery_records(rack.rack.sink) - before


def count_points(config: str, preamble: list[str], seed: int, settings: dict) -> int:
    """Recovery-step records in a run of the copy without a crash."""
    with _rack(config, preamble, seed, settings) as rack:
        return _count_from_here(rack)


def run_point(config: str, preamble: list[str], seed: int, settings: dict, fault: str, k: int,
              trace_out=None, after=None, check: str | None = None) -> dict:
    """Replay: the preamble, then crash after the k-th recovery-step record;
    check the remote (then ``after(rack)``, if given, before the rack closes)."""
    with _rack(config, preamble, seed, settings, trace_out) as rack:
        sink = rack.rack.sink
        sink.flush_all()
        # k counts from the preamble's end, as count_points does (the initial
        # copy's 407/410 records before it are no crash points of the resync)
        t_crash = rack.rack.run_until_record(set(RECOVERY_STEPS), k, LIMIT_NS)
        if t_crash is None:
            return {"k": k, "skipped": "the copy ended before this point"}
        result = _finish_point(rack, k, t_crash, fault, check)
        if after is not None:
            after(rack)
        return result


def _finish_point(rack, k: int, t_crash: int, fault: str, check: str | None = None) -> dict:
    """From a rack paused at crash point k: inject, run past T, judge, fingerprint
    (``check``: also judge captured applications' images as they would)."""
    max_time_ns = rack.settings()["max_time"]
    note = _inject(rack, fault, k)
    t_end = rack.rack.run_until_record({515, 520}, 1, max_time_ns + 2 * SETTLE_NS)
    t_end = _wait_rollback(rack, t_end)
    rack.run(SETTLE_NS)
    verdict = verify_rack(rack)
    last = rack.show("recovery-plan")[_remote(rack)]["last_remote"]
    out = _judge(k, t_crash, t_end, verdict, last, rack.settings(_remote(rack))["method"])
    _judge_apps(rack, out, verdict, check)
    if note:
        out["fault"] = note
    out["trace_sha256"] = rack.rack.finish_trace()
    return out


def _wait_rollback(rack, t_end):
    """A rollback takes disk time (one restored track after another): the
    remote is judged when it is over, and the RTO includes it."""
    before = rack.now_ns
    after = rack.wait_rollbacks(LIMIT_NS)
    return after if after > before else t_end


def _remote(rack) -> str:
    return sorted({p["r_site"] for p in rack.pairs.values()})[0]


def _inject(rack, fault: str, k: int) -> str | None:
    """Inject; a fault may return a note of what it did (kept in the point's result)."""
    if fault not in FAULTS:
        raise SweepUsage(f"unknown fault {fault!r} ({', '.join(FAULTS)})")
    return FAULTS[fault](rack, sorted({p["m_site"] for p in rack.pairs.values()})[0], _remote(rack), k)


def _judge(k, t_crash, t_end, verdict, last, method: str) -> dict:
    """Two properties: the dependent-write checker (every method), and the
    exact rollback of unreached pairs to their suspension-time image (what
    save-old and stage-new promise; method none does not roll back)."""
    reached = set(last.get("reached", [])) if last else set()
    complete = bool(last) and last.get("outcome") == "complete"
    checker = []
    if not verdict["consistent"]:
        for g in verdict["groups"]:
            if not g["consistent"]:
                checker.append(f"group {g['group']}: {'; '.join(g['reasons'][:2])}")
    rollback = [f"{pair} did not reach and differs from its suspension-time image"
                for pair, facts in sorted(verdict["pairs"].items())
                if pair not in reached and not complete and facts.get("equals_suspension_image") is False]
    problems = checker + (rollback if method != "none" else [])
    missing = sum(g.get("missing_acked", 0) for g in verdict["groups"])
    newest = [g.get("missing_acked_max_complete_ns") for g in verdict["groups"] if g.get("missing_acked_max_complete_ns")]
    return {"k": k, "t_crash_ns": t_crash, "consistent": not problems, "problems": problems,
            "checker_ok": not checker, "rollback_exact": not rollback,
            "rpo_writes": missing, "rpo_age_ms": round((t_crash - min(newest)) / 1e6, 3) if newest else 0.0,
            "rto_ms": round((t_end - t_crash) / 1e6, 3) if t_end is not None else None,
            "outcome": last.get("outcome") if last else "untouched"}


def _judge_apps(rack, out: dict, verdict: dict, check: str | None) -> None:
    """LDEVs written with client bytes are judged by the application check,
    or else reported as not judged (a problem: no verdict is claimed)."""
    if check is None:
        if verdict.get("unjudged"):
            out["problems"] += [f"pair {u['pair']}: not judged ({u['reason']})" for u in verdict["unjudged"]]
            out["consistent"] = False
        return
    from controllers.verify.apps import judge_rack
    apps = judge_rack(rack, check)
    judged = {a.get("pair") for a in apps}
    missing = [u for u in verdict.get("unjudged", []) if u["pair"] not in judged]
    problems = [f"{a['app']} on {a.get('pair', a['workload'])}: {'; '.join(a['problems'][:2])}"
                for a in apps if not a["ok"]]
    problems += [f"pair {u['pair']}: not judged (no {check} capture on it)" for u in missing]
    if not apps:
        problems.append(f"--check {check}: no {check} capture was replayed on this rack")
    out["app"] = [{key: a[key] for key in ("app", "pair", "ok", "integrity", "values", "acked_txid", "fsck",
                                           "files_checked", "durable_step") if key in a}
                  for a in apps]
    out["app_ok"] = not problems
    out["problems"] += problems
    out["consistent"] = out["consistent"] and not problems


POINTS_USAGE = "--crash-points expects all, every:K, sample:N, only:I or range:A-B"


def choose_points(spec: str, total: int, seed: int) -> list[int]:
    """The crash points (1..total) a spec names, sorted; ``range:A-B`` is A..B
    inclusive, clipped to the total (a task of a distributed sweep)."""
    if spec == "all":
        return list(range(1, total + 1))
    kind, _, arg = spec.partition(":")
    if kind == "range":
        a, _, b = arg.partition("-")
        if not (a.isdigit() and b.isdigit() and 1 <= int(a) <= int(b)):
            raise SweepUsage(f"{POINTS_USAGE}, got {spec!r}")
        return list(range(int(a), min(int(b), total) + 1))
    if not arg.isdigit() or int(arg) < 1:
        raise SweepUsage(f"{POINTS_USAGE}, got {spec!r}")
    n = int(arg)
    if kind == "every":
        return list(range(1, total + 1, n))
    if kind == "sample":
        rng = np.random.Generator(np.random.PCG64(seed))
        return sorted(int(x) + 1 for x in rng.choice(total, size=min(n, total), replace=False))
    if kind == "only":
        return [n]
    raise SweepUsage(f"{POINTS_USAGE}, got {spec!r}")


def _error_result(k: int, error: str) -> dict:
    return {"k": k, "t_crash_ns": None, "consistent": False, "problems": [error], "checker_ok": False,
            "rollback_exact": False, "rpo_writes": 0, "rpo_age_ms": 0.0, "rto_ms": None, "outcome": "error"}


def _work(args):
    """One point by replay; an exception is a failed point with its text, never a dead sweep."""
    try:
        return run_point(*args)
    except Exception as exc:  # noqa: BLE001 - reported as a failure with its reproduce command
        return _error_result(args[5], f"{type(exc).__name__}: {exc}")


# -- the two ways of running the points ----------------------------------------------------------------
def _replay_points(config, preamble, seed, settings, fault, points_spec, jobs, check=None):
    """Every point from scratch: a rack, the preamble, the copy up to k (the reference)."""
    total = count_points(config, preamble, seed, settings)
    points = choose_points(points_spec, total, seed)
    tasks = [(config, preamble, seed, settings, fault, k, None, None, check) for k in points]

    def results():
        if jobs > 1:
            with mp.get_context("fork").Pool(jobs) as pool:
                yield from pool.imap(_work, tasks)
        else:
            yield from map(_work, tasks)
    return total, points, results()


#: checkpoints a fork sweep's counting pass keeps at most; when there would
#: be more, every other one goes and the spacing doubles, so they stay evenly
#: spread over a copy of any length (between half this and this many)
CHECKPOINTS_MAX = 48
#: recovery-step records between two checkpoints at first
CHECKPOINT_SPACING_FIRST = 256


def _fork_points(config, preamble, seed, settings, fault, points_spec, jobs, check=None):
    """Fork snapshots. One rack runs the preamble once, then the pass through
    the copy that counts the crash points (the sample is drawn from their
    number); on its way it forks paused checkpoints, evenly spread. Each
    checkpoint that has points after it (and before the next) then steps to
    them, forking a child (copy-on-write) at each that injects the fault,
    finishes the run and judges it; its last point it finishes itself. The
    copy is thus run once plus short stretches, not once to count and once
    more to step through. A rack at point k is in exactly the state a replay
    of point k reaches, so verdicts and trace hashes are equal."""
    # the kernels loaded once here, not once per point's child (a point's
    # verify, and the parity a rollback's release recomputes)
    parity.warm_up()
    checker.warm_up()
    rack = _rack(config, preamble, seed, settings)
    pool = ForkPool(jobs)
    try:
        if rack.rack.scheduled:   # faults due at set times: count as a replay does, in a snapshot
            total = _count_in_snapshot(rack, pool)
            rack.rack.sink.flush_all()   # as a replay does before stepping
            cps = [(0, pool.pause(_serve(rack, fault, check, 0, rack.now_ns + LIMIT_NS)))]
        else:
            total, cps = _count_with_checkpoints(rack, pool, fault, check)
        points = choose_points(points_spec, total, seed)
    except BaseException:
        pool.close()
        rack.close()
        raise
    return total, points, _checkpoint_results(rack, pool, cps, points)


def _count_in_snapshot(rack, pool: ForkPool) -> int:
    pool.submit("count", lambda: _count_from_here(rack))
    (_, answer), = pool.drain()
    if not answer["ok"]:
        raise RuntimeError(f"counting the crash points failed: {answer['error']}")
    return answer["result"]


def _serve(rack, fault: str, check: str | None, passed: int, horizon_ns: int):
    """What a checkpoint does with the points it is given: step to each, fork
    a child there, finish the last one itself (its own rack is not needed after)."""
    return lambda points: list(_step_points(rack, fault, points, 1, check, passed, horizon_ns, last_in_place=True))


def _count_with_checkpoints(rack, pool: ForkPool, fault: str, check: str | None):
    """The counting pass (the same records ``count_points`` counts: up to T
    plus ``SETTLE_NS`` from the preamble's end), forking a paused checkpoint
    every ``spacing`` records: ``(total, [(records passed, checkpoint), ...])``."""
    sink = rack.rack.sink
    before = _recovery_records(sink)   # before the flush, as count_points counts
    sink.flush_all()                   # as a replay does before stepping
    start_ns = rack.now_ns
    end_ns = start_ns + rack.settings()["max_time"] + SETTLE_NS
    horizon_ns = start_ns + LIMIT_NS   # as a replay's limit, from the preamble's end
    steps = set(RECOVERY_STEPS)
    spacing, passed = CHECKPOINT_SPACING_FIRST, 0
    gc.collect()
    gc.freeze()   # the collector leaves the rack built so far alone: fewer pages copied after each fork
    try:
        cps = [(0, pool.pause(_serve(rack, fault, check, 0, horizon_ns)))]
        while rack.rack.run_until_record(steps, spacing, end_ns - rack.now_ns) is not None:
            passed += spacing + rack.rack.backend.watch_overrun
            cps.append((passed, pool.pause(_serve(rack, fault, check, passed, horizon_ns))))
            if len(cps) > CHECKPOINTS_MAX:
                for _, paused in cps[1::2]:
                    pool.discard(paused)
                cps, spacing = cps[0::2], 2 * spacing
    finally:
        gc.unfreeze()
    sink.flush_all()
    total = _recovery_records(sink) - before
    if total < passed:
        raise RuntimeError(f"counting pass: {total} records counted but {passed} passed: invariant violated")
    return total, cps


def _checkpoint_results(rack, pool: ForkPool, cps: list, points: list[int]):
    """Each point goes to the last checkpoint before it; checkpoints run
    ``jobs`` at a time; results in point order (a reorder buffer of at most
    ``jobs`` checkpoints' points)."""
    passed = [p for p, _ in cps]
    groups: dict[int, list[int]] = {}
    for k in points:
        groups.setdefault(bisect.bisect_left(passed, k) - 1, []).append(k)
    order = sorted(groups)
    ready: dict[int, list[dict]] = {}
    nxt = 0

    def arrived(done):
        nonlocal nxt
        for i, answer in done:
            ready[i] = answer["result"] if answer["ok"] else [_error_result(k, answer["error"]) for k in groups[i]]
        while nxt < len(order) and order[nxt] in ready:
            yield from ready.pop(order[nxt])
            nxt += 1
    try:
        for i, (_, paused) in enumerate(cps):
            if i not in groups:
                pool.discard(paused)   # no point of the sample after it: it leaves now
        for i in order:
            yield from arrived(pool.resume(cps[i][1], i, groups[i]))
        yield from arrived(pool.drain())
    finally:
        pool.close()
        rack.close()


def _fork_results(rack, fault: str, points: list[int], jobs: int, check: str | None = None):
    """From a rack at the preamble's end: results in point order (a reorder
    buffer of at most ``jobs`` entries); the rack is closed at the end."""
    with rack:
        rack.rack.sink.flush_all()
        yield from _step_points(rack, fault, points, jobs, check)


def _step_points(rack, fault: str, points: list[int], jobs: int, check: str | None = None, passed: int = 0,
                 horizon_ns: int | None = None, last_in_place: bool = False):
    """Step from crash point to crash point (``passed``: recovery-step records
    since the preamble's end; ``horizon_ns``: a replay's limit, the
    preamble's end plus ``LIMIT_NS``), forking a child at each that finishes
    and judges it; with ``last_in_place`` the last point is finished here."""
    order = {k: i for i, k in enumerate(points)}
    ready: dict[int, dict] = {}
    nxt = 0

    def arrived(done):
        nonlocal nxt
        for k, answer in done:
            ready[order[k]] = answer["result"] if answer["ok"] else _error_result(k, answer["error"])
        while nxt in ready:
            yield ready.pop(nxt)
            nxt += 1
    if horizon_ns is None:
        horizon_ns = rack.now_ns + LIMIT_NS
    with ForkPool(jobs) as pool:
        t_crash = rack.now_ns
        for i, k in enumerate(points):
            if k > passed:
                t_crash = rack.rack.run_until_record(set(RECOVERY_STEPS), k - passed, horizon_ns - rack.now_ns)
                if t_crash is None:   # the copy ended first: so it did for every later point
                    yield from arrived(pool.drain())
                    for later in points[i:]:
                        yield {"k": later, "skipped": "the copy ended before this point"}
                    return
                passed = k + rack.rack.backend.watch_overrun
            if last_in_place and i == len(points) - 1:
                yield from arrived(pool.drain())
                yield _finish_here(rack, k, t_crash, fault, check)
                return
            yield from arrived(pool.submit(k, lambda k=k, t=t_crash: _finish_point(rack, k, t, fault, check)))
        yield from arrived(pool.drain())


def _finish_here(rack, k: int, t_crash: int, fault: str, check: str | None) -> dict:
    """A point finished by the process that stepped to it, its result as a
    child's would come back (through JSON); an exception is a failed point."""
    try:
        return json.loads(json.dumps(_finish_point(rack, k, t_crash, fault, check), default=str))
    except Exception as exc:  # noqa: BLE001 - reported as a failure with its reproduce command
        return _error_result(k, f"{type(exc).__name__}: {exc}")


#: failed points a sweep keeps for printing and artifacts (all are in --jsonl)
FAILURES_KEPT = 100


class Tally:
    """What a sweep keeps of its points while they stream by: counts and
    sums, and the first ``FAILURES_KEPT`` failures (whose artifacts are
    kept); never every result."""

    def __init__(self):
        self.tried = self.ok = self.checker_ok = self.rollback_ok = self.skipped = self.failed = 0
        self.app_ok = 0
        self.rpo_sum = self.rpo_max = 0
        self.rpo_age_ms_max = 0.0
        self.rto_sum_ms, self.rto_n = 0.0, 0
        self.failures: list[dict] = []

    def add(self, r: dict) -> None:
        if "skipped" in r:
            self.skipped += 1
            return
        self.tried += 1
        self.ok += bool(r["consistent"])
        self.checker_ok += bool(r.get("checker_ok"))
        self.rollback_ok += bool(r.get("rollback_exact"))
        self.app_ok += bool(r.get("app_ok"))
        self.rpo_sum += r["rpo_writes"]
        self.rpo_max = max(self.rpo_max, r["rpo_writes"])
        self.rpo_age_ms_max = max(self.rpo_age_ms_max, r["rpo_age_ms"])
        if r["rto_ms"] is not None:
            self.rto_sum_ms += r["rto_ms"]
            self.rto_n += 1
        if not r["consistent"]:
            self.failed += 1
            if len(self.failures) < FAILURES_KEPT:
                self.failures.append(r)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% for the default z);
    (0, 1) when nothing was tried."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def cell(k: int, n: int) -> str:
    """A matrix cell: ``n/N [lo–hi]`` with the 95% Wilson interval in percent."""
    lo, hi = wilson(k, n)
    return f"{k}/{n} [{100 * lo:.1f}–{100 * hi:.1f}]"


def sweep(config, preamble, seed, settings, fault, points_spec, jobs, progress=print, method="fork",
          on_result=None, client=None, block_points=None, check=None) -> dict:
    """One sweep; each point's result goes to ``on_result`` (in point order)
    as it comes. With a Dask ``client`` the points run on its cluster, in
    blocks of ``block_points`` sharing one preamble (``distributed``)."""
    if method not in METHODS_RUN:
        raise SweepUsage(f"unknown sweep method {method!r} ({', '.join(METHODS_RUN)})")
    if fault not in FAULTS:
        raise SweepUsage(f"unknown fault {fault!r} ({', '.join(FAULTS)})")
    t0 = time.monotonic()
    if check is not None and client is not None:
        raise SweepUsage("--check APP does not run on a Dask cluster yet (run the sweep here)")
    if client is not None:
        from controllers.verify import distributed
        method = "dask"
        total, points, results = distributed.sweep_points(client, config, preamble, seed, settings, fault,
                                                          points_spec, block_points or distributed.BLOCK_POINTS)
    else:
        run = _fork_points if method == "fork" else _replay_points
        total, points, results = run(config, preamble, seed, settings, fault, points_spec, jobs, check)
    tally = Tally()
    try:
        for i, res in enumerate(results, 1):
            tally.add(res)
            if on_result is not None:
                on_result(res)
            _progress(progress, i, len(points), t0)
    finally:
        results.close()   # a failed sweep still closes its rack and its children now
    n = tally.tried
    return {"config": config, "seed": seed, "settings": settings, "fault": fault, "method": method,
            "points_total": total, "points": points, "tried": n, "consistent": tally.ok,
            "checker_ok": tally.checker_ok, "rollback_ok": tally.rollback_ok, "skipped": tally.skipped,
            "check": check, "app_ok": tally.app_ok,
            "app_pct": round(100.0 * tally.app_ok / max(1, n), 2) if check else None,
            "consistent_pct": round(100.0 * tally.ok / max(1, n), 2),
            "checker_pct": round(100.0 * tally.checker_ok / max(1, n), 2),
            "rollback_pct": round(100.0 * tally.rollback_ok / max(1, n), 2),
            "rpo_writes_sum": tally.rpo_sum,
            "rpo_writes_mean": round(tally.rpo_sum / n, 1) if n else 0,
            "rpo_writes_max": tally.rpo_max, "rpo_age_ms_max": tally.rpo_age_ms_max,
            "rto_ms_sum": tally.rto_sum_ms, "rto_n": tally.rto_n,
            "rto_ms_mean": round(tally.rto_sum_ms / tally.rto_n, 3) if tally.rto_n else None,
            "wall_s": round(time.monotonic() - t0, 3), "failed": tally.failed, "failures": tally.failures}


def _progress(say, i, n, t0):
    if i == n or i % 10 == 0:
        say(f"  {i}/{n} crash points, {time.monotonic() - t0:.1f} s")


def reproduce_command(config, script, seed, settings, fault, k, check=None) -> str:
    opts = " ".join(f"--{key.replace('_', '-')} {v}" for key, v in sorted(settings.items()))
    if check:
        opts = f"{opts} --check {check}".strip()
    return f"emu sweep {config} {script} --seed {seed} --fault {fault} --crash-points only:{k} {opts}".strip()


MATRIX_AXES = {"method": METHODS, "order": ORDERS,
               "format_shortcut": ("on", "off"), "unit": ("ldev", "group"), "window": ("1", "32")}


def _row(settings: dict, runs: list[dict]) -> list:
    """One matrix row over the seeds of a combination: each proportion as
    ``n/N [lo–hi]`` with its 95% Wilson interval."""
    tried = sum(r["tried"] for r in runs)
    rto_n = sum(r["rto_n"] for r in runs)
    return [*(settings.get(k, "-") for k in MATRIX_AXES), tried,
            cell(sum(r["consistent"] for r in runs), tried),
            cell(sum(r["checker_ok"] for r in runs), tried),
            cell(sum(r["rollback_ok"] for r in runs), tried),
            round(sum(r["rpo_writes_sum"] for r in runs) / tried, 1) if tried else 0,
            max(r["rpo_writes_max"] for r in runs),
            round(sum(r["rto_ms_sum"] for r in runs) / rto_n, 3) if rto_n else None]


MATRIX_HEADERS = [*MATRIX_AXES, "points", "ok [95% CI %]", "dependent-write consistent [95% CI %]",
                  "exact rollback [95% CI %]", "RPO mean (writes)", "RPO max", "RTO mean ms"]


def keep_artifacts(config: str, script: str, preamble: list[str], seed: int, settings: dict, fault: str,
                   k: int, out_dir: str | Path, check: str | None = None) -> Path:
    """The evidence of one failed point, kept only for failures: its full
    trace, the remote images (``ldev<N>.img`` by master LDEV) with the
    master's write log (so ``emu check DIR DIR/writes.csv`` judges them
    again), its result and the command that reproduces it."""
    slug = "-".join(f"{key}={v}" for key, v in sorted(settings.items())) or "defaults"
    d = Path(out_dir) / f"seed{seed}-{fault}-{slug}-k{k}"
    d.mkdir(parents=True, exist_ok=True)

    def images(rack):
        for p in rack.pairs.values():
            if p["r_site"] not in rack.down_sites:
                rack.export(p["r_site"], p["r_ldev"], str(d / f"ldev{p['m_ldev']}.img"))
        rack.writelog().save(d / "writes.csv")
    with open(d / "trace.txt", "w") as trace:
        result = run_point(config, preamble, seed, settings, fault, k, trace_out=trace, after=images, check=check)
    (d / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    (d / "reproduce.txt").write_text(reproduce_command(config, script, seed, settings, fault, k, check) + "\n")
    return d


def _parser():
    p = argparse.ArgumentParser(prog="emu sweep", description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("script", help="preamble: console commands that start the recovery copy")
    p.add_argument("--seed", type=int, default=1, help="seed of the rack and of the point sample")
    p.add_argument("--seeds", type=int, help="sweep seeds 1..N (overrides --seed)")
    p.add_argument("--crash-points", default="every:5")
    p.add_argument("--fault", choices=list(FAULTS), default="master-loss")
    p.add_argument("--jobs", type=int, default=2, help="points judged at once (forked children or processes)")
    p.add_argument("--replay", action="store_true",
                   help="replay the preamble for every point (the reference method) instead of fork snapshots")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the points on this Dask cluster (blocks of points sharing one preamble)")
    p.add_argument("--block", type=int, help="crash points per Dask task (default 10)")
    p.add_argument("--json", help="write the sweep summaries (counts, failures) to this file")
    p.add_argument("--jsonl", help="stream every point's result to this file, one JSON line each, in point order")
    p.add_argument("--artifacts", help="for each failed point keep its trace, images and reproduce command here")
    p.add_argument("--matrix", action="store_true", help="sweep every combination of the settings below")
    p.add_argument("--check", choices=["sqlite", "ext4"],
                   help="also judge each replayed capture's remote image as its application would "
                        "(LDEVs of client bytes are judged only so)")
    for key, values in MATRIX_AXES.items():
        p.add_argument(f"--{key.replace('_', '-')}", choices=values)
    return p


def point_line(seed: int, settings: dict, fault: str, result: dict) -> str:
    """One JSON Lines record: the point's coordinates, then its result."""
    return json.dumps({"seed": seed, "settings": settings, "fault": fault, **result}, sort_keys=True,
                      separators=(",", ":")) + "\n"


def _report_failures(args, preamble: list[str], seed: int, settings: dict, s: dict) -> None:
    """Each kept failure with its reproduce command (and its artifacts if asked)."""
    for f in s["failures"]:
        print(f"FAIL seed={seed} crash point {f['k']} (t={f['t_crash_ns']} ns): {'; '.join(f['problems'][:2])}")
        print(f"  reproduce: "
              f"{reproduce_command(args.config, args.script, seed, settings, args.fault, f['k'], args.check)}")
        if args.artifacts:
            where = keep_artifacts(args.config, args.script, preamble, seed, settings, args.fault, f["k"],
                                   args.artifacts, args.check)
            print(f"  artifacts: {where}")
    if s["failed"] > len(s["failures"]):
        where = f"all in {args.jsonl}" if args.jsonl else "--jsonl F lists every point"
        print(f"... and {s['failed'] - len(s['failures'])} more failed points ({where})")


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.jobs < 1:
        print("emu sweep: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        preamble = Path(args.script).read_text().splitlines()
    except OSError as exc:
        print(f"emu sweep: {args.script}: {exc.strerror}", file=sys.stderr)
        return 2
    fixed = {k: getattr(args, k) for k in MATRIX_AXES if getattr(args, k) is not None}
    combos = [fixed]
    if args.matrix:
        keys = [k for k in MATRIX_AXES if k not in fixed]
        combos = [{**fixed, **dict(zip(keys, vals))} for vals in itertools.product(*(MATRIX_AXES[k] for k in keys))]
    method = "replay" if args.replay else "fork"
    if args.scheduler and args.replay:
        print("emu sweep: --scheduler runs fork snapshots on the workers; it does not combine with --replay",
              file=sys.stderr)
        return 2
    client = None
    if args.scheduler:
        from controllers.verify import distributed
        client = distributed.connect(args.scheduler)
        method = "dask"
    jsonl = open(args.jsonl, "w") if args.jsonl else None
    try:
        rows, summaries = [], []
        seeds = list(range(1, args.seeds + 1)) if args.seeds else [args.seed]
        for settings in combos:
            per_seed = []
            for seed in seeds:
                print(f"sweep seed {seed} {args.fault} {settings or '(SVP defaults)'} crash points "
                      f"{args.crash_points} ({method})", flush=True)
                emit = (lambda r, seed=seed, settings=settings: jsonl.write(point_line(seed, settings, args.fault, r))) \
                    if jsonl else None
                s = sweep(args.config, preamble, seed, settings, args.fault, args.crash_points, args.jobs,
                          method="replay" if args.replay else "fork", on_result=emit, client=client,
                          block_points=args.block, check=args.check)
                summaries.append(s)
                per_seed.append(s)
                _report_failures(args, preamble, seed, settings, s)
            rows.append(_row(settings, per_seed))
    except SweepUsage as exc:
        print(f"emu sweep: {exc}", file=sys.stderr)
        return 2
    finally:
        if jsonl:
            jsonl.close()
        if client is not None:
            client.close()
    print(tabulate(rows, headers=MATRIX_HEADERS))
    if args.check:
        for s in summaries:
            print(f"application verdict ({args.check}) {s['settings'] or '(SVP defaults)'} seed {s['seed']}: "
                  f"{s['app_ok']}/{s['tried']} points consistent")
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=1, default=str))
    return 0 if all(not s["failed"] for s in summaries) else 1
