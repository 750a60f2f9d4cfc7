"""
Tests of the C{rdp} matcher (L{demux.matchers._rdp}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers._rdp import (
    MAX_REQUEST,
    ConnectionRequest,
    parseConnectionRequest,
    rdpFactory,
)
from demux.testing import assertConsistent

from ._corpus import FILES, MatcherTestCase

RDP_FILE = "xfreerdp-cr.bin"


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
