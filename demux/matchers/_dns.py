"""
The C{dns} matcher: a DNS query over UDP (RFC 1035), optionally for chosen
names and record types.

A query is a 12-byte header (id; flags with QR, AA, TC, RA, Z and RCODE
clear and opcode QUERY; one question, no answer or authority records, and
at most two additional ones, an EDNS OPT and a TSIG or SIG(0)) followed by
the question (the name as length-prefixed labels, uncompressed, then type
and class) and the additional records, which must end exactly at the end
of the datagram.  That is strict enough that other protocols rarely pass.
"""

from __future__ import annotations

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
from ._options import (
    hostnameMatches,
    logSafe,
    namedNumbers,
    optionTable,
    stringList,
)

TYPES: Final = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "SOA": 6,
    "PTR": 12,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "SRV": 33,
    "NAPTR": 35,
    "DS": 43,
    "RRSIG": 46,
    "DNSKEY": 48,
    "SVCB": 64,
    "HTTPS": 65,
    "IXFR": 251,
    "AXFR": 252,
    "ANY": 255,
    "CAA": 257,
}
"""Record types the C{types} option can name (numbers work for any)."""

#: The names by number, for describe(), made once.
_TYPE_NAMES: Final = {number: name for name, number in TYPES.items()}

_MAX_ADDITIONAL: Final = 2
_MAX_NAME: Final = 255


@frozen
class DNSQuery:
    """
    A DNS query, as far as routing needs.

    @ivar id: the query id.
    @ivar name: the question's name, labels joined by dots (C{"."} for the
        root), bytes outside printable ASCII as C{\\DDD}.
    @ivar type: the question's type (1 for A).
    @ivar qclass: the question's class (1 for IN).
    @ivar additional: how many additional records follow.
    """

    id: int
    name: str
    type: int
    qclass: int
    additional: int


def _label(raw: bytes) -> str:
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C) else f"\\{b:03d}"
        for b in raw
    )


def _skipName(data: bytes, pos: int) -> int:
    """
    The position after the name at C{pos}, which may end in a compression
    pointer; raises L{IndexError} or L{ValueError} if it is malformed.
    """
    total = 0
    while True:
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 2 > len(data):
                raise IndexError(pos)
            return pos + 2
        if length & 0xC0:
            raise ValueError(length)
        pos += 1 + length
        total += 1 + length
        if total > _MAX_NAME or pos > len(data):
            raise ValueError(pos)
        if length == 0:
            return pos


def parseQuery(datagram: bytes) -> DNSQuery | Verdict:
    """
    The DNS query that C{datagram} is, or L{NO_MATCH}.
    """
    if len(datagram) < 12 + 5:
        return NO_MATCH
    flags = int.from_bytes(datagram[2:4], "big")
    # QR (0x8000), opcode (0x7800), AA (0x0400), TC (0x0200), RA (0x0080),
    # Z (0x0040) and RCODE (0x000f) must all be zero; RD, AD and CD are the
    # client's to set.
    if flags & 0xFEC0 or flags & 0x000F:
        return NO_MATCH
    qd, an, ns, ar = (
        int.from_bytes(datagram[i : i + 2], "big") for i in range(4, 12, 2)
    )
    if qd != 1 or an or ns or ar > _MAX_ADDITIONAL:
        return NO_MATCH
    labels = []
    pos = 12
    total = 0
    try:
        while True:
            length = datagram[pos]
            if length & 0xC0:
                # The question comes first: nothing earlier to point at.
                return NO_MATCH
            total += 1 + length
            if total > _MAX_NAME or pos + 1 + length > len(datagram):
                return NO_MATCH
            if length == 0:
                pos += 1
                break
            labels.append(_label(datagram[pos + 1 : pos + 1 + length]))
            pos += 1 + length
        if pos + 4 > len(datagram):
            return NO_MATCH
        qtype = int.from_bytes(datagram[pos : pos + 2], "big")
        qclass = int.from_bytes(datagram[pos + 2 : pos + 4], "big")
        pos += 4
        for _ in range(ar):
            pos = _skipName(datagram, pos) + 10
            if pos > len(datagram):
                return NO_MATCH
            pos += int.from_bytes(datagram[pos - 2 : pos], "big")
    except (IndexError, ValueError):
        return NO_MATCH
    if pos != len(datagram) or qtype == 0:
        return NO_MATCH
    return DNSQuery(
        id=int.from_bytes(datagram[0:2], "big"),
        name=".".join(labels) or ".",
        type=qtype,
        qclass=qclass,
        additional=ar,
    )


@implementer(IMatcher)
@frozen
class DNSMatcher:
    """
    Matches a flow whose first datagram is a DNS query, for one of C{names}
    and of C{types} if given.

    @ivar names: name patterns (exact, or C{*.example.com} for names below
        it), case-insensitive; L{None} for any.
    @ivar types: record type numbers; L{None} for any.
    """

    names: tuple[str, ...] | None = None
    types: frozenset[int] | None = None

    def match(self, peek: Peek) -> Verdict:
        if not isinstance(peek, DatagramPeek):
            return NO_MATCH
        if not peek.datagrams:
            return NEED_MORE
        query = peek.parse(parseQuery)
        if not isinstance(query, DNSQuery):
            return NO_MATCH
        if self.types is not None and query.type not in self.types:
            return NO_MATCH
        if self.names is not None and not any(
            hostnameMatches(p, query.name) for p in self.names
        ):
            return NO_MATCH
        return MATCH

    def describe(self, peek: Peek) -> str:
        query = peek.parse(parseQuery)
        if not isinstance(query, DNSQuery):
            return "dns"
        return f"dns={logSafe(query.name)} type={_TYPE_NAMES.get(query.type, query.type)}"


def _types(value: object) -> frozenset[int]:
    return namedNumbers(
        value,
        "dns.types",
        "record types",
        TYPES,
        65535,
        "neither a record type name (such as 'A' or 'AAAA') nor a number "
        "from 1 to 65535",
        str.upper,
    )


def _names(value: object) -> tuple[str, ...]:
    names = stringList(value, "dns.names")
    for name in names:
        rest = name[2:] if name.startswith("*.") else name
        if not rest.strip(".") or "*" in rest:
            raise MatcherConfigError(
                f"dns.names {name!r} may only have a wildcard as its whole first "
                "label, as in '*.example.com'"
            )
    return tuple(n.rstrip(".") for n in names)


@provider(IMatcherFactory)
class dnsFactory:
    """
    C{match.dns = {}} for any DNS query over UDP, or C{{names =
    ["example.com", "*.example.com"], types = ["A", "AAAA"]}}.
    """

    name = "dns"
    transports = DATAGRAM_ONLY
    summary = "Matches a DNS query over UDP, optionally by name and record type."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("names", "types"))
        return DNSMatcher(
            names=_names(table["names"]) if "names" in table else None,
            types=_types(table["types"]) if "types" in table else None,
        )
