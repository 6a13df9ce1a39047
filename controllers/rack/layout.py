"""Storage-rack configs (``[[site]]`` TOML) expanded into actors and links.

One site = a host CPU, a DKC (with cache and non-volatile memory), an SVP,
``groups`` RAID5 parity groups of ``raid`` small disks each, and ``spares``
spare disks. LDEVs are laid out first-fit over the groups. Sites are joined
by ``[[link]]`` actors (propagation from distance or latency, bandwidth,
per-command overhead). ``[[group]]`` tables form the pairs: LDEV i of the
master mirrors to LDEV i of the remote unless ``pairs`` lists them.

Actor names: ``<site>.host``, ``<site>.dkc``, ``<site>.svp``,
``<site>.disk<N>`` (spares numbered after the group members), and the link's
own name. Every default below cites its source.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from controllers.devices.registry import class_path
from emu import units
from emu.config import array_of_tables, build_generic, known_keys, load_config, table
from emu.params import ConfigError
from emu.spec import ActorSpec, LinkSpec, RackSpec, RegionSpec
from firmware.protocol import FENCES, METHODS, MODES, ORDERS, SECTOR_BYTES

MAX_SITES = 8
MAX_LDEVS_PER_SITE = 1024
MAX_DISKS_PER_SITE = 256
MAX_CACHE_BYTES = 4 << 30
NVM_BYTES = 512 << 20  # sparse; two slots for the firmware state (time-series queue data included)

# Defaults, with their sources.
SITE_DEFAULTS = {
    "track_size": "16KiB",      # logical track; patent's tracks are ~48 KiB (3390); smaller keeps tests fast
    "raid": "3D+1P",            # the patent's Fig. 2 shows nD+1P groups
    "groups": 1,
    "spares": 1,                # patent 0047 counts spares as save area
    "ldevs": 4,
    "ldev_size": "1MiB",
    "disk_preset": "hp97560",   # Ruemmler & Wilkes 1994 (configs/disks/hp97560.parv)
    "disk_model": None,         # or a DiskSim 4.0 .parv/.diskspecs, relative to the config file
    "thin": False,              # thin media: a never-written track is not stored (README "Sizes and thin media")
}
DKC_DEFAULTS = {
    "clock": "400MHz",          # order of a late-1990s DKC microprocessor (assumption, stated)
    "cycles_per_io": 20_000,    # 50 us per command at 400 MHz: typical of the era's channel command cost
    "cycles_per_kib": 2_000,    # 5 us per KiB moved through the controller (assumption, stated)
    "cycles_per_kib_xor": 1_000,  # parity XOR per KiB in a destage's read-modify-write (assumption, stated)
    "channel_latency": "10us",  # host <-> DKC channel, one way
    "cache_tracks": 4096,       # cache size in tracks (LRU for read hits)
    "cache_save_threshold": 8,  # tracks of saved data kept in cache before disks (patent 511/512)
    "disk_timeout": "2s",       # a disk that does not answer in this time is failed (SCSI-era command timeouts are seconds)
    "bus_latency": "5us",       # DKC <-> small disk, one way
}
LINK_DEFAULTS = {"bandwidth": "1Gb/s", "command_overhead": "20us", "distance": "100km"}
RECOVERY_DEFAULTS = {"max_time": "2s", "method": "save-old", "order": "bitmap", "window": 1,
                     "unit": "ldev", "keep_raid5": False, "spares_usable": True,
                     "format_shortcut": True}
PROPAGATION_NS_PER_KM = 5_000   # light in fibre, about 5 us/km (DESIGN section 4)
PORT_LATENCY_NS = 1_000         # DKC port into the link adapter (assumption, stated)


def _conv(fn, value, key, path):
    try:
        return fn(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key, path) from None


def _int(value, key, path, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"expected an integer {lo}..{hi}, got {value!r}", key, path)
    return value


def _raid(value, key, path) -> int:
    m = re.fullmatch(r"\s*(\d+)D\+1P\s*", str(value))
    if not m or not 2 <= int(m.group(1)) <= 15:
        raise ConfigError(f"expected a RAID5 shape like '3D+1P' (2..15 data disks), got {value!r}", key, path)
    return int(m.group(1))


def site_layout(name: str, raw: dict, path: str, prefix: str) -> dict:
    """Disks, groups, LDEV sizes and the media size per disk of one site."""
    s = {**SITE_DEFAULTS, **raw}
    track_bytes = _conv(units.size_bytes, s["track_size"], prefix + "track_size", path)
    if track_bytes % 4096 or not 4096 <= track_bytes <= (1 << 20):
        raise ConfigError("track size must be a multiple of 4KiB, 4KiB..1MiB", prefix + "track_size", path)
    n_data = _raid(s["raid"], prefix + "raid", path)
    groups = _int(s["groups"], prefix + "groups", path, 1, 32)
    spares = _int(s["spares"], prefix + "spares", path, 0, 16)
    n_ldevs = _int(s["ldevs"], prefix + "ldevs", path, 1, MAX_LDEVS_PER_SITE)
    ldev_bytes = _conv(units.size_bytes, s["ldev_size"], prefix + "ldev_size", path)
    if ldev_bytes % track_bytes or ldev_bytes <= 0:
        raise ConfigError(f"LDEV size must be a whole number of tracks ({track_bytes} B)", prefix + "ldev_size", path)
    disk_preset, disk_model = _disk(raw, s, path, prefix)
    ldev_tracks = ldev_bytes // track_bytes
    per_group = math.ceil(n_ldevs / groups)
    tracks_per_disk = math.ceil(per_group * ldev_tracks / n_data)
    n_disks = groups * (n_data + 1) + spares
    if n_disks > MAX_DISKS_PER_SITE:
        raise ConfigError(f"{n_disks} disks exceed {MAX_DISKS_PER_SITE} per site", prefix + "groups", path)
    if not isinstance(s["thin"], bool):
        raise ConfigError(f"expected true or false, got {s['thin']!r}", prefix + "thin", path)
    # no cap on capacity: thick media are checked against the memory that backs
    # them when the rack starts, thin media as their writes land (README "Sizes")
    media = n_disks * tracks_per_disk * track_bytes
    ldevs = [{"ldev": i, "tracks": ldev_tracks, "group": i // per_group} for i in range(n_ldevs)]
    return {"name": name, "track_bytes": track_bytes, "n_data": n_data, "groups": groups,
            "spares": spares, "tracks_per_disk": tracks_per_disk, "n_disks": n_disks,
            "ldevs": ldevs, "disk_preset": disk_preset, "disk_model": disk_model,
            "thin": s["thin"], "media_bytes": media, "key_prefix": prefix,
            "disks": [f"{name}.disk{i}" for i in range(n_disks)]}


def thin_map_bytes(st: dict) -> int:
    """A site's thin map: per group a byte per logical track and per stripe."""
    return st["groups"] * (st["n_data"] + 1) * st["tracks_per_disk"]


def _disk(raw: dict, s: dict, path: str, prefix: str) -> tuple[str, str]:
    """(preset, model path) of a site's disks: a preset name, or a DiskSim
    file (absolute path, checked by loading it).  Giving both is an error."""
    from controllers.devices.disk.disksim import SpecError, load
    from controllers.devices.disk.model import PRESETS
    model = s.get("disk_model")
    if model is None:
        if not isinstance(s["disk_preset"], str) or s["disk_preset"] not in PRESETS:
            raise ConfigError(f"unknown disk preset (known: {', '.join(sorted(PRESETS))})",
                              prefix + "disk_preset", path)
        PRESETS[s["disk_preset"]]   # parsed once here, before the actor processes fork (a nearline file takes 0.3 s)
        return s["disk_preset"], ""
    if "disk_preset" in raw:
        raise ConfigError("give disk_preset or disk_model, not both", prefix + "disk_model", path)
    if not isinstance(model, str) or not model:
        raise ConfigError(f"expected the path of a DiskSim .parv or .diskspecs file, got {model!r}",
                          prefix + "disk_model", path)
    target = (Path(path).parent / model).resolve()
    if not target.is_file():
        raise ConfigError(f"no such file {target}", prefix + "disk_model", path)
    try:
        load(target)
    except SpecError as exc:
        raise ConfigError(str(exc), prefix + "disk_model", path) from None
    return "", str(target)


@dataclass(frozen=True)
class StorageLayout:
    """What a ``[[site]]`` config says beyond the actors and links: the
    rack facade, the console and the report read it (never the devices,
    which get their own parameters)."""
    sites: dict       # site name -> layout (disks, groups, LDEV extents, track size)
    links: list       # one dict per inter-site link (name, ends, propagation, bandwidth)
    pairs: list       # one dict per pair (name, group, master/remote site and LDEV)
    groups: dict      # group name -> {"pairs", "master", "remote", "mode", ...}
    recovery: dict    # the [recovery] settings with defaults filled in
    dkc: dict         # the [dkc] cost parameters with defaults filled in


def load_storage_config(path, seed: int | None = None) -> tuple[RackSpec, StorageLayout]:
    """Load a ``[[site]]`` config: the substrate's RackSpec and the storage layout."""
    built: list[StorageLayout] = []

    def expand(doc: dict, where: str) -> RackSpec:
        if "site" not in doc:   # a generic rack: its own errors first, then "not storage"
            return build_generic(doc, where)
        spec, layout = build_spec(doc, where)
        built.append(layout)
        return spec

    spec = load_config(path, seed, expand)
    if not built:
        raise ConfigError("not a storage rack: no [[site]] tables (a generic [[actor]] rack "
                          "runs with the substrate's tools, not the storage console)", "site", str(path))
    return spec, built[0]


def build_spec(doc: dict, path: str) -> tuple[RackSpec, StorageLayout]:
    known_keys(doc, {"rack", "defaults", "dkc", "site", "link", "group", "recovery"}, "", path)
    rack = table(doc, "rack", path)
    known_keys(rack, {"name", "seed", "quantum", "description"}, "rack.", path)
    seed = rack.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"expected a non-negative integer seed, got {seed!r}", "rack.seed", path)
    defaults = table(doc, "defaults", path)
    known_keys(defaults, set(SITE_DEFAULTS), "defaults.", path)
    dkc = {**DKC_DEFAULTS, **table(doc, "dkc", path)}
    known_keys(dkc, set(DKC_DEFAULTS), "dkc.", path)
    recovery = {**RECOVERY_DEFAULTS, **table(doc, "recovery", path)}
    known_keys(recovery, set(RECOVERY_DEFAULTS), "recovery.", path)
    sites_raw = array_of_tables(doc, "site", path)
    if not 1 <= len(sites_raw) <= MAX_SITES:
        raise ConfigError(f"expected 1..{MAX_SITES} [[site]] tables, got {len(sites_raw)}", "site", path)
    sites = {}
    for i, s in enumerate(sites_raw):
        known_keys(s, {"name", *SITE_DEFAULTS}, f"site[{i}].", path)
        name = s.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,15}", name or ""):
            raise ConfigError("expected a site name of lower-case letters/digits (max 16)", f"site[{i}].name", path)
        if name in sites:
            raise ConfigError(f"duplicate site {name!r}", f"site[{i}].name", path)
        sites[name] = site_layout(name, {**defaults, **{k: v for k, v in s.items() if k != "name"}},
                                  path, f"site[{i}].")
    for name, st in sites.items():
        cache_bytes = dkc["cache_tracks"] * st["track_bytes"] if isinstance(dkc["cache_tracks"], int) else 0
        if cache_bytes > MAX_CACHE_BYTES:
            raise ConfigError(f"cache of {cache_bytes} bytes at site {name} exceeds {MAX_CACHE_BYTES} "
                              "(cache_tracks x track_size)", "dkc.cache_tracks", path)
    links = _links(doc, sites, path)
    pairs, groups = _pairs(doc, sites, path)
    rec = _recovery(recovery, path)
    dkc_typed = _dkc(dkc, path)
    return _assemble(rack, seed, path, sites, links, pairs, groups, rec, dkc_typed)


def _dkc(dkc: dict, path: str) -> dict:
    return {"clock_hz": _conv(units.freq_hz, dkc["clock"], "dkc.clock", path),
            "cycles_per_io": _int(dkc["cycles_per_io"], "dkc.cycles_per_io", path, 0, 10 ** 9),
            "cycles_per_kib": _int(dkc["cycles_per_kib"], "dkc.cycles_per_kib", path, 0, 10 ** 9),
            "cycles_per_kib_xor": _int(dkc["cycles_per_kib_xor"], "dkc.cycles_per_kib_xor", path, 0, 10 ** 9),
            "channel_latency_ns": max(1, _conv(units.time_ns, dkc["channel_latency"], "dkc.channel_latency", path)),
            "bus_latency_ns": max(1, _conv(units.time_ns, dkc["bus_latency"], "dkc.bus_latency", path)),
            "cache_tracks": _int(dkc["cache_tracks"], "dkc.cache_tracks", path, 0, 1 << 18),
            "cache_save_threshold": _int(dkc["cache_save_threshold"], "dkc.cache_save_threshold", path, 0, 1 << 20),
            "disk_timeout_ns": _conv(units.time_ns, dkc["disk_timeout"], "dkc.disk_timeout", path)}


def _links(doc, sites, path) -> list[dict]:
    out = []
    for i, ln in enumerate(array_of_tables(doc, "link", path)):
        known_keys(ln, {"name", "a", "b", "distance", "latency", *LINK_DEFAULTS}, f"link[{i}].", path)
        ln = {**LINK_DEFAULTS, **ln}
        for end in ("a", "b"):
            if not isinstance(ln.get(end), str) or ln.get(end) not in sites:
                raise ConfigError(f"expected a site name ({', '.join(sites)}), got {ln.get(end)!r}", f"link[{i}].{end}", path)
        if "latency" in ln:
            prop = _conv(units.time_ns, ln["latency"], f"link[{i}].latency", path)
        else:
            prop = _conv(units.distance_m, ln["distance"], f"link[{i}].distance", path) * PROPAGATION_NS_PER_KM // 1000
        if prop <= 0:
            raise ConfigError("link propagation must be > 0", f"link[{i}].latency", path)
        name = ln.get("name", f"link{i}")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name) or name in sites:  # noqa: E501
            raise ConfigError("expected a link name of letters, digits, _ and - (not a site name)",
                              f"link[{i}].name", path)
        out.append({"name": name, "a": ln["a"], "b": ln["b"], "propagation_ns": prop,
                    "bandwidth_bps": _conv(units.rate_bps, ln["bandwidth"], f"link[{i}].bandwidth", path),
                    "overhead_ns": _conv(units.time_ns, ln["command_overhead"], f"link[{i}].command_overhead", path)})
    return out


def _pairs(doc, sites, path) -> tuple[list[dict], dict]:
    pairs, groups, seen = [], {}, set()
    for i, g in enumerate(array_of_tables(doc, "group", path)):
        known_keys(g, {"name", "master", "remote", "ldevs", "pairs", "mode", "fence"}, f"group[{i}].", path)
        gname = g.get("name", f"g{i}")
        if not isinstance(gname, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", gname):
            raise ConfigError("expected a group name of letters, digits, _ and -", f"group[{i}].name", path)
        for end in ("master", "remote"):
            if not isinstance(g.get(end), str) or g.get(end) not in sites:
                raise ConfigError(f"expected a site name, got {g.get(end)!r}", f"group[{i}].{end}", path)
        m, r = g["master"], g["remote"]
        ldevs, listed = g.get("ldevs", []), g.get("pairs")
        if not isinstance(ldevs, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in ldevs):
            raise ConfigError(f"expected a list of LDEV numbers, got {ldevs!r}", f"group[{i}].ldevs", path)
        if listed is not None and (not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed)):
            raise ConfigError("expected an array of tables {name, m_ldev, r_ldev}", f"group[{i}].pairs", path)
        for key, allowed in (("mode", MODES), ("fence", FENCES)):
            if g.get(key, allowed[0] if key == "mode" else "never") not in allowed:
                raise ConfigError(f"expected one of {', '.join(allowed)}, got {g.get(key)!r}", f"group[{i}].{key}", path)
        entries = listed or [{"m_ldev": x, "r_ldev": x} for x in ldevs]
        if not entries:
            raise ConfigError("a group needs 'ldevs' or 'pairs'", f"group[{i}]", path)
        names = []
        for j, e in enumerate(entries):
            ml, rl = e.get("m_ldev"), e.get("r_ldev", e.get("m_ldev"))
            if isinstance(ml, bool) or isinstance(rl, bool):
                raise ConfigError("expected LDEV numbers, got true/false", f"group[{i}].pairs[{j}]", path)
            for which, ld, site in (("m_ldev", ml, m), ("r_ldev", rl, r)):
                if not isinstance(ld, int) or not 0 <= ld < len(sites[site]["ldevs"]):
                    raise ConfigError(f"no LDEV {ld!r} at site {site}", f"group[{i}].pairs[{j}].{which}", path)
            if (r, rl) in seen:
                raise ConfigError(f"remote LDEV {r}:{rl} is in two pairs", f"group[{i}].pairs[{j}]", path)
            seen.add((r, rl))
            name = e.get("name", f"p{len(pairs)}")
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name):
                raise ConfigError("expected a pair name of letters, digits, _ and -", f"group[{i}].pairs[{j}].name", path)
            pairs.append({"name": name, "group": gname, "m_site": m, "m_ldev": ml, "r_site": r, "r_ldev": rl})
            names.append(name)
        groups[gname] = {"master": m, "remote": r, "pairs": names, "mode": g.get("mode", "sync"),
                         "fence": g.get("fence", "never")}
    return pairs, groups


def _recovery(rec: dict, path: str) -> dict:
    out = dict(rec)
    out["max_time_ns"] = _conv(units.time_ns, rec["max_time"], "recovery.max_time", path)
    for key, allowed in (("method", METHODS), ("order", ORDERS),
                         ("unit", ("ldev", "group"))):
        if rec[key] not in allowed:
            raise ConfigError(f"expected one of {', '.join(allowed)}, got {rec[key]!r}", f"recovery.{key}", path)
    out["window"] = _int(rec["window"], "recovery.window", path, 1, 4096)
    for key in ("keep_raid5", "spares_usable", "format_shortcut"):
        if not isinstance(rec[key], bool):
            raise ConfigError(f"expected true or false, got {rec[key]!r}", f"recovery.{key}", path)
    return out


def _assemble(rack, seed, path, sites, links, pairs, groups, rec, dkc) -> RackSpec:
    actors, lks, regions = [], [], []
    link_of: dict[str, dict[str, str]] = {s: {} for s in sites}
    for ln in links:
        link_of[ln["a"]][ln["b"]] = ln["name"]
        link_of[ln["b"]][ln["a"]] = ln["name"]
    for host_index, (name, st) in enumerate(sites.items()):
        _site_actors(name, st, dkc, rec, pairs, link_of[name], host_index, actors, lks, regions)
    for ln in links:
        actors.append(ActorSpec(ln["name"], class_path("link"), {
            "a_site": ln["a"], "b_site": ln["b"], "propagation": ln["propagation_ns"],
            "bandwidth_bps": ln["bandwidth_bps"], "overhead": ln["overhead_ns"]}))
        for end in (ln["a"], ln["b"]):
            # into the link: the DKC's port; out of it: the fibre, whose
            # propagation is the scheduler's lookahead between the sites
            lks.append(LinkSpec(f"{end}.dkc", ln["name"], PORT_LATENCY_NS, directed=True))
            lks.append(LinkSpec(ln["name"], f"{end}.dkc", ln["propagation_ns"], directed=True))
    quantum = _conv(units.time_ns, rack.get("quantum", "1ms"), "rack.quantum", path)
    layout = StorageLayout(sites=sites, links=links, pairs=pairs, groups=groups, recovery=rec, dkc=dkc)
    return RackSpec(str(rack.get("name", "rack")), seed, actors, lks, regions, quantum, source=path), layout


def _site_actors(name, st, dkc, rec, pairs, peers, host_index, actors, lks, regions) -> None:
    media_bytes = st["tracks_per_disk"] * st["track_bytes"]
    for d in st["disks"]:
        regions.append(RegionSpec(f"{d}.media", media_bytes))
        role = "spare" if int(d.rsplit("disk", 1)[1]) >= st["groups"] * (st["n_data"] + 1) else "member"
        actors.append(ActorSpec(d, class_path("disk"), {
            "preset": st["disk_preset"] or "hp97560", "model": st["disk_model"],
            "role": role, "dkc": f"{name}.dkc"}, [f"{d}.media"]))
        lks.append(LinkSpec(f"{name}.dkc", d, dkc["bus_latency_ns"]))
    regions.append(RegionSpec(f"{name}.dkc.nvm", NVM_BYTES))
    if st["thin"]:   # written flag per logical track and used flag per stripe, per group (RaidGroup.thin_map_bytes)
        regions.append(RegionSpec(f"{name}.dkc.thin", thin_map_bytes(st)))
    regions.append(RegionSpec(f"{name}.dkc.cache", max(1, dkc["cache_tracks"]) * st["track_bytes"]))
    site_pairs = [p for p in pairs if name in (p["m_site"], p["r_site"])]
    actors.append(ActorSpec(f"{name}.dkc", class_path("dkc"), {
        "site": name, "layout": st, "cost": dkc, "pairs": site_pairs, "peers": peers,
        "recovery": {k: rec[k] for k in ("keep_raid5", "spares_usable", "format_shortcut")}},
        [f"{d}.media" for d in st["disks"]] + [f"{name}.dkc.nvm", f"{name}.dkc.cache"]
        + ([f"{name}.dkc.thin"] if st["thin"] else [])))
    actors.append(ActorSpec(f"{name}.host", class_path("host"), {
        "site": name, "dkc": f"{name}.dkc", "host_index": host_index,
        "ldev_sectors": [ld["tracks"] * st["track_bytes"] // SECTOR_BYTES for ld in st["ldevs"]]}))
    lks.append(LinkSpec(f"{name}.host", f"{name}.dkc", dkc["channel_latency_ns"]))
    svp_settings = {**rec, "cache_save_threshold": dkc["cache_save_threshold"]}
    actors.append(ActorSpec(f"{name}.svp", class_path("svp"), {"site": name, "recovery": svp_settings}))
    lks.append(LinkSpec(f"{name}.svp", f"{name}.dkc", 10_000))
