"""Wire protocol between the coordinator and actor processes (and the console).

A frame is a fixed 16-byte header followed by a msgpack body::

    magic  b"RACK01"   6 bytes   protocol name and major version
    cmd    u8          Cmd       what the body is
    flags  u8          0         reserved, must be 0
    seq    u32 LE                sender's sequence number
    length u32 LE                body length in bytes (<= MAX_BODY_BYTES)

The decoder never trusts a frame: a short, oversized, unknown or
undecodable frame raises ``WireError``; the receiving loop counts it, logs
it once, and drops it (it never kills an actor).
"""

from __future__ import annotations

import struct
from enum import IntEnum

import msgpack

MAGIC = b"RACK01"
HEADER = struct.Struct("<6sBBII")
MAX_BODY_BYTES = 256 << 20  # a GRANT carrying many tracks; still bounded
MAX_ITEMS = 1 << 20


class Cmd(IntEnum):
    HELLO = 1      # actor -> coordinator: [name, pid]
    GRANT = 2      # coordinator -> actor: [horizon_ns, events]
    DONE = 3       # actor -> coordinator: [timer_ns, message_ns, outbox, records, signals, handled, floors]
    QUERY = 4      # coordinator -> actor: [query]   (read-only, outside virtual time)
    REPLY = 5      # actor -> coordinator: [answer]
    CONTROL = 6    # coordinator -> actor: [now_ns, command] (mutating, at a paused time)
    STOP = 7       # coordinator -> actor: []
    ERROR = 8      # either way: [text]
    CONSOLE = 9    # console client -> rack supervisor: [line]
    CONSOLE_REPLY = 10  # rack supervisor -> console client: [ok, text]


class WireError(ValueError):
    """A frame that cannot be decoded; carries a short reason."""


def encode(cmd: Cmd, body, seq: int = 0) -> bytes:
    payload = msgpack.packb(body, use_bin_type=True)
    if len(payload) > MAX_BODY_BYTES:
        raise WireError(f"body of {len(payload)} bytes exceeds {MAX_BODY_BYTES}")
    return HEADER.pack(MAGIC, int(cmd), 0, seq & 0xFFFFFFFF, len(payload)) + payload


def decode(frame: bytes) -> tuple[Cmd, int, object]:
    """(cmd, seq, body) or ``WireError``."""
    if len(frame) < HEADER.size:
        raise WireError(f"truncated frame: {len(frame)} bytes < header {HEADER.size}")
    magic, cmd, flags, seq, length = HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r}")
    if flags != 0:
        raise WireError(f"reserved flags set: {flags}")
    try:
        command = Cmd(cmd)
    except ValueError:
        raise WireError(f"unknown command {cmd}") from None
    if length > MAX_BODY_BYTES or length != len(frame) - HEADER.size:
        raise WireError(f"length field {length} does not match body of {len(frame) - HEADER.size} bytes")
    try:
        body = msgpack.unpackb(memoryview(frame)[HEADER.size:], raw=False, strict_map_key=False,
                               max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS,
                               max_str_len=MAX_BODY_BYTES, max_bin_len=MAX_BODY_BYTES)
    except Exception as exc:  # msgpack raises several types; all mean "bad body"
        raise WireError(f"undecodable body: {type(exc).__name__}") from None
    return command, seq, body


class DropCounter:
    """Counts malformed frames; logs the first of each reason once."""

    def __init__(self, who: str, log=None):
        self.who = who
        self.dropped = 0
        self._seen: set[str] = set()
        self._log = log

    def drop(self, reason: str) -> None:
        self.dropped += 1
        # the kind of fault, without its details ("bad magic b'..'" -> "bad magic")
        key = " ".join(reason.split(":")[0].split()[:2])
        if key not in self._seen and self._log is not None:
            self._seen.add(key)
            self._log(f"{self.who}: dropped malformed frame ({reason}); further ones are counted")


def body_problem(body, fields: dict[str, tuple]) -> str | None:
    """Why an actor message ``body`` breaks its schema (a map with each of
    ``fields`` of one of the given types), or None when it fits. Devices
    check their inbound messages with it at the boundary, count and drop
    what does not fit, and may then index the body without guarding."""
    if not isinstance(body, dict):
        return f"body is a {type(body).__name__}, not a map"
    for name in fields:   # declaration order: deterministic, and no sort per message
        if name not in body:
            return f"field {name!r} missing"
        if not isinstance(body[name], fields[name]):
            return f"field {name!r} is {type(body[name]).__name__}"
    return None
