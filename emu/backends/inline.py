"""The ``inline`` backend: every actor in this process, one global heap.

It delivers events in (time, source, sequence) order, which restricted to
any one actor is exactly the order the ``processes`` backend gives it, so
both backends produce the same trace. Used for fast tests and sweeps.
A bug in an actor's handler is raised as ``ActorFailed`` (``emu.backends.base``).
"""

from __future__ import annotations

import heapq

from emu.actor import NEVER_NS, ActorHost
from emu.backends.base import WATCH_SIGNAL, Backend, call_handler, event_failed, make_host
from emu.spec import RackSpec


class InlineBackend(Backend):
    name = "inline"

    def __init__(self, spec: RackSpec, typed: dict[str, dict], regions: dict, sink, record_trace=True):
        super().__init__(spec, typed, regions, sink, record_trace)
        self.hosts: list[ActorHost | None] = [None] * len(spec.actors)
        self.heap: list[tuple] = []
        self._handled = 0
        #: crash-point watch: the steps watched, or None when disarmed
        self.watch_steps: set[int] | None = None
        #: matching records still to come before the watch fires
        self.watch_left = 0

    @property
    def events_handled(self) -> int:
        return self._handled

    # -- lifecycle ------------------------------------------------------------
    def _make_host(self, i: int, now_ns: int) -> ActorHost:
        regions = {r: self.regions[r] for r in self.spec.actors[i].regions}
        return make_host(self.host_job(i, now_ns), regions)

    def start(self) -> None:
        for i in range(len(self.spec.actors)):
            self.hosts[i] = self._make_host(i, 0)
        for i, host in enumerate(self.hosts):
            call_handler(host, "start", host.start)
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
            if self.watch_steps is not None:
                self._count_watched(records)
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

    # -- crash-point watch -------------------------------------------------------
    def set_watch(self, steps: set[int], count: int) -> None:
        self.watch_steps, self.watch_left = set(steps), int(count)
        self.watch_overrun = 0

    def clear_watch(self) -> None:
        self.watch_steps = None

    def _count_watched(self, records) -> None:
        steps = self.watch_steps
        for i, r in enumerate(records):
            if r[4] in steps:
                self.watch_left -= 1
                if self.watch_left == 0:
                    self.signals.append((r[0], r[1], WATCH_SIGNAL))
                    self.watch_steps = None
                    self.watch_overrun = sum(1 for later in records[i + 1:] if later[4] in steps)
                    return

    def next_ns(self) -> int:
        return self.heap[0][0] if self.heap else NEVER_NS

    def next_times(self) -> list[int]:
        out = [NEVER_NS] * len(self.hosts)
        for t, _src, _seq, dst, _kind, _body in self.heap:   # one heap for all: a scan
            if t < out[dst] and self.hosts[dst] is not None:
                out[dst] = t
        return out

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
                try:
                    host.dispatch((t, src, seq, kind, body))
                except Exception as exc:
                    raise event_failed(host, (t, src, seq, kind, body), exc) from exc
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
            self._handled += n
            for host in hosts:
                if host is not None and host.dirty:
                    call_handler(host, "checkpoint", host.checkpoint)
        self.sink.flush(until_ns)
        return until_ns

    # -- console ----------------------------------------------------------------
    def control(self, actor: str, now_ns: int, command: dict) -> dict:
        host = self.hosts[self._index_up(actor)]
        result = call_handler(host, f"control {command.get('cmd')!r}", host.control, now_ns, command)
        self._collect(host)
        return result

    def query(self, actor: str, query: dict) -> dict:
        host = self.hosts[self._index_up(actor)]
        return call_handler(host, f"query {query.get('q')!r}", host.actor.on_query, query)

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
        call_handler(host, "restart", host.start, True)
        self._collect(host)

    def alive(self, actor: str) -> bool:
        return self.hosts[self.index_of[actor]] is not None

    def poll_deaths(self) -> list[str]:
        """No actor of this process can die by itself."""
        return []
