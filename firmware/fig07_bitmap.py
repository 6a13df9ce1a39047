"""Differential bitmap (Fig. 7, 107): one bit per (LDEV, logical track).

"While suspended, each host update sets the bit (LDEV#, logical track#) in
the differential bitmap" (0039).  One `DiffBitmap` per pair, a numpy bool
array over the pair's logical tracks. In the DKC it is a table of its
non-volatile memory (``firmware.nvm_tables``): ``DiffBitmap.on(space,
view)`` announces each write before it (the undo log), so the bitmap is
persisted in place at the cost of the bits that change.
"""
from __future__ import annotations

import numpy as np


class DiffBitmap:
    def __init__(self, tracks: int):
        if tracks <= 0:
            raise ValueError(f"bitmap needs a positive track count, got {tracks}")
        self.bits = np.zeros(tracks, dtype=bool)
        self.space = None

    @classmethod
    def on(cls, space, view: np.ndarray) -> "DiffBitmap":
        """A bitmap over the NVM table ``view`` (bool, one per track)."""
        bm = cls.__new__(cls)
        bm.bits, bm.space = view, space
        return bm

    def __getstate__(self):
        if self.space is None:
            return {"bits": self.bits, "space": None}
        return {"bits": self.space.name_of(self.bits), "space": self.space}

    def __setstate__(self, state):
        self.space = state["space"]
        self.bits = state["bits"] if self.space is None else self.space.arr(state["bits"])

    def _touch(self, first: int, count: int = 1) -> None:
        if self.space is not None:
            self.space.touch(self.bits, first, count)

    def _touch_where(self, mask: np.ndarray) -> None:
        """Announce the writes of the tracks in ``mask`` only (O(changes) bytes)."""
        if self.space is not None:
            for t in np.flatnonzero(mask):
                self.space.touch(self.bits, int(t))

    @property
    def tracks(self) -> int:
        return int(self.bits.size)

    def set(self, track: int) -> bool:
        """Set the bit; return True when it was clear before."""
        was = bool(self.bits[track])
        if not was:
            self._touch(track)
            self.bits[track] = True
        return not was

    def clear(self, track: int) -> None:
        if self.bits[track]:
            self._touch(track)
            self.bits[track] = False

    def test(self, track: int) -> bool:
        return bool(self.bits[track])

    def set_all(self) -> None:
        self._touch(0, self.bits.size)
        self.bits[:] = True

    def clear_all(self) -> None:
        self._touch_where(self.bits)
        self.bits[:] = False

    def merge(self, other) -> None:
        """OR another bitmap (or bool array) in (tracks sent during a rolled-back copy)."""
        other = other.bits if isinstance(other, DiffBitmap) else other
        self._touch_where(other & ~self.bits)
        self.bits |= other

    def any(self) -> bool:
        return bool(self.bits.any())

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
