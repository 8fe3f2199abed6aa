"""The backend registry: listing, probing, the OS-API injection point, plugin validation.

Every backend plugin answers ``netpoll_backends(os_api)``; the registry
collects the specs (one per name), probes them, and picks one.  The kqueue
backend takes its OS API from ``os_api("kqueue")``, which a plugin answers
through ``netpoll_os_api``: that is how the emulation reaches it on Linux,
and the only way.
"""

from __future__ import annotations

import importlib
import select
from typing import Any

import pluggy
import pytest

from netpoll.backends.kqueue import KqueuePoller
from netpoll.core.hookspecs import BackendSpec, hookimpl
from netpoll.core.plugins import (
    ENV_BACKEND,
    ENV_PLUGINS,
    BackendError,
    BackendRegistry,
    NetpollPluginManager,
)
from tests.helpers.backends import HAVE_REAL_KQUEUE, IS_LINUX, emulation, make_registry, spec_named

needs_no_real_kqueue = pytest.mark.skipif(HAVE_REAL_KQUEUE, reason="the real kqueue is here")


def test_the_built_in_backends_are_entry_point_plugins() -> None:
    """Registered from netpoll's own ``netpoll.backends`` entry points, like a third party's."""
    pm, registry = make_registry(emulate_kqueue=True)
    assert {"epoll", "kqueue", "poll", "select"} <= {s.name for s in registry.specs()}
    dists = {id(plugin): dist.project_name for plugin, dist in pm.list_plugin_distinfo()}
    for name in ("epoll", "kqueue", "poll", "select"):
        plugin = pm.get_plugin(name)  # registered under the entry point's name
        assert plugin is importlib.import_module(f"netpoll.backends.{name}")
        assert dists[id(plugin)] == "netpoll"


@pytest.mark.parametrize("choice", [None, "poll"])
def test_no_entry_points_no_backends_and_an_error_that_says_so(
    monkeypatch: pytest.MonkeyPatch, choice: str | None
) -> None:
    monkeypatch.delenv(ENV_PLUGINS, raising=False)
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    registry = BackendRegistry(NetpollPluginManager(), entry_point_group="netpoll.no-such-group")
    assert registry.specs() == []
    assert registry.available() == []
    with pytest.raises(BackendError, match="no backend plugin is registered") as ei:
        registry.resolve(choice)
    assert "'netpoll.no-such-group' entry points" in str(ei.value)
    assert "reinstall netpoll" in str(ei.value)


def test_listing_order_priorities_and_triggering() -> None:
    _, registry = make_registry(emulate_kqueue=True)
    specs = registry.specs()
    assert [s.name for s in specs] == ["epoll", "kqueue", "poll", "select"]
    assert [s.priority for s in specs] == [40, 30, 20, 10]
    assert [s.edge_triggered for s in specs] == [True, True, False, False]
    assert all(s.description for s in specs)


@pytest.mark.skipif(not IS_LINUX, reason="epoll, poll and select are all here on Linux")
def test_probes_on_linux_with_emulation() -> None:
    _, registry = make_registry(emulate_kqueue=True)
    assert registry.available() == ["epoll", "kqueue", "poll", "select"]


def test_probes_do_not_leak() -> None:
    _, registry = make_registry(emulate_kqueue=True)
    for spec in registry.specs():
        for _ in range(3):
            spec.probe()


@needs_no_real_kqueue
def test_kqueue_without_an_api_is_unavailable_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_PLUGINS, raising=False)  # the session may name the emulation
    _, registry = make_registry(emulate_kqueue=False)
    reason = registry.why_unavailable(spec_named(registry, "kqueue"))
    assert reason is not None and "kqueue is not available" in reason
    assert "kqueue" not in registry.available()


@needs_no_real_kqueue
def test_os_api_hook_decides_per_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulation reaches the kqueue backend only through the manager it is registered on."""
    monkeypatch.delenv(ENV_PLUGINS, raising=False)  # the session may name the emulation
    pm_plain, reg_plain = make_registry(emulate_kqueue=False)
    pm_emu, reg_emu = make_registry(emulate_kqueue=True)
    assert pm_emu.hook.netpoll_os_api(name="kqueue") is emulation()
    assert pm_plain.hook.netpoll_os_api(name="kqueue") is None
    assert reg_plain.why_unavailable(spec_named(reg_plain, "kqueue")) is not None
    spec = spec_named(reg_emu, "kqueue")
    assert reg_emu.why_unavailable(spec) is None
    poller = spec.create()
    try:
        assert isinstance(poller, KqueuePoller)
        assert poller.api is emulation()
    finally:
        poller.shutdown()
    # Registering the emulation later switches that manager over.
    pm_plain.register(emulation())
    reg_plain.forget_probes()
    assert reg_plain.why_unavailable(spec_named(reg_plain, "kqueue")) is None


@needs_no_real_kqueue
def test_netpoll_plugins_env_registers_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """``NETPOLL_PLUGINS`` names plugin modules every process loads (child processes too)."""
    monkeypatch.setenv(ENV_PLUGINS, " netpoll.testing.kqueue_emulation ,")
    pm, registry = make_registry(emulate_kqueue=False)
    assert registry.why_unavailable(spec_named(registry, "kqueue")) is None
    assert pm.is_registered(emulation())


def test_each_backend_is_listed_once() -> None:
    for emulate in (False, True):
        _, registry = make_registry(emulate_kqueue=emulate)
        names = [s.name for s in registry.specs()]
        assert len(names) == len(set(names)), names


def test_two_backends_with_one_name_are_an_error() -> None:
    """Which of two same-named backends wins would depend on hook order: refused."""

    class Impostor:
        @hookimpl
        def netpoll_backends(self) -> list[BackendSpec]:
            return [
                BackendSpec(
                    name="poll",
                    priority=99,
                    probe=lambda: None,
                    create=lambda: None,  # type: ignore[arg-type,return-value]
                )
            ]

    pm, registry = make_registry(emulate_kqueue=False)
    pm.register(Impostor())
    with pytest.raises(BackendError, match="two plugins provide a backend named 'poll'"):
        registry.specs()


def test_misspelt_hook_in_a_plugin_is_an_error() -> None:
    """A hook implementation that matches no spec is refused at registration."""

    class Misspelt:
        @hookimpl
        def netpoll_backend(self) -> list[BackendSpec]:  # missing "s"
            return []

    pm = NetpollPluginManager()
    plugin = Misspelt()
    with pytest.raises(pluggy.PluginValidationError, match="netpoll_backend"):
        pm.register(plugin)
    assert not pm.is_registered(plugin)
    # The manager is still usable and lists the built-in backends.
    assert "select" in [s.name for s in BackendRegistry(pm).specs()]


def test_optional_hooks_of_other_plugins_are_allowed() -> None:
    class Optional:
        @hookimpl(optionalhook=True)
        def netpoll_something_else(self) -> None:
            return None

    pm = NetpollPluginManager()
    pm.register(Optional())


def test_real_kqueue_is_used_where_present() -> None:
    if not HAVE_REAL_KQUEUE:
        pytest.skip("no real kqueue here")
    _, registry = make_registry(emulate_kqueue=False)
    poller: Any = spec_named(registry, "kqueue").create()
    try:
        assert poller.api is select
    finally:
        poller.shutdown()
