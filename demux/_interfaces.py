"""
The contracts between the parts of demux.

A matcher is a pure function of the bytes a client has sent so far; a matcher
factory builds one from the value a user wrote under C{match.NAME} in the
configuration; a target is what a decided connection is handed to, with the
L{ConnectionInfo} that says whose it is.

The verdicts a matcher answers with are named here too; they are made in
L{demux._verdict}, below the parsers and L{Peek} that speak them as well, so
that the contracts can name the types of their arguments without an import
coming back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from attrs import field, frozen
from twisted.internet.interfaces import IAddress, IReactorTime
from zope.interface import Attribute, Interface

from ._clienthello import ClientHello, parseClientHello
from ._httphead import RequestHead, parseRequestHead
from ._log import Decided
from ._observer import IConnectionObserver, NullObserver
from ._peek import Peek
from ._proxyheader import ProxyInfo
from ._verdict import MATCH as MATCH
from ._verdict import NEED_MORE as NEED_MORE
from ._verdict import NO_MATCH as NO_MATCH
from ._verdict import Verdict as Verdict

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport
    from twisted.internet.protocol import Protocol


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


@frozen
class ConnectionInfo:
    """
    What a target is told about a connection it takes over: who the client
    is, as one value that every target, log line and metric reads.

    What the peek learned (L{sni}, L{alpn}, L{httpHost}, L{authority}) is
    computed only when a target asks, from the parses the matchers already
    share on L{peek}: a connection whose target asks nothing pays nothing.

    @ivar clock: the reactor's clock, for the target's timers.
    @ivar peer: the client's address (as a PROXY header gave it, on a
        listener that expects one).
    @ivar host: the address the client connected to, likewise.
    @ivar route: the name of the route the connection took.
    @ivar observer: told what happens to the connection (metrics).
    @ivar logConnections: whether to log a line when the connection ends.
    @ivar peek: the bytes the connection was decided on (after any PROXY
        header), with their shared parses.
    @ivar decided: how the connection was routed, for the target to log
        when the connection ends, if the decision had no line of its own
        (unless C{log_decisions = true}); L{None} otherwise.
    @ivar proxyHeader: the PROXY header the connection started with, on a
        listener that expects one (its raw bytes are C{proxyHeader.header},
        for passing it on); L{None} on other listeners.
    """

    clock: IReactorTime
    peer: IAddress
    host: IAddress | None
    route: str
    observer: IConnectionObserver = field(factory=NullObserver)
    logConnections: bool = True
    peek: Peek = field(factory=Peek, eq=False, repr=False)
    proxyHeader: ProxyInfo | None = None
    decided: Decided | None = None

    @property
    def clientHello(self) -> ClientHello | None:
        """
        The TLS ClientHello the connection started with, if it did.
        """
        hello = self.peek.parse(parseClientHello)
        return hello if isinstance(hello, ClientHello) else None

    @property
    def sni(self) -> str | None:
        """
        The server name the client asked for in its ClientHello, if any.
        """
        hello = self.clientHello
        return hello.serverName if hello is not None else None

    @property
    def alpn(self) -> tuple[str, ...]:
        """
        The ALPN protocols the ClientHello offered, in the client's order
        (latin-1, so that C{encode("latin-1")} gives the wire bytes).
        """
        hello = self.clientHello
        return hello.alpn if hello is not None else ()

    @property
    def httpHost(self) -> str | None:
        """
        The host (without a port, lowercased) of the HTTP/1.x request the
        connection started with, if its head was all in the peek.
        """
        head = self.peek.parse(parseRequestHead)
        return head.host if isinstance(head, RequestHead) else None

    @property
    def authority(self) -> str | None:
        """
        The name the client was trying to reach: its SNI, or else its HTTP
        host; what PROXY v2's C{PP2_TYPE_AUTHORITY} carries.
        """
        return self.sni or self.httpHost


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
