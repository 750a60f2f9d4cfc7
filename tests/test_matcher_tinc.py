"""
Tests of the C{tinc} matcher (L{demux.matchers._tinc}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers._tinc import MAX_LINE, IDRequest, parseIDRequest, tincFactory
from demux.testing import assertConsistent

from ._corpus import FILES, MatcherTestCase

TINC_FILE = "tincd-id.bin"


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
