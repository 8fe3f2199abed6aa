"""A third-party backend, installed as its own package, is found and works.

``tests/example_backend`` is a separate distribution (the worked example of
CONTRIBUTING.md) that registers a poller backend named ``example`` through the
``netpoll.backends`` entry-point group.  The fixture installs it with pip into
a private directory (``pip install --no-deps --no-index --no-build-isolation
--target``: no network, a second or so); each test then runs a fresh Python
with that directory on ``PYTHONPATH``, so the entry point is visible there and
nowhere else: the rest of the suite never sees the example backend.

Where pip or hatchling is missing (tox installs both), the fixture lays the
package out by hand exactly as pip would: the module plus a ``.dist-info``
with ``METADATA`` and ``entry_points.txt``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import netpoll
from tests.helpers import proc
from tests.helpers.pyproject import entry_points_txt

EXAMPLE = Path(__file__).resolve().parent / "example_backend"
DIST = "netpoll-example-backend"
MODULE = "netpoll_example_backend"


def _install_by_hand(target: Path) -> None:
    shutil.copytree(EXAMPLE / "src" / MODULE, target / MODULE)
    info = target / f"{MODULE}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        entry_points_txt(EXAMPLE / "pyproject.toml"), encoding="utf-8"
    )


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example backend distribution."""
    target = tmp_path_factory.mktemp("example-backend-site")
    have_pip = importlib.util.find_spec("pip") is not None
    have_hatchling = importlib.util.find_spec("hatchling") is not None
    if have_pip and have_hatchling:
        # Build from a copy: an in-tree build must not leave files in the repo.
        src = tmp_path_factory.mktemp("example-backend-src") / "example_backend"
        shutil.copytree(EXAMPLE, src)
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
             "--no-build-isolation", "--target", str(target), str(src)],
            check=True,
            env=env,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    else:
        _install_by_hand(target)
    assert (target / MODULE / "__init__.py").is_file()
    return target


def run_python(site: Path, code: str, **env_overrides: str | None) -> Any:
    """Run ``code`` in a fresh interpreter that sees ``site``; return its JSON."""
    env = dict(os.environ)
    root = str(Path(netpoll.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), root, env.get("PYTHONPATH")) if p)
    env.pop("NETPOLL_BACKEND", None)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    r = proc.run([sys.executable, "-c", textwrap.dedent(code)], env=env, timeout=90)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_discovered_through_the_entry_point(site_dir: Path) -> None:
    result = run_python(
        site_dir,
        """
        import json
        from importlib.metadata import entry_points
        import netpoll
        from netpoll.core.runtime import runtime
        eps = [(ep.name, ep.value, ep.dist.name if ep.dist else None)
               for ep in entry_points(group="netpoll.backends")]
        spec = {s.name: s for s in runtime.registry.specs()}["example"]
        print(json.dumps({
            "entry_points": eps,
            "available": netpoll.available_backends(),
            "edge_triggered": spec.edge_triggered,
            "module": spec.create.__module__,
            "default": runtime.registry.resolve(None)[0].name,
        }))
        """,
    )
    assert ["example", MODULE, DIST] in result["entry_points"]
    available = result["available"]
    assert isinstance(available, list) and "example" in available
    assert available[-1] == "example"  # lowest priority: listed last
    assert result["default"] != "example"  # never chosen by default
    assert result["edge_triggered"] is False
    assert result["module"] == MODULE


def test_real_io_on_the_example_backend(site_dir: Path) -> None:
    result = run_python(
        site_dir,
        """
        import json, os, threading, time, zlib
        import netpoll
        netpoll.use_backend("example")

        ln = netpoll.listen("tcp", "127.0.0.1:0")

        def serve():
            conn = ln.accept()
            with conn:
                buf = bytearray(65536)
                while n := conn.readinto(buf):
                    conn.write(memoryview(buf)[:n])

        server = threading.Thread(target=serve)
        server.start()
        c = netpoll.dial("tcp", str(ln.addr()), timeout=10)

        # Ping-pong, then 8 MiB each way at once (parks writers and readers).
        for i in range(200):
            msg = b"ping %d" % i
            c.write(msg)
            got = b""
            while len(got) < len(msg):
                got += c.read(len(msg) - len(got))
            assert got == msg, (got, msg)
        blob = os.urandom(8 << 20)
        writer = threading.Thread(target=c.write, args=(blob,))
        writer.start()
        got = bytearray()
        while len(got) < len(blob):
            got += c.read(1 << 16)
        writer.join()
        assert zlib.crc32(got) == zlib.crc32(blob)

        # A read deadline fires on this backend's timers and wakeups.
        c.set_read_deadline(time.time() + 0.2)
        t0 = time.monotonic()
        try:
            c.read(1)
            timed_out = False
        except TimeoutError:
            timed_out = True
        waited = time.monotonic() - t0
        c.set_read_deadline(None)

        # Close from another thread wakes a parked read.
        closer = threading.Timer(0.2, c.close)
        closer.start()
        try:
            c.read(1)
            woke = "no error"
        except netpoll.ErrClosed:
            woke = "closed"
        closer.join()
        server.join(10)
        ln.close()
        print(json.dumps({"backend": netpoll.backend_name(), "timed_out": timed_out,
                          "waited": waited, "woke": woke,
                          "server_done": not server.is_alive()}))
        """,
    )
    assert result["backend"] == "example"
    assert result["timed_out"] is True
    waited = result["waited"]
    assert isinstance(waited, float) and 0.15 <= waited < 10.0
    assert result["woke"] == "closed"
    assert result["server_done"] is True


def test_chosen_by_env_and_reported_by_netpoll_info(site_dir: Path) -> None:
    result = run_python(
        site_dir,
        """
        import contextlib, io, json
        from netpoll.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["info", "--json"])
        info = json.loads(out.getvalue())
        print(json.dumps({"code": code, "chosen": info["chosen"],
                          "backends": info["backends"], "eps": info["entry_points"]}))
        """,
        NETPOLL_BACKEND="example",
    )
    assert result["code"] == 0
    assert result["chosen"] == {"name": "example", "chosen_by": "env", "error": None}
    backends = result["backends"]
    assert isinstance(backends, list)
    (example,) = [b for b in backends if b["name"] == "example"]
    assert example["available"] is True
    assert example["origin"] == MODULE
    eps = result["eps"]
    assert isinstance(eps, list)
    assert any(ep["name"] == "example" and DIST in ep["distribution"] for ep in eps)


def test_not_visible_without_the_package() -> None:
    assert "example" not in netpoll.available_backends()
    with pytest.raises(netpoll.BackendError, match="unknown backend 'example'"):
        netpoll.use_backend("example")
