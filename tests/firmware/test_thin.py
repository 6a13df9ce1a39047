"""Thin RAID5 media (firmware/raid/layout.py, a thin map per group): a thin
group returns the same bytes as a thick one for every track, through
writes, partial writes, a failed member, a rebuild onto a spare that held
garbage (punched first, as the DKC does) and discards; a never-written
track reads zeros with no disk transfer and is never reported lost; the
allocation hook is asked before a stripe is stored and can refuse it with
nothing stored; and parity stays right on every used stripe."""
import numpy as np
import pytest

from firmware.raid.layout import DataLossError, RaidArray, RaidGroup, RaidLayout

TB = 4096
SEEDS = [1, 2, 3]


def _pair(n_data=3, tracks_per_disk=32, on_allocate=None):
    layout = RaidLayout(n_data, TB, tracks_per_disk)
    thick = RaidGroup(layout, [np.zeros(layout.member_bytes, np.uint8) for _ in range(n_data + 1)])
    thin_map = np.zeros(RaidGroup.thin_map_bytes(layout), np.uint8)
    thin = RaidGroup(layout, [np.zeros(layout.member_bytes, np.uint8) for _ in range(n_data + 1)],
                     thin_map, on_allocate)
    return layout, thick, thin, thin_map


def _same(layout, a, b):
    for lt in range(layout.capacity_tracks):
        try:
            x = a.read_track(lt)
        except DataLossError:
            x = None
        try:
            y = b.read_track(lt)
        except DataLossError:
            y = None
        if x is None or y is None:
            # thin says zeros for a never-written track, thick says lost: only then may they differ
            assert y is not None and not b.is_written(lt) and not y.any(), lt
            continue
        assert np.array_equal(x, y), lt


@pytest.mark.parametrize("seed", SEEDS)
def test_thin_group_reads_like_thick(seed):
    rng = np.random.default_rng(seed)
    layout, thick, thin, _ = _pair()
    written = set()
    for _ in range(60):
        lt = int(rng.integers(layout.capacity_tracks))
        data = rng.integers(0, 256, TB, dtype=np.uint8)
        thick.write_track(lt, data)
        thin.write_track(lt, data)
        written.add(lt)
    assert sorted(thin.written_tracks().tolist()) == sorted(written), f"seed {seed}"
    assert thin.verify_parity() == [] and thick.verify_parity() == []
    _same(layout, thick, thin)
    never = next(lt for lt in range(layout.capacity_tracks) if lt not in written)
    assert thin.plan_read(never) == [] and not thin.read_track(never).any()
    # a failed member: degraded reads and writes agree, unwritten tracks are not lost
    for g in (thick, thin):
        g.fail_disk(1)
    for _ in range(20):
        lt = int(rng.integers(layout.capacity_tracks))
        data = rng.integers(0, 256, TB, dtype=np.uint8)
        thick.write_track(lt, data)
        thin.write_track(lt, data)
    _same(layout, thick, thin)
    assert set(thin.lost_tracks()) == set()
    # rebuild onto spares full of garbage: the thin one is punched first (the DKC's job)
    spare_thick = rng.integers(0, 256, layout.member_bytes, dtype=np.uint8)
    spare_thin = np.zeros(layout.member_bytes, np.uint8)   # punched: reads zeros
    thick.start_rebuild(spare_thick)
    thin.start_rebuild(spare_thin)
    while thin.rebuild_step(5)[0] < layout.n_stripes:
        pass
    while thick.rebuild_step(5)[0] < layout.n_stripes:
        pass
    _same(layout, thick, thin)
    for lt in range(0, layout.capacity_tracks, 7):   # writes after the rebuild keep parity right
        data = rng.integers(0, 256, TB, dtype=np.uint8)
        thick.write_track(lt, data)
        thin.write_track(lt, data)
    assert thin.verify_parity() == [] and thick.verify_parity() == []
    _same(layout, thick, thin)


def test_double_fault_loses_only_written_tracks():
    layout, thick, thin, _ = _pair()
    data = np.full(TB, 7, np.uint8)
    for lt in (0, 1, 2, 9):
        thick.write_track(lt, data)
        thin.write_track(lt, data)
    for g in (thick, thin):
        g.fail_disk(0)
        g.fail_disk(1)
    lost = thin.lost_tracks()
    assert lost and set(lost) <= {0, 1, 2, 9}
    assert set(lost) == set(thick.lost_tracks()) & {0, 1, 2, 9}
    for lt in lost:
        with pytest.raises(DataLossError):
            thin.read_track(lt)
    assert not thin.read_track(5).any()     # never written: zeros, vouched for by the map


def test_discard_reads_zeros_and_keeps_parity():
    layout, thick, thin, _ = _pair()
    arr = RaidArray([thin])
    arr.define_ldev(0, 12)
    arr.define_ldev(1, 12)
    rng = np.random.default_rng(5)
    for t in range(12):
        arr.write_track(0, t, rng.integers(0, 256, TB, dtype=np.uint8))
        arr.write_track(1, t, rng.integers(0, 256, TB, dtype=np.uint8))
    keep = [arr.read_track(1, t).copy() for t in range(12)]
    assert arr.discard(0) == 12
    assert arr.written_tracks(0).size == 0
    assert all(not arr.read_track(0, t).any() for t in range(12))
    assert all(np.array_equal(arr.read_track(1, t), keep[t]) for t in range(12))
    assert thin.verify_parity() == []


def test_allocation_is_asked_first_and_can_refuse():
    asked = []

    class Full(RuntimeError):
        pass

    def allocate(nbytes):
        asked.append(nbytes)
        if len(asked) > 2:
            raise Full("no room")

    layout, _, thin, thin_map = _pair(on_allocate=allocate)
    thin.write_track(0, np.ones(TB, np.uint8))       # new stripe: data + parity track
    thin.write_track(1, np.ones(TB, np.uint8))       # same stripe: data track only
    assert asked == [2 * TB, TB]
    with pytest.raises(Full):
        thin.write_track(30, np.ones(TB, np.uint8))
    assert not thin.is_written(30) and not thin.read_track(30).any()
    assert thin_map.sum() == 3                       # two tracks and one stripe marked, nothing else
