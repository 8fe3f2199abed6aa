"""The README's "Using existing libraries" example runs as written, in a child process.

``netpoll.patch.library`` changes modules of the process it runs in (here:
the stdlib's ``urllib.request`` and ``http.client``), so the example runs in
its own Python, on each backend, and its printed output is checked.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from tests.helpers.proc import run

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"<!-- readme-test: {name} -->\n```python\n(.*?)\n```", text, re.S)
    assert m, f"README has no python block marked readme-test: {name}"
    return m.group(1)


def test_readme_patch_library_example(backend: str) -> None:
    env = dict(os.environ, NETPOLL_BACKEND=backend, PYTHONPATH=str(ROOT))
    proc = run([sys.executable, "-c", _block("patch-library")], timeout=60, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines() == ["True", "[b'hello']"]
    assert README.read_text(encoding="utf-8").count("<!-- readme-test: patch-library -->") == 1
