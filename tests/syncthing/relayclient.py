"""
A client for Syncthing's relay protocol v1, written from the published
specification (the C{syncthing-relay(7)} page, "Relay Protocol v1").

The relay speaks two modes on one port, which is exactly why demux is in
front of it:

  - I{protocol mode}, over TLS with the ALPN protocol C{bep-relay} and a
    client certificate: a device joins the relay (L{JoinRelayRequest}) and
    waits for L{SessionInvitation}s, or asks for a session with a joined
    device (L{ConnectRequest});
  - I{session mode}, in plain TCP: each side of an invitation sends a
    L{JoinSessionRequest} with the session key and, after a successful
    L{Response}, every byte it writes reaches the other side.

Every message is a 12-byte header (magic C{0x9E79BC40}, message type,
payload length, all big-endian 32-bit) followed by an XDR-encoded payload.
The client uses blocking sockets with timeouts: each test drives one
exchange at a time, and a blocking call with a deadline fails clearly.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import ssl
import struct
from typing import ClassVar

import attrs

from .identity import Identity, verifyPeer

MAGIC = 0x9E79BC40
"""
The first four bytes of every relay message, and so of every session-mode
connection: what the C{relay-session} route's prefix matcher looks for.
"""

ALPN = "bep-relay"
"""
The TLS protocol name of protocol mode, what the C{relay-protocol} route
matches.
"""

_HEADER = struct.Struct(">Iii")
_MAX_PAYLOAD = 1024
"""
No relay message carries more than a few short fields; anything longer is a
framing error, not a message to wait for.
"""


class MessageType(enum.IntEnum):
    """
    The message types of relay protocol v1.
    """

    PING = 0
    PONG = 1
    JOIN_RELAY_REQUEST = 2
    JOIN_SESSION_REQUEST = 3
    RESPONSE = 4
    CONNECT_REQUEST = 5
    SESSION_INVITATION = 6
    RELAY_FULL = 7


class ResponseCode(enum.IntEnum):
    """
    The codes of a L{Response} that the specification names.
    """

    SUCCESS = 0
    NOT_FOUND = 1
    ALREADY_CONNECTED = 2


class RelayProtocolError(Exception):
    """
    The relay said something the specification does not allow here.
    """


# XDR: big-endian 32-bit integers; opaque and string are a 32-bit length,
# the bytes, and zero padding to a multiple of four.


def _xdrOpaque(data: bytes, maxLength: int | None = None) -> bytes:
    if maxLength is not None and len(data) > maxLength:
        raise ValueError(f"{len(data)} bytes do not fit opaque<{maxLength}>")
    return struct.pack(">I", len(data)) + data + b"\x00" * (-len(data) % 4)


class _XDRReader:
    """
    Reads XDR fields from one message payload, refusing to run past its end.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def _take(self, count: int) -> bytes:
        if self._offset + count > len(self._data):
            raise RelayProtocolError("message payload is truncated")
        chunk = self._data[self._offset : self._offset + count]
        self._offset += count
        return chunk

    def uint32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self._take(4))[0])

    def boolean(self) -> bool:
        value = self.uint32()
        if value not in (0, 1):
            raise RelayProtocolError(f"XDR bool must be 0 or 1, not {value}")
        return value == 1

    def opaque(self, maxLength: int | None = None) -> bytes:
        length = self.uint32()
        if maxLength is not None and length > maxLength:
            raise RelayProtocolError(f"opaque of {length} bytes, at most {maxLength}")
        data = self._take(length)
        self._take(-length % 4)
        return data

    def string(self) -> str:
        return self.opaque().decode("utf-8", errors="replace")

    def end(self) -> None:
        if self._offset != len(self._data):
            raise RelayProtocolError(
                f"{len(self._data) - self._offset} stray bytes after the message"
            )


@attrs.frozen
class Ping:
    """
    Keep-alive; the peer answers with L{Pong}.
    """

    type: ClassVar[MessageType] = MessageType.PING

    def payload(self) -> bytes:
        return b""


@attrs.frozen
class Pong:
    """
    The answer to L{Ping}.
    """

    type: ClassVar[MessageType] = MessageType.PONG

    def payload(self) -> bytes:
        return b""


@attrs.frozen
class JoinRelayRequest:
    """
    Join the relay permanently, to be offered sessions.
    """

    type: ClassVar[MessageType] = MessageType.JOIN_RELAY_REQUEST

    def payload(self) -> bytes:
        return b""


@attrs.frozen
class RelayFull:
    """
    The relay has no room for another client.
    """

    type: ClassVar[MessageType] = MessageType.RELAY_FULL

    def payload(self) -> bytes:
        return b""


@attrs.frozen
class JoinSessionRequest:
    """
    The one message of session mode: join the session named by C{key}.
    """

    type: ClassVar[MessageType] = MessageType.JOIN_SESSION_REQUEST
    key: bytes

    def payload(self) -> bytes:
        return _xdrOpaque(self.key, 32)


@attrs.frozen
class Response:
    """
    The relay's answer to a join or connect request.
    """

    type: ClassVar[MessageType] = MessageType.RESPONSE
    code: int
    message: str

    def payload(self) -> bytes:
        return struct.pack(">i", self.code) + _xdrOpaque(self.message.encode())


@attrs.frozen
class ConnectRequest:
    """
    Ask for a session with the joined device whose raw ID is C{deviceID}.
    """

    type: ClassVar[MessageType] = MessageType.CONNECT_REQUEST
    deviceID: bytes

    def payload(self) -> bytes:
        return _xdrOpaque(self.deviceID, 32)


@attrs.frozen
class SessionInvitation:
    """
    An offer of a session: who it is with, its key, where to join it, and
    which side of the end-to-end TLS this device should take.

    @ivar address: raw IPv4 or IPv6 address bytes, or empty: an empty or
        unspecified address means "the address you reached me on", which is
        how a relay started with C{-ext-address :PORT} sends its clients
        back through the front (demux) they came in by.
    """

    type: ClassVar[MessageType] = MessageType.SESSION_INVITATION
    fromDevice: bytes
    key: bytes
    address: bytes
    port: int
    serverSocket: bool

    def payload(self) -> bytes:
        return (
            _xdrOpaque(self.fromDevice, 32)
            + _xdrOpaque(self.key, 32)
            + _xdrOpaque(self.address, 32)
            + struct.pack(">II", self.port, int(self.serverSocket))
        )

    def sessionAddress(self, fallbackHost: str) -> tuple[str, int]:
        """
        Where to connect to join this session; C{fallbackHost} is the
        address the protocol-mode connection reached.
        """
        if self.address:
            ip = ipaddress.ip_address(self.address)
            if not ip.is_unspecified:
                return str(ip), self.port
        return fallbackHost, self.port


Message = (
    Ping
    | Pong
    | JoinRelayRequest
    | RelayFull
    | JoinSessionRequest
    | Response
    | ConnectRequest
    | SessionInvitation
)


def encodeMessage(message: Message) -> bytes:
    """
    The header and payload of C{message}, ready for the wire.
    """
    payload = message.payload()
    return _HEADER.pack(MAGIC, int(message.type), len(payload)) + payload


def decodeMessage(messageType: int, payload: bytes) -> Message:
    """
    The message of type C{messageType} carried by C{payload}.

    @raise RelayProtocolError: for unknown types or malformed payloads.
    """
    reader = _XDRReader(payload)
    message: Message
    if messageType == MessageType.PING:
        message = Ping()
    elif messageType == MessageType.PONG:
        message = Pong()
    elif messageType == MessageType.JOIN_RELAY_REQUEST:
        message = JoinRelayRequest()
    elif messageType == MessageType.RELAY_FULL:
        message = RelayFull()
    elif messageType == MessageType.JOIN_SESSION_REQUEST:
        message = JoinSessionRequest(reader.opaque(32))
    elif messageType == MessageType.RESPONSE:
        message = Response(reader.int32(), reader.string())
    elif messageType == MessageType.CONNECT_REQUEST:
        message = ConnectRequest(reader.opaque(32))
    elif messageType == MessageType.SESSION_INVITATION:
        message = SessionInvitation(
            fromDevice=reader.opaque(32),
            key=reader.opaque(32),
            address=reader.opaque(32),
            port=reader.uint32(),
            serverSocket=reader.boolean(),
        )
    else:
        raise RelayProtocolError(f"unknown message type {messageType}")
    reader.end()
    return message


def _receiveExactly(sock: socket.socket, count: int) -> bytes:
    chunks = []
    remaining = count
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError(
                f"connection closed with {remaining} of {count} bytes unread"
            )
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def readMessage(sock: socket.socket) -> Message:
    """
    Read one whole message from C{sock}, honouring its timeout.

    @raise RelayProtocolError: on a bad magic or an absurd length.
    @raise ConnectionError: if the connection ends mid-message.
    """
    magic, messageType, length = _HEADER.unpack(_receiveExactly(sock, _HEADER.size))
    if magic != MAGIC:
        raise RelayProtocolError(f"bad magic {magic:#010x}")
    if not 0 <= length <= _MAX_PAYLOAD:
        raise RelayProtocolError(f"message length {length} is out of bounds")
    return decodeMessage(messageType, _receiveExactly(sock, length))


class RelayProtocolConnection:
    """
    A protocol-mode connection to a relay, over TLS with a client
    certificate.

    @ivar tls: the TLS socket.
    @ivar relayID: the device ID of the relay's certificate.
    @ivar negotiatedProtocol: the ALPN protocol the relay selected.
    @ivar peerHost: the IP address this connection reached, which is where
        sessions with an empty address are joined.
    """

    def __init__(
        self, tls: ssl.SSLSocket, relayID: str, negotiatedProtocol: str | None
    ) -> None:
        self.tls = tls
        self.relayID = relayID
        self.negotiatedProtocol = negotiatedProtocol
        self.peerHost = str(tls.getpeername()[0])

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        identity: Identity,
        serverName: str | None = None,
        relayID: str | None = None,
        timeout: float = 10.0,
    ) -> RelayProtocolConnection:
        """
        Connect to the relay at C{host}:C{port} and finish the TLS
        handshake.

        @param serverName: the SNI to send; L{None} sends none, as Syncthing
            does when the relay URL has an IP address (and as older
            Syncthing releases always did).
        @param relayID: the relay's device ID, to pin its certificate.
        """
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            context = identity.clientContext(alpn=[ALPN])
            tls = context.wrap_socket(raw, server_hostname=serverName)
        except BaseException:
            raw.close()
            raise
        try:
            peerID = verifyPeer(tls, relayID)
        except BaseException:
            tls.close()
            raise
        return cls(tls, peerID, tls.selected_alpn_protocol())

    def send(self, message: Message) -> None:
        """
        Send one message.
        """
        self.tls.sendall(encodeMessage(message))

    def receive(self, timeout: float = 10.0) -> Message:
        """
        The next message other than a keep-alive; a L{Ping} from the relay is
        answered with a L{Pong} on the way, as the specification requires.
        """
        self.tls.settimeout(timeout)
        while True:
            message = readMessage(self.tls)
            if isinstance(message, Ping):
                self.send(Pong())
                continue
            return message

    def ping(self, timeout: float = 10.0) -> None:
        """
        Check the connection is alive: send L{Ping}, expect L{Pong}.
        """
        self.send(Ping())
        message = self.receive(timeout)
        if not isinstance(message, Pong):
            raise RelayProtocolError(f"expected Pong, got {message!r}")

    def join(self, timeout: float = 10.0) -> Response:
        """
        Join the relay (the permanent submode) and return its L{Response}
        (code 0 on success).
        """
        self.send(JoinRelayRequest())
        message = self.receive(timeout)
        if not isinstance(message, Response):
            raise RelayProtocolError(f"expected Response, got {message!r}")
        return message

    def requestSession(
        self, deviceID: bytes, timeout: float = 10.0
    ) -> SessionInvitation | Response:
        """
        Ask for a session with the joined device C{deviceID} (the temporary
        submode): a L{SessionInvitation}, or a L{Response} saying why not.
        """
        self.send(ConnectRequest(deviceID))
        message = self.receive(timeout)
        if not isinstance(message, SessionInvitation | Response):
            raise RelayProtocolError(f"unexpected answer {message!r}")
        return message

    def waitForInvitation(self, timeout: float = 10.0) -> SessionInvitation:
        """
        The next L{SessionInvitation} the relay sends to this joined client.
        """
        message = self.receive(timeout)
        if not isinstance(message, SessionInvitation):
            raise RelayProtocolError(f"expected SessionInvitation, got {message!r}")
        return message

    def close(self) -> None:
        """
        Close the connection.
        """
        self.tls.close()


def joinSession(
    invitation: SessionInvitation, fallbackHost: str, timeout: float = 10.0
) -> socket.socket:
    """
    Join the session of C{invitation} in session mode and return the plain
    socket, ready to carry the session's bytes.

    @param fallbackHost: the address the protocol-mode connection reached,
        used when the invitation has no address of its own.
    @raise RelayProtocolError: if the relay refuses.
    """
    address = invitation.sessionAddress(fallbackHost)
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.sendall(encodeMessage(JoinSessionRequest(invitation.key)))
        message = readMessage(sock)
        if not isinstance(message, Response):
            raise RelayProtocolError(f"expected Response, got {message!r}")
        if message.code != ResponseCode.SUCCESS:
            raise RelayProtocolError(
                f"relay refused the session: {message.code} {message.message!r}"
            )
    except BaseException:
        sock.close()
        raise
    return sock
