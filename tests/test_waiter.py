"""The park/ready primitive (netpoll/core/waiter.py) and its wake-eventfd pool."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from netpoll.core import waiter
from netpoll.core.fd import FD
from netpoll.core.waiter import ThreadG, WakeFdPool, wake_fds

HAVE_EVENTFD = hasattr(os, "eventfd")
NO_EVENTFD = "os.eventfd is Linux-only; elsewhere a G parks on a lock"


@pytest.fixture
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[WakeFdPool]:
    """A private pool in place of the process one, emptied afterwards."""
    pool = WakeFdPool(max_idle=2)
    monkeypatch.setattr(waiter, "wake_fds", pool)
    yield pool
    pool.clear()


def _assert_parks_until_ready(g: ThreadG, why: str = "park returned without a ready") -> None:
    """Park ``g`` in a thread: it must stay parked until ``ready``, then return."""
    t = threading.Thread(target=g.park)
    t.start()
    time.sleep(0.05)
    assert t.is_alive(), why
    g.ready()
    t.join(5)
    assert not t.is_alive()


def test_ready_before_park_is_not_lost(fresh_pool: WakeFdPool) -> None:
    g = ThreadG("t")
    g.prepare()
    g.ready()
    t0 = time.monotonic()
    g.park()  # must return at once
    assert time.monotonic() - t0 < 5.0


def test_park_blocks_until_ready(fresh_pool: WakeFdPool) -> None:
    g = ThreadG("t")
    g.prepare()
    _assert_parks_until_ready(g, "park returned without a ready")


@pytest.mark.skipif(not HAVE_EVENTFD, reason=NO_EVENTFD)
def test_park_uses_a_pooled_eventfd_and_gives_it_back(fresh_pool: WakeFdPool) -> None:
    g = ThreadG("t")
    g.prepare()
    fd = g._wake_fd
    assert fd >= 0
    assert os.fstat(fd) is not None
    g.ready()
    g.park()
    assert g._wake_fd == -1
    assert fresh_pool.idle() == {fd}
    # The next park reuses it, and its counter was left at zero.
    g.prepare()
    assert g._wake_fd == fd
    _assert_parks_until_ready(g, "a reused eventfd carried a stale wakeup")


@pytest.mark.skipif(not HAVE_EVENTFD, reason=NO_EVENTFD)
def test_cancel_returns_the_fd_and_the_pool_is_bounded(fresh_pool: WakeFdPool) -> None:
    gs = [ThreadG(str(i)) for i in range(4)]
    for g in gs:
        g.prepare()
    fds = {g._wake_fd for g in gs}
    assert len(fds) == 4
    for g in gs:
        g.cancel()
        assert g._wake_fd == -1
    idle = fresh_pool.idle()
    assert len(idle) == 2 and idle <= fds  # max_idle=2: the other two were closed
    for fd in fds - idle:
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF


def test_falls_back_to_the_lock_when_no_eventfd_can_be_made(
    fresh_pool: WakeFdPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fds(*_args: object) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(waiter, "_eventfd", no_fds)
    fresh_pool.enabled = True
    g = ThreadG("t")
    g.prepare()
    assert g._wake_fd == -1
    _assert_parks_until_ready(g)


def test_real_reads_park_and_wake_through_the_pool(backend: str) -> None:
    """Many threads parked at once each get their own fd; all are returned."""
    pairs = [socket.socketpair() for _ in range(8)]
    fds = []
    try:
        for a, _b in pairs:
            a.setblocking(False)
            fds.append(FD(a))
        got: list[bytes] = []

        def reader(fd: FD) -> None:
            got.append(fd.read(16))

        threads = [threading.Thread(target=reader, args=(fd,)) for fd in fds]
        for t in threads:
            t.start()
        time.sleep(0.1)
        for _a, b in pairs:
            b.send(b"ping")
        for t in threads:
            t.join(10)
        assert got == [b"ping"] * 8
        assert len(wake_fds.idle()) <= wake_fds.max_idle
    finally:
        for fd in fds:
            fd.close()
        for _a, b in pairs:
            b.close()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer (POSIX)")
def test_interrupted_park_leaves_the_pollDesc_usable(backend: str) -> None:
    """A signal handler that raises while the main thread is parked.

    The pollDesc must drop the G it no longer waits for, so the next read
    parks normally instead of failing with "double wait".
    """

    class Interrupted(Exception):
        pass

    def handler(_signum: int, _frame: object) -> None:
        raise Interrupted

    a, b = socket.socketpair()
    a.setblocking(False)
    fd = FD(a)
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):
            fd.read(16)
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert fd.pd is not None and fd.pd.rg is None
        threading.Timer(0.05, b.send, args=(b"after",)).start()
        assert fd.read(16) == b"after"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        fd.close()
        b.close()


@pytest.mark.skipif(not HAVE_EVENTFD, reason=NO_EVENTFD)
def test_eventfds_are_capped_below_the_fd_limit(
    fresh_pool: WakeFdPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap a park uses the lock, so accept never runs out of fds because of us."""
    monkeypatch.setattr(waiter, "_fd_cap", lambda: 2)
    gs = [ThreadG(str(i)) for i in range(3)]
    for g in gs:
        g.prepare()
    assert [g._wake_fd >= 0 for g in gs] == [True, True, False]
    assert fresh_pool.open_count == 2
    # The capped G still parks and wakes, on its lock.
    _assert_parks_until_ready(gs[2])
    # A returned fd is reused without raising the count.
    gs[0].cancel()
    gs[2].prepare()
    assert gs[2]._wake_fd >= 0 and fresh_pool.open_count == 2
    gs[1].cancel()
    gs[2].cancel()


def test_fd_cap_is_a_quarter_of_the_soft_limit() -> None:
    resource = pytest.importorskip("resource")
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        assert waiter._fd_cap() == 1 << 16
    else:
        assert waiter._fd_cap() == max(16, soft // 4)
