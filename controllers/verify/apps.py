"""Application verdicts (issue 12 item 4): judge a remote image as the application would.

The stamp checker cannot judge client bytes; these checks can, each for
its application, beside it:

* ``sqlite`` (:func:`check_sqlite`): the image holds the LDEV layout of
  :mod:`controllers.apps.sqlite_ldev`; on a COPY of it SQLite opens the
  database and rolls a hot journal back itself, then ``PRAGMA
  integrity_check`` must say ok, then every invariant (SQL returning one
  value, compared with ``==`` or ``>=``; ``"$acked_txid"`` stands for the
  last transaction acknowledged before the suspension).
* ``ext4`` (:func:`check_ext4`): on a COPY of the image (a plain file,
  no kernel mount), ``e2fsck -y -E journal_only`` replays the journal,
  ``e2fsck -fn`` must find the filesystem clean, then every file the
  application had made durable (fsync'ed) before the suspension is read out
  with ``debugfs -R "dump -p PATH OUT"`` and must have the sha256 it had
  then: fsck alone misses address-order mixes (a clean filesystem whose
  renamed files hold other blocks' bytes).

For a rack (:func:`judge_rack`, used by ``emu sweep --check APP``) the
facts come from the capture's sidecar (``FILE.cap.json``, written by the
reference application: its acks as ``[txid, seq of the commit's last
request]``) and from the replay (when each seq completed in virtual time):
a transaction is acknowledged before the suspension when its last request
completed at or before the last ``link.down`` / ``pairsplit`` / site loss
that preceded the resync (for a sync pair everything acknowledged then is
on the remote).
"""

from __future__ import annotations

import hashlib
import json
import operator
import shutil
import subprocess
import tempfile
from pathlib import Path

import apsw

from controllers.apps.blockdev import MemoryDevice
from controllers.apps.sqlite_ldev import LayoutError, LdevVfs

APPS = ("sqlite", "ext4")
#: e2fsck's exit bits (e2fsck(8)): 1 errors corrected, 2 reboot, 4 errors left, 8 operational error
E2FSCK_LEFT_ERRORS = 4
TOOL_TIMEOUT_S = 120
_OPS = {"==": operator.eq, ">=": operator.ge}
SUSPENDING_EVENTS = ("link.down", "pairsplit", "site.down")


class AppCheckError(ValueError):
    """Bad input to an application check (a missing or malformed sidecar, an unknown app)."""


def check_sqlite(image, invariants: list[dict], acked_txid: int = -1, db_name: str = "bank.db") -> dict:
    """Open the database on a copy of ``image`` (bytes, or a sparse image of
    ``controllers/formats/image.py``), let SQLite recover, integrity_check, invariants.

    Returns ``{"app": "sqlite", "ok", "integrity", "values": {name: value},
    "problems": [...]}``; ``ok`` only if every step passed.
    """
    out = {"app": "sqlite", "ok": False, "integrity": None, "values": {}, "problems": [], "acked_txid": acked_txid}
    if not isinstance(image, (bytes, bytearray, memoryview)):
        image = image.to_bytes()     # the VFS works on a private copy of the whole LDEV
    if acked_txid < 0 and not any(image[:4096]):
        # nothing was acknowledged before the suspension and the layout was
        # never made durable: an empty LDEV is what the application may find
        out.update(ok=True, integrity="no database yet (nothing acknowledged before the suspension)")
        return out
    try:
        vfs = LdevVfs(MemoryDevice(image=image))
    except LayoutError as exc:
        out["problems"].append(f"layout: {exc}")
        return out
    con = None
    try:
        con = apsw.Connection(db_name, vfs=vfs.vfs_name)
        con.pragma("temp_store", "memory")
        rows = con.execute("PRAGMA integrity_check").fetchall()
        out["integrity"] = "; ".join(str(r[0]) for r in rows[:5])
        if rows != [("ok",)]:
            out["problems"].append(f"integrity_check: {out['integrity']}")
        tables = con.execute("SELECT count(*) FROM sqlite_master").fetchall()[0][0]
        if tables == 0 and acked_txid < 0:
            out["integrity"] += "; no tables yet (nothing acknowledged before the suspension)"
            invariants = []
        for inv in invariants:
            want = acked_txid if inv["value"] == "$acked_txid" else inv["value"]
            got = con.execute(inv["sql"]).fetchall()
            value = got[0][0] if got and len(got[0]) == 1 else got
            out["values"][inv["name"]] = value
            if inv["op"] not in _OPS:
                raise AppCheckError(f"invariant {inv['name']!r}: op must be one of {', '.join(_OPS)}")
            if not isinstance(value, int) or not _OPS[inv["op"]](value, want):
                out["problems"].append(f"{inv['name']}: {value!r}, expected {inv['op']} {want}")
    except apsw.Error as exc:   # a database SQLite itself refuses: a verdict, not a crash
        out["problems"].append(f"sqlite: {type(exc).__name__}: {exc}")
    finally:
        if con is not None:
            con.close()
        vfs.close()
    out["ok"] = not out["problems"]
    return out


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL)


def check_ext4(image, durable: dict[str, str | list[str]]) -> dict:
    """Judge an ext4 image against ``durable`` ({path: sha256 hex, or a list of the acceptable
    ones} of the files fsync'ed before the suspension).

    Returns ``{"app": "ext4", "ok", "fsck", "files_checked", "problems"}``.
    The image itself is never changed (the tools run on a copy).
    """
    out = {"app": "ext4", "ok": False, "fsck": None, "files_checked": 0, "problems": []}
    missing = [t for t in ("e2fsck", "debugfs") if shutil.which(t) is None]
    if missing:
        raise AppCheckError(f"--check ext4 needs {', '.join(missing)} (Debian package e2fsprogs)")
    with tempfile.TemporaryDirectory(prefix="emu-ext4-") as tmp:
        copy = Path(tmp) / "image"
        if isinstance(image, (bytes, bytearray, memoryview)):
            copy.write_bytes(image)
        else:          # a sparse image: written as a sparse file, holes and all
            image.write_file(copy)
        replay = _run(["e2fsck", "-y", "-E", "journal_only", str(copy)])
        if replay.returncode & 8:
            out["problems"].append(f"journal replay: {_first_line(replay)}")
            return out
        fsck = _run(["e2fsck", "-fn", str(copy)])
        out["fsck"] = "clean" if fsck.returncode == 0 else f"exit {fsck.returncode}: {_first_line(fsck, 'Pass')}"
        if fsck.returncode & (E2FSCK_LEFT_ERRORS | 8):
            out["problems"].append(f"e2fsck -fn: {out['fsck']}")
        for path, want in sorted(durable.items()):
            dumped = Path(tmp) / "file"
            dumped.unlink(missing_ok=True)
            _run(["debugfs", "-R", f"dump -p {path} {dumped}", str(copy)])
            if not dumped.exists():
                out["problems"].append(f"{path}: missing (it was fsync'ed before the suspension)")
            elif hashlib.sha256(dumped.read_bytes()).hexdigest() not in ([want] if isinstance(want, str) else want):
                out["problems"].append(f"{path}: contents differ from what was fsync'ed before the suspension")
            out["files_checked"] += 1
    out["ok"] = not out["problems"]
    return out


def _first_line(proc: subprocess.CompletedProcess, skip: str = "") -> str:
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
             if ln.strip() and not ln.startswith("e2fsck ") and not (skip and ln.startswith(skip))]
    return lines[0].strip() if lines else f"exit {proc.returncode}"


def load_sidecar(capture: str | Path) -> dict:
    """A capture's application facts (``CAPTURE.json``); AppCheckError naming the file."""
    return load_facts(Path(str(capture) + ".json"))


def load_facts(path: str | Path) -> dict:
    """Application facts from a sidecar file; AppCheckError naming the file and the key."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except OSError as exc:
        raise AppCheckError(f"{path}: cannot read the capture's application facts: {exc.strerror}") from None
    except ValueError as exc:
        raise AppCheckError(f"{path}: not JSON: {exc}") from None
    need = {"sqlite": ("ldev", "acks", "invariants", "db"), "ext4": ("ldev", "durable")}
    if not isinstance(meta, dict) or meta.get("app") not in need:
        raise AppCheckError(f"{path}: key 'app' must be one of {', '.join(need)}")
    for key in need[meta["app"]]:
        if key not in meta:
            raise AppCheckError(f"{path}: key {key!r} is missing")
    return meta


def suspension_time_ns(events: list[dict]) -> int | None:
    """The last suspending event (link cut, split, site loss) logged before the last resync, else None.

    Taken by the order of the rack's log, not by time: a crash injected at
    the very instant the resync started comes after it."""
    last = max((i for i, e in enumerate(events) if e["event"] == "pairresync"), default=len(events))
    times = [e["time_ns"] for e in events[:last] if e["event"] in SUSPENDING_EVENTS]
    return max(times) if times else None


def acked_before(meta: dict, times: list[list], t_ns: int | None) -> int:
    """The highest txid whose commit's last request completed in the replay at or before ``t_ns``."""
    if t_ns is None:
        return -1
    done = {seq: c for seq, _, c in times if c is not None}
    held = [txid for txid, seq in meta["acks"] if seq in done and done[seq] <= t_ns]
    return max(held, default=-1)


def _judge_ext4(image: bytes, meta: dict, cap: dict, t_susp: int | None) -> dict:
    """The ext4 workload's last step acknowledged before the suspension, from its marker
    writes in the capture and their completion in the replay; then :func:`check_ext4`."""
    from controllers.apps.ext4_files import durable_versions, parse_marker
    from controllers.formats.capture import read_capture
    _, records = read_capture(cap["file"])
    marks = {r.seq: parse_marker(r.data[:512]) for r in records if r.op == "write" and r.ldev == meta["marker_ldev"]}
    done = {seq: c for seq, _, c in cap["times"] if c is not None}
    steps = [step for seq, step in marks.items()
             if step is not None and t_susp is not None and seq in done and done[seq] <= t_susp]
    durable_step = max(steps, default=0)
    if durable_step == 0:
        return {"app": "ext4", "ok": True, "fsck": "not run: no step acknowledged before the suspension",
                "files_checked": 0, "problems": [], "durable_step": 0}
    v = check_ext4(image, durable_versions(meta["steps"], durable_step))
    return {**v, "durable_step": durable_step}


def judge_rack(rack, app: str) -> list[dict]:
    """Every capture replayed on the rack whose application is ``app``, judged on its remote image."""
    if app not in APPS:
        raise AppCheckError(f"--check must be one of {', '.join(APPS)}, got {app!r}")
    t_susp = suspension_time_ns(rack.events)
    out = []
    for site, raw in sorted(rack.rawlog().items()):
        for wl, cap in sorted(raw["captures"].items()):
            meta = load_sidecar(cap["file"])
            if meta["app"] != app:
                continue
            pair = next((p for p in rack.pairs.values() if p["m_site"] == site and p["m_ldev"] == meta["ldev"]), None)
            if pair is None:
                out.append({"app": app, "workload": wl, "ok": False,
                            "problems": [f"no pair mirrors {site} ldev {meta['ldev']}"]})
                continue
            if pair["r_site"] in rack.down_sites:
                continue
            image = rack.export_bytes(pair["r_site"], pair["r_ldev"])
            if app == "sqlite":
                acked = acked_before(meta, cap["times"], t_susp)
                v = check_sqlite(image, meta["invariants"], acked, meta["db"])
            else:
                v = _judge_ext4(image, meta, cap, t_susp)
            out.append({**v, "workload": wl, "pair": pair["name"], "suspended_ns": t_susp})
            marker = meta.get("marker_ldev")
            mpair = next((p for p in rack.pairs.values() if p["m_site"] == site and p["m_ldev"] == marker), None)
            if app == "ext4" and mpair is not None:
                # the step markers hold no application data: the verdict above covers them
                out.append({"app": app, "workload": wl, "pair": mpair["name"], "ok": True, "problems": [],
                            "fsck": "step markers of the workload (no application data)"})
    return out
