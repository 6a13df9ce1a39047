"""LDEV images that store only what was written (thin media, README "Sizes").

A :class:`SparseImage` is an image of ``n_sectors`` 512-byte sectors of
which only some *segments* (runs of ``seg_sectors`` sectors, e.g. the
tracks a thin LDEV ever stored) are held; every other sector reads zeros,
as a never-written block of a thin-provisioned volume does. A dense image
(bytes) is the special case of one segment covering everything.

Files: :meth:`SparseImage.write_file` writes a sparse file (it seeks over
the holes, so a 16 GiB LDEV with a few written tracks takes a few blocks of
disk), and :func:`read_image_file` reads only a file's data extents
(``SEEK_DATA`` / ``SEEK_HOLE``), so the checker's cost follows what was
written, not the capacity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controllers.formats.stamp import SECTOR_BYTES, WORDS_PER_SECTOR

#: segment of a file read by extents: one 4 KiB filesystem block
FILE_SEG_SECTORS = 4096 // SECTOR_BYTES


@dataclass(frozen=True)
class SparseImage:
    """``n_sectors`` sectors; segment ``segments[i]`` (sectors
    ``segments[i] * seg_sectors`` onwards) holds ``data[i]``; the rest is zeros."""

    n_sectors: int
    seg_sectors: int
    segments: np.ndarray      # int64, sorted, unique
    data: np.ndarray          # uint8 (len(segments), seg_sectors * 512)

    def __post_init__(self):
        seg_bytes = self.seg_sectors * SECTOR_BYTES
        if self.seg_sectors < 1 or self.n_sectors % self.seg_sectors:
            raise ValueError(f"image of {self.n_sectors} sectors cannot be cut in segments of {self.seg_sectors}")
        if self.data.dtype != np.uint8 or self.data.shape != (self.segments.size, seg_bytes):
            raise ValueError(f"segment data: expected uint8 ({self.segments.size}, {seg_bytes}), "
                             f"got {self.data.dtype} {self.data.shape}")
        if self.segments.size and (self.segments[0] < 0 or self.segments[-1] >= self.n_sectors // self.seg_sectors
                                   or np.any(np.diff(self.segments) <= 0)):
            raise ValueError("segments must be sorted, unique and inside the image")

    # -- building -------------------------------------------------------------------------
    @classmethod
    def dense(cls, image) -> "SparseImage":
        """A whole image (bytes, bytearray, memoryview or uint8 array) as one segment."""
        buf = image.view(np.uint8).reshape(-1) if isinstance(image, np.ndarray) else np.frombuffer(image, np.uint8)
        if buf.size % SECTOR_BYTES:
            raise ValueError(f"image size {buf.size} B is not a multiple of {SECTOR_BYTES} B")
        n = buf.size // SECTOR_BYTES
        if n == 0:
            return cls(0, 1, np.zeros(0, np.int64), np.zeros((0, SECTOR_BYTES), np.uint8))
        return cls(n, n, np.zeros(1, np.int64), buf.reshape(1, -1))

    @classmethod
    def from_tracks(cls, n_tracks: int, track_bytes: int, tracks, data) -> "SparseImage":
        """Tracks ``tracks`` (sorted) of an image of ``n_tracks``, their bytes concatenated in ``data``."""
        seg = np.asarray(tracks, dtype=np.int64).reshape(-1)
        raw = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
        return cls(n_tracks * track_bytes // SECTOR_BYTES, track_bytes // SECTOR_BYTES, seg,
                   raw.reshape(seg.size, track_bytes))

    # -- reading --------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Logical size in bytes."""
        return self.n_sectors * SECTOR_BYTES

    @property
    def stored_bytes(self) -> int:
        """Bytes actually held (the written part)."""
        return int(self.data.size)

    def sector_lbas(self) -> np.ndarray:
        """The sector number of every held sector, in order (int64)."""
        first = self.segments * self.seg_sectors
        return (first[:, None] + np.arange(self.seg_sectors, dtype=np.int64)[None, :]).reshape(-1)

    def words(self) -> np.ndarray:
        """Held sectors as (n, 64) little-endian uint64 (a view when aligned)."""
        flat = self.data.reshape(-1)
        if flat.ctypes.data % 8:
            flat = flat.copy()
        return flat.view("<u8").reshape(-1, WORDS_PER_SECTOR)

    def to_bytes(self) -> bytes:
        """The whole image, holes as zeros (O(capacity): for small images and tests)."""
        if self.segments.size == 1 and self.seg_sectors == self.n_sectors:
            return self.data.tobytes()
        out = np.zeros((self.n_sectors // self.seg_sectors, self.seg_sectors * SECTOR_BYTES), np.uint8)
        out[self.segments] = self.data
        return out.tobytes()

    def write_file(self, path: str | Path) -> int:
        """Write a sparse file of the image's size: held segments written,
        holes left as holes (runs of adjacent segments in one write). Returns
        the bytes written."""
        seg_bytes = self.seg_sectors * SECTOR_BYTES
        written = 0
        with open(path, "wb") as f:
            f.truncate(self.nbytes)
            if self.segments.size:
                cuts = np.flatnonzero(np.diff(self.segments) != 1) + 1
                for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [self.segments.size]])):
                    f.seek(int(self.segments[lo]) * seg_bytes)
                    f.write(self.data[lo:hi].tobytes())
                    written += (hi - lo) * seg_bytes
        return written


def as_image(image) -> SparseImage:
    """A SparseImage as is; anything else (bytes, arrays) as a dense one."""
    return image if isinstance(image, SparseImage) else SparseImage.dense(image)


def read_image_file(path: str | Path) -> SparseImage:
    """Read a (possibly sparse) image file by its data extents only; a
    filesystem without SEEK_DATA reads it whole. ValueError naming the file
    when its size is not a whole number of sectors."""
    path = Path(path)
    size = path.stat().st_size
    if size % SECTOR_BYTES:
        raise ValueError(f"{path}: size {size} B is not a multiple of {SECTOR_BYTES} B")
    n = size // SECTOR_BYTES
    seg = FILE_SEG_SECTORS if n % FILE_SEG_SECTORS == 0 else 1
    seg_bytes = seg * SECTOR_BYTES
    segs, chunks = [], []
    with open(path, "rb") as f:
        fd = f.fileno()
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
                end = os.lseek(fd, start, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == 6:   # ENXIO: no data past pos
                    break
                start, end = pos, size      # no SEEK_DATA here: read the rest whole
            start -= start % seg_bytes
            end = min(size, -(-end // seg_bytes) * seg_bytes)
            f.seek(start)
            block = np.frombuffer(f.read(end - start), np.uint8).reshape(-1, seg_bytes)
            keep = block.any(axis=1)              # whole-zero blocks are holes too
            segs.append(np.flatnonzero(keep) + start // seg_bytes)
            chunks.append(block[keep])
            pos = end
    if not segs:
        return SparseImage(n, seg, np.zeros(0, np.int64), np.zeros((0, seg_bytes), np.uint8))
    return SparseImage(n, seg, np.concatenate(segs).astype(np.int64), np.concatenate(chunks))
