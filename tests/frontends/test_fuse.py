"""`emu up --fuse DIR`: a real kernel ext4 on an emulated LDEV. losetup +
mkfs.ext4 + mount on the master's file, a file written and fsync'ed,
umount; then the sync pair's remote LDEV (read through its own FUSE file)
passes `e2fsck -fn` and holds the file's bytes; the fsyncs reached the
rack as FLUSHes (the capture says so); `emu down` unmounts."""

import os
import subprocess

import numpy as np
import pytest

from controllers.formats.capture import read_capture
from controllers.frontends.fuse import fuse_missing
from tests.frontends.support import CFG, UpRack, need, run


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (losetup, mount)"
    why = fuse_missing() or need("losetup", "mkfs.ext4", "e2fsck", "debugfs", "mount", "umount")
    if why:
        return why
    probe = subprocess.run(["losetup", "-f"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"no free loop device ({probe.stderr.strip()})"
    return None


WHY = _why_not()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")


def test_ext4_on_an_emulated_ldev_survives_on_the_remote(tmp_path):
    cfg = tmp_path / "fs.toml"   # 8 MiB LDEVs: room for ext4's journal
    cfg.write_text(open(CFG).read().replace('ldevs = 4', 'ldevs = 1').replace('ldev_size = "1MiB"', 'ldev_size = "8MiB"')
                   .replace("ldevs = [0, 1, 2, 3]", "ldevs = [0]"))
    mnt_fuse, mnt_fs = tmp_path / "ldevs", tmp_path / "mnt"
    mnt_fs.mkdir()
    rack = UpRack(f"fz{os.getpid()}", str(cfg), "--fuse", str(mnt_fuse), "--capture", str(tmp_path / "fs.cap"))
    loop = None
    down = False
    try:
        assert rack.files["main:0"] == f"{mnt_fuse}/main/ldev0" and os.path.ismount(mnt_fuse)
        assert os.path.getsize(rack.files["remote:0"]) == 8 << 20
        rack.svp("paircreate g0; run until pair.mirroring 20s")
        loop = run(["losetup", "-f", "--show", rack.files["main:0"]]).stdout.strip()
        run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", loop])
        run(["mount", loop, str(mnt_fs)])
        payload = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
        with open(mnt_fs / "a.bin", "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        run(["umount", str(mnt_fs)])
        run(["losetup", "-d", loop])
        loop = None
        image = tmp_path / "remote.img"
        image.write_bytes(open(rack.files["remote:0"], "rb").read())
        fsck = run(["e2fsck", "-fn", str(image)], ok=False)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        run(["debugfs", "-R", f"dump /a.bin {tmp_path / 'a.out'}", str(image)])
        assert (tmp_path / "a.out").read_bytes() == payload
        rack.down()
        down = True
        assert not os.path.ismount(mnt_fuse), "emu down left the FUSE mount"
        header, records = read_capture(tmp_path / "fs.main.cap")
        ops = [r.op for r in records]
        assert header["source"] == "fuse" and ops.count("flush") >= 1 and ops.count("write") > 10
    finally:
        if os.path.ismount(mnt_fs):
            subprocess.run(["umount", "-l", str(mnt_fs)])
        if loop:
            subprocess.run(["losetup", "-d", loop])
        if not down:
            rack.down()
