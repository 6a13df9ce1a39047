"""Inter-site link actor: propagation, bandwidth serialisation, per-command
overhead, one FIFO per direction, and up/down as a fault.

A DKC hands the link a peer message (``xfer``); the link computes when its
last bit leaves (FIFO behind earlier transfers, plus the command overhead
and size x 8 / bandwidth) and forwards it to the far DKC over a fabric link
whose latency is the propagation delay. Every delivery carries the link's
``epoch``; taking the link down or up bumps the epoch and tells both DKCs,
which drop deliveries from an older epoch (what was on the wire is lost).
"""

from __future__ import annotations

from emu.actor import Actor, Promise
from emu.params import Param

HEADER_BYTES = 64  # per command: frame header on the wire (assumption, stated)


def message_bytes(msg) -> int:
    """Wire size of a peer message: header plus every payload byte it carries
    (bytes and strings by their length, any other scalar 8 bytes)."""
    total = HEADER_BYTES
    stack = [msg]
    pop, extend = stack.pop, stack.extend
    while stack:
        v = pop()
        t = type(v)
        # exact types first (what messages are made of: one check each);
        # anything else goes through the isinstance rules
        if t is bytes or t is str:
            total += len(v)
        elif t is dict:
            extend(v.values())
        elif t is list or t is tuple:
            extend(v)
        elif t is int or t is bool or v is None:
            total += 8
        elif isinstance(v, (bytes, bytearray)):
            total += len(v)
        elif isinstance(v, dict):
            extend(v.values())
        elif isinstance(v, (list, tuple)):
            extend(v)
        elif isinstance(v, str):
            total += len(v)
        else:
            total += 8
    return total


class Link(Actor):
    KIND = "link"
    DOC = "Inter-site data path (patent: 120) between the DKCs of two sites."
    PARAMS = {
        "a_site": Param("str", doc="site at one end"),
        "b_site": Param("str", doc="site at the other end"),
        "propagation": Param("time", doc="one-way propagation delay (about 5 us/km of fibre)", min=1),
        "bandwidth_bps": Param("int", doc="bits per second, each direction", min=1),
        "overhead": Param("time", "20us", "per-command protocol overhead"),
    }

    def on_start(self):
        self.up = True
        self.epoch = 0
        self.free_at_ns = {self.params["a_site"]: 0, self.params["b_site"]: 0}
        self.bytes_sent = {self.params["a_site"]: 0, self.params["b_site"]: 0}
        self.busy_ns = {self.params["a_site"]: 0, self.params["b_site"]: 0}
        self.commands = 0
        self.dropped = 0
        #: a degraded path: every transfer takes ``slow`` times as long on the wire
        self.slow = 1
        #: set at run time (``set LINK.bandwidth``, ``set LINK.latency``); the
        #: configured propagation is the scheduler's lookahead, so latency can
        #: only grow past it (an extra delay on every transfer)
        self.bandwidth_bps = self.params["bandwidth_bps"]
        self.extra_latency_ns = 0

    def promise(self) -> Promise:
        """A transfer is forwarded no sooner than the per-command overhead
        after it arrives (link up/down notices come from console commands,
        outside any event)."""
        ov = self.params["overhead"]
        return Promise(reaction_ns=ov, min_delay_ns={f"{s}.dkc": ov for s in self._sites()})

    def send_floors(self) -> dict[str, int]:
        """Each direction is a FIFO: the next transfer from a site departs no
        sooner than the wire is free plus the overhead."""
        ov = self.params["overhead"]
        return {f"{self._far(s)}.dkc": self.free_at_ns[s] + ov for s in self._sites()}

    def _sites(self) -> tuple[str, str]:
        return self.params["a_site"], self.params["b_site"]

    def _far(self, site: str) -> str:
        return self.params["b_site"] if site == self.params["a_site"] else self.params["a_site"]

    def on_message(self, src, kind, body):
        site = src.split(".")[0]
        # body_problem(body, {"kind": (str,)}) is None, without the call
        if (kind != "xfer" or site not in self.free_at_ns or not isinstance(body, dict)
                or not isinstance(body.get("kind"), str)):
            self.dropped += 1
            return
        if not self.up:
            self.dropped += 1
            return
        nbytes = message_bytes(body)
        wire_ns = self.params["overhead"] + self.slow * (nbytes * 8 * 1_000_000_000) // self.bandwidth_bps
        now = self.now_ns
        free = self.free_at_ns[site]
        depart = (now if now > free else free) + wire_ns
        self.free_at_ns[site] = depart
        self.busy_ns[site] += wire_ns
        self.bytes_sent[site] += nbytes
        self.commands += 1
        far = self._far(site)
        self.send(f"{far}.dkc", "peer", {"from": site, "epoch": self.epoch, "msg": body},
                  delay_ns=depart - now + self.extra_latency_ns)

    def on_control(self, command):
        cmd = command.get("cmd")
        if cmd == "set":
            return self._set(command.get("key"), command.get("value"))
        if cmd == "slow":
            factor = command.get("factor")
            if isinstance(factor, bool) or not isinstance(factor, int) or not 1 <= factor <= 1000:
                return {"ok": False, "error": f"slow factor must be an integer 1..1000, got {factor!r}"}
            self.slow = factor
            self.trace("link.slow", factor=factor)
            return {"ok": True, "slow": factor}
        if cmd not in ("down", "up"):
            return super().on_control(command)
        want = cmd == "up"
        if want == self.up:
            return {"ok": False, "error": f"{self.name} is already {cmd}"}
        self.up = want
        self.epoch += 1
        self.trace(f"link.{cmd}", epoch=self.epoch)
        for site in (self.params["a_site"], self.params["b_site"]):
            self.free_at_ns[site] = self.now_ns
            self.send(f"{site}.dkc", "link_state", {"up": want, "epoch": self.epoch,
                                                    "peer": self._far(site)})
        return {"ok": True, "up": want}

    def _set(self, key, value) -> dict:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return {"ok": False, "error": f"{self.name}.{key} expects a positive value, got {value!r}"}
        if key == "bandwidth":
            self.bandwidth_bps = value
        elif key == "latency":
            if value < self.params["propagation"]:
                return {"ok": False, "error": f"{self.name}.latency can grow, not shrink below the configured "
                                              f"{self.params['propagation']} ns (the scheduler's lookahead)"}
            self.extra_latency_ns = value - self.params["propagation"]
        else:
            return {"ok": False, "error": f"unknown link setting {key!r} (bandwidth, latency)"}
        self.trace("link.set", key=key, value=value)
        return {"ok": True, "key": key, "value": value}

    def on_query(self, q):
        # busy_ns is charged when a transfer is queued; the part still queued
        # beyond now is backlog_ns (subtract it for the busy share up to now)
        return {"up": self.up, "epoch": self.epoch, "bytes_sent": dict(self.bytes_sent),
                "busy_ns": dict(self.busy_ns),
                "backlog_ns": {s: max(0, t - self.now_ns) for s, t in self.free_at_ns.items()}, "commands": self.commands, "dropped": self.dropped,
                "bandwidth_bps": self.bandwidth_bps, "slow": self.slow,
                "latency_ns": self.params["propagation"] + self.extra_latency_ns}
