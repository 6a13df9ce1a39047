"""Parity kernel throughput against numpy and memcpy, measured in one run.

Rows (5 data units per stripe, many stripes per call):
* full-stripe XOR  P = D0 ^ ... ^ D4  (numba ``xor_parity``) vs numpy
  ``bitwise_xor.reduce`` vs ``np.copyto`` of the same data bytes;
* fused RMW  P ^= Dold ^ Dnew  (numba ``rmw_parity``, one pass) vs numpy two
  passes (``np.bitwise_xor`` twice, in place) vs ``np.copyto`` of one track.

GB/s counts payload bytes: the data units read for a full stripe, the
parity bytes updated for RMW (the same byte count memcpy copies). Each figure
is the best of several repetitions over a working set larger than L2.
Targets: fused RMW >= 2x numpy two-pass; full-stripe XOR >= 80 % of memcpy
at 64 KiB units.

Run: ``.venv/bin/python bench/bench_parity.py``
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from firmware.raid import parity as P  # noqa: E402

N_DATA = 5
WORKING_SET_BYTES = 48 << 20   # bytes touched per call: well above L2 (memory-bound)
L2_RESIDENT_BYTES = 1 << 20    # a second RMW point that stays in the 2 MiB/core L2
TARGET_RMW_SPEEDUP = 2.0
TARGET_XOR_VS_MEMCPY = 0.80


def _best_seconds(fn, repeats: int = 7, min_seconds: float = 0.15) -> float:
    """Best wall time of ``fn()`` over repeats (after one warm-up call)."""
    fn()
    best = float("inf")
    t_end = time.perf_counter() + min_seconds
    n = 0
    while n < repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
        if n > 50:
            break
    return best


def _gbps(n_bytes: int, seconds: float) -> float:
    return n_bytes / seconds / 1e9


def bench_full_stripe(unit_bytes: int, rng: np.random.Generator) -> dict:
    """XOR of N_DATA units per stripe vs numpy reduce vs memcpy of the units."""
    stripes = max(1, WORKING_SET_BYTES // (N_DATA * unit_bytes))
    data = rng.integers(0, 256, (stripes, N_DATA, unit_bytes), dtype=np.uint8)
    par = np.empty((stripes, unit_bytes), np.uint8)
    dst = np.empty_like(data)
    t_kernel = _best_seconds(lambda: P.xor_parity(data, par))
    t_numpy = _best_seconds(lambda: P.xor_parity_numpy(data, par))
    t_copy = _best_seconds(lambda: np.copyto(dst, data))
    return _row(f"full-stripe XOR {N_DATA}D", unit_bytes, stripes, data.nbytes + par.nbytes,
                data.nbytes, t_kernel, t_numpy, t_copy, None)


def bench_rmw(unit_bytes: int, working_set_bytes: int, rng: np.random.Generator) -> dict:
    """Fused P ^= Dold ^ Dnew vs numpy two passes vs memcpy of one track each.

    numpy two-pass, in place: ``p ^= old; p ^= new`` (the fastest numpy
    form: 4 reads + 2 writes per byte vs the kernel's 3 + 1); also shown,
    numpy with a temporary: ``p ^= np.bitwise_xor(old, new)``.
    """
    stripes = max(1, working_set_bytes // (3 * unit_bytes))
    par, old, new = (rng.integers(0, 256, (stripes, unit_bytes), dtype=np.uint8) for _ in range(3))
    dst = np.empty_like(par)
    t_kernel = _best_seconds(lambda: P.rmw_parity(par, old, new))
    t_numpy = _best_seconds(lambda: P.rmw_parity_numpy(par, old, new))
    t_tmp = _best_seconds(lambda: np.bitwise_xor(par, np.bitwise_xor(old, new), out=par))
    t_copy = _best_seconds(lambda: np.copyto(dst, new))
    return _row("RMW P^=Dold^Dnew", unit_bytes, stripes, 3 * par.nbytes, par.nbytes,
                t_kernel, t_numpy, t_copy, t_tmp)


def _row(name, unit_bytes, stripes, working_set, n_bytes, t_kernel, t_numpy, t_copy, t_tmp) -> dict:
    k, n, c = _gbps(n_bytes, t_kernel), _gbps(n_bytes, t_numpy), _gbps(n_bytes, t_copy)
    return {"op": name, "unit_KiB": unit_bytes // 1024, "stripes/call": stripes,
            "working_set_MiB": round(working_set / 2**20, 1),
            "numba_GB/s": round(k, 2), "numpy_GB/s": round(n, 2), "memcpy_GB/s": round(c, 2),
            "numba/numpy": round(k / n, 2), "numba/memcpy": round(k / c, 2),
            "numba/numpy_tmp": "-" if t_tmp is None else round(k / _gbps(n_bytes, t_tmp), 2)}


def run() -> list[dict]:
    """All rows, measured in this process, in one run."""
    P.warm_up()
    rng = np.random.default_rng(0)
    return [bench_full_stripe(4096, rng), bench_full_stripe(65536, rng),
            bench_rmw(4096, WORKING_SET_BYTES, rng), bench_rmw(65536, WORKING_SET_BYTES, rng),
            bench_rmw(4096, L2_RESIDENT_BYTES, rng), bench_rmw(65536, L2_RESIDENT_BYTES, rng)]


def bench_single_track_us(unit_bytes: int, rng: np.random.Generator) -> dict:
    """Per-call latency of ONE small-write parity update (the firmware's hot
    path ``parity.rmw_write``: P ^= D ^ N; D = N) vs numpy two-pass + copy."""
    words = unit_bytes // 8
    par, dat, new = (rng.integers(0, 2**63, words, dtype=np.uint64) for _ in range(3))
    calls = 20000

    def per_call(fn) -> float:
        return _best_seconds(lambda: [fn() for _ in range(calls)], repeats=3, min_seconds=0) / calls * 1e6

    def numpy_write():
        np.bitwise_xor(par, dat, out=par)
        np.bitwise_xor(par, new, out=par)
        np.copyto(dat, new)

    return {"op": "one small write (P^=D^N; D=N)", "unit_KiB": unit_bytes // 1024,
            "numba_us/call": round(per_call(lambda: P.rmw_write(dat, par, new)), 2),
            "numpy_us/call": round(per_call(numpy_write), 2)}


def verdicts(rows: list[dict]) -> list[str]:
    """Honest statement of each target."""
    out = []
    for r in rows:
        if r["op"].startswith("RMW"):
            ok = r["numba/numpy"] >= TARGET_RMW_SPEEDUP
            out.append(f"fused RMW {r['unit_KiB']} KiB, {r['working_set_MiB']} MiB set: "
                       f"{r['numba/numpy']:.2f}x numpy two-pass in place "
                       f"({r['numba/numpy_tmp']}x numpy with a temporary) "
                       f"(target >= {TARGET_RMW_SPEEDUP:.1f}x): {'MET' if ok else 'NOT MET'}")
        elif r["unit_KiB"] == 64:
            ok = r["numba/memcpy"] >= TARGET_XOR_VS_MEMCPY
            out.append(f"full-stripe XOR 64 KiB: {100 * r['numba/memcpy']:.0f}% of memcpy "
                       f"(target >= {100 * TARGET_XOR_VS_MEMCPY:.0f}%): {'MET' if ok else 'NOT MET'}")
    return out


def main() -> None:
    from tabulate import tabulate
    rows = run()
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print()
    rng = np.random.default_rng(1)
    latency = [bench_single_track_us(u, rng) for u in (4096, 65536)]
    print("per-call latency, one track per call (information, not a target):")
    print(tabulate(latency, headers="keys", tablefmt="github"))
    print()
    for line in verdicts(rows):
        print(line)
    print()
    print("Notes: GB/s = payload bytes (data units read for XOR; parity bytes updated for RMW).\n"
          "Full-stripe XOR writes 1 unit per 5 read while memcpy writes all 5, hence > 100 %.\n"
          "Fused RMW moves 3 reads + 1 write per byte, numpy in place 4 + 2: when memory-bound\n"
          "the ceiling is about 1.5x, so the 2x target is not reachable against in-place numpy\n"
          "on this machine; the kernel already moves about as many bytes per second as memcpy.")


if __name__ == "__main__":
    main()
