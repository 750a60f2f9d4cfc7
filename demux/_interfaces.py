"""
The contracts between the parts of demux.

A matcher is a pure function of the bytes a client has sent so far; a matcher
factory builds one from the value a user wrote under C{match.NAME} in the
configuration; a target is what a decided connection is handed to.

The verdicts a matcher answers with are named here too; they are made in
L{demux._verdict}, below the parsers and L{Peek} that speak them as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from zope.interface import Attribute, Interface

from ._verdict import MATCH as MATCH
from ._verdict import NEED_MORE as NEED_MORE
from ._verdict import NO_MATCH as NO_MATCH
from ._verdict import Verdict as Verdict

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport
    from twisted.internet.protocol import Protocol

    from ._peek import Peek
    from ._routes import ConnectionInfo


class IMatcher(Interface):
    """
    Recognises a protocol, and maybe a detail of it, from a connection's first
    bytes.

    A matcher does no I/O, reads no clock, keeps no state between calls and
    never raises for malformed input (that is L{NO_MATCH}); this is what lets
    every matcher be tested with plain bytes and shared between connections.
    """

    def match(peek: Peek) -> Verdict:
        """
        Judge the bytes seen so far.

        L{NEED_MORE} is allowed only while more bytes could change the answer;
        the same prefix must always get the same answer, however it arrived.
        """

    def describe(peek: Peek) -> str:
        """
        Why this matcher said L{MATCH} for C{peek}, for the log: a short
        C{key=value} text such as C{"sni=discovery.example.com"}.

        Only called after L{match} returned L{MATCH} for the same C{peek}.
        """


class IMatcherFactory(Interface):
    """
    A named, configurable kind of matcher: what a plugin provides.

    Built-in matchers and third-party ones are found the same way, as objects
    providing this interface named in the C{demux.matchers} entry-point group.

    A factory may also have a C{transports} attribute, a C{frozenset} of
    L{STREAM} and L{DATAGRAM}, saying whether its matchers judge stream
    connections (a L{demux.Peek}), datagram flows (a L{demux.DatagramPeek}),
    or both; it is optional, and absent means streams only, so plugins
    written before datagram listeners existed keep working unchanged.  Read
    it with L{transportsOf}.
    """

    name = Attribute(
        "The matcher's name: the key under C{match} in a route (C{str}). It "
        "must equal the entry point's name."
    )
    summary = Attribute("One line saying what the matcher recognises (C{str}).")

    def build(options: object) -> IMatcher:
        """
        Make a matcher from the value written in the configuration.

        C{options} is what TOML gave for C{match.NAME}: usually a C{dict}, and
        C{{}} or C{True} for a matcher without options; a factory may accept
        a shorter form (a string or a list) where that reads better.

        @raise demux.MatcherConfigError: with one sentence saying what is
            wrong with C{options}; the caller adds where it was written.
        """


STREAM: Final = "stream"
"""A L{IMatcherFactory.transports} value: judges stream connections."""

DATAGRAM: Final = "datagram"
"""A L{IMatcherFactory.transports} value: judges datagram flows."""

BOTH_TRANSPORTS: Final = frozenset({STREAM, DATAGRAM})
"""The C{transports} of a matcher that judges streams and datagrams."""

DATAGRAM_ONLY: Final = frozenset({DATAGRAM})
"""The C{transports} of a matcher of datagram flows only."""


def transportsOf(factory: object) -> frozenset[str]:
    """
    The transports a matcher factory's matchers judge: its C{transports}
    attribute, or C{{"stream"}} for a factory that has none.
    """
    transports = getattr(factory, "transports", None)
    if transports is None:
        return frozenset({STREAM})
    return frozenset(transports)


class ITarget(Interface):
    """
    Where a decided connection goes: a backend to relay to, or an in-process
    protocol.
    """

    description = Attribute("A short text naming the target for logs (C{str}).")

    def handOff(
        transport: ITransport,
        peeked: bytes,
        connection: ConnectionInfo,
    ) -> Protocol:
        """
        Take over a connection whose first bytes were C{peeked}.

        C{transport} may have read nothing beyond C{peeked} yet; the target
        must deliver C{peeked} before anything later.  It returns the protocol
        that from now on gets the connection's events (C{dataReceived},
        C{connectionLost} and, if it provides it, C{IHalfCloseableProtocol}).
        C{connection} says who the client is, which route it took, and whom
        to tell what happens to it.
        """
