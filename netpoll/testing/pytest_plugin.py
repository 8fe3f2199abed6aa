"""pytest plugin: netpoll fault-injection fixtures, backend marker and option, leak check.

Loaded through the ``pytest11`` entry point (``netpoll = "netpoll.testing.pytest_plugin"``)
whenever netpoll is installed; with a source checkout that is not installed,
run pytest with ``-p netpoll.testing.pytest_plugin``.  Do not do both: if the
entry point is active *and* the module is named with ``-p`` or
``pytest_plugins``, pytest registers one module under two names and stops
with "Plugin already registered under a different name".  ``-p no:netpoll
-p netpoll.testing.pytest_plugin`` works either way (the entry point's name
is blocked, the module is loaded by its own name).

What it provides (Go's ``net/main_test.go`` installs socktest hooks for the
whole package and checks ``sw.Sockets()`` after the run; here it is per test):

``netpoll_switch`` fixture
    A :class:`~netpoll.testing.switch.Switch` installed for the test and
    removed afterwards, even when the test fails.  It is set up before the
    test's other function-scoped fixtures and torn down after them,
    whatever the order they are requested in, so the leak check covers
    sockets opened by the test *and* by its function-scoped fixtures, and
    runs once those fixtures have closed what they own.  Sockets opened
    before it (by module- or session-scoped fixtures, or earlier tests)
    are not tracked: a Switch only knows the sockets it saw created.  If
    the test passed but left tracked sockets open, the teardown fails,
    naming each socket and where it was opened (after a short grace period
    for sockets other threads are still closing).
``netpoll_faults`` fixture
    A :class:`~netpoll.testing.faults.Faults` on that same Switch (so the
    leak check covers it); its rules are removed after the test.
``@pytest.mark.netpoll_backend("poll")``
    Runs the test on that poller backend (``netpoll.use_backend``), restoring
    the previous choice afterwards; skipped when the backend is not available
    here, the skip reported at the test's own line with the reason netpoll
    gives.  The switch happens before any fixture is set up.
``@pytest.mark.netpoll_goroutine``
    Runs the test function's body as a goroutine: the calling thread becomes
    an M (:func:`netpoll.run`), so every netpoll call of the body parks a G
    and the body's exception is the test's.  Fixtures stay in the thread.
``--netpoll-backend NAME`` / ini ``netpoll_backend = NAME``
    The backend for the whole session, as ``NETPOLL_BACKEND`` would choose it
    (the option overrides ``NETPOLL_BACKEND``, which overrides the ini value).
``NETPOLL_KQUEUE_EMULATION=1``
    Where there is no real kqueue (Linux), the kqueue backend runs on
    :mod:`netpoll.testing.kqueue_emulation` for the session and for the
    Python child processes it starts (:func:`use_kqueue_emulation`).

Tests that use none of this pay for one marker lookup and two stash lookups each.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from netpoll.testing.faults import Faults
from netpoll.testing.switch import Switch

#: How long the leak check waits for sockets other threads are still closing.
LEAK_GRACE = 2.0

_ENV = "NETPOLL_BACKEND"
#: ``1``: run the kqueue backend on the emulation where there is no real kqueue.
ENV_KQUEUE_EMULATION = "NETPOLL_KQUEUE_EMULATION"
_EMULATION = "netpoll.testing.kqueue_emulation"
_MARKER = "netpoll_backend"
_G_MARKER = "netpoll_goroutine"
_prev_backend_key = pytest.StashKey[tuple[bool, Any]]()
_call_failed_key = pytest.StashKey[bool]()
_saved_env_key = pytest.StashKey[tuple[bool, str | None]]()
_marker_skip_key = pytest.StashKey[bool]()
_SWITCH_FIXTURE = "netpoll_switch"


def _runtime() -> Any:
    from netpoll.core.runtime import runtime

    return runtime


def use_kqueue_emulation() -> bool:
    """Run the kqueue backend on the emulated kqueue, here and in child processes.

    Registers :mod:`netpoll.testing.kqueue_emulation` (whose
    ``netpoll_os_api`` hook answers ``"kqueue"``) on the runtime's plugin
    manager and adds it to ``NETPOLL_PLUGINS``, which netpoll reads in every
    process.  Does nothing and returns False where the real kqueue exists.
    """
    if hasattr(select, "kqueue"):
        return False
    import importlib

    emulation = importlib.import_module(_EMULATION)
    rt = _runtime()
    if not rt.pm.is_registered(emulation):
        rt.pm.register(emulation, name=_EMULATION)
    plugins = [p for p in os.environ.get("NETPOLL_PLUGINS", "").split(",") if p.strip()]
    if _EMULATION not in plugins:
        os.environ["NETPOLL_PLUGINS"] = ",".join([*plugins, _EMULATION])
    rt.registry.forget_probes()
    return True


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--netpoll-backend`` and the ``netpoll_backend`` ini key."""
    group = parser.getgroup("netpoll", "netpoll network poller")
    group.addoption(
        "--netpoll-backend",
        dest="netpoll_backend",
        default=None,
        metavar="NAME",
        help="poller backend for the session (epoll, kqueue, poll, select; a comma "
        "list is tried in order); overrides NETPOLL_BACKEND",
    )
    parser.addini(
        "netpoll_backend",
        "default netpoll poller backend for the session (NETPOLL_BACKEND overrides it)",
        default="",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; apply the session backend before anything uses netpoll."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(name): run this test on the named netpoll poller backend "
        "(skipped where it is not available)",
    )
    config.addinivalue_line(
        "markers",
        f"{_G_MARKER}: run this test's body as a goroutine inside netpoll.run "
        "(fixtures are set up and torn down outside it, in the plain thread)",
    )
    if os.environ.get(ENV_KQUEUE_EMULATION, "") == "1":
        use_kqueue_emulation()
    name = config.getoption("netpoll_backend")
    if not name:
        ini = str(config.getini("netpoll_backend") or "").strip()
        if ini and not os.environ.get(_ENV, "").strip():
            name = ini
    if not name:
        return
    from netpoll.core.plugins import BackendError

    rt = _runtime()
    try:
        rt.registry.resolve(name)
    except BackendError as exc:
        raise pytest.UsageError(str(exc)) from None
    finally:
        # Probing may run before a conftest enables an emulated backend.
        rt.registry.forget_probes()
    # Through the environment, like NETPOLL_BACKEND itself, so that conftest
    # files and subprocesses see the same choice.
    config.stash[_saved_env_key] = (_ENV in os.environ, os.environ.get(_ENV))
    os.environ[_ENV] = name
    active = rt.active_backend()
    if active is not None and active != name.split(",")[0].strip():
        rt.use_backend(None)  # restart on the env choice at next use


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore ``NETPOLL_BACKEND`` as it was before the session."""
    saved = config.stash.get(_saved_env_key, None)
    if saved is None:
        return
    had, value = saved
    if had and value is not None:
        os.environ[_ENV] = value
    else:
        os.environ.pop(_ENV, None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Switch backends for a marked test before its fixtures are set up.

    A plain ``tryfirst`` implementation, not a wrapper: it runs before the
    runner sets up fixtures, and a skip raised here is an ordinary skip.
    """
    marker = item.get_closest_marker(_MARKER)
    if marker is None:
        return
    name = marker.args[0] if marker.args else marker.kwargs.get("name")
    if not isinstance(name, str) or not name:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{_MARKER} needs a backend name")
    from netpoll.core.plugins import BackendError

    rt = _runtime()
    prev = rt.choice
    try:
        rt.use_backend(name)
    except BackendError as exc:
        # The registry's message already names the backend, why it is not
        # usable and what is; the report is moved to the test's line below.
        reason = str(exc)
        if "not available here" not in reason:  # an unknown name
            detail = reason.removeprefix("netpoll: ")
            reason = f"netpoll: backend {name!r} is not available here ({detail})"
        item.stash[_marker_skip_key] = True
        pytest.skip(reason)
    item.stash[_prev_backend_key] = (True, prev)


def _function_scoped(item: pytest.Item, name: str) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs: Any = getattr(info, "name2fixturedefs", {}).get(name)
    # Not a fixture (a parametrize argument) or of unknown scope: leave it be.
    return bool(defs) and getattr(defs[-1], "scope", None) == "function"


def _switch_first(item: pytest.Item) -> None:
    """Set ``netpoll_switch`` up before the test's other function-scoped fixtures.

    pytest sets fixtures up in the order of ``item.fixturenames`` (wider
    scopes first) and tears them down in reverse.  Moving the Switch to the
    front of the function-scoped ones makes the leak check see the sockets
    of every fixture of the test, and run after they were torn down.
    """
    names = getattr(item, "fixturenames", None)
    if not isinstance(names, list) or _SWITCH_FIXTURE not in names:
        return
    names.remove(_SWITCH_FIXTURE)
    at = next((i for i, n in enumerate(names) if _function_scoped(item, n)), len(names))
    names.insert(at, _SWITCH_FIXTURE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order ``netpoll_switch`` first among each test's function-scoped fixtures."""
    for item in items:
        _switch_first(item)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """Restore the backend a marked test replaced, after its fixtures are gone."""
    try:
        return (yield)
    finally:
        saved = item.stash.get(_prev_backend_key, None)
        if saved is not None:
            del item.stash[_prev_backend_key]
            _runtime().use_backend(saved[1])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test body failed (a failed test's leaks are not reported).

    A skip by the ``netpoll_backend`` marker is reported at the test, not at
    this plugin's line (what pytest does for its own ``skipif`` marks).
    """
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_call_failed_key] = True
    if (
        report.when == "setup"
        and report.skipped
        and item.stash.get(_marker_skip_key, False)
        and isinstance(report.longrepr, tuple)
    ):
        path, line = item.reportinfo()[:2]
        report.longrepr = (str(path), (line or 0) + 1, report.longrepr[2])
    return report


def _wait_for_leaks(sw: Switch, grace: float, gs_before: set[Any]) -> str:
    """What the test left behind: sockets the Switch saw opened, goroutines still running."""
    from netpoll.core.procs import live_goroutines

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        gs = [g for g in live_goroutines() if g not in gs_before]
        if not sw.sockets() and not gs:
            break
        time.sleep(0.01)
    report = sw.leak_report()
    gs = [g for g in live_goroutines() if g not in gs_before]
    if gs:
        lines = "\n".join(f"  {g!r}" for g in gs)
        report += ("\n" if report else "") + f"goroutines still running:\n{lines}"
    return report


@pytest.fixture
def netpoll_switch(request: pytest.FixtureRequest) -> Iterator[Switch]:
    """A :class:`~netpoll.testing.switch.Switch` installed for this test, leak-checked after."""
    from netpoll.core.procs import live_goroutines

    gs_before = set(live_goroutines())
    sw = Switch()
    sw.install()
    try:
        yield sw
        report = ""
        if not request.node.stash.get(_call_failed_key, False):
            report = _wait_for_leaks(sw, LEAK_GRACE, gs_before)
    finally:
        sw.clear()
        sw.uninstall()
    if report:
        pytest.fail(
            f"netpoll: {request.node.nodeid} left sockets open or goroutines running\n{report}",
            pytrace=False,
        )


@pytest.fixture
def netpoll_faults(netpoll_switch: Switch) -> Iterator[Faults]:
    """A :class:`~netpoll.testing.faults.Faults` on the test's ``netpoll_switch``."""
    faults = Faults(netpoll_switch)
    try:
        yield faults
    finally:
        faults.uninstall()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object | None:
    """Run a ``netpoll_goroutine``-marked test body as a goroutine."""
    if pyfuncitem.get_closest_marker(_G_MARKER) is None:
        return None
    import netpoll

    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    netpoll.run(pyfuncitem.obj, **kwargs)
    return True
