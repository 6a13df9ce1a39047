"""A SQLite database and its rollback journal on one LDEV, through an apsw VFS.

The layout (all offsets in bytes; little-endian)::

    sector 0            header: struct "<8s6QI" = magic b"EMUSQL01",
                        db_offset, db_capacity, journal_offset,
                        journal_capacity, db_size, journal_size, crc32 of
                        the 56 bytes before it; the rest of the sector zero
    db_offset ..        the database file's bytes (db_size of them count)
    journal_offset ..   the journal file's bytes (journal_size of them count)

By default the database region starts at 4 KiB and takes 5/8 of the rest,
the journal the remainder (both multiples of 4 KiB). The two file sizes
live in the header, a single sector, so a size change is one sector write:
a journal "deleted" by SQLite is a header with ``journal_size`` 0.

The VFS (:class:`LdevVfs`) maps the database (any name without a suffix)
and its ``-journal`` onto the regions; it refuses WAL files and temporary
files (use ``journal_mode=DELETE`` and ``temp_store=MEMORY``). Writes are
whole sectors on the device: a partial sector is read, merged and written,
as a filesystem does; sectors read or written are kept (a page cache), so
a sector is read from the device at most once. ``xSync`` writes the header
if a size changed, then flushes the device; a journal delete with
``syncDir`` does the same, which is why the bank runs with
``synchronous=EXTRA`` (SQLite syncs the journal's deletion, the commit
point, only then).

Recovery: opening the database from an image lets SQLite find the hot
journal (``journal_size`` > 0) and roll it back, as it would after a power
loss; that writes to the device, so a checker opens a copy.
"""

from __future__ import annotations

import itertools
import struct
import zlib

import apsw

from controllers.apps.blockdev import SECTOR_BYTES, BlockDevice

MAGIC = b"EMUSQL01"
_HEADER = struct.Struct("<8s6Q")
_CRC = struct.Struct("<I")
HEADER_BYTES = 4096
ALIGN_BYTES = 4096
_vfs_names = itertools.count(1)


class LayoutError(ValueError):
    """An LDEV image without a valid emu SQLite layout header."""


class Layout:
    """The header's fields, and the sizes the VFS keeps current."""

    def __init__(self, db_offset: int, db_capacity: int, journal_offset: int, journal_capacity: int,
                 db_size: int = 0, journal_size: int = 0):
        self.db_offset, self.db_capacity = db_offset, db_capacity
        self.journal_offset, self.journal_capacity = journal_offset, journal_capacity
        self.db_size, self.journal_size = db_size, journal_size

    @classmethod
    def default(cls, size_bytes: int) -> "Layout":
        usable = size_bytes - HEADER_BYTES
        if usable < 8 * ALIGN_BYTES:
            raise ValueError(f"an LDEV of {size_bytes} bytes is too small for the SQLite layout")
        db_cap = usable * 5 // 8 // ALIGN_BYTES * ALIGN_BYTES
        jr_cap = (usable - db_cap) // ALIGN_BYTES * ALIGN_BYTES
        return cls(HEADER_BYTES, db_cap, HEADER_BYTES + db_cap, jr_cap)

    def pack(self) -> bytes:
        body = _HEADER.pack(MAGIC, self.db_offset, self.db_capacity, self.journal_offset, self.journal_capacity,
                            self.db_size, self.journal_size)
        return (body + _CRC.pack(zlib.crc32(body))).ljust(SECTOR_BYTES, b"\0")

    @classmethod
    def unpack(cls, sector: bytes, size_bytes: int) -> "Layout":
        body, (crc,) = sector[:_HEADER.size], _CRC.unpack_from(sector, _HEADER.size)
        magic, db_off, db_cap, jr_off, jr_cap, db_size, jr_size = _HEADER.unpack(body)
        if magic != MAGIC:
            raise LayoutError(f"no emu SQLite layout header (magic {magic!r}, expected {MAGIC!r})")
        if zlib.crc32(body) != crc:
            raise LayoutError("the layout header's crc32 does not match (a torn or foreign sector 0)")
        lay = cls(db_off, db_cap, jr_off, jr_cap, db_size, jr_size)
        if not (SECTOR_BYTES <= db_off and db_off + db_cap <= jr_off and jr_off + jr_cap <= size_bytes
                and db_size <= db_cap and jr_size <= jr_cap):
            raise LayoutError(f"the layout header's regions do not fit the LDEV ({size_bytes} bytes): "
                              f"db {db_off}+{db_cap} (size {db_size}), journal {jr_off}+{jr_cap} (size {jr_size})")
        return lay


def format_ldev(dev: BlockDevice, layout: Layout | None = None) -> Layout:
    """Write an empty layout (both files of size 0) to the device and flush."""
    layout = layout or Layout.default(dev.size_bytes)
    dev.pwrite(0, layout.pack())
    dev.flush()
    return layout


class _Sectors:
    """Whole-sector access to the device with a cache of every sector seen."""

    def __init__(self, dev: BlockDevice):
        self.dev = dev
        self.cache: dict[int, bytes] = {}

    def read(self, offset: int, length: int) -> bytes:
        first, last = offset // SECTOR_BYTES, (offset + length - 1) // SECTOR_BYTES
        missing = [s for s in range(first, last + 1) if s not in self.cache]
        # one device read per run of missing sectors
        for _, run in itertools.groupby(enumerate(missing), key=lambda t: t[1] - t[0]):
            run = [s for _, s in run]
            data = self.dev.pread(run[0] * SECTOR_BYTES, len(run) * SECTOR_BYTES)
            for i, s in enumerate(run):
                self.cache[s] = data[i * SECTOR_BYTES:(i + 1) * SECTOR_BYTES]
        blob = b"".join(self.cache[s] for s in range(first, last + 1))
        start = offset - first * SECTOR_BYTES
        return blob[start:start + length]

    def write(self, offset: int, data: bytes) -> None:
        first, last = offset // SECTOR_BYTES, (offset + len(data) - 1) // SECTOR_BYTES
        head = offset - first * SECTOR_BYTES
        tail = (last + 1) * SECTOR_BYTES - (offset + len(data))
        buf = bytearray()
        if head:
            buf += self.read(first * SECTOR_BYTES, head)
        buf += data
        if tail:
            buf += self.read(offset + len(data), tail)
        self.dev.pwrite(first * SECTOR_BYTES, bytes(buf))
        for i, s in enumerate(range(first, last + 1)):
            self.cache[s] = bytes(buf[i * SECTOR_BYTES:(i + 1) * SECTOR_BYTES])


class _File:
    """One of the two files: a region of the LDEV whose size is in the header."""

    def __init__(self, vfs: "LdevVfs", kind: str):
        self.vfs, self.kind = vfs, kind
        lay = vfs.layout
        self.base = lay.db_offset if kind == "db" else lay.journal_offset
        self.capacity = lay.db_capacity if kind == "db" else lay.journal_capacity

    @property
    def size(self) -> int:
        return self.vfs.layout.db_size if self.kind == "db" else self.vfs.layout.journal_size

    def _set_size(self, n: int) -> None:
        if n != self.size:
            setattr(self.vfs.layout, "db_size" if self.kind == "db" else "journal_size", n)
            self.vfs.header_dirty = True

    def xRead(self, amount: int, offset: int) -> bytes:
        n = max(0, min(amount, self.size - offset))
        return self.vfs.sectors.read(self.base + offset, n) if n else b""   # short read: SQLite zero-fills

    def xWrite(self, data: bytes, offset: int) -> None:
        if offset + len(data) > self.capacity:
            raise apsw.FullError(f"the {self.kind} region holds {self.capacity} bytes")
        self.vfs.sectors.write(self.base + offset, bytes(data))
        self._set_size(max(self.size, offset + len(data)))

    def xTruncate(self, newsize: int) -> None:
        self._set_size(min(self.size, newsize))

    def xSync(self, flags: int) -> None:
        self.vfs.sync()

    def xFileSize(self) -> int:
        return self.size

    def xLock(self, level: int) -> None:
        pass          # one process, one connection: locks are not needed

    def xUnlock(self, level: int) -> None:
        pass

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return SECTOR_BYTES

    def xDeviceCharacteristics(self) -> int:
        return 0      # promise nothing: SQLite journals as for a plain disk

    def xClose(self) -> None:
        pass


class LdevVfs(apsw.VFS):
    """An apsw VFS holding one database (and its journal) on ``dev``; ``name`` is the VFS's name.

    ``close()`` unregisters it. The device must carry a layout
    (:func:`format_ldev`); :class:`LayoutError` otherwise.
    """

    def __init__(self, dev: BlockDevice, name: str | None = None):
        self.vfs_name = name or f"emu-ldev-{next(_vfs_names)}"
        self.dev = dev
        self.sectors = _Sectors(dev)
        self.layout = Layout.unpack(self.sectors.read(0, SECTOR_BYTES), dev.size_bytes)
        self.header_dirty = False
        super().__init__(self.vfs_name, base="")

    def sync(self) -> None:
        if self.header_dirty:
            self.sectors.write(0, self.layout.pack())
            self.header_dirty = False
        self.dev.flush()

    @staticmethod
    def _kind(name) -> str:
        if name is None:
            raise apsw.CantOpenError("temporary files are not on the LDEV: use temp_store=MEMORY")
        if name.endswith("-journal"):
            return "journal"
        if name.endswith("-wal") or name.endswith("-shm"):
            raise apsw.CantOpenError(f"{name}: WAL is not on the LDEV layout: use journal_mode=DELETE")
        return "db"

    def xOpen(self, name, flags):
        name = name.filename() if isinstance(name, apsw.URIFilename) else name
        return _File(self, self._kind(name))

    def xAccess(self, pathname: str, flags: int) -> bool:
        if pathname.endswith("-wal") or pathname.endswith("-shm"):
            return False      # there is never a WAL on the layout
        kind = self._kind(pathname)
        return kind == "db" or self.layout.journal_size > 0

    def xDelete(self, filename: str, syncdir: bool) -> None:
        if self._kind(filename) == "journal":
            if self.layout.journal_size:
                self.layout.journal_size = 0
                self.header_dirty = True
            if syncdir:
                self.sync()

    def xFullPathname(self, name: str) -> str:
        return name

    # deterministic stand-ins for the OS: a run is a function of its seed
    def xRandomness(self, numbytes: int) -> bytes:
        return bytes(numbytes)

    def xCurrentTime(self) -> float:
        return 2461000.5      # a fixed Julian day: SQLite's clock must not make runs differ

    def xCurrentTimeInt64(self) -> int:
        return 212630400000000

    def xSleep(self, microseconds: int) -> int:
        return microseconds

    def xGetLastError(self):
        return (0, "")

    def close(self) -> None:
        self.unregister()


def reseed_sqlite(vfs: LdevVfs) -> None:
    """Reseed SQLite's process-wide PRNG (journal nonces) from ``vfs``'s fixed randomness.

    SQLite seeds its PRNG once per process from the default VFS (the OS's
    random bytes); for a run that is a function of its seed, it is reset
    (``sqlite3_randomness(0)``) and reseeded while ``vfs`` is the default."""
    default = apsw.vfs_names()[0]
    apsw.set_default_vfs(vfs.vfs_name)
    try:
        apsw.randomness(0)
        apsw.randomness(1)
    finally:
        apsw.set_default_vfs(default)


def connect(vfs: LdevVfs, db_name: str = "app.db") -> apsw.Connection:
    """A connection on the LDEV with the pragmas the layout needs (and SQLite's PRNG reseeded)."""
    reseed_sqlite(vfs)
    con = apsw.Connection(db_name, vfs=vfs.vfs_name)
    con.pragma("temp_store", "memory")
    con.pragma("journal_mode", "delete")
    con.pragma("synchronous", "extra")
    return con
