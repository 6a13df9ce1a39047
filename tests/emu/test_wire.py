"""The wire decoder never trusts a frame: any byte string either decodes to a
known command or raises ``WireError`` (nothing else escapes); valid frames
round-trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu import wire
from emu.wire import Cmd, WireError

BODIES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20)


def decode_or_wire_error(frame: bytes):
    try:
        cmd, seq, _body = wire.decode(frame)
    except WireError:
        return None
    assert isinstance(cmd, Cmd) and 0 <= seq <= 0xFFFFFFFF
    return cmd


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_wire_error(frame):
    """Raw garbage."""
    decode_or_wire_error(frame)


@settings(max_examples=500, deadline=None)
@given(cmd=st.integers(0, 255), flags=st.integers(0, 255), seq=st.integers(0, 0xFFFFFFFF),
       length=st.integers(0, 0xFFFFFFFF), body=st.binary(max_size=100), magic=st.sampled_from([wire.MAGIC, b"RACK02"]))
def test_plausible_header_garbage_body_raises_only_wire_error(cmd, flags, seq, length, body, magic):
    """A well-formed-looking header with any fields and any body bytes."""
    frame = wire.HEADER.pack(magic, cmd, flags, seq, length) + body
    got = decode_or_wire_error(frame)
    if got is not None:  # only a fully valid header may decode
        assert magic == wire.MAGIC and flags == 0 and length == len(body)


@settings(max_examples=300, deadline=None)
@given(cmd=st.sampled_from(list(Cmd)), seq=st.integers(0, 0xFFFFFFFF), body=BODIES,
       cut=st.integers(0, 64), flip=st.integers(0, 1 << 16))
def test_valid_frames_round_trip_and_mutations_fail_cleanly(cmd, seq, body, cut, flip):
    """encode/decode round-trips; a truncated or bit-flipped frame raises only WireError."""
    frame = wire.encode(cmd, body, seq)
    got_cmd, got_seq, got_body = wire.decode(frame)
    assert (got_cmd, got_seq, got_body) == (cmd, seq, body)
    if cut:
        assert decode_or_wire_error(frame[:-cut]) is None, "a truncated frame decoded"
    mutated = bytearray(frame)
    pos = flip % len(mutated)
    mutated[pos] ^= 1 << (flip >> 13) % 8
    decode_or_wire_error(bytes(mutated))


@pytest.mark.parametrize("frame, reason", [
    (b"", "truncated"),
    (b"RACK01\x02", "truncated"),
    (wire.HEADER.pack(b"RACK99", 2, 0, 0, 0), "bad magic"),
    (wire.HEADER.pack(wire.MAGIC, 99, 0, 0, 0), "unknown command"),
    (wire.HEADER.pack(wire.MAGIC, 2, 4, 0, 0), "reserved flags"),
    (wire.HEADER.pack(wire.MAGIC, 2, 0, 0, 5) + b"\x90", "length field"),
    (wire.HEADER.pack(wire.MAGIC, 2, 0, 0, 1) + b"\xc1", "undecodable"),
    (wire.HEADER.pack(wire.MAGIC, 2, 0, 0, 2) + b"\x92\x01", "undecodable"),  # array cut short
])
def test_each_malformation_has_its_reason(frame, reason):
    """Every rejection says why (the drop log keys on the reason)."""
    with pytest.raises(WireError, match=reason):
        wire.decode(frame)


def test_drop_counter_counts_all_logs_once_per_reason():
    """Drops are counted one by one but each reason is logged once."""
    logged = []
    counter = wire.DropCounter("x", log=logged.append)
    for reason in ["bad magic b'1'", "bad magic b'2'", "truncated frame: 3"]:
        counter.drop(reason)
    assert counter.dropped == 3 and len(logged) == 2
