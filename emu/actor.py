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
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from emu.params import Param

NEVER_NS = 1 << 62
TIMER = "__timer__"
#: the largest promise a scheduler uses (more would only risk int64 overflow)
PROMISE_MAX_NS = 1 << 50


@dataclass(frozen=True)
class Promise:
    """What an actor guarantees about its own sends (lookahead from minimum
    service times). The ``processes`` backend's coordinator lets other actors
    run ahead by what the promise allows; ``ActorHost`` checks it on every
    send and timer while an event is handled, in both backends, and a broken
    promise stops the run (it would make the schedule inexact).

    * ``reaction_ns``: a *message* handled at ``t`` sends nothing delivered
      before ``t + reaction_ns + link latency`` and sets no timer before
      ``t + reaction_ns`` (a disk answers no sooner than its controller
      overhead). Timers are not bound by it: a timer at ``t`` may send at ``t``.
    * ``min_delay_ns``: destination name -> least ``delay_ns`` of every send
      to it, whatever the event (a controller answers no sooner than its
      CPU cost).
    """

    reaction_ns: int = 0
    min_delay_ns: Mapping[str, int] = field(default_factory=dict)


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

    def promise(self) -> Promise:
        """The static promise about this actor's sends (see ``Promise``);
        asked once after ``on_start`` / ``on_restart``. The default promises
        nothing, which is always true."""
        return Promise()

    def send_floors(self) -> dict[str, int]:
        """Dynamic promise, asked when the actor pauses after handling
        events: destination name -> a virtual time below which no later
        send to it will have ``now + delay_ns`` (e.g. the time a busy
        controller is next free plus its least cost). Must only be true of
        what this actor will do whatever it is sent; values may only grow
        between two questions while events are handled (a console command may
        lower them). Default: nothing promised."""
        return {}

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
        #: this actor's timers (the inline backend moves them to its global heap)
        self.heap: list[tuple] = []
        #: inbound messages not yet handled (processes backend only)
        self.inbox: list[tuple] = []
        self.seq = 0
        self.outbox: list[tuple] = []
        self.records: list[tuple] = []
        self.record_count = 0
        self.signals: list[tuple[int, str]] = []
        self.timer_gen: dict[str, int] = {}
        self.events_handled = 0
        self.dirty = False
        n = len(self.names)
        #: the promise being kept (``Promise``), per destination index
        self.min_delay = [0] * n
        self.reaction_ns = 0
        #: dynamic floors last reported (``send_floors``), per destination index
        self.floor_abs = [0] * n
        #: while an event is handled: no send or timer before this time
        self.react_floor_ns = 0
        self.in_event = False
        actor._host = self

    # -- called by the actor ------------------------------------------------
    def send(self, dst: str, kind: str, body: Any, delay_ns: int) -> None:
        d = self.index_of.get(dst)
        latency = self.latency_ns.get(d)   # None: no such actor, or no link to it
        if latency is None:
            raise RuntimeError(f"{self.actor.name}: no link to {dst!r}: link invariant violated")
        if delay_ns < 0:
            raise ValueError(f"negative delay {delay_ns}")
        at = self.now_ns + delay_ns
        if self.in_event and (at < self.react_floor_ns or delay_ns < self.min_delay[d] or at < self.floor_abs[d]):
            raise RuntimeError(self._broken(f"send {kind!r} to {dst!r} with delay {delay_ns} ns"))
        self.seq += 1
        self.outbox.append((at + latency, self.index, self.seq, d, kind, body))

    def set_timer(self, name: str, delay_ns: int, data: Any) -> None:
        if delay_ns < 0:
            raise ValueError(f"negative delay {delay_ns}")
        if self.in_event and self.now_ns + delay_ns < self.react_floor_ns:
            raise RuntimeError(self._broken(f"timer {name!r} in {delay_ns} ns"))
        self.seq += 1
        self.timer_gen[name] = self.seq
        heapq.heappush(self.heap, (self.now_ns + delay_ns, self.index, self.seq, TIMER, [name, data]))

    def cancel_timer(self, name: str) -> None:
        self.timer_gen.pop(name, None)

    def trace(self, event: str, step: int | None, fields: dict) -> None:
        if self.record_trace:
            self.records.append((self.now_ns, self.actor.name, self.record_count, event, step, fields))
        self.record_count += 1

    def _broken(self, what: str) -> str:
        return (f"{self.actor.name}: {what} at {self.now_ns} breaks its promise (reaction "
                f"{self.reaction_ns} ns, least delays, floors): lookahead invariant violated")

    # -- called by the backend ----------------------------------------------
    def push(self, event: tuple) -> None:
        """Accept an inbound message event (deliver_ns, src, seq, kind, body)."""
        heapq.heappush(self.inbox, event)

    def next_ns(self) -> int:
        return min(self.heap[0][0] if self.heap else NEVER_NS, self.inbox[0][0] if self.inbox else NEVER_NS)

    def next_timer_ns(self) -> int:
        return self.heap[0][0] if self.heap else NEVER_NS

    def next_message_ns(self) -> int:
        return self.inbox[0][0] if self.inbox else NEVER_NS

    def pop_before(self, horizon_ns: int) -> tuple | None:
        """The next event (timer or message, in key order) below ``horizon_ns``, or None."""
        heap, inbox = self.heap, self.inbox
        if inbox and (not heap or inbox[0] < heap[0]):
            return heapq.heappop(inbox) if inbox[0][0] < horizon_ns else None
        if heap and heap[0][0] < horizon_ns:
            return heapq.heappop(heap)
        return None

    def run_until(self, horizon_ns: int) -> int:
        """Handle every event strictly below ``horizon_ns``; return the next event time."""
        while (event := self.pop_before(horizon_ns)) is not None:
            self.dispatch(event)
        return self.next_ns()

    def dispatch(self, event: tuple) -> None:
        t, src, seq, kind, body = event
        if t < self.now_ns:
            raise RuntimeError(f"{self.actor.name}: event at {t} before now {self.now_ns}: causality invariant violated")
        self.now_ns = t
        self.events_handled += 1
        self.dirty = True
        self.in_event = True
        try:
            if kind == TIMER:
                name, data = body
                if self.timer_gen.get(name) != seq:
                    return  # cancelled or replaced
                del self.timer_gen[name]
                self.react_floor_ns = t
                self.actor.on_timer(name, data)
            else:
                self.react_floor_ns = t + self.reaction_ns
                self.actor.on_message(self.names[src], kind, body)
        finally:
            self.in_event = False

    def start(self, restart: bool = False) -> None:
        if restart:
            self.actor.on_restart()
        else:
            self.actor.on_start()
        self._take_promise()

    def _take_promise(self) -> None:
        p = self.actor.promise()
        if not isinstance(p, Promise):
            raise TypeError(f"{self.actor.name}: promise() must return a Promise, not {type(p).__name__}")
        self.reaction_ns = min(PROMISE_MAX_NS, max(0, int(p.reaction_ns)))
        self.min_delay = [0] * len(self.names)
        for dst, ns in p.min_delay_ns.items():
            d = self.index_of.get(dst)
            if d is None:
                raise ValueError(f"{self.actor.name}: promise names no actor {dst!r}")
            self.min_delay[d] = min(PROMISE_MAX_NS, max(0, int(ns)))

    def promise_row(self) -> list:
        """[reaction_ns, [least delay per destination index]] for a coordinator."""
        return [self.reaction_ns, list(self.min_delay)]

    def report_floors(self) -> list[list[int]]:
        """Ask the actor's dynamic floors (``send_floors``), keep them to check
        later sends against, and return them as [[dst index, ns], ...]."""
        floors = self.actor.send_floors()
        self.floor_abs = [0] * len(self.names)
        out = []
        for dst in sorted(floors):
            d = self.index_of.get(dst)
            if d is None:
                raise ValueError(f"{self.actor.name}: send_floors names no actor {dst!r}")
            ns = min(NEVER_NS, max(0, int(floors[dst])))
            self.floor_abs[d] = ns
            out.append([d, ns])
        return out

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
