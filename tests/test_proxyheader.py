"""
PROXY protocol headers: read before matching however they are split, and
written in front of what a route sends to its backend.
"""

from __future__ import annotations

import ipaddress

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from demux import (
    BackendTarget,
    ConnectionInfo,
    DemuxFactory,
    ITarget,
    LocalTarget,
    Peek,
    Route,
    RouteTable,
    SourceFilter,
)
from demux._proxyheader import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_DEMUX_ROUTE,
    InvalidProxyHeader,
    headerLength,
    makeHeader,
    parseHeader,
)
from demux.testing import clientHello

from ._fakes import FakeEndpoint, HalfCloseTransport, RecordingFactory, startsWith

CLIENT = IPv4Address("TCP", "203.0.113.7", 50123)
FRONT = IPv4Address("TCP", "198.51.100.1", 443)
BALANCER = IPv4Address("TCP", "10.0.0.9", 1)
LISTENER = IPv4Address("TCP", "10.0.0.1", 443)


class HeaderTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        for version in (1, 2):
            for src, dst in [
                (CLIENT, FRONT),
                (IPv6Address("TCP", "2001:db8::7", 5), IPv6Address("TCP", "2001:db8::1", 443)),
            ]:
                header = makeHeader(version, src, dst)
                self.assertEqual(headerLength(header + b"rest"), len(header))
                info = parseHeader(header)
                assert info.source is not None and info.destination is not None
                self.assertEqual(info.source.port, src.port)
                self.assertEqual(info.destination.port, dst.port)

    def test_mappedIPv4(self) -> None:
        header = makeHeader(1, IPv6Address("TCP", "::ffff:203.0.113.7", 5), FRONT)
        self.assertEqual(header, b"PROXY TCP4 203.0.113.7 198.51.100.1 5 443\r\n")

    def test_unknown(self) -> None:
        from twisted.internet.address import UNIXAddress

        self.assertEqual(makeHeader(1, UNIXAddress(None), FRONT), b"PROXY UNKNOWN\r\n")
        local = makeHeader(2, UNIXAddress(None), FRONT)
        self.assertEqual(headerLength(local), 16)

    def test_garbage(self) -> None:
        for data in [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"PROXX", b"\r\n\r\n\x00X"]:
            self.assertRaises(InvalidProxyHeader, headerLength, data)
        self.assertRaises(InvalidProxyHeader, headerLength, b"PROXY " + b"1" * 200)

    @settings(max_examples=200)
    @given(version=st.sampled_from([1, 2]), cuts=st.lists(st.integers(1, 10), max_size=20))
    def test_everyPrefixIsIncomplete(self, version: int, cuts: list[int]) -> None:
        header = makeHeader(version, CLIENT, FRONT)
        for n in range(len(header)):
            length = headerLength(header[:n])
            self.assertTrue(length is None or length > n)


class ListenerTests(SynchronousTestCase):
    """
    A listener that expects a PROXY header (C{haproxy:tcp:443}).
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.target = BackendTarget(self.endpoint, "fake", sendProxy=2)
        table = RouteTable(
            [Route("ssh", startsWith(b"SSH-"), self.target)],
            inspectDelay=3,
            maxConnectionsPerSource=1,
        )
        self.factory = DemuxFactory(table, self.clock)

    def connect(self) -> tuple[object, HalfCloseTransport]:
        protocol = self.factory.proxied().buildProtocol(IPv4Address("TCP", "10.0.0.9", 1))
        transport = HalfCloseTransport(
            peerAddress=IPv4Address("TCP", "10.0.0.9", 1),
            hostAddress=IPv4Address("TCP", "10.0.0.1", 443),
        )
        protocol.makeConnection(transport)  # type: ignore[union-attr]
        return protocol, transport

    def test_headerOneByteAtATime(self) -> None:
        """
        A header that arrives a byte per read is read whole, and the route
        and the backend's own PROXY header see the client's address.
        """
        protocol, transport = self.connect()
        data = makeHeader(1, CLIENT, FRONT) + b"SSH-2.0-x\r\n"
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])  # type: ignore[attr-defined]
        self.assertFalse(transport.disconnecting)
        [attempt] = self.endpoint.attempts
        attempt.succeed()
        sent = attempt.transport.value()  # type: ignore[union-attr]
        self.assertEqual(
            sent,
            makeHeader(2, CLIENT, FRONT, [(0xE0, b"ssh")]) + b"SSH-2.0-x\r\n",
        )

    def test_noHeaderRefused(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"SSH-2.0-x\r\n")  # type: ignore[attr-defined]
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.endpoint.attempts, [])

    def test_shortFirstReadKept(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"PRO")  # type: ignore[attr-defined]
        self.assertFalse(transport.disconnecting)

    def test_incompleteHeaderAtDeadline(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"PROXY TCP4 1.2.3.4")  # type: ignore[attr-defined]
        self.clock.advance(3)
        self.assertTrue(transport.disconnecting)

    def test_perSourceCountsTheRealClient(self) -> None:
        """
        Behind a load balancer, the per-source limit applies to the address
        in the header, not to the balancer's.
        """
        header = makeHeader(1, CLIENT, FRONT)
        first, t1 = self.connect()
        first.dataReceived(header)  # type: ignore[attr-defined]
        second, t2 = self.connect()
        second.dataReceived(header)  # type: ignore[attr-defined]
        self.assertFalse(t1.disconnecting)
        self.assertTrue(t2.disconnecting)
        other, t3 = self.connect()
        other.dataReceived(  # type: ignore[attr-defined]
            makeHeader(1, IPv4Address("TCP", "203.0.113.8", 1), FRONT)
        )
        self.assertFalse(t3.disconnecting)


class BalanceTests(SynchronousTestCase):
    def test_roundRobinAndHealth(self) -> None:
        from demux._targets import Backend

        a, b = FakeEndpoint(), FakeEndpoint()
        target = BackendTarget(a, "a", alternatives=(Backend(b, "b"),), balance="roundrobin", retryAfter=10)
        self.assertEqual([x.description for x in target.pick(0)], ["a", "b"])
        self.assertEqual([x.description for x in target.pick(0)], ["b", "a"])
        target.markDown(target.backends[0], now=0)
        self.assertEqual([x.description for x in target.pick(5)], ["b", "a"])
        self.assertEqual([x.description for x in target.pick(5)], ["b", "a"])
        self.assertEqual([x.description for x in target.pick(10)], ["a", "b"])

    def test_failOver(self) -> None:
        """
        When the first backend refuses, the next is tried, and the client
        never notices.
        """
        from twisted.internet.error import ConnectionRefusedError

        from demux._targets import Backend

        clock = MemoryReactorClock()
        a, b = FakeEndpoint(), FakeEndpoint()
        target = BackendTarget(a, "a", alternatives=(Backend(b, "b"),))
        table = RouteTable([Route("x", startsWith(b"X"), target)])
        protocol = DemuxFactory(table, clock).buildProtocol(None)
        client = HalfCloseTransport()
        protocol.makeConnection(client)  # type: ignore[union-attr]
        protocol.dataReceived(b"Xhello")  # type: ignore[union-attr]
        a.attempts[0].fail(ConnectionRefusedError())
        self.assertFalse(client.disconnecting)
        b.attempts[0].succeed()
        self.assertEqual(b.attempts[0].transport.value(), b"Xhello")  # type: ignore[union-attr]
        # The next connection skips the backend that refused.
        protocol = DemuxFactory(table, clock).buildProtocol(None)
        protocol.makeConnection(HalfCloseTransport())  # type: ignore[union-attr]
        protocol.dataReceived(b"X")  # type: ignore[union-attr]
        self.assertEqual((len(a.attempts), len(b.attempts)), (1, 2))


class SourceFilterTests(SynchronousTestCase):
    def test_admits(self) -> None:
        import ipaddress

        from demux._routes import SourceFilter

        f = SourceFilter(
            allow=(ipaddress.ip_network("10.0.0.0/8"),),
            deny=(ipaddress.ip_network("10.9.0.0/16"),),
        )
        self.assertTrue(f.admits(ipaddress.ip_address("10.1.2.3")))
        self.assertFalse(f.admits(ipaddress.ip_address("10.9.2.3")))
        self.assertFalse(f.admits(ipaddress.ip_address("192.0.2.1")))
        self.assertTrue(f.admits(ipaddress.ip_address("::ffff:10.1.2.3")))
        self.assertFalse(f.admits(None))
        self.assertTrue(SourceFilter(deny=f.deny).admits(None))


# The one codec: TLVs, and what it refuses.

V2 = b"\r\n\r\n\x00\r\nQUIT\n"


class TLVTests(SynchronousTestCase):
    def test_knownBytes(self) -> None:
        """
        A v2 header with TLVs, written out by hand from the specification,
        is what L{makeHeader} makes and what L{parseHeader} reads.
        """
        expected = (
            V2 + b"\x21\x11\x00\x19"
            + bytes([203, 0, 113, 7, 198, 51, 100, 1]) + b"\xc3\xcb\x01\xbb"
            + b"\x01\x00\x02h2"
            + b"\x02\x00\x05a.com"
        )
        tlvs = [(PP2_TYPE_ALPN, b"h2"), (PP2_TYPE_AUTHORITY, b"a.com")]
        self.assertEqual(makeHeader(2, CLIENT, FRONT, tlvs), expected)
        info = parseHeader(expected)
        self.assertEqual(info.header, expected)
        self.assertEqual(info.version, 2)
        self.assertEqual(info.source, CLIENT)
        self.assertEqual(info.destination, FRONT)
        self.assertEqual(info.tlvs, tuple(tlvs))
        self.assertEqual(info.tlv(PP2_TYPE_AUTHORITY), b"a.com")
        self.assertIsNone(info.tlv(PP2_TYPE_DEMUX_ROUTE))

    def test_v1HasNoTLVs(self) -> None:
        header = makeHeader(1, CLIENT, FRONT, [(PP2_TYPE_ALPN, b"h2")])
        self.assertEqual(header, b"PROXY TCP4 203.0.113.7 198.51.100.1 50123 443\r\n")
        self.assertEqual(parseHeader(header).tlvs, ())

    def test_localKeepsTLVs(self) -> None:
        """
        A connection demux cannot give addresses for is sent as LOCAL; its
        TLVs still go, and are read back, with no addresses.
        """
        from twisted.internet.address import UNIXAddress

        header = makeHeader(2, UNIXAddress(None), FRONT, [(0xE0, b"web")])
        self.assertEqual(header, V2 + b"\x20\x00\x00\x06\xe0\x00\x03web")
        info = parseHeader(header)
        self.assertEqual((info.source, info.destination), (None, None))
        self.assertEqual(info.tlvs, ((0xE0, b"web"),))
        # A LOCAL block is to be discarded: junk in it is not refused.
        junk = parseHeader(V2 + b"\x20\x00\x00\x02\xe0\x00")
        self.assertEqual((junk.source, junk.tlvs), (None, ()))

    def test_malformed(self) -> None:
        """
        A TLV that runs past the header's end, a length that lies, a PROXY
        command without room for its addresses: refused.
        """
        good = makeHeader(2, CLIENT, FRONT)
        for header in [
            good[:14] + b"\x00\x10" + good[16:] + b"\x01\x00",  # TLV cut short
            good[:14] + b"\x00\x10" + good[16:] + b"\x01\x00\x05h",
            good + b"x",  # longer than its length says
            good[:14] + b"\x00\x08" + good[16:24],  # no room for addresses
            good[:12] + b"\x31" + good[13:],  # version 3
            b"PROXY TCP4 203.0.113.7 198.51.100.1 50123 99999\r\n",
            b"PROXY TCP4 ::1 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2",  # no line end
        ]:
            self.assertRaises(InvalidProxyHeader, parseHeader, header)

    def test_tooLong(self) -> None:
        self.assertRaises(
            ValueError, makeHeader, 2, CLIENT, FRONT, [(0xE1, b"x" * 0xFFFF)]
        )

    @settings(max_examples=300)
    @given(
        family=st.sampled_from([4, 6]),
        data=st.data(),
        tlvs=st.lists(
            st.tuples(st.integers(0, 0xFF), st.binary(max_size=300)), max_size=8
        ),
        cut=st.integers(1, 40),
    )
    def test_roundTripWithTLVs(
        self, family: int, data: st.DataObject, tlvs: list[tuple[int, bytes]], cut: int
    ) -> None:
        """
        Any addresses and TLVs make a header that, read in pieces, is found
        complete exactly at its end and decodes to the same.
        """
        address = IPv4Address if family == 4 else IPv6Address
        src = address(
            "TCP", str(data.draw(st.ip_addresses(v=family))), data.draw(st.integers(0, 0xFFFF))
        )
        dst = address(
            "TCP", str(data.draw(st.ip_addresses(v=family))), data.draw(st.integers(0, 0xFFFF))
        )
        if family == 6 and (
            ipaddress.IPv6Address(src.host).ipv4_mapped
            or ipaddress.IPv6Address(dst.host).ipv4_mapped
        ):
            # Sent as IPv4 on purpose (test_mappedIPv4).
            return
        header = makeHeader(2, src, dst, tlvs)
        for n in range(0, len(header), cut):
            length = headerLength(header[:n])
            self.assertTrue(length is None or length == len(header))
        self.assertEqual(headerLength(header + b"more"), len(header))
        info = parseHeader(header)
        self.assertEqual((info.source, info.destination), (src, dst))
        self.assertEqual(info.tlvs, tuple(tlvs))
        self.assertEqual(info.header, header)
        v1 = makeHeader(1, src, dst)
        self.assertEqual(parseHeader(v1).source, src)

    @settings(max_examples=500)
    @given(st.binary(max_size=120), st.sampled_from([b"", V2, b"PROXY "]))
    def test_garbageIsRefusedNotCrashed(self, data: bytes, prefix: bytes) -> None:
        """
        Whatever the bytes, the codec either reads a header or says it is
        not one: no other exception reaches the listener.
        """
        data = prefix + data
        try:
            length = headerLength(data)
        except InvalidProxyHeader:
            return
        if length is None or length > len(data):
            return
        try:
            info = parseHeader(data[:length])
        except InvalidProxyHeader:
            return
        self.assertEqual(info.header, data[:length])


# What the peek learned, on the connection's one value.


def info(peek: bytes, **kwargs: object) -> ConnectionInfo:
    return ConnectionInfo(
        MemoryReactorClock(), CLIENT, FRONT, "web", peek=Peek(peek), **kwargs  # type: ignore[arg-type]
    )


class ConnectionInfoTests(SynchronousTestCase):
    def test_tls(self) -> None:
        c = info(clientHello("sni.example", ["h2", "http/1.1"]))
        self.assertEqual(c.sni, "sni.example")
        self.assertEqual(c.alpn, ("h2", "http/1.1"))
        self.assertEqual(c.authority, "sni.example")
        self.assertIsNone(c.httpHost)

    def test_http(self) -> None:
        c = info(b"GET / HTTP/1.1\r\nHost: Web.Example:8080\r\n\r\n")
        self.assertIsNone(c.sni)
        self.assertEqual(c.alpn, ())
        self.assertEqual(c.httpHost, "web.example")
        self.assertEqual(c.authority, "web.example")

    def test_nothing(self) -> None:
        c = info(b"SSH-2.0-x\r\n")
        self.assertEqual((c.sni, c.alpn, c.authority), (None, (), None))

    def test_demuxTLVs(self) -> None:
        """
        Version 2 carries the first ALPN offered, the SNI as authority and
        the route's name.
        """
        from demux._client import demuxTLVs

        c = info(clientHello("sni.example", ["h2", "http/1.1"]))
        self.assertEqual(
            demuxTLVs(c),
            [(PP2_TYPE_ALPN, b"h2"), (PP2_TYPE_AUTHORITY, b"sni.example"),
             (PP2_TYPE_DEMUX_ROUTE, b"web")],
        )

    def test_receivedTLVsCarried(self) -> None:
        """
        Behind a C{haproxy:} listener, the incoming header's TLVs go on,
        except those demux sets itself and those re-encoding would make
        wrong (a CRC32C of the old header, padding); its authority stands
        in when demux learnt none.
        """
        from demux._client import demuxTLVs

        received = parseHeader(makeHeader(2, CLIENT, FRONT, [
            (PP2_TYPE_AUTHORITY, b"upstream.example"), (0x05, b"id-1"),
            (0x03, b"\x00\x00\x00\x00"), (0x04, b"\x00" * 4), (0xE0, b"old"),
            (0xEA, b"x"),
        ]))
        c = info(b"SSH-2.0-x\r\n", proxyHeader=received)
        self.assertEqual(
            demuxTLVs(c),
            [(PP2_TYPE_AUTHORITY, b"upstream.example"), (0x05, b"id-1"), (0xEA, b"x"),
             (PP2_TYPE_DEMUX_ROUTE, b"web")],
        )
        c = info(b"GET / HTTP/1.0\r\nHost: mine.example\r\n\r\n", proxyHeader=received)
        self.assertEqual(demuxTLVs(c)[0], (PP2_TYPE_AUTHORITY, b"mine.example"))


# send_proxy through the listener: v2 with TLVs, and pass-through.


class SendProxyTests(SynchronousTestCase):
    def route(self, sendProxy: object, matcher: object = None) -> FakeEndpoint:
        self.endpoint = FakeEndpoint()
        target = BackendTarget(self.endpoint, "fake", sendProxy=sendProxy)  # type: ignore[arg-type]
        table = RouteTable([Route("web", matcher or startsWith(b""), target)])
        self.factory = DemuxFactory(table, MemoryReactorClock())
        return self.endpoint

    def send(self, data: bytes, proxied: bool) -> bytes:
        """
        Connect from a load balancer, send C{data}, and return what the
        backend was sent.
        """
        factory = self.factory.proxied() if proxied else self.factory
        protocol = factory.buildProtocol(BALANCER)
        transport = HalfCloseTransport(peerAddress=BALANCER, hostAddress=LISTENER)
        protocol.makeConnection(transport)  # type: ignore[union-attr]
        protocol.dataReceived(data)  # type: ignore[union-attr]
        [attempt] = self.endpoint.attempts
        attempt.succeed()
        return attempt.transport.value()  # type: ignore[union-attr,no-any-return]

    def test_v2FromTLS(self) -> None:
        """
        A backend that parses the header with demux's codec sees the first
        ALPN protocol offered, the SNI as authority and the route's name.
        """
        self.route(2, startsWith(b"\x16"))
        hello = clientHello("sni.example", ["h2", "http/1.1"])
        sent = self.send(hello, proxied=False)
        length = headerLength(sent)
        assert length is not None
        header = parseHeader(sent[:length])
        self.assertEqual(header.source, BALANCER)
        self.assertEqual(header.destination, LISTENER)
        self.assertEqual(header.tlv(PP2_TYPE_ALPN), b"h2")
        self.assertEqual(header.tlv(PP2_TYPE_AUTHORITY), b"sni.example")
        self.assertEqual(header.tlv(PP2_TYPE_DEMUX_ROUTE), b"web")
        self.assertEqual(sent[length:], hello)

    def test_v2FromHTTPBehindBalancer(self) -> None:
        """
        Behind a C{haproxy:} listener the header names the client the
        incoming one named, and the HTTP host, without its port, is the
        authority.
        """
        self.route("v2")
        request = b"GET / HTTP/1.1\r\nHost: web.example:8443\r\n\r\n"
        sent = self.send(makeHeader(1, CLIENT, FRONT) + request, proxied=True)
        header = parseHeader(sent[: headerLength(sent)])
        self.assertEqual((header.source, header.destination), (CLIENT, FRONT))
        self.assertEqual(header.tlv(PP2_TYPE_AUTHORITY), b"web.example")
        self.assertIsNone(header.tlv(PP2_TYPE_ALPN))
        self.assertEqual(sent[len(header.header) :], request)

    def test_passKeepsTheHeaderExactly(self) -> None:
        """
        C{send_proxy = "pass"} forwards the incoming header byte for byte,
        TLVs and all, whatever its version.
        """
        for incoming in [
            makeHeader(2, CLIENT, FRONT, [(0x05, b"unique"), (0x03, b"\x01\x02\x03\x04"),
                                          (0xE7, b"\x00\xff")]),
            b"PROXY TCP4 203.0.113.7 198.51.100.1 50123 443\r\n",
            makeHeader(2, IPv6Address("TCP", "2001:db8::7", 1), IPv6Address("TCP", "::1", 2)),
        ]:
            self.route("pass")
            self.assertEqual(self.send(incoming + b"hello", proxied=True), incoming + b"hello")

    def test_passWithoutHeaderSendsNothing(self) -> None:
        self.route("pass")
        self.assertEqual(self.send(b"hello", proxied=False), b"hello")

    def test_config(self) -> None:
        from demux import configFromDict

        reactor = MemoryReactorClock()
        for value, expected in [("pass", "pass"), ("v2", 2), ("v1", 1), (2, 2)]:
            config = configFromDict({"listen": ["tcp:0"], "routes": [
                {"name": "r", "match": {"any": {}}, "backend": "tcp:127.0.0.1:1",
                 "send_proxy": value}]}, reactor)
            self.assertEqual(config.table.routes[0].target.sendProxy, expected)  # type: ignore[attr-defined]
        from demux import ConfigError

        e = self.assertRaises(ConfigError, configFromDict, {"listen": ["tcp:0"], "routes": [
            {"name": "r", "match": {"any": {}}, "backend": "tcp:127.0.0.1:1",
             "send_proxy": "v3"}]}, reactor)
        self.assertIn('send_proxy: must be "v1", "v2" or "pass"', str(e))


# In-process targets behind a haproxy: listener.


class InProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.local = RecordingFactory()
        self.other = RecordingFactory()
        table = RouteTable([
            Route("inside", startsWith(b"HI"), LocalTarget(self.local, "inside"),
                  SourceFilter(allow=(ipaddress.ip_network("203.0.113.0/24"),))),
            Route("outside", startsWith(b"HI"), LocalTarget(self.other, "outside")),
        ])
        self.factory = DemuxFactory(table, MemoryReactorClock())

    def connect(self, data: bytes, proxied: bool) -> HalfCloseTransport:
        factory = self.factory.proxied() if proxied else self.factory
        protocol = factory.buildProtocol(BALANCER)
        transport = HalfCloseTransport(peerAddress=BALANCER, hostAddress=LISTENER)
        protocol.makeConnection(transport)  # type: ignore[union-attr]
        protocol.dataReceived(data)  # type: ignore[union-attr]
        self.protocol = protocol
        return transport

    def test_getPeerIsTheClient(self) -> None:
        """
        The in-process protocol's C{transport.getPeer()} and C{getHost()}
        are the PROXY header's addresses; the rest of the transport is the
        connection's own; the C{sources} filter used the header's source.
        """
        transport = self.connect(makeHeader(2, CLIENT, FRONT) + b"HI", proxied=True)
        [protocol] = self.local.protocols
        self.assertEqual(self.other.protocols, [])
        self.assertEqual(protocol.transport.getPeer(), CLIENT)  # type: ignore[union-attr]
        self.assertEqual(protocol.transport.getHost(), FRONT)  # type: ignore[union-attr]
        self.assertTrue(ITransport.providedBy(protocol.transport))
        protocol.transport.write(b"hello")  # type: ignore[union-attr]
        self.assertEqual(transport.value(), b"hello")
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        self.assertTrue(transport.disconnecting)
        self.assertEqual(protocol.received, [b"HI"])

    def test_plainListener(self) -> None:
        """
        Without a PROXY header the protocol gets the connection's own
        transport, and the balancer's address is not in the allow list.
        """
        transport = self.connect(b"HI", proxied=False)
        self.assertEqual(self.local.protocols, [])
        [protocol] = self.other.protocols
        self.assertIs(protocol.transport, transport)

    def test_logLine(self) -> None:
        """
        The connection's line, its decision and its end, names the PROXY
        header's client.
        """
        with capturedLogs() as events:
            self.connect(makeHeader(1, CLIENT, FRONT) + b"HI", proxied=True)
            self.protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[union-attr]
        texts = [formatEvent(e) for e in events]
        self.assertTrue(
            any(
                t.startswith("203.0.113.7:50123 route=inside (") and "; closed:" in t
                for t in texts
            ),
            texts,
        )
        self.assertFalse(any("10.0.0.9" in t for t in texts), texts)

    def test_logLines(self) -> None:
        """
        With C{logDecisions}, the decision and the closing lines name the
        PROXY header's client.
        """
        self.factory.table = evolve(self.factory.table, logDecisions=True)
        with capturedLogs() as events:
            self.connect(makeHeader(1, CLIENT, FRONT) + b"HI", proxied=True)
            self.protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[union-attr]
        texts = [formatEvent(e) for e in events]
        self.assertTrue(
            any(t.startswith("203.0.113.7:50123 route=inside (") for t in texts), texts
        )
        self.assertTrue(
            any(t.startswith("203.0.113.7:50123 route=inside closed:") for t in texts), texts
        )
        self.assertFalse(any("10.0.0.9" in t for t in texts), texts)


class LazyTests(SynchronousTestCase):
    def test_notParsedUnlessAsked(self) -> None:
        """
        What the peek learned is parsed when a target asks, not for every
        connection: a target that asks nothing leaves the ClientHello and
        the HTTP head unparsed (the route's matcher here parses neither).
        """
        from demux._clienthello import parseClientHello
        from demux._httphead import parseRequestHead

        seen: list[ConnectionInfo] = []

        @implementer(ITarget)
        class Recording:
            description = "recording"

            def handOff(
                self, transport: object, peeked: bytes, connection: ConnectionInfo
            ) -> Protocol:
                seen.append(connection)
                return Protocol()

        table = RouteTable([Route("tls", startsWith(b"\x16"), Recording())])
        protocol = DemuxFactory(table, MemoryReactorClock()).buildProtocol(BALANCER)
        protocol.makeConnection(HalfCloseTransport())  # type: ignore[union-attr]
        protocol.dataReceived(clientHello("sni.example"))  # type: ignore[union-attr]
        [connection] = seen
        self.assertEqual(connection.peek._parses, {})
        self.assertEqual(connection.sni, "sni.example")
        self.assertIn(parseClientHello, connection.peek._parses)
        self.assertNotIn(parseRequestHead, connection.peek._parses)
