"""
Telling others who the client is: the PROXY header a backend is sent, and
the transport an in-process protocol sees.

Both read the one L{ConnectionInfo} the demux protocol made, so that behind
a C{haproxy:} listener the client is the one the incoming PROXY header
names, for a backend and an in-process protocol alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from twisted.internet.interfaces import IAddress
from zope.interface import directlyProvides, providedBy

from ._proxyheader import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_DEMUX_ROUTE,
    PP2_TYPE_NOOP,
    TLV,
    makeHeader,
)

if TYPE_CHECKING:
    from ._interfaces import ConnectionInfo

PASS: Literal["pass"] = "pass"
"""
C{send_proxy = "pass"}: forward the PROXY header the connection came with.
"""

SendProxy = int | Literal["pass"]

# What demux computes itself, and what cannot survive re-encoding (a
# checksum of the old header, padding): never carried over from the
# incoming header.
_NOT_CARRIED = frozenset(
    {PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_NOOP, PP2_TYPE_DEMUX_ROUTE}
)


def demuxTLVs(connection: ConnectionInfo) -> list[TLV]:
    """
    The PROXY v2 TLVs demux sends for C{connection}: the first ALPN protocol
    the client offered (C{PP2_TYPE_ALPN}), the name it asked for, its SNI or
    else its HTTP host (C{PP2_TYPE_AUTHORITY}), and the route's name
    (L{PP2_TYPE_DEMUX_ROUTE}); behind a C{haproxy:} listener, the incoming
    header's other TLVs follow the first two, and its ALPN and authority
    stand in for those demux did not learn.
    """
    received = connection.proxyHeader
    alpn = connection.alpn
    alpnValue = alpn[0].encode("latin-1") if alpn else None
    authority = connection.authority
    authorityValue = authority.encode("utf-8") if authority else None
    if received is not None:
        if alpnValue is None:
            alpnValue = received.tlv(PP2_TYPE_ALPN)
        if authorityValue is None:
            authorityValue = received.tlv(PP2_TYPE_AUTHORITY)
    tlvs: list[TLV] = []
    if alpnValue:
        tlvs.append((PP2_TYPE_ALPN, alpnValue))
    if authorityValue:
        tlvs.append((PP2_TYPE_AUTHORITY, authorityValue))
    route = (PP2_TYPE_DEMUX_ROUTE, connection.route.encode("utf-8"))
    if received is not None:
        # Addresses (at most 216 bytes) and the route's name must fit too;
        # what does not is left out, not the whole header.
        room = 0xFFFF - 216 - 3 - len(route[1]) - sum(3 + len(v) for _, v in tlvs)
        for kind, value in received.tlvs:
            if kind in _NOT_CARRIED or 3 + len(value) > room:
                continue
            tlvs.append((kind, value))
            room -= 3 + len(value)
    tlvs.append(route)
    return tlvs


def proxyHeaderFor(mode: SendProxy, connection: ConnectionInfo) -> bytes:
    """
    The PROXY header to send a backend before anything else, by the route's
    C{send_proxy}: a new one of version C{mode} (version 2 with
    L{demuxTLVs}), or with L{PASS} the incoming one exactly as received, or
    nothing when there was none.
    """
    if mode == PASS:
        received = connection.proxyHeader
        return received.header if received is not None else b""
    host = connection.host or connection.peer
    if mode == 1:
        return makeHeader(1, connection.peer, host)
    return makeHeader(2, connection.peer, host, demuxTLVs(connection))


class ClientAddressTransport:
    """
    A transport that is another one in everything but its addresses:
    C{getPeer()} and C{getHost()} say what the PROXY header said, so that an
    in-process protocol behind a C{haproxy:} listener sees the client, not
    the load balancer, as Twisted's own C{HAProxyProtocolWrapper} does.

    Everything else (writing, producers, half-close, closing) is the wrapped
    transport's own, looked up on it, and the wrapper provides the same
    interfaces.
    """

    def __init__(self, transport: Any, peer: IAddress, host: IAddress) -> None:
        self.wrappedTransport = transport
        self._peer = peer
        self._host = host
        directlyProvides(self, providedBy(transport))

    def getPeer(self) -> IAddress:
        return self._peer

    def getHost(self) -> IAddress:
        return self._host

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrappedTransport, name)


def clientTransport(transport: Any, connection: ConnectionInfo) -> Any:
    """
    The transport to give an in-process protocol: C{transport} itself,
    unless a PROXY header named other addresses than the socket's.
    """
    if connection.proxyHeader is None:
        return transport
    host = connection.host if connection.host is not None else transport.getHost()
    return ClientAddressTransport(transport, connection.peer, host)
