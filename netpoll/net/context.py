"""DialContext: a dial's deadline and cancellation (the part of Go's ``context`` dial uses).

Go threads a ``context.Context`` through ``DialContext``: it carries the
deadline (the earliest of ``Timeout``, ``Deadline`` and the caller's own), it
can be canceled, and children (one per happy-eyeballs racer, one per address
with a partial deadline) are canceled with their parent.  While a connect is
parked, Go's context watcher reacts to cancellation by setting the socket's
write deadline to the past (``netFD.connect`` in ``net/fd_unix.go``), which
wakes the parked connect at once; it then reports the context's error
instead of the timeout.

:class:`DialContext` is that, with threads: :meth:`DialContext.cancel` runs
the registered callbacks (which set a past write deadline on the FDs being
connected, or wake a name lookup) and cancels the children.  A user's cancel
object (a :class:`threading.Event` or anything with ``is_set()`` and
``wait(timeout)``) is watched by :class:`CancelWatcher`, a short-lived thread
that lives only as long as the dial.
"""

from __future__ import annotations

import datetime as _datetime
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from netpoll.core.errors import DeadlineExceededError
from netpoll.net.errors import CanceledError


class CancelEvent(Protocol):
    """What ``Dialer(cancel=...)`` accepts: a :class:`threading.Event` or alike."""

    def is_set(self) -> bool:
        """True once the operation should be abandoned."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds passed; True if set."""


class DialContext:
    """A deadline (wall-clock seconds or None) plus cancellation, with children."""

    def __init__(self, deadline: float | None = None, parent: DialContext | None = None) -> None:
        if parent is not None and parent.deadline is not None:
            deadline = parent.deadline if deadline is None else min(deadline, parent.deadline)
        self.deadline: float | None = deadline
        self._lock = threading.Lock()
        self._err: OSError | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._children: set[DialContext] = set()
        self._parent = parent
        #: True when a user's cancel event is watched (a lookup then needs a
        #: worker thread even without a deadline).
        self.watched: bool = parent.watched if parent is not None else False
        if parent is not None:
            parent._adopt(self)

    def _adopt(self, child: DialContext) -> None:
        with self._lock:
            err = self._err
            if err is None:
                self._children.add(child)
        if err is not None:
            child.cancel(err)

    def child(self, deadline: float | None = None) -> DialContext:
        """A context canceled with this one, with a deadline no later than ours."""
        return DialContext(deadline, self)

    def release(self) -> None:
        """Detach from the parent (Go's ``defer cancel()`` of a child context)."""
        parent = self._parent
        if parent is not None:
            with parent._lock:
                parent._children.discard(self)
            self._parent = None

    # -- cancellation -------------------------------------------------------

    def cancel(self, err: OSError | None = None) -> None:
        """Cancel with ``err`` (default "operation was canceled"); runs callbacks once."""
        with self._lock:
            if self._err is not None:
                return
            self._err = err if err is not None else CanceledError()
            callbacks = list(self._callbacks.values())
            children = list(self._children)
            self._children.clear()
        for cb in callbacks:
            cb()
        for child in children:
            child.cancel(self._err)

    @property
    def canceled(self) -> bool:
        """True once :meth:`cancel` was called (on this context or a parent)."""
        return self._err is not None

    def err(self) -> OSError | None:
        """The cancel error, a timeout if the deadline passed, else None (Go's ``Err``)."""
        if self._err is not None:
            return self._err
        if self.deadline is not None and time.time() >= self.deadline:
            return DeadlineExceededError()
        return None

    def on_cancel(self, cb: Callable[[], None]) -> int:
        """Run ``cb`` when canceled (at once if already); returns a handle."""
        with self._lock:
            if self._err is None:
                handle = self._next
                self._next += 1
                self._callbacks[handle] = cb
                return handle
        cb()
        return -1

    def remove(self, handle: int) -> None:
        """Forget a callback registered with :meth:`on_cancel`."""
        with self._lock:
            self._callbacks.pop(handle, None)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be <= 0), or None."""
        if self.deadline is None:
            return None
        return self.deadline - time.time()


class CancelWatcher:
    """Watches a user's cancel event and cancels a :class:`DialContext` when it fires.

    Go's context has a channel to select on; a :class:`threading.Event` can
    only be waited on, so the watcher thread waits in short slices and also
    checks whether the dial has finished.  :meth:`stop` ends it (joining the
    thread, so a finished dial leaves no thread behind).
    """

    #: How long one wait slice lasts: the bound on cancel latency and on
    #: how long ``stop`` may take.
    SLICE = 0.02

    def __init__(self, event: Any, ctx: DialContext) -> None:
        self._event = event
        self._ctx = ctx
        ctx.watched = True
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="net-dial-cancel", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event, done = self._event, self._done
        while not done.is_set():
            if event.wait(self.SLICE):
                self._ctx.cancel()
                return

    def stop(self) -> None:
        """Stop watching and wait for the thread to end."""
        self._done.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


#: How far in the past a numeric deadline may be before :func:`as_deadline`
#: refuses it as a relative time given by mistake (``set_read_deadline(5)``).
RELATIVE_DEADLINE_LIMIT = 86400.0

_EPOCH = _datetime.datetime(1970, 1, 1, tzinfo=_datetime.timezone.utc)


def _datetime_seconds(t: _datetime.datetime) -> float:
    if t.replace(tzinfo=None) == _datetime.datetime.max:
        # The largest datetime is how "never" is spelled; its timestamp is
        # not even representable in every time zone.
        return float("inf")
    try:
        return t.timestamp()
    except (OverflowError, ValueError, OSError):
        # A naive datetime at the ends of the range (year 1, year 9999) that
        # the platform cannot convert from local time: at that distance from
        # now, reading it as UTC is exact enough.
        return (t.replace(tzinfo=_datetime.timezone.utc) - _EPOCH).total_seconds()


def as_deadline(t: Any) -> float | None:
    """A deadline as wall-clock seconds: ``None``, a ``time.time()`` float or a datetime.

    Deadlines are absolute.  A number more than a day
    (:data:`RELATIVE_DEADLINE_LIMIT`) in the past is refused with a
    :class:`ValueError`: ``set_read_deadline(5)`` is almost surely a
    timeout meant as ``time.time() + 5``, and would otherwise time out at
    once with a bare "i/o timeout".  To make pending I/O time out now, pass
    ``time.time()``; a datetime is taken as given, however old (Go's
    ``aLongTimeAgo`` is ``datetime.datetime(1970, 1, 1, 0, 0, 1,
    tzinfo=datetime.timezone.utc)``).

    ``float("inf")`` and ``datetime.datetime.max`` mean "never" and are
    returned as ``float("inf")``.  A naive datetime is local time (as
    :meth:`datetime.datetime.timestamp` reads it); an aware one is
    converted.  Raises :class:`TypeError` for anything else and
    :class:`ValueError` for NaN.
    """
    if t is None:
        return None
    if isinstance(t, _datetime.datetime):
        return _datetime_seconds(t)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(
            "netpoll: a deadline is None, a time.time() float or a datetime, "
            f"not {type(t).__name__}"
        )
    try:
        value = float(t)
    except OverflowError:  # an int beyond float range
        value = float("inf") if t > 0 else float("-inf")
    if value != value:
        raise ValueError("netpoll: deadline is NaN")
    if value < time.time() - RELATIVE_DEADLINE_LIMIT:
        raise ValueError(
            f"netpoll: deadline {t!r} is more than a day in the past: it looks like a "
            "relative time (or a time.monotonic() reading), but deadlines are absolute "
            f"wall-clock times: time.time() + {t!r}; "
            "to make pending I/O time out now, pass time.time()"
        )
    return value


__all__ = [
    "RELATIVE_DEADLINE_LIMIT",
    "CancelEvent",
    "CancelWatcher",
    "DialContext",
    "as_deadline",
]
