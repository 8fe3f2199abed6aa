"""The load client: one single-threaded process driving many connections.

It never uses netpoll itself: it is a plain non-blocking-socket loop on
``select.epoll`` (``select.poll`` or :mod:`selectors` elsewhere), so it costs
the same whichever server it drives, and it is cheap enough not to be the
bottleneck.  It reports its own CPU use over the measured window (user +
system seconds / wall seconds; 100% means one CPU was saturated) so a reader
can tell.

Modes (see :func:`run`):

* ``pingpong``: C connections, each sending ``size`` bytes and waiting for
  the whole echo before sending again; counts messages and samples the
  per-message round-trip latency;
* ``connect``: W workers, each looping connect + one ``size``-byte echo +
  close; counts completed cycles, latency is the whole cycle;
* ``idle``: opens N connections (one echo each, so the server has accepted
  and is serving them), then samples the server's RSS: the bytes per idle
  connection are (RSS after - RSS before) / N;
* ``bulk``: one connection streaming ``total`` bytes to the server while
  reading the echo back; throughput is bytes echoed / seconds.

Run as ``python -m netpoll.bench.client`` with a JSON spec on stdin; the JSON
result is printed on stdout.  Every loop is bounded by a deadline (and
counts by a cap), so the client always stops by itself.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from netpoll.bench.procstat import (
    cpu_seconds,
    pin_to_cpu,
    raise_nofile_limit,
    rss_bytes,
    system_busy_seconds,
    thread_count,
)

#: Latency samples kept at most (decimated when full, so memory is bounded).
RESERVOIR = 1 << 17

#: Hard cap on the messages counted by one measurement.
MAX_MESSAGES = 500_000_000

EV_IN = 1
EV_OUT = 4
EV_ERR = 8 | 16  # POLLERR | POLLHUP (same values for epoll)


class BenchClientError(Exception):
    """A failure of the load that makes the measurement meaningless."""


class Poller:
    """Level-triggered readiness: epoll, poll or selectors, same small API."""

    def __init__(self) -> None:
        self._epoll: Any = None
        self._poll: Any = None
        self._sel: Any = None
        #: wait(timeout_seconds) -> [(fd, events)]
        self.wait: Callable[[float], list[tuple[int, int]]]
        if hasattr(select, "epoll"):
            self._epoll = select.epoll()
            self.wait = self._epoll.poll  # no Python-level wrapper on the hot path
        elif hasattr(select, "poll"):  # pragma: no cover - not Linux
            self._poll = select.poll()
            self.wait = self._wait_poll
        else:  # pragma: no cover - neither epoll nor poll
            import selectors

            self._sel = selectors.DefaultSelector()
            self.wait = self._wait_selectors

    def register(self, fd: int, events: int) -> None:
        """Watch ``fd`` for ``events`` (EV_IN / EV_OUT)."""
        if self._epoll is not None:
            self._epoll.register(fd, events)
        elif self._poll is not None:  # pragma: no cover
            self._poll.register(fd, events)
        else:  # pragma: no cover
            self._sel.register(fd, self._sel_events(events))

    def modify(self, fd: int, events: int) -> None:
        """Change the events watched on ``fd``."""
        if self._epoll is not None:
            self._epoll.modify(fd, events)
        elif self._poll is not None:  # pragma: no cover
            self._poll.modify(fd, events)
        else:  # pragma: no cover
            self._sel.modify(fd, self._sel_events(events))

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it)."""
        if self._epoll is not None:
            self._epoll.unregister(fd)
        elif self._poll is not None:  # pragma: no cover
            self._poll.unregister(fd)
        else:  # pragma: no cover
            self._sel.unregister(fd)

    @staticmethod
    def _sel_events(events: int) -> int:  # pragma: no cover - not Linux
        import selectors

        return (selectors.EVENT_READ if events & EV_IN else 0) | (
            selectors.EVENT_WRITE if events & EV_OUT else 0
        )

    def _wait_poll(self, timeout: float) -> list[tuple[int, int]]:  # pragma: no cover
        return self._poll.poll(timeout * 1000.0)  # type: ignore[no-any-return]

    def _wait_selectors(self, timeout: float) -> list[tuple[int, int]]:  # pragma: no cover
        import selectors

        out = []
        for key, mask in self._sel.select(timeout):
            ev = (EV_IN if mask & selectors.EVENT_READ else 0) | (
                EV_OUT if mask & selectors.EVENT_WRITE else 0
            )
            out.append((key.fd, ev))
        return out

    def close(self) -> None:
        """Release the OS poller."""
        for p in (self._epoll, self._sel):
            if p is not None:
                p.close()


class Samples:
    """A bounded sample of latencies, uniform over time.

    Every ``stride``-th value is kept; when the buffer fills, every other kept
    value is dropped and the stride doubles.
    """

    def __init__(self, capacity: int = RESERVOIR) -> None:
        self.capacity = capacity
        self.values: list[float] = []
        self.stride = 1
        self._skip = 0

    def add(self, value: float) -> None:
        """Offer one latency (seconds)."""
        self._skip += 1
        if self._skip < self.stride:
            return
        self._skip = 0
        self.values.append(value)
        if len(self.values) >= self.capacity:
            self.values = self.values[::2]
            self.stride *= 2

    def percentiles(self, *ps: float) -> list[float | None]:
        """The requested percentiles (0-100) in seconds, None when empty."""
        if not self.values:
            return [None for _ in ps]
        data = sorted(self.values)
        last = len(data) - 1
        return [data[min(last, round(p / 100.0 * last))] for p in ps]


class _Window:
    """CPU and time snapshots around the measured window."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.t0 = self.t1 = 0.0
        self.cpu0: float | None = None
        self.cpu1: float | None = None
        self.scpu0: float | None = None
        self.scpu1: float | None = None
        self.times0 = self.times1 = os.times()
        self.busy0: float | None = None
        self.busy1: float | None = None

    def start(self) -> None:
        self.busy0 = system_busy_seconds()
        self.cpu0 = time.process_time()
        self.times0 = os.times()
        self.scpu0 = cpu_seconds(self.server_pid) if self.server_pid else None
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.t1 = time.perf_counter()
        self.cpu1 = time.process_time()
        self.busy1 = system_busy_seconds()
        self.times1 = os.times()
        self.scpu1 = cpu_seconds(self.server_pid) if self.server_pid else None

    def report(self) -> dict[str, Any]:
        wall = max(self.t1 - self.t0, 1e-9)

        def pct(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else 100.0 * (b - a) / wall

        # The server's CPU time comes in clock ticks (10 ms): too coarse for
        # a window shorter than half a second.
        server = pct(self.scpu0, self.scpu1) if wall >= 0.5 else None
        client = pct(self.cpu0, self.cpu1)
        busy = pct(self.busy0, self.busy1) if wall >= 0.5 else None
        # Busy CPU not charged to the server or the client: other processes,
        # plus interrupt-time network work.  High values mean interference.
        other = None if busy is None or server is None or client is None else busy - server - client
        return {
            "wall": wall,
            "other_cpu_pct": None if other is None else max(0.0, other),
            "client_cpu_pct": client,
            "client_user_pct": pct(self.times0.user, self.times1.user),
            "client_sys_pct": pct(self.times0.system, self.times1.system),
            "server_cpu_pct": server,
        }


def _nonblocking_socket(nodelay: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def open_connections(
    addr: tuple[str, int],
    count: int,
    size: int,
    deadline: float,
    parallel: int = 256,
    nodelay: bool = True,
) -> list[socket.socket]:
    """Open ``count`` connections, each completing one ``size``-byte echo.

    (The echo is capped at 4 KiB, so it always fits the socket buffers.)

    At most ``parallel`` are in progress at once (so the listen backlog never
    overflows).  Raises :class:`BenchClientError` on refusal, EOF or when
    ``deadline`` (perf_counter time) passes.
    """
    poller = Poller()
    msg = b"x" * min(size, 4096)
    size = len(msg)
    buf = bytearray(65536)
    done: list[socket.socket] = []
    pending: dict[int, list[Any]] = {}  # fd -> [sock, phase, received]
    started = 0
    try:
        while len(done) < count:
            while started < count and len(pending) < parallel:
                s = _nonblocking_socket(nodelay)
                err = s.connect_ex(addr)
                if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                    s.close()
                    raise BenchClientError(f"connect {addr[0]}:{addr[1]}: {os.strerror(err)}")
                pending[s.fileno()] = [s, 0, 0]
                poller.register(s.fileno(), EV_OUT)
                started += 1
            if time.perf_counter() > deadline:
                raise BenchClientError(
                    f"timed out opening connections ({len(done)} of {count} open)"
                )
            for fd, _ev in poller.wait(0.1):
                st = pending[fd]
                s = st[0]
                if st[1] == 0:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise BenchClientError(f"connect: {os.strerror(err)}")
                    s.send(msg)
                    st[1] = 1
                    poller.modify(fd, EV_IN)
                    continue
                n = s.recv_into(buf)
                if n == 0:
                    raise BenchClientError("server closed a connection while opening")
                st[2] += n
                if st[2] >= size:
                    poller.unregister(fd)
                    del pending[fd]
                    done.append(s)
    except BaseException:
        for s in done:
            s.close()
        for st in pending.values():
            st[0].close()
        raise
    finally:
        poller.close()
    return done


def run_pingpong(spec: dict[str, Any]) -> dict[str, Any]:
    """C connections in ping-pong; messages/s and round-trip latency."""
    addr = (spec["host"], spec["port"])
    size: int = spec["size"]
    conns: int = spec["conns"]
    socks = open_connections(addr, conns, size, time.perf_counter() + spec["setup_timeout"])
    poller = Poller()
    msg = b"x" * size
    buf = bytearray(max(size, 65536))
    # Per-connection state in lists indexed by fd, bound methods looked up
    # once: the loop below is the client's whole per-message cost.
    nfd = max(s.fileno() for s in socks) + 1
    recv_into: list[Any] = [None] * nfd
    send: list[Any] = [None] * nfd
    got = [0] * nfd
    sent_at = [0.0] * nfd
    for s in socks:
        recv_into[s.fileno()] = s.recv_into
        send[s.fileno()] = s.send
    samples = Samples()
    values = samples.values
    stride = 1
    skip = 0
    cap = samples.capacity
    window = _Window(spec.get("server_pid"))
    perf = time.perf_counter
    wait = poller.wait
    count = 0
    measuring = False
    short_sends = 0
    pending: dict[int, memoryview] = {}
    try:
        for s in socks:
            poller.register(s.fileno(), EV_IN)
        now = perf()
        warm_end = now + spec["warmup"]
        end = warm_end + spec["seconds"]
        for s in socks:
            fd = s.fileno()
            sent_at[fd] = perf()
            k = s.send(msg)
            if k != size:
                pending[fd] = memoryview(msg)[k:]
                poller.modify(fd, EV_IN | EV_OUT)
        phase_end = warm_end
        while True:
            events = wait(0.05)
            now = perf()
            if now >= phase_end:
                if measuring:
                    window.stop()
                    break
                measuring = True
                count = 0
                window.start()
                phase_end = end
            for fd, ev in events:
                if ev & EV_OUT:  # rare: the rest of a message that did not fit
                    rest = pending[fd]
                    rest = rest[send[fd](rest) :]
                    if rest:
                        pending[fd] = rest
                    else:
                        del pending[fd]
                        poller.modify(fd, EV_IN)
                    if not ev & (EV_IN | EV_ERR):
                        continue
                n = recv_into[fd](buf)
                if n != size:  # a partial echo (or EOF); n == size is a whole one
                    if n == 0:
                        raise BenchClientError("server closed a connection during ping-pong")
                    g = got[fd] + n
                    if g < size:
                        got[fd] = g
                        continue
                    got[fd] = 0
                t = perf()
                if measuring:
                    count += 1
                    skip += 1
                    if skip >= stride:
                        skip = 0
                        values.append(t - sent_at[fd])
                        if len(values) >= cap:
                            values[:] = values[::2]
                            stride *= 2
                sent_at[fd] = t
                k = send[fd](msg)
                if k != size:  # never for small messages; stay correct for big ones
                    short_sends += 1
                    pending[fd] = memoryview(msg)[k:]
                    poller.modify(fd, EV_IN | EV_OUT)
            if count >= MAX_MESSAGES:
                window.stop()
                break
    finally:
        poller.close()
        for s in socks:
            s.close()
    return _rate_report(window, samples, count, "msg/s", short_sends=short_sends)


def _rate_report(window: Any, samples: Any, count: int, unit: str, **extra: Any) -> dict[str, Any]:
    """The measurement window's report plus rate, latency percentiles and ``extra``."""
    p50, p99 = samples.percentiles(50, 99)
    out: dict[str, Any] = window.report()
    out.update(
        {
            "count": count,
            "rate": count / out["wall"],
            "unit": unit,
            "p50": p50,
            "p99": p99,
            "samples": len(samples.values),
            **extra,
        }
    )
    return out


def run_connect(spec: dict[str, Any]) -> dict[str, Any]:
    """W workers looping connect + one echo + close; cycles/s and cycle latency."""
    addr = (spec["host"], spec["port"])
    size: int = spec["size"]
    workers: int = spec["conns"]
    poller = Poller()
    msg = b"x" * size
    buf = bytearray(max(size, 65536))
    live: dict[int, list[Any]] = {}  # fd -> [sock, phase, received, t_start]
    samples = Samples()
    window = _Window(spec.get("server_pid"))
    perf = time.perf_counter
    count = 0
    errors: dict[str, int] = {}
    measuring = False

    def start_one() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        t = perf()
        err = s.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            s.close()
            name = errno.errorcode.get(err, str(err))
            errors[name] = errors.get(name, 0) + 1
            return
        live[s.fileno()] = [s, 0, 0, t]
        poller.register(s.fileno(), EV_OUT)

    def fail(fd: int, what: str) -> None:
        st = live.pop(fd)
        poller.unregister(fd)
        st[0].close()
        errors[what] = errors.get(what, 0) + 1

    try:
        now = perf()
        warm_end = now + spec["warmup"]
        end = warm_end + spec["seconds"]
        phase_end = warm_end
        for _ in range(workers):
            start_one()
        while True:
            events = poller.wait(0.05)
            now = perf()
            if now >= phase_end:
                if measuring:
                    window.stop()
                    break
                measuring = True
                count = 0
                window.start()
                phase_end = end
            for fd, _ev in events:
                st = live[fd]
                s = st[0]
                if st[1] == 0:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(fd, errno.errorcode.get(err, str(err)))
                        continue
                    s.send(msg)
                    st[1] = 1
                    poller.modify(fd, EV_IN)
                    continue
                try:
                    n = s.recv_into(buf)
                except OSError as exc:
                    fail(fd, errno.errorcode.get(exc.errno or 0, "recv"))
                    continue
                if n == 0:
                    fail(fd, "EOF")
                    continue
                st[2] += n
                if st[2] < size:
                    continue
                del live[fd]
                poller.unregister(fd)
                s.close()
                if measuring:
                    count += 1
                    samples.add(perf() - st[3])
            while len(live) < workers and count < MAX_MESSAGES:
                before = len(live)
                start_one()
                if len(live) == before:  # connect failed at once: do not spin
                    time.sleep(0.001)
                    break
            if sum(errors.values()) > 1000 + count:
                raise BenchClientError(f"too many connection errors: {errors}")
    finally:
        poller.close()
        for st in live.values():
            st[0].close()
    return _rate_report(window, samples, count, "conn/s", errors=errors)


def run_idle(spec: dict[str, Any]) -> dict[str, Any]:
    """Open N idle connections; the server's RSS growth per connection."""
    addr = (spec["host"], spec["port"])
    size: int = spec["size"]
    n: int = spec["conns"]
    pid: int | None = spec.get("server_pid")
    # Warm the server up: one connection and echo, so one-time costs (the
    # poller thread, lazily imported code) are not charged to the idle conns.
    for s in open_connections(addr, 1, size, time.perf_counter() + spec["setup_timeout"]):
        s.close()
    time.sleep(0.2)
    before = rss_bytes(pid) if pid else None
    t0 = time.perf_counter()
    socks = open_connections(addr, n, size, t0 + spec["setup_timeout"])
    t1 = time.perf_counter()
    try:
        time.sleep(spec["hold"])
        after = rss_bytes(pid) if pid else None
        threads = thread_count(pid) if pid else None
        answered, echo_lat = _echo_each(socks, size, t1 + spec["setup_timeout"])
    finally:
        for s in socks:
            s.close()
    per_conn = None if before is None or after is None else (after - before) / n
    echo_lat.sort()
    return {
        "count": n,
        "rate": n / max(t1 - t0, 1e-9),
        "unit": "conn/s",
        "rss_before": before,
        "rss_after": after,
        "bytes_per_conn": per_conn,
        "server_threads": threads,
        "answered": answered,
        "complete": answered == n,
        "echo_p99": echo_lat[int(len(echo_lat) * 0.99)] if echo_lat else None,
        "echo_max": echo_lat[-1] if echo_lat else None,
        "wall": t1 - t0,
        "client_cpu_pct": None,
        "server_cpu_pct": None,
        "p50": None,
        "p99": None,
    }


#: How long one idle connection may take to answer its echo afterwards.
IDLE_ECHO_TIMEOUT = 2.0


def _echo_each(socks: list[socket.socket], size: int, deadline: float) -> tuple[int, list[float]]:
    """One echo on every idle connection, one after another; (answered, latencies).

    Stops at the first connection that does not answer within
    :data:`IDLE_ECHO_TIMEOUT`, or at ``deadline`` (perf_counter time).
    """
    msg = b"y" * min(size, 4096)
    buf = bytearray(len(msg))
    lat: list[float] = []
    for s in socks:
        if time.perf_counter() > deadline:
            break
        t = time.perf_counter()
        try:
            s.settimeout(IDLE_ECHO_TIMEOUT)
            s.sendall(msg)
            got = 0
            view = memoryview(buf)
            while got < len(msg):
                k = s.recv_into(view[got:])
                if not k:
                    return len(lat), lat
                got += k
        except OSError:
            return len(lat), lat
        lat.append(time.perf_counter() - t)
    return len(lat), lat


def run_bulk(spec: dict[str, Any]) -> dict[str, Any]:
    """Stream ``total`` bytes through one connection and read the echo back."""
    addr = (spec["host"], spec["port"])
    total: int = spec["total"]
    chunk = 256 * 1024
    out_buf = memoryview(bytearray(b"x" * chunk))
    in_buf = bytearray(1024 * 1024)
    (s,) = open_connections(addr, 1, 64, time.perf_counter() + spec["setup_timeout"])
    poller = Poller()
    window = _Window(spec.get("server_pid"))
    sent = received = 0
    complete = False
    try:
        fd = s.fileno()
        poller.register(fd, EV_IN | EV_OUT)
        window.start()
        deadline = window.t0 + spec["seconds"]
        writing = True
        while received < total:
            if time.perf_counter() > deadline:
                break
            for _fd, ev in poller.wait(0.05):
                if ev & EV_OUT and writing:
                    try:
                        sent += s.send(out_buf[: min(chunk, total - sent)])
                    except BlockingIOError:
                        pass
                    if sent >= total:
                        writing = False
                        poller.modify(fd, EV_IN)
                if ev & (EV_IN | EV_ERR):
                    try:
                        n = s.recv_into(in_buf)
                    except BlockingIOError:
                        continue
                    if n == 0:
                        raise BenchClientError("server closed the bulk connection early")
                    received += n
        else:
            complete = True
        window.stop()
    finally:
        poller.close()
        s.close()
    out = window.report()
    out.update(
        {
            "count": received,
            "rate": received / out["wall"],
            "unit": "B/s",
            "complete": complete,
            "p50": None,
            "p99": None,
        }
    )
    return out


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "pingpong": run_pingpong,
    "connect": run_connect,
    "idle": run_idle,
    "bulk": run_bulk,
}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by ``spec``; returns the result dict.

    ``spec`` keys: ``mode`` (one of :data:`MODES`), ``host``, ``port``,
    ``server_pid`` (for CPU and RSS readings; optional), ``conns``, ``size``,
    ``seconds``, ``warmup``, ``setup_timeout``, ``hold`` (idle), ``total``
    (bulk), ``cpu`` (pin to this CPU; optional).
    """
    raise_nofile_limit()
    pinned = pin_to_cpu(spec.get("cpu"))
    result = MODES[spec["mode"]](spec)
    result["client_pinned"] = pinned
    return result


def main() -> int:
    """Entry point of ``python -m netpoll.bench.client``: JSON spec in, JSON out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        spec = json.loads(sys.stdin.read())
        result = run(spec)
    except (BenchClientError, OSError) as exc:
        msg = str(exc) if isinstance(exc, BenchClientError) else f"{type(exc).__name__}: {exc}"
        print(json.dumps({"error": msg}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
