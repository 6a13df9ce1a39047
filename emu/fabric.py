"""The coordinator's links to its actor processes, on one host.

Two fabrics carry the same wire frames (``emu.wire``) between the
coordinator and each actor process of the ``processes`` backend:

* ``unix`` (the default): one ``AF_UNIX`` stream socketpair per actor,
  made before the fork, each frame preceded by its 8-byte length. A send
  is one system call and the receiver is woken directly by the kernel.
* ``zmq``: one ZeroMQ ROUTER in the 0700 run directory, a DEALER per
  actor (the first design). Every frame crosses two ZeroMQ I/O threads, so
  each hop costs four thread wake-ups instead of one.

Measured on the 2-core development VM (``bench/bench_rack.py`` prints both
rows): a ping-pong of a 200-byte frame takes 356 us over zmq ipc and 74 us
over a socketpair; the rack spends most of its wall time in exactly such
round trips, one per scheduler round. Sockets to other hosts (the console
over tcp with CurveZMQ) stay ZeroMQ: only the local actor links changed.

Both ends frame with ``Channel`` (unix) or a DEALER (zmq), behind the same
two calls, ``send(frame)`` and ``recv() -> frame``. A frame's own header
and body are checked by ``wire.decode`` at the receiver as before, so a
malformed frame is still counted and dropped, never fatal. The length
prefix is the transport's and only our own processes hold the sockets
(the pairs are inherited, never bound to a path); a prefix larger than any
frame ``wire`` allows means the stream is corrupt, and the link is treated
as lost.
"""

from __future__ import annotations

import os
import select
import socket
import struct

import zmq

from emu import wire

#: the length prefix of a frame on a unix channel
PREFIX = struct.Struct("<Q")
#: the longest frame a channel accepts (wire's largest body plus its header)
FRAME_MAX = wire.MAX_BODY_BYTES + wire.HEADER.size
#: socket buffer per direction: a GRANT of a few tracks goes in one write
SOCKET_BUFFER = 4 << 20
#: a frame up to this size is sent in one write (prefix copied in front)
SMALL_FRAME = 256 << 10
FABRICS = ("unix", "zmq")


class LinkLost(Exception):
    """The actor end of a link is gone (its process died or closed it)."""


class Channel:
    """One end of a unix stream link: length-prefixed frames."""

    __slots__ = ("sock", "fd", "_prefix")

    def __init__(self, sock: socket.socket):
        sock.setblocking(True)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:  # a smaller buffer only means more writes per frame
                pass
        self.sock = sock
        self.fd = sock.fileno()
        self._prefix = bytearray(PREFIX.size)

    def send(self, frame: bytes) -> None:
        """Write one frame (blocks while the peer's buffer is full); a gone
        peer raises ``LinkLost``."""
        try:
            if len(frame) <= SMALL_FRAME:
                self.sock.sendall(PREFIX.pack(len(frame)) + frame)
            else:
                self.sock.sendall(PREFIX.pack(len(frame)))
                self.sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise LinkLost(str(exc)) from None

    def recv(self) -> bytes:
        """Read one whole frame (blocking); ``LinkLost`` at end of stream."""
        self._read_into(memoryview(self._prefix))
        (n,) = PREFIX.unpack(self._prefix)
        if n > FRAME_MAX:
            raise LinkLost(f"corrupt stream: a frame of {n} bytes announced")
        frame = bytearray(n)
        self._read_into(memoryview(frame))
        return bytes(frame)

    def _read_into(self, view: memoryview) -> None:
        recv_into = self.sock.recv_into
        while view:
            try:
                got = recv_into(view)
            except ConnectionResetError as exc:
                raise LinkLost(str(exc)) from None
            if got == 0:
                raise LinkLost("end of stream")
            view = view[got:]

    def close(self) -> None:
        self.sock.close()


class _DealerEnd:
    """The actor end of a zmq link (its own context, made after the fork)."""

    def __init__(self, endpoint: str, name: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.IDENTITY, name.encode())
        self.sock.connect(endpoint)

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def recv(self) -> bytes:
        return self.sock.recv()

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def actor_end(link: dict, name: str):
    """In the actor process: its end of the link described by ``link``
    (from ``CoordinatorFabric.link_for``). Inherited sockets that belong
    to other actors' links are closed first, so that each link has exactly
    two holders and a death is seen at once as end of stream."""
    for fd in link.get("close_fds", ()):
        try:
            os.close(fd)
        except OSError:
            pass
    if link["fabric"] == "unix":
        return Channel(link["sock"])
    return _DealerEnd(link["endpoint"], name)


class CoordinatorFabric:
    """The coordinator's side: a link per actor index, sends by index, and
    a receive from any of a set of actors."""

    def __init__(self, fabric: str, names: list[str], rundir: str):
        if fabric not in FABRICS:
            raise ValueError(f"fabric must be one of {', '.join(FABRICS)}, got {fabric!r}")
        self.fabric = fabric
        self.names = names
        self.index_of = {n: i for i, n in enumerate(names)}
        self.chans: list[Channel | None] = [None] * len(names)
        self._child_socks: list[socket.socket | None] = [None] * len(names)
        self._fd_index: dict[int, int] = {}
        self._poll = select.poll()
        if fabric == "zmq":
            self.endpoint = f"ipc://{rundir}/fabric.sock"
            self.zctx = zmq.Context()
            self.router = self.zctx.socket(zmq.ROUTER)
            self.router.linger = 0
            self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.router.bind(self.endpoint)
            self.idents = [n.encode() for n in names]
            self._poll.register(self.router.getsockopt(zmq.FD), select.POLLIN)

    # -- links ---------------------------------------------------------------------
    def link_for(self, i: int) -> dict:
        """A new link to actor ``i`` (replacing a dead one): what its process
        needs to open its end (``actor_end``)."""
        if self.fabric == "zmq":
            return {"fabric": "zmq", "endpoint": self.endpoint}
        self.drop(i)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        chan = Channel(parent)
        self.chans[i] = chan
        self._child_socks[i] = child
        self._fd_index[chan.fd] = i
        self._poll.register(chan.fd, select.POLLIN)
        others = [c.fd for j, c in enumerate(self.chans) if c is not None and j != i]
        return {"fabric": "unix", "sock": child, "close_fds": [chan.fd, *others]}

    def forked(self, i: int) -> None:
        """After actor ``i``'s process started: the coordinator lets go of
        the child's end, so the child's death reads as end of stream."""
        child = self._child_socks[i]
        if child is not None:
            child.close()
            self._child_socks[i] = None

    def drop(self, i: int) -> None:
        """Close the coordinator's end of actor ``i``'s link (it died or was killed)."""
        self.forked(i)
        chan = self.chans[i]
        if chan is not None:
            self._poll.unregister(chan.fd)
            del self._fd_index[chan.fd]
            chan.close()
            self.chans[i] = None

    # -- frames --------------------------------------------------------------------
    def send(self, i: int, frame: bytes) -> None:
        """``LinkLost`` when actor ``i`` is gone."""
        if self.fabric == "zmq":
            try:
                self.router.send_multipart([self.idents[i], frame])
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                raise LinkLost(self.names[i]) from None
            return
        chan = self.chans[i]
        if chan is None:
            raise LinkLost(self.names[i])
        chan.send(frame)

    def recv(self, timeout_ms: int):
        """``(i, frame)`` from any actor; ``(i, None)`` when actor ``i``'s
        link ended; ``None`` when nothing came within ``timeout_ms``.
        A zmq frame with a foreign envelope comes back as ``(-1, None)``."""
        if self.fabric == "zmq":
            return self._recv_zmq(timeout_ms)
        ready = self._poll.poll(timeout_ms)
        if not ready:
            return None
        fd, _events = min(ready)   # any ready one will do; min keeps it reproducible
        i = self._fd_index[fd]
        try:
            return i, self.chans[i].recv()
        except LinkLost:
            self.drop(i)
            return i, None

    def _recv_zmq(self, timeout_ms: int):
        if not self.router.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self.router.recv_multipart()
        if len(frames) != 2:
            return -1, None
        i = self.index_of.get(frames[0].decode(errors="replace"))
        if i is None:
            return -1, None
        return i, frames[1]

    def close(self) -> None:
        for i in range(len(self.names)):
            self.drop(i)
        if self.fabric == "zmq":
            self.router.close(0)
            self.zctx.term()
