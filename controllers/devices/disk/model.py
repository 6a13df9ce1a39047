"""Timed mechanical disk model (pure: no I/O, no sockets, no wall clock).

After Ruemmler & Wilkes, "An introduction to disk drive modeling" (IEEE
Computer 27(3), 1994) and the DiskSim 4.0 disk module (CMU PDL): a seek curve
or extracted seek table, rotational position derived from virtual time,
zoned recording with track/cylinder skew, DiskSim's sparing schemes (spare
tracks, sectors per cylinder / track / range / zone, slips, defect remaps)
and surface orders, head switch, write settle, controller overheads with
SCSI disconnect/reconnect, bus transfer, and an on-board segmented cache
with read-ahead and write-back.  Parameters normally come from a DiskSim
4.0 file through ``controllers.devices.disk.disksim``.

Virtual time is integer nanoseconds at the API.  The model keeps the head
position, the cache segments and the prefetch stream between calls; it is
deterministic (the same calls give the same answers).

Usage::

    disk = DiskModel(PRESETS["st41601n"])
    res = disk.access(now_ns, "R", lba, sectors)   # -> AccessResult
    res.done_ns, res.seek_ns, res.rotation_ns, res.cache_hit
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

NS_PER_MS = 1_000_000


SPARING_SCHEMES = ("none", "track", "sectpercyl", "sectpercyl_sliptoend", "sectatend",
                   "sectpertrack", "range", "zone")
"""How spare sectors are laid out (DiskSim diskmodel/layout_g1.h "Sparing scheme
used" 0, 1, 2, 4, 7, 3, 8, 9): none; spare *tracks* at the end of each zone
(slips and defects are track numbers); N spare sectors at the end of each
cylinder (a slip uses one of its cylinder's spares, or, "sliptoend", pushes
every later LBN of the zone on by one; "sectatend" is the latter with the
spares at the end of the disk), of each track, of each range of
`spare_range_cyl` cylinders, or of each zone (slips and defects are
zone-relative physical sector numbers)."""

SURFACE_ORDERS = ("normal", "serpentine-zone", "serpentine-even")
"""Order of the surfaces within a cylinder (DiskSim "LBN-to-PBN mapping scheme"
0, 1, 2): always 0..N-1; or reversed on odd cylinders counted from the zone
start / from cylinder 0, so a cylinder switch stays on the same surface."""


@dataclass(frozen=True)
class Zone:
    """A band of cylinders with the same number of sectors per track.

    first_cyl, last_cyl: inclusive cylinder range.
    sectors_per_track: physical sectors on each track of the zone.
    track_skew, cyl_skew: skew in sectors of this zone; None uses the disk's
        default (DiskParams.track_skew / cyl_skew).
    first_sector_offset: angular position (in sectors) of the zone's first
        logical block on its first track ("Offset of first block" in DiskSim).
    slips: slipped (skipped) locations, in the unit of the disk's sparing
        scheme: zone-relative physical sector numbers (cyl_in_zone * surfaces
        * spt + head * spt + sector), or zone-relative track numbers with
        track sparing.  Each consumes a spare.
    spares: spare sectors (or tracks) per cylinder / track / range / zone,
        per the sparing scheme; None uses DiskParams.spares_per_cyl.
    deadspace_sectors: blocks at the zone front that hold no LBN ("Empty
        space at zone front").
    defects: ((defective, replacement), ...) remapped locations, same unit as
        slips; a pair with both equal is not remapped (as DiskSim).
    """

    first_cyl: int
    last_cyl: int
    sectors_per_track: int
    track_skew: int | None = None
    cyl_skew: int | None = None
    first_sector_offset: int = 0
    slips: tuple[int, ...] = ()
    spares: int | None = None
    deadspace_sectors: int = 0
    defects: tuple = ()


@dataclass(frozen=True)
class DiskParams:
    """Every number the model uses, with its unit in the name.

    Sources of defaults are given per preset (see PRESETS); the defaults
    below are neutral values (no cache, no overhead) unless noted.
    """

    name: str
    cylinders: int                      # count
    surfaces: int                       # data surfaces = tracks per cylinder
    zones: tuple                        # Zone or (first_cyl, last_cyl, sectors_per_track)
    rpm: float                          # revolutions per minute
    # Seek curve (ms), Ruemmler & Wilkes: a + b*sqrt(d) for 0 < d < boundary,
    # c + e*d for d >= boundary.  Ignored where seek_table_ms covers d.
    seek_boundary_cyl: int = 0
    seek_a_ms: float = 0.0
    seek_b_ms: float = 0.0
    seek_c_ms: float = 0.0
    seek_e_ms: float = 0.0
    # ((distance_cyl, ms), ...) ascending; linearly interpolated.  If it reaches
    # cylinders-1 it is a full extracted table (DiskSim "extracted" seeks);
    # otherwise it overrides the curve for short distances only.
    seek_table_ms: tuple = ()
    # Beyond the table's last distance: extend its last segment (DiskSim
    # "extracted" seeks) instead of falling back to the curve.
    seek_table_extrapolate: bool = False
    head_switch_ms: float = 0.0         # same cylinder, other surface
    write_settle_ms: float = 0.0        # extra settle before writing after a move
    # Controller (command-processing) overheads, ms, before any mechanical work.
    read_miss_overhead_ms: float = 0.0          # previous command was a read
    read_miss_after_write_overhead_ms: float | None = None   # None = read_miss_overhead_ms
    read_hit_overhead_ms: float = 0.0           # previous command was a read
    read_hit_after_write_overhead_ms: float = 0.0
    write_overhead_ms: float = 0.0              # previous command was a read
    write_after_write_overhead_ms: float = 0.0
    read_completion_ms: float = 0.0     # after the last byte, before status
    per_request_overhead_ms: float = 0.0    # before a request is looked at at all
    write_completion_ms: float = 0.0
    bus_ns_per_sector: int = 0          # host bus transfer time per sector (reads)
    bus_write_ns_per_sector: int | None = None  # for writes; None = bus_ns_per_sector
    track_skew: int = 0                 # sectors (default for zones)
    cyl_skew: int = 0                   # sectors (default for zones)
    spares_per_cyl: int = 0             # default Zone.spares
    sparing: str = "sectpercyl"         # one of SPARING_SCHEMES
    spare_range_cyl: int = 1            # cylinders per spare range ("range" sparing)
    surface_order: str = "normal"       # one of SURFACE_ORDERS
    cache_segments: int = 0             # 0 = no on-board cache
    cache_segment_sectors: int = 0
    read_ahead: bool = False            # keep reading after a read miss while idle
    read_ahead_max_sectors: int | None = None   # beyond the last request; None = segment
    # How far prefetch goes (DiskSim "Buffer continuous read" 3, 1, 2, 4): until
    # the segment (or read_ahead_max) is full; to the end of the request's
    # track; of its cylinder; or the next block's track plus one more when the
    # segment already began on an earlier track (DEC's scheme).
    read_ahead_mode: str = "segment"
    write_cache: bool = False           # write-back: done when the data are in the buffer
    # The request's own blocks once sent (DiskSim "Read-ahead over requested"
    # 0, 1, -1): kept, so prefetch stops when the segment is full; replaced by
    # prefetch as it goes on; or erased at once, the whole segment prefetching.
    request_data: str = "keep"
    read_ahead_on_hit: bool = True      # a full read hit restarts the prefetch
    separate_write_segment: bool = False  # one of cache_segments holds writes only
    read_hits_on_write_data: bool = True  # a read may be served from written data
    # SCSI disconnect / reconnect (DiskSim disk.modspec).  A read miss
    # disconnects and reconnects when read_water of the request (or of the
    # segment) is in the buffer; zeros and a water mark of 0 mean "reconnect
    # after the first sector", i.e. the plain model.
    read_water: float = 0.0             # fraction; "High (read) water mark"
    water_by_request: bool = True       # fraction of the request, else of the segment
    disconnect_read_after_read_ms: float = 0.0
    disconnect_read_after_write_ms: float = 0.0
    reselect_first_ms: float = 0.0      # first reconnection of a request
    reselect_other_ms: float = 0.0      # later reconnections
    data_prep_ms: float = 0.0           # before any data goes on the bus
    # A write that disconnects before taking any data ("Extra write disconnect"):
    # its command overhead replaces write_overhead_ms.  None = not done.
    extradisc_command_ms: float | None = None
    extradisc_seek_delta_ms: float = 0.0    # command end -> arm may move
    extradisc_disconnect_ms: float = 0.0    # command end -> off the bus
    extradisc_inter_ms: float = 0.0         # off the bus -> reconnection attempt
    extradisc_disconnect2_ms: float = 0.0   # after its data, instead of disconnect_write_ms
    disconnect_write_ms: float = 0.0    # a write leaving the bus after its data
    write_min_seek_ms: float = 0.0      # least positioning time of a write ("Minimum seek delay")
    sector_bytes: int = 512

    def __post_init__(self):
        if self.cylinders <= 0 or self.surfaces <= 0:
            raise ValueError(f"{self.name}: cylinders and surfaces must be > 0")
        if self.rpm <= 0:
            raise ValueError(f"{self.name}: rpm must be > 0, got {self.rpm}")
        zones = tuple(z if isinstance(z, Zone) else Zone(*z) for z in self.zones)
        if not zones:
            raise ValueError(f"{self.name}: at least one zone is required")
        if self.sparing not in SPARING_SCHEMES:
            raise ValueError(f"{self.name}: sparing must be one of {', '.join(SPARING_SCHEMES)}, "
                             f"got {self.sparing!r}")
        if self.surface_order not in SURFACE_ORDERS:
            raise ValueError(f"{self.name}: surface_order must be one of {', '.join(SURFACE_ORDERS)}, "
                             f"got {self.surface_order!r}")
        if self.read_ahead_mode not in ("segment", "track", "cylinder", "dec"):
            raise ValueError(f"{self.name}: read_ahead_mode must be segment, track, cylinder or dec, "
                             f"got {self.read_ahead_mode!r}")
        if self.request_data not in ("keep", "replace", "erase"):
            raise ValueError(f"{self.name}: request_data must be keep, replace or erase, "
                             f"got {self.request_data!r}")
        if self.spare_range_cyl <= 0:
            raise ValueError(f"{self.name}: spare_range_cyl must be > 0")
        prev_last = -1
        for z in zones:                 # ascending, disjoint; gaps are unused (spare) cylinders
            if z.first_cyl <= prev_last or z.last_cyl < z.first_cyl or z.last_cyl >= self.cylinders:
                raise ValueError(f"{self.name}: zones must be ascending, disjoint and within "
                                 f"cylinders 0..{self.cylinders - 1}; bad zone {z}")
            if z.sectors_per_track <= 0:
                raise ValueError(f"{self.name}: zone {z} has no sectors")
            prev_last = z.last_cyl
        object.__setattr__(self, "zones", zones)
        table = tuple((int(d), float(ms)) for d, ms in self.seek_table_ms)
        if any(b[0] <= a[0] for a, b in zip(table, table[1:])) or any(d <= 0 for d, _ in table):
            raise ValueError(f"{self.name}: seek table distances must be positive and ascending")
        object.__setattr__(self, "seek_table_ms", table)
        if self.cache_segments and self.cache_segment_sectors <= 0:
            raise ValueError(f"{self.name}: cache_segment_sectors must be > 0 with a cache")

    @property
    def revolution_ns(self) -> float:
        """One revolution in ns (float: 60e9/rpm is rarely an integer)."""
        return 60e9 / self.rpm


@dataclass(frozen=True)
class AccessResult:
    """Timing of one request.  done_ns = start_ns + overhead_ns + seek_ns +
    rotation_ns + transfer_ns; start_ns = max(now, previous done) so
    queue_ns = start_ns - now_ns."""

    done_ns: int
    start_ns: int
    queue_ns: int
    overhead_ns: int      # command + completion overhead
    seek_ns: int          # initial positioning (seek or head switch, settle)
    rotation_ns: int      # initial rotational latency
    transfer_ns: int      # media + track switches + bus tail (or bus only on a hit)
    cache_hit: str        # "miss", "hit" or "partial"
    cylinder: int         # cylinder of the first sector
    head: int

    @property
    def service_ns(self) -> int:
        return self.done_ns - self.start_ns


@dataclass
class _Segment:
    """One cache segment: valid LBAs [start, end).  A read-ahead stream may be
    extending it: it began at stream_lba with the head free at stream_ready_ns
    on (stream_cyl, stream_head); replaying that pass gives its progress."""

    start: int
    end: int
    streaming: bool = False
    stream_ready_ns: int = 0
    stream_lba: int = 0
    stream_cyl: int = 0
    stream_head: int = 0
    stream_limit: int = 0
    write: bool = False          # the separate write segment's data
    was_streaming: bool = False
    last_use: int = 0


@dataclass(frozen=True)
class _ZoneInfo:
    """A zone with its first LBA, block count, effective skews, sector time,
    spares, sorted slips and remapped defects (DiskSim layout_g1 band)."""

    zone: Zone
    first_lba: int
    blocks: int
    track_skew: int
    cyl_skew: int
    sector_ns: float
    spares: int
    slips: tuple = ()                 # sorted
    defects: dict = field(default_factory=dict)   # defective -> replacement
    slips_by_cyl: dict = field(default_factory=dict)
    slips_before_cyl: tuple = ()      # sector schemes: slips before each cylinder


class DiskModel:
    """Mechanical state of one drive plus its timing rules."""

    def __init__(self, params: DiskParams):
        if not isinstance(params, DiskParams):
            raise ValueError(f"expected DiskParams, got {type(params).__name__}")
        self.params = params
        self.revolution_ns = params.revolution_ns
        self._serpentine = params.surface_order != "normal"
        self._per_request_ns = int(round(params.per_request_overhead_ms * NS_PER_MS))
        self._zones: list[_ZoneInfo] = []
        next_lba = 0
        for z in params.zones:
            zi = self._zone_info(z, next_lba)
            self._zones.append(zi)
            next_lba += zi.blocks
        self._zone_first_lba = [zi.first_lba for zi in self._zones]
        self.lba_count = next_lba           # addressable 512-byte blocks
        # seek time per distance, computed on first use: a nearline drive has
        # hundreds of thousands of cylinders, and a table of them all would
        # cost every disk process a second at start
        self._seek_ns = _SeekTimes(self._seek_ns_uncached)
        self.cylinder = 0
        self.head = 0
        self.busy_until_ns = 0
        self.media_free_ns = 0              # a write-back in progress holds the media until then
        self._last_write_end = -1           # LBA after the last write (sequential writes)
        self._prev_write_end = -1           # the same, before the current write
        self.last_op = "R"
        self._segments: list[_Segment] = []
        self._uses = 0

    # ---------------------------------------------------------------- geometry
    def min_service_ns(self) -> int:
        """A lower bound on ``done_ns - now_ns`` of any request: the
        per-request overhead, the least command overhead of any path (read
        hit or miss, write, after a read or a write, the extra write
        disconnect) and one sector on the bus. Every path of ``access``
        adds at least these (a hit: overhead + bus; a miss: overhead, then
        media, then bus; a write: overhead, then bus), so the drive's actor
        can promise it as its reaction time (``emu.actor.Promise``)."""
        p = self.params
        commands = [p.read_hit_overhead_ms, p.read_hit_after_write_overhead_ms, p.read_miss_overhead_ms,
                    p.write_overhead_ms, p.write_after_write_overhead_ms]
        commands += [ms for ms in (p.read_miss_after_write_overhead_ms, p.extradisc_command_ms) if ms is not None]
        bus_w = p.bus_ns_per_sector if p.bus_write_ns_per_sector is None else p.bus_write_ns_per_sector
        return (self._per_request_ns + min(int(round(ms * NS_PER_MS)) for ms in commands)
                + max(0, min(p.bus_ns_per_sector, bus_w)))

    def _zone_info(self, z: Zone, first_lba: int) -> _ZoneInfo:
        """Precompute one zone's LBA count, skews, sector time and slips
        (blocks per band as DiskSim layout_g1_load.c compute_blksinband)."""
        p = self.params
        spt, surf = z.sectors_per_track, p.surfaces
        ncyl = z.last_cyl - z.first_cyl + 1
        spares = p.spares_per_cyl if z.spares is None else z.spares
        blocks = ncyl * surf * spt - z.deadspace_sectors
        scheme = p.sparing
        if scheme == "track":
            blocks -= spares * spt
            if len(z.slips) + len(z.defects) > spares:
                raise ValueError(f"{p.name}: zone {z.first_cyl}-{z.last_cyl}: slips and defects "
                                 f"outnumber its {spares} spare tracks")
        elif scheme == "sectpertrack":
            blocks -= spares * ncyl * surf
        elif scheme == "sectpercyl":
            blocks -= spares * ncyl
        elif scheme in ("sectpercyl_sliptoend", "sectatend"):
            blocks -= spares * ncyl + len(z.slips)
        elif scheme == "range":
            blocks -= spares * (ncyl // p.spare_range_cyl)
        elif scheme == "zone":
            blocks -= spares
        if blocks <= 0 or (scheme.startswith("sect") and surf * spt <= spares):
            raise ValueError(f"{p.name}: zone {z.first_cyl}-{z.last_cyl} has no usable sectors")
        slips = tuple(sorted(z.slips))
        by_cyl: dict[int, list[int]] = {}
        for sl in slips:
            c, phys = divmod(sl, surf * spt)
            by_cyl.setdefault(c, []).append(phys)
        if scheme == "sectpercyl":
            for c, lst in by_cyl.items():
                if len(lst) > spares:
                    raise ValueError(f"{p.name}: zone {z.first_cyl}-{z.last_cyl} cylinder {c} "
                                     f"has more slips than spares")
        # slips before each cylinder, read only by the per-cylinder sparing schemes
        # (vectorised: a nearline zone has ~10^5 cylinders)
        before = () if scheme not in ("sectpercyl", "sectpercyl_sliptoend") else tuple(
            np.searchsorted(np.asarray(slips, dtype=np.int64),
                            np.arange(ncyl, dtype=np.int64) * (surf * spt), side="left").tolist())
        defects = {d: r for d, r in z.defects if d != r}
        if scheme in ("sectpercyl_sliptoend", "sectatend"):   # slips in usable-sector numbers
            per = surf * spt - spares
            usable = sorted(c * per + ph for c, lst in by_cyl.items() for ph in lst if ph < per)
            by_cyl = {-1: usable}
        return _ZoneInfo(z, first_lba, blocks,
                         p.track_skew if z.track_skew is None else z.track_skew,
                         p.cyl_skew if z.cyl_skew is None else z.cyl_skew,
                         self.revolution_ns / spt, spares, slips, defects, by_cyl, before)

    def _locate(self, lba: int):
        """lba -> (zone info, cylinder, head, sector) — physical position, as
        DiskSim layout_g1.c g1_ltop_* for the disk's sparing scheme, then the
        surface order (g1_surfno_on_cyl)."""
        zi, cyl, head, sector = self._locate_normal(lba)
        if self._serpentine and self._reversed(zi, cyl):
            head = self.params.surfaces - 1 - head
        return zi, cyl, head, sector

    def _reversed(self, zi: _ZoneInfo, cyl: int) -> bool:
        """Is the surface order reversed on this cylinder?"""
        if self.params.surface_order == "serpentine-zone":
            return (cyl - zi.zone.first_cyl) % 2 == 1
        return self.params.surface_order == "serpentine-even" and cyl % 2 == 1

    def _locate_normal(self, lba: int):
        """_locate before the surface order is applied."""
        zi = self._zones[bisect.bisect_right(self._zone_first_lba, lba) - 1]
        z = zi.zone
        spt = z.sectors_per_track
        surf = self.params.surfaces
        rel = lba - zi.first_lba + z.deadspace_sectors
        scheme = self.params.sparing
        if scheme == "sectpercyl":
            cyl_rel, phys = divmod(rel, surf * spt - zi.spares)
            for s in zi.slips_by_cyl.get(cyl_rel, ()):
                if s <= phys:
                    phys += 1
            if zi.defects:
                cyl_rel, phys = divmod(zi.defects.get(cyl_rel * surf * spt + phys,
                                                      cyl_rel * surf * spt + phys), surf * spt)
            head, sector = divmod(phys, spt)
            return zi, z.first_cyl + cyl_rel, head, sector
        if scheme in ("sectpercyl_sliptoend", "sectatend"):
            per = surf * spt - zi.spares
            u = rel
            for s in zi.slips_by_cyl[-1]:
                if s <= u:
                    u += 1
            cyl_rel, w = divmod(u, per)
            phys = zi.defects.get(cyl_rel * surf * spt + w, cyl_rel * surf * spt + w)
            cyl_rel, rest = divmod(phys, surf * spt)
            head, sector = divmod(rest, spt)
            return zi, z.first_cyl + cyl_rel, head, sector
        if scheme == "track":
            track, sector = divmod(rel, spt)
            for s in zi.slips:
                if s <= track:
                    track += 1
            track = zi.defects.get(track, track)
            cyl_rel, head = divmod(track, surf)
            return zi, z.first_cyl + cyl_rel, head, sector
        if scheme == "none":
            track, sector = divmod(rel, spt)
            cyl_rel, head = divmod(track, surf)
            return zi, z.first_cyl + cyl_rel, head, sector
        if scheme == "sectpertrack":
            track, sector = divmod(rel, spt - zi.spares)
            first = track * spt
            for s in zi.slips:
                if first <= s <= first + sector:
                    sector += 1
            phys = zi.defects.get(first + sector, first + sector)
        elif scheme == "range":
            per_range = surf * spt * self.params.spare_range_cyl
            rng, off = divmod(rel, per_range - zi.spares)
            first = rng * per_range
            n = 0
            for s in zi.slips:
                if first <= s <= first + off + n:
                    n += 1
            off += n
            phys = first + (zi.defects.get(first + off, first + off) % per_range)
        else:                                   # "zone": spares at the zone's end
            n = 0
            for s in zi.slips:
                if s <= rel + n:
                    n += 1
            phys = zi.defects.get(rel + n, rel + n)
        cyl_rel, rest = divmod(phys, surf * spt)
        head, sector = divmod(rest, spt)
        return zi, z.first_cyl + cyl_rel, head, sector

    def geometry(self, lba: int) -> tuple[int, int, int]:
        """LBA -> (cylinder, head, sector) through zones, spares and slips."""
        self._check_range(lba, 1)
        _, cyl, head, sector = self._locate(lba)
        return cyl, head, sector

    def _sector_phase_ns(self, zi: _ZoneInfo, cyl: int, head: int, sector: int) -> float:
        """Time within a revolution (0..rev) at which `sector` starts under the head.

        Angle in sectors = first-block offset + skew per track switch and per
        cylinder switch since the zone start + sector; the per-cylinder and
        per-track sparing schemes also push the angle on by the slips before
        this cylinder (track) (as DiskSim layout_g1.c g1_map_pbn_skew)."""
        spt = zi.zone.sectors_per_track
        c = cyl - zi.zone.first_cyl
        if self._serpentine and self._reversed(zi, cyl):      # back to logical surface order
            head = self.params.surfaces - 1 - head
        pos = (zi.zone.first_sector_offset + (head + (self.params.surfaces - 1) * c) * zi.track_skew
               + c * zi.cyl_skew + sector)
        scheme = self.params.sparing
        if scheme in ("sectpercyl", "sectpercyl_sliptoend"):
            pos += zi.slips_before_cyl[c]
        elif scheme == "sectpertrack":
            pos += bisect.bisect_left(zi.slips, (c * self.params.surfaces + head) * spt)
        return (pos % spt) * zi.sector_ns

    def _rotation_wait_ns(self, t_ns: int, phase_ns: float) -> int:
        """Wait from t until the angle `phase_ns` (0..rev) is under the head."""
        now_phase = t_ns % self.revolution_ns
        wait = (phase_ns - now_phase) % self.revolution_ns
        if self.revolution_ns - wait < 2.0:     # integer-ns rounding of t: already there
            return 0
        return int(round(wait))

    # ---------------------------------------------------------------- seeks
    def _seek_ns_uncached(self, distance: int) -> int:
        p = self.params
        if distance == 0:
            return 0
        table = p.seek_table_ms
        if table and (distance <= table[-1][0] or (p.seek_table_extrapolate and len(table) > 1)):
            ms = _interp_table(table, distance)
        elif p.seek_boundary_cyl and distance < p.seek_boundary_cyl:
            ms = p.seek_a_ms + p.seek_b_ms * math.sqrt(distance)
        else:
            ms = p.seek_c_ms + p.seek_e_ms * distance
        return int(round(ms * NS_PER_MS))

    def seek_time_ns(self, distance: int) -> int:
        """Seek time in ns for a move of `distance` cylinders (0 -> 0)."""
        if not isinstance(distance, int) or not 0 <= distance < self.params.cylinders:
            raise ValueError(f"seek distance must be an int in 0..{self.params.cylinders - 1}, "
                             f"got {distance!r}")
        return self._seek_ns[distance]

    def _move_ns(self, cyl: int, head: int, to_cyl: int, to_head: int, write: bool) -> int:
        """Positioning time from (cyl, head) to (to_cyl, to_head)."""
        p = self.params
        if cyl != to_cyl:
            t = max(self._seek_ns[abs(to_cyl - cyl)], int(round(p.head_switch_ms * NS_PER_MS)))
        elif head != to_head:
            t = int(round(p.head_switch_ms * NS_PER_MS))
        else:
            return 0
        if write:
            t += int(round(p.write_settle_ms * NS_PER_MS))
        return t

    # ---------------------------------------------------------------- media
    def _media_pass(self, lba: int, sectors: int, ready_ns: int, cyl: int, head: int,
                    write: bool = False, until_ns: int | None = None, not_before_ns: int = 0,
                    min_move_ns: int = 0):
        """Read/write `sectors` LBAs from `lba`; the head is at (cyl, head) and
        free at ready_ns.  Returns (first_sector_start_ns, end_ns, sectors_done,
        cyl, head).  With until_ns, stops at the last whole sector finished by
        then (used for read-ahead).  No sector starts before not_before_ns
        (write data still on the bus)."""
        t = ready_ns
        first_start = None
        done = 0
        while done < sectors:
            zi, c, h, s = self._locate(lba + done)
            spt = zi.zone.sectors_per_track
            n = min(sectors - done, spt - s)
            while n > 1:                       # stay on this track (spares, slips)
                _, c2, h2, s2 = self._locate(lba + done + n - 1)
                if c2 == c and h2 == h:
                    break
                n -= 1
            span = max(n, self._locate(lba + done + n - 1)[3] - s + 1)   # physical sectors
            move = self._move_ns(cyl, head, c, h, write)
            if first_start is None:            # the first positioning takes at least this
                move = max(move, min_move_ns)
            t += move
            cyl, head = c, h
            t = max(t, not_before_ns)
            if until_ns is not None and t >= until_ns:
                break
            t += self._rotation_wait_ns(t, self._sector_phase_ns(zi, c, h, s))
            if first_start is None:
                first_start = t
            if until_ns is not None and t + span * zi.sector_ns > until_ns:
                whole = int((until_ns - t) // zi.sector_ns)
                done += max(0, min(n, whole - (span - n)))
                t = until_ns
                break
            t += int(round(span * zi.sector_ns))
            done += n
        return (t if first_start is None else first_start), t, done, cyl, head

    # ---------------------------------------------------------------- cache
    def _settle_stream(self, seg: _Segment, now_ns: int) -> None:
        """Stop a read-ahead stream at now_ns: extend the segment by what was
        read and leave the head where the stream got to."""
        seg.was_streaming = seg.streaming
        if not seg.streaming:
            return
        room = min(seg.stream_limit, self.lba_count) - seg.stream_lba
        if room > 0:
            _, _, got, cyl, head = self._media_pass(seg.stream_lba, room, seg.stream_ready_ns,
                                                    seg.stream_cyl, seg.stream_head,
                                                    until_ns=now_ns)
            seg.end = seg.stream_lba + got
            seg.start = max(seg.start, seg.end - self.params.cache_segment_sectors)
            self.cylinder, self.head = cyl, head
            if got >= room:
                seg.was_streaming = False  # segment filled: the stream had stopped
        seg.streaming = False

    def _find_segment(self, lba: int) -> _Segment | None:
        for seg in self._segments:
            if seg.start <= lba < seg.end and (self.params.read_hits_on_write_data or not seg.write):
                return seg
        return None

    def _claim_segment(self, start: int, end: int, write: bool = False) -> _Segment:
        """Reuse the least recently used segment (or a new one) for [start, end).
        With a separate write segment, writes use it and reads the others."""
        p = self.params
        start = max(start, end - p.cache_segment_sectors)
        self._segments = [s for s in self._segments      # drop stale overlapping copies
                          if not (s.start < end and start < s.end)]
        if p.separate_write_segment and p.cache_segments > 1:
            pool = [s for s in self._segments if s.write == write]
            cap = 1 if write else p.cache_segments - 1
        else:
            pool, cap = self._segments, p.cache_segments
        if len(pool) >= cap:
            self._segments.remove(min(pool, key=lambda s: s.last_use))
        seg = _Segment(start, end, write=write)
        self._segments.append(seg)
        return seg

    # ---------------------------------------------------------------- access
    def _check_range(self, lba: int, sectors: int) -> None:
        if not isinstance(lba, int) or not isinstance(sectors, int):
            raise ValueError(f"lba and sectors must be ints, got {lba!r}, {sectors!r}")
        if sectors <= 0:
            raise ValueError(f"sectors must be > 0, got {sectors}")
        if lba < 0 or lba + sectors > self.lba_count:
            raise ValueError(f"LBA range {lba}+{sectors} outside 0..{self.lba_count - 1}")

    def access(self, now_ns: int, op: str, lba: int, sectors: int) -> AccessResult:
        """Serve one request issued at now_ns ("R" or "W"); returns its timing.

        A request issued while the previous one is still in service waits
        (queue_ns).  Reads served from the cache pay the hit overhead and the
        bus only; misses pay overhead, seek, rotation and media transfer."""
        if not isinstance(now_ns, int) or now_ns < 0:
            raise ValueError(f"now_ns must be a non-negative int, got {now_ns!r}")
        if op not in ("R", "W"):
            raise ValueError(f"op must be 'R' or 'W', got {op!r}")
        self._check_range(lba, sectors)
        start_ns = max(now_ns, self.busy_until_ns)
        begin_ns = start_ns + self._per_request_ns      # DiskSim "Per-request overhead time"
        for seg in self._segments:
            self._settle_stream(seg, begin_ns)
        if op == "R":
            res = self._read(begin_ns, lba, sectors)
        else:
            res = self._write(begin_ns, lba, sectors)
        self.last_op = op
        self.busy_until_ns = res.done_ns
        return AccessResult(res.done_ns, start_ns, start_ns - now_ns,
                            res.overhead_ns + self._per_request_ns,
                            res.seek_ns, res.rotation_ns, res.transfer_ns, res.cache_hit,
                            res.cylinder, res.head)

    def _read(self, start_ns: int, lba: int, sectors: int):
        """Full hit: overhead + bus.  Partial hit (first sector cached): the
        cached part goes out on the bus while the media supplies the rest,
        continuing the read-ahead stream.  Miss: overhead, seek, rotation,
        media, bus tail."""
        p = self.params
        self._uses += 1
        seg = self._find_segment(lba) if p.cache_segments else None
        if seg is None:
            return self._read_miss(start_ns, lba, sectors)
        bus = p.bus_ns_per_sector
        completion = int(round(p.read_completion_ms * NS_PER_MS))
        ms = p.read_hit_overhead_ms if self.last_op == "R" else p.read_hit_after_write_overhead_ms
        overhead = int(round(ms * NS_PER_MS))
        overhead += int(round(p.data_prep_ms * NS_PER_MS))
        cmd_end = start_ns + overhead
        zi, c, h, _ = self._locate(lba)
        seg.last_use = self._uses
        if p.read_ahead:               # continuous read: blocks before the hit are freed
            seg.start = lba + sectors if p.request_data == "erase" else lba
        bus_end = cmd_end + sectors * bus
        kind = "hit"
        if lba + sectors > seg.end:                      # rest comes from the media
            kind = "partial"
            if seg.was_streaming:              # the stream simply goes on
                _, media_end, _, cyl, head = self._media_pass(
                    seg.stream_lba, lba + sectors - seg.stream_lba, seg.stream_ready_ns,
                    seg.stream_cyl, seg.stream_head)
            else:
                _, media_end, _, cyl, head = self._media_pass(
                    seg.end, lba + sectors - seg.end, max(start_ns, self.media_free_ns),
                    self.cylinder, self.head)
            self.cylinder, self.head = cyl, head
            bus_end = max(bus_end, media_end + bus)
            seg.start = max(seg.start, lba + sectors - p.cache_segment_sectors)
            seg.end = lba + sectors
            if p.request_data == "erase":
                seg.start = seg.end
            self._start_read_ahead(seg, media_end)
        elif p.read_ahead_on_hit:
            self._start_read_ahead(seg, start_ns)
        return _Result(bus_end + completion, start_ns, overhead + completion, 0, 0,
                       bus_end - cmd_end, kind, c, h)

    def _read_miss(self, start_ns: int, lba: int, sectors: int):
        """Overhead, seek, rotation, media; the disk is off the bus meanwhile
        and reconnects once the water mark's worth of sectors is buffered;
        the bus then carries the request, never ahead of the media."""
        p = self.params
        bus = p.bus_ns_per_sector
        completion = int(round(p.read_completion_ms * NS_PER_MS))
        after_write = self.last_op == "W"
        ms = p.read_miss_overhead_ms
        if after_write and p.read_miss_after_write_overhead_ms is not None:
            ms = p.read_miss_after_write_overhead_ms
        overhead = int(round(ms * NS_PER_MS))
        zi, c, h, _ = self._locate(lba)
        ready = max(start_ns + overhead, self.media_free_ns)
        seek = self._move_ns(self.cylinder, self.head, c, h, False)
        first, media_end, _, cyl, head = self._media_pass(lba, sectors, ready, self.cylinder, self.head)
        rotation = first - ready - seek
        overhead = ready - start_ns          # includes waiting for a write-back to finish
        water = self._water_sectors(sectors)
        if water > 1:                        # time the water mark is reached
            _, water_ns, _, _, _ = self._media_pass(lba, water, ready, self.cylinder, self.head)
        else:
            water_ns = first + int(round(zi.sector_ns))
        off_bus = start_ns + overhead + int(round(
            (p.disconnect_read_after_write_ms if after_write else p.disconnect_read_after_read_ms)
            * NS_PER_MS))
        reconnect = (max(water_ns, off_bus) + int(round(p.reselect_first_ms * NS_PER_MS))
                     + int(round(p.data_prep_ms * NS_PER_MS)))
        bus_end = max(media_end + bus, reconnect + sectors * bus)
        done = bus_end + completion
        self.cylinder, self.head = cyl, head
        if p.cache_segments:
            seg = self._claim_segment(lba, lba + sectors)
            seg.last_use = self._uses
            if p.request_data == "erase" and p.read_ahead:
                seg.start = seg.end            # sent, so gone: the whole segment prefetches
            self._start_read_ahead(seg, media_end)
        return _Result(done, start_ns, overhead + completion, seek, rotation,
                       done - completion - first, "miss", c, h)

    def _write_stall_ns(self, first_ns: int, bus_start_ns: int, sectors: int, bus_ns: int,
                        sector_ns: float) -> int:
        """Extra revolutions a write loses when the media outrun the bus: a
        sector whose data is not yet in the buffer when it passes under the
        head is written one revolution later (DiskSim writes only buffered
        sectors)."""
        gain = bus_ns - sector_ns
        if gain <= 0 or sectors <= 1:
            return 0
        rev = self.revolution_ns
        t, pos, stall = float(first_ns), 0, 0.0
        while pos < sectors:
            # sector j (>= pos) goes at t + (j-pos)*sector_ns, needs bus_start + (j+1)*bus
            slack = t - bus_start_ns - (pos + 1) * bus_ns
            count = sectors - pos if slack >= (sectors - pos - 1) * gain else int(slack // gain) + 1
            count = max(0, min(count, sectors - pos))
            pos += count
            t += count * sector_ns
            if pos < sectors:
                t += rev                    # the same sector comes round again
                stall += rev
        return int(round(stall))

    def _water_sectors(self, sectors: int) -> int:
        """Sectors buffered before a read reconnects (DiskSim readwater)."""
        p = self.params
        if p.water_by_request:
            w = max(1, int(min(p.cache_segment_sectors or sectors, sectors) * p.read_water))
        else:
            w = int(p.cache_segment_sectors * p.read_water + 0.9999999999)
        return max(1, min(w, sectors))

    def _run_end(self, lba: int, track: bool) -> int:
        """First LBA after the track (or cylinder) holding `lba`: LBAs of a
        track are consecutive, so a binary search over one track's span."""
        zi, c, h, _ = self._locate(lba)
        span = zi.zone.sectors_per_track * (1 if track else self.params.surfaces)
        lo, hi = lba, min(lba + span, self.lba_count - 1)
        while lo < hi:                 # last LBA on the same track / cylinder
            mid = (lo + hi + 1) // 2
            _, c2, h2, _ = self._locate(mid)
            if c2 == c and (h2 == h or not track):
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def _run_start(self, lba: int) -> int:
        """First LBA of the track holding `lba`."""
        zi, c, h, _ = self._locate(lba)
        lo, hi = max(0, lba - zi.zone.sectors_per_track), lba
        while lo < hi:
            mid = (lo + hi) // 2
            _, c2, h2, _ = self._locate(mid)
            if c2 == c and h2 == h:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _start_read_ahead(self, seg: _Segment, ready_ns: int) -> None:
        """Prefetch after a read while the disk is idle: up to read_ahead_max
        beyond the request and, unless prefetch may replace the request's own
        data, no further than the segment holds."""
        p = self.params
        if not p.read_ahead or seg.end >= self.lba_count:
            return
        ra_max = p.cache_segment_sectors if p.read_ahead_max_sectors is None else p.read_ahead_max_sectors
        mode = p.read_ahead_mode
        if mode == "track":            # to the end of the track holding the request's last block
            limit = min(seg.end + ra_max, self._run_end(seg.end - 1, track=True))
        elif mode == "cylinder":
            limit = min(seg.end + ra_max, self._run_end(seg.end - 1, track=False))
        elif mode == "dec":            # the next block's track, and one more inside a stream
            limit = self._run_end(seg.end, track=True)
            if seg.start < self._run_start(seg.end):
                limit += self._locate(seg.end)[0].zone.sectors_per_track
        else:
            limit = seg.end + ra_max
        if p.request_data == "keep":
            limit = min(limit, seg.start + p.cache_segment_sectors)
        if limit > seg.end:
            seg.stream_limit = limit
            seg.streaming = True
            seg.stream_ready_ns = ready_ns
            seg.stream_lba = seg.end
            seg.stream_cyl, seg.stream_head = self.cylinder, self.head

    def _write(self, start_ns: int, lba: int, sectors: int):
        """Overhead, then the data cross the bus while the arm moves; the
        media write starts once the first sector is on board.  With a write
        cache the host is answered when the data are in the buffer and the
        media write goes on in the background (DiskSim "Fast write level")."""
        p = self.params
        bus = p.bus_ns_per_sector if p.bus_write_ns_per_sector is None else p.bus_write_ns_per_sector
        ms = p.write_overhead_ms if self.last_op == "R" else p.write_after_write_overhead_ms
        prep = int(round(p.data_prep_ms * NS_PER_MS))
        reselect = int(round(p.reselect_first_ms * NS_PER_MS))
        disconnect = int(round(p.disconnect_write_ms * NS_PER_MS))
        # DiskSim disksim_diskcache.c: the extra disconnect hits a write that
        # follows a write it does not append to
        extradisc = (p.extradisc_command_ms is not None and self.last_op == "W"
                     and lba != self._last_write_end)
        self._prev_write_end = self._last_write_end
        self._last_write_end = lba + sectors
        if not extradisc:
            overhead = int(round(ms * NS_PER_MS))
            cmd_end = arm_ns = start_ns + overhead
            bus_start = cmd_end + prep
        else:                              # off the bus at once; back for the data later
            overhead = int(round(p.extradisc_command_ms * NS_PER_MS))
            cmd_end = start_ns + overhead
            arm_ns = cmd_end + int(round(p.extradisc_seek_delta_ms * NS_PER_MS))
            bus_start = cmd_end + reselect + prep + int(round(
                (p.extradisc_disconnect_ms + p.extradisc_inter_ms) * NS_PER_MS))
            reselect = int(round(p.reselect_other_ms * NS_PER_MS))
            disconnect = int(round(p.extradisc_disconnect2_ms * NS_PER_MS))
        completion = int(round(p.write_completion_ms * NS_PER_MS))
        zi, c, h, _ = self._locate(lba)
        mech_start = max(arm_ns, self.media_free_ns)
        # DiskSim "Minimum seek delay": a write that does not append to a
        # write-back stream positions for at least this long
        appending = p.write_cache and lba == self._prev_write_end
        min_move = 0 if appending else int(round(p.write_min_seek_ms * NS_PER_MS))
        seek = max(self._move_ns(self.cylinder, self.head, c, h, True), min_move)
        first, media_end, _, cyl, head = self._media_pass(
            lba, sectors, mech_start, self.cylinder, self.head, write=True,
            not_before_ns=bus_start + bus,                 # first sector's data on board
            min_move_ns=min_move)
        rotation = first - mech_start - seek
        bus_end = bus_start + sectors * bus
        media_end += self._write_stall_ns(first, bus_start, sectors, bus, zi.sector_ns)
        if p.write_cache:                  # host sees overhead + bus only
            done = bus_end + completion
            self.media_free_ns = media_end
            seek = rotation = 0
            first = cmd_end
        elif media_end > bus_end:          # off the bus; back for the status when the media are done
            done = max(media_end, bus_end + disconnect) + reselect + completion
        else:
            done = bus_end + int(round(zi.sector_ns)) + completion
        self.cylinder, self.head = cyl, head
        self._uses += 1
        if p.cache_segments:
            seg = self._claim_segment(lba, lba + sectors, write=True)
            seg.last_use = self._uses
        return _Result(done, start_ns, overhead + completion, seek, rotation,
                       done - completion - first, "miss", c, h)


@dataclass(frozen=True)
class _Result:
    """Internal timing of one request before queueing is accounted."""
    done_ns: int
    start_ns: int
    overhead_ns: int
    seek_ns: int
    rotation_ns: int
    transfer_ns: int
    cache_hit: str
    cylinder: int
    head: int


def _interp_table(table: tuple, distance: int) -> float:
    """Linear interpolation in ((d, ms), ...); below the first point, scale
    from (0, 0) is not physical, so the first entry is used."""
    ds = [d for d, _ in table]
    i = bisect.bisect_left(ds, distance)
    if i < len(ds) and ds[i] == distance:
        return table[i][1]
    if i == 0:
        return table[0][1]
    i = min(i, len(ds) - 1)            # past the end: extend the last segment
    (d0, m0), (d1, m1) = table[i - 1], table[i]
    return m0 + (m1 - m0) * (distance - d0) / (d1 - d0)


# ---------------------------------------------------------------------- presets

PRESET_DIR = Path(__file__).resolve().parents[3] / "configs" / "disks"
class _SeekTimes(dict):
    """distance -> seek ns, filled on first use (the same values a full table holds)."""

    def __init__(self, compute):
        super().__init__()
        self._compute = compute

    def __missing__(self, distance: int) -> int:
        ns = self[distance] = self._compute(distance)
        return ns


"""configs/disks/NAME.parv: each preset is a DiskSim-style file with its sources
(hp97560: Ruemmler & Wilkes 1994; st41601n: the DiskSim 4.0 validation kit)."""


class _Presets(Mapping):
    """Preset name -> DiskParams, loaded through the DiskSim parser on first use
    (so a preset and a user's ``disk_model`` file take one path)."""

    def __init__(self, directory: Path):
        self._dir = directory
        self._cache: dict[str, DiskParams] = {}

    def _names(self) -> list[str]:
        return sorted(p.stem for p in self._dir.glob("*.parv"))

    def __getitem__(self, name: str) -> DiskParams:
        if name not in self._cache:
            if name not in self._names():
                raise KeyError(name)
            from controllers.devices.disk.disksim import load   # disksim imports this module
            self._cache[name] = replace(load(self._dir / f"{name}.parv"), name=name)
        return self._cache[name]

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


PRESETS: Mapping[str, DiskParams] = _Presets(PRESET_DIR)
