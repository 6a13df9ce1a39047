"""Unit strings parse to integers in the base unit their function names, and
every bad input raises ValueError saying what was expected (with an example)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu import units as u
from emu.params import ConfigError, Param

GOOD = [
    (u.time_ns, "30us", 30_000), (u.time_ns, "1.5us", 1_500), (u.time_ns, "2 ms", 2_000_000),
    (u.time_ns, "1s", 10 ** 9), (u.time_ns, "1e3ns", 1_000), (u.time_ns, "0ns", 0),
    (u.time_ns, "1min", 60 * 10 ** 9), (u.time_ns, "7µs", 7_000),
    (u.size_bytes, "64KiB", 65_536), (u.size_bytes, "4k", 4_096), (u.size_bytes, "1MB", 10 ** 6),
    (u.size_bytes, "2sectors", 1_024), (u.size_bytes, 512, 512), (u.size_bytes, "1GiB", 1 << 30),
    (u.rate_bps, "1Gb/s", 10 ** 9), (u.rate_bps, "100MB/s", 8 * 10 ** 8), (u.rate_bps, "1MiB/s", 8 << 20),
    (u.distance_m, "10km", 10_000), (u.distance_m, 5, 5),
    (u.freq_hz, "400MHz", 400 * 10 ** 6), (u.rpm, "5400rpm", 5400.0), (u.rpm, 7200, 7200.0),
]


@pytest.mark.parametrize("fn, text, want", GOOD, ids=[f"{f.__name__}({t!r})" for f, t, _ in GOOD])
def test_good_values(fn, text, want):
    """Each accepted spelling gives the exact base-unit value."""
    got = fn(text)
    assert got == want and type(got) is type(want)


BAD = [
    (u.time_ns, "30", "no unit"), (u.time_ns, 30, "with a unit"), (u.time_ns, "5 parsecs", "unknown unit 'parsecs'"),
    (u.time_ns, "abc", "like '30us'"), (u.time_ns, "-5us", "duration"), (u.time_ns, True, "duration"),
    (u.time_ns, None, "duration"), (u.time_ns, "10 us s", "duration"),
    (u.size_bytes, "1.5B", "whole"), (u.size_bytes, "-1KiB", "size"), (u.size_bytes, "3 furlongs", "unknown unit"),
    (u.size_bytes, [1], "size"),
    (u.rate_bps, "0Gb/s", "positive"), (u.rate_bps, 10, "with a unit"), (u.rate_bps, "1Gb", "unknown unit"),
    (u.freq_hz, "0MHz", "positive"), (u.freq_hz, "400", "no unit"),
    (u.rpm, "0rpm", "positive"), (u.rpm, "fast", "spindle speed"),
    (u.time_ns, "1e400s", "finite"), (u.size_bytes, float("inf"), "finite"), (u.distance_m, float("nan"), "finite"),
]


@pytest.mark.parametrize("fn, text, words", BAD, ids=[f"{f.__name__}({t!r})" for f, t, _ in BAD])
def test_bad_values_say_what_was_expected(fn, text, words):
    """A bad value raises ValueError (never another type) with a helpful message."""
    with pytest.raises(ValueError) as err:
        fn(text)
    assert words in str(err.value), str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12) | st.integers() | st.floats() | st.none() | st.booleans())
def test_any_input_value_or_value_error(value):
    """No input makes a parser raise anything but ValueError; results are never negative."""
    for fn in (u.time_ns, u.size_bytes, u.rate_bps, u.distance_m, u.freq_hz, u.rpm):
        try:
            out = fn(value)
        except ValueError:
            continue
        except OverflowError:  # float('inf') * scale cannot become an int
            pytest.fail(f"{fn.__name__}({value!r}) raised OverflowError")
        assert out >= 0 or fn is u.distance_m, (fn.__name__, value, out)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10 ** 6), st.sampled_from(["ns", "us", "ms", "s"]))
def test_time_round_trips_through_fmt(n, unit):
    """fmt_ns prints what time_ns reads back (to its 3 decimals)."""
    ns = u.time_ns(f"{n}{unit}")
    assert ns == n * u.TIME_NS[unit]
    back = u.time_ns(u.fmt_ns(ns))
    assert abs(back - ns) <= max(1, ns // 1000)


def test_param_wraps_unit_error_with_key():
    """A typed Param turns a unit error into a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=r"dev\.service: unknown unit 'kg'"):
        Param("time", "10us", "service").convert("3kg", "dev.service")
    with pytest.raises(ConfigError, match="below the minimum"):
        Param("time", "10us", "service", min=1000).convert("10ns", "dev.service")
    assert Param("time", "10us").convert(250, "x") == 250  # a bare integer counts ns for params
