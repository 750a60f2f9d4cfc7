"""
Tests of the C{adb} matcher (L{demux.matchers._adb}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers._adb import HEADER, ADBHeader, adbFactory, parseADBHeader
from demux.testing import assertConsistent

from ._corpus import FILES, MatcherTestCase

ADB_FILE = "adb-cnxn.bin"


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
