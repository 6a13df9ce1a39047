"""Save area of the remote DKC: save-area bitmap (Fig. 10, 118) and
saved-data queue (Fig. 11, 119).

Fig. 10: "a row per parity-track group or spare disk, a column per track,
one bit per save track in use, plus a per-row 'may be used' flag (801)".
Fig. 11: "one queue per LDEV, one node per logical track: home physical
device# (950), home physical track/sector (951), save disk# (952), save
track/sector (953), cache address of the old data (954)".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware.store import SaveRow


class SaveAreaFull(RuntimeError):
    """No free save track is left (cache over threshold and every usable row full)."""


@dataclass
class SaveAreaBitmap:
    rows: list[SaveRow]
    usable: dict[int, bool]  # row_id -> "may be used" flag (801)
    in_use: dict[int, np.ndarray] = field(default_factory=dict)
    lent: list[int] = field(default_factory=list)  # parity rows lent (redundancy dropped)

    @classmethod
    def build(cls, rows: list[SaveRow], keep_raid5: bool, spares_usable: bool) -> "SaveAreaBitmap":
        ordered = sorted(rows, key=lambda r: (0 if r.kind == "spare" else 1, r.row_id))
        usable = {r.row_id: (r.kind == "spare" and spares_usable) or (r.kind == "parity" and not keep_raid5)
                  for r in ordered}
        in_use = {r.row_id: np.zeros(r.tracks, dtype=bool) for r in ordered}
        return cls(rows=ordered, usable=usable, in_use=in_use)

    def capacity_tracks(self) -> int:
        return sum(r.tracks for r in self.rows if self.usable[r.row_id])

    def used_tracks(self) -> int:
        return int(sum(int(v.sum()) for v in self.in_use.values()))

    def allocate(self) -> tuple[int, int, bool]:
        """First free (row, slot) of a usable row; third item True when the row
        must be lent now (first use of a parity row).  Spares are preferred:
        they cost no redundancy."""
        for row in self.rows:
            if not self.usable[row.row_id]:
                continue
            free = np.flatnonzero(~self.in_use[row.row_id])
            if free.size:
                slot = int(free[0])
                self.in_use[row.row_id][slot] = True
                first_lend = row.kind == "parity" and row.row_id not in self.lent
                if first_lend:
                    self.lent.append(row.row_id)
                return row.row_id, slot, first_lend
        raise SaveAreaFull("save area full")

    def free(self, row_id: int, slot: int) -> None:
        assert self.in_use[row_id][slot], f"save-area bitmap: freeing row {row_id} slot {slot}, which is free"
        self.in_use[row_id][slot] = False

    def describe(self) -> list[dict]:
        return [{"row_id": r.row_id, "kind": r.kind, "tracks": r.tracks,
                 "may_be_used": self.usable[r.row_id], "used": int(self.in_use[r.row_id].sum()),
                 "lent": r.row_id in self.lent} for r in self.rows]


@dataclass
class SavedNode:
    """One Fig. 11 node."""

    home_ldev: int  # 950
    home_track: int  # 951
    save_row: int | None  # 952 (None: cache only)
    save_slot: int | None  # 953
    cache_addr: int | None  # 954 (None: not in cache)
    pair: str = ""


@dataclass
class SavedDataQueue:
    """Per-LDEV queues of SavedNode, plus an index for the first-overwrite test."""

    max_nodes: int
    queues: dict[int, list[SavedNode]] = field(default_factory=dict)
    index: dict[tuple[int, int], SavedNode] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)

    def find(self, ldev: int, track: int) -> SavedNode | None:
        return self.index.get((ldev, track))

    def enqueue(self, node: SavedNode) -> None:
        if len(self.index) >= self.max_nodes:
            raise SaveAreaFull(f"saved-data queue full ({self.max_nodes} nodes)")
        key = (node.home_ldev, node.home_track)
        # 506/507: only the first overwrite of a track during a copy saves its old data
        assert key not in self.index, f"saved-data queue: LDEV {key[0]} track {key[1]} saved twice"
        self.queues.setdefault(node.home_ldev, []).append(node)
        self.index[key] = node

    def ldev_nodes(self, ldev: int) -> list[SavedNode]:
        return list(self.queues.get(ldev, []))

    def ldevs(self) -> list[int]:
        return sorted(self.queues)

    def remove(self, node: SavedNode) -> None:
        self.index.pop((node.home_ldev, node.home_track), None)
        queue = self.queues.get(node.home_ldev, [])
        if node in queue:
            queue.remove(node)

    def drop_ldev(self, ldev: int) -> None:
        for node in self.queues.pop(ldev, []):
            self.index.pop((node.home_ldev, node.home_track), None)


def assert_accounting(bitmap: SaveAreaBitmap, saved: SavedDataQueue) -> None:
    """The save-area bitmap (Fig. 10) and the saved-data queue (Fig. 11) agree:
    every node saved on a disk row holds a bit of the bitmap, no two nodes
    share one, and the per-LDEV queues hold exactly the indexed nodes. (A
    bit may outlive its node: a save track whose media failed stays marked,
    so it is never handed out again.) O(nodes): called at the copy's end
    and on rollback, not per track."""
    on_disk = [(n.save_row, n.save_slot) for _, n in sorted(saved.index.items()) if n.save_row is not None]
    assert len(set(on_disk)) == len(on_disk), "saved-data queue: two nodes on one save track"
    for row_id, slot in on_disk:
        assert bitmap.in_use[row_id][slot], f"saved node on row {row_id} slot {slot} not marked in the bitmap"
    assert len(on_disk) <= bitmap.used_tracks(), "save-area bitmap counts fewer tracks than nodes use"
    queued = sorted((n.home_ldev, n.home_track) for q in saved.queues.values() for n in q)
    assert queued == sorted(saved.index), "saved-data queue: per-LDEV queues and index differ"
