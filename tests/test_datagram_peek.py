"""
Tests for L{demux.DatagramPeek} and the C{transports} of matcher factories.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from demux import (
    MATCH,
    NEED_MORE,
    NO_MATCH,
    ClientHello,
    DatagramPeek,
    Peek,
    parseClientHello,
    transportsOf,
)
from demux.matchers import anyFactory, prefixFactory, regexFactory, tlsFactory
from demux.testing import assertConsistent, datagramVerdictOf

RFC9001_INITIAL = bytes.fromhex(
    (Path(__file__).parent / "data" / "rfc9001-client-initial.hex")
    .read_text()
    .replace("\n", "")
)
"""The client Initial of RFC 9001 appendix A.2 (SNI example.com)."""


class DatagramPeekTests(SynchronousTestCase):
    def test_data(self) -> None:
        """
        C{data} is the first datagram, C{datagrams} all of them in order, and
        the length counts every datagram's bytes.
        """
        empty = DatagramPeek()
        self.assertEqual((empty.data, empty.datagrams, len(empty)), (b"", (), 0))
        self.assertFalse(empty.dataComplete)
        peek = empty.extended(b"abc").extended(b"de")
        self.assertIsInstance(peek, Peek)
        self.assertEqual(peek.data, b"abc")
        self.assertEqual(peek.datagrams, (b"abc", b"de"))
        self.assertEqual(len(peek), 5)
        self.assertTrue(peek.dataComplete)
        self.assertFalse(Peek(b"abc").dataComplete)

    def test_parseFirstDatagram(self) -> None:
        """
        A stream parser runs on the first datagram, once per view, and its
        final result is carried over by C{extended}.
        """
        calls: list[bytes] = []

        def parser(data: bytes) -> object:
            calls.append(data)
            return len(data)

        peek = DatagramPeek([b"abc"])
        self.assertEqual(peek.parse(parser), 3)
        self.assertEqual(peek.parse(parser), 3)
        self.assertEqual(peek.extended(b"defg").parse(parser), 3)
        self.assertEqual(calls, [b"abc"])

    def test_firstDatagramDropsParses(self) -> None:
        """
        The first datagram replaces C{data}, so no parse of the empty view is
        carried over to it.
        """
        empty = DatagramPeek()
        self.assertEqual(empty.parse(len), 0)
        self.assertEqual(empty.extended(b"abc").parse(len), 3)

    def test_clientHelloFromQUIC(self) -> None:
        """
        C{parse(parseClientHello)} is answered from the QUIC Initial's CRYPTO
        data, so the C{tls} matcher works on a QUIC flow unchanged.
        """
        peek = DatagramPeek([RFC9001_INITIAL])
        hello = peek.parse(parseClientHello)
        assert isinstance(hello, ClientHello)
        self.assertEqual(hello.serverName, "example.com")
        self.assertEqual(hello.carrier, "quic")
        self.assertTrue(hello.ja4().startswith("q13d"))
        self.assertIs(tlsFactory.build({"sni": "example.com"}).match(peek), MATCH)
        self.assertIs(tlsFactory.build({"sni": "example.org"}).match(peek), NO_MATCH)
        self.assertIs(tlsFactory.build({}).match(DatagramPeek()), NEED_MORE)
        self.assertIs(tlsFactory.build({}).match(DatagramPeek([b"x" * 1300])), NO_MATCH)

    def test_prefixOnDatagrams(self) -> None:
        """
        C{prefix} decides on the first datagram: one shorter than the prefix
        is no match, not a reason to wait; and nothing changes for streams.
        """
        matcher = prefixFactory.build({"text": "abcd"})
        self.assertIs(matcher.match(DatagramPeek()), NEED_MORE)
        self.assertIs(matcher.match(DatagramPeek([b"ab"])), NO_MATCH)
        self.assertIs(matcher.match(DatagramPeek([b"ab", b"cd"])), NO_MATCH)
        self.assertIs(matcher.match(DatagramPeek([b"abcde"])), MATCH)
        self.assertIs(matcher.match(DatagramPeek([b"abxd"])), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"ab")), NEED_MORE)
        self.assertIs(assertConsistent(matcher, b"abcdef"), MATCH)
        offset = prefixFactory.build({"text": "cd", "offset": 2})
        self.assertIs(offset.match(DatagramPeek([b"a"])), NO_MATCH)
        self.assertIs(offset.match(Peek(b"a")), NEED_MORE)

    def test_regexOnDatagrams(self) -> None:
        """
        C{regex} decides on the first datagram: a pattern still undecided at
        its end is no match; nothing changes for streams.
        """
        matcher = regexFactory.build("^ab+c")
        self.assertIs(matcher.match(DatagramPeek([b"abbb"])), NO_MATCH)
        self.assertIs(matcher.match(DatagramPeek([b"abbbc"])), MATCH)
        self.assertIs(matcher.match(Peek(b"abbb")), NEED_MORE)
        self.assertIs(assertConsistent(matcher, b"abbbcd"), MATCH)
        offset = regexFactory.build({"pattern": "x", "offset": 4})
        self.assertIs(offset.match(DatagramPeek([b"ab"])), NO_MATCH)
        self.assertIs(offset.match(Peek(b"ab")), NEED_MORE)

    def test_any(self) -> None:
        self.assertIs(anyFactory.build({}).match(DatagramPeek()), MATCH)

    def test_datagramVerdictOf(self) -> None:
        """
        The testing helper feeds datagrams as a flow would, and stops at the
        first decision.
        """
        tls = tlsFactory.build({"sni": "example.com"})
        self.assertIs(datagramVerdictOf(tls, [RFC9001_INITIAL, b"junk"]), MATCH)
        self.assertIs(datagramVerdictOf(tls, []), NEED_MORE)
        self.assertIs(datagramVerdictOf(tls, [b"junk", RFC9001_INITIAL]), NO_MATCH)


class TransportsTests(SynchronousTestCase):
    def test_default(self) -> None:
        """
        A factory without a C{transports} attribute judges streams only.
        """

        class old:
            name = "old"

        self.assertEqual(transportsOf(old), frozenset({"stream"}))

    def test_builtins(self) -> None:
        """
        The built-in matchers that make sense on datagrams say so.
        """
        for factory in (anyFactory, prefixFactory, regexFactory, tlsFactory):
            self.assertEqual(
                transportsOf(factory), frozenset({"stream", "datagram"}), factory
            )
