"""The process-wide runtime: plugin manager, syscall table, chosen backend, pollcache.

Go picks its poller when the program is built; here the backend is resolved
the first time something needs it (an M creating its poller, a thread parking
through ``netpollwait``), so ``NETPOLL_BACKEND`` and :func:`use_backend` only
need to be set before that.  Switching later is allowed while no descriptor
is registered (tests use it to run one suite over every backend in one
process): it bumps :attr:`Runtime.backend_generation`, and each M replaces
its poller instance the next time it polls with no fd registered.

The pollers themselves belong to the scheduler's Ms (:mod:`netpoll.core.m`);
the runtime keeps one extra instance of the chosen backend, never polled,
whose ``netpollwait`` parked threads use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from netpoll.core.hookspecs import BackendSpec, Poller
from netpoll.core.plugins import BackendError, BackendRegistry, NetpollPluginManager


class PollCache:
    """Go's pollcache: a free list of PollDescs, so descriptors are reused.

    Reuse is why a PollDesc has a generation (``fdseq``): a reused one gets a
    new generation, and poller tokens of the old one stop matching.  The
    PollDesc class is :mod:`netpoll.core.polldesc`'s; it installs itself as
    :attr:`new` when imported (this module sits below it).
    """

    def __init__(self) -> None:
        # Reentrant: a Conn collected by the cyclic GC closes its FD, which
        # frees its PollDesc here, possibly in a thread already inside alloc().
        self._lock = threading.RLock()
        self._free: list[Any] = []
        #: Makes a fresh PollDesc.
        self.new: Callable[[], Any] | None = None
        #: PollDescs handed out and not yet freed.
        self.live_set: set[Any] = set()

    @property
    def live(self) -> int:
        """How many PollDescs are in use."""
        return len(self.live_set)

    def alloc(self, fd: int) -> Any:
        """A clean PollDesc for ``fd`` with a fresh generation."""
        with self._lock:
            if self._free:
                pd = self._free.pop()
            else:
                assert self.new is not None, "netpoll.core.polldesc is not imported"
                pd = self.new()
            self.live_set.add(pd)
        pd.reset(fd)
        return pd

    # -- what a plugin may know about tokens ---------------------------------
    #
    # Poller tokens are opaque to plugins (hookspecs).  A plugin that fakes
    # readiness (fault injection) needs to relate them to descriptors; these
    # are the public way to do it.  Each looks at the PollDescs in use now.

    def registered(self) -> list[tuple[int, object]]:
        """``(fd, token)`` of every descriptor in use and not closing."""
        with self._lock:
            pds = list(self.live_set)
        return [(pd.fd, pd.token) for pd in pds if pd.token is not None and not pd.closing]

    def token_of(self, fd: int) -> object | None:
        """The poller token of descriptor ``fd`` (in use, not closing), or None."""
        for f, token in self.registered():
            if f == fd:
                return token
        return None

    def fd_of(self, token: object) -> int:
        """The descriptor ``token`` stands for, or -1 for a stale or foreign token."""
        with self._lock:
            pds = list(self.live_set)
        for pd in pds:
            if pd.token is not None and pd.token == token:
                fd: int = pd.fd
                return fd
        return -1

    def free(self, pd: Any) -> None:
        """Return ``pd`` to the cache; its generation ends here."""
        pd.retire()
        with self._lock:
            self.live_set.discard(pd)
            self._free.append(pd)


class Runtime:
    """Owns the plugin manager, the backend choice and the pollcache."""

    def __init__(self) -> None:
        self.pm = NetpollPluginManager()
        self.table = self.pm.table
        self.registry = BackendRegistry(self.pm)
        self.cache = PollCache()
        #: What the user asked for (a name or comma list; None: env/default).
        self.choice: str | None = None
        #: What decided the backend in use: "api", "env" or "default".
        self.chosen_by = ""
        #: Bumped whenever the backend changes; Ms compare it to their poller's.
        self.backend_generation = 0
        self._spec: BackendSpec | None = None
        self._thread_poller: Poller | None = None
        self._lock = threading.RLock()

    # -- backend selection -----------------------------------------------

    def use_backend(self, name: str | None) -> None:
        """Select backend ``name`` (``None``: back to env/default) for next use.

        Raises :class:`BackendError` for an unknown or unavailable name, and
        :class:`RuntimeError` if another backend is in use by registered
        descriptors.
        """
        with self._lock:
            if name is not None:
                spec, _ = self.registry.resolve(name)  # validates now, clear error
                name = spec.name
            current = self._spec
            if current is not None:
                if name is not None and current.name == name:
                    self.choice = name
                    return
                if self.cache.live:
                    raise RuntimeError(
                        f"netpoll: backend {current.name!r} is in use by {self.cache.live} "
                        "descriptor(s); choose the backend before the first listen/dial"
                    )
                self._drop_backend()
            self.choice = name

    def spec(self) -> BackendSpec:
        """The backend in use, resolving it on first use."""
        spec = self._spec
        if spec is not None:
            return spec
        with self._lock:
            if self._spec is None:
                self._spec, self.chosen_by = self.registry.resolve(self.choice)
            return self._spec

    def thread_poller(self) -> Poller:
        """The instance of the backend whose ``netpollwait`` parked threads use."""
        poller = self._thread_poller
        if poller is not None:
            return poller
        with self._lock:
            if self._thread_poller is None:
                self._thread_poller = self.spec().create()
            return self._thread_poller

    def _drop_backend(self) -> None:
        poller, self._thread_poller = self._thread_poller, None
        if poller is not None:
            poller.shutdown()
        self._spec = None
        self.backend_generation += 1

    def backend_name(self) -> str:
        """The active backend's name, or the one that would be chosen now."""
        spec = self._spec
        if spec is not None:
            return spec.name
        spec, _ = self.registry.resolve(self.choice)
        return spec.name

    def active_backend(self) -> str | None:
        """The backend in use, or None before first use."""
        spec = self._spec
        return None if spec is None else spec.name

    # -- fork ---------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """Forget the thread-wait poller (its per-thread state is the parent's)."""
        self._lock = threading.RLock()
        poller, self._thread_poller = self._thread_poller, None
        if poller is not None:
            poller.shutdown()


#: The one runtime of this process.
runtime = Runtime()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=runtime.after_fork_in_child)

__all__ = ["BackendError", "PollCache", "Runtime", "runtime"]
