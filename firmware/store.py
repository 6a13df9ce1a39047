"""Interfaces the DKC actor provides to the firmware, plus in-memory fakes.

`TrackStore` is the DKC's view of its LDEVs (cache + RAID5 behind it);
`SaveMedia` is the disk save area of the patent (parity tracks 220 of a RAID5
group, spare disks 230).  The firmware only ever talks to these two
protocols, so it stays sans-I/O; the in-memory fakes serve the tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from firmware.protocol import SECTOR_BYTES



class SaveMediaError(IOError):
    """A save-area row cannot be read or written (e.g. its small disk failed)."""


@dataclass(frozen=True)
class SaveRow:
    """One row of the save-area bitmap (Fig. 10): a parity-track group or a spare disk."""

    row_id: int
    kind: str  # 'parity' | 'spare'
    tracks: int


class TrackStore(Protocol):
    track_bytes: int
    sector_bytes: int

    def ldev_tracks(self, ldev: int) -> int: ...
    def cached(self, ldev: int, track: int) -> bool: ...
    def written_tracks(self, ldev: int): ...   # thin media: np.ndarray of tracks ever written; None when thick
    def discard(self, ldev: int) -> int: ...   # thin media: UNMAP the LDEV (reads zeros); tracks discarded
    def read_track(self, ldev: int, track: int) -> bytes: ...
    def write_track(self, ldev: int, track: int, data: bytes) -> None: ...
    def write_sectors(self, ldev: int, lba: int, data: bytes) -> None: ...
    def read_sectors(self, ldev: int, lba: int, n: int) -> bytes: ...


class SaveMedia(Protocol):
    def rows(self) -> list[SaveRow]: ...
    def write_save(self, row_id: int, slot: int, data: bytes) -> None: ...
    def read_save(self, row_id: int, slot: int) -> bytes: ...
    def lend(self, row_id: int) -> None: ...
    def release(self, row_id: int) -> None: ...


class MemoryTrackStore:
    """LDEVs as bytearrays; `ldev_tracks_by_ldev` maps ldev -> number of tracks."""

    def __init__(self, track_bytes: int, ldev_tracks_by_ldev: dict[int, int]):
        if track_bytes % SECTOR_BYTES:
            raise ValueError(f"track_bytes {track_bytes} is not a multiple of {SECTOR_BYTES}")
        self.track_bytes = track_bytes
        self.sector_bytes = SECTOR_BYTES
        self._tracks = dict(ldev_tracks_by_ldev)
        self._data = {ldev: bytearray(n * track_bytes) for ldev, n in sorted(self._tracks.items())}

    def ldev_tracks(self, ldev: int) -> int:
        if ldev not in self._tracks:
            raise ValueError(f"no such ldev {ldev}")
        return self._tracks[ldev]

    def _span(self, ldev: int, start: int, nbytes: int) -> bytearray:
        buf = self._data[ldev]
        if start < 0 or start + nbytes > len(buf):
            raise ValueError(f"ldev {ldev}: access [{start}, {start + nbytes}) out of range")
        return buf

    def cached(self, ldev: int, track: int) -> bool:
        return False   # no cache: every read is a disk read

    def written_tracks(self, ldev: int):
        return None    # thick: every track is stored

    def discard(self, ldev: int) -> int:
        return 0       # thick: nothing to unmap

    def read_track(self, ldev: int, track: int) -> bytes:
        start = track * self.track_bytes
        return bytes(self._span(ldev, start, self.track_bytes)[start:start + self.track_bytes])

    def write_track(self, ldev: int, track: int, data: bytes) -> None:
        if len(data) != self.track_bytes:
            raise ValueError(f"track data is {len(data)} bytes, want {self.track_bytes}")
        start = track * self.track_bytes
        self._span(ldev, start, len(data))[start:start + len(data)] = data

    def write_sectors(self, ldev: int, lba: int, data: bytes) -> None:
        start = lba * self.sector_bytes
        self._span(ldev, start, len(data))[start:start + len(data)] = data

    def read_sectors(self, ldev: int, lba: int, n: int) -> bytes:
        start, nbytes = lba * self.sector_bytes, n * self.sector_bytes
        return bytes(self._span(ldev, start, nbytes)[start:start + nbytes])

    def image(self, ldev: int) -> bytes:
        """Raw bytes of one LDEV (test helper)."""
        return bytes(self._data[ldev])


class MemorySaveMedia:
    """Save rows in memory; `fail_row` makes a row unreadable (a failed small disk)."""

    def __init__(self, rows: list[SaveRow]):
        self._rows = list(rows)
        self._slots: dict[tuple[int, int], bytes] = {}
        self.lent: set[int] = set()
        self.failed: set[int] = set()
        self.lend_count = 0
        self.release_count = 0

    def rows(self) -> list[SaveRow]:
        return list(self._rows)

    def _check(self, row_id: int, slot: int) -> None:
        row = next((r for r in self._rows if r.row_id == row_id), None)
        if row is None or not 0 <= slot < row.tracks:
            raise SaveMediaError(f"no save slot {row_id}:{slot}")
        if row_id in self.failed:
            raise SaveMediaError(f"save row {row_id} failed")

    def write_save(self, row_id: int, slot: int, data: bytes) -> None:
        self._check(row_id, slot)
        self._slots[(row_id, slot)] = bytes(data)

    def read_save(self, row_id: int, slot: int) -> bytes:
        self._check(row_id, slot)
        return self._slots[(row_id, slot)]

    def lend(self, row_id: int) -> None:
        self.lent.add(row_id)
        self.lend_count += 1

    def release(self, row_id: int) -> None:
        self.lent.discard(row_id)
        self.release_count += 1

    def fail_row(self, row_id: int) -> None:
        self.failed.add(row_id)
