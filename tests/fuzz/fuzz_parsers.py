"""
A coverage-guided fuzz target for the ClientHello parser and every installed
matcher.

Run it from the project root, after C{pip install atheris}::

    python tests/fuzz/fuzz_parsers.py -runs=1000000

To start from the real first flights, give libFuzzer a scratch copy of the
corpus (it writes the inputs it finds into the first directory named)::

    cp -r tests/corpus /tmp/demux-fuzz
    python tests/fuzz/fuzz_parsers.py /tmp/demux-fuzz -runs=1000000

What it checks, for any bytes: the parser returns a L{ClientHello},
C{NEED_MORE} or C{NO_MATCH} and never raises (and a hello's JA4 can be
computed); every matcher gives a L{Verdict}, gives the same verdict when the
bytes arrive in two reads cut anywhere as when they arrive at once, and can
describe what it matched.  The name does not start with C{test_}, so pytest
leaves it alone.
"""

from __future__ import annotations

import sys
import zlib

import atheris  # type: ignore

with atheris.instrument_imports():
    from demux._clienthello import ClientHello, parseClientHello
    from demux._errors import MatcherConfigError
    from demux._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, Verdict
    from demux._peek import Peek
    from demux._plugins import matcherFactories
    from demux.testing import verdictOf

# Option sets tried for every factory that accepts them, so that matchers
# with options get their option-checking paths fuzzed too.
_OPTION_SETS: list[object] = [
    True,
    {},
    {"sni": ["*.example.com", "discovery.example.com"]},
    {"alpn": ["h2", "bep-relay"], "version": ["1.2", "1.3"]},
    {"no_sni": True, "ech": False},
    {"sni_regex": r".*\.example\.(com|net)"},
    {"ja4": ["t13d1516h2_8daaf6152771_e5627efa2ab1"]},
]


def _matchers() -> list[IMatcher]:
    """
    Every matcher that every installed factory builds from one of the
    option sets above.
    """
    matchers = []
    for factory in matcherFactories().values():
        for options in _OPTION_SETS:
            try:
                matchers.append(factory.build(options))
            except MatcherConfigError:
                pass
    return matchers


with atheris.instrument_imports():
    # Loading the plugins imports their modules: instrument them too.
    MATCHERS = _matchers()


def TestOneInput(data: bytes) -> None:
    """
    One fuzz input, also fed in two reads cut at a place chosen from its
    checksum (not from its bytes, so that real first flights stay intact as
    seeds).
    """
    cut = zlib.crc32(data) % (len(data) + 1)

    hello = parseClientHello(data)
    if isinstance(hello, ClientHello):
        hello.ja4()
    elif hello is not NEED_MORE and hello is not NO_MATCH:
        raise AssertionError(f"parseClientHello returned {hello!r}")

    for matcher in MATCHERS:
        peek = Peek(data)
        whole = matcher.match(peek)
        if not isinstance(whole, Verdict):
            raise AssertionError(f"{matcher!r} returned {whole!r}")
        split = verdictOf(matcher, [data[:cut], data[cut:]])
        if split is not whole:
            raise AssertionError(
                f"{matcher!r}: {whole.value} whole but {split.value} cut at {cut}"
            )
        if whole is MATCH and not isinstance(matcher.describe(peek), str):
            raise AssertionError(f"{matcher!r}.describe did not return a str")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
