"""A small retrying client, tested against refused connects, a reset and short writes.

The client (:func:`fetch`) sends one request line and reads one reply line,
retrying with exponential backoff when the connect is refused, the
connection is reset, or it times out.  :func:`main` runs it against a tiny
upper-casing server in the same process and uses :mod:`netpoll.testing` to
make the network misbehave, deterministically, without a proxy or mocks:

1. the first two connects are refused      -> the third attempt succeeds;
2. the reply is cut by a reset after 3 bytes -> the second attempt succeeds;
3. every write of the client moves 2 bytes  -> one attempt; the request
   arrives in pieces and the server must reassemble the line.

Run it with ``python examples/retrying_client.py`` (tests/test_readme_example.py
runs it on every backend).
"""

from __future__ import annotations

import errno
import threading
import time

import netpoll
from netpoll.testing import Faults, on_thread

#: Failures worth another attempt (all are also netpoll.OpError).
RETRYABLE = (ConnectionRefusedError, ConnectionResetError, TimeoutError)


def fetch(
    address: str, request: bytes, *, attempts: int = 5, backoff: float = 0.01, timeout: float = 2.0
) -> tuple[bytes, int]:
    """Send ``request`` (one line) to ``address``; return (reply line, attempts used)."""
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            with netpoll.dial("tcp", address, timeout=timeout) as conn:
                conn.set_deadline(time.time() + timeout)
                conn.write(request)  # writes everything, however short each syscall is
                reply = bytearray()
                while not reply.endswith(b"\n"):
                    chunk = conn.read(4096)
                    if not chunk:
                        raise ConnectionResetError(errno.ECONNRESET, "EOF inside the reply")
                    reply += chunk
                return bytes(reply), attempt
        except RETRYABLE:
            if attempt == attempts:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class UpperServer:
    """Replies to each request line with the line in upper case, then closes."""

    def __init__(self) -> None:
        self.ln = netpoll.listen("tcp", "127.0.0.1:0")
        self.address = str(self.ln.addr())
        self._thread = threading.Thread(target=self._serve, name="upper-server")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn = self.ln.accept()
            except netpoll.ErrClosed:
                return
            with conn:
                line = bytearray()
                try:
                    while not line.endswith(b"\n"):
                        chunk = conn.read(4096)
                        if not chunk:
                            break
                        line += chunk
                    conn.write(bytes(line).upper())
                except OSError:
                    pass  # the client went away: next one

    def close(self) -> None:
        """Stop accepting (wakes the parked accept) and wait for the thread."""
        self.ln.close()
        self._thread.join()

    def __enter__(self) -> UpperServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    """Run the three fault scenarios; raises AssertionError if the client misbehaves."""
    with Faults() as faults:
        with UpperServer() as server:
            run_scenarios(faults, server.address)
        # Nothing the Switch saw opened is left open, on either side.
        assert not faults.switch.sockets(), faults.switch.leak_report()
    print("retrying client survived refused connects, a reset and short writes")


def run_scenarios(faults: Faults, address: str) -> None:
    """The three scenarios, against a running server at ``address``."""
    client = on_thread()  # faults for this thread's calls only, not the server's

    # 1. Refused connects: the first two dials fail before any syscall runs.
    refused = faults.fail("connect", errno.ECONNREFUSED, times=2)
    assert fetch(address, b"hello\n") == (b"HELLO\n", 3)
    assert refused.fired == 2

    # 2. A reset mid-stream: the client's connection delivers 3 bytes of the
    #    reply, then its reads fail with ECONNRESET.
    reset = faults.reset_after(3, times=1, where=client)
    assert fetch(address, b"again\n") == (b"AGAIN\n", 2)
    assert reset.fired == 1  # one read failed with the reset
    assert reset.connections == 1  # type: ignore[attr-defined]

    # 3. Short writes: every write syscall of the client takes 2 bytes.
    short = faults.short("write", 2, where=client)
    assert fetch(address, b"in pieces\n") == (b"IN PIECES\n", 1)
    assert short.fired == 5  # 10 bytes, 2 at a time


if __name__ == "__main__":
    main()
