"""
Tests of L{demux.matchers._options}: the option readers matchers share.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux.matchers._options import logSafe


class LogSafeTests(SynchronousTestCase):
    """
    L{logSafe}: what a client sent, made safe for one field of a log line.
    """

    def test_escapes(self) -> None:
        self.assertEqual(logSafe("relay.example.com"), "relay.example.com")
        self.assertEqual(logSafe("a b,c\\d"), "a\\x20b\\x2cc\\x5cd")
        self.assertEqual(logSafe("é\n"), "\\xe9\\x0a")
        self.assertEqual(logSafe(""), "")

    @settings(max_examples=500, deadline=None)
    @given(st.text())
    def test_sameAsEscapingEachCharacter(self, text: str) -> None:
        """
        The quick path for plain names gives what escaping one character at
        a time gives, for any text.
        """
        escaped = "".join(
            c if c.isascii() and c.isprintable() and c not in " ,\\" else f"\\x{ord(c):02x}"
            for c in text
        )
        self.assertEqual(logSafe(text), escaped)
