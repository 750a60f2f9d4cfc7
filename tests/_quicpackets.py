"""
Builders of QUIC client Initial packets for tests, from the keys of
L{demux._quic}: they protect packets the way RFC 9001 section 5 says, so a
test can cut a ClientHello into CRYPTO frames, packets and datagrams at
will.  (The RFC test vectors and aioquic's packets check the keys
themselves.)
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from demux._quic import (
    MIN_INITIAL_DATAGRAM,
    QUIC_V1,
    QUIC_V2,
    clientInitialKeys,
    headerProtectionMask,
)

_INITIAL_TYPE_BITS = {QUIC_V1: 0, QUIC_V2: 1}
_ZERO_RTT_TYPE_BITS = {QUIC_V1: 1, QUIC_V2: 2}


def varint(value: int) -> bytes:
    """
    The shortest QUIC variable-length encoding of C{value}.
    """
    for size, prefix in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            encoded = bytearray(value.to_bytes(size, "big"))
            encoded[0] |= prefix
            return bytes(encoded)
    raise ValueError(value)


def cryptoFrame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def _longHeader(
    typeBits: int, version: int, dcid: bytes, scid: bytes, pnLength: int
) -> bytes:
    first = 0xC0 | (typeBits << 4) | (pnLength - 1)
    return (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
    )


def initialPacket(
    frames: bytes,
    dcid: bytes,
    scid: bytes = b"",
    version: int = QUIC_V1,
    packetNumber: int = 0,
    token: bytes = b"",
    pnLength: int = 2,
    keyDcid: bytes | None = None,
) -> bytes:
    """
    A protected client Initial packet carrying C{frames}, whose keys derive
    from C{keyDcid} (C{dcid} unless given, to make undecryptable ones).
    """
    keys = clientInitialKeys(version, dcid if keyDcid is None else keyDcid)
    if pnLength + len(frames) < 4:
        frames += bytes(4 - pnLength - len(frames))
    length = pnLength + len(frames) + 16
    pn = packetNumber.to_bytes(pnLength, "big")
    header = (
        _longHeader(_INITIAL_TYPE_BITS[version], version, dcid, scid, pnLength)
        + varint(len(token))
        + token
        + (0x4000 | length).to_bytes(2, "big")
    )
    nonce = bytes(
        a ^ b for a, b in zip(keys.iv, pn.rjust(12, b"\x00"), strict=True)
    )
    sealed = AESGCM(keys.key).encrypt(nonce, frames, header + pn)
    mask = headerProtectionMask(keys.hp, sealed[4 - pnLength : 20 - pnLength])
    protected = bytearray(header + pn + sealed)
    protected[0] ^= mask[0] & 0x0F
    pnAt = len(header)
    for i in range(pnLength):
        protected[pnAt + i] ^= mask[1 + i]
    return bytes(protected)


def packetOverhead(dcid: bytes, scid: bytes = b"", pnLength: int = 2) -> int:
    """
    The bytes an Initial packet adds to its frames (with no token).
    """
    return 7 + len(dcid) + len(scid) + 1 + 2 + pnLength + 16


def zeroRttPacket(
    dcid: bytes, scid: bytes = b"", version: int = QUIC_V1, size: int = 40
) -> bytes:
    """
    A 0-RTT packet: the header is real, the payload noise (no one here has
    the 0-RTT keys).
    """
    header = _longHeader(_ZERO_RTT_TYPE_BITS[version], version, dcid, scid, 2)
    return header + (0x4000 | size).to_bytes(2, "big") + bytes(i & 0xFF for i in range(size))


def initialDatagram(
    frameLists: list[bytes],
    dcid: bytes,
    version: int = QUIC_V1,
    firstPacketNumber: int = 0,
    trailer: bytes = b"",
) -> bytes:
    """
    One datagram of Initial packets, one per entry of C{frameLists}, the
    last padded with PADDING frames so that the datagram (C{trailer}, such
    as a 0-RTT packet, included) is L{MIN_INITIAL_DATAGRAM} bytes long.
    """
    packets = [
        initialPacket(frames, dcid, version=version, packetNumber=firstPacketNumber + i)
        for i, frames in enumerate(frameLists[:-1])
    ]
    used = sum(len(p) for p in packets) + len(trailer)
    last = frameLists[-1]
    room = MIN_INITIAL_DATAGRAM - used - packetOverhead(dcid) - len(last)
    last += bytes(max(room, 0))
    packets.append(
        initialPacket(
            last, dcid, version=version, packetNumber=firstPacketNumber + len(packets)
        )
    )
    return b"".join(packets) + trailer
