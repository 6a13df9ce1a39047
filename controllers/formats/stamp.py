"""Host-side data stamping (DESIGN section 5).

Every 512-byte sector a workload writes starts with a 24-byte header,
little-endian::

    offset 0   4 bytes  b"EMUW"
    offset 4   u32      ldev
    offset 8   u64      lba       (sector number within the LDEV)
    offset 16  u64      write id  (>= 1; 0 means "never written")

and the remaining 488 bytes (61 u64 words) are filler from a counter-based
generator keyed by ``(write id, lba)``: word ``j`` is
``mix64(key + (j + 1) * GOLDEN)`` with ``key = mix64(write_id ^ mix64(lba + GOLDEN))``
and ``mix64`` the SplitMix64 finaliser. Being counter-based, the filler of
any sector can be regenerated from its header alone, for all sectors of an
image at once (numpy, no per-sector Python loop). A torn sector (half old,
half new), a sector written at the wrong place (header lba/ldev disagree with
where it sits) or any flipped bit in the filler is reported as *corrupt*,
never as a write id.

A sector without the magic that is all zero is *unwritten*; a sector without
the magic that is not all zero is *corrupt* (foreign or torn data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from firmware.protocol import SECTOR_BYTES

HEADER_BYTES = 24
WORDS_PER_SECTOR = SECTOR_BYTES // 8          # 64 u64 words
FILLER_WORDS = WORDS_PER_SECTOR - HEADER_BYTES // 8   # 61
MAGIC = b"EMUW"
MAGIC_U32 = int.from_bytes(MAGIC, "little")
MAX_LDEV = (1 << 32) - 1
MAX_WRITE_ID = (1 << 63) - 1                 # fits int64 arrays downstream

# Per-sector states returned by scan_image / verify_sector.
UNWRITTEN = 0
OK = 1
CORRUPT = 2
STATE_NAMES = {UNWRITTEN: "unwritten", OK: "ok", CORRUPT: "corrupt"}

_U64 = np.dtype("<u8")
_SCAN_CHUNK_SECTORS = 1 << 14
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_J = (np.arange(1, FILLER_WORDS + 1, dtype=np.uint64) * _GOLDEN)  # wraps mod 2**64


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _filler(write_ids: np.ndarray, lbas: np.ndarray) -> np.ndarray:
    """Filler words, shape (n, 61) uint64, for sectors keyed by (write id, lba)."""
    w = np.asarray(write_ids, dtype=np.uint64).reshape(-1)
    lba = np.asarray(lbas, dtype=np.uint64).reshape(-1)
    key = _mix64(w ^ _mix64(lba + _GOLDEN))
    return _mix64(key[:, None] + _J[None, :])


def _check_args(ldev: int, lba: int, sectors: int, write_id: int) -> None:
    if not 0 <= ldev <= MAX_LDEV:
        raise ValueError(f"ldev must be 0..{MAX_LDEV}, got {ldev}")
    if lba < 0:
        raise ValueError(f"lba must be >= 0, got {lba}")
    if sectors < 1:
        raise ValueError(f"sectors must be >= 1, got {sectors}")
    if not 1 <= write_id <= MAX_WRITE_ID:
        raise ValueError(f"write_id must be 1..2**63-1, got {write_id}")


def make_words(ldev: int, lba: int, sectors: int, write_id: int) -> np.ndarray:
    """The payload as a (sectors, 64) little-endian uint64 array."""
    _check_args(ldev, lba, sectors, write_id)
    words = np.empty((sectors, WORDS_PER_SECTOR), dtype=_U64)
    lbas = np.arange(lba, lba + sectors, dtype=np.uint64)
    words[:, 0] = np.uint64(MAGIC_U32 | (ldev << 32))
    words[:, 1] = lbas
    words[:, 2] = np.uint64(write_id)
    words[:, 3:] = _filler(np.full(sectors, write_id, dtype=np.uint64), lbas)
    return words


def make_payload(ldev: int, lba: int, sectors: int, write_id: int) -> bytes:
    """Stamped payload of one host write: ``sectors * 512`` bytes (the same
    bytes as ``make_words``, built by one compiled loop: a host writes a
    few sectors per I/O, where a dozen numpy calls cost more than the work)."""
    _check_args(ldev, lba, sectors, write_id)
    words = np.empty((sectors, WORDS_PER_SECTOR), dtype=_U64)
    _stamp_kernel(words, np.uint64(MAGIC_U32 | (ldev << 32)), np.uint64(lba), np.uint64(write_id))
    return words.tobytes()


@njit(cache=True, nogil=True)
def _mix64_scalar(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _filler_ok(words, s, wid, lba) -> bool:
    """True when sector ``s``'s 61 filler words are those of (wid, lba)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    key = _mix64_scalar(wid ^ _mix64_scalar(lba + golden))
    for j in range(FILLER_WORDS):
        if words[s, 3 + j] != _mix64_scalar(key + np.uint64(j + 1) * golden):
            return False
    return True


@njit(cache=True, nogil=True)
def _stamp_kernel(words, head, lba0, wid) -> None:
    golden = np.uint64(0x9E3779B97F4A7C15)
    for s in range(words.shape[0]):
        lba = lba0 + np.uint64(s)
        words[s, 0] = head
        words[s, 1] = lba
        words[s, 2] = wid
        key = _mix64_scalar(wid ^ _mix64_scalar(lba + golden))
        for j in range(FILLER_WORDS):
            words[s, 3 + j] = _mix64_scalar(key + np.uint64(j + 1) * golden)


@njit(cache=True, nogil=True)
def _sector_id(words, s, ldev, lba) -> np.int64:
    """Sector ``s`` (at ``lba`` of ``ldev``): its write id, 0 unwritten, -1 corrupt
    (the rules of ``scan_image``)."""
    if (words[s, 0] & np.uint64(0xFFFFFFFF)) != np.uint64(MAGIC_U32):
        for j in range(WORDS_PER_SECTOR):
            if words[s, j] != np.uint64(0):
                return np.int64(-1)
        return np.int64(0)
    wid = words[s, 2]
    if ((words[s, 0] >> np.uint64(32)) != ldev or words[s, 1] != lba or wid < np.uint64(1)
            or wid > np.uint64(MAX_WRITE_ID) or not _filler_ok(words, s, wid, lba)):
        return np.int64(-1)
    return np.int64(wid)


@njit(cache=True, nogil=True)
def _read_ids_kernel(words, ldev, first_lba, out) -> None:
    """``read_stamps`` sector by sector."""
    for s in range(words.shape[0]):
        out[s] = _sector_id(words, s, ldev, first_lba + np.uint64(s))


@njit(cache=True, nogil=True)
def _count_bad_kernel(words, ldev, first_lba) -> int:
    """``bad_stamps``: the sectors ``_read_ids_kernel`` would call corrupt."""
    bad = 0
    for s in range(words.shape[0]):
        if _sector_id(words, s, ldev, first_lba + np.uint64(s)) < 0:
            bad += 1
    return bad


def _as_words(image) -> np.ndarray:
    """View an image (bytes, bytearray, memoryview or uint8 array) as (n, 64) u64."""
    if isinstance(image, np.ndarray):
        buf = np.ascontiguousarray(image).view(np.uint8).reshape(-1)
    else:
        buf = np.frombuffer(image, dtype=np.uint8)
    if buf.size % SECTOR_BYTES:
        raise ValueError(f"image size {buf.size} B is not a multiple of {SECTOR_BYTES} B")
    return buf.view(_U64).reshape(-1, WORDS_PER_SECTOR)


@dataclass(frozen=True)
class ImageScan:
    """Per-sector result of scanning an LDEV image.

    ``state[s]`` is UNWRITTEN, OK or CORRUPT; ``write_ids[s]`` is the stamp's
    write id where state is OK and 0 elsewhere (int64).
    """

    state: np.ndarray
    write_ids: np.ndarray

    @property
    def corrupt_sectors(self) -> np.ndarray:
        return np.flatnonzero(self.state == CORRUPT)


def scan_image(image, ldev: int, first_lba: int = 0) -> ImageScan:
    """Classify every sector of ``image`` (sector 0 is ``first_lba`` of ``ldev``)."""
    words = _as_words(image)
    return scan_sectors(words, np.arange(first_lba, first_lba + words.shape[0], dtype=np.int64), ldev)


def scan_sectors(words: np.ndarray, lbas: np.ndarray, ldev: int) -> ImageScan:
    """Classify sectors ``words`` ((n, 64) uint64) that sit at ``lbas`` of
    ``ldev``: one compiled pass, the filler regenerated in registers (no
    temporaries; about 2 GB/s a core), so a thin image's written sectors
    are checked without touching the rest."""
    if words.ndim != 2 or words.shape[1] != WORDS_PER_SECTOR or words.dtype != _U64:
        raise ValueError(f"sector words must be (n, {WORDS_PER_SECTOR}) uint64, got {words.dtype} {words.shape}")
    lb = np.ascontiguousarray(lbas, dtype=np.int64).reshape(-1)
    if lb.size != words.shape[0]:
        raise ValueError(f"{words.shape[0]} sectors but {lb.size} lbas")
    if not 0 <= ldev <= MAX_LDEV:
        raise ValueError(f"ldev must be 0..{MAX_LDEV}, got {ldev}")
    state = np.empty(lb.size, dtype=np.int8)
    write_ids = np.zeros(lb.size, dtype=np.int64)
    _k_scan(np.ascontiguousarray(words), lb.view(np.uint64), np.uint64(ldev), state, write_ids)
    return ImageScan(state=state, write_ids=write_ids)


@njit(cache=True, nogil=True)
def _k_mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _k_scan(words, lbas, ldev, state, write_ids):
    """Per sector: UNWRITTEN (no magic, all zero), OK (magic, ldev, lba, id
    range and all 61 filler words right: write_ids gets the id), else CORRUPT."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    magic = np.uint64(MAGIC_U32)
    low32 = np.uint64(0xFFFFFFFF)
    max_id = np.uint64(MAX_WRITE_ID)
    for i in range(words.shape[0]):
        w0 = words[i, 0]
        if (w0 & low32) != magic:
            nonzero = False
            for j in range(WORDS_PER_SECTOR):
                if words[i, j] != 0:
                    nonzero = True
                    break
            state[i] = CORRUPT if nonzero else UNWRITTEN
            continue
        lba = lbas[i]
        wid = words[i, 2]
        good = (w0 >> np.uint64(32)) == ldev and words[i, 1] == lba and wid >= np.uint64(1) and wid <= max_id
        if good:
            key = _k_mix64(wid ^ _k_mix64(lba + golden))
            step = key
            for j in range(FILLER_WORDS):
                step += golden
                if words[i, 3 + j] != _k_mix64(step):
                    good = False
                    break
        if good:
            state[i] = OK
            write_ids[i] = np.int64(wid)
        else:
            state[i] = CORRUPT


def read_stamps(image, ldev: int, first_lba: int = 0) -> np.ndarray:
    """Write id per sector (int64): 0 = never written, -1 = corrupt/torn/foreign.
    The rules of ``scan_image`` in one compiled pass (a host checks every
    read it gets, a few sectors each; ``read_stamps_reference`` is the
    numpy version the tests hold it to)."""
    words = _as_words(image)
    out = np.empty(words.shape[0], dtype=np.int64)
    if ldev < 0 or first_lba < 0:
        raise ValueError(f"ldev and first_lba must be >= 0, got {ldev}, {first_lba}")
    _read_ids_kernel(words, np.uint64(ldev), np.uint64(first_lba), out)
    return out


def bad_stamps(image, ldev: int, first_lba: int = 0) -> int:
    """How many sectors ``read_stamps`` would report -1 (corrupt, torn or
    foreign): the same compiled rules, counted in the kernel, without the
    per-sector array (a host checks every read it gets)."""
    if ldev < 0 or first_lba < 0:
        raise ValueError(f"ldev and first_lba must be >= 0, got {ldev}, {first_lba}")
    if type(image) is bytes and len(image) % SECTOR_BYTES == 0:
        words = np.frombuffer(image, dtype=_U64).reshape(-1, WORDS_PER_SECTOR)
    else:
        words = _as_words(image)
    return _count_bad_kernel(words, np.uint64(ldev), np.uint64(first_lba))


def read_stamps_reference(image, ldev: int, first_lba: int = 0) -> np.ndarray:
    """``read_stamps`` through ``scan_image`` (vectorised numpy)."""
    scan = scan_image(image, ldev, first_lba)
    out = scan.write_ids.copy()
    out[scan.state == CORRUPT] = -1
    return out


@dataclass(frozen=True)
class SectorStatus:
    """Verdict on one sector: ``state`` in {"unwritten", "ok", "corrupt"}."""

    state: str
    write_id: int = 0
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def verify_sector(sector, ldev: int, lba: int, expected_write_id: int | None = None) -> SectorStatus:
    """Check one 512-byte sector that should sit at ``(ldev, lba)``.

    Checks magic, ldev, lba, write id range and every filler word. With
    ``expected_write_id`` a valid stamp of another write is reported corrupt
    too (reason says which id was found).
    """
    words = _as_words(sector)
    if words.shape[0] != 1:
        raise ValueError(f"verify_sector needs exactly {SECTOR_BYTES} bytes, got {words.size * 8}")
    w = words[0]
    if (int(w[0]) & 0xFFFFFFFF) != MAGIC_U32:
        if not w.any():
            return SectorStatus("unwritten")
        return SectorStatus("corrupt", reason="no EMUW magic and not all zero")
    got_ldev, got_lba, wid = int(w[0]) >> 32, int(w[1]), int(w[2])
    if got_ldev != ldev or got_lba != lba:
        return SectorStatus("corrupt", wid, f"stamp says ldev {got_ldev} lba {got_lba}, sector is ldev {ldev} lba {lba}")
    if not 1 <= wid <= MAX_WRITE_ID:
        return SectorStatus("corrupt", wid, f"write id {wid} out of range")
    bad = np.flatnonzero(w[3:] != _filler(np.array([wid]), np.array([lba]))[0])
    if bad.size:
        return SectorStatus("corrupt", wid, f"filler differs from write {wid} at byte {HEADER_BYTES + 8 * int(bad[0])} (torn or corrupted)")
    if expected_write_id is not None and wid != expected_write_id:
        return SectorStatus("corrupt", wid, f"holds write {wid}, expected {expected_write_id}")
    return SectorStatus("ok", wid)


def image_from_ids(write_ids, ldev: int, first_lba: int = 0) -> bytes:
    """An image whose sector ``s`` holds the stamp of ``write_ids[s]`` (0 = all-zero sector).

    Same bytes as applying every write's :func:`make_payload` in order; for
    building large test or reference images in one vectorised step.
    """
    ids = np.asarray(write_ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0):
        raise ValueError("write ids must be >= 0 (0 = unwritten)")
    words = np.zeros((ids.size, WORDS_PER_SECTOR), dtype=_U64)
    idx = np.flatnonzero(ids)
    lbas = np.arange(first_lba, first_lba + ids.size, dtype=np.uint64)[idx]
    words[idx, 0] = np.uint64(MAGIC_U32 | (ldev << 32))
    words[idx, 1] = lbas
    words[idx, 2] = ids[idx].astype(np.uint64)
    words[idx, 3:] = _filler(ids[idx].astype(np.uint64), lbas)
    return words.tobytes()


def warm_up() -> None:
    """Compile (or load from numba's cache) the stamp kernels in this process,
    for the argument types a host uses; call before forking actor processes
    so that no child compiles them again."""
    data = make_payload(0, 0, 1, 1)
    read_stamps(np.frombuffer(data, dtype=np.uint8), 0, 0)
    bad_stamps(data, 0, 0)
