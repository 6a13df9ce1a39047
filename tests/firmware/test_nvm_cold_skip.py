"""The round's commit pickles the cold group (pairs, sessions, queue
objects, settings) only when something may have changed it
(``DkcFirmware._cold_dirty``):

* under a mirrored load (host writes to PAIR pairs, mirror writes, good
  acknowledgements) the commits of both sites skip it, and a restart from
  the NVM after such rounds is the firmware as it was;
* a path that changes the cold group (a split, a suspension) pickles it
  again, and a restart finds the change;
* with the check on (``EMU_NVM_CHECK_CLEAN``, as the tests run it), a cold
  group changed behind the firmware's back is a loud invariant violation,
  never a stale NVM.
"""
from __future__ import annotations

import pytest

import firmware.dkc as D
from firmware.dkc import DkcFirmware
from firmware.nvm_tables import UNCHANGED
from support.fw_harness import form_pairs, make_rack, stamp

from test_nvm_tables import canonical


def _count_skips(h) -> dict:
    """Per site, [commits, commits that skipped the cold group]."""
    counts = {}
    for site, fw in h.fw.items():
        counts[site] = [0, 0]
        commit = fw.nvm.commit

        def spy(groups, commit=commit, c=counts[site]):
            c[0] += 1
            c[1] += groups["cold"] is UNCHANGED
            return commit(groups)
        fw.nvm.commit = spy
    return counts


def _rounds(h, n: int) -> None:
    """``n`` events, each a round with its commit."""
    for _ in range(n):
        if not h.heap:
            return
        site = h.heap[0][3][0]
        h.step()
        h.fw[site].commit()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mirrored_rounds_skip_the_cold_group_and_restart_alike(seed, monkeypatch):
    monkeypatch.setattr(D, "CHECK_COLD_CLEAN", True)
    h = make_rack()
    form_pairs(h)
    for fw in h.fw.values():
        fw.commit()
    counts = _count_skips(h)
    for i in range(20):
        ldev, track = (seed + i) % 3, (seed * 7 + i) % 4
        h.write("M", f"w{seed}-{i}", ldev, track * 2 + (i % 2), stamp(f"w{seed}-{i}", 512))
        _rounds(h, 5)
    _rounds(h, 1000)
    for site, (commits, skipped) in counts.items():
        assert commits >= 20 and skipped > commits // 2, f"seed={seed} {site}: {skipped} of {commits} skipped"
    for site, fw in h.fw.items():
        again = DkcFirmware.reopen(fw.nvm.buf.copy(), fw.store, fw.save_media)
        assert canonical(again) == canonical(fw), f"seed={seed} {site}"


def test_a_cold_change_is_committed_and_found_at_restart(monkeypatch):
    monkeypatch.setattr(D, "CHECK_COLD_CLEAN", True)
    h = make_rack()
    form_pairs(h)
    for fw in h.fw.values():
        fw.commit()
    counts = _count_skips(h)
    h.command("M", {"cmd": "pairsplit", "target": "*"})
    _rounds(h, 1000)
    h.fw["M"].commit()
    # a write while split: its bit, and the first one makes the unit's time-series queue (cold)
    h.write("M", "after-split", 0, 1, stamp("after-split", 512))
    h.fw["M"].commit()
    assert counts["M"][0] > counts["M"][1], "the split's round pickled the cold group"
    fw = h.fw["M"]
    again = DkcFirmware.reopen(fw.nvm.buf.copy(), fw.store, fw.save_media)
    assert {p.state for p in again.pairs.pairs.values()} == {p.state for p in fw.pairs.pairs.values()} != {"PAIR"}
    assert canonical(again) == canonical(fw)


def test_a_cold_change_behind_the_firmwares_back_is_caught(monkeypatch):
    monkeypatch.setattr(D, "CHECK_COLD_CLEAN", True)
    h = make_rack()
    form_pairs(h)
    fw = h.fw["M"]
    fw.commit()
    fw.commit()                      # nothing changed: the cold group is skipped, and the check agrees
    next(iter(fw.pairs.pairs.values())).fence = "data"   # no entry point said so
    with pytest.raises(RuntimeError, match="cold-dirty invariant violated"):
        fw.commit()
