"""A minimal third-party poller backend for netpoll, registered by entry point.

This is the worked example of CONTRIBUTING.md ("Adding a backend").  It is a
complete, correct backend in about a hundred lines, chosen for being easy to
read rather than fast:

* **Level-triggered, one-shot interest.**  ``netpollopen`` only remembers the
  fd and its token; the core calls ``netpollarm(fd, mode)`` just before a
  waiter parks (because the spec says ``edge_triggered=False``); ``netpoll``
  reports a ready mode once and drops that interest again.  So a ready fd that
  nobody waits on never makes the poller spin.
* **A snapshot per wait.**  Each ``netpoll`` call builds a fresh
  ``select.poll`` object from the interest table (taken under a lock), then
  waits without the lock.  Other threads may open, close and arm fds
  meanwhile; an arm wakes the wait so the next snapshot includes it.
* **Wakeups** go through a non-blocking pipe that is always in the set;
  ``netpollbreak``, ``netpollarm`` and ``netpollclose`` (of a watched fd)
  write a byte, coalesced by a flag.

The module itself is the plugin named in ``pyproject.toml``::

    [project.entry-points."netpoll.backends"]
    example = "netpoll_example_backend"

Only :mod:`netpoll.core.hookspecs` is imported from netpoll, as for the
built-in backends.
"""

from __future__ import annotations

import math
import os
import select
import threading
from collections.abc import Sequence

from netpoll.core.hookspecs import MODE_R, MODE_W, MODE_WAKE, BackendSpec, clamp_timeout, hookimpl

NAME = "example"

_HUP = select.POLLHUP | select.POLLERR | select.POLLNVAL
_IN = select.POLLIN | select.POLLPRI | _HUP
_OUT = select.POLLOUT | _HUP


class SnapshotPoller:
    """The poller object: its methods implement the poller hooks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[int, object] = {}  # fd -> token, while registered
        self._interest: dict[int, int] = {}  # fd -> armed modes
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._wake_pending = False

    def _wake_locked(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wfd, b"x")
            except BlockingIOError:
                pass

    def netpollinit(self) -> None:
        """Nothing to do: the pipe was made in ``__init__``."""

    def netpollopen(self, fd: int, token: object) -> None:
        """Remember ``fd``; it is watched only once armed."""
        with self._lock:
            self._tokens[fd] = token

    def netpollclose(self, fd: int) -> None:
        """Forget ``fd`` and its interest; wake a wait that is watching it.

        The wake matters: while a poll(2) call is blocked on ``fd`` the kernel
        holds a reference to the open file, so closing the descriptor would
        not close the socket (the peer would see no EOF) until the wait ends.
        """
        with self._lock:
            self._tokens.pop(fd, None)
            if self._interest.pop(fd, 0):
                self._wake_locked()

    def netpollarm(self, fd: int, mode: int) -> None:
        """Watch ``fd`` for ``mode`` until reported once."""
        with self._lock:
            old = self._interest.get(fd, 0)
            if old | mode != old:
                self._interest[fd] = old | mode
                self._wake_locked()

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait; return ``[(token, modes)]`` for the armed modes that are ready."""
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        with self._lock:
            for fd, modes in self._interest.items():
                poller.register(
                    fd,
                    (select.POLLIN if modes & MODE_R else 0)
                    | (select.POLLOUT if modes & MODE_W else 0),
                )
        ms = None if timeout is None else math.ceil(max(timeout, 0.0) * 1000)
        events = poller.poll(ms)
        result: list[tuple[object, int]] = []
        with self._lock:
            for fd, ev in events:
                if fd == self._rfd:
                    try:
                        while os.read(self._rfd, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self._wake_pending = False
                    continue
                interest, token = self._interest.get(fd, 0), self._tokens.get(fd)
                ready = (MODE_R if ev & _IN else 0) | (MODE_W if ev & _OUT else 0)
                ready &= interest
                if not ready or token is None:
                    continue  # disarmed or closed while we waited
                if interest & ~ready:
                    self._interest[fd] = interest & ~ready
                else:
                    del self._interest[fd]
                result.append((token, ready))
        return result

    def netpollbreak(self) -> None:
        """Wake a blocked :meth:`netpoll` from another thread."""
        with self._lock:
            self._wake_locked()

    def netpollwait(self, fd: int, mode: int, wake_fd: int, timeout: float | None) -> int:
        """A parked thread's wait on ``fd`` plus its wake fd: one poll(2)."""
        p = select.poll()
        if fd >= 0:
            p.register(fd, (_IN if mode & MODE_R else 0) | (_OUT if mode & MODE_W else 0))
        if wake_fd >= 0:
            p.register(wake_fd, select.POLLIN)
        t = clamp_timeout(timeout)
        result = 0
        for f, ev in p.poll(None if t is None else math.ceil(t * 1000)):
            if f == fd:
                result |= (MODE_R if ev & _IN else 0) | (MODE_W if ev & _OUT else 0)
            else:
                result |= MODE_WAKE
        return result

    def shutdown(self) -> None:
        """Not a hook: the runtime calls it when it drops this backend."""
        with self._lock:
            self._tokens.clear()
            self._interest.clear()
            for fd in {self._rfd, self._wfd}:
                os.close(fd)
            self._rfd = self._wfd = -1


def probe() -> str | None:
    """``None`` if poll(2) works here (tried on a pipe), else why not."""
    if not hasattr(select, "poll"):
        return "select.poll is not available on this platform"
    rfd, wfd = os.pipe()
    try:
        p = select.poll()
        p.register(wfd, select.POLLOUT)
        if not p.poll(0):
            return "poll(2) did not report a writable pipe"
    except OSError as exc:
        return f"poll(2) failed: {exc}"
    finally:
        os.close(rfd)
        os.close(wfd)
    return None


@hookimpl
def netpoll_backends() -> list[BackendSpec]:
    """The hook netpoll calls to list backends: this package provides one."""
    return [
        BackendSpec(
            name=NAME,
            priority=1,  # below every built-in backend: never the default
            probe=probe,
            create=SnapshotPoller,
            edge_triggered=False,
            description="example third-party backend: snapshot poll(2), level-triggered",
        )
    ]
