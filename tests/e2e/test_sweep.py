"""Crash-point sweeps over the recovery copy (inline backend, parallel).

* save-old and stage-new: every sampled crash point (master-site loss right
  after a recovery-copy trace step) leaves the remote consistent;
* method none with bitmap order: violations are found (the checker can
  fail), and the printed reproduce command reproduces a failure exactly;
* a remote DKC killed and restarted at sampled points still ends consistent;
* the format-write shortcut breaks the prefix consistency of a time-ordered
  copy without protection (and nothing else does in that scenario);
* fork snapshots and replay give the same result and the same trace sha256
  at every point, also at points inside one event and before the copy's
  first record;
* the same around the fork sweep's first checkpoint, and when the preamble
  leaves a fault scheduled (then the points are counted as a replay counts
  them, in a snapshot);
* --jsonl streams one line per point; --artifacts keeps failures only.
"""

import json

from pathlib import Path

import pytest
from support.procs import our_children

from controllers.verify import sweep as sw

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "two-site.toml")
PREAMBLE = (ROOT / "scenarios" / "sweep.emu").read_text().splitlines()


@pytest.mark.parametrize("method", ["save-old", "stage-new"])
def test_protected_methods_are_always_consistent(method):
    s = sw.sweep(CFG, PREAMBLE, 1, {"method": method}, "master-loss", "sample:10", 2, progress=lambda m: None)
    assert s["tried"] >= 8, s["points"]
    assert s["consistent_pct"] == 100.0, [(f["k"], f["problems"][:1]) for f in s["failures"]]


def test_no_protection_is_caught_and_reproducible(capsys):
    s = sw.sweep(CFG, PREAMBLE, 1, {"method": "none", "order": "bitmap"}, "master-loss", "sample:10", 2,
                 progress=lambda m: None)
    assert s["failures"], "with protection off no crash point failed: the checker proves nothing"
    k = s["failures"][0]["k"]
    cmd = sw.reproduce_command(CFG, str(ROOT / "scenarios" / "sweep.emu"), 1,
                               {"method": "none", "order": "bitmap"}, "master-loss", k)
    argv = cmd.split()[2:]
    assert sw.main(argv) == 1
    out = capsys.readouterr().out
    assert f"crash point {k} " in out


def test_remote_dkc_restart_points_stay_consistent():
    s = sw.sweep(CFG, PREAMBLE, 2, {"method": "save-old"}, "remote-dkc-restart", "sample:6", 2,
                 progress=lambda m: None)
    assert s["consistent_pct"] == 100.0, [(f["k"], f["problems"][:1]) for f in s["failures"]]


def test_remote_dkc_killed_during_the_rollback_still_ends_at_the_suspension_image():
    """Issue 10 item 4: the master lost at point k, the remote DKC killed
    after its j-th restored track and restarted; every point still ends at
    the suspension image, and the kills really landed inside rollbacks."""
    import io
    landed = 0
    for k in (700, 1500, 2300):
        buf = io.StringIO()
        r = sw.run_point(CFG, PREAMBLE, 1, {"method": "save-old"}, "remote-dkc-kill-during-rollback", k,
                         trace_out=buf)
        assert r["consistent"] and r["rollback_exact"], r
        events = [line.split()[3] for line in buf.getvalue().splitlines()]
        if "dkc.restart" in events and "rc_rollback_started" in events:
            restart = events.index("dkc.restart")
            landed += restart > events.index("rc_rollback_started") and "rc_rollback_done" in events[restart:]
    assert landed, "no kill landed inside a rollback: the fault proves nothing"


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert sw.main([CFG, str(tmp_path / "none.emu")]) == 2
    bad = tmp_path / "bad.emu"
    bad.write_text("paircreate nosuch\n")
    assert sw.main([CFG, str(bad), "--crash-points", "sample:2", "--jobs", "1"]) == 2
    assert "no group or pair named" in capsys.readouterr().err


QUIET = (ROOT / "scenarios" / "sweep-format-quiet.emu").read_text().splitlines()


def test_format_write_shortcut_breaks_prefix_consistency_of_the_time_ordered_copy():
    """The patent's subtlety, measured: with whole-track writes while
    suspended and none during the copy, a time-ordered copy without
    protection leaves the remote a consistent prefix at every crash point
    when the shortcut (1207) is off, and not when it is on (dropping an
    earlier format write reorders the updates)."""
    base = {"method": "none", "order": "time", "unit": "ldev", "window": "1"}
    off = sw.sweep(CFG, QUIET, 1, {**base, "format_shortcut": "off"}, "master-loss", "sample:8", 2,
                   progress=lambda m: None)
    on = sw.sweep(CFG, QUIET, 1, {**base, "format_shortcut": "on"}, "master-loss", "sample:8", 2,
                  progress=lambda m: None)
    assert off["checker_pct"] == 100.0, [(f["k"], f["problems"][:1]) for f in off["failures"]]
    assert on["checker_pct"] < 100.0, "the shortcut never broke the order: the test proves nothing"


@pytest.mark.parametrize("fault,spec,settings", [
    # 330-345: points before the copy's first record (the preamble ends at 337), and events tracing several steps
    ("master-loss", "range:330-345", {}),
    ("remote-dkc-restart", "sample:4", {"method": "stage-new"}),
    ("master-loss", "sample:5", {"method": "none", "order": "bitmap"}),
])
def test_fork_snapshots_equal_replay(fault, spec, settings):
    """The fork method is a faster way to the same rack states: every point's
    result, trace sha256 included, equals the replay's, byte for byte."""
    runs = {}
    for method in sw.METHODS_RUN:
        lines = []
        s = sw.sweep(CFG, PREAMBLE, 1, settings, fault, spec, 2, progress=lambda m: None, method=method,
                     on_result=lambda r: lines.append(sw.point_line(1, settings, fault, r)))
        runs[method] = (s["points"], lines)
    assert runs["fork"][0] == runs["replay"][0]
    hashes = [json.loads(ln)["trace_sha256"] for ln in runs["replay"][1]]
    assert len(set(hashes)) > 1, "every point has one trace: the comparison proves nothing"
    for fork_line, replay_line in zip(*(runs[m][1] for m in sw.METHODS_RUN)):
        assert fork_line == replay_line
    assert len(runs["fork"][1]) == len(runs["replay"][1]) == len(runs["replay"][0])


def test_points_around_a_checkpoint_equal_replay():
    """The fork sweep's counting pass forks a checkpoint every
    ``CHECKPOINT_SPACING_FIRST`` records at first, and each point is run from
    the last checkpoint before it: points just before, at and after the
    first checkpoint (and one event's several records there) give the
    replay's results byte for byte."""
    s = sw.CHECKPOINT_SPACING_FIRST
    spec = f"range:{s - 5}-{s + 5}"
    runs = {}
    for method in sw.METHODS_RUN:
        lines = []
        sw.sweep(CFG, PREAMBLE, 1, {}, "master-loss", spec, 2, progress=lambda m: None, method=method,
                 on_result=lambda r: lines.append(sw.point_line(1, {}, "master-loss", r)))
        runs[method] = lines
    assert len(runs["replay"]) == 11 and runs["fork"] == runs["replay"]


def test_a_fault_scheduled_by_the_preamble_gives_the_replay_results(monkeypatch):
    """Faults due at set times are applied by a plain run, not by the record
    stops the checkpoints are forked at: the fork sweep then counts in a
    snapshot and steps from the preamble's end, and still equals replay."""
    make = sw._rack

    def with_a_scheduled_fault(*args, **kw):
        rack = make(*args, **kw)
        rack.rack.schedule(rack.now_ns + 50_000_000, "kill", "remote.dkc")
        rack.rack.schedule(rack.now_ns + 60_000_000, "restart", "remote.dkc")
        return rack
    monkeypatch.setattr(sw, "_rack", with_a_scheduled_fault)
    runs = {}
    for method in sw.METHODS_RUN:
        lines = []
        s = sw.sweep(CFG, PREAMBLE, 1, {}, "link-loss", "sample:2", 2, progress=lambda m: None, method=method,
                     on_result=lambda r: lines.append(sw.point_line(1, {}, "link-loss", r)))
        runs[method] = (s["points_total"], lines)
    assert runs["fork"] == runs["replay"] and len(runs["fork"][1]) == 2


def test_jsonl_streams_points_and_artifacts_are_kept_for_failures_only(tmp_path, capsys):
    out, art = tmp_path / "points.jsonl", tmp_path / "art"
    code = sw.main([CFG, str(ROOT / "scenarios" / "sweep.emu"), "--method", "none", "--order", "bitmap",
                    "--crash-points", "sample:4", "--jobs", "2", "--jsonl", str(out), "--artifacts", str(art)])
    assert code == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["k"] for r in rows] == sorted(r["k"] for r in rows) and len(rows) == 4
    failed = sorted(r["k"] for r in rows if not r["consistent"])
    kept = sorted(int(d.name.rsplit("-k", 1)[1]) for d in art.iterdir())
    assert failed and kept == failed, (failed, kept)
    d = next(art.iterdir())
    assert {"trace.txt", "writes.csv", "result.json", "reproduce.txt", "ldev0.img"} <= {f.name for f in d.iterdir()}
    assert json.loads((d / "result.json").read_text())["consistent"] is False
    assert "[" in capsys.readouterr().out   # the matrix shows intervals


@pytest.mark.parametrize("k,n,lo,hi", [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634),
                                       (40, 40, 0.9124, 1.0)])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    """Published 95% Wilson bounds (e.g. Newcombe 1998, table I: 0/10 -> 0-0.2775)."""
    got = sw.wilson(k, n)
    assert abs(got[0] - lo) < 5e-4 and abs(got[1] - hi) < 5e-4, got
    assert sw.cell(k, n).startswith(f"{k}/{n} [")


def test_an_aborted_fork_sweep_leaves_no_child_behind():
    """The consumer fails after the first point: the sweep raises, and its
    snapshot children are killed and reaped before it returns."""
    before = set(our_children())

    def fail(result):
        raise RuntimeError("consumer failed")
    with pytest.raises(RuntimeError, match="consumer failed"):
        sw.sweep(CFG, PREAMBLE, 1, {}, "master-loss", "sample:6", 2, progress=lambda m: None, on_result=fail)
    assert set(our_children()) <= before
