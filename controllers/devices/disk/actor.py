"""Small disk (and spare disk) actor: mechanical timing of each request.

The media live in a shared-memory region that the DKC reads and writes
directly (payload bytes never travel inside a site); the disk actor models
*when* each transfer completes, with the Ruemmler & Wilkes / DiskSim model
in ``controllers.devices.disk.model``. A failed disk answers every request with an
error; a killed disk process answers nothing (the DKC times it out).
"""

from __future__ import annotations

import numbers

from controllers.devices.disk.disksim import load as load_spec
from controllers.devices.disk.model import PRESETS, DiskModel
from emu.actor import Actor, Promise
from emu.params import Param
from emu.wire import body_problem

QUEUE_DEPTH_MAX = 4096


class SmallDisk(Actor):
    KIND = "small-disk"
    DOC = "A small disk of a RAID5 group, or a spare (role='spare'): save area and rebuild target."
    PARAMS = {
        "preset": Param("choice", "hp97560", "mechanical preset", choices=tuple(sorted(PRESETS))),
        "model": Param("str", "", "DiskSim 4.0 .parv/.diskspecs file (absolute path); overrides preset"),
        "role": Param("choice", "member", "member of a parity group, or spare", choices=("member", "spare")),
        "dkc": Param("str", doc="the DKC actor this disk answers to"),
    }
    PORTS = ("dkc",)

    def on_start(self):
        spec = self.params["model"]
        self.model = DiskModel(load_spec(spec) if spec else PRESETS[self.params["preset"]])
        self.failed = False
        self.busy_ns = 0
        self.ios = 0
        self.queued = 0
        self.queue_max = 0
        self.errors = 0
        self.refused = 0
        #: no answer comes sooner than this after a request (the drive's overheads)
        self.min_service_ns = self.model.min_service_ns()

    def promise(self) -> Promise:
        """A request is answered no sooner than the drive's least service
        time, a failed drive's error included: the DKC's scheduler horizon
        towards its disks is that long, not only the bus latency."""
        return Promise(reaction_ns=self.min_service_ns)

    def on_message(self, src, kind, body):
        if kind != "io" or body_problem(body, _IO_FIELDS) is not None:
            self.errors += 1   # malformed input: counted and dropped at the boundary
            return
        if self.failed:   # the controller still takes its command time to report the error
            self.refused += 1
            self.set_timer(f"x{self.refused}", self.min_service_ns, [src, body.get("id"), "disk failed"])
            return
        lba = int(body["lba"]) % self.model.lba_count
        sectors = max(1, min(int(body["sectors"]), 2048))
        res = self.model.access(self.now_ns, "W" if body.get("op") == "w" else "R", lba, sectors)
        self.ios += 1
        self.busy_ns += res.service_ns
        self.queued += 1
        self.queue_max = max(self.queue_max, self.queued)
        self.set_timer(f"q{self.ios}", res.done_ns - self.now_ns, [src, body.get("id")])

    def on_timer(self, name, data):
        if len(data) == 3:   # refused while failed
            src, ident, error = data
            self.send(src, "io_done", {"id": ident, "ok": False, "error": error})
            return
        src, ident = data
        self.queued -= 1
        if ident is not None:
            self.send(src, "io_done", {"id": ident, "ok": not self.failed})

    def on_control(self, command):
        if command.get("cmd") == "fail":
            self.failed = True
            self.trace("disk.failed")
            return {"ok": True}
        if command.get("cmd") == "replace":
            self.failed = False
            self.trace("disk.replaced")
            return {"ok": True}
        return super().on_control(command)

    def on_query(self, q):
        """busy_ns counts service time up to now; work already queued beyond
        now is reported as backlog_ns (an overloaded disk shows it growing)."""
        backlog = max(0, self.model.busy_until_ns - self.now_ns)
        return {"ios": self.ios, "busy_ns": self.busy_ns - min(backlog, self.busy_ns), "backlog_ns": backlog,
                "queue_max": self.queue_max,
                "failed": self.failed, "role": self.params["role"]}


#: ``int`` first: an exact int is accepted without the ABC's slower check
_INT = (int, numbers.Integral)
#: what a disk request must carry (checked in ``on_message``)
_IO_FIELDS = {"id": (object,), "lba": _INT, "sectors": _INT}
