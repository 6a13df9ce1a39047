"""Both simulation backends implement one explicit interface, ``emu.backends.base.Backend``.

Proves: InlineBackend and ProcessesBackend subclass Backend and override every
abstract method (none is left abstract, none is inherited unimplemented); a
backend class missing any one abstract method cannot be instantiated; the
Rack touches its backend only through names the interface declares (no
getattr, no attribute set from outside); ``take_deaths`` returns and clears
deaths; the crash-point watch stops the inline backend at the k-th matching
record and is refused by the processes backend.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from emu.actor import NEVER_NS

import emu.rack
from emu.backends.base import Backend
from emu.backends.inline import InlineBackend
from emu.backends.processes import ProcessesBackend
from emu.rack import Rack
from support.actors import keeper_spec, pingpong_spec

BACKENDS = [InlineBackend, ProcessesBackend]
ABSTRACT = sorted(Backend.__abstractmethods__)


def test_interface_declares_what_the_rack_needs():
    """The abstract set is the rack's whole contract (a guard against it shrinking)."""
    assert set(ABSTRACT) == {"start", "close", "run", "next_ns", "next_times", "events_handled", "set_watch",
                             "clear_watch", "kill", "restart", "alive", "poll_deaths", "control", "query"}
    for name in ABSTRACT + ["take_deaths"]:
        assert inspect.getdoc(getattr(Backend, name)), f"Backend.{name} has no docstring"


@pytest.mark.parametrize("cls", BACKENDS, ids=lambda c: c.__name__)
def test_backends_implement_every_abstract_method(cls):
    assert issubclass(cls, Backend)
    assert not cls.__abstractmethods__, f"{cls.__name__} leaves {set(cls.__abstractmethods__)} abstract"
    for name in ABSTRACT:
        assert getattr(cls, name) is not getattr(Backend, name), f"{cls.__name__}.{name} not implemented"
    assert cls.name in emu.rack.BACKENDS


def _backend_class(missing: str | None) -> type:
    """A Backend subclass implementing every abstract method except ``missing``."""
    body = {name: (property(lambda self: 0) if name == "events_handled" else (lambda self, *a, **k: None))
            for name in ABSTRACT if name != missing}
    if missing != "poll_deaths":
        body["poll_deaths"] = lambda self: ["late"]
    return type(f"Without_{missing}", (Backend,), body)


@pytest.mark.parametrize("missing", ABSTRACT)
def test_backend_missing_a_method_cannot_be_instantiated(missing):
    with pytest.raises(TypeError, match=missing):
        _backend_class(missing)(pingpong_spec(1), {}, {}, None)


def test_take_deaths_returns_recorded_then_polled_and_clears():
    backend = _backend_class(None)(pingpong_spec(1), {}, {}, None)
    backend.deaths.append("early")
    assert backend.take_deaths() == ["early", "late"]
    assert backend.deaths == []
    assert backend.take_deaths() == ["late"]  # only the poll remains


def _backend_uses(tree: ast.AST) -> tuple[set[str], list[str]]:
    """Names read as ``self.backend.X`` in the rack, and offending uses."""
    used, bad = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "backend":
            used.add(node.attr)
            if isinstance(node.ctx, ast.Store):
                bad.append(f"sets backend.{node.attr} (line {node.lineno})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "hasattr") \
                and any("backend" in ast.unparse(a) for a in node.args):
            bad.append(f"{node.func.id} on the backend (line {node.lineno})")
    return used, bad


def test_rack_uses_only_the_interface():
    used, bad = _backend_uses(ast.parse(Path(emu.rack.__file__).read_text()))
    assert not bad, bad
    declared = {n for n in dir(Backend) if not n.startswith("_")} | {"signals", "deaths"}
    assert used <= declared, f"the rack uses {sorted(used - declared)} outside the interface"
    assert "take_deaths" in used and "set_watch" in used and "clear_watch" in used


def test_watch_stops_inline_at_the_kth_record_and_processes_refuses():
    """The keeper traces one record (step None) per 100 us tick: the 3rd is at 300 us."""
    with Rack(keeper_spec(), backend="inline") as rack:
        assert rack.run_until_record({None}, 3, 10_000_000) == 300_000
        assert rack.now_ns == 300_000
        assert rack.backend.watch_steps is None, "watch left armed"
    with Rack(keeper_spec(), backend="processes") as rack:
        with pytest.raises(ValueError, match="inline backend"):
            rack.run_until_record({None}, 3, 10_000_000)


def test_next_times_agree_between_backends_and_with_next_ns():
    """Each actor's next event (the front-ends' closed loop reads it): the same
    in both backends, its minimum is ``next_ns``, and a killed actor has none."""
    seen = {}
    for backend in ("inline", "processes"):
        with Rack(keeper_spec(), backend=backend) as rack:
            rack.run_for(250_000)
            times = rack.backend.next_times()
            assert min(times) == rack.backend.next_ns()
            name = rack.spec.actors[0].name
            rack.kill(name)
            assert rack.backend.next_times()[0] == NEVER_NS
            seen[backend] = times
    assert seen["inline"] == seen["processes"]


def test_signal_log_reads_from_where_a_reader_stopped_and_lets_old_entries_go():
    """A long session raises a signal per batch: the log's memory stays
    bounded, a reader that keeps up sees every signal once, in order, and
    a reader that fell behind what was let go is told so."""
    from emu.backends.base import SignalLog
    log = SignalLog(keep=100)
    seen, got = 0, []
    for t in range(10_000):
        log.append((t, "host", "fe"))
        if t % 37 == 0:
            got += log[seen:]
            seen = len(log)
    got += log[seen:]
    assert [s[0] for s in got] == list(range(10_000))
    assert len(log) == 10_000
    assert len(log._items) <= 2 * log.keep
    with pytest.raises(RuntimeError, match="let go"):
        log[0:]
