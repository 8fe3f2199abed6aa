"""What a forked child does with the scheduler state it inherited.

Go never forks a running runtime (``syscall.ForkExec`` execs at once), so
this has no Go counterpart; it follows CPython's rules for
:func:`os.register_at_fork` handlers and gevent's ``hub`` reinit after fork:
only the forking thread exists in the child, and every kernel object the
child inherited (an epoll instance, an eventfd, a pipe, a socket) is an
open file description it *shares* with the parent.

The invariant: **a fork never changes the parent.**  So the child never
asks the kernel to change shared state.  In particular it never
``EPOLL_CTL_DEL``\\s a descriptor from an inherited epoll instance (that
removes the parent's registration: the parent's pending accept would never
wake again), never writes to an inherited wake descriptor (that would wake
the parent's poller), and only *closes its own copies* of the pollers and
wake descriptors.  A kqueue is not inherited at all on BSD and macOS; closing
its number then fails harmlessly, and all old pollers are closed before any
new one is made, so the number cannot belong to a new poller yet.

What the child keeps and what it gets:

* The M of the forking thread survives (if that thread was an M: fork from
  a goroutine, in ``netpoll.run`` or on a background M): its hub, run queue,
  timers and goroutines are all in this thread.  It gets a fresh poller at
  once, so the forking goroutine can do I/O right after ``fork()`` returns.
* Every other M is gone with its thread (and its goroutines); it is marked
  exited, which makes a later park register the fd with a live M.
* Every pollDesc in use forgets its poller registration (the poller is
  gone) and gets a fresh lock (a parent thread may have held it).  A
  goroutine of the surviving M parked on one gets a spurious wakeup: it
  retries its system call and, parking again, registers the fd with the
  new poller.  Parkers of threads that do not exist here are dropped.

Not handled (as with any fork of a threaded Python program): an object
another parent thread was in the middle of using, for example a conn whose
read another thread had in progress, stays as that thread left it.
"""

from __future__ import annotations

import threading
from _thread import allocate_lock
from typing import TYPE_CHECKING, Any

from netpoll.core import deadlock, interrupt
from netpoll.core.hookspecs import MODE_R, MODE_W
from netpoll.core.runtime import runtime

if TYPE_CHECKING:
    from netpoll.core.m import M


def _reset_polldescs(survivor: M | None) -> list[Any]:
    """Forget every registration; return the survivor's Gs to wake (spuriously)."""
    with runtime.cache._lock:
        pds = list(runtime.cache.live_set)
    wake: list[Any] = []
    for pd in pds:
        pd.lock = allocate_lock()  # a parent thread may have held it at fork time
        pd.m = None  # registered with a poller that is gone: register again on park
        for mode in (MODE_R, MODE_W):
            g = pd.rg if mode == MODE_R else pd.wg
            if g is None or not hasattr(g, "ready"):
                continue  # nobody parked, or the ready latch (kept: it is still true)
            if survivor is not None and getattr(g, "m", None) is survivor:
                # Taken out with ioready: the G retries its syscall and parks again.
                wake.append(pd._unblock(mode, True))
            elif mode == MODE_R:
                pd.rg = None  # a parker of a thread that does not exist here
            else:
                pd.wg = None
    return [g for g in wake if g is not None]


def after_fork_in_child(ms: list[M]) -> M | None:
    """Rebuild the scheduler's Ms in a forked child; return the surviving M, if any.

    Called by :mod:`netpoll.core.procs`'s after-fork handler with every M the
    parent had.  See the module docstring for what is kept and why.
    """
    ident = threading.get_ident()
    survivor: M | None = None
    for m in ms:
        if m.ident == ident and not m.exited:
            survivor = m
        # All old pollers go first: on BSD a kqueue's number is free in the
        # child, and a new poller made earlier could have taken it.  The
        # M's one teardown, in its fork form: nothing shared is touched.
        m.release(forked=True)
    for m in ms:
        if m is not survivor:
            m.exited = True
            m.stopping = True
            m.gs.clear()
            m.runq.clear()
            m.inject.clear()
            m.timers.clear()
    runtime.cache._lock = threading.RLock()
    deadlock.pool_calls.clear()  # ran in the parent's pool threads, which are not here
    wake = _reset_polldescs(survivor)
    if survivor is not None:
        survivor._backend_generation = -1
        survivor._ensure_poller()  # the forking goroutine may do I/O at once
    interrupt.after_fork_in_child(survivor)  # a Ctrl-C pipe of the child's own
    if survivor is not None:
        for g in wake:
            g.ready()
    return survivor


__all__ = ["after_fork_in_child"]
