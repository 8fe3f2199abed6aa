"""The kqueue backend (macOS, the BSDs): Go's ``runtime/netpoll_kqueue.go``.

How kqueue is used here, and why:

* **Edge-triggered, registered once.**  ``netpollopen`` adds two knotes per
  descriptor, ``EVFILT_READ`` and ``EVFILT_WRITE``, both with
  ``EV_ADD | EV_CLEAR``.  ``EV_CLEAR`` resets a knote's state once it has
  been reported, so a direction is reported again only after a new change
  (more data, more buffer space): the same contract as epoll's ``EPOLLET``.
  Unlike epoll, kqueue reports the two filters as separate events; they are
  merged into one ``(token, modes)`` entry per fd.

* **EOF.**  A read event with ``EV_EOF`` also wakes writers: on some systems,
  when the read end of a pipe is closed, the write end gets no
  ``EVFILT_WRITE`` event but an ``EVFILT_READ`` event with ``EV_EOF``.  The
  woken writer simply retries and sees EPIPE, success or EAGAIN (Go does the
  same).  ``EV_ERROR`` on an event wakes both directions.

* **Wakeups.**  Where the OS API offers ``EVFILT_USER`` (``KQ_FILTER_USER``
  and ``KQ_NOTE_TRIGGER``), ``netpollbreak`` triggers a user event registered
  with ``EV_CLEAR``, which needs no descriptor at all.  CPython's ``select``
  module does not export ``EVFILT_USER``, so with it the backend falls back
  to the shared wakeup pipe, watched level-triggered.  Either way breaks
  coalesce through a flag the poller clears after it saw the wakeup (Go's
  ``netpollWakeSig``).

* **Threads.**  ``kevent`` calls on one kqueue from several threads are safe
  in the kernel (and in the emulation); a lock guards only the Python-side
  state (token dict, wakeup flag, shutdown) and is never held across the
  blocking ``kevent``.

* **Where the OS API comes from.**  The ``netpoll_backends`` hook hands every
  backend ``os_api``, the core's injection point for the OS module a backend
  wraps (:func:`netpoll.core.hookspecs.netpoll_os_api`): the kqueue backend
  asks it for ``"kqueue"`` and uses the answer, something shaped like
  :class:`KqueueApi`, instead of :mod:`select`.  On Linux the tests answer
  with an emulated kqueue built on epoll (``netpoll.testing``), so the
  backend runs on the emulation there; this module never imports it.
"""

from __future__ import annotations

import select
from collections.abc import Iterable
from typing import Protocol, cast

from netpoll.backends.base import EdgeTriggeredPoller, Wakeup
from netpoll.core.hookspecs import MODE_R, MODE_RW, MODE_W, BackendSpec, OSApi, hookimpl

#: Events fetched per kevent call (Go uses 64).
MAX_EVENTS = 64

_UNAVAILABLE = "select.kqueue is not available on this platform"


class Kevent(Protocol):
    """What the backend reads of an event (``select.kevent``)."""

    ident: int
    filter: int
    flags: int


class Kqueue(Protocol):
    """A kqueue object (``select.kqueue``)."""

    def control(
        self, changelist: Iterable[object] | None, max_events: int, timeout: float | None = None
    ) -> list[Kevent]:
        """Apply ``changelist``, then wait for up to ``max_events`` events."""

    def close(self) -> None:
        """Close the kqueue."""

    def fileno(self) -> int:
        """The kqueue's descriptor."""


class KqueueApi(Protocol):
    """The kqueue part of the :mod:`select` module, as this backend uses it.

    ``KQ_FILTER_USER`` with ``KQ_NOTE_TRIGGER`` is optional and looked up with
    ``getattr`` (without it wakeups use a pipe).
    """

    KQ_FILTER_READ: int
    KQ_FILTER_WRITE: int
    KQ_EV_ADD: int
    KQ_EV_DELETE: int
    KQ_EV_CLEAR: int
    KQ_EV_EOF: int
    KQ_EV_ERROR: int

    def kqueue(self) -> Kqueue:
        """A new kqueue."""

    def kevent(self, ident: int, filter: int = ..., flags: int = ..., fflags: int = ...) -> object:
        """A change record."""


class KqueuePoller(EdgeTriggeredPoller):
    """One kqueue: the poller hooks for the ``kqueue`` backend, on ``api``."""

    name = "kqueue"

    def __init__(self, api: KqueueApi) -> None:
        super().__init__()
        #: The kqueue API in use (:mod:`select`, or what ``netpoll_os_api`` supplied).
        self.api = api
        self._kq: Kqueue | None = None
        #: Coalesces EVFILT_USER triggers (the pipe has its own flag).
        self._wake_pending = False
        # EVFILT_USER where the API offers it, else a pipe.
        self._user_filter: int | None = getattr(api, "KQ_FILTER_USER", None)
        self._note_trigger: int | None = getattr(api, "KQ_NOTE_TRIGGER", None)
        if self._note_trigger is None:
            self._user_filter = None

    @property
    def uses_user_event(self) -> bool:
        """True when wakeups use ``EVFILT_USER`` rather than a pipe."""
        return self._user_filter is not None

    def _os_fds_locked(self) -> tuple[int, ...]:
        kq = self._kq
        if kq is None:
            return ()
        # An emulated kqueue may hold more than one descriptor and says so.
        more = getattr(kq, "fds", None)
        return tuple(more()) if more is not None else (kq.fileno(),)

    def _open_locked(self) -> None:
        api = self.api
        kq = self._kq = api.kqueue()
        if self._user_filter is not None:
            # ident 0 is Go's choice too; EV_CLEAR resets the trigger once the
            # poller has seen it.
            kq.control([api.kevent(0, self._user_filter, api.KQ_EV_ADD | api.KQ_EV_CLEAR)], 0, 0)
        else:
            self._wakeup = Wakeup(use_eventfd=False)
            # Level-triggered (no EV_CLEAR): reported until drained.
            kq.control([api.kevent(self._wakeup.rfd, api.KQ_FILTER_READ, api.KQ_EV_ADD)], 0, 0)

    def _release_locked(self) -> None:
        kq, self._kq = self._kq, None
        if kq is not None:
            try:
                kq.close()
            except OSError:
                # A kqueue is not inherited across fork (BSD): in a child its
                # descriptor is already gone.
                pass

    def _wake_locked(self) -> None:
        if self._user_filter is None:
            super()._wake_locked()
            return
        if self._wake_pending or self._kq is None:
            return
        self._wake_pending = True
        assert self._note_trigger is not None
        self._kq.control([self.api.kevent(0, self._user_filter, 0, self._note_trigger)], 0, 0)

    def _watch_locked(self, fd: int) -> None:
        """Add read and write knotes with ``EV_ADD | EV_CLEAR``; kevent's OSError propagates."""
        api = self.api
        assert self._kq is not None
        flags = api.KQ_EV_ADD | api.KQ_EV_CLEAR
        try:
            self._kq.control(
                [
                    api.kevent(fd, api.KQ_FILTER_READ, flags),
                    api.kevent(fd, api.KQ_FILTER_WRITE, flags),
                ],
                0,
                0,
            )
        except BaseException:
            self._unwatch_locked(fd)  # the read knote may have been added
            raise

    def _unwatch_locked(self, fd: int) -> None:
        # One change per call: kevent stops at the first failing change when
        # it has no room to report it, and either knote may be missing.
        api = self.api
        assert self._kq is not None
        for filt in (api.KQ_FILTER_READ, api.KQ_FILTER_WRITE):
            try:
                self._kq.control([api.kevent(fd, filt, api.KQ_EV_DELETE)], 0, 0)
            except (OSError, ValueError):
                pass

    def _wait(self, timeout: float | None) -> Iterable[tuple[int, int]]:
        kq = self._kq
        if kq is None:
            return ()  # shut down meanwhile
        api = self.api
        result: list[tuple[int, int]] = []
        for ev in kq.control(None, MAX_EVENTS, timeout):
            filt, flags = ev.filter, ev.flags
            if filt == self._user_filter and ev.ident == 0:
                with self.lock:
                    self._wake_pending = False
                continue
            if flags & api.KQ_EV_ERROR:
                modes = MODE_RW
            elif filt == api.KQ_FILTER_READ:
                # EOF on the read filter wakes writers too: a pipe whose
                # reader closed may report only this (see the docstring).
                modes = MODE_RW if flags & api.KQ_EV_EOF else MODE_R
            elif filt == api.KQ_FILTER_WRITE:
                modes = MODE_W
            else:
                continue
            result.append((ev.ident, modes))
        return result


def probe_api(api: KqueueApi | None) -> str | None:
    """``None`` if a kqueue can be created and closed with ``api``, else why not."""
    if api is None:
        return _UNAVAILABLE
    try:
        kq = api.kqueue()
    except (OSError, AttributeError) as exc:
        return f"kqueue() failed: {exc}"
    kq.close()
    return None


def spec_for(api: KqueueApi | None) -> BackendSpec:
    """The ``kqueue`` BackendSpec on ``api`` (``None``: unavailable here)."""

    def probe() -> str | None:
        return probe_api(api)

    def create() -> KqueuePoller:
        if api is None:
            raise RuntimeError(f"netpoll: kqueue backend: {_UNAVAILABLE}")
        return KqueuePoller(api)

    return KqueuePoller.backend_spec(
        priority=30,
        probe=probe,
        create=create,
        description="BSD/macOS kqueue, edge-triggered (EV_CLEAR)",
    )


@hookimpl
def netpoll_backends(os_api: OSApi) -> list[BackendSpec]:
    """The ``kqueue`` backend, on the API ``os_api("kqueue")`` supplies, else :mod:`select`'s."""
    supplied = os_api("kqueue")
    if supplied is not None:
        return [spec_for(cast(KqueueApi, supplied))]
    return [spec_for(cast(KqueueApi, select) if hasattr(select, "kqueue") else None)]
