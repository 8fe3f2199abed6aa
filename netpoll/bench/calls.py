"""Python-level work per echoed message, counted with :mod:`sys.monitoring` (Python >= 3.12).

The goroutine echo server (a G per connection: ``read(65536)`` then ``write``,
optionally with a fresh read deadline before every read) runs in a child
process that counts, in the server's thread only:

* Python functions entered (``PY_START`` events: every Python frame started,
  including generator resumptions; a compiled module's functions start none);
* calls made from Python code (``CALL`` events: to Python or C callables);
* greenlet switches (``greenlet.settrace``: ``switch`` and ``throw`` events).

The parent opens C blocking connections, warms up, tells the child to start
counting, runs rounds of one message per connection (all sends, then all
replies), tells it to stop and reads the counts.  The counts are exact: they
do not depend on machine noise, so they show the cost of every change to the
hot path in calls (``netpoll bench`` prints them beside the throughput rows).

``sys.monitoring`` is the only hook that follows greenlet switches;
``sys.setprofile`` is per-frame-stack and misses them, so on Python < 3.12
:func:`measure` returns ``None`` and the caller says why.

The child runs :func:`main` (``python -c ... [--deadline]``): it prints its port,
then obeys ``start``/``stop``/``exit`` lines on stdin (read by a plain thread
whose own calls are not counted) and prints the counts as JSON after ``stop``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

#: Python versions with sys.monitoring.
MIN_VERSION = (3, 12)

#: Read deadline set before every read in the deadline variant, seconds.
DEADLINE_SECONDS = 5.0

#: The monitoring tool id the child uses (the profiler slot).
_TOOL_NAME = "netpoll-bench-calls"


def skip_reason() -> str | None:
    """Why call counts cannot be taken on this Python, or ``None`` if they can."""
    if sys.version_info < MIN_VERSION:
        return (
            f"call counts need sys.monitoring (Python >= 3.12); this is Python "
            f"{sys.version_info.major}.{sys.version_info.minor}"
        )
    return None


# --------------------------------------------------------------------------
# The child: the counted echo server
# --------------------------------------------------------------------------


class _Counter:
    """Counts events of one thread while :attr:`on`; the monitoring callbacks."""

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.on = False
        self.py_starts = 0
        self.calls = 0
        self.switches = 0

    def py_start(self, code: object, offset: int) -> None:
        if self.on and threading.get_ident() == self.ident:
            self.py_starts += 1

    def call(self, code: object, offset: int, callable_: object, arg0: object) -> None:
        if self.on and threading.get_ident() == self.ident:
            self.calls += 1

    def switch(self, event: str, args: object) -> None:
        if self.on and event in ("switch", "throw") and threading.get_ident() == self.ident:
            self.switches += 1


def _control(counter: _Counter) -> None:
    """Obey the parent's lines on stdin (in a plain thread, never counted)."""
    for line in sys.stdin:
        word = line.strip()
        if word == "start":
            counter.on = True
        elif word == "stop":
            counter.on = False
            counts = {
                "py_starts": counter.py_starts,
                "calls": counter.calls,
                "switches": counter.switches,
            }
            print(json.dumps(counts), flush=True)
        elif word == "exit":
            break
    # stdin closed or "exit": the parent is done with us.
    import os

    os._exit(0)


def serve(deadline: bool) -> None:
    """Run the counted goroutine echo server until the parent says ``exit``."""
    import greenlet

    import netpoll

    mon = getattr(sys, "monitoring")  # noqa: B009 (absent before 3.12: mypy's target is 3.10)
    counter = _Counter(threading.get_ident())
    tool = mon.PROFILER_ID
    mon.use_tool_id(tool, _TOOL_NAME)
    mon.register_callback(tool, mon.events.PY_START, counter.py_start)
    mon.register_callback(tool, mon.events.CALL, counter.call)
    mon.set_events(tool, mon.events.PY_START | mon.events.CALL)
    greenlet.settrace(counter.switch)

    def echo(conn: Any) -> None:
        try:
            while True:
                if deadline:
                    conn.set_read_deadline(time.time() + DEADLINE_SECONDS)
                data = conn.read(65536)
                if not data:
                    break
                conn.write(data)
        except OSError:
            pass
        finally:
            conn.close()

    def main() -> None:
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        print(ln.addr().port, flush=True)
        threading.Thread(target=_control, args=(counter,), daemon=True).start()
        while True:
            netpoll.go(echo, ln.accept())

    netpoll.run(main)


# --------------------------------------------------------------------------
# The parent: the driver
# --------------------------------------------------------------------------


def _round(socks: list[socket.socket], msg: bytes) -> None:
    for s in socks:
        s.sendall(msg)
    for s in socks:
        got = 0
        while got < len(msg):
            chunk = s.recv(len(msg) - got)
            if not chunk:
                raise ConnectionError("the counted echo server closed a connection")
            got += len(chunk)


def measure(
    conns: int = 100,
    messages: int = 50,
    *,
    deadline: bool = False,
    size: int = 64,
    warmup: int = 10,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> dict[str, float] | None:
    """Count the work per echoed message of the goroutine echo server.

    ``conns`` connections each echo ``messages`` messages of ``size`` bytes
    while counting (after ``warmup`` uncounted rounds).  Returns per-message
    figures ``py_functions``, ``calls``, ``switches`` (and the raw ``messages``),
    or ``None`` on Python < 3.12 (see :func:`skip_reason`).  Raises
    :class:`RuntimeError` if the server misbehaves; never hangs past ``timeout``.
    """
    if conns < 1 or messages < 1 or size < 1:
        raise ValueError(f"conns, messages and size must be >= 1 (got {conns}, {messages}, {size})")
    if skip_reason() is not None:
        return None
    if env is None:  # netpoll importable in the child exactly as it is here
        import os

        import netpoll

        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(netpoll.__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # -c, not -m: netpoll.bench imports this module, and runpy warns about that.
    argv = [sys.executable, "-c", "import sys, netpoll.bench.calls as c; sys.exit(c.main())"]
    argv += ["--deadline"] if deadline else []
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    killer = threading.Timer(timeout, proc.kill)  # bounds every blocking step below
    killer.start()
    socks: list[socket.socket] = []
    try:
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the counted echo server did not start (said {line!r})")
        port = int(line)
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        msg = b"x" * size
        for _ in range(warmup):
            _round(socks, msg)
        proc.stdin.write("start\n")
        proc.stdin.flush()
        time.sleep(0.1)  # the control thread flips the flag (nothing is in flight)
        for _ in range(messages):
            _round(socks, msg)
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        counts = json.loads(proc.stdout.readline())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"counting the echo server failed: {exc}") from exc
    finally:
        killer.cancel()
        for s in socks:
            s.close()
        try:
            proc.stdin.write("exit\n")
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    n = conns * messages
    return {
        "messages": float(n),
        "py_functions": counts["py_starts"] / n,
        "calls": counts["calls"] / n,
        "switches": counts["switches"] / n,
    }


def measure_all(conns: int = 100, messages: int = 50) -> dict[str, Any]:
    """Both variants (no deadline, a read deadline per message), JSON-ready.

    ``{"skipped": reason}`` on Python < 3.12, else ``{"conns": C, "rows":
    [{"label", "deadline", "py_functions", "calls", "switches"}, ...]}``.
    """
    reason = skip_reason()
    if reason is not None:
        return {"skipped": reason}
    rows = []
    for deadline in (False, True):
        got = measure(conns, messages, deadline=deadline)
        assert got is not None
        label = f"netpoll-g echo, C={conns}" + (", read deadline per msg" if deadline else "")
        rows.append({"label": label, "deadline": deadline} | got)
    return {"conns": conns, "messages_per_conn": messages, "rows": rows}


def format_table(doc: dict[str, Any]) -> str:
    """The call-count rows as text (or the reason they were skipped)."""
    head = "work per echoed message (sys.monitoring, server thread; exact, not timed):"
    if "skipped" in doc:
        return f"{head}\n  skipped: {doc['skipped']}"
    lines = [head]
    width = max(len(r["label"]) for r in doc["rows"])
    lines.append(f"  {'':<{width}}  {'py functions':>12}  {'calls made':>10}  {'switches':>8}")
    for r in doc["rows"]:
        lines.append(
            f"  {r['label']:<{width}}  {r['py_functions']:>12.1f}  {r['calls']:>10.1f}  "
            f"{r['switches']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: ``main(["--deadline"])`` or ``main([])``; argv from sys.argv."""
    parser = argparse.ArgumentParser(prog="netpoll.bench.calls")
    parser.add_argument("--deadline", action="store_true", help="a read deadline per message")
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    serve(args.deadline)
    return 0
