"""How a plain thread parks: in the kernel on its fd plus a wake fd, or, past
the wake-fd budget, on a lock with a scheduler M polling its fd.

Both ways must give the same semantics: readiness wakes the thread, a close
from another thread wakes it with ErrClosed, a deadline moved from another
thread takes effect at once (shortened: it fires; extended: it waits on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import netpoll
from netpoll.core import wakefd
from netpoll.core.g import current_g
from tests.helpers.net import ReadOutcomes
from tests.helpers.net import conn_pair as helper_conn_pair

PARK_KINDS = ["wake-fd", "lock"]


@pytest.fixture(params=PARK_KINDS)
def park_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Threads started in the test park this way."""
    if request.param == "lock":
        # No wake descriptor for new threads: the fd budget is spent.
        monkeypatch.setattr(wakefd, "_fd_cap", lambda: 0)
        monkeypatch.setattr(wakefd.wake_fds, "_cap", 0)
    return str(request.param)


@pytest.fixture
def pair(backend: str) -> Iterator[tuple[netpoll.Conn, netpoll.Conn]]:
    """A dialed TCP conn and its accepted peer on loopback."""
    with helper_conn_pair() as both:
        yield both


def _reader(conn: Any, out: dict[str, Any], size: int = 4) -> threading.Thread:
    def run() -> None:
        out["kind"] = "lock" if current_g().poll_m is not None else "wake-fd"
        try:
            out["result"] = conn.read(size)
        except BaseException as exc:
            out["error"] = exc
        out["at"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    return t


def _parked(conn: Any) -> bool:
    pd = conn._fd.pd
    return pd is not None and pd.rg is not None and hasattr(pd.rg, "ready")


def _wait_parked(conn: Any) -> None:
    end = time.monotonic() + 5
    while not _parked(conn):
        assert time.monotonic() < end, "the reader never parked"
        time.sleep(0.005)


def test_readiness_wakes_the_thread(pair: Any, park_kind: str) -> None:
    c, s = pair
    out: dict[str, Any] = {}
    t = _reader(c, out)
    _wait_parked(c)
    s.write(b"data")
    t.join(5)
    assert out["kind"] == park_kind
    assert out.get("result") == b"data"


def test_close_from_another_thread_wakes_it(pair: Any, park_kind: str) -> None:
    c, _ = pair
    out: dict[str, Any] = {}
    t = _reader(c, out)
    _wait_parked(c)
    closed_at = time.monotonic()
    c.close()
    t.join(5)
    assert out["kind"] == park_kind
    assert isinstance(out.get("error"), netpoll.ErrClosed)
    assert out["at"] - closed_at < 2.0


def test_deadline_shortened_from_another_thread_fires(pair: Any, park_kind: str) -> None:
    c, _ = pair
    c.set_read_deadline(time.time() + 3600)
    out: dict[str, Any] = {}
    t = _reader(c, out)
    _wait_parked(c)
    moved_at = time.monotonic()
    c.set_read_deadline(time.time() + 0.1)
    t.join(5)
    assert isinstance(out.get("error"), TimeoutError)
    assert 0.05 < out["at"] - moved_at < 2.0


def test_deadline_extended_from_another_thread_waits_on(pair: Any, park_kind: str) -> None:
    c, s = pair
    c.set_read_deadline(time.time() + 0.3)
    out: dict[str, Any] = {}
    t = _reader(c, out)
    _wait_parked(c)
    c.set_read_deadline(time.time() + 3600)
    time.sleep(0.6)  # past the first deadline
    assert "at" not in out, f"the read ended although its deadline was extended: {out}"
    s.write(b"late")
    t.join(5)
    assert out.get("result") == b"late"


def test_a_watched_read_tries_the_call_first(pair: Any) -> None:
    """After a parked read a thread may wait before its next read, but not while a
    plugin watches reads: to a plugin every operation tries the system call first."""
    from netpoll.core.runtime import runtime

    c, s = pair
    out: dict[str, Any] = {}
    t = _reader(c, out)  # parks: nothing sent yet
    _wait_parked(c)
    s.write(b"one!")
    t.join(5)
    assert out.get("result") == b"one!"

    watch = ReadOutcomes()
    runtime.pm.register(watch)
    try:
        out = {}
        t = _reader(c, out)
        _wait_parked(c)
        s.write(b"two!")
        t.join(5)
    finally:
        runtime.pm.unregister(watch)
    assert out.get("result") == b"two!"
    outcomes = watch.outcomes
    assert outcomes[0] == "EAGAIN" and outcomes[-1] == "data", outcomes
