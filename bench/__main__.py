"""Run every benchmark module in this folder, print its table, save its rows.

Each ``bench/bench_*.py`` provides ``run() -> list[dict]`` (all figures
measured in that one run) and optionally ``verdicts(rows) -> list[str]``
stating honestly whether each target is met. Results go to
``bench/results/<module>.json`` with the machine they were measured on.

Usage: ``python -m bench [NAME ...]`` (names without ``bench_``; default all).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from tabulate import tabulate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def modules(wanted: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if wanted:
        names = [n for n in names if n in wanted or n.removeprefix("bench_") in wanted]
    return names


def main(argv: list[str]) -> int:
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed, flagged = [], []
    for name in modules(argv):
        print(f"== {name} ==", flush=True)
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(f"bench.{name}")
            rows = mod.run()
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}\n")
            failed.append(name)
            continue
        took_s = time.monotonic() - t0
        print(tabulate(rows, headers="keys", tablefmt="github"))
        lines = mod.verdicts(rows) if hasattr(mod, "verdicts") else []
        for line in lines:
            print(line)
        flagged += [f"{name}: {line}" for line in lines if "REGRESSION" in line]
        print(f"({name}: {took_s:.1f} s)\n", flush=True)
        record = {"module": name, "rows": rows, "verdicts": lines, "seconds": round(took_s, 2),
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "platform": platform.platform()},
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out_dir / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    if flagged:   # against bench/baseline.json, the last committed figures
        print("regressions flagged (> 20% worse than bench/baseline.json):")
        for line in flagged:
            print(f"  {line}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
