"""Tests for controllers.devices.disk.model and controllers.operator.disk_replay.

What they prove:
- the HP 97560 preset's seek times are Ruemmler & Wilkes' two-part formula
  (3.24 + 0.400*sqrt(d) ms for d < 383, 8.00 + 0.008*d ms otherwise), and the
  ST41601N preset uses DiskSim's extracted seek table (exact at its points,
  linear between them) and has DiskSim's block count;
- LBA -> (cylinder, head, sector) follows the zones, spares and skews, stays
  in bounds and never maps two LBAs to the same physical sector;
- rotational position comes from virtual time: over a seeded random workload
  the mean rotational latency is half a revolution (within 1%);
- an access's breakdown adds up to its completion time, the model is
  deterministic, and read-ahead turns a sequential read into a cache hit;
- replaying DiskSim's ST41601N validation trace (real measured access times)
  gives a Ruemmler-Wilkes demerit <= 0.5 ms (skipped when ../shared is absent);
- the --out CSV is enough to recompute that demerit;
- bad input (missing file, unknown preset, malformed trace line) gives exit
  code 2 and one stderr line naming the file and line, no traceback.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.operator import disk_replay
from controllers.devices.disk.model import PRESETS, DiskModel, DiskParams

NS_PER_MS = 1_000_000
ST_TRACE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "disksim" / "st41601n.trace"


def need_trace() -> Path:
    if not ST_TRACE.is_file():
        pytest.skip(f"DiskSim validation trace not found at {ST_TRACE} (shared/ not beside the repo)")
    return ST_TRACE


# ------------------------------------------------------------------ seeks
@pytest.mark.parametrize("distance", [1, 4, 50, 200, 382, 383, 500, 1000, 1961])
def test_hp97560_seek_matches_ruemmler_wilkes(distance):
    disk = DiskModel(PRESETS["hp97560"])
    if distance < 383:
        expect_ms = 3.24 + 0.400 * math.sqrt(distance)
    else:
        expect_ms = 8.00 + 0.008 * distance
    assert disk.seek_time_ns(distance) == round(expect_ms * NS_PER_MS)


def test_zero_seek_is_free_and_bad_distance_rejected():
    disk = DiskModel(PRESETS["hp97560"])
    assert disk.seek_time_ns(0) == 0
    with pytest.raises(ValueError, match="seek distance"):
        disk.seek_time_ns(1962)


def test_st41601n_seek_table_points_and_interpolation():
    disk = DiskModel(PRESETS["st41601n"])
    assert disk.seek_time_ns(1) == round(1.6256274 * NS_PER_MS)
    assert disk.seek_time_ns(2097) == round(21.7775625 * NS_PER_MS)
    # 11 lies halfway between the table's 10 and 12
    assert disk.seek_time_ns(11) == round((2.90909 + 3.0213707) / 2 * NS_PER_MS)
    times = [disk.seek_time_ns(d) for d in range(1, 2098)]
    assert times == sorted(times)          # the extracted table is monotone


# ------------------------------------------------------------------ geometry
def test_lba_count_and_zone_boundaries():
    st = DiskModel(PRESETS["st41601n"])
    assert st.lba_count == 2676846                  # DiskSim "Block count"
    per_cyl0 = 17 * 85 - 6                          # 6 spares per cylinder
    assert st.geometry(per_cyl0 - 1)[0] == 0
    assert st.geometry(per_cyl0)[:2] == (1, 0)
    zone1_first = 626 * per_cyl0
    assert st.geometry(zone1_first) == (626, 0, 0)
    hp = DiskModel(PRESETS["hp97560"])
    assert hp.lba_count == 1962 * 19 * 72
    assert hp.geometry(72) == (0, 1, 0)
    assert hp.geometry(72 * 19) == (1, 0, 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2676846 - 2))
def test_geometry_in_bounds_and_injective(lba):
    disk = _ST_DISK
    c, h, s = disk.geometry(lba)
    c2, h2, s2 = disk.geometry(lba + 1)
    assert 0 <= c < 2098 and 0 <= h < 17 and 0 <= s < 85
    assert (c2, h2, s2) > (c, h, s)                 # strictly increasing physical order


_ST_DISK = DiskModel(PRESETS["st41601n"])


# ------------------------------------------------------------------ rotation
def test_mean_rotational_latency_is_half_a_revolution():
    params = PRESETS["hp97560"]
    disk = DiskModel(params)
    rng = random.Random(1234)
    now_ns, total_ns, n = 0, 0, 20_000
    for _ in range(n):
        res = disk.access(now_ns, rng.choice("RW"), rng.randrange(disk.lba_count - 8), 8)
        total_ns += res.rotation_ns
        now_ns = res.done_ns + rng.randrange(0, 30 * NS_PER_MS)
    mean_ns = total_ns / n
    half_rev_ns = params.revolution_ns / 2
    assert abs(mean_ns - half_rev_ns) / half_rev_ns < 0.01


def test_rotation_depends_on_virtual_time():
    disk_a, disk_b = DiskModel(PRESETS["hp97560"]), DiskModel(PRESETS["hp97560"])
    quarter_rev_ns = int(PRESETS["hp97560"].revolution_ns / 4)
    a = disk_a.access(0, "R", 5000, 1)
    b = disk_b.access(quarter_rev_ns, "R", 5000, 1)
    assert a.seek_ns == b.seek_ns
    assert a.rotation_ns != b.rotation_ns


# ------------------------------------------------------------------ access
def test_breakdown_adds_up_and_is_deterministic():
    rng = random.Random(7)
    reqs = [(rng.choice("RW"), rng.randrange(2_600_000), rng.randrange(1, 64)) for _ in range(300)]

    def run():
        disk, now_ns, out = DiskModel(PRESETS["st41601n"]), 0, []
        for op, lba, n in reqs:
            r = disk.access(now_ns, op, lba, n)
            assert r.done_ns == (r.start_ns + r.overhead_ns + r.seek_ns + r.rotation_ns
                                 + r.transfer_ns)
            assert min(r.overhead_ns, r.seek_ns, r.rotation_ns, r.transfer_ns) >= 0
            assert isinstance(r.done_ns, int) and r.done_ns > now_ns
            out.append(r)
            now_ns = r.done_ns + 3 * NS_PER_MS
        return out

    assert run() == run()


def test_sequential_read_hits_read_ahead_cache():
    disk = DiskModel(PRESETS["st41601n"])
    first = disk.access(0, "R", 100_000, 8)
    assert first.cache_hit == "miss"
    second = disk.access(first.done_ns + 5 * NS_PER_MS, "R", 100_008, 8)
    assert second.cache_hit == "hit"
    assert second.seek_ns == second.rotation_ns == 0
    p = PRESETS["st41601n"]
    expect_ns = round((p.read_hit_overhead_ms + p.read_completion_ms) * NS_PER_MS) + 8 * p.bus_ns_per_sector
    assert second.done_ns - second.start_ns == expect_ns


def test_request_issued_while_busy_queues():
    disk = DiskModel(PRESETS["hp97560"])
    a = disk.access(0, "R", 0, 1)
    b = disk.access(1, "R", 500_000, 1)
    assert b.start_ns == a.done_ns and b.queue_ns == a.done_ns - 1


@pytest.mark.parametrize("args, msg", [
    ((0, "X", 0, 1), "op"),
    ((0, "R", -1, 1), "outside"),
    ((0, "R", 0, 0), "sectors"),
    ((0, "R", 2676846, 1), "outside"),
    ((-5, "R", 0, 1), "now_ns"),
])
def test_access_rejects_bad_arguments(args, msg):
    with pytest.raises(ValueError, match=msg):
        DiskModel(PRESETS["st41601n"]).access(*args)


def test_params_validated():
    with pytest.raises(ValueError, match="zones"):
        DiskParams(name="bad", cylinders=10, surfaces=2, zones=((0, 10, 10),), rpm=5400)
    with pytest.raises(ValueError, match="zones"):     # overlapping (gaps are spare cylinders)
        DiskParams(name="bad", cylinders=10, surfaces=2, zones=((0, 5, 10), (5, 9, 8)), rpm=5400)
    with pytest.raises(ValueError, match="rpm"):
        DiskParams(name="bad", cylinders=10, surfaces=2, zones=((0, 9, 10),), rpm=0)


# ------------------------------------------------------------------ demerit
def test_demerit_of_identical_and_shifted_samples():
    rng = np.random.default_rng(3)
    x_us = rng.uniform(1000, 30000, 5000)
    assert disk_replay.demerit_ms(x_us, x_us) == 0.0
    assert disk_replay.demerit_ms(x_us + 1000.0, x_us) == pytest.approx(1.0)


# ------------------------------------------------------------------ replay
@pytest.fixture(scope="module")
def st_replay():
    return disk_replay.replay("st41601n", need_trace())


def test_st41601n_replay_demerit(st_replay):
    assert len(st_replay.measured_us) == 9999
    constant_model_ms = float(np.std(st_replay.measured_us)) / 1000   # ~8.36 ms
    assert st_replay.demerit_ms <= 0.5 < constant_model_ms
    stats = st_replay.stats_ms()
    assert stats["measured"]["mean"] == pytest.approx(14.62, abs=0.01)
    assert abs(stats["simulated"]["mean"] - stats["measured"]["mean"]) < 0.5


def test_cli_out_csv_recomputes_demerit(st_replay, tmp_path, capsys):
    out = tmp_path / "replay.csv"
    assert disk_replay.main(["--disk", "st41601n", str(need_trace()), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "demerit" in printed and "measured" in printed
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in rows] == list(range(9999))
    measured = [float(r["measured_us"]) for r in rows]
    simulated = [float(r["simulated_us"]) for r in rows]
    assert disk_replay.demerit_ms(simulated, measured) == pytest.approx(st_replay.demerit_ms, abs=1e-4)


def _run_cli(argv, capsys):
    rc = disk_replay.main(argv)
    err = capsys.readouterr().err
    return rc, err


def test_cli_malformed_line_names_file_and_line(tmp_path, capsys):
    trace = tmp_path / "bad.trace"
    trace.write_text("R Hit 100 8 12000.0 5000.0\nR Hit 200 eight 12000.0 5000.0\n")
    rc, err = _run_cli(["--disk", "st41601n", str(trace)], capsys)
    assert rc == 2
    assert f"{trace}:2" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("line", ["Q Hit 1 1 1 1", "R Hit 1 1 1", "R Maybe 1 1 1 1",
                                  "R Hit 1 0 1 1", "R Hit 99999999 8 1 1"])
def test_cli_rejects_each_kind_of_bad_line(tmp_path, capsys, line):
    trace = tmp_path / "bad.trace"
    trace.write_text(f"W Hit 0 1 1000 1000\n{line}\n")
    rc, err = _run_cli(["--disk", "st41601n", str(trace)], capsys)
    assert rc == 2 and f"{trace}:2" in err


def test_cli_missing_file_and_unknown_preset(tmp_path, capsys):
    missing = tmp_path / "nope.trace"
    rc, err = _run_cli(["--disk", "st41601n", str(missing)], capsys)
    assert rc == 2 and str(missing) in err
    trace = tmp_path / "ok.trace"
    trace.write_text("R Hit 100 8 12000.0 5000.0\n")
    rc, err = _run_cli(["--disk", "nosuchdisk", str(trace)], capsys)
    assert rc == 2 and "nosuchdisk" in err
    rc, err = _run_cli([], capsys)
    assert rc == 2 and err.count("\n") == 1


def test_small_trace_replays(tmp_path, capsys):
    trace = tmp_path / "small.trace"
    trace.write_text("R Hit 100 8 12000.0 5000.0\nR Hit 108 8 1300.0 5000.0\n"
                     "W Miss 900000 4 15000.0 0\n")
    res = disk_replay.replay("st41601n", trace)
    assert len(res.simulated_us) == 3 and res.cache_hits == 1
    assert disk_replay.main(["--disk", "hp97560", str(trace)]) == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("RW"), st.integers(0, 3000), st.integers(1, 40),
                          st.integers(0, 20 * NS_PER_MS)), min_size=1, max_size=40))
def test_multi_segment_cache_stays_consistent(reqs):
    params = replace(PRESETS["st41601n"], cache_segments=3, cache_segment_sectors=64)
    disk, now_ns = DiskModel(params), 0
    for op, lba, n, gap_ns in reqs:
        r = disk.access(now_ns, op, lba, n)
        assert r.done_ns > now_ns and r.cache_hit in ("hit", "partial", "miss")
        assert len(disk._segments) <= 3
        assert all(s.end - s.start <= 64 for s in disk._segments)
        now_ns = r.done_ns + gap_ns
