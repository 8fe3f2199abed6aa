"""The Switch's own semantics (Go's net/internal/socktest): filters, stats, sockets, cost."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Generator
from typing import Any

import pytest

import netpoll
from netpoll.core.hookspecs import hookimpl
from netpoll.core.runtime import runtime
from netpoll.testing import Faults, Status, Switch
from netpoll.testing.switch import SOCKET_KINDS

TCP = (socket.AF_INET, socket.SOCK_STREAM, 0)


class Spy:
    """An inner wrapper: registered before the Switch, it sees only calls that really run."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl(wrapper=True)
    def socket(self, family: int, type: int, proto: int) -> Generator[None, Any, Any]:
        self.calls.append("socket")
        return (yield)

    @hookimpl(wrapper=True)
    def connect(self, sock: Any, address: Any) -> Generator[None, Any, Any]:
        self.calls.append("connect")
        return (yield)

    @hookimpl(wrapper=True)
    def close(self, sock: Any) -> Generator[None, Any, Any]:
        self.calls.append("close")
        return (yield)


def _fail(code: int) -> Any:
    def f(st: Status) -> None:
        raise OSError(code, os.strerror(code))

    return f


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_unknown_kind_is_an_error() -> None:
    sw = Switch()
    with pytest.raises(ValueError, match="unknown filter kind"):
        sw.set("bind", None)


def test_no_cost_when_absent_and_io_wrapped_only_on_demand(backend: str) -> None:
    table = runtime.table
    assert not any(table.wrapped[h] for h in ("socket", "close", "read", "write"))
    with Switch() as sw:
        assert table.wrapped["socket"] and table.wrapped["close"]
        # No read/write filter: the hot path still goes straight to the OS.
        assert not table.wrapped["read"] and not table.wrapped["write"]
        assert not table.wrapped["netpoll"]
        sw.set("read", lambda st: None)
        assert table.wrapped["read"] and not table.wrapped["write"]
        sw.set("read", None)
        assert not table.wrapped["read"]
        assert sw.wrapped_kinds() == list(SOCKET_KINDS)
    assert not any(table.wrapped[h] for h in ("socket", "connect", "close", "getsockopt_int"))


def test_before_filter_cancels_without_running_the_syscall(backend: str) -> None:
    spy = Spy()
    runtime.pm.register(spy)
    try:
        with Switch() as sw:
            sw.set("socket", _fail(errno.EMFILE))
            with pytest.raises(netpoll.OpError) as ei:
                netpoll.listen("tcp", "127.0.0.1:0")
            assert str(ei.value) == "listen tcp 127.0.0.1:0: socket: too many open files"
            assert spy.calls == []  # the inner plugin (and the OS) never saw it
            assert sw.stat(*TCP).open_failed == 1
            assert sw.stat(*TCP).opened == 0
            sw.set("socket", None)

            with netpoll.listen("tcp", "127.0.0.1:0") as ln:
                sw.set("connect", _fail(errno.ECONNREFUSED))
                with pytest.raises(ConnectionRefusedError):
                    netpoll.dial("tcp", str(ln.addr()), timeout=2)
                assert spy.calls == ["socket", "socket", "close"]  # no connect ran
                # Nothing connected: the listener has nothing to accept.
                ln.set_deadline(time.time() + 0.1)
                with pytest.raises(TimeoutError):
                    ln.accept()
            assert sw.stat(*TCP).connect_failed == 1
            assert sw.sockets() == {}
    finally:
        runtime.pm.unregister(spy)


def test_after_filter_sees_the_error_and_replaces_it(backend: str, tmp_path: Any) -> None:
    seen: list[BaseException | None] = []

    def f(st: Status) -> Any:
        def after(st: Status) -> None:
            seen.append(st.error)
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused instead")

        return after

    with Switch() as sw:
        sw.set("connect", f)
        path = str(tmp_path / "missing.sock")
        with pytest.raises(ConnectionRefusedError) as ei:
            netpoll.dial("unix", path)
        assert isinstance(seen[0], FileNotFoundError)  # the real outcome
        assert ei.value.errno == errno.ECONNREFUSED
        assert str(ei.value).endswith("connect: refused instead")
        assert sw.sockets() == {}


def test_after_filter_replaces_a_value(backend: str) -> None:
    """SO_ERROR said 0 (connected); the after filter returns ECONNREFUSED instead."""

    def f(st: Status) -> Any:
        if st.args["option"] != socket.SO_ERROR:
            return None
        return lambda st: errno.ECONNREFUSED

    with Switch() as sw, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        sw.set("getsockopt", f)
        with pytest.raises(ConnectionRefusedError) as ei:
            netpoll.dial("tcp", str(ln.addr()), timeout=2)
        assert str(ei.value) == f"dial tcp {ln.addr()}: connect: connection refused"
        st = sw.stat(*TCP)
        assert (st.connected, st.connect_failed) == (0, 1)
        assert list(sw.sockets()) == [ln.fileno()]


def test_after_filter_turns_an_error_into_success(backend: str, tmp_path: Any) -> None:
    """Editing status.error in place: the failed connect is reported as done."""

    def f(st: Status) -> Any:
        def after(st: Status) -> None:
            st.error = None

        return after

    with Switch() as sw:
        sw.set("connect", f)
        c = netpoll.dial("unix", str(tmp_path / "nobody"))  # "connected" to nothing
        try:
            with pytest.raises(OSError):
                c.write(b"x")
        finally:
            c.close()
        assert sw.stat(socket.AF_UNIX, socket.SOCK_STREAM).connected == 1


def test_created_socket_replaced_by_error_is_closed(backend: str) -> None:
    created: list[int] = []

    def f(st: Status) -> Any:
        def after(st: Status) -> None:
            created.append(st.result.fileno())
            raise OSError(errno.ENFILE, os.strerror(errno.ENFILE))

        return after

    with Switch() as sw:
        sw.set("socket", f)
        with pytest.raises(netpoll.OpError, match="socket: too many open files in system"):
            netpoll.dial("tcp", "127.0.0.1:9", timeout=1)
        assert created and not _fd_open(created[0])
        assert sw.sockets() == {}
        assert sw.stat(*TCP).open_failed == 1


def test_accepted_conn_replaced_by_error_is_closed(backend: str) -> None:
    accepted: list[int] = []

    def f(st: Status) -> Any:
        def after(st: Status) -> None:
            if st.error is None:
                accepted.append(st.result[0].fileno())
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

        return after

    with Switch() as sw, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        c = netpoll.dial("tcp", str(ln.addr()), timeout=2)
        try:
            sw.set("accept", f)
            with pytest.raises(netpoll.OpError) as ei:
                ln.accept()
            assert ei.value.errno == errno.EMFILE
            assert str(ei.value) == f"accept tcp {ln.addr()}: accept: too many open files"
            assert accepted and accepted[0] not in sw.sockets()
            # The peer of the closed conn sees EOF or a reset.
            c.set_deadline(time.time() + 2)
            try:
                assert c.read(1) == b""
            except ConnectionResetError:
                pass
        finally:
            c.close()
        st = sw.stat(*TCP)
        assert (st.accepted, st.accept_failed) == (0, 1)
    assert sw.sockets() == {}


def test_cancelled_close_still_closes_and_reports(backend: str) -> None:
    with Switch() as sw, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        c = netpoll.dial("tcp", str(ln.addr()), timeout=2)
        s = ln.accept()
        fd = s.fileno()
        sw.set("close", lambda st: _fail(errno.EIO)(st) if st.fd == fd else None)
        with pytest.raises(netpoll.OpError) as ei:
            s.close()
        sw.set("close", None)
        assert ei.value.op == "close" and ei.value.errno == errno.EIO
        assert "close: input/output error" in str(ei.value)
        assert fd not in sw.sockets()
        c.close()
        st = sw.stat(*TCP)
        assert (st.closed, st.close_failed) == (1, 1)
    assert sw.sockets() == {}


def test_stats_and_sockets_are_exact(backend: str) -> None:
    with Switch() as sw:
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        c = netpoll.dial("tcp", str(ln.addr()), timeout=2)
        s = ln.accept()
        socks = sw.sockets()
        assert set(socks) == {ln.fileno(), c.fileno(), s.fileno()}
        assert socks[s.fileno()].how == "accept" and socks[c.fileno()].how == "socket"
        where = socks[c.fileno()].where()
        assert "test_stats_and_sockets_are_exact" in where and "netpoll.dial" in where
        for x in (c, s, ln):
            x.close()
        assert sw.sockets() == {}
        st = sw.stats()[(socket.AF_INET, socket.SOCK_STREAM, 0)]
        counts = (st.opened, st.listened, st.connected, st.accepted, st.closed)
        assert counts == (2, 1, 1, 1, 3)
        failures = (st.open_failed, st.listen_failed, st.connect_failed, st.accept_failed)
        assert failures == (0, 0, 0, 0) and st.close_failed == 0
        assert "opened=2" in str(st)


def test_status_carries_cookie_fd_and_arguments(backend: str) -> None:
    seen: list[Status] = []

    def f(st: Status) -> None:
        seen.append(st)

    with Switch() as sw, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        sw.set("connect", f)
        sw.set("listen", f)
        with netpoll.dial("tcp", str(ln.addr()), timeout=2) as c:
            assert seen[0].kind == "connect"
            assert seen[0].cookie == TCP
            assert seen[0].fd == c.fileno()
            assert seen[0].address == ("127.0.0.1", ln.addr().port)
            ln.accept().close()


def test_short_read_and_write_through_max_bytes(backend: str) -> None:
    writes: list[int] = []

    def short_write(st: Status) -> Any:
        st.max_bytes = 3
        return lambda st: writes.append(st.result)

    def short_read(st: Status) -> None:
        st.max_bytes = 2

    with (
        Switch() as sw,
        netpoll.listen("tcp", "127.0.0.1:0") as ln,
        netpoll.dial("tcp", str(ln.addr()), timeout=2) as c,
        ln.accept() as s,
    ):
        sw.set("write", short_write)
        assert c.write(b"0123456789") == 10  # the write loop hides short writes
        assert writes == [3, 3, 3, 1]
        sw.set("write", None)
        sw.set("read", short_read)
        s.set_deadline(time.time() + 2)
        assert s.read(100) == b"01"
        sw.set("read", None)
        assert s.read(100) == b"23456789"


def test_layers_and_set_filter_the_same_kind(backend: str) -> None:
    calls: list[str] = []
    with Switch() as sw, Faults(sw) as f, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        sw.set("connect", lambda st: calls.append("set"))
        f.fail("connect", errno.ECONNREFUSED, times=1)
        with pytest.raises(ConnectionRefusedError):
            netpoll.dial("tcp", str(ln.addr()), timeout=2)
        assert calls == ["set"]
        f.clear()
        assert sw.get("connect") is not None  # the set() filter is untouched
        netpoll.dial("tcp", str(ln.addr()), timeout=2).close()
        assert calls == ["set", "set"]
        ln.accept().close()


def test_concurrent_use_from_many_threads(backend: str) -> None:
    n = 24
    counted: dict[str, int] = {}
    lock = threading.Lock()

    def count(st: Status) -> None:
        with lock:
            counted[st.kind] = counted.get(st.kind, 0) + 1

    errors: list[BaseException] = []
    with Switch() as sw:
        for kind in ("socket", "connect", "accept", "close", "read", "write"):
            sw.set(kind, count)
        ln = netpoll.listen("tcp", "127.0.0.1:0")

        echoes: list[threading.Thread] = []

        def server() -> None:
            for _ in range(n):
                s = ln.accept()
                t = threading.Thread(target=echo, args=(s,))
                echoes.append(t)
                t.start()

        def echo(s: netpoll.Conn) -> None:
            with s:
                s.write(s.read(5))

        def client(i: int) -> None:
            try:
                with netpoll.dial("tcp", str(ln.addr()), timeout=5) as c:
                    c.set_deadline(time.time() + 5)
                    c.write(b"%05d" % i)
                    assert c.read(5) == b"%05d" % i
            except BaseException as exc:
                errors.append(exc)

        srv = threading.Thread(target=server)
        srv.start()
        clients = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(10)
        srv.join(10)
        for t in echoes:
            t.join(10)
        ln.close()
        assert not errors, errors
        st = sw.stat(*TCP)
        assert (st.opened, st.connected, st.accepted, st.closed) == (n + 1, n, n, 2 * n + 1)
        assert sw.sockets() == {}
        assert counted["socket"] == n + 1 and counted["close"] == 2 * n + 1
        assert counted["connect"] == n and counted["accept"] >= n
        assert counted["write"] >= 2 * n and counted["read"] >= 2 * n


def test_io_filters_of_two_switches_compose(backend: str) -> None:
    """The Switch installed last sees a read first and passes its cut buffer on to the other.

    Each Switch's ``max_bytes`` reaches the OS call: the smaller limit wins,
    whichever Switch set it, and the earlier Switch's filter sees the buffer
    the later one cut.
    """
    seen: list[tuple[str, int]] = []

    def limit(name: str, n: int) -> Any:
        def f(st: Status) -> None:
            with memoryview(st.args["buf"]) as view:
                seen.append((name, view.nbytes))
            st.max_bytes = n

        return f

    with (
        netpoll.listen("tcp", "127.0.0.1:0") as ln,
        netpoll.dial("tcp", str(ln.addr()), timeout=2) as c,
        ln.accept() as s,
        Switch() as outer,
        Switch() as inner,
    ):
        c.write(b"0123456789")
        s.set_deadline(time.time() + 2)
        outer.set("read", limit("outer", 2))
        inner.set("read", limit("inner", 3))
        assert s.read(100) == b"01"  # the earlier Switch's smaller limit is kept
        assert seen == [("inner", 100), ("outer", 3)]
        inner.set("read", None)
        assert s.read(100) == b"23"  # the earlier Switch alone
        outer.set("read", None)
        inner.set("read", limit("inner", 4))
        assert s.read(100) == b"4567"  # the later Switch alone
        assert seen[2:] == [("outer", 100), ("inner", 100)]
