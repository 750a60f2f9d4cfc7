"""
Reading a connection's first bytes from a file, for C{--explain}: raw bytes,
a hex dump (plain hex, C{xxd}, C{od -t x1}, C{hexdump -C}), or a pcap or
pcapng capture holding one TCP stream or UDP flow.

The pcap and pcapng reading is our own and small: only what it takes to find
the client's first flight (Ethernet, Linux cooked v1 and v2, raw IP and the
BSD loopback link types; IPv4 and IPv6; TCP reassembled by sequence number,
UDP's first datagram).  Nothing here does I/O but L{readCapture}.
"""

from __future__ import annotations

import ipaddress
import re
import struct
import sys
from collections.abc import Iterator, Sequence

from attrs import frozen

from ._errors import DemuxError
from ._routes import IPAddress


class CaptureError(DemuxError):
    """
    A capture cannot be read or holds nothing to explain; the message is one
    sentence naming the file.
    """


class AmbiguousCaptureError(CaptureError):
    """
    A capture holds several streams and none was chosen.

    @ivar streams: what the capture holds, to list.
    """

    def __init__(self, message: str, streams: Sequence[Stream]) -> None:
        super().__init__(message)
        self.streams = tuple(streams)


@frozen
class Endpoint:
    """
    One end of a stream: an IP address and a port.
    """

    address: IPAddress
    port: int

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@frozen
class Capture:
    """
    The first bytes of one connection, and what is known of where they came
    from.

    @ivar data: the client's first flight.
    @ivar kind: how the file was read: C{"raw"}, C{"hex dump, xxd"} (and
        the other dump styles), C{"pcap"} or C{"pcapng"}.
    @ivar transport: C{"tcp"} or C{"udp"} for a packet capture, L{None}
        otherwise.
    @ivar client: the client's end, for a packet capture.
    @ivar server: the server's end, for a packet capture.
    @ivar notes: what the reader noticed that the reader of a report should
        know (a gap in the stream, bytes left out after the server spoke).
    """

    data: bytes
    kind: str
    transport: str | None = None
    client: Endpoint | None = None
    server: Endpoint | None = None
    notes: tuple[str, ...] = ()

    @property
    def source(self) -> IPAddress | None:
        """
        The client's IP address, if the capture says it.
        """
        return self.client.address if self.client is not None else None


@frozen
class Stream:
    """
    One TCP stream or UDP flow found in a packet capture.

    @ivar index: its number, in order of first appearance, from 0.
    @ivar transport: C{"tcp"} or C{"udp"}.
    @ivar client: the end that opened it (sent the SYN, or else the first
        payload, or else the first packet).
    @ivar server: the other end.
    @ivar clientBytes: the payload bytes the client sent in all.
    """

    index: int
    transport: str
    client: Endpoint
    server: Endpoint
    clientBytes: int

    def __str__(self) -> str:
        return (
            f"{self.index}: {self.transport} {self.client} -> {self.server}, "
            f"{self.clientBytes} bytes from the client"
        )


def readCapture(
    path: str,
    stream: int | None = None,
    flow: str | None = None,
    format: str = "auto",
) -> Capture:
    """
    Read the capture at C{path} (C{"-"}: standard input).

    @param stream: the stream to take from a packet capture, by number.
    @param flow: the stream to take, by one of its ends (C{ADDR:PORT}).
    @param format: C{"auto"} to recognise the format, or C{"raw"},
        C{"hex"} or C{"pcap"} (pcap or pcapng) to insist on one.
    @raise CaptureError: naming C{path}, if it cannot be read, is not what
        it should be, or holds no bytes.
    """
    name = "standard input" if path == "-" else path
    try:
        if path == "-":
            blob = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                blob = f.read()
    except OSError as e:
        raise CaptureError(f"{name}: cannot read it: {e.strerror or e}") from None
    try:
        return parseCapture(blob, stream, flow, format)
    except AmbiguousCaptureError as e:
        raise AmbiguousCaptureError(f"{name}: {e}", e.streams) from None
    except CaptureError as e:
        raise CaptureError(f"{name}: {e}") from None


FORMATS = ("auto", "raw", "hex", "pcap")


def parseCapture(
    blob: bytes,
    stream: int | None = None,
    flow: str | None = None,
    format: str = "auto",
) -> Capture:
    """
    L{readCapture} for the file's contents C{blob}; errors name no file.
    """
    if format not in FORMATS:
        raise CaptureError(
            f"the capture format must be one of {', '.join(FORMATS)}, not {format!r}"
        )
    isPackets = blob[:4] in _PCAP_MAGICS or blob[:4] == _PCAPNG_MAGIC
    if format == "pcap" or (format == "auto" and isPackets):
        if not isPackets:
            raise CaptureError("not a pcap or pcapng file")
        return _fromPackets(blob, stream, flow)
    if stream is not None or flow is not None:
        raise CaptureError("--stream and --flow choose from a pcap or pcapng file only")
    if format == "hex" or (format == "auto" and _looksLikeHex(blob)):
        data, style = parseHexDump(blob)
        kind = f"hex dump, {style}"
    else:
        data, kind = blob, "raw"
    if not data:
        raise CaptureError("the capture holds no bytes")
    return Capture(data, kind)


# Hex dumps.

_HEX = re.compile(r"[0-9a-fA-F]+")
_OFFSET = re.compile(r"([0-9a-fA-F]+)(:?)")


def _looksLikeHex(blob: bytes) -> bool:
    """
    Whether C{blob} is text that was meant as a hex dump: its first line
    starts with two runs of hex digits (an offset and a group, or two
    groups), or is one run of them.  A raw capture of a text protocol
    (C{"104 <13>1 ..."}, C{"0 alice 17"}) fails the test on its second word.
    """
    try:
        text = blob.decode("ascii")
    except UnicodeDecodeError:
        return False
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if len(words) == 1:
            return _HEX.fullmatch(words[0].removeprefix("0x")) is not None
        return (
            _HEX.fullmatch(words[0].rstrip(":")) is not None
            and _HEX.fullmatch(words[1]) is not None
        )
    return False


def parseHexDump(blob: bytes) -> tuple[bytes, str]:
    """
    The bytes of a hex dump, and the name of the dump's style.

    Plain hex (C{xxd -p}, or pairs separated by spaces), C{xxd} (offsets with
    a colon, an ASCII column), C{hexdump -C} (offsets, an ASCII column
    between bars) and C{od -t x1} (offsets in octal, hex or decimal, or none
    with C{-An}) are recognised; the offset's base is the one under which
    every line's offset is where the previous line ended, so a C{*} line
    (repeated lines left out) is filled in.

    @raise CaptureError: saying which line is not hex.
    """
    try:
        text = blob.decode("ascii")
    except UnicodeDecodeError:
        raise CaptureError("a hex dump must be ASCII text") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise CaptureError("the hex dump is empty")
    first = lines[0][1].split()
    if _looksPlain(lines):
        for number, line in lines:
            if line.strip() == "*":
                raise CaptureError(
                    f"bad hex: line {number} is a * (repeated lines left out) "
                    "in a dump without offsets to fill it in (use od -v)"
                )
        digits = "".join(
            word.removeprefix("0x").removeprefix("0X")
            for _, line in lines
            for word in line.replace(":", " ").split()
        )
        bad = re.search(r"[^0-9a-fA-F]", digits)
        if bad:
            raise CaptureError(f"bad hex: {bad.group()!r} is not a hex digit")
        if len(digits) % 2:
            raise CaptureError("bad hex: an odd number of hex digits")
        return bytes.fromhex(digits), "plain hex"
    if first[0].endswith(":"):
        return _offsetDump(lines, "xxd")
    if "|" in lines[0][1]:
        return _offsetDump(lines, "hexdump -C")
    return _offsetDump(lines, "od")


def _looksPlain(lines: list[tuple[int, str]]) -> bool:
    """
    Whether a dump has no offset column: every group on its first line is
    one byte (two digits) or many, and no line starts like C{xxd}'s, or the
    first line is longer than any offset would be.
    """
    words = lines[0][1].split()
    if words[0].endswith(":"):
        return False
    if len(words) == 1:
        return True
    if "|" in lines[0][1]:
        return False
    # od -An -tx1 and space-separated pairs: every word is one byte.  With an
    # offset column (od, hexdump -C), the first word is longer than the rest.
    return all(len(w) == len(words[0]) for w in words)


def _offsetDump(lines: list[tuple[int, str]], style: str) -> tuple[bytes, str]:
    rows: list[tuple[str, bytes | None]] = []
    for number, line in lines:
        if line.strip() == "*":
            rows.append(("*", None))
            continue
        if style == "xxd":
            head, _, rest = line.partition(":")
            # The ASCII column follows two spaces after the last group.
            groups = rest.strip().split("  ")[0].split()
        else:
            head, _, rest = line.strip().partition(" ")
            if style == "hexdump -C":
                rest = rest.split("|")[0]
            groups = rest.split()
        if _HEX.fullmatch(head) is None:
            raise CaptureError(f"bad hex: line {number} does not start with an offset")
        digits = "".join(groups)
        if style != "xxd" and any(len(g) != 2 for g in groups):
            raise CaptureError(
                f"bad hex: line {number} has groups of more than one byte (a dump "
                "of 16-bit words is in the host's byte order: use od -An -tx1, "
                "hexdump -C or xxd)"
            )
        if _HEX.fullmatch(digits or "0") is None or len(digits) % 2:
            raise CaptureError(f"bad hex: line {number} is not whole hex bytes")
        rows.append((head, bytes.fromhex(digits)))
    # xxd and hexdump -C count in hex; od in octal unless told otherwise
    # (-Ax, -Ad), and octal first, since with a * line a hex reading of
    # octal offsets can also add up.
    bases = (16,) if style != "od" else (8, 16, 10)
    for base in bases:
        data = _assemble(rows, base)
        if data is not None:
            return data, style
    raise CaptureError(
        "bad hex: the offsets do not count the bytes before them in base "
        + " or ".join(str(b) for b in bases)
    )


def _assemble(rows: list[tuple[str, bytes | None]], base: int) -> bytes | None:
    """
    The bytes of a dump's rows if every offset, read in C{base}, is where
    the bytes before it end (after filling in C{*} rows); else L{None}.
    """
    out = bytearray()
    previous: bytes | None = None
    pending = False
    for head, chunk in rows:
        if head == "*":
            if previous is None:
                return None
            pending = True
            continue
        try:
            offset = int(head, base)
        except ValueError:
            return None
        if pending:
            assert previous is not None
            gap = offset - len(out)
            if gap < 0 or not previous or gap % len(previous):
                return None
            out += previous * (gap // len(previous))
            pending = False
        if offset != len(out):
            return None
        assert chunk is not None
        out += chunk
        if chunk:
            previous = chunk
    if pending:
        return None
    return bytes(out)


# Packet captures.

_PCAP_MAGICS = {
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
    b"\x4d\x3c\xb2\xa1": "<",
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_LINK_NAMES = {
    LINKTYPE_NULL: "null",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    12: "raw IP",
    14: "raw IP",
    LINKTYPE_LOOP: "loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2",
}


@frozen
class Packet:
    """
    One captured frame: its link type and bytes, and whether the capture
    kept all of it.
    """

    linkType: int
    frame: bytes
    truncated: bool


def pcapPackets(blob: bytes) -> Iterator[Packet]:
    """
    The frames of a pcap file.
    """
    order = _PCAP_MAGICS[blob[:4]]
    if len(blob) < 24:
        raise CaptureError("the pcap file header is cut short")
    (linkType,) = struct.unpack(order + "I", blob[20:24])
    linkType &= 0x0FFFFFFF  # the upper bits may carry the FCS length
    pos = 24
    while pos < len(blob):
        if pos + 16 > len(blob):
            raise CaptureError("the last packet record of the pcap file is cut short")
        caught, original = struct.unpack(order + "II", blob[pos + 8 : pos + 16])
        frame = blob[pos + 16 : pos + 16 + caught]
        if len(frame) < caught:
            raise CaptureError("the last packet of the pcap file is cut short")
        yield Packet(linkType, frame, caught < original)
        pos += 16 + caught


def pcapngPackets(blob: bytes) -> Iterator[Packet]:
    """
    The frames of a pcapng file: its enhanced, simple and (obsolete) packet
    blocks, each with its interface's link type.
    """
    order = "<"
    interfaces: list[tuple[int, int]] = []  # (link type, snap length)
    pos = 0
    while pos < len(blob):
        if pos + 12 > len(blob):
            raise CaptureError("the last pcapng block is cut short")
        blockType = blob[pos : pos + 4]
        if blockType == _PCAPNG_MAGIC:
            magic = blob[pos + 8 : pos + 12]
            if magic == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise CaptureError("a pcapng section header has no byte-order magic")
            interfaces = []
        (kind, length) = struct.unpack(order + "II", blob[pos : pos + 8])
        if length < 12 or length % 4 or pos + length > len(blob):
            raise CaptureError(f"a pcapng block at byte {pos} has a bad length")
        body = blob[pos + 8 : pos + length - 4]
        pos += length
        if kind == 1:  # interface description
            linkType, _, snap = struct.unpack(order + "HHI", body[:8])
            interfaces.append((linkType, snap))
        elif kind in (6, 2):  # enhanced packet, obsolete packet
            if kind == 6:
                interface, _, _, caught, original = struct.unpack(
                    order + "IIIII", body[:20]
                )
            else:
                interface, _, _, _, caught, original = struct.unpack(
                    order + "HHIIII", body[:20]
                )
            if interface >= len(interfaces):
                raise CaptureError(f"a pcapng packet names no interface ({interface})")
            frame = body[20 : 20 + caught]
            yield Packet(interfaces[interface][0], frame, caught < original)
        elif kind == 3:  # simple packet
            if not interfaces:
                raise CaptureError("a pcapng simple packet comes before any interface")
            (original,) = struct.unpack(order + "I", body[:4])
            linkType, snap = interfaces[0]
            caught = min(original, snap) if snap else original
            yield Packet(linkType, body[4 : 4 + caught], caught < original)


@frozen
class Segment:
    """
    A TCP segment or UDP datagram, as far as finding a stream needs.
    """

    transport: str
    source: Endpoint
    destination: Endpoint
    payload: bytes
    seq: int = 0
    syn: bool = False
    ack: bool = False
    truncated: bool = False


def segmentOf(packet: Packet) -> Segment | None:
    """
    The TCP or UDP segment in C{packet}, or L{None} for anything else (ARP,
    ICMP, an IP fragment after the first...).

    @raise CaptureError: for a link type this reader does not know.
    """
    frame, link = packet.frame, packet.linkType
    if link == LINKTYPE_ETHERNET:
        etherType, pos = _etherType(frame, 12)
        ip = frame[pos:] if etherType in (0x0800, 0x86DD) else b""
    elif link == LINKTYPE_LINUX_SLL:
        ip = frame[16:] if frame[14:16] in (b"\x08\x00", b"\x86\xdd") else b""
    elif link == LINKTYPE_LINUX_SLL2:
        ip = frame[20:] if frame[0:2] in (b"\x08\x00", b"\x86\xdd") else b""
    elif link in (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        ip = frame
    elif link in (LINKTYPE_NULL, LINKTYPE_LOOP):
        # The address family, in the capturing host's byte order for null,
        # in network order for loop; either way IPv4 is 2 and IPv6 is one
        # of 10, 24, 28, 30, small enough to read from whichever end is not
        # zero.
        family = frame[:4]
        ip = frame[4:] if family and (family[0] or family[3]) else b""
    else:
        raise CaptureError(
            f"link type {link} is not one this reader knows (it reads "
            f"{', '.join(sorted(set(_LINK_NAMES.values())))})"
        )
    if not ip:
        return None
    return _ipSegment(ip, packet.truncated)


def _etherType(frame: bytes, pos: int) -> tuple[int, int]:
    etherType = int.from_bytes(frame[pos : pos + 2], "big")
    pos += 2
    while etherType in (0x8100, 0x88A8, 0x9100):  # VLAN tags
        etherType = int.from_bytes(frame[pos + 2 : pos + 4], "big")
        pos += 4
    return etherType, pos


_IPV6_EXTENSIONS = {0, 43, 60, 51}


def _ipSegment(ip: bytes, truncated: bool) -> Segment | None:
    version = ip[0] >> 4 if ip else 0
    source: IPAddress
    destination: IPAddress
    if version == 4 and len(ip) >= 20:
        headerLength = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        fragment = int.from_bytes(ip[6:8], "big") & 0x1FFF
        if fragment:
            return None
        protocol = ip[9]
        source = ipaddress.IPv4Address(ip[12:16])
        destination = ipaddress.IPv4Address(ip[16:20])
        # Ethernet pads short frames: the IP length says where they end.
        body = ip[headerLength:total] if total else ip[headerLength:]
    elif version == 6 and len(ip) >= 40:
        protocol = ip[6]
        source = ipaddress.IPv6Address(ip[8:24])
        destination = ipaddress.IPv6Address(ip[24:40])
        length = int.from_bytes(ip[4:6], "big")
        body = ip[40 : 40 + length] if length else ip[40:]
        while protocol in _IPV6_EXTENSIONS or protocol == 44:
            if len(body) < 8:
                return None
            if protocol == 44:
                if int.from_bytes(body[2:4], "big") >> 3:
                    return None  # not the first fragment
                protocol, body = body[0], body[8:]
            elif protocol == 51:
                protocol, body = body[0], body[(body[1] + 2) * 4 :]
            else:
                protocol, body = body[0], body[(body[1] + 1) * 8 :]
    else:
        return None
    if protocol == 6 and len(body) >= 20:
        sport, dport, seq = struct.unpack(">HHI", body[:8])
        offset = (body[12] >> 4) * 4
        flags = body[13]
        return Segment(
            "tcp",
            Endpoint(source, sport),
            Endpoint(destination, dport),
            body[offset:],
            seq,
            syn=bool(flags & 0x02),
            ack=bool(flags & 0x10),
            truncated=truncated,
        )
    if protocol == 17 and len(body) >= 8:
        sport, dport, length = struct.unpack(">HHH", body[:6])
        return Segment(
            "udp",
            Endpoint(source, sport),
            Endpoint(destination, dport),
            body[8:length] if length >= 8 else body[8:],
            truncated=truncated,
        )
    return None


class _Conversation:
    """
    The segments of one stream, in capture order, while they are gathered.
    """

    def __init__(self, index: int, first: Segment) -> None:
        self.index = index
        self.transport = first.transport
        self.segments: list[Segment] = []
        self.client: Endpoint | None = None

    def add(self, segment: Segment) -> None:
        self.segments.append(segment)
        if self.client is None and segment.syn and not segment.ack:
            self.client = segment.source

    def clientEnd(self) -> tuple[Endpoint, Endpoint]:
        client = self.client
        if client is None:
            withData = [s for s in self.segments if s.payload]
            client = (withData or self.segments)[0].source
        ends = {s.source for s in self.segments} | {s.destination for s in self.segments}
        server = next((e for e in ends if e != client), client)
        return client, server

    def describe(self) -> Stream:
        client, server = self.clientEnd()
        sent = sum(len(s.payload) for s in self.segments if s.source == client)
        return Stream(self.index, self.transport, client, server, sent)


def _conversations(packets: Iterator[Packet]) -> list[_Conversation]:
    found: dict[tuple[str, frozenset[Endpoint]], _Conversation] = {}
    for packet in packets:
        segment = segmentOf(packet)
        if segment is None:
            continue
        key = (segment.transport, frozenset((segment.source, segment.destination)))
        conversation = found.get(key)
        if conversation is None:
            conversation = found[key] = _Conversation(len(found), segment)
        conversation.add(segment)
    return list(found.values())


def parseEndpoint(text: str) -> Endpoint:
    """
    An C{ADDR:PORT} (C{[ADDR]:PORT} for IPv6) as given to C{--flow}.

    @raise CaptureError: if it is not one.
    """
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        return Endpoint(ipaddress.ip_address(host), int(port))
    except ValueError:
        raise CaptureError(
            f"--flow {text!r} is not ADDR:PORT (such as 192.0.2.7:443 or [::1]:443)"
        ) from None


def _fromPackets(blob: bytes, stream: int | None, flow: str | None) -> Capture:
    isNg = blob[:4] == _PCAPNG_MAGIC
    kind = "pcapng" if isNg else "pcap"
    packets = pcapngPackets(blob) if isNg else pcapPackets(blob)
    try:
        conversations = _conversations(packets)
    except (struct.error, IndexError) as e:
        # A block or header shorter than its fields: every length that
        # leads to one is the file's, and it lies.
        raise CaptureError(f"the {kind} file is malformed ({e})") from None
    if not conversations:
        raise CaptureError(f"the {kind} file holds no TCP or UDP packets")
    streams = [c.describe() for c in conversations]
    chosen: list[_Conversation]
    if stream is not None:
        chosen = [c for c in conversations if c.index == stream]
        if not chosen:
            raise AmbiguousCaptureError(
                f"there is no stream {stream}; the {kind} file holds "
                f"{len(streams)} (0 to {len(streams) - 1})",
                streams,
            )
    elif flow is not None:
        end = parseEndpoint(flow)
        chosen = [c for c, s in zip(conversations, streams, strict=True) if end in (s.client, s.server)]
        if not chosen:
            raise AmbiguousCaptureError(f"no stream has the end {end}", streams)
    else:
        chosen = conversations
    if len(chosen) > 1:
        raise AmbiguousCaptureError(
            f"the {kind} file holds {len(chosen)} streams; choose one with "
            "--stream N or --flow ADDR:PORT",
            [s for s in streams if any(c.index == s.index for c in chosen)],
        )
    conversation = chosen[0]
    client, server = conversation.clientEnd()
    if conversation.transport == "udp":
        data, notes = _firstDatagram(conversation, client)
    else:
        data, notes = _firstFlight(conversation, client)
    if not data:
        what = "carries no payload from the client"
        if any(s.payload for s in conversation.segments if s.source == client):
            what = (
                "has the server speak before the client sent anything, which "
                "no server behind demux can"
            )
        raise CaptureError(f"stream {conversation.index} ({client} -> {server}) {what}")
    return Capture(data, kind, conversation.transport, client, server, tuple(notes))


def _firstDatagram(
    conversation: _Conversation, client: Endpoint
) -> tuple[bytes, list[str]]:
    sent = [s for s in conversation.segments if s.source == client and s.payload]
    if not sent:
        return b"", []
    notes = []
    if len(sent) > 1:
        notes.append(f"the first of the client's {len(sent)} datagrams")
    if sent[0].truncated:
        notes.append("the datagram was cut short by the capture's snap length")
    return sent[0].payload, notes


def _firstFlight(
    conversation: _Conversation, client: Endpoint
) -> tuple[bytes, list[str]]:
    """
    The bytes the client sent before the server's first byte, reassembled
    by sequence number: all demux could have seen before it decided, since
    no server speaks before demux has chosen it.
    """
    notes: list[str] = []
    start: int | None = None
    pieces: list[tuple[int, bytes]] = []
    total = 0
    serverSpoke = False
    cut = False
    for segment in conversation.segments:
        if segment.source != client:
            if segment.payload:
                serverSpoke = True
            continue
        if segment.syn:
            start = (segment.seq + 1) & 0xFFFFFFFF
        if not segment.payload:
            continue
        total += len(segment.payload)
        if serverSpoke:
            cut = True
            continue
        if segment.truncated:
            notes.append(
                "a segment was cut short by the capture's snap length; the "
                "bytes stop there"
            )
        pieces.append((segment.seq, segment.payload))
        if segment.truncated:
            break
    if not pieces:
        return b"", notes
    if start is None:
        # No SYN: count from the earliest sequence number, allowing for
        # wrap-around by measuring from the first segment seen.
        base = pieces[0][0]
        start = min(
            (seq for seq, _ in pieces), key=lambda s: (s - base + 2**31) % 2**32
        )
        notes.append("no SYN in the capture: it may have begun mid-connection")
    buffer = bytearray()
    for relative, payload in sorted(
        (((seq - start) & 0xFFFFFFFF), payload) for seq, payload in pieces
    ):
        if relative > len(buffer):
            notes.append(
                f"a segment is missing after {len(buffer)} bytes; the bytes stop there"
            )
            break
        overlap = len(buffer) - relative
        buffer += payload[overlap:] if overlap < len(payload) else b""
    if cut:
        notes.append(
            f"the client's first flight: {len(buffer)} of the {total} bytes it "
            "sent, before the server's first byte"
        )
    return bytes(buffer), notes
