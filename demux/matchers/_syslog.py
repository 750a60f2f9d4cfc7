"""
The C{syslog} matcher: a syslog sender over TCP.

Every syslog message, RFC 5424 or the older BSD format of RFC 3164, begins
with its priority: C{<}, the priority value (facility times 8 plus severity,
0 to 191, in 1 to 3 digits without leading zeros) and C{>}.  Over TCP
(RFC 6587) messages are framed one of two ways:

  - I{non-transparent framing}: each message ends with a line feed (or
    another agreed byte), so the stream begins with the priority itself;
  - I{octet counting}: each message is preceded by its length in decimal
    (no leading zero) and a space, C{107 <13>1 2026-...}.

The matcher decides on the priority's C{>}: at most 5 bytes in, or
L{MAX_COUNT_DIGITS} + 6 with an octet count.  A C{<} followed by a digit
begins no XML or HTML document (their names cannot start with a digit), so
text protocols that open with C{<} are not taken for syslog.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import choiceList, optionTable

MAX_PRIORITY = 191
MAX_COUNT_DIGITS = 8
"""
The most digits accepted in an octet count: messages up to 99,999,999 bytes,
far beyond what any syslog receiver accepts.
"""

MIN_MESSAGE = 3
"""
The shortest message an octet count can announce: a bare C{<0>}.
"""

OCTET_COUNTING = "octet-counting"
NON_TRANSPARENT = "non-transparent"
FRAMINGS = (OCTET_COUNTING, NON_TRANSPARENT)


@frozen
class Priority:
    """
    The priority a syslog stream begins with.

    @ivar value: the priority value, 0 to 191.
    @ivar framing: L{OCTET_COUNTING} or L{NON_TRANSPARENT}.
    @ivar count: the octet count, or L{None} without one.
    """

    value: int
    framing: str
    count: int | None


def _priority(data: bytes, start: int) -> int | Verdict:
    """
    The priority value written at C{start} as C{<PRIVAL>}.
    """
    window = data[start : start + 5]
    if not window:
        return NEED_MORE
    if window[:1] != b"<":
        return NO_MATCH
    end = window.find(b">")
    digits = window[1:] if end == -1 else window[1:end]
    if not digits.isdigit() and digits:
        return NO_MATCH
    if len(digits) > 1 and digits.startswith(b"0"):
        return NO_MATCH
    if digits and int(digits) > MAX_PRIORITY:
        return NO_MATCH
    if end == -1:
        return NEED_MORE if len(window) < 5 else NO_MATCH
    if not digits:
        return NO_MATCH
    return int(digits)


def parsePriority(data: bytes) -> Priority | Verdict:
    """
    The priority at the start of C{data}, after an octet count if there is
    one.

    @return: a L{Priority} once its C{>} is in; L{NEED_MORE} before;
        L{NO_MATCH} as soon as a byte does not fit.
    """
    if not data:
        return NEED_MORE
    if data[:1] == b"<":
        value = _priority(data, 0)
        if not isinstance(value, int):
            return value
        return Priority(value, NON_TRANSPARENT, None)
    space = data.find(b" ", 0, MAX_COUNT_DIGITS + 1)
    digits = data[: MAX_COUNT_DIGITS + 1] if space == -1 else data[:space]
    if not digits.isdigit() and digits or digits.startswith(b"0"):
        return NO_MATCH
    if space == -1:
        return NEED_MORE if len(digits) <= MAX_COUNT_DIGITS else NO_MATCH
    if not digits or int(digits) < MIN_MESSAGE:
        return NO_MATCH
    value = _priority(data, space + 1)
    if not isinstance(value, int):
        return value
    return Priority(value, OCTET_COUNTING, int(digits))


@implementer(IMatcher)
@frozen
class SyslogMatcher:
    """
    Matches a syslog stream framed one of C{framings}.

    @ivar framings: some of L{FRAMINGS}.
    """

    framings: tuple[str, ...] = FRAMINGS

    def match(self, peek: Peek) -> Verdict:
        found = peek.parse(parsePriority)
        if not isinstance(found, Priority):
            return found
        return MATCH if found.framing in self.framings else NO_MATCH

    def describe(self, peek: Peek) -> str:
        found = peek.parse(parsePriority)
        if not isinstance(found, Priority):
            return "syslog"
        facility, severity = divmod(found.value, 8)
        return (
            f"syslog pri={found.value} facility={facility} severity={severity} "
            f"framing={found.framing}"
        )


@provider(IMatcherFactory)
class syslogFactory:
    """
    C{match.syslog = {}} for syslog over TCP framed either way, or
    C{{framing = "octet-counting"}} for one framing only.
    """

    name = "syslog"
    summary = (
        "Matches syslog over TCP (RFC 5424 or 3164 messages, octet-counted or "
        "not) by the priority it begins with."
    )

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("framing",))
        if "framing" not in table:
            return SyslogMatcher()
        return SyslogMatcher(choiceList(table["framing"], "framing", FRAMINGS))
