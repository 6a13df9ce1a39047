"""A FUSE front-end: each LDEV is a file ``DIR/SITE/ldevN``.

``losetup`` + ``mkfs.ext4`` + ``mount`` then put a real kernel file system on
an emulated LDEV. Every read and write of the file is a host I/O through the
:class:`FrontendHub` (the page cache is bypassed with ``direct_io``, so a
remote LDEV's file shows what replication wrote there); ``fsync`` of the
file is a FLUSH; a hole punched in it (a loop device's discard) is a TRIM.
A write that is not whole sectors is read, merged and written.

Library: mfusepy (a maintained fork of fusepy: ctypes bindings of libfuse 3,
nothing to compile). pyfuse3 would need libfuse3-dev, pkg-config and a C
build plus trio, for an async API that buys nothing here: each handler
waits on the rack anyway, and libfuse's own threads let requests overlap.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

from controllers.frontends.core import FrontendHub
from firmware.protocol import SECTOR_BYTES

log = logging.getLogger("emu.fuse")
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def fuse_missing() -> str | None:
    """Why a FUSE mount cannot work here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt: fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse 3 ({exc})"
    return None


def _operations(hub: FrontendHub, mounted: threading.Event):
    import mfusepy

    class LdevFiles(mfusepy.Operations):
        use_ns = True

        def init(self, path):
            mounted.set()     # the kernel's FUSE_INIT: the mount is serving

        def __init__(self):
            self.t_ns = time.time_ns()
            self.files = {f"/{site}/ldev{ldev}": (site, ldev, size)
                          for site, sizes in sorted(hub.ldev_bytes.items()) for ldev, size in enumerate(sizes)}
            self.dirs = {"/"} | {f"/{site}" for site in hub.ldev_bytes}

        def _file(self, path):
            f = self.files.get(path)
            if f is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return f

        def getattr(self, path, fh=None):
            times = {"st_atime": self.t_ns, "st_mtime": self.t_ns, "st_ctime": self.t_ns}
            if path in self.dirs:
                return {"st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2, **times}
            _site, _ldev, size = self._file(path)
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": size,
                    "st_blocks": size // 512, "st_blksize": 4096, **times}

        def readdir(self, path, fh):
            if path == "/":
                return [".", ".."] + sorted(hub.ldev_bytes)
            if path in self.dirs:
                site = path[1:]
                return [".", ".."] + [f"ldev{i}" for i in range(len(hub.ldev_bytes[site]))]
            raise mfusepy.FuseOSError(errno.ENOTDIR)

        def open(self, path, flags):
            self._file(path)
            return 0

        def _io(self, site, ldev, op, offset, length, data=None):
            res = hub.call(site, ldev, op, offset, length, 0, data, source="fuse")
            if not res.ok:
                raise mfusepy.FuseOSError(res.errno or errno.EIO)
            return res.data

        def read(self, path, size, offset, fh):
            site, ldev, total = self._file(path)
            if offset >= total or size <= 0:
                return b""
            return self._io(site, ldev, "read", offset, min(size, total - offset))

        def write(self, path, data, offset, fh):
            site, ldev, total = self._file(path)
            data = bytes(data)
            if offset + len(data) > total:
                raise mfusepy.FuseOSError(errno.ENOSPC)
            if not data:
                return 0
            lo = offset - offset % SECTOR_BYTES
            hi = -(-(offset + len(data)) // SECTOR_BYTES) * SECTOR_BYTES
            if (lo, hi) != (offset, offset + len(data)):   # not whole sectors: read, merge, write
                old = bytearray(self._io(site, ldev, "read", lo, hi - lo))
                old[offset - lo:offset - lo + len(data)] = data
                self._io(site, ldev, "write", lo, hi - lo, bytes(old))
            else:
                self._io(site, ldev, "write", offset, len(data), data)
            return len(data)

        def fsync(self, path, datasync, fh):
            site, ldev, _total = self._file(path)
            self._io(site, ldev, "flush", 0, 0)
            return 0

        def flush(self, path, fh):
            return 0    # close(2) is not a barrier; fsync(2) is

        def release(self, path, fh):
            return 0

        def truncate(self, path, length, fh=None):
            _site, _ldev, total = self._file(path)
            if length != total:
                raise mfusepy.FuseOSError(errno.EPERM)   # an LDEV's size is the config's
            return 0

        def fallocate(self, path, mode, offset, size, fh):
            site, ldev, total = self._file(path)
            if offset + size > total:
                raise mfusepy.FuseOSError(errno.ENOSPC)
            if mode & FALLOC_FL_PUNCH_HOLE:
                self._io(site, ldev, "trim", offset, size)
            return 0

        def statfs(self, path):
            total = sum(size for sizes in hub.ldev_bytes.values() for size in sizes)
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": total // 4096, "f_bfree": 0,
                    "f_bavail": 0, "f_files": len(self.files), "f_ffree": 0, "f_namemax": 255}

    return LdevFiles()


class FuseMount:
    """Mount the LDEV files at ``mountpoint`` (a thread runs libfuse's loop);
    ``close`` unmounts, lazily if something still holds the mount."""

    def __init__(self, hub: FrontendHub, mountpoint: str):
        why = fuse_missing()
        if why:
            raise RuntimeError(f"--fuse: {why}")
        import mfusepy
        self.hub = hub
        self.mountpoint = str(Path(mountpoint).resolve())
        try:
            Path(self.mountpoint).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f"--fuse {mountpoint}: {exc.strerror}") from None
        if os.path.ismount(self.mountpoint) or any(Path(self.mountpoint).iterdir()):
            raise RuntimeError(f"--fuse {mountpoint}: not an empty directory")
        self.error: BaseException | None = None
        self.mounted = threading.Event()
        ops = _operations(hub, self.mounted)
        self.files = sorted(ops.files)

        def loop():
            try:
                mfusepy.FUSE(ops, self.mountpoint, foreground=True, direct_io=True, fsname="emu-rack",
                             subtype="emu")
            except BaseException as exc:   # reported by wait_mounted / close
                self.error = exc
            finally:
                self.mounted.set()   # over (or never started): wake wait_mounted
        self.thread = threading.Thread(target=loop, name="fuse", daemon=True)
        self.thread.start()

    def wait_mounted(self, timeout_s: float = 10.0) -> None:
        """Return once libfuse has answered the kernel's FUSE_INIT (the
        ``init`` handler sets the event), or fail with the library's error."""
        if not self.mounted.wait(timeout_s) or self.error is not None or not self.thread.is_alive():
            raise RuntimeError(f"--fuse {self.mountpoint}: mount failed ({self.error or 'no FUSE_INIT'})")

    def rows(self) -> list[dict]:
        return [{"export": f"{p.split('/')[1]}:{p.split('ldev')[-1]}", "file": f"{self.mountpoint}{p}"}
                for p in self.files]

    def close(self) -> None:
        if os.path.ismount(self.mountpoint):
            done = subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True, text=True)
            if done.returncode != 0:   # still held (a loop device?): detach it anyway
                log.warning("fuse: %s busy (%s); unmounting lazily", self.mountpoint, done.stderr.strip())
                subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True)
        self.thread.join(timeout=3)
