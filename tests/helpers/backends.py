"""Pollers under test, built the way the runtime builds them.

A fresh :class:`NetpollPluginManager` and :class:`BackendRegistry` (so the real
listing and probe path is exercised), ``create()``, ``netpollinit`` through
the syscall table.  Where there is no real kqueue, the kqueue backend runs on
:mod:`netpoll.testing.kqueue_emulation`, registered with that fresh manager
(the ``netpoll_os_api`` injection point).
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from dataclasses import dataclass
from types import ModuleType

import pytest

from netpoll.core.hookspecs import MODE_EXCEPT, MODE_R, MODE_W, BackendSpec, Poller
from netpoll.core.plugins import BackendRegistry, NetpollPluginManager

BACKENDS = ["epoll", "kqueue", "poll", "select"]
HAVE_REAL_KQUEUE = hasattr(select, "kqueue")
IS_LINUX = sys.platform.startswith("linux")

#: Generous bound for a loaded machine.
SLOW = 5.0


def emulation() -> ModuleType:
    """The kqueue emulation module (Linux only: it is built on epoll)."""
    from netpoll.testing import kqueue_emulation

    return kqueue_emulation


def make_registry(*, emulate_kqueue: bool) -> tuple[NetpollPluginManager, BackendRegistry]:
    """A fresh manager + registry, with the kqueue emulation where asked and needed."""
    pm = NetpollPluginManager()
    if emulate_kqueue and not HAVE_REAL_KQUEUE:
        pm.register(emulation(), name="kqueue-emulation")
    return pm, BackendRegistry(pm)


def spec_named(registry: BackendRegistry, name: str) -> BackendSpec:
    """The listed spec called ``name``."""
    by_name = {s.name: s for s in registry.specs()}
    return by_name[name]


@dataclass
class Backend:
    """A live poller under test."""

    name: str
    spec: BackendSpec
    pm: NetpollPluginManager
    poller: Poller

    @property
    def edge(self) -> bool:
        """True for epoll and kqueue."""
        return self.spec.edge_triggered

    def open(self, fd: int, token: object) -> None:
        """``netpollopen``."""
        self.poller.netpollopen(fd, token)

    def arm(self, fd: int, mode: int) -> None:
        """What the core does before parking: arm level-triggered backends."""
        if not self.edge:
            self.poller.netpollarm(fd, mode)

    def poll(self, timeout: float | None) -> dict[int, int]:
        """One netpoll call, as {id(token): modes}; asserts one entry per fd."""
        events = self.poller.netpoll(timeout)
        result: dict[int, int] = {}
        for token, modes in events:
            assert id(token) not in result, f"two entries for one fd: {events}"
            assert modes & (MODE_R | MODE_W) and not modes & ~(MODE_R | MODE_W | MODE_EXCEPT)
            if modes & MODE_EXCEPT:
                # Only with a read report, and only from a backend that says so.
                assert modes & MODE_R and self.spec.reports_except, (self.name, modes)
            result[id(token)] = modes
        return result

    def drain(self) -> None:
        """Consume pending events (the initial edges of edge-triggered ones)."""
        for _ in range(20):
            if not self.poll(0.02):
                return
        raise AssertionError("the poller keeps reporting events")

    def wait_for(self, token: object, mode: int, timeout: float = SLOW) -> int:
        """Poll until ``token`` is reported with ``mode``; returns its modes."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            seen |= self.poll(0.05).get(id(token), 0)
            if seen & mode:
                return seen
        raise AssertionError(f"{self.name}: token not reported with mode {mode} (saw {seen})")


def start_backend(name: str) -> Backend:
    """Build and init a poller for ``name`` through a fresh registry (skip if unavailable)."""
    pm, registry = make_registry(emulate_kqueue=(name == "kqueue"))
    spec = spec_named(registry, name)
    reason = registry.why_unavailable(spec)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    poller = spec.create()
    pm.table.netpollinit(poller)
    return Backend(name, spec, pm, poller)


class Pipe:
    """A non-blocking pipe whose ends can be closed early."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def close_r(self) -> None:
        """Close the read end (once)."""
        if self.r >= 0:
            os.close(self.r)
            self.r = -1

    def close_w(self) -> None:
        """Close the write end (once)."""
        if self.w >= 0:
            os.close(self.w)
            self.w = -1


def fill(sock: socket.socket) -> None:
    """Write until the send buffer of ``sock`` is full."""
    chunk = b"x" * 65536
    while True:
        try:
            sock.send(chunk)
        except BlockingIOError:
            return


def recv_all(sock: socket.socket) -> bytes:
    """Read whatever is queued on ``sock``."""
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data
