"""The one wake channel: ``core.wakefd.WakeFd`` and the pollers' ``Wakeup`` on top of it.

A thread parked in the kernel and a poller blocked in its wait are woken the
same way: an eventfd (or, where there is none or a backend asks, a
non-blocking pipe) made readable.  These tests hold both variants to that,
on real descriptors, and check what the pollers' wakeup adds: notifications
coalesce until the poller drains.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios

import pytest

from netpoll.backends.base import Wakeup
from netpoll.core.wakefd import WakeFd
from tests.helpers.net import fd_is_open

VARIANTS = [
    pytest.param(
        True,
        id="eventfd",
        marks=pytest.mark.skipif(not hasattr(os, "eventfd"), reason="no eventfd on this OS"),
    ),
    pytest.param(False, id="pipe"),
]


def _readable(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def _queued_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0])


@pytest.mark.parametrize("use_eventfd", VARIANTS)
def test_notify_makes_it_readable_and_drain_empties_it(use_eventfd: bool) -> None:
    w = WakeFd(use_eventfd=use_eventfd)
    try:
        assert (w.fd == w.wfd) is use_eventfd
        assert not os.get_inheritable(w.fd) and not os.get_inheritable(w.wfd)
        assert not os.get_blocking(w.fd) and not os.get_blocking(w.wfd)
        assert not _readable(w.fd)
        for _ in range(3):
            w.notify()
        assert _readable(w.fd)
        w.drain()
        assert not _readable(w.fd)
        w.drain()  # nothing pending: returns, does not block
        assert not _readable(w.fd)
    finally:
        w.close()
    assert not fd_is_open(w.fd) and not fd_is_open(w.wfd)


def test_a_full_pipe_notify_neither_blocks_nor_raises() -> None:
    w = WakeFd(use_eventfd=False)
    try:
        while True:  # fill the pipe (bounded by its capacity)
            try:
                os.write(w.wfd, b"x" * 65536)
            except BlockingIOError:
                break
        w.notify()  # full: readable anyway
        assert _readable(w.fd)
        w.drain()
        assert not _readable(w.fd)
    finally:
        w.close()


@pytest.mark.parametrize("use_eventfd", VARIANTS)
def test_the_pollers_wakeup_is_that_channel(use_eventfd: bool) -> None:
    w = Wakeup(use_eventfd=use_eventfd)
    try:
        assert isinstance(w, WakeFd)
        assert w.rfd == w.fd
        assert not w.pending and not _readable(w.rfd)
        w.notify()
        assert w.pending and _readable(w.rfd)
        w.drain()
        assert not w.pending and not _readable(w.rfd)
    finally:
        w.close()
    assert not fd_is_open(w.rfd) and not fd_is_open(w.wfd)


def test_the_pollers_wakeup_coalesces_until_drained() -> None:
    w = Wakeup(use_eventfd=False)  # a pipe, so the bytes written can be counted
    try:
        for _ in range(5):
            w.notify()
        assert _queued_bytes(w.rfd) == 8  # one write: the others found it pending
        w.drain()
        assert _queued_bytes(w.rfd) == 0
        w.notify()
        assert _queued_bytes(w.rfd) == 8  # drained: the next notify writes again
        w.drain()
    finally:
        w.close()
