"""pollDesc: per-descriptor readiness semaphores and deadlines (Go's runtime/netpoll.go).

A :class:`PollDesc` belongs to one fd.  For each direction it holds a binary
semaphore, ``rg`` for reads and ``wg`` for writes, whose states are Go's:

``None`` (pdNil)
    nobody waits and no readiness notice is pending.
a G (:mod:`netpoll.core.sched`)
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

A pollDesc only publishes the parked G and parks it; how the G sleeps is the
G's business (:mod:`netpoll.core.sched`):

* a goroutine, or a thread without a wake descriptor, has a *poll M*: the fd
  is registered with that M's poller the first time such a G parks on it
  (and stays there until close), and the deadline timer is armed on that M;
* a thread with a wake descriptor waits in the kernel on the fd itself
  (``netpollwait``) and computes its own timeout from the deadline; a
  deadline change or close from another thread pokes its wake descriptor.

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
from typing import Any

from netpoll.core.errors import (
    DeadlineExceededError,
    FileClosingError,
    NetClosingError,
    PollRegistrationError,
)
from netpoll.core.hookspecs import MODE_R, MODE_W
from netpoll.core.runtime import runtime
from netpoll.core.sched import G, M, current_g, current_goroutine


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
        #: The last read parked in the kernel (a thread G): the next one may
        #: wait before it tries (see wait_first).
        self.rhint = False
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
        self.rhint = False
        self.m = None

    def retire(self) -> None:
        """End this generation: events still in flight for the fd are stale."""
        self.fdseq += 1
        self.token = None
        self.fd = -1
        self.m = None

    # -- registration ----------------------------------------------------------

    def register(self, m: M) -> None:
        """Register the fd with ``m``'s poller now (Go's netpollopen at FD init).

        Raises the backend's :class:`OSError` (``EPERM``: not pollable).
        """
        with self.lock:
            self._register_locked(m)

    def _register_locked(self, m: M) -> None:
        _table.netpollopen(m.poller, self.fd, self.token)
        self.m = m
        m.pds.add(self)

    def unregister(self) -> None:
        """poll_runtime_pollClose: forget the poller registration (before the fd closes)."""
        m = self.m
        if m is None:
            return
        self.m = None
        m.pds.discard(self)
        poller = m.poller
        if poller is not None:
            _table.netpollclose(poller, self.fd)

    def detach(self, m: M) -> None:
        """``m`` is going away: drop its registration and re-wake its foreign parkers.

        A G of another M parked here gets a spurious wakeup; it retries, and
        when it parks again the fd is registered with its own M.
        """
        with self.lock:
            if self.m is not m:
                return
            self.m = None
            poller = m.poller
            rg = self._unblock(MODE_R, True)
            wg = self._unblock(MODE_W, True)
        if poller is not None:
            try:
                _table.netpollclose(poller, self.fd)
            except (OSError, RuntimeError, ValueError):
                pass
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

    def _block(self, mode: int) -> bool:
        """netpollblock: park until ready; True if woken by readiness."""
        read = mode == MODE_R
        g = current_g()
        with self.lock:
            old = self.rg if read else self.wg
            if old is PD_READY:  # the latch: consume it, no park
                if read:
                    self.rg = None
                else:
                    self.wg = None
                return True
            if old is not None:
                raise RuntimeError(f"netpoll: double wait on {self!r}")
            if self.closing or self._expired(mode):
                return False
            g.woken = False
            if read:
                self.rg = g
            else:
                self.wg = g
            m = g.poll_m
            if m is not None:
                try:
                    self._arm_locked(m, mode)
                except BaseException:
                    if read:
                        self.rg = None
                    else:
                        self.wg = None
                    raise
        if m is None:
            return self._block_in_kernel(g, mode)
        try:
            while True:
                g.park(None)
                if g.woken:  # set by the notifier that took g out
                    return g.ioready
        except BaseException:
            self._abandon_park(g, read)
            raise

    def _arm_locked(self, m: M, mode: int) -> None:
        """Before a park with a poll M: registration, level-triggered arm, timer."""
        home = self.m
        if home is None or home.exited:
            try:
                self._register_locked(m)
            except OSError as exc:
                # Reported as a registration error, not as the operation's syscall.
                raise PollRegistrationError(exc) from exc
            home = m
        if not home.edge_triggered:
            _table.netpollarm(home.poller, self.fd, mode)
        if mode == MODE_R:
            d, armed = self.rd, self.rtimer
        else:
            d, armed = self.wd, self.wtimer
        if d > 0 and (armed == 0 or d < armed):
            if mode == MODE_R:
                self.rtimer = d
            else:
                self.wtimer = d
            m.add_timer(d, _deadline_timer, (self, mode))

    def _block_in_kernel(self, g: Any, mode: int) -> bool:
        """A thread with a wake descriptor waits on the fd itself.

        Its timeout is its own deadline; a deadline change or close from
        another thread pokes the wake descriptor, and the loop looks again.
        """
        read = mode == MODE_R
        fd = self.fd
        try:
            while True:
                d = self.rd if read else self.wd
                if d == 0:
                    timeout = None
                elif d < 0:
                    timeout = 0.0
                else:
                    timeout = max(0.0, d - _monotonic())
                if read:
                    self.rhint = True
                modes = g.wait_fd(fd, mode, timeout)
                with self.lock:
                    if g.woken:  # a notifier took it out (its poke may still come)
                        return bool(g.ioready)
                    if modes & mode or self.closing or self._expired(mode):
                        if read:
                            self.rg = None
                        else:
                            self.wg = None
                        return bool(modes & mode) and not self.closing
                # Spurious, or the deadline moved: look again.
        except BaseException:
            self._abandon_park(g, read)
            raise

    def _abandon_park(self, g: G, read: bool) -> None:
        """A park was interrupted (GreenletExit, KeyboardInterrupt).

        If no notifier took ``g`` yet, take it back so the next wait does not
        find a stale G ("double wait").  If one did, its wakeup turns into one
        spurious wakeup of a later park, which every park site tolerates.
        """
        with self.lock:
            if read and self.rg is g:
                self.rg = None
            elif not read and self.wg is g:
                self.wg = None

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

    def prepare_read(self, watched: bool) -> None:
        """:meth:`prepare` for a read, then :meth:`wait_first` when the hint says so.

        ``watched``: a plugin wraps the read hook; then the read always tries
        the system call first, as Go's does, so the plugin sees it.
        """
        self.prepare(MODE_R)
        if self.rhint and not watched:
            self.wait_first(MODE_R)

    def wait_first(self, mode: int) -> None:
        """Wait for readiness before trying, if the caller waits in the kernel.

        A thread G's wait (poll(2) on the fd) is level-triggered, so waiting
        first is always safe: data already there returns at once.  A
        goroutine must try first: its poller is edge-triggered, and the
        notice of data that a previous read left in the socket is gone.
        """
        self.rhint = False
        if current_g().poll_m is None:
            self.wait(mode)

    def wait(self, mode: int) -> None:
        """poll_runtime_pollWait: park until ready, closed, or past the deadline.

        Returns normally on readiness (the caller retries the syscall); raises
        :class:`NetClosingError` or :class:`DeadlineExceededError` otherwise.
        """
        # _block re-checks closing and the deadline under pd.lock and returns
        # False without parking when either applies; the loop raises then.
        while not self._block(mode):
            code = self.check(mode)
            if code:
                self.raise_for(code)
            # Woken without readiness and without an error: a deadline fired
            # and was extended before we ran.  Go pretends nothing happened.

    # -- deadlines --------------------------------------------------------

    def set_deadline(self, d: float, mode: int) -> None:
        """poll_runtime_pollSetDeadline.

        ``d`` is ``0`` to clear, negative for "already passed", or an absolute
        ``time.monotonic()`` value.  A parked G whose deadline is now past is
        woken at once; one whose deadline moved gets a timer on its poll M,
        or, parked in the kernel, a poke to recompute its timeout.
        """
        lock = self.lock
        if mode == MODE_R:
            # The common case, a server moving its read deadline before each
            # read: nobody parked in that direction, so nothing to wake or arm.
            lock.acquire()
            g = self.rg
            if (g is None or g is PD_READY) and not self.closing:
                self.rd = d
                lock.release()
                return
            lock.release()
        woken: list[G] = []
        poked: list[G] = []
        with lock:
            if self.closing:
                return
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
                elif g.poll_m is None:
                    poked.append(g)
                elif d > 0:
                    armed = self.rtimer if direction == MODE_R else self.wtimer
                    if armed == 0 or d < armed:
                        if direction == MODE_R:
                            self.rtimer = d
                        else:
                            self.wtimer = d
                        g.poll_m.add_timer(d, _deadline_timer, (self, direction))
        for g in woken:
            g.ready()
        for g in poked:
            g.poke()

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
                    if g is not None and g is not PD_READY and g.poll_m is not None:
                        if mode == MODE_R:
                            self.rtimer = d
                        else:
                            self.wtimer = d
                        g.poll_m.add_timer(d, _deadline_timer, (self, mode))
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
        """netpollready: the poller saw ``mode`` readiness; wake or latch.

        This is :meth:`_unblock` with ``ioready=True`` spelled out for both
        directions: the poll loop runs it for every event.
        """
        rg = wg = None
        lock = self.lock
        lock.acquire()
        if mode & MODE_R:
            old = self.rg
            if old is None:
                self.rg = PD_READY
            elif old is not PD_READY:
                self.rg = None
                old.ioready = old.woken = True
                rg = old
        if mode & MODE_W:
            old = self.wg
            if old is None:
                self.wg = PD_READY
            elif old is not PD_READY:
                self.wg = None
                old.ioready = old.woken = True
                wg = old
        lock.release()
        if rg is not None:
            rg.ready()
        if wg is not None:
            wg.ready()

    def evict(self) -> None:
        """poll_runtime_pollUnblock: mark closing and wake every waiter.

        After this every wait fails with the closing error.
        """
        with self.lock:
            if self.closing:
                raise RuntimeError("netpoll: evict of a closing pollDesc")
            self.closing = True
            rg = self._unblock(MODE_R, False)
            wg = self._unblock(MODE_W, False)
        if rg is not None:
            rg.ready()
        if wg is not None:
            wg.ready()


def _deadline_timer(arg: tuple[PollDesc, int]) -> None:
    pd, mode = arg
    pd.deadline_fired(mode)


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
    runtime.spec()
    pd: PollDesc = runtime.cache.alloc(fd)
    g = current_goroutine()
    if g is not None:
        try:
            pd.register(g.m)
        except BaseException:
            runtime.cache.free(pd)
            raise
    return pd


def close_polldesc(pd: PollDesc) -> None:
    """Unregister ``pd`` and give it back to the cache (last user of the fd)."""
    try:
        pd.unregister()
    finally:
        runtime.cache.free(pd)


runtime.cache.new = PollDesc
