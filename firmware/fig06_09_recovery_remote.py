"""Recovery copy, remote side (Fig. 6, steps 501-520; Fig. 9, steps 751-757)
and the stage-new variant (0065-0068).

A `RemoteSession` lives in the remote DKC's non-volatile memory for one
recovery copy.  Functions named `sNNN_*` are flowchart boxes; each emits a
Trace with its step number.  `fw` is the hosting `DkcFirmware` (store,
save media, trace and send helpers).

Step 513 is not described in the patent's text; it is read from Fig. 6 as
the branch that receives "recovery reached" for pair i and records it.
Beyond the patent: the write-end report (508) is sent only after a save
track was found (509), so a full save area refuses the track instead of
acknowledging data it cannot protect.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass, field

from firmware import pair_table as P
from firmware.protocol import NONE, SAVE_OLD, STAGE_NEW, MsgKind
from firmware.fig10_11_save_area import (SaveAreaBitmap, SaveAreaFull, SavedDataQueue, SavedNode,
                                         assert_accounting)
from firmware.store import SaveMediaError

if TYPE_CHECKING:
    from firmware.context import FirmwareHost



@dataclass
class RemoteSession:
    sid: int
    master_site: str
    max_time_ns: int
    method: str
    unit: str
    pair_names: list[str]
    groups: dict[str, str]
    cache_threshold_tracks: int
    save_bitmap: SaveAreaBitmap
    saved: SavedDataQueue
    timer_name: str
    in_progress: bool = False
    watchdog_at_ns: int = 0
    reached: list[str] = field(default_factory=list)
    cache: dict[int, bytes] = field(default_factory=dict)  # cache-resident saved/staged tracks
    next_cache_addr: int = 0
    double_faults: list[dict] = field(default_factory=list)
    saves: int = 0
    #: (ldev, track, why) whose old image could not be saved (510 failed)
    unsaved: list[tuple[int, int, str]] = field(default_factory=list)
    #: save rows withdrawn during the copy: row -> why
    withdrawn: dict[int, str] = field(default_factory=dict)
    # the rollback (515-519), persisted so a restarted DKC finishes it
    rolling_back: bool = False
    rollback_reason: str = ""
    rollback_pairs: list[str] = field(default_factory=list)
    restore_queue: list[tuple[int, int]] = field(default_factory=list)
    restore_pos: int = 0
    restore_pending: list[int] = field(default_factory=list)   # restores whose read is in flight
    #: pairs whose horctakeover waits for the rollback
    takeover: list[str] = field(default_factory=list)
    #: a start instruction from the master that arrived during the rollback
    pending_start: dict | None = None
    #: number of the next copy message to apply (the master numbers them from 0)
    next_copy_seq: int = 0

    def rolled_back_pairs(self) -> list[str]:
        """Pairs whose LDEV returns to the suspension image on timeout (516):
        unit ldev: every pair without "recovery reached"; unit group: every
        pair of a group in which some pair did not reach."""
        not_reached = [n for n in self.pair_names if n not in self.reached]
        if self.unit == "ldev":
            return not_reached
        bad_groups = {self.groups[n] for n in not_reached}
        return [n for n in self.pair_names if self.groups[n] in bad_groups]


# ---------------------------------------------------------------- 501-504

def s501_receive_start(fw: FirmwareHost, now_ns: int, from_site: str, msg: dict) -> None:
    """501: "receive the start instruction"."""
    fw.trace(501, "rc_start_received", sid=msg["sid"], master=from_site, pairs=msg["pairs"])
    if fw.rsession is not None and fw.rsession.master_site == from_site:
        # the master gave up on the previous copy (e.g. link flap): roll it back
        # first; the new copy starts when the rollback is done
        fw.rsession.pending_start = msg
        s515_timeout(fw, now_ns, fw.rsession, reason="superseded")
        return
    if fw.rsession is not None:
        fw.send(from_site, {"kind": MsgKind.RC_READY.value, "sid": msg["sid"], "ok": False,
                            "error": f"recovery copy {fw.rsession.sid} already in progress"})
        return
    names = [n for n in msg["pairs"] if n in fw.pairs.pairs]
    session = RemoteSession(
        sid=msg["sid"], master_site=from_site, max_time_ns=int(msg["max_time_ns"]),
        method=msg["method"], unit=msg["unit"], pair_names=names,
        groups={n: fw.pairs.get(n).group for n in names},
        cache_threshold_tracks=int(msg["cache_save_threshold_tracks"]),
        save_bitmap=SaveAreaBitmap.build(fw.save_media.rows(), bool(msg["keep_raid5"]),
                                         bool(msg["spares_usable"]), fw.save_rows_tables(), fw.nvm),
        saved=fw.saved_queue(int(msg.get("max_saved_nodes", 1 << 20))),
        cache=fw.save_cache(), restore_queue=fw.restore_list(),
        timer_name=f"rc_watchdog:{msg['sid']}")
    fw.rsession = session
    s502_start_watchdog(fw, now_ns, session)
    s503_set_in_progress(fw, session)
    s504_answer_ready(fw, session)


def s502_start_watchdog(fw: FirmwareHost, now_ns: int, session: RemoteSession) -> None:
    """502: "start the watchdog timer for T; prepare"."""
    session.watchdog_at_ns = now_ns + session.max_time_ns
    fw.set_timer(session.timer_name, session.watchdog_at_ns)
    for name in session.pair_names:
        fw.pairs.get(name).state = P.COPY
    fw.trace(502, "rc_watchdog_set", sid=session.sid, at_ns=now_ns + session.max_time_ns)


def s503_set_in_progress(fw: FirmwareHost, session: RemoteSession) -> None:
    """503: "set the 'recovery copy in progress' flag"."""
    session.in_progress = True
    fw.trace(503, "rc_flag_set", sid=session.sid)


def s504_answer_ready(fw: FirmwareHost, session: RemoteSession) -> None:
    """504: "answer the master 'ready'"."""
    fw.send(session.master_site, {"kind": MsgKind.RC_READY.value, "sid": session.sid, "ok": True, "error": None})
    fw.trace(504, "rc_ready_sent", sid=session.sid)


def s505_wait(fw: FirmwareHost, session: RemoteSession, event: str) -> None:
    """505: "wait; the loop 505/514/515 reacts to: a write command, the
    completion report, or the timer"."""
    fw.trace(505, "rc_wait_event", sid=session.sid, got=event)


# ---------------------------------------------------------------- 506-512, 751-757

def covers(session: RemoteSession | None, pair_name: str) -> bool:
    return (session is not None and session.in_progress and not session.rolling_back
            and pair_name in session.pair_names)


def check_copy_order(fw: FirmwareHost, session: RemoteSession, seq: int) -> str | None:
    """Beyond the patent: copy messages are applied in the order the master
    sent them, never otherwise. In time order (Figs. 12/13) a batch applied
    after a later one would put an older update over a newer; a gap means a
    message was lost. Either is refused with nothing of it applied (the
    master aborts the copy, the rollback restores the suspension image)."""
    if seq != session.next_copy_seq:
        fw.trace(None, "copy_out_of_order", sid=session.sid, seq=seq, expected=session.next_copy_seq)
        return f"copy message {seq} out of order (expected {session.next_copy_seq})"
    session.next_copy_seq += 1
    return None


def protected_write(fw: FirmwareHost, session: RemoteSession, pair, track: int, offset_sectors: int,
                    data: bytes) -> str | None:
    """One incoming write (recovery track or mirrored update) during the
    recovery copy.  Returns None when stored, or an error string (nothing changed)."""
    s505_wait(fw, session, "write")
    ldev, track = s506_compute_target(fw, pair, track)
    try:
        new_track = s507_store_in_cache(fw, session, ldev, track, offset_sectors, data)
    except SaveMediaError as exc:  # the staged copy to merge into is unreadable
        fw.trace(None, "double_fault", where="merge_staged", ldev=ldev, track=track, error=str(exc))
        return f"save media: {exc}"
    except ValueError as exc:      # a partial write onto a track with no right image
        fw.trace(None, "partial_write_to_lost_track", ldev=ldev, track=track, error=str(exc))
        return str(exc)
    if session.method == NONE or frees_on_reached(session, pair.name):
        s508_report_write_end(fw, session, pair.name, track)
        fw.write_home(ldev, track, new_track)
        return None
    node = session.saved.find(ldev, track)
    if session.method == SAVE_OLD and node is not None:
        s508_report_write_end(fw, session, pair.name, track)
        s756_write_new_home(fw, ldev, track, new_track)  # later overwrite: old already saved
        return None
    if node is None:
        try:
            node = s509_find_free_save_track(fw, session, ldev, track, pair.name)
        except SaveAreaFull as exc:
            fw.trace(None, "save_area_full", sid=session.sid, ldev=ldev, track=track)
            withdrawn = "; ".join(f"save row {r} withdrawn: {why}" for r, why in sorted(session.withdrawn.items()))
            return f"{exc}" + (f" ({withdrawn})" if withdrawn else "")
    s508_report_write_end(fw, session, pair.name, track)
    if session.method == SAVE_OLD:
        try:
            old = s510_read_old_and_record(fw, session, node)
        except ValueError as exc:   # the old track is unreadable: a double fault, never saved as garbage
            forget_node(session, node)
            session.unsaved.append((ldev, track, str(exc)))
            fault = {"ldev": ldev, "track": track, "row": None, "error": str(exc), "where": "save_old"}
            session.double_faults.append(fault)
            fw.double_faults.append(fault)
            fw.trace(None, "double_fault", **fault)
            try:
                s756_write_new_home(fw, ldev, track, new_track)
            except ValueError:
                pass   # the home is lost too: reads of it will report the loss
            return None
        error = s511_keep_in_cache_or_s512_write_save(fw, session, node, old)
        if error is None:
            # write-ahead: the saved node (Fig. 11) is durable in NVM before the
            # home is overwritten, so a kill from here on still rolls back right
            fw.nvm_barrier()
            s756_write_new_home(fw, ldev, track, new_track)
    else:
        error = s511_keep_in_cache_or_s512_write_save(fw, session, node, new_track)
    return error


def forget_node(session: RemoteSession, node: SavedNode) -> None:
    """Undo 509/755 for a node whose old track could not be read."""
    if node.cache_addr is not None:
        session.cache.pop(node.cache_addr, None)
    if node.save_row is not None:
        session.save_bitmap.free(node.save_row, node.save_slot)
    session.saved.remove(node)


def frees_on_reached(session: RemoteSession, pair_name: str) -> bool:
    """Beyond the patent: with unit ldev a reached pair is never rolled back,
    so (save-old) its saved tracks are freed, or (stage-new) its staged tracks
    are applied at once and freed; later writes to it go in place. Without
    this, stage-new holds every staged track until completion and a session
    larger than the save area could never admit its last pairs."""
    return session.method in (SAVE_OLD, STAGE_NEW) and session.unit == "ldev" and pair_name in session.reached


def free_pair_saves(fw: FirmwareHost, session: RemoteSession, pair) -> None:
    for node in session.saved.ldev_nodes(pair.r_ldev):
        if node.cache_addr is not None:
            session.cache.pop(node.cache_addr, None)
        if node.save_row is not None:
            session.save_bitmap.free(node.save_row, node.save_slot)
    session.saved.drop_ldev(pair.r_ldev)


def s506_compute_target(fw: FirmwareHost, pair, track: int) -> tuple[int, int]:
    """506: "compute the target address on the backup drive"."""
    fw.trace(506, "rc_target", pair=pair.name, ldev=pair.r_ldev, track=track)
    return pair.r_ldev, track


def s507_store_in_cache(fw: FirmwareHost, session: RemoteSession, ldev: int, track: int, offset_sectors: int,
                        data: bytes) -> bytes:
    """507 / 751: "store the incoming track in cache".  A partial write is
    merged onto the current image of the track (the staged one in stage-new)."""
    if offset_sectors == 0 and len(data) == fw.store.track_bytes:
        merged = bytes(data)
    else:
        base = bytearray(current_track(fw, session, ldev, track))
        start = offset_sectors * fw.store.sector_bytes
        base[start:start + len(data)] = data
        merged = bytes(base)
    fw.trace(507, "rc_in_cache", ldev=ldev, track=track, nbytes=len(data))
    fw.trace(751, "incoming_in_cache", ldev=ldev, track=track)
    return merged


def current_track(fw: FirmwareHost, session: RemoteSession, ldev: int, track: int) -> bytes:
    node = session.saved.find(ldev, track) if session.method == STAGE_NEW else None
    if node is not None:
        return load_saved(fw, session, node)
    return fw.read_home(ldev, track)


def s508_report_write_end(fw: FirmwareHost, session: RemoteSession, pair_name: str, track: int) -> None:
    """508 / 752: "report write-end to the master" (the caller sends the ack)."""
    fw.trace(508, "rc_write_end", pair=pair_name, track=track)
    fw.trace(752, "reported_stored", pair=pair_name, track=track)


def s509_find_free_save_track(fw: FirmwareHost, session: RemoteSession, ldev: int, track: int,
                              pair_name: str) -> SavedNode:
    """509 / 753: "find a free save-area track (save-area bitmap 118, Fig. 10)".
    Under the cache threshold the save track is a cache slot (511)."""
    node = SavedNode(home_ldev=ldev, home_track=track, save_row=None, save_slot=None,
                     cache_addr=None, pair=pair_name)
    if len(session.saved) >= session.saved.max_nodes:
        raise SaveAreaFull(f"saved-data queue full ({session.saved.max_nodes} nodes)")
    if len(session.cache) >= session.cache_threshold_tracks or not session.cache.can_take(fw.store.track_bytes):
        row_id, slot, first_lend = session.save_bitmap.allocate()
        if first_lend:
            fw.save_media.lend(row_id)
            fw.trace(None, "parity_row_lent", row=row_id)
        node.save_row, node.save_slot = row_id, slot
    else:
        node.cache_addr = session.next_cache_addr
        session.next_cache_addr += 1
    session.saved.enqueue(node)
    fw.trace(509, "save_track_found", ldev=ldev, track=track, row=node.save_row, slot=node.save_slot,
             cache_addr=node.cache_addr)
    fw.trace(753, "save_bitmap_searched", row=node.save_row, slot=node.save_slot)
    return node


def s510_read_old_and_record(fw: FirmwareHost, session: RemoteSession, node: SavedNode) -> bytes:
    """510 / 754 / 755: "read the old track into cache; record original
    device#, track#, save location (saved-data queue 119, Fig. 11)"."""
    old = fw.read_home(node.home_ldev, node.home_track)
    fw.trace(754, "old_track_read", ldev=node.home_ldev, track=node.home_track)
    session.saves += 1
    fw.trace(510, "old_saved_recorded", ldev=node.home_ldev, track=node.home_track)
    fw.trace(755, "saved_node_enqueued", ldev=node.home_ldev, track=node.home_track)
    return old


def s511_keep_in_cache_or_s512_write_save(fw: FirmwareHost, session: RemoteSession, node: SavedNode,
                                          data: bytes) -> str | None:
    """511: "while saved data stays under the cache threshold, keep it in
    cache only"; 512 / 757: "over the threshold, write saved data to the disk
    save area (parity tracks / spare disks)"."""
    if node.cache_addr is not None:
        session.cache[node.cache_addr] = bytes(data)
        fw.trace(511, "saved_in_cache", ldev=node.home_ldev, track=node.home_track,
                 cache_used=len(session.cache))
        return None
    try:
        fw.save_media.write_save(node.save_row, node.save_slot, bytes(data))
    except SaveMediaError as exc:
        fw.trace(None, "double_fault", where="write_save", row=node.save_row, error=str(exc))
        session.saved.remove(node)
        return f"save media: {exc}"
    fw.disk_cost("save_write", node.home_ldev, node.home_track, len(data))
    fw.trace(512, "saved_to_disk", row=node.save_row, slot=node.save_slot)
    fw.trace(757, "saved_old_written", row=node.save_row, slot=node.save_slot)
    return None


def s756_write_new_home(fw: FirmwareHost, ldev: int, track: int, data: bytes) -> None:
    """756: "write the new track to its home on disk 113"."""
    fw.write_home(ldev, track, data)
    fw.trace(756, "new_track_home", ldev=ldev, track=track)


def load_saved(fw: FirmwareHost, session: RemoteSession, node: SavedNode) -> bytes:
    """Saved/staged data of a node: cache first, else the save area (may raise SaveMediaError)."""
    if node.cache_addr is not None and node.cache_addr in session.cache:
        return session.cache[node.cache_addr]
    return fw.save_media.read_save(node.save_row, node.save_slot)


# ---------------------------------------------------------------- 513, 514, 520

def s513_record_reached(fw: FirmwareHost, session: RemoteSession, pair_name: str) -> None:
    """513 (read from Fig. 6): "recovery reached" for pair i is recorded.
    Once the rollback has begun it is too late: the pairs it rolls back
    keep their saved tracks until it ends."""
    if session.rolling_back:
        fw.trace(None, "rc_reached_too_late", sid=session.sid, pair=pair_name)
        return
    s505_wait(fw, session, "reached")
    if pair_name in session.pair_names and pair_name not in session.reached:
        session.reached.append(pair_name)
        fw.pairs.get(pair_name).state = P.PAIR
        if frees_on_reached(session, pair_name):
            if session.method == STAGE_NEW:
                apply_staged(fw, session, [pair_name])
            free_pair_saves(fw, session, fw.pairs.get(pair_name))
    fw.trace(513, "rc_reached_recorded", sid=session.sid, pair=pair_name)


def s514_completion(fw: FirmwareHost, now_ns: int, session: RemoteSession) -> dict:
    """514: "completion report -> 520"; stage-new (0067): apply every staged
    track to its home first, reading from parity/spare as needed."""
    s505_wait(fw, session, "complete")
    fw.trace(514, "rc_complete_received", sid=session.sid)
    if session.method == STAGE_NEW:
        apply_staged(fw, session, session.pair_names)
    for name in session.pair_names:
        fw.pairs.get(name).state = P.PAIR
    return s520_clear_flag(fw, session, outcome="complete")


def s520_clear_flag(fw: FirmwareHost, session: RemoteSession, outcome: str) -> dict:
    """520: "clear the flag; done".  Lent parity rows are released (parity
    recomputed by the DKC) and the save area is emptied."""
    assert_accounting(session.save_bitmap, session.saved)   # Fig. 10 and Fig. 11 agree at the end
    session.in_progress = False
    for row_id in sorted(session.save_bitmap.lent):
        try:
            fw.save_media.release(row_id)
        except SaveMediaError as exc:   # parity cannot be rebuilt: the group keeps its loss, reported
            fault = {"row": row_id, "error": str(exc), "where": "release"}
            session.double_faults.append(fault)
            fw.double_faults.append(fault)
            fw.trace(None, "double_fault", **fault)
    fw.cancel_timer(session.timer_name)
    fw.rsession = None
    result = {"sid": session.sid, "outcome": outcome, "reached": list(session.reached),
              "double_faults": list(session.double_faults)}
    fw.last_recovery = result
    if outcome == "complete":
        fw.trace(520, "rc_flag_cleared", sid=session.sid)
    else:
        fw.trace(None, "rc_rollback_done", **result)
    return result


# ---------------------------------------------------------------- 515-519 and stage-new timeout

#: restored tracks timed at once (queued save-area reads)
RESTORE_DEPTH = 8

def s515_timeout(fw: FirmwareHost, now_ns: int, session: RemoteSession, reason: str = "timer") -> None:
    """515: "timer expired -> 516 ... Consistency restored"; stage-new
    (0068): apply staged tracks of pairs that got "recovery reached",
    discard the others.

    Beyond the patent's single box: the rollback takes time. The pairs to
    roll back stop taking updates at once (PSUE); then one saved track at a
    time is restored (517-519), each timed by the DKC (``RestoreIo``: read
    from the save area, written home through the cache), each its own event
    and crash point. The restore list and its cursor live in NVM, and
    restoring a track again gives the same bytes, so a DKC killed in the
    middle finishes the rollback after its restart."""
    if session.rolling_back:
        return
    s505_wait(fw, session, reason)
    fw.trace(515, "rc_timeout", sid=session.sid, reason=reason)
    assert_accounting(session.save_bitmap, session.saved)   # what the rollback reads is consistent
    session.rolling_back, session.rollback_reason = True, reason
    session.rollback_pairs = session.rolled_back_pairs()
    fw.cancel_timer(session.timer_name)
    for name in session.rollback_pairs:
        fw.pairs.get(name).state = P.PSUE   # no update lands on an LDEV being rolled back
    if session.method == SAVE_OLD:
        for name in session.rollback_pairs:
            s516_restore_pair(fw, session, fw.pairs.get(name))
    fw.trace(None, "rc_rollback_started", sid=session.sid, pairs=list(session.rollback_pairs),
             tracks=len(session.restore_queue))
    restore_next(fw, now_ns, session)


def s516_restore_pair(fw: FirmwareHost, session: RemoteSession, pair) -> None:
    """516: "for every LDEV whose pair did NOT get 'recovery reached', look
    up saved data": its saved tracks join the restore list; a track whose
    old image was never saved (510 failed) has none to restore and is lost."""
    nodes = session.saved.ldev_nodes(pair.r_ldev)
    fw.trace(516, "rc_lookup_saved", pair=pair.name, ldev=pair.r_ldev, nodes=len(nodes))
    session.restore_queue += [(n.home_ldev, n.home_track) for n in nodes]
    for ldev, track, why in session.unsaved:
        if ldev == pair.r_ldev:
            fw.mark_lost(ldev, track, f"its suspension image was not saved ({why})")


def restore_next(fw: FirmwareHost, now_ns: int, session: RemoteSession) -> None:
    """Start the next restores of the list, up to RESTORE_DEPTH at once (a
    controller queues its save-area reads): 517 decides where each comes
    from and the DKC times the read; the track is written home (518/519)
    when its read completes. When the list is done and nothing is in
    flight, finish the rollback."""
    while session.restore_pos < len(session.restore_queue) and len(session.restore_pending) < RESTORE_DEPTH:
        tag = session.restore_pos
        ldev, track = session.restore_queue[tag]
        session.restore_pos += 1
        node = session.saved.find(ldev, track)
        if node is None:
            continue
        hit = s517_in_cache(fw, session, node)
        session.restore_pending.append(tag)
        fw.restore_io(session.sid, tag, ldev, track, None if hit else node.save_row, None if hit else node.save_slot)
    if session.restore_pos >= len(session.restore_queue) and not session.restore_pending:
        finish_rollback(fw, now_ns, session)


def restore_io_done(fw: FirmwareHost, now_ns: int, sid: int, tag: int) -> None:
    """The DKC read restore ``tag``'s saved copy: write it home (518/519)."""
    session = fw.rsession
    if session is None or session.sid != sid or not session.rolling_back or tag not in session.restore_pending:
        return
    session.restore_pending.remove(tag)
    node = session.saved.find(*session.restore_queue[tag])
    assert node is not None, f"rollback {sid}: restore {tag} lost its saved node"
    try:
        if node.cache_addr is not None and node.cache_addr in session.cache:
            s518_restore_from_cache(fw, session, node)
        else:
            s519_restore_from_save_area(fw, session, node)
    except ValueError as exc:   # the home track cannot be written back: a double fault
        record_loss(fw, session, node, f"its home cannot be written: {exc}", where="restore")
    restore_next(fw, now_ns, session)


def restore_resume(fw: FirmwareHost, now_ns: int, sid: int) -> None:
    """A restarted DKC goes on with the rollback from the NVM's cursor: the
    restores that were in flight start again (restoring a track twice
    writes the same bytes)."""
    session = fw.rsession
    if session is not None and session.sid == sid and session.rolling_back:
        if session.restore_pending:
            session.restore_pos = min(session.restore_pending)
        session.restore_pending = []
        restore_next(fw, now_ns, session)


def record_loss(fw: FirmwareHost, session: RemoteSession, node: SavedNode, why: str, where: str) -> None:
    fault = {"ldev": node.home_ldev, "track": node.home_track, "row": node.save_row, "error": why,
             "where": where}
    session.double_faults.append(fault)
    fw.double_faults.append(fault)
    fw.trace(None, "double_fault", **fault)
    fw.mark_lost(node.home_ldev, node.home_track, why)


def finish_rollback(fw: FirmwareHost, now_ns: int, session: RemoteSession) -> dict:
    """The last box of 515: every rolled-back LDEV is at its suspension image
    (or its lost tracks are marked); tell the master."""
    rolled = list(session.rollback_pairs)
    if session.method == STAGE_NEW:
        apply_staged(fw, session, [n for n in session.pair_names if n not in rolled])
        fw.trace(None, "staged_discarded", pairs=rolled)
    for name in session.pair_names:
        fw.pairs.get(name).state = P.PSUE if name in rolled else P.PAIR
    for name in session.takeover:
        fw.pairs.get(name).state = P.SSWS
    if session.takeover:
        fw.trace(None, "takeover_done", pairs=list(session.takeover))
    result = s520_clear_flag(fw, session, outcome="rolled_back")
    result["rolled_back"] = rolled
    result["restored_tracks"] = len(session.restore_queue)
    fw.last_recovery = result
    fw.send(session.master_site, {"kind": MsgKind.RC_ABORTED.value, "sid": session.sid, "rolled_back": rolled,
                                  "reason": session.rollback_reason,
                                  "double_faults": len(session.double_faults)})
    if session.pending_start is not None:   # a new copy from the master waited for this rollback
        s501_receive_start(fw, now_ns, session.master_site, session.pending_start)
    return result


def s517_in_cache(fw: FirmwareHost, session: RemoteSession, node: SavedNode) -> bool:
    """517: "in cache?"."""
    hit = node.cache_addr is not None and node.cache_addr in session.cache
    fw.trace(517, "saved_in_cache?", ldev=node.home_ldev, track=node.home_track, hit=hit)
    return hit


def s518_restore_from_cache(fw: FirmwareHost, session: RemoteSession, node: SavedNode) -> None:
    """518: "yes: restore from cache"."""
    fw.write_home(node.home_ldev, node.home_track, session.cache[node.cache_addr])
    fw.trace(518, "restored_from_cache", ldev=node.home_ldev, track=node.home_track)


def s519_restore_from_save_area(fw: FirmwareHost, session: RemoteSession, node: SavedNode) -> bool:
    """519: "no: read it from parity track / spare disk into cache, then
    write the old track back to its home".  An unreadable row is a double
    fault: the track has no right image left, so it is marked lost (reads
    and exports of it fail) instead of serving the copy's new data."""
    try:
        old = fw.save_media.read_save(node.save_row, node.save_slot)
    except SaveMediaError as exc:
        fw.trace(519, "double_fault", ldev=node.home_ldev, track=node.home_track, row=node.save_row,
                 error=str(exc))
        record_loss(fw, session, node, f"its saved image on save row {node.save_row} is unreadable: {exc}",
                    where="restore_read")
        return False
    fw.write_home(node.home_ldev, node.home_track, old)
    fw.trace(519, "restored_from_save_area", ldev=node.home_ldev, track=node.home_track,
             row=node.save_row, slot=node.save_slot)
    return True


def withdraw_save_place(fw: FirmwareHost, row_id: int, why: str) -> None:
    """Beyond the patent: a save place that lost its redundancy (a parity
    group running degraded, a failed spare) takes no more saved tracks; its
    "may be used" flag (801) is cleared. Tracks already saved there stay
    where they are (read back on rollback if they still can be)."""
    session = fw.rsession
    if session is None or not session.in_progress or not session.save_bitmap.usable.get(row_id):
        return
    session.save_bitmap.usable[row_id] = False
    session.withdrawn[row_id] = why
    fw.trace(None, "save_place_withdrawn", sid=session.sid, row=row_id, why=why,
             capacity_left=session.save_bitmap.capacity_tracks())


def apply_staged(fw: FirmwareHost, session: RemoteSession, pair_names: list[str]) -> None:
    """Stage-new (0067): apply the staged tracks of these pairs to their homes."""
    for name in pair_names:
        pair = fw.pairs.get(name)
        for node in session.saved.ldev_nodes(pair.r_ldev):
            try:
                data = load_saved(fw, session, node)
            except SaveMediaError as exc:   # the home keeps an older image than the master's
                record_loss(fw, session, node, f"its staged image on save row {node.save_row} is unreadable: "
                            f"{exc}", where="apply_staged")
                continue
            fw.write_home(node.home_ldev, node.home_track, data)
        fw.trace(None, "staged_applied", pair=name)


# ------------------------------------------------------------ peer messages


def on_rc_config_req(fw: FirmwareHost, now_ns, from_site, msg):
    """Remote side of 403: report cache, parity tracks and spare disks."""
    fw.send(from_site, {"kind": MsgKind.RC_CONFIG.value, "sid": msg["sid"], **save_config(fw)})


def save_config(fw: FirmwareHost) -> dict:
    """What 403 reports: the save rows (parity groups, spares) and the counts of 404."""
    counts = None
    if fw.params.get("n_disks"):
        counts = {"ldev_count": int(fw.params["n_ldevs"]), "disk_count": int(fw.params["n_disks"]),
                  "parity_disks": int(fw.params["n_parity_disks"]),
                  "spare_disks": int(fw.params["n_spare_disks"])}
    return {"rows": [(r.kind, r.tracks) for r in fw.save_media.rows()], "counts": counts}


def on_rc_start(fw: FirmwareHost, now_ns, from_site, msg):
    s501_receive_start(fw, now_ns, from_site, msg)


def on_rc_reached(fw: FirmwareHost, now_ns, from_site, msg):
    if fw.rsession is not None and fw.rsession.sid == msg["sid"]:
        s513_record_reached(fw, fw.rsession, msg["pair"])


def on_rc_complete(fw: FirmwareHost, now_ns, from_site, msg):
    ok = fw.rsession is not None and fw.rsession.sid == msg["sid"] and fw.rsession.in_progress
    if ok:
        s514_completion(fw, now_ns, fw.rsession)
    fw.send(from_site, {"kind": MsgKind.RC_COMPLETE_ACK.value, "sid": msg["sid"], "ok": ok})
