"""
Every use of Twisted's private names, in one module.

demux reaches under Twisted's public API in a few places, each for a
measured reason (see C{docs/performance.rst}) or because no public API
exists:

  - a TCP transport's buffers and write-side state (C{dataBuffer},
    C{offset}, C{_tempDataBuffer}, C{_tempDataLen}, C{_writeDisconnecting},
    C{_writeDisconnected}, C{_closeWriteConnection()}): to write to an
    idle socket at once, to shut its sending side without waiting a reactor
    turn, and to take unsent bytes over when a connection moves to the
    splice relay;
  - a transport's C{doRead}/C{doWrite}, replaced on the instance while the
    splice relay drives its socket, and its C{connectionLost}, called once
    the relay gives the socket back, so that a spliced connection ends
    through the same code as any other;
  - C{tcp.Server}'s constructor, its C{repstr} and C{_shouldShutdown}: to
    make a backend's transport from the socket that was dialled (what
    C{adoptStreamConnection} does, less a C{dup()}, a C{getpeername()}, a
    C{getsockname()} and a C{close()}), and to close a socket already shut
    both ways without shutting it down a second time;
  - C{TCP4ClientEndpoint}'s C{_reactor}, C{_host}, C{_port} and
    C{_bindAddress}: read once, when the configuration loads, to dial a
    backend without the endpoint's wrapping protocol and Deferreds;
  - C{endpoints._parseServer} and C{_SystemdParser._sddaemon}: to check a
    C{systemd:} listen string's syntax, and to see what systemd passed;
  - C{StreamServerEndpointService._raiseSynchronously} and
    C{._waitingForPort}: to stop start-up on a port that cannot be had, and
    to learn the port that was had;
  - C{reactor._exitSignal}: so that a stop asked for with SIGTERM exits 0;
  - C{twistd._SomeApplicationRunner} (its public C{loggerFactory}) and
    C{AppLogger._getLogObserver}: to have twistd's own code make the log
    observer its options ask for, given a faster formatter
    (L{demux._textlog}).

No other module of demux names a private attribute of a Twisted object.
L{INTERNALS} lists them all, and C{tests/test_twisted_internals.py} checks
each against the installed Twisted, failing with the names that are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import address, tcp
from twisted.internet.abstract import isIPAddress as isIPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    _parseServer,
    _SystemdParser,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolFactory
from twisted.python.failure import Failure

INTERNALS: dict[str, tuple[str, ...]] = {
    "twisted.internet.tcp.Connection": (
        "TLS",
        "socket",
        "connected",
        "disconnecting",
        "disconnected",
        "dataBuffer",
        "offset",
        "_tempDataBuffer",
        "_tempDataLen",
        "_writeDisconnecting",
        "_writeDisconnected",
        "_closeWriteConnection",
        "doRead",
        "doWrite",
        "connectionLost",
    ),
    "twisted.internet.tcp.Server": ("repstr", "_shouldShutdown"),
    "twisted.internet.endpoints.TCP4ClientEndpoint": (
        "_reactor",
        "_host",
        "_port",
        "_bindAddress",
    ),
    "twisted.internet.endpoints": ("_parseServer", "_SystemdParser"),
    "twisted.internet.endpoints._SystemdParser": ("_sddaemon",),
    "twisted.application.internet.StreamServerEndpointService": (
        "_raiseSynchronously",
        "_waitingForPort",
    ),
    "twisted.internet.base.ReactorBase": ("_exitSignal",),
    "twisted.scripts.twistd": ("_SomeApplicationRunner",),
    "twisted.application.app.AppLogger": ("_getLogObserver",),
}
"""
The private (and semi-private) names demux uses, by the Twisted class or
module that has them: instance attributes are checked on an instance.
"""


# Transports.


def plainSocket(transport: Any) -> bool:
    """
    Whether C{transport} is Twisted's own transport of a socket (TCP or
    UNIX), with no TLS layered on it, so that its socket may be used
    directly: sent to at once, or spliced.
    """
    return isinstance(transport, tcp.Connection) and not transport.TLS


def idleSocket(transport: Any) -> bool:
    """
    Whether C{transport} is a plain socket transport that is connected, open
    for writing and has nothing waiting in its buffer: what it is given now
    may go straight to its socket without overtaking anything.
    """
    # plainSocket's test, written out: this is on the path of every write.
    return bool(
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and transport.connected
    )


def writeThrough(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it at once when nothing waits in
    the transport's buffer (Twisted would send it on the reactor's next
    turn, at the cost of a turn and two epoll changes per message).  Order
    is kept; anything unsent, and any error, is left to the transport.
    """
    if idleSocket(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def loseWriteThrough(transport: Any) -> None:
    """
    Shut down C{transport}'s sending side, at once when nothing waits in its
    buffer, doing what the reactor's next turn would do, in its order: mark
    the writing side closed, shut the socket down, tell the protocol.
    """
    if idleSocket(transport):
        transport._writeDisconnecting = True
        transport._writeDisconnected = True
        transport._closeWriteConnection()
        return
    transport.loseWriteConnection()


def pending(transport: Any) -> bytes:
    """
    What C{transport} was given to write and has not sent yet.
    """
    return bytes(transport.dataBuffer[transport.offset :]) + b"".join(
        transport._tempDataBuffer
    )


def pendingLength(transport: Any) -> int:
    """
    How many bytes C{transport} was given to write and has not sent yet.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def takePending(transport: Any) -> bytes:
    """
    Take what C{transport} has not sent yet out of its buffer, to be sent
    another way instead, in the same order.
    """
    data = pending(transport)
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    return data


def openBothWays(transport: Any) -> bool:
    """
    Whether C{transport}, a plain socket's, is connected and neither closing
    nor shut for writing.
    """
    return bool(
        plainSocket(transport)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
    )


def takeEvents(
    transport: Any, doRead: Callable[[], object], doWrite: Callable[[], object]
) -> None:
    """
    Have the reactor's read and write events of C{transport}'s socket call
    C{doRead} and C{doWrite} instead of the transport's own methods, so one
    selectable per descriptor stays registered and closing it stays
    Twisted's business.
    """
    transport.stopReading()
    transport.stopWriting()
    transport.doRead = doRead
    transport.doWrite = doWrite


def giveEventsBack(
    transport: Any, doRead: Callable[[], object], doWrite: Callable[[], object]
) -> None:
    """
    Undo L{takeEvents}: the transport's own C{doRead}/C{doWrite} again.
    """
    for name, method in (("doRead", doRead), ("doWrite", doWrite)):
        if transport.__dict__.get(name) == method:
            delattr(transport, name)


def endAsDone(transport: Any) -> None:
    """
    End a transport whose socket was already shut both ways by someone else
    (the splice relay) through its own C{connectionLost}, as an orderly
    close, so that its protocols hear of it as of any other.
    """
    if not transport.disconnected:
        transport.connectionLost(Failure(ConnectionDone()))


def connectedTransport(
    sock: Any, peer: tuple[str, int], factory: IProtocolFactory, reactor: Any
) -> Any:
    """
    Make the reactor's transport for C{sock}, a TCP socket over IPv4 that
    this process connected to C{peer} itself, with a protocol from
    C{factory} connected to it; L{None} if the factory built none (the
    socket is then closed).

    This is what C{IReactorSocket.adoptStreamConnection} does with a
    descriptor, without what it needs only because it is given one: a
    C{dup()} of it (and the C{close()} of the original), and a
    C{getpeername()} and a C{getsockname()} to learn what the dialler knew.
    """
    protocol = factory.buildProtocol(address.IPv4Address("TCP", *peer))
    if protocol is None:
        sock.close()
        return None
    # No listening port made it: Twisted itself passes None here too.
    transport = tcp.Server(
        sock, protocol, peer, None, peer[1], reactor  # type: ignore[arg-type]
    )
    transport.repstr = f"<{protocol.__class__.__name__} #{peer[1]} to {peer[0]}>"
    protocol.makeConnection(transport)
    return transport


_DONE = Failure(ConnectionDone())
"""
The reason every orderly close of L{closeDone} gives, made once, as the
reactor makes its own (C{_disconnectSelectable}'s): a L{Failure} costs more
to make than the rest of the close.
"""


def closeDone(transport: Any) -> None:
    """
    Close C{transport}, whose peer has ended its sending; if it is a plain
    socket's:
    at once, with a bare C{close()} (which sends the FIN itself), when it
    has nothing left to send; otherwise with C{loseConnection()}, which
    sends what is left first (as any other transport is closed).

    Twisted would shut the socket's sending side down, tell the protocol,
    then shut it down both ways and close it on the reactor's next turn,
    with a new L{Failure} for the reason: three system calls and a turn
    more for the same FIN.
    """
    if plainSocket(transport) and (
        transport._writeDisconnected or idleSocket(transport)
    ):
        transport._shouldShutdown = False
        if not transport.disconnecting and transport.connected:
            # (connectionLost stops its reading and writing itself.)
            transport.connectionLost(_DONE)
            return
    transport.loseConnection()


# Endpoints.


@frozen
class TCP4Address:
    """
    Where a C{tcp:} client endpoint connects, read from it once.

    @ivar reactor: the reactor the endpoint connects with.
    @ivar host: the host as written (a name or an IPv4 address).
    @ivar port: the port.
    @ivar bindAddress: the local address to bind, or L{None}.
    """

    reactor: Any
    host: str
    port: int
    bindAddress: Any

    @property
    def numeric(self) -> bool:
        """
        Whether the host is an IPv4 address (no name to resolve).
        """
        return bool(isIPv4Address(self.host))


def tcp4Address(endpoint: object) -> TCP4Address | None:
    """
    The address a C{TCP4ClientEndpoint} (exactly that type) connects to, or
    L{None} for any other endpoint.
    """
    if type(endpoint) is not TCP4ClientEndpoint:
        return None
    return TCP4Address(
        endpoint._reactor, endpoint._host, endpoint._port, endpoint._bindAddress
    )


def parseServer(description: str) -> tuple[Any, list[Any], dict[str, Any]]:
    """
    Split a server endpoint string into its parser and arguments, without
    building the endpoint (for strings, like C{systemd:}, whose endpoint
    needs what only exists at run time).
    """
    return _parseServer(description, None)


def systemdParserType() -> type:
    """
    The class of the C{systemd:} endpoint parser.
    """
    return _SystemdParser


def systemdDaemon() -> Any:
    """
    The L{twisted.python.systemd.ListenFDs} that C{systemd:} endpoints look
    passed sockets up in.
    """
    return _SystemdParser._sddaemon


# Services and the reactor.


class SynchronousEndpointService(StreamServerEndpointService):
    """
    An endpoint service whose C{privilegedStartService} raises when the
    endpoint cannot listen (on endpoints that fail at once), instead of
    logging it later.
    """

    _raiseSynchronously = True

    def whenListening(self) -> Deferred[Any]:
        """
        What the endpoint's C{listen} gave (the port), once it starts.
        """
        waiting = self._waitingForPort
        assert waiting is not None, "not started"
        return waiting


def forgetExitSignal(reactor: Any, signum: int) -> bool:
    """
    If the reactor stopped because of C{signum}, forget it, so that twistd
    does not end the process by raising the signal again; say whether it
    did.
    """
    if getattr(reactor, "_exitSignal", None) == signum:
        reactor._exitSignal = None
        return True
    return False


def twistdLogObserver(twistdOptions: Any) -> Any:
    """
    The log observer twistd makes from its options when nothing else is
    asked for (a text file observer on C{--logfile} or standard output, a
    syslog one with C{--syslog}), made by twistd's own logger class for
    this platform.
    """
    from twisted.scripts.twistd import _SomeApplicationRunner

    return _SomeApplicationRunner.loggerFactory(twistdOptions)._getLogObserver()
