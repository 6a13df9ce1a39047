"""Recovery-copy link utilisation (W=1, the patent's stop-and-wait 408/409,
vs W=32 outstanding tracks) over a 1 ms RTT, 1 Gb/s link; and the sync
write latency against its closed form from the configured costs.

Targets (issue: firmware; issue 10 item 7 for time order): W=32 keeps the
link >= 90% busy during the copy, in bitmap order and in time order (the
time-series queue's 4 KiB updates batched per track);
measured sync latency = channel + master CPU + link + remote CPU + link +
master CPU + channel within 1%.
"""

from __future__ import annotations

import os
import tempfile
import time

from controllers.devices.link import message_bytes
from controllers.rack.storage import StorageRack
from firmware.protocol import MsgKind

MS = 1_000_000

CONFIG = """
[rack]
name = "bench-recovery"
seed = 1
[defaults]
track_size = "64KiB"
raid = "3D+1P"
ldevs = 4
ldev_size = "4MiB"
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
latency = "500us"            # 1 ms round trip
bandwidth = "1Gb/s"
command_overhead = "20us"
[[group]]
name = "g0"
master = "main"
remote = "remote"
ldevs = [0, 1, 2, 3]
[recovery]
max_time = "30s"
"""


def _config_file() -> str:
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="bench-recovery-")
    with os.fdopen(fd, "w") as f:
        f.write(CONFIG)
    return path


def _mirrored(path: str, backend: str) -> StorageRack:
    """A rack whose pairs have finished their initial copy."""
    r = StorageRack(path, backend=backend)
    r.paircreate("g0")
    r.run_until("pair.mirroring", 10_000 * MS)
    r.run(1_000 * MS)
    return r


def recovery_utilisation(window: int, backend: str = "inline", order: str = "bitmap") -> dict:
    path = _config_file()
    try:
        with _mirrored(path, backend) as r:
            r.fault_link("down")
            r.set("order", order)
            # time order replays the updates themselves (4 KiB each, Fig. 12);
            # bitmap order copies whole tracks
            fill = "rw=randwrite bs=4KiB iodepth=8 ldevs=0-3 seed=3" if order == "time" else \
                "rw=write bs=64KiB iodepth=8 ldevs=0-3"
            r.workload_start("fill", fill)
            r.run(100 * MS)
            r.workload_stop("fill")
            r.run(10 * MS)
            r.fault_link("up")
            r.run(5 * MS)
            before = r.rack.query("link0", {})
            diff = sum(row.get("diff_tracks", 0) for row in r.pairdisplay())
            t0 = r.now_ns
            wall0 = time.monotonic()
            r.pairresync("g0", window=window)
            t1 = r.run_until("recovery.complete", 60_000 * MS)
            wall = time.monotonic() - wall0
            after = r.rack.query("link0", {})
    finally:
        os.unlink(path)
    dur = t1 - t0
    busy = after["busy_ns"]["main"] - before["busy_ns"]["main"]
    sent = after["bytes_sent"]["main"] - before["bytes_sent"]["main"]
    return {"bench": "recovery copy", "order": order, "window": window, "tracks": diff, "duration_ms": dur / MS,
            "link_busy_pct": round(100.0 * busy / dur, 1),
            "goodput_pct": round(100.0 * sent * 8 / (after["bandwidth_bps"] * dur / 1e9), 1),
            "wall_s": round(wall, 2)}


def sync_latency(backend: str = "inline") -> dict:
    """Closed loop, one write outstanding: no queueing anywhere, so the mean
    latency must equal the sum of the configured costs on the path."""
    path = _config_file()
    try:
        with _mirrored(path, backend) as r:
            r.phase("sync")
            r.workload_start("w", "rw=randwrite bs=4KiB iodepth=1 ldevs=0-3 seed=2")
            r.run(500 * MS)
            r.workload_stop("w")
            r.run(10 * MS)
            lat = r.host_stats()["main"]["phases"]["sync"]["write"]
            link = r.rack.query("link0", {})
            cost = r.storage.dkc
            ln = r.storage.links[0]
    finally:
        os.unlink(path)
    measured = sum(lat) / len(lat)
    expected = closed_form_sync_ns(cost, ln, 4096)
    return {"bench": "sync write latency", "writes": len(lat), "measured_us": round(measured / 1000, 3),
            "closed_form_us": round(expected / 1000, 3),
            "error_pct": round(100.0 * abs(measured - expected) / expected, 4)}


def closed_form_sync_ns(cost: dict, ln: dict, bs: int) -> int:
    """local + link round trip + remote write, from the config's numbers."""
    def cpu(nbytes: int) -> int:
        return (cost["cycles_per_io"] + cost["cycles_per_kib"] * nbytes // 1024) * 1_000_000_000 // cost["clock_hz"]

    def wire(nbytes: int) -> int:
        return ln["overhead_ns"] + nbytes * 8 * 1_000_000_000 // ln["bandwidth_bps"]

    write_msg = {"kind": MsgKind.RC_WRITE.value, "seq": 0, "pieces": [["p0", 0, 0, b"\0" * bs]]}
    ack_msg = {"kind": MsgKind.RC_WRITE_ACK.value, "seq": 0, "ok": True, "error": None}
    port = 1_000  # controllers.rack.layout.PORT_LATENCY_NS
    w, a = message_bytes(write_msg), message_bytes(ack_msg)
    return (cost["channel_latency_ns"] + cpu(w) + port + wire(w) + ln["propagation_ns"]
            + cpu(a) + port + wire(a) + ln["propagation_ns"] + cpu(0) + cost["channel_latency_ns"])


def run() -> list[dict]:
    rows = [recovery_utilisation(1), recovery_utilisation(32),
            recovery_utilisation(1, order="time"), recovery_utilisation(32, order="time")]
    for row in rows[1], rows[3]:
        row["target"] = "link busy >= 90%"
        row["met"] = row["link_busy_pct"] >= 90.0
    s = sync_latency()
    s["target"] = "within 1% of closed form"
    s["met"] = s["error_pct"] <= 1.0
    return rows + [s]


if __name__ == "__main__":
    from tabulate import tabulate
    for row in run():
        print(tabulate([row], headers="keys"))
