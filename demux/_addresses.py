"""
Addresses, as demux reads and writes them: one copy of each helper that
the protocol, the targets, the PROXY codec, the log and the status page
share, so that none of them imports another for it.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
"""
An IP address, of either version.
"""


def peerText(peer: IAddress | None) -> str:
    """
    C{peer} as a log line writes it: C{host:port}, with an IPv6 host in
    brackets; any other address as Twisted prints it.
    """
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer)


def ipOf(address: IAddress | None) -> IPAddress | None:
    """
    The IP address of C{address} (an IPv6 scope, C{%eth0}, left out), or
    L{None} for an address with no IP (a UNIX socket).
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def ipAndPort(address: IAddress | None) -> tuple[IPAddress, int] | None:
    """
    The IP address and port of a TCP address, or L{None} for any other.
    """
    if isinstance(address, IPv4Address | IPv6Address):
        ip = ipOf(address)
        if ip is not None:
            return ip, address.port
    return None
