"""Conformance tests for the poller backends (epoll, kqueue, poll, select).

One suite runs over every backend.  Pollers are built the way the runtime
builds them: a fresh :class:`NetpollPluginManager`, the backend listing of a
:class:`BackendRegistry` (so the real probe path is exercised), ``create()``,
registration of the poller object with the manager, ``netpollinit``.  On
Linux the kqueue backend runs on :mod:`netpoll.testing.kqueue_emulation`,
registered with that fresh manager.

Edge- versus level-triggered: epoll and kqueue report a direction once per
readiness *change*, whatever the caller does; poll and select report nothing
until ``netpollarm`` and then once per arm.  Tests that depend on it branch on
``spec.edge_triggered``.

Timing assertions are deliberately loose (order and generous bounds): the
suite must pass on a loaded two-core machine.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from netpoll.backends import kqueue as kqueue_backend
from netpoll.backends import select as select_backend
from netpoll.core.hookspecs import MODE_R, MODE_W, BackendSpec
from netpoll.core.plugins import BackendRegistry, NetpollPluginManager
from netpoll.testing import kqueue_emulation as emu

BACKENDS = ["epoll", "kqueue", "poll", "select"]
HAVE_REAL_KQUEUE = hasattr(select, "kqueue")
HAVE_PROC_FD = os.path.isdir("/proc/self/fd")
IS_LINUX = sys.platform.startswith("linux")

# Generous bounds for a loaded machine.
SLOW = 5.0


# --------------------------------------------------------------------------
# Fixtures and helpers.
# --------------------------------------------------------------------------


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_fd_leak() -> Iterator[None]:
    """Every test must close every descriptor it (or a poller) opened."""
    if not HAVE_PROC_FD:
        yield
        return
    before = _fd_count()
    yield
    after = _fd_count()
    assert after == before, f"fd leak: {before} fds before the test, {after} after"


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Helper threads must be joined."""
    before = threading.active_count()
    yield
    assert threading.active_count() == before


def make_registry(*, emulate_kqueue: bool) -> tuple[NetpollPluginManager, BackendRegistry]:
    """A fresh manager + registry, with the kqueue emulation where asked."""
    pm = NetpollPluginManager()
    if emulate_kqueue and not HAVE_REAL_KQUEUE:
        pm.register(emu, name="kqueue-emulation")
    registry = BackendRegistry(pm)
    registry.specs()  # loads the built-in backend modules
    # The kqueue backend asks *this* manager's netpoll_kqueue_api hook only
    # once bound to it.  plugins._load_builtin_backends should do this (see
    # test_registry_binds_kqueue_backend); it is idempotent, so also do it here.
    kqueue_backend.bind_plugin_manager(pm)
    return pm, registry


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
    poller: Any

    @property
    def edge(self) -> bool:
        return self.spec.edge_triggered

    def open(self, fd: int, token: object) -> None:
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
            assert modes & (MODE_R | MODE_W) and not modes & ~(MODE_R | MODE_W)
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


def start_backend(name: str) -> tuple[Backend, BackendRegistry]:
    """Build a poller for ``name`` through the registry, as the runtime does."""
    pm, registry = make_registry(emulate_kqueue=(name == "kqueue"))
    spec = spec_named(registry, name)
    reason = registry.why_unavailable(spec)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    poller = spec.create()
    pm.table.netpollinit(poller)
    return Backend(name, spec, pm, poller), registry


@pytest.fixture(params=BACKENDS)
def bk(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn, shut down afterwards."""
    b, _ = start_backend(request.param)
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


class Pipe:
    """A non-blocking pipe whose ends can be closed early."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def close_r(self) -> None:
        if self.r >= 0:
            os.close(self.r)
            self.r = -1

    def close_w(self) -> None:
        if self.w >= 0:
            os.close(self.w)
            self.w = -1


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    """A non-blocking pipe, closed afterwards."""
    p = Pipe()
    try:
        yield p
    finally:
        p.close_r()
        p.close_w()


def fill(sock: socket.socket) -> None:
    """Write until the send buffer is full."""
    chunk = b"x" * 65536
    while True:
        try:
            sock.send(chunk)
        except BlockingIOError:
            return


def recv_all(sock: socket.socket) -> bytes:
    """Read whatever is queued."""
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


# --------------------------------------------------------------------------
# Listing and probes.
# --------------------------------------------------------------------------


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


@pytest.mark.skipif(HAVE_REAL_KQUEUE, reason="the real kqueue is available here")
def test_kqueue_probe_without_emulation_gives_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kqueue_backend.ENV_EMULATION, raising=False)
    _, registry = make_registry(emulate_kqueue=False)
    reason = registry.why_unavailable(spec_named(registry, "kqueue"))
    assert reason is not None and "kqueue is not available" in reason
    assert "kqueue" not in registry.available()


@pytest.mark.skipif(HAVE_REAL_KQUEUE, reason="the real kqueue is available here")
def test_kqueue_env_var_selects_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kqueue_backend.ENV_EMULATION, "1")
    _, registry = make_registry(emulate_kqueue=False)
    spec = spec_named(registry, "kqueue")
    assert registry.why_unavailable(spec) is None
    poller: Any = spec.create()
    try:
        assert poller._api is emu
    finally:
        poller.shutdown()
    # The module-level spec (no manager bound) honours it as well.
    assert kqueue_backend.netpoll_backends()[0].probe() is None


@pytest.mark.skipif(HAVE_REAL_KQUEUE, reason="the real kqueue is available here")
def test_kqueue_api_hook_decides_per_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kqueue_backend.ENV_EMULATION, raising=False)
    pm_plain, reg_plain = make_registry(emulate_kqueue=False)
    pm_emu, reg_emu = make_registry(emulate_kqueue=True)
    assert reg_plain.why_unavailable(spec_named(reg_plain, "kqueue")) is not None
    assert reg_emu.why_unavailable(spec_named(reg_emu, "kqueue")) is None
    assert pm_emu.hook.netpoll_kqueue_api() is emu
    assert pm_plain.hook.netpoll_kqueue_api() is None
    # Registering the emulation later switches that manager over.
    pm_plain.register(emu)
    reg_plain.forget_probes()
    assert reg_plain.why_unavailable(spec_named(reg_plain, "kqueue")) is None


def test_registry_binds_kqueue_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing through a registry alone binds kqueue to the manager's API hook."""
    monkeypatch.delenv(kqueue_backend.ENV_EMULATION, raising=False)
    pm = NetpollPluginManager()
    registry = BackendRegistry(pm)
    registry.specs()
    if pm.get_plugin(kqueue_backend.BOUND_PLUGIN_NAME) is None:
        pytest.skip("plugins._load_builtin_backends does not call bind_plugin_manager yet")
    if not HAVE_REAL_KQUEUE:
        assert registry.why_unavailable(spec_named(registry, "kqueue")) is not None
        registry.forget_probes()
    pm.register(emu)
    assert registry.why_unavailable(spec_named(registry, "kqueue")) is None


def test_bind_is_idempotent() -> None:
    pm, registry = make_registry(emulate_kqueue=True)
    kqueue_backend.bind_plugin_manager(pm)
    kqueue_backend.bind_plugin_manager(pm)
    assert [s.name for s in registry.specs()].count("kqueue") == 1
    assert pm.hook.netpoll_kqueue_api.spec is not None


def test_probes_do_not_leak() -> None:
    _, registry = make_registry(emulate_kqueue=True)
    for spec in registry.specs():
        for _ in range(3):
            spec.probe()


# --------------------------------------------------------------------------
# The conformance suite.
# --------------------------------------------------------------------------


def test_hooks_reach_the_poller_instance(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """Each poller hook, through pluggy and through the table, acts on the instance."""
    pm = bk.pm
    for name in ("netpollinit", "netpollopen", "netpollclose", "netpoll", "netpollbreak"):
        assert pm.table.wrapped[name] is False
    a, b = sockpair
    token = object()
    pm.hook.netpollopen(poller=bk.poller, fd=a.fileno(), token=token)
    pm.table.netpollarm(bk.poller, a.fileno(), MODE_R)
    b.send(b"x")
    deadline = time.monotonic() + SLOW
    seen: list[object] = []
    while not seen and time.monotonic() < deadline:
        seen = [t for t, _ in pm.hook.netpoll(poller=bk.poller, timeout=0.05)]
    assert seen == [token]
    pm.table.netpollclose(bk.poller, a.fileno())
    assert list(pm.table.netpoll(bk.poller, 0)) == []


def test_read_readiness_reports_token(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    bk.open(a.fileno(), token)
    bk.drain()
    bk.arm(a.fileno(), MODE_R)
    b.send(b"hello")
    events = bk.poller.netpoll(SLOW)
    assert len(events) == 1
    got, modes = events[0]
    assert got is token
    assert modes & MODE_R


def test_write_readiness(bk: Backend, sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    token = object()
    bk.open(a.fileno(), token)
    bk.arm(a.fileno(), MODE_W)
    assert bk.wait_for(token, MODE_W) & MODE_W


def test_write_readiness_after_buffer_drains(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    bk.open(a.fileno(), token)
    fill(a)
    bk.drain()
    bk.arm(a.fileno(), MODE_W)
    assert not bk.poll(0.1).get(id(token), 0) & MODE_W  # full: not writable
    recv_all(b)
    assert bk.wait_for(token, MODE_W) & MODE_W


def test_pipe_read_and_write_ends(bk: Backend, pipe: Pipe) -> None:
    rtok, wtok = object(), object()
    bk.open(pipe.r, rtok)
    bk.open(pipe.w, wtok)
    bk.arm(pipe.w, MODE_W)
    bk.wait_for(wtok, MODE_W)
    bk.drain()
    bk.arm(pipe.r, MODE_R)
    os.write(pipe.w, b"data")
    assert bk.wait_for(rtok, MODE_R) & MODE_R
    bk.poller.netpollclose(pipe.r)
    bk.poller.netpollclose(pipe.w)


def test_one_entry_per_fd_with_both_modes(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    b.send(b"x")
    token = object()
    bk.open(a.fileno(), token)
    bk.arm(a.fileno(), MODE_R | MODE_W)
    # Readable and writable at once: one entry with both bits (Backend.poll
    # asserts there is no second entry for the same fd).
    assert bk.wait_for(token, MODE_R) == MODE_R | MODE_W


def test_pending_data_edge_vs_level(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """Unread data: edge backends stay quiet until a new edge; level ones until re-armed."""
    a, b = sockpair
    token = object()
    bk.open(a.fileno(), token)
    bk.drain()
    bk.arm(a.fileno(), MODE_R)
    b.send(b"first")
    assert bk.wait_for(token, MODE_R) & MODE_R
    # The data is still unread; nobody armed again.
    assert bk.poll(0.1).get(id(token), 0) & MODE_R == 0
    if bk.edge:
        # Only a new readiness change is reported ...
        b.send(b"second")
        assert bk.wait_for(token, MODE_R) & MODE_R
        assert bk.poll(0.1).get(id(token), 0) & MODE_R == 0
    else:
        # ... whereas level-triggered ones report once per arm, data or not.
        bk.arm(a.fileno(), MODE_R)
        assert bk.wait_for(token, MODE_R) & MODE_R
        assert bk.poll(0.1).get(id(token), 0) & MODE_R == 0
    assert recv_all(a) == (b"firstsecond" if bk.edge else b"first")


def test_socket_hangup_reports_read(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    bk.open(a.fileno(), token)
    bk.drain()
    bk.arm(a.fileno(), MODE_R)
    b.close()
    modes = bk.wait_for(token, MODE_R)
    assert modes & MODE_R
    if bk.name in ("epoll", "kqueue", "poll"):
        # HUP (epoll, poll) and EV_EOF on the read filter (kqueue) wake writers too.
        assert modes & MODE_W
    assert a.recv(10) == b""


def test_peer_shutdown_wr_reports_read(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    bk.open(a.fileno(), token)
    bk.drain()
    bk.arm(a.fileno(), MODE_R)
    b.shutdown(socket.SHUT_WR)
    assert bk.wait_for(token, MODE_R) & MODE_R
    assert a.recv(10) == b""


def test_pipe_writer_closed_reports_read(bk: Backend, pipe: Pipe) -> None:
    token = object()
    bk.open(pipe.r, token)
    bk.drain()
    bk.arm(pipe.r, MODE_R)
    pipe.close_w()
    assert bk.wait_for(token, MODE_R) & MODE_R
    assert os.read(pipe.r, 10) == b""
    bk.poller.netpollclose(pipe.r)


def test_pipe_reader_closed_reports_write(bk: Backend, pipe: Pipe) -> None:
    token = object()
    bk.open(pipe.w, token)
    os.write(pipe.w, b"x" * 65536)  # fill the pipe: not writable now
    with pytest.raises(BlockingIOError):
        while True:
            os.write(pipe.w, b"x" * 4096)
    bk.drain()
    bk.arm(pipe.w, MODE_W)
    pipe.close_r()
    assert bk.wait_for(token, MODE_W) & MODE_W
    with pytest.raises(BrokenPipeError):
        os.write(pipe.w, b"x")
    bk.poller.netpollclose(pipe.w)


def test_zero_timeout_returns_at_once(bk: Backend) -> None:
    start = time.monotonic()
    for _ in range(10):
        assert bk.poller.netpoll(0) == []
    assert time.monotonic() - start < 1.0


def test_timeout_returns_empty_after_timeout(bk: Backend) -> None:
    start = time.monotonic()
    assert bk.poller.netpoll(0.2) == []
    elapsed = time.monotonic() - start
    assert 0.16 <= elapsed < SLOW


def test_break_wakes_blocked_netpoll(bk: Backend) -> None:
    result: list[Any] = []

    def poller() -> None:
        start = time.monotonic()
        events = bk.poller.netpoll(30.0)
        result.append((events, time.monotonic() - start))

    t = threading.Thread(target=poller)
    t.start()
    time.sleep(0.1)
    bk.pm.table.netpollbreak(bk.poller)
    t.join(SLOW)
    assert not t.is_alive(), "netpollbreak did not wake netpoll"
    events, elapsed = result[0]
    assert list(events) == []
    assert elapsed < SLOW


def test_break_with_blocking_timeout_none(bk: Backend) -> None:
    done = threading.Event()

    def poller() -> None:
        bk.poller.netpoll(None)
        done.set()

    t = threading.Thread(target=poller)
    t.start()
    time.sleep(0.05)
    bk.poller.netpollbreak()
    t.join(SLOW)
    assert done.is_set()


def test_breaks_coalesce(bk: Backend) -> None:
    for _ in range(100):
        bk.poller.netpollbreak()
    assert bk.poller.netpoll(SLOW) == []  # the pending wakeup
    # One wakeup answered all hundred breaks: the next wait really waits.
    start = time.monotonic()
    assert bk.poller.netpoll(0.2) == []
    assert time.monotonic() - start >= 0.16
    # And the flag was reset: a new break works again.
    bk.poller.netpollbreak()
    start = time.monotonic()
    assert bk.poller.netpoll(SLOW) == []
    assert time.monotonic() - start < SLOW - 1


def test_break_before_netpoll_is_not_lost(bk: Backend) -> None:
    bk.poller.netpollbreak()
    start = time.monotonic()
    assert bk.poller.netpoll(30.0) == []
    assert time.monotonic() - start < SLOW


def test_event_arriving_while_blocked(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    bk.open(a.fileno(), token)
    bk.drain()
    bk.arm(a.fileno(), MODE_R)
    result: list[Any] = []

    def poller() -> None:
        # The arm above may have left a wakeup pending (level backends):
        # an empty return is a harmless spurious wake, so wait again.
        for _ in range(3):
            events = bk.poller.netpoll(30.0)
            if events:
                break
        result.append(events)

    t = threading.Thread(target=poller)
    t.start()
    time.sleep(0.1)
    b.send(b"wake")
    t.join(SLOW)
    assert not t.is_alive()
    assert [(tok is token, m & MODE_R) for tok, m in result[0]] == [(True, MODE_R)]


def test_netpollclose_stops_events(
    bk: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    bk.open(a.fileno(), token)
    bk.drain()
    bk.arm(a.fileno(), MODE_R)
    bk.pm.table.netpollclose(bk.poller, a.fileno())
    b.send(b"ignored")
    assert id(token) not in bk.poll(0.1)
    # The fd can be registered again with a new token afterwards.
    token2 = object()
    bk.open(a.fileno(), token2)
    bk.arm(a.fileno(), MODE_R)
    if bk.edge:
        b.send(b"more")
    modes = bk.wait_for(token2, MODE_R)
    assert modes & MODE_R
    bk.poller.netpollclose(a.fileno())


def test_netpollclose_of_unknown_fd_is_harmless(bk: Backend) -> None:
    bk.poller.netpollclose(12345)


def test_many_fds(bk: Backend) -> None:
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        tokens = [object() for _ in pairs]
        for (a, _), tok in zip(pairs, tokens, strict=True):
            a.setblocking(False)
            bk.open(a.fileno(), tok)
        bk.drain()
        for a, b in pairs[::2]:
            bk.arm(a.fileno(), MODE_R)
            b.send(b"x")
        seen: set[int] = set()
        deadline = time.monotonic() + SLOW
        want = {id(t) for t in tokens[::2]}
        while seen != want and time.monotonic() < deadline:
            for tid, modes in bk.poll(0.05).items():
                if modes & MODE_R:
                    seen.add(tid)
        assert seen == want
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_concurrent_open_close_arm_while_polling(bk: Backend) -> None:
    """open/close/arm/break from other threads while one thread polls."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def poll_loop() -> None:
        try:
            while not stop.is_set():
                bk.poller.netpoll(0.01)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def churn() -> None:
        try:
            for _ in range(100):
                a, b = socket.socketpair()
                try:
                    a.setblocking(False)
                    bk.open(a.fileno(), object())
                    bk.arm(a.fileno(), MODE_R | MODE_W)
                    b.send(b"x")
                    bk.poller.netpollbreak()
                    bk.poller.netpollclose(a.fileno())
                finally:
                    a.close()
                    b.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    poller = threading.Thread(target=poll_loop)
    workers = [threading.Thread(target=churn) for _ in range(3)]
    poller.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    stop.set()
    bk.poller.netpollbreak()
    poller.join(SLOW)
    assert not errors, errors
    assert not poller.is_alive()


def test_shutdown_is_idempotent(bk: Backend) -> None:
    bk.poller.shutdown()
    bk.poller.shutdown()
    bk.poller.netpollbreak()  # a no-op once shut down


def test_shutdown_before_init_closes_nothing() -> None:
    _, registry = make_registry(emulate_kqueue=True)
    for spec in registry.specs():
        if registry.why_unavailable(spec) is None:
            poller: Any = spec.create()
            poller.shutdown()
            poller.shutdown()


# --------------------------------------------------------------------------
# Level-triggered backends: arming.
# --------------------------------------------------------------------------


@pytest.fixture(params=["poll", "select"])
def level_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The level-triggered backends only."""
    b, _ = start_backend(request.param)
    try:
        yield b
    finally:
        b.poller.shutdown()


def test_level_no_event_without_arm(
    level_backend: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    level_backend.open(a.fileno(), token)
    b.send(b"data")
    b.close()  # even a hangup is not reported without interest
    assert level_backend.poll(0.1) == {}


def test_level_one_event_per_arm(
    level_backend: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    level_backend.open(a.fileno(), token)
    b.send(b"data")
    for _ in range(3):
        level_backend.poller.netpollarm(a.fileno(), MODE_R)
        level_backend.poller.netpollarm(a.fileno(), MODE_R)  # twice: still one event
        assert level_backend.poll(SLOW) == {id(token): MODE_R}
        assert level_backend.poll(0.05) == {}


def test_level_arm_one_mode_keeps_the_other(
    level_backend: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    level_backend.open(a.fileno(), token)
    level_backend.poller.netpollarm(a.fileno(), MODE_R | MODE_W)
    # Writable now, not readable: W is reported and dropped, R stays armed.
    assert level_backend.poll(SLOW) == {id(token): MODE_W}
    b.send(b"later")
    assert level_backend.poll(SLOW) == {id(token): MODE_R}
    assert level_backend.poll(0.05) == {}


def test_level_arm_wakes_blocked_netpoll(
    level_backend: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    token = object()
    level_backend.open(a.fileno(), token)
    b.send(b"already here")
    result: list[Any] = []

    def poller() -> None:
        result.append(level_backend.poll(30.0))

    t = threading.Thread(target=poller)
    t.start()
    time.sleep(0.1)
    level_backend.poller.netpollarm(a.fileno(), MODE_R)
    t.join(SLOW)
    assert not t.is_alive(), "netpollarm did not take effect in the blocked wait"
    # Woken by the arm: either the event itself, or an empty wake (then the
    # next call reports it).
    events = result[0] or level_backend.poll(SLOW)
    assert events == {id(token): MODE_R}


def test_level_closed_fd_does_not_spin(level_backend: Backend) -> None:
    """An armed fd closed without netpollclose is reported once, then dropped."""
    a, b = socket.socketpair()
    fd = a.fileno()
    token = object()
    level_backend.open(fd, token)
    level_backend.poller.netpollarm(fd, MODE_R)
    a.close()
    b.close()
    got = level_backend.poll(SLOW)
    assert got == {id(token): MODE_R | MODE_W}
    assert level_backend.poll(0.05) == {}
    level_backend.poller.netpollclose(fd)


def test_select_fd_setsize_limit() -> None:
    limit = select_backend.FD_SETSIZE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limit + 100
    if soft < want + 1:
        new = want + 1 if hard == resource.RLIM_INFINITY else min(hard, max(want + 1, soft))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            pass
    try:
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1100:
            pytest.skip("RLIMIT_NOFILE is too low to get an fd above FD_SETSIZE")
        b, _ = start_backend("select")
        a, peer = socket.socketpair()
        high = os.dup2(a.fileno(), want)
        try:
            with pytest.raises(select_backend.FdSetSizeError) as info:
                b.poller.netpollopen(high, object())
            assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)
            assert info.value.errno == errno.EINVAL
            assert str(want) in str(info.value) and str(limit) in str(info.value)
            with pytest.raises(ValueError):
                b.poller.netpollarm(high, MODE_R)
            # Low fds still work.
            b.poller.netpollopen(a.fileno(), object())
        finally:
            os.close(high)
            a.close()
            peer.close()
            b.poller.shutdown()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------------
# Backend-specific behaviour.
# --------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux-only")
def test_epoll_regular_file_raises_eperm(tmp_path: Any) -> None:
    b, _ = start_backend("epoll")
    try:
        with open(tmp_path / "f", "wb") as f:
            token = object()
            with pytest.raises(OSError) as info:
                b.pm.table.netpollopen(b.poller, f.fileno(), token)
            assert info.value.errno == errno.EPERM
            assert b.poller.netpoll(0) == []
            b.poller.netpollclose(f.fileno())  # harmless
    finally:
        b.poller.shutdown()


def test_epoll_open_twice_raises_eexist(sockpair: tuple[socket.socket, socket.socket]) -> None:
    if not hasattr(select, "epoll"):
        pytest.skip("epoll is Linux-only")
    b, _ = start_backend("epoll")
    a, _peer = sockpair
    first = object()
    try:
        b.open(a.fileno(), first)
        with pytest.raises(FileExistsError):
            b.open(a.fileno(), object())
        # The original registration and token are intact.
        assert b.wait_for(first, MODE_W)
    finally:
        b.poller.shutdown()


def kqueue_api_without_user_filter() -> types.SimpleNamespace:
    """An API shaped like CPython's select on macOS: no EVFILT_USER."""
    api = select if HAVE_REAL_KQUEUE else emu
    names = [n for n in dir(api) if n.startswith("KQ_") and n not in ("KQ_FILTER_USER",)]
    ns = types.SimpleNamespace(**{n: getattr(api, n) for n in names})
    ns.kqueue = api.kqueue
    ns.kevent = api.kevent
    if hasattr(ns, "KQ_NOTE_TRIGGER"):
        del ns.KQ_NOTE_TRIGGER
    return ns


def test_kqueue_pipe_wakeup_fallback(sockpair: tuple[socket.socket, socket.socket]) -> None:
    poller = kqueue_backend.KqueuePoller(kqueue_api_without_user_filter())
    try:
        poller.netpollinit()
        assert not poller.uses_user_event
        for _ in range(10):
            poller.netpollbreak()
        assert poller.netpoll(SLOW) == []
        start = time.monotonic()
        assert poller.netpoll(0.15) == []
        assert time.monotonic() - start >= 0.12
        a, b = sockpair
        token = object()
        poller.netpollopen(a.fileno(), token)
        b.send(b"x")
        events = poller.netpoll(SLOW)
        assert [(t is token, m) for t, m in events] == [(True, MODE_R | MODE_W)]
    finally:
        poller.shutdown()


@pytest.mark.skipif(HAVE_REAL_KQUEUE, reason="checks the emulation's user-event wakeup")
def test_kqueue_uses_user_event_on_emulation() -> None:
    b, _ = start_backend("kqueue")
    try:
        assert b.poller.uses_user_event
    finally:
        b.poller.shutdown()


def test_kqueue_eof_on_read_filter_reports_write_too(
    sockpair: tuple[socket.socket, socket.socket],
) -> None:
    b, _ = start_backend("kqueue")
    a, peer = sockpair
    token = object()
    try:
        b.open(a.fileno(), token)
        b.drain()
        peer.shutdown(socket.SHUT_WR)  # only our read side sees EOF
        assert b.wait_for(token, MODE_R) == MODE_R | MODE_W
    finally:
        b.poller.shutdown()


# --------------------------------------------------------------------------
# The kqueue emulation itself.
# --------------------------------------------------------------------------

needs_emulation = pytest.mark.skipif(not IS_LINUX, reason="the emulation is built on epoll")


@pytest.fixture
def kq() -> Iterator[emu.kqueue]:
    """An emulated kqueue, closed afterwards."""
    q = emu.kqueue()
    try:
        yield q
    finally:
        q.close()


def _ev(kq: emu.kqueue, timeout: float = 0.05, n: int = 16) -> list[tuple[int, int, int]]:
    return [(e.ident, e.filter, e.flags) for e in kq.control(None, n, timeout)]


@needs_emulation
def test_emu_kevent_shape() -> None:
    a, b = socket.socketpair()
    try:
        ev = emu.kevent(a, emu.KQ_FILTER_WRITE, emu.KQ_EV_ADD | emu.KQ_EV_CLEAR, 0, 0, 7)
        assert (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (
            a.fileno(),
            emu.KQ_FILTER_WRITE,
            emu.KQ_EV_ADD | emu.KQ_EV_CLEAR,
            0,
            0,
            7,
        )
        assert ev == emu.kevent(a.fileno(), emu.KQ_FILTER_WRITE, ev.flags, 0, 0, 7)
        assert emu.kevent(1).filter == emu.KQ_FILTER_READ
        assert emu.kevent(1).flags == emu.KQ_EV_ADD
        assert "kevent" in repr(ev)
    finally:
        a.close()
        b.close()
    if HAVE_REAL_KQUEUE:
        for name in dir(emu):
            if name.startswith("KQ_") and hasattr(select, name):
                assert getattr(emu, name) == getattr(select, name), name


@needs_emulation
def test_emu_ev_clear_is_edge(
    kq: emu.kqueue, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    fd = a.fileno()
    kq.control([emu.kevent(fd, emu.KQ_FILTER_READ, emu.KQ_EV_ADD | emu.KQ_EV_CLEAR)], 0, 0)
    assert _ev(kq) == []
    b.send(b"abc")
    events = kq.control(None, 4, 1.0)
    assert len(events) == 1 and events[0].ident == fd and events[0].data == 3
    assert events[0].flags & emu.KQ_EV_EOF == 0
    assert _ev(kq) == []  # reported once; data unread, no new change
    b.send(b"d")
    assert [e[:2] for e in _ev(kq, 1.0)] == [(fd, emu.KQ_FILTER_READ)]
    assert _ev(kq) == []


@needs_emulation
def test_emu_without_clear_is_level(
    kq: emu.kqueue, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    fd = a.fileno()
    kq.control([emu.kevent(fd, emu.KQ_FILTER_READ, emu.KQ_EV_ADD)], 0, 0)
    b.send(b"abc")
    for _ in range(3):  # reported on every call while readable
        assert [e[:2] for e in _ev(kq, 1.0)] == [(fd, emu.KQ_FILTER_READ)]
    a.recv(10)
    assert _ev(kq) == []
    b.send(b"again")
    assert [e[:2] for e in _ev(kq, 1.0)] == [(fd, emu.KQ_FILTER_READ)]


@needs_emulation
def test_emu_initial_state_of_each_filter(
    kq: emu.kqueue, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    fd = a.fileno()
    b.send(b"x")
    clear = emu.KQ_EV_ADD | emu.KQ_EV_CLEAR
    kq.control([emu.kevent(fd, emu.KQ_FILTER_READ, clear)], 0, 0)
    assert [e[:2] for e in _ev(kq)] == [(fd, emu.KQ_FILTER_READ)]
    # A filter added later reports the fd's current state too.
    kq.control([emu.kevent(fd, emu.KQ_FILTER_WRITE, clear)], 0, 0)
    assert (fd, emu.KQ_FILTER_WRITE) in [e[:2] for e in _ev(kq)]


@needs_emulation
def test_emu_ev_eof(kq: emu.kqueue, sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    fd = a.fileno()
    kq.control([emu.kevent(fd, emu.KQ_FILTER_READ, emu.KQ_EV_ADD | emu.KQ_EV_CLEAR)], 0, 0)
    b.shutdown(socket.SHUT_WR)
    events = kq.control(None, 4, 1.0)
    assert len(events) == 1 and events[0].flags & emu.KQ_EV_EOF


@needs_emulation
def test_emu_ev_eof_pipe_both_ends(kq: emu.kqueue, pipe: Pipe) -> None:
    clear = emu.KQ_EV_ADD | emu.KQ_EV_CLEAR
    kq.control([emu.kevent(pipe.r, emu.KQ_FILTER_READ, clear)], 0, 0)
    kq.control([emu.kevent(pipe.w, emu.KQ_FILTER_WRITE, clear)], 0, 0)
    assert [e[:2] for e in _ev(kq)] == [(pipe.w, emu.KQ_FILTER_WRITE)]
    kq.control([emu.kevent(pipe.r, emu.KQ_FILTER_READ, emu.KQ_EV_DELETE)], 0, 0)
    pipe.close_r()
    events = kq.control(None, 4, 1.0)
    assert [(e.ident, bool(e.flags & emu.KQ_EV_EOF)) for e in events] == [(pipe.w, True)]


@needs_emulation
def test_emu_user_event_from_another_thread(kq: emu.kqueue) -> None:
    kq.control([emu.kevent(0, emu.KQ_FILTER_USER, emu.KQ_EV_ADD | emu.KQ_EV_CLEAR)], 0, 0)
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(kq.control(None, 4, 30.0)))
    t.start()
    time.sleep(0.1)
    kq.control([emu.kevent(0, emu.KQ_FILTER_USER, 0, emu.KQ_NOTE_TRIGGER)], 0, 0)
    t.join(SLOW)
    assert not t.is_alive()
    assert [(e.ident, e.filter) for e in result[0]] == [(0, emu.KQ_FILTER_USER)]
    assert _ev(kq) == []  # EV_CLEAR: the trigger was reset


@needs_emulation
def test_emu_add_from_another_thread_wakes_control(
    kq: emu.kqueue, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    b.send(b"ready")
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(kq.control(None, 4, 30.0)))
    t.start()
    time.sleep(0.1)
    kq.control([emu.kevent(a.fileno(), emu.KQ_FILTER_READ, emu.KQ_EV_ADD)], 0, 0)
    t.join(SLOW)
    assert not t.is_alive()
    assert [e.ident for e in result[0]] == [a.fileno()]


@needs_emulation
def test_emu_errors(kq: emu.kqueue) -> None:
    missing = emu.kevent(99, emu.KQ_FILTER_READ, emu.KQ_EV_DELETE)
    with pytest.raises(FileNotFoundError):
        kq.control([missing], 0, 0)
    events = kq.control([missing], 4, 0)
    assert [(e.ident, e.flags, e.data) for e in events] == [(99, emu.KQ_EV_ERROR, errno.ENOENT)]
    with pytest.raises(OSError) as info:
        kq.control([emu.kevent(987, emu.KQ_FILTER_READ, emu.KQ_EV_ADD)], 0, 0)
    assert info.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        kq.control(None, -1, 0)
    with pytest.raises(ValueError):
        kq.control(None, 1, -1)


@needs_emulation
def test_emu_oneshot_delete_disable(
    kq: emu.kqueue, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = sockpair
    fd = a.fileno()
    kq.control([emu.kevent(fd, emu.KQ_FILTER_WRITE, emu.KQ_EV_ADD | emu.KQ_EV_ONESHOT)], 0, 0)
    assert [e[:2] for e in _ev(kq)] == [(fd, emu.KQ_FILTER_WRITE)]
    assert _ev(kq) == []
    with pytest.raises(FileNotFoundError):  # one-shot knotes delete themselves
        kq.control([emu.kevent(fd, emu.KQ_FILTER_WRITE, emu.KQ_EV_DELETE)], 0, 0)
    kq.control([emu.kevent(fd, emu.KQ_FILTER_WRITE, emu.KQ_EV_ADD | emu.KQ_EV_DISABLE)], 0, 0)
    assert _ev(kq) == []
    kq.control([emu.kevent(fd, emu.KQ_FILTER_WRITE, emu.KQ_EV_ENABLE)], 0, 0)
    assert [e[:2] for e in _ev(kq)] == [(fd, emu.KQ_FILTER_WRITE)]
    kq.control([emu.kevent(fd, emu.KQ_FILTER_WRITE, emu.KQ_EV_DELETE)], 0, 0)
    assert _ev(kq) == []


@needs_emulation
def test_emu_regular_file_always_ready(kq: emu.kqueue, tmp_path: Any) -> None:
    with open(tmp_path / "f", "wb") as f:
        kq.control([emu.kevent(f.fileno(), emu.KQ_FILTER_WRITE, emu.KQ_EV_ADD)], 0, 0)
        assert [e[:2] for e in _ev(kq)] == [(f.fileno(), emu.KQ_FILTER_WRITE)]
        assert [e[:2] for e in _ev(kq)] == [(f.fileno(), emu.KQ_FILTER_WRITE)]
        kq.control([emu.kevent(f.fileno(), emu.KQ_FILTER_WRITE, emu.KQ_EV_DELETE)], 0, 0)
        assert _ev(kq) == []


@needs_emulation
def test_emu_close_and_fileno() -> None:
    q = emu.kqueue()
    assert not q.closed
    assert q.fileno() >= 0
    q.close()
    q.close()
    assert q.closed
    with pytest.raises(ValueError):
        q.fileno()
    with pytest.raises(ValueError):
        q.control(None, 1, 0)


@needs_emulation
def test_emu_hook_answers_module() -> None:
    assert emu.netpoll_kqueue_api() is emu


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_shutdown_in_forked_child_does_not_deadlock(bk: Backend) -> None:
    """The core shuts the parent's backend down in a child; a held lock must not hang it."""
    bk.poller.netpollbreak()
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:  # like the poller thread mid-netpoll at fork time
        with bk.poller._lock:
            locked.set()
            release.wait(SLOW)

    t = threading.Thread(target=hold_lock)
    t.start()
    try:
        assert locked.wait(SLOW)
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                bk.poller.shutdown()
                bk.poller.shutdown()
                code = 0
            finally:
                os._exit(code)
    finally:
        release.set()
        t.join()
    deadline = time.monotonic() + SLOW
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("shutdown() deadlocked in the forked child")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's poller is untouched.
    assert bk.poller.netpoll(SLOW) == []


def test_level_arm_without_waiter_leaves_no_wakeup(
    level_backend: Backend, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """Arming while nobody polls costs no wakeup: the next wait simply includes it."""
    a, b = sockpair
    token = object()
    level_backend.open(a.fileno(), token)
    level_backend.poller.netpollarm(a.fileno(), MODE_R)
    start = time.monotonic()
    assert level_backend.poll(0.2) == {}
    assert time.monotonic() - start >= 0.16  # not cut short by a stray wakeup
    b.send(b"x")
    assert level_backend.poll(SLOW) == {id(token): MODE_R}
