"""What a flowchart step may use of the DKC that runs it.

Step functions (``fig04_pairs``, ``fig05_recovery_master``,
``fig06_09_recovery_remote``, ``mirror``, ``views``) take ``fw`` typed as
this Protocol: the tables they read and change (the non-volatile state) and
the actions they may request. They never touch the host's private fields;
``firmware.dkc.DkcFirmware`` is the one implementation, and the sans-I/O
test harness (tests/support/fw_harness.py) drives it with no sockets and no
clock.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from firmware.fig05_recovery_master import MasterSession
    from firmware.fig06_09_recovery_remote import RemoteSession
    from firmware.fig12_13_time_series import TimeSeriesQueue
    from firmware.lost_tracks import LostTracks
    from firmware.pair_table import Pair, PairTable
    from firmware.protocol import HostDone
    from firmware.store import SaveMedia, TrackStore


class FirmwareHost(Protocol):
    # -- the DKC's non-volatile state (patent Figs. 7, 10-13 live in these) ---------------
    site: str
    store: TrackStore                   # the LDEV images (through cache and RAID5)
    save_media: SaveMedia               # where saved old tracks go (cache, parity tracks, spares)
    params: dict                        # firmware settings (DEFAULTS in firmware.dkc)
    pairs: PairTable                    # Fig. 4 pairs with their differential bitmaps (Fig. 7)
    sessions: dict[int, MasterSession]  # master side copy sessions by sid (Fig. 5)
    rsession: RemoteSession | None      # the remote side's recovery copy (Figs. 6, 9-11)
    tsq: dict[str, TimeSeriesQueue]     # time-series queues by consistency unit (Figs. 12-13)
    next_sid: int
    next_seq: dict[str, int]
    seq_base: dict[str, int]
    pending: dict[tuple[str, int], dict]
    host_waits: dict[object, dict]
    expect_seq: dict[str, int | None]
    reorder: dict[str, dict[int, dict]]
    link_up: dict[str, bool]
    double_faults: list[dict]
    lost: LostTracks                    # tracks with no right image (double faults)
    last_recovery: dict | None

    @property
    def sectors_per_track(self) -> int: ...

    # -- actions: each becomes one returned action of the current event ----------------------
    def trace(self, step: int | None, event: str, **fields) -> None: ...
    def send(self, site: str, msg: dict) -> None: ...
    def set_timer(self, name: str, at_ns: int) -> None: ...
    def cancel_timer(self, name: str) -> None: ...
    def disk_cost(self, kind: str, ldev: int, track: int, nbytes: int) -> None: ...
    def answer_host(self, done: HostDone) -> None: ...
    def copy_read(self, sid: int, pair: str, ldev: int, track: int) -> None: ...
    def restore_io(self, sid: int, tag: int, ldev: int, track: int, save_row: int | None,
                   save_slot: int | None) -> None: ...

    # -- track I/O and helpers ------------------------------------------------------------------
    def read_home(self, ldev: int, track: int) -> bytes: ...
    def read_copied(self, ldev: int, track: int) -> bytes: ...
    def write_home(self, ldev: int, track: int, data: bytes) -> None: ...
    def track_rewritten(self, ldev: int, track: int) -> None: ...
    def mark_lost(self, ldev: int, track: int, why: str) -> None: ...
    def check_readable(self, ldev: int, lba: int, sectors: int, what: str) -> None: ...
    def nvm_barrier(self) -> None: ...
    def split_pieces(self, lba: int, data: bytes) -> list[tuple[int, int, bytes]]: ...
    def tsq_unit_of(self, pair: Pair) -> str: ...
    def tsq_for(self, pair: Pair) -> TimeSeriesQueue: ...
    def tsq_usable_for(self, pair: Pair, session_pairs: list[str] | None = None) -> bool: ...
    def tsq_mark_incomplete(self, pair: Pair) -> None: ...
    def tsq_after_reached(self, pair: Pair) -> None: ...
