"""The NBD server against clients that break the protocol: each gets the
protocol's error reply or a closed connection, and the rack goes on
serving well-behaved clients with its virtual time and data untouched by
the bad ones. The rack (inline backend) runs in its own thread, as in
`emu up`; the clients are raw sockets speaking the numbers of the spec."""

import os
import select
import socket
import struct
import threading

import pytest

from controllers.frontends.core import FrontendHub
from controllers.frontends.nbd import NbdServer, parse_tcp
from controllers.rack.storage import StorageRack

from tests.frontends.support import (CFG, OPT_ABORT, OPT_GO, OPT_LIST, closed, connect, go, option, option_reply,
                                     recv_exact, reply, request)

EINVAL, ENOSPC, EPERM = 22, 28, 1
REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_SERVER, REP_ACK = (1 << 31) + 6, (1 << 31) + 1, 2, 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nbd") / "nbd.sock")
    rack = StorageRack(CFG, backend="inline", seed=5)
    rack.paircreate("g0")
    rack.wait_mirrored()
    hub = FrontendHub(rack)
    nbd = NbdServer(hub, path)
    stop = threading.Event()
    stop_r, stop_w = os.pipe()

    def drive():            # the rack's thread: what Frontends.serve_until does beside the console
        while not stop.is_set():
            select.select([hub.wake_fd, stop_r], [], [], hub.poll_timeout_s())
            hub.pump()
    th = threading.Thread(target=drive, daemon=True)
    th.start()
    try:
        yield nbd, rack, path
    finally:
        stop.set()
        os.write(stop_w, b"x")
        th.join()
        nbd.close()
        rack.close()
        os.close(stop_r)
        os.close(stop_w)


def healthy(path: str) -> None:
    """A good client still gets its bytes back."""
    s, size = go(path, "main:0")
    request(s, 1, 8192, 512, handle=1, data=b"k" * 512)
    assert reply(s)[:2] == (0, 1)
    request(s, 0, 8192, 512, handle=2)
    assert reply(s, 512) == (0, 2, b"k" * 512)
    request(s, 2, 0, 0)
    s.close()


def test_list_and_abort(server):
    _nbd, _rack, path = server
    s = connect(path)
    s.sendall(struct.pack(">I", 3))
    option(s, OPT_LIST)
    names = []
    while True:
        _opt, rep, data = option_reply(s)
        if rep == REP_ACK:
            break
        assert rep == REP_SERVER
        names.append(data[4:4 + struct.unpack(">I", data[:4])[0]].decode())
    assert names == [f"{site}:{i}" for site in ("main", "remote") for i in range(4)]
    option(s, OPT_ABORT)
    assert option_reply(s)[1] == REP_ACK
    assert closed(s)


def test_unknown_export_and_unknown_option_get_error_replies(server):
    _nbd, _rack, path = server
    s = connect(path)
    s.sendall(struct.pack(">I", 3))
    option(s, OPT_GO, struct.pack(">I", 6) + b"nope:9" + struct.pack(">H", 0))
    _opt, rep, msg = option_reply(s)
    assert rep == REP_ERR_UNKNOWN and b"no export" in msg
    option(s, 99, b"whatever")
    assert option_reply(s)[1] == REP_ERR_UNSUP
    option(s, 8)    # structured replies: not negotiated, so simple replies
    assert option_reply(s)[1] == REP_ERR_UNSUP
    s.close()
    healthy(path)


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"\x00\x00\x00\x03" + b"G" * 16,
                                     b"\x00\x00\x00\x03" + struct.pack(">QII", 0x49484156454F5054, 7, 1 << 30)])
def test_garbage_handshake_is_closed(server, garbage):
    nbd, _rack, path = server
    before = nbd.stats["bad_handshakes"]
    s = connect(path)
    s.sendall(garbage)
    assert closed(s)
    s.close()
    assert nbd.stats["bad_handshakes"] == before + 1
    healthy(path)


def test_out_of_range_misaligned_and_unknown_requests_get_errors(server):
    _nbd, rack, path = server
    s, size = go(path, "main:1")
    assert size == 1 << 20
    request(s, 0, size - 512, 1024, handle=11)
    assert reply(s)[:2] == (EINVAL, 11)
    request(s, 1, size, 512, handle=12, data=b"x" * 512)
    assert reply(s)[:2] == (ENOSPC, 12)
    request(s, 1, 100, 512, handle=13, data=b"x" * 512)
    assert reply(s)[:2] == (EINVAL, 13)
    request(s, 0, 0, 64 << 20, handle=14)     # oversized read: an error, the stream stays in step
    assert reply(s)[:2] == (EINVAL, 14)
    request(s, 6, 0, 4096, handle=15)         # WRITE_ZEROES was not advertised
    assert reply(s)[:2] == (EINVAL, 15)
    request(s, 0, 0, 512, handle=16)          # the connection still works
    assert reply(s, 512) == (0, 16, bytes(512))
    s.close()
    assert rack.rack.alive("main.dkc") and rack.rack.alive("main.host")


def test_svol_write_is_eperm_over_nbd(server):
    _nbd, _rack, path = server
    s, _size = go(path, "remote:3")
    request(s, 1, 0, 512, handle=21, data=b"s" * 512)
    assert reply(s)[:2] == (EPERM, 21)
    request(s, 0, 0, 512, handle=22)
    assert reply(s, 512)[:2] == (0, 22)
    s.close()


def test_oversized_write_and_bad_magic_close_the_connection(server):
    nbd, _rack, path = server
    s, _ = go(path, "main:0")
    request(s, 1, 0, 1 << 30, handle=31)      # a 1 GiB payload is never read: the stream cannot be trusted
    assert closed(s)
    s, _ = go(path, "main:0")
    s.sendall(b"\xde\xad" * 14)
    assert closed(s)
    healthy(path)


def test_clients_that_vanish_mid_request_do_not_disturb_the_rack(server):
    nbd, rack, path = server
    s, _ = go(path, "main:2")
    request(s, 1, 40 * 4096, 4096, handle=41, data=b"p" * 1000)   # header and part of the payload, then gone
    s.close()
    s, _ = go(path, "main:2")
    for h in range(1, 33):                                # a burst of writes, never reading a reply
        request(s, 1, h * 4096, 4096, handle=h, data=bytes([h]) * 4096)
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    assert nbd.wait_no_connections(60), "a vanished client's connection never ended"
    s, _ = go(path, "main:2")
    request(s, 2, 0, 0)                                   # DISC with nothing in flight
    assert closed(s)
    healthy(path)
    s, _ = go(path, "main:2")
    request(s, 0, 40 * 4096, 4096, handle=98)
    assert reply(s, 4096) == (0, 98, bytes(4096)), "a half-sent write was applied"
    request(s, 0, 5 * 4096, 4096, handle=99)   # the burst was read before the close, so it was done
    assert reply(s, 4096) == (0, 99, bytes([5]) * 4096)
    s.close()
    assert rack.rack.alive("main.dkc")


def test_tcp_is_loopback_only():
    assert parse_tcp("127.0.0.1:10809") == ("127.0.0.1", 10809)
    assert parse_tcp("localhost:0") == ("127.0.0.1", 0)
    assert parse_tcp("[::1]:10809") == ("::1", 10809)
    for bad in ("0.0.0.0:10809", "10.1.2.3:10809", "example.com:1", "127.0.0.1", "127.0.0.1:x"):
        with pytest.raises(ValueError, match="nbd-tcp"):
            parse_tcp(bad)
