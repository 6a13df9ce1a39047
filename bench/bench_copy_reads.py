"""The initial copy's reads on the master's disks (issue 10, item 8).

A rack of four 256 MiB LDEVs (one 3D+1P group of HP 97560 disks, 64 KiB
tracks) forms its pairs; after ``RUN_MS`` of virtual time we read each
master disk's deepest queue (``queue_max``) and backlog, and the link's
busy share. Two links: the configured 1 Gb/s (the disks are the
bottleneck: four HP 97560 stream about 2.4 MB/s each, the link 125 MB/s),
and 20 Mb/s (the link is the bottleneck).

Targets: the disks' queues stay bounded by the copy window plus its
read-ahead (tens, never thousands); where the link is the bottleneck it
stays >= 90% busy. Before the closed loop (CopyRead) the reads went to the
disks at link speed, so the queues grew without bound.
"""

from __future__ import annotations

import os
import tempfile
import time

from controllers.rack.storage import StorageRack

MS = 1_000_000
RUN_MS = 1_000

CONFIG = """
[rack]
name = "bench-copy-reads"
seed = 1
[defaults]
track_size = "64KiB"
raid = "3D+1P"
groups = 1
spares = 1
ldevs = 4
ldev_size = "256MiB"
disk_preset = "hp97560"
[dkc]
clock = "400MHz"
cycles_per_io = 20000
cycles_per_kib = 2000
channel_latency = "10us"
[[site]]
name = "main"
[[site]]
name = "remote"
[[link]]
name = "link0"
a = "main"
b = "remote"
latency = "500us"
bandwidth = "{bandwidth}"
command_overhead = "20us"
[[group]]
name = "g0"
master = "main"
remote = "remote"
ldevs = [0, 1, 2, 3]
"""


def initial_copy_disks(bandwidth: str = "1Gb/s", run_ms: int = RUN_MS) -> dict:
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="bench-copy-reads-")
    with os.fdopen(fd, "w") as f:
        f.write(CONFIG.replace("{bandwidth}", bandwidth))
    wall0 = time.monotonic()
    try:
        with StorageRack(path, backend="inline") as r:
            disks = r.sites["main"]["disks"][:4]   # the group's members (the spare is idle)
            before = r.rack.query("link0", {})
            t0 = r.now_ns
            r.paircreate("g0")
            r.run(run_ms * MS)
            dur = r.now_ns - t0
            after = r.rack.query("link0", {})
            stats = [r.rack.query(d, {}) for d in disks]
            diff = sum(row.get("diff_tracks", 0) for row in r.pairdisplay())
    finally:
        os.unlink(path)
    # the link charges a transfer when it is queued: count only what went out up to now
    busy = (after["busy_ns"]["main"] - after["backlog_ns"]["main"]) - (before["busy_ns"]["main"] - before["backlog_ns"]["main"])
    sent = after["bytes_sent"]["main"] - before["bytes_sent"]["main"]
    return {"bench": "initial copy reads", "link": bandwidth, "virtual_ms": dur / MS,
            "disk_queue_max": max(s["queue_max"] for s in stats),
            "disk_backlog_ms_max": round(max(s["backlog_ns"] for s in stats) / MS, 1),
            "link_busy_pct": round(100.0 * busy / dur, 1), "link_MB_s": round(sent / (dur / 1e9) / 1e6, 1),
            "tracks_left": diff, "wall_s": round(time.monotonic() - wall0, 2)}


def run() -> list[dict]:
    return [initial_copy_disks("1Gb/s"), initial_copy_disks("20Mb/s")]


def verdicts(rows: list[dict]) -> list[str]:
    fast, slow = rows
    out = [f"disk queues bounded (max {max(r['disk_queue_max'] for r in rows)} <= 64): "
           f"{'met' if max(r['disk_queue_max'] for r in rows) <= 64 else 'NOT met'}",
           f"link-bound copy keeps the link >= 90% busy ({slow['link_busy_pct']}%): "
           f"{'met' if slow['link_busy_pct'] >= 90 else 'NOT met'}",
           f"at 1 Gb/s the disks bound the copy: {fast['link_MB_s']} MB/s over the link"]
    return out


if __name__ == "__main__":
    from tabulate import tabulate
    rows = run()
    print(tabulate(rows, headers="keys"))
    print("\n".join(verdicts(rows)))
