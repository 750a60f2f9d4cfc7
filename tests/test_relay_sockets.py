"""
The relay over real loopback sockets, on a private epoll reactor iterated by
hand: what only real transports show.
"""

from __future__ import annotations

import gc
import socket

from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from demux import BackendTarget, DemuxFactory, Route, RouteTable
from demux._protocol import DemuxProtocol
from demux._relay import RelaySession, _RelayEnd

from ._fakes import iterateUntil, startsWith


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Answers with what it was sent, and closes once the client has finished.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class RealSocketRelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor.disconnectAll)
        backend = self.reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(backend.stopListening)
        target = BackendTarget(
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", backend.getHost().port),
            "tcp:echo",
        )
        table = RouteTable([Route("echo", startsWith(b"HELLO"), target)])
        self.factory = DemuxFactory(table, self.reactor)
        self.port = self.reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def relayOnce(self) -> bytes:
        """
        One client through demux to the echo backend: send, half-close, read
        everything until the close.
        """
        client = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        client.setblocking(False)
        client.sendall(b"HELLO demux")
        client.shutdown(socket.SHUT_WR)
        got = b""
        closed = False

        def finished() -> bool:
            nonlocal got, closed
            try:
                chunk = client.recv(100)
            except BlockingIOError:
                return False
            if not chunk:
                closed = True
            got += chunk
            return closed

        try:
            iterateUntil(self.reactor, finished)
        finally:
            client.close()
        # Let demux see the last of both sockets.
        for _ in range(5):
            self.reactor.iterate(0.01)
        return got

    def test_finishedConnectionLeavesNoCycles(self) -> None:
        """
        A relayed connection, once closed, is freed by reference counting
        alone: nothing of it is left for the garbage collector, whose passes
        pause the reactor for every connection in flight.
        """
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        self.assertEqual(self.relayOnce(), b"HELLO demux")
        gc.set_debug(gc.DEBUG_SAVEALL)
        self.addCleanup(gc.set_debug, 0)
        self.addCleanup(gc.garbage.clear)
        gc.collect()
        left = [
            type(o).__name__
            for o in gc.garbage
            if isinstance(o, DemuxProtocol | RelaySession | _RelayEnd)
        ]
        self.assertEqual(left, [])
        self.assertEqual(self.factory.undecided, 0)
