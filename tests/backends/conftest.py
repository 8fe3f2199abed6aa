"""Fixtures of the backend tests: live pollers, socket pairs and pipes, strict leak checks.

These tests build pollers outside the runtime, so they are held to a stricter
rule than the rest of the suite: no descriptor and no thread at all may be
left behind (wake descriptors and netpoll's own threads included).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.helpers.backends import BACKENDS, Backend, Pipe, start_backend

_PROC_FD = "/proc/self/fd"


@pytest.fixture(autouse=True)
def no_fd_leak() -> Iterator[None]:
    """Every test must close every descriptor it (or a poller) opened."""
    if not os.path.isdir(_PROC_FD):
        yield
        return
    before = len(os.listdir(_PROC_FD))
    yield
    after = len(os.listdir(_PROC_FD))
    assert after == before, f"fd leak: {before} fds before the test, {after} after"


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Helper threads must be joined."""
    before = threading.active_count()
    yield
    assert threading.active_count() == before


@pytest.fixture(params=BACKENDS)
def bk(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn, shut down afterwards."""
    b = start_backend(request.param)
    try:
        yield b
    finally:
        b.poller.shutdown()


@pytest.fixture(params=["poll", "select"])
def level_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The level-triggered backends only."""
    b = start_backend(request.param)
    try:
        yield b
    finally:
        b.poller.shutdown()


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking connected Unix socket pair."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    """A non-blocking pipe, closed afterwards."""
    p = Pipe()
    try:
        yield p
    finally:
        p.close_r()
        p.close_w()
