"""
Tests of the C{xmpp} matcher (L{demux.matchers._xmpp}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers._xmpp import (
    MAX_HEADER,
    STREAMS_NAMESPACE,
    StreamHeader,
    parseStreamHeader,
    xmppFactory,
)
from demux.testing import assertConsistent

from ._corpus import FILES, MatcherTestCase

XMPP_FILE = "slixmpp-stream.bin"


SLIXMPP = FILES[XMPP_FILE]


SERVER_HEADER = (
    b"<?xml version='1.0'?>\n"
    b'<stream:stream xmlns="jabber:server" '
    b"xmlns:stream='http://etherx.jabber.org/streams' "
    b"xmlns:db='jabber:server:dialback' to='example.net' version='1.0'>"
)


def streamTag(namespace: str = "jabber:client", extra: str = "") -> bytes:
    return (
        f"<stream:stream xmlns='{namespace}' xmlns:stream='{STREAMS_NAMESPACE}'"
        f"{extra}>"
    ).encode()


class XMPPTests(MatcherTestCase):
    """
    The C{xmpp} matcher.
    """

    def test_corpus(self) -> None:
        """
        slixmpp's stream header is a client's; no other file is XMPP.
        """
        self.assertCorpus(xmppFactory, {}, {XMPP_FILE})
        self.assertCorpus(xmppFactory, {"namespaces": "jabber:client"}, {XMPP_FILE})
        self.assertCorpus(xmppFactory, {"namespaces": ["jabber:server"]}, set())

    def test_capture(self) -> None:
        """
        The capture parses to its attributes, and the log names the domain.
        """
        header = parseStreamHeader(SLIXMPP)
        assert isinstance(header, StreamHeader)
        self.assertEqual(header.namespace, "jabber:client")
        self.assertEqual(header.to, "example.com")
        self.assertEqual(header.attributes["version"], "1.0")
        matcher = xmppFactory.build({})
        self.assertEqual(
            matcher.describe(Peek(SLIXMPP)), "xmpp ns=jabber:client to=example.com"
        )

    def test_server(self) -> None:
        """
        A server's stream, with an XML declaration and double quotes, matches
        by default and with C{jabber:server}, but not as a client.
        """
        self.assertIs(assertConsistent(xmppFactory.build({}), SERVER_HEADER), MATCH)
        server = xmppFactory.build({"namespaces": ["jabber:server"]})
        client = xmppFactory.build({"namespaces": ["jabber:client"]})
        self.assertIs(assertConsistent(server, SERVER_HEADER), MATCH)
        self.assertIs(assertConsistent(client, SERVER_HEADER), NO_MATCH)

    def test_otherNamespace(self) -> None:
        """
        A component's namespace matches only when listed.
        """
        data = streamTag("jabber:component:accept")
        self.assertIs(assertConsistent(xmppFactory.build({}), data), NO_MATCH)
        matcher = xmppFactory.build({"namespaces": ["jabber:component:accept"]})
        self.assertIs(assertConsistent(matcher, data), MATCH)

    def test_waitsForTheWholeTag(self) -> None:
        """
        Until the C{>}, the answer is L{NEED_MORE}: a later attribute could
        still make the tag malformed.
        """
        matcher = xmppFactory.build({})
        for n in range(len(SLIXMPP)):
            self.assertIs(matcher.match(Peek(SLIXMPP[:n])), NEED_MORE, n)
        broken = SLIXMPP[:-1] + b" version='1.0'>"
        self.assertIs(assertConsistent(matcher, broken), NO_MATCH)

    def test_declarationAndSpace(self) -> None:
        """
        An XML declaration, white space after it and around attributes are
        all allowed.
        """
        matcher = xmppFactory.build({})
        for data in [
            b"<?xml version='1.0' encoding='UTF-8'?>" + streamTag(),
            b'<?xml version="1.0"?>\r\n\t ' + streamTag(),
            b"<stream:stream\n  xmlns = 'jabber:client'\n  xmlns:stream=\""
            + STREAMS_NAMESPACE.encode()
            + b'"  \n>',
        ]:
            self.assertIs(assertConsistent(matcher, data), MATCH, data)

    def test_refused(self) -> None:
        """
        What is not a well-formed stream tag bound to the streams namespace
        is L{NO_MATCH}, decided as early as the bytes show it.
        """
        matcher = xmppFactory.build({})
        for data in [
            b"<stream:stream xmlns='jabber:client'>",
            b"<stream:stream xmlns='jabber:client' xmlns:stream='urn:x'>",
            streamTag(extra=" to='a' to='b'"),
            streamTag(extra=" to='a<b'"),
            streamTag(extra=" to=a"),
            b"<stream:streams xmlns='jabber:client'>",
            b"<stream:stream xmlns='jabber:client'/>",
            b"<?xml version='1.0'>" + streamTag(),
            b"<?xmlversion='1.0'?>" + streamTag(),
            b"<?xml version='1.0'?>x" + streamTag(),
            b" " + streamTag(),
            b"<stream xmlns='http://etherx.jabber.org/streams'>",
            b"GET / HTTP/1.1\r\n",
        ]:
            self.assertIs(assertConsistent(matcher, data), NO_MATCH, data)
        self.assertIs(matcher.match(Peek(b"<x")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"<?xml\x00")), NO_MATCH)

    def test_bounded(self) -> None:
        """
        A header that has not ended within L{MAX_HEADER} bytes is
        L{NO_MATCH}.
        """
        matcher = xmppFactory.build({})
        long = streamTag(extra=" to='" + "a" * MAX_HEADER + "'")
        self.assertIs(matcher.match(Peek(long[: MAX_HEADER - 1])), NEED_MORE)
        self.assertIs(matcher.match(Peek(long[:MAX_HEADER])), NO_MATCH)
        self.assertIs(matcher.match(Peek(long)), NO_MATCH)

    def test_describeIsLogSafe(self) -> None:
        """
        A domain with a space or a control character is escaped in the log.
        """
        matcher = xmppFactory.build({})
        data = streamTag(extra=" to='a b\x01'")
        self.assertEqual(matcher.describe(Peek(data)), "xmpp ns=jabber:client to=a\\x20b\\x01")

    def test_configErrors(self) -> None:
        """
        Namespaces must be non-empty strings a stream header can carry.
        """
        self.assertBuildFails(xmppFactory, {"namespaces": []}, "namespaces must be")
        self.assertBuildFails(xmppFactory, {"namespaces": [3]}, "namespaces must be")
        self.assertBuildFails(xmppFactory, {"namespaces": "a<b"}, "cannot carry")
        self.assertBuildFails(xmppFactory, "jabber:client", "expected a table")
        self.assertBuildFails(xmppFactory, {"namespace": "x"}, "unknown option 'namespace'")


_ATTRIBUTE_NAMES = st.from_regex(r"[a-z_][a-z0-9_.\-]{0,8}", fullmatch=True).filter(
    lambda n: n not in ("xmlns", "to")
)


_VALUES = st.text(
    st.characters(codec="utf-8", exclude_characters="<'\"\x00"), max_size=12
)


_SPACES = st.text(" \t\r\n", min_size=1, max_size=3)


@st.composite
def streamHeaders(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """
    A well-formed stream header and the attributes it carries.
    """
    attributes = {
        "xmlns": draw(st.sampled_from(["jabber:client", "jabber:server"])),
        "xmlns:stream": STREAMS_NAMESPACE,
    }
    attributes.update(draw(st.dictionaries(_ATTRIBUTE_NAMES, _VALUES, max_size=4)))
    names = draw(st.permutations(sorted(attributes)))
    text = ""
    if draw(st.booleans()):
        text += "<?xml version='1.0'?>" + draw(st.text(" \n", max_size=2))
    text += "<stream:stream"
    for name in names:
        quote = draw(st.sampled_from("'\""))
        equals = draw(st.sampled_from(["=", " = ", "\n="]))
        text += f"{draw(_SPACES)}{name}{equals}{quote}{attributes[name]}{quote}"
    text += draw(st.text(" \n", max_size=2)) + ">"
    return text.encode("utf-8"), attributes


class XMPPPropertyTests(SynchronousTestCase):
    """
    Properties of the stream header parser.
    """

    @settings(max_examples=200, deadline=None)
    @given(streamHeaders(), st.binary(max_size=8))
    def test_wellFormed(
        self, generated: tuple[bytes, dict[str, str]], after: bytes
    ) -> None:
        """
        A well-formed header parses to its attributes whatever follows it,
        and every shorter prefix needs more.
        """
        data, attributes = generated
        header = parseStreamHeader(data + after)
        assert isinstance(header, StreamHeader)
        self.assertEqual(dict(header.attributes), attributes)
        for n in range(len(data)):
            self.assertIs(parseStreamHeader(data[:n]), NEED_MORE, data[:n])

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from([b"", SLIXMPP[:20], SERVER_HEADER[:30]]), st.binary(max_size=40))
    def test_anyBytes(self, start: bytes, rest: bytes) -> None:
        """
        Any bytes get a consistent verdict and never an exception.
        """
        assertConsistent(xmppFactory.build({}), start + rest)
