"""What a parked "G" is: the waiter a pollDesc semaphore holds.

In Go a pollDesc's ``rg``/``wg`` hold a goroutine pointer and ``gopark`` /
``goready`` suspend and resume it (``runtime/proc.go``).  Here the G is
whatever implements :class:`G`: today a Python thread (:class:`ThreadG`), later
perhaps a coroutine, without pollDesc changing.

The contract the pollDesc relies on:

* ``prepare()`` is called before the G is published in a semaphore, and each
  ``prepare()`` is followed by exactly one ``park()`` or ``cancel()``;
* ``ready()`` is called at most once per ``park()`` (the semaphore's state
  machine guarantees it), and it may come before ``park()`` is entered, in
  which case ``park()`` returns at once.

**Why a parked thread waits on an eventfd.**  The obvious park is a lock the
waker releases.  Under the GIL that is slow: the waker (the poll-loop thread)
holds the GIL while it releases the lock, the kernel switches to the woken
thread at once (it has slept, so it preempts), that thread cannot get the GIL
and sleeps again on the GIL's condition, and control goes back.  Measured on
100 echo connections: about 6.5 context switches and 9.6 futex calls per
message, against 1 and 0.06 for a blocking-socket thread per connection.  A
write to an eventfd is a system call during which CPython *releases* the GIL,
so the woken thread finds the GIL free and runs straight into its recv/send;
that brought the same run to about 1 context switch and no futex calls per
message.  So where ``os.eventfd`` exists (Linux) a parked thread blocks in
``eventfd_read`` and is woken by ``eventfd_write``.

The eventfds come from a small pool (:data:`wake_fds`): a G holds one only
between ``prepare()`` and the end of its park, so a thread that is not parked
costs no descriptor.  If none can be created (``EMFILE``), the G falls back to
its lock for that park: slower, never wrong.
"""

from __future__ import annotations

import os
import threading
from _thread import allocate_lock, get_ident
from typing import Any, Protocol

_eventfd = getattr(os, "eventfd", None)
_eventfd_read = getattr(os, "eventfd_read", None)
_eventfd_write = getattr(os, "eventfd_write", None)


class G(Protocol):
    """A waiter that can be suspended and resumed once per park."""

    #: Set by the waker before :meth:`ready`: True when woken by readiness,
    #: False by a deadline or close.
    ioready: bool

    def prepare(self) -> None:
        """Get ready to park; called before the G becomes reachable by a waker."""

    def park(self) -> None:
        """Block until :meth:`ready` is (or was already) called."""

    def cancel(self) -> None:
        """Undo :meth:`prepare`: the park was called off before anyone could wake it."""

    def ready(self) -> None:
        """Resume the waiter; may be called from any thread."""


class WakeFdPool:
    """Eventfds for parking threads: reused, and capped to spare the fd limit.

    ``get`` hands out an idle eventfd (creating one if none is idle) and
    ``put`` takes it back; at most :attr:`max_idle` are kept, the rest closed.
    An fd is put back only after its one wakeup was read, so a pooled eventfd
    always has a zero counter.

    Every parked thread holds one, so 10,000 idle connections would need
    10,000 more descriptors: a server near ``RLIMIT_NOFILE`` would start
    failing ``accept`` with ``EMFILE`` because of us.  So at most a quarter of
    the soft limit is ever used for eventfds (the cap is re-read when reached,
    since servers raise the limit after start-up); past it a park uses the
    G's lock.
    """

    def __init__(self, max_idle: int = 64) -> None:
        self.max_idle = max_idle
        self.enabled = _eventfd is not None
        self._idle: list[int] = []
        self._lock = allocate_lock()
        #: eventfds open now, idle or in use (changed only under _lock).
        self._open = 0
        self._cap = 0

    def get(self) -> int:
        """An eventfd with a zero counter, or -1 if none can be had."""
        try:
            return self._idle.pop()  # list.pop is atomic: no lock needed
        except IndexError:
            pass
        if not self.enabled or _eventfd is None:
            return -1
        with self._lock:
            if self._open >= self._cap:
                self._cap = _fd_cap()
                if self._open >= self._cap:
                    return -1  # near the fd limit: this park uses the lock
            try:
                fd: int = _eventfd(0, os.EFD_CLOEXEC)
            except OSError:
                return -1  # out of descriptors: this park uses the lock
            self._open += 1
        return fd

    def put(self, fd: int) -> None:
        """Take back an eventfd whose counter is zero."""
        if len(self._idle) < self.max_idle:
            self._idle.append(fd)
        else:
            self.discard(fd)

    def discard(self, fd: int) -> None:
        """Close an eventfd of this pool instead of keeping it."""
        with self._lock:
            self._open -= 1
        try:
            os.close(fd)
        except OSError:
            pass

    @property
    def open_count(self) -> int:
        """How many eventfds are open, idle or held by a parked thread."""
        return self._open

    def idle(self) -> frozenset[int]:
        """The idle eventfds (a leak check should not count them)."""
        return frozenset(self._idle)

    def clear(self) -> None:
        """Close every idle eventfd."""
        while True:
            try:
                fd = self._idle.pop()
            except IndexError:
                return
            self.discard(fd)

    def _after_fork_in_child(self) -> None:
        # The child shares the parent's eventfds; writing to one would wake a
        # thread of the parent.  Forget them (closing only the child's copy).
        # Ones held by parked threads of the parent belong to threads that do
        # not exist here; their count goes with them.
        self._lock = allocate_lock()
        self.clear()
        self._open = 0


def _fd_cap() -> int:
    """A quarter of the soft ``RLIMIT_NOFILE`` (at least 16)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1 << 16
    return max(16, soft // 4)


#: The process's pool of wake eventfds.
wake_fds = WakeFdPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=wake_fds._after_fork_in_child)


class ThreadG:
    """A thread as a G: it blocks on an eventfd, or on a lock as a fallback.

    ``_wake_fd`` is the eventfd of the current park (-1: use the lock).  The
    lock starts held; a ``ready`` that comes before the park leaves the lock
    free (or the eventfd counter at 1), so the park passes straight through
    and the wakeup is never lost.
    """

    __slots__ = (
        "__weakref__",
        "_sema",
        "_state",
        "_wake_fd",
        "ident",
        "ioready",
        "lead_poller",
        "name",
        "no_lead",
        "woken",
    )

    def __init__(self, name: str = "") -> None:
        self._sema = allocate_lock()
        self._sema.acquire()
        self._wake_fd = -1
        self.ioready = False
        self.name = name
        self.ident = get_ident()
        #: The NetPoller this thread is polling for while parked (a solo
        #: leader), else None; ``woken`` is its ready flag meanwhile.
        self.lead_poller: Any = None
        self.woken = False
        #: Set when this G just gave up the poll role: its next park waits.
        self.no_lead = False
        # Orders ready() against the end of a lead (see stop_leading).
        self._state = allocate_lock()

    def prepare(self) -> None:
        """Take a wake eventfd for the coming park (kept if one is still held)."""
        if self._wake_fd < 0:
            self._wake_fd = wake_fds.get()

    def park(self) -> None:
        """Block the calling thread until :meth:`ready`."""
        fd = self._wake_fd
        if fd < 0:
            self._sema.acquire()
            return
        assert _eventfd_read is not None
        _eventfd_read(fd)
        # The counter is back to zero and no second ready can come for this
        # park: the fd can serve any other thread now.
        self._wake_fd = -1
        wake_fds.put(fd)

    def stop_leading(self) -> bool:
        """End a lead; True if :meth:`ready` came during it.

        After this a late ``ready`` takes the channel path (the lock, as a
        leader holds no eventfd): at worst one spurious wakeup of a later
        park, which the pollDesc tolerates.
        """
        with self._state:
            self.lead_poller = None
            woken: bool = self.woken
            self.woken = False
        return woken

    def cancel(self) -> None:
        """Give the eventfd back: nobody can wake this park any more."""
        fd = self._wake_fd
        if fd >= 0:
            self._wake_fd = -1
            wake_fds.put(fd)

    def ready(self) -> None:
        """Wake the parked thread (the eventfd write releases the GIL)."""
        if self.lead_poller is not None:
            with self._state:
                poller = self.lead_poller
                if poller is not None:
                    # It is polling, not blocked on its channel: a flag it
                    # checks after each round, and a break if it sits in
                    # netpoll right now.
                    self.woken = True
            if poller is not None:
                if get_ident() != self.ident:
                    poller.interrupt()
                return
        fd = self._wake_fd
        if fd < 0:
            self._sema.release()
        else:
            assert _eventfd_write is not None
            _eventfd_write(fd, 1)

    def __del__(self) -> None:
        # Only reached with an fd still held after an interrupted park (see
        # PollDesc._block); the thread is gone, so nothing can wait on it.
        fd = self._wake_fd
        if fd >= 0:
            self._wake_fd = -1
            wake_fds.discard(fd)

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
