"""Ping-pong over netpoll's green sockets beside a netpoll Conn server and gevent's.

Echo servers, each a fresh child process with a goroutine (greenlet) per
connection, run interleaved round after round:

* ``green``: ``netpoll.socket`` (``netpoll/green/socket.py``): ``accept``,
  ``recv(65536)``, ``sendall``; ``green+timeout``: the same after
  ``settimeout(5)`` (a per-call deadline);
* ``conn``: netpoll's own ``Conn``: ``read(65536)`` / ``write``;
* ``gevent``: ``gevent.socket`` after ``gevent.monkey.patch_all()``, the
  same code as ``green``.

One client process (stdlib sockets and ``selectors``) keeps C connections
(100) each sending 64 B and waiting for the whole echo, for a few seconds.
The report gives each server's median messages per second and per CPU
second of the server process (utime+stime from ``/proc``: steadier when the
machine is shared), with the ratio to gevent's.  ``--netpoll-path DIR``
adds ``green@DIR``: the green server importing netpoll from another checkout.

Usage::

    python benchmarks/green_echo.py [--rounds 7] [--conns 100] [--seconds 3]
        [--netpoll-path /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time

SERVER = r"""
import sys
kind, port = sys.argv[1], int(sys.argv[2])
if kind == "gevent":
    from gevent import monkey
    monkey.patch_all()
    import gevent, socket
    spawn = gevent.spawn
    def run(main):
        main()
elif kind == "conn":
    import netpoll
    def main():
        ln = netpoll.listen("tcp", f"127.0.0.1:{port}")
        print("ready", netpoll.__file__, flush=True)
        while True:
            netpoll.go(serve_conn, ln.accept())
    def serve_conn(c):
        try:
            while data := c.read(65536):
                c.write(data)
        except OSError:
            pass
        finally:
            c.close()
    netpoll.run(main)
    raise SystemExit
else:
    import netpoll
    import netpoll.socket as socket
    spawn = netpoll.go
    run = netpoll.run
timeout = 5.0 if kind == "green+timeout" else None

def serve(c):
    if timeout is not None:
        c.settimeout(timeout)
    try:
        while data := c.recv(65536):
            c.sendall(data)
    except OSError:
        pass
    finally:
        c.close()

def main():
    ln = socket.create_server(("127.0.0.1", port))
    print("ready", getattr(sys.modules.get("netpoll"), "__file__", "gevent"), flush=True)
    while True:
        c, _ = ln.accept()
        spawn(serve, c)

run(main)
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ping_pong(port: int, conns: int, seconds: float) -> int:
    """Messages echoed in ``seconds`` by ``conns`` connections, one 64 B message in flight each."""
    msg = b"x" * 64
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, [0])
    try:
        for s in socks:
            s.sendall(msg)
        done = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for key, _ in sel.select(1.0):
                c = key.fileobj
                assert isinstance(c, socket.socket)
                got = len(c.recv(65536))
                if got == 0:
                    raise SystemExit("server closed a connection")
                key.data[0] += got
                while key.data[0] >= 64:
                    key.data[0] -= 64
                    done += 1
                    c.send(msg)
        return done
    finally:
        for s in socks:
            sel.unregister(s)
            s.close()
        sel.close()


def measure(kind: str, path: str | None, conns: int, seconds: float) -> tuple[float, float]:
    """(messages/s, messages per server CPU second) of one fresh server of ``kind``."""
    port = free_port()
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    srv = subprocess.Popen(
        [sys.executable, "-c", SERVER, kind, str(port)],
        env=env,
        cwd=path or os.getcwd(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None
        ready, _, where = srv.stdout.readline().strip().partition(" ")
        if ready != "ready":
            raise SystemExit(f"{kind} server did not start")
        if path is not None and not where.startswith(path):
            raise SystemExit(f"{kind} imported netpoll from {where}, not {path}")
        ping_pong(port, conns, 0.5)  # warm up
        c0 = cpu_seconds(srv.pid)
        t0 = time.monotonic()
        n = ping_pong(port, conns, seconds)
        dt = time.monotonic() - t0
        dc = cpu_seconds(srv.pid) - c0
        return n / dt, n / max(dc, 1e-9)
    finally:
        srv.kill()
        srv.wait()


def main() -> None:
    """Run the interleaved rounds and print medians and ratios to gevent."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--netpoll-path", help="another checkout to A/B against")
    args = ap.parse_args()
    kinds: list[tuple[str, str, str | None]] = [
        ("green", "green", None),
        ("green+timeout", "green+timeout", None),
    ]
    if args.netpoll_path:
        path = os.path.abspath(args.netpoll_path)
        kinds += [("green@other", "green", path), ("green+timeout@other", "green+timeout", path)]
    kinds += [("conn", "conn", None), ("gevent", "gevent", None)]
    rates: dict[str, list[float]] = {label: [] for label, _, _ in kinds}
    cpu_rates: dict[str, list[float]] = {label: [] for label, _, _ in kinds}
    for rnd in range(args.rounds):
        order = kinds if rnd % 2 == 0 else kinds[::-1]
        for label, kind, path in order:
            rate, cpu_rate = measure(kind, path, args.conns, args.seconds)
            rates[label].append(rate)
            cpu_rates[label].append(cpu_rate)
        line = "  ".join(f"{lb}={rates[lb][-1]:.0f}/{cpu_rates[lb][-1]:.0f}" for lb, _, _ in kinds)
        print(f"round {rnd + 1}: {line}", flush=True)
    base = statistics.median(rates["gevent"])
    cbase = statistics.median(cpu_rates["gevent"])
    print(
        f"\n{args.conns} conns ping-pong 64 B, {args.rounds} rounds of {args.seconds} s: medians"
        " of messages per wall second and per server CPU second"
    )
    for label, _, _ in kinds:
        med = statistics.median(rates[label])
        cmed = statistics.median(cpu_rates[label])
        print(
            f"{label:>20}: {med:8.0f} msg/s  x gevent {med / base:5.2f}   "
            f"{cmed:8.0f} msg/CPU-s  x gevent {cmed / cbase:5.2f}"
        )
    if args.netpoll_path:
        print(f"(@other: {os.path.abspath(args.netpoll_path)})")


if __name__ == "__main__":
    main()
