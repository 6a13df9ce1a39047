"""Small actors used by the substrate tests and benchmarks (no storage).

* ``RegionKeeper`` owns one shared region: ``control {"cmd": "write",
  "offset", "data"}`` writes bytes, ``query {"q": "read", "offset",
  "length"}`` reads them back; it ticks a timer so it has work in virtual time.
* ``Pinger``/``Ponger``: two actors bouncing one message ``bounces`` times,
  the fabric ping-pong benchmark.
* ``Faulty``: a planted bug in the handler named by ``fail_in``.

``warm_up`` records the pid of each process it runs in (``WARMED_IN``),
and a RegionKeeper's query answers with that list: the processes backend
must run it once, in its own process, before forking.
"""

from __future__ import annotations

import os

from emu.actor import Actor
from emu.params import Param

#: pids of the processes this module's warm_up ran in
WARMED_IN: list[int] = []


def warm_up() -> None:
    WARMED_IN.append(os.getpid())


class RegionKeeper(Actor):
    KIND = "test-region-keeper"
    DOC = "Writes/reads its region on console commands; ticks every `tick`."
    PARAMS = {
        "region": Param("str", doc="name of the region it owns"),
        "tick": Param("time", "100us", "period of its heartbeat timer", min=1),
    }

    def on_start(self):
        self.ticks = 0
        self.set_timer("tick", self.params["tick"])

    def on_timer(self, name, data):
        self.ticks += 1
        self.trace("tick", n=self.ticks)
        self.set_timer("tick", self.params["tick"])

    def on_control(self, command):
        if command.get("cmd") != "write":
            return super().on_control(command)
        data, offset = bytes(command["data"]), int(command["offset"])
        buf = self.region(self.params["region"]).buf
        if not 0 <= offset <= len(buf) - len(data):
            return {"ok": False, "error": f"write of {len(data)} bytes at {offset} outside the region"}
        buf[offset:offset + len(data)] = memoryview(data)
        return {"ok": True}

    def on_query(self, query):
        if query.get("q") == "read":
            buf = self.region(self.params["region"]).buf
            off, n = int(query["offset"]), int(query["length"])
            return {"data": bytes(buf[off:off + n]), "ticks": self.ticks}
        return {"ticks": self.ticks, "warmed_in": list(WARMED_IN)}


class Pinger(Actor):
    KIND = "test-pinger"
    DOC = "Sends one ball to `peer` and returns it until `bounces` is reached."
    PARAMS = {
        "peer": Param("str", doc="the other actor"),
        "bounces": Param("int", 1000, "round trips to make", min=1, max=100_000_000),
    }

    def on_start(self):
        self.count = 0
        self.send(self.params["peer"], "ball", 0)

    def on_message(self, src, kind, body):
        self.count += 1
        if self.count < self.params["bounces"]:
            self.send(src, "ball", self.count)
        else:
            self.signal("pingpong.done")

    def on_query(self, query):
        return {"count": self.count}


class Ponger(Actor):
    KIND = "test-ponger"
    DOC = "Returns every ball to its sender."

    def on_message(self, src, kind, body):
        self.send(src, "ball", body)


def keeper_spec(seed: int = 1, size_bytes: int = 1 << 20):
    """One RegionKeeper owning region "media", linked to a toy server."""
    from emu.spec import ActorSpec, LinkSpec, RackSpec, RegionSpec
    return RackSpec("keeper", seed, [
        ActorSpec("keeper", "support.actors:RegionKeeper", {"region": "media"}, ["media"]),
        ActorSpec("peer", "support.actors:Ponger", {}),
    ], [LinkSpec("keeper", "peer", 10_000)], [RegionSpec("media", size_bytes)])


def pingpong_spec(bounces: int, latency_ns: int = 10_000, seed: int = 1):
    from emu.spec import ActorSpec, LinkSpec, RackSpec
    return RackSpec("pingpong", seed, [
        ActorSpec("ping", "support.actors:Pinger", {"peer": "pong", "bounces": bounces}),
        ActorSpec("pong", "support.actors:Ponger", {}),
    ], [LinkSpec("ping", "pong", latency_ns)])

class Faulty(Actor):
    """Ticks once at 50 us and pokes its peer; its handler named `fail_in` raises."""

    KIND = "test-faulty"
    PARAMS = {"fail_in": Param("str", "message", "handler that raises: start|timer|message|control|query")}

    def _maybe_fail(self, where: str) -> None:
        if self.params["fail_in"] == where:
            raise ZeroDivisionError(f"planted bug in {where}")

    def on_start(self):
        self._maybe_fail("start")
        self.set_timer("boom", 50_000)

    def on_timer(self, name, data):
        self._maybe_fail("timer")
        self.send("peer", "poke", 1)

    def on_message(self, src, kind, body):
        self._maybe_fail("message")

    def on_control(self, command):
        self._maybe_fail("control")
        return {"ok": True}

    def on_query(self, query):
        self._maybe_fail("query")
        return {}


class FifoServer(Actor):
    """A FIFO server: each request is answered ``service`` after the server is
    free, by a send with that delay. ``promise`` says what it tells the
    scheduler: "none", "static" (reaction and least delay = service),
    "dynamic" (static plus the floor: free time + service), or "liar"
    (claims twice the service it gives). Same behaviour in every mode."""

    KIND = "test-fifo-server"
    PARAMS = {
        "service": Param("time", "50us", "service time of one request", min=1),
        "promise": Param("choice", "none", "what it promises", choices=("none", "static", "dynamic", "liar")),
    }

    def on_start(self):
        self.free_ns = 0

    def on_message(self, src, kind, body):
        self.free_ns = max(self.now_ns, self.free_ns) + self.params["service"]
        self.send(src, "ans", body, delay_ns=self.free_ns - self.now_ns)

    def promise(self):
        from emu.actor import Promise
        mode, ns = self.params["promise"], self.params["service"]
        if mode == "none":
            return Promise()
        if mode == "liar":
            ns *= 2
        return Promise(reaction_ns=ns, min_delay_ns={p: ns for p in self.peers()})

    def send_floors(self):
        if self.params["promise"] != "dynamic":
            return {}
        return {p: self.free_ns + self.params["service"] for p in self.peers()}


def fifo_spec(promise: str, n_clients: int = 4, inflight: int = 4, requests: int = 200, seed: int = 1):
    """Toy clients around one FifoServer making the given promise."""
    from emu.spec import ActorSpec, LinkSpec, RackSpec
    actors = [ActorSpec("server", "support.actors:FifoServer", {"service": "50us", "promise": promise})]
    links = []
    for c in range(n_clients):
        actors.append(ActorSpec(f"client{c}", "emu.toy:Client",
                                {"server": "server", "inflight": inflight, "requests": requests}))
        links.append(LinkSpec(f"client{c}", "server", 10_000))
    return RackSpec("fifo", seed, actors, links, quantum_ns=1_000_000)
