"""
Ending TLS on a route: a step between the decision and the target.

A route with a C{tls} table hands its connections to a L{TLSTarget}, which
wraps the client's transport in Twisted's L{TLSMemoryBIOProtocol}, feeds it
the peeked bytes (the ClientHello) first, and once the handshake is done
hands the decrypted stream to the route's own target as if it were a fresh
connection: a relay, an in-process protocol, the HTTP forwarder, or a
L{RoutesTarget}, which decides again among inner routes with the same
L{DemuxProtocol} and L{decide} every connection goes through.

Client certificates are requested (or required) but never verified against
a CA: the devices that present them (Syncthing's) sign their own, and the
backend decides what a certificate is worth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _log
from ._addresses import peerText
from ._errors import ConfigError
from ._interfaces import ConnectionInfo, ITarget
from ._routes import RouteTable
from ._targets import IInnerTargets

CLIENT_CERTIFICATE_MODES = ("none", "request", "require")
TLS_KEYS = ("certificate", "key", "client_certificate", "handshake_timeout")
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
ALPN = b"http/1.1"
_TLS_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


def _acceptAny(
    connection: SSL.Connection, certificate: Any, errno: int, depth: int, ok: int
) -> bool:
    # Requested, not verified: self-signed device certificates are the
    # point, and the backend judges them.
    return True


def _selectALPN(connection: SSL.Connection, offered: list[bytes]) -> Any:
    if ALPN in offered:
        return ALPN
    # No protocol in common: go on without ALPN rather than fail.
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _read(path: str, where: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path!r}: {e.strerror}", where) from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{path!r} holds no PEM {what}", where)
    return data


@implementer(IOpenSSLServerConnectionCreator)
@frozen
class ServerTLSOptions:
    """
    How a route ends TLS: its certificate and key, loaded into an OpenSSL
    context once, when the configuration is loaded, so that a missing or
    mismatched file is found by C{--check} and by a reload.

    @ivar certificate: the certificate chain file (PEM), as written.
    @ivar key: the private key file (PEM), as written.
    @ivar clientCertificate: C{"none"}, C{"request"} (ask, go on without one)
        or C{"require"} (a client without one fails the handshake).
    @ivar context: the OpenSSL context built from them.
    """

    certificate: str
    key: str
    clientCertificate: str = "none"
    context: SSL.Context = field(default=None, eq=False, repr=False)

    @classmethod
    def fromFiles(
        cls,
        certificate: str,
        key: str,
        clientCertificate: str = "none",
        where: str = "tls",
        sessionContext: bytes = b"demux",
    ) -> ServerTLSOptions:
        """
        Load and check the files.

        @param where: the place in the configuration, for errors.
        @param sessionContext: an identifier for TLS session resumption,
            distinct per route.
        @raise ConfigError: naming C{where} and the file.
        """
        if clientCertificate not in CLIENT_CERTIFICATE_MODES:
            raise ConfigError(
                f"must be one of {', '.join(map(repr, CLIENT_CERTIFICATE_MODES))}, "
                f"not {clientCertificate!r}",
                f"{where}.client_certificate",
            )
        _read(certificate, f"{where}.certificate", "certificate")
        keyData = _read(key, f"{where}.key", "private key")
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        try:
            context.use_certificate_chain_file(certificate)
        except SSL.Error:
            raise ConfigError(
                f"{certificate!r} holds no usable PEM certificate",
                f"{where}.certificate",
            ) from None
        try:
            privateKey = load_pem_private_key(keyData, None)
        except (ValueError, TypeError):
            privateKey = None
        if not isinstance(privateKey, _TLS_KEYS):
            raise ConfigError(
                f"{key!r} holds no usable PEM private key", f"{where}.key"
            ) from None
        try:
            context.use_privatekey(privateKey)
            context.check_privatekey()
        except SSL.Error:
            raise ConfigError(
                f"the key in {key!r} does not match the certificate in "
                f"{certificate!r}",
                f"{where}.key",
            ) from None
        if clientCertificate != "none":
            mode = SSL.VERIFY_PEER
            if clientCertificate == "require":
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            context.set_verify(mode, _acceptAny)
        # Needed for session resumption once client certificates are asked
        # for; distinct per route so that one route's session never resumes
        # on another's.
        context.set_session_id(hashlib.sha256(sessionContext).digest()[:32])
        context.set_alpn_select_callback(_selectALPN)
        return cls(certificate, key, clientCertificate, context)

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self.context, None)


def tlsOptionsFrom(value: object, where: str, route: str) -> ServerTLSOptions:
    """
    The L{ServerTLSOptions} a route's C{tls} table asks for.

    @param where: the route's place, such as C{"route 'discovery'"}.
    @raise ConfigError: naming the key and the file.
    """
    place = f"{where}: tls"
    if not isinstance(value, Mapping):
        raise ConfigError(
            "must be a table with certificate and key, such as "
            'tls.certificate = "cert.pem"',
            place,
        )
    for key in value:
        if key not in TLS_KEYS:
            raise ConfigError(
                f"unknown key {key!r} (known keys: {', '.join(TLS_KEYS)})", place
            )
    for key in ("certificate", "key"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise ConfigError(
                f"must name a PEM file, not {value.get(key)!r}", f"{place}.{key}"
            )
    mode = value.get("client_certificate", "none")
    if not isinstance(mode, str):
        mode = repr(mode)
    return ServerTLSOptions.fromFiles(
        value["certificate"],
        value["key"],
        mode,
        place,
        route.encode("utf-8"),
    )


class _ServerTLS(BufferingTLSTransport):
    """
    Twisted's TLS layer, as the transport of a decrypted stream.

    It cannot half-close: TLS ends with a close_notify, and Twisted's layer
    has no way to send one and go on reading.  Without this,
    C{loseWriteConnection} (which a relay calls when the backend has
    finished sending) would reach the TCP transport underneath and shut
    the socket's sending side with no close_notify, which a client reads
    as a truncated stream.  Here it ends the TLS connection properly
    instead, after what was written.
    """

    def loseWriteConnection(self) -> None:
        self.loseConnection()


class _NoProtocols(Factory):
    """
    The wrapped factory of a per-connection L{TLSMemoryBIOFactory}, which
    never builds anything: the protocol it wraps is made by the target.
    """

    noisy = False


@implementer(IHandshakeListener)
class _Decrypted(Protocol):
    """
    The protocol inside the TLS layer: it waits for the handshake, so that
    the client's certificate is known before the inner target sees a byte,
    then hands the decrypted stream on.
    """

    transport: Any

    def __init__(self, target: TLSTarget, connection: ConnectionInfo) -> None:
        self.target = target
        self.connection = connection
        self.downstream: Protocol | None = None
        self.started = connection.clock.seconds()
        self.timer: IDelayedCall | None = None
        self.why: str | None = None

    def connectionMade(self) -> None:
        # The route's decision stopped the inspection timer: a client that
        # stalls in the handshake is cut off by this one.
        self.timer = self.connection.clock.callLater(
            self.target.handshakeTimeout, self._tooSlow
        )

    def _tooSlow(self) -> None:
        self.timer = None
        self.why = (
            f"TLS handshake not done within {self.target.handshakeTimeout:g}s"
        )
        self.transport.abortConnection()

    def _cancelTimer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def handshakeCompleted(self) -> None:
        self._cancelTimer()
        self.downstream = self.target.inner.handOff(self.transport, b"", self.connection)

    def dataReceived(self, data: bytes) -> None:
        if self.downstream is not None:
            self.downstream.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelTimer()
        connection = self.connection
        duration = connection.clock.seconds() - self.started
        if self.downstream is not None:
            self.downstream.connectionLost(reason)
            if isinstance(self.target.inner, RoutesTarget):
                # The inner route the connection took (if any) counts its
                # own end and bytes, and logs its own decision; the outer
                # one is closed here, with its decision if that had no line
                # of its own.
                connection.observer.closed(connection.route, 0, 0, duration)
                if connection.logConnections and connection.decided is not None:
                    _log.decryptedClosed(
                        peerText(connection.peer),
                        connection.route,
                        duration,
                        connection.decided,
                    )
            return
        connection.observer.closed(connection.route, 0, 0, duration)
        if self.why is not None:
            why = self.why
        elif reason.check(SSL.Error):
            why = f"TLS handshake failed: {_sslReason(reason.value)}"
        else:
            why = "closed during the TLS handshake"
        # The connection's only line: it carries the decision, if that had
        # no line of its own.
        _log.handshakeEnded(
            peerText(connection.peer),
            connection.route,
            why,
            duration,
            connection.decided,
        )


def _sslReason(error: BaseException) -> str:
    """
    The reasons in an OpenSSL error, without the tuples pyOpenSSL wraps
    them in.
    """
    reasons = []
    for entry in error.args[0] if error.args else ():
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return "; ".join(reasons) or str(error) or type(error).__name__


@implementer(ITarget, IInnerTargets)
@frozen
class TLSTarget:
    """
    End TLS, then hand the decrypted stream to C{inner}.

    @ivar options: the certificate, key and client-certificate policy.
    @ivar inner: where the decrypted stream goes.
    @ivar handshakeTimeout: seconds a client has to complete the handshake.
    """

    options: ServerTLSOptions
    inner: ITarget
    description: str = ""
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    def __attrs_post_init__(self) -> None:
        if not self.description:
            object.__setattr__(self, "description", f"tls -> {self.inner.description}")

    def innerTargets(self) -> tuple[ITarget, ...]:
        """
        Where the decrypted stream goes.
        """
        return (self.inner,)

    def handOff(
        self, transport: ITransport, peeked: bytes, connection: ConnectionInfo
    ) -> Protocol:
        # A factory per connection: it holds nothing but its options and
        # its clock, and a shared one would keep every live connection in
        # its registry.
        factory = TLSMemoryBIOFactory(
            self.options, False, _NoProtocols(), connection.clock
        )
        tls = _ServerTLS(factory, _Decrypted(self, connection))
        tls.makeConnection(transport)
        if peeked:
            tls.dataReceived(peeked)
        return tls


@implementer(ITarget, IInnerTargets)
@frozen
class RoutesTarget:
    """
    Decide again, among inner routes: the decrypted stream of a TLS route
    is matched like any connection, by the same protocol and decision, with
    the client's address it came with.

    @ivar table: the inner routes and their limits.
    """

    table: RouteTable
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.description:
            names = ", ".join(route.name for route in self.table.routes)
            object.__setattr__(self, "description", f"routes ({names})")

    def innerTargets(self) -> tuple[ITarget, ...]:
        """
        The inner routes' targets.
        """
        return tuple(route.target for route in self.table.routes)

    def handOff(
        self, transport: ITransport, peeked: bytes, connection: ConnectionInfo
    ) -> Protocol:
        from ._protocol import DemuxFactory, DemuxProtocol

        factory = DemuxFactory(self.table, connection.clock, connection.observer)
        protocol = DemuxProtocol(self.table, connection.clock)
        protocol.peer = connection.peer
        protocol.host = connection.host
        factory.adopt(protocol)
        protocol.makeConnection(transport)
        if peeked:
            protocol.dataReceived(peeked)
        return protocol
