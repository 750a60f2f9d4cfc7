"""
The Syncthing presets C{bep}, C{relay-protocol} and C{relay-session}: names
for what a Syncthing configuration means, built from the C{tls} and
C{prefix} matchers rather than parsing anything again.

  - C{bep}: a device connecting to another for the Block Exchange Protocol,
    which is TLS offering the ALPN protocol C{bep/1.0}.
  - C{relay-protocol}: a device talking to a relay's protocol port, which is
    TLS offering C{bep-relay} (with or without a server name).
  - C{relay-session}: a device joining a relayed session, which sends relay
    protocol messages in the clear, each starting with the magic
    C{0x9E79BC40}.
"""

from __future__ import annotations

from attrs import frozen
from zope.interface import implementer, provider

from .._interfaces import IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import noOptions
from ._prefix import PrefixMatcher
from ._tls import tlsFactory

BEP_ALPN = "bep/1.0"
"""
The ALPN protocol name of Syncthing's Block Exchange Protocol.
"""

RELAY_ALPN = "bep-relay"
"""
The ALPN protocol name of the relay protocol's protocol mode.
"""

RELAY_MAGIC = bytes.fromhex("9e79bc40")
"""
The magic that starts every relay protocol message.
"""


@implementer(IMatcher)
@frozen
class PresetMatcher:
    """
    Another matcher under a name of its own, so the log says what matched
    in the preset's words.

    @ivar name: the preset's name, first in L{describe}.
    @ivar matcher: the matcher that decides.
    """

    name: str
    matcher: IMatcher

    def match(self, peek: Peek) -> Verdict:
        return self.matcher.match(peek)

    def describe(self, peek: Peek) -> str:
        return f"{self.name} {self.matcher.describe(peek)}"


@provider(IMatcherFactory)
class bepFactory:
    """
    C{match.bep = {}}: a Syncthing device's BEP connection.
    """

    name = "bep"
    summary = "Matches Syncthing's Block Exchange Protocol (TLS with ALPN bep/1.0)."

    @staticmethod
    def build(options: object) -> IMatcher:
        noOptions(options)
        return PresetMatcher(bepFactory.name, tlsFactory.build({"alpn": [BEP_ALPN]}))


@provider(IMatcherFactory)
class relayProtocolFactory:
    """
    C{match.relay-protocol = {}}: a Syncthing device on a relay's protocol
    port.
    """

    name = "relay-protocol"
    summary = "Matches a Syncthing relay's protocol mode (TLS with ALPN bep-relay)."

    @staticmethod
    def build(options: object) -> IMatcher:
        noOptions(options)
        return PresetMatcher(
            relayProtocolFactory.name, tlsFactory.build({"alpn": [RELAY_ALPN]})
        )


@provider(IMatcherFactory)
class relaySessionFactory:
    """
    C{match.relay-session = {}}: a Syncthing device joining a relayed
    session.
    """

    name = "relay-session"
    summary = "Matches a Syncthing relay session (the relay magic 9e79bc40)."

    @staticmethod
    def build(options: object) -> IMatcher:
        noOptions(options)
        return PresetMatcher(relaySessionFactory.name, PrefixMatcher.of(RELAY_MAGIC))
