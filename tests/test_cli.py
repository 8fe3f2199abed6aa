"""The ``netpoll`` command, run as a subprocess (``python -m netpoll ...``).

Covers ``info`` (text and JSON), ``echo`` (a real round trip over loopback,
then SIGINT/SIGTERM for a clean exit 0), ``bench`` wiring, and the error
paths: bad flags exit 2, an unknown backend or a taken port exit 1 with one
clear line and no traceback.  The subprocess inherits the test env (so under
tox it runs on the factor's backend) and imports the same netpoll as the tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import netpoll
from netpoll.cli import listen_address, main
from netpoll.core.runtime import runtime
from tests.helpers import proc

BUILTIN = ("epoll", "kqueue", "poll", "select")
#: Generous bounds: these tests check behaviour, not speed.
START_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0


def cli_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a CLI subprocess: this netpoll first on the path."""
    env = dict(os.environ)
    root = str(Path(netpoll.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m netpoll ARGS`` to completion."""
    return proc.run([sys.executable, "-m", "netpoll", *args], env=env or cli_env(), timeout=timeout)


class EchoProcess:
    """A running ``netpoll echo`` whose output is read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netpoll", "echo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=proc.child_env(env or cli_env()),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        #: "a thread" or "a goroutine", from the ``listening on`` line.
        self.per_connection = ""
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_listening(self) -> tuple[str, int, str]:
        """(host, port, backend) from the ``listening on`` line."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no 'listening on' line within {START_TIMEOUT}s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"echo exited early: {self.finish()}")
            m = re.search(r"listening on (\S+):(\d+) \(backend (\w+), (.+) per connection\)", line)
            if m:
                self.per_connection = m.group(4)
                return m.group(1), int(m.group(2)), m.group(3)

    def finish(self, timeout: float = EXIT_TIMEOUT) -> tuple[int, str, str]:
        """Wait for exit; (returncode, stdout, stderr)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.dump_and_kill(self.proc)  # its stacks go to stderr
            for t in self._readers:
                t.join(10)
            raise AssertionError(
                f"echo did not exit within {timeout}s; stacks and stderr: {''.join(self.stderr)}"
            ) from None
        for t in self._readers:
            t.join(10)
        return self.proc.returncode, "".join(self.stdout), "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def echo_server(*args: str, env: dict[str, str] | None = None) -> Iterator[EchoProcess]:
    """Start ``netpoll echo ARGS``; always reaped, killed if still running."""
    echo = EchoProcess(*args, env=env)
    try:
        yield echo
    finally:
        echo.kill()


def roundtrip(host: str, port: int, payload: bytes) -> bytes:
    """Send ``payload`` over a plain blocking socket and read it back."""
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return bytes(got)


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------


def test_info_text_lists_every_backend() -> None:
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for heading in ("platform:", "python:", "backends", "chosen:", "somaxconn:", "fd limit:"):
        assert heading in out
    for name in BUILTIN:
        assert re.search(rf"^\s+{name}\s+(available .+|unavailable: .+)$", out, re.M), out
    wake = "an eventfd" if hasattr(os, "eventfd") else "a pipe"
    assert f"park:      a thread waits in the kernel on its fd + {wake}" in out, out
    assert "Traceback" not in r.stderr


def test_info_json_matches_the_registry() -> None:
    r = run_cli("info", "--json", env=cli_env(NETPOLL_BACKEND=None))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    names = [b["name"] for b in info["backends"]]
    assert set(BUILTIN) <= set(names)
    for b in info["backends"]:
        assert isinstance(b["available"], bool)
        assert (b["why_unavailable"] is None) == b["available"]
    available = [b["name"] for b in info["backends"] if b["available"]]
    assert {"poll", "select"} <= set(available)
    if sys.platform.startswith("linux"):
        assert "epoll" in available
    assert info["chosen"] == {"name": available[0], "chosen_by": "default", "error": None}
    assert info["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert info["fd_limit"]["soft"] != 0
    if sys.platform.startswith("linux"):
        assert isinstance(info["somaxconn"], int) and info["somaxconn"] > 0
    assert info["park"] == ("fd + eventfd" if hasattr(os, "eventfd") else "fd + pipe")


def test_info_reports_the_env_choice() -> None:
    r = run_cli("info", "--json", env=cli_env(NETPOLL_BACKEND="nope,select"))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["chosen"]["name"] == "select"
    assert info["chosen"]["chosen_by"] == "env"
    text = run_cli("info", env=cli_env(NETPOLL_BACKEND="select")).stdout
    assert "chosen:    select (by NETPOLL_BACKEND=select)" in text


def test_info_with_an_unknown_env_backend_fails_clearly() -> None:
    r = run_cli("info", env=cli_env(NETPOLL_BACKEND="nope"))
    assert r.returncode == 1
    assert "unknown backend 'nope'" in r.stdout
    assert "available backends:" in r.stdout
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------
# echo
# --------------------------------------------------------------------------


#: ``netpoll echo`` flags for each kind of G per connection.
G_FLAGS = {"threads": (), "goroutines": ("--goroutines",)}


@pytest.mark.parametrize("gs", list(G_FLAGS))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_echo_round_trip_then_signal_stops_cleanly(sig: signal.Signals, gs: str) -> None:
    with echo_server("--listen", "127.0.0.1:0", *G_FLAGS[gs]) as echo:
        host, port, backend = echo.wait_listening()
        assert echo.per_connection == ("a goroutine" if gs == "goroutines" else "a thread")
        assert host == "127.0.0.1" and port > 0
        expected = os.environ.get("NETPOLL_BACKEND", "").split(",")[0].strip()
        if expected:
            assert backend == expected
        assert roundtrip(host, port, b"hello netpoll\n") == b"hello netpoll\n"
        big = os.urandom(1 << 20)  # larger than the socket buffers: parks writes
        assert roundtrip(host, port, big) == big
        # A client still connected when the signal comes is closed by the server.
        idle = socket.create_connection((host, port), timeout=20)
        try:
            idle.sendall(b"x")
            assert idle.recv(1) == b"x"
            echo.proc.send_signal(sig)
            code, out, err = echo.finish()
            assert idle.recv(1) == b""
        finally:
            idle.close()
    assert code == 0, err
    assert "stopped" in out
    assert "Traceback" not in err
    # The port is free again: the listener was closed.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


@pytest.mark.parametrize("gs", list(G_FLAGS))
def test_echo_many_concurrent_clients(gs: str) -> None:
    with echo_server("--listen", "127.0.0.1:0", *G_FLAGS[gs]) as echo:
        host, port, _ = echo.wait_listening()
        errors: list[BaseException] = []

        def client(i: int) -> None:
            try:
                payload = f"client {i} ".encode() * 100
                assert roundtrip(host, port, payload) == payload
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        echo.proc.send_signal(signal.SIGINT)
        code, out, err = echo.finish()
    assert code == 0, err
    assert "served 20 connection(s)" in out


def test_echo_backend_flag() -> None:
    with echo_server("--listen", "127.0.0.1:0", "--backend", "select") as echo:
        host, port, backend = echo.wait_listening()
        assert backend == "select"
        assert roundtrip(host, port, b"via select") == b"via select"
        echo.proc.send_signal(signal.SIGINT)
        code, _, err = echo.finish()
    assert code == 0, err


# --------------------------------------------------------------------------
# errors and exit codes
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nosuchcommand"],
        ["info", "--bogus"],
        ["echo", "--listen", "nonsense"],
        ["echo", "--listen", "127.0.0.1:99999"],
        ["echo", "--listen", "127.0.0.1:http"],
    ],
    ids=lambda a: " ".join(a) or "no-args",
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "usage: netpoll" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_backend_exits_1_naming_the_available_ones() -> None:
    r = run_cli("echo", "--listen", "127.0.0.1:0", "--backend", "nope")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "unknown backend 'nope'" in r.stderr
    assert "available backends:" in r.stderr
    for name in runtime.registry.available():
        if name != "kqueue":  # kqueue's availability here may depend on the env
            assert name in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1  # one line


def test_taken_port_exits_1_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli("echo", "--listen", f"127.0.0.1:{port}")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "address already in use" in r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------
# bench wiring
# --------------------------------------------------------------------------


def test_bench_is_wired_to_the_engine() -> None:
    r = run_cli("bench", "--help")
    if importlib.util.find_spec("netpoll.bench") is None:
        assert r.returncode == 1
        assert "benchmark engine" in r.stderr
        assert "Traceback" not in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert "usage: netpoll bench" in r.stdout


def test_bench_unknown_backend_exits_1() -> None:
    if importlib.util.find_spec("netpoll.bench") is None:
        pytest.skip("netpoll.bench is not installed")
    r = run_cli("bench", "--backend", "nope")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "nope" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------
# in process: argument validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["127.0.0.1:0", ":7000", "[::1]:80", "localhost:65535"])
def test_listen_address_accepts(text: str) -> None:
    assert listen_address(text) == text


@pytest.mark.parametrize("text", ["7000", "host:", "host:-1", "host:65536", "[::1:80"])
def test_listen_address_rejects(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        listen_address(text)


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert netpoll.__version__ in capsys.readouterr().out
