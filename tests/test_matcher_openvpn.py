"""
Tests of the C{openvpn} matcher (L{demux.matchers._openvpn}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

import struct

from demux._interfaces import NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers import (
    _openvpn,
)
from demux.matchers._openvpn import openvpnFactory, parseHardReset

from ._corpus import FILES
from ._matchers_a import (
    OPENVPN,
    MatcherTestCase,
)


class OpenVPNTests(MatcherTestCase):
    """
    The C{openvpn} matcher.
    """

    def test_corpus(self) -> None:
        """
        The real client's hard resets, unwrapped, with tls-auth, tls-crypt
        and tls-crypt-v2, match; nothing else does.
        """
        self.assertCorpus(openvpnFactory, {}, OPENVPN)
        self.assertCorpus(openvpnFactory, {"versions": [2, 3]}, OPENVPN)
        self.assertCorpus(
            openvpnFactory, {"versions": 3}, {"openvpn-tcp-tls-crypt-v2.bin"}
        )
        self.assertCorpus(openvpnFactory, {"versions": [1]}, set())

    def test_describe(self) -> None:
        """
        The version and the control channel's wrapping.
        """
        self.assertDescribed(openvpnFactory, {})

    def test_earlyNoMatch(self) -> None:
        """
        A wrong length or opcode is refused within three bytes.
        """
        matcher = openvpnFactory.build({})
        self.assertIs(matcher.match(Peek(b"\x00")), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"\x00\x0d")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x16\x03")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x00\x0e\x39")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x00\x0e\x20")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x00\x0e\x38")), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"\x00\x0e\x50")), NO_MATCH)
        v2only = openvpnFactory.build({"versions": 2})
        self.assertIs(v2only.match(Peek(b"\x00\x0e\x08")), NO_MATCH)

    def test_shapes(self) -> None:
        """
        Each wrapping's packet shape is checked: an unwrapped reset must
        acknowledge nothing and be message 0; a tls-auth one must have a
        fresh replay id after its HMAC.
        """
        session = bytes(range(1, 9))
        plain = b"\x38" + session + b"\x00" + b"\x00" * 4
        self.assertEqual(
            parseHardReset(struct.pack(">H", len(plain)) + plain),
            _openvpn.HardReset(2, "none", 14),
        )
        v1 = b"\x08" + plain[1:]
        self.assertEqual(
            parseHardReset(struct.pack(">H", len(v1)) + v1),
            _openvpn.HardReset(1, "none", 14),
        )
        acking = b"\x38" + session + b"\x01" + b"\x00" * 12
        self.assertIs(parseHardReset(struct.pack(">H", len(acking)) + acking), NO_MATCH)
        for size in _openvpn.HMAC_SIZES:
            auth = b"\x38" + session + b"\xaa" * size + b"\x00\x00\x00\x01"
            auth += b"\x6b\x00\x00\x00" + b"\x00" * 5
            found = parseHardReset(struct.pack(">H", len(auth)) + auth)
            self.assertEqual(found, _openvpn.HardReset(2, "tls-auth", len(auth)))
            stale = auth.replace(b"\x00\x00\x00\x01\x6b", b"\x00\x01\x00\x01\x6b")
            self.assertIs(parseHardReset(struct.pack(">H", len(stale)) + stale), NO_MATCH)
        v3 = FILES["openvpn-tcp-tls-crypt-v2.bin"]
        badKeyLength = v3[:-2] + b"\xff\xff"
        self.assertIs(parseHardReset(badKeyLength), NO_MATCH)

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"versions": []}, "non-empty list"),
            ({"versions": [4]}, "4 is not one of 1, 2, 3"),
            ({"versions": "2"}, "must be a number"),
            ({"versions": [True]}, "must be a number"),
            ({"version": 2}, "unknown option 'version'"),
            ("tcp", "expected a table"),
        ]:
            self.assertBuildFails(openvpnFactory, options, words)
