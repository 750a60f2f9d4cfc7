"""
Tests for the matchers of datagram protocols: C{wireguard}, C{openvpn} over
UDP, C{dns} and C{stun}, on bytes from the real programs where Debian has
them (C{openvpn}, C{dig}) and from the specifications otherwise.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from demux import (
    MATCH,
    NEED_MORE,
    NO_MATCH,
    DatagramPeek,
    MatcherConfigError,
    Peek,
    transportsOf,
)
from demux.matchers import (
    dnsFactory,
    dtlsFactory,
    openvpnFactory,
    quicFactory,
    stunFactory,
    wireguardFactory,
)
from demux.matchers._dns import DNSQuery, parseQuery
from demux.matchers._stun import STUNRequest, parseRequest
from demux.matchers._wireguard import mac1, mac1Key
from demux.testing import assertConsistent

from ._corpus import FILES
from ._datagrams import captureDatagrams, have

DATAGRAM_MATCHERS = [
    dnsFactory,
    dtlsFactory,
    quicFactory,
    stunFactory,
    wireguardFactory,
]

# RFC 5769 section 2.1: a sample Binding request (SOFTWARE, PRIORITY,
# ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT).
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)

# RFC 5769 section 2.2: the sample IPv4 response, which is no request.
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)


def wireguardInitiation(serverPublicKey: bytes, sender: int = 0x1234) -> bytes:
    """
    A handshake initiation laid out as the WireGuard paper's section 5.4.2
    gives it: type and reserved zeros, sender index (little endian), 32
    bytes of ephemeral key, 48 of encrypted static key, 28 of encrypted
    timestamp (random stand-ins: only the responder could check them), then
    a real mac1 for C{serverPublicKey} and a zero mac2 (no cookie).
    """
    body = (
        b"\x01\x00\x00\x00"
        + sender.to_bytes(4, "little")
        + os.urandom(32 + 48 + 28)
    )
    return body + mac1(body, mac1Key(serverPublicKey)) + bytes(16)


class TransportsTests(SynchronousTestCase):
    def test_datagramOnly(self) -> None:
        for factory in DATAGRAM_MATCHERS:
            self.assertEqual(transportsOf(factory), frozenset({"datagram"}), factory)
            self.assertIs(factory.build({}).match(Peek(b"\x00" * 200)), NO_MATCH)
            self.assertIs(factory.build({}).match(DatagramPeek()), NEED_MORE)

    def test_openvpnBoth(self) -> None:
        self.assertEqual(
            transportsOf(openvpnFactory), frozenset({"stream", "datagram"})
        )


class STUNTests(SynchronousTestCase):
    def test_rfc5769(self) -> None:
        request = parseRequest(RFC5769_REQUEST)
        assert isinstance(request, STUNRequest)
        self.assertEqual(request.method, 1)
        self.assertTrue(request.fingerprinted)
        self.assertEqual(request.attributes[-1], 0x8028)
        peek = DatagramPeek([RFC5769_REQUEST])
        self.assertIs(stunFactory.build({}).match(peek), MATCH)
        self.assertEqual(stunFactory.build({}).describe(peek), "stun=binding")
        self.assertIs(
            stunFactory.build({"methods": ["allocate"]}).match(peek), NO_MATCH
        )

    def test_notRequests(self) -> None:
        bad = bytearray(RFC5769_REQUEST)
        bad[-1] ^= 1  # a wrong FINGERPRINT
        for datagram in (
            RFC5769_RESPONSE,
            bytes(bad),
            RFC5769_REQUEST[:-4],
            RFC5769_REQUEST + b"\x00\x00\x00\x00",
            RFC5769_REQUEST[:4] + b"\x21\x12\xa4\x43" + RFC5769_REQUEST[8:],
            b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42",
        ):
            self.assertIs(
                stunFactory.build({}).match(DatagramPeek([datagram])), NO_MATCH
            )

    def test_minimal(self) -> None:
        """
        A Binding request with no attributes, as a bare ICE check sends.
        """
        datagram = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"t" * 12
        self.assertIs(stunFactory.build({}).match(DatagramPeek([datagram])), MATCH)
        allocate = b"\x00\x03" + datagram[2:]
        self.assertIs(
            stunFactory.build({"methods": ["binding", "allocate"]}).match(
                DatagramPeek([allocate])
            ),
            MATCH,
        )

    def test_realClient(self) -> None:
        """
        coturn's C{turnutils_stunclient} (a real RFC 5389 client from
        Debian) sends a Binding request the matcher takes.
        """
        if not have("turnutils_stunclient"):
            self.fail("turnutils_stunclient is missing: tests/run installs coturn")
        datagrams = captureDatagrams(
            lambda port: ["turnutils_stunclient", "-p", str(port), "127.0.0.1"], count=1
        )
        self.assertEqual(len(datagrams), 1)
        peek = DatagramPeek(datagrams)
        self.assertIs(stunFactory.build({}).match(peek), MATCH)
        self.assertEqual(stunFactory.build({}).describe(peek), "stun=binding")
        self.assertIs(
            stunFactory.build({"methods": ["allocate"]}).match(peek), NO_MATCH
        )

    def test_options(self) -> None:
        for options in ({"methods": ["bind"]}, {"method": ["binding"]}, "binding"):
            self.assertRaises(MatcherConfigError, stunFactory.build, options)


class WireGuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key = os.urandom(32)
        self.encoded = base64.b64encode(self.key).decode("ascii")

    def test_initiation(self) -> None:
        datagram = wireguardInitiation(self.key)
        peek = DatagramPeek([datagram])
        self.assertIs(wireguardFactory.build({}).match(peek), MATCH)
        self.assertIs(
            wireguardFactory.build({"public_key": self.encoded}).match(peek), MATCH
        )
        other = base64.b64encode(os.urandom(32)).decode("ascii")
        self.assertIs(
            wireguardFactory.build({"public_key": [other]}).match(peek), NO_MATCH
        )
        self.assertIs(
            wireguardFactory.build({"public_key": [other, self.encoded]}).match(peek),
            MATCH,
        )
        self.assertEqual(
            wireguardFactory.build({}).describe(peek), "wireguard sender=00001234"
        )

    def test_notInitiation(self) -> None:
        datagram = wireguardInitiation(self.key)
        response = b"\x02\x00\x00\x00" + os.urandom(88)
        for bad in (datagram[:-1], datagram + b"\x00", b"\x01\x01" + datagram[2:], response):
            self.assertIs(wireguardFactory.build({}).match(DatagramPeek([bad])), NO_MATCH)
        tampered = bytearray(datagram)
        tampered[50] ^= 1
        self.assertIs(
            wireguardFactory.build({"public_key": self.encoded}).match(
                DatagramPeek([bytes(tampered)])
            ),
            NO_MATCH,
        )

    def test_options(self) -> None:
        for options in ({"public_key": "short"}, {"public_key": []}, {"key": "x"}):
            self.assertRaises(MatcherConfigError, wireguardFactory.build, options)


class OpenVPNTests(SynchronousTestCase):
    """
    Debian's OpenVPN as a UDP client, each control channel wrapping.
    """

    if not (have("openvpn") and have("openssl")):
        skip = "openvpn or openssl is not installed (tests/run installs them)"

    @classmethod
    def setUpClass(cls) -> None:
        cls.directory = tempfile.TemporaryDirectory()
        directory = cls.directory.name

        def run(*argv: str) -> None:
            subprocess.run(argv, cwd=directory, check=True, capture_output=True)

        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "1", "-subj", "/CN=test CA")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj",
            "/CN=client")
        run("openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.crt",
            "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.crt", "-days", "1")
        run("openvpn", "--genkey", "secret", "ta.key")
        run("openvpn", "--genkey", "tls-crypt-v2-server", "v2server.key")
        run("openvpn", "--tls-crypt-v2", "v2server.key", "--genkey",
            "tls-crypt-v2-client", "v2client.key")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.directory.cleanup()

    def _first(self, *extra: str) -> bytes:
        datagrams = captureDatagrams(
            lambda port: [
                "openvpn", "--client", "--dev", "null", "--proto", "udp",
                "--remote", "127.0.0.1", str(port), "--nobind",
                "--ca", "ca.crt", "--cert", "client.crt", "--key", "client.key",
                "--connect-retry-max", "1", "--verb", "0", *extra,
            ],
            count=1,
            cwd=self.directory.name,
        )
        self.assertEqual(len(datagrams), 1)
        return datagrams[0]

    def _check(self, datagram: bytes, description: str) -> None:
        peek = DatagramPeek([datagram])
        matcher = openvpnFactory.build({})
        self.assertIs(matcher.match(peek), MATCH)
        self.assertEqual(matcher.describe(peek), description)
        self.assertIs(matcher.match(DatagramPeek([datagram[:13]])), NO_MATCH)
        self.assertIs(matcher.match(DatagramPeek([b"\x40" + datagram[1:]])), NO_MATCH)
        # The same packet over TCP has its length in front.
        stream = len(datagram).to_bytes(2, "big") + datagram
        self.assertIs(assertConsistent(matcher, stream), MATCH)
        self.assertIs(matcher.match(Peek(datagram)), NO_MATCH)

    def test_plain(self) -> None:
        self._check(self._first(), "openvpn=v2 wrap=none")

    def test_tlsAuth(self) -> None:
        self._check(self._first("--tls-auth", "ta.key", "1"), "openvpn=v2 wrap=tls-auth")

    def test_tlsCrypt(self) -> None:
        self._check(self._first("--tls-crypt", "ta.key"), "openvpn=v2 wrap=tls-crypt")

    def test_tlsCryptV2(self) -> None:
        datagram = self._first("--tls-crypt-v2", "v2client.key")
        self._check(datagram, "openvpn=v3 wrap=tls-crypt-v2")
        self.assertIs(
            openvpnFactory.build({"versions": [2]}).match(DatagramPeek([datagram])),
            NO_MATCH,
        )


class OpenVPNStreamTests(SynchronousTestCase):
    def test_streamUnchanged(self) -> None:
        """
        The TCP captures still match as they did.
        """
        data = FILES["openvpn-tcp.bin"]
        self.assertIs(assertConsistent(openvpnFactory.build({}), data), MATCH)
        self.assertIs(
            openvpnFactory.build({}).match(DatagramPeek([data])), NO_MATCH
        )


def dig(*arguments: str) -> bytes:
    datagrams = captureDatagrams(
        lambda port: [
            "dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+timeout=2",
            *arguments,
        ],
        count=1,
    )
    assert len(datagrams) == 1, datagrams
    return datagrams[0]


class DigTests(SynchronousTestCase):
    """
    Queries from Debian's C{dig} (bind9-dnsutils).
    """

    if not have("dig"):
        skip = "dig is not installed (tests/run installs bind9-dnsutils)"

    def test_query(self) -> None:
        datagram = dig("www.Example.com", "AAAA")
        query = parseQuery(datagram)
        assert isinstance(query, DNSQuery), query
        self.assertEqual((query.name, query.type, query.qclass), ("www.Example.com", 28, 1))
        self.assertEqual(query.additional, 1)  # dig's EDNS OPT record
        peek = DatagramPeek([datagram])
        self.assertIs(dnsFactory.build({}).match(peek), MATCH)
        self.assertIs(dnsFactory.build({"names": "*.example.com"}).match(peek), MATCH)
        self.assertIs(dnsFactory.build({"names": "example.com"}).match(peek), NO_MATCH)
        self.assertIs(dnsFactory.build({"types": ["A"]}).match(peek), NO_MATCH)
        self.assertIs(dnsFactory.build({"types": ["aaaa", 1]}).match(peek), MATCH)
        self.assertEqual(
            dnsFactory.build({}).describe(peek), "dns=www.Example.com type=AAAA"
        )

    def test_noEdns(self) -> None:
        datagram = dig("+noedns", "example.org", "TXT")
        query = parseQuery(datagram)
        assert isinstance(query, DNSQuery), query
        self.assertEqual((query.name, query.type, query.additional), ("example.org", 16, 0))

    def test_root(self) -> None:
        query = parseQuery(dig(".", "NS"))
        assert isinstance(query, DNSQuery), query
        self.assertEqual(query.name, ".")

    def test_damaged(self) -> None:
        datagram = dig("example.net")
        response = bytearray(datagram)
        response[2] |= 0x80
        for bad in (datagram[:-1], datagram + b"\x00", bytes(response)):
            self.assertIs(dnsFactory.build({}).match(DatagramPeek([bad])), NO_MATCH)


class DNSSpecTests(SynchronousTestCase):
    def test_options(self) -> None:
        for options in (
            {"names": ["a.*.com"]},
            {"names": []},
            {"types": ["BOGUS"]},
            {"types": [0]},
            {"name": "x"},
        ):
            self.assertRaises(MatcherConfigError, dnsFactory.build, options)

    def test_compressedQuestion(self) -> None:
        datagram = bytes.fromhex("1234 0100 0001 0000 0000 0000 c00c 0001 0001")
        self.assertIs(parseQuery(datagram), NO_MATCH)

    def test_oddLabel(self) -> None:
        datagram = bytes.fromhex("1234 0100 0001 0000 0000 0000 03 612e20 00 0001 0001")
        query = parseQuery(datagram)
        assert isinstance(query, DNSQuery)
        self.assertEqual(query.name, "a\\046\\032")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def _neverRaises(datagram: bytes) -> None:
    for factory in DATAGRAM_MATCHERS + [openvpnFactory]:
        matcher = factory.build({})
        peek = DatagramPeek([datagram])
        if matcher.match(peek) is MATCH:
            matcher.describe(peek)


class HostileTests(SynchronousTestCase):
    def test_neverRaises(self) -> None:
        """
        No datagram makes a datagram matcher raise.
        """
        _neverRaises()
