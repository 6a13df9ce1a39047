"""RAID5 (patent Fig. 2): many small disks emulate one large device.

Layout
    A parity group has ``n_data`` data disks' worth of capacity spread over
    ``n_data + 1`` member disks. A *stripe* is one track on every member, at
    the same byte offset (``stripe * track_bytes``) on each. Parity rotates
    **left-symmetric** (the Linux md default): stripe ``s`` keeps parity on
    disk ``n_data - s % n_disks`` and its data units on the following disks,
    wrapping around. Logical track ``lt`` of the group is data unit
    ``lt % n_data`` of stripe ``lt // n_data``.

Group states
    healthy -> degraded (one member failed: reads of its tracks are rebuilt
    from the others, writes keep parity consistent) -> rebuilding (online,
    stripe by stripe onto a spare; host I/O interleaves; stripes below the
    cursor live on the spare) -> healthy (the spare becomes the member).
    A second failure makes the tracks that can no longer be derived raise
    :class:`DataLossError`; wrong bytes are never returned.

Parity tracks as a save area (patent 0024, claim 2)
    ``lend_parity()`` hands the group's parity tracks to the recovery copy as
    save slots (one slot per stripe): redundancy is dropped until
    ``recompute_parity()``. A member failure while parity is lent is a double
    fault: reads of that member's tracks raise :class:`DataLossError`.

LDEVs (:class:`RaidArray`)
    An LDEV is one contiguous range of logical tracks inside one group,
    allocated first-fit in definition order; LDEVs never span groups.

Thin media (optional ``thin`` map)
    With a thin map (one byte per logical track, then one per stripe, in
    memory that outlives the process: the DKC passes a shared-memory view) a
    never-written track is not stored: it reads as zeros without touching the
    media, its read needs no disk transfer, and a stripe no track of which was
    ever written is "unused": its members' bytes are zeros and are never
    read, rebuilt or parity-checked. The first write to an unused
    stripe makes it used (the thin
    allocation; ``on_allocate(nbytes)`` is asked first and may refuse by
    raising). Fresh media are holes, which read zeros, so an unused stripe is
    a consistent stripe of zeros; a spare that joins a group must be emptied
    (holes punched) by the caller before ``start_rebuild``, since the rebuild
    skips unused stripes. Without a map every track is written
    (thick media, the behaviour of a 1990s array).

Integration notes
    Zero-filled members form a consistent group (XOR of zeros is zero), so
    fresh sparse media need no initialisation. Control state (failed set,
    rebuild cursor, lent flag) is process memory: keep
    ``export_state()`` in the DKC's non-volatile memory and reattach with
    ``RaidGroup.from_state``. ``plan_read``/``plan_write`` list the member
    transfers an operation needs, for the cost model. Call
    ``firmware.raid.parity.warm_up()`` before forking. Not thread-safe.

The member arrays are taken as given (in the emulator: views of shared-memory
disk media) and never reallocated; all XOR work is done by the numba kernels
of :mod:`firmware.raid.parity`, many stripes per call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from firmware.raid import parity as kern
from firmware.protocol import SECTOR_BYTES

__all__ = ["DataLossError", "TrackLocation", "RaidLayout", "RaidGroup",
           "LdevExtent", "RaidArray", "PhysicalIo"]

# stripes handled per kernel call by rebuild/verify/recompute chunks
_CHUNK_STRIPES = 1024


class DataLossError(Exception):
    """The requested bytes cannot be derived (double fault, or a failure
    while the group's parity tracks are lent as a save area)."""


class TrackLocation(NamedTuple):
    """Where a logical track of a group lives."""
    stripe: int
    data_disk: int
    parity_disk: int
    offset_bytes: int  # byte offset on both the data and the parity member


class PhysicalIo(NamedTuple):
    """One member-disk transfer an operation needs (for the cost model)."""
    disk: int          # member index; see RaidGroup.member(disk) for the array
    offset_bytes: int
    length_bytes: int
    op: str            # "r" or "w"


# ---------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------

class RaidLayout:
    """Geometry of an nD+1P group with left-symmetric rotating parity."""

    def __init__(self, n_data: int, track_bytes: int, tracks_per_disk: int):
        if int(n_data) < 1:
            raise ValueError(f"n_data must be >= 1, got {n_data}")
        if int(track_bytes) <= 0 or int(track_bytes) % 8:
            raise ValueError(f"track_bytes must be a positive multiple of 8, got {track_bytes}")
        if int(tracks_per_disk) < 1:
            raise ValueError(f"tracks_per_disk must be >= 1, got {tracks_per_disk}")
        self.n_data = int(n_data)
        self.n_disks = self.n_data + 1
        self.track_bytes = int(track_bytes)
        self.track_words = self.track_bytes // 8
        self.tracks_per_disk = int(tracks_per_disk)
        self.n_stripes = self.tracks_per_disk
        self.member_bytes = self.tracks_per_disk * self.track_bytes
        self.capacity_tracks = self.n_data * self.tracks_per_disk

    def __repr__(self) -> str:
        return (f"RaidLayout({self.n_data}D+1P, track_bytes={self.track_bytes}, "
                f"tracks_per_disk={self.tracks_per_disk})")

    def parity_disk(self, stripe: int) -> int:
        """Member holding the parity track of ``stripe``."""
        self._check_stripe(stripe)
        return self.n_data - stripe % self.n_disks

    def data_disk(self, stripe: int, unit: int) -> int:
        """Member holding data unit ``unit`` (0..n_data-1) of ``stripe``."""
        return (self.parity_disk(stripe) + 1 + unit) % self.n_disks

    def map(self, logical_track: int) -> TrackLocation:
        """logical track -> (stripe, data_disk, parity_disk, offset_bytes)."""
        lt = int(logical_track)
        if not 0 <= lt < self.capacity_tracks:
            raise ValueError(f"logical track {lt} outside 0..{self.capacity_tracks - 1}")
        stripe, unit = divmod(lt, self.n_data)
        p = self.n_data - stripe % self.n_disks
        return TrackLocation(stripe, (p + 1 + unit) % self.n_disks, p,
                             stripe * self.track_bytes)

    def map_many(self, logical_tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised :meth:`map`: (stripes, data_disks, parity_disks), int64."""
        lts = np.asarray(logical_tracks, dtype=np.int64)
        if lts.size and (lts.min() < 0 or lts.max() >= self.capacity_tracks):
            raise ValueError(f"logical tracks outside 0..{self.capacity_tracks - 1}")
        stripes, units = np.divmod(lts, self.n_data)
        p = self.n_data - stripes % self.n_disks
        return stripes, (p + 1 + units) % self.n_disks, p

    def logical_track(self, stripe: int, disk: int) -> int | None:
        """Inverse of :meth:`map`: the logical track on ``disk`` at ``stripe``,
        or None when that is the parity track."""
        p = self.parity_disk(stripe)
        if not 0 <= disk < self.n_disks:
            raise ValueError(f"disk {disk} outside 0..{self.n_disks - 1}")
        if disk == p:
            return None
        return stripe * self.n_data + (disk - p - 1) % self.n_disks

    def _check_stripe(self, stripe: int) -> None:
        if not 0 <= stripe < self.n_stripes:
            raise ValueError(f"stripe {stripe} outside 0..{self.n_stripes - 1}")


# ---------------------------------------------------------------------------
# group
# ---------------------------------------------------------------------------

@dataclass
class _Rebuild:
    disk: int             # member being rebuilt
    spare: np.ndarray     # its replacement (uint8, member_bytes)
    cursor: int = 0       # stripes < cursor are valid on the spare


class RaidGroup:
    """One RAID5 parity group over caller-owned member arrays."""

    def __init__(self, layout: RaidLayout, members: Sequence[np.ndarray],
                 thin: np.ndarray | None = None, on_allocate=None):
        if len(members) != layout.n_disks:
            raise ValueError(f"{layout!r} needs {layout.n_disks} members, got {len(members)}")
        for i, m in enumerate(members):
            self._check_media(f"member {i}", m, layout)
        self.layout = layout
        self._members = list(members)
        self._failed: set[int] = set()
        self._rebuild: _Rebuild | None = None
        self._parity_lent = False
        if thin is not None and (thin.dtype != np.uint8 or thin.size != self.thin_map_bytes(layout)):
            raise ValueError(f"thin map: expected {self.thin_map_bytes(layout)} uint8, got {thin.size} {thin.dtype}")
        #: thin map: written flag per logical track, then used flag per stripe (None: thick media)
        self._written = None if thin is None else thin[:layout.capacity_tracks]
        self._used = None if thin is None else thin[layout.capacity_tracks:]
        #: asked with the bytes a first touch of a stripe allocates (may raise to refuse)
        self._on_allocate = on_allocate
        self._refresh_disks()

    # -- thin media ------------------------------------------------------------

    @staticmethod
    def thin_map_bytes(layout: RaidLayout) -> int:
        """Size of a group's thin map: a byte per logical track and per stripe."""
        return layout.capacity_tracks + layout.n_stripes

    @property
    def thin(self) -> bool:
        return self._written is not None

    def is_written(self, logical_track: int) -> bool:
        """False only for a thin track never written since its last discard."""
        return self._written is None or bool(self._written[logical_track])

    def written_tracks(self, first: int = 0, count: int | None = None) -> np.ndarray:
        """Logical tracks in [first, first + count) ever written (all of them on thick media), int64."""
        end = self.layout.capacity_tracks if count is None else first + count
        if self._written is None:
            return np.arange(first, end, dtype=np.int64)
        return np.flatnonzero(self._written[first:end]).astype(np.int64) + first

    def used_stripes(self, s0: int = 0, s1: int | None = None) -> np.ndarray:
        """Stripes in [s0, s1) whose bytes are defined (all of them on thick media)."""
        s1 = self.layout.n_stripes if s1 is None else s1
        if self._used is None:
            return np.arange(s0, s1, dtype=np.int64)
        return np.flatnonzero(self._used[s0:s1]).astype(np.int64) + s0

    def _touch_stripe(self, stripe: int, logical_track: int | None = None) -> None:
        """A thin stripe (and track) is about to be stored: ask ``on_allocate``
        for the pages it takes (the data track, and the parity track when the
        stripe was unused), then mark them. Media of an unused stripe are
        holes, and holes read zeros, so nothing needs initialising."""
        if self._used is None:
            return
        tb = self.layout.track_bytes
        need = (0 if self._used[stripe] else tb)
        if logical_track is not None and not self._written[logical_track]:
            need += tb
        if need and self._on_allocate is not None:
            self._on_allocate(need)
        self._used[stripe] = 1
        if logical_track is not None:
            self._written[logical_track] = 1

    def discard_track(self, logical_track: int) -> None:
        """UNMAP one track: it reads zeros again and is no longer written
        (the stripe's parity is updated by writing zeros first)."""
        if self._written is None or not self._written[logical_track]:
            return
        self.write_track(logical_track, np.zeros(self.layout.track_bytes, np.uint8))
        self._written[logical_track] = 0

    # -- state ---------------------------------------------------------------

    @staticmethod
    def _check_media(name: str, a: np.ndarray, layout: RaidLayout) -> None:
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D uint8 numpy array")
        if a.size != layout.member_bytes:
            raise ValueError(f"{name}: {a.size} bytes, layout needs member_bytes={layout.member_bytes}")
        if not a.flags.c_contiguous or a.ctypes.data % 8:
            raise ValueError(f"{name}: must be C-contiguous and 8-byte aligned")
        if not a.flags.writeable:
            raise ValueError(f"{name}: must be writeable")

    def _refresh_disks(self) -> None:
        """Typed list of uint64 member views (+ the spare at index n_disks)."""
        arrays = list(self._members)
        if self._rebuild is not None:
            arrays.append(self._rebuild.spare)
        self._disks = kern.member_list(arrays)
        self._words = [a.view(np.uint64) for a in arrays]  # same order as _disks
        self._n_slots = len(arrays)

    def member(self, disk: int) -> np.ndarray:
        """The array currently serving member ``disk``."""
        return self._members[disk]

    @property
    def failed_disks(self) -> frozenset[int]:
        """Members failed and not (yet) replaced by a rebuilt spare."""
        return frozenset(self._failed)

    @property
    def parity_lent(self) -> bool:
        """True while parity tracks are used as a save area."""
        return self._parity_lent

    @property
    def redundancy_lost(self) -> bool:
        """True when one more failure would lose data (or already has)."""
        return self._parity_lent or bool(self._failed)

    @property
    def rebuilding(self) -> int | None:
        """Member being rebuilt, or None."""
        return None if self._rebuild is None else self._rebuild.disk

    def _where(self, disk: int, stripe: int) -> int | None:
        """Slot in ``self._disks`` holding valid content of (disk, stripe)."""
        if disk not in self._failed:
            return disk
        rb = self._rebuild
        if rb is not None and rb.disk == disk and stripe < rb.cursor:
            return self.layout.n_disks
        return None

    def _slot_array(self, slot: int) -> np.ndarray:
        if slot == self.layout.n_disks:
            return self._rebuild.spare
        return self._members[slot]

    def _track_view(self, slot: int, stripe: int) -> np.ndarray:
        tb = self.layout.track_bytes
        return self._slot_array(slot)[stripe * tb:(stripe + 1) * tb]

    def _as_words(self, data, n_tracks: int = 1) -> np.ndarray:
        """Host payload -> aligned uint64 (n_tracks, track_words) (copy if needed)."""
        tb = self.layout.track_bytes
        if isinstance(data, np.ndarray):
            if data.dtype != np.uint8:
                raise ValueError(f"track data must be uint8, got {data.dtype}")
            arr = data.reshape(-1)
        else:
            arr = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        if arr.size != n_tracks * tb:
            raise ValueError(f"track data: {arr.size} bytes, expected {n_tracks} x track_bytes={tb}")
        v = kern._u64(arr)
        if v is not None:
            return v.reshape(n_tracks, self.layout.track_words)
        out = np.empty((n_tracks, self.layout.track_words), np.uint64)
        out.view(np.uint8).reshape(-1)[:] = arr
        return out

    # -- faults --------------------------------------------------------------

    def fail_disk(self, disk: int) -> None:
        """Mark member ``disk`` failed; its media is never read again."""
        if not 0 <= disk < self.layout.n_disks:
            raise ValueError(f"disk {disk} outside 0..{self.layout.n_disks - 1}")
        self._failed.add(int(disk))

    # -- reads ---------------------------------------------------------------

    def read_track(self, logical_track: int, out: np.ndarray | None = None) -> np.ndarray:
        """Bytes of a logical track (a copy, or written into ``out``).

        Degraded: rebuilt from the other members and parity. Raises
        DataLossError when that is impossible.
        """
        loc = self.layout.map(logical_track)
        tb = self.layout.track_bytes
        if out is None:
            out = np.empty(tb, np.uint8)
        elif out.dtype != np.uint8 or out.size != tb:
            raise ValueError(f"out must be uint8 with track_bytes={tb} elements")
        if self._written is not None and not self._written[logical_track]:
            out.reshape(-1)[:] = 0   # never written: nothing stored, nothing to lose
            return out
        slot = self._where(loc.data_disk, loc.stripe)
        if slot is not None:
            out.reshape(-1)[:] = self._track_view(slot, loc.stripe)
            return out
        words = self._reconstruct(loc.stripe, loc.data_disk)
        out.reshape(-1)[:] = words.view(np.uint8).reshape(-1)
        return out

    def read_part(self, logical_track: int, offset_bytes: int, nbytes: int) -> bytes:
        """``read_track(logical_track).tobytes()[offset_bytes:offset_bytes + nbytes]``,
        without copying the whole track when its member is there (a host
        reads a few sectors of a track)."""
        loc = self.layout.map(logical_track)
        if self._written is not None and not self._written[logical_track]:
            return self.read_track(logical_track).tobytes()[offset_bytes:offset_bytes + nbytes]
        slot = self._where(loc.data_disk, loc.stripe)
        if slot is None:   # degraded: rebuilt from the others, as read_track does
            return self.read_track(logical_track).tobytes()[offset_bytes:offset_bytes + nbytes]
        tb = self.layout.track_bytes
        lo = loc.stripe * tb + max(0, min(offset_bytes, tb))
        hi = loc.stripe * tb + max(0, min(offset_bytes + nbytes, tb))
        return self._slot_array(slot)[lo:max(lo, hi)].tobytes()

    def _reconstruct(self, stripe: int, disk: int) -> np.ndarray:
        """Content of member ``disk`` at ``stripe`` from the others (uint64 row)."""
        if self._parity_lent:
            raise DataLossError(f"disk {disk} stripe {stripe}: member failed while parity "
                                f"tracks are lent as a save area (double fault)")
        mask = np.zeros((1, self._n_slots), np.bool_)
        for d in range(self.layout.n_disks):
            if d == disk:
                continue
            slot = self._where(d, stripe)
            if slot is None:
                raise DataLossError(f"disk {disk} stripe {stripe}: disks {disk} and {d} "
                                    f"both unavailable (double fault)")
            mask[0, slot] = True
        out = np.empty((1, self.layout.track_words), np.uint64)
        kern.gather_xor(self._disks, np.array([stripe], np.int64), mask,
                        self.layout.track_words, out, False)
        return out

    # -- writes --------------------------------------------------------------

    def write_track(self, logical_track: int, data) -> None:
        """Small write (read-modify-write, fused kernel): D = new, P ^= Dold ^ new."""
        loc = self.layout.map(logical_track)
        new = self._as_words(data)
        d_slot = self._where(loc.data_disk, loc.stripe)
        p_slot = None if self._parity_lent else self._where(loc.parity_disk, loc.stripe)
        if self._written is not None:
            if d_slot is None and p_slot is None:
                self._degraded_write(loc, new, p_slot)   # raises: nowhere to store it
            self._touch_stripe(loc.stripe, logical_track)
        if d_slot is not None:
            w = self.layout.track_words
            lo, hi = loc.stripe * w, (loc.stripe + 1) * w
            if p_slot is None:
                self._words[d_slot][lo:hi] = new[0]
            else:
                kern.rmw_write(self._words[d_slot][lo:hi], self._words[p_slot][lo:hi], new[0])
            return
        self._degraded_write(loc, new, p_slot)

    def write_part(self, logical_track: int, offset_bytes: int, data: np.ndarray) -> bool:
        """A partial-track write in place, on the words it changes only:
        D[range] = new, P[range] ^= Dold ^ new: the same bytes as
        ``read_track``, patch, ``write_track`` (outside the range the new
        track equals the old, so its parity does not change there). Only
        when the track is stored (thick, or thin and written), both its data
        and parity members are there and the range is whole words; else
        False and nothing is written (the caller takes the whole-track path)."""
        n = data.size
        tb = self.layout.track_bytes
        if offset_bytes % 8 or n % 8 or offset_bytes < 0 or offset_bytes + n > tb or self._parity_lent:
            return False
        if self._written is not None and not self._written[logical_track]:
            return False
        loc = self.layout.map(logical_track)
        d_slot = self._where(loc.data_disk, loc.stripe)
        p_slot = self._where(loc.parity_disk, loc.stripe)
        if d_slot is None or p_slot is None:
            return False
        new = kern._u64(data)
        if new is None:
            new = np.empty(n // 8, np.uint64)
            new.view(np.uint8)[:] = data
        if self._written is not None:
            self._touch_stripe(loc.stripe, logical_track)   # already stored: allocates nothing
        lo = loc.stripe * self.layout.track_words + offset_bytes // 8
        hi = lo + n // 8
        kern.rmw_write(self._words[d_slot][lo:hi], self._words[p_slot][lo:hi], new)
        return True

    def _degraded_write(self, loc: TrackLocation, new: np.ndarray, p_slot: int | None) -> None:
        """Data member missing: fold the new data into parity P = new ^ other data."""
        if p_slot is None:
            why = "parity lent as save area" if self._parity_lent else "parity member also failed"
            raise DataLossError(f"logical track on disk {loc.data_disk} stripe {loc.stripe}: "
                                f"cannot store write ({why})")
        mask = np.zeros((1, self._n_slots), np.bool_)
        for d in range(self.layout.n_disks):
            if d in (loc.data_disk, loc.parity_disk):
                continue
            slot = self._where(d, loc.stripe)
            if slot is None:
                raise DataLossError(f"stripe {loc.stripe}: disks {loc.data_disk} and {d} "
                                    f"both unavailable (double fault)")
            mask[0, slot] = True
        acc = new.copy()
        kern.gather_xor(self._disks, np.array([loc.stripe], np.int64), mask,
                        self.layout.track_words, acc, True)
        self._track_view(p_slot, loc.stripe)[:] = acc.view(np.uint8).reshape(-1)

    def write_tracks(self, logical_tracks: Sequence[int], data) -> None:
        """Many small writes, applied in order; data: (n, track_bytes) uint8.

        Healthy tracks go through ONE fused-kernel call; tracks needing the
        degraded path fall back to :meth:`write_track` (order is preserved).
        """
        lts = np.asarray(logical_tracks, dtype=np.int64).reshape(-1)
        new = self._as_words(data, lts.size)
        stripes, dd, pd = self.layout.map_many(lts)
        if not self._failed and self._written is None:
            pslot = np.full_like(pd, -1) if self._parity_lent else pd
            kern.rmw_write_tracks(self._disks, dd, pslot, stripes, new, self.layout.track_words)
            return
        for i, lt in enumerate(lts):
            self.write_track(int(lt), new[i].view(np.uint8))

    def write_stripe(self, stripe: int, data) -> None:
        """Full-stripe write: data (n_data, track_bytes) -> units + fresh parity."""
        if isinstance(data, np.ndarray):
            if data.size != self.layout.n_data * self.layout.track_bytes:
                raise ValueError(f"stripe data: {data.size} bytes, expected n_data x track_bytes = "
                                 f"{self.layout.n_data * self.layout.track_bytes}")
            data = data.reshape(1, self.layout.n_data, self.layout.track_bytes)
        self.write_stripes(stripe, data)

    def write_stripes(self, first_stripe: int, data) -> None:
        """Full-stripe writes of consecutive stripes; data (S, n_data, track_bytes).

        Parity of all S stripes is computed in one kernel call (no reads).
        """
        lay = self.layout
        if isinstance(data, np.ndarray):
            if data.dtype != np.uint8:
                raise ValueError(f"stripe data must be uint8, got {data.dtype}")
            arr = np.ascontiguousarray(data)
        else:
            arr = np.frombuffer(memoryview(data).cast("B"), np.uint8)
            if arr.size % (lay.n_data * lay.track_bytes):
                raise ValueError(f"stripe data: {arr.size} bytes is not a whole number of "
                                 f"stripes of n_data x track_bytes = {lay.n_data * lay.track_bytes}")
            arr = arr.reshape(-1, lay.n_data, lay.track_bytes)
        if arr.ndim != 3 or arr.shape[1:] != (lay.n_data, lay.track_bytes):
            raise ValueError(f"data must be (stripes, n_data={lay.n_data}, "
                             f"track_bytes={lay.track_bytes}), got {arr.shape}")
        n = arr.shape[0]
        if not (0 <= first_stripe and first_stripe + n <= lay.n_stripes):
            raise ValueError(f"stripes {first_stripe}..{first_stripe + n - 1} outside 0..{lay.n_stripes - 1}")
        self._check_full_stripe_writable(first_stripe, n)
        for s in range(first_stripe, first_stripe + n):
            self._touch_stripe(s)
        if self._written is not None:
            self._written[first_stripe * lay.n_data:(first_stripe + n) * lay.n_data] = 1
        par = np.empty((n, lay.track_bytes), np.uint8)
        if not self._parity_lent:
            kern.xor_parity(arr, par)
        for i in range(n):
            s = first_stripe + i
            p = lay.parity_disk(s)
            for unit in range(lay.n_data):
                slot = self._where((p + 1 + unit) % lay.n_disks, s)
                if slot is not None:
                    self._track_view(slot, s)[:] = arr[i, unit]
            slot = self._where(p, s)
            if slot is not None and not self._parity_lent:
                self._track_view(slot, s)[:] = par[i]

    def _check_full_stripe_writable(self, first_stripe: int, n: int) -> None:
        """DataLossError (before any byte is written) if a unit cannot be stored."""
        if not self._failed:
            return
        lay = self.layout
        for s in range(first_stripe, first_stripe + n):
            missing = [d for d in range(lay.n_disks) if self._where(d, s) is None]
            p = lay.parity_disk(s)
            if len(missing) >= 2 or (self._parity_lent and any(d != p for d in missing)):
                raise DataLossError(f"stripe {s}: members {missing} unavailable, "
                                    f"parity lent={self._parity_lent}: cannot store full stripe")

    # -- rebuild -------------------------------------------------------------

    def start_rebuild(self, spare: np.ndarray, disk: int | None = None) -> None:
        """Begin an online rebuild of the failed member onto ``spare``."""
        if self._rebuild is not None:
            raise ValueError(f"rebuild of disk {self._rebuild.disk} already in progress")
        if not self._failed:
            raise ValueError("no failed disk to rebuild")
        if disk is None:
            if len(self._failed) != 1:
                raise DataLossError(f"disks {sorted(self._failed)} failed: cannot rebuild (double fault)")
            disk = next(iter(self._failed))
        if disk not in self._failed:
            raise ValueError(f"disk {disk} is not failed (failed: {sorted(self._failed)})")
        if self._parity_lent:
            raise DataLossError(f"disk {disk} failed while parity is lent: its data is lost")
        self._check_media("spare", spare, self.layout)
        if any(spare is m for m in self._members):
            raise ValueError("spare is already a member of this group")
        self._rebuild = _Rebuild(int(disk), spare)
        self._refresh_disks()

    def rebuild_step(self, max_stripes: int) -> tuple[int, int]:
        """Rebuild up to ``max_stripes`` more stripes; returns (done, total).

        When done == total the spare replaces the failed member.
        """
        rb = self._rebuild
        if rb is None:
            raise ValueError("no rebuild in progress")
        if max_stripes < 1:
            raise ValueError(f"max_stripes must be >= 1, got {max_stripes}")
        total = self.layout.n_stripes
        others = self._failed - {rb.disk}
        s0, s1 = rb.cursor, min(rb.cursor + int(max_stripes), total)
        if s1 > s0 and others:
            raise DataLossError(f"disk {sorted(others)} failed during rebuild of disk "
                                f"{rb.disk}: stripes {s0}..{total - 1} lost")
        for c0 in range(s0, s1, _CHUNK_STRIPES):
            c1 = min(c0 + _CHUNK_STRIPES, s1)
            stripes = self.used_stripes(c0, c1)   # an unused thin stripe has nothing to rebuild
            mask = np.ones((stripes.size, self._n_slots), np.bool_)
            mask[:, rb.disk] = False
            mask[:, self.layout.n_disks] = False
            if stripes.size:
                kern.gather_xor_to_member(self._disks, stripes, mask,
                                          np.full(stripes.size, self.layout.n_disks, np.int64),
                                          self.layout.track_words)
            rb.cursor = c1
        if rb.cursor == total:
            self._members[rb.disk] = rb.spare
            self._failed.discard(rb.disk)
            self._rebuild = None
            self._refresh_disks()
        return s1, total

    # -- loss report ---------------------------------------------------------

    def lost_tracks(self) -> list[int]:
        """Logical tracks that cannot be read now (reads raise DataLossError)."""
        lay = self.layout
        lost: list[int] = []
        for disk in sorted(self._failed):
            for s in range(lay.n_stripes):
                if self._where(disk, s) is not None:
                    continue
                lt = lay.logical_track(s, disk)
                if lt is None or not self.is_written(lt):
                    continue  # a parity track, or a thin track never written: no host data
                others_ok = all(self._where(d, s) is not None
                                for d in range(lay.n_disks) if d != disk)
                if self._parity_lent or not others_ok:
                    lost.append(lt)
        return sorted(lost)

    # -- parity checks -------------------------------------------------------

    def verify_parity(self) -> list[int]:
        """Stripes whose members do not XOR to zero (healthy group only)."""
        if self._failed or self._parity_lent:
            raise ValueError(f"cannot verify parity: failed={sorted(self._failed)}, "
                             f"parity lent={self._parity_lent}")
        lay = self.layout
        bad: list[int] = []
        for c0 in range(0, lay.n_stripes, _CHUNK_STRIPES):
            stripes = self.used_stripes(c0, min(c0 + _CHUNK_STRIPES, lay.n_stripes))
            out = np.empty((stripes.size, lay.track_words), np.uint64)
            if stripes.size:
                kern.gather_xor(self._disks, stripes,
                                np.ones((stripes.size, self._n_slots), np.bool_), lay.track_words, out)
            bad.extend(int(stripes[i]) for i in np.flatnonzero(out.any(axis=1)))
        return bad

    def recompute_parity(self) -> None:
        """Rewrite every parity track from the data; clears ``parity_lent``."""
        if self._failed:
            if self._parity_lent:
                raise DataLossError(f"disks {sorted(self._failed)} failed while parity was lent: "
                                    f"their data tracks are lost")
            raise ValueError(f"group degraded (failed {sorted(self._failed)}): rebuild first")
        lay = self.layout
        for c0 in range(0, lay.n_stripes, _CHUNK_STRIPES):
            stripes = self.used_stripes(c0, min(c0 + _CHUNK_STRIPES, lay.n_stripes))
            if not stripes.size:
                continue
            pd = lay.n_data - stripes % lay.n_disks
            mask = np.ones((stripes.size, self._n_slots), np.bool_)
            mask[np.arange(stripes.size), pd] = False
            kern.gather_xor_to_member(self._disks, stripes, mask, pd, lay.track_words)
        self._parity_lent = False

    # -- parity tracks as save area ------------------------------------------

    def parity_slots(self) -> list[int]:
        """Stripes whose parity track can hold saved data (one slot each)."""
        lay = self.layout
        return [s for s in range(lay.n_stripes)
                if lay.n_data - s % lay.n_disks not in self._failed]

    def lend_parity(self) -> None:
        """Give the parity tracks to the save area; redundancy is lost until
        :meth:`recompute_parity`."""
        if self._parity_lent:
            raise ValueError("parity already lent")
        if self._failed:
            raise ValueError(f"group degraded (failed {sorted(self._failed)}): parity is "
                             f"needed for the data and cannot be lent")
        self._parity_lent = True

    def _parity_slot_view(self, stripe: int) -> np.ndarray:
        if not self._parity_lent:
            raise ValueError("parity slots are usable only while parity is lent (lend_parity())")
        p = self.layout.parity_disk(stripe)
        slot = self._where(p, stripe)
        if slot is None:
            raise DataLossError(f"parity slot of stripe {stripe} is on failed disk {p}")
        return self._track_view(slot, stripe)

    def write_parity_slot(self, stripe: int, data) -> None:
        """Store one saved track in the parity track of ``stripe``."""
        view = self._parity_slot_view(int(stripe))
        self._touch_stripe(int(stripe))
        view[:] = self._as_words(data).view(np.uint8).reshape(-1)

    def read_parity_slot(self, stripe: int) -> np.ndarray:
        """The saved track held in the parity track of ``stripe`` (a copy)."""
        return self._parity_slot_view(int(stripe)).copy()

    # -- cost-model helpers --------------------------------------------------

    def plan_read(self, logical_track: int) -> list[PhysicalIo]:
        """Member transfers a read of ``logical_track`` needs right now.

        ``PhysicalIo.disk`` is a member index, or ``n_disks`` for the spare
        being rebuilt. Raises DataLossError when the track is underivable.
        """
        loc = self.layout.map(logical_track)
        tb, off = self.layout.track_bytes, loc.offset_bytes
        if self._written is not None and not self._written[logical_track]:
            return []   # a thin track never written: nothing to read
        slot = self._where(loc.data_disk, loc.stripe)
        if slot is not None:
            return [PhysicalIo(slot, off, tb, "r")]
        return [PhysicalIo(s, off, tb, "r") for s in self._other_slots(loc, (loc.data_disk,))]

    def plan_write(self, logical_track: int) -> list[PhysicalIo]:
        """Member transfers a small write of ``logical_track`` needs right now
        (same ``disk`` convention as :meth:`plan_read`)."""
        loc = self.layout.map(logical_track)
        tb, off = self.layout.track_bytes, loc.offset_bytes
        d_slot = self._where(loc.data_disk, loc.stripe)
        p_slot = None if self._parity_lent else self._where(loc.parity_disk, loc.stripe)
        if d_slot is not None and p_slot is not None:
            return [PhysicalIo(d_slot, off, tb, "r"), PhysicalIo(p_slot, off, tb, "r"),
                    PhysicalIo(d_slot, off, tb, "w"), PhysicalIo(p_slot, off, tb, "w")]
        if d_slot is not None:
            return [PhysicalIo(d_slot, off, tb, "w")]
        if p_slot is None:
            raise DataLossError(f"logical track {logical_track}: data and parity unavailable")
        reads = self._other_slots(loc, (loc.data_disk, loc.parity_disk))
        return [PhysicalIo(s, off, tb, "r") for s in reads] + [PhysicalIo(p_slot, off, tb, "w")]

    def _other_slots(self, loc: TrackLocation, exclude: tuple[int, ...]) -> list[int]:
        """Slots of every member not in ``exclude`` at loc.stripe (DataLossError if one is missing)."""
        if self._parity_lent:
            raise DataLossError(f"stripe {loc.stripe}: parity lent, member {loc.data_disk} failed")
        slots = []
        for d in range(self.layout.n_disks):
            if d in exclude:
                continue
            slot = self._where(d, loc.stripe)
            if slot is None:
                raise DataLossError(f"stripe {loc.stripe}: members {loc.data_disk} and {d} unavailable")
            slots.append(slot)
        return slots

    # -- non-volatile state (restart) ----------------------------------------

    def export_state(self) -> dict:
        """The group's control state, to keep in the DKC's non-volatile memory.

        Media are not included: they outlive the process (shared memory).
        """
        rb = self._rebuild
        return {"failed": sorted(self._failed), "parity_lent": self._parity_lent,
                "rebuild_disk": None if rb is None else rb.disk,
                "rebuild_cursor": None if rb is None else rb.cursor}

    @classmethod
    def from_state(cls, layout: RaidLayout, members: Sequence[np.ndarray], state: dict,
                   spare: np.ndarray | None = None, thin: np.ndarray | None = None,
                   on_allocate=None) -> "RaidGroup":
        """Reattach to existing media after a restart (``spare`` if rebuilding;
        ``thin``: the same thin map, which outlives the process like the media)."""
        grp = cls(layout, members, thin, on_allocate)
        for d in state.get("failed", []):
            grp.fail_disk(int(d))
        grp._parity_lent = bool(state.get("parity_lent", False))
        if state.get("rebuild_disk") is not None:
            if spare is None:
                raise ValueError("state has a rebuild in progress: pass its spare array")
            grp._parity_lent, lent = False, grp._parity_lent
            grp.start_rebuild(spare, int(state["rebuild_disk"]))
            grp._parity_lent = lent
            grp._rebuild.cursor = int(state["rebuild_cursor"])
        return grp


# ---------------------------------------------------------------------------
# LDEVs over groups
# ---------------------------------------------------------------------------

class LdevExtent(NamedTuple):
    """An LDEV: ``n_tracks`` logical tracks from ``first_track`` in group ``group``."""
    group: int
    first_track: int
    n_tracks: int


class RaidArray:
    """LDEVs over RAID groups: each LDEV is one contiguous range of logical
    tracks in one group (first-fit, in definition order; no spanning)."""

    def __init__(self, groups: Sequence[RaidGroup]):
        if not groups:
            raise ValueError("RaidArray needs at least one group")
        sizes = {g.layout.track_bytes for g in groups}
        if len(sizes) != 1:
            raise ValueError(f"all groups must share one track_bytes, got {sorted(sizes)}")
        self.groups = list(groups)
        self.track_bytes = sizes.pop()
        self._next_free = [0] * len(self.groups)
        self._ldevs: dict[int, LdevExtent] = {}

    def define_ldev(self, ldev: int, n_tracks: int, group: int | None = None) -> LdevExtent:
        """Allocate ``n_tracks`` logical tracks for ``ldev`` (first group with room)."""
        if ldev in self._ldevs:
            raise ValueError(f"LDEV {ldev} already defined as {self._ldevs[ldev]}")
        if n_tracks < 1:
            raise ValueError(f"LDEV {ldev}: n_tracks must be >= 1, got {n_tracks}")
        candidates = range(len(self.groups)) if group is None else [group]
        for g in candidates:
            if not 0 <= g < len(self.groups):
                raise ValueError(f"group {g} outside 0..{len(self.groups) - 1}")
            if self._next_free[g] + n_tracks <= self.groups[g].layout.capacity_tracks:
                ext = LdevExtent(g, self._next_free[g], int(n_tracks))
                self._next_free[g] += int(n_tracks)
                self._ldevs[ldev] = ext
                return ext
        raise ValueError(f"LDEV {ldev}: no group has {n_tracks} free logical tracks")

    def extent(self, ldev: int) -> LdevExtent:
        """Where ``ldev`` lives."""
        try:
            return self._ldevs[ldev]
        except KeyError:
            raise ValueError(f"LDEV {ldev} is not defined") from None

    def locate(self, ldev: int, track: int) -> tuple[RaidGroup, int]:
        """(group, logical track within the group) of track ``track`` of ``ldev``."""
        ext = self.extent(ldev)
        if not 0 <= track < ext.n_tracks:
            raise ValueError(f"LDEV {ldev}: track {track} outside 0..{ext.n_tracks - 1}")
        return self.groups[ext.group], ext.first_track + int(track)

    def ldev_tracks(self, ldev: int) -> int:
        """Number of logical tracks of ``ldev``."""
        return self.extent(ldev).n_tracks

    def written_tracks(self, ldev: int) -> np.ndarray:
        """Tracks of ``ldev`` ever written (every track on thick media), int64."""
        ext = self.extent(ldev)
        return self.groups[ext.group].written_tracks(ext.first_track, ext.n_tracks) - ext.first_track

    def is_written(self, ldev: int, track: int) -> bool:
        g, lt = self.locate(ldev, track)
        return g.is_written(lt)

    def discard(self, ldev: int) -> int:
        """UNMAP every written track of a thin ``ldev`` (it reads zeros again); returns how many."""
        ext = self.extent(ldev)
        grp = self.groups[ext.group]
        if not grp.thin:
            return 0
        tracks = self.written_tracks(ldev)
        for t in tracks:
            grp.discard_track(ext.first_track + int(t))
        return int(tracks.size)

    def read_track(self, ldev: int, track: int) -> np.ndarray:
        """Bytes of one LDEV track (DataLossError if underivable)."""
        g, lt = self.locate(ldev, track)
        return g.read_track(lt)

    def write_track(self, ldev: int, track: int, data) -> None:
        """Write one LDEV track (RAID5 small write)."""
        g, lt = self.locate(ldev, track)
        g.write_track(lt, data)

    def _sector_span(self, ldev: int, lba: int, n_sectors: int) -> range:
        """Tracks touched by sectors [lba, lba + n_sectors) of ``ldev``."""
        if self.track_bytes % SECTOR_BYTES:
            raise ValueError(f"track_bytes {self.track_bytes} is not a multiple of {SECTOR_BYTES}")
        per_track = self.track_bytes // SECTOR_BYTES
        total = self.ldev_tracks(ldev) * per_track
        if n_sectors < 0 or lba < 0 or lba + n_sectors > total:
            raise ValueError(f"LDEV {ldev}: sectors [{lba}, {lba + n_sectors}) outside 0..{total}")
        return range(lba // per_track, (lba + n_sectors + per_track - 1) // per_track)

    def read_sectors(self, ldev: int, lba: int, n_sectors: int) -> bytes:
        """``n_sectors`` 512-byte sectors from sector ``lba`` of ``ldev``."""
        tracks = self._sector_span(ldev, lba, n_sectors)
        if not tracks:
            return b""
        tb = self.track_bytes
        pos, end = lba * SECTOR_BYTES, (lba + n_sectors) * SECTOR_BYTES
        parts = []
        for t in tracks:   # in order: the first track that cannot be read raises, as before
            g, lt = self.locate(ldev, t)
            t0 = t * tb
            lo = max(pos, t0)
            parts.append(g.read_part(lt, lo - t0, min(end, t0 + tb) - lo))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _write_part(self, ldev: int, track: int, offset_bytes: int, data: np.ndarray) -> bool:
        g, lt = self.locate(ldev, track)
        return g.write_part(lt, offset_bytes, data)

    def write_sectors(self, ldev: int, lba: int, data) -> None:
        """Partial write: whole 512-byte sectors from ``lba`` (in place on the
        words it changes, else track read-patch-write)."""
        raw = np.frombuffer(memoryview(data).cast("B"), np.uint8)
        if raw.size % SECTOR_BYTES:
            raise ValueError(f"sector data: {raw.size} bytes is not a multiple of {SECTOR_BYTES}")
        tracks = self._sector_span(ldev, lba, raw.size // SECTOR_BYTES)
        pos = lba * SECTOR_BYTES  # byte address within the LDEV
        end = pos + raw.size
        for t in tracks:
            t0 = t * self.track_bytes
            lo, hi = max(pos, t0), min(end, t0 + self.track_bytes)
            if lo == t0 and hi == t0 + self.track_bytes:
                track = raw[lo - pos:hi - pos]
            elif self._write_part(ldev, t, lo - t0, raw[lo - pos:hi - pos]):
                continue
            else:
                track = self.read_track(ldev, t)
                track[lo - t0:hi - t0] = raw[lo - pos:hi - pos]
            self.write_track(ldev, t, track)
