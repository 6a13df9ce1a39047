"""The layer contracts (import-linter, pyproject.toml) hold on the tree and
catch a real violation: a function-local import of the storage product in
the substrate, and a clock in the sans-I/O firmware, each break the build."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True)


@pytest.fixture()
def tree(tmp_path):
    for pkg in ("emu", "controllers", "firmware"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.skipif(not LINT.exists(), reason="lint-imports is installed by make test")
@pytest.mark.parametrize("module, planted, contract", [
    ("emu/units.py", "\n\ndef _leak():\n    import controllers.cli  # noqa\n", "emu imports neither"),
    ("firmware/fig07_bitmap.py", "\nimport time  # noqa\n", "firmware is sans-I/O"),
    ("controllers/devices/svp.py", "\n\ndef _leak():\n    from controllers.operator import report  # noqa\n",
     "devices import no operator"),
])
def test_contracts_catch_a_violation(tree, module, planted, contract):
    ok = _lint(tree)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    with open(tree / module, "a") as f:
        f.write(planted)
    broken = _lint(tree)
    assert broken.returncode != 0, broken.stdout
    assert "BROKEN" in broken.stdout and contract in broken.stdout.replace("\n", " "), broken.stdout
