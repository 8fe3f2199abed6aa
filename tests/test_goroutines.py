"""Goroutines as specifications: go/run/join, sleep and timers, gosched,
blocking, unhandled exceptions, sysmon's hog report, many Gs, Ms and
``NETPOLL_PROCS``, cross-M wakeups, and the net API driven by goroutines.

Timing is checked by order and generous bounds only (a loaded 2-core
machine).  Tests that exercise :func:`netpoll.run` itself call it from the
plain test thread; the others run their body as a goroutine through the
``netpoll_goroutine`` marker.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import netpoll
import netpoll.core.sched as sched
from netpoll import Chan, GoroutineHogWarning, Mutex, WaitGroup
from netpoll.core import procs, sysmon
from netpoll.core.g import GreenletExit, GreenletG, current_g, current_goroutine
from netpoll.core.goroutine import g_of
from netpoll.core.runtime import runtime

JOIN = 10.0

goroutine = pytest.mark.netpoll_goroutine


@pytest.fixture(autouse=True, scope="module")
def _runtime_fds() -> None:
    """Open the runtime's lasting fds (thread poller, this thread's wake fd) up front.

    They live for good once the test thread has parked; the leak check does
    not count the wake fd, but a new low fd moves its own ``os.listdir`` fd
    to another number, which it does count.
    """
    runtime.thread_poller()
    current_g()


@pytest.fixture(scope="module")
def two_background_ms() -> None:
    """Start a second background M before the leak check looks (Ms live for good)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(procs.ENV_PROCS, "2")
        while len(procs._background) < 2:
            procs.background_m()


@pytest.fixture
def hook_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, BaseException]]:
    """Replace ``sched.excepthook`` with a recorder of ``(g, exc)``."""
    calls: list[tuple[Any, BaseException]] = []
    monkeypatch.setattr(sched, "excepthook", lambda g, exc: calls.append((g, exc)))
    return calls


def wait_until(cond: Callable[[], bool], timeout: float = JOIN) -> None:
    """Poll ``cond`` (parking, in a goroutine) until it holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        netpoll.sleep(0.002)


def start_thread(target: Callable[..., Any], *args: Any) -> threading.Thread:
    """Start a daemon thread (a failing test must not hang the interpreter's exit)."""
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def join_thread(t: threading.Thread) -> None:
    """Join a thread without blocking the M when called from a goroutine."""
    if current_goroutine() is not None:
        netpoll.blocking(t.join, JOIN)
    else:
        t.join(JOIN)
    assert not t.is_alive()


def conn_pair() -> tuple[netpoll.Conn, netpoll.Conn]:
    """(dialed, accepted) over loopback TCP; the caller closes both."""
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    try:
        c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
        try:
            s = ln.accept()
        except BaseException:
            c.close()
            raise
    finally:
        ln.close()
    return c, s


class Ticker:
    """A goroutine that counts while the M is free: proof that the M was not blocked."""

    def __init__(self, interval: float = 0.005) -> None:
        self.ticks = 0
        self._stop = False

        def loop() -> None:
            while not self._stop:
                self.ticks += 1
                netpoll.sleep(interval)

        self.g = netpoll.go(loop)

    def stop(self) -> int:
        self._stop = True
        assert self.g.join(JOIN)
        return self.ticks


# -- go / join / done -----------------------------------------------------------------------


def test_go_from_thread_join_done() -> None:
    gate: Chan[None] = Chan()
    out: list[Any] = []
    g = netpoll.go(lambda a, b=0: (gate.recv(), out.append(a + b)), 1, b=2)
    assert isinstance(g, netpoll.Goroutine)
    assert "<lambda>" in g.name
    assert not g.done()
    t0 = time.monotonic()
    assert g.join(timeout=0.05) is False
    assert time.monotonic() - t0 >= 0.045
    with pytest.raises(ValueError):
        g.join(timeout=-1)
    gate.send(None)
    assert g.join(timeout=JOIN) is True
    assert g.done()
    assert out == [3]
    assert g.join(timeout=0) is True  # again, at once


def test_done_is_true_once_join_returned() -> None:
    not_done = 0
    for _ in range(100):
        g = netpoll.go(netpoll.sleep, 0.002)  # finishes while the thread is parked in join
        assert g.join(JOIN)
        if not g.done():
            not_done += 1
    assert not_done == 0, f"join() returned True but done() was False {not_done} times of 100"


def test_go_from_thread_runs_on_a_background_m() -> None:
    seen: dict[str, Any] = {}

    def body() -> None:
        seen["ident"] = threading.get_ident()
        seen["thread"] = threading.current_thread().name
        seen["g"] = netpoll.current_goroutine()

    g = netpoll.go(body)
    assert g.join(JOIN)
    assert seen["ident"] != threading.get_ident()
    assert seen["thread"].startswith("netpoll-")
    assert seen["g"] is g
    assert g_of(g).m in procs.all_ms()
    assert seen["ident"] == g_of(g).m.ident
    assert current_goroutine() is None  # the test thread is not a goroutine


@goroutine
def test_join_from_goroutine_parks_only_the_caller() -> None:
    ticker = Ticker()
    g = netpoll.go(netpoll.sleep, 0.1)
    assert g_of(g).m is current_goroutine().m  # type: ignore[union-attr]  # same M (NETPOLL_PROCS=1)
    assert g.join(JOIN)
    assert ticker.stop() >= 3  # the M ran the ticker while the main G waited


# -- run ------------------------------------------------------------------------------------


def test_run_returns_mains_value() -> None:
    def main(a: int, b: int, *, c: int) -> tuple[int, bool]:
        return a + b + c, current_goroutine() is not None

    assert netpoll.run(main, 1, 2, c=3) == (6, True)
    assert netpoll.run(lambda: None) is None
    assert current_goroutine() is None


def test_run_reraises_mains_exception(hook_calls: list[tuple[Any, BaseException]]) -> None:
    err = KeyError("main failed")

    def main() -> None:
        netpoll.sleep(0.001)
        raise err

    with pytest.raises(KeyError) as info:
        netpoll.run(main)
    assert info.value is err
    assert hook_calls == []  # main's exception is run's, not an unhandled G exception
    assert netpoll.run(lambda: 5) == 5  # the thread can run again


def test_run_kills_leftover_goroutines(hook_calls: list[tuple[Any, BaseException]]) -> None:
    """Gs still running when main returns get GreenletExit; their finally blocks close."""
    events: list[str] = []
    held: dict[str, Any] = {}

    def acceptor(ln: netpoll.Listener) -> None:
        try:
            ln.accept()
        except GreenletExit:
            events.append("acceptor got GreenletExit")
            raise
        finally:
            ln.close()
            events.append("acceptor finally")

    def reader(name: str, c: netpoll.Conn) -> None:
        with c:
            try:
                c.read(1)
            finally:
                events.append(f"{name} finally")

    def sleeper() -> None:
        try:
            netpoll.sleep(3600)
        finally:
            events.append("sleeper finally")

    def chan_waiter(ch: Chan[int]) -> None:
        try:
            ch.recv()
        finally:
            events.append("chan finally")

    def mutex_waiter(mu: Mutex) -> None:
        try:
            mu.lock()
        finally:
            events.append("mutex finally")

    def main() -> None:
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        c, s = conn_pair()
        ch: Chan[int] = Chan()
        mu = Mutex()
        mu.lock()
        held.update(ln=ln, c=c, s=s, ch=ch, mu=mu)
        gs = [
            netpoll.go(acceptor, ln),
            netpoll.go(reader, "client", c),
            netpoll.go(reader, "server", s),
            netpoll.go(sleeper),
            netpoll.go(chan_waiter, ch),
            netpoll.go(mutex_waiter, mu),
        ]
        held["gs"] = gs
        wait_until(lambda: len(ch._recvq) == 1 and len(mu._waiters) == 1)
        netpoll.sleep(0.02)  # the others are parked too by now
        assert not any(g.done() for g in gs)

    netpoll.run(main)
    assert sorted(events) == sorted(
        [
            "acceptor got GreenletExit",
            "acceptor finally",
            "client finally",
            "server finally",
            "sleeper finally",
            "chan finally",
            "mutex finally",
        ]
    )
    assert held["ln"].closed and held["c"].closed and held["s"].closed
    assert all(g.done() for g in held["gs"])
    assert all(g.join(0) for g in held["gs"])
    assert hook_calls == []  # being killed is not an unhandled exception
    # The killed Gs left no waiter behind that would swallow a later value or the lock.
    ch, mu = held["ch"], held["mu"]
    assert not ch._recvq and not mu._waiters
    with pytest.raises(TimeoutError):
        ch.send(1, timeout=0.02)
    mu.unlock()
    assert not mu.locked()


def test_run_end_finishes_goroutines_that_never_started() -> None:
    ran: list[int] = []
    g = netpoll.run(lambda: netpoll.go(ran.append, 1))
    assert ran == []  # killed before it ran: its function never starts
    assert g.done()
    assert g.join(timeout=0.2), "join() of a G killed before it started never returns"
    assert g_of(g) not in g_of(g).m.gs


# -- sleep, timers, gosched -----------------------------------------------------------------


@goroutine
def test_sleeps_wake_in_order() -> None:
    # 30 ms apart: a stall between two Gs' starts shorter than that cannot swap them.
    durations = [0.18, 0.06, 0.24, 0.0, 0.12, 0.21, 0.03, 0.15]
    woke: list[float] = []
    late: list[tuple[float, float]] = []

    def sleeper(d: float) -> None:
        t0 = time.monotonic()
        netpoll.sleep(d)
        elapsed = time.monotonic() - t0
        if elapsed < d:
            late.append((d, elapsed))  # woke early
        woke.append(d)

    t0 = time.monotonic()
    gs = [netpoll.go(sleeper, d) for d in durations]
    for g in gs:
        assert g.join(JOIN)
    assert late == [], "sleep returned before its duration"
    assert woke == sorted(durations)
    assert time.monotonic() - t0 < 3.0  # they slept at once, not one after the other


@goroutine
def test_sleep_parks_only_the_caller() -> None:
    ticker = Ticker()
    t0 = time.monotonic()
    netpoll.sleep(0.1)
    assert time.monotonic() - t0 >= 0.1
    assert ticker.stop() >= 3


def test_sleep_and_gosched_in_a_plain_thread() -> None:
    t0 = time.monotonic()
    netpoll.sleep(0.02)
    assert time.monotonic() - t0 >= 0.02
    netpoll.sleep(0)
    netpoll.gosched()


@goroutine
def test_gosched_interleaves() -> None:
    trace: list[str] = []

    def worker(name: str) -> None:
        for i in range(5):
            trace.append(f"{name}{i}")
            netpoll.gosched()

    a = netpoll.go(worker, "a")
    b = netpoll.go(worker, "b")
    assert a.join(JOIN) and b.join(JOIN)
    # FIFO run queue: each gosched lets the other run once.
    assert trace == [f"{n}{i}" for i in range(5) for n in "ab"]


@goroutine
def test_sleep_zero_yields() -> None:
    trace: list[str] = []
    g = netpoll.go(trace.append, "other")
    assert trace == []  # a new G waits for the M
    netpoll.sleep(0)
    assert trace == ["other"]
    assert g.join(JOIN)


@goroutine
def test_no_preemption_without_a_park() -> None:
    """A G that never parks runs to its end before a G readied meanwhile starts."""
    trace: list[str] = []
    g = netpoll.go(trace.append, "other")
    for i in range(3):
        trace.append(f"main{i}")
        time.sleep(0.001)  # blocks the M, does not yield it
    assert trace == ["main0", "main1", "main2"]
    assert g.join(JOIN)
    assert trace[-1] == "other"


# -- blocking -------------------------------------------------------------------------------


@goroutine
def test_blocking_runs_in_the_pool_and_parks_only_the_caller() -> None:
    m_ident = threading.get_ident()
    ticker = Ticker()

    def work(x: int) -> tuple[int, int, str]:
        time.sleep(0.15)
        return x * 2, threading.get_ident(), threading.current_thread().name

    value, ident, name = netpoll.blocking(work, 21)
    assert value == 42
    assert ident != m_ident
    assert name.startswith("netpoll-blocking")
    assert ticker.stop() >= 3  # the M kept running Gs meanwhile

    with pytest.raises(ZeroDivisionError):
        netpoll.blocking(lambda: 1 / 0)


@goroutine
def test_blocking_calls_overlap() -> None:
    t0 = time.monotonic()
    gs = [netpoll.go(netpoll.blocking, time.sleep, 0.2) for _ in range(4)]
    for g in gs:
        assert g.join(JOIN)
    assert time.monotonic() - t0 < 0.7  # in parallel, not 4 x 0.2 s one after the other


def test_blocking_in_a_plain_thread_runs_in_the_caller() -> None:
    assert netpoll.blocking(threading.get_ident) == threading.get_ident()


# -- unhandled exceptions -------------------------------------------------------------------


def test_unhandled_exception_is_reported_and_runtime_goes_on(
    hook_calls: list[tuple[Any, BaseException]],
) -> None:
    def failing_worker() -> None:
        netpoll.sleep(0.001)
        raise ValueError("boom")

    def main() -> str:
        bad = netpoll.go(failing_worker)
        assert bad.join(JOIN)  # finished, by raising
        good = netpoll.go(lambda: "fine")
        assert good.join(JOIN)
        netpoll.sleep(0.01)
        return bad.name

    name = netpoll.run(main)  # the exception did not stop run()
    assert len(hook_calls) == 1
    g, exc = hook_calls[0]
    assert g.name == name and "failing_worker" in name
    assert isinstance(exc, ValueError) and str(exc) == "boom"


def test_unhandled_exception_on_a_background_m(
    hook_calls: list[tuple[Any, BaseException]],
) -> None:
    def failing_worker() -> None:
        raise OSError("bad")

    bad = netpoll.go(failing_worker)
    assert bad.join(JOIN)
    assert [(g, type(e)) for g, e in hook_calls] == [(bad, OSError)]
    # The background M still runs Gs.
    out: list[int] = []
    assert netpoll.go(out.append, 1).join(JOIN)
    assert out == [1]


def test_default_excepthook_prints_name_and_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sched.excepthook is sched._default_excepthook

    def failing_worker() -> None:
        raise RuntimeError("printed boom")

    def main() -> str:
        g = netpoll.go(failing_worker)
        assert g.join(JOIN)
        return g.name

    name = netpoll.run(main)
    err = capsys.readouterr().err
    assert name in err
    assert "Traceback" in err and "RuntimeError: printed boom" in err
    assert "failing_worker" in err


# -- sysmon ---------------------------------------------------------------------------------


def spin_without_parking(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_hog_is_reported_once_with_its_stack() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def main() -> str:
            g = netpoll.go(spin_without_parking, 4 * sysmon.HOG_REPORT_SECONDS)
            assert g.join(JOIN)
            return g.name

        name = netpoll.run(main)
    hogs = [
        w for w in caught if issubclass(w.category, GoroutineHogWarning) and name in str(w.message)
    ]
    assert len(hogs) == 1, [str(w.message) for w in hogs]
    assert "spin_without_parking" in str(hogs[0].message)  # its stack


def test_goroutine_that_parks_is_not_a_hog() -> None:
    def polite() -> None:
        end = time.monotonic() + 3 * sysmon.HOG_REPORT_SECONDS
        while time.monotonic() < end:
            spin_without_parking(0.002)
            netpoll.sleep(0.001)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name = netpoll.run(lambda: (g := netpoll.go(polite), g.join(JOIN), g.name)[2])
    assert not [
        w for w in caught if issubclass(w.category, GoroutineHogWarning) and name in str(w.message)
    ]


# -- many goroutines ------------------------------------------------------------------------


@goroutine
def test_ten_thousand_sleepers() -> None:
    n = 10_000
    wg = WaitGroup()
    wg.add(n)
    woke = [0]

    def sleeper(i: int) -> None:
        netpoll.sleep(0.001 * (i % 20))
        woke[0] += 1
        wg.done()

    for i in range(n):
        netpoll.go(sleeper, i)
        if i % 1000 == 0:
            netpoll.gosched()  # a main G that never parks would be a hog (sysmon)
    assert wg.wait(timeout=30)
    assert woke[0] == n
    me = current_goroutine()
    assert me is not None and me.m.gs == {me}  # every sleeper has exited


@goroutine
def test_ten_thousand_channel_exchanges() -> None:
    n = 10_000
    ch: Chan[int] = Chan()
    back: Chan[int] = Chan(n)

    def echo() -> None:
        back.send(ch.recv() * 2)

    gs = []
    for i in range(n):
        gs.append(netpoll.go(echo))
        if i % 1000 == 0:
            netpoll.gosched()  # a main G that never parks would be a hog (sysmon)
    for i in range(n):
        ch.send(i)
        if i % 1000 == 0:
            netpoll.gosched()
    got = []
    for i in range(n):
        got.append(back.recv())
        if i % 1000 == 0:
            netpoll.gosched()
    assert sorted(got) == [2 * i for i in range(n)]
    for g in gs:
        assert g.join(JOIN)


# -- Ms and NETPOLL_PROCS -------------------------------------------------------------------


@pytest.mark.usefixtures("two_background_ms")
def test_procs_spreads_goroutines_over_two_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(procs.ENV_PROCS, "2")
    idents: list[tuple[int, int]] = []

    def body() -> None:
        first = threading.get_ident()
        netpoll.sleep(0.001)
        netpoll.gosched()
        idents.append((first, threading.get_ident()))

    gs = [netpoll.go(body) for _ in range(20)]
    for g in gs:
        assert g.join(JOIN)
    started = {a for a, _ in idents}
    assert len(started) == 2, started
    assert threading.get_ident() not in started
    assert all(a == b for a, b in idents), "a G moved to another M"
    assert {g_of(g).m.ident for g in gs} == started


@pytest.mark.usefixtures("two_background_ms")
def test_procs_spreads_goroutines_started_by_a_goroutine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(procs.ENV_PROCS, "2")

    def main() -> set[int]:
        idents: set[int] = set()
        gs = [netpoll.go(lambda: idents.add(threading.get_ident())) for _ in range(10)]
        for g in gs:
            assert g.join(JOIN)
        return idents

    idents = netpoll.run(main)
    assert len(idents) == 2, idents


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_procs_bad_value(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(procs.ENV_PROCS, value)
    with pytest.raises(ValueError, match=procs.ENV_PROCS):
        netpoll.go(lambda: None)


def test_stop_ends_a_sleeping_m_and_its_goroutines_cleanup_runs_to_the_end() -> None:
    """``M.stop()`` from another thread ends an M asleep in its poller (interpreter exit).

    Its goroutine gets GreenletExit, parks again in its ``finally`` (gosched),
    and the M's end-of-life drain runs it to the end before the M retires.
    """
    m = procs._start_background_m("stop-test")
    started = threading.Event()
    cleaned: list[str] = []

    def body() -> None:
        try:
            started.set()
            Chan[int]().recv()  # parks for good
        finally:
            netpoll.gosched()  # parks in its cleanup: the drain must run it again
            cleaned.append("done")

    m.spawn(GreenletG(m, body, (), {}))
    assert started.wait(JOIN)
    deadline = time.monotonic() + JOIN
    while not m.sleeping and time.monotonic() < deadline:
        time.sleep(0.001)
    assert m.sleeping, "the M never went to sleep in its poller"
    m.stop()
    assert m.thread is not None
    m.thread.join(JOIN)
    assert not m.thread.is_alive(), "stop() did not wake the sleeping M"
    assert cleaned == ["done"]
    assert m.exited and m not in procs.all_ms() and m.poller is None


@goroutine
def test_goroutine_woken_by_a_channel_from_another_m() -> None:
    ch: Chan[int] = Chan()
    other: list[int] = []

    def sender() -> None:
        other.append(threading.get_ident())
        ch.send(5)

    # A plain thread's go() lands on a background M, not on this run() M.
    t = start_thread(lambda: other.append(g_of(netpoll.go(sender)).m.ident))
    assert ch.recv(timeout=JOIN) == 5
    join_thread(t)
    assert other[0] == other[1] != threading.get_ident()


@goroutine
def test_goroutine_woken_by_io_from_another_m() -> None:
    c, s = conn_pair()
    try:
        # A G of a background M writes: this G, parked in read, is woken by the poller.
        t = start_thread(lambda: netpoll.go(lambda: (netpoll.sleep(0.03), s.write(b"x"))))
        assert c.read(1) == b"x"
        join_thread(t)
        # c is registered with this M's poller now; a G of another M parks on it and is
        # woken through that poller and its own M's injection queue.
        got: Chan[tuple[bytes, int]] = Chan(1)
        t = start_thread(lambda: netpoll.go(lambda: got.send((c.read(1), threading.get_ident()))))
        join_thread(t)
        netpoll.sleep(0.03)
        s.write(b"y")
        data, ident = got.recv(timeout=JOIN)
        assert data == b"y" and ident != threading.get_ident()
    finally:
        c.close()
        s.close()


# -- the net API inside goroutines ----------------------------------------------------------


@goroutine
def test_goroutine_echo_server() -> None:
    """A G per connection serves thread clients, goroutine clients and clients on another M."""
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    addr = str(ln.addr())
    handlers: list[netpoll.Goroutine] = []

    def handle(c: netpoll.Conn) -> None:
        with c:
            while True:
                data = c.read(4096)
                if not data:
                    return
                c.write(data)

    def serve() -> None:
        while True:
            try:
                c = ln.accept()
            except netpoll.ErrClosed:
                return
            handlers.append(netpoll.go(handle, c))

    server = netpoll.go(serve)
    wg = WaitGroup()
    errors: list[str] = []

    def client(i: int) -> None:
        try:
            with netpoll.dial("tcp", addr, timeout=5) as c:
                for r in range(20):
                    msg = f"client {i} round {r}".encode()
                    c.write(msg)
                    got = b""
                    while len(got) < len(msg):
                        chunk = c.read(len(msg) - len(got))
                        assert chunk, "EOF from the echo server"
                        got += chunk
                    assert got == msg
        except BaseException as exc:
            errors.append(f"client {i}: {exc!r}")
        finally:
            wg.done()

    n_thread, n_go, n_other_m = 3, 3, 2
    wg.add(n_thread + n_go + n_other_m)
    threads = [start_thread(client, i) for i in range(n_thread)]
    for i in range(n_go):
        netpoll.go(client, 100 + i)
    starter = start_thread(lambda: [netpoll.go(client, 200 + i) for i in range(n_other_m)])
    assert wg.wait(timeout=JOIN)
    assert errors == []
    for t in [*threads, starter]:
        join_thread(t)
    ln.close()
    assert server.join(JOIN)
    assert len(handlers) == n_thread + n_go + n_other_m
    for h in handlers:
        assert h.join(JOIN)


@goroutine
def test_deadline_fires_while_goroutine_is_parked() -> None:
    c, s = conn_pair()
    try:
        ticker = Ticker()
        c.set_read_deadline(time.time() + 0.1)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            c.read(1)
        assert time.monotonic() - t0 >= 0.09
        assert isinstance(info.value, netpoll.OpError)
        assert ticker.stop() >= 3  # the M was free while the G waited
        # The conn still works after the timeout.
        c.set_read_deadline(None)
        s.write(b"z")
        assert c.read(1) == b"z"
    finally:
        c.close()
        s.close()


@goroutine
def test_deadline_moved_by_another_goroutine_while_parked() -> None:
    c, s = conn_pair()
    try:

        def mover() -> None:
            netpoll.sleep(0.03)
            c.set_read_deadline(time.time() - 1)  # now in the past: the parked read fails

        netpoll.go(mover)
        c.set_read_deadline(time.time() + 30)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            c.read(1)
        assert time.monotonic() - t0 < 5
    finally:
        c.close()
        s.close()


@goroutine
@pytest.mark.parametrize("closer", ["thread", "goroutine"])
def test_close_wakes_a_parked_goroutine(closer: str) -> None:
    c, s = conn_pair()
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    try:

        def close_later() -> None:
            netpoll.sleep(0.05)
            c.close()
            ln.close()

        t = None
        if closer == "thread":
            t = start_thread(close_later)
        else:
            netpoll.go(close_later)  # on this same M
        accept_err: list[BaseException] = []

        def acceptor() -> None:
            try:
                ln.accept()
            except OSError as exc:
                accept_err.append(exc)

        acc = netpoll.go(acceptor)
        t0 = time.monotonic()
        with pytest.raises(netpoll.ErrClosed) as info:
            c.read(1)
        assert not isinstance(info.value, TimeoutError)
        assert time.monotonic() - t0 < 5
        assert acc.join(JOIN)
        assert len(accept_err) == 1 and isinstance(accept_err[0], netpoll.ErrClosed)
        if t is not None:
            join_thread(t)
    finally:
        c.close()
        s.close()
        ln.close()


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["thread", pytest.param("goroutine", marks=goroutine)])
def test_bad_input(kind: str) -> None:
    with pytest.raises(ValueError):
        netpoll.sleep(-1)
    with pytest.raises(ValueError):
        netpoll.sleep(float("nan"))
    with pytest.raises(TypeError):
        netpoll.go(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        netpoll.go(None)  # type: ignore[arg-type]


@goroutine
def test_nested_run_raises() -> None:
    with pytest.raises(RuntimeError):
        netpoll.run(lambda: None)
    # Also from a G of a background M.
    errors: list[type[BaseException]] = []

    def try_run() -> None:
        try:
            netpoll.run(lambda: None)
        except RuntimeError as exc:
            errors.append(type(exc))

    t = start_thread(lambda: netpoll.go(try_run).join(JOIN))
    join_thread(t)
    assert errors == [RuntimeError]
    netpoll.sleep(0.001)  # the runtime is fine


def test_run_of_non_callable_raises() -> None:
    with pytest.raises(TypeError):
        netpoll.run(42)  # type: ignore[arg-type]


def test_interpreter_exit_ends_background_goroutines() -> None:
    # A goroutine started from a plain thread runs on a background M, a
    # daemon thread.  At exit its Gs get GreenletExit (their finally blocks
    # run) and the thread ends, instead of being frozen with live greenlets
    # while the interpreter is torn down (which crashed a few exits in 100).
    import sys

    from tests.helpers import proc

    code = """
import netpoll, sys
ln = netpoll.listen("tcp", "127.0.0.1:0")
ready = netpoll.Chan(1)

def serve():
    try:
        ready.send(True)
        ln.accept()  # parks for good
    finally:
        print("finally ran", flush=True)
        ln.close()

netpoll.go(serve)
ready.recv()
print("exiting", flush=True)
"""
    r = proc.run([sys.executable, "-c", code], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["exiting", "finally ran"], (r.stdout, r.stderr)


def test_go_from_a_late_atexit_handler_still_runs() -> None:
    # An atexit handler registered before netpoll was imported runs after
    # netpoll stopped its background Ms: go() there must get a fresh M.
    import sys

    from tests.helpers import proc

    code = """
import atexit

def late():
    import netpoll
    h = netpoll.go(lambda: print("late goroutine ran", flush=True))
    assert h.join(10)

atexit.register(late)
import netpoll
netpoll.go(lambda: None).join(10)  # a background M exists before exit
"""
    r = proc.run([sys.executable, "-c", code], timeout=60)
    assert r.returncode == 0, r.stderr
    # Some Pythons (3.12.0-3.12.x) start no thread during atexit: there
    # go() fails loudly with Python's own error.  Never a silent hang.
    refused = "can't create new thread at interpreter shutdown" in r.stderr
    assert "late goroutine ran" in r.stdout or refused, (r.stdout, r.stderr)
