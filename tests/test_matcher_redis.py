"""
Tests of the C{redis} matcher (L{demux.matchers._redis}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers import (
    _redis,
)
from demux.matchers._redis import parseCommand, redisFactory
from demux.testing import assertConsistent, verdictOf

from ._corpus import FILES
from ._matchers_a import (
    REDIS,
    MatcherTestCase,
)


class RedisTests(MatcherTestCase):
    """
    The C{redis} matcher.
    """

    def test_corpus(self) -> None:
        """
        redis-cli's PING, HELLO and AUTH match, and only listed commands
        when there is a list, in any case.
        """
        self.assertCorpus(redisFactory, {}, REDIS)
        self.assertCorpus(
            redisFactory, {"commands": ["hello", "AUTH"]},
            {"redis-hello3-cli.bin", "redis-auth-cli.bin"},
        )
        self.assertCorpus(
            redisFactory, {"commands": "PING", "inline": True}, {"redis-ping-cli.bin"}
        )

    def test_describe(self) -> None:
        """
        The command's name.
        """
        self.assertDescribed(redisFactory, {})

    def test_early(self) -> None:
        """
        Malformed counts and lengths are refused as they arrive; the name's
        line end decides.
        """
        matcher = redisFactory.build({})
        for bad in [b"+", b"*0", b"*-1", b"*01", b"*1\r\r", b"*1\r\n:", b"*1\r\n$0",
                    b"*1\r\n$65\r\n", b"*1\r\n$4\r\n1ING", b"*1\r\n$4\r\nPI G",
                    b"*1\r\n$4\r\nPINGX", b"*12345678901", b"*3000000000\r\n"]:
            self.assertIs(matcher.match(Peek(bad)), NO_MATCH, bad)
        data = FILES["redis-ping-cli.bin"]
        self.assertIs(matcher.match(Peek(data[:-1])), NEED_MORE)
        self.assertIs(matcher.match(Peek(data)), MATCH)
        self.assertEqual(
            parseCommand(b"*2\r\n$6\r\nft.add\r\n"), _redis.Command("FT.ADD", False)
        )

    def test_inline(self) -> None:
        """
        With C{inline}, a listed command's word followed by a space or line
        end matches, in any case; HTTP's GET only if GET is listed.
        """
        matcher = redisFactory.build({"commands": ["PING", "AUTH"], "inline": True})
        for data, verdict in [
            (b"PING\r\n", MATCH),
            (b"ping\n", MATCH),
            (b"auth secret\r\n", MATCH),
            (b"PINGS\r\n", NO_MATCH),
            (b"GET / HTTP/1.1\r\n", NO_MATCH),
            (b"PIN", NEED_MORE),
        ]:
            self.assertIs(verdictOf(matcher, [data]), verdict, data)
            assertConsistent(matcher, data)
        self.assertEqual(matcher.describe(Peek(b"auth x\r\n")), "redis=AUTH form=inline")
        resp = redisFactory.build({})
        self.assertIs(resp.match(Peek(b"PING\r\n")), NO_MATCH)

    @settings(max_examples=200)
    @given(
        st.from_regex(rb"\A[A-Za-z_][A-Za-z0-9_.|:-]{0,63}\Z"),
        st.lists(st.binary(max_size=20), max_size=5),
    )
    def test_resp(self, name: bytes, arguments: list[bytes]) -> None:
        """
        Any RESP command with a command-like name is recognised with it.
        """
        items = [name, *arguments]
        data = b"*%d\r\n" % len(items) + b"".join(
            b"$%d\r\n%s\r\n" % (len(item), item) for item in items
        )
        self.assertEqual(parseCommand(data), _redis.Command(name.decode().upper(), False))

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"inline": True}, "needs a list of commands"),
            ({"commands": ["PI NG"]}, "not a Redis command name"),
            ({"commands": []}, "non-empty"),
            ({"commands": "PING", "inline": "yes"}, "inline must be true or false"),
            ({"resp": True}, "unknown option 'resp'"),
        ]:
            self.assertBuildFails(redisFactory, options, words)
