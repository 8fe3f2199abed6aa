"""The echo benchmark behind ``netpoll bench``: netpoll next to its baselines.

The echo servers (netpoll with goroutines and with a thread per connection,
stdlib threads + blocking sockets, asyncio streams, gevent, and on request
the bare greenlet + epoll ``floor``; see :mod:`netpoll.bench.server`) are
driven in turn by the same single-threaded load client, each in its own
process so that every server's RSS and CPU are its own.  The load client is
C (:mod:`netpoll.bench.loadgen`, compiled on first use) for ping-pong and
connect when a C compiler is there, else (and for idle and bulk) Python
(:mod:`netpoll.bench.client`); ``--client`` picks.  Scenarios:

``pingpong``
    C connections each sending 64 B and waiting for the echo (C = 1, 100,
    1000 in the full run): messages/s and round-trip latency.
``connect``
    50 workers looping connect + one echo + close: connections/s.
``idle``
    N idle connections (10,000 in the full run): server RSS growth per conn.
``bulk``
    one connection streaming 1 GiB (full run) through the echo: MiB/s.
``calls``
    the work per echoed message of the goroutine echo server at C=100, with
    and without a read deadline per message: Python functions entered, calls
    made and greenlet switches, counted with sys.monitoring (Python >= 3.12;
    skipped with a message before), printed below the throughput table
    (:mod:`netpoll.bench.calls`).

The header says which build of the hot modules runs (compiled or pure
Python, and why; :mod:`netpoll._build`): the servers run the same one.

Servers take turns within each round (A B C, A B C, ...); the table gives the
median over rounds, the min-max range, and netpoll's median divided by each
baseline's (``vs threads``, ``vs asyncio``).  With no arguments the quick set runs
(one round, about half a minute); ``--full`` runs the whole set.

Public entry points: :func:`add_arguments` and :func:`run` (used by
:mod:`netpoll.cli`), and :func:`main` (``python -m netpoll.bench`` and the
``benchmarks/`` scripts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import netpoll
from netpoll import _build
from netpoll.bench import calls as calls_bench
from netpoll.bench.loadgen import CHOICES as CLIENT_CHOICES
from netpoll.bench.loadgen import LoadClient, LoadgenBuildError, resolve
from netpoll.bench.procstat import pinning_plan, raise_nofile_limit
from netpoll.bench.report import BASELINES, format_table, summarize, to_json
from netpoll.bench.runner import BenchError, Measurement, Scenario, Server, run_all, runs_in
from netpoll.bench.server import DEFAULT_KINDS, KINDS, NETPOLL_KINDS

SCENARIOS = ("pingpong", "deadline", "connect", "idle", "bulk", "calls")

#: Connections and counted messages per connection of the ``calls`` scenario.
CALLS_CONNS = 100
CALLS_MESSAGES = 20

#: The read deadline the deadline scenario sets per message, seconds.
DEADLINE_SECONDS = 5.0

#: (quick, full) defaults for the flags ``--full`` changes.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "conns": ([1, 100], [1, 100, 1000]),
    "seconds": (2.0, 5.0),
    "rounds": (1, 3),
    "idle": (1000, 10000),
    "bulk": (256 * 1024 * 1024, 1024 * 1024 * 1024),
    "settle": (0.0, 10.0),
}

__all__ = [
    "SCENARIOS",
    "BenchError",
    "add_arguments",
    "build_scenarios",
    "main",
    "parse_size",
    "run",
]


def parse_size(text: str) -> int:
    """``64``, ``4K``, ``64M``, ``1G`` (also ``KiB``/``MiB``/``GiB``) to bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 64, 4K, 1M, 1G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: size must be positive")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or comma list") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: counts must be positive")
    return values


def _name_list(choices: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) or 'empty list'}: choose from {', '.join(choices)}"
            )
        return names

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's flags to ``parser`` (used by ``netpoll bench``)."""
    parser.add_argument(
        "--backend",
        "-b",
        metavar="B|all",
        default=None,
        help="netpoll poller backend to measure, or 'all' for every available one "
        "(default: $NETPOLL_BACKEND or the best available)",
    )
    parser.add_argument(
        "--conns",
        "-c",
        type=_int_list,
        metavar="N[,N...]",
        help="ping-pong connection counts (default 1,100; --full 1,100,1000)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=64,
        metavar="BYTES",
        help="message size for ping-pong and connect (default 64)",
    )
    parser.add_argument(
        "--seconds",
        "-s",
        type=_positive_float,
        metavar="D",
        help="measured seconds per measurement (default 2; --full 5)",
    )
    parser.add_argument(
        "--scenarios",
        type=_name_list(SCENARIOS),
        metavar="LIST",
        default=list(SCENARIOS),
        help=f"comma list of {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--servers",
        type=_name_list(KINDS),
        metavar="LIST",
        default=list(DEFAULT_KINDS),
        help=f"comma list of {','.join(KINDS)} (default: {','.join(DEFAULT_KINDS)}; "
        "floor is a bare greenlet+epoll echo loop, the floor under netpoll-g)",
    )
    parser.add_argument(
        "--client",
        choices=CLIENT_CHOICES,
        default="auto",
        help="load client for ping-pong and connect: c (netpoll/bench/loadgen.c, compiled "
        "on first use with $CC or cc), python (netpoll/bench/client.py), or auto: C when it "
        "compiles, else Python (default auto)",
    )
    parser.add_argument(
        "--rounds",
        "-r",
        type=_positive_int,
        metavar="R",
        help="rounds, servers interleaved within each (default 1; --full 3)",
    )
    parser.add_argument(
        "--idle",
        type=_positive_int,
        metavar="N",
        help="idle connections for the memory scenario (default 1000; --full 10000)",
    )
    parser.add_argument(
        "--bulk",
        type=parse_size,
        metavar="BYTES",
        help="bytes streamed in the bulk scenario (default 256M; --full 1G)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=50,
        metavar="W",
        help="concurrent workers in the connect scenario (default 50)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        metavar="S",
        help="before each measurement wait up to S seconds for the machine to be idle "
        "(below 25%% of one CPU busy) (default 0; --full 10)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the full set: C=1,100,1000, 10k idle, 1 GiB bulk, 3 rounds, 5 s each",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to one CPU and the client to another",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--save", metavar="FILE", help="also write the JSON results to FILE (with the table)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="run the TLS comparison instead (netpoll.tls vs a blocking stdlib ssl.SSLSocket: "
        "bulk both ways, ping-pong beside plain; see netpoll/bench/tls.py)",
    )


def _setting(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)
    if value is not None:
        return value
    quick, full = DEFAULTS[name]
    return full if getattr(args, "full", False) else quick


def build_scenarios(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios ``args`` asks for, in the order they run."""
    seconds = float(_setting(args, "seconds"))
    warmup = min(1.0, max(0.1, seconds * 0.15))
    size = int(getattr(args, "size", 64))
    chosen = list(getattr(args, "scenarios", None) or SCENARIOS)
    out: list[Scenario] = []
    for mode in SCENARIOS:
        if mode not in chosen:
            continue
        if mode == "pingpong":
            for c in _setting(args, "conns"):
                out.append(
                    Scenario(
                        f"pingpong-c{c}",
                        f"ping-pong {size} B, C={c}",
                        "pingpong",
                        conns=c,
                        size=size,
                        seconds=seconds,
                        warmup=warmup,
                        setup_timeout=30.0 + c / 50.0,
                    )
                )
        elif mode == "deadline":
            # The ping-pong at the first connection count again, with every
            # server setting a fresh read deadline per message: compare its
            # p99 with the plain ping-pong row's.
            counts = _setting(args, "conns")
            c = 100 if 100 in counts else max(counts)
            out.append(
                Scenario(
                    f"deadline-c{c}",
                    f"ping-pong {size} B, C={c}, read deadline per msg",
                    "pingpong",
                    conns=c,
                    size=size,
                    seconds=seconds,
                    warmup=warmup,
                    setup_timeout=30.0 + c / 50.0,
                    deadline=DEADLINE_SECONDS,
                )
            )
        elif mode == "connect":
            w = int(getattr(args, "workers", 50))
            out.append(
                Scenario(
                    "connect",
                    f"connect+echo+close, {w} workers",
                    "connect",
                    conns=w,
                    size=size,
                    seconds=seconds,
                    warmup=warmup,
                )
            )
        elif mode == "idle":
            n = int(_setting(args, "idle"))
            out.append(
                Scenario(
                    "idle",
                    f"{n:,} idle conns",
                    "idle",
                    conns=n,
                    size=size,
                    seconds=0.0,
                    warmup=0.0,
                    hold=0.5,
                    setup_timeout=30.0 + n / 100.0,
                )
            )
        elif mode == "bulk":
            total = int(_setting(args, "bulk"))
            out.append(
                Scenario(
                    "bulk",
                    f"bulk {_size_label(total)} echo",
                    "bulk",
                    conns=1,
                    seconds=max(30.0, total / (8 << 20)),  # time bound: >= 8 MiB/s
                    total=total,
                    bufsize=65536,
                )
            )
    return out


def _size_label(n: int) -> str:
    for unit, m in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= m and n % m == 0:
            return f"{n // m} {unit}"
    return f"{n} B"


def _servers(args: argparse.Namespace) -> list[Server]:
    backend = getattr(args, "backend", None)
    available = netpoll.available_backends()
    if backend == "all":
        backends = available
    elif backend is None:
        backends = [netpoll.backend_name()]
    else:
        if backend not in available:
            raise netpoll.BackendError(
                f"backend {backend!r} is not available here "
                f"(available: {', '.join(available) or 'none'})"
            )
        backends = [backend]
    servers: list[Server] = []
    for kind in getattr(args, "servers", None) or DEFAULT_KINDS:
        if kind in NETPOLL_KINDS:
            servers += [Server(kind, b) for b in backends]
        else:
            servers.append(Server(kind))
    return servers


def _git_commit() -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(netpoll.__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        out = subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _meta(
    args: argparse.Namespace, pins: tuple[int, int] | None, rounds: int, client: LoadClient
) -> dict[str, Any]:
    return {
        "client": {
            "kind": client.kind,
            "path": client.path,
            "reason": client.reason,
            "text": client.describe(),
        },
        "netpoll": netpoll.__version__,
        "git": _git_commit(),
        "build": _build.build_info(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pinning": None if pins is None else {"server_cpu": pins[0], "client_cpu": pins[1]},
        "rounds": rounds,
        "full": bool(getattr(args, "full", False)),
        "available_backends": netpoll.available_backends(),
        "nofile_limit": raise_nofile_limit(),
        "loadavg_at_start": _loadavg(),
    }


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _describe_setup(meta: dict[str, Any], servers: list[Server], scenarios: list[Scenario]) -> str:
    pins = meta["pinning"]
    pin = (
        f"server pinned to CPU {pins['server_cpu']}, client to CPU {pins['client_cpu']}"
        if pins
        else "no CPU pinning"
    )
    git = f" ({meta['git']})" if meta["git"] else ""
    build = meta["build"]
    return (
        f"netpoll {meta['netpoll']}{git} on {meta['python']}, {meta['platform']}, "
        f"{meta['cpus']} CPUs; {pin}\n"
        f"build: {build['build']} ({build['reason']})\n"
        f"servers: {', '.join(s.name for s in servers)}; "
        f"{meta['rounds']} round(s), servers interleaved; "
        f"one fresh server process per measurement\n"
        f"client: {meta['client']['text']}"
    )


def _estimate(scenarios: list[Scenario], servers: int, rounds: int) -> float:
    per = 0.0
    for s in scenarios:
        if s.mode == "idle":
            per += 0.6 + s.conns / 2000.0
        elif s.mode == "bulk":
            per += 0.5 + s.total / (400 << 20)
        else:
            per += 0.5 + s.warmup + s.seconds + s.conns / 2000.0
    return per * servers * rounds


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` describes; print the table (or JSON).

    Returns 0 when every measurement completed, 1 when the benchmark itself
    broke (a server or client failed or timed out); never non-zero because of
    a speed figure.  Raises :class:`netpoll.BackendError` for an unknown or
    unavailable ``--backend``.
    """
    quiet = bool(getattr(args, "quiet", False))
    as_json = bool(getattr(args, "json", False))
    if getattr(args, "tls", False):
        return _run_tls(args, quiet, as_json)
    rounds = int(_setting(args, "rounds"))
    servers = _servers(args)
    scenarios = build_scenarios(args)
    raise_nofile_limit()
    pins = pinning_plan() if getattr(args, "pin", True) else None

    def say(text: str, end: str = "\n") -> None:
        if not quiet:
            sys.stderr.write(text + end)
            sys.stderr.flush()

    try:
        client = resolve(getattr(args, "client", None) or "auto")
    except LoadgenBuildError as exc:
        sys.stderr.write(f"netpoll bench: --client c: {exc}\n")
        return 1
    if client.reason:  # the compiler's message, once; the header repeats its first line
        say(f"note: {client.reason}\nnote: falling back to the Python load client")
    meta = _meta(args, pins, rounds, client)

    say(_describe_setup(meta, servers, scenarios))
    load = meta["loadavg_at_start"]
    if load is not None and load > 0.7:
        say(
            f"note: the 1-minute load average is {load:.1f}: other processes compete for "
            "the CPUs, so the figures will be noisy"
        )
    count = sum(runs_in(sv, sc) for sc in scenarios for sv in servers) * rounds
    say(f"{count} measurements, about {_estimate(scenarios, len(servers), rounds):.0f} s")
    if any(not runs_in(sv, sc) for sc in scenarios for sv in servers):
        say("note: the floor server has no read deadlines: it sits out the deadline scenario")
    width = max(len(s.name) for s in servers)
    lwidth = max(len(s.label) for s in scenarios) if scenarios else 0

    def on_start(i: int, total: int, scenario: Scenario, server: Server, rnd: int) -> None:
        say(
            f"[{i:>{len(str(total))}}/{total}] {scenario.label:<{lwidth}}  "
            f"{server.name:<{width}}  round {rnd}/{rounds} ... ",
            end="",
        )

    def progress(i: int, total: int, m: Measurement) -> None:
        if m.error is not None:
            say(f"FAILED: {m.error}")
            return
        r = m.result
        cpu = r.get("client_cpu_pct")
        cpu_text = f"  (client CPU {cpu:.0f}%)" if cpu is not None else ""
        note = " (incomplete: time bound hit)" if r.get("complete") is False else ""
        other = r.get("other_cpu_pct")
        if other is not None and other >= 20:
            note += f"  [other load {other:.0f}%]"
        if m.settle_wait >= 1.0:
            note += f"  [waited {m.settle_wait:.0f} s for quiet]"
        value = m.value if m.value is not None else float("nan")
        say(f"{value:,.1f} {m.scenario.unit}{note}{cpu_text}")

    t0 = time.monotonic()
    measurements = run_all(
        scenarios,
        servers,
        rounds,
        pins,
        progress,
        on_start,
        settle_max=float(_setting(args, "settle")),
        client=client,
    )
    calls_doc: dict[str, Any] | None = None
    if "calls" in (getattr(args, "scenarios", None) or SCENARIOS):
        say("call counts (sys.monitoring) ... ", end="")
        try:
            calls_doc = calls_bench.measure_all(CALLS_CONNS, CALLS_MESSAGES)
        except RuntimeError as exc:
            calls_doc = {"error": str(exc)}
        say("skipped" if "skipped" in calls_doc else calls_doc.get("error", "done"))
    wall = time.monotonic() - t0
    summaries = summarize(measurements)
    errors = [f"{s.scenario.label} / {s.server.name}: {e}" for s in summaries for e in s.errors]
    baselines = [b for b in BASELINES if any(s.kind == b for s in servers)]

    doc = {
        "meta": meta | {"wall_seconds": wall},
        "scenarios": to_json(summaries, measurements),
        "errors": errors,
        "calls": calls_doc,
    }
    if calls_doc is not None and "error" in calls_doc:
        errors.append(f"call counts: {calls_doc['error']}")
    save = getattr(args, "save", None)
    if save:
        with open(save, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print(_describe_setup(meta, servers, scenarios))
        print()
        print(format_table(summaries, baselines))
        print()
        print(
            "median over rounds; vs B = netpoll's median / baseline B's (above 1 is better "
            "for rates, below 1 is better for KB/conn);\nlatency = round trip per message "
            "(per connect+echo+close cycle); peak RSS = server VmHWM; srv/cli CPU = "
            "user+sys time / wall\n(100% = one CPU; '!' marks a load client at 90% or "
            "more: there the client, not only the server, was the limit);\nother = busy CPU "
            "of the whole machine not charged to the server or client (other processes, "
            "interrupt-time network work):\nhigh values mean the figures were disturbed."
        )
        if calls_doc is not None and "error" not in calls_doc:
            print()
            print(calls_bench.format_table(calls_doc))
        print(f"wall time {wall:.1f} s")
    if errors:
        sys.stderr.write("netpoll bench: some measurements failed:\n")
        for e in errors:
            sys.stderr.write(f"  {e}\n")
        return 1
    return 0


def _run_tls(args: argparse.Namespace, quiet: bool, as_json: bool) -> int:
    """``--tls``: the TLS comparison of :mod:`netpoll.bench.tls` with this run's settings."""
    from netpoll.bench import tls as tls_bench

    if getattr(args, "backend", None):
        netpoll.use_backend(args.backend)
    doc = tls_bench.run(
        bulk_bytes=int(_setting(args, "bulk")),
        size=int(getattr(args, "size", 64)),
        seconds=float(_setting(args, "seconds")),
        rounds=int(_setting(args, "rounds")),
        pin=bool(getattr(args, "pin", True)),
        say=(lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True)),
    )
    if getattr(args, "save", None):
        with open(args.save, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
    print(json.dumps(doc, indent=2) if as_json else tls_bench.format_table(doc))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and :func:`run`; for ``python -m netpoll.bench`` and scripts."""
    parser = argparse.ArgumentParser(
        prog="python -m netpoll.bench",
        description="Echo benchmark: netpoll side by side with plain-threads baselines.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except netpoll.BackendError as exc:
        print(f"netpoll bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("netpoll bench: interrupted", file=sys.stderr)
        return 130
