"""What the console shows of a DKC's firmware: one table of views
(``show X``, ``VIEWS``) and the ``pairdisplay`` rows, each a pure function
of the state."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from firmware import pair_table as P
from firmware.fig12_13_time_series import TimeSeriesQueue
from firmware.fig06_09_recovery_remote import save_config
from firmware.protocol import PairDisplay, Show

if TYPE_CHECKING:
    from firmware.context import FirmwareHost


def view_recovery_plan(fw: FirmwareHost, ldev: int | None) -> dict:
    """Fig. 5 sessions of this master (n, window, waiting/active/reached pairs)."""
    return {"sessions": [{"sid": s.sid, "kind": s.kind, "remote": s.remote_site, "phase": s.phase,
                          "plan": dict(s.plan), "waiting": list(s.waiting), "active": list(s.active),
                          "reached": list(s.reached), "window": s.window, "order": s.order}
                         for _, s in sorted(fw.sessions.items())], "last_remote": fw.last_recovery}


def view_save_area(fw: FirmwareHost, ldev: int | None) -> dict:
    """Fig. 10 rows of this remote's save area and the Fig. 11 node count."""
    rs = fw.rsession
    return {"in_progress": bool(rs and rs.in_progress),
            "rolling_back": bool(rs and rs.rolling_back),
            "restore": {"done": rs.restore_pos, "tracks": len(rs.restore_queue)} if rs and rs.rolling_back else None,
            "lost_tracks": fw.lost.count(),
            "rows": rs.save_bitmap.describe() if rs else [],
            "cache_tracks": len(rs.cache) if rs else 0, "saved_nodes": len(rs.saved) if rs else 0,
            "double_faults": list(fw.double_faults)}


def view_bitmap(fw: FirmwareHost, ldev: int | None) -> dict:
    """Fig. 7: the differential tracks of each pair of M-DEV ``ldev``."""
    pairs = fw.pairs.by_master_ldev(fw.site, _ldev(ldev, "bitmap"))
    return {p.name: p.bitmap.set_tracks() for p in pairs if p.bitmap is not None}


def view_queue(fw: FirmwareHost, ldev: int | None) -> dict:
    """Fig. 12: the time-series queue that M-DEV ``ldev`` feeds."""
    pairs = fw.pairs.by_master_ldev(fw.site, _ldev(ldev, "queue"))
    units = sorted({fw.tsq_unit_of(p) for p in pairs})
    return {u: queue_rows(fw.tsq[u]) for u in units if u in fw.tsq}


def view_save_config(fw: FirmwareHost, ldev: int | None) -> dict:
    """403 answered locally: this DKC's save rows and counts (for a refusal
    before a copy starts, and for ``show recovery-plan``)."""
    return {"site": fw.site, **save_config(fw)}


def view_config(fw: FirmwareHost, ldev: int | None) -> dict:
    return {"site": fw.site, "params": dict(sorted(fw.params.items()))}


#: ``show X`` of the firmware: name -> view (the rack adds its own, see StorageRack.show)
VIEWS: dict[str, Callable[[FirmwareHost, int | None], dict]] = {
    "recovery-plan": view_recovery_plan, "save-area": view_save_area, "bitmap": view_bitmap,
    "queue": view_queue, "config": view_config, "save-config": view_save_config,
}


def cmd_show(fw: FirmwareHost, now_ns: int, req: Show) -> dict:
    view = VIEWS.get(req.what)
    if view is None:
        raise ValueError(f"unknown show {req.what!r} (known: {', '.join(sorted(VIEWS))})")
    return view(fw, req.ldev)


def _ldev(ldev: int | None, what: str) -> int:
    if ldev is None:
        raise ValueError(f"show {what} needs an LDEV number")
    return int(ldev)


def queue_rows(queue: TimeSeriesQueue) -> dict:
    rows = [{"node": node.node_id, "type": node.update_type, "valid": node.valid,
             "ldev": node.ldev, "track": node.track} for node in queue.walk()]
    return {"usable": queue.usable(), "nodes": rows}


def pair_row(fw: FirmwareHost, pair: P.Pair) -> dict:
    row = {"name": pair.name, "group": pair.group, "role": pair.role(fw.site), "state": pair.state,
           "mode": pair.mode, "fence": pair.fence, "m": f"{pair.m_site}:{pair.m_ldev}",
           "r": f"{pair.r_site}:{pair.r_ldev}"}
    if pair.bitmap is not None:
        diff = pair.bitmap.count()
        row.update(diff_tracks=diff, copy_pct=round(100.0 * (1 - diff / pair.bitmap.tracks), 1))
    return row


def cmd_pairdisplay(fw: FirmwareHost, now_ns: int, req: PairDisplay) -> dict:
    found = fw.pairs.select(req.target) if req.target else [p for _, p in sorted(fw.pairs.pairs.items())]
    return {"pairs": [pair_row(fw, p) for p in found]}
