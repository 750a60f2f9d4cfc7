"""
Limits, timers and stopping, in memory: connection caps, the idle timeout,
lingering after one side is gone, the drain on stop and reloading.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from demux import BackendTarget, DemuxFactory, Route, RouteTable

from ._fakes import FakeEndpoint, HalfCloseTransport, ScriptedMatcher, startsWith


class AbortableTransport(HalfCloseTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


def addr(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 40000)


class LimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()

    def factory(self, **limits: int) -> DemuxFactory:
        target = BackendTarget(self.endpoint, "fake")
        table = RouteTable([Route("x", startsWith(b"X"), target)], **limits)  # type: ignore[arg-type]
        return DemuxFactory(table, self.clock)

    def open(self, factory: DemuxFactory, host: str = "10.0.0.1") -> object:
        protocol = factory.buildProtocol(addr(host))
        if protocol is not None:
            protocol.makeConnection(AbortableTransport())
        return protocol

    def test_maxConnections(self) -> None:
        factory = self.factory(maxConnections=2)
        first = self.open(factory)
        self.assertIsNotNone(first)
        self.assertIsNotNone(self.open(factory))
        self.assertIsNone(self.open(factory))
        self.assertEqual(factory.refused, {"max_connections (2)": 1})
        first.connectionLost(None)  # type: ignore[attr-defined]
        self.assertIsNotNone(self.open(factory))

    def test_perSource(self) -> None:
        factory = self.factory(maxConnectionsPerSource=1)
        self.assertIsNotNone(self.open(factory, "10.0.0.1"))
        self.assertIsNone(self.open(factory, "10.0.0.1"))
        self.assertIsNotNone(self.open(factory, "10.0.0.2"))
        self.assertEqual(factory.perSource, {"10.0.0.1": 1, "10.0.0.2": 1})

    def test_maxUndecided(self) -> None:
        """
        Decided connections do not count against the undecided cap.
        """
        factory = self.factory(maxUndecided=1)
        first = self.open(factory)
        self.assertIsNone(self.open(factory))
        first.dataReceived(b"X")  # type: ignore[attr-defined]
        self.assertEqual(factory.undecided, 0)
        second = self.open(factory)
        self.assertIsNotNone(second)
        second.connectionLost(None)  # type: ignore[attr-defined]
        self.assertEqual(factory.undecided, 0)
        self.assertEqual(len(factory.active), 1)

    def test_refusalLogIsRateLimited(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        factory = self.factory(maxConnections=1)
        self.open(factory)
        for _ in range(100):
            self.open(factory)
        refusals = [e for e in events if "limit" in e]
        self.assertEqual(len(refusals), 1)
        self.clock.advance(1)
        self.open(factory)
        refusals = [e for e in events if "limit" in e]
        self.assertEqual(len(refusals), 2)
        self.assertEqual(refusals[-1]["total"], 101)


class RelayTimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()

    def connect(self, **target: float) -> tuple[object, AbortableTransport, object]:
        backend = BackendTarget(self.endpoint, "fake", **target)  # type: ignore[arg-type]
        table = RouteTable([Route("x", ScriptedMatcher(1), backend)])
        factory = DemuxFactory(table, self.clock)
        protocol = factory.buildProtocol(None)
        client = AbortableTransport()
        protocol.makeConnection(client)  # type: ignore[union-attr]
        protocol.dataReceived(b"X")  # type: ignore[union-attr]
        [attempt] = self.endpoint.attempts
        attempt.transport = AbortableTransport()
        server = attempt.factory.buildProtocol(None)
        attempt.protocol = server
        server.makeConnection(attempt.transport)  # type: ignore[union-attr]
        attempt.deferred.callback(server)
        return protocol, client, attempt

    def test_idleTimeout(self) -> None:
        protocol, client, attempt = self.connect(idleTimeout=10)
        # Activity keeps it open.
        for _ in range(5):
            self.clock.advance(6)
            protocol.dataReceived(b"tick")  # type: ignore[attr-defined]
        self.assertFalse(client.aborted)
        # Silence closes it within two timeouts.
        self.clock.advance(10)
        self.assertFalse(client.aborted)
        self.clock.advance(10)
        self.assertTrue(client.aborted)
        self.assertTrue(attempt.transport.aborted)  # type: ignore[attr-defined]

    def test_noIdleTimeoutByDefault(self) -> None:
        protocol, client, attempt = self.connect()
        self.clock.advance(86400)
        self.assertFalse(client.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lingerThenAbort(self) -> None:
        """
        When the backend is gone, the client gets what was sent to it; if it
        never reads it, it is cut off after the linger time.
        """
        protocol, client, attempt = self.connect(linger=5)
        attempt.protocol.dataReceived(b"answer")  # type: ignore[attr-defined]
        attempt.protocol.connectionLost(None)  # type: ignore[attr-defined]
        self.assertTrue(client.disconnecting)
        self.assertFalse(client.aborted)
        self.clock.advance(5)
        self.assertTrue(client.aborted)

    def test_timersGoneAfterClose(self) -> None:
        protocol, client, attempt = self.connect(idleTimeout=10, linger=5)
        attempt.protocol.connectionLost(None)  # type: ignore[attr-defined]
        protocol.connectionLost(None)  # type: ignore[attr-defined]
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        table = RouteTable([Route("x", ScriptedMatcher(1), BackendTarget(FakeEndpoint(), "f"))])
        self.factory = DemuxFactory(table, self.clock)

    def test_nothingOpen(self) -> None:
        self.successResultOf(self.factory.drain(10))

    def test_waitsThenAborts(self) -> None:
        protocol = self.factory.buildProtocol(None)
        transport = AbortableTransport()
        protocol.makeConnection(transport)  # type: ignore[union-attr]
        d = self.factory.drain(10)
        self.assertNoResult(d)
        self.clock.advance(9)
        self.assertFalse(transport.aborted)
        self.clock.advance(1)
        self.assertTrue(transport.aborted)
        protocol.connectionLost(None)  # type: ignore[union-attr]
        self.successResultOf(d)

    def test_finishesEarly(self) -> None:
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(AbortableTransport())  # type: ignore[union-attr]
        d = self.factory.drain(10)
        protocol.connectionLost(None)  # type: ignore[union-attr]
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
