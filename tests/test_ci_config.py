"""The CI configuration is consistent: workflow, tox.ini, .ci/run and README.

GitHub Actions cannot run here, so these tests check what can be checked
without it (and without network or PyYAML): every tox environment the
workflow names exists in tox.ini's list; the workflow covers the intended
OS x Python x backend matrix plus lint and type; ``.ci/run`` runs exactly the
README's test command; and ``.ci/summary.py`` fails a run where no test ran.
"""

from __future__ import annotations

import configparser
import importlib.util
import itertools
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
TOX_INI = ROOT / "tox.ini"
CI_RUN = ROOT / ".ci" / "run"
README = ROOT / "README.md"

PYTHONS = ("310", "311", "312", "313")
LINUX_BACKENDS = ("epoll", "poll", "select", "kqueue")
MACOS_BACKENDS = ("kqueue", "poll", "select")


def expand(spec: str) -> list[str]:
    """Expand tox's generative names: ``py{310,311}-{a,b}`` -> 4 names."""
    parts = re.split(r"(\{[^}]*\})", spec.strip())
    choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
    return ["".join(c.strip() for c in combo) for combo in itertools.product(*choices)]


def tox_ini() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(TOX_INI, encoding="utf-8")
    return cp


def tox_env_list() -> list[str]:
    """tox.ini's ``env_list``, expanded, in order."""
    raw = tox_ini()["tox"]["env_list"]
    names: list[str] = []
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.extend(expand(line))
    return names


def tox_known_envs() -> set[str]:
    """Every env tox knows: the list, the named ``[testenv:x]`` sections, and the
    matrix cells tox makes from the factors on demand (``tox -e py310-poll``)."""
    named = {s.split(":", 1)[1] for s in tox_ini().sections() if s.startswith("testenv:")}
    cells = {f"py{py}-{b}" for py in PYTHONS for b in LINUX_BACKENDS}
    return set(tox_env_list()) | named | cells


def workflow_text() -> str:
    return WORKFLOW.read_text(encoding="utf-8")


def workflow_envs() -> dict[str, set[str]]:
    """Envs the workflow runs, by runner OS ("ubuntu", "macos")."""
    by_os: dict[str, set[str]] = {}
    for m in re.finditer(r"os:\s*(\w+)-latest,\s*python:\s*\"([\d.]+)\",\s*envs:\s*\"([^\"]+)\"",
                         workflow_text()):  # fmt: skip
        os_name, python, envs = m.groups()
        names = [e.strip() for e in envs.split(",") if e.strip()]
        for name in names:
            assert name.startswith("py" + python.replace(".", "") + "-"), (python, name)
        by_os.setdefault(os_name, set()).update(names)
    return by_os


def workflow_tox_run_envs() -> set[str]:
    """Literal env names after ``tox run -e`` / ``tox -e`` in the workflow."""
    found: set[str] = set()
    for m in re.finditer(r"tox(?: run)? -e \"?([^\s\"]+)", workflow_text()):
        for name in m.group(1).split(","):
            if name and "${{" not in name and "}}" not in name:
                found.add(name)
    return found


# --------------------------------------------------------------------------


def _build_of(python: str) -> str:
    """``pure`` or ``compiled``: what tox.ini asks of a Python's envs."""
    set_env = tox_ini()["testenv"]["set_env"]
    for line in set_env.splitlines():
        factors, _, value = line.partition(":")
        if "NETPOLL_TEST_EXPECT_BUILD" in value and f"py{python}" in factors.strip().split(","):
            return value.split("=", 1)[1].strip()
    raise AssertionError(f"py{python} has no NETPOLL_TEST_EXPECT_BUILD")


def test_tox_env_list_covers_every_backend_both_builds_and_every_python() -> None:
    envs = tox_env_list()
    cells = [e for e in envs if e.startswith("py")]
    assert set(cells) <= {f"py{py}-{b}" for py in PYTHONS for b in LINUX_BACKENDS}
    # Every Python runs, and every backend runs on a pure and a compiled Python.
    assert {c.split("-")[0][2:] for c in cells} == set(PYTHONS)
    for build in ("pure", "compiled"):
        backends = {c.split("-")[1] for c in cells if _build_of(c.split("-")[0][2:]) == build}
        assert backends == set(LINUX_BACKENDS), (build, backends)
    assert {"lint", "type", "bench", "stress"} <= set(envs)
    assert envs[-1] == "summary", "summary must run after every test env"


def test_stress_env_runs_only_the_stress_suite() -> None:
    stress = tox_ini()["testenv:stress"]
    assert "tests{/}stress" in stress["commands"]
    assert "--timeout=" in stress["commands"]  # it stops by itself
    assert "NETPOLL_BACKEND" not in stress["set_env"]  # every backend in one run
    # ... and the normal envs leave the directory out (tests/conftest.py).
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tests/stress" not in r.stdout and "test_shared_conns_under_stress" not in r.stdout


def test_tox_settings_per_factor() -> None:
    cp = tox_ini()
    tox = cp["tox"]
    assert tox["skip_missing_interpreters"].strip() == "true"
    testenv = cp["testenv"]
    set_env = testenv["set_env"]
    for backend in LINUX_BACKENDS:
        assert re.search(rf"^\s*{backend}: NETPOLL_BACKEND = {backend}\s*$", set_env, re.M)
    assert re.search(r"^\s*kqueue-linux: NETPOLL_KQUEUE_EMULATION = 1\s*$", set_env, re.M)
    assert re.search(r"^\s*epoll: linux\s*$", testenv["platform"], re.M)
    assert "summary.py record" in testenv["commands_post"]
    assert "--junitxml" in testenv["commands"]


def test_every_workflow_env_exists_in_tox() -> None:
    known = tox_known_envs()
    by_os = workflow_envs()
    named = set().union(*by_os.values()) | workflow_tox_run_envs()
    assert named, "no tox env found in the workflow"
    missing = sorted(named - known)
    assert not missing, f"workflow names tox envs that tox.ini lacks: {missing}"


def test_workflow_covers_linux_and_macos_matrix() -> None:
    by_os = workflow_envs()
    assert by_os["ubuntu"] == {f"py{p}-{b}" for p in PYTHONS for b in LINUX_BACKENDS}
    assert by_os["macos"] == {f"py{p}-{b}" for p in PYTHONS for b in MACOS_BACKENDS}
    text = workflow_text()
    assert ',summary"' in text, "test jobs must end with the summary env"
    for env in ("lint", "type", "bench", "stress"):
        assert f"tox run -e {env}" in text
    assert "setup-python" in text and "tox-uv" in text


def readme_commands() -> tuple[str, str]:
    """(main job command, test command) from the README's set-up section."""
    blocks = re.findall(r"```sh\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S)
    main = next(b.strip() for b in blocks if "netpoll bench" in b)
    tests = next(b.strip() for b in blocks if re.search(r"&& tox$", b.strip()))
    return main, tests


def test_ci_run_runs_exactly_the_readme_test_command() -> None:
    main_cmd, test_cmd = readme_commands()
    assert main_cmd == "python3 -m pip install . && netpoll bench"
    script = CI_RUN.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in script.splitlines()]
    # Verbatim, optionally followed by `|| status=$?` (the script keeps going
    # to print its wall time, then exits with that status).
    runs = [ln for ln in lines if ln in (test_cmd, f"{test_cmd} || status=$?")]
    assert runs, f".ci/run must run the README's test command: {test_cmd!r}"
    if runs[0] != test_cmd:
        assert 'exit "$status"' in script
    assert script.startswith("#!/usr/bin/env bash") or script.startswith("#!/bin/bash")
    assert "set -euo pipefail" in script
    assert CI_RUN.stat().st_mode & 0o111, ".ci/run must be executable"


# --------------------------------------------------------------------------
# .ci/summary.py: records per env, fails a run in which no test ran.
# --------------------------------------------------------------------------


def load_summary() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_summary", ROOT / ".ci" / "summary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"
 errors="{e}" failures="{f}" skipped="{s}" tests="{t}" time="1.5"></testsuite></testsuites>"""


def write_junit(path: Path, t: int, f: int = 0, e: int = 0, s: int = 0) -> Path:
    path.write_text(JUNIT.format(t=t, f=f, e=e, s=s), encoding="utf-8")
    return path


def test_summary_reports_and_passes_when_tests_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = load_summary()
    store = tmp_path / "store"
    junit_a = write_junit(tmp_path / "a.xml", 10, s=2)
    junit_b = write_junit(tmp_path / "b.xml", 5, f=1)
    assert summary.main(["record", "py3-a", str(junit_a), str(store)]) == 0
    assert summary.main(["record", "py3-b", str(junit_b), str(store)]) == 0
    assert summary.main(["record", "py3-c", str(tmp_path / "missing.xml"), str(store)]) == 0
    assert summary.main(["report", str(store)]) == 0
    out = capsys.readouterr().out
    assert "py3-a: 8 passed, 2 skipped in 1.50s" in out
    assert "FAIL py3-b: 1 failed, 4 passed in 1.50s" in out
    assert "FAIL py3-c: no pytest report" in out
    assert "3 test env(s) ran, 13 tests executed, 2 env(s) failed" in out
    assert not store.exists(), "report consumes the records"


def test_summary_names_the_failed_tests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = load_summary()
    store = tmp_path / "store"
    junit = tmp_path / "f.xml"
    junit.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
        'errors="1" failures="1" skipped="0" tests="3" time="2.0">'
        '<testcase classname="tests.test_a" name="test_ok" time="0.1"/>'
        '<testcase classname="tests.test_a" name="test_hang" time="90">'
        '<failure message="Failed: Timeout &gt;90.0s&#10;second line">'
        "trace&#10;tests/test_a.py:12: Failed</failure></testcase>"
        '<testcase classname="tests.test_b" name="test_setup" time="0.1">'
        '<error message="fixture broke">trace</error></testcase>'
        "</testsuite></testsuites>",
        encoding="utf-8",
    )
    assert summary.main(["record", "py3-x", str(junit), str(store)]) == 0
    assert summary.main(["report", str(store)]) == 0
    out = capsys.readouterr().out
    assert (
        "failed: tests.test_a::test_hang: Failed: Timeout >90.0s [at tests/test_a.py:12: Failed]"
        in out
    )
    assert "second line" not in out
    assert "failed: tests.test_b::test_setup: fixture broke" in out
    assert "test_ok" not in out


@pytest.mark.parametrize("case", ["nothing-recorded", "all-skipped", "none-collected"])
def test_summary_fails_when_no_test_ran(tmp_path: Path, case: str) -> None:
    summary = load_summary()
    store = tmp_path / "store"
    if case == "all-skipped":
        summary.main(["record", "py3-a", str(write_junit(tmp_path / "a.xml", 3, s=3)), str(store)])
    elif case == "none-collected":
        summary.main(["record", "py3-a", str(write_junit(tmp_path / "a.xml", 0)), str(store)])
    assert summary.main(["report", str(store)]) == 1


def test_summary_ignores_records_of_another_tox_run(tmp_path: Path) -> None:
    summary = load_summary()
    store = tmp_path / "store"
    stale = store / "999999999"  # another (earlier) tox process
    stale.mkdir(parents=True)
    (stale / "py3-a.json").write_text(
        '{"env": "py3-a", "line": "py3-a: 1 passed", "executed": 1, "ok": true}', encoding="utf-8"
    )
    assert summary.main(["report", str(store)]) == 1


# --------------------------------------------------------------------------
# With tox itself at hand (a developer machine, .ci/run), ask it directly.
# --------------------------------------------------------------------------


def _tox_usable() -> bool:
    if importlib.util.find_spec("tox") is None:
        return False
    from importlib.metadata import version

    major, minor = (int(x) for x in version("tox").split(".")[:2])
    return (major, minor) >= (4, 42)  # tox.ini's `requires`: no provisioning


needs_tox = pytest.mark.skipif(not _tox_usable(), reason="tox >= 4.42 is not installed here")


@needs_tox
def test_tox_lists_the_same_envs() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tox", "-l"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == tox_env_list()


@needs_tox
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only factor")
def test_tox_applies_kqueue_emulation_on_linux() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tox", "config", "-e", "py311-kqueue,py311-poll", "-k", "set_env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    kqueue, poll = r.stdout.split("[testenv:py311-poll]")
    assert "NETPOLL_BACKEND=kqueue" in kqueue and "NETPOLL_KQUEUE_EMULATION=1" in kqueue
    assert "NETPOLL_BACKEND=poll" in poll and "NETPOLL_KQUEUE_EMULATION" not in poll
