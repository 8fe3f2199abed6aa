"""The README's goroutine example runs, on every backend, and prints what it says."""

from __future__ import annotations

from pathlib import Path

from tests.test_readme_tls import _block, _run


def test_readme_goroutines_example(backend: str, tmp_path: Path) -> None:
    out = _run(_block("goroutines"), tmp_path).splitlines()
    assert out == ["[b'hello 0', b'hello 1', b'hello 2']"]
