"""``make bench``'s honest figures: bench_rack compares each rack row with the
committed bench/baseline.json and flags a figure more than 20% worse (and
only then); a row without committed figures says so; a baseline file that
is not JSON is refused naming the file and line."""

from __future__ import annotations

import json

import pytest

from bench import bench_rack


def _rows(**over):
    rows = [{"bench": "two-site", "backend": "inline", "wall_s": 10.0, "cpu_s": 5.0, "rounds": 1,
             "wall/inline": 1.0},
            {"bench": "two-site", "backend": "processes", "wall_s": 20.0, "cpu_s": 8.0, "rounds": 100,
             "wall/inline": 2.0}]
    rows[1].update(over)
    return rows


@pytest.mark.parametrize("figure,value,flagged", [
    ("rounds", 119, False), ("rounds", 121, True), ("rounds", 50, False),
    ("wall_s", 23.9, False), ("wall_s", 24.1, True), ("wall_s", 10.0, False),
    ("cpu_s", 9.7, True), ("wall/inline", 2.6, True), ("wall/inline", 1.0, False),
])
def test_regression_flagged_beyond_tolerance(figure, value, flagged):
    base = bench_rack.baseline_record(_rows())
    lines = bench_rack.compare(_rows(**{figure: value}), base)
    assert lines[0].endswith("ok (within 20% of the committed figures)"), lines
    assert ("REGRESSION" in lines[1]) == flagged, (figure, value, lines)
    if flagged:
        assert figure in lines[1], lines


def test_rows_without_baseline_say_so(tmp_path):
    assert bench_rack.load_baseline(tmp_path / "missing.json") == {}
    lines = bench_rack.compare(_rows(), {})
    assert all("no committed figures" in line for line in lines), lines


def test_bad_baseline_names_file_and_line(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text('{\n "rack": {\n  "x": 1,,\n }\n}\n')
    with pytest.raises(ValueError, match=r"baseline.json: line 3"):
        bench_rack.load_baseline(path)
    path.write_text(json.dumps({"rack": [1, 2]}))
    with pytest.raises(ValueError, match="'rack' must be a map"):
        bench_rack.load_baseline(path)


def test_committed_baseline_covers_every_rack_row():
    base = bench_rack.load_baseline()
    expected = [f"{row}/{b}" for row in bench_rack.ROWS for b in bench_rack.BACKENDS]
    expected += [f"{row}/processes-zmq" for row in bench_rack.ZMQ_ROWS]
    assert sorted(base) == sorted(expected), base
