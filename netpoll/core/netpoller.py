"""The poll loop: netpoll, netpollready, deadline timers, netpollBreak.

Go's scheduler calls ``netpoll(delay)`` from ``findrunnable`` and ``sysmon``
(``runtime/proc.go``), with ``delay`` up to the next timer, and readies the
goroutines ``netpollready`` collected.  Any M may be the one that polls.  Our
Gs are threads, and exactly one thread at a time holds the *poll role*:

* the loop thread of this :class:`NetPoller` (started lazily on the first
  registration, Go's ``serverInit.Do``) while rounds are busy (each wakes
  several threads): it polls, runs deadline timers and wakes each parked
  thread through that thread's wake channel (:mod:`netpoll.core.waiter`);
* a parking thread itself when nobody holds the role (a *solo leader*): one
  busy connection next to an idle accept loop, or a bulk transfer, then waits
  in the backend's ``netpoll`` directly and is woken by the kernel, with no
  handoff through another thread.

The role moves by these rules, each there for a measured reason:

* the loop thread steps down after a quiet round (at most one thread woken),
  so the next thread that parks polls for itself (and runs the timers: a
  pending deadline does not keep the role, or any server using deadlines
  would never get a solo leader);
* a leader that is readied by its own event leaves the role free and goes
  back to its I/O; it will most likely park again and take it back;
* a leader whose round woke *other* threads and not itself steps down and
  parks as an ordinary waiter (polling is their work now); if the round woke
  two or more, it hands the role to the loop thread, because a role that
  moves from thread to thread costs more than one thread waking many (the
  full leader/follower we measured first lost 10-30% at 100 and 1000
  connections that way);
* while threads are parked or timers pending and the role is free, the loop
  thread wakes every :data:`SYSMON_TICK` (Go's sysmon) and takes the role if
  nobody took it since the last tick, so a leader that never comes back
  strands nobody and a timer fires at most two ticks (10 ms) late.

Nothing is lost while nobody polls: edge-triggered events stay queued in the
kernel until the next ``netpoll``, and level-triggered backends report what
is armed whenever they are next polled.  The count of parked threads is taken
when a G is published in a semaphore and dropped by whoever takes it out.

A round of polling:

1. fire every due deadline timer (``netpolldeadlineimpl``);
2. block in the backend's ``netpoll`` until the earliest timer;
3. for each event, drop it if its token's generation is stale, else wake the
   waiters (``netpollready``).

Timers live in a heap with lazy deletion: a deadline change pushes a new timer
and bumps the pollDesc's sequence number, so the old one becomes a no-op when
it pops.  A timer earlier than the poller's current sleep interrupts the sleep
with ``netpollbreak`` (coalesced, like Go's ``netpollWakeSig``).
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


#: The poll role's holder when it is the loop thread.
_LOOP = "loop"

#: How often the loop thread checks a free role while threads are parked or
#: timers pending (Go's sysmon polls the network if nobody has for 10 ms).
#: Not shorter than CPython's GIL switch interval (5 ms): a leader that was
#: just readied may wait that long for the GIL before it parks again and
#: takes the role back, and a tick shorter than that kept stealing the role
#: from it (seen as a test that never saw a solo leader on a loaded run).
SYSMON_TICK = 0.005


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
        # The poll role (under _lock): _LOOP, a leading ThreadG, or None.
        self._leader: object = None
        #: Gs published in a semaphore and not yet taken out (under _lock).
        self._parked = 0
        # The loop thread sleeps on this while it does not hold the role.
        self._loop_sema = allocate_lock()
        self._loop_sema.acquire()
        self._loop_asleep = False
        self._loop_ticking = False
        # Bumped whenever a G takes the role: the loop's sysmon tick takes a
        # free role only if nobody took it since the previous tick.
        self._lead_epoch = 0

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
            # Nobody polls, so nobody would run the timer: the loop takes the role.
            start_loop = self._leader is None and self._claim_for_loop_locked()
        if wake:
            self.table.netpollbreak()
        if start_loop:
            self._loop_sema.release()

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

    def _claim_for_loop_locked(self) -> bool:
        """Give the role to the loop thread; True if the caller must wake it."""
        self._leader = _LOOP
        asleep = self._loop_asleep
        self._loop_asleep = False
        return asleep

    def _poll_round(self) -> int:
        """Fire due timers, then poll once; returns how many Gs were woken."""
        return self._poll_events(self._run_timers(time.monotonic()))

    def _poll_events(self, timeout: float | None) -> int:
        """Poll once and wake the waiters of what was reported."""
        events = self.table.netpoll(timeout)
        woken = 0
        for token, mode in events:
            pd, seq = token
            if pd.fdseq == seq:  # an event for a closed, reused fd is dropped
                woken += pd.ready(mode)
        with self._lock:
            # Reset after the wakeups: a timer added meanwhile at worst sent
            # one needless break, and the next round recomputes the sleep.
            self._sleep_until = 0.0
            self._break_pending = False
            self._parked -= woken
        return woken

    def _loop(self) -> None:
        lock = self._lock
        seen_epoch = -1
        while not self._stopping:
            with lock:
                leader = self._leader
                # Parked threads or timers whose role nobody took for a whole
                # tick (sysmon): poll and run the timers for them.
                if (
                    leader is None
                    and (self._parked or self._timers)
                    and self._lead_epoch == seen_epoch
                ):
                    leader = self._leader = _LOOP
                seen_epoch = self._lead_epoch
                if leader is not _LOOP:
                    self._loop_asleep = True
                    # Tick while anyone is parked or a timer is pending: a
                    # solo leader that left the role may not come back.
                    ticking = self._loop_ticking = bool(self._parked or self._timers)
            if leader is not _LOOP:
                if ticking:
                    woke = self._loop_sema.acquire(timeout=SYSMON_TICK)
                else:
                    woke = self._loop_sema.acquire()
                if not woke:
                    with lock:
                        if self._loop_asleep:
                            self._loop_asleep = False
                        else:  # handed the role just as the tick expired
                            self._loop_sema.acquire()
                continue
            woken = self._poll_round()
            with lock:
                # A quiet round (at most one thread woken): step down, so the
                # next thread that parks polls for itself.  A busy one: keep
                # the role, one thread waking many is cheaper than the role
                # moving between them.
                # Pending timers do not keep the role: a leader runs them
                # too, and the tick takes a free role back for them.
                if woken <= 1 and self._leader is _LOOP:
                    self._leader = None
                    # Give a parking thread a whole tick to take it before
                    # the sysmon check may take it back.
                    seen_epoch = -1

    # -- the solo leader ----------------------------------------------------

    def try_lead(self, g: ThreadG) -> bool:
        """Count ``g`` as parked; make it the poller if nobody holds the role.

        Called under the pollDesc's lock right after ``g`` was published, so
        no notifier can reach ``g`` before it knows whether it leads.
        """
        with self._lock:
            self._parked += 1
            if g.no_lead:  # it just stepped down: someone else polls next
                g.no_lead = False
                return False
            if self._leader is not None or self._stopping:
                return False
            self._leader = g
            self._lead_epoch += 1
        g.lead_poller = self
        return True

    def lead(self, g: ThreadG) -> bool:
        """Poll for everyone until ``g`` is readied or should step down.

        Returns True when ``g`` was readied.  False means a round woke other
        threads and not ``g``: polling is then their work, not solo work, so
        ``g`` gives the role up (to the loop thread if the round woke two or
        more) and goes back to an ordinary park.
        """
        busy = False
        woken_self = False
        try:
            while True:
                timeout = self._run_timers(time.monotonic())
                if g.woken:  # by one of those timers: its deadline passed
                    break
                woken = self._poll_events(timeout)
                if g.woken:
                    break
                if woken:
                    busy = woken >= 2
                    break
        finally:
            woken_self = g.stop_leading()
            with self._lock:
                self._leader = None
                wake_loop = False
                if busy:
                    wake_loop = self._claim_for_loop_locked()
                elif (
                    (self._parked or self._timers) and self._loop_asleep and not self._loop_ticking
                ):
                    # Threads parked behind us (or timers) and the loop sleeps
                    # without a tick: make it watch the role we leave free.
                    self._loop_asleep = False
                    wake_loop = True
            if wake_loop:
                self._loop_sema.release()
        return woken_self

    def interrupt(self) -> None:
        """Wake whoever sits in ``netpoll`` (a leader readied from another thread)."""
        with self._lock:
            if self._break_pending:
                return
            self._break_pending = True
        self.table.netpollbreak()

    def readied(self) -> None:
        """A parked G was taken out of its semaphore (by readiness, deadline or close)."""
        with self._lock:
            self._parked -= 1

    def stop(self) -> None:
        """Stop the loop thread and wait for it (used on backend switch and fork)."""
        self._stopping = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            with self._lock:
                wake_loop = self._loop_asleep
                self._loop_asleep = False
            if wake_loop:
                self._loop_sema.release()
            self.table.netpollbreak()
            thread.join()
        self._thread = None

    @property
    def running(self) -> bool:
        """True while the loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()
