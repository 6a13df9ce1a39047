"""DiskSim validation drives replayed through DiskModel, each from its own files.

One row per drive of ``../shared/data/disksim`` (ST41601N, HP C2247A, HP C2490A,
Seagate Cheetah 4LP): the drive's ``.parv`` is loaded by the DiskSim parser
(nothing tuned per drive), its validation trace replayed closed loop, and the
Ruemmler-Wilkes demerit (RMS distance between the simulated and measured
access-time CDFs) printed beside DiskSim 4.0's own figure.
Target (issue 14): demerit <= 2x DiskSim's for every drive.

Run: ``.venv/bin/python -m bench disks``
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from controllers.devices.disk.disksim import load  # noqa: E402
from controllers.operator.disk_replay import DISKSIM_DEMERIT_MS, replay  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "disksim"
TARGET_RATIO = 2.0


def run() -> list[dict]:
    if not DATA.is_dir():
        raise FileNotFoundError(f"DiskSim validation data not found at {DATA}")
    rows = []
    for drive, ref_ms in DISKSIM_DEMERIT_MS.items():
        t0 = time.monotonic()
        result = replay(load(DATA / f"{drive}.parv"), DATA / f"{drive}.trace")
        wall_s = time.monotonic() - t0
        rows.append({"drive": drive, "requests": len(result.measured_us),
                     "demerit_ms": round(result.demerit_ms, 3), "disksim_ms": ref_ms,
                     "ratio": round(result.demerit_ms / ref_ms, 2), "wall_s": round(wall_s, 2)})
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """Honest statement of the target for each drive."""
    return [f"{r['drive']}: demerit {r['demerit_ms']:.3f} ms = {r['ratio']:.2f}x DiskSim's "
            f"{r['disksim_ms']:.3f} ms (target <= {TARGET_RATIO:.0f}x): "
            f"{'MET' if r['demerit_ms'] <= TARGET_RATIO * r['disksim_ms'] else 'NOT MET'}"
            for r in rows]


if __name__ == "__main__":
    from tabulate import tabulate
    rows = run()
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print("\n".join(verdicts(rows)))
