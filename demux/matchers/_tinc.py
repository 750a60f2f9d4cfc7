"""
The C{tinc} matcher: the ID request that opens tinc's meta protocol, in tinc
1.0 (C{"0 NAME 17\\n"}) and 1.1 (C{"0 NAME 17.7\\n"}).

The connecting daemon speaks first, in the clear: request number 0 (ID), its
node name (letters, digits and underscores) and the protocol version, whose
major number has been 17 since tinc 1.0.  Node names are checked the way
tinc itself checks them, so the line a tinc 1.1 invitation opens with (whose
name starts with C{?}) and a control connection (C{^}) do not match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import optionTable, stringList

MAX_LINE = 256
"""
The longest ID line the matcher waits for, its line end included; past this
without a line end it says L{NO_MATCH}.
"""

_LINE = re.compile(rb"0 ([A-Za-z0-9_]+) 17(?:\.([0-9]{1,5}))?\n")
_PARTIAL = re.compile(
    rb"(?:0(?: (?:[A-Za-z0-9_]+(?: (?:1(?:7(?:\.[0-9]{0,5})?)?)?)?)?)?)?"
)
_NAME = re.compile(r"[A-Za-z0-9_]+")


@frozen
class IDRequest:
    """
    A parsed tinc ID request.

    @ivar name: the connecting node's name.
    @ivar minor: the protocol's minor version (7 for tinc 1.1), or L{None}
        for tinc 1.0, which sends none.
    """

    name: str
    minor: int | None


def parseIDRequest(data: bytes) -> IDRequest | Verdict:
    """
    The ID request on the first line of C{data}.

    @return: an L{IDRequest} once its line end is in; L{NEED_MORE} before
        (within L{MAX_LINE} bytes); L{NO_MATCH} if the first line is not an
        ID request of protocol 17.
    """
    end = data.find(b"\n", 0, MAX_LINE)
    if end == -1:
        if len(data) >= MAX_LINE or _PARTIAL.fullmatch(data) is None:
            return NO_MATCH
        return NEED_MORE
    found = _LINE.fullmatch(data, 0, end + 1)
    if found is None:
        return NO_MATCH
    name, minor = found.groups()
    return IDRequest(name.decode("ascii"), None if minor is None else int(minor))


@implementer(IMatcher)
@frozen
class TincMatcher:
    """
    Matches a tinc daemon's ID request; with C{names}, only from one of those
    nodes.

    @ivar names: node names, compared exactly, or C{()} for any node.
    """

    names: frozenset[str] = frozenset()

    def match(self, peek: Peek) -> Verdict:
        request = peek.parse(parseIDRequest)
        if not isinstance(request, IDRequest):
            if request is NEED_MORE and self.names:
                return self._earlyVerdict(peek.data)
            return request
        if self.names and request.name not in self.names:
            return NO_MATCH
        return MATCH

    def _earlyVerdict(self, partial: bytes) -> Verdict:
        """
        L{NO_MATCH} once the name begun in C{partial} (a prefix of an ID
        line) can no longer be one of ours, else L{NEED_MORE}.
        """
        words = partial.decode("ascii").split(" ")
        if len(words) < 2:
            return NEED_MORE
        soFar = words[1]
        complete = len(words) > 2
        for name in self.names:
            if name == soFar or (not complete and name.startswith(soFar)):
                return NEED_MORE
        return NO_MATCH

    def describe(self, peek: Peek) -> str:
        request = peek.parse(parseIDRequest)
        if not isinstance(request, IDRequest):
            return "tinc"
        version = "17" if request.minor is None else f"17.{request.minor}"
        return f"tinc name={request.name} protocol={version}"


@provider(IMatcherFactory)
class tincFactory:
    """
    C{match.tinc = {}} for any tinc daemon, or C{{names = ["alice"]}} for
    those nodes only.
    """

    name = "tinc"
    summary = "Matches a tinc VPN daemon's ID request (tinc 1.0 and 1.1), by node name."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("names",))
        if "names" not in table:
            return TincMatcher()
        names = stringList(table["names"], "names")
        for name in names:
            if _NAME.fullmatch(name) is None:
                raise MatcherConfigError(
                    f"names: {name!r} is not a tinc node name, which has only "
                    "ASCII letters, digits and underscores"
                )
        return TincMatcher(frozenset(names))
