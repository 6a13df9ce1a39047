"""Toy models that exercise the substrate without any storage.

* ``Client``/``Server``: each client keeps ``inflight`` requests open to a
  server; the server answers after a random service time. Used for the
  determinism tests and the fabric benchmarks.
* ``Arrivals``/``Station``: an M/M/1 queue (Poisson arrivals, exponential
  service, FIFO). The station records each customer's response time; the
  mean must match 1/(mu - lambda).
"""

from __future__ import annotations

import numpy as np

from emu.actor import Actor
from emu.params import Param


class Client(Actor):
    KIND = "toy-client"
    DOC = "Keeps `inflight` requests open to `server`; stops after `requests`."
    PARAMS = {
        "server": Param("str", doc="name of the server actor"),
        "inflight": Param("int", 1, "requests kept open at once", min=1, max=10_000),
        "requests": Param("int", 1000, "requests to send in all", min=0, max=100_000_000),
        "think": Param("time", "0ns", "pause between an answer and the next request"),
    }
    PORTS = ("server",)

    def on_start(self):
        self.sent = self.done = 0
        self.total_ns = 0
        for _ in range(min(self.params["inflight"], self.params["requests"])):
            self._request()

    def _request(self):
        self.sent += 1
        self.send(self.params["server"], "req", {"id": self.sent, "t0": self.now_ns},
                  delay_ns=self.params["think"] if self.sent > self.params["inflight"] else 0)

    def on_message(self, src, kind, body):
        self.done += 1
        self.total_ns += self.now_ns - body["t0"]
        self.trace("answer", id=body["id"], rt_ns=self.now_ns - body["t0"])
        if self.sent < self.params["requests"]:
            self._request()
        elif self.done == self.params["requests"]:
            self.signal("client.done")

    def on_query(self, q):
        return {"sent": self.sent, "done": self.done, "total_ns": self.total_ns}


class Server(Actor):
    KIND = "toy-server"
    DOC = "Answers each request after an exponential service time (no queueing)."
    PARAMS = {"service": Param("time", "10us", "mean service time", min=1)}

    def on_start(self):
        self.served = 0

    def on_message(self, src, kind, body):
        self.served += 1
        delay = int(self.rng.exponential(self.params["service"]))
        self.trace("serve", src=src, id=body["id"])
        self.send(src, "ans", body, delay_ns=delay)

    def on_query(self, q):
        return {"served": self.served}


class Arrivals(Actor):
    KIND = "mm1-arrivals"
    DOC = "Poisson arrivals to `station`."
    PARAMS = {
        "station": Param("str", doc="the queueing station"),
        "rate_per_s": Param("float", doc="arrival rate lambda, customers per second", min=1e-9),
        "customers": Param("int", 200_000, "customers to generate", min=1, max=100_000_000),
    }

    def on_start(self):
        self.count = 0
        self._next()

    def _next(self):
        gap = int(self.rng.exponential(1e9 / self.params["rate_per_s"]))
        self.set_timer("arrive", gap)

    def on_timer(self, name, data):
        self.count += 1
        self.send(self.params["station"], "customer", [self.count, self.now_ns])
        if self.count < self.params["customers"]:
            self._next()


class Station(Actor):
    KIND = "mm1-station"
    DOC = "One FIFO server with exponential service; records response times."
    PARAMS = {
        "rate_per_s": Param("float", doc="service rate mu, customers per second", min=1e-9),
        "record": Param("bool", False, "write a trace line per customer"),
    }

    def on_start(self):
        self.queue: list = []
        self.busy = False
        self.rt_sum_ns = 0
        self.served = 0
        self.rts: list[int] = []

    def on_message(self, src, kind, body):
        # response time counts from arrival at the station, not from the send:
        # the link latency is not part of the M/M/1 model
        self.queue.append([body[0], self.now_ns])
        if not self.busy:
            self._serve()

    def _serve(self):
        self.busy = True
        self.set_timer("done", int(self.rng.exponential(1e9 / self.params["rate_per_s"])))

    def on_timer(self, name, data):
        cid, t_arrive = self.queue.pop(0)
        rt = self.now_ns - t_arrive
        self.rt_sum_ns += rt
        self.served += 1
        if self.params["record"]:
            self.trace("departure", id=cid, rt_ns=rt)
        self.busy = False
        if self.queue:
            self._serve()

    def on_query(self, q):
        return {"served": self.served, "mean_rt_ns": self.rt_sum_ns / max(1, self.served)}


def toy_spec(n_clients: int = 2, inflight: int = 4, requests: int = 200, seed: int = 1,
             latency_ns: int = 10_000, service: str = "10us"):
    """A star: ``n_clients`` clients around one server per 8 clients."""
    from emu.spec import ActorSpec, LinkSpec, RackSpec
    n_servers = max(1, (n_clients + 7) // 8)
    actors, links = [], []
    for s in range(n_servers):
        actors.append(ActorSpec(f"server{s}", "emu.toy:Server", {"service": service}))
    for c in range(n_clients):
        srv = f"server{c % n_servers}"
        actors.append(ActorSpec(f"client{c}", "emu.toy:Client",
                                {"server": srv, "inflight": inflight, "requests": requests}))
        links.append(LinkSpec(f"client{c}", srv, latency_ns))
    return RackSpec("toy", seed, actors, links, quantum_ns=1_000_000)


def mm1_spec(rho: float, customers: int, seed: int = 1, mu_per_s: float = 100_000.0,
             latency_ns: int = 1_000):
    from emu.spec import ActorSpec, LinkSpec, RackSpec
    return RackSpec("mm1", seed, [
        ActorSpec("arrivals", "emu.toy:Arrivals",
                  {"station": "station", "rate_per_s": rho * mu_per_s, "customers": customers}),
        ActorSpec("station", "emu.toy:Station", {"rate_per_s": mu_per_s}),
    ], [LinkSpec("arrivals", "station", latency_ns, directed=True)])


def mm1_expected_ns(rho: float, mu_per_s: float = 100_000.0) -> float:
    """Analytical mean response time 1/(mu - lambda), in ns."""
    return 1e9 / (mu_per_s - rho * mu_per_s)


__all__ = ["Client", "Server", "Arrivals", "Station", "toy_spec", "mm1_spec", "mm1_expected_ns", "np"]
