"""
Tests of the C{syslog} matcher (L{demux.matchers._syslog}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux.matchers import (
    _syslog,
)
from demux.matchers._syslog import parsePriority, syslogFactory
from demux.testing import verdictOf

from ._matchers_a import (
    SYSLOG,
    SYSLOG_COUNTED,
    MatcherTestCase,
)


class SyslogTests(MatcherTestCase):
    """
    The C{syslog} matcher.
    """

    def test_corpus(self) -> None:
        """
        logger's RFC 5424 and RFC 3164 messages, with and without octet
        counting, match; the framing option picks one.
        """
        self.assertCorpus(syslogFactory, {}, SYSLOG)
        self.assertCorpus(syslogFactory, {"framing": "octet-counting"}, SYSLOG_COUNTED)
        self.assertCorpus(
            syslogFactory, {"framing": ["non-transparent"]}, SYSLOG - SYSLOG_COUNTED
        )

    def test_describe(self) -> None:
        """
        The priority, split, and the framing.
        """
        self.assertDescribed(syslogFactory, {})

    def test_priorities(self) -> None:
        """
        Priorities are 0 to 191 without leading zeros; counts have no
        leading zero either and announce at least a bare priority.
        """
        matcher = syslogFactory.build({})
        for data, verdict in [
            (b"<0>", MATCH),
            (b"<191>", MATCH),
            (b"<192>", NO_MATCH),
            (b"<1000", NO_MATCH),
            (b"<01>", NO_MATCH),
            (b"<>", NO_MATCH),
            (b"<a", NO_MATCH),
            (b"<?xml", NO_MATCH),
            (b"<1", NEED_MORE),
            (b"3 <0>", MATCH),
            (b"2 <0>", NO_MATCH),
            (b"07 <1>", NO_MATCH),
            (b"123456789 ", NO_MATCH),
            (b"12345678 <1>", MATCH),
            (b"12 x", NO_MATCH),
            (b"GET ", NO_MATCH),
        ]:
            self.assertIs(verdictOf(matcher, [data]), verdict, data)

    @settings(max_examples=200)
    @given(st.integers(0, 191), st.one_of(st.none(), st.integers(3, 10**8 - 1)))
    def test_generated(self, priority: int, count: int | None) -> None:
        """
        Any priority, counted or not, parses to itself.
        """
        data = b"<%d>1 - - - - - hi\n" % priority
        framing = _syslog.NON_TRANSPARENT
        if count is not None:
            data = b"%d " % count + data
            framing = _syslog.OCTET_COUNTING
        self.assertEqual(
            parsePriority(data), _syslog.Priority(priority, framing, count)
        )

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"framing": "octet-count"}, "'octet-count' is not one of"),
            ({"framing": 1}, "framing must be"),
            ({"facility": "user"}, "unknown option 'facility'"),
        ]:
            self.assertBuildFails(syslogFactory, options, words)
