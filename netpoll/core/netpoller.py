"""The poll loop: netpoll, netpollready, deadline timers, netpollBreak.

Go's scheduler polls the network from whichever M has nothing to run
(``findrunnable`` in ``runtime/proc.go``), and ``sysmon`` polls when nobody
has for a while.  Our Gs are threads, and the same idea applies as a
*leader/follower* scheme:

* A thread about to park that finds nobody polling becomes the **leader**: it
  runs ``netpoll`` itself (until the next timer), readies the waiters the
  events belong to (``netpollready``), and keeps polling until its own
  semaphore is released.  When its own fd is ready it needs no handoff: one
  thread wakeup per event, as with blocking sockets.
* A thread that finds a leader in place is a **follower** and blocks on its
  own semaphore until the leader (or a deadline, or close) readies it.
* A **sysmon** thread, started lazily on the first registration (Go's
  ``serverInit.Do``), polls when followers wait and no leader is left, and
  fires deadline timers when nobody else is polling.

Waking a leader from another thread (its deadline moved into the past, its fd
closed) breaks its poll with ``netpollbreak``.  Timers live in a heap with
lazy deletion: a deadline change pushes a new timer and bumps the pollDesc's
sequence number, so the old entry is a no-op when it pops.  A timer earlier
than the current poll's sleep breaks it (coalesced, like ``netpollWakeSig``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from _thread import allocate_lock
from typing import TYPE_CHECKING

from netpoll.core.hookspecs import BackendSpec
from netpoll.core.polldesc import PollCache, PollDesc
from netpoll.core.waiter import ThreadG

if TYPE_CHECKING:
    from netpoll.core.plugins import SyscallTable

#: How long sysmon leaves the role free after a round of its own, so that a
#: thread it just readied can come back and lead (Go's sysmon starts at 20 us
#: and backs off; the figure only matters while followers wait).
_SYSMON_YIELD = 0.001


class NetPoller:
    """One active backend, its timers, and the leader/follower poll role."""

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
        # Guards the fields below; never held across a poll or a park.
        self._lock = threading.Lock()
        self._leading = False  # someone holds the poll role
        self._followers = 0  # threads parked while someone else polls
        # When the current poll wakes by itself; an earlier timer breaks it.
        # 0.0 while the role holder is awake (it looks at timers anyway).
        self._sleep_until = 0.0
        self._break_pending = False
        # sysmon sleeps on this lock (held = asleep) until signalled.
        self._sysmon_sema = allocate_lock()
        self._sysmon_sema.acquire()
        self._sysmon_signalled = False
        self._sysmon_until = math.inf
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

    # -- parking: leader or follower -----------------------------------------

    def park(self, g: ThreadG) -> None:
        """Block ``g``'s thread until it is readied, polling if nobody else is."""
        sema = g.sema
        if sema.acquire(False):
            return  # readied before we got here
        with self._lock:
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                self._followers += 1
        if not lead:
            sema.acquire()
            with self._lock:
                self._followers -= 1
            return
        # Invariant: ``polling`` is set before the first check of ``sema``,
        # so a ready() from another thread either is seen by that check or
        # sees us polling and breaks the poll.
        g.polling = self
        try:
            while not sema.acquire(False):
                self._poll_once(g)
        finally:
            g.polling = None
            self._give_up_role()

    def wake_leader(self) -> None:
        """Break the leader's poll: its own G was readied by another thread."""
        self.table.netpollbreak()

    def _give_up_role(self) -> None:
        with self._lock:
            self._leading = False
            # Followers wait for events, or timers wait to fire: sysmon
            # takes over unless a thread parks and leads first.
            signal = (self._followers > 0 or bool(self._timers)) and not self._sysmon_signalled
            if signal:
                self._sysmon_signalled = True
        if signal:
            self._sysmon_sema.release()

    def _poll_once(self, g: ThreadG | None) -> int:
        """One round as role holder: timers, netpoll, netpollready.

        ``g`` is the leader's own G (None for sysmon).  Returns how many
        events were delivered.
        """
        timeout = self._run_timers(time.monotonic())
        if g is not None and not g.sema.locked():
            # A timer just readied the leader itself: blocking in netpoll now
            # would sleep on a wakeup nobody will break.
            return 0
        events = self.table.netpoll(timeout)
        with self._lock:
            self._sleep_until = 0.0
            self._break_pending = False
        for token, mode in events:
            pd, seq = token
            if pd.fdseq == seq:  # an event for a closed, reused fd is dropped
                pd.ready(mode)
        return len(events)

    # -- timers -----------------------------------------------------------

    def add_timer(self, when: float, pd: PollDesc, mode: int, seq: int) -> None:
        """Arm a deadline timer; wake whoever sleeps past it."""
        with self._lock:
            heapq.heappush(self._timers, (when, next(self._timer_ids), pd, mode, seq))
            brk = when < self._sleep_until and not self._break_pending
            if brk:
                self._break_pending = True
            wake_sysmon = (
                not self._leading and when < self._sysmon_until and not self._sysmon_signalled
            )
            if wake_sysmon:
                self._sysmon_signalled = True
        if brk:
            self.table.netpollbreak()
        if wake_sysmon:
            self._sysmon_sema.release()

    def _run_timers(self, now: float) -> float | None:
        """Fire due timers; return seconds until the next one (None: no timers).

        Called by the role holder only; records its sleep target.
        """
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

    # -- sysmon ---------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None and not self._stopping:
                t = threading.Thread(target=self._sysmon, name=f"netpoll-{self.name}", daemon=True)
                t.start()
                self._thread = t

    def _sysmon(self) -> None:
        """Poll for followers when no leader is left; fire timers when idle."""
        monotonic = time.monotonic
        while not self._stopping:
            now = monotonic()
            with self._lock:
                due = bool(self._timers) and self._timers[0][0] <= now
                lead = not self._leading and (self._followers > 0 or due)
                if lead:
                    self._leading = True
                    self._sysmon_until = math.inf
                elif self._leading:
                    # The leader runs timers and is broken for earlier ones;
                    # it signals us when it gives up the role.
                    nxt = math.inf
                    self._sysmon_until = nxt
                else:
                    nxt = self._timers[0][0] if self._timers else math.inf
                    self._sysmon_until = nxt
            if lead:
                try:
                    delivered = self._poll_once(None)
                finally:
                    with self._lock:
                        self._leading = False
                if delivered:
                    # Leave the role free for a moment: a thread just readied
                    # will park again soon and can lead without a handoff.
                    time.sleep(_SYSMON_YIELD)
                continue
            timeout = -1.0 if nxt == math.inf else max(nxt - now, 0.0)
            self._sysmon_sema.acquire(True, timeout)
            with self._lock:
                if self._sysmon_signalled:
                    self._sysmon_signalled = False
                    if not self._sysmon_sema.acquire(False):
                        # released after our timeout: nothing more to consume
                        pass

    def stop(self) -> None:
        """Stop sysmon and wait for it (used on backend switch and fork)."""
        self._stopping = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            with self._lock:
                signal = not self._sysmon_signalled
                self._sysmon_signalled = True
            if signal:
                self._sysmon_sema.release()
            self.table.netpollbreak()
            thread.join()
        self._thread = None

    @property
    def running(self) -> bool:
        """True while the sysmon thread is alive."""
        return self._thread is not None and self._thread.is_alive()
