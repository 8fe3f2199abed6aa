"""The poll(2) backend: level-triggered and one-shot, like Go's AIX poller.

How poll is used here, and why:

* **Level-triggered, so interest is one-shot.**  poll reports a descriptor on
  every call for as long as it is ready.  Watching every open fd for both
  directions all the time would make the poller spin on any socket whose
  send buffer has room (nearly all of them) or whose unread data nobody wants
  yet.  So ``netpollopen`` only remembers the fd and its token;
  ``netpollarm(fd, mode)`` adds interest just before a waiter parks; and when
  ``netpoll`` reports a mode it drops that interest again.  That logic is
  :class:`~netpoll.backends.base.LevelTriggeredPoller`, shared with select;
  this module adds only the ``select.poll`` object and its fd set.

* **poll never stops reporting POLLHUP/POLLERR/POLLNVAL**, whatever the
  requested events are.  A hung-up fd is therefore reported for both
  directions and all its interest is dropped; an fd with no interest left is
  removed from the poll set entirely, so it cannot spin either.

* **Wakeups.**  A blocked ``poll`` only sees the fd set it started with, so a
  new arm made while a wait is in progress interrupts it through the wakeup
  channel (an eventfd on Linux), which is always in the set.

* **Threads.**  Python's ``select.poll`` object copies its fd table into a
  private array before it drops the GIL for the syscall, so ``register`` and
  ``unregister`` from other threads are safe while one thread is blocked in
  ``poll`` (they take effect at the next call, hence the wakeup); only two
  concurrent ``poll()`` calls are refused, and the core never makes them.  A
  lock guards the interest table and is not held across the wait.
"""

from __future__ import annotations

import math
import select
from collections.abc import Iterable

from netpoll.backends.base import (
    LevelTriggeredPoller,
    Wakeup,
    poll_mask,
    poll_modes,
    probe_with_pipe,
)
from netpoll.core.hookspecs import BackendSpec, hookimpl


class PollPoller(LevelTriggeredPoller):
    """A ``select.poll`` object holding the armed fds: the ``poll`` backend."""

    name = "poll"

    def __init__(self) -> None:
        super().__init__()
        self._poll: select.poll | None = None

    def _open_locked(self) -> None:
        self._poll = select.poll()
        self._wakeup = Wakeup()
        self._poll.register(self._wakeup.rfd, select.POLLIN)

    def _release_locked(self) -> None:
        self._poll = None

    def _watch_locked(self, fd: int, modes: int) -> None:
        if self._poll is None:
            return
        if modes:
            self._poll.register(fd, poll_mask(modes))  # register() modifies a known fd
        else:
            # A poll already blocked still holds the fd in its private array;
            # if the fd is closed now it comes back as POLLNVAL, which is
            # ignored (no interest): one harmless turn.
            self._poll.unregister(fd)

    def _wait(self, timeout: float | None) -> Iterable[tuple[int, int]]:
        p = self._poll
        if p is None:
            return ()  # shut down meanwhile
        # Round up: a timer must not fire early because of truncation.
        events = p.poll(None if timeout is None else math.ceil(timeout * 1000.0))
        return [(fd, poll_modes(ev)) for fd, ev in events]


def _poll_reports_writable(wfd: int) -> bool:
    p = select.poll()
    p.register(wfd, select.POLLOUT)
    return bool(p.poll(0))


def probe() -> str | None:
    """Return ``None`` if poll(2) works here (tried on a pipe), else why not."""
    if not hasattr(select, "poll"):
        return "select.poll is not available on this platform"
    return probe_with_pipe("poll(2)", _poll_reports_writable)


@hookimpl
def netpoll_backends() -> list[BackendSpec]:
    """The ``poll`` backend: level-triggered with netpollarm, priority 20."""
    return [
        PollPoller.backend_spec(
            priority=20,
            probe=probe,
            description="poll(2), level-triggered one-shot interest via netpollarm",
        )
    ]
