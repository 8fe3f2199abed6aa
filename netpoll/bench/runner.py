"""Orchestration: plan the measurements, run each server and client process.

Every measurement starts a fresh server process (so its peak RSS and CPU are
its own), runs one load-client process against it, reads the server's peak
RSS, and stops the server.  Servers take turns inside each round (A B C, A B
C, ...), so slow drifts of the machine hit every server alike.  Every child
process is tracked and killed if anything goes wrong, including Ctrl-C, and
every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, Any

import netpoll
from netpoll.bench.loadgen import LoadClient
from netpoll.bench.procstat import busy_fraction, peak_rss_bytes
from netpoll.bench.server import NO_DEADLINE_KINDS

#: Seconds a server process gets to print its READY line.
SERVER_START_TIMEOUT = 30.0

#: Machine-wide busy CPU (percent of one CPU) below which the machine counts
#: as quiet enough to start a measurement (see :func:`settle`).
QUIET_BUSY_PCT = 25.0

#: Seconds a server gets to exit after its stdin is closed, before SIGKILL.
SERVER_STOP_TIMEOUT = 3.0


class BenchError(Exception):
    """The benchmark itself broke (a process failed or timed out)."""


@dataclass(frozen=True)
class Server:
    """One server under test: a kind and, for netpoll, a poller backend."""

    kind: str
    backend: str | None = None

    @property
    def name(self) -> str:
        """Display name: ``netpoll[epoll]``, ``threads``, ``asyncio``."""
        return f"{self.kind}[{self.backend}]" if self.backend else self.kind


@dataclass(frozen=True)
class Scenario:
    """One workload, measured once per server per round."""

    key: str
    label: str
    mode: str
    conns: int
    size: int = 64
    seconds: float = 2.0
    warmup: float = 0.3
    total: int = 0
    hold: float = 0.5
    bufsize: int = 4096
    setup_timeout: float = 30.0
    #: Servers bound each read by this many seconds, set per message (0: none).
    deadline: float = 0.0

    @property
    def unit(self) -> str:
        """Unit of the headline figure."""
        return {"pingpong": "msg/s", "connect": "conn/s", "idle": "KB/conn", "bulk": "MiB/s"}[
            self.mode
        ]

    @property
    def higher_is_better(self) -> bool:
        """False for memory per connection, True for rates."""
        return self.mode != "idle"

    def client_spec(self) -> dict[str, Any]:
        """The part of the client's JSON spec that describes the workload."""
        return {
            "mode": self.mode,
            "conns": self.conns,
            "size": self.size,
            "seconds": self.seconds,
            "warmup": self.warmup,
            "total": self.total,
            "hold": self.hold,
            "setup_timeout": self.setup_timeout,
        }

    def client_timeout(self) -> float:
        """How long the client process may take before it is killed."""
        return self.setup_timeout * 2 + self.warmup + self.seconds + self.hold + 30.0


@dataclass
class Measurement:
    """One (scenario, server, round) result or its error."""

    scenario: Scenario
    server: Server
    round: int
    value: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    peak_rss: int | None = None
    error: str | None = None
    #: machine-wide busy CPU (% of one CPU) just before, and seconds waited for it
    busy_before: float | None = None
    settle_wait: float = 0.0


def headline(scenario: Scenario, result: dict[str, Any]) -> float | None:
    """The scenario's headline figure from a client result, in its unit."""
    if scenario.mode == "idle":
        b = result.get("bytes_per_conn")
        return None if b is None else float(b) / 1000.0
    if scenario.mode == "bulk":
        return float(result["rate"]) / (1024 * 1024)
    return float(result["rate"])


def _child_env() -> dict[str, str]:
    """Environment for children: netpoll importable exactly as it is here."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(netpoll.__file__)))
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    env.pop("NETPOLL_BACKEND", None)  # the server gets --backend explicitly
    return env


class ProcessGroup:
    """The live child processes; :meth:`kill_all` ends every one of them."""

    def __init__(self) -> None:
        self.procs: set[subprocess.Popen[bytes]] = set()

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start a child and track it."""
        proc = subprocess.Popen(argv, env=_child_env(), **kw)
        self.procs.add(proc)
        return proc

    def reap(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait up to ``timeout`` for ``proc``, then kill it; forget it."""
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
        self.procs.discard(proc)

    def kill_all(self) -> None:
        """Kill and reap every tracked child."""
        for proc in list(self.procs):
            if proc.poll() is None:
                with suppress(OSError):
                    proc.kill()
            with suppress(subprocess.TimeoutExpired, OSError):
                proc.wait(5.0)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with suppress(OSError):
                        stream.close()
            self.procs.discard(proc)


def _tail(f: IO[bytes], limit: int = 600) -> str:
    with suppress(OSError):
        f.flush()
        f.seek(0)
        text = f.read().decode("utf-8", "replace").strip()
        return text[-limit:]
    return ""


def _read_ready(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int]:
    """Wait for the server's ``READY <port> <pid>`` line."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"server did not start within {timeout:g} s")
            if sel.select(min(left, 0.5)):
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise BenchError("server exited before it was ready")
                data += chunk
            elif proc.poll() is not None:
                raise BenchError(f"server exited with status {proc.returncode} before ready")
    words = data.split(b"\n", 1)[0].split()
    if len(words) != 3 or words[0] != b"READY":
        raise BenchError(f"unexpected server greeting: {data[:200]!r}")
    return int(words[1]), int(words[2])


@contextmanager
def running_server(
    group: ProcessGroup, server: Server, bufsize: int, cpu: int | None, deadline: float = 0.0
) -> Iterator[tuple[subprocess.Popen[bytes], int, IO[bytes]]]:
    """Start ``server`` in its own process; yields (process, port, stderr file)."""
    argv = [sys.executable, "-m", "netpoll.bench.server", "--kind", server.kind]
    argv += ["--bufsize", str(bufsize)]
    if deadline:
        argv += ["--deadline", str(deadline)]
    if server.backend:
        argv += ["--backend", server.backend]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    with tempfile.TemporaryFile() as errfile:
        proc = group.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile)
        try:
            try:
                port, _pid = _read_ready(proc, SERVER_START_TIMEOUT)
            except BenchError as exc:
                detail = _tail(errfile)
                raise BenchError(
                    f"{server.name}: {exc}" + (f": {detail}" if detail else "")
                ) from None
            yield proc, port, errfile
        finally:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with suppress(OSError):
                        stream.close()
            group.reap(proc, SERVER_STOP_TIMEOUT)


def run_client(
    group: ProcessGroup, spec: dict[str, Any], timeout: float, client: LoadClient | None = None
) -> dict[str, Any]:
    """Run one load-client process with ``spec``; its JSON result.

    ``client`` picks the C load client for the modes it implements (see
    :mod:`netpoll.bench.loadgen`); otherwise, and for the other modes, the
    Python one runs.  The result says which in its ``client`` field.
    """
    c_argv = client.argv(spec) if client is not None else None
    argv = c_argv or [sys.executable, "-m", "netpoll.bench.client"]
    stdin = b"" if c_argv else json.dumps(spec).encode()
    proc = group.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"load client did not finish within {timeout:g} s") from None
    finally:
        group.reap(proc, 5.0)
    try:
        result: dict[str, Any] = json.loads(out.decode() or "null")
    except ValueError:
        result = {}
    if not isinstance(result, dict) or not result:
        detail = err.decode("utf-8", "replace").strip()[-600:]
        raise BenchError(f"load client failed (status {proc.returncode}): {detail}")
    if "error" in result:
        raise BenchError(f"load client: {result['error']}")
    result["client"] = "c" if c_argv else "python"
    return result


def measure(
    group: ProcessGroup,
    scenario: Scenario,
    server: Server,
    rnd: int,
    pins: tuple[int, int] | None,
    client: LoadClient | None = None,
) -> Measurement:
    """One measurement: fresh server, one client run, the server's peak RSS."""
    m = Measurement(scenario, server, rnd)
    server_cpu, client_cpu = pins if pins else (None, None)
    try:
        with running_server(group, server, scenario.bufsize, server_cpu, scenario.deadline) as (
            proc,
            port,
            ef,
        ):
            spec = scenario.client_spec()
            spec.update({"host": "127.0.0.1", "port": port, "server_pid": proc.pid})
            spec["cpu"] = client_cpu
            try:
                m.result = run_client(group, spec, scenario.client_timeout(), client)
            except BenchError as exc:
                detail = _tail(ef) if proc.poll() is not None else ""
                raise BenchError(f"{exc}" + (f" (server: {detail})" if detail else "")) from None
            m.peak_rss = peak_rss_bytes(proc.pid)
            if proc.poll() is not None:
                raise BenchError(f"server exited with status {proc.returncode}: {_tail(ef)}")
        m.value = headline(scenario, m.result)
    except BenchError as exc:
        m.error = str(exc)
    return m


def settle(max_wait: float, threshold: float = QUIET_BUSY_PCT) -> tuple[float | None, float]:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle.

    Samples machine-wide busy CPU over 0.3 s windows until it is below
    ``threshold`` percent of one CPU.  Returns (last busy figure, seconds
    waited); (None, 0) where ``/proc/stat`` is missing or max_wait is 0.
    """
    if max_wait <= 0:
        return None, 0.0
    t0 = time.monotonic()
    while True:
        busy = busy_fraction(0.3)
        waited = time.monotonic() - t0
        if busy is None or busy < threshold or waited >= max_wait:
            return busy, waited
        time.sleep(0.2)


def runs_in(server: Server, scenario: Scenario) -> bool:
    """Whether ``server`` is measured in ``scenario`` (the floor has no deadlines)."""
    return not (scenario.deadline and server.kind in NO_DEADLINE_KINDS)


def run_all(
    scenarios: list[Scenario],
    servers: list[Server],
    rounds: int,
    pins: tuple[int, int] | None,
    progress: Callable[[int, int, Measurement], None] | None = None,
    on_start: Callable[[int, int, Scenario, Server, int], None] | None = None,
    settle_max: float = 0.0,
    client: LoadClient | None = None,
) -> list[Measurement]:
    """Every scenario, rounds x servers interleaved; kills children on any exit.

    With ``settle_max`` > 0, each measurement first waits up to that long for
    other processes to leave the CPUs alone (see :func:`settle`).  ``client``
    is the load client (None: the Python one).  Servers without read
    deadlines (:data:`~netpoll.bench.server.NO_DEADLINE_KINDS`) sit out the
    scenarios that set one.
    """
    group = ProcessGroup()
    results: list[Measurement] = []
    plan = [(sc, [s for s in servers if runs_in(s, sc)]) for sc in scenarios]
    total = sum(len(ss) for _, ss in plan) * rounds
    i = 0
    try:
        for scenario, chosen in plan:
            for rnd in range(1, rounds + 1):
                for server in chosen:
                    i += 1
                    busy, waited = settle(settle_max)
                    if on_start:
                        on_start(i, total, scenario, server, rnd)
                    m = measure(group, scenario, server, rnd, pins, client)
                    m.busy_before, m.settle_wait = busy, waited
                    results.append(m)
                    if progress:
                        progress(i, total, m)
    finally:
        group.kill_all()
    return results
