"""
The timeout rule of L{decide}: a connection still undecided when demux stops
waiting goes to C{on_timeout}, before any catch-all; one every route refused
goes to the catch-all or is closed.  Each case of the rule in the
configuration reference has a test here, with the built-in matchers where
the case is about them (C{ssh}, C{regex}, C{any}) and in memory.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from demux import (
    NO_MATCH,
    DemuxFactory,
    LocalTarget,
    Peek,
    Route,
    RouteTable,
    SourceFilter,
    decide,
    findMatcherFactory,
    matcherFactories,
)

from ._fakes import HalfCloseTransport, RecordingFactory, ScriptedMatcher


def builtin(name: str, options: object = None) -> object:
    return findMatcherFactory(name, matcherFactories()).build({} if options is None else options)


class SslhStyle:
    """
    The sslh-style table: C{ssh} first and named by C{on_timeout}, a regex
    route that needs four bytes, and a last catch-all.
    """

    def __init__(self, onTimeout: str | None = "ssh", **kw: object) -> None:
        self.ssh = RecordingFactory()
        self.four = RecordingFactory()
        self.rest = RecordingFactory()
        self.table = RouteTable(
            [
                Route("ssh", builtin("ssh"), LocalTarget(self.ssh, "ssh")),  # type: ignore[arg-type]
                Route("four", builtin("regex", "^foob"), LocalTarget(self.four, "four")),  # type: ignore[arg-type]
                Route("rest", builtin("any"), LocalTarget(self.rest, "rest")),  # type: ignore[arg-type]
            ],
            onTimeout=onTimeout,
            **kw,  # type: ignore[arg-type]
        )


def routeName(table: RouteTable, data: bytes, **kw: object) -> str | None:
    decision = decide(table, Peek(data), **kw)  # type: ignore[arg-type]
    assert decision is not None, "no decision"
    return None if decision.route is None else decision.route.name


class DecideTimeoutRuleTests(SynchronousTestCase):
    """
    L{decide} with C{final}: every case of the rule.
    """

    def test_silentClientWaits(self) -> None:
        """
        Before the deadline a silent client is waited for, though the
        catch-all already matches.
        """
        self.assertIsNone(decide(SslhStyle().table, Peek(b""), final=False))

    def test_silentClientGoesToOnTimeout(self) -> None:
        """
        A client that sent nothing by the deadline goes to C{on_timeout},
        not to the last C{match.any} route.
        """
        table = SslhStyle().table
        self.assertEqual(routeName(table, b"", final=True), "ssh")
        decision = decide(table, Peek(b""), final=True)
        assert decision is not None
        self.assertEqual(decision.reason, "undecided (ssh waits), on_timeout")

    def test_threeBytesWhileARouteWaitsForFour(self) -> None:
        """
        C{foo}, while a later regex route waits for a fourth byte: C{ssh}
        has said no, C{four} still waits, C{any} matches; at the deadline
        it goes to C{on_timeout}.
        """
        table = SslhStyle().table
        self.assertIsNone(decide(table, Peek(b"foo"), final=False))
        self.assertEqual(routeName(table, b"foo", final=True), "ssh")
        decision = decide(table, Peek(b"foo"), final=True)
        assert decision is not None
        self.assertEqual(decision.reason, "undecided (four waits), on_timeout")

    def test_laterMatchWithoutOnTimeout(self) -> None:
        """
        Without C{on_timeout}, the routes still waiting count as no and the
        first later route that matches wins, as before.
        """
        table = SslhStyle(onTimeout=None).table
        self.assertEqual(routeName(table, b"foo", final=True), "rest")
        self.assertEqual(routeName(table, b"", final=True), "rest")

    def test_junkGoesToCatchAll(self) -> None:
        """
        Bytes every route refuses go to the catch-all at once, without
        waiting for the deadline, whether or not C{on_timeout} is set.
        """
        for onTimeout in ("ssh", None):
            table = SslhStyle(onTimeout=onTimeout).table
            self.assertEqual(routeName(table, b"\x00junk", final=False), "rest")
            self.assertEqual(routeName(table, b"\x00junk", final=True), "rest")

    def test_matchWins(self) -> None:
        """
        A route that matches, with every earlier route refusing, wins at
        the deadline too: on_timeout is for the undecided only.
        """
        table = SslhStyle().table
        self.assertEqual(routeName(table, b"foobar", final=False), "four")
        self.assertEqual(routeName(table, b"foobar", final=True), "four")

    def test_refusedWithoutCatchAllIsClosed(self) -> None:
        """
        A connection every route refused is closed, with or without
        C{on_timeout}, final or not.
        """
        ssh = RecordingFactory()
        table = RouteTable(
            [Route("ssh", builtin("ssh"), LocalTarget(ssh, "ssh"))],  # type: ignore[arg-type]
            onTimeout="ssh",
        )
        for final in (False, True):
            decision = decide(table, Peek(b"\x00junk"), final=final)
            assert decision is not None
            self.assertIsNone(decision.route)
            self.assertEqual(decision.kind, "no match")

    def test_undecidedWithoutOnTimeoutOrCatchAll(self) -> None:
        """
        Undecided at the deadline, with no C{on_timeout} and nothing later
        that matches: closed, counted as a timeout.
        """
        ssh = RecordingFactory()
        table = RouteTable([Route("ssh", builtin("ssh"), LocalTarget(ssh, "ssh"))])  # type: ignore[arg-type]
        decision = decide(table, Peek(b"SS"), final=True)
        assert decision is not None
        self.assertIsNone(decision.route)
        self.assertEqual(decision.kind, "timeout")

    def test_clientDoneCountsWaitingAsNo(self) -> None:
        """
        When the client stopped sending, no more bytes can come: the routes
        still waiting count as no, even with C{on_timeout}, so the catch-all
        takes the connection.
        """
        table = SslhStyle().table
        self.assertEqual(routeName(table, b"foo", final=True, clientDone=True), "rest")
        self.assertEqual(routeName(table, b"", final=True, clientDone=True), "rest")

    def test_clientDoneWithoutCatchAll(self) -> None:
        """
        ... and with no catch-all it is closed as unrecognised, not sent to
        C{on_timeout}.
        """
        ssh = RecordingFactory()
        table = RouteTable(
            [Route("ssh", builtin("ssh"), LocalTarget(ssh, "ssh"))],  # type: ignore[arg-type]
            onTimeout="ssh",
        )
        decision = decide(table, Peek(b"SS"), final=True, clientDone=True)
        assert decision is not None
        self.assertIsNone(decision.route)
        self.assertEqual(decision.kind, "no match")
        self.assertIn("client stopped sending", decision.reason)

    def test_onTimeoutWhateverItsMatcherSays(self) -> None:
        """
        The C{on_timeout} route takes an undecided connection even when its
        own matcher has refused the bytes (C{ssh} refuses C{foo}).
        """
        table = SslhStyle().table
        self.assertIs(builtin("ssh").match(Peek(b"foo")), NO_MATCH)  # type: ignore[attr-defined]
        self.assertEqual(routeName(table, b"foo", final=True), "ssh")

    def test_filteredRouteDoesNotWait(self) -> None:
        """
        A waiting route that the client's address may not take does not
        make the connection undecided.
        """
        a = RecordingFactory()
        table = RouteTable(
            [
                Route(
                    "inside",
                    ScriptedMatcher(10),
                    LocalTarget(a, "inside"),
                    SourceFilter(allow=(ipaddress.ip_network("10.0.0.0/8"),)),
                ),
                Route("rest", builtin("any"), LocalTarget(a, "rest")),  # type: ignore[arg-type]
            ],
            onTimeout="inside",
        )
        outside = ipaddress.ip_address("192.0.2.1")
        inside = ipaddress.ip_address("10.1.2.3")
        self.assertEqual(routeName(table, b"x", final=False, source=outside), "rest")
        self.assertIsNone(decide(table, Peek(b"x"), final=False, source=inside))
        self.assertEqual(routeName(table, b"x", final=True, source=inside), "inside")


class ProtocolTimeoutRuleTests(SynchronousTestCase):
    """
    The same rule as the protocol applies it: the deadline and the byte cap
    count as undecided, the client's half-close does not.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()

    def connect(self, table: RouteTable) -> tuple[Protocol, HalfCloseTransport]:
        factory = DemuxFactory(table, self.clock)
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = HalfCloseTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_deadline(self) -> None:
        routes = SslhStyle(inspectDelay=3)
        protocol, transport = self.connect(routes.table)
        protocol.dataReceived(b"foo")
        self.clock.advance(2.9)
        self.assertEqual(routes.ssh.protocols, [])
        self.clock.advance(0.1)
        [target] = routes.ssh.protocols
        self.assertEqual(target.received, [b"foo"])
        self.assertEqual(routes.rest.protocols, [])

    def test_byteCap(self) -> None:
        """
        Reaching C{max_peek} with a route still waiting is undecided too.
        """
        routes = SslhStyle(maxPeek=3)
        protocol, transport = self.connect(routes.table)
        protocol.dataReceived(b"foo")
        [target] = routes.ssh.protocols
        self.assertEqual(target.received, [b"foo"])
        self.assertEqual(routes.rest.protocols, [])

    def test_halfClose(self) -> None:
        routes = SslhStyle()
        protocol, transport = self.connect(routes.table)
        protocol.dataReceived(b"foo")
        protocol.readConnectionLost()  # type: ignore[attr-defined]
        [target] = routes.rest.protocols
        self.assertEqual(target.received, [b"foo"])
        self.assertEqual(routes.ssh.protocols, [])

    def test_junkAtOnce(self) -> None:
        routes = SslhStyle()
        protocol, transport = self.connect(routes.table)
        protocol.dataReceived(b"\x00junk")
        [target] = routes.rest.protocols
        self.assertEqual(target.received, [b"\x00junk"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
