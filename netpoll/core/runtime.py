"""The process-wide runtime: plugin manager, chosen backend, netpoller, pollcache.

Go has one netpoller per process, set up on first use.  :data:`runtime` is
ours: the backend is resolved and started the first time a descriptor is
registered, so ``NETPOLL_BACKEND`` and :func:`use_backend` only need to be set
before that.  Switching later is allowed while no descriptor is registered
(tests use it to run one suite over every backend in one process).

After ``os.fork()`` the child cannot use the parent's poller (the poller
thread does not exist there and an epoll/kqueue object is shared with, or not
inherited from, the parent), so the child drops it and starts a fresh one on
next use, re-registering the descriptors it inherited.
"""

from __future__ import annotations

import os
import threading

from netpoll.core.netpoller import NetPoller
from netpoll.core.plugins import BackendError, BackendRegistry, NetpollPluginManager
from netpoll.core.polldesc import PollCache

_BACKEND_PLUGIN_NAME = "netpoll.backend"


class Runtime:
    """Owns the plugin manager and the single active :class:`NetPoller`."""

    def __init__(self) -> None:
        self.pm = NetpollPluginManager()
        self.table = self.pm.table
        self.registry = BackendRegistry(self.pm)
        self.cache = PollCache()
        self._poller: NetPoller | None = None
        self._choice: str | None = None
        self.chosen_by = ""
        self._lock = threading.RLock()

    # -- backend selection -----------------------------------------------

    def use_backend(self, name: str | None) -> None:
        """Select backend ``name`` (``None``: back to env/default) for next use.

        Raises :class:`BackendError` for an unknown or unavailable name, and
        :class:`RuntimeError` if another backend is active with registered
        descriptors.
        """
        with self._lock:
            if name is not None:
                spec, _ = self.registry.resolve(name)  # validates now, clear error
                name = spec.name
            poller = self._poller
            if poller is not None:
                if name is not None and poller.name == name:
                    self._choice = name
                    return
                if self.cache.live:
                    raise RuntimeError(
                        f"netpoll: backend {poller.name!r} is in use by {self.cache.live} "
                        "descriptor(s); choose the backend before the first listen/dial"
                    )
                self._shutdown_poller()
            self._choice = name

    def poller(self) -> NetPoller:
        """The active netpoller, creating it (and its backend) on first use."""
        poller = self._poller
        if poller is not None:
            return poller
        with self._lock:
            if self._poller is None:
                self._poller = self._start_poller()
            return self._poller

    def _start_poller(self) -> NetPoller:
        spec, chosen_by = self.registry.resolve(self._choice)
        backend = spec.create()
        self.pm.register(backend, name=_BACKEND_PLUGIN_NAME)
        try:
            self.table.netpollinit()
        except BaseException:
            self.pm.unregister(name=_BACKEND_PLUGIN_NAME)
            _shutdown_backend(backend)
            raise
        self.chosen_by = chosen_by
        return NetPoller(self.table, spec, backend, self.cache)

    def _shutdown_poller(self) -> None:
        poller = self._poller
        if poller is None:
            return
        self._poller = None
        poller.stop()
        self.pm.unregister(name=_BACKEND_PLUGIN_NAME)
        _shutdown_backend(poller.backend)

    def shutdown(self) -> None:
        """Stop the poller thread and release the backend (no fds may be live)."""
        with self._lock:
            self._shutdown_poller()

    def backend_name(self) -> str:
        """The active backend's name, or the one that would be chosen now."""
        poller = self._poller
        if poller is not None:
            return poller.name
        spec, _ = self.registry.resolve(self._choice)
        return spec.name

    def active_backend(self) -> str | None:
        """The running backend's name, or None before first use."""
        poller = self._poller
        return None if poller is None else poller.name

    # -- fork ---------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        poller = self._poller
        self._lock = threading.RLock()
        if poller is None:
            return
        # The parent's loop thread does not exist here; its backend objects
        # (epoll fd, wakeup fd) would share kernel state with the parent.
        self._poller = None
        poller._stopping = True
        self.pm.unregister(name=_BACKEND_PLUGIN_NAME)
        _shutdown_backend(poller.backend)
        inherited = list(self.cache.live_set)
        if not inherited:
            return
        # Descriptors inherited from the parent move to a fresh poller with a
        # new generation, so stale events of the parent's registration drop.
        fresh = self.poller()
        fresh._ensure_started()
        for pd in inherited:
            pd.fdseq += 1
            pd.token = (pd, pd.fdseq)
            pd.poller = fresh
            pd.rg = pd.wg = None  # the parked threads did not survive the fork
            try:
                self.table.netpollopen(pd.fd, pd.token)
            except OSError:
                pd.poller = None


def _shutdown_backend(backend: object) -> None:
    shutdown = getattr(backend, "shutdown", None)
    if shutdown is not None:
        shutdown()


#: The one runtime of this process.
runtime = Runtime()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=runtime._after_fork_in_child)

__all__ = ["BackendError", "Runtime", "runtime"]
