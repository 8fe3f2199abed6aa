"""Smoke tests of the benchmark engine (netpoll.bench) with tiny durations.

They check that the engine runs end to end, that its table and JSON are well
formed, and that every server really echoes; they never assert a speed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

import pytest

import netpoll
from netpoll import bench, cli
from netpoll.bench import client as bench_client
from netpoll.bench import report, runner
from netpoll.bench.server import DEFAULT_KINDS, KINDS


@pytest.fixture(scope="module")
def loadgen_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """This module's own build cache for the C load client (not the user's ~/.cache)."""
    return str(tmp_path_factory.mktemp("loadgen-cache"))


@pytest.fixture(autouse=True)
def _private_loadgen_cache(loadgen_cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here builds (once) and runs the C client from :func:`loadgen_cache`."""
    monkeypatch.setenv("NETPOLL_CACHE_DIR", loadgen_cache)


# Half a second per measurement: long enough that a loaded 2-core machine
# still completes some round trips, so "median > 0" checks the servers, not luck.
TINY = ["--seconds", "0.5", "--conns", "2", "--idle", "10", "--bulk", "256K", "--quiet"]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("kind", KINDS)
def test_server_echoes(kind: str) -> None:
    group = runner.ProcessGroup()
    server = runner.Server(kind, netpoll.backend_name() if kind == "netpoll" else None)
    try:
        with runner.running_server(group, server, 4096, None) as (proc, port, _err):
            assert proc.poll() is None
            payloads = [b"ping", bytes(range(256)) * 40, b"x" * 100_000]
            addr = ("127.0.0.1", port)
            with (
                socket.create_connection(addr, timeout=10) as s1,
                socket.create_connection(addr, timeout=10) as s2,
            ):
                for p in payloads:
                    s1.sendall(p)
                    assert _recv_exactly(s1, len(p)) == p
                    s2.sendall(p[::-1])
                    assert _recv_exactly(s2, len(p)) == p[::-1]
        assert proc.returncode is not None  # stopped when its stdin closed
    finally:
        group.kill_all()
    assert not group.procs


def test_json_run_is_well_formed(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    assert bench.main([*TINY, "--json"]) == 0
    assert time.monotonic() - t0 < 90
    doc = json.loads(capsys.readouterr().out)
    assert {"meta", "scenarios", "errors"} <= doc.keys()
    assert doc["errors"] == []
    assert doc["meta"]["rounds"] == 1
    assert doc["meta"]["build"]["build"] in ("compiled", "pure", "mixed")
    # The call counts (netpoll/bench/calls.py) ride along, or say why not.
    calls = doc["calls"]
    if sys.version_info >= (3, 12):
        assert [r["deadline"] for r in calls["rows"]] == [False, True]
        assert all(r["switches"] > 0 and r["calls"] > 0 for r in calls["rows"])
    else:
        assert "Python >= 3.12" in calls["skipped"]
    keys = [s["key"] for s in doc["scenarios"]]
    assert keys == ["pingpong-c2", "deadline-c2", "connect", "idle", "bulk"]
    # Which load client ran: C for ping-pong and connect when it compiled
    # (auto), the Python one for idle and bulk always.
    kind = doc["meta"]["client"]["kind"]
    assert kind in ("c", "python")
    for sc in doc["scenarios"]:
        expect = kind if sc["mode"] in ("pingpong", "connect") else "python"
        assert {s["rounds"][0]["client"]["client"] for s in sc["servers"]} == {expect}
    for sc in doc["scenarios"]:
        names = [s["name"] for s in sc["servers"]]
        b = netpoll.backend_name()
        assert names == [f"netpoll-g[{b}]", f"netpoll[{b}]", *DEFAULT_KINDS[2:]]
        for s in sc["servers"]:
            assert s["errors"] == []
            assert len(s["rounds"]) == 1
            assert s["median"] is not None
            if sc["mode"] != "idle":  # RSS growth of 10 conns may round to 0
                assert s["median"] > 0
            if s["kind"] in ("netpoll-g", "netpoll"):
                assert set(s["ratios"]) == set(DEFAULT_KINDS[2:])
        if sc["mode"] == "pingpong":
            for s in sc["servers"]:
                assert s["p50_latency_s"] > 0 and s["p99_latency_s"] >= s["p50_latency_s"]
                assert s["client_cpu_pct"] is not None
        if sc["mode"] == "bulk":
            for s in sc["servers"]:
                assert s["rounds"][0]["client"]["count"] == 256 * 1024
                assert s["incomplete"] is False


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--scenarios", "pingpong", "--servers", "netpoll,threads"]
    assert cli.main([*argv, *TINY, "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("scenario"))
    assert "vs threads" in header and "p99 lat" in header and "cli CPU" in header
    rows = [line for line in lines if "msg/s" in line]
    assert len(rows) == 2
    assert rows[0].startswith("ping-pong 64 B, C=2")
    assert "x" in rows[0].split("msg/s", 1)[1]  # netpoll's ratio to threads
    assert "wall time" in out


def test_unknown_backend_is_a_clear_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--backend", "no-such-backend", "--quiet"]) == 1
    assert "no-such-backend" in capsys.readouterr().err
    assert cli.main(["bench", "--backend", "no-such-backend"]) == 1


def test_bad_flags_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--scenarios", "pingpong,nope"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        bench.main(["--conns", "0"])
    assert exc.value.code == 2


def test_client_failure_is_reported() -> None:
    # Nothing listens on a port we just released: the client must fail fast
    # with a message, not hang.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    scenario = bench.build_scenarios(
        bench_args(["--scenarios", "pingpong", "--conns", "1", "--seconds", "0.1"])
    )[0]
    spec = scenario.client_spec() | {"host": "127.0.0.1", "port": port}
    group = runner.ProcessGroup()
    try:
        with pytest.raises(runner.BenchError, match="refused"):
            runner.run_client(group, spec, timeout=30)
    finally:
        group.kill_all()


def bench_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_and_full_plans() -> None:
    quick = bench.build_scenarios(bench_args([]))
    assert [s.key for s in quick] == [
        "pingpong-c1",
        "pingpong-c100",
        "deadline-c100",
        "connect",
        "idle",
        "bulk",
    ]
    assert next(s for s in quick if s.key == "deadline-c100").deadline > 0
    full = bench.build_scenarios(bench_args(["--full"]))
    assert [s.key for s in full] == [
        "pingpong-c1",
        "pingpong-c100",
        "pingpong-c1000",
        "deadline-c100",
        "connect",
        "idle",
        "bulk",
    ]
    by_key = {s.key: s for s in full}
    assert by_key["idle"].conns == 10_000
    assert by_key["bulk"].total == 1 << 30
    assert by_key["connect"].conns == 50
    assert all(s.size == 64 for s in full if s.mode != "bulk")
    custom = bench.build_scenarios(bench_args(["--full", "--conns", "7", "--idle", "3"]))
    assert [s.conns for s in custom if s.mode in ("pingpong", "idle")] == [7, 7, 3]


def test_parse_size() -> None:
    assert bench.parse_size("64") == 64
    assert bench.parse_size("4K") == 4096
    assert bench.parse_size("1MiB") == 1 << 20
    assert bench.parse_size("1G") == 1 << 30
    for bad in ("x", "0", "-1K"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_size(bad)


def test_samples_stay_bounded() -> None:
    s = bench_client.Samples(capacity=64)
    for i in range(10_000):
        s.add(float(i))
    assert len(s.values) < 64
    p50, p99 = s.percentiles(50, 99)
    assert p50 is not None and p99 is not None
    assert 3000 < p50 < 7000 < p99
    assert bench_client.Samples().percentiles(50) == [None]


def test_summary_ratios() -> None:
    sc = runner.Scenario("pingpong-c1", "ping-pong", "pingpong", conns=1)
    np_, th, aio = (
        runner.Server("netpoll", "epoll"),
        runner.Server("threads"),
        runner.Server("asyncio"),
    )
    ms = []
    for rnd, (a, b, c) in enumerate([(10.0, 20.0, 5.0), (30.0, 40.0, 5.0), (20.0, 60.0, 5.0)], 1):
        for server, v in ((np_, a), (th, b), (aio, c)):
            ms.append(runner.Measurement(sc, server, rnd, value=v, result={"p50": 0.001}))
    ms.append(runner.Measurement(sc, th, 4, error="boom"))
    sums = report.summarize(ms)
    assert [s.server for s in sums] == [np_, th, aio]
    assert sums[0].median == 20.0 and sums[1].median == 40.0
    assert sums[0].ratios == {"threads": 0.5, "asyncio": 4.0}
    assert sums[1].errors == ["round 4: boom"]
    table = report.format_table(sums, ["threads", "asyncio"])
    assert "0.50x" in table and "4.00x" in table and "10-30" in table
