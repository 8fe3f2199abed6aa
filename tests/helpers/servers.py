"""Real servers for the library tests: redis-server, PostgreSQL, HTTP/HTTPS, SMTP.

Each is a context manager that starts the server as a child process bound to
127.0.0.1 on a free port, waits until it answers, yields what a client needs
(a small frozen dataclass) and stops it however the block ends.  The session
fixtures of ``tests/libs/conftest.py`` wrap them, so each server starts at most
once per test run, and only when a test that needs it is collected to run.

Child processes rather than threads: their threads, fds and GIL stay out of
the test process, whose leak check counts fds and threads and whose tests
measure how long a goroutine waits for its M.

A server whose program (or Python package) is missing skips the tests that
need it, with the reason and the package to install, except in CI
(``CI=true``, as ``.ci/run`` sets), where it fails them: CI installs every
server (``.ci/run``), so a missing one there is a broken setup, not a
platform without it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

HELPERS = Path(__file__).resolve().parent
#: How long a server may take to start answering (PostgreSQL's initdb is the slow one).
START_TIMEOUT = 60.0
#: How long a server may take to stop before it is killed.
STOP_TIMEOUT = 10.0


def in_ci() -> bool:
    """True when running in CI (``CI`` set to a true value), where no server may be missing."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(what: str, install: str) -> NoReturn:
    """Skip (or, in CI, fail) the test: ``what`` is not installed here."""
    msg = f"{what} is not installed on this machine ({install})"
    if in_ci():
        pytest.fail(f"{msg}; CI must run the library tests (.ci/run installs it)", pytrace=False)
    pytest.skip(msg)


def require_module(name: str, install: str) -> None:
    """Skip (or fail in CI) unless the Python package ``name`` can be imported."""
    if importlib.util.find_spec(name) is None:
        unavailable(f"the Python package {name!r}", install)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a clash)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Send ``sig``, wait for the child, kill it if it lingers; close its pipes."""
    try:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
    finally:
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[Any], what: str, log: Path | None = None
) -> None:
    """Poll ``ready()`` until true; fail if ``proc`` exits or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "timed out"
            raise RuntimeError(f"{what} did not start ({state}); its log:\n{tail}")
        time.sleep(0.05)


def _banner(proc: subprocess.Popen[str], prefix: str, what: str) -> list[str]:
    """The words after ``prefix`` on the first stdout line of ``proc`` (bounded wait)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith(prefix):
        stop(proc, signal.SIGKILL)
        raise RuntimeError(f"{what} did not start: first line {line!r}")
    return line.split()[1:]


# -- redis ---------------------------------------------------------------------


@dataclass(frozen=True)
class RedisServer:
    """Where a redis-server listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """``redis://host:port/0``."""
        return f"redis://{self.host}:{self.port}/0"


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """``redis-server`` on 127.0.0.1, no persistence, in a temp dir."""
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server", "apt-get install redis-server")
    with tempfile.TemporaryDirectory(prefix="np-redis-") as d:
        log = Path(d) / "redis.log"
        for attempt in range(5):
            port = free_port()
            args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--dir", d, "--protected-mode", "no"]
            args += ["--daemonize", "no", "--logfile", str(log), "--loglevel", "notice"]
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            try:
                _wait_until(lambda port=port: _redis_pings(port), proc, "redis-server", log)
            except RuntimeError:
                stop(proc, signal.SIGKILL)
                if attempt == 4 or "Address already in use" not in log.read_text():
                    raise
                continue
            break
        try:
            yield RedisServer("127.0.0.1", port)
        finally:
            stop(proc)


# -- PostgreSQL ----------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    """Where a PostgreSQL server listens (trust auth, user and database ``postgres``)."""

    host: str
    port: int
    user: str = "postgres"
    dbname: str = "postgres"

    @property
    def dsn(self) -> str:
        """A libpq connection string."""
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"


def postgres_bindir() -> Path | None:
    """The directory with ``initdb`` and ``postgres``: Debian's newest, else PATH's."""

    def version(p: str) -> tuple[int, ...]:
        name = Path(p).parent.name
        return tuple(int(x) for x in name.split(".") if x.isdigit())

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(d) / "initdb").exists() and (Path(d) / "postgres").exists():
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).parent / "postgres").exists():
        return Path(initdb).parent
    return None


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, fsync off), stopped at the end.

    PostgreSQL refuses to run as root: when this process is root, initdb and
    the server run as the ``postgres`` user (Debian's package creates it) in
    a temp dir that user owns; the unix socket goes to that dir too.
    """
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL (initdb, postgres)", "apt-get install postgresql")
    as_user: dict[str, Any] = {}
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root, PostgreSQL needs an unprivileged 'postgres' user to run as"
            ) from None
        owner = (pw.pw_uid, pw.pw_gid)
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    # Not under pytest's tmp_path: its parents are 0700 root, closed to "postgres".
    top = Path(tempfile.mkdtemp(prefix="np-pg-"))
    try:
        if owner is not None:
            os.chown(top, *owner)
        data, log = top / "data", top / "postgres.log"
        initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        initdb += ["--no-sync", "-E", "UTF8", "--locale=C"]
        done = subprocess.run(
            initdb, cwd=top, capture_output=True, text=True, timeout=START_TIMEOUT, **as_user
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr[-3000:]}")
        for attempt in range(5):
            port = free_port()
            args = [str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
            args += ["-h", "127.0.0.1", "-k", str(top)]
            for opt in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                args += ["-c", opt]
            with open(log, "ab") as logf:
                if owner is not None:
                    os.fchown(logf.fileno(), *owner)
                proc = subprocess.Popen(
                    args, cwd=top, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, **as_user
                )
            isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]

            def ready(isready: list[str] = isready) -> bool:
                return subprocess.run(isready, timeout=START_TIMEOUT).returncode == 0

            try:
                _wait_until(ready, proc, "postgres", log)
            except RuntimeError:
                stop(proc, signal.SIGKILL)
                if attempt == 4 or "already in use" not in log.read_text(errors="replace"):
                    raise
                continue
            break
        try:
            yield PostgresServer("127.0.0.1", port)
        finally:
            stop(proc, signal.SIGINT)  # SIGINT: PostgreSQL's "fast" shutdown
    finally:
        shutil.rmtree(top, ignore_errors=True)


# -- HTTP and HTTPS --------------------------------------------------------------


@dataclass(frozen=True)
class HTTPServers:
    """An HTTP and an HTTPS server (the paths of :mod:`tests.helpers.http_server`).

    ``ca_pem`` is the trustme CA that signed the HTTPS certificate (for
    "localhost" and 127.0.0.1): pass it as ``verify=``/``cafile=``.
    """

    host: str
    http_port: int
    https_port: int
    ca_pem: str

    def url(self, scheme: str, path: str) -> str:
        """``scheme://host:port/path`` on the server of that scheme."""
        port = self.https_port if scheme == "https" else self.http_port
        return f"{scheme}://{self.host}:{port}/{path.lstrip('/')}"

    def port(self, scheme: str) -> int:
        """The port of the ``http`` or ``https`` server."""
        return self.https_port if scheme == "https" else self.http_port


@contextlib.contextmanager
def http_servers() -> Iterator[HTTPServers]:
    """The stdlib HTTP/HTTPS server script in a child process, with a trustme CA."""
    require_module("trustme", "pip install trustme")
    import trustme

    with tempfile.TemporaryDirectory(prefix="np-http-") as d:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        ca_pem, server_pem = Path(d) / "ca.pem", Path(d) / "server.pem"
        ca.cert_pem.write_to_path(str(ca_pem))
        cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        proc = subprocess.Popen(
            [sys.executable, str(HELPERS / "http_server.py"), str(server_pem)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            http_port, https_port = map(int, _banner(proc, "PORTS", "the HTTP server"))
            yield HTTPServers("127.0.0.1", http_port, https_port, str(ca_pem))
        finally:
            stop(proc)


# -- SMTP ------------------------------------------------------------------------


@dataclass(frozen=True)
class SMTPServer:
    """Where the aiosmtpd server of :mod:`tests.helpers.smtp_server` listens."""

    host: str
    port: int


@contextlib.contextmanager
def smtp_server() -> Iterator[SMTPServer]:
    """aiosmtpd in a child process; its DATA reply carries the message's digest."""
    require_module("aiosmtpd", "pip install aiosmtpd")
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "smtp_server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        (port,) = map(int, _banner(proc, "PORT", "the SMTP server"))
        yield SMTPServer("127.0.0.1", port)
    finally:
        stop(proc)


__all__ = [
    "HTTPServers",
    "PostgresServer",
    "RedisServer",
    "SMTPServer",
    "free_port",
    "http_servers",
    "in_ci",
    "postgres_bindir",
    "postgres_server",
    "redis_server",
    "require_module",
    "smtp_server",
    "unavailable",
]
