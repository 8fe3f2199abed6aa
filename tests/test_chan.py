"""Channels, select, WaitGroup and Mutex as specifications.

Ported in intent from Go's ``runtime/chan_test.go`` (``TestChan``,
``TestNonblockRecvRace``, ``TestSelfSelect``, ``TestSelectDuplicateChannel``,
``TestSelectFairness``, ``TestPseudoRandomSend``, ``TestMultiConsumer``) and
``sync``'s WaitGroup and Mutex tests.  Every test body runs both in a plain
thread and as a goroutine (``kind``), and the other side of an exchange is
both a plain thread and a goroutine (``peer``): a channel must work between
any two Gs.

Timing is checked by order and generous bounds only; "parked" is observed
through the channel's and the lock's own wait queues (white-box), never by
sleeping and hoping.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import netpoll
from netpoll import Chan, ChanClosed, Mutex, RecvCase, Selected, SendCase, WaitGroup, select
from netpoll.core.g import current_g, current_goroutine
from netpoll.core.runtime import runtime
from netpoll.core.sync import Cond

KINDS = pytest.mark.parametrize(
    "kind", ["thread", pytest.param("goroutine", marks=pytest.mark.netpoll_goroutine)]
)
PEERS = pytest.mark.parametrize("peer", ["thread", "go"])

#: Long enough that a hung test fails instead of hanging, short enough to notice.
JOIN = 10.0


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _runtime_fds() -> None:
    """Open the runtime's lasting fds before the leak check first looks.

    The thread poller and the test thread's wake fd live for good once the
    test thread has parked.  The wake fd is not counted as a leak, but
    taking a low fd number moves the leak check's own ``os.listdir`` fd to
    another number, which is; run alone, this module's first park would
    fail so.
    """
    runtime.thread_poller()
    current_g()


class Peer:
    """``fn(*args)`` in a plain thread ("thread") or a goroutine ("go"); join re-raises."""

    def __init__(self, how: str, fn: Callable[..., Any], *args: Any) -> None:
        self.how = how
        self.errors: list[BaseException] = []

        def body() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # handed to join()
                self.errors.append(exc)

        if how == "thread":
            self.thread = threading.Thread(target=body, name="peer", daemon=True)
            self.thread.start()
        else:
            assert how == "go"
            self.g = netpoll.go(body)

    def join(self, timeout: float = JOIN) -> None:
        if self.how == "thread":
            if current_goroutine() is not None:
                # Thread.join would block the whole M, and with it the Gs
                # the thread may be waiting for.
                netpoll.blocking(self.thread.join, timeout)
            else:
                self.thread.join(timeout)
            assert not self.thread.is_alive(), "peer thread did not finish"
        else:
            assert self.g.join(timeout), f"peer goroutine did not finish: {self.g}"
        if self.errors:
            raise self.errors[0]


def wait_until(cond: Callable[[], bool], timeout: float = JOIN) -> None:
    """Poll ``cond`` (parking, in a goroutine) until it holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        netpoll.sleep(0.002)


def parked_receivers(ch: Chan[Any]) -> int:
    return len(ch._recvq)


def parked_senders(ch: Chan[Any]) -> int:
    return len(ch._sendq)


# -- construction and bad input -------------------------------------------------------------


def test_chan_bad_capacity() -> None:
    with pytest.raises(ValueError):
        Chan(-1)
    with pytest.raises(TypeError):
        Chan("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Chan(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Chan(True)
    ch: Chan[int] = Chan()
    assert ch.cap == 0 and len(ch) == 0 and not ch.closed


def test_select_bad_input() -> None:
    ch: Chan[int] = Chan(1)
    with pytest.raises(TypeError):
        select([ch])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        select([RecvCase(object())])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        select([RecvCase(ch)], timeout=-1)
    with pytest.raises(ValueError):
        select([RecvCase(ch)], timeout=float("nan"))
    with pytest.raises(ValueError):
        select([])  # blocks forever: refused
    assert select([], default=True) == Selected(-1, None, False)
    t0 = time.monotonic()
    assert select([], timeout=0.02) == Selected(-1, None, False)
    assert time.monotonic() - t0 >= 0.015


# -- unbuffered: a rendezvous ---------------------------------------------------------------


@KINDS
@PEERS
def test_unbuffered_send_completes_only_when_received(kind: str, peer: str) -> None:
    ch: Chan[int] = Chan()
    sent: list[float] = []

    def sender() -> None:
        ch.send(7)
        sent.append(time.monotonic())

    p = Peer(peer, sender)
    wait_until(lambda: parked_senders(ch) == 1)
    netpoll.sleep(0.05)
    assert not sent, "a send on an unbuffered channel returned with no receiver"
    assert len(ch) == 0
    before = time.monotonic()
    assert ch.recv() == 7
    p.join()
    assert sent[0] >= before


@KINDS
@PEERS
def test_unbuffered_recv_blocks_until_send(kind: str, peer: str) -> None:
    ch: Chan[str] = Chan()
    got: list[str] = []
    p = Peer(peer, lambda: got.append(ch.recv()))
    wait_until(lambda: parked_receivers(ch) == 1)
    netpoll.sleep(0.05)
    assert not got
    ch.send("hello")  # returns once the receiver has the value
    p.join()
    assert got == ["hello"]


@KINDS
def test_unbuffered_timeouts_leave_nothing_behind(kind: str) -> None:
    ch: Chan[int] = Chan()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ch.send(1, timeout=0.05)
    assert time.monotonic() - t0 >= 0.045
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0.02)  # the timed-out send did not stay behind
    with pytest.raises(TimeoutError):
        ch.recv_ok(timeout=0)
    with pytest.raises(TimeoutError):
        ch.send(2, timeout=0)
    assert parked_senders(ch) == 0 and parked_receivers(ch) == 0


# -- buffered -------------------------------------------------------------------------------


@KINDS
def test_buffered_fifo_and_len(kind: str) -> None:
    ch: Chan[int] = Chan(5)
    for i in range(5):
        ch.send(i)  # never parks: there is room
        assert len(ch) == i + 1
    with pytest.raises(TimeoutError):
        ch.send(99, timeout=0.02)  # full: a send blocks
    assert len(ch) == 5
    for i in range(5):
        assert ch.recv() == i
        assert len(ch) == 4 - i
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0.02)  # empty: a receive blocks


@KINDS
@PEERS
@pytest.mark.parametrize("cap", [0, 1, 10, 100])
def test_fifo_order_through_a_peer(kind: str, peer: str, cap: int) -> None:
    """Go's TestChan: 100 values sent by one G arrive uncorrupted, in order."""
    ch: Chan[int] = Chan(cap)
    p = Peer(peer, lambda: [ch.send(i) for i in range(100)])
    got = [ch.recv() for _ in range(100)]
    p.join()
    assert got == list(range(100))


@KINDS
@PEERS
def test_parked_senders_keep_fifo_order(kind: str, peer: str) -> None:
    """A freed slot goes to the longest-parked sender: order is kept across the queue."""
    ch: Chan[int] = Chan(2)
    ch.send(0)
    ch.send(1)
    peers = []
    for n, v in enumerate((2, 3, 4), 1):
        peers.append(Peer(peer, ch.send, v))
        wait_until(lambda n=n: parked_senders(ch) == n)
    assert ch.recv() == 0
    # The freed slot took the first parked sender's value: its send is complete.
    assert len(ch) == 2 and parked_senders(ch) == 2
    peers[0].join()
    assert [ch.recv() for _ in range(4)] == [1, 2, 3, 4]
    for p in peers:
        p.join()


# -- close ----------------------------------------------------------------------------------


@KINDS
def test_close_wakes_every_parked_receiver(kind: str) -> None:
    ch: Chan[int] = Chan()
    results: list[tuple[Any, bool]] = []
    peers = [Peer(how, lambda: results.append(ch.recv_ok())) for how in ["thread", "go"] * 3]
    wait_until(lambda: parked_receivers(ch) == 6)
    ch.close()
    for p in peers:
        p.join()
    assert results == [(None, False)] * 6


@KINDS
@pytest.mark.parametrize("cap", [0, 2])
def test_close_wakes_every_parked_sender(kind: str, cap: int) -> None:
    ch: Chan[int] = Chan(cap)
    for i in range(cap):
        ch.send(i)
    raised: list[int] = []

    def sender(v: int) -> None:
        try:
            ch.send(v)
        except ChanClosed:
            # (Not the exception: its traceback would keep the thread's G,
            # and so its wake fd, alive past the leak check.)
            raised.append(v)

    peers = [Peer(how, sender, 10 + i) for i, how in enumerate(["thread", "go"] * 2)]
    wait_until(lambda: parked_senders(ch) == 4)
    ch.close()
    for p in peers:
        p.join()
    assert len(raised) == 4
    # What was buffered before close is still there; the woken senders' values are not.
    assert [ch.recv() for _ in range(cap)] == list(range(cap))
    assert ch.recv_ok() == (None, False)


@KINDS
def test_buffered_values_survive_close(kind: str) -> None:
    ch: Chan[str] = Chan(3)
    for v in "abc":
        ch.send(v)
    ch.close()
    assert ch.closed and len(ch) == 3
    assert ch.recv() == "a"
    assert ch.recv_ok() == ("b", True)
    assert ch.recv() == "c"
    with pytest.raises(ChanClosed):
        ch.recv()  # closed and drained
    for _ in range(3):
        assert ch.recv_ok() == (None, False)  # again and again, at once
    assert ch.recv_ok(timeout=0) == (None, False)


@KINDS
def test_send_on_closed_and_double_close_raise(kind: str) -> None:
    for cap in (0, 1):
        ch: Chan[int] = Chan(cap)
        ch.close()
        with pytest.raises(ChanClosed):
            ch.send(1)
        with pytest.raises(ChanClosed):
            ch.send(1, timeout=0)
        with pytest.raises(ChanClosed):
            ch.close()
        assert len(ch) == 0


@KINDS
@PEERS
def test_iteration_ends_at_close(kind: str, peer: str) -> None:
    ch: Chan[int] = Chan(4)

    def producer() -> None:
        for i in range(50):
            ch.send(i)
        ch.close()

    p = Peer(peer, producer)
    assert list(ch) == list(range(50))
    p.join()
    assert list(ch) == []  # a closed, drained channel iterates to nothing


@PEERS
def test_nonblock_recv_race(peer: str) -> None:
    """Go's TestNonblockRecvRace: a value buffered before close is never missed by default."""
    for _ in range(100):
        ch: Chan[int] = Chan(1)
        ch.send(1)
        seen: list[Selected] = []
        p = Peer(peer, lambda ch=ch, seen=seen: seen.append(select([RecvCase(ch)], default=True)))
        ch.close()
        ch.recv_ok()
        p.join()
        assert seen[0].case == 0, "select took default on a ready (buffered or closed) channel"


# -- select ---------------------------------------------------------------------------------


@KINDS
def test_select_default(kind: str) -> None:
    a: Chan[int] = Chan(1)
    b: Chan[int] = Chan()
    assert select([RecvCase(a), RecvCase(b)], default=True) == Selected(-1, None, False)
    assert select([SendCase(b, 1)], default=True) == Selected(-1, None, False)
    assert select([SendCase(a, 5), RecvCase(b)], default=True) == Selected(0, None, True)
    assert select([SendCase(a, 6)], default=True).case == -1  # full now
    assert select([RecvCase(b), RecvCase(a)], default=True) == Selected(1, 5, True)
    a.close()
    assert select([RecvCase(b), RecvCase(a)], default=True) == Selected(1, None, False)
    with pytest.raises(ChanClosed):
        select([SendCase(a, 1)], default=True)
    assert parked_senders(b) == 0 and parked_receivers(b) == 0


@KINDS
def test_select_timeout(kind: str) -> None:
    a: Chan[int] = Chan()
    b: Chan[int] = Chan()
    t0 = time.monotonic()
    assert select([RecvCase(a), SendCase(b, 1)], timeout=0.08) == Selected(-1, None, False)
    elapsed = time.monotonic() - t0
    assert 0.075 <= elapsed < 3.0
    # Nothing of the timed-out select stays queued.
    for ch in (a, b):
        assert parked_senders(ch) == 0 and parked_receivers(ch) == 0
    assert select([RecvCase(a)], timeout=0) == Selected(-1, None, False)


@KINDS
@PEERS
def test_select_wakes_on_the_case_that_becomes_ready(kind: str, peer: str) -> None:
    a: Chan[int] = Chan()
    b: Chan[int] = Chan()
    p = Peer(peer, lambda: (wait_until(lambda: parked_receivers(b) == 1), b.send(42)))
    t0 = time.monotonic()
    got = select([RecvCase(a), RecvCase(b)], timeout=JOIN)
    assert got == Selected(1, 42, True)
    assert time.monotonic() - t0 < JOIN / 2
    p.join()
    assert parked_receivers(a) == 0  # the losing case was dequeued


@KINDS
@PEERS
def test_select_mixed_send_and_recv(kind: str, peer: str) -> None:
    """One select with a send and a receive case, against a peer doing either."""
    out: Chan[int] = Chan()
    inp: Chan[int] = Chan()

    def other_side() -> None:
        assert out.recv() == 1  # first the select's send
        inp.send(2)  # then its receive

    p = Peer(peer, other_side)
    first = select([SendCase(out, 1), RecvCase(inp)], timeout=JOIN)
    assert first == Selected(0, None, True)
    second = select([SendCase(out, 1), RecvCase(inp)], timeout=JOIN)
    assert second == Selected(1, 2, True)
    p.join()
    assert select([SendCase(out, 1), RecvCase(inp)], default=True).case == -1


@KINDS
def test_select_closed_wakes_parked_select(kind: str) -> None:
    a: Chan[int] = Chan()
    b: Chan[int] = Chan()
    p = Peer("thread", lambda: (wait_until(lambda: parked_receivers(a) == 1), a.close()))
    assert select([RecvCase(b), RecvCase(a)], timeout=JOIN) == Selected(1, None, False)
    p.join()
    # A parked send case on a channel that gets closed raises.
    p = Peer("go", lambda: (wait_until(lambda: parked_senders(b) == 1), b.close()))
    with pytest.raises(ChanClosed):
        select([SendCase(b, 1)], timeout=JOIN)
    p.join()


@pytest.mark.parametrize("cases", [2, 4])
def test_select_fairness(cases: int) -> None:
    """Go's TestSelectFairness: among ready cases, each is chosen about equally often."""
    rounds = 1000 * cases
    chans: list[Chan[int]] = [Chan(1) for _ in range(cases)]
    counts: Counter[int] = Counter()
    for _ in range(rounds):
        for i, ch in enumerate(chans):
            if len(ch) == 0:
                ch.send(i)
        sel = select([RecvCase(ch) for ch in chans])
        assert sel.value == sel.case
        counts[sel.case] += 1
    share = 1 / cases
    for i in range(cases):
        assert counts[i] > 0.7 * share * rounds, counts  # expected share*rounds, sd ~ 2%


def test_select_fairness_send_and_recv() -> None:
    full: Chan[int] = Chan(1)
    room: Chan[int] = Chan(1)
    counts: Counter[int] = Counter()
    for _ in range(2000):
        if len(full) == 0:
            full.send(1)
        if len(room) == 1:
            room.recv()
        counts[select([RecvCase(full), SendCase(room, 2)]).case] += 1
    assert counts[0] > 700 and counts[1] > 700, counts


def test_pseudo_random_send() -> None:
    """Go's TestPseudoRandomSend: two send cases on one channel, both get picked."""
    ch: Chan[int] = Chan(1000)
    for _ in range(1000):
        assert select([SendCase(ch, 0), SendCase(ch, 1)]).case in (0, 1)
    counts = Counter(ch.recv() for _ in range(1000))
    assert counts[0] > 350 and counts[1] > 350, counts


@KINDS
def test_select_duplicate_channel(kind: str) -> None:
    """Go's TestSelectDuplicateChannel: the same channel twice in one select."""
    ch: Chan[int] = Chan()
    p = Peer("go", lambda: (wait_until(lambda: parked_receivers(ch) == 2), ch.send(9)))
    sel = select([RecvCase(ch), RecvCase(ch)], timeout=JOIN)
    assert sel.case in (0, 1) and sel.value == 9 and sel.ok
    p.join()
    assert parked_receivers(ch) == 0
    # Once more through the other path: the value is sent before the select.
    p = Peer("thread", ch.send, 10)
    wait_until(lambda: parked_senders(ch) == 1)
    assert select([RecvCase(ch), RecvCase(ch)]).value == 10
    p.join()


@pytest.mark.parametrize("cap", [0, 1])
@pytest.mark.parametrize("peers", [("thread", "thread"), ("go", "go"), ("thread", "go")])
def test_self_select(cap: int, peers: tuple[str, str]) -> None:
    """Go's TestSelfSelect: a select with a send and a receive on one unbuffered
    channel never pairs with itself, and two such selects never deadlock."""
    ch: Chan[int] = Chan(cap)
    n = 300

    def worker(p: int) -> None:
        for i in range(n):
            if p == 0 or i % 2 == 0:
                sel = select([SendCase(ch, p), RecvCase(ch)], timeout=JOIN)
            else:
                sel = select([RecvCase(ch), SendCase(ch, p)], timeout=JOIN)
                sel = Selected(1 - sel.case, sel.value, sel.ok)  # case 1 is the receive
            assert sel.case in (0, 1), "self select timed out (deadlock)"
            if sel.case == 1 and cap == 0:
                assert sel.value != p, "an unbuffered select received its own send"

    ps = [Peer(how, worker, i) for i, how in enumerate(peers)]
    for p in ps:
        p.join()


@KINDS
@PEERS
def test_timeouts_never_lose_or_duplicate_values(kind: str, peer: str) -> None:
    """A receive or send that times out just as a counterpart arrives either happened
    or did not: every value arrives exactly once, in order."""
    n = 300
    ch: Chan[int] = Chan()
    got: list[int] = []

    def patient_sender() -> None:
        for i in range(n):
            ch.send(i)

    p = Peer(peer, patient_sender)
    while len(got) < n:
        try:
            got.append(ch.recv(timeout=0.0002))
        except TimeoutError:
            pass
    p.join()
    assert got == list(range(n))

    got.clear()
    p = Peer(peer, lambda: got.extend(ch.recv() for _ in range(n)))
    for i in range(n):
        while True:
            try:
                ch.send(i, timeout=0.0002)
                break
            except TimeoutError:
                pass
    p.join()
    assert got == list(range(n))


# -- goroutines and threads together --------------------------------------------------------


@KINDS
@PEERS
def test_ping_pong_both_directions(kind: str, peer: str) -> None:
    """A goroutine and a plain thread (or two of a kind) exchange values both ways."""
    ping: Chan[int] = Chan()
    pong: Chan[int] = Chan()

    def echo() -> None:
        for v in ping:
            pong.send(v + 1)

    p = Peer(peer, echo)
    for i in range(200):
        ping.send(i)
        assert pong.recv() == i + 1
    ping.close()
    p.join()


@KINDS
@pytest.mark.parametrize("cap", [0, 1, 16])
def test_many_senders_and_receivers(kind: str, cap: int) -> None:
    """Go's TestMultiConsumer, across threads and goroutines: every value exactly once."""
    ch: Chan[int] = Chan(cap)
    n_each = 150
    senders = ["thread", "go"] * 3
    receivers = ["thread", "go"] * 2
    got: list[list[int]] = [[] for _ in receivers]

    def send_all(base: int) -> None:
        for i in range(n_each):
            ch.send(base + i)

    def recv_all(out: list[int]) -> None:
        for v in ch:
            out.append(v)

    rs = [Peer(how, recv_all, got[i]) for i, how in enumerate(receivers)]
    ss = [Peer(how, send_all, i * 10_000) for i, how in enumerate(senders)]
    for p in ss:
        p.join()
    ch.close()
    for p in rs:
        p.join()
    everything = sorted(v for out in got for v in out)
    expected = sorted(i * 10_000 + j for i in range(len(senders)) for j in range(n_each))
    assert everything == expected
    # Each receiver saw each sender's values in that sender's order.
    for out in got:
        for i in range(len(senders)):
            mine = [v for v in out if v // 10_000 == i]
            assert mine == sorted(mine)


# -- WaitGroup ------------------------------------------------------------------------------


@KINDS
def test_waitgroup_add_done_wait(kind: str) -> None:
    wg = WaitGroup()
    assert wg.wait() is True  # zero: at once
    finished: list[int] = []
    n = 8
    wg.add(n)

    def worker(i: int) -> None:
        netpoll.sleep(0.01 * (i % 3))
        finished.append(i)
        wg.done()

    peers = [Peer("thread" if i % 2 else "go", worker, i) for i in range(n)]
    assert wg.wait(timeout=JOIN) is True
    assert sorted(finished) == list(range(n))
    for p in peers:
        p.join()
    # Reusable once back at zero.
    wg.add(1)
    p = Peer("go", wg.done)
    assert wg.wait(timeout=JOIN)
    p.join()


@KINDS
def test_waitgroup_wakes_every_waiter(kind: str) -> None:
    wg = WaitGroup()
    wg.add(1)
    woke: list[bool] = []
    peers = [Peer(how, lambda: woke.append(wg.wait(timeout=JOIN))) for how in ["thread", "go"] * 2]
    wait_until(lambda: len(wg._waiters) == 4)
    wg.done()
    for p in peers:
        p.join()
    assert woke == [True] * 4


@KINDS
def test_waitgroup_negative_counter(kind: str) -> None:
    wg = WaitGroup()
    with pytest.raises(ValueError):
        wg.done()
    wg.add(1)
    with pytest.raises(ValueError):
        wg.add(-2)
    assert wg.wait(timeout=0.01) is False  # the failed add changed nothing: still 1
    wg.done()
    assert wg.wait(timeout=0) is True


@KINDS
def test_waitgroup_wait_timeout(kind: str) -> None:
    wg = WaitGroup()
    wg.add(1)
    t0 = time.monotonic()
    assert wg.wait(timeout=0.05) is False
    assert 0.045 <= time.monotonic() - t0 < 3.0
    assert not wg._waiters  # the timed-out waiter left the queue
    with pytest.raises(ValueError):
        wg.wait(timeout=-1)
    wg.done()
    assert wg.wait(timeout=0.01) is True


# -- Mutex ----------------------------------------------------------------------------------


@KINDS
def test_mutex_mutual_exclusion(kind: str) -> None:
    mu = Mutex()
    state = {"total": 0, "inside": 0, "max_inside": 0}
    rounds = 150

    def worker() -> None:
        for _ in range(rounds):
            with mu:
                state["inside"] += 1
                state["max_inside"] = max(state["max_inside"], state["inside"])
                v = state["total"]
                netpoll.gosched()  # another G of this M (or the GIL) runs now
                state["total"] = v + 1
                state["inside"] -= 1

    peers = [Peer(how, worker) for how in ["thread", "go"] * 3]
    for p in peers:
        p.join()
    assert state["max_inside"] == 1
    assert state["total"] == 6 * rounds
    assert not mu.locked()


@KINDS
def test_mutex_fifo_hand_off(kind: str) -> None:
    mu = Mutex()
    order: list[int] = []

    def waiter(i: int) -> None:
        mu.lock()
        order.append(i)
        mu.unlock()

    assert mu.lock()
    peers = []
    for i, how in enumerate(["thread", "go", "go", "thread", "go"]):
        peers.append(Peer(how, waiter, i))
        wait_until(lambda n=i + 1: len(mu._waiters) == n)
    mu.unlock()
    for p in peers:
        p.join()
    assert order == [0, 1, 2, 3, 4]
    assert not mu.locked()


@KINDS
def test_mutex_unlock_of_unlocked_raises(kind: str) -> None:
    mu = Mutex()
    with pytest.raises(RuntimeError):
        mu.unlock()
    with mu:
        assert mu.locked()
        assert not mu.try_lock()
    assert not mu.locked()
    with pytest.raises(RuntimeError):
        mu.unlock()
    assert mu.try_lock()
    # Not tied to the G that locked it (Go's rule): another G may unlock.
    p = Peer("thread", mu.unlock)
    p.join()
    assert not mu.locked()


@KINDS
@PEERS
def test_mutex_lock_timeout(kind: str, peer: str) -> None:
    mu = Mutex()
    mu.lock()
    result: list[tuple[bool, float]] = []

    def try_it() -> None:
        t0 = time.monotonic()
        result.append((mu.lock(timeout=0.05), time.monotonic() - t0))

    Peer(peer, try_it).join()
    ok, elapsed = result[0]
    assert ok is False and 0.045 <= elapsed < 3.0
    assert not mu._waiters  # the timed-out waiter is gone: unlock does not hand it over
    mu.unlock()
    assert not mu.locked()
    with pytest.raises(ValueError):
        mu.lock(timeout=-1)
    assert mu.lock(timeout=0.01) is True
    mu.unlock()


# -- Cond -----------------------------------------------------------------------------------


@KINDS
@PEERS
def test_cond_notify_wakes_a_waiter_holding_the_lock(kind: str, peer: str) -> None:
    cond = Cond()
    state: list[str] = []

    def waiter() -> None:
        with cond:
            state.append("waiting")
            woken = cond.wait(timeout=JOIN)
            state.append(f"woken={woken} locked={cond._lock.locked()}")

    p = Peer(peer, waiter)
    wait_until(lambda: bool(cond._waiters))
    with cond:
        assert state == ["waiting"]  # it released the lock to wait
        cond.notify()
    p.join()
    assert state == ["waiting", "woken=True locked=True"]
    assert not cond._waiters and not cond._lock.locked()


@KINDS
@PEERS
def test_cond_wait_timeout_takes_the_waiter_back(kind: str, peer: str) -> None:
    cond = Cond()
    result: list[tuple[bool, bool, float]] = []

    def waiter() -> None:
        with cond:
            t0 = time.monotonic()
            woken = cond.wait(timeout=0.05)
            result.append((woken, cond._lock.locked(), time.monotonic() - t0))

    Peer(peer, waiter).join()
    woken, locked, elapsed = result[0]
    assert woken is False and locked and 0.045 <= elapsed < 3.0
    assert not cond._waiters  # a later notify does not wake a waiter that left
    assert not cond._lock.locked()


def test_cond_waiter_killed_leaves_the_queue_and_the_lock_released() -> None:
    cond = Cond()
    finished: list[bool] = []

    def waiter() -> None:
        try:
            with cond:
                cond.wait()
        finally:
            finished.append(cond._lock.locked())

    def main() -> None:
        netpoll.go(waiter)
        wait_until(lambda: bool(cond._waiters))
        # Returning ends run(): the parked waiter gets GreenletExit.

    netpoll.run(main)
    # The killed wait took the lock back, so ``with`` released it on the way out.
    assert finished == [False]
    assert not cond._waiters and not cond._lock.locked()
