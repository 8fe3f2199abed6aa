"""The C load client (netpoll/bench/loadgen.c) and the floor server of ``netpoll bench``.

The C client is built for real with the system compiler into a temporary
cache directory and run against real servers; its result must carry exactly
the fields the Python client's does.  The fallback is tested with real
conditions: ``$CC`` naming a missing program, and a compiler that fails.
The floor server is checked to echo correctly (EOF, a half-close, a stream
bigger than the socket buffers so its sends hit EAGAIN, many connections at
once).  No speed is asserted anywhere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from netpoll import bench
from netpoll.bench import loadgen, runner

needs_c = pytest.mark.skipif(
    not sys.platform.startswith("linux") or loadgen.compiler() is None,
    reason="the C load client needs Linux and a C compiler",
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, private build cache for the C client."""
    d = tmp_path / "cache"
    monkeypatch.setenv("NETPOLL_CACHE_DIR", str(d))
    return d


@pytest.fixture
def threads_server() -> Iterator[tuple[int, int]]:
    """A real ``threads`` echo server process: (port, pid)."""
    group = runner.ProcessGroup()
    try:
        with runner.running_server(group, runner.Server("threads"), 4096, None) as (proc, port, _):
            yield port, proc.pid
    finally:
        group.kill_all()


def _spec(mode: str, port: int, pid: int, conns: int) -> dict[str, object]:
    return {
        "mode": mode,
        "host": "127.0.0.1",
        "port": port,
        "server_pid": pid,
        "conns": conns,
        "size": 64,
        "seconds": 0.6,
        "warmup": 0.1,
        "setup_timeout": 20.0,
        "cpu": None,
    }


@needs_c
def test_c_client_builds_once_and_is_cached(cache: Path) -> None:
    path = loadgen.build()
    assert Path(path).parent == cache and os.access(path, os.X_OK)
    mtime = os.stat(path).st_mtime_ns
    assert loadgen.build() == path  # the same source and compiler: the cached file
    assert os.stat(path).st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [Path(path).name]  # no temporary left
    client = loadgen.resolve("auto")
    assert client.kind == "c" and client.path == path and client.reason is None


@needs_c
@pytest.mark.parametrize("mode", ["pingpong", "connect"])
def test_c_client_result_matches_python_client(
    mode: str, cache: Path, threads_server: tuple[int, int]
) -> None:
    port, pid = threads_server
    c = loadgen.resolve("c")
    group = runner.ProcessGroup()
    try:
        spec = _spec(mode, port, pid, 3)
        got = runner.run_client(group, spec, timeout=60, client=c)
        ref = runner.run_client(group, spec, timeout=60)  # the Python client
    finally:
        group.kill_all()
    assert not group.procs
    assert got["client"] == "c" and ref["client"] == "python"
    assert set(got) == set(ref)  # the same fields, so the report reads both alike
    assert got["unit"] == ref["unit"] == ("msg/s" if mode == "pingpong" else "conn/s")
    assert got["count"] > 0 and got["samples"] > 0
    assert got["rate"] == pytest.approx(got["count"] / got["wall"])
    assert 0 < got["p50"] <= got["p99"]
    assert got["wall"] >= 0.5 and got["server_cpu_pct"] is not None
    assert got["client_cpu_pct"] is not None and got["client_pinned"] is False
    if mode == "connect":
        assert got["errors"] == {}
    else:
        assert got["short_sends"] == 0


@needs_c
def test_c_client_pingpong_with_big_messages(cache: Path, threads_server: tuple[int, int]) -> None:
    # 1 MiB messages do not fit one send: the partial-send path must finish them.
    port, pid = threads_server
    spec = _spec("pingpong", port, pid, 2) | {"size": 1 << 20}
    group = runner.ProcessGroup()
    try:
        got = runner.run_client(group, spec, timeout=60, client=loadgen.resolve("c"))
    finally:
        group.kill_all()
    assert got["count"] > 0 and got["client"] == "c"


@needs_c
def test_c_client_reports_refused_connection(cache: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    group = runner.ProcessGroup()
    try:
        with pytest.raises(runner.BenchError, match="refused"):
            runner.run_client(
                group, _spec("pingpong", port, 0, 1), timeout=30, client=loadgen.resolve("c")
            )
    finally:
        group.kill_all()


@needs_c
def test_c_client_rejects_bad_arguments(cache: Path) -> None:
    path = loadgen.build()
    out = subprocess.run([path, "mode=nope", "port=1"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert "mode must be pingpong or connect" in json.loads(out.stdout)["error"]
    out = subprocess.run(
        [path, "mode=pingpong", "port=x"], capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 1 and "port=x" in json.loads(out.stdout)["error"]


def test_missing_compiler_falls_back_to_python(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "/nonexistent/netpoll-test-cc"
    monkeypatch.setenv("CC", missing)
    client = loadgen.resolve("auto")
    assert client.kind == "python" and client.path is None
    assert client.reason is not None and missing in client.reason
    with pytest.raises(loadgen.LoadgenBuildError, match="no C compiler"):
        loadgen.resolve("c")
    # The whole benchmark runs on the Python client and says so.
    argv = ["--scenarios", "pingpong", "--servers", "threads", "--conns", "2", "--seconds", "0.5"]
    assert bench.main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["meta"]["client"]["kind"] == "python"
    assert "Python load client" in doc["meta"]["client"]["text"]
    assert doc["scenarios"][0]["servers"][0]["rounds"][0]["client"]["client"] == "python"
    assert captured.err.count(missing) == 2  # the note once, the header once
    # --client c cannot fall back: a clear failure.
    assert bench.main([*argv, "--client", "c", "--quiet"]) == 1
    assert missing in capsys.readouterr().err
    assert not cache.exists()  # nothing was built


@needs_c
def test_compile_failure_prints_compiler_message_and_falls_back(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cc = loadgen.compiler()
    assert cc is not None
    monkeypatch.setenv("CC", f"{cc[0]} -fno-such-option-for-netpoll")
    client = loadgen.resolve("auto")
    assert client.kind == "python"
    assert client.reason is not None
    assert "could not compile loadgen.c" in client.reason
    assert "no-such-option-for-netpoll" in client.reason  # the compiler's own words
    assert list(cache.iterdir()) == []  # the temporary output was removed


def test_python_choice_does_not_build(cache: Path) -> None:
    assert loadgen.resolve("python") == loadgen.LoadClient("python")
    assert not cache.exists()
    with pytest.raises(ValueError, match="unknown load client"):
        loadgen.resolve("rust")


# ---- the floor server -----------------------------------------------------


@pytest.fixture
def floor_server() -> Iterator[int]:
    """A real ``floor`` echo server process: its port."""
    group = runner.ProcessGroup()
    try:
        with runner.running_server(group, runner.Server("floor"), 4096, None) as (proc, port, _):
            yield port
            assert proc.poll() is None  # still serving after the test's traffic
    finally:
        group.kill_all()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def test_floor_echoes_until_eof_and_half_close(floor_server: int) -> None:
    addr = ("127.0.0.1", floor_server)
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"hello")
        assert _recv_exactly(s, 5) == b"hello"
        s.sendall(b"tail")
        s.shutdown(socket.SHUT_WR)  # EOF to the server after the data
        assert _recv_exactly(s, 4) == b"tail"
        assert s.recv(16) == b""  # the server closed its side at EOF
    # A connection closed at once (EOF before any data) does not disturb it.
    socket.create_connection(addr, timeout=10).close()
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"again")
        assert _recv_exactly(s, 5) == b"again"


def test_floor_streams_more_than_the_socket_buffers(floor_server: int) -> None:
    # 32 MiB written by a thread while this one reads late: the server's
    # sends fill the buffers and hit EAGAIN, so it must park and resume.
    total = 32 << 20
    data = bytes(range(256)) * 4096  # 1 MiB
    with socket.create_connection(("127.0.0.1", floor_server), timeout=20) as s:
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for _ in range(total // len(data)):
                    s.sendall(data)
            except OSError as exc:
                errors.append(exc)

        t = threading.Thread(target=write, daemon=True)
        t.start()
        threading.Event().wait(0.3)  # let the buffers fill before reading
        got = _recv_exactly(s, total)
        t.join(20)
        assert not t.is_alive() and not errors
        assert len(got) == total
        assert got == data * (total // len(data))


def test_floor_serves_many_connections_at_once(floor_server: int) -> None:
    addr = ("127.0.0.1", floor_server)
    socks = [socket.create_connection(addr, timeout=10) for _ in range(300)]
    try:
        for i, s in enumerate(socks):  # all connected, then all echo, interleaved
            s.sendall(b"%d;" % i)
        for i, s in enumerate(socks):
            want = b"%d;" % i
            assert _recv_exactly(s, len(want)) == want
        for s in socks[::2]:  # half leave; the rest still echo
            s.close()
        for s in socks[1::2]:
            s.sendall(b"z" * 3000)
            assert _recv_exactly(s, 3000) == b"z" * 3000
    finally:
        for s in socks:
            s.close()


def test_floor_sits_out_the_deadline_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenarios", "pingpong,deadline", "--servers", "netpoll-g,floor"]
    argv += ["--conns", "2", "--seconds", "0.5", "--quiet", "--json"]
    assert bench.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    by_key = {sc["key"]: [s["kind"] for s in sc["servers"]] for sc in doc["scenarios"]}
    assert by_key == {"pingpong-c2": ["netpoll-g", "floor"], "deadline-c2": ["netpoll-g"]}
    ping = doc["scenarios"][0]["servers"]
    assert set(ping[0]["ratios"]) == {"floor"} and ping[1]["median"] > 0


def test_floor_refuses_a_deadline() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "netpoll.bench.server", "--kind", "floor", "--deadline", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env=runner._child_env(),
    )
    assert out.returncode == 2 and "no read deadlines" in out.stderr
