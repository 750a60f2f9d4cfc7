"""
How many lines a routed connection costs the log, and what they say: by
default one, when the connection ends, with its decision in it (HAProxy's
C{tcplog} shape), whatever the route's target; with C{log_decisions = true}
the decision has its own line too, when it is made.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from demux import (
    DemuxFactory,
    HTTPForwardTarget,
    LocalTarget,
    Route,
    RouteTable,
    configFromDict,
)

from ._fakes import FakeEndpoint, HalfCloseTransport, RecordingFactory, startsWith

PEER = "192.168.1.1:54321"
"""The client's address as a L{HalfCloseTransport} gives it."""


class _Declines(Factory):
    def buildProtocol(self, addr: object) -> Protocol | None:
        return None


class LogLines(SynchronousTestCase):
    """
    Records demux's log events, for the lines of one connection.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, route: str) -> list[str]:
        """
        The text of every line logged for C{route}.
        """
        return [formatEvent(e) for e in self.routeEvents(route)]

    def routeEvents(self, route: str) -> list[LogEvent]:
        return [e for e in self.events if e.get("route") == route]


class ConfiguredRelayTests(LogLines):
    """
    A relayed connection of a configuration loaded as C{twistd demux} loads
    it, to a C{tcp:} backend dialled on a memory reactor.
    """

    def connect(self, **top: object) -> tuple[Any, MemoryReactorClock, HalfCloseTransport]:
        reactor = MemoryReactorClock()
        data: dict[str, object] = {
            "listen": ["tcp:4443"],
            "routes": [
                {
                    "name": "ssh",
                    "match": {"prefix": {"text": "SSH-"}},
                    "backend": "tcp:127.0.0.1:2222",
                }
            ],
        }
        data.update(top)
        config = configFromDict(data, reactor)
        protocol = DemuxFactory(config.table, reactor).buildProtocol(None)  # type: ignore[arg-type]
        assert protocol is not None
        client = HalfCloseTransport()
        protocol.makeConnection(client)
        reactor.advance(0.25)
        protocol.dataReceived(b"SSH-2.0-x\r\n")
        return protocol, reactor, client

    def backendConnects(self, reactor: MemoryReactorClock) -> Protocol:
        [(host, port, factory, _, _)] = reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 2222))
        backend = factory.buildProtocol(None)
        backend.makeConnection(HalfCloseTransport())
        return backend  # type: ignore[no-any-return]

    def test_oneLineByDefault(self) -> None:
        """
        By default a relayed connection is logged once, when it ends; the
        line carries the route, why, the target, the bytes peeked, the
        time to decide, the bytes each way and the duration, and the event
        has them as fields too.
        """
        protocol, reactor, client = self.connect()
        backend = self.backendConnects(reactor)
        backend.dataReceived(b"SSH-2.0-server\r\n")
        self.assertEqual(self.lines("ssh"), [])
        reactor.advance(2)
        protocol.connectionLost(connectionDone)
        backend.connectionLost(connectionDone)
        [text] = self.lines("ssh")
        self.assertEqual(
            text,
            f"{PEER} route=ssh (prefix=5353482d) -> tcp:127.0.0.1:2222, 11 bytes "
            "peeked, decided in 250.00 ms; closed: 11 bytes up, 16 bytes down, 2.000s",
        )
        [event] = self.routeEvents("ssh")
        self.assertEqual(
            {k: event[k] for k in ("peer", "reason", "target", "peeked", "decideMs")},
            {
                "peer": PEER,
                "reason": "prefix=5353482d",
                "target": "tcp:127.0.0.1:2222",
                "peeked": 11,
                "decideMs": 250.0,
            },
        )
        self.assertEqual(
            (event["bytesUp"], event["bytesDown"], event["duration"]), (11, 16, 2.0)
        )

    def test_logDecisions(self) -> None:
        """
        With C{log_decisions = true}, the decision is logged when it is made
        and the end in a line of its own: two lines.
        """
        protocol, reactor, client = self.connect(log_decisions=True)
        [decided] = self.lines("ssh")
        self.assertEqual(
            decided,
            f"{PEER} route=ssh (prefix=5353482d) -> tcp:127.0.0.1:2222, 11 bytes "
            "peeked, decided in 250.00 ms",
        )
        backend = self.backendConnects(reactor)
        backend.dataReceived(b"SSH-2.0-server\r\n")
        reactor.advance(2)
        protocol.connectionLost(connectionDone)
        backend.connectionLost(connectionDone)
        self.assertEqual(
            self.lines("ssh"),
            [decided, f"{PEER} route=ssh closed: 11 bytes up, 16 bytes down, 2.000s"],
        )
        self.assertNotIn("reason", self.routeEvents("ssh")[1])

    def test_backendRefused(self) -> None:
        """
        A connection whose backend refuses it is logged at once, with why,
        and its one closing line still says how it was routed.
        """
        protocol, reactor, client = self.connect()
        [(_, _, factory, _, _)] = reactor.tcpClients
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        [failed] = self.lines("ssh")
        self.assertIn(f"{PEER} route=ssh backend tcp:127.0.0.1:2222 failed: ", failed)
        self.assertTrue(client.disconnecting)
        protocol.connectionLost(connectionDone)
        [_, closed] = self.lines("ssh")
        self.assertTrue(
            closed.startswith(
                f"{PEER} route=ssh (prefix=5353482d) -> tcp:127.0.0.1:2222, 11 bytes "
                "peeked, decided in 250.00 ms; closed: 11 bytes up, 0 bytes down"
            ),
            closed,
        )


class TargetTests(LogLines):
    """
    Every kind of target puts the decision in the line that ends the
    connection, unless it had a line of its own.
    """

    def connect(self, table: RouteTable, data: bytes) -> tuple[Protocol, StringTransport]:
        clock = MemoryReactorClock()
        self.clock = clock
        protocol = DemuxFactory(table, clock).buildProtocol(None)  # type: ignore[arg-type]
        assert protocol is not None
        transport = HalfCloseTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        return protocol, transport

    def test_local(self) -> None:
        recorder = RecordingFactory()
        table = RouteTable([Route("hi", startsWith(b"HI"), LocalTarget(recorder, "the greeter"))])
        protocol, _ = self.connect(table, b"HI there")
        self.assertEqual(self.lines("hi"), [])
        self.clock.advance(1)
        protocol.connectionLost(connectionDone)
        self.assertEqual(
            self.lines("hi"),
            [
                f"{PEER} route=hi (prefix=b'HI') -> the greeter, 8 bytes peeked, "
                "decided in 0.00 ms; closed: 8 bytes up, 1.000s (in-process)"
            ],
        )

    def test_localDeclined(self) -> None:
        """
        A connection the in-process factory declines never reaches a closing
        line of the protocol's: it gets one line all the same, with the
        decision and why it ended.
        """
        table = RouteTable([Route("hi", startsWith(b"HI"), LocalTarget(_Declines(), "no one"))])
        _, transport = self.connect(table, b"HI")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.lines("hi"),
            [
                f"{PEER} route=hi (prefix=b'HI') -> no one, 2 bytes peeked, decided in "
                "0.00 ms; closed: declined by the in-process protocol factory"
            ],
        )

    def test_localDeclinedLogDecisions(self) -> None:
        """
        With C{logDecisions}, a declined connection's decision line is its
        only line.
        """
        table = RouteTable(
            [Route("hi", startsWith(b"HI"), LocalTarget(_Declines(), "no one"))],
            logDecisions=True,
        )
        self.connect(table, b"HI")
        self.assertEqual(
            self.lines("hi"),
            [f"{PEER} route=hi (prefix=b'HI') -> no one, 2 bytes peeked, decided in 0.00 ms"],
        )

    def test_forwarder(self) -> None:
        endpoint = FakeEndpoint()
        target = HTTPForwardTarget(endpoint, "http://backend")
        table = RouteTable([Route("web", startsWith(b"GET "), target)])
        protocol, client = self.connect(table, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        [attempt] = endpoint.attempts
        attempt.succeed()
        assert attempt.protocol is not None
        attempt.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.lines("web"), [])
        protocol.connectionLost(connectionDone)
        [text] = self.lines("web")
        self.assertTrue(
            text.startswith(
                f"{PEER} route=web (prefix=b'GET ') -> http://backend, 27 bytes "
                "peeked, decided in 0.00 ms; closed: 1 requests, 27 bytes up, "
            ),
            text,
        )
        [event] = self.routeEvents("web")
        self.assertEqual((event["reason"], event["requests"]), ("prefix=b'GET '", 1))

    def test_forwarderLogDecisions(self) -> None:
        endpoint = FakeEndpoint()
        target = HTTPForwardTarget(endpoint, "http://backend")
        table = RouteTable([Route("web", startsWith(b"GET "), target)], logDecisions=True)
        protocol, client = self.connect(table, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        protocol.connectionLost(connectionDone)
        [decided, closed] = self.lines("web")
        self.assertTrue(decided.startswith(f"{PEER} route=web (prefix=b'GET ') -> "), decided)
        self.assertTrue(closed.startswith(f"{PEER} route=web closed: 1 requests"), closed)


class EmitTests(SynchronousTestCase):
    """
    demux's pre-formatted lines are the events Twisted's logger would make.
    """

    def test_sameEventAsLogger(self) -> None:
        """
        A line from L{demux._log} is the event C{Logger.emit} makes for the
        same text and fields, but for its time, and reaches the same
        observer.
        """
        from twisted.logger import Logger, LogLevel

        from demux import _log

        seen: list[dict[str, Any]] = []
        logger = Logger(namespace="demux", observer=seen.append)
        self.patch(_log, "log", logger)
        _log.closed("1.2.3.4:5", "ssh", 10, 20, 1.5, None, False, None)
        logger.emit(
            LogLevel.info,
            "{text}",
            text=seen[0]["text"],
            peer="1.2.3.4:5",
            route="ssh",
            bytesUp=10,
            bytesDown=20,
            duration=1.5,
            backendError=None,
            spliced=False,
        )
        ours, theirs = seen
        self.assertLess(abs(ours.pop("log_time") - theirs.pop("log_time")), 5)
        self.assertEqual(ours, theirs)
        self.assertEqual(
            formatEvent(ours), "1.2.3.4:5 route=ssh closed: 10 bytes up, 20 bytes down, 1.500s"
        )
