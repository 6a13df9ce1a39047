"""The DKC's non-volatile memory as fixed-layout tables, updated in place (sans-I/O).

The firmware's tables (differential bitmaps, Fig. 7; save-area bitmap,
Fig. 10; saved-data queue, Fig. 11; time-series queue, Fig. 12; lost tracks;
mirror writes in flight; the rollback list) are numpy arrays *inside* one
byte buffer that the DKC actor provides (its NVM region: shared memory in
the processes backend). The firmware reads and writes them there, in
place; what is left (pair states, session cursors, sequence numbers) is a
few small pickled groups, written only when they change.

Torn updates are avoided with an **undo log and one commit point per
scheduler round**:

* Before a 64-byte block of a table is first changed in a round, its old
  bytes go to the undo log as an entry ``(round, index, block, checksum,
  old bytes)``; only then is the block written (``NvmSpace.touch`` is
  called before every write). Bytes of pool segments that were free at
  the last commit need no undo (``fresh``): after a rollback the pool's own
  table says they are free again.
* ``commit`` (the end of a round) writes each changed group into the slot
  its last version is not in, then one header (generation, each group's
  slot, length and checksum, the header's checksum) into the header slot
  the last header is not in. Writing that header is the commit point.
* ``open`` (a restart) takes the valid header with the highest
  generation, undoes, newest first, every whole undo entry of the round
  after it (a torn entry is the last one, and its block was not written
  yet), reads the groups it names, and the caller commits at once, so
  the undone round's entries can never be applied a second time.

What lies *outside* the NVM and survives a kill too (the media, written
in place) needs the **write-ahead rule**: ``log_intent`` appends a small
record, tagged with the round, before such a write is issued; no commit
is needed (the bytes are in NVM at once), and the round's commit makes
every record of the round stale (a new round, the other of two log
areas). ``open`` hands the records of the undone round to the caller
(``in_doubt``), logged again into the new round until the caller's next
commit, so a second kill before it still finds them.

A kill at any instant therefore leaves the state of the last commit.
Persistence costs O(changes): per round, the touched blocks twice (undo
entry and write), the bytes of fresh segments once, and the groups that
changed.
"""
from __future__ import annotations

import hashlib
import pickle
import struct
import zlib
from typing import Callable

import numpy as np

BLOCK_BYTES = 64
PAGE_BYTES = 4096
MAGIC = b"DKCNVM01"
GROUPS = ("cold", "hot", "host")
_HEADER = struct.Struct("<8sQ" + "BQ16s" * len(GROUPS) + "16s")   # + the header's own digest (16s)
_UNDO = struct.Struct("<QIIQ")     # round, index, block, digest of (round, index, block, old bytes)
UNDO_ENTRY_BYTES = _UNDO.size + BLOCK_BYTES
_INTENT = struct.Struct("<QI3qI")  # round, index, three ints, CRC-32 of the rest
#: write-ahead records a round holds before a commit makes room (``log_intent``)
INTENT_CAP = 4096
FORMAT_BYTES = 1 << 20


#: a group passed to ``NvmSpace.commit`` as this is the same as at the last commit (not pickled again)
UNCHANGED = object()

#: the spaces being opened (``_unpickle``): what a pickled space or pool refers to
_LOADING: list = []


def _loading_space():
    return _LOADING[-1]


def _loading_object(name: str):
    return _LOADING[-1].obj(name)


class NvmLayoutError(ValueError):
    """The tables asked for do not fit the NVM region, or an image does not match its layout."""


class NvmFull(RuntimeError):
    """A fixed-capacity table (or the pool, or a group) is full."""


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p)
    return h.digest()


def _digest8(*parts: bytes) -> int:
    """An undo entry's check (CRC-32: an entry is small and also carries its round and index)."""
    crc = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
    return crc


class NvmSpace:
    """One NVM buffer: layout (``plan`` then ``seal``), in-place
    writes announced with ``touch``, ``commit`` per round, ``open`` at restart.

    The layout is declared the same way on every start from the same
    construction parameters, so a restarted firmware finds each table at
    the offset it had."""

    def __init__(self, buf: np.ndarray | None = None, group_bytes: int = 4 << 20):
        self.buf = buf
        self.group_bytes = group_bytes
        self._arrays: dict[str, np.ndarray] = {}
        self._geom: dict[int, tuple[np.ndarray, int, int]] = {}
        self._array_ids: dict[int, str] = {}
        self._objects: dict[str, object] = {}
        self._object_ids: dict[int, str] = {}
        self._plan: list[tuple[str, np.dtype, tuple, bool]] = []
        self.sealed = False
        self.gen = 0
        self.group_slot = {g: 0 for g in GROUPS}
        self.group_blobs: dict[str, bytes] = {g: b"" for g in GROUPS}
        self._touched: set[int] = set()
        self._undo_n = 0
        self._intent_n = 0
        #: the write-ahead records of the round a restart undid (``open``)
        self.in_doubt: list[tuple[int, int, int]] = []
        self.bytes_written = 0
        #: bytes written into the buffer by every commit so far, and the commits (volatile counters)
        self.total_written = 0
        self.commits = 0
        #: test hook, called before every write into the buffer (where a kill may
        #: come): ``on_write("put", offset, data)`` for the log, groups and headers,
        #: ``on_write("table", offset, nbytes)`` for a table write in place
        self.on_write: Callable[[str, int, object], None] | None = None
        #: test hook, called after each commit point
        self.on_commit: Callable[[], None] | None = None

    # ------------------------------------------------------------ layout
    def plan(self, name: str, dtype, shape, undo: bool = True) -> None:
        """Declare a table (before ``seal``); ``undo=False`` for pool data bytes."""
        assert not self.sealed, "NVM layout: plan after seal"
        assert name not in {p[0] for p in self._plan}, f"NVM layout: table {name} declared twice"
        self._plan.append((name, np.dtype(dtype), tuple(np.atleast_1d(shape)), undo))

    def seal(self) -> None:
        """Place the tables: headers, format blob, groups, undo log, then the tables."""
        off = 2 * PAGE_BYTES + FORMAT_BYTES
        self.group_off = {}
        for g in GROUPS:
            self.group_off[g] = off
            off += 2 * self.group_bytes
        undo_blocks = sum(-(-(dt.itemsize * int(np.prod(sh))) // BLOCK_BYTES) + 1 for _, dt, sh, _u in self._plan)
        self.undo_off, self.undo_cap = off, undo_blocks + 1
        off += self.undo_cap * UNDO_ENTRY_BYTES
        self.intent_off = off   # two areas: round r logs in area r % 2
        off += 2 * INTENT_CAP * _INTENT.size
        off = -(-off // PAGE_BYTES) * PAGE_BYTES
        self.data_off = off
        layout = []
        places = []
        for name, dt, shape, undo in self._plan:
            nbytes = dt.itemsize * int(np.prod(shape))
            places.append((name, dt, shape, off, nbytes, undo))
            layout.append(f"{name}:{dt.str}:{shape}:{off}")
            off = -(-(off + nbytes) // PAGE_BYTES) * PAGE_BYTES
        self.total_bytes = off
        self.layout_digest = _digest(repr(layout).encode())
        if self.buf is None:
            self.buf = np.zeros(self.total_bytes, dtype=np.uint8)
        if len(self.buf) < self.total_bytes:
            raise NvmLayoutError(f"NVM region of {len(self.buf)} bytes is too small for the firmware's tables "
                                 f"({self.total_bytes} bytes: lower max_saved_nodes, tsq_max_nodes or nvm_pool_bytes)")
        for name, dt, shape, o, nbytes, _undo in places:
            view = self.buf[o:o + nbytes].view(dt).reshape(shape)
            self._arrays[name] = view
            self._array_ids[id(view)] = name
            #: per table: the view, its offset and the bytes of one item (``touch``)
            step = view.itemsize * (int(np.prod(view.shape[1:])) if view.ndim > 1 else 1)
            self._geom[id(view)] = (view, o, step)
        self.sealed = True

    def arr(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def offset_of(self, view: np.ndarray) -> int:
        g = self._geom.get(id(view))
        if g is not None and g[0] is view:   # a table: its offset is known
            return g[1]
        return view.__array_interface__["data"][0] - self.buf.__array_interface__["data"][0]

    def register(self, name: str, obj: object) -> None:
        """A table object the groups may reference (pickled as its name)."""
        self._objects[name] = obj
        self._object_ids[id(obj)] = name

    def obj(self, name: str):
        return self._objects[name]

    # ------------------------------------------------------------ writes
    def touch(self, view: np.ndarray, first: int, count: int = 1, fresh: bool = False) -> None:
        """Items ``[first, first + count)`` of table ``view`` are about to be
        written: log the old bytes of each block touched for the first time
        this round (not for ``fresh`` bytes, free at the last commit)."""
        if count <= 0:
            return
        g = self._geom.get(id(view))
        if g is not None and g[0] is view:   # a table (the usual case): geometry known since seal
            step = g[2]
            lo = g[1] + first * step
        else:
            step = view.itemsize * (int(np.prod(view.shape[1:])) if view.ndim > 1 else 1)
            lo = self.offset_of(view) + first * step
        self.touch_bytes(lo, count * step, fresh)

    def touch_bytes(self, lo: int, nbytes: int, fresh: bool = False) -> None:
        if not fresh:
            touched = self._touched
            first, last = lo // BLOCK_BYTES, (lo + nbytes - 1) // BLOCK_BYTES
            if first == last:   # most writes: one block
                if first not in touched:
                    touched.add(first)
                    self._log_undo(first)
            else:
                for block in range(first, last + 1):
                    if block in touched:
                        continue
                    touched.add(block)
                    self._log_undo(block)
        self.bytes_written += nbytes
        if self.on_write is not None:
            self.on_write("table", lo, nbytes)

    def _log_undo(self, block: int) -> None:
        if self._undo_n >= self.undo_cap:
            raise NvmFull(f"NVM undo log full ({self.undo_cap} entries): layout invariant violated")
        old = self.buf[block * BLOCK_BYTES:(block + 1) * BLOCK_BYTES].tobytes()
        rnd, idx = self.gen + 1, self._undo_n
        dig = _digest8(struct.pack("<QII", rnd, idx, block), old)
        entry = _UNDO.pack(rnd, idx, block, dig) + old
        self._put(self.undo_off + idx * UNDO_ENTRY_BYTES, entry)
        self._undo_n += 1

    def intent_room(self) -> bool:
        """Whether this round can log one more write-ahead record."""
        return self._intent_n < INTENT_CAP

    def log_intent(self, a: int, b: int, c: int) -> None:
        """Write-ahead: record ``(a, b, c)`` (what a write outside the NVM is
        about to change) before that write is issued. Durable as soon as
        written; stale after this round's commit; a torn record is the last
        one, and its write was not issued yet."""
        self._log_intent(self.gen + 1, a, b, c)

    def _log_intent(self, rnd: int, a: int, b: int, c: int) -> None:
        if self._intent_n >= INTENT_CAP:
            raise NvmFull(f"NVM write-ahead log full ({INTENT_CAP} records): commit first (intent_room)")
        idx = self._intent_n
        body = _INTENT.pack(rnd, idx, a, b, c, 0)[:-4]
        self._put(self._intent_at(rnd, idx), body + struct.pack("<I", zlib.crc32(body)))
        self._intent_n += 1

    def _intent_at(self, rnd: int, idx: int) -> int:
        return self.intent_off + ((rnd % 2) * INTENT_CAP + idx) * _INTENT.size

    def _intents(self, rnd: int) -> list[tuple[int, int, int]]:
        found = []
        for idx in range(INTENT_CAP):
            off = self._intent_at(rnd, idx)
            raw = self.buf[off:off + _INTENT.size].tobytes()
            r, i, a, b, c, crc = _INTENT.unpack(raw)
            if r != rnd or i != idx or zlib.crc32(raw[:-4]) != crc:
                break
            found.append((a, b, c))
        return found

    def _put(self, off: int, data: bytes) -> None:
        if self.on_write is not None:
            self.on_write("put", off, data)
        self.buf[off:off + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self.bytes_written += len(data)

    # ------------------------------------------------------------ groups and commit
    # The groups are plain pickles (no Python callback per object: a commit
    # pickles them every round). The space and its registered objects pickle
    # as a reference resolved against the space being opened; a table object
    # pickles its tables by name (``name_of``), never their bytes.
    def __reduce__(self):
        return _loading_space, ()

    def _pickle(self, state: dict) -> bytes:
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def _unpickle(self, blob: bytes) -> dict:
        _LOADING.append(self)
        try:
            return pickle.loads(blob)
        finally:
            _LOADING.pop()

    def name_of(self, view: np.ndarray) -> str:
        """The name of a table (a view this space handed out)."""
        name = self._array_ids.get(id(view))
        assert name is not None and self._arrays[name] is view, "NVM: not a table of this space"
        return name

    def commit(self, groups: dict[str, dict]) -> int:
        """End of a round: write the groups that changed, then the header
        (the commit point). A group given as ``UNCHANGED`` is the caller's
        word that it is what the last commit wrote: it is not pickled again.
        Returns the NVM bytes this round wrote (0 when nothing changed)."""
        blobs = {g: self.group_blobs[g] if groups[g] is UNCHANGED else self._pickle(groups[g]) for g in GROUPS}
        changed = [g for g in GROUPS if blobs[g] != self.group_blobs[g]]
        if not changed and not self._touched and self.bytes_written == 0:
            return 0
        slots = dict(self.group_slot)
        for g in changed:
            blob = blobs[g]
            if len(blob) > self.group_bytes:
                raise NvmFull(f"NVM group {g!r} of {len(blob)} bytes exceeds its {self.group_bytes}")
            slots[g] = 1 - self.group_slot[g]
            self._put(self.group_off[g] + slots[g] * self.group_bytes, blob)
        self._write_header(self.gen + 1, slots, {g: blobs[g] for g in GROUPS})
        written = self.bytes_written
        self.total_written += written
        self.commits += 1
        for obj in self._objects.values():
            hook = getattr(obj, "after_commit", None)
            if hook is not None:
                hook()
        self.gen += 1
        self.group_slot, self.group_blobs = slots, blobs
        self._touched, self._undo_n, self._intent_n, self.bytes_written = set(), 0, 0, 0
        if self.on_commit is not None:
            self.on_commit()
        return written

    def _write_header(self, gen: int, slots: dict, blobs: dict) -> None:
        fields = [MAGIC, gen]
        for g in GROUPS:
            fields += [slots[g], len(blobs[g]), _digest(blobs[g])]
        fields.append(self.layout_digest)
        body = _HEADER.pack(*fields)
        self._put((gen % 2) * PAGE_BYTES, body + _digest(body))

    def write_format(self, blob: bytes) -> None:
        """Once, at first start: the construction parameters a restart needs to
        lay the tables out again. Whatever the buffer held is void from now
        on: both headers are wiped, and the generations go on from the old
        one, so undo entries left by an earlier life never match a new round."""
        if len(blob) + 24 > FORMAT_BYTES:
            raise NvmLayoutError(f"NVM format record of {len(blob)} bytes exceeds {FORMAT_BYTES}")
        old = self.read_header(self.buf)
        self.gen = old[1] + 1 if old is not None else 0
        self._put(0, bytes(_HEADER.size + 16))
        self._put(PAGE_BYTES, bytes(_HEADER.size + 16))
        self._put(2 * PAGE_BYTES, struct.pack("<Q", len(blob)) + _digest(blob) + blob)

    # ------------------------------------------------------------ restart
    @staticmethod
    def read_header(buf: np.ndarray) -> tuple | None:
        """The valid header with the highest generation, as a tuple, or None."""
        best = None
        for slot in (0, 1):
            raw = buf[slot * PAGE_BYTES:slot * PAGE_BYTES + _HEADER.size + 16].tobytes()
            body, dig = raw[:_HEADER.size], raw[_HEADER.size:]
            if _digest(body) != dig:
                continue
            fields = _HEADER.unpack(body)
            if fields[0] != MAGIC:
                continue
            if best is None or fields[1] > best[1]:
                best = fields
        return best

    @staticmethod
    def read_format(buf: np.ndarray) -> bytes | None:
        """The format record, or None for an NVM never formatted (or torn in its first commit)."""
        if NvmSpace.read_header(buf) is None:
            return None
        n = struct.unpack("<Q", buf[2 * PAGE_BYTES:2 * PAGE_BYTES + 8].tobytes())[0]
        start = 2 * PAGE_BYTES + 24
        if n > FORMAT_BYTES:
            raise NvmLayoutError("NVM format record: length out of range (not an NVM of this firmware)")
        blob = buf[start:start + n].tobytes()
        if _digest(blob) != buf[2 * PAGE_BYTES + 8:start].tobytes():
            raise NvmLayoutError("NVM format record: checksum mismatch")
        return blob

    def open(self) -> dict[str, dict]:
        """After ``seal`` over a buffer written before: roll back the round in
        progress at the kill, and return the groups of the last commit."""
        fields = self.read_header(self.buf)
        if fields is None:
            raise NvmLayoutError("NVM has no valid header")
        if fields[-1] != self.layout_digest:
            raise NvmLayoutError("NVM layout differs from the firmware's (tables declared differently)")
        gen = fields[1]
        self._undo_round(gen + 1)
        in_doubt = self._intents(gen + 1)
        groups, pos = {}, 2
        for g in GROUPS:
            slot, n, dig = fields[pos:pos + 3]
            pos += 3
            off = self.group_off[g] + slot * self.group_bytes
            blob = self.buf[off:off + n].tobytes()
            if _digest(blob) != dig:
                raise NvmLayoutError(f"NVM group {g!r}: checksum mismatch under a valid header (invariant violated)")
            self.group_slot[g] = slot
            self.group_blobs[g] = blob
            groups[g] = blob
        # the undone round's write-ahead records go on into the next round (the
        # other log area) first: in doubt until the caller's next commit
        self._intent_n = 0
        for rec in in_doubt:
            self._log_intent(gen + 2, *rec)
        self.in_doubt = in_doubt
        # a new header at once: the undone round's entries (tagged gen + 1) are
        # stale from now on, never applied again after a second kill
        self._write_header(gen + 1, self.group_slot, groups)
        self.gen, self.bytes_written = gen + 1, 0
        for obj in self._objects.values():
            reload = getattr(obj, "reload", None)
            if reload is not None:
                reload()
        return {g: self._unpickle(groups[g]) for g in GROUPS}

    def _undo_round(self, rnd: int) -> None:
        entries = []
        for idx in range(self.undo_cap):
            off = self.undo_off + idx * UNDO_ENTRY_BYTES
            raw = self.buf[off:off + UNDO_ENTRY_BYTES].tobytes()
            r, i, block, dig = _UNDO.unpack(raw[:_UNDO.size])
            old = raw[_UNDO.size:]
            if r != rnd or i != idx or _digest8(struct.pack("<QII", r, i, block), old) != dig:
                break
            entries.append((block, old))
        for block, old in reversed(entries):
            self.buf[block * BLOCK_BYTES:(block + 1) * BLOCK_BYTES] = np.frombuffer(old, dtype=np.uint8)

    # ------------------------------------------------------------ images (tests, the sans-I/O harness)
    def image(self) -> tuple[int, dict[int, bytes]]:
        """A sparse copy of the buffer: its size and its non-zero pages."""
        n = len(self.buf) // PAGE_BYTES * PAGE_BYTES
        pages = self.buf[:n].reshape(-1, PAGE_BYTES)
        hot = np.flatnonzero(pages.any(axis=1))
        out = {int(p): pages[p].tobytes() for p in hot}
        if n < len(self.buf):
            out[n // PAGE_BYTES] = self.buf[n:].tobytes()
        return len(self.buf), out

    @staticmethod
    def from_image(image: tuple[int, dict[int, bytes]]) -> np.ndarray:
        size, pages = image
        buf = np.zeros(size, dtype=np.uint8)
        for p, data in pages.items():
            buf[p * PAGE_BYTES:p * PAGE_BYTES + len(data)] = np.frombuffer(data, dtype=np.uint8)
        return buf


# ====================================================================== a pool of segments for variable data

class SegmentPool:
    """Fixed-size data segments (the DKC cache's slots, patent 1105/954) in
    NVM: a chain per value (``link``), ``used`` flags; the free list is
    volatile, rebuilt from ``used`` at restart. A segment free at the last
    commit is written without undo (``fresh``); one freed in this round is
    held back (``held``) until the commit, and is reused before it only
    when no fresh segment is left, then undo-logged like any table, so a
    rollback of the round finds the data it held. Reusing a just-freed
    segment at once cost an undo entry per 64-byte block of every value
    (half of a campaign seed's CPU). Which segment a value gets depends on
    when commits fall, so the two backends may place values differently;
    how many fit does not (fresh and held together), and nothing outside
    the NVM sees a segment number."""

    def __init__(self, space: NvmSpace, name: str, seg_bytes: int, segs: int):
        self.space, self.name, self.seg_bytes, self.segs = space, name, seg_bytes, segs
        space.plan(f"{name}.used", np.uint8, segs)
        space.plan(f"{name}.link", np.int32, segs)
        space.plan(f"{name}.data", np.uint8, (segs, seg_bytes), undo=False)
        space.register(name, self)

    def attach(self) -> None:
        self.used = self.space.arr(f"{self.name}.used")
        self.link = self.space.arr(f"{self.name}.link")
        self.data = self.space.arr(f"{self.name}.data")
        #: where the three tables start in the NVM (``touch_bytes`` of one item, as ``touch`` computes it)
        self._used_off = self.space.offset_of(self.used)
        self._link_off = self.space.offset_of(self.link)
        self._data_off = self.space.offset_of(self.data)
        self.reload()

    def reload(self) -> None:
        self.free = [int(s) for s in np.flatnonzero(self.used == 0)[::-1]]   # pop() gives the lowest
        #: segments freed in this round (not fresh: the last commit's values may
        #: still need their bytes), in the order freed
        self.held: list[int] = []

    def __reduce__(self):
        return _loading_object, (self.name,)

    def segments_for(self, nbytes: int) -> int:
        return max(1, -(-nbytes // self.seg_bytes))

    def can_hold(self, nbytes: int) -> bool:
        return len(self.free) + len(self.held) >= self.segments_for(nbytes)

    def put(self, data: bytes) -> int:
        """Store ``data``; return its first segment."""
        n = self.segments_for(len(data))
        free, held = self.free, self.held
        if len(free) + len(held) < n:
            raise NvmFull(f"NVM pool {self.name} full ({self.segs} segments of {self.seg_bytes} bytes)")
        sb, touch_bytes = self.seg_bytes, self.space.touch_bytes
        n_fresh = min(n, len(free))   # segments from free are fresh, from held not
        segs = [free.pop() for _ in range(n_fresh)] + [held.pop() for _ in range(n - n_fresh)]
        mv = memoryview(data)
        link_step = self.link.itemsize
        for k, s in enumerate(segs):
            chunk = mv[k * sb:(k + 1) * sb]
            fresh = k < n_fresh
            touch_bytes(self._data_off + s * sb, len(chunk), fresh)
            self.data[s, :len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            touch_bytes(self._link_off + s * link_step, link_step, fresh)   # touch(self.link, s, 1, fresh)
            self.link[s] = segs[k + 1] if k + 1 < n else -1
        for s in segs:
            touch_bytes(self._used_off + s, 1)   # touch(self.used, s): one uint8
            self.used[s] = 1
        return segs[0]

    def get(self, first: int, nbytes: int) -> bytes:
        parts, s, left = [], first, nbytes
        while left > 0:
            take = min(left, self.seg_bytes)
            parts.append(self.data[s, :take].tobytes())
            left -= take
            s = int(self.link[s])
        return b"".join(parts)

    def release(self, first: int) -> None:
        s = first
        while s >= 0:
            self.space.touch_bytes(self._used_off + s, 1)   # touch(self.used, s): one uint8
            self.used[s] = 0
            self.held.append(s)
            s = int(self.link[s])

    def after_commit(self) -> None:
        """The round's freed segments are fresh from now on."""
        self.free.extend(self.held)
        self.held = []


# ====================================================================== a persistent mapping

_MAP_DTYPE = np.dtype([("used", "u1"), ("k0", "<i8"), ("k1", "<i8"), ("order", "<i8"),
                       ("seg", "<i4"), ("nbytes", "<i8")])


class BlobMap:
    DTYPE = None  # set below

    """A fixed-capacity mapping in NVM: one record per key (a key is one or
    two ints, through ``encode_key``/``decode_key``), the value's bytes in a
    ``SegmentPool`` (``dumps``/``loads`` turn values to bytes). Insertion
    order is kept (a dict's), volatile index rebuilt at restart. A value
    changed after it was stored must be stored again (``m[k] = v``)."""

    def __init__(self, space: NvmSpace, name: str, capacity: int, pool: SegmentPool,
                 encode_key: Callable, decode_key: Callable, dumps: Callable = bytes, loads: Callable = bytes,
                 plan: bool = True):
        """``plan``: declare the table (before ``seal``); else attach to the
        table of that name (after ``seal``)."""
        self.space, self.name, self.pool = space, name, pool
        self.encode_key, self.decode_key, self.dumps, self.loads = encode_key, decode_key, dumps, loads
        if plan:
            space.plan(name, _MAP_DTYPE, capacity)
        else:
            self.attach()
        self.capacity = len(self.rec) if not plan else capacity

    def attach(self) -> None:
        self.rec = self.space.arr(self.name)
        self.reload()

    def _fields(self) -> None:
        """Views of the record table's columns, made once (each ``rec[name]`` makes a new view)."""
        rec = self.rec
        self._f_used, self._f_k0, self._f_k1 = rec["used"], rec["k0"], rec["k1"]
        self._f_order, self._f_seg, self._f_nbytes = rec["order"], rec["seg"], rec["nbytes"]

    def reload(self) -> None:
        self._fields()
        used = np.flatnonzero(self.rec["used"])
        order = self.rec["order"][used]
        self.index: dict = {}
        self.values: dict = {}
        for slot in used[np.argsort(order, kind="stable")]:
            r = self.rec[slot]
            key = self.decode_key(int(r["k0"]), int(r["k1"]))
            self.index[key] = int(slot)
        self.free = [int(s) for s in np.flatnonzero(self.rec["used"] == 0)[::-1]]
        self.next_order = int(self.rec["order"][used].max()) + 1 if len(used) else 0

    def __getstate__(self):
        """Pickled with the firmware's groups: the layout only (the records are
        an NVM table, the index is rebuilt from them)."""
        state = dict(self.__dict__)
        for k in ("index", "values", "free", "next_order", "_f_used", "_f_k0", "_f_k1", "_f_order", "_f_seg",
                  "_f_nbytes"):
            state.pop(k, None)
        state["rec"] = self.space.name_of(self.rec)
        return state

    def __setstate__(self, state):
        for k, v in state.items():   # setattr interns the names, as pickle does: same bytes when pickled again
            setattr(self, k, v)
        self.rec = self.space.arr(self.rec)
        self.reload()

    def __len__(self) -> int:
        return len(self.index)

    def __bool__(self) -> bool:
        return bool(self.index)

    def __contains__(self, key) -> bool:
        return key in self.index

    def __iter__(self):
        return iter(list(self.index))

    def keys(self):
        return list(self.index)

    def items(self):
        return [(k, self[k]) for k in list(self.index)]

    def __getitem__(self, key):
        if key in self.values:
            return self.values[key]
        slot = self.index[key]
        value = self.loads(self.pool.get(int(self._f_seg[slot]), int(self._f_nbytes[slot])))
        self.values[key] = value
        return value

    def get(self, key, default=None):
        return self[key] if key in self.index else default

    def can_take(self, nbytes: int) -> bool:
        return len(self.free) > 0 and self.pool.can_hold(nbytes)

    def __setitem__(self, key, value) -> None:
        raw = self.dumps(value)
        k0, k1 = self.encode_key(key)
        if key in self.index:
            slot = self.index[key]
            self.pool.release(int(self._f_seg[slot]))
        else:
            if not self.free:
                raise NvmFull(f"NVM table {self.name} full ({self.capacity} records)")
            slot = self.free.pop()
            self.index[key] = slot
            self.space.touch(self.rec, slot)
            self._f_order[slot] = self.next_order
            self.next_order += 1
            self._f_k0[slot], self._f_k1[slot] = k0, k1
        seg = self.pool.put(raw)
        self.space.touch(self.rec, slot)
        self._f_seg[slot], self._f_nbytes[slot], self._f_used[slot] = seg, len(raw), 1
        self.values[key] = value

    def __delitem__(self, key) -> None:
        slot = self.index.pop(key)
        self.values.pop(key, None)
        self.pool.release(int(self._f_seg[slot]))
        self.space.touch(self.rec, slot)
        self._f_used[slot] = 0
        self.free.append(slot)

    def pop(self, key, *default):
        if key not in self.index:
            if default:
                return default[0]
            raise KeyError(key)
        value = self[key]
        del self[key]
        return value

    def setdefault_get(self, key, default):
        return self[key] if key in self.index else default

    def clear(self) -> None:
        for key in list(self.index):
            del self[key]



BlobMap.DTYPE = _MAP_DTYPE


def int_key(key) -> tuple[int, int]:
    return int(key), 0


def int_key_back(k0: int, k1: int) -> int:
    return k0


def pair_key(key) -> tuple[int, int]:
    return int(key[0]), int(key[1])


def pair_key_back(k0: int, k1: int) -> tuple[int, int]:
    return k0, k1


class IntRecords:
    """A fixed-capacity list of int tuples in an NVM table (the rollback's
    list of saved tracks, 516): extended once, read by position."""

    def __init__(self, space, table: np.ndarray):
        self.space, self.table, self.n = space, table, 0

    def __getstate__(self):
        return {"space": self.space, "table": self.space.name_of(self.table), "n": self.n}

    def __setstate__(self, state):
        self.space, self.n = state["space"], state["n"]
        self.table = self.space.arr(state["table"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return tuple(int(v) for v in self.table[i])

    def __iter__(self):
        return (self[i] for i in range(self.n))

    def clear(self) -> "IntRecords":
        self.n = 0
        return self

    def __iadd__(self, items) -> "IntRecords":
        items = [tuple(x) for x in items]
        if self.n + len(items) > len(self.table):
            raise NvmFull(f"NVM list of {len(self.table)} records full")
        if items:
            self.space.touch(self.table, self.n, len(items))
            self.table[self.n:self.n + len(items)] = np.asarray(items, dtype=self.table.dtype)
            self.n += len(items)
        return self
