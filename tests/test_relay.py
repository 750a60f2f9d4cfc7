"""
The relay to a backend, in memory: order of bytes, flow control, half-close
and failures.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from demux import BackendTarget, DemuxFactory, Route, RouteTable

from ._fakes import FakeEndpoint, HalfCloseTransport, startsWith


class RelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        target = BackendTarget(self.endpoint, "fake:backend", connectTimeout=4)
        table = RouteTable([Route("ssh", startsWith(b"SSH-"), target)])
        self.protocol = DemuxFactory(table, self.clock).buildProtocol(None)  # type: ignore[arg-type]
        self.client = HalfCloseTransport()
        self.protocol.makeConnection(self.client)

    def decideAndConnect(self) -> HalfCloseTransport:
        self.protocol.dataReceived(b"SSH-2.0-x\r\n")
        [attempt] = self.endpoint.attempts
        attempt.succeed()
        assert attempt.transport is not None
        return attempt.transport  # type: ignore[return-value]

    def test_pausedWhileDialling(self) -> None:
        self.protocol.dataReceived(b"SSH-")
        self.assertEqual(self.client.producerState, "paused")
        [attempt] = self.endpoint.attempts
        attempt.succeed()
        self.assertEqual(self.client.producerState, "producing")

    def test_peekedBytesFirst(self) -> None:
        self.protocol.dataReceived(b"SS")
        self.protocol.dataReceived(b"H-2.0-x\r\n")
        [attempt] = self.endpoint.attempts
        attempt.succeed()
        backend = attempt.transport
        assert backend is not None
        self.assertEqual(backend.value(), b"SSH-2.0-x\r\n")
        self.protocol.dataReceived(b"next")
        self.assertEqual(backend.value(), b"SSH-2.0-x\r\nnext")
        assert attempt.protocol is not None
        attempt.protocol.dataReceived(b"reply")
        self.assertEqual(self.client.value(), b"reply")

    def test_eachIsTheOthersProducer(self) -> None:
        backend = self.decideAndConnect()
        self.assertIs(backend.producer, self.client)
        self.assertIs(self.client.producer, backend)
        self.assertTrue(backend.streaming)
        self.assertTrue(self.client.streaming)

    def test_clientHalfClose(self) -> None:
        """
        The client's end of input shuts the backend's write side, and the
        backend's answer still reaches the client.
        """
        backend = self.decideAndConnect()
        [attempt] = self.endpoint.attempts
        self.protocol.readConnectionLost()  # type: ignore[attr-defined]
        self.assertTrue(backend.writeClosed)
        self.assertFalse(self.client.disconnecting)
        attempt.protocol.dataReceived(b"answer")  # type: ignore[union-attr]
        self.assertEqual(self.client.value(), b"answer")
        # The backend finishes too: the client's write side is shut, and
        # once TCP reports it the client connection is closed.
        attempt.protocol.readConnectionLost()  # type: ignore[union-attr]
        self.assertTrue(self.client.writeClosed)
        self.protocol.writeConnectionLost()  # type: ignore[attr-defined]
        self.assertTrue(self.client.disconnecting)

    def test_backendHalfClose(self) -> None:
        backend = self.decideAndConnect()
        [attempt] = self.endpoint.attempts
        attempt.protocol.readConnectionLost()  # type: ignore[union-attr]
        self.assertTrue(self.client.writeClosed)
        self.assertFalse(backend.disconnecting)
        self.protocol.dataReceived(b"still sending")
        self.assertTrue(backend.value().endswith(b"still sending"))

    def test_clientHalfClosedBeforeBackendConnects(self) -> None:
        self.protocol.dataReceived(b"SSH-2.0-x\r\n")
        self.protocol.readConnectionLost()  # type: ignore[attr-defined]
        [attempt] = self.endpoint.attempts
        attempt.succeed()
        backend = attempt.transport
        assert backend is not None
        self.assertEqual(backend.value(), b"SSH-2.0-x\r\n")
        self.assertTrue(backend.writeClosed)

    def test_backendRefuses(self) -> None:
        self.protocol.dataReceived(b"SSH-2.0-x\r\n")
        [attempt] = self.endpoint.attempts
        attempt.fail(ConnectionRefusedError())
        self.assertTrue(self.client.disconnecting)

    def test_connectTimeout(self) -> None:
        self.protocol.dataReceived(b"SSH-2.0-x\r\n")
        self.clock.advance(3.9)
        self.assertFalse(self.client.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(self.endpoint.cancelled, 1)
        self.assertTrue(self.client.disconnecting)

    def test_clientGoneWhileDialling(self) -> None:
        self.protocol.dataReceived(b"SSH-2.0-x\r\n")
        self.protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.endpoint.cancelled, 1)

    def test_backendDiesMidStream(self) -> None:
        self.decideAndConnect()
        [attempt] = self.endpoint.attempts
        attempt.protocol.dataReceived(b"partial")  # type: ignore[union-attr]
        attempt.protocol.connectionLost(None)  # type: ignore[union-attr]
        self.assertEqual(self.client.value(), b"partial")
        self.assertTrue(self.client.disconnecting)

    def test_clientDiesMidStream(self) -> None:
        backend = self.decideAndConnect()
        self.protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertTrue(backend.disconnecting)


class OneLineTests(SynchronousTestCase):
    """
    With C{logDecisions} off, a relayed connection is logged once, when it
    ends, and that line carries its decision too.
    """

    def test_oneLine(self) -> None:
        from twisted.logger import LogEvent, formatEvent, globalLogPublisher

        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = MemoryReactorClock()
        endpoint = FakeEndpoint()
        target = BackendTarget(endpoint, "tcp:ssh")
        table = RouteTable([Route("ssh", startsWith(b"SSH-"), target)], logDecisions=False)
        protocol = DemuxFactory(table, clock).buildProtocol(None)
        assert protocol is not None
        client = HalfCloseTransport()
        protocol.makeConnection(client)
        protocol.dataReceived(b"SSH-2.0-x\r\n")
        [attempt] = endpoint.attempts
        attempt.succeed()
        attempt.protocol.dataReceived(b"hello")  # type: ignore[union-attr]
        self.assertEqual([e for e in events if e.get("route") == "ssh"], [])
        clock.advance(2)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        attempt.protocol.connectionLost(None)  # type: ignore[union-attr]
        [line] = [e for e in events if e.get("route") == "ssh"]
        text = formatEvent(line)
        self.assertTrue(
            text.startswith("192.168.1.1:54321 route=ssh (prefix=b'SSH-') -> tcp:ssh, 11 bytes peeked"),
            text,
        )
        self.assertIn("; closed: 11 bytes up, 5 bytes down, 2.000s", text)
        self.assertEqual(
            (line["reason"], line["target"], line["peeked"], line["bytesDown"]),
            ("prefix=b'SSH-'", "tcp:ssh", 11, 5),
        )
