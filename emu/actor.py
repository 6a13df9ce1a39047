"""Actors: named devices that react to messages and timers in virtual time.

An actor never reads the wall clock and never opens a socket: it is driven by
an ``ActorHost`` that owns its event heap, its clock and its outbox, in
either backend. Lifecycle of an event:

1. an actor calls ``send(dst, kind, body)`` (or ``set_timer``) while
   handling an event at ``now_ns``; the event gets the key
   ``(deliver_ns, source index, source sequence)`` and goes to the outbox
   (a timer goes straight to the actor's own heap);
2. the backend moves outbox events to the destination's heap (directly in
   ``inline``; through the coordinator in ``processes``);
3. the destination's host pops events in key order while they are below
   the horizon it was granted, sets ``now_ns`` and calls ``on_message`` or
   ``on_timer``.

Because each actor sees its events in the same key order in both backends
and draws randomness only from a stream derived from (rack seed, its name),
a run is a pure function of config, script and seed.

Message bodies are plain data (None, bool, int, float, str, bytes, lists,
dicts with str keys): they cross process boundaries as msgpack, where a
tuple arrives as a list. Never mutate a body after sending it.
"""

from __future__ import annotations

import heapq
import zlib
from typing import Any

import numpy as np

from emu.params import Param

NEVER_NS = 1 << 62
TIMER = "__timer__"


def stream_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The seed sequence of actor ``name`` in a rack seeded with ``seed``."""
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


class Actor:
    """Base class of every device. Subclasses declare ``PARAMS`` and
    ``PORTS`` and override the ``on_*`` handlers they need."""

    KIND = "actor"
    PARAMS: dict[str, Param] = {}
    PORTS: tuple[str, ...] = ()
    DOC = ""

    def __init__(self, name: str, params: dict[str, Any]):
        self.name = name
        #: typed parameters, as resolved from the config
        self.params = params
        #: set by the host before on_start
        self._host: ActorHost | None = None

    # -- handlers ---------------------------------------------------------
    def on_start(self) -> None:
        """Called once at virtual time 0 (and again after a restart)."""

    def on_message(self, src: str, kind: str, body: Any) -> None:
        """A message from actor ``src``."""

    def on_timer(self, name: str, data: Any) -> None:
        """A timer set with ``set_timer`` fired."""

    def on_query(self, query: dict) -> dict:
        """Read-only question from the console, answered outside virtual time."""
        return {"error": f"{self.name}: unknown query {query.get('q')!r}"}

    def on_control(self, command: dict) -> dict:
        """A console command applied at the current (paused) virtual time;
        may send messages and set timers. Must leave state unchanged when it
        rejects the command."""
        return {"ok": False, "error": f"{self.name}: unknown command {command.get('cmd')!r}"}

    def on_restart(self) -> None:
        """Called instead of ``on_start`` when a killed actor comes back."""
        self.on_start()

    def on_checkpoint(self) -> None:
        """Called when the actor pauses after handling events (end of a
        scheduler round, or the rack pausing): the place to write state to
        non-volatile memory. A process killed mid-round loses that round,
        as if it had crashed at its start. Must not send, trace or draw."""

    # -- services ---------------------------------------------------------
    @property
    def now_ns(self) -> int:
        return self._host.now_ns

    @property
    def rng(self) -> np.random.Generator:
        return self._host.rng

    def send(self, dst: str, kind: str, body: Any = None, delay_ns: int = 0) -> None:
        self._host.send(dst, kind, body, delay_ns)

    def set_timer(self, name: str, delay_ns: int, data: Any = None) -> None:
        """Fire ``on_timer(name, data)`` after ``delay_ns``; replaces a pending
        timer of the same name."""
        self._host.set_timer(name, delay_ns, data)

    def cancel_timer(self, name: str) -> None:
        self._host.cancel_timer(name)

    def trace(self, event: str, step: int | None = None, **fields: Any) -> None:
        """Record one trace line at ``now_ns`` (``step`` = the patent's step number)."""
        self._host.trace(event, step, fields)

    def signal(self, name: str) -> None:
        """Raise a named event for ``run until NAME``."""
        self._host.signals.append((self._host.now_ns, name))

    def region(self, name: str):
        """The shared-memory region ``name`` (a ``SharedRegion``)."""
        return self._host.regions[name]

    def peers(self) -> list[str]:
        return sorted(self._host.latency_by_name)


class ActorHost:
    """Runs one actor: its heap, clock, outbox and trace buffer."""

    def __init__(self, actor: Actor, index: int, index_of: dict[str, int],
                 latency_ns: dict[int, int], seed: int, regions: dict | None = None,
                 record_trace: bool = True):
        self.actor = actor
        self.index = index
        self.index_of = index_of
        self.names = sorted(index_of, key=index_of.get)
        self.latency_ns = latency_ns
        self.latency_by_name = {self.names[i]: ns for i, ns in latency_ns.items()}
        self.rng = np.random.Generator(np.random.PCG64(stream_seed(seed, actor.name)))
        self.regions = regions or {}
        self.record_trace = record_trace
        self.now_ns = 0
        self.heap: list[tuple] = []
        self.seq = 0
        self.outbox: list[tuple] = []
        self.records: list[tuple] = []
        self.record_count = 0
        self.signals: list[tuple[int, str]] = []
        self.timer_gen: dict[str, int] = {}
        self.events_handled = 0
        self.dirty = False
        actor._host = self

    # -- called by the actor ------------------------------------------------
    def send(self, dst: str, kind: str, body: Any, delay_ns: int) -> None:
        d = self.index_of.get(dst)
        if d is None or d not in self.latency_ns:
            raise RuntimeError(f"{self.actor.name}: no link to {dst!r}: link invariant violated")
        if delay_ns < 0:
            raise ValueError(f"negative delay {delay_ns}")
        self.seq += 1
        self.outbox.append((self.now_ns + delay_ns + self.latency_ns[d], self.index, self.seq,
                            d, kind, body))

    def set_timer(self, name: str, delay_ns: int, data: Any) -> None:
        if delay_ns < 0:
            raise ValueError(f"negative delay {delay_ns}")
        self.seq += 1
        self.timer_gen[name] = self.seq
        heapq.heappush(self.heap, (self.now_ns + delay_ns, self.index, self.seq, TIMER, [name, data]))

    def cancel_timer(self, name: str) -> None:
        self.timer_gen.pop(name, None)

    def trace(self, event: str, step: int | None, fields: dict) -> None:
        if self.record_trace:
            self.records.append((self.now_ns, self.actor.name, self.record_count, event, step, fields))
        self.record_count += 1

    # -- called by the backend ----------------------------------------------
    def push(self, event: tuple) -> None:
        """Accept an inbound event (deliver_ns, src, seq, kind, body)."""
        heapq.heappush(self.heap, event)

    def next_ns(self) -> int:
        return self.heap[0][0] if self.heap else NEVER_NS

    def run_until(self, horizon_ns: int) -> int:
        """Handle every event strictly below ``horizon_ns``; return the next event time."""
        heap = self.heap
        while heap and heap[0][0] < horizon_ns:
            self.dispatch(heapq.heappop(heap))
        return heap[0][0] if heap else NEVER_NS

    def dispatch(self, event: tuple) -> None:
        t, src, seq, kind, body = event
        if t < self.now_ns:
            raise RuntimeError(f"{self.actor.name}: event at {t} before now {self.now_ns}: causality invariant violated")
        self.now_ns = t
        self.events_handled += 1
        self.dirty = True
        if kind == TIMER:
            name, data = body
            if self.timer_gen.get(name) != seq:
                return  # cancelled or replaced
            del self.timer_gen[name]
            self.actor.on_timer(name, data)
        else:
            self.actor.on_message(self.names[src], kind, body)

    def start(self, restart: bool = False) -> None:
        if restart:
            self.actor.on_restart()
        else:
            self.actor.on_start()

    def control(self, now_ns: int, command: dict) -> dict:
        """Apply a console command at the paused time ``now_ns``."""
        self.now_ns = max(self.now_ns, now_ns)
        self.dirty = True
        result = self.actor.on_control(command)
        self.checkpoint()
        return result

    def checkpoint(self) -> None:
        if self.dirty:
            self.dirty = False
            self.actor.on_checkpoint()

    def take_outbox(self) -> list[tuple]:
        out, self.outbox = self.outbox, []
        return out

    def take_records(self) -> list[tuple]:
        out, self.records = self.records, []
        return out
