"""
The bytes a connection has sent so far, with the parses of them that every
matcher of that connection shares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ._interfaces import NEED_MORE

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
