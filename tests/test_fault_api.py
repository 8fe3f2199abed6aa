"""The fault API's conventions (issue 11, item 6): ``times``, ``fired``, the log, nesting.

Every helper follows the same rules, stated in :mod:`netpoll.testing.faults`:
``times`` defaults to None (every matching call), ``fired`` counts the calls
a rule changed and equals the rule's entries in ``Faults.log``, log entries
are structured, and two nested ``Faults()`` behave as documented.  The
pytest plugin's marker skips point at the test, and its leak check covers
the test's function-scoped fixtures whatever order they are requested in.
"""

from __future__ import annotations

import errno
import inspect
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import netpoll
from netpoll.testing import Faults, on_fd
from netpoll.testing.faults import INJECTION_ACTIONS, Injection
from tests.helpers.net import conn_pair
from tests.test_pytest_plugin import outcome, run_pytest

TCP = (socket.AF_INET, socket.SOCK_STREAM, 0)


@pytest.fixture
def pair(backend: str) -> Iterator[tuple[netpoll.Conn, netpoll.Conn]]:
    """(client, server) on loopback TCP, each with a 10 s deadline."""
    with conn_pair() as (c, s):
        c.set_deadline(time.time() + 10)
        s.set_deadline(time.time() + 10)
        yield c, s


def test_times_defaults_to_every_call_for_every_helper() -> None:
    helpers = ("fail", "delay", "short", "eagain", "blackhole_connect", "reset_after")
    defaults = {
        h: inspect.signature(getattr(Faults, h)).parameters["times"].default for h in helpers
    }
    assert defaults == dict.fromkeys(helpers, None)  # fail/eagain/reset_after were 1


def test_fail_without_times_fails_every_call_until_removed(backend: str) -> None:
    with Faults() as f, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        rule = f.fail("connect", errno.ECONNREFUSED)
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                netpoll.dial("tcp", str(ln.addr()), timeout=2)
        assert (rule.fired, rule.exhausted) == (3, False)
        rule.remove()
        netpoll.dial("tcp", str(ln.addr()), timeout=2).close()
        ln.accept().close()


def test_fired_equals_log_entries_for_every_rule(
    pair: tuple[netpoll.Conn, netpoll.Conn],
) -> None:
    c, s = pair
    with Faults() as f:
        short = f.short("write", 3, where=on_fd(c))
        c.write(b"0123456789")  # 4 write calls of at most 3 bytes
        got = bytearray()
        while len(got) < 10:
            got += s.read(10 - len(got))
        assert bytes(got) == b"0123456789"
        short.remove()
        # short used to count calls but log none.
        assert short.fired == 4 == len(f.injections(short))
        assert {(i.action, i.value) for i in f.injections(short)} == {("short", 3)}

        delay = f.delay("write", 0.001, times=2, where=on_fd(c))
        eagain = f.eagain("read", times=3, where=on_fd(s))
        reset = f.reset_after(2, times=1, where=on_fd(s))
        for _ in range(3):
            c.write(b"ab")
        assert s.read(2) == b"ab"
        for _ in range(2):
            with pytest.raises(ConnectionResetError):
                s.read(2)
        # reset_after used to count connections in fired (here: 1).
        assert reset.fired == 2 == len(f.injections(reset))
        assert reset.connections == 1  # type: ignore[attr-defined]
        for rule, n in ((delay, 2), (eagain, 3)):
            assert rule.fired == n == len(f.injections(rule)), rule
            assert rule.exhausted
        assert sum(r.fired for r in (short, delay, eagain, reset)) == len(f.log)


def test_spurious_fired_counts_waits_and_logs_them(backend: str) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln, Faults() as f:
        c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
        with c, ln.accept() as s:
            rule = f.spurious_wakeups(1.0, interval=0.005, where=on_fd(s))
            t = threading.Timer(0.1, c.write, args=(b"x",))
            t.start()
            s.set_deadline(time.time() + 5)
            assert s.read(1) == b"x"
            t.join()
            rule.remove()
        log = f.injections(rule)
        assert rule.fired == len(log) > 0
        # A thread parks in its own netpollwait, a goroutine's M in netpoll.
        assert all(i.action == "spurious" and i.kind in ("netpoll", "netpollwait") for i in log)
        # Only the events ``where`` let through are counted: one fd here.
        assert rule.events == sum(i.value or 0 for i in log) == rule.fired  # type: ignore[attr-defined]


def test_log_entries_are_structured(backend: str) -> None:
    with Faults() as f, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        f.fail("connect", errno.ECONNREFUSED, times=1)
        with pytest.raises(ConnectionRefusedError):
            netpoll.dial("tcp", str(ln.addr()), timeout=2)
        f.eagain("accept", times=1, wake=True)
        f.delay("connect", 0.01, times=1)
        c = netpoll.dial("tcp", str(ln.addr()), timeout=2)
        with c, ln.accept():
            pass
        fail, delay, eagain = f.log  # the dial (delayed) runs before the accept
        assert isinstance(fail, Injection)
        assert (fail.rule, fail.kind, fail.action, fail.errno, fail.error, fail.when) == (
            "fail",
            "connect",
            "fail",
            errno.ECONNREFUSED,
            "ConnectionRefusedError",
            "before",
        )
        assert fail.thread == threading.current_thread().name and fail.fd >= 0
        assert fail.what == "before: ECONNREFUSED"
        assert (eagain.action, eagain.errno, eagain.wake) == ("eagain", errno.EAGAIN, True)
        assert eagain.what == "EAGAIN + wakeup"
        assert (delay.action, delay.value) == ("delay", 0.01)
        assert {i.action for i in f.log} <= set(INJECTION_ACTIONS)


def test_chaos_log_entries_carry_the_call_index(
    pair: tuple[netpoll.Conn, netpoll.Conn],
) -> None:
    c, s = pair
    with Faults() as f:
        rule = f.chaos(5, 0.5, kinds=("write",), where=on_fd(c), actions={"write": ("short",)})
        for i in range(20):
            c.write(b"%04d" % i)  # shortened writes still send everything
        rule.remove()
    got = bytearray()
    while len(got) < 80:
        got += s.read(80 - len(got))
    assert bytes(got) == b"".join(b"%04d" % i for i in range(20))
    entries = f.injections(rule)
    assert rule.fired == len(entries) > 0
    assert [(e.kind, e.index, e.action) for e in entries] == [
        (k, n, a)
        for k, n, a in rule.log  # type: ignore[attr-defined]
    ]
    assert all(e.value is not None and e.what.startswith(f"chaos #{e.index}:") for e in entries)


def test_nested_faults_with_own_switches_as_documented(backend: str) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        with Faults() as outer:
            with Faults() as inner:
                inner.fail("connect", errno.ECONNREFUSED, times=1)
                with pytest.raises(ConnectionRefusedError):
                    netpoll.dial("tcp", str(ln.addr()), timeout=2)
            # The inner Switch cancelled the connect: the outer never saw it,
            # only the socket and its close.
            st = outer.switch.stat(*TCP)
            assert (st.opened, st.connected, st.connect_failed, st.closed) == (1, 0, 0, 1)
            assert inner.switch.stat(*TCP).connect_failed == 1

        # Sharing one Switch: it sees every call, injected failures included.
        with Faults() as outer:
            with Faults(outer.switch) as inner:
                inner.fail("connect", errno.ECONNREFUSED, times=1)
                with pytest.raises(ConnectionRefusedError):
                    netpoll.dial("tcp", str(ln.addr()), timeout=2)
                assert inner.switch is outer.switch and inner.switch.installed
            assert outer.switch.installed  # the inner one does not uninstall it
            st = outer.switch.stat(*TCP)
            assert (st.opened, st.connect_failed, st.closed) == (1, 1, 1)


LEAK_ORDER_TESTS = """
import pytest
import netpoll
import netpoll.testing.pytest_plugin

netpoll.testing.pytest_plugin.LEAK_GRACE = 0.05  # nothing here closes in the background

held = []

@pytest.fixture
def leaky_conn():
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    held.append(ln)
    yield ln  # never closed: a leak of this test's fixture

@pytest.fixture
def tidy_listener():
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        yield ln  # closed in the fixture's teardown

@pytest.fixture(scope="module")
def module_listener():
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        yield ln  # lives longer than one test: not this test's leak

def test_fixture_before_switch_leaks(leaky_conn, netpoll_switch):
    pass

def test_fixture_after_switch_leaks(netpoll_switch, leaky_conn):
    pass

def test_tidy_fixture_before_switch(tidy_listener, netpoll_switch):
    netpoll.dial("tcp", str(tidy_listener.addr()), timeout=2).close()
    tidy_listener.accept().close()

def test_module_fixture_is_not_a_leak(module_listener, netpoll_switch):
    pass

def test_zz_cleanup():
    for ln in held:
        ln.close()
"""


def test_leak_check_covers_fixtures_requested_before_the_switch(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, LEAK_ORDER_TESTS)
    out = result.stdout
    # Requested before netpoll_switch, the leaky fixture's socket was unseen.
    assert outcome(result, "test_fixture_before_switch_leaks") == "ERROR", out
    assert outcome(result, "test_fixture_after_switch_leaks") == "ERROR", out
    assert out.count("left sockets open") == 2, out
    assert "held.append(ln)" not in out or "ln = netpoll.listen" in out
    assert outcome(result, "test_tidy_fixture_before_switch") == "PASSED", out
    assert outcome(result, "test_module_fixture_is_not_a_leak") == "PASSED", out
    assert outcome(result, "test_zz_cleanup") == "PASSED", out


SKIP_TESTS = """
import pytest

@pytest.mark.netpoll_backend("no-such-backend")
def test_marked_unknown():
    pass
"""


def test_marker_skip_points_at_the_test_and_says_it_once(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SKIP_TESTS)
    out = result.stdout
    assert outcome(result, "test_marked_unknown") == "SKIPPED", out
    line = next(x for x in out.splitlines() if x.startswith("SKIPPED [1]"))
    assert "test_inner.py:" in line and "pytest_plugin.py" not in line, line
    assert line.count("not available here") == 1, line
    assert "unknown backend 'no-such-backend'" in line and "available backends:" in line
