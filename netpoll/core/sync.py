"""WaitGroup, Mutex and Cond for any G kind (Go's ``sync`` package).

:class:`WaitGroup`, :class:`Mutex` and :class:`Cond` mirror Go's
``sync.WaitGroup``, ``sync.Mutex`` and ``sync.Cond``.  All three park through
:mod:`netpoll.core.park`, so a goroutine waiting on them lets its M run other
goroutines, and goroutines and plain threads can share them.  (A
``threading.Lock`` held across a park would block the whole M.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from types import TracebackType

from netpoll.core.g import current_g
from netpoll.core.park import Waiter, park, park_waiter


class WaitGroup:
    """Wait for a collection of goroutines (or threads) to finish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._waiters: list[Waiter] = []

    def add(self, delta: int = 1) -> None:
        """Add ``delta`` (may be negative) to the counter; at zero, waiters wake.

        Raises :class:`ValueError` if the counter would go below zero.
        """
        with self._lock:
            count = self._count + delta
            if count < 0:
                raise ValueError("netpoll.WaitGroup: negative counter")
            self._count = count
            if count or not self._waiters:
                return
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.done = True
        for w in waiters:
            w.g.ready()

    def done(self) -> None:
        """Decrement the counter by one."""
        self.add(-1)

    def wait(self, timeout: float | None = None) -> bool:
        """Park until the counter is zero; False if ``timeout`` seconds passed first."""
        if timeout is not None and (timeout != timeout or timeout < 0):
            raise ValueError(f"netpoll.WaitGroup.wait: negative or NaN timeout {timeout}")
        with self._lock:
            if self._count == 0:
                return True
            w = Waiter(current_g())
            self._waiters.append(w)
        deadline = None if timeout is None else time.monotonic() + timeout
        return park_waiter(w, deadline, self._lock, self._waiters, "sync.WaitGroup.Wait")


class Mutex:
    """A mutual exclusion lock whose waiters park (FIFO hand-off on unlock).

    Not reentrant, and like Go's, not tied to the G that locked it: any G may
    unlock it.  Usable as a context manager.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locked = False
        self._waiters: deque[Waiter] = deque()

    def locked(self) -> bool:
        """True while held."""
        return self._locked

    def try_lock(self) -> bool:
        """Take the mutex if it is free; never parks."""
        with self._lock:
            if self._locked:
                return False
            self._locked = True
            return True

    def lock(self, timeout: float | None = None) -> bool:
        """Take the mutex, parking while it is held; False if ``timeout`` passed."""
        if timeout is not None and (timeout != timeout or timeout < 0):
            raise ValueError(f"netpoll.Mutex.lock: negative or NaN timeout {timeout}")
        with self._lock:
            if not self._locked:
                self._locked = True
                return True
            w = Waiter(current_g())
            self._waiters.append(w)
        deadline = None if timeout is None else time.monotonic() + timeout
        # unlock() hands the mutex straight to the first waiter (it stays
        # locked), so a woken waiter owns it without looking again.
        return park_waiter(w, deadline, self._lock, self._waiters, "sync.Mutex.Lock")

    def unlock(self) -> None:
        """Release the mutex, handing it to the longest waiter if any.

        Raises :class:`RuntimeError` if it is not locked.
        """
        with self._lock:
            if not self._locked:
                raise RuntimeError("netpoll.Mutex: unlock of unlocked mutex")
            if not self._waiters:
                self._locked = False
                return
            w = self._waiters.popleft()
            w.done = True
        w.g.ready()

    def __enter__(self) -> Mutex:
        self.lock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unlock()


class Cond:
    """Go's ``sync.Cond`` for any G kind, over a lock that is only held briefly.

    ``with cond:`` takes the lock (a plain :class:`threading.Lock`: nobody
    parks while holding it, since :meth:`wait` releases it first);
    :meth:`wait` parks the calling G until :meth:`notify`/:meth:`notify_all`
    or the timeout, then takes the lock back.  The API follows
    :class:`threading.Condition` so it can replace one.
    """

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self._lock = lock if lock is not None else threading.Lock()
        self._waiters: deque[Waiter] = deque()

    def __enter__(self) -> Cond:
        self._lock.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, park until notified, take the lock back.

        Must be called with the lock held.  Returns False if ``timeout``
        seconds passed without a notify.
        """
        w = Waiter(current_g())
        self._waiters.append(w)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        lock = self._lock
        retaken = False

        def give_up() -> bool:
            # Takes the lock back for good (wait returns holding it); notify
            # pops a waiter and sets done under that lock.
            nonlocal retaken
            lock.acquire()
            retaken = True
            if w.done:
                return False
            self._waiters.remove(w)
            return True

        lock.release()
        try:
            return park(w, deadline, give_up, "sync.Cond.Wait")
        finally:
            if not retaken:
                lock.acquire()

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters (the lock must be held)."""
        for _ in range(min(n, len(self._waiters))):
            w = self._waiters.popleft()
            w.done = True
            w.g.ready()

    def notify_all(self) -> None:
        """Wake every waiter (the lock must be held)."""
        self.notify(len(self._waiters))
