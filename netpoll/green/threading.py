"""The stdlib :mod:`threading` with locks whose waits park a goroutine.

gevent's counterparts are ``gevent/lock.py`` and ``gevent/event.py``
(patched in by ``gevent.monkey.patch_thread``); the semantics are CPython's
``Lib/threading.py`` and ``Modules/_threadmodule.c``.

:class:`Lock`, :class:`RLock`, :class:`Condition`, :class:`Event`,
:class:`Semaphore`, :class:`BoundedSemaphore` and :class:`Barrier` wait by
parking the calling G (:func:`netpoll.core.park.park_waiter`): a goroutine
lets its M run other goroutines, a plain thread blocks in the kernel as it
did before.  One object can be shared by goroutines of several Ms and plain
threads at once.  Each keeps its state under a private ``_thread`` lock that
is held only for a few instructions and never across a park.

What stays the stdlib's, and why:

* ``Thread``: a thread stays a thread (netpoll's goroutines are started with
  :func:`netpoll.go`, not by patching ``Thread``).  ``Thread.join`` and the
  interpreter's own thread bookkeeping use ``_thread`` locks, so ``join()``
  in a goroutine blocks its M: use ``netpoll.blocking(t.join)``.
* ``Timer`` runs in a thread as before.

:class:`local` is per goroutine (per thread outside goroutines), as gevent
makes it per greenlet: with the stdlib's, the goroutines of one M would share
one set of "thread-local" attributes (one connection, one transaction).

The owner of an :class:`RLock` is the goroutine, or the thread outside
goroutines, so two goroutines on one M exclude each other as two threads do.
"""

from __future__ import annotations

import _thread
import threading as _std
import time as _time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from netpoll.core.g import current_g, current_goroutine
from netpoll.core.park import Waiter, park_waiter
from netpoll.green import reexport as _reexport

_reexport(_std, globals())

if TYPE_CHECKING:
    # Every other name is the stdlib module's (copied above at run time).
    def __getattr__(name: str) -> Any: ...


_T = TypeVar("_T")
_allocate_lock = _thread.allocate_lock
_monotonic = _time.monotonic
_get_ident = _thread.get_ident
_OrigBarrier = _std.Barrier
_current_thread = _std.current_thread
_OrigRLock = _thread.RLock


def _me() -> object:
    """The owner identity of the caller: its goroutine, else its thread id."""
    g = current_goroutine()
    return g if g is not None else _get_ident()


def _deadline(blocking: bool, timeout: float) -> float | None:
    """Validate ``acquire(blocking, timeout)`` as CPython does; the monotonic deadline."""
    if not blocking and timeout != -1:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0 and timeout != -1:
        raise ValueError("timeout value must be a non-negative number")
    return None if timeout == -1 else _monotonic() + timeout


class Lock:
    """A non-reentrant lock; a waiting goroutine parks (FIFO hand-off on release).

    Same API as ``threading.Lock``: ``acquire(blocking=True, timeout=-1)``,
    ``release()`` (``RuntimeError`` when unlocked), ``locked()``, ``with``.
    Any G may release it, as with the stdlib's.
    """

    __slots__ = ("__weakref__", "_locked", "_mu", "_waiters")

    def __init__(self) -> None:
        self._mu = _allocate_lock()
        self._locked = False
        self._waiters: deque[Waiter] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; False if non-blocking and held, or ``timeout`` passed."""
        deadline = _deadline(blocking, timeout)
        with self._mu:
            if not self._locked:
                self._locked = True
                return True
            if not blocking or (deadline is not None and timeout == 0):
                return False
            w = Waiter(current_g())
            self._waiters.append(w)
        # release() hands the lock to the first waiter (it stays locked).
        return park_waiter(w, deadline, self._mu, self._waiters, "threading.Lock.acquire")

    acquire_lock = acquire

    def release(self) -> None:
        """Release the lock, handing it to the longest waiter if there is one."""
        with self._mu:
            if not self._locked:
                raise RuntimeError("release unlocked lock")
            if not self._waiters:
                self._locked = False
                return
            w = self._waiters.popleft()
            w.done = True
        w.g.ready()

    release_lock = release

    def locked(self) -> bool:
        """True while held."""
        return self._locked

    locked_lock = locked

    def _at_fork_reinit(self) -> None:
        self._mu = _allocate_lock()
        self._locked = False
        self._waiters = deque()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "locked" if self._locked else "unlocked"
        return f"<{state} netpoll.green.threading.Lock object at {id(self):#x}>"


class RLock:
    """A reentrant lock owned by a goroutine (or, outside goroutines, a thread)."""

    __slots__ = ("__weakref__", "_block", "_count", "_owner")

    def __init__(self) -> None:
        self._block = Lock()
        self._owner: object = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock, or count one more level if the caller holds it."""
        me = _me()
        if self._owner == me:
            self._count += 1
            return True
        if not self._block.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    def release(self) -> None:
        """Drop one level; the lock is free when the count reaches zero."""
        if self._owner != _me() or self._count <= 0:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = None
            self._block.release()

    def locked(self) -> bool:
        """True while held by anyone (Python 3.14's ``RLock.locked``)."""
        return self._block.locked()

    # The protocol Condition uses with an RLock (as threading._RLock offers).
    def _is_owned(self) -> bool:
        return self._owner == _me()

    def _release_save(self) -> tuple[int, object]:
        if self._count <= 0:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._block.release()
        return state

    def _acquire_restore(self, state: tuple[int, object]) -> None:
        self._block.acquire()
        self._count, self._owner = state

    def _recursion_count(self) -> int:
        return self._count if self._owner == _me() else 0

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner = None
        self._count = 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "locked" if self._block.locked() else "unlocked"
        return (
            f"<{state} netpoll.green.threading.RLock owner={self._owner!r} "
            f"count={self._count} at {id(self):#x}>"
        )


class Condition:
    """``threading.Condition`` whose :meth:`wait` parks the calling G.

    The lock defaults to a green :class:`RLock`; any lock with
    ``acquire``/``release`` works (an RLock-like one with ``_is_owned``,
    ``_release_save`` and ``_acquire_restore`` is used through those).
    """

    def __init__(self, lock: Any = None) -> None:
        if lock is None:
            lock = RLock()
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release
        for name in ("_release_save", "_acquire_restore", "_is_owned"):
            method = getattr(lock, name, None)
            if method is not None:
                setattr(self, name, method)
        self._mu = _allocate_lock()
        self._waiters: deque[Waiter] = deque()

    def __enter__(self) -> Any:
        return self._lock.__enter__()

    def __exit__(self, *args: object) -> Any:
        return self._lock.__exit__(*args)

    def __repr__(self) -> str:
        return f"<netpoll Condition({self._lock!r}, {len(self._waiters)})>"

    def _release_save(self) -> Any:
        self._lock.release()
        return None

    def _acquire_restore(self, state: Any) -> None:
        self._lock.acquire()

    def _is_owned(self) -> bool:
        # A plain lock: held by us if we cannot take it (CPython's heuristic).
        if self._lock.acquire(False):
            self._lock.release()
            return False
        return True

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()
        self._mu = _allocate_lock()
        self._waiters = deque()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, park until notified or ``timeout``, take the lock back."""
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        w = Waiter(current_g())
        with self._mu:
            self._waiters.append(w)
        deadline = None if timeout is None else _monotonic() + max(0.0, timeout)
        saved = self._release_save()
        try:
            return park_waiter(w, deadline, self._mu, self._waiters, "threading.Condition.wait")
        finally:
            self._acquire_restore(saved)

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Wait until ``predicate()`` is true (or ``timeout``); returns its last value."""
        deadline = None if timeout is None else _monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None
            if deadline is not None:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters (the lock must be held)."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        woken: list[Waiter] = []
        with self._mu:
            while self._waiters and len(woken) < n:
                w = self._waiters.popleft()
                w.done = True
                woken.append(w)
        for w in woken:
            w.g.ready()

    def notify_all(self) -> None:
        """Wake every waiter (the lock must be held)."""
        self.notify(len(self._waiters) + 1)

    notifyAll = notify_all


class Semaphore:
    """``threading.Semaphore`` whose :meth:`acquire` parks the calling G."""

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._cond = Condition(Lock())
        self._value = value

    def __repr__(self) -> str:
        return f"<netpoll {type(self).__name__} value={self._value}>"

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take one unit; False if non-blocking and none is free, or ``timeout`` passed."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        deadline = None if timeout is None else _monotonic() + timeout
        with self._cond:
            while self._value == 0:
                if not blocking:
                    return False
                if deadline is not None:
                    remaining = deadline - _monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                else:
                    self._cond.wait()
            self._value -= 1
            return True

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        """Give ``n`` units back, waking as many waiters."""
        if n < 1:
            raise ValueError("n must be one or more")
        with self._cond:
            self._value += n
            self._cond.notify(n)

    def __exit__(self, *args: object) -> None:
        self.release()


class BoundedSemaphore(Semaphore):
    """A :class:`Semaphore` that refuses to be released above its initial value."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._initial_value = value

    def release(self, n: int = 1) -> None:
        """Give ``n`` units back; ``ValueError`` past the initial value."""
        if n < 1:
            raise ValueError("n must be one or more")
        with self._cond:
            if self._value + n > self._initial_value:
                raise ValueError("Semaphore released too many times")
            self._value += n
            self._cond.notify(n)


class Event:
    """``threading.Event`` whose :meth:`wait` parks the calling G."""

    def __init__(self) -> None:
        self._cond = Condition(Lock())
        self._flag = False

    def __repr__(self) -> str:
        return f"<netpoll Event {'set' if self._flag else 'unset'}>"

    def _at_fork_reinit(self) -> None:
        self._cond._at_fork_reinit()

    def is_set(self) -> bool:
        """True once :meth:`set` and until :meth:`clear`."""
        return self._flag

    isSet = is_set

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        """Reset the flag."""
        with self._cond:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Park until the flag is set; returns the flag (False on ``timeout``)."""
        with self._cond:
            signaled = self._flag
            if not signaled:
                signaled = self._cond.wait(timeout)
            return signaled


class Barrier(_OrigBarrier):
    """``threading.Barrier`` on a green :class:`Condition`."""

    def __init__(
        self, parties: int, action: Callable[[], None] | None = None, timeout: float | None = None
    ) -> None:
        super().__init__(parties, action, timeout)
        self._cond = Condition(Lock())


def _local_key() -> object:
    """Whose attributes a :class:`local` shows: the goroutine's, else the thread's."""
    g = current_goroutine()
    return g if g is not None else _current_thread()


class _LocalImpl:
    """A :class:`local`'s per-owner dicts (weakly keyed: they go with their owner)."""

    __slots__ = ("__weakref__", "args", "dicts", "kw", "lock")

    def __init__(self, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        self.args = args
        self.kw = kw
        self.dicts: weakref.WeakKeyDictionary[object, dict[str, Any]] = weakref.WeakKeyDictionary()
        # Held only while one attribute access swaps the dict in (a plain
        # thread lock: nothing parks inside).
        self.lock = _OrigRLock()


def _local_enter(self: local) -> _LocalImpl:
    """Take the lock and put the caller's dict in place (running ``__init__`` if new)."""
    impl: _LocalImpl = object.__getattribute__(self, "_local__impl")
    impl.lock.acquire()
    try:
        key = _local_key()
        d = impl.dicts.get(key)
        if d is None:
            d = {}
            impl.dicts[key] = d
            object.__setattr__(self, "__dict__", d)
            init = type(self).__init__
            if init is not object.__init__:
                init(self, *impl.args, **impl.kw)
        else:
            object.__setattr__(self, "__dict__", d)
    except BaseException:
        impl.lock.release()
        raise
    return impl


class local:
    """``threading.local`` whose attributes belong to the goroutine (or thread).

    Subclasses work as with the stdlib's: ``__init__`` runs again, with the
    constructor's arguments, the first time each goroutine or thread touches
    the object.
    """

    __slots__ = ("__dict__", "__weakref__", "_local__impl")

    def __new__(cls, *args: Any, **kw: Any) -> local:
        if (args or kw) and cls.__init__ is object.__init__:
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        impl = _LocalImpl(args, kw)
        object.__setattr__(self, "_local__impl", impl)
        # The creator's dict is the one __init__ (run by the constructor) fills.
        impl.dicts[_local_key()] = object.__getattribute__(self, "__dict__")
        return self

    def __getattribute__(self, name: str) -> Any:
        if name in ("_local__impl", "__class__"):
            return object.__getattribute__(self, name)
        impl = _local_enter(self)
        try:
            return object.__getattribute__(self, name)
        finally:
            impl.lock.release()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__dict__":
            raise AttributeError(
                f"{type(self).__name__!r} object attribute '__dict__' is read-only"
            )
        impl = _local_enter(self)
        try:
            object.__setattr__(self, name, value)
        finally:
            impl.lock.release()

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError(
                f"{type(self).__name__!r} object attribute '__dict__' is read-only"
            )
        impl = _local_enter(self)
        try:
            object.__delattr__(self, name)
        finally:
            impl.lock.release()


#: The names this module replaces in the stdlib's.
GREEN_NAMES = (
    "Lock",
    "RLock",
    "Condition",
    "Event",
    "Semaphore",
    "BoundedSemaphore",
    "Barrier",
    "local",
)

__all__ = sorted({*_std.__all__, *GREEN_NAMES})
