"""What these tests prove about the fio-style workload generator.

* Spec parsing: the documented keys, aliases and units parse to fields with
  units; every bad input raises ValueError naming the bad key and what was
  expected.
* The I/O stream: offsets are bs-aligned and inside the chosen LDEVs, ops
  follow rw/rwmixread, the stream is a pure function of the seed
  (``Generator(PCG64(seed))``), sequential streams walk and wrap.
* Zipf: theta 0 is uniform; the bounded head+tail sampler matches the exact
  Zipf law (probabilities and sampled frequencies), and works for block
  counts far too large for a table.
"""

from __future__ import annotations

import numpy as np
import pytest

from controllers.devices.host.workload import (Workload, WorkloadSpec, ZipfSampler, _parse_size, _parse_time_ns,
                                  parse_spec)

SIZES = {0: 2048, 1: 2048, 2: 4096, 3: 1024}       # sectors


def test_parse_example():
    s = parse_spec("rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=7")
    assert s == WorkloadSpec(rw="randwrite", bs_bytes=4096, iodepth=4, ldevs=(0, 1, 2, 3), seed=7)
    assert s.bs_sectors == 8 and s.random and s.read_fraction == 0.0 and s.interarrival_ns is None


def test_parse_all_keys_and_aliases():
    s = parse_spec("--rw=randrw rwmixread=70 bs=8k iodepth=2 rate=1000iops ldev=0,2-3 runtime=1.5s "
                   "random_distribution=zipf:0.9 seed=1")
    assert (s.rw, s.rwmixread, s.bs_bytes, s.iodepth) == ("randrw", 70, 8192, 2)
    assert s.rate_iops == 1000 and s.interarrival_ns == 1_000_000
    assert s.ldevs == (0, 2, 3) and s.runtime_ns == 1_500_000_000 and s.zipf_theta == 0.9
    m = parse_spec({"rw": "write", "bs": "1MiB", "ldevs": [1, 2], "zipf": 0, "runtime": "500ms"})
    assert m.ldevs == (1, 2) and m.bs_bytes == 1 << 20 and m.runtime_ns == 500_000_000
    assert parse_spec("rw=readwrite").rw == "rw"


@pytest.mark.parametrize("text, key, expected", [
    ("rw=randwrite colour=red", "'colour'", "expected one of"),
    ("bs=4Kx", "'bs'", "size like 4KiB"),
    ("bs=1000", "'bs'", "multiple of 512"),
    ("rw=sideways", "'rw'", "expected one of read, write"),
    ("iodepth=0", "'iodepth'", "integer >= 1"),
    ("ldevs=3-1", "'ldevs'", "increasing range"),
    ("ldevs=a", "'ldevs'", "LDEV numbers"),
    ("zipf=-1", "'zipf'", "theta >= 0"),
    ("rwmixread=101", "'rwmixread'", "percentage"),
    ("runtime=soon", "'runtime'", "duration"),
    ("rate=fast", "'rate'", "I/Os per second"),
    ("seed=-3", "'seed'", "integer 0"),
])
def test_parse_errors_name_key_and_expectation(text, key, expected):
    with pytest.raises(ValueError) as info:
        parse_spec(text)
    assert key in str(info.value) and expected in str(info.value), str(info.value)


def test_parse_token_without_equals():
    with pytest.raises(ValueError, match="expected key=value, got 'randwrite'"):
        parse_spec("randwrite")


def test_unit_helpers():
    assert _parse_size("4KiB") == _parse_size("4k") == _parse_size("4096") == 4096
    assert _parse_size("8sectors") == 4096 and _parse_size("4KB") == 4000
    assert _parse_time_ns("2") == 2_000_000_000 and _parse_time_ns("3us") == 3000
    with pytest.raises(ValueError):
        _parse_size("4 parsecs")


def test_workload_validates_ldevs_against_sizes():
    with pytest.raises(ValueError, match="'ldevs': LDEV 9 does not exist"):
        Workload.from_string("ldevs=0,9", SIZES)
    with pytest.raises(ValueError, match="'bs'.*larger than LDEV 3"):
        Workload.from_string("bs=1MiB ldevs=3", SIZES)


@pytest.mark.parametrize("seed", [0, 7, 12345])
def test_random_stream_aligned_inside_and_deterministic(seed):
    w = Workload.from_string(f"rw=randwrite bs=4KiB ldevs=0-3 seed={seed} zipf=0.8", SIZES)
    rng = w.make_rng()
    ios = [w.next_io(rng) for _ in range(3000)]
    for op, ldev, lba, sectors in ios:
        assert op == "write" and ldev in SIZES and sectors == 8, f"seed={seed}"
        assert lba % 8 == 0 and 0 <= lba and lba + sectors <= SIZES[ldev], f"seed={seed}"
    assert {io[1] for io in ios} == {0, 1, 2, 3}, f"seed={seed}"
    rng2 = w.make_rng()
    assert [w.next_io(rng2) for _ in range(3000)] == ios, f"seed={seed}: not reproducible"
    other = Workload.from_string(f"rw=randwrite bs=4KiB ldevs=0-3 seed={seed + 1} zipf=0.8", SIZES)
    rng3 = other.make_rng()
    assert [other.next_io(rng3) for _ in range(50)] != ios[:50]


def test_mix_and_pure_modes():
    w = Workload.from_string("rw=randrw rwmixread=70 seed=3", SIZES)
    rng = w.make_rng()
    reads = sum(w.next_io(rng)[0] == "read" for _ in range(4000))
    assert 0.66 < reads / 4000 < 0.74
    r = Workload.from_string("rw=randread seed=3", SIZES)
    rng = r.make_rng()
    assert all(r.next_io(rng)[0] == "read" for _ in range(100))


def test_sequential_walks_and_wraps():
    w = Workload.from_string("rw=write bs=512KiB ldevs=0,3", SIZES)   # 2 + 1 blocks
    rng = w.make_rng()
    got = [w.next_io(rng)[1:3] for _ in range(5)]
    assert got == [(0, 0), (0, 1024), (3, 0), (0, 0), (0, 1024)]


def test_zipf_uniform_when_theta_zero():
    z = ZipfSampler(10, 0.0)
    rng = np.random.default_rng(1)
    counts = np.bincount([z.sample(rng) for _ in range(20000)], minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200


@pytest.mark.parametrize("theta", [0.5, 0.99, 1.0, 1.2])
def test_zipf_head_tail_matches_exact_law(theta):
    """With a tiny head (50 ranks) the continuous tail still matches the exact law over 5000 ranks."""
    n = 5000
    exact = np.arange(1, n + 1, dtype=float) ** -theta
    exact /= exact.sum()
    z = ZipfSampler(n, theta, head_ranks=50)
    approx = np.array([z.probability(k) for k in range(n)])
    assert abs(approx.sum() - 1) < 1e-3, f"theta={theta}"
    assert np.max(np.abs(approx - exact) / exact) < 5e-3, f"theta={theta}"
    rng = np.random.default_rng(42)
    samples = np.array([z.sample(rng) for _ in range(20000)])
    assert samples.min() >= 0 and samples.max() < n
    for lo, hi in ((0, 1), (1, 10), (10, 50), (50, 500), (500, n)):
        want = exact[lo:hi].sum()
        got = np.mean((samples >= lo) & (samples < hi))
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / 20000) + 1e-3, f"theta={theta} [{lo},{hi})"


def test_zipf_huge_block_count_is_bounded():
    """10**12 blocks: no table of that size, samples in range, rank 0 is the most popular."""
    z = ZipfSampler(10**12, 1.1)
    assert z._cum_head.size == 65536
    rng = np.random.default_rng(0)
    s = [z.sample(rng) for _ in range(5000)]
    assert 0 <= min(s) and max(s) < 10**12
    assert max(set(s), key=s.count) == 0
