"""The emu command line as a user runs it: `emu run` plays a script and
exits 0/1/2 as documented, `--json` validates against the report schema,
`--plots` writes real PNGs, `--writes`/`--trace` files feed `emu check`
and `emu trace`, `emu info` lists parameters, and a long-running rack
(`emu up`, `emu svp`, `emu down`) leaves nothing behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controllers.operator.report import validate_report
from controllers.cli import main

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "two-site.toml")
EMU = [sys.executable, "-m", "controllers.cli"]

SMALL = """# a short story
set max_time 300ms
paircreate g0
run until pair.mirroring 5s
expect state g0 PAIR
workload start w rw=randwrite bs=4KiB iodepth=2 ldevs=0-3 seed=1
run 20ms
fault link down
run 30ms
fault link up
pairresync g0
run 10ms
fault site main down
run 400ms
expect consistent
"""


def script(tmp_path, text, name="s.emu"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_run_ok_json_plots_writes_trace(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", CFG, script(tmp_path, SMALL), "--backend", "inline", "--json", str(out / "r.json"),
                 "--plots", str(out / "plots"), "--writes", str(out / "w.csv"), "--trace", str(out / "t.trace")]
                if out.mkdir() is None else [])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "verify: consistent" in text
    report = json.loads((out / "r.json").read_text())
    assert validate_report(report) == []
    assert report["verify"]["consistent"] is True
    from matplotlib.image import imread
    for png in ("latency_cdf.png", "timeline.png", "save_area.png"):
        path = out / "plots" / png
        assert path.stat().st_size > 5000, png
        img = imread(path)
        assert img.std() > 0.01, f"{png} is a blank image"
    assert (out / "w.csv").read_text().startswith("write_id,site,ldev,lba,sectors,issue_ns,complete_ns")
    assert main(["trace", str(out / "t.trace"), "--steps", "501-520"]) == 0
    walk = capsys.readouterr().out
    assert " 515  rc_timeout" in walk and " 516 " in walk


def test_failed_expect_exits_1(tmp_path, capsys):
    code = main(["run", CFG, script(tmp_path, "paircreate g0\nrun 1ms\nexpect pair p0 PAIR\n"),
                 "--backend", "inline"])
    out = capsys.readouterr()
    assert code == 1
    assert "expect failed: pair p0 is COPY, expected PAIR" in out.out


@pytest.mark.parametrize("text,needle", [
    ("paircreate nosuch\n", "s.emu:1: no group or pair named 'nosuch'"),
    ("run 10ms\nrun ten\n", "s.emu:2:"),
    ("frobnicate\n", "s.emu:1: unknown command 'frobnicate'"),
    ("set window 0\n", "s.emu:1: window expects an integer"),
])
def test_bad_script_line_exits_2_naming_file_and_line(tmp_path, capsys, text, needle):
    code = main(["run", CFG, script(tmp_path, text), "--backend", "inline"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert "Traceback" not in err


def test_bad_config_exits_2_naming_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(CFG).read_text().replace('bandwidth = "1Gb/s"', 'bandwidth = "fast"'))
    code = main(["run", str(bad), script(tmp_path, "run 1ms\n"), "--backend", "inline"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(bad) in err and "link[0].bandwidth" in err and len(err.splitlines()) == 1


def test_run_in_the_processes_backend_matches_inline(tmp_path):
    shas = []
    for backend in ("processes", "inline"):
        j = tmp_path / f"{backend}.json"
        assert main(["run", CFG, script(tmp_path, SMALL), "--backend", backend, "--json", str(j)]) == 0
        shas.append(json.loads(j.read_text())["trace_sha256"])
    assert shas[0] == shas[1]


def test_info_lists_parameters(capsys):
    assert main(["info", "dkc"]) == 0
    out = capsys.readouterr().out
    assert "layout" in out and "cost" in out
    assert main(["info", "nosuch"]) == 2


def test_report_rerenders_a_saved_run(tmp_path, capsys):
    j = tmp_path / "r.json"
    assert main(["run", CFG, script(tmp_path, SMALL), "--backend", "inline", "--json", str(j)]) == 0
    capsys.readouterr()
    assert main(["report", str(j)]) == 0
    assert "verify: consistent" in capsys.readouterr().out
    (tmp_path / "x.json").write_text("{}")
    assert main(["report", str(tmp_path / "x.json")]) == 2


@pytest.mark.parametrize("tcp", [False, True])
def test_long_running_rack_up_svp_down(tmp_path, tcp):
    name = f"t{os.getpid()}{'tcp' if tcp else ''}"
    env = dict(os.environ)
    extra = ["--tcp", "127.0.0.1:0"] if tcp else []
    up = subprocess.run(EMU + ["up", CFG, "--name", name, *extra], capture_output=True, text=True, env=env,
                        timeout=60)
    assert up.returncode == 0, up.stderr
    try:
        svp = subprocess.run(EMU + ["svp", "--name", name, "-c", "paircreate g0; run until pair.mirroring 5s; pairdisplay"],
                             capture_output=True, text=True, timeout=120)
        assert svp.returncode == 0, svp.stdout + svp.stderr
        assert "PAIR" in svp.stdout
        bad = subprocess.run(EMU + ["svp", "--name", name, "-c", "paircreate nosuch"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "error: no group or pair named" in bad.stdout
        ps = subprocess.run(EMU + ["ps"], capture_output=True, text=True, timeout=60)
        assert name in ps.stdout
    finally:
        down = subprocess.run(EMU + ["down", "--name", name], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    from emu.backends.processes import run_root
    from emu.shm import leftover_segments
    left = [n for n in os.listdir(Path(run_root()) / "racks") if n.startswith(name)]
    assert left == [], left
    assert not [s for s in leftover_segments() if s.split("_")[1] not in ("", str(os.getpid()))
                and Path(f"/proc/{s.split('_')[1]}").exists() is False]
