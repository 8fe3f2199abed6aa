"""The two kinds of G and which one is calling (Go's ``runtime2.go`` g, ``proc.go`` gopark).

:class:`GreenletG` (a goroutine)
    a greenlet on an M (:mod:`netpoll.core.m`) for its whole life.  An fd
    is registered with the poller of the first M one of whose Gs parks on it
    (:func:`arm_on`); a G of another M parked on the same fd is woken through
    its own M's injection queue plus ``netpollbreak``.
:class:`ThreadG`
    a plain thread calling the API: Go's "M blocked in a syscall", a G that
    is its own M.  It parks by waiting in the kernel on its own fd plus its
    wake descriptor (:mod:`netpoll.core.wakefd`) through the backend's
    ``netpollwait`` hook, so the chosen backend and fault injection still
    apply.  A close or deadline change from another thread makes the wake
    descriptor readable.  A thread that could not get a wake descriptor
    (past the fd budget) parks on a lock, and its fd is polled by a scheduler
    M (:func:`netpoll.core.procs.thread_poll_m`) like a goroutine's.

Every G offers the same operations to park sites (pollDesc, channels,
semaphores): ``ready()`` from any thread, ``park(deadline)`` to sleep until
readied (or the monotonic ``deadline`` passed), and the ``woken``/``ioready``
flags a waker sets under the park site's lock.  A park may return spuriously
(a late wakeup of an earlier, abandoned park): every park site loops on its
own state (:func:`netpoll.core.park.park` is that loop for all but pollDesc,
whose ``park_io`` here is the tuned hot path).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import greenlet

from netpoll.core.errors import PollRegistrationError
from netpoll.core.hookspecs import MODE_R, MODE_WAKE
from netpoll.core.park import Note
from netpoll.core.procs import thread_poll_m
from netpoll.core.runtime import runtime
from netpoll.core.wakefd import WakeFd, wake_fds

if TYPE_CHECKING:
    import weakref

    from netpoll.core.goroutine import Goroutine
    from netpoll.core.m import M

_table = runtime.table
_monotonic = time.monotonic
_get_ident = threading.get_ident
_getcurrent = greenlet.getcurrent
GreenletExit = greenlet.GreenletExit

#: Values of ``PollDesc.rhint``, what the last read on the fd says of the next
#: one.  DRAINED: a short TCP read emptied the receive queue, so any G may
#: park before it tries (see ``PollDesc.wait``).  PARKED: the last read parked a thread
#: in the kernel; only a G that waits there (level-triggered) may wait first,
#: because the data that woke it may still be queued with no edge to come.
RHINT_DRAINED = 1
RHINT_PARKED = 2


def _print_exception(g: GreenletG, exc: BaseException) -> None:
    print(f"Exception in goroutine {g.name}:", file=sys.stderr)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


class _Unhandled:
    """Where an exception that escapes a goroutine goes: ``sched.report_exception``.

    Installed by :mod:`netpoll.core.sched` (which holds the excepthook and
    imports this module); until then the exception is printed.
    """

    __slots__ = ("report",)

    def __init__(self) -> None:
        self.report: Callable[[GreenletG, BaseException], None] = _print_exception


_unhandled = _Unhandled()


def set_exception_reporter(report: Callable[[GreenletG, BaseException], None]) -> None:
    """Install the function that reports an exception escaping a goroutine."""
    _unhandled.report = report


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
        "waitreason",
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
        #: Why the G last parked outside I/O (Go's waitReason: "chan receive",
        #: "sync.Mutex.Lock"...), set by park(); the deadlock report shows it.
        self.waitreason = ""
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
        fn, box, kwargs = self._fn, [self._args], self._kwargs
        self._fn = self._args = self._kwargs = None  # type: ignore[assignment]
        try:
            if self.kill_requested:  # killed before it ever ran
                raise GreenletExit
            if len(box[0]) == 1 and not kwargs:
                # go(handler, conn), the common shape.  The argument reaches
                # the callee through the stack alone (no local, no tuple left):
                # the G keeps nothing of it alive while the function runs, so
                # what the function drops is freed, and an idle G holds no
                # argument tuple.
                self.value = fn(box.pop()[0])
            else:
                self.value = fn(*box.pop(), **kwargs)
        except GreenletExit:
            self.killed = True  # killed at the end of run(): its finally blocks have run
        except BaseException as exc:
            self.exception = exc
            if not self.m.is_main(self) and not self.collectors:
                _unhandled.report(self, exc)
        finally:
            self.m.gs.discard(self)  # M.g_exited, inline
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
            arm_on(m, pd, mode, self)
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
        return note.wait(current_g(), timeout, "goroutine join")

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


def arm_on(m: M, pd: Any, mode: int, g: G) -> None:
    """Commit ``g``'s park on ``pd`` to ``m`` (``pd.lock`` held): what its poller and timers need.

    The fd is registered with ``m``'s poller the first time a G of ``m``
    parks on it (or when the M it was registered with went away) and stays
    there until close; a level-triggered poller gets the direction armed; a
    deadline gets a timer on ``m`` unless an earlier one is armed already.
    A G of another M parked on an fd registered here is readied through its
    own M's injection queue.  If the commit fails, ``g`` is taken back out
    of the semaphore and ``pd.lock`` released before the error propagates.
    """
    try:
        _commit(m, pd, mode)
    except BaseException:
        pd.unpublish_locked(g, mode)
        pd.lock.release()
        raise


def _commit(m: M, pd: Any, mode: int) -> None:
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
        "waitreason",
        "wake",
        "woken",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.ident = _get_ident()
        self.ioready = False
        self.woken = False
        #: Why the G last parked outside I/O (Go's waitReason: "chan receive",
        #: "sync.Mutex.Lock"...), set by park(); the deadlock report shows it.
        self.waitreason = ""
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
            arm_on(m, pd, mode, self)
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
                    pd.rhint = RHINT_PARKED
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


def _after_fork_in_child() -> None:
    # The forking thread's G takes its new wake fd now, before it publishes a
    # Waiter: a waker reads ``wake`` directly and would notify the closed one.
    # (Registered after procs' handler, which this module imports: it runs
    # after the Ms are rebuilt.)
    g = getattr(_local, "g", None)
    if g is not None:
        g._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = [
    "G",
    "GreenletExit",
    "GreenletG",
    "ThreadG",
    "arm_on",
    "current_g",
    "current_goroutine",
    "current_thread_g",
    "set_exception_reporter",
]
