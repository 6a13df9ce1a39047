"""``emu sweep``: crash-point exploration of the recovery copy.

A crash point is the k-th trace record of a recovery-copy step (Figs. 5, 6
and 9: steps 401-413, 501-520, 751-757) after the preamble script has
started the copy. For each chosen point the sweep replays the preamble in
the inline backend, stops right after that record, injects the fault
(master-site loss, link loss, a remote disk failure, or a remote DKC
kill/restart), runs past T, and checks the remote: every consistency unit
passes the dependent-write checker, and every pair that did not reach
equals its suspension-time image. Points run in parallel over ``--jobs``
processes; every failure is printed with a command that reproduces it.

``--matrix`` runs the same sweep over method x order x format-write
shortcut x consistency unit x window and prints the results matrix.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from firmware.protocol import METHODS, ORDERS
from controllers.verify.rack_verify import verify_rack

RECOVERY_STEPS = frozenset([*range(401, 414), *range(501, 521), *range(751, 758)])
FAULTS = ("master-loss", "link-loss", "remote-disk", "remote-dkc-restart")
SETTLE_NS = 300_000_000
LIMIT_NS = 60 * 10 ** 9


class SweepUsage(ValueError):
    pass


def _rack(config: str, preamble: list[str], seed: int, settings: dict):
    from controllers.operator.console import SvpConsole, run_script
    from controllers.rack.storage import StorageRack
    rack = StorageRack(config, backend="inline", seed=seed)
    console = SvpConsole(rack, stdout=io.StringIO())
    lines = [f"set {k} {v}" for k, v in settings.items()] + preamble
    code, error = run_script(console, lines, "<preamble>")
    if error:
        rack.close()
        raise SweepUsage(error)
    return rack


def count_points(config: str, preamble: list[str], seed: int, settings: dict) -> int:
    """Recovery-step records in a run of the copy without a crash."""
    with _rack(config, preamble, seed, settings) as rack:
        before = sum(n for s, n in rack.rack.sink.steps_seen.items() if s in RECOVERY_STEPS)
        t = rack.settings()["max_time"]
        rack.run(t + SETTLE_NS)
        rack.rack.sink.flush_all()
        return sum(n for s, n in rack.rack.sink.steps_seen.items() if s in RECOVERY_STEPS) - before


def run_point(config: str, preamble: list[str], seed: int, settings: dict, fault: str, k: int) -> dict:
    """Crash after the k-th recovery-step record; check the remote."""
    with _rack(config, preamble, seed, settings) as rack:
        sink = rack.rack.sink
        sink.flush_all()
        already = sum(n for s, n in sink.steps_seen.items() if s in RECOVERY_STEPS)
        t_crash = rack.rack.run_until_record(set(RECOVERY_STEPS), k - already if k > already else 1, LIMIT_NS) \
            if k > already else rack.now_ns
        if t_crash is None:
            return {"k": k, "skipped": "the copy ended before this point"}
        max_time_ns = rack.settings()["max_time"]
        _inject(rack, fault)
        t_end = rack.rack.run_until_record({515, 520}, 1, max_time_ns + 2 * SETTLE_NS)
        t_end = _wait_rollback(rack, t_end)
        rack.run(SETTLE_NS)
        verdict = verify_rack(rack)
        last = rack.show("recovery-plan")[_remote(rack)]["last_remote"]
        return _judge(k, t_crash, t_end, verdict, last, rack.settings(_remote(rack))["method"])


def _wait_rollback(rack, t_end):
    """A rollback takes disk time (one restored track after another): the
    remote is judged when it is over, and the RTO includes it."""
    if t_end is None:
        return t_end
    before = rack.now_ns
    after = rack.wait_rollbacks(LIMIT_NS)
    return after if after > before else t_end


def _remote(rack) -> str:
    return sorted({p["r_site"] for p in rack.pairs.values()})[0]


def _inject(rack, fault: str) -> None:
    master = sorted({p["m_site"] for p in rack.pairs.values()})[0]
    remote = _remote(rack)
    if fault == "master-loss":
        rack.fault_site_down(master)
    elif fault == "link-loss":
        rack.fault_link("down")
    elif fault == "remote-disk":
        rack.fault_disk_fail(remote, 1)
    elif fault == "remote-dkc-restart":
        rack.fault_kill(f"{remote}.dkc")
        rack.fault_restart(f"{remote}.dkc")
    else:
        raise SweepUsage(f"unknown fault {fault!r} ({', '.join(FAULTS)})")


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


def choose_points(spec: str, total: int, seed: int) -> list[int]:
    if spec == "all":
        return list(range(1, total + 1))
    kind, _, arg = spec.partition(":")
    if not arg.isdigit() or int(arg) < 1:
        raise SweepUsage(f"--crash-points expects all, every:K, sample:N or only:I, got {spec!r}")
    n = int(arg)
    if kind == "every":
        return list(range(1, total + 1, n))
    if kind == "sample":
        rng = np.random.Generator(np.random.PCG64(seed))
        return sorted(int(x) + 1 for x in rng.choice(total, size=min(n, total), replace=False))
    if kind == "only":
        return [n]
    raise SweepUsage(f"--crash-points expects all, every:K, sample:N or only:I, got {spec!r}")


def _work(args):
    """One point; an exception is a failed point with its text, never a dead sweep."""
    try:
        return run_point(*args)
    except Exception as exc:  # noqa: BLE001 - reported as a failure with its reproduce command
        return {"k": args[-1], "t_crash_ns": None, "consistent": False,
                "problems": [f"{type(exc).__name__}: {exc}"], "rpo_writes": 0, "rpo_age_ms": 0.0,
                "rto_ms": None, "outcome": "error"}


def sweep(config, preamble, seed, settings, fault, points_spec, jobs, progress=print) -> dict:
    total = count_points(config, preamble, seed, settings)
    points = choose_points(points_spec, total, seed)
    tasks = [(config, preamble, seed, settings, fault, k) for k in points]
    results = []
    t0 = time.monotonic()
    if jobs > 1:
        with mp.get_context("fork").Pool(jobs) as pool:
            for i, res in enumerate(pool.imap(_work, tasks), 1):
                results.append(res)
                _progress(progress, i, len(tasks), t0)
    else:
        for i, task in enumerate(tasks, 1):
            results.append(_work(task))
            _progress(progress, i, len(tasks), t0)
    tried = [r for r in results if "skipped" not in r]
    ok = [r for r in tried if r["consistent"]]
    rto = [r["rto_ms"] for r in tried if r["rto_ms"] is not None]
    return {"config": config, "seed": seed, "settings": settings, "fault": fault, "points_total": total,
            "points": points, "tried": len(tried), "consistent": len(ok),
            "consistent_pct": round(100.0 * len(ok) / max(1, len(tried)), 2),
            "checker_pct": round(100.0 * sum(r.get("checker_ok", False) for r in tried) / max(1, len(tried)), 2),
            "rollback_pct": round(100.0 * sum(r.get("rollback_exact", False) for r in tried) / max(1, len(tried)), 2),
            "rpo_writes_mean": round(float(np.mean([r["rpo_writes"] for r in tried])), 1) if tried else 0,
            "rpo_writes_max": max((r["rpo_writes"] for r in tried), default=0),
            "rpo_age_ms_max": max((r["rpo_age_ms"] for r in tried), default=0),
            "rto_ms_mean": round(float(np.mean(rto)), 3) if rto else None,
            "failures": [r for r in tried if not r["consistent"]], "results": results}


def _progress(say, i, n, t0):
    if i == n or i % 10 == 0:
        say(f"  {i}/{n} crash points, {time.monotonic() - t0:.1f} s")


def reproduce_command(config, script, seed, settings, fault, k) -> str:
    opts = " ".join(f"--{key.replace('_', '-')} {v}" for key, v in sorted(settings.items()))
    return f"emu sweep {config} {script} --seed {seed} --fault {fault} --crash-points only:{k} {opts}".strip()


MATRIX_AXES = {"method": METHODS, "order": ORDERS,
               "format_shortcut": ("on", "off"), "unit": ("ldev", "group"), "window": ("1", "32")}


def _row(settings: dict, runs: list[dict]) -> list:
    """One matrix row over the seeds of a combination."""
    tried = sum(r["tried"] for r in runs)
    ok = sum(r["consistent"] for r in runs)
    rto = [r["rto_ms_mean"] for r in runs if r["rto_ms_mean"] is not None]

    def pct(key):
        return round(sum(r[key] * r["tried"] for r in runs) / max(1, tried), 2)
    return [*(settings.get(k, "-") for k in MATRIX_AXES), tried, round(100.0 * ok / max(1, tried), 2),
            pct("checker_pct"), pct("rollback_pct"),
            round(float(np.mean([r["rpo_writes_mean"] for r in runs])), 1), max(r["rpo_writes_max"] for r in runs),
            round(float(np.mean(rto)), 3) if rto else None]


def _parser():
    p = argparse.ArgumentParser(prog="emu sweep", description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("script", help="preamble: console commands that start the recovery copy")
    p.add_argument("--seed", type=int, default=1, help="seed of the rack and of the point sample")
    p.add_argument("--seeds", type=int, help="sweep seeds 1..N (overrides --seed)")
    p.add_argument("--crash-points", default="every:5")
    p.add_argument("--fault", choices=FAULTS, default="master-loss")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--matrix", action="store_true", help="sweep every combination of the settings below")
    for key, values in MATRIX_AXES.items():
        p.add_argument(f"--{key.replace('_', '-')}", choices=values)
    return p


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
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
    try:
        rows, summaries = [], []
        seeds = list(range(1, args.seeds + 1)) if args.seeds else [args.seed]
        for settings in combos:
            per_seed = []
            for seed in seeds:
                print(f"sweep seed {seed} {args.fault} {settings or '(SVP defaults)'} crash points {args.crash_points}")
                s = sweep(args.config, preamble, seed, settings, args.fault, args.crash_points, args.jobs)
                summaries.append(s)
                per_seed.append(s)
                for f in s["failures"]:
                    print(f"FAIL seed={seed} crash point {f['k']} (t={f['t_crash_ns']} ns): {'; '.join(f['problems'][:2])}")
                    print(f"  reproduce: {reproduce_command(args.config, args.script, seed, settings, args.fault, f['k'])}")
            rows.append(_row(settings, per_seed))
    except SweepUsage as exc:
        print(f"emu sweep: {exc}", file=sys.stderr)
        return 2
    print(tabulate(rows, headers=[*MATRIX_AXES, "points", "% ok", "% dependent-write consistent",
                                  "% exact rollback", "RPO mean (writes)", "RPO max", "RTO mean ms"]))
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=1, default=str))
    return 0 if all(not s["failures"] for s in summaries) else 1
