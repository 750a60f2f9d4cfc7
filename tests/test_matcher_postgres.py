"""
Tests of the C{postgres} matcher (L{demux.matchers._postgres}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers import (
    _postgres,
)
from demux.matchers._postgres import Startup, parseStartup, postgresFactory
from demux.testing import assertConsistent

from ._corpus import FILES
from ._matchers_a import (
    POSTGRES,
    POSTGRES_GSSENC,
    POSTGRES_SSL,
    POSTGRES_STARTUP,
    MatcherTestCase,
)


def startupMessage(parameters: list[tuple[bytes, bytes]], version: int = 196608) -> bytes:
    body = b"".join(k + b"\x00" + v + b"\x00" for k, v in parameters) + b"\x00"
    return struct.pack(">II", 8 + len(body), version) + body


class PostgresTests(MatcherTestCase):
    """
    The C{postgres} matcher.
    """

    def test_corpus(self) -> None:
        """
        psql's SSLRequest, GSSENCRequest and StartupMessage match, each
        when its kind is allowed; database and user filters see only the
        cleartext StartupMessage.
        """
        self.assertCorpus(postgresFactory, {}, POSTGRES)
        self.assertCorpus(postgresFactory, {"requests": "ssl"}, POSTGRES_SSL)
        self.assertCorpus(postgresFactory, {"requests": ["gssenc"]}, POSTGRES_GSSENC)
        self.assertCorpus(
            postgresFactory, {"requests": ["startup", "cancel"]}, POSTGRES_STARTUP
        )
        self.assertCorpus(postgresFactory, {"database": "inventory"}, POSTGRES_STARTUP)
        self.assertCorpus(
            postgresFactory, {"database": ["a", "inventory"], "user": "alice"},
            POSTGRES_STARTUP,
        )
        self.assertCorpus(postgresFactory, {"user": "bob"}, set())
        self.assertCorpus(postgresFactory, {"database": "Inventory"}, set())

    def test_describe(self) -> None:
        """
        The kind of request, and a StartupMessage's user and database.
        """
        self.assertDescribed(postgresFactory, {})

    def test_decidesOnEightBytes(self) -> None:
        """
        Without filters, eight bytes decide; with them, the whole message.
        """
        data = FILES["postgres-startup-psql.bin"]
        plain = postgresFactory.build({})
        self.assertIs(plain.match(Peek(data[:7])), NEED_MORE)
        self.assertIs(plain.match(Peek(data[:8])), MATCH)
        filtered = postgresFactory.build({"user": "alice"})
        self.assertIs(filtered.match(Peek(data[:-1])), NEED_MORE)
        self.assertIs(filtered.match(Peek(data)), MATCH)
        self.assertIs(plain.match(Peek(b"\x01")), NO_MATCH)
        self.assertIs(plain.match(Peek(b"\x00\x00\x00\x07")), NO_MATCH)
        self.assertIs(plain.match(Peek(b"\x00\x00\x27\x11")), NO_MATCH)

    def test_cancelAndDefaultDatabase(self) -> None:
        """
        A CancelRequest matches (4-byte keys and protocol 3.2's longer ones);
        a StartupMessage without a database is for the user's namesake.
        """
        cancel = struct.pack(">III", 16, _postgres.CANCEL_REQUEST_CODE, 42) + b"k" * 4
        self.assertIs(assertConsistent(postgresFactory.build({}), cancel), MATCH)
        self.assertEqual(
            postgresFactory.build({}).describe(Peek(cancel)), "postgres=cancel-request"
        )
        long32 = struct.pack(">III", 44, _postgres.CANCEL_REQUEST_CODE, 42) + b"k" * 32
        self.assertIs(postgresFactory.build({}).match(Peek(long32)), MATCH)
        noDatabase = startupMessage([(b"user", b"inventory")])
        matcher = postgresFactory.build({"database": "inventory"})
        self.assertIs(assertConsistent(matcher, noDatabase), MATCH)

    def test_malformedStartup(self) -> None:
        """
        A StartupMessage without a user, with an empty name, or whose
        terminator is not at its end, is no StartupMessage.
        """
        for data in [
            startupMessage([(b"database", b"x")]),
            startupMessage([(b"user", b"a"), (b"", b"x")]),
            startupMessage([(b"user", b"a")])[:-1] + b"x",
            struct.pack(">II", 17, 196608) + b"user\x00a\x00\x00\x00\x00",
            startupMessage([(b"user", b"a")], version=0x00020000),
        ]:
            self.assertIs(parseStartup(data), NO_MATCH, data)

    @settings(max_examples=200)
    @given(
        st.dictionaries(
            st.text(st.characters(min_codepoint=1, max_codepoint=0x7F), min_size=1, max_size=20),
            st.text(st.characters(min_codepoint=1, blacklist_categories=("Cs",)), max_size=30),
            max_size=6,
        ),
        st.text(st.characters(min_codepoint=1, blacklist_categories=("Cs",)), min_size=1, max_size=20),
        st.integers(0, 2),
    )
    def test_startupParameters(self, extra: dict[str, str], user: str, minor: int) -> None:
        """
        Any well-formed StartupMessage parses to its parameters, in order.
        """
        extra.pop("user", None)
        parameters = [("user", user), *extra.items()]
        data = startupMessage(
            [(k.encode(), v.encode()) for k, v in parameters], 196608 + minor
        )
        found = parseStartup(data)
        self.assertEqual(found, Startup(f"3.{minor}", tuple(parameters)))
        self.assertIs(parseStartup(data[:-1]), NEED_MORE)

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"requests": ["tls"]}, "'tls' is not one of"),
            ({"requests": []}, "non-empty"),
            ({"database": 5}, "database must be"),
            ({"user": ""}, "user must be"),
            ({"user": "a", "requests": ["ssl", "startup"]}, "cleartext StartupMessage"),
            ({"ssl": True}, "unknown option 'ssl'"),
        ]:
            self.assertBuildFails(postgresFactory, options, words)
