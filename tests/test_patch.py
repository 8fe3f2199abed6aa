"""netpoll.patch: global patching (in child processes) and per-library patching.

``patch.all()`` changes the stdlib modules for the whole process, so every
test of it runs in a child Python (this process must stay unpatched); the
child prints what it checked and the test asserts on that.  ``patch.library``
runs on small packages written into ``tmp_path`` (and on the stdlib's
``http.client`` in a child), with real loopback servers.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import socket
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import netpoll
import netpoll.patch
from netpoll.testing import Faults
from tests.helpers.proc import run
from tests.helpers.tls import start

PEER = 10.0
ROOT = Path(__file__).resolve().parents[1]


def child(*parts: str, backend: str, tmp_path: Path | None = None) -> dict[str, object]:
    """Run the code ``parts`` in a child Python on ``backend``; it prints one JSON line last."""
    code = "\n".join(textwrap.dedent(p) for p in parts)
    env = dict(os.environ)
    env["NETPOLL_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([str(tmp_path)] if tmp_path else []) + [env.get("PYTHONPATH", "")]
    )
    proc = run([sys.executable, "-c", code], timeout=60, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    out: dict[str, object] = json.loads(last)
    out["_stderr"] = proc.stderr
    return out


# A threaded stdlib HTTP server and a ticker-gated check, shared by the children.
SERVER = """
import http.server, json, threading, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/gated"):
            GATE.wait(10)
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
GATE = threading.Event()
SRV = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
PORT = SRV.server_address[1]
threading.Thread(target=SRV.serve_forever, daemon=True).start()
"""


def test_patch_all_in_a_child(backend: str) -> None:
    out = child(
        """
        import warnings
        warnings.simplefilter("error")  # a clean, early patch warns about nothing
        import netpoll.patch
        netpoll.patch.all()
        netpoll.patch.all()  # idempotent
        import socket, ssl, select, selectors, time, threading, queue
        import netpoll, netpoll.green.socket as gs, netpoll.green.threading as gt
        """,
        SERVER,
        """
        import http.client
        result = {}
        result["patched"] = {n: netpoll.patch.is_patched(n) for n in
            ("socket", "ssl", "select", "selectors", "time", "threading", "queue")}
        result["classes"] = [socket.socket is gs.socket, threading.Lock is gt.Lock,
            threading.Event is gt.Event, queue.Queue.__module__, hasattr(select, "epoll"),
            ssl.SSLContext.sslsocket_class.__module__, selectors.DefaultSelector.__module__]
        # netpoll's own core still makes stdlib locks and sockets.
        import netpoll.core.sched as sched, netpoll.core.syscalls as sc
        result["core_lock"] = type(sched.threading.Lock()).__module__
        s = sc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
        result["core_socket"] = type(s).__module__
        s.close()
        # A netpoll module imported after all() gets the unpatched modules too.
        import netpoll.testing.switch as sw
        result["late_netpoll_module"] = sw.threading.Lock is not threading.Lock
        ticks, answers = [], []
        def client(i):
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
            c.request("GET", "/gated/%d" % i)
            answers.append(c.getresponse().read().decode())
            c.close()
        def ticker():
            while len(answers) < 8 and len(ticks) < 5000:
                ticks.append(1)
                if len(ticks) == 5:
                    GATE.set()
                time.sleep(0.01)  # patched: parks the goroutine
        def main():
            gs_ = [netpoll.go(client, i) for i in range(6)] + [netpoll.go(ticker)]
            th = [threading.Thread(target=client, args=(i,)) for i in (6, 7)]
            for t in th: t.start()
            for g in gs_: assert g.join(20)
            for t in th: t.join(20)
            # A queue and an event shared by a goroutine and a plain thread.
            q, ev = queue.Queue(), threading.Event()
            def producer():
                ev.wait(10)
                q.put("from-thread")
            t = threading.Thread(target=producer); t.start()
            netpoll.go(ev.set)
            result["queue"] = q.get(timeout=10)
            t.join(10)
            # Stdlib machinery built on the patched modules after all():
            # netpoll's own pool (Futures on green conditions) and subprocess
            # (its selectors and locks are green now).
            import subprocess, sys
            result["blocking"] = netpoll.blocking(lambda: 42)
            proc = subprocess.run([sys.executable, "-c", "print('child')"],
                                  capture_output=True, text=True, timeout=30)
            result["subprocess"] = proc.stdout.strip()
        netpoll.run(main)
        result["answers"] = sorted(answers)
        result["ticks"] = len(ticks)
        SRV.shutdown(); SRV.server_close()
        print(json.dumps(result))
        """,
        backend=backend,
    )
    assert out["patched"] == {
        n: True for n in ("socket", "ssl", "select", "selectors", "time", "threading", "queue")
    }
    assert out["classes"] == [
        True,
        True,
        True,
        "netpoll.green.queue",
        False,
        "netpoll.green.ssl",
        "netpoll.green.selectors",
    ]
    assert out["core_lock"] != "netpoll.green.threading"
    assert out["core_socket"] == "socket"
    assert out["late_netpoll_module"] is True
    assert out["answers"] == sorted(f"/gated/{i}" for i in range(8))
    assert isinstance(out["ticks"], int) and out["ticks"] >= 5
    assert out["queue"] == "from-thread"
    assert out["blocking"] == 42
    assert out["subprocess"] == "child"


def test_patch_all_warns_when_too_late(backend: str, tmp_path: Path) -> None:
    (tmp_path / "early_user.py").write_text(
        "from socket import create_connection\nfrom threading import Lock\n"
    )
    out = child(
        """
        import json, socket, warnings
        import early_user
        keep = socket.socket()  # a stdlib socket made before patching
        import threading
        stop = threading.Event()
        t = threading.Thread(target=stop.wait, name="early-worker")
        t.start()
        import netpoll.patch
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            netpoll.patch.all()
        msgs = [str(x.message) for x in w if issubclass(x.category, netpoll.patch.PatchWarning)]
        keep.close()
        stop.set()
        t.join()
        print(json.dumps({"msgs": msgs}))
        """,
        backend=backend,
        tmp_path=tmp_path,
    )
    msgs = out["msgs"]
    assert isinstance(msgs, list) and len(msgs) == 3, msgs
    assert "early_user" in msgs[0]
    assert "socket.create_connection" in msgs[0] and "threading.Lock" in msgs[0]
    assert "stdlib socket" in msgs[1]
    assert "1 thread(s)" in msgs[2] and "early-worker" in msgs[2]


def test_patch_library_http_client_in_a_child(backend: str) -> None:
    out = child(
        """
        import netpoll, netpoll.patch, socket, threading, time, json
        netpoll.patch.library("http.client")
        import http.client, urllib.request
        """,
        SERVER,
        """
        result = {"socket": http.client.socket.__name__,
                  "global": socket.socket.__module__,
                  "patched": netpoll.patch.is_patched("socket")}
        ticks, answers = [], []
        def fetch(i):
            with urllib.request.urlopen("http://127.0.0.1:%d/gated/%d" % (PORT, i),
                                        timeout=10) as r:
                answers.append(r.read().decode())
        def ticker():
            while len(answers) < 6 and len(ticks) < 5000:
                ticks.append(1)
                if len(ticks) == 5:
                    GATE.set()
                netpoll.sleep(0.01)
        def main():
            gs_ = [netpoll.go(fetch, i) for i in range(5)] + [netpoll.go(ticker)]
            t = threading.Thread(target=fetch, args=(5,)); t.start()
            for g in gs_: assert g.join(20)
            t.join(20)
        netpoll.run(main)
        result["answers"] = sorted(answers)
        SRV.shutdown(); SRV.server_close()
        print(json.dumps(result))
        """,
        backend=backend,
    )
    assert out["socket"] == "netpoll.green.socket"
    assert out["global"] == "socket"
    assert out["patched"] is False
    assert out["answers"] == sorted(f"/gated/{i}" for i in range(6))


# -- patch.library in this process, on packages written into tmp_path ---------------------


PKG_INIT = """
import socket
import threading
from time import sleep
from queue import Queue
from . import conn

POOL_LOCK = None


def pool_lock():
    global POOL_LOCK
    if POOL_LOCK is None:
        POOL_LOCK = threading.Lock()
    return POOL_LOCK


def fetch(port, msg, timeout=10):
    with pool_lock():
        pass
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(msg)
        return s.recv(100)


def socket_module_at_run_time():
    import socket as late
    return late
"""

PKG_CONN = """
import selectors
import select


def wait_readable(sock, timeout):
    sel = selectors.DefaultSelector()
    with sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(timeout))
"""


@pytest.fixture
def fresh_pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package with a unique name in tmp_path; forgotten again afterwards."""
    name = f"np_patch_pkg_{os.getpid()}_{time.monotonic_ns()}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PKG_INIT)
    (pkg / "conn.py").write_text(PKG_CONN)
    (pkg / "later.py").write_text("import threading\nLOCK_CLASS = threading.Lock\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield name
    finally:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]
        netpoll.patch._libraries.discard(name)


@pytest.fixture
def upper_server(backend: str) -> Iterator[int]:
    """A stdlib server thread answering each connection's first message upper-cased."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(32)
    ls.settimeout(0.2)
    stop = threading.Event()

    def handle(c: socket.socket) -> None:
        with c:
            c.settimeout(PEER)
            try:
                c.sendall(c.recv(100).upper())
            except OSError:
                pass

    def serve() -> None:
        workers = []
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            workers.append(start(lambda c=c: handle(c)))
        for w in workers:
            w.join(PEER)

    t = start(serve)
    try:
        yield ls.getsockname()[1]
    finally:
        stop.set()
        t.join(PEER)
        ls.close()


def test_patch_library_rebinds_one_package(fresh_pkg: str, upper_server: int) -> None:
    import netpoll.green.queue as gq
    import netpoll.green.selectors as gsel
    import netpoll.green.socket as gs
    import netpoll.green.threading as gt
    import netpoll.green.time as gtime

    mod = netpoll.patch.library(fresh_pkg)
    assert mod.socket is gs
    assert mod.threading is gt
    assert mod.sleep is gtime.sleep  # from time import sleep
    assert mod.Queue is gq.Queue  # from queue import Queue
    assert mod.conn.selectors is gsel
    assert isinstance(mod.pool_lock(), gt.Lock)
    assert mod.socket_module_at_run_time() is gs  # an import inside a function
    later = importlib.import_module(fresh_pkg + ".later")  # a submodule imported later
    assert later.LOCK_CLASS is gt.Lock
    # The rest of the process is untouched.
    assert socket.socket.__module__ == "socket"
    assert threading.Lock is not gt.Lock
    assert not netpoll.patch.is_patched("socket")
    assert fresh_pkg in netpoll.patch.patched_libraries()
    assert mod.fetch(upper_server, b"thread") == b"THREAD"


def test_patch_library_from_goroutines_and_threads_at_once(
    fresh_pkg: str, upper_server: int
) -> None:
    mod = netpoll.patch.library(fresh_pkg)
    results: list[bytes] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        r = mod.fetch(upper_server, b"g%d" % i)
        with lock:
            results.append(r)

    def main() -> None:
        gs = [netpoll.go(call, i) for i in range(8)]
        ths = [threading.Thread(target=call, args=(i,)) for i in range(8, 12)]
        for t in ths:
            t.start()
        for g in gs:
            assert g.join(PEER)
        for t in ths:
            t.join(PEER)

    netpoll.run(main)
    assert sorted(results) == sorted(b"G%d" % i for i in range(12))


def test_patch_library_selector_parks_a_goroutine(fresh_pkg: str, backend: str) -> None:
    mod = netpoll.patch.library(fresh_pkg)
    a, b = socket.socketpair()
    ticks: list[int] = []
    result: list[bool] = []

    def waiter() -> None:
        result.append(mod.conn.wait_readable(a, PEER))

    def ticker() -> None:
        for i in range(5):
            ticks.append(i)
            netpoll.sleep(0.01)
        b.send(b"!")  # only after the sibling ran: the selector must not hold the M

    def main() -> None:
        gs = [netpoll.go(waiter), netpoll.go(ticker)]
        for g in gs:
            assert g.join(PEER)

    netpoll.run(main)
    a.close()
    b.close()
    assert ticks == [0, 1, 2, 3, 4]
    assert result == [True]


def test_patch_library_warns_about_objects_made_before(fresh_pkg: str, tmp_path: Path) -> None:
    (tmp_path / fresh_pkg / "early.py").write_text("import threading\nLOCK = threading.Lock()\n")
    importlib.import_module(fresh_pkg + ".early")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        netpoll.patch.library(fresh_pkg)
    msgs = [str(x.message) for x in w if issubclass(x.category, netpoll.patch.PatchWarning)]
    assert len(msgs) == 1 and f"{fresh_pkg}.early.LOCK" in msgs[0]


def test_patch_library_faults_reach_the_library(fresh_pkg: str, upper_server: int) -> None:
    mod = netpoll.patch.library(fresh_pkg)
    with Faults() as f:
        refuse = f.fail("connect", errno.ECONNREFUSED, times=1)
        with pytest.raises(ConnectionRefusedError):
            mod.fetch(upper_server, b"refused")
        assert refuse.fired == 1
        reset = f.reset_after(0, times=1)
        with pytest.raises(ConnectionResetError):
            mod.fetch(upper_server, b"reset")
        assert reset.fired >= 1
        assert mod.fetch(upper_server, b"fine") == b"FINE"


def test_patch_bad_names(backend: str) -> None:
    with pytest.raises(ValueError, match="no green module"):
        netpoll.patch.is_patched("os")
    for bad in ("", ".rel", "socket", "threading.x", "netpoll.net"):
        with pytest.raises(ValueError):
            netpoll.patch.library(bad)
    with pytest.raises(ModuleNotFoundError):
        netpoll.patch.library("np_no_such_package_here")
    netpoll.patch._libraries.discard("np_no_such_package_here")


def test_patch_all_https_in_a_child(backend: str) -> None:
    out = child(
        """
        import netpoll.patch
        netpoll.patch.all()
        import json, ssl, tempfile, pathlib, threading
        import netpoll, netpoll.green.ssl as gssl
        from tests.helpers.tls import Certs
        """,
        SERVER,
        """
        import urllib.request
        pki = Certs(pathlib.Path(tempfile.mkdtemp()))
        SRV.socket = pki.server_context().wrap_socket(SRV.socket, server_side=True)
        client_ctx = pki.client_context()  # a stdlib SSLContext, made after patching
        answers, kinds = [], []
        def fetch(i):
            url = "https://localhost:%d/tls/%d" % (PORT, i)
            with urllib.request.urlopen(url, context=client_ctx, timeout=10) as r:
                kinds.append(type(r.fp.raw._sock).__module__)
                answers.append(r.read().decode())
        def main():
            gs_ = [netpoll.go(fetch, i) for i in range(4)]
            for g in gs_: assert g.join(20)
        netpoll.run(main)
        SRV.shutdown(); SRV.server_close()
        print(json.dumps({"answers": sorted(answers), "kinds": sorted(set(kinds)),
                          "ssl_patched": netpoll.patch.is_patched("ssl")}))
        """,
        backend=backend,
    )
    assert out["answers"] == sorted(f"/tls/{i}" for i in range(4))
    assert out["kinds"] == ["netpoll.green.ssl"]
    assert out["ssl_patched"] is True
