"""The stdlib :mod:`queue` with queues whose ``get``/``put``/``join`` park a goroutine.

gevent's counterpart is ``gevent/queue.py``.  :class:`Queue`,
:class:`LifoQueue` and :class:`PriorityQueue` are subclasses of the stdlib
classes (``isinstance`` checks hold, the behaviour is CPython's
``Lib/queue.py``) whose mutex and conditions are
:mod:`netpoll.green.threading`'s, so a waiting goroutine parks and a plain
thread blocks as before; goroutines and threads can share one queue.

``SimpleQueue`` stays the stdlib's C queue: its ``put`` is documented as
safe from ``__del__`` and signal handlers (netpoll's finalizer relies on
that), which a parking lock cannot promise.  Its ``get`` in a goroutine
blocks the M; use :class:`Queue` or a :class:`netpoll.Chan` there.
"""

from __future__ import annotations

import queue as _std
from typing import TYPE_CHECKING, Any

from netpoll.green import reexport as _reexport
from netpoll.green.threading import Condition, Lock

_reexport(_std, globals())

if TYPE_CHECKING:
    # Every other name is the stdlib module's (copied above at run time).
    def __getattr__(name: str) -> Any: ...


class _GreenLocks:
    """Mixin: replace the stdlib queue's mutex and conditions with green ones."""

    mutex: Any
    not_empty: Any
    not_full: Any
    all_tasks_done: Any

    def _green(self) -> None:
        self.mutex = Lock()
        self.not_empty = Condition(self.mutex)
        self.not_full = Condition(self.mutex)
        self.all_tasks_done = Condition(self.mutex)


class Queue(_std.Queue, _GreenLocks):  # type: ignore[type-arg]
    """A FIFO queue (``queue.Queue``) whose waits park a goroutine."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._green()


class LifoQueue(_std.LifoQueue, _GreenLocks):  # type: ignore[type-arg]
    """A LIFO queue (``queue.LifoQueue``) whose waits park a goroutine."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._green()


class PriorityQueue(_std.PriorityQueue, _GreenLocks):  # type: ignore[type-arg]
    """A priority queue (``queue.PriorityQueue``) whose waits park a goroutine."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._green()


#: The names this module replaces in the stdlib's.
GREEN_NAMES = ("Queue", "LifoQueue", "PriorityQueue")

__all__ = sorted({*_std.__all__, *GREEN_NAMES})
