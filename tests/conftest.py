"""Shared fixtures: the backend each test runs on, and leak checks.

With ``NETPOLL_BACKEND`` set (as the tox factors do) every test runs on that
backend only; without it, tests that take the ``backend`` fixture run once per
backend available here, the kqueue one on the emulated kqueue on Linux.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netpoll.core.procs import background_m, live_goroutines, thread_poll_m
from netpoll.core.runtime import runtime
from netpoll.testing.pytest_plugin import use_kqueue_emulation
from tests.helpers.net import open_fds


def _children_import_this_netpoll() -> None:
    """Make the tests' subprocesses import the netpoll this process imported.

    ``python -c``/``-m`` put the working directory first on ``sys.path``, and
    a script its own folder; run from a checkout, that is the source tree, so
    in a tox env with the compiled wheel installed every child ran the pure
    sources.  When this process's netpoll is an installed one, children get
    ``PYTHONSAFEPATH`` (Python 3.11+: nothing is prepended) and reach the
    ``tests`` package through a folder that holds only a link to it
    (``NETPOLL_TESTS_PATH``, which tests/libs/harness.py uses too).
    """
    import netpoll

    repo = Path(__file__).resolve().parent.parent
    installed = Path(netpoll.__file__).resolve().parent.parent != repo
    if not installed or sys.version_info < (3, 11):
        os.environ.setdefault("NETPOLL_TESTS_PATH", str(repo))
        return
    shim = Path(tempfile.mkdtemp(prefix="netpoll-tests-path-"))
    (shim / "tests").symlink_to(repo / "tests", target_is_directory=True)
    atexit.register(shutil.rmtree, shim, True)
    os.environ["PYTHONSAFEPATH"] = "1"
    os.environ["NETPOLL_TESTS_PATH"] = str(shim)
    path = [str(shim), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in path if p)


_children_import_this_netpoll()


def _backends_to_test() -> list[str]:
    env = os.environ.get("NETPOLL_BACKEND", "").strip()
    if env:
        return [env.split(",")[0].strip()]
    names = runtime.registry.available()
    return names


_STRESS_DIR = Path(__file__).resolve().parent / "stress"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave tests/stress/ to its own tox env (``tox -e stress``) unless named.

    The normal matrix (16 envs) must not run the stress suite again; a run
    that names the directory or a file in it (``pytest tests/stress``) does.
    """
    if collection_path.resolve() != _STRESS_DIR:
        return None
    for arg in config.args:
        target = Path(arg.split("::")[0]).resolve()
        if target == _STRESS_DIR or _STRESS_DIR in target.parents:
            return None
    return True


def pytest_configure(config: pytest.Config) -> None:
    """Without a chosen backend, test every one: kqueue on the emulation where needed."""
    if not os.environ.get("NETPOLL_BACKEND"):
        use_kqueue_emulation()


#: Suites whose test bodies run twice: in the plain test thread, and as a
#: goroutine (so every conn they drive from the body is a G's).
_BOTH_G_KINDS = {
    "test_conn_path",
    "test_net_conn",
    "test_net_dial",
    "test_net_timeout",
    "test_faults",
    "test_faults_go",
    "test_far_deadlines",
    "test_tls",
    "test_pipe",
    "test_socket_adapter",
    "test_socket_module",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``backend`` over the backends, and ``g_kind`` where both kinds run."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends_to_test(), indirect=True)
    if metafunc.module.__name__.rpartition(".")[2] in _BOTH_G_KINDS:
        metafunc.parametrize(
            "g_kind",
            ["thread", pytest.param("goroutine", marks=pytest.mark.netpoll_goroutine)],
            indirect=True,
        )


@pytest.fixture(autouse=True)
def g_kind(request: pytest.FixtureRequest) -> str:
    """Which kind of G runs the test body: "thread" or "goroutine"."""
    return str(getattr(request, "param", "thread"))


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Switch the runtime to the backend named by the parameter."""
    name: str = request.param
    runtime.use_backend(name)
    yield name


def _user_threads() -> set[threading.Thread]:
    # The netpoller thread lives for the whole process, like Go's netpoller.
    return {t for t in threading.enumerate() if not t.name.startswith("netpoll-")}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves fds, threads or pollDescs behind."""
    if "backend" in request.fixturenames:
        request.getfixturevalue("backend")  # switch first: not a leak
    # The M that go() uses from plain threads, and the one that polls for
    # threads without a wake fd, live for good: their fds are not a leak.
    background_m()
    thread_poll_m()
    fds_before = open_fds()
    threads_before = _user_threads()
    live_before = runtime.cache.live
    gs_before = set(live_goroutines())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        leaked_fds = open_fds() - fds_before
        leaked_threads = _user_threads() - threads_before
        leaked_pds = runtime.cache.live - live_before
        leaked_gs = [g for g in live_goroutines() if g not in gs_before]
        if not (leaked_fds or leaked_threads or leaked_pds or leaked_gs):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked_fds, f"leaked fds: {sorted(leaked_fds)}"
    assert not leaked_threads, f"leaked threads: {leaked_threads}"
    assert leaked_pds == 0, f"leaked pollDescs: {leaked_pds}"
    assert not leaked_gs, f"goroutines left running: {leaked_gs}"
