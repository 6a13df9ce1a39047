"""The device registry: every kind of hardware the storage product has, in
one table. Adding a device is one module plus one entry here; the rack
layout (class paths), the processes backend's preload list, ``emu info`` and
the report's device statistics all read this table.

An entry says where the actor class is, which report section its figures
go to, the query that fetches them and how they become one report row.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


def _disk_row(q: dict, now_ns: int) -> dict:
    return {"ios": q["ios"], "busy_pct": round(100.0 * q["busy_ns"] / now_ns, 2),
            "backlog_ms": round(q["backlog_ns"] / 1e6, 3),
            "queue_max": q["queue_max"], "failed": q["failed"], "role": q["role"]}


def _link_row(q: dict, now_ns: int) -> dict:
    return {"up": q["up"], "commands": q["commands"], "bytes": q["bytes_sent"],
            "util_pct": {s: round(100.0 * b / now_ns, 2) for s, b in sorted(q["busy_ns"].items())}}


def _dkc_row(q: dict, now_ns: int) -> dict:
    st = q["stats"]
    return {**st, "cache_hit_pct": round(100.0 * st["read_hits"] / max(1, st["reads"]), 2),
            "raid": q["raid"], "double_faults": q["double_faults"]}


@dataclass(frozen=True)
class Device:
    kind: str                          # registry key, used by the layout
    path: str                          # "module:Class" of the actor
    report: str | None = None          # section of the report's "devices" (None: not reported)
    query: dict = field(default_factory=dict)   # the query whose answer ``row`` turns into figures
    row: Callable[[dict, int], dict] | None = None

    @property
    def module(self) -> str:
        return self.path.split(":", 1)[0]

    def load(self):
        """The actor class."""
        module, name = self.path.split(":", 1)
        return getattr(importlib.import_module(module), name)


DEVICES: dict[str, Device] = {d.kind: d for d in (
    Device("host", "controllers.devices.host.actor:HostCpu"),
    Device("dkc", "controllers.devices.dkc.actor:Dkc", "dkcs", {"q": "stats"}, _dkc_row),
    Device("disk", "controllers.devices.disk.actor:SmallDisk", "disks", {}, _disk_row),
    Device("link", "controllers.devices.link:Link", "links", {}, _link_row),
    Device("svp", "controllers.devices.svp:Svp"),
)}

#: the report's device sections, in the order the report shows them
REPORT_SECTIONS = ("disks", "links", "dkcs")
assert sorted(REPORT_SECTIONS) == sorted(d.report for d in DEVICES.values() if d.report)

#: modules a forked actor process needs besides the devices (numba kernels compiled once)
EXTRA_PRELOAD = ("firmware.raid.parity",)


def class_path(kind: str) -> str:
    return DEVICES[kind].path


def by_path(path: str) -> Device | None:
    """The entry whose actor class is ``path`` (None for a non-storage actor)."""
    for dev in DEVICES.values():
        if dev.path == path:
            return dev
    return None


def preload_modules() -> list[str]:
    """What the processes backend imports before it forks the actors."""
    return sorted({d.module for d in DEVICES.values()} | set(EXTRA_PRELOAD))


def actor_classes() -> list[type]:
    return [d.load() for d in DEVICES.values()]
