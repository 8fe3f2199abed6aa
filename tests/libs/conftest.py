"""Fixtures of the library tests: one server of each kind per session, and the two patch modes.

The servers (:mod:`tests.helpers.servers`) are session-scoped: each starts
the first time a test needs it and stops at the end of the run.  Being
session-scoped they are set up before the leak check's snapshot
(``tests/conftest.py``), so their pipes are not counted as a test's leak.

``mode`` is the patch parameter of every scenario test (see
:mod:`tests.libs.harness`): ``library`` (``netpoll.patch.library`` in this
process) or ``all`` (``netpoll.patch.all`` in a child, whose results are
computed once per module and server, and looked up per test).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import servers
from tests.libs import harness

MODES = ["library", "all"]


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[servers.RedisServer]:
    """A redis-server for the session."""
    servers.require_module("redis", "pip install redis")
    with servers.redis_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def pg_srv() -> Iterator[servers.PostgresServer]:
    """A PostgreSQL cluster for the session."""
    servers.require_module("psycopg", "pip install 'psycopg[binary]'")
    with servers.postgres_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def http_srv() -> Iterator[servers.HTTPServers]:
    """An HTTP and an HTTPS server for the session."""
    with servers.http_servers() as srv:
        yield srv


@pytest.fixture(scope="session")
def smtp_srv() -> Iterator[servers.SMTPServer]:
    """An SMTP server for the session."""
    with servers.smtp_server() as srv:
        yield srv


_child_cache: dict[tuple[str, str, str], dict[str, Any]] = {}


def child_results(module: str, server: Any, patch: str = "all") -> dict[str, Any]:
    """Every scenario of ``module`` run once in a child (cached per module, server, patch)."""
    key = (module, patch, repr(server))
    if key not in _child_cache:
        _child_cache[key] = harness.run_child(module, server, patch=patch)
    return _child_cache[key]


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``scenario(mode, fn, server)``: run a scenario of the test module in that patch mode.

    ``library``: patch the module's ``PATCH_LIBRARIES`` with
    ``netpoll.patch.library`` here, and call ``fn(server)``.  ``all``: look
    the result of ``fn`` up in the module's child run.  Either way the
    scenario's return value comes back, or its failure fails the test.
    """
    module = request.module

    def run(mode: str, fn: Callable[[Any], Any], server: Any) -> Any:
        if mode == "library":
            import netpoll.patch

            for name in module.PATCH_LIBRARIES:
                netpoll.patch.library(name)
            # pytest's log capture keeps every LogRecord until the test ends,
            # and urllib3's "Retrying ... after connection broken by
            # NewConnectionError(conn, ...)" record holds the pooled
            # HTTPConnection that connects on the next attempt, with its open
            # socket, past the leak check: retries are not logged here.
            urllib3_log = logging.getLogger("urllib3")
            level = urllib3_log.level
            urllib3_log.setLevel(logging.ERROR)
            try:
                return fn(server)
            finally:
                urllib3_log.setLevel(level)
                # A failed request's exception (and its traceback's frames)
                # can keep an HTTPResponse alive in a reference cycle; its
                # makefile holds the socket's fd open past sock.close(), as
                # with stdlib sockets.  Collect it before the leak check.
                gc.collect()
        assert mode == "all", mode
        results = child_results(module.__name__, server)
        name = next(k for k, v in module.SCENARIOS.items() if v is fn)
        got = results[name]
        if "error" in got:
            pytest.fail(f"scenario {name} under netpoll.patch.all() failed:\n{got['error']}")
        return got["value"]

    return run
