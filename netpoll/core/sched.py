"""The scheduler: Ms, Gs, run queues, timers, polling and sysmon (Go's ``runtime/proc.go``).

This module is the one owner of *who runs* and *who polls*.  A pollDesc
(:mod:`netpoll.core.polldesc`) only publishes a parked G in its semaphore and
parks it; everything about how a G sleeps and who wakes it is here.

Two kinds of G:

:class:`GreenletG` (a goroutine)
    a greenlet on an M.  An M is an OS thread running :meth:`M.schedule`, the
    scheduler loop, in its hub greenlet: it runs ready Gs in FIFO order, and
    a G that would block switches back to the hub (gevent's rule: switches go
    only to and from the hub).  A greenlet never changes threads, so each M
    owns its own poller instance of the selected backend and its own timer
    heap, and the hot path never crosses threads.  The M polls without
    blocking every :data:`POLL_EVERY_TICKS` runs while its run queue is busy
    (Go checks every 61 schedule ticks), and blocks in the poller until its
    next timer when the queue is empty.  An fd is registered with the poller
    of the first M one of whose Gs parks on it; a G of another M parked on
    the same fd is woken through its own M's injection queue plus
    ``netpollbreak``.
:class:`ThreadG`
    a plain thread calling the API: Go's "M blocked in a syscall", a G that
    is its own M.  It parks by waiting in the kernel on its own fd plus its
    wake descriptor (:mod:`netpoll.core.wakefd`) through the backend's
    ``netpollwait`` hook, so the chosen backend and fault injection still
    apply.  A close or deadline change from another thread makes the wake
    descriptor readable.  A thread that could not get a wake descriptor
    (past the fd budget) parks on a lock, and its fd is polled by a scheduler
    M (:func:`thread_poll_m`) like a goroutine's.

Every G offers the same three operations to park sites (pollDesc, channels,
semaphores): ``ready()`` from any thread, ``park(deadline)`` to sleep until
readied (or the monotonic ``deadline`` passed), and the ``woken``/``ioready``
flags a waker sets under the park site's lock.  A park may return spuriously
(a late wakeup of an earlier, abandoned park): every park site loops on its
own state.

sysmon, a daemon thread started with the first M, reports a goroutine that
has held its M for longer than :data:`HOG_REPORT_SECONDS` without parking:
Python cannot preempt a greenlet, so the report (once per G, with its stack)
is what there is.  It also reports an M starved of its poller by several
goroutines in turn (:mod:`netpoll.core.starvation`) and a run whose
goroutines can never be woken again (:mod:`netpoll.core.deadlock`).
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import os
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import greenlet

from netpoll.core import deadlock, forking, interrupt, starvation
from netpoll.core.errors import PollRegistrationError
from netpoll.core.hookspecs import MODE_R, MODE_W, MODE_WAKE, Poller
from netpoll.core.runtime import runtime
from netpoll.core.wakefd import WakeFd, wake_fds

if TYPE_CHECKING:
    import weakref

    from netpoll.core.goroutine import Goroutine

T = TypeVar("T")
P = ParamSpec("P")

#: While the run queue is busy, poll (without blocking) every this many runs.
POLL_EVERY_TICKS = 61
#: sysmon reports a G that held its M this long without parking.
HOG_REPORT_SECONDS = 0.1
#: How often sysmon looks.
SYSMON_TICK = 0.02
#: Environment variable: how many scheduler Ms :func:`go` spreads Gs over.
ENV_PROCS = "NETPOLL_PROCS"
#: Environment variable: the size of the :func:`blocking` thread pool.
ENV_BLOCKING_THREADS = "NETPOLL_BLOCKING_THREADS"

_table = runtime.table
_monotonic = time.monotonic
_get_ident = threading.get_ident
_getcurrent = greenlet.getcurrent
GreenletExit = greenlet.GreenletExit


class GoroutineHogWarning(RuntimeWarning):
    """A goroutine ran for too long without parking and held up its M."""


class StarvationWarning(GoroutineHogWarning):
    """An M did not reach its poller for too long, held by several goroutines in turn."""


# --------------------------------------------------------------------------
# Gs
# --------------------------------------------------------------------------


class GreenletG(greenlet.greenlet):
    """A goroutine: a greenlet that runs on one M for its whole life.

    The runtime's object; users hold a :class:`netpoll.core.goroutine.Goroutine`
    handle wrapping it (``netpoll.go`` returns one).
    """

    # Slots, not the instance dict: an idle goroutine per connection is
    # what a server holds by the thousand.
    __slots__ = (
        "_args",
        "_done",
        "_finished",
        "_fn",
        "_gid",
        "_kwargs",
        "_qualname",
        "collectors",
        "exception",
        "handle",
        "hog_reported",
        "ioready",
        "kill_requested",
        "killed",
        "m",
        "parkseq",
        "value",
        "woken",
    )

    def __init__(
        self, m: M, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        super().__init__(parent=m.hub)
        self.m = m
        self._gid = next(_gids)
        self._qualname: str = getattr(fn, "__qualname__", None) or repr(fn)
        self.ioready: bool = False
        self.woken = False
        self.parkseq = 0
        self.hog_reported = False
        #: Set by M.kill_all for a G that never started (a throw would skip run()).
        self.kill_requested = False
        self.exception: BaseException | None = None
        self.value: Any = None
        #: Set when GreenletExit ended the G (killed: no value, no exception).
        self.killed = False
        #: result()/exception() calls waiting now: their exception is not reported
        #: (netpoll.core.goroutine documents the rule).
        self.collectors = 0
        #: Weak reference to the public handle (netpoll.core.goroutine.handle_of).
        self.handle: weakref.ref[Goroutine[Any]] | None = None
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        #: True once the function has left; the note exists only while
        #: someone joins (both under _done_lock).
        self._finished = False
        self._done: Note | None = None

    @property
    def name(self) -> str:
        """``G<n>:<function>``, as tracebacks and reports name the goroutine."""
        return f"G{self._gid}:{self._qualname}"

    #: A goroutine's wait is its M's poller, never the kernel on one fd.
    waits_in_kernel = False

    def run(self) -> None:
        """The greenlet body: call the function, report what escapes it."""
        try:
            if self.kill_requested:  # killed before it ever ran
                raise GreenletExit
            self.value = self._fn(*self._args, **self._kwargs)
        except GreenletExit:
            self.killed = True  # killed at the end of run(): its finally blocks have run
        except BaseException as exc:
            self.exception = exc
            if not self.m.is_main(self) and not self.collectors:
                report_exception(self, exc)
        finally:
            self._fn = self._args = self._kwargs = None  # type: ignore[assignment]
            self.m.g_exited(self)
            with _done_lock:
                self._finished = True
                note = self._done
            if note is not None:
                note.wakeup()

    # -- what park sites use -------------------------------------------------

    def ready(self) -> None:
        """Put this G on its M's run queue (goready); from any thread."""
        m = self.m
        if m.ident == _get_ident():
            m.runq.append(self)
        else:
            m.inject_g(self)

    def poke(self) -> None:
        """Nothing to do: a goroutine's timers live on its M (see ThreadG.poke)."""

    def park_io(self, pd: Any, mode: int) -> bool:
        """Sleep on ``pd`` until a notifier takes this G out (gopark + netpollblockcommit).

        Called by ``PollDesc.wait`` with ``pd.lock`` held and this G
        published in the semaphore; the commit (registration with this M's
        poller on the first park, the level-triggered arm, the deadline
        timer) happens under that lock, which is then released before the
        switch to the hub.  Returns the outcome the notifier left in
        :attr:`ioready`.
        """
        m = self.m
        # The common case needs no commit: the fd is registered with this M,
        # edge-triggered, and no deadline is set in this direction.
        if mode == MODE_R:
            d, armed = pd.rd, pd.rtimer
        else:
            d, armed = pd.wd, pd.wtimer
        if pd.m is not m or not m.edge_triggered or (d > 0 and (armed == 0 or d < armed)):
            try:
                arm_on(m, pd, mode)
            except BaseException:
                pd.unpublish_locked(self, mode)
                pd.lock.release()
                raise
        pd.lock.release()
        hub = m.hub
        try:
            while True:
                hub.switch()
                if self.woken:  # set by the notifier that took this G out
                    return self.ioready
        except BaseException:
            pd.abandon(self, mode)
            raise

    def deadline_moved(self, pd: Any, mode: int, d: float) -> None:
        """``pd``'s deadline moved while this G is parked (``pd.lock`` held): re-arm."""
        if d > 0 and pd.timer_due_locked(mode, d):
            self.m.add_timer(d, pd.deadline_fired, mode)

    def park(self, deadline: float | None = None) -> None:
        """Switch to the hub until readied or past ``deadline`` (gopark)."""
        m = self.m
        if deadline is None:
            m.hub.switch()
            return
        seq = self.parkseq
        m.add_timer(deadline, _park_timeout, (self, seq))
        try:
            m.hub.switch()
        finally:
            self.parkseq = seq + 1  # a late timer of this park is stale now

    # -- the handle ------------------------------------------------------------

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the G has finished; True if it has (False: timed out)."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"netpoll: negative timeout {timeout}")
        with _done_lock:
            if self._finished:
                return True
            note = self._done
            if note is None:
                note = self._done = Note()
        return note.wait(timeout)

    def done(self) -> bool:
        """True once the G has finished (returned, raised or was killed).

        The same moment :meth:`join` returns: set as the G's function has
        left, a moment before the greenlet itself is dead.
        """
        return self._finished or bool(self.dead)

    def __repr__(self) -> str:
        state = "done" if self.dead else "running"
        return f"<G {self.name} {state} on {self.m.name}>"


_gids = itertools.count(1)
#: Guards each G's finished flag and join note (a G's end and a join may race).
_done_lock = threading.Lock()


def _park_timeout(arg: tuple[GreenletG, int]) -> None:
    g, seq = arg
    if g.parkseq == seq and not g.dead:
        g.ready()


def arm_on(m: M, pd: Any, mode: int) -> None:
    """Commit a park on ``pd`` to ``m`` (``pd.lock`` held): what its poller and timers need.

    The fd is registered with ``m``'s poller the first time a G of ``m``
    parks on it (or when the M it was registered with went away) and stays
    there until close; a level-triggered poller gets the direction armed; a
    deadline gets a timer on ``m`` unless an earlier one is armed already.
    A G of another M parked on an fd registered here is readied through its
    own M's injection queue.
    """
    home = pd.m
    if home is None or home.exited:
        try:
            m.register_pd(pd)
        except OSError as exc:
            # Reported as a registration error, not as the operation's syscall.
            raise PollRegistrationError(exc) from exc
        home = m
    if not home.edge_triggered:
        _table.netpollarm(home.poller, pd.fd, mode)
    d = pd.rd if mode == MODE_R else pd.wd
    if d > 0 and pd.timer_due_locked(mode, d):
        m.add_timer(d, pd.deadline_fired, mode)


class ThreadG:
    """A plain thread as a G: parks in the kernel on its fd plus a wake fd.

    ``wake`` is None when the fd budget was exhausted: then the thread parks
    on ``_sema`` (a lock that starts held; a ``ready`` before the park leaves
    it free, so the wakeup is never lost) and :attr:`poll_m` names the
    scheduler M that polls its fds and runs its timers.
    """

    __slots__ = (
        "__weakref__",
        "_gen",
        "_sema",
        "ident",
        "ioready",
        "name",
        "poll_m",
        "wake",
        "woken",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.ident = _get_ident()
        self.ioready = False
        self.woken = False
        self._sema = threading.Lock()
        self._sema.acquire()
        self._gen = wake_fds.generation
        self.wake: WakeFd | None = wake_fds.get()
        self.poll_m: M | None = None if self.wake is not None else thread_poll_m()

    @property
    def wake_fd(self) -> int:
        """The wake descriptor to wait on, -1 without one."""
        if self._gen != wake_fds.generation:
            self._after_fork()
        w = self.wake
        return -1 if w is None else w.fd

    def _after_fork(self) -> None:
        # The parent's wake fd was closed in the child; take a fresh one.
        self._gen = wake_fds.generation
        self.wake = wake_fds.get()
        self.poll_m = None if self.wake is not None else thread_poll_m()

    def ready(self) -> None:
        """Wake the thread (from any thread)."""
        w = self.wake
        if w is not None:
            w.notify()
            return
        try:
            self._sema.release()
        except RuntimeError:
            pass  # already released: a wakeup is pending anyway

    def poke(self) -> None:
        """Make a thread parked in the kernel look at its pollDesc again.

        A deadline change: the thread recomputes how long it waits.  Threads
        on a lock have their timers on :attr:`poll_m` and need no poke.
        """
        w = self.wake
        if w is not None:
            w.notify()

    @property
    def waits_in_kernel(self) -> bool:
        """True when this thread waits in the kernel on the fd itself (it has a wake fd)."""
        return self.wake is not None or self._gen != wake_fds.generation

    def park_io(self, pd: Any, mode: int) -> bool:
        """Sleep on ``pd`` (called by ``PollDesc.wait`` with ``pd.lock`` held, G published).

        With a wake descriptor the thread waits in the kernel on the fd and
        its wake fd, its timeout computed from the deadline; a deadline
        change or close from another thread pokes the wake fd and the loop
        looks again.  Without one, the thread-poll M polls the fd and runs
        the deadline timer for it, and the thread blocks on its semaphore.
        """
        if self._gen != wake_fds.generation:
            self._after_fork()
        w = self.wake
        if w is None:
            m = self.poll_m
            assert m is not None
            try:
                arm_on(m, pd, mode)
            except BaseException:
                pd.unpublish_locked(self, mode)
                pd.lock.release()
                raise
            pd.lock.release()
            try:
                while True:
                    self._sema.acquire()
                    if self.woken:
                        return self.ioready
            except BaseException:
                pd.abandon(self, mode)
                raise
        pd.lock.release()
        read = mode == MODE_R
        fd = pd.fd
        wake_fd = w.fd
        try:
            while True:
                d = pd.rd if read else pd.wd
                if d == 0:
                    timeout = None
                elif d < 0:
                    timeout = 0.0
                else:
                    timeout = d - _monotonic()
                    if timeout < 0.0:
                        timeout = 0.0
                if read:
                    pd.rhint = True
                if _table.netpollwait_direct:
                    modes: int = runtime.thread_poller().netpollwait(fd, mode, wake_fd, timeout)
                else:
                    modes = _table.netpollwait(runtime.thread_poller(), fd, mode, wake_fd, timeout)
                if modes & MODE_WAKE:
                    w.drain()
                with pd.lock:
                    done: bool | None = pd.kernel_wait_done_locked(self, mode, modes & mode != 0)
                if done is not None:
                    return done
                # Spurious, or the deadline moved: look again.
        except BaseException:
            pd.abandon(self, mode)
            raise

    def deadline_moved(self, pd: Any, mode: int, d: float) -> None:
        """``pd``'s deadline moved while this thread is parked (``pd.lock`` held).

        In the kernel: poke it to recompute its timeout.  On its semaphore:
        a timer on the thread-poll M, as for a goroutine.
        """
        w = self.wake
        if w is not None:
            w.notify()
        elif d > 0 and pd.timer_due_locked(mode, d):
            m = self.poll_m
            if m is not None:
                m.add_timer(d, pd.deadline_fired, mode)

    def park(self, deadline: float | None = None) -> None:
        """Block until readied or past ``deadline`` (may return early)."""
        fd = self.wake_fd
        timeout = None if deadline is None else max(0.0, deadline - _monotonic())
        if fd < 0:
            if timeout is None:
                self._sema.acquire()
            else:
                self._sema.acquire(timeout=timeout)
            return
        modes = _table.netpollwait(runtime.thread_poller(), -1, 0, fd, timeout)
        if modes & MODE_WAKE:
            self.drain()

    def wait_fd(self, fd: int, mode: int, timeout: float | None) -> int:
        """Wait in the kernel for ``fd`` or the wake fd; returns ``netpollwait``'s modes."""
        modes: int = _table.netpollwait(runtime.thread_poller(), fd, mode, self.wake_fd, timeout)
        if modes & MODE_WAKE:
            self.drain()
        return modes

    def drain(self) -> None:
        """Consume pending wakeups of the wake descriptor."""
        w = self.wake
        if w is not None:
            w.drain()

    def __del__(self) -> None:
        # Thread-local storage is cleared when the thread ends.  Not while the
        # interpreter shuts down: a daemon thread frozen there may hold the
        # budget's lock forever, and the process exits anyway.
        w = self.wake
        if w is not None and not sys.is_finalizing():
            self.wake = None
            wake_fds.release(w)

    def __repr__(self) -> str:
        return f"<ThreadG {self.name}>"


G = GreenletG | ThreadG

_local = threading.local()


def current_g() -> G:
    """The G of the caller: its goroutine, or the calling thread's ThreadG."""
    cur = _getcurrent()
    if type(cur) is GreenletG:
        return cur
    try:
        g: ThreadG = _local.g
    except AttributeError:
        g = _local.g = ThreadG(threading.current_thread().name)
    return g


def current_thread_g() -> ThreadG:
    """The calling thread's ThreadG (the caller knows it is not in a goroutine)."""
    try:
        g: ThreadG = _local.g
    except AttributeError:
        g = _local.g = ThreadG(threading.current_thread().name)
    return g


def current_goroutine() -> GreenletG | None:
    """The running goroutine, or None when called from a plain thread."""
    cur = _getcurrent()
    return cur if type(cur) is GreenletG else None


# --------------------------------------------------------------------------
# Waiter and Note: one parked G (Go's sudog), a one-shot event (Go's note)
# --------------------------------------------------------------------------


class Waiter:
    """One parked G and whether it was woken (Go's ``sudog``).

    A park site queues a Waiter, and the waker sets :attr:`done` under the
    site's lock before it readies :attr:`g`; a late wakeup of an abandoned
    park touches only that park's Waiter.
    """

    __slots__ = ("done", "g")

    def __init__(self, g: G) -> None:
        self.g = g
        self.done = False


class Note:
    """A one-shot event: :meth:`wakeup` once, :meth:`wait` from any G kind."""

    __slots__ = ("_lock", "_set", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._waiters: list[Waiter] = []

    def is_set(self) -> bool:
        """True after :meth:`wakeup`."""
        return self._set

    def wakeup(self) -> None:
        """Set the note and ready every waiter."""
        with self._lock:
            self._set = True
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.done = True
        for w in waiters:
            w.g.ready()

    def wait(self, timeout: float | None = None) -> bool:
        """Park until set; False if ``timeout`` seconds passed first."""
        if self._set:
            return True
        if timeout is not None and timeout < 0:
            raise ValueError(f"netpoll: negative timeout {timeout}")
        deadline = None if timeout is None else _monotonic() + timeout
        w = Waiter(current_g())
        with self._lock:
            if self._set:
                return True
            self._waiters.append(w)
        return park_waiter(w, deadline, self._lock, self._waiters)


def park_waiter(w: Waiter, deadline: float | None, lock: Any, queue: Any) -> bool:
    """Park ``w.g`` until a waker sets ``w.done``; False on ``deadline``.

    On a timeout or an exception (GreenletExit, KeyboardInterrupt) the
    Waiter is taken out of ``queue`` under ``lock``, unless a waker got it
    first, in which case the park counts as woken.
    """
    g = w.g
    try:
        while not w.done:
            if deadline is not None and _monotonic() >= deadline:
                with lock:
                    if w.done:
                        return True
                    queue.remove(w)
                return False
            g.park(deadline)
    except BaseException:
        with lock:
            if not w.done:
                queue.remove(w)
        raise
    return True


# --------------------------------------------------------------------------
# M: a scheduler thread
# --------------------------------------------------------------------------


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
            self.sleeping = False
            poller = self.poller
            if poller is not None:
                try:
                    _table.netpollbreak(poller)
                except (OSError, RuntimeError):
                    pass  # shutting down

    def stop(self) -> None:
        """Ask this M's loop to return once it has nothing left to run (any thread).

        ``stopping`` is set before the wake-up is queued: the M, seeing the
        queued item, loops and then sees ``stopping`` (it may not sleep in
        its poller between the two, which a bare netpollbreak could allow).
        """
        self.stopping = True
        self.inject_g(_TimerRequest(0.0, _no_op, None))

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
        """
        _table.netpollopen(self.poller, pd.fd, pd.token)
        pd.m = self
        self.pds.add(pd)

    def unregister_pd(self, pd: Any) -> None:
        """Take ``pd``'s fd off this M's poller (its close, or this M going away)."""
        self.pds.discard(pd)
        poller = self.poller
        if poller is not None:
            try:
                _table.netpollclose(poller, pd.fd)
            except (OSError, RuntimeError, ValueError):
                if not self.exited:
                    raise

    # -- the loop (this M's thread only) ----------------------------------------

    def bind(self) -> None:
        """Make the calling thread this M: its hub and its poller."""
        self.ident = _get_ident()
        self.hub = _getcurrent()
        self._ensure_poller()
        _register_m(self)

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

    def _close_poller(self) -> None:
        poller, self.poller = self.poller, None
        if poller is not None:
            poller.shutdown()

    def schedule(self, until: GreenletG | None = None) -> None:
        """Run Gs until ``until`` has finished (or, with None, until stopped)."""
        runq = self.runq
        inject = self.inject
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
            if self.stopping:
                return
            self.sleeping = True
            if inject:
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
            self._drain_ready()

    def _drain_ready(self) -> None:
        for _ in range(1000):
            if self.inject:
                self._take_injected()
            self._run_timers()
            self._poll(0.0)
            if not self.runq:
                return
            while self.runq:
                g = self.runq.popleft()
                if not g.dead:
                    self.running = g
                    g.switch()
                    self.running = None

    def release(self) -> None:
        """Unregister every fd from this M's poller and close the poller.

        Gs of other Ms parked on those fds get a spurious wakeup: they retry
        and, parking again, register the fd with their own M.
        """
        self.exited = True
        _unregister_m(self)
        for pd in list(self.pds):
            pd.detach(self)
        self.pds.clear()
        self._close_poller()


# --------------------------------------------------------------------------
# The Ms of the process
# --------------------------------------------------------------------------

_ms_lock = threading.Lock()
_ms: list[M] = []
_background: list[M] = []
_next_background = itertools.count()
_thread_poll_m: M | None = None
_sysmon: threading.Thread | None = None
# Serialises starting background Ms (not _ms_lock: a starting M takes that).
_start_lock = threading.Lock()


def _register_m(m: M) -> None:
    global _sysmon
    with _ms_lock:
        _ms.append(m)
        if _sysmon is None or not _sysmon.is_alive():
            _sysmon = threading.Thread(target=_sysmon_loop, name="netpoll-sysmon", daemon=True)
            _sysmon.start()


def _unregister_m(m: M) -> None:
    with _ms_lock:
        if m in _ms:
            _ms.remove(m)


def all_ms() -> list[M]:
    """The Ms alive now (run() Ms and background Ms)."""
    with _ms_lock:
        return list(_ms)


def runtime_fds() -> frozenset[int]:
    """The descriptors the runtime itself holds: threads' wake fds, the Ms' pollers.

    A leak check subtracts them.  A poller that cannot say (a third-party
    backend without ``fds()``) contributes nothing.
    """
    own = set(wake_fds.fds())
    for m in all_ms():
        fds = getattr(m.poller, "fds", None)
        if fds is not None:
            own.update(fds())
    return frozenset(own)


def live_goroutines() -> list[GreenletG]:
    """Every goroutine not finished yet, on every M (a leak check reads it)."""
    return [g for m in all_ms() for g in list(m.gs) if not g.dead]


def break_all_pollers() -> None:
    """``netpollbreak`` every M's poller (fault injection delivers fake events so)."""
    for m in all_ms():
        poller = m.poller
        if poller is not None:
            try:
                _table.netpollbreak(poller)
            except (OSError, RuntimeError):
                pass  # shutting down


def procs() -> int:
    """How many background Ms :func:`go` spreads Gs over (``NETPOLL_PROCS``, default 1)."""
    raw = os.environ.get(ENV_PROCS, "").strip()
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"netpoll: {ENV_PROCS} must be a positive integer, not {raw!r}") from None
    if n < 1:
        raise ValueError(f"netpoll: {ENV_PROCS} must be a positive integer, not {raw!r}")
    return n


def _no_op(_arg: Any) -> None:
    pass


def _start_background_m(name: str) -> M:
    m = M(name)
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            m.bind()
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        try:
            m.schedule()
        finally:
            # Stopped (at exit): end the Gs here, in their own thread, so no
            # live greenlet is left to a thread frozen at interpreter shutdown.
            try:
                m.kill_all()
            finally:
                m.release()

    t = threading.Thread(target=main, name=f"netpoll-{name}", daemon=True)
    m.thread = t
    t.start()
    started.wait()
    if failure:
        raise failure[0]
    return m


def background_m() -> M:
    """A background M for a G started from a plain thread (round robin)."""
    with _start_lock:
        with _ms_lock:
            # An M stopped at exit is gone; a later go() (from an atexit
            # handler that runs after ours) gets a fresh one.
            _background[:] = [m for m in _background if not m.stopping]
            if len(_background) >= procs():
                return _background[next(_next_background) % len(_background)]
        m = _start_background_m(f"M{len(_background)}")
        with _ms_lock:
            _background.append(m)
        return m


def thread_poll_m() -> M:
    """The M that polls for threads parked on a lock (no wake descriptor)."""
    global _thread_poll_m
    m = _thread_poll_m
    if m is not None and not m.stopping:
        return m
    with _start_lock:  # one creator: a second caller waits and takes the same M
        if _thread_poll_m is None or _thread_poll_m.stopping:
            _thread_poll_m = _start_background_m("threadpoll")
        return _thread_poll_m


def _after_fork_in_child() -> None:
    global _ms_lock, _start_lock, _sysmon, _thread_poll_m, _blocking_pool, _blocking_lock
    _ms_lock = threading.Lock()
    _start_lock = threading.Lock()
    _blocking_lock = threading.Lock()
    # Only the forking thread's M (if it was one) survives; the child leaves
    # every kernel object it shares with the parent alone (netpoll.core.forking).
    survivor = forking.after_fork_in_child(_ms)
    _ms.clear()
    _background[:] = [m for m in _background if m is survivor]
    _sysmon = None
    _thread_poll_m = None
    _blocking_pool = None
    if survivor is not None:
        _register_m(survivor)  # and a sysmon of the child's own
    # The forking thread's G takes its new wake fd now, before it publishes a
    # Waiter: a waker reads ``wake`` directly and would notify the closed one.
    g = getattr(_local, "g", None)
    if g is not None:
        g._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: How long interpreter exit waits for the background Ms to end their Gs.
EXIT_STOP_TIMEOUT = 2.0


def _stop_background_ms() -> None:
    """At interpreter exit: stop the background Ms and wait (bounded) for their threads.

    They are daemon threads, which Python freezes where they stand once it
    finalizes; a greenlet still alive in a frozen thread can crash the
    interpreter as it is torn down (seen as a segfault at exit of
    ``netpoll echo --goroutines``, a few exits in a hundred).  Stopped here,
    while every thread still runs, each M kills its Gs (their ``finally``
    blocks run) and its thread ends normally.
    """
    with _ms_lock:
        ms = [m for m in _ms if m.thread is not None and m.thread.is_alive()]
    for m in ms:
        m.stop()
    deadline = _monotonic() + EXIT_STOP_TIMEOUT
    for m in ms:
        assert m.thread is not None
        m.thread.join(max(0.0, deadline - _monotonic()))


atexit.register(_stop_background_ms)


# --------------------------------------------------------------------------
# sysmon
# --------------------------------------------------------------------------


def _sysmon_loop() -> None:
    seen: dict[M, tuple[int, float]] = {}
    starving = starvation.StarvationMonitor(HOG_REPORT_SECONDS)
    deadlocks = deadlock.DeadlockDetector()
    while True:
        time.sleep(SYSMON_TICK)
        ms = all_ms()
        if not ms:
            seen.clear()
            continue
        now = _monotonic()
        for m in ms:
            g = m.running
            switches = m.switches
            last = seen.get(m)
            if g is None or last is None or last[0] != switches:
                seen[m] = (switches, now)
                continue
            if now - last[1] >= HOG_REPORT_SECONDS and not g.hog_reported:
                g.hog_reported = True
                _report_hog(m, g, now - last[1])
        for m in list(seen):
            if m not in ms:
                del seen[m]
        for report in starving.observe(ms, now, SYSMON_TICK):
            warnings.warn(StarvationWarning(report), stacklevel=1)
        for m, report in deadlocks.observe(ms, now):
            m.add_timer(0.0, deadlock.raise_in_hub, (m, report))  # run() raises it


def _report_hog(m: M, g: GreenletG, held: float) -> None:
    frame = sys._current_frames().get(m.ident)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
    warnings.warn(
        GoroutineHogWarning(
            f"netpoll: goroutine {g.name} has held {m.name} for {held * 1000:.0f} ms "
            f"without parking; the other goroutines of this M wait meanwhile.\n{stack}"
        ),
        stacklevel=1,
    )


# --------------------------------------------------------------------------
# Unhandled exceptions
# --------------------------------------------------------------------------


def _default_excepthook(g: Goroutine[Any], exc: BaseException) -> None:
    print(f"Exception in goroutine {g.name}:", file=sys.stderr)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


#: Called with ``(handle, exc)`` for an exception that escapes a goroutine and
#: that no ``result()``/``exception()`` call was waiting for (like
#: :func:`threading.excepthook`); replace it to log elsewhere.
excepthook: Callable[[Goroutine[Any], BaseException], None] = _default_excepthook


def _no_handle(g: GreenletG) -> Any:
    return g


#: Makes the handle :data:`excepthook` receives from a G.  Installed by
#: :mod:`netpoll.core.goroutine` as it is imported (``netpoll`` imports it),
#: since this module cannot import that one, which imports this one.
make_handle: Callable[[GreenletG], Any] = _no_handle


def report_exception(g: GreenletG, exc: BaseException) -> None:
    """Hand an unhandled goroutine exception to :data:`excepthook` (never raises)."""
    try:
        excepthook(make_handle(g), exc)
    except BaseException:
        pass


# --------------------------------------------------------------------------
# The public API: go, run, sleep, gosched, blocking
# --------------------------------------------------------------------------


def go(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> GreenletG:
    """Start ``fn(*args, **kwargs)`` as a goroutine and return its G.

    The runtime's spawn; :func:`netpoll.go` wraps the G in its public handle.

    Inside a goroutine the new G runs on the same M (a G never changes
    threads) unless ``NETPOLL_PROCS`` asks for more Ms; from a plain thread
    it runs on a background M, started on first use.
    """
    if not callable(fn):
        raise TypeError(f"netpoll.go: {type(fn).__name__!r} object is not callable")
    cur = current_goroutine()
    m = cur.m if cur is not None and procs() == 1 else background_m()
    g = GreenletG(m, fn, args, kwargs)
    m.spawn(g)
    return g


def run(main: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Make the calling thread an M, run ``main`` as a goroutine, return its value.

    When ``main`` returns (or raises, which ``run`` re-raises), goroutines
    still running on this M get :class:`greenlet.GreenletExit` so their
    ``with``/``finally`` blocks close what they hold; the M's poller is then
    closed.
    """
    if current_goroutine() is not None or any(m.ident == _get_ident() for m in all_ms()):
        raise RuntimeError("netpoll.run: this thread is already running the scheduler")
    m = M(f"run-{threading.current_thread().name}")
    m.bind()
    g = GreenletG(m, main, args, kwargs)
    m.main_g = g
    try:
        m.spawn(g)
        interrupt.run_main(m, g)  # m.schedule(until=g), Ctrl-C delivered to g
    finally:
        try:
            m.kill_all()
        finally:
            m.release()
    if g.exception is not None:
        raise g.exception
    value: T = g.value
    return value


def sleep(seconds: float) -> None:
    """Pause the caller: a goroutine parks (its M runs others), a thread sleeps."""
    if seconds != seconds or seconds < 0:
        raise ValueError(f"netpoll.sleep: negative or NaN duration {seconds}")
    g = current_goroutine()
    if g is None:
        time.sleep(seconds)
        return
    if seconds == 0:
        gosched()
        return
    deadline = _monotonic() + seconds
    while True:
        g.park(deadline)
        if _monotonic() >= deadline:
            return


def gosched() -> None:
    """Yield the M to other ready goroutines (a thread just yields the GIL)."""
    g = current_goroutine()
    if g is None:
        time.sleep(0)
        return
    g.m.runq.append(g)
    g.m.hub.switch()


_blocking_pool: ThreadPoolExecutor | None = None
_blocking_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _blocking_pool
    pool = _blocking_pool
    if pool is None:
        with _blocking_lock:
            pool = _blocking_pool
            if pool is None:
                raw = os.environ.get(ENV_BLOCKING_THREADS, "").strip()
                size = int(raw) if raw.isdigit() and int(raw) > 0 else 16
                pool = _blocking_pool = ThreadPoolExecutor(
                    max_workers=size, thread_name_prefix="netpoll-blocking"
                )
    return pool


def blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a call that would block the M in a bounded thread pool.

    For DNS lookups, regular-file I/O, C libraries: the goroutine parks while
    a pool thread (at most ``NETPOLL_BLOCKING_THREADS``, default 16) runs
    ``fn(*args, **kwargs)``; its value is returned or its exception raised
    here.  From a plain thread ``fn`` simply runs in the caller.
    """
    g = current_goroutine()
    if g is None:
        return fn(*args, **kwargs)
    w = Waiter(g)
    lock = threading.Lock()

    def finished(_f: Any) -> None:
        deadlock.pool_calls.discard(_f)
        with lock:
            w.done = True
        g.ready()

    future = _pool().submit(fn, *args, **kwargs)
    deadlock.pool_calls.add(future)  # in flight: it can still wake g (deadlock check)
    future.add_done_callback(finished)
    try:
        while not w.done:
            g.park(None)
    except BaseException:
        future.cancel()
        raise
    result: T = future.result()
    return result


__all__ = [
    "G",
    "GoroutineHogWarning",
    "GreenletExit",
    "GreenletG",
    "M",
    "Note",
    "StarvationWarning",
    "ThreadG",
    "Waiter",
    "all_ms",
    "blocking",
    "current_g",
    "current_goroutine",
    "excepthook",
    "go",
    "gosched",
    "live_goroutines",
    "park_waiter",
    "run",
    "runtime_fds",
    "sleep",
]
