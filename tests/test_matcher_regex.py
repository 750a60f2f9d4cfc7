"""
Tests of the C{regex} matcher (L{demux.matchers._regex}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers._regex import regexFactory
from demux.testing import assertConsistent

from ._matchers_basic import FILES, TLS, CorpusMixin


class RegexTests(CorpusMixin):
    """
    The C{regex} matcher.
    """

    def test_corpus(self) -> None:
        """
        Patterns for TLS, SSH and HTTP each pick out their files.
        """
        self.assertCorpus(r"^\x16\x03[\x01-\x04]", regexFactory, TLS)
        self.assertCorpus(r"SSH-2\.0-OpenSSH_\d", regexFactory, {"ssh-banner.bin"})
        self.assertCorpus(
            {"pattern": r"(?i)[a-z]+ /v2/\S* HTTP/1\.[01]\r\n"},
            regexFactory,
            {"plain-http11.bin"},
        )
        # A pattern for what comes after the request line, within the window.
        self.assertCorpus(
            {"pattern": r"Host: discovery\.", "offset": 28, "length": 16},
            regexFactory,
            {"plain-http11.bin"},
        )
        # . stops at a newline unless DOTALL; the window bounds the search.
        self.assertCorpus(r".*curl", regexFactory, set())
        self.assertCorpus({"pattern": r"(?s).*curl", "length": 32}, regexFactory, set())
        # (?s).* can always go on, so a short stream waits for the window.
        anywhere = regexFactory.build(r"(?s).*curl")
        self.assertIs(assertConsistent(anywhere, FILES["plain-http11.bin"]), MATCH)
        self.assertIs(assertConsistent(anywhere, FILES["ssh-banner.bin"]), NEED_MORE)

    def test_decidesEarly(self) -> None:
        """
        A match is taken as soon as a prefix of the window matches; a
        mismatch as soon as no continuation could match.
        """
        matcher = regexFactory.build(r"^\x16\x03")
        self.assertIs(matcher.match(Peek(b"\x16\x03")), MATCH)
        self.assertIs(matcher.match(Peek(b"\x16")), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"G")), NO_MATCH)
        loose = regexFactory.build({"pattern": "a.*b", "length": 4})
        self.assertIs(loose.match(Peek(b"axx")), NEED_MORE)
        self.assertIs(loose.match(Peek(b"axxb")), MATCH)
        self.assertIs(loose.match(Peek(b"axxx")), NO_MATCH)
        offset = regexFactory.build({"pattern": "^b", "offset": 2})
        self.assertIs(offset.match(Peek(b"a")), NEED_MORE)
        self.assertIs(offset.match(Peek(b"aab")), MATCH)
        self.assertIs(regexFactory.build("").match(Peek(b"")), MATCH)
        self.assertIs(regexFactory.build("[^\\x00-\\xff]").match(Peek(b"")), NO_MATCH)

    def test_latin1(self) -> None:
        """
        The pattern's characters are bytes: an escape and a literal byte
        mean the same.
        """
        for pattern in ["\\xe9", "\xe9"]:
            matcher = regexFactory.build(pattern)
            self.assertIs(matcher.match(Peek(b"\xe9")), MATCH, pattern)
            self.assertIs(matcher.match(Peek(b"\xc3")), NO_MATCH, pattern)

    def test_describe(self) -> None:
        """
        The log names the pattern as written.
        """
        matcher = regexFactory.build(r"^\x16\x03")
        self.assertEqual(matcher.describe(Peek(b"\x16\x03")), r"regex=^\x16\x03")

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it; constructs whose answer could
        change as bytes arrive are refused with the reason.
        """
        cases = [
            ("(", "not a valid regular expression: missing )"),
            ("a$", "$ is not supported"),
            (r"a\Z", "\\Z is not supported"),
            (r"a\b", "\\b is not supported"),
            ("a(?=b)", "look-ahead"),
            ("(?<=a)b", "look-ahead and look-behind"),
            (r"(a)\1", "back-references"),
            ("(?>a)", "atomic groups"),
            ("a*+", "possessive repeats"),
            ("(?m)^a", "MULTILINE"),
            ("(?L)a", "LOCALE"),
            ("a{10000}b{10000}c{10000}", "too large"),
            ("\u20ac", "above \\xff"),
            ({"pattern": 1}, "pattern must be given as a string"),
            ({}, "pattern must be given as a string"),
            ({"pattern": "a", "length": 0}, "at least 1"),
            ({"pattern": "a", "offset": "1"}, "offset must be"),
            ({"pattern": "a", "size": 1}, "unknown option 'size'"),
        ]
        for options, words in cases:
            self.assertBuildFails(regexFactory, options, words)


# Patterns in the supported subset, over a small alphabet so that random
# data often matches.
PATTERNS = [
    "ab",
    "a|b",
    "a*b",
    "(ab)+c",
    "a.?b",
    "[ab]{2,3}c",
    "^a(b|cd)*?e",
    "(?i)AB",
    "[^a]b",
    "\\x00\\d\\s",
    "(a|ab)(c|bcd)",
    "a{0}",
    "(?s:.)b",
]


class RegexPropertyTests(SynchronousTestCase):
    """
    The C{regex} matcher agrees with C{re.match}.
    """

    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(PATTERNS),
        st.binary(max_size=12).map(lambda b: bytes(b"abcde\x00 1\n"[x % 9] for x in b)),
        st.integers(1, 10),
    )
    def test_agreesWithRe(self, pattern: str, data: bytes, length: int) -> None:
        """
        It says L{MATCH} exactly when C{re.match} matches the window so far;
        L{NO_MATCH} only when the window is full or no continuation of it
        can match; and its answer does not depend on how bytes arrive.
        """
        matcher = regexFactory.build({"pattern": pattern, "length": length})
        compiled = re.compile(pattern.encode("iso-8859-1"))
        window = data[:length]
        verdict = assertConsistent(matcher, data)
        self.assertEqual(verdict is MATCH, compiled.match(window) is not None)
        if verdict is NO_MATCH and len(window) < length:
            for tail in [b"a", b"b", b"c", b"e", b"ab", b"bcd", b"abc", b"\x00", b"1 "]:
                self.assertIsNone(compiled.match(window + tail), tail)
        if verdict is NEED_MORE:
            self.assertLess(len(window), length)
