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
    #: the DKC's NVM (``firmware.nvm_tables.NvmSpace``) holding ``in_use``, or None
    space: object = None

    @classmethod
    def build(cls, rows: list[SaveRow], keep_raid5: bool, spares_usable: bool,
              tables: dict[int, np.ndarray] | None = None, space=None) -> "SaveAreaBitmap":
        """The bitmap of a new copy; with ``tables`` (row -> NVM bool table of
        the DKC) its rows are those tables, cleared bit by bit (O(bits set))."""
        ordered = sorted(rows, key=lambda r: (0 if r.kind == "spare" else 1, r.row_id))
        usable = {r.row_id: (r.kind == "spare" and spares_usable) or (r.kind == "parity" and not keep_raid5)
                  for r in ordered}
        if tables is None:
            in_use = {r.row_id: np.zeros(r.tracks, dtype=bool) for r in ordered}
        else:
            in_use = {}
            for r in ordered:
                view = tables[r.row_id]
                if view.size < r.tracks:
                    raise ValueError(f"save row {r.row_id}: {r.tracks} tracks, its NVM table holds {view.size}")
                for slot in np.flatnonzero(view):
                    space.touch(view, int(slot))
                    view[slot] = False
                in_use[r.row_id] = view
        return cls(rows=ordered, usable=usable, in_use=in_use, space=space)

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.space is not None:
            state["in_use"] = {r: self.space.name_of(v) for r, v in self.in_use.items()}
        return state

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        if self.space is not None:
            self.in_use = {r: self.space.arr(name) for r, name in self.in_use.items()}

    def capacity_tracks(self) -> int:
        return sum(r.tracks for r in self.rows if self.usable[r.row_id])

    def used_tracks(self) -> int:
        return int(sum(int(v.sum()) for v in self.in_use.values()))

    def _set(self, row_id: int, slot: int, value: bool) -> None:
        if self.space is not None:
            self.space.touch(self.in_use[row_id], slot)
        self.in_use[row_id][slot] = value

    def allocate(self) -> tuple[int, int, bool]:
        """First free (row, slot) of a usable row; third item True when the row
        must be lent now (first use of a parity row).  Spares are preferred:
        they cost no redundancy."""
        for row in self.rows:
            if not self.usable[row.row_id]:
                continue
            free = np.flatnonzero(~self.in_use[row.row_id][:row.tracks])
            if free.size:
                slot = int(free[0])
                self._set(row.row_id, slot, True)
                first_lend = row.kind == "parity" and row.row_id not in self.lent
                if first_lend:
                    self.lent.append(row.row_id)
                return row.row_id, slot, first_lend
        raise SaveAreaFull("save area full")

    def free(self, row_id: int, slot: int) -> None:
        assert self.in_use[row_id][slot], f"save-area bitmap: freeing row {row_id} slot {slot}, which is free"
        self._set(row_id, slot, False)

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


#: one Fig. 11 node as an NVM record (-1: none); ``order`` keeps each LDEV's queue order
NODE_DTYPE = np.dtype([("used", "u1"), ("home_ldev", "<i4"), ("home_track", "<i8"), ("save_row", "<i4"),
                       ("save_slot", "<i8"), ("cache_addr", "<i8"), ("pair", "<i4"), ("order", "<i8")])


class SavedDataQueue:
    """Per-LDEV queues of SavedNode, plus an index for the first-overwrite test.

    The nodes are records of a fixed-capacity table (``NODE_DTYPE``): in the
    DKC a table of its NVM (``space``), written in place when a node is
    enqueued or removed; the queues and the index are rebuilt from it at
    a restart (``reload``)."""

    def __init__(self, max_nodes: int, space=None, records: np.ndarray | None = None,
                 pair_names: list[str] | None = None):
        self.max_nodes = int(max_nodes)
        self.space = space
        self.records = records if records is not None else np.zeros(self.max_nodes, dtype=NODE_DTYPE)
        self.pair_names = list(pair_names or [])
        self.reload()

    def __getstate__(self):
        state = dict(self.__dict__)
        for k in ("queues", "index", "slot_of", "free_slots", "next_order", "high"):
            state.pop(k, None)
        if self.space is None:
            state["records"] = self.records.copy()
        else:
            state["records"] = self.space.name_of(self.records)
        return state

    def __setstate__(self, state):
        for k, v in state.items():   # setattr interns the names, as pickle does: same bytes when pickled again
            setattr(self, k, v)
        if self.space is not None:
            self.records = self.space.arr(self.records)
        self.reload()

    def reload(self) -> None:
        """Rebuild the queues and the index from the records."""
        self.queues: dict[int, list[SavedNode]] = {}
        self.index: dict[tuple[int, int], SavedNode] = {}
        self.slot_of: dict[tuple[int, int], int] = {}
        used = np.flatnonzero(self.records["used"])
        for slot in used[np.argsort(self.records["order"][used], kind="stable")]:
            r = self.records[slot]
            node = SavedNode(int(r["home_ldev"]), int(r["home_track"]),
                             None if r["save_row"] < 0 else int(r["save_row"]),
                             None if r["save_slot"] < 0 else int(r["save_slot"]),
                             None if r["cache_addr"] < 0 else int(r["cache_addr"]),
                             self.pair_names[r["pair"]] if 0 <= r["pair"] < len(self.pair_names) else "")
            self.queues.setdefault(node.home_ldev, []).append(node)
            self.index[(node.home_ldev, node.home_track)] = node
            self.slot_of[(node.home_ldev, node.home_track)] = int(slot)
        # free records: those below the high-water mark not in use, then the never used ones
        self.high = int(used.max()) + 1 if used.size else 0
        self.free_slots = [int(s) for s in np.flatnonzero(self.records["used"][:self.high] == 0)[::-1]]
        self.next_order = int(self.records["order"][used].max()) + 1 if used.size else 0

    def reset(self, max_nodes: int) -> "SavedDataQueue":
        """Empty (a new copy), at the cost of the nodes it held."""
        for slot in np.flatnonzero(self.records["used"]):
            self._write(int(slot), used=0)
        self.max_nodes = min(int(max_nodes), len(self.records))
        self.reload()
        return self

    def _write(self, slot: int, **fields) -> None:
        if self.space is not None:
            self.space.touch(self.records, slot)
        for k, v in fields.items():
            self.records[k][slot] = v

    def __len__(self) -> int:
        return len(self.index)

    def find(self, ldev: int, track: int) -> SavedNode | None:
        return self.index.get((ldev, track))

    def enqueue(self, node: SavedNode) -> None:
        if len(self.index) >= self.max_nodes or not (self.free_slots or self.high < len(self.records)):
            raise SaveAreaFull(f"saved-data queue full ({self.max_nodes} nodes)")
        key = (node.home_ldev, node.home_track)
        # 506/507: only the first overwrite of a track during a copy saves its old data
        assert key not in self.index, f"saved-data queue: LDEV {key[0]} track {key[1]} saved twice"
        if node.pair and node.pair not in self.pair_names:
            self.pair_names.append(node.pair)
        if self.free_slots:
            slot = self.free_slots.pop()
        else:
            slot, self.high = self.high, self.high + 1
        self._write(slot, used=1, home_ldev=node.home_ldev, home_track=node.home_track,
                    save_row=-1 if node.save_row is None else node.save_row,
                    save_slot=-1 if node.save_slot is None else node.save_slot,
                    cache_addr=-1 if node.cache_addr is None else node.cache_addr,
                    pair=self.pair_names.index(node.pair) if node.pair else -1, order=self.next_order)
        self.next_order += 1
        self.slot_of[key] = slot
        self.queues.setdefault(node.home_ldev, []).append(node)
        self.index[key] = node

    def ldev_nodes(self, ldev: int) -> list[SavedNode]:
        return list(self.queues.get(ldev, []))

    def ldevs(self) -> list[int]:
        return sorted(self.queues)

    def _drop_record(self, node: SavedNode) -> None:
        slot = self.slot_of.pop((node.home_ldev, node.home_track), None)
        if slot is not None:
            self._write(slot, used=0)
            self.free_slots.append(slot)

    def remove(self, node: SavedNode) -> None:
        self.index.pop((node.home_ldev, node.home_track), None)
        queue = self.queues.get(node.home_ldev, [])
        if node in queue:
            queue.remove(node)
        self._drop_record(node)

    def drop_ldev(self, ldev: int) -> None:
        for node in self.queues.pop(ldev, []):
            self.index.pop((node.home_ldev, node.home_track), None)
            self._drop_record(node)


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
