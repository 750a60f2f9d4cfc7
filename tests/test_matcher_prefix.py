"""
Tests of the C{prefix} matcher (L{demux.matchers._prefix}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import DatagramPeek, Peek
from demux.matchers._prefix import PrefixMatcher, prefixFactory
from demux.testing import assertConsistent

from ._matchers_basic import TLS, CorpusMixin

RELAY = bytes.fromhex("9e79bc40") + b"\x00\x00\x00\x02\x00\x00\x00\x00"


class PrefixTests(CorpusMixin):
    """
    The C{prefix} matcher.
    """

    def test_corpus(self) -> None:
        """
        Syncthing's relay magic is in no corpus file; C{GET } and C{SSH-}
        are in one each.
        """
        self.assertCorpus("9e79bc40", prefixFactory, set())
        self.assertCorpus({"text": "GET "}, prefixFactory, {"plain-http11.bin"})
        self.assertCorpus({"hex": "53 53 48 2d"}, prefixFactory, {"ssh-banner.bin"})
        self.assertCorpus({"hex": "16 03", "mask": "ff fc"}, prefixFactory, TLS)

    def test_magic(self) -> None:
        """
        The hex forms all mean the same bytes, and the answer needs only
        those bytes.
        """
        for written in ["9e79bc40", "9E 79 BC 40", "9e:79:bc:40", {"hex": "9e79bc40"}]:
            matcher = prefixFactory.build(written)
            self.assertIs(assertConsistent(matcher, RELAY), MATCH, written)
            self.assertIs(matcher.match(Peek(RELAY[:4])), MATCH)
            self.assertIs(matcher.match(Peek(RELAY[:3])), NEED_MORE)
            self.assertEqual(matcher.describe(Peek(RELAY)), "prefix=9e79bc40")

    def test_earlyNoMatch(self) -> None:
        """
        The first byte that differs decides.
        """
        matcher = prefixFactory.build("9e79bc40")
        self.assertIs(matcher.match(Peek(b"\x9e\x78")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x16")), NO_MATCH)

    def test_offsetAndMask(self) -> None:
        """
        With an offset the window starts later; a mask compares only its
        bits, on both sides.
        """
        matcher = prefixFactory.build({"hex": "0002", "offset": 6, "mask": "00ff"})
        self.assertIs(assertConsistent(matcher, RELAY), MATCH)
        self.assertIs(matcher.match(Peek(RELAY[:7])), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"\x00" * 6 + b"\xff\x03")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x00" * 6 + b"\xff\x02")), MATCH)
        self.assertEqual(matcher.describe(Peek(RELAY)), "prefix=0002/00ff@6")
        masked = prefixFactory.build({"hex": "ff", "mask": "0f"})
        self.assertIs(masked.match(Peek(b"\x3f")), MATCH)

    def test_text(self) -> None:
        """
        C{text} is UTF-8.
        """
        matcher = prefixFactory.build({"text": "é"})
        self.assertIs(matcher.match(Peek(b"\xc3\xa9")), MATCH)

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        cases = [
            ("9e7", "two hex digits"),
            ("9e 7 9b", "two hex digits"),
            ("zz", "hex digits"),
            ("", "two hex digits"),
            (12, "expected a table"),
            ({"hex": "ab", "text": "a"}, "exactly one of hex"),
            ({}, "exactly one of hex"),
            ({"text": ""}, "non-empty string"),
            ({"hex": "abcd", "mask": "ff"}, "same length"),
            ({"hex": "ab", "offset": -1}, "offset must be"),
            ({"hex": "ab", "offset": True}, "offset must be"),
            ({"hex": "ab", "length": 3}, "unknown option 'length'"),
        ]
        for options, words in cases:
            self.assertBuildFails(prefixFactory, options, words)


class UnmaskedTests(SynchronousTestCase):
    """
    Without a mask the bytes are compared as a whole: the same verdicts as
    comparing them under a mask of every bit, byte by byte.
    """

    @given(
        st.binary(min_size=1, max_size=6),
        st.integers(min_value=0, max_value=3),
        st.binary(max_size=12),
        st.booleans(),
    )
    @settings(max_examples=3000, deadline=None)
    def test_sameAsEveryBitMasked(
        self, value: bytes, offset: int, data: bytes, datagram: bool
    ) -> None:
        plain = PrefixMatcher.of(value, offset)
        masked = PrefixMatcher.of(value, offset, b"\xff" * len(value))
        self.assertFalse(plain.masked)
        self.assertTrue(masked.masked)
        peek = DatagramPeek([data]) if datagram else Peek(data)
        self.assertIs(plain.match(peek), masked.match(peek))
