"""
Targets (L{demux._targets}): what a local target does with a factory that
declines, and how each backend's dialer is chosen once.
"""

from __future__ import annotations

import ast
import inspect

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux import DemuxFactory, LocalTarget, Route, RouteTable, _targets
from demux._dial import (
    ConnectTCPDialer,
    EndpointDialer,
    IDialer,
    SocketDialer,
)
from demux._metrics import PrometheusObserver
from demux._targets import Backend

from ._fakes import startsWith


class _Declines(Factory):
    def buildProtocol(self, addr: object) -> Protocol | None:
        return None


def _active(observer: PrometheusObserver, route: str) -> float:
    value = observer.registry.get_sample_value(
        "demux_connections_active", {"route": route}
    )
    return 0.0 if value is None else value


class LocalTargetTests(SynchronousTestCase):
    def test_declinedIsCountedClosed(self) -> None:
        """
        A local target whose factory's C{buildProtocol} returns L{None}
        closes the connection and leaves C{demux_connections_active} where
        it was.
        """
        clock = MemoryReactorClock()
        observer = PrometheusObserver()
        table = RouteTable([Route("local", startsWith(b"HI"), LocalTarget(_Declines()))])
        factory = DemuxFactory(table, clock, observer)
        protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1234))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"HI there")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(_active(observer, "local"), 0)
        self.assertEqual(observer.routeCounts()["local"]["routed"], 1)

    def test_localEndDocstring(self) -> None:
        """
        C{_LocalEnd} has its docstring as a class (not as an attribute's).
        """
        tree = ast.parse(inspect.getsource(_targets._LocalEnd))
        self.assertIn("in-process protocol", ast.get_docstring(tree.body[0]) or "")


class DialerTests(SynchronousTestCase):
    """
    Each backend's dialer is chosen once, when the backend is made.
    """

    def test_socketDial(self) -> None:
        reactor = EPollReactor()
        backend = Backend(TCP4ClientEndpoint(reactor, "127.0.0.1", 22), "tcp:x")
        self.assertIsInstance(backend.dialer, SocketDialer)
        self.assertTrue(verifyObject(IDialer, backend.dialer))

    def test_hostName(self) -> None:
        reactor = EPollReactor()
        backend = Backend(TCP4ClientEndpoint(reactor, "localhost", 22), "tcp:x")
        self.assertIsInstance(backend.dialer, ConnectTCPDialer)

    def test_fakeReactor(self) -> None:
        """
        A reactor that watches no descriptors is dialled with C{connectTCP}.
        """
        backend = Backend(
            TCP4ClientEndpoint(MemoryReactorClock(), "127.0.0.1", 22), "tcp:x"
        )
        self.assertIsInstance(backend.dialer, ConnectTCPDialer)

    def test_otherEndpoint(self) -> None:
        backend = Backend(UNIXClientEndpoint(MemoryReactorClock(), "/x"), "unix:/x")
        self.assertIsInstance(backend.dialer, EndpointDialer)
