"""
Tests for L{demux._clienthello}, the shared ClientHello parser, and for the
C{tls} matcher built on it.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, TLSVersion, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux._clienthello import (
    MAX_CLIENT_HELLO_LENGTH,
    ClientHello,
    isGrease,
    parseClientHello,
)
from demux._errors import MatcherConfigError
from demux._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcherFactory, Verdict
from demux._peek import Peek
from demux._plugins import matcherFactories
from demux.matchers._tls import tlsFactory
from demux.testing import assertConsistent, clientHello, verdictOf

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
TLS_FILES = sorted(name for name, e in EXPECTED.items() if "records" in e)
OTHER_FILES = sorted(name for name, e in EXPECTED.items() if "records" not in e)


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def handshakeMessage(data: bytes) -> bytes:
    """
    The handshake bytes carried by the records of a well-formed first
    flight, put together without the parser under test.
    """
    out = []
    while data:
        length = int.from_bytes(data[3:5], "big")
        out.append(data[5 : 5 + length])
        data = data[5 + length :]
    return b"".join(out)


def inRecords(message: bytes, sizes: Iterable[int], version: int = 0x0301) -> bytes:
    """
    C{message} cut into handshake records of the given C{sizes} (the last
    size repeats as needed).
    """
    out = []
    sizes = list(sizes)
    i = 0
    while message:
        size = sizes[min(i, len(sizes) - 1)]
        chunk, message = message[:size], message[size:]
        out.append(struct.pack("!BHH", 22, version, len(chunk)) + chunk)
        i += 1
    return b"".join(out)


def buildHello(
    *,
    sni: bytes | None = b"example.com",
    alpn: Sequence[bytes] = (b"h2",),
    versions: Sequence[int] = (),
    extra: Sequence[tuple[int, bytes]] = (),
    ciphers: Sequence[int] = (0x1301, 0x1302),
    sessionId: bytes = b"",
    lies: dict[str, int] | None = None,
) -> bytes:
    """
    A ClientHello in one record, made by hand so that any length field can
    be made to lie: C{lies} maps a field's name to what to add to its true
    value (C{record}, C{handshake}, C{extensions}, C{sniExtension}, C{sni},
    C{name}, C{alpnExtension}, C{alpn}).

    @raise OverflowError: if a lie does not fit its field.
    """
    lies = lies or {}

    def length(key: str, n: int, width: int) -> bytes:
        return (n + lies.get(key, 0)).to_bytes(width, "big")

    extensions = b""
    if sni is not None:
        entry = b"\x00" + length("name", len(sni), 2) + sni
        body = length("sni", len(entry), 2) + entry
        extensions += b"\x00\x00" + length("sniExtension", len(body), 2) + body
    if versions:
        body = bytes([2 * len(versions)]) + struct.pack(f"!{len(versions)}H", *versions)
        extensions += struct.pack("!HH", 0x002B, len(body)) + body
    for extensionType, data in extra:
        extensions += struct.pack("!HH", extensionType, len(data)) + data
    if alpn:
        names = b"".join(bytes([len(p)]) + p for p in alpn)
        body = length("alpn", len(names), 2) + names
        extensions += b"\x00\x10" + length("alpnExtension", len(body), 2) + body
    body = (
        b"\x03\x03"
        + bytes(range(32))
        + bytes([len(sessionId)])
        + sessionId
        + struct.pack(f"!H{len(ciphers)}H", 2 * len(ciphers), *ciphers)
        + b"\x01\x00"
        + length("extensions", len(extensions), 2)
        + extensions
    )
    message = b"\x01" + length("handshake", len(body), 3) + body
    return b"\x16\x03\x01" + length("record", len(message), 2) + message


def twistedHello(creator: object) -> bytes:
    """
    The first flight of a pyOpenSSL client made through Twisted's TLS
    protocol, in memory.
    """
    factory = TLSMemoryBIOFactory(
        creator,  # type: ignore[arg-type]
        True,
        Factory.forProtocol(Protocol),
        clock=Clock(),
    )
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return transport.value()


def parsed(data: bytes) -> ClientHello:
    result = parseClientHello(data)
    assert isinstance(result, ClientHello), result
    return result


class CorpusTests(SynchronousTestCase):
    """
    The real first flights parse to what C{expected.json} says.
    """

    def test_expected(self) -> None:
        """
        Records, handshake length (C{expected.json} counts the 4-byte header
        in it), SNI, ALPN, ECH and the extension count are as expected.
        """
        for name in TLS_FILES:
            expected = EXPECTED[name]
            hello = parsed(corpus(name))
            self.assertEqual(
                (
                    list(hello.recordLengths),
                    hello.handshakeLength + 4,
                    hello.serverName,
                    list(hello.alpn),
                    hello.hasECH,
                    len(hello.extensions),
                    len(hello.extensionTypes),
                ),
                (
                    expected["records"],
                    expected["handshake_len"],
                    expected["sni"],
                    expected["alpn"],
                    expected["ech_extension"],
                    expected["extensions"],
                    expected["extensions"],
                ),
                name,
            )

    def test_notTLS(self) -> None:
        """
        An HTTP request and an SSH banner are rejected at their first byte.
        """
        for name in OTHER_FILES:
            data = corpus(name)
            self.assertIs(parseClientHello(data), NO_MATCH, name)
            self.assertIs(parseClientHello(data[:1]), NO_MATCH, name)

    def test_everyPrefixNeedsMore(self) -> None:
        """
        Every proper prefix of a corpus hello is L{NEED_MORE}.
        """
        for name in TLS_FILES:
            data = corpus(name)
            for n in range(len(data)):
                self.assertIs(parseClientHello(data[:n]), NEED_MORE, (name, n))

    def test_versions(self) -> None:
        """
        TLS 1.3 clients offer their versions in supported_versions; a TLS
        1.2-only client offers only its legacy version.
        """
        chromium = parsed(corpus("chromium-sni-alpn-pq.bin"))
        self.assertTrue(isGrease(chromium.offeredVersions[0]))
        self.assertEqual(chromium.offeredVersions[1:], (0x0304, 0x0303))
        self.assertEqual(chromium.highestVersion, 0x0304)
        tls12 = parsed(corpus("openssl-tls12-sni.bin"))
        self.assertEqual(tls12.supportedVersions, ())
        self.assertEqual(tls12.offeredVersions, (0x0303,))
        self.assertEqual(tls12.highestVersion, 0x0303)

    def test_decodedLists(self) -> None:
        """
        Cipher suites, groups, signature algorithms and extension types are
        decoded in the order sent, GREASE included.
        """
        hello = parsed(corpus("openssl-tls12-sni.bin"))
        self.assertEqual(len(hello.cipherSuites), 28)
        self.assertEqual(hello.cipherSuites[:3], (0xC02C, 0xC030, 0x009F))
        self.assertEqual(hello.cipherSuites[-1], 0x00FF)
        self.assertEqual(hello.compressionMethods, b"\x00")
        self.assertEqual(
            hello.extensionTypes,
            (0x0000, 0x000B, 0x000A, 0x0023, 0x0016, 0x0017, 0x000D),
        )
        self.assertEqual(
            hello.supportedGroups, (0x001D, 0x0017, 0x001E, 0x0019, 0x0018)
        )
        self.assertEqual(len(hello.signatureAlgorithms), 20)
        self.assertEqual(hello.extension(0x000B), b"\x03\x00\x01\x02")
        self.assertIsNone(hello.extension(0x0010))
        chromium = parsed(corpus("chromium-sni-alpn-pq.bin"))
        self.assertTrue(isGrease(chromium.cipherSuites[0]))
        self.assertEqual(sum(isGrease(t) for t in chromium.extensionTypes), 2)


class JA4Tests(SynchronousTestCase):
    """
    L{ClientHello.ja4} follows FoxIO's JA4 specification.
    """

    def test_tls12Corpus(self) -> None:
        """
        The JA4 of C{openssl-tls12-sni.bin}, worked out by hand from an
        C{xxd} dump of the file: legacy_version 0303 and no
        supported_versions give C{12}; the server_name extension gives C{d};
        28 cipher suites, 7 extensions, no ALPN (C{00}).  The two hash inputs
        below were written out from the dump, sorted by hand (SNI dropped,
        the 20 signature algorithms kept in their order) and hashed with
        C{sha256sum}, which gave C{d943125447b4} and C{e7e480e5a997}.
        """
        ciphers = (
            "002f,0033,0035,0039,003c,003d,0067,006b,009c,009d,009e,009f,00ff,"
            "c009,c00a,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030,cca8,"
            "cca9,ccaa"
        )
        extensions = (
            "000a,000b,000d,0016,0017,0023_"
            "0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,"
            "0601,0303,0301,0302,0402,0502,0602"
        )
        self.assertEqual(
            hashlib.sha256(ciphers.encode()).hexdigest()[:12], "d943125447b4"
        )
        self.assertEqual(
            hashlib.sha256(extensions.encode()).hexdigest()[:12], "e7e480e5a997"
        )
        self.assertEqual(
            parsed(corpus("openssl-tls12-sni.bin")).ja4(),
            "t12d280700_d943125447b4_e7e480e5a997",
        )

    def test_specExample(self) -> None:
        """
        The worked example of the JA4 specification: its cipher suites and
        extensions (in the order listed there, with GREASE added, which must
        be ignored) give its C{t13d1516h2_8daaf6152771_e5627efa2ab1}.
        """
        ciphers = [0x0A0A] + [
            int(c, 16)
            for c in (
                "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,"
                "009c,009d,002f,0035"
            ).split(",")
        ]
        types = [
            int(t, 16)
            for t in (
                "001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,"
                "ff01,000b,000a,0015"
            ).split(",")
        ]
        algorithms = bytes.fromhex("0403080404010503080505010806 0601")
        hello = ClientHello(
            recordLengths=(1,),
            handshakeLength=1,
            legacyVersion=0x0303,
            random=bytes(32),
            sessionId=b"",
            cipherSuites=tuple(ciphers),
            compressionMethods=b"\x00",
            extensions=((0x2A2A, b""),)
            + tuple(
                (t, struct.pack("!H", len(algorithms)) + algorithms) for t in types
            ),
            serverName="example.com",
            alpn=("h2", "http/1.1"),
            supportedVersions=(0x1A1A, 0x0304, 0x0303),
            supportedGroups=(),
            signatureAlgorithms=(0x3A3A,) + struct.unpack("!8H", algorithms),
        )
        self.assertEqual(hello.ja4(), "t13d1516h2_8daaf6152771_e5627efa2ab1")

    def test_chromiumCipherHash(self) -> None:
        """
        Chromium's cipher suites hash to the value of the spec's example
        (which is a Chrome fingerprint), once GREASE is ignored.
        """
        ja4 = parsed(corpus("chromium-sni-alpn-pq.bin")).ja4()
        self.assertEqual(ja4[:11], "t13d1517h2_")
        self.assertEqual(ja4.split("_")[1], "8daaf6152771")

    def test_alpnCharacters(self) -> None:
        """
        The two ALPN characters are the first and last of the first name,
        or of its hex form if either is not alphanumeric; C{00} without
        ALPN; the SNI letter is C{i} without SNI.
        """
        cases = [
            ((b"http/1.1",), "h1"),
            ((b"h",), "hh"),
            ((b"\xab",), "ab"),
            ((b"\xab\xcd",), "ad"),
            ((b"0\xab",), "3b"),
            ((b"01\xab\xcd",), "3d"),
            ((b"0\xab\xcd1",), "01"),
            ((b"bep-relay", b"h2"), "by"),
            ((), "00"),
        ]
        for alpn, expected in cases:
            hello = parsed(buildHello(sni=None, alpn=alpn))
            count = "01" if alpn else "00"
            self.assertEqual(hello.ja4()[:11], f"t12i02{count}{expected}_", alpn)


class GreaseTests(SynchronousTestCase):
    """
    L{isGrease} knows the sixteen GREASE values of RFC 8701.
    """

    def test_grease(self) -> None:
        grease = {v for v in range(0x10000) if isGrease(v)}
        self.assertEqual(grease, {0x0A0A + 0x1010 * i for i in range(16)})


class StrictnessTests(SynchronousTestCase):
    """
    What no conforming client sends is L{NO_MATCH}, as soon as it is seen.
    """

    def assertRejected(self, data: bytes) -> None:
        self.assertIs(parseClientHello(data), NO_MATCH)

    def test_builderIsSound(self) -> None:
        """
        The hand-made hello the other tests corrupt parses.
        """
        hello = parsed(buildHello(versions=(0x0304,), extra=[(0x0017, b"")]))
        self.assertEqual(hello.serverName, "example.com")
        self.assertEqual(hello.alpn, ("h2",))
        self.assertEqual(hello.highestVersion, 0x0304)

    def test_recordLayer(self) -> None:
        """
        The content type must be handshake, the record version 3.0 to 3.4,
        and the record length 1 to 16384.
        """
        good = buildHello()
        for bad in (
            b"\x17" + good[1:],
            good[:1] + b"\x02" + good[2:],
            good[:2] + b"\x05" + good[3:],
            good[:3] + b"\x00\x00",
            good[:3] + b"\x40\x01",
        ):
            self.assertRejected(bad)
        # Decided on the prefix already, as soon as the byte is in.
        self.assertRejected(b"\x16\x04")
        self.assertRejected(b"\x16\x03\x05")

    def test_notClientHello(self) -> None:
        """
        A handshake message other than a ClientHello is not one.
        """
        good = buildHello()
        self.assertRejected(good[:5] + b"\x02" + good[6:])
        self.assertRejected(good[:5] + b"\x02")

    def test_handshakeTooLong(self) -> None:
        """
        A handshake length beyond the largest legal ClientHello is refused
        as soon as its bytes show it, even before the body arrives.
        """
        self.assertEqual(MAX_CLIENT_HELLO_LENGTH, 131396)
        header = b"\x16\x03\x01\x40\x00\x01"
        tooLong = (MAX_CLIENT_HELLO_LENGTH + 1).to_bytes(3, "big")
        longest = MAX_CLIENT_HELLO_LENGTH.to_bytes(3, "big")
        self.assertRejected(header + tooLong)
        self.assertRejected(header + b"\x03")
        self.assertIs(parseClientHello(header + longest), NEED_MORE)

    def test_sslv2(self) -> None:
        """
        SSLv2-compatible hellos are not supported.
        """
        self.assertRejected(bytes.fromhex("802e0103010015000000100000040000"))

    def test_interleavedRecord(self) -> None:
        """
        A record of another type before the hello is complete is refused.
        """
        message = handshakeMessage(buildHello())
        data = inRecords(message, [10])
        alert = b"\x15\x03\x03\x00\x02\x01\x00"
        self.assertRejected(data[:15] + alert + data[15:])

    def test_recordPastHello(self) -> None:
        """
        The ClientHello must end on a record boundary: a record that goes on
        past it lies, and is refused once both headers are in.
        """
        message = handshakeMessage(buildHello())
        data = struct.pack("!BHH", 22, 0x0301, len(message) + 1) + message
        self.assertRejected(data[:9])
        self.assertRejected(data + b"\x02")

    def test_trailingDataIgnored(self) -> None:
        """
        Records after the one that ends the hello (a ChangeCipherSpec, early
        data) are neither needed nor looked at.
        """
        data = buildHello()
        self.assertEqual(parsed(data + b"\x14\x03\x03\x00\x01\x01"), parsed(data))
        self.assertEqual(parsed(data + b"\xff"), parsed(data))

    def test_body(self) -> None:
        """
        Session ids over 32 bytes, empty or odd cipher suite lists, no
        compression method, trailing bytes and an unknown major version
        are refused.
        """
        message = handshakeMessage(buildHello(sni=None, alpn=()))
        body = message[4:]
        sessionIdAt = 34

        def withBody(body: bytes) -> bytes:
            return inRecords(b"\x01" + len(body).to_bytes(3, "big") + body, [16384])

        self.assertIsInstance(parseClientHello(withBody(body)), ClientHello)
        self.assertRejected(withBody(b"\x02\x03" + body[2:]))
        self.assertRejected(
            withBody(body[:sessionIdAt] + b"\x21" + bytes(33) + body[sessionIdAt + 1 :])
        )
        afterSession = sessionIdAt + 1
        rest = body[afterSession + 2 + 4 :]
        self.assertRejected(withBody(body[:afterSession] + b"\x00\x00" + rest))
        self.assertRejected(
            withBody(body[:afterSession] + b"\x00\x03\x13\x01\x13" + rest)
        )
        self.assertRejected(
            withBody(body[: afterSession + 6] + b"\x00" + body[afterSession + 8 :])
        )
        self.assertRejected(withBody(body + b"\x00"))
        # Without any extension block at all (pre-TLS 1.3 style) is fine.
        bare = body[: afterSession + 6 + 2]
        self.assertEqual(parsed(withBody(bare)).extensions, ())

    def test_duplicateExtension(self) -> None:
        """
        RFC 8446 section 4.2: no extension type may appear twice.
        """
        self.assertRejected(buildHello(extra=[(0x0017, b""), (0x0017, b"")]))
        self.assertRejected(buildHello(extra=[(0x0000, b"\x00\x01\x00\x00\x01a")]))
        self.assertRejected(buildHello(extra=[(0x0A0A, b""), (0x0A0A, b"x")]))

    def test_zeroLengthExtensions(self) -> None:
        """
        Extensions with no data are fine.
        """
        hello = parsed(buildHello(extra=[(0x0017, b""), (0x0023, b"")]))
        self.assertEqual(hello.extension(0x0017), b"")

    def test_serverName(self) -> None:
        """
        A server_name extension must hold a non-empty list of non-empty
        names, at most one host_name, in printable ASCII; other name types
        are skipped.
        """
        self.assertIsNone(parsed(buildHello(sni=None)).serverName)
        self.assertRejected(buildHello(sni=b""))
        self.assertRejected(buildHello(sni=None, extra=[(0, b"")]))
        self.assertRejected(buildHello(sni=None, extra=[(0, b"\x00\x00")]))
        twoNames = b"\x00\x0a" + b"\x00\x00\x02ab" + b"\x00\x00\x02cd"
        self.assertRejected(buildHello(sni=None, extra=[(0, twoNames)]))
        otherType = b"\x00\x0a" + b"\x07\x00\x02ab" + b"\x00\x00\x02cd"
        hello = parsed(buildHello(sni=None, extra=[(0, otherType)]))
        self.assertEqual(hello.serverName, "cd")
        onlyOther = b"\x00\x05\x07\x00\x02ab"
        hello = parsed(buildHello(sni=None, extra=[(0, onlyOther)]))
        self.assertIsNone(hello.serverName)
        self.assertTrue(hello.hasServerNameExtension)
        for bad in (b"a b", b"caf\xc3\xa9", b"a\x00b", b"a\nb"):
            self.assertRejected(buildHello(sni=bad))
        self.assertEqual(
            parsed(buildHello(sni=b"xn--caf-dma.Example.")).serverName,
            "xn--caf-dma.Example.",
        )

    def test_alpn(self) -> None:
        """
        ALPN must be a non-empty list of non-empty names; any byte is kept,
        as latin-1.
        """
        self.assertRejected(buildHello(alpn=(b"h2", b"")))
        self.assertRejected(buildHello(alpn=(), extra=[(0x10, b"\x00\x00")]))
        self.assertRejected(buildHello(alpn=(), extra=[(0x10, b"")]))
        hello = parsed(buildHello(alpn=(b"\xff\x00", b"h2")))
        self.assertEqual(hello.alpn, ("\xff\x00", "h2"))
        self.assertEqual(hello.alpn[0].encode("latin-1"), b"\xff\x00")

    def test_versionLists(self) -> None:
        """
        supported_versions, supported_groups and signature_algorithms must
        be non-empty, even-length lists that fill their extension.
        """
        for bad in (b"", b"\x00", b"\x01\x03", b"\x03\x03\x04\x03", b"\x04\x03\x04"):
            self.assertRejected(buildHello(extra=[(0x002B, bad)]))
        for extensionType in (0x000A, 0x000D):
            for bad in (b"", b"\x00\x00", b"\x00\x01\x00", b"\x00\x04\x00\x1d"):
                self.assertRejected(buildHello(extra=[(extensionType, bad)]))
        hello = parsed(buildHello(extra=[(0x000A, b"\x00\x04\x00\x1d\x00\x17")]))
        self.assertEqual(hello.supportedGroups, (0x001D, 0x0017))


class RealStackTests(SynchronousTestCase):
    """
    ClientHellos made just now by real TLS stacks, with no network, parse to
    what they were asked to say.
    """

    def test_pyOpenSSLThroughTwisted(self) -> None:
        hello = parsed(
            twistedHello(
                optionsForClientTLS(
                    "relay.example.org", acceptableProtocols=[b"h2", b"http/1.1"]
                )
            )
        )
        self.assertEqual(hello.serverName, "relay.example.org")
        self.assertEqual(hello.alpn, ("h2", "http/1.1"))
        self.assertEqual(hello.highestVersion, 0x0304)

    def test_pyOpenSSLNoSNI(self) -> None:
        """
        What a Syncthing relay client sends: no SNI, ALPN bep-relay.
        """
        for creator in (
            CertificateOptions(acceptableProtocols=[b"bep-relay"]),
            optionsForClientTLS(
                "relay.example.org",
                acceptableProtocols=[b"bep-relay"],
                sendServerName=False,
            ),
        ):
            data = twistedHello(creator)
            hello = parsed(data)
            self.assertIsNone(hello.serverName)
            self.assertFalse(hello.hasServerNameExtension)
            self.assertEqual(hello.alpn, ("bep-relay",))
            matcher = tlsFactory.build({"no_sni": True, "alpn": "bep-relay"})
            self.assertIs(assertConsistent(matcher, data), MATCH)

    def test_pyOpenSSLTLS12Only(self) -> None:
        data = twistedHello(
            optionsForClientTLS(
                "old.example.org",
                extraCertificateOptions={"lowerMaximumSecurityTo": TLSVersion.TLSv1_2},
            )
        )
        hello = parsed(data)
        self.assertEqual(hello.serverName, "old.example.org")
        self.assertEqual(hello.offeredVersions, (0x0303,))
        self.assertIs(tlsFactory.build({"version": "1.2"}).match(Peek(data)), MATCH)
        self.assertIs(tlsFactory.build({"version": 1.3}).match(Peek(data)), NO_MATCH)

    def test_pythonSSL(self) -> None:
        hello = parsed(clientHello("device.example.net", ["bep/1.0"]))
        self.assertEqual(hello.serverName, "device.example.net")
        self.assertEqual(hello.alpn, ("bep/1.0",))
        hello = parsed(clientHello(None, ["bep-relay"]))
        self.assertIsNone(hello.serverName)
        self.assertEqual(hello.alpn, ("bep-relay",))
        hello = parsed(clientHello("x.example", maximum=ssl.TLSVersion.TLSv1_2))
        self.assertEqual(hello.highestVersion, 0x0303)
        self.assertEqual(hello.alpn, ())


# Hypothesis properties.

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
corpusFiles = st.sampled_from(TLS_FILES)


def checkResult(result: object) -> None:
    assert isinstance(result, ClientHello) or result in (NEED_MORE, NO_MATCH), result


def withoutRecords(hello: ClientHello) -> ClientHello:
    return attrs.evolve(hello, recordLengths=())


class PropertyTests(SynchronousTestCase):
    """
    The parser never raises, and its answers do not depend on how the bytes
    were cut into records or reads.
    """

    @FAST
    @given(st.binary(max_size=600))
    def test_randomBytes(self, data: bytes) -> None:
        checkResult(parseClientHello(data))
        self.assertIsInstance(tlsFactory.build({}).match(Peek(data)), Verdict)

    @FAST
    @given(
        st.sampled_from([b"\x16\x03\x01", b"\x16\x03\x03\x02\x00\x01\x00"]),
        st.binary(max_size=600),
    )
    def test_randomAfterHeader(self, head: bytes, data: bytes) -> None:
        checkResult(parseClientHello(head + data))

    @FAST
    @given(corpusFiles, st.data())
    def test_mutations(self, name: str, data: st.DataObject) -> None:
        """
        Corrupted or truncated corpus files never raise, and the matcher's
        verdict for them does not depend on where they are cut.
        """
        original = bytearray(corpus(name))
        for _ in range(data.draw(st.integers(1, 6))):
            at = data.draw(st.integers(0, len(original) - 1))
            original[at] = data.draw(st.integers(0, 255))
        mutated = bytes(original[: data.draw(st.integers(0, len(original)))])
        checkResult(parseClientHello(mutated))
        matcher = tlsFactory.build({})
        cut = data.draw(st.integers(0, len(mutated)))
        self.assertIs(
            verdictOf(matcher, [mutated[:cut], mutated[cut:]]),
            matcher.match(Peek(mutated)),
        )

    @FAST
    @given(
        corpusFiles,
        st.lists(st.integers(1, 16384), min_size=1, max_size=8),
        st.sampled_from([0x0300, 0x0301, 0x0303, 0x0304]),
    )
    def test_resplitRecords(self, name: str, sizes: list[int], version: int) -> None:
        """
        The same handshake message cut into records of any sizes parses to
        the same ClientHello, with the new record lengths.
        """
        data = corpus(name)
        message = handshakeMessage(data)
        resplit = inRecords(message, sizes, version)
        hello = parsed(resplit)
        self.assertEqual(withoutRecords(hello), withoutRecords(parsed(data)))
        self.assertEqual(sum(hello.recordLengths), len(message))

    @FAST
    @given(st.sampled_from(TLS_FILES), st.integers(1, 50))
    def test_tinyRecords(self, name: str, size: int) -> None:
        """
        Even records of a few bytes, splitting the handshake header itself,
        reassemble.
        """
        data = corpus(name)
        resplit = inRecords(handshakeMessage(data), [size])
        self.assertEqual(withoutRecords(parsed(resplit)), withoutRecords(parsed(data)))

    @FAST
    @given(
        st.sampled_from(
            [
                "record",
                "handshake",
                "extensions",
                "sniExtension",
                "sni",
                "name",
                "alpnExtension",
                "alpn",
            ]
        ),
        st.integers(-300, 300).filter(bool),
        st.binary(max_size=8),
    )
    def test_lyingLengths(self, field: str, lie: int, more: bytes) -> None:
        """
        A length field that lies, up or down, gives L{NO_MATCH} or
        L{NEED_MORE}, never a hello and never an exception, whatever follows.
        """
        try:
            data = buildHello(
                sni=b"discovery.example.com",
                alpn=(b"h2", b"http/1.1"),
                lies={field: lie},
            )
        except OverflowError:
            assume(False)
        self.assertIn(parseClientHello(data), (NO_MATCH, NEED_MORE))
        self.assertIn(parseClientHello(data + more), (NO_MATCH, NEED_MORE))

    @FAST
    @given(
        st.one_of(
            st.none(),
            st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True),
        ),
        st.lists(st.binary(min_size=1, max_size=20), max_size=5),
        st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20),
        st.dictionaries(
            st.integers(0x0100, 0xFFFF).filter(
                lambda t: t not in (0x002B, 0xFE0D, 0x0A0A)
            ),
            st.binary(max_size=30),
            max_size=6,
        ),
        st.binary(max_size=32),
    )
    def test_roundTrip(
        self,
        sni: str | None,
        alpn: list[bytes],
        ciphers: list[int],
        extra: dict[int, bytes],
        sessionId: bytes,
    ) -> None:
        """
        A hello made from chosen fields parses back to them, whole and in
        pieces.
        """
        data = buildHello(
            sni=None if sni is None else sni.encode(),
            alpn=alpn,
            ciphers=ciphers,
            extra=list(extra.items()),
            sessionId=sessionId,
        )
        hello = parsed(data)
        self.assertEqual(hello.serverName, sni)
        self.assertEqual(hello.alpn, tuple(a.decode("latin-1") for a in alpn))
        self.assertEqual(hello.cipherSuites, tuple(ciphers))
        self.assertEqual(hello.sessionId, sessionId)
        for extensionType, value in extra.items():
            self.assertEqual(hello.extension(extensionType), value)
        self.assertIs(parseClientHello(data[:-1]), NEED_MORE)


# The matcher.


class FactoryTests(SynchronousTestCase):
    """
    L{tlsFactory} is a plugin like any other, and refuses bad options with a
    clear sentence.
    """

    def test_plugin(self) -> None:
        self.assertTrue(verifyObject(IMatcherFactory, tlsFactory))
        self.assertIs(matcherFactories()["tls"], tlsFactory)

    def assertConfigError(self, options: object, *words: str) -> None:
        with self.assertRaises(MatcherConfigError) as raised:
            tlsFactory.build(options)
        message = str(raised.exception)
        for word in words:
            self.assertIn(word, message)

    def test_badOptions(self) -> None:
        self.assertConfigError("h2", "table")
        self.assertConfigError({"snl": "a"}, "unknown option 'snl'", "sni")
        self.assertConfigError({"sni": []}, "tls.sni")
        self.assertConfigError({"sni": 5}, "tls.sni")
        self.assertConfigError({"sni": [""]}, "tls.sni")
        self.assertConfigError({"sni": "a*.example.com"}, "wildcard")
        self.assertConfigError({"sni": "*.*.example.com"}, "wildcard")
        self.assertConfigError({"sni": "*."}, "wildcard")
        self.assertConfigError({"sni_regex": "("}, "tls.sni_regex", "regular")
        self.assertConfigError({"sni_regex": ""}, "tls.sni_regex")
        self.assertConfigError({"sni_regex": ["a"]}, "tls.sni_regex")
        self.assertConfigError({"alpn": []}, "tls.alpn")
        self.assertConfigError({"alpn": [1]}, "tls.alpn")
        self.assertConfigError({"version": "1.4"}, "tls.version", "'1.4'", "1.3")
        self.assertConfigError({"version": 13}, "tls.version")
        self.assertConfigError({"version": []}, "tls.version")
        self.assertConfigError({"ech": "yes"}, "tls.ech", "true or false")
        self.assertConfigError({"no_sni": 1}, "tls.no_sni")
        self.assertConfigError({"ja4": "t13d1516h2"}, "tls.ja4", "JA4")
        self.assertConfigError({"ja4": []}, "tls.ja4")
        self.assertConfigError({"no_sni": True, "sni": "a.example"}, "no_sni")
        self.assertConfigError({"no_sni": True, "sni_regex": "a"}, "no_sni")

    def test_shortForms(self) -> None:
        """
        C{true} and C{{}} mean any ClientHello; single values stand for
        lists of one; TOML's unquoted C{1.3} is the version it looks like.
        """
        data = corpus("openssl-sni-alpn-h2.bin")
        for options in (
            True,
            {},
            {"sni": "Discovery.Example.com"},
            {"alpn": "h2"},
            {"version": 1.3},
            {"version": [1.2, "1.3"]},
            {"ja4": "T13D3111h2_E8F1E7E78F70_1f22a2ca17c4"},
        ):
            self.assertIs(tlsFactory.build(options).match(Peek(data)), MATCH, options)


ALL = set(TLS_FILES)
MATCHES: list[tuple[object, set[str]]] = [
    ({}, ALL),
    (
        {"sni": "discovery.example.com"},
        {"chromium-sni-alpn-pq.bin", "curl-sni-alpn.bin", "openssl-sni-alpn-h2.bin"},
    ),
    (
        {"sni": ["*.example.com"]},
        ALL - {"openssl-nosni-alpn-bep-relay.bin", "python-ssl-sni-alpn.bin"},
    ),
    (
        {"sni_regex": r"(discovery|relay)\.EXAMPLE\.com"},
        {
            "chromium-sni-alpn-pq.bin",
            "curl-sni-alpn.bin",
            "openssl-sni-alpn-h2.bin",
            "openssl-tls12-sni.bin",
        },
    ),
    (
        {"alpn": ["bep-relay", "bep/1.0"]},
        {"openssl-nosni-alpn-bep-relay.bin", "python-ssl-sni-alpn.bin"},
    ),
    ({"no_sni": True}, {"openssl-nosni-alpn-bep-relay.bin"}),
    ({"version": "1.2"}, {"openssl-tls12-sni.bin"}),
    ({"version": ["1.3"]}, ALL - {"openssl-tls12-sni.bin"}),
    ({"ech": True}, {"chromium-sni-alpn-pq.bin"}),
    ({"ech": False}, ALL - {"chromium-sni-alpn-pq.bin"}),
    ({"ja4": ["t12d280700_d943125447b4_e7e480e5a997"]}, {"openssl-tls12-sni.bin"}),
    (
        {"sni": "*.example.com", "alpn": ["h2"], "version": "1.3", "ech": False},
        {"curl-sni-alpn.bin", "openssl-sni-alpn-h2.bin"},
    ),
]


class MatcherTests(SynchronousTestCase):
    """
    The C{tls} matcher on real first flights, however they are cut.
    """

    def test_corpus(self) -> None:
        """
        Each option set matches exactly the corpus files it should, with
        the same verdict whole, byte by byte and cut at every offset; the
        non-TLS files match none.
        """
        for options, expected in MATCHES:
            matcher = tlsFactory.build(options)
            for name in TLS_FILES + OTHER_FILES:
                want = MATCH if name in expected else NO_MATCH
                self.assertIs(
                    assertConsistent(matcher, corpus(name)), want, (options, name)
                )

    def test_needMore(self) -> None:
        """
        A partial hello is L{NEED_MORE}, whatever the options.
        """
        data = corpus("openssl-split-records.bin")
        for options, _ in MATCHES:
            matcher = tlsFactory.build(options)
            self.assertIs(matcher.match(Peek(data[:600])), NEED_MORE)

    def test_sharedParse(self) -> None:
        """
        Several matchers of one connection share one parse.
        """
        peek = Peek(corpus("curl-sni-alpn.bin"))
        tlsFactory.build({"sni": "discovery.example.com"}).match(peek)
        first = peek.parse(parseClientHello)
        tlsFactory.build({"alpn": "h2"}).match(peek)
        self.assertIs(peek.parse(parseClientHello), first)

    def test_describe(self) -> None:
        """
        C{describe} says what the hello offered, and what the options
        looked at.
        """
        cases = [
            (
                {},
                "openssl-nosni-alpn-bep-relay.bin",
                "sni=- alpn=bep-relay",
            ),
            (
                {"sni": "discovery.example.com"},
                "chromium-sni-alpn-pq.bin",
                "sni=discovery.example.com alpn=h2,http/1.1",
            ),
            (
                {"version": "1.2", "ech": False},
                "openssl-tls12-sni.bin",
                "sni=relay.example.com alpn=- version=1.2 ech=no",
            ),
            (
                {"ja4": "t12d280700_d943125447b4_e7e480e5a997"},
                "openssl-tls12-sni.bin",
                "sni=relay.example.com alpn=- ja4=t12d280700_d943125447b4_e7e480e5a997",
            ),
        ]
        for options, name, expected in cases:
            peek = Peek(corpus(name))
            matcher = tlsFactory.build(options)
            self.assertIs(matcher.match(peek), MATCH)
            self.assertEqual(matcher.describe(peek), expected)

    def test_describeEscapes(self) -> None:
        """
        ALPN names with odd bytes cannot break a log line.
        """
        peek = Peek(buildHello(alpn=(b"a b,c\\\n\xff",)))
        self.assertEqual(
            tlsFactory.build({}).describe(peek),
            "sni=example.com alpn=a\\x20b\\x2cc\\x5c\\x0a\\xff",
        )

    def test_greaseVersionIgnored(self) -> None:
        """
        The C{version} option looks at the highest non-GREASE version.
        """
        data = buildHello(versions=(0xFAFA, 0x0303))
        self.assertIs(tlsFactory.build({"version": "1.2"}).match(Peek(data)), MATCH)
        data = buildHello(versions=(0xFAFA,))
        self.assertIs(
            tlsFactory.build({"version": ["1.2", "1.3"]}).match(Peek(data)), NO_MATCH
        )
