"""The ``netpoll`` command: ``info``, ``echo`` and ``bench``.

Installed as the ``netpoll`` console script and runnable as
``python -m netpoll``:

* ``netpoll info [--json]``: platform, Python, every poller backend with whether
  it works here (and why not), the backend that would be chosen and by what
  (``NETPOLL_BACKEND``, or the default order), the listen backlog limit
  (somaxconn) and the open-file limit.
* ``netpoll echo --listen HOST:PORT [--backend B] [--goroutines]``: an echo server on netpoll's
  public API (one thread, or goroutine, per connection, as a user of the
  API writes it), for trying netpoll with ``nc`` or any client.  It prints
  ``listening on HOST:PORT`` (the bound address, so ``:0`` is usable) and stops
  cleanly on Ctrl-C or SIGTERM, exiting 0.
* ``netpoll bench ...``: the benchmark engine, :mod:`netpoll.bench`, imported
  only when this subcommand runs; see ``netpoll bench --help``.

Exit codes: 0 success, 1 runtime failure (an unknown or unavailable backend, a
port in use, ...: one line naming the problem, no traceback), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import netpoll
from netpoll import _build
from netpoll.core.plugins import ENTRY_POINT_GROUP, ENV_BACKEND, BackendError
from netpoll.core.runtime import runtime

PROG = "netpoll"

#: Exit status for runtime failures (bad usage is argparse's 2).
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure to report as one line on stderr with exit status 1."""


# --------------------------------------------------------------------------
# netpoll info
# --------------------------------------------------------------------------


def somaxconn() -> int | None:
    """The kernel's cap on a listen backlog, or None when it cannot be read."""
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        pass
    if sys.platform == "darwin" or "bsd" in sys.platform:
        try:
            out = subprocess.run(
                ["sysctl", "-n", "kern.ipc.somaxconn"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
            return int(out.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
    return None


def fd_limit() -> tuple[int, int] | None:
    """The (soft, hard) RLIMIT_NOFILE, -1 meaning unlimited; None if unknown."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    return (-1 if soft == unlimited else soft, -1 if hard == unlimited else hard)


def _backend_origin(spec: Any) -> str:
    """Where a backend comes from: 'builtin' or the module providing it."""
    module = getattr(spec.create, "__module__", None) or ""
    if module.startswith("netpoll.backends."):
        return "builtin"
    return module or "third-party"


def _entry_points() -> list[dict[str, str]]:
    """The ``netpoll.backends`` entry points installed in this environment."""
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        found.append(
            {
                "name": ep.name,
                "value": ep.value,
                "distribution": f"{dist.name} {dist.version}" if dist is not None else "",
            }
        )
    return found


def collect_info() -> dict[str, Any]:
    """Everything ``netpoll info`` reports, as JSON-ready data."""
    registry = runtime.registry
    backends = []
    for spec in registry.specs():
        reason = registry.why_unavailable(spec)
        backends.append(
            {
                "name": spec.name,
                "available": reason is None,
                "why_unavailable": reason,
                "priority": spec.priority,
                "edge_triggered": spec.edge_triggered,
                "origin": _backend_origin(spec),
                "description": spec.description,
            }
        )
    chosen: dict[str, Any]
    try:
        spec, how = registry.resolve(None)
        chosen = {"name": spec.name, "chosen_by": how, "error": None}
    except BackendError as exc:
        chosen = {"name": None, "chosen_by": None, "error": str(exc)}
    limit = fd_limit()
    return {
        "netpoll": netpoll.__version__,
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "sys_platform": sys.platform,
            "description": platform.platform(),
        },
        "python": {
            "implementation": platform.python_implementation(),
            "version": platform.python_version(),
            "executable": sys.executable,
        },
        # Compiled or pure-Python hot modules, and why (netpoll/_build.py).
        "build": _build.build_info(),
        "environment": {
            ENV_BACKEND: os.environ.get(ENV_BACKEND),
            _build.ENV_PURE: os.environ.get(_build.ENV_PURE),
            "NETPOLL_KQUEUE_EMULATION": os.environ.get("NETPOLL_KQUEUE_EMULATION"),
        },
        "backends": backends,
        "entry_points": _entry_points(),
        "chosen": chosen,
        # How a plain thread parks: in the kernel on its fd plus a wake fd.
        "park": "fd + eventfd" if hasattr(os, "eventfd") else "fd + pipe",
        "somaxconn": somaxconn(),
        "fd_limit": None if limit is None else {"soft": limit[0], "hard": limit[1]},
    }


def _fmt_limit(value: int) -> str:
    return "unlimited" if value < 0 else str(value)


def format_info(info: dict[str, Any]) -> str:
    """The human-readable ``netpoll info`` text."""
    p, py = info["platform"], info["python"]
    lines = [
        f"netpoll {info['netpoll']}",
        f"platform:  {p['description']} ({p['sys_platform']}, {p['machine']})",
        f"python:    {py['implementation']} {py['version']} ({py['executable']})",
        f"build:     {info['build']['build']} ({info['build']['reason']})",
        "backends (best first):",
    ]
    width = max((len(b["name"]) for b in info["backends"]), default=6)
    for b in info["backends"]:
        kind = "edge" if b["edge_triggered"] else "level"
        origin = "" if b["origin"] == "builtin" else f", from {b['origin']}"
        if b["available"]:
            state = f"available    ({kind}-triggered, priority {b['priority']}{origin})"
        else:
            state = f"unavailable: {b['why_unavailable']}"
        lines.append(f"  {b['name']:<{width}}  {state}")
    if info["entry_points"]:
        lines.append(f"backend plugins ({ENTRY_POINT_GROUP} entry points):")
        for ep in info["entry_points"]:
            dist = f"  [{ep['distribution']}]" if ep["distribution"] else ""
            lines.append(f"  {ep['name']} = {ep['value']}{dist}")
    chosen = info["chosen"]
    if chosen["error"] is None:
        how = {
            "env": f"by {ENV_BACKEND}={info['environment'][ENV_BACKEND]}",
            "api": "by netpoll.use_backend()",
            "default": "by default: the best available",
        }.get(chosen["chosen_by"], f"by {chosen['chosen_by']}")
        lines.append(f"chosen:    {chosen['name']} ({how})")
    else:
        lines.append(f"chosen:    none: {chosen['error']}")
    if info["environment"]["NETPOLL_KQUEUE_EMULATION"]:
        lines.append(
            f"           NETPOLL_KQUEUE_EMULATION={info['environment']['NETPOLL_KQUEUE_EMULATION']}"
        )
    wake = "an eventfd" if info["park"] == "fd + eventfd" else "a pipe"
    lines.append(
        f"park:      a thread waits in the kernel on its fd + {wake}"
        " (while the fd budget lasts; then on a lock)"
    )
    som = info["somaxconn"]
    lines.append(f"somaxconn: {som if som is not None else 'unknown'}")
    lim = info["fd_limit"]
    if lim is None:
        lines.append("fd limit:  unknown")
    else:
        lines.append(
            f"fd limit:  {_fmt_limit(lim['soft'])} (soft), {_fmt_limit(lim['hard'])} (hard)"
        )
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    """``netpoll info``: print the report; 1 if no backend can be chosen."""
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    return 0 if info["chosen"]["error"] is None else EXIT_FAILURE


# --------------------------------------------------------------------------
# netpoll echo
# --------------------------------------------------------------------------


def listen_address(text: str) -> str:
    """argparse type for ``--listen``: ``HOST:PORT``, ``[V6]:PORT`` or ``:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (missing port)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be a number from 0 to 65535")
    if host.startswith("[") != host.endswith("]"):
        raise argparse.ArgumentTypeError(f"{text!r}: unbalanced brackets around the host")
    return text


class EchoServer:
    """An echo server on netpoll's public API: an accept loop, a G per conn.

    The Gs are threads, or with ``goroutines=True`` goroutines on a
    background M (the same code: only how each one is started differs).
    :meth:`stop` may be called from any thread (the CLI calls it from its
    signal handler's wake-up): it closes the listener, which wakes the parked
    ``accept``, and every open conn, which wakes the parked reads and writes.
    """

    def __init__(self, address: str, bufsize: int = 65536, *, goroutines: bool = False) -> None:
        self.listener = netpoll.listen("tcp", address)
        self.bufsize = bufsize
        self.goroutines = goroutines
        self.served = 0
        self._conns: set[Any] = set()
        self._workers: set[Any] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._acceptor: Any = None

    def _spawn(self, fn: Any, *args: Any) -> Any:
        """Start ``fn(*args)`` as a goroutine or a daemon thread; its handle (with join)."""
        if self.goroutines:
            return netpoll.go(fn, *args)
        t = threading.Thread(target=fn, args=args, name="echo", daemon=True)
        t.start()
        return t

    @property
    def address(self) -> str:
        """The bound address, ``HOST:PORT``."""
        return str(self.listener.addr())

    def start(self) -> None:
        """Start the accept loop in its own G."""
        self._acceptor = self._spawn(self._accept_loop)

    def _accept_loop(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                conn = self.listener.accept()
            except OSError as exc:
                if self._stopping.is_set() or isinstance(exc, netpoll.ErrClosed):
                    return
                # Temporary failures (EMFILE, ENFILE, ENOBUFS ...): back off as
                # Go's http.Server does, 5 ms doubling up to 1 s.
                backoff = min(1.0, backoff * 2 or 0.005)
                print(f"{PROG} echo: accept: {exc}; retrying in {backoff:g}s", file=sys.stderr)
                netpoll.sleep(backoff)
                continue
            backoff = 0.0
            with self._lock:
                if self._stopping.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
                self.served += 1
            worker = self._spawn(self._serve, conn)
            with self._lock:
                if not _finished(worker):  # else _serve already left; nothing to join
                    self._workers.add(worker)

    def _serve(self, conn: Any) -> None:
        buf = bytearray(self.bufsize)
        view = memoryview(buf)
        try:
            while True:
                n = conn.readinto(buf)
                if not n:
                    break
                conn.write(view[:n])
        except OSError:
            pass  # reset by the peer, or closed by stop(): the conn is done
        finally:
            conn.close()
            me = netpoll.current_goroutine() or threading.current_thread()
            with self._lock:
                self._conns.discard(conn)
                self._workers.discard(me)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every conn, and wait for their threads."""
        self._stopping.set()
        self.listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()
        deadline = time.monotonic() + timeout
        if self._acceptor is not None:
            self._acceptor.join(max(0.0, deadline - time.monotonic()))
        for w in list(self._workers):
            w.join(max(0.0, deadline - time.monotonic()))


def _finished(worker: Any) -> bool:
    """True once a thread or goroutine handle has finished."""
    if isinstance(worker, threading.Thread):
        return not worker.is_alive()
    return bool(worker.done())


def cmd_echo(args: argparse.Namespace) -> int:
    """``netpoll echo``: serve until SIGINT/SIGTERM, then stop cleanly (exit 0)."""
    if args.backend:
        netpoll.use_backend(args.backend)
    server = EchoServer(args.listen, bufsize=args.bufsize, goroutines=args.goroutines)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        kind = "a goroutine" if args.goroutines else "a thread"
        print(
            f"listening on {server.address} (backend {netpoll.backend_name()}, "
            f"{kind} per connection); Ctrl-C to stop",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"stopped; served {server.served} connection(s)", flush=True)
    return 0


# --------------------------------------------------------------------------
# netpoll bench (the engine is netpoll.bench, imported lazily)
# --------------------------------------------------------------------------


def _load_bench() -> Any:
    try:
        bench = importlib.import_module("netpoll.bench")
    except ModuleNotFoundError as exc:
        if exc.name in ("netpoll.bench", "netpoll"):
            raise CommandError(
                "the benchmark engine (netpoll.bench) is not part of this installation yet"
            ) from None
        raise CommandError(f"cannot load the benchmark engine: {exc}") from None
    except ImportError as exc:
        raise CommandError(f"cannot load the benchmark engine: {exc}") from None
    if not (hasattr(bench, "add_arguments") and hasattr(bench, "run")):
        raise CommandError("netpoll.bench does not provide add_arguments() and run()")
    return bench


def cmd_bench(argv: Sequence[str]) -> int:
    """``netpoll bench ARGS``: parse ARGS with the engine's own parser and run it."""
    bench = _load_bench()
    parser = argparse.ArgumentParser(
        prog=f"{PROG} bench",
        description="Echo benchmark: netpoll side by side with plain-threads baselines.",
    )
    bench.add_arguments(parser)
    args = parser.parse_args(list(argv))
    if getattr(args, "backend", None) not in (None, "all"):
        netpoll.use_backend(args.backend)  # unknown name: BackendError, exit 1
    return int(bench.run(args))


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with the ``info``, ``echo`` and ``bench`` subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="netpoll: Go's network poller for Python.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {netpoll.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p_info = sub.add_parser(
        "info", help="platform, Python, backends and limits", description=cmd_info.__doc__
    )
    p_info.add_argument("--json", action="store_true", help="print JSON instead of text")

    p_echo = sub.add_parser(
        "echo",
        help="run an echo server on netpoll",
        description="An echo server on netpoll (a thread, or with --goroutines a goroutine, "
        "per connection). Ctrl-C stops it.",
    )
    p_echo.add_argument(
        "--goroutines",
        "-g",
        action="store_true",
        help="serve each connection in a goroutine instead of a thread",
    )
    p_echo.add_argument(
        "--listen",
        "-l",
        type=listen_address,
        default="127.0.0.1:7000",
        metavar="HOST:PORT",
        help="address to listen on (default %(default)s; port 0 picks a free one)",
    )
    p_echo.add_argument(
        "--backend",
        "-b",
        metavar="NAME",
        help=f"poller backend (default: ${ENV_BACKEND} or the best available)",
    )
    p_echo.add_argument(
        "--bufsize", type=int, default=65536, metavar="BYTES", help=argparse.SUPPRESS
    )

    # The bench engine owns its flags; they are parsed by cmd_bench.
    sub.add_parser(
        "bench",
        help="benchmark netpoll against plain-threads baselines (see `netpoll bench -h`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``netpoll`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    command = args.command
    if command != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if command == "info":
            return cmd_info(args)
        if command == "echo":
            return cmd_echo(args)
        # parse_known_args put every bench flag in `rest`, in order.
        return cmd_bench(rest)
    except (BackendError, CommandError) as exc:
        print(f"{PROG} {command}: {_strip_prefix(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"{PROG} {command}: {_describe_oserror(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG} {command}: interrupted", file=sys.stderr)
        return 130


def _strip_prefix(message: str) -> str:
    return message[len("netpoll: ") :] if message.startswith("netpoll: ") else message


def _describe_oserror(exc: OSError) -> str:
    text = str(exc)
    if exc.errno == errno.EADDRINUSE:
        return f"{text} (choose another port, or port 0 for a free one)"
    if exc.errno == errno.EACCES:
        return f"{text} (permission denied: ports below 1024 need privileges)"
    return text


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
