"""The reference ext4 application: files replaced atomically (write temp, fsync, rename, fsync dir).

``run_files(mnt, marker, steps, files, seed)`` works in a mounted ext4
filesystem: step ``s`` writes new contents (from ``seed``) to
``data/.fN.tmp``, fsyncs it, renames it over ``data/fN``, fsyncs the
directory: from then on ``data/fN`` is durable with those bytes. After each
step it writes one sector ``b"EMUSTEP" + s`` at sector ``s`` of the marker
file (another LDEV) and fsyncs it, so the capture itself says when each
step was acknowledged (the marker's write request); nothing else ties the
application's clock to the rack's.

What a consistent image must hold after the last step ``d`` acknowledged
before the suspension (:func:`durable_versions`): every file replaced by
step ``d`` with the bytes of its last replacement up to ``d`` or of a later
one (a later rename may have become durable too), never anything else.

``capture_ext4(workdir, config)`` (root, /dev/fuse, loop devices,
e2fsprogs) runs it for real: ``emu up CONFIG --fuse DIR --capture FILE``,
``losetup`` over the master's LDEV 0 file, ``mkfs.ext4``, ``mount``, the
steps, ``umount``, ``emu down``; it writes ``FILE``'s capture of site main
and its sidecar (``.json``: the app facts for ``--check ext4``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

MARKER_MAGIC = b"EMUSTEP"
SECTOR_BYTES = 512


def contents(seed: int, step: int) -> bytes:
    """The bytes step ``step`` writes (4-40 KiB, a function of seed and step)."""
    rng = random.Random(seed * 1_000_003 + step)
    return rng.randbytes(rng.randrange(4, 41) * 1024)


def marker(step: int) -> bytes:
    return (MARKER_MAGIC + step.to_bytes(8, "little")).ljust(SECTOR_BYTES, b"\0")


def parse_marker(data: bytes) -> int | None:
    """The step a marker sector names, or None if it is not one."""
    if len(data) < SECTOR_BYTES or not data.startswith(MARKER_MAGIC):
        return None
    return int.from_bytes(data[len(MARKER_MAGIC):len(MARKER_MAGIC) + 8], "little")


def plan(steps: int, files: int, seed: int) -> list[dict]:
    """Each step: the file it replaces and the sha256 of the new bytes."""
    return [{"step": s, "path": f"/data/f{s % files}", "sha256": hashlib.sha256(contents(seed, s)).hexdigest()}
            for s in range(1, steps + 1)]


def run_files(mnt: Path, marker_file: str, steps: int = 40, files: int = 8, seed: int = 1) -> list[dict]:
    """Do the steps in the mounted filesystem ``mnt``; returns :func:`plan`."""
    data = Path(mnt) / "data"
    data.mkdir(exist_ok=True)
    dfd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    mfd = os.open(marker_file, os.O_WRONLY)
    rfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
        os.fsync(rfd)
        for step in plan(steps, files, seed):
            name = step["path"].rsplit("/", 1)[1]
            tmp = data / f".{name}.tmp"
            with open(tmp, "wb") as f:
                f.write(contents(seed, step["step"]))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, data / name)
            os.fsync(dfd)
            os.pwrite(mfd, marker(step["step"]), step["step"] * SECTOR_BYTES)
            os.fsync(mfd)
    finally:
        for fd in (dfd, mfd, rfd):
            os.close(fd)
    return plan(steps, files, seed)


def durable_versions(steps: list[dict], durable_step: int) -> dict[str, list[str]]:
    """{path: acceptable sha256s} for an image whose last acknowledged step is ``durable_step``."""
    out: dict[str, list[str]] = {}
    for path in sorted({s["path"] for s in steps}):
        mine = [s for s in steps if s["path"] == path]
        done = [s for s in mine if s["step"] <= durable_step]
        if done:   # the last durable version, or any later one
            out[path] = [s["sha256"] for s in mine if s["step"] >= done[-1]["step"]]
    return out


def _run(cmd: list[str], **kw) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {(done.stdout + done.stderr).strip()[:400]}")
    return done.stdout


def capture_ext4(workdir: str | Path, config: str, steps: int = 40, files: int = 8, seed: int = 1,
                 name: str | None = None) -> Path:
    """Capture the workload on a real kernel ext4 over the FUSE front-end; returns the capture's path."""
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    fuse_dir, mnt, cap = work / "ldevs", work / "mnt", work / "ext4.cap"
    mnt.mkdir(exist_ok=True)
    name = name or f"ext4cap{os.getpid()}"
    emu = [sys.executable, "-m", "controllers.cli"]
    _run(emu + ["up", config, "--name", name, "--fuse", str(fuse_dir), "--capture", str(work / "ext4.{site}.cap")])
    loop = None
    try:
        loop = _run(["losetup", "-f", "--show", str(fuse_dir / "main" / "ldev0")]).strip()
        _run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
              "-U", "7a6f6e65-0000-4000-8000-000000000001", loop],
             env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"})
        _run(["mount", "-o", "nodiscard", loop, str(mnt)])
        try:
            done = run_files(mnt, str(fuse_dir / "main" / "ldev1"), steps, files, seed)
        finally:
            _run(["umount", str(mnt)])
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        loop = None
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        if loop:
            subprocess.run(["losetup", "-d", loop], capture_output=True)
        subprocess.run(emu + ["down", "--name", name], capture_output=True, timeout=120)
    os.replace(work / "ext4.main.cap", cap)
    (work / "ext4.remote.cap").unlink(missing_ok=True)
    meta = {"app": "ext4", "source": "ext4-files", "ldev": 0, "marker_ldev": 1, "steps": done,
            "params": {"steps": steps, "files": files, "seed": seed}, "durable": {}}
    Path(str(cap) + ".json").write_text(json.dumps(meta, indent=1) + "\n")
    return cap


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m controllers.apps.ext4_files", description=__doc__.split("\n")[0])
    p.add_argument("workdir", help="folder for the mounts and the capture (ext4.cap, ext4.cap.json)")
    p.add_argument("--config", default="configs/two-site-8m.toml")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    cap = capture_ext4(args.workdir, args.config, args.steps, seed=args.seed)
    print(f"{cap}: ext4 workload of {args.steps} steps captured (sidecar {cap}.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
