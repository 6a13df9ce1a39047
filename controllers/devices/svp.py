"""Service processor (SVP) actor: holds a site's settings.

The patent's step 402 takes the allowed maximum time T of a recovery copy
from the SVP; the console's ``set`` changes these settings and
``show config`` reads them. The console reaches the SVP through the rack
supervisor (ZeroMQ), and the SVP's settings travel with each command it
hands to its DKC.
"""

from __future__ import annotations

from emu import units
from emu.actor import Actor
from emu.params import Param
from firmware.dkc import DEFAULTS as FW_DEFAULTS
from firmware.protocol import METHODS, ORDERS, UNITS

SETTABLE = {
    "max_time": ("time", "allowed maximum time T of a recovery copy (patent 402)"),
    "method": (METHODS, "recovery-copy protection (claim 2)"),
    "order": (ORDERS, "sending order: bitmap (address) or time series (claim 3)"),
    "window": ("int", "tracks in flight during a recovery copy (1 = the patent's stop-and-wait)"),
    "unit": (UNITS, "consistency unit rolled back together"),
    "keep_raid5": ("bool", "keep RAID5 redundancy: do not lend parity tracks as save area"),
    "spares_usable": ("bool", "spare disks may hold saved data"),
    "format_shortcut": ("bool", "step 1207: drop an earlier format write of the same track"),
    "cache_save_threshold": ("count", "saved tracks the remote keeps in cache before parity/spares (patent 511/512)"),
    "copy_read_ahead": ("count", "tracks a copy may read from the disks beyond its window (353, 408)"),
}
MAX_CACHE_SAVE_TRACKS = 1 << 20


def convert_setting(key: str, value: str):
    """Typed value of a console ``set KEY VALUE``; ValueError names what was expected."""
    if key not in SETTABLE:
        raise ValueError(f"unknown setting {key!r} (known: {', '.join(sorted(SETTABLE))})")
    kind = SETTABLE[key][0]
    text = str(value)
    if kind == "time":
        ns = units.time_ns(text)
        if ns <= 0:
            raise ValueError(f"{key} must be > 0")
        return ns
    if kind == "count":
        if not text.isdigit() or int(text) > MAX_CACHE_SAVE_TRACKS:
            raise ValueError(f"{key} expects an integer 0..{MAX_CACHE_SAVE_TRACKS}, got {text!r}")
        return int(text)
    if kind == "int":
        if not text.isdigit() or not 1 <= int(text) <= 4096:
            raise ValueError(f"{key} expects an integer 1..4096, got {text!r}")
        return int(text)
    if kind == "bool":
        if text.lower() not in ("true", "false", "on", "off", "yes", "no", "1", "0"):
            raise ValueError(f"{key} expects on/off, got {text!r}")
        return text.lower() in ("true", "on", "yes", "1")
    if text not in kind:
        raise ValueError(f"{key} expects one of {', '.join(kind)}, got {text!r}")
    return text


class Svp(Actor):
    KIND = "svp"
    DOC = "Service processor: the site's settings (T, method, order, window, ...)."
    PARAMS = {
        "site": Param("str", doc="site name"),
        "recovery": Param("dict", doc="recovery-copy defaults from the config's [recovery] table "
                                      "(and [dkc] cache_save_threshold)"),
    }

    def on_start(self):
        rec = self.params["recovery"]
        self.settings = {"max_time": rec["max_time_ns"], "method": rec["method"], "order": rec["order"],
                         "window": rec["window"], "unit": rec["unit"], "keep_raid5": rec["keep_raid5"],
                         "spares_usable": rec["spares_usable"], "format_shortcut": rec["format_shortcut"],
                         "cache_save_threshold": rec["cache_save_threshold"],
                         "copy_read_ahead": rec.get("copy_read_ahead", FW_DEFAULTS["copy_read_ahead"])}

    def on_control(self, command):
        if command.get("cmd") != "set":
            return super().on_control(command)
        try:
            value = convert_setting(command.get("key"), command.get("value"))
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        self.settings[command["key"]] = value
        self.trace("svp.set", key=command["key"], value=value)
        return {"ok": True, "key": command["key"], "value": value}

    def on_query(self, q):
        return {"settings": dict(self.settings)}
