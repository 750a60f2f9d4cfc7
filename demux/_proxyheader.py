"""
The PROXY protocol (v1 and v2), both ways: recognising and parsing the header
an upstream load balancer puts in front of a connection, and making the
header demux puts in front of a connection it relays.

Parsing a complete header is left to C{twisted.protocols.haproxy}'s parsers;
what is here is what they lack: knowing, from a prefix, whether a header is
complete, incomplete or impossible, so that a header split across reads (even
one byte at a time) is never mistaken for garbage.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

V1_PREFIX = b"PROXY "
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# A v2 header's length field allows 65,535 bytes of addresses and TLVs.
V2_MAX = 16 + 0xFFFF


def headerLength(data: bytes) -> int | None:
    """
    How long the PROXY header at the start of C{data} is.

    @return: the header's whole length as soon as C{data} says it (the
        header is complete once C{len(data)} reaches it), L{None} while
        C{data} could still be the start of a header that does not say yet.
    @raise InvalidProxyHeader: if C{data} cannot start a PROXY header.
    """
    if data[:1] == b"P":
        if not V1_PREFIX.startswith(data[:6]):
            raise InvalidProxyHeader()
        end = data.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        if len(data) >= V1_MAX:
            raise InvalidProxyHeader()
        return None
    if not V2_SIGNATURE.startswith(data[:12]):
        raise InvalidProxyHeader()
    if len(data) < 16:
        return None
    if data[12] >> 4 != 2:
        raise InvalidProxyHeader()
    return 16 + int(struct.unpack("!H", data[14:16])[0])


def parseHeader(header: bytes) -> ProxyInfo:
    """
    Parse a complete header with Twisted's parsers.

    @raise InvalidProxyHeader: if it is malformed.
    """
    if header.startswith(V1_PREFIX):
        return V1Parser.parse(header[:-2])
    return V2Parser.parse(header)


def _ipAndPort(address: IAddress) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    if isinstance(address, IPv4Address | IPv6Address):
        host = address.host.split("%", 1)[0]
        try:
            return ipaddress.ip_address(host), address.port
        except ValueError:
            return None
    return None


def makeHeader(version: int, source: IAddress, destination: IAddress) -> bytes:
    """
    The PROXY header (v1 or v2) that tells a backend a connection came from
    C{source} to C{destination}; a connection that is not over IP is sent
    as C{UNKNOWN} (v1) or C{LOCAL} (v2).
    """
    src = _ipAndPort(source)
    dst = _ipAndPort(destination)
    if src is not None and dst is not None and src[0].version != dst[0].version:
        # An IPv4 client reached over an IPv6 socket shows as v4-mapped; make
        # both sides one family, as HAProxy does.
        if isinstance(src[0], ipaddress.IPv6Address) and src[0].ipv4_mapped:
            src = (src[0].ipv4_mapped, src[1])
        if isinstance(dst[0], ipaddress.IPv6Address) and dst[0].ipv4_mapped:
            dst = (dst[0].ipv4_mapped, dst[1])
    known = src is not None and dst is not None and src[0].version == dst[0].version
    if version == 1:
        if not known:
            return b"PROXY UNKNOWN\r\n"
        assert src is not None and dst is not None
        family = "TCP4" if src[0].version == 4 else "TCP6"
        return f"PROXY {family} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()
    if not known:
        # Version 2, command LOCAL, family UNSPEC, no addresses.
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert src is not None and dst is not None
    if src[0].version == 4:
        familyByte = b"\x11"
        addresses = (
            socket.inet_pton(socket.AF_INET, str(src[0]))
            + socket.inet_pton(socket.AF_INET, str(dst[0]))
        )
    else:
        familyByte = b"\x21"
        addresses = (
            socket.inet_pton(socket.AF_INET6, str(src[0]))
            + socket.inet_pton(socket.AF_INET6, str(dst[0]))
        )
    body = addresses + struct.pack("!HH", src[1], dst[1])
    return V2_SIGNATURE + b"\x21" + familyByte + struct.pack("!H", len(body)) + body
