"""The one interface a simulation backend offers the ``Rack``.

In the style of SimPy's ``BaseEnvironment``: ``Backend`` names every method
and attribute the rack uses, each abstract one raising ``NotImplementedError``
and saying what an implementation must do. Virtual time is an integer number
of nanoseconds everywhere (``*_ns`` names); nothing here reads the wall clock.

A backend owns the actors of one rack (built from its spec), delivers their
events in (time, source, sequence) order, collects their trace records into
the rack's sink and their signals into ``signals``, and notices actors that
died without being told to (``take_deaths``). Both backends must give the
same trace for the same spec and seed.

It also holds what both backends share: their bookkeeping (``__init__``),
the job that builds an actor's host (``host_job`` + ``make_host``), the
death list, and the rule that a bug in an actor's handler stops the run
loudly as ``ActorFailed``, naming the actor, the event and the virtual time.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Callable

from emu.actor import TIMER, ActorHost
from emu.spec import RackSpec, load_class

#: an incarnation's sequence numbers start at incarnation * INCARNATION_SEQ,
#: so the events of a restarted actor never collide with the old ones
INCARNATION_SEQ = 1 << 40
#: the seed of incarnation k of an actor is rack seed + k * INCARNATION_SEED_STEP
INCARNATION_SEED_STEP = 7919
#: the signal a backend raises when a crash-point watch (``set_watch``) fires
WATCH_SIGNAL = "__watch__"


class RackError(RuntimeError):
    """An actor failed (exception in a handler, or the protocol broke)."""


class ActorFailed(RackError):
    """An actor's handler raised: the run stops, naming the actor, the event
    it was handling and the virtual time (``remote_traceback`` is the
    actor's traceback when it ran in another process)."""

    def __init__(self, actor: str, event: str, time_ns: int, cause: str, remote_traceback: str = ""):
        self.actor, self.event, self.time_ns, self.cause = actor, event, int(time_ns), cause
        self.remote_traceback = remote_traceback
        text = f"actor {actor!r} failed handling {event} at {self.time_ns} ns: {cause}"
        super().__init__(f"{text}\n{remote_traceback}" if remote_traceback else text)


def describe_event(host: ActorHost, event: tuple) -> str:
    """A short name of a host event (deliver_ns, src, seq, kind, body)."""
    _t, src, _seq, kind, body = event
    if kind == TIMER:
        return f"timer {body[0]!r}"
    return f"message {kind!r} from {host.names[src]!r}"


def event_failed(host: ActorHost, event: tuple, exc: BaseException) -> ActorFailed:
    """The error to raise when dispatching ``event`` to ``host`` raised ``exc``."""
    return ActorFailed(host.actor.name, describe_event(host, event), event[0], _cause(exc))


def call_handler(host: ActorHost, what: str, call: Callable, *args) -> Any:
    """``call(*args)``, a call into ``host``'s actor (start, control, query,
    checkpoint); an exception from it becomes ``ActorFailed`` naming ``what``."""
    try:
        return call(*args)
    except ActorFailed:
        raise
    except Exception as exc:
        raise ActorFailed(host.actor.name, what, host.now_ns, _cause(exc)) from exc


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def make_host(job: dict, regions: dict) -> ActorHost:
    """Build the host of one actor incarnation from ``Backend.host_job``."""
    actor = load_class(job["cls"])(job["name"], job["params"])
    host = ActorHost(actor, job["index"], job["index_of"], job["latency"], job["seed"],
                     regions, job["record_trace"])
    host.seq = job["incarnation"] * INCARNATION_SEQ
    host.now_ns = job["now_ns"]
    return host


class SignalLog:
    """The signals raised so far, read by absolute position.

    Readers remember ``len(log)`` and later read ``log[seen:]``: what was
    raised since. Only the newest ``keep`` entries (at least) are held, so a
    long session (an NBD client raising a signal per batch of completions
    for hours) does not grow memory with every batch. A reader that asks
    for an entry already let go is our bug, and raises."""

    __slots__ = ("_items", "_base", "keep")

    def __init__(self, keep: int = 1 << 16):
        self._items: list[tuple[int, str, str]] = []
        #: absolute position of _items[0]
        self._base = 0
        self.keep = keep

    def append(self, signal: tuple[int, str, str]) -> None:
        items = self._items
        items.append(signal)
        if len(items) > 2 * self.keep:
            cut = len(items) - self.keep
            del items[:cut]
            self._base += cut

    def __len__(self) -> int:
        return self._base + len(self._items)

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step is not None or index.stop is not None:
            raise TypeError("a SignalLog is read as log[since:]")
        since = index.start or 0
        if since < self._base:
            raise RuntimeError(f"signals from position {since} were let go (the log holds {self._base} on): "
                               "a reader fell more than SignalLog.keep signals behind")
        return self._items[since - self._base:]


class Backend(ABC):
    """Runs the actors of one rack in virtual time; driven by ``emu.rack.Rack``.

    Attributes every backend has:

    * ``name`` (class attribute): the backend's name, as passed to ``Rack``;
    * ``signals``: the signals raised so far, in the order raised, as
      ``(time_ns, actor, name)`` (a ``SignalLog``: appended to, read by
      absolute position from where a reader stopped, old entries let go);
    * ``deaths``: names of actors noticed dead since the last
      ``take_deaths`` (read them through ``take_deaths``);
    * ``events_handled``: events handled by all actors so far;
    * ``rounds``, ``dropped_to_dead``: statistics (scheduler rounds,
      messages dropped because their destination was down).
    """

    name: str = ""

    def __init__(self, spec: RackSpec, typed: dict[str, dict], regions: dict, sink, record_trace: bool = True):
        self.spec = spec
        self.typed = typed
        self.regions = regions
        self.sink = sink
        self.record_trace = record_trace
        self.index_of = spec.index_of()
        self.latency = spec.latency_map()
        self.incarnation = [0] * len(spec.actors)
        self.rounds = 0
        self.dropped_to_dead = 0
        #: (time_ns, actor, name) of the signals raised so far
        self.signals = SignalLog()
        #: actors noticed dead since the last take_deaths
        self.deaths: list[str] = []
        #: matching records the event that fired the last watch traced after
        #: the one that fired it (the stop is after the whole event)
        self.watch_overrun = 0

    # -- lifecycle ----------------------------------------------------------------
    @abstractmethod
    def start(self) -> None:
        """Create every actor and call its ``on_start`` at virtual time 0,
        collecting what it sent, traced and signalled."""
        raise NotImplementedError

    @abstractmethod
    def close(self) -> None:
        """Stop every actor and release what the backend holds (processes,
        sockets, run directories; not the regions, which the rack owns).
        Must work after a failed ``start`` or run, and leave nothing behind."""
        raise NotImplementedError

    # -- running ------------------------------------------------------------------
    @abstractmethod
    def run(self, until_ns: int, exact_signal: bool | str = False) -> int:
        """Handle every event strictly below ``until_ns`` and return
        ``until_ns``, with the trace flushed up to it. With ``exact_signal``
        (True: any signal; a str: the signal of that name) stop right after
        the event that raised it and return that event's time instead; a
        backend that cannot stop inside a round raises ValueError."""
        raise NotImplementedError

    @abstractmethod
    def next_ns(self) -> int:
        """Time of the earliest pending event of a live actor, or ``NEVER_NS``."""
        raise NotImplementedError

    @abstractmethod
    def next_times(self) -> list[int]:
        """Per actor (by index), the time of its earliest pending event
        (messages on their way to it included), ``NEVER_NS`` for none or a
        dead actor. A lower bound: a cancelled timer may still count."""
        raise NotImplementedError

    @property
    @abstractmethod
    def events_handled(self) -> int:
        """Events (messages and timers) handled by all actors so far."""
        raise NotImplementedError

    # -- crash-point watch --------------------------------------------------------
    @abstractmethod
    def set_watch(self, steps: set[int], count: int) -> None:
        """Arm the watch: right after the ``count``-th trace record whose step
        is in ``steps``, append ``(its time_ns, its actor, WATCH_SIGNAL)`` to
        ``signals`` and disarm, so ``run(..., exact_signal=WATCH_SIGNAL)``
        stops exactly there; ``watch_overrun`` then counts the matching records
        that same event traced after it (they are passed as well, so a run
        going on from this stop must not count them again). A backend without
        exact stops raises ValueError."""
        raise NotImplementedError

    @abstractmethod
    def clear_watch(self) -> None:
        """Disarm the watch (whether or not it fired)."""
        raise NotImplementedError

    # -- faults -------------------------------------------------------------------
    @abstractmethod
    def kill(self, actor: str, now_ns: int) -> None:
        """Kill ``actor`` at ``now_ns``: its pending events and the messages
        later sent to it are dropped. LookupError if it is already down."""
        raise NotImplementedError

    @abstractmethod
    def restart(self, actor: str, now_ns: int) -> None:
        """Bring a killed ``actor`` back at ``now_ns`` as a new incarnation
        (fresh state, same regions, ``on_restart``). LookupError if it runs."""
        raise NotImplementedError

    @abstractmethod
    def alive(self, actor: str) -> bool:
        """True while ``actor`` runs (not killed, not died)."""
        raise NotImplementedError

    @abstractmethod
    def poll_deaths(self) -> list[str]:
        """Look for actors that died by themselves since the last look (e.g.
        a process killed from outside): mark them down, return their names."""
        raise NotImplementedError

    def pid(self, actor: str) -> int | None:
        """The OS process that runs ``actor`` (this one for the inline backend)."""
        return os.getpid()

    def process_table(self) -> list[dict]:
        """One row per actor: name, pid (None while down), alive, restarts."""
        return [{"name": a.name, "pid": self.pid(a.name) if self.alive(a.name) else None,
                 "alive": self.alive(a.name), "restarts": self.incarnation[i]}
                for i, a in enumerate(self.spec.actors)]

    def take_deaths(self) -> list[str]:
        """Return and forget every death noticed so far: those recorded in
        ``deaths`` while running, then those ``poll_deaths`` finds now."""
        dead, self.deaths = self.deaths, []
        return dead + self.poll_deaths()

    # -- console ------------------------------------------------------------------
    @abstractmethod
    def control(self, actor: str, now_ns: int, command: dict) -> dict:
        """Apply a console command to ``actor`` at the paused time ``now_ns``
        (``on_control``); what it sends or traces joins the run. KeyError for
        an unknown actor, LookupError for one that is down."""
        raise NotImplementedError

    @abstractmethod
    def query(self, actor: str, query: dict) -> dict:
        """Ask ``actor`` a read-only question (``on_query``), outside virtual
        time. KeyError for an unknown actor, LookupError for one that is down."""
        raise NotImplementedError

    # -- shared helpers -----------------------------------------------------------
    def _index_up(self, actor: str) -> int:
        """Index of ``actor``; KeyError if unknown, LookupError if down."""
        i = self.index_of.get(actor)
        if i is None:
            raise KeyError(f"no actor named {actor!r}")
        if not self.alive(actor):
            raise LookupError(f"actor {actor!r} is down")
        return i

    def host_job(self, i: int, now_ns: int) -> dict:
        """Everything ``make_host`` needs to build actor ``i``'s current
        incarnation at ``now_ns`` (plain data, so it can cross a fork)."""
        a = self.spec.actors[i]
        return {"name": a.name, "cls": a.cls, "params": self.typed[a.name], "index": i,
                "index_of": self.index_of, "latency": self.latency[a.name],
                "seed": self.spec.seed + self.incarnation[i] * INCARNATION_SEED_STEP,
                "incarnation": self.incarnation[i], "now_ns": now_ns, "rack": self.spec.name,
                "record_trace": self.record_trace}
