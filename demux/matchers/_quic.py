"""
The C{quic} matcher: a client's QUIC Initial, the first datagram of a QUIC
connection.
"""

from __future__ import annotations

from attrs import frozen
from zope.interface import implementer, provider

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
from .._quic import (
    MIN_INITIAL_DATAGRAM,
    VERSION_NAMES,
    ClientInitial,
    InitialDatagram,
    parseClientInitial,
    parseInitialDatagram,
    readLongHeader,
)
from ._options import helloNames, namedNumbers, optionTable

_VERSIONS_BY_NAME = {name: number for number, name in VERSION_NAMES.items()}


def versionName(version: int) -> str:
    """
    C{"v1"} or C{"v2"}, or the version number in hex for others.
    """
    return VERSION_NAMES.get(version, f"0x{version:08x}")


@implementer(IMatcher)
@frozen
class QUICMatcher:
    """
    Matches a flow whose first datagram is a client's QUIC Initial.

    For QUIC versions 1 and 2 that means an Initial packet, in a datagram of
    at least 1200 bytes, that decrypts with the keys derived from its
    Destination Connection ID: only a client's does, so the first datagram
    decides and the matcher never waits for the rest of the ClientHello
    (a C{tls} matcher in the same route does, if it needs it).  A version
    it cannot decrypt, named by number in C{versions}, is matched by its long
    header alone, in a datagram of the same minimum size.

    @ivar versions: the accepted version numbers, or L{None} for versions 1
        and 2.
    """

    versions: frozenset[int] | None = None

    def match(self, peek: Peek) -> Verdict:
        if not isinstance(peek, DatagramPeek):
            return NO_MATCH
        if not peek.datagrams:
            return NEED_MORE
        # Once per flow, however many quic routes ask (a datagram is whole,
        # so the parse is final).
        header = peek.parse(readLongHeader)
        if header is None:
            return NO_MATCH
        if self.versions is not None:
            if header.version not in self.versions:
                return NO_MATCH
            if header.version not in VERSION_NAMES:
                return MATCH if len(peek.data) >= MIN_INITIAL_DATAGRAM else NO_MATCH
        first = peek.parse(parseInitialDatagram)
        return MATCH if isinstance(first, InitialDatagram) else NO_MATCH

    def describe(self, peek: Peek) -> str:
        header = readLongHeader(peek.data)
        if header is None:
            return "quic"
        text = f"quic={versionName(header.version)}"
        if isinstance(peek, DatagramPeek):
            initial = peek.parseDatagrams(parseClientInitial)
            if isinstance(initial, ClientInitial):
                text += f" {helloNames(initial.clientHello)}"
        return text


def _versions(value: object) -> frozenset[int]:
    return namedNumbers(
        value,
        "quic.versions",
        "versions",
        _VERSIONS_BY_NAME,
        2**32 - 1,
        "neither 'v1', 'v2' nor a version number (1 to 0xffffffff)",
    )


@provider(IMatcherFactory)
class quicFactory:
    """
    C{match.quic = {}} for a client's QUIC Initial of version 1 or 2, or
    C{{versions = ["v2"]}} for some versions only (names, or numbers for
    versions matched by their header alone).
    """

    name = "quic"
    transports = DATAGRAM_ONLY
    summary = "Matches a client's QUIC Initial (versions 1 and 2, or others named)."

    @staticmethod
    def build(options: object) -> IMatcher:
        table = optionTable(options, ("versions",))
        if "versions" not in table:
            return QUICMatcher()
        return QUICMatcher(_versions(table["versions"]))
