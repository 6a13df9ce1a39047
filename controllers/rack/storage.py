"""``StorageRack``: a storage rack built from a ``[[site]]`` config, with one
method per console command. The console, scripts and tests all drive the
rack through this class; a method either does what it says or raises
``CommandError`` with one clear line and leaves the rack unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Callable

import numpy as np

from controllers.formats.writelog import WriteLog, WriteRecord
from controllers.devices.svp import SETTABLE, convert_setting
from controllers.devices.registry import REPORT_SECTIONS, by_path, preload_modules
from controllers.rack.layout import load_storage_config
from firmware.fig05_recovery_master import compute_n, copy_need_tracks, save_capacity
from emu import units
from firmware.protocol import (SECTOR_BYTES, SIGNAL_EVENTS, SIGNAL_STEPS, HorcTakeover, PairCreate, PairDisplay, PairResync, PairSplit, Request,
                               SetParam, Show, request_to_wire)
from emu.rack import Rack

RUN_UNTIL_LIMIT_NS = 3_600 * 10 ** 9
#: SVP settings the DKC firmware needs at once, not only at the next pairresync
FIRMWARE_SETTINGS = ("format_shortcut", "keep_raid5", "spares_usable", "cache_save_threshold", "copy_read_ahead")
#: an SVP setting's name in the firmware's parameters, where they differ
FIRMWARE_KEYS = {"cache_save_threshold": "cache_save_threshold_tracks"}


class CommandError(ValueError):
    """A console command that cannot be done; the rack is unchanged."""


class StorageRack:
    def __init__(self, config: str | Path, backend: str = "processes", seed: int | None = None,
                 trace_out: IO[str] | None = None, keep_trace: bool = False, realtime: float | None = None):
        self.config_path = str(config)
        self.spec, self.storage = load_storage_config(config, seed)
        self.sites = self.storage.sites
        self.pairs = {p["name"]: p for p in self.storage.pairs}
        self.groups = self.storage.groups
        self.links = {ln["name"]: ln for ln in self.storage.links}
        self.rack = Rack(self.spec, backend, trace_out=trace_out, keep_trace=keep_trace, realtime=realtime,
                         preload=preload_modules())
        self.down_sites: set[str] = set()
        self.suspension_images: dict[str, bytes] = {}   # pair -> remote image when it was suspended
        self.events: list[dict] = []                    # console history for the report
        self.phase_marks: list[tuple[str, int]] = [("main", 0)]
        self.last_verify: dict | None = None
        self._lost_device_rows: dict[str, dict] = {}   # actor -> report row when its site was lost
        self.notices: list[str] = []                    # for the operator: deaths noticed, not yet shown
        #: group -> consistency unit of its last recovery copy (verify judges by it)
        self.resync_units: dict[str, str] = {}
        self._dead_host_logs: dict[str, list] = {}
        self._dead_host_stats: dict[str, dict] = {}
        self._dead_host_raw: dict[str, dict] = {}
        #: what the front-ends serve (``controllers.frontends``: one row per
        #: NBD export, FUSE file), for ``show nbd``; empty when none runs
        self.frontend_exports: list[dict] = []

    def close(self) -> None:
        self.rack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def now_ns(self) -> int:
        return self.rack.now_ns

    # -- helpers -----------------------------------------------------------------------
    def _log(self, what: str, **fields) -> None:
        self.events.append({"time_ns": self.now_ns, "event": what, **fields})

    def resolve(self, target: str | None) -> list[dict]:
        """Pairs named by a pair name, a group name, or '*'/None (all)."""
        if target in (None, "*", "all"):
            return [self.pairs[n] for n in sorted(self.pairs)]
        if target in self.groups:
            return [self.pairs[n] for n in self.groups[target]["pairs"]]
        if target in self.pairs:
            return [self.pairs[target]]
        known = sorted(self.groups) + sorted(self.pairs)
        raise CommandError(f"no group or pair named {target!r} (known: {', '.join(known)})")

    def _master_of(self, target: str) -> str:
        sites = sorted({p["m_site"] for p in self.resolve(target)})
        if len(sites) != 1:
            raise CommandError(f"{target!r} spans master sites {sites}; name a group or pair")
        return sites[0]

    def _site_up(self, site: str) -> None:
        if site in self.down_sites or not self.rack.alive(f"{site}.dkc"):
            raise CommandError(f"site {site}'s DKC is down")

    def _fw(self, site: str, req: Request, query: bool = False) -> dict:
        """Send a typed request to the firmware of ``site``'s DKC: a mutating
        control, or with ``query`` a read outside virtual time."""
        self._site_up(site)
        wire, dkc = request_to_wire(req), f"{site}.dkc"
        result = (self.rack.query(dkc, {"q": "fw", "cmd": wire}) if query
                  else self.rack.control(dkc, {"cmd": "fw", "fw": wire}))
        if not result.get("ok"):
            raise CommandError(result.get("error", "query failed" if query else "command failed"))
        return result

    def _fw_query(self, site: str, req: Request) -> dict:
        return self._fw(site, req, query=True)

    def settings(self, site: str | None = None) -> dict:
        site = site or self._default_master()
        return self.rack.query(f"{site}.svp", {})["settings"]

    def _default_master(self) -> str:
        masters = sorted({p["m_site"] for p in self.pairs.values()}) or sorted(self.sites)
        for m in masters:
            if m not in self.down_sites:
                return m
        return masters[0]

    # -- pair commands --------------------------------------------------------------------
    def paircreate(self, target: str, mode: str | None = None, fence: str | None = None) -> dict:
        site = self._master_of(target)
        grp = self.groups.get(target, {})
        req = PairCreate(target, mode or grp.get("mode", "sync"), fence or grp.get("fence", "never"))
        out = self._fw(site, req)
        self._log("paircreate", target=target, mode=req.mode)
        return out

    def pairdisplay(self, target: str | None = None) -> list[dict]:
        """One row per pair, as its master DKC sees it (the remote's view if
        the master site is down)."""
        rows = []
        for p in self.resolve(target):
            site = p["m_site"] if p["m_site"] not in self.down_sites else p["r_site"]
            try:
                got = self._fw_query(site, PairDisplay(p["name"]))["pairs"]
            except CommandError:
                got = [{"name": p["name"], "group": p["group"], "state": "UNKNOWN",
                        "m": f"{p['m_site']}:{p['m_ldev']}", "r": f"{p['r_site']}:{p['r_ldev']}"}]
            rows.extend(got)
        return rows

    def pair_state(self, pair: str) -> str:
        rows = [r for r in self.pairdisplay(pair) if r["name"] == pair]
        if not rows:
            raise CommandError(f"no pair named {pair!r}")
        return rows[0]["state"]

    def pairsplit(self, target: str, delete: bool = False) -> dict:
        out = self._fw(self._master_of(target), PairSplit(target, delete))
        self._log("pairsplit", target=target, delete=delete)
        return out

    def pairresync(self, target: str, max_time_ns: int | None = None, method: str | None = None,
                   order: str | None = None, window: int | None = None, unit: str | None = None,
                   format_shortcut: bool | None = None) -> dict:
        """401: the recovery-copy instruction. Unset options come from the
        master site's SVP (402: T and the user's conditions)."""
        site = self._master_of(target)
        s = self.settings(site)
        opts = {"max_time_ns": max_time_ns or s["max_time"], "method": method or s["method"],
                "order": order or s["order"], "window": int(window or s["window"]),
                "unit": unit or s["unit"], "keep_raid5": s["keep_raid5"], "spares_usable": s["spares_usable"],
                "format_shortcut": s["format_shortcut"] if format_shortcut is None else format_shortcut}
        for key, value in (("method", opts["method"]), ("order", opts["order"]), ("unit", opts["unit"])):
            convert_setting(key, value)
        suspended = [r for r in self.pairdisplay(target) if r["state"] in ("PSUS", "PSUE")]
        self._check_save_area(target, suspended, opts, s["cache_save_threshold"])
        self._capture_suspension_images(target, {r["name"] for r in suspended})
        out = self._fw(site, PairResync(target=target, **opts))
        self._log("pairresync", target=target, **opts)
        for p in self.resolve(target):   # the unit a rollback of these pairs keeps consistent
            self.resync_units[p["group"]] = opts["unit"]
        return out

    def _check_save_area(self, target: str, suspended: list[dict], opts: dict, cache_tracks: int) -> None:
        """Refuse, before anything is sent, a protected copy whose remote save
        area (404's capacity under the user's conditions) cannot hold even
        what it needs at the least; a remote that is down is left to the copy
        itself (it times out and says so)."""
        for remote in sorted({self.pairs[r["name"]]["r_site"] for r in suspended}):
            if remote in self.down_sites or not self.rack.alive(f"{remote}.dkc"):
                continue
            needs = [int(r.get("diff_tracks") or 0) for r in suspended if self.pairs[r["name"]]["r_site"] == remote]
            need = copy_need_tracks(needs, opts["method"])
            rows_t, cache_t = save_capacity(self._fw_query(remote, Show("save-config"))["rows"], {
                "keep_raid5": opts["keep_raid5"], "spares_usable": opts["spares_usable"],
                "cache_save_threshold_tracks": cache_tracks})
            if need > rows_t + cache_t:
                raise CommandError(
                    f"pairresync {target}: the save area at {remote} holds {rows_t + cache_t} tracks "
                    f"({rows_t} on parity/spares, {cache_t} in cache), this copy needs {need}: allow spares "
                    "or parity, raise cache_save_threshold, or use --method none to copy unprotected")

    def horctakeover(self, target: str) -> dict:
        sites = sorted({p["r_site"] for p in self.resolve(target)})
        results = [self._fw(s, HorcTakeover(target)) for s in sites]
        self._log("horctakeover", target=target)
        return {"ok": True, "results": results}

    def _capture_suspension_images(self, target: str, suspended: set[str]) -> None:
        """Keep each suspended pair's remote image as it is before the
        recovery copy touches it: the image a rollback must restore."""
        for p in self.resolve(target):
            if p["name"] in suspended and p["r_site"] not in self.down_sites:
                self.suspension_images[p["name"]] = self.export_bytes(p["r_site"], p["r_ldev"])

    # -- settings ---------------------------------------------------------------------------
    def set(self, key: str, value: str, site: str | None = None) -> dict:
        if key.partition(".")[0] in self.links:
            return self._set_link(key, value)
        if key not in SETTABLE:
            raise CommandError(f"unknown setting {key!r} (known: {', '.join(sorted(SETTABLE))})")
        try:
            convert_setting(key, value)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        out = {}
        for s in sorted(self.sites) if site is None else [site]:
            if s in self.down_sites:
                continue
            out = self.rack.control(f"{s}.svp", {"cmd": "set", "key": key, "value": str(value)})
            if key in FIRMWARE_SETTINGS and self.rack.alive(f"{s}.dkc"):
                # conditions the DKC applies as it goes (1207 runs while suspended,
                # long before a pairresync would carry the setting)
                self._fw(s, SetParam(FIRMWARE_KEYS.get(key, key), convert_setting(key, value)))
        self._log("set", key=key, value=value)
        return out

    def _set_link(self, key: str, value: str) -> dict:
        """``set LINK.bandwidth 10Mb/s`` / ``set LINK.latency 2ms`` at run time."""
        link, _, what = key.partition(".")
        parse = {"bandwidth": units.rate_bps, "latency": units.time_ns}.get(what)
        if parse is None:
            raise CommandError(f"unknown link setting {key!r} ({link}.bandwidth, {link}.latency)")
        try:
            number = parse(value)
        except ValueError as exc:
            raise CommandError(f"{key}: {exc}") from None
        out = self.rack.control(link, {"cmd": "set", "key": what, "value": number})
        if not out.get("ok"):
            raise CommandError(out.get("error", f"{key}: refused"))
        self._log("set", key=key, value=value)
        return out

    def show(self, what: str, arg: str | None = None) -> dict:
        """``show X``: one of ``SHOW_VIEWS``; an LDEV argument where the view needs one."""
        if what not in SHOW_VIEWS:
            raise CommandError(f"unknown show {what!r} ({', '.join(show_usage())})")
        view, needs_ldev = SHOW_VIEWS[what]
        ldev = None
        if needs_ldev:
            if arg is None or not str(arg).isdigit():
                raise CommandError(f"show {what} needs an LDEV number")
            ldev = int(arg)
        return view(self, what, ldev)

    def _show_config(self, what: str, ldev: int | None) -> dict:
        return {"settings": self.settings(), "sites": {n: {k: v for k, v in s.items() if k != "ldevs"}
                                                       for n, s in self.sites.items()},
                "pairs": self.storage.pairs,
                "links": [self._link_now(ln) for ln in self.storage.links]}

    def _link_now(self, ln: dict) -> dict:
        """A link's config with its current bandwidth, latency and state (set at run time)."""
        if not self.rack.alive(ln["name"]):
            return {**ln, "up": False}
        q = self.rack.query(ln["name"], {})
        return {**ln, "bandwidth_bps": q["bandwidth_bps"], "latency_ns": q["latency_ns"], "up": q["up"]}

    def _show_nbd(self, what: str, ldev: int | None) -> dict:
        return {"exports": list(self.frontend_exports)}

    def _show_time(self, what: str, ldev: int | None) -> dict:
        return {"now_ns": self.now_ns, "now": units.fmt_ns(self.now_ns)}

    def _show_each_site(self, what: str, ldev: int | None) -> dict:
        """A firmware view of every DKC that is up, by site."""
        return {site: self._fw_query(site, Show(what)) for site in sorted(self.sites)
                if site not in self.down_sites}

    def _show_recovery_plan(self, what: str, ldev: int | None) -> dict:
        """Every site's running copies (Fig. 5 sessions and the remote's last
        outcome), plus, under ``groups``, step 404's plan computed now for
        each group as a ``pairresync GROUP`` would meet it."""
        out = self._show_each_site(what, ldev)
        out["groups"] = [self.recovery_plan(g) for g in sorted(self.groups)]
        return out

    def recovery_plan(self, group: str) -> dict:
        """Step 404 for ``group`` on demand, under the current settings: the
        remote's save places and their capacity, n (the most pairs copied at
        once) and what limits it, the tracks the suspended pairs would copy,
        and whether the copy would be refused for want of room."""
        g = self.groups[group]
        remote = g["remote"]
        if g["master"] in self.down_sites or remote in self.down_sites or not self.rack.alive(f"{remote}.dkc") \
                or not self.svp_up():
            down = g["master"] if g["master"] in self.down_sites or not self.svp_up() else remote
            return {"group": group, "master": g["master"], "remote": remote, "error": f"{down} is down"}
        s = self.settings()
        plan = {"group": group, "master": g["master"], "remote": remote, "method": s["method"],
                "keep_raid5": s["keep_raid5"], "spares_usable": s["spares_usable"],
                "cache_save_threshold": s["cache_save_threshold"]}
        rows = self.pairdisplay(group)
        suspended = [r for r in rows if r["state"] in ("PSUE", "PSUS")]
        config = self._fw_query(remote, Show("save-config"))
        opts = {"keep_raid5": s["keep_raid5"], "spares_usable": s["spares_usable"],
                "cache_save_threshold_tracks": s["cache_save_threshold"]}
        places = [{"place": f"{kind} row {i}", "kind": kind, "tracks": tracks,
                   "usable": (kind == "parity" and not s["keep_raid5"]) or (kind == "spare" and s["spares_usable"])}
                  for i, (kind, tracks) in enumerate(config["rows"])]
        rows_t, cache_t = save_capacity(config["rows"], opts)
        places.append({"place": "cache", "kind": "cache", "tracks": cache_t, "usable": cache_t > 0})
        counts = config.get("counts") or {}
        save_disks = (0 if s["keep_raid5"] else counts.get("parity_disks", 0)) + \
            (counts.get("spare_disks", 0) if s["spares_usable"] else 0)
        n = compute_n(counts["ldev_count"], counts["disk_count"], counts["parity_disks"], counts["spare_disks"],
                      s["keep_raid5"], s["spares_usable"]) if counts.get("disk_count") else len(rows)
        limits = (f"n = floor({counts.get('ldev_count')} LDEVs / {counts.get('disk_count')} disks x "
                  f"{save_disks} save disks) = {n}" if counts.get("disk_count") else "no disk counts: every pair")
        needs = [int(r.get("diff_tracks") or 0) for r in suspended]
        need = copy_need_tracks(needs, s["method"])
        refused = None
        if suspended and need > rows_t + cache_t:
            refused = (f"the save area holds {rows_t + cache_t} tracks, this copy needs {need}")
        return {**plan, "places": places, "capacity_tracks": rows_t + cache_t, "n": n, "n_limit": limits,
                "pairs": len(rows), "suspended": [r["name"] for r in suspended], "diff_tracks": sum(needs),
                "largest_pair_tracks": need, "pairs_at_once": min(n, len(suspended)) if n else 0,
                "refused": refused}

    def _show_master(self, what: str, ldev: int | None) -> dict:
        """A firmware view of one M-DEV at the default master."""
        return self._fw_query(self._default_master(), Show(what, ldev))

    def _show_disks(self, what: str, ldev: int | None) -> dict:
        return self.device_stats()["disks"]

    def _show_processes(self, what: str, ldev: int | None) -> dict:
        self._notice_deaths()
        return {"processes": self.rack.backend.process_table()}

    def _show_cache(self, what: str, ldev: int | None) -> dict:
        return {s: self.rack.query(f"{s}.dkc", {"q": "stats"}) for s in sorted(self.sites)
                if s not in self.down_sites}

    # -- faults ---------------------------------------------------------------------------------
    def fault_link(self, state: str, link: str | None = None) -> dict:
        if state not in ("up", "down"):
            raise CommandError(f"fault link expects up or down, got {state!r}")
        names = [link] if link else sorted(self.links)
        for n in names:
            if n not in self.links:
                raise CommandError(f"no link named {n!r} (known: {', '.join(sorted(self.links))})")
        out = {}
        for n in names:
            out[n] = self.rack.control(n, {"cmd": state})
            if not out[n].get("ok"):
                raise CommandError(out[n].get("error", "link command failed"))
        self._log(f"link.{state}", links=names)
        return out

    def fault_link_slow(self, factor: int, link: str | None = None) -> dict:
        """A degraded path: transfers take ``factor`` times as long (1 = normal)."""
        names = [link] if link else sorted(self.links)
        for n in names:
            if n not in self.links:
                raise CommandError(f"no link named {n!r} (known: {', '.join(sorted(self.links))})")
        if isinstance(factor, bool) or not isinstance(factor, int) or not 1 <= factor <= 1000:
            raise CommandError(f"slow factor must be an integer 1..1000, got {factor!r}")
        for n in names:
            self.rack.control(n, {"cmd": "slow", "factor": factor})
        self._log("link.slow", links=names, factor=factor)
        return {"ok": True}

    def _actor(self, proc: str) -> str:
        names = [a.name for a in self.spec.actors]
        if proc not in names:
            raise CommandError(f"no process named {proc!r} (e.g. {', '.join(names[:6])}, ...)")
        return proc

    def fault_kill(self, proc: str) -> dict:
        proc = self._actor(proc)
        if not self.rack.alive(proc):
            raise CommandError(f"{proc} is already down")
        self._save_host_log(proc)
        self.rack.kill(proc)
        self._log("kill", proc=proc)
        return {"ok": True}

    def fault_restart(self, proc: str) -> dict:
        proc = self._actor(proc)
        if self.rack.alive(proc):
            raise CommandError(f"{proc} is running")
        self.rack.restart(proc)
        self.down_sites.discard(proc.split(".")[0])
        self._log("restart", proc=proc)
        return {"ok": True}

    def fault_disk_fail(self, site: str, disk: int) -> dict:
        if site not in self.sites:
            raise CommandError(f"no site named {site!r}")
        lay = self.sites[site]
        if not 0 <= disk < lay["n_disks"]:
            raise CommandError(f"no disk {disk} at {site} (0..{lay['n_disks'] - 1})")
        self._site_up(site)
        out = self.rack.control(f"{site}.dkc", {"cmd": "disk_fail", "disk": disk})
        if not out.get("ok"):
            raise CommandError(out.get("error", "disk fail refused"))
        name = lay["disks"][disk]
        if self.rack.alive(name):
            self.rack.control(name, {"cmd": "fail"})
        self._log("disk.fail", site=site, disk=disk)
        return out

    def fault_site_down(self, site: str) -> dict:
        """The whole site is lost: every process of it dies at once."""
        if site not in self.sites:
            raise CommandError(f"no site named {site!r}")
        if site in self.down_sites:
            raise CommandError(f"site {site} is already down")
        self._save_host_log(f"{site}.host")
        lost = [a for a in self.spec.actors if a.name.startswith(site + ".") and self.rack.alive(a.name)]
        self._keep_device_rows(lost)
        for a in lost:
            self.rack.kill(a.name)
        self.down_sites.add(site)
        self._log("site.down", site=site)
        return {"ok": True}

    # -- load -------------------------------------------------------------------------------------
    def workload_start(self, name: str, spec: str) -> dict:
        tokens, site = [], None
        for tok in spec.split():
            if tok.startswith("site="):
                site = tok[5:]
            else:
                tokens.append(tok)
        site = site or self._default_master()
        if site not in self.sites:
            raise CommandError(f"no site named {site!r}")
        self._site_up(site)
        out = self.rack.control(f"{site}.host", {"cmd": "workload_start", "name": name, "spec": " ".join(tokens)})
        if not out.get("ok"):
            raise CommandError(out.get("error", "workload refused"))
        self._log("workload.start", name=name, site=site, spec=spec)
        return out

    def workload_stop(self, name: str) -> dict:
        errors = []
        for site in sorted(self.sites):
            if site in self.down_sites:
                continue
            out = self.rack.control(f"{site}.host", {"cmd": "workload_stop", "name": name})
            if out.get("ok"):
                self._log("workload.stop", name=name)
                return out
            errors.append(out.get("error"))
        raise CommandError(f"no running workload named {name!r}")

    def phase(self, name: str) -> None:
        for site in sorted(self.sites):
            if site not in self.down_sites:
                self.rack.control(f"{site}.host", {"cmd": "phase", "name": name})
        self.phase_marks.append((name, self.now_ns))

    # -- time -----------------------------------------------------------------------------------------
    def run(self, duration_ns: int) -> int:
        self.rack.run_for(duration_ns)
        self._notice_deaths()
        return self.now_ns

    def run_until(self, event: str, limit_ns: int = RUN_UNTIL_LIMIT_NS) -> int | None:
        if event.upper() == "IDLE":
            self.rack.run_until_idle(limit_ns)
            return self.now_ns
        known = set(SIGNAL_STEPS.values()) | set(SIGNAL_EVENTS.values())
        if event not in known:
            raise CommandError(f"unknown event {event!r} (IDLE, {', '.join(sorted(known))})")
        t = self.rack.run_until_event(event, limit_ns)
        self._notice_deaths()
        return t

    def wait_mirrored(self, target: str = "all", limit_ns: int = 60 * 10 ** 9) -> int:
        """Run until no pair of ``target`` is in its initial copy (COPY): the
        copy reads every track from the disks, so how long that takes
        depends on the disks, and callers wait for it instead of guessing."""
        end = self.now_ns + limit_ns
        while any(row["state"] == "COPY" for row in self.pairdisplay(target)):
            if self.now_ns >= end or self.rack.run_until_event("pair.mirroring", end - self.now_ns) is None:
                raise CommandError(f"pairs of {target} still copying after {units.fmt_ns(limit_ns)}")
        self._notice_deaths()
        return self.now_ns

    def wait_rollbacks(self, limit_ns: int = RUN_UNTIL_LIMIT_NS) -> int:
        """Run until no remote of a live site is rolling back a recovery copy
        (a rollback takes disk time, one restored track after another)."""
        end = self.now_ns + limit_ns
        while self.now_ns < end:
            busy = [s for s in sorted(self.sites) if s not in self.down_sites and self.rack.alive(f"{s}.dkc")
                    and self._fw_query(s, Show("save-area"))["rolling_back"]]
            if not busy or self.rack.run_until_event("recovery.rolled_back", end - self.now_ns) is None:
                break
        self._notice_deaths()
        return self.now_ns

    def _notice_deaths(self) -> None:
        for f in self.rack.faults:
            if f["fault"] == "died" and not f.get("seen"):
                f["seen"] = True
                self._log("died", proc=f["actor"])
                self.notices.append(f"notice: process {f['actor']} died at {units.fmt_ns(f['time_ns'])}")

    # -- data -------------------------------------------------------------------------------------------
    def export_bytes(self, site: str, ldev: int) -> bytes:
        self._site_up(site)
        out = self.rack.query(f"{site}.dkc", {"q": "export", "ldev": int(ldev)})
        if not out.get("ok"):
            raise CommandError(out.get("error", "export failed"))
        return bytes(out["data"])

    def read_track(self, site: str, ldev: int, track: int) -> bytes:
        """One track as the host would read it now (CommandError on data loss)."""
        self._site_up(site)
        spt = self.sites[site]["track_bytes"] // SECTOR_BYTES
        out = self.rack.query(f"{site}.dkc", {"q": "read", "ldev": int(ldev), "lba": int(track) * spt, "sectors": spt})
        if not out.get("ok"):
            raise CommandError(out.get("error", "read failed"))
        return bytes(out["data"])

    def lost_tracks(self, site: str) -> dict[int, list[dict]]:
        """Per LDEV of ``site``: runs of tracks with no right image
        ({first, last, why}); reads and exports of them fail."""
        self._site_up(site)
        out = self.rack.query(f"{site}.dkc", {"q": "lost"})
        return {int(k): v for k, v in sorted(out["ldevs"].items(), key=lambda kv: int(kv[0]))}

    def export(self, site: str, ldev: int, path: str) -> dict:
        data = self.export_bytes(site, ldev)
        Path(path).write_bytes(data)
        return {"ok": True, "bytes": len(data), "path": path}

    def _save_host_log(self, proc: str) -> None:
        """The write log is the test bench's record of what the host did: keep
        it when the host process is about to be killed."""
        if proc.endswith(".host") and self.rack.alive(proc):
            self._dead_host_logs[proc] = self.rack.query(proc, {"q": "writelog"})["rows"]
            self._dead_host_stats[proc.split(".")[0]] = self.rack.query(proc, {"q": "stats"})
            self._dead_host_raw[proc] = self.rack.query(proc, {"q": "rawlog"})

    def writelog(self) -> WriteLog:
        log = WriteLog()
        for site in sorted(self.sites):
            host = f"{site}.host"
            if not self.rack.alive(host):
                rows = self._dead_host_logs.get(host, [])
            else:
                rows = self.rack.query(host, {"q": "writelog"})["rows"]
                self._dead_host_logs[host] = rows
            for row in rows:
                log.add(WriteRecord.from_row(row))
        return log


    def rawlog(self) -> dict:
        """Per site, what its host wrote with client bytes (capture replays),
        which no stamp checker can judge: ``{"rows": [[site, ldev, lba,
        sectors, issue_ns, complete_ns, workload, seq], ...], "captures":
        {workload: {"file", "times": [[seq, issue_ns, complete_ns], ...]}}}``
        (kept for a host that was killed, like the write log)."""
        out = {}
        for site in sorted(self.sites):
            host = f"{site}.host"
            if self.rack.alive(host):
                self._dead_host_raw[host] = self.rack.query(host, {"q": "rawlog"})
            got = self._dead_host_raw.get(host)
            if got and (got["rows"] or got["captures"]):
                out[site] = got
        return out

    def record_verify(self, verdict: dict) -> dict:
        """Keep the last verdict of ``controllers.verify.rack_verify`` for the report."""
        self.last_verify = verdict
        self._log("verify", consistent=verdict["consistent"])
        return verdict

    def svp_up(self) -> bool:
        return self.rack.alive(f"{self._default_master()}.svp")

    # -- report ------------------------------------------------------------------------------------------
    def device_stats(self) -> dict:
        """Each device's figures, in the report section its registry entry names;
        a device lost with its site keeps the figures it had then, marked lost."""
        out: dict[str, dict] = {section: {} for section in REPORT_SECTIONS}
        t = max(1, self.now_ns)
        for a in self.spec.actors:
            dev = by_path(a.cls)
            if dev is None or dev.row is None:
                continue
            if self.rack.alive(a.name):
                out[dev.report][a.name] = self._device_row(dev, a.name, t)
            elif a.name in self._lost_device_rows:
                out[dev.report][a.name] = self._lost_device_rows[a.name]
        return out

    def _keep_device_rows(self, actors) -> None:
        """Before a site goes: each device's report row as it is, marked lost."""
        t = max(1, self.now_ns)
        for a in actors:
            dev = by_path(a.cls)
            if dev is not None and dev.row is not None:
                row = self._device_row(dev, a.name, t)
                self._lost_device_rows[a.name] = {**row, "failed": True, "lost_at_ns": self.now_ns}

    def _device_row(self, dev, name: str, now_ns: int) -> dict:
        """One device's report row, from the query its registry entry names."""
        return dev.row(self.rack.query(name, dict(dev.query)), now_ns)

    def host_stats(self) -> dict:
        """Per site: latencies per phase etc.; a host killed with its site
        keeps the figures it had when it died."""
        out = {}
        for site in sorted(self.sites):
            if self.rack.alive(f"{site}.host"):
                out[site] = self.rack.query(f"{site}.host", {"q": "stats"})
            elif site in self._dead_host_stats:
                out[site] = self._dead_host_stats[site]
        return out


#: ``show X``: name -> (view, needs an LDEV). The console's grammar, completion
#: and help, and the error for an unknown view, all read this one table.
SHOW_VIEWS: dict[str, tuple[Callable[[StorageRack, str, int | None], dict], bool]] = {
    "config": (StorageRack._show_config, False),
    "recovery-plan": (StorageRack._show_recovery_plan, False),
    "save-area": (StorageRack._show_each_site, False),
    "bitmap": (StorageRack._show_master, True),
    "queue": (StorageRack._show_master, True),
    "disks": (StorageRack._show_disks, False),
    "cache": (StorageRack._show_cache, False),
    "processes": (StorageRack._show_processes, False),
    "time": (StorageRack._show_time, False),
    "nbd": (StorageRack._show_nbd, False),
}


def show_usage() -> list[str]:
    return [f"{name} LDEV" if needs else name for name, (_view, needs) in SHOW_VIEWS.items()]


def latency_summary(lat_ns: list[int]) -> dict:
    if not lat_ns:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}
    a = np.asarray(lat_ns, dtype=np.float64) / 1000.0
    return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "p999": round(float(np.percentile(a, 99.9)), 3),
            "max": round(float(a.max()), 3)}
