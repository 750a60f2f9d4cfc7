"""
Tests of the C{http} matcher (L{demux.matchers._http}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers._http import H2_PREFACE, http2Factory, httpFactory
from demux.testing import assertConsistent

from ._matchers_basic import FILES, TLS, CorpusMixin


class HTTPTests(CorpusMixin):
    """
    The C{http} matcher.
    """

    def test_corpus(self) -> None:
        """
        curl's request is HTTP; TLS and SSH are not.
        """
        http = {"plain-http11.bin"}
        self.assertCorpus({}, httpFactory, http)
        self.assertCorpus(True, httpFactory, http)
        self.assertCorpus({"host": "discovery.example.com"}, httpFactory, http)
        self.assertCorpus({"host": ["a.example", "*.example.com"]}, httpFactory, http)
        self.assertCorpus({"host": "DISCOVERY.example.com."}, httpFactory, http)
        self.assertCorpus({"host": "*.discovery.example.com"}, httpFactory, set())
        self.assertCorpus({"path_prefix": ["/v3", "/v2/"]}, httpFactory, http)
        self.assertCorpus({"path_prefix": "/v2/?"}, httpFactory, set())
        self.assertCorpus({"methods": ["POST", "PUT"]}, httpFactory, set())
        self.assertCorpus(
            {"methods": "GET", "host": "discovery.example.com", "path_prefix": "/"},
            httpFactory,
            http,
        )

    def test_decidesEarly(self) -> None:
        """
        Not HTTP is decided on the first byte that shows it; HTTP without a
        host option on the request line, with one on the whole head.
        """
        data = FILES["plain-http11.bin"]
        plain = httpFactory.build({})
        for name in TLS:
            self.assertIs(plain.match(Peek(FILES[name][:1])), NO_MATCH, name)
        self.assertIs(plain.match(Peek(b"SSH")), NO_MATCH)
        self.assertIs(plain.match(Peek(b"GETS")), NO_MATCH)
        self.assertIs(plain.match(Peek(b"POST")), NEED_MORE)
        lineEnd = data.index(b"\n") + 1
        self.assertIs(plain.match(Peek(data[: lineEnd - 1])), NEED_MORE)
        self.assertIs(plain.match(Peek(data[:lineEnd])), MATCH)
        hosted = httpFactory.build({"host": "discovery.example.com"})
        self.assertIs(hosted.match(Peek(data[:-1])), NEED_MORE)
        self.assertIs(hosted.match(Peek(data)), MATCH)
        prefixed = httpFactory.build({"path_prefix": "/v3/"})
        self.assertIs(prefixed.match(Peek(data[:lineEnd])), NO_MATCH)

    def test_methods(self) -> None:
        """
        Only standard methods match unless others are listed.
        """
        request = b"PROPFIND /dav/ HTTP/1.1\r\n"
        self.assertIs(assertConsistent(httpFactory.build({}), request), NO_MATCH)
        dav = httpFactory.build({"methods": ["PROPFIND", "GET"]})
        self.assertIs(assertConsistent(dav, request), MATCH)
        self.assertIs(assertConsistent(dav, b"get / HTTP/1.1\r\n"), NO_MATCH)

    def test_hostForms(self) -> None:
        """
        The host comes from an absolute-form target if there is one; a port
        is ignored; a request without a host never matches a host option.
        """
        matcher = httpFactory.build({"host": "*.example.com"})
        for data, expected in [
            (b"GET http://a.example.com:80/ HTTP/1.1\r\nHost: x\r\n\r\n", MATCH),
            (b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n", MATCH),
            (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", NO_MATCH),
            (b"GET / HTTP/1.0\r\n\r\n", NO_MATCH),
            (b"GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b\r\n\r\n", NO_MATCH),
        ]:
            self.assertIs(assertConsistent(matcher, data), expected, data)
        v6 = httpFactory.build({"host": "[::1]"})
        self.assertIs(v6.match(Peek(b"GET / HTTP/1.1\r\nHost: [::1]:8\r\n\r\n")), MATCH)

    def test_h2Preface(self) -> None:
        """
        The HTTP/2 preface matches by default, not with C{h2 = false}, and
        not when a host or path is asked for.
        """
        self.assertIs(assertConsistent(httpFactory.build({}), H2_PREFACE), MATCH)
        self.assertIs(
            assertConsistent(httpFactory.build({"methods": "GET"}), H2_PREFACE), MATCH
        )
        for options in [{"h2": False}, {"host": "a"}, {"path_prefix": "/"}]:
            matcher = httpFactory.build(options)
            self.assertIs(assertConsistent(matcher, H2_PREFACE), NO_MATCH, options)
        self.assertIs(httpFactory.build({}).match(Peek(H2_PREFACE[:-1])), NEED_MORE)

    def test_priAsMethod(self) -> None:
        """
        A listed C{PRI} method is an HTTP/1.x request like any other, even
        though its first bytes look like the HTTP/2 preface.
        """
        matcher = httpFactory.build({"methods": ["PRI"]})
        self.assertIs(assertConsistent(matcher, b"PRI * HTTP/1.1\r\n"), MATCH)

    def test_describe(self) -> None:
        """
        The log says the method, the host when the head is in, and the path.
        """
        data = FILES["plain-http11.bin"]
        matcher = httpFactory.build({})
        self.assertEqual(
            matcher.describe(Peek(data)),
            "http method=GET host=discovery.example.com path=/v2/",
        )
        lineEnd = data.index(b"\n") + 1
        self.assertEqual(
            matcher.describe(Peek(data[:lineEnd])), "http method=GET path=/v2/"
        )
        self.assertEqual(matcher.describe(Peek(H2_PREFACE)), "http h2=prior-knowledge")

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        cases = [
            ({"method": "GET"}, "unknown option 'method'"),
            ({"methods": []}, "methods must be"),
            ({"methods": "GET POST"}, "not an HTTP method"),
            ({"host": "example.com:443"}, "leave out any port"),
            ({"host": "a b"}, "not a host name"),
            ({"host": ""}, "host must be"),
            ({"path_prefix": "v2/"}, "must start with /"),
            ({"h2": "yes"}, "h2 must be true or false"),
            ({"h2": True, "host": "a"}, "h2 cannot be true"),
            ("GET", "expected a table"),
        ]
        for options, words in cases:
            self.assertBuildFails(httpFactory, options, words)


class HTTP2Tests(CorpusMixin):
    """
    The C{http2} matcher.
    """

    def test_corpus(self) -> None:
        """
        No corpus file is HTTP/2 with prior knowledge; the preface is.
        """
        self.assertCorpus({}, http2Factory, set())
        matcher = http2Factory.build(True)
        self.assertIs(assertConsistent(matcher, H2_PREFACE + b"\x00\x00"), MATCH)
        self.assertIs(matcher.match(Peek(b"PRI * HTTP/1.1")), NO_MATCH)
        self.assertEqual(matcher.describe(Peek(H2_PREFACE)), "http2 h2=prior-knowledge")

    def test_configErrors(self) -> None:
        """
        It takes no options.
        """
        self.assertBuildFails(http2Factory, {"h2": True}, "takes no options")
