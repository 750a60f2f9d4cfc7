"""
The C{redis} matcher: a Redis client's first command, in RESP or, when asked
for, inline.

Redis clients (C{redis-cli}, every client library) send commands in RESP: an
array of bulk strings, C{*N CR LF} then, per element, C{$LEN CR LF}, the
bytes and C{CR LF}.  The first element is the command's name.  The matcher
reads up to the end of that name, at most L{MAX_PREFIX} bytes, and requires
every field to be well formed as Redis reads it (lengths in decimal without
leading zeros or signs) and the name to look like a command name (a letter
or C{_}, then letters, digits and C{_ . | : -}, at most L{MAX_COMMAND}
bytes).  The C{commands} option restricts the names, case-insensitively.

Redis also reads I{inline} commands, a line of words such as
C{PING CR LF}, as typed by a person at a terminal, or sent by HAProxy's
C{option redis-check}.  Plain text is what many protocols begin with (an
inline C{GET} is an HTTP request's first word), so inline commands match
only with C{inline = true}, and only those listed in C{commands}, which is
then required; a route for them belongs after the routes for HTTP and other
text protocols.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import boolean, optionTable, stringList

MAX_COMMAND = 64
"""
The longest command name accepted; Redis's longest are about 20 bytes.
"""

MAX_COUNT_DIGITS = 10
"""
The most digits in the array's element count (Redis refuses counts above
2**31 - 1).
"""

MAX_PREFIX = 1 + MAX_COUNT_DIGITS + 2 + 1 + 2 + 2 + MAX_COMMAND + 2
"""
The most bytes the matcher reads for a RESP command.
"""

_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_.|:\-]*")


@frozen
class Command:
    """
    The first command of a Redis connection.

    @ivar name: its name, upper-cased.
    @ivar inline: whether it was an inline command rather than RESP.
    """

    name: str
    inline: bool


def _decimal(data: bytes, start: int, maxDigits: int) -> tuple[int, int] | Verdict:
    """
    The positive decimal number at C{start} ended by CR LF, and the offset
    after the CR LF, as Redis reads it: no sign, no leading zero.
    """
    end = data.find(b"\r", start, start + maxDigits + 1)
    digits = data[start : start + maxDigits + 1] if end == -1 else data[start:end]
    if not digits.isdigit() and digits:
        return NO_MATCH
    if digits.startswith(b"0"):
        return NO_MATCH
    if end == -1:
        return NO_MATCH if len(digits) > maxDigits else NEED_MORE
    if not digits:
        return NO_MATCH
    if len(data) <= end + 1:
        return NEED_MORE
    if data[end + 1] != 0x0A:
        return NO_MATCH
    return int(digits), end + 2


def parseCommand(data: bytes) -> Command | Verdict:
    """
    The RESP command at the start of C{data}, up to the end of its name.

    @return: a L{Command} (never inline) once the name and its CR LF are in;
        L{NEED_MORE} before; L{NO_MATCH} as soon as a byte does not fit.
    """
    if not data:
        return NEED_MORE
    if data[:1] != b"*":
        return NO_MATCH
    count = _decimal(data, 1, MAX_COUNT_DIGITS)
    if not isinstance(count, tuple):
        return count
    if count[0] > 2**31 - 1:
        return NO_MATCH
    start = count[1]
    if len(data) <= start:
        return NEED_MORE
    if data[start] != ord("$"):
        return NO_MATCH
    length = _decimal(data, start + 1, 2)
    if not isinstance(length, tuple):
        return length
    size, start = length
    if size > MAX_COMMAND:
        return NO_MATCH
    name = data[start : start + size]
    if name and _NAME.fullmatch(name) is None:
        return NO_MATCH
    end = data[start + size : start + size + 2]
    if not b"\r\n".startswith(end):
        return NO_MATCH
    if len(end) < 2:
        return NEED_MORE
    return Command(name.decode("ascii").upper(), False)


@implementer(IMatcher)
@frozen
class RedisMatcher:
    """
    Matches a Redis client whose first command is one of C{commands}, in
    RESP or, with C{inline}, as an inline command.

    @ivar commands: upper-cased command names, or C{()} for any (RESP only).
    @ivar inline: whether inline commands match (then C{commands} is not
        empty).
    """

    commands: tuple[str, ...] = ()
    inline: bool = False

    def _inlineVerdict(self, data: bytes) -> Verdict:
        """
        L{MATCH} if C{data} starts with one of our commands and a space or
        line end, L{NEED_MORE} while it might, else L{NO_MATCH}.
        """
        upper = data[: MAX_COMMAND + 1].upper()
        verdict = NO_MATCH
        for command in self.commands:
            word = command.encode("ascii")
            if upper.startswith(word):
                if len(upper) == len(word):
                    verdict = NEED_MORE
                elif upper[len(word)] in b" \r\n":
                    return MATCH
            elif word.startswith(upper):
                verdict = NEED_MORE
        return verdict

    def match(self, peek: Peek) -> Verdict:
        data = peek.data
        if self.inline and data[:1] != b"*":
            return self._inlineVerdict(data)
        found = peek.parse(parseCommand)
        if not isinstance(found, Command):
            return found
        if self.commands and found.name not in self.commands:
            return NO_MATCH
        return MATCH

    def describe(self, peek: Peek) -> str:
        found = peek.parse(parseCommand)
        if isinstance(found, Command):
            return f"redis={found.name}"
        word = peek.data[: MAX_COMMAND + 1].split(maxsplit=1)[:1]
        name = word[0].decode("ascii", "replace").upper() if word else ""
        return f"redis={name} form=inline"


@provider(IMatcherFactory)
class redisFactory:
    """
    C{match.redis = {}} for any Redis client speaking RESP;
    C{{commands = ["HELLO", "AUTH", "PING"]}} for some first commands only;
    C{{commands = ["PING"], inline = true}} for inline commands too.
    """

    name = "redis"
    summary = "Matches Redis clients by their first command (RESP, or inline)."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("commands", "inline"))
        commands: tuple[str, ...] = ()
        if "commands" in table:
            commands = stringList(table["commands"], "commands")
            for command in commands:
                if len(command) > MAX_COMMAND or not _NAME.fullmatch(
                    command.encode("ascii", "replace")
                ):
                    raise MatcherConfigError(
                        f"commands: {command!r} is not a Redis command name"
                    )
            commands = tuple(dict.fromkeys(c.upper() for c in commands))
        inline = boolean(table.get("inline", False), "inline")
        if inline and not commands:
            raise MatcherConfigError(
                "inline = true needs a list of commands, since any line of "
                "text could be an inline command"
            )
        return RedisMatcher(commands, inline)
