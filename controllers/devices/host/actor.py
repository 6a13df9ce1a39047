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

from controllers.formats.capture import CaptureError, ack_order, happens_before, load_capture
from controllers.formats.stamp import bad_stamps, make_payload, warm_up
from controllers.formats.traces import map_to_ldevs, read_trace, scale_time
from controllers.formats.writelog import COMPLETE_NS
from controllers.devices.host.workload import Workload, _parse_ldevs, parse_spec
from emu.actor import Actor
from emu.params import Param
from firmware.protocol import SECTOR_BYTES



# the stamp kernels compiled once here, before the processes backend forks
# the host's process (it imports this module first), not in every child
warm_up()


def _ldev_list(text: str) -> list[int]:
    return list(_parse_ldevs(text))
WORKLOADS_MAX = 16
IOS_IN_FLIGHT_MAX = 4096
#: front-end requests (``controllers.frontends``) this host keeps in flight at most
FE_IN_FLIGHT_MAX = 4096
#: a front-end request the DKC never answers (its process killed) fails after this
FE_TIMEOUT_NS = 30 * 10 ** 9
#: what a front-end client may ask; FLUSH/TRIM go to the DKC as they are
FE_OPS = ("read", "write", "flush", "trim")
#: the front-end request flag "forced unit access" (as in controllers.formats.capture)
FE_FUA = 1
#: the signal raised when front-end completions are waiting to be taken
FE_SIGNAL = "frontend.done"


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
        #: writes of client bytes (capture replays), which carry no stamps:
        #: [site, ldev, lba, sectors, issue_ns, complete_ns, workload, capture seq]
        self.raw_log: list[list] = []
        self.phase = "main"
        self.lat: dict[str, dict[str, list]] = {}
        self.phase_t: dict[str, list[int]] = {}
        self.errors = 0
        self.bad_reads = 0
        #: front-end requests: DKC request id -> state; completions not yet taken
        self.fe_inflight: dict[str, dict] = {}
        self.fe_done: list[list] = []
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
        if cmd == "fe":
            return self._fe(command.get("ios"))
        if cmd == "phase":
            self.phase = str(command.get("name"))
            self._phase_mark()
            return {"ok": True}
        return super().on_control(command)

    # -- front-end requests (an outside client's own bytes, no stamps) -----------------
    def _fe(self, ios) -> dict:
        """Submit front-end requests ``[tag, op, ldev, lba, sectors, flags, data]``
        at the current virtual time and take the completions waiting, each
        ``[tag, ok, error, data, ack_ns]``. A request that does not fit is
        answered at once with its error; nothing here can fail the actor."""
        if not isinstance(ios, list):
            return {"ok": False, "error": "fe: ios must be a list"}
        for io in ios:
            problem = self._fe_problem(io)
            if problem is not None:
                tag = io[0] if isinstance(io, list) and io else None
                self._fe_answer(tag, False, problem, None)
            else:
                self._fe_send(*io)
        done, self.fe_done = self.fe_done, []
        return {"ok": True, "done": done}

    def _fe_problem(self, io) -> str | None:
        if not isinstance(io, list) or len(io) != 7:
            return "a front-end request is [tag, op, ldev, lba, sectors, flags, data]"
        tag, op, ldev, lba, sectors, flags, data = io
        if op not in FE_OPS:
            return f"unknown op {op!r} ({', '.join(FE_OPS)})"
        sizes = self.params["ldev_sectors"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (tag, ldev, lba, sectors, flags)):
            return "tag, ldev, lba, sectors and flags must be integers"
        if not 0 <= ldev < len(sizes):
            return f"no LDEV {ldev} at {self.params['site']} (0..{len(sizes) - 1})"
        if lba < 0 or sectors < (0 if op == "flush" else 1) or lba + sectors > sizes[ldev]:
            return f"sectors {lba}+{sectors} outside LDEV {ldev} ({sizes[ldev]} sectors)"
        if op == "write" and (not isinstance(data, bytes) or len(data) != sectors * SECTOR_BYTES):
            return f"a write of {sectors} sectors needs {sectors * SECTOR_BYTES} bytes of data"
        if len(self.fe_inflight) >= FE_IN_FLIGHT_MAX:
            return f"busy: {FE_IN_FLIGHT_MAX} front-end requests in flight"
        return None

    def _fe_send(self, tag, op, ldev, lba, sectors, flags, data) -> None:
        ident = f"{self.name}#f{tag}"
        body = {"id": ident, "op": op, "ldev": ldev, "lba": lba, "sectors": sectors}
        if op == "write":
            body["data"] = data
        self.fe_inflight[ident] = {"tag": tag, "op": op, "t0": self.now_ns, "ldev": ldev, "lba": lba,
                                   "sectors": sectors, "fua": bool(flags & FE_FUA), "stage": "io"}
        if op == "write":   # client bytes: no stamp checker can judge this LDEV (verify says so)
            self.fe_inflight[ident]["raw"] = len(self.raw_log)
            self.raw_log.append([self.params["site"], ldev, lba, sectors, self.now_ns, None, "frontend", tag])
        self.set_timer(f"fe:{tag}", FE_TIMEOUT_NS, ident)
        self.send(self.params["dkc"], "io", body)

    def _fe_io_done(self, ident, body) -> None:
        io = self.fe_inflight[ident]
        ok = bool(body.get("ok"))
        if ok and io["fua"] and io["stage"] == "io":
            # FUA: the write is answered once its tracks are destaged (a FLUSH of its range)
            io["stage"] = "fua"
            self.send(self.params["dkc"], "io", {"id": ident, "op": "flush", "ldev": io["ldev"],
                                                 "lba": io["lba"], "sectors": io["sectors"]})
            return
        del self.fe_inflight[ident]
        self.cancel_timer(f"fe:{io['tag']}")
        if ok and "raw" in io:
            self.raw_log[io["raw"]][5] = self.now_ns
        if ok and io["op"] in ("read", "write"):
            self.lat[self.phase][io["op"]].append(self.now_ns - io["t0"])
            self.lat[self.phase]["bytes"] += io["sectors"] * SECTOR_BYTES
            self.phase_t[self.phase][1] = self.now_ns
        if not ok:
            self.errors += 1
            self.trace("fe.error", op=io["op"], ldev=io["ldev"], lba=io["lba"], error=body.get("error"))
        data = body.get("data") if ok and io["op"] == "read" else None
        self._fe_answer(io["tag"], ok, None if ok else str(body.get("error")), data)

    def _fe_answer(self, tag, ok: bool, error: str | None, data) -> None:
        if not self.fe_done:
            self.signal(FE_SIGNAL)   # once per batch the front-end takes, not per request
        self.fe_done.append([tag, ok, error, None if data is None else bytes(data), self.now_ns])

    def _fe_timeout(self, ident) -> None:
        io = self.fe_inflight.pop(ident, None)
        if io is not None:
            self.errors += 1
            self.trace("fe.timeout", op=io["op"], ldev=io["ldev"], lba=io["lba"])
            self._fe_answer(io["tag"], False, f"no answer from the DKC within {FE_TIMEOUT_NS // 10 ** 9} s", None)

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
        if "trace=" in spec and "format=capture" in spec.split():
            return self._start_capture(name, spec)
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

    def _start_capture(self, name, spec):
        """Replay a front-end capture (``controllers.formats.capture``):
        ``trace=PATH format=capture``. Each request is issued at its arrival
        time relative to the first, but never before every request acknowledged
        before its arrival has completed here (happens-before: flush and FUA
        barriers keep their meaning); writes carry the captured bytes, reads
        are issued and timed, flush and trim are barriers only (the LDEV's
        bytes are not changed by a trim: NBD lets a trimmed range read back
        anything)."""
        opts = dict(tok.split("=", 1) for tok in spec.split() if "=" in tok)
        unknown = sorted(set(opts) - {"trace", "format"})
        if unknown:
            return {"ok": False, "error": f"unknown capture replay key(s) {', '.join(unknown)} (trace, format)"}
        path = opts["trace"]
        try:
            header, recs = load_capture(path)
        except CaptureError as exc:
            return {"ok": False, "error": str(exc)}
        sizes = list(self.params["ldev_sectors"])
        for r in recs:
            problem = None
            if r.ldev >= len(sizes) or (r.offset + r.length) > sizes[r.ldev] * SECTOR_BYTES:
                problem = f"ldev {r.ldev} extent {r.offset}+{r.length} is not inside this site's LDEVs"
            elif r.op in ("read", "write") and (r.offset % SECTOR_BYTES or r.length % SECTOR_BYTES):
                problem = f"a {r.op} at {r.offset}+{r.length} is not {SECTOR_BYTES}-byte aligned"
            if problem:
                return {"ok": False, "error": f"{path}: record {r.seq}: {problem}"}
        recs.sort(key=lambda r: (r.arrival_ns, r.seq))
        st = {"wl": None, "capture": path, "trace": recs, "need": happens_before(recs),
              "ack_order": ack_order(recs), "done": bytearray(len(recs)), "prefix": 0, "pos": 0,
              "t0": recs[0].arrival_ns if recs else 0, "times": [[r.seq, None, None] for r in recs],
              "stopped": False, "open": 0, "issued": 0, "start_ns": self.now_ns}
        self.workloads[name] = st
        self.trace("workload.capture", name=name, requests=len(recs), source=header["source"])
        self._capture_next(name)
        return {"ok": True, "ios": len(recs)}

    def _capture_next(self, name):
        """Issue every request that is due and whose happens-before prefix has completed."""
        st = self.workloads[name]
        recs = st["trace"]
        while not st["stopped"] and st["pos"] < len(recs):
            i = st["pos"]
            if st["need"][i] > st["prefix"]:
                return            # a completion calls again
            due = st["start_ns"] + recs[i].arrival_ns - st["t0"]
            if due > self.now_ns:
                self.set_timer(f"replay:{name}", due - self.now_ns, name)
                return
            st["pos"] += 1
            self._issue_captured(name, i)

    def _issue_captured(self, name, i):
        st = self.workloads[name]
        r = st["trace"][i]
        st["times"][i][1] = self.now_ns
        if r.op in ("flush", "trim"):
            st["issued"] += 1
            self._captured_done(name, i)
            return
        self._send_io(name, r.op, r.ldev, r.offset // SECTOR_BYTES, r.length // SECTOR_BYTES,
                      data=r.data, cap=i)

    def _captured_done(self, name, i):
        st = self.workloads[name]
        st["times"][i][2] = self.now_ns
        st["done"][i] = 1
        order = st["ack_order"]
        while st["prefix"] < len(order) and st["done"][order[st["prefix"]]]:
            st["prefix"] += 1

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

    def _send_io(self, name, op, ldev, lba, sectors, data=None, cap=None):
        """One I/O to the DKC; ``data`` (client bytes of a capture replay, request
        ``cap``) goes to the raw log, since it carries no stamps."""
        st = self.workloads[name]
        self.next_io += 1
        ident = f"{self.name}#{self.next_io}"
        body = {"id": ident, "op": op, "ldev": ldev, "lba": lba, "sectors": sectors}
        io = {"wl": name, "op": op, "t0": self.now_ns, "ldev": ldev, "lba": lba, "sectors": sectors}
        if cap is not None:
            io["cap"] = cap
        if op == "write" and data is not None:
            body["data"] = data
            io["raw"] = len(self.raw_log)
            self.raw_log.append([self.params["site"], ldev, lba, sectors, self.now_ns, None, name,
                                 st["trace"][cap].seq])
        elif op == "write":
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
        if name.startswith("fe:"):
            self._fe_timeout(data)
            return
        if name.startswith("replay:"):
            if "capture" in self.workloads[data]:
                self._capture_next(data)
            else:
                self._replay_next(data)
            return
        st = self.workloads.get(data)
        if st is None or self._expired(st):
            return
        if st["open"] < st["wl"].spec.iodepth:
            self._issue(data)
        self.set_timer(name, st["wl"].spec.interarrival_ns, data)

    def on_message(self, src, kind, body):
        if kind != "io_done" or not isinstance(body, dict) or "id" not in body:   # body_problem's rule for {"id": object}
            self.errors += 1   # malformed input: counted and dropped at the boundary
            return
        if isinstance(body["id"], str) and body["id"] in self.fe_inflight:
            self._fe_io_done(body["id"], body)
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
        if "cap" in io:
            self._captured_done(io["wl"], io["cap"])
            self._capture_next(io["wl"])
        elif st["wl"] is not None and st["wl"].spec.interarrival_ns is None:
            self._issue(io["wl"])

    def _complete(self, io, body):
        rt = self.now_ns - io["t0"]
        self.lat[self.phase][io["op"]].append(rt)
        self.lat[self.phase]["bytes"] += io["sectors"] * SECTOR_BYTES
        self.phase_t[self.phase][1] = self.now_ns
        if "raw" in io:
            self.raw_log[io["raw"]][5] = self.now_ns
        elif io["op"] == "write":
            self.log[self.log_index[io["wid"]]][COMPLETE_NS] = self.now_ns
        elif body.get("data") is not None and "cap" not in io:   # client bytes carry no stamps
            self._check_read(io, body["data"])

    def _check_read(self, io, data):
        """A read must return, per sector, the stamp of a write this host
        issued there or zeros (never written); anything else is wrong bytes."""
        if bad_stamps(data, io["ldev"], io["lba"]):
            self.bad_reads += 1
            self.trace("io.bad_read", ldev=io["ldev"], lba=io["lba"])

    def on_query(self, q):
        what = q.get("q")
        if what == "writelog":
            return {"rows": self.log}
        if what == "rawlog":
            return {"rows": self.raw_log,
                    "captures": {n: {"file": s["capture"], "times": s["times"]}
                                 for n, s in sorted(self.workloads.items()) if "capture" in s}}
        if what == "stats":
            return {"phases": {p: {"read": v["read"], "write": v["write"], "bytes": v["bytes"], "t": self.phase_t[p]}
                               for p, v in self.lat.items()},
                    "errors": self.errors, "bad_reads": self.bad_reads,
                    "inflight": len(self.inflight), "fe_inflight": len(self.fe_inflight),
                    "workloads": {n: {"issued": s["issued"], "open": s["open"], "stopped": self._expired(s)}
                                  for n, s in sorted(self.workloads.items())}}
        return super().on_query(q)
