"""Thin media on the real rack (``thin = true``) and racks of real size.

What it proves:
* the initial copy sends only the master's written tracks (trace 350 counts
  them), the R-VOL is unmapped first (stale remote tracks read zeros after
  the copy), and the remote then equals the master byte for byte;
* ``export`` writes a sparse file (its blocks on disk are the written
  tracks, not the LDEV's size) that reads back as the same image, and
  ``emu check`` judges it from its data extents;
* thick media that cannot fit in what backs them are refused at start,
  naming the key; thin media that outgrow it stop the run with a message
  naming the key (MediaFull), never a SIGBUS;
* the 1 TiB rack (configs/terabyte.toml) plays the reference story
  (scenarios/terabyte.emu) to ``verify: consistent`` in both backends with
  the same trace sha256, and its exported 16 GiB LDEV is a sparse file.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from controllers.cli import main as emu_main
from controllers.formats.image import read_image_file
from controllers.operator.console import SvpConsole, run_script
from controllers.operator.report import build_report
from controllers.rack.storage import StorageRack
from controllers.verify.checker import equals
from emu.backends.base import ActorFailed
from emu.params import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MS = 1_000_000


def _thin_config(tmp_path: Path, extra: str = "thin = true") -> str:
    text = (ROOT / "configs" / "two-site.toml").read_text().replace('ldev_size = "1MiB"', f'ldev_size = "1MiB"\n{extra}')
    path = tmp_path / "thin.toml"
    path.write_text(text)
    return str(path)


def test_initial_copy_sends_only_written_tracks(tmp_path):
    with StorageRack(_thin_config(tmp_path), backend="inline", keep_trace=True) as r:
        # before any pair: the master writes some tracks of LDEVs 0-1, the remote host
        # writes LDEV 2 (stale data the initial copy must not leave behind)
        r.workload_start("m", "rw=randwrite bs=4KiB iodepth=1 ldevs=0-1 seed=3")
        r.workload_start("s", "site=remote rw=randwrite bs=16KiB iodepth=1 ldevs=2 seed=4")
        r.run(2 * MS)
        r.workload_stop("m")
        r.workload_stop("s")
        r.run(5 * MS)
        written = {ld: r.export_image("main", ld).segments.size for ld in range(4)}
        assert written[0] > 0 and written[2] == 0 and written[3] == 0
        assert r.export_image("remote", 2).segments.size > 0
        r.paircreate("g0")
        r.wait_mirrored()
        for ld in range(4):
            m, s = r.export_image("main", ld), r.export_image("remote", ld)
            assert equals(s, m).consistent, ld
            assert s.segments.tolist() == m.segments.tolist(), ld   # the stale remote tracks are unmapped
        stats = r.rack.query("main.dkc", {"q": "stats"})["stats"]
        assert stats["copy_reads"] == sum(written.values())   # one copy read per written track, none for the rest
        out = tmp_path / "img"
        out.mkdir()
        info = r.export("remote", 0, str(out / "ldev0.img"))
        st = os.stat(out / "ldev0.img")
        assert st.st_size == info["bytes"] == 1 << 20
        assert st.st_blocks * 512 <= info["stored"] + 64 * 1024 < st.st_size   # holes, not zeros
        assert equals(read_image_file(out / "ldev0.img"), r.export_image("remote", 0)).consistent
        log = tmp_path / "writes.csv"
        r.writelog().filter(sites=["main"], ldevs=[0]).save(log)
    assert emu_main(["check", str(out), str(log)]) == 0


def test_thick_media_too_big_are_refused_naming_the_key(tmp_path):
    cfg = _thin_config(tmp_path, "thin = false")
    text = Path(cfg).read_text().replace('ldev_size = "1MiB"', 'ldev_size = "16GiB"').replace("ldevs = 4", "ldevs = 16")
    Path(cfg).write_text(text)
    for backend in ("inline", "processes"):
        with pytest.raises(ConfigError) as err:
            StorageRack(cfg, backend=backend)
        assert "thin" in str(err.value) and "do not fit" in str(err.value), str(err.value)
    Path(cfg).write_text(text.replace("thin = false", "thin = true"))
    with StorageRack(cfg, backend="inline") as r:   # the same capacity thin starts at once
        assert r.now_ns == 0 and r.pairdisplay()


def test_thin_media_full_stops_the_run_naming_the_key(tmp_path, monkeypatch):
    from controllers.devices.dkc import actor as dkc_actor
    monkeypatch.setattr(dkc_actor, "THIN_CHECK_BYTES", 0)
    monkeypatch.setattr(dkc_actor, "THIN_RESERVE_BYTES", 1 << 62)   # as if /dev/shm were full
    with StorageRack(_thin_config(tmp_path), backend="inline") as r:
        r.workload_start("m", "rw=randwrite bs=4KiB iodepth=1 ldevs=0 seed=1")
        with pytest.raises(ActorFailed) as err:
            r.run(5 * MS)
    assert "thin media full" in str(err.value) and "thin = true" in str(err.value), str(err.value)


def test_thin_media_full_is_a_clear_stop_of_emu_run_not_an_internal_error(tmp_path, monkeypatch, capsys):
    """The machine's limit, not our bug: one line naming the keys, exit 71, no traceback."""
    from controllers.cli import main
    from controllers.devices.dkc import actor as dkc_actor
    monkeypatch.setattr(dkc_actor, "THIN_CHECK_BYTES", 0)
    monkeypatch.setattr(dkc_actor, "THIN_RESERVE_BYTES", 1 << 62)
    script = tmp_path / "w.emu"
    script.write_text("workload start m rw=randwrite bs=4KiB iodepth=1 ldevs=0 seed=1\nrun 5ms\n")
    code = main(["run", _thin_config(tmp_path), str(script), "--backend", "inline"])
    err = capsys.readouterr().err
    assert code == 71, err
    assert "thin media full" in err and "thin = true" in err and "Traceback" not in err, err
    assert "internal error" not in err, err


def _play_terabyte(backend: str, tmp_path: Path, monkeypatch) -> tuple[str, str]:
    monkeypatch.chdir(tmp_path)
    script = ROOT / "scenarios" / "terabyte.emu"
    out = io.StringIO()
    with StorageRack(str(ROOT / "configs" / "terabyte.toml"), backend=backend) as rack:
        console = SvpConsole(rack, stdout=out)
        code, error = run_script(console, script.read_text().splitlines(), str(script))
        assert not error and code == 0, (error, out.getvalue()[-3000:])
        report = build_report(rack)
    return report["trace_sha256"], out.getvalue()


def test_terabyte_story_both_backends(tmp_path, monkeypatch):
    shas = {}
    for backend in ("inline", "processes"):
        (tmp_path / backend).mkdir()
        sha, text = _play_terabyte(backend, tmp_path / backend, monkeypatch)
        assert "verify: consistent" in text and "recovery.rolled_back at" in text, text[-3000:]
        img = tmp_path / backend / "terabyte-remote-ldev0.img"
        st = os.stat(img)
        assert st.st_size == 16 << 30 and st.st_blocks * 512 < 64 << 20, (st.st_size, st.st_blocks)
        shas[backend] = sha
    assert shas["inline"] == shas["processes"], shas
