"""The poll loop: netpoll, netpollready, deadline timers, netpollBreak.

Go's scheduler calls ``netpoll(delay)`` from ``findrunnable`` and ``sysmon``
(``runtime/proc.go``), with ``delay`` up to the next timer, and readies the
goroutines ``netpollready`` collected.  Our Gs are threads, so a
:class:`NetPoller` runs that loop itself in one daemon thread, started lazily
on the first registration (Go's ``serverInit.Do``), and a parked thread just
blocks on its own wake channel until the loop readies it (an eventfd where the
OS has one, so the wakeup releases the GIL: see :mod:`netpoll.core.waiter`).

(A leader/follower variant, where a parking thread with nobody polling ran
``netpoll`` itself, was measured A/B against this loop with ``netpoll bench``:
about 8% better at one connection, 10-30% worse at 100 and 1000, because
under the GIL the role kept moving between threads.  The simple loop stayed.
That was with lock-based parking; with eventfd parking the many-connection
penalty may be gone, and one connection would still gain: not re-measured.)

The loop:

1. fire every due deadline timer (``netpolldeadlineimpl``);
2. block in the backend's ``netpoll`` until the earliest timer;
3. for each event, drop it if its token's generation is stale, else wake the
   waiters (``netpollready``).

Timers live in a heap with lazy deletion: a deadline change pushes a new timer
and bumps the pollDesc's sequence number, so the old one becomes a no-op when
it pops.  A timer earlier than the loop's current sleep interrupts the sleep
with ``netpollbreak`` (coalesced, like Go's ``netpollWakeSig``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from typing import TYPE_CHECKING

from netpoll.core.hookspecs import BackendSpec
from netpoll.core.polldesc import PollCache, PollDesc

if TYPE_CHECKING:
    from netpoll.core.plugins import SyscallTable


class NetPoller:
    """One active backend plus the thread that polls it and runs timers."""

    def __init__(
        self, table: SyscallTable, spec: BackendSpec, backend: object, cache: PollCache
    ) -> None:
        self.table = table
        self.spec = spec
        self.name = spec.name
        self.backend = backend
        self.cache = cache
        self.edge_triggered = spec.edge_triggered
        self._timers: list[tuple[float, int, PollDesc, int, int]] = []
        self._timer_ids = itertools.count()
        self._lock = threading.Lock()
        # When the loop will wake by itself; a timer earlier than this must
        # break the wait.  0.0 while the loop is awake (it will look anyway).
        self._sleep_until = 0.0
        self._break_pending = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- registration -----------------------------------------------------

    def open(self, fd: int) -> PollDesc:
        """poll_runtime_pollOpen: a PollDesc for ``fd``, registered with the backend.

        Raises the backend's :class:`OSError` (``EPERM``: not pollable) after
        returning the PollDesc to the cache, so a failure leaks nothing.
        """
        if fd < 0:
            raise ValueError(f"netpoll: bad file descriptor {fd}")
        self._ensure_started()
        pd = self.cache.alloc(fd)
        pd.poller = self
        try:
            self.table.netpollopen(fd, pd.token)
        except BaseException:
            self.cache.free(pd)
            raise
        return pd

    def close(self, pd: PollDesc) -> None:
        """poll_runtime_pollClose: unregister and recycle ``pd``.

        Only called once no operation uses the fd (fdMutex's last reference).
        """
        try:
            self.table.netpollclose(pd.fd)
        finally:
            self.cache.free(pd)

    def arm(self, fd: int, mode: int) -> None:
        """netpollarm for level-triggered backends."""
        self.table.netpollarm(fd, mode)

    # -- timers -----------------------------------------------------------

    def add_timer(self, when: float, pd: PollDesc, mode: int, seq: int) -> None:
        """Arm a deadline timer; wake the loop if it fires before the loop's sleep."""
        with self._lock:
            heapq.heappush(self._timers, (when, next(self._timer_ids), pd, mode, seq))
            wake = when < self._sleep_until and not self._break_pending
            if wake:
                self._break_pending = True
        if wake:
            self.table.netpollbreak()

    def _run_timers(self, now: float) -> float | None:
        """Fire due timers; return seconds until the next one (None: no timers)."""
        timers = self._timers
        while True:
            with self._lock:
                if not timers:
                    self._sleep_until = math.inf
                    return None
                when = timers[0][0]
                if when > now:
                    self._sleep_until = when
                    return when - now
                _, _, pd, mode, seq = heapq.heappop(timers)
            pd.deadline_fired(mode, seq)

    # -- the loop ---------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None and not self._stopping:
                t = threading.Thread(target=self._loop, name=f"netpoll-{self.name}", daemon=True)
                t.start()
                self._thread = t

    def _loop(self) -> None:
        table = self.table
        monotonic = time.monotonic
        while not self._stopping:
            timeout = self._run_timers(monotonic())
            events = table.netpoll(timeout)
            with self._lock:
                self._sleep_until = 0.0
                self._break_pending = False
            for token, mode in events:
                pd, seq = token
                if pd.fdseq == seq:  # an event for a closed, reused fd is dropped
                    pd.ready(mode)

    def stop(self) -> None:
        """Stop the loop thread and wait for it (used on backend switch and fork)."""
        self._stopping = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self.table.netpollbreak()
            thread.join()
        self._thread = None

    @property
    def running(self) -> bool:
        """True while the loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()
