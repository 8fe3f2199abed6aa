"""fdMutex: serialised reads, serialised writes, a reference count and close.

Go's ``internal/poll/fd_mutex.go`` packs all of this into one atomic word.
Python has no atomics we can rely on (free-threaded builds included), so the
state sits behind one small lock; the waiting side uses a condition created
only when a second reader or writer actually queues, which keeps an idle
descriptor cheap.

Invariants, as Go states them:

* at most one reader and at most one writer hold the mutex at a time;
* every holder, and every ``incref`` user, counts as one reference;
* once closed, no new reference is handed out (``ErrNetClosing``), and queued
  readers/writers are woken to fail the same way;
* the descriptor may be destroyed only when closed *and* the count is zero;
  exactly one caller sees that moment (its ``decref``/``rwunlock`` returns
  True) and destroys it.
"""

from __future__ import annotations

import threading
from _thread import allocate_lock


class FDMutex:
    """The reference count and the read/write locks of one descriptor."""

    __slots__ = ("_cond", "_lock", "_rlocked", "_wlocked", "closed", "refs")

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._cond: threading.Condition | None = None
        self.closed = False
        self.refs = 0
        self._rlocked = False
        self._wlocked = False

    def incref(self) -> bool:
        """Take a reference for a non-I/O operation; False if closed."""
        with self._lock:
            if self.closed:
                return False
            self.refs += 1
            return True

    def decref(self) -> bool:
        """Drop a reference; True if the caller must now destroy the fd."""
        with self._lock:
            if self.refs <= 0:
                raise RuntimeError("netpoll: inconsistent fdMutex (decref below zero)")
            self.refs -= 1
            return self.closed and self.refs == 0

    def incref_and_close(self) -> bool:
        """Mark closed and take a reference; False if it was already closed.

        Wakes queued readers and writers: they re-check and fail with the
        closing error instead of waiting for a lock nobody will release
        usefully.
        """
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            self.refs += 1
            if self._cond is not None:
                self._cond.notify_all()
            return True

    def rwlock(self, read: bool) -> bool:
        """Acquire the read (or write) lock plus a reference; False if closed."""
        lock = self._lock
        lock.acquire()
        # Fast path, uncontended: one lock round-trip and three stores.
        if not self.closed and not (self._rlocked if read else self._wlocked):
            if read:
                self._rlocked = True
            else:
                self._wlocked = True
            self.refs += 1
            lock.release()
            return True
        lock.release()
        return self._rwlock_slow(read)

    def _rwlock_slow(self, read: bool) -> bool:
        with self._lock:
            if self.closed:
                return False
            if self._rlocked if read else self._wlocked:
                if self._cond is None:
                    self._cond = threading.Condition(self._lock)
                while (self._rlocked if read else self._wlocked) and not self.closed:
                    self._cond.wait()
                if self.closed:
                    return False
            if read:
                self._rlocked = True
            else:
                self._wlocked = True
            self.refs += 1
            return True

    def rwunlock(self, read: bool) -> bool:
        """Release the lock and the reference; True if the caller must destroy."""
        lock = self._lock
        lock.acquire()
        if read:
            self._rlocked = False
        else:
            self._wlocked = False
        self.refs -= 1
        if self._cond is not None:
            # One queued holder of this kind may proceed (notify_all: the
            # condition is shared by readers and writers).
            self._cond.notify_all()
        destroy = self.closed and self.refs == 0
        lock.release()
        return destroy
