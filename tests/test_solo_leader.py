"""The poll role (netpoll/core/netpoller.py): a lone parked thread polls for
itself, gives the role up when others need it, and nobody is ever stranded."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from netpoll.core.errors import NetClosingError
from netpoll.core.fd import FD
from netpoll.core.runtime import runtime
from netpoll.core.waiter import ThreadG


@pytest.fixture
def pairs(backend: str) -> Iterator[list[tuple[FD, socket.socket]]]:
    """Three registered socketpair ends and their plain peers."""
    made = []
    for _ in range(3):
        a, b = socket.socketpair()
        a.setblocking(False)
        made.append((FD(a), b))
    yield made
    for fd, peer in made:
        if not fd.closed:
            fd.close()
        peer.close()


def _reader(fd: FD, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            out["data"] = fd.read(64)
        except Exception as exc:  # the test inspects it
            out["error"] = exc
        out["at"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    return t


def _wait_for(cond: Any, what: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _leader() -> object:
    return runtime.poller()._leader


def test_a_lone_parked_thread_polls_for_itself(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    fd, peer = pairs[0]
    out: dict[str, Any] = {}
    t = _reader(fd, out)
    _wait_for(lambda: isinstance(_leader(), ThreadG), "the reader to take the poll role")
    peer.send(b"solo")
    t.join(5)
    assert out.get("data") == b"solo"
    # It left the role when its own readiness came, and nobody counts as parked.
    assert _leader() is None
    assert runtime.poller()._parked == 0


def test_leader_wakes_a_thread_parked_behind_it_and_steps_down(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    (fd1, peer1), (fd2, peer2) = pairs[0], pairs[1]
    out1: dict[str, Any] = {}
    out2: dict[str, Any] = {}
    t1 = _reader(fd1, out1)
    _wait_for(lambda: isinstance(_leader(), ThreadG), "reader 1 to lead")
    leader = _leader()
    t2 = _reader(fd2, out2)
    _wait_for(lambda: runtime.poller()._parked == 2, "reader 2 to park behind the leader")
    assert _leader() is leader  # the role did not move
    peer2.send(b"second")
    t2.join(5)
    assert out2.get("data") == b"second"
    # Reader 1 is still parked (it stepped down and parks as an ordinary waiter
    # or leads again); its data still reaches it.
    assert t1.is_alive()
    peer1.send(b"first")
    t1.join(5)
    assert out1.get("data") == b"first"


def test_a_leader_that_leaves_does_not_strand_the_others(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    """The leader is readied and its thread ends; the loop's tick takes the role."""
    (fd1, peer1), (fd2, peer2) = pairs[0], pairs[1]
    out1: dict[str, Any] = {}
    out2: dict[str, Any] = {}
    t1 = _reader(fd1, out1)
    _wait_for(lambda: isinstance(_leader(), ThreadG), "reader 1 to lead")
    t2 = _reader(fd2, out2)
    _wait_for(lambda: runtime.poller()._parked == 2, "reader 2 to park")
    peer1.send(b"bye")
    t1.join(5)
    assert out1.get("data") == b"bye"  # reader 1 is gone; nobody parks again
    time.sleep(0.05)
    sent = time.monotonic()
    peer2.send(b"still here")
    t2.join(5)
    assert out2.get("data") == b"still here"
    assert out2["at"] - sent < 2.0


def test_close_from_another_thread_interrupts_a_leader(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    fd, _peer = pairs[0]
    out: dict[str, Any] = {}
    t = _reader(fd, out)
    _wait_for(lambda: isinstance(_leader(), ThreadG), "the reader to lead")
    closed = time.monotonic()
    fd.close()
    t.join(5)
    assert isinstance(out.get("error"), NetClosingError)
    assert out["at"] - closed < 2.0
    assert runtime.poller()._parked == 0


def test_a_deadline_set_from_another_thread_reaches_a_leader(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    fd, _peer = pairs[0]
    out: dict[str, Any] = {}
    t = _reader(fd, out)
    _wait_for(lambda: isinstance(_leader(), ThreadG), "the reader to lead")
    fd.set_read_deadline(time.time() + 0.1)
    t.join(5)
    assert isinstance(out.get("error"), TimeoutError)
