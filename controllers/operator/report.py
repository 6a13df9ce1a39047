"""Run reports: per phase, per device, per recovery copy, and the verify
verdict; as tables (tabulate) and as JSON (``--json``, schema below).

Everything in the report comes from virtual time and the rack's own
counters, so the same config, script and seed give the same JSON; the only
wall-clock figures live under the ``"wall"`` key.
"""

from __future__ import annotations

import re

import numpy as np
from tabulate import tabulate

from controllers.rack.storage import StorageRack, latency_summary
from emu import units
from controllers.verify.rack_verify import verify_rack

SCHEMA = {
    "type": "object",
    "required": ["phases", "recovery", "verify", "devices", "trace_sha256"],
    "properties": {
        "phases": {"type": "array", "items": {"type": "object", "required": [
            "name", "start_ns", "end_ns", "ios", "iops", "mb_s", "lat_us"]}},
        "recovery": {"type": "array"},
        "verify": {"type": "object", "required": ["consistent"]},
        "devices": {"type": "object"},
        "trace_sha256": {"type": "string"},
    },
}
LAT_KEYS = ("mean", "p50", "p99", "p999", "max")


def validate_report(report: dict) -> list[str]:
    """Problems with ``report`` against ``SCHEMA`` (empty when valid)."""
    problems = []
    for key in SCHEMA["required"]:
        if key not in report:
            problems.append(f"missing key {key!r}")
    for i, ph in enumerate(report.get("phases", [])):
        for key in SCHEMA["properties"]["phases"]["items"]["required"]:
            if key not in ph:
                problems.append(f"phases[{i}] missing {key!r}")
        for key in LAT_KEYS:
            if not isinstance(ph.get("lat_us", {}).get(key), (int, float)):
                problems.append(f"phases[{i}].lat_us.{key} is not a number")
    if not isinstance(report.get("verify", {}).get("consistent"), (bool, type(None))):
        problems.append("verify.consistent is not a boolean")
    if not isinstance(report.get("trace_sha256"), str):
        problems.append("trace_sha256 is not a string")
    return problems


def _phases(rack: StorageRack) -> list[dict]:
    marks = list(rack.phase_marks)
    stats = rack.host_stats()
    out = []
    for i, (name, start) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else rack.now_ns
        lat, nbytes = [], 0
        for site in sorted(stats):
            ph = stats[site]["phases"].get(name)
            if ph:
                lat += ph["read"] + ph["write"]
                nbytes += ph["bytes"]
        dur_s = max(1, end - start) / 1e9
        ios = len(lat)
        out.append({"name": name, "start_ns": start, "end_ns": end, "ios": ios,
                    "iops": round(ios / dur_s, 1), "mb_s": round(nbytes / dur_s / 1e6, 3),
                    "lat_us": latency_summary(lat)})
    return out


def _recovery(rack: StorageRack) -> list[dict]:
    out = []
    try:
        plans = rack.show("recovery-plan")
    except Exception:   # a site down: report what is reachable
        plans = {}
    for site, plan in sorted(plans.items()):
        if site == "groups":   # the on-demand 404 plans: shown by the console, not copies that ran
            continue
        for s in plan.get("sessions", []):
            out.append({"site": site, "role": "master", **{k: s[k] for k in ("sid", "kind", "remote", "phase",
                                                                           "window", "order")},
                        "n": s["plan"].get("n"), "capacity_tracks": s["plan"].get("capacity_tracks"),
                        "reached": s["reached"], "waiting": s["waiting"]})
        last = plan.get("last_remote")
        if last:
            out.append({"site": site, "role": "remote", **last})
    return out


def natural_key(name: str) -> list:
    """remote.disk2 before remote.disk10 (numbers compare as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def build_report(rack: StorageRack, verify: bool = True) -> dict:
    v = rack.last_verify if rack.last_verify is not None or not verify else None
    if verify and v is None:
        v = verify_rack(rack)
    return {
        "config": rack.config_path, "seed": rack.spec.seed, "backend": rack.rack.backend.name,
        "now_ns": rack.now_ns,
        "phases": _phases(rack),
        "recovery": _recovery(rack),
        "verify": v or {"consistent": None},
        "devices": rack.device_stats(),
        "faults": [{k: f[k] for k in ("time_ns", "actor", "fault")} for f in rack.rack.faults],
        "events": rack.events,
        "trace_sha256": rack.rack.finish_trace(),
        "wall": {"events_handled": rack.rack.events_handled},
    }


def render_report(report: dict) -> str:
    parts = [f"report: {report['config']} seed {report['seed']} backend {report['backend']} "
             f"at {units.fmt_ns(report['now_ns'])}"]
    rows = [[p["name"], units.fmt_ns(p["end_ns"] - p["start_ns"]), p["ios"], p["iops"], p["mb_s"],
             *[p["lat_us"][k] for k in LAT_KEYS]] for p in report["phases"]]
    parts.append(tabulate(rows, headers=["Phase", "Duration", "I/Os", "IOPS", "MB/s", "lat mean us",
                                         "p50", "p99", "p99.9", "max"]))
    dev = report["devices"]
    rows = [[n, d["role"], d["ios"], d["busy_pct"], d["queue_max"], d["backlog_ms"], "yes" if d["failed"] else ""]
            for n, d in sorted(dev.get("disks", {}).items(), key=lambda kv: natural_key(kv[0]))]
    if rows:
        parts.append(tabulate(rows, headers=["Disk", "Role", "I/Os", "Busy %", "Queue max", "Backlog ms", "Failed"]))
    rows = [[n, "up" if ln["up"] else "DOWN", ln["commands"],
             " ".join(f"{s}:{b}" for s, b in sorted(ln["bytes"].items())),
             " ".join(f"{s}:{u}%" for s, u in sorted(ln["util_pct"].items()))]
            for n, ln in sorted(dev.get("links", {}).items())]
    if rows:
        parts.append(tabulate(rows, headers=["Link", "State", "Commands", "Bytes sent", "Utilisation"]))
    rows = [[n, d["reads"], d["writes"], d["cache_hit_pct"], d["disk_ios"], len(d["double_faults"])]
            for n, d in sorted(dev.get("dkcs", {}).items())]
    if rows:
        parts.append(tabulate(rows, headers=["DKC", "Reads", "Writes", "Cache hit %", "Disk I/Os",
                                             "Double faults"]))
    rows = [[r["site"], r["role"], r.get("sid"), r.get("outcome", r.get("phase")), r.get("n", "-"),
             r.get("window", "-"), ",".join(r.get("reached", [])) or "-",
             ",".join(r.get("rolled_back", [])) or "-"] for r in report["recovery"]]
    if rows:
        parts.append(tabulate(rows, headers=["Site", "Role", "Copy", "Outcome/phase", "n", "Window",
                                             "Reached", "Rolled back"]))
    v = report["verify"]
    if v.get("consistent") is not None:
        parts.append(f"verify: {'consistent' if v['consistent'] else 'INCONSISTENT'}")
    parts.append(f"trace sha256 {report['trace_sha256']}")
    return "\n\n".join(parts)


def _cdf(values):
    a = np.sort(np.asarray(values, dtype=float))
    return a, np.arange(1, len(a) + 1) / max(1, len(a))
