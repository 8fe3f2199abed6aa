"""fdMutex: serialised reads, serialised writes, a reference count and close.

Go's ``internal/poll/fd_mutex.go`` packs all of this into one atomic word.
Python has no atomics we can rely on (free-threaded builds included), so the
state sits behind one small lock.  A second reader (or writer) queues as a
:class:`~netpoll.core.sched.Waiter` and parks like any G (Go's
``runtime_Semacquire`` on ``rsema``/``wsema``): a goroutine waiting here
lets its M run others.  The queues are created only when someone queues,
which keeps an idle descriptor cheap.

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

from _thread import allocate_lock

from netpoll.core.sched import Waiter, current_g, park_waiter


class FDMutex:
    """The reference count and the read/write locks of one descriptor."""

    __slots__ = ("_lock", "_rlocked", "_rwait", "_wlocked", "_wwait", "closed", "refs")

    def __init__(self) -> None:
        self._lock = allocate_lock()
        #: Queued readers and writers (None until someone queues).
        self._rwait: list[Waiter] | None = None
        self._wwait: list[Waiter] | None = None
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
            woken = self._take_all(self._rwait) + self._take_all(self._wwait)
        for w in woken:
            w.g.ready()
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
        while True:
            with self._lock:
                if self.closed:
                    return False
                if not (self._rlocked if read else self._wlocked):
                    if read:
                        self._rlocked = True
                    else:
                        self._wlocked = True
                    self.refs += 1
                    return True
                w = Waiter(current_g())
                if read:
                    if self._rwait is None:
                        self._rwait = []
                    queue = self._rwait
                else:
                    if self._wwait is None:
                        self._wwait = []
                    queue = self._wwait
                queue.append(w)
            # Woken by rwunlock (the lock may be taken again by a newcomer
            # first: then queue again) or by close.
            park_waiter(w, None, self._lock, queue)

    @staticmethod
    def _take_all(queue: list[Waiter] | None) -> list[Waiter]:
        if not queue:
            return []
        taken = list(queue)
        queue.clear()
        for w in taken:
            w.done = True
        return taken

    def rwunlock(self, read: bool) -> bool:
        """Release the lock and the reference; True if the caller must destroy."""
        lock = self._lock
        lock.acquire()
        if read:
            self._rlocked = False
        else:
            self._wlocked = False
        self.refs -= 1
        queue = self._rwait if read else self._wwait
        w = None
        if queue:
            # One queued holder of this kind may proceed.
            w = queue.pop(0)
            w.done = True
        destroy = self.closed and self.refs == 0
        lock.release()
        if w is not None:
            w.g.ready()
        return destroy
