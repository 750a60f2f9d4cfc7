"""
UDP flows in memory: a L{Clock} and fake UDP ports stand in for the reactor,
so ordering, caps, expiry and migration by QUIC connection ID are exact.
"""

from __future__ import annotations

import socket
from typing import Any

from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from demux import (
    MATCH,
    NEED_MORE,
    NO_MATCH,
    ConfigError,
    IMatcher,
    Peek,
    Verdict,
    configFromDict,
)
from demux._proxyheader import parseHeader
from demux._routes import Route, RouteTable
from demux._udp import (
    DatagramListen,
    DatagramTable,
    DatagramTarget,
    FlowTable,
    IFlowObserver,
    isShortHeader,
    longHeaderSCID,
    parseDatagramListen,
    parseUDPBackend,
)
from demux._udpconfig import DatagramOnly

from ._fakes import startsWith

CLIENT = ("192.0.2.7", 50000)
BACKEND = parseUDPBackend("udp:127.0.0.1:4433")


class FakeUDPPort:
    """
    A UDP port that records what is written and where it is connected.
    """

    def __init__(self, port: int, protocol: DatagramProtocol, interface: str) -> None:
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.written: list[tuple[bytes, Any]] = []
        self.connected: tuple[str, int] | None = None
        self.stopped = False

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def write(self, datagram: bytes, addr: Any = None) -> None:
        self.written.append((datagram, addr))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def stopListening(self) -> None:
        self.stopped = True

    def reply(self, datagram: bytes) -> None:
        """
        The backend answers on this flow's connected socket.
        """
        assert self.connected is not None
        self.protocol.datagramReceived(datagram, self.connected)


class FakeUDPReactor(Clock):
    """
    A clock whose C{listenUDP} hands out L{FakeUDPPort}s.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: list[FakeUDPPort] = []

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeUDPPort:
        fake = FakeUDPPort(port or 40000 + len(self.udpPorts), protocol, interface)
        protocol.makeConnection(fake)  # type: ignore[arg-type]
        self.udpPorts.append(fake)
        return fake


@implementer(IMatcher)
@frozen
class NeedsDatagrams:
    """
    Says NEED_MORE until C{count} datagrams have come, then MATCH if the
    last one starts with C{last}.
    """

    count: int
    last: bytes = b""

    def match(self, peek: Peek) -> Verdict:
        datagrams = peek.datagrams  # type: ignore[attr-defined]
        if len(datagrams) < self.count:
            return NEED_MORE
        return MATCH if datagrams[self.count - 1].startswith(self.last) else NO_MATCH

    def describe(self, peek: Peek) -> str:
        return f"datagrams={self.count}"


@implementer(IFlowObserver)
class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def flowStarted(self) -> None:
        self.events.append(("started",))

    def flowDropped(self, reason: str, started: bool) -> None:
        self.events.append(("dropped", reason, started))

    def flowRouted(self, route: str, decideSeconds: float) -> None:
        self.events.append(("routed", route))

    def flowMigrated(self, route: str) -> None:
        self.events.append(("migrated", route))

    def flowClosed(
        self, route: str, datagramsUp: int, datagramsDown: int, bytesUp: int, bytesDown: int
    ) -> None:
        self.events.append(("closed", route, datagramsUp, datagramsDown))


def makeTable(
    routes: list[tuple[str, IMatcher]],
    sendProxy: bool = False,
    onTimeout: str | None = None,
    **limits: Any,
) -> DatagramTable:
    targets = {name: DatagramTarget((BACKEND,), sendProxy) for name, _ in routes}
    table = RouteTable(
        [Route(name, m, DatagramOnly(targets[name])) for name, m in routes],
        inspectDelay=limits.pop("inspectDelay", 5.0),
        maxPeek=limits.pop("maxPeek", 16384),
        onTimeout=onTimeout,
        logDecisions=limits.pop("logDecisions", False),
    )
    return DatagramTable(table, targets, **limits)


def initial(dcid: bytes, scid: bytes, body: bytes = b"\0" * 20) -> bytes:
    """
    A QUIC v1 long-header packet (Initial) with these connection IDs.
    """
    return (
        b"\xc3\x00\x00\x00\x01"
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + body
    )


class Harness:
    def __init__(self, datagrams: DatagramTable) -> None:
        self.reactor = FakeUDPReactor()
        self.observer = RecordingObserver()
        self.flows = FlowTable(datagrams, self.reactor, self.observer)
        self.listener = self.flows.listener("udp:443")
        self.listenPort = FakeUDPPort(443, self.listener, "203.0.113.1")
        self.listener.makeConnection(self.listenPort)  # type: ignore[arg-type]

    def send(self, datagram: bytes, client: tuple[str, int] = CLIENT) -> None:
        self.listener.datagramReceived(datagram, client)

    def backendPorts(self) -> list[FakeUDPPort]:
        return self.reactor.udpPorts

    def toClient(self) -> list[tuple[bytes, Any]]:
        return self.listenPort.written


class FlowTests(SynchronousTestCase):
    def test_decidedOnFirstDatagram(self) -> None:
        """
        A datagram a route matches opens a connected socket to the route's
        backend, is sent on it, and the backend's reply goes back to the
        client from the listener.
        """
        h = Harness(makeTable([("echo", startsWith(b"hi"))]))
        h.send(b"hi there")
        [port] = h.backendPorts()
        self.assertEqual(port.connected, ("127.0.0.1", 4433))
        self.assertEqual(port.written, [(b"hi there", None)])
        port.reply(b"hello back")
        self.assertEqual(h.toClient(), [(b"hello back", CLIENT)])
        h.send(b"more")
        self.assertEqual([d for d, _ in port.written], [b"hi there", b"more"])
        self.assertEqual(h.observer.events, [("started",), ("routed", "echo")])

    def test_junkMakesNoFlow(self) -> None:
        """
        A datagram every route refuses is dropped and leaves no flow, no
        socket and no timer behind, from however many source ports.
        """
        h = Harness(makeTable([("echo", startsWith(b"hi"))]))
        for port in range(1000, 1100):
            h.send(b"junk", ("198.51.100.1", port))
        self.assertEqual(h.flows.flows, {})
        self.assertEqual(h.flows.count, 0)
        self.assertEqual(h.flows.perSource, {})
        self.assertEqual(h.backendPorts(), [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        self.assertEqual(h.observer.events[0], ("dropped", "no match", False))

    def test_severalDatagramsInOrder(self) -> None:
        """
        A matcher may need several datagrams; those that came while the flow
        was undecided are sent in the order they came once it is decided.
        """
        h = Harness(makeTable([("multi", NeedsDatagrams(3, b"c"))]))
        h.send(b"a")
        h.send(b"b")
        self.assertEqual(h.backendPorts(), [])
        self.assertEqual(h.flows.undecided, 1)
        h.send(b"c")
        [port] = h.backendPorts()
        self.assertEqual([d for d, _ in port.written], [b"a", b"b", b"c"])
        self.assertEqual(h.flows.undecided, 0)

    def test_earlierRouteStillDeciding(self) -> None:
        """
        A later route that matches waits for an earlier one that needs more
        datagrams, as on TCP.
        """
        h = Harness(
            makeTable([("first", NeedsDatagrams(2, b"x")), ("second", startsWith(b""))])
        )
        h.send(b"a")
        self.assertEqual(h.backendPorts(), [])
        h.send(b"b")
        self.assertEqual(h.observer.events[-1], ("routed", "second"))

    def test_datagramCap(self) -> None:
        """
        A flow still undecided at C{maxFlowDatagrams} datagrams is decided by
        what it has sent: here dropped, with every datagram, and counted.
        """
        h = Harness(makeTable([("never", NeedsDatagrams(10))], maxFlowDatagrams=3))
        for d in (b"1", b"2", b"3"):
            h.send(d)
        self.assertEqual(h.flows.flows, {})
        self.assertEqual(h.backendPorts(), [])
        self.assertEqual(h.observer.events[-1], ("dropped", "timeout", True))
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_byteCapTakesOnTimeout(self) -> None:
        """
        At the byte cap the undecided count as no, and C{on_timeout} takes
        the flow with everything kept.
        """
        h = Harness(
            makeTable(
                [("never", NeedsDatagrams(10)), ("fallback", startsWith(b"zzz"))],
                onTimeout="fallback",
                maxPeek=10,
            )
        )
        h.send(b"12345")
        h.send(b"67890")
        [port] = h.backendPorts()
        self.assertEqual([d for d, _ in port.written], [b"12345", b"67890"])

    def test_silentUndecidedDropped(self) -> None:
        """
        An undecided flow that stops sending is dropped at inspect_delay.
        """
        h = Harness(makeTable([("multi", NeedsDatagrams(2))], inspectDelay=2.0))
        h.send(b"a")
        self.assertEqual(h.flows.count, 1)
        h.reactor.advance(1.9)
        self.assertEqual(h.flows.count, 1)
        h.reactor.advance(0.2)
        self.assertEqual(h.flows.count, 0)
        self.assertEqual(h.flows.flows, {})
        self.assertEqual(h.observer.events[-1], ("dropped", "timeout", True))

    def test_idleExpiry(self) -> None:
        """
        A decided flow lives while datagrams pass either way and ends
        C{idleTimeout} after the last, closing its backend socket once.
        """
        h = Harness(makeTable([("echo", startsWith(b""))], idleTimeout=10.0))
        h.send(b"a")
        [port] = h.backendPorts()
        h.reactor.advance(6)
        port.reply(b"r")
        h.reactor.advance(6)
        h.send(b"b")
        h.reactor.advance(9)
        self.assertFalse(port.stopped)
        h.reactor.advance(1.5)
        self.assertTrue(port.stopped)
        self.assertEqual(h.flows.count, 0)
        self.assertEqual(h.observer.events[-1], ("closed", "echo", 2, 1))
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        # The same client again is a new flow.
        h.send(b"c")
        self.assertEqual(len(h.backendPorts()), 2)

    def test_maxFlows(self) -> None:
        """
        The table never holds more than C{maxFlows} flows; a datagram that
        would make one more is dropped and counted, and room made by an
        expiry is used again.
        """
        h = Harness(makeTable([("echo", startsWith(b""))], maxFlows=3, idleTimeout=5.0))
        for port in range(4):
            h.send(b"x", ("198.51.100.1", 2000 + port))
        self.assertEqual(h.flows.count, 3)
        self.assertEqual(len(h.backendPorts()), 3)
        self.assertIn(("dropped", "limit", False), h.observer.events)
        h.reactor.advance(6)
        h.send(b"x", ("198.51.100.1", 3000))
        self.assertEqual(h.flows.count, 1)

    def test_maxFlowsPerSource(self) -> None:
        """
        One address cannot take more than C{maxFlowsPerSource} flows, while
        another still can.
        """
        h = Harness(makeTable([("echo", startsWith(b""))], maxFlowsPerSource=2))
        for port in range(3):
            h.send(b"x", ("198.51.100.1", 2000 + port))
        h.send(b"x", ("198.51.100.2", 2000))
        self.assertEqual(h.flows.perSource, {"198.51.100.1": 2, "198.51.100.2": 1})

    def test_proxyHeaderOnFirstDatagram(self) -> None:
        """
        With C{send_proxy = "v2"} the first datagram of a flow starts with a
        PROXY v2 header of transport DGRAM naming the client and the
        listener; later datagrams go as they came.
        """
        h = Harness(makeTable([("echo", startsWith(b""))], sendProxy=True))
        h.send(b"first")
        h.send(b"second")
        [port] = h.backendPorts()
        first, second = (d for d, _ in port.written)
        header = parseHeader(first[: len(first) - len(b"first")])
        self.assertEqual(first[13], 0x12)
        self.assertEqual(header.source, IPv4Address("UDP", *CLIENT))
        self.assertEqual(header.destination, IPv4Address("UDP", "203.0.113.1", 443))
        self.assertTrue(first.endswith(b"first"))
        self.assertEqual(second, b"second")

    def test_migrationByConnectionID(self) -> None:
        """
        The connection ID a QUIC server chose in its long-header reply
        names the flow: a short-header packet carrying it from a new client
        address goes to the same backend socket, and replies follow the
        client to its new address.
        """
        h = Harness(makeTable([("quic", startsWith(b"\xc3"))]))
        h.send(initial(b"c" * 8, b"k" * 8))
        [port] = h.backendPorts()
        port.reply(initial(b"k" * 8, b"S" * 8))
        moved = ("192.0.2.7", 50001)
        h.send(b"\x41" + b"S" * 8 + b"payload", moved)
        self.assertEqual(len(h.backendPorts()), 1)
        self.assertEqual(port.written[-1][0], b"\x41" + b"S" * 8 + b"payload")
        port.reply(b"\x41" + b"k" * 8 + b"answer")
        self.assertEqual(h.toClient()[-1], (b"\x41" + b"k" * 8 + b"answer", moved))
        self.assertIn(("migrated", "quic"), h.observer.events)
        self.assertEqual(h.flows.count, 1)

    def test_unknownConnectionIDIsNewFlow(self) -> None:
        """
        A short-header packet whose connection ID no backend chose is judged
        as a new flow's first datagram (here refused): it joins nothing.
        """
        h = Harness(makeTable([("quic", startsWith(b"\xc3"))]))
        h.send(initial(b"c" * 8, b"k" * 8))
        [port] = h.backendPorts()
        port.reply(initial(b"k" * 8, b"S" * 8))
        h.send(b"\x41" + b"T" * 8 + b"payload", ("192.0.2.7", 50001))
        self.assertEqual(len(port.written), 1)
        self.assertEqual(h.flows.count, 1)

    def test_connectionIDsForgottenAtExpiry(self) -> None:
        """
        A flow's learned connection IDs go with it.
        """
        h = Harness(makeTable([("quic", startsWith(b"\xc3"))], idleTimeout=1.0))
        h.send(initial(b"c" * 8, b"k" * 8))
        h.backendPorts()[0].reply(initial(b"k" * 8, b"S" * 8))
        self.assertEqual(set(h.flows.cids), {b"S" * 8})
        h.reactor.advance(2)
        self.assertEqual(h.flows.cids, {})
        self.assertEqual(h.flows.cidLengths, {})

    def test_spoofedInitialFlood(self) -> None:
        """
        Initial-looking datagrams from ever new addresses cannot grow the
        table past C{maxFlows}, nor the connection ID table at all (only
        backends' replies teach IDs).
        """
        h = Harness(makeTable([("quic", startsWith(b"\xc3"))], maxFlows=50))
        for n in range(2000):
            h.send(initial(n.to_bytes(8, "big"), b"k" * 8), (f"10.0.{n // 250}.{n % 250}", 443))
        self.assertEqual(h.flows.count, 50)
        self.assertEqual(len(h.flows.flows), 50)
        self.assertEqual(h.flows.cids, {})
        self.assertEqual(h.observer.events.count(("dropped", "limit", False)), 1950)

    def test_closeAll(self) -> None:
        """
        Stopping ends every flow, decided or not, and leaves no timer.
        """
        h = Harness(
            makeTable([("multi", NeedsDatagrams(2, b"b")), ("rest", startsWith(b""))])
        )
        h.send(b"a", ("192.0.2.1", 1))
        h.send(b"a", ("192.0.2.1", 2))
        h.send(b"b", ("192.0.2.1", 2))
        h.flows.closeAll()
        self.assertEqual(h.flows.count, 0)
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        self.assertTrue(all(p.stopped for p in h.backendPorts()))


class FlowLogTests(SynchronousTestCase):
    """
    A flow is logged once by default, when it ends, with its decision; with
    C{logDecisions}, when it is decided too.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("route") == "echo"]

    def flow(self, **limits: Any) -> Harness:
        h = Harness(makeTable([("echo", startsWith(b"hi"))], idleTimeout=10.0, **limits))
        h.reactor.advance(0.5)
        h.send(b"hi there")
        [port] = h.backendPorts()
        port.reply(b"hello back")
        return h

    def test_oneLineAtExpiry(self) -> None:
        h = self.flow()
        self.assertEqual(self.lines(), [])
        h.reactor.advance(10)
        self.assertEqual(
            self.lines(),
            [
                "udp 192.0.2.7:50000 route=echo (prefix=b'hi') -> udp:127.0.0.1:4433, "
                "1 datagrams peeked, decided in 0.00 ms; ended (idle for 10 s) after "
                "10.0 s: 1 datagrams (8 bytes) up, 1 (10 bytes) down"
            ],
        )
        [event] = [e for e in self.events if e.get("route") == "echo"]
        self.assertEqual(event["target"], "udp:127.0.0.1:4433")

    def test_oneLineWhenStopping(self) -> None:
        h = self.flow()
        h.flows.closeAll()
        [line] = self.lines()
        self.assertIn(" route=echo (prefix=b'hi') -> udp:127.0.0.1:4433, ", line)
        self.assertIn("; ended (demux stopping) after ", line)

    def test_logDecisions(self) -> None:
        h = self.flow(logDecisions=True)
        self.assertEqual(
            self.lines(),
            [
                "udp 192.0.2.7:50000 route=echo (prefix=b'hi') -> udp:127.0.0.1:4433, "
                "1 datagrams peeked, decided in 0.00 ms"
            ],
        )
        h.reactor.advance(10)
        self.assertEqual(
            self.lines()[1:],
            [
                "udp 192.0.2.7:50000 route=echo ended (idle for 10 s) after 10.0 s: "
                "1 datagrams (8 bytes) up, 1 (10 bytes) down"
            ],
        )


class QUICHeaderTests(SynchronousTestCase):
    def test_longHeaderSCID(self) -> None:
        self.assertEqual(longHeaderSCID(initial(b"abc", b"defgh")), b"defgh")
        self.assertIsNone(longHeaderSCID(b"\x80\x00\x00\x00\x00" + b"\x00" * 10))
        self.assertIsNone(longHeaderSCID(b"\x41abc"))
        self.assertIsNone(longHeaderSCID(b"\xc3\x00\x00\x00\x01\x15" + b"x" * 40))

    def test_shortHeader(self) -> None:
        self.assertTrue(isShortHeader(b"\x41abcdefgh"))
        self.assertFalse(isShortHeader(b"\xc1abcdefgh"))
        self.assertFalse(isShortHeader(b"\x01abcdefgh"))

    @given(st.binary(max_size=80))
    def test_anyBytes(self, data: bytes) -> None:
        """
        The header readers never raise, and an ID is never longer than 20.
        """
        scid = longHeaderSCID(data)
        self.assertTrue(scid is None or len(scid) <= 20)
        isShortHeader(data)


class ListenTests(SynchronousTestCase):
    def test_udp(self) -> None:
        self.assertEqual(
            parseDatagramListen("udp:443"), DatagramListen("udp:443", 443, "")
        )
        self.assertEqual(
            parseDatagramListen("udp:443:interface=127.0.0.1"),
            DatagramListen("udp:443:interface=127.0.0.1", 443, "127.0.0.1"),
        )

    def test_udp6(self) -> None:
        self.assertEqual(
            parseDatagramListen("udp6:443:interface=\\:\\:1"),
            DatagramListen("udp6:443:interface=\\:\\:1", 443, "::1", None, socket.AF_INET6),
        )
        self.assertEqual(parseDatagramListen("udp6:443").interface, "::")  # type: ignore[union-attr]

    def test_systemd(self) -> None:
        listen = parseDatagramListen("udp:systemd:index=1:domain=INET6")
        self.assertEqual((listen.systemdIndex, listen.family), (1, socket.AF_INET6))  # type: ignore[union-attr]

    def test_notUDP(self) -> None:
        self.assertIsNone(parseDatagramListen("tcp:443"))
        self.assertIsNone(parseDatagramListen("systemd:domain=INET:index=0"))

    def test_errors(self) -> None:
        for bad in (
            "udp:http",
            "udp:99999",
            "udp:443:interface=example.com",
            "udp:443:interface=::1",
            "udp:443:backlog=5",
            "udp:systemd",
            "udp:systemd:index=0:domain=UNIX",
        ):
            self.assertRaises(ValueError, parseDatagramListen, bad)

    def test_backend(self) -> None:
        self.assertEqual(parseUDPBackend("udp:[::1]:53").host, "::1")
        self.assertEqual(parseUDPBackend("udp:10.0.0.1:51820").port, 51820)
        self.assertRaises(ValueError, parseUDPBackend, "udp:localhost:53")
        self.assertRaises(ValueError, parseUDPBackend, "udp:10.0.0.1")


def udpConfig(*routes: dict[str, object], **top: object) -> dict[str, object]:
    data: dict[str, object] = {
        "listen": ["udp:443", "tcp:443"],
        "routes": list(routes),
    }
    data.update(top)
    return data


class ConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def load(self, data: dict[str, object]) -> Any:
        return configFromDict(data, self.reactor, "test.toml")

    def error(self, data: dict[str, object]) -> str:
        text = str(self.assertRaises(ConfigError, self.load, data))
        self.assertTrue(text.startswith("test.toml: "), text)
        self.assertNotIn("\n", text)
        return text

    def test_transportByBackend(self) -> None:
        """
        Without C{transport}, a route is UDP when its backends are all
        C{udp:}, both when some are, TCP otherwise; each table gets the
        routes that apply to it, in order.
        """
        config = self.load(
            udpConfig(
                {"name": "wg", "match": {"prefix": "01000000"}, "backend": "udp:127.0.0.1:51820"},
                {
                    "name": "web",
                    "match": {"any": {}},
                    "backend": ["tcp:127.0.0.1:8443", "udp:127.0.0.1:8443"],
                },
            )
        )
        self.assertEqual([r.name for r in config.table.routes], ["web"])
        self.assertEqual(config.table.routes[0].target.description, "tcp:127.0.0.1:8443")
        self.assertEqual([r.name for r in config.datagrams.table.routes], ["wg", "web"])
        self.assertEqual(
            config.datagrams.targets["web"].backends, (parseUDPBackend("udp:127.0.0.1:8443"),)
        )

    def test_logDecisions(self) -> None:
        """
        The UDP table logs decisions as the stream table does: in the line
        that ends a flow, unless C{log_decisions = true}.
        """
        data = udpConfig(
            {"match": {"any": {}}, "backend": "udp:127.0.0.1:1"},
            {"match": {"any": {}}, "backend": "tcp:127.0.0.1:1"},
        )
        self.assertFalse(self.load(data).datagrams.table.logDecisions)
        asap = self.load(dict(data, log_decisions=True))
        self.assertTrue(asap.datagrams.table.logDecisions)
        self.assertTrue(asap.table.logDecisions)

    def test_flowLimits(self) -> None:
        config = self.load(
            udpConfig(
                {"match": {"any": {}}, "backend": "udp:127.0.0.1:1"},
                {"match": {"any": {}}, "backend": "tcp:127.0.0.1:1"},
                udp_idle_timeout=30,
                max_flows=100,
                max_flows_per_source=5,
                max_flow_datagrams=4,
                inspect_delay=2,
            )
        )
        d = config.datagrams
        self.assertEqual(
            (d.idleTimeout, d.maxFlows, d.maxFlowsPerSource, d.maxFlowDatagrams),
            (30.0, 100, 5, 4),
        )
        self.assertEqual(d.table.inspectDelay, 2.0)
        self.assertIn("max_flows", self.error(udpConfig(
            {"match": {"any": {}}, "backend": "udp:127.0.0.1:1"}, max_flows=0
        )))

    def test_udpRouteStreamMatcher(self) -> None:
        """
        A UDP-only route whose matcher cannot judge datagrams is an error
        naming the matcher.
        """
        text = self.error(
            udpConfig({"name": "s", "match": {"ssh": {}}, "backend": "udp:127.0.0.1:22"})
        )
        self.assertIn("route 's': match.ssh: cannot judge datagrams", text)

    def test_bothRouteStreamMatcherSkipped(self) -> None:
        """
        A route for both transports whose matcher cannot judge datagrams
        serves TCP only.
        """
        config = self.load(
            udpConfig(
                {
                    "name": "s",
                    "match": {"ssh": {}},
                    "backend": ["tcp:127.0.0.1:22", "udp:127.0.0.1:22"],
                },
                {"name": "u", "match": {"any": {}}, "backend": "udp:127.0.0.1:1"},
            )
        )
        self.assertEqual([r.name for r in config.table.routes], ["s"])
        self.assertEqual([r.name for r in config.datagrams.table.routes], ["u"])

    def test_transportErrors(self) -> None:
        for route, expected in [
            ({"transport": "sctp", "backend": "udp:127.0.0.1:1"}, "transport: must be"),
            ({"transport": "tcp", "backend": "udp:127.0.0.1:1"}, "cannot have the UDP backend"),
            ({"transport": "udp", "backend": "tcp:127.0.0.1:1"}, "needs a udp:HOST:PORT"),
            ({"transport": "both", "backend": "udp:127.0.0.1:1"}, "needs a TCP backend"),
            ({"backend": "udp:localhost:1"}, "must be an IP address"),
            ({"backend": "udp:127.0.0.1:1", "splice": False}, "splice applies to TCP"),
            ({"backend": "udp:127.0.0.1:1", "send_proxy": "v1"}, 'must be "v2" for UDP'),
        ]:
            text = self.error(
                udpConfig({"name": "r", "match": {"any": {}}, **route})  # type: ignore[arg-type]
            )
            self.assertIn(expected, text)
            self.assertIn("route 'r'", text)

    def test_listenErrors(self) -> None:
        self.assertIn(
            "bad UDP listen string 'udp:x'",
            self.error(udpConfig({"match": {"any": {}}, "backend": "udp:127.0.0.1:1"},
                                 listen=["udp:x"])),
        )
        self.assertIn(
            "no route applies to UDP",
            self.error(udpConfig({"match": {"any": {}}, "backend": "tcp:127.0.0.1:1"})),
        )
        self.assertIn(
            "every route is UDP-only",
            self.error(udpConfig({"match": {"any": {}}, "backend": "udp:127.0.0.1:1"})),
        )

    def test_sendProxy(self) -> None:
        config = self.load(
            udpConfig(
                {"match": {"any": {}}, "backend": "udp:127.0.0.1:1", "send_proxy": "v2"},
                {"match": {"any": {}}, "backend": "tcp:127.0.0.1:1"},
            )
        )
        self.assertTrue(config.datagrams.targets["route1"].sendProxy)

    def test_onTimeoutEitherTable(self) -> None:
        """
        C{on_timeout} may name a UDP-only route: the TCP table then has none.
        """
        config = self.load(
            udpConfig(
                {"name": "u", "match": {"prefix": "00"}, "backend": "udp:127.0.0.1:1"},
                {"name": "t", "match": {"prefix": "00"}, "backend": "tcp:127.0.0.1:1"},
                on_timeout="u",
            )
        )
        self.assertIsNone(config.table.onTimeout)
        self.assertEqual(config.datagrams.table.onTimeout, "u")


class FlowTablePropertyTests(SynchronousTestCase):
    @given(
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("send"),
                    st.integers(0, 30),
                    st.sampled_from([b"\xc3junk", b"\x41" + b"S" * 8, b"zz", b"\xc3"]),
                ),
                st.tuples(st.just("reply"), st.integers(0, 30), st.binary(max_size=30)),
                st.tuples(st.just("wait"), st.integers(0, 30), st.just(b"")),
            ),
            max_size=60,
        )
    )
    def test_bounded(self, steps: list[tuple[str, int, bytes]]) -> None:
        """
        Whatever clients send, backends answer and time does, the table
        holds at most C{maxFlows} flows, each source at most its cap, every
        index agrees with the flows, and each flow has one timer.
        """
        h = Harness(
            makeTable(
                [("multi", NeedsDatagrams(2, b"\xc3")), ("quic", startsWith(b"\xc3"))],
                maxFlows=5,
                maxFlowsPerSource=3,
                idleTimeout=3.0,
                inspectDelay=1.0,
            )
        )
        for kind, n, data in steps:
            if kind == "send":
                h.send(data, (f"192.0.2.{n % 4}", 1000 + n))
            elif kind == "reply" and h.flows.flows:
                flows = list(h.flows.flows.values())
                flow = flows[n % len(flows)]
                if flow.port is not None:
                    flow.port.reply(b"\xc3\x00\x00\x00\x01\x00" + bytes([min(len(data), 20)]) + data)
            else:
                h.reactor.advance(n / 10)
            live = {id(f): f for f in h.flows.flows.values()}
            self.assertLessEqual(len(live), 5)
            self.assertEqual(len(live), h.flows.count)
            self.assertTrue(all(c <= 3 for c in h.flows.perSource.values()))
            self.assertEqual(sum(h.flows.perSource.values()), h.flows.count)
            for flow in h.flows.cids.values():
                self.assertIn(id(flow), live)
            self.assertEqual(len(h.reactor.getDelayedCalls()), len(live))
        for _ in range(3):
            h.reactor.advance(5)
        self.assertEqual(h.flows.count, 0)
        self.assertEqual(h.flows.cids, {})
        self.assertTrue(all(p.stopped for p in h.backendPorts()))


class MetricsTests(SynchronousTestCase):
    def test_flowMetrics(self) -> None:
        """
        The Prometheus observer counts flows: routed, active, undecided,
        dropped by reason, migrated, and datagrams and bytes at the end.
        """
        from zope.interface.verify import verifyObject

        from demux._metrics import PrometheusObserver

        observer = PrometheusObserver()
        verifyObject(IFlowObserver, observer)
        h = Harness(makeTable([("multi", NeedsDatagrams(2, b"\xc3")), ("quic", startsWith(b"\xc3"))], idleTimeout=1.0))
        h.flows.observer = observer
        h.send(b"\xc3a")
        value = observer.registry.get_sample_value
        self.assertEqual(value("demux_udp_flows_undecided"), 1)
        h.send(b"\xc3b")
        self.assertEqual(value("demux_udp_flows_undecided"), 0)
        self.assertEqual(value("demux_udp_flows_active", {"route": "multi"}), 1)
        h.send(b"nothing", ("192.0.2.9", 1))
        self.assertEqual(value("demux_udp_flows_undecided"), 1)
        h.send(b"nothing", ("192.0.2.9", 1))
        self.assertEqual(value("demux_udp_flows_undecided"), 0)
        self.assertEqual(value("demux_udp_flows_dropped_total", {"reason": "no match"}), 1)
        h.backendPorts()[0].reply(b"r" * 10)
        h.reactor.advance(2)
        self.assertEqual(value("demux_udp_flows_active", {"route": "multi"}), 0)
        self.assertEqual(value("demux_udp_flows_routed_total", {"route": "multi"}), 1)
        labels = {"route": "multi", "direction": "up"}
        self.assertEqual(value("demux_udp_datagrams_total", labels), 2)
        self.assertEqual(value("demux_udp_bytes_total", labels), 4)
        labels = {"route": "multi", "direction": "down"}
        self.assertEqual(value("demux_udp_bytes_total", labels), 10)
