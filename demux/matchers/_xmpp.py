"""
The C{xmpp} matcher: the XML stream header an XMPP client or server sends
first (RFC 6120 section 4.2), by the namespace of its content.

An XMPP connection starts in the clear with an optional XML declaration and
the opening C{<stream:stream ...>} tag, even when STARTTLS follows; the
tag's default namespace says what talks: C{jabber:client} for a client,
C{jabber:server} for another server.  The matcher waits for the whole tag,
which every client sends in one piece, because an attribute after the
namespace could still make it malformed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import logSafe, optionTable, stringList

STREAMS_NAMESPACE = "http://etherx.jabber.org/streams"
"""
The namespace that the C{stream} prefix must be bound to (RFC 6120 section
4.8.1).
"""

DEFAULT_NAMESPACES = ("jabber:client", "jabber:server")
"""
The content namespaces matched unless told others: clients and servers.
"""

MAX_HEADER = 1024
"""
The most bytes the XML declaration and the stream tag may take together; a
real stream header is about 150 bytes, and past this the matcher says
L{NO_MATCH}, so it never needs more.
"""

_SPACE = b" \t\r\n"
_OPEN = b"<stream:stream"
# The declaration's pseudo-attributes: printable ASCII but < and >.
_DECLARATION_BODY = re.compile(rb"<\?xml[ \t\r\n][\x20-\x3b=\x3f-\x7e\t\r\n]*?\?>")
_PARTIAL_DECLARATION = re.compile(
    rb"<\?(?:x(?:m(?:l(?:[ \t\r\n][\x20-\x3b=\x3f-\x7e\t\r\n]*)?)?)?)?"
)
_NAME = re.compile(rb"[A-Za-z_:][A-Za-z0-9._:\-]*")
_VALUE = {b"'": re.compile(rb"[^<']*"), b'"': re.compile(rb'[^<"]*')}


class _Short(Exception):
    """
    The bytes ran out before the stream tag ended.
    """


class _Bad(Exception):
    """
    The bytes cannot begin an XMPP stream header.
    """


@frozen
class StreamHeader:
    """
    A parsed XMPP stream header.

    @ivar attributes: the stream tag's attributes, names and values as
        written (character references are not expanded).
    """

    attributes: Mapping[str, str]

    @property
    def namespace(self) -> str | None:
        """
        The content namespace (the C{xmlns} attribute), if any.
        """
        return self.attributes.get("xmlns")

    @property
    def to(self) -> str | None:
        """
        The domain the stream is addressed to, if given.
        """
        return self.attributes.get("to")


def _skipSpace(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in _SPACE:
        pos += 1
    return pos


def _literal(data: bytes, pos: int, literal: bytes) -> int:
    got = data[pos : pos + len(literal)]
    if not literal.startswith(got):
        raise _Bad()
    if len(got) < len(literal):
        raise _Short()
    return pos + len(literal)


def _token(data: bytes, pos: int, pattern: re.Pattern[bytes]) -> tuple[bytes, int]:
    """
    The longest run matching C{pattern} at C{pos}, which must be followed by
    a byte: a run reaching the end of C{data} might go on.
    """
    found = pattern.match(data, pos)
    end = pos if found is None else found.end()
    if end == len(data):
        raise _Short()
    return data[pos:end], end


def _streamTag(data: bytes) -> StreamHeader:
    """
    Scan C{data} as an optional XML declaration, white space and a stream
    tag, raising L{_Short} where the bytes end too soon and L{_Bad} at the
    first byte no header could have.
    """
    pos = 0
    if data == b"<":
        raise _Short()
    if data.startswith(b"<?"):
        declaration = _DECLARATION_BODY.match(data)
        if declaration is None:
            if b"?>" in data or _PARTIAL_DECLARATION.fullmatch(data) is None:
                raise _Bad()
            raise _Short()
        pos = _skipSpace(data, declaration.end())
    pos = _literal(data, pos, _OPEN)
    attributes: dict[str, str] = {}
    while True:
        if pos == len(data):
            raise _Short()
        if data[pos] == ord(">"):
            break
        if data[pos] not in _SPACE:
            raise _Bad()
        pos = _skipSpace(data, pos)
        if pos == len(data):
            raise _Short()
        if data[pos] == ord(">"):
            break
        rawName, pos = _token(data, pos, _NAME)
        if not rawName:
            raise _Bad()
        pos = _skipSpace(data, pos)
        pos = _literal(data, pos, b"=")
        pos = _skipSpace(data, pos)
        if pos == len(data):
            raise _Short()
        quote = data[pos : pos + 1]
        if quote not in _VALUE:
            raise _Bad()
        rawValue, pos = _token(data, pos + 1, _VALUE[quote])
        pos = _literal(data, pos, quote)
        try:
            name, value = rawName.decode("ascii"), rawValue.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad() from None
        if name in attributes:
            raise _Bad()
        attributes[name] = value
    if attributes.get("xmlns:stream") != STREAMS_NAMESPACE:
        raise _Bad()
    return StreamHeader(attributes)


def parseStreamHeader(data: bytes) -> StreamHeader | Verdict:
    """
    The stream tag at the start of C{data}, after an optional XML
    declaration and white space.

    @return: a L{StreamHeader} once the tag's C{>} is in; L{NEED_MORE}
        before it (within L{MAX_HEADER} bytes); L{NO_MATCH} if C{data} cannot
        begin a well-formed C{<stream:stream>} tag that binds the C{stream}
        prefix to L{STREAMS_NAMESPACE}.
    """
    try:
        return _streamTag(data[:MAX_HEADER])
    except _Short:
        return NO_MATCH if len(data) >= MAX_HEADER else NEED_MORE
    except _Bad:
        return NO_MATCH


@implementer(IMatcher)
@frozen
class XMPPMatcher:
    """
    Matches an XMPP stream header whose content namespace is one of
    C{namespaces}.

    @ivar namespaces: the accepted values of the stream tag's C{xmlns}.
    """

    namespaces: frozenset[str] = frozenset(DEFAULT_NAMESPACES)

    def match(self, peek: Peek) -> Verdict:
        header = peek.parse(parseStreamHeader)
        if not isinstance(header, StreamHeader):
            return header
        return MATCH if header.namespace in self.namespaces else NO_MATCH

    def describe(self, peek: Peek) -> str:
        header = peek.parse(parseStreamHeader)
        if not isinstance(header, StreamHeader):
            return "xmpp"
        text = f"xmpp ns={header.namespace}"
        if header.to is not None:
            text += f" to={logSafe(header.to)}"
        return text


@provider(IMatcherFactory)
class xmppFactory:
    """
    C{match.xmpp = {}} for XMPP clients and servers, or
    C{{namespaces = ["jabber:client"]}} for only those content namespaces
    (C{"jabber:component:accept"} for XEP-0114 components, say).
    """

    name = "xmpp"
    summary = (
        "Matches an XMPP stream header (jabber:client or jabber:server, or "
        "the namespaces given)."
    )

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("namespaces",))
        if "namespaces" not in table:
            return XMPPMatcher()
        namespaces = stringList(table["namespaces"], "namespaces")
        for namespace in namespaces:
            if any(c in namespace for c in "<&'\""):
                raise MatcherConfigError(
                    f"namespaces: {namespace!r} has a character (<, &, ' or \") "
                    "that a stream header cannot carry as written"
                )
        return XMPPMatcher(frozenset(namespaces))
