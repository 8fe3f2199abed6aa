"""Dialing: Dialer, dial, happy eyeballs, serial fallback, self-connect retry.

Go's ``net/dial.go`` (``Dialer``, ``Dialer.DialContext``, ``dialParallel``,
``dialSerial``, ``partialDeadline``, ``dialSingle``), ``net/ipsock.go``
(``addrList.partition``), ``net/ipsock_posix.go`` (``internetSocket``) and
``net/tcpsock_posix.go`` (``doDialTCP``: the self-connect retry).

The flow of :meth:`Dialer.dial`:

1. validate the network, the timeout and the local address, compute the
   deadline (the earliest of ``timeout`` and ``deadline``) and resolve the
   address (all before any socket exists);
2. for "tcp" with addresses of both families and ``fallback_delay >= 0``,
   race the first address's family (primaries) against the other
   (fallbacks), starting the fallbacks after ``fallback_delay`` or as soon as
   the primaries fail (RFC 6555, Go's ``dialParallel``); otherwise try the
   addresses one after another, each under a share of the remaining time
   (``dialSerial`` + ``partialDeadline``);
3. each attempt is Go's ``socket()``: socket, control, bind, non-blocking
   connect, wait for writability under the deadline, SO_ERROR, getpeername.
"""

from __future__ import annotations

import errno
import math
import socket as _socket
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, overload

from netpoll.core.chan import Chan, RecvCase, select
from netpoll.core.errors import DeadlineExceededError
from netpoll.core.g import current_goroutine
from netpoll.core.sched import go
from netpoll.net.addr import (
    TCP_NETWORKS,
    UDP_NETWORKS,
    Addr,
    TCPAddr,
    UDPAddr,
    UnixAddr,
    join_host_port,
    parse_network,
)
from netpoll.net.conn import Conn, TCPConn, UDPConn, UnixConn
from netpoll.net.context import CancelEvent, CancelWatcher, DialContext, as_deadline
from netpoll.net.errors import AddrError, CanceledError, op_error
from netpoll.net.lookup import resolve_addr_list, resolve_tcp_addr, resolve_udp_addr
from netpoll.net.sock import ControlFn, NetFD, favorite_family, socket
from netpoll.net.socket_adapter import ConnSocket, address_text

#: Network names, as literal types: ``dial("tcp", ...)`` is typed TCPConn.
TCPNetwork = Literal["tcp", "tcp4", "tcp6"]
UDPNetwork = Literal["udp", "udp4", "udp6"]
UnixNetwork = Literal["unix", "unixgram", "unixpacket"]

#: Go's ``partialDeadline`` floor: each address gets at least this long
#: unless less than that remains in total.
SANE_MINIMUM = 2.0

#: How long the coordinator waits for a losing racer to finish after
#: canceling it (it normally ends at once: the cancel wakes its connect).
RACER_JOIN_TIMEOUT = 2.0


class _Joinable(Protocol):
    def join(self, timeout: float | None = None) -> Any: ...


def _start_racer(
    fn: Callable[[DialContext, bool], None], rctx: DialContext, primary: bool
) -> _Joinable:
    """Start one happy-eyeballs racer of the caller's own kind: a G or a thread."""
    if current_goroutine() is not None:
        return go(fn, rctx, primary)
    t = threading.Thread(target=fn, args=(rctx, primary), name="net-dial-racer", daemon=True)
    t.start()
    return t


_UNIX_SOTYPE = {
    "unix": _socket.SOCK_STREAM,
    "unixpacket": _socket.SOCK_SEQPACKET,
    "unixgram": _socket.SOCK_DGRAM,
}


def partial_deadline(now: float, deadline: float | None, addrs_remaining: int) -> float | None:
    """The deadline for one of ``addrs_remaining`` addresses (Go's ``partialDeadline``).

    The remaining time is split evenly, but each address gets at least
    :data:`SANE_MINIMUM` seconds (or all that remains, if less).  Raises
    :class:`DeadlineExceededError` when no time is left.
    """
    if deadline is None:
        return None
    remaining = deadline - now
    if remaining <= 0:
        raise DeadlineExceededError()
    timeout = remaining / addrs_remaining
    if timeout < SANE_MINIMUM:
        timeout = remaining if remaining < SANE_MINIMUM else SANE_MINIMUM
    return now + timeout


def partition(addrs: list[Addr]) -> tuple[list[Addr], list[Addr]]:
    """Split by the first address's family (Go's ``addrList.partition(isIPv4)``)."""
    primaries: list[Addr] = []
    fallbacks: list[Addr] = []
    first_label: bool | None = None
    for a in addrs:
        label = isinstance(a, (TCPAddr, UDPAddr)) and ":" not in a.ip
        if first_label is None or label == first_label:
            first_label = label
            primaries.append(a)
        else:
            fallbacks.append(a)
    return primaries, fallbacks


def _self_connect(nfd: NetFD) -> bool:
    """Go's ``selfConnect``: the kernel connected the socket to itself."""
    la, ra = nfd.laddr, nfd.raddr
    if la is None or ra is None:
        return True
    assert isinstance(la, TCPAddr) and isinstance(ra, TCPAddr)
    return la.port == ra.port and la.ip == ra.ip


def _spurious_enotavail(err: BaseException | None) -> bool:
    return isinstance(err, OSError) and err.errno == errno.EADDRNOTAVAIL


class Dialer:
    """Options for connecting (Go's ``net.Dialer``).

    ``timeout``
        seconds for the whole dial (resolution included); None = none.  A
        negative value is a :class:`ValueError`.
    ``deadline``
        absolute time (time.time() float or datetime) the dial must finish by.
    ``local_addr``
        local address to bind (an address object or ``"host:port"``); its
        type and family must suit the network.
    ``fallback_delay``
        happy-eyeballs delay before the other address family is tried
        (seconds, default 0.3); negative disables the race (serial dialing).
    ``keep_alive``
        TCP keep-alive period: 0 = Go's default 15 s, negative = off.
    ``control``
        ``control(network, address, raw_conn)`` after socket, before connect.
    ``cancel``
        a :class:`threading.Event` (or anything with ``is_set``/``wait``):
        setting it aborts the dial with :class:`~netpoll.net.errors.ErrCanceled`.
    """

    def __init__(
        self,
        timeout: float | None = None,
        deadline: Any = None,
        local_addr: Addr | str | None = None,
        fallback_delay: float = 0.3,
        keep_alive: float = 0.0,
        control: ControlFn | None = None,
        cancel: CancelEvent | None = None,
    ) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.local_addr = local_addr
        self.fallback_delay = fallback_delay
        self.keep_alive = keep_alive
        self.control = control
        self.cancel = cancel

    def _deadline(self, now: float) -> float | None:
        """Go's ``Dialer.deadline``: the earliest of now+timeout and deadline."""
        timeout = self.timeout
        earliest: float | None = None
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"netpoll: Dialer timeout must be seconds, not {timeout!r}")
            if math.isnan(timeout) or timeout < 0:
                raise ValueError(f"netpoll: negative or NaN dial timeout {timeout!r} (timeout)")
            earliest = now + timeout
        d = as_deadline(self.deadline)
        if d is not None:
            earliest = d if earliest is None else min(earliest, d)
        return earliest

    def _local(self, network: str) -> Addr | None:
        la = self.local_addr
        if la is None or not isinstance(la, str):
            return la
        if network in TCP_NETWORKS:
            return resolve_tcp_addr(network, la)
        if network in UDP_NETWORKS:
            return resolve_udp_addr(network, la)
        return UnixAddr(la, network)

    @overload
    def dial(self, network: TCPNetwork, address: str) -> TCPConn: ...
    @overload
    def dial(self, network: UnixNetwork, address: str) -> UnixConn: ...
    @overload
    def dial(self, network: UDPNetwork, address: str) -> UDPConn: ...
    @overload
    def dial(self, network: str, address: str) -> Conn: ...

    def dial(self, network: str, address: str) -> Conn:
        """Connect to ``address`` on ``network``; returns a TCPConn, UDPConn or UnixConn.

        Raises an OpError (``dial tcp 127.0.0.1:1: connect: connection
        refused``) that is also the matching builtin exception;
        ``TimeoutError`` when the deadline passes, ErrCanceled when
        ``cancel`` fires.  Bad input fails before any socket is opened.
        """
        deadline = self._deadline(time.time())
        try:
            parse_network(network)
            la = self._local(network)
        except OSError as exc:
            raise op_error("dial", network, None, None, exc) from None
        cancel = self.cancel
        if cancel is not None and cancel.is_set():
            raise op_error("dial", network, None, None, CanceledError())
        ctx = DialContext(deadline)
        watcher = CancelWatcher(cancel, ctx) if cancel is not None else None
        try:
            try:
                addrs = resolve_addr_list("dial", network, address, la, ctx)
            except OSError as exc:
                raise op_error("dial", network, None, None, exc) from None
            sd = _SysDialer(self, network, address, la)
            primaries: list[Addr] = addrs
            fallbacks: list[Addr] = []
            if self.fallback_delay >= 0 and network == "tcp":
                primaries, fallbacks = partition(addrs)
            if fallbacks:
                conn = sd.dial_parallel(ctx, primaries, fallbacks)
            else:
                conn = sd.dial_serial(ctx, primaries)
        finally:
            if watcher is not None:
                watcher.stop()
        if isinstance(conn, TCPConn) and self.keep_alive >= 0:
            conn._nfd.apply_keep_alive(self.keep_alive)
        return conn


class _SysDialer:
    """One dial's state (Go's ``sysDialer``)."""

    def __init__(self, dialer: Dialer, network: str, address: str, la: Addr | None) -> None:
        self.dialer = dialer
        self.network = network
        self.address = address
        self.la = la

    def dial_parallel(self, ctx: DialContext, primaries: list[Addr], fallbacks: list[Addr]) -> Conn:
        """Race primaries against fallbacks started ``fallback_delay`` later.

        Go's ``dialParallel``: the first success wins, the loser is canceled
        and its conn closed; if both fail, the primaries' error is raised.
        The racers are goroutines when the caller is one (the coordinator
        parks in :func:`select`, its M runs the racers) and threads when
        the caller is a plain thread.
        """
        # Two racers send once each: with room for both, a racer never blocks.
        results: Chan[tuple[bool, Conn | None, BaseException | None]] = Chan(2)
        lock = threading.Lock()
        returned = [False]

        def racer(rctx: DialContext, primary: bool) -> None:
            conn: Conn | None = None
            err: BaseException | None = None
            try:
                conn = self.dial_serial(rctx, primaries if primary else fallbacks)
            except BaseException as exc:
                err = exc
            with lock:
                if not returned[0]:
                    results.send((primary, conn, err))
                    return
            if conn is not None:  # the coordinator is gone: nobody wants it
                conn.close()

        contexts = [ctx.child()]
        racers = [_start_racer(racer, contexts[0], True)]
        start_fallback_at = time.monotonic() + max(0.0, self.dialer.fallback_delay)
        primary_err: BaseException | None = None
        fallback_err: BaseException | None = None
        try:
            while True:
                timeout = None
                if len(racers) == 1:
                    timeout = max(0.0, start_fallback_at - time.monotonic())
                got = select([RecvCase(results)], timeout=timeout)
                if got.case < 0:
                    contexts.append(ctx.child())
                    racers.append(_start_racer(racer, contexts[1], False))
                    continue
                outcome: tuple[bool, Conn | None, BaseException | None] = got.value
                primary, conn, err = outcome
                if err is None:
                    assert conn is not None
                    return conn
                if primary:
                    primary_err = err
                else:
                    fallback_err = err
                if primary_err is not None and fallback_err is not None:
                    raise primary_err
                if primary and len(racers) == 1:
                    start_fallback_at = 0.0  # primaries failed: fall back now
        finally:
            with lock:
                returned[0] = True
            # Go's results channel is unbuffered: a second winner blocks until
            # it sees ``returned`` and closes its conn.  This one buffers, so
            # a conn that got in after the first success is closed here.
            while True:
                extra_got = select([RecvCase(results)], default=True)
                if extra_got.case < 0:
                    break
                extra = extra_got.value[1]
                if extra is not None:
                    try:
                        extra.close()
                    except OSError:
                        pass
            for c in contexts:
                c.cancel()
            for r in racers:
                r.join(RACER_JOIN_TIMEOUT)
            for c in contexts:
                c.release()

    def dial_serial(self, ctx: DialContext, ras: list[Addr]) -> Conn:
        """Try each address in turn; the first error is reported (Go's ``dialSerial``)."""
        first_err: BaseException | None = None
        for i, ra in enumerate(ras):
            err = ctx.err()
            if err is not None:
                raise op_error("dial", self.network, self.la, ra, err)
            dctx = ctx
            if ctx.deadline is not None:
                try:
                    partial = partial_deadline(time.time(), ctx.deadline, len(ras) - i)
                except DeadlineExceededError as exc:
                    if first_err is None:
                        first_err = op_error("dial", self.network, self.la, ra, exc)
                    break
                if partial is not None and partial < ctx.deadline:
                    dctx = ctx.child(partial)
            try:
                return self.dial_single(dctx, ra)
            except OSError as exc:
                if first_err is None:
                    first_err = exc
            finally:
                if dctx is not ctx:
                    dctx.release()
        if first_err is None:
            first_err = op_error("dial", self.network, None, None, AddrError("missing address"))
        raise first_err

    def dial_single(self, ctx: DialContext, ra: Addr) -> Conn:
        """Dial one address; failures become ``dial`` OpErrors (Go's ``dialSingle``)."""
        la = self.la
        try:
            if isinstance(ra, TCPAddr):
                return self.dial_tcp(ctx, la, ra)
            if isinstance(ra, UDPAddr):
                return UDPConn(self._internet_socket(ctx, la, ra, _socket.SOCK_DGRAM))
            nfd = socket(
                ctx,
                self.network,
                _socket.AF_UNIX,
                _UNIX_SOTYPE[self.network],
                0,
                False,
                la,
                ra,
                self.dialer.control,
            )
            return UnixConn(nfd)
        except OSError as exc:
            raise op_error("dial", self.network, la, ra, exc) from None

    def _internet_socket(self, ctx: DialContext, la: Addr | None, ra: Addr, sotype: int) -> NetFD:
        """Go's ``internetSocket``: pick the family, then ``socket()``."""
        family, ipv6only = favorite_family(self.network, la, ra, "dial")
        return socket(ctx, self.network, family, sotype, 0, ipv6only, la, ra, self.dialer.control)

    def dial_tcp(self, ctx: DialContext, la: Addr | None, ra: TCPAddr) -> TCPConn:
        """Connect, retrying a self-connect or spurious EADDRNOTAVAIL twice (Go's ``doDialTCP``).

        With no fixed local port the kernel may pick the remote port as the
        local one and connect the socket to itself (TCP simultaneous open);
        that conn is closed and the dial tried again.
        """
        ephemeral = la is None or (isinstance(la, TCPAddr) and la.port == 0)
        nfd: NetFD | None = None
        err: OSError | None = None
        for attempt in range(3):
            nfd, err = None, None
            try:
                nfd = self._internet_socket(ctx, la, ra, _socket.SOCK_STREAM)
            except OSError as exc:
                err = exc
            if attempt == 2 or not ephemeral:
                break
            if nfd is not None and _self_connect(nfd):
                nfd.close()
                continue
            if _spurious_enotavail(err):
                continue
            break
        if err is not None:
            raise err
        assert nfd is not None
        try:
            nfd.set_no_delay(True)
        except OSError:
            pass
        return TCPConn(nfd)


@overload
def dial(network: TCPNetwork, address: str, timeout: float | None = None) -> TCPConn: ...
@overload
def dial(network: UnixNetwork, address: str, timeout: float | None = None) -> UnixConn: ...
@overload
def dial(network: UDPNetwork, address: str, timeout: float | None = None) -> UDPConn: ...
@overload
def dial(network: str, address: str, timeout: float | None = None) -> Conn: ...


def dial(network: str, address: str, timeout: float | None = None) -> Conn:
    """Connect to ``address`` on ``network`` (Go's ``net.Dial`` / ``DialTimeout``).

    ``network`` is "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix",
    "unixgram" or "unixpacket"; ``address`` is ``"host:port"`` (``"[::1]:80"``,
    ``"localhost:http"``) or a socket path.
    """
    return Dialer(timeout=timeout).dial(network, address)


__all__ = [
    "SANE_MINIMUM",
    "Dialer",
    "TCPNetwork",
    "UDPNetwork",
    "UnixNetwork",
    "create_connection",
    "dial",
    "partial_deadline",
    "partition",
]


def create_connection(
    address: Any,
    timeout: Any = None,
    source_address: Any = None,
) -> ConnSocket:
    """Connect like :func:`socket.create_connection`, returning a netpoll-backed socket.

    ``address`` is ``(host, port)``, ``"host:port"`` or a Unix path;
    ``timeout`` bounds the connect and becomes the socket's timeout (the
    stdlib's "global default" sentinel means :func:`socket.getdefaulttimeout`);
    ``source_address`` is ``(host, port)`` to bind first.  Errors are the
    dial's OpErrors (``ConnectionRefusedError``, ``TimeoutError`` ...).
    """
    if timeout is _socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
        timeout = _socket.getdefaulttimeout()
    network, text = address_text(address)
    local = None
    if source_address is not None:
        local = join_host_port(str(source_address[0]), source_address[1])
    conn = Dialer(timeout=timeout, local_addr=local).dial(network, text)
    sock = ConnSocket(conn)
    if timeout is not None:
        sock.settimeout(timeout)
    return sock
