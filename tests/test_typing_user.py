"""The typing overloads follow the network name: a typed user snippet passes mypy --strict.

The tox ``type`` env checks ``tests/typing/typed_user.py`` too; this test
runs the same check where mypy is installed, plus a wrong use that must fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "tests" / "typing" / "typed_user.py"

api = pytest.importorskip("mypy.api")


def _mypy(*args: str) -> tuple[str, int]:
    out, err, status = api.run(["--strict", "--no-incremental", "--cache-dir=/dev/null", *args])
    return out + err, status


def test_typed_user_snippet_passes_mypy_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out, status = _mypy(str(SNIPPET))
    assert status == 0, out


def test_wrong_network_type_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad_user.py"
    bad.write_text(
        "import netpoll\n"
        'conn = netpoll.dial("unix", "/tmp/x.sock")\n'
        "conn.set_no_delay(True)\n"
        'ln = netpoll.listen("tcp", "127.0.0.1:0")\n'
        "reveal_type(ln.accept())\n"
    )
    out, status = _mypy(str(bad))
    assert status == 1, out
    assert '"UnixConn" has no attribute "set_no_delay"' in out
    assert 'Revealed type is "netpoll.net.conn.TCPConn"' in out


def test_wrong_goroutine_arguments_are_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad_goroutine.py"
    bad.write_text(
        "import netpoll\n"
        "def f(x: int) -> str:\n"
        "    return str(x)\n"
        'h = netpoll.go(f, "wrong")\n'
        "netpoll.blocking(f, 1, 2)\n"
        "netpoll.run(f)\n"
        "reveal_type(netpoll.go(f, 1))\n"
        "reveal_type(netpoll.go(f, 1).result())\n"
    )
    out, status = _mypy(str(bad))
    assert status == 1, out
    assert 'Argument 2 to "go" has incompatible type "str"; expected "int"' in out
    assert 'Too many arguments for "blocking"' in out
    assert 'Missing positional argument "x" in call to "run"' in out
    # mypy versions differ in printing "builtins.str" or "str".
    assert re.search(
        r'Revealed type is "netpoll\.core\.goroutine\.Goroutine\[(builtins\.)?str\]"', out
    )
    assert re.search(r'Revealed type is "(builtins\.)?str"', out)
