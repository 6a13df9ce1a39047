"""Forming pairs and mirroring (Fig. 4, steps 350-353), and the other pair
commands of the CCI grammar (pairsplit, horctakeover, pairdisplay).

350: a pair-forming instruction arrives (from the host CPU or the SVP);
351: it is sent to the remote, which accepts the pairs (state COPY);
352: the master receives the remote's normal-end report;
353: the initial (backup) copy runs, then the pair mirrors (PAIR).
The copy engine of 353 is the recovery copy's (``fig05_recovery_master``)
without protection at the remote.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np


from firmware import fig05_recovery_master as RM
from firmware import fig06_09_recovery_remote as RR
from firmware import pair_table as P
from firmware.mirror import write_direct
from firmware.protocol import FENCES, MODES, HorcTakeover, MsgKind, PairCreate, PairSplit

if TYPE_CHECKING:
    from firmware.context import FirmwareHost


def s350_pair_form_instruction(fw: FirmwareHost, now_ns: int, req: PairCreate) -> dict:
    """350: "pair-forming instruction (from host CPU or SVP)" -> 351 send it to the remote."""
    found = P.master_pairs(fw, req.target)
    mode, fence = req.mode, req.fence
    if mode not in MODES or fence not in FENCES:
        raise ValueError(f"bad mode {mode!r} or fence {fence!r}")
    if any(p.state != P.SMPL for p in found):
        raise ValueError(f"pairs must be SMPL: {[(p.name, p.state) for p in found]}")
    for pair in found:
        pair.mode, pair.fence, pair.state = mode, fence, P.COPY
        pair.bitmap = fw.pair_bitmap(pair, "bitmap")
        written = fw.store.written_tracks(pair.m_ldev)
        if written is None:
            pair.bitmap.set_all()
            thin = {}
        else:   # thin media: a never-written track reads zeros on both sides and is not copied
            mask = np.zeros(pair.bitmap.tracks, dtype=bool)
            mask[written] = True
            pair.bitmap.merge(mask)
            thin = {"thin_tracks": int(written.size)}
        pair.sent = None
        fw.trace(350, "pair_form_instruction", pair=pair.name, mode=mode, fence=fence, **thin)
    for site in sorted({p.r_site for p in found}):
        names = [p.name for p in found if p.r_site == site]
        fw.send(site, {"kind": MsgKind.PAIR_CREATE.value, "pairs": names, "mode": mode})
        fw.trace(351, "pair_form_sent", site=site, pairs=names)
    return {"ok": True, "pairs": [p.name for p in found]}


def s351_remote_accepts_pairs(fw: FirmwareHost, now_ns, from_site, msg):
    """Remote side of 351: accept the pairs (state COPY) and report normal end."""
    for name in msg["pairs"]:
        pair = fw.pairs.get(name)
        pair.state, pair.mode = P.COPY, msg["mode"]
        # thin media: the initial copy sends only the master's written tracks, so
        # the R-VOL is unmapped first and reads zeros wherever the master does
        dropped = fw.store.discard(pair.r_ldev)
        if dropped:
            fw.trace(351, "remote_volume_discarded", pair=name, tracks=dropped)
    fw.send(from_site, {"kind": MsgKind.PAIR_CREATE_OK.value, "pairs": msg["pairs"], "ok": True})


def s352_normal_end_received(fw: FirmwareHost, now_ns, from_site, msg):
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
        pair.sent = fw.pair_bitmap(pair, "sent")
        session.active.append(name)
        session.cursor[name], session.searched[name], session.outstanding[name] = 0, False, 0
    fw.sessions[sid] = session
    fw.trace(None, "backup_copy_started", sid=sid, pairs=names)   # 353 is traced when it ends
    RM.pump(fw, session)


def s353_initial_copy_done(fw: FirmwareHost, now_ns, from_site, msg):
    fw.pairs.get(msg["pair"]).state = P.PAIR


def on_pair_split(fw: FirmwareHost, now_ns, from_site, msg):
    for name in msg["pairs"]:
        fw.pairs.get(name).state = P.SMPL if msg["delete"] else P.PSUS


def on_copy_track(fw: FirmwareHost, now_ns, from_site, msg):
    """A track of the initial copy (353) or of the recovery copy (408 -> 506);
    in time order, a batch of one pair's updates, applied in queue order, each
    piece through the same path as a single track. The first piece refused
    stops the batch (the master aborts the copy on the refusal)."""
    pair = fw.pairs.pairs.get(msg["pair"])
    error = None
    if pair is None:
        error = f"no pair {msg['pair']}"
    elif RR.covers(fw.rsession, pair.name):
        if fw.rsession.sid != msg["sid"]:
            error = f"stale copy session {msg['sid']}"
        else:
            error = RR.check_copy_order(fw, fw.rsession, msg["seq"])
        for track, offset, data in msg["pieces"] if error is None else ():
            error = RR.protected_write(fw, fw.rsession, pair, track, offset, data)
            if error is not None:
                break
    elif pair.state in (P.COPY, P.PAIR):
        for track, offset, data in msg["pieces"]:
            error = write_direct(fw, pair.r_ldev, track, offset, data)
            if error is not None:
                break
    else:
        error = f"pair {msg['pair']} not accepting copy ({pair.state})"
    fw.send(from_site, {"kind": MsgKind.COPY_TRACK_ACK.value, "sid": msg["sid"], "pair": msg["pair"],
                        "seq": msg["seq"], "track": msg["pieces"][0][0], "ok": error is None, "error": error})


def on_copy_track_ack(fw: FirmwareHost, now_ns, from_site, msg):
    session = fw.sessions.get(msg["sid"])
    if session is not None:
        RM.s409_write_end(fw, now_ns, session, msg)


def cmd_pairsplit(fw: FirmwareHost, now_ns: int, req: PairSplit) -> dict:
    found = P.master_pairs(fw, req.target)
    delete = bool(req.delete)
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


def cmd_horctakeover(fw: FirmwareHost, now_ns: int, req: HorcTakeover) -> dict:
    """Make the R-DEVs writable (SSWS).  A recovery copy in progress is first
    rolled back as on timeout, so the takeover image is consistent; its
    pairs become SSWS when the rollback ends (it takes disk time), the
    others at once."""
    found = fw.pairs.select(req.target)
    bad = [p.name for p in found if p.r_site != fw.site]
    if bad:
        raise ValueError(f"pairs {bad} are not remote at {fw.site}")
    rs = fw.rsession
    waiting = [p.name for p in found if rs is not None and rs.in_progress and p.name in rs.pair_names]
    if waiting:
        rs.takeover += [n for n in waiting if n not in rs.takeover]
        RR.s515_timeout(fw, now_ns, rs, reason="takeover")
    rs = fw.rsession   # None when the rollback had nothing to restore and is over
    for pair in found:
        if rs is None or pair.name not in rs.takeover:
            pair.state = P.SSWS
    pending = None
    if rs is not None and rs.takeover:
        pending = {"sid": rs.sid, "tracks_left": len(rs.restore_queue) - rs.restore_pos, "pairs": list(rs.takeover)}
    return {"ok": True, "pairs": [p.name for p in found], "rollback": fw.last_recovery if waiting else None,
            "waiting_for_rollback": pending}
