"""Collect each tox test environment's pytest summary and print them at the end.

Used by tox.ini (stdlib only, runs on any Python >= 3.8):

* ``summary.py record ENV JUNIT_XML DIR`` (each test env's ``commands_post``,
  which runs whether pytest passed or not): reads pytest's JUnit XML report,
  prints one summary line and stores it under ``DIR/<tox pid>/ENV.json``.
* ``summary.py report DIR`` (the last env, ``summary``): prints the lines the
  envs of *this* tox run recorded (same parent pid: tox runs every command,
  parallel or not, from its own process) and exits 1 when no test was executed
  at all (every interpreter missing, every test skipped or nothing collected),
  so that ``skip_missing_interpreters = true`` can never turn an empty run
  green.  Records of earlier runs are removed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _counts(junit: Path) -> dict[str, float]:
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {"tests": 0.0, "failures": 0.0, "errors": 0.0, "skipped": 0.0, "time": 0.0}
    for suite in suites:
        for key in total:
            total[key] += float(suite.get(key, 0) or 0)
    return total


def _failed_tests(junit: Path, limit: int = 8) -> list[str]:
    """Up to ``limit`` failed or erroring test ids, each with its message's first line.

    The tail of a CI log is often all that is kept: naming the failed tests
    there is what lets a flaky failure be chased without the whole log.
    """
    found: list[str] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                message = (child.get("message") or child.text or "").strip()
                first = message.splitlines()[0][:200] if message else ""
                # The traceback's last "path:line: Error" line says where a
                # test stopped (for a timeout: where it was stuck).
                text_lines = (child.text or "").strip().splitlines()
                where = text_lines[-1].strip()[:200] if text_lines else ""
                found.append(
                    f"{case.get('classname', '')}::{case.get('name', '')}: {first}"
                    + (f" [at {where}]" if where and where != first else "")
                )
                break
        if len(found) >= limit:
            break
    return found


def _line(env: str, junit: Path) -> tuple[str, int, bool]:
    """(summary line, tests executed, ok) for one env."""
    if not junit.is_file():
        return f"{env}: no pytest report (pytest did not finish)", 0, False
    try:
        c = _counts(junit)
    except (ET.ParseError, OSError, ValueError) as exc:
        return f"{env}: unreadable pytest report ({exc})", 0, False
    failed, errors, skipped = int(c["failures"]), int(c["errors"]), int(c["skipped"])
    passed = int(c["tests"]) - failed - errors - skipped
    parts = [f"{n} {what}" for n, what in ((failed, "failed"), (passed, "passed")) if n]
    parts += [f"{n} {what}" for n, what in ((skipped, "skipped"), (errors, "errors")) if n]
    text = ", ".join(parts) or "no tests ran"
    ok = failed == 0 and errors == 0 and passed > 0
    return f"{env}: {text} in {c['time']:.2f}s", passed + failed, ok


def record(env: str, junit: str, directory: str) -> int:
    """Store ``env``'s summary for the ``report`` of this tox run."""
    line, executed, ok = _line(env, Path(junit))
    failed: list[str] = []
    if not ok and Path(junit).is_file():
        try:
            failed = _failed_tests(Path(junit))
        except (ET.ParseError, OSError):
            failed = []
    print(f"pytest summary: {line}", flush=True)
    for test in failed:
        print(f"  failed: {test}", flush=True)
    run_dir = Path(directory) / str(os.getppid())
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"env": env, "line": line, "executed": executed, "ok": ok, "failed": failed}
    (run_dir / f"{env}.json").write_text(json.dumps(data), encoding="utf-8")
    return 0


def report(directory: str) -> int:
    """Print this run's summaries; 1 if no test executed in any env."""
    base = Path(directory)
    run_dir = base / str(os.getppid())
    records = []
    if run_dir.is_dir():
        for path in sorted(run_dir.glob("*.json")):
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
    if base.is_dir():
        shutil.rmtree(base, ignore_errors=True)
    print("pytest summaries of this tox run:")
    for rec in records:
        mark = "ok  " if rec["ok"] else "FAIL"
        print(f"  {mark} {rec['line']}")
        for test in rec.get("failed", []):
            print(f"         failed: {test}")
    executed = sum(int(rec["executed"]) for rec in records)
    if executed == 0:
        print(
            "  no test was executed in any test environment "
            "(no interpreter found, or nothing collected): failing the run",
            file=sys.stderr,
        )
        return 1
    bad = sum(1 for rec in records if not rec["ok"])
    print(f"  {len(records)} test env(s) ran, {executed} tests executed, {bad} env(s) failed")
    return 0


def main(argv: list[str]) -> int:
    """Command-line entry: ``record ENV JUNIT DIR`` or ``report DIR``."""
    if len(argv) == 4 and argv[0] == "record":
        return record(argv[1], argv[2], argv[3])
    if len(argv) == 2 and argv[0] == "report":
        return report(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
