"""The front-end core, in one process on the inline backend: a client's own
bytes go in and come back, an S-VOL refuses writes until takeover, FLUSH
and FUA wait for the destage, bad requests are refused without touching
the rack, a dead host fails requests instead of hanging them, virtual time
moves only while a request is outstanding, and the capture holds what the
client did in arrival order."""

import errno

import numpy as np
import pytest

from controllers.formats.capture import FLAG_FUA, read_capture
from controllers.frontends.core import FrontendHub, Request, capture_file
from controllers.rack.storage import StorageRack

from tests.frontends.support import CFG


def run(hub, *reqs):
    """Submit, pump until every answer is in; the answers in request order."""
    out = {}
    for i, (site, ldev, op, off, n, flags, data) in enumerate(reqs):
        hub.submit(Request(site, ldev, op, off, n, lambda r, i=i: out.__setitem__(i, r), flags, data))
    while len(out) < len(reqs):
        hub.pump()
    return [out[i] for i in range(len(reqs))]


@pytest.fixture
def rack():
    with StorageRack(CFG, backend="inline", seed=3) as r:
        r.paircreate("g0")
        r.wait_mirrored()
        yield r


@pytest.mark.parametrize("seed", [1, 2])
def test_client_bytes_round_trip_and_mirror(rack, seed):
    hub = FrontendHub(rack)
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()
    w, = run(hub, ("main", 0, "write", 4096, 8192, 0, data))
    assert w.ok and w.ack_ns > w.arrival_ns, f"seed={seed}"
    r, part, remote = run(hub, ("main", 0, "read", 4096, 8192, 0, None), ("main", 0, "read", 4096 + 100, 1000, 0, None),
                          ("remote", 0, "read", 4096, 8192, 0, None))
    assert r.data == data and part.data == data[100:1100], f"seed={seed}"
    assert remote.data == data, "a sync pair's remote holds the client's bytes once the write is acknowledged"
    hub.close()


def test_svol_refuses_writes_until_takeover(rack):
    hub = FrontendHub(rack)
    w, r = run(hub, ("remote", 1, "write", 0, 512, 0, b"x" * 512), ("remote", 1, "read", 0, 512, 0, None))
    assert not w.ok and w.errno == errno.EPERM and "write protected" in w.error
    assert r.ok and r.data == bytes(512)
    rack.horctakeover("g0")
    w2, r2 = run(hub, ("remote", 1, "write", 0, 512, 0, b"x" * 512), ("remote", 1, "read", 0, 512, 0, None))
    assert w2.ok and r2.data == b"x" * 512
    hub.close()


def test_flush_and_fua_wait_for_the_destage(rack):
    """The remote's copy of a sync write is write-pending in its cache (the
    master's local update is charged no disk time: ARCHITECTURE section 2),
    so a FLUSH of the remote LDEV (allowed on an S-VOL: it writes nothing)
    is answered only once those tracks are on the disks."""
    hub = FrontendHub(rack)
    w, = run(hub, ("main", 2, "write", 0, 65536, 0, b"\1" * 65536))
    assert rack.rack.query("remote.dkc", {"q": "stats"})["write_pending"] > 0, "the mirror left tracks write-pending"
    f, = run(hub, ("remote", 2, "flush", 0, 0, 0, None))
    assert f.ok and f.ack_ns - f.arrival_ns > 1_000_000, "a destage takes disk time (milliseconds)"
    assert rack.rack.query("remote.dkc", {"q": "stats"})["write_pending"] == 0, "FLUSH answered before the destage"
    idle, = run(hub, ("remote", 2, "flush", 0, 0, 0, None))
    assert idle.ok and idle.ack_ns - idle.arrival_ns < 1_000_000, "nothing pending: one DKC command"
    plain, = run(hub, ("main", 3, "write", 0, 4096, 0, b"\2" * 4096))
    fua, = run(hub, ("main", 3, "write", 16384, 4096, FLAG_FUA, b"\3" * 4096))
    assert fua.ok and fua.ack_ns - fua.arrival_ns > plain.ack_ns - plain.arrival_ns, "FUA adds the flush of its tracks"
    hub.close()


def test_bad_requests_are_refused_without_touching_the_rack(rack):
    hub = FrontendHub(rack)
    t0, events0 = rack.now_ns, rack.rack.events_handled
    size = hub.ldev_bytes["main"][0]
    got = run(hub, ("main", 0, "read", size - 512, 1024, 0, None), ("main", 0, "write", size, 512, 0, b"x" * 512),
              ("main", 0, "write", 100, 512, 0, b"x" * 512), ("main", 9, "read", 0, 512, 0, None),
              ("nowhere", 0, "read", 0, 512, 0, None), ("main", 0, "zap", 0, 512, 0, None),
              ("main", 0, "read", 0, 64 << 20, 0, None), ("main", 0, "write", 0, 1024, 0, b"short"))
    assert [g.errno for g in got] == [errno.EINVAL, errno.ENOSPC, errno.EINVAL, errno.EINVAL, errno.EINVAL,
                                      errno.ENOTSUP, errno.EINVAL, errno.EINVAL]
    assert all(g.error for g in got)
    assert (rack.now_ns, rack.rack.events_handled) == (t0, events0), "a refused request reached the rack"
    hub.close()


def test_time_moves_only_while_a_request_is_outstanding(rack):
    hub = FrontendHub(rack)
    t0 = rack.now_ns
    for _ in range(5):
        hub.pump()
    assert rack.now_ns == t0, "closed loop: no request, no time"
    w, = run(hub, ("main", 0, "write", 0, 4096, 0, b"\7" * 4096))
    assert w.arrival_ns == t0 and rack.now_ns >= w.ack_ns > t0
    # a sync write costs the link's round trip at least (2 x 500 us over 100 km)
    assert w.ack_ns - w.arrival_ns > 1_000_000
    hub.close()


def test_a_dead_host_fails_requests_instead_of_hanging(rack):
    hub = FrontendHub(rack)
    rack.fault_kill("main.dkc")
    w, = run(hub, ("main", 0, "write", 0, 512, 0, b"x" * 512))
    assert not w.ok and w.errno == errno.EIO and "no answer from the DKC" in w.error
    rack.fault_site_down("main")
    r, = run(hub, ("main", 0, "read", 0, 512, 0, None))
    assert not r.ok and "down" in r.error
    hub.close()


def test_capture_records_requests_in_arrival_order(rack, tmp_path):
    hub = FrontendHub(rack, capture=str(tmp_path / "c.cap"))
    reqs = [("main", 0, "write", i * 4096, 4096, FLAG_FUA if i == 2 else 0, bytes([i]) * 4096) for i in range(4)]
    reqs += [("main", 0, "flush", 0, 0, 0, None), ("main", 0, "read", 0, 4096, 0, None),
             ("remote", 0, "write", 0, 512, 0, b"r" * 512)]       # refused (S-VOL): left out
    got = run(hub, *reqs)
    hub.close()
    path = capture_file(str(tmp_path / "c.cap"), "main", ["main", "remote"])
    assert path.name == "c.main.cap" and not (tmp_path / "c.remote.cap").exists()
    header, records = read_capture(path)
    records = list(records)
    assert header["site"] == "main" and header["source"] == "frontend"
    assert [(r.op, r.offset, r.length, r.flags) for r in records] == [
        ("write", 0, 4096, 0), ("write", 4096, 4096, 0), ("write", 8192, 4096, FLAG_FUA), ("write", 12288, 4096, 0),
        ("flush", 0, 0, 0), ("read", 0, 4096, 0)]
    assert [r.data for r in records[:4]] == [bytes([i]) * 4096 for i in range(4)]
    assert [(r.arrival_ns, r.ack_ns) for r in records] == [(g.arrival_ns, g.ack_ns) for g in got[:6]]


def test_close_answers_what_is_outstanding(rack, tmp_path):
    hub = FrontendHub(rack, capture=str(tmp_path / "c.cap"))
    out = []
    hub.submit(Request("main", 0, "write", 0, 512, out.append, 0, b"x" * 512))
    hub.pump()          # entered, not yet complete (the sync write needs the link)
    assert not out
    hub.close()
    assert len(out) == 1 and out[0].errno == errno.ESHUTDOWN
    hub.submit(Request("main", 0, "read", 0, 512, out.append))
    assert out[1].errno == errno.ESHUTDOWN
    _h, records = read_capture(tmp_path / "c.main.cap")
    assert [(r.op, r.ack_ns) for r in records] == [("write", None)]


def test_a_capture_that_cannot_be_written_stops_but_the_rack_serves(rack, tmp_path):
    with pytest.raises(ValueError, match="not a writable directory"):
        FrontendHub(rack, capture=str(tmp_path / "nowhere" / "c.cap"))
    target = tmp_path / "c.cap"
    hub = FrontendHub(rack, capture=str(target))
    (tmp_path / "c.main.cap").mkdir()      # the file cannot be created: a directory is in the way
    w, r = run(hub, ("main", 0, "write", 0, 512, 0, b"z" * 512), ("main", 0, "read", 0, 512, 0, None))
    assert w.ok and r.data == b"z" * 512
    assert "c.main.cap" in hub.capture_error
    hub.close()
