"""The park primitive: a Waiter, the one park loop, and Note (Go's sudog, gopark, note).

Every place where a G waits for another G (a Note, a queue of fdMutex
waiters, a sync.Mutex/Cond/WaitGroup, a channel select, a ``blocking`` call)
does the same four things, which Go's ``runtime/proc.go`` (``gopark``),
``runtime/runtime2.go`` (``sudog``) and ``runtime/lock_*.go`` (``note``)
spread over the runtime:

1. **publish**: put a :class:`Waiter` for the calling G where a waker finds
   it (a queue, a channel's wait queue), under the site's lock;
2. **park**: sleep the G (``g.park(deadline)``, which may return early);
3. **check woken**: a waker sets :attr:`Waiter.done` (under the site's lock,
   or after winning a claim) *before* it readies the G, so ``done`` is the
   only truth; a wakeup without it is spurious (a late wakeup of an earlier,
   abandoned park) and the loop parks again;
4. **undo**: at the deadline, or when an exception (GreenletExit,
   KeyboardInterrupt) is thrown into the park, the Waiter is taken back,
   unless a waker already has it.

:func:`park` is that loop, written once; the site supplies step 4 as
``give_up()``, which returns True when it took the Waiter back (no waker
will touch it now) and False when a waker already has it (the wakeup is on
its way: the park then waits for it without a deadline).

pollDesc's I/O park (``GreenletG.park_io``/``ThreadG.park_io`` in
:mod:`netpoll.core.g`) is the same idea on the hot path, tuned by hand and
kept separate.

This module knows no G kind: a G here is anything with ``park(deadline)``
and ``ready()`` (:mod:`netpoll.core.g` has both kinds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

_monotonic = time.monotonic


class Parker(Protocol):
    """What the park loop needs of a G (both G kinds of :mod:`netpoll.core.g` are one)."""

    #: Why it parks (see :func:`park`).
    waitreason: str

    def park(self, deadline: float | None = None) -> None:
        """Sleep until readied or past ``deadline`` (may return early)."""

    def ready(self) -> None:
        """Wake the G (from any thread)."""


class Waiter:
    """One parked G and whether a waker took it (Go's ``sudog``).

    A park site publishes a Waiter, and the waker sets :attr:`done` (under
    the site's lock, or after winning the site's claim) before it readies
    :attr:`g`; a late wakeup of an abandoned park touches only that park's
    Waiter.  Channels subclass it for a select's shared state.
    """

    __slots__ = ("done", "g")

    def __init__(self, g: Any) -> None:
        self.g = g
        self.done = False


def park(w: Waiter, deadline: float | None, give_up: Callable[[], bool], reason: str = "") -> bool:
    """Park ``w.g`` until a waker sets ``w.done``; True if woken, False on ``deadline``.

    ``reason`` says what the G waits for, as Go's ``waitReason`` ("chan
    receive", "sync.Mutex.Lock"); the deadlock report names it, the same in
    both builds (compiled netpoll functions leave no frames to name).

    ``give_up()`` is called at the deadline and when an exception is thrown
    into the park: True means it took ``w`` back (the park times out, or the
    exception propagates); False means a waker has ``w`` already, so the park
    counts as woken (it waits, without a deadline, for the waker to set
    ``done``; on an exception it propagates anyway).
    """
    g = w.g
    g.waitreason = reason
    try:
        while not w.done:
            if deadline is not None and _monotonic() >= deadline:
                if give_up():
                    return False
                deadline = None  # a waker has it: its done flag follows
                continue
            g.park(deadline)
    except BaseException:
        give_up()
        raise
    return True


def park_waiter(w: Waiter, deadline: float | None, lock: Any, queue: Any, reason: str = "") -> bool:
    """:func:`park` for a Waiter published in ``queue`` under ``lock``.

    Giving up takes ``w`` out of ``queue`` under ``lock``, unless a waker
    (which pops it and sets ``done`` under the same lock) got it first.
    """

    def give_up() -> bool:
        with lock:
            if w.done:
                return False
            queue.remove(w)
            return True

    return park(w, deadline, give_up, reason)


class Note:
    """A one-shot event: :meth:`wakeup` once, :meth:`wait` from any G kind (Go's ``note``)."""

    __slots__ = ("_lock", "_set", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._waiters: list[Waiter] = []

    def is_set(self) -> bool:
        """True after :meth:`wakeup`."""
        return self._set

    def wakeup(self) -> None:
        """Set the note and ready every waiter."""
        with self._lock:
            self._set = True
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.done = True
        for w in waiters:
            w.g.ready()

    def wait(self, g: Parker, timeout: float | None = None, reason: str = "") -> bool:
        """Park ``g`` (the caller's G) until set; False if ``timeout`` seconds passed first.

        ``reason``: what the caller waits for (see :func:`park`).
        """
        if self._set:
            return True
        if timeout is not None and timeout < 0:
            raise ValueError(f"netpoll: negative timeout {timeout}")
        deadline = None if timeout is None else _monotonic() + timeout
        w = Waiter(g)
        with self._lock:
            if self._set:
                return True
            self._waiters.append(w)
        return park_waiter(w, deadline, self._lock, self._waiters, reason)


__all__ = ["Note", "Parker", "Waiter", "park", "park_waiter"]
