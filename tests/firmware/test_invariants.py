"""The firmware's accounting invariants are assertions that fire: the
save-area bitmap (Fig. 10) against the saved-data queue (Fig. 11), a save
track freed twice, a track saved twice, and the copy window; and the
firmware refuses to run with assertions off."""
import subprocess
import sys

import pytest

from firmware.fig10_11_save_area import SaveAreaBitmap, SavedDataQueue, SavedNode, assert_accounting
from firmware.store import SaveRow


def _area():
    bitmap = SaveAreaBitmap.build([SaveRow(0, "spare", 4), SaveRow(1, "parity", 4)], keep_raid5=False,
                                  spares_usable=True)
    return bitmap, SavedDataQueue(max_nodes=16)


def test_consistent_accounting_passes():
    bitmap, saved = _area()
    row, slot, _ = bitmap.allocate()
    saved.enqueue(SavedNode(0, 5, row, slot, None, "p0"))
    saved.enqueue(SavedNode(0, 6, None, None, 0, "p0"))   # cache only: no bit
    assert_accounting(bitmap, saved)


def test_node_without_its_bit_is_caught():
    bitmap, saved = _area()
    saved.enqueue(SavedNode(0, 5, 0, 2, None, "p0"))        # claims row 0 slot 2, never allocated
    with pytest.raises(AssertionError, match="not marked"):
        assert_accounting(bitmap, saved)


def test_two_nodes_on_one_save_track_are_caught():
    bitmap, saved = _area()
    row, slot, _ = bitmap.allocate()
    saved.enqueue(SavedNode(0, 5, row, slot, None, "p0"))
    saved.enqueue(SavedNode(1, 5, row, slot, None, "p1"))
    with pytest.raises(AssertionError, match="two nodes"):
        assert_accounting(bitmap, saved)


def test_double_free_and_double_save_are_caught():
    bitmap, saved = _area()
    row, slot, _ = bitmap.allocate()
    bitmap.free(row, slot)
    with pytest.raises(AssertionError, match="which is free"):
        bitmap.free(row, slot)
    saved.enqueue(SavedNode(0, 5, None, None, 0, "p0"))
    with pytest.raises(AssertionError, match="saved twice"):
        saved.enqueue(SavedNode(0, 5, None, None, 1, "p0"))


def test_firmware_refuses_python_O():
    p = subprocess.run([sys.executable, "-O", "-c", "import firmware"], capture_output=True, text=True)
    assert p.returncode != 0 and "assertions" in p.stderr, p.stderr
