"""The select(2) backend: the portable last resort, level-triggered and one-shot.

How select is used here, and why:

* **Level-triggered, so interest is one-shot**, exactly as in the poll
  backend: ``netpollopen`` only remembers the fd, ``netpollarm`` adds a
  direction just before a waiter parks, and a reported direction is dropped
  again, so a ready fd that nobody waits on never makes the poller spin.

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
  arm made while a wait is in progress, like any ``netpollbreak``, writes to
  a wakeup pipe (an eventfd on Linux) that is always in the read set; an arm
  with nobody waiting needs no wakeup, the next snapshot includes it.  Writes
  coalesce through a flag that the polling thread clears after draining.

* **Threads.**  The fd sets are snapshots built under a lock at the start of
  each wait, so ``netpollopen``/``netpollclose``/``netpollarm`` from other
  threads never race with the blocking call; the lock is not held during it.
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Sequence

from netpoll.backends._wakeup import PollerBase, Wakeup
from netpoll.core.hookspecs import (
    MODE_R,
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


class SelectPoller(PollerBase):
    """Snapshot fd sets over ``select.select``: the ``select`` backend."""

    def __init__(self) -> None:
        super().__init__()
        self._wakeup: Wakeup | None = None
        #: fd -> armed modes (only fds with some interest).
        self._interest: dict[int, int] = {}
        #: True from the snapshot of the fd sets until select returns: only
        #: then does a new arm need to interrupt the wait.
        self._polling = False

    def _init_locked(self) -> Wakeup:
        if self._closed:
            raise RuntimeError("netpoll: select backend is shut down")
        if self._wakeup is None:
            wakeup = Wakeup()
            if wakeup.rfd >= FD_SETSIZE:
                wakeup.close()
                _check_fd(wakeup.rfd)
            self._wakeup = wakeup
        return self._wakeup

    def _wake_locked(self) -> None:
        if self._wakeup is not None:
            self._wakeup.notify()

    # -- hooks ------------------------------------------------------------

    def netpollinit(self) -> None:
        """Create the wakeup channel (idempotent)."""
        with self._lock:
            self._init_locked()

    def netpollopen(self, fd: int, token: object) -> None:
        """Remember ``fd``; raises :class:`FdSetSizeError` if select can't watch it."""
        _check_fd(fd)
        with self._lock:
            self._init_locked()
            self._tokens[fd] = token

    def netpollclose(self, fd: int) -> None:
        """Forget ``fd`` and any interest in it."""
        with self._lock:
            self._tokens.pop(fd, None)
            self._interest.pop(fd, None)

    def netpollarm(self, fd: int, mode: int) -> None:
        """Watch ``fd`` for ``mode`` until reported once; wakes a blocked select."""
        _check_fd(fd)
        with self._lock:
            self._init_locked()
            if fd not in self._tokens:
                raise KeyError(f"netpoll: fd {fd} is not registered with the select backend")
            old = self._interest.get(fd, 0)
            new = old | (mode & (MODE_R | MODE_W))
            if new != old:
                self._interest[fd] = new
                if self._polling:  # a later select takes a fresh snapshot
                    self._wake_locked()

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

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait up to ``timeout`` seconds; report and disarm ready modes."""
        with self._lock:
            wakeup = self._init_locked()
            rlist = [wakeup.rfd]
            wlist: list[int] = []
            for fd, interest in self._interest.items():
                if interest & MODE_R:
                    rlist.append(fd)
                if interest & MODE_W:
                    wlist.append(fd)
            self._polling = True
        wait = clamp_timeout(timeout)
        bad: list[int] = []
        try:
            readable, writable, _ = select.select(rlist, wlist, [], wait)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            return []
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno != errno.EBADF:
                raise
            # Some fd was closed without netpollclose (or the wakeup was shut
            # down).  Find the culprits; they are reported like POLLNVAL.
            bad = [fd for fd in set(rlist + wlist) if _is_bad_fd(fd)]
            readable = writable = []
        finally:
            with self._lock:
                self._polling = False
        ready: dict[int, int] = {}
        for fd in readable:
            ready[fd] = ready.get(fd, 0) | MODE_R
        for fd in writable:
            ready[fd] = ready.get(fd, 0) | MODE_W
        for fd in bad:
            ready[fd] = MODE_R | MODE_W
        if not ready:
            return []
        result: list[tuple[object, int]] = []
        with self._lock:
            if self._closed:
                return []
            for fd, modes in ready.items():
                if fd == wakeup.rfd:
                    wakeup.drain()  # reads, then clears the flag, as Go does
                    continue
                interest = self._interest.get(fd, 0)
                token = self._tokens.get(fd)
                if not interest or token is None:
                    continue  # disarmed or closed since the wait began
                if fd in bad:
                    del self._interest[fd]
                else:
                    modes &= interest
                    left = interest & ~modes
                    if left:
                        self._interest[fd] = left
                    else:
                        del self._interest[fd]
                if modes:
                    result.append((token, modes))
        return result

    def netpollbreak(self) -> None:
        """Wake a blocked :meth:`netpoll`; repeated calls coalesce."""
        with self._lock:
            if self._closed:
                return
            self._init_locked()
            self._wake_locked()

    # -- not a hook -------------------------------------------------------

    def _release_locked(self) -> None:
        """Forget the interest table and close the wakeup channel (from :meth:`shutdown`)."""
        self._interest.clear()
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.close()


def probe() -> str | None:
    """Return ``None`` if select(2) works here (tried on a pipe), else why not."""
    try:
        rfd, wfd = os.pipe()
    except OSError as exc:
        return f"cannot create a pipe to probe select: {exc}"
    try:
        _, writable, _ = select.select([], [wfd], [], 0)
        if writable != [wfd]:
            return "select(2) did not report a writable pipe"
    except (OSError, ValueError) as exc:
        return f"select(2) failed: {exc}"
    finally:
        os.close(rfd)
        os.close(wfd)
    return None


@hookimpl
def netpoll_backends() -> list[BackendSpec]:
    """The ``select`` backend: level-triggered with netpollarm, priority 10."""
    return [
        BackendSpec(
            name="select",
            priority=10,
            probe=probe,
            create=SelectPoller,
            edge_triggered=False,
            description=f"select(2), level-triggered one-shot interest, fds < {FD_SETSIZE}",
        )
    ]
