"""A malformed copy batch from the peer is counted and dropped at the DKC's
wire boundary (issue 10 item 7): the remote DKC of a running rack gets a
copy_track whose pieces break the schema; its ``peer_malformed`` counter
grows by one, it answers nothing, and its pairs and images are unchanged.
A well-formed one, for contrast, is answered (the check can fail)."""
from pathlib import Path

import pytest

from controllers.rack.storage import StorageRack

CFG = str(Path(__file__).resolve().parents[2] / "configs" / "two-site.toml")


def _dkc(r: StorageRack, name: str):
    backend = r.rack.backend
    return next(h for h in backend.hosts if h.actor.name == name)


BAD = [
    ("short piece", [[0, 0]]),
    ("no pieces", []),
    ("mirror-write piece", [["p0", 0, 0, b"x" * 512]]),
    ("data not bytes", [[0, 0, "text"]]),
]


@pytest.mark.parametrize("what, pieces", BAD, ids=[b[0] for b in BAD])
def test_malformed_copy_batch_is_counted_and_dropped(what, pieces):
    with StorageRack(CFG, backend="inline", seed=1) as r:
        r.paircreate("g0")
        r.wait_mirrored()
        host = _dkc(r, "remote.dkc")
        dkc = host.actor
        before = (dict(dkc.stats), r.pairdisplay(), r.export_bytes("remote", 0), len(host.outbox))
        msg = {"kind": "copy_track", "sid": 99, "pair": "p0", "seq": 0, "pieces": pieces}
        dkc.on_message("link0", "peer", {"from": "main", "epoch": dkc.epochs["main"], "msg": msg})
        assert dkc.stats["peer_malformed"] == before[0]["peer_malformed"] + 1, what
        assert len(host.outbox) == before[3], f"{what}: a dropped message is not answered"
        assert r.pairdisplay() == before[1] and r.export_bytes("remote", 0) == before[2], what


def test_well_formed_copy_batch_is_answered():
    with StorageRack(CFG, backend="inline", seed=1) as r:
        r.paircreate("g0")
        r.wait_mirrored()
        host = _dkc(r, "remote.dkc")
        dkc = host.actor
        sent = len(host.outbox)
        msg = {"kind": "copy_track", "sid": 99, "pair": "p0", "seq": 0, "pieces": [[0, 0, b"x" * 512]]}
        dkc.on_message("link0", "peer", {"from": "main", "epoch": dkc.epochs["main"], "msg": msg})
        assert dkc.stats["peer_malformed"] == 0 and len(host.outbox) == sent + 1
