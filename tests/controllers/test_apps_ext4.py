"""What these tests prove about the ext4 verdict (controllers/verify/apps.py:check_ext4).

* A filesystem made by mkfs.ext4 (with a journal, populated from a folder:
  no kernel mount) whose files are what the application made durable is
  judged ok; the image given is never changed (the tools run on a copy).
* An address-order mix of two such images (the low tracks of a newer one
  over an older one) is caught by the file contents where e2fsck alone may
  say clean; a missing file and a damaged superblock are reported too.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from controllers.verify.apps import check_ext4

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
                                reason="needs e2fsprogs (mkfs.ext4, e2fsck, debugfs)")
SIZE = "8M"


def _fs(tmp_path, name, files: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    src = tmp_path / f"{name}-src"
    for path, data in files.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    img = tmp_path / f"{name}.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-J", "size=1", "-E", "nodiscard,lazy_itable_init=0",
                    "-U", "12345678-1234-1234-1234-123456789abc", "-E", "hash_seed=12345678-1234-1234-1234-123456789abc",
                    "-d", str(src), str(img), SIZE], check=True, capture_output=True,
                   env={"E2FSPROGS_FAKE_TIME": "1700000000", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return img.read_bytes(), {f"/{p}": hashlib.sha256(d).hexdigest() for p, d in files.items()}


def _files(version: int) -> dict[str, bytes]:
    return {f"data/f{i}.bin": bytes([version, i]) * 30_000 for i in range(6)}


def test_a_durable_filesystem_is_ok_and_the_image_is_not_changed(tmp_path):
    img, durable = _fs(tmp_path, "a", _files(1))
    before = hashlib.sha256(img).hexdigest()
    v = check_ext4(img, durable)
    assert v["ok"] and v["fsck"] == "clean" and v["files_checked"] == 6, v
    assert hashlib.sha256(img).hexdigest() == before


def test_a_mix_of_two_images_is_caught_by_the_contents(tmp_path):
    old, _ = _fs(tmp_path, "old", _files(1))
    new, durable = _fs(tmp_path, "new", _files(2))
    # an address-order copy stopped halfway: the first half of the differing tracks are new
    track = 16384
    differ = [t for t in range(len(new) // track) if new[t * track:(t + 1) * track] != old[t * track:(t + 1) * track]]
    assert len(differ) >= 4, differ
    mixed = bytearray(old)
    for t in differ[:len(differ) // 2]:
        mixed[t * track:(t + 1) * track] = new[t * track:(t + 1) * track]
    v = check_ext4(bytes(mixed), durable)
    assert not v["ok"], v
    assert any("contents differ" in p for p in v["problems"]), v


def test_missing_files_and_a_broken_superblock_are_reported(tmp_path):
    img, durable = _fs(tmp_path, "a", _files(1))
    v = check_ext4(img, {**durable, "/data/never.bin": "0" * 64})
    assert v["problems"] == ["/data/never.bin: missing (it was fsync'ed before the suspension)"]
    broken = bytearray(img)
    broken[1024:2048] = bytes(1024)          # the primary superblock zeroed
    v = check_ext4(bytes(broken), durable)
    assert not v["ok"] and v["problems"], v


def test_emu_check_with_the_ext4_verdict(tmp_path, capsys):
    import json
    from controllers.verify.checker import main
    img, durable = _fs(tmp_path, "a", _files(1))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "ldev2.img").write_bytes(img)
    (tmp_path / "f.json").write_text(json.dumps({"app": "ext4", "ldev": 2, "durable": durable}))
    assert main([str(tmp_path / "imgs"), "--check", "ext4", "--facts", str(tmp_path / "f.json")]) == 0
    assert "ext4 ldev 2: CONSISTENT: e2fsck clean; 6 durable files read" in capsys.readouterr().out
    durable["/data/f0.bin"] = "0" * 64
    (tmp_path / "f.json").write_text(json.dumps({"app": "ext4", "ldev": 2, "durable": durable}))
    assert main([str(tmp_path / "imgs"), "--check", "ext4", "--facts", str(tmp_path / "f.json")]) == 1
    assert main([str(tmp_path / "imgs"), "--check", "sqlite", "--facts", str(tmp_path / "f.json")]) == 2
    assert "describes a ext4 application" in capsys.readouterr().err


def test_durable_versions_accept_the_last_durable_replacement_or_a_later_one():
    from controllers.apps.ext4_files import durable_versions, marker, parse_marker, plan
    steps = plan(5, 2, seed=1)           # f1: steps 1, 3, 5; f0: steps 2, 4
    sha = {s["step"]: s["sha256"] for s in steps}
    assert durable_versions(steps, 0) == {}
    assert durable_versions(steps, 1) == {"/data/f1": [sha[1], sha[3], sha[5]]}
    assert durable_versions(steps, 4) == {"/data/f0": [sha[4]], "/data/f1": [sha[3], sha[5]]}
    assert parse_marker(marker(17)) == 17 and parse_marker(bytes(512)) is None
