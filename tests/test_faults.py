"""Each fault helper of netpoll.testing.faults against real loopback traffic."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator

import pytest

import netpoll
import netpoll.net.lookup as lookup_mod
from netpoll.net.sock import supports_ipv6
from netpoll.testing import Faults, Status, on_address, on_fd, on_thread
from tests.helpers.net import conn_pair


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


def test_fail_times_and_after(backend: str, faults: Faults) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        addr = str(ln.addr())
        rule = faults.fail("connect", errno.ECONNREFUSED, times=2, after=1)
        netpoll.dial("tcp", addr, timeout=2).close()  # after=1: the first one is real
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError, match="connect: connection refused"):
                netpoll.dial("tcp", addr, timeout=2)
        netpoll.dial("tcp", addr, timeout=2).close()  # times=2: exhausted
        assert (rule.seen, rule.fired, rule.exhausted) == (4, 2, True)
        for _ in range(2):
            ln.accept().close()
        assert [i.kind for i in faults.log] == ["connect", "connect"]


def test_fail_where_address(backend: str, faults: Faults) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as a, netpoll.listen("tcp", "127.0.0.1:0") as b:
        faults.fail("connect", errno.ENETUNREACH, times=None, where=on_address(a.addr()))
        with pytest.raises(OSError) as ei:
            netpoll.dial("tcp", str(a.addr()), timeout=2)
        assert ei.value.errno == errno.ENETUNREACH
        netpoll.dial("tcp", str(b.addr()), timeout=2).close()
        b.accept().close()


def test_fail_after_the_call_closes_what_it_created(backend: str, faults: Faults) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        c = netpoll.dial("tcp", str(ln.addr()), timeout=2)
        with c:
            faults.fail("accept", errno.EMFILE, times=1, when="after")
            with pytest.raises(netpoll.OpError, match="accept: too many open files"):
                ln.accept()
            c.set_deadline(time.time() + 2)
            try:
                assert c.read(1) == b""  # the accepted side was closed
            except ConnectionResetError:
                pass
        faults.fail("socket", errno.EMFILE, times=1, when="after")
        with pytest.raises(netpoll.OpError, match="socket: too many open files"):
            netpoll.dial("tcp", str(ln.addr()), timeout=2)


def test_fail_with_exception_class_and_instance(backend: str, faults: Faults) -> None:
    faults.fail("socket", PermissionError, times=1)
    with pytest.raises(PermissionError, match="socket: operation not permitted"):
        netpoll.listen("tcp", "127.0.0.1:0")
    faults.fail("socket", OSError(errno.EAFNOSUPPORT, "Address family not supported"), times=1)
    with pytest.raises(OSError, match="socket: address family not supported"):
        netpoll.listen("tcp", "127.0.0.1:0")


def test_delay_connect(backend: str, faults: Faults) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        faults.delay("connect", 0.15, times=1)
        t0 = time.monotonic()
        netpoll.dial("tcp", str(ln.addr()), timeout=5).close()
        assert time.monotonic() - t0 >= 0.14
        ln.accept().close()


def test_delay_parks_a_goroutine_and_its_m_runs_others(backend: str, faults: Faults) -> None:
    # A delayed syscall in a goroutine parks it, as a slow syscall in Go
    # leaves its P to others: a sibling G on the same M keeps ticking.  (In
    # a thread the delay is a plain sleep and the ticker runs on its own M.)
    ticks: list[float] = []

    def ticker(stop: float) -> None:
        while time.monotonic() < stop:
            ticks.append(time.monotonic())
            netpoll.sleep(0.01)

    def main() -> None:
        with netpoll.listen("tcp", "127.0.0.1:0") as ln:
            faults.delay("connect", 0.3, times=1)
            t0 = time.monotonic()
            h = netpoll.go(ticker, t0 + 0.25)
            netpoll.dial("tcp", str(ln.addr()), timeout=5).close()
            assert time.monotonic() - t0 >= 0.29
            h.join(5)
            ln.accept().close()
        during = [t for t in ticks if t - t0 < 0.25]
        assert len(during) >= 5, f"the M ran the ticker {len(during)} times during the delay"

    main()


def test_short_write_is_hidden_short_read_is_not(
    faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]
) -> None:
    c, s = pair
    rule = faults.short("write", 7, where=on_fd(c))
    data = bytes(range(256)) * 4
    assert c.write(data) == len(data)
    assert rule.fired == -(-len(data) // 7)
    got = bytearray()
    while len(got) < len(data):
        got += s.read(len(data))
    assert bytes(got) == data
    rule.remove()
    faults.short("read", 3)
    c.write(b"abcdefgh")
    assert s.read(100) == b"abc"


def test_eagain_storm_retries_through_wakeups(
    faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]
) -> None:
    c, s = pair
    r = faults.eagain("read", times=50)
    w = faults.eagain("write", times=20)
    c.write(b"ping")
    assert s.read(4) == b"ping"
    assert (r.fired, w.fired) == (50, 20)


def test_eagain_without_wakeup_is_a_lost_wakeup(
    faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]
) -> None:
    """The read is told EAGAIN while data is there, and no wakeup is posted.

    Whether it then sleeps until its deadline depends on whether the
    backend still has a readiness report to give (level-triggered poll and
    select always do; an edge-triggered backend does only if nobody polled
    since the data arrived).  Either way the data is not lost: it is read
    once the deadline is extended.
    """
    c, s = pair
    c.write(b"data")
    time.sleep(0.05)
    rule = faults.eagain("read", times=1, wake=False)
    s.set_read_deadline(time.time() + 0.3)
    try:
        got = s.read(4)
    except TimeoutError:
        s.set_read_deadline(time.time() + 5)
        got = s.read(4)
    assert got == b"data"
    assert rule.fired == 1
    assert faults.log[-1].what == "EAGAIN (no wakeup)"


def test_blackhole_connect_ends_at_the_deadline(backend: str, faults: Faults) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        rule = faults.blackhole_connect(ln.addr())
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as ei:
            netpoll.dial("tcp", str(ln.addr()), timeout=0.3)
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 3.0
        assert str(ei.value) == f"dial tcp {ln.addr()}: i/o timeout"
        assert rule.fired == 1
        st = faults.switch.stat(2, 1)
        assert (st.connected, st.connect_failed, st.closed) == (0, 0, 1)
        # Nothing ever reached the listener.
        ln.set_deadline(time.time() + 0.05)
        with pytest.raises(TimeoutError):
            ln.accept()


def test_blackhole_connect_does_not_spin(backend: str, faults: Faults) -> None:
    """The dial waits quietly until its deadline: its poller sees nothing, and a
    thread's own poll(2), which reports the unconnected socket at once, pauses."""
    waits = []

    def count(st: Status) -> None:
        waits.append(st.kind)

    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        faults.blackhole_connect(ln.addr())
        faults.switch.set("netpoll", lambda st: count(st))
        faults.switch.set("netpollwait", lambda st: count(st))
        with pytest.raises(TimeoutError):
            netpoll.dial("tcp", str(ln.addr()), timeout=0.5)
    # A spinning dial makes thousands of waits in half a second.
    assert len(waits) < 200, f"{len(waits)} waits: {waits[:5]}"


def test_blackhole_connect_cancel(backend: str, faults: Faults) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        faults.blackhole_connect()
        ev = threading.Event()
        threading.Timer(0.1, ev.set).start()
        with pytest.raises(netpoll.ErrCanceled):
            netpoll.Dialer(cancel=ev, timeout=5).dial("tcp", str(ln.addr()))
        time.sleep(0.05)  # the timer thread ends


@pytest.mark.skipif(not supports_ipv6(), reason="no IPv6 loopback")
def test_blackhole_primary_family_falls_back(
    backend: str, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Happy eyeballs: ::1 hangs, so 127.0.0.1 wins after the fallback delay."""
    real = lookup_mod._gai
    monkeypatch.setattr(
        lookup_mod,
        "_gai",
        lambda host: [("::1", ""), ("127.0.0.1", "")] if host == "dual.test" else real(host),
    )
    with netpoll.listen("tcp", ":0") as ln:  # dual stack
        port = ln.addr().port
        faults.blackhole_connect(lambda a: len(a) == 4)
        t0 = time.monotonic()
        with netpoll.Dialer(fallback_delay=0.1, timeout=5).dial("tcp", f"dual.test:{port}") as c:
            assert str(c.remote_addr()).startswith("127.0.0.1:")
        assert time.monotonic() - t0 >= 0.09
        ln.accept().close()


def test_reset_after_nbytes(faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]) -> None:
    c, s = pair
    rule = faults.reset_after(5, times=1, where=on_fd(s))
    c.write(b"0123456789")
    got = bytearray()
    with pytest.raises(ConnectionResetError) as ei:
        while True:
            got += s.read(100)
    assert bytes(got) == b"01234"
    assert "read: connection reset by peer" in str(ei.value)
    with pytest.raises(ConnectionResetError):
        s.read(1)  # a reset stays a reset
    # One connection reset; each of the two reads that failed is one fault.
    assert (rule.connections, rule.fired) == (1, 2)  # type: ignore[attr-defined]
    assert [i.action for i in faults.injections(rule)] == ["reset", "reset"]


def test_reset_after_write(faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]) -> None:
    c, s = pair
    faults.reset_after(6, kind="write", times=1, err=errno.EPIPE)
    with pytest.raises(BrokenPipeError) as ei:
        c.write(b"0123456789")
    assert ei.value.written == 6
    assert s.read(100) == b"012345"


def test_spurious_wakeups_are_harmless(backend: str, faults: Faults) -> None:
    rule = faults.spurious_wakeups(1.0, interval=0.005)
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        accepted: list[netpoll.Conn] = []
        t = threading.Thread(target=lambda: accepted.append(ln.accept()))
        t.start()
        time.sleep(0.05)  # the accept parks and is woken for nothing
        with netpoll.dial("tcp", str(ln.addr()), timeout=5) as c:
            t.join(5)
            with accepted[0] as s:

                def late() -> None:
                    time.sleep(0.1)
                    c.write(b"late")

                w = threading.Thread(target=late)
                w.start()
                s.set_deadline(time.time() + 5)
                assert s.read(4) == b"late"  # parked across many fake wakeups
                w.join()
    rule.remove()
    assert rule.fired > 0


def _chaos_run(seed: int) -> list[tuple[str, int, str]]:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
        s = ln.accept()
    with c, s, Faults() as f:
        rule = f.chaos(
            seed,
            0.3,
            kinds=("read", "write"),
            where=on_thread(),
            actions={"read": (errno.ECONNRESET, "short"), "write": (errno.EPIPE, "short")},
        )
        pending = 0  # bytes sent and not yet read: a read never has to wait
        for i in range(40):
            try:
                pending += c.write(b"%03d" % i)
            except OSError as exc:
                pending += exc.written  # type: ignore[attr-defined]
            if pending:
                try:
                    pending -= len(s.read(pending))
                except OSError:
                    pass
        return list(rule.log)  # type: ignore[attr-defined]


def test_chaos_is_reproducible(backend: str) -> None:
    a, b, other = _chaos_run(7), _chaos_run(7), _chaos_run(8)
    assert a == b
    assert a and a != other
    assert {action for _, _, action in a} <= {"ECONNRESET", "EPIPE", "short"}


def test_chaos_echo_survives_eagain_and_short_io(
    faults: Faults, pair: tuple[netpoll.Conn, netpoll.Conn]
) -> None:
    c, s = pair
    rule = faults.chaos(3, 0.5, kinds=("read", "write"), actions={"read": ("eagain", "short")})
    # Writes: the defaults include hard errors; keep them off this echo.
    rule.actions["write"] = ("eagain", "short")
    for i in range(30):
        msg = b"message %04d" % i
        c.write(msg)
        got = bytearray()
        while len(got) < len(msg):
            got += s.read(len(msg) - len(got))
        assert bytes(got) == msg
    assert rule.fired > 10


def test_unknown_or_misapplied_kinds_are_errors(faults: Faults) -> None:
    with pytest.raises(ValueError):
        faults.short("connect", 3)
    with pytest.raises(ValueError):
        faults.eagain("close")
    with pytest.raises(ValueError):
        faults.fail("bind", errno.EINVAL)
    with pytest.raises(ValueError):
        faults.chaos(1, 2.0)
    assert faults.rules == []
