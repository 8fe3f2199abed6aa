"""The connection path's shortcuts keep their semantics (net.sock.accept_tcp, sched.go, G.run).

Accepted TCP conns get their options from a list built once per keep-alive
value (the ListenConfig may change between accepts); an M reads
``NETPOLL_PROCS`` at its first ``go``; a goroutine's function and arguments
are not kept alive by the G while it runs.  Bodies run in a plain thread and
as a goroutine (tests/conftest.py).
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import netpoll
from netpoll import Chan
from netpoll.core import g as g_module
from netpoll.core import procs
from netpoll.core.goroutine import g_of
from netpoll.core.hookspecs import hookimpl
from netpoll.core.runtime import runtime

JOIN = 10.0
T = TypeVar("T")


def _sockopt(conn: netpoll.Conn, level: int, opt: int) -> int:
    dup = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        return int(dup.getsockopt(level, opt))
    finally:
        dup.close()


def test_accept_options_follow_the_listen_config_between_accepts(backend: str) -> None:
    cfg = netpoll.ListenConfig(keep_alive=42)
    ln = cfg.listen("tcp", "127.0.0.1:0")
    with ln:
        for keep_alive, want_on, want_idle in ((42, 1, 42), (-1, 0, None), (7, 1, 7), (42, 1, 42)):
            cfg.keep_alive = keep_alive
            with netpoll.dial("tcp", str(ln.addr())) as c, ln.accept() as s:
                assert _sockopt(s, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                assert _sockopt(s, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == want_on
                if want_idle is not None and hasattr(socket, "TCP_KEEPIDLE"):
                    assert _sockopt(s, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == want_idle
                    assert _sockopt(s, socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == want_idle
                # The addresses recorded at accept, without an FD reference.
                assert s.local_addr() == c.remote_addr() == ln.addr()
                assert s.remote_addr() == c.local_addr()
                c.write(b"ping")
                assert s.read(4) == b"ping"


def test_accept_with_a_bad_keep_alive_loses_no_conn(backend: str) -> None:
    cfg = netpoll.ListenConfig()
    ln = cfg.listen("tcp", "127.0.0.1:0")
    with ln, netpoll.dial("tcp", str(ln.addr())) as c:
        cfg.keep_alive = float("inf")  # no whole number of seconds
        with pytest.raises(OverflowError):
            ln.accept()
        cfg.keep_alive = 0.0
        with ln.accept() as s:  # the queued conn is still there
            c.write(b"x")
            assert s.read(1) == b"x"


def test_setup_accepted_tcp_on_a_closed_netfd_is_quiet(backend: str) -> None:
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    with ln, netpoll.dial("tcp", str(ln.addr())):
        s = ln.accept()
        nfd = s._nfd  # type: ignore[attr-defined]
        s.close()
        nfd.setup_accepted_tcp(0.0)  # errors are ignored, as Go ignores them


def test_an_m_reads_netpoll_procs_at_its_first_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(procs.ENV_PROCS, raising=False)

    def main() -> tuple[bool, bool]:
        me = g_of(netpoll.current_goroutine()).m  # type: ignore[arg-type]
        first = netpoll.go(lambda: None)
        # Changed after this M's first go: not read again by this M.
        monkeypatch.setenv(procs.ENV_PROCS, "two")
        second = netpoll.go(lambda: None)
        assert first.join(JOIN) and second.join(JOIN)
        return g_of(first).m is me, g_of(second).m is me

    assert _run_in_fresh_m(main) == (True, True)


class _Arg:
    pass


def _run_in_fresh_m(main: Callable[[], T]) -> T:
    """``netpoll.run(main)`` in a thread of its own: a fresh M, whatever runs the test body."""
    got: list[T] = []
    t = threading.Thread(target=lambda: got.append(netpoll.run(main)), daemon=True)
    t.start()
    netpoll.blocking(t.join, JOIN)
    assert len(got) == 1, "netpoll.run did not return"
    return got[0]


@pytest.mark.parametrize("shape", ["one", "none", "two", "kwargs"])
def test_a_g_runs_every_call_shape_and_keeps_no_lone_argument(shape: str) -> None:
    def main() -> tuple[list[int], list[bool], str]:
        gate: Chan[None] = Chan()
        refs: list[weakref.ref[_Arg]] = []
        out: list[int] = []

        def body(*args: Any, **kwargs: Any) -> str:
            objs = [*args, *kwargs.values()]
            refs.extend(weakref.ref(o) for o in objs)
            out.append(len(objs))
            del args, kwargs, objs
            gate.recv()
            return shape

        args: tuple[Any, ...] = {"one": (_Arg(),), "two": (_Arg(), _Arg())}.get(shape, ())
        kwargs = {"a": _Arg()} if shape == "kwargs" else {}
        h = netpoll.go(body, *args, **kwargs)
        del args, kwargs
        netpoll.gosched()  # body runs up to gate.recv()
        gc.collect()
        alive = [r() is not None for r in refs]
        gate.send(None)
        return out, alive, h.result(JOIN)

    out, alive, result = _run_in_fresh_m(main)
    assert result == shape
    assert out == [{"one": 1, "none": 0, "two": 2, "kwargs": 1}[shape]]
    # go(handler, conn): the G holds nothing of its argument.  The pure build
    # on CPython >= 3.11 only, where a Python-to-Python call moves its
    # arguments off the caller's stack into the callee's frame; Python 3.10's
    # caller keeps them on its stack, and compiled, Cython keeps them in C
    # temporaries, until the call returns (the G's reference, as before).
    pure = bool(g_module.__file__ and g_module.__file__.endswith(".py"))
    if shape == "one" and pure and sys.version_info >= (3, 11):
        assert alive == [False], "the G kept its argument alive"


@pytest.mark.parametrize(
    ("address", "control"),
    [("127.0.0.1:0", False), ("0.0.0.0:0", False), ("127.0.0.1:0", True)],
)
def test_accepted_local_address_is_the_kernels(backend: str, address: str, control: bool) -> None:
    """A listener on one address shares its Addr; a wildcard or controlled one asks getsockname."""
    calls: list[int] = []
    cfg = netpoll.ListenConfig(control=(lambda n, a, raw: calls.append(1)) if control else None)
    ln = cfg.listen("tcp", address)
    with ln:
        port = ln.addr().port
        for _ in range(2):
            with netpoll.dial("tcp", f"127.0.0.1:{port}") as c, ln.accept() as s:
                assert s.local_addr() == netpoll.TCPAddr("127.0.0.1", port)
                assert s.local_addr() == c.remote_addr()
                assert s.remote_addr() == c.local_addr()
                c.write(b"k")
                assert s.read(1) == b"k"
        assert calls == ([1] if control else [])
        assert (ln._nfd.accept_laddr is not None) == (address == "127.0.0.1:0" and not control)  # type: ignore[attr-defined]


class _WatchRegistrations:
    """A plugin wrapping the poller's netpollopen / netpollclose: records each fd."""

    def __init__(self) -> None:
        self.opened: list[int] = []
        self.closed: list[int] = []

    @hookimpl(wrapper=True)
    def netpollopen(self, poller: Any, fd: int, token: object) -> Any:
        self.opened.append(fd)
        return (yield)

    @hookimpl(wrapper=True)
    def netpollclose(self, poller: Any, fd: int) -> Any:
        self.closed.append(fd)
        return (yield)


def test_a_plugin_registered_later_sees_every_registration_and_close() -> None:
    """M.register_pd / unregister_pd call the poller directly only while nothing watches."""

    def main() -> tuple[list[int], list[int], list[int]]:
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        with ln:
            watch = _WatchRegistrations()
            runtime.pm.register(watch)
            try:
                fds = []
                for _ in range(2):
                    c = netpoll.dial("tcp", str(ln.addr()))
                    s = ln.accept()
                    fds += [c.fileno(), s.fileno()]
                    c.write(b"w")
                    assert s.read(1) == b"w"
                    c.close()
                    s.close()
            finally:
                runtime.pm.unregister(watch)
        return fds, watch.opened, watch.closed

    fds, opened, closed = _run_in_fresh_m(main)
    assert opened == fds
    assert closed == fds
