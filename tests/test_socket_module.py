"""netpoll.socket: the stdlib socket API on netpoll, against real loopback peers.

Each test body runs twice (conftest's ``_BOTH_G_KINDS``): in the plain test
thread and as a goroutine, on every backend.  The peers are stdlib sockets in
threads, so what is checked is the socket semantics a library sees: return
values, exception types and messages, timeouts, non-blocking mode,
makefile, accept's type, close from another thread.  The M-not-blocked and
fault-injection checks are at the end.
"""

from __future__ import annotations

import errno
import socket as std
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import netpoll
import netpoll.socket as nsock
from netpoll.testing import Faults
from tests.helpers.tls import start

PEER = 10.0


@pytest.fixture
def listening(backend: str) -> Iterator[std.socket]:
    """A stdlib listening socket on 127.0.0.1 (the peer side)."""
    ls = std.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    ls.settimeout(PEER)
    try:
        yield ls
    finally:
        ls.close()


def _port(s: std.socket) -> int:
    port: int = s.getsockname()[1]
    return port


def _echo_once(ls: std.socket) -> threading.Thread:
    def serve() -> None:
        c, _ = ls.accept()
        with c:
            c.settimeout(PEER)
            while data := c.recv(65536):
                c.sendall(data)

    return start(serve)


def test_is_a_stdlib_socket_and_echoes(listening: std.socket) -> None:
    t = _echo_once(listening)
    with nsock.create_connection(("127.0.0.1", _port(listening)), timeout=PEER) as s:
        assert isinstance(s, std.socket)
        assert isinstance(s, nsock.socket)
        assert s.gettimeout() == PEER
        assert s.getpeername() == ("127.0.0.1", _port(listening))
        s.sendall(b"hello")
        assert s.recv(5) == b"hello"
        buf = bytearray(3)
        s.sendall(b"abc")
        assert s.recv_into(buf) == 3 and buf == b"abc"
        s.shutdown(std.SHUT_WR)
        assert s.recv(10) == b""
    assert s.fileno() == -1
    t.join(PEER)


def test_sendall_large_and_makefile(listening: std.socket) -> None:
    t = _echo_once(listening)
    payload = bytes(range(256)) * 8192  # 2 MiB: many parks on a full buffer
    s = nsock.create_connection(("127.0.0.1", _port(listening)))
    got = bytearray()

    def reader() -> None:
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got.extend(chunk)

    r = netpoll.go(reader) if netpoll.current_goroutine() else start(reader)
    s.sendall(payload)
    r.join(PEER)
    assert bytes(got) == payload
    f = s.makefile("rwb")
    f.write(b"line one\nline two\n")
    f.flush()
    assert f.readline() == b"line one\n"
    assert f.readline() == b"line two\n"
    s.close()  # the file still holds the socket open
    assert s.fileno() >= 0  # as a stdlib socket: open until the file closes too
    f.write(b"after close\n")
    f.flush()
    assert f.readline() == b"after close\n"
    f.close()
    t.join(PEER)


def test_timeout_is_socket_timeout(listening: std.socket) -> None:
    t = _echo_once(listening)
    s = nsock.socket()
    s.settimeout(0.05)
    s.connect(("127.0.0.1", _port(listening)))
    with pytest.raises(std.timeout) as info:
        s.recv(1)
    assert isinstance(info.value, TimeoutError)
    assert str(info.value) == "timed out"
    # The socket still works after a timeout, and the timeout can go.
    s.settimeout(None)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    s.close()
    t.join(PEER)


def test_nonblocking_mode(listening: std.socket) -> None:
    t = _echo_once(listening)
    s = nsock.create_connection(("127.0.0.1", _port(listening)))
    s.setblocking(False)
    assert s.gettimeout() == 0.0 and not s.getblocking()
    with pytest.raises(BlockingIOError):
        s.recv(1)
    s.setblocking(True)
    assert s.gettimeout() is None and s.getblocking()
    s.sendall(b"y")
    assert s.recv(1) == b"y"
    s.close()
    t.join(PEER)


def test_accept_returns_netpoll_sockets(backend: str) -> None:
    ls = nsock.create_server(("127.0.0.1", 0))
    port = ls.getsockname()[1]
    ls.settimeout(PEER)

    def client() -> None:
        with std.create_connection(("127.0.0.1", port), timeout=PEER) as c:
            c.sendall(b"ping")
            assert c.recv(4) == b"pong"

    t = start(client)
    conn, addr = ls.accept()
    with conn:
        assert type(conn) is nsock.socket
        assert addr[0] == "127.0.0.1"
        assert conn.gettimeout() is None  # the default timeout, as the stdlib's
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")
    t.join(PEER)
    ls.settimeout(0.05)
    with pytest.raises(std.timeout):
        ls.accept()
    ls.setblocking(False)
    with pytest.raises(BlockingIOError):
        ls.accept()
    ls.close()


def test_connect_refused_and_connect_ex(backend: str) -> None:
    probe = std.socket()
    probe.bind(("127.0.0.1", 0))
    port = _port(probe)
    probe.close()  # nothing listens there now
    s = nsock.socket()
    with pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
    s.close()
    s = nsock.socket()
    assert s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
    s.close()


def test_close_from_another_thread_wakes_a_parked_recv(listening: std.socket) -> None:
    t = _echo_once(listening)
    s = nsock.create_connection(("127.0.0.1", _port(listening)))
    parked = threading.Event()

    def closer() -> None:
        parked.wait(PEER)
        time.sleep(0.05)
        s.close()

    c = threading.Thread(target=closer)
    c.start()
    parked.set()
    with pytest.raises(OSError) as info:
        s.recv(1)
    assert info.value.errno == errno.EBADF
    c.join(PEER)
    t.join(PEER)


def test_udp_sendto_recvfrom(backend: str) -> None:
    a = nsock.socket(std.AF_INET, std.SOCK_DGRAM)
    b = nsock.socket(std.AF_INET, std.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    b.settimeout(PEER)
    assert a.sendto(b"datagram", b.getsockname()) == 8
    data, addr = b.recvfrom(100)
    assert data == b"datagram" and addr == a.getsockname()
    b.settimeout(0.05)
    with pytest.raises(std.timeout):
        b.recvfrom(100)
    a.close()
    b.close()


def test_socketpair_dup_detach_fromfd(backend: str) -> None:
    a, b = nsock.socketpair()
    assert isinstance(a, nsock.socket) and isinstance(b, nsock.socket)
    d = a.dup()
    assert isinstance(d, nsock.socket) and d.fileno() != a.fileno()
    d.sendall(b"via dup")
    assert b.recv(7) == b"via dup"
    d.close()
    fd = a.detach()
    assert a.fileno() == -1
    again = nsock.fromfd(fd, std.AF_UNIX, std.SOCK_STREAM)
    std.socket(fileno=fd).close()  # fromfd duplicated it: close the original
    again.sendall(b"fromfd")
    assert b.recv(6) == b"fromfd"
    again.close()
    b.close()


def test_lookups_and_constants(backend: str) -> None:
    infos = nsock.getaddrinfo("localhost", 80, nsock.AF_INET, nsock.SOCK_STREAM)
    assert infos and infos[0][4][0].startswith("127.")
    assert nsock.gethostbyname("localhost").startswith("127.")
    assert nsock.AF_INET == std.AF_INET and nsock.SOL_SOCKET == std.SOL_SOCKET
    assert nsock.timeout is std.timeout and nsock.error is OSError
    assert nsock._GLOBAL_DEFAULT_TIMEOUT is std._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]
    assert set(std.__all__) <= set(nsock.__all__)


def test_bad_input_errors(backend: str) -> None:
    s = nsock.socket()
    with pytest.raises(ValueError, match="out of range"):
        s.settimeout(-1)
    with pytest.raises(ValueError):
        s.recv(-1)
    s.close()
    with pytest.raises(OSError) as info:
        s.recv(1)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        nsock.socket(fileno=10_000)


# -- the fast path's timeout bookkeeping (a deadline per call, left set) -------------------


def _delayed_echo(ls: std.socket, delays: list[float]) -> threading.Thread:
    """Accept one conn; echo each received byte after the next delay in ``delays``."""

    def serve() -> None:
        c, _ = ls.accept()
        with c:
            c.settimeout(PEER)
            for delay in delays:
                data = c.recv(1)
                if not data:
                    return
                time.sleep(delay)
                c.sendall(data)

    return start(serve)


def test_each_timed_call_gets_its_own_deadline(listening: std.socket) -> None:
    # A timed recv leaves its deadline on the pollDesc; a later call must not
    # inherit it (expired or not), and settimeout(None) must drop it.
    t = _delayed_echo(listening, [0.0, 0.05, 0.05, 0.6])
    s = nsock.create_connection(("127.0.0.1", _port(listening)))
    try:
        s.settimeout(0.4)
        s.sendall(b"a")
        assert s.recv(1) == b"a"  # deadline now+0.4, left set
        netpoll.sleep(0.5)  # ... and now passed
        s.sendall(b"b")
        assert s.recv(1) == b"b"  # parks ~0.05 s under a fresh deadline
        s.settimeout(0.0)  # non-blocking calls ignore the deadline
        with pytest.raises(BlockingIOError):
            s.recv(1)
        s.settimeout(0.4)
        s.sendall(b"c")
        buf = bytearray(1)
        assert s.recv_into(buf) == 1 and buf == b"c"
        s.settimeout(None)  # no timeout: the one left must go
        s.sendall(b"d")
        assert s.recv(1) == b"d"  # the peer waits 0.6 s, past the old 0.4 s deadline
    finally:
        s.close()
    t.join(PEER)


def test_timed_sendall_and_send_on_a_full_buffer(listening: std.socket) -> None:
    s = nsock.create_connection(("127.0.0.1", _port(listening)))
    peer, _ = listening.accept()
    try:
        s.settimeout(0.1)
        # Nobody reads: the buffers fill and sendall times out part way.
        with pytest.raises(std.timeout) as info:
            s.sendall(b"x" * (64 << 20))
        assert str(info.value) == "timed out"
        with pytest.raises(std.timeout):
            for _ in range(4096):  # the kernel may still take a little
                s.send(b"x" * 65536)
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            for _ in range(4096):
                s.send(b"x" * 65536)
        with pytest.raises(BlockingIOError):
            s.sendall(b"x" * (64 << 20))
    finally:
        peer.close()
        s.close()
    with pytest.raises(OSError) as closed:
        s.sendall(b"x")
    assert closed.value.errno == errno.EBADF


def test_timed_sendall_parks_then_completes_after_its_deadline_was_left(
    listening: std.socket,
) -> None:
    s = nsock.create_connection(("127.0.0.1", _port(listening)))
    peer, _ = listening.accept()
    payload = bytes(range(256)) * 8192  # 2 MiB: parks on a full buffer
    got = bytearray()

    def drain() -> None:
        peer.settimeout(PEER)
        while len(got) < 2 * len(payload):
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            got.extend(chunk)

    r = start(drain)
    s.settimeout(1.0)
    s.sendall(memoryview(payload))  # parks: a write deadline is set and left
    netpoll.sleep(1.1)  # the left deadline passes
    s.sendall(payload)  # must park under its own deadline, not fail at once
    r.join(PEER)
    peer.close()
    assert bytes(got) == payload * 2
    s.close()


def test_recv_into_sizes_and_closed_errors(listening: std.socket) -> None:
    t = _echo_once(listening)
    s = nsock.create_connection(("127.0.0.1", _port(listening)))
    buf = bytearray(4)
    with pytest.raises(ValueError, match="buffer too small"):
        s.recv_into(buf, 5)
    with pytest.raises(ValueError, match="negative"):
        s.recv_into(buf, -1)
    s.sendall(b"wxyz")
    assert s.recv_into(buf, 2) == 2 and buf[:2] == b"wx"
    assert s.recv_into(memoryview(buf)[2:]) == 2 and buf == b"wxyz"
    s.close()
    for call in (lambda: s.recv(1), lambda: s.recv_into(buf), lambda: s.send(b"x")):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF
    t.join(PEER)


# -- goroutines on one M, faults --------------------------------------------------------


def test_goroutines_on_one_m_make_blocking_calls_while_a_sibling_ticks(
    backend: str, g_kind: str
) -> None:
    """Ten goroutines on one M each wait in recv; the peer answers only after
    the ticker goroutine of the same M has ticked five times, so the answers
    arrive only if the waiting goroutines did not block the M."""
    ls = std.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    ls.settimeout(PEER)
    port = _port(ls)
    n = 10
    ticked = threading.Event()

    def serve() -> None:
        conns = [ls.accept()[0] for _ in range(n)]
        try:
            assert ticked.wait(PEER)
            for c in conns:
                c.settimeout(PEER)
                c.sendall(c.recv(16).upper())
        finally:
            for c in conns:
                c.close()

    peer = start(serve)
    answers: list[bytes] = []
    ticks: list[float] = []

    def client(i: int) -> None:
        with nsock.create_connection(("127.0.0.1", port), timeout=PEER) as s:
            s.sendall(b"hi%d" % i)
            answers.append(s.recv(16))

    def ticker() -> None:
        while len(answers) < n and len(ticks) < 10_000:
            ticks.append(time.monotonic())
            if len(ticks) == 5:
                ticked.set()
            netpoll.sleep(0.01)

    def main() -> None:
        gs = [netpoll.go(client, i) for i in range(n)] + [netpoll.go(ticker)]
        for g in gs:
            assert g.join(PEER * 2)

    if netpoll.current_goroutine() is not None:
        main()  # the test body is already a goroutine: its M runs them all
    else:
        netpoll.run(main)
    peer.join(PEER)
    ls.close()
    assert sorted(answers) == sorted(b"HI%d" % i for i in range(n))
    assert len(ticks) >= 5


def test_faults_refuse_a_connect(backend: str) -> None:
    ls = std.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    with Faults() as f:
        rule = f.fail("connect", errno.ECONNREFUSED, times=1)
        with pytest.raises(ConnectionRefusedError):
            nsock.create_connection(("127.0.0.1", _port(ls)), timeout=PEER)
        assert rule.fired == 1
        # The next connect is real.
        nsock.create_connection(("127.0.0.1", _port(ls)), timeout=PEER).close()
    ls.close()


def test_faults_reset_a_connection(listening: std.socket) -> None:
    t = _echo_once(listening)
    with Faults() as f:
        rule = f.reset_after(4)
        s = nsock.create_connection(("127.0.0.1", _port(listening)), timeout=PEER)
        s.sendall(b"123456")
        got = b""
        with pytest.raises(ConnectionResetError):
            while True:
                got += s.recv(10)
        assert got == b"1234"
        assert rule.fired >= 1
        s.close()
    t.join(PEER)


def test_faults_stall_a_read_past_its_timeout(listening: std.socket) -> None:
    t = _echo_once(listening)
    with Faults() as f:
        f.eagain("read", wake=False)
        s = nsock.create_connection(("127.0.0.1", _port(listening)), timeout=0.1)
        s.sendall(b"lost")
        with pytest.raises(std.timeout):
            s.recv(4)
        s.close()
    t.join(PEER)


def test_a_dropped_socket_is_closed_through_its_fd(listening: std.socket) -> None:
    import gc

    from netpoll.core import finalizer
    from tests.helpers.net import open_fds

    t = _echo_once(listening)
    before = open_fds()
    s = nsock.create_connection(("127.0.0.1", _port(listening)), timeout=PEER)
    s.sendall(b"z")
    assert s.recv(1) == b"z"  # parked once: the FD and its pollDesc exist
    fd = s.fileno()
    assert fd in open_fds()
    with pytest.warns(ResourceWarning, match="unclosed netpoll socket"):
        del s
        gc.collect()
    assert finalizer.drain()
    assert fd not in open_fds() - before  # closed (the leak check also counts pollDescs)
    t.join(PEER)


def test_faults_fail_socket_creation_and_sendfile(listening: std.socket, tmp_path: Path) -> None:
    with Faults() as f:
        rule = f.fail("socket", errno.EMFILE, times=1)
        with pytest.raises(OSError) as info:
            nsock.socket()
        assert info.value.errno == errno.EMFILE and rule.fired == 1
    t = _echo_once(listening)
    data = bytes(range(256)) * 100
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with nsock.create_connection(("127.0.0.1", _port(listening)), timeout=PEER) as s:
        with path.open("rb") as fh:
            assert s.sendfile(fh) == len(data)
        s.shutdown(std.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got == data
    t.join(PEER)
