"""Wake descriptors: how a plain thread parked in the kernel is woken.

A thread G (a plain ``threading.Thread`` calling the API) parks by waiting in
the kernel on its own descriptor plus a *wake descriptor* of its own; another
thread that must wake it (a close, a deadline change, a channel send) makes
the wake descriptor readable.  On Linux that is an ``eventfd`` (one fd; the
write is a system call that releases the GIL, so the woken thread does not
have to fight the waker for it), elsewhere a non-blocking pipe.

Every parked thread holds one for as long as it lives, so 10,000 threads
parked on 10,000 connections would need 10,000 more descriptors, and a server
near ``RLIMIT_NOFILE`` would start failing ``accept`` because of us.  So at
most a quarter of the soft limit is used for wake descriptors (re-read when
reached, since servers raise the limit after start-up); a thread that gets
none parks on a lock instead and is woken by a scheduler M's poller
(:mod:`netpoll.core.procs`).

:class:`WakeFd` is the process's only eventfd-or-pipe wake channel: the
pollers' wakeup (Go's ``netpollBreak``) is the same channel with a pending
flag on top (``netpoll.backends.base.Wakeup``).  This module imports nothing
from netpoll, so a backend may import it without reaching into the core (the
layer test checks both).
"""

from __future__ import annotations

import os
from threading import RLock

_eventfd = getattr(os, "eventfd", None)
_ONE = (1).to_bytes(8, "little")


class WakeFd:
    """One wake channel: :attr:`fd` is polled for reading, :meth:`notify` makes it readable.

    An ``eventfd`` (``fd`` and ``wfd`` are the same descriptor) where
    :func:`os.eventfd` exists and ``use_eventfd`` is true, else a
    non-blocking pipe (``fd`` its read end, ``wfd`` its write end).  The
    descriptors are non-inheritable.  :meth:`notify` is safe from any thread
    and never blocks or raises: a full channel is readable anyway, and one
    closed by its owner has nobody left to wake.
    """

    __slots__ = ("fd", "wfd")

    def __init__(self, *, use_eventfd: bool = True) -> None:
        eventfd = _eventfd if use_eventfd else None
        if eventfd is not None:
            fd: int = eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self.fd = self.wfd = fd
        else:
            self.fd, self.wfd = os.pipe()  # non-inheritable by default
            os.set_blocking(self.fd, False)
            os.set_blocking(self.wfd, False)

    def notify(self) -> None:
        """Make :attr:`fd` readable (from any thread)."""
        try:
            os.write(self.wfd, _ONE)
        except BlockingIOError:
            pass  # full: readable anyway
        except OSError:
            pass  # closed by an owner that has gone: nobody to wake

    def drain(self) -> None:
        """Consume every pending notification."""
        try:
            while os.read(self.fd, 512):
                if self.fd == self.wfd:
                    return  # one read resets an eventfd counter
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        """Close the descriptors."""
        os.close(self.fd)
        if self.wfd != self.fd:
            os.close(self.wfd)


class WakeFdBudget:
    """Counts open wake descriptors and caps them below the fd limit."""

    def __init__(self) -> None:
        # Reentrant: release() runs from ThreadG.__del__, which the cyclic GC
        # may call in this very thread while get() holds the lock (a plain
        # lock deadlocked there).
        self._lock = RLock()
        self._open: dict[int, WakeFd] = {}
        self._cap = 0
        #: Bumped in a forked child: wake fds made before it belong to the parent.
        self.generation = 0

    def get(self) -> WakeFd | None:
        """A new wake channel, or None past the cap or out of descriptors."""
        with self._lock:
            if len(self._open) >= self._cap:
                self._cap = _fd_cap()
                if len(self._open) >= self._cap:
                    return None
            try:
                w = WakeFd()
            except OSError:
                return None
            self._open[w.fd] = w
        return w

    def release(self, w: WakeFd) -> None:
        """Close a wake channel made by :meth:`get`."""
        with self._lock:
            if self._open.get(w.fd) is not w:
                return  # made before a fork: the child already forgot it
            del self._open[w.fd]
        w.close()

    def fds(self) -> frozenset[int]:
        """The wake descriptors open now (owned by the runtime, not leaks)."""
        # A snapshot first, in one C call: building the set allocates, and a
        # collection may then run ThreadG.__del__ -> release() in this very
        # thread (the lock is reentrant), changing the dict under a loop.
        with self._lock:
            channels = tuple(self._open.values())
        return frozenset(fd for w in channels for fd in (w.fd, w.wfd))

    def after_fork_in_child(self) -> None:
        """Forget the parent's wake fds (their threads do not exist here)."""
        self._lock = RLock()
        for w in self._open.values():
            try:
                w.close()
            except OSError:
                pass
            # A late notify of a parent thread's G (a channel send in the child)
            # must not write to a number the child has reused meanwhile.
            w.fd = w.wfd = -1
        self._open = {}
        self.generation += 1


def _fd_cap() -> int:
    """A quarter of the soft ``RLIMIT_NOFILE`` (at least 16)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1 << 16
    return max(16, soft // 4)


#: The process's wake descriptors.
wake_fds = WakeFdBudget()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=wake_fds.after_fork_in_child)
