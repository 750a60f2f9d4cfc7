"""
A DTLS client's ClientHello (DTLS 1.2, RFC 6347, and DTLS 1.3, RFC 9147),
put back together from the handshake fragments of a flow's datagrams and
parsed by the one ClientHello parser (L{demux._clienthello}).

A DTLS record has a 13-byte header (content type 22 for a handshake,
version C{0xfeff} or C{0xfefd}, a 2-byte epoch, which is 0 before any key
exchange, a 6-byte sequence number and a 2-byte length); each handshake
message in it a 12-byte one (type, 3-byte length, 2-byte message_seq,
3-byte fragment_offset, 3-byte fragment_length), so that a message larger
than the path MTU can be cut into fragments sent in several records and
datagrams, which may arrive in any order.  The ClientHello body is TLS's
with a C{cookie} after the session id.

Like the QUIC reader, nothing here raises: a first datagram that is not a
DTLS ClientHello is L{NO_MATCH}; fragments still missing are L{NEED_MORE}.
"""

from __future__ import annotations

from typing import Final, Literal

from attrs import frozen

from ._clienthello import (
    MAX_DTLS_CLIENT_HELLO_LENGTH,
    ClientHello,
    parseHandshakeMessage,
)
from ._quic import assembleStream
from ._verdict import Verdict

_HANDSHAKE: Final = 22
_CLIENT_HELLO: Final = 1
RECORD_VERSIONS: Final = frozenset({0xFEFF, 0xFEFD})
"""
The record versions a ClientHello may come in: DTLS 1.0's, which many
clients use for their first hello whatever they offer, and DTLS 1.2's,
which DTLS 1.3 keeps as its legacy record version.
"""
MAX_RECORD_LENGTH: Final = 2**14 + 2048
"""The longest DTLSCiphertext fragment; a plaintext one is shorter still."""

_RECORD_HEADER: Final = 13
_HANDSHAKE_HEADER: Final = 12


@frozen
class HelloFragments:
    """
    The ClientHello fragments that one datagram carries.

    @ivar messageSeq: the handshake message_seq (0 for a first hello, 1
        for one answering a HelloVerifyRequest).
    @ivar length: the whole hello's body length, as each fragment says.
    @ivar fragments: C{(fragment_offset, bytes)} for each fragment.
    @ivar records: the length of each record that carried a fragment.
    """

    messageSeq: int
    length: int
    fragments: tuple[tuple[int, bytes], ...]
    records: tuple[int, ...]


def parseHelloDatagram(
    datagram: bytes,
) -> HelloFragments | Literal[Verdict.NO_MATCH]:
    """
    The ClientHello fragments of one datagram.

    It must start with an epoch 0 handshake record whose first message is a
    ClientHello fragment, and every record in it must be whole and every
    handshake message in a handshake record a fragment of that same hello
    (a client's first flight has nothing else); records of other types
    after them are skipped.

    @return: the fragments, or L{NO_MATCH}.
    """
    fragments: list[tuple[int, bytes]] = []
    records: list[int] = []
    seqAndLength: tuple[int, int] | None = None
    pos = 0
    n = len(datagram)
    while pos < n:
        if pos + _RECORD_HEADER > n:
            return Verdict.NO_MATCH
        contentType = datagram[pos]
        version = int.from_bytes(datagram[pos + 1 : pos + 3], "big")
        epoch = int.from_bytes(datagram[pos + 3 : pos + 5], "big")
        length = int.from_bytes(datagram[pos + 11 : pos + 13], "big")
        body = pos + _RECORD_HEADER
        end = body + length
        if end > n or length == 0 or length > MAX_RECORD_LENGTH:
            return Verdict.NO_MATCH
        if contentType != _HANDSHAKE or epoch != 0:
            if not records:
                return Verdict.NO_MATCH
            pos = end
            continue
        if version not in RECORD_VERSIONS:
            return Verdict.NO_MATCH
        records.append(length)
        at = body
        while at < end:
            if at + _HANDSHAKE_HEADER > end:
                return Verdict.NO_MATCH
            header = datagram[at : at + _HANDSHAKE_HEADER]
            messageLength = int.from_bytes(header[1:4], "big")
            messageSeq = int.from_bytes(header[4:6], "big")
            offset = int.from_bytes(header[6:9], "big")
            fragmentLength = int.from_bytes(header[9:12], "big")
            fragmentAt = at + _HANDSHAKE_HEADER
            if (
                header[0] != _CLIENT_HELLO
                or messageLength > MAX_DTLS_CLIENT_HELLO_LENGTH
                or offset + fragmentLength > messageLength
                or fragmentAt + fragmentLength > end
            ):
                return Verdict.NO_MATCH
            if seqAndLength is None:
                seqAndLength = (messageSeq, messageLength)
            elif seqAndLength != (messageSeq, messageLength):
                return Verdict.NO_MATCH
            fragments.append(
                (offset, datagram[fragmentAt : fragmentAt + fragmentLength])
            )
            at = fragmentAt + fragmentLength
        pos = end
    if seqAndLength is None:
        return Verdict.NO_MATCH
    return HelloFragments(
        messageSeq=seqAndLength[0],
        length=seqAndLength[1],
        fragments=tuple(fragments),
        records=tuple(records),
    )


def parseDTLSClientHello(
    datagrams: tuple[bytes, ...],
) -> ClientHello | Literal[Verdict.NEED_MORE, Verdict.NO_MATCH]:
    """
    The ClientHello of a flow whose first datagram is a DTLS ClientHello's.

    Later datagrams add their fragments of the same hello (same message_seq
    and length) and are otherwise ignored; the fragments are reassembled in
    any order, and the hello is parsed as soon as the bytes contiguous from
    its start decide it.

    @return: the hello (its C{carrier} C{"dtls"}, its C{cookie} the DTLS
        cookie); L{NEED_MORE} while fragments are missing; L{NO_MATCH} if
        the first datagram is not a DTLS ClientHello, fragments contradict
        each other, or the hello is malformed.
    """
    if not datagrams:
        return Verdict.NEED_MORE
    first = parseHelloDatagram(datagrams[0])
    if first is Verdict.NO_MATCH:
        return Verdict.NO_MATCH
    pieces = list(first.fragments)
    records = list(first.records)
    for datagram in datagrams[1:]:
        more = parseHelloDatagram(datagram)
        if (
            isinstance(more, HelloFragments)
            and more.messageSeq == first.messageSeq
            and more.length == first.length
        ):
            pieces.extend(more.fragments)
            records.extend(more.records)
    body = assembleStream(pieces, first.length)
    if body is None:
        return Verdict.NO_MATCH
    message = bytes([_CLIENT_HELLO]) + first.length.to_bytes(3, "big") + body
    return parseHandshakeMessage(message, "dtls", tuple(records))
