"""The coordinator's links to its actors (``emu.fabric``): a unix channel
delivers whole frames of any size in order and says when its peer is gone;
both fabrics give the same trace, drop garbage the same way, and notice a
kill -9 from outside."""

from __future__ import annotations

import os
import signal
import socket

import numpy as np
import pytest

from emu import fabric, wire
from emu.backends.base import RackError
from emu.fabric import Channel, LinkLost
from emu.rack import Rack
from emu.toy import toy_spec

FABRICS = list(fabric.FABRICS)


def _pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Channel(a), Channel(b)


def test_channel_frames_of_every_size_arrive_whole_and_in_order():
    """Small frames, one larger than a socket buffer, and empty ones: each
    comes out exactly as it went in (a writer thread keeps the big one
    moving while the reader reads)."""
    import threading
    rng = np.random.default_rng(5)
    frames = [b"", b"x", rng.bytes(100), rng.bytes(fabric.SMALL_FRAME), rng.bytes(fabric.SMALL_FRAME + 1),
              rng.bytes(3 * fabric.SOCKET_BUFFER + 17), b"", rng.bytes(4096)]
    a, b = _pair()
    try:
        writer = threading.Thread(target=lambda: [a.send(f) for f in frames])
        writer.start()
        got = [b.recv() for _ in frames]
        writer.join()
        assert [len(g) for g in got] == [len(f) for f in frames]
        assert got == frames
    finally:
        a.close()
        b.close()


def test_channel_end_of_stream_and_corrupt_prefix_are_link_lost():
    a, b = _pair()
    a.send(b"last words")
    a.close()
    assert b.recv() == b"last words"
    with pytest.raises(LinkLost):
        b.recv()
    with pytest.raises(LinkLost):
        b.send(b"to nobody")
    b.close()
    a, b = _pair()
    try:
        a.sock.sendall(fabric.PREFIX.pack(fabric.FRAME_MAX + 1))
        with pytest.raises(LinkLost, match="corrupt stream"):
            b.recv()
        a.sock.sendall(fabric.PREFIX.pack(10) + b"abc")   # a frame cut short by a death
        a.close()
        with pytest.raises(LinkLost):
            b.recv()
    finally:
        b.close()


def _toy(seed: int) -> str:
    with Rack(toy_spec(n_clients=4, inflight=4, requests=120, seed=seed), backend="processes") as rack:
        rack.run_until_idle()
        assert rack.events_handled == 4 * 120 * 2
        return rack.finish_trace()


def test_both_fabrics_give_the_inline_trace(monkeypatch):
    with Rack(toy_spec(n_clients=4, inflight=4, requests=120, seed=3), backend="inline") as rack:
        rack.run_until_idle()
        reference = rack.finish_trace()
    for name in FABRICS:
        monkeypatch.setenv("EMU_FABRIC", name)
        assert _toy(3) == reference, f"fabric {name}: trace differs from inline"


def test_unknown_fabric_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("EMU_FABRIC", "carrier-pigeon")
    with pytest.raises(RackError, match="EMU_FABRIC='carrier-pigeon'.*unix, zmq"):
        Rack(toy_spec(n_clients=1, inflight=1, requests=1, seed=1), backend="processes")


@pytest.mark.parametrize("name", FABRICS)
def test_garbage_dropped_and_kill9_noticed_on_each_fabric(monkeypatch, name):
    """Malformed frames to a live actor are counted and dropped; an actor
    killed from outside between rounds is reported as died, and the rack
    goes on without it."""
    monkeypatch.setenv("EMU_FABRIC", name)
    frames = [b"", b"RACK01", wire.HEADER.pack(wire.MAGIC, 200, 0, 0, 0), wire.encode(wire.Cmd.GRANT, []),
              np.random.default_rng(9).bytes(200)]
    with Rack(toy_spec(n_clients=3, inflight=2, requests=400, seed=4), backend="processes") as rack:
        rack.run_for(100_000)
        for f in frames:
            rack.backend.send_raw("server0", f)
        assert rack.backend.raw_query("server0", {})["_dropped_frames"] == len(frames)
        victim = rack.backend.pid("client1")
        os.kill(victim, signal.SIGKILL)
        rack.run_until_idle()
        died = [f["actor"] for f in rack.faults if f["fault"] == "died"]
        assert died == ["client1"], f"fabric {name}: faults {rack.faults}"
        assert not rack.alive("client1") and rack.alive("client0")


def test_actor_module_warm_up_runs_once_in_the_parent_before_the_fork():
    """An actor module's warm_up() runs in the coordinator's process, once
    however many racks it starts, and the children inherit its result."""
    from support import actors
    from support.actors import keeper_spec
    for seed in (1, 2):
        with Rack(keeper_spec(seed), backend="processes") as rack:
            assert rack.query("keeper", {})["warmed_in"] == [os.getpid()]
            assert rack.backend.pid("keeper") != os.getpid()
    assert actors.WARMED_IN == [os.getpid()]
