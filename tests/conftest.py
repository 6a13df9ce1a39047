"""Suite-wide guard: after the whole session no process, /dev/shm segment or
ipc socket file of ours may be left, even when tests fail."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# every DKC in the suite (actor processes included) checks that a commit
# which skipped its cold group skipped an unchanged one (firmware/dkc.py)
os.environ.setdefault("EMU_NVM_CHECK_CLEAN", "1")

from emu.backends.processes import run_root  # noqa: E402
from emu.shm import leftover_segments  # noqa: E402
from support.procs import our_children  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _leftovers() -> dict:
    """Ours = named after this test process's pid (rack ids start with it),
    so a concurrent run on the same machine does not count."""
    root = run_root()
    mine = f"{os.getpid()}_"
    return {
        "segments": [s for s in leftover_segments() if s.startswith("emu_" + mine)],
        "run dirs": sorted(d for d in os.listdir(root) if d.startswith(mine)),
        "children": our_children(),
    }


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_suite():
    """Proves the no-leak rule over the whole suite."""
    before = _leftovers()
    yield
    import gc
    gc.collect()
    after = _leftovers()
    leaked = {k: sorted(set(after[k]) - set(before[k])) for k in after}
    leaked["children"] = [p for p in leaked["children"] if _is_ours(p)]
    assert not any(leaked.values()), f"leaked after the test session: {leaked}"


def _is_ours(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" not in cmd
