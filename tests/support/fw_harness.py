"""A tiny deterministic discrete-event harness for the sans-I/O DKC firmware.

A heap of (time_ns, seq, kind, payload) connects DkcFirmware instances
through links with a one-way latency.  It can kill a site (drop all its
future events), take links down/up (messages in flight are lost, both DKCs
are told), restart a site from a firmware snapshot, and fire timers.  Every
Trace step seen by any harness run is collected in `STEPS_SEEN`.
"""
from __future__ import annotations

import heapq

from firmware.dkc import DkcFirmware
from firmware.protocol import CancelTimer, CopyRead, DiskCost, HostDone, RestoreIo, SendPeer, SetTimer, Trace

#: time the harness charges for one restored track (from the save area / from cache)
RESTORE_DISK_NS, RESTORE_CACHE_NS = 1_000_000, 10_000
#: time the harness charges for one copy read (CopyRead) of a track
COPY_READ_NS = 50_000
from firmware.store import MemorySaveMedia, MemoryTrackStore, SaveRow

STEPS_SEEN: set[int] = set()


def stamp(tag: str, nbytes: int) -> bytes:
    """Recognisable payload: `tag|` repeated to nbytes."""
    unit = (tag + "|").encode()
    return (unit * (nbytes // len(unit) + 1))[:nbytes]


class Harness:
    def __init__(self, latency_ns: int = 100_000):
        self.latency_ns = latency_ns
        self.now_ns = 0
        self.heap: list = []
        self.seq = 0
        self.fw: dict[str, DkcFirmware] = {}
        self.dead: set[str] = set()
        self.link_down: set[frozenset] = set()
        self.timers: dict[tuple[str, str], int] = {}  # (site, name) -> generation
        self.done: dict[object, HostDone] = {}
        self.traces: list[tuple[str, Trace]] = []
        self.events = 0
        self.disk_bytes = 0
        self.copy_reads = 0

    # -------------------------------------------------------------- set-up
    def add_site(self, site: str, params: dict, ldev_tracks: dict[int, int], track_bytes: int = 1024,
                 save_rows: list[SaveRow] | None = None) -> DkcFirmware:
        store = MemoryTrackStore(track_bytes, ldev_tracks)
        media = MemorySaveMedia(save_rows or [])
        self.fw[site] = DkcFirmware(site, store, media, params)
        return self.fw[site]

    def _push(self, at_ns: int, kind: str, payload: tuple) -> None:
        heapq.heappush(self.heap, (at_ns, self.seq, kind, payload))
        self.seq += 1

    # -------------------------------------------------------------- actions
    def _apply(self, site: str, actions: list) -> None:
        for act in actions:
            if isinstance(act, Trace):
                self.traces.append((site, act))
                if act.step is not None:
                    STEPS_SEEN.add(act.step)
            elif isinstance(act, SendPeer):
                if frozenset((site, act.site)) not in self.link_down:
                    self._push(self.now_ns + self.latency_ns, "peer", (act.site, site, act.msg))
            elif isinstance(act, HostDone):
                self.done[act.req_id] = act
            elif isinstance(act, SetTimer):
                gen = self.timers.get((site, act.name), 0) + 1
                self.timers[(site, act.name)] = gen
                self._push(act.at_ns, "timer", (site, act.name, gen))
            elif isinstance(act, CancelTimer):
                self.timers[(site, act.name)] = self.timers.get((site, act.name), 0) + 1
            elif isinstance(act, DiskCost):
                self.disk_bytes += act.nbytes
            elif isinstance(act, CopyRead):
                self.copy_reads += 1
                self._push(self.now_ns + COPY_READ_NS, "copy_read", (site, act.sid, act.pair, act.track))
            elif isinstance(act, RestoreIo):
                delay = RESTORE_CACHE_NS if act.save_row is None else RESTORE_DISK_NS
                self._push(self.now_ns + delay, "restore", (site, act.sid, act.tag))   # one per restore in flight

    # -------------------------------------------------------------- inputs
    def command(self, site: str, cmd: dict) -> dict:
        result, actions = self.fw[site].command(self.now_ns, cmd)
        self._apply(site, actions)
        return result

    def write(self, site: str, req_id, ldev: int, lba: int, data: bytes) -> None:
        fw = self.fw[site]
        actions = fw.host_write(self.now_ns, req_id, ldev, lba, len(data) // 512, data)
        self._apply(site, actions)

    def write_track(self, site: str, req_id, ldev: int, track: int, tag: str) -> bytes:
        tb = self.fw[site].store.track_bytes
        data = stamp(tag, tb)
        self.write(site, req_id, ldev, track * tb // 512, data)
        return data

    def kill(self, site: str) -> None:
        self.dead.add(site)

    def set_link(self, a: str, b: str, up: bool) -> None:
        key = frozenset((a, b))
        if up:
            self.link_down.discard(key)
        else:
            self.link_down.add(key)
        for site, other in ((a, b), (b, a)):
            if site not in self.dead:
                self.command(site, {"cmd": "link_up" if up else "link_down", "site": other})

    def in_flight(self, kind: str) -> list[dict]:
        """Peer messages of ``kind`` on the links now, in delivery order."""
        return [e[3][2] for e in sorted(self.heap) if e[2] == "peer" and e[3][2].get("kind") == kind]

    def swap_in_flight(self, kind: str) -> None:
        """A link that reorders: the first two peer messages of ``kind`` in
        flight arrive in each other's place."""
        idx = sorted((e for e in range(len(self.heap)) if self.heap[e][2] == "peer"
                      and self.heap[e][3][2].get("kind") == kind), key=lambda e: self.heap[e][:2])
        if len(idx) < 2:
            raise RuntimeError(f"fewer than two {kind} messages in flight")
        a, b = self.heap[idx[0]], self.heap[idx[1]]
        self.heap[idx[0]], self.heap[idx[1]] = (*a[:3], b[3]), (*b[:3], a[3])   # keys unchanged: still a heap

    def restart_timers(self, site: str) -> None:
        """A restarted DKC process lost its timers: drop them and re-arm from
        the firmware's non-volatile state (`DkcFirmware.timers()`)."""
        for key in sorted(k for k in self.timers if k[0] == site):
            self.timers[key] += 1
        self._apply(site, self.fw[site].timers())

    # -------------------------------------------------------------- running
    def step(self) -> bool:
        if not self.heap:
            return False
        at_ns, _, kind, payload = heapq.heappop(self.heap)
        self.now_ns = max(self.now_ns, at_ns)
        site = payload[0]
        if site in self.dead:
            return True
        self.events += 1
        fw = self.fw[site]
        if kind == "peer":
            _, from_site, msg = payload
            if frozenset((site, from_site)) in self.link_down:
                return True
            self._apply(site, fw.peer_message(self.now_ns, from_site, msg))
        elif kind == "timer":
            _, name, gen = payload
            if self.timers.get((site, name)) == gen:
                self._apply(site, fw.timer(self.now_ns, name))
        elif kind == "copy_read":
            self._apply(site, fw.copy_read_done(self.now_ns, *payload[1:]))
        elif kind == "restore":
            self._apply(site, fw.restore_done(self.now_ns, payload[1], payload[2]))
        return True

    def run(self, until_ns: int | None = None, max_events: int | None = None) -> None:
        count = 0
        while self.heap:
            if until_ns is not None and self.heap[0][0] > until_ns:
                self.now_ns = max(self.now_ns, until_ns)
                return
            if max_events is not None and count >= max_events:
                return
            self.step()
            count += 1
        if until_ns is not None:
            self.now_ns = max(self.now_ns, until_ns)

    def image(self, site: str, ldev: int) -> bytes:
        return self.fw[site].store.image(ldev)

    def steps(self, site: str | None = None) -> list[int]:
        return [t.step for s, t in self.traces if t.step is not None and (site is None or s == site)]


# ---------------------------------------------------------------- a small standard rack
TRACK_BYTES = 1024  # 2 sectors per track
LDEV_TRACKS = {0: 8, 1: 8, 2: 8}
PAIRS = [
    {"name": "p0", "group": "g0", "m_site": "M", "m_ldev": 0, "r_site": "R", "r_ldev": 0},
    {"name": "p1", "group": "g0", "m_site": "M", "m_ldev": 1, "r_site": "R", "r_ldev": 1},
    {"name": "p2", "group": "g1", "m_site": "M", "m_ldev": 2, "r_site": "R", "r_ldev": 2},
]
T_NS = 20_000_000
SAVE_ROWS = [SaveRow(0, "parity", 6), SaveRow(1, "spare", 6)]


def make_rack(latency_ns: int = 100_000, cache_tracks: int = 2, params: dict | None = None,
              save_rows: list[SaveRow] | None = None, remotes: tuple[str, ...] = ("R",),
              pairs: list[dict] | None = None) -> Harness:
    """Master M plus remotes; pairs formed (PAIR) and tracks written with 'v1'."""
    h = Harness(latency_ns)
    base = {"pairs": pairs or PAIRS, "cache_save_threshold_tracks": cache_tracks, **(params or {})}
    h.add_site("M", base, LDEV_TRACKS, TRACK_BYTES)
    for site in remotes:
        h.add_site(site, base, LDEV_TRACKS, TRACK_BYTES, save_rows or SAVE_ROWS)
    return h


def form_pairs(h: Harness, mode: str = "sync", fence: str = "never") -> None:
    for ldev, tracks in sorted(LDEV_TRACKS.items()):
        for track in range(tracks):
            h.write_track("M", f"init-{ldev}-{track}", ldev, track, f"v0-{ldev}-{track}")
    h.command("M", {"cmd": "paircreate", "target": "*", "mode": mode, "fence": fence})
    h.run()
    for ldev, tracks in sorted(LDEV_TRACKS.items()):
        for track in range(tracks):
            h.write_track("M", f"v1-{ldev}-{track}", ldev, track, f"v1-{ldev}-{track}")
    h.run()


SUSPENDED_WRITES = [  # (ldev, track, tag, partial?)
    (0, 1, "s-a", False), (1, 0, "s-b", False), (0, 3, "s-c", False), (1, 2, "s-d", True),
    (2, 2, "s-e", False), (0, 3, "s-f", True), (1, 4, "s-g", False), (1, 5, "s-h", False),
    (0, 5, "s-i", False), (2, 7, "s-j", True), (1, 1, "s-k", False), (0, 1, "s-l", False),
]


def suspend_and_write(h: Harness, writes=SUSPENDED_WRITES, remote: str = "R") -> dict[int, bytes]:
    """Link down, host writes while suspended, link up. Returns the remote's
    suspension-time images."""
    h.set_link("M", remote, False)
    susp = {ldev: h.image(remote, ldev) for ldev in sorted(LDEV_TRACKS)}
    for i, (ldev, track, tag, partial) in enumerate(writes):
        if partial:
            h.write("M", f"sw{i}", ldev, track * 2 + 1, stamp(tag, 512))
        else:
            h.write_track("M", f"sw{i}", ldev, track, tag)
    h.run()
    h.set_link("M", remote, True)
    return susp


# -- recovery-copy runs shared by the firmware tests --------------------------------
GROUP_OF = {p["name"]: p["group"] for p in PAIRS}
LDEV_OF = {p["name"]: p["r_ldev"] for p in PAIRS}


def expected_rolled_back(remote: DkcFirmware, unit: str) -> set[str]:
    """Independent of the firmware: which pairs must be back at the suspension image."""
    last = remote.last_recovery
    if last is None:  # the start never arrived: nothing was touched
        return set(LDEV_OF)
    if last["outcome"] == "complete":
        return set()
    not_reached = set(LDEV_OF) - set(last["reached"])
    if unit == "ldev":
        return not_reached
    bad = {GROUP_OF[n] for n in not_reached}
    return {n for n in LDEV_OF if GROUP_OF[n] in bad}


def start_recovery(method, unit, window, order="bitmap", cache_tracks=2, latency_ns=100_000):
    h = make_rack(latency_ns=latency_ns, cache_tracks=cache_tracks)
    form_pairs(h)
    susp = suspend_and_write(h)
    h.command("M", {"cmd": "pairresync", "target": "*", "max_time_ns": T_NS, "method": method,
                    "unit": unit, "window": window, "order": order})
    return h, susp


def crash_run(method, unit, window, kill_after, order="bitmap", snapshot_remote=False):
    h, susp = start_recovery(method, unit, window, order)
    h.run(max_events=kill_after)
    if snapshot_remote:  # the remote DKC process restarts from its non-volatile memory
        old = h.fw["R"]
        h.fw["R"] = DkcFirmware.restore(old.snapshot(), old.store, old.save_media)
        h.restart_timers("R")
    h.kill("M")
    h.run(until_ns=h.now_ns + 3 * T_NS)
    return h, susp


def check(h, susp, unit) -> tuple[bool, set]:
    rolled = expected_rolled_back(h.fw["R"], unit)
    ok = True
    for name, ldev in sorted(LDEV_OF.items()):
        want = susp[ldev] if name in rolled else h.image("M", ldev)
        ok &= h.image("R", ldev) == want
    return ok, rolled


def events_to_finish(method, unit, window, order="bitmap"):
    h, _ = start_recovery(method, unit, window, order)
    before = h.events
    h.run()
    assert h.fw["R"].last_recovery["outcome"] == "complete"
    return h.events - before
