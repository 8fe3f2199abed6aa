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
  to a non-blocking pipe whose read end is watched level-triggered and is
  drained by the polling thread.  Either way breaks coalesce through a flag
  the poller clears after it saw the wakeup (Go's ``netpollWakeSig``).

* **Threads.**  ``kevent`` calls on one kqueue from several threads are safe
  in the kernel (and in the emulation); a lock guards only the Python-side
  state (token dict, wakeup flag, shutdown) and is never held across the
  blocking ``kevent``.

* **Where the OS API comes from.**  Through this module's own pluggy hook,
  :meth:`KqueueHookSpecs.netpoll_kqueue_api`: the default implementation
  (``trylast``) answers the :mod:`select` module when it has ``kqueue``.  A
  plugin can answer something shaped like it instead; on Linux,
  :mod:`netpoll.testing.kqueue_emulation` does, so the kqueue backend runs
  (and is tested) on an emulated kqueue built on epoll.  With
  ``NETPOLL_KQUEUE_EMULATION=1`` in the environment the default answers the
  emulation when the real kqueue is missing (the tox ``kqueue`` factor).
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Sequence
from typing import Any

import pluggy

from netpoll.backends._wakeup import PollerBase, Wakeup
from netpoll.core.hookspecs import (
    MODE_R,
    MODE_W,
    BackendSpec,
    clamp_timeout,
    hookimpl,
    hookspec,
)

#: Environment variable: ``1`` lets the default API be the emulation on Linux.
ENV_EMULATION = "NETPOLL_KQUEUE_EMULATION"

#: Events fetched per kevent call (Go uses 64).
MAX_EVENTS = 64

#: The name under which :func:`bind_plugin_manager` registers its plugin.
BOUND_PLUGIN_NAME = "netpoll.backends.kqueue:bound"

_UNAVAILABLE = "select.kqueue is not available on this platform"


class KqueueHookSpecs:
    """The kqueue backend's own hook specification."""

    @hookspec(firstresult=True)
    def netpoll_kqueue_api(self) -> Any:
        """Return the kqueue OS API the kqueue backend should use, or ``None``.

        The answer is "the :mod:`select` module or something shaped like it":
        it must provide ``kqueue()`` (an object with ``control(changelist,
        max_events, timeout)``, ``close()``, ``fileno()`` and ``closed``),
        ``kevent(ident, filter, flags, fflags, data, udata)``, and the
        constants ``KQ_FILTER_READ``, ``KQ_FILTER_WRITE``, ``KQ_EV_ADD``,
        ``KQ_EV_DELETE``, ``KQ_EV_CLEAR``, ``KQ_EV_EOF`` and ``KQ_EV_ERROR``;
        ``KQ_FILTER_USER`` with ``KQ_NOTE_TRIGGER`` is optional (without it
        wakeups use a pipe).

        Called each time the backend is probed or created.  The first
        non-``None`` answer wins; the built-in default (``trylast``) answers
        :mod:`select` where it has ``kqueue``, else the emulation when
        ``NETPOLL_KQUEUE_EMULATION=1``, else ``None`` (backend unavailable).
        Register :mod:`netpoll.testing.kqueue_emulation` to force the
        emulation, e.g. to test the backend on Linux.
        """


def default_kqueue_api() -> Any:
    """The API the backend uses when no plugin supplies one (or ``None``)."""
    if hasattr(select, "kqueue"):
        return select
    if os.environ.get(ENV_EMULATION, "") == "1":
        from netpoll.testing import kqueue_emulation

        return kqueue_emulation
    return None


@hookimpl(trylast=True, optionalhook=True)
def netpoll_kqueue_api() -> Any:
    """Default answer: the real :mod:`select` kqueue, or the opt-in emulation."""
    return default_kqueue_api()


def add_hookspecs(pm: pluggy.PluginManager) -> None:
    """Add :class:`KqueueHookSpecs` to ``pm`` unless it already has them."""
    caller = getattr(pm.hook, "netpoll_kqueue_api", None)
    if caller is None or not caller.has_spec():
        pm.add_hookspecs(KqueueHookSpecs)


def kqueue_api(pm: pluggy.PluginManager | None = None) -> Any:
    """Ask ``pm``'s ``netpoll_kqueue_api`` hook for the API (default without pm)."""
    if pm is None:
        return default_kqueue_api()
    add_hookspecs(pm)
    return pm.hook.netpoll_kqueue_api()


class KqueuePoller(PollerBase):
    """One kqueue: the poller hooks for the ``kqueue`` backend."""

    def __init__(self, api: Any) -> None:
        super().__init__()
        self._api = api
        self._kq: Any = None
        #: Coalesces EVFILT_USER triggers (the pipe has its own flag).
        self._wake_pending = False
        # EVFILT_USER where the API offers it, else a pipe.
        self._user_filter: int | None = getattr(api, "KQ_FILTER_USER", None)
        self._note_trigger: int | None = getattr(api, "KQ_NOTE_TRIGGER", None)
        if self._note_trigger is None:
            self._user_filter = None
        self._pipe: Wakeup | None = None
        self._read: int = api.KQ_FILTER_READ
        self._write: int = api.KQ_FILTER_WRITE
        self._ev_add: int = api.KQ_EV_ADD
        self._ev_delete: int = api.KQ_EV_DELETE
        self._ev_clear: int = api.KQ_EV_CLEAR
        self._ev_eof: int = api.KQ_EV_EOF
        self._ev_error: int = api.KQ_EV_ERROR

    @property
    def uses_user_event(self) -> bool:
        """True when wakeups use ``EVFILT_USER`` rather than a pipe."""
        return self._user_filter is not None

    def _init_locked(self) -> Any:
        if self._closed:
            raise RuntimeError("netpoll: kqueue backend is shut down")
        if self._kq is not None:
            return self._kq
        api = self._api
        kq = api.kqueue()
        try:
            if self._user_filter is not None:
                # ident 0 is Go's choice too; EV_CLEAR resets the trigger
                # once the poller has seen it.
                ev = api.kevent(0, self._user_filter, self._ev_add | self._ev_clear)
                kq.control([ev], 0, 0)
            else:
                self._pipe = Wakeup(use_eventfd=False)
                # Level-triggered (no EV_CLEAR): reported until drained.
                kq.control([api.kevent(self._pipe.rfd, self._read, self._ev_add)], 0, 0)
        except BaseException:
            kq.close()
            self._close_pipe()
            raise
        self._kq = kq
        return kq

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    # -- hooks ------------------------------------------------------------

    def netpollinit(self) -> None:
        """Create the kqueue and its wakeup (idempotent)."""
        with self._lock:
            self._init_locked()

    def netpollopen(self, fd: int, token: object) -> None:
        """Add read and write knotes with ``EV_ADD | EV_CLEAR`` for ``fd``.

        The :class:`OSError` of ``kevent`` (e.g. ``EBADF``) propagates.
        """
        api = self._api
        flags = self._ev_add | self._ev_clear
        with self._lock:
            kq = self._init_locked()
            # Token first: the first events can be reported by a concurrent
            # netpoll before kevent returns here.
            previous = self._tokens.get(fd)
            self._tokens[fd] = token
            try:
                kq.control(
                    [api.kevent(fd, self._read, flags), api.kevent(fd, self._write, flags)], 0, 0
                )
            except BaseException:
                if previous is None:
                    del self._tokens[fd]
                else:
                    self._tokens[fd] = previous
                self._delete_knotes(kq, fd)  # the read knote may have been added
                raise

    def _delete_knotes(self, kq: Any, fd: int) -> None:
        # One change per call: kevent stops at the first failing change when
        # it has no room to report it, and either knote may be missing.
        for filt in (self._read, self._write):
            try:
                kq.control([self._api.kevent(fd, filt, self._ev_delete)], 0, 0)
            except (OSError, ValueError):
                pass

    def netpollclose(self, fd: int) -> None:
        """Forget ``fd`` and delete its knotes (closing the fd would too)."""
        with self._lock:
            if self._tokens.pop(fd, None) is None or self._kq is None:
                return
            self._delete_knotes(self._kq, fd)

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait up to ``timeout`` seconds; return ``[(token, modes), ...]``."""
        kq = self._kq
        if kq is None:
            with self._lock:
                kq = self._init_locked()
        wait = clamp_timeout(timeout)
        try:
            events = kq.control(None, MAX_EVENTS, wait)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            return []
        except (OSError, ValueError):
            if self._closed:
                return []  # shut down under our feet
            raise
        if not events:
            return []
        merged: dict[int, int] = {}
        tokens = self._tokens
        pipe = self._pipe
        for ev in events:
            ident: int = ev.ident
            filt: int = ev.filter
            if self._user_filter is not None and filt == self._user_filter and ident == 0:
                with self._lock:
                    self._wake_pending = False
                continue
            if pipe is not None and ident == pipe.rfd and filt == self._read:
                with self._lock:
                    pipe.drain()  # reads, then clears the pipe's flag
                continue
            flags: int = ev.flags
            modes = 0
            if flags & self._ev_error:
                modes = MODE_R | MODE_W
            elif filt == self._read:
                modes = MODE_R
                if flags & self._ev_eof:
                    modes |= MODE_W
            elif filt == self._write:
                modes = MODE_W
            if modes and ident in tokens:
                merged[ident] = merged.get(ident, 0) | modes
        result: list[tuple[object, int]] = []
        for ident, modes in merged.items():
            token = tokens.get(ident)
            if token is not None:  # closed meanwhile
                result.append((token, modes))
        return result

    def netpollbreak(self) -> None:
        """Wake a blocked :meth:`netpoll`; repeated calls coalesce."""
        with self._lock:
            if self._closed:
                return
            kq = self._init_locked()
            if self._user_filter is not None:
                if self._wake_pending:
                    return
                self._wake_pending = True
                assert self._note_trigger is not None
                ev = self._api.kevent(0, self._user_filter, 0, self._note_trigger)
                kq.control([ev], 0, 0)
            else:
                assert self._pipe is not None
                self._pipe.notify()

    # -- not a hook -------------------------------------------------------

    def _release_locked(self) -> None:
        """Close the kqueue and the wakeup pipe (from :meth:`shutdown`)."""
        kq, self._kq = self._kq, None
        if kq is not None:
            try:
                kq.close()
            except OSError:
                # A kqueue is not inherited across fork (BSD): in a child
                # its descriptor is already gone.
                pass
        self._close_pipe()


# --------------------------------------------------------------------------
# Backend registration.
# --------------------------------------------------------------------------


def probe_api(api: Any) -> str | None:
    """``None`` if a kqueue can be created and closed with ``api``, else why not."""
    if api is None:
        return _UNAVAILABLE
    try:
        kq = api.kqueue()
    except (OSError, AttributeError) as exc:
        return f"kqueue() failed: {exc}"
    kq.close()
    return None


def make_spec(resolve: Callable[[], Any]) -> BackendSpec:
    """The ``kqueue`` BackendSpec, taking its OS API from ``resolve()``."""

    def probe() -> str | None:
        return probe_api(resolve())

    def create() -> KqueuePoller:
        api = resolve()
        if api is None:
            raise RuntimeError(f"netpoll: kqueue backend: {_UNAVAILABLE}")
        return KqueuePoller(api)

    return BackendSpec(
        name="kqueue",
        priority=30,
        probe=probe,
        create=create,
        edge_triggered=True,
        description="BSD/macOS kqueue, edge-triggered (EV_CLEAR)",
    )


@hookimpl
def netpoll_backends() -> list[BackendSpec]:
    """The ``kqueue`` backend with the default API (no plugin manager bound)."""
    return [make_spec(default_kqueue_api)]


class BoundKqueueBackend:
    """The ``kqueue`` backend spec for one plugin manager.

    Its probe and create ask that manager's ``netpoll_kqueue_api`` hook, so a
    plugin registered there (the emulation) decides which kqueue is used.  It
    is ``tryfirst`` so that its spec shadows the module-level default one.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._spec = make_spec(lambda: kqueue_api(self._pm))

    @hookimpl(tryfirst=True)
    def netpoll_backends(self) -> list[BackendSpec]:
        """The ``kqueue`` backend, its API resolved through the bound manager."""
        return [self._spec]


def bind_plugin_manager(pm: pluggy.PluginManager) -> None:
    """Add the kqueue hookspec to ``pm`` and bind the backend to it (idempotent).

    pluggy never tells a plugin module which manager registered it, and the
    ``netpoll_backends`` hook carries no arguments, so the registry calls this
    after registering the built-in backend modules.
    """
    add_hookspecs(pm)
    if pm.get_plugin(BOUND_PLUGIN_NAME) is None:
        pm.register(BoundKqueueBackend(pm), name=BOUND_PLUGIN_NAME)
