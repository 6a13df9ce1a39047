"""The DKC's cache and the firmware's view of the LDEVs through it.

``LdevStore`` is the firmware's ``TrackStore`` over the RAID5 array;
``TrackCache`` holds real track bytes in the DKC's shared-memory cache region
(slots, LRU); ``CachedStore`` reads from the cache first and writes through
to the media, so the media are always current and a restarted DKC simply
starts with a cold cache.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from firmware.protocol import SECTOR_BYTES
from firmware.raid.layout import DataLossError, RaidArray


class DataLost(ValueError):
    """A read that RAID5 cannot answer with the right bytes (double fault)."""


class LdevStore:
    """The firmware's ``TrackStore`` over a ``RaidArray`` (bytes in, bytes out)."""

    sector_bytes = SECTOR_BYTES

    def __init__(self, array: RaidArray, track_bytes: int):
        self.array = array
        self.track_bytes = track_bytes

    def cached(self, ldev: int, track: int) -> bool:
        return False   # no cache in front: every read goes to the disks

    def written_tracks(self, ldev: int):
        """Thin media: the tracks of ``ldev`` ever written (int64 array); None on thick media."""
        ext = self.array.extent(ldev)
        if not self.array.groups[ext.group].thin:
            return None
        return self.array.written_tracks(ldev)

    def discard(self, ldev: int) -> int:
        """Thin media: UNMAP ``ldev`` (every track reads zeros again)."""
        try:
            return self.array.discard(ldev)
        except DataLossError as exc:
            raise DataLost(f"ldev {ldev} discard: {exc}") from None

    def ldev_tracks(self, ldev: int) -> int:
        try:
            return self.array.ldev_tracks(ldev)
        except KeyError:
            raise ValueError(f"no such ldev {ldev}") from None

    def read_track(self, ldev: int, track: int) -> bytes:
        try:
            return self.array.read_track(ldev, track).tobytes()
        except DataLossError as exc:
            raise DataLost(f"ldev {ldev} track {track}: {exc}") from None

    def write_track(self, ldev: int, track: int, data: bytes) -> None:
        try:
            self.array.write_track(ldev, track, np.frombuffer(data, dtype=np.uint8))
        except DataLossError as exc:
            raise DataLost(f"ldev {ldev} track {track}: {exc}") from None

    def read_sectors(self, ldev: int, lba: int, n: int) -> bytes:
        try:
            return self.array.read_sectors(ldev, lba, n)
        except DataLossError as exc:
            raise DataLost(f"ldev {ldev} lba {lba}: {exc}") from None

    def write_sectors(self, ldev: int, lba: int, data: bytes) -> None:
        try:
            self.array.write_sectors(ldev, lba, data)
        except DataLossError as exc:
            raise DataLost(f"ldev {ldev} lba {lba}: {exc}") from None


class TrackCache:
    """The DKC cache (patent 104/114): track slots in a shared-memory region,
    LRU over a slot directory. Write-through: the media stay current, so a
    restarted DKC starts with an empty directory and loses nothing; which
    tracks are still write-pending (to be destaged) is the actor's ``dirty``
    map."""

    def __init__(self, region: np.ndarray, track_bytes: int, slots: int):
        self.buf = region
        self.tb = track_bytes
        self.slots = slots
        self.slot_of: OrderedDict = OrderedDict()   # (ldev, track) -> slot, least recent first
        self.free = list(range(slots - 1, -1, -1))
        self.hits = self.misses = 0

    def __contains__(self, key) -> bool:
        return key in self.slot_of

    def __len__(self) -> int:
        return len(self.slot_of)

    def _view(self, slot: int) -> np.ndarray:
        return self.buf[slot * self.tb:(slot + 1) * self.tb]

    def _hit(self, key) -> int | None:
        """The slot holding ``key`` (a hit, now most recently used), or None (a miss)."""
        slot = self.slot_of.get(key)
        if slot is None:
            self.misses += 1
            return None
        self.hits += 1
        self.slot_of.move_to_end(key)
        return slot

    def get(self, key) -> bytes | None:
        slot = self._hit(key)
        return None if slot is None else self._view(slot).tobytes()

    def get_part(self, key, lo: int, hi: int) -> bytes | None:
        """``get(key)[lo:hi]`` (the same hit, miss and LRU bookkeeping),
        copying only those bytes."""
        slot = self._hit(key)
        if slot is None:
            return None
        base = slot * self.tb
        return self.buf[base + max(0, min(lo, self.tb)):base + max(0, min(hi, self.tb))].tobytes()

    def put(self, key, data: bytes) -> None:
        if self.slots == 0:
            return
        slot = self.slot_of.get(key)
        if slot is None:
            if not self.free:
                _, victim = self.slot_of.popitem(last=False)
                self.free.append(victim)
            slot = self.free.pop()
            self.slot_of[key] = slot
        self.slot_of.move_to_end(key)
        self._view(slot)[:] = np.frombuffer(data, dtype=np.uint8)

    def drop_ldev(self, ldev: int) -> None:
        """Forget every cached track of ``ldev`` (it was discarded)."""
        for key in [k for k in self.slot_of if k[0] == ldev]:
            self.free.append(self.slot_of.pop(key))

    def patch(self, key, offset: int, data: bytes) -> None:
        """Update part of a cached track in place (a partial write)."""
        slot = self.slot_of.get(key)
        if slot is not None:
            self._view(slot)[offset:offset + len(data)] = np.frombuffer(data, dtype=np.uint8)


class CachedStore(LdevStore):
    """``LdevStore`` behind the cache: reads are served from cache slots when
    present, every write goes through to the media and updates its slot."""

    def __init__(self, array: RaidArray, track_bytes: int, cache: TrackCache):
        super().__init__(array, track_bytes)
        self.cache = cache

    def _vouch(self, ldev: int, track: int) -> None:
        """A cached copy of a track the media can no longer give (its group
        lost a disk and cannot derive it) is not served: it would vanish at
        the next restart, and after a failed write it is not even the last
        image. Only checked while a group runs degraded."""
        grp, lt = self.array.locate(ldev, track)
        if grp.failed_disks:
            try:
                grp.read_track(lt)
            except DataLossError as exc:
                raise DataLost(f"ldev {ldev} track {track}: {exc}") from None

    def cached(self, ldev: int, track: int) -> bool:
        """The track is in a cache slot (a read of it needs no disk)."""
        return (ldev, track) in self.cache

    def discard(self, ldev: int) -> int:
        self.cache.drop_ldev(ldev)
        return super().discard(ldev)

    def read_track(self, ldev: int, track: int) -> bytes:
        data = self.cache.get((ldev, track))
        if data is not None:
            self._vouch(ldev, track)
        if data is None:
            data = super().read_track(ldev, track)
            self.cache.put((ldev, track), data)
        return data

    def write_track(self, ldev: int, track: int, data: bytes) -> None:
        super().write_track(ldev, track, data)
        self.cache.put((ldev, track), bytes(data))

    def read_sectors(self, ldev: int, lba: int, n: int) -> bytes:
        spt = self.track_bytes // SECTOR_BYTES
        out, sector = [], lba
        while sector < lba + n:
            track, off = divmod(sector, spt)
            take = min(spt - off, lba + n - sector)
            if (ldev, track) in self.cache:
                self._vouch(ldev, track)
                out.append(self.cache.get_part((ldev, track), off * SECTOR_BYTES, (off + take) * SECTOR_BYTES))
            else:
                out.append(super().read_sectors(ldev, sector, take))
            sector += take
        return out[0] if len(out) == 1 else b"".join(out)

    def write_sectors(self, ldev: int, lba: int, data: bytes) -> None:
        super().write_sectors(ldev, lba, data)
        spt = self.track_bytes // SECTOR_BYTES
        pos, sector, end = 0, lba, lba + len(data) // SECTOR_BYTES
        while sector < end:
            track, off = divmod(sector, spt)
            take = min(spt - off, end - sector)
            self.cache.patch((ldev, track), off * SECTOR_BYTES, data[pos:pos + take * SECTOR_BYTES])
            pos += take * SECTOR_BYTES
            sector += take

