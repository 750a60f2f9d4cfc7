"""
Tests for the C{prefix}, C{http}, C{http2}, C{ssh} and C{regex} matchers.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcherFactory
from demux._peek import Peek
from demux._plugins import matcherFactories
from demux.matchers._http import H2_PREFACE, http2Factory, httpFactory
from demux.matchers._options import logSafe
from demux.matchers._prefix import prefixFactory
from demux.matchers._regex import regexFactory
from demux.matchers._ssh import parseIdentification, sshFactory
from demux.testing import assertConsistent

from ._corpus import CORPUS, MatcherTestCase

# The first flights these matchers were written against; every matcher meets
# every corpus file, later captures included, in test_crosscheck.
ORIGINAL = {
    "chromium-sni-alpn-pq.bin",
    "curl-sni-alpn.bin",
    "openssl-nosni-alpn-bep-relay.bin",
    "openssl-sni-alpn-h2.bin",
    "openssl-split-records.bin",
    "openssl-tls12-sni.bin",
    "plain-http11.bin",
    "python-ssl-sni-alpn.bin",
    "ssh-banner.bin",
}
FILES = {name: (CORPUS / name).read_bytes() for name in sorted(ORIGINAL)}
TLS = {name for name in FILES if name not in ("plain-http11.bin", "ssh-banner.bin")}
RELAY = bytes.fromhex("9e79bc40") + b"\x00\x00\x00\x02\x00\x00\x00\x00"


class CorpusMixin(MatcherTestCase):
    """
    The corpus checks, over the first flights these matchers were written
    against.
    """

    files = FILES

    def assertCorpus(  # type: ignore[override]
        self, options: object, factory: object, matches: set[str]
    ) -> None:
        MatcherTestCase.assertCorpus(self, factory, options, matches)

class RegistrationTests(SynchronousTestCase):
    """
    The matchers are plugins like any other.
    """

    def test_entryPoints(self) -> None:
        """
        Each factory is found by its name and provides L{IMatcherFactory}.
        """
        factories = matcherFactories()
        for name, factory in [
            ("prefix", prefixFactory),
            ("http", httpFactory),
            ("http2", http2Factory),
            ("ssh", sshFactory),
            ("regex", regexFactory),
        ]:
            self.assertTrue(verifyObject(IMatcherFactory, factory))
            self.assertIs(factories[name], factory)
            self.assertEqual(factories[name].name, name)


class PrefixTests(CorpusMixin):
    """
    The C{prefix} matcher.
    """

    def test_corpus(self) -> None:
        """
        Syncthing's relay magic is in no corpus file; C{GET } and C{SSH-}
        are in one each.
        """
        self.assertCorpus("9e79bc40", prefixFactory, set())
        self.assertCorpus({"text": "GET "}, prefixFactory, {"plain-http11.bin"})
        self.assertCorpus({"hex": "53 53 48 2d"}, prefixFactory, {"ssh-banner.bin"})
        self.assertCorpus({"hex": "16 03", "mask": "ff fc"}, prefixFactory, TLS)

    def test_magic(self) -> None:
        """
        The hex forms all mean the same bytes, and the answer needs only
        those bytes.
        """
        for written in ["9e79bc40", "9E 79 BC 40", "9e:79:bc:40", {"hex": "9e79bc40"}]:
            matcher = prefixFactory.build(written)
            self.assertIs(assertConsistent(matcher, RELAY), MATCH, written)
            self.assertIs(matcher.match(Peek(RELAY[:4])), MATCH)
            self.assertIs(matcher.match(Peek(RELAY[:3])), NEED_MORE)
            self.assertEqual(matcher.describe(Peek(RELAY)), "prefix=9e79bc40")

    def test_earlyNoMatch(self) -> None:
        """
        The first byte that differs decides.
        """
        matcher = prefixFactory.build("9e79bc40")
        self.assertIs(matcher.match(Peek(b"\x9e\x78")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x16")), NO_MATCH)

    def test_offsetAndMask(self) -> None:
        """
        With an offset the window starts later; a mask compares only its
        bits, on both sides.
        """
        matcher = prefixFactory.build({"hex": "0002", "offset": 6, "mask": "00ff"})
        self.assertIs(assertConsistent(matcher, RELAY), MATCH)
        self.assertIs(matcher.match(Peek(RELAY[:7])), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"\x00" * 6 + b"\xff\x03")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x00" * 6 + b"\xff\x02")), MATCH)
        self.assertEqual(matcher.describe(Peek(RELAY)), "prefix=0002/00ff@6")
        masked = prefixFactory.build({"hex": "ff", "mask": "0f"})
        self.assertIs(masked.match(Peek(b"\x3f")), MATCH)

    def test_text(self) -> None:
        """
        C{text} is UTF-8.
        """
        matcher = prefixFactory.build({"text": "é"})
        self.assertIs(matcher.match(Peek(b"\xc3\xa9")), MATCH)

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        cases = [
            ("9e7", "two hex digits"),
            ("9e 7 9b", "two hex digits"),
            ("zz", "hex digits"),
            ("", "two hex digits"),
            (12, "expected a table"),
            ({"hex": "ab", "text": "a"}, "exactly one of hex"),
            ({}, "exactly one of hex"),
            ({"text": ""}, "non-empty string"),
            ({"hex": "abcd", "mask": "ff"}, "same length"),
            ({"hex": "ab", "offset": -1}, "offset must be"),
            ({"hex": "ab", "offset": True}, "offset must be"),
            ({"hex": "ab", "length": 3}, "unknown option 'length'"),
        ]
        for options, words in cases:
            self.assertBuildFails(prefixFactory, options, words)


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


class SSHTests(CorpusMixin):
    """
    The C{ssh} matcher.
    """

    def test_corpus(self) -> None:
        """
        OpenSSH's banner is SSH; nothing else in the corpus is.
        """
        ssh = {"ssh-banner.bin"}
        self.assertCorpus({}, sshFactory, ssh)
        self.assertCorpus({"software": "OpenSSH"}, sshFactory, ssh)
        self.assertCorpus({"software": ["PuTTY", "OpenSSH_9."]}, sshFactory, ssh)
        self.assertCorpus({"software": "OpenSSH_8"}, sshFactory, set())
        self.assertCorpus({"software": "OpenSSH_9.2p1X"}, sshFactory, set())

    def test_decidesEarly(self) -> None:
        """
        Without C{software} four bytes decide; with it, the software version
        decides a mismatch as soon as it shows, a match at the line end.
        """
        data = FILES["ssh-banner.bin"]
        plain = sshFactory.build({})
        self.assertIs(plain.match(Peek(b"SSH")), NEED_MORE)
        self.assertIs(plain.match(Peek(b"SSH-")), MATCH)
        self.assertIs(plain.match(Peek(b"SSX")), NO_MATCH)
        picky = sshFactory.build({"software": "OpenSSH"})
        self.assertIs(picky.match(Peek(data[:-1])), NEED_MORE)
        self.assertIs(picky.match(Peek(b"SSH-2.0-Ope")), NEED_MORE)
        self.assertIs(picky.match(Peek(b"SSH-2.0-Opx")), NO_MATCH)
        self.assertIs(picky.match(Peek(b"SSH-3")), NO_MATCH)
        self.assertIs(picky.match(Peek(b"SSH-2.0-OpenSSH ")), NEED_MORE)
        self.assertIs(picky.match(Peek(b"SSH-2.0-Open ")), NO_MATCH)

    def test_identification(self) -> None:
        """
        The protocol, software and comments are parsed from the first line;
        1.99 is accepted, a bare LF ends the line, and a line longer than
        255 bytes or a malformed one is not SSH.
        """
        found = parseIdentification(FILES["ssh-banner.bin"])
        self.assertEqual(
            (found.protocol, found.software, found.comments),  # type: ignore[union-attr]
            ("2.0", "OpenSSH_9.2p1", "Debian-2+deb12u10"),
        )
        picky = sshFactory.build({"software": "x"})
        for data, expected in [
            (b"SSH-1.99-x\n", MATCH),
            (b"SSH-2.0-x y z\r\n", MATCH),
            (b"SSH-1.5-x\r\n", NO_MATCH),
            (b"SSH-2.0-\r\n", NO_MATCH),
            (b"SSH-2.0-x\x01\r\n", NO_MATCH),
            (b"SSH-2.0-x " + b"c" * 250 + b"\r\n", NO_MATCH),
            (b"SSH-2.0-x " + b"c" * 243 + b"\r\n", MATCH),
        ]:
            self.assertIs(assertConsistent(picky, data), expected, data)

    def test_describe(self) -> None:
        """
        The log names the client's software once its line is in.
        """
        data = FILES["ssh-banner.bin"]
        matcher = sshFactory.build({})
        self.assertEqual(matcher.describe(Peek(data)), "ssh software=OpenSSH_9.2p1")
        self.assertEqual(matcher.describe(Peek(data[:4])), "ssh")

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        cases = [
            ({"software": []}, "software must be"),
            ({"software": "Open SSH"}, "cannot begin a software version"),
            ({"software": "SSH-2.0-x"}, "cannot begin a software version"),
            ({"version": "2.0"}, "unknown option 'version'"),
        ]
        for options, words in cases:
            self.assertBuildFails(sshFactory, options, words)


class RegexTests(CorpusMixin):
    """
    The C{regex} matcher.
    """

    def test_corpus(self) -> None:
        """
        Patterns for TLS, SSH and HTTP each pick out their files.
        """
        self.assertCorpus(r"^\x16\x03[\x01-\x04]", regexFactory, TLS)
        self.assertCorpus(r"SSH-2\.0-OpenSSH_\d", regexFactory, {"ssh-banner.bin"})
        self.assertCorpus(
            {"pattern": r"(?i)[a-z]+ /v2/\S* HTTP/1\.[01]\r\n"},
            regexFactory,
            {"plain-http11.bin"},
        )
        # A pattern for what comes after the request line, within the window.
        self.assertCorpus(
            {"pattern": r"Host: discovery\.", "offset": 28, "length": 16},
            regexFactory,
            {"plain-http11.bin"},
        )
        # . stops at a newline unless DOTALL; the window bounds the search.
        self.assertCorpus(r".*curl", regexFactory, set())
        self.assertCorpus({"pattern": r"(?s).*curl", "length": 32}, regexFactory, set())
        # (?s).* can always go on, so a short stream waits for the window.
        anywhere = regexFactory.build(r"(?s).*curl")
        self.assertIs(assertConsistent(anywhere, FILES["plain-http11.bin"]), MATCH)
        self.assertIs(assertConsistent(anywhere, FILES["ssh-banner.bin"]), NEED_MORE)

    def test_decidesEarly(self) -> None:
        """
        A match is taken as soon as a prefix of the window matches; a
        mismatch as soon as no continuation could match.
        """
        matcher = regexFactory.build(r"^\x16\x03")
        self.assertIs(matcher.match(Peek(b"\x16\x03")), MATCH)
        self.assertIs(matcher.match(Peek(b"\x16")), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"G")), NO_MATCH)
        loose = regexFactory.build({"pattern": "a.*b", "length": 4})
        self.assertIs(loose.match(Peek(b"axx")), NEED_MORE)
        self.assertIs(loose.match(Peek(b"axxb")), MATCH)
        self.assertIs(loose.match(Peek(b"axxx")), NO_MATCH)
        offset = regexFactory.build({"pattern": "^b", "offset": 2})
        self.assertIs(offset.match(Peek(b"a")), NEED_MORE)
        self.assertIs(offset.match(Peek(b"aab")), MATCH)
        self.assertIs(regexFactory.build("").match(Peek(b"")), MATCH)
        self.assertIs(regexFactory.build("[^\\x00-\\xff]").match(Peek(b"")), NO_MATCH)

    def test_latin1(self) -> None:
        """
        The pattern's characters are bytes: an escape and a literal byte
        mean the same.
        """
        for pattern in ["\\xe9", "\xe9"]:
            matcher = regexFactory.build(pattern)
            self.assertIs(matcher.match(Peek(b"\xe9")), MATCH, pattern)
            self.assertIs(matcher.match(Peek(b"\xc3")), NO_MATCH, pattern)

    def test_describe(self) -> None:
        """
        The log names the pattern as written.
        """
        matcher = regexFactory.build(r"^\x16\x03")
        self.assertEqual(matcher.describe(Peek(b"\x16\x03")), r"regex=^\x16\x03")

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it; constructs whose answer could
        change as bytes arrive are refused with the reason.
        """
        cases = [
            ("(", "not a valid regular expression: missing )"),
            ("a$", "$ is not supported"),
            (r"a\Z", "\\Z is not supported"),
            (r"a\b", "\\b is not supported"),
            ("a(?=b)", "look-ahead"),
            ("(?<=a)b", "look-ahead and look-behind"),
            (r"(a)\1", "back-references"),
            ("(?>a)", "atomic groups"),
            ("a*+", "possessive repeats"),
            ("(?m)^a", "MULTILINE"),
            ("(?L)a", "LOCALE"),
            ("a{10000}b{10000}c{10000}", "too large"),
            ("\u20ac", "above \\xff"),
            ({"pattern": 1}, "pattern must be given as a string"),
            ({}, "pattern must be given as a string"),
            ({"pattern": "a", "length": 0}, "at least 1"),
            ({"pattern": "a", "offset": "1"}, "offset must be"),
            ({"pattern": "a", "size": 1}, "unknown option 'size'"),
        ]
        for options, words in cases:
            self.assertBuildFails(regexFactory, options, words)


# Patterns in the supported subset, over a small alphabet so that random
# data often matches.
PATTERNS = [
    "ab",
    "a|b",
    "a*b",
    "(ab)+c",
    "a.?b",
    "[ab]{2,3}c",
    "^a(b|cd)*?e",
    "(?i)AB",
    "[^a]b",
    "\\x00\\d\\s",
    "(a|ab)(c|bcd)",
    "a{0}",
    "(?s:.)b",
]


class RegexPropertyTests(SynchronousTestCase):
    """
    The C{regex} matcher agrees with C{re.match}.
    """

    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(PATTERNS),
        st.binary(max_size=12).map(lambda b: bytes(b"abcde\x00 1\n"[x % 9] for x in b)),
        st.integers(1, 10),
    )
    def test_agreesWithRe(self, pattern: str, data: bytes, length: int) -> None:
        """
        It says L{MATCH} exactly when C{re.match} matches the window so far;
        L{NO_MATCH} only when the window is full or no continuation of it
        can match; and its answer does not depend on how bytes arrive.
        """
        matcher = regexFactory.build({"pattern": pattern, "length": length})
        compiled = re.compile(pattern.encode("iso-8859-1"))
        window = data[:length]
        verdict = assertConsistent(matcher, data)
        self.assertEqual(verdict is MATCH, compiled.match(window) is not None)
        if verdict is NO_MATCH and len(window) < length:
            for tail in [b"a", b"b", b"c", b"e", b"ab", b"bcd", b"abc", b"\x00", b"1 "]:
                self.assertIsNone(compiled.match(window + tail), tail)
        if verdict is NEED_MORE:
            self.assertLess(len(window), length)


class LogSafeTests(SynchronousTestCase):
    """
    L{logSafe}: what a client sent, made safe for one field of a log line.
    """

    def test_escapes(self) -> None:
        self.assertEqual(logSafe("relay.example.com"), "relay.example.com")
        self.assertEqual(logSafe("a b,c\\d"), "a\\x20b\\x2cc\\x5cd")
        self.assertEqual(logSafe("é\n"), "\\xe9\\x0a")
        self.assertEqual(logSafe(""), "")

    @settings(max_examples=500, deadline=None)
    @given(st.text())
    def test_sameAsEscapingEachCharacter(self, text: str) -> None:
        """
        The quick path for plain names gives what escaping one character at
        a time gives, for any text.
        """
        escaped = "".join(
            c if c.isascii() and c.isprintable() and c not in " ,\\" else f"\\x{ord(c):02x}"
            for c in text
        )
        self.assertEqual(logSafe(text), escaped)
