"""The application sweep (issue 12 item 4): the SQLite bank's captured I/O as a crash sweep.

* save-old and stage-new: at every sampled crash point of the recovery copy
  (master-site loss), the remote database opens, SQLite recovers it,
  integrity_check is ok, the balances sum is intact and every transaction
  acknowledged before the suspension is there;
* ``--method none`` (address order, what products do): the sqlite verdict
  finds violations (a checker shown to catch a real inconsistency), with
  integrity_check still ok where it does — what fsck-style checks miss;
* without ``--check`` no point claims a verdict for the unstamped LDEV.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.apps.bank import capture_bank
from controllers.verify import sweep as sw

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "two-site.toml")


@pytest.fixture(scope="module")
def preamble(tmp_path_factory):
    cap = tmp_path_factory.mktemp("bank") / "bank.cap"
    capture_bank(cap, transfers=120, seed=1)
    text = (ROOT / "scenarios" / "apps" / "sweep-sqlite.emu").read_text()
    assert "trace=bank.cap " in text
    return text.replace("trace=bank.cap ", f"trace={cap} ").splitlines()


def _quiet(msg):
    pass


@pytest.mark.parametrize("method", ["save-old", "stage-new"])
def test_protected_copies_leave_a_consistent_database(preamble, method):
    s = sw.sweep(CFG, preamble, 1, {"method": method}, "master-loss", "sample:6", 2, progress=_quiet,
                 check="sqlite")
    assert s["tried"] >= 5, s["points"]
    assert s["app_ok"] == s["tried"] and s["consistent_pct"] == 100.0, \
        [(f["k"], f["problems"][:2]) for f in s["failures"]]


def test_address_order_breaks_the_bank_and_the_sqlite_verdict_sees_it(preamble):
    results = []
    s = sw.sweep(CFG, preamble, 1, {"method": "none", "order": "bitmap"}, "master-loss", "every:8", 2,
                 progress=_quiet, check="sqlite", on_result=results.append)
    assert s["failed"] >= 1, "with protection off no crash point broke the bank: the verdict proves nothing"
    broken = [r for r in results if "skipped" not in r and not r["app_ok"]]
    assert broken and all(r["checker_ok"] for r in results if "skipped" not in r)
    # integrity_check alone would have passed these: the invariant is what catches them
    assert any(a["integrity"] == "ok" for r in broken for a in r["app"]), broken[0]["app"]


def test_without_check_no_verdict_is_claimed_for_client_bytes(preamble):
    s = sw.sweep(CFG, preamble, 1, {"method": "save-old"}, "master-loss", "only:3", 1, progress=_quiet)
    assert s["tried"] == 1 and s["consistent"] == 0
    assert "not judged" in s["failures"][0]["problems"][0]


def _no_ext4_capture() -> str | None:
    import os
    import shutil
    import subprocess
    if os.geteuid() != 0:
        return "the ext4 capture needs root (losetup, mount)"
    missing = [t for t in ("mkfs.ext4", "e2fsck", "debugfs", "losetup", "fusermount3") if shutil.which(t) is None]
    if missing or not os.path.exists("/dev/fuse"):
        return f"the ext4 capture needs /dev/fuse and {', '.join(missing) or 'fuse3'} (make clients)"
    if subprocess.run(["losetup", "-f"], capture_output=True).returncode != 0:
        return "no free loop device"
    return None


@pytest.fixture(scope="module")
def ext4_preamble(tmp_path_factory):
    why = _no_ext4_capture()
    if why:
        pytest.skip(why)
    from controllers.apps.ext4_files import capture_ext4
    cap = capture_ext4(tmp_path_factory.mktemp("ext4"), str(ROOT / "configs" / "two-site-8m.toml"), steps=30)
    text = (ROOT / "scenarios" / "apps" / "sweep-ext4.emu").read_text()
    assert "trace=ext4.cap " in text
    return text.replace("trace=ext4.cap ", f"trace={cap} ").splitlines()


CFG_8M = str(ROOT / "configs" / "two-site-8m.toml")


def test_ext4_protected_copy_keeps_every_durable_file(ext4_preamble):
    """A real kernel ext4 captured through FUSE: with save-old the remote
    replays its journal, passes e2fsck -fn and holds every fsync'ed file."""
    results = []
    s = sw.sweep(CFG_8M, ext4_preamble, 1, {"method": "save-old"}, "master-loss", "sample:4", 2,
                 progress=_quiet, check="ext4", on_result=results.append)
    assert s["tried"] >= 3 and s["app_ok"] == s["tried"], [(f["k"], f["problems"][:2]) for f in s["failures"]]
    steps = [a.get("durable_step", 0) for r in results if "skipped" not in r for a in r["app"]]
    assert max(steps) >= 1, "no step was durable before the link cut: the check was vacuous"


def test_ext4_address_order_breaks_files_the_verdict_sees_it(ext4_preamble):
    s = sw.sweep(CFG_8M, ext4_preamble, 1, {"method": "none", "order": "bitmap"}, "master-loss", "every:60", 2,
                 progress=_quiet, check="ext4")
    assert s["failed"] >= 1, "with protection off no crash point broke a durable file: the verdict proves nothing"
