"""What these tests prove about the capture file format (controllers/formats/capture.py).

* A capture written by CaptureWriter reads back record for record (header,
  seq, times, extents, flags, the written bytes), as a stream (the reader
  yields lazily), for random requests drawn from a seed.
* The writer refuses a request that would make a bad file (unknown op,
  extent past the LDEV, data of the wrong length, data on a read, ack before
  arrival), naming the file and the record.
* A malformed file raises CaptureError naming the file and the record
  number: not msgpack, wrong header, wrong field count, seq out of order, a
  truncated last record, garbage in a record.
* happens_before gives each request the prefix of acknowledged requests
  that must complete before it is issued.
"""

from __future__ import annotations

import random

import msgpack
import pytest

from controllers.formats.capture import (FLAG_FUA, CaptureError, CaptureRecord, CaptureWriter, ack_order,
                                         happens_before, load_capture, read_capture)

SIZES = {0: 1 << 20, 3: 1 << 16}


def _random_requests(seed: int, n: int):
    rng = random.Random(seed)
    t = 0
    out = []
    for _ in range(n):
        t += rng.randrange(1, 10_000)
        op = rng.choice(["read", "write", "write", "flush", "trim"])
        ldev = rng.choice(sorted(SIZES))
        if op == "flush":
            off, length = 0, 0
        else:
            length = rng.randrange(1, 9) * 512
            off = rng.randrange(0, SIZES[ldev] - length + 1)
        data = rng.randbytes(length) if op == "write" else None
        ack = None if rng.random() < 0.1 else t + rng.randrange(0, 50_000)
        flags = FLAG_FUA if op == "write" and rng.random() < 0.3 else 0
        out.append((op, ldev, t, ack, off, length, flags, data))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_round_trip(tmp_path, seed):
    path = tmp_path / "c.cap"
    reqs = _random_requests(seed, 200)
    with CaptureWriter(path, "main", SIZES, "unit-test") as w:
        seqs = [w.record(*r) for r in reqs]
    assert seqs == list(range(len(reqs))), f"seed={seed}"
    header, it = read_capture(path)
    assert header == {"format": "emu-capture", "version": 1, "site": "main", "sector_bytes": 512,
                      "ldev_bytes": SIZES, "source": "unit-test"}
    got = list(it)
    assert got == [CaptureRecord(i, *r) for i, r in enumerate(reqs)], f"seed={seed}"
    assert [r.fua for r in got] == [bool(r[6] & FLAG_FUA) for r in reqs]
    # the raw stream is what the spec says: header map, then 9-element arrays
    objs = list(msgpack.Unpacker(open(path, "rb"), raw=False, strict_map_key=False))
    assert objs[0]["format"] == "emu-capture" and len(objs) == len(reqs) + 1
    assert all(isinstance(o, list) and len(o) == 9 for o in objs[1:])


def test_reader_is_lazy(tmp_path):
    """The iterator yields the first request before reading the rest: a bad record far on fails only when reached."""
    path = tmp_path / "c.cap"
    with CaptureWriter(path, "main", SIZES, "t") as w:
        w.record("write", 0, 0, 10, 0, 512, data=b"x" * 512)
    with open(path, "ab") as f:
        f.write(msgpack.packb([1, "bogus", 0, 0, 0, 0, 0, 0, None]))
    _, it = read_capture(path)
    assert next(it).seq == 0
    with pytest.raises(CaptureError, match=r"c\.cap: record 1: op must be one of"):
        next(it)


@pytest.mark.parametrize("args, match", [
    (("erase", 0, 0, 1, 0, 512), "op must be one of"),
    (("write", 0, 0, 1, (1 << 20) - 512, 1024, 0, b"x" * 1024), "runs past the end of ldev 0"),
    (("write", 0, 0, 1, 0, 1024, 0, b"x" * 512), "carries 512 bytes"),
    (("read", 0, 0, 1, 0, 512, 0, b"x" * 512), "a read carries no data"),
    (("write", 0, 100, 99, 0, 512, 0, b"x" * 512), "ack_ns must be None or an int >= arrival_ns"),
    (("write", 7, 0, 1, 0, 512, 0, b"x" * 512), "ldev 7 is not in the header"),
    (("write", 0, 0, 1, 0, 512, 4, b"x" * 512), "unknown bits"),
    (("trim", 0, 0, 1, 0, 0), "needs length >= 1"),
])
def test_writer_refuses_bad_requests(tmp_path, args, match):
    path = tmp_path / "w.cap"
    with CaptureWriter(path, "main", SIZES, "t") as w:
        w.record("flush", 0, 0, 0, 0, 0)
        with pytest.raises(CaptureError, match=rf"w\.cap: record 1: .*{match}"):
            w.record(*args)
    # the refused request left the file whole: it reads back with one record
    assert len(load_capture(path)[1]) == 1


def _write_raw(path, *objs):
    with open(path, "wb") as f:
        for o in objs:
            f.write(msgpack.packb(o, use_bin_type=True))


HEADER = {"format": "emu-capture", "version": 1, "site": "main", "sector_bytes": 512,
          "ldev_bytes": {0: 4096}, "source": "t"}
GOOD = [0, "write", 0, 5, 9, 0, 512, 0, b"a" * 512]


@pytest.mark.parametrize("objs, match", [
    ([{**HEADER, "format": "other"}], r"header: not an emu-capture file"),
    ([{**HEADER, "version": 2}], r"header: version 2 is not supported"),
    ([{**HEADER, "sector_bytes": 4096}], r"header: header key 'sector_bytes'"),
    ([{**HEADER, "ldev_bytes": {}}], r"header: header key 'ldev_bytes'"),
    ([[1, 2, 3]], r"header: the first object must be the header map"),
    ([HEADER, GOOD, [1, "write", 0]], r"record 1: must be an array of 9 fields"),
    ([HEADER, GOOD, GOOD], r"record 1: seq must be 1"),
    ([HEADER, [0, "write", 0, 5, 9, 0, 512, 0, None]], r"record 0: a write must carry its data as bytes"),
    ([HEADER, [0, "read", 0, "5", 9, 0, 512, 0, None]], r"record 0: arrival_ns must be an int"),
])
def test_malformed_files_name_file_and_record(tmp_path, objs, match):
    path = tmp_path / "bad.cap"
    _write_raw(path, *objs)
    with pytest.raises(CaptureError, match=rf"bad\.cap: {match}"):
        load_capture(path)


def test_truncated_and_garbage(tmp_path):
    path = tmp_path / "t.cap"
    _write_raw(path, HEADER, GOOD)
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])                      # the last record cut short (a crashed writer)
    with pytest.raises(CaptureError, match=r"t\.cap: record 0: truncated"):
        load_capture(path)
    path.write_bytes(whole + b"\xc1")                   # 0xc1 is never used by msgpack
    with pytest.raises(CaptureError, match=r"t\.cap: record 1: not msgpack"):
        load_capture(path)
    path.write_bytes(b"")
    with pytest.raises(CaptureError, match=r"t\.cap: header: empty or truncated"):
        read_capture(path)
    with pytest.raises(CaptureError, match=r"nope\.cap: cannot read"):
        read_capture(tmp_path / "nope.cap")


def test_happens_before():
    r = [CaptureRecord(0, "write", 0, 0, 100, 0, 512, 0, b"x" * 512),
         CaptureRecord(1, "write", 0, 10, 50, 512, 512, 0, b"y" * 512),
         CaptureRecord(2, "flush", 0, 60, 70, 0, 0),        # after 1 was acked, before 0 was
         CaptureRecord(3, "read", 0, 100, None, 0, 512),    # 0 acked at 100: not strictly before
         CaptureRecord(4, "read", 0, 101, 120, 0, 512)]
    assert ack_order(r) == [1, 2, 0, 4]
    assert happens_before(r) == [0, 0, 1, 2, 3]
