"""Host CPU actor: fio-style workloads, stamped writes, a write log, and
latency per phase.

Every sector a workload writes is stamped (``controllers.formats.stamp``) so a
checker can tell which writes any image holds; every write is logged with
its issue and completion times (``controllers.formats.writelog``). Reads are checked
against the stamps: a read that returns bytes no write put there is counted
as ``bad_reads`` (the campaign invariant "no read returns wrong bytes").
"""

from __future__ import annotations

import numpy as np

from controllers.formats.stamp import make_payload, read_stamps, warm_up
from controllers.formats.traces import map_to_ldevs, read_trace, scale_time
from controllers.formats.writelog import COMPLETE_NS
from controllers.devices.host.workload import Workload, _parse_ldevs, parse_spec
from emu.actor import Actor
from emu.wire import body_problem
from emu.params import Param
from firmware.protocol import SECTOR_BYTES



# the stamp kernels compiled once here, before the processes backend forks
# the host's process (it imports this module first), not in every child
warm_up()


def _ldev_list(text: str) -> list[int]:
    return list(_parse_ldevs(text))
WORKLOADS_MAX = 16
IOS_IN_FLIGHT_MAX = 4096


class HostCpu(Actor):
    KIND = "host-cpu"
    DOC = "Host CPU (patent: 101/111): runs workloads against its site's DKC."
    PARAMS = {
        "site": Param("str", doc="site name"),
        "dkc": Param("str", doc="the DKC this host's channel reaches"),
        "host_index": Param("int", 0, "makes write ids unique across hosts", min=0, max=255),
        "ldev_sectors": Param("list", doc="size of each LDEV in sectors"),
    }
    PORTS = ("dkc",)

    def on_start(self):
        self.workloads: dict[str, dict] = {}
        self.inflight: dict[str, dict] = {}
        self.next_io = 0
        self.write_seq = 0
        self.log: list[list] = []            # rows whose columns are formats.writelog.HEADER
        self.log_index: dict[int, int] = {}
        self.phase = "main"
        self.lat: dict[str, dict[str, list]] = {}
        self.phase_t: dict[str, list[int]] = {}
        self.errors = 0
        self.bad_reads = 0
        self._phase_mark()

    # -- console ------------------------------------------------------------------
    def on_control(self, command):
        cmd = command.get("cmd")
        if cmd == "workload_start":
            return self._start(command.get("name"), command.get("spec", ""))
        if cmd == "workload_stop":
            name = command.get("name")
            if name not in self.workloads:
                return {"ok": False, "error": f"no workload named {name!r} on {self.name}"}
            self.workloads[name]["stopped"] = True
            self.trace("workload.stop", name=name)
            return {"ok": True}
        if cmd == "phase":
            self.phase = str(command.get("name"))
            self._phase_mark()
            return {"ok": True}
        return super().on_control(command)

    def _phase_mark(self):
        self.phase_t.setdefault(self.phase, [self.now_ns, self.now_ns])
        self.lat.setdefault(self.phase, {"read": [], "write": [], "bytes": 0})

    def _start(self, name, spec):
        if not isinstance(name, str) or not name:
            return {"ok": False, "error": "workload needs a name"}
        if name in self.workloads and not self.workloads[name]["stopped"]:
            return {"ok": False, "error": f"workload {name!r} is already running"}
        if len(self.workloads) >= WORKLOADS_MAX and name not in self.workloads:
            return {"ok": False, "error": f"at most {WORKLOADS_MAX} workloads"}
        if "trace=" in spec:
            return self._start_trace(name, spec)
        try:
            wl = Workload(parse_spec(spec), list(self.params["ldev_sectors"]))
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        seed = np.random.SeedSequence([int(self.rng.integers(1 << 32)), wl.spec.seed])
        state = {"wl": wl, "rng": np.random.Generator(np.random.PCG64(seed)), "stopped": False,
                 "open": 0, "issued": 0, "start_ns": self.now_ns}
        self.workloads[name] = state
        self.trace("workload.start", name=name, spec=spec)
        gap = wl.spec.interarrival_ns
        if gap:
            self.set_timer(f"arrive:{name}", 0, name)
        else:
            for _ in range(min(wl.spec.iodepth, IOS_IN_FLIGHT_MAX)):
                self._issue(name)
        return {"ok": True}

    def _start_trace(self, name, spec):
        """Replay a block trace open loop: ``trace=PATH [format=msr|mqsim|tencent]
        [scale=F] [ldevs=0-3] [limit=N]`` (times multiplied by F; volumes and
        LBAs mapped onto the LDEVs by ``controllers.formats.traces.map_to_ldevs``)."""
        opts = dict(tok.split("=", 1) for tok in spec.split() if "=" in tok)
        unknown = sorted(set(opts) - {"trace", "format", "scale", "ldevs", "limit"})
        if unknown:
            return {"ok": False, "error": f"unknown trace replay key(s) {', '.join(unknown)} "
                                          "(trace, format, scale, ldevs, limit)"}
        try:
            records = read_trace(opts["trace"], opts.get("format"))
            records = scale_time(records, float(opts.get("scale", "1")))
            limit = int(opts.get("limit", "100000"))
            ldevs = _ldev_list(opts["ldevs"]) if "ldevs" in opts else None
            ios = map_to_ldevs(records[:limit], list(self.params["ldev_sectors"]), ldevs)
        except (OSError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        self.workloads[name] = {"wl": None, "trace": ios, "pos": 0, "stopped": False, "open": 0,
                                "issued": 0, "start_ns": self.now_ns}
        self.trace("workload.trace", name=name, ios=len(ios))
        if ios:
            self.set_timer(f"replay:{name}", ios[0].time_ns, name)
        return {"ok": True, "ios": len(ios)}

    def _replay_next(self, name):
        st = self.workloads[name]
        ios = st["trace"]
        while not st["stopped"] and st["pos"] < len(ios) and ios[st["pos"]].time_ns <= self.now_ns - st["start_ns"]:
            io = ios[st["pos"]]
            st["pos"] += 1
            self._send_io(name, io.op, io.ldev, io.lba, io.sectors)
        if not st["stopped"] and st["pos"] < len(ios):
            self.set_timer(f"replay:{name}", st["start_ns"] + ios[st["pos"]].time_ns - self.now_ns, name)

    # -- I/O ------------------------------------------------------------------------
    def _expired(self, st) -> bool:
        if st["wl"] is None:
            return st["stopped"] or st["pos"] >= len(st["trace"])
        rt = st["wl"].spec.runtime_ns
        return st["stopped"] or (rt is not None and self.now_ns - st["start_ns"] >= rt)

    def _issue(self, name):
        st = self.workloads[name]
        if self._expired(st) or len(self.inflight) >= IOS_IN_FLIGHT_MAX:
            return
        op, ldev, lba, sectors = st["wl"].next_io(st["rng"])
        self._send_io(name, op, ldev, lba, sectors)

    def _send_io(self, name, op, ldev, lba, sectors):
        st = self.workloads[name]
        self.next_io += 1
        ident = f"{self.name}#{self.next_io}"
        body = {"id": ident, "op": op, "ldev": ldev, "lba": lba, "sectors": sectors}
        io = {"wl": name, "op": op, "t0": self.now_ns, "ldev": ldev, "lba": lba, "sectors": sectors}
        if op == "write":
            self.write_seq += 1
            wid = (self.params["host_index"] << 48) | self.write_seq
            body["data"] = make_payload(ldev, lba, sectors, wid)
            io["wid"] = wid
            self.log_index[wid] = len(self.log)
            self.log.append([wid, self.params["site"], ldev, lba, sectors, self.now_ns, None])
        self.inflight[ident] = io
        st["open"] += 1
        st["issued"] += 1
        self.send(self.params["dkc"], "io", body)

    def on_timer(self, name, data):
        if name.startswith("replay:"):
            self._replay_next(data)
            return
        st = self.workloads.get(data)
        if st is None or self._expired(st):
            return
        if st["open"] < st["wl"].spec.iodepth:
            self._issue(data)
        self.set_timer(name, st["wl"].spec.interarrival_ns, data)

    def on_message(self, src, kind, body):
        if kind != "io_done" or body_problem(body, {"id": (object,)}) is not None:
            self.errors += 1   # malformed input: counted and dropped at the boundary
            return
        io = self.inflight.pop(body.get("id"), None)
        if io is None:
            self.errors += 1
            return
        st = self.workloads[io["wl"]]
        st["open"] -= 1
        if body.get("ok"):
            self._complete(io, body)
        else:
            self.errors += 1
            self.trace("io.error", op=io["op"], ldev=io["ldev"], lba=io["lba"], error=body.get("error"))
        if st["wl"] is not None and st["wl"].spec.interarrival_ns is None:
            self._issue(io["wl"])

    def _complete(self, io, body):
        rt = self.now_ns - io["t0"]
        self.lat[self.phase][io["op"]].append(rt)
        self.lat[self.phase]["bytes"] += io["sectors"] * SECTOR_BYTES
        self.phase_t[self.phase][1] = self.now_ns
        if io["op"] == "write":
            self.log[self.log_index[io["wid"]]][COMPLETE_NS] = self.now_ns
        elif body.get("data") is not None:
            self._check_read(io, body["data"])

    def _check_read(self, io, data):
        """A read must return, per sector, the stamp of a write this host
        issued there or zeros (never written); anything else is wrong bytes."""
        ids = read_stamps(np.frombuffer(data, dtype=np.uint8), io["ldev"], io["lba"])
        if (ids < 0).any():
            self.bad_reads += 1
            self.trace("io.bad_read", ldev=io["ldev"], lba=io["lba"])

    def on_query(self, q):
        what = q.get("q")
        if what == "writelog":
            return {"rows": self.log}
        if what == "stats":
            return {"phases": {p: {"read": v["read"], "write": v["write"], "bytes": v["bytes"], "t": self.phase_t[p]}
                               for p, v in self.lat.items()},
                    "errors": self.errors, "bad_reads": self.bad_reads,
                    "inflight": len(self.inflight),
                    "workloads": {n: {"issued": s["issued"], "open": s["open"], "stopped": self._expired(s)}
                                  for n, s in sorted(self.workloads.items())}}
        return super().on_query(q)
