"""What these tests prove about the block-trace parsers.

* Each format (MSR Cambridge CSV, MQSim ASCII, Tencent CBS plain and bz2)
  parses into the common record: time in ns relative to the earliest
  request, sorted, op read/write, extent in sectors (byte extents widened),
  volume; zero-length requests are skipped; the format is auto-detected.
* Bad lines raise TraceError naming file and line.
* Time scaling and the modulo mapping of volumes/LBAs onto LDEVs keep
  every request inside its LDEV.
* On the real samples in ../shared/data/traces (skipped when absent) the
  row counts, read/write split and time spans match PROVENANCE.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.formats.traces import (MappedIO, TraceError, TraceRecord, detect_format, map_to_ldevs, read_mqsim,
                                read_msr, read_tencent, read_trace, scale_time)

DATA = Path(__file__).resolve().parents[1] / "data"
REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"


def test_msr_tiny():
    recs = read_msr(DATA / "msr-tiny.csv")
    assert len(recs) == 4                                   # the zero-size row is skipped
    assert recs[0] == TraceRecord(0, "write", 9056014336 // 512, 4, "hm_0")
    assert recs[1] == TraceRecord(215 * 100, "read", 11855351808 // 512, 1, "hm_0")
    assert recs[2].volume == "hm_1" and recs[2].sectors == 8
    assert recs[3] == TraceRecord(10512 * 100, "write", 1, 3, "src_0")   # bytes 1000..1999 -> sectors 1..3


def test_mqsim_tiny():
    recs = read_mqsim(DATA / "mqsim-tiny.trace")
    assert [r.time_ns for r in recs] == [0, 500, 1500, 3000]
    assert [r.op for r in recs] == ["read", "write", "read", "write"]
    assert recs[1] == TraceRecord(500, "write", 31244784, 64, "1")


@pytest.mark.parametrize("name", ["tencent-tiny.csv", "tencent-tiny.bz2"])
def test_tencent_tiny_plain_and_bz2(name):
    recs = read_tencent(DATA / name)
    assert [r.time_ns for r in recs] == [0, 0, 1_000_000_000, 2_000_000_000]   # sorted, relative to earliest
    assert recs[0] == TraceRecord(0, "read", 13896880, 128, "1063")
    assert recs[2] == TraceRecord(1_000_000_000, "write", 4247200, 128, "1058")


@pytest.mark.parametrize("name, fmt", [("msr-tiny.csv", "msr"), ("mqsim-tiny.trace", "mqsim"),
                                       ("tencent-tiny.csv", "tencent"), ("tencent-tiny.bz2", "tencent")])
def test_detect_format(name, fmt):
    assert detect_format(DATA / name) == fmt
    assert read_trace(DATA / name) == read_trace(DATA / name, fmt)


@pytest.mark.parametrize("reader, body, match", [
    (read_msr, "128166385295514663,hm,0,Write,9056014336,2048,2833\n1,hm,0,Erase,0,512,1\n", ":2: .*Type must be Read or Write"),
    (read_mqsim, "1000 0 657728 16 1\n1500 1 x 64 0\n", ":2: not a MQSim line"),
    (read_mqsim, "1000 0 657728 16 7\n", ":1: .*type must be 1"),
    (read_tencent, "1538323200,4247200,128,1,1058\n1538323200,4247200\n", ":2: .*expected 5 fields"),
])
def test_errors_name_file_and_line(tmp_path, reader, body, match):
    path = tmp_path / "bad.trace"
    path.write_text(body)
    with pytest.raises(TraceError, match=match) as info:
        reader(path)
    assert str(path) in str(info.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(TraceError, match="cannot read"):
        read_mqsim(tmp_path / "nope.trace")
    (tmp_path / "empty.trace").write_text("\n")
    with pytest.raises(TraceError, match="no requests"):
        read_mqsim(tmp_path / "empty.trace")
    (tmp_path / "odd.trace").write_text("hello\n")
    with pytest.raises(TraceError, match="odd.trace:1: unknown trace format"):
        read_trace(tmp_path / "odd.trace")


def test_scale_and_map():
    recs = [TraceRecord(1000, "write", 10_000, 8, "a"), TraceRecord(3000, "read", 5, 4, "b"),
            TraceRecord(5000, "write", 99, 500, "c"), TraceRecord(7000, "read", 7, 2, "a")]
    assert [r.time_ns for r in scale_time(recs, 0.5)] == [500, 1500, 2500, 3500]
    with pytest.raises(ValueError, match="> 0"):
        scale_time(recs, 0)
    mapped = map_to_ldevs(recs, {0: 100, 1: 64})
    assert [m.ldev for m in mapped] == [0, 1, 0, 0]          # volumes a, b, c, a -> 0, 1, 0, 0
    assert mapped[0] == MappedIO(1000, "write", 0, 10_000 % 93, 8)
    assert mapped[2].sectors == 100 and mapped[2].lba == 0     # longer than the LDEV: cut to fit
    for m in mapped:
        assert 0 <= m.lba and m.lba + m.sectors <= {0: 100, 1: 64}[m.ldev]
    assert [m.ldev for m in map_to_ldevs(recs, [50, 50, 50], ldevs=[2])] == [2, 2, 2, 2]


REAL_EXPECT = {  # file: (rows, reads, span_ns lower bound, upper bound) from PROVENANCE.md
    "msr-cambridge1-sample.csv": (1000, 508, 127.1e9, 127.3e9),
    "mqsim-wsrch-small.trace": (24783, 24779, 60.0e9, 60.1e9),
    "tencent-cloud_storage-sample.bz2": (50000, 24521, 1e9, 1e9),
}


@pytest.mark.parametrize("name", sorted(REAL_EXPECT))
def test_real_samples(name):
    path = REAL / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    rows, reads, lo, hi = REAL_EXPECT[name]
    recs = read_trace(path)
    assert len(recs) == rows
    assert sum(r.op == "read" for r in recs) == reads
    assert lo <= recs[-1].time_ns <= hi
    assert all(a.time_ns <= b.time_ns for a, b in zip(recs, recs[1:]))
    sizes = {0: 1 << 21, 1: 1 << 21}
    assert all(m.lba + m.sectors <= sizes[m.ldev] for m in map_to_ldevs(recs, sizes))
