"""Shared by the front-end tests: the config, an `emu up` rack with its
exports, and a minimal raw NBD client for the bad-client tests."""

import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "two-site.toml")
EMU = [sys.executable, "-m", "controllers.cli"]


def need(*tools: str) -> str | None:
    """Why the tools are missing (`make clients` installs them), or None."""
    missing = [t for t in tools if shutil.which(t) is None]
    return f"needs {', '.join(missing)} (make clients)" if missing else None


class UpRack:
    """`emu up CONFIG --nbd ...` in a subprocess; `svp(...)` runs console lines; `down()` stops it."""

    def __init__(self, name: str, config: str = CFG, *extra: str):
        self.name = name
        up = subprocess.run(EMU + ["up", config, "--name", name, "--nbd", *extra], capture_output=True, text=True,
                            timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        self.lines = up.stdout.splitlines()
        words = [ln.split() for ln in self.lines if ln.startswith(("nbd ", "fuse ")) and len(ln.split()) == 3]
        self.uris = {w[1]: w[2] for w in words if w[0] == "nbd" and w[2].startswith("nbd+unix:")}
        self.tcp_uris = {w[1]: w[2] for w in words if w[0] == "nbd" and w[2].startswith("nbd://")}
        self.files = {w[1]: w[2] for w in words if w[0] == "fuse"}
        if not self.uris:
            self.down()
            raise AssertionError(f"emu up printed no export: {up.stdout}")
        self.socket = self.uris["main:0"].split("socket=", 1)[1]

    def svp(self, commands: str, ok: bool = True) -> str:
        done = subprocess.run(EMU + ["svp", "--name", self.name, "-c", commands], capture_output=True, text=True,
                              timeout=300)
        if ok:
            assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def down(self) -> None:
        done = subprocess.run(EMU + ["down", "--name", self.name], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr


def run(cmd: list[str], ok: bool = True, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if ok:
        assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    return done


# -- a raw NBD client (the protocol's numbers, written out) ----------------------------
NBDMAGIC, IHAVEOPT, REPLY_MAGIC_OPT = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
OPT_GO, OPT_LIST, OPT_ABORT = 7, 3, 2
REQUEST_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    magic, opt, _flags = struct.unpack(">QQH", recv_exact(s, 18))
    assert (magic, opt) == (NBDMAGIC, IHAVEOPT)
    return s


def option(s: socket.socket, opt: int, data: bytes = b"") -> None:
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def option_reply(s: socket.socket) -> tuple[int, int, bytes]:
    magic, opt, rep, n = struct.unpack(">QIII", recv_exact(s, 20))
    assert magic == REPLY_MAGIC_OPT
    return opt, rep, recv_exact(s, n)


def go(path: str, export: str) -> tuple[socket.socket, int]:
    """A connection in transmission on ``export``; its size."""
    s = connect(path)
    s.sendall(struct.pack(">I", 3))
    name = export.encode()
    option(s, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    size = None
    while True:
        _opt, rep, data = option_reply(s)
        if rep == 3 and struct.unpack(">H", data[:2])[0] == 0:
            size = struct.unpack(">Q", data[2:10])[0]
        if rep == 1:
            return s, size
        assert rep < (1 << 31), f"GO refused: {rep:#x} {data!r}"


def request(s: socket.socket, cmd: int, offset: int, length: int, handle: int = 7, flags: int = 0,
            data: bytes = b"") -> None:
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, handle, offset, length) + data)


def reply(s: socket.socket, read_bytes: int = 0) -> tuple[int, int, bytes]:
    magic, error, handle = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == SIMPLE_REPLY_MAGIC
    return error, handle, recv_exact(s, read_bytes) if read_bytes and error == 0 else b""


def closed(s: socket.socket) -> bool:
    """True when the server closed the connection (what it does to a client it cannot trust)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
