"""The C load client (``loadgen.c`` beside this file): find, build and cache it.

The Python load client (:mod:`netpoll.bench.client`) costs about as much CPU
per message as a fast server does, so against the fastest servers it is the
limit and the ratios say more about the client than about the server.  The
C client measures the same two throughput modes (``pingpong`` and
``connect``) with the same JSON result; it is compiled on first use with
the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) into a
per-user cache directory, one executable per (source, compiler) hash, so a
changed source or compiler builds afresh and concurrent builds cannot see a
half-written file (each writes a temporary file and renames it).

:func:`resolve` picks the client for ``--client c|python|auto``:
``auto`` uses the C client when it builds and falls back to the Python one
(with the reason, which the report header shows) when there is no compiler,
no Linux epoll, or the compile fails.  The ``idle`` and ``bulk`` modes
always run the Python client (they are not client-bound per message).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The modes the C client implements; the others always run client.py.
C_MODES = ("pingpong", "connect")

#: The ``--client`` choices.
CHOICES = ("auto", "c", "python")

#: Seconds the compiler gets before it is killed.
COMPILE_TIMEOUT = 120.0

SOURCE = Path(__file__).with_name("loadgen.c")

#: Compiler flags: optimized, warnings on (they show in a failure's message).
CFLAGS = ["-O2", "-Wall"]


class LoadgenBuildError(Exception):
    """The C client cannot be built here; the message says why."""


@dataclass(frozen=True)
class LoadClient:
    """Which load client runs: ``kind`` "c" (with its ``path``) or "python"."""

    kind: str
    path: str | None = None
    #: Why the Python client runs under ``auto`` (None when by choice or C runs).
    reason: str | None = None

    def describe(self) -> str:
        """One line for the report header."""
        if self.kind == "c":
            return "C load client (netpoll/bench/loadgen.c, one epoll thread) for ping-pong/connect"
        why = f" ({self.reason.splitlines()[0]})" if self.reason else ""
        return f"Python load client (single-threaded epoll loop){why}"

    def argv(self, spec: dict[str, object]) -> list[str] | None:
        """The C client's command line for ``spec``; None when client.py must run it."""
        if self.kind != "c" or self.path is None or spec.get("mode") not in C_MODES:
            return None
        keys = ("mode", "host", "port", "conns", "size", "seconds", "warmup", "setup_timeout")
        args = [self.path] + [f"{k}={spec[k]}" for k in keys if spec.get(k) is not None]
        args.append(f"server_pid={spec.get('server_pid') or 0}")
        cpu = spec.get("cpu")
        args.append(f"cpu={-1 if cpu is None else cpu}")
        return args


def compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` (split like a shell word list) if set, else the first
    of cc, gcc, clang on PATH; None when there is none (``$CC`` naming a missing program
    counts as none)."""
    cc = os.environ.get("CC")
    if cc:
        words = shlex.split(cc)
        if words and shutil.which(words[0]):
            return [shutil.which(words[0]) or words[0], *words[1:]]
        return None
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def cache_dir() -> Path:
    """Per-user cache directory of built clients: ``$XDG_CACHE_HOME/netpoll`` or
    ``~/.cache/netpoll`` (``$NETPOLL_CACHE_DIR`` overrides)."""
    override = os.environ.get("NETPOLL_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "netpoll"


def build(cc: list[str] | None = None) -> str:
    """Path of the built C client, compiling it first when the cache lacks it.

    Raises :class:`LoadgenBuildError` (with the compiler's message) when it
    cannot be built: not Linux, no compiler, or the compile failed.
    """
    if not sys.platform.startswith("linux"):
        raise LoadgenBuildError(
            f"the C load client needs Linux (epoll, /proc); this is {sys.platform}"
        )
    if cc is None:
        cc = compiler()
    if cc is None:
        env_cc = os.environ.get("CC")
        raise LoadgenBuildError(
            f"no C compiler: $CC={env_cc!r} is not found"
            if env_cc
            else "no C compiler (cc, gcc, clang) on PATH"
        )
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        raise LoadgenBuildError(f"cannot read {SOURCE}: {exc}") from None
    key = hashlib.sha256(source + "\0".join([*cc, *CFLAGS, os.uname().machine]).encode())
    directory = cache_dir()
    exe = directory / f"loadgen-{key.hexdigest()[:16]}"
    if os.access(exe, os.X_OK):
        return str(exe)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LoadgenBuildError(f"cannot create the cache directory {directory}: {exc}") from None
    fd, tmp = tempfile.mkstemp(prefix=".loadgen-", dir=directory)
    os.close(fd)
    try:
        try:
            proc = subprocess.run(
                [*cc, *CFLAGS, "-o", tmp, str(SOURCE)],
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LoadgenBuildError(f"{shlex.join(cc)} failed to run: {exc}") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise LoadgenBuildError(
                f"{shlex.join(cc)} could not compile {SOURCE.name} "
                f"(status {proc.returncode}):\n{detail}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, exe)  # atomic: a concurrent run sees the old or the whole new file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(exe)


def resolve(choice: str = "auto") -> LoadClient:
    """The load client for ``--client choice`` (auto, c, python).

    ``c`` raises :class:`LoadgenBuildError` when the C client cannot be
    built; ``auto`` then falls back to the Python client with the reason.
    """
    if choice not in CHOICES:
        raise ValueError(f"unknown load client {choice!r}: choose from {', '.join(CHOICES)}")
    if choice == "python":
        return LoadClient("python")
    try:
        return LoadClient("c", build())
    except LoadgenBuildError as exc:
        if choice == "c":
            raise
        return LoadClient("python", reason=f"C client unavailable: {exc}")
