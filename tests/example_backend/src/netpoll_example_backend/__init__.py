"""A minimal third-party poller backend for netpoll, registered by entry point.

This is the worked example of CONTRIBUTING.md ("Adding a backend"): a
complete, correct backend in one small file, chosen for being easy to read
rather than fast.  It builds on :class:`netpoll.backends.base.LevelTriggeredPoller`,
which holds the one-shot interest logic (``netpollopen`` remembers the fd,
``netpollarm`` adds a direction and wakes a wait in progress, a reported
direction is dropped again), the wakeup channel, the lock and shutdown.  What
is left to write is the OS wait itself:

* **A snapshot per wait.**  Each wait builds a fresh ``select.poll`` object
  from the armed fds (read under the lock), then waits without the lock.
  Other threads may open, close and arm fds meanwhile; an arm wakes the wait
  so the next snapshot includes it.

The module itself is the plugin named in ``pyproject.toml``::

    [project.entry-points."netpoll.backends"]
    example = "netpoll_example_backend"

From netpoll it imports only :mod:`netpoll.core.hookspecs` and the backend
bases, as the built-in backends do.
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


class SnapshotPoller(LevelTriggeredPoller):
    """The poller object: a fresh poll(2) set per wait."""

    name = "example"

    def _open_locked(self) -> None:
        self._wakeup = Wakeup()

    def _wait(self, timeout: float | None) -> Iterable[tuple[int, int]]:
        poller = select.poll()
        with self.lock:
            if self._wakeup is None:
                return ()  # shut down meanwhile
            poller.register(self._wakeup.rfd, select.POLLIN)
            for fd, modes in self._interest.items():
                poller.register(fd, poll_mask(modes))
        ms = None if timeout is None else math.ceil(timeout * 1000)
        return [(fd, poll_modes(ev)) for fd, ev in poller.poll(ms)]


def _poll_reports_writable(wfd: int) -> bool:
    p = select.poll()
    p.register(wfd, select.POLLOUT)
    return bool(p.poll(0))


def probe() -> str | None:
    """``None`` if poll(2) works here (tried on a pipe), else why not."""
    if not hasattr(select, "poll"):
        return "select.poll is not available on this platform"
    return probe_with_pipe("poll(2)", _poll_reports_writable)


@hookimpl
def netpoll_backends() -> list[BackendSpec]:
    """The hook netpoll calls to list backends: this package provides one."""
    return [
        SnapshotPoller.backend_spec(
            priority=1,  # below every built-in backend: never the default
            probe=probe,
            description="example third-party backend: snapshot poll(2), level-triggered",
        )
    ]
