"""Goroutine handles (issue 18, item 5): what ``netpoll.go`` returns.

``Goroutine[T]``: ``join``/``done``/``result``/``exception``/``name``, from a
plain thread (blocks) and from another goroutine (parks), with timeouts;
the rule for when an exception counts as collected (and so is not reported
to ``excepthook``); killed goroutines; and that the handle shows no greenlet
machinery.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import greenlet
import pytest

import netpoll
import netpoll.core.sched as sched
from netpoll import Chan, Goroutine, GoroutineKilled
from netpoll.core.g import current_g
from netpoll.core.goroutine import g_of
from netpoll.core.runtime import runtime

JOIN = 10.0


@pytest.fixture(autouse=True, scope="module")
def _runtime_fds() -> None:
    """Open the runtime's lasting fds (thread poller, this thread's wake fd) up front."""
    runtime.thread_poller()
    current_g()


@pytest.fixture
def hook_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, BaseException]]:
    """Replace ``sched.excepthook`` with a recorder of ``(handle, exc)``."""
    calls: list[tuple[Any, BaseException]] = []
    monkeypatch.setattr(sched, "excepthook", lambda g, exc: calls.append((g, exc)))
    return calls


def wait_parked(h: Goroutine[Any], timeout: float = JOIN) -> None:
    """Wait (bounded) until someone is waiting in ``h.result()``/``h.exception()``."""
    deadline = time.monotonic() + timeout
    while not g_of(h).collectors:
        assert time.monotonic() < deadline, "nobody came to wait for the goroutine"
        netpoll.sleep(0.001)


# -- the public surface --


def test_handle_shows_only_the_public_api() -> None:
    h = netpoll.go(lambda: 1)
    assert h.join(JOIN)
    public = {n for n in dir(h) if not n.startswith("_")}
    assert public == {"done", "exception", "join", "name", "result"}
    assert not isinstance(h, greenlet.greenlet)
    for machinery in ("switch", "throw", "park", "ready", "poke", "run"):
        assert not hasattr(h, machinery), machinery
    assert isinstance(h, netpoll.Goroutine)
    assert "<lambda>" in h.name and h.name.startswith("G")
    assert repr(h) == f"<Goroutine {h.name} done>"


def test_current_goroutine_is_the_handle_go_returned() -> None:
    seen: list[Any] = []
    h = netpoll.go(lambda: seen.append(netpoll.current_goroutine()))
    assert h.join(JOIN)
    assert seen[0] is h  # the same object while the caller holds it
    assert netpoll.current_goroutine() is None  # a plain thread
    assert hash(seen[0]) == hash(h) and seen[0] == h
    assert h != netpoll.go(lambda: None)


# -- result / exception from a plain thread --


def test_result_from_a_thread_blocks_and_times_out() -> None:
    gate: Chan[int] = Chan()

    def body(a: int, *, b: int) -> int:
        return gate.recv() + a + b

    h = netpoll.go(body, 1, b=2)
    assert not h.done()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.05 s"):
        h.result(timeout=0.05)
    assert time.monotonic() - t0 >= 0.045
    with pytest.raises(TimeoutError):
        h.exception(timeout=0.01)
    with pytest.raises(ValueError):
        h.result(timeout=-1)
    gate.send(10)
    assert h.result(timeout=JOIN) == 13
    assert h.done()
    assert h.exception() is None
    assert h.result(timeout=0) == 13  # again, at once


def test_result_reraises_the_goroutines_exception(
    hook_calls: list[tuple[Any, BaseException]],
) -> None:
    err = KeyError("lost key")
    gate: Chan[None] = Chan()

    def fails() -> None:
        gate.recv()
        raise err

    h = netpoll.go(fails)
    # A plain thread waits in result() before the goroutine raises.
    waiter = threading.Thread(target=lambda: gate.send(None, timeout=JOIN), daemon=True)
    got: list[BaseException] = []

    def collect() -> None:
        try:
            h.result(JOIN)
        except KeyError as exc:
            got.append(exc)

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    deadline = time.monotonic() + JOIN
    while not g_of(h).collectors:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    waiter.start()
    collector.join(JOIN)
    waiter.join(JOIN)
    assert got == [err]
    assert h.exception() is err
    assert hook_calls == []  # collected: not reported


# -- result from a goroutine --


def test_result_from_a_goroutine_parks_only_the_caller(
    hook_calls: list[tuple[Any, BaseException]],
) -> None:
    def main() -> tuple[int, int, str]:
        ticks = 0
        stop = False

        def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                netpoll.sleep(0.005)

        t = netpoll.go(ticker)

        def slow(x: int) -> int:
            netpoll.sleep(0.1)
            return x * 2

        def failing() -> None:
            netpoll.sleep(0.02)
            raise ValueError("from a goroutine")

        value = netpoll.go(slow, 21).result(JOIN)
        bad = netpoll.go(failing)
        with pytest.raises(ValueError, match="from a goroutine") as ei:
            bad.result(JOIN)
        stop = True
        assert t.join(JOIN)
        return value, ticks, str(ei.value)

    value, ticks, text = netpoll.run(main)
    assert value == 42
    assert ticks >= 3  # the M ran the ticker while main waited in result()
    assert text == "from a goroutine"
    assert hook_calls == []


def test_timeout_from_a_goroutine() -> None:
    def main() -> bool:
        gate: Chan[None] = Chan()
        h = netpoll.go(gate.recv)
        with pytest.raises(TimeoutError):
            h.result(timeout=0.02)
        assert h.join(timeout=0.01) is False
        gate.send(None)
        assert h.result(JOIN) is None
        return h.done()

    assert netpoll.run(main) is True


def test_waiting_for_itself_is_an_error() -> None:
    def body() -> list[str]:
        me = netpoll.current_goroutine()
        assert me is not None
        errors = []
        for call in (me.result, me.exception, me.join):
            try:
                call(0.01)  # type: ignore[operator]
            except RuntimeError as exc:
                errors.append(str(exc))
        return errors

    errors = netpoll.go(body).result(JOIN)
    assert len(errors) == 3 and all("would wait forever" in e for e in errors), errors


# -- when an exception counts as collected --


def test_an_exception_nobody_waits_for_is_reported(
    hook_calls: list[tuple[Any, BaseException]],
) -> None:
    def fails() -> None:
        raise OSError("nobody asked")

    h = netpoll.go(fails)
    assert h.join(JOIN)  # join does not collect
    assert [(g, type(e)) for g, e in hook_calls] == [(h, OSError)]
    assert hook_calls[0][0] is h  # the handle, not the greenlet
    # A late result() still raises it (it was reported as well).
    with pytest.raises(OSError, match="nobody asked"):
        h.result()
    assert len(hook_calls) == 1


def test_a_fire_and_forget_exception_is_reported_with_a_handle(
    hook_calls: list[tuple[Any, BaseException]],
) -> None:
    done: Chan[None] = Chan(1)

    def fails() -> None:
        done.send(None)
        raise LookupError("forgotten")

    netpoll.go(fails)  # the handle is dropped at once
    done.recv(timeout=JOIN)
    deadline = time.monotonic() + JOIN
    while not hook_calls:
        assert time.monotonic() < deadline, "the exception was never reported"
        time.sleep(0.001)
    g, exc = hook_calls[0]
    assert isinstance(g, Goroutine) and "fails" in g.name
    assert isinstance(exc, LookupError)


def test_a_collector_that_gave_up_collects_nothing(
    hook_calls: list[tuple[Any, BaseException]],
) -> None:
    gate: Chan[None] = Chan()

    def fails() -> None:
        gate.recv()
        raise RuntimeError("after the timeout")

    h = netpoll.go(fails)
    with pytest.raises(TimeoutError):
        h.exception(timeout=0.01)
    gate.send(None)
    assert h.join(JOIN)
    assert [type(e) for _, e in hook_calls] == [RuntimeError]  # reported: nobody waited
    assert isinstance(h.exception(), RuntimeError)


def test_exception_waiting_in_a_goroutine_collects(
    hook_calls: list[tuple[Any, BaseException]],
) -> None:
    def main() -> BaseException | None:
        gate: Chan[None] = Chan()

        def fails() -> None:
            gate.recv()
            raise ZeroDivisionError("collected")

        h = netpoll.go(fails)
        netpoll.go(lambda: (wait_parked(h), gate.send(None)))
        return h.exception(JOIN)

    exc = netpoll.run(main)
    assert isinstance(exc, ZeroDivisionError)
    assert hook_calls == []


# -- killed goroutines --


def test_a_killed_goroutine_has_no_result(hook_calls: list[tuple[Any, BaseException]]) -> None:
    def main() -> Goroutine[None]:
        forever: Chan[None] = Chan()
        return netpoll.go(forever.recv)  # still parked when main returns

    h = netpoll.run(main)
    assert h.done()
    with pytest.raises(GoroutineKilled, match="killed before it finished"):
        h.result(JOIN)
    assert isinstance(h.exception(JOIN), GoroutineKilled)
    assert repr(h) == f"<Goroutine {h.name} killed>"
    assert hook_calls == []  # a kill is no error


# -- blocking takes keyword arguments --


def test_blocking_passes_keyword_arguments() -> None:
    def call(a: int, *, b: int = 0) -> tuple[int, bool]:
        return a + b, netpoll.current_goroutine() is None

    assert netpoll.blocking(call, 1, b=2) == (3, True)  # from a thread: in the caller
    assert netpoll.run(netpoll.blocking, call, 4, b=5) == (9, True)  # in the pool
