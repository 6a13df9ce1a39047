"""Time-series queue (claim 3; Figs. 12/13, steps 1201-1208).

One queue per consistency unit (LDEV or group), doubly linked nodes: prev
(1101), control info (1102: update type 1102a = format write or partial
write; node-valid flag 1102b), logical track# (1103), physical address
(1104), cache address (1105), next (1106).  The recovery copy sends from the
head (oldest first).

The queue is bounded: when it is full it is marked `overflowed` and stops
recording; the recovery copy then falls back to bitmap order for that unit
(the bitmap still holds every changed track).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

FORMAT, PARTIAL = "format", "partial"

Trace = Callable[..., None]


class QueueOverflow(RuntimeError):
    """The time-series queue reached its node limit."""


@dataclass
class TsNode:
    node_id: int
    prev: int | None  # 1101
    update_type: str  # 1102a
    valid: bool  # 1102b
    ldev: int
    track: int  # 1103
    phys_lba: int  # 1104: first sector of the update on the LDEV
    cache_addr: int  # 1105
    next: int | None  # 1106
    seg: int = -1     # where 1105's data sits in the NVM pool (-1: dropped)
    nbytes: int = 0


#: one node as an NVM record (-1: none); a queue's nodes sit at node_id % capacity
NODE_DTYPE = np.dtype([("used", "u1"), ("prev", "<i8"), ("next", "<i8"), ("type", "u1"), ("valid", "u1"),
                       ("ldev", "<i4"), ("track", "<i8"), ("phys", "<i8"), ("cache_addr", "<i8"),
                       ("seg", "<i4"), ("nbytes", "<i8")])
#: a queue's head, tail, next id, length and flags, one record per queue
META_DTYPE = np.dtype([("head", "<i8"), ("tail", "<i8"), ("next_id", "<i8"), ("count", "<i8"),
                       ("overflowed", "u1"), ("incomplete", "u1")])
_TYPES = (FORMAT, PARTIAL)


class TimeSeriesQueue:
    """One unit's queue: its nodes are records of an NVM table (``nodes``,
    ``capacity`` records), its scalars a record of ``meta``, the update data
    (1105) in the NVM pool; every change is written in place, announced to
    the NVM (``space.touch``) before it is made. ``format_node`` is volatile,
    rebuilt from the nodes (``reload``)."""

    def __init__(self, unit: str, max_nodes: int, space, nodes: np.ndarray, meta: np.ndarray, slot: int, pool):
        self.unit = unit
        self.space, self.nodes_tab, self.meta, self.slot, self.pool = space, nodes, meta, slot, pool
        self.capacity = len(nodes)
        self.max_nodes = min(int(max_nodes), self.capacity)
        self._set_m(head=-1, tail=-1, next_id=0, count=0, overflowed=0, incomplete=0)
        self.format_node: dict[tuple[int, int], int] = {}
        self._staged = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("format_node", None)
        state.pop("_staged", None)
        state["nodes_tab"], state["meta"] = self.space.name_of(self.nodes_tab), self.space.name_of(self.meta)
        return state

    def __setstate__(self, state):
        for k, v in state.items():   # setattr interns the names, as pickle does: same bytes when pickled again
            setattr(self, k, v)
        self.nodes_tab, self.meta = self.space.arr(self.nodes_tab), self.space.arr(self.meta)
        self.reload()

    def reload(self) -> None:
        """Rebuild ``format_node`` (the newest format node of each track) from the queue."""
        self.format_node: dict[tuple[int, int], int] = {}
        self._staged = None
        for node in self.walk():
            if node.update_type == FORMAT:
                self.format_node[(node.ldev, node.track)] = node.node_id

    # ------------------------------------------------------------ the records
    def _m(self, field: str) -> int:
        return int(self.meta[field][self.slot])

    def _set_m(self, **fields) -> None:
        self.space.touch(self.meta, self.slot)
        for k, v in fields.items():
            self.meta[k][self.slot] = v

    def _rec(self, node_id: int) -> int:
        return node_id % self.capacity

    def _write(self, node_id: int, **fields) -> None:
        i = self._rec(node_id)
        self.space.touch(self.nodes_tab, i)
        for k, v in fields.items():
            self.nodes_tab[k][i] = v

    def node(self, node_id: int) -> TsNode:
        r = self.nodes_tab[self._rec(node_id)]
        assert r["used"], f"time-series queue {self.unit}: node {node_id} is not in the queue"
        return TsNode(node_id=node_id, prev=None if r["prev"] < 0 else int(r["prev"]),
                      update_type=_TYPES[r["type"]], valid=bool(r["valid"]), ldev=int(r["ldev"]),
                      track=int(r["track"]), phys_lba=int(r["phys"]), cache_addr=int(r["cache_addr"]),
                      next=None if r["next"] < 0 else int(r["next"]), seg=int(r["seg"]), nbytes=int(r["nbytes"]))

    def walk(self):
        """The nodes from the head (oldest) on."""
        node_id = self.head
        while node_id is not None:
            node = self.node(node_id)
            yield node
            node_id = node.next

    @property
    def head(self) -> int | None:
        h = self._m("head")
        return None if h < 0 else h

    @property
    def tail(self) -> int | None:
        t = self._m("tail")
        return None if t < 0 else t

    @property
    def next_id(self) -> int:
        return self._m("next_id")

    @property
    def overflowed(self) -> bool:
        return bool(self._m("overflowed"))

    @overflowed.setter
    def overflowed(self, value: bool) -> None:
        self._set_m(overflowed=int(bool(value)))

    @property
    def incomplete(self) -> bool:
        """Bits were set by other means (aborted copy)."""
        return bool(self._m("incomplete"))

    @incomplete.setter
    def incomplete(self, value: bool) -> None:
        self._set_m(incomplete=int(bool(value)))

    def __len__(self) -> int:
        return self._m("count")

    def usable(self) -> bool:
        """True when the queue holds every update since suspension."""
        return not (self.overflowed or self.incomplete)

    def can_store(self, nbytes: int) -> bool:
        """Room for one more update of ``nbytes``: a node and its data in the pool."""
        return len(self) < self.max_nodes and self.pool.can_hold(nbytes)

    # ------------------------------------------------------------ the steps
    def s1202_get_addresses(self, trace: Trace, ldev: int, lba: int) -> tuple[int, int]:
        """1202: "get its cache and physical addresses"."""
        cache_addr = self.next_id
        trace(1202, "tsq_addresses", unit=self.unit, ldev=ldev, lba=lba, cache_addr=cache_addr)
        return cache_addr, lba

    def s1203_store_in_cache(self, trace: Trace, cache_addr: int, data: bytes) -> None:
        """1203: "store the update in cache"."""
        self._staged = (cache_addr, self.pool.put(bytes(data)), len(data))
        trace(1203, "tsq_cache", unit=self.unit, cache_addr=cache_addr, nbytes=len(data))

    def s1204_build_node(self, trace: Trace, ldev: int, track: int, lba: int,
                         cache_addr: int, is_format: bool) -> TsNode:
        """1204: "build the node" (prev/control/track/physical/cache/next)."""
        seg, nbytes = -1, 0
        if self._staged is not None and self._staged[0] == cache_addr:
            _, seg, nbytes = self._staged
            self._staged = None
        node = TsNode(node_id=cache_addr, prev=None, update_type=FORMAT if is_format else PARTIAL,
                      valid=True, ldev=ldev, track=track, phys_lba=lba, cache_addr=cache_addr, next=None,
                      seg=seg, nbytes=nbytes)
        self._set_m(next_id=self.next_id + 1)
        trace(1204, "tsq_node", unit=self.unit, node=node.node_id, type=node.update_type, track=track)
        return node

    def s1205_append(self, trace: Trace, node: TsNode) -> None:
        """1205: "append it at the tail of the unit's queue"."""
        tail = self.tail
        node.prev = tail
        self._write(node.node_id, used=1, prev=-1 if tail is None else tail, next=-1,
                    type=_TYPES.index(node.update_type), valid=1, ldev=node.ldev, track=node.track,
                    phys=node.phys_lba, cache_addr=node.cache_addr, seg=node.seg, nbytes=node.nbytes)
        if tail is not None:
            self._write(tail, next=node.node_id)
            self._set_m(tail=node.node_id, count=len(self) + 1)
        else:
            self._set_m(head=node.node_id, tail=node.node_id, count=len(self) + 1)
        trace(1205, "tsq_append", unit=self.unit, node=node.node_id, length=len(self))

    def s1206_earlier_format(self, trace: Trace, ldev: int, track: int) -> int | None:
        """1206: "is there already a format-write node for this logical track?"."""
        found = self.format_node.get((ldev, track))
        trace(1206, "tsq_format_check", unit=self.unit, ldev=ldev, track=track, found=found)
        return found

    def s1207_invalidate(self, trace: Trace, node_id: int) -> None:
        """1207: "the earlier format write need not be sent: clear its valid
        flag (or unlink it); the bitmap is not touched"."""
        node = self.node(node_id)
        if node.seg >= 0:
            self.pool.release(node.seg)
        self._write(node_id, valid=0, seg=-1, nbytes=0)
        trace(1207, "tsq_invalidate", unit=self.unit, node=node_id, track=node.track)

    def pop_head(self) -> TsNode | None:
        """Unlink and return the oldest node (valid or not); its data stays
        in the pool until ``take_data``."""
        head = self.head
        if head is None:
            return None
        node = self.node(head)
        self._write(head, used=0)
        if node.next is None:
            self._set_m(head=-1, tail=-1, count=len(self) - 1)
        else:
            self._write(node.next, prev=-1)
            self._set_m(head=node.next, count=len(self) - 1)
        if self.format_node.get((node.ldev, node.track)) == node.node_id:
            del self.format_node[(node.ldev, node.track)]
        return node

    def head_node(self) -> TsNode | None:
        """The oldest node, left in the queue."""
        return None if self.head is None else self.node(self.head)

    def data_bytes(self, node: TsNode) -> int:
        assert node.seg >= 0, f"time-series queue {self.unit}: node {node.node_id} has no data"
        return node.nbytes

    def take_data(self, node: TsNode) -> bytes:
        data = self.pool.get(node.seg, node.nbytes)
        self.pool.release(node.seg)
        node.seg = -1
        return data

    def reset(self) -> None:
        """Drop every node (after the unit's recovery copy reached or a resync by bitmap)."""
        if self._m("count") or self._m("head") != -1 or self._m("tail") != -1:
            for node in list(self.walk()):
                if node.seg >= 0:
                    self.pool.release(node.seg)
                self._write(node.node_id, used=0)
        if (self._m("count"), self._m("head"), self._m("tail"), self.overflowed, self.incomplete) != (0, -1, -1,
                                                                                                      False, False):
            self._set_m(head=-1, tail=-1, count=0, overflowed=0, incomplete=0)
        self.format_node = {}
        self._staged = None


def record_update(queue: TimeSeriesQueue, trace: Trace, ldev: int, track: int, lba: int,
              data: bytes, is_format: bool, format_shortcut: bool) -> bool:
    """Steps 1202-1207 for one per-track piece of an update (1201 is the caller).

    Returns True when the bitmap must be set (1208), False after 1207.
    """
    if not queue.usable():
        return True
    if not queue.can_store(len(data)):
        queue.overflowed = True
        trace(None, "tsq_overflow", unit=queue.unit, max_nodes=queue.max_nodes)
        return True
    cache_addr, phys = queue.s1202_get_addresses(trace, ldev, lba)
    queue.s1203_store_in_cache(trace, cache_addr, data)
    node = queue.s1204_build_node(trace, ldev, track, phys, cache_addr, is_format)
    queue.s1205_append(trace, node)
    earlier = queue.s1206_earlier_format(trace, ldev, track)
    if is_format:
        queue.format_node[(ldev, track)] = node.node_id
    if earlier is not None and is_format and format_shortcut:
        queue.s1207_invalidate(trace, earlier)
        return False
    return True
