"""Stress: many workers at once on shared connections, every backend, with and without chaos.

Run by its own tox env (``tox -e stress``, part of the default ``tox`` run and
of CI) or by naming the directory: ``pytest tests/stress``.  The normal test
run leaves this directory out (``tests/conftest.py``).

Each test runs on one backend (the ``backend`` fixture: every backend
available here) with one kind of worker, with or without faults from
``Faults.chaos`` (plus spurious wakeups) on the stressed descriptors, and
does, at once, on three connection pairs:

* several writers on one side and several readers on the other side of
  the *same* conn, a single reader and a single writer opposite them, and a
  thread per side moving read and write deadlines back and forth (past
  deadlines included) while operations are parked;
* then ``close_write`` on both sides while writes are still in flight,
  every reader drains to EOF, and several workers ``close`` each conn at
  the same moment;
* and on a fourth pair, readers and writers parked on a conn that another
  worker closes: each of them must wake with ErrClosed.

Asserted: no hang (every operation returns or raises within its deadline
plus a generous bound, and every worker ends); no crash of any thread
(``threading.excepthook``), and the runtime still serves a dial, a read and
a timeout afterwards; every byte a write reported written (its return value,
or ``written`` on the error) reaches the peer exactly once and in order (the
bytes read are an interleaving, in each writer's order, of exactly the
written parts; with several readers, their chunks put together in some
order are exactly the written stream); and descriptors, threads and
pollDescs back at their baseline.

Workers are pluggable: :data:`SPAWNERS` maps a kind to a factory of
:class:`Spawner`.  Goroutines (``netpoll.go``) become one more entry: a
Spawner that starts ``fn`` as a G and can wait for it; every test then runs
with them too.

Knobs: ``NETPOLL_STRESS_SECONDS`` (the busy phase of each test, default 2),
``NETPOLL_STRESS_BUDGET`` (the whole module; tests past it fail, default
150 s).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

import netpoll
from netpoll.core.g import current_g
from netpoll.core.park import Note
from netpoll.core.procs import background_m, live_goroutines, thread_poll_m
from netpoll.core.runtime import runtime
from netpoll.testing import Faults, Status
from tests.helpers.net import open_fds

SECONDS = float(os.environ.get("NETPOLL_STRESS_SECONDS", "2.0"))
BUDGET = float(os.environ.get("NETPOLL_STRESS_BUDGET", "150"))
_MODULE_START = time.monotonic()

#: Deadlines the movers set lie in [now - PAST, now + HORIZON].
HORIZON = 0.2
PAST = 0.05
#: The movers sleep up to this long between two changes.
MOVE_PERIOD = 0.05
#: The drain phase's read deadline, from its start.
DRAIN = 5.0
#: Slack on top of any deadline before an operation counts as hung: generous,
#: because a loaded 2-core CI machine and chaos delays stretch everything.
SLACK = 3.0

PAIRS = 3
WRITERS = 3  # on one conn, all writing at once
READERS = 3  # on the same conn, all reading the peer's single writer
WRITER_BUDGET = 2 << 20  # bytes of big writes per writer; small ones after
STREAM = 8 << 20  # the single writer's stream (it stops when all is sent)
BUFFER = 32 << 10  # SO_SNDBUF / SO_RCVBUF of the stressed conns


# -- workers ------------------------------------------------------------------------


class Spawner(Protocol):
    """Starts workers of one kind and waits for them."""

    def go(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` in a new worker named ``name``."""

    def join(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` s for every worker; the names still running."""


class ThreadSpawner:
    """Workers are plain threads (netpoll's thread-as-G)."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def go(self, name: str, fn: Callable[[], None]) -> None:
        """Start ``fn`` in a daemon thread."""
        t = threading.Thread(target=fn, name=f"stress-{name}", daemon=True)
        self._threads.append(t)
        t.start()

    def join(self, timeout: float) -> list[str]:
        """Join every thread within ``timeout`` seconds in all."""
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    def stacks(self) -> str:
        """The stacks of the threads still running (for a hang report)."""
        frames = sys._current_frames()
        out = []
        for t in self._threads:
            frame = frames.get(t.ident or -1)
            if t.is_alive() and frame is not None:
                out.append(f"--- {t.name}\n" + "".join(traceback.format_stack(frame)))
        return "\n".join(out)


class GoroutineSpawner:
    """Workers are goroutines on a background M (``netpoll.go`` from this thread)."""

    def __init__(self) -> None:
        self._gs: list[tuple[str, Any]] = []

    def go(self, name: str, fn: Callable[[], None]) -> None:
        """Start ``fn`` as a goroutine."""
        self._gs.append((f"stress-{name}", netpoll.go(fn)))

    def join(self, timeout: float) -> list[str]:
        """Join every goroutine within ``timeout`` seconds in all."""
        end = time.monotonic() + timeout
        for _, g in self._gs:
            g.join(max(0.0, end - time.monotonic()))
        return [name for name, g in self._gs if not g.done()]

    def stacks(self) -> str:
        """The stacks of the goroutines still running (for a hang report)."""
        out = []
        for name, g in self._gs:
            frame = getattr(g, "gr_frame", None)
            if not g.done() and frame is not None:
                out.append(f"--- {name}\n" + "".join(traceback.format_stack(frame)))
        return "\n".join(out)


class MixedSpawner:
    """Workers alternate between threads and goroutines, so both kinds share conns."""

    def __init__(self) -> None:
        self._kinds: list[Spawner] = [ThreadSpawner(), GoroutineSpawner()]
        self._n = 0

    def go(self, name: str, fn: Callable[[], None]) -> None:
        """Start ``fn`` as the next kind in turn."""
        self._n += 1
        self._kinds[self._n % 2].go(name, fn)

    def join(self, timeout: float) -> list[str]:
        """Join both kinds within ``timeout`` seconds in all."""
        end = time.monotonic() + timeout
        left: list[str] = []
        for k in self._kinds:
            left += k.join(max(0.0, end - time.monotonic()))
        return left

    def stacks(self) -> str:
        """Both kinds' stacks."""
        return "\n".join(_stacks(k) for k in self._kinds)


#: Worker kinds every test runs with.
SPAWNERS: dict[str, Callable[[], Spawner]] = {
    "thread": ThreadSpawner,
    "goroutine": GoroutineSpawner,
    "mixed": MixedSpawner,
}


def _stacks(spawner: Spawner) -> str:
    fn = getattr(spawner, "stacks", None)
    return fn() if fn is not None else ""


# -- bookkeeping ----------------------------------------------------------------------


@dataclass
class Run:
    """What every worker of one test reports into."""

    chaos: bool
    errors: list[str] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)
    ops: int = 0
    #: Operations that ended with a timeout / writes that failed part way.
    timeouts: int = 0
    partial_writes: int = 0
    drain_start: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, text: str) -> None:
        """Record an unexpected outcome."""
        with self.lock:
            self.errors.append(text)

    def timed(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one operation and check it did not outlive its deadline + SLACK.

        During the busy phase deadlines are never further than HORIZON
        (+ a mover's period) away; from the drain on, at most DRAIN after
        its start.
        """
        t0 = time.time()
        try:
            return fn()
        except OSError as exc:
            with self.lock:
                self.timeouts += isinstance(exc, TimeoutError)
                self.partial_writes += _written(exc) > 0
            raise
        finally:
            t1 = time.time()
            drain = self.drain_start
            limit = max(t0 + HORIZON + MOVE_PERIOD, drain + DRAIN if drain else 0.0) + SLACK
            with self.lock:
                self.ops += 1
                if t1 > limit:
                    self.slow.append(
                        f"{what} took {t1 - t0:.2f}s (over its bound by {t1 - limit:.2f}s)"
                    )


def _written(exc: BaseException) -> int:
    return int(getattr(exc, "written", 0) or 0)


def is_interleaving(
    stream: bytes | bytearray, seqs: list[list[bytes]], names: tuple[str, str] = ("read", "written")
) -> str | None:
    """None if ``stream`` is exactly the parts of ``seqs`` interleaved, each in its order.

    Otherwise what is wrong; ``names`` say what the stream and the parts are.
    A depth-first search over (position, next part
    of each sequence): at a position only the next part of some sequence can
    start, so it rarely branches; remembered states keep it linear.
    """
    total = sum(len(part) for seq in seqs for part in seq)
    if total != len(stream):
        return f"{len(stream)} bytes {names[0]}, {total} bytes {names[1]}"
    view = memoryview(stream)
    stack = [(0, (0,) * len(seqs))]
    seen: set[tuple[int, tuple[int, ...]]] = set()
    furthest = 0
    while stack:
        pos, idx = stack.pop()
        if pos == len(stream):
            return None
        if (pos, idx) in seen:
            continue
        seen.add((pos, idx))
        furthest = max(furthest, pos)
        for k, seq in enumerate(seqs):
            i = idx[k]
            if i < len(seq):
                part = seq[i]
                if view[pos : pos + len(part)] == part:
                    stack.append((pos + len(part), (*idx[:k], i + 1, *idx[k + 1 :])))
    return (
        f"the bytes {names[0]} are no interleaving of those {names[1]}: "
        f"lost or reordered after byte {furthest}"
    )


# -- one stressed pair ------------------------------------------------------------------


class PairStress:
    """``a`` has WRITERS writers and READERS readers; ``b`` one reader and one writer."""

    def __init__(self, run: Run, tag: str, a: netpoll.Conn, b: netpoll.Conn, seed: str) -> None:
        self.run, self.tag, self.a, self.b = run, tag, a, b
        self.seed = seed
        self.parts: list[list[bytes]] = [[] for _ in range(WRITERS)]  # a -> b, per writer
        self.received = bytearray()  # what b's reader got
        self.stream = random.Random(f"{seed}:stream").randbytes(STREAM)  # b -> a
        self.sent = 0  # of self.stream, reported written by b's writer
        self.chunks: list[list[bytes]] = [[] for _ in range(READERS)]  # per reader of a
        # A Note, not a threading.Event: a goroutine worker waiting on it
        # must park, not block its M.
        self.stop_writing = Note()
        self.moving = threading.Lock()
        self.stop_moving = False

    # The errors an operation may end with: timeouts always, EPIPE once the
    # conn was shut down for writing, and under chaos the injected resets.
    def _expected(self, exc: BaseException, writing: bool) -> bool:
        if isinstance(exc, TimeoutError):
            return True
        if writing and isinstance(exc, BrokenPipeError):
            return self.stop_writing.is_set() or self.run.chaos
        return self.run.chaos and isinstance(exc, ConnectionResetError)

    def start(self, spawn: Spawner) -> None:
        """Start every worker of the busy phase."""
        for i in range(WRITERS):
            spawn.go(f"{self.tag}-a-writer{i}", lambda i=i: self._guard(self._writer, i))
        for j in range(READERS):
            spawn.go(f"{self.tag}-a-reader{j}", lambda j=j: self._guard(self._reader_a, j))
        spawn.go(f"{self.tag}-b-reader", lambda: self._guard(self._reader_b))
        spawn.go(f"{self.tag}-b-writer", lambda: self._guard(self._writer_b))
        for side, conn in (("a", self.a), ("b", self.b)):
            spawn.go(f"{self.tag}-{side}-mover", lambda c=conn: self._guard(self._mover, c))

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            self.run.error(f"{threading.current_thread().name}: {exc!r}")

    def _writer(self, i: int) -> None:
        rng = random.Random(f"{self.seed}:writer{i}")
        budget = WRITER_BUDGET
        while not self.stop_writing.is_set():
            if budget > 0:
                size = rng.choice(
                    (rng.randint(1, 64), rng.randint(64, 4096), rng.randint(4096, 1 << 18))
                )
                budget -= size
            else:
                size = rng.randint(1, 256)
                netpoll.sleep(0.002)
            msg = rng.randbytes(size)
            try:
                n = self.run.timed("a.write", lambda m=msg: self.a.write(m))
                if n != len(msg):
                    self.run.error(f"write returned {n} for {len(msg)} bytes")
            except OSError as exc:
                n = _written(exc)
                if not self._expected(exc, writing=True):
                    self.run.error(f"a.write: {exc!r}")
                    return
                if isinstance(exc, BrokenPipeError) and self.stop_writing.is_set():
                    if n:
                        self.parts[i].append(msg[:n])
                    return
                netpoll.sleep(0.001)  # a past deadline fails at once: do not spin
            if n:
                self.parts[i].append(msg[:n])

    def _writer_b(self) -> None:
        rng = random.Random(f"{self.seed}:writer-b")
        while not self.stop_writing.is_set() and self.sent < STREAM:
            n = min(rng.randint(1, 1 << 16), STREAM - self.sent)
            piece = memoryview(self.stream)[self.sent : self.sent + n]
            try:
                w = self.run.timed("b.write", lambda p=piece: self.b.write(p))
            except OSError as exc:
                w = _written(exc)
                if not self._expected(exc, writing=True):
                    self.run.error(f"b.write: {exc!r}")
                    return
                netpoll.sleep(0.001)
            self.sent += w
        self.stop_writing.wait(current_g())

    def _reader_b(self) -> None:
        rng = random.Random(f"{self.seed}:reader-b")
        buf = bytearray(1 << 16)
        view = memoryview(buf)
        while True:
            try:
                n = self.run.timed("b.read", lambda: self.b.readinto(buf))
            except OSError as exc:
                if not self._expected(exc, writing=False):
                    self.run.error(f"b.read: {exc!r}")
                    return
                netpoll.sleep(0.001)
                continue
            if n == 0:
                return
            self.received += view[:n]
            if rng.random() < 0.05:
                netpoll.sleep(rng.uniform(0, 0.02))  # a slow reader: writers park, time out

    def _reader_a(self, j: int) -> None:
        rng = random.Random(f"{self.seed}:reader{j}")
        mine = self.chunks[j]
        while True:
            buf = bytearray(rng.randint(1, 1 << 14))
            try:
                n = self.run.timed("a.read", lambda b=buf: self.a.readinto(b))
            except OSError as exc:
                if not self._expected(exc, writing=False):
                    self.run.error(f"a.read: {exc!r}")
                    return
                netpoll.sleep(0.001)
                continue
            if n == 0:
                return
            mine.append(bytes(buf[:n]))
            if rng.random() < 0.02:
                netpoll.sleep(rng.uniform(0, 0.02))  # slow readers: the writer parks

    def _mover(self, conn: netpoll.Conn) -> None:
        rng = random.Random(f"{self.seed}:mover{conn.fileno()}")
        setters = (conn.set_deadline, conn.set_read_deadline, conn.set_write_deadline)
        while True:
            with self.moving:
                if self.stop_moving:
                    return
                t = time.time() + rng.uniform(-PAST, HORIZON)
                setter = rng.choice(setters)
                self.run.timed("set_deadline", lambda s=setter, t=t: s(t))
            netpoll.sleep(rng.uniform(0, MOVE_PERIOD))

    def drain(self, spawn: Spawner, drain_start: float) -> None:
        """Stop moving deadlines; shut both sides for writing while writes are in flight."""
        with self.moving:
            self.stop_moving = True
            for conn in (self.a, self.b):
                conn.set_deadline(drain_start + DRAIN)
        self.stop_writing.wakeup()
        for name, conn in (("a", self.a), ("b", self.b)):
            assert isinstance(conn, netpoll.TCPConn)
            spawn.go(f"{self.tag}-{name}-close-write", lambda c=conn: self._guard(c.close_write))

    def close_all(self, spawn: Spawner) -> None:
        """Several workers close each conn at once; then every operation says closed."""
        for k in range(3):
            for name, conn in (("a", self.a), ("b", self.b)):
                spawn.go(f"{self.tag}-{name}-close{k}", lambda c=conn: self._guard(c.close))

    def check(self) -> list[str]:
        """The byte accounting of both directions."""
        problems = []
        bad = is_interleaving(self.received, self.parts)
        if bad:
            problems.append(f"{self.tag} a->b ({WRITERS} writers): {bad}")
        written = memoryview(self.stream)[: self.sent].tobytes()
        bad = is_interleaving(written, self.chunks, ("written", "read"))
        if bad:
            problems.append(f"{self.tag} b->a ({READERS} readers): {bad}")
        for conn in (self.a, self.b):
            if not conn.closed:
                problems.append(f"{self.tag}: {conn!r} is not closed")
            with pytest.raises(netpoll.ErrClosed):
                conn.write(b"x")
        return problems


class CloseWakes:
    """Readers and writers parked on ``x`` (its peer ``y`` never reads nor writes)."""

    def __init__(self, run: Run, x: netpoll.Conn, y: netpoll.Conn) -> None:
        self.run, self.x, self.y = run, x, y
        self.closed_at: float | None = None
        self.ended: dict[str, tuple[float, str]] = {}
        self.lock = threading.Lock()

    def start(self, spawn: Spawner) -> None:
        """Park three readers and two writers on ``x``; a mover keeps moving its deadline."""
        for k in range(3):
            spawn.go(f"parked-reader{k}", lambda k=k: self._until_closed(f"reader{k}", self._read))
        for k in range(2):
            spawn.go(f"parked-writer{k}", lambda k=k: self._until_closed(f"writer{k}", self._write))
        spawn.go("parked-mover", self._mover)

    def _read(self) -> None:
        self.x.read(1024)

    def _write(self) -> None:
        self.x.write(b"w" * (1 << 20))  # the peer never reads: fills up and parks

    def _until_closed(self, name: str, op: Callable[[], None]) -> None:
        outcome = "ended without ErrClosed"
        try:
            while True:
                try:
                    op()
                except TimeoutError:
                    continue  # the mover's deadline; park again
                except (ConnectionResetError, BrokenPipeError):
                    if not self.run.chaos:  # injected by chaos; real ones are failures
                        raise
        except netpoll.ErrClosed as exc:
            outcome = "ErrClosed" if _written(exc) >= 0 else "bad written"
        except BaseException as exc:
            outcome = repr(exc)
        with self.lock:
            self.ended[name] = (time.time(), outcome)

    def _mover(self) -> None:
        rng = random.Random("parked-mover")
        while True:
            choice = rng.random()
            t = None if choice < 0.3 else time.time() + rng.uniform(0.05, 0.4)
            try:
                self.x.set_deadline(t)
            except netpoll.ErrClosed:
                return
            netpoll.sleep(rng.uniform(0, MOVE_PERIOD))

    def close(self, spawn: Spawner) -> None:
        """Close ``x`` from two workers at once."""
        self.closed_at = time.time()
        for k in range(2):
            spawn.go(f"parked-closer{k}", self.x.close)

    def check(self) -> list[str]:
        """Every parked operation woke with ErrClosed, within SLACK of the close."""
        assert self.closed_at is not None
        problems = []
        if len(self.ended) != 5:
            problems.append(f"parked ops that never ended: {5 - len(self.ended)}")
        for name, (t, outcome) in sorted(self.ended.items()):
            if outcome != "ErrClosed":
                problems.append(f"parked {name}: {outcome}")
            if t > self.closed_at + SLACK:
                problems.append(f"parked {name} woke {t - self.closed_at:.2f}s after close")
        self.y.close()
        return problems


# -- fixtures -------------------------------------------------------------------------------


def _user_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith("netpoll-")}


@pytest.fixture
def crashes() -> Iterator[list[str]]:
    """Exceptions that ended any thread during the test."""
    seen: list[str] = []
    prev = threading.excepthook

    def hook(args: Any) -> None:
        name = args.thread.name if args.thread is not None else "?"
        seen.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")
        prev(args)

    threading.excepthook = hook
    try:
        yield seen
    finally:
        threading.excepthook = prev


@pytest.fixture(autouse=True)
def budget() -> None:
    """Keep the module within NETPOLL_STRESS_BUDGET seconds in all."""
    spent = time.monotonic() - _MODULE_START
    if spent > BUDGET:
        pytest.fail(f"stress budget of {BUDGET:.0f}s used up ({spent:.0f}s) before this test")


def _pair(ln: netpoll.Listener) -> tuple[netpoll.Conn, netpoll.Conn]:
    c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
    return c, ln.accept()


def _runtime_alive() -> list[str]:
    """A dial, a round trip and a timeout, each within its bound: the runtime works."""
    problems = []
    t0 = time.monotonic()
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        c, s = _pair(ln)
        with c, s:
            s.set_deadline(time.time() + 2)
            c.write(b"!")
            if s.read(1) != b"!":
                problems.append("round trip after the stress returned wrong data")
            s.set_read_deadline(time.time() + 0.05)
            try:
                s.read(1)
                problems.append("a read past its deadline returned")
            except TimeoutError:
                pass
    if time.monotonic() - t0 > 2 + SLACK:
        problems.append(f"the runtime took {time.monotonic() - t0:.2f}s for a round trip")
    return problems


# -- the test -------------------------------------------------------------------------------------


@pytest.mark.timeout(60 + 3 * SECONDS)
@pytest.mark.parametrize("worker", sorted(SPAWNERS))
@pytest.mark.parametrize("chaos", [False, True], ids=["plain", "chaos"])
def test_shared_conns_under_stress(
    backend: str, worker: str, chaos: bool, crashes: list[str]
) -> None:
    # The Ms that live for good: their fds and threads are not part of the baseline.
    background_m()
    thread_poll_m()
    fds0, threads0, pds0 = open_fds(), _user_threads(), runtime.cache.live
    gs0 = set(live_goroutines())
    run = Run(chaos=chaos)
    spawn = SPAWNERS[worker]()
    seed = f"{backend}-{worker}-{chaos}"

    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        pairs = []
        for i in range(PAIRS):
            c, s = _pair(ln)
            for conn in (c, s):  # small buffers: writes park, and time out part way
                conn.set_write_buffer(BUFFER)
                conn.set_read_buffer(BUFFER)
            a, b = (c, s) if i % 2 == 0 else (s, c)  # writers on the dialed or accepted side
            pairs.append(PairStress(run, f"pair{i}", a, b, f"{seed}-{i}"))
        x, y = _pair(ln)
    parked = CloseWakes(run, x, y)
    stressed = {conn.fileno() for p in pairs for conn in (p.a, p.b)} | {x.fileno(), y.fileno()}

    def ours(st: Status) -> bool:
        return st.kind == "netpoll" or st.fd in stressed

    faults = Faults()
    with faults:
        if chaos:
            faults.chaos(seed, 0.05, kinds=("read", "write", "netpoll"), where=ours)
            faults.spurious_wakeups(0.05, seed=1, where=ours)
        for p in pairs:
            p.start(spawn)
        parked.start(spawn)

        time.sleep(SECONDS / 2)
        parked.close(spawn)
        time.sleep(SECONDS / 2)

        run.drain_start = time.time()
        for p in pairs:
            p.drain(spawn, run.drain_start)
        stuck = spawn.join(DRAIN + SLACK)
        assert not stuck, f"workers hung: {stuck}\n{_stacks(spawn)}"

        for p in pairs:
            p.close_all(spawn)
        stuck = spawn.join(SLACK)
        assert not stuck, f"close hung: {stuck}\n{_stacks(spawn)}"

    problems = list(run.errors) + run.slow
    for p in pairs:
        problems += p.check()
    problems += parked.check()
    problems += [f"thread crashed: {c}" for c in crashes]
    problems += _runtime_alive()
    assert not problems, "\n".join(problems[:40])
    moved = [(len(p.received), p.sent) for p in pairs]
    print(f"ops={run.ops} timeouts={run.timeouts} partial={run.partial_writes} bytes={moved}")
    # The stress really stressed: many operations, deadlines that fired on
    # parked and partial writes, and data through every pair both ways.
    assert run.ops > 1000, f"only {run.ops} operations ran"
    assert run.timeouts > 10 and run.partial_writes > 0, (run.timeouts, run.partial_writes)
    assert all(ab > 0 and ba > 0 for ab, ba in moved), moved
    if chaos:
        assert faults.log, "chaos injected nothing"

    # Back to the baseline (closes finish in the background for a moment).
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        gs = [g for g in live_goroutines() if g not in gs0]
        leaked = (open_fds() - fds0, _user_threads() - threads0, runtime.cache.live - pds0, gs)
        if not any(leaked):
            break
        time.sleep(0.02)
    fds, threads, pds, gs = leaked
    assert not fds, f"fds left open: {sorted(fds)} " + str(
        {
            fd: os.readlink(f"/proc/self/fd/{fd}")
            for fd in fds
            if os.path.exists(f"/proc/self/fd/{fd}")
        }
    )
    assert not threads, f"threads left running: {sorted(t.name for t in threads)}"
    assert pds == 0, f"pollDescs left live: {pds}"
    assert not gs, f"goroutines left running: {gs}"


def test_is_interleaving_can_fail() -> None:
    """The byte-accounting check itself: it accepts interleavings, rejects the rest."""
    seqs = [[b"abc", b"de"], [b"XY", b"Z"]]
    assert is_interleaving(b"abcXYdeZ", seqs) is None
    assert is_interleaving(b"XYZabcde", seqs) is None
    assert is_interleaving(b"deabcXYZ", seqs) is not None  # a writer's order broken
    assert is_interleaving(b"abcXYdZe", seqs) is not None  # a write's bytes split
    assert is_interleaving(b"abcXYde", seqs) == "7 bytes read, 8 bytes written"
    assert is_interleaving(b"aaa", [[b"a"], [b"a", b"a"]]) is None  # ambiguous: backtracks
