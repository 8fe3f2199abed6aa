"""Echo server on netpoll's green sockets: a goroutine per conn, ``recv(65536)`` / ``sendall``.

The server that ``docs/performance.md`` ("Green sockets") counts with the
shared ``calls_per_message.py`` tool::

    python calls_per_message.py benchmarks/green_echo_server.py 100 100

Arguments: PORT [TIMEOUT]: a socket timeout in seconds (e.g. 5: a per-call
deadline; default none), also taken from ``GREEN_ECHO_TIMEOUT`` in the
environment (the counting tool passes only the port).  It serves until
killed.
"""

from __future__ import annotations

import os
import sys

import netpoll
import netpoll.socket as gsocket

_T = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("GREEN_ECHO_TIMEOUT", "none")
TIMEOUT = None if _T == "none" else float(_T)


def serve(c: gsocket.socket) -> None:
    """Echo one connection until EOF."""
    if TIMEOUT is not None:
        c.settimeout(TIMEOUT)
    try:
        while data := c.recv(65536):
            c.sendall(data)
    except OSError:
        pass
    finally:
        c.close()


def main() -> None:
    """Accept forever on 127.0.0.1:PORT, a goroutine per connection."""
    port = int(sys.argv[1])
    ln = gsocket.create_server(("127.0.0.1", port))
    while True:
        c, _ = ln.accept()
        netpoll.go(serve, c)


if __name__ == "__main__":
    netpoll.run(main)
