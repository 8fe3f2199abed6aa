"""What a parked "G" is: the waiter a pollDesc semaphore holds.

In Go a pollDesc's ``rg``/``wg`` hold a goroutine pointer and ``gopark`` /
``goready`` suspend and resume it (``runtime/proc.go``).  Here the G is
whatever implements :class:`G`: today a Python thread (:class:`ThreadG`), later
perhaps a coroutine, without pollDesc changing.

The contract the pollDesc relies on: ``ready()`` is called at most once per
``park()`` (the semaphore's state machine guarantees it), and it may come
before ``park()`` is entered, in which case ``park()`` returns at once.
"""

from __future__ import annotations

import threading
from _thread import allocate_lock
from typing import Protocol


class G(Protocol):
    """A waiter that can be suspended and resumed once per park."""

    def park(self) -> None:
        """Block until :meth:`ready` is (or was already) called."""

    def ready(self) -> None:
        """Resume the waiter; may be called from any thread."""


class ThreadG:
    """A thread as a G: a lock the thread blocks on until it is released.

    The lock starts held; ``park`` acquires it (blocking), ``ready`` releases
    it.  A release that comes first leaves the lock free, so the next ``park``
    passes straight through: the wakeup is never lost.
    """

    __slots__ = ("__weakref__", "_sema", "name")

    def __init__(self, name: str = "") -> None:
        self._sema = allocate_lock()
        self._sema.acquire()
        self.name = name

    def park(self) -> None:
        """Block the calling thread until :meth:`ready`."""
        self._sema.acquire()

    def ready(self) -> None:
        """Wake the parked thread."""
        self._sema.release()

    def __repr__(self) -> str:
        return f"<ThreadG {self.name}>"


_local = threading.local()


def current_g() -> ThreadG:
    """The G of the calling thread (one per thread, reused for every park)."""
    try:
        g: ThreadG = _local.g
    except AttributeError:
        g = _local.g = ThreadG(threading.current_thread().name)
    return g
