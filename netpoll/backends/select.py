"""The select(2) backend: the portable last resort, level-triggered and one-shot.

How select is used here, and why:

* **Level-triggered, so interest is one-shot**, exactly as in the poll
  backend, and through the same base
  (:class:`~netpoll.backends.base.LevelTriggeredPoller`): ``netpollopen``
  only remembers the fd, ``netpollarm`` adds a direction just before a
  waiter parks, and a reported direction is dropped again.

* **FD_SETSIZE.**  ``select`` works on fixed-size bitmaps; descriptors at or
  above ``FD_SETSIZE`` (1024 on Linux and macOS) cannot be watched at all.
  ``netpollopen`` refuses them up front with :class:`FdSetSizeError` (an
  :class:`OSError`, so the core falls back to blocking I/O for that fd, and a
  :class:`ValueError`, which is what ``select.select`` itself would raise).

* **Hangup and errors** have no bits of their own: a hung-up or failed socket
  shows up as readable (and writable), and the woken operation sees EOF or the
  error when it retries.  A descriptor closed without ``netpollclose`` makes
  the whole ``select`` call fail with ``EBADF``; the poller then finds the bad
  fds with ``fstat``, reports them for both directions and drops them, like
  poll's ``POLLNVAL``.

* **Wakeups.**  A blocked ``select`` only sees the sets it was given, so a new
  arm made while a wait is in progress, like any ``netpollbreak``, goes
  through the wakeup channel (an eventfd on Linux) that is always in the read
  set; an arm with nobody waiting needs no wakeup, the next snapshot has it.

* **Threads.**  The fd sets are snapshots built under a lock at the start of
  each wait, so ``netpollopen``/``netpollclose``/``netpollarm`` from other
  threads never race with the blocking call; the lock is not held during it.
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Iterable

from netpoll.backends.base import LevelTriggeredPoller, Wakeup, probe_with_pipe
from netpoll.core.hookspecs import (
    MODE_R,
    MODE_RW,
    MODE_W,
    MODE_WAKE,
    BackendSpec,
    clamp_timeout,
    hookimpl,
)

#: The size of select's fd bitmaps.  Python does not export it everywhere;
#: 1024 is the value on Linux, macOS and the BSDs' default builds.
FD_SETSIZE: int = getattr(select, "FD_SETSIZE", 1024)


class FdSetSizeError(OSError, ValueError):
    """A descriptor is too large for ``select`` (``fd >= FD_SETSIZE``)."""


def _check_fd(fd: int) -> None:
    if fd < 0:
        raise ValueError(f"netpoll: bad file descriptor {fd}")
    if fd >= FD_SETSIZE:
        raise FdSetSizeError(
            errno.EINVAL,
            f"netpoll: select backend cannot watch fd {fd}: "
            f"select(2) only handles descriptors below FD_SETSIZE ({FD_SETSIZE})",
        )


def _is_bad_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


class SelectPoller(LevelTriggeredPoller):
    """Snapshot fd sets over ``select.select``: the ``select`` backend."""

    name = "select"

    def _check_fd(self, fd: int) -> None:
        _check_fd(fd)

    def _open_locked(self) -> None:
        self._wakeup = Wakeup()
        _check_fd(self._wakeup.rfd)

    def _wait(self, timeout: float | None) -> Iterable[tuple[int, int]]:
        with self.lock:
            wakeup = self._wakeup
            if wakeup is None:
                return ()  # shut down meanwhile
            rlist = [wakeup.rfd]
            wlist: list[int] = []
            for fd, interest in self._interest.items():
                if interest & MODE_R:
                    rlist.append(fd)
                if interest & MODE_W:
                    wlist.append(fd)
        try:
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno != errno.EBADF:
                raise
            # Some fd was closed without netpollclose (or the wakeup was shut
            # down).  Find the culprits; they are reported like POLLNVAL.
            return [(fd, MODE_RW) for fd in set(rlist + wlist) if _is_bad_fd(fd)]
        ready: dict[int, int] = dict.fromkeys(readable, MODE_R)
        for fd in writable:
            ready[fd] = ready.get(fd, 0) | MODE_W
        return ready.items()

    def netpollwait(self, fd: int, mode: int, wake_fd: int, timeout: float | None) -> int:
        """One ``select`` call on ``fd`` and ``wake_fd`` (both below FD_SETSIZE)."""
        rset: list[int] = []
        wset: list[int] = []
        xset: list[int] = []
        if fd >= 0:
            _check_fd(fd)
            if mode & MODE_R:
                rset.append(fd)
            if mode & MODE_W:
                wset.append(fd)
            xset.append(fd)
        if wake_fd >= 0:
            _check_fd(wake_fd)
            rset.append(wake_fd)
        r, w, x = select.select(rset, wset, xset, clamp_timeout(timeout))
        result = 0
        if fd in r or fd in x:
            result |= MODE_R
        if fd in w or fd in x:
            result |= MODE_W
        if wake_fd >= 0 and wake_fd in r:
            result |= MODE_WAKE
        return result


def _select_reports_writable(wfd: int) -> bool:
    return select.select([], [wfd], [], 0)[1] == [wfd]


def probe() -> str | None:
    """Return ``None`` if select(2) works here (tried on a pipe), else why not."""
    return probe_with_pipe("select(2)", _select_reports_writable)


@hookimpl
def netpoll_backends() -> list[BackendSpec]:
    """The ``select`` backend: level-triggered with netpollarm, priority 10."""
    return [
        SelectPoller.backend_spec(
            priority=10,
            probe=probe,
            description=f"select(2), level-triggered one-shot interest, fds < {FD_SETSIZE}",
        )
    ]
