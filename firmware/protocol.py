"""The DKC's protocol, defined once: message kinds between DKCs, the
actions the firmware returns to its host, and every constant more than one
module needs (sector size, recovery methods and orders, pair modes,
fences and states, the trace steps that raise signals).

Whoever speaks to a DKC (the peer firmware, the DKC actor, the console,
the rack facade, the checkers) imports the names from here, so the protocol
has one source of truth. Peer messages are plain dicts (they cross the
msgpack wire) whose ``"kind"`` is a ``MsgKind`` value.
"""
from __future__ import annotations

import numbers
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar
from enum import Enum

import numpy as np

#: bytes per sector of the host's block interface (SCSI/FBA)
SECTOR_BYTES = 512

# -- recovery copy settings (patent claim 2: protection; claim 3: order) --------------
SAVE_OLD, STAGE_NEW, NONE = "save-old", "stage-new", "none"
#: recovery-copy protection: save the old track (Fig. 6/9), stage the new one (0065-0068), or none
METHODS = (SAVE_OLD, STAGE_NEW, NONE)
#: sending order of a recovery copy: address order of the bitmap, or the time-series queue (Fig. 12/13)
ORDERS = ("bitmap", "time")
#: consistency unit rolled back together
UNITS = ("ldev", "group")

# -- pairs (Fig. 4) -------------------------------------------------------------------------
SMPL, COPY, PAIR, PSUS, PSUE, SSWS = "SMPL", "COPY", "PAIR", "PSUS", "PSUE", "SSWS"
PAIR_STATES = (SMPL, COPY, PAIR, PSUS, PSUE, SSWS)
MODES = ("sync", "async")
FENCES = ("data", "status", "never")

#: trace steps whose record also raises a named signal (``run until EVENT``)
SIGNAL_STEPS = {353: "pair.mirroring", 411: "recovery.reached", 413: "recovery.complete",
                515: "recovery.timeout", 519: "recovery.restored", 520: "recovery.remote_done"}
#: trace records without a step number that also raise a named event
SIGNAL_EVENTS = {"rc_rollback_done": "recovery.rolled_back"}

#: a peer message carrying more track data than this is dropped at the wire
MAX_MSG_DATA_BYTES = 4 << 20


class MsgKind(str, Enum):
    """DKC-to-DKC messages (m = master, r = remote), with the step that sends them."""
    PAIR_CREATE = "pair_create"          # m->r {pairs:[name], mode} (351)
    PAIR_CREATE_OK = "pair_create_ok"    # r->m {pairs, ok, error} (352)
    PAIR_READY = "pair_ready"            # m->r {sid, pair}: initial copy done (353)
    PAIR_SPLIT = "pair_split"            # m->r {pairs, delete}
    COPY_TRACK = "copy_track"            # m->r {sid, pair, seq, pieces:[(track, offset, data)]} (353, 408)
    COPY_TRACK_ACK = "copy_track_ack"    # r->m {sid, pair, seq, track, ok, error}
    RC_WRITE = "rc_write"                # m->r {seq, pieces:[(pair, track, offset, data)]}
    RC_WRITE_ACK = "rc_write_ack"        # r->m {seq, ok, error}
    RC_CONFIG_REQ = "rc_config_req"      # m->r {sid} (403)
    RC_CONFIG = "rc_config"              # r->m {sid, rows:[(kind, tracks)], counts}
    RC_START = "rc_start"                # m->r (405)
    RC_READY = "rc_ready"                # r->m (504)
    RC_REACHED = "rc_reached"            # m->r (411)
    RC_COMPLETE = "rc_complete"          # m->r (413)
    RC_COMPLETE_ACK = "rc_complete_ack"  # r->m {sid, ok}
    RC_ABORTED = "rc_aborted"            # r->m {sid, rolled_back} (after 515-519)


# -- actions: what an event handler asks its host to do ----------------------------------
@dataclass
class SendPeer:
    """Send ``msg`` to the DKC of ``site`` (over the inter-site link)."""
    site: str
    msg: dict


@dataclass
class HostDone:
    """Answer the host request ``req_id`` (with the read data, if any)."""
    req_id: object
    ok: bool
    error: str | None = None
    data: bytes | None = None


@dataclass
class SetTimer:
    """Fire ``timer(name)`` at virtual time ``at_ns`` (re-arming replaces)."""
    name: str
    at_ns: int


@dataclass
class CancelTimer:
    name: str


@dataclass
class Trace:
    """A trace record; ``step`` is the patent's flowchart step number or None."""
    step: int | None
    event: str
    fields: dict = field(default_factory=dict)


@dataclass
class DiskCost:
    """Charge the disk time of moving ``nbytes`` of one track (read or write)."""
    kind: str
    ldev: int
    track: int
    nbytes: int


@dataclass
class RestoreIo:
    """Read the saved copy of one track a rollback restores (516-519) from
    save row ``save_row`` slot ``save_slot`` (None: it is in cache, only the
    controller's time), then call ``restore_done(sid, tag)``; the firmware
    then writes it home. Several may be in flight."""
    sid: int
    tag: int          # which restore (its place in the rollback's list)
    ldev: int
    track: int
    save_row: int | None
    save_slot: int | None


@dataclass
class CopyRead:
    """Time the disk read of track ``track`` of LDEV ``ldev``, which the copy
    ``sid`` (initial or recovery, bitmap order) will send for pair ``pair``;
    then call ``copy_read_done(sid, pair, track)``. The bytes are taken when
    the read is done, so the copy reads at the pace of the disks."""
    sid: int
    pair: str
    ldev: int
    track: int


# -- the wire boundary: what each peer message must carry ---------------------------------
_SEQ = (list, tuple)
_BYTES = (bytes, bytearray, memoryview)
#: numpy integers too (track numbers come from bitmaps); ``int`` first, so
#: an exact int is accepted without the ABC's slower check
_INT = (int, numbers.Integral)
_BOOL = (bool, int, numbers.Integral, np.bool_)
#: required fields of each message kind and their types; a message that does
#: not match is malformed input from a peer (counted and dropped), so a
#: handler may index its fields without guarding against a bad peer
PEER_FIELDS: dict[str, dict[str, tuple]] = {
    MsgKind.PAIR_CREATE.value: {"pairs": _SEQ, "mode": (str,)},
    MsgKind.PAIR_CREATE_OK.value: {"pairs": _SEQ},
    MsgKind.PAIR_READY.value: {"pair": (str,)},
    MsgKind.PAIR_SPLIT.value: {"pairs": _SEQ, "delete": _BOOL},
    MsgKind.COPY_TRACK.value: {"sid": _INT, "pair": (str,), "seq": _INT, "pieces": _SEQ},
    MsgKind.COPY_TRACK_ACK.value: {"sid": _INT, "pair": (str,), "seq": _INT, "track": _INT, "ok": _BOOL},
    MsgKind.RC_WRITE.value: {"seq": _INT, "pieces": _SEQ},
    MsgKind.RC_WRITE_ACK.value: {"seq": _INT, "ok": _BOOL},
    MsgKind.RC_CONFIG_REQ.value: {"sid": _INT},
    MsgKind.RC_CONFIG.value: {"sid": _INT, "rows": _SEQ},
    MsgKind.RC_START.value: {"sid": _INT, "pairs": _SEQ, "max_time_ns": _INT, "method": (str,),
                             "unit": (str,), "cache_save_threshold_tracks": _INT, "keep_raid5": _BOOL,
                             "spares_usable": _BOOL},
    MsgKind.RC_READY.value: {"sid": _INT, "ok": _BOOL},
    MsgKind.RC_REACHED.value: {"sid": _INT, "pair": (str,)},
    MsgKind.RC_COMPLETE.value: {"sid": _INT},
    MsgKind.RC_COMPLETE_ACK.value: {"sid": _INT, "ok": _BOOL},
    MsgKind.RC_ABORTED.value: {"sid": _INT, "rolled_back": _SEQ},
}


#: the shape of one piece of the kinds that carry ``pieces``: a mirrored
#: write names its pair per piece; a copy message (one track of the bitmap
#: order, or a batch of time-series updates of one pair, Figs. 12/13) names
#: its pair once
PIECE_FIELDS: dict[str, tuple[tuple, ...]] = {
    MsgKind.RC_WRITE.value: ((str,), _INT, _INT, _BYTES),
    MsgKind.COPY_TRACK.value: (_INT, _INT, _BYTES),
}


class MalformedMessage(ValueError):
    """A peer message that breaks the protocol (foreign input, not our bug)."""


def _type_names(types: tuple) -> str:
    """The declared types of a field, as an error names them (the fast-path
    ``int`` beside ``numbers.Integral`` is not a type of its own)."""
    return "/".join(t.__name__ for t in types if not (t is int and numbers.Integral in types))


def check_peer_message(msg: dict) -> int:
    """Raise MalformedMessage unless ``msg`` has its kind's fields with the
    right types; return the number of track-data bytes it carries."""
    kind = msg.get("kind")
    fields = PEER_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise MalformedMessage(f"unknown message kind {kind!r}")
    for name, types in fields.items():
        if not isinstance(msg.get(name), types):
            raise MalformedMessage(f"{kind}: field {name!r} missing or not {_type_names(types)}")
    nbytes = len(msg.get("data") or b"")
    shape = PIECE_FIELDS.get(kind)
    if shape is None:
        return nbytes
    if kind == MsgKind.COPY_TRACK.value and not msg["pieces"]:
        raise MalformedMessage(f"{kind}: no pieces")   # a copy message always carries a track or an update
    for piece in msg["pieces"]:
        if not (isinstance(piece, _SEQ) and len(piece) == len(shape)
                and all(isinstance(v, t) for v, t in zip(piece, shape))):
            what = "(pair, track, offset, data)" if len(shape) == 4 else "(track, offset, data)"
            raise MalformedMessage(f"{kind}: a piece is not {what}")
        nbytes += len(piece[-1])
    return nbytes


# -- console requests: a command reaches the firmware as one of these ------------------------
@dataclass(frozen=True)
class PairCreate:
    """350: form pairs (target: a pair, a group or "*") and start the initial copy."""
    NAME: ClassVar[str] = "paircreate"
    target: str
    mode: str = "sync"
    fence: str = "never"


@dataclass(frozen=True)
class PairSplit:
    """Split pairs (PSUS), or delete them (SMPL)."""
    NAME: ClassVar[str] = "pairsplit"
    target: str
    delete: bool = False


@dataclass(frozen=True)
class PairResync:
    """401: the recovery-copy instruction; None takes the firmware's setting."""
    NAME: ClassVar[str] = "pairresync"
    target: str
    max_time_ns: int | None = None
    method: str | None = None
    order: str | None = None
    window: int | None = None
    unit: str | None = None
    keep_raid5: bool | None = None
    spares_usable: bool | None = None
    cache_save_threshold_tracks: int | None = None
    format_shortcut: bool | None = None


@dataclass(frozen=True)
class HorcTakeover:
    """Make the R-DEVs writable (SSWS), rolling back a recovery copy in progress."""
    NAME: ClassVar[str] = "horctakeover"
    target: str


@dataclass(frozen=True)
class PairDisplay:
    NAME: ClassVar[str] = "pairdisplay"
    target: str | None = None


@dataclass(frozen=True)
class Show:
    """One of the firmware's views (``firmware.views.VIEWS``)."""
    NAME: ClassVar[str] = "show"
    what: str
    ldev: int | None = None


@dataclass(frozen=True)
class SetParam:
    NAME: ClassVar[str] = "set"
    key: str
    value: object


@dataclass(frozen=True)
class LinkState:
    """The DKC actor tells the firmware that the path to ``site`` went up or down."""
    NAME: ClassVar[str] = "link"
    site: str
    up: bool


Request = PairCreate | PairSplit | PairResync | HorcTakeover | PairDisplay | Show | SetParam | LinkState
_REQUESTS = {cls.NAME: cls for cls in (PairCreate, PairSplit, PairResync, HorcTakeover, PairDisplay, Show,
                                       SetParam)}
#: every command name a console may send (for completion and help)
COMMAND_NAMES = tuple(sorted(_REQUESTS))


def request_to_wire(req: Request) -> dict:
    """The msgpack-able dict that carries ``req`` to a DKC process."""
    if isinstance(req, LinkState):
        return {"cmd": "link_up" if req.up else "link_down", "site": req.site}
    body = {f.name: getattr(req, f.name) for f in fields(req) if getattr(req, f.name) is not None}
    return {"cmd": req.NAME, **body}


def request_from_wire(cmd: dict) -> Request:
    """Parse a wire dict; ValueError names what is wrong (unknown command,
    missing or unknown field)."""
    name = cmd.get("cmd")
    if name in ("link_up", "link_down"):
        return LinkState(site=_field(cmd, "site", name), up=name == "link_up")
    cls = _REQUESTS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown command {name!r}")
    known = {f.name for f in fields(cls)}
    extra = sorted(k for k in cmd if k != "cmd" and k not in known)
    if extra:
        raise ValueError(f"{name}: unknown field(s) {', '.join(extra)}")
    required = [f.name for f in fields(cls) if f.default is MISSING]
    for key in required:
        _field(cmd, key, name)
    return cls(**{k: v for k, v in cmd.items() if k != "cmd"})


def _field(cmd: dict, key: str, name: str):
    if key not in cmd:
        raise ValueError(f"{name}: missing key '{key}'")
    return cmd[key]
