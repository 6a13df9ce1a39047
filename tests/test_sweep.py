"""Crash-point sweeps over the recovery copy (inline backend, parallel).

* save-old and stage-new: every sampled crash point (master-site loss right
  after a recovery-copy trace step) leaves the remote consistent;
* method none with bitmap order: violations are found (the checker can
  fail), and the printed reproduce command reproduces a failure exactly;
* a remote DKC killed and restarted at sampled points still ends consistent.
"""

from pathlib import Path

import pytest

from controllers import sweep as sw

ROOT = Path(__file__).resolve().parents[1]
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


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert sw.main([CFG, str(tmp_path / "none.emu")]) == 2
    bad = tmp_path / "bad.emu"
    bad.write_text("paircreate nosuch\n")
    assert sw.main([CFG, str(bad), "--crash-points", "sample:2", "--jobs", "1"]) == 2
    assert "no group or pair named" in capsys.readouterr().err
