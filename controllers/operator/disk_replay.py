"""Replay a DiskSim "validate" trace through DiskModel and score it.

Trace lines (DiskSim src/disksim_iotrace.c, iotrace_validate_get_ioreq_event)::

    R|W  Hit|Miss|Doub|Trip  start_sector  sectors  measured_access_us  gap_us

Replay is closed loop with one request outstanding: request i+1 is issued
gap_us(i) after request i completes in the *simulation*.  The score is the
Ruemmler-Wilkes demerit: RMS horizontal distance between the simulated and
measured access-time CDFs, sampled at 10,000 evenly spaced quantiles with
linear interpolation (as DiskSim src/rms.c), in ms.

CLI (argv = the words after ``emu disk replay``)::

    --disk PRESET TRACE [--out FILE]
    --disk-spec FILE TRACE [--out FILE] [--verbose]

``--disk-spec`` takes any DiskSim 4.0 ``.parv`` or ``.diskspecs``;
``--verbose`` lists the keys the model did not use and the approximations.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

from controllers.devices.disk.disksim import MapReport, load
from controllers.devices.disk.model import PRESETS, DiskModel, DiskParams

QUANTILES = np.arange(1, 10_001) / 10_000.0     # 0.0001 .. 1.0, as rms.c

# DiskSim 4.0's own demerit (ms) on the validation drives that ../shared/data/disksim
# holds: valid/runvalid of the benh/disksim mirror; ST41601N is not in runvalid, its
# figure is the DiskSim manual's Fig. 4.  Keyed by the files' stem.
DISKSIM_DEMERIT_MS = {"st41601n": 0.075, "hp_c2247a": 0.090, "hp_c2490a": 0.254, "cheetah4LP": 0.318}


class TraceError(ValueError):
    """Malformed trace; the message names the file and line."""


@dataclass(frozen=True)
class TraceRequest:
    op: str            # "R" or "W"
    lba: int
    sectors: int
    measured_us: float
    gap_us: float


@dataclass(frozen=True)
class ReplayResult:
    disk: str
    trace: str
    measured_us: np.ndarray      # per request, trace order
    simulated_us: np.ndarray
    cache_hits: int
    demerit_ms: float

    def stats_ms(self) -> dict[str, dict[str, float]]:
        """{"simulated": {...}, "measured": {...}} with mean/p50/p90/p99/std/max in ms."""
        return {"simulated": summary_ms(self.simulated_us), "measured": summary_ms(self.measured_us)}


def summary_ms(values_us: np.ndarray) -> dict[str, float]:
    """mean, p50, p90, p99, std, max of microsecond samples, in ms."""
    v = np.asarray(values_us, dtype=float) / 1000.0
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "p99": float(np.percentile(v, 99)),
            "std": float(v.std()), "max": float(v.max())}


def demerit_ms(simulated_us, measured_us) -> float:
    """Ruemmler-Wilkes demerit (ms): RMS of the horizontal distance between the
    two CDFs at 10,000 evenly spaced quantiles, linear interpolation."""
    a = np.asarray(simulated_us, dtype=float)
    b = np.asarray(measured_us, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("demerit needs at least one sample on each side")
    qa = np.quantile(a, QUANTILES)
    qb = np.quantile(b, QUANTILES)
    return float(np.sqrt(np.mean((qa - qb) ** 2)) / 1000.0)


def parse_trace(path: str | Path, lba_count: int | None = None) -> list[TraceRequest]:
    """Read a validate trace; TraceError names file:line on any bad line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise TraceError(f"{path}: cannot read trace: {e.strerror or e}") from None
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        out.append(_parse_line(path, no, line, lba_count))
    if not out:
        raise TraceError(f"{path}: trace has no requests")
    return out


def _parse_line(path: Path, no: int, line: str, lba_count: int | None) -> TraceRequest:
    where = f"{path}:{no}"
    f = line.split()
    if len(f) != 6:
        raise TraceError(f"{where}: expected 6 fields 'R|W Hit|Miss|Doub|Trip start sectors "
                         f"measured_us gap_us', got {len(f)}: {line.strip()!r}")
    op, action = f[0], f[1]
    if op not in ("R", "W"):
        raise TraceError(f"{where}: first field must be R or W, got {op!r}")
    if action not in ("Hit", "Miss", "Doub", "Trip"):
        raise TraceError(f"{where}: second field must be Hit|Miss|Doub|Trip, got {action!r}")
    try:
        lba, sectors = int(f[2]), int(f[3])
        measured, gap = float(f[4]), float(f[5])
    except ValueError:
        raise TraceError(f"{where}: bad number in {line.strip()!r}") from None
    if sectors <= 0 or lba < 0 or measured < 0 or gap < 0 or not np.isfinite(measured + gap):
        raise TraceError(f"{where}: negative/zero/non-finite value in {line.strip()!r}")
    if lba_count is not None and lba + sectors > lba_count:
        raise TraceError(f"{where}: blocks {lba}+{sectors} beyond the disk's {lba_count} blocks")
    return TraceRequest(op, lba, sectors, measured, gap)


def resolve_params(disk: str | DiskParams) -> DiskParams:
    """Preset name or DiskParams -> DiskParams (ValueError on an unknown name)."""
    if isinstance(disk, DiskParams):
        return disk
    if disk not in PRESETS:
        raise ValueError(f"unknown disk preset {disk!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[disk]


def replay(disk: str | DiskParams, trace_path: str | Path) -> ReplayResult:
    """Closed-loop replay of a validate trace through a fresh DiskModel."""
    params = resolve_params(disk)
    model = DiskModel(params)
    reqs = parse_trace(trace_path, model.lba_count)
    simulated = np.empty(len(reqs))
    now_ns = 0
    hits = 0
    for i, r in enumerate(reqs):
        res = model.access(now_ns, r.op, r.lba, r.sectors)
        simulated[i] = (res.done_ns - now_ns) / 1000.0
        hits += res.cache_hit != "miss"
        now_ns = res.done_ns + int(round(r.gap_us * 1000.0))
    measured = np.array([r.measured_us for r in reqs])
    return ReplayResult(params.name, str(trace_path), measured, simulated, hits,
                        demerit_ms(simulated, measured))


def write_csv(result: ReplayResult, out_path: str | Path) -> None:
    """One line per request: index,measured_us,simulated_us."""
    with open(out_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "measured_us", "simulated_us"])
        for i, (m, s) in enumerate(zip(result.measured_us, result.simulated_us)):
            w.writerow([i, f"{m:.3f}", f"{s:.3f}"])


def format_table(result: ReplayResult) -> str:
    """Simulated vs measured statistics and the demerit, as a tabulate table."""
    st = result.stats_ms()
    rows = [[k, st["simulated"][k], st["measured"][k], st["simulated"][k] - st["measured"][k]]
            for k in ("mean", "p50", "p90", "p99", "std", "max")]
    head = (f"disk {result.disk}, trace {result.trace}: {len(result.measured_us)} requests, "
            f"{result.cache_hits} simulated cache hits\n")
    table = tabulate(rows, headers=["access time (ms)", "simulated", "measured", "sim - meas"],
                     floatfmt=".3f")
    return f"{head}{table}\ndemerit (RMS CDF distance): {result.demerit_ms:.3f} ms"


class _Parser(argparse.ArgumentParser):
    def error(self, message):              # one line, exit code 2, no usage dump
        raise TraceError(f"emu disk replay: {message}")


def main(argv: list[str] | None = None) -> int:
    """`emu disk replay --disk PRESET TRACE [--out FILE]`; returns the exit code."""
    ap = _Parser(prog="emu disk replay", description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--disk", help=f"preset: {', '.join(sorted(PRESETS))}")
    which.add_argument("--disk-spec", metavar="FILE", help="DiskSim 4.0 .parv or .diskspecs file")
    ap.add_argument("trace", help="DiskSim validate trace")
    ap.add_argument("--out", help="CSV: index,measured_us,simulated_us")
    ap.add_argument("--verbose", action="store_true",
                    help="list the spec's keys the model ignored and its approximations")
    try:
        args = ap.parse_args(sys.argv[1:] if argv is None else argv)
        report = MapReport()
        disk = load(args.disk_spec, report) if args.disk_spec else args.disk
        if args.verbose and args.disk_spec:
            for line in report.notes:
                print(f"note: {line}")
            for line in report.ignored:
                print(f"ignored: {line}")
        result = replay(disk, args.trace)
        if args.out:
            try:
                write_csv(result, args.out)
            except OSError as e:
                raise TraceError(f"{args.out}: cannot write CSV: {e.strerror or e}") from None
    except ValueError as e:                # TraceError, SpecError, unknown preset, bad params
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
