"""The poll role (netpoll/core/netpoller.py): a lone busy thread polls for
itself, gives the role up when others need it, and nobody is ever stranded.

Who holds the role when a test starts depends on what ran before (the loop
thread may be in a round that waits for a long deadline timer), so each test
first exchanges messages with its reader until the reader itself polls: the
role must move to it within a bounded number of messages.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from netpoll.core.errors import NetClosingError
from netpoll.core.fd import FD
from netpoll.core.runtime import runtime

#: Messages a lone reader may need before it holds the poll role.
MAX_WARMUP = 200


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


class Reader:
    """A thread reading ``fd`` message by message until one ends with ``!``."""

    def __init__(self, fd: FD) -> None:
        self.fd = fd
        self.got: list[bytes] = []
        self.error: BaseException | None = None
        self.done_at = 0.0
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                data = self.fd.read(64)
                self.got.append(data)
                if not data or data.endswith(b"!"):
                    break
        except Exception as exc:  # the test inspects it
            self.error = exc
        self.done_at = time.monotonic()

    def leads(self) -> bool:
        """True while this reader's thread holds the poll role."""
        leader = runtime.poller()._leader
        return getattr(leader, "ident", None) == self.thread.ident


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            p = runtime.poller()
            raise AssertionError(
                f"timed out waiting for {what} (role: {p._leader!r}, parked: {p._parked}, "
                f"timers: {len(p._timers)})"
            )
        time.sleep(0.001)


def _until_it_leads(reader: Reader, peer: socket.socket) -> None:
    """Exchange messages until ``reader`` is parked holding the poll role."""
    for i in range(MAX_WARMUP):
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            if reader.leads():
                return
            time.sleep(0.001)
        peer.send(b"warm-up")
        _wait_for(lambda n=i: len(reader.got) > n, "the warm-up message")
    p = runtime.poller()
    raise AssertionError(
        f"a lone reader did not take the poll role in {MAX_WARMUP} messages (role: "
        f"{p._leader!r}, parked: {p._parked}, timers: {len(p._timers)}, loop asleep: "
        f"{p._loop_asleep}, ticking: {p._loop_ticking}, epoch: {p._lead_epoch})"
    )


def test_a_lone_reader_polls_for_itself(pairs: list[tuple[FD, socket.socket]]) -> None:
    fd, peer = pairs[0]
    reader = Reader(fd)
    _until_it_leads(reader, peer)
    peer.send(b"solo!")
    reader.thread.join(5)
    assert reader.got[-1] == b"solo!"
    # Its own readiness ended the lead; nobody counts as parked any more.
    _wait_for(lambda: runtime.poller()._parked == 0, "the parked count to drop")
    assert not reader.leads()


def _leader_and_one_behind(
    pairs: list[tuple[FD, socket.socket]],
) -> tuple[Reader, socket.socket, Reader, socket.socket]:
    """A first reader holding the poll role and a second parked behind it."""
    (fd1, peer1), (fd2, peer2) = pairs[0], pairs[1]
    first = Reader(fd1)
    _until_it_leads(first, peer1)
    second = Reader(fd2)
    _wait_for(lambda: runtime.poller()._parked == 2, "the second reader to park")
    return first, peer1, second, peer2


def test_leader_wakes_a_thread_parked_behind_it(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    first, peer1, second, peer2 = _leader_and_one_behind(pairs)
    assert first.leads()  # the role did not move to the newcomer
    peer2.send(b"second!")
    second.thread.join(5)
    assert second.got == [b"second!"]
    # The leader stepped down to an ordinary park; its data still reaches it.
    assert first.thread.is_alive()
    peer1.send(b"first!")
    first.thread.join(5)
    assert first.got[-1] == b"first!"


def test_a_leader_that_leaves_does_not_strand_the_others(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    """The leader is readied and its thread ends; the loop's tick takes the role."""
    first, peer1, second, peer2 = _leader_and_one_behind(pairs)
    peer1.send(b"bye!")
    first.thread.join(5)
    assert first.got[-1] == b"bye!"  # gone: it never parks again
    time.sleep(0.05)
    sent = time.monotonic()
    peer2.send(b"still here!")
    second.thread.join(5)
    assert second.got == [b"still here!"]
    assert second.done_at - sent < 2.0


def test_close_from_another_thread_interrupts_a_leader(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    fd, peer = pairs[0]
    reader = Reader(fd)
    _until_it_leads(reader, peer)
    closed = time.monotonic()
    fd.close()
    reader.thread.join(5)
    assert isinstance(reader.error, NetClosingError)
    assert reader.done_at - closed < 2.0
    _wait_for(lambda: runtime.poller()._parked == 0, "the parked count to drop")


def test_a_deadline_set_from_another_thread_reaches_a_leader(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    fd, peer = pairs[0]
    reader = Reader(fd)
    _until_it_leads(reader, peer)
    fd.set_read_deadline(time.time() + 0.1)
    reader.thread.join(5)
    assert isinstance(reader.error, TimeoutError)


def test_a_pending_deadline_elsewhere_does_not_keep_the_role(
    pairs: list[tuple[FD, socket.socket]],
) -> None:
    """A server with deadlines has timers pending all the time; solo must still work."""
    other, _ = pairs[2]
    other.set_read_deadline(time.time() + 60)  # a timer pending for a minute
    fd, peer = pairs[0]
    reader = Reader(fd)
    _until_it_leads(reader, peer)
    peer.send(b"with timers!")
    reader.thread.join(5)
    assert reader.got[-1] == b"with timers!"
