"""The epoll backend (Linux): Go's ``runtime/netpoll_epoll.go``.

How epoll is used here, and why:

* **Edge-triggered, registered once.**  ``netpollopen`` adds each descriptor
  with ``EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`` and it stays like that
  until ``netpollclose``.  With ``EPOLLET`` the kernel reports a direction
  only when it *becomes* ready (new data arrived, buffer space freed), not
  while it stays ready, so an fd whose owner is not waiting costs nothing and
  the poller never has to re-arm (no ``EPOLL_CTL_MOD`` per wait, unlike
  ``EPOLLONESHOT``).  The price is that an edge must never be lost: the core's
  pollDesc remembers a readiness notice that arrives before anyone parks, and
  an operation tries the syscall before it parks unless its last read showed
  the socket empty since that notice was last cleared (``PollDesc.wait``).

* **The epoll data is the fd**, so the token of each fd lives in a dict.  An
  event for an fd closed (and maybe reused) meanwhile is either dropped (no
  token) or reported with the new owner's token, which is only a spurious
  wakeup; the core drops stale tokens by generation anyway.

* **Exceptional conditions.**  ``EPOLLPRI`` (urgent data) is registered
  too, and it, ``EPOLLRDHUP``, ``EPOLLHUP`` and ``EPOLLERR`` are reported as
  ``MODE_R | MODE_EXCEPT``: after any of them a TCP read that returns short
  may leave EOF, an error or the data behind an urgent mark in the socket,
  with no edge to come, and the core must know that before it takes a short
  read as "the socket is empty" (``PollDesc.wait``).

* **Hangup and errors.**  ``EPOLLRDHUP`` (peer shut down its write side) and
  ``EPOLLHUP``/``EPOLLERR`` wake readers; ``EPOLLHUP``/``EPOLLERR`` wake
  writers too.  The woken operation retries its syscall and sees EOF or the
  error itself, so the poller never has to interpret them.

* **Wakeups** (``netpollbreak``) go through the shared
  :class:`~netpoll.backends.base.Wakeup` (an ``eventfd``), registered
  *level*-triggered for reading, so a missed drain makes the next wait
  return at once instead of sleeping.

* **Threads.**  ``epoll_ctl`` and ``epoll_wait`` may run concurrently on one
  epoll instance; the kernel serialises them.  A small lock guards only the
  Python-side state (the token dict, the wakeup flag, shutdown) and is never
  held across the blocking ``epoll_wait``, so open/close/break are never held
  up by a sleeping poller.

* ``epoll_ctl`` refuses regular files and directories with ``EPERM``; that
  :class:`OSError` propagates unchanged from ``netpollopen``, and the core
  falls back to blocking I/O for that descriptor.
"""

from __future__ import annotations

import select
from collections.abc import Iterable, Sequence

from netpoll.backends.base import EdgeTriggeredPoller, Wakeup, probe_with_pipe
from netpoll.core.hookspecs import (
    MAX_WAIT,
    MODE_EXCEPT,
    MODE_R,
    MODE_W,
    BackendSpec,
    clamp_timeout,
    hookimpl,
)

# select.EPOLL* exist only on Linux; getattr keeps the module importable (and
# the probe honest) everywhere else.
_EPOLLIN: int = getattr(select, "EPOLLIN", 0x001)
_EPOLLPRI: int = getattr(select, "EPOLLPRI", 0x002)
_EPOLLOUT: int = getattr(select, "EPOLLOUT", 0x004)
_EPOLLERR: int = getattr(select, "EPOLLERR", 0x008)
_EPOLLHUP: int = getattr(select, "EPOLLHUP", 0x010)
_EPOLLRDHUP: int = getattr(select, "EPOLLRDHUP", 0x2000)
_EPOLLET: int = getattr(select, "EPOLLET", 1 << 31)

#: What every descriptor is registered for, once.
REGISTER_FLAGS = _EPOLLIN | _EPOLLPRI | _EPOLLOUT | _EPOLLRDHUP | _EPOLLET
_READ_EVENTS = _EPOLLIN | _EPOLLPRI | _EPOLLRDHUP | _EPOLLHUP | _EPOLLERR
_WRITE_EVENTS = _EPOLLOUT | _EPOLLHUP | _EPOLLERR
_EXCEPT_EVENTS = _EPOLLPRI | _EPOLLRDHUP | _EPOLLHUP | _EPOLLERR

#: Events fetched per epoll_wait (Go uses 128 as well); the rest wait for the
#: next call, which is fine: edge-triggered events stay queued until fetched.
MAX_EVENTS = 128


class EpollPoller(EdgeTriggeredPoller):
    """One epoll instance: the poller hooks for the ``epoll`` backend."""

    name = "epoll"
    reports_except = True

    def __init__(self) -> None:
        super().__init__()
        self._epoll: select.epoll | None = None

    def _os_fds_locked(self) -> tuple[int, ...]:
        return () if self._epoll is None else (self._epoll.fileno(),)

    def _open_locked(self) -> None:
        self._epoll = select.epoll()  # EPOLL_CLOEXEC is Python's default
        self._wakeup = Wakeup()
        self._epoll.register(self._wakeup.rfd, _EPOLLIN)  # level-triggered: see the docstring

    def _release_locked(self) -> None:
        ep, self._epoll = self._epoll, None
        if ep is not None:
            ep.close()

    def _watch_locked(self, fd: int) -> None:
        """``EPOLL_CTL_ADD``; its OSError propagates (EPERM, EBADF, EEXIST)."""
        assert self._epoll is not None
        self._epoll.register(fd, REGISTER_FLAGS)

    def _unwatch_locked(self, fd: int) -> None:
        assert self._epoll is not None
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            # ENOENT/EBADF: the fd was closed first, which already removed it
            # from the epoll set.
            pass

    def _wait(self, timeout: float | None) -> Iterable[tuple[int, int]]:
        ep = self._epoll
        if ep is None:
            return ()  # shut down meanwhile
        # epoll.poll takes seconds and rounds sub-millisecond waits up.
        events = ep.poll(-1.0 if timeout is None else timeout, MAX_EVENTS)
        return [
            (
                fd,
                (MODE_R if ev & _READ_EVENTS else 0)
                | (MODE_W if ev & _WRITE_EVENTS else 0)
                | (MODE_EXCEPT if ev & _EXCEPT_EVENTS else 0),
            )
            for fd, ev in events
        ]

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait up to ``timeout`` seconds; return ``[(token, modes), ...]``, one per fd.

        The base class's netpoll in one pass: epoll reports each fd once per
        wait, so there is nothing to merge, and the events become tokens in
        one comprehension (this runs once per scheduler round).
        """
        ep = self._epoll
        if ep is None:
            if self._opened or self._closed:
                return []  # shut down meanwhile
            self.netpollinit()
            ep = self._epoll
            assert ep is not None
        if timeout is None:
            timeout = -1.0  # block
        elif not 0.0 <= timeout <= MAX_WAIT:  # NaN included
            clamped = clamp_timeout(timeout)
            timeout = -1.0 if clamped is None else clamped
        try:
            events = ep.poll(timeout, MAX_EVENTS)
        except (OSError, ValueError):
            if self._closed:
                return []  # the epoll fd was closed under our feet
            raise
        tokens = self._tokens
        result: list[tuple[object, int]] = [
            (
                tokens[fd],
                (MODE_R if ev & _READ_EVENTS else 0)
                | (MODE_W if ev & _WRITE_EVENTS else 0)
                | (MODE_EXCEPT if ev & _EXCEPT_EVENTS else 0),
            )
            for fd, ev in events
            if fd in tokens
        ]
        if len(result) != len(events):
            # The wakeup channel (never in tokens), or an fd closed meanwhile.
            wakeup = self._wakeup
            if wakeup is not None:
                for fd, _ in events:
                    if fd == wakeup.rfd:
                        with self.lock:
                            self._is_wakeup(fd)
                        break
        return result


def _epoll_reports_writable(wfd: int) -> bool:
    with select.epoll() as ep:
        ep.register(wfd, _EPOLLOUT)
        return bool(ep.poll(0))


def probe() -> str | None:
    """Return ``None`` if epoll works here (tried on a pipe), else why not."""
    if not hasattr(select, "epoll"):
        return "select.epoll is not available on this platform"
    return probe_with_pipe("epoll", _epoll_reports_writable)


@hookimpl
def netpoll_backends() -> list[BackendSpec]:
    """The ``epoll`` backend: edge-triggered, Linux only, priority 40."""
    return [
        EpollPoller.backend_spec(
            priority=40,
            probe=probe,
            description="Linux epoll, edge-triggered (EPOLLET), eventfd wakeup",
        )
    ]
