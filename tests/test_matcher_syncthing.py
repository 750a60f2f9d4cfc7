"""
Tests of the C{syncthing} matcher (L{demux.matchers._syncthing}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

from demux._interfaces import MATCH, NEED_MORE
from demux._peek import Peek
from demux.matchers._syncthing import (
    RELAY_MAGIC,
    bepFactory,
    relayProtocolFactory,
    relaySessionFactory,
)
from demux.testing import assertConsistent

from ._corpus import FILES, MatcherTestCase

BEP_FILE = "python-ssl-sni-alpn.bin"


RELAY_FILE = "openssl-nosni-alpn-bep-relay.bin"


TLS_FILES = {
    name for name, data in FILES.items() if data[:1] == b"\x16" and data[1:2] == b"\x03"
}


class SyncthingPresetTests(MatcherTestCase):
    """
    C{bep}, C{relay-protocol} and C{relay-session}.
    """

    def test_bep(self) -> None:
        """
        Only the hello offering C{bep/1.0} is BEP.
        """
        self.assertIn(BEP_FILE, TLS_FILES)
        self.assertCorpus(bepFactory, {}, {BEP_FILE})
        self.assertEqual(
            bepFactory.build({}).describe(Peek(FILES[BEP_FILE])),
            "bep sni=device.example.net alpn=bep/1.0",
        )

    def test_relayProtocol(self) -> None:
        """
        Only the hello offering C{bep-relay} is the relay protocol, and a
        server name would not change that.
        """
        self.assertCorpus(relayProtocolFactory, {}, {RELAY_FILE})
        self.assertEqual(
            relayProtocolFactory.build({}).describe(Peek(FILES[RELAY_FILE])),
            "relay-protocol sni=- alpn=bep-relay",
        )

    def test_relaySession(self) -> None:
        """
        The relay magic decides after four bytes; no corpus file has it.
        """
        self.assertCorpus(relaySessionFactory, {}, set())
        matcher = relaySessionFactory.build({})
        join = RELAY_MAGIC + b"\x00\x00\x00\x03\x00\x00\x00\x0c" + b"\x00" * 12
        self.assertIs(assertConsistent(matcher, join), MATCH)
        self.assertIs(matcher.match(Peek(RELAY_MAGIC[:3])), NEED_MORE)
        self.assertIs(matcher.match(Peek(RELAY_MAGIC)), MATCH)
        self.assertEqual(matcher.describe(Peek(join)), "relay-session prefix=9e79bc40")

    def test_configErrors(self) -> None:
        """
        The presets take no options: they are what they say.
        """
        for factory in (bepFactory, relayProtocolFactory, relaySessionFactory):
            self.assertBuildFails(factory, {"alpn": ["h2"]}, "takes no options")
