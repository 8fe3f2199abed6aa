"""The library tests can fail: unpatched, each library holds its M.

One child process with no patching runs every library module's ``CONTROLS``
(:func:`tests.libs.harness.run_controls`): a few goroutines on one M make the
same slow calls the tick scenarios make.  Each library must show what the
patched tests rule out: one goroutine at a time inside a call (peak 1), and
a ticking goroutine held for most of a slow call (the server really delays:
otherwise the tick tests would pass on a blocking library too).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.libs import harness

#: Test module -> the session fixture of its server.
MODULES = {
    "tests.libs.test_redis": "redis_srv",
    "tests.libs.test_requests": "http_srv",
    "tests.libs.test_urllib": "http_srv",
    "tests.libs.test_smtplib": "smtp_srv",
    "tests.libs.test_psycopg": "pg_srv",
}

_results: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize("module", list(MODULES))
def test_unpatched_library_blocks_the_m(
    module: str,
    request: pytest.FixtureRequest,
    redis_srv: Any,
    http_srv: Any,
    smtp_srv: Any,
    pg_srv: Any,
) -> None:
    # The servers are arguments, not getfixturevalue() calls: session fixtures
    # set up before the leak check's snapshot, so their pipes are no leak.
    if not _results:
        servers = {m: request.getfixturevalue(fix) for m, fix in MODULES.items()}
        _results.update(harness.run_controls(servers))
    harness.check_control(_results[module])
