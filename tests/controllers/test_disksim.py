"""Tests for controllers.devices.disk.disksim (DiskSim 4.0 parameter files).

What they prove:
- the parser reads DiskSim's grammar: named and nested blocks, lists of
  numbers and of blocks, bare words, ``source`` includes relative to the
  including file (top level and as a value), comments anywhere;
- each kind of error (unreadable file, missing include, unclosed block,
  missing '=', duplicate key, bad value type, missing key, unsupported seek
  type or sparing scheme, bad .seek table) names file:line and the key;
- the layouts the validation drives use map LBNs as DiskSim does (block
  counts per sparing scheme; slipped tracks skipped; per-range spares; zone
  gaps), and no two LBNs share a physical sector;
- the presets load through the parser (configs/disks) with the figures
  cited in them;
- every drive in ../shared/data/disksim replays its own validation trace
  with a demerit <= 2x DiskSim's own figure (skipped when ../shared is
  absent), parameters taken from the drive's files only;
- the controller timing the files describe: minimum seek delay, write-back,
  read water mark, and a write whose media outrun the bus losing a turn;
- ``emu disk replay --disk-spec`` works and reports errors in one line;
- ``disk_model`` in a rack config runs end to end, is relative to the
  config file, and is exclusive with ``disk_preset``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from controllers.cli import main as emu_main
from controllers.devices.disk import disksim
from controllers.devices.disk.disksim import SpecError, parse
from controllers.devices.disk.model import PRESETS, DiskModel, DiskParams, Zone
from controllers.operator import disk_replay
from controllers.rack.layout import load_storage_config
from emu.params import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NS_PER_MS = 1_000_000
DATA = ROOT.parent / "shared" / "data" / "disksim"
DISKS = ROOT / "configs" / "disks"

# DiskSim's own demerit for each drive, as the issue and ../shared/data/disksim/README.md give it
DISKSIM_DEMERIT_MS = {"st41601n": 0.075, "hp_c2247a": 0.090, "hp_c2490a": 0.254, "cheetah4LP": 0.318}
assert DISKSIM_DEMERIT_MS == disk_replay.DISKSIM_DEMERIT_MS


def need_data(name: str) -> Path:
    parv = DATA / f"{name}.parv"
    if not parv.is_file():
        pytest.skip(f"DiskSim validation data not found at {parv} (shared/ not beside the repo)")
    return parv


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# ------------------------------------------------------------------ grammar
def test_parser_reads_blocks_lists_sources_and_comments(tmp_path):
    write(tmp_path, "sub/inner.model", """# a sourced file defines one block
dm_disk Inner { Number of cylinders = 7,   # trailing comment
  Layout Model = dm_layout_g1 { Zones = [ dm_layout_g1_zone { First cylinder number = 0 },
                                          dm_layout_g1_zone { First cylinder number = 4 } ] }
}
""")
    write(tmp_path, "sub/d.diskspecs", "disksim_disk D {\n  Model = source inner.model,\n"
                                       "  Segment size (in blks) = 384,\n  Mode = Parts\n}\n")
    top = write(tmp_path, "top.parv", """
disksim_bus B { Read block transfer time = 0.5, list = [ 1, -2, 3.5e1 ], empty = [] }
source sub/d.diskspecs   # relative to this file
instantiate [ bus1, disk0 ] as B
topology disksim_bus bus1 [ disksim_disk disk0 [] ]
""")
    spec = parse(top)
    b = spec.blocks["B"]
    assert b.entry("Read block transfer time").value == 0.5
    assert b.entry("list").value == [1, -2, 35.0] and b.entry("empty").value == []
    d = spec.blocks["D"]
    assert d.entry("segment  SIZE (in blks)").value == 384          # keys: case and blanks free
    assert d.entry("Mode").value == "Parts"
    model = d.entry("Model").value
    assert model.type == "dm_disk" and model.name == "Inner"
    assert model.entry("Number of cylinders").line == 2
    assert model.file.endswith("sub/inner.model")
    zones = model.entry("Layout Model").value.entry("Zones").value
    assert [z.entry("First cylinder number").value for z in zones] == [0, 4]
    assert zones[1].line == 4
    assert spec.instances["disk0"][0] == "B"
    assert spec.topology == [("disksim_bus", "bus1", [("disksim_disk", "disk0", [])])]


@pytest.mark.parametrize("text, needle", [
    ("disksim_disk D {\n  Key = 1,\n", ":3: block disksim_disk D opened at line 1 is not closed"),
    ("disksim_disk D {\n  Key 1\n}\n", ":3: expected '=' after key 'Key 1'"),
    ("disksim_disk D {\n  Key = 1,\n  key = 2\n}\n", ":3: key 'key' given twice"),
    ("disksim_disk D {\n  Key = [ 1, 2 \n}\n", ":3: key 'Key': expected ',' or ']'"),
    ("disksim_disk D {\n  Key = 1 2 = 3\n}\n", ":2: key 'Key': expected ',' or '}' after the value"),
    ("source nothere.diskspecs\n", ":1: source nothere.diskspecs: no such file"),
    ("disksim_disk D {\n  Model = source nothere.model\n}\n", ":2: source nothere.model: no such file"),
    ("= 3\n", ":1: expected a definition"),
])
def test_syntax_errors_name_file_line_and_key(tmp_path, text, needle):
    f = write(tmp_path, "bad.diskspecs", text)
    with pytest.raises(SpecError) as exc:
        parse(f)
    assert str(exc.value).startswith(str(f)), exc.value
    assert needle in str(exc.value), exc.value


def test_source_loop_is_an_error(tmp_path):
    f = write(tmp_path, "a.parv", "source a.parv\n")
    with pytest.raises(SpecError, match=r"a\.parv:1: 'source a\.parv' nested more than"):
        parse(f)


def test_unreadable_file_is_named(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.parv: cannot read"):
        parse(tmp_path / "nope.parv")


# ------------------------------------------------------------------ mapping errors
def _hp97560_text() -> str:
    return (DISKS / "hp97560.parv").read_text()


@pytest.mark.parametrize("old, new, needle", [
    ("Rotation speed (in rpms) = 4002", "Rotation speed (in rpms) = fast",
     "key 'Rotation speed (in rpms)': expected a number, got 'fast'"),
    ("Seek type = hpl", "Seek type = linear", "key 'Seek type': seek type 'linear' not supported"),
    ("Sparing scheme used = 0,", "Sparing scheme used = 5,",
     "key 'Sparing scheme used': sparing scheme 5 not supported"),
    ("Blocks per track = 72,", "", "missing key 'Blocks per track'"),
    ("slips = [],", "slips = [ a ],", "key 'slips': expected a list of integers"),
    ("defects = []", "defects = [ 1 ]", "key 'defects': defects are (defective, replacement) pairs"),
    ("Number of cylinders = 1962,", "Number of cylinders = 1962.5,",
     "key 'Number of cylinders': expected an integer"),
])
def test_mapping_errors_name_file_line_and_key(tmp_path, old, new, needle):
    text = _hp97560_text()
    assert old in text
    f = write(tmp_path, "d.parv", text.replace(old, new))
    with pytest.raises(SpecError) as exc:
        disksim.load(f)
    msg = str(exc.value)
    assert needle in msg, msg
    assert msg.startswith(f"{f}:"), msg
    line = int(msg.split(":")[1])
    assert 1 <= line <= len(text.splitlines())


def test_bad_seek_table_names_its_line(tmp_path):
    src = DISKS / "st41601n.parv"
    for f in ("st41601n.parv", "st41601n.diskspecs", "st41601n_validate.model", "COPYING.disksim"):
        write(tmp_path, f, (DISKS / f).read_text())
    seek = (DISKS / "st41601n_validate.seek").read_text().splitlines()
    seek[5] = "5, fast"
    write(tmp_path, "st41601n_validate.seek", "\n".join(seek) + "\n")
    with pytest.raises(SpecError, match=r"st41601n_validate\.seek:6: key 'Full seek curve': "
                                        r"expected 'distance, ms'"):
        disksim.load(tmp_path / src.name)


def test_verbose_report_lists_ignored_keys(tmp_path):
    text = _hp97560_text().replace("Print stats = 0", "Print stats = 0,\n   Colour of the case = blue")
    f = write(tmp_path, "d.parv", text)
    report = disksim.MapReport()
    disksim.load(f, report)
    hits = [line for line in report.ignored if "Colour of the case = 'blue'" in line]
    assert len(hits) == 1 and hits[0].startswith(f"{f}:")


# ------------------------------------------------------------------ layouts
def _two_zone(sparing, **kw) -> DiskParams:
    zones = (Zone(0, 9, 10, 1, 2, 0, kw.pop("slips0", ()), kw.pop("spares", 2),
                  kw.pop("dead", 0), kw.pop("defects", ())),
             Zone(11, 19, 8, 1, 2, 0, (), 2))          # cylinder 10 is a gap
    return DiskParams(name="t", cylinders=20, surfaces=2, zones=zones, rpm=6000, sparing=sparing,
                      spare_range_cyl=kw.pop("rng", 1), surface_order=kw.pop("order", "normal"), **kw)


@pytest.mark.parametrize("sparing, rng, expect", [
    ("none", 1, 10 * 2 * 10 + 9 * 2 * 8),
    ("track", 1, (20 - 2) * 10 + (18 - 2) * 8),              # 2 spare tracks per zone
    ("sectpercyl", 1, 10 * (20 - 2) + 9 * (16 - 2)),
    ("sectpercyl_sliptoend", 1, 10 * (20 - 2) + 9 * (16 - 2)),
    ("sectatend", 1, 10 * (20 - 2) + 9 * (16 - 2)),
    ("sectpertrack", 1, 10 * 2 * 8 + 9 * 2 * 6),
    ("range", 5, 200 - 2 * 2 + 144 - 2 * 1),                  # 9 // 5 = 1 range in zone 2
    ("zone", 1, 200 - 2 + 144 - 2),
])
def test_block_count_per_sparing_scheme(sparing, rng, expect):
    assert DiskModel(_two_zone(sparing, rng=rng)).lba_count == expect


@pytest.mark.parametrize("sparing, rng, order, seed", [(s, r, o, seed) for s, r in
                         (("none", 1), ("track", 1), ("sectpercyl", 1), ("sectpertrack", 1),
                          ("sectpercyl_sliptoend", 1), ("sectatend", 1), ("range", 5), ("zone", 1))
                         for o in ("normal", "serpentine-zone") for seed in (1, 2)])
def test_every_lbn_maps_to_its_own_sector_inside_its_zone(sparing, rng, order, seed):
    r = random.Random(seed)
    slips = tuple(sorted(r.sample(range(18), 1))) if sparing == "track" else \
        tuple(sorted(r.sample(range(150), 2)))
    params = _two_zone(sparing, rng=rng, slips0=slips, order=order)
    disk = DiskModel(params)
    seen = set()
    for lba in range(disk.lba_count):
        cyl, head, sector = disk.geometry(lba)
        z = params.zones[0] if cyl <= 9 else params.zones[1]
        assert z.first_cyl <= cyl <= z.last_cyl and cyl != 10, (seed, lba, cyl)
        assert 0 <= head < 2 and 0 <= sector < z.sectors_per_track
        assert (cyl, head, sector) not in seen, f"seed={seed} lba={lba} reuses {(cyl, head, sector)}"
        seen.add((cyl, head, sector))


def test_track_sparing_skips_slipped_track_and_deadspace():
    p = _two_zone("track", slips0=(1,), dead=10)             # 10 blocks = track 0 is dead space
    disk = DiskModel(p)
    assert disk.geometry(0) == (1, 0, 0)     # track 0 dead, track 1 slipped -> track 2 = cyl 1 head 0
    assert disk.geometry(10) == (1, 1, 0)


def test_slip_to_end_pushes_later_cylinders_and_serpentine_reverses_odd_cylinders():
    plain = DiskModel(_two_zone("sectatend", spares=0))
    slipped = DiskModel(_two_zone("sectatend", spares=0, slips0=(5,)))
    assert slipped.lba_count == plain.lba_count - 1
    assert slipped.geometry(5) == plain.geometry(6)          # the slipped sector is skipped
    assert slipped.geometry(20) == plain.geometry(21)        # and the next cylinder moves on too
    serp = DiskModel(_two_zone("none", spares=0, order="serpentine-zone"))
    assert serp.geometry(20) == (1, 1, 0)                    # cylinder 1 starts on the last surface
    assert serp.geometry(40) == (2, 0, 0)


@pytest.mark.parametrize("mode, alone, in_stream", [("track", False, False), ("segment", True, True),
                                                   ("dec", False, True)])
def test_read_ahead_stops_where_the_mode_says(mode, alone, in_stream):
    """After a read that ends mid-track, is the next track prefetched?  "track"
    never, "segment" always (room permitting), "dec" only inside a stream."""
    params = DiskParams(name="t", cylinders=10, surfaces=2, zones=((0, 9, 20),), rpm=6000,
                        sparing="none", cache_segments=1, cache_segment_sectors=64, read_ahead=True,
                        read_ahead_mode=mode)
    idle_ns = 50 * NS_PER_MS                               # long enough for any prefetch
    for stream, expect in ((False, alone), (True, in_stream)):
        disk = DiskModel(params)
        t = disk.access(0, "R", 4, 4).done_ns + idle_ns        # ends mid-track 0
        if stream:
            res = disk.access(t, "R", 8, 4)                     # same track: always prefetched
            assert res.cache_hit == "hit", (mode, res)
            t = res.done_ns + idle_ns
        nxt = disk.access(t, "R", 20, 2)                        # first blocks of track 1
        assert (nxt.cache_hit != "miss") == expect, (mode, stream, nxt)


def test_defect_is_remapped_unless_it_names_itself():
    moved = DiskModel(_two_zone("sectpercyl", defects=((0, 19),)))
    assert moved.geometry(0) == (0, 1, 9)
    kept = DiskModel(_two_zone("sectpercyl", defects=((0, 0),)))
    assert kept.geometry(0) == (0, 0, 0)


def test_cheetah_layout_matches_disksim_block_count():
    params = disksim.load(need_data("cheetah4LP"))
    disk = DiskModel(params)
    # DiskSim sums blocks per band (layout_g1_load.c); the model file's "Block
    # count" (8887200) is overridden the same way there.
    per = [(1344, 195), (1104, 187), (1092, 176), (864, 166), (816, 155), (732, 145), (623, 131)]
    assert disk.lba_count == sum(n * 8 * spt - 108 * (n // 12) for n, spt in per)
    assert params.sparing == "range" and params.spare_range_cyl == 12
    cyls = {disk.geometry(lba)[0] for lba in range(0, disk.lba_count, 997)}
    assert not cyls & {1344, 2449, 3542, 4407, 5224, 5957}     # gaps between zones hold no LBN


# ------------------------------------------------------------------ presets
def test_presets_load_through_the_parser():
    assert sorted(PRESETS) == ["exos7e10", "hp97560", "st41601n"]
    hp = PRESETS["hp97560"]
    assert (hp.cylinders, hp.surfaces, hp.rpm, hp.head_switch_ms) == (1962, 19, 4002, 1.6)
    assert (hp.seek_boundary_cyl, hp.seek_a_ms, hp.seek_b_ms, hp.seek_c_ms, hp.seek_e_ms) == \
        (383, 3.24, 0.400, 8.00, 0.008)
    assert hp.bus_ns_per_sector == 51_200 and hp.cache_segments == 0
    st = PRESETS["st41601n"]
    assert DiskModel(st).lba_count == 2676846 and st.bus_ns_per_sector == 95_520
    assert st.cache_segments == 1 and st.cache_segment_sectors == 384 and st.read_ahead
    direct = disksim.load(DISKS / "st41601n.parv")
    assert direct.zones == st.zones and direct.seek_table_ms == st.seek_table_ms


def test_nearline_preset_matches_its_datasheet():
    """configs/disks/exos7e10.parv: the figures its comments cite (7200 rpm,
    2 TB of 512-byte LBAs, 256 MB cache, ~8.5 ms average seek, ~215 MB/s at
    the outer diameter), and room for a terabyte rack's disk."""
    ex = PRESETS["exos7e10"]
    disk = DiskModel(ex)
    assert ex.rpm == 7200 and abs(disk.revolution_ns - 60e9 / 7200) < 1
    assert 3_907_029_168 <= disk.lba_count < 3_907_029_168 * 1.0001
    assert ex.cache_segments * ex.cache_segment_sectors * 512 == 256 << 20
    outer = ex.zones[0].sectors_per_track * 512 * 7200 / 60
    assert 205e6 < outer < 225e6
    cyl = ex.cylinders
    mean_seek_ms = sum(disk.seek_time_ns(d) * 2 * (cyl - d) for d in range(1, cyl, 97)) / (
        sum(2 * (cyl - d) for d in range(1, cyl, 97)) * 1e6)
    assert 8.0 < mean_seek_ms < 9.5, mean_seek_ms
    assert disk.lba_count * 512 >= 51.2 * (1 << 30)    # a 1 TiB site over 4 x 5D+1P


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("drive", sorted(DISKSIM_DEMERIT_MS))
def test_drive_replays_its_trace_within_twice_disksim(drive):
    parv = need_data(drive)
    result = disk_replay.replay(disksim.load(parv), DATA / f"{drive}.trace")
    bar = 2 * DISKSIM_DEMERIT_MS[drive]
    print(f"{drive}: demerit {result.demerit_ms:.3f} ms, DiskSim {DISKSIM_DEMERIT_MS[drive]:.3f} ms")
    assert len(result.measured_us) >= 9900            # the whole trace (9,984..10,000 requests)
    assert result.demerit_ms <= bar, (f"{drive}: demerit {result.demerit_ms:.3f} ms > 2 x DiskSim's "
                                      f"{DISKSIM_DEMERIT_MS[drive]:.3f} ms")


def test_cli_disk_spec_prints_the_demerit(capsys, tmp_path):
    parv = need_data("hp_c2490a")
    out = tmp_path / "r.csv"
    assert disk_replay.main(["--disk-spec", str(parv), str(DATA / "hp_c2490a.trace"),
                             "--out", str(out), "--verbose"]) == 0
    text = capsys.readouterr().out
    assert "demerit (RMS CDF distance):" in text and "HP_C2490A_validate" in text
    assert "ignored: " in text                    # --verbose lists what the model left aside
    assert len(out.read_text().splitlines()) == 9984 + 1      # header + one line per request


def test_cli_disk_spec_error_is_one_line(capsys, tmp_path):
    f = write(tmp_path, "bad.parv", "disksim_disk D {\n  Model = 3\n}\n")
    code = emu_main(["disk", "replay", "--disk-spec", str(f), str(f)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{f}:2: key 'Model': expected a block" in err, err
    code = emu_main(["disk", "replay", "--disk", "hp97560", "--disk-spec", str(f), str(f)])
    assert code == 2 and "not allowed with" in capsys.readouterr().err


# ------------------------------------------------------------------ configs
CFG = ROOT / "configs" / "two-site.toml"
SMALL = """set max_time 300ms
paircreate g0
run until pair.mirroring 5s
expect state g0 PAIR
workload start w rw=randwrite bs=4KiB iodepth=2 ldevs=0-3 seed=1
run 40ms
expect consistent
"""


def _config(tmp_path: Path, disk_line: str) -> Path:
    text = CFG.read_text()
    old = 'disk_preset = "hp97560"      # Ruemmler & Wilkes 1994'
    assert old in text
    return write(tmp_path, "cfg/rack.toml", text.replace(old, disk_line))


def test_disk_model_is_relative_to_the_config_and_reaches_the_disks(tmp_path):
    cfg = _config(tmp_path, f'disk_model = "{DISKS / "st41601n.parv"}"')
    spec, _ = load_storage_config(cfg)
    disks = [a for a in spec.actors if ".disk" in a.name]
    assert disks and all(a.params["model"] == str((DISKS / "st41601n.parv").resolve()) for a in disks)
    local = write(tmp_path, "cfg/disks/hp.parv", _hp97560_text())
    cfg2 = _config(tmp_path, 'disk_model = "disks/hp.parv"')
    spec2, _ = load_storage_config(cfg2)
    assert {a.params["model"] for a in spec2.actors if ".disk" in a.name} == {str(local.resolve())}


@pytest.mark.parametrize("line, needle", [
    ('disk_model = "nothere.parv"', "site[0].disk_model: no such file"),
    ('disk_model = "bad.parv"', "site[0].disk_model: "),
    ('disk_model = "bad.parv"\ndisk_preset = "hp97560"', "give disk_preset or disk_model, not both"),
])
def test_disk_model_errors_name_the_key_and_file(tmp_path, line, needle):
    write(tmp_path, "cfg/bad.parv", "disksim_disk D {\n  Model = 3\n}\n")
    cfg = _config(tmp_path, line)
    with pytest.raises(ConfigError) as exc:
        load_storage_config(cfg)
    assert str(cfg) in str(exc.value) and needle in str(exc.value), exc.value
    if "bad.parv\"" in line and "preset" not in line:
        assert "bad.parv:2: key 'Model'" in str(exc.value)


def test_emu_run_with_disk_model(tmp_path, capsys):
    def run(cfg, name):
        j = tmp_path / f"{name}.json"
        script = write(tmp_path, f"{name}.emu", SMALL)
        code = emu_main(["run", str(cfg), str(script), "--backend", "inline", "--json", str(j)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "verify: consistent" in out
        return json.loads(j.read_text())

    model = run(_config(tmp_path, f'disk_model = "{DISKS / "st41601n.parv"}"'), "model")
    preset = run(CFG, "preset")
    busy = [{n: d["busy_pct"] for n, d in r["devices"]["disks"].items()} for r in (model, preset)]
    assert busy[0].keys() == busy[1].keys()
    assert busy[0] != busy[1]        # the ST41601N file, not the default HP 97560, timed the disks


# ------------------------------------------------------------------ controller timing
def _plain(**kw) -> DiskParams:
    """One zone of 100 sectors per track at 6000 rpm: 10 ms per revolution, 0.1 ms per sector."""
    return DiskParams(name="t", cylinders=50, surfaces=2, zones=((0, 49, 100),), rpm=6000,
                      sparing="none", **kw)


def test_minimum_seek_delay_holds_back_a_write_that_needs_no_seek():
    quick = DiskModel(_plain()).access(0, "W", 0, 1)
    held = DiskModel(_plain(write_min_seek_ms=3.0)).access(0, "W", 0, 1)
    assert quick.seek_ns == 0 and held.seek_ns == 3 * NS_PER_MS
    # sector 0 is under the head at once; held back 3 ms, the write waits for it to come round
    assert held.done_ns - quick.done_ns == 10 * NS_PER_MS


def test_write_back_answers_after_the_bus_and_holds_the_media():
    disk = DiskModel(_plain(cache_segments=2, cache_segment_sectors=64, write_cache=True,
                            write_overhead_ms=0.5, bus_ns_per_sector=20_000))
    w = disk.access(0, "W", 4_000, 8)
    assert w.done_ns == int(0.5 * NS_PER_MS) + 8 * 20_000      # overhead + bus, no mechanics
    media_done_ns = disk.media_free_ns
    assert media_done_ns > w.done_ns                            # the media write goes on after
    r = disk.access(w.done_ns, "R", 0, 1)
    assert r.overhead_ns >= media_done_ns - w.done_ns           # the read waited for it


def test_read_water_mark_delays_the_reconnection():
    args = dict(bus_ns_per_sector=200_000, cache_segments=1, cache_segment_sectors=64)
    early = DiskModel(_plain(**args)).access(0, "R", 500, 40)
    late = DiskModel(_plain(read_water=0.75, **args)).access(0, "R", 500, 40)
    # the bus waits for 30 sectors (0.1 ms each) instead of 1 before it starts
    assert late.done_ns - early.done_ns == pytest.approx(29 * 100_000, abs=2_000)


def test_write_faster_media_than_bus_loses_revolutions():
    fast_bus = DiskModel(_plain(bus_ns_per_sector=50_000)).access(0, "W", 1002, 50)
    slow_bus = DiskModel(_plain(bus_ns_per_sector=150_000)).access(0, "W", 1002, 50)
    # 50 sectors need 7.5 ms of bus but 5 ms of media: the head outruns the data
    assert slow_bus.done_ns - fast_bus.done_ns >= 10 * NS_PER_MS       # at least one revolution
