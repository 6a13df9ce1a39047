"""End to end on the real rack (host, DKC with firmware, RAID5 media on small
disks, link, SVP as actors): the patent's story in both backends.

What it proves:
* a master site lost at several points of a recovery copy leaves the remote
  consistent after T: pairs that did not reach equal their suspension-time
  image, every unit passes the dependent-write checker (save-old and
  stage-new, units ldev and group, W=1 and W=32, bitmap and time order);
* with protection switched off (method none, bitmap order) the same checks
  fail at some crash point: the checker can fail;
* a remote DKC SIGKILLed and restarted mid-recovery still rolls back right;
* the two backends give the same trace sha256 for the same scenario;
* the traces of these scenarios contain every flowchart step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.rack.storage import StorageRack
from controllers.verify.rack_verify import verify_rack

CFG = str(Path(__file__).resolve().parents[2] / "configs" / "two-site.toml")
MS = 1_000_000
T_NS = 400 * MS
STEPS: dict[int, int] = {}
PATENT_STEPS = ([*range(350, 354)] + [*range(401, 414)] + [*range(501, 521)] + [*range(751, 758)]
                + [*range(1201, 1209)])


def run_scenario(backend="inline", method="save-old", order="bitmap", unit="ldev", window=1,
                 kill_after_ns=10 * MS, seed=1, bs="4KiB", remote_restart=False, t_ns=T_NS):
    """Mirror, cut the link, write while suspended, resync, lose the master
    ``kill_after_ns`` into the recovery copy, wait past T; return the facts."""
    with StorageRack(CFG, backend=backend, seed=seed) as r:
        for key, value in (("method", method), ("order", order), ("unit", unit),
                           ("window", str(window)), ("max_time", f"{t_ns}ns")):
            r.set(key, value)
        r.paircreate("g0")
        r.wait_mirrored()
        assert {row["state"] for row in r.pairdisplay()} == {"PAIR"}
        r.workload_start("w", f"rw=randwrite bs={bs} iodepth=4 ldevs=0-3 seed={seed}")
        r.run(30 * MS)
        r.fault_link("down")
        r.run(60 * MS)
        r.fault_link("up")
        r.pairresync("g0")
        if remote_restart:
            r.run(kill_after_ns // 2)
            r.fault_kill("remote.dkc")
            r.run(1 * MS)
            r.fault_restart("remote.dkc")
            r.run(kill_after_ns - kill_after_ns // 2)
        else:
            r.run(kill_after_ns)
        r.fault_site_down("main")
        r.run(t_ns + 200 * MS)
        r.wait_rollbacks()
        verdict = verify_rack(r)
        last = r.show("recovery-plan")["remote"]["last_remote"]
        sha = r.rack.finish_trace()
        for step, n in r.rack.sink.steps_seen.items():
            STEPS[step] = STEPS.get(step, 0) + n
        return verdict, last, sha


def assert_consistent(verdict, last, seed):
    # last is None when the master died before the remote heard of the copy:
    # then nothing was touched and every pair must still be at its suspension image
    reached = set(last.get("reached", [])) if last else set()
    complete = bool(last) and last["outcome"] == "complete"
    assert verdict["consistent"], f"seed={seed}: checker says inconsistent: {verdict['groups']}"
    for pair, facts in verdict["pairs"].items():
        if pair not in reached and not complete:
            assert facts.get("equals_suspension_image"), \
                f"seed={seed}: {pair} did not reach but differs from its suspension image"


KILL_POINTS_MS = [2, 15, 60, 150]


@pytest.mark.parametrize("kill_ms", KILL_POINTS_MS)
@pytest.mark.parametrize("method,order,unit,window", [
    ("save-old", "bitmap", "ldev", 1),
    ("stage-new", "bitmap", "ldev", 1),
    ("save-old", "bitmap", "group", 32),
    ("stage-new", "time", "group", 1),
    ("save-old", "time", "ldev", 32),
])
def test_master_lost_mid_recovery_leaves_remote_consistent(method, order, unit, window, kill_ms):
    verdict, last, _ = run_scenario(method=method, order=order, unit=unit, window=window,
                                    kill_after_ns=kill_ms * MS, seed=kill_ms)
    assert_consistent(verdict, last, seed=kill_ms)


@pytest.mark.parametrize("method", ["save-old", "stage-new"])
def test_recovery_that_completes_keeps_the_new_image(method):
    """A copy that finishes before the master is lost: the remote reports
    completion (413/514/520), nothing is rolled back, the image is consistent."""
    verdict, last, _ = run_scenario(method=method, window=32, kill_after_ns=900 * MS, seed=5,
                                    t_ns=1_000 * MS)
    assert last is not None and last["outcome"] == "complete", last
    assert verdict["consistent"], verdict["groups"]


def test_format_writes_and_time_order_reach_the_shortcut():
    """Whole-track writes during suspension exercise 1206/1207."""
    verdict, last, _ = run_scenario(method="save-old", order="time", bs="16KiB", kill_after_ns=20 * MS, seed=7)
    assert_consistent(verdict, last, seed=7)


def test_protection_off_is_caught_by_the_checker():
    """Method none + bitmap order: some crash point must leave an unreached
    pair neither at its suspension image nor consistent."""
    failures = []
    for kill_ms in (5, 15, 30, 60, 100):
        verdict, last, _ = run_scenario(method="none", kill_after_ns=kill_ms * MS, seed=kill_ms)
        reached = set(last.get("reached", [])) if last else set()
        bad = [p for p, f in verdict["pairs"].items()
               if p not in reached and not f.get("equals_suspension_image")]
        if bad or not verdict["consistent"]:
            failures.append((kill_ms, bad, verdict["consistent"]))
    assert failures, "with protection off no crash point was caught: the checks cannot fail"


@pytest.mark.parametrize("method", ["save-old", "stage-new"])
def test_remote_dkc_killed_and_restarted_mid_recovery(method):
    verdict, last, _ = run_scenario(method=method, kill_after_ns=30 * MS, seed=11, remote_restart=True)
    assert_consistent(verdict, last, seed=11)


def test_processes_backend_gives_the_same_trace():
    a = run_scenario(backend="processes", kill_after_ns=15 * MS, seed=3)
    b = run_scenario(backend="inline", kill_after_ns=15 * MS, seed=3)
    assert_consistent(a[0], a[1], seed=3)
    assert a[2] == b[2], "processes and inline traces differ"


def test_every_flowchart_step_appears_in_the_scenario_traces():
    """Runs last in this file: the union of the steps traced above."""
    missing = [s for s in PATENT_STEPS if s not in STEPS]
    assert not missing, f"steps never traced by the rack scenarios: {missing}"
