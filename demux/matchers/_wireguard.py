"""
The C{wireguard} matcher: a WireGuard handshake initiation, the first
message of a WireGuard peer.

The initiation is exactly 148 bytes: the message type 1 and three zero
bytes, a 4-byte sender index, the 32-byte ephemeral public key, the
encrypted static key (48 bytes) and timestamp (28 bytes), then C{mac1} and
C{mac2} (16 bytes each).  The rest being random or encrypted, only the
first four bytes and the length say it is WireGuard; given the responder's
public key, the matcher also checks C{mac1}, a keyed BLAKE2s of the message
under a hash of that key, which only a peer that knows the key computes.
That both makes the match certain and routes peers of several servers on
one port by the server they are for.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._interfaces import (
    DATAGRAM_ONLY,
    MATCH,
    NEED_MORE,
    NO_MATCH,
    IMatcher,
    IMatcherFactory,
    Verdict,
)
from .._peek import DatagramPeek, Peek
from ._options import optionTable, stringList

INITIATION_LENGTH: Final = 148
_INITIATION_TYPE: Final = b"\x01\x00\x00\x00"
_MAC1_AT: Final = 116
_LABEL_MAC1: Final = b"mac1----"


def mac1Key(publicKey: bytes) -> bytes:
    """
    The key of C{mac1} for messages to the peer of C{publicKey}:
    C{HASH(LABEL_MAC1 || publicKey)}, with BLAKE2s-256.
    """
    return hashlib.blake2s(_LABEL_MAC1 + publicKey).digest()


def mac1(message: bytes, key: bytes) -> bytes:
    """
    The C{mac1} of a message's first 116 bytes under C{key}.
    """
    return hashlib.blake2s(message[:_MAC1_AT], key=key, digest_size=16).digest()


def isInitiation(datagram: bytes) -> bool:
    """
    Whether C{datagram} has the shape of a handshake initiation.
    """
    return len(datagram) == INITIATION_LENGTH and datagram[:4] == _INITIATION_TYPE


@implementer(IMatcher)
@frozen
class WireGuardMatcher:
    """
    Matches a flow whose first datagram is a WireGuard handshake initiation,
    for one of C{mac1Keys}' peers if given.

    @ivar mac1Keys: the L{mac1Key} of each accepted responder public key,
        or C{()} for any initiation.
    """

    mac1Keys: tuple[bytes, ...] = ()

    def match(self, peek: Peek) -> Verdict:
        if not isinstance(peek, DatagramPeek):
            return NO_MATCH
        if not peek.datagrams:
            return NEED_MORE
        datagram = peek.data
        if not isInitiation(datagram):
            return NO_MATCH
        if self.mac1Keys:
            got = datagram[_MAC1_AT : _MAC1_AT + 16]
            if not any(hmac.compare_digest(mac1(datagram, k), got) for k in self.mac1Keys):
                return NO_MATCH
        return MATCH

    def describe(self, peek: Peek) -> str:
        index = int.from_bytes(peek.data[4:8], "little")
        return f"wireguard sender={index:08x}"


def _publicKey(text: str) -> bytes:
    try:
        key = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        key = b""
    if len(key) != 32:
        raise MatcherConfigError(
            f"wireguard.public_key {text!r} is not a WireGuard public key "
            "(44 characters of base64, as 'wg pubkey' prints)"
        )
    return key


@provider(IMatcherFactory)
class wireguardFactory:
    """
    C{match.wireguard = {}} for any handshake initiation, or C{{public_key =
    "..."}} (one or a list, base64 as C{wg} prints them) for initiations to
    those servers only, checked by their C{mac1}.
    """

    name = "wireguard"
    transports = DATAGRAM_ONLY
    summary = "Matches a WireGuard handshake initiation, optionally by server key."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("public_key",))
        if "public_key" not in table:
            return WireGuardMatcher()
        keys = stringList(table["public_key"], "wireguard.public_key")
        return WireGuardMatcher(tuple(mac1Key(_publicKey(k)) for k in keys))
