"""RAID5 layout, numba parity kernels, degraded mode, rebuild, parity lending.

What this file proves (for 3D+1P, 5D+1P and 7D+1P, several track sizes and
seeds; every test prints its seed so a failure can be replayed):

* the left-symmetric layout is the documented one and ``map`` is a bijection
  between logical tracks and (stripe, data disk) with the parity elsewhere;
* the numba kernels (full-stripe XOR, fused RMW, reconstruction; uint64 and
  uint8 paths) equal their pure-numpy references for random shapes and
  contents (hypothesis);
* under seeded random small writes, batched writes and full-stripe writes
  over several LDEVs, every LDEV byte equals a reference model (one plain
  bytearray per LDEV) while healthy, after any one member fails (its media is
  overwritten with junk, so nothing can come from it), during degraded writes,
  and during and after an online rebuild onto a spare interleaved with host
  writes; after the rebuild every stripe's parity verifies;
* a second failure never returns wrong bytes: exactly the underivable tracks
  raise DataLossError, all others still read correctly;
* parity tracks lent as a save area hold saved tracks untouched by host
  writes; ``recompute_parity`` restores full RAID5; a member failure while
  parity is lent is a double fault (DataLossError), never wrong data.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from firmware.raid import parity as P
from firmware.raid.layout import DataLossError, RaidArray, RaidGroup, RaidLayout


# ---------------------------------------------------------------------------
# helpers: a small rack of groups + a reference model
# ---------------------------------------------------------------------------

class Rig:
    """RaidArray over ``n_groups`` groups, LDEVs, and a bytearray model per LDEV."""

    def __init__(self, n_data: int, track_bytes: int, tracks_per_disk: int,
                 seed: int, n_groups: int = 2, n_ldevs: int = 3):
        self.rng = np.random.default_rng(seed)
        self.layout = RaidLayout(n_data, track_bytes, tracks_per_disk)
        self.media = [[np.zeros(self.layout.member_bytes, np.uint8) for _ in range(n_data + 1)]
                      for _ in range(n_groups)]
        self.groups = [RaidGroup(self.layout, m) for m in self.media]
        self.array = RaidArray(self.groups)
        self.tb = track_bytes
        self.model: dict[int, bytearray] = {}
        cap = self.layout.capacity_tracks
        ldev = 0
        for g in range(n_groups):  # fill each group with LDEVs of random sizes
            cuts = np.sort(self.rng.choice(np.arange(1, cap), n_ldevs - 1, replace=False))
            for size in np.diff(np.concatenate([[0], cuts, [cap]])):
                self.array.define_ldev(ldev, int(size), group=g)
                self.model[ldev] = bytearray(int(size) * track_bytes)
                ldev += 1
        # reverse map: (group, lt) -> (ldev, track)
        self.owner: dict[tuple[int, int], tuple[int, int]] = {}
        for ld in self.model:
            ext = self.array.extent(ld)
            for t in range(ext.n_tracks):
                self.owner[(ext.group, ext.first_track + t)] = (ld, t)

    def payload(self) -> np.ndarray:
        return self.rng.integers(0, 256, self.tb, dtype=np.uint8)

    def _note(self, group: int, lt: int, data: np.ndarray) -> None:
        ld, t = self.owner[(group, lt)]
        self.model[ld][t * self.tb:(t + 1) * self.tb] = data.tobytes()

    def random_writes(self, n: int, group: int | None = None) -> None:
        """n operations: small writes, batched writes, full-stripe writes."""
        for _ in range(n):
            g = int(self.rng.integers(len(self.groups))) if group is None else group
            grp = self.groups[g]
            kind = self.rng.random()
            if kind < 0.6:
                ld, t = self.owner[(g, int(self.rng.integers(self.layout.capacity_tracks)))]
                data = self.payload()
                self.array.write_track(ld, t, data if self.rng.random() < 0.5 else data.tobytes())
                self._note(g, self.array.locate(ld, t)[1], data)
            elif kind < 0.85:
                lts = self.rng.integers(self.layout.capacity_tracks, size=int(self.rng.integers(1, 6)))
                data = self.rng.integers(0, 256, (lts.size, self.tb), dtype=np.uint8)
                grp.write_tracks(lts, data)
                for lt, row in zip(lts, data):
                    self._note(g, int(lt), row)
            else:
                s = int(self.rng.integers(self.layout.n_stripes))
                data = self.rng.integers(0, 256, (self.layout.n_data, self.tb), dtype=np.uint8)
                grp.write_stripe(s, data if self.rng.random() < 0.5 else data.tobytes())
                for u in range(self.layout.n_data):
                    self._note(g, s * self.layout.n_data + u, data[u])

    def check_all(self, seed: int) -> None:
        """Every LDEV byte equals the model."""
        for ld, ref in self.model.items():
            ext = self.array.extent(ld)
            got = b"".join(self.array.read_track(ld, t).tobytes() for t in range(ext.n_tracks))
            assert got == bytes(ref), f"seed={seed}: LDEV {ld} differs from the model"

    def fail(self, g: int, disk: int) -> None:
        """Fail a member and overwrite its media with junk."""
        self.groups[g].fail_disk(disk)
        self.media[g][disk][:] = self.rng.integers(0, 256, self.layout.member_bytes, dtype=np.uint8)


def test_warm_up_compiles_every_signature_used():
    """After warm_up() (before forking), the RAID workload compiles nothing new.

    Must run first in a fresh process to be meaningful (it is first here); if
    other tests compiled kernels earlier it can only pass vacuously.
    """
    P.warm_up()
    kernels = {n: getattr(P, n) for n in dir(P) if n.startswith("_k_") or n == "_xor_rows_into"}
    before = {n: set(k.signatures) for n, k in kernels.items()}
    rig = Rig(5, 512, 12, seed=11, n_groups=1)
    rig.random_writes(40)
    rig.fail(0, 2)
    rig.random_writes(20)
    rig.check_all(11)
    grp = rig.groups[0]
    grp.start_rebuild(np.zeros(rig.layout.member_bytes, np.uint8))
    while grp.rebuild_step(5)[0] < rig.layout.n_stripes:
        rig.random_writes(3)
    grp.verify_parity()
    grp.lend_parity()
    grp.write_parity_slot(0, bytes(512))
    rig.random_writes(10)
    grp.recompute_parity()
    data = np.zeros((3, 5, 64), np.uint8)
    P.reconstruct(data, 0, P.xor_parity(data, np.zeros((3, 64), np.uint8)))
    P.rmw_parity(data[:, 0].copy(), data[:, 1].copy(), data[:, 2].copy())
    new = {n: set(k.signatures) - before[n] for n, k in kernels.items()}
    assert not any(new.values()), f"compiled after warm_up: {new}"


GEOMETRIES = [(3, 4096, 24), (5, 512, 40), (7, 8192, 16), (5, 65536, 6)]
# more seeds for a sweep: RAID_TEST_SEEDS=200 pytest tests/test_raid.py
SEEDS = list(range(int(os.environ.get("RAID_TEST_SEEDS", "8"))))


# ---------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------

def test_left_symmetric_layout_3d1p():
    """Stripe rows for 3D+1P: parity walks right-to-left, data follows it."""
    lay = RaidLayout(3, 4096, 8)
    rows = []
    for s in range(4):
        row = ["P" if d == lay.parity_disk(s) else f"D{lay.logical_track(s, d)}" for d in range(4)]
        rows.append(row)
    assert rows == [["D0", "D1", "D2", "P"],
                    ["D4", "D5", "P", "D3"],
                    ["D8", "P", "D6", "D7"],
                    ["P", "D9", "D10", "D11"]]
    assert lay.map(5) == (1, 1, 2, 4096)
    assert lay.capacity_tracks == 24


@pytest.mark.parametrize("n_data", [3, 5, 7])
def test_map_is_a_bijection(n_data):
    lay = RaidLayout(n_data, 1024, 3 * (n_data + 1))
    seen = set()
    for lt in range(lay.capacity_tracks):
        s, d, p, off = lay.map(lt)
        assert d != p and off == s * 1024 and lay.logical_track(s, d) == lt
        assert (s, d) not in seen
        seen.add((s, d))
    st_, dd, pd = lay.map_many(np.arange(lay.capacity_tracks))
    assert [tuple(x) for x in zip(st_, dd, pd)] == [lay.map(lt)[:3] for lt in range(lay.capacity_tracks)]


def test_boundary_errors():
    with pytest.raises(ValueError, match="n_data"):
        RaidLayout(0, 4096, 4)
    with pytest.raises(ValueError, match="track_bytes"):
        RaidLayout(3, 100, 4)
    lay = RaidLayout(3, 4096, 4)
    with pytest.raises(ValueError, match="logical track"):
        lay.map(12)
    with pytest.raises(ValueError, match="members"):
        RaidGroup(lay, [np.zeros(lay.member_bytes, np.uint8)] * 3)
    with pytest.raises(ValueError, match="member_bytes"):
        RaidGroup(lay, [np.zeros(lay.member_bytes + 8, np.uint8) for _ in range(4)])
    grp = RaidGroup(lay, [np.zeros(lay.member_bytes, np.uint8) for _ in range(4)])
    with pytest.raises(ValueError, match="track data"):
        grp.write_track(0, b"short")
    with pytest.raises(ValueError, match="no failed disk"):
        grp.start_rebuild(np.zeros(lay.member_bytes, np.uint8))
    with pytest.raises(ValueError, match="only while parity is lent"):
        grp.read_parity_slot(0)
    with pytest.raises(ValueError):
        P.xor_parity(np.zeros((2, 3, 8), np.uint8), np.zeros((3, 8), np.uint8))


# ---------------------------------------------------------------------------
# kernels vs numpy
# ---------------------------------------------------------------------------

_unit = st.one_of(st.integers(1, 300), st.integers(1, 40).map(lambda k: 8 * k))


@settings(max_examples=60, deadline=None)
@given(n_stripes=st.integers(1, 6), n_units=st.integers(1, 9), unit_bytes=_unit,
       seed=st.integers(0, 2**32 - 1), misalign=st.booleans())
def test_kernels_equal_numpy(n_stripes, n_units, unit_bytes, seed, misalign):
    rng = np.random.default_rng(seed)
    shape = (n_stripes, n_units, unit_bytes)
    if misalign:  # an odd start address forces the uint8 fallback
        raw = rng.integers(0, 256, int(np.prod(shape)) + 1, dtype=np.uint8)
        data = raw[1:].reshape(shape)
    else:
        data = rng.integers(0, 256, shape, dtype=np.uint8)
    got, want = np.empty((n_stripes, unit_bytes), np.uint8), np.empty((n_stripes, unit_bytes), np.uint8)
    assert np.array_equal(P.xor_parity(data, got), P.xor_parity_numpy(data, want)), f"seed={seed}"
    missing = int(rng.integers(n_units))
    assert np.array_equal(P.reconstruct(data, missing, got),
                          P.reconstruct_numpy(data, missing, want)), f"seed={seed}"
    # reconstruction inverts parity: rebuild unit `missing` from the others + parity
    full = np.concatenate([data, P.xor_parity_numpy(data, want.copy())[:, None, :]], axis=1)
    assert np.array_equal(P.reconstruct(full, missing, got), data[:, missing]), f"seed={seed}"
    par, old, new = (rng.integers(0, 256, (n_stripes, unit_bytes), dtype=np.uint8) for _ in range(3))
    p1, p2 = par.copy(), par.copy()
    assert np.array_equal(P.rmw_parity(p1, old, new), P.rmw_parity_numpy(p2, old, new)), f"seed={seed}"


@settings(max_examples=40, deadline=None)
@given(n_disks=st.integers(2, 9), words=st.integers(1, 70), n_stripes=st.integers(1, 12),
       n_ops=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_member_kernels_equal_numpy(n_disks, words, n_stripes, n_ops, seed):
    """gather_xor / gather_xor_to_member / rmw_write_tracks vs plain numpy."""
    rng = np.random.default_rng(seed)
    media = [rng.integers(0, 256, n_stripes * words * 8, dtype=np.uint8) for _ in range(n_disks)]
    disks = P.member_list(media)
    ref = [m.view(np.uint64).reshape(n_stripes, words).copy() for m in media]
    stripes = rng.integers(n_stripes, size=n_ops).astype(np.int64)
    mask = rng.random((n_ops, n_disks)) < 0.5
    out = rng.integers(0, 2**63, (n_ops, words), dtype=np.uint64)
    want = out.copy()
    for acc in (True, False):
        for i in range(n_ops):
            rows = [ref[d][stripes[i]] for d in range(n_disks) if mask[i, d]]
            x = np.bitwise_xor.reduce(rows, axis=0) if rows else np.zeros(words, np.uint64)
            want[i] = (want[i] ^ x) if acc else x
        P.gather_xor(disks, stripes, mask, words, out, acc)
        assert np.array_equal(out, want), f"seed={seed} accumulate={acc}"
    # rmw_write_tracks applies in order, parity -1 = data only
    dd = rng.integers(n_disks, size=n_ops).astype(np.int64)
    pd = np.where(rng.random(n_ops) < 0.3, -1, (dd + 1) % n_disks).astype(np.int64)
    pd[pd == dd] = -1
    new = rng.integers(0, 2**63, (n_ops, words), dtype=np.uint64)
    P.rmw_write_tracks(disks, dd, pd, stripes, new, words)
    for i in range(n_ops):
        s_ = stripes[i]
        if pd[i] >= 0:
            ref[pd[i]][s_] ^= ref[dd[i]][s_] ^ new[i]
        ref[dd[i]][s_] = new[i]
    for d in range(n_disks):
        assert np.array_equal(media[d].view(np.uint64).reshape(n_stripes, words), ref[d]), f"seed={seed}"
    # gather_xor_to_member: destination = XOR of the others
    dst = rng.integers(n_disks, size=n_ops).astype(np.int64)
    mask[np.arange(n_ops), dst] = False
    P.gather_xor_to_member(disks, stripes, mask, dst, words)
    for i in range(n_ops):
        rows = [ref[d][stripes[i]] for d in range(n_disks) if mask[i, d]]
        ref[dst[i]][stripes[i]] = np.bitwise_xor.reduce(rows, axis=0) if rows else 0
    for d in range(n_disks):
        assert np.array_equal(media[d].view(np.uint64).reshape(n_stripes, words), ref[d]), f"seed={seed}"


# ---------------------------------------------------------------------------
# degraded mode and rebuild
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_data,track_bytes,tracks_per_disk", GEOMETRIES)
def test_fail_any_disk_then_rebuild(n_data, track_bytes, tracks_per_disk, seed):
    """Fail one member per group, keep writing, rebuild online, verify."""
    print(f"seed={seed} geometry={n_data}D+1P track_bytes={track_bytes}")
    rig = Rig(n_data, track_bytes, tracks_per_disk, seed)
    rig.random_writes(60)
    for g in rig.groups:
        assert g.verify_parity() == [], f"seed={seed}"
    rig.check_all(seed)
    victims = [int(rig.rng.integers(n_data + 1)) for _ in rig.groups]
    for g, disk in enumerate(victims):
        rig.fail(g, disk)
    assert all(g.redundancy_lost for g in rig.groups)
    rig.check_all(seed)                 # degraded reads
    rig.random_writes(40)               # degraded writes
    rig.check_all(seed)
    spares = [np.zeros(rig.layout.member_bytes, np.uint8) for _ in rig.groups]
    for g, grp in enumerate(rig.groups):
        grp.start_rebuild(spares[g])
        assert grp.rebuilding == victims[g]
    step = max(1, tracks_per_disk // 5)
    done = [False] * len(rig.groups)
    while not all(done):
        for g, grp in enumerate(rig.groups):
            if not done[g]:
                d, total = grp.rebuild_step(step)
                done[g] = d == total
        rig.random_writes(4)            # host I/O between steps
        rig.check_all(seed)
    for g, grp in enumerate(rig.groups):
        assert grp.rebuilding is None and not grp.failed_disks and not grp.redundancy_lost
        assert grp.member(victims[g]) is spares[g]
        assert grp.verify_parity() == [], f"seed={seed}: parity bad after rebuild"
    rig.check_all(seed)
    # the rebuilt group survives another single failure
    rig.fail(0, (victims[0] + 1) % (n_data + 1))
    rig.check_all(seed)


@pytest.mark.parametrize("n_data", [3, 5, 7])
def test_every_single_disk_failure(n_data):
    """For each member in turn (on a copy of the media): all bytes still read right."""
    seed = 100 + n_data
    print(f"seed={seed}")
    rig = Rig(n_data, 1024, 2 * (n_data + 1), seed, n_groups=1)
    rig.random_writes(50)
    for disk in range(n_data + 1):
        media = [m.copy() for m in rig.media[0]]
        grp = RaidGroup(rig.layout, media)
        grp.fail_disk(disk)
        media[disk][:] = 0xA5
        for lt in range(rig.layout.capacity_tracks):
            ld, t = rig.owner[(0, lt)]
            assert grp.read_track(lt).tobytes() == bytes(rig.model[ld][t * 1024:(t + 1) * 1024]), \
                f"seed={seed} disk={disk} lt={lt}"
        assert grp.lost_tracks() == []


def test_verify_parity_detects_corruption():
    rig = Rig(3, 512, 12, seed=7, n_groups=1)
    rig.random_writes(30)
    rig.media[0][2][5 * 512 + 17] ^= 0x40
    assert rig.groups[0].verify_parity() == [5]


# ---------------------------------------------------------------------------
# double faults
# ---------------------------------------------------------------------------

def _check_or_loss(rig: Rig, grp_index: int, lost: set[int], seed: int) -> None:
    """Tracks in ``lost`` raise DataLossError; all others equal the model."""
    grp = rig.groups[grp_index]
    for lt in range(rig.layout.capacity_tracks):
        ld, t = rig.owner[(grp_index, lt)]
        if lt in lost:
            with pytest.raises(DataLossError):
                grp.read_track(lt)
        else:
            assert grp.read_track(lt).tobytes() == bytes(rig.model[ld][t * rig.tb:(t + 1) * rig.tb]), \
                f"seed={seed}: lt {lt}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_data", [3, 5, 7])
def test_double_fault_raises(n_data, seed):
    print(f"seed={seed}")
    rig = Rig(n_data, 1024, 2 * (n_data + 1), seed, n_groups=1)
    rig.random_writes(40)
    a, b = rig.rng.choice(n_data + 1, 2, replace=False)
    rig.fail(0, int(a))
    rig.fail(0, int(b))
    lay = rig.layout
    lost = {lt for lt in range(lay.capacity_tracks) if lay.map(lt).data_disk in (a, b)}
    _check_or_loss(rig, 0, lost, seed)
    assert rig.groups[0].lost_tracks() == sorted(lost)
    with pytest.raises(DataLossError):
        rig.groups[0].start_rebuild(np.zeros(lay.member_bytes, np.uint8))
    lt = next(iter(lost))
    with pytest.raises(DataLossError):
        rig.groups[0].write_track(lt, rig.payload())
    _check_or_loss(rig, 0, lost, seed)  # the failed write changed nothing


@pytest.mark.parametrize("seed", SEEDS)
def test_second_failure_during_rebuild(seed):
    print(f"seed={seed}")
    rig = Rig(5, 512, 24, seed, n_groups=1)
    rig.random_writes(40)
    grp, lay = rig.groups[0], rig.layout
    rig.fail(0, 1)
    grp.start_rebuild(np.zeros(lay.member_bytes, np.uint8))
    grp.rebuild_step(10)
    rig.random_writes(10, group=0)
    rig.fail(0, 4)
    # stripes < 10: disk 1 is on the spare, disk 4 is derivable; above: both lost
    lost = {lt for lt in range(lay.capacity_tracks)
            if lay.map(lt).stripe >= 10 and lay.map(lt).data_disk in (1, 4)}
    _check_or_loss(rig, 0, lost, seed)
    assert grp.lost_tracks() == sorted(lost)
    with pytest.raises(DataLossError):
        grp.rebuild_step(5)


# ---------------------------------------------------------------------------
# parity tracks as a save area
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_data", [3, 5, 7])
def test_lend_parity_then_recompute(n_data, seed):
    print(f"seed={seed}")
    rig = Rig(n_data, 2048, 2 * (n_data + 1), seed, n_groups=1)
    grp = rig.groups[0]
    rig.random_writes(30)
    slots = grp.parity_slots()
    assert slots == list(range(rig.layout.n_stripes))
    grp.lend_parity()
    assert grp.parity_lent and grp.redundancy_lost
    saved = {s: rig.payload() for s in slots}
    for s, data in saved.items():
        grp.write_parity_slot(s, data)
    rig.random_writes(30)               # host writes must not touch the slots
    for s, data in saved.items():
        assert np.array_equal(grp.read_parity_slot(s), data), f"seed={seed}: slot {s}"
    rig.check_all(seed)
    with pytest.raises(ValueError, match="lent"):
        grp.verify_parity()
    grp.recompute_parity()
    assert not grp.parity_lent and grp.verify_parity() == []
    rig.fail(0, int(rig.rng.integers(n_data + 1)))   # RAID5 is whole again
    rig.check_all(seed)
    with pytest.raises(ValueError, match="degraded"):
        grp.lend_parity()


@pytest.mark.parametrize("seed", SEEDS)
def test_failure_while_parity_lent_is_double_fault(seed):
    print(f"seed={seed}")
    rig = Rig(5, 1024, 12, seed, n_groups=1)
    grp, lay = rig.groups[0], rig.layout
    rig.random_writes(30)
    grp.lend_parity()
    for s in grp.parity_slots():
        grp.write_parity_slot(s, rig.payload())
    disk = int(rig.rng.integers(lay.n_disks))
    rig.fail(0, disk)
    lost = {lt for lt in range(lay.capacity_tracks) if lay.map(lt).data_disk == disk}
    _check_or_loss(rig, 0, lost, seed)
    assert grp.lost_tracks() == sorted(lost)
    assert disk not in {lay.parity_disk(s) for s in grp.parity_slots()}
    bad_slot = next(s for s in range(lay.n_stripes) if lay.parity_disk(s) == disk)
    with pytest.raises(DataLossError):
        grp.read_parity_slot(bad_slot)
    with pytest.raises(DataLossError):
        grp.write_track(next(iter(lost)), rig.payload())
    data_stripe = next(s for s in range(lay.n_stripes) if lay.parity_disk(s) != disk)
    with pytest.raises(DataLossError):
        grp.write_stripe(data_stripe, np.zeros((5, 1024), np.uint8))
    with pytest.raises(DataLossError):
        grp.recompute_parity()
    with pytest.raises(DataLossError):
        grp.start_rebuild(np.zeros(lay.member_bytes, np.uint8))


# ---------------------------------------------------------------------------
# cost-model plans, restart, small API edges
# ---------------------------------------------------------------------------

def test_io_plans():
    rig = Rig(5, 512, 12, seed=3, n_groups=1)
    grp, lay = rig.groups[0], rig.layout
    loc = lay.map(7)
    assert grp.plan_read(7) == [(loc.data_disk, loc.offset_bytes, 512, "r")]
    assert [io.op for io in grp.plan_write(7)] == ["r", "r", "w", "w"]
    grp.fail_disk(loc.data_disk)
    assert sorted(io.disk for io in grp.plan_read(7)) == sorted(set(range(6)) - {loc.data_disk})
    assert grp.plan_write(7)[-1] == (loc.parity_disk, loc.offset_bytes, 512, "w")
    grp.start_rebuild(np.zeros(lay.member_bytes, np.uint8))
    grp.rebuild_step(loc.stripe + 1)
    assert grp.plan_read(7) == [(lay.n_disks, loc.offset_bytes, 512, "r")]  # on the spare


@pytest.mark.parametrize("seed", SEEDS)
def test_restart_mid_rebuild_from_state(seed):
    """A new RaidGroup over the same media + exported state finishes the rebuild."""
    print(f"seed={seed}")
    rig = Rig(3, 1024, 16, seed, n_groups=1)
    rig.random_writes(30)
    rig.fail(0, 1)
    spare = np.zeros(rig.layout.member_bytes, np.uint8)
    rig.groups[0].start_rebuild(spare)
    rig.groups[0].rebuild_step(6)
    rig.random_writes(10)
    state = rig.groups[0].export_state()
    assert state == {"failed": [1], "parity_lent": False, "rebuild_disk": 1, "rebuild_cursor": 6}
    grp = RaidGroup.from_state(rig.layout, rig.media[0], state, spare=spare)
    rig.groups[0] = grp
    rig.array.groups[0] = grp
    rig.check_all(seed)
    while grp.rebuild_step(4)[0] < rig.layout.n_stripes:
        rig.random_writes(2)
    assert grp.verify_parity() == [] and grp.member(1) is spare
    rig.check_all(seed)


def test_small_api_edges():
    lay = RaidLayout(3, 512, 6)
    grp = RaidGroup(lay, [np.zeros(lay.member_bytes, np.uint8) for _ in range(4)])
    grp.write_tracks([], np.zeros((0, 512), np.uint8))
    grp.write_stripe(2, bytes(range(256)) * 6)
    assert grp.read_track(7).tobytes() == (bytes(range(256)) * 6)[512:1024]
    assert grp.verify_parity() == []
    with pytest.raises(ValueError, match="stripe data"):
        grp.write_stripe(0, b"x" * 100)
    arr = RaidArray([grp])
    arr.define_ldev(0, 10)
    with pytest.raises(ValueError, match="no group"):
        arr.define_ldev(1, 9)
    with pytest.raises(ValueError, match="already defined"):
        arr.define_ldev(0, 1)
    with pytest.raises(ValueError, match="outside"):
        arr.locate(0, 10)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_sector_io_matches_model(seed):
    """write_sectors/read_sectors (partial tracks, spanning tracks) vs the model, degraded too."""
    print(f"seed={seed}")
    rig = Rig(3, 2048, 8, seed, n_groups=1, n_ldevs=2)
    per_track = 2048 // 512
    for step in range(60):
        if step == 30:
            rig.fail(0, int(rig.rng.integers(4)))
        ld = int(rig.rng.integers(2))
        total = rig.array.ldev_tracks(ld) * per_track
        lba = int(rig.rng.integers(total))
        n = int(rig.rng.integers(1, min(total - lba, 3 * per_track) + 1))
        data = rig.rng.integers(0, 256, n * 512, dtype=np.uint8).tobytes()
        rig.array.write_sectors(ld, lba, data)
        rig.model[ld][lba * 512:(lba + n) * 512] = data
        assert rig.array.read_sectors(ld, lba, n) == data, f"seed={seed}"
        lba2 = int(rig.rng.integers(total))
        n2 = int(rig.rng.integers(0, total - lba2 + 1))
        assert rig.array.read_sectors(ld, lba2, n2) == bytes(rig.model[ld][lba2 * 512:(lba2 + n2) * 512])
    rig.check_all(seed)


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_partial_write_in_place_equals_track_rewrite(seed, monkeypatch):
    """A partial-track write done in place on the words it changes
    (``RaidGroup.write_part``) leaves every member's media, parity included,
    byte for byte as the whole-track path (read, patch, small write) leaves
    them: healthy, thin (tracks written and not), with parity lent, and
    degraded; and reads of parts of tracks (``read_part``) give the same
    bytes as whole-track reads."""
    print(f"seed={seed}")
    thin_map = lambda lay: np.zeros(RaidGroup.thin_map_bytes(lay), np.uint8)   # noqa: E731
    rigs = []
    for _ in range(2):
        rig = Rig(3, 2048, 8, seed, n_groups=1, n_ldevs=2)
        rig.groups[0] = RaidGroup(rig.layout, rig.media[0], thin_map(rig.layout))
        rig.array.groups[0] = rig.groups[0]
        rigs.append(rig)
    fast, slow = rigs
    original = RaidGroup.write_part
    per_track = 2048 // 512
    for step in range(80):
        if step == 40:
            for rig in rigs:
                rig.groups[0].lend_parity()
        if step == 50:
            for rig in rigs:
                rig.groups[0].recompute_parity()
        if step == 60:
            disk = int(fast.rng.integers(4))
            for rig in rigs:
                rig.fail(0, disk)
        ld = int(fast.rng.integers(2))
        total = fast.array.ldev_tracks(ld) * per_track
        lba = int(fast.rng.integers(total))
        n = int(fast.rng.integers(1, min(total - lba, 2 * per_track) + 1))
        data = fast.rng.integers(0, 256, n * 512, dtype=np.uint8).tobytes()
        monkeypatch.setattr(RaidGroup, "write_part", original)
        fast.array.write_sectors(ld, lba, data)
        monkeypatch.setattr(RaidGroup, "write_part", lambda *a: False)
        slow.array.write_sectors(ld, lba, data)
        for d in range(4):
            if d not in fast.groups[0].failed_disks:
                assert np.array_equal(fast.media[0][d], slow.media[0][d]), f"seed={seed} step={step} disk {d}"
        lba2 = int(fast.rng.integers(total))
        n2 = int(fast.rng.integers(0, total - lba2 + 1))
        monkeypatch.setattr(RaidGroup, "write_part", original)
        whole = b"".join(fast.array.read_track(ld, t).tobytes() for t in range(fast.array.ldev_tracks(ld)))
        assert fast.array.read_sectors(ld, lba2, n2) == whole[lba2 * 512:(lba2 + n2) * 512], f"seed={seed}"
