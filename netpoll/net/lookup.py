"""Resolving "host:port" into address lists (Go's ``net/ipsock.go`` + ``net/lookup.go``).

``resolve_addr_list`` is Go's ``Resolver.resolveAddrList``: parse the
network and address, look the host up (an IP literal directly, a name with
:func:`socket.getaddrinfo`), keep the addresses the network allows (tcp4 →
IPv4 ...), and for a dial with a local address keep the remote addresses of
the local address's family.  Errors are :class:`AddrError`,
:class:`UnknownNetworkError` or :class:`DNSError`, raised before any socket
exists.

A name lookup bounded by a deadline or a cancel event runs in a worker
thread and the caller waits no longer than the bound (Go runs ``getaddrinfo``
on its own thread the same way); a lookup that is abandoned finishes in the
background and its result is dropped.
"""

from __future__ import annotations

import socket as _socket
import threading
import time
from typing import Any

from netpoll.net.addr import (
    TCP_NETWORKS,
    UDP_NETWORKS,
    UNIX_NETWORKS,
    Addr,
    TCPAddr,
    UDPAddr,
    UnixAddr,
    parse_ip,
    parse_network,
    parse_port,
    split_host_port,
)
from netpoll.net.context import DialContext
from netpoll.net.errors import AddrError, CanceledError, DNSError

_NO_SUITABLE = "no suitable address found"


def _gai(host: str) -> list[tuple[str, str]]:
    """getaddrinfo → unique (ip, zone) pairs in the resolver's order."""
    try:
        infos = _socket.getaddrinfo(host, None, 0, _socket.SOCK_STREAM)
    except _socket.gaierror as exc:
        if exc.errno in (_socket.EAI_NONAME, getattr(_socket, "EAI_NODATA", -5)):
            raise DNSError("no such host", host, is_not_found=True) from None
        raise DNSError(str(exc.strerror or exc).lower(), host) from None
    except UnicodeError:
        raise DNSError("no such host", host, is_not_found=True) from None
    seen: list[tuple[str, str]] = []
    for family, _, _, _, sa in infos:
        if family not in (_socket.AF_INET, _socket.AF_INET6):
            continue
        parsed = parse_ip(str(sa[0]))
        if parsed is not None and parsed not in seen:
            seen.append(parsed)
    if not seen:
        raise DNSError("no such host", host, is_not_found=True)
    return seen


def lookup_ip(host: str, ctx: DialContext | None = None) -> list[tuple[str, str]]:
    """IPs of ``host`` as ``(ip, zone)``: a literal at once, a name via getaddrinfo.

    With a ``ctx`` that has a deadline or may be canceled, the lookup runs in a
    worker thread and this call returns (with a timeout :class:`DNSError` or
    :class:`CanceledError`) as soon as the bound is reached.
    """
    parsed = parse_ip(host)
    if parsed is not None:
        return [parsed]
    if ctx is None or (ctx.deadline is None and not ctx.watched):
        return _gai(host)
    err = ctx.err()
    if err is not None:
        raise _lookup_ctx_error(err, host)
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["ok"] = _gai(host)
        except BaseException as exc:
            box["err"] = exc
        done.set()

    threading.Thread(target=work, name="net-lookup", daemon=True).start()
    handle = ctx.on_cancel(done.set)
    try:
        done.wait(ctx.remaining())
    finally:
        ctx.remove(handle)
    if "ok" in box:
        result: list[tuple[str, str]] = box["ok"]
        return result
    if "err" in box:
        raise box["err"]
    raise _lookup_ctx_error(ctx.err(), host)


def _lookup_ctx_error(err: OSError | None, host: str) -> OSError:
    if isinstance(err, CanceledError):
        return err
    return DNSError("i/o timeout", host, is_timeout=True)


def internet_addr_list(
    network: str, address: str, ctx: DialContext | None = None
) -> list[TCPAddr | UDPAddr]:
    """All addresses ``address`` stands for on ``network`` (Go's ``internetAddrList``)."""
    host, port = "", 0
    if address:
        host, service = split_host_port(address)
        port = parse_port(network, service)
    cls = UDPAddr if network in UDP_NETWORKS else TCPAddr
    if host == "":
        return [cls("", port)]
    ips = lookup_ip(host, ctx)
    if len(ips) == 1 and ips[0][0] == "::":
        # Go's issue 18806: "::" may bind but not connect; also try 0.0.0.0.
        ips.append(("0.0.0.0", ""))
    if network[-1] == "4":
        ips = [ip for ip in ips if ":" not in ip[0]]
    elif network[-1] == "6":
        ips = [ip for ip in ips if ":" in ip[0]]
    if not ips:
        raise AddrError(_NO_SUITABLE, host)
    return [cls(ip, port, zone) for ip, zone in ips]


def resolve_addr_list(
    op: str,
    network: str,
    address: str,
    hint: Addr | None = None,
    ctx: DialContext | None = None,
) -> list[Addr]:
    """Go's ``resolveAddrList``: the candidate addresses for a dial or listen.

    For a dial, ``hint`` is the local address: it must be of the network's
    type, and only remote addresses of its family are kept.
    """
    parse_network(network)
    if op == "dial" and address == "":
        raise AddrError("missing address")
    if network in UNIX_NETWORKS:
        ua = UnixAddr(address, network)
        if op == "dial" and hint is not None and hint.network() != ua.network():
            raise AddrError(
                f"mismatched local address type {type(hint).__name__} for network {network}",
                str(hint),
            )
        return [ua]
    addrs: list[Addr] = list(internet_addr_list(network, address, ctx))
    if op != "dial" or hint is None:
        return addrs
    want = UDPAddr if network in UDP_NETWORKS else TCPAddr
    if not isinstance(hint, want):
        raise AddrError(
            f"mismatched local address type {type(hint).__name__} for network {network}",
            str(hint),
        )
    wildcard = hint.is_wildcard()
    kept: list[Addr] = []
    for a in addrs:
        assert isinstance(a, (TCPAddr, UDPAddr))
        if not wildcard and not a.is_wildcard() and a.family() != hint.family():
            continue
        kept.append(a)
    if not kept:
        fam = "IPv6" if hint.family() == _socket.AF_INET6 else "IPv4"
        raise AddrError(
            f"{_NO_SUITABLE}: local address is {fam} and no remote address of {address} is",
            str(hint),
        )
    return kept


def _for_resolve(network: str, address: str, addrs: list[Addr]) -> Addr:
    """Go's ``addrList.forResolve``: prefer IPv4 unless an IPv6 literal was given."""
    want6 = network in ("tcp", "udp") and "[" in address
    for a in addrs:
        is4 = not isinstance(a, UnixAddr) and ":" not in a.ip
        if is4 != want6:
            return a
    return addrs[0]


def resolve_tcp_addr(network: str = "tcp", address: str = "") -> TCPAddr:
    """One TCPAddr for ``address`` (Go's ``ResolveTCPAddr``); IPv4 preferred."""
    if network not in TCP_NETWORKS:
        from netpoll.net.errors import UnknownNetworkError

        raise UnknownNetworkError(network)
    a = _for_resolve(network, address, resolve_addr_list("resolve", network, address))
    assert isinstance(a, TCPAddr)
    return a


def resolve_udp_addr(network: str = "udp", address: str = "") -> UDPAddr:
    """One UDPAddr for ``address`` (Go's ``ResolveUDPAddr``); IPv4 preferred."""
    if network not in UDP_NETWORKS:
        from netpoll.net.errors import UnknownNetworkError

        raise UnknownNetworkError(network)
    a = _for_resolve(network, address, resolve_addr_list("resolve", network, address))
    assert isinstance(a, UDPAddr)
    return a


def first_ipv4(addrs: list[Addr]) -> Addr:
    """Go's ``addrList.first(isIPv4)``: the first IPv4 address, else the first."""
    for a in addrs:
        if isinstance(a, (TCPAddr, UDPAddr)) and ":" not in a.ip:
            return a
    return addrs[0]


def lookup_host(host: str, timeout: float | None = None) -> list[str]:
    """The addresses of ``host`` as text (Go's ``net.LookupHost``).

    An IP literal is returned as is (canonical form); a name goes through
    ``getaddrinfo``, in a worker thread bounded by ``timeout`` when one is
    given.  Raises :class:`DNSError` ("lookup nosuch.invalid: no such host").
    """
    ctx = DialContext(time.time() + timeout) if timeout is not None else None
    try:
        return [f"{ip}%{zone}" if zone else ip for ip, zone in lookup_ip(host, ctx)]
    finally:
        if ctx is not None:
            ctx.release()


def lookup_port(network: str, service: str) -> int:
    """The port number of ``service`` on ``network`` (Go's ``net.LookupPort``).

    ``"80"`` → 80, ``"http"`` → 80 (from the services database for "tcp" or
    "udp").  Raises :class:`AddrError` ("invalid port") or :class:`DNSError`
    ("unknown port").
    """
    if network not in TCP_NETWORKS + UDP_NETWORKS + ("ip", "ip4", "ip6", ""):
        from netpoll.net.errors import UnknownNetworkError

        raise UnknownNetworkError(network)
    return parse_port(network or "tcp", service)


__all__ = [
    "first_ipv4",
    "internet_addr_list",
    "lookup_host",
    "lookup_ip",
    "lookup_port",
    "resolve_addr_list",
    "resolve_tcp_addr",
    "resolve_udp_addr",
]
