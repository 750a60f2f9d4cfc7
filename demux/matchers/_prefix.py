"""
The C{prefix} matcher: fixed bytes at a fixed place, such as a protocol's
magic number.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._interfaces import (
    BOTH_TRANSPORTS,
    MATCH,
    NEED_MORE,
    NO_MATCH,
    IMatcher,
    IMatcherFactory,
    Verdict,
)
from .._peek import Peek
from ._options import hexBytes, optionTable, positiveInt

MAX_OFFSET = 64 * 1024
"""
The largest C{offset} accepted: far beyond any peek limit worth setting.
"""


@implementer(IMatcher)
@frozen
class PrefixMatcher:
    """
    Matches when the bytes at C{offset} equal C{value}, comparing only the
    bits set in C{mask}.

    It says L{NO_MATCH} as soon as one byte in its window differs, and
    L{MATCH} once every byte of the window is in and none does, so it never
    needs more than C{offset + len(value)} bytes.

    @ivar value: the bytes to find; already AND-ed with C{mask}.
    @ivar mask: as long as C{value}; C{0xff} bytes where there is no mask.
    @ivar offset: where in the stream C{value} starts.
    @ivar masked: whether a mask was given, for L{describe}.
    """

    value: bytes
    mask: bytes
    offset: int = 0
    masked: bool = False

    @classmethod
    def of(
        cls, value: bytes, offset: int = 0, mask: bytes | None = None
    ) -> PrefixMatcher:
        """
        A matcher for C{value} at C{offset}, optionally under C{mask} (the
        same length as C{value}).
        """
        if mask is None:
            return cls(value, b"\xff" * len(value), offset, False)
        if len(mask) != len(value):
            raise MatcherConfigError(
                f"mask is {len(mask)} bytes long but the prefix is {len(value)}; "
                "they must be the same length"
            )
        return cls(
            bytes(v & m for v, m in zip(value, mask, strict=True)), mask, offset, True
        )

    def match(self, peek: Peek) -> Verdict:
        value = self.value
        window = peek.data[self.offset : self.offset + len(value)]
        if not self.masked:
            # Every bit counts: the bytes compare as a whole.
            if window == value:
                return MATCH
            if len(window) < len(value) and value.startswith(window):
                return NO_MATCH if peek.dataComplete else NEED_MORE
            return NO_MATCH
        for got, want, mask in zip(window, self.value, self.mask, strict=False):
            if got & mask != want:
                return NO_MATCH
        if len(window) < len(self.value):
            # A datagram shorter than the window will never grow.
            return NO_MATCH if peek.dataComplete else NEED_MORE
        return MATCH

    def describe(self, peek: Peek) -> str:
        text = f"prefix={self.value.hex()}"
        if self.masked:
            text += f"/{self.mask.hex()}"
        if self.offset:
            text += f"@{self.offset}"
        return text


@provider(IMatcherFactory)
class prefixFactory:
    """
    C{match.prefix = "9e79bc40"}, or a table
    C{{hex = "...", offset = 0, mask = "ffff0000"}} or C{{text = "GET "}}.
    """

    name = "prefix"
    transports = BOTH_TRANSPORTS
    summary = "Matches fixed bytes (hex or text, optionally masked) at an offset."

    @staticmethod
    def build(options: object) -> IMatcher:
        if isinstance(options, str):
            return PrefixMatcher.of(hexBytes(options, "prefix"))
        table: Mapping[str, object] = optionTable(
            options, ("hex", "text", "offset", "mask")
        )
        if ("hex" in table) == ("text" in table):
            raise MatcherConfigError(
                "give exactly one of hex (bytes in hex) or text (UTF-8 text)"
            )
        if "hex" in table:
            value = hexBytes(table["hex"], "hex")
        else:
            text = table["text"]
            if not isinstance(text, str) or not text:
                raise MatcherConfigError(
                    f"text must be a non-empty string, not {text!r}"
                )
            value = text.encode("utf-8")
        offset = positiveInt(table.get("offset", 0), "offset", MAX_OFFSET)
        mask = table.get("mask")
        return PrefixMatcher.of(
            value, offset, None if mask is None else hexBytes(mask, "mask")
        )
