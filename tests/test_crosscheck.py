"""
Every installed matcher against every real first flight in C{tests/corpus/}:
each matcher, built with no options, claims its own protocol's files and no
others, and reaches the same verdict on each file however it is cut.

Two tables below say what to expect, and the test fails when either misses
something: a matcher that is installed but in neither L{MATCHERS} nor
L{EXEMPT}, or a corpus file that is not in L{CLAIMS}.  So a new matcher or a
new capture cannot land without someone saying which files it claims.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux import IMatcher, MatcherConfigError, matcherFactories
from demux._interfaces import MATCH, NO_MATCH
from demux.testing import assertConsistent

from ._process import twistdCommand

CORPUS = Path(__file__).parent / "corpus"

MATCHERS: Mapping[str, str] = {
    "tls": "a TLS ClientHello",
    "http": "an HTTP/1.x request (or the HTTP/2 preface)",
    "http2": "the HTTP/2 prior-knowledge preface",
    "ssh": "an SSH identification string",
    "xmpp": "an XMPP stream header",
    "rdp": "an RDP X.224 Connection Request",
    "tinc": "tinc's ID request",
    "adb": "an ADB CNXN or STLS message",
    "bep": "Syncthing BEP: TLS with ALPN bep/1.0",
    "relay-protocol": "a Syncthing relay's protocol mode: TLS with ALPN bep-relay",
    "relay-session": "a Syncthing relay session: the relay magic",
    "openvpn": "OpenVPN over TCP: a client's first control packet",
    "socks": "a SOCKS 4, 4a or 5 client's greeting",
    "postgres": "a PostgreSQL startup, SSLRequest or GSSENCRequest message",
    "mqtt": "an MQTT CONNECT packet",
    "redis": "a Redis command in RESP",
    "syslog": "syslog over TCP (RFC 3164, RFC 5424, octet counting)",
    "proxy_protocol": "a PROXY protocol v1 or v2 header",
    "quic": "a QUIC client Initial (datagrams only: no TCP capture is one)",
    "dtls": "a DTLS ClientHello (datagrams only)",
    "wireguard": "a WireGuard handshake initiation (datagrams only)",
    "dns": "a DNS query over UDP (datagrams only)",
    "stun": "a STUN Binding request (datagrams only)",
}
"""
The matchers checked against the corpus, built with C{{}}, and what each
recognises.  Add a row for a new matcher, and name it in L{CLAIMS} for every
file it claims (none is a fine answer: C{relay-session} has no capture).
"""

EXEMPT: Mapping[str, str] = {
    "any": "a catch-all: it claims every connection by design (checked below)",
    "prefix": "it needs the bytes to look for: {} is a configuration error",
    "regex": "it needs a pattern: {} is a configuration error",
}
"""
Matchers that cannot be checked with C{{}}, and why.  The test checks the
reason still holds: C{any} must match every file, the others must refuse
C{{}}.
"""

_TLS = {"tls"}

CLAIMS: Mapping[str, frozenset[str]] = {
    name: frozenset(claims)
    for name, claims in {
        "chromium-sni-alpn-pq.bin": _TLS,
        "curl-sni-alpn.bin": _TLS,
        "openssl-nosni-alpn-bep-relay.bin": _TLS | {"relay-protocol"},
        "openssl-sni-alpn-h2.bin": _TLS,
        "openssl-split-records.bin": _TLS,
        "openssl-tls12-sni.bin": _TLS,
        "python-ssl-sni-alpn.bin": _TLS | {"bep"},
        "plain-http11.bin": {"http"},
        "ssh-banner.bin": {"ssh"},
        "slixmpp-stream.bin": {"xmpp"},
        "xfreerdp-cr.bin": {"rdp"},
        "tincd-id.bin": {"tinc"},
        "adb-cnxn.bin": {"adb"},
        "openvpn-tcp.bin": {"openvpn"},
        "openvpn-tcp-tls-auth.bin": {"openvpn"},
        "openvpn-tcp-tls-crypt.bin": {"openvpn"},
        "openvpn-tcp-tls-crypt-v2.bin": {"openvpn"},
        "socks4-curl.bin": {"socks"},
        "socks4a-curl.bin": {"socks"},
        "socks5-curl.bin": {"socks"},
        "socks5-curl-auth.bin": {"socks"},
        "postgres-startup-psql.bin": {"postgres"},
        "postgres-sslrequest-psql.bin": {"postgres"},
        "postgres-gssencrequest-psql.bin": {"postgres"},
        "mqtt31-mosquitto.bin": {"mqtt"},
        "mqtt311-mosquitto.bin": {"mqtt"},
        "mqtt5-mosquitto.bin": {"mqtt"},
        "redis-auth-cli.bin": {"redis"},
        "redis-hello3-cli.bin": {"redis"},
        "redis-ping-cli.bin": {"redis"},
        "syslog-rfc3164-logger.bin": {"syslog"},
        "syslog-rfc5424-logger.bin": {"syslog"},
        "syslog-octet-count-logger.bin": {"syslog"},
        "proxy-v1-haproxy.bin": {"proxy_protocol"},
        "proxy-v2-haproxy.bin": {"proxy_protocol"},
    }.items()
}
"""
For each corpus file, the matchers of L{MATCHERS} that claim it; every other
one must say L{NO_MATCH}.  Add a row for every new capture.
"""


def corpusFiles() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(CORPUS.glob("*.bin"))}


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


class ExpectationTableTests(SynchronousTestCase):
    """
    The tables cover exactly what is installed and what is in the corpus.
    """

    def test_everyMatcherHasARow(self) -> None:
        """
        Every installed matcher is in L{MATCHERS} or L{EXEMPT}, and every row
        names an installed matcher.
        """
        installed = set(matcherFactories())
        missing = installed - set(MATCHERS) - set(EXEMPT)
        if missing:
            self.fail(
                f"installed matchers with no expectations: {_listed(missing)}; "
                "add each to MATCHERS in tests/test_crosscheck.py and name it in "
                "CLAIMS for every corpus file it claims with {} (or, if it cannot "
                "be built with {}, add it to EXEMPT with the reason)"
            )
        stale = (set(MATCHERS) | set(EXEMPT)) - installed
        if stale:
            self.fail(
                f"tests/test_crosscheck.py has rows for matchers that are not "
                f"installed: {_listed(stale)}; register them in setup.cfg "
                "(and reinstall) or remove the rows"
            )
        self.assertEqual(set(MATCHERS) & set(EXEMPT), set())

    def test_everyFileHasARow(self) -> None:
        """
        Every corpus file is in L{CLAIMS}, and every row names a corpus file
        and matchers of L{MATCHERS}.
        """
        files = set(corpusFiles())
        missing = files - set(CLAIMS)
        if missing:
            self.fail(
                f"corpus files with no expectations: {_listed(missing)}; add "
                "each to CLAIMS in tests/test_crosscheck.py with the set of "
                "matchers that claim it"
            )
        stale = set(CLAIMS) - files
        if stale:
            self.fail(
                f"CLAIMS in tests/test_crosscheck.py names files that are not in "
                f"tests/corpus: {_listed(stale)}"
            )
        for name, claims in CLAIMS.items():
            unknown = claims - set(MATCHERS)
            self.assertEqual(
                unknown, set(), f"CLAIMS[{name!r}] names matchers not in MATCHERS"
            )


class CrossCheckTests(SynchronousTestCase):
    """
    Each matcher claims its own protocol's captures and nothing else.
    """

    def test_claims(self) -> None:
        """
        Every matcher of L{MATCHERS}, built with C{{}}, says L{MATCH} for
        the files L{CLAIMS} gives it and L{NO_MATCH} for every other file,
        consistently however each file is cut.
        """
        factories = matcherFactories()
        files = corpusFiles()
        wrong = []
        for matcherName in sorted(set(MATCHERS) & set(factories)):
            matcher = factories[matcherName].build({})
            verifyObject(IMatcher, matcher)
            for fileName, data in files.items():
                claims = CLAIMS.get(fileName)
                if claims is None:
                    continue
                expected = MATCH if matcherName in claims else NO_MATCH
                try:
                    got = assertConsistent(matcher, data)
                except AssertionError as e:
                    wrong.append(f"{matcherName} on {fileName}: inconsistent: {e}")
                    continue
                if got is not expected:
                    wrong.append(
                        f"{matcherName} on {fileName}: {got.value}, expected "
                        f"{expected.value}"
                    )
        if wrong:
            self.fail("\n".join(wrong))

    def test_exempt(self) -> None:
        """
        The reasons in L{EXEMPT} hold: C{any} claims every file, and the
        matchers that need options refuse C{{}}.
        """
        factories = matcherFactories()
        for name in sorted(set(EXEMPT) & set(factories)):
            factory = factories[name]
            if name == "any":
                matcher = factory.build({})
                for fileName, data in corpusFiles().items():
                    self.assertIs(assertConsistent(matcher, data), MATCH, fileName)
            else:
                self.assertRaises(MatcherConfigError, factory.build, {})


class ListMatchersTests(SynchronousTestCase):
    """
    C{twistd demux --list-matchers} shows what is installed.
    """

    def test_everyMatcherWithItsSummary(self) -> None:
        """
        Each installed matcher is listed on a line of its own with its
        one-line summary, and nothing else is.
        """
        with tempfile.TemporaryDirectory() as elsewhere:
            result = subprocess.run(
                twistdCommand("demux", "--list-matchers"),
                capture_output=True,
                timeout=60,
                cwd=elsewhere,
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        listed = {}
        for line in result.stdout.decode("utf-8").splitlines():
            name, _, summary = line.partition(" ")
            # Matchers that judge datagrams too say so after their summary.
            listed[name] = (
                summary.strip().removesuffix(" (UDP too)").removesuffix(" (UDP only)")
            )
        expected = {name: f.summary for name, f in matcherFactories().items()}
        self.assertEqual(listed, expected)
        for name, summary in expected.items():
            self.assertTrue(summary and "\n" not in summary, name)
