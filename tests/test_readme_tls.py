"""The README's TLS and http.client examples run as written, on every backend.

Each ``<!-- readme-test: NAME -->`` marker is followed by a python block;
it is executed in a temp directory holding ``server.pem`` (key + chain for
localhost) and ``ca.pem`` from trustme, and its printed output is checked.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

from tests.helpers.tls import Certs

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"<!-- readme-test: {name} -->\n```python\n(.*?)\n```", text, re.S)
    assert m, f"README has no python block marked readme-test: {name}"
    return m.group(1)


def _run(code: str, cwd: Path) -> str:
    out = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README:{cwd.name}", "exec"), {"__name__": "readme_example"})
    finally:
        os.chdir(old)
    return out.getvalue()


def test_readme_tls_example(backend: str, tmp_path: Path) -> None:
    Certs(tmp_path)  # writes server.pem and ca.pem there
    out = _run(_block("tls"), tmp_path).splitlines()
    assert out[0] == "b'HELLO'"
    assert re.fullmatch(r"TLSv1\.[23] http/1\.1 localhost", out[1]), out


def test_readme_http_client_example(backend: str, tmp_path: Path) -> None:
    assert _run(_block("http-client"), tmp_path).splitlines() == ["200 b'hello'"]


def test_markers_are_unique() -> None:
    text = README.read_text(encoding="utf-8")
    for name in ("tls", "http-client"):
        assert text.count(f"<!-- readme-test: {name} -->") == 1
    with pytest.raises(AssertionError):
        _block("no-such-example")
