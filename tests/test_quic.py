"""
Tests for the QUIC Initial reader (L{demux._quic}) and the C{quic} matcher.
"""

from __future__ import annotations

from pathlib import Path

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
    parseClientHello,
    transportsOf,
)
from demux._clienthello import ClientHello
from demux._quic import (
    MALFORMED,
    NOT_INITIAL,
    NOT_QUIC,
    QUIC_V1,
    QUIC_V2,
    SHORT_DATAGRAM,
    TRUNCATED,
    UNDECRYPTABLE,
    UNKNOWN_VERSION,
    ClientInitial,
    InitialDatagram,
    NotClientInitial,
    clientInitialKeys,
    parseClientInitial,
    parseInitialDatagram,
    readLongHeader,
    readShortHeaderDestination,
)
from demux.matchers import quicFactory, tlsFactory

from ._corpus import FILES
from ._quicpackets import (
    cryptoFrame,
    initialDatagram,
    initialPacket,
    zeroRttPacket,
)

try:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
except ImportError:  # pragma: no cover
    QuicConnection = None

_DATA = Path(__file__).parent / "data"


def _hex(name: str) -> bytes:
    return bytes.fromhex((_DATA / name).read_text().replace("\n", ""))


RFC9001_INITIAL = _hex("rfc9001-client-initial.hex")
RFC9369_INITIAL = _hex("rfc9369-client-initial.hex")
RFC_DCID = bytes.fromhex("8394c8f03e515708")


def _rfcHello() -> bytes:
    """
    The ClientHello handshake message of RFC 9001 appendix A.2.
    """
    first = parseInitialDatagram(RFC9001_INITIAL)
    assert isinstance(first, InitialDatagram)
    ((offset, message),) = first.crypto
    assert offset == 0
    return message


RFC_HELLO = _rfcHello()


def aioquicDatagrams(
    serverName: str,
    alpn: list[str],
    version: int = QUIC_V1,
) -> list[bytes]:
    """
    The first flight of aioquic's QUIC client, made in memory.
    """
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=alpn,
        server_name=serverName,
        original_version=version,
        supported_versions=[version],
    )
    connection = QuicConnection(configuration=configuration)
    connection.connect(("127.0.0.1", 4433), now=0.0)
    return [data for data, _ in connection.datagrams_to_send(now=0.0)]


class RFCVectorTests(SynchronousTestCase):
    """
    The client Initials of RFC 9001 (v1) and RFC 9369 (v2) appendix A.
    """

    def test_keys(self) -> None:
        v1 = clientInitialKeys(QUIC_V1, RFC_DCID)
        self.assertEqual(
            (v1.key.hex(), v1.iv.hex(), v1.hp.hex()),
            (
                "1f369613dd76d5467730efcbe3b1a22d",
                "fa044b2f42a3fd3b46fb255c",
                "9f50449e04a0e810283a1e9933adedd2",
            ),
        )
        v2 = clientInitialKeys(QUIC_V2, RFC_DCID)
        self.assertEqual(
            (v2.key.hex(), v2.iv.hex(), v2.hp.hex()),
            (
                "8b1a0bc121284290a29e0971b5cd045d",
                "91f73e2351d8fa91660e909f",
                "45b95e15235d6f45a6b19cbcb0294ba9",
            ),
        )

    def _check(self, datagram: bytes, version: int) -> None:
        initial = parseClientInitial((datagram,))
        assert isinstance(initial, ClientInitial), initial
        self.assertEqual(initial.version, version)
        self.assertEqual(initial.destinationConnectionId, RFC_DCID)
        self.assertEqual(initial.sourceConnectionId, b"")
        self.assertEqual(initial.token, b"")
        hello = initial.clientHello
        self.assertEqual(hello.serverName, "example.com")
        self.assertEqual(hello.alpn, ("alpn",))
        self.assertEqual(hello.carrier, "quic")
        self.assertEqual(hello.recordLengths, ())
        self.assertEqual(hello.handshakeLength, 0xED)

    def test_v1(self) -> None:
        self._check(RFC9001_INITIAL, QUIC_V1)

    def test_v2(self) -> None:
        self._check(RFC9369_INITIAL, QUIC_V2)

    def test_matcher(self) -> None:
        """
        C{quic} matches both; C{versions} picks one; C{describe} names the
        version, SNI and ALPN.
        """
        v1, v2 = DatagramPeek([RFC9001_INITIAL]), DatagramPeek([RFC9369_INITIAL])
        anyQuic = quicFactory.build({})
        self.assertIs(anyQuic.match(v1), MATCH)
        self.assertIs(anyQuic.match(v2), MATCH)
        self.assertEqual(anyQuic.describe(v1), "quic=v1 sni=example.com alpn=alpn")
        self.assertEqual(anyQuic.describe(v2), "quic=v2 sni=example.com alpn=alpn")
        onlyV2 = quicFactory.build({"versions": ["v2"]})
        self.assertIs(onlyV2.match(v1), NO_MATCH)
        self.assertIs(onlyV2.match(v2), MATCH)
        self.assertIs(quicFactory.build({"versions": 1}).match(v1), MATCH)

    def test_streams(self) -> None:
        """
        The same bytes on a stream are not QUIC: the matcher is for
        datagrams only.
        """
        self.assertIs(quicFactory.build({}).match(Peek(RFC9001_INITIAL)), NO_MATCH)
        self.assertEqual(transportsOf(quicFactory), frozenset({"datagram"}))

    def test_noDatagramYet(self) -> None:
        self.assertIs(quicFactory.build({}).match(DatagramPeek()), NEED_MORE)


class HeaderTests(SynchronousTestCase):
    """
    Reading connection IDs without decrypting.
    """

    def test_longHeader(self) -> None:
        header = readLongHeader(RFC9001_INITIAL)
        assert header is not None
        self.assertEqual(header.version, QUIC_V1)
        self.assertEqual(header.destinationConnectionId, RFC_DCID)
        self.assertEqual(header.sourceConnectionId, b"")
        self.assertEqual(header.packetType, "initial")
        self.assertEqual(header.length, 15)
        v2 = readLongHeader(RFC9369_INITIAL)
        assert v2 is not None
        self.assertEqual(v2.packetType, "initial")
        self.assertEqual(v2.typeBits, 1)

    def test_unknownVersion(self) -> None:
        """
        Any version's invariant header is read, connection IDs of up to 255
        bytes included; its packet type is unknown.
        """
        datagram = b"\xc0\x0a\x1a\x2a\x3a" + b"\x1e" + b"d" * 30 + b"\x02ab" + b"rest"
        header = readLongHeader(datagram)
        assert header is not None
        self.assertEqual(header.version, 0x0A1A2A3A)
        self.assertEqual(header.destinationConnectionId, b"d" * 30)
        self.assertEqual(header.sourceConnectionId, b"ab")
        self.assertIsNone(header.packetType)

    def test_notLong(self) -> None:
        for datagram in (
            b"",
            b"\x40" + RFC9001_INITIAL[1:],
            RFC9001_INITIAL[:10],
            b"\xc0\x00\x00\x00\x01\x15" + b"x" * 21 + b"\x00",
        ):
            self.assertIsNone(readLongHeader(datagram), datagram[:8])

    def test_shortHeader(self) -> None:
        self.assertEqual(
            readShortHeaderDestination(b"\x41abcdefgh-payload", 8), b"abcdefgh"
        )
        self.assertIsNone(readShortHeaderDestination(b"\x41abc", 8))
        self.assertIsNone(readShortHeaderDestination(RFC9001_INITIAL, 8))
        self.assertIsNone(readShortHeaderDestination(b"", 0))


class VerdictTests(SynchronousTestCase):
    """
    Each way of not being a client Initial is told apart, and never raises.
    """

    def _reason(self, *datagrams: bytes, initial: bool = False) -> str:
        """
        Why C{datagrams} are not a client Initial with a ClientHello; the
        C{quic} matcher judges the first datagram alone, so it still
        matches an C{initial} whose ClientHello is malformed.
        """
        result = parseClientInitial(datagrams)
        assert isinstance(result, NotClientInitial), result
        self.assertIs(
            quicFactory.build({}).match(DatagramPeek(datagrams)),
            MATCH if initial else NO_MATCH,
        )
        self.assertIs(
            tlsFactory.build({}).match(DatagramPeek(datagrams)), NO_MATCH
        )
        return result.reason

    def test_notQuic(self) -> None:
        self.assertEqual(self._reason(b"\x16\x03\x01" + b"\x00" * 1300), NOT_QUIC)
        self.assertEqual(self._reason(b""), NOT_QUIC)

    def test_versionNegotiation(self) -> None:
        self.assertEqual(
            self._reason(b"\xc0\x00\x00\x00\x00\x00\x00" + b"\x00" * 1200),
            NOT_INITIAL,
        )

    def test_unknownVersion(self) -> None:
        """
        An unknown version is exposed, for the flow table's rule; C{quic}
        matches it only when it is named.
        """
        datagram = bytearray(RFC9001_INITIAL)
        datagram[1:5] = b"\xff\x00\x00\x1d"
        result = parseClientInitial((bytes(datagram),))
        assert isinstance(result, NotClientInitial)
        self.assertEqual(result.reason, UNKNOWN_VERSION)
        self.assertEqual(result.version, 0xFF00001D)
        peek = DatagramPeek([bytes(datagram)])
        self.assertIs(quicFactory.build({}).match(peek), NO_MATCH)
        named = quicFactory.build({"versions": [0xFF00001D]})
        self.assertIs(named.match(peek), MATCH)
        self.assertEqual(named.describe(peek), "quic=0xff00001d")
        self.assertIs(named.match(DatagramPeek([bytes(datagram[:1000])])), NO_MATCH)

    def test_short(self) -> None:
        """
        A datagram carrying an Initial must be 1200 bytes long at least.
        """
        packet = initialPacket(cryptoFrame(0, RFC_HELLO), b"12345678")
        self.assertEqual(self._reason(packet), SHORT_DATAGRAM)

    def test_truncated(self) -> None:
        """
        A Length field running past the datagram's end.
        """
        datagram = bytearray(RFC9001_INITIAL)
        datagram[16:18] = b"\x44\xff"
        self.assertEqual(self._reason(bytes(datagram)), TRUNCATED)

    def test_undecryptable(self) -> None:
        datagram = initialDatagram(
            [cryptoFrame(0, RFC_HELLO)], b"12345678"
        )
        wrongKeys = initialPacket(
            cryptoFrame(0, RFC_HELLO) + bytes(1000), b"12345678", keyDcid=b"87654321"
        )
        self.assertEqual(len(datagram), 1200)
        self.assertIsInstance(parseClientInitial((datagram,)), ClientInitial)
        self.assertEqual(self._reason(wrongKeys), UNDECRYPTABLE)
        flipped = bytearray(datagram)
        flipped[600] ^= 1
        self.assertEqual(self._reason(bytes(flipped)), UNDECRYPTABLE)

    def test_notInitialFirst(self) -> None:
        """
        A flow starting with a 0-RTT packet is not a client Initial.
        """
        self.assertEqual(
            self._reason(zeroRttPacket(b"12345678", size=1200)), NOT_INITIAL
        )

    def test_forbiddenFrame(self) -> None:
        """
        A STREAM frame (type 0x08) may not appear in an Initial.
        """
        datagram = initialDatagram(
            [cryptoFrame(0, RFC_HELLO) + b"\x08\x00\x01x"], b"12345678"
        )
        self.assertEqual(self._reason(datagram), MALFORMED)

    def test_allowedFrames(self) -> None:
        """
        PING, ACK (with and without ECN) and PADDING may come between CRYPTO
        frames.
        """
        frames = (
            b"\x01"
            + b"\x02\x05\x00\x01\x00\x01\x01"
            + cryptoFrame(0, RFC_HELLO[:50])
            + b"\x03\x05\x00\x00\x00\x01\x02\x03"
            + b"\x00\x00"
            + cryptoFrame(50, RFC_HELLO[50:])
        )
        initial = parseClientInitial((initialDatagram([frames], b"12345678"),))
        assert isinstance(initial, ClientInitial), initial
        self.assertEqual(initial.clientHello.serverName, "example.com")

    def test_conflictingCrypto(self) -> None:
        """
        Two CRYPTO frames that disagree about a byte make the flow malformed
        whatever their order.
        """
        other = bytearray(RFC_HELLO[40:60])
        other[3] ^= 0xFF
        frames = [cryptoFrame(0, RFC_HELLO), cryptoFrame(40, bytes(other))]
        for order in (frames, frames[::-1]):
            datagram = initialDatagram(order, b"12345678")
            self.assertEqual(self._reason(datagram, initial=True), MALFORMED)

    def test_notAClientHello(self) -> None:
        message = b"\x02" + RFC_HELLO[1:]
        datagram = initialDatagram([cryptoFrame(0, message)], b"12345678")
        self.assertEqual(self._reason(datagram, initial=True), MALFORMED)

    def test_missingStart(self) -> None:
        """
        Without CRYPTO offset 0 the client Initial is recognised, but its
        ClientHello is still to come.
        """
        datagram = initialDatagram([cryptoFrame(100, RFC_HELLO[100:])], b"12345678")
        self.assertIs(parseClientInitial((datagram,)), NEED_MORE)
        peek = DatagramPeek([datagram])
        self.assertIs(quicFactory.build({}).match(peek), MATCH)
        self.assertEqual(quicFactory.build({}).describe(peek), "quic=v1")
        self.assertIs(tlsFactory.build({}).match(peek), NEED_MORE)
        rest = initialDatagram(
            [cryptoFrame(0, RFC_HELLO[:100])], b"12345678", firstPacketNumber=1
        )
        self.assertIs(tlsFactory.build({"sni": "example.com"}).match(
            peek.extended(rest)), MATCH
        )

    def test_otherConnectionIgnored(self) -> None:
        """
        A later datagram of another connection ID or version adds nothing.
        """
        first = initialDatagram([cryptoFrame(100, RFC_HELLO[100:])], b"12345678")
        for other in (
            initialDatagram([cryptoFrame(0, RFC_HELLO[:100])], b"abcdefgh"),
            initialDatagram([cryptoFrame(0, RFC_HELLO[:100])], b"12345678", QUIC_V2),
            b"junk",
        ):
            self.assertIs(parseClientInitial((first, other)), NEED_MORE)


def handshakeMessage(records: bytes) -> bytes:
    """
    The handshake bytes of a TCP capture's TLS records, without the record
    headers: what QUIC carries in CRYPTO frames.
    """
    message = b""
    pos = 0
    while pos < len(records):
        length = int.from_bytes(records[pos + 3 : pos + 5], "big")
        message += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return message


class ChromiumTests(SynchronousTestCase):
    """
    Chromium's post-quantum ClientHello (the TCP capture in tests/corpus),
    too large for one Initial, carried in two datagrams as Chromium's QUIC
    stack does.
    """

    def test_twoDatagrams(self) -> None:
        message = handshakeMessage(FILES["chromium-sni-alpn-pq.bin"])
        self.assertGreater(len(message), 1500)
        dcid = b"\xc0\xff\xee\x00\x11\x22\x33\x44"
        cut = 1100
        first = initialDatagram([cryptoFrame(0, message[:cut])], dcid)
        second = initialDatagram(
            [b"\x01" + cryptoFrame(cut, message[cut:])], dcid, firstPacketNumber=1
        )
        tls = tlsFactory.build({"sni": "example.com"})
        expected = parseClientHello(FILES["chromium-sni-alpn-pq.bin"])
        assert isinstance(expected, ClientHello)
        for order in ([first, second], [second, first]):
            peek = DatagramPeek(order[:1])
            self.assertIs(tls.match(peek), NEED_MORE)
            self.assertIs(quicFactory.build({}).match(peek), MATCH)
            peek = peek.extended(order[1])
            hello = peek.parse(parseClientHello)
            assert isinstance(hello, ClientHello)
            self.assertEqual(hello.serverName, expected.serverName)
            self.assertEqual(hello.alpn, expected.alpn)
            self.assertEqual(hello.ja4()[1:], expected.ja4()[1:])
            self.assertEqual(hello.ja4()[0], "q")
            self.assertIs(
                tlsFactory.build({"sni": expected.serverName}).match(peek), MATCH
            )


class CoalescedTests(SynchronousTestCase):
    def test_initialThenZeroRtt(self) -> None:
        dcid = b"12345678"
        datagram = initialDatagram(
            [cryptoFrame(0, RFC_HELLO[:120]), cryptoFrame(120, RFC_HELLO[120:])],
            dcid,
            trailer=zeroRttPacket(dcid),
        )
        first = parseInitialDatagram(datagram)
        assert isinstance(first, InitialDatagram)
        self.assertEqual(first.packets, 2)
        initial = parseClientInitial((datagram,))
        assert isinstance(initial, ClientInitial)
        self.assertEqual(initial.clientHello.serverName, "example.com")


@st.composite
def _flights(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """
    The RFC ClientHello cut into CRYPTO frames (some sent twice), frames
    into packets with PINGs and PADDING between, packets into datagrams,
    datagrams shuffled; and the DCID.
    """
    message = RFC_HELLO
    cuts = sorted(
        draw(st.sets(st.integers(1, len(message) - 1), max_size=8))
    )
    bounds = [0, *cuts, len(message)]
    frames = [
        cryptoFrame(a, message[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    frames += draw(st.lists(st.sampled_from(frames), max_size=2))
    frames = draw(st.permutations(frames))
    frames = [draw(st.sampled_from([b"", b"\x01", b"\x00\x00"])) + f for f in frames]
    datagrams = []
    i = 0
    number = 0
    while i < len(frames):
        perDatagram = draw(st.integers(1, 3))
        group = frames[i : i + perDatagram]
        i += perDatagram
        packets = []
        for frame in group:
            if packets and draw(st.booleans()):
                packets[-1] += frame
            else:
                packets.append(frame)
        datagrams.append(
            initialDatagram(packets, b"\x01\x02\x03\x04\x05\x06\x07\x08", firstPacketNumber=number)
        )
        number += len(packets)
    return datagrams, message


class SplitTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(_flights())
    def test_anySplit(self, flight: tuple[list[bytes], bytes]) -> None:
        """
        However the ClientHello is cut into frames, packets and datagrams,
        and whatever order they arrive in, the same SNI and ALPN come out,
        and only once every piece is in.
        """
        datagrams, _ = flight
        initial = parseClientInitial(tuple(datagrams))
        assert isinstance(initial, ClientInitial), initial
        self.assertEqual(initial.clientHello.serverName, "example.com")
        self.assertEqual(initial.clientHello.alpn, ("alpn",))
        peek = DatagramPeek()
        matcher = tlsFactory.build({"sni": "example.com", "alpn": "alpn"})
        verdicts = []
        for datagram in datagrams:
            peek = peek.extended(datagram)
            verdicts.append(matcher.match(peek))
        self.assertEqual(verdicts[-1], MATCH)
        self.assertNotIn(NO_MATCH, verdicts)

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from([RFC9001_INITIAL, RFC9369_INITIAL]),
        st.integers(0, 1199),
        st.integers(1, 255),
    )
    def test_corruption(self, datagram: bytes, at: int, xor: int) -> None:
        """
        Every byte of a client Initial is protected: changing any gives no
        match, never an exception.
        """
        corrupt = bytearray(datagram)
        corrupt[at] ^= xor
        peek = DatagramPeek([bytes(corrupt)])
        self.assertIs(quicFactory.build({}).match(peek), NO_MATCH)
        self.assertIn(tlsFactory.build({}).match(peek), (NO_MATCH, NEED_MORE))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=1400), st.integers(0, 1400))
    def test_garbage(self, junk: bytes, cut: int) -> None:
        """
        Random bytes, and truncated or extended Initials, never raise.
        """
        for datagram in (junk, RFC9001_INITIAL[:cut], RFC9001_INITIAL + junk):
            result = parseClientInitial((datagram,))
            self.assertTrue(
                result is NEED_MORE or isinstance(result, NotClientInitial | ClientInitial)
            )
            quicFactory.build({}).match(DatagramPeek([datagram, junk]))
            DatagramPeek([datagram]).parse(parseClientHello)


class AioquicTests(SynchronousTestCase):
    """
    Real client Initials, from aioquic's QUIC client.
    """

    if QuicConnection is None:
        skip = "aioquic is not installed (setup.cfg's test extra has it)"

    def test_small(self) -> None:
        for version in (QUIC_V1, QUIC_V2):
            datagrams = aioquicDatagrams("quic.example", ["h3"], version)
            self.assertEqual(len(datagrams), 1)
            peek = DatagramPeek(datagrams)
            self.assertIs(quicFactory.build({}).match(peek), MATCH)
            self.assertIs(
                tlsFactory.build({"sni": "quic.example", "alpn": "h3"}).match(peek),
                MATCH,
            )
            hello = peek.parse(parseClientHello)
            assert isinstance(hello, ClientHello)
            self.assertTrue(hello.ja4().startswith("q13d"), hello.ja4())

    def test_largeReversed(self) -> None:
        """
        A ClientHello too large for one datagram (many ALPN names) is
        reassembled from datagrams fed in reverse order; before the last
        arrives, C{tls} waits and C{quic} has already matched.
        """
        alpn = [f"protocol-{i:03d}" for i in range(150)]
        datagrams = aioquicDatagrams("big.example", alpn)
        self.assertGreaterEqual(len(datagrams), 2)
        tls = tlsFactory.build({"sni": "big.example"})
        peek = DatagramPeek()
        for datagram in reversed(datagrams[1:]):
            peek = peek.extended(datagram)
            self.assertIs(tls.match(peek), NEED_MORE)
            self.assertIs(quicFactory.build({}).match(peek), MATCH)
        peek = peek.extended(datagrams[0])
        self.assertIs(tls.match(peek), MATCH)
        hello = peek.parse(parseClientHello)
        assert isinstance(hello, ClientHello)
        self.assertEqual(hello.alpn, tuple(alpn))
        self.assertIn("sni=big.example", quicFactory.build({}).describe(peek))

    def test_decryptedOncePerFlow(self) -> None:
        """
        However many matchers ask about a flow, and however many views of it
        the datagrams make, each Initial packet is decrypted once: the quic
        matcher, the tls matchers, the decision's description and the
        flow's later views share one parse of each datagram.
        """
        import demux._quic as quic

        alpn = [f"protocol-{i:03d}" for i in range(150)]
        datagrams = aioquicDatagrams("big.example", alpn)
        self.assertGreaterEqual(len(datagrams), 2)
        calls: list[int] = []
        original = quic._decrypt

        def counting(datagram: bytes, *rest: object) -> object:
            calls.append(1)
            return original(datagram, *rest)  # type: ignore[arg-type]

        self.patch(quic, "_decrypt", counting)
        matchers = [
            quicFactory.build({}),
            tlsFactory.build({"sni": "big.example"}),
            tlsFactory.build({"alpn": "protocol-001"}),
            tlsFactory.build({"sni": "other.example"}),
        ]
        peek = DatagramPeek()
        for datagram in datagrams:
            peek = peek.extended(datagram)
            for matcher in matchers:
                matcher.match(peek)
        self.assertIs(matchers[1].match(peek), MATCH)
        self.assertIn("sni=big.example", matchers[0].describe(peek))
        hello = peek.parse(parseClientHello)
        assert isinstance(hello, ClientHello)
        self.assertEqual(len(calls), len(datagrams))


class FactoryTests(SynchronousTestCase):
    def test_versions(self) -> None:
        self.assertEqual(
            quicFactory.build({"versions": ["v1", "v2", 0xFF00001D]}),
            quicFactory.build({"versions": [1, QUIC_V2, 0xFF00001D]}),
        )

    def test_bad(self) -> None:
        for options in (
            {"versions": []},
            {"versions": ["v3"]},
            {"versions": [0]},
            {"versions": [True]},
            {"versions": [2**32]},
            {"version": ["v1"]},
            "v1",
        ):
            self.assertRaises(MatcherConfigError, quicFactory.build, options)
