"""An M: one scheduler thread and its loop (Go's ``proc.go`` schedule, ``time.go``, ``netpoll.go``).

An M is an OS thread running :meth:`M.schedule`, the scheduler loop, in its
hub greenlet: it runs ready Gs in FIFO order, and a G that would block
switches back to the hub (gevent's rule: switches go only to and from the
hub).  A greenlet never changes threads, so each M owns its own poller
instance of the selected backend and its own timer heap, and the hot path
never crosses threads.  The M polls without blocking every
:data:`POLL_EVERY_TICKS` runs while its run queue is busy (Go checks every
61 schedule ticks), and blocks in the poller until its next timer when the
queue is empty.  Work handed over from other threads (a G readied there, a
timer added there) goes through the M's injection queue plus
``netpollbreak``.

This module holds the M alone: which Ms exist, how they start and how a
fork or the interpreter's exit ends them is :mod:`netpoll.core.procs`; the
G kinds are :mod:`netpoll.core.g`.  The M does not look inside poller
tokens: :func:`set_event_delivery` installs ``polldesc.netpollready``,
which turns a poll's events into ready Gs.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import greenlet

from netpoll.core.hookspecs import MODE_R, MODE_W, Poller
from netpoll.core.runtime import runtime

if TYPE_CHECKING:
    from netpoll.core.g import GreenletG

#: While the run queue is busy, poll (without blocking) every this many runs.
POLL_EVERY_TICKS = 61
#: At the end of an M, how many non-blocking polls the last Gs may take to finish.
DRAIN_POLLS = 1000

_table = runtime.table
_monotonic = time.monotonic
_get_ident = threading.get_ident
_getcurrent = greenlet.getcurrent
GreenletExit = greenlet.GreenletExit


class _EventDelivery:
    """Where a poll's events go: ``polldesc.netpollready``, set by that module.

    The scheduler does not look inside poller tokens; the pollDesc layer
    turns ``(token, modes)`` pairs into ready Gs.
    """

    __slots__ = ("deliver",)

    def __init__(self) -> None:
        self.deliver: Callable[[Sequence[tuple[Any, int]], M], None] = _no_delivery


def _no_delivery(events: Sequence[tuple[Any, int]], m: M) -> None:
    raise RuntimeError("netpoll: netpoll.core.polldesc is not loaded")


_events = _EventDelivery()


def set_event_delivery(deliver: Callable[[Sequence[tuple[Any, int]], M], None]) -> None:
    """Install the function that turns a poll's ``(token, modes)`` events into ready Gs."""
    _events.deliver = deliver


class _TimerRequest:
    """A timer added from another thread, handed over through the injection queue."""

    __slots__ = ("arg", "fn", "when")

    def __init__(self, when: float, fn: Callable[[Any], None], arg: Any) -> None:
        self.when = when
        self.fn = fn
        self.arg = arg


class M:
    """A scheduler thread: run queue, injection queue, timers and its own poller."""

    # Slots: the compiled build makes M an extension type (m.pxd lists the same fields).
    __slots__ = (
        "__weakref__",
        "_backend_generation",
        "_poll_failures",
        "_timer_ids",
        "edge_triggered",
        "exited",
        "go_procs",
        "gs",
        "hub",
        "ident",
        "inject",
        "main_g",
        "name",
        "pds",
        "poller",
        "polls",
        "running",
        "runq",
        "sleeping",
        "stopping",
        "switches",
        "thread",
        "ticks",
        "timers",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.ident = -1
        # Replaced by bind() in the M's own thread.
        self.hub: greenlet.greenlet = _getcurrent()
        self.runq: deque[GreenletG] = deque()
        #: Gs readied and timers added from other threads (deque ops are atomic).
        self.inject: deque[GreenletG | _TimerRequest] = deque()
        self.timers: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._timer_ids = itertools.count()
        self.poller: Poller | None = None
        self.edge_triggered = True
        self._backend_generation = -1
        #: True while blocked in the poller: a waker must netpollbreak.
        self.sleeping = False
        #: Live goroutines of this M.
        self.gs: set[GreenletG] = set()
        #: PollDescs registered with this M's poller.
        self.pds: set[Any] = set()
        self.main_g: GreenletG | None = None
        self.ticks = 0
        #: The G running now (sysmon reads it) and how many switches so far.
        self.running: GreenletG | None = None
        self.switches = 0
        self.stopping = False
        self.exited = False
        #: The thread of a background M (None for an M of run()).
        self.thread: threading.Thread | None = None
        #: Consecutive failed polls (see _poll_failed).
        self._poll_failures = 0
        #: Polls so far (sysmon's starvation report, netpoll.core.starvation).
        self.polls = 0
        #: NETPOLL_PROCS read at this M's first ``go`` (sched.go; None: not yet).
        self.go_procs: int | None = None

    def __repr__(self) -> str:
        return f"<M {self.name} gs={len(self.gs)}>"

    def is_main(self, g: GreenletG) -> bool:
        """True for the G that :func:`run` started (its exception is run's)."""
        return g is self.main_g

    # -- from any thread -------------------------------------------------------

    def inject_g(self, g: GreenletG | _TimerRequest) -> None:
        """Hand work to this M from another thread; wake it if it sleeps."""
        self.inject.append(g)
        # Order matters: the M sets ``sleeping`` and then looks at the
        # queue; we append and then look at ``sleeping``.  One of the two
        # sees the other.
        if self.sleeping:
            self.wake()

    def stop(self) -> None:
        """Ask this M's loop to return once it has nothing left to run (any thread)."""
        self.stopping = True
        # The same handshake as inject_g's, with ``stopping`` for the queue:
        # we set ``stopping`` and then look at ``sleeping``; the loop sets
        # ``sleeping`` and then looks at ``stopping`` again before it polls.
        # One of the two sees the other, so the loop either returns without
        # sleeping or is woken out of its poller here.
        if self.sleeping:
            self.wake()

    def wake(self) -> None:
        """``netpollbreak`` this M's poller (any thread): a sleeping M looks again.

        Clearing ``sleeping`` first spares later wakers a second break; the
        break itself is issued anyway, so an M that set ``sleeping`` a moment
        later still returns from its poll.
        """
        self.sleeping = False
        poller = self.poller
        if poller is not None:
            try:
                _table.netpollbreak(poller)
            except (OSError, RuntimeError):
                pass  # shutting down

    def add_timer(self, when: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Call ``fn(arg)`` on this M at monotonic time ``when``."""
        if self.ident == _get_ident():
            heapq.heappush(self.timers, (when, next(self._timer_ids), fn, arg))
        else:
            self.inject_g(_TimerRequest(when, fn, arg))

    def spawn(self, g: GreenletG) -> None:
        """Make a new G runnable here."""
        self.gs.add(g)
        g.ready()

    def g_exited(self, g: GreenletG) -> None:
        """Called by a G as it finishes."""
        self.gs.discard(g)

    def register_pd(self, pd: Any) -> None:
        """Register ``pd``'s fd with this M's poller (``pd.lock`` held; Go's netpollopen).

        Raises the backend's :class:`OSError` (``EPERM``: not pollable).
        The first fd after a backend switch goes to a poller of the new
        backend: the M replaces its poller here, on its own thread, if it has
        not polled since the switch (a G it was handed runs before its next
        poll), since an M keeps its poller while fds are registered with it.
        """
        if (
            runtime.backend_generation != self._backend_generation
            and not self.pds
            and self.ident == _get_ident()
        ):
            self._ensure_poller()
        poller = self.poller
        if _table.netpollopen_direct and poller is not None:
            poller.netpollopen(pd.fd, pd.token)  # what the table's forwarder does
        else:
            _table.netpollopen(poller, pd.fd, pd.token)
        pd.m = self
        self.pds.add(pd)

    def unregister_pd(self, pd: Any) -> None:
        """Take ``pd``'s fd off this M's poller (its close, or this M going away)."""
        self.pds.discard(pd)
        poller = self.poller
        if poller is not None:
            try:
                if _table.netpollclose_direct:
                    poller.netpollclose(pd.fd)  # what the table's forwarder does
                else:
                    _table.netpollclose(poller, pd.fd)
            except (OSError, RuntimeError, ValueError):
                if not self.exited:
                    raise

    # -- the loop (this M's thread only) ----------------------------------------

    def bind(self) -> None:
        """Make the calling thread this M: its hub and its poller.

        :func:`netpoll.core.procs.register_m` then makes it one of the process's Ms.
        """
        self.ident = _get_ident()
        self.hub = _getcurrent()
        self._ensure_poller()

    def _ensure_poller(self) -> None:
        gen = runtime.backend_generation
        if self.poller is not None and self._backend_generation == gen:
            return
        if self.poller is not None:
            if self.pds:
                return  # keep the old backend while fds are registered with it
            self._close_poller()
        spec = runtime.spec()
        poller = spec.create()
        try:
            _table.netpollinit(poller)
        except BaseException:
            poller.shutdown()
            raise
        self.poller = poller
        self.edge_triggered = spec.edge_triggered
        self._backend_generation = gen

    def _close_poller(self, *, forked: bool = False) -> None:
        poller, self.poller = self.poller, None
        self.sleeping = False
        if poller is not None:
            try:
                poller.shutdown()  # closes descriptors only: no EPOLL_CTL_DEL, no wakeup
            except (OSError, RuntimeError, ValueError):
                if not forked:
                    raise

    def schedule(self, until: GreenletG | None = None, *, drain: bool = False) -> None:
        """The scheduler loop: run Gs until ``until`` has finished (None: until stopped).

        With ``drain`` (the end of an M, :meth:`kill_all`) it never blocks:
        it returns as soon as nothing is runnable after a non-blocking poll,
        or after :data:`DRAIN_POLLS` such polls.
        """
        runq = self.runq
        inject = self.inject
        drain_polls = 0
        while True:
            if inject:
                self._take_injected()
            if runq:
                self.ticks += 1
                if self.ticks % POLL_EVERY_TICKS == 0:
                    # A busy queue must not starve the poller or the timers.
                    self._run_timers()
                    self._poll(0.0)
                g = runq.popleft()
                if g.dead:
                    continue
                self.running = g
                self.switches += 1
                g.switch()
                self.running = None
                if until is not None and until.dead:
                    return
                continue
            timeout = self._run_timers()
            if runq or inject:
                continue
            if drain:
                drain_polls += 1
                if drain_polls > DRAIN_POLLS:
                    return
                self._poll(0.0)
                if runq or inject:
                    continue
                return
            if self.stopping:
                return
            self.sleeping = True
            # After ``sleeping``, look at the queue and ``stopping`` again:
            # inject_g and stop() set theirs first and then look at ``sleeping``.
            if inject or self.stopping:
                self.sleeping = False
                continue
            self._poll(timeout)
            self.sleeping = False

    def _take_injected(self) -> None:
        inject = self.inject
        runq = self.runq
        timers = self.timers
        while inject:
            item = inject.popleft()
            if type(item) is _TimerRequest:
                heapq.heappush(timers, (item.when, next(self._timer_ids), item.fn, item.arg))
            else:
                runq.append(item)  # type: ignore[arg-type]

    def _run_timers(self) -> float | None:
        """Fire due timers; seconds until the next one (None: no timers)."""
        timers = self.timers
        if not timers:
            return None
        now = _monotonic()
        while timers:
            when = timers[0][0]
            if when > now:
                return when - now
            _, _, fn, arg = heapq.heappop(timers)
            fn(arg)
        return None

    def _poll(self, timeout: float | None) -> None:
        """One round of the poller: wait up to ``timeout``, ready what it reports."""
        if runtime.backend_generation != self._backend_generation:
            self._ensure_poller()
            if timeout is None or timeout > 0.0:
                # Replacing the poller cleared ``sleeping``, and a waker
                # meanwhile found no poller, or the old one, to break: redo
                # the handshake of schedule() on the new poller before
                # blocking on it (a waker appends, then looks at ``sleeping``).
                self.sleeping = True
                if self.inject or self.stopping:
                    timeout = 0.0
        try:
            poller = self.poller
            if _table.netpoll_direct and poller is not None:
                events = poller.netpoll(timeout)
            else:
                events = _table.netpoll(self.poller, timeout)
        except Exception as exc:
            self._poll_failed(exc)
            return
        self._poll_failures = 0
        self.polls += 1
        if events:
            _events.deliver(events, self)

    def _poll_failed(self, exc: Exception) -> None:
        """The poller raised: nobody may be left parked on what it would report.

        Every G parked on an fd of this M gets a spurious wakeup (it retries
        its system call and parks again), the failure is reported once per
        run of failures, and the M backs off a little before it polls again,
        so a poller that keeps failing costs little CPU instead of a hang.
        """
        self._poll_failures += 1
        if self._poll_failures == 1:
            warnings.warn(
                RuntimeWarning(
                    f"netpoll: the poller of {self.name} failed "
                    f"({type(exc).__name__}: {exc}); parked goroutines retry"
                ),
                stacklevel=1,
            )
        for pd in list(self.pds):
            pd.ready(MODE_R | MODE_W)
        time.sleep(min(0.1, 0.001 * (1 << min(self._poll_failures, 7))))

    # -- the end of an M ----------------------------------------------------------

    def kill_all(self) -> None:
        """Throw GreenletExit into every live G so its finally blocks run.

        Runs them until they finish or park for good (a bounded number of
        rounds); a G still parked afterwards is abandoned.
        """
        for _ in range(3):
            gs = [g for g in self.gs if not g.dead]
            if not gs:
                break
            for g in gs:
                if not g.dead:
                    self.running = g
                    try:
                        if g:  # started: raise GreenletExit where it is parked
                            g.throw(GreenletExit)
                        else:  # not started: run() must still run its finally
                            g.kill_requested = True
                            g.switch()
                    finally:
                        self.running = None
            # Let the Gs that parked in their cleanup run to the end.
            self.schedule(drain=True)

    def release(self, *, forked: bool = False) -> None:
        """The one teardown of an M's poller side: every fd off it, the poller closed.

        At the end of the M (:func:`netpoll.core.procs.retire_m`): Gs of other
        Ms parked on its fds get a spurious wakeup; they retry and, parking
        again, register the fd with their own M.  In a forked child
        (``forked``, :mod:`netpoll.core.forking`) the poller and the fds are
        the parent's too: the registrations are only forgotten (no
        ``EPOLL_CTL_DEL``, the pollDescs are reset there), the child's copy of
        the poller is closed, and a failing close is ignored.
        """
        if not forked:
            self.exited = True
            for pd in list(self.pds):
                pd.detach(self)
        self.pds.clear()
        self._close_poller(forked=forked)


__all__ = ["DRAIN_POLLS", "POLL_EVERY_TICKS", "M", "set_event_delivery"]
