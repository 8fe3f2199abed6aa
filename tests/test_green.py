"""netpoll.green: the locks, queues, sleep, select and ssl that park a goroutine.

Each "parks" check is an ordering check, never a timing one: a goroutine
waits on the object while a sibling goroutine of the same M must run for the
wait to end, so a wait that blocked the M would never end (and the bounded
join fails instead of hanging).  The stdlib semantics (return values,
exception types, argument errors) are checked from plain threads and
goroutines alike.
"""

from __future__ import annotations

import queue as std_queue
import socket
import ssl as std_ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import netpoll
import netpoll.green.select as gselect
import netpoll.green.socket as gsocket
import netpoll.green.ssl as gssl
import netpoll.green.threading as gt
import netpoll.green.time as gtime
from netpoll.green import queue as gq
from netpoll.testing import Faults
from tests.helpers.tls import Certs, certs, start

PEER = 10.0


def in_goroutines(*fns: Callable[[], Any]) -> None:
    """Run ``fns`` as goroutines of one M (this thread) and wait for all of them."""

    def main() -> None:
        gs = [netpoll.go(fn) for fn in fns]
        for g in gs:
            assert g.join(PEER), f"{g} did not finish"

    netpoll.run(main)


def sibling_must_run(wait: Callable[[], Any], release: Callable[[], None]) -> list[Any]:
    """``wait()`` in one goroutine; ``release()`` only from a sibling on the same M."""
    out: list[Any] = []
    order: list[str] = []

    def waiter() -> None:
        order.append("wait")
        out.append(wait())
        order.append("woken")

    def sibling() -> None:
        netpoll.sleep(0.01)
        order.append("sibling")
        release()

    in_goroutines(waiter, sibling)
    assert order == ["wait", "sibling", "woken"]
    return out


# -- Lock / RLock ------------------------------------------------------------------------


def test_lock_semantics(backend: str) -> None:
    lock = gt.Lock()
    assert lock.acquire() and lock.locked()
    assert not lock.acquire(False)
    assert not lock.acquire(timeout=0.01)
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 1)
    with pytest.raises(ValueError, match="non-negative"):
        lock.acquire(timeout=-2)
    lock.release()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()


def test_lock_wait_parks_the_goroutine(backend: str) -> None:
    lock = gt.Lock()
    lock.acquire()
    assert sibling_must_run(lock.acquire, lock.release) == [True]
    lock.release()


def test_lock_shared_by_a_goroutine_and_a_thread(backend: str) -> None:
    lock = gt.Lock()
    lock.acquire()
    got: list[bool] = []
    t = start(lambda: got.append(lock.acquire(timeout=PEER)))

    def goroutine() -> None:
        netpoll.sleep(0.02)
        lock.release()  # the thread gets it (hand-off)
        got.append(lock.acquire(timeout=PEER))  # parks until the thread releases

    def thread_release() -> None:
        t.join(PEER)
        lock.release()

    r = start(thread_release)
    in_goroutines(goroutine)
    r.join(PEER)
    assert got == [True, True]
    lock.release()


def test_rlock_owner_is_the_goroutine(backend: str) -> None:
    rlock = gt.RLock()
    order: list[str] = []

    def first() -> None:
        with rlock, rlock:  # reentrant
            order.append("first in")
            netpoll.sleep(0.02)  # the second goroutine runs and must wait
            order.append("first out")

    def second() -> None:
        netpoll.sleep(0.005)
        with pytest.raises(RuntimeError):
            rlock.release()  # not the owner
        with rlock:
            order.append("second in")

    in_goroutines(first, second)
    assert order == ["first in", "first out", "second in"]


# -- Condition / Event / Semaphore / Barrier --------------------------------------------


def test_condition(backend: str) -> None:
    cond = gt.Condition()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0)
    with cond:
        assert cond.wait(0.01) is False
    items: list[int] = []

    def wait() -> int:
        with cond:
            return cond.wait_for(lambda: len(items), timeout=PEER)

    def release() -> None:
        with cond:
            items.append(1)
            cond.notify_all()

    assert sibling_must_run(wait, release) == [1]


def test_event_and_semaphores(backend: str) -> None:
    ev = gt.Event()
    assert not ev.wait(0.01)
    assert sibling_must_run(lambda: ev.wait(PEER), ev.set) == [True]
    assert ev.is_set()
    ev.clear()
    assert not ev.is_set()
    sem = gt.Semaphore(1)
    assert sem.acquire()
    assert not sem.acquire(False)
    assert not sem.acquire(timeout=0.01)
    assert sibling_must_run(lambda: sem.acquire(timeout=PEER), sem.release) == [True]
    with pytest.raises(ValueError):
        gt.Semaphore(-1)
    bounded = gt.BoundedSemaphore(1)
    with pytest.raises(ValueError, match="too many"):
        bounded.release()


def test_barrier(backend: str) -> None:
    barrier = gt.Barrier(3, timeout=PEER)
    ids: list[int] = []
    in_goroutines(*(lambda: ids.append(barrier.wait()) for _ in range(3)))
    assert sorted(ids) == [0, 1, 2]


# -- queue, sleep -------------------------------------------------------------------------


def test_queues(backend: str) -> None:
    q: gq.Queue[int] = gq.Queue()
    assert isinstance(q, std_queue.Queue)
    with pytest.raises(std_queue.Empty):
        q.get(timeout=0.01)
    assert sibling_must_run(lambda: q.get(timeout=PEER), lambda: q.put(7)) == [7]
    full: gq.Queue[int] = gq.Queue(maxsize=1)
    full.put(1)
    with pytest.raises(std_queue.Full):
        full.put(2, timeout=0.01)
    lifo: gq.LifoQueue[int] = gq.LifoQueue()
    prio: gq.PriorityQueue[int] = gq.PriorityQueue()
    for i in (2, 3, 1):
        lifo.put(i)
        prio.put(i)
    assert [lifo.get() for _ in range(3)] == [1, 3, 2]
    assert [prio.get() for _ in range(3)] == [1, 2, 3]
    # join/task_done between a goroutine and a plain thread.
    work: gq.Queue[int] = gq.Queue()
    done: list[int] = []

    def worker() -> None:
        for _ in range(3):
            done.append(work.get(timeout=PEER))
            work.task_done()

    t = start(worker)

    def producer() -> None:
        for i in range(3):
            work.put(i)
        work.join()

    in_goroutines(producer)
    t.join(PEER)
    assert done == [0, 1, 2]


def test_sleep(backend: str) -> None:
    order: list[str] = []

    def sleeper() -> None:
        gtime.sleep(0.03)
        order.append("sleeper")

    def sibling() -> None:
        order.append("sibling")

    in_goroutines(sleeper, sibling)
    assert order == ["sibling", "sleeper"]
    with pytest.raises(ValueError):
        netpoll.run(gtime.sleep, -1)
    gtime.sleep(0)  # a plain thread: the stdlib's
    assert gtime.monotonic is not None and gtime.time() > 0


# -- select / poll ------------------------------------------------------------------------


def test_select_and_poll_park_the_goroutine(backend: str) -> None:
    a, b = socket.socketpair()
    try:
        assert gselect.select([a], [], [], 0) == ([], [], [])
        got = sibling_must_run(lambda: gselect.select([a], [], [], PEER), lambda: b.send(b"x"))
        assert got == [([a], [], [])]
        assert a.recv(1) == b"x"
        p = gselect.poll()
        p.register(a, gselect.POLLIN)
        assert p.poll(0) == []
        got = sibling_must_run(lambda: p.poll(PEER * 1000), lambda: b.send(b"y"))
        assert got == [[(a.fileno(), gselect.POLLIN)]]
        # From a plain thread: the stdlib's.
        assert gselect.select([a], [], [], 0)[0] == [a]
        assert not hasattr(gselect, "epoll")
    finally:
        a.close()
        b.close()


# -- ssl ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Iterator[Certs]:
    with certs() as c:
        yield c


def _green_client_context(pki: Certs) -> std_ssl.SSLContext:
    ctx = gssl.create_default_context()
    pki.ca.configure_trust(ctx)
    return ctx


def test_ssl_client_in_goroutines_against_a_stdlib_server(pki: Certs, backend: str) -> None:
    server_ctx = pki.server_context()
    ls = socket.create_server(("127.0.0.1", 0))
    ls.settimeout(PEER)
    port = ls.getsockname()[1]
    n = 4

    def serve() -> None:
        conns = []
        try:
            for _ in range(n):
                raw, _ = ls.accept()
                raw.settimeout(PEER)
                conns.append(server_ctx.wrap_socket(raw, server_side=True))
            for c in conns:
                c.sendall(c.recv(100).upper() * 1000)
        finally:
            for c in conns:
                c.close()

    peer = start(serve)
    ctx = _green_client_context(pki)
    assert type(ctx) is gssl.SSLContext and isinstance(ctx, std_ssl.SSLContext)
    answers: list[bytes] = []
    ticks: list[int] = []

    def client(i: int) -> None:
        raw = gsocket.create_connection(("127.0.0.1", port), timeout=PEER)
        with raw, ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert isinstance(s, gssl.SSLSocket) and isinstance(s, std_ssl.SSLSocket)
            s.sendall(b"tls%d" % i)
            want = (b"TLS%d" % i) * 1000
            got = b""
            while len(got) < len(want):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            answers.append(got)

    def ticker() -> None:
        while len(answers) < n and len(ticks) < 10_000:
            ticks.append(1)
            netpoll.sleep(0.005)

    in_goroutines(*(lambda i=i: client(i) for i in range(n)), ticker)
    peer.join(PEER)
    ls.close()
    assert sorted(answers) == sorted((b"TLS%d" % i) * 1000 for i in range(n))


def test_ssl_server_accepts_green_sockets_and_handshake_times_out(pki: Certs, backend: str) -> None:
    server_ctx = gssl.SSLContext(std_ssl.PROTOCOL_TLS_SERVER)
    pki.server.configure_cert(server_ctx)
    ls = server_ctx.wrap_socket(gsocket.create_server(("127.0.0.1", 0)), server_side=True)
    ls.settimeout(PEER)
    port = ls.getsockname()[1]
    client_ctx = pki.client_context()

    def client() -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=PEER)
        with raw, client_ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"hello")
            return s.recv(5)

    t = start(client)
    conn, _ = ls.accept()
    with conn:
        assert isinstance(conn, gssl.SSLSocket)
        assert conn.recv(5) == b"hello"
        conn.sendall(b"world")
    t.join(PEER)
    assert t.result == b"world"  # type: ignore[attr-defined]
    ls.close()
    # A peer that never speaks TLS: the handshake ends at the timeout.
    silent = socket.create_server(("127.0.0.1", 0))
    raw = gsocket.create_connection(("127.0.0.1", silent.getsockname()[1]), timeout=0.1)
    with pytest.raises(socket.timeout):
        _green_client_context(pki).wrap_socket(raw, server_hostname="localhost")
    raw.close()
    silent.close()


def test_local_is_per_goroutine(backend: str) -> None:
    class Conn(gt.local):
        def __init__(self, name: str) -> None:
            self.name = name
            self.uses = 0

    conn = Conn("db")
    conn.uses = 100  # the creating thread's
    seen: list[tuple[int, str, int]] = []

    def use(i: int) -> Callable[[], None]:
        def run() -> None:
            seen.append((i, conn.name, conn.uses))  # __init__ ran again, for this goroutine
            conn.uses = i
            netpoll.sleep(0.01)  # the others set theirs meanwhile
            seen.append((i, conn.name, conn.uses))

        return run

    in_goroutines(*(use(i) for i in range(4)))
    assert sorted(seen) == sorted(
        [(i, "db", 0) for i in range(4)] + [(i, "db", i) for i in range(4)]
    )
    assert conn.uses == 100
    other = start(lambda: (conn.name, conn.uses))
    other.join(PEER)
    assert other.result == ("db", 0)
    del conn.uses
    with pytest.raises(AttributeError):
        _ = conn.uses
    with pytest.raises(TypeError, match="Initialization arguments"):
        gt.local(1)
    with pytest.raises(AttributeError, match="read-only"):
        conn.__dict__ = {}


def test_ssl_socket_without_timeout_stays_nonblocking(pki: Certs, backend: str) -> None:
    """wrap_socket detaches a blocking-mode green socket (which leaves the fd
    blocking); the TLS socket must put it back, or its read would hold the M."""
    server_ctx = pki.server_context()
    ls = socket.create_server(("127.0.0.1", 0))
    ls.settimeout(PEER)
    go_on = std_queue.Queue[bool]()

    def serve() -> None:
        raw, _ = ls.accept()
        raw.settimeout(PEER)
        with server_ctx.wrap_socket(raw, server_side=True) as c:
            go_on.get(timeout=PEER)
            c.sendall(b"late")

    peer = start(serve)
    raw = gsocket.create_connection(("127.0.0.1", ls.getsockname()[1]))
    assert raw.gettimeout() is None
    s = _green_client_context(pki).wrap_socket(raw, server_hostname="localhost")
    assert s.gettimeout() is None
    got = sibling_must_run(lambda: s.recv(4), lambda: go_on.put(True))
    assert got == [b"late"]
    s.close()
    peer.join(PEER)
    ls.close()


def test_lock_under_contention_from_goroutines_and_threads(backend: str) -> None:
    """Four threads and twenty goroutines (on two Ms) increment one counter
    under one green lock, parking inside the critical section; no update is lost."""
    lock = gt.Lock()
    count = [0]
    rounds = 50

    def work() -> None:
        for i in range(rounds):
            with lock:
                v = count[0]
                if i % 10 == 0:
                    gtime.sleep(0.001)  # park (goroutine) or sleep (thread) holding it
                count[0] = v + 1

    threads = [start(work) for _ in range(4)]
    other_m = start(lambda: in_goroutines(*(work for _ in range(10))))
    in_goroutines(*(work for _ in range(10)))
    other_m.join(PEER * 3)
    for t in threads:
        t.join(PEER * 3)
    assert other_m.error is None
    assert count[0] == rounds * 24


def test_ssl_records_go_through_the_hooks_while_faults_watch(pki: Certs, backend: str) -> None:
    """A TLS socket made while a fault plugin watches reads runs on memory BIOs:
    its records pass the read/write hooks, so short reads and resets reach it."""
    server_ctx = pki.server_context()
    ls = socket.create_server(("127.0.0.1", 0))
    ls.settimeout(PEER)
    port = ls.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            raw, _ = ls.accept()
            raw.settimeout(PEER)
            try:
                with server_ctx.wrap_socket(raw, server_side=True) as c:
                    while data := c.recv(65536):
                        c.sendall(data)
            except OSError:
                pass  # the reset connection

    peer = start(serve)
    ctx = _green_client_context(pki)
    payload = bytes(range(256)) * 80  # 20 KiB

    def echo(s: std_ssl.SSLSocket) -> bytes:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got

    with Faults() as f:
        short = f.short("read", 7)
        raw = gsocket.create_connection(("127.0.0.1", port), timeout=PEER)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert echo(s) == payload
            assert s.version() in ("TLSv1.2", "TLSv1.3") and s.getpeercert()
        assert short.fired > 100  # every record arrived 7 bytes at a time, through the hook
        short.remove()
        reset = f.reset_after(8000, times=1)  # past the handshake, inside the echo
        raw = gsocket.create_connection(("127.0.0.1", port), timeout=PEER)
        with (
            ctx.wrap_socket(raw, server_hostname="localhost") as s,
            pytest.raises(ConnectionResetError),
        ):
            echo(s)
        assert reset.fired >= 1
    peer.join(PEER)
    ls.close()


def test_ssl_timeout_is_per_call_and_settimeout_none_clears_it(pki: Certs, backend: str) -> None:
    """Each timed TLS call parks under its own deadline (one left by the call
    before, long passed, does not fire), the timeout still ends a silent read,
    and settimeout(None) drops the deadline the last timed call left."""
    server_ctx = pki.server_context()
    ls = socket.create_server(("127.0.0.1", 0))
    ls.settimeout(PEER)
    delays = [0.0, 0.05, 0.6]

    def serve() -> None:
        raw, _ = ls.accept()
        raw.settimeout(PEER)
        with server_ctx.wrap_socket(raw, server_side=True) as c:
            for delay in delays:
                data = c.recv(1)
                if not data:
                    return
                gtime.sleep(delay)
                c.sendall(data)
            c.recv(1)  # until the client closes

    peer = start(serve)
    raw = gsocket.create_connection(("127.0.0.1", ls.getsockname()[1]), timeout=0.4)
    s = _green_client_context(pki).wrap_socket(raw, server_hostname="localhost")
    try:
        s.sendall(b"a")
        assert s.recv(1) == b"a"
        netpoll.sleep(0.5)  # a deadline the last call left has passed
        s.sendall(b"b")
        assert s.recv(1) == b"b"  # parks ~0.05 s under its own deadline
        with pytest.raises(socket.timeout):
            s.recv(1)  # nothing comes: the 0.4 s timeout ends it
        s.settimeout(None)
        s.sendall(b"c")
        assert s.recv(1) == b"c"  # the peer waits 0.6 s: no deadline left
    finally:
        s.close()
        peer.join(PEER)
        ls.close()
