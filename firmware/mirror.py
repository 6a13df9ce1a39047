"""Remote copy proper: a host write updates the M-DEV and is mirrored to
the R-DEV (synchronous: the host waits; asynchronous: in sequence order,
JP H6-290125), or, while the pair is suspended, recorded for a later resync
(the differential bitmap of Fig. 7 and the time-series queue of Fig. 12/13,
step 1201). During a recovery copy a track already sent is mirrored and one
not yet sent only sets its bit (0014).

The remote side applies mirror writes in sequence order and acknowledges.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from firmware import fig06_09_recovery_remote as RR
from firmware import fig05_recovery_master as RM
from firmware import pair_table as P
from firmware.fig12_13_time_series import record_update
from firmware.protocol import HostDone, LinkState, MsgKind

if TYPE_CHECKING:
    from firmware.context import FirmwareHost


def do_host_write(fw: FirmwareHost, now_ns: int, req_id, ldev: int, lba: int, sectors: int,
                  data: bytes) -> None:
    """A host write: local update, then per pair mirror (Fig. 4, 353), or the
    suspended path (Fig. 7 bit, Figs. 12/13 queue), or the recovery-copy rule
    (0014: a track already sent is mirrored, one not yet sent only sets its bit)."""
    error = check_host_write(fw, ldev, lba, sectors, data)
    if error is not None:
        fw.answer_host(HostDone(req_id, False, error, None))
        return
    fw.media_write_ahead(ldev, lba, sectors)   # a kill -9 after the media write must not lose the track
    fw.store.write_sectors(ldev, lba, data)
    pieces = fw.split_pieces(lba, data)
    if fw.lost:
        for track, offset, piece in pieces:
            if offset == 0 and len(piece) == fw.store.track_bytes:
                fw.track_rewritten(ldev, track)
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
        fw.answer_host(HostDone(req_id, True, None, None))


def replay_in_doubt(fw: FirmwareHost, now_ns: int, ldev: int, tracks: list[int]) -> None:
    """After a restart: a host write on these tracks of ``ldev`` was
    killed between its media write and its round's commit, so nothing
    says whether the media changed. Whatever they hold now is the
    master's image: each track goes to every pair as a whole-track update
    of those bytes (mirrored, or bit and time-series node while suspended,
    or the recovery-copy rule), with no host to answer (its request died
    with the process). A track that cannot be read sets its bits instead."""
    fw.trace(None, "write_in_doubt_replayed", ldev=ldev, tracks=tracks)
    pieces, unreadable = [], []
    for track in tracks:
        try:
            pieces.append((track, 0, fw.read_home(ldev, track)))
        except ValueError as exc:   # lost, or a double fault: no right image to send
            fw.trace(None, "write_in_doubt_unreadable", ldev=ldev, track=track, error=str(exc))
            unreadable.append(track)
    for pair in fw.pairs.by_master_ldev(fw.site, ldev):
        if unreadable:
            mirror_failed(fw, pair, unreadable, "restart: track in doubt unreadable")
        to_mirror = route_pieces(fw, pair, pieces)
        if to_mirror:
            send_mirror(fw, pair, to_mirror, None)


def check_host_write(fw: FirmwareHost, ldev: int, lba: int, sectors: int, data: bytes) -> str | None:
    if len(data) != sectors * fw.store.sector_bytes or sectors <= 0:
        return f"data is {len(data)} bytes for {sectors} sectors"
    try:
        limit = fw.store.ldev_tracks(ldev) * fw.sectors_per_track
    except ValueError as exc:
        return str(exc)
    if lba < 0 or lba + sectors > limit:
        return f"lba {lba}+{sectors} beyond ldev {ldev} ({limit} sectors)"
    if fw.lost:
        lost = partial_writes_to_lost(fw, ldev, fw.split_pieces(lba, data))
        if lost:
            return lost
    for pair in fw.pairs.by_remote_ldev(fw.site, ldev):
        if pair.state not in (P.SMPL, P.SSWS):
            return f"R-DEV {ldev} of pair {pair.name} is write protected ({pair.state})"
    for pair in fw.pairs.by_master_ldev(fw.site, ldev):
        if pair.state == P.PSUE and pair.fence == "data":
            return f"fence data: pair {pair.name} is suspended, remote cannot be updated"
    if len(fw.pending) >= int(fw.params["max_pending_writes"]) or not fw.pending.can_take(len(data) + 512):
        return f"too many mirror writes in flight ({len(fw.pending)}; NVM holds {fw.pending.capacity})"
    return None


def route_pieces(fw: FirmwareHost, pair: P.Pair, pieces: list) -> list:
    """Which pieces of a host write go to the remote now; the others set bits."""
    if pair.state == P.PAIR:
        if pair.sent is not None:
            for track, _, _ in pieces:
                pair.sent.set(track)
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
        if track < session.cursor[pair.name] or pair.sent.test(track):
            pair.sent.set(track)
            mirror.append(piece)  # already sent: like mirror state
        else:
            pair.bitmap.set(track)
    return mirror


def s1201_update_while_suspended(fw: FirmwareHost, pair: P.Pair, pieces: list) -> None:
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


def send_mirror(fw: FirmwareHost, pair: P.Pair, pieces: list, req_id) -> None:
    site = pair.r_site
    seq = fw.next_seq.get(site, 0)
    fw.next_seq[site] = seq + 1
    fw.pending[(site, seq)] = {"req_id": req_id, "pair": pair.name, "tracks": [t for t, _, _ in pieces],
                               "pieces": list(pieces)}
    fw.send(site, {"kind": MsgKind.RC_WRITE.value, "seq": seq, "base": fw.seq_base.get(site, 0),
                   "pieces": [(pair.name, t, o, d) for t, o, d in pieces]})
    fw.trace(None, "mirror_sent", pair=pair.name, seq=seq, mode=pair.mode)


def mirror_failed(fw: FirmwareHost, pair: P.Pair, tracks: list[int], reason: str,
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


def mirror_done(fw: FirmwareHost, key: tuple, ok: bool, error: str | None) -> None:
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
        fw.answer_host(HostDone(req_id, wait["error"] is None, wait["error"], None))


def on_rc_write(fw: FirmwareHost, now_ns, from_site, msg):
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
        # bounded, and overflow is explicit: a BUSY answer (the master suspends
        # the pair and keeps the tracks in its bitmap), never silent growth
        fw.trace(None, "rc_write_busy", from_site=from_site, seq=msg["seq"], buffered=len(buffer))
        fw.send(from_site, {"kind": MsgKind.RC_WRITE_ACK.value, "seq": msg["seq"], "ok": False,
                            "error": f"remote busy: reorder buffer full ({len(buffer)} writes)"})
        return
    buffer[msg["seq"]] = msg
    while expect in buffer:
        apply_rc_write(fw, from_site, buffer.pop(expect))
        expect += 1
    fw.expect_seq[from_site] = expect


def apply_rc_write(fw: FirmwareHost, from_site, msg):
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
            error = write_direct(fw, pair.r_ldev, track, offset, data)
            if error:
                break
    fw.send(from_site, {"kind": MsgKind.RC_WRITE_ACK.value, "seq": msg["seq"], "ok": error is None,
                        "error": error})


def on_rc_write_ack(fw: FirmwareHost, now_ns, from_site, msg):
    mirror_done(fw, (from_site, msg["seq"]), bool(msg["ok"]), msg.get("error"))


def partial_writes_to_lost(fw: FirmwareHost, ldev: int, pieces) -> str | None:
    """A partial write to a track marked lost is refused (the rest of the
    track is unknown); a whole-track write is what clears the mark."""
    for track, offset, piece in pieces:
        if not (offset == 0 and len(piece) == fw.store.track_bytes):
            try:
                fw.lost.check(ldev, track, track, "partial write to")
            except ValueError as exc:
                return f"{exc}; write the whole track to give it a right image"
    return None


def write_direct(fw: FirmwareHost, ldev: int, track: int, offset: int, data: bytes) -> str | None:
    """Apply one piece at the remote outside a recovery copy; an error string
    when it cannot be applied (a partial write to a lost track)."""
    if offset == 0 and len(data) == fw.store.track_bytes:
        fw.write_home(ldev, track, data)
        return None
    error = partial_writes_to_lost(fw, ldev, [(track, offset, data)]) if fw.lost else None
    if error is None:
        fw.store.write_sectors(ldev, track * fw.sectors_per_track + offset, data)
        fw.disk_cost("write", ldev, track, len(data))
    return error



def on_path_state(fw: FirmwareHost, now_ns: int, req: LinkState) -> dict:
    """The DKC actor reports the path state to `site`."""
    site, up = req.site, req.up
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

