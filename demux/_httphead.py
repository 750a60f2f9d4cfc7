"""
The one HTTP/1.x request-head parser every matcher of a connection shares.

The parsers here are pure functions of the bytes seen so far, meant to be run
through L{demux.Peek.parse}: they answer L{NEED_MORE} while the bytes are a
prefix of a valid request head, L{NO_MATCH} as soon as they cannot be one, and
a parsed value once the request line (or the whole head) is in.  They follow
RFC 9112 strictly where leniency would let two parties read one request two
ways (a router that sees another host than the backend does is a security
hole): no whitespace before a header's colon, no obsolete line folding, no
control characters, at most one C{Host} header.  A line may end in a bare LF,
which RFC 9112 section 2.2 allows a recipient to accept.
"""

from __future__ import annotations

import re

from attrs import frozen

from ._verdict import NEED_MORE, NO_MATCH, Verdict

MAX_HEAD = 8 * 1024
"""
The most bytes a request head (request line, headers and the empty line that
ends them) may take; a longer one is L{NO_MATCH}, as a server would refuse it.
"""

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_REQUEST_LINE = re.compile(
    rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) (HTTP/1\.[0-9])\r?\n"
)
_PARTIAL_VERSION = re.compile(rb"H(T(T(P(/(1(\.([0-9]\r?)?)?)?)?)?)?)?")
_TOKEN = re.compile(rb"[" + _TCHAR + rb"]*")
_FIELD_VALUE = re.compile(rb"[\t \x21-\x7e\x80-\xff]*")
_HEADER_LINE = re.compile(rb"([" + _TCHAR + rb"]+):([\t \x21-\x7e\x80-\xff]*)\r?\n")
_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.DOTALL)
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=]+")
_IP_LITERAL = re.compile(
    r"\[([0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
)
_PORT = re.compile(r"[0-9]*")


def _hostOf(authority: str) -> str | None:
    """
    The host of an URI authority (C{userinfo@host:port}), lowercased and
    without the brackets of an IP literal, or L{None} if there is none or it
    is not well-formed.
    """
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        literal = _IP_LITERAL.match(authority)
        if literal is None:
            return None
        host, rest = literal.group(1), authority[literal.end() :]
    else:
        colon = authority.find(":")
        if colon == -1:
            host, rest = authority, ""
        else:
            host, rest = authority[:colon], authority[colon:]
        if _REG_NAME.fullmatch(host) is None:
            return None
    if rest and (not rest.startswith(":") or _PORT.fullmatch(rest[1:]) is None):
        return None
    return host.lower() or None


def _targetParts(target: str) -> tuple[str | None, str]:
    """
    The authority (L{None} for origin-form and C{*}) and the path of a
    request target in any of the four forms of RFC 9112 section 3.2.
    """
    if target.startswith("/"):
        return None, target.partition("?")[0]
    if target == "*":
        return None, "*"
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is not None:
        path = absolute.group(3).partition("?")[0].partition("#")[0]
        return absolute.group(2), path or "/"
    # authority-form, as CONNECT uses: host:port and no path at all.
    return target, ""


@frozen
class RequestLine:
    """
    The first line of an HTTP/1.x request, which is all some matchers need.

    @ivar method: the method, case-sensitive as HTTP says (C{"GET"}).
    @ivar target: the request target exactly as sent, not normalised.
    @ivar version: C{"HTTP/1.0"} or C{"HTTP/1.1"} (or another C{HTTP/1.x}).
    """

    method: str
    target: str
    version: str

    @property
    def path(self) -> str:
        """
        The target's path without its query, as sent (percent-escapes are
        not decoded, so a prefix is compared with what the backend gets):
        C{"*"} for C{OPTIONS *} and C{""} for an authority-form target.
        """
        return _targetParts(self.target)[1]

    @property
    def targetHost(self) -> str | None:
        """
        The host named by an absolute-form or authority-form target,
        lowercased and without its port, or L{None}.
        """
        authority = _targetParts(self.target)[0]
        return None if authority is None else _hostOf(authority)


@frozen
class RequestHead:
    """
    An HTTP/1.x request's line and headers, up to the empty line ending them.

    @ivar method: the method, case-sensitive (C{"GET"}).
    @ivar target: the request target exactly as sent.
    @ivar version: C{"HTTP/1.1"} and the like.
    @ivar headers: C{(name, value)} pairs in the order sent, names lowercased,
        values decoded as ISO-8859-1 with surrounding blanks removed.
    """

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """
        The value of the first header called C{name} (any case), if any.
        """
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def host(self) -> str | None:
        """
        The host the request is for, lowercased and without a port: the one
        an absolute-form target names (which RFC 9112 section 3.2.2 says wins
        over the header), else the C{Host} header's; L{None} if neither names
        a well-formed host.
        """
        authority = _targetParts(self.target)[0]
        if authority is None:
            authority = self.header("host")
        if authority is None:
            return None
        return _hostOf(authority)

    @property
    def path(self) -> str:
        """
        The target's path without its query, as sent; see L{RequestLine.path}.
        """
        return _targetParts(self.target)[1]


def _partialLineOk(partial: bytes) -> bool:
    """
    Whether C{partial}, a request line without its end, could still become a
    valid one.
    """
    parts = partial.split(b" ")
    if len(parts) > 3:
        return False
    if _TOKEN.fullmatch(parts[0]) is None or (len(parts) > 1 and not parts[0]):
        return False
    if len(parts) > 1:
        target = parts[1]
        if (len(parts) > 2 and not target) or re.fullmatch(
            rb"[\x21-\x7e]*", target
        ) is None:
            return False
    if len(parts) > 2 and parts[2] and _PARTIAL_VERSION.fullmatch(parts[2]) is None:
        return False
    return True


def _requestLine(data: bytes) -> tuple[RequestLine, int] | Verdict:
    window = data[:MAX_HEAD]
    line = _REQUEST_LINE.match(window)
    if line is not None:
        method, target, version = (g.decode("ascii") for g in line.groups())
        return RequestLine(method, target, version), line.end()
    end = window.find(b"\n")
    if end != -1 or len(data) >= MAX_HEAD or not _partialLineOk(window):
        return NO_MATCH
    return NEED_MORE


def parseRequestLine(data: bytes) -> RequestLine | Verdict:
    """
    The request line at the start of C{data}.

    @return: the L{RequestLine} once its line end is in; L{NEED_MORE} while
        C{data} could still start a valid one; L{NO_MATCH} once it cannot
        (a byte that is out of place, a version other than C{HTTP/1.x}, or
        no line end within L{MAX_HEAD} bytes).
    """
    result = _requestLine(data)
    if isinstance(result, tuple):
        return result[0]
    return result


def _partialHeaderOk(partial: bytes) -> bool:
    """
    Whether C{partial}, a header line (or the empty line) without its LF,
    could still become a valid one.
    """
    if partial == b"\r":
        return True
    name, colon, value = partial.partition(b":")
    if not colon:
        return _TOKEN.fullmatch(name) is not None
    if not name or _TOKEN.fullmatch(name) is None:
        return False
    if value.endswith(b"\r"):
        value = value[:-1]
    return _FIELD_VALUE.fullmatch(value) is not None


def parseRequestHead(data: bytes) -> RequestHead | Verdict:
    """
    The request head at the start of C{data}: the request line and the
    headers, up to the empty line that ends them (any body is ignored).

    @return: the L{RequestHead} once the empty line is in; L{NEED_MORE} while
        C{data} could still start a valid head; L{NO_MATCH} as soon as it
        cannot (see L{parseRequestLine}, plus a malformed header line, an
        obsolete folded line, two C{Host} headers, or no end within
        L{MAX_HEAD} bytes).
    """
    first = _requestLine(data)
    if not isinstance(first, tuple):
        return first
    line, position = first
    window = data[:MAX_HEAD]
    headers: list[tuple[str, str]] = []
    while True:
        end = window.find(b"\n", position)
        if end == -1:
            if len(data) >= MAX_HEAD or not _partialHeaderOk(window[position:]):
                return NO_MATCH
            return NEED_MORE
        if window[position:end] in (b"", b"\r"):
            break
        header = _HEADER_LINE.match(window, position)
        if header is None or header.end() != end + 1:
            return NO_MATCH
        name = header.group(1).decode("ascii").lower()
        value = header.group(2).strip(b" \t").decode("iso-8859-1")
        headers.append((name, value))
        position = end + 1
    if sum(1 for name, _ in headers if name == "host") > 1:
        return NO_MATCH
    return RequestHead(line.method, line.target, line.version, tuple(headers))
