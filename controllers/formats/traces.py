"""Block-I/O trace parsers into one common record, and replay mapping.

Formats (one request per line, no header):

* MSR Cambridge (SNIA IOTTA) CSV:
  ``Timestamp(100ns FILETIME),Hostname,DiskNumber,Type(Read|Write),Offset(bytes),Size(bytes),ResponseTime(100ns)``
* MQSim / SPC-style ASCII, blank separated:
  ``arrival_ns device start_lba_sectors size_sectors type(1 read, 0 write)``
* Tencent CBS (SNIA IOTTA) CSV, plain or ``.bz2``:
  ``Timestamp(s),Offset(sectors),Size(sectors),IOType(0 read, 1 write),VolumeID``

Every parser returns :class:`TraceRecord` s sorted by time (stable), with
``time_ns`` relative to the earliest request (Tencent rows are not strictly
time-ordered within a second), ``lba``/``sectors`` in 512-byte sectors
(byte extents are widened to whole sectors) and ``volume`` a string
(``host_disk`` for MSR, the device number for MQSim, the VolumeID for
Tencent). Zero-length requests are skipped. Errors are
:class:`TraceError` (a ValueError) saying ``file:line: what``.

:func:`scale_time` stretches or compresses time; :func:`map_to_ldevs`
maps volumes and LBAs onto the emulator's LDEVs (modulo, see there).
"""

from __future__ import annotations

import bz2
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence
from firmware.protocol import SECTOR_BYTES

FILETIME_TICK_NS = 100
FORMATS = ("msr", "mqsim", "tencent")


class TraceError(ValueError):
    """A trace file that cannot be parsed; the message names file and line."""


@dataclass(frozen=True)
class TraceRecord:
    """One request: time since the first request, "read"/"write", extent in sectors, source volume."""

    time_ns: int
    op: str
    lba: int
    sectors: int
    volume: str


@dataclass(frozen=True)
class MappedIO:
    """A trace request placed on an emulator LDEV."""

    time_ns: int
    op: str
    ldev: int
    lba: int
    sectors: int


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic == b"BZh":
        return io.TextIOWrapper(bz2.open(path, "rb"), encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


# a row parser returns (time in its native unit as int, op, lba, sectors, volume) or None to skip
RowParser = Callable[[list[str]], "tuple[int, str, int, int, str] | None"]


def _read(path: str | Path, split: Callable[[str], list[str]], parse_row: RowParser,
          tick_ns: int, fmt: str) -> list[TraceRecord]:
    path = Path(path)
    rows = []
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    row = parse_row(split(line))
                except (ValueError, IndexError) as exc:
                    raise TraceError(f"{path}:{lineno}: not a {fmt} line ({exc}): {line.strip()[:80]!r}") from None
                if row is not None:
                    rows.append(row)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    except (UnicodeDecodeError, EOFError) as exc:
        raise TraceError(f"{path}: not a text trace: {exc}") from None
    if not rows:
        raise TraceError(f"{path}: no requests")
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    return [TraceRecord((t - t0) * tick_ns, op, lba, n, vol) for t, op, lba, n, vol in rows]


def _need(fields: list[str], n: int) -> None:
    if len(fields) < n:
        raise ValueError(f"expected {n} fields, got {len(fields)}")


def _msr_row(f: list[str]):
    _need(f, 7)
    t, host, disk, kind, off_b, size_b = int(f[0]), f[1].strip(), f[2].strip(), f[3].strip().lower(), int(f[4]), int(f[5])
    if kind not in ("read", "write"):
        raise ValueError(f"Type must be Read or Write, got {f[3].strip()!r}")
    if off_b < 0 or size_b < 0:
        raise ValueError("negative offset or size")
    if size_b == 0:
        return None
    lba = off_b // SECTOR_BYTES
    end = -(-(off_b + size_b) // SECTOR_BYTES)
    return t, kind, lba, end - lba, f"{host}_{disk}"


def _mqsim_row(f: list[str]):
    _need(f, 5)
    t, dev, lba, n, kind = int(f[0]), f[1], int(f[2]), int(f[3]), int(f[4])
    if kind not in (0, 1):
        raise ValueError(f"type must be 1 (read) or 0 (write), got {kind}")
    if lba < 0 or n < 0:
        raise ValueError("negative lba or size")
    return None if n == 0 else (t, "read" if kind == 1 else "write", lba, n, dev)


def _tencent_row(f: list[str]):
    _need(f, 5)
    t, lba, n, kind, vol = int(f[0]), int(f[1]), int(f[2]), int(f[3]), f[4].strip()
    if kind not in (0, 1):
        raise ValueError(f"IOType must be 0 (read) or 1 (write), got {kind}")
    if lba < 0 or n < 0:
        raise ValueError("negative offset or size")
    return None if n == 0 else (t, "read" if kind == 0 else "write", lba, n, vol)


def read_msr(path: str | Path) -> list[TraceRecord]:
    """MSR Cambridge CSV (FILETIME 100 ns ticks, byte offsets)."""
    return _read(path, lambda s: s.split(","), _msr_row, FILETIME_TICK_NS, "MSR Cambridge")


def read_mqsim(path: str | Path) -> list[TraceRecord]:
    """MQSim ASCII trace (ns, sectors, type 1 = read)."""
    return _read(path, str.split, _mqsim_row, 1, "MQSim")


def read_tencent(path: str | Path) -> list[TraceRecord]:
    """Tencent CBS CSV, plain or bz2 (seconds, sectors, IOType 1 = write)."""
    return _read(path, lambda s: s.split(","), _tencent_row, 1_000_000_000, "Tencent CBS")


_READERS = {"msr": read_msr, "mqsim": read_mqsim, "tencent": read_tencent}


def detect_format(path: str | Path) -> str:
    """Guess the format from the first non-blank line."""
    path = Path(path)
    try:
        with _open_text(path) as f:
            first = next((ln for ln in f if ln.strip()), "")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    fields = first.strip().split(",")
    if len(fields) >= 7 and fields[3].strip().lower() in ("read", "write"):
        return "msr"
    if len(fields) == 5:
        return "tencent"
    if len(first.split()) == 5:
        return "mqsim"
    raise TraceError(f"{path}:1: unknown trace format (expected one of {', '.join(FORMATS)}): {first.strip()[:80]!r}")


def read_trace(path: str | Path, fmt: str | None = None) -> list[TraceRecord]:
    """Parse a trace of format ``fmt`` (msr, mqsim, tencent) or detect it."""
    fmt = fmt or detect_format(path)
    if fmt not in _READERS:
        raise ValueError(f"trace format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return _READERS[fmt](path)


def scale_time(records: Iterable[TraceRecord], factor: float) -> list[TraceRecord]:
    """Multiply every ``time_ns`` by ``factor`` (0.5 replays twice as fast)."""
    if not factor > 0:
        raise ValueError(f"time scale factor must be > 0, got {factor}")
    return [TraceRecord(int(round(r.time_ns * factor)), r.op, r.lba, r.sectors, r.volume) for r in records]


def map_to_ldevs(records: Iterable[TraceRecord], ldev_sectors: Mapping[int, int] | Sequence[int],
                 ldevs: Sequence[int] | None = None) -> list[MappedIO]:
    """Place requests on LDEVs.

    Volumes are numbered in order of first appearance; volume ``i`` goes to
    ``ldevs[i % len(ldevs)]`` (default: every LDEV of ``ldev_sectors``,
    ascending). A request longer than its LDEV is cut to the LDEV size; its
    start becomes ``lba % (ldev_size - sectors + 1)`` so it always fits and
    equal LBAs of one volume still collide (locality is kept).
    """
    sizes = dict(ldev_sectors) if isinstance(ldev_sectors, Mapping) else dict(enumerate(ldev_sectors))
    targets = list(ldevs) if ldevs is not None else sorted(sizes)
    if not targets:
        raise ValueError("map_to_ldevs: no LDEVs to map onto")
    for ldev in targets:
        if sizes.get(ldev, 0) < 1:
            raise ValueError(f"map_to_ldevs: LDEV {ldev} has no size")
    volume_index: dict[str, int] = {}
    out = []
    for r in records:
        i = volume_index.setdefault(r.volume, len(volume_index))
        ldev = targets[i % len(targets)]
        size = sizes[ldev]
        n = min(r.sectors, size)
        out.append(MappedIO(r.time_ns, r.op, ldev, r.lba % (size - n + 1), n))
    return out
