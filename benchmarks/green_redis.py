"""redis-py GETs from many green workers: netpoll's patched redis-py beside gevent's.

W workers (100 by default) share one ``redis.Redis`` (its connection pool
grows to W connections) and each does N GETs of a 64-byte value from a
``redis-server`` this script starts on 127.0.0.1 and a free port:

* ``netpoll``: ``netpoll.patch.library("redis")``, a goroutine per worker
  under ``netpoll.run`` (the green socket of ``netpoll/green/socket.py``);
* ``gevent``: ``gevent.monkey.patch_all()``, a greenlet per worker;
* ``threads`` (``--threads``): stdlib redis-py, a thread per worker.

Every measurement is a fresh child process; the kinds run interleaved,
round after round, and the report gives each kind's median GETs per second
and per CPU second of the client process (steadier when the machine is
shared), each with its ratio to gevent's.  ``--netpoll-path DIR`` adds a kind ``netpoll@DIR`` that
imports netpoll from another checkout (an A/B of two versions).  With two or
more CPUs, ``--pin`` puts the server on the first and the clients on the second.

Usage::

    python benchmarks/green_redis.py [--rounds 7] [--workers 100] [--gets 300]
        [--netpoll-path /path/to/other/checkout] [--threads]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import os, sys, time
kind, port, workers, gets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if os.environ.get("GR_CPU"):
    os.sched_setaffinity(0, {int(os.environ["GR_CPU"])})

def work(r, n):
    for _ in range(n):
        if r.get("k") is None:
            raise SystemExit("GET returned nothing")

if kind == "gevent":
    from gevent import monkey
    monkey.patch_all()
    import gevent, redis
    r = redis.Redis(port=port, max_connections=workers)
    gevent.joinall([gevent.spawn(work, r, 20) for _ in range(workers)], raise_error=True)
    t0 = time.perf_counter(); c0 = time.process_time()
    gevent.joinall([gevent.spawn(work, r, gets) for _ in range(workers)], raise_error=True)
    dt = time.perf_counter() - t0; dc = time.process_time() - c0
    where = gevent.__file__
elif kind == "threads":
    import threading, redis
    r = redis.Redis(port=port, max_connections=workers)
    def batch(n):
        ts = [threading.Thread(target=work, args=(r, n)) for _ in range(workers)]
        for t in ts: t.start()
        for t in ts: t.join()
    batch(20)
    t0 = time.perf_counter(); c0 = time.process_time()
    batch(gets)
    dt = time.perf_counter() - t0; dc = time.process_time() - c0
    where = "threads"
else:
    import netpoll, netpoll.patch
    netpoll.patch.library("redis")
    import redis
    def main():
        r = redis.Redis(port=port, max_connections=workers)
        for g in [netpoll.go(work, r, 20) for _ in range(workers)]:
            g.result()
        t0 = time.perf_counter(); c0 = time.process_time()
        for g in [netpoll.go(work, r, gets) for _ in range(workers)]:
            g.result()
        return time.perf_counter() - t0, time.process_time() - c0
    dt, dc = netpoll.run(main)
    where = netpoll.__file__
print(f"{workers * gets / dt:.1f} {workers * gets / dc:.1f} {where}")
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_redis(port: int, cpu: int | None) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on 127.0.0.1:port without persistence, ready for commands."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    tmp = tempfile.mkdtemp(prefix="green-redis-")
    args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", tmp, "--maxclients", "10000"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$64\r\n" + b"v" * 64 + b"\r\n")
                if s.recv(64).startswith(b"+OK"):
                    return proc, tmp
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit("redis-server did not start")


def run_child(
    kind: str, port: int, workers: int, gets: int, path: str | None, cpu: int | None
) -> tuple[float, float]:
    """GETs per second and per CPU second of one child of ``kind`` (netpoll from ``path``)."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    if cpu is not None:
        env["GR_CPU"] = str(cpu)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(port), str(workers), str(gets)],
        env=env,
        cwd=path or os.getcwd(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{out.stderr}")
    rate, cpu_rate, where = out.stdout.split()
    if path is not None and not where.startswith(path):
        raise SystemExit(f"{kind} imported netpoll from {where}, not {path}")
    return float(rate), float(cpu_rate)


def main() -> None:
    """Run the interleaved rounds and print medians and ratios to gevent."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--gets", type=int, default=300, help="GETs per worker per run")
    ap.add_argument("--netpoll-path", help="another checkout to A/B against")
    ap.add_argument("--threads", action="store_true", help="also a thread per worker")
    ap.add_argument("--pin", action="store_true", help="server on one CPU, clients on another")
    args = ap.parse_args()
    pin = args.pin and len(os.sched_getaffinity(0)) >= 2
    cpus = sorted(os.sched_getaffinity(0))
    srv_cpu, cli_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    kinds: list[tuple[str, str, str | None]] = [("netpoll", "netpoll", None)]
    if args.netpoll_path:
        path = os.path.abspath(args.netpoll_path)
        kinds.append((f"netpoll@{path}", "netpoll", path))
    kinds.append(("gevent", "gevent", None))
    if args.threads:
        kinds.append(("threads", "threads", None))
    port = free_port()
    proc, tmp = start_redis(port, srv_cpu)
    rates: dict[str, list[float]] = {label: [] for label, _, _ in kinds}
    cpu_rates: dict[str, list[float]] = {label: [] for label, _, _ in kinds}
    try:
        for rnd in range(args.rounds):
            order = kinds if rnd % 2 == 0 else kinds[::-1]
            for label, kind, path in order:
                rate, cpu_rate = run_child(kind, port, args.workers, args.gets, path, cli_cpu)
                rates[label].append(rate)
                cpu_rates[label].append(cpu_rate)
            line = "  ".join(
                f"{lb}={rates[lb][-1]:.0f}/{cpu_rates[lb][-1]:.0f}" for lb, _, _ in kinds
            )
            print(f"round {rnd + 1}: {line}", flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(rates["gevent"])
    cbase = statistics.median(cpu_rates["gevent"])
    print(
        f"\n{args.workers} workers x {args.gets} GETs, {args.rounds} rounds: medians of"
        " GETs per wall second and per client CPU second (the steadier one on a busy machine)"
    )
    for label, _, _ in kinds:
        med = statistics.median(rates[label])
        cmed = statistics.median(cpu_rates[label])
        print(
            f"{label:>32}: {med:8.0f} GETs/s  x gevent {med / base:5.2f}   "
            f"{cmed:8.0f} GETs/CPU-s  x gevent {cmed / cbase:5.2f}"
        )


if __name__ == "__main__":
    main()
