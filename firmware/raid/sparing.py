"""Sparing and rebuild policy of a site's RAID5 groups, sans-I/O.

The DKC actor owns the media and the disk transfers; these functions
decide. A small disk that fails leaves its group degraded; when a spare is
free the group rebuilds onto it online while host I/O continues. Patent
0047 counts the spare disks as save area for the recovery copy, so a spare
that may hold saved tracks (a recovery copy in progress at this remote) is
not overwritten by a rebuild: the rebuild waits and is retried.
"""
from __future__ import annotations

from dataclasses import dataclass

#: virtual time between two tries of a deferred or stalled rebuild step
REBUILD_RETRY_NS = 500_000_000   # a deferred rebuild, or a step whose disk transfers never all came back


@dataclass(frozen=True)
class FailedDisk:
    """Where a failed disk sat: a member of ``group`` (``member`` its index),
    the spare being rebuilt onto for ``group``, or a spare (``spare`` its index
    among the spares)."""
    disk: int
    group: int | None = None
    member: int | None = None
    rebuild_target_of: int | None = None
    spare: int | None = None


def locate_failed_disk(disk: int, member_map: list[list[int]], rebuilds: dict[int, int],
                       first_spare: int) -> FailedDisk:
    """Which role the failed ``disk`` had: the first group listing it as a
    member, else the group rebuilding onto it, plus whether it is a spare."""
    for g, members in enumerate(member_map):
        if disk in members:
            return FailedDisk(disk, group=g, member=members.index(disk))
    target_of = next((g for g in sorted(rebuilds) if rebuilds[g] == disk), None)
    spare = disk - first_spare if disk >= first_spare else None
    return FailedDisk(disk, rebuild_target_of=target_of, spare=spare)


@dataclass(frozen=True)
class RebuildDecision:
    """``start``: rebuild onto ``spare`` now; ``defer``: try again in
    REBUILD_RETRY_NS (``reason`` says why); neither: nothing to do."""
    start: bool = False
    spare: int | None = None
    defer: bool = False
    reason: str = ""


NOTHING = RebuildDecision()


def decide_rebuild(failed_members: int, parity_lent: bool, rebuilding: bool, free_spares: list[int],
                   recovery_copy_in_progress: bool) -> RebuildDecision:
    """Start a rebuild only for a group with exactly one failed member (two
    is a double fault: nothing to rebuild from), whose parity is not lent
    out as save area, not already rebuilding, when a spare is free; and not
    while a recovery copy may keep saved tracks on the spares."""
    if rebuilding or not free_spares or failed_members != 1 or parity_lent:
        return NOTHING
    if recovery_copy_in_progress:
        return RebuildDecision(defer=True, reason="recovery copy in progress")
    return RebuildDecision(start=True, spare=free_spares[0])
