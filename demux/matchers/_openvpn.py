"""
The C{openvpn} matcher: an OpenVPN client's first packet over TCP or UDP,
its control channel hard reset.

Over TCP every OpenVPN packet is preceded by its length in two bytes (big
endian).  A client's first packet is C{P_CONTROL_HARD_RESET_CLIENT_V2}
(opcode 7), C{_V3} (opcode 10, sent with C{--tls-crypt-v2}) or, from
OpenVPN 1.x, C{_V1} (opcode 1), always with key id 0: the first byte of the
packet is C{0x38}, C{0x50} or C{0x08}.  After it come an 8-byte session id
and then, depending on how the control channel is wrapped, one of:

  - no wrapping: an ACK array length (0: the client has nothing to
    acknowledge yet) and a 4-byte message packet id (0, the first);
  - C{--tls-auth}: an HMAC (16 to 64 bytes, by the digest chosen), a 4-byte
    replay packet id (1 for a fresh session), a 4-byte time, then the ACK
    array length 0 and message packet id 0 as above;
  - C{--tls-crypt}: the 4-byte packet id and 4-byte time, a 32-byte HMAC and
    at least the 5 bytes of the ACK array length and message id, encrypted;
  - C{--tls-crypt-v2} (opcode 10 only): as C{--tls-crypt}, followed by the
    client's wrapped key, whose own length is the packet's last two bytes.

Over UDP the packet is the same, one per datagram, without the length.

Two bytes of length and an opcode alone would match a good share of random
binary protocols, so the matcher waits for the whole packet (a hard reset is
short: at most L{MAX_LENGTH_V3} bytes) and checks that it fits one of those
shapes.  The first three bytes already refuse anything whose length or
opcode is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._interfaces import (
    BOTH_TRANSPORTS,
    MATCH,
    NEED_MORE,
    NO_MATCH,
    IMatcher,
    IMatcherFactory,
    Verdict,
)
from .._peek import DatagramPeek, Peek
from ._options import intList, optionTable

HARD_RESET_OPCODES = {1: 0x08, 2: 0x38, 3: 0x50}
"""
The first byte of a client hard reset with key id 0, by version.
"""

MIN_LENGTH = 14
"""
The shortest hard reset: opcode, session id, ACK array length, message id.
"""

MAX_LENGTH = 256
"""
The longest V1 or V2 hard reset accepted: its headers take at most 86 bytes
(with a 64-byte HMAC) and the payload carries at most a few bytes of early
negotiation.
"""

MIN_LENGTH_V3 = 1 + 8 + 8 + 32 + 5 + 2
MAX_LENGTH_V3 = 1400
"""
The longest V3 hard reset accepted: a V2 one plus the client's wrapped key,
which OpenVPN limits to 1024 bytes.
"""

HMAC_SIZES = (16, 20, 28, 32, 48, 64)
"""
The sizes of the HMACs C{--tls-auth} can use (MD5 to SHA-512).
"""

_TLS_CRYPT_HMAC = 32
_ZERO_ACK_AND_ID = b"\x00" * 5


@frozen
class HardReset:
    """
    A client hard reset, as far as its shape shows.

    @ivar version: 1, 2 or 3, from the opcode.
    @ivar wrap: how the control channel is protected: C{"none"},
        C{"tls-auth"}, C{"tls-crypt"} or C{"tls-crypt-v2"}.
    @ivar length: the packet's length, without the two length bytes.
    """

    version: int
    wrap: str
    length: int


EARLY_NEGOTIATION = 0x0F00
"""
The high half of the replay packet id that an OpenVPN 2.6 client sets in its
V3 hard reset to say it supports early negotiation (its first id is
C{0x0f000001}).
"""


def _replayIdFits(packet: bytes, offset: int) -> bool:
    """
    Whether the 4-byte replay packet id at C{offset} could be a fresh
    session's: a small number that is not 0 (the count starts at 1), maybe
    with the early negotiation flag in its high half.
    """
    packetId = int.from_bytes(packet[offset : offset + 4], "big")
    return packetId & 0xFFFF != 0 and packetId >> 16 in (0, EARLY_NEGOTIATION)


def _wrapOf(version: int, packet: bytes) -> str | None:
    """
    The wrapping that C{packet} (opcode onwards, complete) is shaped for, or
    L{None} if none fits.
    """
    if version == 3:
        wrapped = int.from_bytes(packet[-2:], "big")
        if (
            _replayIdFits(packet, 9)
            and 2 < wrapped <= len(packet) - (MIN_LENGTH_V3 - 2)
        ):
            return "tls-crypt-v2"
        return None
    if packet[9:14] == _ZERO_ACK_AND_ID:
        return "none"
    for size in HMAC_SIZES:
        ack = 9 + size + 8
        if (
            len(packet) >= ack + 5
            and _replayIdFits(packet, 9 + size)
            and packet[ack : ack + 5] == _ZERO_ACK_AND_ID
        ):
            return "tls-auth"
    if version == 2 and len(packet) >= 9 + 8 + _TLS_CRYPT_HMAC + 5:
        if _replayIdFits(packet, 9):
            return "tls-crypt"
    return None


def parseHardReset(data: bytes) -> HardReset | Verdict:
    """
    The client hard reset at the start of C{data}, a TCP stream.

    @return: a L{HardReset} once the whole packet is in; L{NEED_MORE} before
        it; L{NO_MATCH} as soon as the length or opcode is wrong, or once the
        whole packet fits no known shape.
    """
    if len(data) < 3:
        if len(data) == 2 and not (
            MIN_LENGTH <= int.from_bytes(data, "big") <= MAX_LENGTH_V3
        ):
            return NO_MATCH
        return NEED_MORE
    length = int.from_bytes(data[:2], "big")
    version = next(
        (v for v, opcode in HARD_RESET_OPCODES.items() if opcode == data[2]), None
    )
    if version is None:
        return NO_MATCH
    low, high = (
        (MIN_LENGTH_V3, MAX_LENGTH_V3) if version == 3 else (MIN_LENGTH, MAX_LENGTH)
    )
    if not low <= length <= high:
        return NO_MATCH
    if len(data) < 2 + length:
        return NEED_MORE
    wrap = _wrapOf(version, data[2 : 2 + length])
    if wrap is None:
        return NO_MATCH
    return HardReset(version, wrap, length)


def parseHardResetDatagram(datagram: bytes) -> HardReset | Verdict:
    """
    The client hard reset that C{datagram}, a UDP payload, is: the TCP
    form without its length, so L{NO_MATCH} unless it is the whole packet.
    """
    if len(datagram) > MAX_LENGTH_V3:
        return NO_MATCH
    found = parseHardReset(len(datagram).to_bytes(2, "big") + datagram)
    return NO_MATCH if found is NEED_MORE else found


@implementer(IMatcher)
@frozen
class OpenVPNMatcher:
    """
    Matches an OpenVPN client's hard reset over TCP, of one of C{versions}.

    It needs the whole first packet, at most C{2 + MAX_LENGTH_V3} bytes, and
    refuses other protocols from their first three bytes.  On a datagram
    flow it judges the first datagram, the packet without its length.

    @ivar versions: the accepted hard reset versions (1, 2, 3).
    """

    versions: tuple[int, ...] = (1, 2, 3)

    def match(self, peek: Peek) -> Verdict:
        if isinstance(peek, DatagramPeek):
            if not peek.datagrams:
                return NEED_MORE
            found = peek.parse(parseHardResetDatagram)
            if isinstance(found, HardReset) and found.version in self.versions:
                return MATCH
            return NO_MATCH
        data = peek.data
        if len(data) >= 3 and data[2] not in (
            HARD_RESET_OPCODES[v] for v in self.versions
        ):
            return NO_MATCH
        found = peek.parse(parseHardReset)
        if isinstance(found, HardReset):
            return MATCH
        return found

    def describe(self, peek: Peek) -> str:
        parser = (
            parseHardResetDatagram if isinstance(peek, DatagramPeek) else parseHardReset
        )
        found = peek.parse(parser)
        if isinstance(found, HardReset):
            return f"openvpn=v{found.version} wrap={found.wrap}"
        return "openvpn"


@provider(IMatcherFactory)
class openvpnFactory:
    """
    C{match.openvpn = {}} for any OpenVPN client over TCP or UDP, or
    C{{versions = [2, 3]}} for some hard reset versions only.
    """

    name = "openvpn"
    transports = BOTH_TRANSPORTS
    summary = (
        "Matches an OpenVPN client over TCP or UDP by its first packet (hard reset)."
    )

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("versions",))
        if "versions" not in table:
            return OpenVPNMatcher()
        return OpenVPNMatcher(
            intList(table["versions"], "versions", HARD_RESET_OPCODES)
        )
