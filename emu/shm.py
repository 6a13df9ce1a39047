"""Named shared-memory regions: disk media, cache, controller NVM.

The supervisor creates every region once, sized from the config, before any
actor starts (allocate at start-up); actors attach by name. Regions are
sparse (``ftruncate`` on tmpfs: untouched pages cost nothing, and we never
pre-touch them), survive the death of the actor using them, and are removed
by the supervisor at shutdown, also when a run crashes or a test fails.

Pitfall handled here: on Python 3.11 a process that merely attaches to a
``SharedMemory`` registers it with its resource tracker (shared with the
parent after a fork), which unlinks it when that process exits. Actor
processes therefore map the segment's file directly with ``mmap`` and never
register it: the creator (the supervisor) is the one owner, and its
resource tracker removes the segments if the supervisor itself is killed.
"""

from __future__ import annotations

import mmap
import os
import secrets
from multiprocessing import shared_memory

import numpy as np

PREFIX = "emu_"
MAX_REGION_BYTES = 1 << 40  # sparse (a thin disk of a terabyte rack), but a config asking for more is a mistake
SHM_DIR = "/dev/shm"
#: Linux's MAP_NORESERVE (Python's mmap module names it only from 3.13): a
#: sparse private region of terabytes must not be refused as overcommit
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


def backing_free_bytes(shared: bool) -> int:
    """Bytes that written pages of a region can still take: the free space of
    the shared-memory filesystem for segments (``shared``), the memory
    available (MemAvailable) for private regions."""
    if shared:
        st = os.statvfs(SHM_DIR)
        return st.f_bavail * st.f_frsize
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


class SharedRegion:
    """One named segment, viewed as a flat uint8 numpy array ``.buf``."""

    def __init__(self, shm: shared_memory.SharedMemory, name: str, size: int, owner: bool):
        self._shm = shm
        self.name = name          # logical name, e.g. "main.disk3.media"
        self.size = size
        self.owner = owner
        self.buf = np.ndarray((size,), dtype=np.uint8, buffer=shm.buf)

    #: pages of a segment live in the shared-memory filesystem
    shared = True

    def backing_free_bytes(self) -> int:
        return backing_free_bytes(self.shared)

    def punch(self) -> None:
        """Drop every page of the segment: it reads zeros again and costs no
        memory (MADV_REMOVE punches holes in the shared-memory file)."""
        mapping = self._shm._mmap if self._shm is not None else self._mmap
        mapping.madvise(mmap.MADV_REMOVE)

    @property
    def segment(self) -> str:
        return self._shm.name if self._shm is not None else self._segment

    @classmethod
    def create(cls, rack_id: str, name: str, size: int) -> "SharedRegion":
        if size <= 0 or size > MAX_REGION_BYTES:
            raise ValueError(f"region {name}: size {size} outside 1..{MAX_REGION_BYTES} bytes")
        seg = f"{PREFIX}{rack_id}_{_safe(name)}"
        shm = shared_memory.SharedMemory(name=seg, create=True, size=size)
        return cls(shm, name, size, owner=True)

    @classmethod
    def attach(cls, segment: str, name: str, size: int) -> "SharedRegion":
        """Map an existing segment without registering it anywhere: an actor
        process never owns (and so never unlinks) a region."""
        fd = os.open(f"/dev/shm/{segment.lstrip('/')}", os.O_RDWR)
        try:
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        region = cls.__new__(cls)
        region._shm, region._mmap = None, mapping
        region.name, region.size, region.owner = name, size, False
        region._segment = segment
        region.buf = np.ndarray((size,), dtype=np.uint8, buffer=mapping)
        return region

    def close(self) -> None:
        self.buf = None
        try:
            if self._shm is not None:
                self._shm.close()
            else:
                self._mmap.close()
        except BufferError:
            pass  # a view is still alive somewhere; the mapping goes with the process

    def unlink(self) -> None:
        self.close()
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass

    def spec(self) -> list:
        """What an attaching process needs: [segment, name, size]."""
        return [self.segment, self.name, self.size]


class PrivateRegion:
    """A region private to this process (the inline backend: every actor in
    one process, nothing to share). An anonymous ``MAP_PRIVATE`` mapping,
    sparse like a segment, with ``SharedRegion``'s interface; unlike a
    segment it is copy-on-write across ``os.fork``, so a forked crash-point
    child (``emu.forks``) writes its own copy of the disks and NVM, never the
    parent's, and there is no /dev/shm name to leak or to unlink twice."""

    #: pages of a private region are anonymous memory
    shared = False

    def backing_free_bytes(self) -> int:
        return backing_free_bytes(self.shared)

    def __init__(self, name: str, size: int):
        if size <= 0 or size > MAX_REGION_BYTES:
            raise ValueError(f"region {name}: size {size} outside 1..{MAX_REGION_BYTES} bytes")
        self.name = name
        self.size = size
        self.owner = True
        self._mmap = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        self.buf = np.ndarray((size,), dtype=np.uint8, buffer=self._mmap)

    def close(self) -> None:
        self.buf = None
        try:
            self._mmap.close()
        except BufferError:
            pass  # a view is still alive somewhere; the mapping goes with the process

    def punch(self) -> None:
        """Drop every page: the region reads zeros again and costs no memory."""
        self._mmap.madvise(mmap.MADV_DONTNEED)

    def unlink(self) -> None:
        self.close()

    def spec(self) -> list:
        raise TypeError(f"region {self.name} is private to this process: no other process can attach it")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)[:120]


def new_rack_id() -> str:
    return f"{os.getpid()}_{secrets.token_hex(3)}"


def leftover_segments(rack_id: str | None = None) -> list[str]:
    """Our segments still present in /dev/shm (all racks, or one)."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return []
    want = PREFIX + (rack_id + "_" if rack_id else "")
    return sorted(n for n in names if n.startswith(want))
