"""
Tests for the C{xmpp}, C{rdp}, C{tinc} and C{adb} matchers and the Syncthing
presets C{bep}, C{relay-protocol} and C{relay-session}.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux._errors import MatcherConfigError
from demux._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory
from demux._peek import Peek
from demux._plugins import matcherFactories
from demux.matchers._adb import HEADER, ADBHeader, adbFactory, parseADBHeader
from demux.matchers._rdp import (
    MAX_REQUEST,
    ConnectionRequest,
    parseConnectionRequest,
    rdpFactory,
)
from demux.matchers._syncthing import (
    RELAY_MAGIC,
    bepFactory,
    relayProtocolFactory,
    relaySessionFactory,
)
from demux.matchers._tinc import MAX_LINE, IDRequest, parseIDRequest, tincFactory
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
RDP_FILE = "xfreerdp-cr.bin"
TINC_FILE = "tincd-id.bin"
ADB_FILE = "adb-cnxn.bin"
BEP_FILE = "python-ssl-sni-alpn.bin"
RELAY_FILE = "openssl-nosni-alpn-bep-relay.bin"

ALL = [
    xmppFactory,
    rdpFactory,
    tincFactory,
    adbFactory,
    bepFactory,
    relayProtocolFactory,
    relaySessionFactory,
]


class RegistrationTests(SynchronousTestCase):
    """
    The matchers are plugins like any other.
    """

    def test_entryPoints(self) -> None:
        """
        Each factory provides L{IMatcherFactory} and is found by its name.
        """
        factories = matcherFactories()
        for factory in ALL:
            self.assertTrue(verifyObject(IMatcherFactory, factory))
            self.assertIs(factories[factory.name], factory)

    def test_noOptionsWritten(self) -> None:
        """
        C{{}} and C{true} both build every one of them.
        """
        for factory in ALL:
            for options in ({}, True):
                verifyObject(IMatcher, factory.build(options))

    def test_unknownOption(self) -> None:
        """
        An option a matcher does not know is refused by name.
        """
        for factory in ALL:
            with self.assertRaises(MatcherConfigError):
                factory.build({"colour": "blue"})


# XMPP

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


# RDP

FREERDP = FILES[RDP_FILE]


def connectionRequest(variable: bytes = b"", credit: int = 0, klass: int = 0) -> bytes:
    """
    A TPKT-wrapped X.224 Connection Request built from [MS-RDPBCGR]
    2.2.1.1: the fixed part, then C{variable}.
    """
    tpdu = bytes([0xE0 | credit, 0, 0, 0x12, 0x34, klass]) + variable
    length = 4 + 1 + len(tpdu)
    return b"\x03\x00" + length.to_bytes(2, "big") + bytes([len(tpdu)]) + tpdu


def negotiationRequest(protocols: int, flags: int = 0) -> bytes:
    """
    An RDP_NEG_REQ (2.2.1.1.1).
    """
    return struct.pack("<BBHI", 1, flags, 8, protocols)


CORRELATION_INFO = b"\x06\x00\x24\x00" + bytes(range(16)) + bytes(16)


class RDPTests(MatcherTestCase):
    """
    The C{rdp} matcher.
    """

    def test_corpus(self) -> None:
        """
        FreeRDP's request is RDP, with its cookie; no other file is.
        """
        self.assertCorpus(rdpFactory, {}, {RDP_FILE})
        self.assertCorpus(rdpFactory, {"cookie": "alice"}, {RDP_FILE})
        self.assertCorpus(rdpFactory, {"cookie": ["bob", "carol"]}, set())

    def test_capture(self) -> None:
        """
        The capture has the user name as its cookie and asks for TLS or
        CredSSP.
        """
        self.assertEqual(
            parseConnectionRequest(FREERDP), ConnectionRequest("alice", 3)
        )
        self.assertEqual(
            rdpFactory.build({}).describe(Peek(FREERDP)),
            "rdp cookie=alice protocols=0x3",
        )

    def test_fixedPartDecides(self) -> None:
        """
        Without a cookie option, the eleven fixed bytes decide.
        """
        matcher = rdpFactory.build({})
        self.assertIs(matcher.match(Peek(FREERDP[:10])), NEED_MORE)
        self.assertIs(matcher.match(Peek(FREERDP[:11])), MATCH)
        self.assertEqual(matcher.describe(Peek(FREERDP[:11])), "rdp")
        cookie = rdpFactory.build({"cookie": "alice"})
        self.assertIs(cookie.match(Peek(FREERDP[:-1])), NEED_MORE)

    def test_specified(self) -> None:
        """
        Requests built from the specification: bare, with a routing token,
        with negotiation and correlation info, with a credit.
        """
        matcher = rdpFactory.build({})
        cases = [
            (connectionRequest(), ConnectionRequest(None, None)),
            (
                connectionRequest(b"Cookie: msts=3640205228.15629.0000\r\n"),
                ConnectionRequest(None, None),
            ),
            (
                connectionRequest(
                    b"Cookie: mstshash=bob\r\n"
                    + negotiationRequest(0xB, flags=0x08)
                    + CORRELATION_INFO
                ),
                ConnectionRequest("bob", 0xB),
            ),
            (connectionRequest(negotiationRequest(0), credit=1), ConnectionRequest(None, 0)),
        ]
        for data, parsed in cases:
            self.assertIs(assertConsistent(matcher, data), MATCH, data)
            self.assertEqual(parseConnectionRequest(data), parsed)
        bob = rdpFactory.build({"cookie": ["bob"]})
        self.assertIs(assertConsistent(bob, cases[2][0]), MATCH)
        self.assertIs(assertConsistent(bob, cases[1][0]), NO_MATCH)

    def test_refused(self) -> None:
        """
        A wrong TPKT, length indicator, TPDU code, destination reference or
        class is L{NO_MATCH} from the byte that shows it.
        """
        good = connectionRequest()
        matcher = rdpFactory.build({})
        for offset, value in [
            (0, 0x16), (1, 1), (3, 10), (4, 5), (5, 0xD0), (6, 1), (7, 1), (10, 0x10)
        ]:
            data = good[:offset] + bytes([value]) + good[offset + 1 :]
            self.assertIs(matcher.match(Peek(data[: offset + 1])), NO_MATCH, offset)
            self.assertIs(assertConsistent(matcher, data), NO_MATCH, offset)
        self.assertIs(matcher.match(Peek(b"\x03\x00\x01\x04")), NO_MATCH)

    def test_malformedVariablePart(self) -> None:
        """
        With a cookie option the whole request is parsed: a cookie line
        without its end, or a stray tail, is L{NO_MATCH}.
        """
        matcher = rdpFactory.build({"cookie": "bob"})
        for variable in [
            b"Cookie: mstshash=bob",
            b"Cookie: mstshash=bob\r\nxyz",
            b"Cookie: mstshash=bob\r\n" + negotiationRequest(1)[:7],
            b"Cookie: mstshash=bob\r\n" + negotiationRequest(1) + b"\x06",
            negotiationRequest(1).replace(b"\x08", b"\x09", 1),
        ]:
            data = connectionRequest(variable)
            self.assertIs(assertConsistent(matcher, data), NO_MATCH, variable)

    def test_bounded(self) -> None:
        """
        No request is longer than L{MAX_REQUEST}, which the one-byte length
        indicator allows: a longer TPKT length is L{NO_MATCH} at once.
        """
        name = "b" * 229
        longest = connectionRequest(f"Cookie: mstshash={name}\r\n".encode())
        self.assertEqual(len(longest), MAX_REQUEST)
        matcher = rdpFactory.build({"cookie": name})
        self.assertIs(matcher.match(Peek(longest[:-1])), NEED_MORE)
        self.assertIs(assertConsistent(matcher, longest), MATCH)
        tooLong = (MAX_REQUEST + 1).to_bytes(2, "big")
        self.assertIs(matcher.match(Peek(b"\x03\x00" + tooLong)), NO_MATCH)

    def test_configErrors(self) -> None:
        """
        Cookies are non-empty printable ASCII without spaces.
        """
        self.assertBuildFails(rdpFactory, {"cookie": []}, "cookie must be")
        self.assertBuildFails(rdpFactory, {"cookie": "a b"}, "cannot be an mstshash")
        self.assertBuildFails(rdpFactory, {"cookie": "caf\u00e9"}, "cannot be an mstshash")
        self.assertBuildFails(rdpFactory, ["alice"], "expected a table")


class RDPPropertyTests(SynchronousTestCase):
    """
    Properties of the Connection Request parser.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        st.from_regex(r"[!-~]{1,20}", fullmatch=True),
        st.integers(0, 0xFFFFFFFF),
        st.booleans(),
    )
    def test_built(self, cookie: str, protocols: int, correlation: bool) -> None:
        """
        Any request built from the specification parses to what it carries,
        matches its own cookie, and not another.
        """
        variable = f"Cookie: mstshash={cookie}\r\n".encode() + negotiationRequest(
            protocols
        )
        if correlation:
            variable += CORRELATION_INFO
        data = connectionRequest(variable)
        self.assertEqual(
            parseConnectionRequest(data), ConnectionRequest(cookie, protocols)
        )
        self.assertIs(assertConsistent(rdpFactory.build({"cookie": cookie}), data), MATCH)
        other = rdpFactory.build({"cookie": cookie + "x"})
        self.assertIs(other.match(Peek(data)), NO_MATCH)

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from([b"", FREERDP[:11], FREERDP[:25]]), st.binary(max_size=40))
    def test_anyBytes(self, start: bytes, rest: bytes) -> None:
        """
        Any bytes get a consistent verdict and never an exception.
        """
        for options in ({}, {"cookie": "alice"}):
            assertConsistent(rdpFactory.build(options), start + rest)


# tinc

TINCD = FILES[TINC_FILE]


class TincTests(MatcherTestCase):
    """
    The C{tinc} matcher.
    """

    def test_corpus(self) -> None:
        """
        tincd 1.0's ID request is tinc; no other file is.
        """
        self.assertCorpus(tincFactory, {}, {TINC_FILE})
        self.assertCorpus(tincFactory, {"names": ["alice"]}, {TINC_FILE})
        self.assertCorpus(tincFactory, {"names": ["bob", "alic", "alice2"]}, set())

    def test_versions(self) -> None:
        """
        tinc 1.0 sends no minor version, tinc 1.1 does; both are protocol 17.
        """
        self.assertEqual(parseIDRequest(TINCD), IDRequest("alice", None))
        self.assertEqual(parseIDRequest(b"0 node_2 17.7\n"), IDRequest("node_2", 7))
        matcher = tincFactory.build({})
        self.assertEqual(matcher.describe(Peek(TINCD)), "tinc name=alice protocol=17")
        self.assertEqual(
            matcher.describe(Peek(b"0 bob 17.7\n")), "tinc name=bob protocol=17.7"
        )

    def test_refused(self) -> None:
        """
        Other requests, other majors, invitations, control connections and
        bad names are L{NO_MATCH}, as early as the bytes show it.
        """
        matcher = tincFactory.build({})
        for data in [
            b"1 alice 17\n",
            b"0 alice 18\n",
            b"0 alice 170\n",
            b"0 alice 17.\n",
            b"0 alice 17 \n",
            b"0 ?invitation 17.7\n",
            b"0 ^cookie 17.7 0\n",
            b"0 al-ice 17\n",
            b"0  alice 17\n",
            b"0 alice 17\r\n",
        ]:
            self.assertIs(assertConsistent(matcher, data), NO_MATCH, data)
        self.assertIs(matcher.match(Peek(b"0 alice 2")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"0 alice 17")), NEED_MORE)

    def test_namesDecideEarly(self) -> None:
        """
        With C{names}, a name that cannot be one of them is refused before
        the line ends.
        """
        matcher = tincFactory.build({"names": ["alice", "bob"]})
        self.assertIs(matcher.match(Peek(b"0 al")), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"0 carol")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"0 alice ")), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"0 alic ")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"0 bobby")), NO_MATCH)

    def test_bounded(self) -> None:
        """
        A line still open after L{MAX_LINE} bytes is L{NO_MATCH}.
        """
        matcher = tincFactory.build({})
        long = b"0 " + b"a" * MAX_LINE + b" 17\n"
        self.assertIs(matcher.match(Peek(long[: MAX_LINE - 1])), NEED_MORE)
        self.assertIs(matcher.match(Peek(long[:MAX_LINE])), NO_MATCH)

    def test_configErrors(self) -> None:
        """
        Names are tinc node names.
        """
        self.assertBuildFails(tincFactory, {"names": ""}, "names must be")
        self.assertBuildFails(tincFactory, {"names": ["a-b"]}, "not a tinc node name")
        self.assertBuildFails(tincFactory, "alice", "expected a table")


class TincPropertyTests(SynchronousTestCase):
    """
    Properties of the ID request parser.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        st.from_regex(r"[A-Za-z0-9_]{1,30}", fullmatch=True),
        st.none() | st.integers(0, 99),
        st.binary(max_size=8),
    )
    def test_built(self, name: str, minor: int | None, after: bytes) -> None:
        """
        Any ID line parses to its name and version, matches its own name,
        and every shorter prefix needs more.
        """
        version = "17" if minor is None else f"17.{minor}"
        line = f"0 {name} {version}\n".encode()
        self.assertEqual(parseIDRequest(line + after), IDRequest(name, minor))
        for n in range(len(line)):
            self.assertIs(parseIDRequest(line[:n]), NEED_MORE)
        self.assertIs(
            assertConsistent(tincFactory.build({"names": name}), line + after), MATCH
        )

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from([b"", b"0 ", b"0 alice 1"]), st.binary(max_size=30))
    def test_anyBytes(self, start: bytes, rest: bytes) -> None:
        """
        Any bytes get a consistent verdict and never an exception.
        """
        for options in ({}, {"names": ["alice"]}):
            assertConsistent(tincFactory.build(options), start + rest)


# ADB

ADB = FILES[ADB_FILE]


def adbMessage(command: bytes, arg0: int, arg1: int, payload: bytes = b"") -> bytes:
    """
    An ADB message built from the protocol's description: six little-endian
    words, then the payload.
    """
    word = int.from_bytes(command, "little")
    checksum = sum(payload) & 0xFFFFFFFF
    return (
        struct.pack(
            "<6I", word, arg0, arg1, len(payload), checksum, word ^ 0xFFFFFFFF
        )
        + payload
    )


class ADBTests(MatcherTestCase):
    """
    The C{adb} matcher.
    """

    def test_corpus(self) -> None:
        """
        adb's CNXN is ADB; no other file is.
        """
        self.assertCorpus(adbFactory, {}, {ADB_FILE})

    def test_capture(self) -> None:
        """
        The capture is a CNXN of version 0x01000001 taking 1 MiB payloads,
        decided by its header alone.
        """
        self.assertEqual(parseADBHeader(ADB), ADBHeader("CNXN", 0x01000001, 1 << 20))
        matcher = adbFactory.build({})
        self.assertIs(matcher.match(Peek(ADB[: HEADER - 1])), NEED_MORE)
        self.assertIs(matcher.match(Peek(ADB[:HEADER])), MATCH)
        self.assertEqual(
            matcher.describe(Peek(ADB)),
            "adb command=CNXN version=0x01000001 maxdata=1048576",
        )
        self.assertEqual(ADB, adbMessage(b"CNXN", 0x01000001, 1 << 20, ADB[HEADER:]))

    def test_stls(self) -> None:
        """
        An STLS message matches too.
        """
        data = adbMessage(b"STLS", 0x01000000, 0)
        matcher = adbFactory.build({})
        self.assertIs(assertConsistent(matcher, data), MATCH)
        self.assertEqual(
            matcher.describe(Peek(data)), "adb command=STLS version=0x01000000"
        )

    def test_refused(self) -> None:
        """
        Another command, a wrong magic or version is L{NO_MATCH}, on the
        first byte that shows it.
        """
        matcher = adbFactory.build({})
        self.assertIs(matcher.match(Peek(b"CNXX")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"X")), NO_MATCH)
        for data in [
            adbMessage(b"OPEN", 1, 0, b"shell:\x00"),
            adbMessage(b"AUTH", 1, 0, b"x" * 20),
            adbMessage(b"CNXN", 0x02000000, 4096),
            ADB[:20] + b"\xbc\xb1\xa7\xb0" + ADB[24:],
        ]:
            self.assertIs(assertConsistent(matcher, data), NO_MATCH, data[:24])
        self.assertIs(matcher.match(Peek(ADB[:20] + b"\xbd")), NO_MATCH)

    def test_configErrors(self) -> None:
        """
        C{adb} takes no options.
        """
        self.assertBuildFails(adbFactory, {"version": 1}, "takes no options")


class ADBPropertyTests(SynchronousTestCase):
    """
    Properties of the ADB header parser.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from([b"CNXN", b"STLS"]),
        st.integers(0x01000000, 0x01FFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=16),
    )
    def test_built(self, command: bytes, version: int, maxData: int, payload: bytes) -> None:
        """
        Any CNXN or STLS header of protocol version 1 parses to its fields.
        """
        data = adbMessage(command, version, maxData, payload)
        self.assertEqual(
            parseADBHeader(data), ADBHeader(command.decode(), version, maxData)
        )
        self.assertIs(assertConsistent(adbFactory.build({}), data), MATCH)

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from([b"", b"CNXN", ADB[:20]]), st.binary(max_size=30))
    def test_anyBytes(self, start: bytes, rest: bytes) -> None:
        """
        Any bytes get a consistent verdict and never an exception.
        """
        assertConsistent(adbFactory.build({}), start + rest)


# The Syncthing presets

TLS_FILES = {
    name for name, data in FILES.items() if data[:1] == b"\x16" and data[1:2] == b"\x03"
}


class SyncthingPresetTests(MatcherTestCase):
    """
    C{bep}, C{relay-protocol} and C{relay-session}.
    """

    def test_bep(self) -> None:
        """
        Only the hello offering C{bep/1.0} is BEP.
        """
        self.assertIn(BEP_FILE, TLS_FILES)
        self.assertCorpus(bepFactory, {}, {BEP_FILE})
        self.assertEqual(
            bepFactory.build({}).describe(Peek(FILES[BEP_FILE])),
            "bep sni=device.example.net alpn=bep/1.0",
        )

    def test_relayProtocol(self) -> None:
        """
        Only the hello offering C{bep-relay} is the relay protocol, and a
        server name would not change that.
        """
        self.assertCorpus(relayProtocolFactory, {}, {RELAY_FILE})
        self.assertEqual(
            relayProtocolFactory.build({}).describe(Peek(FILES[RELAY_FILE])),
            "relay-protocol sni=- alpn=bep-relay",
        )

    def test_relaySession(self) -> None:
        """
        The relay magic decides after four bytes; no corpus file has it.
        """
        self.assertCorpus(relaySessionFactory, {}, set())
        matcher = relaySessionFactory.build({})
        join = RELAY_MAGIC + b"\x00\x00\x00\x03\x00\x00\x00\x0c" + b"\x00" * 12
        self.assertIs(assertConsistent(matcher, join), MATCH)
        self.assertIs(matcher.match(Peek(RELAY_MAGIC[:3])), NEED_MORE)
        self.assertIs(matcher.match(Peek(RELAY_MAGIC)), MATCH)
        self.assertEqual(matcher.describe(Peek(join)), "relay-session prefix=9e79bc40")

    def test_configErrors(self) -> None:
        """
        The presets take no options: they are what they say.
        """
        for factory in (bepFactory, relayProtocolFactory, relaySessionFactory):
            self.assertBuildFails(factory, {"alpn": ["h2"]}, "takes no options")
