"""``verify``: judge every remote image of a running rack with the stamp
checker (DESIGN section 5). It lives with the checkers, not in the rack
facade, so the rack assembly does not depend on how it is judged."""
from __future__ import annotations

from controllers.rack.storage import StorageRack
from controllers.verify.checker import check, equals


def verify_rack(rack: StorageRack) -> dict:
    """Dependent-write consistency of every remote image, per consistency
    unit, against the master hosts' write logs (DESIGN section 5); plus,
    per pair, whether the remote equals its suspension-time image or the
    master's current image."""
    log = rack.writelog()
    # the unit each group's last recovery copy kept consistent; the SVP's
    # setting for a group never resynced (ldev when the master's SVP is gone)
    default_unit = rack.settings()["unit"] if rack.svp_up() else "ldev"
    units_used = set()
    verdicts, pairs_out, ok = [], {}, True
    remote_writers = {r.site for r in log if r.site not in {g["master"] for g in rack.groups.values()}}
    # LDEVs written with client bytes (capture replays) carry no stamps: the
    # stamp checker cannot judge them, so they are listed, not judged
    # (``--check APP`` judges them as the application would)
    raw = rack.rawlog()
    unstamped = {(row[0], row[1]) for site in raw.values() for row in site["rows"]}
    skipped, unjudged = [], []
    for gname, g in sorted(rack.groups.items()):
        members = [rack.pairs[n] for n in g["pairs"]]
        if g["remote"] in rack.down_sites:
            continue
        if g["remote"] in remote_writers:
            # after a takeover the remote host's writes start a new history:
            # the master's log no longer describes this image
            skipped.append({"group": gname, "reason": f"written by {g['remote']}'s host after takeover"})
            continue
        # tracks the remote DKC reports lost are judged as DATA LOSS, per
        # LDEV and track range; the rest of the group is still checked
        lost = rack.lost_tracks(g["remote"])
        lossy = [p for p in members if lost.get(p["r_ldev"])]
        loss_rows = [{"pair": p["name"], "site": p["r_site"], "ldev": p["r_ldev"], "tracks": lost[p["r_ldev"]]}
                     for p in lossy]
        if loss_rows:
            ok = False
        members = [p for p in members if p not in lossy]
        raw_members = [p for p in members if (p["m_site"], p["m_ldev"]) in unstamped]
        for p in raw_members:
            unjudged.append({"group": gname, "pair": p["name"], "site": p["r_site"], "ldev": p["r_ldev"],
                             "reason": "written with unstamped client bytes (a capture replay): "
                                       "judged by --check APP, not by the stamp checker"})
            pairs_out[p["name"]] = _pair_verdict(rack, p, rack.export_image(p["r_site"], p["r_ldev"]))
        members = [p for p in members if p not in raw_members]
        if raw_members and not members and not loss_rows:
            continue      # nothing left for the stamp checker in this group
        images = {p["m_ldev"]: rack.export_image(p["r_site"], p["r_ldev"]) for p in members}
        unit = rack.resync_units.get(gname, default_unit)
        units_used.add(unit)
        units_ = [[p["m_ldev"] for p in members]] if unit == "group" else [[p["m_ldev"]] for p in members]
        units_ = [u for u in units_ if u]
        v = check(images, log, units_, sites=[g["master"]])   # no filtered copy of the log
        row = {"group": gname, "unit": unit, **v.to_dict()}
        if loss_rows:   # "consistent" then speaks of the LDEVs that could be read
            row["data_loss"] = loss_rows
        verdicts.append(row)
        ok = ok and bool(v.consistent)
        for p in members:
            pairs_out[p["name"]] = _pair_verdict(rack, p, images[p["m_ldev"]])
    unit = "/".join(sorted(units_used)) or default_unit
    return rack.record_verify({"consistent": ok, "unit": unit, "groups": verdicts, "pairs": pairs_out,
                               "writes": len(log), "skipped": skipped, "unjudged": unjudged,
                               "raw_writes": sum(len(site["rows"]) for site in raw.values())})


def _pair_verdict(rack: StorageRack, p: dict, image) -> dict:
    out = {}
    if p["name"] in rack.suspension_images:
        out["equals_suspension_image"] = bool(equals(image, rack.suspension_images[p["name"]]).consistent)
    if p["m_site"] not in rack.down_sites:
        master_lost = rack.lost_tracks(p["m_site"]).get(p["m_ldev"])
        if master_lost:   # the master cannot vouch for its image: a verdict, not a failed command
            out["equals_master"] = False
            out["master_data_loss"] = master_lost
        else:
            out["equals_master"] = bool(equals(image, rack.export_image(p["m_site"], p["m_ldev"])).consistent)
    return out

