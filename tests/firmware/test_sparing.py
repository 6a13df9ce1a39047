"""The sparing and rebuild policy, sans-I/O (firmware/raid/sparing.py):
which role a failed disk had, and when a group rebuilds onto a spare —
never twice, never with two members lost, never onto parity lent as save
area, and never while a recovery copy may keep saved tracks on the spares
(deferred, then retried)."""
import pytest

from firmware.raid.sparing import decide_rebuild, locate_failed_disk

MEMBERS = [[0, 1, 2, 3], [4, 5, 6, 7]]   # two 3D+1P groups; disks 8 and 9 are spares


@pytest.mark.parametrize("disk, want", [
    (2, dict(group=0, member=2)), (4, dict(group=1, member=0)),
    (8, dict(spare=0)), (9, dict(spare=1, rebuild_target_of=1)),
])
def test_locate_failed_disk(disk, want):
    where = locate_failed_disk(disk, MEMBERS, rebuilds={1: 9}, first_spare=8)
    got = {k: getattr(where, k) for k in ("group", "member", "spare", "rebuild_target_of") if getattr(where, k) is not None}
    assert got == want


def test_rebuild_starts_on_the_first_free_spare():
    d = decide_rebuild(failed_members=1, parity_lent=False, rebuilding=False, free_spares=[9, 8],
                       recovery_copy_in_progress=False)
    assert d.start and d.spare == 9 and not d.defer


@pytest.mark.parametrize("kw", [
    dict(failed_members=2), dict(failed_members=0), dict(parity_lent=True), dict(rebuilding=True),
    dict(free_spares=[]),
], ids=["double-fault", "nothing-failed", "parity-lent", "already-rebuilding", "no-spare"])
def test_no_rebuild(kw):
    args = dict(failed_members=1, parity_lent=False, rebuilding=False, free_spares=[8],
                recovery_copy_in_progress=False, **{})
    args.update(kw)
    d = decide_rebuild(**args)
    assert not d.start and not d.defer


def test_rebuild_waits_for_a_recovery_copy():
    """The spares may hold saved tracks: a rebuild would destroy what the rollback needs."""
    d = decide_rebuild(failed_members=1, parity_lent=False, rebuilding=False, free_spares=[8],
                       recovery_copy_in_progress=True)
    assert d.defer and not d.start and "recovery copy" in d.reason
