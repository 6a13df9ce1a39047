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


class TimeSeriesQueue:
    def __init__(self, unit: str, max_nodes: int):
        self.unit = unit
        self.max_nodes = max_nodes
        self.nodes: dict[int, TsNode] = {}
        self.cache: dict[int, bytes] = {}  # cache address -> update data
        self.head: int | None = None
        self.tail: int | None = None
        self.next_id = 0
        self.overflowed = False
        self.incomplete = False  # bits were set by other means (aborted copy)
        self.format_node: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def usable(self) -> bool:
        """True when the queue holds every update since suspension."""
        return not (self.overflowed or self.incomplete)

    def s1202_get_addresses(self, trace: Trace, ldev: int, lba: int) -> tuple[int, int]:
        """1202: "get its cache and physical addresses"."""
        cache_addr = self.next_id
        trace(1202, "tsq_addresses", unit=self.unit, ldev=ldev, lba=lba, cache_addr=cache_addr)
        return cache_addr, lba

    def s1203_store_in_cache(self, trace: Trace, cache_addr: int, data: bytes) -> None:
        """1203: "store the update in cache"."""
        self.cache[cache_addr] = bytes(data)
        trace(1203, "tsq_cache", unit=self.unit, cache_addr=cache_addr, nbytes=len(data))

    def s1204_build_node(self, trace: Trace, ldev: int, track: int, lba: int,
                         cache_addr: int, is_format: bool) -> TsNode:
        """1204: "build the node" (prev/control/track/physical/cache/next)."""
        node = TsNode(node_id=cache_addr, prev=None, update_type=FORMAT if is_format else PARTIAL,
                      valid=True, ldev=ldev, track=track, phys_lba=lba, cache_addr=cache_addr, next=None)
        self.next_id += 1
        trace(1204, "tsq_node", unit=self.unit, node=node.node_id, type=node.update_type, track=track)
        return node

    def s1205_append(self, trace: Trace, node: TsNode) -> None:
        """1205: "append it at the tail of the unit's queue"."""
        node.prev = self.tail
        if self.tail is not None:
            self.nodes[self.tail].next = node.node_id
        else:
            self.head = node.node_id
        self.tail = node.node_id
        self.nodes[node.node_id] = node
        trace(1205, "tsq_append", unit=self.unit, node=node.node_id, length=len(self.nodes))

    def s1206_earlier_format(self, trace: Trace, ldev: int, track: int) -> int | None:
        """1206: "is there already a format-write node for this logical track?"."""
        found = self.format_node.get((ldev, track))
        trace(1206, "tsq_format_check", unit=self.unit, ldev=ldev, track=track, found=found)
        return found

    def s1207_invalidate(self, trace: Trace, node_id: int) -> None:
        """1207: "the earlier format write need not be sent: clear its valid
        flag (or unlink it); the bitmap is not touched"."""
        node = self.nodes[node_id]
        node.valid = False
        self.cache.pop(node.cache_addr, None)
        trace(1207, "tsq_invalidate", unit=self.unit, node=node_id, track=node.track)

    def pop_head(self) -> TsNode | None:
        """Unlink and return the oldest node (valid or not)."""
        if self.head is None:
            return None
        node = self.nodes.pop(self.head)
        self.head = node.next
        if self.head is None:
            self.tail = None
        else:
            self.nodes[self.head].prev = None
        if self.format_node.get((node.ldev, node.track)) == node.node_id:
            del self.format_node[(node.ldev, node.track)]
        return node

    def head_node(self) -> TsNode | None:
        """The oldest node, left in the queue."""
        return None if self.head is None else self.nodes[self.head]

    def data_bytes(self, node: TsNode) -> int:
        return len(self.cache[node.cache_addr])

    def take_data(self, node: TsNode) -> bytes:
        return self.cache.pop(node.cache_addr)

    def reset(self) -> None:
        """Drop every node (after the unit's recovery copy reached or a resync by bitmap)."""
        self.nodes.clear()
        self.cache.clear()
        self.format_node.clear()
        self.head = self.tail = None
        self.overflowed = self.incomplete = False


def record_update(queue: TimeSeriesQueue, trace: Trace, ldev: int, track: int, lba: int,
              data: bytes, is_format: bool, format_shortcut: bool) -> bool:
    """Steps 1202-1207 for one per-track piece of an update (1201 is the caller).

    Returns True when the bitmap must be set (1208), False after 1207.
    """
    if not queue.usable():
        return True
    if len(queue) >= queue.max_nodes:
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
