"""The front-ends of a long-running rack (``emu up --nbd/--fuse``): start
them, serve them beside the console in the rack's one thread, stop them.

The serving loop waits on the console's socket and the hub's wake-up pipe
together (one ``zmq.Poller``), so a client request is taken at once and a
console line too; while a request is outstanding the loop does not wait at
all and advances virtual time event by event (``FrontendHub.pump``).
"""

from __future__ import annotations

import threading

import zmq

from controllers.frontends.core import FrontendHub
from controllers.rack.storage import StorageRack


class Frontends:
    def __init__(self, rack: StorageRack, nbd_socket: str | None = None, nbd_tcp: tuple[str, int] | None = None,
                 fuse_dir: str | None = None, capture: str | None = None, realtime: float | None = None):
        self.rack = rack
        self.hub = FrontendHub(rack, realtime=realtime, capture=capture)
        self.nbd = None
        self.fuse = None
        try:
            if nbd_socket:
                from controllers.frontends.nbd import NbdServer
                self.nbd = NbdServer(self.hub, nbd_socket, nbd_tcp)
            if fuse_dir:
                from controllers.frontends.fuse import FuseMount
                self.fuse = FuseMount(self.hub, fuse_dir)
                self.fuse.wait_mounted()
        except BaseException:
            self.close()
            raise
        rack.frontend_exports = self.rows()

    def rows(self) -> list[dict]:
        rows = self.nbd.uris() if self.nbd else []
        if self.fuse:
            rows += self.fuse.rows()
        return rows

    def lines(self) -> list[str]:
        """What ``emu up`` prints: ``nbd main:0 nbd+unix:///main:0?socket=PATH``, ``fuse main:0 FILE``."""
        out = []
        for r in self.rows():
            if r.get("uri"):
                out.append(f"nbd {r['export']} {r['uri']}")
            if r.get("tcp_uri"):
                out.append(f"nbd {r['export']} {r['tcp_uri']}")
            if r.get("file"):
                out.append(f"fuse {r['export']} {r['file']}")
        return out

    def serve_until(self, console, stop: threading.Event) -> None:
        """Serve console lines and front-end requests until ``stop`` is set."""
        poller = zmq.Poller()
        poller.register(console.sock, zmq.POLLIN)
        poller.register(console.monitor, zmq.POLLIN)
        poller.register(self.hub.wake_fd, zmq.POLLIN)
        while not stop.is_set():
            ready = dict(poller.poll(int(self.hub.poll_timeout_s() * 1000)))
            if console.sock in ready or console.monitor in ready:
                console.serve(0)
            self.hub.pump()

    def close(self) -> None:
        """Unmount, stop the NBD server, answer what is outstanding, close
        the captures; safe to call twice and after a failed start."""
        self.hub.close()   # first: a handler waiting on the rack gets ESHUTDOWN, so nothing holds the mount
        try:
            if self.fuse is not None:
                self.fuse.close()
        finally:
            try:
                if self.nbd is not None:
                    self.nbd.close()
            finally:
                self.rack.frontend_exports = []
