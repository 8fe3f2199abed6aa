"""The entry-point tables of a ``pyproject.toml``, read without a TOML library.

Python 3.10 has no :mod:`tomllib`; the tables these tests read are simple
(``[project.entry-points."group"]`` followed by ``name = "module[:object]"``
lines), so a line reader is enough and the same on every Python.
"""

from __future__ import annotations

import re
from pathlib import Path

_TABLE = re.compile(r'\[project\.entry-points\.(?:"([^"]+)"|([\w.-]+))\]')


def entry_points(pyproject: Path) -> dict[str, dict[str, str]]:
    """group -> {entry-point name: object reference} for every entry-point table."""
    found: dict[str, dict[str, str]] = {}
    group: str | None = None
    for raw in pyproject.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        m = _TABLE.fullmatch(line)
        if m:
            group = m.group(1) or m.group(2)
            found.setdefault(group, {})
            continue
        if line.startswith("["):
            group = None
        elif group and "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[group][name.strip()] = value.strip().strip('"')
    return found


def entry_points_txt(pyproject: Path) -> str:
    """The ``entry_points.txt`` body a build would write for ``pyproject``."""
    out: list[str] = []
    for group, eps in entry_points(pyproject).items():
        out.append(f"[{group}]")
        out.extend(f"{name} = {value}" for name, value in eps.items())
    return "\n".join(out) + "\n"
