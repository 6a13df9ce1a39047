"""A bug inside an actor's handler stops the run loudly, naming the actor, the event and the virtual time.

Proves, in both backends: an exception raised by an actor's handler (a
timer, a message, start, a console command or query) is not swallowed nor
reported bare, but raised from the rack as ``ActorFailed`` (a ``RackError``)
whose message names the actor, the event (timer name, message kind and
sender, or the console command) and the virtual time, and carries the
original error (chained in ``inline``, its traceback in ``processes``).
Malformed wire frames are another matter (dropped and counted, see
test_substrate.py). The failing actor is ``support.actors.Faulty``.
"""

from __future__ import annotations

import pytest

from emu.backends.base import ActorFailed, RackError
from emu.rack import Rack
from emu.spec import ActorSpec, LinkSpec, RackSpec

BACKENDS = ["inline", "processes"]


def faulty_spec(fail_in: str) -> RackSpec:
    """``bad`` (Faulty) linked to ``peer`` (a Ponger) by 10 us: timer at 50 us,
    poke reaches peer at 60 us, the ball comes back to ``bad`` at 70 us."""
    return RackSpec("faulty", 1, [
        ActorSpec("bad", "support.actors:Faulty", {"fail_in": fail_in}),
        ActorSpec("peer", "support.actors:Ponger", {}),
    ], [LinkSpec("bad", "peer", 10_000)])


CASES = {  # fail_in -> (event named, virtual time of the failure)
    "start": ("start", 0),
    "timer": ("timer 'boom'", 50_000),
    "message": ("message 'ball' from 'peer'", 70_000),
    "control": ("control 'explode'", 20_000),
    "query": ("query 'state'", 0),   # outside virtual time: the actor's own clock
}


def _fail(backend: str, fail_in: str) -> ActorFailed:
    with pytest.raises(ActorFailed) as info:
        with Rack(faulty_spec(fail_in), backend=backend) as rack:
            if fail_in in ("control", "query"):
                rack.run_for(20_000)  # before the timer: nothing else has run yet
                if fail_in == "control":
                    rack.control("bad", {"cmd": "explode"})
                else:
                    rack.query("bad", {"q": "state"})
            rack.run_for(1_000_000)
            pytest.fail(f"{backend}: the planted bug in {fail_in} did not stop the run")
    return info.value


@pytest.mark.parametrize("fail_in", sorted(CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_handler_bug_stops_run_naming_actor_event_and_time(backend, fail_in):
    event, time_ns = CASES[fail_in]
    exc = _fail(backend, fail_in)
    assert isinstance(exc, RackError)
    assert (exc.actor, exc.event, exc.time_ns) == ("bad", event, time_ns), f"{backend}: {exc}"
    headline = str(exc).splitlines()[0]
    assert headline == (f"actor 'bad' failed handling {event} at {time_ns} ns: "
                        f"ZeroDivisionError: planted bug in {fail_in}"), f"{backend}: {headline}"
    if backend == "inline":
        assert isinstance(exc.__cause__, ZeroDivisionError)
    else:
        assert "Traceback" in exc.remote_traceback and f"planted bug in {fail_in}" in exc.remote_traceback


def test_same_failure_in_both_backends():
    """The failure is part of the deterministic run: the same headline in both backends."""
    heads = {be: str(_fail(be, "message")).splitlines()[0] for be in BACKENDS}
    assert heads["inline"] == heads["processes"], heads
