"""pollDesc: per-descriptor readiness semaphores and deadlines (Go's runtime/netpoll.go).

A :class:`PollDesc` belongs to one fd.  For each direction it holds a binary
semaphore, ``rg`` for reads and ``wg`` for writes, whose states are Go's:

``None`` (pdNil)
    nobody waits and no readiness notice is pending.
a G (:mod:`netpoll.core.g`)
    that G is parked.  A notifier takes it out (back to nil), sets its
    ``ioready`` (readiness, or False for a deadline/close) and ``woken``
    flags, and readies it.
``PD_READY``
    the poller reported readiness and nobody has consumed the notice yet: the
    *ready latch*, so a notice that arrives before the park is not lost.

Go also has ``pdWait``, the state between announcing a park and committing
it, because announce and commit are two CASes with an error re-check between
them.  Here every transition happens under ``pd.lock`` (Python has no CAS; a
short per-descriptor lock gives the same atomicity), so announce, re-check
and commit are one critical section and no one ever observes the middle.

A pollDesc holds only this state machine (Go's ``netpollblock``,
``netpollunblock``, ``netpollready``, ``pollUnblock`` and the deadlines).  How
a G sleeps once it is published is the G's business, as ``gopark`` is Go's:
:meth:`wait` publishes the G under ``pd.lock`` and calls ``g.park_io(pd,
mode)`` with the lock held (Go's ``netpollblockcommit``), and the G kind
(:mod:`netpoll.core.g`) registers the fd with its M's poller, arms a
level-triggered poller and the deadline timer, or waits in the kernel on the
fd itself, then releases the lock and sleeps.  A deadline that moves while a
G is parked is handed to the same G (``g.deadline_moved``).

Deadlines are absolute monotonic times: ``0`` none, ``< 0`` already passed.
Expiry is decided by value (``0 < d <= now``), so a timer that fires after
the deadline moved, or after the fd was closed and its pollDesc reused, does
no harm: it looks at the current deadline and re-arms or does nothing.
``fdseq`` is the descriptor's generation: the poller token carries it, and
an event whose generation is stale is dropped.
"""

from __future__ import annotations

import time
from _thread import allocate_lock
from collections.abc import Iterable
from typing import Any

import greenlet

from netpoll.core.errors import DeadlineExceededError, FileClosingError, NetClosingError
from netpoll.core.g import RHINT_PARKED, G, GreenletG, current_thread_g
from netpoll.core.hookspecs import MODE_EXCEPT, MODE_R, MODE_W
from netpoll.core.m import M, set_event_delivery
from netpoll.core.runtime import runtime


class _State:
    """A named sentinel for a semaphore state."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PD_READY = _State("pdReady")

# netpollcheckerr's answers.
POLL_NO_ERROR = 0
POLL_ERR_CLOSING = 1
POLL_ERR_TIMEOUT = 2

_table = runtime.table
_monotonic = time.monotonic
_getcurrent = greenlet.getcurrent


class PollDesc:
    """One fd's readiness semaphores, deadlines and poller registration."""

    __slots__ = (
        "__weakref__",
        "closing",
        "fd",
        "fdseq",
        "is_file",
        "lock",
        "m",
        "rd",
        "rg",
        "rhint",
        "rtimer",
        "short_read_drains",
        "token",
        "wd",
        "wg",
        "wtimer",
    )

    def __init__(self) -> None:
        self.lock = allocate_lock()
        self.fd = -1
        self.fdseq = 0
        self.token: tuple[PollDesc, int] | None = None
        self.closing = False
        self.is_file = False
        self.rg: Any = None
        self.wg: Any = None
        self.rd = 0.0
        self.wd = 0.0
        #: When the deadline timer armed for each direction fires (0: none).
        self.rtimer = 0.0
        self.wtimer = 0.0
        #: The next read may wait before it tries (see wait): 0, or
        #: RHINT_DRAINED / RHINT_PARKED, what the last read found.
        self.rhint = 0
        #: A read shorter than asked for emptied the socket: a TCP socket,
        #: on a backend that reports exceptional conditions or is
        #: level-triggered, with none reported yet (see wait).  Set by the FD.
        self.short_read_drains = False
        #: The M whose poller has this fd registered (None: not registered).
        self.m: M | None = None

    def __repr__(self) -> str:
        return f"<PollDesc fd={self.fd} seq={self.fdseq} rg={self.rg!r} wg={self.wg!r}>"

    # -- life cycle (the pollcache) ------------------------------------------

    def reset(self, fd: int) -> None:
        """Take this PollDesc into use for ``fd`` with a new generation."""
        self.fd = fd
        self.fdseq += 1
        self.token = (self, self.fdseq)
        self.closing = False
        self.is_file = False
        self.rg = self.wg = None
        self.rd = self.wd = 0.0
        self.rtimer = self.wtimer = 0.0
        self.rhint = 0
        self.short_read_drains = False
        self.m = None

    def retire(self) -> None:
        """End this generation: events still in flight for the fd are stale."""
        self.fdseq += 1
        self.token = None
        self.fd = -1
        self.m = None

    # -- registration (the G's M does the poller calls) -----------------------

    def unregister(self) -> None:
        """poll_runtime_pollClose: forget the poller registration (before the fd closes)."""
        home = self.m
        if home is None:
            return
        self.m = None
        home.unregister_pd(self)

    def detach(self, m: M) -> None:
        """``m`` is going away: drop its registration and re-wake its foreign parkers.

        A G of another M parked here gets a spurious wakeup; it retries, and
        when it parks again the fd is registered with its own M.
        """
        with self.lock:
            if self.m is not m:
                return
            self.m = None
            rg = self._unblock(MODE_R, True)
            wg = self._unblock(MODE_W, True)
        m.unregister_pd(self)
        if rg is not None:
            rg.ready()
        if wg is not None:
            wg.ready()

    # -- semaphores -------------------------------------------------------

    def _unblock(self, mode: int, ioready: bool) -> G | None:
        """netpollunblock; the caller holds ``self.lock`` and readies the result.

        A parked G is taken out of the semaphore (back to nil) and returned
        with the outcome in ``g.ioready``.  With nobody parked, readiness sets
        the latch; a deadline or close leaves nil, and the next waiter sees
        them through netpollcheckerr.
        """
        old = self.rg if mode == MODE_R else self.wg
        if old is None:
            if ioready:
                if mode == MODE_R:
                    self.rg = PD_READY
                else:
                    self.wg = PD_READY
            return None
        if old is PD_READY:
            return None
        if mode == MODE_R:
            self.rg = None
        else:
            self.wg = None
        g: G = old
        g.ioready = ioready
        g.woken = True
        return g

    def _expired(self, mode: int) -> bool:
        d = self.rd if mode == MODE_R else self.wd
        return d < 0 or (d > 0 and d <= _monotonic())

    def check(self, mode: int) -> int:
        """netpollcheckerr: closing, or this direction's deadline has passed."""
        if self.closing:
            return POLL_ERR_CLOSING
        if (mode & MODE_R and self._expired(MODE_R)) or (mode & MODE_W and self._expired(MODE_W)):
            return POLL_ERR_TIMEOUT
        return POLL_NO_ERROR

    def abandon(self, g: G, mode: int) -> None:
        """A park was interrupted (GreenletExit, KeyboardInterrupt).

        If no notifier took ``g`` yet, take it back so the next wait does not
        find a stale G ("double wait").  If one did, its wakeup turns into one
        spurious wakeup of a later park, which every park site tolerates.
        """
        with self.lock:
            if mode == MODE_R:
                if self.rg is g:
                    self.rg = None
            elif self.wg is g:
                self.wg = None

    def unpublish_locked(self, g: G, mode: int) -> None:
        """Take ``g`` back out of its semaphore (lock held): its commit failed."""
        if mode == MODE_R:
            if self.rg is g:
                self.rg = None
        elif self.wg is g:
            self.wg = None

    def kernel_wait_done_locked(self, g: G, mode: int, ready: bool) -> bool | None:
        """After a G waited in the kernel on the fd itself (lock held): the outcome.

        ``ready``: the kernel reported this direction.  True: retry the call;
        False: closing or past the deadline (the caller raises); None: the
        park goes on (a spurious wakeup, or the deadline moved).
        """
        if g.woken:  # a notifier took g out (its poke may still come)
            return bool(g.ioready)
        d = self.rd if mode == MODE_R else self.wd
        if self.closing:
            ready = False
        elif d < 0 or (d > 0 and d <= _monotonic()):
            # No timer serves a thread in the kernel: it is its own timer, and
            # marks the deadline passed as the timer would (netpolldeadlineimpl).
            if mode == MODE_R:
                self.rd = -1.0
            else:
                self.wd = -1.0
            ready = False
        elif not ready:
            return None
        if mode == MODE_R:
            self.rg = None
        else:
            self.wg = None
        return ready

    def deadline_of(self, mode: int) -> float:
        """This direction's deadline (0: none, < 0: passed, else monotonic)."""
        return self.rd if mode == MODE_R else self.wd

    def timer_due_locked(self, mode: int, d: float) -> bool:
        """Whether a deadline timer for ``d`` must be armed now (lock held).

        One timer per direction is armed at a time, for the earliest
        deadline; a later deadline is left to the armed timer, which re-arms
        when it fires early (:meth:`deadline_fired`).  Records ``d`` as armed.
        """
        if mode == MODE_R:
            armed = self.rtimer
            if armed == 0 or d < armed:
                self.rtimer = d
                return True
            return False
        armed = self.wtimer
        if armed == 0 or d < armed:
            self.wtimer = d
            return True
        return False

    # -- what FD calls ----------------------------------------------------

    def raise_for(self, code: int) -> None:
        """Turn a netpollcheckerr code into the poll layer's exception."""
        if code == POLL_ERR_CLOSING:
            raise FileClosingError() if self.is_file else NetClosingError()
        if code == POLL_ERR_TIMEOUT:
            raise DeadlineExceededError()

    def prepare(self, mode: int) -> None:
        """poll_runtime_pollReset: fail fast on close/deadline, drop a stale notice.

        Called at the start of each operation, which is about to try the
        syscall anyway, so an old ready latch carries no information.  (No
        other operation of this direction is parked: fdMutex serialises them.)
        """
        if mode == MODE_R:
            d = self.rd
            if self.closing or (d and (d < 0 or d <= _monotonic())):
                self.raise_for(self.check(mode))
            self.rg = None
        else:
            d = self.wd
            if self.closing or (d and (d < 0 or d <= _monotonic())):
                self.raise_for(self.check(mode))
            self.wg = None

    def wait(self, mode: int, first: int = 0) -> None:
        """poll_runtime_pollWait: park until ready, closed, or past the deadline.

        Returns normally on readiness (the caller retries the syscall); raises
        :class:`NetClosingError` or :class:`DeadlineExceededError` otherwise.

        ``first``: the caller has not tried the system call yet, because it
        expects to find nothing: the ``rhint`` the last read left, which the
        caller has cleared.  The caller calls this *before* dropping the ready
        latch (``rg = None``), so a notice that arrived since the last system
        call is consumed here and it tries at once.  Otherwise:

        * a thread that waits in the kernel waits first on either hint: its
          wait (poll(2) on the fd) is level-triggered, so data already there
          returns at once and the EAGAIN round is saved;
        * a goroutine parks first only on ``RHINT_DRAINED``: a short TCP read
          means the receive queue was empty when it returned, and the latch
          was dropped before that read (Go's pollReset comes before the
          syscall), so every segment that arrived since then raised an edge on
          the edge-triggered poller the fd is registered with, and that edge
          set the latch or wakes the parked G; a level-triggered poller or a
          first registration reports data already there.  ``RHINT_PARKED``
          gives no such promise: the thread's read after its wait may have
          left data queued whose edge the wakeup consumed, so the goroutine
          tries first.  A short read may still leave something readable whose
          edge came before: EOF (a FIN behind the data is taken with it), a
          pending error, or data behind an urgent mark (``tcp_recvmsg`` stops
          there).  Each of those raises an exceptional event, which an
          edge-triggered backend must report (``MODE_EXCEPT``;
          ``netpollready`` then clears ``short_read_drains`` for good), or the
          FD never sets that flag;
        * a thread that parks on its semaphore returns at once and tries.

        netpollblock: under ``pd.lock`` a ready latch is consumed without
        parking, closing or a passed deadline fail at once, and otherwise the
        G is published in the semaphore; then ``g.park_io`` (called with the
        lock held, which it releases) sleeps the G's way and returns the
        outcome: True for readiness, False for a wakeup without it.
        """
        g: G = _getcurrent()  # type: ignore[assignment]
        if g.__class__ is not GreenletG:
            g = current_thread_g()
            if first and not g.waits_in_kernel:
                return
        elif first == RHINT_PARKED:
            return
        lock = self.lock
        while True:
            lock.acquire()
            if mode == MODE_R:
                old = self.rg
                if old is PD_READY:  # the latch: consume it, no park
                    self.rg = None
                    lock.release()
                    return
                # A deadline that passed since the caller's prepare is left
                # to the timer the park arms: no clock read here.
                if old is not None or self.closing or self.rd < 0:
                    lock.release()
                    self._fail(old, mode)
                    continue
                g.woken = False
                self.rg = g
            else:
                old = self.wg
                if old is PD_READY:
                    self.wg = None
                    lock.release()
                    return
                if old is not None or self.closing or self.wd < 0:
                    lock.release()
                    self._fail(old, mode)
                    continue
                g.woken = False
                self.wg = g
            if g.park_io(self, mode):
                return
            code = self.check(mode)
            if code:
                self.raise_for(code)
            # Woken without readiness and without an error: a deadline fired
            # and was extended before we ran.  Go pretends nothing happened.

    def _fail(self, old: object, mode: int) -> None:
        """Why :meth:`wait` may not park: a second waiter, closing or a deadline."""
        if old is not None:
            raise RuntimeError(f"netpoll: double wait on {self!r}")
        code = self.check(mode)
        if code:
            self.raise_for(code)
        # The deadline moved between the two looks: wait() tries again.

    # -- deadlines --------------------------------------------------------

    def set_deadline(self, d: float, mode: int, seq: int) -> None:
        """poll_runtime_pollSetDeadline.

        ``d`` is ``0`` to clear, negative for "already passed", or an absolute
        ``time.monotonic()`` value.  ``seq`` is the generation the caller's fd
        was opened with: a pollDesc closed and reused meanwhile raises the
        closing error instead of changing another fd's deadline.  A parked G
        whose deadline is now past is woken at once; one whose deadline moved
        is told (``g.deadline_moved``: a timer on its M, or a poke to a thread
        waiting in the kernel, which recomputes its timeout).
        """
        lock = self.lock
        lock.acquire()
        if self.fdseq != seq or self.closing:
            lock.release()
            raise FileClosingError() if self.is_file else NetClosingError()
        if mode == MODE_R:
            # The common case, a server moving its read deadline before each
            # read: nobody parked in that direction, so nothing to wake or arm.
            g = self.rg
            if g is None or g is PD_READY:
                self.rd = d
                lock.release()
                return
        woken: list[G] = []
        try:
            now = _monotonic()
            for direction in (MODE_R, MODE_W):
                if not mode & direction:
                    continue
                if direction == MODE_R:
                    self.rd = d
                    g = self.rg
                else:
                    self.wd = d
                    g = self.wg
                if g is None or g is PD_READY:
                    continue
                if d < 0 or (d > 0 and d <= now):
                    taken = self._unblock(direction, False)
                    if taken is not None:
                        woken.append(taken)
                else:
                    g.deadline_moved(self, direction, d)
        finally:
            lock.release()
        for g in woken:
            g.ready()

    def deadline_fired(self, mode: int) -> None:
        """netpolldeadlineimpl: the timer armed for ``mode`` went off."""
        with self.lock:
            if mode == MODE_R:
                self.rtimer = 0.0
                d, g = self.rd, self.rg
            else:
                self.wtimer = 0.0
                d, g = self.wd, self.wg
            if self.closing or d == 0:
                return
            if d > 0:
                if d > _monotonic():
                    # The deadline moved later: re-arm for whoever is parked.
                    if g is not None and g is not PD_READY:
                        g.deadline_moved(self, mode, d)
                    return
                if mode == MODE_R:
                    self.rd = -1.0
                else:
                    self.wd = -1.0
            taken = self._unblock(mode, False)
        if taken is not None:
            taken.ready()

    # -- readiness and close ------------------------------------------------

    def ready(self, mode: int) -> None:
        """netpollready for one descriptor: the poller saw ``mode``; wake or latch."""
        netpollready(((self.token, mode),), None)

    def evict(self) -> None:
        """poll_runtime_pollUnblock: mark closing and wake every waiter.

        After this every wait fails with the closing error.
        """
        with self.lock:
            if self.closing:
                raise RuntimeError("netpoll: evict of a closing pollDesc")
            self.closing = True
            rg = wg = None
            if self.rg is not None:
                rg = self._unblock(MODE_R, False)
            if self.wg is not None:
                wg = self._unblock(MODE_W, False)
        if rg is not None:
            rg.ready()
        if wg is not None:
            wg.ready()


def netpollready(events: Iterable[tuple[Any, int]], m: M | None) -> None:
    """netpollready for a poll's events: wake or latch, in one pass.

    ``events`` are ``(token, modes)`` pairs as a poller returns them; an
    event whose generation is stale (the fd was closed and its pollDesc
    reused) is dropped.  A token's owner that is not a PollDesc has the
    same ``fdseq`` and ``ready(modes)`` and is called through them.  A
    woken goroutine of ``m``, the M running this pass, goes straight onto
    its run queue (Go's ``injectglist``); any other G is readied its own
    way.  This is :meth:`PollDesc._unblock` with
    ``ioready=True`` spelled out, because the poll loop runs it per event.
    """
    runq = None if m is None else m.runq
    for token, modes in events:
        pd, seq = token
        if pd.fdseq != seq:
            continue
        if pd.__class__ is not PollDesc:
            # Another owner of a descriptor on this poller (the SIGINT pipe
            # of netpoll.core.interrupt) is told through its ready().
            pd.ready(modes)
            continue
        rg = wg = None
        lock = pd.lock
        lock.acquire()
        if modes & MODE_R:
            if modes & MODE_EXCEPT:
                # EOF, an error or data behind an urgent mark may now stay
                # after a short read: it no longer proves the socket empty.
                pd.short_read_drains = False
            old = pd.rg
            if old is None:
                pd.rg = PD_READY
            elif old is not PD_READY:
                pd.rg = None
                old.ioready = old.woken = True
                rg = old
        if modes & MODE_W:
            old = pd.wg
            if old is None:
                pd.wg = PD_READY
            elif old is not PD_READY:
                pd.wg = None
                old.ioready = old.woken = True
                wg = old
        lock.release()
        if rg is not None:
            if rg.__class__ is GreenletG and rg.m is m:
                runq.append(rg)  # type: ignore[union-attr]
            else:
                rg.ready()
        if wg is not None:
            if wg.__class__ is GreenletG and wg.m is m:
                runq.append(wg)  # type: ignore[union-attr]
            else:
                wg.ready()


def open_polldesc(fd: int) -> PollDesc:
    """poll_runtime_pollOpen: a PollDesc for ``fd``.

    Called in a goroutine, the fd is registered with its M's poller at once
    (raising the backend's :class:`OSError`, ``EPERM`` for a file that cannot
    be polled, after returning the PollDesc); from a plain thread it is
    registered when a G with a poll M first parks on it.
    """
    if fd < 0:
        raise ValueError(f"netpoll: bad file descriptor {fd}")
    # The first descriptor settles the backend (as the first listen/dial did
    # when the process had one poller): use_backend refuses to switch later.
    if runtime._spec is None:  # spec()'s own test, inline: once per accepted conn
        runtime.spec()
    pd: PollDesc = runtime.cache.alloc(fd)
    g = _getcurrent()  # current_goroutine, inline: once per accepted conn
    if type(g) is GreenletG:
        try:
            with pd.lock:
                g.m.register_pd(pd)
        except BaseException:
            runtime.cache.free(pd)
            raise
    return pd


def close_polldesc(pd: PollDesc) -> None:
    """Unregister ``pd`` and give it back to the cache (last user of the fd)."""
    try:
        home = pd.m  # PollDesc.unregister, inline: once per closed conn
        if home is not None:
            pd.m = None
            home.unregister_pd(pd)
    finally:
        runtime.cache.free(pd)


runtime.cache.new = PollDesc
set_event_delivery(netpollready)
