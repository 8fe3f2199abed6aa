"""Running a Python subprocess from a test so that a hang says where it hung.

A child that does not finish within its timeout is sent SIGABRT; with
faulthandler enabled in it (``PYTHONFAULTHANDLER=1``, set here) it prints
every thread's stack to stderr before it dies, and the test fails with that
text instead of a bare timeout.  The timeouts callers pass stay below
pytest-timeout's (pyproject.toml), so this report, not pytest's, is the one
that fires.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

#: How much of a hung child's stderr goes into the failure message.
STDERR_TAIL = 6000


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with faulthandler on in the child."""
    out = dict(os.environ if env is None else env)
    out["PYTHONFAULTHANDLER"] = "1"
    return out


def dump_and_kill(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGABRT ``proc`` (faulthandler prints its stacks), then kill it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGABRT)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    text: bool = True,
    **popen_kw: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(args, capture_output=True)``, but a hang fails with the child's stacks."""
    popen_kw.setdefault("stdin", subprocess.DEVNULL)
    with subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(env),
        text=text,
        **popen_kw,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            dump_and_kill(proc)
            out, err = proc.communicate()
            tail = err[-STDERR_TAIL:] if err else ""
            raise AssertionError(
                f"{' '.join(map(str, args))!r} did not finish within {timeout}s; "
                f"its stacks (faulthandler) and stderr:\n{tail}"
            ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
