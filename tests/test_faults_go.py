"""Go's socktest-based fault tests, ported in intent, plus a systematic fault sweep.

From Go's ``net`` package: ``TestDialTimeoutFDLeak`` and
``TestDialerDualStackFDLeak`` (dial_test.go), ``TestAcceptIgnoreAbortedConnRequest``
(net_test.go), ``TestDialError``/``TestListenError`` (error_test.go),
``TestDialContextCancelRace`` (dial_test.go, issue 16523), and the accept
loop of ``net/http.Server.Serve`` that backs off on temporary errors.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import netpoll
import netpoll.net.lookup as lookup_mod
from netpoll.core.runtime import runtime
from netpoll.net.sock import supports_ipv6
from netpoll.testing import Faults, Status, Switch

TCP4 = (socket.AF_INET, socket.SOCK_STREAM, 0)


def _wait_closed(sw: Switch, keep: int = 0, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(sw.sockets()) > keep and time.monotonic() < deadline:
        time.sleep(0.01)


def test_dial_timeout_fd_leak(backend: str) -> None:
    """A connect that stalls past the dial timeout, 100 dials at once: nothing leaks."""
    t = 0.1
    attempts = 0
    lock = threading.Lock()

    def stall(st: Status) -> None:
        time.sleep(2 * t)
        raise TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))

    def count_close(st: Status) -> None:
        nonlocal attempts
        with lock:
            attempts += 1

    n = 100
    errors: list[BaseException] = []
    with Switch() as sw:
        sw.set("connect", stall)
        sw.set("close", count_close)

        def dial() -> None:
            try:
                c = netpoll.dial("tcp", "127.0.0.1:0", timeout=t)
            except OSError as exc:
                errors.append(exc)
            else:
                c.close()
                raise AssertionError("unexpectedly established")

        threads = [threading.Thread(target=dial) for _ in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        assert len(errors) == n
        assert all(isinstance(e, netpoll.OpError) and e.op == "dial" for e in errors)
        assert attempts >= n
        assert sw.sockets() == {}
        assert sw.stat(*TCP4).closed == n


@pytest.mark.skipif(not supports_ipv6(), reason="no IPv6 loopback")
def test_dialer_dual_stack_fd_leak(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both families race (no fallback delay); every losing racer's socket is closed."""
    real = lookup_mod._gai
    monkeypatch.setattr(
        lookup_mod,
        "_gai",
        lambda host: [("127.0.0.1", ""), ("::1", "")] if host == "dual.test" else real(host),
    )
    with Switch() as sw:
        ln4 = netpoll.listen("tcp4", "127.0.0.1:0")
        port = ln4.addr().port
        ln6 = netpoll.listen("tcp6", f"[::1]:{port}")
        before = len(sw.sockets())
        n = 10

        def dial() -> None:
            d = netpoll.Dialer(fallback_delay=0.0, timeout=2)
            d.dial("tcp", f"dual.test:{port}").close()

        threads = [threading.Thread(target=dial) for _ in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        _wait_closed(sw, keep=before)
        assert len(sw.sockets()) == before, sw.leak_report()
        ln4.close()
        ln6.close()
        assert sw.sockets() == {}


def test_accept_ignores_aborted_conn_request(backend: str) -> None:
    """An accept that fails with ECONNABORTED is retried; the caller never sees it."""
    aborted = []

    def abort_first(st: Status) -> Any:
        def after(st: Status) -> None:
            if st.error is None and not aborted:
                aborted.append(st.result[0].fileno())
                raise ConnectionAbortedError(errno.ECONNABORTED, "aborted")

        return after

    with Switch() as sw, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        sw.set("accept", abort_first)
        c1 = netpoll.dial("tcp", str(ln.addr()), timeout=2)
        result: list[netpoll.Conn] = []
        t = threading.Thread(target=lambda: result.append(ln.accept()))
        t.start()
        time.sleep(0.05)
        c2 = netpoll.dial("tcp", str(ln.addr()), timeout=2)
        t.join(5)
        with c1, c2, result[0] as s:
            assert s.remote_addr() == c2.local_addr()
        st = sw.stat(*TCP4)
        assert (st.accepted, st.accept_failed) == (1, 1)
    assert sw.sockets() == {}


@pytest.mark.parametrize("kind", ["socket", "connect"])
def test_dial_error_shape(backend: str, kind: str) -> None:
    with Faults() as f, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        f.fail(kind, errno.EOPNOTSUPP, times=1)
        with pytest.raises(netpoll.OpError) as ei:
            netpoll.dial("tcp", str(ln.addr()), timeout=2)
        err = ei.value
        assert str(err) == f"dial tcp {ln.addr()}: {kind}: operation not supported"
        assert (err.op, err.net, err.syscall, err.errno) == ("dial", "tcp", kind, errno.EOPNOTSUPP)
        assert err.source is None and str(err.addr) == str(ln.addr())
        assert not isinstance(err, TimeoutError)
        assert f.switch.sockets() == {ln.fileno(): f.switch.sockets()[ln.fileno()]}


@pytest.mark.parametrize("kind", ["socket", "listen"])
def test_listen_error_shape(backend: str, kind: str) -> None:
    with Faults() as f:
        f.fail(kind, errno.EOPNOTSUPP, times=1)
        with pytest.raises(netpoll.OpError) as ei:
            netpoll.listen("tcp", "127.0.0.1:0")
        err = ei.value
        assert str(err) == f"listen tcp 127.0.0.1:0: {kind}: operation not supported"
        assert (err.op, err.syscall, err.errno) == ("listen", kind, errno.EOPNOTSUPP)
        assert f.switch.sockets() == {}


def test_dial_canceled_just_as_connect_completes(backend: str) -> None:
    """Go's TestDialContextCancelRace (issue 16523): the cancel wins, nothing leaks."""
    cancel = threading.Event()
    poisoned = threading.Event()

    def connect_in_progress(st: Status) -> Any:
        def after(st: Status) -> None:
            if st.error is None:  # localhost connected at once: take the slow path
                raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))

        return after

    def cancel_on_success(st: Status) -> Any:
        if st.args["option"] != socket.SO_ERROR:
            return None

        def after(st: Status) -> None:
            if st.error is None and st.result == 0:
                cancel.set()
                # Wait for the dial's watcher to poison the write deadline,
                # as Go waits for testHookCanceledDial.
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    pd = next((p for p in list(runtime.cache.live_set) if p.fd == st.fd), None)
                    if pd is not None and pd.wd < 0:
                        poisoned.set()
                        return
                    time.sleep(0.005)

        return after

    with Switch() as sw, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        sw.set("connect", connect_in_progress)
        sw.set("getsockopt", cancel_on_success)
        with pytest.raises(netpoll.OpError) as ei:
            netpoll.Dialer(cancel=cancel).dial("tcp", str(ln.addr()))
        assert poisoned.is_set()
        assert ei.value.op == "dial"
        assert isinstance(ei.value, netpoll.ErrCanceled)
        assert "operation was canceled" in str(ei.value)
        sw.set("getsockopt", None)
        sw.set("connect", None)
        ln.set_deadline(time.time() + 1)
        try:
            ln.accept().close()  # the server side of the abandoned connect
        except TimeoutError:
            pass
        assert list(sw.sockets()) == [ln.fileno()]
    assert sw.sockets() == {}


# -- the sweep ------------------------------------------------------------------------


@dataclass
class Scenario:
    """One operation: ``setup`` (not swept), ``run`` (swept), ``cleanup`` (not swept)."""

    name: str
    setup: Callable[[dict[str, Any]], None]
    run: Callable[[dict[str, Any]], None]


def _listener(env: dict[str, Any]) -> None:
    env["ln"] = netpoll.listen("tcp", "127.0.0.1:0")


def _pair(env: dict[str, Any]) -> None:
    _listener(env)
    env["c"] = netpoll.dial("tcp", str(env["ln"].addr()), timeout=5)
    env["s"] = env["ln"].accept()
    env["c"].set_deadline(time.time() + 5)
    env["s"].set_deadline(time.time() + 5)


def _dialed(env: dict[str, Any]) -> None:
    _listener(env)
    env["c"] = netpoll.dial("tcp", str(env["ln"].addr()), timeout=5)


def _run_listen(env: dict[str, Any]) -> None:
    env["ln"] = netpoll.listen("tcp", "127.0.0.1:0")
    env["ln"].close()


def _run_dial(env: dict[str, Any]) -> None:
    env["c"] = netpoll.dial("tcp", str(env["ln"].addr()), timeout=5)


def _run_accept(env: dict[str, Any]) -> None:
    env["ln"].set_deadline(time.time() + 5)
    env["s"] = env["ln"].accept()


def _run_read(env: dict[str, Any]) -> None:
    env["c"].write(b"hello")
    assert env["s"].read(5) == b"hello"


def _run_write(env: dict[str, Any]) -> None:
    env["c"].write(b"x" * 100_000)


def _run_close(env: dict[str, Any]) -> None:
    env["c"].close()
    env["s"].close()


SCENARIOS = [
    Scenario("listen", lambda env: None, _run_listen),
    Scenario("dial", _listener, _run_dial),
    Scenario("accept", _dialed, _run_accept),
    Scenario("read", _pair, _run_read),
    Scenario("write", _pair, _run_write),
    Scenario("close", _pair, _run_close),
]

#: The errno injected per kind: what that call realistically fails with.
SWEEP_ERRNO = {
    "socket": errno.EMFILE,
    "connect": errno.ECONNREFUSED,
    "listen": errno.EADDRINUSE,
    "accept": errno.EMFILE,
    "getsockopt": errno.ENOBUFS,
    "close": errno.EIO,
    "read": errno.ECONNRESET,
    "write": errno.EPIPE,
    "netpollopen": errno.ENOMEM,
}


def _cleanup(env: dict[str, Any]) -> None:
    for key in ("c", "s", "ln"):
        obj = env.get(key)
        if obj is not None:
            try:
                obj.close()
            except OSError:
                pass  # an injected close error: reported, and the fd is gone anyway


def _recorder(calls: list[str], me: int, inject_at: int | None, when: str) -> Callable[..., Any]:
    def f(st: Status) -> Any:
        if threading.get_ident() != me or st.kind not in SWEEP_ERRNO:
            return None
        i = len(calls)
        calls.append(st.kind)
        if i != inject_at:
            return None
        err = OSError(SWEEP_ERRNO[st.kind], os.strerror(SWEEP_ERRNO[st.kind]))
        if when == "before":
            raise err

        def after(st: Status) -> None:
            raise err

        return after

    return f


@pytest.fixture
def sweep_switch() -> Iterator[Switch]:
    with Switch() as sw:
        yield sw


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fault_sweep(backend: str, scenario: Scenario, when: str, sweep_switch: Switch) -> None:
    """Inject a failure at each hooked call of the scenario in turn.

    Every run ends with an OpError naming the operation (or succeeds, where
    the failure is retried or lands after the work was done: an accept's
    ECONNABORTED-like retries, a close error reported by a later close), and
    no socket the Switch saw opened is left open.
    """
    sw = sweep_switch
    me = threading.get_ident()
    kinds = [k for k in SWEEP_ERRNO]
    # Pass 1: record the calls the scenario makes.
    calls: list[str] = []
    env: dict[str, Any] = {}
    scenario.setup(env)
    for k in kinds:
        sw.set(k, _recorder(calls, me, None, when))
    try:
        scenario.run(env)
    finally:
        sw.clear()
        _cleanup(env)
    assert calls, "the scenario made no hooked calls"
    _wait_closed(sw)
    assert sw.sockets() == {}, sw.leak_report()

    for i, kind in enumerate(calls):
        env = {}
        scenario.setup(env)
        injected: list[str] = []
        for k in kinds:
            sw.set(k, _recorder(injected, me, i, when))
        outcome: BaseException | None = None
        try:
            scenario.run(env)
        except BaseException as exc:
            outcome = exc
        finally:
            sw.clear()
            _cleanup(env)
        where = f"{scenario.name}/{when}: call {i} ({kind}) of {calls}"
        if outcome is not None:
            assert isinstance(outcome, netpoll.OpError), f"{where}: {outcome!r}"
            assert outcome.op in ("listen", "dial", "accept", "read", "write", "close"), where
            assert str(outcome).startswith(outcome.op + " tcp"), f"{where}: {outcome}"
        _wait_closed(sw)
        assert sw.sockets() == {}, f"{where}: {sw.leak_report()}"


# -- an accept loop that survives EMFILE -------------------------------------------------

_TEMPORARY = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED)


def serve(ln: netpoll.Listener, handle: Callable[[netpoll.Conn], None], log: list[float]) -> None:
    """net/http's Server.Serve loop: back off 5 ms doubling to 1 s on temporary errors."""
    delay = 0.0
    while True:
        try:
            conn = ln.accept()
        except netpoll.ErrClosed:
            return
        except OSError as exc:
            if exc.errno in _TEMPORARY:
                delay = 0.005 if delay == 0 else min(delay * 2, 1.0)
                log.append(delay)
                time.sleep(delay)
                continue
            raise
        delay = 0.0
        handle(conn)


def test_accept_loop_survives_emfile(backend: str) -> None:
    def handle(conn: netpoll.Conn) -> None:
        with conn:
            conn.write(b"hi")

    backoffs: list[float] = []
    with Faults() as f:
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        rule = f.fail("accept", errno.EMFILE, times=6)
        t = threading.Thread(target=serve, args=(ln, handle, backoffs))
        t.start()
        try:
            for _ in range(3):
                with netpoll.dial("tcp", str(ln.addr()), timeout=5) as c:
                    c.set_deadline(time.time() + 5)
                    assert c.read(2) == b"hi"
        finally:
            ln.close()
            t.join(5)
        assert rule.fired == 6
        assert backoffs == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16]
        _wait_closed(f.switch)
        assert f.switch.sockets() == {}
