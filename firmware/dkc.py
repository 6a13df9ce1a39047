"""Disk controller (DKC) firmware, sans-I/O: events in, actions out.

The DKC actor calls the event methods (`host_write`, `host_read`,
`peer_message`, `timer`, `command`) with the virtual time and executes the
returned actions.  All state is plain data so `snapshot()` / `restore()`
round-trip it (it lives in the DKC's non-volatile memory).

Peer message kinds (dicts with a "kind" key) are `firmware.protocol.MsgKind`.
"""
from __future__ import annotations

import functools
import os
import pickle

import numpy as np

from firmware import fig04_pairs as F4
from firmware import mirror, views
from firmware import pair_table as P
from firmware import fig05_recovery_master as RM
from firmware import fig06_09_recovery_remote as RR
from firmware.protocol import (MAX_MSG_DATA_BYTES, CancelTimer, CopyRead, DiskCost, HorcTakeover, HostDone, LinkState,
                               MalformedMessage, MsgKind, PairCreate, PairDisplay, PairResync, PairSplit, Request,
                               RestoreIo, SendPeer, SetParam, SetTimer, Show, Trace, check_peer_message, request_from_wire)
from firmware.fig07_bitmap import DiffBitmap
from firmware.fig10_11_save_area import NODE_DTYPE as SAVED_DTYPE
from firmware.fig10_11_save_area import SavedDataQueue
from firmware.lost_tracks import LostTracks
from firmware.nvm_tables import (UNCHANGED, BlobMap, IntRecords, NvmFull, NvmLayoutError, NvmSpace, SegmentPool, int_key,
                                 int_key_back, pair_key, pair_key_back)
from firmware.store import SaveMedia, TrackStore
from firmware.fig12_13_time_series import META_DTYPE as TSQ_META_DTYPE
from firmware.fig12_13_time_series import NODE_DTYPE as TSQ_NODE_DTYPE
from firmware.fig12_13_time_series import TimeSeriesQueue


DEFAULTS = {"cache_save_threshold_tracks": 8, "keep_raid5": False, "spares_usable": True,
            "format_shortcut": True, "queue_unit": "ldev", "tsq_max_nodes": 4096,
            "init_window": 8, "max_pending_writes": 4096, "max_saved_nodes": 1 << 20,
            #: tracks a bitmap-order copy may read beyond its window: the disks
            #: keep streaming while the link carries the window
            "copy_read_ahead": 8,
            #: NVM capacities (fixed at the DKC's first start, the tables' layout):
            #: the pool of 4 KiB segments for update data, mirror writes in flight
            #: and saved tracks in cache; the lost-track table; saved tracks in cache
            "nvm_pool_bytes": 64 << 20, "max_lost_tracks": 1 << 16, "max_cached_saves": 1024,
            #: room for each pickled group of the small state (two slots each)
            "nvm_group_bytes": 4 << 20}

_VOLATILE = ("store", "save_media", "_out", "nvm", "host_state", "_cold_dirty", "_cold_hold")
#: tests set this: a commit that skips the cold group (nothing marked it changed)
#: pickles it anyway and fails loudly if it did change (``DkcFirmware.commit``)
CHECK_COLD_CLEAN = os.environ.get("EMU_NVM_CHECK_CLEAN", "") not in ("", "0")
#: state written every round under load (small); the rest changes with commands and copies
_HOT = ("next_seq", "seq_base", "host_waits", "expect_seq", "reorder", "link_up")
SEGMENT_BYTES = 4096


def _changes_cold(method):
    """An entry point that may change the cold group (``DkcFirmware._in_cold``)."""
    @functools.wraps(method)
    def marked(self, *args, **kwargs):
        return self._in_cold(method, self, *args, **kwargs)
    return marked


class DkcFirmware:
    """The one implementation of ``firmware.context.FirmwareHost``: the state, the
    event entry points, the snapshot into non-volatile memory."""

    def __init__(self, site: str, store: TrackStore, save_media: SaveMedia, params: dict,
                 nvm: np.ndarray | None = None, _shape: dict | None = None):
        """``nvm``: the DKC's non-volatile memory (a uint8 buffer the actor
        provides; None: a private one). The tables are laid out in it from
        ``params``, the LDEV sizes and the save rows of this first start."""
        self.site = site
        self.store = store
        self.save_media = save_media
        self.params = {**DEFAULTS, **{k: v for k, v in params.items() if k != "pairs"}}
        self.pairs = P.PairTable.from_params(site, params.get("pairs", []))
        shape = _shape or self._shape(params)
        self.nvm = self._lay_out(nvm, shape)
        self.sessions: dict[int, RM.MasterSession] = {}
        self.rsession: RR.RemoteSession | None = None
        self.tsq: dict[str, TimeSeriesQueue] = {}
        self.next_sid = 1
        self.next_seq: dict[str, int] = {}
        #: first sequence number since the path to a site was (re)established:
        #: a remote that knows nothing yet starts there, never at whatever arrives
        self.seq_base: dict[str, int] = {}
        #: (site, seq) -> mirror write in flight (an NVM table, its data in the pool)
        self.pending = BlobMap(self.nvm, "pending", 0, self._pool, SiteKey(self._sites), SiteKeyBack(self._sites),
                               _dumps, pickle.loads, plan=False)
        self.host_waits: dict[object, dict] = {}  # req_id -> {left, error}
        self.expect_seq: dict[str, int | None] = {}
        self.reorder: dict[str, dict[int, dict]] = {}
        self.link_up: dict[str, bool] = {}
        self.double_faults: list[dict] = []
        #: tracks with no right image (double faults), in NVM: reads fail until rewritten
        self.lost = LostTracks(table=self._map("lost", pair_key, pair_key_back))
        self.last_recovery: dict | None = None
        self._out: list = []
        #: the DKC actor's own state beside the firmware's (RAID, disks), kept in the same commit
        self.host_state: dict = {}
        #: the cold group may differ from its last commit (volatile; see ``commit``)
        self._cold_dirty = True
        #: entry points running that may change the cold group (``_in_cold``)
        self._cold_hold = 0
        if _shape is None:
            self.nvm.write_format(pickle.dumps(shape, protocol=pickle.HIGHEST_PROTOCOL))
            self.commit()

    # ------------------------------------------------------------ the NVM's tables
    def _shape(self, params: dict) -> dict:
        """What the tables' layout depends on, kept in the NVM's format record
        so a restart lays them out again alike whatever failed since."""
        mastered = [p for _, p in sorted(self.pairs.pairs.items()) if p.m_site == self.site]
        sites = sorted({self.site} | {p.m_site for p in self.pairs.pairs.values()}
                       | {p.r_site for p in self.pairs.pairs.values()})
        return {"site": self.site, "params": params, "sites": sites,
                "bitmaps": {p.name: int(self.store.ldev_tracks(p.m_ldev)) for p in mastered},
                "save_rows": [(r.row_id, int(r.tracks)) for r in self.save_media.rows()],
                "tsq_slots": max(1, 2 * len(mastered))}

    def _lay_out(self, buf, shape: dict) -> NvmSpace:
        prm = self.params
        space = NvmSpace(buf, int(prm["nvm_group_bytes"]))
        self._sites = shape["sites"]
        for name, tracks in sorted(shape["bitmaps"].items()):
            space.plan(f"bitmap:{name}", bool, tracks)
            space.plan(f"sent:{name}", bool, tracks)
        for row_id, tracks in shape["save_rows"]:
            space.plan(f"save_row:{row_id}", bool, max(1, tracks))
        n_saved = int(prm["max_saved_nodes"])
        space.plan("saved", SAVED_DTYPE, n_saved)
        space.plan("restore_queue", np.int64, (n_saved, 2))
        self._pool = SegmentPool(space, "pool", SEGMENT_BYTES, max(1, int(prm["nvm_pool_bytes"]) // SEGMENT_BYTES))
        for name, cap in (("pending", prm["max_pending_writes"]), ("lost", prm["max_lost_tracks"]),
                          ("save_cache", max(int(prm["max_cached_saves"]), int(prm["cache_save_threshold_tracks"])))):
            space.plan(name, BlobMap.DTYPE, int(cap))
        slots = shape["tsq_slots"]
        for i in range(slots):
            space.plan(f"tsq_nodes:{i}", TSQ_NODE_DTYPE, int(prm["tsq_max_nodes"]))
        space.plan("tsq_meta", TSQ_META_DTYPE, slots)
        space.seal()
        self._pool.attach()
        self._tsq_slots = slots
        return space

    def _map(self, name: str, enc, dec, dumps=bytes, loads=bytes) -> BlobMap:
        return BlobMap(self.nvm, name, 0, self._pool, enc, dec, dumps, loads, plan=False)

    def pair_bitmap(self, pair: P.Pair, kind: str) -> DiffBitmap:
        """The pair's differential bitmap (``bitmap``) or sent-tracks map (``sent``), cleared."""
        bm = DiffBitmap.on(self.nvm, self.nvm.arr(f"{kind}:{pair.name}"))
        bm.clear_all()
        return bm

    def save_rows_tables(self) -> dict[int, np.ndarray]:
        return {int(name.split(":")[1]): view for name, view in self.nvm._arrays.items()
                if name.startswith("save_row:")}

    def saved_queue(self, max_nodes: int) -> SavedDataQueue:
        """The saved-data queue (Fig. 11) of a new copy, emptied."""
        q = SavedDataQueue(0, space=self.nvm, records=self.nvm.arr("saved"),
                           pair_names=sorted(self.pairs.pairs))
        return q.reset(max_nodes)

    def save_cache(self) -> BlobMap:
        """Saved (or staged) tracks kept in cache (511), emptied."""
        m = self._map("save_cache", int_key, int_key_back)
        m.clear()
        return m

    def restore_list(self) -> IntRecords:
        return IntRecords(self.nvm, self.nvm.arr("restore_queue"))

    def nvm_barrier(self) -> None:
        """Make what the NVM holds now durable before a media write that
        depends on it (a commit in the middle of an event)."""
        self.commit()

    def media_write_ahead(self, ldev: int, lba: int, sectors: int) -> None:
        """The write-ahead rule for a host write's local update: the media are
        written in place and survive a kill -9, the round's NVM changes do
        not, so the tracks about to change are logged in the NVM *before*
        the media write (``NvmSpace.log_intent``: no commit, no undo). The
        records that describe the change (the bit, the time-series node,
        the mirror write in flight) follow it as before; the round's commit
        makes the log stale, and a restart that finds it replays those
        tracks from the media (``after_restart``). Only an LDEV some pair
        mirrors needs it."""
        if all(p.state == P.SMPL for p in self.pairs.by_master_ldev(self.site, ldev)):
            return
        if not self.nvm.intent_room():
            self.nvm_barrier()   # the round's earlier writes are recorded: commit them, start a new log
        spt = self.sectors_per_track
        self.nvm.log_intent(ldev, lba // spt, (lba + sectors - 1) // spt)

    @_changes_cold
    def after_restart(self, now_ns: int) -> list:
        """A restarted DKC, its media attached: the host writes killed between
        their media write and their round's commit (``media_write_ahead``)
        go through the mirror rules again with what the media hold now
        (``mirror.replay_in_doubt``); their records stay in doubt until the
        next commit."""
        tracks: dict[int, set[int]] = {}
        for ldev, first, last in self.nvm.in_doubt:
            tracks.setdefault(int(ldev), set()).update(range(int(first), int(last) + 1))
        self.nvm.in_doubt = []
        for ldev in sorted(tracks):
            mirror.replay_in_doubt(self, now_ns, ldev, sorted(tracks[ldev]))
        return self._flush()

    def commit(self, host_state: dict | None = None) -> int:
        """The end of a scheduler round: the commit point of the NVM (see
        ``firmware.nvm_tables``), with the actor's ``host_state`` when given;
        returns the bytes written into the NVM since the last commit.

        The cold group (pairs, sessions, queues' objects, settings) is
        pickled only when something since the last commit may have changed
        it (``_cold_dirty``): under a mirrored load a round's events are host
        I/Os and mirror writes, which change only the hot group and the
        tables, so a round costs O(what changed), not a pickle of every pair."""
        if host_state is not None:
            self.host_state = host_state
        state = {k: v for k, v in self.__dict__.items() if k not in _VOLATILE}
        hot = {k: state.pop(k) for k in _HOT}
        cold = state
        if not self._cold_dirty:
            if CHECK_COLD_CLEAN and self.nvm._pickle(state) != self.nvm.group_blobs["cold"]:
                raise RuntimeError(f"{self.site}: the cold group changed on a path that said it would not: "
                                   "cold-dirty invariant violated")
            cold = UNCHANGED
        written = self.nvm.commit({"hot": hot, "cold": cold, "host": {"state": self.host_state}})
        # a commit in the middle of a step that may change the cold group
        # (nvm_barrier) leaves it marked: what the step does next is pickled too
        self._cold_dirty = self._cold_hold > 0
        return written

    def _in_cold(self, fn, *args, **kwargs):
        """Run ``fn``, a step that may change the cold group: it stays marked
        changed from before it starts until the first commit after it ends."""
        self._cold_dirty = True
        self._cold_hold += 1
        try:
            return fn(*args, **kwargs)
        finally:
            self._cold_hold -= 1
            self._cold_dirty = True

    @_changes_cold
    def note_double_fault(self, where: str, error: str) -> None:
        """The DKC actor reports a double fault its handler caught (kept in the NVM)."""
        self.double_faults.append({"where": where, "error": error})

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

    def restore_io(self, sid: int, tag: int, ldev: int, track: int, save_row: int | None,
                   save_slot: int | None) -> None:
        self._out.append(RestoreIo(sid, tag, ldev, track, save_row, save_slot))

    def copy_read(self, sid: int, pair: str, ldev: int, track: int) -> None:
        self._out.append(CopyRead(sid, pair, ldev, track))

    @_changes_cold
    def copy_read_done(self, now_ns: int, sid: int, pair: str, track: int) -> list:
        """The DKC finished timing the ``CopyRead`` of this track."""
        RM.copy_read_done(self, now_ns, sid, pair, track)
        return self._flush()

    @_changes_cold
    def restore_done(self, now_ns: int, sid: int, tag: int) -> list:
        """The DKC read the saved copy of ``RestoreIo`` ``tag`` of copy ``sid``."""
        RR.restore_io_done(self, now_ns, sid, tag)
        return self._flush()

    @_changes_cold
    def save_place_lost(self, row_id: int, why: str) -> list:
        """A save row lost its redundancy (a disk of its group, or the spare, failed)."""
        RR.withdraw_save_place(self, row_id, why)
        return self._flush()

    def answer_host(self, done: HostDone) -> None:
        self._out.append(done)

    def read_home(self, ldev: int, track: int) -> bytes:
        self.lost.check(ldev, track, track, "read of")
        cached = self.store.cached(ldev, track)
        data = self.store.read_track(ldev, track)
        if not cached:   # a track in the DKC's cache costs no disk read
            self.disk_cost("read", ldev, track, len(data))
        return data

    def read_copied(self, ldev: int, track: int) -> bytes:
        """The bytes of a track whose disk read a ``CopyRead`` already timed."""
        self.lost.check(ldev, track, track, "read of")
        return self.store.read_track(ldev, track)

    def write_home(self, ldev: int, track: int, data: bytes) -> None:
        self.store.write_track(ldev, track, data)
        self.disk_cost("write", ldev, track, len(data))
        self.track_rewritten(ldev, track)

    def track_rewritten(self, ldev: int, track: int) -> None:
        """A whole-track write gave ``track`` a right image again."""
        if self.lost:
            self._cold_dirty = True
            if self.lost.clear(ldev, track):
                self.trace(None, "lost_track_rewritten", ldev=ldev, track=track)

    @_changes_cold
    def mark_lost(self, ldev: int, track: int, why: str) -> None:
        """No right image of this track exists any more: reads fail until it is rewritten."""
        self.lost.mark(ldev, track, why)
        self.trace(None, "track_lost", ldev=ldev, track=track, why=why)

    def check_readable(self, ldev: int, lba: int, sectors: int, what: str) -> None:
        """Raise ``TrackLost`` when the span touches a track marked lost."""
        if self.lost:
            spt = self.sectors_per_track
            self.lost.check(ldev, lba // spt, (lba + max(sectors, 1) - 1) // spt, what)

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
            slot = len(self.tsq)
            if slot >= self._tsq_slots:
                raise NvmFull(f"{self.site}: no NVM slot left for time-series queue {unit} "
                              f"({self._tsq_slots} slots)")
            self.tsq[unit] = TimeSeriesQueue(unit, int(self.params["tsq_max_nodes"]), self.nvm,
                                             self.nvm.arr(f"tsq_nodes:{slot}"), self.nvm.arr("tsq_meta"), slot,
                                             self._pool)
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
    def snapshot(self) -> tuple:
        """Commit, then a (sparse) copy of the non-volatile memory: what a
        DKC killed now restarts from (``restore``)."""
        self.commit()
        return self.nvm.image()

    @classmethod
    def restore(cls, image, store: TrackStore, save_media: SaveMedia) -> "DkcFirmware":
        """The firmware of a DKC restarted from ``image`` (a ``snapshot``, or
        the NVM buffer itself): the round in progress at the kill is undone."""
        buf = NvmSpace.from_image(image) if isinstance(image, tuple) else image
        return cls.reopen(buf, store, save_media)

    @classmethod
    def reopen(cls, buf: np.ndarray, store: TrackStore, save_media: SaveMedia) -> "DkcFirmware | None":
        """The firmware whose tables live in ``buf``, or None if it never committed."""
        blob = NvmSpace.read_format(buf)
        if blob is None:
            return None
        shape = pickle.loads(blob)
        fw = cls.__new__(cls)
        fw.site, fw.store, fw.save_media, fw._out = shape["site"], store, save_media, []
        fw._cold_dirty, fw._cold_hold = True, 0
        fw.params = {**DEFAULTS, **{k: v for k, v in shape["params"].items() if k != "pairs"}}
        fw.nvm = fw._lay_out(buf, shape)
        groups = fw.nvm.open()
        fw.__dict__.update(groups["cold"])
        fw.__dict__.update(groups["hot"])
        fw.host_state = groups["host"]["state"]
        return fw

    def export_check(self, ldev: int) -> None:
        """An export of ``ldev`` must not carry bytes of a lost track."""
        if self.lost:
            self.lost.check(ldev, 0, self.store.ldev_tracks(ldev) - 1, "export of")

    def timers(self) -> list[SetTimer | CopyRead]:
        """Timers implied by the non-volatile state: the DKC actor re-arms
        them after `restore` (a restarted process has no timers), and issues
        again the copy reads it was timing."""
        armed = [SetTimer(s.timer_name, s.deadline_at_ns) for _, s in sorted(self.sessions.items())
                 if s.deadline_at_ns is not None]
        for _, s in sorted(self.sessions.items()):
            armed += [CopyRead(s.sid, name, self.pairs.get(name).m_ldev, track) for name, track in s.reading]
        rs = self.rsession
        if rs is not None and rs.rolling_back:
            armed.append(SetTimer(f"rc_restore:{rs.sid}", 0))   # finish the rollback from the NVM's cursor
        elif rs is not None and rs.in_progress:
            armed.append(SetTimer(rs.timer_name, rs.watchdog_at_ns))
        return armed

    # ------------------------------------------------------------ events
    def _mirrors_only(self, ldev: int) -> bool:
        """A host write to ``ldev`` changes only the hot group and the tables:
        every pair it masters there is in PAIR (mirror: a bit of the sent
        map, a sequence number, a mirror write in flight, a host wait) and
        no track is marked lost."""
        return not self.lost and all(p.state == P.PAIR for p in self.pairs.by_master_ldev(self.site, ldev))

    def host_write(self, now_ns: int, req_id, ldev: int, lba: int, sectors: int,
                   data: bytes) -> list:
        if not self._mirrors_only(ldev):
            self._in_cold(mirror.do_host_write, self, now_ns, req_id, ldev, lba, sectors, data)
            return self._flush()
        try:
            mirror.do_host_write(self, now_ns, req_id, ldev, lba, sectors, data)
        finally:
            if not self._mirrors_only(ldev):   # it did not stay on the mirror path after all
                self._cold_dirty = True
        return self._flush()

    def host_read(self, now_ns: int, req_id, ldev: int, lba: int, sectors: int) -> list:
        try:
            self.check_readable(ldev, lba, sectors, "read of")
            data = self.store.read_sectors(ldev, lba, sectors)
        except ValueError as exc:
            self._out.append(HostDone(req_id, False, str(exc), None))
        else:
            self._out.append(HostDone(req_id, True, None, data))
        return self._flush()

    def _peer_changes_only_hot(self, msg) -> bool:
        """A mirror write outside a recovery copy, and a good acknowledgement
        of one, change only the hot group (sequence numbers, the reorder
        buffer, host waits) and the tables; anything else may change the cold one."""
        if self.lost or not isinstance(msg, dict):
            return False
        kind = msg.get("kind")
        if kind == MsgKind.RC_WRITE.value:
            return self.rsession is None
        return kind == MsgKind.RC_WRITE_ACK.value and bool(msg.get("ok"))

    def peer_message(self, now_ns: int, from_site: str, msg: dict) -> list:
        if not self._peer_changes_only_hot(msg):
            self._in_cold(dispatch_peer, self, now_ns, from_site, msg)
            return self._flush()
        try:
            dispatch_peer(self, now_ns, from_site, msg)
        finally:
            if self.lost or self.rsession is not None:   # it did not stay on the mirror path after all
                self._cold_dirty = True
        return self._flush()

    @_changes_cold
    def timer(self, now_ns: int, name: str) -> list:
        kind, _, sid = name.partition(":")
        if kind == "rc_watchdog" and self.rsession is not None and str(self.rsession.sid) == sid:
            RR.s515_timeout(self, now_ns, self.rsession)
        elif kind == "rc_restore" and sid.isdigit():
            RR.restore_resume(self, now_ns, int(sid))
        elif kind == "rc_deadline" and sid.isdigit() and int(sid) in self.sessions:
            session = self.sessions[int(sid)]
            RM.abort(self, session, list(session.pair_names), reason="deadline passed")
        return self._flush()

    @_changes_cold
    def command(self, now_ns: int, cmd: Request | dict) -> tuple[dict, list]:
        """A console request (typed, or its wire dict); a ValueError leaves the state as it was."""
        req = request_from_wire(cmd) if isinstance(cmd, dict) else cmd
        try:
            result = run_command(self, now_ns, req)
        except ValueError:
            self._out = []
            raise
        return result, self._flush()


# ====================================================================== the dispatch tables

def dispatch_peer(fw: DkcFirmware, now_ns: int, from_site: str, msg: dict) -> None:
    """The wire boundary of the firmware: a peer message that breaks the
    protocol (unknown kind, missing or mistyped field, oversized data) is
    traced and dropped; a well-formed one goes to its step. An exception in
    the step is our bug and stops the run."""
    try:
        nbytes = check_peer_message(msg)
    except MalformedMessage as exc:
        fw.trace(None, "bad_peer_message", kind=str(msg.get("kind")), from_site=from_site, error=str(exc))
        return
    if nbytes > MAX_MSG_DATA_BYTES:
        fw.trace(None, "oversized_peer_message", kind=msg["kind"], nbytes=nbytes)
        return
    _PEER_HANDLERS[msg["kind"]](fw, now_ns, from_site, msg)


#: message kind -> the flowchart step that receives it (master side: m, remote side: r)
_PEER_HANDLERS = {
    MsgKind.PAIR_CREATE.value: F4.s351_remote_accepts_pairs,        # r
    MsgKind.PAIR_CREATE_OK.value: F4.s352_normal_end_received,      # m
    MsgKind.PAIR_READY.value: F4.s353_initial_copy_done,            # r
    MsgKind.PAIR_SPLIT.value: F4.on_pair_split,                     # r
    MsgKind.COPY_TRACK.value: F4.on_copy_track,                     # r (353, 408 -> 506)
    MsgKind.COPY_TRACK_ACK.value: F4.on_copy_track_ack,             # m (409)
    MsgKind.RC_WRITE.value: mirror.on_rc_write,                     # r
    MsgKind.RC_WRITE_ACK.value: mirror.on_rc_write_ack,             # m
    MsgKind.RC_CONFIG_REQ.value: RR.on_rc_config_req,               # r (403)
    MsgKind.RC_CONFIG.value: RM.on_rc_config,                       # m (404, 405)
    MsgKind.RC_START.value: RR.on_rc_start,                         # r (501)
    MsgKind.RC_READY.value: RM.on_rc_ready,                         # m (406)
    MsgKind.RC_REACHED.value: RR.on_rc_reached,                     # r (513)
    MsgKind.RC_COMPLETE.value: RR.on_rc_complete,                   # r (514)
    MsgKind.RC_COMPLETE_ACK.value: RM.on_rc_complete_ack,           # m
    MsgKind.RC_ABORTED.value: RM.on_rc_aborted,                     # m
}
assert sorted(_PEER_HANDLERS) == sorted(k.value for k in MsgKind), "every message kind has one handler"


def run_command(fw: DkcFirmware, now_ns: int, req: Request) -> dict:
    """A console request; ValueError says what to tell the user."""
    return _COMMANDS[type(req)](fw, now_ns, req)


def cmd_set(fw: DkcFirmware, now_ns: int, req: SetParam) -> dict:
    if req.key not in DEFAULTS:
        raise ValueError(f"unknown parameter {req.key!r}")
    fw.params[req.key] = req.value
    return {"ok": True, req.key: req.value}


#: request type -> the step or command that serves it
_COMMANDS = {PairCreate: F4.s350_pair_form_instruction, PairSplit: F4.cmd_pairsplit,
             PairResync: RM.cmd_pairresync, HorcTakeover: F4.cmd_horctakeover,
             LinkState: mirror.on_path_state, PairDisplay: views.cmd_pairdisplay,
             Show: views.cmd_show, SetParam: cmd_set}


def _dumps(value) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class SiteKey:
    """(site, seq) -> two ints for an NVM table key (sites by index)."""

    def __init__(self, sites: list[str]):
        self.sites = list(sites)

    def __call__(self, key) -> tuple[int, int]:
        return self.sites.index(key[0]), int(key[1])


class SiteKeyBack(SiteKey):
    def __call__(self, k0: int, k1: int) -> tuple[str, int]:
        return self.sites[k0], k1
