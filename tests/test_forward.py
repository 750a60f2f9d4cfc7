"""
The HTTP forwarder: its framing parser, the fields it sets and removes, and
one client connection's requests in memory, with a fake backend endpoint
and a hand-turned clock.  (Real sockets, TLS and programs are in
C{test_tlsterm}.)
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from demux import ConnectionInfo
from demux._forward import (
    HTTPForwardTarget,
    clientIdentity,
    escapedCertificate,
    identityFields,
    rewriteRequest,
)
from demux._httpframing import (
    MAX_HEADERS,
    MAX_LINE,
    BodyEvent,
    EndEvent,
    FramingError,
    HeadEvent,
    MessageReader,
)

from ._fakes import FakeEndpoint

PEER = IPv4Address("TCP", "192.0.2.7", 40123)


def events(
    data: bytes,
    requests: bool = True,
    chunks: list[int] | None = None,
    expect: Sequence[bytes] = (),
) -> list:
    """
    The events C{data} makes fed in one piece (or cut at C{chunks}), with
    adjacent body events joined, so that any two splits compare equal;
    responses are read as answers to the methods in C{expect}.
    """
    reader = MessageReader(requests)
    for method in expect:
        reader.expect(method)
    pieces = [data]
    if chunks is not None:
        cuts = sorted(set(c % (len(data) + 1) for c in chunks))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out: list = []
    for piece in pieces:
        reader.feed(piece)
        for event in reader.events():
            if isinstance(event, BodyEvent) and out and isinstance(out[-1], BodyEvent):
                out[-1] = BodyEvent(out[-1].data + event.data)
            else:
                out.append(event)
    return out


def heads(data: bytes) -> list[bytes]:
    return [e.head.startLine for e in events(data) if isinstance(e, HeadEvent)]


class FramingTests(SynchronousTestCase):
    def test_lengthAndChunked(self) -> None:
        """
        A body is delimited by its Content-Length or its chunks, passed on as
        written; the next request follows.
        """
        data = (
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        got = events(data)
        self.assertEqual(
            [type(e).__name__ for e in got],
            ["HeadEvent", "BodyEvent", "EndEvent"] * 2 + ["HeadEvent", "EndEvent"],
        )
        self.assertEqual(got[1].data, b"abc")
        self.assertEqual(got[4].data, b"3;ext=1\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n")

    def assertRefused(self, data: bytes, why: str) -> None:
        reader = MessageReader(requests=True)
        reader.feed(data)
        with self.assertRaises(FramingError) as caught:
            list(reader.events())
        self.assertIn(why, str(caught.exception))

    def test_smuggling(self) -> None:
        """
        Every way of making two parties disagree on where a request ends is
        refused before the request's head is handed on.
        """
        cases = {
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n": "both",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Content-Length: 5\r\n\r\n": "different Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\n": "different",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n": "not a number",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n": "bare LF",
            b"GET / HTTP/1.1\r\nHost: x\n\r\n": "bare LF",
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n": "bare CR",
            b"GET / HTTP/1.1\r\nHost: x\r\nA : b\r\n\r\n": "malformed",
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n": "folding",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n": (
                "other than chunked"
            ),
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n": "other than chunked",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n": "HTTP/1.0",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n": "Host",
            b"GET / HTTP/1.1\r\n\r\n": "Host",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * MAX_LINE + b"\r\n\r\n": (
                "longer"
            ),
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"X: y\r\n" * MAX_HEADERS
            + b"\r\n": "more than",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\n": "hexadecimal",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\nabc\r\n": "longer than its size",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n": "request line",
        }
        for data, why in cases.items():
            self.assertRefused(data, why)

    def test_longLineWithoutEnd(self) -> None:
        """
        A line is refused as soon as it is too long, not when it ends.
        """
        self.assertRefused(b"GET /" + b"a" * (MAX_LINE + 10), "longer")

    def test_responses(self) -> None:
        """
        A response to HEAD, a 204 and a 304 have no body; an interim 100
        comes before the final response; without a length the body lasts
        until the connection ends.
        """
        reader = MessageReader(requests=False)
        for method in (b"HEAD", b"GET", b"POST", b"GET"):
            reader.expect(method)
        reader.feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\n\r\n"
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
        )
        reader.feedEOF()
        got = list(reader.events())
        statuses = [e.head.status for e in got if isinstance(e, HeadEvent)]
        self.assertEqual(statuses, [200, 204, 100, 200, 200])
        self.assertEqual(got[-1], EndEvent(closeDelimited=True))
        self.assertEqual(got[-2], BodyEvent(b"until the end"))


_MESSAGES = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n10;x=y\r\n0123456789abcdef\r\n0\r\nA: b\r\n\r\n",
    b"\r\nGET /z HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 300 + b"\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",  # refused
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
]


class FramingPropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.sampled_from(_MESSAGES), min_size=1, max_size=5),
        st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    )
    def test_anySplit(self, messages: list[bytes], cuts: list[int]) -> None:
        """
        However the bytes are split, they make the same requests, or the
        same error after the same requests.
        """
        data = b"".join(messages)

        def outcome(chunks: list[int] | None) -> tuple[list, str | None]:
            try:
                return events(data, chunks=chunks), None
            except FramingError as e:
                # The events before the error, parsed again up to it.
                return [], str(e)

        whole = outcome(None)
        split = outcome(cuts)
        self.assertEqual(whole[1], split[1])
        if whole[1] is None:
            self.assertEqual(whole[0], split[0])

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=8))
    def test_anyBytes(self, data: bytes, cuts: list[int]) -> None:
        """
        Arbitrary bytes either parse the same in any split, or fail the same.
        """
        def outcome(chunks: list[int] | None) -> object:
            try:
                return events(data, chunks=chunks)
            except FramingError as e:
                return str(e)

        self.assertEqual(outcome(None), outcome(cuts))


_RESPONSES = [
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    (b"GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"3\r\nabc\r\n0\r\n\r\n"),
    (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
]


class ResponsePropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.sampled_from(_RESPONSES), min_size=1, max_size=5),
        st.lists(st.integers(min_value=0, max_value=500), max_size=10),
    )
    def test_anySplit(self, responses: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
        """
        Responses, told which request each answers, frame the same however
        the bytes are split.
        """
        data = b"".join(r for _, r in responses)

        def outcome(chunks: list[int] | None) -> list:
            return events(data, False, chunks, [method for method, _ in responses])

        whole = outcome(None)
        self.assertEqual(whole, outcome(cuts))
        finals = [e for e in whole if isinstance(e, HeadEvent) and e.head.status >= 200]
        self.assertEqual(len(finals), len(responses))


CERT = b"-----BEGIN CERTIFICATE-----\nMIIB+/a=\n-----END CERTIFICATE-----\n"


class IdentityTests(SynchronousTestCase):
    def test_clientIdentity(self) -> None:
        self.assertEqual(clientIdentity(PEER), ("192.0.2.7", 40123))
        self.assertEqual(
            clientIdentity(IPv6Address("TCP", "::ffff:192.0.2.8", 1)), ("192.0.2.8", 1)
        )
        self.assertEqual(
            clientIdentity(IPv6Address("TCP", "fe80::1%eth0", 2)), ("fe80::1", 2)
        )
        self.assertEqual(clientIdentity(UNIXAddress(b"/x")), (None, None))

    def test_escapedCertificate(self) -> None:
        """
        The PEM is escaped as nginx escapes it: every C{+}, C{/}, C{=} and
        newline, so a query-style unescape (C{+} as space) gives it back.
        """
        escaped = escapedCertificate(CERT)
        self.assertIn(b"%", escaped)
        for c in b"+/=\n ":
            self.assertNotIn(bytes([c]), escaped)
        self.assertEqual(unquote(escaped.decode()).encode(), CERT)

    def test_rewrite(self) -> None:
        """
        Whatever the client said about who it is, and hop-by-hop fields, are
        gone; the forwarder's own fields come once each.
        """
        reader = MessageReader(requests=True)
        reader.feed(
            b"GET /v2/ HTTP/1.1\r\nHost: d\r\nX-Forwarded-For: 6.6.6.6\r\n"
            b"x-client-port: 1\r\nX-SSL-Cert: forged\r\nForwarded: for=6.6.6.6\r\n"
            b"X-Tls-Client-Cert-Der-Base64: AAAA\r\nX-Forwarded-Tls-Client-Cert: BB\r\n"
            b"X-Forwarded-Proto: gopher\r\nConnection: keep-alive, X-Secret\r\n"
            b"X-Secret: 1\r\nKeep-Alive: 5\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n"
        )
        event = reader.next()
        assert isinstance(event, HeadEvent)
        identity = identityFields(PEER, True, CERT, forwarded=True)
        head = rewriteRequest(event.head, identity, close=False)
        self.assertEqual(
            head,
            b"GET /v2/ HTTP/1.1\r\nHost: d\r\nAccept: */*\r\n"
            b"X-Forwarded-For: 192.0.2.7\r\nX-Client-Port: 40123\r\n"
            b"X-Forwarded-Proto: https\r\nX-SSL-Cert: " + escapedCertificate(CERT)
            + b'\r\nForwarded: for="192.0.2.7:40123";proto=https\r\n\r\n',
        )

    def test_noCertificate(self) -> None:
        """
        Without a client certificate there is no C{X-SSL-Cert} at all, and
        no C{Forwarded} unless asked for.
        """
        names = [n for n, v in identityFields(PEER, False, None, forwarded=False)]
        self.assertEqual(names, [b"X-Forwarded-For", b"X-Client-Port", b"X-Forwarded-Proto"])
        self.assertIn(
            (b"Forwarded", b'for="[2001:db8::1]:5";proto=http'),
            identityFields(IPv6Address("TCP", "2001:db8::1", 5), False, None, True),
        )


class SessionTests(SynchronousTestCase):
    """
    One client connection, in memory.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.target = HTTPForwardTarget(
            self.endpoint, "http://backend", connectTimeout=5, responseTimeout=7
        )
        self.client = StringTransport()
        self.session = self.target.handOff(
            self.client, b"", ConnectionInfo(self.clock, PEER, None, "web")
        )

    def backend(self, n: int = 0) -> StringTransport:
        attempt = self.endpoint.attempts[n]
        if attempt.transport is None:
            attempt.succeed()
        assert attempt.transport is not None
        return attempt.transport

    def respond(self, data: bytes, n: int = 0) -> None:
        protocol = self.endpoint.attempts[n].protocol
        assert protocol is not None
        protocol.dataReceived(data)

    def test_forward(self) -> None:
        """
        A request goes to the backend with the client's identity; the client
        is paused while the backend is dialled; the response comes back.
        """
        self.session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n")
        self.assertEqual(self.client.producerState, "paused")
        backend = self.backend()
        self.assertEqual(self.client.producerState, "producing")
        sent = backend.value()
        self.assertIn(b"\r\nX-Forwarded-For: 192.0.2.7\r\n", sent)
        self.assertNotIn(b"1.1.1.1", sent)
        self.assertIn(b"X-Forwarded-Proto: http\r\n", sent)
        self.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.client.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertFalse(self.client.disconnecting)

    def test_pipelined(self) -> None:
        """
        Pipelined requests reach the backend one at a time, in order: the
        second only once the first is answered.
        """
        self.session.dataReceived(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        backend = self.backend()
        self.assertIn(b"GET /1", backend.value())
        self.assertNotIn(b"GET /2", backend.value())
        self.assertEqual(self.client.producerState, "paused")
        self.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
        self.assertIn(b"GET /2", backend.value())
        self.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
        self.assertEqual(self.client.value().count(b"200 OK"), 2)
        self.assertEqual(self.client.producerState, "producing")

    def test_smuggled(self) -> None:
        """
        A request with two framings gets 400 and the connection closes; the
        backend sees nothing of it.
        """
        self.session.dataReceived(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.backend()
        self.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        before = backend.value()
        self.session.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(backend.value(), before)
        self.assertIn(b"HTTP/1.1 400 Bad Request\r\n", self.client.value())
        self.assertTrue(self.client.disconnecting)

    def test_backendDown(self) -> None:
        """
        A backend that refuses the connection gives 502.
        """
        self.session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.endpoint.attempts[0].fail(ConnectionRefusedError())
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertTrue(self.client.disconnecting)

    def test_dialTimeout(self) -> None:
        """
        A backend that does not answer the dial gives 504.
        """
        self.session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.clock.advance(5)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"))

    def test_responseTimeout(self) -> None:
        """
        A backend that takes the request and sends nothing gives 504 once
        the response timeout is over.
        """
        self.session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.backend()
        self.clock.advance(6.9)
        self.assertEqual(self.client.value(), b"")
        self.clock.advance(0.2)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"))
        self.assertTrue(backend.disconnecting or backend.disconnected)

    def test_expectContinue(self) -> None:
        """
        C{Expect: 100-continue} is the backend's to answer: its 100 reaches
        the client, then the body goes through.
        """
        self.session.dataReceived(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        backend = self.backend()
        self.assertIn(b"Expect: 100-continue\r\n", backend.value())
        self.respond(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(self.client.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.session.dataReceived(b"data")
        self.assertTrue(backend.value().endswith(b"\r\n\r\ndata"))
        self.respond(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertIn(b"201 Created", self.client.value())
        self.assertFalse(self.client.disconnecting)

    def test_expectRefused(self) -> None:
        """
        A final answer instead of 100 ends the connection after it: the body
        may or may not follow, so nothing after it can be trusted.
        """
        self.session.dataReceived(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        self.backend()
        self.respond(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n")
        self.assertIn(b"417", self.client.value())
        self.assertIn(b"Connection: close", self.client.value())
        self.assertTrue(self.client.disconnecting)

    def test_flowControl(self) -> None:
        """
        A backend that cannot keep up pauses the client; a client that
        cannot keep up pauses the backend.
        """
        self.session.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
        )
        backend = self.backend()
        assert backend.producer is not None
        backend.producer.pauseProducing()
        self.assertEqual(self.client.producerState, "paused")
        backend.producer.resumeProducing()
        self.assertEqual(self.client.producerState, "producing")
        assert self.client.producer is not None
        self.client.producer.pauseProducing()
        self.assertEqual(backend.producerState, "paused")
        self.client.producer.resumeProducing()
        self.assertEqual(backend.producerState, "producing")

    def test_closeDelimited(self) -> None:
        """
        A response that ends with the backend's connection ends the client's
        too, which is told so.
        """
        self.session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.backend()
        self.respond(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        protocol = self.endpoint.attempts[0].protocol
        assert protocol is not None
        protocol.connectionLost(None)  # type: ignore[arg-type]
        value = self.client.value()
        self.assertIn(b"Connection: close\r\n", value)
        self.assertTrue(value.endswith(b"all of it"))
        self.assertTrue(self.client.disconnecting)

    def test_keepAliveNewBackend(self) -> None:
        """
        A backend that closes between requests is dialled again for the
        next one.
        """
        self.session.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.backend()
        self.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.assertFalse(self.client.disconnecting)
        self.assertNotIn(b"Connection: close", self.client.value())
        self.session.dataReceived(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertIn(b"GET /2", self.backend(1).value())

    def test_idleKeepAlive(self) -> None:
        """
        A kept-alive connection nobody uses is closed after one to two idle
        timeouts; one that is in use is not.
        """
        target = HTTPForwardTarget(self.endpoint, "http://backend", idleTimeout=10)
        client = StringTransport()
        session = target.handOff(client, b"", ConnectionInfo(self.clock, PEER, None, "web"))
        for _ in range(5):
            self.clock.advance(5)
            session.dataReceived(b"GET / HTTP/1.1\r\n")
            self.assertFalse(client.disconnecting)
            session.dataReceived(b"Host: a\r\n\r\n")
            self.backend(0)
            self.respond(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.clock.advance(10)
        self.assertFalse(client.disconnecting)
        self.clock.advance(10)
        self.assertTrue(client.disconnecting)
        self.assertEqual(client.value().count(b"204"), 5)

    def test_stalledRequest(self) -> None:
        """
        A client that stops in the middle of a request gets 408.
        """
        target = HTTPForwardTarget(self.endpoint, "http://backend", idleTimeout=10)
        client = StringTransport()
        session = target.handOff(client, b"", ConnectionInfo(self.clock, PEER, None, "web"))
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n")
        self.clock.advance(10)
        self.assertEqual(client.value(), b"")
        self.clock.advance(10)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n"))
        self.assertTrue(client.disconnecting)

    def test_refusedReadsOn(self) -> None:
        """
        After an error of its own the client is read again (it was paused
        for the dial), so that its close is seen; one that never closes is
        cut off.
        """
        self.session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.client.producerState, "paused")
        self.endpoint.attempts[0].fail(ConnectionRefusedError())
        self.assertEqual(self.client.producerState, "producing")
        self.assertTrue(self.client.disconnecting)
        self.clock.advance(10)
        self.assertTrue(self.client.disconnected)

    def test_connectRefused(self) -> None:
        """
        CONNECT is refused: a tunnel has no end the forwarder could find.
        """
        self.session.dataReceived(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 501 Not Implemented\r\n"))
        self.assertEqual(self.endpoint.attempts, [])
