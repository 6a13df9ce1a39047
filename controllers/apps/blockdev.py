"""A block device as an application sees it (pread, pwrite, flush), and one that captures.

:class:`MemoryDevice` holds the bytes; :class:`CapturingDevice` wraps any
device and logs each request to a capture file
(:mod:`controllers.formats.capture`) on a simple virtual clock: the
application is synchronous, so each request arrives ``think_ns`` after the
previous one was acknowledged and is acknowledged ``service_ns`` later. The
capture is a faithful record of the application's I/O order and barriers
(a flush arrives only after every earlier write was acknowledged), which is
all a replay needs: the rack supplies its own timing.
"""

from __future__ import annotations

from typing import Protocol

from controllers.formats.capture import FLAG_FUA, CaptureWriter

SECTOR_BYTES = 512


class BlockDevice(Protocol):
    """What an application may do with an LDEV."""

    size_bytes: int

    def pread(self, offset: int, length: int) -> bytes: ...

    def pwrite(self, offset: int, data: bytes, fua: bool = False) -> None: ...

    def flush(self) -> None: ...


def _check_extent(size: int, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"extent {offset}+{length} is outside the device ({size} bytes)")


class MemoryDevice:
    """A device in memory (a copy of an LDEV image, or a fresh one of zeros)."""

    def __init__(self, size_bytes: int | None = None, image: bytes | None = None):
        if image is None and size_bytes is None:
            raise ValueError("MemoryDevice needs a size or an image")
        self.buf = bytearray(image) if image is not None else bytearray(size_bytes)
        if size_bytes is not None and len(self.buf) != size_bytes:
            raise ValueError(f"image is {len(self.buf)} bytes, expected {size_bytes}")
        self.size_bytes = len(self.buf)

    def pread(self, offset: int, length: int) -> bytes:
        _check_extent(self.size_bytes, offset, length)
        return bytes(self.buf[offset:offset + length])

    def pwrite(self, offset: int, data: bytes, fua: bool = False) -> None:
        _check_extent(self.size_bytes, offset, len(data))
        self.buf[offset:offset + len(data)] = data

    def flush(self) -> None:
        pass


class CapturingDevice:
    """A device whose every request goes to ``writer`` (a CaptureWriter) as LDEV ``ldev``.

    Requests must be whole sectors (the rack replays sectors); an
    application on it reads sectors around a partial write itself, which is
    what a real block device forces it to do too.
    """

    def __init__(self, inner: BlockDevice, writer: CaptureWriter, ldev: int = 0,
                 think_ns: int = 20_000, service_ns: int = 100_000, flush_ns: int = 500_000):
        self.inner, self.writer, self.ldev = inner, writer, ldev
        self.size_bytes = inner.size_bytes
        self.think_ns, self.service_ns, self.flush_ns = think_ns, service_ns, flush_ns
        #: the virtual clock: when the next request arrives
        self.now_ns = 0
        #: the seq of the last request recorded (the application marks its acks with it)
        self.last_seq: int | None = None

    def _record(self, op: str, offset: int, length: int, flags: int = 0, data: bytes | None = None,
                cost_ns: int | None = None) -> None:
        arrival = self.now_ns
        ack = arrival + (self.service_ns if cost_ns is None else cost_ns)
        self.last_seq = self.writer.record(op, self.ldev, arrival, ack, offset, length, flags, data)
        self.now_ns = ack + self.think_ns

    @staticmethod
    def _aligned(offset: int, length: int) -> None:
        if offset % SECTOR_BYTES or length % SECTOR_BYTES:
            raise ValueError(f"request {offset}+{length} is not {SECTOR_BYTES}-byte aligned")

    def pread(self, offset: int, length: int) -> bytes:
        self._aligned(offset, length)
        data = self.inner.pread(offset, length)
        self._record("read", offset, length)
        return data

    def pwrite(self, offset: int, data: bytes, fua: bool = False) -> None:
        self._aligned(offset, len(data))
        self.inner.pwrite(offset, data, fua)
        self._record("write", offset, len(data), FLAG_FUA if fua else 0, bytes(data))

    def flush(self) -> None:
        self.inner.flush()
        self._record("flush", 0, 0, cost_ns=self.flush_ns)
