"""The NBD front-end's cost (issue 12, performance row).

fio's nbd engine writes 4 KiB blocks at random, iodepth 32, to a
sync-mirrored LDEV of a rack served by ``emu up --nbd`` (the processes
backend, each request a host I/O at the current virtual time, the closed
loop advancing virtual time event by event). The same workload generated
inside the rack (``workload start w rw=randwrite bs=4KiB iodepth=32``, on a
rack of the same config and backend, for the same virtual time) is the
baseline. Figures: requests per wall second both ways, and the front-end's
overhead, wall seconds per I/O through NBD over wall seconds per I/O inside,
minus one (target: under 25%). The two are measured alternately, ROUNDS
times each, and the medians compared, so load from elsewhere on the machine
falls on both.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from controllers.rack.storage import StorageRack

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "two-site.toml"
EMU = [sys.executable, "-m", "controllers.cli"]
IOS = 1024
ROUNDS = 3
TARGET_OVERHEAD = 0.25


def _emu(*args: str) -> str:
    done = subprocess.run(EMU + list(args), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"emu {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def _now_ns(name: str) -> int:
    out = _emu("svp", "--name", name, "-c", "show time")
    return int(out.split("(", 1)[1].split()[0])


def _fio(uri: str, seed: int) -> dict:
    done = subprocess.run(["fio", "--name=bench", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite", "--bs=4k",
                           "--iodepth=32", "--size=1M", "--io_size=64M", f"--number_ios={IOS}", "--norandommap",
                           f"--randseed={seed}", "--output-format=json"],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"fio: {done.stderr}")
    job = json.loads(done.stdout[done.stdout.index("{"):])["jobs"][0]
    return {"ios": int(job["write"]["total_ios"]), "wall_s": job["write"]["runtime"] / 1000.0}


def _nbd_round(name: str, uri: str, seed: int) -> dict:
    t0 = _now_ns(name)
    got = _fio(uri, seed)
    got["virtual_ns"] = _now_ns(name) - t0
    return got


def _inside_round(virtual_ns: int, seed: int) -> dict:
    with StorageRack(CONFIG, backend="processes", seed=seed) as rack:
        rack.paircreate("g0")
        rack.wait_mirrored()
        rack.workload_start("w", f"rw=randwrite bs=4KiB iodepth=32 ldevs=0 seed={seed}")
        t0 = time.monotonic()
        rack.run(virtual_ns)
        wall = time.monotonic() - t0
        phases = rack.host_stats()["main"]["phases"]
        return {"ios": sum(len(p["write"]) for p in phases.values()), "wall_s": wall, "virtual_ns": virtual_ns}


def run() -> list[dict]:
    if shutil.which("fio") is None:
        raise RuntimeError("needs fio (make clients)")
    name = f"bench{os.getpid()}"
    lines = _emu("up", str(CONFIG), "--name", name, "--nbd").splitlines()
    nbd, inside = [], []
    try:
        uri = next(ln.split()[2] for ln in lines if ln.startswith("nbd main:0 "))
        _emu("svp", "--name", name, "-c", "paircreate g0; run until pair.mirroring 5s")
        for k in range(ROUNDS):
            nbd.append(_nbd_round(name, uri, seed=k + 1))
            inside.append(_inside_round(nbd[-1]["virtual_ns"], seed=k + 1))
    finally:
        _emu("down", "--name", name)
    rows = []
    for label, runs in (("fio through NBD", nbd), ("workload inside the rack", inside)):
        per_io = [r["wall_s"] / r["ios"] for r in runs]
        rows.append({"workload": label, "ios per round": round(statistics.median(r["ios"] for r in runs)),
                     "virtual ms per round": round(statistics.median(r["virtual_ns"] for r in runs) / 1e6, 1),
                     "requests per wall s": round(1 / statistics.median(per_io), 1),
                     "wall us per io (median)": round(statistics.median(per_io) * 1e6, 1),
                     "rounds": len(runs)})
    rows[0]["overhead vs inside"] = round(rows[0]["wall us per io (median)"] / rows[1]["wall us per io (median)"] - 1, 3)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    over = rows[0]["overhead vs inside"]
    met = "MET" if over < TARGET_OVERHEAD else "NOT MET"
    return [f"front-end overhead {over:+.1%} per I/O against the same workload inside the rack "
            f"(target < {TARGET_OVERHEAD:.0%}): {met}; {rows[0]['requests per wall s']} requests per wall second "
            f"through NBD, {rows[1]['requests per wall s']} inside"]
