"""
Tests of the C{socks} matcher (L{demux.matchers._socks}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers import (
    _socks,
)
from demux.matchers._socks import parseGreeting, socksFactory

from ._matchers_a import (
    SOCKS4,
    SOCKS5,
    MatcherTestCase,
)

socks4Names = st.binary(max_size=_socks.MAX_NAME).filter(
    lambda b: all(0x20 <= c <= 0x7E for c in b)
)


class SOCKSTests(MatcherTestCase):
    """
    The C{socks} matcher.
    """

    def test_corpus(self) -> None:
        """
        curl's SOCKS4, SOCKS4a and SOCKS5 first messages match, each only
        when its version is allowed.
        """
        self.assertCorpus(socksFactory, {}, SOCKS4 | SOCKS5)
        self.assertCorpus(socksFactory, {"versions": [4, 5]}, SOCKS4 | SOCKS5)
        self.assertCorpus(socksFactory, {"versions": 4}, SOCKS4)
        self.assertCorpus(socksFactory, {"versions": [5]}, SOCKS5)

    def test_describe(self) -> None:
        """
        The version, and the command or the methods offered.
        """
        self.assertDescribed(socksFactory, {})

    def test_early(self) -> None:
        """
        A first byte other than 4 or 5 is refused at once, a SOCKS4
        command other than CONNECT or BIND on the second byte, an empty or
        unassigned method list as soon as it shows.
        """
        matcher = socksFactory.build({})
        for data in [b"\x16", b"G", b"\x04\x03", b"\x05\x00", b"\x05\x02\xff", b"\x05\x01\x0a"]:
            self.assertIs(matcher.match(Peek(data)), NO_MATCH, data)
        for data in [b"", b"\x04\x01", b"\x05\x02\x00", b"\x04\x01\x00\x50\x01\x02\x03\x04ab"]:
            self.assertIs(matcher.match(Peek(data)), NEED_MORE, data)
        self.assertIs(matcher.match(Peek(b"\x05\x01\x80")), MATCH)
        self.assertIs(matcher.match(Peek(b"\x04\x01\x00\x50\x01\x02\x03\x04a\nb\x00")), NO_MATCH)
        empty4a = b"\x04\x01\x00\x50\x00\x00\x00\x07\x00\x00"
        self.assertIs(matcher.match(Peek(empty4a)), NO_MATCH)

    @settings(max_examples=200)
    @given(
        st.sampled_from([1, 2]),
        st.integers(0, 0xFFFF),
        st.binary(min_size=4, max_size=4),
        socks4Names,
        st.one_of(st.none(), socks4Names.filter(bool)),
    )
    def test_socks4(
        self, command: int, port: int, address: bytes, user: bytes, host: bytes | None
    ) -> None:
        """
        Any SOCKS4 or SOCKS4a request is recognised, with its command, and
        needs all of its bytes.
        """
        if host is not None:
            address = b"\x00\x00\x00\x2a"
        elif address[:3] == b"\x00\x00\x00" and address[3]:
            address = b"\x7f\x00\x00\x01"
        data = struct.pack(">BBH", 4, command, port) + address + user + b"\x00"
        if host is not None:
            data += host + b"\x00"
        expected = _socks.Greeting(
            "4" if host is None else "4a", "connect" if command == 1 else "bind"
        )
        self.assertEqual(parseGreeting(data), expected)
        self.assertIs(parseGreeting(data[:-1]), NEED_MORE)

    @settings(max_examples=200)
    @given(st.lists(st.sampled_from([*range(10), *range(0x80, 0xFF)]), min_size=1, max_size=255))
    def test_socks5(self, methods: list[int]) -> None:
        """
        Any SOCKS5 greeting with assigned or private methods is recognised
        once all its methods are in.
        """
        data = bytes([5, len(methods), *methods])
        matcher = socksFactory.build({})
        self.assertIs(matcher.match(Peek(data)), MATCH)
        self.assertIs(matcher.match(Peek(data[:-1])), NEED_MORE)

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"versions": [4, 6]}, "6 is not one of 4, 5"),
            ({"versions": ["5"]}, "must be a number"),
            ({"versions": []}, "non-empty list"),
            ({"auth": True}, "unknown option 'auth'"),
        ]:
            self.assertBuildFails(socksFactory, options, words)
