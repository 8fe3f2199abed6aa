"""What every poller backend shares: the bases a backend class builds on.

Go writes one file per poller (``runtime/netpoll_epoll.go``,
``netpoll_kqueue.go``, ``netpoll_aix.go``) and repeats the wakeup and the
bookkeeping in each.  Here they live once, the way CPython's ``selectors``
module shares ``_PollLikeSelector`` between poll and epoll:

:class:`Wakeup`
    the channel that makes a blocked wait return (Go's ``netpollBreak``):
    :class:`netpoll.core.wakefd.WakeFd` (an ``eventfd`` where
    :func:`os.eventfd` exists, else a non-blocking pipe) with a pending flag.
:class:`PollerBase`
    the lock, the fd -> token table, the closed flag, fork-safe
    :meth:`~PollerBase.shutdown`, ``netpollinit``/``netpollbreak``, the
    default ``netpollwait`` (:func:`wait_with_poll`) and
    :meth:`~PollerBase.backend_spec`.
:class:`EdgeTriggeredPoller`
    epoll and kqueue: every fd is registered once for both directions and the
    kernel reports changes, so ``netpollarm`` has nothing to do.
:class:`LevelTriggeredPoller`
    poll and select: one-shot interest.  ``netpollopen`` only remembers the
    fd, ``netpollarm`` adds a direction just before a waiter parks (waking a
    wait in progress, which only sees the set it started with), and a
    reported direction is dropped again, so a ready fd nobody waits on never
    makes the poller spin.  A subclass supplies only the OS wait.
:func:`probe_with_pipe`
    a probe that tries the mechanism on a pipe, for ``BackendSpec.probe``.

A subclass implements the ``_``-prefixed primitives each base names; the
hook methods (``netpollopen`` ...) are the contract,
:class:`netpoll.core.hookspecs.Poller`.  Like every backend, this module imports
nothing from netpoll but the core's two leaf modules a backend may use,
:mod:`netpoll.core.hookspecs` and :mod:`netpoll.core.wakefd`.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from netpoll.core.hookspecs import (
    MAX_WAIT,
    MODE_R,
    MODE_RW,
    MODE_W,
    MODE_WAKE,
    BackendSpec,
    Poller,
    clamp_timeout,
)
from netpoll.core.wakefd import WakeFd


class Wakeup(WakeFd):
    """A poller's wakeup: the process's one wake channel plus a pending flag.

    The channel (an eventfd, or a non-blocking pipe) is
    :class:`netpoll.core.wakefd.WakeFd`; :attr:`rfd` is its read side under
    the name the pollers use.  The poller watches it for reading,
    level-triggered, so a missed drain makes the next wait return at once
    rather than sleep.  Notifications coalesce through :attr:`pending`,
    which only :meth:`drain` clears, after reading (Go's ``netpollWakeSig``
    order): a notify that finds the flag still set is answered by the wait
    that is about to drain.  Not thread-safe by itself: callers hold their
    poller's lock.
    """

    __slots__ = ("pending", "rfd")

    def __init__(self, *, use_eventfd: bool = True) -> None:
        super().__init__(use_eventfd=use_eventfd)
        #: The descriptor to watch for reading (the channel's ``fd``).
        self.rfd = self.fd
        #: True from a notify until the poller has drained it.
        self.pending = False

    def notify(self) -> None:
        """Make the read side readable, unless a wakeup is pending already."""
        if self.pending:
            return
        self.pending = True
        WakeFd.notify(self)  # not super(): this is on every cross-thread wakeup

    def drain(self) -> None:
        """Consume every pending notification, then clear :attr:`pending`."""
        WakeFd.drain(self)
        self.pending = False


class PollerBase:
    """The state and life cycle every poller has; see the module docstring.

    Invariants: :attr:`lock` guards the Python-side state and is never held
    across the blocking OS wait; ``_open_locked`` runs at most once, before
    any other OS call; after :meth:`shutdown` every hook but ``netpoll`` and
    ``netpollbreak`` (which return quietly) raises :class:`RuntimeError`.
    """

    #: The backend's name (``BackendSpec.name``, error messages).
    name: ClassVar[str]
    #: False when the core must ``netpollarm`` before each park; set by
    #: :class:`EdgeTriggeredPoller` / :class:`LevelTriggeredPoller` and copied
    #: into the spec by :meth:`backend_spec`, so it is stated once.
    edge_triggered: ClassVar[bool]
    #: True when events carry MODE_EXCEPT (``BackendSpec.reports_except``);
    #: copied into the spec the same way.
    reports_except: ClassVar[bool] = False

    def __init__(self) -> None:
        #: Guards the token table, the wakeup flag and the closed flag.  Public
        #: so that a test can hold it (as a poll thread would at fork time).
        self.lock = threading.Lock()
        self._tokens: dict[int, object] = {}
        #: The wakeup channel, made by ``_open_locked`` (None: not made, or
        #: the backend wakes another way, like kqueue's EVFILT_USER).
        self._wakeup: Wakeup | None = None
        self._opened = False
        self._closed = False
        # See shutdown(): a forked child must not wait for the parent's threads.
        self._pid = os.getpid()

    @classmethod
    def backend_spec(
        cls,
        *,
        priority: int,
        probe: Callable[[], str | None],
        description: str,
        create: Callable[[], Poller] | None = None,
    ) -> BackendSpec:
        """The :class:`BackendSpec` of this poller class (``create`` defaults to the class)."""
        return BackendSpec(
            name=cls.name,
            priority=priority,
            probe=probe,
            create=cls if create is None else create,
            edge_triggered=cls.edge_triggered,
            description=description,
            reports_except=cls.reports_except,
        )

    # -- what a subclass provides --------------------------------------------

    def _open_locked(self) -> None:
        """Create the OS poller object and :attr:`_wakeup`, and watch its ``rfd``.

        Called once, lock held.  On an exception :meth:`_release_locked` runs
        and the wakeup is closed, so a half-made state needs no cleanup here.
        """
        raise NotImplementedError

    def _release_locked(self) -> None:
        """Close the OS poller object (once, lock held; possibly half made or never made)."""

    def _wait(self, timeout: float | None) -> Iterable[tuple[int, int]]:
        """Block in the OS for up to ``timeout`` seconds (``None``: no limit, already clamped).

        Returns ``(fd, modes)`` pairs for ready fds, the wakeup's ``rfd``
        included; a hung-up or invalid fd is reported as :data:`MODE_RW`.
        Called without the lock.
        """
        raise NotImplementedError

    def _wake_locked(self) -> None:
        """Make a blocked wait return; repeated calls coalesce."""
        if self._wakeup is not None:
            self._wakeup.notify()

    # -- shared machinery --------------------------------------------------------

    def _init_locked(self) -> None:
        if self._closed:
            raise RuntimeError(f"netpoll: {self.name} backend is shut down")
        if self._opened:
            return
        try:
            self._open_locked()
        except BaseException:
            self._release_all_locked()
            raise
        self._opened = True

    def _release_all_locked(self) -> None:
        self._release_locked()
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.close()

    def _wait_events(self, timeout: float | None) -> Iterable[tuple[int, int]]:
        """:meth:`_wait`, with a shutdown from another thread turned into no events."""
        try:
            return self._wait(clamp_timeout(timeout))
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            return ()
        except (OSError, ValueError):
            if self._closed:
                return ()  # the OS object was closed under our feet
            raise

    def _is_wakeup(self, fd: int) -> bool:
        """True (after draining it) when ``fd`` is the wakeup channel; lock held."""
        wakeup = self._wakeup
        if wakeup is None or fd != wakeup.rfd:
            return False
        wakeup.drain()  # reads, then clears the flag, as Go does
        return True

    # -- hooks --------------------------------------------------------------------

    def netpollopen(self, fd: int, token: object) -> None:
        """See :meth:`netpoll.core.hookspecs.Poller.netpollopen`; the two bases implement it."""
        raise NotImplementedError

    def netpollclose(self, fd: int) -> None:
        """See :meth:`netpoll.core.hookspecs.Poller.netpollclose`; the two bases implement it."""
        raise NotImplementedError

    def netpollarm(self, fd: int, mode: int) -> None:
        """See :meth:`netpoll.core.hookspecs.Poller.netpollarm`; the two bases implement it."""
        raise NotImplementedError

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """See :meth:`netpoll.core.hookspecs.Poller.netpoll`; the two bases implement it."""
        raise NotImplementedError

    def netpollinit(self) -> None:
        """Create the OS poller and its wakeup channel (idempotent)."""
        with self.lock:
            self._init_locked()

    def netpollbreak(self) -> None:
        """Wake a blocked ``netpoll``; repeated calls coalesce; quiet after shutdown."""
        with self.lock:
            if self._closed:
                return
            self._init_locked()
            self._wake_locked()

    def fds(self) -> frozenset[int]:
        """The descriptors this poller holds (its OS object and wakeup channel).

        Not a hook: the runtime reads it so that a leak check can tell the
        pollers' own descriptors from the ones a program leaked.
        """
        with self.lock:
            own = set(self._os_fds_locked())
            wakeup = self._wakeup
            if wakeup is not None:
                own.update((wakeup.rfd, wakeup.wfd))
        return frozenset(own)

    def _os_fds_locked(self) -> tuple[int, ...]:
        """The OS poller object's own descriptor(s), if it has any."""
        return ()

    def netpollwait(self, fd: int, mode: int, wake_fd: int, timeout: float | None) -> int:
        """A parked thread's wait on ``fd`` plus ``wake_fd``: :func:`wait_with_poll`.

        For two descriptors and one wait, poll(2) is the cheapest call on
        every system that has it: an epoll or kqueue set would cost extra
        system calls to build and tear down per wait.
        """
        return wait_with_poll(fd, mode, wake_fd, timeout)

    def shutdown(self) -> None:
        """Close the poller and its wakeup channel; safe to call twice.

        Also safe in a forked child (the core calls it there to drop the
        parent's poller), even if a parent thread held the lock at fork time.
        """
        if os.getpid() != self._pid:
            # After fork the lock may be held by a thread that does not exist
            # in this process (the parent's poll thread): take a fresh one.
            self.lock = threading.Lock()
            self._pid = os.getpid()
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self._tokens.clear()
            self._release_all_locked()


class EdgeTriggeredPoller(PollerBase):
    """A poller whose kernel reports readiness changes by itself (epoll, kqueue).

    A subclass provides ``_open_locked``, ``_release_locked``, ``_wait`` and
    ``_watch_locked``/``_unwatch_locked``; ``_wait`` may report an fd twice
    (kqueue has a filter per direction): the reports are merged here.
    """

    edge_triggered = True

    def _watch_locked(self, fd: int) -> None:
        """Register ``fd`` for both directions, edge-triggered; raise the OS error."""
        raise NotImplementedError

    def _unwatch_locked(self, fd: int) -> None:
        """Remove ``fd``'s registration; an fd closed already is no error."""
        raise NotImplementedError

    def netpollopen(self, fd: int, token: object) -> None:
        """Register ``fd`` for read and write, for its lifetime; raises the OS error."""
        with self.lock:
            if not self._opened or self._closed:  # _init_locked's own test, inline
                self._init_locked()
            # The token goes in first: the very first edge may be reported by
            # a concurrent wait before the registration call has returned.
            previous = self._tokens.get(fd)
            self._tokens[fd] = token
            try:
                self._watch_locked(fd)
            except BaseException:
                if previous is None:
                    del self._tokens[fd]
                else:
                    self._tokens[fd] = previous
                raise

    def netpollclose(self, fd: int) -> None:
        """Forget ``fd``; unknown or already closed fds are ignored."""
        with self.lock:
            if self._tokens.pop(fd, None) is not None and self._opened and not self._closed:
                self._unwatch_locked(fd)

    def netpollarm(self, fd: int, mode: int) -> None:
        """Nothing to do: every registered fd is watched in both directions already."""

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait up to ``timeout`` seconds; return ``[(token, modes), ...]``, one per fd."""
        if not self._opened:
            with self.lock:
                self._init_locked()
        merged: dict[int, int] = {}
        for fd, modes in self._wait_events(timeout):
            if self._wakeup is not None and fd == self._wakeup.rfd:
                with self.lock:
                    self._is_wakeup(fd)
                continue
            merged[fd] = merged.get(fd, 0) | modes
        tokens = self._tokens
        result: list[tuple[object, int]] = []
        for fd, modes in merged.items():
            token = tokens.get(fd)
            if token is not None and modes:  # None: closed meanwhile
                result.append((token, modes))
        return result


class LevelTriggeredPoller(PollerBase):
    """One-shot interest over a level-triggered OS wait (poll, select).

    Invariants: ``_interest`` holds only registered fds with some armed
    direction; a direction leaves it when reported (or when the fd is hung
    up: then all of them, else the wait would spin on it); ``_polling`` is
    True from before the OS wait starts until it returned, and only then
    does a change of interest need a wakeup.  A subclass provides
    ``_open_locked``, ``_wait`` (reading ``_interest`` under the lock if it
    snapshots it) and, if its OS object keeps an fd set, ``_watch_locked``.
    """

    edge_triggered = False

    def __init__(self) -> None:
        super().__init__()
        #: fd -> armed modes (only fds with some interest).
        self._interest: dict[int, int] = {}
        self._polling = False

    def _check_fd(self, fd: int) -> None:
        """Raise if the mechanism cannot watch ``fd`` (select: ``FD_SETSIZE``)."""
        if fd < 0:
            raise ValueError(f"netpoll: bad file descriptor {fd}")

    def _watch_locked(self, fd: int, modes: int) -> None:
        """``fd``'s armed modes are now ``modes`` (0: none); for OS-side fd sets."""

    def _set_interest_locked(self, fd: int, modes: int) -> None:
        if modes:
            self._interest[fd] = modes
        else:
            self._interest.pop(fd, None)
        self._watch_locked(fd, modes)

    def netpollopen(self, fd: int, token: object) -> None:
        """Remember ``fd`` and its token; nothing is watched until armed."""
        self._check_fd(fd)
        with self.lock:
            self._init_locked()
            self._tokens[fd] = token

    def netpollclose(self, fd: int) -> None:
        """Forget ``fd`` and its interest; wake a wait that is watching it.

        The wakeup matters: while poll(2)/select(2) is blocked on ``fd`` the
        kernel holds a reference to the open file, so closing the descriptor
        would not close the socket (the peer would see no EOF) until the wait
        ends.
        """
        with self.lock:
            self._tokens.pop(fd, None)
            if fd in self._interest:
                self._set_interest_locked(fd, 0)
                if self._polling:
                    self._wake_locked()

    def netpollarm(self, fd: int, mode: int) -> None:
        """Watch ``fd`` for ``mode`` until reported once; wakes a wait in progress."""
        self._check_fd(fd)
        with self.lock:
            self._init_locked()
            if fd not in self._tokens:
                raise KeyError(f"netpoll: fd {fd} is not registered with the {self.name} backend")
            old = self._interest.get(fd, 0)
            new = old | (mode & MODE_RW)
            if new == old:
                return  # already watched: the wait in progress has it
            self._set_interest_locked(fd, new)
            if self._polling:
                self._wake_locked()

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait up to ``timeout`` seconds; report each armed mode that is ready, once."""
        with self.lock:
            self._init_locked()
            self._polling = True
        try:
            ready = list(self._wait_events(timeout))
        finally:
            with self.lock:
                self._polling = False
        if not ready:
            return []
        result: list[tuple[object, int]] = []
        with self.lock:
            if self._closed:
                return []
            for fd, modes in ready:
                if self._is_wakeup(fd):
                    continue
                interest = self._interest.get(fd, 0)
                token = self._tokens.get(fd)
                if not interest or token is None or not modes:
                    continue  # disarmed or closed since the wait began
                # A report beyond the interest is a hang-up: drop it all.
                self._set_interest_locked(fd, interest & ~modes)
                result.append((token, modes))
        return result


_POLL_READ = select.POLLIN | getattr(select, "POLLRDHUP", 0)
_POLL_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
_POLL_READ_ANY = _POLL_READ | select.POLLPRI
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


def poll_mask(modes: int) -> int:
    """The ``select.poll`` event mask that watches ``modes``."""
    mask = 0
    if modes & MODE_R:
        mask |= _POLL_READ
    if modes & MODE_W:
        mask |= select.POLLOUT
    return mask


def poll_modes(events: int) -> int:
    """The modes a ``select.poll`` event stands for; a hang-up or error is both."""
    if events & _POLL_GONE:
        return MODE_RW
    modes = 0
    if events & (_POLL_READ | select.POLLPRI):
        modes |= MODE_R
    if events & select.POLLOUT:
        modes |= MODE_W
    return modes


def wait_with_poll(fd: int, mode: int, wake_fd: int, timeout: float | None) -> int:
    """:meth:`~netpoll.core.hookspecs.Poller.netpollwait` on a throwaway ``select.poll``.

    A parked thread runs this for every wait, so the mask and mode
    conversions of :func:`poll_mask` and :func:`poll_modes` are spelled out.
    """
    p = select.poll()
    if fd >= 0:
        p.register(fd, (_POLL_READ if mode & MODE_R else 0) | (_POLLOUT if mode & MODE_W else 0))
    if wake_fd >= 0:
        p.register(wake_fd, _POLLIN)
    if timeout is None or not 0.0 <= timeout <= MAX_WAIT:  # NaN included
        timeout = clamp_timeout(timeout)
    result = 0
    # poll() takes milliseconds as a float and rounds them up.
    for f, ev in p.poll(None if timeout is None else timeout * 1000.0):
        if f != fd:
            result |= MODE_WAKE
        elif ev & _POLL_GONE:
            result |= MODE_RW
        else:
            if ev & _POLL_READ_ANY:
                result |= MODE_R
            if ev & _POLLOUT:
                result |= MODE_W
    return result


def probe_with_pipe(what: str, reports_writable: Callable[[int], bool]) -> str | None:
    """``None`` if ``reports_writable(wfd)`` sees a fresh pipe's write end ready, else why not.

    A probe tries the mechanism rather than looking for an attribute: its
    reason string is what ``netpoll info`` shows.
    """
    try:
        rfd, wfd = os.pipe()
    except OSError as exc:
        return f"cannot create a pipe to probe {what}: {exc}"
    try:
        if not reports_writable(wfd):
            return f"{what} did not report a writable pipe"
    except (OSError, ValueError) as exc:
        return f"{what} failed: {exc}"
    finally:
        os.close(rfd)
        os.close(wfd)
    return None
