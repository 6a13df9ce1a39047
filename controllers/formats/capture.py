"""Captured front-end I/O (issue 12 item 3): what a real application asked of an LDEV.

A capture file is a msgpack stream, written and read one object at a time
(msgpack's ``Packer`` / streaming ``Unpacker``: no whole-file state in
memory). The first object is the header map::

    {"format": "emu-capture", "version": 1, "site": "main",
     "sector_bytes": 512, "ldev_bytes": {0: 4194304, ...}, "source": "nbd"}

``source`` is free text naming who made it ("nbd", "fuse", "sqlite-bank").
Then one array per front-end request::

    [seq, op, ldev, arrival_ns, ack_ns, offset, length, flags, data]

* ``seq``: 0, 1, 2, ... in the order the requests were recorded;
* ``op``: "read", "write", "flush" or "trim";
* ``arrival_ns`` / ``ack_ns``: virtual integer ns; ``ack_ns`` is None for a
  request that never completed (the rack stopped first);
* ``offset`` / ``length``: bytes within the LDEV (a flush may be 0, 0);
* ``flags``: int bitmask, ``FLAG_FUA`` (1) = forced unit access;
* ``data``: the written bytes (exactly ``length`` of them) for a write, else None.

Replay semantics (the host's ``format=capture`` workload, see
:func:`happens_before`): each request is issued at its arrival time relative
to the first request, but never before every request acknowledged before its
arrival has completed in the replay. That keeps the application's
happens-before order, which is what gives flush/fsync barriers and FUA their
meaning; writes carry their captured bytes.

Errors are :class:`CaptureError` (a ValueError) naming the file and, for a
request, its record number.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import IO, Iterator, Mapping, NamedTuple

import msgpack

from firmware.protocol import SECTOR_BYTES

FORMAT = "emu-capture"
VERSION = 1
OPS = ("read", "write", "flush", "trim")
FLAG_FUA = 1
FLAGS_KNOWN = FLAG_FUA
#: the largest single object (a write's data) the reader accepts: 64 MiB,
#: far above any front-end request (NBD's own cap is 32 MiB)
MAX_OBJECT_BYTES = 64 << 20
_FIELDS = 9


class CaptureError(ValueError):
    """A capture file that cannot be read or written; the message names the file and record."""


class CaptureRecord(NamedTuple):
    """One front-end request, as recorded."""

    seq: int
    op: str
    ldev: int
    arrival_ns: int
    ack_ns: int | None
    offset: int
    length: int
    flags: int = 0
    data: bytes | None = None

    @property
    def fua(self) -> bool:
        return bool(self.flags & FLAG_FUA)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_header(h) -> dict:
    """Return the header with ``ldev_bytes`` keyed by int, or raise ValueError saying what is wrong."""
    if not isinstance(h, dict):
        raise ValueError(f"the first object must be the header map, got {type(h).__name__}")
    if h.get("format") != FORMAT:
        raise ValueError(f"not an {FORMAT} file (format={h.get('format')!r})")
    if h.get("version") != VERSION:
        raise ValueError(f"version {h.get('version')!r} is not supported (this reader knows {VERSION})")
    for key in ("site", "source"):
        if not isinstance(h.get(key), str) or not h[key]:
            raise ValueError(f"header key {key!r} must be a non-empty string, got {h.get(key)!r}")
    if h.get("sector_bytes") != SECTOR_BYTES:
        raise ValueError(f"header key 'sector_bytes' must be {SECTOR_BYTES}, got {h.get('sector_bytes')!r}")
    sizes = h.get("ldev_bytes")
    if not isinstance(sizes, dict) or not sizes:
        raise ValueError(f"header key 'ldev_bytes' must be a non-empty map ldev -> bytes, got {sizes!r}")
    for ldev, size in sizes.items():
        if not _is_int(ldev) or ldev < 0 or not _is_int(size) or size < 1:
            raise ValueError(f"header key 'ldev_bytes': entry {ldev!r}: {size!r} must be ldev (int >= 0) -> bytes (int >= 1)")
    return {**h, "ldev_bytes": {int(k): int(v) for k, v in sorted(sizes.items())}}


def check_record(rec: CaptureRecord, ldev_bytes: Mapping[int, int]) -> None:
    """Raise ValueError saying what is wrong with one request (the caller adds file and record)."""
    if rec.op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {rec.op!r}")
    for name in ("seq", "ldev", "arrival_ns", "offset", "length", "flags"):
        v = getattr(rec, name)
        if not _is_int(v) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if rec.ack_ns is not None and (not _is_int(rec.ack_ns) or rec.ack_ns < rec.arrival_ns):
        raise ValueError(f"ack_ns must be None or an int >= arrival_ns {rec.arrival_ns}, got {rec.ack_ns!r}")
    if rec.flags & ~FLAGS_KNOWN:
        raise ValueError(f"flags {rec.flags:#x} has unknown bits (known: FUA={FLAG_FUA})")
    if rec.ldev not in ldev_bytes:
        raise ValueError(f"ldev {rec.ldev} is not in the header's ldev_bytes ({sorted(ldev_bytes)})")
    size = ldev_bytes[rec.ldev]
    if rec.op != "flush" and rec.length < 1:
        raise ValueError(f"a {rec.op} needs length >= 1, got {rec.length}")
    if rec.offset + rec.length > size:
        raise ValueError(f"extent {rec.offset}+{rec.length} runs past the end of ldev {rec.ldev} ({size} bytes)")
    if rec.op == "write":
        if not isinstance(rec.data, (bytes, bytearray, memoryview)):
            raise ValueError(f"a write must carry its data as bytes, got {type(rec.data).__name__}")
        if len(rec.data) != rec.length:
            raise ValueError(f"a write of length {rec.length} carries {len(rec.data)} bytes of data")
    elif rec.data is not None:
        raise ValueError(f"a {rec.op} carries no data, got {type(rec.data).__name__}")


class CaptureWriter:
    """Write a capture file request by request; ``close()`` (or leaving a ``with``) flushes it.

    Every request is checked before it is written (a ValueError naming the
    file and record), so a capture this writer made always reads back.
    """

    def __init__(self, path: str | Path, site: str, ldev_bytes: Mapping[int, int], source: str):
        self.path = Path(path)
        header = {"format": FORMAT, "version": VERSION, "site": site, "sector_bytes": SECTOR_BYTES,
                  "ldev_bytes": {int(k): int(v) for k, v in sorted(dict(ldev_bytes).items())}, "source": source}
        try:
            self.header = _check_header(header)
        except ValueError as exc:
            raise CaptureError(f"{self.path}: {exc}") from None
        self._packer = msgpack.Packer(use_bin_type=True)
        try:
            self._file: IO[bytes] | None = open(self.path, "wb")
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot write: {exc}") from None
        self._file.write(self._packer.pack(self.header))
        #: the seq the next request gets
        self.next_seq = 0

    def record(self, op: str, ldev: int, arrival_ns: int, ack_ns: int | None, offset: int, length: int,
               flags: int = 0, data: bytes | None = None) -> int:
        """Append one request; return its seq."""
        if self._file is None:
            raise CaptureError(f"{self.path}: record after close")
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        rec = CaptureRecord(self.next_seq, op, ldev, arrival_ns, ack_ns, offset, length, flags, data)
        try:
            check_record(rec, self.header["ldev_bytes"])
        except ValueError as exc:
            raise CaptureError(f"{self.path}: record {rec.seq}: {exc}") from None
        self._file.write(self._packer.pack(list(rec)))
        self.next_seq += 1
        return rec.seq

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _records(path: Path, f: IO[bytes], unpacker: msgpack.Unpacker, header: dict) -> Iterator[CaptureRecord]:
    sizes = header["ldev_bytes"]
    size = path.stat().st_size
    n = 0
    try:
        while True:
            try:
                obj = unpacker.unpack()
            except msgpack.OutOfData:
                if unpacker.tell() != size:
                    raise CaptureError(f"{path}: record {n}: truncated "
                                       f"({size - unpacker.tell()} trailing bytes)") from None
                return
            except (ValueError, msgpack.UnpackException) as exc:
                raise CaptureError(f"{path}: record {n}: not msgpack ({exc})") from None
            if not isinstance(obj, list) or len(obj) != _FIELDS:
                raise CaptureError(f"{path}: record {n}: must be an array of {_FIELDS} fields "
                                   f"[seq, op, ldev, arrival_ns, ack_ns, offset, length, flags, data], got {obj!r:.80}")
            rec = CaptureRecord(*obj)
            try:
                check_record(rec, sizes)
                if rec.seq != n:
                    raise ValueError(f"seq must be {n} (0, 1, ... in order), got {rec.seq}")
            except ValueError as exc:
                raise CaptureError(f"{path}: record {n}: {exc}") from None
            yield rec
            n += 1
    finally:
        f.close()


def read_capture(path: str | Path) -> tuple[dict, Iterator[CaptureRecord]]:
    """Open a capture: its header (checked now) and an iterator over its requests (checked as read).

    The header's ``ldev_bytes`` is keyed by int. The iterator holds the file
    open until it is exhausted or closed; a malformed request raises
    :class:`CaptureError` naming the file and the record number.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc}") from None
    unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False, max_buffer_size=MAX_OBJECT_BYTES,
                                read_size=1 << 16)
    try:
        try:
            raw = unpacker.unpack()
        except msgpack.OutOfData:
            raise CaptureError(f"{path}: header: empty or truncated file") from None
        except (ValueError, msgpack.UnpackException) as exc:
            raise CaptureError(f"{path}: header: not msgpack ({exc})") from None
        try:
            header = _check_header(raw)
        except ValueError as exc:
            raise CaptureError(f"{path}: header: {exc}") from None
    except BaseException:
        f.close()
        raise
    return header, _records(path, f, unpacker, header)


def load_capture(path: str | Path) -> tuple[dict, list[CaptureRecord]]:
    """The header and every request, in a list (a replay needs them all)."""
    header, it = read_capture(path)
    return header, list(it)


def ack_order(records: list[CaptureRecord]) -> list[int]:
    """Indices of the acknowledged requests, sorted by (ack_ns, seq)."""
    return sorted((i for i, r in enumerate(records) if r.ack_ns is not None),
                  key=lambda i: (records[i].ack_ns, records[i].seq))


def happens_before(records: list[CaptureRecord]) -> list[int]:
    """For each request (in the list's order), how long a prefix of :func:`ack_order` must have completed first.

    The rule: request ``r`` waits for every request acknowledged strictly
    before ``r`` arrived. With the acknowledged requests sorted by ack time,
    that set is a prefix of :func:`ack_order`; ``need[i]`` is its length, and
    a replay issues ``r`` only once every request of that prefix has
    completed (not merely as many requests). Unacknowledged requests order
    after every acknowledged one; they wait like any other request.
    """
    acked = sorted(r.ack_ns for r in records if r.ack_ns is not None)
    return [bisect.bisect_left(acked, r.arrival_ns) for r in records]
