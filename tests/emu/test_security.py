"""Security of the console transport: over tcp a client without the rack's
CurveZMQ keys (plain, or with keys of another rack) is refused and the
refusal is counted; with the rack's keys it works. Secret key files are 0600,
the key folder 0700; garbage frames are counted and dropped."""

import os
import stat
import threading

import pytest

from emu import wire
from emu.remote import ConsoleClient, ConsoleServer, RackKeys


@pytest.fixture
def served(tmp_path):
    keys = RackKeys.generate(tmp_path / "keys")
    server = ConsoleServer("tcp://127.0.0.1:*", lambda line: (True, f"echo {line}"), keys)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_until, args=(stop,))
    thread.start()
    try:
        yield server, keys, tmp_path
    finally:
        stop.set()
        thread.join()
        server.close()


def test_keys_are_private(served):
    _server, keys, _ = served
    assert stat.S_IMODE(os.stat(keys.folder).st_mode) == 0o700
    for secret in keys.folder.glob("*.key_secret"):
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600


def test_client_with_keys_is_served(served):
    server, keys, _ = served
    client = ConsoleClient(server.endpoint, keys)
    try:
        assert client.request("pairdisplay") == (True, "echo pairdisplay")
    finally:
        client.close()


def test_client_without_keys_is_refused_and_logged(served):
    server, _keys, _ = served
    client = ConsoleClient(server.endpoint)
    try:
        with pytest.raises(TimeoutError):
            client.request("pairdisplay", timeout_ms=1500)
    finally:
        client.close()
    assert server.refused >= 1


def test_client_with_another_racks_keys_is_refused(served, tmp_path):
    server, keys, _ = served
    other = RackKeys.generate(tmp_path / "other")
    # right server key, wrong client key: the ZAP handler must deny it
    os.replace(other.folder / "server.key", other.folder / "server.key.other")
    (other.folder / "server.key").write_bytes((keys.folder / "server.key").read_bytes())
    client = ConsoleClient(server.endpoint, other)
    try:
        with pytest.raises(TimeoutError):
            client.request("pairdisplay", timeout_ms=1500)
    finally:
        client.close()
    assert server.refused >= 1


def test_tcp_console_without_keys_cannot_be_opened():
    with pytest.raises(ValueError, match="needs CurveZMQ keys"):
        ConsoleServer("tcp://127.0.0.1:*", lambda line: (True, ""))


def test_garbage_frames_are_counted_not_fatal(tmp_path):
    server = ConsoleServer(f"ipc://{tmp_path}/c.sock", lambda line: (True, "ok"))
    import zmq
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(server.endpoint)
    try:
        raw.send(b"not a frame")
        raw.send(wire.encode(wire.Cmd.GRANT, [1, []]))
        raw.send(wire.encode(wire.Cmd.CONSOLE, ["show time"]))
        while server.serve(200) == 0:
            pass
        assert raw.poll(2000)
        cmd, _, body = wire.decode(raw.recv())
        assert cmd == wire.Cmd.CONSOLE_REPLY and body == [True, "ok"]
        assert server.dropped.dropped == 2
    finally:
        raw.close(0)
        ctx.term()
        server.close()
