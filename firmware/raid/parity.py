"""RAID5 parity kernels (numba) and their pure-numpy references.

Two families of kernels live here:

* **Block kernels** on plain numpy arrays, many stripes per call
  (a numba call costs about 0.8 us, so hand them thousands of stripes):

  - ``xor_parity(data, parity)``        data (stripes, n_units, unit_bytes)
    -> parity (stripes, unit_bytes) = XOR of the units (full-stripe write);
  - ``rmw_parity(parity, old, new)``    P' = P ^ Dold ^ Dnew in ONE pass;
  - ``reconstruct(stripes, missing, out)`` rebuild member ``missing`` of
    every stripe (stripes, n_members, unit_bytes) from the other members.

  Each has a ``*_numpy`` twin used by the tests and the benchmark.

* **Member kernels** used by :mod:`firmware.raid.layout`: they index a
  ``numba.typed.List`` of whole-disk ``uint64`` views (the member disks of a
  RAID group, in the emulator views of shared-memory media) by
  (disk, stripe), so a degraded read, a rebuild step or a parity recompute is
  one call over many stripes with no copying of the media.

Kernels work on ``uint64`` views whenever the unit size is a multiple of
8 bytes and the buffers are 8-byte aligned (the normal case), and fall back
to ``uint8`` otherwise; results are identical.

Call :func:`warm_up` once before forking child processes so that every kernel
is compiled (and cached on disk, ``cache=True``) in the parent.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba.typed import List as TypedList

__all__ = [
    "xor_parity", "xor_parity_numpy",
    "rmw_parity", "rmw_parity_numpy",
    "reconstruct", "reconstruct_numpy",
    "member_list", "rmw_write", "gather_xor", "gather_xor_to_member", "rmw_write_tracks",
    "warm_up",
]


# ---------------------------------------------------------------------------
# numba kernels (dtype-generic: compiled for uint8 and uint64)
# ---------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _xor_rows_into(out, rows, n_rows, accumulate):
    """out (^)= XOR of rows[0..n_rows-1] (1-D arrays), two rows per pass.

    Whole-row loops (no inner blocking): LLVM vectorises these; blocked loops
    measured 3-4x slower here.
    """
    width = out.shape[0]
    k = 0
    if not accumulate:
        if n_rows == 0:
            out[:] = 0
            return
        if n_rows == 1:
            a = rows[0]
            for j in range(width):
                out[j] = a[j]
            return
        a, b = rows[0], rows[1]
        for j in range(width):
            out[j] = a[j] ^ b[j]
        k = 2
    while k + 1 < n_rows:
        a, b = rows[k], rows[k + 1]
        for j in range(width):
            out[j] ^= a[j] ^ b[j]
        k += 2
    if k < n_rows:
        a = rows[k]
        for j in range(width):
            out[j] ^= a[j]


@njit(cache=True, nogil=True)
def _k_xor_units(data, skip, out):
    """out[s] = XOR of data[s, k] for k != skip (skip < 0: all units)."""
    n_stripes, n_units, _ = data.shape
    sel = np.empty(n_units, np.int64)
    m = 0
    for k in range(n_units):
        if k != skip:
            sel[m] = k
            m += 1
    rows = [data[0, 0] for _ in range(n_units)]
    for s in range(n_stripes):
        for i in range(m):
            rows[i] = data[s, sel[i]]
        _xor_rows_into(out[s], rows, m, False)


@njit(cache=True, nogil=True)
def _k_rmw(parity, old, new):
    """parity ^= old ^ new, one pass, flat 1-D arrays of equal length."""
    for j in range(parity.shape[0]):
        parity[j] ^= old[j] ^ new[j]


@njit(cache=True, nogil=True)
def _k_rmw_write(data, parity, new):
    """One small write in one pass: parity ^= data ^ new; data = new (1-D)."""
    for j in range(data.shape[0]):
        nv = new[j]
        parity[j] ^= data[j] ^ nv
        data[j] = nv


@njit(cache=True, nogil=True)
def _k_gather_xor(disks, stripes, mask, words, out, accumulate):
    """out[i] (^)= XOR over disks d with mask[i, d] of disk d, stripe stripes[i]."""
    n_disks = mask.shape[1]
    rows = [disks[0][0:words] for _ in range(n_disks)]
    for i in range(stripes.shape[0]):
        base = stripes[i] * words
        m = 0
        for d in range(n_disks):
            if mask[i, d]:
                rows[m] = disks[d][base:base + words]
                m += 1
        _xor_rows_into(out[i], rows, m, accumulate)


@njit(cache=True, nogil=True)
def _k_gather_xor_to_member(disks, stripes, mask, dst, words):
    """disks[dst[i]] at stripe stripes[i] = XOR over masked disks (in place)."""
    n_disks = mask.shape[1]
    rows = [disks[0][0:words] for _ in range(n_disks)]
    for i in range(stripes.shape[0]):
        base = stripes[i] * words
        if mask[i, dst[i]]:
            raise RuntimeError("gather_xor_to_member: destination inside the mask: invariant violated")
        m = 0
        for d in range(n_disks):
            if mask[i, d]:
                rows[m] = disks[d][base:base + words]
                m += 1
        _xor_rows_into(disks[dst[i]][base:base + words], rows, m, False)


@njit(cache=True, nogil=True)
def _k_rmw_write_tracks(disks, data_disk, parity_disk, stripes, new, words):
    """Fused small write, one pass per track: P ^= D ^ N; D = N.

    parity_disk[i] < 0 means "no parity to maintain" (parity lost or lent):
    only the data is written.
    """
    for i in range(stripes.shape[0]):
        base = stripes[i] * words
        dd = disks[data_disk[i]][base:base + words]
        nn = new[i]
        if parity_disk[i] >= 0:
            pp = disks[parity_disk[i]][base:base + words]
            for j in range(words):
                nv = nn[j]
                pp[j] ^= dd[j] ^ nv
                dd[j] = nv
        else:
            for j in range(words):
                dd[j] = nn[j]


# ---------------------------------------------------------------------------
# dtype helpers
# ---------------------------------------------------------------------------

_U8 = np.dtype(np.uint8)


def _u64(a: np.ndarray) -> np.ndarray | None:
    """uint64 view of a C-contiguous uint8 array when its last dimension is a
    multiple of 8 and it is 8-byte aligned; None otherwise (use uint8)."""
    if not a.ndim or a.shape[-1] % 8 or not a.flags.c_contiguous:
        return None
    v = a.view(np.uint64)
    return v if v.flags.aligned else None


def _check_u8(name: str, a: np.ndarray, ndim: int) -> None:
    """ValueError unless ``a`` is a C-contiguous uint8 array of ``ndim`` dims."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D uint8 numpy array, got "
                         f"{getattr(a, 'dtype', type(a))} with ndim={getattr(a, 'ndim', '?')}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: array must be C-contiguous")


# ---------------------------------------------------------------------------
# block kernels: public API
# ---------------------------------------------------------------------------

def xor_parity(data: np.ndarray, parity: np.ndarray) -> np.ndarray:
    """Full-stripe parity: parity[s] = XOR of data[s, 0..n_units-1].

    data: uint8 (stripes, n_units, unit_bytes); parity: uint8
    (stripes, unit_bytes), written in place and returned.
    """
    _check_u8("data", data, 3)
    _check_u8("parity", parity, 2)
    if parity.shape != (data.shape[0], data.shape[2]):
        raise ValueError(f"parity shape {parity.shape} does not match data {data.shape}")
    if data.shape[1] < 1:
        raise ValueError("data needs at least one unit per stripe")
    d64, p64 = _u64(data), _u64(parity)
    if d64 is not None and p64 is not None:
        _k_xor_units(d64, -1, p64)
    else:
        _k_xor_units(data, -1, parity)
    return parity


def xor_parity_numpy(data: np.ndarray, parity: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`xor_parity`."""
    np.bitwise_xor.reduce(data, axis=1, out=parity)
    return parity


def rmw_parity(parity: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Fused read-modify-write: parity ^= old ^ new in one pass (in place).

    All three: C-contiguous uint8 arrays of the same shape (e.g. stripes x
    unit_bytes). The checks are kept lean: this is called per small write.
    """
    if not (isinstance(parity, np.ndarray) and isinstance(old, np.ndarray)
            and isinstance(new, np.ndarray)):
        raise ValueError("rmw_parity: parity, old and new must be numpy arrays")
    if parity.dtype != _U8 or old.dtype != _U8 or new.dtype != _U8:
        raise ValueError(f"rmw_parity: expected uint8, got {parity.dtype}/{old.dtype}/{new.dtype}")
    if not (parity.shape == old.shape == new.shape):
        raise ValueError(f"shape mismatch: parity {parity.shape}, old {old.shape}, new {new.shape}")
    if not (parity.flags.c_contiguous and old.flags.c_contiguous and new.flags.c_contiguous):
        raise ValueError("rmw_parity: arrays must be C-contiguous")
    p, o, n = parity.reshape(-1), old.reshape(-1), new.reshape(-1)
    p64, o64, n64 = _u64(p), _u64(o), _u64(n)
    if p64 is not None and o64 is not None and n64 is not None:
        _k_rmw(p64, o64, n64)
    else:
        _k_rmw(p, o, n)
    return parity


def rmw_parity_numpy(parity: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`rmw_parity` (two passes, in place)."""
    np.bitwise_xor(parity, old, out=parity)
    np.bitwise_xor(parity, new, out=parity)
    return parity


def reconstruct(stripes: np.ndarray, missing: int, out: np.ndarray) -> np.ndarray:
    """Rebuild member ``missing`` of every stripe from the other members.

    stripes: uint8 (n_stripes, n_members, unit_bytes) (the content at index
    ``missing`` is ignored); out: uint8 (n_stripes, unit_bytes).
    """
    _check_u8("stripes", stripes, 3)
    _check_u8("out", out, 2)
    if not 0 <= missing < stripes.shape[1]:
        raise ValueError(f"missing={missing} outside 0..{stripes.shape[1] - 1}")
    if out.shape != (stripes.shape[0], stripes.shape[2]):
        raise ValueError(f"out shape {out.shape} does not match stripes {stripes.shape}")
    s64, o64 = _u64(stripes), _u64(out)
    if s64 is not None and o64 is not None:
        _k_xor_units(s64, int(missing), o64)
    else:
        _k_xor_units(stripes, int(missing), out)
    return out


def reconstruct_numpy(stripes: np.ndarray, missing: int, out: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`reconstruct`."""
    keep = [k for k in range(stripes.shape[1]) if k != missing]
    if not keep:
        out[...] = 0
        return out
    np.bitwise_xor.reduce(stripes[:, keep, :], axis=1, out=out)
    return out


# ---------------------------------------------------------------------------
# member kernels: used by firmware.raid.layout
# ---------------------------------------------------------------------------

def member_list(disks: list[np.ndarray]) -> TypedList:
    """A numba typed list of uint64 views of whole member disks (no copy).

    Every disk: 1-D uint8, C-contiguous, 8-byte aligned, length % 8 == 0.
    """
    views = TypedList()
    for i, d in enumerate(disks):
        if not isinstance(d, np.ndarray) or d.dtype != np.uint8 or d.ndim != 1:
            raise ValueError(f"disk {i}: expected a 1-D uint8 numpy array")
        v = _u64(d)
        if v is None:
            raise ValueError(f"disk {i}: must be C-contiguous, 8-byte aligned, length % 8 == 0")
        views.append(v)
    return views


def rmw_write(data: np.ndarray, parity: np.ndarray, new: np.ndarray) -> None:
    """One fused small write on 1-D track views (uint64 or uint8, same length):
    parity ^= data ^ new; data = new. No checks: firmware-internal hot path."""
    _k_rmw_write(data, parity, new)


def gather_xor(disks: TypedList, stripes: np.ndarray, mask: np.ndarray,
               words: int, out: np.ndarray, accumulate: bool = False) -> np.ndarray:
    """out[i] = XOR of disks[d] (stripe stripes[i]) for d with mask[i, d].

    out: uint64 (len(stripes), words); with ``accumulate`` out is XOR-ed into
    rather than overwritten. stripes int64, mask bool (len(stripes), len(disks)).
    """
    _k_gather_xor(disks, stripes, mask, words, out, accumulate)
    return out


def gather_xor_to_member(disks: TypedList, stripes: np.ndarray, mask: np.ndarray,
                         dst: np.ndarray, words: int) -> None:
    """disks[dst[i]] at stripe stripes[i] = XOR of masked disks, in place."""
    _k_gather_xor_to_member(disks, stripes, mask, dst, words)


def rmw_write_tracks(disks: TypedList, data_disk: np.ndarray, parity_disk: np.ndarray,
                     stripes: np.ndarray, new: np.ndarray, words: int) -> None:
    """Fused small writes (one pass per track): P ^= D ^ N; D = N.

    new: uint64 (n_tracks, words); parity_disk[i] = -1 writes data only.
    """
    _k_rmw_write_tracks(disks, data_disk, parity_disk, stripes, new, words)


# ---------------------------------------------------------------------------
# warm-up
# ---------------------------------------------------------------------------

def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only copy (numba compiles read-only inputs separately)."""
    b = a.copy()
    b.flags.writeable = False
    return b


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel signature the
    firmware uses: uint64 and uint8 paths, writeable and read-only inputs
    (host payloads given as ``bytes`` arrive read-only).

    Call once in the parent before forking children.
    """
    for unit_bytes in (64, 13):  # uint64 path and uint8 fallback
        data = np.zeros((2, 3, unit_bytes), np.uint8)
        par = np.zeros((2, unit_bytes), np.uint8)
        for src in (data, _read_only(data)):
            xor_parity(src, par)
            reconstruct(src, 1, par)
        rmw_parity(par, par.copy(), par.copy())
        rmw_parity(par, _read_only(par), _read_only(par))
    words = 8
    disks = member_list([np.zeros(4 * words * 8, np.uint8) for _ in range(3)])
    stripes = np.arange(2, dtype=np.int64)
    mask = np.ones((2, 3), dtype=np.bool_)
    out = np.zeros((2, words), np.uint64)
    gather_xor(disks, stripes, mask, words, out, False)
    gather_xor(disks, stripes, mask, words, out, True)
    mask[:, 2] = False
    gather_xor_to_member(disks, stripes, mask, np.full(2, 2, np.int64), words)
    for new in (out, _read_only(out)):
        rmw_write_tracks(disks, np.zeros(2, np.int64), np.array([1, -1], np.int64),
                         stripes, new, words)
        rmw_write(out[0], out[1], new[0])
