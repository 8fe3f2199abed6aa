"""The read hint: after a short TCP read (or a read that parked in the kernel)
the next read waits before it tries, saving the EAGAIN round.

A read shorter than asked for on a TCP socket emptied the receive queue, so
the next ``recv`` would almost surely fail with ``EAGAIN``.  The next read
therefore waits first; for a goroutine that is safe only because the ready
latch the poller sets is consumed *before* it is dropped (see
``PollDesc.wait``).  These tests check the saving (one ``recv`` per echoed
message, counted on the socket), that no notice is lost between two reads
(which the wrong order would lose, hanging the read), that datagram and unix
sockets keep trying first, and that a plugin watching reads still sees the
``EAGAIN`` round.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import netpoll
from netpoll.core.fd import FD
from netpoll.core.g import current_thread_g
from netpoll.core.hookspecs import MODE_R
from netpoll.core.runtime import runtime
from netpoll.testing import Faults
from netpoll.testing.faults import on_thread
from tests.helpers.net import ReadOutcomes

MESSAGES = 200
JOIN = 10.0


class CountingSocket(socket.socket):
    """A socket that counts its ``recv`` calls (the direct read path's call)."""

    recv_calls = 0

    def recv(self, n: int, flags: int = 0) -> bytes:
        self.recv_calls += 1
        return super().recv(n, flags)


@contextlib.contextmanager
def tcp_pair() -> Iterator[tuple[CountingSocket, socket.socket]]:
    """A non-blocking counting socket and its blocking peer, over loopback TCP."""
    with socket.create_server(("127.0.0.1", 0)) as ln:
        peer = socket.create_connection(ln.getsockname(), timeout=JOIN)
        accepted, _ = ln.accept()
    ours = CountingSocket(fileno=accepted.detach())
    ours.setblocking(False)
    try:
        yield ours, peer
    finally:
        peer.close()
        ours.close()


def echo_peer(peer: socket.socket, out: dict[str, Any]) -> threading.Thread:
    """A thread that sends MESSAGES pings and reads each echo back."""

    def run() -> None:
        try:
            for i in range(MESSAGES):
                msg = b"ping %05d" % i
                peer.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    chunk = peer.recv(len(msg) - len(got))
                    assert chunk, "echo server closed early"
                    got += chunk
                assert got == msg
            peer.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t


def serve_echo(fd: FD) -> int:
    """Echo until EOF through ``fd``; returns the messages echoed."""
    n = 0
    while True:
        data = fd.read(65536)
        if not data:
            return n
        fd.write(data)
        n += 1


def run_echo(in_goroutine: bool) -> tuple[int, int]:
    """Echo MESSAGES through an FD in a goroutine or this thread: (echoed, recv calls)."""
    with tcp_pair() as (ours, peer):
        out: dict[str, Any] = {}

        def body() -> int:
            fd = FD(ours)
            try:
                return serve_echo(fd)
            finally:
                fd.close()

        t = echo_peer(peer, out)
        try:
            echoed = netpoll.run(body) if in_goroutine else body()
        finally:
            t.join(JOIN)
        assert "error" not in out, out
        return echoed, ours.recv_calls


@pytest.mark.parametrize("kind", ["goroutine", "thread"])
def test_one_recv_per_echoed_message(backend: str, kind: str) -> None:
    """Each ping arrives while the server waits: after the first short read every
    read waits first and its one recv returns the data (plus one for EOF and at
    most a few for the start)."""
    if kind == "thread" and current_thread_g().poll_m is not None:
        pytest.skip("this thread parks on a lock (no wake fd here), so it tries first")
    spec = runtime.spec()
    if kind == "goroutine" and spec.edge_triggered and not spec.reports_except:
        pytest.skip(f"{backend} reports no exceptional events: short reads are not trusted there")
    echoed, recvs = run_echo(kind == "goroutine")
    assert echoed == MESSAGES
    # Without the hint every message costs two: the EAGAIN one and the data.
    assert recvs <= MESSAGES + 3, f"{recvs} recv calls for {MESSAGES} messages"


def test_notice_between_two_reads_is_kept(backend: str) -> None:
    """Data that arrives after a short read, while the goroutine is elsewhere,
    sets the ready latch; the next read waits first and must find that latch,
    not drop it first (that order would park on an edge already consumed)."""
    with tcp_pair() as (ours, peer):

        def body() -> list[bytes]:
            fd = FD(ours)
            try:
                got = [fd.read(100)]  # short: the hint is set
                peer.sendall(b"second")
                # Park elsewhere while the M polls and latches the edge.
                netpoll.sleep(0.05)
                fd.set_deadline_in(5.0, MODE_R)  # a lost notice fails here, not hangs
                got.append(fd.read(100))
                return got
            finally:
                fd.close()

        peer.sendall(b"first")
        assert netpoll.run(body) == [b"first", b"second"]


def test_only_tcp_sockets_take_the_short_read_hint(backend: str) -> None:
    """Datagrams and unix stream reads can be short with more queued (a datagram
    boundary, a message carrying fds): they keep trying first.  So does TCP on
    an edge-triggered backend that cannot report exceptional events."""
    spec = runtime.spec()
    tcp_drains = not spec.edge_triggered or spec.reports_except
    assert tcp_drains is (backend != "kqueue"), spec
    cases: list[tuple[socket.socket, bool]] = []
    tcp_ln = socket.create_server(("127.0.0.1", 0))
    cases.append((socket.create_connection(tcp_ln.getsockname()), tcp_drains))
    cases.append((socket.socket(socket.AF_INET, socket.SOCK_DGRAM), False))
    a, b = socket.socketpair()
    cases += [(a, False), (b, False)]
    fds = []
    try:
        for sock, drains in cases:
            sock.setblocking(False)
            fd = FD(sock)
            fds.append(fd)
            assert fd.pd is not None and fd.pd.short_read_drains is drains, sock
    finally:
        for fd in fds:
            fd.close()
        tcp_ln.close()


def test_a_read_stopped_at_the_urgent_mark_is_not_taken_as_empty(backend: str) -> None:
    """``recv`` stops short at a TCP urgent mark with data queued behind it, and
    no new edge comes for that data: the next read must still find it."""
    with tcp_pair() as (ours, peer):
        peer.send(b"abc")
        peer.send(b"!", socket.MSG_OOB)
        peer.send(b"def")

        def body() -> list[bytes]:
            fd = FD(ours)
            try:
                netpoll.sleep(0.05)  # all three segments are in
                got = [fd.read(100)]
                fd.set_deadline_in(5.0, MODE_R)  # a stall fails here, not hangs
                got.append(fd.read(100))
                return got
            finally:
                fd.close()

        # The urgent byte itself is out of band: plain reads skip it.
        assert netpoll.run(body) == [b"abc", b"def"]


def _read_after_a_short_read(ours: socket.socket, before_second: Any = None) -> list[Any]:
    """In a goroutine: let everything sent arrive, read once (short), then read
    again under a 5 s deadline; the outcomes (data, or the exception's type)."""

    def body() -> list[Any]:
        fd = FD(ours)
        try:
            netpoll.sleep(0.05)  # everything is in, and its edges are taken
            got: list[Any] = [fd.read(100)]
            if before_second is not None:
                before_second()
            fd.set_deadline_in(5.0, MODE_R)  # a stall fails here, not hangs
            try:
                got.append(fd.read(100))
            except OSError as exc:
                got.append(type(exc))
            return got
        finally:
            fd.close()

    return netpoll.run(body)


def test_eof_behind_a_short_read_is_read(backend: str) -> None:
    """The FIN right behind the data is taken by the read that returns the data,
    and its edge came before: the next read must still see EOF."""
    with tcp_pair() as (ours, peer):
        peer.sendall(b"last words")
        peer.shutdown(socket.SHUT_WR)
        assert _read_after_a_short_read(ours) == [b"last words", b""]


def test_a_reset_behind_a_short_read_is_reported(backend: str) -> None:
    """A reset that came with the data: the next read raises it, not waits."""
    with tcp_pair() as (ours, peer):
        peer.sendall(b"data")
        time.sleep(0.05)  # the data arrives first
        # SO_LINGER with a zero timeout: close sends a reset.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        assert _read_after_a_short_read(ours) == [b"data", ConnectionResetError]


def test_shutting_down_reads_after_a_short_read_gives_eof(backend: str) -> None:
    """A local shutdown(SHUT_RD) between two reads: the second sees EOF at once."""
    with tcp_pair() as (ours, peer):
        peer.sendall(b"data")
        got = _read_after_a_short_read(ours, lambda: ours.shutdown(socket.SHUT_RD))
        assert got == [b"data", b""]


def test_a_watched_goroutine_read_tries_the_call_first(backend: str) -> None:
    """While a plugin watches reads, a goroutine's read after a short one still
    tries the system call first: the plugin sees the EAGAIN round."""
    watch = ReadOutcomes()
    with tcp_pair() as (ours, peer):

        def body() -> bytes:
            fd = FD(ours)
            try:
                first = fd.read(100)  # direct and short: sets the hint
                assert first == b"one"
                runtime.pm.register(watch)
                try:
                    late = threading.Timer(0.05, peer.sendall, (b"two",))
                    late.start()
                    try:
                        return fd.read(100)
                    finally:
                        late.join(JOIN)
                finally:
                    runtime.pm.unregister(watch)
            finally:
                fd.close()

        peer.sendall(b"one")
        assert netpoll.run(body) == b"two"
    outcomes = watch.outcomes
    assert outcomes[0] == "EAGAIN" and outcomes[-1] == "data", outcomes


def test_a_thread_that_parked_leaves_no_hint_a_goroutine_trusts(backend: str) -> None:
    """A thread's read parks in the kernel while the M the fd is registered
    with takes the edge of the data that wakes it; the thread reads part of
    that data.  The rest is queued with no edge to come, so a goroutine's next
    read must try first; parking first would wait for its deadline."""
    if current_thread_g().poll_m is not None:
        pytest.skip("this thread parks on a lock (no wake fd here), not in the kernel")
    with tcp_pair() as (ours, peer):
        fd = FD(ours)
        try:
            # A goroutine parks on the fd first: it is registered with the M.
            g = netpoll.go(fd.read, 1)
            time.sleep(0.05)
            peer.sendall(b"a")
            assert g.join(JOIN) and g.result() == b"a"
            # This thread parks; its wait starts late, so the M's poller
            # delivers the edge of the data to it first.
            late = threading.Timer(0.05, peer.sendall, (b"x" * 100,))
            with Faults() as faults:
                faults.delay("netpollwait", 0.3, where=on_thread())
                late.start()
                try:
                    assert fd.read(10) == b"x" * 10  # full: 90 bytes stay queued
                finally:
                    late.join(JOIN)
            fd.set_deadline_in(2.0, MODE_R)  # a stall fails here, not hangs
            g = netpoll.go(fd.read, 100)
            assert g.join(JOIN)
            assert g.result() == b"x" * 90
        finally:
            fd.close()
