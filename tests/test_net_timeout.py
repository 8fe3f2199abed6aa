"""net: deadlines, after Go's net/timeout_test.go (TestDialTimeout, TestAcceptTimeout*,
TestReadTimeout*, TestWriteTimeout, TestVariousDeadlines, TestReadWriteDeadlineRace).

Timing asserts check order and generous bounds only.
"""

from __future__ import annotations

import datetime
import errno
import socket
import threading
import time
from typing import Any

import pytest

import netpoll
from netpoll.core.hookspecs import hookimpl
from tests.helpers.net import Threads, conn_pair, is_timeout, listener, open_fd_count, plugin

# Go's aLongTimeAgo (time.Unix(1, 0)): a datetime, since a bare number that old
# is refused as a relative time by mistake.
A_LONG_TIME_AGO = datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=datetime.timezone.utc)
SLACK = 3.0  # generous upper bound on top of any expected duration


class HangConnect:
    """Connect hook: report "in progress" without connecting (Go's socktest delay).

    The socket stays unconnected, so only the dial deadline ends the wait.
    """

    @hookimpl(wrapper=True)
    def connect(self, sock: socket.socket, address: Any) -> Any:
        raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
        yield  # pragma: no cover


@pytest.mark.parametrize(
    ("timeout", "delta"),
    [
        (0.0, None),  # a zero timeout: the deadline is now
        (None, -5.0),  # deadline in the past
        (None, -1.0),
        (0.001, None),
        (None, 0.001),
        (0.001, 5.0),  # timeout earlier than the deadline
        (5.0, 0.001),  # deadline earlier than the timeout
        (0.1, None),
    ],
)
def test_dial_timeout(backend: str, timeout: float | None, delta: float | None) -> None:
    before = open_fd_count()
    with plugin(HangConnect()):
        deadline = None if delta is None else time.time() + delta
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            netpoll.Dialer(timeout=timeout, deadline=deadline).dial("tcp", "127.0.0.1:9")
        assert time.monotonic() - t0 < 0.1 + SLACK
    e = info.value
    assert isinstance(e, netpoll.OpError) and e.op == "dial"
    assert str(e) == "dial tcp 127.0.0.1:9: i/o timeout"
    assert e.errno == errno.ETIMEDOUT
    assert open_fd_count() == before


def test_dial_deadline_as_datetime(backend: str) -> None:
    with plugin(HangConnect()):
        when = datetime.datetime.now() + datetime.timedelta(milliseconds=50)
        with pytest.raises(TimeoutError):
            netpoll.Dialer(deadline=when).dial("tcp", "127.0.0.1:9")


# -- accept ---------------------------------------------------------------------------


def test_accept_timeout(backend: str) -> None:
    with listener("tcp") as ln:
        # A past deadline fails even with a connection queued.
        c = netpoll.dial("tcp", str(ln.addr()))
        try:
            ln.set_deadline(time.time() - 5)
            for _ in range(2):
                with pytest.raises(TimeoutError) as info:
                    ln.accept()
                assert is_timeout(info.value)
                assert str(info.value) == f"accept tcp {ln.addr()}: i/o timeout"
            # A future deadline: the queued conn first, then the timeout.
            ln.set_deadline(time.time() + 0.05)
            ln.accept().close()
            with pytest.raises(TimeoutError):
                ln.accept()
        finally:
            c.close()


def test_accept_timeout_must_return(backend: str) -> None:
    with listener("tcp") as ln:
        ln.set_deadline(None)
        ln.set_deadline(A_LONG_TIME_AGO)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            ln.accept()
        assert time.monotonic() - t0 < SLACK


def test_accept_timeout_must_not_return(backend: str) -> None:
    with listener("tcp") as ln:
        result: list[BaseException] = []

        def acceptor() -> None:
            ln.set_deadline(time.time() - 5)
            ln.set_deadline(None)  # clearing an expired deadline: accept blocks again
            try:
                ln.accept()
            except OSError as exc:
                result.append(exc)

        t = threading.Thread(target=acceptor)
        t.start()
        t.join(0.3)
        assert t.is_alive(), f"accept returned: {result}"
        ln.close()
        t.join(5)
        assert isinstance(result[0], netpoll.ErrClosed)


# -- read ---------------------------------------------------------------------------------


def test_read_timeout(backend: str) -> None:
    with conn_pair("tcp") as (c, s):
        s.write(b"READ TIMEOUT TEST")
        time.sleep(0.05)  # the data is there
        # Past deadline: fails even with data ready, again and again.
        c.set_read_deadline(time.time() - 5)
        for _ in range(2):
            with pytest.raises(TimeoutError) as info:
                c.read(1)
            assert is_timeout(info.value)
        # Future deadline: the data is read, then the timeout comes.
        c.set_read_deadline(time.time() + 0.05)
        got = b""
        while True:
            try:
                got += c.read(1)
            except TimeoutError:
                break
        assert got == b"READ TIMEOUT TEST"
        with pytest.raises(TimeoutError):
            c.read(1)


def test_read_timeout_must_not_return(backend: str) -> None:
    with conn_pair("tcp") as (c, _s):
        result: list[BaseException] = []

        def reader() -> None:
            c.set_deadline(time.time() - 5)
            c.set_write_deadline(time.time() - 5)
            c.set_read_deadline(None)
            try:
                c.read(1)
            except OSError as exc:
                result.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        t.join(0.3)
        assert t.is_alive(), f"read returned: {result}"
        c.close()
        t.join(5)
        assert isinstance(result[0], netpoll.ErrClosed)
        assert not isinstance(result[0], TimeoutError)


def test_deadline_extended_while_parked(backend: str) -> None:
    with conn_pair("tcp") as (c, s):
        c.set_read_deadline(time.time() + 0.2)
        threading.Timer(0.05, lambda: c.set_read_deadline(time.time() + 0.5)).start()
        threading.Timer(0.4, lambda: s.write(b"x")).start()
        assert c.read(1) == b"x"  # the first deadline no longer applies


def test_timeout_then_extend_resumes(backend: str) -> None:
    with conn_pair("tcp") as (c, s):
        c.set_read_deadline(time.time() + 0.02)
        with pytest.raises(TimeoutError):
            c.read(1)
        c.set_read_deadline(time.time() + 5)
        s.write(b"y")
        assert c.read(1) == b"y"


# -- write -----------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [-5.0, 0.01])
def test_write_timeout(backend: str, timeout: float) -> None:
    with conn_pair("tcp") as (c, _s):
        c.set_write_deadline(time.time() + timeout)
        for _ in range(2):
            while True:
                try:
                    c.write(b"WRITE TIMEOUT TEST")
                except TimeoutError as exc:
                    assert is_timeout(exc)
                    assert exc.written == 0  # type: ignore[attr-defined]
                    break
                assert timeout > 0, "a past deadline must fail at once"
                time.sleep(timeout / 3)


def test_write_timeout_reports_partial_write(backend: str) -> None:
    with conn_pair("tcp") as (c, _s):
        data = b"w" * (32 << 20)
        c.set_write_deadline(time.time() + 0.2)
        with pytest.raises(TimeoutError) as info:
            c.write(data)
        assert 0 < info.value.written < len(data)  # type: ignore[attr-defined]


# -- many deadlines --------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1])
def test_various_deadlines(backend: str, timeout: float) -> None:
    with listener("tcp") as ln:
        for _ in range(2):
            c = netpoll.dial("tcp", str(ln.addr()))
            s = ln.accept()
            stop = threading.Event()

            def flood(conn: netpoll.Conn = s, stop: threading.Event = stop) -> None:
                chunk = b"a" * 4096
                try:
                    while not stop.is_set():
                        conn.write(chunk)
                except OSError:
                    pass

            t = threading.Thread(target=flood)
            t.start()
            try:
                t0 = time.monotonic()
                c.set_deadline(time.time() + timeout)
                buf = bytearray(4096)
                with pytest.raises(TimeoutError) as info:
                    while True:
                        c.readinto(buf)
                assert is_timeout(info.value)
                assert time.monotonic() - t0 < timeout + SLACK
            finally:
                stop.set()
                c.close()
                s.close()
                t.join()


def test_read_write_deadline_race(backend: str) -> None:
    with listener("tcp") as ln:
        c = netpoll.dial("tcp", str(ln.addr()))  # never accepted: sits in the backlog
        n = 200
        wg = Threads()

        def setter() -> None:
            for _ in range(n):
                c.set_read_deadline(time.time() + 2e-6)
                c.set_write_deadline(time.time() + 2e-6)
                time.sleep(2e-6)

        def reader() -> None:
            b = bytearray(1)
            for _ in range(n):
                try:
                    c.readinto(b)
                except OSError:
                    pass

        def writer() -> None:
            for _ in range(n):
                try:
                    c.write(b"x")
                except OSError:
                    pass

        wg.go(setter)
        wg.go(reader)
        wg.go(writer)
        try:
            wg.wait(60)
        finally:
            c.close()
