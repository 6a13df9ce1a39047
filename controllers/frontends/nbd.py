"""An NBD server for the rack's LDEVs: every LDEV of every site is an export
named ``SITE:LDEV``.

No Python NBD *server* library is kept on PyPI (nbdkit is the well-kept
server, in C; its Python plugin is a separate Debian package and would add a
process hop per request), so this is a small server of the protocol's
fixed-newstyle subset (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md):

* handshake: ``NBDMAGIC IHAVEOPT`` with FIXED_NEWSTYLE and NO_ZEROES;
  options EXPORT_NAME, ABORT, LIST, INFO and GO (with INFO_EXPORT,
  INFO_NAME, INFO_DESCRIPTION and INFO_BLOCK_SIZE), every other option
  answered ``NBD_REP_ERR_UNSUP`` (so structured replies are not negotiated
  and replies are simple);
* transmission: READ, WRITE (with FUA), FLUSH, TRIM and DISC; any other
  command gets EINVAL.

Threads: one accepts per listening socket; per connection one reads
requests and hands them to the :class:`FrontendHub` (the rack's thread
answers them), one writes the answers, so a client that stops reading
never holds up the rack. A connection keeps at most ``MAX_INFLIGHT``
requests in the rack (then its reader waits: back-pressure, not a growing
queue). Bad clients: a garbage or oversized handshake closes the
connection; a request with a bad magic, or a write whose payload is larger
than the maximum block, closes it (the stream cannot be trusted after it);
out-of-range or misaligned requests get EINVAL/ENOSPC; a client that
vanishes mid-request is forgotten once the rack has answered what it had
in flight. None of it reaches the rack.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import queue
import socket
import struct
import threading
from dataclasses import dataclass

from controllers.formats.capture import FLAG_FUA
from controllers.frontends.core import MAX_REQUEST_BYTES, FrontendHub, Request, Result
from firmware.protocol import SECTOR_BYTES

log = logging.getLogger("emu.nbd")

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC_OPT = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
CLIENT_FLAGS_KNOWN = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_POLICY, REP_ERR_INVALID, REP_ERR_UNKNOWN = (1 << 31) + 1, (1 << 31) + 2, (1 << 31) + 3, (1 << 31) + 6
INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 0, 1, 2, 3

TF_HAS_FLAGS, TF_SEND_FLUSH, TF_SEND_FUA, TF_SEND_TRIM, TF_CAN_MULTI_CONN = 1, 4, 8, 32, 256
#: FLUSH covers every connection's acknowledged writes (it drains the LDEV's
#: write-pending tracks in the DKC), so several connections may share an export
TRANSMISSION_FLAGS = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_TRIM | TF_CAN_MULTI_CONN

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_FLAG_FUA = 1
CMD_FLAGS_KNOWN = CMD_FLAG_FUA | 2 | 4 | 8    # FUA, NO_HOLE, DF, FAST_ZERO: the others are ignored

#: an option's data larger than this closes the connection (names are at most 4 KiB)
MAX_OPTION_BYTES = 64 << 10
#: options a client may send before it must choose an export
MAX_OPTIONS = 64
#: requests one connection keeps in the rack at once
MAX_INFLIGHT = 64
#: wall seconds a client may take over the handshake
HANDSHAKE_TIMEOUT_S = 30.0
BLOCK_MIN, BLOCK_PREFERRED = SECTOR_BYTES, 4096

_REQ = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")
_OPT = struct.Struct(">QII")
_OPT_REPLY = struct.Struct(">QIII")


class ClientGone(Exception):
    """The client closed the connection or broke the protocol: drop it."""


@dataclass(frozen=True)
class Export:
    name: str
    site: str
    ldev: int
    size_bytes: int


def exports_of(hub: FrontendHub) -> dict[str, Export]:
    return {f"{site}:{ldev}": Export(f"{site}:{ldev}", site, ldev, size)
            for site, sizes in sorted(hub.ldev_bytes.items()) for ldev, size in enumerate(sizes)}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ClientGone("closed by the client")
        buf += chunk
    return bytes(buf)


def parse_tcp(text: str) -> tuple[str, int]:
    """``HOST:PORT`` for ``--nbd-tcp``: loopback addresses only (NBD has no
    authentication here); ValueError says why not."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--nbd-tcp expects HOST:PORT like 127.0.0.1:10809, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--nbd-tcp serves loopback addresses only (127.0.0.1, ::1), got {host!r}")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


class NbdServer:
    """Serves ``exports_of(hub)`` on a unix socket (and loopback tcp if asked)."""

    def __init__(self, hub: FrontendHub, unix_path: str, tcp: tuple[str, int] | None = None):
        self.hub = hub
        self.exports = exports_of(hub)
        self.unix_path = unix_path
        self.listeners: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[_Connection] = set()
        self._lock = threading.Lock()
        self._gone = threading.Condition(self._lock)   # notified when a connection ends
        self.stats = {"connections": 0, "bad_handshakes": 0, "bad_requests": 0, "vanished": 0}
        try:
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listeners.append(u)
            u.bind(unix_path)
            os.chmod(unix_path, 0o600)
            u.listen(16)
            self.tcp_address = None
            if tcp is not None:
                family = socket.AF_INET6 if ":" in tcp[0] else socket.AF_INET
                t = socket.socket(family, socket.SOCK_STREAM)
                self.listeners.append(t)
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind(tcp)
                t.listen(16)
                self.tcp_address = t.getsockname()[:2]
        except BaseException:
            self.close()
            raise
        for lsock in self.listeners:
            th = threading.Thread(target=self._accept_loop, args=(lsock,), name="nbd-accept", daemon=True)
            th.start()
            self._threads.append(th)

    def uris(self) -> list[dict]:
        """One row per export: name, size and the URIs a client connects to."""
        rows = []
        for name, ex in self.exports.items():
            row = {"export": name, "site": ex.site, "ldev": ex.ldev, "bytes": ex.size_bytes,
                   "uri": f"nbd+unix:///{name}?socket={self.unix_path}"}
            if self.tcp_address:
                host, port = self.tcp_address
                row["tcp_uri"] = f"nbd://{'[' + host + ']' if ':' in host else host}:{port}/{name}"
            rows.append(row)
        return rows

    def _accept_loop(self, lsock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                sock, _addr = lsock.accept()
            except OSError:
                return    # closed: the server is going down
            if lsock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                if self._stop.is_set():
                    sock.close()
                    return
                self._conns.add(conn)
                self.stats["connections"] += 1
            conn.start()

    def _forget(self, conn: "_Connection") -> None:
        with self._lock:
            self._conns.discard(conn)
            self._gone.notify_all()

    def wait_no_connections(self, timeout_s: float) -> bool:
        """Wait until every connection has ended (its requests answered); True if so in time."""
        with self._lock:
            return self._gone.wait_for(lambda: not self._conns, timeout_s)

    def close(self) -> None:
        """Stop accepting, close every connection; the hub answers what is in flight."""
        self._stop.set()
        for lsock in self.listeners:
            try:
                lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            lsock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.abort()
        self.hub.close()   # answers what is in flight, so every reader can finish
        for th in self._threads:
            th.join(timeout=5)
        for conn in conns:
            conn.join()
        if os.path.exists(self.unix_path):
            os.unlink(self.unix_path)


class _Connection:
    """One client: a reader thread (handshake, then requests) and a writer thread (replies)."""

    def __init__(self, server: NbdServer, sock: socket.socket):
        self.server = server
        self.sock = sock
        self.replies: queue.SimpleQueue = queue.SimpleQueue()
        self.slots = threading.BoundedSemaphore(MAX_INFLIGHT)
        self.inflight = 0
        self.lock = threading.Lock()
        self.closing = False
        self.reader = threading.Thread(target=self._read_loop, name="nbd-read", daemon=True)
        self.writer = threading.Thread(target=self._write_loop, name="nbd-write", daemon=True)

    def start(self) -> None:
        self.writer.start()
        self.reader.start()

    def abort(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def join(self) -> None:
        self.reader.join(timeout=5)
        self.writer.join(timeout=5)

    # -- handshake ----------------------------------------------------------------------
    def _handshake(self) -> Export | None:
        s = self.sock
        s.settimeout(HANDSHAKE_TIMEOUT_S)
        s.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        (cflags,) = struct.unpack(">I", _recv_exact(s, 4))
        if cflags & ~CLIENT_FLAGS_KNOWN or not cflags & FLAG_FIXED_NEWSTYLE:
            raise ClientGone(f"client flags {cflags:#x}")
        no_zeroes = bool(cflags & FLAG_NO_ZEROES)
        for _ in range(MAX_OPTIONS):
            magic, opt, length = _OPT.unpack(_recv_exact(s, _OPT.size))
            if magic != IHAVEOPT:
                raise ClientGone(f"option magic {magic:#x}")
            if length > MAX_OPTION_BYTES:
                raise ClientGone(f"option of {length} bytes")
            data = _recv_exact(s, length)
            if opt == OPT_EXPORT_NAME:
                ex = self.server.exports.get(data.decode(errors="replace"))
                if ex is None:
                    raise ClientGone(f"unknown export {data[:64]!r} (EXPORT_NAME cannot answer an error)")
                s.sendall(struct.pack(">QH", ex.size_bytes, TRANSMISSION_FLAGS) + (b"" if no_zeroes else bytes(124)))
                return ex
            if opt == OPT_ABORT:
                self._opt_reply(opt, REP_ACK)
                return None
            if opt == OPT_LIST:
                if length:
                    self._opt_reply(opt, REP_ERR_INVALID, b"LIST takes no data")
                    continue
                for name in self.server.exports:
                    raw = name.encode()
                    self._opt_reply(opt, REP_SERVER, struct.pack(">I", len(raw)) + raw)
                self._opt_reply(opt, REP_ACK)
                continue
            if opt in (OPT_INFO, OPT_GO):
                ex = self._info(opt, data)
                if ex is not None and opt == OPT_GO:
                    return ex
                continue
            self._opt_reply(opt, REP_ERR_UNSUP, f"option {opt} is not supported".encode())
        raise ClientGone(f"more than {MAX_OPTIONS} options")

    def _info(self, opt: int, data: bytes) -> Export | None:
        if len(data) < 6:
            self._opt_reply(opt, REP_ERR_INVALID, b"INFO/GO data too short")
            return None
        (nlen,) = struct.unpack(">I", data[:4])
        if 4 + nlen + 2 > len(data):
            self._opt_reply(opt, REP_ERR_INVALID, b"export name runs past the option")
            return None
        name = data[4:4 + nlen].decode(errors="replace")
        (nreq,) = struct.unpack(">H", data[4 + nlen:6 + nlen])
        if len(data) != 6 + nlen + 2 * nreq:
            self._opt_reply(opt, REP_ERR_INVALID, b"information requests do not match their count")
            return None
        wanted = set(struct.unpack(f">{nreq}H", data[6 + nlen:])) if nreq else set()
        ex = self.server.exports.get(name)
        if ex is None:
            self._opt_reply(opt, REP_ERR_UNKNOWN, f"no export {name!r} (SITE:LDEV, e.g. main:0)".encode())
            return None
        self._opt_reply(opt, REP_INFO, struct.pack(">HQH", INFO_EXPORT, ex.size_bytes, TRANSMISSION_FLAGS))
        if INFO_NAME in wanted:
            self._opt_reply(opt, REP_INFO, struct.pack(">H", INFO_NAME) + ex.name.encode())
        if INFO_DESCRIPTION in wanted:
            self._opt_reply(opt, REP_INFO, struct.pack(">H", INFO_DESCRIPTION)
                            + f"rack-emu LDEV {ex.ldev} at site {ex.site}".encode())
        # the block sizes go out whether asked or not: writes must be whole sectors
        self._opt_reply(opt, REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, BLOCK_MIN, BLOCK_PREFERRED,
                                                   MAX_REQUEST_BYTES))
        self._opt_reply(opt, REP_ACK)
        return ex

    def _opt_reply(self, opt: int, rep: int, data: bytes = b"") -> None:
        self.sock.sendall(_OPT_REPLY.pack(REPLY_MAGIC_OPT, opt, rep, len(data)) + data)

    # -- transmission -------------------------------------------------------------------
    def _read_loop(self) -> None:
        stats = self.server.stats
        try:
            try:
                export = self._handshake()
            except (ClientGone, OSError, struct.error) as exc:
                stats["bad_handshakes"] += 1
                log.info("nbd: handshake dropped: %s", exc)
                return
            if export is None:
                return
            self.sock.settimeout(None)
            self._requests(export)
        except ClientGone as exc:
            log.info("nbd: connection dropped: %s", exc)
        except OSError as exc:
            stats["vanished"] += 1
            log.info("nbd: connection lost: %s", exc)
        finally:
            self._finish()

    def _requests(self, ex: Export) -> None:
        while True:
            try:
                head = _recv_exact(self.sock, _REQ.size)
            except ClientGone:
                self.server.stats["vanished"] += 1
                return
            magic, flags, cmd, handle, offset, length = _REQ.unpack(head)
            if magic != REQUEST_MAGIC:
                self.server.stats["bad_requests"] += 1
                raise ClientGone(f"request magic {magic:#x}")
            if cmd == CMD_DISC:
                return
            data = None
            if cmd == CMD_WRITE:
                if length > MAX_REQUEST_BYTES:
                    self.server.stats["bad_requests"] += 1
                    raise ClientGone(f"a write of {length} bytes is over the {MAX_REQUEST_BYTES}-byte maximum")
                data = _recv_exact(self.sock, length)
            op = {CMD_READ: "read", CMD_WRITE: "write", CMD_FLUSH: "flush", CMD_TRIM: "trim"}.get(cmd)
            if op is None or flags & ~CMD_FLAGS_KNOWN:
                self.server.stats["bad_requests"] += 1
                self._reply(handle, errno.EINVAL)
                continue
            self.slots.acquire()     # back-pressure: at most MAX_INFLIGHT in the rack
            with self.lock:
                self.inflight += 1
            self.server.hub.submit(Request(ex.site, ex.ldev, op, offset, length,
                                           self._answer_for(handle, op), FLAG_FUA if flags & CMD_FLAG_FUA else 0,
                                           data, source="nbd"))

    def _answer_for(self, handle: int, op: str):
        def answer(res: Result) -> None:     # called in the rack's thread: never blocks
            self.replies.put((handle, 0 if res.ok else (res.errno or errno.EIO),
                              res.data if res.ok and op == "read" else None))
            with self.lock:
                self.inflight -= 1
            self.slots.release()
        return answer

    def _reply(self, handle: int, error: int, data: bytes | None = None) -> None:
        self.replies.put((handle, error, data))

    def _write_loop(self) -> None:
        broken = False
        while True:
            item = self.replies.get()
            if item is None:
                break
            if broken:
                continue      # the client is gone: the rack's answers are dropped
            handle, error, data = item
            try:
                self.sock.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle) + (data or b""))
            except OSError:
                broken = True
                self.server.stats["vanished"] += 1
        try:
            self.sock.close()
        except OSError:
            pass

    def _finish(self) -> None:
        """The reader is done: wait (in this thread) for the rack to answer
        what is in flight, then let the writer send it and close."""
        for _ in range(MAX_INFLIGHT):
            self.slots.acquire()
        self.replies.put(None)
        self.server._forget(self)
