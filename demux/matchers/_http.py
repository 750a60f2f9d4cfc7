"""
The C{http} and C{http2} matchers: cleartext HTTP/1.x requests, and HTTP/2
with prior knowledge (h2c).

Both read as little as they can: a connection that is not HTTP is refused on
its first byte that shows it, a request is recognised from its request line,
and only a C{host} option makes the matcher wait for the whole request head.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._httphead import RequestHead, RequestLine, parseRequestHead, parseRequestLine
from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import boolean, hostnameMatches, noOptions, optionTable, stringList

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""
What an HTTP/2 client with prior knowledge sends first (RFC 9113 section
3.4).
"""

STANDARD_METHODS = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
)
"""
The methods the C{http} matcher accepts unless told others: those of RFC 9110
and C{PATCH}.  Other methods (WebDAV's C{PROPFIND}, ...) match only when
listed, so that a protocol whose first word happens to be a token is not
taken for HTTP.
"""

_STANDARD = tuple(m.encode("ascii") for m in STANDARD_METHODS)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST_NAME = re.compile(
    r"(\*\.)?[A-Za-z0-9\-_~%!$&'()+,;=]+(\.[A-Za-z0-9\-_~%!$&'()+,;=]+)*\.?"
)
_PATH_PREFIX = re.compile(r"/[\x21-\x7e]*|\*")
_DESCRIBE_PATH = 64


def _prefaceVerdict(data: bytes) -> Verdict:
    """
    L{MATCH} if C{data} starts with the HTTP/2 preface, L{NEED_MORE} while it
    is a prefix of it, L{NO_MATCH} otherwise.
    """
    if data.startswith(H2_PREFACE):
        return MATCH
    if H2_PREFACE.startswith(data):
        return NEED_MORE
    return NO_MATCH


@implementer(IMatcher)
@frozen
class HTTPMatcher:
    """
    Matches an HTTP/1.x request whose method is one of C{methods} (and whose
    host and path fit, if given), and, when C{h2}, the HTTP/2 prior-knowledge
    preface.

    @ivar methods: the accepted methods, case-sensitive.
    @ivar hosts: host patterns for L{hostnameMatches}, or C{()} for any host.
    @ivar pathPrefixes: prefixes of the target's path, or C{()} for any.
    @ivar h2: whether the HTTP/2 preface matches too.
    """

    methods: tuple[bytes, ...] = _STANDARD
    hosts: tuple[str, ...] = ()
    pathPrefixes: tuple[str, ...] = ()
    h2: bool = True

    def _methodVerdict(self, data: bytes) -> Verdict:
        """
        L{NO_MATCH} as soon as C{data} cannot start with one of our methods
        and a space; else L{NEED_MORE} (it is not the whole story).
        """
        for method in self.methods:
            word = method + b" "
            if word.startswith(data[: len(word)]):
                return NEED_MORE
        return NO_MATCH

    def match(self, peek: Peek) -> Verdict:
        data = peek.data
        if self.h2:
            preface = _prefaceVerdict(data)
            if preface is not NO_MATCH:
                return preface
        if self._methodVerdict(data) is NO_MATCH:
            return NO_MATCH
        line = peek.parse(parseRequestLine)
        if not isinstance(line, RequestLine):
            return line
        if self.pathPrefixes and not any(
            line.path.startswith(prefix) for prefix in self.pathPrefixes
        ):
            return NO_MATCH
        if self.hosts:
            head = peek.parse(parseRequestHead)
            if not isinstance(head, RequestHead):
                return head
            host = head.host
            if host is None or not any(
                hostnameMatches(pattern, host) for pattern in self.hosts
            ):
                return NO_MATCH
        return MATCH

    def describe(self, peek: Peek) -> str:
        line = peek.parse(parseRequestLine)
        if not isinstance(line, RequestLine):
            return "http h2=prior-knowledge"
        text = f"http method={line.method}"
        head = peek.parse(parseRequestHead)
        if isinstance(head, RequestHead) and head.host is not None:
            text += f" host={head.host}"
        path = line.path
        if len(path) > _DESCRIBE_PATH:
            path = path[:_DESCRIBE_PATH] + "..."
        return f"{text} path={path}"


@implementer(IMatcher)
@frozen
class HTTP2Matcher:
    """
    Matches the HTTP/2 prior-knowledge preface, and nothing else: cleartext
    HTTP/2 (h2c) without an HTTP/1.1 upgrade.
    """

    def match(self, peek: Peek) -> Verdict:
        return _prefaceVerdict(peek.data)

    def describe(self, peek: Peek) -> str:
        return "http2 h2=prior-knowledge"


def _methods(value: object) -> tuple[bytes, ...]:
    methods = stringList(value, "methods")
    for method in methods:
        if _TOKEN.fullmatch(method) is None:
            raise MatcherConfigError(
                f"methods: {method!r} is not an HTTP method (a token such as GET)"
            )
    return tuple(m.encode("ascii") for m in methods)


def _hosts(value: object) -> tuple[str, ...]:
    hosts = stringList(value, "host")
    patterns = []
    for host in hosts:
        if ":" in host or host.startswith("["):
            try:
                address = ipaddress.IPv6Address(
                    host.removeprefix("[").removesuffix("]")
                )
            except ValueError:
                address = None
            if address is not None:
                patterns.append(host.removeprefix("[").removesuffix("]").lower())
                continue
        elif _HOST_NAME.fullmatch(host) is not None:
            patterns.append(host.lower())
            continue
        raise MatcherConfigError(
            f"host: {host!r} is not a host name, an address or a "
            "*.domain wildcard (leave out any port)"
        )
    return tuple(patterns)


def _pathPrefixes(value: object) -> tuple[str, ...]:
    prefixes = stringList(value, "path_prefix")
    for prefix in prefixes:
        if _PATH_PREFIX.fullmatch(prefix) is None:
            raise MatcherConfigError(
                f"path_prefix: {prefix!r} must start with / and contain no "
                "spaces or control characters"
            )
    return prefixes


@provider(IMatcherFactory)
class httpFactory:
    """
    C{match.http = {}} for any HTTP/1.x request (or HTTP/2 preface), or a
    table of C{methods}, C{host}, C{path_prefix} and C{h2}.

    The HTTP/2 preface carries neither host nor path (they come later, in
    compressed frames), so C{h2} defaults to true only when neither C{host}
    nor C{path_prefix} is given, and setting it true with either is an
    error.  C{methods} leaves it alone: write C{h2 = false} to refuse HTTP/2.
    """

    name = "http"
    summary = (
        "Matches cleartext HTTP/1.x requests (by method, host, path prefix) "
        "and the HTTP/2 prior-knowledge preface."
    )

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(
            options, ("methods", "host", "path_prefix", "h2")
        )
        methods = _methods(table["methods"]) if "methods" in table else _STANDARD
        hosts = _hosts(table["host"]) if "host" in table else ()
        prefixes = _pathPrefixes(table["path_prefix"]) if "path_prefix" in table else ()
        filtered = "host" in table or "path_prefix" in table
        if "h2" in table:
            h2 = boolean(table["h2"], "h2")
            if h2 and filtered:
                raise MatcherConfigError(
                    "h2 cannot be true with host or path_prefix: the HTTP/2 "
                    "preface carries neither; use a separate route"
                )
        else:
            h2 = not filtered
        return HTTPMatcher(methods, hosts, prefixes, h2)


@provider(IMatcherFactory)
class http2Factory:
    """
    C{match.http2 = {}}: the HTTP/2 prior-knowledge preface.
    """

    name = "http2"
    summary = "Matches cleartext HTTP/2 with prior knowledge (the h2c preface)."

    @staticmethod
    def build(options: object) -> IMatcher:
        noOptions(options)
        return HTTP2Matcher()
