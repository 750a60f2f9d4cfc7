"""
The C{dtls} matcher: a DTLS ClientHello, the first flight of a DTLS client.
"""

from __future__ import annotations

from attrs import frozen
from zope.interface import implementer, provider

from .._clienthello import ClientHello, parseClientHello
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
from ._options import helloNames, noOptions

_DTLS_VERSIONS = {0xFEFF: "1.0", 0xFEFD: "1.2", 0xFEFC: "1.3"}


@implementer(IMatcher)
@frozen
class DTLSMatcher:
    """
    Matches a flow that starts with a DTLS 1.0, 1.2 or 1.3 ClientHello,
    once its fragments are all in (usually the first datagram has it all).

    It reads the flow's one shared ClientHello parse, the same that C{tls}
    options in the route read, and insists that DTLS carried it.
    """

    def match(self, peek: Peek) -> Verdict:
        if not isinstance(peek, DatagramPeek):
            return NO_MATCH
        hello = peek.parse(parseClientHello)
        if hello is NEED_MORE:
            return NEED_MORE
        if isinstance(hello, ClientHello) and hello.carrier == "dtls":
            return MATCH
        return NO_MATCH

    def describe(self, peek: Peek) -> str:
        hello = peek.parse(parseClientHello)
        if not isinstance(hello, ClientHello):
            return "dtls"
        version = hello.highestVersion
        name = "-" if version is None else _DTLS_VERSIONS.get(version, f"0x{version:04x}")
        return f"dtls={name} {helloNames(hello)}"


@provider(IMatcherFactory)
class dtlsFactory:
    """
    C{match.dtls = {}}: any DTLS ClientHello; add C{tls} options to the route
    to pick one by SNI, ALPN or JA4.
    """

    name = "dtls"
    transports = DATAGRAM_ONLY
    summary = "Matches a DTLS ClientHello (DTLS 1.0 to 1.3) on a datagram flow."

    @staticmethod
    def build(options: object) -> IMatcher:
        noOptions(options)
        return DTLSMatcher()
