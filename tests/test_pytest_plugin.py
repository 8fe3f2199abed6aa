"""The pytest plugin (netpoll.testing.pytest_plugin), exercised in child pytest runs.

Each run is a subprocess started with ``-p no:netpoll -p netpoll.testing.pytest_plugin``:
the first blocks the ``pytest11`` entry point by its name (present when
netpoll is installed, as in tox), the second loads the module by its own
name, so the plugin is registered exactly once whether or not the package
is installed.  Subprocesses also keep backend switches out of this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import netpoll
from tests.helpers import proc

ROOT = Path(netpoll.__file__).resolve().parent.parent
PLUGIN_ARGS = ["-p", "no:netpoll", "-p", "netpoll.testing.pytest_plugin", "-p", "no:cacheprovider"]


def run_pytest(
    tmp_path: Path, source: str, *args: str, env: dict[str, str] | None = None, ini: str = ""
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + textwrap.dedent(ini))
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")])
    full_env.pop("PYTEST_ADDOPTS", None)
    # Under CI pytest prints untruncated short-summary lines, which repeat
    # each error message; the assertions count messages in the output.
    full_env.pop("CI", None)
    full_env.pop("BUILD_NUMBER", None)
    full_env.setdefault("NETPOLL_KQUEUE_EMULATION", "1")
    if env is not None:
        for k, v in env.items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
    return proc.run(
        [sys.executable, "-m", "pytest", "-v", "-rA", *PLUGIN_ARGS, *args, str(tmp_path)],
        cwd=tmp_path,
        env=full_env,
        timeout=60,
    )


def outcome(result: subprocess.CompletedProcess[str], test: str) -> str:
    """The worst outcome ``-v`` printed for ``test`` (a teardown ERROR follows a PASSED)."""
    words: set[str] = set()
    for line in result.stdout.splitlines():
        if line.startswith(f"test_inner.py::{test} "):
            words.update(w for w in ("ERROR", "FAILED", "PASSED", "SKIPPED") if w in line.split())
    for word in ("ERROR", "FAILED", "SKIPPED", "PASSED"):
        if word in words:
            return word
    raise AssertionError(f"{test} not in output:\n{result.stdout}\n{result.stderr}")


FIXTURE_TESTS = """
import errno
import pytest
import netpoll
from netpoll.core.runtime import runtime

leaked = []

def test_leaks_a_listener(netpoll_switch):
    leaked.append(netpoll.listen("tcp", "127.0.0.1:0"))  # never closed

def test_closes_everything(netpoll_switch):
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        netpoll.dial("tcp", str(ln.addr()), timeout=2).close()
        ln.accept().close()
    st = netpoll_switch.stat(2, 1)
    assert (st.opened, st.accepted, st.closed) == (2, 1, 3)

def test_fails_with_a_leak(netpoll_switch):
    leaked.append(netpoll.listen("tcp", "127.0.0.1:0"))
    assert False, "the test itself fails"

def test_switch_was_removed():
    assert not runtime.table.wrapped["socket"]
    for ln in leaked:
        ln.close()

def test_faults_fixture(netpoll_faults):
    netpoll_faults.fail("connect", errno.ECONNREFUSED, times=1)
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        with pytest.raises(ConnectionRefusedError):
            netpoll.dial("tcp", str(ln.addr()), timeout=2)

def test_faults_were_removed():
    assert not runtime.table.wrapped["connect"]
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        netpoll.dial("tcp", str(ln.addr()), timeout=2).close()
        ln.accept().close()

@pytest.mark.netpoll_backend("poll")
def test_marked_poll():
    with netpoll.listen("tcp", "127.0.0.1:0"):
        assert netpoll.backend_name() == "poll"

@pytest.mark.netpoll_backend("select")
def test_marked_select():
    with netpoll.listen("tcp", "127.0.0.1:0"):
        assert netpoll.backend_name() == "select"

def test_unmarked_is_back_to_default():
    with netpoll.listen("tcp", "127.0.0.1:0"):
        assert netpoll.backend_name() == runtime.registry.resolve(None)[0].name

@pytest.mark.netpoll_backend("no-such-backend")
def test_marked_unknown():
    pass
"""


def test_fixtures_marker_and_leak_check(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, FIXTURE_TESTS)
    out = result.stdout
    # The leak is reported at teardown with the line that opened the socket.
    assert outcome(result, "test_leaks_a_listener") == "ERROR", out
    assert "left sockets open" in out and "1 socket(s) left open" in out
    assert 'leaked.append(netpoll.listen("tcp", "127.0.0.1:0"))  # never closed' in out
    assert "opened by socket in thread 'MainThread'" in out
    assert outcome(result, "test_closes_everything") == "PASSED", out
    # A failing test's own failure is reported, not its leaks; the switch goes anyway.
    assert outcome(result, "test_fails_with_a_leak") == "FAILED", out
    assert out.count("left sockets open") == 1
    assert outcome(result, "test_switch_was_removed") == "PASSED", out
    assert outcome(result, "test_faults_fixture") == "PASSED", out
    assert outcome(result, "test_faults_were_removed") == "PASSED", out
    assert outcome(result, "test_marked_poll") == "PASSED", out
    assert outcome(result, "test_marked_select") == "PASSED", out
    assert outcome(result, "test_unmarked_is_back_to_default") == "PASSED", out
    assert outcome(result, "test_marked_unknown") == "SKIPPED", out
    assert "not available here" in out


BACKEND_TEST = """
import netpoll

def test_backend():
    with netpoll.listen("tcp", "127.0.0.1:0"):
        print("BACKEND=" + netpoll.backend_name())
"""


@pytest.mark.parametrize(
    ("how", "expect"),
    [("option", "select"), ("ini", "poll"), ("env-over-ini", "select")],
)
def test_session_backend(tmp_path: Path, how: str, expect: str) -> None:
    env: dict[str, str | None] = {"NETPOLL_BACKEND": None}
    args: list[str] = ["-s"]
    ini = ""
    if how == "option":
        args.append("--netpoll-backend=select")
        env["NETPOLL_BACKEND"] = "poll"  # the option wins over the environment
    elif how == "ini":
        ini = "netpoll_backend = poll\n"
    else:
        ini = "netpoll_backend = poll\n"
        env["NETPOLL_BACKEND"] = "select"
    result = run_pytest(tmp_path, BACKEND_TEST, *args, env=env, ini=ini)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"BACKEND={expect}" in result.stdout


def test_unknown_session_backend_is_a_usage_error(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, BACKEND_TEST, "--netpoll-backend=nope")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "unknown backend 'nope'" in result.stderr


GOROUTINE_TESTS = """
import pytest
import netpoll

stop = netpoll.Chan()

def test_leaves_a_goroutine_running(netpoll_switch):
    netpoll.go(stop.recv)  # parked until the next test

def test_stops_it():
    stop.close()

@pytest.mark.netpoll_goroutine
def test_body_is_a_goroutine(netpoll_switch):
    assert netpoll.current_goroutine() is not None
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        c = netpoll.dial("tcp", str(ln.addr()), timeout=2)
        with c, ln.accept() as s:
            c.write(b"hi")
            assert s.read(2) == b"hi"
"""


def test_goroutines_left_running_are_reported(tmp_path: Path) -> None:
    """The leak check reports goroutines a test left running; the marker runs a body as a G."""
    result = run_pytest(tmp_path, GOROUTINE_TESTS)
    out = result.stdout
    assert outcome(result, "test_leaves_a_goroutine_running") == "ERROR", out
    assert "goroutines still running" in out and "Chan.recv running" in out, out
    assert outcome(result, "test_stops_it") == "PASSED", out
    assert outcome(result, "test_body_is_a_goroutine") == "PASSED", out
