"""Private helpers shared by the built-in backends (not a backend, not public).

* :class:`Wakeup` - the channel that makes a blocked wait return (Go's
  ``netpollBreak``): an ``eventfd`` where :func:`os.eventfd` exists, else a
  non-blocking pipe.  Notifications coalesce through :attr:`Wakeup.pending`,
  which only :meth:`Wakeup.drain` clears, after reading (Go's
  ``netpollWakeSig`` order): a notify that finds the flag still set is
  answered by the wait that is about to drain.
* :class:`PollerBase` - the lock, token table, closed flag and fork-safe
  :meth:`PollerBase.shutdown` every built-in poller has, the no-op
  ``netpollarm`` of edge-triggered pollers, and the default ``netpollwait``
  (a thread parked on one fd plus its wake fd) on poll(2).

Like the backends, this imports nothing from netpoll but
:mod:`netpoll.core.hookspecs`.
"""

from __future__ import annotations

import math
import os
import select
import threading

from netpoll.core.hookspecs import MODE_R, MODE_W, MODE_WAKE, clamp_timeout

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

    def netpollarm(self, fd: int, mode: int) -> None:
        """Edge-triggered pollers watch every registered fd already: nothing to do."""

    def netpollwait(self, fd: int, mode: int, wake_fd: int, timeout: float | None) -> int:
        """Wait for ``fd`` (and ``wake_fd``) with one poll(2) call.

        For two descriptors and one wait, poll(2) is the cheapest call on
        every system that has it: an epoll or kqueue set would cost extra
        system calls to build and tear down per wait.  Level-triggered, so a
        readiness that came before the call is reported at once.
        """
        return wait_with_poll(fd, mode, wake_fd, timeout)


_POLL_READ = select.POLLIN | getattr(select, "POLLRDHUP", 0)
_POLL_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


def wait_with_poll(fd: int, mode: int, wake_fd: int, timeout: float | None) -> int:
    """:func:`~netpoll.core.hookspecs.netpollwait` on a throwaway ``select.poll``."""
    p = select.poll()
    if fd >= 0:
        mask = 0
        if mode & MODE_R:
            mask |= _POLL_READ
        if mode & MODE_W:
            mask |= select.POLLOUT
        p.register(fd, mask)
    if wake_fd >= 0:
        p.register(wake_fd, select.POLLIN)
    t = clamp_timeout(timeout)
    events = p.poll(None if t is None else math.ceil(t * 1000.0))
    result = 0
    for f, ev in events:
        if f == fd:
            if ev & (_POLL_READ | _POLL_GONE):
                result |= MODE_R
            if ev & (select.POLLOUT | _POLL_GONE):
                result |= MODE_W
        else:
            result |= MODE_WAKE
    return result
