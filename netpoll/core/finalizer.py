"""Closing what the garbage collector finds open (Go's ``runtime/mfinal.go``).

Go sets a finalizer on every netFD and runs finalizers on one goroutine of
their own, never inside the code that happened to trigger a collection.
Python runs ``__del__`` wherever the collector runs: at any allocation, in
any thread, possibly one that holds a lock the close path needs (a poller's,
a pollDesc's, a fault-injection switch's).  Closing right there can
deadlock, so a finalizer here only *queues* the close, and one daemon
thread, ``netpoll-finalizer``, runs the queue.

Invariant: :func:`queue_close` never takes a lock and never starts a
thread; ``queue.SimpleQueue.put`` is documented as reentrant, safe to call
from ``__del__`` and weakref callbacks.  The thread is started by
:func:`ensure_started`, which the objects that have finalizers call when
they are made (and again after a fork, which keeps no thread).

Other libraries' finalizers close our sockets too (urllib3 closes a pooled
connection's socket from a ``weakref.finalize``), and those call an
ordinary ``close``.  So the collector's own phases are watched
(``gc.callbacks``): :data:`collecting` is the ident of the thread running a
collection, and ``FD.close`` called there queues itself here instead of
taking the locks its thread may already hold.
"""

from __future__ import annotations

import gc
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

#: Closes waiting to run; an Event is a drain marker (see :func:`drain`).
_pending: queue.SimpleQueue[Callable[[], object] | threading.Event] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


#: The ident of the thread running a garbage collection, else 0.  CPython
#: runs one collection at a time, so one value is enough.
collecting = 0


def _gc_phase(phase: str, info: dict[str, Any]) -> None:
    """``gc.callbacks`` entry: note which thread collects, from start to stop."""
    global collecting
    collecting = threading.get_ident() if phase == "start" else 0


gc.callbacks.append(_gc_phase)


def _run() -> None:
    while True:
        item = _pending.get()
        if isinstance(item, threading.Event):
            item.set()
            continue
        try:
            item()
        except Exception:
            pass
        del item  # drop the object before blocking on the next get


def ensure_started() -> None:
    """Start the finalizer thread if this process has none yet (cheap when it has)."""
    global _thread
    if _thread is not None:
        return
    # The thread is claimed under the lock but started outside it:
    # ``Thread.start`` waits for the new thread, and with ``threading``
    # patched that wait parks the calling goroutine, whose M may then run
    # another goroutine that comes here; it must find the thread claimed,
    # not block the M on a lock its parked goroutine holds.  Closes queued
    # before the thread runs wait in the queue for it.
    with _start_lock:
        if _thread is not None:
            return
        t = _thread = threading.Thread(target=_run, name="netpoll-finalizer", daemon=True)
    try:
        t.start()
    except BaseException:
        _thread = None
        raise


def queue_close(close: Callable[[], object]) -> None:
    """Have the finalizer thread call ``close()``; safe from ``__del__``."""
    _pending.put(close)


def drain(timeout: float | None = 5.0) -> bool:
    """Wait until every close queued so far has run; False if ``timeout`` passed.

    For tests and leak checks: after ``gc.collect()`` the dropped objects'
    closes are queued, and this waits for them.
    """
    ensure_started()
    done = threading.Event()
    _pending.put(done)
    return done.wait(timeout)


def _after_fork_in_child() -> None:
    # The child has no finalizer thread; closes queued before the fork would
    # be run by the next one started (they belong to the child's copies).
    global _thread, _start_lock
    _thread = None
    _start_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
