"""
The C{ssh} matcher: an SSH client's identification string (RFC 4253
section 4.2).

A server may send other lines before its identification string, but a client
must not, so only a connection's first line counts.
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

SSH_MAGIC = b"SSH-"
MAX_LINE = 255
"""
The longest identification string, its CR LF included (RFC 4253 section
4.2).
"""

# SSH-protoversion-softwareversion SP comments CR LF, where the versions are
# printable US-ASCII without space or minus.  RFC 4253 says CR LF, but some
# old clients send a bare LF and servers accept it, so we do too.
_IDENTIFICATION = re.compile(
    rb"SSH-(2\.0|1\.99)-([\x21-\x2c\x2e-\x7e]+)(?: ([\x20-\x7e]*))?\r?\n"
)
_SOFTWARE = re.compile(r"[\x21-\x2c\x2e-\x7e]+")
_PARTIAL_REST = re.compile(rb"([\x21-\x2c\x2e-\x7e]*)(?: [\x20-\x7e]*)?\r?")
_PROTOCOLS = (b"2.0", b"1.99")


def _partialSoftware(partial: bytes) -> bytes | None:
    """
    The software version so far of C{partial}, an identification string
    without its line end, or L{None} if it cannot become a valid one.
    """
    if not partial.startswith(SSH_MAGIC):
        return None if not SSH_MAGIC.startswith(partial) else b""
    protocol, dash, rest = partial[len(SSH_MAGIC) :].partition(b"-")
    if not dash:
        return b"" if any(p.startswith(protocol) for p in _PROTOCOLS) else None
    if protocol not in _PROTOCOLS:
        return None
    found = _PARTIAL_REST.fullmatch(rest)
    if found is None or (len(rest) > len(found.group(1)) and not found.group(1)):
        return None
    return found.group(1)


@frozen
class Identification:
    """
    A parsed SSH identification string.

    @ivar protocol: C{"2.0"}, or C{"1.99"} for a client that speaks both.
    @ivar software: the software version, such as C{"OpenSSH_9.2p1"}.
    @ivar comments: whatever followed the software version, or C{""}.
    """

    protocol: str
    software: str
    comments: str


def parseIdentification(data: bytes) -> Identification | Verdict:
    """
    The identification string on the first line of C{data}.

    @return: an L{Identification} once the line end is in; L{NEED_MORE}
        before it (within L{MAX_LINE} bytes); L{NO_MATCH} if the first line is
        not a valid SSH 2 identification string.
    """
    end = data.find(b"\n", 0, MAX_LINE)
    if end == -1:
        if len(data) >= MAX_LINE or _partialSoftware(data) is None:
            return NO_MATCH
        return NEED_MORE
    found = _IDENTIFICATION.fullmatch(data, 0, end + 1)
    if found is None:
        return NO_MATCH
    protocol, software, comments = found.groups()
    return Identification(
        protocol.decode("ascii"),
        software.decode("ascii"),
        (comments or b"").decode("ascii"),
    )


@implementer(IMatcher)
@frozen
class SSHMatcher:
    """
    Matches an SSH client; with C{software}, only one whose software version
    starts with one of those prefixes.

    Without C{software} the first four bytes decide, so that even a client
    that waits for the server's banner before sending its own is recognised
    as soon as it does send; with it, the whole first line is needed.

    @ivar software: prefixes of the software version, case-sensitive, or
        C{()} for any client.
    """

    software: tuple[str, ...] = ()

    def match(self, peek: Peek) -> Verdict:
        data = peek.data
        if not self.software:
            if data.startswith(SSH_MAGIC):
                return MATCH
            if SSH_MAGIC.startswith(data):
                return NEED_MORE
            return NO_MATCH
        found = peek.parse(parseIdentification)
        if found is NEED_MORE:
            return self._earlyVerdict(data)
        if not isinstance(found, Identification):
            return found
        if any(found.software.startswith(prefix) for prefix in self.software):
            return MATCH
        return NO_MATCH

    def _earlyVerdict(self, partial: bytes) -> Verdict:
        """
        L{NO_MATCH} as soon as the software version begun in C{partial} (a
        valid identification string without its line end) can no longer
        start with any of our prefixes, else L{NEED_MORE}.
        """
        dash = partial.find(b"-", len(SSH_MAGIC))
        if dash == -1:
            return NEED_MORE
        soFar = (_partialSoftware(partial) or b"").decode("ascii")
        # A space or CR after it means the software version is all in.
        complete = len(partial) > dash + 1 + len(soFar)
        for prefix in self.software:
            if soFar.startswith(prefix) or (not complete and prefix.startswith(soFar)):
                return NEED_MORE
        return NO_MATCH

    def describe(self, peek: Peek) -> str:
        found = peek.parse(parseIdentification)
        if isinstance(found, Identification):
            return f"ssh software={found.software}"
        return "ssh"


@provider(IMatcherFactory)
class sshFactory:
    """
    C{match.ssh = {}} for any SSH client, or C{{software = ["OpenSSH_"]}} for
    clients whose software version starts with one of those prefixes.
    """

    name = "ssh"
    summary = "Matches SSH clients by their identification string (software)."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("software",))
        if "software" not in table:
            return SSHMatcher()
        software = stringList(table["software"], "software")
        for prefix in software:
            if _SOFTWARE.fullmatch(prefix) is None:
                raise MatcherConfigError(
                    f"software: {prefix!r} cannot begin a software version, "
                    "which is printable ASCII without spaces or '-'"
                )
        return SSHMatcher(software)
