"""Where the remote DKC keeps saved old tracks beyond its cache: the parity
tracks of its RAID5 groups (patent 220) and its spare disks (230)."""
from __future__ import annotations

import numpy as np

from firmware.raid.layout import DataLossError, RaidGroup
from firmware.store import SaveMediaError, SaveRow


class DiskSaveMedia:
    """The firmware's ``SaveMedia``: a row per parity group (its parity
    tracks, patent 220) and a row per spare disk (230)."""

    def __init__(self, groups: list[RaidGroup], spares: list[np.ndarray], track_bytes: int):
        self.groups = groups
        self.spares = spares
        self.spare_failed = [False] * len(spares)
        self.track_bytes = track_bytes

    def rows(self) -> list[SaveRow]:
        out = [SaveRow(g, "parity", grp.layout.n_stripes) for g, grp in enumerate(self.groups)
               if not grp.failed_disks]   # a degraded group has no parity to lend
        tracks = len(self.spares[0]) // self.track_bytes if self.spares else 0
        out += [SaveRow(len(self.groups) + j, "spare", tracks) for j in range(len(self.spares))
                if not self.spare_failed[j]]   # failed, or taken by a rebuild
        return out

    def _spare(self, row_id: int, slot: int) -> np.ndarray:
        j = row_id - len(self.groups)
        if self.spare_failed[j]:
            raise SaveMediaError(f"spare disk {j} failed")
        return self.spares[j][slot * self.track_bytes:(slot + 1) * self.track_bytes]

    def write_save(self, row_id: int, slot: int, data: bytes) -> None:
        try:
            if row_id < len(self.groups):
                self.groups[row_id].write_parity_slot(slot, np.frombuffer(data, dtype=np.uint8))
            else:
                self._spare(row_id, slot)[:] = np.frombuffer(data, dtype=np.uint8)
        except DataLossError as exc:
            raise SaveMediaError(str(exc)) from None

    def read_save(self, row_id: int, slot: int) -> bytes:
        try:
            if row_id < len(self.groups):
                return self.groups[row_id].read_parity_slot(slot).tobytes()
            return self._spare(row_id, slot).tobytes()
        except DataLossError as exc:
            raise SaveMediaError(str(exc)) from None

    def lend(self, row_id: int) -> None:
        if row_id < len(self.groups):
            self.groups[row_id].lend_parity()

    def release(self, row_id: int) -> None:
        if row_id < len(self.groups):
            try:
                self.groups[row_id].recompute_parity()
            except DataLossError as exc:
                raise SaveMediaError(str(exc)) from None

