#!/usr/bin/env python3
"""Patched libraries beside gevent and threads: redis-py GETs and a requests fan-out.

Issue 17, item 6.  Two workloads, each run by the same client code under
each way a Python program makes a blocking library concurrent:

``redis``
    ``--workers`` (100) workers share one ``redis.Redis`` (its connection
    pool, up to one connection per worker) and loop ``GET`` of a 64-byte
    value against a local ``redis-server``.  Headline: GETs/s.
``http``
    fan-out: each round starts ``--workers`` (100) concurrent ``GET``s
    through one ``requests.Session`` (a pool of that many keep-alive
    connections) and waits for all of them, like a scatter-gather request
    handler; against a minimal asyncio HTTP server.  Headline: requests/s.

Client kinds (``--kinds``):

``netpoll``      ``netpoll.patch.library("redis")`` (or ``"requests"`` +
                 ``"urllib3"``), then the workers are goroutines on one M
                 (:func:`netpoll.run`, :func:`netpoll.go`)
``netpoll-all``  the same with ``netpoll.patch.all()`` called first
``gevent``       ``gevent.monkey.patch_all()`` first, workers are greenlets
``threads``      no patching, one OS thread per worker (the fan-out uses a
                 ``ThreadPoolExecutor`` of that many threads)

Method (as ``netpoll bench``, see benchmarks/README.md): every measurement is
a fresh client process; the server (``redis-server`` or the asyncio server,
one process for the whole run) is pinned to the first CPU and the clients to
the second (``--no-pin`` turns it off).  Kinds take turns within each round
(A B C D, A B C D, ...), ``--rounds`` rounds; the table shows medians, the
min-max, the client's CPU use, and ratios of netpoll's median to gevent's and
to threads'.  Each client warms up (``--warmup``) before its measured window
(``--seconds``).  Only ratios from one run mean anything; the machine's other
load during the run is printed (``other load``: busy CPU not ours).

Run from a checkout: ``python benchmarks/libs_bench.py`` (needs redis-server,
and ``pip install '.[bench]'``: redis, requests, gevent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KINDS = ("netpoll", "netpoll-all", "gevent", "threads")
WORKLOADS = ("redis", "http")
CHILD_TIMEOUT = 120.0
VALUE = b"v" * 64


# -- servers -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(cpu: int | None) -> Iterator[int]:
    """redis-server on 127.0.0.1 (no persistence), pinned to ``cpu``; yields its port."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="np-bench-redis-") as d:
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d]
        args += ["--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            _pin(proc.pid, cpu)
            _wait_port(port, proc)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def http_server(cpu: int | None) -> Iterator[int]:
    """The asyncio HTTP server of ``--serve-http`` in a child, pinned to ``cpu``."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve-http"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit(f"the HTTP server did not start: {line!r}")
        _pin(proc.pid, cpu)
        yield int(line.split()[1])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


def serve_http() -> None:
    """A minimal keep-alive HTTP/1.1 server: every request gets ``200 ok``."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.buf = self.buf[end + 4 :]  # GETs carry no body
                self.t.write(reply)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Proto, "127.0.0.1", 0, backlog=1024)
        print(f"PORT {srv.sockets[0].getsockname()[1]}", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        srv.close()

    asyncio.run(main())


# -- clients (run in a child process per measurement) ---------------------------------


def child(workload: str, kind: str, port: int, workers: int, warmup: float, seconds: float) -> None:
    """One measurement: patch as ``kind`` says, run the workload, print JSON."""
    if kind == "gevent":
        from gevent import monkey

        monkey.patch_all()
    elif kind == "netpoll-all":
        import netpoll.patch

        netpoll.patch.all()
    elif kind == "netpoll":
        import netpoll.patch

        for name in ("redis",) if workload == "redis" else ("requests", "urllib3"):
            netpoll.patch.library(name)

    spawn, join_all, sleep = _concurrency(kind)
    if workload == "redis":
        result = _redis_load(kind, port, workers, warmup, seconds, spawn, join_all, sleep)
    else:
        result = _http_fanout(kind, port, workers, warmup, seconds, spawn, join_all)
    print("RESULT " + json.dumps(result), flush=True)


def _cpu() -> float:
    """This process's CPU seconds (user + system, all threads)."""
    t = os.times()
    return t.user + t.system


Spawn = Callable[[Callable[[], None]], Any]
JoinAll = Callable[[list[Any]], None]


def _concurrency(kind: str) -> tuple[Spawn, JoinAll, Callable[[float], None]]:
    """How ``kind`` starts workers, waits for them, and sleeps."""
    if kind.startswith("netpoll"):
        import netpoll

        def join_np(gs: list[Any]) -> None:
            for g in gs:
                g.join()

        return netpoll.go, join_np, netpoll.sleep
    if kind == "gevent":
        import gevent

        return gevent.spawn, gevent.joinall, gevent.sleep
    import threading

    def spawn_thread(fn: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        return t

    def join_threads(ts: list[Any]) -> None:
        for t in ts:
            t.join()

    return spawn_thread, join_threads, time.sleep


def _in_main(kind: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` as the main goroutine (netpoll: :func:`netpoll.run`) or directly."""
    if kind.startswith("netpoll"):
        import netpoll

        result: dict[str, Any] = netpoll.run(fn)
        return result
    return fn()


def _redis_load(
    kind: str,
    port: int,
    workers: int,
    warmup: float,
    seconds: float,
    spawn: Spawn,
    join_all: JoinAll,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    import redis

    pool = redis.ConnectionPool(host="127.0.0.1", port=port, max_connections=workers)
    client = redis.Redis(connection_pool=pool)
    client.set("bench:key", VALUE)
    counts = [0] * workers
    stop = False

    def worker(i: int) -> None:
        get = client.get
        while not stop:
            if get("bench:key") != VALUE:
                raise AssertionError("wrong value")
            counts[i] += 1

    def main() -> dict[str, Any]:
        nonlocal stop
        ws = [spawn(lambda i=i: worker(i)) for i in range(workers)]
        sleep(warmup)
        n0, t0, c0 = sum(counts), time.perf_counter(), _cpu()
        sleep(seconds)
        n1, t1, c1 = sum(counts), time.perf_counter(), _cpu()
        stop = True
        join_all(ws)
        return {"ops": n1 - n0, "secs": t1 - t0, "cpu": c1 - c0}

    try:
        return _in_main(kind, main)
    finally:
        pool.disconnect()


def _http_fanout(
    kind: str,
    port: int,
    workers: int,
    warmup: float,
    seconds: float,
    spawn: Spawn,
    join_all: JoinAll,
) -> dict[str, Any]:
    import requests
    from requests.adapters import HTTPAdapter

    url = f"http://127.0.0.1:{port}/item"
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=workers))
    executor: Any = None
    if kind == "threads":
        from concurrent.futures import ThreadPoolExecutor

        executor = ThreadPoolExecutor(max_workers=workers)

    def get(_i: int = 0) -> None:
        r = session.get(url, timeout=30)
        if r.content != b"ok":
            raise AssertionError("wrong body")

    def fanout() -> None:
        if executor is not None:
            list(executor.map(get, range(workers)))
        else:
            join_all([spawn(get) for _ in range(workers)])

    def main() -> dict[str, Any]:
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            fanout()
        t0, c0 = time.perf_counter(), _cpu()
        end = t0 + seconds
        n = 0
        while time.perf_counter() < end:
            fanout()
            n += workers
        return {"ops": n, "secs": time.perf_counter() - t0, "cpu": _cpu() - c0}

    try:
        return _in_main(kind, main)
    finally:
        if executor is not None:
            executor.shutdown()
        session.close()


# -- orchestration -----------------------------------------------------------------------


def measure(
    workload: str, kind: str, port: int, args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    """One client process; its RESULT, plus the machine's other load during it."""
    from netpoll.bench.procstat import system_busy_seconds

    cmd = [sys.executable, os.path.abspath(__file__), "--child", workload, kind, str(port)]
    cmd += [str(args.workers), str(args.warmup), str(args.seconds)]
    busy0, wall0 = system_busy_seconds(), time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pin(proc.pid, cpu)
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise SystemExit(f"{workload}/{kind} timed out:\n{err[-3000:]}") from None
    busy1, wall1 = system_busy_seconds(), time.monotonic()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{workload}/{kind} failed ({proc.returncode}):\n{err[-3000:]}")
    res: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    res["rate"] = res["ops"] / res["secs"]
    if busy0 is not None and busy1 is not None:
        # Machine busy CPU over the child's life minus the child's own: the
        # server's and everyone else's (a rough "how noisy was it").
        res["busy"] = (busy1 - busy0) / (wall1 - wall0)
    return res


def main(argv: list[str]) -> int:
    """Parse flags, run the interleaved rounds, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--workers", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--serve-http", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_http:
        serve_http()
        return 0
    if args.child:
        w, k, port, workers, warmup, seconds = args.child
        child(w, k, int(port), int(workers), float(warmup), float(seconds))
        return 0

    from netpoll.bench.procstat import pinning_plan

    pins = None if args.no_pin else pinning_plan()
    server_cpu, client_cpu = pins if pins else (None, None)
    kinds = args.kinds.split(",")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for workload in args.workloads.split(","):
        server = redis_server if workload == "redis" else http_server
        with server(server_cpu) as port:
            per_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for rnd in range(args.rounds):
                for kind in kinds:
                    r = measure(workload, kind, port, args, client_cpu)
                    per_kind[kind].append(r)
                    print(
                        f"  {workload} round {rnd + 1} {kind:<12} {r['rate']:>9,.0f}/s"
                        f"  cpu {r['cpu'] / r['secs'] * 100:4.0f}%",
                        file=sys.stderr,
                        flush=True,
                    )
            results[workload] = per_kind
    if args.json:
        print(json.dumps(results))
    else:
        _table(results, args)
    return 0


def _table(results: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> None:
    """Medians per workload and kind; ratios of each to gevent and threads.

    Two figures: ops/s (wall clock) and ops per CPU-second of the client
    (``ops/cpu-s``), which is what a busy machine disturbs least: a client
    that gets only part of a CPU does fewer ops/s but about the same ops per
    CPU-second.
    """
    print(
        f"\n{args.workers} workers, {args.rounds} interleaved rounds of {args.seconds:g} s "
        f"(+{args.warmup:g} s warm-up); median (min-max)"
    )
    hdr = f"{'workload':<9}{'kind':<12}{'ops/s':>22}{'ops/cpu-s':>11}{'cli CPU':>8}{'busy':>6}"
    hdr += f"{'/gevent':>9}{'/threads':>9}{'cpu/gevent':>11}{'cpu/threads':>12}"
    print(hdr)
    for workload, per_kind in results.items():
        med = {k: statistics.median(r["rate"] for r in rs) for k, rs in per_kind.items()}
        eff = {
            k: statistics.median(r["ops"] / r["cpu"] for r in rs if r["cpu"] > 0)
            for k, rs in per_kind.items()
        }

        def ratio(table: dict[str, float], kind: str, base: str) -> str:
            return f"{table[kind] / table[base]:.2f}x" if base in table and base != kind else "-"

        for kind, rs in per_kind.items():
            rates = [r["rate"] for r in rs]
            cpu = statistics.median(r["cpu"] / r["secs"] for r in rs) * 100
            busy = statistics.median(r.get("busy", float("nan")) for r in rs) * 100
            rng = f"{med[kind]:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
            print(
                f"{workload:<9}{kind:<12}{rng:>22}{eff[kind]:>11,.0f}{cpu:>7.0f}%{busy:>5.0f}%"
                f"{ratio(med, kind, 'gevent'):>9}{ratio(med, kind, 'threads'):>9}"
                f"{ratio(eff, kind, 'gevent'):>11}{ratio(eff, kind, 'threads'):>12}"
            )
    print("cli CPU: the client's CPU use in its window (100% = one CPU); busy: whole-machine")
    print("busy CPU during the client's life, all processes (200% = both CPUs of a 2-CPU box)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
