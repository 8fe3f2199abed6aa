"""netpoll.green.psycopg_support: the selector psycopg's waits use, on a socketpair.

The selector never owns the descriptors it watches (libpq does): releasing
it unregisters them from the poller and leaves them open.  It parks a
goroutine (its M runs others) and blocks a thread, as psycopg's own wait
functions would.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

import netpoll
from netpoll.green import psycopg_support
from netpoll.green.psycopg_support import PollDescSelector

R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def in_goroutine_and_thread(fn: object) -> None:
    assert callable(fn)
    fn()
    netpoll.run(fn)


def test_bad_input_is_refused_by_name(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    with PollDescSelector() as sel:
        with pytest.raises(ValueError, match="invalid events"):
            sel.register(a, 0)
        with pytest.raises(ValueError, match="invalid events"):
            sel.register(a, 8)
        with pytest.raises(ValueError, match="invalid file descriptor"):
            sel.register(-1, R)
        sel.register(a, R)
        with pytest.raises(KeyError, match="already registered"):
            sel.register(a.fileno(), W)
        with pytest.raises(KeyError, match="not registered"):
            sel.unregister(12345)
        with pytest.raises(KeyError, match="not registered"):
            sel.modify(12345, R)


def test_select_times_out_then_reports_readiness(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    def body() -> None:
        with PollDescSelector() as sel:
            key = sel.register(a, R, "data")
            start = time.monotonic()
            assert sel.select(0.05) == []
            assert time.monotonic() - start >= 0.045
            assert sel.select(0) == []
            b.send(b"x")
            assert sel.select(5) == [(key, R)]
            assert a.recv(1) == b"x"
            key = sel.modify(a, R | W)
            assert sel.select(5) == [(key, W)]  # writable, nothing to read
            assert sel.get_map()[a].data is None and len(sel.get_map()) == 1

    in_goroutine_and_thread(body)


def test_a_parked_select_lets_the_m_run_other_goroutines(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    order: list[str] = []

    def writer() -> None:
        order.append("writer ran")
        netpoll.sleep(0.02)
        b.send(b"y")

    def main() -> None:
        with PollDescSelector() as sel:
            sel.register(a, R)
            g = netpoll.go(writer)
            got = sel.select(5)
            order.append("select returned")
            assert [ev for _k, ev in got] == [R]
            g.join()

    netpoll.run(main)
    assert order == ["writer ran", "select returned"]


def test_release_unregisters_but_never_closes(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    def body() -> None:
        sel = PollDescSelector()
        sel.register(a, R)
        sel.unregister(a)
        sel.register(a, W)
        sel.close()
        os.fstat(a.fileno())  # still open: the selector does not own it
        b.send(b"z")
        assert a.recv(1) == b"z"

    # The leak check (tests/conftest.py) fails the test on a pollDesc left live.
    in_goroutine_and_thread(body)


def test_empty_selector_sleeps_for_the_timeout() -> None:
    def body() -> None:
        with PollDescSelector() as sel:
            start = time.monotonic()
            assert sel.select(0.03) == []
            assert time.monotonic() - start >= 0.025

    in_goroutine_and_thread(body)


def test_install_rebinds_psycopgs_wait_and_uninstall_restores() -> None:
    waiting = pytest.importorskip("psycopg.waiting")
    was = psycopg_support.installed()
    saved_wait, saved_sel = waiting.wait, waiting.DefaultSelector
    psycopg_support.uninstall()
    try:
        original_wait, original_sel = waiting.wait, waiting.DefaultSelector
        psycopg_support.install()
        psycopg_support.install()  # twice is harmless
        assert psycopg_support.installed()
        assert waiting.wait is waiting.wait_selector
        assert waiting.DefaultSelector is PollDescSelector
        psycopg_support.uninstall()
        assert waiting.wait is original_wait and waiting.DefaultSelector is original_sel
        assert not psycopg_support.installed()
    finally:
        if was:
            psycopg_support.install()
        assert (waiting.wait, waiting.DefaultSelector) == (saved_wait, saved_sel)
