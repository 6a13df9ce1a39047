"""The compiled stamp kernels (``make_payload``, ``read_stamps``) give exactly
what the vectorised numpy definitions give (``make_words``,
``scan_image`` via ``read_stamps_reference``): the same payload bytes, and
the same verdict per sector on clean, torn, bit-flipped, zeroed, foreign
and misplaced sectors, for several seeds."""

from __future__ import annotations

import numpy as np
import pytest

from controllers.formats import stamp

SEEDS = [1, 7, 2024]


@pytest.mark.parametrize("seed", SEEDS)
def test_payload_kernel_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    for _ in range(100):
        ldev, lba = int(rng.integers(0, 1 << 32)), int(rng.integers(0, 1 << 40))
        n, wid = int(rng.integers(1, 64)), int(rng.integers(1, stamp.MAX_WRITE_ID))
        assert stamp.make_payload(ldev, lba, n, wid) == stamp.make_words(ldev, lba, n, wid).tobytes(), \
            f"seed={seed}: {ldev} {lba} {n} {wid}"


def _damaged(rng, n_sectors: int) -> bytes:
    parts = []
    for s in range(n_sectors):
        kind = rng.integers(0, 6)
        wid = int(rng.integers(1, 1 << 40))
        sector = bytearray(stamp.make_payload(3, 100 + s, 1, wid))
        if kind == 1:                       # a flipped bit anywhere
            i = int(rng.integers(0, 512))
            sector[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:                     # never written
            sector = bytearray(512)
        elif kind == 3:                     # foreign bytes
            sector = bytearray(rng.bytes(512))
        elif kind == 4:                     # torn: half of another write
            sector[256:] = stamp.make_payload(3, 100 + s, 1, wid + 1)[256:]
        elif kind == 5:                     # a sector of another place
            sector = bytearray(stamp.make_payload(3, 100 + s + 1, 1, wid))
        parts.append(bytes(sector))
    return b"".join(parts)


@pytest.mark.parametrize("seed", SEEDS)
def test_read_kernel_equals_scan_image(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        image = _damaged(rng, int(rng.integers(1, 40)))
        for ldev, first in ((3, 100), (4, 100), (3, 101)):
            got = stamp.read_stamps(np.frombuffer(image, dtype=np.uint8), ldev, first)
            want = stamp.read_stamps_reference(image, ldev, first)
            assert (got == want).all(), f"seed={seed}: {got} != {want}"
    clean = stamp.make_payload(3, 100, 8, 42)
    assert stamp.read_stamps(clean, 3, 100).tolist() == [42] * 8
    assert stamp.read_stamps(bytes(4096), 3, 100).tolist() == [0] * 8
    flipped = bytearray(clean)
    flipped[512 + 300] ^= 4
    assert stamp.read_stamps(bytes(flipped), 3, 100).tolist() == [42, -1] + [42] * 6


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_stamps_counts_what_scan_image_calls_corrupt(seed):
    """``bad_stamps`` (the host's check of every read) counts exactly the
    sectors the numpy definition calls corrupt, from bytes and from the
    other buffer types, and refuses a size that is not whole sectors."""
    rng = np.random.default_rng(seed)
    for _ in range(50):
        image = _damaged(rng, int(rng.integers(1, 40)))
        for ldev, first in ((3, 100), (4, 100), (3, 101)):
            want = int((stamp.read_stamps_reference(image, ldev, first) < 0).sum())
            assert stamp.bad_stamps(image, ldev, first) == want, f"seed={seed}"
            assert stamp.bad_stamps(bytearray(image), ldev, first) == want, f"seed={seed}"
            assert stamp.bad_stamps(np.frombuffer(image, dtype=np.uint8), ldev, first) == want, f"seed={seed}"
    clean = stamp.make_payload(3, 100, 8, 42)
    assert stamp.bad_stamps(clean, 3, 100) == 0
    assert stamp.bad_stamps(clean, 3, 101) == 8
    flipped = bytearray(clean)
    flipped[512 + 300] ^= 4
    assert stamp.bad_stamps(bytes(flipped), 3, 100) == 1
    with pytest.raises(ValueError):
        stamp.bad_stamps(clean[:700], 3, 100)
