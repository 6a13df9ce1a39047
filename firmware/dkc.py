"""Disk controller (DKC) firmware, sans-I/O: events in, actions out.

The DKC actor calls the event methods (`host_write`, `host_read`,
`peer_message`, `timer`, `command`) with the virtual time and executes the
returned actions.  All state is plain data so `snapshot()` / `restore()`
round-trip it (it lives in the DKC's non-volatile memory).

Peer message kinds (dicts with a "kind" key) are `firmware.protocol.MsgKind`.
"""
from __future__ import annotations

import pickle

import numpy as np

from firmware import fig04_pairs as P
from firmware import fig05_recovery_master as RM
from firmware import fig06_09_recovery_remote as RR
from firmware.fig07_bitmap import DiffBitmap
from firmware.protocol import (MAX_MSG_DATA_BYTES, CancelTimer, DiskCost, HostDone, MsgKind, SendPeer, SetTimer,
                               Trace)
from firmware.store import SaveMedia, TrackStore
from firmware.fig12_13_time_series import TimeSeriesQueue, record_update


DEFAULTS = {"cache_save_threshold_tracks": 8, "keep_raid5": False, "spares_usable": True,
            "format_shortcut": True, "queue_unit": "ldev", "tsq_max_nodes": 4096,
            "init_window": 8, "max_pending_writes": 4096, "max_saved_nodes": 1 << 20}

_VOLATILE = ("store", "save_media", "_out")


class DkcFirmware:
    def __init__(self, site: str, store: TrackStore, save_media: SaveMedia, params: dict):
        self.site = site
        self.store = store
        self.save_media = save_media
        self.params = {**DEFAULTS, **{k: v for k, v in params.items() if k != "pairs"}}
        self.pairs = P.PairTable.from_params(site, params.get("pairs", []))
        self.sessions: dict[int, RM.MasterSession] = {}
        self.rsession: RR.RemoteSession | None = None
        self.tsq: dict[str, TimeSeriesQueue] = {}
        self.next_sid = 1
        self.next_seq: dict[str, int] = {}
        #: first sequence number since the path to a site was (re)established:
        #: a remote that knows nothing yet starts there, never at whatever arrives
        self.seq_base: dict[str, int] = {}
        self.pending: dict[tuple[str, int], dict] = {}  # (site, seq) -> mirror write in flight
        self.host_waits: dict[object, dict] = {}  # req_id -> {left, error}
        self.expect_seq: dict[str, int | None] = {}
        self.reorder: dict[str, dict[int, dict]] = {}
        self.link_up: dict[str, bool] = {}
        self.double_faults: list[dict] = []
        self.last_recovery: dict | None = None
        self._out: list = []

    # ------------------------------------------------------------ helpers
    @property
    def sectors_per_track(self) -> int:
        return self.store.track_bytes // self.store.sector_bytes

    def trace(self, step: int | None, event: str, **fields) -> None:
        self._out.append(Trace(step, event, fields))

    def send(self, site: str, msg: dict) -> None:
        self._out.append(SendPeer(site, msg))

    def set_timer(self, name: str, at_ns: int) -> None:
        self._out.append(SetTimer(name, at_ns))

    def cancel_timer(self, name: str) -> None:
        self._out.append(CancelTimer(name))

    def disk_cost(self, kind: str, ldev: int, track: int, nbytes: int) -> None:
        self._out.append(DiskCost(kind, ldev, track, nbytes))

    def read_home(self, ldev: int, track: int) -> bytes:
        data = self.store.read_track(ldev, track)
        self.disk_cost("read", ldev, track, len(data))
        return data

    def write_home(self, ldev: int, track: int, data: bytes) -> None:
        self.store.write_track(ldev, track, data)
        self.disk_cost("write", ldev, track, len(data))

    def _flush(self) -> list:
        out, self._out = self._out, []
        return out

    def split_pieces(self, lba: int, data: bytes) -> list[tuple[int, int, bytes]]:
        """(track, offset_sectors, bytes) per track touched by a write."""
        spt, sb = self.sectors_per_track, self.store.sector_bytes
        pieces, pos = [], 0
        while pos < len(data):
            sector = lba + pos // sb
            track, offset = divmod(sector, spt)
            nbytes = min(len(data) - pos, (spt - offset) * sb)
            pieces.append((track, offset, data[pos:pos + nbytes]))
            pos += nbytes
        return pieces

    # ------------------------------------------------------------ time-series queue glue
    def tsq_unit_of(self, pair: P.Pair) -> str:
        """Queue key: one queue per consistency unit (LDEV or group) and remote site."""
        unit = f"group:{pair.group}" if self.params["queue_unit"] == "group" else f"ldev:{pair.m_ldev}"
        return f"{unit}@{pair.r_site}"

    def tsq_for(self, pair: P.Pair) -> TimeSeriesQueue:
        unit = self.tsq_unit_of(pair)
        if unit not in self.tsq:
            self.tsq[unit] = TimeSeriesQueue(unit, int(self.params["tsq_max_nodes"]))
        return self.tsq[unit]

    def tsq_feeders(self, unit: str) -> list[str]:
        return [n for n, p in sorted(self.pairs.pairs.items())
                if p.m_site == self.site and self.tsq_unit_of(p) == unit]

    def tsq_usable_for(self, pair: P.Pair, session_pairs: list[str] | None = None) -> bool:
        """The unit's queue holds every update since suspension (and, when
        `session_pairs` is given, every pair feeding it is in that session)."""
        unit = self.tsq_unit_of(pair)
        if unit not in self.tsq or not self.tsq[unit].usable() or len(self.tsq[unit]) == 0:
            return False
        return session_pairs is None or all(n in session_pairs for n in self.tsq_feeders(unit))

    def tsq_mark_incomplete(self, pair: P.Pair) -> None:
        if pair.sent is not None and pair.sent.any():
            self.tsq_for(pair).incomplete = True

    def tsq_after_reached(self, pair: P.Pair) -> None:
        """Drop the unit's queue once every pair feeding it mirrors again."""
        unit = self.tsq_unit_of(pair)
        if unit not in self.tsq:
            return
        if all(self.pairs.get(n).state == P.PAIR for n in self.tsq_feeders(unit)):
            self.tsq[unit].reset()
        else:
            self.tsq[unit].incomplete = True

    # ------------------------------------------------------------ snapshot
    def snapshot(self) -> bytes:
        """All firmware state (non-volatile memory image)."""
        state = {k: v for k, v in self.__dict__.items() if k not in _VOLATILE}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, blob: bytes, store: TrackStore, save_media: SaveMedia) -> "DkcFirmware":
        fw = cls.__new__(cls)
        fw.__dict__.update(pickle.loads(blob))
        fw.store, fw.save_media, fw._out = store, save_media, []
        return fw

    def timers(self) -> list[SetTimer]:
        """Timers implied by the non-volatile state: the DKC actor re-arms
        them after `restore` (a restarted process has no timers)."""
        armed = [SetTimer(s.timer_name, s.deadline_at_ns) for _, s in sorted(self.sessions.items())
                 if s.deadline_at_ns is not None]
        if self.rsession is not None and self.rsession.in_progress:
            armed.append(SetTimer(self.rsession.timer_name, self.rsession.watchdog_at_ns))
        return armed

    # ------------------------------------------------------------ events
    def host_write(self, now_ns: int, req_id, ldev: int, lba: int, sectors: int,
                   data: bytes) -> list:
        do_host_write(self, now_ns, req_id, ldev, lba, sectors, data)
        return self._flush()

    def host_read(self, now_ns: int, req_id, ldev: int, lba: int, sectors: int) -> list:
        try:
            data = self.store.read_sectors(ldev, lba, sectors)
        except ValueError as exc:
            self._out.append(HostDone(req_id, False, str(exc), None))
        else:
            self._out.append(HostDone(req_id, True, None, data))
        return self._flush()

    def peer_message(self, now_ns: int, from_site: str, msg: dict) -> list:
        dispatch_peer(self, now_ns, from_site, msg)
        return self._flush()

    def timer(self, now_ns: int, name: str) -> list:
        kind, _, sid = name.partition(":")
        if kind == "rc_watchdog" and self.rsession is not None and str(self.rsession.sid) == sid:
            RR.s515_timeout(self, now_ns, self.rsession)
        elif kind == "rc_deadline" and sid.isdigit() and int(sid) in self.sessions:
            session = self.sessions[int(sid)]
            RM.abort(self, session, list(session.pair_names), reason="deadline passed")
        return self._flush()

    def command(self, now_ns: int, cmd: dict) -> tuple[dict, list]:
        try:
            result = run_command(self, now_ns, cmd)
        except ValueError:
            self._out = []
            raise
        return result, self._flush()


# ====================================================================== host I/O, mirroring

def do_host_write(fw: DkcFirmware, now_ns: int, req_id, ldev: int, lba: int, sectors: int,
                  data: bytes) -> None:
    """A host write: local update, then per pair mirror (Fig. 4, 353), or the
    suspended path (Fig. 7 bit, Figs. 12/13 queue), or the recovery-copy rule
    (0014: a track already sent is mirrored, one not yet sent only sets its bit)."""
    error = check_host_write(fw, ldev, lba, sectors, data)
    if error is not None:
        fw._out.append(HostDone(req_id, False, error, None))
        return
    fw.store.write_sectors(ldev, lba, data)
    pieces = fw.split_pieces(lba, data)
    waits = 0
    for pair in fw.pairs.by_master_ldev(fw.site, ldev):
        to_mirror = route_pieces(fw, pair, pieces)
        if to_mirror:
            sync = pair.mode == "sync"
            send_mirror(fw, pair, to_mirror, req_id if sync else None)
            waits += int(sync)
    if waits:
        fw.host_waits[req_id] = {"left": waits, "error": None}
    else:
        fw._out.append(HostDone(req_id, True, None, None))


def check_host_write(fw: DkcFirmware, ldev: int, lba: int, sectors: int, data: bytes) -> str | None:
    if len(data) != sectors * fw.store.sector_bytes or sectors <= 0:
        return f"data is {len(data)} bytes for {sectors} sectors"
    try:
        limit = fw.store.ldev_tracks(ldev) * fw.sectors_per_track
    except ValueError as exc:
        return str(exc)
    if lba < 0 or lba + sectors > limit:
        return f"lba {lba}+{sectors} beyond ldev {ldev} ({limit} sectors)"
    for pair in fw.pairs.by_remote_ldev(fw.site, ldev):
        if pair.state not in (P.SMPL, P.SSWS):
            return f"R-DEV {ldev} of pair {pair.name} is write protected ({pair.state})"
    for pair in fw.pairs.by_master_ldev(fw.site, ldev):
        if pair.state == P.PSUE and pair.fence == "data":
            return f"fence data: pair {pair.name} is suspended, remote cannot be updated"
    if len(fw.pending) >= int(fw.params["max_pending_writes"]):
        return f"too many mirror writes in flight ({len(fw.pending)})"
    return None


def route_pieces(fw: DkcFirmware, pair: P.Pair, pieces: list) -> list:
    """Which pieces of a host write go to the remote now; the others set bits."""
    if pair.state == P.PAIR:
        if pair.sent is not None:
            for track, _, _ in pieces:
                pair.sent[track] = True
        return list(pieces)
    if pair.state in (P.PSUS, P.PSUE):
        s1201_update_while_suspended(fw, pair, pieces)
        return []
    if pair.state != P.COPY:
        return []
    session = fw.sessions.get(pair.sid)
    if session is None or session.phase != "copying" or pair.name not in session.active:
        s1201_update_while_suspended(fw, pair, pieces)
        return []
    if pair.name in session.time_units:
        s1201_update_while_suspended(fw, pair, pieces)
        return []
    mirror = []
    for piece in pieces:
        track = piece[0]
        if pair.bitmap.test(track):
            continue  # not yet sent: its bit is already set
        if track < session.cursor[pair.name] or pair.sent[track]:
            pair.sent[track] = True
            mirror.append(piece)  # already sent: like mirror state
        else:
            pair.bitmap.set(track)
    return mirror


def s1201_update_while_suspended(fw: DkcFirmware, pair: P.Pair, pieces: list) -> None:
    """1201: "an update occurs on the master while suspended" -> 1202-1207,
    then 1208: "no: set the bit in the differential bitmap"."""
    fw.trace(1201, "update_while_suspended", pair=pair.name, tracks=[t for t, _, _ in pieces])
    queue = fw.tsq_for(pair)
    track_bytes = fw.store.track_bytes
    for track, offset, data in pieces:
        is_format = offset == 0 and len(data) == track_bytes
        lba = track * fw.sectors_per_track + offset
        need_bit = record_update(queue, fw.trace, pair.m_ldev, track, lba, data, is_format,
                                 bool(fw.params["format_shortcut"]))
        if need_bit:
            pair.bitmap.set(track)
            fw.trace(1208, "bitmap_set", pair=pair.name, track=track)


def send_mirror(fw: DkcFirmware, pair: P.Pair, pieces: list, req_id) -> None:
    site = pair.r_site
    seq = fw.next_seq.get(site, 0)
    fw.next_seq[site] = seq + 1
    fw.pending[(site, seq)] = {"req_id": req_id, "pair": pair.name, "tracks": [t for t, _, _ in pieces],
                               "pieces": list(pieces)}
    fw.send(site, {"kind": MsgKind.RC_WRITE.value, "seq": seq, "base": fw.seq_base.get(site, 0),
                   "pieces": [(pair.name, t, o, d) for t, o, d in pieces]})
    fw.trace(None, "mirror_sent", pair=pair.name, seq=seq, mode=pair.mode)


def mirror_failed(fw: DkcFirmware, pair: P.Pair, tracks: list[int], reason: str,
                  pieces: list | None = None) -> None:
    """The remote was not updated: suspend by error and remember the tracks.

    With the pieces at hand (a mirror write lost in flight, oldest first),
    they go through 1201-1208 like an update made while suspended, so the
    time-series queue stays complete and claim 3's ordered resync remains
    usable after a link cut under load; without them the queue can no
    longer vouch for the order and is marked incomplete."""
    if pair.bitmap is None:
        return
    if pieces:
        s1201_update_while_suspended(fw, pair, pieces)
    else:
        for track in tracks:
            pair.bitmap.set(track)
        if tracks:
            fw.tsq_for(pair).incomplete = True
    if pair.state in (P.PAIR, P.COPY) and pair.sid is None:
        pair.state = P.PSUE
        fw.trace(None, "pair_suspended", pair=pair.name, reason=reason)


def mirror_done(fw: DkcFirmware, key: tuple, ok: bool, error: str | None) -> None:
    entry = fw.pending.pop(key, None)
    if entry is None:
        return
    pair = fw.pairs.pairs.get(entry["pair"])
    if not ok and pair is not None:
        mirror_failed(fw, pair, entry["tracks"], error or "remote refused", entry.get("pieces"))
    req_id = entry["req_id"]
    if req_id is None or req_id not in fw.host_waits:
        return
    wait = fw.host_waits[req_id]
    if not ok and pair is not None and pair.fence == "data":
        wait["error"] = f"fence data: remote not updated ({error})"
    wait["left"] -= 1
    if wait["left"] == 0:
        del fw.host_waits[req_id]
        fw._out.append(HostDone(req_id, wait["error"] is None, wait["error"], None))


# ====================================================================== peer messages

def dispatch_peer(fw: DkcFirmware, now_ns: int, from_site: str, msg: dict) -> None:
    kind = msg.get("kind")
    handler = _PEER_HANDLERS.get(kind)
    if handler is None:
        fw.trace(None, "bad_peer_message", kind=str(kind), from_site=from_site)
        return
    nbytes = len(msg.get("data") or b"") + sum(len(p[3]) for p in msg.get("pieces") or [])
    if nbytes > MAX_MSG_DATA_BYTES:
        fw.trace(None, "oversized_peer_message", kind=kind, nbytes=nbytes)
        return
    try:
        handler(fw, now_ns, from_site, msg)
    except (KeyError, TypeError) as exc:  # malformed message: report, never crash the DKC
        fw.trace(None, "bad_peer_message", kind=kind, from_site=from_site, error=repr(exc))


def on_pair_create(fw, now_ns, from_site, msg):
    """Remote side of 351: accept the pairs (state COPY) and report normal end."""
    for name in msg["pairs"]:
        pair = fw.pairs.get(name)
        pair.state, pair.mode = P.COPY, msg["mode"]
    fw.send(from_site, {"kind": MsgKind.PAIR_CREATE_OK.value, "pairs": msg["pairs"], "ok": True})


def on_pair_create_ok(fw, now_ns, from_site, msg):
    """352: "master receives the remote's normal-end report" -> 353 start the copy."""
    fw.trace(352, MsgKind.PAIR_CREATE_OK.value, pairs=msg["pairs"])
    names = [n for n in msg["pairs"] if fw.pairs.get(n).state == P.COPY]
    if not names:
        return
    sid = fw.next_sid
    fw.next_sid += 1
    session = RM.MasterSession(sid=sid, kind=RM.INIT, remote_site=from_site, pair_names=names,
                               window=int(fw.params["init_window"]), phase="copying")
    for name in names:
        pair = fw.pairs.get(name)
        pair.sid = sid
        pair.sent = np.zeros(pair.bitmap.tracks, dtype=bool)
        session.active.append(name)
        session.cursor[name], session.searched[name], session.outstanding[name] = 0, False, 0
    fw.sessions[sid] = session
    fw.trace(353, "backup_copy_started", sid=sid, pairs=names)
    RM.pump(fw, session)


def on_pair_ready(fw, now_ns, from_site, msg):
    fw.pairs.get(msg["pair"]).state = P.PAIR


def on_pair_split(fw, now_ns, from_site, msg):
    for name in msg["pairs"]:
        fw.pairs.get(name).state = P.SMPL if msg["delete"] else P.PSUS


def on_copy_track(fw, now_ns, from_site, msg):
    """A track of the initial copy (353) or of the recovery copy (408 -> 506)."""
    pair = fw.pairs.pairs.get(msg["pair"])
    error = None
    if pair is None:
        error = f"no pair {msg['pair']}"
    elif RR.covers(fw.rsession, pair.name):
        if fw.rsession.sid == msg["sid"]:
            error = RR.protected_write(fw, fw.rsession, pair, msg["track"], msg["offset"], msg["data"])
        else:
            error = f"stale copy session {msg['sid']}"
    elif pair.state in (P.COPY, P.PAIR):
        write_direct(fw, pair.r_ldev, msg["track"], msg["offset"], msg["data"])
    else:
        error = f"pair {msg['pair']} not accepting copy ({pair.state})"
    fw.send(from_site, {"kind": MsgKind.COPY_TRACK_ACK.value, "sid": msg["sid"], "pair": msg["pair"],
                        "track": msg["track"], "ok": error is None, "error": error})


def write_direct(fw, ldev: int, track: int, offset: int, data: bytes) -> None:
    if offset == 0 and len(data) == fw.store.track_bytes:
        fw.write_home(ldev, track, data)
    else:
        fw.store.write_sectors(ldev, track * fw.sectors_per_track + offset, data)
        fw.disk_cost("write", ldev, track, len(data))


def on_copy_track_ack(fw, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is not None:
        RM.s409_write_end(fw, now_ns, session, msg)


def on_rc_write(fw, now_ns, from_site, msg):
    """Remote side of mirroring: apply updates in sequence order (async copy
    applies them in order, JP H6-290125), then acknowledge."""
    buffer = fw.reorder.setdefault(from_site, {})
    expect = fw.expect_seq.get(from_site)
    if expect is None:
        # start at the sender's base, not at the first update that happens to
        # arrive: updates lost before it (a restart, a dropped frame) leave a
        # gap that holds everything after it, instead of being skipped
        expect = int(msg.get("base", msg["seq"]))
    if msg["seq"] < expect:
        fw.send(from_site, {"kind": MsgKind.RC_WRITE_ACK.value, "seq": msg["seq"], "ok": True, "error": None})
        return
    if len(buffer) >= int(fw.params["max_pending_writes"]):
        raise OverflowError(f"reorder buffer for {from_site} full")
    buffer[msg["seq"]] = msg
    while expect in buffer:
        apply_rc_write(fw, from_site, buffer.pop(expect))
        expect += 1
    fw.expect_seq[from_site] = expect


def apply_rc_write(fw, from_site, msg):
    error = None
    for name, track, offset, data in msg["pieces"]:
        pair = fw.pairs.pairs.get(name)
        if pair is None or pair.state not in (P.PAIR, P.COPY):
            error = f"pair {name} not accepting updates"
            break
        if RR.covers(fw.rsession, name):
            error = RR.protected_write(fw, fw.rsession, pair, track, offset, data)
            if error:
                break
        else:
            write_direct(fw, pair.r_ldev, track, offset, data)
    fw.send(from_site, {"kind": MsgKind.RC_WRITE_ACK.value, "seq": msg["seq"], "ok": error is None,
                        "error": error})


def on_rc_write_ack(fw, now_ns, from_site, msg):
    mirror_done(fw, (from_site, msg["seq"]), bool(msg["ok"]), msg.get("error"))


def on_rc_config_req(fw, now_ns, from_site, msg):
    """Remote side of 403: report cache, parity tracks and spare disks."""
    counts = None
    if fw.params.get("n_disks"):
        counts = {"ldev_count": int(fw.params["n_ldevs"]), "disk_count": int(fw.params["n_disks"]),
                  "parity_disks": int(fw.params["n_parity_disks"]),
                  "spare_disks": int(fw.params["n_spare_disks"])}
    rows = [(r.kind, r.tracks) for r in fw.save_media.rows()]
    fw.send(from_site, {"kind": MsgKind.RC_CONFIG.value, "sid": msg["sid"], "rows": rows,
                        "counts": counts})


def on_rc_config(fw, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is None or session.phase != "config":
        return
    RM.s404_compute_n(fw, session, msg)
    RM.s405_send_start(fw, session)


def on_rc_start(fw, now_ns, from_site, msg):
    RR.s501_receive_start(fw, now_ns, from_site, msg)


def on_rc_ready(fw, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is not None and session.phase == "starting":
        RM.s406_ready_received(fw, now_ns, session, msg)


def on_rc_reached(fw, now_ns, from_site, msg):
    if fw.rsession is not None and fw.rsession.sid == msg["sid"]:
        RR.s513_record_reached(fw, fw.rsession, msg["pair"])


def on_rc_complete(fw, now_ns, from_site, msg):
    ok = fw.rsession is not None and fw.rsession.sid == msg["sid"] and fw.rsession.in_progress
    if ok:
        RR.s514_completion(fw, now_ns, fw.rsession)
    fw.send(from_site, {"kind": MsgKind.RC_COMPLETE_ACK.value, "sid": msg["sid"], "ok": ok})


def on_rc_complete_ack(fw, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is not None:
        RM.completion_acked(fw, session, msg)


def on_rc_aborted(fw, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is not None:
        RM.abort(fw, session, list(msg["rolled_back"]), reason="remote timed out and rolled back")


_PEER_HANDLERS = {
    MsgKind.PAIR_CREATE.value: on_pair_create, MsgKind.PAIR_CREATE_OK.value: on_pair_create_ok,
    MsgKind.PAIR_READY.value: on_pair_ready, MsgKind.PAIR_SPLIT.value: on_pair_split,
    MsgKind.COPY_TRACK.value: on_copy_track, MsgKind.COPY_TRACK_ACK.value: on_copy_track_ack,
    MsgKind.RC_WRITE.value: on_rc_write, MsgKind.RC_WRITE_ACK.value: on_rc_write_ack,
    MsgKind.RC_CONFIG_REQ.value: on_rc_config_req, MsgKind.RC_CONFIG.value: on_rc_config,
    MsgKind.RC_START.value: on_rc_start, MsgKind.RC_READY.value: on_rc_ready,
    MsgKind.RC_REACHED.value: on_rc_reached, MsgKind.RC_COMPLETE.value: on_rc_complete,
    MsgKind.RC_COMPLETE_ACK.value: on_rc_complete_ack, MsgKind.RC_ABORTED.value: on_rc_aborted,
}


# ====================================================================== console commands

RESYNC_DEFAULTS = {"method": "save-old", "order": "bitmap", "window": 1, "unit": "ldev"}


def run_command(fw: DkcFirmware, now_ns: int, cmd: dict) -> dict:
    name = cmd.get("cmd")
    handler = _COMMANDS.get(name)
    if handler is None:
        raise ValueError(f"unknown command {name!r}")
    try:
        return handler(fw, now_ns, cmd)
    except KeyError as exc:
        raise ValueError(f"{name}: missing key {exc}") from None


def master_pairs(fw: DkcFirmware, target: str) -> list[P.Pair]:
    found = fw.pairs.select(target)
    bad = [p.name for p in found if p.m_site != fw.site]
    if bad:
        raise ValueError(f"pairs {bad} are not mastered at {fw.site}")
    return found


def cmd_paircreate(fw, now_ns, cmd):
    """350: "pair-forming instruction (from host CPU or SVP)" -> 351 send it to the remote."""
    found = master_pairs(fw, cmd["target"])
    mode, fence = cmd.get("mode", "sync"), cmd.get("fence", "never")
    if mode not in P.MODES or fence not in P.FENCES:
        raise ValueError(f"bad mode {mode!r} or fence {fence!r}")
    if any(p.state != P.SMPL for p in found):
        raise ValueError(f"pairs must be SMPL: {[(p.name, p.state) for p in found]}")
    for pair in found:
        pair.mode, pair.fence, pair.state = mode, fence, P.COPY
        pair.bitmap = DiffBitmap(fw.store.ldev_tracks(pair.m_ldev))
        pair.bitmap.set_all()
        pair.sent = None
        fw.trace(350, "pair_form_instruction", pair=pair.name, mode=mode, fence=fence)
    for site in sorted({p.r_site for p in found}):
        names = [p.name for p in found if p.r_site == site]
        fw.send(site, {"kind": MsgKind.PAIR_CREATE.value, "pairs": names, "mode": mode})
        fw.trace(351, "pair_form_sent", site=site, pairs=names)
    return {"ok": True, "pairs": [p.name for p in found]}


def cmd_pairsplit(fw, now_ns, cmd):
    found = master_pairs(fw, cmd["target"])
    delete = bool(cmd.get("delete", False))
    busy = [p.name for p in found if p.sid is not None]
    if busy:
        raise ValueError(f"pairs {busy} are in a copy; wait for it to end")
    if not delete and any(p.state != P.PAIR for p in found):
        raise ValueError(f"pairsplit needs PAIR state: {[(p.name, p.state) for p in found]}")
    for pair in found:
        pair.state = P.SMPL if delete else P.PSUS
        if delete:
            pair.bitmap = None
            fw.tsq.pop(fw.tsq_unit_of(pair), None)
    for site in sorted({p.r_site for p in found}):
        fw.send(site, {"kind": MsgKind.PAIR_SPLIT.value, "delete": delete,
                       "pairs": [p.name for p in found if p.r_site == site]})
    return {"ok": True, "pairs": [p.name for p in found], "state": P.SMPL if delete else P.PSUS}


def resync_options(fw, cmd) -> dict:
    opts = {**RESYNC_DEFAULTS, **{k: fw.params[k] for k in
            ("keep_raid5", "spares_usable", "cache_save_threshold_tracks")}}
    opts.update({k: v for k, v in cmd.items() if k not in ("cmd", "target")})
    if "max_time_ns" not in opts or int(opts["max_time_ns"]) <= 0:
        raise ValueError("pairresync needs max_time_ns > 0")
    if opts["method"] not in RR.METHODS or opts["order"] not in RM.ORDERS or opts["unit"] not in RR.UNITS:
        raise ValueError(f"bad method/order/unit {opts['method']}/{opts['order']}/{opts['unit']}")
    if int(opts["window"]) < 1:
        raise ValueError(f"window must be >= 1, got {opts['window']}")
    return opts


def cmd_pairresync(fw, now_ns, cmd):
    """401: the recovery-copy instruction; one copy session per remote site."""
    found = master_pairs(fw, cmd["target"])
    opts = resync_options(fw, cmd)
    bad = [(p.name, p.state) for p in found if p.state not in (P.PSUS, P.PSUE) or p.sid is not None]
    if bad:
        raise ValueError(f"pairresync needs PSUS/PSUE pairs not in a copy: {bad}")
    if "format_shortcut" in cmd:
        fw.params["format_shortcut"] = bool(cmd["format_shortcut"])
    sids = []
    for site in sorted({p.r_site for p in found}):
        sid = fw.next_sid
        fw.next_sid += 1
        session = RM.s401_receive_instruction(fw, sid, [p for p in found if p.r_site == site], opts)
        fw.sessions[sid] = session
        RM.s403_request_config(fw, session)
        sids.append(sid)
    return {"ok": True, "sids": sids, "pairs": [p.name for p in found]}


def cmd_horctakeover(fw, now_ns, cmd):
    """Make the R-DEVs writable (SSWS).  A recovery copy in progress is first
    rolled back as on timeout, so the takeover image is consistent."""
    found = fw.pairs.select(cmd["target"])
    bad = [p.name for p in found if p.r_site != fw.site]
    if bad:
        raise ValueError(f"pairs {bad} are not remote at {fw.site}")
    result = None
    if any(RR.covers(fw.rsession, p.name) for p in found):
        result = RR.s515_timeout(fw, now_ns, fw.rsession, reason="takeover")
    for pair in found:
        pair.state = P.SSWS
    return {"ok": True, "pairs": [p.name for p in found], "rollback": result}


def cmd_link(fw, now_ns, cmd):
    """The DKC actor reports the path state to `site`."""
    site, up = cmd["site"], cmd["cmd"] == "link_up"
    fw.link_up[site] = up
    if up:
        fw.seq_base[site] = fw.next_seq.get(site, 0)
        return {"ok": True, "site": site, "up": True}
    for sid in sorted(fw.sessions):
        session = fw.sessions[sid]
        if session.remote_site == site:
            RM.abort(fw, session, list(session.pair_names), reason="link down")
    for key in sorted(k for k in fw.pending if k[0] == site):
        mirror_done(fw, key, False, "link down")
    for _, pair in sorted(fw.pairs.pairs.items()):
        if pair.state in (P.PAIR, P.COPY) and not RR.covers(fw.rsession, pair.name) and (
                pair.r_site == site or pair.m_site == site):
            pair.state = P.PSUE
            fw.trace(None, "pair_suspended", pair=pair.name, reason="link down")
    fw.expect_seq[site] = None
    fw.reorder.pop(site, None)
    return {"ok": True, "site": site, "up": False}


def pair_row(fw, pair: P.Pair) -> dict:
    row = {"name": pair.name, "group": pair.group, "role": pair.role(fw.site), "state": pair.state,
           "mode": pair.mode, "fence": pair.fence, "m": f"{pair.m_site}:{pair.m_ldev}",
           "r": f"{pair.r_site}:{pair.r_ldev}"}
    if pair.bitmap is not None:
        diff = pair.bitmap.count()
        row.update(diff_tracks=diff, copy_pct=round(100.0 * (1 - diff / pair.bitmap.tracks), 1))
    return row


def cmd_pairdisplay(fw, now_ns, cmd):
    target = cmd.get("target")
    found = fw.pairs.select(target) if target else [p for _, p in sorted(fw.pairs.pairs.items())]
    return {"pairs": [pair_row(fw, p) for p in found]}


def cmd_show(fw, now_ns, cmd):
    what = cmd.get("what")
    if what == "recovery-plan":
        return {"sessions": [{"sid": s.sid, "kind": s.kind, "remote": s.remote_site, "phase": s.phase,
                              "plan": dict(s.plan), "waiting": list(s.waiting), "active": list(s.active),
                              "reached": list(s.reached), "window": s.window, "order": s.order}
                             for _, s in sorted(fw.sessions.items())], "last_remote": fw.last_recovery}
    if what == "save-area":
        rs = fw.rsession
        return {"in_progress": bool(rs and rs.in_progress),
                "rows": rs.save_bitmap.describe() if rs else [],
                "cache_tracks": len(rs.cache) if rs else 0, "saved_nodes": len(rs.saved) if rs else 0,
                "double_faults": list(fw.double_faults)}
    if what == "bitmap":
        pairs = fw.pairs.by_master_ldev(fw.site, int(cmd["ldev"]))
        return {p.name: p.bitmap.set_tracks() for p in pairs if p.bitmap is not None}
    if what == "queue":
        pairs = fw.pairs.by_master_ldev(fw.site, int(cmd["ldev"]))
        units = sorted({fw.tsq_unit_of(p) for p in pairs})
        return {u: queue_rows(fw.tsq[u]) for u in units if u in fw.tsq}
    if what == "config":
        return {"site": fw.site, "params": dict(sorted(fw.params.items()))}
    raise ValueError(f"unknown show {what!r}")


def queue_rows(queue: TimeSeriesQueue) -> dict:
    rows, node_id = [], queue.head
    while node_id is not None:
        node = queue.nodes[node_id]
        rows.append({"node": node.node_id, "type": node.update_type, "valid": node.valid,
                     "ldev": node.ldev, "track": node.track})
        node_id = node.next
    return {"usable": queue.usable(), "nodes": rows}


def cmd_set(fw, now_ns, cmd):
    key = cmd.get("key")
    if key not in DEFAULTS:
        raise ValueError(f"unknown parameter {key!r}")
    fw.params[key] = cmd["value"]
    return {"ok": True, key: cmd["value"]}


_COMMANDS = {"paircreate": cmd_paircreate, "pairsplit": cmd_pairsplit, "pairresync": cmd_pairresync,
             "horctakeover": cmd_horctakeover, "link_down": cmd_link, "link_up": cmd_link,
             "pairdisplay": cmd_pairdisplay, "show": cmd_show, "set": cmd_set}
