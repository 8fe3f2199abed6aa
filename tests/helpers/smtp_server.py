"""An SMTP server (aiosmtpd) for the smtplib tests, run as a child process.

Run by :func:`tests.helpers.servers.smtp_server` as a script
(``python smtp_server.py``): it binds 127.0.0.1 on a free port, prints
``PORT <n>`` on stdout and serves until stdin closes.

The DATA reply proves the server got the client's message intact: it is
``250 OK sha256=<first 16 hex digits of the message body's SHA-256>``, which
the client compares with its own digest.  A message whose first recipient's
local part is ``delay<ms>`` (``delay50@example.com``) is answered after
``ms`` milliseconds: a slow server, so clients park while it waits.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class DigestHandler:
    """Answers DATA with the digest of the message it received."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Reply with the digest, after the delay the first recipient asks for."""
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        local = first.split("@", 1)[0]
        if local.startswith("delay") and local[5:].isdigit():
            await asyncio.sleep(int(local[5:]) / 1000.0)
        content = envelope.original_content or b""
        digest = hashlib.sha256(content).hexdigest()[:16]
        return f"250 OK sha256={digest}"


async def serve() -> None:
    """Listen, print the port, serve until stdin reaches EOF."""
    loop = asyncio.get_running_loop()
    handler = DigestHandler()

    def factory() -> Any:
        return SMTP(handler, hostname="localhost", timeout=30)

    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=256)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    # Block on stdin in a worker thread: EOF means the parent is done (or gone).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(serve())
