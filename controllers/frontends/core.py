"""The front-end core: outside clients' I/O into a running rack.

A front-end (NBD server, FUSE file system) turns a client's request into a
:class:`Request` and hands it to the :class:`FrontendHub` from any thread
(``submit``, or ``call`` to wait for the answer). The hub lives in the thread
that owns the rack (``emu up``'s serving loop calls ``pump`` between console
lines): it enters each request into its site's host CPU as a host I/O at the
current virtual time, with the client's own bytes (no stamps), and answers
it when the I/O completes in virtual time.

Time. By default the rack is a closed loop: while a front-end request is
outstanding, ``pump`` advances virtual time by itself to the next event
(no wall-clock pacing), and stands still when no request is outstanding.
With ``realtime=X`` virtual time runs X times as fast as the wall clock,
requests or not. A console ``run`` moves time as it always does.

What the operations mean (the DKC's side is ``controllers/devices/dkc``):

* WRITE is answered when the DKC acknowledges it: in its cache, and for a
  sync pair at the remote too. The DKC's cache is write-back with its
  state in NVM, as an enterprise array's battery-backed cache is.
* FLUSH (and a FUA write) is answered once every track that was
  write-pending in the DKC's cache when it arrived (for FUA: the write's
  own tracks) has been destaged to the disks: the strict reading of
  "durable" (the NVM-backed cache alone would already do for a real
  array), so an application's fsync costs the disk time a drained cache
  costs wherever tracks are pending. The model charges a master's local
  update no disk time (docs/ARCHITECTURE.md section 2, step 5), so at a
  master a FLUSH finds nothing pending and costs one DKC command; at a
  remote, whose mirror writes are destaged, it waits. It does not wait
  for a remote: a sync pair's write was in the remote's cache before it
  was acknowledged (TrueCopy semantics), an async pair's remote lags by
  design.
* TRIM changes no data (NBD lets a trimmed range read back as it was), so
  the mirror stays byte-equal; it costs one DKC command.
* A write to the remote LDEV of a pair in COPY/PAIR (an S-VOL) is refused
  by the firmware (``firmware/mirror.py:check_host_write``) until
  ``horctakeover`` makes the pair SSWS: ``errno.EPERM``. Reads are allowed.

Determinism: a run with a client is not a function of the seed alone (the
client's timing is outside the rack); ``capture`` logs every request with
its virtual arrival and acknowledgement times and its bytes
(``controllers/formats/capture.py``), and that capture replays
deterministically.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from controllers.devices.host.actor import FE_SIGNAL
from controllers.formats.capture import FLAG_FUA, CaptureError, CaptureWriter
from controllers.rack.storage import StorageRack
from emu.actor import NEVER_NS
from firmware.protocol import SECTOR_BYTES

log = logging.getLogger("emu.frontends")
OPS = ("read", "write", "flush", "trim")
#: the largest request the core accepts (NBD's usual maximum block size)
MAX_REQUEST_BYTES = 32 << 20
#: requests outstanding in the whole rack at most; beyond, a request is refused (EBUSY-like EAGAIN)
MAX_OUTSTANDING = 2048
#: how long a virtual-time request may stay unanswered before the hub fails it
#: (the host's own timeout is 30 s; this one covers a host killed and restarted)
ORPHAN_NS = 40 * 10 ** 9
#: longest wall wait between looks at the queue when nothing is outstanding
IDLE_POLL_S = 0.1


@dataclass
class Result:
    """The answer to one request: ``errno`` 0 when ``ok``."""

    ok: bool
    errno: int = 0
    error: str | None = None
    data: bytes | None = None
    arrival_ns: int | None = None
    ack_ns: int | None = None


@dataclass
class Request:
    """One client request. ``reply`` is called once, from the rack's thread,
    and must not block (queue the answer for the client's own thread)."""

    site: str
    ldev: int
    op: str
    offset: int
    length: int
    reply: Callable[[Result], None]
    flags: int = 0
    data: bytes | None = None
    source: str = "frontend"
    #: set by the hub
    tag: int = -1
    arrival_ns: int = 0
    #: the sector-aligned extent sent to the host (a read may be widened)
    lba: int = 0
    sectors: int = 0


def errno_of(error: str | None) -> int:
    """The errno an NBD/FUSE client gets for a failed I/O's message."""
    text = error or ""
    if "write protected" in text:
        return errno.EPERM       # an S-VOL before takeover, as arrays answer
    if "outside LDEV" in text or "beyond ldev" in text:
        return errno.EINVAL
    if "busy" in text or "too many" in text:
        return errno.EAGAIN
    return errno.EIO


def _fail(req: Request, code: int, error: str, now_ns: int | None = None) -> None:
    req.reply(Result(False, code, error, None, now_ns, now_ns))


class FrontendHub:
    """Carries front-end requests into the rack and the answers back."""

    def __init__(self, rack: StorageRack, realtime: float | None = None, capture: str | None = None):
        self.rack = rack
        self.realtime = realtime
        self.capture_path = capture
        if capture:
            where = Path(capture).resolve().parent
            if not where.is_dir() or not os.access(where, os.W_OK):
                raise ValueError(f"--capture {capture}: {where} is not a writable directory")
        #: site -> [ldev bytes, ...]
        self.ldev_bytes = {site: [ld["tracks"] * lay["track_bytes"] for ld in lay["ldevs"]]
                           for site, lay in sorted(rack.sites.items())}
        self._queue: deque[Request] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pending: dict[int, Request] = {}
        self._next_tag = 0
        self._signals_seen = len(rack.rack.backend.signals)
        self._captures: dict[str, CaptureWriter] = {}
        #: per site: tags in arrival order and answers waiting for earlier ones (capture order)
        self._cap_order: dict[str, deque] = {}
        self._cap_ready: dict[int, tuple] = {}
        self._anchor = (time.monotonic(), rack.now_ns)
        #: why the capture stopped (a write to it failed), or None
        self.capture_error: str | None = None
        self.counts = {"requests": 0, "errors": 0, "steps": 0}
        self._lock = threading.Lock()     # submit (any thread) against close
        self._closed = False

    # -- any thread ------------------------------------------------------------------
    @property
    def wake_fd(self) -> int:
        """Readable when a request is waiting: poll it beside the console."""
        return self._wake_r

    def submit(self, req: Request) -> None:
        """Hand a request to the rack (any thread); ``req.reply`` answers it."""
        with self._lock:
            if not self._closed:
                self._queue.append(req)
                try:
                    os.write(self._wake_w, b"!")
                except BlockingIOError:
                    pass   # the pipe is full of wake-ups already: the hub will look
                return
        _fail(req, errno.ESHUTDOWN, "the rack is going down")

    def call(self, site: str, ldev: int, op: str, offset: int, length: int, flags: int = 0,
             data: bytes | None = None, source: str = "frontend") -> Result:
        """Submit and wait for the answer (for front-ends whose handlers block)."""
        done = threading.Event()
        box: list[Result] = []

        def reply(res: Result) -> None:
            box.append(res)
            done.set()
        self.submit(Request(site, ldev, op, offset, length, reply, flags, data, source))
        done.wait()
        return box[0]

    # -- the rack's thread -------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._pending or self._queue)

    def poll_timeout_s(self) -> float:
        """How long the serving loop may wait for input before the next ``pump``."""
        if self.busy and not self.realtime:
            return 0.0
        if not self.realtime:
            return IDLE_POLL_S
        nxt = self.rack.rack.backend.next_ns()
        if nxt >= NEVER_NS:
            return IDLE_POLL_S
        w0, v0 = self._anchor
        return max(0.0, min(IDLE_POLL_S, w0 + (nxt - v0) / 1e9 / self.realtime - time.monotonic()))

    def pump(self) -> None:
        """Enter the requests that arrived, move virtual time (one step to
        the next event in the closed loop; to the wall clock's virtual time
        with ``realtime``), and answer what completed."""
        self._drain_wakeups()
        new: dict[str, list] = {}
        while self._queue:
            req = self._queue.popleft()
            io = self._admit(req)
            if io is not None:
                new.setdefault(req.site, []).append(io)
        self._exchange(new)
        if self.realtime:
            self._advance_realtime()
        elif self._pending:
            self._advance_one_event()
        else:
            return
        self._exchange({})
        self._orphans()

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _admit(self, req: Request) -> list | None:
        """Check a request against the export and turn it into the host's
        ``[tag, op, ldev, lba, sectors, flags, data]``; refuse it otherwise."""
        now = self.rack.now_ns
        sizes = self.ldev_bytes.get(req.site)
        problem, code = None, errno.EINVAL
        if sizes is None or not 0 <= req.ldev < len(sizes):
            problem = f"no export {req.site}:{req.ldev}"
        elif req.op not in OPS:
            problem, code = f"unknown op {req.op!r}", errno.ENOTSUP
        elif req.length > MAX_REQUEST_BYTES:
            problem = f"{req.length} bytes is over the {MAX_REQUEST_BYTES}-byte request limit"
        elif req.offset < 0 or req.length < 0 or req.offset + req.length > sizes[req.ldev]:
            problem = f"bytes {req.offset}+{req.length} outside LDEV {req.site}:{req.ldev} ({sizes[req.ldev]} bytes)"
            code = errno.ENOSPC if req.op == "write" else errno.EINVAL
        elif req.op == "write" and (req.offset % SECTOR_BYTES or req.length % SECTOR_BYTES):
            problem = f"a write must be whole {SECTOR_BYTES}-byte sectors (offset {req.offset}, length {req.length})"
        elif req.op == "write" and (not isinstance(req.data, (bytes, bytearray)) or len(req.data) != req.length):
            problem = f"a write of {req.length} bytes carries {len(req.data or b'')}"
        elif req.op != "flush" and req.length == 0:
            problem = f"a {req.op} of 0 bytes"
        elif len(self._pending) >= MAX_OUTSTANDING:
            problem, code = f"busy: {MAX_OUTSTANDING} requests outstanding", errno.EAGAIN
        elif not self.rack.rack.alive(f"{req.site}.host") or req.site in self.rack.down_sites:
            problem, code = f"site {req.site} is down", errno.EIO
        self.counts["requests"] += 1
        if problem is not None:
            self.counts["errors"] += 1
            _fail(req, code, problem, now)
            return None
        req.tag, req.arrival_ns = self._next_tag, now
        self._next_tag += 1
        if req.op == "flush" and req.length == 0:
            req.lba, req.sectors = 0, 0
        else:
            req.lba = req.offset // SECTOR_BYTES
            req.sectors = -(-(req.offset + req.length) // SECTOR_BYTES) - req.lba
        self._pending[req.tag] = req
        if self.capture_path:
            self._cap_order.setdefault(req.site, deque()).append(req.tag)
        data = bytes(req.data) if req.op == "write" else None
        return [req.tag, req.op, req.ldev, req.lba, req.sectors, req.flags & FLAG_FUA, data]

    def _exchange(self, new: dict[str, list]) -> None:
        """One control per host that has new requests or completions waiting."""
        backend = self.rack.rack.backend
        signalled = {who.split(".")[0] for _t, who, sig in backend.signals[self._signals_seen:] if sig == FE_SIGNAL}
        self._signals_seen = len(backend.signals)
        for site in sorted(set(new) | signalled):
            host = f"{site}.host"
            if not self.rack.rack.alive(host):
                for io in new.get(site, []):
                    self._answer(io[0], False, f"site {site}'s host is down", None, self.rack.now_ns)
                continue
            out = self.rack.rack.control(host, {"cmd": "fe", "ios": new.get(site, [])})
            for tag, ok, error, data, ack_ns in out.get("done", []):
                self._answer(tag, ok, error, data, ack_ns)

    def _answer(self, tag, ok: bool, error: str | None, data, ack_ns: int) -> None:
        req = self._pending.pop(tag, None)
        if req is None:
            return    # already failed as an orphan
        if ok and req.op == "read":
            skip = req.offset - req.lba * SECTOR_BYTES
            data = bytes(data[skip:skip + req.length]) if data is not None else None
            if data is None or len(data) != req.length:   # never hand out bytes we cannot vouch for
                ok, error, data = False, "the DKC answered a read with the wrong length", None
        else:
            data = None
        if not ok:
            self.counts["errors"] += 1
        res = Result(ok, 0 if ok else errno_of(error), error, data, req.arrival_ns, ack_ns)
        self._capture(req, res)
        req.reply(res)

    def _advance_one_event(self) -> None:
        """Closed loop: jump to the next event anywhere in the rack and handle it."""
        r = self.rack.rack
        nxt = r.backend.next_ns()
        if r.scheduled:
            nxt = min(nxt, r.scheduled[0][0])
        if nxt >= NEVER_NS:   # nothing will ever answer: fail rather than hang the client
            for tag in sorted(self._pending):
                self._answer(tag, False, "the rack has no event left that could answer", None, self.rack.now_ns)
            return
        self.counts["steps"] += 1
        self.rack.run(max(0, nxt + 1 - self.rack.now_ns))

    def _advance_realtime(self) -> None:
        w0, v0 = self._anchor
        now_w = time.monotonic()
        target = v0 + int((now_w - w0) * 1e9 * self.realtime)
        if target < self.rack.now_ns:          # a console `run` jumped ahead: follow it
            self._anchor = (now_w, self.rack.now_ns)
            return
        if target > self.rack.now_ns:
            self.counts["steps"] += 1
            self.rack.run(target - self.rack.now_ns)

    def _orphans(self) -> None:
        """Fail requests whose host forgot them (killed and restarted)."""
        now = self.rack.now_ns
        for tag in sorted(t for t, req in self._pending.items() if now - req.arrival_ns > ORPHAN_NS):
            self._answer(tag, False, "no answer from the host (was it restarted?)", None, now)

    # -- capture -------------------------------------------------------------------------
    def _capture(self, req: Request, res: Result) -> None:
        if not self.capture_path:
            return
        self._cap_ready[req.tag] = (req, res)
        order = self._cap_order.get(req.site)
        while order and order[0] in self._cap_ready:   # in arrival order
            r, s = self._cap_ready.pop(order.popleft())
            # a refused request changed nothing and is left out (a replay must
            # not apply a write the rack refused); one the rack never answered
            # is kept with no acknowledgement
            if self.capture_path and (s.ok or s.ack_ns is None):
                self._write_record(r, s.ack_ns if s.ok else None)

    def _write_record(self, req: Request, ack_ns: int | None) -> None:
        offset, length = (0, 0) if req.op == "flush" and req.length == 0 else (req.offset, req.length)
        try:
            writer = self._captures.get(req.site)
            if writer is None:
                writer = CaptureWriter(capture_file(self.capture_path, req.site, sorted(self.ldev_bytes)), req.site,
                                       dict(enumerate(self.ldev_bytes[req.site])), req.source)
                self._captures[req.site] = writer
            writer.record(req.op, req.ldev, req.arrival_ns, ack_ns, offset, length, req.flags & FLAG_FUA,
                          bytes(req.data) if req.op == "write" else None)
        except (CaptureError, OSError) as exc:   # a full disk must not take the rack down: stop capturing, say so
            self.capture_error = str(exc)
            self.capture_path = None
            log.error("front-end capture stopped: %s", exc)

    def capture_files(self) -> list[str]:
        return [str(w.path) for _s, w in sorted(self._captures.items())]

    # -- end ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Answer what is still outstanding (ESHUTDOWN), record it in the
        capture as never acknowledged, and close the captures."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while self._queue:
            _fail(self._queue.popleft(), errno.ESHUTDOWN, "the rack is going down")
        for tag in sorted(self._pending):
            req = self._pending.pop(tag)
            res = Result(False, errno.ESHUTDOWN, "the rack is going down", None, req.arrival_ns, None)
            self._capture(req, res)
            req.reply(res)
        for writer in self._captures.values():
            writer.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def capture_file(template: str, site: str, sites: list[str]) -> Path:
    """Where ``--capture FILE`` puts a site's capture: ``{site}`` in FILE is
    replaced; otherwise a rack of several sites gets ``FILE.SITE`` before
    the extension (``run.cap`` -> ``run.main.cap``)."""
    if "{site}" in template:
        return Path(template.replace("{site}", site))
    p = Path(template)
    if len(sites) == 1:
        return p
    return p.with_name(f"{p.stem}.{site}{p.suffix}")
