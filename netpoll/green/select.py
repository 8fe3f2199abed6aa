"""The stdlib :mod:`select` with ``select`` and ``poll`` that park a goroutine.

gevent's counterpart is ``gevent/select.py``.  From a plain thread both are
the stdlib's.  From a goroutine, the descriptors are first polled without
waiting; if nothing is ready and the caller may wait, the wait runs in
:func:`netpoll.blocking`'s thread pool while the goroutine parks, so its M
keeps running the others.  (netpoll's pollDesc has one waiter per direction
per descriptor, and a G parks on one pollDesc at a time, so a wait on many
arbitrary descriptors is handed to a pool thread rather than to the M's
poller; the thread-pool size, ``NETPOLL_BLOCKING_THREADS``, bounds how many
such waits run at once.)

``epoll``, ``kqueue`` and ``devpoll`` are left out, as gevent leaves them
out: code that probes for them (``selectors``, for one) falls back to
``poll``/``select``.
"""

from __future__ import annotations

import select as _std
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from netpoll.core.g import current_goroutine as _current_goroutine
from netpoll.core.sched import blocking as _blocking
from netpoll.green import reexport as _reexport

_reexport(_std, globals())

if TYPE_CHECKING:
    # Every other name is the stdlib module's (copied above at run time).
    def __getattr__(name: str) -> Any: ...


for _name in ("epoll", "kqueue", "kevent", "devpoll"):
    globals().pop(_name, None)
del _name

_orig_select = _std.select
_orig_poll: Any = getattr(_std, "poll", None)


def select(
    rlist: Iterable[Any], wlist: Iterable[Any], xlist: Iterable[Any], timeout: float | None = None
) -> tuple[list[Any], list[Any], list[Any]]:
    """``select.select``; a goroutine parks while the descriptors are not ready."""
    if _current_goroutine() is None:
        return _orig_select(rlist, wlist, xlist, timeout)
    rlist, wlist, xlist = list(rlist), list(wlist), list(xlist)
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative")
    ready = _orig_select(rlist, wlist, xlist, 0)
    if ready[0] or ready[1] or ready[2] or timeout == 0:
        return ready
    return _blocking(_orig_select, rlist, wlist, xlist, timeout)


if _orig_poll is not None:

    class poll:
        """``select.poll()``: ``register``/``modify``/``unregister``/``poll``.

        :meth:`poll` in a goroutine parks while nothing is ready (the wait
        runs in a pool thread).
        """

        def __init__(self) -> None:
            self._poll = _orig_poll()

        def register(
            self, fd: Any, eventmask: int = _std.POLLIN | _std.POLLPRI | _std.POLLOUT
        ) -> None:
            """Watch ``fd`` for ``eventmask``."""
            self._poll.register(fd, eventmask)

        def modify(self, fd: Any, eventmask: int) -> None:
            """Change the events watched on ``fd``."""
            self._poll.modify(fd, eventmask)

        def unregister(self, fd: Any) -> None:
            """Stop watching ``fd``."""
            self._poll.unregister(fd)

        def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
            """``[(fd, events)]`` ready within ``timeout`` milliseconds (None: forever)."""
            if _current_goroutine() is None:
                return list(self._poll.poll(timeout))
            ready: list[tuple[int, int]] = self._poll.poll(0)
            if timeout is not None and timeout < 0:
                timeout = None  # the stdlib's: negative waits forever
            if ready or timeout == 0:
                return ready
            waited: list[tuple[int, int]] = _blocking(self._poll.poll, timeout)
            return waited


#: The names this module replaces in the stdlib's.
GREEN_NAMES: tuple[str, ...] = ("select", "poll") if _orig_poll is not None else ("select",)
#: The names this module leaves out (and :func:`netpoll.patch.all` removes).
REMOVED_NAMES = tuple(n for n in ("epoll", "kqueue", "kevent", "devpoll") if hasattr(_std, n))

__all__ = sorted({n for n in dir(_std) if not n.startswith("_")} - set(REMOVED_NAMES))
