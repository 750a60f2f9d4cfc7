"""
The C{socks} matcher: a SOCKS client's first message, a SOCKS4 or SOCKS4a
request or a SOCKS5 greeting.

SOCKS4 (and its 4a extension) opens with the request itself: version 4, a
command (1 CONNECT, 2 BIND), a port, an IPv4 address and a user id ended by
a NUL; SOCKS4a writes C{0.0.0.x} (x not 0) as the address and puts a host
name, also ended by a NUL, after the user id.  SOCKS5 (RFC 1928 section 3)
opens with a greeting: version 5, the number of authentication methods
offered (1 to 255) and that many method numbers.

The greeting is short and its bytes are common ones, so the matcher waits
for the whole of it and checks every field: the method numbers must be ones
IANA has assigned (0 to 9) or left for private use (0x80 to 0xfe); user ids
and host names must be printable ASCII, within L{MAX_NAME} bytes each.  A
SOCKS4 request is thus decided within C{8 + 2 * (MAX_NAME + 1)} bytes, a
SOCKS5 greeting within 257.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import intList, optionTable

MAX_NAME = 255
"""
The longest SOCKS4 user id or SOCKS4a host name accepted, without its NUL.
"""

VERSIONS = (4, 5)
_COMMANDS = (1, 2)


def _methodKnown(method: int) -> bool:
    """
    Whether C{method} is an authentication method a client may offer: one of
    IANA's (0 to 9) or a private one (0x80 to 0xfe); 0xff means "none
    acceptable" and only a server sends it.
    """
    return method <= 0x09 or 0x80 <= method <= 0xFE


@frozen
class Greeting:
    """
    A SOCKS client's first message.

    @ivar version: C{"4"}, C{"4a"} or C{"5"}.
    @ivar detail: for SOCKS4, the command (C{"connect"} or C{"bind"}); for
        SOCKS5 the offered method numbers, in hex, comma-separated.
    """

    version: str
    detail: str


def _nulTerminated(data: bytes, start: int) -> int | Verdict:
    """
    The offset just past the NUL ending a printable name that starts at
    C{start}; L{NEED_MORE} while it may still come; L{NO_MATCH} if a byte of
    the name is not printable ASCII or it is too long.
    """
    end = data.find(b"\x00", start, start + MAX_NAME + 1)
    name = data[start : start + MAX_NAME + 1] if end == -1 else data[start:end]
    if any(not 0x20 <= b <= 0x7E for b in name):
        return NO_MATCH
    if end == -1:
        return NO_MATCH if len(name) > MAX_NAME else NEED_MORE
    return end + 1


def _socks4(data: bytes) -> Greeting | Verdict:
    if len(data) >= 2 and data[1] not in _COMMANDS:
        return NO_MATCH
    if len(data) < 8:
        return NEED_MORE
    command = "connect" if data[1] == 1 else "bind"
    userEnd = _nulTerminated(data, 8)
    if not isinstance(userEnd, int):
        return userEnd
    if data[4:7] != b"\x00\x00\x00" or data[7] == 0:
        return Greeting("4", command)
    hostEnd = _nulTerminated(data, userEnd)
    if not isinstance(hostEnd, int):
        return hostEnd
    if hostEnd == userEnd + 1:
        return NO_MATCH
    return Greeting("4a", command)


def _socks5(data: bytes) -> Greeting | Verdict:
    if len(data) < 2:
        return NEED_MORE
    count = data[1]
    methods = data[2 : 2 + count]
    if count == 0 or not all(_methodKnown(m) for m in methods):
        return NO_MATCH
    if len(methods) < count:
        return NEED_MORE
    return Greeting("5", ",".join(f"{m:02x}" for m in methods))


def parseGreeting(data: bytes) -> Greeting | Verdict:
    """
    The SOCKS request or greeting at the start of C{data}.

    @return: a L{Greeting} once it is all in; L{NEED_MORE} before it;
        L{NO_MATCH} as soon as a byte shows it is not one.
    """
    if not data:
        return NEED_MORE
    if data[0] == 4:
        return _socks4(data)
    if data[0] == 5:
        return _socks5(data)
    return NO_MATCH


@implementer(IMatcher)
@frozen
class SOCKSMatcher:
    """
    Matches a SOCKS client whose protocol version is one of C{versions}.

    @ivar versions: 4 (SOCKS4 and SOCKS4a) and/or 5.
    """

    versions: tuple[int, ...] = VERSIONS

    def match(self, peek: Peek) -> Verdict:
        data = peek.data
        if data and data[0] not in self.versions:
            return NO_MATCH
        found = peek.parse(parseGreeting)
        if isinstance(found, Greeting):
            return MATCH
        return found

    def describe(self, peek: Peek) -> str:
        found = peek.parse(parseGreeting)
        if not isinstance(found, Greeting):
            return "socks"
        if found.version == "5":
            return f"socks=5 methods={found.detail}"
        return f"socks={found.version} command={found.detail}"


@provider(IMatcherFactory)
class socksFactory:
    """
    C{match.socks = {}} for SOCKS4, SOCKS4a and SOCKS5 clients, or
    C{{versions = [5]}} for some versions only.
    """

    name = "socks"
    summary = "Matches SOCKS4, SOCKS4a and SOCKS5 clients by their first message."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("versions",))
        if "versions" not in table:
            return SOCKSMatcher()
        return SOCKSMatcher(intList(table["versions"], "versions", VERSIONS))
