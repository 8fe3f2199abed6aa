"""An emulated BSD ``kqueue`` for Linux, shaped like the :mod:`select` module.

The kqueue backend takes its OS API from the registry's injection point,
the ``netpoll_os_api`` hook; registering this module with a plugin manager
(``pm.register(kqueue_emulation)``) answers ``"kqueue"`` there with this
module, so the backend, and the whole test suite, can run on Linux.  The
pytest plugin does that for a session with ``NETPOLL_KQUEUE_EMULATION=1``
(:func:`netpoll.testing.pytest_plugin.use_kqueue_emulation`).

What is emulated (enough for the backend, and faithful where it matters):

* :func:`kqueue` objects with ``control(changelist, max_events, timeout)``,
  ``close()``, ``fileno()`` and ``closed``; :class:`kevent` records with
  ``ident``, ``filter``, ``flags``, ``fflags``, ``data`` and ``udata``; the
  ``KQ_*`` constants with the BSD/macOS values.
* ``EVFILT_READ`` and ``EVFILT_WRITE`` knotes with ``EV_ADD``, ``EV_DELETE``,
  ``EV_ENABLE``/``EV_DISABLE``, ``EV_ONESHOT`` and ``EV_CLEAR``.  With
  ``EV_CLEAR`` a knote is reported once per readiness change (edge); without
  it, on every call while the condition holds (level), as on BSD.
* ``EV_EOF``: set on read knotes when the peer hung up (``EPOLLRDHUP`` or
  ``EPOLLHUP``) and on write knotes when the other end is gone (``EPOLLHUP``
  or ``EPOLLERR``); ``data`` of a read event is the byte count (``FIONREAD``).
* ``EVFILT_USER`` with ``NOTE_TRIGGER`` (and the ``NOTE_FF*`` fflags ops).
* Change errors: with room in the event list, an ``EV_ERROR`` event carrying
  the errno in ``data`` (and no other events); without room, ``OSError``.
* A regular file (which epoll refuses with ``EPERM``) is always ready, as on
  BSD.

How: one internal epoll per kqueue, each watched fd registered once with
``EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET``; an epoll event marks the
matching knotes active.  Adding a second filter for an fd re-arms the
registration with ``EPOLL_CTL_MOD``, which makes the kernel re-evaluate the
fd's current state (BSD evaluates a new knote at once, too).  Level knotes
are re-checked with a zero-timeout ``poll(2)`` after each delivery.  An
eventfd in the same epoll interrupts a blocked ``control`` when another
thread triggers a user event, so ``control`` may block in one thread while
others add, delete and trigger; state is guarded by a lock that is never held
across the wait.

What is not: BSD removes an fd's knotes when the fd is closed; the emulation
cannot see ``close``, so it detects a stale registration lazily (``ENOENT``
from ``EPOLL_CTL_MOD`` when the number is reused).  Delete knotes before
closing their fd, as the backend does.  Other filters (``EVFILT_PROC``,
``EVFILT_TIMER``, ...) answer ``EINVAL``.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import os
import select as _select
import sys
import termios
import threading
import time
from collections.abc import Iterable
from typing import Any

from netpoll.core.hookspecs import hookimpl

# -- constants (BSD/macOS values, select-module names) ---------------------

KQ_FILTER_READ = -1
KQ_FILTER_WRITE = -2
KQ_FILTER_USER = -10

KQ_EV_ADD = 0x0001
KQ_EV_DELETE = 0x0002
KQ_EV_ENABLE = 0x0004
KQ_EV_DISABLE = 0x0008
KQ_EV_ONESHOT = 0x0010
KQ_EV_CLEAR = 0x0020
KQ_EV_SYSFLAGS = 0xF000
KQ_EV_FLAG1 = 0x2000
KQ_EV_ERROR = 0x4000
KQ_EV_EOF = 0x8000

KQ_NOTE_FFNOP = 0x00000000
KQ_NOTE_FFAND = 0x40000000
KQ_NOTE_FFOR = 0x80000000
KQ_NOTE_FFCOPY = 0xC0000000
KQ_NOTE_FFCTRLMASK = 0xC0000000
KQ_NOTE_FFLAGSMASK = 0x00FFFFFF
KQ_NOTE_TRIGGER = 0x01000000

# Flags a knote keeps and reports back with its events.
_KEPT_FLAGS = KQ_EV_ADD | KQ_EV_ONESHOT | KQ_EV_CLEAR

_EPOLL_FLAGS = _select.EPOLLIN | _select.EPOLLOUT | _select.EPOLLRDHUP | _select.EPOLLET
_EP_READ = _select.EPOLLIN | _select.EPOLLRDHUP | _select.EPOLLHUP | _select.EPOLLERR
_EP_WRITE = _select.EPOLLOUT | _select.EPOLLHUP | _select.EPOLLERR
_EP_READ_EOF = _select.EPOLLRDHUP | _select.EPOLLHUP
_EP_WRITE_EOF = _select.EPOLLHUP | _select.EPOLLERR

_POLL_READ = _select.POLLIN | _select.POLLRDHUP | _select.POLLHUP | _select.POLLERR
_POLL_WRITE = _select.POLLOUT | _select.POLLHUP | _select.POLLERR
_POLL_READ_EOF = _select.POLLRDHUP | _select.POLLHUP
_POLL_WRITE_EOF = _select.POLLHUP | _select.POLLERR

_FD_FILTERS = (KQ_FILTER_READ, KQ_FILTER_WRITE)

#: Epoll events fetched per wait inside ``control``.
_EPOLL_BATCH = 256


def _ident_of(ident: Any) -> int:
    if isinstance(ident, int):
        return ident
    fileno = getattr(ident, "fileno", None)
    if fileno is None:
        raise TypeError(f"kevent ident must be an int or have fileno(), not {type(ident).__name__}")
    fd: int = fileno()
    return fd


class kevent:  # named like select.kevent
    """One kernel event: a change to apply, or an event reported by ``control``.

    Same constructor and attributes as :class:`select.kevent`: ``ident`` (an
    fd, or an object with ``fileno()``), ``filter``, ``flags``, ``fflags``,
    ``data``, ``udata``.
    """

    __slots__ = ("data", "fflags", "filter", "flags", "ident", "udata")

    def __init__(
        self,
        ident: Any,
        filter: int = KQ_FILTER_READ,
        flags: int = KQ_EV_ADD,
        fflags: int = 0,
        data: int = 0,
        udata: int = 0,
    ) -> None:
        self.ident = _ident_of(ident)
        self.filter = filter
        self.flags = flags
        self.fflags = fflags
        self.data = data
        self.udata = udata

    def _key(self) -> tuple[int, int, int, int, int, int]:
        return (self.ident, self.filter, self.flags, self.fflags, self.data, self.udata)

    def __eq__(self, other: object) -> bool:
        """Events compare equal when all six fields are equal."""
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable, like select.kevent

    def __repr__(self) -> str:
        """Shown like select.kevent."""
        return (
            f"<kevent ident={self.ident} filter={self.filter} flags=0x{self.flags:x} "
            f"fflags=0x{self.fflags:x} data=0x{self.data:x} udata=0x{self.udata:x}>"
        )


class _Knote:
    """One registered (ident, filter) with its state."""

    __slots__ = ("always", "enabled", "eof", "fflags", "filter", "flags", "ident", "udata")

    def __init__(self, ident: int, filt: int, flags: int, fflags: int, udata: int) -> None:
        self.ident = ident
        self.filter = filt
        self.flags = flags & _KEPT_FLAGS
        self.fflags = fflags & KQ_NOTE_FFLAGSMASK if filt == KQ_FILTER_USER else fflags
        self.udata = udata
        self.enabled = True
        self.eof = False
        #: A regular file: epoll cannot watch it, BSD says it is always ready.
        self.always = False

    @property
    def key(self) -> tuple[int, int]:
        return (self.ident, self.filter)


class kqueue:  # named like select.kqueue
    """An emulated kernel event queue (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoll = _select.epoll()
        try:
            self._wake_fd: int = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except BaseException:
            self._epoll.close()
            raise
        self._epoll.register(self._wake_fd, _select.EPOLLIN)  # level: drained on wake
        self._knotes: dict[tuple[int, int], _Knote] = {}
        #: fd -> number of its fd knotes (the fd is in the epoll set).
        self._fdrefs: dict[int, int] = {}
        #: Knotes waiting to be reported, in activation order.
        self._active: dict[tuple[int, int], _Knote] = {}
        #: Level knotes reported last time: their condition is re-checked.
        self._recheck: set[tuple[int, int]] = set()
        self._closed = False
        self._pid = os.getpid()

    # -- file-like ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def fds(self) -> tuple[int, ...]:
        """Every descriptor this emulated kqueue holds (its epoll and wake eventfd)."""
        if self.closed:
            return ()
        return (self._epoll.fileno(), self._wake_fd)

    def fileno(self) -> int:
        """The internal epoll descriptor (it is readable when events are queued)."""
        self._check_open()
        return self._epoll.fileno()

    def _forked(self) -> bool:
        """True in a forked child: BSD does not inherit a kqueue, so here it is gone."""
        return os.getpid() != self._pid

    def close(self) -> None:
        """Close the queue; a ``control`` blocked in another thread returns.

        In a forked child the queue does not exist (BSD): only the child's
        copies of the emulation's descriptors are closed, and the internal
        epoll and eventfd, which the parent's queue still uses, are neither
        changed nor poked.
        """
        if self._forked():
            # Forked: the lock may be held by a thread that is not copied.
            self._lock = threading.Lock()
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._epoll.close()
                os.close(self._wake_fd)
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._poke()  # wake a blocked control before the fds go away
            self._epoll.close()
            os.close(self._wake_fd)
            self._knotes.clear()
            self._active.clear()
            self._recheck.clear()
            self._fdrefs.clear()

    def __enter__(self) -> kqueue:
        """Context manager support (closes on exit)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the queue."""
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed kqueue object")
        if self._forked():
            raise OSError(_errno.EBADF, "kqueue descriptors are not inherited across fork")

    # -- control ---------------------------------------------------------

    def control(
        self,
        changelist: Iterable[kevent] | None,
        max_events: int,
        timeout: float | None = None,
    ) -> list[kevent]:
        """Apply ``changelist``, then wait up to ``timeout`` for ``max_events`` events.

        ``timeout`` is ``None`` to block, or seconds (``0`` polls).  Like
        :meth:`select.kqueue.control`.
        """
        if max_events < 0:
            raise ValueError(f"Length of eventlist must be 0 or positive, got {max_events}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be positive or None, got {timeout}")
        self._check_open()
        if changelist is not None:
            errors: list[kevent] = []
            with self._lock:
                for change in changelist:
                    err = self._apply(change)
                    if not err:
                        continue
                    if len(errors) >= max_events:
                        raise OSError(err, os.strerror(err))
                    errors.append(
                        kevent(change.ident, change.filter, KQ_EV_ERROR, 0, err, change.udata)
                    )
            if errors:
                # BSD returns the errors alone, without collecting events.
                return errors
        if max_events == 0:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = 0.0  # first pass: take what is queued without blocking
        while True:
            try:
                ready = self._epoll.poll(wait, _EPOLL_BATCH)
            except (OSError, ValueError):
                if self._closed:
                    raise OSError(_errno.EBADF, "kqueue closed while waiting") from None
                raise
            with self._lock:
                if self._closed:
                    raise OSError(_errno.EBADF, "kqueue closed while waiting")
                self._collect(ready)
                out = self._deliver(max_events)
            if out:
                return out
            if deadline is None:
                wait = -1.0
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return []

    # -- internals (called with the lock held) ------------------------------

    def _poke(self) -> None:
        try:
            os.write(self._wake_fd, (1).to_bytes(8, "little"))
        except BlockingIOError:
            pass

    def _activate(self, kn: _Knote) -> None:
        self._active.setdefault(kn.key, kn)

    def _apply(self, ch: kevent) -> int:
        """Apply one change; returns 0 or an errno."""
        ident, filt, flags = ch.ident, ch.filter, ch.flags
        if filt not in (KQ_FILTER_READ, KQ_FILTER_WRITE, KQ_FILTER_USER):
            return _errno.EINVAL
        if ident < 0 and filt != KQ_FILTER_USER:
            return _errno.EBADF
        key = (ident, filt)
        kn = self._knotes.get(key)
        if flags & KQ_EV_DELETE:
            if kn is None:
                return _errno.ENOENT
            self._drop(kn)
            return 0
        if flags & KQ_EV_ADD:
            if filt == KQ_FILTER_USER:
                if kn is None:
                    kn = _Knote(ident, filt, flags, ch.fflags, ch.udata)
                    self._knotes[key] = kn
                else:
                    kn.flags = flags & _KEPT_FLAGS
                    kn.udata = ch.udata
            else:
                err = self._attach(ident, filt, flags, ch)
                if err:
                    return err
                kn = self._knotes[key]
        if kn is None:
            return _errno.ENOENT
        if flags & KQ_EV_DISABLE:
            kn.enabled = False
        if flags & KQ_EV_ENABLE:
            kn.enabled = True
            if key in self._active:
                self._poke()
        if filt == KQ_FILTER_USER:
            self._user_fflags(kn, ch.fflags)
        return 0

    def _user_fflags(self, kn: _Knote, fflags: int) -> None:
        op = fflags & KQ_NOTE_FFCTRLMASK
        value = fflags & KQ_NOTE_FFLAGSMASK
        if op == KQ_NOTE_FFAND:
            kn.fflags &= value
        elif op == KQ_NOTE_FFOR:
            kn.fflags |= value
        elif op == KQ_NOTE_FFCOPY:
            kn.fflags = value
        if fflags & KQ_NOTE_TRIGGER:
            self._activate(kn)
            self._poke()

    def _attach(self, fd: int, filt: int, flags: int, ch: kevent) -> int:
        """EV_ADD of an fd knote: create or update it and watch the fd."""
        if fd in self._fdrefs:
            try:
                # Re-arm: the kernel re-evaluates the fd's state now and
                # queues an event if it is ready, which reports the initial
                # state of a new (or re-added) knote, as BSD does.
                self._epoll.modify(fd, _EPOLL_FLAGS)
            except OSError as exc:
                if exc.errno != _errno.ENOENT:
                    return exc.errno or _errno.EBADF
                # The fd was closed (which left the epoll set) and its number
                # reused: the old knotes are stale.
                self._forget_fd(fd)
        key = (fd, filt)
        kn = self._knotes.get(key)
        if kn is not None:
            kn.flags = flags & _KEPT_FLAGS
            kn.udata = ch.udata
            kn.fflags = ch.fflags
            if kn.always:
                self._activate(kn)
                self._poke()
            return 0
        kn = _Knote(fd, filt, flags, ch.fflags, ch.udata)
        always = any(k.always for k in self._fd_knotes(fd))
        if fd not in self._fdrefs and not always:
            try:
                self._epoll.register(fd, _EPOLL_FLAGS)
            except OSError as exc:
                if exc.errno != _errno.EPERM:
                    return exc.errno or _errno.EBADF
                always = True  # a regular file or directory
            else:
                self._fdrefs[fd] = 0
        self._knotes[key] = kn
        if always:
            kn.always = True
            self._activate(kn)
            self._poke()
        else:
            self._fdrefs[fd] += 1
        return 0

    def _fd_knotes(self, fd: int) -> list[_Knote]:
        return [kn for f in _FD_FILTERS if (kn := self._knotes.get((fd, f))) is not None]

    def _drop(self, kn: _Knote) -> None:
        """Remove one knote (EV_DELETE, or EV_ONESHOT after delivery)."""
        key = kn.key
        self._knotes.pop(key, None)
        self._active.pop(key, None)
        self._recheck.discard(key)
        if kn.filter == KQ_FILTER_USER or kn.always:
            return
        refs = self._fdrefs.get(kn.ident, 0) - 1
        if refs > 0:
            self._fdrefs[kn.ident] = refs
            return
        self._fdrefs.pop(kn.ident, None)
        try:
            self._epoll.unregister(kn.ident)
        except OSError:
            pass  # already closed: closing removed it from the epoll set

    def _forget_fd(self, fd: int) -> None:
        for kn in self._fd_knotes(fd):
            self._knotes.pop(kn.key, None)
            self._active.pop(kn.key, None)
            self._recheck.discard(kn.key)
        self._fdrefs.pop(fd, None)

    def _collect(self, ready: list[tuple[int, int]]) -> None:
        """Turn epoll events into active knotes."""
        for fd, mask in ready:
            if fd == self._wake_fd:
                try:
                    os.read(self._wake_fd, 8)
                except BlockingIOError:
                    pass
                continue
            rk = self._knotes.get((fd, KQ_FILTER_READ))
            if rk is not None and mask & _EP_READ:
                if mask & _EP_READ_EOF:
                    rk.eof = True
                self._activate(rk)
            wk = self._knotes.get((fd, KQ_FILTER_WRITE))
            if wk is not None and mask & _EP_WRITE:
                if mask & _EP_WRITE_EOF:
                    wk.eof = True
                self._activate(wk)

    def _recheck_levels(self) -> None:
        """Level knotes stay active while their condition holds."""
        knotes = [kn for key in self._recheck if (kn := self._knotes.get(key)) is not None]
        self._recheck.clear()
        if not knotes:
            return
        p = _select.poll()
        masks: dict[int, int] = {}
        for kn in knotes:
            want = _select.POLLIN | _select.POLLRDHUP
            if kn.filter == KQ_FILTER_WRITE:
                want = _select.POLLOUT
            masks[kn.ident] = masks.get(kn.ident, 0) | want
        for fd, mask in masks.items():
            p.register(fd, mask)
        revents = dict(p.poll(0))
        for kn in knotes:
            rev = revents.get(kn.ident, 0)
            if rev & _select.POLLNVAL:
                continue  # closed without EV_DELETE
            if kn.filter == KQ_FILTER_READ and rev & _POLL_READ:
                kn.eof = kn.eof or bool(rev & _POLL_READ_EOF)
                self._activate(kn)
            elif kn.filter == KQ_FILTER_WRITE and rev & _POLL_WRITE:
                kn.eof = kn.eof or bool(rev & _POLL_WRITE_EOF)
                self._activate(kn)

    def _deliver(self, max_events: int) -> list[kevent]:
        """Report up to ``max_events`` active, enabled knotes."""
        if self._recheck:
            self._recheck_levels()
        out: list[kevent] = []
        sticky: list[_Knote] = []
        for key, kn in list(self._active.items()):
            if len(out) >= max_events:
                break
            if not kn.enabled:
                continue  # stays active until enabled again
            del self._active[key]
            out.append(self._event_of(kn))
            if kn.flags & KQ_EV_ONESHOT:
                self._drop(kn)
            elif kn.flags & KQ_EV_CLEAR:
                if kn.filter == KQ_FILTER_USER:
                    kn.fflags = 0
            elif kn.filter == KQ_FILTER_USER or kn.always:
                sticky.append(kn)  # level and not fd-backed: still triggered
            else:
                self._recheck.add(key)
        for kn in sticky:
            self._activate(kn)
        return out

    def _event_of(self, kn: _Knote) -> kevent:
        flags = kn.flags
        data = 0
        if kn.eof:
            flags |= KQ_EV_EOF
        if kn.filter == KQ_FILTER_READ and not kn.always:
            data = _bytes_readable(kn.ident)
        return kevent(kn.ident, kn.filter, flags, kn.fflags, data, kn.udata)


def _bytes_readable(fd: int) -> int:
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    except OSError:
        return 0
    return int.from_bytes(buf, sys.byteorder, signed=True)


@hookimpl
def netpoll_os_api(name: str) -> object | None:
    """Answer ``"kqueue"`` with this module: the kqueue backend then runs on it."""
    return sys.modules[__name__] if name == "kqueue" else None


__all__ = [name for name in dir() if name.startswith("KQ_")] + ["kevent", "kqueue"]
