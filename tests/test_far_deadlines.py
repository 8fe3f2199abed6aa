"""Far deadlines and a failing poller never stall I/O (issue: far deadlines kill the poller).

A deadline a month or a century away, ``inf`` or ``datetime.max`` must behave
as a deadline that has not passed: the operation parks, and data arriving
wakes it.  Every backend caps the time it blocks (``MAX_WAIT``), so no
timeout reaches the OS out of range.  Each test runs on every backend, its
body once in a thread and once as a goroutine (see conftest).
"""

from __future__ import annotations

import datetime
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import netpoll
from netpoll.core.hookspecs import MAX_WAIT, MODE_R, MODE_WAKE, clamp_timeout, hookimpl
from netpoll.core.runtime import runtime
from tests.helpers.net import conn_pair as helper_conn_pair

FAR_DEADLINES: dict[str, Callable[[], Any]] = {
    "inf": lambda: math.inf,
    "30 days": lambda: time.time() + 30 * 86400,
    "1e10 s": lambda: time.time() + 1e10,
    "datetime.max": lambda: datetime.datetime.max,
}


@pytest.fixture
def conn_pair(backend: str) -> Iterator[tuple[netpoll.Conn, netpoll.Conn]]:
    """A dialed TCP conn and its accepted peer on loopback."""
    with helper_conn_pair() as both:
        yield both


def _write_later(conn: Any, data: bytes, delay: float = 0.1) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), conn.write(data)))
    t.start()
    return t


@pytest.mark.parametrize("far", list(FAR_DEADLINES))
def test_far_read_deadline_parks_and_data_wakes_it(
    conn_pair: tuple[netpoll.TCPConn, netpoll.TCPConn], far: str
) -> None:
    c, s = conn_pair
    c.set_read_deadline(FAR_DEADLINES[far]())
    t = _write_later(s, b"ping")
    assert c.read(4) == b"ping"
    t.join(5)
    # The runtime still works afterwards: a fresh dial with a short timeout.
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    try:
        d = netpoll.dial("tcp", str(ln.addr()), timeout=1)
        d.close()
        ln.accept().close()
    finally:
        ln.close()


@pytest.mark.parametrize("far", list(FAR_DEADLINES))
def test_far_deadline_then_a_near_one_still_fires(
    conn_pair: tuple[netpoll.TCPConn, netpoll.TCPConn], far: str
) -> None:
    c, _ = conn_pair
    c.set_deadline(FAR_DEADLINES[far]())
    c.set_read_deadline(time.time() + 0.2)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        c.read(1)
    assert time.monotonic() - t0 < 10


def test_dialer_with_a_forty_day_timeout_connects(backend: str) -> None:
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    try:
        c = netpoll.Dialer(timeout=40 * 86400).dial("tcp", str(ln.addr()))
        s = ln.accept()
        c.write(b"x")
        assert s.read(1) == b"x"
        c.close()
        s.close()
    finally:
        ln.close()


def test_a_failing_poller_does_not_strand_a_parked_read(
    conn_pair: tuple[netpoll.TCPConn, netpoll.TCPConn], g_kind: str
) -> None:
    """The poller raising (a backend bug, an injected fault) costs a retry, not a hang."""
    c, s = conn_pair
    failures = [3]

    class Failing:
        @hookimpl(wrapper=True)
        def netpoll(self, poller: Any, timeout: float | None) -> Any:
            result = yield
            if failures[0] > 0:
                failures[0] -= 1
                raise OSError(5, "injected poller failure")
            return result

    runtime.pm.register(Failing())
    try:
        t = _write_later(s, b"data", 0.2)
        with (
            pytest.warns(RuntimeWarning, match="injected poller failure")
            if g_kind == ("goroutine")
            else _no_warning_check()
        ):
            assert c.read(4) == b"data"
        t.join(5)
    finally:
        for p in list(runtime.pm.get_plugins()):
            if isinstance(p, Failing):
                runtime.pm.unregister(p)


class _no_warning_check:
    """A thread parks in the kernel, not on an M's poller: nothing to warn about."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("timeout", [math.inf, 1e10, 40 * 86400.0, MAX_WAIT * 2])
def test_clamp_timeout_keeps_every_wait_in_range(timeout: float) -> None:
    t = clamp_timeout(timeout)
    assert t is None or t == MAX_WAIT
    assert clamp_timeout(None) is None
    assert clamp_timeout(-5.0) == 0.0
    assert clamp_timeout(float("nan")) == 0.0
    assert clamp_timeout(0.25) == 0.25


# The body calls a backend's blocking wait directly (no pollDesc to park on):
# in the goroutine run it holds its M on purpose, which sysmon reports.
@pytest.mark.filterwarnings("ignore::netpoll.GoroutineHogWarning")
@pytest.mark.parametrize("timeout", [math.inf, 1e10, 40 * 86400.0])
def test_backend_waits_accept_any_timeout(backend: str, timeout: float) -> None:
    """Each backend's netpoll and netpollwait take far timeouts and still return on events."""
    spec = runtime.registry.resolve(backend)[0]
    poller = spec.create()
    runtime.table.netpollinit(poller)
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        token = object()
        runtime.table.netpollopen(poller, a.fileno(), token)
        runtime.table.netpollarm(poller, a.fileno(), MODE_R)
        b.send(b"x")
        deadline = time.monotonic() + 5
        seen: list[object] = []
        while not seen and time.monotonic() < deadline:
            seen = [tok for tok, _ in runtime.table.netpoll(poller, timeout)]
        assert seen == [token]
        modes = runtime.table.netpollwait(poller, a.fileno(), MODE_R, -1, timeout)
        assert modes & MODE_R
        r, w = socket.socketpair()
        try:
            threading.Timer(0.1, lambda: w.send(b"!")).start()
            assert runtime.table.netpollwait(poller, -1, 0, r.fileno(), timeout) & MODE_WAKE
        finally:
            time.sleep(0.15)
            r.close()
            w.close()
        runtime.table.netpollclose(poller, a.fileno())
    finally:
        poller.shutdown()
        a.close()
        b.close()
