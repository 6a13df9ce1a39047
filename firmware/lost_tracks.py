"""Tracks whose data the DKC can no longer vouch for (beyond the patent).

A double fault during a recovery copy can leave a track with no right
image: its saved old data sat on a parity track or spare disk that failed
(step 519 cannot read it), its home cannot be written back (518/519), the
old data could not be read before the overwrite (510), or a staged track of
stage-new could not be applied. The firmware then marks the track lost in
non-volatile memory (this table is part of the DKC's NVM state). While it
is marked, every host read and every export touching it fails with a
data-loss error, whatever the cache holds; a write of the whole track
(a host write, a mirrored update or a copy track) gives it a right image
again and clears the mark. A partial write to a lost track is refused: the
rest of the track is unknown, so the track could not be read back.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class TrackLost(ValueError):
    """A read or partial write of a track marked lost."""


@dataclass
class LostTracks:
    """ldev -> {track: why}. In the DKC each mark is also a record of an NVM
    table (``table``, a ``firmware.nvm_tables.BlobMap`` keyed by (ldev,
    track)), written when it changes; ``marks`` is rebuilt from it."""

    marks: dict[int, dict[int, str]] = field(default_factory=dict)
    table: object = None

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.table is not None:
            state.pop("marks", None)
        return state

    def __setstate__(self, state):
        for k, v in state.items():   # setattr interns the names, as pickle does: same bytes when pickled again
            setattr(self, k, v)
        if self.table is not None:
            self.marks = {}
            for (ldev, track), why in self.table.items():
                self.marks.setdefault(ldev, {})[track] = why.decode()

    def mark(self, ldev: int, track: int, why: str) -> None:
        if self.table is not None:
            self.table[(int(ldev), int(track))] = why.encode()
        self.marks.setdefault(int(ldev), {})[int(track)] = why

    def clear(self, ldev: int, track: int) -> bool:
        tracks = self.marks.get(ldev)
        if not tracks or track not in tracks:
            return False
        if self.table is not None:
            del self.table[(int(ldev), int(track))]
        del tracks[track]
        if not tracks:
            del self.marks[ldev]
        return True

    def __bool__(self) -> bool:
        return bool(self.marks)

    def count(self) -> int:
        return sum(len(t) for t in self.marks.values())

    def hits(self, ldev: int, first_track: int, last_track: int) -> list[int]:
        """Lost tracks of ``ldev`` in [first_track, last_track]."""
        tracks = self.marks.get(ldev)
        if not tracks:
            return []
        return sorted(t for t in tracks if first_track <= t <= last_track)

    def check(self, ldev: int, first_track: int, last_track: int, what: str) -> None:
        """Raise TrackLost naming the lost tracks of this span, if any."""
        lost = self.hits(ldev, first_track, last_track)
        if lost:
            why = self.marks[ldev][lost[0]]
            raise TrackLost(f"data loss: {what} ldev {ldev} tracks {format_ranges(lost)} "
                            f"have no right image ({why})")

    def ranges(self) -> dict[int, list[dict]]:
        """Per LDEV: runs of consecutive lost tracks with one reason each."""
        out = {}
        for ldev in sorted(self.marks):
            runs: list[dict] = []
            for track in sorted(self.marks[ldev]):
                why = self.marks[ldev][track]
                if runs and runs[-1]["last"] == track - 1 and runs[-1]["why"] == why:
                    runs[-1]["last"] = track
                else:
                    runs.append({"first": track, "last": track, "why": why})
            out[ldev] = runs
        return out


def format_ranges(tracks: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start, prev = [], None, None
    for t in sorted(tracks):
        if start is None:
            start = prev = t
        elif t == prev + 1:
            prev = t
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = t
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)
