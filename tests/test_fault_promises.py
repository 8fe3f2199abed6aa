"""What the fault helpers and their neighbours promise (issue 18, item 6).

``Faults.eagain(wake=True)`` wakes a parked plain thread as it wakes a
goroutine; a poller registration that fails as a goroutine first parks is
reported as a registration error, without a system call's name; and
``ConnSocket.recv`` survives reads that a fault made short.  Each runs on
every backend (the ``backend`` fixture).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import netpoll
from netpoll.testing import Faults, Switch, on_fd
from tests.helpers.net import conn_pair
from tests.helpers.proc import run as run_child

JOIN = 10.0


@pytest.fixture
def faults() -> Iterator[Faults]:
    with Faults() as f:
        yield f
        assert f.switch.sockets() == {}, f.switch.leak_report()


@pytest.fixture
def pair(backend: str) -> Iterator[tuple[netpoll.Conn, netpoll.Conn]]:
    """(client, server) on loopback TCP, opened before any fault is declared."""
    with conn_pair() as (c, s):
        c.set_deadline(time.time() + 10)
        s.set_deadline(time.time() + 10)
        yield c, s


def _start(who: str, fn: Any) -> Any:
    """Run ``fn`` in a plain thread or a goroutine; something with ``join(timeout)``."""
    if who == "goroutine":
        return netpoll.go(fn)
    t = threading.Thread(target=fn, name="reader", daemon=True)
    t.start()
    return t


def _wait_for(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


# -- eagain(wake=True) wakes threads too ------------------------------------------


@pytest.mark.parametrize("who", ["thread", "goroutine"])
@pytest.mark.parametrize("kind", ["read", "accept"])
def test_eagain_wakeup_retries_a_parked_caller_on_an_idle_fd(
    faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn], who: str, kind: str
) -> None:
    """Nothing to read (or accept): every firing of ``times=5`` must come from a wakeup.

    Before the fix a thread saw one EAGAIN, parked in the kernel on its
    idle fd and slept until real data (here: never, as the writer waits
    for the five firings first).
    """
    c, s = pair
    got: list[Any] = []
    if kind == "read":
        rule = faults.eagain("read", times=5, where=on_fd(s))

        def body() -> None:
            got.append(s.read(4))

    else:
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        ln.set_deadline(time.time() + 10)
        rule = faults.eagain("accept", times=5, where=on_fd(ln))

        def body() -> None:
            conn = ln.accept()
            got.append(conn.read(4))
            conn.close()

    waiter = _start(who, body)
    try:
        woke_five_times = _wait_for(lambda: rule.fired >= 5)
        fired = rule.fired
    finally:
        if kind == "read":
            c.write(b"ping")
        else:
            d = netpoll.dial("tcp", str(ln.addr()), timeout=5)
            d.write(b"ping")
        waiter.join(JOIN)
        if kind == "accept":
            d.close()
            ln.close()
    assert woke_five_times, f"{who}: {fired} of 5 EAGAINs fired; the wakeup did not reach it"
    assert fired == 5
    assert got == [b"ping"]
    assert [i.what for i in faults.injections(rule)] == ["EAGAIN + wakeup"] * 5


def test_eagain_storm_on_a_thread_is_bounded_by_times(
    faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]
) -> None:
    """A thread's storm of 200 wakeups ends, and then the read waits for real data."""
    c, s = pair
    rule = faults.eagain("read", times=200, where=on_fd(s))
    got: list[bytes] = []
    t = _start("thread", lambda: got.append(s.read(5)))
    assert _wait_for(lambda: rule.fired >= 200), rule.fired
    time.sleep(0.05)
    assert got == []  # the storm is over and no data came: still parked
    c.write(b"hello")
    t.join(JOIN)
    assert got == [b"hello"] and rule.fired == 200


_THREADS_ONLY = """
import json, threading, time, netpoll
from netpoll.core import procs
from netpoll.testing import Faults, Switch, on_fd

def fired_while_idle(kind):
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
    s = ln.accept()
    got = []
    with Faults() as f:
        if kind == "read":
            s.set_read_deadline(time.time() + 10)
            rule = f.eagain("read", times=5, where=on_fd(s))
            target = lambda: got.append(s.read(4))
        else:
            ln.set_deadline(time.time() + 10)
            rule = f.eagain("accept", times=5, where=on_fd(ln))
            target = lambda: got.append(ln.accept())
        t = threading.Thread(target=target, daemon=True)
        t.start()
        deadline = time.monotonic() + 3
        while rule.fired < 5 and time.monotonic() < deadline:
            time.sleep(0.002)
        fired = rule.fired
        closers = [c, s, ln]
        if kind == "read":
            c.write(b"ping")
        else:
            closers.append(netpoll.dial("tcp", str(ln.addr()), timeout=5))
        t.join(10)
    for obj in closers + got[-1:] if kind == "accept" else closers:
        obj.close()
    return fired

out = {k: fired_while_idle(k) for k in ("read", "accept")}
out["ms"] = len(procs.all_ms())
print(json.dumps(out))
"""


def test_eagain_wakeup_reaches_a_thread_when_no_m_runs(backend: str) -> None:
    """The issue's program: plain threads only, so no scheduler M polls anything.

    (In the test process background Ms live for good and happened to carry
    the wakeup; a fresh process shows what a thread-only user gets.)
    """
    env = dict(os.environ, NETPOLL_BACKEND=backend)
    proc = run_child([sys.executable, "-c", _THREADS_ONLY], timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"read": 5, "accept": 5, "ms": 0}, out


# -- a registration failing at the first park -------------------------------------


@pytest.mark.parametrize("op", ["accept", "read", "write"])
def test_registration_failing_at_the_first_park_is_reported_bare(backend: str, op: str) -> None:
    """Conns made by a plain thread are registered when a goroutine first parks on them.

    A failure there is a registration error: Go reports it with no system
    call's name (``accept tcp 127.0.0.1:80: cannot allocate memory``), as
    dial and listen here already do; it is not the operation's own call.
    """
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
    s = ln.accept()
    for x in (ln, c, s):
        x.set_deadline(time.time() + 5)  # a park that registers fine times out
    try:
        with Faults() as f:
            rule = f.fail("netpollopen", errno.ENOMEM)

            def attempt() -> OSError | None:
                try:
                    if op == "accept":
                        ln.accept().close()
                    elif op == "read":
                        s.read(1)
                    else:
                        c.write(b"x" * (32 << 20))  # parks once the socket buffers are full
                except OSError as exc:
                    return exc
                return None

            err = netpoll.go(attempt).result(JOIN)
    finally:
        for x in (c, s, ln):
            x.close()
    assert rule.fired >= 1
    assert isinstance(err, netpoll.OpError), err
    assert err.op == op and err.syscall == "", str(err)
    assert err.errno == errno.ENOMEM
    assert str(err).endswith(f"{err.addr}: cannot allocate memory"), str(err)
    assert f"{op}: cannot" not in str(err)


def test_listen_and_dial_report_a_failed_registration_bare_too(backend: str) -> None:
    """The same words for registration at FD creation (a goroutine's listen and dial)."""
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    try:
        with Faults() as f:
            f.fail("netpollopen", errno.ENOMEM)

            def attempt() -> list[str]:
                texts = []
                for call in (
                    lambda: netpoll.listen("tcp", "127.0.0.1:0"),
                    lambda: netpoll.dial("tcp", str(ln.addr()), timeout=5),
                ):
                    try:
                        call().close()
                    except OSError as exc:
                        texts.append(str(exc))
                return texts

            texts = netpoll.go(attempt).result(JOIN)
    finally:
        ln.close()
    assert texts == [
        "listen tcp 127.0.0.1:0: cannot allocate memory",
        f"dial tcp {ln.addr()}: cannot allocate memory",
    ]


# -- ConnSocket.recv under short reads and resets ----------------------------------


@pytest.fixture
def sock_pair(backend: str) -> Iterator[tuple[netpoll.ConnSocket, netpoll.Conn]]:
    """(a ConnSocket client made by create_connection, the accepted server conn)."""
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    try:
        sock = netpoll.create_connection(("127.0.0.1", ln.addr().port), timeout=10)
        s = ln.accept()
    finally:
        ln.close()
    try:
        yield sock, s
    finally:
        sock.close()
        s.close()


@pytest.mark.parametrize("who", ["thread", "goroutine"])
@pytest.mark.parametrize("fault", ["short", "reset_after"])
def test_conn_socket_recv_survives_a_limited_read_after_a_park(
    faults: Faults, sock_pair: tuple[netpoll.ConnSocket, netpoll.Conn], who: str, fault: str
) -> None:
    """The first attempt meets EAGAIN (through the fault layer) and parks; the retry is limited.

    The EAGAIN's traceback, a reference cycle through the plugin wrappers,
    kept a view of recv's buffer alive, and recv's resize of that buffer
    raised ``BufferError: Existing exports of data``.
    """
    sock, s = sock_pair
    s.write(b"abcdefgh")
    faults.eagain("read", times=1, where=on_fd(sock))
    if fault == "short":
        faults.short("read", 3, where=on_fd(sock))
    else:
        faults.reset_after(3, where=on_fd(sock))
    out: list[Any] = []

    def body() -> None:
        for _ in range(2):
            try:
                out.append(sock.recv(100))
            except Exception as exc:
                out.append(exc)

    waiter = _start(who, body)
    waiter.join(JOIN)
    assert out[0] == b"abc", out
    if fault == "short":
        assert out[1] == b"def", out
    else:
        assert isinstance(out[1], ConnectionResetError), out


def test_conn_socket_recv_into_lets_the_caller_resize_its_buffer(
    faults: Faults, sock_pair: tuple[netpoll.ConnSocket, netpoll.Conn]
) -> None:
    """A caller's own bytearray is free again once recv_into has returned."""
    sock, s = sock_pair
    s.write(b"0123456789")
    faults.eagain("read", times=1, where=on_fd(sock))
    faults.short("read", 4, where=on_fd(sock))
    buf = bytearray(64)
    n = sock.recv_into(buf)
    del buf[n:]  # BufferError before the fix
    assert bytes(buf) == b"0123"


# -- rule.seen means the same for every helper -------------------------------------


def test_reset_after_seen_counts_calls_not_connections(
    faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]
) -> None:
    c, s = pair
    rule = faults.reset_after(5, where=on_fd(s))
    c.write(b"0123456789")
    assert s.read(3) == b"012"
    assert (rule.seen, rule.fired) == (1, 0)
    assert s.read(100) == b"34"  # short at the boundary
    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            s.read(100)
    assert (rule.seen, rule.fired, rule.connections) == (4, 2, 1)


def test_chaos_and_spurious_seen_count_what_they_looked_at(
    faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]
) -> None:
    c, s = pair
    chaos = faults.chaos(7, 0.0, kinds=("write",), where=on_fd(c))  # looks, never fires
    for _ in range(3):
        c.write(b"x")
    assert (chaos.seen, chaos.fired) == (3, 0)
    spurious = faults.spurious_wakeups(1.0, interval=0.002, where=on_fd(s))
    netpoll.go(lambda: None).join(JOIN)  # an M polls (and a thread's wait is looked at below)
    got = b""
    while len(got) < 3:  # the three bytes, in one read or more
        got += s.read(100)
    assert got == b"xxx"
    s.set_read_deadline(time.time() + 0.05)
    with pytest.raises(TimeoutError):
        s.read(100)  # an idle wait, with fake events: spurious retries, then the deadline
    assert _wait_for(lambda: spurious.seen > 0)
    assert spurious.seen >= spurious.fired


# -- the Switch's Cost section: netpollwait is on demand too ------------------------


def test_netpollwait_is_wrapped_only_while_a_filter_is_set(
    pair: tuple[netpoll.Conn, netpoll.Conn],
) -> None:
    from netpoll.core.runtime import runtime

    c, s = pair
    table = runtime.table
    waits: list[int] = []
    with Switch() as sw:
        assert not table.wrapped["netpollwait"]  # a thread's park goes straight to the OS
        sw.set("netpollwait", lambda st: waits.append(st.fd))
        assert table.wrapped["netpollwait"] and "netpollwait" in sw.wrapped_kinds()
        t = _start("thread", lambda: waits.append(len(s.read(1))))
        parked = _wait_for(lambda: s.fileno() in waits)  # its own wait was filtered
        c.write(b"!")
        t.join(JOIN)
        sw.set("netpollwait", None)
        assert not table.wrapped["netpollwait"]
    assert parked and waits[-1] == 1
