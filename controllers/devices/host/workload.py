"""fio-style host workloads (``workload start NAME SPEC``).

A spec is ``key=value`` tokens separated by blanks (a leading ``--`` is
allowed), or a mapping with the same keys::

    rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=7

Keys (defaults in brackets):

* ``rw`` [randwrite]: read, write, randread, randwrite, randrw, rw
  (``readwrite``): sequential or random, reads, writes or a mix;
* ``rwmixread`` [50]: percent reads in a mix (randrw / rw);
* ``bs`` [4KiB]: block size, a multiple of 512 B (``4KiB``, ``4k``, ``8192``;
  ``k``/``K``/``KiB`` = 1024, ``KB`` = 1000 as in :mod:`emu.units`);
* ``iodepth`` [1]: outstanding I/Os the host keeps;
* ``rate_iops`` (alias ``rate``) [0 = unlimited]: issue rate, ``1000`` or ``1000iops``;
* ``ldevs`` (alias ``ldev``) [0]: ``0-3``, ``0,2,5``, ``0-3,8`` or a list;
* ``runtime`` [none = until stopped]: ``10s``, ``500ms``, bare number = seconds;
* ``zipf`` (alias ``zipf_theta``, or fio's ``random_distribution=zipf:THETA``)
  [0 = uniform]: skew of random offsets over blocks, theta >= 0;
* ``seed`` [0]: seed of the I/O stream (``Workload.make_rng``).

Offsets are aligned to ``bs``. The block space is the concatenation of the
LDEVs' blocks. Random offsets draw a popularity rank (uniform or Zipf) and
scatter it with a fixed bijection ``rank * A mod N`` so hot blocks are spread
over all LDEVs. Sequential offsets walk the block space and wrap.

Zipf without huge tables: ranks 1..min(N, 65536) use an exact precomputed
CDF; the tail (ranks above 65536) uses the continuous power law on
``[65536.5, N + 0.5]`` (midpoint rule, inverse CDF in closed form) with the
tail's probability mass taken from the same integral. Memory is bounded
(512 KiB) whatever N; the head is exact and the tail's relative error is
below 1e-9 per rank for the thetas used in practice.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from firmware.protocol import SECTOR_BYTES

RW_MODES = ("read", "write", "randread", "randwrite", "randrw", "rw")
_RW_ALIASES = {"readwrite": "rw"}
_KEYS = ("rw", "rwmixread", "bs", "iodepth", "rate_iops", "ldevs", "runtime", "zipf", "seed")
_KEY_ALIASES = {"rate": "rate_iops", "ldev": "ldevs", "zipf_theta": "zipf", "random_distribution": "zipf",
                "readwrite": "rw"}
_SIZE_BYTES = {"": 1, "B": 1, "k": 1 << 10, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20,
               "G": 1 << 30, "GiB": 1 << 30, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3,
               "sectors": SECTOR_BYTES}
_TIME_NS = {"": 1_000_000_000, "ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "min": 60_000_000_000, "h": 3_600_000_000_000}
_NUM = r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*"
ZIPF_HEAD_RANKS = 65536


def _parse_size(text: str) -> int:
    """Bytes from ``4KiB``, ``4k``, ``8192``, ``8sectors``; ValueError says what was expected."""
    m = re.fullmatch(_NUM, str(text))
    if not m or m.group(2) not in _SIZE_BYTES:
        raise ValueError(f"expected a size like 4KiB, 4k or 8192, got {text!r}")
    value = float(m.group(1)) * _SIZE_BYTES[m.group(2)]
    if value != int(value):
        raise ValueError(f"expected a whole number of bytes, got {text!r}")
    return int(value)


def _parse_time_ns(text: str) -> int:
    """Nanoseconds from ``10s``, ``500ms``, ``2m``; a bare number is seconds (fio)."""
    m = re.fullmatch(_NUM, str(text))
    if not m or m.group(2) not in _TIME_NS:
        raise ValueError(f"expected a duration like 10s, 500ms or 2m, got {text!r}")
    return int(round(float(m.group(1)) * _TIME_NS[m.group(2)]))


def _parse_ldevs(value) -> tuple[int, ...]:
    """``0-3``, ``0,2,5``, ``0-3,8``, an int, or a list/range of ints."""
    if isinstance(value, (list, tuple, range)):
        out = [int(v) for v in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        out = [value]
    else:
        out = []
        for part in str(value).split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m:
                raise ValueError(f"expected LDEV numbers like 0-3 or 0,2,5, got {value!r}")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise ValueError(f"expected an increasing range like 0-3, got {part.strip()!r}")
            out.extend(range(lo, hi + 1))
    if not out or any(v < 0 for v in out):
        raise ValueError(f"expected one or more LDEV numbers >= 0, got {value!r}")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class WorkloadSpec:
    """A parsed workload spec; every field carries its unit."""

    rw: str = "randwrite"
    rwmixread: int = 50
    bs_bytes: int = 4096
    iodepth: int = 1
    rate_iops: float = 0.0
    ldevs: tuple[int, ...] = (0,)
    runtime_ns: int | None = None
    zipf_theta: float = 0.0
    seed: int = 0

    @property
    def bs_sectors(self) -> int:
        return self.bs_bytes // SECTOR_BYTES

    @property
    def random(self) -> bool:
        return self.rw.startswith("rand")

    @property
    def read_fraction(self) -> float:
        return {"read": 1.0, "randread": 1.0, "write": 0.0, "randwrite": 0.0}.get(self.rw, self.rwmixread / 100)

    @property
    def interarrival_ns(self) -> int | None:
        """Gap between issues at ``rate_iops``; None when unlimited."""
        return None if self.rate_iops <= 0 else max(1, round(1e9 / self.rate_iops))


def _tokens(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in text.split():
        tok = tok[2:] if tok.startswith("--") else tok
        key, eq, value = tok.partition("=")
        if not eq or not key or not value:
            raise ValueError(f"workload spec: expected key=value, got {tok!r}")
        out[key] = value
    return out


def parse_spec(spec: str | Mapping[str, object]) -> WorkloadSpec:
    """Parse a spec string or mapping; ValueError names the bad key and what was expected."""
    items = _tokens(spec) if isinstance(spec, str) else dict(spec)
    fields: dict[str, object] = {}
    for raw_key, value in items.items():
        key = _KEY_ALIASES.get(raw_key, raw_key)
        if key not in _KEYS:
            raise ValueError(f"workload spec: unknown key {raw_key!r} (expected one of {', '.join(_KEYS)})")
        try:
            fields.update(_parse_value(key, value))
        except ValueError as exc:
            raise ValueError(f"workload spec: key {raw_key!r}: {exc}") from None
    return WorkloadSpec(**fields)


def _parse_value(key: str, value) -> dict[str, object]:
    text = str(value).strip()
    if key == "rw":
        mode = _RW_ALIASES.get(text, text)
        if mode not in RW_MODES:
            raise ValueError(f"expected one of {', '.join(RW_MODES)} (mix with rwmixread=N), got {text!r}")
        return {"rw": mode}
    if key == "rwmixread":
        return {"rwmixread": _int_in(text, 0, 100, "a percentage 0..100")}
    if key == "bs":
        bs = _parse_size(text)
        if bs <= 0 or bs % SECTOR_BYTES:
            raise ValueError(f"expected a positive multiple of 512 bytes like 4KiB, got {text!r}")
        return {"bs_bytes": bs}
    if key == "iodepth":
        return {"iodepth": _int_in(text, 1, 1 << 20, "an integer >= 1")}
    if key == "rate_iops":
        m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?)\s*(?:iops|IOPS)?", text)
        if not m:
            raise ValueError(f"expected I/Os per second like 1000 or 1000iops (0 = unlimited), got {text!r}")
        return {"rate_iops": float(m.group(1))}
    if key == "ldevs":
        return {"ldevs": _parse_ldevs(value)}
    if key == "runtime":
        return {"runtime_ns": _parse_time_ns(text)}
    if key == "zipf":
        text = text[5:] if text.startswith("zipf:") else text
        if text in ("random", "uniform"):
            return {"zipf_theta": 0.0}
        try:
            theta = float(text)
        except ValueError:
            raise ValueError(f"expected a Zipf theta >= 0 like 0.8 (or zipf:0.8), got {text!r}") from None
        if not theta >= 0 or math.isinf(theta):
            raise ValueError(f"expected a Zipf theta >= 0, got {text!r}")
        return {"zipf_theta": theta}
    if key == "seed":
        return {"seed": _int_in(text, 0, (1 << 64) - 1, "an integer 0..2**64-1")}
    raise AssertionError(key)  # pragma: no cover


def _int_in(text: str, lo: int, hi: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"expected {what}, got {text!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"expected {what}, got {text!r}")
    return v


class ZipfSampler:
    """Ranks 0..n-1 with P(rank k) proportional to (k+1)**-theta (theta 0 = uniform).

    Exact CDF over the first ``ZIPF_HEAD_RANKS`` ranks, closed-form continuous
    tail beyond (see module docstring); memory bounded whatever ``n``.
    """

    def __init__(self, n: int, theta: float, head_ranks: int = ZIPF_HEAD_RANKS):
        if n < 1:
            raise ValueError(f"need at least one block, got {n}")
        if theta < 0:
            raise ValueError(f"zipf theta must be >= 0, got {theta}")
        self.n, self.theta = n, float(theta)
        self.head = min(n, head_ranks)
        weights = np.arange(1, self.head + 1, dtype=np.float64) ** -self.theta
        self._cum_head = np.cumsum(weights)
        self._a = self.head + 0.5
        self._tail_mass = self._integral(self._a, n + 0.5) if n > self.head else 0.0
        self.total = float(self._cum_head[-1]) + self._tail_mass

    def _integral(self, a: float, b: float) -> float:
        t = self.theta
        if abs(t - 1.0) < 1e-12:
            return math.log(b / a)
        return (b ** (1 - t) - a ** (1 - t)) / (1 - t)

    def _inverse(self, y: float) -> float:
        """x such that the integral from a to x equals y."""
        t, a = self.theta, self._a
        if abs(t - 1.0) < 1e-12:
            return a * math.exp(y)
        return (a ** (1 - t) + y * (1 - t)) ** (1 / (1 - t))

    def sample(self, rng: np.random.Generator) -> int:
        """One 0-based rank."""
        if self.theta == 0.0:
            return int(rng.integers(self.n))
        y = rng.random() * self.total
        head_sum = float(self._cum_head[-1])
        if y < head_sum:
            return min(int(np.searchsorted(self._cum_head, y, side="right")), self.head - 1)
        x = self._inverse(y - head_sum)
        return min(max(int(math.floor(x + 0.5)), self.head + 1), self.n) - 1

    def probability(self, rank: int) -> float:
        """P(rank) for tests (head exact, tail per the continuous model)."""
        if rank < self.head:
            w = (rank + 1) ** -self.theta
        else:
            w = self._integral(rank + 0.5, rank + 1.5)
        return w / self.total


def _coprime_multiplier(n: int) -> int:
    """A multiplier A with gcd(A, n) == 1 near n * 0.618 (scatters neighbouring ranks)."""
    a = max(1, int(n * 0.6180339887)) | 1
    while math.gcd(a, n) != 1:
        a += 1
    return a


@dataclass
class Workload:
    """I/O stream of one spec over LDEVs of given sizes.

    ``ldev_sectors`` maps LDEV number to its size in 512-byte sectors (or is
    a sequence indexed by LDEV number). ``next_io(rng)`` returns
    ``(op, ldev, lba, sectors)`` with ``op`` "read" or "write"; timing
    (iodepth, rate, runtime) is the caller's job, read from ``spec``.
    """

    spec: WorkloadSpec
    ldev_sectors: Mapping[int, int] | Sequence[int]
    _blocks: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        sizes = dict(enumerate(self.ldev_sectors)) if not isinstance(self.ldev_sectors, Mapping) else dict(self.ldev_sectors)
        bs = self.spec.bs_sectors
        blocks = []
        for ldev in self.spec.ldevs:
            if ldev not in sizes:
                raise ValueError(f"workload spec: key 'ldevs': LDEV {ldev} does not exist "
                                 f"(have {', '.join(map(str, sorted(sizes)))})")
            if sizes[ldev] < bs:
                raise ValueError(f"workload spec: key 'bs': {self.spec.bs_bytes} B is larger than "
                                 f"LDEV {ldev} ({sizes[ldev] * SECTOR_BYTES} B)")
            blocks.append(sizes[ldev] // bs)
        self._blocks = np.asarray(blocks, dtype=np.int64)
        self._first_block = np.concatenate([[0], np.cumsum(self._blocks)[:-1]])
        #: the same as plain ints: one I/O's lookup is a bisect, not numpy calls on a tiny array
        self._first_block_list = [int(b) for b in self._first_block]
        self.total_blocks = int(self._blocks.sum())
        self._zipf = ZipfSampler(self.total_blocks, self.spec.zipf_theta)
        self._mult = _coprime_multiplier(self.total_blocks)
        self._cursor = 0
        #: the spec's derived figures, computed once (the spec is frozen; next_io runs per I/O)
        self._read_fraction = self.spec.read_fraction
        self._random = self.spec.random
        self._bs_sectors = self.spec.bs_sectors

    @classmethod
    def from_string(cls, text: str, ldev_sectors) -> "Workload":
        return cls(parse_spec(text), ldev_sectors)

    def make_rng(self) -> np.random.Generator:
        """The stream's generator: ``Generator(PCG64(seed))``."""
        return np.random.Generator(np.random.PCG64(self.spec.seed))

    def _block_to_place(self, block: int) -> tuple[int, int]:
        firsts = self._first_block_list
        i = bisect.bisect_right(firsts, block) - 1   # np.searchsorted(side="right") on the same values
        return self.spec.ldevs[i], int(block - firsts[i]) * self._bs_sectors

    def next_io(self, rng: np.random.Generator) -> tuple[str, int, int, int]:
        """Next ``(op, ldev, lba, sectors)``."""
        frac = self._read_fraction
        op = "read" if frac >= 1.0 else "write" if frac <= 0.0 else ("read" if rng.random() < frac else "write")
        if self._random:
            zipf = self._zipf
            if zipf.theta == 0.0:   # uniform: ZipfSampler.sample's first case, without the call
                block = int(rng.integers(zipf.n))
            else:
                block = (zipf.sample(rng) * self._mult) % self.total_blocks
        else:
            block = self._cursor
            self._cursor = (self._cursor + 1) % self.total_blocks
        ldev, lba = self._block_to_place(block)
        return op, ldev, lba, self._bs_sectors
