"""
The C{tls} matcher: a TLS ClientHello, and optionally what it asks for.
"""

from __future__ import annotations

import re

from attrs import frozen
from zope.interface import implementer, provider

from .._clienthello import TLS_VERSIONS, ClientHello, parseClientHello
from .._errors import MatcherConfigError
from .._interfaces import (
    BOTH_TRANSPORTS,
    MATCH,
    NO_MATCH,
    IMatcher,
    IMatcherFactory,
    Verdict,
)
from .._peek import Peek
from ._options import helloNames, hostnameMatches, optionTable, stringList

_VERSIONS_BY_NAME = {name: number for number, name in TLS_VERSIONS.items()}

_JA4 = re.compile(
    r"([tqd][0-9a-z]{2}[di][0-9]{4})([0-9a-z]{2})_([0-9a-f]{12})_([0-9a-f]{12})",
    re.IGNORECASE,
)


# DTLS 1.0, 1.2 and 1.3 are TLS 1.1, 1.2 and 1.3 over datagrams: the
# version option names them the same.
_DTLS_AS_TLS = {0xFEFF: 0x0302, 0xFEFD: 0x0303, 0xFEFC: 0x0304}


def _tlsVersion(hello: ClientHello) -> int | None:
    version = hello.highestVersion
    if hello.carrier == "dtls" and version is not None:
        return _DTLS_AS_TLS.get(version, version)
    return version


def _versionName(version: int | None) -> str:
    if version is None:
        return "-"
    return TLS_VERSIONS.get(version, f"0x{version:04x}")


@implementer(IMatcher)
@frozen
class TLSMatcher:
    """
    Matches a TLS ClientHello whose fields satisfy every option given.

    Every check reads the connection's one shared parse, so any number of
    C{tls} routes cost a single parse per connection.

    @ivar sni: server name patterns (exact, or C{*.example.com}), any of
        which the SNI must match; L{None} for no constraint.
    @ivar sniRegex: a compiled pattern the whole SNI must match.
    @ivar alpn: protocol names, one of which the client must offer.
    @ivar versions: protocol version numbers, one of which must be the
        highest non-GREASE version offered.
    @ivar ech: whether an Encrypted Client Hello extension must (C{True}) or
        must not (C{False}) be offered; L{None} for no constraint.
    @ivar ja4: JA4 fingerprints (lower case but for the ALPN characters),
        one of which must be the hello's.
    @ivar noSni: match only hellos without a server name.
    """

    sni: tuple[str, ...] | None = None
    sniRegex: re.Pattern[str] | None = None
    alpn: frozenset[str] | None = None
    versions: frozenset[int] | None = None
    ech: bool | None = None
    ja4: frozenset[str] | None = None
    noSni: bool = False

    def _accepts(self, hello: ClientHello) -> bool:
        name = hello.serverName
        if self.noSni and name is not None:
            return False
        if self.sni is not None:
            if name is None or not any(hostnameMatches(p, name) for p in self.sni):
                return False
        if self.sniRegex is not None:
            if name is None or self.sniRegex.fullmatch(name) is None:
                return False
        if self.alpn is not None and self.alpn.isdisjoint(hello.alpn):
            return False
        if self.versions is not None and _tlsVersion(hello) not in self.versions:
            return False
        if self.ech is not None and hello.hasECH is not self.ech:
            return False
        if self.ja4 is not None and hello.ja4() not in self.ja4:
            return False
        return True

    def match(self, peek: Peek) -> Verdict:
        hello = peek.parse(parseClientHello)
        if not isinstance(hello, ClientHello):
            return hello
        return MATCH if self._accepts(hello) else NO_MATCH

    def describe(self, peek: Peek) -> str:
        hello = peek.parse(parseClientHello)
        if not isinstance(hello, ClientHello):
            return "tls=?"
        parts = [helloNames(hello)]
        if self.versions is not None:
            parts.append(f"version={_versionName(_tlsVersion(hello))}")
        if self.ech is not None:
            parts.append(f"ech={'yes' if hello.hasECH else 'no'}")
        if self.ja4 is not None:
            parts.append(f"ja4={hello.ja4()}")
        return " ".join(parts)


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise MatcherConfigError(f"{what} must be true or false, not {value!r}")
    return value


def _sni(value: object) -> tuple[str, ...]:
    names = stringList(value, "tls.sni")
    for name in names:
        rest = name[2:] if name.startswith("*.") else name
        if not rest.strip(".") or "*" in rest:
            raise MatcherConfigError(
                f"tls.sni {name!r} may only have a wildcard as its whole first "
                "label, as in '*.example.com'"
            )
    return names


def _sniRegex(value: object) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise MatcherConfigError(
            f"tls.sni_regex must be a non-empty string, not {value!r}"
        )
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as e:
        raise MatcherConfigError(
            f"tls.sni_regex {value!r} is not a valid regular expression: {e}"
        ) from None


def _versions(value: object) -> frozenset[int]:
    # TOML reads an unquoted 1.3 as a float; take it as the user meant it.
    if isinstance(value, float):
        value = [value]
    if isinstance(value, list | tuple):
        value = [repr(v) if isinstance(v, float) else v for v in value]
    names = stringList(value, "tls.version")
    versions = set()
    for name in names:
        if name not in _VERSIONS_BY_NAME:
            known = ", ".join(repr(n) for n in _VERSIONS_BY_NAME)
            raise MatcherConfigError(
                f"tls.version {name!r} is not a TLS version (known: {known})"
            )
        versions.add(_VERSIONS_BY_NAME[name])
    return frozenset(versions)


def _ja4(value: object) -> frozenset[str]:
    fingerprints = set()
    for fingerprint in stringList(value, "tls.ja4"):
        parts = _JA4.fullmatch(fingerprint)
        if parts is None:
            raise MatcherConfigError(
                f"tls.ja4 {fingerprint!r} is not a JA4 fingerprint (like "
                "'t13d1516h2_8daaf6152771_e5627efa2ab1')"
            )
        # Everything is lower case in JA4 but the two ALPN characters, which
        # are copied from the protocol name as they are.
        head, alpn, ciphers, extensions = parts.groups()
        fingerprints.add(f"{head.lower()}{alpn}_{ciphers.lower()}_{extensions.lower()}")
    return frozenset(fingerprints)


_OPTION_NAMES = ("sni", "sni_regex", "alpn", "version", "ech", "ja4", "no_sni")


@provider(IMatcherFactory)
class tlsFactory:
    """
    C{match.tls = {}} for any TLS ClientHello, or a table of options that
    must all hold::

        match.tls = { sni = ["example.com", "*.example.com"], alpn = ["h2"] }

    C{sni}: names or C{*.} wildcards, case-insensitive (a hello without SNI
    never matches); C{sni_regex}: a regular expression the whole SNI must
    match, case-insensitive; C{alpn}: matches if the client offers any of
    these protocols; C{version}: C{"1.2"}, C{"1.3"}... (one or a list),
    against the highest version offered; C{ech}: whether an Encrypted Client
    Hello is offered (the SNI is then the outer, public name); C{ja4}: JA4
    fingerprints; C{no_sni = true}: only hellos without SNI, as a Syncthing
    relay client sends.
    """

    name = "tls"
    transports = BOTH_TRANSPORTS
    summary = (
        "Matches a TLS ClientHello, optionally by SNI, ALPN, version, ECH or "
        "JA4 fingerprint."
    )

    @staticmethod
    def build(options: object) -> IMatcher:
        table = optionTable(options, _OPTION_NAMES)
        noSni = _bool(table["no_sni"], "tls.no_sni") if "no_sni" in table else False
        if noSni and ("sni" in table or "sni_regex" in table):
            raise MatcherConfigError(
                "tls.no_sni = true cannot be combined with tls.sni or "
                "tls.sni_regex, which need a server name"
            )
        return TLSMatcher(
            sni=_sni(table["sni"]) if "sni" in table else None,
            sniRegex=_sniRegex(table["sni_regex"]) if "sni_regex" in table else None,
            alpn=(
                frozenset(stringList(table["alpn"], "tls.alpn"))
                if "alpn" in table
                else None
            ),
            versions=_versions(table["version"]) if "version" in table else None,
            ech=_bool(table["ech"], "tls.ech") if "ech" in table else None,
            ja4=_ja4(table["ja4"]) if "ja4" in table else None,
            noSni=noSni,
        )
