"""
The C{stun} matcher: a STUN request (RFC 8489, and RFC 5389 before it), as
ICE agents, WebRTC peers and TURN clients send first.

A STUN message is a 20-byte header (two zero bits, a 14-bit message type,
a 16-bit length of what follows, the magic cookie C{0x2112A442} and a 96-bit
transaction id) and then attributes, each a 16-bit type, a 16-bit length
and a value padded to four bytes.  The matcher checks all of it, and the
FINGERPRINT attribute's CRC-32 when the client sent one, so a datagram that
merely starts with the cookie's bytes does not pass.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Final

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._interfaces import (
    DATAGRAM_ONLY,
    MATCH,
    NEED_MORE,
    NO_MATCH,
    IMatcher,
    IMatcherFactory,
    Verdict,
)
from .._peek import DatagramPeek, Peek
from ._options import optionTable, stringList

MAGIC_COOKIE: Final = 0x2112A442
_FINGERPRINT: Final = 0x8028
_FINGERPRINT_XOR: Final = 0x5354554E

METHODS: Final = {
    "binding": 0x001,
    "allocate": 0x003,
    "refresh": 0x004,
    "createpermission": 0x008,
    "channelbind": 0x009,
}
"""The STUN and TURN request methods the C{methods} option can name."""

#: The names by number, for describe(), made once.
_METHOD_NAMES: Final = {number: name for name, number in METHODS.items()}


@frozen
class STUNRequest:
    """
    A well-formed STUN request.

    @ivar method: its method (1 for Binding).
    @ivar transactionId: its 12-byte transaction id.
    @ivar attributes: the attribute types, in order.
    @ivar fingerprinted: whether a correct FINGERPRINT ended it.
    """

    method: int
    transactionId: bytes
    attributes: tuple[int, ...]
    fingerprinted: bool


def parseRequest(datagram: bytes) -> STUNRequest | Verdict:
    """
    The STUN request that C{datagram} is, or L{NO_MATCH}: not STUN, not a
    request (an indication, a response), a length that does not fit the
    datagram, attributes that do not fill it exactly, or a FINGERPRINT
    that is not last or whose CRC-32 is wrong.
    """
    if len(datagram) < 20:
        return NO_MATCH
    messageType = int.from_bytes(datagram[0:2], "big")
    length = int.from_bytes(datagram[2:4], "big")
    if (
        messageType & 0xC000
        or length % 4
        or length != len(datagram) - 20
        or int.from_bytes(datagram[4:8], "big") != MAGIC_COOKIE
        or messageType & 0x0110  # the class bits: 00 is a request
    ):
        return NO_MATCH
    method = ((messageType & 0x3E00) >> 2) | ((messageType & 0x00E0) >> 1) | (
        messageType & 0x000F
    )
    attributes = []
    fingerprinted = False
    pos = 20
    while pos < len(datagram):
        if fingerprinted or pos + 4 > len(datagram):
            return NO_MATCH
        attributeType = int.from_bytes(datagram[pos : pos + 2], "big")
        attributeLength = int.from_bytes(datagram[pos + 2 : pos + 4], "big")
        valueAt = pos + 4
        pos = valueAt + (attributeLength + 3) // 4 * 4
        if pos > len(datagram):
            return NO_MATCH
        if attributeType == _FINGERPRINT:
            expected = zlib.crc32(datagram[: valueAt - 4]) ^ _FINGERPRINT_XOR
            if (
                attributeLength != 4
                or int.from_bytes(datagram[valueAt : valueAt + 4], "big") != expected
            ):
                return NO_MATCH
            fingerprinted = True
        attributes.append(attributeType)
    return STUNRequest(method, datagram[8:20], tuple(attributes), fingerprinted)


@implementer(IMatcher)
@frozen
class STUNMatcher:
    """
    Matches a flow whose first datagram is a STUN request of one of
    C{methods}.

    @ivar methods: the accepted methods.
    """

    methods: frozenset[int] = frozenset({METHODS["binding"]})

    def match(self, peek: Peek) -> Verdict:
        if not isinstance(peek, DatagramPeek):
            return NO_MATCH
        if not peek.datagrams:
            return NEED_MORE
        request = peek.parse(parseRequest)
        if isinstance(request, STUNRequest) and request.method in self.methods:
            return MATCH
        return NO_MATCH

    def describe(self, peek: Peek) -> str:
        request = peek.parse(parseRequest)
        if not isinstance(request, STUNRequest):
            return "stun"
        return f"stun={_METHOD_NAMES.get(request.method, hex(request.method))}"


@provider(IMatcherFactory)
class stunFactory:
    """
    C{match.stun = {}} for a STUN Binding request, or C{{methods =
    ["binding", "allocate"]}} for TURN clients too.
    """

    name = "stun"
    transports = DATAGRAM_ONLY
    summary = "Matches a STUN request (a Binding request unless methods say more)."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("methods",))
        if "methods" not in table:
            return STUNMatcher()
        methods = set()
        for name in stringList(table["methods"], "stun.methods"):
            if name.lower() not in METHODS:
                known = ", ".join(METHODS)
                raise MatcherConfigError(
                    f"stun.methods {name!r} is not a STUN request method "
                    f"(known: {known})"
                )
            methods.add(METHODS[name.lower()])
        return STUNMatcher(frozenset(methods))
