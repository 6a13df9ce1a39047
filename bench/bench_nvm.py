"""NVM bytes written per event (issue 11: the firmware's non-volatile state
as the patent's tables, persisted in place).

configs/two-site.toml with the reference load (sync pairs, randrw 70/30
4 KiB iodepth 32), then the patent's story: link cut, writes while
suspended, resync with save-old, until the copy completes. Every DKC
counts the bytes it writes into its NVM region (``nvm_bytes_written`` in
its stats) and its commits; the row divides their sum by the events every
actor of the rack handled in the same run. Target: persistence costs
O(changes): bytes per event stay far below the firmware state's size.

Measured on 2 shared cores, back to back, same 18626 events (issue 11):
the pickle of the whole firmware per round wrote 116647 bytes per event in
the processes backend (254441 per commit) and 3748 inline; the tables in
place write 639 (2665 per commit) and 491. Wall 12.83 -> 10.26 s
(processes), 4.64 -> 3.16 s (inline).

The write-ahead record of each host write (a master killed between its
media write and the round's commit, issue 11), back to back, same 18626
events: 626.4 -> 629.7 bytes per event (processes), 491.1 -> 494.4
(inline), commits unchanged (3936 and 549).
"""

from __future__ import annotations

import time
from pathlib import Path

from controllers.rack.storage import StorageRack

MS = 1_000_000
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "two-site.toml"
LOAD = "rw=randrw rwmixread=70 bs=4KiB iodepth=32 ldevs=0-3 seed=5"


def _nvm(r: StorageRack) -> tuple[int, int]:
    dkcs = r.device_stats()["dkcs"]
    return (sum(row["nvm_bytes_written"] for row in dkcs.values()),
            sum(row["nvm_commits"] for row in dkcs.values()))


def story(backend: str, load_ms: int = 300) -> dict:
    wall0 = time.monotonic()
    with StorageRack(CONFIG, backend=backend) as r:
        r.paircreate("g0")
        r.wait_mirrored("g0")
        r.workload_start("w", LOAD)
        r.run(load_ms * MS)
        b_mirror, c_mirror = _nvm(r)
        ev_mirror = r.rack.events_handled
        r.fault_link("down")
        r.run(100 * MS)
        r.workload_stop("w")
        r.run(10 * MS)
        r.fault_link("up")
        r.pairresync("g0", window=8)
        r.run_until("recovery.complete", 20_000 * MS)
        b_all, c_all = _nvm(r)
        ev_all = r.rack.events_handled
    return {"bench": "nvm bytes per event", "backend": backend, "load_ms": load_ms,
            "events": ev_all, "nvm_commits": c_all, "nvm_bytes": b_all,
            "bytes_per_event": round(b_all / max(1, ev_all), 1),
            "bytes_per_event_mirroring": round(b_mirror / max(1, ev_mirror), 1),
            "bytes_per_commit": round(b_all / max(1, c_all), 1),
            "wall_s": round(time.monotonic() - wall0, 2)}


def run() -> list[dict]:
    return [story("inline"), story("processes")]


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        out.append(f"{row['backend']}: {row['bytes_per_event']} NVM bytes per event "
                   f"({row['bytes_per_commit']} per commit, {row['nvm_commits']} commits)")
    return out
