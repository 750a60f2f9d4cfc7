"""
QUIC's client Initial packets, read as far as routing needs: RFC 9000 and
RFC 9001 (QUIC version 1) and RFC 9369 (QUIC version 2).

A client's first flight is one or more Initial packets whose payload is
encrypted with keys anyone can derive from the packet's Destination
Connection ID, so that a middlebox can read the TLS ClientHello they carry
in CRYPTO frames.  L{parseInitialDatagram} decrypts the Initial packets of
one datagram; L{parseClientInitial} puts the CRYPTO stream of a flow's
datagrams back together, in any order and with gaps, and hands the
ClientHello at its offset 0 to the one ClientHello parser
(L{demux._clienthello}).

Nothing here raises for what a client sends: every way a datagram can fail
to be a client Initial is a L{NotClientInitial} with a reason, and a flow
whose ClientHello is still incomplete is L{NEED_MORE}.  The header readers
(L{readLongHeader}, L{readShortHeaderDestination}) read connection IDs
without decrypting anything, for a flow table that follows a connection
across addresses.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from struct import pack
from typing import Final, Literal

from attrs import frozen
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._clienthello import MAX_CLIENT_HELLO_LENGTH, ClientHello, parseHandshakeMessage
from ._verdict import Verdict

QUIC_V1: Final = 0x00000001
"""QUIC version 1 (RFC 9000)."""

QUIC_V2: Final = 0x6B3343CF
"""QUIC version 2 (RFC 9369)."""

VERSION_NAMES: Final = {QUIC_V1: "v1", QUIC_V2: "v2"}
"""The versions whose Initial packets this module can decrypt, by name."""

MIN_INITIAL_DATAGRAM: Final = 1200
"""
The smallest datagram that may carry a client's Initial packet (RFC 9000
section 14.1): a server must drop a smaller one, so it is not routed.
"""

MAX_CONNECTION_ID_LENGTH: Final = 20
"""The longest connection ID in QUIC versions 1 and 2."""


@frozen
class _VersionParameters:
    salt: bytes
    keyLabel: bytes
    ivLabel: bytes
    hpLabel: bytes
    types: dict[int, str]


_PARAMETERS: Final = {
    QUIC_V1: _VersionParameters(
        salt=bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
        keyLabel=b"quic key",
        ivLabel=b"quic iv",
        hpLabel=b"quic hp",
        types={0: "initial", 1: "0-rtt", 2: "handshake", 3: "retry"},
    ),
    QUIC_V2: _VersionParameters(
        salt=bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
        keyLabel=b"quicv2 key",
        ivLabel=b"quicv2 iv",
        hpLabel=b"quicv2 hp",
        types={1: "initial", 2: "0-rtt", 3: "handshake", 0: "retry"},
    ),
}

# Why a datagram is not a client Initial (NotClientInitial.reason).
NOT_QUIC: Final = "not-quic"
"""Not a QUIC long-header packet at all."""
NOT_INITIAL: Final = "not-initial"
"""A long-header packet of a known version, but not an Initial (or a
version negotiation packet, which only servers send)."""
UNKNOWN_VERSION: Final = "unknown-version"
"""A long-header packet of a version this module cannot decrypt; the
version and connection IDs are in the result's C{header}."""
SHORT_DATAGRAM: Final = "short-datagram"
"""An Initial in a datagram shorter than L{MIN_INITIAL_DATAGRAM}."""
TRUNCATED: Final = "truncated"
"""The datagram ends before the packet does."""
UNDECRYPTABLE: Final = "undecryptable"
"""The payload does not decrypt with the keys derived from its Destination
Connection ID: a client's Initial always does, so this is not one."""
MALFORMED: Final = "malformed"
"""It decrypts, but its frames or its ClientHello are not what a client
may send."""


@frozen
class LongHeader:
    """
    The parts of a QUIC long header that every version shares (RFC 8999),
    read without decrypting anything.

    @ivar version: the 32-bit version (0 for version negotiation).
    @ivar destinationConnectionId: the Destination Connection ID.
    @ivar sourceConnectionId: the Source Connection ID.
    @ivar typeBits: the two packet type bits of the first byte, whose
        meaning depends on the version (see L{packetType}).
    @ivar length: the bytes the header takes, up to the end of the Source
        Connection ID.
    """

    version: int
    destinationConnectionId: bytes
    sourceConnectionId: bytes
    typeBits: int
    length: int

    @property
    def packetType(self) -> str | None:
        """
        C{"initial"}, C{"0-rtt"}, C{"handshake"} or C{"retry"} for QUIC
        versions 1 and 2 (which number them differently), L{None} for other
        versions.
        """
        parameters = _PARAMETERS.get(self.version)
        if parameters is None:
            return None
        return parameters.types[self.typeBits]


def isLongHeader(datagram: bytes) -> bool:
    """
    Whether C{datagram} starts with a QUIC long header (its first bit set);
    a short-header packet has it clear.
    """
    return bool(datagram) and bool(datagram[0] & 0x80)


def readLongHeader(datagram: bytes) -> LongHeader | None:
    """
    The long header at the start of C{datagram}, or L{None} if it has none
    (the first bit is clear, or the datagram ends inside the header, or a
    version 1 or 2 header has a connection ID longer than 20 bytes).
    """
    if len(datagram) < 7 or not datagram[0] & 0x80:
        return None
    version = int.from_bytes(datagram[1:5], "big")
    dcidLength = datagram[5]
    scidAt = 6 + dcidLength + 1
    if len(datagram) < scidAt:
        return None
    scidLength = datagram[scidAt - 1]
    end = scidAt + scidLength
    if len(datagram) < end:
        return None
    if version in _PARAMETERS and max(dcidLength, scidLength) > MAX_CONNECTION_ID_LENGTH:
        return None
    return LongHeader(
        version=version,
        destinationConnectionId=datagram[6 : 6 + dcidLength],
        sourceConnectionId=datagram[scidAt:end],
        typeBits=(datagram[0] >> 4) & 0x03,
        length=end,
    )


def readShortHeaderDestination(datagram: bytes, length: int) -> bytes | None:
    """
    The Destination Connection ID of the short-header packet at the start of
    C{datagram}, whose length the receiver must know (it chose it), or
    L{None} if C{datagram} is not a short-header packet that long.
    """
    if not datagram or datagram[0] & 0x80 or len(datagram) < 1 + length:
        return None
    return datagram[1 : 1 + length]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """
    The variable-length integer (RFC 9000 section 16) at C{pos}, and the
    position after it.

    @raise IndexError: if C{data} ends inside it.
    """
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        raise IndexError(pos)
    value = first & 0x3F
    for byte in data[pos + 1 : pos + size]:
        value = (value << 8) | byte
    return value, pos + size


def _expandLabel(secret: bytes, label: bytes, length: int) -> bytes:
    """
    TLS 1.3's HKDF-Expand-Label (RFC 8446 section 7.1) with SHA-256 and an
    empty context; C{length} is at most 32, so one HMAC block suffices.
    """
    full = b"tls13 " + label
    info = pack("!HB", length, len(full)) + full + b"\x00"
    return hmac.digest(secret, info + b"\x01", hashlib.sha256)[:length]


@frozen
class InitialKeys:
    """
    The keys that protect a client's Initial packets (RFC 9001 section 5.2).

    @ivar key: the AES-128-GCM key.
    @ivar iv: the 12-byte IV the packet number is mixed into.
    @ivar hp: the AES-128 header protection key.
    """

    key: bytes
    iv: bytes
    hp: bytes


def clientInitialKeys(version: int, destinationConnectionId: bytes) -> InitialKeys:
    """
    The client Initial keys of QUIC C{version} (L{QUIC_V1} or L{QUIC_V2})
    for a Destination Connection ID.

    @raise KeyError: for another version.
    """
    parameters = _PARAMETERS[version]
    initialSecret = hmac.digest(
        parameters.salt, destinationConnectionId, hashlib.sha256
    )
    clientSecret = _expandLabel(initialSecret, b"client in", 32)
    return InitialKeys(
        key=_expandLabel(clientSecret, parameters.keyLabel, 16),
        iv=_expandLabel(clientSecret, parameters.ivLabel, 12),
        hp=_expandLabel(clientSecret, parameters.hpLabel, 16),
    )


def headerProtectionMask(hp: bytes, sample: bytes) -> bytes:
    """
    AES-ECB of the 16-byte C{sample} under the header protection key.
    """
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    return encryptor.update(sample) + encryptor.finalize()


@frozen
class NotClientInitial:
    """
    Why a datagram, or a flow's first datagram, is not a client's Initial.

    @ivar reason: one of L{NOT_QUIC}, L{NOT_INITIAL}, L{UNKNOWN_VERSION},
        L{SHORT_DATAGRAM}, L{TRUNCATED}, L{UNDECRYPTABLE}, L{MALFORMED}.
    @ivar header: the long header, when there is one, so that a flow table
        can apply its rule for unknown versions (RFC 9000 section 6: answer
        with a version negotiation, or pass it on) by its version and
        connection IDs.
    """

    reason: str
    header: LongHeader | None = None

    @property
    def version(self) -> int | None:
        """
        The long header's version, or L{None} without one.
        """
        return None if self.header is None else self.header.version


@frozen
class InitialDatagram:
    """
    What the client Initial packets of one datagram carry.

    @ivar version: their QUIC version.
    @ivar destinationConnectionId: the Destination Connection ID their keys
        derive from.
    @ivar sourceConnectionId: the client's Source Connection ID.
    @ivar token: the first packet's token (from a Retry or NEW_TOKEN
        frame; empty on a first contact).
    @ivar crypto: the CRYPTO frames' C{(offset, data)}, in the order sent.
    @ivar packets: how many Initial packets the datagram carried.
    """

    version: int
    destinationConnectionId: bytes
    sourceConnectionId: bytes
    token: bytes
    crypto: tuple[tuple[int, bytes], ...]
    packets: int


@frozen
class ClientInitial:
    """
    A client's complete Initial flight: the connection it opens and its
    ClientHello.

    @ivar version: the QUIC version.
    @ivar destinationConnectionId: the Destination Connection ID.
    @ivar sourceConnectionId: the client's Source Connection ID.
    @ivar token: the token of the first datagram's Initial.
    @ivar clientHello: the ClientHello, parsed by the shared parser (its
        C{carrier} is C{"quic"}).
    @ivar datagrams: how many datagrams carried CRYPTO data of it.
    """

    version: int
    destinationConnectionId: bytes
    sourceConnectionId: bytes
    token: bytes
    clientHello: ClientHello
    datagrams: int


class _Fail(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


# Frame types a client's Initial packet may carry (RFC 9000 section 12.4,
# table 3): PADDING, PING, ACK (with and without ECN counts), CRYPTO and
# the transport CONNECTION_CLOSE.  Anything else is a protocol violation.
_PADDING: Final = 0x00
_PING: Final = 0x01
_ACK: Final = 0x02
_ACK_ECN: Final = 0x03
_CRYPTO: Final = 0x06
_CONNECTION_CLOSE: Final = 0x1C

_MAX_CRYPTO_END: Final = 4 + MAX_CLIENT_HELLO_LENGTH
"""CRYPTO bytes past the largest ClientHello can never be part of it."""


def _frames(payload: bytes) -> list[tuple[int, bytes]]:
    """
    The CRYPTO frames of a decrypted Initial payload, having checked that
    every frame is one a client's Initial may carry and is whole.

    @raise _Fail: L{MALFORMED} otherwise.
    """
    crypto = []
    pos = 0
    n = len(payload)
    try:
        while pos < n:
            frameType = payload[pos]
            pos += 1
            if frameType == _PADDING or frameType == _PING:
                continue
            if frameType == _CRYPTO:
                offset, pos = _varint(payload, pos)
                length, pos = _varint(payload, pos)
                if pos + length > n or offset + length >= 2**62:
                    raise _Fail(MALFORMED)
                crypto.append((offset, payload[pos : pos + length]))
                pos += length
            elif frameType in (_ACK, _ACK_ECN):
                _, pos = _varint(payload, pos)  # largest acknowledged
                _, pos = _varint(payload, pos)  # ack delay
                ranges, pos = _varint(payload, pos)
                _, pos = _varint(payload, pos)  # first range
                for _ in range(2 * ranges + (3 if frameType == _ACK_ECN else 0)):
                    if pos >= n:
                        raise _Fail(MALFORMED)
                    _, pos = _varint(payload, pos)
            elif frameType == _CONNECTION_CLOSE:
                _, pos = _varint(payload, pos)  # error code
                _, pos = _varint(payload, pos)  # frame type
                length, pos = _varint(payload, pos)
                pos += length
                if pos > n:
                    raise _Fail(MALFORMED)
            else:
                raise _Fail(MALFORMED)
    except IndexError:
        raise _Fail(MALFORMED) from None
    return crypto


def _decrypt(
    datagram: bytes, at: int, header: LongHeader, keys: InitialKeys
) -> tuple[bytes, int]:
    """
    Remove the protection of the Initial packet at C{datagram[at:]}.

    @return: its decrypted payload and the position after the packet.
    @raise _Fail: L{TRUNCATED}, L{UNDECRYPTABLE} or L{MALFORMED}.
    """
    try:
        pos = at + header.length
        tokenLength, pos = _varint(datagram, pos)
        pos += tokenLength
        length, pnAt = _varint(datagram, pos)
    except IndexError:
        raise _Fail(TRUNCATED) from None
    end = pnAt + length
    if end > len(datagram):
        raise _Fail(TRUNCATED)
    if length < 4 + 16:
        # Too short for the header protection sample: no client sends it.
        raise _Fail(MALFORMED)
    mask = headerProtectionMask(keys.hp, datagram[pnAt + 4 : pnAt + 20])
    first = datagram[at] ^ (mask[0] & 0x0F)
    pnLength = (first & 0x03) + 1
    packetNumber = bytes(
        b ^ m for b, m in zip(datagram[pnAt : pnAt + pnLength], mask[1:], strict=False)
    )
    aad = bytes([first]) + datagram[at + 1 : pnAt] + packetNumber
    nonce = bytes(
        i ^ p for i, p in zip(keys.iv, packetNumber.rjust(12, b"\x00"), strict=True)
    )
    try:
        payload = AESGCM(keys.key).decrypt(
            nonce, datagram[pnAt + pnLength : end], aad
        )
    except InvalidTag:
        raise _Fail(UNDECRYPTABLE) from None
    if first & 0x0C or not payload:
        # Reserved bits set, or no frame at all: RFC 9000 sections 17.2
        # and 12.4 make both a protocol violation.
        raise _Fail(MALFORMED)
    return payload, end


def _skipLongPacket(datagram: bytes, at: int, header: LongHeader) -> int:
    """
    The position after the 0-RTT or Handshake packet at C{at} (a Length
    field follows their header).

    @raise IndexError: if the datagram ends inside it.
    """
    length, pos = _varint(datagram, at + header.length)
    if pos + length > len(datagram):
        raise IndexError(pos)
    return pos + length


def parseInitialDatagram(datagram: bytes) -> InitialDatagram | NotClientInitial:
    """
    Decrypt the client Initial packets of one datagram.

    The datagram must begin with an Initial packet of QUIC version 1 or 2
    and be at least L{MIN_INITIAL_DATAGRAM} long; packets coalesced after it
    (more Initials, 0-RTT, Handshake) are walked by their lengths, and
    those of another version or connection ID, a short-header packet or
    padding end the walk (RFC 9000 section 12.2).  The first Initial decides:
    if it does not decrypt with the keys its Destination Connection ID
    gives, the datagram is not a client's; a later one that does not is
    ignored.
    """
    header = readLongHeader(datagram)
    if header is None:
        return NotClientInitial(NOT_QUIC)
    if header.version == 0:
        return NotClientInitial(NOT_INITIAL, header)
    if header.version not in _PARAMETERS:
        return NotClientInitial(UNKNOWN_VERSION, header)
    if header.packetType != "initial":
        return NotClientInitial(NOT_INITIAL, header)
    if len(datagram) < MIN_INITIAL_DATAGRAM:
        return NotClientInitial(SHORT_DATAGRAM, header)
    keys = clientInitialKeys(header.version, header.destinationConnectionId)
    token = b""
    crypto: list[tuple[int, bytes]] = []
    packets = 0
    at = 0
    while at < len(datagram):
        packet = header if at == 0 else readLongHeader(datagram[at:])
        if (
            packet is None
            or packet.version != header.version
            or packet.destinationConnectionId != header.destinationConnectionId
        ):
            break
        kind = packet.packetType
        try:
            if kind == "initial":
                try:
                    payload, at = _decrypt(datagram, at, packet, keys)
                    frames = _frames(payload)
                except _Fail as e:
                    if packets == 0:
                        return NotClientInitial(e.reason, header)
                    break
                if packets == 0:
                    tokenLength, tokenAt = _varint(datagram, header.length)
                    token = datagram[tokenAt : tokenAt + tokenLength]
                packets += 1
                crypto.extend(frames)
            elif kind in ("0-rtt", "handshake"):
                at = _skipLongPacket(datagram, at, packet)
            else:
                break
        except IndexError:
            break
    return InitialDatagram(
        version=header.version,
        destinationConnectionId=header.destinationConnectionId,
        sourceConnectionId=header.sourceConnectionId,
        token=token,
        crypto=tuple(crypto),
        packets=packets,
    )


def assembleStream(
    pieces: list[tuple[int, bytes]], limit: int = _MAX_CRYPTO_END
) -> bytes | None:
    """
    The bytes of a stream that are contiguous from offset 0, from pieces
    C{(offset, data)} in any order, overlapping or not, up to C{limit}: the
    CRYPTO stream of QUIC, or a DTLS handshake message from its fragments.

    @return: those bytes, or L{None} if two pieces give different bytes for
        one offset (RFC 9000 section 19.6 lets a receiver call that a
        protocol violation, and taking either would make the answer depend
        on arrival order).
    """
    end = min(max((o + len(d) for o, d in pieces), default=0), limit)
    stream = bytearray(end)
    filled = bytearray(end)
    for offset, data in pieces:
        if offset >= end:
            continue
        data = data[: end - offset]
        stop = offset + len(data)
        if 1 in filled[offset:stop]:
            for i, byte in enumerate(data, offset):
                if filled[i] and stream[i] != byte:
                    return None
        stream[offset:stop] = data
        filled[offset:stop] = b"\x01" * len(data)
    contiguous = filled.find(0)
    return bytes(stream[: end if contiguous < 0 else contiguous])


def parseClientInitial(
    datagrams: tuple[bytes, ...],
    initial: Callable[[int], InitialDatagram | NotClientInitial] | None = None,
) -> ClientInitial | NotClientInitial | Literal[Verdict.NEED_MORE]:
    """
    The ClientHello of a flow that starts with a client's Initial.

    The first datagram decides whether the flow is QUIC (see
    L{parseInitialDatagram}); every later datagram adds the CRYPTO data of
    its Initial packets of the same version and Destination Connection ID,
    and anything else in them is ignored.  The ClientHello is the handshake
    message at CRYPTO offset 0, complete once as many bytes as its header
    declares are contiguous.

    @param initial: L{parseInitialDatagram} of the datagram at an index, as
        a flow's peek keeps it, so that no datagram of a flow is decrypted
        twice however often its ClientHello is asked for.

    @return: a L{ClientInitial} once the ClientHello is complete; a
        L{NotClientInitial} as soon as the first datagram is not a client's
        Initial, or the CRYPTO stream contradicts itself or does not hold a
        ClientHello (reason L{MALFORMED}); L{NEED_MORE} while CRYPTO data is
        missing.
    """
    if not datagrams:
        return Verdict.NEED_MORE
    if initial is None:

        def initial(index: int) -> InitialDatagram | NotClientInitial:
            return parseInitialDatagram(datagrams[index])

    first = initial(0)
    if isinstance(first, NotClientInitial):
        return first
    pieces = list(first.crypto)
    carrying = 1 if first.crypto else 0
    for index in range(1, len(datagrams)):
        more = initial(index)
        if (
            isinstance(more, InitialDatagram)
            and more.version == first.version
            and more.destinationConnectionId == first.destinationConnectionId
        ):
            pieces.extend(more.crypto)
            carrying += 1 if more.crypto else 0
    stream = assembleStream(pieces)
    if stream is None:
        return NotClientInitial(MALFORMED, readLongHeader(datagrams[0]))
    hello = parseHandshakeMessage(stream, "quic")
    if hello is Verdict.NEED_MORE:
        return Verdict.NEED_MORE
    if not isinstance(hello, ClientHello):
        return NotClientInitial(MALFORMED, readLongHeader(datagrams[0]))
    return ClientInitial(
        version=first.version,
        destinationConnectionId=first.destinationConnectionId,
        sourceConnectionId=first.sourceConnectionId,
        token=first.token,
        clientHello=hello,
        datagrams=carrying,
    )
