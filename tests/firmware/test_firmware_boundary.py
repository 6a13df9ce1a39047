"""The firmware's one error style at its wire boundary: a peer message that
breaks the protocol is traced and dropped without changing any state; an
exception inside a well-formed message's step is a bug and escapes (the run
stops); a full reorder buffer is an explicit BUSY answer, not a crash."""

import pytest

from firmware import dkc as D
from firmware.protocol import PEER_FIELDS, MsgKind, SendPeer, Trace
from support.fw_harness import form_pairs, make_rack

GOOD = {
    MsgKind.COPY_TRACK.value: {"kind": "copy_track", "sid": 1, "pair": "p0", "seq": 0, "pieces": [[0, 0, b"x" * 512]]},
    MsgKind.RC_WRITE.value: {"kind": "rc_write", "seq": 0, "base": 0, "pieces": [["p0", 0, 0, b"y" * 512]]},
}
BAD = [
    ("unknown kind", {"kind": "rc_nonsense", "sid": 1}),
    ("kind not a string", {"kind": 7}),
    ("missing field", {"kind": "copy_track", "sid": 1, "pair": "p0", "pieces": [[0, 0, b"x"]]}),
    ("copy batch without pieces", {"kind": "copy_track", "sid": 1, "pair": "p0", "seq": 0, "pieces": []}),
    ("copy batch piece short", {"kind": "copy_track", "sid": 1, "pair": "p0", "seq": 0,
                                "pieces": [[0, 0, b"x" * 512], [1, 0]]}),
    ("copy batch piece of a mirror write", {"kind": "copy_track", "sid": 1, "pair": "p0", "seq": 0,
                                            "pieces": [["p0", 0, 0, b"x" * 512]]}),
    ("copy batch data not bytes", {"kind": "copy_track", "sid": 1, "pair": "p0", "seq": 0,
                                   "pieces": [[0, 0, "text"]]}),
    ("copy seq not a number", {"kind": "copy_track", "sid": 1, "pair": "p0", "seq": "1",
                               "pieces": [[0, 0, b"x" * 512]]}),
    ("mistyped field", {"kind": "rc_write_ack", "seq": "zero", "ok": True}),
    ("garbage piece", {"kind": "rc_write", "seq": 0, "pieces": [["p0", 0]]}),
    ("piece data not bytes", {"kind": "rc_write", "seq": 0, "pieces": [["p0", 0, 0, "text"]]}),
]


def _state(fw):
    """Everything the firmware keeps: its NVM (tables and groups), committed."""
    return fw.snapshot()


@pytest.mark.parametrize("what, msg", BAD, ids=[b[0] for b in BAD])
def test_malformed_peer_message_is_traced_and_dropped(what, msg):
    h = make_rack()
    form_pairs(h)
    remote = h.fw["R"]
    before = _state(remote)
    actions = remote.peer_message(h.now_ns, "M", msg)
    assert [a.event for a in actions if isinstance(a, Trace)] == ["bad_peer_message"], (what, actions)
    assert not [a for a in actions if isinstance(a, SendPeer)], "a dropped message is not answered"
    assert _state(remote) == before, f"{what}: state changed"


def test_every_message_kind_has_a_schema_and_a_handler():
    assert sorted(PEER_FIELDS) == sorted(k.value for k in MsgKind) == sorted(D._PEER_HANDLERS)


def test_a_bug_in_a_step_escapes(monkeypatch):
    """Not swallowed as a 'bad message': our own bug must stop the run."""
    h = make_rack()
    form_pairs(h)

    def broken(fw, now_ns, from_site, msg):
        raise KeyError("a bug, not bad input")

    monkeypatch.setitem(D._PEER_HANDLERS, MsgKind.RC_WRITE.value, broken)
    with pytest.raises(KeyError, match="a bug"):
        h.fw["R"].peer_message(h.now_ns, "M", dict(GOOD[MsgKind.RC_WRITE.value]))


def test_full_reorder_buffer_answers_busy():
    """Updates that arrive ahead of a gap are buffered up to a bound; one
    more is refused with a BUSY acknowledgement (ok False), never an
    OverflowError that would abort the rack."""
    h = make_rack()
    form_pairs(h)
    remote = h.fw["R"]
    remote.params["max_pending_writes"] = 2
    remote.expect_seq["M"] = 100          # a gap: seq 100 never arrives
    acks = []
    for seq in (101, 102, 103):
        msg = {"kind": "rc_write", "seq": seq, "base": 100, "pieces": [["p0", 0, 0, b"z" * 512]]}
        acks += [a.msg for a in remote.peer_message(h.now_ns, "M", msg) if isinstance(a, SendPeer)]
    assert acks == [{"kind": "rc_write_ack", "seq": 103, "ok": False,
                     "error": "remote busy: reorder buffer full (2 writes)"}]
    assert sorted(remote.reorder["M"]) == [101, 102]
