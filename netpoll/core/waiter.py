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
from _thread import allocate_lock, get_ident
from typing import Any, Protocol


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

    A parked thread may instead be *polling* (the netpoller's leader, see
    :mod:`netpoll.core.netpoller`): it then checks ``sema`` between polls, so
    ``ready`` from another thread must also interrupt the poll it sits in.
    """

    __slots__ = ("__weakref__", "ident", "name", "polling", "sema")

    def __init__(self, name: str = "") -> None:
        self.sema = allocate_lock()
        self.sema.acquire()
        self.name = name
        self.ident = get_ident()
        #: The poller this thread is currently leading, if any.
        self.polling: Any = None

    def park(self) -> None:
        """Block the calling thread until :meth:`ready`."""
        self.sema.acquire()

    def ready(self) -> None:
        """Wake the parked (or polling) thread."""
        self.sema.release()
        # Read after the release: a leader sets ``polling`` before it checks
        # the semaphore, so either it sees the release or we see it polling.
        poller = self.polling
        if poller is not None and get_ident() != self.ident:
            poller.wake_leader()

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
