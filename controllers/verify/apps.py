"""Application verdicts (issue 12 item 4): judge a remote image as the application would.

The stamp checker cannot judge client bytes; these checks can, each for
its application, beside it:

* ``sqlite`` (:func:`check_sqlite`): the image holds the LDEV layout of
  :mod:`controllers.apps.sqlite_ldev`; on a COPY of it SQLite opens the
  database and rolls a hot journal back itself, then ``PRAGMA
  integrity_check`` must say ok, then every invariant (SQL returning one
  value, compared with ``==`` or ``>=``; ``"$acked_txid"`` stands for the
  last transaction acknowledged before the suspension).

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

import json
import operator
from pathlib import Path

import apsw

from controllers.apps.blockdev import MemoryDevice
from controllers.apps.sqlite_ldev import LayoutError, LdevVfs

APPS = ("sqlite",)
_OPS = {"==": operator.eq, ">=": operator.ge}
SUSPENDING_EVENTS = ("link.down", "pairsplit", "site.down")


class AppCheckError(ValueError):
    """Bad input to an application check (a missing or malformed sidecar, an unknown app)."""


def check_sqlite(image: bytes, invariants: list[dict], acked_txid: int = -1, db_name: str = "bank.db") -> dict:
    """Open the database on a copy of ``image``, let SQLite recover, integrity_check, invariants.

    Returns ``{"app": "sqlite", "ok", "integrity", "values": {name: value},
    "problems": [...]}``; ``ok`` only if every step passed.
    """
    out = {"app": "sqlite", "ok": False, "integrity": None, "values": {}, "problems": [], "acked_txid": acked_txid}
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
    for key in ("app", "ldev", "acks", "invariants", "db"):
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
            acked = acked_before(meta, cap["times"], t_susp)
            v = check_sqlite(rack.export_bytes(pair["r_site"], pair["r_ldev"]), meta["invariants"], acked, meta["db"])
            out.append({**v, "workload": wl, "pair": pair["name"], "suspended_ns": t_susp})
    return out
