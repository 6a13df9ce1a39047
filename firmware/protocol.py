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

from dataclasses import dataclass, field
from enum import Enum

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

#: a peer message carrying more track data than this is dropped at the wire
MAX_MSG_DATA_BYTES = 4 << 20


class MsgKind(str, Enum):
    """DKC-to-DKC messages (m = master, r = remote), with the step that sends them."""
    PAIR_CREATE = "pair_create"          # m->r {pairs:[name], mode} (351)
    PAIR_CREATE_OK = "pair_create_ok"    # r->m {pairs, ok, error} (352)
    PAIR_READY = "pair_ready"            # m->r {sid, pair}: initial copy done (353)
    PAIR_SPLIT = "pair_split"            # m->r {pairs, delete}
    COPY_TRACK = "copy_track"            # m->r {sid, pair, track, offset, data} (353, 408)
    COPY_TRACK_ACK = "copy_track_ack"    # r->m {sid, pair, track, ok, error}
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
