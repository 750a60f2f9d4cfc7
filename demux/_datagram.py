"""
The ClientHello of a datagram flow, whichever protocol carries it: the one
answer L{demux.DatagramPeek} gives for L{demux.parseClientHello}, so that
every TLS matcher works on QUIC and DTLS flows unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ._clienthello import ClientHello
from ._dtls import parseDTLSClientHello
from ._quic import (
    ClientInitial,
    InitialDatagram,
    NotClientInitial,
    isLongHeader,
    parseClientInitial,
)
from ._verdict import Verdict


def datagramClientHello(
    datagrams: tuple[bytes, ...],
    initial: Callable[[int], InitialDatagram | NotClientInitial] | None = None,
) -> ClientHello | Literal[Verdict.NEED_MORE, Verdict.NO_MATCH]:
    """
    The ClientHello that a flow's datagrams carry: in the CRYPTO frames of
    QUIC Initial packets if the first datagram starts with a QUIC long
    header, else in DTLS handshake records.

    @param initial: as for L{parseClientInitial}.

    @return: the hello; L{NEED_MORE} while a later datagram could complete
        it; L{NO_MATCH} if the flow is neither, or its hello is malformed.
    """
    if not datagrams:
        return Verdict.NEED_MORE
    if isLongHeader(datagrams[0]):
        found = parseClientInitial(datagrams, initial)
        if isinstance(found, ClientInitial):
            return found.clientHello
        if found is Verdict.NEED_MORE:
            return Verdict.NEED_MORE
        return Verdict.NO_MATCH
    return parseDTLSClientHello(datagrams)
