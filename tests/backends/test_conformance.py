"""Conformance of the poller backends (epoll, kqueue, poll, select): one suite, every backend.

What every backend must do, stated as tests over the poller hooks: report the
token of a ready fd with the right modes, one entry per fd; report hang-ups
and errors as readiness; time out; wake a blocked wait on ``netpollbreak``
(coalesced, never lost); stop reporting an fd after ``netpollclose``; stay
correct while other threads open, close and arm; shut down twice, and in a
forked child.

Edge- versus level-triggered: epoll and kqueue report a direction once per
readiness *change*, whatever the caller does; poll and select report nothing
until ``netpollarm`` and then once per arm.  Tests that depend on it branch on
``spec.edge_triggered``; the level-only rules have their own section.

Timing assertions are deliberately loose (order and generous bounds): the
suite must pass on a loaded two-core machine.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import socket
import threading
import time
import types
from typing import Any

import pytest

from netpoll.backends import kqueue as kqueue_backend
from netpoll.backends import select as select_backend
from netpoll.core.hookspecs import MODE_EXCEPT, MODE_R, MODE_W
from tests.helpers.backends import (
    HAVE_REAL_KQUEUE,
    SLOW,
    Backend,
    Pipe,
    emulation,
    fill,
    make_registry,
    recv_all,
    start_backend,
)


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
    if bk.spec.reports_except:
        assert modes & MODE_EXCEPT, modes  # the core stops trusting short reads
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
    modes = bk.wait_for(token, MODE_R)
    assert modes & MODE_R
    if bk.spec.reports_except:
        assert modes & MODE_EXCEPT, modes
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
            poller = spec.create()
            poller.shutdown()
            poller.shutdown()


# --------------------------------------------------------------------------
# Level-triggered backends: arming.
# --------------------------------------------------------------------------


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
        b = start_backend("select")
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
    b = start_backend("epoll")
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
    b = start_backend("epoll")
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
    api = select if HAVE_REAL_KQUEUE else emulation()
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
    b = start_backend("kqueue")
    try:
        assert b.poller.uses_user_event
    finally:
        b.poller.shutdown()


def test_kqueue_eof_on_read_filter_reports_write_too(
    sockpair: tuple[socket.socket, socket.socket],
) -> None:
    b = start_backend("kqueue")
    a, peer = sockpair
    token = object()
    try:
        b.open(a.fileno(), token)
        b.drain()
        peer.shutdown(socket.SHUT_WR)  # only our read side sees EOF
        assert b.wait_for(token, MODE_R) == MODE_R | MODE_W
    finally:
        b.poller.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_shutdown_in_forked_child_does_not_deadlock(bk: Backend) -> None:
    """The core shuts the parent's backend down in a child; a held lock must not hang it."""
    bk.poller.netpollbreak()
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:  # like the poller thread mid-netpoll at fork time
        with bk.poller.lock:  # type: ignore[attr-defined]  # PollerBase.lock, documented
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
