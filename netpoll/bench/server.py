"""The echo servers the benchmark compares, each run in its own process.

The servers, each written the way a user of that API would write it:

* ``netpoll-g``: netpoll's goroutines, ``netpoll.run`` with an accept loop
  and ``netpoll.go`` per connection, running the same handler as ``netpoll``;
* ``netpoll``: netpoll's public sync API, an accept loop and one thread per
  connection doing ``conn.readinto(buf)`` / ``conn.write(view[:n])``;
* ``threads``: the same shape on stdlib blocking sockets
  (``recv_into`` / ``sendall``), TCP_NODELAY on as netpoll and asyncio do;
* ``asyncio``: asyncio streams (``reader.read`` / ``writer.write`` +
  ``drain``) on the default event loop;
* ``gevent`` (listed only when gevent is installed): a greenlet per
  connection on gevent's ``StreamServer``, the same loop on gevent sockets;
* ``floor``: the floor under netpoll-g, not in the default set: a greenlet
  per connection doing non-blocking ``recv_into`` / ``send`` and a hub
  greenlet on an edge-triggered ``select.epoll``, switching to the greenlets
  whose fds are ready (:func:`serve_floor`).  It is the design of netpoll's
  goroutines with nothing else (no deadlines, no pollDesc, no scheduler, no
  netFD layers), so netpoll-g / floor says what those layers cost.  It has
  no read deadlines and sits out the ``deadline`` scenario.

With ``--deadline SECONDS`` every server bounds each read by that much time
from now, set afresh per message (netpoll: ``set_read_deadline``; the
others: their socket timeout), which is what a server with an idle timeout
does.

Run as ``python -m netpoll.bench.server --kind KIND [--backend B] [--cpu N]``:
the process raises its open-file limit, optionally pins itself to one CPU,
listens on ``127.0.0.1:0``, prints ``READY <port> <pid>`` on stdout and serves
until its stdin reaches EOF (the parent closed it or died), then exits at once.
SIGINT is ignored: the parent process handles Ctrl-C and ends its children.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from netpoll.bench.procstat import pin_to_cpu, raise_nofile_limit

#: The server kinds a run measures when ``--servers`` is not given, in the
#: order the benchmark runs them (gevent if installed).
DEFAULT_KINDS: tuple[str, ...] = ("netpoll-g", "netpoll", "threads", "asyncio") + (
    ("gevent",) if importlib.util.find_spec("gevent") is not None else ()
)

#: Every server kind ``--servers`` accepts: the defaults and the floor.
KINDS: tuple[str, ...] = (*DEFAULT_KINDS, "floor")

#: The kinds without read deadlines: they sit out the ``deadline`` scenario.
NO_DEADLINE_KINDS = ("floor",)

#: The kinds that run on netpoll (and so take a poller backend).
NETPOLL_KINDS = ("netpoll-g", "netpoll")

#: Listen backlog of the baseline servers: the kernel caps it at somaxconn,
#: which is what netpoll (like Go) uses by default.
BACKLOG = 4096

HOST = "127.0.0.1"


def _backoff(delay: float) -> float:
    """Go's accept back-off on temporary errors: 5 ms doubling up to 1 s."""
    delay = min(1.0, delay * 2 or 0.005)
    time.sleep(delay)
    return delay


def _netpoll_echo(bufsize: int, deadline: float) -> Callable[[Any], None]:
    """The per-connection handler both netpoll servers run (threads or goroutines)."""

    def handle(conn: Any) -> None:
        buf = bytearray(bufsize)
        view = memoryview(buf)
        try:
            while True:
                if deadline:
                    conn.set_read_deadline(time.time() + deadline)
                n = conn.readinto(buf)
                if not n:
                    break
                conn.write(view[:n])
        except OSError:
            pass
        finally:
            conn.close()

    return handle


def serve_netpoll(
    bufsize: int, ready: Callable[[int], None], backend: str | None = None, deadline: float = 0.0
) -> None:
    """Echo on netpoll's sync API, one thread per connection; never returns."""
    import netpoll

    if backend:
        netpoll.use_backend(backend)
    ln = netpoll.listen("tcp", f"{HOST}:0")
    handle = _netpoll_echo(bufsize, deadline)
    addr = ln.addr()
    assert isinstance(addr, netpoll.TCPAddr)
    ready(addr.port)
    delay = 0.0
    while True:
        try:
            conn = ln.accept()
        except OSError as exc:
            print(f"netpoll server: accept: {exc}", file=sys.stderr, flush=True)
            delay = _backoff(delay)
            continue
        delay = 0.0
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_netpoll_goroutines(
    bufsize: int, ready: Callable[[int], None], backend: str | None = None, deadline: float = 0.0
) -> None:
    """Echo on netpoll goroutines, a G per connection; never returns."""
    import netpoll

    if backend:
        netpoll.use_backend(backend)
    handle = _netpoll_echo(bufsize, deadline)

    def main() -> None:
        ln = netpoll.listen("tcp", f"{HOST}:0")
        addr = ln.addr()
        assert isinstance(addr, netpoll.TCPAddr)
        ready(addr.port)
        delay = 0.0
        while True:
            try:
                conn = ln.accept()
            except OSError as exc:
                print(f"netpoll-g server: accept: {exc}", file=sys.stderr, flush=True)
                delay = min(1.0, delay * 2 or 0.005)
                netpoll.sleep(delay)
                continue
            delay = 0.0
            netpoll.go(handle, conn)

    netpoll.run(main)


def _socket_echo(sock: Any, bufsize: int) -> None:
    """The per-connection handler of the socket servers (stdlib or gevent sockets)."""
    buf = bytearray(bufsize)
    view = memoryview(buf)
    try:
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            sock.sendall(view[:n])
    except OSError:
        pass
    finally:
        sock.close()


def serve_gevent(bufsize: int, ready: Callable[[int], None], deadline: float = 0.0) -> None:
    """Echo on gevent, a greenlet per connection; never returns."""
    from gevent.server import StreamServer  # type: ignore[import-untyped,import-not-found,unused-ignore]

    def handle(sock: Any, _addr: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if deadline:
            sock.settimeout(deadline)
        _socket_echo(sock, bufsize)

    server = StreamServer((HOST, 0), handle, backlog=BACKLOG)
    server.init_socket()
    ready(server.address[1])
    server.serve_forever()


def serve_threads(bufsize: int, ready: Callable[[int], None], deadline: float = 0.0) -> None:
    """Echo on blocking stdlib sockets, one thread per connection; never returns."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, 0))
    srv.listen(BACKLOG)

    ready(srv.getsockname()[1])
    delay = 0.0
    while True:
        try:
            sock, _ = srv.accept()
        except OSError as exc:
            print(f"threads server: accept: {exc}", file=sys.stderr, flush=True)
            delay = _backoff(delay)
            continue
        delay = 0.0
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if deadline:
            sock.settimeout(deadline)  # the per-recv bound of a blocking socket
        threading.Thread(target=_socket_echo, args=(sock, bufsize), daemon=True).start()


def serve_asyncio(bufsize: int, ready: Callable[[int], None], deadline: float = 0.0) -> None:
    """Echo on asyncio streams with the default event loop; never returns."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                if deadline:
                    data = await asyncio.wait_for(reader.read(bufsize), deadline)
                else:
                    data = await reader.read(bufsize)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, 0, backlog=BACKLOG)
        ready(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_floor(bufsize: int, ready: Callable[[int], None]) -> None:
    """Echo on bare greenlets and an edge-triggered epoll hub; never returns.

    Every greenlet waits on its own fd only (the acceptor on the listener),
    and always tries its I/O before parking, so it cannot miss an edge: an
    edge that arrives while it runs is seen by that try.  The fds are
    registered once for both directions; a wakeup for the direction it does
    not wait on only makes it retry and park again.
    """
    import select

    from greenlet import getcurrent, greenlet

    hub = getcurrent()
    ep = select.epoll()
    parked: dict[int, greenlet] = {}  # fd -> the greenlet waiting for it
    runnable: list[tuple[greenlet, socket.socket]] = []  # accepted, not started
    edge = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET

    def park(fd: int) -> None:
        parked[fd] = getcurrent()
        hub.switch()

    def handle(sock: socket.socket) -> None:
        fd = sock.fileno()
        buf = bytearray(bufsize)
        view = memoryview(buf)
        try:
            ep.register(fd, edge)
            while True:
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    park(fd)
                    continue
                if not n:
                    break  # EOF
                sent = 0
                while sent < n:
                    try:
                        sent += sock.send(view[sent:n])
                    except BlockingIOError:
                        park(fd)
        except OSError:
            pass  # reset by the peer: this connection is done
        finally:
            parked.pop(fd, None)
            with contextlib.suppress(OSError):
                ep.unregister(fd)
            sock.close()

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, 0))
    srv.listen(BACKLOG)
    srv.setblocking(False)

    def acceptor() -> None:
        delay = 0.0
        while True:
            try:
                sock, _ = srv.accept()
            except BlockingIOError:
                park(srv.fileno())
                continue
            except OSError as exc:  # EMFILE and the like: back off, as Go does
                print(f"floor server: accept: {exc}", file=sys.stderr, flush=True)
                delay = _backoff(delay)
                continue
            delay = 0.0
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Started by the hub: a greenlet switched to from here would return
            # to the hub when it parks, and the acceptor would never resume.
            runnable.append((greenlet(handle, parent=hub), sock))

    ep.register(srv.fileno(), select.EPOLLIN | select.EPOLLET)
    ready(srv.getsockname()[1])
    greenlet(acceptor, parent=hub).switch()
    while True:
        while runnable:
            g, sock = runnable.pop()
            g.switch(sock)
        for fd, _ev in ep.poll():
            waiter = parked.pop(fd, None)
            if waiter is not None:
                waiter.switch()


def _watch_stdin() -> None:
    """Exit the whole process as soon as stdin reaches EOF (or fails)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m netpoll.bench.server``."""
    parser = argparse.ArgumentParser(prog="python -m netpoll.bench.server")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--backend", default=None, help="netpoll poller backend")
    parser.add_argument("--bufsize", type=int, default=4096)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument(
        "--deadline", type=float, default=0.0, help="read deadline per message, seconds"
    )
    args = parser.parse_args(argv)
    if args.deadline and args.kind in NO_DEADLINE_KINDS:
        parser.error(f"the {args.kind} server has no read deadlines")

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile_limit()
    pin_to_cpu(args.cpu)

    def ready(port: int) -> None:
        sys.stdout.write(f"READY {port} {os.getpid()}\n")
        sys.stdout.flush()

    threading.Thread(target=_watch_stdin, name="stdin-watch", daemon=True).start()
    try:
        if args.kind == "netpoll-g":
            serve_netpoll_goroutines(args.bufsize, ready, args.backend, args.deadline)
        elif args.kind == "netpoll":
            serve_netpoll(args.bufsize, ready, args.backend, args.deadline)
        elif args.kind == "threads":
            serve_threads(args.bufsize, ready, args.deadline)
        elif args.kind == "gevent":
            serve_gevent(args.bufsize, ready, args.deadline)
        elif args.kind == "floor":
            serve_floor(args.bufsize, ready)
        else:
            serve_asyncio(args.bufsize, ready, args.deadline)
    except Exception as exc:
        print(f"{args.kind} server failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
