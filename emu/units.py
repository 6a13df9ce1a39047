"""Units in config strings: "30us", "64KiB", "5400rpm", "1Gb/s", "10km".

Every parser returns an integer in the base unit its name says (``*_ns``,
``*_bytes``, ``*_bps``, ``*_m``) and raises ``ValueError`` with a message that
says what was expected; config loading adds the file and key.
"""

from __future__ import annotations

import math
import re

_NUM = r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*"

TIME_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
           "min": 60_000_000_000}
SIZE_BYTES = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
              "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4,
              "k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "sectors": 512}
RATE_BPS = {"b/s": 1, "Kb/s": 10 ** 3, "Mb/s": 10 ** 6, "Gb/s": 10 ** 9,
            "B/s": 8, "KB/s": 8 * 10 ** 3, "MB/s": 8 * 10 ** 6, "GB/s": 8 * 10 ** 9,
            "MiB/s": 8 << 20, "GiB/s": 8 << 30}
DIST_M = {"m": 1, "km": 1000}
FREQ_HZ = {"Hz": 1, "kHz": 10 ** 3, "MHz": 10 ** 6, "GHz": 10 ** 9}


def _parse(text, table: dict, what: str, default_unit: str | None) -> float:
    if isinstance(text, bool):
        raise ValueError(f"expected a {what} like '{_example(table)}', got {text!r}")
    if isinstance(text, (int, float)):
        if default_unit is None:
            raise ValueError(f"expected a {what} with a unit like '{_example(table)}', got {text!r}")
        return _finite(float(text) * table[default_unit], text, what)
    if not isinstance(text, str):
        raise ValueError(f"expected a {what} like '{_example(table)}', got {text!r}")
    m = re.fullmatch(_NUM + r"([A-Za-zµ/]*)\s*", text)
    if not m:
        raise ValueError(f"expected a {what} like '{_example(table)}', got {text!r}")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "":
        if default_unit is None:
            raise ValueError(f"{text!r} has no unit; expected a {what} like '{_example(table)}'")
        unit = default_unit
    if unit not in table:
        raise ValueError(f"unknown unit {unit!r} in {text!r}; expected one of {', '.join(table)}")
    return _finite(number * table[unit], text, what)


def _finite(value: float, text, what: str) -> float:
    # TOML allows inf and nan, and "1e400s" overflows: int() of those would
    # raise OverflowError (a traceback instead of a config error)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite {what}, got {text!r}")
    return value


def _example(table: dict) -> str:
    return {id(TIME_NS): "30us", id(SIZE_BYTES): "64KiB", id(RATE_BPS): "1Gb/s",
            id(DIST_M): "10km", id(FREQ_HZ): "400MHz"}.get(id(table), "1")


def time_ns(text, default_unit: str | None = None) -> int:
    """'30us' -> 30000. Bare numbers need ``default_unit``."""
    value = _parse(text, TIME_NS, "duration", default_unit)
    if value < 0:
        raise ValueError(f"negative duration {text!r}")
    return int(round(value))


def size_bytes(text, default_unit: str | None = "B") -> int:
    """'64KiB' -> 65536; a bare integer counts bytes."""
    value = _parse(text, SIZE_BYTES, "size", default_unit)
    if value < 0 or value != int(value):
        raise ValueError(f"expected a whole, non-negative size, got {text!r}")
    return int(value)


def rate_bps(text) -> int:
    """'1Gb/s' -> 1_000_000_000 bits per second."""
    value = _parse(text, RATE_BPS, "bandwidth", None)
    if value <= 0:
        raise ValueError(f"bandwidth must be positive, got {text!r}")
    return int(round(value))


def distance_m(text) -> int:
    """'10km' -> 10000."""
    return int(round(_parse(text, DIST_M, "distance", "m")))


def freq_hz(text) -> int:
    """'400MHz' -> 400_000_000."""
    value = _parse(text, FREQ_HZ, "frequency", None)
    if value <= 0:
        raise ValueError(f"frequency must be positive, got {text!r}")
    return int(round(value))


def rpm(text) -> float:
    """'5400rpm' -> 5400.0 revolutions per minute."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str) and re.fullmatch(_NUM + r"(rpm)?\s*", text):
        value = float(re.fullmatch(_NUM + r"(rpm)?\s*", text).group(1))
    else:
        raise ValueError(f"expected a spindle speed like '5400rpm', got {text!r}")
    if not (value > 0 and math.isfinite(value)):  # written so that nan fails too
        raise ValueError(f"spindle speed must be positive and finite, got {text!r}")
    return value


def fmt_ns(value_ns: int) -> str:
    """Readable duration: 1500 -> '1.500us'."""
    v = int(value_ns)
    for unit, scale in (("s", 10 ** 9), ("ms", 10 ** 6), ("us", 10 ** 3)):
        if abs(v) >= scale:
            return f"{v / scale:.3f}{unit}"
    return f"{v}ns"


def fmt_bytes(value: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale and value % scale == 0:
            return f"{value // scale}{unit}"
    return f"{value}B"
