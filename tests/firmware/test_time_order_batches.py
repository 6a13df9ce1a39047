"""Time-ordered resync (claim 3, Figs. 12/13) with a window (issue 10 item 7).

Proves: consecutive queue nodes of one pair travel in one copy message (a
batch, at most one track's bytes), so a queue of small updates needs fewer
messages than updates; the remote applies every piece in queue order (two
updates of one sector in one batch end as the later one); an out-of-order
batch is refused with nothing of it applied, the copy aborts and the remote
rolls back to the suspension image.
"""
import random

import pytest

from support.fw_harness import (LDEV_TRACKS, T_NS, check, form_pairs, make_rack, stamp, suspend_and_write)


def _small_updates(seed: int, count: int = 24):
    """Sector-sized (partial) updates, several to the same sector, so that
    applying a batch out of order would leave the wrong bytes."""
    rng = random.Random(seed)
    return [(rng.randrange(2), rng.randrange(LDEV_TRACKS[0]), f"u{seed}-{i}", True) for i in range(count)]


def _start(seed: int, window: int):
    h = make_rack(params={"tsq_max_nodes": 4096})
    form_pairs(h)
    susp = suspend_and_write(h, _small_updates(seed))
    result = h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "method": "save-old",
                    "unit": "ldev", "window": window, "order": "time"})
    return h, susp, result["sids"][0]


def _sent(h):
    return [t.fields for s, t in h.traces if s == "M" and t.event == "track_sent"]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("window", [1, 4])
def test_batches_apply_in_queue_order(seed, window):
    h, _, _ = _start(seed, window)
    h.run()
    assert h.fw["R"].last_recovery["outcome"] == "complete", f"seed={seed}"
    for ldev in sorted(LDEV_TRACKS):
        assert h.image("R", ldev) == h.image("M", ldev), f"seed={seed} W={window}: ldev {ldev} differs"
    sent = _sent(h)
    updates = sum(f["pieces"] for f in sent)
    assert updates == 24 and len(sent) < updates, f"seed={seed}: {len(sent)} messages for {updates} updates"
    assert max(f["pieces"] for f in sent) == 2, "a 1 KiB track holds two 512-byte updates per batch"
    assert max(f["in_flight"] for f in sent) == min(window, len(sent)), "the window bounds the messages in flight"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_out_of_order_batch_is_refused(seed):
    h, susp, sid = _start(seed, window=4)
    while len(h.in_flight("copy_track")) < 2:
        assert h.step(), "the copy never had two messages in flight"
    h.swap_in_flight("copy_track")
    h.run(until_ns=h.now_ns + 3 * T_NS)
    refused = [t.fields for s, t in h.traces if s == "R" and t.event == "copy_out_of_order"]
    assert refused[0] == {"sid": sid, "seq": 1, "expected": 0}, f"seed={seed}: {refused}"
    first_refusal = next(i for i, (s, t) in enumerate(h.traces) if t.event == "copy_out_of_order")
    assert not [t for s, t in h.traces[:first_refusal] if s == "R" and t.step == 506], \
        "nothing of the refused batch (nor any later one) was applied before the refusal"
    aborted = [t.fields for s, t in h.traces if s == "M" and t.event == "recovery_copy_aborted"]
    assert aborted and "out of order" in aborted[0]["reason"], f"seed={seed}: {aborted}"
    ok, rolled = check(h, susp, "ldev")
    assert ok and rolled, f"seed={seed}: remote not back at the suspension image (rolled={rolled})"
