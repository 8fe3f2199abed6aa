"""The Ms of the process: which exist, how they start, fork and exit (Go's ``proc.go`` allm, newm).

A :func:`netpoll.run` thread is an M for the length of the call; goroutines
started from plain threads run on background Ms (:func:`background_m`,
``NETPOLL_PROCS`` of them, round robin), daemon threads started on first
use; threads without a wake descriptor have their fds polled by one more,
the thread-poll M (:func:`thread_poll_m`).  Every M is registered here
(:func:`register_m`) until :func:`retire_m`, and the first one starts sysmon
(:mod:`netpoll.core.sysmon`).

A fork keeps only the forking thread's M (:mod:`netpoll.core.forking` says
how); at interpreter exit the background Ms are stopped while every thread
still runs (:func:`_stop_background_ms`).
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
from typing import TYPE_CHECKING

from netpoll.core import forking, sysmon
from netpoll.core.m import M
from netpoll.core.wakefd import wake_fds

if TYPE_CHECKING:
    from netpoll.core.g import GreenletG

#: Environment variable: how many scheduler Ms :func:`netpoll.go` spreads Gs over.
ENV_PROCS = "NETPOLL_PROCS"
#: How long interpreter exit waits for the background Ms to end their Gs.
EXIT_STOP_TIMEOUT = 2.0

_monotonic = time.monotonic

_ms_lock = threading.Lock()
_ms: list[M] = []
_background: list[M] = []
_next_background = itertools.count()
_thread_poll_m: M | None = None
# Serialises starting background Ms (not _ms_lock: a starting M takes that).
_start_lock = threading.Lock()


def register_m(m: M) -> None:
    """Make ``m`` (bound to its thread) one of the process's Ms; the first starts sysmon."""
    with _ms_lock:
        _ms.append(m)
        sysmon.ensure_running(all_ms)


def retire_m(m: M) -> None:
    """The end of ``m``: no longer one of the process's Ms, its poller side released."""
    m.exited = True
    with _ms_lock:
        if m in _ms:
            _ms.remove(m)
    m.release()


def all_ms() -> list[M]:
    """The Ms alive now (run() Ms and background Ms)."""
    with _ms_lock:
        return list(_ms)


def runtime_fds() -> frozenset[int]:
    """The descriptors the runtime itself holds: threads' wake fds, the Ms' pollers.

    A leak check subtracts them.  A poller that cannot say (a third-party
    backend without ``fds()``) contributes nothing.
    """
    own = set(wake_fds.fds())
    for m in all_ms():
        fds = getattr(m.poller, "fds", None)
        if fds is not None:
            own.update(fds())
    return frozenset(own)


def live_goroutines() -> list[GreenletG]:
    """Every goroutine not finished yet, on every M (a leak check reads it)."""
    return [g for m in all_ms() for g in list(m.gs) if not g.dead]


def break_all_pollers() -> None:
    """``netpollbreak`` every M's poller (fault injection delivers fake events so)."""
    for m in all_ms():
        m.wake()


def procs() -> int:
    """How many background Ms :func:`go` spreads Gs over (``NETPOLL_PROCS``, default 1)."""
    raw = os.environ.get(ENV_PROCS, "").strip()
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"netpoll: {ENV_PROCS} must be a positive integer, not {raw!r}") from None
    if n < 1:
        raise ValueError(f"netpoll: {ENV_PROCS} must be a positive integer, not {raw!r}")
    return n


def _start_background_m(name: str) -> M:
    m = M(name)
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            m.bind()
            register_m(m)
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        try:
            m.schedule()
        finally:
            # Stopped (at exit): end the Gs here, in their own thread, so no
            # live greenlet is left to a thread frozen at interpreter shutdown.
            try:
                m.kill_all()
            finally:
                retire_m(m)

    t = threading.Thread(target=main, name=f"netpoll-{name}", daemon=True)
    m.thread = t
    t.start()
    started.wait()
    if failure:
        raise failure[0]
    return m


def background_m() -> M:
    """A background M for a G started from a plain thread (round robin)."""
    with _start_lock:
        with _ms_lock:
            # An M stopped at exit is gone; a later go() (from an atexit
            # handler that runs after ours) gets a fresh one.
            _background[:] = [m for m in _background if not m.stopping]
            if len(_background) >= procs():
                return _background[next(_next_background) % len(_background)]
        m = _start_background_m(f"M{len(_background)}")
        with _ms_lock:
            _background.append(m)
        return m


def thread_poll_m() -> M:
    """The M that polls for threads parked on a lock (no wake descriptor)."""
    global _thread_poll_m
    m = _thread_poll_m
    if m is not None and not m.stopping:
        return m
    with _start_lock:  # one creator: a second caller waits and takes the same M
        if _thread_poll_m is None or _thread_poll_m.stopping:
            _thread_poll_m = _start_background_m("threadpoll")
        return _thread_poll_m


def _after_fork_in_child() -> None:
    global _ms_lock, _start_lock, _thread_poll_m
    _ms_lock = threading.Lock()
    _start_lock = threading.Lock()
    # Only the forking thread's M (if it was one) survives; the child leaves
    # every kernel object it shares with the parent alone (netpoll.core.forking).
    survivor = forking.after_fork_in_child(_ms)
    _ms.clear()
    _background[:] = [m for m in _background if m is survivor]
    _thread_poll_m = None
    if survivor is not None:
        register_m(survivor)  # and a sysmon of the child's own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _stop_background_ms() -> None:
    """At interpreter exit: stop the background Ms and wait (bounded) for their threads.

    They are daemon threads, which Python freezes where they stand once it
    finalizes; a greenlet still alive in a frozen thread can crash the
    interpreter as it is torn down (seen as a segfault at exit of
    ``netpoll echo --goroutines``, a few exits in a hundred).  Stopped here,
    while every thread still runs, each M kills its Gs (their ``finally``
    blocks run) and its thread ends normally.
    """
    with _ms_lock:
        ms = [m for m in _ms if m.thread is not None and m.thread.is_alive()]
    for m in ms:
        m.stop()
    deadline = _monotonic() + EXIT_STOP_TIMEOUT
    for m in ms:
        assert m.thread is not None
        m.thread.join(max(0.0, deadline - _monotonic()))


atexit.register(_stop_background_ms)


__all__ = [
    "ENV_PROCS",
    "all_ms",
    "background_m",
    "break_all_pollers",
    "live_goroutines",
    "procs",
    "register_m",
    "retire_m",
    "runtime_fds",
    "thread_poll_m",
]
