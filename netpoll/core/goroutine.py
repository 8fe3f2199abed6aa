"""Goroutine handles: what :func:`netpoll.go` returns (the public face of a G).

Go has no handle for a goroutine (``go f()`` is a statement); Python users
expect one, as :class:`threading.Thread` and :class:`concurrent.futures.Future`
give.  A :class:`Goroutine` is a small object wrapping the scheduler's G
(:class:`netpoll.core.g.GreenletG`, a greenlet subclass whose
``switch``/``throw``/``park``/``ready`` belong to the runtime), so that
``help(handle)`` shows only what a user may call: :meth:`~Goroutine.join`,
:meth:`~Goroutine.done`, :meth:`~Goroutine.result`,
:meth:`~Goroutine.exception` and :attr:`~Goroutine.name`.

Waiting (``join``, ``result``, ``exception``) parks a calling goroutine
(its M runs the others) and blocks a calling plain thread, through the G's
one-shot note (:class:`netpoll.core.park.Note`).

When an exception counts as collected
    A goroutine's exception is reported to :data:`netpoll.core.sched.excepthook`
    (by default printed to stderr with the goroutine's name, as
    :func:`threading.excepthook` does for a thread) at the moment the
    goroutine finishes, **unless a** :meth:`~Goroutine.result` **or**
    :meth:`~Goroutine.exception` **call is waiting for that goroutine then**:
    that caller receives it instead.  A ``result()``/``exception()`` made
    after the goroutine finished still returns (or raises) the exception,
    which was reported already; one that gave up with :class:`TimeoutError`
    collects nothing.  The rule is decided at one instant (the end of the
    goroutine), so no exception is ever dropped because a handle was kept
    or lost; an exception may be both reported and collected when the
    collector came late (gevent reports every one).  ``join()`` and
    ``done()`` never collect.  The exception of :func:`netpoll.run`'s main
    goroutine is ``run``'s to raise and is never reported.

Mirrors no Go file (Go has no goroutine handle); the shape follows
:class:`concurrent.futures.Future` and gevent's ``Greenlet`` (``get``,
``exception``, ``join``, ``dead``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from netpoll.core import g as g_kinds
from netpoll.core import sched
from netpoll.core.g import GreenletG

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# Guards GreenletG.collectors (result()/exception() calls may come from
# several threads at once; the G's own exit only reads it).
_collect_lock = threading.Lock()


class GoroutineKilled(Exception):
    """The goroutine was killed before it finished (its :func:`netpoll.run` ended).

    Raised by :meth:`Goroutine.result`, returned by
    :meth:`Goroutine.exception`: the goroutine got ``GreenletExit`` when the
    ``run`` whose M it lived on returned, or at interpreter exit, so it has
    no value.
    """


class Goroutine(Generic[T_co]):
    """A handle on a goroutine started by :func:`netpoll.go`.

    ``Goroutine[T]``: ``T`` is the type the goroutine's function returns.
    Handles are made by :func:`netpoll.go` and
    :func:`netpoll.current_goroutine`, not by users.  Two handles of the same
    goroutine compare equal.

    An exception that escapes the goroutine is reported (printed with the
    goroutine's name by ``netpoll.core.sched.excepthook``) when the goroutine
    ends, unless a :meth:`result` or :meth:`exception` call is waiting for
    it at that moment: that caller collects it instead.  A later call still
    gets it (after the report); ``join`` and ``done`` never collect.
    """

    __slots__ = ("__weakref__", "_g")

    def __init__(self, g: GreenletG) -> None:
        self._g = g

    @property
    def name(self) -> str:
        """``G<n>:<function's qualified name>``, unique in the process."""
        return self._g.name

    def done(self) -> bool:
        """True once the goroutine has finished (returned, raised or was killed)."""
        return self._g.done()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the goroutine has finished; True if it has, False on ``timeout``.

        A goroutine caller parks, a plain thread blocks.  ``timeout`` is in
        seconds (None: no limit; negative: ValueError).  Does not collect the
        goroutine's exception.
        """
        self._not_self("join")
        return self._g.join(timeout)

    def result(self, timeout: float | None = None) -> T_co:
        """The goroutine's return value, waiting for it to finish.

        Raises the goroutine's own exception if it raised one (collected,
        not reported, when this call was already waiting as the goroutine
        ended), :class:`GoroutineKilled` if it was killed first, and
        :class:`TimeoutError` if ``timeout`` seconds passed first.
        """
        g = self._g
        self._collect(timeout)
        exc = g.exception
        if exc is not None:
            raise exc
        if g.killed:
            raise GoroutineKilled(f"netpoll: goroutine {g.name} was killed before it finished")
        value: T_co = g.value
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the goroutine raised (None if it returned), waiting for it to finish.

        Collects the exception (it is not reported) when this call was
        already waiting as the goroutine ended.  A killed goroutine gives a
        :class:`GoroutineKilled`; ``timeout`` seconds passing first raises
        :class:`TimeoutError`.
        """
        g = self._g
        self._collect(timeout)
        if g.exception is not None:
            return g.exception
        if g.killed:
            return GoroutineKilled(f"netpoll: goroutine {g.name} was killed before it finished")
        return None

    def _collect(self, timeout: float | None) -> None:
        """Wait for the end as a collector: the G's exit sees us and does not report."""
        g = self._g
        if g.done():
            return
        self._not_self("wait for its own result")
        with _collect_lock:
            g.collectors += 1
        try:
            if not g.join(timeout):
                raise TimeoutError(f"netpoll: goroutine {g.name} did not finish within {timeout} s")
        finally:
            with _collect_lock:
                g.collectors -= 1

    def _not_self(self, what: str) -> None:
        if g_kinds.current_goroutine() is self._g and not self._g.done():
            raise RuntimeError(
                f"netpoll: goroutine {self._g.name} cannot {what}: it would wait forever"
            )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Goroutine):
            return self._g is other._g
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._g)

    def __repr__(self) -> str:
        g = self._g
        if not g.done():
            state = "running"
        elif g.exception is not None:
            state = f"raised {type(g.exception).__name__}"
        elif g.killed:
            state = "killed"
        else:
            state = "done"
        return f"<Goroutine {g.name} {state}>"


def handle_of(g: GreenletG) -> Goroutine[Any]:
    """The handle of ``g``: the one a caller holds, if any, else a new one.

    The G keeps only a weak reference to its handle (no cycle), so a handle
    nobody holds is freed and a later call makes another, equal one.
    """
    ref = g.handle
    h = ref() if ref is not None else None
    if h is None:
        h = Goroutine(g)
        g.handle = weakref.ref(h)
    return h


def g_of(handle: Goroutine[Any]) -> GreenletG:
    """The scheduler's G behind ``handle`` (for the runtime and its tests)."""
    return handle._g


def go(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Goroutine[T]:
    """Start ``fn(*args, **kwargs)`` as a goroutine and return its :class:`Goroutine` handle.

    Inside a goroutine the new G runs on the same M (a G never changes
    threads) unless ``NETPOLL_PROCS`` asks for more Ms (read from the
    environment at the M's first ``go``); from a plain thread it runs on a
    background M, started on first use.  Typed with
    ``ParamSpec``: mypy checks ``args``/``kwargs`` against ``fn``.
    """
    g = sched.go(fn, *args, **kwargs)
    # handle_of for a G nobody has asked about yet, inline.
    h: Goroutine[T] = Goroutine(g)
    g.handle = weakref.ref(h)
    return h


def current_goroutine() -> Goroutine[Any] | None:
    """The running goroutine's handle, or None when called from a plain thread."""
    g = g_kinds.current_goroutine()
    return None if g is None else handle_of(g)


sched.make_handle = handle_of

__all__ = ["Goroutine", "GoroutineKilled", "current_goroutine", "g_of", "go", "handle_of"]
