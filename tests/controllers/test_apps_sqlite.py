"""What these tests prove about the SQLite reference application and its verdict.

* The bank runs on the LDEV layout through the apsw VFS: a finished run's
  image passes integrity_check and every invariant; the layout header is
  what the docs say (magic, regions, sizes, crc32).
* SQLite's own recovery works on the layout: applying the captured writes
  of a run up to EVERY request boundary (a crash with the writes in order)
  gives an image the sqlite verdict accepts, with every transaction
  acknowledged before that point held. So the application is crash-safe
  on this device, and a violation the sweep finds is the copy's doing.
* The verdict can fail: an address-order mix of two consistent images
  (tracks of a newer image over an older one) breaks the balance invariant
  while integrity_check still says ok; a missing acknowledged transaction,
  a torn header and a garbage database are each reported, never a crash.
* The capture is a pure function of the seed.
"""

from __future__ import annotations

import hashlib

import pytest

from controllers.apps.bank import capture_bank, invariants, run_bank
from controllers.apps.blockdev import MemoryDevice
from controllers.apps.sqlite_ldev import MAGIC, Layout
from controllers.formats.capture import load_capture
from controllers.verify.apps import check_sqlite

LDEV_BYTES = 1 << 20
TRACK = 16384


def _image(transfers, seed=1, accounts=3000):
    dev = MemoryDevice(LDEV_BYTES)
    run_bank(dev, accounts=accounts, transfers=transfers, seed=seed)
    return bytes(dev.buf)


def test_a_finished_run_is_consistent_and_the_header_is_as_documented():
    img = _image(20)
    v = check_sqlite(img, invariants(3000, 1_000_000), acked_txid=20)
    assert v["ok"], v
    assert v["integrity"] == "ok" and v["values"]["acknowledged transactions held"] == 20
    assert img[:8] == MAGIC
    lay = Layout.unpack(img[:512], LDEV_BYTES)
    assert (lay.db_offset, lay.journal_size) == (4096, 0)     # committed: no journal left
    assert lay.db_size % 1024 == 0 and lay.db_size > 3 * TRACK // 2
    assert lay.journal_offset == lay.db_offset + lay.db_capacity


@pytest.mark.parametrize("seed", [1, 2])
def test_every_prefix_of_the_captured_writes_recovers(tmp_path, seed):
    meta = capture_bank(tmp_path / "b.cap", transfers=6, seed=seed, accounts=400)
    _, recs = load_capture(tmp_path / "b.cap")
    img = bytearray(LDEV_BYTES)
    checked = 0
    for i, r in enumerate(recs):
        if r.op == "write":
            img[r.offset:r.offset + r.length] = r.data
        acked = max([t for t, s in meta["acks"] if s <= i], default=-1)
        v = check_sqlite(bytes(img), meta["invariants"], acked)
        assert v["ok"], f"seed={seed} crash after request {i}: {v['problems']}"
        checked += 1
    assert checked == len(recs) and len(meta["acks"]) == 7


def test_an_address_order_mix_breaks_the_invariant_while_integrity_check_passes():
    old, new = _image(10), _image(40)
    inv = invariants(3000, 1_000_000)
    mixed = bytearray(old)
    mixed[:TRACK] = new[:TRACK]          # the copy sent track 0 (header and first pages), then stopped
    v = check_sqlite(bytes(mixed), inv, acked_txid=10)
    assert v["integrity"] == "ok", v
    assert not v["ok"] and any(p.startswith("balances sum") for p in v["problems"]), v


def test_each_kind_of_damage_is_a_verdict_not_a_crash():
    img = _image(5)
    inv = invariants(3000, 1_000_000)
    assert check_sqlite(img, inv, acked_txid=6)["problems"] == ["acknowledged transactions held: 5, expected >= 6"]
    torn = bytearray(img)
    torn[40] ^= 0xFF
    assert "crc32" in check_sqlite(bytes(torn), inv, 0)["problems"][0]
    garbage = bytearray(img)
    garbage[4096:4096 + 2048] = b"\xa5" * 2048          # the database's first pages overwritten
    v = check_sqlite(bytes(garbage), inv, 0)
    assert not v["ok"] and v["problems"][0].startswith("sqlite: "), v
    assert not check_sqlite(bytes(LDEV_BYTES), inv, 0)["ok"]          # nothing there, but txn 0 was acked
    assert check_sqlite(bytes(LDEV_BYTES), inv, -1)["ok"]             # nothing acked: nothing required


def test_the_capture_is_a_function_of_the_seed(tmp_path):
    digests = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        capture_bank(tmp_path / f"{name}.cap", transfers=3, seed=seed, accounts=200)
        digests.append(hashlib.sha256((tmp_path / f"{name}.cap").read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_emu_check_with_an_application_verdict(tmp_path, capsys):
    from controllers.verify.checker import main
    meta = capture_bank(tmp_path / "b.cap", transfers=4, accounts=300)
    _, recs = load_capture(tmp_path / "b.cap")
    img = bytearray(LDEV_BYTES)
    for r in recs:
        if r.op == "write":
            img[r.offset:r.offset + r.length] = r.data
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "ldev0.img").write_bytes(bytes(img))
    facts = str(tmp_path / "b.cap.json")
    assert main([str(tmp_path / "imgs"), "--check", "sqlite", "--facts", facts, "--acked-txid", "4"]) == 0
    assert "sqlite ldev 0: CONSISTENT: integrity_check ok; balances sum 300000000" in capsys.readouterr().out
    assert main([str(tmp_path / "imgs"), "--check", "sqlite", "--facts", facts, "--acked-txid", "5"]) == 1
    assert "acknowledged transactions held: 4, expected >= 5" in capsys.readouterr().out
    assert main([str(tmp_path / "imgs"), "--check", "sqlite"]) == 2
    assert main([str(tmp_path / "imgs"), "--check", "sqlite", "--facts", str(tmp_path / "x.json")]) == 2
    assert "x.json: cannot read" in capsys.readouterr().err
    assert len(meta["acks"]) == 5
