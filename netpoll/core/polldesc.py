"""pollDesc: per-descriptor readiness semaphores and deadlines (Go's runtime/netpoll.go).

A :class:`PollDesc` belongs to one registered fd.  For each direction it holds
a binary semaphore, ``rg`` for reads and ``wg`` for writes, whose states are
the ones Go uses:

``None`` (pdNil)
    nobody waits and no readiness notice is pending.
``PD_WAIT`` (pdWait)
    a waiter has announced it is about to park but has not committed.  Go
    needs this state because announce and commit are two CASes with an error
    re-check between them; here all three happen in one critical section of
    ``pd.lock``, so no other thread ever observes it.  It is kept as a name
    for the mapping to Go.
a :class:`~netpoll.core.waiter.G`
    that waiter is parked.  A notifier takes it out (back to nil) and hands
    it the outcome: readiness, or a deadline/close.
``PD_READY``
    the poller reported readiness and nobody has consumed the notice yet: the
    *ready latch*, so a notice that arrives before the park is not lost.

Every transition happens under ``pd.lock`` (Go uses CAS on the word; Python
has no CAS, and a short per-descriptor lock gives the same atomicity).
Deadlines are absolute monotonic times: ``0`` none, ``< 0`` already passed.
Each deadline change bumps a sequence number; a timer carries the number it
was armed with, so one that fires after the deadline moved is a no-op.  When
read and write deadlines are equal one timer serves both (Go's
``netpollDeadline``).  ``fdseq`` is the descriptor's generation: the poller
token carries it, and an event whose generation is stale (the fd was closed
and its pollDesc reused) is dropped.
"""

from __future__ import annotations

import threading
from _thread import allocate_lock
from typing import TYPE_CHECKING, Any

from netpoll.core.errors import DeadlineExceededError, FileClosingError, NetClosingError
from netpoll.core.hookspecs import MODE_R, MODE_RW, MODE_W
from netpoll.core.waiter import G, current_g

if TYPE_CHECKING:
    from netpoll.core.netpoller import NetPoller


class _State:
    """A named sentinel for a semaphore state."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PD_READY = _State("pdReady")
PD_WAIT = _State("pdWait")

# netpollcheckerr's answers.
POLL_NO_ERROR = 0
POLL_ERR_CLOSING = 1
POLL_ERR_TIMEOUT = 2


class PollDesc:
    """One fd's readiness semaphores, deadlines and poller registration."""

    __slots__ = (
        "__weakref__",
        "closing",
        "fd",
        "fdseq",
        "is_file",
        "lock",
        "poller",
        "rd",
        "rg",
        "rseq",
        "token",
        "wd",
        "wg",
        "wseq",
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
        self.rseq = 0
        self.wseq = 0
        self.poller: NetPoller | None = None

    def __repr__(self) -> str:
        return f"<PollDesc fd={self.fd} seq={self.fdseq} rg={self.rg!r} wg={self.wg!r}>"

    # -- semaphores -------------------------------------------------------

    def _unblock(self, mode: int, ioready: bool) -> G | None:
        """netpollunblock; the caller holds ``self.lock`` and readies the result.

        A parked G is taken out of the semaphore (which goes back to nil) and
        returned with the outcome in ``g.ioready``; Go parks the outcome in the
        semaphore as pdReady for the G to swap out, which here would cost the
        woken G a second trip through the lock.  With nobody parked, readiness
        sets the latch; a deadline or close leaves nil, and the next waiter
        sees them through netpollcheckerr.
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
        return g

    def check(self, mode: int) -> int:
        """netpollcheckerr: closing, or this direction's deadline has passed."""
        if self.closing:
            return POLL_ERR_CLOSING
        if (mode & MODE_R and self.rd < 0) or (mode & MODE_W and self.wd < 0):
            return POLL_ERR_TIMEOUT
        return POLL_NO_ERROR

    def _block(self, mode: int) -> bool:
        """netpollblock: park until ready; True if woken by readiness."""
        read = mode == MODE_R
        g = None
        # Go moves the semaphore nil -> wait with a CAS, re-checks errors
        # (netpollcheckerr), then commits wait -> G, and the commit fails if
        # a notifier moved the state meanwhile.  Under pd.lock, which every
        # notifier takes, announce, re-check and commit are one step: the
        # "wait" window is this critical section, so a close or deadline that
        # came after the caller's own check is seen here, and a readiness
        # notice either is already latched or will find the G.
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
            if self.closing or (self.rd < 0 if read else self.wd < 0):
                return False
            g = current_g()
            if read:
                self.rg = g
            else:
                self.wg = g
            # Still under pd.lock, so no notifier can reach g before it knows
            # whether it polls for itself (see netpoller: the solo leader) or
            # needs a wake channel to block on.
            poller = self.poller
            leading = poller is not None and poller.try_lead(g)
            if not leading:
                g.prepare()
        try:
            if leading:
                assert poller is not None
                # False: it stepped down without being readied.  It leaves
                # the semaphore (a spurious wakeup; the caller parks again, as
                # an ordinary waiter) unless a notifier just took it.
                if not poller.lead(g) and self._abandon_park(g, read):
                    g.no_lead = True
                    return False
            else:
                g.park()
        except BaseException:
            self._abandon_park(g, read)
            raise
        # The notifier took g out of the semaphore (back to nil) and left
        # the outcome on it.
        return g.ioready

    def _wake(self, g: G) -> None:
        """Resume a G this caller took out of a semaphore (goready)."""
        poller = self.poller
        if poller is not None:
            poller.readied()  # it no longer counts as parked
        g.ready()

    def _abandon_park(self, g: G, read: bool) -> bool:
        """A park was interrupted (KeyboardInterrupt in the main thread).

        If no notifier took ``g`` yet, take it back so the next wait does not
        find a stale G ("double wait") and give up its wakeup.  If one did, a
        ``ready`` is in flight to this park: the G keeps its wakeup channel,
        and the late ready turns into one spurious wakeup of its next park,
        which every caller of ``_block`` already tolerates.
        """
        with self.lock:
            if read and self.rg is g:
                self.rg = None
            elif not read and self.wg is g:
                self.wg = None
            else:
                return False
        if self.poller is not None:
            self.poller.readied()
        g.cancel()
        return True

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
        syscall anyway, so an old ready latch carries no information.
        """
        if mode == MODE_R:
            if self.closing or self.rd < 0:
                self.raise_for(self.check(mode))
            self.rg = None
        else:
            if self.closing or self.wd < 0:
                self.raise_for(self.check(mode))
            self.wg = None

    def wait(self, mode: int) -> None:
        """poll_runtime_pollWait: park until ready, closed, or past the deadline.

        Returns normally on readiness (the caller retries the syscall); raises
        :class:`NetClosingError` or :class:`DeadlineExceededError` otherwise.
        """
        poller = self.poller
        if poller is not None and not poller.edge_triggered and not self.check(mode):
            # Level-triggered backends watch an fd only while someone waits.
            poller.arm(self.fd, mode)
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
        ``time.monotonic()`` value.  Parked waiters of a direction whose
        deadline is now in the past are woken at once.
        """
        poller = self.poller
        with self.lock:
            if self.closing:
                return
            rd0, wd0 = self.rd, self.wd
            combo0 = rd0 > 0 and rd0 == wd0
            if mode & MODE_R:
                self.rd = d
            if mode & MODE_W:
                self.wd = d
            combo = self.rd > 0 and self.rd == self.wd
            timers: list[tuple[float, int, int]] = []
            # Every change bumps the direction's seq so a timer armed for the
            # old deadline finds a different seq and does nothing.
            if self.rd != rd0 or combo != combo0:
                self.rseq += 1
                if self.rd > 0:
                    timers.append((self.rd, MODE_RW if combo else MODE_R, self.rseq))
            if self.wd != wd0 or combo != combo0:
                self.wseq += 1
                if self.wd > 0 and not combo:
                    timers.append((self.wd, MODE_W, self.wseq))
            rg = self._unblock(MODE_R, False) if self.rd < 0 else None
            wg = self._unblock(MODE_W, False) if self.wd < 0 else None
        if poller is not None:
            for when, tmode, seq in timers:
                poller.add_timer(when, self, tmode, seq)
        if rg is not None:
            self._wake(rg)
        if wg is not None:
            self._wake(wg)

    def deadline_fired(self, mode: int, seq: int) -> None:
        """netpolldeadlineimpl: a timer armed with ``seq`` went off."""
        with self.lock:
            current = self.rseq if mode & MODE_R else self.wseq
            if seq != current or self.closing:
                return  # stale: the deadline moved or the fd closed
            rg = wg = None
            if mode & MODE_R:
                self.rd = -1.0
                rg = self._unblock(MODE_R, False)
            if mode & MODE_W:
                self.wd = -1.0
                wg = self._unblock(MODE_W, False)
        if rg is not None:
            self._wake(rg)
        if wg is not None:
            self._wake(wg)

    # -- readiness and close ------------------------------------------------

    def ready(self, mode: int) -> int:
        """netpollready: the poller saw ``mode`` readiness; wake or latch.

        Returns how many parked Gs it woke (0-2).  The poller, its only
        caller, drops its parked count by the sum once per round (one lock
        trip per round instead of one per wakeup) and uses it to tell a busy
        round from a quiet one.

        This is :meth:`_unblock` with ``ioready=True`` spelled out for both
        directions, because the poll loop runs it for every event and the
        two extra calls showed up in its profile.
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
                old.ioready = True
                rg = old
        if mode & MODE_W:
            old = self.wg
            if old is None:
                self.wg = PD_READY
            elif old is not PD_READY:
                self.wg = None
                old.ioready = True
                wg = old
        lock.release()
        woken = 0
        if rg is not None:
            rg.ready()
            woken = 1
        if wg is not None:
            wg.ready()
            woken += 1
        return woken

    def evict(self) -> None:
        """poll_runtime_pollUnblock: mark closing and wake every waiter.

        After this every wait fails with the closing error; timers are
        invalidated by bumping both sequence numbers.
        """
        with self.lock:
            if self.closing:
                raise RuntimeError("netpoll: evict of a closing pollDesc")
            self.closing = True
            self.rseq += 1
            self.wseq += 1
            rg = self._unblock(MODE_R, False)
            wg = self._unblock(MODE_W, False)
        if rg is not None:
            self._wake(rg)
        if wg is not None:
            self._wake(wg)


class PollCache:
    """Go's pollcache: a free list of PollDescs, so descriptors are reused.

    Reuse is why ``fdseq`` exists: a reused PollDesc gets a new generation,
    and tokens of the old one stop matching.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[PollDesc] = []
        #: PollDescs handed out and not yet freed (a forked child re-registers them).
        self.live_set: set[PollDesc] = set()

    @property
    def live(self) -> int:
        """How many PollDescs are in use."""
        return len(self.live_set)

    def alloc(self, fd: int) -> PollDesc:
        """A clean PollDesc for ``fd`` with a fresh generation."""
        with self._lock:
            pd = self._free.pop() if self._free else PollDesc()
            self.live_set.add(pd)
        pd.fd = fd
        pd.fdseq += 1
        pd.token = (pd, pd.fdseq)
        pd.closing = False
        pd.is_file = False
        pd.rg = pd.wg = None
        pd.rd = pd.wd = 0.0
        pd.rseq += 1
        pd.wseq += 1
        return pd

    def free(self, pd: PollDesc) -> None:
        """Return ``pd`` to the cache; its generation ends here."""
        pd.fdseq += 1  # events still in flight for the old fd are now stale
        pd.token = None
        pd.poller = None
        pd.fd = -1
        with self._lock:
            self.live_set.discard(pd)
            self._free.append(pd)
