"""net: dialing and listening — refused ports, happy eyeballs, self-connect retry, cancel,
local addresses, control, keep-alive, dual-stack listeners, backlog."""

from __future__ import annotations

import errno
import importlib
import os
import socket
import threading
import time
from typing import Any

import pytest

import netpoll
import netpoll.net.lookup as lookup_mod
from netpoll.core.hookspecs import hookimpl
from netpoll.net.sock import _read_backlog, max_listener_backlog
from tests.helpers.net import (
    Blackhole,
    FailConnect,
    RedirectConnect,
    has_ipv6,
    is_v4,
    is_v6,
    listener,
    open_fd_count,
    plugin,
)

needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def dual_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """A host name that resolves to ::1 then 127.0.0.1 (resolver seam)."""
    real = lookup_mod._gai

    def fake(host: str) -> list[tuple[str, str]]:
        if host == "dual.test":
            return [("::1", ""), ("127.0.0.1", "")]
        if host == "v4first.test":
            return [("127.0.0.1", ""), ("::1", "")]
        return real(host)

    monkeypatch.setattr(lookup_mod, "_gai", fake)
    return "dual.test"


# -- refused, errors ------------------------------------------------------------


def test_dial_closed_port_is_refused(backend: str) -> None:
    port = closed_port()
    before = open_fd_count()
    with pytest.raises(ConnectionRefusedError) as info:
        netpoll.dial("tcp", f"127.0.0.1:{port}")
    e = info.value
    assert isinstance(e, netpoll.OpError)
    assert str(e) == f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    assert (e.op, e.net, e.source, e.addr) == (
        "dial",
        "tcp",
        None,
        netpoll.TCPAddr("127.0.0.1", port),
    )
    assert e.errno == errno.ECONNREFUSED
    assert open_fd_count() == before


def test_dial_missing_unix_socket(backend: str, tmp_path: Any) -> None:
    path = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError) as info:
        netpoll.dial("unix", path)
    assert str(info.value) == f"dial unix {path}: connect: no such file or directory"


def test_listen_address_in_use(backend: str) -> None:
    with listener("tcp") as ln:
        with pytest.raises(OSError) as info:
            netpoll.listen("tcp4", str(ln.addr()))
        assert isinstance(info.value, netpoll.OpError)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == f"listen tcp4 {ln.addr()}: bind: address already in use"


def test_listen_failure_closes_socket(backend: str) -> None:
    class FailListen:
        @hookimpl(wrapper=True)
        def listen(self, sock: socket.socket, backlog: int) -> Any:
            raise OSError(errno.ENOBUFS, "No buffer space available")
            yield  # pragma: no cover

    closes: list[int] = []

    class CountClose:
        @hookimpl(wrapper=True)
        def close(self, sock: socket.socket) -> Any:
            closes.append(1)
            return (yield)

    before = open_fd_count()
    with (
        plugin(FailListen()),
        plugin(CountClose()),
        pytest.raises(netpoll.OpError, match="listen: no buffer space available"),
    ):
        netpoll.listen("tcp", "127.0.0.1:0")
    assert closes == [1]  # through the table's close
    assert open_fd_count() == before


# -- happy eyeballs (Go's TestDialParallel / dialParallel) ----------------------------


@needs_ipv6
def test_happy_eyeballs_unreachable_primary(backend: str, dual_name: str) -> None:
    with listener("tcp") as ln, Blackhole(socket.AF_INET6) as hole:
        port = ln.addr().port
        redirect = RedirectConnect(is_v6, hole.addr)
        with plugin(redirect):
            t0 = time.monotonic()
            c = netpoll.Dialer(fallback_delay=0.3).dial("tcp", f"{dual_name}:{port}")
            elapsed = time.monotonic() - t0
        with c, ln.accept():
            assert c.remote_addr() == netpoll.TCPAddr("127.0.0.1", port)
        assert 0.25 <= elapsed < 3.0, elapsed  # about fallback_delay
        assert is_v6(redirect.calls[0]) and is_v4(redirect.calls[1])


@needs_ipv6
def test_happy_eyeballs_primary_fails_fast(backend: str, dual_name: str) -> None:
    with listener("tcp") as ln:
        port = ln.addr().port
        refuse = FailConnect(is_v6, ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
        with plugin(refuse):
            t0 = time.monotonic()
            c = netpoll.Dialer(fallback_delay=10.0).dial("tcp", f"{dual_name}:{port}")
            elapsed = time.monotonic() - t0
        with c, ln.accept():
            assert c.remote_addr() == netpoll.TCPAddr("127.0.0.1", port)
        assert elapsed < 5.0  # the fallback started at once, not after 10 s


@needs_ipv6
def test_happy_eyeballs_both_fail_reports_primary(backend: str, dual_name: str) -> None:
    port = closed_port()
    reset = FailConnect(is_v4, ConnectionResetError(errno.ECONNRESET, "reset"))
    with plugin(reset), pytest.raises(ConnectionRefusedError) as info:
        netpoll.dial("tcp", f"{dual_name}:{port}")
    assert info.value.addr == netpoll.TCPAddr("::1", port)  # type: ignore[attr-defined]


@needs_ipv6
def test_happy_eyeballs_primary_wins_and_fallback_never_starts(
    backend: str, dual_name: str
) -> None:
    with netpoll.listen("tcp", ":0") as ln:  # dual stack: both families reach it
        port = ln.addr().port  # type: ignore[union-attr]
        seen = RedirectConnect(lambda a: False, None)
        with plugin(seen):
            c = netpoll.Dialer(fallback_delay=5.0).dial("tcp", f"{dual_name}:{port}")
        with c, ln.accept():
            assert c.remote_addr() == netpoll.TCPAddr("::1", port)
        assert len(seen.calls) == 1


@needs_ipv6
def test_negative_fallback_delay_dials_serially(backend: str, dual_name: str) -> None:
    with listener("tcp") as ln:
        port = ln.addr().port
        refuse = FailConnect(is_v6, ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
        calls = RedirectConnect(lambda a: False, None)
        with plugin(calls), plugin(refuse):
            c = netpoll.Dialer(fallback_delay=-1).dial("tcp", f"{dual_name}:{port}")
        with c, ln.accept():
            assert c.remote_addr() == netpoll.TCPAddr("127.0.0.1", port)


@needs_ipv6
def test_happy_eyeballs_loser_is_closed(backend: str, dual_name: str) -> None:
    """Both families connect; whichever loses, its socket is closed (no fd leak)."""
    with netpoll.listen("tcp", ":0") as ln:
        port = ln.addr().port  # type: ignore[union-attr]
        before = open_fd_count()
        for _ in range(5):
            c = netpoll.Dialer(fallback_delay=0.0).dial("tcp", f"{dual_name}:{port}")
            c.close()
            ln.set_deadline(time.time() + 0.2)
            while True:
                try:
                    ln.accept().close()
                except TimeoutError:
                    break
            ln.set_deadline(None)
        deadline = time.monotonic() + 3
        while open_fd_count() > before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert open_fd_count() == before


# -- self-connect (Go's TestTCPSelfConnect) -------------------------------------------


class SelfConnectFirst:
    """Connect hook: the first IPv4 attempt is connected to itself instead."""

    def __init__(self, times: int = 1) -> None:
        self.left = times
        self.attempts = 0

    @hookimpl(wrapper=True)
    def connect(self, sock: socket.socket, address: Any) -> Any:
        self.attempts += 1
        if self.left <= 0 or sock.family != socket.AF_INET:
            return (yield)
        self.left -= 1
        sock.bind(("127.0.0.1", 0))
        try:
            sock.connect(sock.getsockname())  # TCP simultaneous open with itself
        except BlockingIOError:
            pass
        try:
            yield
        except OSError:
            pass
        raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")


def test_self_connect_is_retried(backend: str) -> None:
    with listener("tcp") as ln:
        hook = SelfConnectFirst(times=1)
        with plugin(hook):
            c = netpoll.dial("tcp", str(ln.addr()))
        with c, ln.accept() as s:
            assert hook.attempts == 2
            assert c.remote_addr() == ln.addr()
            assert c.local_addr() != c.remote_addr()
            c.write(b"ok")
            assert s.read(2) == b"ok"


def test_self_connect_retried_at_most_twice(backend: str) -> None:
    with listener("tcp") as ln:
        hook = SelfConnectFirst(times=5)
        with plugin(hook):
            c = netpoll.dial("tcp", str(ln.addr()))
        with c:
            assert hook.attempts == 3  # Go gives up after two retries
            assert c.local_addr() == c.remote_addr()


# -- cancel (Go's TestDialCancel) ----------------------------------------------------


def test_cancel_aborts_a_hanging_dial(backend: str) -> None:
    with Blackhole() as hole:
        ev = threading.Event()
        threading.Timer(0.2, ev.set).start()
        before = open_fd_count()
        t0 = time.monotonic()
        with pytest.raises(netpoll.ErrCanceled) as info:
            netpoll.Dialer(cancel=ev, timeout=30).dial("tcp", f"127.0.0.1:{hole.addr[1]}")
        elapsed = time.monotonic() - t0
        assert 0.15 <= elapsed < 5.0
        e = info.value
        assert not isinstance(e, TimeoutError)
        assert str(e) == f"dial tcp 127.0.0.1:{hole.addr[1]}: operation was canceled"
        assert open_fd_count() == before


def test_cancel_already_set_opens_nothing(backend: str) -> None:
    ev = threading.Event()
    ev.set()
    before = open_fd_count()
    with pytest.raises(netpoll.ErrCanceled):
        netpoll.Dialer(cancel=ev).dial("tcp", "127.0.0.1:80")
    assert open_fd_count() == before


def test_cancel_unused_leaves_no_thread(backend: str) -> None:
    with listener("tcp") as ln:
        ev = threading.Event()
        c = netpoll.Dialer(cancel=ev).dial("tcp", str(ln.addr()))
        with c, ln.accept():
            assert not [t for t in threading.enumerate() if t.name == "net-dial-cancel"]


# -- timeouts on dial ---------------------------------------------------------------


def test_dial_timeout_reports_the_address(backend: str) -> None:
    with Blackhole() as hole:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            netpoll.dial("tcp", f"127.0.0.1:{hole.addr[1]}", timeout=0.2)
        assert 0.15 <= time.monotonic() - t0 < 5.0
        assert str(info.value) == f"dial tcp 127.0.0.1:{hole.addr[1]}: i/o timeout"


def test_serial_dial_moves_on_after_partial_deadline(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two addresses, 0.8 s in all: the hanging first one gets 0.4 s, then the second."""
    # (netpoll.net.dial the attribute is the function; fetch the module itself.)
    dial_mod = importlib.import_module("netpoll.net.dial")

    monkeypatch.setattr(dial_mod, "SANE_MINIMUM", 0.2)  # keep the test short
    with listener("tcp") as ln, Blackhole() as hole:
        port = ln.addr().port
        real = lookup_mod._gai
        monkeypatch.setattr(
            lookup_mod,
            "_gai",
            lambda h: [("127.0.0.2", ""), ("127.0.0.1", "")] if h == "two.test" else real(h),
        )
        redirect = RedirectConnect(lambda a: a == ("127.0.0.2", port), hole.addr)
        with plugin(redirect):
            t0 = time.monotonic()
            c = netpoll.Dialer(timeout=0.8, fallback_delay=-1).dial("tcp", f"two.test:{port}")
            elapsed = time.monotonic() - t0
        with c, ln.accept():
            assert c.remote_addr() == netpoll.TCPAddr("127.0.0.1", port)
        assert 0.3 <= elapsed < 3.0, elapsed  # the first address got half the time


# -- options: local address, control, keep-alive ---------------------------------------


def test_local_addr_and_control(backend: str) -> None:
    with listener("tcp") as ln:
        seen: list[tuple[str, str, int]] = []

        def control(network: str, address: str, raw: netpoll.RawConn) -> None:
            def fn(fd: int) -> None:
                s = socket.socket(fileno=os.dup(fd))
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                finally:
                    s.close()
                seen.append((network, address, fd))

            raw.control(fn)

        d = netpoll.Dialer(local_addr="127.0.0.1:0", control=control, keep_alive=-1)
        c = d.dial("tcp", str(ln.addr()))
        with c, ln.accept() as s:
            assert seen and seen[0][:2] == ("tcp4", str(ln.addr()))
            assert c.local_addr() == s.remote_addr()
            dup = socket.socket(fileno=os.dup(c.fileno()))
            try:
                assert dup.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            finally:
                dup.close()


def test_listen_config_control_and_keep_alive(backend: str) -> None:
    got: list[tuple[str, str]] = []

    def control(network: str, address: str, raw: netpoll.RawConn) -> None:
        got.append((network, address))
        raw.control(lambda fd: None)

    ln = netpoll.ListenConfig(control=control, keep_alive=42).listen("tcp", "127.0.0.1:0")
    with ln:
        assert got == [("tcp4", "127.0.0.1:0")]
        c = netpoll.dial("tcp", str(ln.addr()))
        with c, ln.accept() as s:
            dup = socket.socket(fileno=os.dup(s.fileno()))
            try:
                assert dup.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                if hasattr(socket, "TCP_KEEPIDLE"):
                    assert dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
                    assert dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 42
                assert dup.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
            finally:
                dup.close()


def test_control_error_closes_the_socket(backend: str) -> None:
    def control(network: str, address: str, raw: netpoll.RawConn) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    before = open_fd_count()
    with pytest.raises(PermissionError) as info:
        netpoll.Dialer(control=control).dial("tcp", "127.0.0.1:9")
    assert isinstance(info.value, netpoll.OpError)
    with pytest.raises(PermissionError):
        netpoll.ListenConfig(control=control).listen("tcp", "127.0.0.1:0")
    assert open_fd_count() == before


# -- dual stack and families -----------------------------------------------------------


@needs_ipv6
def test_tcp_wildcard_listens_dual_stack(backend: str) -> None:
    with netpoll.listen("tcp", ":0") as ln:
        port = ln.addr().port  # type: ignore[union-attr]
        assert str(ln.addr()) == f"[::]:{port}"
        for host in ("127.0.0.1", "[::1]"):
            c = netpoll.dial("tcp", f"{host}:{port}")
            with c, ln.accept() as s:
                assert s.remote_addr() == c.local_addr()  # 127.0.0.1 printed as IPv4
    with netpoll.listen("tcp4", ":0") as ln4:
        assert str(ln4.addr()).startswith("0.0.0.0:")
        with pytest.raises(OSError):
            netpoll.dial("tcp6", f"[::1]:{ln4.addr().port}")  # type: ignore[union-attr]
    with netpoll.listen("tcp6", ":0") as ln6:
        assert str(ln6.addr()).startswith("[::]:")
        with pytest.raises(ConnectionRefusedError):
            netpoll.dial("tcp4", f"127.0.0.1:{ln6.addr().port}")  # type: ignore[union-attr]


def test_dial_by_name_and_service(backend: str) -> None:
    with listener("tcp") as ln:
        c = netpoll.dial("tcp4", f"localhost:{ln.addr().port}")
        with c, ln.accept():
            assert c.remote_addr() == ln.addr()


def test_backlog() -> None:
    assert 1 <= max_listener_backlog() <= 65535
    assert _read_backlog("/nonexistent/somaxconn") == socket.SOMAXCONN


def test_backlog_caps(tmp_path: Any) -> None:
    p = tmp_path / "somaxconn"
    p.write_text("100000\n")
    assert _read_backlog(str(p)) == 65535
    p.write_text("0\n")
    assert _read_backlog(str(p)) == socket.SOMAXCONN
    p.write_text("512\n")
    assert _read_backlog(str(p)) == 512


# -- accept details, cancel while racing, finalizers ---------------------------------------


def test_accept_retries_connection_aborted(backend: str) -> None:
    class AbortOnce:
        def __init__(self) -> None:
            self.calls = 0

        @hookimpl(wrapper=True)
        def accept(self, sock: socket.socket) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort")
            return (yield)

    with listener("tcp") as ln:
        c = netpoll.dial("tcp", str(ln.addr()))
        hook = AbortOnce()
        with plugin(hook):
            s = ln.accept()  # the abort is retried invisibly
        with c, s:
            assert hook.calls >= 2
            assert s.remote_addr() == c.local_addr()


@needs_ipv6
def test_cancel_while_racing(backend: str, dual_name: str) -> None:
    with Blackhole(socket.AF_INET6) as hole6, Blackhole() as hole4:
        redirect6 = RedirectConnect(is_v6, hole6.addr)
        redirect4 = RedirectConnect(is_v4, hole4.addr)
        ev = threading.Event()
        threading.Timer(0.4, ev.set).start()
        before = open_fd_count()
        with plugin(redirect6), plugin(redirect4), pytest.raises(netpoll.ErrCanceled) as info:
            netpoll.Dialer(cancel=ev, fallback_delay=0.05).dial("tcp", f"{dual_name}:9")
        calls = redirect6.calls
        assert len(calls) == 2 and is_v6(calls[0]) and is_v4(calls[1])  # both were racing
        assert info.value.addr == netpoll.TCPAddr("::1", 9)  # type: ignore[attr-defined]
        assert open_fd_count() == before


def test_dropped_conn_and_listener_are_closed(backend: str) -> None:
    import gc

    from netpoll.core.finalizer import drain
    from netpoll.testing import Switch

    closed_by: list[str] = []

    def record_close(st: Any) -> None:
        closed_by.append(threading.current_thread().name)

    ln = netpoll.listen("tcp", "127.0.0.1:0")
    c = netpoll.dial("tcp", str(ln.addr()))
    cycle: list[Any] = [c, ln]
    cycle.append(cycle)  # only the cyclic collector frees them, as it would a real cycle
    with Switch() as sw:
        sw.set("close", record_close)
        with pytest.warns(ResourceWarning):
            del c, ln, cycle
            gc.collect()
        assert drain(10)
    # Closed through the poller, on the finalizer thread: never inside the
    # thread whose allocation ran the collector (it may hold a lock close needs).
    # (that their fds are gone is the no_leaks fixture's check)
    assert closed_by == ["netpoll-finalizer", "netpoll-finalizer"]
