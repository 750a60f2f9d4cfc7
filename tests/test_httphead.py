"""
Tests for L{demux._httphead}, the shared HTTP/1.x request-head parser.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux._httphead import (
    MAX_HEAD,
    RequestHead,
    RequestLine,
    parseRequestHead,
    parseRequestLine,
)
from demux._interfaces import NEED_MORE, NO_MATCH
from demux._peek import Peek

CORPUS = Path(__file__).parent / "corpus"

_TCHARS = (
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
tokens = st.text(alphabet=_TCHARS, min_size=1, max_size=12)
targets = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40
).map(lambda s: "/" + s)
# A field value: no blanks at either end (the parser strips them), none of
# CR, LF or other controls inside.
values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF).filter(
        lambda c: c != "\x7f"
    ),
    max_size=30,
).map(lambda s: s.strip(" "))
headerNames = tokens.filter(lambda n: n.lower() != "host")


@st.composite
def requests(draw: st.DrawFn) -> tuple[RequestHead, bytes, bool]:
    """
    A valid request head, its bytes, and whether it uses bare LFs.
    """
    method = draw(tokens)
    target = draw(targets)
    version = draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
    headers = draw(st.lists(st.tuples(headerNames, values), max_size=6))
    host = draw(
        st.none()
        | st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}", fullmatch=True)
    )
    if host is not None:
        headers.insert(draw(st.integers(0, len(headers))), ("Host", host))
    bareLF = draw(st.booleans())
    eol = b"\n" if bareLF else b"\r\n"
    lines = [f"{method} {target} {version}".encode("ascii")]
    for name, value in headers:
        blank = draw(st.sampled_from(["", " ", "\t "]))
        lines.append(f"{name}:{blank}{value}{blank}".encode("iso-8859-1"))
    data = eol.join(lines) + eol + eol
    head = RequestHead(
        method, target, version, tuple((n.lower(), v) for n, v in headers)
    )
    return head, data, bareLF


def feed(data: bytes, cuts: list[int]) -> tuple[object, ...]:
    """
    Parse C{data} arriving in pieces cut at C{cuts}, as a connection would
    see it; return the result after each piece.
    """
    peek = Peek()
    results = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        peek = peek.extended(data[start:cut])
        start = cut
        results.append(peek.parse(parseRequestHead))
    return tuple(results)


class RequestHeadTests(SynchronousTestCase):
    """
    L{parseRequestHead} on real and hand-made requests.
    """

    def test_corpus(self) -> None:
        """
        curl's request parses with its method, target, headers, host
        (without the port) and path (without the query).
        """
        data = (CORPUS / "plain-http11.bin").read_bytes()
        head = parseRequestHead(data)
        assert isinstance(head, RequestHead)
        self.assertEqual(
            (head.method, head.target, head.version),
            ("GET", "/v2/?device=x", "HTTP/1.1"),
        )
        self.assertEqual(
            head.headers,
            (
                ("host", "discovery.example.com:19555"),
                ("user-agent", "curl/7.88.1"),
                ("accept", "*/*"),
            ),
        )
        self.assertEqual(head.host, "discovery.example.com")
        self.assertEqual(head.path, "/v2/")
        self.assertEqual(head.header("User-Agent"), "curl/7.88.1")

    def test_corpusPrefixesNeedMore(self) -> None:
        """
        Every proper prefix of a valid request is L{NEED_MORE}.
        """
        data = (CORPUS / "plain-http11.bin").read_bytes()
        for n in range(len(data)):
            self.assertIs(parseRequestHead(data[:n]), NEED_MORE, n)

    def test_body(self) -> None:
        """
        Bytes after the empty line are not the head's business.
        """
        head = parseRequestHead(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n\x00\xff")
        assert isinstance(head, RequestHead)
        self.assertEqual(head.headers, (("host", "a"),))

    def test_absoluteForm(self) -> None:
        """
        An absolute-form target's host wins over the Host header (RFC 9112
        3.2.2), and its path is the URL's.
        """
        head = parseRequestHead(
            b"GET http://User@Proxy.Example:8080/a/b?c HTTP/1.1\r\n"
            b"Host: other.example\r\n\r\n"
        )
        assert isinstance(head, RequestHead)
        self.assertEqual(head.host, "proxy.example")
        self.assertEqual(head.path, "/a/b")
        bare = parseRequestHead(b"GET http://h.example HTTP/1.1\r\n\r\n")
        assert isinstance(bare, RequestHead)
        self.assertEqual(bare.path, "/")

    def test_otherForms(self) -> None:
        """
        CONNECT's authority-form names the host and no path; C{OPTIONS *}
        has the path C{*}; an IPv6 literal loses its brackets.
        """
        connect = parseRequestHead(b"CONNECT Example.com:443 HTTP/1.1\r\n\r\n")
        assert isinstance(connect, RequestHead)
        self.assertEqual((connect.host, connect.path), ("example.com", ""))
        star = parseRequestHead(b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
        assert isinstance(star, RequestHead)
        self.assertEqual((star.host, star.path), ("::1", "*"))

    def test_noHost(self) -> None:
        """
        Without a Host header, or with a malformed one, there is no host.
        """
        for data in [
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n",
        ]:
            head = parseRequestHead(data)
            assert isinstance(head, RequestHead), data
            self.assertIsNone(head.host, data)

    def test_bareLF(self) -> None:
        """
        Lines may end in a bare LF (RFC 9112 section 2.2).
        """
        head = parseRequestHead(b"GET / HTTP/1.1\nHost: a\n\n")
        assert isinstance(head, RequestHead)
        self.assertEqual(head.host, "a")

    def test_malformed(self) -> None:
        """
        What a server must or may reject is L{NO_MATCH}, decided on the
        first byte that shows it.
        """
        for data in [
            b"\x16\x03\x01",
            b"GET  / HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"GET / HTTP/1.1\rX",
            b"GET /\x01",
            b"GET / HTTP/1.1\r\nName : v\r\n",
            b"GET / HTTP/1.1\r\n folded\r\n",
            b"GET / HTTP/1.1\r\nName: a\x00",
            b"GET / HTTP/1.1\r\nName: a\rb",
            b"GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n",
        ]:
            self.assertIs(parseRequestHead(data), NO_MATCH, data)

    def test_tooLong(self) -> None:
        """
        A head that has not ended within L{MAX_HEAD} bytes is L{NO_MATCH};
        one that ends exactly there is fine.
        """
        start = b"GET / HTTP/1.1\r\nX: "
        end = b"\r\n\r\n"
        fits = start + b"a" * (MAX_HEAD - len(start) - len(end)) + end
        self.assertIsInstance(parseRequestHead(fits), RequestHead)
        over = start + b"a" * (MAX_HEAD - len(start) - len(end) + 1) + end
        self.assertIs(parseRequestHead(over), NO_MATCH)
        self.assertIs(parseRequestHead(b"GET /" + b"a" * MAX_HEAD), NO_MATCH)
        self.assertIs(parseRequestHead(b"GET /" + b"a" * (MAX_HEAD - 6)), NEED_MORE)


class RequestLineTests(SynchronousTestCase):
    """
    L{parseRequestLine} needs only the first line.
    """

    def test_line(self) -> None:
        """
        The line is parsed as soon as its end is in, whatever follows.
        """
        line = parseRequestLine(b"PROPFIND /dav/x?y HTTP/1.1\r\nDepth")
        self.assertEqual(line, RequestLine("PROPFIND", "/dav/x?y", "HTTP/1.1"))
        assert isinstance(line, RequestLine)
        self.assertEqual((line.path, line.targetHost), ("/dav/x", None))
        self.assertIs(parseRequestLine(b"PROPFIND /dav/x?y HTTP/1.1\r"), NEED_MORE)

    def test_targetHost(self) -> None:
        """
        An absolute-form target names a host in the line itself.
        """
        line = parseRequestLine(b"GET http://[::1]:8/ HTTP/1.0\n")
        assert isinstance(line, RequestLine)
        self.assertEqual(line.targetHost, "::1")


class PropertyTests(SynchronousTestCase):
    """
    Properties of the parser over generated input.
    """

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_randomBytes(self, data: bytes) -> None:
        """
        Random bytes never raise, and the answer never changes once given.
        """
        decided: object = None
        for n in range(len(data) + 1):
            result = parseRequestHead(data[:n])
            line = parseRequestLine(data[:n])
            self.assertIsInstance(result, RequestHead | type(NEED_MORE))
            if decided is not None:
                self.assertEqual(result, decided)
            elif result is not NEED_MORE:
                decided = result
            if result is NO_MATCH or isinstance(result, RequestHead):
                self.assertIsNot(line, NEED_MORE)

    @settings(max_examples=300, deadline=None)
    @given(requests(), st.data())
    def test_generatedRequests(
        self, request: tuple[RequestHead, bytes, bool], data: st.DataObject
    ) -> None:
        """
        A valid request parses to what was generated, however it is cut, and
        is L{NEED_MORE} until its last byte.
        """
        expected, raw, _ = request
        cuts = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=6))
        results = feed(raw, cuts)
        self.assertEqual(results[-1], expected)
        for result in results[:-1]:
            self.assertIs(result, NEED_MORE)
        host = dict(expected.headers).get("host")
        final = results[-1]
        assert isinstance(final, RequestHead)
        self.assertEqual(final.host, host)
