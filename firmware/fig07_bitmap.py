"""Differential bitmap (Fig. 7, 107): one bit per (LDEV, logical track).

"While suspended, each host update sets the bit (LDEV#, logical track#) in
the differential bitmap" (0039).  One `DiffBitmap` per pair, a numpy bool
array over the pair's logical tracks.
"""
from __future__ import annotations

import numpy as np


class DiffBitmap:
    def __init__(self, tracks: int):
        if tracks <= 0:
            raise ValueError(f"bitmap needs a positive track count, got {tracks}")
        self.bits = np.zeros(tracks, dtype=bool)

    @property
    def tracks(self) -> int:
        return int(self.bits.size)

    def set(self, track: int) -> bool:
        """Set the bit; return True when it was clear before."""
        was = bool(self.bits[track])
        self.bits[track] = True
        return not was

    def clear(self, track: int) -> None:
        self.bits[track] = False

    def test(self, track: int) -> bool:
        return bool(self.bits[track])

    def set_all(self) -> None:
        self.bits[:] = True

    def clear_all(self) -> None:
        self.bits[:] = False

    def merge(self, other: np.ndarray) -> None:
        """OR another bool array in (tracks sent during a rolled-back copy)."""
        self.bits |= other

    def count(self) -> int:
        return int(self.bits.sum())

    def next_set(self, start: int) -> int | None:
        """Lowest set track >= start, or None (step 407/410 search)."""
        if start >= self.bits.size:
            return None
        hits = np.flatnonzero(self.bits[start:])
        return int(hits[0]) + start if hits.size else None

    def set_tracks(self) -> list[int]:
        return [int(t) for t in np.flatnonzero(self.bits)]
