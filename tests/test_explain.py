"""
C{twistd demux --explain}: reading captures (raw, hex dumps, pcap, pcapng),
the report on them, and the command line's output and exit status.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer

from demux import (
    MATCH,
    NEED_MORE,
    NO_MATCH,
    IMatcher,
    Verdict,
    configFromDict,
    loadConfig,
)
from demux._capture import (
    AmbiguousCaptureError,
    Capture,
    CaptureError,
    Endpoint,
    parseCapture,
    parseHexDump,
)
from demux._explain import (
    EXIT_BAD_INPUT,
    EXIT_INCONSISTENT,
    EXIT_REFUSED,
    EXIT_ROUTED,
    ExplainOptions,
    explain,
    formatJSON,
    formatText,
)
from demux._peek import Peek
from demux._routes import Route, RouteTable

from ._corpus import CORPUS, FILES
from ._process import environmentWithPath, twistdCommand

ROOT = Path(__file__).parent.parent
SYNCTHING = ROOT / "examples" / "syncthing.toml"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())

# One route per protocol the corpus holds, the TLS ones told apart by ALPN.
PROTOCOLS = [
    "proxy_protocol", "tls", "http", "ssh", "xmpp", "rdp", "tinc", "adb",
    "openvpn", "socks", "postgres", "mqtt", "redis", "syslog",
]
CORPUS_ROUTES = [
    {"name": "relay", "match": {"tls": {"alpn": ["bep-relay"]}}, "backend": "tcp:127.0.0.1:1"},
    {"name": "bep", "match": {"tls": {"alpn": ["bep/1.0"]}}, "backend": "tcp:127.0.0.1:2"},
] + [
    {"name": name, "match": {name: {}}, "backend": f"tcp:127.0.0.1:{10 + i}"}
    for i, name in enumerate(PROTOCOLS)
]


def expectedRoute(name: str) -> str:
    """
    The route of L{CORPUS_ROUTES} a corpus file must take, from what
    C{expected.json} says the file is.
    """
    facts = EXPECTED[name]
    if "protocol" in facts:
        return str(facts["protocol"])
    if "alpn" in facts:
        if "bep-relay" in facts["alpn"]:
            return "relay"
        if "bep/1.0" in facts["alpn"]:
            return "bep"
        return "tls"
    return name.split("-")[0].replace("plain", "http")


def table(routes: list[dict[str, object]], **extra: object) -> object:
    return configFromDict(
        {"listen": ["tcp:1"], "routes": routes, **extra}, MemoryReactorClock()
    )


def raw(data: bytes) -> Capture:
    return Capture(data, "raw")


class CorpusTests(SynchronousTestCase):
    """
    Every real first flight of the corpus goes where what it is says it
    should, decided on its own bytes, and the replay agrees.
    """

    def test_everyFile(self) -> None:
        config = table(CORPUS_ROUTES)
        self.assertEqual(FILES.keys(), EXPECTED.keys())
        for name, data in FILES.items():
            e = explain(config.table, raw(data), ExplainOptions(config.matchTables))  # type: ignore[attr-defined]
            self.assertIsNotNone(e.now, name)
            assert e.now is not None
            self.assertEqual(e.now.route and e.now.route.name, expectedRoute(name), name)
            self.assertTrue(e.consistent, name)
            self.assertEqual(e.exitCode, EXIT_ROUTED, name)
            winner = [r for r in e.routes if r.verdict is MATCH][0]
            self.assertEqual(winner.name, expectedRoute(name), name)
            self.assertEqual(winner.reason, e.now.reason)

    def test_helloViews(self) -> None:
        """
        For a ClientHello, each TLS route shows the shared parse: the SNI
        and the ALPN list that C{expected.json} gives.
        """
        config = table(CORPUS_ROUTES)
        for name, facts in EXPECTED.items():
            if "alpn" not in facts:
                continue
            e = explain(config.table, raw(FILES[name]))  # type: ignore[attr-defined]
            saw = e.routes[0].saw
            self.assertEqual(len(saw), 1, name)
            self.assertIn(f"sni={facts['sni'] or '-'} ", saw[0], name)
            self.assertIn(f"alpn={','.join(facts['alpn']) or '-'} ", saw[0], name)
            self.assertIn("ja4=t", saw[0], name)

    def test_syncthingExample(self) -> None:
        """
        The example Syncthing configuration sends a relay client to the
        relay and refuses an SSH client.
        """
        config = loadConfig(str(SYNCTHING), MemoryReactorClock())
        relay = explain(
            config.table, raw(FILES["openssl-nosni-alpn-bep-relay.bin"]),
            ExplainOptions(config.matchTables),
        )
        self.assertEqual(relay.exitCode, EXIT_ROUTED)
        assert relay.now is not None and relay.now.route is not None
        self.assertEqual(relay.now.route.name, "relay-protocol")
        self.assertEqual(
            [r.verdict for r in relay.routes], [NO_MATCH, MATCH, NO_MATCH]
        )
        text = formatText(relay)
        self.assertIn('match:   tls.alpn=["bep-relay"]', text)
        self.assertIn("decision: route relay-protocol -> tcp:127.0.0.1:22067", text)
        ssh = explain(config.table, raw(FILES["ssh-banner.bin"]))
        self.assertEqual(ssh.exitCode, EXIT_REFUSED)
        self.assertIn("decision: refused (no route matched)", formatText(ssh))


    def test_documentedOutput(self) -> None:
        """
        The report docs/syncthing.rst shows for the relay client is the one
        the command prints today.
        """
        docs = (ROOT / "docs" / "syncthing.rst").read_text()
        marker = "``examples/syncthing.toml``::\n\n"
        start = docs.index(marker) + len(marker)
        shown = docs[start : docs.index("\n\nEach route", start)]
        config = loadConfig(str(SYNCTHING), MemoryReactorClock())
        report = formatText(
            explain(
                config.table, raw(FILES["openssl-nosni-alpn-bep-relay.bin"]),
                ExplainOptions(config.matchTables),
            )
        )
        expected = "\n".join(
            f"    {line}" if line else "" for line in report.rstrip("\n").split("\n")
        )
        self.assertEqual(shown, expected)


class NeedMoreTests(SynchronousTestCase):
    """
    A capture that ends before a route can decide: how many bytes it needs,
    and what the deadline does.
    """

    hello = FILES["curl-sni-alpn.bin"]

    def test_helloCutShort(self) -> None:
        config = table(
            [{"name": "web", "match": {"tls": {"sni": "discovery.example.com"}},
              "backend": "tcp:127.0.0.1:1"}]
        )
        e = explain(config.table, raw(self.hello[:100]))  # type: ignore[attr-defined]
        self.assertIsNone(e.now)
        self.assertIs(e.routes[0].verdict, NEED_MORE)
        self.assertEqual(e.routes[0].needs, len(self.hello))
        self.assertIsNone(e.atDeadline.route)
        self.assertEqual(e.atDeadline.kind, "timeout")
        self.assertEqual(e.exitCode, EXIT_REFUSED)
        self.assertTrue(e.replay.final)
        self.assertEqual(e.replay.after, 100)
        text = formatText(e)
        self.assertIn("NEED_MORE (needs at least 517 bytes, has 100)", text)
        self.assertIn("TLS ClientHello: incomplete", text)
        self.assertIn("at inspect_delay (5s), if the client sends nothing more: refused", text)

    def test_onTimeout(self) -> None:
        """
        With C{on_timeout}, the deadline's decision is the real C{decide()}'s:
        that route, and exit status 0.
        """
        config = table(
            [
                {"name": "relay", "match": {"prefix": "9e79bc40"}, "backend": "tcp:127.0.0.1:1"},
                {"name": "rest", "match": {"any": {}}, "backend": "tcp:127.0.0.1:2"},
            ],
            on_timeout="rest",
        )
        e = explain(config.table, raw(b"\x9e\x79"))  # type: ignore[attr-defined]
        self.assertIsNone(e.now)
        self.assertEqual(e.routes[0].needs, 4)
        assert e.atDeadline.route is not None
        self.assertEqual(e.atDeadline.route.name, "rest")
        self.assertEqual(e.exitCode, EXIT_ROUTED)
        self.assertTrue(e.consistent)
        self.assertIn("NEED_MORE (needs at least 4 bytes, has 2)", formatText(e))

    def test_cannotSay(self) -> None:
        config = table(
            [{"name": "chat", "match": {"xmpp": {}}, "backend": "tcp:127.0.0.1:1"}]
        )
        e = explain(config.table, raw(FILES["slixmpp-stream.bin"][:20]))  # type: ignore[attr-defined]
        self.assertIsNone(e.routes[0].needs)
        self.assertIn("NEED_MORE (cannot say how many more bytes)", formatText(e))

    def test_maxPeek(self) -> None:
        """
        At C{max_peek} bytes the replay decides as at the deadline, as the
        protocol does.
        """
        config = table(
            [{"name": "web", "match": {"tls": {}}, "backend": "tcp:127.0.0.1:1"}],
            max_peek=64,
        )
        e = explain(config.table, raw(self.hello))  # type: ignore[attr-defined]
        self.assertEqual(e.replay.after, 64)
        self.assertTrue(e.replay.final)
        self.assertEqual(e.replay.decision.kind, "timeout")


@implementer(IMatcher)
class LengthMatcher:
    """
    A matcher that breaks the contract: it says no to short peeks and yes
    to long ones, as a matcher that forgets C{NEED_MORE} would.
    """

    def __init__(self, length: int) -> None:
        self.length = length

    def match(self, peek: Peek) -> Verdict:
        return MATCH if len(peek) >= self.length else NO_MATCH

    def describe(self, peek: Peek) -> str:
        return f"length={len(peek)}"


@implementer(IMatcher)
class BrokenMatcher:
    def match(self, peek: Peek) -> Verdict:
        raise ValueError("oops")

    def describe(self, peek: Peek) -> str:
        raise AssertionError("never asked")


class ContractTests(SynchronousTestCase):
    def routeTable(self, *matchers: IMatcher) -> RouteTable:
        config = table(
            [{"name": "x", "match": {"any": {}}, "backend": "tcp:127.0.0.1:1"}]
        )
        target = config.table.routes[0].target  # type: ignore[attr-defined]
        return RouteTable(
            [Route(f"r{i}", m, target) for i, m in enumerate(matchers)]
        )

    def test_inconsistent(self) -> None:
        e = explain(self.routeTable(LengthMatcher(4)), raw(b"abcd"))
        assert e.now is not None and e.now.route is not None
        self.assertEqual(e.now.route.name, "r0")
        self.assertIsNone(e.replay.decision.route)
        self.assertEqual(e.replay.after, 0)
        self.assertFalse(e.consistent)
        self.assertEqual(e.exitCode, EXIT_INCONSISTENT)
        self.assertIn("INCONSISTENT", formatText(e))
        self.assertFalse(json.loads(formatJSON(e))["consistent"])

    def test_failingMatcher(self) -> None:
        """
        A matcher that raises is shown as such, and counts as no match, as
        C{decide()} counts it.
        """
        e = explain(self.routeTable(BrokenMatcher(), LengthMatcher(1)), raw(b"ab"))
        self.assertIsNone(e.routes[0].verdict)
        self.assertIn("ValueError: oops", formatText(e))
        assert e.now is not None and e.now.route is not None
        self.assertEqual(e.now.route.name, "r1")


class SourceTests(SynchronousTestCase):
    config = table(
        [
            {"name": "inside", "match": {"ssh": {}}, "allow": ["10.0.0.0/8"],
             "backend": "tcp:127.0.0.1:1"},
            {"name": "outside", "match": {"ssh": {}}, "deny": ["10.0.0.0/8"],
             "backend": "tcp:127.0.0.1:2"},
        ]
    )
    banner = FILES["ssh-banner.bin"]

    def explainFrom(self, address: str | None) -> object:
        client = None
        if address is not None:
            client = Endpoint(ipaddress.ip_address(address), 40000)
        capture = Capture(self.banner, "pcap", "tcp", client, client)
        return explain(self.config.table, capture)  # type: ignore[attr-defined]

    def test_raw(self) -> None:
        e = explain(self.config.table, raw(self.banner))  # type: ignore[attr-defined]
        self.assertEqual([r.admitted for r in e.routes], [False, True])
        self.assertIn("no client address in a raw capture", e.sourceNote)
        text = formatText(e)
        self.assertIn("sources: allow 10.0.0.0/8: does not admit the client, so the route is skipped", text)
        assert e.now is not None and e.now.route is not None
        self.assertEqual(e.now.route.name, "outside")

    def test_fromPacketCapture(self) -> None:
        inside = self.explainFrom("10.1.2.3")
        self.assertEqual(inside.now.route.name, "inside")  # type: ignore[attr-defined]
        self.assertIn("10.1.2.3:40000", inside.sourceNote)  # type: ignore[attr-defined]
        outside = self.explainFrom("192.0.2.1")
        self.assertEqual(outside.now.route.name, "outside")  # type: ignore[attr-defined]


class HexDumpTests(SynchronousTestCase):
    """
    Hex dumps in the styles real tools write, told from raw bytes.
    """

    data = FILES["openssl-sni-alpn-h2.bin"]

    def dump(self, *command: str, data: bytes | None = None) -> bytes:
        if shutil.which(command[0]) is None:
            raise SkipTest(f"{command[0]} is not installed (tests/run installs it)")
        return subprocess.run(
            command, input=self.data if data is None else data,
            capture_output=True, check=True, timeout=10,
        ).stdout

    def assertDump(self, dump: bytes, style: str, data: bytes | None = None) -> None:
        capture = parseCapture(dump)
        self.assertEqual(capture.data, self.data if data is None else data)
        self.assertEqual(capture.kind, f"hex dump, {style}")

    def test_xxd(self) -> None:
        self.assertDump(self.dump("xxd"), "xxd")
        self.assertDump(self.dump("xxd", "-g1"), "xxd")
        self.assertDump(self.dump("xxd", "-p"), "plain hex")

    def test_hexdump(self) -> None:
        self.assertDump(self.dump("hexdump", "-C"), "hexdump -C")

    def test_od(self) -> None:
        self.assertDump(self.dump("od", "-tx1"), "od")
        self.assertDump(self.dump("od", "-Ax", "-tx1"), "od")
        self.assertDump(self.dump("od", "-An", "-tx1"), "plain hex")

    def test_repeatedLines(self) -> None:
        """
        The C{*} of C{od} and C{hexdump -C} for lines left out is filled in
        from the offsets, in each tool's base.
        """
        data = b"\0" * 70 + b"end"
        self.assertDump(self.dump("od", "-tx1", data=data), "od", data)
        self.assertDump(self.dump("hexdump", "-C", data=data), "hexdump -C", data)
        self.assertDump(self.dump("xxd", "-a", data=data), "xxd", data)
        e = self.assertRaises(CaptureError, parseCapture, self.dump("od", "-An", "-tx1", data=data))
        self.assertIn("od -v", str(e))

    def test_plain(self) -> None:
        self.assertEqual(parseCapture(b"16 03 01\n00 2a\n").data, b"\x16\x03\x01\x00\x2a")
        self.assertEqual(parseCapture(b"0x1603\n").data, b"\x16\x03")

    def test_textProtocolsAreRaw(self) -> None:
        """
        Text first flights that begin with digits are raw bytes, not hex.
        """
        for name in ["syslog-octet-count-logger.bin", "tincd-id.bin", "redis-ping-cli.bin"]:
            self.assertEqual(parseCapture(FILES[name]).kind, "raw", name)

    def test_bad(self) -> None:
        for dump, words in [
            (b"160\n", "odd number"),
            (b"00000000: 1603 01zz  ...\n", "line 1"),
            (b"0000000 1603 0101\n0000004\n", "16-bit words"),
            (b"0000000 16 03\n0000010 01\n", "offsets"),
        ]:
            e = self.assertRaises(CaptureError, parseCapture, dump)
            self.assertIn(words, str(e))
            self.assertTrue(str(e).startswith("bad hex"), str(e))
        self.assertRaises(CaptureError, parseHexDump, "é".encode())
        e = self.assertRaises(CaptureError, parseCapture, b"")
        self.assertIn("no bytes", str(e))
        e = self.assertRaises(CaptureError, parseCapture, b"abc", 1)
        self.assertIn("pcap", str(e))


# Packet captures built here, for every link type and both IP versions.

CLIENT = ("192.0.2.10", 50000)
SERVER = ("192.0.2.1", 443)


def ipPacket(src: str, dst: str, protocol: int, body: bytes) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        return struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, protocol, 0,
            a.packed, b.packed,
        ) + body
    return struct.pack(">IHBB16s16s", 6 << 28, len(body), protocol, 64, a.packed, b.packed) + body


def tcpSegment(
    src: tuple[str, int], dst: tuple[str, int], seq: int, payload: bytes = b"",
    flags: int = 0x18,
) -> bytes:
    body = struct.pack(">HHIIBBHHH", src[1], dst[1], seq, 0, 5 << 4, flags, 65535, 0, 0)
    return ipPacket(src[0], dst[0], 6, body + payload)


def udpDatagram(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    body = struct.pack(">HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    return ipPacket(src[0], dst[0], 17, body)


def linkFrame(link: int, ip: bytes) -> bytes:
    etherType = b"\x86\xdd" if ip[0] >> 4 == 6 else b"\x08\x00"
    family = 30 if ip[0] >> 4 == 6 else 2
    if link == 1:
        return b"\x02" * 12 + etherType + ip + b"\0" * 6  # with padding
    if link == 113:
        return b"\0\0\0\x01\0\x06" + b"\0" * 8 + etherType + ip
    if link == 276:
        return etherType + b"\0\0" + b"\0\0\0\x01" + b"\0\x01\0\x06" + b"\0" * 8 + ip
    if link == 0:
        return struct.pack("<I", family) + ip
    if link == 108:
        return struct.pack(">I", family) + ip
    return ip


def pcapFile(frames: Sequence[bytes], link: int = 1, order: str = "<") -> bytes:
    out = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link)
    for i, frame in enumerate(frames):
        out += struct.pack(order + "IIII", i, 0, len(frame), len(frame)) + frame
    return out


def pcapngFile(frames: Sequence[bytes], link: int = 1, order: str = "<") -> bytes:
    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        length = 12 + len(body)
        return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)

    out = block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack(order + "HHI", link, 0, 0))
    for i, frame in enumerate(frames):
        out += block(6, struct.pack(order + "IIIII", 0, 0, i, len(frame), len(frame)) + frame)
    return out


def handshake(
    payloads: Sequence[tuple[int, bytes]], client: tuple[str, int] = CLIENT,
    server: tuple[str, int] = SERVER, isn: int = 1000,
) -> list[bytes]:
    """
    A TCP stream's packets: the handshake, then the client's C{payloads} as
    C{(offset, bytes)} segments in the order given.
    """
    packets = [
        tcpSegment(client, server, isn, flags=0x02),
        tcpSegment(server, client, 5000, flags=0x12),
        tcpSegment(client, server, (isn + 1) & 0xFFFFFFFF, flags=0x10),
    ]
    for offset, data in payloads:
        packets.append(tcpSegment(client, server, (isn + 1 + offset) & 0xFFFFFFFF, data))
    return packets


class PacketCaptureTests(SynchronousTestCase):
    hello = FILES["curl-sni-alpn.bin"]

    def test_linkTypes(self) -> None:
        """
        Every link type, IPv4 and IPv6, pcap in both byte orders and pcapng.
        """
        pieces = [(0, self.hello[:200]), (200, self.hello[200:])]
        for client, server in [(CLIENT, SERVER), (("2001:db8::10", 50000), ("2001:db8::1", 443))]:
            for link in (1, 113, 276, 101, 228 if ":" not in client[0] else 229, 0, 108):
                frames = [linkFrame(link, p) for p in handshake(pieces, client, server)]
                for blob in (
                    pcapFile(frames, link), pcapFile(frames, link, ">"),
                    pcapngFile(frames, link), pcapngFile(frames, link, ">"),
                ):
                    capture = parseCapture(blob)
                    self.assertEqual(capture.data, self.hello, (link, client))
                    self.assertEqual(capture.transport, "tcp")
                    self.assertEqual(str(capture.client), str(Endpoint(ipaddress.ip_address(client[0]), client[1])))
                    self.assertEqual(capture.server and capture.server.port, 443)

    def test_unknownLinkType(self) -> None:
        e = self.assertRaises(CaptureError, parseCapture, pcapFile([b"\0" * 40], 147))
        self.assertIn("link type 147", str(e))

    def test_reorderedAndRetransmitted(self) -> None:
        segments = [(300, self.hello[300:]), (0, self.hello[:200]), (100, self.hello[100:300])]
        capture = parseCapture(pcapFile([linkFrame(1, p) for p in handshake(segments, isn=2**32 - 50)]))
        self.assertEqual(capture.data, self.hello)

    def test_gap(self) -> None:
        segments = [(0, self.hello[:100]), (200, self.hello[200:])]
        capture = parseCapture(pcapFile([linkFrame(1, p) for p in handshake(segments)]))
        self.assertEqual(capture.data, self.hello[:100])
        self.assertIn("missing after 100 bytes", " ".join(capture.notes))

    def test_firstFlightOnly(self) -> None:
        """
        What the client sends after the server's first byte is not part of
        what demux decides on.
        """
        packets = handshake([(0, b"hello ")])
        packets.append(tcpSegment(SERVER, CLIENT, 5001, b"hi"))
        packets.append(tcpSegment(CLIENT, SERVER, 1007, b"again"))
        capture = parseCapture(pcapFile([linkFrame(1, p) for p in packets]))
        self.assertEqual(capture.data, b"hello ")
        self.assertIn("6 of the 11 bytes", " ".join(capture.notes))

    def test_serverFirst(self) -> None:
        packets = handshake([])
        packets.append(tcpSegment(SERVER, CLIENT, 5001, b"220 hello\r\n"))
        packets.append(tcpSegment(CLIENT, SERVER, 1001, b"EHLO"))
        e = self.assertRaises(CaptureError, parseCapture, pcapFile([linkFrame(1, p) for p in packets]))
        self.assertIn("server speak before the client", str(e))

    def test_noSyn(self) -> None:
        packets = handshake([(0, b"abc"), (3, b"def")])[3:]
        capture = parseCapture(pcapFile([linkFrame(1, p) for p in packets]))
        self.assertEqual(capture.data, b"abcdef")
        self.assertEqual(str(capture.client), "192.0.2.10:50000")
        self.assertIn("no SYN", " ".join(capture.notes))

    def test_udp(self) -> None:
        frames = [
            linkFrame(1, udpDatagram(CLIENT, SERVER, b"first")),
            linkFrame(1, udpDatagram(SERVER, CLIENT, b"answer")),
            linkFrame(1, udpDatagram(CLIENT, SERVER, b"second")),
        ]
        capture = parseCapture(pcapFile(frames))
        self.assertEqual((capture.transport, capture.data), ("udp", b"first"))

    def test_severalStreams(self) -> None:
        other = ("192.0.2.11", 50001)
        packets = handshake([(0, b"one")]) + handshake([(0, b"two!")], client=other)
        blob = pcapFile([linkFrame(1, p) for p in packets])
        e = self.assertRaises(AmbiguousCaptureError, parseCapture, blob)
        self.assertIn("holds 2 streams", str(e))
        self.assertEqual(
            [str(s) for s in e.streams],
            [
                "0: tcp 192.0.2.10:50000 -> 192.0.2.1:443, 3 bytes from the client",
                "1: tcp 192.0.2.11:50001 -> 192.0.2.1:443, 4 bytes from the client",
            ],
        )
        self.assertEqual(parseCapture(blob, stream=1).data, b"two!")
        self.assertEqual(parseCapture(blob, flow="192.0.2.10:50000").data, b"one")
        self.assertRaises(AmbiguousCaptureError, parseCapture, blob, flow="192.0.2.1:443")
        self.assertRaises(AmbiguousCaptureError, parseCapture, blob, stream=2)
        e2 = self.assertRaises(CaptureError, parseCapture, blob, flow="nonsense")
        self.assertIn("ADDR:PORT", str(e2))

    def test_noPayload(self) -> None:
        e = self.assertRaises(CaptureError, parseCapture, pcapFile([linkFrame(1, p) for p in handshake([])]))
        self.assertIn("no payload", str(e))
        e = self.assertRaises(CaptureError, parseCapture, pcapFile([]))
        self.assertIn("no TCP or UDP", str(e))
        e = self.assertRaises(CaptureError, parseCapture, pcapFile([b"\0" * 40])[:-10])
        self.assertIn("cut short", str(e))

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from([0, 1]), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6), st.integers(0, 2000))
    def test_corrupted(self, ng: int, changes: list[tuple[int, int]], cut: int) -> None:
        """
        A damaged pcap or pcapng file is read or refused with a
        L{CaptureError}, never with another exception.
        """
        frames = [linkFrame(1, p) for p in handshake([(0, self.hello[:300])])]
        blob = bytearray((pcapngFile if ng else pcapFile)(frames))
        for position, value in changes:
            if 4 <= position < len(blob):
                blob[position] = value
        try:
            parseCapture(bytes(blob[: len(blob) - cut]))
        except CaptureError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet="0123456789abcdef :|*.\n", max_size=200))
    def test_hexNoise(self, text: str) -> None:
        try:
            parseCapture(text.encode(), format="hex")
        except CaptureError:
            pass

    @settings(max_examples=60, deadline=None)
    @given(
        st.binary(min_size=1, max_size=400),
        st.lists(st.integers(0, 400), max_size=8),
        st.randoms(use_true_random=False),
        st.integers(0, 2**32 - 1),
    )
    def test_reassembly(self, data: bytes, cuts: list[int], rng: object, isn: int) -> None:
        """
        However the client's bytes are cut into segments, reordered and
        partly sent twice, the stream is the bytes.
        """
        points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
        segments = [(a, data[a:b]) for a, b in zip(points, points[1:], strict=False)]
        segments += rng.sample(segments, min(2, len(segments)))  # type: ignore[attr-defined]
        rng.shuffle(segments)  # type: ignore[attr-defined]
        blob = pcapFile([linkFrame(1, p) for p in handshake(segments, isn=isn)])
        self.assertEqual(parseCapture(blob).data, data)


# Real programs: twistd demux --explain, and captures made by tcpdump and
# dumpcap of real clients.


def runExplain(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        twistdCommand("demux", *args), input=stdin, capture_output=True,
        timeout=60, env=env, cwd=ROOT,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


class CommandLineTests(SynchronousTestCase):
    def test_routed(self) -> None:
        relay = str(CORPUS / "openssl-nosni-alpn-bep-relay.bin")
        result = runExplain("--config", str(SYNCTHING), "--explain", relay)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        self.assertIn("2. relay-protocol -> tcp:127.0.0.1:22067", result.stdout)
        self.assertIn("reason:  sni=- alpn=bep-relay", result.stdout)
        self.assertIn("decision: route relay-protocol", result.stdout)

    def test_refusedFromStdinHex(self) -> None:
        dump = FILES["ssh-banner.bin"].hex().encode()
        result = runExplain("--config", str(SYNCTHING), "--explain", "-", stdin=dump)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("capture: 41 bytes (hex dump, plain hex)", result.stdout)
        self.assertIn("decision: refused", result.stdout)

    def test_routesAndJSON(self) -> None:
        result = runExplain(
            "--listen", "tcp:0", "--route", "shell ssh tcp:127.0.0.1:22",
            "--explain", str(CORPUS / "ssh-banner.bin"), "--explain-format", "json",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual(report["outcome"]["route"], "shell")
        self.assertEqual(report["routes"][0]["verdict"], "MATCH")
        self.assertEqual(report["replay"]["after"], 4)

    def test_badInput(self) -> None:
        cases = [
            (["--config", str(SYNCTHING), "--explain", "/nonexistent/cap.pcap"], "cannot read it"),
            (["--config", "/nonexistent/demux.toml", "--explain", str(SYNCTHING)], "demux.toml"),
            (["--config", str(SYNCTHING), "--explain", "-", "--stream", "x"], "--stream"),
        ]
        for args, words in cases:
            result = runExplain(*args, stdin=b"")
            self.assertEqual(result.returncode, EXIT_BAD_INPUT, (args, result.stderr))
            self.assertIn(words, result.stderr)
            self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
            self.assertNotIn("Traceback", result.stderr)
        result = runExplain("--config", str(SYNCTHING), "--explain", "-", stdin=b"16 03 0z\n")
        self.assertEqual(result.returncode, EXIT_BAD_INPUT)
        self.assertEqual(result.stderr, "demux: error: standard input: bad hex: 'z' is not a hex digit\n")

    def test_ambiguousPcap(self) -> None:
        other = ("192.0.2.11", 50001)
        packets = handshake([(0, b"one")]) + handshake([(0, b"two!")], client=other)
        with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
            f.write(pcapFile([linkFrame(1, p) for p in packets]))
            f.flush()
            result = runExplain("--config", str(SYNCTHING), "--explain", f.name)
        self.assertEqual(result.returncode, EXIT_BAD_INPUT)
        self.assertIn("holds 2 streams; choose one with --stream N", result.stderr)
        self.assertIn("  1: tcp 192.0.2.11:50001 -> 192.0.2.1:443, 4 bytes", result.stderr)


class _QuietServer:
    """
    A loopback server (port 0) that reads each connection until the client
    has been quiet for a moment, answers nothing and closes it.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(15)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(0.5)
            for _ in range(100):
                try:
                    if not conn.recv(65536):
                        break
                except TimeoutError:
                    break

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


@pytest.mark.e2e
class RealCaptureTests(SynchronousTestCase):
    """
    Captures that real capture tools wrote of real clients on loopback,
    explained by the real command line.
    """

    def capture(
        self, tool: Callable[[int, int, str], list[str]], client: Callable[[int], list[str]],
        name: str,
    ) -> tuple[str, int]:
        """
        Run the capture C{tool} (given the server's port, a probe port and
        the file) while C{client} connects to a loopback server once; return
        the file and the server's port.

        Capture tools say they are capturing before they are, so UDP probes
        to a port of ours are sent until one is in the file: the capture
        then holds that flow too, and the test picks the stream with
        C{--flow}.
        """
        for program in (tool(0, 0, "")[0], client(0)[0]):
            if shutil.which(program, path=environmentWithPath()["PATH"]) is None:
                raise SkipTest(f"{program} is not installed (tests/run installs it)")
        directory = tempfile.mkdtemp(prefix="demux-explain-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, name)
        server = _QuietServer()
        self.addCleanup(server.close)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(probe.close)
        probe.bind(("127.0.0.1", 0))
        probePort = probe.getsockname()[1]
        capturer = subprocess.Popen(
            tool(server.port, probePort, path), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=environmentWithPath(),
        )
        try:
            self.waitFor(path, lambda: probe.sendto(b"probe", ("127.0.0.1", probePort)),
                         f"127.0.0.1:{probePort}", 5)
            subprocess.run(
                client(server.port), stdin=subprocess.DEVNULL, capture_output=True, timeout=20
            )
            server.thread.join(10)
            self.waitFor(path, lambda: None, f"127.0.0.1:{server.port}", 300)
        finally:
            capturer.send_signal(signal.SIGINT)
            try:
                capturer.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                capturer.kill()
                capturer.communicate()
        return path, server.port

    def waitFor(self, path: str, poke: Callable[[], object], flow: str, size: int) -> None:
        """
        Poke until the capture at C{path} holds more than C{size} bytes
        from the stream with the end C{flow}.
        """
        deadline = time.monotonic() + 20
        while True:
            poke()
            try:
                if len(parseCapture(Path(path).read_bytes(), flow=flow).data) >= size:
                    return
            except (CaptureError, OSError):
                pass
            if time.monotonic() > deadline:
                self.fail(f"the capture never held {size} bytes from {flow}")
            time.sleep(0.1)

    def test_tcpdumpPcapOfOpenSSL(self) -> None:
        path, port = self.capture(
            lambda port, probe, path: [
                "tcpdump", "-i", "lo", "-U", "--immediate-mode", "-Z", "root", "-w", path,
                f"tcp port {port} or udp port {probe}",
            ],
            lambda port: [
                "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-noservername",
                "-alpn", "bep-relay",
            ],
            "relay.pcap",
        )
        self.assertEqual(Path(path).read_bytes()[:4], b"\xd4\xc3\xb2\xa1")
        result = runExplain(
            "--config", str(SYNCTHING), "--explain", path, "--flow", f"127.0.0.1:{port}"
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("(pcap, tcp 127.0.0.1:", result.stdout)
        self.assertIn("source: client 127.0.0.1:", result.stdout)
        self.assertIn("decision: route relay-protocol", result.stdout)
        self.assertIn("saw:     TLS ClientHello: sni=- alpn=bep-relay", result.stdout)

    def test_dumpcapPcapngOfCurl(self) -> None:
        path, port = self.capture(
            lambda port, probe, path: [
                "dumpcap", "-i", "lo", "-f", f"tcp port {port} or udp port {probe}",
                "-w", path,
            ],
            lambda port: [
                "curl", "-sk", "--max-time", "5", "--resolve",
                f"discovery.example.com:{port}:127.0.0.1",
                f"https://discovery.example.com:{port}/",
            ],
            "discovery.pcapng",
        )
        self.assertEqual(Path(path).read_bytes()[:4], b"\x0a\x0d\x0d\x0a")
        result = runExplain(
            "--config", str(SYNCTHING), "--explain", path, "--flow", f"127.0.0.1:{port}"
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("(pcapng, tcp 127.0.0.1:", result.stdout)
        self.assertIn("decision: route discovery -> tcp:127.0.0.1:8443", result.stdout)
        self.assertIn("sni=discovery.example.com alpn=h2,http/1.1", result.stdout)
