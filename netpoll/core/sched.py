"""The public scheduler API: go, run, sleep, gosched, blocking, excepthook (Go's ``proc.go``).

The runtime's rooms, one job each (see docs/design.md's core map):

* :mod:`netpoll.core.g`: the two G kinds (a goroutine, a plain thread) and
  which one is calling;
* :mod:`netpoll.core.park`: the park primitive (Waiter, the one park loop,
  Note) every wait but pollDesc's uses;
* :mod:`netpoll.core.m`: an M, a scheduler thread, and its one loop (run
  queue, timers, poll);
* :mod:`netpoll.core.procs`: the Ms of the process, fork and exit;
* :mod:`netpoll.core.sysmon`: the watcher thread (hog, starvation and
  deadlock reports).

This module is what programs call: :func:`go` starts a goroutine, :func:`run`
makes the calling thread an M for the length of a call, :func:`sleep` and
:func:`gosched` park or yield, :func:`blocking` runs a blocking call in a
thread pool while the goroutine parks, and :data:`excepthook` reports what
escapes a goroutine.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import greenlet

from netpoll.core import deadlock, interrupt
from netpoll.core.g import GreenletG, current_g, current_goroutine, set_exception_reporter
from netpoll.core.m import M
from netpoll.core.park import Waiter, park
from netpoll.core.procs import (
    all_ms,
    background_m,
    break_all_pollers,
    procs,
    register_m,
    retire_m,
)

if TYPE_CHECKING:
    from netpoll.core.goroutine import Goroutine

T = TypeVar("T")
P = ParamSpec("P")

#: Environment variable: the size of the :func:`blocking` thread pool.
ENV_BLOCKING_THREADS = "NETPOLL_BLOCKING_THREADS"

_monotonic = time.monotonic
_get_ident = threading.get_ident
_getcurrent = greenlet.getcurrent


# --------------------------------------------------------------------------
# Unhandled exceptions
# --------------------------------------------------------------------------


def _default_excepthook(g: Goroutine[Any], exc: BaseException) -> None:
    print(f"Exception in goroutine {g.name}:", file=sys.stderr)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


#: Called with ``(handle, exc)`` for an exception that escapes a goroutine and
#: that no ``result()``/``exception()`` call was waiting for (like
#: :func:`threading.excepthook`); replace it to log elsewhere.
excepthook: Callable[[Goroutine[Any], BaseException], None] = _default_excepthook


def _no_handle(g: GreenletG) -> Any:
    return g


#: Makes the handle :data:`excepthook` receives from a G.  Installed by
#: :mod:`netpoll.core.goroutine` as it is imported (``netpoll`` imports it),
#: since this module cannot import that one, which imports this one.
make_handle: Callable[[GreenletG], Any] = _no_handle


def report_exception(g: GreenletG, exc: BaseException) -> None:
    """Hand an unhandled goroutine exception to :data:`excepthook` (never raises)."""
    try:
        excepthook(make_handle(g), exc)
    except BaseException:
        pass


set_exception_reporter(report_exception)


# --------------------------------------------------------------------------
# The public API: go, run, sleep, gosched, blocking
# --------------------------------------------------------------------------


def go(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> GreenletG:
    """Start ``fn(*args, **kwargs)`` as a goroutine and return its G.

    The runtime's spawn; :func:`netpoll.go` wraps the G in its public handle.

    Inside a goroutine the new G runs on the same M (a G never changes
    threads) unless ``NETPOLL_PROCS`` asks for more Ms (read from the
    environment at the M's first ``go``, kept in ``M.go_procs``); from a
    plain thread it runs on a background M, started on first use.
    """
    if not callable(fn):
        raise TypeError(f"netpoll.go: {type(fn).__name__!r} object is not callable")
    cur = _getcurrent()  # current_goroutine, inline: once per connection of a server
    if type(cur) is not GreenletG:
        m = background_m()
    else:
        m = cur.m
        # NETPOLL_PROCS as it was at this M's first go: reading the
        # environment costs four Python calls, once per connection of a server.
        n = m.go_procs
        if n is None:
            n = m.go_procs = procs()
        if n != 1:
            m = background_m()
    g = GreenletG(m, fn, args, kwargs)
    # M.spawn and GreenletG.ready, inline: once per connection of a server.
    m.gs.add(g)
    if m.ident == _get_ident():
        m.runq.append(g)
    else:
        m.inject_g(g)
    return g


def run(main: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Make the calling thread an M, run ``main`` as a goroutine, return its value.

    When ``main`` returns (or raises, which ``run`` re-raises), goroutines
    still running on this M get :class:`greenlet.GreenletExit` so their
    ``with``/``finally`` blocks close what they hold; the M's poller is then
    closed.
    """
    if current_goroutine() is not None or any(m.ident == _get_ident() for m in all_ms()):
        raise RuntimeError("netpoll.run: this thread is already running the scheduler")
    m = M(f"run-{threading.current_thread().name}")
    m.bind()
    register_m(m)
    g = GreenletG(m, main, args, kwargs)
    m.main_g = g
    try:
        m.spawn(g)
        interrupt.run_main(m, g)  # m.schedule(until=g), Ctrl-C delivered to g
    finally:
        try:
            m.kill_all()
        finally:
            retire_m(m)
    if g.exception is not None:
        raise g.exception
    value: T = g.value
    return value


def sleep(seconds: float) -> None:
    """Pause the caller: a goroutine parks (its M runs others), a thread sleeps."""
    if seconds != seconds or seconds < 0:
        raise ValueError(f"netpoll.sleep: negative or NaN duration {seconds}")
    g = current_goroutine()
    if g is None:
        time.sleep(seconds)
        return
    if seconds == 0:
        gosched()
        return
    deadline = _monotonic() + seconds
    g.waitreason = "sleep"
    while True:
        g.park(deadline)
        if _monotonic() >= deadline:
            return


def gosched() -> None:
    """Yield the M to other ready goroutines (a thread just yields the GIL)."""
    g = current_goroutine()
    if g is None:
        time.sleep(0)
        return
    g.m.runq.append(g)
    g.m.hub.switch()


class _BlockingPool:
    """The :func:`blocking` thread pool, made on first use (a fork's child makes its own)."""

    __slots__ = ("_lock", "_pool")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        """The pool (``NETPOLL_BLOCKING_THREADS`` threads at most, default 16)."""
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    raw = os.environ.get(ENV_BLOCKING_THREADS, "").strip()
                    size = int(raw) if raw.isdigit() and int(raw) > 0 else 16
                    pool = self._pool = ThreadPoolExecutor(
                        max_workers=size, thread_name_prefix="netpoll-blocking"
                    )
        return pool

    def after_fork_in_child(self) -> None:
        """Forget the parent's pool: its threads are not in this process."""
        self._lock = threading.Lock()
        self._pool = None


_blocking = _BlockingPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_blocking.after_fork_in_child)


def blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a call that would block the M in a bounded thread pool.

    For DNS lookups, regular-file I/O, C libraries: the goroutine parks while
    a pool thread (at most ``NETPOLL_BLOCKING_THREADS``, default 16) runs
    ``fn(*args, **kwargs)``; its value is returned or its exception raised
    here.  From a plain thread ``fn`` simply runs in the caller.
    """
    g = current_goroutine()
    if g is None:
        return fn(*args, **kwargs)
    w = Waiter(g)

    def finished(_f: Any) -> None:
        deadlock.pool_calls.discard(_f)
        w.done = True  # before the wakeup: park() reads it after every wakeup
        g.ready()

    future = _blocking.get().submit(fn, *args, **kwargs)
    deadlock.pool_calls.add(future)  # in flight: it can still wake g (deadlock check)
    future.add_done_callback(finished)
    # No deadline: give_up runs only when an exception is thrown into the park.
    park(w, None, future.cancel, "netpoll.blocking")
    result: T = future.result()
    return result


#: ``break_all_pollers`` (netpoll.core.procs) and ``current_g``
#: (netpoll.core.g) are named here too: fault injection reaches the runtime
#: through this module.
__all__ = [
    "blocking",
    "break_all_pollers",
    "current_g",
    "excepthook",
    "go",
    "gosched",
    "report_exception",
    "run",
    "sleep",
]
