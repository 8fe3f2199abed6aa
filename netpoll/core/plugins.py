"""The plugin manager, the syscall table, and backend selection.

Go calls its hookable syscalls through plain function variables
(``net/hook_unix.go``), which cost nothing when nobody replaced them.  pluggy's
hook call machinery costs a few microseconds per call, too much for
``read``/``write``.  So the :class:`SyscallTable` holds, per hook, either the
one plain implementation (when exactly one non-wrapper implementation is
registered) or a small adapter into pluggy (when wrappers or several
implementations are present).  :class:`NetpollPluginManager` rebuilds it on
every ``register``/``unregister``, so a fault plugin takes effect at once and
leaves no cost behind once removed.

Backend selection (Go has one poller per OS, chosen at build time) is a
runtime choice here: ``NETPOLL_BACKEND`` (a name or a comma list tried in
order), :func:`netpoll.use_backend`, or the best available backend by
priority (epoll > kqueue > poll > select).  Third-party backends come from the
``netpoll.backends`` entry-point group.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pluggy

from netpoll.core import hookspecs
from netpoll.core.hookspecs import POLLER_HOOKS, SYSCALL_HOOKS, BackendSpec, Poller, hookimpl
from netpoll.core.syscalls import DIRECT, OSSyscalls

ENV_BACKEND = "NETPOLL_BACKEND"
ENTRY_POINT_GROUP = "netpoll.backends"

#: The modules holding the built-in backend plugins.
BUILTIN_BACKENDS = (
    "netpoll.backends.epoll",
    "netpoll.backends.kqueue",
    "netpoll.backends.poll",
    "netpoll.backends.select",
)


class BackendError(ValueError):
    """An unknown or unavailable backend was asked for."""


class SyscallTable:
    """Go's function variables: one callable per syscall and poller hook.

    Attributes are named after the hooks (``read``, ``write``, ``netpoll``,
    ...).  The table is one object for the life of the process and is updated
    in place, so callers may keep a reference to it (not to its entries).
    """

    socket: Callable[..., Any]
    connect: Callable[..., Any]
    listen: Callable[..., Any]
    accept: Callable[..., Any]
    getsockopt_int: Callable[..., Any]
    close: Callable[..., Any]
    read: Callable[..., Any]
    write: Callable[..., Any]
    recvfrom: Callable[..., Any]
    sendto: Callable[..., Any]
    netpollinit: Callable[..., Any]
    netpollopen: Callable[..., Any]
    netpollclose: Callable[..., Any]
    netpoll: Callable[..., Any]
    netpollbreak: Callable[..., Any]
    netpollarm: Callable[..., Any]
    netpollwait: Callable[..., Any]

    def __init__(self) -> None:
        #: hook name -> True when the entry goes through pluggy.
        self.wrapped: dict[str, bool] = {}


def _hook_adapter(caller: pluggy.HookCaller, argnames: tuple[str, ...]) -> Callable[..., Any]:
    """Turn a keyword-only pluggy hook call into a positional function."""
    if argnames == ():
        return lambda: caller()
    if len(argnames) == 1:
        (a,) = argnames
        return lambda x: caller(**{a: x})
    if len(argnames) == 2:
        a, b = argnames
        return lambda x, y: caller(**{a: x, b: y})

    def call(*args: Any) -> Any:
        return caller(**dict(zip(argnames, args, strict=True)))

    return call


class PollerForwarder:
    """The default poller plugin: each hook calls the instance's method (``trylast``)."""

    @hookimpl(trylast=True)
    def netpollinit(self, poller: Poller) -> None:
        """Forward to ``poller.netpollinit()``."""
        poller.netpollinit()

    @hookimpl(trylast=True)
    def netpollopen(self, poller: Poller, fd: int, token: object) -> None:
        """Forward to ``poller.netpollopen()``."""
        poller.netpollopen(fd, token)

    @hookimpl(trylast=True)
    def netpollclose(self, poller: Poller, fd: int) -> None:
        """Forward to ``poller.netpollclose()``."""
        poller.netpollclose(fd)

    @hookimpl(trylast=True)
    def netpoll(self, poller: Poller, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Forward to ``poller.netpoll()``."""
        return poller.netpoll(timeout)

    @hookimpl(trylast=True)
    def netpollbreak(self, poller: Poller) -> None:
        """Forward to ``poller.netpollbreak()``."""
        poller.netpollbreak()

    @hookimpl(trylast=True)
    def netpollarm(self, poller: Poller, fd: int, mode: int) -> None:
        """Forward to ``poller.netpollarm()``."""
        poller.netpollarm(fd, mode)

    @hookimpl(trylast=True)
    def netpollwait(
        self, poller: Poller, fd: int, mode: int, wake_fd: int, timeout: float | None
    ) -> int:
        """Forward to ``poller.netpollwait()``."""
        return poller.netpollwait(fd, mode, wake_fd, timeout)


#: hook name -> the direct call the table uses when nobody wraps the hook.
_POLLER_DIRECT: dict[str, Callable[..., Any]] = {
    "netpollinit": lambda p: p.netpollinit(),
    "netpollopen": lambda p, fd, token: p.netpollopen(fd, token),
    "netpollclose": lambda p, fd: p.netpollclose(fd),
    "netpoll": lambda p, timeout: p.netpoll(timeout),
    "netpollbreak": lambda p: p.netpollbreak(),
    "netpollarm": lambda p, fd, mode: p.netpollarm(fd, mode),
    "netpollwait": lambda p, fd, mode, wake_fd, timeout: p.netpollwait(fd, mode, wake_fd, timeout),
}


class NetpollPluginManager(pluggy.PluginManager):
    """A pluggy PluginManager that keeps :attr:`table` in step with plugins."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.table = SyscallTable()
        self._os_syscalls = OSSyscalls()
        self._poller_forwarder = PollerForwarder()
        self.add_hookspecs(hookspecs)
        self.register(self._os_syscalls, name="netpoll.syscalls")
        self.register(self._poller_forwarder, name="netpoll.poller")

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin`` and rebuild the syscall table."""
        result = super().register(plugin, name)
        self.rebuild_table()
        return result

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        """Unregister ``plugin`` and rebuild the syscall table."""
        result = super().unregister(plugin, name)
        self.rebuild_table()
        return result

    def add_hookspecs(self, module_or_class: Any) -> None:
        """Add hook specifications (backends may bring their own)."""
        super().add_hookspecs(module_or_class)
        if hasattr(self, "table"):
            self.rebuild_table()

    def rebuild_table(self) -> None:
        """Point each table entry at the cheapest correct callable."""
        for name in SYSCALL_HOOKS + POLLER_HOOKS:
            caller: pluggy.HookCaller = getattr(self.hook, name)
            impls = caller.get_hookimpls()
            direct: Callable[..., Any] | None = None
            if len(impls) == 1 and not (impls[0].hookwrapper or impls[0].wrapper):
                impl = impls[0]
                fn: Callable[..., Any] = impl.function
                if impl.plugin is self._os_syscalls:
                    direct = DIRECT[name]
                elif impl.plugin is self._poller_forwarder:
                    direct = _POLLER_DIRECT[name]
                else:
                    direct = fn
            if direct is not None:
                setattr(self.table, name, direct)
                self.table.wrapped[name] = False
            else:
                assert caller.spec is not None
                setattr(self.table, name, _hook_adapter(caller, tuple(caller.spec.argnames)))
                self.table.wrapped[name] = True


# --------------------------------------------------------------------------
# Backend registry and selection.
# --------------------------------------------------------------------------


def _load_builtin_backends(pm: NetpollPluginManager) -> None:
    import importlib

    for modname in BUILTIN_BACKENDS:
        mod = importlib.import_module(modname)
        if not pm.is_registered(mod):
            pm.register(mod, name=modname)
        # A backend with hooks of its own (kqueue: netpoll_kqueue_api) adds
        # their specs and binds to this manager; pluggy never tells a module
        # plugin which manager registered it.
        bind = getattr(mod, "bind_plugin_manager", None)
        if bind is not None:
            bind(pm)
    # Third-party backends: entry points whose object is a plugin (module or
    # instance) implementing netpoll_backends.
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)


class BackendRegistry:
    """Lists the backends the registered plugins provide and probes them."""

    def __init__(self, pm: NetpollPluginManager) -> None:
        self._pm = pm
        self._loaded = False
        self._lock = threading.Lock()
        self._probe_cache: dict[str, str | None] = {}

    def specs(self) -> list[BackendSpec]:
        """All known backends, best first (highest priority)."""
        with self._lock:
            if not self._loaded:
                _load_builtin_backends(self._pm)
                self._loaded = True
        found: dict[str, BackendSpec] = {}
        for answer in self._pm.hook.netpoll_backends():
            for spec in answer:
                found.setdefault(spec.name, spec)
        return sorted(found.values(), key=lambda s: (-s.priority, s.name))

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
