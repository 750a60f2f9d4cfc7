"""
The demux protocol: buffer a connection's first bytes, decide its route, hand
it over, and get out of the way.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._peek import Peek
from ._relay import LocalTarget, _peerText
from ._routes import Decision, RouteTable, decide

log = Logger(namespace="demux")


@implementer(IHalfCloseableProtocol)
class DemuxProtocol(Protocol):
    """
    Reads a connection's first bytes until the route table decides, then
    passes the connection and those bytes to the route's target and every
    later event to the protocol the target returned.

    The wait is bounded twice: by the table's C{inspectDelay} (a timer on the
    injected clock) and by its C{maxPeek}; when either runs out, or the client
    stops sending, the routes still undecided count as no.
    """

    def __init__(self, table: RouteTable, clock: IReactorTime) -> None:
        self.table = table
        self.clock = clock
        self.peek = Peek()
        self.downstream: Protocol | None = None
        self.decided = False
        self._timer: IDelayedCall | None = None
        self._started = 0.0
        self._readClosed = False

    def connectionMade(self) -> None:
        self._started = self.clock.seconds()
        self._timer = self.clock.callLater(self.table.inspectDelay, self._timeUp)
        # A route may match before the client says anything (C{any}).
        self._consider(final=False, why="")

    def dataReceived(self, data: bytes) -> None:
        if self.downstream is not None:
            self.downstream.dataReceived(data)
            return
        if self.decided:
            # Refused and closing: nothing more is read or kept.
            return
        self.peek = self.peek.extended(data)
        if len(self.peek) >= self.table.maxPeek:
            self._consider(final=True, why=f"{len(self.peek)} bytes without a decision")
        else:
            self._consider(final=False, why="")

    def _timeUp(self) -> None:
        self._timer = None
        self._consider(
            final=True, why=f"no decision within {self.table.inspectDelay:g}s"
        )

    def _consider(self, final: bool, why: str) -> None:
        decision = decide(self.table, self.peek, final)
        if decision is not None:
            self._dispatch(decision, why)

    def _dispatch(self, decision: Decision, why: str) -> None:
        self.decided = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        peer: IAddress = self.transport.getPeer()  # type: ignore[union-attr]
        elapsed = self.clock.seconds() - self._started
        route = decision.route
        reason = f"{why}; {decision.reason}" if why else decision.reason
        fields: dict[str, Any] = dict(
            peer=_peerText(peer),
            reason=reason,
            peeked=len(self.peek),
            decideMs=elapsed * 1000,
        )
        if route is None:
            log.info(
                "{peer} refused: {reason} ({peeked} bytes peeked, "
                "{decideMs:.2f} ms)",
                route=None,
                **fields,
            )
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        log.info(
            "{peer} route={route} ({reason}) -> {target}, {peeked} bytes "
            "peeked, decided in {decideMs:.2f} ms",
            route=route.name,
            target=route.target.description,
            **fields,
        )
        data = self.peek.data
        self.peek = Peek()
        self.downstream = route.target.handOff(
            self.transport, data, self.clock, peer, route.name  # type: ignore[arg-type]
        )
        if self._readClosed:
            self._halfCloseDownstream()

    def _halfCloseDownstream(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.downstream, None)
        if halfCloseable is not None:
            halfCloseable.readConnectionLost()
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self._readClosed = True
        if self.downstream is not None:
            self._halfCloseDownstream()
        elif not self.decided:
            self._consider(final=True, why="client stopped sending")

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.downstream, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.downstream is not None:
            self.downstream.connectionLost(reason)
        elif not self.decided:
            self.decided = True
            log.info(
                "{peer} closed before a route was decided ({peeked} bytes "
                "peeked, {decideMs:.2f} ms)",
                peer=_peerText(self.transport.getPeer()),  # type: ignore[union-attr]
                peeked=len(self.peek),
                decideMs=(self.clock.seconds() - self._started) * 1000,
                route=None,
            )


class DemuxFactory(Factory):
    """
    Serve a listening port with a route table.

    @ivar table: the routes new connections are decided with; replacing it
        (a reload) changes only connections accepted afterwards.
    """

    protocol = DemuxProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, table: RouteTable, reactor: IReactorTime | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor  # type: ignore[assignment]
        self.table = table
        self.reactor: IReactorTime = reactor  # type: ignore[assignment]

    def buildProtocol(self, addr: IAddress) -> DemuxProtocol:
        protocol = DemuxProtocol(self.table, self.reactor)
        protocol.factory = self
        return protocol

    def startFactory(self) -> None:
        for route in self.table.routes:
            if isinstance(route.target, LocalTarget):
                route.target.factory.doStart()

    def stopFactory(self) -> None:
        for route in self.table.routes:
            if isinstance(route.target, LocalTarget):
                route.target.factory.doStop()
