"""fdMutex: serialised reads, serialised writes, a reference count and close.

Go's ``internal/poll/fd_mutex.go`` packs all of this into one atomic word.
Python has no atomics we can rely on, so the state is split the way the
hot path needs it:

* the read lock and the write lock are each a ``_thread`` lock taken with a
  non-blocking ``acquire`` (:attr:`FDMutex.rl`, :attr:`FDMutex.wl`).  That
  one C call is atomic in every CPython build, so an uncontended read or
  write pays one call to lock and one to unlock, and ``FD`` inlines both;
* everything else (the count of non-I/O references, ``closed``, the queues
  of readers and writers waiting for a lock, the destroy decision) sits
  behind a state lock, shared by every fdMutex, that only the slow paths
  take, briefly and never nested.

A second reader (or writer) queues as a :class:`~netpoll.core.park.Waiter`
and parks like any G (Go's ``runtime_Semacquire`` on ``rsema``/``wsema``): a
goroutine waiting here lets its M run others.  The queues are created only
when someone queues, which keeps an idle descriptor cheap.

Invariants, as Go states them:

* at most one reader and at most one writer hold the mutex at a time;
* every holder, and every ``incref`` user, keeps the descriptor alive;
* once closed, no new reference is handed out (``ErrNetClosing``), and queued
  readers/writers are woken to fail the same way;
* the descriptor may be destroyed only when closed, with no holder and no
  reference left; exactly one caller sees that moment (its ``decref`` /
  ``rwunlock`` returns True) and destroys it.

Why the destroy decision cannot be missed: a holder releases its lock and
*then* looks at ``closed``; ``close`` sets ``closed`` and *then* looks at the
locks.  Whichever runs second sees the other, and the ``_destroyed`` flag
(under the state lock) makes the decision once.
"""

from __future__ import annotations

from _thread import allocate_lock

from netpoll.core.g import current_g
from netpoll.core.park import Waiter, park_waiter

_STATE_LOCK = allocate_lock()


class FDMutex:
    """The reference count and the read/write locks of one descriptor."""

    __slots__ = ("_destroyed", "closed", "refs", "rl", "rwait", "state_lock", "wl", "wwait")

    def __init__(self) -> None:
        #: One lock for every fdMutex's state: only the slow paths take it,
        #: briefly and never nested, and an idle conn saves a lock.
        self.state_lock = _STATE_LOCK
        #: Held by the one reader / the one writer (non-blocking acquire).
        self.rl = allocate_lock()
        self.wl = allocate_lock()
        #: Queued readers and writers (None until someone queues).
        self.rwait: list[Waiter] | None = None
        self.wwait: list[Waiter] | None = None
        self.closed = False
        #: References of non-I/O operations (incref); holders are the locks.
        self.refs = 0
        self._destroyed = False

    def destroy_due_locked(self) -> bool:
        """Closed and nobody left: True once, for the caller that must destroy.

        The caller holds :attr:`state_lock`.
        """
        if (
            self.closed
            and not self._destroyed
            and self.refs == 0
            and not self.rl.locked()
            and not self.wl.locked()
        ):
            self._destroyed = True
            return True
        return False

    def incref(self) -> bool:
        """Take a reference for a non-I/O operation; False if closed."""
        with self.state_lock:
            if self.closed:
                return False
            self.refs += 1
            return True

    def decref(self) -> bool:
        """Drop a reference; True if the caller must now destroy the fd."""
        with self.state_lock:
            if self.refs <= 0:
                raise RuntimeError("netpoll: inconsistent fdMutex (decref below zero)")
            self.refs -= 1
            return self.destroy_due_locked()

    def incref_and_close(self) -> bool:
        """Mark closed and take a reference; False if it was already closed.

        Wakes queued readers and writers: they re-check and fail with the
        closing error instead of waiting for a lock nobody will release
        usefully.
        """
        with self.state_lock:
            if self.closed:
                return False
            self.closed = True
            self.refs += 1
            if not (self.rwait or self.wwait):
                return True
            woken = self._take_all(self.rwait) + self._take_all(self.wwait)
        for w in woken:
            w.g.ready()
        return True

    def rwlock(self, read: bool) -> bool:
        """Acquire the read (or write) lock; False if closed.

        ``FD``'s hot paths inline this: a non-blocking acquire, then the
        ``closed`` check, and :meth:`rwlock_slow` when either fails.  After
        False the caller asks :meth:`release_closed` whether it must destroy.
        """
        lk = self.rl if read else self.wl
        if lk.acquire(False):
            if not self.closed:
                return True
            lk.release()
            return False
        return self.rwlock_slow(read)

    def rwlock_slow(self, read: bool) -> bool:
        """The contended case of :meth:`rwlock`: queue and park for the turn.

        Returns True with the lock held, or False once closed.
        """
        lk = self.rl if read else self.wl
        while True:
            with self.state_lock:
                if self.closed:
                    return False
                w = Waiter(current_g())
                if read:
                    if self.rwait is None:
                        self.rwait = []
                    queue = self.rwait
                else:
                    if self.wwait is None:
                        self.wwait = []
                    queue = self.wwait
                # Queue first, then try: an unlock releases without the state
                # lock and only then looks at the queue, so either it sees
                # this Waiter or this acquire sees the lock free.
                queue.append(w)
                if lk.acquire(False):
                    queue.remove(w)
                    return True
            # Woken by an unlock (the lock may be taken again by a newcomer
            # first: then queue again) or by close.
            park_waiter(w, None, self.state_lock, queue, "fd lock")

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
        """Release the lock; True if the caller must destroy.

        ``FD``'s hot paths inline this: the release, then
        :meth:`unlocked_slow` only when someone queues or the mutex closed.
        """
        if read:
            self.rl.release()
            if self.rwait or self.closed:
                return self.unlocked_slow(True)
        else:
            self.wl.release()
            if self.wwait or self.closed:
                return self.unlocked_slow(False)
        return False

    def unlocked_slow(self, read: bool) -> bool:
        """After a release: hand the turn to one queued G; the destroy decision."""
        with self.state_lock:
            queue = self.rwait if read else self.wwait
            w = None
            if queue:
                w = queue.pop(0)
                w.done = True
            destroy = self.destroy_due_locked()
        if w is not None:
            w.g.ready()
        return destroy

    def release_closed(self) -> bool:
        """After a failed :meth:`rwlock`: True if this caller must destroy.

        A caller that found the mutex closed may have been the last to let
        go of a lock it briefly held.
        """
        with self.state_lock:
            return self.destroy_due_locked()
