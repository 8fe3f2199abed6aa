"""Network addresses: TCPAddr, UDPAddr, UnixAddr, host:port parsing.

Go keeps these in ``net/ipsock.go`` (``SplitHostPort``, ``JoinHostPort``),
``net/tcpsock.go`` / ``net/udpsock.go`` / ``net/unixsock.go`` (the address
types and their ``String``/``Network``), ``net/net.go`` (``parseNetwork``) and
``net/port.go`` / ``net/lookup.go`` (ports by number or by service name).

Addresses are small frozen dataclasses.  An IP is kept as its canonical text
(``"127.0.0.1"``, ``"::1"``; ``""`` for "no IP", Go's nil IP, which means the
wildcard address); an IPv4-mapped IPv6 address is stored as IPv4, as Go's
``IP.String`` prints it.  ``str()`` gives Go's form: ``"127.0.0.1:80"``,
``"[::1]:80"``, ``"[fe80::1%eth0]:80"``, ``":80"``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket as _socket
import sys
from dataclasses import dataclass
from typing import Any

from netpoll.net.errors import AddrError, DNSError, UnknownNetworkError

#: Stream and datagram networks over IP, and the Unix ones.
TCP_NETWORKS = ("tcp", "tcp4", "tcp6")
UDP_NETWORKS = ("udp", "udp4", "udp6")
UNIX_NETWORKS = ("unix", "unixgram", "unixpacket")
ALL_NETWORKS = TCP_NETWORKS + UDP_NETWORKS + UNIX_NETWORKS


def parse_network(network: str) -> str:
    """Validate ``network`` (Go's ``parseNetwork``); returns it or raises.

    Raises :class:`UnknownNetworkError` for anything but tcp/tcp4/tcp6,
    udp/udp4/udp6, unix/unixgram/unixpacket.
    """
    if network not in ALL_NETWORKS:
        raise UnknownNetworkError(network)
    return network


# --------------------------------------------------------------------------
# host:port
# --------------------------------------------------------------------------


def split_host_port(hostport: str) -> tuple[str, str]:
    """Split ``"host:port"`` / ``"[v6]:port"`` into host and port (Go's ``SplitHostPort``).

    Raises :class:`AddrError` naming the problem: missing port, too many
    colons, missing ']' , unexpected '[' or ']'.
    """
    missing_port = "missing port in address"
    too_many_colons = "too many colons in address"
    i = hostport.rfind(":")
    if i < 0:
        raise AddrError(missing_port, hostport)
    j = k = 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise AddrError("missing ']' in address", hostport)
        if end + 1 == len(hostport):
            raise AddrError(missing_port, hostport)
        if end + 1 != i:
            if hostport[end + 1] == ":":
                raise AddrError(too_many_colons, hostport)
            raise AddrError(missing_port, hostport)
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            raise AddrError(too_many_colons, hostport)
    if "[" in hostport[j:]:
        raise AddrError("unexpected '[' in address", hostport)
    if "]" in hostport[k:]:
        raise AddrError("unexpected ']' in address", hostport)
    return host, hostport[i + 1 :]


def join_host_port(host: str, port: int | str) -> str:
    """``host:port``, bracketing a host that contains a colon (Go's ``JoinHostPort``)."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def parse_port(network: str, service: str) -> int:
    """A port from a number or a service name (Go's ``LookupPort``).

    ``""`` is port 0.  Names are looked up with :func:`socket.getservbyname`
    for the network's protocol ("tcp" or "udp").  Raises :class:`AddrError`
    ("invalid port") or :class:`DNSError` ("unknown port").
    """
    if service == "":
        return 0
    if service.isascii() and service.isdigit():
        port = int(service)
        if port > 65535:
            raise AddrError("invalid port", service)
        return port
    if service.startswith(("-", "+")) and service[1:].isdigit():
        raise AddrError("invalid port", service)
    proto = "udp" if network.startswith("udp") else "tcp"
    try:
        return _socket.getservbyname(service, proto)
    except (OSError, UnicodeError):
        raise DNSError("unknown port", f"{proto}/{service}", is_not_found=True) from None


# --------------------------------------------------------------------------
# IPs
# --------------------------------------------------------------------------


def parse_ip(host: str) -> tuple[str, str] | None:
    """``(canonical ip, zone)`` if ``host`` is an IP literal, else None.

    ``"::ffff:1.2.3.4"`` becomes ``"1.2.3.4"`` (Go treats it as IPv4); a zone
    (``"fe80::1%eth0"``) is kept apart.
    """
    text, _, zone = host.partition("%")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped), ""
        return ip.compressed, zone
    if zone:
        return None  # a zone makes sense for IPv6 only
    return str(ip), ""


def ip_family(ip: str) -> int:
    """``AF_INET`` for an IPv4 (or empty) IP text, else ``AF_INET6``."""
    return _socket.AF_INET6 if ":" in ip else _socket.AF_INET


def is_unspecified(ip: str) -> bool:
    """True for ``""``, ``"0.0.0.0"`` and ``"::"`` (Go's ``isWildcard``)."""
    return ip in ("", "0.0.0.0", "::")


def _scope_id(zone: str) -> int:
    if not zone:
        return 0
    if zone.isdigit():
        return int(zone)
    try:
        return _socket.if_nametoindex(zone)
    except OSError:
        return 0


@dataclass(frozen=True)
class _IPPortAddr:
    """An IP (text, ``""`` = wildcard), a port and an IPv6 zone."""

    ip: str = ""
    port: int = 0
    zone: str = ""

    def network(self) -> str:
        """The network name ("tcp" / "udp")."""
        raise NotImplementedError

    def __str__(self) -> str:
        host = self.ip + "%" + self.zone if self.zone else self.ip
        return join_host_port(host, self.port)

    def family(self) -> int:
        """The address family the IP needs (``AF_INET`` for no IP)."""
        return ip_family(self.ip)

    def is_wildcard(self) -> bool:
        """True when the IP is empty or unspecified."""
        return is_unspecified(self.ip)

    def sockaddr(self, family: int) -> tuple[Any, ...]:
        """The socket-module address for a socket of ``family`` (Go's ``ipToSockaddr``).

        An IPv4 address on an ``AF_INET6`` socket is written IPv4-mapped; an
        IPv6 address on an ``AF_INET`` socket raises :class:`AddrError`.
        """
        ip = self.ip
        if family == _socket.AF_INET:
            if ip == "" or ip == "::":
                ip = "0.0.0.0"
            if ":" in ip:
                raise AddrError("non-IPv4 address", ip)
            return (ip, self.port)
        if family == _socket.AF_INET6:
            if ip == "" or (ip == "0.0.0.0"):
                ip = "::"
            elif ":" not in ip:
                ip = "::ffff:" + ip
            return (ip, self.port, 0, _scope_id(self.zone))
        raise AddrError("invalid address family", str(self))

    @classmethod
    def from_sockaddr(cls, sa: Any) -> Any:
        """Build from a socket-module address tuple (Go's ``sockaddrToTCP``)."""
        if len(sa) == 2:
            # AF_INET: the OS already gives the canonical dotted quad, and
            # this runs twice for every accepted connection.
            return cls(sa[0], sa[1])
        host = str(sa[0])
        parsed = parse_ip(host)
        if parsed is None:  # pragma: no cover - the OS always gives literals
            return cls(host, int(sa[1]))
        return cls(parsed[0], int(sa[1]), parsed[1])


@dataclass(frozen=True)
class TCPAddr(_IPPortAddr):
    """A TCP endpoint (Go's ``TCPAddr``): ``TCPAddr("127.0.0.1", 80)``."""

    def network(self) -> str:
        """Always ``"tcp"``."""
        return "tcp"


@dataclass(frozen=True)
class UDPAddr(_IPPortAddr):
    """A UDP endpoint (Go's ``UDPAddr``): ``UDPAddr("::1", 53)``."""

    def network(self) -> str:
        """Always ``"udp"``."""
        return "udp"


_ABSTRACT = sys.platform.startswith("linux")

#: ``sizeof(sockaddr_un.sun_path)``: 108 on Linux, 104 on macOS and the BSDs.
SUN_PATH_MAX = 108 if sys.platform.startswith("linux") else 104


@dataclass(frozen=True)
class UnixAddr:
    """A Unix socket path (Go's ``UnixAddr``); ``net`` is unix/unixgram/unixpacket.

    On Linux a name starting with ``@`` is in the abstract namespace, as in Go.
    An unnamed socket has the name ``""``.
    """

    name: str = ""
    net: str = "unix"

    def network(self) -> str:
        """The Unix network: "unix", "unixgram" or "unixpacket"."""
        return self.net

    def __str__(self) -> str:
        return self.name

    def is_abstract(self) -> bool:
        """True for a Linux abstract-namespace name (``@...``)."""
        return _ABSTRACT and self.name.startswith("@")

    def sockaddr(self, family: int = _socket.AF_UNIX) -> Any:
        """The socket-module address: the path, or ``b"\\0..."`` when abstract.

        Raises :class:`OSError` ``EINVAL`` naming the limit when the name does
        not fit in ``sun_path`` (Go: "invalid argument"); the caller tags it
        with the system call and wraps it in an OpError naming the path.
        """
        if self.is_abstract():
            sa: Any = b"\0" + self.name[1:].encode()
            size, limit = len(sa), SUN_PATH_MAX
        else:
            sa = self.name
            # A path needs its terminating NUL in sun_path; an abstract name not.
            size, limit = len(os.fsencode(sa)), SUN_PATH_MAX - 1
        if size > limit:
            raise OSError(
                errno.EINVAL,
                f"invalid argument (unix socket name is {size} bytes, "
                f"longer than the {limit} this OS allows)",
            )
        return sa

    @classmethod
    def from_sockaddr(cls, sa: Any, net: str = "unix") -> UnixAddr:
        """Build from what getsockname/accept/recvfrom return."""
        if isinstance(sa, bytes):
            if sa.startswith(b"\0"):
                return cls("@" + sa[1:].decode(errors="surrogateescape"), net)
            sa = sa.decode(errors="surrogateescape")
        if sa is None:
            sa = ""
        return cls(str(sa), net)


#: Any address the package hands out.
Addr = TCPAddr | UDPAddr | UnixAddr


def resolve_unix_addr(network: str, address: str) -> UnixAddr:
    """A :class:`UnixAddr` for ``address`` (Go's ``ResolveUnixAddr``)."""
    if network not in UNIX_NETWORKS:
        raise UnknownNetworkError(network)
    return UnixAddr(address, network)


def sockaddr_to_addr(network: str, sa: Any) -> Addr:
    """The package's address for a socket-module address on ``network``."""
    if network in UNIX_NETWORKS:
        return UnixAddr.from_sockaddr(sa, network)
    if network in UDP_NETWORKS:
        return UDPAddr.from_sockaddr(sa)  # type: ignore[no-any-return]
    return TCPAddr.from_sockaddr(sa)  # type: ignore[no-any-return]


__all__ = [
    "ALL_NETWORKS",
    "SUN_PATH_MAX",
    "TCP_NETWORKS",
    "UDP_NETWORKS",
    "UNIX_NETWORKS",
    "Addr",
    "TCPAddr",
    "UDPAddr",
    "UnixAddr",
    "ip_family",
    "is_unspecified",
    "join_host_port",
    "parse_ip",
    "parse_network",
    "parse_port",
    "resolve_unix_addr",
    "sockaddr_to_addr",
    "split_host_port",
]
