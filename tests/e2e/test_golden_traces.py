"""The redesign changed no behaviour: the demo (both backends) and every
scenario script produce the trace whose sha256 was pinned before it
(tests/e2e/golden_traces.json, which also pins the campaign seeds that
test_campaign.py checks). A deliberate change updates the pins: see the file's
``_how_to_update``."""

import io
from pathlib import Path

import pytest

from controllers.operator.console import SvpConsole, run_script
from controllers.operator.report import build_report
from controllers.rack.storage import StorageRack
from support import golden

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "configs" / "two-site.toml"
#: every scenario but the demo and the application-sweep preambles, which replay a
#: capture made at run time in the folder they run from (not in the repository);
#: tests/e2e/test_app_sweep.py runs those with a fresh capture
SCENARIOS = sorted(p.name for p in (ROOT / "scenarios").glob("*.emu")
                   if p.name != "demo.emu" and "format=capture" not in p.read_text())


def _trace_sha(script: str, backend: str) -> str:
    with StorageRack(str(CFG), backend=backend) as rack:
        console = SvpConsole(rack, stdout=io.StringIO())
        _code, error = run_script(console, (ROOT / "scenarios" / script).read_text().splitlines(), script)
        assert not error, error
        return build_report(rack)["trace_sha256"]


@pytest.mark.parametrize("backend", ["inline", "processes"])
def test_demo_trace_pinned(backend):
    golden.check(f"demo/{backend}", _trace_sha("demo.emu", backend))


@pytest.mark.parametrize("script", SCENARIOS)
def test_scenario_trace_pinned(script):
    golden.check(f"scenario/{script}/inline", _trace_sha(script, "inline"))


def test_every_scenario_is_pinned():
    """A new scenario gets a pin too (run with EMU_UPDATE_GOLDEN=1 once)."""
    assert golden.pinned("scenario/") == [f"scenario/{s}/inline" for s in SCENARIOS]
