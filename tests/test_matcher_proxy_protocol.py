"""
Tests of the C{proxy_protocol} matcher (L{demux.matchers._proxy_protocol}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from demux._interfaces import MATCH, NO_MATCH
from demux._peek import Peek
from demux.matchers import (
    _proxy_protocol,
)
from demux.matchers._proxy_protocol import (
    V2_SIGNATURE,
    parseProxyHeader,
    proxyProtocolFactory,
)
from demux.testing import assertConsistent

from ._matchers_a import (
    PROXY,
    MatcherTestCase,
)


class ProxyProtocolTests(MatcherTestCase):
    """
    The C{proxy_protocol} matcher.
    """

    def test_corpus(self) -> None:
        """
        HAProxy's v1 and v2 headers match, each when its version is allowed.
        """
        self.assertCorpus(proxyProtocolFactory, {}, PROXY)
        self.assertCorpus(proxyProtocolFactory, {"versions": 1}, {"proxy-v1-haproxy.bin"})
        self.assertCorpus(
            proxyProtocolFactory, {"versions": [2]}, {"proxy-v2-haproxy.bin"}
        )

    def test_describe(self) -> None:
        """
        The version, the kind of header and the source address.
        """
        self.assertDescribed(proxyProtocolFactory, {})

    def test_v1(self) -> None:
        """
        Version 1 lines are checked field by field; UNKNOWN takes anything.
        """
        matcher = proxyProtocolFactory.build({})
        for line, verdict in [
            (b"PROXY UNKNOWN\r\n", MATCH),
            (b"PROXY UNKNOWN 1.2.3.4 whatever\r\n", MATCH),
            (b"PROXY TCP6 ::1 2001:db8::2 1 65535\r\n", MATCH),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", NO_MATCH),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", NO_MATCH),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", NO_MATCH),
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", NO_MATCH),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", NO_MATCH),
            (b"PROXY UNKNOWN\n", NO_MATCH),
            (b"PROXY UNKNOWN\r\r", NO_MATCH),
            (b"PROXY " + b"x" * 101 + b"\r\n", NO_MATCH),
            (b"PROXY UNKNOWN " + b"x" * 86 + b"\r\n", MATCH),
            (b"PROXX", NO_MATCH),
        ]:
            self.assertIs(assertConsistent(matcher, line), verdict, line)
        self.assertEqual(
            matcher.describe(Peek(b"PROXY TCP6 ::1 2001:db8::2 1 65535\r\n")),
            "proxy_protocol=1 kind=TCP6 source=[::1]:1",
        )

    def test_v2(self) -> None:
        """
        Version 2 decides on its 16 bytes; a PROXY command needs room for
        its family's addresses, a LOCAL one does not.
        """
        matcher = proxyProtocolFactory.build({})
        for header, verdict in [
            (b"\x20\x00\x00\x00", MATCH),
            (b"\x21\x11\x00\x0c", MATCH),
            (b"\x21\x11\x00\x0b", NO_MATCH),
            (b"\x21\x21\x00\x24", MATCH),
            (b"\x21\x21\x00\x23", NO_MATCH),
            (b"\x21\x31\x00\xd8", MATCH),
            (b"\x22\x11\x00\x0c", NO_MATCH),
            (b"\x11\x11\x00\x0c", NO_MATCH),
            (b"\x21\x41\x00\x0c", NO_MATCH),
            (b"\x21\x13\x00\x0c", NO_MATCH),
        ]:
            data = V2_SIGNATURE + header
            self.assertIs(assertConsistent(matcher, data), verdict, header)
        self.assertIs(matcher.match(Peek(V2_SIGNATURE[:5] + b"x")), NO_MATCH)

    @settings(max_examples=200)
    @given(
        st.one_of(
            st.ip_addresses(v=4).map(lambda a: (a, 0x11)),
            st.ip_addresses(v=6).map(lambda a: (a, 0x21)),
        ),
        st.integers(0, 0xFFFF),
        st.binary(max_size=20),
    )
    def test_generated(
        self,
        addressAndFamily: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int],
        port: int,
        tlvs: bytes,
    ) -> None:
        """
        Any v1 or v2 header for TCP parses to its source.
        """
        address, family = addressAndFamily
        packed = address.packed * 2 + struct.pack(">HH", port, 443)
        v2 = V2_SIGNATURE + struct.pack(">BBH", 0x21, family, len(packed) + len(tlvs))
        v2 += packed + tlvs
        shown = f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"
        found = parseProxyHeader(v2)
        assert isinstance(found, _proxy_protocol.ProxyHeader)
        self.assertEqual(found.source, shown)
        proto = b"TCP4" if address.version == 4 else b"TCP6"
        v1 = b"PROXY %s %s %s %d 443\r\n" % (
            proto, str(address).encode(), str(address).encode(), port
        )
        self.assertEqual(
            parseProxyHeader(v1), _proxy_protocol.ProxyHeader(1, proto.decode(), shown)
        )

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"versions": [3]}, "3 is not one of 1, 2"),
            ({"versions": "v1"}, "must be a number"),
            ({"strip": True}, "unknown option 'strip'"),
        ]:
            self.assertBuildFails(proxyProtocolFactory, options, words)
