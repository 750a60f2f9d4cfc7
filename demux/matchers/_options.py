"""
Small checks that matcher factories share for reading their options, so that
every matcher rejects a bad value with the same kind of sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

from .._clienthello import ClientHello
from .._errors import MatcherConfigError


def noOptions(options: object) -> None:
    """
    Accept C{{}} or C{true}, the two ways to write a matcher with no options.
    """
    if options is True or options == {}:
        return
    raise MatcherConfigError(
        f"takes no options; write {{}} or true, not {options!r}"
    )


def optionTable(
    options: object, allowed: Iterable[str]
) -> Mapping[str, object]:
    """
    C{options} as a table whose keys are all in C{allowed}; C{true} is an
    empty table.
    """
    if options is True:
        return {}
    if not isinstance(options, Mapping):
        raise MatcherConfigError(f"expected a table of options, not {options!r}")
    allowedSet = set(allowed)
    for key in options:
        if key not in allowedSet:
            known = ", ".join(sorted(allowedSet)) or "none"
            raise MatcherConfigError(
                f"unknown option {key!r} (known options: {known})"
            )
    return options


def stringList(value: object, what: str) -> tuple[str, ...]:
    """
    A non-empty list of strings, where a single string stands for a list of
    one.
    """
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise MatcherConfigError(
            f"{what} must be a non-empty string or list of non-empty strings, "
            f"not {value!r}"
        )
    return tuple(value)


def positiveInt(value: object, what: str, maximum: int | None = None) -> int:
    """
    A whole number of at least 0 (and at most C{maximum}).
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MatcherConfigError(f"{what} must be a whole number >= 0, not {value!r}")
    if maximum is not None and value > maximum:
        raise MatcherConfigError(f"{what} must be at most {maximum}, not {value}")
    return value


def hostnameMatches(pattern: str, name: str) -> bool:
    """
    Whether C{name} matches C{pattern}, case-insensitively, where a pattern
    C{*.example.com} matches any name with one or more labels in front of
    C{example.com} (but not C{example.com} itself), as HAProxy's C{-m end}
    on a dot and sslh's wildcards do.
    """
    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == pattern


def boolean(value: object, what: str) -> bool:
    """
    C{true} or C{false}, and nothing TOML would merely coerce to one.
    """
    if not isinstance(value, bool):
        raise MatcherConfigError(f"{what} must be true or false, not {value!r}")
    return value


def hexBytes(value: object, what: str) -> bytes:
    """
    Bytes written in hex, two digits a byte, with spaces or colons allowed
    between bytes (C{"9e79bc40"}, C{"9e 79 bc 40"}, C{"9e:79:bc:40"}), as
    they are copied out of a protocol's documentation or a packet dump.
    """
    if not isinstance(value, str):
        raise MatcherConfigError(
            f"{what} must be a string of hex digits, not {value!r}"
        )
    pieces = [p for p in value.replace(":", " ").split() if p]
    if not pieces or any(len(p) % 2 for p in pieces):
        raise MatcherConfigError(
            f"{what} must be whole bytes of two hex digits each, not {value!r}"
        )
    try:
        return bytes.fromhex("".join(pieces))
    except ValueError:
        raise MatcherConfigError(
            f"{what} must be hex digits (0-9, a-f), not {value!r}"
        ) from None


def intList(
    value: object, what: str, allowed: Collection[int]
) -> tuple[int, ...]:
    """
    A non-empty list of whole numbers from C{allowed}, without repeats, where
    a single number stands for a list of one (C{versions = [4, 5]} or
    C{versions = 5}).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    known = ", ".join(str(v) for v in sorted(allowed))
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise MatcherConfigError(
            f"{what} must be a number or a non-empty list of numbers from "
            f"{known}, not {value!r}"
        )
    for v in value:
        if v not in allowed:
            raise MatcherConfigError(f"{what}: {v} is not one of {known}")
    return tuple(dict.fromkeys(value))


def namedNumbers(
    value: object,
    what: str,
    plural: str,
    names: Mapping[str, int],
    maximum: int,
    hint: str,
    fold: Callable[[str], str] = str,
) -> frozenset[int]:
    """
    A non-empty list of numbers from 1 to C{maximum} or their names in
    C{names} (looked up after C{fold}), where one entry stands for a list of
    one (C{types = ["A", 28]}); C{plural} and C{hint} say what they are in
    the errors.
    """
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise MatcherConfigError(
            f"{what} must be a non-empty list of {plural}, not {value!r}"
        )
    numbers = set()
    for item in value:
        if isinstance(item, str) and fold(item) in names:
            numbers.add(names[fold(item)])
        elif isinstance(item, int) and not isinstance(item, bool) and 0 < item <= maximum:
            numbers.add(item)
        else:
            raise MatcherConfigError(f"{what} entry {item!r} is {hint}")
    return frozenset(numbers)


def choiceList(
    value: object, what: str, allowed: Collection[str]
) -> tuple[str, ...]:
    """
    A non-empty list of words from C{allowed}, without repeats, where a single
    word stands for a list of one (C{requests = ["ssl", "startup"]}).
    """
    words = stringList(value, what)
    for word in words:
        if word not in allowed:
            known = ", ".join(repr(a) for a in allowed)
            raise MatcherConfigError(f"{what}: {word!r} is not one of {known}")
    return tuple(dict.fromkeys(words))


def helloNames(hello: ClientHello) -> str:
    """
    C{sni=NAME alpn=P1,P2} for a log line or an explanation, each made
    safe with L{logSafe}, C{-} for what the ClientHello does not carry.
    """
    sni = logSafe(hello.serverName) if hello.serverName else "-"
    alpn = ",".join(logSafe(p) for p in hello.alpn) or "-"
    return f"sni={sni} alpn={alpn}"


def logSafe(text: str) -> str:
    """
    C{text} a client sent (an SNI, an ALPN name, an XMPP address) made safe
    for one field of a log line: printable ASCII stays, anything else
    (spaces, commas, backslashes, control characters, high bytes) becomes an
    escape.
    """
    if (
        text.isascii()
        and text.isprintable()
        and " " not in text
        and "," not in text
        and "\\" not in text
    ):
        # The usual case, a plain name, checked in C rather than a character
        # at a time: it is on the path of every routed ClientHello.
        return text
    return "".join(
        c if c.isascii() and c.isprintable() and c not in " ,\\" else f"\\x{ord(c):02x}"
        for c in text
    )
