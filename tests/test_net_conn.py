"""net: Conn behaviour — x/net/nettest's TestConn subtests over tcp and unix, big transfers,
close-unblocks, TCPConn options, UDP and unixgram packet conns."""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import random
import socket
import struct
import threading
import time

import pytest

import netpoll
from tests.helpers.net import (
    Threads,
    conn_pair,
    copy_until_error,
    has_ipv6,
    is_timeout,
    listener,
    read_exact,
    unix_path,
    write_until_error,
)

# Go's aLongTimeAgo (time.Unix(1, 0)): a datetime, since a bare number that old
# is refused as a relative time by mistake.
A_LONG_TIME_AGO = datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=datetime.timezone.utc)
STREAMS = ["tcp", "unix"]


def roundtrip(c1: netpoll.Conn, c2: netpoll.Conn) -> None:
    """nettest's testRoundtrip without an echo goroutine: clear deadlines, ping, pong."""
    c1.set_deadline(None)
    msg = b"Hello, world!"
    assert c1.write(msg) == len(msg)
    assert read_exact(c2, len(msg)) == msg
    c2.write(msg)
    assert read_exact(c1, len(msg)) == msg


def drain(c: netpoll.Conn, quiet: float = 0.2) -> None:
    """Read and drop whatever is pending until ``quiet`` seconds pass without data."""
    buf = bytearray(64 * 1024)
    while True:
        c.set_read_deadline(time.time() + quiet)
        try:
            if c.readinto(buf) == 0:
                break
        except TimeoutError:
            break
    c.set_read_deadline(None)


# -- nettest.TestConn ------------------------------------------------------------


@pytest.mark.parametrize("network", STREAMS)
def test_basic_io(backend: str, network: str) -> None:
    want = random.Random(0).randbytes(1 << 20)
    got = io.BytesIO()
    with conn_pair(network) as (c1, c2):
        wg = Threads()

        def writer() -> None:
            view = memoryview(want)
            for i in range(0, len(view), 1000):  # chunkedCopy: many small writes
                c1.write(view[i : i + 1000])
            c1.close()

        wg.go(writer)
        wg.go(copy_until_error, got, c2)
        wg.wait()
    assert got.getvalue() == want


@pytest.mark.parametrize("network", STREAMS)
def test_ping_pong(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        wg = Threads()

        def pinger(c: netpoll.Conn) -> None:
            prev = 0
            while True:
                buf = c.read(8)
                if not buf:
                    break
                while len(buf) < 8:
                    buf += read_exact(c, 8 - len(buf))
                (v,) = struct.unpack("<Q", buf)
                assert prev == 0 or prev + 2 == v, (prev, v)
                prev = v
                if v >= 300:
                    break
                c.write(struct.pack("<Q", v + 1))
            c.close()

        wg.go(pinger, c1)
        wg.go(pinger, c2)
        c1.write(struct.pack("<Q", 0))
        wg.wait()


@pytest.mark.parametrize("network", STREAMS)
def test_racy_read(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        feeder = threading.Thread(target=write_until_error, args=(c2,))
        feeder.start()
        wg = Threads()
        c1.set_read_deadline(time.time() + 0.001)

        def reader() -> None:
            b1, b2 = bytearray(1024), bytearray(1024)
            for _ in range(50):
                try:
                    c1.readinto(b1)
                except OSError as exc:
                    assert is_timeout(exc), exc
                    c1.set_read_deadline(time.time() + 0.001)
                b1[:] = b2  # mutate the buffer right after the read returned

        for _ in range(6):
            wg.go(reader)
        wg.wait()
        c1.close()
        c2.close()
        feeder.join()


@pytest.mark.parametrize("network", STREAMS)
def test_racy_write(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        sink = threading.Thread(target=copy_until_error, args=(io.BytesIO(), c2))
        sink.start()
        wg = Threads()
        c1.set_write_deadline(time.time() + 0.001)

        def writer() -> None:
            b1, b2 = bytearray(1024), bytearray(1024)
            for _ in range(50):
                try:
                    c1.write(b1)
                except OSError as exc:
                    assert is_timeout(exc), exc
                    c1.set_write_deadline(time.time() + 0.001)
                b1[:] = b2

        for _ in range(6):
            wg.go(writer)
        wg.wait()
        c1.close()
        c2.close()
        sink.join()


@pytest.mark.parametrize("network", STREAMS)
def test_read_timeout(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        c1.set_read_deadline(A_LONG_TIME_AGO)
        with pytest.raises(TimeoutError) as info:
            c1.read(1024)
        assert is_timeout(info.value)
        assert "i/o timeout" in str(info.value)
        assert c1.write(b"x" * 1024) == 1024  # writes are unaffected
        assert len(read_exact(c2, 1024)) == 1024


@pytest.mark.parametrize("network", STREAMS)
def test_write_timeout(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        c1.set_write_deadline(A_LONG_TIME_AGO)
        with pytest.raises(TimeoutError) as info:
            c1.write(b"x" * 1024)
        assert is_timeout(info.value)
        assert info.value.written == 0  # type: ignore[attr-defined]
        c2.write(b"y" * 10)
        assert read_exact(c1, 10) == b"y" * 10  # reads are unaffected


@pytest.mark.parametrize("network", STREAMS)
def test_past_timeout(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        roundtrip(c1, c2)
        c1.set_deadline(A_LONG_TIME_AGO)
        with pytest.raises(TimeoutError) as w:
            c1.write(b"x" * 1024)
        assert w.value.written == 0  # type: ignore[attr-defined]
        with pytest.raises(TimeoutError):
            c1.read(1024)
        roundtrip(c1, c2)  # clearing the deadline lets I/O continue


@pytest.mark.parametrize("network", STREAMS)
def test_present_timeout(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        roundtrip(c1, c2)
        deadline_set = threading.Event()
        wg = Threads()

        def setter() -> None:
            time.sleep(0.1)
            deadline_set.set()
            c1.set_read_deadline(A_LONG_TIME_AGO)
            c1.set_write_deadline(A_LONG_TIME_AGO)

        def reader() -> None:
            with pytest.raises(TimeoutError):
                c1.read(1024)
            assert deadline_set.is_set(), "read timed out before the deadline was set"

        def writer() -> None:
            err = write_until_error(c1)  # c2 reads nothing: the buffers fill up
            assert is_timeout(err), err
            assert deadline_set.is_set(), "write timed out before the deadline was set"

        wg.go(setter)
        wg.go(reader)
        wg.go(writer)
        wg.wait()
        c1.set_deadline(None)
        drain(c2)
        roundtrip(c1, c2)


@pytest.mark.parametrize("network", STREAMS)
def test_future_timeout(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        c1.set_deadline(time.time() + 0.1)
        wg = Threads()

        def reader() -> None:
            with pytest.raises(TimeoutError):
                c1.read(1024)

        def writer() -> None:
            assert is_timeout(write_until_error(c1))

        wg.go(reader)
        wg.go(writer)
        wg.wait()
        c1.set_deadline(None)
        drain(c2)
        roundtrip(c1, c2)


@pytest.mark.parametrize("network", STREAMS)
def test_close_timeout(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, _c2):
        c1.set_deadline(time.time() + 3600)
        wg = Threads()
        errs: list[BaseException] = []

        def closer() -> None:
            time.sleep(0.1)
            c1.close()

        def reader() -> None:
            buf = bytearray(1024)
            try:
                while c1.readinto(buf):
                    pass
            except OSError as exc:
                errs.append(exc)

        def writer() -> None:
            errs.append(write_until_error(c1))

        wg.go(closer)
        wg.go(reader)
        wg.go(writer)
        wg.wait()
        assert len(errs) == 2
        for e in errs:
            assert isinstance(e, netpoll.ErrClosed), e
            assert not isinstance(e, TimeoutError)


@pytest.mark.parametrize("network", STREAMS)
def test_concurrent_methods(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        echo = threading.Thread(target=copy_until_error, args=(c2, c2))
        echo.start()
        wg = Threads()

        def quietly(fn, *args):  # type: ignore[no-untyped-def]
            try:
                fn(*args)
            except OSError:
                pass

        for _ in range(15):
            wg.go(quietly, c1.read, 1024)
            wg.go(quietly, c1.write, b"z" * 1024)
            wg.go(quietly, c1.set_deadline, time.time() + 0.01)
            wg.go(quietly, c1.set_read_deadline, A_LONG_TIME_AGO)
            wg.go(quietly, c1.set_write_deadline, A_LONG_TIME_AGO)
            wg.go(c1.local_addr)
            wg.go(c1.remote_addr)
        wg.wait()
        # resync: the echo returns our junk, then the marker.
        c1.set_deadline(None)
        marker = b"\x00MARKER-" + os.urandom(8)
        c1.write(marker)
        seen = bytearray()
        while marker not in seen:
            b = c1.read(4096)
            assert b
            seen += b
        assert seen.endswith(marker)
        c1.close()
        echo.join(10)
        assert not echo.is_alive()


# -- close unblocks ------------------------------------------------------------


@pytest.mark.parametrize("network", STREAMS)
def test_close_unblocks_read(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, _c2):
        threading.Timer(0.1, c1.close).start()
        t0 = time.monotonic()
        with pytest.raises(netpoll.ErrClosed) as info:
            c1.read(10)
        assert time.monotonic() - t0 < 5
        assert "use of closed network connection" in str(info.value)
        assert str(info.value).startswith(f"read {network} ")
        with pytest.raises(netpoll.ErrClosed):
            c1.read(10)  # and stays closed
        with pytest.raises(netpoll.ErrClosed):
            c1.write(b"x")
        c1.close()  # idempotent, as Python files


@pytest.mark.parametrize("network", STREAMS)
def test_close_unblocks_write(backend: str, network: str) -> None:
    data = b"x" * (64 << 20)  # far more than the socket buffers hold
    with conn_pair(network) as (c1, _c2):
        threading.Timer(0.3, c1.close).start()
        with pytest.raises(netpoll.ErrClosed) as info:
            c1.write(data)
        # The exception tells how much went out before the close.
        assert 0 < info.value.written < len(data)


@pytest.mark.parametrize("network", STREAMS)
def test_close_unblocks_accept(backend: str, network: str) -> None:
    with listener(network) as ln:
        threading.Timer(0.1, ln.close).start()
        with pytest.raises(netpoll.ErrClosed) as info:
            ln.accept()
        assert str(info.value).startswith(f"accept {network} {ln.addr()}: use of closed")
        with pytest.raises(netpoll.ErrClosed):
            ln.accept()


# -- volume ----------------------------------------------------------------------


@pytest.mark.parametrize("network", STREAMS)
def test_64mib_both_ways(backend: str, network: str) -> None:
    block = random.Random(1).randbytes(1 << 20)
    data = b"".join(block[i:] + block[:i] for i in range(64))  # 64 MiB, not periodic
    want = hashlib.sha256(data).hexdigest()
    with conn_pair(network) as (c1, c2):
        results: dict[str, str] = {}
        wg = Threads()

        def send(c: netpoll.Conn) -> None:
            assert c.write(data) == len(data)

        def recv(name: str, c: netpoll.Conn) -> None:
            h = hashlib.sha256()
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            total = 0
            while total < len(data):
                n = c.readinto(buf)
                assert n > 0
                h.update(view[:n])
                total += n
            results[name] = h.hexdigest()

        wg.go(send, c1)
        wg.go(send, c2)
        wg.go(recv, "c1", c1)
        wg.go(recv, "c2", c2)
        wg.wait(120)
    assert results == {"c1": want, "c2": want}


# -- io integration, EOF, addresses -------------------------------------------------


@pytest.mark.parametrize("network", STREAMS)
def test_eof_and_rawiobase(backend: str, network: str) -> None:
    with conn_pair(network) as (c1, c2):
        assert isinstance(c1, io.RawIOBase) and c1.readable() and c1.writable()
        c1.write(b"line one\nline two\n")
        c1.close_write()  # type: ignore[attr-defined]
        r = io.BufferedReader(c2)
        assert r.readline() == b"line one\n"
        assert r.read() == b"line two\n"
        assert c2.read(10) == b""
        assert c2.readinto(bytearray(10)) == 0
        with c2:
            pass
        assert c2.closed


def test_addresses_and_types(backend: str) -> None:
    with conn_pair("tcp") as (c1, c2):
        assert isinstance(c1, netpoll.TCPConn) and isinstance(c2, netpoll.TCPConn)
        assert c1.remote_addr() == c2.local_addr()
        assert c1.local_addr() == c2.remote_addr()
        assert isinstance(c1.local_addr(), netpoll.TCPAddr)
        nodelay = c1.fileno()
        assert nodelay >= 0
        s = socket.socket(fileno=os.dup(c1.fileno()))
        try:
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        finally:
            s.close()
        c1.set_no_delay(False)  # type: ignore[attr-defined]
        c1.set_keep_alive(False)  # type: ignore[attr-defined]
        c1.set_keep_alive_period(30.5)  # type: ignore[attr-defined]
        c1.set_linger(0)  # type: ignore[attr-defined]
        c1.set_read_buffer(1 << 16)
        c1.set_write_buffer(1 << 16)
        got: list[int] = []
        c1.syscall_conn().control(got.append)
        assert got == [c1.fileno()]
    with conn_pair("unix") as (u1, u2):
        assert isinstance(u1, netpoll.UnixConn) and isinstance(u2, netpoll.UnixConn)
        assert u1.remote_addr() == u2.local_addr()
        assert str(u1.remote_addr()).endswith("sock")


def test_closed_conn_setters_raise_errclosed(backend: str) -> None:
    with conn_pair("tcp") as (c1, _c2):
        c1.close()
        with pytest.raises(netpoll.ErrClosed):
            c1.set_deadline(time.time())
        with pytest.raises(netpoll.ErrClosed):
            c1.set_no_delay(True)  # type: ignore[attr-defined]


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_tcp6(backend: str) -> None:
    with conn_pair("tcp6") as (c1, c2):
        assert c1.remote_addr() == netpoll.TCPAddr("::1", c2.local_addr().port)  # type: ignore[union-attr]
        assert str(c1.remote_addr()).startswith("[::1]:")
        roundtrip(c1, c2)


def test_unixpacket_keeps_message_boundaries(backend: str) -> None:
    with conn_pair("unixpacket") as (c1, c2):
        c1.write(b"one")
        c1.write(b"two")
        assert c2.read(100) == b"one"
        assert c2.read(100) == b"two"


def test_unix_listener_removes_its_file(backend: str) -> None:
    with unix_path() as path:
        ln = netpoll.listen("unix", path)
        assert os.path.exists(path)
        ln.close()
        assert not os.path.exists(path)
        # In use: a second listener fails cleanly, and the first keeps its file.
        ln = netpoll.listen("unix", path)
        with pytest.raises(netpoll.OpError) as info:
            netpoll.listen("unix", path)
        assert isinstance(info.value, OSError)
        assert f"listen unix {path}: bind: address already in use" == str(info.value)
        assert os.path.exists(path)
        ln.close()


# -- UDP and unixgram ------------------------------------------------------------------


def test_udp_read_from_write_to(backend: str) -> None:
    a = netpoll.listen_packet("udp", "127.0.0.1:0")
    b = netpoll.listen_packet("udp", "127.0.0.1:0")
    try:
        assert isinstance(a, netpoll.UDPConn)
        assert a.remote_addr() is None
        assert b.write_to(b"hello", a.local_addr()) == 5  # type: ignore[union-attr, arg-type]
        buf = bytearray(100)
        n, sender = a.read_from(buf)  # type: ignore[union-attr]
        assert (bytes(buf[:n]), sender) == (b"hello", b.local_addr())
        a.write_to(b"back", str(sender))  # type: ignore[union-attr]
        n, sender = b.read_from(buf)  # type: ignore[union-attr]
        assert bytes(buf[:n]) == b"back" and sender == a.local_addr()
        a.set_read_deadline(time.time() + 0.05)
        with pytest.raises(TimeoutError) as info:
            a.read_from(buf)  # type: ignore[union-attr]
        assert str(info.value) == f"read udp {a.local_addr()}: i/o timeout"
    finally:
        a.close()
        b.close()


def test_udp_connected(backend: str) -> None:
    srv = netpoll.listen_packet("udp", "127.0.0.1:0")
    try:
        c = netpoll.dial("udp", str(srv.local_addr()))
        with c:
            assert isinstance(c, netpoll.UDPConn)
            c.write(b"ping")
            buf = bytearray(64)
            n, peer = srv.read_from(buf)  # type: ignore[union-attr]
            assert bytes(buf[:n]) == b"ping" and peer == c.local_addr()
            srv.write_to(b"pong", peer)  # type: ignore[union-attr]
            assert c.read(64) == b"pong"
            with pytest.raises(netpoll.OpError, match="pre-connected"):
                c.write_to(b"x", srv.local_addr())  # type: ignore[attr-defined]
            c.set_read_deadline(time.time() + 0.05)
            with pytest.raises(TimeoutError):
                c.read(64)
    finally:
        srv.close()


def test_udp_dual_stack_wildcard(backend: str) -> None:
    pc = netpoll.listen_packet("udp", ":0")
    try:
        port = pc.local_addr().port  # type: ignore[union-attr]
        c = netpoll.dial("udp", f"127.0.0.1:{port}")
        with c:
            c.write(b"v4")
            buf = bytearray(10)
            n, _ = pc.read_from(buf)  # type: ignore[union-attr]
            assert bytes(buf[:n]) == b"v4"
    finally:
        pc.close()


def test_unixgram(backend: str) -> None:
    with unix_path() as p1, unix_path() as p2:
        a = netpoll.listen_packet("unixgram", p1)
        b = netpoll.listen_packet("unixgram", p2)
        try:
            assert isinstance(a, netpoll.UnixConn)
            b.write_to(b"dgram", netpoll.UnixAddr(p1, "unixgram"))  # type: ignore[union-attr]
            buf = bytearray(64)
            n, sender = a.read_from(buf)  # type: ignore[union-attr]
            assert bytes(buf[:n]) == b"dgram"
            assert sender == netpoll.UnixAddr(p2, "unixgram")
        finally:
            a.close()
            b.close()
