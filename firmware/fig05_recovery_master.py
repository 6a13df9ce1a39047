"""Recovery copy, master side (Fig. 5, steps 401-413), and the initial copy
of pair forming (Fig. 4, 353) which runs on the same engine without
protection at the remote.

Beyond the patent: (a) a window of W outstanding tracks (W=1 is the
patent's stop-and-wait 408/409); (b) admission of waiting pairs by their real
differential-track counts against the remote's save capacity, on top of n;
(c) every track sent during the copy is remembered per pair (`pair.sent`), so
that when the remote rolls back (or may have) the bits are set again.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass, field, fields

import numpy as np

from firmware import pair_table as P
from firmware.protocol import METHODS, ORDERS, SAVE_OLD, STAGE_NEW, UNITS, MsgKind, PairResync

if TYPE_CHECKING:
    from firmware.context import FirmwareHost

INIT, RECOVERY = "init", "recovery"


def compute_n(ldev_count: int, disk_count: int, parity_disks: int, spare_disks: int,
              keep_raid5: bool = False, spares_usable: bool = True,
              cache_ldev_equivalents: float = 0.0) -> int:
    """404: "compute the save-area capacity and n, the most pairs
    recovery-copied at once".  Patent example (0047): 64 LDEVs on 24 small
    disks, 4 parity-disk equivalents, 2 spares, cache not counted:
    n = floor(64/24 x (4+2)) = 16."""
    if disk_count <= 0 or ldev_count < 0:
        raise ValueError(f"bad counts: {ldev_count} ldevs on {disk_count} disks")
    save_disks = (0 if keep_raid5 else parity_disks) + (spare_disks if spares_usable else 0)
    return (ldev_count * save_disks) // disk_count + int(cache_ldev_equivalents)


@dataclass
class MasterSession:
    sid: int
    kind: str
    remote_site: str
    pair_names: list[str]
    window: int
    order: str = "bitmap"
    method: str = "save-old"
    unit: str = "ldev"
    max_time_ns: int = 0
    options: dict = field(default_factory=dict)
    phase: str = "config"  # config -> starting -> copying -> completing
    deadline_at_ns: int | None = None
    n_max: int = 1 << 30
    capacity_tracks: int = 1 << 62
    waiting: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    reached: list[str] = field(default_factory=list)
    cursor: dict[str, int] = field(default_factory=dict)
    searched: dict[str, bool] = field(default_factory=dict)
    outstanding: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    time_units: dict[str, str] = field(default_factory=dict)  # pair -> queue unit (time order)
    rr: int = 0
    plan: dict = field(default_factory=dict)
    #: number of the next copy message (the remote applies them in this order only)
    next_copy_seq: int = 0
    #: bitmap order: (pair, track) whose disk read (CopyRead) is being timed
    reading: list[tuple[str, int]] = field(default_factory=list)
    #: bitmap order: (pair, track) read and waiting for a place in the window
    ready: list[tuple[str, int]] = field(default_factory=list)

    @property
    def timer_name(self) -> str:
        return f"rc_deadline:{self.sid}"


# ---------------------------------------------------------------- 401-406

def s401_receive_instruction(fw: FirmwareHost, sid: int, pairs: list, opts: dict) -> MasterSession:
    """401: "recovery-copy instruction event (host CPU or SVP)"."""
    session = MasterSession(sid=sid, kind=RECOVERY, remote_site=pairs[0].r_site,
                            pair_names=[p.name for p in pairs], window=int(opts["window"]),
                            order=opts["order"], method=opts["method"], unit=opts["unit"],
                            options=dict(opts))
    session.max_time_ns = s402_get_max_time(fw, session, opts)
    for pair in pairs:
        pair.state, pair.sid = P.COPY, sid
        pair.sent = fw.pair_bitmap(pair, "sent")
    session.waiting = list(session.pair_names)
    fw.trace(401, "rc_instruction", sid=sid, pairs=session.pair_names, remote=session.remote_site)
    return session


def s402_get_max_time(fw: FirmwareHost, session: MasterSession, opts: dict) -> int:
    """402: "get the allowed maximum time T from the SVP"."""
    max_time_ns = int(opts["max_time_ns"])
    fw.trace(402, "rc_max_time", sid=session.sid, max_time_ns=max_time_ns)
    return max_time_ns


def s403_request_config(fw: FirmwareHost, session: MasterSession) -> None:
    """403: "get the remote's configuration: cache capacity, parity tracks, spare disks"."""
    fw.send(session.remote_site, {"kind": MsgKind.RC_CONFIG_REQ.value, "sid": session.sid})
    fw.trace(403, "rc_config_requested", sid=session.sid)


def s404_compute_n(fw: FirmwareHost, session: MasterSession, config: dict) -> None:
    """404: "from the user's conditions (keep RAID5 level or not, spare disks
    usable or not, maximum cache occupancy for saved data) compute the
    save-area capacity and n"."""
    opts = session.options
    keep_raid5, spares_usable = bool(opts["keep_raid5"]), bool(opts["spares_usable"])
    rows_tracks, cache_tracks = save_capacity(config["rows"], opts)
    counts = config.get("counts") or {}
    if counts.get("disk_count"):
        n = compute_n(counts["ldev_count"], counts["disk_count"], counts["parity_disks"],
                      counts["spare_disks"], keep_raid5, spares_usable)
    else:
        n = len(session.pair_names)
    if session.method == "none":
        rows_tracks, cache_tracks = 1 << 40, 0
    session.n_max = max(1, int(opts.get("max_pairs") or n))
    session.capacity_tracks = rows_tracks + cache_tracks
    session.plan = {"n": n, "n_used": session.n_max, "capacity_tracks": session.capacity_tracks,
                    "cache_tracks": cache_tracks, "row_tracks": rows_tracks}
    fw.trace(404, "rc_n_computed", sid=session.sid, **session.plan)


def save_capacity(rows, opts: dict) -> tuple[int, int]:
    """404's save-area capacity in tracks, (on parity and spare rows, in
    cache), under the user's conditions (keep RAID5, spares usable, cache
    threshold)."""
    keep_raid5, spares_usable = bool(opts["keep_raid5"]), bool(opts["spares_usable"])
    rows_tracks = sum(t for kind, t in rows
                      if (kind == "parity" and not keep_raid5) or (kind == "spare" and spares_usable))
    return rows_tracks, int(opts["cache_save_threshold_tracks"])


def copy_need_tracks(needs: list[int], method: str) -> int:
    """The save area a protected copy of pairs with these differential-track
    counts needs at the least: room for its largest pair, or 412 cannot
    admit even one (unprotected: none). A unit-group copy whose pairs
    together outgrow the area still starts, and 412 stops it when the area
    fills (the reason is recorded)."""
    if method == "none" or not needs:
        return 0
    return max(needs)


def s405_send_start(fw: FirmwareHost, session: MasterSession) -> None:
    """405: "tell the remote to start; send T and the other parameters"."""
    opts = session.options
    fw.send(session.remote_site, {
        "kind": MsgKind.RC_START.value, "sid": session.sid, "max_time_ns": session.max_time_ns,
        "method": session.method, "unit": session.unit, "pairs": list(session.pair_names),
        "keep_raid5": bool(opts["keep_raid5"]), "spares_usable": bool(opts["spares_usable"]),
        "cache_save_threshold_tracks": int(opts["cache_save_threshold_tracks"])})
    session.phase = "starting"
    fw.trace(405, "rc_start_sent", sid=session.sid)


def s406_ready_received(fw: FirmwareHost, now_ns: int, session: MasterSession, msg: dict) -> None:
    """406: "wait for the remote's answer"."""
    fw.trace(406, "rc_ready_received", sid=session.sid, ok=msg["ok"])
    if not msg["ok"]:
        abort(fw, session, list(session.pair_names), reason=msg.get("error") or "refused")
        return
    session.phase = "copying"
    session.deadline_at_ns = now_ns + session.max_time_ns + int(
        session.options.get("deadline_slack_ns", session.max_time_ns))
    fw.set_timer(session.timer_name, session.deadline_at_ns)
    s412_admit_next(fw, session)
    pump(fw, session)


# ---------------------------------------------------------------- admission (412)

def pair_need_tracks(pair) -> int:
    """Distinct tracks the remote may have to save for this pair."""
    return int(np.count_nonzero(pair.bitmap.bits | pair.sent.bits))


def frees_on_reached(session: MasterSession) -> bool:
    """Unit ldev: the remote frees a reached pair's saved (save-old) or
    staged-and-applied (stage-new) tracks."""
    return session.method in (SAVE_OLD, STAGE_NEW) and session.unit == "ldev"


def s412_admit_next(fw: FirmwareHost, session: MasterSession) -> None:
    """412: "admit the next waiting pair (at most n at once)" — and, beyond
    the patent, only while the save area can hold its differential tracks."""
    while session.waiting and len(session.active) < session.n_max:
        name = session.waiting[0]
        group = [name]
        if session.order == "time" and fw.tsq_usable_for(fw.pairs.get(name), session.pair_names):
            unit = fw.tsq_unit_of(fw.pairs.get(name))
            group = [n for n in session.waiting if fw.tsq_unit_of(fw.pairs.get(n)) == unit]
        holders = session.active + ([] if frees_on_reached(session) else session.reached)
        in_use = sum(pair_need_tracks(fw.pairs.get(n)) for n in holders)
        need = sum(pair_need_tracks(fw.pairs.get(n)) for n in group)
        if session.kind == RECOVERY and in_use + need > session.capacity_tracks:
            if not session.active:
                fw.trace(None, "save_area_too_small", sid=session.sid, pair=name, need=need,
                         capacity=session.capacity_tracks)
                abort(fw, session, list(session.pair_names), reason="save area too small")
            return
        for n in group:
            session.waiting.remove(n)
            session.active.append(n)
            session.cursor[n], session.searched[n], session.outstanding[n] = 0, False, 0
            if session.order == "time" and fw.tsq_usable_for(fw.pairs.get(n), session.pair_names):
                session.time_units[n] = fw.tsq_unit_of(fw.pairs.get(n))
        fw.trace(412, "pair_admitted", sid=session.sid, pairs=group, active=len(session.active))


# ---------------------------------------------------------------- 407-411 loop

def pump(fw: FirmwareHost, session: MasterSession) -> None:
    """Keep up to `window` messages outstanding; detect reached pairs and completion.
    Beyond the patent: a bitmap-order track is read from the disks first
    (CopyRead) and sent when its read is done; the reads being timed, the
    tracks read and not yet sent and the messages in flight together stay
    within the window plus ``copy_read_ahead`` tracks, so the copy reads at
    the pace of the link and the disks, never faster than either."""
    progress = True
    while progress and session.phase == "copying":
        progress = False
        for name in list(session.active):
            if done_sending(fw, session, name) and session.outstanding[name] == 0:
                s411_reached(fw, session, name)
                s412_admit_next(fw, session)
                progress = True
        while session.ready and session.in_flight < session.window and session.phase == "copying":
            send_read_track(fw, session, *session.ready.pop(0))
            progress = True
        while session.active and session.phase == "copying" and send_one(fw, session):
            progress = True
    if session.phase == "copying" and not session.active and not session.waiting:
        s413_complete(fw, session)


def read_budget_left(fw: FirmwareHost, session: MasterSession) -> bool:
    """Room for one more copy read: reads + read tracks + messages in flight
    stay under the window plus the read-ahead."""
    held = len(session.reading) + len(session.ready) + session.in_flight
    return held < session.window + int(fw.params["copy_read_ahead"])


def done_sending(fw: FirmwareHost, session: MasterSession, name: str) -> bool:
    pair = fw.pairs.get(name)
    if name in session.time_units:
        queue = fw.tsq[session.time_units[name]]
        if queue.usable():
            return len(queue) == 0
        del session.time_units[name]  # overflowed mid-copy: fall back to bitmap order
        session.cursor[name], session.searched[name] = 0, False
        fw.trace(None, "time_order_fallback", sid=session.sid, pair=name)
    return pair.bitmap.next_set(0) is None


def send_one(fw: FirmwareHost, session: MasterSession) -> bool:
    """Round-robin over active pairs: start the next track of one of them (a
    read in bitmap order, a message in time order), if its budget allows."""
    count = len(session.active)
    for i in range(count):
        name = session.active[(session.rr + i) % count]
        if name in session.time_units:
            sent = session.in_flight < session.window and send_from_queue(fw, session, name)
        else:
            sent = read_budget_left(fw, session) and send_from_bitmap(fw, session, name)
        if sent:
            session.rr = (session.rr + i + 1) % max(1, count)
            return True
    return False


def send_from_bitmap(fw: FirmwareHost, session: MasterSession, name: str) -> bool:
    """Pick the next marked track (407/410) and read it from the disks; it is
    sent (408) when the read is done (``copy_read_done``). The track counts
    as sent from now on: its bit is cleared and a host write to it is
    mirrored; the bytes are taken when the read ends, so they hold that write."""
    pair = fw.pairs.get(name)
    if not session.searched[name]:
        track = s407_search(fw, session, pair)
        session.searched[name] = True
    else:
        track = s410_search_next(fw, session, pair)
    if track is None:
        return False
    mark_sent(session, pair, [track])
    session.reading.append((name, track))
    fw.copy_read(session.sid, name, pair.m_ldev, track)
    return True


def copy_read_done(fw: FirmwareHost, now_ns: int, sid: int, name: str, track: int) -> None:
    """The DKC finished timing the read of a track of copy ``sid``: send it
    when the window has room, else hold it (read ahead) until an ack."""
    session = fw.sessions.get(sid)
    if session is None or (name, track) not in session.reading:
        return   # the copy ended (aborted) while the disks read
    session.reading.remove((name, track))
    if session.phase != "copying":
        return
    if session.in_flight < session.window and not session.ready:
        send_read_track(fw, session, name, track)
    else:
        session.ready.append((name, track))
    pump(fw, session)


def send_read_track(fw: FirmwareHost, session: MasterSession, name: str, track: int) -> None:
    pair = fw.pairs.get(name)
    try:
        data = fw.read_copied(pair.m_ldev, track)
    except ValueError as exc:   # the source track is lost here: never send bytes nobody can vouch for
        abort(fw, session, list(session.pair_names), reason=f"data loss at {fw.site}: {exc}")
        return
    s408_issue_write(fw, session, pair, [(track, 0, data)])


def send_from_queue(fw: FirmwareHost, session: MasterSession, name: str) -> bool:
    """Time-series order (claim 3): send the oldest valid nodes of the unit.
    Beyond the patent: consecutive head nodes of one pair go in one message
    (a batch, in queue order, at most one track's bytes), so a queue of
    small updates costs one controller command per track, not per update;
    the remote applies the pieces in that order."""
    queue = fw.tsq[session.time_units[name]]
    pair, pieces, nbytes = None, [], 0
    while len(queue):
        node = queue.head_node()
        if not node.valid:
            queue.pop_head()
            continue
        owner = next(p for p in fw.pairs.by_master_ldev(fw.site, node.ldev) if p.name in session.active)
        size = queue.data_bytes(node)
        if pair is not None and (owner is not pair or nbytes + size > fw.store.track_bytes):
            break   # the next update is another pair's, or would overfill the batch: next message
        queue.pop_head()
        pair = owner
        fw.trace(407 if not session.searched[pair.name] else 410, "tsq_head", sid=session.sid,
                 pair=pair.name, track=node.track, node=node.node_id)
        session.searched[pair.name] = True
        pieces.append((node.track, node.phys_lba - node.track * fw.sectors_per_track, queue.take_data(node)))
        nbytes += size
    if not pieces:
        return False
    mark_sent(session, pair, [t for t, _, _ in pieces])
    s408_issue_write(fw, session, pair, pieces)
    return True


def s407_search(fw: FirmwareHost, session: MasterSession, pair) -> int | None:
    """407: "search the differential bitmap for a marked track"."""
    track = pair.bitmap.next_set(0)
    fw.trace(407, "bitmap_search", sid=session.sid, pair=pair.name, track=track)
    return track


def s410_search_next(fw: FirmwareHost, session: MasterSession, pair) -> int | None:
    """410: "search the next marked track (loop 407-410)"."""
    track = pair.bitmap.next_set(session.cursor[pair.name])
    if track is None:
        track = pair.bitmap.next_set(0)  # bits set again behind the cursor
    fw.trace(410, "bitmap_search_next", sid=session.sid, pair=pair.name, track=track)
    return track


def mark_sent(session: MasterSession, pair, tracks: list[int]) -> None:
    """The tracks of one message to come count as sent: the remote may hold
    them from now on (an abort sets their bits again), and the pair is not
    reached before its answer."""
    for track in tracks:
        if pair.name not in session.time_units:
            pair.bitmap.clear(track)  # time order: bits stay until the unit reached
        pair.sent.set(track)
        session.cursor[pair.name] = max(session.cursor[pair.name], track + 1)
    session.outstanding[pair.name] += 1


def s408_issue_write(fw: FirmwareHost, session: MasterSession, pair, pieces: list[tuple[int, int, bytes]]) -> None:
    """408: "build and issue a write command carrying that track" (in time
    order: the batch of updates ``pieces``, each (track, offset, data))."""
    session.in_flight += 1
    assert session.in_flight <= session.window, f"{session.in_flight} messages in flight, window {session.window}"
    seq = session.next_copy_seq
    session.next_copy_seq += 1
    fw.send(session.remote_site, {"kind": MsgKind.COPY_TRACK.value, "sid": session.sid, "pair": pair.name,
                                  "seq": seq, "pieces": pieces})
    # the initial copy's sends are part of 353 but not its end: their own name, no step
    fw.trace(408 if session.kind == RECOVERY else None,
             "track_sent" if session.kind == RECOVERY else "initial_track_sent", sid=session.sid,
             pair=pair.name, track=pieces[0][0], pieces=len(pieces), seq=seq, in_flight=session.in_flight)


def s409_write_end(fw: FirmwareHost, now_ns: int, session: MasterSession, msg: dict) -> None:
    """409: "wait for the remote's write-end report"."""
    name = msg["pair"]
    fw.trace(409 if session.kind == RECOVERY else None,
             "write_end" if session.kind == RECOVERY else "initial_write_end", sid=session.sid, pair=name,
             track=msg["track"], ok=msg["ok"])
    if not msg["ok"]:
        abort(fw, session, list(session.pair_names), reason=msg.get("error") or "write refused")
        return
    session.outstanding[name] -= 1
    session.in_flight -= 1
    assert session.outstanding[name] >= 0 and session.in_flight >= 0, \
        f"write-end without a write in flight (pair {name}, sid {session.sid})"
    pump(fw, session)


def s411_reached(fw: FirmwareHost, session: MasterSession, name: str) -> None:
    """411: "when all of pair i is sent: send 'recovery reached' for pair i"."""
    pair = fw.pairs.get(name)
    session.active.remove(name)
    session.reached.append(name)
    pair.state = P.PAIR
    if name in session.time_units:
        pair.bitmap.clear_all()  # the unit's queue is drained
    else:
        fw.tsq_after_reached(pair)
    if session.kind == INIT:
        fw.send(session.remote_site, {"kind": MsgKind.PAIR_READY.value, "sid": session.sid, "pair": name})
        fw.trace(None, "initial_copy_done", pair=name)
        pair.sid, pair.sent = None, None
        return
    fw.send(session.remote_site, {"kind": MsgKind.RC_REACHED.value, "sid": session.sid, "pair": name})
    fw.trace(411, "recovery_reached", sid=session.sid, pair=name)


def s413_complete(fw: FirmwareHost, session: MasterSession) -> None:
    """413: "when all pairs are done: send 'recovery copy complete'"."""
    if session.kind == INIT:
        # 353 "-> mirror state": every pair of the paircreate is PAIR now
        fw.trace(353, "pairs_mirroring", sid=session.sid, pairs=list(session.pair_names))
        fw.sessions.pop(session.sid, None)
        return
    session.phase = "completing"
    fw.send(session.remote_site, {"kind": MsgKind.RC_COMPLETE.value, "sid": session.sid})
    fw.trace(413, "recovery_complete_sent", sid=session.sid)


def completion_acked(fw: FirmwareHost, session: MasterSession, msg: dict) -> None:
    """The remote confirmed 520: the recovery copy is over, every pair mirrors."""
    if not msg["ok"]:
        abort(fw, session, list(session.pair_names), reason="remote had rolled back")
        return
    for name in session.pair_names:
        pair = fw.pairs.get(name)
        pair.sid, pair.sent = None, None
    fw.cancel_timer(session.timer_name)
    fw.sessions.pop(session.sid, None)
    fw.trace(None, "recovery_copy_done", sid=session.sid)


def abort(fw: FirmwareHost, session: MasterSession, rolled_back: list[str], reason: str) -> None:
    """The copy failed (link down, remote timeout, refusal, deadline): every
    pair the remote rolled back (or may have) gets back the bits of the
    tracks it sent, and is suspended by error."""
    for name in session.pair_names:
        pair = fw.pairs.get(name)
        if name in rolled_back or name not in session.reached:
            if pair.sent is not None:
                pair.bitmap.merge(pair.sent)
            fw.tsq_mark_incomplete(pair)
            pair.state = P.PSUE
        pair.sid, pair.sent = None, None
    session.phase = "aborted"
    fw.cancel_timer(session.timer_name)
    fw.sessions.pop(session.sid, None)
    fw.trace(None, "recovery_copy_aborted", sid=session.sid, reason=reason, rolled_back=rolled_back)


# ------------------------------------------------------------ peer messages and the command
RESYNC_DEFAULTS = {"method": SAVE_OLD, "order": "bitmap", "window": 1, "unit": "ldev"}


def on_rc_config(fw: FirmwareHost, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is None or session.phase != "config":
        return
    s404_compute_n(fw, session, msg)
    s405_send_start(fw, session)


def on_rc_ready(fw: FirmwareHost, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is not None and session.phase == "starting":
        s406_ready_received(fw, now_ns, session, msg)


def on_rc_complete_ack(fw: FirmwareHost, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is not None:
        completion_acked(fw, session, msg)


def on_rc_aborted(fw: FirmwareHost, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is not None:
        why = msg.get("reason", "timer")
        abort(fw, session, list(msg["rolled_back"]),
              reason="remote timed out and rolled back" if why == "timer" else f"remote rolled back ({why})")


def resync_options(fw: FirmwareHost, req: PairResync) -> dict:
    opts = {**RESYNC_DEFAULTS, **{k: fw.params[k] for k in
            ("keep_raid5", "spares_usable", "cache_save_threshold_tracks")}}
    opts.update({f.name: getattr(req, f.name) for f in fields(req)
                 if f.name != "target" and getattr(req, f.name) is not None})
    if "max_time_ns" not in opts or int(opts["max_time_ns"]) <= 0:
        raise ValueError("pairresync needs max_time_ns > 0")
    if opts["method"] not in METHODS or opts["order"] not in ORDERS or opts["unit"] not in UNITS:
        raise ValueError(f"bad method/order/unit {opts['method']}/{opts['order']}/{opts['unit']}")
    if int(opts["window"]) < 1:
        raise ValueError(f"window must be >= 1, got {opts['window']}")
    return opts


def cmd_pairresync(fw: FirmwareHost, now_ns: int, req: PairResync) -> dict:
    """401: the recovery-copy instruction; one copy session per remote site.

    As CCI does, a group's suspended pairs are resynced and its PAIR pairs
    left alone; a pair named alone must be suspended. One recovery copy at a
    time per remote: a second one would supersede (roll back) the running
    copy at the remote, so it is refused with the running copy's name."""
    named = P.master_pairs(fw, req.target)
    opts = resync_options(fw, req)
    found = [p for p in named if p.state in (P.PSUS, P.PSUE) and p.sid is None]
    if not found:
        raise ValueError(f"pairresync {req.target}: no suspended pair to resync "
                         f"({', '.join(f'{p.name} {p.state}' for p in named)})")
    if len(named) == 1 and named[0] is not found[0]:
        raise ValueError(f"pairresync needs a PSUS/PSUE pair not in a copy: {named[0].name} is {named[0].state}")
    for site in sorted({p.r_site for p in found}):
        running = [s for _, s in sorted(fw.sessions.items()) if s.kind == RECOVERY and s.remote_site == site]
        if running:
            raise ValueError(f"pairresync {req.target}: recovery copy {running[0].sid} to {site} is running "
                             f"({', '.join(running[0].pair_names)}); resync these pairs after it ends")
    if req.format_shortcut is not None:
        fw.params["format_shortcut"] = bool(req.format_shortcut)
    sids = []
    for site in sorted({p.r_site for p in found}):
        sid = fw.next_sid
        fw.next_sid += 1
        session = s401_receive_instruction(fw, sid, [p for p in found if p.r_site == site], opts)
        fw.sessions[sid] = session
        s403_request_config(fw, session)
        sids.append(sid)
    return {"ok": True, "sids": sids, "pairs": [p.name for p in found]}
