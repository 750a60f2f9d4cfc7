"""
The PROXY protocol (v1 and v2, with v2's TLVs), both ways: the one codec
that the C{haproxy:} listener, the C{proxy_protocol} matcher and
C{send_proxy} share.

Reading is in two steps, so that a header split across reads (even one byte
at a time) is never mistaken for garbage: L{headerLength} tells from a
prefix whether a header is complete, incomplete or impossible, and
L{parseHeader} decodes a complete one.  The matcher, which decides on the
first bytes only, uses the same pieces (L{parseV1Line}, L{parseV2Start},
L{v2Addresses}).  L{makeHeader} writes one.

The specification is HAProxy's C{doc/proxy-protocol.txt}.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from typing import Literal

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

from ._addresses import ipAndPort
from ._errors import DemuxError

V1_PREFIX = b"PROXY "
V1_MAX = 107
"""
The longest version 1 header, its CR LF included.
"""
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
"""
The length of a version 2 header's fixed part: signature, version and
command, family and transport, length.
"""
# A v2 header's length field allows 65,535 bytes of addresses and TLVs.
V2_MAX = V2_FIXED + 0xFFFF

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_DEMUX_ROUTE = 0xE0
"""
demux's own TLV, in the range the specification leaves to applications: the
name of the route the connection took, UTF-8.
"""

V2_COMMANDS = {0: "local", 1: "proxy"}
V2_FAMILIES = {0: "unspec", 1: "inet", 2: "inet6", 3: "unix"}
V2_TRANSPORTS = {0: "unspec", 1: "stream", 2: "dgram"}
V2_ADDRESS_LENGTHS = {0: 0, 1: 12, 2: 36, 3: 216}
V2_FAMILIES_BY_NAME = {name: number for number, name in V2_FAMILIES.items()}

TLV = tuple[int, bytes]


class InvalidProxyHeader(DemuxError):
    """
    Bytes that are not, and cannot become, a valid PROXY protocol header.
    """


@frozen
class ProxyInfo:
    """
    A decoded PROXY protocol header.

    @ivar header: the header exactly as received, for passing it on.
    @ivar version: 1 or 2.
    @ivar source: the client's address, or L{None} when the header does not
        give one (v1 C{UNKNOWN}, v2 C{LOCAL} or family C{UNSPEC}): then the
        connection's own addresses stand.
    @ivar destination: the address the client connected to, likewise.
    @ivar tlvs: version 2's type-length-value fields, C{(type, value)} in
        the order received; C{()} for version 1.
    """

    header: bytes
    version: int
    source: IAddress | None
    destination: IAddress | None
    tlvs: tuple[TLV, ...] = ()

    def tlv(self, kind: int) -> bytes | None:
        """
        The value of the first TLV of type C{kind}, if any.
        """
        for t, value in self.tlvs:
            if t == kind:
                return value
        return None


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
    if len(data) < V2_FIXED:
        return None
    if data[12] >> 4 != 2:
        raise InvalidProxyHeader()
    return V2_FIXED + int(struct.unpack("!H", data[14:16])[0])


def _port(text: bytes) -> int:
    if not (text.isdigit() and len(text) <= 5 and int(text) <= 0xFFFF):
        raise InvalidProxyHeader(f"bad port {text!r}")
    return int(text)


def parseV1Line(line: bytes) -> ProxyInfo:
    """
    Decode a version 1 header's line, without its CR LF:
    C{PROXY TCP4 src dst sport dport}, the same with C{TCP6}, or
    C{PROXY UNKNOWN} followed by anything.

    @raise InvalidProxyHeader: if it is malformed.
    """
    if not line.startswith(V1_PREFIX) or any(not 0x20 <= b <= 0x7E for b in line):
        raise InvalidProxyHeader("not a PROXY v1 line")
    fields = line.split(b" ")
    header = line + b"\r\n"
    if fields[1] == b"UNKNOWN":
        return ProxyInfo(header, 1, None, None)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise InvalidProxyHeader("not a PROXY v1 line")
    _, proto, source, destination, sourcePort, destinationPort = fields
    kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]
    address: type[IPv4Address | IPv6Address]
    if proto == b"TCP4":
        kind, address = ipaddress.IPv4Address, IPv4Address
    else:
        kind, address = ipaddress.IPv6Address, IPv6Address
    try:
        src = kind(source.decode("ascii"))
        dst = kind(destination.decode("ascii"))
    except ValueError:
        raise InvalidProxyHeader("bad address") from None
    return ProxyInfo(
        header,
        1,
        address("TCP", str(src), _port(sourcePort)),
        address("TCP", str(dst), _port(destinationPort)),
    )


def parseV2Start(data: bytes) -> tuple[str, str, str, int]:
    """
    Decode a version 2 header's fixed part, the first L{V2_FIXED} bytes of
    C{data}.

    @return: the command (C{"local"}, C{"proxy"}), family (C{"unspec"},
        C{"inet"}, C{"inet6"}, C{"unix"}), transport (C{"unspec"},
        C{"stream"}, C{"dgram"}) and the length of what follows.
    @raise InvalidProxyHeader: if it is malformed, or a C{PROXY} command's
        length cannot hold its family's addresses.
    """
    if len(data) < V2_FIXED or not data.startswith(V2_SIGNATURE):
        raise InvalidProxyHeader("not a PROXY v2 header")
    versionCommand, familyTransport = data[12], data[13]
    length = int.from_bytes(data[14:16], "big")
    command = V2_COMMANDS.get(versionCommand & 0x0F)
    family = V2_FAMILIES.get(familyTransport >> 4)
    transport = V2_TRANSPORTS.get(familyTransport & 0x0F)
    if versionCommand >> 4 != 2 or command is None or family is None or transport is None:
        raise InvalidProxyHeader("bad PROXY v2 version, command or family")
    if command == "proxy" and length < V2_ADDRESS_LENGTHS[familyTransport >> 4]:
        raise InvalidProxyHeader("PROXY v2 addresses cut short")
    return command, family, transport, length


def v2Addresses(
    family: str, transport: str, block: bytes
) -> tuple[IAddress, IAddress] | None:
    """
    The source and destination of a version 2 address block, when C{block}
    holds them all and the family has addresses.
    """
    kind: Literal["TCP", "UDP"] = "UDP" if transport == "dgram" else "TCP"
    if family == "inet" and len(block) >= 12:
        src, dst = ipaddress.IPv4Address(block[:4]), ipaddress.IPv4Address(block[4:8])
        sport, dport = struct.unpack("!HH", block[8:12])
        return IPv4Address(kind, str(src), sport), IPv4Address(kind, str(dst), dport)
    if family == "inet6" and len(block) >= 36:
        src6 = ipaddress.IPv6Address(block[:16])
        dst6 = ipaddress.IPv6Address(block[16:32])
        sport, dport = struct.unpack("!HH", block[32:36])
        return IPv6Address(kind, str(src6), sport), IPv6Address(kind, str(dst6), dport)
    if family == "unix" and len(block) >= 216:
        return (
            UNIXAddress(block[:108].rstrip(b"\x00") or None),
            UNIXAddress(block[108:216].rstrip(b"\x00") or None),
        )
    return None


def parseTLVs(data: bytes) -> tuple[TLV, ...]:
    """
    Split the TLV part of a version 2 header.

    @raise InvalidProxyHeader: if a TLV goes past the end.
    """
    tlvs = []
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            raise InvalidProxyHeader("PROXY v2 TLV cut short")
        kind = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        end = pos + 3 + length
        if end > len(data):
            raise InvalidProxyHeader("PROXY v2 TLV cut short")
        tlvs.append((kind, data[pos + 3 : end]))
        pos = end
    return tuple(tlvs)


def parseHeader(header: bytes) -> ProxyInfo:
    """
    Decode a complete header, as long as L{headerLength} said.

    A version 2 C{LOCAL} header (a health check from the load balancer
    itself) gives no addresses, as the specification requires, but its TLVs
    are decoded.

    @raise InvalidProxyHeader: if it is malformed.
    """
    if header.startswith(V1_PREFIX):
        if not header.endswith(b"\r\n") or len(header) > V1_MAX:
            raise InvalidProxyHeader("PROXY v1 line without its end")
        return parseV1Line(header[:-2])
    command, family, transport, length = parseV2Start(header)
    body = header[V2_FIXED:]
    if len(body) != length:
        raise InvalidProxyHeader("PROXY v2 length does not match")
    addressLength = V2_ADDRESS_LENGTHS[V2_FAMILIES_BY_NAME[family]]
    if len(body) < addressLength:
        # Only a LOCAL header gets here: parseV2Start refuses a PROXY one.
        return ProxyInfo(header, 2, None, None)
    if command == "local":
        # The specification says to discard a LOCAL header's block: what
        # reads as TLVs is kept, anything else is not a reason to refuse.
        try:
            tlvs = parseTLVs(body[addressLength:])
        except InvalidProxyHeader:
            tlvs = ()
        return ProxyInfo(header, 2, None, None, tlvs)
    tlvs = parseTLVs(body[addressLength:])
    addresses = v2Addresses(family, transport, body)
    if addresses is None:
        return ProxyInfo(header, 2, None, None, tlvs)
    return ProxyInfo(header, 2, addresses[0], addresses[1], tlvs)


def encodeTLVs(tlvs: Iterable[TLV]) -> bytes:
    """
    The TLV part of a version 2 header.

    @raise ValueError: if a value is longer than 65,535 bytes.
    """
    out = []
    for kind, value in tlvs:
        if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
            raise ValueError(f"TLV {kind:#x} of {len(value)} bytes cannot be sent")
        out.append(struct.pack("!BH", kind, len(value)) + value)
    return b"".join(out)


def makeHeader(
    version: int,
    source: IAddress | None,
    destination: IAddress | None,
    tlvs: Iterable[TLV] = (),
    datagram: bool = False,
) -> bytes:
    """
    The PROXY header (v1 or v2) that tells a backend a connection came from
    C{source} to C{destination}; a connection that is not over IP is sent
    as C{UNKNOWN} (v1) or C{LOCAL} (v2).

    @param tlvs: for version 2, the TLVs to send after the addresses, in
        order; version 1 has no room for them.
    @param datagram: for version 2, a UDP flow's header: transport DGRAM
        instead of STREAM.
    @raise ValueError: if the TLVs do not fit in a header.
    """
    src = ipAndPort(source)
    dst = ipAndPort(destination)
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
    extra = encodeTLVs(tlvs)
    if not known:
        # Version 2, command LOCAL, family UNSPEC, no addresses.
        commandFamily = b"\x20\x00"
        body = extra
    else:
        assert src is not None and dst is not None
        if src[0].version == 4:
            commandFamily = b"\x21\x12" if datagram else b"\x21\x11"
            af = socket.AF_INET
        else:
            commandFamily = b"\x21\x22" if datagram else b"\x21\x21"
            af = socket.AF_INET6
        body = (
            socket.inet_pton(af, str(src[0]))
            + socket.inet_pton(af, str(dst[0]))
            + struct.pack("!HH", src[1], dst[1])
            + extra
        )
    if len(body) > 0xFFFF:
        raise ValueError(f"a PROXY v2 header cannot hold {len(body)} bytes")
    return V2_SIGNATURE + commandFamily + struct.pack("!H", len(body)) + body
