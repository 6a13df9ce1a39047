"""Console transport: one request/answer per console line, over ZeroMQ.

Local racks use ipc endpoints inside the rack's private 0700 run directory.
A rack reachable over tcp must be authenticated: ``RackKeys`` generates a
CurveZMQ server and client key pair per rack (secret files 0600); the
server accepts only client keys in its authorised folder, and every refused
handshake (no CURVE at all, or an unknown key) is counted and logged once
per peer address. Frames use the versioned wire header (``emu.wire``):
``CONSOLE [line]`` -> ``CONSOLE_REPLY [ok, text]``; a malformed frame is
counted and dropped.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from emu import wire
from emu.wire import Cmd

MAX_LINE_BYTES = 64 << 10
log = logging.getLogger("emu.remote")


class RackKeys:
    """Per-rack CurveZMQ keys: ``server.key(_secret)``, ``client.key(_secret)``
    and ``authorized/client.key`` (the public keys the server accepts)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @classmethod
    def generate(cls, folder: str | Path) -> "RackKeys":
        folder = Path(folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        zmq.auth.create_certificates(str(folder), "server")
        zmq.auth.create_certificates(str(folder), "client")
        (folder / "authorized").mkdir(mode=0o700, exist_ok=True)
        shutil.copy(folder / "client.key", folder / "authorized" / "client.key")
        for secret in folder.glob("*.key_secret"):
            os.chmod(secret, 0o600)
        return cls(folder)

    def server_pair(self):
        return zmq.auth.load_certificate(str(self.folder / "server.key_secret"))

    def client_pair(self):
        return zmq.auth.load_certificate(str(self.folder / "client.key_secret"))

    def server_public(self) -> bytes:
        return zmq.auth.load_certificate(str(self.folder / "server.key"))[0]


class ConsoleServer:
    """Answers console lines with ``handle(line) -> (ok, text)``."""

    def __init__(self, endpoint: str, handle, keys: RackKeys | None = None):
        self.handle = handle
        self.ctx = zmq.Context()
        self.auth = None
        self.refused = 0
        self.dropped = wire.DropCounter("console", log=lambda m: print(m, file=sys.stderr))
        self._refused_from: set[str] = set()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        if endpoint.startswith("tcp://"):
            if keys is None:
                raise ValueError("a tcp console needs CurveZMQ keys (RackKeys)")
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(keys.folder / "authorized"))
            public, secret = keys.server_pair()
            self.sock.curve_secretkey, self.sock.curve_publickey = secret, public
            self.sock.curve_server = True
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def serve(self, timeout_ms: int = 100) -> int:
        """Handle what arrived within ``timeout_ms``; return lines answered."""
        answered = 0
        for sock, _ in self.poller.poll(timeout_ms):
            if sock is self.monitor:
                self._note_refusal(recv_monitor_message(self.monitor))
                continue
            frames = self.sock.recv_multipart()
            if len(frames) != 2:
                self.dropped.drop("bad envelope")
                continue
            try:
                cmd, _seq, body = wire.decode(frames[1])
                if cmd != Cmd.CONSOLE or not isinstance(body, list) or len(body) != 1 \
                        or not isinstance(body[0], str) or len(body[0]) > MAX_LINE_BYTES:
                    raise wire.WireError(f"not a console line ({cmd!r})")
            except wire.WireError as exc:
                self.dropped.drop(str(exc))
                continue
            ok, text = self.handle(body[0])
            self.sock.send_multipart([frames[0], wire.encode(Cmd.CONSOLE_REPLY, [bool(ok), str(text)])])
            answered += 1
        return answered

    def serve_until(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.serve(100)

    def _note_refusal(self, event: dict) -> None:
        self.refused += 1
        peer = event.get("endpoint", b"?")
        peer = peer.decode(errors="replace") if isinstance(peer, bytes) else str(peer)
        if peer not in self._refused_from:
            self._refused_from.add(peer)
            log.warning("console: refused an unauthenticated client on %s (event %s)", peer, event.get("event"))

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()


class ConsoleClient:
    """Sends console lines; over tcp it needs the rack's client keys."""

    def __init__(self, endpoint: str, keys: RackKeys | None = None):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if keys is not None:
            public, secret = keys.client_pair()
            self.sock.curve_secretkey, self.sock.curve_publickey = secret, public
            self.sock.curve_serverkey = keys.server_public()
        self.sock.connect(endpoint)

    def request(self, line: str, timeout_ms: int = 10_000) -> tuple[bool, str]:
        self.sock.send(wire.encode(Cmd.CONSOLE, [line]))
        if not self.sock.poll(timeout_ms):
            raise TimeoutError(f"no answer from the rack within {timeout_ms} ms "
                               "(is it up? over tcp, are the rack's keys given?)")
        cmd, _seq, body = wire.decode(self.sock.recv())
        if cmd != Cmd.CONSOLE_REPLY:
            raise wire.WireError(f"unexpected {cmd!r} from the rack")
        return bool(body[0]), str(body[1])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()
