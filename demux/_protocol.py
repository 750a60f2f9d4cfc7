"""
The demux protocol: buffer a connection's first bytes, decide its route, hand
it over, and get out of the way.
"""

from __future__ import annotations

import enum
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _log
from ._addresses import ipOf, peerText
from ._interfaces import ConnectionInfo
from ._observer import IConnectionObserver, NullObserver
from ._peek import Peek
from ._proxyheader import InvalidProxyHeader, ProxyInfo, headerLength, parseHeader
from ._routes import Decision, IPAddress, RouteTable, decide
from ._targets import IRefusingTarget, localFactories

log = Logger(namespace="demux")


class State(enum.Enum):
    """
    Where a connection is in its short life inside L{DemuxProtocol}.
    """

    HEADER = "reading the PROXY header"
    PEEKING = "peeking"
    HANDED_OFF = "handed off"
    REFUSED = "refused"

# The peek of a connection that has none, or no longer needs one: shared,
# since a parse of no bytes is the same for every connection.
_NOTHING = Peek()


@implementer(IHalfCloseableProtocol)
class DemuxProtocol(Protocol):
    """
    Reads a connection's first bytes until the route table decides, then
    passes the connection and those bytes to the route's target and every
    later event to the protocol the target returned.

    The wait is bounded twice: by the table's C{inspectDelay} (a timer on the
    injected clock) and by its C{maxPeek}; when either runs out, or the client
    stops sending, L{decide} settles the routes still undecided.
    """

    # A TCP-like transport: ITCPTransport, IPushProducer and IConsumer.
    transport: Any
    factory: DemuxFactory

    def __init__(
        self, table: RouteTable, clock: IReactorTime, expectProxyHeader: bool = False
    ) -> None:
        self.table = table
        self.clock = clock
        self.peek = _NOTHING
        self.state = State.HEADER if expectProxyHeader else State.PEEKING
        self.downstream: Protocol | None = None
        self._timer: IDelayedCall | None = None
        self.started = 0.0
        self.route: str | None = None
        self._readClosed = False
        self.source: str | None = None
        self._headerBuffer = b""
        self.peer: IAddress | None = None
        self.host: IAddress | None = None
        self.sourceIP: IPAddress | None = None
        self.proxyInfo: ProxyInfo | None = None

    @property
    def decided(self) -> bool:
        """
        Whether the connection was handed off or refused.
        """
        return self.state is State.HANDED_OFF or self.state is State.REFUSED

    @property
    def expectProxyHeader(self) -> bool:
        """
        Whether the PROXY header is still to come.
        """
        return self.state is State.HEADER

    def connectionMade(self) -> None:
        self.started = self.clock.seconds()
        # Set already when this connection is an inner one (the decrypted
        # stream of a TLS route), whose client is the outer one's.
        if self.peer is None:
            self.peer = self.transport.getPeer()
        if self.host is None:
            self.host = self.transport.getHost()
        if self.table.filtersSources:
            self.sourceIP = ipOf(self.peer)
        self._timer = self.clock.callLater(self.table.inspectDelay, self._timeUp)
        if self.state is State.HEADER or self.table.waitsForBytes():
            return
        # A route may match before the client says anything (C{any}).
        self._consider(final=False, why="")

    def dataReceived(self, data: bytes) -> None:
        state = self.state
        if state is State.HANDED_OFF:
            self.downstream.dataReceived(data)  # type: ignore[union-attr]
            return
        if state is State.REFUSED:
            # Refused and closing: nothing more is read or kept.
            return
        if state is State.HEADER:
            rest = self._proxyHeader(data)
            if rest is None:
                return
            data = rest
        if data:
            self.peek = self.peek.extended(data)
        if len(self.peek) >= self.table.maxPeek:
            self._consider(final=True, why=f"{len(self.peek)} bytes without a decision")
        else:
            # Also with nothing after a PROXY header: a route may match
            # before the client says anything.
            self._consider(final=False, why="")

    def _proxyHeader(self, data: bytes) -> bytes | None:
        """
        Collect and parse the PROXY header that must come first on this
        listener, however it is split across reads.

        @return: the bytes after it, once it is whole and valid (the
            connection is then peeking); L{None} while it is incomplete, or
            once it has been refused.
        """
        buffered = self._headerBuffer + data
        try:
            length = headerLength(buffered)
            if length is None or len(buffered) < length:
                self._headerBuffer = buffered
                return None
            info = parseHeader(buffered[:length])
        except InvalidProxyHeader:
            self._refuse("no valid PROXY protocol header")
            return None
        self.state = State.PEEKING
        self._headerBuffer = b""
        self.proxyInfo = info
        if info.source is not None:
            self.peer = info.source
            if self.table.filtersSources:
                self.sourceIP = ipOf(info.source)
        if info.destination is not None:
            self.host = info.destination
        if not self.factory.claimSource(self):
            self._refuse(
                "over max_connections_per_source "
                f"({self.table.maxConnectionsPerSource})",
                "limit",
            )
            return None
        return buffered[length:]

    def _refuse(self, reason: str, kind: str = "proxy header") -> None:
        self._dispatch(Decision(None, reason, kind), "")

    def _timeUp(self) -> None:
        self._timer = None
        self._consider(
            final=True, why=f"no decision within {self.table.inspectDelay:g}s"
        )

    def _consider(self, final: bool, why: str, clientDone: bool = False) -> None:
        if self.state is State.HEADER:
            if final:
                self._refuse(f"{why}; no complete PROXY protocol header")
            return
        failures: list[tuple[str, Exception]] = []
        decision = decide(
            self.table, self.peek, final, self.sourceIP, failures, clientDone
        )
        for name, error in failures:
            _log.matcherFailed(peerText(self.peer), name, len(self.peek), error)
        if decision is not None:
            self._dispatch(decision, why)

    def _dispatch(self, decision: Decision, why: str) -> None:
        self.factory.settled(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        peer = self.peer
        elapsed = self.clock.seconds() - self.started
        route = decision.route
        reason = f"{why}; {decision.reason}" if why else decision.reason
        peeked = len(self.peek)
        if route is None:
            self.state = State.REFUSED
            self.factory.observer.refused(decision.kind)
            _log.refused(peerText(peer), reason, peeked, elapsed * 1000)
            self.transport.loseConnection()
            return
        refusing = IRefusingTarget(route.target, None)
        refusal = refusing.refusal() if refusing is not None else None
        if refusal is not None:
            # The route won but its target cannot take the connection (every
            # backend is down by health check): one refusal, counted so.
            self.state = State.REFUSED
            self.route = route.name
            self.factory.observer.refused("backends down")
            _log.routeRefused(
                peerText(peer), route.name, refusal, reason, peeked, elapsed * 1000
            )
            self.transport.loseConnection()
            return
        peek = self.peek
        data = peek.data
        self.peek = _NOTHING
        assert peer is not None
        self.route = route.name
        observer = self.factory.observer
        observer.routed(route.name, elapsed)
        self.state = State.HANDED_OFF
        table = self.table
        decided = None
        if table.logConnections:
            decided = _log.Decided(
                reason, route.target.description, peeked, elapsed * 1000
            )
        self.downstream = route.target.handOff(
            self.transport,
            data,
            ConnectionInfo(
                self.clock,
                peer,
                self.host,
                route.name,
                observer,
                table.logConnections,
                peek,
                self.proxyInfo,
                None if table.logDecisions else decided,
            ),
        )
        if decided is not None and table.logDecisions:
            # Logged after the hand-off has started the backend's connect,
            # so the line is written while the backend answers, not before
            # it is asked.
            _log.routed(peerText(peer), route.name, decided)
        if self._readClosed:
            self._halfCloseDownstream()

    def _halfCloseDownstream(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.downstream, None)
        if halfCloseable is not None:
            halfCloseable.readConnectionLost()
        else:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self._readClosed = True
        if self.downstream is not None:
            self._halfCloseDownstream()
        elif not self.decided:
            self._consider(final=True, why="client stopped sending", clientDone=True)

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.downstream, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def abort(self) -> None:
        """
        Close this connection at once, and its backend's if it has one.
        """
        abort = getattr(self.downstream, "abort", None)
        if abort is not None:
            abort()
        else:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.factory.connectionGone(self)
        if self.downstream is not None:
            self.downstream.connectionLost(reason)
        elif not self.decided:
            self.factory.settled(self)
            self.state = State.REFUSED
            self.factory.observer.refused("client closed")
            _log.closedUndecided(
                peerText(self.peer),
                len(self.peek),
                (self.clock.seconds() - self.started) * 1000,
            )


@frozen
class ConnectionSnapshot:
    """
    One open connection as the status view shows it.

    @ivar peer: the client's address.
    @ivar route: the route it took, or L{None} while undecided or refused.
    @ivar decided: whether it was handed off or refused.
    @ivar started: when it was accepted, by the factory's clock.
    """

    peer: IAddress | None
    route: str | None
    decided: bool
    started: float


class DemuxFactory(Factory[DemuxProtocol]):
    """
    Serve a listening port with a route table.

    The factory keeps the connection counts that the table's limits are
    checked against: a connection past a limit is accepted and closed at
    once (C{buildProtocol} returns L{None}), and logged.

    @ivar table: the routes new connections are decided with; replacing it
        (a reload) changes only connections accepted afterwards.
    @ivar observer: told of every connection's steps (metrics).
    @ivar active: the open connections, decided or not.
    @ivar undecided: how many of them are still waiting for a decision.
    """

    protocol = DemuxProtocol
    noisy = False

    def __init__(
        self,
        table: RouteTable,
        reactor: IReactorTime | None = None,
        observer: IConnectionObserver | None = None,
    ) -> None:
        self.observer: IConnectionObserver = observer or NullObserver()
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.table = table
        self.reactor: IReactorTime = reactor
        self.active: set[DemuxProtocol] = set()
        self.undecided = 0
        self.perSource: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self._drained: list[Deferred[None]] = []
        self._lastRefusalLog = -1e9

    def buildProtocol(self, addr: IAddress | None) -> DemuxProtocol | None:
        return self._build(addr, proxied=False)

    def _build(self, addr: IAddress | None, proxied: bool) -> DemuxProtocol | None:
        table = self.table
        source = getattr(addr, "host", None)
        why = None
        if table.maxConnections is not None and len(self.active) >= table.maxConnections:
            why = f"max_connections ({table.maxConnections})"
        elif table.maxUndecided is not None and self.undecided >= table.maxUndecided:
            why = f"max_undecided ({table.maxUndecided})"
        elif not proxied and not self._sourceFree(source):
            why = f"max_connections_per_source ({table.maxConnectionsPerSource})"
        if why is not None:
            self._refuse(addr, why)
            return None
        self.observer.accepted()
        protocol = DemuxProtocol(table, self.reactor, expectProxyHeader=proxied)
        # The listening port gives the address its transport's getPeer()
        # would make again.
        protocol.peer = addr
        self.adopt(protocol)
        if not proxied:
            self._countSource(protocol, source)
        return protocol

    def snapshot(self) -> list[ConnectionSnapshot]:
        """
        The open connections now, oldest first, for the status view.
        """
        return sorted(
            (
                ConnectionSnapshot(p.peer, p.route, p.decided, p.started)
                for p in list(self.active)
            ),
            key=lambda c: c.started,
        )

    def adopt(self, protocol: DemuxProtocol) -> None:
        """
        Count C{protocol} as one of this factory's open, undecided
        connections.
        """
        protocol.factory = self
        self.active.add(protocol)
        self.undecided += 1

    def settled(self, protocol: DemuxProtocol) -> None:
        """
        C{protocol} is decided (handed off or refused): no longer counted
        as undecided.
        """
        self.undecided -= 1

    def _sourceFree(self, source: str | None) -> bool:
        cap = self.table.maxConnectionsPerSource
        return cap is None or source is None or self.perSource.get(source, 0) < cap

    def _countSource(self, protocol: DemuxProtocol, source: str | None) -> None:
        protocol.source = source
        if source is not None:
            self.perSource[source] = self.perSource.get(source, 0) + 1

    def claimSource(self, protocol: DemuxProtocol) -> bool:
        """
        Count a connection against its source address once a PROXY header
        has said what that is; C{False} if that source is over its limit.
        """
        source = getattr(protocol.peer, "host", None)
        if not self._sourceFree(source):
            return False
        self._countSource(protocol, source)
        return True

    def _refuse(self, addr: IAddress | None, why: str) -> None:
        """
        Count a refusal, and log it unless refusals are coming so fast that
        logging each would be a flood of its own: then at most one line a
        second, saying how many there were.
        """
        self.refused[why] = self.refused.get(why, 0) + 1
        self.observer.refused("limit")
        now = self.reactor.seconds()
        if now - self._lastRefusalLog >= 1.0:
            self._lastRefusalLog = now
            _log.overLimit(peerText(addr), why, self.refused[why])

    def connectionGone(self, protocol: DemuxProtocol) -> None:
        """
        Forget a closed connection.
        """
        if protocol not in self.active:
            return
        self.active.discard(protocol)
        source = protocol.source
        if source is not None:
            left = self.perSource[source] - 1
            if left:
                self.perSource[source] = left
            else:
                del self.perSource[source]
        if not self.active:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def drain(self, grace: float) -> Deferred[None]:
        """
        Wait for the open connections to finish, for at most C{grace}
        seconds, then abort the rest; fires when none is left.
        """
        if not self.active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        log.info(
            "waiting up to {grace:g}s for {count} connections to finish",
            grace=grace,
            count=len(self.active),
        )

        def abortTheRest() -> None:
            if self.active:
                log.info("aborting {count} connections", count=len(self.active))
            for protocol in list(self.active):
                protocol.abort()

        timer = self.reactor.callLater(grace, abortTheRest)

        def cancelTimer(result: None) -> None:
            if timer.active():
                timer.cancel()

        d.addCallback(cancelTimer)
        return d

    def proxied(self) -> ProxyHeaderFactory:
        """
        A factory for a listener whose connections start with a PROXY
        protocol header (C{haproxy:tcp:443}), sharing this one's routes,
        limits and counts.
        """
        return ProxyHeaderFactory(self)

    def setTable(self, table: RouteTable) -> None:
        """
        Decide new connections with C{table}; connections already open keep
        the table they were accepted with.
        """
        old, self.table = self.table, table
        if self.numPorts:
            _startLocal(table)
            _stopLocal(old)

    def startFactory(self) -> None:
        _startLocal(self.table)

    def stopFactory(self) -> None:
        _stopLocal(self.table)


class ProxyHeaderFactory(Factory[DemuxProtocol]):
    """
    Builds demux protocols that read a PROXY protocol header (v1 or v2)
    before anything else, so that routing, limits and logs see the client's
    real address; a connection without a valid header is refused, as the
    protocol's specification requires.
    """

    noisy = False

    def __init__(self, demux: DemuxFactory) -> None:
        self.demux = demux

    def buildProtocol(self, addr: IAddress | None) -> DemuxProtocol | None:
        return self.demux._build(addr, proxied=True)

    def doStart(self) -> None:
        self.demux.doStart()

    def doStop(self) -> None:
        self.demux.doStop()


def _startLocal(table: RouteTable) -> None:
    for route in table.routes:
        for factory in localFactories(route.target):
            factory.doStart()


def _stopLocal(table: RouteTable) -> None:
    for route in table.routes:
        for factory in localFactories(route.target):
            factory.doStop()
