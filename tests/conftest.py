"""Shared fixtures: the backend each test runs on, and leak checks.

With ``NETPOLL_BACKEND`` set (as the tox factors do) every test runs on that
backend only; without it, tests that take the ``backend`` fixture run once per
backend available here, the kqueue one on the emulated kqueue on Linux.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netpoll.core.runtime import runtime
from netpoll.core.waiter import wake_fds

_PROC_FD = "/proc/self/fd"


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
    """Make the emulated kqueue available on systems without a real one."""
    if sys.platform.startswith("linux") and not os.environ.get("NETPOLL_BACKEND"):
        os.environ.setdefault("NETPOLL_KQUEUE_EMULATION", "1")
        runtime.registry.forget_probes()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the ``backend`` fixture over the backends under test."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends_to_test(), indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Switch the runtime to the backend named by the parameter."""
    name: str = request.param
    runtime.use_backend(name)
    yield name


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def open_fds() -> set[int]:
    """The fds open in this process (empty set where /proc is absent)."""
    try:
        listed = {int(x) for x in os.listdir(_PROC_FD)}
    except FileNotFoundError:
        return set()
    # The listing shows the directory fd listdir itself used, closed by now.
    # It takes the lowest free number, which moves when the wake-fd pool
    # grows or shrinks, and was then reported as a leak that never went away.
    listed = {fd for fd in listed if _is_open(fd)}
    # Idle wake eventfds are a cache, like the pollcache; not a leak.
    return listed - wake_fds.idle()


def _user_threads() -> set[threading.Thread]:
    # The netpoller thread lives for the whole process, like Go's netpoller.
    return {t for t in threading.enumerate() if not t.name.startswith("netpoll-")}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves fds, threads or pollDescs behind."""
    if "backend" in request.fixturenames:
        request.getfixturevalue("backend")  # switch first: not a leak
    runtime.poller()  # start the poller first: its own fds are not a leak
    fds_before = open_fds()
    threads_before = _user_threads()
    live_before = runtime.cache.live
    yield
    deadline = time.monotonic() + 3.0
    while True:
        leaked_fds = open_fds() - fds_before
        leaked_threads = _user_threads() - threads_before
        leaked_pds = runtime.cache.live - live_before
        if not (leaked_fds or leaked_threads or leaked_pds) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked_fds, f"leaked fds: {sorted(leaked_fds)}"
    assert not leaked_threads, f"leaked threads: {leaked_threads}"
    assert leaked_pds == 0, f"leaked pollDescs: {leaked_pds}"
