"""``netpoll bench --tls`` runs end to end (tiny sizes; speed is never asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.helpers import proc

ROOT = Path(__file__).resolve().parent.parent


def test_bench_tls_smoke(tmp_path: Path) -> None:
    out = tmp_path / "tls.json"
    res = proc.run(
        [sys.executable, "-m", "netpoll", "bench", "--tls", "--bulk", "2M", "--seconds", "0.1",
         "--no-pin", "--quiet", "--save", str(out)],
        timeout=90, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "tls bulk send 2 MiB" in res.stdout and "ping-pong 64 B, plain" in res.stdout
    doc = json.loads(out.read_text())
    kinds = {(v["scenario"], v["kind"]) for v in doc["values"]}
    assert ("tls-bulk recv", "netpoll-tls") in kinds and ("ping-pong", "stdlib-plain") in kinds
    assert all(v["median"] > 0 for v in doc["values"])
