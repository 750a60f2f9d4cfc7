"""
The bytes a connection has sent so far, with the parses of them that every
matcher of that connection shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ._verdict import NEED_MORE

T = TypeVar("T")


class Peek:
    """
    An immutable view of a connection's first bytes.

    Parsers (the ClientHello parser, the HTTP head parser, or a plugin's own)
    are run through L{parse}, which runs each parser at most once per view; a
    parser's result other than L{demux.NEED_MORE} is final (more bytes cannot
    change a complete or malformed parse), so L{extended} carries it over and
    a connection's ClientHello is parsed once, however many matchers look at
    it and however many reads it took to arrive.
    """

    __slots__ = ("_data", "_parses")

    def __init__(self, data: bytes = b"") -> None:
        self._data = bytes(data)
        self._parses: dict[Callable[[bytes], object], object] = {}

    @property
    def data(self) -> bytes:
        """
        Every byte seen so far, in order.
        """
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    @property
    def dataComplete(self) -> bool:
        """
        Whether L{data} is all there will ever be: C{False} for a stream,
        whose next read may add bytes, and C{True} for a datagram view once
        its first datagram is in.  A matcher that reads a prefix of L{data}
        says L{demux.NO_MATCH}, not L{demux.NEED_MORE}, for a short one when
        this is true, since no later bytes can lengthen it.
        """
        return False

    def __repr__(self) -> str:
        return f"<Peek {len(self._data)} bytes {self._data[:16]!r}>"

    def parse(self, parser: Callable[[bytes], T]) -> T:
        """
        The result of C{parser(self.data)}, computed once for this view.

        C{parser} must be a pure function of the bytes that returns
        L{demux.NEED_MORE} while its input is an incomplete prefix.
        """
        try:
            return self._parses[parser]  # type: ignore[return-value]
        except KeyError:
            result = self._parses[parser] = parser(self._data)
            return result

    def extended(self, more: bytes) -> Peek:
        """
        A view of these bytes followed by C{more}, keeping the final parses.
        """
        new = Peek(self._data + more)
        new._parses = {p: r for p, r in self._parses.items() if r is not NEED_MORE}
        return new


class DatagramPeek(Peek):
    """
    An immutable view of a datagram flow's first datagrams, in arrival order.

    It is a L{Peek} so that every matcher written for streams can be given
    one: L{data} is the first datagram, which is complete (L{dataComplete}),
    so a matcher of a prefix decides on it at once.  L{parse} runs a stream
    parser on the first datagram, except L{demux.parseClientHello}, which is
    answered from the datagrams themselves: the CRYPTO data of QUIC Initial
    packets, or else DTLS handshake fragments, reassembled however the client
    cut and ordered them, so the C{tls} matcher works on QUIC and DTLS flows
    unchanged.  Parsers of the whole flow go through L{parseDatagrams}.
    """

    __slots__ = ("_datagrams", "_initials")

    def __init__(self, datagrams: Iterable[bytes] = ()) -> None:
        held = tuple(bytes(d) for d in datagrams)
        super().__init__(held[0] if held else b"")
        self._datagrams = held
        # Each datagram's QUIC Initial parse (a decryption), by index:
        # shared with the views that extend this one, whose datagrams start
        # with the same ones.
        self._initials: dict[int, object] = {}

    def _initial(self, index: int) -> object:
        """
        L{demux._quic.parseInitialDatagram} of datagram C{index}, made once
        per flow.
        """
        try:
            return self._initials[index]
        except KeyError:
            from ._quic import parseInitialDatagram

            result = self._initials[index] = parseInitialDatagram(
                self._datagrams[index]
            )
            return result

    @property
    def datagrams(self) -> tuple[bytes, ...]:
        """
        The flow's datagrams so far, in the order they arrived.
        """
        return self._datagrams

    def __len__(self) -> int:
        """
        The bytes of every datagram held, which is what a peek cap counts.
        """
        return sum(len(d) for d in self._datagrams)

    def __repr__(self) -> str:
        return (
            f"<DatagramPeek {len(self._datagrams)} datagrams "
            f"{self._data[:16]!r}>"
        )

    @property
    def dataComplete(self) -> bool:
        return bool(self._datagrams)

    def parse(self, parser: Callable[[bytes], T]) -> T:
        """
        The result of C{parser} on the first datagram, computed once for
        this view; for L{demux.parseClientHello}, the ClientHello that the
        flow's QUIC Initial packets or DTLS records carry.
        """
        from ._clienthello import parseClientHello
        from ._quic import parseInitialDatagram

        if parser is parseClientHello:
            from ._datagram import datagramClientHello

            return self.parseDatagrams(datagramClientHello)  # type: ignore[return-value]
        if parser is parseInitialDatagram and self._datagrams:
            return self._initial(0)  # type: ignore[return-value]
        return super().parse(parser)

    def parseDatagrams(self, parser: Callable[[tuple[bytes, ...]], T]) -> T:
        """
        The result of C{parser(self.datagrams)}, computed once for this view.

        C{parser} must be a pure function of the datagrams that returns
        L{demux.NEED_MORE} only while a later datagram could change its
        result; any other result is final and carried over by L{extended}.
        """
        try:
            return self._parses[parser]  # type: ignore[index, return-value]
        except KeyError:
            pass
        from ._datagram import datagramClientHello
        from ._quic import parseClientInitial

        result: Any
        if parser is parseClientInitial or parser is datagramClientHello:
            # Whichever asks, each datagram is decrypted once per flow.
            flowParser: Any = parser
            result = flowParser(self._datagrams, self._initial)
        else:
            result = parser(self._datagrams)
        self._parses[parser] = result  # type: ignore[index]
        return result

    def extended(self, more: bytes) -> DatagramPeek:
        """
        A view of these datagrams followed by the datagram C{more}, keeping
        the final parses.
        """
        new = DatagramPeek(self._datagrams + (more,))
        if not self._datagrams:
            # The first datagram changes data itself: nothing carries over.
            return new
        new._parses = {p: r for p, r in self._parses.items() if r is not NEED_MORE}
        new._initials = self._initials
        return new
