"""The poll(2) backend: level-triggered and one-shot, like Go's AIX poller.

How poll is used here, and why:

* **Level-triggered, so interest is one-shot.**  poll reports a descriptor on
  every call for as long as it is ready.  Watching every open fd for both
  directions all the time would make the poller spin on any socket whose
  send buffer has room (nearly all of them) or whose unread data nobody wants
  yet.  So ``netpollopen`` only remembers the fd and its token;
  ``netpollarm(fd, mode)`` adds interest just before a waiter parks; and when
  :meth:`PollPoller.netpoll` reports a mode it drops that interest again.
  The backend says ``edge_triggered=False`` so the core arms before parking.

* **poll never stops reporting POLLHUP/POLLERR/POLLNVAL**, whatever the
  requested events are.  A hung-up fd is therefore reported for both
  directions and all its interest is dropped; an fd with no interest left is
  removed from the poll set entirely, so it cannot spin either.

* **Wakeups.**  A blocked ``poll`` only sees the fd set it started with, so a
  new arm must interrupt it: ``netpollarm`` (only while a wait is in progress;
  a later ``poll`` sees the new interest anyway) and ``netpollbreak`` (always:
  a break before the wait must still cut it short) write to a non-blocking
  pipe (an eventfd on Linux) that is always in the set.  The write is
  coalesced by a flag that the polling thread clears after draining.

* **Threads.**  Python's ``select.poll`` object copies its fd table into a
  private array before it drops the GIL for the syscall, so ``register`` and
  ``unregister`` from other threads are safe while one thread is blocked in
  ``poll`` (they take effect at the next call, hence the wakeup); only two
  concurrent ``poll()`` calls are refused, and the core never makes them.  A
  lock guards the interest table and is not held across the wait.
"""

from __future__ import annotations

import math
import os
import select
from collections.abc import Sequence

from netpoll.backends._wakeup import PollerBase, Wakeup
from netpoll.core.hookspecs import MODE_R, MODE_W, BackendSpec, clamp_timeout, hookimpl

_POLLIN: int = getattr(select, "POLLIN", 0x001)
_POLLPRI: int = getattr(select, "POLLPRI", 0x002)
_POLLOUT: int = getattr(select, "POLLOUT", 0x004)
_POLLERR: int = getattr(select, "POLLERR", 0x008)
_POLLHUP: int = getattr(select, "POLLHUP", 0x010)
_POLLNVAL: int = getattr(select, "POLLNVAL", 0x020)
# Linux reports a peer's shutdown(SHUT_WR) as POLLRDHUP when asked for it.
_POLLRDHUP: int = getattr(select, "POLLRDHUP", 0)

_READ_EVENTS = _POLLIN | _POLLPRI | _POLLRDHUP | _POLLHUP | _POLLERR | _POLLNVAL
_WRITE_EVENTS = _POLLOUT | _POLLHUP | _POLLERR | _POLLNVAL
_GONE_EVENTS = _POLLHUP | _POLLERR | _POLLNVAL


def _mask_for(modes: int) -> int:
    """The poll event mask that watches ``modes``."""
    mask = 0
    if modes & MODE_R:
        mask |= _POLLIN | _POLLRDHUP
    if modes & MODE_W:
        mask |= _POLLOUT
    return mask


class PollPoller(PollerBase):
    """A ``select.poll`` object plus one-shot interest: the ``poll`` backend."""

    def __init__(self) -> None:
        super().__init__()
        self._poll: select.poll | None = None
        self._wakeup: Wakeup | None = None
        #: fd -> armed modes; fds with no interest are not in the poll set.
        self._interest: dict[int, int] = {}
        #: True while a thread is (about to be) blocked in poll(): only then
        #: does a new arm need to interrupt it.
        self._polling = False

    def _init_locked(self) -> select.poll:
        if self._closed:
            raise RuntimeError("netpoll: poll backend is shut down")
        if self._poll is None:
            p = select.poll()
            wakeup = Wakeup()
            p.register(wakeup.rfd, _POLLIN)
            self._poll, self._wakeup = p, wakeup
        return self._poll

    def _wake_locked(self) -> None:
        if self._wakeup is not None:
            self._wakeup.notify()

    # -- hooks ------------------------------------------------------------

    def netpollinit(self) -> None:
        """Create the poll object and its wakeup channel (idempotent)."""
        with self._lock:
            self._init_locked()

    def netpollopen(self, fd: int, token: object) -> None:
        """Remember ``fd`` and its token; nothing is watched until armed."""
        if fd < 0:
            raise ValueError(f"netpoll: bad file descriptor {fd}")
        with self._lock:
            self._init_locked()
            self._tokens[fd] = token

    def netpollclose(self, fd: int) -> None:
        """Forget ``fd`` and any interest in it."""
        with self._lock:
            self._tokens.pop(fd, None)
            if self._interest.pop(fd, 0) and self._poll is not None:
                # A poll already blocked still holds the fd in its private
                # array; if the fd is closed now it comes back as POLLNVAL,
                # which netpoll ignores (no interest) - one harmless turn.
                self._poll.unregister(fd)

    def netpollarm(self, fd: int, mode: int) -> None:
        """Watch ``fd`` for ``mode`` until reported once; wakes a blocked poll."""
        with self._lock:
            p = self._init_locked()
            if fd not in self._tokens:
                raise KeyError(f"netpoll: fd {fd} is not registered with the poll backend")
            old = self._interest.get(fd, 0)
            new = old | (mode & (MODE_R | MODE_W))
            if new == old:
                return  # already watched: the blocked poll has it
            self._interest[fd] = new
            p.register(fd, _mask_for(new))  # register() modifies a known fd
            if self._polling:
                # The blocked poll works on its own copy of the fd table; a
                # poll that starts later copies the updated one.
                self._wake_locked()

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait up to ``timeout`` seconds; report and disarm ready modes."""
        with self._lock:
            p = self._init_locked()
            self._polling = True
        t = clamp_timeout(timeout)
        # Round up: a timer must not fire early because of truncation.
        wait_ms = None if t is None else math.ceil(t * 1000.0)
        try:
            events = p.poll(wait_ms)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            events = []
        finally:
            with self._lock:
                self._polling = False
        if not events:
            return []
        result: list[tuple[object, int]] = []
        with self._lock:
            if self._closed or self._poll is None:
                return []
            wakeup = self._wakeup
            for fd, rev in events:
                if wakeup is not None and fd == wakeup.rfd:
                    wakeup.drain()  # reads, then clears the flag, as Go does
                    continue
                interest = self._interest.get(fd, 0)
                token = self._tokens.get(fd)
                if not interest or token is None:
                    continue  # disarmed or closed since the wait began
                modes = 0
                if rev & _READ_EVENTS:
                    modes |= MODE_R
                if rev & _WRITE_EVENTS:
                    modes |= MODE_W
                if rev & _GONE_EVENTS:
                    # Hung up or invalid: both directions will see it, and
                    # keeping any interest would make poll spin on this fd.
                    modes = MODE_R | MODE_W
                if not modes:
                    continue
                left = interest & ~modes
                if left:
                    self._interest[fd] = left
                    p.register(fd, _mask_for(left))
                else:
                    del self._interest[fd]
                    p.unregister(fd)
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
        wakeup = self._wakeup
        self._poll = self._wakeup = None
        if wakeup is not None:
            wakeup.close()


def probe() -> str | None:
    """Return ``None`` if poll(2) works here (tried on a pipe), else why not."""
    factory = getattr(select, "poll", None)
    if factory is None:
        return "select.poll is not available on this platform"
    try:
        rfd, wfd = os.pipe()
    except OSError as exc:
        return f"cannot create a pipe to probe poll: {exc}"
    try:
        p = factory()
        p.register(wfd, _POLLOUT)
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
    """The ``poll`` backend: level-triggered with netpollarm, priority 20."""
    return [
        BackendSpec(
            name="poll",
            priority=20,
            probe=probe,
            create=PollPoller,
            edge_triggered=False,
            description="poll(2), level-triggered one-shot interest via netpollarm",
        )
    ]
