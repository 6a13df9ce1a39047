"""``emu campaign``: seeded fault campaigns (TigerBeetle VOPR style).

Each seed draws a workload, a copy mode and a schedule of faults (link
flaps, slow links, remote disk failures, remote DKC kill/restart, resyncs, a master loss
with takeover) and checks invariants after every step:

* no acknowledged write is missing at the remote while every pair of a sync
  group is in PAIR;
* no read returns wrong bytes (the hosts check every read's stamps);
* no actor died by itself (a bad message must never kill one);
* at the end, after the faults stop and the copy settles, every remote
  image passes the dependent-write checker;
* then every track of every LDEV of every live site is read back: it holds
  only stamps of writes the log says covered it (or zeros), or its read
  fails with a data-loss error for a track the DKC reports lost. Wrong
  bytes fail the seed; a reported loss is an honest outcome.

Faults drawn (issue 10 item 12): parity-only save areas (no cache, no
spares) with remote disks failing during copies, remote DKC kills, link
flaps, a pairresync issued while a copy runs, and a master loss with the
remote DKC killed during the rollback.

A failing seed prints ``reproduce with: emu campaign CONFIG --seed N``.
Seeds run ``--jobs`` at a time in forked children; the end line gives the
rate in seeds per minute.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from emu.forks import ForkPool
from firmware.protocol import SAVE_OLD, STAGE_NEW
from firmware.raid import parity

from controllers.formats.stamp import read_stamps
from controllers.verify import checker
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
            images = {p["m_ldev"]: rack.export_image(p["r_site"], p["r_ldev"]) for p in members}
            v = holds_all_acknowledged(images, log, sites=[g["master"]])
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
        parity_only = bool(rng.random() < 0.3)
        if parity_only:   # the save area of item 1's double fault: parity tracks only
            for key, value in (("cache_save_threshold", "0"), ("spares_usable", "off"), ("keep_raid5", "off")):
                r.set(key, value)
            log.append("parity-only")
        group = sorted(r.groups)[0]
        r.paircreate(group, mode=mode)
        r.wait_mirrored(group)
        r.workload_start("w", _draw_workload(rng))
        link = sorted(r.links)[0]
        remote = r.groups[group]["remote"]
        master = r.groups[group]["master"]
        for i in range(steps):
            action = str(rng.choice(["run", "flap", "flap", "disk", "dkc", "resync", "resync2", "read", "slow"]))
            try:
                _act(r, rng, action, link, remote, group)
                log.append(action)
            except CommandError as exc:
                log.append(f"{action}(refused: {exc})")
            r.run(int(rng.integers(5, 60)) * MS)
            check_invariants(r, f"seed {seed} step {i} after {action}")
        if rng.random() < 0.5:   # lose the master mid-whatever, then take over
            r.fault_site_down(master)
            log.append("master-loss")
            if rng.random() < 0.5 and r.run_until("recovery.timeout", 600 * MS) is not None:
                r.run(int(rng.integers(0, 30)) * MS)   # somewhere inside the rollback (or just after)
                r.fault_kill(f"{remote}.dkc")
                r.run(int(rng.integers(1, 5)) * MS)
                r.fault_restart(f"{remote}.dkc")
                log.append("dkc-kill-in-rollback")
            r.run(500 * MS)
            r.wait_rollbacks()
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
        lost = read_back(r, f"seed {seed} (mode {mode}; {' '.join(log)})")
        if lost:
            log.append(f"read-back-loss({lost} tracks)")
        return {"seed": seed, "mode": mode, "actions": log, "writes": verdict["writes"],
                "trace_sha256": r.rack.finish_trace()}


def read_back(r: StorageRack, where: str) -> int:
    """Read every track of every LDEV of every live site; raise Violation on
    wrong bytes (a sector whose stamp is not of a write that covered it) or
    on a read that fails for a track the DKC does not report lost; return
    the number of tracks whose loss was reported."""
    log = r.writelog()
    by_id = {rec.write_id: rec for rec in log}
    ldevs = sorted({(p["m_site"], p["m_ldev"]) for p in r.pairs.values()}
                   | {(p["r_site"], p["r_ldev"]) for p in r.pairs.values()})
    reported = 0
    for site, ldev in ldevs:
        if site in r.down_sites:
            continue
        lost = {t for run in r.lost_tracks(site).get(ldev, []) for t in range(run["first"], run["last"] + 1)}
        spt = r.sites[site]["track_bytes"] // 512
        tracks = next(ld["tracks"] for ld in r.sites[site]["ldevs"] if ld["ldev"] == ldev)
        for track in range(tracks):
            try:
                data = r.read_track(site, ldev, track)
            except CommandError as exc:
                if track not in lost:
                    raise Violation(f"{where}: {site}:{ldev} track {track} unreadable but not reported lost: {exc}")
                reported += 1
                continue
            if track in lost:
                raise Violation(f"{where}: {site}:{ldev} track {track} reported lost but read")
            ids = read_stamps(np.frombuffer(data, dtype=np.uint8), ldev, track * spt)
            for s in np.flatnonzero(ids != 0):
                rec = by_id.get(int(ids[s]))
                lba = track * spt + int(s)
                if rec is None or not (rec.ldev == ldev and rec.lba <= lba < rec.lba + rec.sectors):
                    raise Violation(f"{where}: wrong bytes at {site}:{ldev} lba {lba}: "
                                    + ("not a stamp" if ids[s] < 0 else f"stamp of write {int(ids[s])}, "
                                       "which did not write there"))
    return reported


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
    elif action == "resync2":   # a second pairresync while a copy runs: joined or refused, never a teardown
        if any(row["state"] == "COPY" for row in r.pairdisplay(group)):
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


def _seed_outcome(config: str, seed: int, steps: int) -> dict:
    """One seed, as plain data: its result, or the violation it found."""
    try:
        return {"ok": True, **run_seed(config, seed, steps)}
    except Violation as exc:
        return {"ok": False, "seed": seed, "violation": str(exc)}


def run_seeds(config: str, seeds: list[int], steps: int, jobs: int, client=None):
    """Outcomes in seed order; with ``jobs`` > 1 each seed runs in a forked
    child of this process (imports and compiled kernels already warm), up to
    ``jobs`` at once; with a Dask ``client``, each seed is a task on its
    cluster. An error that is not a violation stops the campaign."""
    if client is not None:
        from controllers.verify import distributed
        yield from distributed.campaign_outcomes(client, config, seeds, steps)
        return
    if jobs <= 1:
        for seed in seeds:
            yield _seed_outcome(config, seed, steps)
        return
    # the kernels compiled (or loaded from numba's cache) once here, not once per child
    parity.warm_up()
    checker.warm_up()
    ready, nxt = {}, 0
    with ForkPool(jobs) as pool:
        def arrived(done):
            nonlocal nxt
            for seed, answer in done:
                if not answer["ok"]:
                    raise RuntimeError(f"seed {seed}: {answer['error']}\n{answer.get('traceback', '')}")
                ready[seed] = answer["result"]
            while nxt < len(seeds) and seeds[nxt] in ready:
                yield ready.pop(seeds[nxt])
                nxt += 1
        for seed in seeds:
            yield from arrived(pool.submit(seed, lambda seed=seed: _seed_outcome(config, seed, steps)))
        yield from arrived(pool.drain())


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="emu campaign", description="seeded fault campaign")
    p.add_argument("config")
    p.add_argument("--seed", type=int, help="one seed (reproduce a failure)")
    p.add_argument("--seeds", type=int, default=10, help="run seeds 1..N")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--jobs", type=int, default=2, help="seeds run at once (forked children)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run the seeds on this Dask cluster")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.jobs < 1:
        print("emu campaign: --jobs must be at least 1", file=sys.stderr)
        return 2
    seeds = [args.seed] if args.seed is not None else list(range(1, args.seeds + 1))
    t0_s = time.monotonic()
    client = None
    if args.scheduler:
        from controllers.verify import distributed
        client = distributed.connect(args.scheduler)
    try:
        failed = sum(not res["ok"] for res in _print_outcomes(run_seeds(args.config, seeds, args.steps, args.jobs,
                                                                         client), args))
    finally:
        if client is not None:
            client.close()
    took_s = time.monotonic() - t0_s
    where = f"on {args.scheduler}" if args.scheduler else f"{args.jobs} jobs"
    print(f"{len(seeds) - failed} passed, {failed} failed; {len(seeds)} seeds in {took_s:.1f} s "
          f"({60 * len(seeds) / max(took_s, 1e-9):.1f} seeds/min, {where})")
    return 1 if failed else 0


def _print_outcomes(outcomes, args):
    """Print each seed's line as it comes; pass the outcome on."""
    for res in outcomes:
        seed = res["seed"]
        if res["ok"]:
            print(f"seed {seed}: ok ({res['mode']}, {res['writes']} writes; {' '.join(res['actions'])})", flush=True)
        else:
            print(f"seed {seed}: FAILED: {res['violation']}")
            print(f"  reproduce with: emu campaign {args.config} --seed {seed} --steps {args.steps}", flush=True)
        yield res


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
