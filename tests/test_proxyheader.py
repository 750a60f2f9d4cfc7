"""
PROXY protocol headers: read before matching however they are split, and
written in front of what a route sends to its backend.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from demux import BackendTarget, DemuxFactory, Route, RouteTable
from demux._proxyheader import InvalidProxyHeader, headerLength, makeHeader, parseHeader

from ._fakes import FakeEndpoint, HalfCloseTransport, startsWith

CLIENT = IPv4Address("TCP", "203.0.113.7", 50123)
FRONT = IPv4Address("TCP", "198.51.100.1", 443)


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
        from demux._relay import Backend

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

        from demux._relay import Backend

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
