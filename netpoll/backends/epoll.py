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
  an operation always tries the syscall before it parks.

* **The epoll data is the fd**, so the token of each fd lives in a dict.  An
  event for an fd closed (and maybe reused) meanwhile is either dropped (no
  token) or reported with the new owner's token, which is only a spurious
  wakeup; the core drops stale tokens by generation anyway.

* **Hangup and errors.**  ``EPOLLRDHUP`` (peer shut down its write side) and
  ``EPOLLHUP``/``EPOLLERR`` wake readers; ``EPOLLHUP``/``EPOLLERR`` wake
  writers too.  The woken operation retries its syscall and sees EOF or the
  error itself, so the poller never has to interpret them.

* **Wakeups** (``netpollbreak``) go through an ``eventfd`` (a pipe where
  ``os.eventfd`` is missing), registered *level*-triggered for reading and
  drained by the polling thread.  Breaks coalesce: a flag says a wakeup is
  already pending, and is cleared only after the poller drained the eventfd
  (Go's ``netpollWakeSig``), so a flood of breaks costs one write.

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
from collections.abc import Sequence

from netpoll.backends._wakeup import PollerBase, Wakeup
from netpoll.core.hookspecs import MODE_R, MODE_W, BackendSpec, clamp_timeout, hookimpl

# select.EPOLL* exist only on Linux; getattr keeps the module importable (and
# the probe honest) everywhere else.
_EPOLLIN: int = getattr(select, "EPOLLIN", 0x001)
_EPOLLOUT: int = getattr(select, "EPOLLOUT", 0x004)
_EPOLLERR: int = getattr(select, "EPOLLERR", 0x008)
_EPOLLHUP: int = getattr(select, "EPOLLHUP", 0x010)
_EPOLLRDHUP: int = getattr(select, "EPOLLRDHUP", 0x2000)
_EPOLLET: int = getattr(select, "EPOLLET", 1 << 31)

#: What every descriptor is registered for, once.
REGISTER_FLAGS = _EPOLLIN | _EPOLLOUT | _EPOLLRDHUP | _EPOLLET
_READ_EVENTS = _EPOLLIN | _EPOLLRDHUP | _EPOLLHUP | _EPOLLERR
_WRITE_EVENTS = _EPOLLOUT | _EPOLLHUP | _EPOLLERR

#: Events fetched per epoll_wait (Go uses 128 as well); the rest wait for the
#: next call, which is fine: edge-triggered events stay queued until fetched.
MAX_EVENTS = 128


class EpollPoller(PollerBase):
    """One epoll instance: the poller hooks for the ``epoll`` backend."""

    def __init__(self) -> None:
        super().__init__()
        self._epoll: select.epoll | None = None
        self._wakeup: Wakeup | None = None

    # -- hooks ------------------------------------------------------------

    def netpollinit(self) -> None:
        """Create the epoll instance and its wakeup eventfd (idempotent)."""
        with self._lock:
            self._init_locked()

    def _init_locked(self) -> select.epoll:
        if self._closed:
            raise RuntimeError("netpoll: epoll backend is shut down")
        if self._epoll is None:
            ep = select.epoll()  # EPOLL_CLOEXEC is Python's default
            try:
                wakeup = Wakeup()
            except BaseException:
                ep.close()
                raise
            try:
                # Level-triggered on purpose: if a drain ever misses, the
                # next wait returns at once instead of sleeping forever.
                ep.register(wakeup.rfd, _EPOLLIN)
            except BaseException:
                wakeup.close()
                ep.close()
                raise
            self._epoll, self._wakeup = ep, wakeup
        return self._epoll

    def netpollopen(self, fd: int, token: object) -> None:
        """Register ``fd`` edge-triggered for read and write, for its lifetime.

        Raises the :class:`OSError` of ``epoll_ctl`` unchanged (``EPERM`` for
        a regular file, ``EBADF`` for a closed fd, ``EEXIST`` if registered).
        """
        with self._lock:
            ep = self._init_locked()
            # The token goes in first: the very first edge may be reported by
            # a concurrent epoll_wait before epoll_ctl has even returned here.
            previous = self._tokens.get(fd)
            self._tokens[fd] = token
            try:
                ep.register(fd, REGISTER_FLAGS)
            except BaseException:
                if previous is None:
                    del self._tokens[fd]
                else:
                    self._tokens[fd] = previous
                raise

    def netpollclose(self, fd: int) -> None:
        """Remove ``fd`` from the epoll set; unknown or closed fds are ignored."""
        with self._lock:
            if self._tokens.pop(fd, None) is None or self._epoll is None:
                return
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                # ENOENT/EBADF: the fd was closed first, which already removed
                # it from the epoll set.
                pass

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait up to ``timeout`` seconds; return ``[(token, modes), ...]``."""
        ep = self._epoll
        if ep is None:
            with self._lock:
                ep = self._init_locked()
        # epoll.poll takes seconds and rounds sub-millisecond waits up.
        t = clamp_timeout(timeout)
        wait = -1.0 if t is None else t
        try:
            events = ep.poll(wait, MAX_EVENTS)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            return []
        except (ValueError, OSError):
            # The epoll object was closed by shutdown() under our feet.
            if self._closed:
                return []
            raise
        if not events:
            return []
        wakeup = self._wakeup
        wake_fd = -1 if wakeup is None else wakeup.rfd
        tokens = self._tokens
        result: list[tuple[object, int]] = []
        for fd, ev in events:
            if fd == wake_fd and wakeup is not None:
                with self._lock:
                    # drain() reads first, then clears the flag (Go's order): a
                    # break that finds the flag still set is answered by this
                    # return.
                    wakeup.drain()
                continue
            token = tokens.get(fd)
            if token is None:
                continue  # closed meanwhile
            modes = 0
            if ev & _READ_EVENTS:
                modes |= MODE_R
            if ev & _WRITE_EVENTS:
                modes |= MODE_W
            if modes:
                # epoll reports each fd at most once per wait, so no merging
                # is needed here.
                result.append((token, modes))
        return result

    def netpollbreak(self) -> None:
        """Wake a blocked :meth:`netpoll`; repeated calls coalesce."""
        with self._lock:
            if self._closed:
                return
            self._init_locked()
            assert self._wakeup is not None
            self._wakeup.notify()

    # -- not a hook -------------------------------------------------------

    def _release_locked(self) -> None:
        """Close the epoll fd and the wakeup fd (from :meth:`shutdown`)."""
        ep, wakeup = self._epoll, self._wakeup
        self._epoll = self._wakeup = None
        if ep is not None:
            ep.close()
        if wakeup is not None:
            wakeup.close()


def probe() -> str | None:
    """Return ``None`` if an epoll instance can be created here, else why not."""
    factory = getattr(select, "epoll", None)
    if factory is None:
        return "select.epoll is not available on this platform"
    try:
        ep = factory()
    except OSError as exc:
        return f"epoll_create failed: {exc}"
    ep.close()
    return None


@hookimpl
def netpoll_backends() -> list[BackendSpec]:
    """The ``epoll`` backend: edge-triggered, Linux only, priority 40."""
    return [
        BackendSpec(
            name="epoll",
            priority=40,
            probe=probe,
            create=EpollPoller,
            edge_triggered=True,
            description="Linux epoll, edge-triggered (EPOLLET), eventfd wakeup",
        )
    ]
