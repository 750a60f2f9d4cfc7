"""
The HTTP forwarder: a target that reads HTTP/1.1 requests from the client,
tells the backend who the client is in headers, and streams each request
and its response through.

Why not C{twisted.web}: C{HTTPChannel} accepts a bare LF as a line end,
which is exactly the kind of disagreement request smuggling is made of, and
it would re-serialise every message; on the backend side the streaming
client, C{twisted.web._newclient}, is private, and C{Agent} knows no
C{Expect: 100-continue} and buffers nothing less than it reframes.  A proxy
needs to know where messages begin and end, not what they mean, so the
forwarder uses a small strict framing parser (L{demux._httpframing}) on
both sides and passes bodies on as they arrive, chunk framing included.

What it promises:

  - On every request, C{X-Forwarded-For} is exactly the client's IP (from
    L{ConnectionInfo.peer}, so the address a PROXY header named on a
    C{haproxy:} listener), C{X-Client-Port} its port, C{X-Forwarded-Proto}
    C{https} (C{http} on a plain connection), and C{X-SSL-Cert} the client's
    certificate as URL-escaped PEM (nginx's C{$ssl_client_escaped_cert}),
    absent without one; what the client sent in those fields, in
    C{X-Tls-Client-Cert-Der-Base64}, C{X-Forwarded-Tls-Client-Cert} and
    C{Forwarded} is removed first.  Optionally an RFC 7239 C{Forwarded}.
  - Hop-by-hop fields (C{Connection} and those it names, C{Keep-Alive},
    C{Proxy-Connection}, C{TE}, C{Upgrade}) are not forwarded: persistence
    is decided on each side separately.
  - Pipelined requests are served one after the other, in order: the next
    is read only once the response to the previous one is complete, and the
    client is paused meanwhile.
  - Flow control both ways: a backend that reads slowly pauses the client,
    a client that reads slowly pauses the backend; nothing is buffered
    whole.
  - A request the parser refuses gets C{400} and the connection is closed,
    so nothing after it can be read as a second request.  A backend that
    cannot be reached gets C{502}, one that does not answer within the
    timeout C{504}.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import quote

from attrs import frozen
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    ISSLTransport,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _log
from ._addresses import peerText
from ._httpframing import (
    BodyEvent,
    EndEvent,
    FramingError,
    Head,
    HeadEvent,
    MessageReader,
)
from ._interfaces import ConnectionInfo, ITarget

DEFAULT_RESPONSE_TIMEOUT = 60.0
DEFAULT_IDLE_TIMEOUT = 120.0
LINGER = 10.0
"""Seconds a closing client connection has to take the last response."""

IDENTITY_FIELDS = frozenset(
    {
        b"x-forwarded-for",
        b"x-client-port",
        b"x-forwarded-proto",
        b"x-ssl-cert",
        b"x-tls-client-cert-der-base64",
        b"x-forwarded-tls-client-cert",
        b"forwarded",
    }
)
"""The fields a client may not set: the forwarder alone says who it is."""

_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"}
)
# A Connection field may name fields to drop, but never these: dropping
# them would change where the message ends or what it is for.
_NEVER_DROPPED = frozenset({b"content-length", b"transfer-encoding", b"host"})

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    501: "Not Implemented",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


def clientIdentity(peer: IAddress) -> tuple[str | None, int | None]:
    """
    The client's IP as the backend should read it (an IPv4-mapped IPv6
    address as IPv4, no zone) and its port, or L{None}s for an address
    without them (a UNIX socket).
    """
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if not isinstance(host, str):
        return None, None
    host = host.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host, port if isinstance(port, int) else None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), port if isinstance(port, int) else None


def escapedCertificate(pem: bytes) -> bytes:
    """
    A PEM certificate URL-escaped the way nginx's
    C{$ssl_client_escaped_cert} is, which Syncthing's discovery server
    un-escapes when the value contains C{%}: every byte outside the
    unreserved set, C{+} and C{/} and C{=} and newlines included.
    """
    return quote(pem, safe="-_.~").encode("ascii")


def identityFields(
    peer: IAddress,
    secure: bool,
    certificatePEM: bytes | None,
    forwarded: bool,
) -> list[tuple[bytes, bytes]]:
    """
    The fields that tell the backend who the client is.
    """
    ip, port = clientIdentity(peer)
    proto = b"https" if secure else b"http"
    fields: list[tuple[bytes, bytes]] = []
    if ip is not None:
        fields.append((b"X-Forwarded-For", ip.encode("ascii")))
    if port is not None:
        fields.append((b"X-Client-Port", str(port).encode("ascii")))
    fields.append((b"X-Forwarded-Proto", proto))
    if certificatePEM:
        fields.append((b"X-SSL-Cert", escapedCertificate(certificatePEM)))
    if forwarded:
        if ip is None:
            node = '"_unknown"'
        elif ":" in ip:
            node = f'"[{ip}]:{port}"' if port is not None else f'"[{ip}]"'
        else:
            node = f'"{ip}:{port}"' if port is not None else ip
        fields.append((b"Forwarded", f"for={node};proto={proto.decode()}".encode()))
    return fields


def rewriteRequest(
    head: Head, identity: list[tuple[bytes, bytes]], close: bool
) -> bytes:
    """
    The request head to send the backend: the client's, without hop-by-hop
    and identity fields, with C{identity} added and C{Connection: close} if
    the client's connection ends after this exchange.
    """
    dropped = set(_HOP_BY_HOP | IDENTITY_FIELDS)
    dropped.update(t for t in head.tokens(b"connection") if t not in _NEVER_DROPPED)
    lines = [head.startLine]
    for name, value in head.fields:
        if name.lower() not in dropped:
            lines.append(name + b": " + value)
    if close and head.version == b"1.1":
        lines.append(b"Connection: close")
    for name, value in identity:
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def rewriteResponse(head: Head, close: bool) -> bytes:
    """
    The response head to send the client: the backend's, without hop-by-hop
    fields, saying C{Connection: close} if the client's connection ends
    after it.
    """
    dropped = set(_HOP_BY_HOP)
    dropped.update(t for t in head.tokens(b"connection") if t not in _NEVER_DROPPED)
    if head.status == 101:
        dropped.discard(b"upgrade")
    lines = [head.startLine]
    for name, value in head.fields:
        if name.lower() not in dropped:
            lines.append(name + b": " + value)
    if close and head.status >= 200:
        lines.append(b"Connection: close")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def errorResponse(status: int, detail: str) -> bytes:
    """
    A complete response of demux's own, after which the connection closes.
    """
    body = f"{status} {_REASONS[status]}: {detail}\n".encode()
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def _wantsClose(head: Head) -> bool:
    tokens = head.tokens(b"connection")
    if head.version == b"1.0":
        return b"keep-alive" not in tokens
    return b"close" in tokens


@implementer(IPushProducer)
class _Valve:
    """
    Pauses a transport for any of several reasons at once, and resumes it
    when none is left: a registered producer (the other side is full) and
    the forwarder's own waits (for a dial, for a response) share one
    transport's pause switch without undoing each other's.
    """

    def __init__(self) -> None:
        self.transport: Any = None
        self.reasons: set[str] = set()

    def attach(self, transport: Any) -> None:
        self.transport = transport
        if self.reasons:
            transport.pauseProducing()

    def pause(self, reason: str) -> None:
        if not self.reasons and self.transport is not None:
            self.transport.pauseProducing()
        self.reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self.reasons:
            return
        self.reasons.discard(reason)
        if not self.reasons and self.transport is not None:
            self.transport.resumeProducing()

    # IPushProducer, as registered with the other side's transport.
    def pauseProducing(self) -> None:
        self.pause("full")

    def resumeProducing(self) -> None:
        self.resume("full")

    def stopProducing(self) -> None:
        self.reasons.clear()


@implementer(ITarget)
@frozen
class HTTPForwardTarget:
    """
    Forward HTTP/1.1 requests to a backend, telling it who the client is.

    @ivar endpoint: how to reach the backend.
    @ivar description: the backend as the user wrote it, for logs.
    @ivar connectTimeout: seconds a backend connection may take; past it the
        client gets C{504}.
    @ivar responseTimeout: seconds the backend may take to start its
        response once the request is sent; past it the client gets C{504}.
    @ivar forwarded: whether to add an RFC 7239 C{Forwarded} field too.
    @ivar idleTimeout: seconds without a byte either way (outside the wait
        for a response) after which the client's connection is closed: a
        kept-alive connection nobody uses, or a client that stalls in the
        middle of a request.
    """

    endpoint: IStreamClientEndpoint
    description: str
    connectTimeout: float = 10.0
    responseTimeout: float = DEFAULT_RESPONSE_TIMEOUT
    forwarded: bool = False
    idleTimeout: float = DEFAULT_IDLE_TIMEOUT

    def handOff(
        self, transport: ITransport, peeked: bytes, connection: ConnectionInfo
    ) -> Protocol:
        session = ForwardSession(self, connection)
        session.makeConnection(transport)
        if peeked:
            session.dataReceived(peeked)
        return session


class _BackendProtocol(Protocol):
    transport: Any

    def __init__(self, session: ForwardSession) -> None:
        self.session: ForwardSession | None = session

    def connectionMade(self) -> None:
        assert self.session is not None
        self.session.backendConnected(self)

    def dataReceived(self, data: bytes) -> None:
        if self.session is not None:
            self.session.backendData(self, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.backendLost(self, reason)


class _BackendFactory(Factory):
    noisy = False

    def __init__(self, session: ForwardSession) -> None:
        self.session = session

    def buildProtocol(self, addr: IAddress | None) -> _BackendProtocol:
        return _BackendProtocol(self.session)


@implementer(IHalfCloseableProtocol)
class ForwardSession(Protocol):
    """
    One client connection of an L{HTTPForwardTarget}: its requests in turn,
    over one backend connection kept alive as long as the backend allows
    (a new one is dialled when it is gone).
    """

    transport: Any

    def __init__(self, target: HTTPForwardTarget, connection: ConnectionInfo) -> None:
        self.target = target
        self.connection = connection
        self.clock = connection.clock
        self.requests = MessageReader(requests=True)
        self.responses = MessageReader(requests=False)
        self.clientValve = _Valve()
        self.backendValve = _Valve()
        self.backend: _BackendProtocol | None = None
        self.dialling: Deferred[Any] | None = None
        self.queued: list[bytes] = []
        # The exchange in progress.
        self.request: Head | None = None
        self.requestDone = False
        self.responseStarted = False
        self.responseDone = False
        self.closeAfter = False
        self.discardBody = False
        self.bodySent = 0
        self.timer: IDelayedCall | None = None
        self.certificate: bytes | None = None
        self.secure = False
        self.count = 0
        self.bytesUp = 0
        self.bytesDown = 0
        self.started = self.clock.seconds()
        self.lost = False
        self.closing = False
        self.idle = False
        self.idleTimer: IDelayedCall | None = None
        self.lingerTimer: IDelayedCall | None = None

    # The client's side.

    def connectionMade(self) -> None:
        transport = self.transport
        self.idleTimer = self.clock.callLater(self.target.idleTimeout, self._checkIdle)
        self.clientValve.attach(transport)
        transport.registerProducer(self.backendValve, True)
        if ISSLTransport.providedBy(transport) or isinstance(
            transport, TLSMemoryBIOProtocol
        ):
            self.secure = True
            certificate: Any = transport.getPeerCertificate()
            if certificate is not None:
                self.certificate = certificate.to_cryptography().public_bytes(
                    Encoding.PEM
                )

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.idle = False
        self.bytesUp += len(data)
        self.requests.feed(data)
        self._pump()

    def readConnectionLost(self) -> None:
        # The client will send nothing more: a complete request is still
        # answered, then the connection closes; an incomplete one never will
        # be.
        self.closeAfter = True
        if self.request is None or not self.requestDone:
            self._close()

    def writeConnectionLost(self) -> None:
        self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self._cancelTimer()
        for timer in (self.idleTimer, self.lingerTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self.idleTimer = self.lingerTimer = None
        if self.dialling is not None:
            self.dialling.cancel()
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.session = None
            backend.transport.loseConnection()
        duration = self.clock.seconds() - self.started
        route = self.connection.route
        self.connection.observer.closed(route, self.bytesUp, self.bytesDown, duration)
        if self.connection.logConnections:
            _log.forwardClosed(
                peerText(self.connection.peer),
                route,
                self.count,
                self.bytesUp,
                self.bytesDown,
                duration,
                self.connection.decided,
            )

    def _pump(self) -> None:
        """
        Turn the client's bytes into requests for as long as the exchange in
        progress allows: a request's body as it comes, the next request only
        once this one's response is complete.
        """
        while not self.closing and not self.lost:
            if self.request is not None and self.requestDone:
                # Pipelined bytes wait, unparsed, for the response.
                if self.requests.buffered:
                    self.clientValve.pause("response")
                return
            try:
                event = self.requests.next()
            except FramingError as e:
                self._refuse(400, str(e))
                return
            if event is None:
                return
            if isinstance(event, HeadEvent):
                if event.head.method == b"CONNECT":
                    # A tunnel is not an HTTP exchange: its end could not be
                    # found, and the backend is one server, not a proxy.
                    self._refuse(501, "CONNECT is not forwarded")
                    return
                self._startRequest(event.head)
            elif isinstance(event, BodyEvent):
                self.bodySent += len(event.data)
                if not self.discardBody:
                    self._toBackend(event.data)
            else:
                assert isinstance(event, EndEvent)
                self.requestDone = True
                if self.discardBody:
                    self._exchangeDone()
                elif self.backend is not None or self.dialling is not None:
                    self._armTimer()

    def _startRequest(self, head: Head) -> None:
        self.count += 1
        self.request = head
        self.requestDone = False
        self.responseStarted = False
        self.responseDone = False
        self.discardBody = False
        self.bodySent = 0
        if _wantsClose(head):
            self.closeAfter = True
        identity = identityFields(
            self.connection.peer, self.secure, self.certificate, self.target.forwarded
        )
        self.responses.expect(head.method)
        if self.backend is None and self.dialling is None:
            self._dial()
        self._toBackend(rewriteRequest(head, identity, self.closeAfter))

    def _toBackend(self, data: bytes) -> None:
        if self.backend is not None:
            self.backend.transport.write(data)
        else:
            self.queued.append(data)

    def _refuse(self, status: int, detail: str) -> None:
        """
        Answer with an error of demux's own if nothing of a response has been
        sent yet, else cut the connection; either way, it ends here.
        """
        _log.forwardRefused(
            peerText(self.connection.peer), self.connection.route, status, detail
        )
        self.closing = True
        self._cancelTimer()
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.session = None
            backend.transport.abortConnection()
        if self.dialling is not None:
            self.dialling.cancel()
        if self.lost:
            return
        self.transport.unregisterProducer()
        if self.responseStarted:
            self.transport.abortConnection()
            return
        error = errorResponse(status, detail)
        self.bytesDown += len(error)
        self.transport.write(error)
        self._lingerThenClose()

    def _close(self) -> None:
        if self.lost or self.closing:
            return
        self.closing = True
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.session = None
            backend.transport.loseConnection()
        self.transport.unregisterProducer()
        self._lingerThenClose()

    def _lingerThenClose(self) -> None:
        """
        Close the client's connection once what was written is sent.  It is
        read again (and what it says dropped) whatever paused it, so that its
        close is seen; one that neither reads nor closes is cut off.
        """
        self.clientValve.reasons.clear()
        self.transport.resumeProducing()
        self.transport.loseConnection()
        self.lingerTimer = self.clock.callLater(LINGER, self._abortLingering)

    def _abortLingering(self) -> None:
        self.lingerTimer = None
        if not self.lost:
            self.transport.abortConnection()

    # The backend's side.

    def _dial(self) -> None:
        self.clientValve.pause("dial")
        self.dialStarted = self.clock.seconds()
        d = self.target.endpoint.connect(_BackendFactory(self))
        d.addTimeout(self.target.connectTimeout, self.clock)
        self.dialling = d

        def failed(reason: Failure) -> None:
            if self.dialling is not d:
                return
            self.dialling = None
            if self.lost or self.closing:
                return
            self.connection.observer.backendFailed(
                self.connection.route, self.target.description
            )
            if reason.check(TimeoutError, CancelledError, DeferredTimeoutError):
                self._refuse(
                    504,
                    f"backend {self.target.description} did not answer within "
                    f"{self.target.connectTimeout:g}s",
                )
            else:
                self._refuse(
                    502,
                    f"backend {self.target.description} failed: "
                    f"{reason.getErrorMessage()}",
                )

        d.addErrback(failed)

    def backendConnected(self, backend: _BackendProtocol) -> None:
        self.dialling = None
        if self.lost or self.closing:
            backend.session = None
            backend.transport.loseConnection()
            return
        self.connection.observer.backendConnected(
            self.connection.route,
            self.target.description,
            self.clock.seconds() - self.dialStarted,
        )
        self.backend = backend
        setNoDelay = getattr(backend.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            # A request head and its body are written as they come: none of
            # them should wait for the backend's delayed acknowledgement.
            setNoDelay(True)
        self.responses = MessageReader(requests=False)
        if self.request is not None:
            self.responses.expect(self.request.method)
        self.backendValve.attach(backend.transport)
        backend.transport.registerProducer(self.clientValve, True)
        queued, self.queued = self.queued, []
        if queued:
            backend.transport.write(b"".join(queued))
        self.clientValve.resume("dial")
        if self.requestDone:
            self._armTimer()

    def backendData(self, backend: _BackendProtocol, data: bytes) -> None:
        self.idle = False
        self.responses.feed(data)
        self._pumpResponses()

    def _pumpResponses(self) -> None:
        while self.backend is not None and not self.closing:
            try:
                event = self.responses.next()
            except FramingError as e:
                self._refuse(502, f"backend sent {e}")
                return
            if event is None:
                return
            if self.request is None or self.responseDone:
                self._dropBackend(abort=True)
                return
            if isinstance(event, HeadEvent):
                self._cancelTimer()
                head = event.head
                if head.status < 200:
                    if head.status == 101:
                        self._refuse(502, "backend switched protocols")
                        return
                    self._toClient(rewriteResponse(head, False))
                    continue
                self.responseStarted = True
                if not self.requestDone and self._expectsContinue():
                    # A final answer to C{Expect: 100-continue}: the body
                    # may never come, so the connection cannot be reused.
                    self.closeAfter = True
                if head.version == b"1.0" and b"keep-alive" not in head.tokens(
                    b"connection"
                ):
                    self.backendCloses = True
                elif b"close" in head.tokens(b"connection"):
                    self.backendCloses = True
                if not (head.values(b"content-length") or head.values(
                    b"transfer-encoding"
                )) and not _bodyless(self.request, head):
                    # Its end is the backend's close: so is the client's.
                    self.closeAfter = True
                    self.backendCloses = True
                self._toClient(rewriteResponse(head, self.closeAfter))
            elif isinstance(event, BodyEvent):
                self._toClient(event.data)
            else:
                assert isinstance(event, EndEvent)
                if not self.responseStarted:
                    # The end of an interim response.
                    continue
                self.responseDone = True
                self._responseComplete()
                return

    backendCloses = False

    def _expectsContinue(self) -> bool:
        assert self.request is not None
        return b"100-continue" in self.request.tokens(b"expect")

    def _toClient(self, data: bytes) -> None:
        self.bytesDown += len(data)
        self.transport.write(data)

    def _responseComplete(self) -> None:
        if self.backendCloses:
            self.backendCloses = False
            self._dropBackend(abort=False)
        if self.requestDone:
            self._exchangeDone()
            return
        # The backend answered before the body was all sent: the rest of it
        # is read and dropped, so that it cannot be taken for a request.
        if self.closeAfter:
            self._close()
            return
        self.discardBody = True
        self._dropBackend(abort=True)

    def _exchangeDone(self) -> None:
        self.request = None
        self.requestDone = False
        self.responseStarted = False
        self.responseDone = False
        self.discardBody = False
        if self.closeAfter:
            self._close()
            return
        self.clientValve.resume("response")
        self._pump()

    def _dropBackend(self, abort: bool) -> None:
        backend, self.backend = self.backend, None
        if backend is None:
            return
        backend.session = None
        backend.transport.unregisterProducer()
        self.backendValve.transport = None
        self.clientValve.resume("full")
        if abort:
            backend.transport.abortConnection()
        else:
            backend.transport.loseConnection()

    def backendLost(self, backend: _BackendProtocol, reason: Failure) -> None:
        if backend is not self.backend:
            return
        self.backend = None
        self.backendValve.transport = None
        self.clientValve.resume("full")
        if self.closing or self.lost:
            return
        self.responses.feedEOF()
        self.backend = backend  # for _pumpResponses' sake, one last time
        self._pumpResponses()
        if self.backend is backend:
            self.backend = None
        if self.closing or self.request is None or self.responseDone:
            return
        if self.responseStarted:
            _log.forwardCutOff(peerText(self.connection.peer), self.connection.route)
            self._refuse(502, "backend closed in the middle of a response")
            return
        self._refuse(
            502,
            f"backend {self.target.description} closed the connection without "
            "a response",
        )

    def _checkIdle(self) -> None:
        """
        Close the connection if nothing moved for a whole idle timeout (a
        flag cleared by every read, so the hot path reads no clock).
        """
        self.idleTimer = None
        if self.lost or self.closing:
            return
        if not self.idle or self.timer is not None:
            # Busy, or waiting for the backend, which has its own timeout.
            self.idle = True
            self.idleTimer = self.clock.callLater(
                self.target.idleTimeout, self._checkIdle
            )
            return
        if self.request is None and self.requests.idle:
            self._close()
            return
        self._refuse(408, f"nothing moved for {self.target.idleTimeout:g}s")

    # The response timeout.

    def _armTimer(self) -> None:
        if self.timer is None and not self.responseStarted:
            self.timer = self.clock.callLater(
                self.target.responseTimeout, self._timedOut
            )

    def _cancelTimer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def _timedOut(self) -> None:
        self.timer = None
        self._refuse(
            504,
            f"backend {self.target.description} sent no response within "
            f"{self.target.responseTimeout:g}s",
        )


def _bodyless(request: Head, response: Head) -> bool:
    return request.method == b"HEAD" or response.status in (204, 304)
