"""
Tests for the DTLS ClientHello reader (L{demux._dtls}) and the C{dtls}
matcher, on bytes from Debian's C{openssl s_client} and on hellos cut up
the ways the specification allows.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux import MATCH, NEED_MORE, NO_MATCH, DatagramPeek, Peek, parseClientHello
from demux._clienthello import ClientHello
from demux._dtls import HelloFragments, parseDTLSClientHello, parseHelloDatagram
from demux.matchers import dtlsFactory, quicFactory, tlsFactory

from ._datagrams import captureDatagrams, have


def opensslHello(*options: str) -> list[bytes]:
    """
    The first datagrams of C{openssl s_client} as a DTLS client naming
    C{dtls.example} and offering ALPN C{coap} and C{h2}.
    """
    return captureDatagrams(
        lambda port: [
            "openssl",
            "s_client",
            *options,
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "dtls.example",
            "-alpn",
            "coap,h2",
        ],
        count=2,
    )


def record(fragment: bytes, sequence: int = 0, version: int = 0xFEFD) -> bytes:
    return (
        b"\x16"
        + version.to_bytes(2, "big")
        + b"\x00\x00"
        + sequence.to_bytes(6, "big")
        + len(fragment).to_bytes(2, "big")
        + fragment
    )


def helloFragment(body: bytes, offset: int, end: int, seq: int = 0) -> bytes:
    return (
        b"\x01"
        + len(body).to_bytes(3, "big")
        + seq.to_bytes(2, "big")
        + offset.to_bytes(3, "big")
        + (end - offset).to_bytes(3, "big")
        + body[offset:end]
    )


def helloBody(datagram: bytes) -> bytes:
    """
    The ClientHello body of a one-record, one-fragment datagram.
    """
    fragments = parseHelloDatagram(datagram)
    assert isinstance(fragments, HelloFragments)
    ((offset, body),) = fragments.fragments
    assert offset == 0 and len(body) == fragments.length
    return body


class OpenSSLTests(SynchronousTestCase):
    if not have("openssl"):
        skip = "openssl is not installed (tests/run installs it)"

    def _check(self, datagrams: list[bytes]) -> ClientHello:
        peek = DatagramPeek(datagrams)
        self.assertIs(dtlsFactory.build({}).match(peek), MATCH)
        self.assertIs(
            tlsFactory.build({"sni": "dtls.example", "alpn": "coap"}).match(peek),
            MATCH,
        )
        self.assertIs(tlsFactory.build({"sni": "other.example"}).match(peek), NO_MATCH)
        self.assertIs(quicFactory.build({}).match(peek), NO_MATCH)
        hello = peek.parse(parseClientHello)
        assert isinstance(hello, ClientHello)
        self.assertEqual(hello.carrier, "dtls")
        self.assertEqual(hello.cookie, b"")
        self.assertEqual(hello.alpn, ("coap", "h2"))
        self.assertTrue(hello.ja4().startswith("dd2d"), hello.ja4())
        return hello

    def test_dtls12(self) -> None:
        datagrams = opensslHello("-dtls1_2")
        self.assertTrue(datagrams)
        hello = self._check(datagrams[:1])
        self.assertEqual(hello.highestVersion, 0xFEFD)
        peek = DatagramPeek(datagrams[:1])
        self.assertIs(tlsFactory.build({"version": "1.2"}).match(peek), MATCH)
        self.assertEqual(
            dtlsFactory.build({}).describe(DatagramPeek(datagrams[:1])),
            "dtls=1.2 sni=dtls.example alpn=coap,h2",
        )

    def test_anyVersion(self) -> None:
        self._check(opensslHello("-dtls")[:1])

    def test_fragmented(self) -> None:
        """
        With a small MTU openssl cuts the hello into fragments in two
        datagrams: the first alone is not enough, and either order works.
        """
        datagrams = opensslHello("-dtls1_2", "-mtu", "256")
        self.assertEqual(len(datagrams), 2)
        self.assertIs(dtlsFactory.build({}).match(DatagramPeek(datagrams[:1])), NEED_MORE)
        self._check(datagrams)
        self._check(datagrams[::-1])


class StructureTests(SynchronousTestCase):
    """
    Hellos built by the specification, from the body of a real one.
    """

    def setUp(self) -> None:
        if have("openssl"):
            self.body = helloBody(opensslHello("-dtls1_2")[0])
        else:  # pragma: no cover
            self.skipTest("openssl is not installed")

    def test_cookie(self) -> None:
        """
        A hello answering a HelloVerifyRequest carries its cookie.
        """
        sessionEnd = 2 + 32 + 1 + self.body[34]
        self.assertEqual(self.body[sessionEnd], 0)
        body = self.body[:sessionEnd] + b"\x04abcd" + self.body[sessionEnd + 1 :]
        datagram = record(helloFragment(body, 0, len(body), seq=1))
        hello = parseDTLSClientHello((datagram,))
        assert isinstance(hello, ClientHello)
        self.assertEqual(hello.cookie, b"abcd")
        self.assertEqual(hello.serverName, "dtls.example")

    def test_dtls13(self) -> None:
        """
        A DTLS 1.3 hello says so in supported_versions (Debian's OpenSSL 3.0
        cannot send one, so it is made from a 1.2 hello by adding that).
        """
        pos = 2 + 32
        pos += 1 + self.body[pos]  # session id
        pos += 1 + self.body[pos]  # cookie
        pos += 2 + int.from_bytes(self.body[pos : pos + 2], "big")  # suites
        pos += 1 + self.body[pos]  # compression methods
        extensions = self.body[pos + 2 :] + bytes.fromhex("002b000504fefcfefd")
        body = self.body[:pos] + len(extensions).to_bytes(2, "big") + extensions
        hello = parseDTLSClientHello((record(helloFragment(body, 0, len(body))),))
        assert isinstance(hello, ClientHello), hello
        self.assertEqual(hello.supportedVersions, (0xFEFC, 0xFEFD))
        self.assertEqual(hello.highestVersion, 0xFEFC)
        self.assertTrue(hello.ja4().startswith("dd3d"), hello.ja4())
        peek13 = DatagramPeek([record(helloFragment(body, 0, len(body)))])
        tls13 = tlsFactory.build({"version": "1.3"})
        self.assertIs(tls13.match(peek13), MATCH)
        self.assertIn("version=1.3", tls13.describe(peek13))
        self.assertIs(tlsFactory.build({"version": "1.2"}).match(peek13), NO_MATCH)
        peek = DatagramPeek([record(helloFragment(body, 0, len(body)))])
        self.assertEqual(
            dtlsFactory.build({}).describe(peek),
            "dtls=1.3 sni=dtls.example alpn=coap,h2",
        )

    def test_notDTLS(self) -> None:
        whole = record(helloFragment(self.body, 0, len(self.body)))
        for datagram in (
            b"",
            b"\x16\x03\x01" + whole[3:],
            whole[:-1],
            whole[:20],
            whole.replace(b"\x16\xfe\xfd\x00\x00", b"\x16\xfe\xfd\x00\x01", 1),
            whole[:13] + b"\x02" + whole[14:],
            record(b"\x01" + b"\x00" * 11),
        ):
            self.assertIs(parseDTLSClientHello((datagram,)), NO_MATCH, datagram[:16])
            self.assertIs(dtlsFactory.build({}).match(DatagramPeek([datagram])), NO_MATCH)
        self.assertIs(dtlsFactory.build({}).match(Peek(whole)), NO_MATCH)
        self.assertIs(dtlsFactory.build({}).match(DatagramPeek()), NEED_MORE)

    def test_conflicting(self) -> None:
        a = record(helloFragment(self.body, 0, 100))
        bad = bytearray(self.body)
        bad[60] ^= 0xFF
        b = record(helloFragment(bytes(bad), 50, len(bad)), 1)
        self.assertIs(parseDTLSClientHello((a, b)), NO_MATCH)

    def test_otherHelloIgnored(self) -> None:
        """
        Fragments of another message_seq do not complete the first hello.
        """
        a = record(helloFragment(self.body, 0, 100))
        b = record(helloFragment(self.body, 100, len(self.body), seq=1), 1)
        self.assertIs(parseDTLSClientHello((a, b)), NEED_MORE)

    @settings(max_examples=60, deadline=None)
    @given(st.data())
    def test_anySplit(self, data: st.DataObject) -> None:
        """
        However the hello is cut into fragments, records and datagrams, and
        whatever order the datagrams arrive in, the same hello comes out.
        """
        body = self.body
        cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=6)))
        bounds = [0, *cuts, len(body)]
        fragments = [
            helloFragment(body, a, b) for a, b in zip(bounds, bounds[1:], strict=False)
        ]
        fragments = data.draw(st.permutations(fragments))
        datagrams = []
        sequence = 0
        i = 0
        while i < len(fragments):
            n = data.draw(st.integers(1, 3))
            records = []
            for fragment in fragments[i : i + n]:
                if records and data.draw(st.booleans()):
                    records[-1] += fragment
                else:
                    records.append(fragment)
            datagrams.append(b"".join(record(r, sequence + j) for j, r in enumerate(records)))
            sequence += len(records)
            i += n
        hello = parseDTLSClientHello(tuple(datagrams))
        assert isinstance(hello, ClientHello), hello
        self.assertEqual(hello.serverName, "dtls.example")
        self.assertEqual(hello.alpn, ("coap", "h2"))
        self.assertIs(dtlsFactory.build({}).match(DatagramPeek(datagrams)), MATCH)
        if len(datagrams) > 1:
            self.assertIs(
                dtlsFactory.build({}).match(DatagramPeek(datagrams[:-1])), NEED_MORE
            )

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 10_000), st.integers(1, 255), st.binary(max_size=64))
    def test_corruption(self, at: int, xor: int, tail: bytes) -> None:
        """
        A changed, cut or extended hello never makes the parser raise.
        """
        whole = bytearray(record(helloFragment(self.body, 0, len(self.body))))
        at %= len(whole)
        whole[at] ^= xor
        for datagram in (bytes(whole), bytes(whole[:at]), bytes(whole) + tail):
            result = parseDTLSClientHello((datagram, tail))
            self.assertTrue(result in (NEED_MORE, NO_MATCH) or isinstance(result, ClientHello))
