"""
Targets: what a decided connection is handed to.

L{BackendTarget} relays to a backend reached through a Twisted client
endpoint, the way C{twisted.protocols.portforward} does (the client is paused
while the backend is dialled, then each transport is the other's producer),
and adds what a front on port 443 needs beyond it: the peeked bytes go first,
half-close is carried both ways, a connect timeout, and a log line when the
connection ends.  L{LocalTarget} hands the connection to an in-process
protocol factory instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectionDone, TimeoutError, UserError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _splice, _twisted
from ._client import SendProxy, clientTransport, proxyHeaderFor
from ._dial import SocketDial, canDial
from ._interfaces import ITarget

if TYPE_CHECKING:
    from ._health import HealthCheck
    from ._routes import ConnectionInfo
    from ._transparent import TransparentSource

log = Logger(namespace="demux")

DEFAULT_CONNECT_TIMEOUT = 10.0


DEFAULT_LINGER = 30.0
# A read this large means bulk data: time to move to the splice relay.
UPGRADE_AT = 32 * 1024


@implementer(IHalfCloseableProtocol)
class _RelayEnd(Protocol):
    """
    One end of a relay: what this end's transport reads is written to the
    other end's transport.

    Each direction closes on its own: when this end's peer stops sending
    (read side closed) the other end's write side is shut down once its
    buffer is flushed, and a transport is closed only when both of its
    directions are done, so a client that half-closes still gets the whole
    answer.
    """

    # A TCP-like transport: ITCPTransport, IPushProducer and IConsumer.
    transport: Any
    other: _RelayEnd | None = None
    session: _ClientEnd
    readClosed = False
    writeClosed = False
    bytesIn = 0
    lost = False

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        session = self.session
        session.idle = False
        _twisted.writeThrough(self.other.transport, data)  # type: ignore[union-attr]
        if len(data) >= UPGRADE_AT and session.mayUpgrade:
            session.upgrade()

    def readConnectionLost(self) -> None:
        if self.readClosed:
            return
        self.readClosed = True
        other = self.other
        if other is not None and not other.lost:
            # Nothing more will come from this side: stop it being paused
            # and resumed as a producer (resuming would read EOF again).
            other.transport.unregisterProducer()
            _twisted.loseWriteThrough(other.transport)
        self._closeIfDone()

    def writeConnectionLost(self) -> None:
        self.writeClosed = True
        self._closeIfDone()

    def _closeIfDone(self) -> None:
        if self.readClosed and self.writeClosed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        # Held here: closing the other end may end the session at once,
        # which unlinks it from its ends.
        session = self.session
        other = self.other
        if other is not None and not other.lost:
            # Whatever this side sent is flushed to the other before it is
            # closed; a peer that never reads it is cut off after a while.
            # (With nothing left to flush and its sending side already shut,
            # Twisted closes it at once, and there is nothing to wait for.)
            other.transport.loseConnection()
            if not other.lost:
                session.lingerThenAbort()
        session.endLost()


class _ClientEnd(_RelayEnd):
    """
    The client's end of a relay to a backend, created once the route is
    decided; it dials the backend and owns the connection's timers and
    accounting.

    @ivar idle: whether nothing has moved since the idle timer last looked.
    """

    # Set when dialling starts, right after construction.
    backend: Backend

    def __init__(
        self,
        target: BackendTarget,
        transport: ITransport,
        peeked: bytes,
        connection: ConnectionInfo,
    ) -> None:
        self.session = self
        # Every attribute is set here, in one order, so that instances share
        # one compact attribute table (a held connection costs less memory).
        self.other = None
        self.readClosed = False
        self.writeClosed = False
        self.lost = False
        self.dialStarted = 0.0
        self._candidates: list[Backend] = []
        self.host = connection.host
        self.observer = connection.observer
        self.target = target
        self.transport = transport
        self.peeked = peeked
        self.reactor = connection.clock
        self.peer = connection.peer
        self.routeName = connection.route
        self.logConnections = connection.logConnections
        self.bytesIn = len(peeked)
        self.started = self.reactor.seconds()
        self.backendError: str | None = None
        self.idle = False
        self.mayUpgrade = False
        self.fastPath: _splice.SpliceRelay | None = None
        self._connecting: Deferred[Any] | None = None
        self._connector: Any = None
        self._linger: IDelayedCall | None = None
        self._idleTimer: IDelayedCall | None = None
        self._ended = False
        # Made now, while the connection's peek is at hand, so that the
        # session does not keep it.
        self.proxyHeader = (
            b""
            if target.sendProxy is None
            else proxyHeaderFor(target.sendProxy, connection)
        )

    def dataReceived(self, data: bytes) -> None:
        if self.other is None:
            # A transport may deliver what it had already read after being
            # paused for the dial: keep it, in order, behind the peek.
            self.bytesIn += len(data)
            self.peeked += data
            return
        _RelayEnd.dataReceived(self, data)

    def dial(self) -> None:
        """
        Connect to the first backend that answers, in the order the target's
        balancing gives, and relay to it.
        """
        self._candidates = self.target.pick(self.reactor.seconds())
        if not self._candidates:
            self._refuseAllDown()
            return
        self._dialNext()
        if self._connector is not None or self._connecting is not None:
            # Still connecting: read nothing more from the client until there
            # is somewhere to send it.
            self.transport.pauseProducing()

    def _refuseAllDown(self) -> None:
        """
        Every backend is down by its active health check: close the client's
        connection, saying why, rather than dial backends known to be dead.
        """
        why = self.target.downReasons()
        self.backendError = f"every backend is down by health check ({why})"
        log.warn(
            "{peer} route={route} refused: {why}",
            peer=_peerText(self.peer),
            route=self.routeName,
            why=self.backendError,
        )
        self.transport.loseConnection()

    def _dialNext(self) -> None:
        backend = self._candidates.pop(0)
        self.backend = backend
        self.dialStarted = self.reactor.seconds()
        endpoint = backend.endpoint
        if self.target.transparent is not None:
            # From the client's address (see demux._transparent), or not at
            # all: it has logged why not.
            attempt = self.target.transparent.dial(
                endpoint, self.peer, self.routeName, _DirectFactory(self),
                self._failed, self.target.connectTimeout, self.reactor,
            )
            if attempt is None:
                self.transport.loseConnection()
                return
            self._connector = attempt
            attempt.start()
            return
        address = backend.address
        if address is not None:
            # The common case, without the endpoint's wrapping protocol and
            # Deferreds: a connection costs less, and so does every read.
            reactor = address.reactor
            bind = address.bindAddress
            if (
                address.numeric
                and canDial(reactor)
                and (bind is None or isinstance(bind, tuple))
            ):
                dial = SocketDial(
                    reactor,
                    (address.host, address.port),
                    _DirectFactory(self),
                    self._failed,
                    self.target.connectTimeout,
                    bind,
                )
                self._connector = dial
                dial.start()
                return
            self._connector = reactor.connectTCP(
                address.host,
                address.port,
                _DirectFactory(self),
                timeout=self.target.connectTimeout,
                bindAddress=bind,
            )
            return
        d = endpoint.connect(_BackendFactory(self))
        d.addTimeout(self.target.connectTimeout, self.reactor)
        self._connecting = d
        d.addErrback(self._failed)

    def _failed(self, reason: Failure) -> None:
        self._connecting = None
        self._connector = None
        if self.lost:
            return
        if reason.check(TimeoutError, CancelledError, DeferredTimeoutError):
            why = f"no connection within {self.target.connectTimeout:g}s"
        else:
            why = reason.getErrorMessage()
        self.backendError = why
        self.target.markDown(self.backend, self.reactor.seconds())
        self.observer.backendFailed(self.routeName, self.backend.description)
        log.warn(
            "{peer} route={route} backend {backend} failed: {why}",
            peer=_peerText(self.peer),
            route=self.routeName,
            backend=self.backend.description,
            why=why,
        )
        if self._candidates:
            self._dialNext()
            return
        self.transport.loseConnection()

    def backendConnected(self, backend: _BackendEnd) -> None:
        """
        Wire the two transports together, peeked bytes first.
        """
        # Connected: the attempt's Deferred fires once this returns, and is
        # no longer something to cancel.
        self._connecting = None
        self._connector = None
        self._candidates = []
        self.target.markUp(self.backend)
        self.observer.backendConnected(
            self.routeName,
            self.backend.description,
            self.reactor.seconds() - self.dialStarted,
        )
        if self.lost:
            backend.transport.loseConnection()
            return
        self.other = backend
        backend.other = self
        first = self.peeked
        if self.proxyHeader:
            # The header and the peeked bytes go out in one write, header
            # first, as a backend that expects the header may read it alone.
            first = self.proxyHeader + first
            self.proxyHeader = b""
        self.peeked = b""
        if self.target.idleTimeout is not None:
            self._idleTimer = self.reactor.callLater(
                self.target.idleTimeout, self._checkIdle
            )
        self.mayUpgrade = self.target.splice and _splice.available()
        if first:
            # Sent now rather than on the reactor's next turn: this write is
            # on the path of every connection's first answer.
            _twisted.writeThrough(backend.transport, first)
        # Each transport is the other's producer: a slow reader on one side
        # pauses reading on the other, so memory stays bounded.
        backend.transport.registerProducer(self.transport, True)
        self.transport.registerProducer(backend.transport, True)
        if self.readClosed:
            # The client finished sending before the backend answered.
            backend.transport.unregisterProducer()
            _twisted.loseWriteThrough(backend.transport)
        else:
            self.transport.resumeProducing()

    def upgrade(self) -> None:
        """
        Move a connection that carries bulk data to the splice relay.

        Connections start on the ordinary relay, which costs least for a
        short exchange; one that reads a large chunk is moved, with whatever
        the ordinary relay had not sent yet going first through the pipes.
        """
        backend = self.other
        if (
            backend is None
            or self.fastPath is not None
            or not _splice.upgradable(self.transport)
            or not _splice.upgradable(backend.transport)
        ):
            return
        try:
            relay = _splice.SpliceRelay(
                self.transport,
                backend.transport,
                self.reactor,
                self._spliceMoved,
                up=_twisted.pending(backend.transport),
                down=_twisted.pending(self.transport),
                clientDone=self.readClosed,
                backendDone=backend.readClosed,
            )
        except _splice.NoRoom:
            return
        self.mayUpgrade = False
        _twisted.takePending(backend.transport)
        _twisted.takePending(self.transport)
        self.transport.unregisterProducer()
        backend.transport.unregisterProducer()
        self.fastPath = relay
        relay.start()

    def _spliceMoved(self, upward: bool, count: int) -> None:
        """
        The splice relay read C{count} bytes, from the client if C{upward}.
        """
        self.idle = False
        if upward:
            self.bytesIn += count
        elif self.other is not None:
            self.other.bytesIn += count

    def _checkIdle(self) -> None:
        """
        Close both ends if nothing moved for the idle timeout.  Activity only
        clears a flag, so the hot path reads no clock: an idle connection is
        closed between one and two timeouts after its last byte.
        """
        self._idleTimer = None
        assert self.target.idleTimeout is not None
        if not self.idle:
            self.idle = True
            self._idleTimer = self.reactor.callLater(
                self.target.idleTimeout, self._checkIdle
            )
            return
        log.info(
            "{peer} route={route} idle for {idle:g}s, closing",
            peer=_peerText(self.peer),
            route=self.routeName,
            idle=self.target.idleTimeout,
        )
        self.abort()

    def lingerThenAbort(self) -> None:
        """
        One end is gone and the other is closing after flushing what it was
        sent; if its peer never reads that, cut it off.
        """
        if self._linger is None and not self._ended:
            self._linger = self.reactor.callLater(self.target.linger, self.abort)

    def abort(self) -> None:
        """
        Close both ends at once, discarding what is buffered.
        """
        if self.fastPath is not None:
            self.fastPath.detach()
        for end in (self, self.other):
            if end is not None and not end.lost:
                end.transport.abortConnection()

    def endLost(self) -> None:
        """
        Called when either end's connection is gone: once both are, stop the
        timers and log the connection's summary.
        """
        if self._ended:
            return
        if not self.lost or (self.other is not None and not self.other.lost):
            return
        self._ended = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connector is not None and self._connector.state == "connecting":
            self._connector.stopConnecting()
        if self.fastPath is not None:
            self.fastPath.detach()
        for timer in (self._linger, self._idleTimer):
            if timer is not None and timer.active():
                timer.cancel()
        other = self.other
        backendBytes = other.bytesIn if other is not None else 0
        if other is not None:
            # Both ends are gone: unlink them, so that reference counting
            # frees the connection's objects (both transports included) at
            # once, instead of leaving a cycle for the garbage collector,
            # whose passes would pause a busy server.
            other.other = None
            self.other = None
        # The client's end is its own session: that reference is a cycle too.
        del self.session
        duration = self.reactor.seconds() - self.started
        self.observer.closed(self.routeName, self.bytesIn, backendBytes, duration)
        if not self.logConnections:
            return
        how = " (spliced)" if self.fastPath is not None else ""
        peer = _peerText(self.peer)
        log.info(
            "{text}",
            text=f"{peer} route={self.routeName} closed: {self.bytesIn} bytes up, "
            f"{backendBytes} bytes down, {duration:.3f}s{how}",
            peer=peer,
            route=self.routeName,
            bytesUp=self.bytesIn,
            bytesDown=backendBytes,
            duration=duration,
            backendError=self.backendError,
            spliced=self.fastPath is not None,
        )


class _BackendEnd(_RelayEnd):
    """
    The backend's end of a relay.
    """

    def __init__(self, client: _ClientEnd) -> None:
        self.session = client
        self.other = None
        self.readClosed = False
        self.writeClosed = False
        self.lost = False
        self.bytesIn = 0

    def connectionMade(self) -> None:
        self.session.backendConnected(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        session = self.session
        complete = session.fastPath is not None and session.fastPath.complete
        if reason is not None and not reason.check(ConnectionDone) and not complete:
            # A reset, or a TLS backend that failed verification: say why,
            # since the client only sees its connection close.  (Once a
            # spliced relay has carried both directions to their end, how
            # the socket then closes is not news.)
            session.backendError = reason.getErrorMessage()
            log.warn(
                "{peer} route={route} backend {backend} connection lost: {why}",
                peer=_peerText(session.peer),
                route=session.routeName,
                backend=session.backend.description,
                why=session.backendError,
            )
        _RelayEnd.connectionLost(self, reason)


class _DirectFactory(ClientFactory):
    """
    Connects a backend end to its session with C{connectTCP} directly.
    """

    noisy = False

    def __init__(self, client: _ClientEnd) -> None:
        self.client = client

    def buildProtocol(self, addr: IAddress | None) -> _BackendEnd:
        return _BackendEnd(self.client)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not reason.check(UserError):
            self.client._failed(reason)


@implementer(IProtocolFactory)
class _BackendFactory(Factory):
    noisy = False

    def __init__(self, client: _ClientEnd) -> None:
        self.client = client

    def buildProtocol(self, addr: IAddress | None) -> _BackendEnd:
        return _BackendEnd(self.client)


def _peerText(peer: IAddress | None) -> str:
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer)


@frozen
class Backend:
    """
    One backend address of a route.

    @ivar endpoint: how to reach it; parsed once, when the configuration is
        loaded, not per connection.
    @ivar description: the endpoint string, for logs.
    """

    endpoint: IStreamClientEndpoint
    description: str
    address: _twisted.TCP4Address | None = field(init=False, eq=False, repr=False)
    """
    Where a C{tcp:} endpoint connects, read from it here, once, so that
    dialling reads no endpoint internals per connection; L{None} for other
    endpoints.
    """

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "address", _twisted.tcp4Address(self.endpoint))


@define
class _Health:
    """
    What a target has learnt about its backends while running: which
    refused lately (a passive health check), and whose turn is next.
    """

    downUntil: dict[str, float] = field(factory=dict)
    nextIndex: int = 0
    checked: dict[str, tuple[bool, str]] = field(factory=dict)
    """
    By active health check (L{demux._health}), each checked backend's
    state: whether it is up, and what its last check saw.
    """


BALANCE_MODES = ("first", "roundrobin")
DEFAULT_RETRY_AFTER = 10.0


@implementer(ITarget)
@frozen
class BackendTarget:
    """
    Relay decided connections to a backend.

    @ivar endpoint: how to reach the backend; parsed once, when the
        configuration is loaded, not per connection.
    @ivar description: the endpoint string, for logs.
    @ivar connectTimeout: seconds to wait for the backend to accept before
        trying the next backend or closing the client's connection.
    @ivar idleTimeout: seconds without a byte either way after which both
        connections are closed, or L{None} to keep idle connections.
    @ivar linger: seconds that one side may take to flush what it was sent
        after the other side has gone, before it is cut off.
    @ivar sendProxy: 1 or 2 to send a PROXY protocol header of that version
        to the backend, so it sees the client's address (version 2 with
        TLVs: ALPN, authority, the route's name); C{"pass"} to forward the
        header the connection came with on a C{haproxy:} listener, as
        received; L{None} not to.
    @ivar alternatives: more backends for the same route.
    @ivar balance: C{"first"}: the first backend that is up, in order;
        C{"roundrobin"}: each connection starts at the next backend.
    @ivar retryAfter: seconds a backend that refused or timed out is
        passed over (unless every backend is).
    @ivar splice: whether to relay with C{splice(2)} where both ends are
        plain TCP sockets on Linux (the same semantics, less CPU).
    @ivar check: the route's active health check, run by
        L{demux._health.HealthService}; L{None} for passive checks only.
        Backends down by it are never picked, and with all of them down
        connections are refused; among the rest, those that failed lately
        go last, as without it.
    @ivar transparent: makes backend connections whose source is the
        client's address, or L{None} to dial from this host's.
    """

    endpoint: IStreamClientEndpoint
    description: str
    connectTimeout: float = DEFAULT_CONNECT_TIMEOUT
    idleTimeout: float | None = None
    linger: float = DEFAULT_LINGER
    sendProxy: SendProxy | None = None
    alternatives: tuple[Backend, ...] = ()
    balance: str = "first"
    retryAfter: float = DEFAULT_RETRY_AFTER
    splice: bool = True
    check: HealthCheck | None = None
    transparent: TransparentSource | None = None
    _health: _Health = field(factory=_Health, eq=False, repr=False, alias="_health")
    backends: tuple[Backend, ...] = field(init=False, eq=False, repr=False)
    """
    Every backend of the route, in configuration order: made once, not for
    every connection that picks one.
    """

    def __attrs_post_init__(self) -> None:
        object.__setattr__(
            self,
            "backends",
            (Backend(self.endpoint, self.description), *self.alternatives),
        )

    def pick(self, now: float) -> list[Backend]:
        """
        The order in which to try the backends for a new connection: by the
        balancing mode, backends that failed lately last.
        """
        backends = list(self.backends)
        if self.balance == "roundrobin" and len(backends) > 1:
            start = self._health.nextIndex % len(backends)
            self._health.nextIndex = start + 1
            backends = backends[start:] + backends[:start]
        checked = self._health.checked
        if checked:
            backends = [
                b for b in backends if checked.get(b.description, (True, ""))[0]
            ]
        down = self._health.downUntil
        up = [b for b in backends if down.get(b.description, 0.0) <= now]
        return up + [b for b in backends if b not in up]

    def setChecked(self, backend: Backend, up: bool, why: str) -> None:
        """
        Record what the active health check says of C{backend}; one found
        up again is also forgiven its passive failures, since it answers.
        """
        previous = self._health.checked.get(backend.description)
        self._health.checked[backend.description] = (up, why)
        if up and previous is not None and not previous[0]:
            self._health.downUntil.pop(backend.description, None)

    def checkedState(self, backend: Backend) -> tuple[bool, str] | None:
        """
        The active health check's word on C{backend}: up or not and why, or
        L{None} if it is not checked.
        """
        return self._health.checked.get(backend.description)

    def downReasons(self) -> str:
        """
        Why each backend down by active check is, for a log line.
        """
        return "; ".join(
            f"{description}: {why}"
            for description, (up, why) in self._health.checked.items()
            if not up
        )

    def markDown(self, backend: Backend, now: float) -> None:
        self._health.downUntil[backend.description] = now + self.retryAfter

    def markUp(self, backend: Backend) -> None:
        self._health.downUntil.pop(backend.description, None)

    def handOff(
        self, transport: ITransport, peeked: bytes, connection: ConnectionInfo
    ) -> Protocol:
        end = _ClientEnd(self, transport, peeked, connection)
        end.dial()
        return end


@implementer(IHalfCloseableProtocol)
class _LocalEnd(Protocol):
    transport: Any
    """
    Passes a connection's events on to an in-process protocol, carrying
    half-close only to a protocol that understands it.
    """

    def __init__(
        self, protocol: Protocol, transport: ITransport, connection: ConnectionInfo
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.connection = connection
        self.started = connection.clock.seconds()
        self.bytesIn = 0

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        self.protocol.dataReceived(data)

    def readConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        if halfCloseable is not None:
            halfCloseable.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.protocol.connectionLost(reason)
        c = self.connection
        duration = c.clock.seconds() - self.started
        c.observer.closed(c.route, self.bytesIn, 0, duration)
        if c.logConnections:
            # What the in-process protocol wrote is its own business: only
            # the bytes that reached it are counted.
            peer = _peerText(c.peer)
            log.info(
                "{text}",
                text=f"{peer} route={c.route} closed: {self.bytesIn} bytes up, "
                f"{duration:.3f}s (in-process)",
                peer=peer,
                route=c.route,
                bytesUp=self.bytesIn,
                duration=duration,
            )


@implementer(ITarget)
@frozen
class LocalTarget:
    """
    Serve decided connections with an in-process protocol factory, so one
    port can carry, say, a Twisted program's own web site and a relay to
    another server.

    The factory's protocol is connected to the client's transport and gets
    the peeked bytes as its first C{dataReceived}.
    """

    factory: IProtocolFactory
    description: str = field(default="")

    def __attrs_post_init__(self) -> None:
        if not self.description:
            object.__setattr__(self, "description", f"local {self.factory!r}")

    def handOff(
        self, transport: ITransport, peeked: bytes, connection: ConnectionInfo
    ) -> Protocol:
        protocol = self.factory.buildProtocol(connection.peer)
        if protocol is None:
            transport.loseConnection()
            return Protocol()
        # Behind a PROXY header, the protocol's getPeer() is the client.
        protocol.makeConnection(clientTransport(transport, connection))
        if peeked:
            protocol.dataReceived(peeked)
        end = _LocalEnd(protocol, transport, connection)  # type: ignore[arg-type]
        end.bytesIn = len(peeked)
        return end
