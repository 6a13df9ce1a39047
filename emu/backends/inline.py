"""The ``inline`` backend: every actor in this process, one global heap.

It delivers events in (time, source, sequence) order, which restricted to
any one actor is exactly the order the ``processes`` backend gives it, so
both backends produce the same trace. Used for fast tests and sweeps.
"""

from __future__ import annotations

import heapq

from emu.actor import NEVER_NS, TIMER, ActorHost
from emu.spec import RackSpec, load_class

INCARNATION_SEQ = 1 << 40


class InlineBackend:
    name = "inline"

    def __init__(self, spec: RackSpec, typed: dict[str, dict], regions: dict, sink, record_trace=True):
        self.spec = spec
        self.typed = typed
        self.regions = regions
        self.sink = sink
        self.record_trace = record_trace
        self.index_of = spec.index_of()
        self.latency = spec.latency_map()
        self.hosts: list[ActorHost | None] = [None] * len(spec.actors)
        self.incarnation = [0] * len(spec.actors)
        self.heap: list[tuple] = []
        self.events_handled = 0
        self.rounds = 0
        self.dropped_to_dead = 0
        self.signals: list[tuple[int, str, str]] = []
        #: crash-point watch: [steps, records left] -> a signal after the k-th matching record
        self.watch: list | None = None

    # -- lifecycle ------------------------------------------------------------
    def _make_host(self, i: int, now_ns: int) -> ActorHost:
        a = self.spec.actors[i]
        actor = load_class(a.cls)(a.name, self.typed[a.name])
        inc = self.incarnation[i]
        host = ActorHost(actor, i, self.index_of, self.latency[a.name],
                         self.spec.seed + inc * 7919, {r: self.regions[r] for r in a.regions},
                         self.record_trace)
        host.seq = inc * INCARNATION_SEQ
        host.now_ns = now_ns
        return host

    def start(self) -> None:
        for i in range(len(self.spec.actors)):
            self.hosts[i] = self._make_host(i, 0)
        for i, host in enumerate(self.hosts):
            host.start()
            self._collect(host)

    def close(self) -> None:
        self.hosts = [None] * len(self.hosts)
        self.heap.clear()

    # -- running --------------------------------------------------------------
    def _collect(self, host: ActorHost) -> None:
        """Move a host's new timers and outbound messages to the global heap."""
        heap = self.heap
        if host.heap:
            for t, src, seq, kind, body in host.heap:
                heapq.heappush(heap, (t, src, seq, src, kind, body))
            host.heap.clear()
        if host.outbox:
            hosts = self.hosts
            for ev in host.outbox:
                if hosts[ev[3]] is None:
                    self.dropped_to_dead += 1
                else:
                    heapq.heappush(heap, ev)
            host.outbox.clear()
        if host.records:
            records = host.take_records()
            if self.watch is not None:
                self._watch(records)
            self.sink.add(records)
        if host.signals:
            for t, name in host.signals:
                self.signals.append((t, host.actor.name, name))
            host.signals.clear()

    def _stops(self, exact_signal, since: int) -> bool:
        """True to any new signal, or only to the signal named ``exact_signal``."""
        if exact_signal is True:
            return True
        return any(sig == exact_signal for _t, _w, sig in self.signals[since:])

    def _watch(self, records) -> None:
        steps = self.watch[0]
        for r in records:
            if r[4] in steps:
                self.watch[1] -= 1
                if self.watch[1] == 0:
                    self.signals.append((r[0], r[1], "__watch__"))
                    self.watch = None
                    return

    def next_ns(self) -> int:
        return self.heap[0][0] if self.heap else NEVER_NS

    def run(self, until_ns: int, exact_signal: bool = False) -> int:
        """Handle events below ``until_ns``; return the time reached. With
        ``exact_signal`` stop right after the event that raised a signal."""
        heap, hosts, pop = self.heap, self.hosts, heapq.heappop
        self.rounds += 1
        n = 0
        n_signals = len(self.signals)
        try:
            while heap and heap[0][0] < until_ns:
                t, src, seq, dst, kind, body = pop(heap)
                host = hosts[dst]
                if host is None:
                    continue
                host.dispatch((t, src, seq, kind, body))
                n += 1
                if host.heap or host.outbox or host.records or host.signals:
                    self._collect(host)
                    if exact_signal and len(self.signals) > n_signals and self._stops(exact_signal, n_signals):
                        self.sink.flush(t)
                        return t
                    n_signals = len(self.signals)
                if n & 0x3FFF == 0:
                    self.sink.flush(t)
        finally:
            self.events_handled += n
            for host in hosts:
                if host is not None and host.dirty:
                    host.checkpoint()
        self.sink.flush(until_ns)
        return until_ns

    # -- console ----------------------------------------------------------------
    def control(self, actor: str, now_ns: int, command: dict) -> dict:
        host = self._host(actor)
        result = host.control(now_ns, command)
        self._collect(host)
        return result

    def query(self, actor: str, query: dict) -> dict:
        return self._host(actor).actor.on_query(query)

    def _host(self, actor: str) -> ActorHost:
        i = self.index_of.get(actor)
        if i is None:
            raise KeyError(f"no actor named {actor!r}")
        host = self.hosts[i]
        if host is None:
            raise LookupError(f"actor {actor!r} is down")
        return host

    # -- faults -------------------------------------------------------------------
    def kill(self, actor: str, now_ns: int) -> None:
        i = self.index_of[actor]
        if self.hosts[i] is None:
            raise LookupError(f"actor {actor!r} is already down")
        self.hosts[i] = None
        self.heap = [ev for ev in self.heap if ev[3] != i]
        heapq.heapify(self.heap)

    def restart(self, actor: str, now_ns: int) -> None:
        i = self.index_of[actor]
        if self.hosts[i] is not None:
            raise LookupError(f"actor {actor!r} is running")
        self.incarnation[i] += 1
        host = self.hosts[i] = self._make_host(i, now_ns)
        host.start(restart=True)
        self._collect(host)

    def alive(self, actor: str) -> bool:
        return self.hosts[self.index_of[actor]] is not None

    def poll_deaths(self) -> list[str]:
        return []
