"""The README's "Testing your network code with faults" example runs, on every backend."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "retrying_client.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retrying_client_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_retrying_client_example(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    _load().main()
    assert "survived refused connects, a reset and short writes" in capsys.readouterr().out


def test_retrying_client_gives_up(backend: str) -> None:
    """Past its attempts the client raises the last OpError (the example's other branch)."""
    import errno

    import netpoll
    from netpoll.testing import Faults

    mod = _load()
    with Faults() as f, netpoll.listen("tcp", "127.0.0.1:0") as ln:
        f.fail("connect", errno.ECONNREFUSED, times=None)
        with pytest.raises(ConnectionRefusedError, match="connect: connection refused"):
            mod.fetch(str(ln.addr()), b"x\n", attempts=3, backoff=0.001)
        assert f.rules[0].fired == 3
