"""Channels and select (Go's ``runtime/chan.go`` and ``runtime/select.go``).

A :class:`Chan` works between any two Gs: goroutines on any M and plain
threads, in both directions.  Its state (buffer, closed flag, the queues of
parked senders and receivers) sits behind one lock per channel; a parked
operation is a :class:`_Sudog` in a queue, pointing at the parked G's
:class:`_Select`, which a counterpart *claims* before it hands over a value.
Claiming is what lets one select wait on many channels: the first channel
operation to claim it wins, the others find it claimed and skip it (Go's
``selectDone``).  The claim is a non-blocking lock acquire, Python's only
portable compare-and-swap.

Invariants (Go's): a channel's ``recvq`` is non-empty only while its buffer
is empty, and its ``sendq`` only while the buffer is full; an unbuffered
channel is a rendezvous (a send completes only when a receiver took the
value); ``close`` wakes every parked receiver (they get ``ok=False``) and
every parked sender (they raise :class:`ChanClosed`); values already in the
buffer are still received after close.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from netpoll.core.g import current_g
from netpoll.core.park import Waiter, park

T = TypeVar("T")

_monotonic = time.monotonic


class ChanClosed(Exception):
    """Send on a closed channel, receive from a closed and drained one, or a second close."""


class _Select(Waiter):
    """One parked operation (a plain send/recv is a select of one case).

    The Waiter the G parks on (:func:`netpoll.core.park.park`); its
    :attr:`done` is set (after case/value/ok) by the claimer.  Each case's
    queue entry is a :class:`_Sudog` pointing here, as Go's per-case sudogs
    point at one select's state.
    """

    __slots__ = ("_claim", "case", "ok", "value")

    def __init__(self, g: Any) -> None:
        super().__init__(g)
        self._claim = threading.Lock()
        self.case = -1
        self.value: Any = None
        self.ok = False

    def claim(self) -> bool:
        """Take this select for one case; False if another case took it."""
        return self._claim.acquire(False)

    def finish(self, case: int, value: Any, ok: bool) -> None:
        """Hand the outcome over and wake the G (the caller claimed it)."""
        self.case = case
        self.value = value
        self.ok = ok
        self.done = True
        self.g.ready()


class _Sudog:
    """A select's entry in one channel queue: which case, and the value to send."""

    __slots__ = ("case", "elem", "sel")

    def __init__(self, sel: _Select, case: int, elem: Any) -> None:
        self.sel = sel
        self.case = case
        self.elem = elem


#: A sender woken by close raises instead of returning.
_CLOSED = object()


class Chan(Generic[T]):
    """Go's channel: ``Chan(0)`` is a rendezvous, ``Chan(n)`` buffers n values."""

    def __init__(self, cap: int = 0) -> None:
        if isinstance(cap, bool) or not isinstance(cap, int):
            raise TypeError(f"netpoll.Chan: capacity must be an int, not {type(cap).__name__}")
        if cap < 0:
            raise ValueError(f"netpoll.Chan: negative capacity {cap}")
        self.cap = cap
        self._lock = threading.Lock()
        self._buf: deque[T] = deque()
        self._closed = False
        self._recvq: deque[_Sudog] = deque()
        self._sendq: deque[_Sudog] = deque()

    def __len__(self) -> int:
        """How many values are buffered now."""
        return len(self._buf)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Chan cap={self.cap} len={len(self._buf)} {state}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # -- the parts under the lock (shared by the plain ops and select) ---------

    def _try_send_locked(self, value: Any) -> bool:
        """Send without parking if a receiver waits or the buffer has room."""
        if self._closed:
            raise ChanClosed("send on closed channel")
        recvq = self._recvq
        while recvq:
            sg = recvq.popleft()
            if sg.sel.claim():
                sg.sel.finish(sg.case, value, True)
                return True
        if len(self._buf) < self.cap:
            self._buf.append(value)
            return True
        return False

    def _try_recv_locked(self) -> tuple[bool, Any, bool]:
        """Receive without parking: ``(done, value, ok)``."""
        buf = self._buf
        sendq = self._sendq
        if buf:
            value = buf.popleft()
            # A parked sender's value takes the freed slot (FIFO order holds).
            while sendq:
                sg = sendq.popleft()
                if sg.sel.claim():
                    buf.append(sg.elem)
                    sg.sel.finish(sg.case, None, True)
                    break
            return True, value, True
        while sendq:
            sg = sendq.popleft()
            if sg.sel.claim():
                sg.sel.finish(sg.case, None, True)
                return True, sg.elem, True
        if self._closed:
            return True, None, False
        return False, None, False

    # -- send / receive / close ------------------------------------------------

    def send(self, value: T, timeout: float | None = None) -> None:
        """Send ``value``, parking until a receiver (or buffer room) takes it.

        Raises :class:`ChanClosed` if the channel is (or gets) closed, and
        :class:`TimeoutError` if ``timeout`` seconds pass first.
        """
        index, _, _ = select([SendCase(self, value)], timeout=timeout)
        if index < 0:
            raise TimeoutError("netpoll.Chan.send: timed out")

    def recv_ok(self, timeout: float | None = None) -> tuple[T | None, bool]:
        """Receive: ``(value, True)``, or ``(None, False)`` once closed and drained.

        Raises :class:`TimeoutError` if ``timeout`` seconds pass first.
        """
        index, value, ok = select([RecvCase(self)], timeout=timeout)
        if index < 0:
            raise TimeoutError("netpoll.Chan.recv: timed out")
        return value, ok

    def recv(self, timeout: float | None = None) -> T:
        """Receive a value; raises :class:`ChanClosed` once closed and drained."""
        value, ok = self.recv_ok(timeout)
        if not ok:
            raise ChanClosed("receive from closed channel")
        return value  # type: ignore[return-value]

    def __iter__(self) -> Iterator[T]:
        """Receive until the channel is closed and drained (Go's ``range ch``)."""
        while True:
            value, ok = self.recv_ok()
            if not ok:
                return
            yield value  # type: ignore[misc]

    def close(self) -> None:
        """Close: parked receivers get ``ok=False``, parked senders raise ChanClosed."""
        with self._lock:
            if self._closed:
                raise ChanClosed("close of closed channel")
            self._closed = True
            receivers = list(self._recvq)
            senders = list(self._sendq)
            self._recvq.clear()
            self._sendq.clear()
        for sg in receivers:
            if sg.sel.claim():
                sg.sel.finish(sg.case, None, False)
        for sg in senders:
            if sg.sel.claim():
                sg.sel.finish(sg.case, _CLOSED, False)


class RecvCase(NamedTuple):
    """A receive case of :func:`select`."""

    chan: Chan[Any]


class SendCase(NamedTuple):
    """A send case of :func:`select`."""

    chan: Chan[Any]
    value: Any


class Selected(NamedTuple):
    """What :func:`select` did: which ``case`` (-1: default or timeout), value, ok."""

    case: int
    value: Any
    ok: bool


def select(
    cases: Sequence[RecvCase | SendCase], *, default: bool = False, timeout: float | None = None
) -> Selected:
    """Go's ``select`` over channel sends and receives.

    Among the cases ready at once one is chosen at random (Go's fairness);
    with none ready, ``default=True`` returns ``Selected(-1, None, False)`` at
    once, otherwise the caller parks until a case can proceed or ``timeout``
    seconds pass (then also index -1).  A receive case gives ``(value, ok)``
    as :meth:`Chan.recv_ok`; a send case on a closed channel raises
    :class:`ChanClosed`.
    """
    if timeout is not None and (timeout != timeout or timeout < 0):
        raise ValueError(f"netpoll.select: negative or NaN timeout {timeout}")
    for c in cases:
        if not isinstance(c, (RecvCase, SendCase)) or not isinstance(c.chan, Chan):
            raise TypeError(f"netpoll.select: not a RecvCase/SendCase: {c!r}")
    if not cases:
        if default:
            return Selected(-1, None, False)
        if timeout is None:
            raise ValueError("netpoll.select: no cases, no default and no timeout: blocks forever")
    order = list(range(len(cases)))
    if len(order) > 1:
        random.shuffle(order)
    chans = _lock_order(cases)
    for ch in chans:
        ch._lock.acquire()
    try:
        for i in order:
            c = cases[i]
            if type(c) is SendCase:
                if c.chan._try_send_locked(c.value):
                    return Selected(i, None, True)
            else:
                done, value, ok = c.chan._try_recv_locked()
                if done:
                    return Selected(i, value, ok)
        if default or timeout == 0:
            return Selected(-1, None, False)
        sel = _Select(current_g())
        sudogs = []
        for i, c in enumerate(cases):
            if type(c) is SendCase:
                sg = _Sudog(sel, i, c.value)
                c.chan._sendq.append(sg)
            else:
                sg = _Sudog(sel, i, None)
                c.chan._recvq.append(sg)
            sudogs.append(sg)
    finally:
        for ch in reversed(chans):
            ch._lock.release()
    deadline = None if timeout is None else _monotonic() + timeout
    try:
        # Giving up is claiming: at the deadline the select wins its own
        # claim (it times out, sel.case stays -1) or finds a counterpart
        # claimed it first (its finish() follows).  Interrupted
        # (GreenletExit, KeyboardInterrupt) after a counterpart claimed it,
        # the value goes with the exception, as Go loses a value when a
        # goroutine panics mid-receive.
        if len(cases) != 1:
            reason = "select" if cases else "select (no cases)"
        else:
            reason = "chan receive" if isinstance(cases[0], RecvCase) else "chan send"
        park(sel, deadline, sel.claim, reason)
    finally:
        _dequeue_others(cases, sudogs, chans)
    if sel.case < 0:
        return Selected(-1, None, False)
    if sel.value is _CLOSED:
        raise ChanClosed("send on closed channel")
    return Selected(sel.case, sel.value, sel.ok)


def _lock_order(cases: Sequence[RecvCase | SendCase]) -> list[Chan[Any]]:
    """Each channel once, in a global order (Go's ``sellock``: by address)."""
    unique = {id(c.chan): c.chan for c in cases}
    return [unique[k] for k in sorted(unique)]


def _dequeue_others(
    cases: Sequence[RecvCase | SendCase], sudogs: list[_Sudog], chans: list[Chan[Any]]
) -> None:
    """Take this select's remaining entries out of every channel queue."""
    for ch in chans:
        with ch._lock:
            for sg in sudogs:
                q = ch._sendq if type(cases[sg.case]) is SendCase else ch._recvq
                if cases[sg.case].chan is ch:
                    try:
                        q.remove(sg)
                    except ValueError:
                        pass  # popped by the case that won, or by close


__all__ = ["Chan", "ChanClosed", "RecvCase", "Selected", "SendCase", "select"]
