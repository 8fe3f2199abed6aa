"""Private helpers shared by the built-in backends (not a backend, not public).

* :class:`Wakeup` - the channel that makes a blocked wait return (Go's
  ``netpollBreak``): an ``eventfd`` where :func:`os.eventfd` exists, else a
  non-blocking pipe.  Notifications coalesce through :attr:`Wakeup.pending`,
  which only :meth:`Wakeup.drain` clears, after reading (Go's
  ``netpollWakeSig`` order): a notify that finds the flag still set is
  answered by the wait that is about to drain.
* :class:`PollerBase` - the lock, token table, closed flag and fork-safe
  :meth:`PollerBase.shutdown` every built-in poller has.

Like the backends, this imports nothing from netpoll but
:mod:`netpoll.core.hookspecs` (here: nothing at all).
"""

from __future__ import annotations

import os
import threading

_ONE = (1).to_bytes(8, "little")


class Wakeup:
    """An eventfd (or a non-blocking pipe) that interrupts a wait.

    ``rfd`` is what the poller watches for reading (level-triggered, so a
    missed drain makes the next wait return at once rather than sleep).  Not
    thread-safe by itself: callers hold their poller's lock.
    """

    def __init__(self, *, use_eventfd: bool = True) -> None:
        eventfd = getattr(os, "eventfd", None) if use_eventfd else None
        if eventfd is not None:
            fd: int = eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self.rfd = self.wfd = fd
        else:
            self.rfd, self.wfd = os.pipe()  # non-inheritable by default
            os.set_blocking(self.rfd, False)
            os.set_blocking(self.wfd, False)
        #: True from a notify until the poller has drained it.
        self.pending = False

    def notify(self) -> None:
        """Make the read side readable, unless a wakeup is pending already."""
        if self.pending:
            return
        self.pending = True
        try:
            os.write(self.wfd, _ONE)
        except BlockingIOError:
            pass  # counter/pipe full: a wakeup is pending anyway

    def drain(self) -> None:
        """Consume every pending notification, then clear :attr:`pending`."""
        try:
            while os.read(self.rfd, 512):
                if self.rfd == self.wfd:
                    break  # one read resets an eventfd counter
        except BlockingIOError:
            pass
        self.pending = False

    def close(self) -> None:
        """Close the descriptors."""
        os.close(self.rfd)
        if self.wfd != self.rfd:
            os.close(self.wfd)


class PollerBase:
    """What every built-in poller shares: lock, tokens, closed flag, shutdown.

    ``_lock`` guards the Python-side state and is never held across the
    blocking wait.  Subclasses release their OS objects in
    :meth:`_release_locked`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[int, object] = {}
        self._closed = False
        # See shutdown(): a forked child must not wait for the parent's threads.
        self._pid = os.getpid()

    def _release_locked(self) -> None:
        """Close the OS poller and wakeup objects (called once, lock held)."""

    def shutdown(self) -> None:
        """Close the poller and its wakeup channel; safe to call twice.

        Also safe in a forked child (the core calls it there to drop the
        parent's poller), even if a parent thread held the lock at fork time.
        """
        if os.getpid() != self._pid:
            # After fork the lock may be held by a thread that does not exist
            # in this process (the parent's poller thread): take a fresh one.
            self._lock = threading.Lock()
            self._pid = os.getpid()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._tokens.clear()
            self._release_locked()
