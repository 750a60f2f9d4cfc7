"""
The C{rdp} matcher: an RDP client's X.224 Connection Request, in its TPKT
header ([MS-RDPBCGR] section 2.2.1.1).

Every RDP connection that does not start with TLS directly opens with::

    03 00 LL LL            TPKT: version 3, reserved, length (big-endian)
    LI E0 00 00 SS SS 00   X.224 CR TPDU: length indicator, CR code and
                           credit, destination reference 0, source reference,
                           class 0
    Cookie: mstshash=IDENTIFIER\\r\\n   optional (or a routing token)
    01 FL 08 00 PP PP PP PP             optional RDP_NEG_REQ

These eleven fixed bytes decide the matcher without a C{cookie} option; with
one, the whole request is needed, which the one-byte length indicator keeps
to at most L{MAX_REQUEST} bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import optionTable, stringList

FIXED = 11
"""
The bytes of the TPKT header and the fixed part of the CR TPDU.
"""

MAX_REQUEST = 4 + 255
"""
The longest Connection Request: the TPKT header and a TPDU whose length
indicator (one byte, counting the TPDU's bytes after itself) is at most 254.
"""

_TPKT = b"\x03\x00"
_COOKIE_LINE = re.compile(rb"Cookie: mstshash=([\x21-\x7e]*)\r\n")
_TOKEN_LINE = re.compile(rb"Cookie: [\x20-\x7e]*\r\n")
_IDENTIFIER = re.compile(r"[\x21-\x7e]+")
_NEG_REQ = 0x01
_CORRELATION_INFO = 0x06


def _fixedVerdict(data: bytes) -> Verdict:
    """
    L{NO_MATCH} as soon as the first L{FIXED} bytes of C{data} show that it
    is not a TPKT-wrapped X.224 Connection Request, L{MATCH} once all of them
    are in and fit, else L{NEED_MORE}.
    """
    if not _TPKT.startswith(data[:2]):
        return NO_MATCH
    if len(data) < 4:
        return NEED_MORE
    length = int.from_bytes(data[2:4], "big")
    if not FIXED <= length <= MAX_REQUEST:
        return NO_MATCH
    expected = [
        (4, 0xFF, length - 5),  # the length indicator: the TPDU after it
        (5, 0xF0, 0xE0),  # CR, with any credit
        (6, 0xFF, 0),  # destination reference: 0 in a CR
        (7, 0xFF, 0),
        (10, 0xF0, 0),  # class 0
    ]
    for offset, mask, value in expected:
        if offset < len(data) and data[offset] & mask != value:
            return NO_MATCH
    return MATCH if len(data) >= FIXED else NEED_MORE


@frozen
class ConnectionRequest:
    """
    A parsed X.224 Connection Request.

    @ivar cookie: the C{IDENTIFIER} of a C{Cookie: mstshash=IDENTIFIER} line
        (a user name, as C{mstsc} and FreeRDP send it), or L{None}.
    @ivar requestedProtocols: the security protocols of the RDP
        Negotiation Request (C{PROTOCOL_SSL} 1, C{PROTOCOL_HYBRID} 2...), or
        L{None} for a client that sends none (standard RDP security).
    """

    cookie: str | None
    requestedProtocols: int | None


def parseConnectionRequest(data: bytes) -> ConnectionRequest | Verdict:
    """
    The Connection Request at the start of C{data}.

    @return: a L{ConnectionRequest} once the whole TPKT packet is in;
        L{NEED_MORE} before; L{NO_MATCH} if it is not one, or its variable
        part is not an optional cookie or routing-token line followed by an
        optional negotiation request (and correlation info).
    """
    fixed = _fixedVerdict(data)
    if fixed is not MATCH:
        return fixed
    length = int.from_bytes(data[2:4], "big")
    if len(data) < length:
        return NEED_MORE
    rest = data[FIXED:length]
    cookie = None
    line = _COOKIE_LINE.match(rest) or _TOKEN_LINE.match(rest)
    if line is not None:
        if line.re is _COOKIE_LINE:
            cookie = line.group(1).decode("ascii")
        rest = rest[line.end() :]
    elif rest.startswith(b"Cookie: "):
        return NO_MATCH
    requested = None
    if rest:
        if len(rest) < 8 or rest[0] != _NEG_REQ or rest[2:4] != b"\x08\x00":
            return NO_MATCH
        requested = int.from_bytes(rest[4:8], "little")
        rest = rest[8:]
        if rest and (len(rest) != 36 or rest[0] != _CORRELATION_INFO):
            return NO_MATCH
    return ConnectionRequest(cookie, requested)


@implementer(IMatcher)
@frozen
class RDPMatcher:
    """
    Matches an RDP Connection Request; with C{cookies}, only one whose
    C{mstshash} cookie is one of them.

    @ivar cookies: the accepted cookie identifiers, compared exactly, or
        C{()} for any request.
    """

    cookies: frozenset[str] = frozenset()

    def match(self, peek: Peek) -> Verdict:
        if not self.cookies:
            return _fixedVerdict(peek.data)
        request = peek.parse(parseConnectionRequest)
        if not isinstance(request, ConnectionRequest):
            return request
        return MATCH if request.cookie in self.cookies else NO_MATCH

    def describe(self, peek: Peek) -> str:
        request = peek.parse(parseConnectionRequest)
        if not isinstance(request, ConnectionRequest):
            return "rdp"
        text = "rdp"
        if request.cookie is not None:
            text += f" cookie={request.cookie}"
        if request.requestedProtocols is not None:
            text += f" protocols=0x{request.requestedProtocols:x}"
        return text


@provider(IMatcherFactory)
class rdpFactory:
    """
    C{match.rdp = {}} for any RDP client, or C{{cookie = ["alice"]}} for
    clients whose C{Cookie: mstshash=} names one of these (the user name
    that the Microsoft client and FreeRDP send, the former cut to nine
    characters).
    """

    name = "rdp"
    summary = "Matches an RDP client's X.224 Connection Request (mstshash cookie)."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("cookie",))
        if "cookie" not in table:
            return RDPMatcher()
        cookies = stringList(table["cookie"], "cookie")
        for cookie in cookies:
            if _IDENTIFIER.fullmatch(cookie) is None:
                raise MatcherConfigError(
                    f"cookie {cookie!r} cannot be an mstshash cookie, which is "
                    "printable ASCII without spaces"
                )
        return RDPMatcher(frozenset(cookies))
