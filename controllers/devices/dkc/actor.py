"""Disk controller (DKC) actor: cache, RAID5 over small disks, the firmware.

The DKC hosts the sans-I/O firmware (``firmware.dkc.DkcFirmware``) and
carries out its actions: peer messages go to the inter-site link, host
completions go back over the channel after the controller's cost, firmware
timers become actor timers, and disk costs become timed requests to the
small-disk actors. LDEV data lives on the disks' shared-memory media through
``firmware.raid.layout.RaidArray``; the firmware's state (pairs, bitmaps, queues,
save-area bitmap, saved-data queue, cache-resident saved tracks) is written
to the DKC's non-volatile region, so a DKC process killed
and restarted mid-recovery resumes, and still rolls back correctly.

Cost model (all from the config's [dkc] table): a command occupies the
controller for ``cycles_per_io + cycles_per_kib * KiB`` cycles at ``clock``;
commands queue FIFO on the controller. Writes are write-back: the track
becomes write-pending in the cache and is destaged later, at most
``DESTAGE_INFLIGHT_MAX`` tracks at once, repeated writes to a pending track
coalescing; a read of a track not in the cache waits for the disks.
The cache holds real track bytes in a shared-memory region (slots, LRU);
it is write-through, so the media are always current and a restarted DKC
simply starts with a cold cache.

Beside this module: ``cache.py`` (the cache and the firmware's TrackStore
through it), ``save_media.py`` (parity tracks and spares as save area),
the NVM region, where the firmware keeps its tables (``firmware/nvm_tables.py``); the sparing policy is
the firmware's (``firmware/raid/sparing.py``).
"""

from __future__ import annotations

import numbers
from collections import OrderedDict

from controllers.devices.dkc.cache import CachedStore, DataLost, TrackCache
from controllers.devices.dkc.save_media import DiskSaveMedia
from firmware.dkc import DkcFirmware
from firmware.lost_tracks import LostTracks
from firmware.protocol import (SECTOR_BYTES, SIGNAL_EVENTS, SIGNAL_STEPS, CancelTimer, CopyRead, DiskCost, HostDone,
                               LinkState, RestoreIo, SendPeer, SetTimer, Trace)
from firmware.raid.layout import DataLossError, RaidArray, RaidGroup, RaidLayout
from firmware.raid.sparing import REBUILD_RETRY_NS, decide_rebuild, locate_failed_disk
from controllers.devices.link import message_bytes
from emu.actor import Actor, Promise
from emu.params import Param
from emu.wire import body_problem

PENDING_READS_MAX = 4096
#: thin media: the free space behind the media is looked at again after this many bytes allocated
THIN_CHECK_BYTES = 16 << 20
#: thin media: writes stop (MediaFull) when less than this is left behind the media
THIN_RESERVE_BYTES = 256 << 20
DESTAGE_IO, REBUILD_IO = "destage", "rebuild"   # tags of the disk transfers nobody's read waits on
RESTORE_IO = "restore"                 # tag of a rollback's save-area read (the firmware waits on it)
COPY_IO = "copy"                       # tag of a copy's track read (the firmware sends the track after it)
DESTAGE_INFLIGHT_MAX = 8               # tracks being destaged at once (per DKC)
REBUILD_STRIPES_PER_STEP = 8          # stripes rebuilt per step (one kernel call)
#: firmware steps whose trace record also raises a named event for ``run until``



def warm_up() -> None:
    """Compile the RAID kernels and the numba typed list of member disks
    (about 1-2 s, which numba's disk cache does not keep for typed lists)
    once in the processes backend's parent, so that no DKC process, and no
    DKC restarted after a kill, compiles them again."""
    from firmware.raid.parity import warm_up as raid_warm_up
    raid_warm_up()

class MediaFull(RuntimeError):
    """Thin media: the memory behind the shared-memory media is about to run
    out. Not bad input and not a disk fault: the run stops with this message
    (a page written past the end of /dev/shm would kill the process with
    SIGBUS and no word of why)."""


class Dkc(Actor):
    KIND = "dkc"
    DOC = "Disk controller (patent: 102/112) with cache, RAID5 and the remote-copy firmware."
    PARAMS = {
        "site": Param("str", doc="site name"),
        "layout": Param("dict", doc="disks, parity groups and LDEVs (from the site config)"),
        "cost": Param("dict", doc="controller cost model (the config's [dkc] table)"),
        "pairs": Param("list", [], "pairs this DKC masters or backs up"),
        "peers": Param("dict", {}, "remote site -> link actor"),
        "recovery": Param("dict", {}, "firmware recovery options from [recovery]"),
    }

    # -- start / restart --------------------------------------------------------------
    def _build(self, raid_state: list | None = None, disk_map: dict | None = None) -> None:
        lay = self.params["layout"]
        tb, nd = lay["track_bytes"], lay["n_data"]
        self.tb = tb
        media = [self.region(f"{d}.media").buf for d in lay["disks"]]
        self.media_bufs = media
        self._disk_of = {name: i for i, name in enumerate(lay["disks"])}
        per = nd + 1
        first_spare = lay["groups"] * per
        #: which site disk backs each member of each group (a rebuild swaps in a spare)
        self.member_map = disk_map["members"] if disk_map else [list(range(g * per, (g + 1) * per))
                                                               for g in range(lay["groups"])]
        #: spares not consumed by a rebuild, and rebuilds in progress: group -> spare disk
        self.free_spares = disk_map["free_spares"] if disk_map else list(range(first_spare, lay["n_disks"]))
        self.rebuilds = disk_map["rebuilds"] if disk_map else {}
        self.rebuild_wait: dict[int, int] = {}
        self.groups = []
        site = self.params["site"]
        thin = self.region(f"{site}.dkc.thin").buf if lay.get("thin") else None
        self.thin_allocated = self._thin_checked = 0
        for g in range(lay["groups"]):
            layout = RaidLayout(nd, tb, lay["tracks_per_disk"])
            members = [media[d] for d in self.member_map[g]]
            per_map = RaidGroup.thin_map_bytes(layout)
            tmap = None if thin is None else thin[g * per_map:(g + 1) * per_map]
            if raid_state:
                spare = media[self.rebuilds[g]] if g in self.rebuilds else None
                self.groups.append(RaidGroup.from_state(layout, members, raid_state[g], spare, tmap, self._allocate))
            else:
                self.groups.append(RaidGroup(layout, members, tmap, self._allocate))
        self.array = RaidArray(self.groups)
        self.group_index = {id(g): i for i, g in enumerate(self.groups)}
        for ld in lay["ldevs"]:
            self.array.define_ldev(ld["ldev"], ld["tracks"], ld["group"])
        self.track_cache = TrackCache(self.region(f"{site}.dkc.cache").buf, tb, self.params["cost"]["cache_tracks"])
        self.store = CachedStore(self.array, tb, self.track_cache)
        self.media = DiskSaveMedia(self.groups, media[first_spare:], tb)
        self.cpu_free_ns = 0
        #: write-pending tracks in LRU order -> True while being destaged
        self.dirty: OrderedDict = OrderedDict()
        self.destage_wait: dict[int, list] = {}   # destage seq -> [track key, transfers left]
        self.destaging = 0
        self.destage_seq = 0
        #: host FLUSHes waiting for write-pending tracks: [req_id, keys still pending]
        #: (volatile: after a restart the host's request times out)
        self.flush_waits: list[list] = []
        self.pending_reads: dict[str, dict] = {}
        self.disk_seq = 0
        #: the rollback's restores being timed: tag -> sid (volatile: the firmware resumes after a restart)
        self.restore_waits: dict[int, int] = {}
        #: copy reads being timed: seq -> [CopyRead, transfers left] (volatile: the firmware re-issues them)
        self.copy_wait: dict[int, list] = {}
        self.copy_seq = 0
        #: site disk -> when it last answered anything (volatile): a disk that
        #: answers other transfers is busy, not dead (see _timer_read)
        self.disk_answered_ns: dict[int, int] = {}
        self.stats = {"reads": 0, "writes": 0, "read_hits": 0, "peer_in": 0, "peer_dropped": 0,
                      "disk_ios": 0, "disk_timeouts": 0, "disk_busy_waits": 0, "bad_messages": 0, "rebuilt_stripes": 0,
                      "destaged": 0, "write_pending_max": 0, "xor_bytes": 0, "copy_reads": 0,
                      "copy_read_hits": 0, "copy_reads_waiting_max": 0,
                      "peer_malformed": 0, "flushes": 0, "trims": 0,
                      "nvm_bytes_written": 0, "nvm_commits": 0}

    def _allocate(self, nbytes: int) -> None:
        """A thin stripe is about to be stored: refuse (MediaFull) when the
        memory behind the media would run out. Looked at every
        THIN_CHECK_BYTES, so the cost stays O(written)."""
        self.thin_allocated += nbytes
        if self.thin_allocated < self._thin_checked + THIN_CHECK_BYTES:
            return
        self._thin_checked = self.thin_allocated
        lay = self.params["layout"]
        region = self.region(f"{lay['disks'][0]}.media")
        free = region.backing_free_bytes()
        if free < THIN_RESERVE_BYTES:
            where = "/dev/shm" if region.shared else "memory (MemAvailable)"
            raise MediaFull(f"{self.name}: thin media full: {free} bytes left in {where} after "
                            f"{self.thin_allocated} bytes of stripes stored at this site; the written data "
                            f"outgrows what backs the media ({lay.get('key_prefix', '')}thin = true, "
                            f"{lay.get('key_prefix', '')}ldev_size): write less, or give /dev/shm more room")

    def _fw_params(self) -> dict:
        lay, rec, cost = self.params["layout"], self.params["recovery"], self.params["cost"]
        return {"pairs": self.params["pairs"], "cache_save_threshold_tracks": cost["cache_save_threshold"],
                "keep_raid5": rec.get("keep_raid5", False), "spares_usable": rec.get("spares_usable", True),
                "format_shortcut": rec.get("format_shortcut", True),
                "n_ldevs": len(lay["ldevs"]), "n_disks": lay["groups"] * (lay["n_data"] + 1),
                "n_parity_disks": lay["groups"], "n_spare_disks": lay["spares"]}

    def on_start(self):
        self._build()
        self.fw = DkcFirmware(self.params["site"], self.store, self.media, self._fw_params(), nvm=self._nvm())
        self.epochs = {site: 0 for site in sorted(self.params["peers"])}
        self._persist()

    def on_restart(self):
        fw = DkcFirmware.reopen(self._nvm(), None, None)   # the tables, the kill's round undone
        if fw is None:
            self.on_start()
            return
        state = fw.host_state
        self._build(state["raid"], state["disks"])
        fw.store, fw.save_media = self.store, self.media
        self.fw = fw
        self.epochs = state["epochs"]
        self.media.spare_failed = state.get("spare_failed", self.media.spare_failed)
        self.trace("dkc.restart")
        # a host write killed between its media write and the round's commit is replayed from the media
        self._execute([*self.fw.after_restart(self.now_ns), *self.fw.timers()])
        for g in sorted(self.rebuilds):
            self.set_timer(f"rebuild:{g}", 0, g)

    # -- non-volatile memory -----------------------------------------------------------------
    def on_checkpoint(self) -> None:
        self._persist()

    def _persist(self) -> None:
        """The round's commit point: the firmware's tables were written in
        place during the round; this writes what changed of the rest."""
        state = {"raid": [g.export_state() for g in self.groups], "epochs": self.epochs,
                 "disks": {"members": self.member_map, "free_spares": self.free_spares, "rebuilds": self.rebuilds},
                 "spare_failed": list(self.media.spare_failed)}
        self.fw.commit(state)
        # counted by the NVM (commits in the middle of an event included) since this DKC (re)started
        self.stats["nvm_bytes_written"] = self.fw.nvm.total_written
        self.stats["nvm_commits"] = self.fw.nvm.commits

    def _nvm(self):
        return self.region(f"{self.params['site']}.dkc.nvm").buf

    # -- scheduler promises ------------------------------------------------------------------------
    def _command_ns(self) -> int:
        """The least controller time of one command (``_occupy`` of 0 bytes)."""
        c = self.params["cost"]
        return c["cycles_per_io"] * 1_000_000_000 // c["clock_hz"]

    def _answered_peers(self) -> list[str]:
        """Everyone this DKC answers through its controller (``_occupy``):
        its host's channel and its links; the disks get their commands at once."""
        disks = set(self.params["layout"]["disks"])
        return [p for p in self.peers() if p not in disks]

    def promise(self) -> Promise:
        """A host completion (HostDone) and a peer message (SendPeer) leave
        only after the controller's cost of the command (``_occupy``), so no
        sooner than ``cycles_per_io`` after the event that caused them."""
        return Promise(min_delay_ns={p: self._command_ns() for p in self._answered_peers()})

    def send_floors(self) -> dict[str, int]:
        """The controller is FIFO: whatever comes next, its answer leaves no
        sooner than the controller is free plus one command."""
        floor = self.cpu_free_ns + self._command_ns()
        return {p: floor for p in self._answered_peers()}

    # -- cost model ----------------------------------------------------------------------------
    def _occupy(self, nbytes: int) -> int:
        """Delay until a command moving ``nbytes`` is done on the controller."""
        c = self.params["cost"]
        cycles = c["cycles_per_io"] + c["cycles_per_kib"] * nbytes // 1024
        now = self.now_ns
        start = now if now > self.cpu_free_ns else self.cpu_free_ns
        self.cpu_free_ns = start + cycles * 1_000_000_000 // c["clock_hz"]
        return self.cpu_free_ns - now

    def _occupy_xor(self, nbytes: int) -> None:
        """Charge the controller for XOR-ing ``nbytes`` of parity."""
        c = self.params["cost"]
        cycles = c.get("cycles_per_kib_xor", 0) * nbytes // 1024
        self.cpu_free_ns = max(self.now_ns, self.cpu_free_ns) + cycles * 1_000_000_000 // c["clock_hz"]
        self.stats["xor_bytes"] += nbytes

    def _touch_cache(self, ldev: int, lba: int, sectors: int) -> bool:
        """True when every track of the request is in a cache slot."""
        spt = self.tb // SECTOR_BYTES
        first, last = lba // spt, (lba + sectors - 1) // spt
        slots = self.track_cache.slot_of
        if first == last:   # most requests: one track
            return (ldev, first) in slots
        return all((ldev, t) in slots for t in range(first, last + 1))

    # -- events ---------------------------------------------------------------------------------
    def on_message(self, src, kind, body):
        """The DKC's wire boundary: a message of an unknown kind or whose body
        breaks its schema (``_BODY_FIELDS``) is counted and dropped; anything
        raised by a handler past this point is our bug and stops the run."""
        handler = _HANDLERS.get(kind)
        problem = "unknown kind" if handler is None else body_problem(body, _BODY_FIELDS[kind])
        if problem is None and kind == "io" and body["op"] == "write" and not isinstance(body.get("data"), _BYTES):
            problem = "write data must be bytes"
        if problem is not None:
            self.stats["bad_messages"] += 1
            self.trace("dkc.bad_message", kind=str(kind), error=problem)
            return
        try:
            handler(self, src, body)
        except DataLost as exc:   # a double fault the firmware did not expect: report, keep serving
            self.fw.note_double_fault(kind, str(exc))
            self.trace("dkc.data_loss", kind=kind, error=str(exc))

    def on_io(self, src, body):
        op, ldev, lba, sectors = body["op"], int(body["ldev"]), int(body["lba"]), int(body["sectors"])
        req = [src, body["id"]]
        if op not in _HOST_OPS:
            self.stats["bad_messages"] += 1
            self.trace("dkc.bad_message", kind="io", error=f"unknown op {op!r}")
            self._execute([HostDone(f"{src}|{body['id']}", False, f"unknown op {op!r}", None)])
            return
        if op in ("flush", "trim"):
            self._flush_or_trim(f"{src}|{body['id']}", op, ldev, lba, sectors)
            return
        hit = self._touch_cache(ldev, lba, sectors)
        if op == "write":
            self.stats["writes"] += 1
            data = body["data"]
            try:
                acts = self.fw.host_write(self.now_ns, f"{src}|{body['id']}", ldev, lba, sectors, bytes(data))
            except DataLost as exc:   # a double fault: fail the write, never pretend it worked
                acts = [HostDone(f"{src}|{body['id']}", False, str(exc), None)]
                self.trace("dkc.data_loss", ldev=ldev, lba=lba, error=str(exc))
            self._execute(acts)
            return
        self.stats["reads"] += 1
        self.stats["read_hits"] += hit
        acts = self.fw.host_read(self.now_ns, f"{src}|{body['id']}", ldev, lba, sectors)
        if hit:
            self._execute(acts)
            return
        self._read_from_disks(req, ldev, lba, sectors, acts)

    def _flush_or_trim(self, req_id: str, op: str, ldev: int, lba: int, sectors: int) -> None:
        """A host FLUSH (``sectors`` 0: the whole LDEV, else the tracks of the
        range: a FUA write's) is answered when every track of it that is
        write-pending now has been destaged to the disks; a TRIM changes no
        data (NBD lets a discarded range read back as before) and is answered
        after the command's cost."""
        self.stats["flushes" if op == "flush" else "trims"] += 1
        if op == "trim":
            self._execute([HostDone(req_id, True, None, None)])
            return
        spt = self.tb // SECTOR_BYTES
        first, last = (lba // spt, (lba + sectors - 1) // spt) if sectors > 0 else (0, 1 << 62)
        keys = {k for k in self.dirty if k[0] == ldev and first <= k[1] <= last}
        if not keys:
            self._execute([HostDone(req_id, True, None, None)])
            return
        self.flush_waits.append([req_id, keys])

    def _dirty_gone(self, key) -> None:
        """Track ``key`` is no longer write-pending: answer the flushes it held."""
        if not self.flush_waits:
            return
        done = []
        for wait in self.flush_waits:
            wait[1].discard(key)
            if not wait[1]:
                done.append(wait)
        for wait in done:
            self.flush_waits.remove(wait)
            self._execute([HostDone(wait[0], True, None, None)])

    def _read_from_disks(self, req, ldev, lba, sectors, acts):
        """A cache miss: the reply waits for the disk transfers of the tracks."""
        spt = self.tb // SECTOR_BYTES
        ios = []
        for track in range(lba // spt, (lba + sectors - 1) // spt + 1):
            try:
                grp, lt = self.array.locate(ldev, track)
                plan = grp.plan_read(lt)
            except (ValueError, DataLossError):
                # beyond the LDEV, or underivable: the firmware's answer in
                # ``acts`` already says so, and there is no transfer to time
                continue
            ios += [(self.group_index[id(grp)], io) for io in plan]
        if not ios or len(self.pending_reads) >= PENDING_READS_MAX:
            self._execute(acts)
            return
        self.disk_seq += 1
        rid = f"r{self.disk_seq}"
        self.pending_reads[rid] = {"left": len(ios), "acts": acts, "answered": [],
                                   "disks": sorted({self._disk_index(g, io.disk) for g, io in ios})}
        for g, io in ios:
            self._disk_io(g, io, rid)
        self.set_timer(f"read:{rid}", self.params["cost"]["disk_timeout_ns"], rid)

    def _disk_name(self, g: int, member: int) -> str:
        """Member ``member`` of group ``g`` (n_disks = the spare being rebuilt)."""
        disks = self.params["layout"]["disks"]
        if member < len(self.member_map[g]):
            return disks[self.member_map[g][member]]
        return disks[self.rebuilds[g]]

    def _disk_io(self, g: int, io, rid) -> None:
        self.stats["disk_ios"] += 1
        self.send(self._disk_name(g, io.disk), "io", {"id": rid, "op": io.op, "lba": io.offset_bytes // SECTOR_BYTES,
                                                      "sectors": max(1, io.length_bytes // SECTOR_BYTES)})

    def on_disk_done(self, src, body):
        """A small disk answered. Its ``id`` is what the DKC sent: a host
        read's ``rN``, a tagged ``[DESTAGE_IO, seq]`` or ``[REBUILD_IO, group]``,
        or None (a transfer only timed, nobody waits for it)."""
        rid = body["id"]
        disk = self._disk_of.get(src)
        if disk is not None:
            self.disk_answered_ns[disk] = self.now_ns
        if isinstance(rid, list):
            tag, key = rid if len(rid) == 2 else (None, None)
            if tag == DESTAGE_IO and isinstance(key, int):
                self._destage_done(key)
            elif tag == REBUILD_IO and isinstance(key, int):
                self._rebuild_io_done(key)
            elif tag == RESTORE_IO and isinstance(key, int):
                self._restore_io_done(key)
            elif tag == COPY_IO and isinstance(key, int):
                self._copy_io_done(key)
            else:
                self.stats["bad_messages"] += 1
                self.trace("dkc.bad_message", kind="io_done", error=f"unknown id {rid!r}")
            return
        pend = self.pending_reads.get(rid)
        if pend is None:
            return
        pend["left"] -= 1
        if disk is not None:
            pend["answered"].append(disk)
        if pend["left"] <= 0:
            del self.pending_reads[rid]
            self.cancel_timer(f"read:{rid}")
            self._execute(pend["acts"])

    def _rebuild_io_done(self, g: int) -> None:
        self.rebuild_wait[g] = self.rebuild_wait.get(g, 0) - 1
        if self.rebuild_wait[g] == 0 and g in self.rebuilds:
            self.cancel_timer(f"rebuild:{g}")
            self._rebuild_step(g)

    def on_peer(self, src, body):
        site, epoch = body["from"], int(body["epoch"])
        if epoch < self.epochs.get(site, 0):
            self.stats["peer_dropped"] += 1
            return
        self.stats["peer_in"] += 1
        self._execute(self.fw.peer_message(self.now_ns, site, body["msg"]))

    def on_link_state(self, src, body):
        peer, up = body["peer"], bool(body["up"])
        self.epochs[peer] = int(body["epoch"])
        result, acts = self.fw.command(self.now_ns, LinkState(peer, up))
        self._execute(acts)

    def on_timer(self, name, data):
        try:
            self._on_timer(name, data)
        except DataLost as exc:   # a double fault the firmware did not expect: report, keep serving
            self.fw.note_double_fault(name, str(exc))
            self.trace("dkc.data_loss", timer=name, error=str(exc))

    def _on_timer(self, name, data):
        """Timers are named KIND:KEY; ``_TIMERS`` maps each kind to its handler."""
        kind, _, rest = name.partition(":")
        _TIMERS[kind](self, rest, data)

    def _timer_fw(self, rest: str, data) -> None:
        self._execute(self.fw.timer(self.now_ns, rest))

    def _timer_read(self, rest: str, data) -> None:
        """A host read's disk transfers did not all come back in time. A disk
        that answered anything within the last ``disk_timeout`` is alive and
        only busy (a deep queue of copy, destage and host transfers): the read
        waits on. Only a disk silent for the whole timeout is failed, and the
        read is then answered from what is left. (Failing busy disks made two
        members of a loaded group 'fail' at once: a false double fault.)"""
        pend = self.pending_reads.get(data)
        if pend is None:
            return
        timeout = self.params["cost"]["disk_timeout_ns"]
        silent = [d for d in pend["disks"] if d not in pend["answered"]
                  and self.now_ns - self.disk_answered_ns.get(d, -timeout) >= timeout]
        if not silent:
            self.stats["disk_busy_waits"] += 1
            self.set_timer(f"read:{data}", timeout, data)
            return
        del self.pending_reads[data]
        self.stats["disk_timeouts"] += 1
        self.trace("dkc.disk_timeout", rid=data, disks=pend["disks"])
        for disk in silent:
            self._fail_site_disk(disk, "no answer")
        self._execute(pend["acts"])

    def _timer_rebuild(self, rest: str, data) -> None:
        self._rebuild_step(int(data))

    def _timer_rebuild_retry(self, rest: str, data) -> None:
        self._start_rebuild(int(data))

    # -- firmware actions -------------------------------------------------------------------------
    def _execute(self, actions) -> None:
        """Carry out the firmware's actions, in order; each action type has one
        handler (``_ACTIONS``, looked up by exact type; a subclass of an
        action falls back to the isinstance order below)."""
        for act in actions:
            handler = _ACTIONS.get(type(act))
            if handler is None:
                handler = next((h for t, h in _ACTIONS.items() if isinstance(act, t)), None)
                if handler is None:
                    continue
            handler(self, act)

    def _act_trace(self, act: Trace) -> None:
        self.trace(act.event, step=act.step, **act.fields)
        if act.event in _PEER_DROPS:
            self.stats["peer_malformed"] += 1   # the firmware's wire boundary dropped a peer message
        if act.step in SIGNAL_STEPS:
            self.signal(SIGNAL_STEPS[act.step])
        elif act.step is None and act.event in SIGNAL_EVENTS:
            self.signal(SIGNAL_EVENTS[act.event])

    def _act_send_peer(self, act: SendPeer) -> None:
        link = self.params["peers"].get(act.site)
        if link is None:
            self.trace("dkc.no_path", site=act.site)
            return
        self.send(link, "xfer", act.msg, delay_ns=self._occupy(message_bytes(act.msg)))

    def _act_host_done(self, act: HostDone) -> None:
        host, _, ident = str(act.req_id).partition("|")
        nbytes = len(act.data) if act.data else 0
        self.send(host, "io_done", {"id": ident, "ok": act.ok, "error": act.error, "data": act.data},
                  delay_ns=self._occupy(nbytes))

    def _act_set_timer(self, act: SetTimer) -> None:
        self.set_timer(f"fw:{act.name}", max(0, act.at_ns - self.now_ns))

    def _act_cancel_timer(self, act: CancelTimer) -> None:
        self.cancel_timer(f"fw:{act.name}")

    # -- the copy's track reads (353, 408) ------------------------------------------------------
    def _copy_read(self, act: CopyRead) -> None:
        """Time the read of a track the copy will send: from the cache when
        the track is resident, else the disk transfers of its read plan. The
        firmware sends the track when they are done (a closed loop, so the
        disks' queues hold at most the copy's window and read-ahead)."""
        self.copy_seq += 1
        seq = self.copy_seq
        self.stats["copy_reads"] += 1
        n = 0
        if (act.ldev, act.track) in self.track_cache:
            self.stats["copy_read_hits"] += 1
        else:
            n = self._issue_plan(act.ldev, act.track, write=False, ident=[COPY_IO, seq])
        self.copy_wait[seq] = [act, n]
        self.stats["copy_reads_waiting_max"] = max(self.stats["copy_reads_waiting_max"], len(self.copy_wait))
        # no transfer (a cache hit, or nothing derivable: the firmware finds the loss when it reads the bytes)
        self.set_timer(f"copy_wait:{seq}", self.params["cost"]["disk_timeout_ns"] if n else 0, seq)

    def _copy_io_done(self, seq: int) -> None:
        entry = self.copy_wait.get(seq)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.cancel_timer(f"copy_wait:{seq}")
            self._copy_read_done(seq)

    def _timer_copy_wait(self, rest: str, data) -> None:
        """A cache hit's read is done, or a disk never answered (the bytes
        are on the media; only the timing is cut short)."""
        entry = self.copy_wait.get(int(data))
        if entry is not None and entry[1] > 0:
            self.trace("dkc.copy_io_timeout", sid=entry[0].sid, pair=entry[0].pair, track=entry[0].track)
        self._copy_read_done(int(data))

    def _copy_read_done(self, seq: int) -> None:
        entry = self.copy_wait.pop(seq, None)
        if entry is not None:
            act = entry[0]
            self._execute(self.fw.copy_read_done(self.now_ns, act.sid, act.pair, act.track))

    # -- the rollback's restores (516-519) ------------------------------------------------------
    def _restore_io(self, act: RestoreIo) -> None:
        """Time one restored track: the controller moves it, and (unless it
        came from cache) the save area is read: the parity track of its
        group's stripe, or the spare disk's slot. The write home is the
        cache's, destaged later like any write. The firmware keeps a few
        restores in flight and starts the next as each one ends."""
        delay = self._occupy(self.tb)
        self.restore_waits[act.tag] = act.sid
        if act.save_row is not None:
            disk, lba = self._save_slot_disk(act.save_row, act.save_slot)
            if disk is not None:
                self.stats["disk_ios"] += 1
                self.send(self.params["layout"]["disks"][disk], "io",
                          {"id": [RESTORE_IO, act.tag], "op": "r", "lba": lba, "sectors": self.tb // SECTOR_BYTES},
                          delay_ns=delay)
                self.set_timer(f"restore_wait:{act.tag}", delay + self.params["cost"]["disk_timeout_ns"], act.tag)
                return
        self.set_timer(f"restore_wait:{act.tag}", delay, act.tag)

    def _save_slot_disk(self, row: int, slot: int) -> tuple[int | None, int]:
        """Site disk and LBA of save row ``row`` slot ``slot`` (None when gone)."""
        lay = self.params["layout"]
        spt = self.tb // SECTOR_BYTES
        if row < lay["groups"]:
            member = self.groups[row].layout.parity_disk(slot)
            if member in self.groups[row].failed_disks:
                return None, 0
            return self._disk_index(row, member), slot * spt
        first_spare = lay["groups"] * (lay["n_data"] + 1)
        return first_spare + row - lay["groups"], slot * spt

    def _restore_io_done(self, tag: int) -> None:
        if tag in self.restore_waits:
            self.cancel_timer(f"restore_wait:{tag}")
            self._restore_next(tag)

    def _timer_restore_wait(self, rest: str, data) -> None:
        """The restore's time is up: its transfer is done, or its disk never
        answered (the bytes were already moved, only the timing is cut short)."""
        self._restore_next(int(data))

    def _restore_next(self, tag: int) -> None:
        sid = self.restore_waits.pop(tag, None)
        if sid is not None:
            self._execute(self.fw.restore_done(self.now_ns, sid, tag))

    def _disk_cost(self, act: DiskCost) -> None:
        """A write makes its track write-pending in the cache (destaged later,
        repeated writes to a pending track coalesce); a stage read goes to
        the disks now without holding anyone."""
        if "write" in act.kind:
            key = (act.ldev, act.track)
            if key not in self.dirty:
                self.dirty[key] = False          # False: pending, not yet being destaged
                self.stats["write_pending_max"] = max(self.stats["write_pending_max"], len(self.dirty))
            self._pump_destage()
            return
        self._issue_plan(act.ldev, act.track, write=False, ident=None)

    def _issue_plan(self, ldev: int, track: int, write: bool, ident) -> int:
        try:
            grp, lt = self.array.locate(ldev, track)
            plan = grp.plan_write(lt) if write else grp.plan_read(lt)
        except (DataLossError, ValueError):
            # beyond the LDEV or underivable: the firmware reported it on its
            # own path; here there is simply no transfer to charge
            return 0
        g = self.group_index[id(grp)]
        for io in plan:
            self.stats["disk_ios"] += 1
            self.send(self._disk_name(g, io.disk), "io", {"id": ident, "op": io.op,
                      "lba": io.offset_bytes // SECTOR_BYTES, "sectors": max(1, io.length_bytes // SECTOR_BYTES)})
        return len(plan)

    def _pump_destage(self) -> None:
        """Destage the oldest write-pending tracks, a bounded number at once
        (the disks' queues stay short; the cache absorbs bursts).

        The oldest first, without copying the whole write-pending list: at
        most DESTAGE_INFLIGHT_MAX entries are being destaged, so the scan
        stops after a few. A track with nothing to destage leaves the list;
        the scan then starts again from the oldest (those before it are all
        being destaged now, so the order is that of one pass)."""
        dirty = self.dirty
        while self.destaging < DESTAGE_INFLIGHT_MAX:
            for key, busy in dirty.items():
                if self.destaging >= DESTAGE_INFLIGHT_MAX:
                    return
                if busy:
                    continue
                self.destage_seq += 1
                n = self._issue_plan(key[0], key[1], write=True, ident=[DESTAGE_IO, self.destage_seq])
                if n == 0:
                    break   # leaves the list below, outside the iteration
                dirty[key] = True   # a value, not a key, changes: the iteration goes on
                self.destage_wait[self.destage_seq] = [key, n]
                self._occupy_xor(2 * self.tb)   # P' = P ^ Dold ^ Dnew: two track-sized XORs
                self.destaging += 1
            else:
                return   # every write-pending track is being destaged
            del dirty[key]
            self._dirty_gone(key)

    def _destage_done(self, seq: int) -> None:
        entry = self.destage_wait.get(seq)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del self.destage_wait[seq]
        self.destaging -= 1
        self.dirty.pop(entry[0], None)
        self._dirty_gone(entry[0])
        self.stats["destaged"] += 1
        self._pump_destage()

    # -- console ------------------------------------------------------------------------------------
    def on_control(self, command):
        cmd = command.get("cmd")
        try:
            if cmd == "fw":
                result, acts = self.fw.command(self.now_ns, dict(command["fw"]))
                self._execute(acts)
                return {"ok": True, **result}
            if cmd == "disk_fail":
                return self._disk_fail(int(command["disk"]))
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        return super().on_control(command)

    def _lost_ranges(self) -> dict[int, list[dict]]:
        """Per LDEV, runs of tracks with no right image: those the firmware
        marked lost (a rollback could not restore them) and those RAID5
        cannot derive (two members of a group gone)."""
        out = self.fw.lost.ranges()
        for ld in self.params["layout"]["ldevs"]:
            ldev = ld["ldev"]
            ext = self.array.extent(ldev)
            raid_lost = [t - ext.first_track for t in self.groups[ext.group].lost_tracks()
                         if ext.first_track <= t < ext.first_track + ext.n_tracks]
            if raid_lost:
                marked = {t for r in out.get(ldev, []) for t in range(r["first"], r["last"] + 1)}
                extra = LostTracks()
                for t in raid_lost:
                    if t not in marked:
                        extra.mark(ldev, t, f"RAID5 group {ext.group} cannot derive it")
                runs = out.get(ldev, []) + extra.ranges().get(ldev, [])
                out[ldev] = sorted(runs, key=lambda r: r["first"])
        return out

    def _disk_index(self, g: int, member: int) -> int:
        return self.member_map[g][member] if member < len(self.member_map[g]) else self.rebuilds[g]

    def _disk_fail(self, disk: int) -> dict:
        lay = self.params["layout"]
        if not 0 <= disk < lay["n_disks"]:
            raise ValueError(f"no disk {disk} at {lay['name']} (0..{lay['n_disks'] - 1})")
        self._fail_site_disk(disk, "fault command")
        return {"ok": True, "disk": disk}

    def _fail_site_disk(self, disk: int, why: str) -> None:
        """A small disk is gone: its group runs degraded and, when a spare is
        free, rebuilds onto it online while host I/O continues (the policy is
        firmware/raid/sparing.py's; this applies it to the media)."""
        lay = self.params["layout"]
        self.trace("dkc.disk_failed", disk=disk, why=why)
        where = locate_failed_disk(disk, self.member_map, self.rebuilds, lay["groups"] * (lay["n_data"] + 1))
        if where.group is not None:
            if where.member not in self.groups[where.group].failed_disks:
                self.groups[where.group].fail_disk(where.member)
            self._execute(self.fw.save_place_lost(where.group, f"disk {disk} of parity group {where.group} failed"))
            self._start_rebuild(where.group)
            return
        if where.rebuild_target_of is not None:   # the rebuild target itself died
            self.trace("raid.rebuild_target_lost", group=where.rebuild_target_of, disk=disk)
        if where.spare is not None:
            self.media.spare_failed[where.spare] = True
            self._execute(self.fw.save_place_lost(lay["groups"] + where.spare, f"spare disk {disk} failed"))
            if disk in self.free_spares:
                self.free_spares.remove(disk)

    def _start_rebuild(self, g: int) -> None:
        grp = self.groups[g]
        rs = self.fw.rsession
        decision = decide_rebuild(len(grp.failed_disks), grp.parity_lent, g in self.rebuilds, self.free_spares,
                                  rs is not None and rs.in_progress)
        if decision.defer:
            self.trace("raid.rebuild_deferred", group=g, reason=decision.reason)
            self.set_timer(f"rebuild_retry:{g}", REBUILD_RETRY_NS, g)
            return
        if not decision.start:
            return
        spare = decision.spare
        self.free_spares.remove(spare)
        if grp.thin:   # the rebuild skips unused thin stripes: they must read zeros on the spare too
            self.region(f"{self.params['layout']['disks'][spare]}.media").punch()
        try:
            grp.start_rebuild(self.media_bufs[spare])
        except (ValueError, DataLossError) as exc:
            self.free_spares.insert(0, spare)
            self.trace("raid.rebuild_refused", group=g, error=str(exc))
            return
        first_spare = self.params["layout"]["groups"] * (self.params["layout"]["n_data"] + 1)
        self.media.spare_failed[spare - first_spare] = True   # no longer a save area
        self.rebuilds[g] = spare
        self.trace("raid.rebuild_start", group=g, spare=spare)
        self.set_timer(f"rebuild:{g}", 0, g)

    def _rebuild_step(self, g: int) -> None:
        grp, spare = self.groups[g], self.rebuilds.get(g)
        if spare is None:
            return
        failed_before = set(grp.failed_disks)
        try:
            done, total = grp.rebuild_step(REBUILD_STRIPES_PER_STEP)
        except DataLossError as exc:
            self.trace("raid.rebuild_failed", group=g, error=str(exc))
            del self.rebuilds[g]
            return
        self.stats["rebuilt_stripes"] += REBUILD_STRIPES_PER_STEP
        tb_sectors = self.tb // SECTOR_BYTES
        live = [d for m, d in enumerate(self.member_map[g]) if m not in failed_before] + [spare]
        if done < total:   # closed loop: the next step waits for these transfers
            self.rebuild_wait[g] = len(live)
        for d in live:
            self.send(self.params["layout"]["disks"][d], "io", {
                "id": [REBUILD_IO, g] if done < total else None, "op": "w" if d == spare else "r",
                "lba": (done - REBUILD_STRIPES_PER_STEP) * tb_sectors, "sectors": tb_sectors * REBUILD_STRIPES_PER_STEP})
        if done == total:
            (replaced,) = failed_before - set(grp.failed_disks)
            self.member_map[g][replaced] = spare
            del self.rebuilds[g]
            self.trace("raid.rebuilt", group=g, spare=spare, stripes=total)
        else:
            if done % (REBUILD_STRIPES_PER_STEP * 16) == 0:
                self.trace("raid.rebuild_progress", group=g, done=done, total=total)
            self.set_timer(f"rebuild:{g}", REBUILD_RETRY_NS, g)   # a step that stalls is retried

    def on_query(self, q):
        what = q.get("q")
        if what == "fw":
            try:
                result, _ = self.fw.command(self.now_ns, dict(q["cmd"]))
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, **result}
        if what == "export":
            ldev = int(q["ldev"])
            try:
                self.fw.export_check(ldev)
                n_tracks = self.store.ldev_tracks(ldev)
                written = self.store.written_tracks(ldev)
                shape = {"ok": True, "track_bytes": self.tb, "n_tracks": n_tracks}
                if written is None:   # thick: the whole image
                    return {**shape, "tracks": None,
                            "data": self.store.read_sectors(ldev, 0, n_tracks * self.tb // SECTOR_BYTES)}
                # thin: only the tracks ever written; the others read zeros (a sparse image)
                spt = self.tb // SECTOR_BYTES
                return {**shape, "tracks": [int(t) for t in written],
                        "data": b"".join(self.store.read_sectors(ldev, int(t) * spt, spt) for t in written)}
            except ValueError as exc:   # unknown LDEV, a track marked lost, or RAID cannot derive it
                return {"ok": False, "error": str(exc), "lost": self._lost_ranges().get(ldev, [])}
        if what == "read":   # the test bench's read-back: the host path's rules, no timing
            ldev, lba, n = int(q["ldev"]), int(q["lba"]), int(q["sectors"])
            try:
                self.fw.check_readable(ldev, lba, n, "read of")
                return {"ok": True, "data": self.store.read_sectors(ldev, lba, n)}
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
        if what == "lost":
            return {"ok": True, "ldevs": {str(k): v for k, v in self._lost_ranges().items()}}
        if what == "stats":
            return {"stats": dict(self.stats), "cache_tracks": len(self.track_cache), "write_pending": len(self.dirty),
                    "nvm_bytes_written": self.stats["nvm_bytes_written"], "thin_bytes_allocated": self.thin_allocated,
                    "raid": [{"failed": sorted(g.failed_disks), "parity_lent": g.parity_lent,
                              "members": list(self.member_map[i]), "rebuild_to": self.rebuilds.get(i),
                              "lost_tracks": len(g.lost_tracks())}
                             for i, g in enumerate(self.groups)],
                    "free_spares": list(self.free_spares),
                    "double_faults": list(self.fw.double_faults)}
        return super().on_query(q)


#: trace events of the firmware's wire boundary (``firmware.dkc.dispatch_peer``) that drop a peer message
_PEER_DROPS = ("bad_peer_message", "oversized_peer_message")
#: timer kind (the part of its name before ':') -> handler
_TIMERS = {"fw": Dkc._timer_fw, "read": Dkc._timer_read, "rebuild": Dkc._timer_rebuild,
           "rebuild_retry": Dkc._timer_rebuild_retry, "restore_wait": Dkc._timer_restore_wait,
           "copy_wait": Dkc._timer_copy_wait}
#: firmware action type -> how the DKC carries it out (``_execute``)
_ACTIONS = {Trace: Dkc._act_trace, SendPeer: Dkc._act_send_peer, HostDone: Dkc._act_host_done,
            SetTimer: Dkc._act_set_timer, CancelTimer: Dkc._act_cancel_timer, DiskCost: Dkc._disk_cost,
            RestoreIo: Dkc._restore_io, CopyRead: Dkc._copy_read}
_HANDLERS = {"io": Dkc.on_io, "io_done": Dkc.on_disk_done, "peer": Dkc.on_peer,
             "link_state": Dkc.on_link_state}
#: ``int`` first: an exact int is accepted without the ABC's slower check
_INT = (int, numbers.Integral)
#: what a host may ask of an LDEV (FLUSH and TRIM come from the front-ends)
_HOST_OPS = ("read", "write", "flush", "trim")
_BYTES = (bytes, bytearray, memoryview)
#: what each inbound message must carry (checked in ``on_message``)
_BODY_FIELDS = {
    "io": {"op": (str,), "ldev": _INT, "lba": _INT, "sectors": _INT, "id": (object,)},
    "io_done": {"id": (object,)},
    "peer": {"from": (str,), "epoch": _INT, "msg": (dict,)},
    "link_state": {"peer": (str,), "up": (bool,), "epoch": _INT},
}
