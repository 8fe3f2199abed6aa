"""The emulated kqueue (``netpoll.testing.kqueue_emulation``), checked against BSD semantics.

On Linux the kqueue backend's conformance runs on this emulation, so the
emulation itself must behave like the kernel's kqueue where the backend
relies on it: ``kevent`` records shaped like :mod:`select`'s, ``EV_CLEAR``
edge versus level knotes, ``EV_EOF``, ``EVFILT_USER`` triggered from another
thread, errors as ``EV_ERROR`` events, regular files always ready.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.backends import HAVE_REAL_KQUEUE, IS_LINUX, SLOW, Pipe

if not IS_LINUX:
    pytest.skip("the kqueue emulation is built on epoll", allow_module_level=True)

from netpoll.testing import kqueue_emulation as emu


@pytest.fixture
def kq() -> Iterator[Any]:
    """An emulated kqueue, closed afterwards."""
    q = emu.kqueue()
    try:
        yield q
    finally:
        q.close()


def _ev(kq: Any, timeout: float = 0.05, n: int = 16) -> list[tuple[int, int, int]]:
    return [(e.ident, e.filter, e.flags) for e in kq.control(None, n, timeout)]


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


def test_emu_ev_clear_is_edge(kq: Any, sockpair: tuple[socket.socket, socket.socket]) -> None:
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


def test_emu_without_clear_is_level(kq: Any, sockpair: tuple[socket.socket, socket.socket]) -> None:
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


def test_emu_initial_state_of_each_filter(
    kq: Any, sockpair: tuple[socket.socket, socket.socket]
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


def test_emu_ev_eof(kq: Any, sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    fd = a.fileno()
    kq.control([emu.kevent(fd, emu.KQ_FILTER_READ, emu.KQ_EV_ADD | emu.KQ_EV_CLEAR)], 0, 0)
    b.shutdown(socket.SHUT_WR)
    events = kq.control(None, 4, 1.0)
    assert len(events) == 1 and events[0].flags & emu.KQ_EV_EOF


def test_emu_ev_eof_pipe_both_ends(kq: Any, pipe: Pipe) -> None:
    clear = emu.KQ_EV_ADD | emu.KQ_EV_CLEAR
    kq.control([emu.kevent(pipe.r, emu.KQ_FILTER_READ, clear)], 0, 0)
    kq.control([emu.kevent(pipe.w, emu.KQ_FILTER_WRITE, clear)], 0, 0)
    assert [e[:2] for e in _ev(kq)] == [(pipe.w, emu.KQ_FILTER_WRITE)]
    kq.control([emu.kevent(pipe.r, emu.KQ_FILTER_READ, emu.KQ_EV_DELETE)], 0, 0)
    pipe.close_r()
    events = kq.control(None, 4, 1.0)
    assert [(e.ident, bool(e.flags & emu.KQ_EV_EOF)) for e in events] == [(pipe.w, True)]


def test_emu_user_event_from_another_thread(kq: Any) -> None:
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


def test_emu_add_from_another_thread_wakes_control(
    kq: Any, sockpair: tuple[socket.socket, socket.socket]
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


def test_emu_errors(kq: Any) -> None:
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


def test_emu_oneshot_delete_disable(kq: Any, sockpair: tuple[socket.socket, socket.socket]) -> None:
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


def test_emu_regular_file_always_ready(kq: Any, tmp_path: Any) -> None:
    with open(tmp_path / "f", "wb") as f:
        kq.control([emu.kevent(f.fileno(), emu.KQ_FILTER_WRITE, emu.KQ_EV_ADD)], 0, 0)
        assert [e[:2] for e in _ev(kq)] == [(f.fileno(), emu.KQ_FILTER_WRITE)]
        assert [e[:2] for e in _ev(kq)] == [(f.fileno(), emu.KQ_FILTER_WRITE)]
        kq.control([emu.kevent(f.fileno(), emu.KQ_FILTER_WRITE, emu.KQ_EV_DELETE)], 0, 0)
        assert _ev(kq) == []


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


def test_emu_answers_the_os_api_injection_point() -> None:
    assert emu.netpoll_os_api(name="kqueue") is emu
    assert emu.netpoll_os_api(name="epoll") is None
