"""
The C{proxy_protocol} matcher: a PROXY protocol header (version 1 or 2) in
front of a connection, as HAProxy's C{send-proxy} and C{send-proxy-v2},
AWS load balancers and others send it.

A route with this matcher hands the connection, header included, to a
backend that reads the header itself (another demux, HAProxy, nginx with
C{proxy_protocol}), so that proxies can be chained.  demux does not strip
the header or use the address in it.

  - Version 1 is one line of text, at most L{V1_MAX} bytes with its CR LF:
    C{PROXY TCP4 src dst sport dport}, the same with C{TCP6}, or
    C{PROXY UNKNOWN} followed by anything.  The matcher reads the whole line
    and checks the addresses and ports.
  - Version 2 is binary: a 12-byte signature, a version (2) and command
    (LOCAL or PROXY) byte, an address family and transport byte, and a
    2-byte length of the addresses and TLVs that follow.  The matcher
    decides on those 16 bytes; a PROXY command's length must be long
    enough for its family's addresses.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from zope.interface import implementer, provider

from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from .._proxyheader import (
    V1_MAX,
    V1_PREFIX,
    V2_COMMANDS,
    V2_FAMILIES,
    V2_FIXED,
    V2_SIGNATURE,
    V2_TRANSPORTS,
    InvalidProxyHeader,
    parseV1Line,
    parseV2Start,
    v2Addresses,
)
from ._options import intList, optionTable

V2_HEADER = V2_FIXED

VERSIONS = (1, 2)


@frozen
class ProxyHeader:
    """
    A PROXY protocol header, as far as the matcher read it.

    @ivar version: 1 or 2.
    @ivar kind: for version 1, C{"TCP4"}, C{"TCP6"} or C{"UNKNOWN"}; for
        version 2, the command, family and transport, such as
        C{"proxy inet stream"}.
    @ivar source: the source address and port as C{host:port} (C{[host]:port}
        for IPv6), when the header gives one.
    """

    version: int
    kind: str
    source: str | None


def _shown(address: IAddress | None) -> str | None:
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    return None


def _parseV1(data: bytes) -> ProxyHeader | Verdict:
    end = data.find(b"\r", 0, V1_MAX - 1)
    line = data[: V1_MAX - 1] if end == -1 else data[:end]
    if any(not 0x20 <= b <= 0x7E for b in line):
        return NO_MATCH
    if end == -1:
        return NEED_MORE if len(line) < V1_MAX - 1 else NO_MATCH
    if len(data) <= end + 1:
        return NEED_MORE
    if data[end + 1] != 0x0A:
        return NO_MATCH
    try:
        info = parseV1Line(line)
    except InvalidProxyHeader:
        return NO_MATCH
    if info.source is None:
        return ProxyHeader(1, "UNKNOWN", None)
    kind = "TCP6" if isinstance(info.source, IPv6Address) else "TCP4"
    return ProxyHeader(1, kind, _shown(info.source))


def _parseV2(data: bytes) -> ProxyHeader | Verdict:
    if len(data) < V2_HEADER:
        # Each byte of the fixed part is judged as soon as it is in.
        if len(data) > 12 and (data[12] >> 4 != 2 or data[12] & 0x0F not in V2_COMMANDS):
            return NO_MATCH
        if len(data) > 13 and (
            data[13] >> 4 not in V2_FAMILIES or data[13] & 0x0F not in V2_TRANSPORTS
        ):
            return NO_MATCH
        return NEED_MORE
    try:
        command, family, transport, length = parseV2Start(data)
    except InvalidProxyHeader:
        return NO_MATCH
    source = None
    if command == "proxy":
        addresses = v2Addresses(family, transport, data[V2_HEADER : V2_HEADER + length])
        if addresses is not None:
            source = _shown(addresses[0])
    return ProxyHeader(2, f"{command} {family} {transport}", source)


def parseProxyHeader(data: bytes) -> ProxyHeader | Verdict:
    """
    The PROXY protocol header at the start of C{data}, read with demux's one
    PROXY codec (C{demux._proxyheader}).

    @return: a L{ProxyHeader} once its line (version 1) or its first 16 bytes
        (version 2) are in and valid; L{NEED_MORE} before; L{NO_MATCH} as
        soon as a byte does not fit.
    """
    if V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
        return NEED_MORE if len(data) < len(V1_PREFIX) else _parseV1(data)
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
        if len(data) < len(V2_SIGNATURE):
            return NEED_MORE
        return _parseV2(data)
    return NO_MATCH


@implementer(IMatcher)
@frozen
class ProxyProtocolMatcher:
    """
    Matches a connection that starts with a PROXY protocol header of one of
    C{versions}.

    @ivar versions: 1 and/or 2.
    """

    versions: tuple[int, ...] = VERSIONS

    def match(self, peek: Peek) -> Verdict:
        found = peek.parse(parseProxyHeader)
        if not isinstance(found, ProxyHeader):
            return found
        return MATCH if found.version in self.versions else NO_MATCH

    def describe(self, peek: Peek) -> str:
        found = peek.parse(parseProxyHeader)
        if not isinstance(found, ProxyHeader):
            return "proxy_protocol"
        text = f"proxy_protocol={found.version} kind={found.kind.replace(' ', ',')}"
        if found.source is not None:
            text += f" source={found.source}"
        return text


@provider(IMatcherFactory)
class proxyProtocolFactory:
    """
    C{match.proxy_protocol = {}} for a PROXY protocol header of either
    version, or C{{versions = [2]}} for one version only.
    """

    name = "proxy_protocol"
    summary = "Matches a PROXY protocol v1 or v2 header, to pass it on to a backend."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("versions",))
        if "versions" not in table:
            return ProxyProtocolMatcher()
        return ProxyProtocolMatcher(intList(table["versions"], "versions", VERSIONS))
