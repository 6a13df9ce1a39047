"""`emu up --nbd` against the three real clients: fio's nbd engine writes a
sync pair's master with crc32c verification and the remote export then
equals the master byte for byte (nbdcopy + cmp); qemu-img converts an
image onto an export and `qemu-img compare` agrees (master and remote);
qemu-io's write to an S-VOL is refused with EPERM until horctakeover; the
tcp export (loopback) answers nbdinfo; and the capture file logged every
request, so replaying its writes rebuilds the master's images exactly.

The tests of this module share one rack and run in order (the takeover is
last but one; the capture is read after `emu down`)."""

import os
import subprocess

import numpy as np
import pytest

from controllers.formats.capture import read_capture
from tests.frontends.support import CFG, UpRack, need, run

WHY = need("fio", "qemu-img", "qemu-io", "nbdcopy", "nbdinfo")
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")


@pytest.fixture(scope="module")
def rack(tmp_path_factory):
    d = tmp_path_factory.mktemp("nbdclients")
    r = UpRack(f"fe{os.getpid()}", CFG, "--nbd-tcp", "127.0.0.1:0", "--capture", str(d / "run.cap"))
    r.dir = d
    r.is_down = False
    try:
        r.svp("paircreate g0; run until pair.mirroring 5s")
        yield r
    finally:
        if not r.is_down:
            r.down()


def test_up_prints_one_line_per_export_and_show_nbd_lists_them(rack):
    exports = [f"{s}:{i}" for s in ("main", "remote") for i in range(4)]
    assert sorted(rack.uris) == exports
    assert rack.uris["main:0"] == f"nbd+unix:///main:0?socket={rack.socket}"
    assert oct(os.stat(os.path.dirname(rack.socket)).st_mode & 0o777) == "0o700"
    shown = rack.svp("show nbd")
    for name in exports:
        assert f"nbd {name} {rack.uris[name]}" in shown
    info = run(["nbdinfo", rack.uris["remote:3"]]).stdout
    assert "export-size: 1048576" in info and "can_flush: true" in info and "can_fua: true" in info


def test_tcp_export_on_loopback(rack):
    tcp = rack.tcp_uris["main:2"]
    assert tcp.startswith("nbd://127.0.0.1:") and tcp.endswith("/main:2")
    assert "export-size: 1048576" in run(["nbdinfo", tcp]).stdout


def test_fio_on_a_sync_master_then_remote_equals_master(rack):
    fio = run(["fio", "--name=w", "--ioengine=nbd", f"--uri={rack.uris['main:0']}", "--rw=randwrite", "--bs=4k",
               "--iodepth=32", "--size=1M", "--verify=crc32c", "--do_verify=1", "--verify_state_save=0", "--randseed=7",
               "--output-format=terse", "--terse-version=3"])
    fields = fio.stdout.strip().splitlines()[-1].split(";")
    assert fields[4] == "0", f"fio error {fields[4]}"      # terse v3: field 5 is the error
    m, r = rack.dir / "m0.img", rack.dir / "r0.img"
    run(["nbdcopy", rack.uris["main:0"], str(m)])
    run(["nbdcopy", rack.uris["remote:0"], str(r)])
    assert m.stat().st_size == 1 << 20 and m.read_bytes().count(0) < (1 << 20) // 2, "fio wrote the master"
    assert run(["cmp", str(m), str(r)], ok=False).returncode == 0, "remote differs from its sync master"


def test_qemu_img_round_trips_an_image(rack):
    img = rack.dir / "src.img"
    img.write_bytes(np.random.default_rng(11).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(img), rack.uris["main:1"]])
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img), rack.uris["main:1"]]).returncode == 0
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img), rack.uris["remote:1"]]).returncode == 0
    other = rack.dir / "other.img"
    other.write_bytes(img.read_bytes()[:-1] + b"\x01")    # compare must be able to disagree
    assert run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(other), rack.uris["main:1"]], ok=False).returncode == 1


def test_svol_refuses_writes_until_takeover(rack):
    uri = rack.uris["remote:2"]
    refused = run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4k", uri], ok=False)
    assert "Operation not permitted" in refused.stdout + refused.stderr
    assert "read 4096/4096" in run(["qemu-io", "-f", "raw", "-c", "read -P 0 0 4k", uri]).stdout
    assert "SSWS" in rack.svp("horctakeover g0")
    done = run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4k", "-c", "read -P 0x5a 0 4k", uri])
    assert "wrote 4096/4096" in done.stdout and "read 4096/4096" in done.stdout


def test_capture_rebuilds_the_master_images(rack):
    rack.down()
    rack.is_down = True
    header, records = read_capture(rack.dir / "run.main.cap")
    assert header["site"] == "main" and header["source"] == "nbd"
    images = {ldev: bytearray(size) for ldev, size in header["ldev_bytes"].items()}
    last_arrival, ops = -1, set()
    for rec in records:
        assert rec.ack_ns is not None and rec.ack_ns >= rec.arrival_ns >= last_arrival, rec[:8]
        last_arrival = rec.arrival_ns
        ops.add(rec.op)
        if rec.op == "write":
            images[rec.ldev][rec.offset:rec.offset + rec.length] = rec.data
    assert {"read", "write"} <= ops
    assert bytes(images[0]) == (rack.dir / "m0.img").read_bytes()
    assert bytes(images[1]) == (rack.dir / "src.img").read_bytes()
    _h, remote = read_capture(rack.dir / "run.remote.cap")
    assert [r.op for r in remote if r.op == "write"] == ["write"], "only the write after takeover"
