"""
The C{regex} matcher: a bytes regular expression over a window of the first
bytes.

A regular expression and a stream that is still arriving do not mix well:
C{re.match} says whether the bytes seen I{so far} match, and a pattern such as
C{a$} or C{a(?!b)} matches C{b"a"} but not C{b"ab"}, so asking C{re} on every
read would give answers that change as bytes arrive.  This matcher instead
answers the question that can be answered soundly, with C{re.match}'s meaning
(a match anchored at the start of the window, not necessarily consuming all
of it):

  - L{MATCH} as soon as some prefix of the bytes seen so far is matched by
    the pattern.  Then every longer stream has that prefix too, so the answer
    can never change; a short message that matches is recognised at once,
    without waiting for the window to fill.
  - L{NO_MATCH} as soon as no continuation of the bytes seen so far could
    contain a match, or once the whole window is in without one.  A TLS
    ClientHello is refused by C{^GET } on its first byte.
  - L{NEED_MORE} in between.

To decide these exactly, the pattern is run as a Thompson automaton (built
from the parse the C{re} module itself makes, so the syntax and its errors
are Python's) over the window, tracking every way it could still match.  That
limits patterns to the constructs that look only at bytes already seen:
literals, classes, C{.}, alternation, groups and repetition (greedy or lazy,
which only changes what C{re} would capture, not whether it matches), and
C{^}/C{\\A} for the start of the window.  Look-ahead and look-behind,
back-references, C{$}, C{\\Z}, C{\\b}, C{\\B}, atomic groups and possessive
repeats are refused when the route is configured, with a sentence saying why.
The run takes time proportional to the window times the pattern's size,
never the exponential time a backtracking engine can take.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

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
from ._options import optionTable, positiveInt

# The parser behind re.compile: private, but it is the only way to get
# exactly Python's syntax, and its node types have been stable for decades.
_sre: Any = importlib.import_module("re._parser")

DEFAULT_LENGTH = 256
MAX_LENGTH = 64 * 1024
MAX_OFFSET = 64 * 1024
MAX_STATES = 20_000
"""
The most automaton states a pattern may compile to; C{x{1000}} takes a
thousand, so this allows any reasonable pattern and refuses runaway ones.
"""

_ALL = (1 << 256) - 1
_NEWLINE = 1 << ord("\n")


def _bits(byteValues: Sequence[int] | range) -> int:
    mask = 0
    for b in byteValues:
        mask |= 1 << b
    return mask


_CATEGORIES: dict[Any, int] = {
    _sre.CATEGORY_DIGIT: _bits(range(0x30, 0x3A)),
    _sre.CATEGORY_SPACE: _bits(b" \t\n\r\f\v"),
    _sre.CATEGORY_WORD: _bits(
        b"_"
        + bytes(range(0x30, 0x3A))
        + bytes(range(0x41, 0x5B))
        + bytes(range(0x61, 0x7B))
    ),
}
_CATEGORIES[_sre.CATEGORY_NOT_DIGIT] = _ALL & ~_CATEGORIES[_sre.CATEGORY_DIGIT]
_CATEGORIES[_sre.CATEGORY_NOT_SPACE] = _ALL & ~_CATEGORIES[_sre.CATEGORY_SPACE]
_CATEGORIES[_sre.CATEGORY_NOT_WORD] = _ALL & ~_CATEGORIES[_sre.CATEGORY_WORD]

_REFUSED = {
    "ASSERT": "look-ahead and look-behind are not supported",
    "ASSERT_NOT": "look-ahead and look-behind are not supported",
    "GROUPREF": "back-references are not supported",
    "GROUPREF_EXISTS": "conditional groups are not supported",
    "ATOMIC_GROUP": "atomic groups are not supported",
    "POSSESSIVE_REPEAT": "possessive repeats are not supported",
}
_REFUSED_AT = {
    "AT_END": (
        "$ is not supported: the bytes of an open connection have no end "
        "yet; leave it out"
    ),
    "AT_END_STRING": (
        "\\Z is not supported: the bytes of an open connection have no end "
        "yet; leave it out"
    ),
    "AT_BOUNDARY": "\\b is not supported (it looks at the byte after it)",
    "AT_NON_BOUNDARY": "\\B is not supported (it looks at the byte after it)",
}


def _fold(mask: int) -> int:
    """
    C{mask} with both cases of every ASCII letter in it, as C{re.IGNORECASE}
    means for a bytes pattern.
    """
    for lower in range(0x61, 0x7B):
        upper = lower - 0x20
        if mask >> lower & 1 or mask >> upper & 1:
            mask |= 1 << lower | 1 << upper
    return mask


class _Builder:
    """
    Builds a Thompson automaton from C{re}'s parse tree, backwards: each
    piece is built knowing the state that follows it.

    A state is C{[kind, ...]}: C{["byte", mask, next]} consumes one byte
    in C{mask}; C{["split", [targets]]} moves to any target without
    consuming; C{["begin", next]} moves only at the start of the window;
    C{["accept"]} is a match.
    """

    def __init__(self) -> None:
        self.states: list[list[Any]] = [["accept"]]

    def add(self, state: list[Any]) -> int:
        if len(self.states) >= MAX_STATES:
            raise MatcherConfigError(
                f"the pattern is too large (more than {MAX_STATES} automaton "
                "states); use smaller repeat counts"
            )
        self.states.append(state)
        return len(self.states) - 1

    def sequence(self, items: Sequence[tuple[Any, Any]], flags: int, after: int) -> int:
        for op, av in reversed(items):
            after = self.item(op, av, flags, after)
        return after

    def byte(self, mask: int, flags: int, after: int) -> int:
        if flags & _sre.SRE_FLAG_IGNORECASE:
            mask = _fold(mask)
        return self.add(["byte", mask, after])

    def item(self, op: Any, av: Any, flags: int, after: int) -> int:
        name = str(op)
        if name in _REFUSED:
            raise MatcherConfigError(_REFUSED[name])
        if op is _sre.LITERAL:
            return self.byte(1 << av, flags, after)
        if op is _sre.NOT_LITERAL:
            notMask = 1 << av
            if flags & _sre.SRE_FLAG_IGNORECASE:
                notMask = _fold(notMask)
            return self.add(["byte", _ALL & ~notMask, after])
        if op is _sre.ANY:
            dotall = flags & _sre.SRE_FLAG_DOTALL
            return self.add(["byte", _ALL if dotall else _ALL & ~_NEWLINE, after])
        if op is _sre.IN:
            return self.charset(av, flags, after)
        if op is _sre.BRANCH:
            return self.add(
                ["split", [self.sequence(alt, flags, after) for alt in av[1]]]
            )
        if op is _sre.SUBPATTERN:
            _, addFlags, delFlags, items = av
            return self.sequence(items, (flags | addFlags) & ~delFlags, after)
        if op is _sre.MAX_REPEAT or op is _sre.MIN_REPEAT:
            return self.repeat(av, flags, after)
        if op is _sre.AT:
            return self.at(av, flags, after)
        raise MatcherConfigError(f"the construct {name} is not supported")

    def charset(self, items: Sequence[tuple[Any, Any]], flags: int, after: int) -> int:
        mask = 0
        negate = False
        for op, av in items:
            if op is _sre.NEGATE:
                negate = True
            elif op is _sre.LITERAL:
                mask |= 1 << av
            elif op is _sre.RANGE:
                mask |= _bits(range(av[0], av[1] + 1))
            elif op is _sre.CATEGORY and av in _CATEGORIES:
                mask |= _CATEGORIES[av]
            else:
                raise MatcherConfigError(f"the class item {op} {av} is not supported")
        if flags & _sre.SRE_FLAG_IGNORECASE:
            mask = _fold(mask)
        return self.add(["byte", _ALL & ~mask if negate else mask, after])

    def repeat(self, av: tuple[int, Any, Any], flags: int, after: int) -> int:
        low, high, items = av
        start = after
        if high is _sre.MAXREPEAT:
            loop = self.add(["split", []])
            self.states[loop][1] = [self.sequence(items, flags, loop), after]
            start = loop
        else:
            for _ in range(high - low):
                start = self.add(["split", [self.sequence(items, flags, start), after]])
        for _ in range(low):
            start = self.sequence(items, flags, start)
        return start

    def at(self, where: Any, flags: int, after: int) -> int:
        name = str(where)
        if name in _REFUSED_AT:
            raise MatcherConfigError(_REFUSED_AT[name])
        if where is _sre.AT_BEGINNING and flags & _sre.SRE_FLAG_MULTILINE:
            raise MatcherConfigError(
                "^ with the MULTILINE flag is not supported; ^ means the start "
                "of the window"
            )
        if where is _sre.AT_BEGINNING or where is _sre.AT_BEGINNING_STRING:
            return self.add(["begin", after])
        raise MatcherConfigError(f"the assertion {name} is not supported")


@frozen
class _Automaton:
    """
    A compiled pattern: for each state, the bytes it consumes and the live
    states that follow.

    @ivar masks: per state, the bytes its transition consumes (0 for states
        that consume nothing).
    @ivar follow: per consuming state, the live consuming and accepting
        states reached after its byte, without passing a start-of-window
        assertion.
    @ivar initial: the live states at the start of the window.
    """

    masks: tuple[int, ...]
    follow: tuple[frozenset[int], ...]
    initial: frozenset[int]

    @classmethod
    def compile(cls, pattern: bytes) -> _Automaton:
        parsed = _sre.parse(pattern, 0)
        flags = parsed.state.flags
        if flags & _sre.SRE_FLAG_LOCALE:
            raise MatcherConfigError("the LOCALE flag is not supported")
        builder = _Builder()
        start = builder.sequence(list(parsed), flags, 0)
        states = builder.states

        def closure(fromStates: Sequence[int], atStart: bool) -> set[int]:
            seen: set[int] = set()
            found: set[int] = set()
            stack = list(fromStates)
            while stack:
                s = stack.pop()
                if s in seen:
                    continue
                seen.add(s)
                kind = states[s][0]
                if kind == "split":
                    stack.extend(states[s][1])
                elif kind == "begin":
                    if atStart:
                        stack.append(states[s][1])
                elif kind == "byte" and states[s][1] == 0:
                    continue
                else:
                    found.add(s)
            return found

        after = [
            closure([state[2]], False) if state[0] == "byte" else set()
            for state in states
        ]
        # Live states: those from which the accepting state 0 can be reached.
        live = {0}
        changed = True
        while changed:
            changed = False
            for s, nexts in enumerate(after):
                if s not in live and nexts & live:
                    live.add(s)
                    changed = True
        return cls(
            masks=tuple(state[1] if state[0] == "byte" else 0 for state in states),
            follow=tuple(frozenset(nexts & live) for nexts in after),
            initial=frozenset(closure([start], True) & live),
        )

    def run(self, window: bytes) -> Verdict:
        """
        L{MATCH} if a prefix of C{window} matches, L{NO_MATCH} if no
        continuation of it can, else L{NEED_MORE}.
        """
        current = self.initial
        for byte in window:
            if 0 in current:
                return MATCH
            if not current:
                return NO_MATCH
            nexts: set[int] = set()
            for s in current:
                if self.masks[s] >> byte & 1:
                    nexts |= self.follow[s]
            current = frozenset(nexts)
        if 0 in current:
            return MATCH
        if not current:
            return NO_MATCH
        return NEED_MORE


@implementer(IMatcher)
@frozen
class RegexMatcher:
    """
    Matches when the bytes of the window C{data[offset:offset + length]}
    start with a match of C{pattern}, in the sense of the module docstring.

    @ivar pattern: the pattern as written, for L{describe}.
    @ivar offset: where the window starts.
    @ivar length: how long the window is: the matcher never needs more than
        C{offset + length} bytes.
    """

    pattern: str
    offset: int
    length: int
    _automaton: _Automaton

    @classmethod
    def compile(
        cls, pattern: str, offset: int = 0, length: int = DEFAULT_LENGTH
    ) -> RegexMatcher:
        """
        A matcher for C{pattern}, a Python bytes regular expression written
        as text whose characters are taken as bytes (ISO-8859-1), so both
        C{\\x16} and a literal byte mean that byte.

        @raise MatcherConfigError: if the pattern is not a valid regular
            expression or uses a construct this matcher cannot decide soundly.
        """
        try:
            raw = pattern.encode("iso-8859-1")
        except UnicodeEncodeError:
            raise MatcherConfigError(
                f"pattern {pattern!r} has characters above \\xff; write bytes "
                "as \\xNN escapes"
            ) from None
        try:
            re.compile(raw)
            automaton = _Automaton.compile(raw)
        except re.error as e:
            raise MatcherConfigError(
                f"pattern {pattern!r} is not a valid regular expression: {e}"
            ) from None
        except MatcherConfigError as e:
            raise MatcherConfigError(f"pattern {pattern!r}: {e.message}") from None
        return cls(pattern, offset, length, automaton)

    def match(self, peek: Peek) -> Verdict:
        window = peek.data[self.offset : self.offset + self.length]
        if len(peek.data) < self.offset:
            return NO_MATCH if peek.dataComplete else NEED_MORE
        verdict = self._automaton.run(window)
        if verdict is NEED_MORE and (len(window) == self.length or peek.dataComplete):
            # The window is full, or is a whole datagram that will not grow.
            return NO_MATCH
        return verdict

    def describe(self, peek: Peek) -> str:
        return f"regex={self.pattern}"


@provider(IMatcherFactory)
class regexFactory:
    """
    C{match.regex = "^\\\\x16\\\\x03"}, or a table C{{pattern = "...",
    offset = 0, length = 256}}.
    """

    name = "regex"
    transports = BOTH_TRANSPORTS
    summary = (
        "Matches a bytes regular expression anchored at the start of a window "
        "of the first bytes."
    )

    @staticmethod
    def build(options: object) -> IMatcher:
        if isinstance(options, str):
            return RegexMatcher.compile(options)
        table: Mapping[str, object] = optionTable(
            options, ("pattern", "offset", "length")
        )
        pattern = table.get("pattern")
        if not isinstance(pattern, str):
            raise MatcherConfigError(
                f"pattern must be given as a string, not {pattern!r}"
            )
        offset = positiveInt(table.get("offset", 0), "offset", MAX_OFFSET)
        length = positiveInt(table.get("length", DEFAULT_LENGTH), "length", MAX_LENGTH)
        if length == 0:
            raise MatcherConfigError("length must be at least 1")
        return RegexMatcher.compile(pattern, offset, length)
