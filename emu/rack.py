"""A running rack: regions + a backend + the trace, with run controls.

``Rack(spec, backend="processes"|"inline")`` validates the spec, creates
the regions (shared-memory segments for the processes backend, private
copy-on-write memory for the inline one), starts the actors and keeps the virtual clock
``now_ns``. Run controls: ``run_for(duration_ns)``, ``run_until_idle()``,
``run_until_event(name)`` (stops at the end of the scheduler quantum in which
the event was raised, so the stop time is the same in both backends), and
faults at a virtual time: ``schedule(at_ns, "kill"|"restart", actor)``.
``close()`` always leaves no process, socket file or segment behind.
The rack drives its backend only through ``emu.backends.base.Backend``.
"""

from __future__ import annotations

import time
from typing import IO

from emu.actor import NEVER_NS
from emu.backends.base import WATCH_SIGNAL, Backend
from emu.backends.inline import InlineBackend
from emu.shm import PrivateRegion, SharedRegion, new_rack_id
from emu.spec import RackSpec, validate
from emu.trace import TraceSink

BACKENDS = ("processes", "inline")


class Rack:
    def __init__(self, spec: RackSpec, backend: str = "processes", trace_out: IO[str] | None = None,
                 keep_trace: bool = False, record_trace: bool = True, preload: list[str] | None = None,
                 realtime: float | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.spec = spec
        self.typed = validate(spec)
        self.rack_id = new_rack_id()
        self.now_ns = 0
        self.sink = TraceSink(trace_out, keep=keep_trace)
        self.sup_count = 0
        self.faults: list[dict] = []
        self.scheduled: list[tuple[int, int, str, str]] = []
        self.realtime = realtime
        self.regions: dict[str, SharedRegion | PrivateRegion] = {}
        self.backend: Backend | None = None
        self._closed = False
        self.wall_start_s = time.monotonic()
        try:
            for r in spec.regions:
                # inline: one process, so private (copy-on-write across a fork) memory
                self.regions[r.name] = PrivateRegion(r.name, r.size_bytes) if backend == "inline" \
                    else SharedRegion.create(self.rack_id, r.name, r.size_bytes)
            if backend == "inline":
                self.backend = InlineBackend(spec, self.typed, self.regions, self.sink, record_trace)
            else:
                from emu.backends.processes import ProcessesBackend
                self.backend = ProcessesBackend(spec, self.typed, self.regions, self.sink, record_trace,
                                                rack_id=self.rack_id, preload=preload)
            self.backend.start()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- trace records of the supervisor itself ------------------------------------
    def _note(self, event: str, **fields) -> None:
        self.sink.add([(self.now_ns, "supervisor", self.sup_count, event, None, fields)])
        self.sup_count += 1

    # -- run controls -----------------------------------------------------------------
    def run_for(self, duration_ns: int) -> int:
        """Advance virtual time by ``duration_ns``, applying scheduled faults on the way."""
        if duration_ns < 0:
            raise ValueError(f"negative duration {duration_ns}")
        return self.run_to(self.now_ns + duration_ns)

    def run_to(self, until_ns: int) -> int:
        while True:
            self._apply_due()
            stop = until_ns
            if self.scheduled and self.scheduled[0][0] < stop:
                stop = self.scheduled[0][0]
            self._advance(stop)
            if stop == until_ns:
                self._apply_due()
                return self.now_ns

    def _advance(self, until_ns: int) -> None:
        if self.realtime:
            self._advance_paced(until_ns)
        else:
            self.now_ns = self.backend.run(until_ns)
        self._check_deaths()

    def _advance_paced(self, until_ns: int) -> None:
        """--realtime X: virtual time runs X times as fast as the wall clock."""
        step = self.spec.quantum_ns
        t0_s, v0 = time.monotonic(), self.now_ns
        while self.now_ns < until_ns:
            self.now_ns = self.backend.run(min(until_ns, self.now_ns + step))
            ahead_s = (self.now_ns - v0) / 1e9 / self.realtime - (time.monotonic() - t0_s)
            if ahead_s > 0:
                time.sleep(ahead_s)  # pacing for a human at the console, never in tests

    def run_until_idle(self, limit_ns: int = NEVER_NS) -> int:
        """Run until no event is left anywhere (or ``limit_ns`` of virtual time)."""
        end = min(NEVER_NS, self.now_ns + limit_ns)
        while True:
            nxt = self.backend.next_ns()
            if self.scheduled:   # a scheduled fault is work still to come
                nxt = min(nxt, self.scheduled[0][0])
            if nxt >= end or nxt >= NEVER_NS:
                return self.now_ns
            q = self.spec.quantum_ns
            self.run_to(min(end, max(self.now_ns, (nxt // q + 1) * q)))

    def run_until_event(self, name: str, limit_ns: int) -> int | None:
        """Run quantum by quantum until an actor raises ``name``; return the
        virtual time it was raised, or None when ``limit_ns`` passed first."""
        end = self.now_ns + limit_ns
        seen = len(self.backend.signals)
        q = self.spec.quantum_ns
        while self.now_ns < end:
            self.run_to(min(end, (self.now_ns // q + 1) * q))
            for t, _who, sig in self.backend.signals[seen:]:
                if sig == name:
                    return t
            seen = len(self.backend.signals)
        return None

    def run_until_record(self, steps: set[int], count: int, limit_ns: int) -> int | None:
        """Inline only: stop right after the ``count``-th trace record whose
        step is in ``steps`` (a crash point); return its time, or None. The
        stop is after the whole event, so the matching records that event
        traced after the ``count``-th are passed too: ``backend.watch_overrun``."""
        seen = len(self.backend.signals)
        self.backend.set_watch(set(steps), int(count))  # ValueError where exact stops are impossible
        try:
            self.now_ns = self.backend.run(self.now_ns + limit_ns, exact_signal=WATCH_SIGNAL)
        finally:
            self.backend.clear_watch()
        for t, _who, sig in self.backend.signals[seen:]:
            if sig == WATCH_SIGNAL:
                return t
        return None

    # -- faults -----------------------------------------------------------------------------
    def schedule(self, at_ns: int, action: str, actor: str) -> None:
        if action not in ("kill", "restart"):
            raise ValueError(f"unknown fault action {action!r}")
        if at_ns < self.now_ns:
            raise ValueError(f"cannot schedule in the past ({at_ns} < {self.now_ns})")
        self.scheduled.append((at_ns, len(self.scheduled), action, actor))
        self.scheduled.sort()

    def _apply_due(self) -> None:
        while self.scheduled and self.scheduled[0][0] <= self.now_ns:
            _t, _n, action, actor = self.scheduled.pop(0)
            (self.kill if action == "kill" else self.restart)(actor)

    def kill(self, actor: str) -> None:
        self.backend.kill(actor, self.now_ns)
        self._note("fault.kill", actor=actor)
        self.faults.append({"time_ns": self.now_ns, "actor": actor, "fault": "kill"})

    def restart(self, actor: str) -> None:
        self.backend.restart(actor, self.now_ns)
        self._note("fault.restart", actor=actor)
        self.faults.append({"time_ns": self.now_ns, "actor": actor, "fault": "restart"})

    def _check_deaths(self) -> None:
        for actor in self.backend.take_deaths():
            self._note("fault.died", actor=actor)
            self.faults.append({"time_ns": self.now_ns, "actor": actor, "fault": "died"})

    def alive(self, actor: str) -> bool:
        return self.backend.alive(actor)

    # -- console ---------------------------------------------------------------------------
    def control(self, actor: str, command: dict) -> dict:
        return self.backend.control(actor, self.now_ns, command)

    def query(self, actor: str, query: dict) -> dict:
        return self.backend.query(actor, query)

    # -- end --------------------------------------------------------------------------------
    def finish_trace(self) -> str:
        self.sink.flush_all()
        return self.sink.sha256

    @property
    def events_handled(self) -> int:
        return self.backend.events_handled if self.backend else 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.backend is not None:
                self.backend.close()
        finally:
            for r in self.regions.values():
                r.unlink()
