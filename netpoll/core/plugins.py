"""The plugin manager, the syscall table, and backend selection.

Go calls its hookable syscalls through plain function variables
(``net/hook_unix.go``), which cost nothing when nobody replaced them.  pluggy's
hook call machinery costs a few microseconds per call, too much for
``read``/``write``.  So the :class:`SyscallTable` holds, per hook, either the
one plain implementation itself (when exactly one non-wrapper implementation
is registered: the OS call of :mod:`netpoll.core.syscalls`, or the poller
forwarder below) or an adapter into pluggy (when wrappers or several
implementations are present).  :class:`NetpollPluginManager` rebuilds it on
every ``register``/``unregister``, so a fault plugin takes effect at once and
leaves no cost behind once removed.

Backend selection (Go has one poller per OS, chosen at build time) is a
runtime choice here: ``NETPOLL_BACKEND`` (a name or a comma list tried in
order), :func:`netpoll.use_backend`, or the best available backend by
priority (epoll > kqueue > poll > select).  Every backend, the built-in ones
included, comes from the ``netpoll.backends`` entry-point group: netpoll's
own ``pyproject.toml`` lists its four there, the way a third-party package
lists its own, so the core names no backend module and imports none.  Extra
plugin modules come from ``NETPOLL_PLUGINS`` (a comma list of importable
module names, like pytest's ``PYTEST_PLUGINS``; child processes inherit it).
"""

from __future__ import annotations

import importlib
import os
import socket as _socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import pluggy

from netpoll.core import hookspecs, syscalls
from netpoll.core.hookspecs import (
    POLLER_HOOKS,
    SYSCALL_HOOKS,
    Address,
    BackendSpec,
    Poller,
    hookimpl,
    poller_hook_function,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

ENV_BACKEND = "NETPOLL_BACKEND"
ENV_PLUGINS = "NETPOLL_PLUGINS"
ENTRY_POINT_GROUP = "netpoll.backends"


class BackendError(ValueError):
    """An unknown or unavailable backend was asked for."""


class TokenOwner(Protocol):
    """What a poller token points at: the core's tokens are ``(pollDesc, generation)``."""

    fdseq: int

    def ready(self, mode: int) -> None:
        """netpollready: wake or latch the waiters of ``mode``."""


#: A poller token as the core makes it.  Backends treat tokens as opaque
#: (``object``); the table, the core's view, says what comes back.
CoreToken = tuple[TokenOwner, int]

#: The poller argument as the core passes it: an M's ``poller`` attribute,
#: which is None once that M's poller is closed (then the hook raises
#: :class:`RuntimeError`).
MaybePoller = Poller | None


class SyscallTable:
    """Go's function variables: one callable per syscall and poller hook.

    Attributes are named after the hooks and typed like them (see
    :mod:`netpoll.core.hookspecs`).  The table is one object for the life of
    the process and is updated in place, so callers may keep a reference to
    it (not to its entries).
    """

    socket: Callable[[int, int, int], _socket.socket]
    connect: Callable[[_socket.socket, Address], None]
    listen: Callable[[_socket.socket, int], None]
    accept: Callable[[_socket.socket], tuple[_socket.socket, Address]]
    getsockopt_int: Callable[[_socket.socket, int, int], int]
    close: Callable[[_socket.socket], None]
    read: Callable[[_socket.socket, WriteableBuffer], int]
    write: Callable[[_socket.socket, ReadableBuffer], int]
    recvfrom: Callable[[_socket.socket, WriteableBuffer], tuple[int, Address]]
    sendto: Callable[[_socket.socket, ReadableBuffer, Address], int]
    netpollinit: Callable[[MaybePoller], None]
    netpollopen: Callable[[MaybePoller, int, object], None]
    netpollclose: Callable[[MaybePoller, int], None]
    netpoll: Callable[[MaybePoller, float | None], Sequence[tuple[CoreToken, int]]]
    netpollbreak: Callable[[MaybePoller], None]
    netpollarm: Callable[[MaybePoller, int, int], None]
    netpollwait: Callable[[MaybePoller, int, int, int, float | None], int]

    def __init__(self) -> None:
        #: hook name -> True when the entry goes through pluggy.
        self.wrapped: dict[str, bool] = {}
        #: True while the entry is the default implementation itself and no
        #: plugin watches the call: the hot paths may then make the same call
        #: the cheapest way (``sock.recv`` for ``read``, ``poller.netpoll``
        #: for ``netpoll``).  Rebuilt with the table, so a plugin registered
        #: later is seen by the next call.
        self.read_direct = True
        self.write_direct = True
        self.netpoll_direct = True
        self.netpollwait_direct = True
        #: The same for registering and forgetting an fd (once per conn).
        self.netpollopen_direct = True
        self.netpollclose_direct = True


def _through_pluggy(caller: pluggy.HookCaller) -> Callable[..., object]:
    """The positional function that calls the keyword-only pluggy hook ``caller``."""
    assert caller.spec is not None
    argnames = tuple(caller.spec.argnames)

    def call(*args: object) -> object:
        return caller(**dict(zip(argnames, args, strict=True)))

    call.__name__ = caller.name
    return call


def _closed_poller() -> RuntimeError:
    return RuntimeError("netpoll: this M's poller is closed")


def _forwarder(name: str) -> Callable[..., object]:
    """The core's ``trylast`` implementation of poller hook ``name``: call the method."""
    body = f"if poller is None:\n        raise closed()\n    return poller.{name}({{args}})"
    function = poller_hook_function(name, body, {"closed": _closed_poller, "__name__": __name__})
    return hookimpl(trylast=True)(function)


class PollerForwarder:
    """The core's poller plugin: each poller hook calls the poller object's method.

    Its implementations are ``trylast``, so a plugin's own implementation
    or wrapper of a poller hook runs first.  One function per hook, made
    from :class:`~netpoll.core.hookspecs.Poller` (see
    :func:`~netpoll.core.hookspecs.poller_hook_function`), so the contract
    is not restated here: ``name(poller, ...)`` returns ``poller.name(...)``,
    or raises :class:`RuntimeError` when ``poller`` is None (an M's poller
    once closed), which the core's callers on shutdown paths expect.  With
    no other implementation, the syscall table holds these functions
    themselves: a call costs what a hand-written forwarder costs.
    """

    _functions = {name: _forwarder(name) for name in POLLER_HOOKS}

    def __init__(self) -> None:
        # Plain functions as instance attributes: pluggy registers them as
        # this plugin's hook implementations, and the table calls them as is.
        for name, function in self._functions.items():
            setattr(self, name, function)


class NetpollPluginManager(pluggy.PluginManager):
    """A pluggy PluginManager that keeps :attr:`table` in step with plugins.

    Every registration is validated at once: a plugin with a hook
    implementation that matches no specification (a misspelt name) is
    refused with :class:`pluggy.PluginValidationError`.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.table = SyscallTable()
        self.add_hookspecs(hookspecs)
        self.register(syscalls, name="netpoll.syscalls")
        self.register(PollerForwarder(), name="netpoll.poller")

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin``, check every hook has a spec, rebuild the syscall table."""
        result = super().register(plugin, name)
        try:
            self.check_pending()
        except pluggy.PluginValidationError:
            if result is not None:
                super().unregister(plugin)
            raise
        finally:
            self.rebuild_table()
        return result

    def unregister(self, plugin: object | None = None, name: str | None = None) -> object:
        """Unregister ``plugin`` and rebuild the syscall table."""
        result = super().unregister(plugin, name)
        self.rebuild_table()
        return result

    def rebuild_table(self) -> None:
        """Point each table entry at the cheapest correct callable."""
        table = self.table
        for name in SYSCALL_HOOKS + POLLER_HOOKS:
            caller: pluggy.HookCaller = getattr(self.hook, name)
            impls = caller.get_hookimpls()
            if len(impls) == 1 and not (impls[0].hookwrapper or impls[0].wrapper):
                setattr(table, name, impls[0].function)
                table.wrapped[name] = False
            else:
                setattr(table, name, _through_pluggy(caller))
                table.wrapped[name] = True
        table.read_direct = self._is_default("read", syscalls)
        table.write_direct = self._is_default("write", syscalls)
        forwarder = self.get_plugin("netpoll.poller")
        table.netpoll_direct = self._is_default("netpoll", forwarder)
        table.netpollwait_direct = self._is_default("netpollwait", forwarder)
        table.netpollopen_direct = self._is_default("netpollopen", forwarder)
        table.netpollclose_direct = self._is_default("netpollclose", forwarder)

    def _is_default(self, name: str, plugin: object) -> bool:
        """True when ``plugin`` alone implements hook ``name`` (nothing watches the call)."""
        if plugin is None or self.table.wrapped.get(name, True):
            return False
        impls = getattr(self.hook, name).get_hookimpls()
        return len(impls) == 1 and impls[0].plugin is plugin


# --------------------------------------------------------------------------
# Backend registry and selection.
# --------------------------------------------------------------------------


def _load_plugins(pm: NetpollPluginManager, group: str) -> None:
    """Register the plugins of the entry-point ``group``, then those of ``NETPOLL_PLUGINS``."""
    # Built-in and third-party backends alike: entry points whose object is a
    # plugin (module or instance) implementing netpoll_backends, registered
    # under the entry point's name.
    pm.load_setuptools_entrypoints(group)
    # The modules a user names (a dynamic import the layer test allows here
    # only: these are the user's modules, not the package's).
    for modname in os.environ.get(ENV_PLUGINS, "").split(","):
        modname = modname.strip()
        if modname:
            mod = importlib.import_module(modname)
            if not pm.is_registered(mod):
                pm.register(mod)


class BackendRegistry:
    """Lists the backends the registered plugins provide and probes them.

    On first use it registers the plugins of the ``entry_point_group`` (the
    built-in backends among them) and of ``NETPOLL_PLUGINS`` with ``pm``.
    """

    def __init__(
        self, pm: NetpollPluginManager, entry_point_group: str = ENTRY_POINT_GROUP
    ) -> None:
        self._pm = pm
        self._group = entry_point_group
        self._loaded = False
        self._lock = threading.Lock()
        self._probe_cache: dict[str, str | None] = {}

    def specs(self) -> list[BackendSpec]:
        """All known backends, best first (highest priority)."""
        with self._lock:
            if not self._loaded:
                _load_plugins(self._pm, self._group)
                self._loaded = True
        found: dict[str, BackendSpec] = {}
        for answer in self._pm.hook.netpoll_backends(os_api=self._os_api):
            for spec in answer:
                if spec.name in found:
                    # Which one would win depends on hook order: refuse both.
                    raise BackendError(
                        f"netpoll: two plugins provide a backend named {spec.name!r}"
                    )
                found[spec.name] = spec
        return sorted(found.values(), key=lambda s: (-s.priority, s.name))

    def _os_api(self, name: str) -> object | None:
        """What :func:`~netpoll.core.hookspecs.netpoll_os_api` supplies for ``name``."""
        answer: object | None = self._pm.hook.netpoll_os_api(name=name)
        return answer

    def why_unavailable(self, spec: BackendSpec) -> str | None:
        """``None`` when ``spec`` works here, else the probe's reason."""
        if spec.name not in self._probe_cache:
            try:
                reason = spec.probe()
            except Exception as exc:  # a probe must not break listing
                reason = f"probe failed: {exc}"
            self._probe_cache[spec.name] = reason
        return self._probe_cache[spec.name]

    def forget_probes(self) -> None:
        """Drop cached probe results (after plugins that change them come or go)."""
        self._probe_cache.clear()

    def available(self) -> list[str]:
        """Names of the backends that work here, best first."""
        return [s.name for s in self.specs() if self.why_unavailable(s) is None]

    def resolve(self, choice: str | None) -> tuple[BackendSpec, str]:
        """Pick a backend: ``choice`` (a name or comma list) or the best one.

        Returns the spec and what decided it ("api", "env", "default").
        Raises :class:`BackendError` naming what is available here.
        """
        specs = self.specs()
        if not specs:
            raise BackendError(
                f"netpoll: no backend plugin is registered: the {self._group!r} entry"
                " points (netpoll's own backends among them) are not installed;"
                " reinstall netpoll (pip install -e . in a checkout)"
            )
        by_name = {s.name: s for s in specs}
        if choice is None:
            env = os.environ.get(ENV_BACKEND, "").strip()
            if env:
                return self._first_usable(env, by_name), "env"
            for spec in specs:
                if self.why_unavailable(spec) is None:
                    return spec, "default"
            raise BackendError("netpoll: no poller backend is available on this system")
        return self._first_usable(choice, by_name), "api"

    def _first_usable(self, choice: str, by_name: dict[str, BackendSpec]) -> BackendSpec:
        names = [n.strip().lower() for n in choice.split(",") if n.strip()]
        if not names:
            raise BackendError(f"netpoll: empty backend name {choice!r}")
        problems = []
        for name in names:
            spec = by_name.get(name)
            if spec is None:
                problems.append(f"unknown backend {name!r}")
                continue
            reason = self.why_unavailable(spec)
            if reason is None:
                return spec
            problems.append(f"backend {name!r} is not available here ({reason})")
        available = ", ".join(self.available()) or "none"
        raise BackendError(f"netpoll: {'; '.join(problems)}; available backends: {available}")
