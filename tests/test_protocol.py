"""
The demux protocol's decisions and timing, in memory: no sockets, no real
time.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from demux import (
    MATCH,
    NO_MATCH,
    DemuxFactory,
    LocalTarget,
    Peek,
    Route,
    RouteTable,
    decide,
)

from ._fakes import HalfCloseTransport, RecordingFactory, ScriptedMatcher, startsWith


def route(name: str, matcher: object, factory: RecordingFactory) -> Route:
    return Route(name, matcher, LocalTarget(factory, name))  # type: ignore[arg-type]


class DecideTests(SynchronousTestCase):
    """
    L{decide}: the first route that matches wins, but only once every earlier
    route has said no.
    """

    def setUp(self) -> None:
        self.a = RecordingFactory()

    def test_firstMatchWins(self) -> None:
        table = RouteTable(
            [
                route("one", startsWith(b"AB"), self.a),
                route("two", startsWith(b"A"), self.a),
            ]
        )
        decision = decide(table, Peek(b"AB"), final=False)
        assert decision is not None and decision.route is not None
        self.assertEqual(decision.route.name, "one")
        decision = decide(table, Peek(b"AC"), final=False)
        assert decision is not None and decision.route is not None
        self.assertEqual(decision.route.name, "two")

    def test_waitForEarlierRoute(self) -> None:
        """
        A later route that already matches waits while an earlier one still
        needs bytes; when the wait ends, the undecided one counts as no.
        """
        table = RouteTable(
            [
                route("slow", ScriptedMatcher(10, MATCH), self.a),
                route("fast", ScriptedMatcher(1, MATCH), self.a),
            ]
        )
        self.assertIsNone(decide(table, Peek(b"abc"), final=False))
        decision = decide(table, Peek(b"abc"), final=True)
        assert decision is not None and decision.route is not None
        self.assertEqual(decision.route.name, "fast")

    def test_allRefuse(self) -> None:
        table = RouteTable(
            [route("x", startsWith(b"X"), self.a)], onTimeout="x"
        )
        decision = decide(table, Peek(b"junk"), final=False)
        assert decision is not None
        self.assertIsNone(decision.route)
        self.assertEqual(decision.reason, "no route matched")
        # Refused outright is refused even at the end of the wait.
        decision = decide(table, Peek(b"junk"), final=True)
        assert decision is not None
        self.assertIsNone(decision.route)

    def test_onTimeout(self) -> None:
        table = RouteTable(
            [
                route("x", startsWith(b"XYZ"), self.a),
                route("banner", ScriptedMatcher(0, NO_MATCH), self.a),
            ],
            onTimeout="banner",
        )
        self.assertIsNone(decide(table, Peek(b""), final=False))
        decision = decide(table, Peek(b""), final=True)
        assert decision is not None and decision.route is not None
        self.assertEqual(decision.route.name, "banner")

    def test_undecidedWithoutOnTimeout(self) -> None:
        table = RouteTable([route("x", startsWith(b"XYZ"), self.a)])
        decision = decide(table, Peek(b"XY"), final=True)
        assert decision is not None
        self.assertIsNone(decision.route)
        self.assertIn("undecided", decision.reason)

    def test_tableChecks(self) -> None:
        from demux import ConfigError

        r = route("x", startsWith(b"X"), self.a)
        self.assertRaises(ConfigError, RouteTable, [r, r])
        self.assertRaises(ConfigError, RouteTable, [r], onTimeout="nope")
        self.assertRaises(ConfigError, RouteTable, [r], inspectDelay=0)
        self.assertRaises(ConfigError, RouteTable, [r], maxPeek=0)


class WaitsForBytesTests(SynchronousTestCase):
    """
    L{RouteTable.waitsForBytes} says whether L{decide} waits for every
    client that has sent nothing, so that the protocol need not ask.
    """

    def table(self, *routes: Route) -> RouteTable:
        return RouteTable(list(routes))

    def test_answers(self) -> None:
        """
        A first route that needs bytes: wait.  A route that matches or
        fails on no bytes before one that waits for everybody: not known.
        A waiting route that some clients cannot take does not count.
        """
        from demux import SourceFilter

        f = RecordingFactory()
        needs = route("needs", startsWith(b"x"), f)
        anything = route("any", ScriptedMatcher(0), f)
        never = route("never", ScriptedMatcher(0, NO_MATCH), f)

        def broken(data: bytes) -> object:
            raise ValueError("broken")

        failing = route("failing", ScriptedMatcher(0, judge=broken), f)  # type: ignore[arg-type]
        some = Route(
            "some",
            startsWith(b"x"),
            LocalTarget(f, "some"),
            sources=SourceFilter(deny=(ipaddress.ip_network("10.0.0.0/8"),)),
        )
        self.assertTrue(self.table(needs).waitsForBytes())
        self.assertTrue(self.table(never, needs, anything).waitsForBytes())
        self.assertFalse(self.table(anything, needs).waitsForBytes())
        self.assertFalse(self.table(failing, needs).waitsForBytes())
        self.assertFalse(self.table(some, never).waitsForBytes())
        self.assertTrue(self.table(some, needs).waitsForBytes())
        self.assertFalse(self.table(never).waitsForBytes())

    def test_agreesWithDecide(self) -> None:
        """
        Wherever it says wait, L{decide} does wait for a client that has
        sent nothing, from any address.
        """
        from demux import SourceFilter

        f = RecordingFactory()
        deny = SourceFilter(deny=(ipaddress.ip_network("10.0.0.0/8"),))
        allow = SourceFilter(allow=(ipaddress.ip_network("10.0.0.0/8"),))
        pieces = [
            route("needs", startsWith(b"x"), f),
            route("any", ScriptedMatcher(0), f),
            route("never", ScriptedMatcher(0, NO_MATCH), f),
            Route("deny", startsWith(b"x"), LocalTarget(f, "deny"), sources=deny),
            Route("allow", ScriptedMatcher(0), LocalTarget(f, "allow"), sources=allow),
        ]
        addresses = [None, ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("192.0.2.1")]
        for first in pieces:
            for second in pieces:
                if first.name == second.name:
                    continue
                table = self.table(first, second)
                if table.waitsForBytes():
                    for address in addresses:
                        self.assertIsNone(decide(table, Peek(), False, address))


class ProtocolTests(SynchronousTestCase):
    """
    L{DemuxProtocol}: buffering, deadlines, caps and the hand-over.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.ssh = RecordingFactory()
        self.other = RecordingFactory()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(self, table: RouteTable) -> tuple[Protocol, HalfCloseTransport]:
        factory = DemuxFactory(table, self.clock)
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = HalfCloseTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def table(self, **kw: object) -> RouteTable:
        return RouteTable(
            [
                route("ssh", startsWith(b"SSH-"), self.ssh),
                route("other", startsWith(b"HELLO"), self.other),
            ],
            **kw,  # type: ignore[arg-type]
        )

    def decisions(self) -> list[LogEvent]:
        return [e for e in self.events if "route" in e and "decideMs" in e]

    def test_peekedBytesFirstThenStraightThrough(self) -> None:
        """
        Bytes read while deciding reach the target first, as they came, and
        later bytes go straight on.
        """
        protocol, transport = self.connect(self.table())
        protocol.dataReceived(b"SS")
        self.assertEqual(self.ssh.protocols, [])
        protocol.dataReceived(b"H-2.0-x\r\n")
        [target] = self.ssh.protocols
        self.assertEqual(target.received, [b"SSH-2.0-x\r\n"])
        protocol.dataReceived(b"more")
        self.assertEqual(target.received, [b"SSH-2.0-x\r\n", b"more"])
        self.assertIs(target.transport, transport)
        # The decision is logged when the connection ends, in its one line.
        self.assertEqual(self.decisions(), [])
        protocol.connectionLost(None)  # type: ignore[arg-type]
        [event] = self.decisions()
        self.assertEqual(event["route"], "ssh")
        self.assertEqual(event["peeked"], 11)

    def test_refusedIsClosedAndLogged(self) -> None:
        protocol, transport = self.connect(self.table())
        protocol.dataReceived(b"\x00junk")
        self.assertTrue(transport.disconnecting)
        [event] = self.decisions()
        self.assertIsNone(event["route"])
        self.assertEqual(event["reason"], "no route matched")
        # Nothing is kept after the refusal.
        protocol.dataReceived(b"more")
        self.assertEqual(len(protocol.peek), 5)  # type: ignore[attr-defined]

    def test_silentClientClosedAtDeadline(self) -> None:
        protocol, transport = self.connect(self.table(inspectDelay=3))
        self.clock.advance(2.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        [event] = self.decisions()
        self.assertIn("no decision within 3s", event["reason"])

    def test_silentClientTakesOnTimeoutRoute(self) -> None:
        protocol, transport = self.connect(
            self.table(inspectDelay=3, onTimeout="other")
        )
        self.clock.advance(3)
        [target] = self.other.protocols
        self.assertEqual(target.received, [])
        self.assertFalse(transport.disconnecting)

    def test_slowClientPartialPrefix(self) -> None:
        """
        A client that trickles a prefix no route can decide is held only
        until the deadline, not reset by each byte.
        """
        protocol, transport = self.connect(self.table(inspectDelay=5))
        for _ in range(4):
            self.clock.advance(1)
            protocol.dataReceived(b"S" if _ == 0 else b"S")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_byteCap(self) -> None:
        """
        At C{maxPeek} bytes the undecided routes count as no.
        """
        table = RouteTable(
            [
                route("long", ScriptedMatcher(100, MATCH), self.ssh),
                route("short", ScriptedMatcher(1, MATCH), self.other),
            ],
            maxPeek=8,
        )
        protocol, transport = self.connect(table)
        protocol.dataReceived(b"1234567")
        self.assertEqual(self.other.protocols, [])
        protocol.dataReceived(b"89")
        [target] = self.other.protocols
        self.assertEqual(target.received, [b"123456789"])
        protocol.connectionLost(None)  # type: ignore[arg-type]
        [event] = self.decisions()
        self.assertIn("9 bytes without a decision", event["reason"])

    def test_clientHalfCloseDecides(self) -> None:
        """
        A client that stops sending ends the wait; the target still gets the
        bytes, and then the end of input.
        """
        table = RouteTable(
            [
                route("long", ScriptedMatcher(100, MATCH), self.ssh),
                route("short", ScriptedMatcher(1, MATCH), self.other),
            ]
        )
        protocol, transport = self.connect(table)
        protocol.dataReceived(b"abc")
        protocol.readConnectionLost()  # type: ignore[attr-defined]
        [target] = self.other.protocols
        self.assertEqual(target.received, [b"abc"])
        # The recorder is not half-closeable, so the connection is closed.
        self.assertTrue(transport.disconnecting)

    def test_clientGoneBeforeDecision(self) -> None:
        protocol, transport = self.connect(self.table())
        protocol.dataReceived(b"SS")
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.clock.getDelayedCalls(), [])
        [event] = self.decisions()
        self.assertIsNone(event["route"])

    def test_decidedCancelsTimer(self) -> None:
        protocol, transport = self.connect(self.table())
        protocol.dataReceived(b"HELLO")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_targetLosesConnection(self) -> None:
        protocol, transport = self.connect(self.table())
        protocol.dataReceived(b"HELLO")
        protocol.connectionLost(None)  # type: ignore[arg-type]
        [target] = self.other.protocols
        self.assertTrue(target.lost)

    def test_tableSwapOnlyAffectsNewConnections(self) -> None:
        factory = DemuxFactory(self.table(), self.clock)
        old = factory.buildProtocol(None)  # type: ignore[arg-type]
        old.makeConnection(HalfCloseTransport())
        factory.table = RouteTable([route("other", startsWith(b"SSH-"), self.other)])
        old.dataReceived(b"SSH-2.0-x\r\n")
        self.assertEqual(len(self.ssh.protocols), 1)
        new = factory.buildProtocol(None)  # type: ignore[arg-type]
        new.makeConnection(HalfCloseTransport())
        new.dataReceived(b"SSH-2.0-x\r\n")
        self.assertEqual(len(self.other.protocols), 1)

    def test_quietTable(self) -> None:
        """
        With C{logConnections} off, routed connections are not logged, but
        refusals still are.
        """
        table = RouteTable(
            [route("ssh", startsWith(b"SSH-"), self.ssh)], logConnections=False
        )
        protocol, transport = self.connect(table)
        protocol.dataReceived(b"SSH-2.0-x\r\n")
        self.assertEqual(len(self.ssh.protocols), 1)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.decisions(), [])
        protocol, transport = self.connect(table)
        protocol.dataReceived(b"junk")
        [event] = self.decisions()
        self.assertIsNone(event["route"])


class StateTests(SynchronousTestCase):
    """
    The protocol's explicit state, and the PROXY header path.
    """

    def test_headerAloneDecidesOnce(self) -> None:
        """
        A PROXY header with nothing after it has the routes asked once about
        the (empty) peek, not twice.
        """
        from twisted.internet.address import IPv4Address

        from demux._protocol import State

        seen: list[int] = []

        def judge(data: bytes) -> object:
            seen.append(len(data))
            return NO_MATCH if data else MATCH

        factory = RecordingFactory()
        table = RouteTable([route("any", ScriptedMatcher(0, judge=judge), factory)])  # type: ignore[arg-type]
        demux = DemuxFactory(table, MemoryReactorClock())
        protocol = demux.proxied().buildProtocol(IPv4Address("TCP", "10.0.0.9", 1))
        assert protocol is not None
        self.assertIs(protocol.state, State.HEADER)
        protocol.makeConnection(HalfCloseTransport())
        self.assertEqual(seen, [])
        protocol.dataReceived(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\n")
        self.assertEqual(seen, [0])
        self.assertIs(protocol.state, State.HANDED_OFF)
        self.assertEqual(demux.undecided, 0)

    def test_refusedState(self) -> None:
        """
        A refused connection is in the refused state and reads nothing more.
        """
        from demux._protocol import State

        table = RouteTable(
            [route("no", ScriptedMatcher(1, NO_MATCH), RecordingFactory())]
        )
        demux = DemuxFactory(table, MemoryReactorClock())
        protocol = demux.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(HalfCloseTransport())
        self.assertIs(protocol.state, State.PEEKING)
        protocol.dataReceived(b"x")
        self.assertIs(protocol.state, State.REFUSED)
        self.assertTrue(protocol.decided)
        protocol.dataReceived(b"more")
        self.assertEqual(len(protocol.peek), 1)
        self.assertEqual(demux.undecided, 0)


class BrokenMatcherTests(SynchronousTestCase):
    """
    A matcher that raises (a plugin's bug) counts as no match and is logged;
    it takes down neither the connection nor the reactor.
    """

    def test_brokenMatcherCountsAsNo(self) -> None:
        def explode(data: bytes) -> object:
            raise ValueError("bug in a plugin")

        good = RecordingFactory()
        table = RouteTable(
            [
                route("broken", ScriptedMatcher(0, judge=explode), RecordingFactory()),  # type: ignore[arg-type]
                route("good", startsWith(b"X"), good),
            ]
        )
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        protocol = DemuxFactory(table, MemoryReactorClock()).buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(HalfCloseTransport())
        protocol.dataReceived(b"X")
        self.assertEqual(len(good.protocols), 1)
        failures = [e for e in events if "error" in e]
        self.assertTrue(failures)
        for failure in failures:
            self.assertEqual(failure["route"], "broken")
            self.assertIsInstance(failure["error"], ValueError)
