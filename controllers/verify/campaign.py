"""``emu campaign``: seeded fault campaigns (TigerBeetle VOPR style).

Each seed draws a workload, a copy mode and a schedule of faults (link
flaps, slow links, remote disk failures, remote DKC kill/restart, resyncs, a master loss
with takeover) and checks invariants after every step:

* no acknowledged write is missing at the remote while every pair of a sync
  group is in PAIR;
* no read returns wrong bytes (the hosts check every read's stamps);
* no actor died by itself (a bad message must never kill one);
* at the end, after the faults stop and the copy settles, every remote
  image passes the dependent-write checker.

A failing seed prints ``reproduce with: emu campaign CONFIG --seed N``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from firmware.protocol import SAVE_OLD, STAGE_NEW

from controllers.verify.checker import holds_all_acknowledged
from controllers.rack.storage import CommandError, StorageRack
from controllers.verify.rack_verify import verify_rack

MS = 1_000_000


class Violation(AssertionError):
    pass


def _draw_workload(rng) -> str:
    rw = rng.choice(["randwrite", "randrw", "write"])
    bs = rng.choice(["4KiB", "8KiB", "16KiB"])
    return f"rw={rw} rwmixread=30 bs={bs} iodepth={int(rng.integers(1, 6))} ldevs=0-3 seed={int(rng.integers(1 << 30))}"


def check_invariants(rack: StorageRack, where: str) -> None:
    for site, st in rack.host_stats().items():
        if st["bad_reads"]:
            raise Violation(f"{where}: {site} host read wrong bytes ({st['bad_reads']} reads)")
    died = [f for f in rack.rack.faults if f["fault"] == "died"]
    if died:
        raise Violation(f"{where}: actor(s) died by themselves: {[f['actor'] for f in died]}")
    log = None
    for gname, g in sorted(rack.groups.items()):
        if g["remote"] in rack.down_sites or g["master"] in rack.down_sites:
            continue
        rows = [r for r in rack.pairdisplay(gname)]
        if rows and all(r["state"] == "PAIR" and r.get("mode") == "sync" for r in rows):
            log = log or rack.writelog()
            members = [rack.pairs[n] for n in g["pairs"]]
            images = {p["m_ldev"]: rack.export_bytes(p["r_site"], p["r_ldev"]) for p in members}
            v = holds_all_acknowledged(images, log.filter(sites=[g["master"]]))
            if not v.consistent:
                raise Violation(f"{where}: group {gname} is PAIR (sync) but the remote misses "
                                f"acknowledged writes: {v.reasons[:2]}")


def run_seed(config: str, seed: int, steps: int = 12, say=lambda m: None) -> dict:
    rng = np.random.Generator(np.random.PCG64(seed))
    mode = str(rng.choice(["sync", "sync", "async"]))
    log: list[str] = []
    with StorageRack(config, backend="inline", seed=seed) as r:
        r.set("max_time", "300ms")
        r.set("method", str(rng.choice([SAVE_OLD, STAGE_NEW])))
        r.set("window", str(rng.choice([1, 8, 32])))
        group = sorted(r.groups)[0]
        r.paircreate(group, mode=mode)
        r.wait_mirrored(group)
        r.workload_start("w", _draw_workload(rng))
        link = sorted(r.links)[0]
        remote = r.groups[group]["remote"]
        master = r.groups[group]["master"]
        for i in range(steps):
            action = str(rng.choice(["run", "flap", "flap", "disk", "dkc", "resync", "read", "slow"]))
            try:
                _act(r, rng, action, link, remote, group)
                log.append(action)
            except CommandError as exc:
                log.append(f"{action}(refused: {exc})")
            r.run(int(rng.integers(5, 60)) * MS)
            check_invariants(r, f"seed {seed} step {i} after {action}")
        if rng.random() < 0.5:   # lose the master mid-whatever, then take over
            r.fault_site_down(master)
            r.run(500 * MS)
            r.wait_rollbacks()
            log.append("master-loss")
        else:
            _settle(r, link, group)
            log.append("settle")
        verdict = verify_rack(r)
        lost = [g["group"] for g in verdict["groups"] if g.get("data_loss")]
        if lost:   # "consistent or says so": a reported double fault is an honest outcome
            log.append(f"data-loss-reported({','.join(lost)})")
        if not all(g["consistent"] for g in verdict["groups"]):   # what could be read must be right
            raise Violation(f"seed {seed}: remote inconsistent after recovery (mode {mode}; {' '.join(log)}): "
                            f"{[g['reasons'][:2] for g in verdict['groups'] if not g['consistent']]}")
        check_invariants(r, f"seed {seed} end")
        return {"seed": seed, "mode": mode, "actions": log, "writes": verdict["writes"],
                "trace_sha256": r.rack.finish_trace()}


def _act(r, rng, action, link, remote, group) -> None:
    if action == "flap":
        if r.rack.query(link, {})["up"]:
            r.fault_link("down")
        else:
            r.fault_link("up")
    elif action == "disk":
        failed = r.rack.query(f"{remote}.dkc", {"q": "stats"})["raid"][0]["failed"]
        if not failed:
            r.fault_disk_fail(remote, int(rng.integers(0, 4)))
    elif action == "dkc":
        r.fault_kill(f"{remote}.dkc")
        r.run(int(rng.integers(1, 5)) * MS)
        r.fault_restart(f"{remote}.dkc")
    elif action == "resync":
        if r.rack.query(link, {})["up"] and any(row["state"] in ("PSUE", "PSUS") for row in r.pairdisplay(group)):
            r.pairresync(group)
    elif action == "slow":
        r.fault_link_slow(int(rng.choice([1, 1, 4, 20])))
    elif action == "read":
        r.workload_start(f"rd{r.now_ns}", "rw=randread bs=4KiB iodepth=2 ldevs=0-3 runtime=20ms")


def _settle(r, link, group) -> None:
    """Stop the faults: link up, resync what is suspended, let it finish."""
    if not r.rack.query(link, {})["up"]:
        r.fault_link("up")
    r.run(50 * MS)
    for _ in range(3):
        if any(row["state"] in ("PSUE", "PSUS") for row in r.pairdisplay(group)):
            try:
                r.pairresync(group)
            except CommandError:
                pass
        r.run(400 * MS)
    # a remote is judged between copies: a rollback takes disk time, and a
    # copy that waited for it may still be running
    for _ in range(10):
        remote = r.groups[group]["remote"]
        running = r.show("save-area")[remote]["in_progress"] or any(
            row["state"] == "COPY" for row in r.pairdisplay(group))
        if not running:
            break
        r.run(400 * MS)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="emu campaign", description="seeded fault campaign")
    p.add_argument("config")
    p.add_argument("--seed", type=int, help="one seed (reproduce a failure)")
    p.add_argument("--seeds", type=int, default=10, help="run seeds 1..N")
    p.add_argument("--steps", type=int, default=12)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    seeds = [args.seed] if args.seed is not None else list(range(1, args.seeds + 1))
    failed = 0
    for seed in seeds:
        try:
            res = run_seed(args.config, seed, args.steps)
            print(f"seed {seed}: ok ({res['mode']}, {res['writes']} writes; {' '.join(res['actions'])})")
        except Violation as exc:
            failed += 1
            print(f"seed {seed}: FAILED: {exc}")
            print(f"  reproduce with: emu campaign {args.config} --seed {seed} --steps {args.steps}")
    print(f"{len(seeds) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
