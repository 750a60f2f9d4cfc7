"""
The one TLS ClientHello parser that every TLS matcher shares.

L{parseClientHello} is a pure function of a connection's first bytes, meant to
be run through L{demux.Peek.parse} so that a connection's hello is parsed once
however many matchers look at it.  It reads the TLS record layer, puts the
handshake message back together from as many records as the client chose to
cut it into, and parses the ClientHello body strictly: anything a conforming
client cannot send is L{NO_MATCH}, because a route that trusts a field it
cannot parse is a route an attacker can steer.

It returns L{NEED_MORE} only while more bytes could still change the answer:
every check is made as soon as the bytes it looks at have arrived, so a
malformed prefix is rejected at once instead of after the rest of a declared
length that may never come.  Bytes after the record that ends the ClientHello
(a ChangeCipherSpec, early data) are never looked at, which makes a decided
parse final, as L{demux.Peek} requires.
"""

from __future__ import annotations

import hashlib
from struct import unpack, unpack_from
from typing import Final, Literal

from attrs import frozen

from ._verdict import Verdict

Carrier = Literal["tcp", "quic", "dtls"]
"""What carried a ClientHello: TLS records over TCP, QUIC or DTLS."""

# Record layer (RFC 8446, section 5.1).
_HANDSHAKE_RECORD: Final = 22
MAX_RECORD_LENGTH: Final = 2**14
"""The largest TLSPlaintext fragment a peer may send."""

# Handshake layer.
_CLIENT_HELLO: Final = 1

MAX_CLIENT_HELLO_LENGTH: Final = (
    2  # legacy_version
    + 32  # random
    + 1
    + 32  # legacy_session_id<0..32>
    + 2
    + (2**16 - 2)  # cipher_suites<2..2^16-2>
    + 1
    + (2**8 - 1)  # legacy_compression_methods<1..2^8-1>
    + 2
    + (2**16 - 1)  # extensions<8..2^16-1>
)
"""
The largest body a legal ClientHello can have (131,396 bytes): the sum of the
largest value of each of its fields as RFC 8446 section 4.1.2 bounds them.  A
handshake header declaring more is not a ClientHello, and refusing it at once
keeps a client from making us wait for bytes that could never parse.  (On the
wire a hello this size spans at least nine records; in practice the demux's
C{max_peek} cap decides long before.)
"""

MAX_DTLS_CLIENT_HELLO_LENGTH: Final = MAX_CLIENT_HELLO_LENGTH + 1 + (2**8 - 1)
"""
The largest DTLS ClientHello body: a TLS one plus its C{cookie<0..2^8-1>}
(RFC 6347 section 4.2.1).
"""

# Extension types this parser decodes (IANA "TLS ExtensionType Values").
EXT_SERVER_NAME: Final = 0x0000
EXT_SUPPORTED_GROUPS: Final = 0x000A
EXT_SIGNATURE_ALGORITHMS: Final = 0x000D
EXT_ALPN: Final = 0x0010
EXT_SUPPORTED_VERSIONS: Final = 0x002B
EXT_ENCRYPTED_CLIENT_HELLO: Final = 0xFE0D

_HOST_NAME: Final = 0

TLS_VERSIONS: Final = {
    0x0300: "ssl3",
    0x0301: "1.0",
    0x0302: "1.1",
    0x0303: "1.2",
    0x0304: "1.3",
}
"""Protocol version numbers by their usual names (C{"1.3"} is C{0x0304})."""


def isGrease(value: int) -> bool:
    """
    Whether C{value} is one of the sixteen GREASE values of RFC 8701
    (C{0x0a0a}, C{0x1a1a}, ... C{0xfafa}) that clients sprinkle into cipher
    suites, extensions, groups and versions so that servers keep tolerating
    values they do not know.  Fingerprints and version checks must skip them.
    """
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


class _Malformed(Exception):
    """
    No continuation of the bytes can be a ClientHello.
    """


class _Truncated(Exception):
    """
    The bytes so far are a well-formed prefix; more are needed to finish.
    """


def _need(buf: bytes, pos: int, n: int, end: int) -> int:
    """
    Claim C{n} bytes of C{buf} at C{pos} inside a structure ending at C{end}.

    @return: the position after them.
    @raise _Malformed: if they would run past C{end} (a length field lies).
    @raise _Truncated: if they are within C{end} but have not arrived.
    """
    new = pos + n
    if new > end:
        raise _Malformed()
    if new > len(buf):
        raise _Truncated()
    return new


def _uint16s(chunk: bytes) -> tuple[int, ...]:
    return unpack(f"!{len(chunk) // 2}H", chunk)


@frozen
class ClientHello:
    """
    What a client said in its ClientHello, decoded as far as routing and
    fingerprinting need and kept raw beyond that.

    Lists keep every value in the order the client sent it, GREASE included
    (use L{isGrease} to drop them), so that a fingerprint can be computed and
    nothing the client said is lost.

    @ivar recordLengths: the declared length of each TLS record that carried
        part of the handshake message, in order.
    @ivar handshakeLength: the length of the ClientHello body as its
        handshake header declares it (the 4-byte header not included).
    @ivar legacyVersion: the C{legacy_version} field (C{0x0303} for TLS 1.2
        and TLS 1.3 clients alike).
    @ivar random: the 32 random bytes.
    @ivar sessionId: the legacy session id, 0 to 32 bytes.
    @ivar cipherSuites: the offered cipher suites.
    @ivar compressionMethods: the offered compression methods, one per byte.
    @ivar extensions: each extension as C{(type, data)}, in order; types are
        unique (a hello repeating one is not a ClientHello).
    @ivar serverName: the C{host_name} of the server_name extension exactly
        as sent (printable ASCII: internationalised names arrive as their
        C{xn--} A-labels), or L{None} if there is none.
    @ivar alpn: the ALPN protocol names, each decoded as latin-1 so that any
        byte survives and C{name.encode("latin-1")} gives the wire bytes back.
    @ivar supportedVersions: the supported_versions extension's list, or
        C{()} if the extension is absent.
    @ivar supportedGroups: the supported_groups extension's list, or C{()}.
    @ivar signatureAlgorithms: the signature_algorithms extension's list, or
        C{()}.
    @ivar cookie: a DTLS hello's C{cookie} (empty in a client's first hello),
        or L{None} for TLS over TCP and QUIC, which have no such field.
    @ivar carrier: what carried the hello: C{"tcp"} (TLS records),
        C{"quic"} (CRYPTO frames of Initial packets) or C{"dtls"} (DTLS
        records); JA4 starts with its first letter, and DTLS numbers its
        versions downwards.
    """

    recordLengths: tuple[int, ...]
    handshakeLength: int
    legacyVersion: int
    random: bytes
    sessionId: bytes
    cipherSuites: tuple[int, ...]
    compressionMethods: bytes
    extensions: tuple[tuple[int, bytes], ...]
    serverName: str | None
    alpn: tuple[str, ...]
    supportedVersions: tuple[int, ...]
    supportedGroups: tuple[int, ...]
    signatureAlgorithms: tuple[int, ...]
    cookie: bytes | None = None
    carrier: Carrier = "tcp"

    @property
    def extensionTypes(self) -> tuple[int, ...]:
        """
        The extension types in the order they were sent.
        """
        return tuple(t for t, _ in self.extensions)

    def extension(self, extensionType: int) -> bytes | None:
        """
        The data of the extension of type C{extensionType}, or L{None} if the
        hello has none; for matchers of extensions this parser leaves raw.
        """
        for t, data in self.extensions:
            if t == extensionType:
                return data
        return None

    @property
    def hasServerNameExtension(self) -> bool:
        """
        Whether a server_name extension was sent at all (it might, in
        principle, carry no C{host_name}).
        """
        return any(t == EXT_SERVER_NAME for t, _ in self.extensions)

    @property
    def hasECH(self) -> bool:
        """
        Whether an Encrypted Client Hello extension (C{0xfe0d}) is offered.

        Real ECH and the GREASE ECH that browsers send look alike from
        outside; either way L{serverName} is the outer, public name.
        """
        return any(t == EXT_ENCRYPTED_CLIENT_HELLO for t, _ in self.extensions)

    @property
    def offeredVersions(self) -> tuple[int, ...]:
        """
        The protocol versions the client offers: the supported_versions list
        if it sent one (TLS 1.3 clients must), else its C{legacyVersion}.
        GREASE values are kept.
        """
        if self.supportedVersions:
            return self.supportedVersions
        return (self.legacyVersion,)

    @property
    def highestVersion(self) -> int | None:
        """
        The highest non-GREASE version in L{offeredVersions}, or L{None} if it
        offers only GREASE.  DTLS numbers its versions downwards (1.2 is
        C{0xfefd}, 1.3 C{0xfefc}), so for a DTLS hello that is the smallest.
        """
        real = [v for v in self.offeredVersions if not isGrease(v)]
        if not real:
            return None
        return min(real) if self.carrier == "dtls" else max(real)

    def ja4(self) -> str:
        """
        The JA4 fingerprint of this hello, as a TCP (C{t}), QUIC (C{q}) or
        DTLS (C{d}) client by its L{carrier}, following FoxIO's public JA4
        specification: version, C{d} or C{i} for SNI or not, cipher and
        extension counts, the first and last characters of
        the first ALPN name, then the truncated SHA-256 of the sorted cipher
        suites and of the sorted extensions (without server_name and ALPN)
        followed by the signature algorithms in the order sent; GREASE values
        are ignored everywhere.
        """
        version = _JA4_VERSIONS.get(self.highestVersion, "00")
        sni = "d" if self.hasServerNameExtension else "i"
        ciphers = [c for c in self.cipherSuites if not isGrease(c)]
        extensions = [t for t, _ in self.extensions if not isGrease(t)]
        alpn = _ja4Alpn(self.alpn[0].encode("latin-1") if self.alpn else b"")
        a = (
            f"{self.carrier[0]}{version}{sni}{min(len(ciphers), 99):02d}"
            f"{min(len(extensions), 99):02d}{alpn}"
        )
        b = _ja4Hash(",".join(f"{c:04x}" for c in sorted(ciphers)))
        hashed = sorted(t for t in extensions if t not in (EXT_SERVER_NAME, EXT_ALPN))
        if hashed:
            c = ",".join(f"{t:04x}" for t in hashed)
            algorithms = [s for s in self.signatureAlgorithms if not isGrease(s)]
            if algorithms:
                c += "_" + ",".join(f"{s:04x}" for s in algorithms)
            c = _ja4Hash(c)
        else:
            c = "000000000000"
        return f"{a}_{b}_{c}"


_JA4_VERSIONS: Final[dict[int | None, str]] = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}


def _ja4Hash(text: str) -> str:
    if not text:
        return "000000000000"
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _ja4Alpn(first: bytes) -> str:
    """
    JA4's two ALPN characters: the first and last characters of the first
    ALPN name if both are ASCII alphanumerics, else the first and last
    characters of its hex form, and C{00} if there is none.
    """
    if not first:
        return "00"
    head, tail = first[:1], first[-1:]
    if head.isalnum() and tail.isalnum():
        return (head + tail).decode("ascii")
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def parseClientHello(
    data: bytes,
) -> ClientHello | Literal[Verdict.NEED_MORE, Verdict.NO_MATCH]:
    """
    Parse the TLS ClientHello at the start of C{data}.

    @param data: every byte the client has sent so far.
    @return: the L{ClientHello} once its whole handshake message has arrived;
        L{NEED_MORE} while C{data} is a well-formed prefix of one; L{NO_MATCH}
        as soon as no continuation of C{data} can be one (not TLS, an SSLv2
        compatible hello, a length that lies or overflows its parent, a record
        other than a handshake record before the hello is complete, a record
        that goes on past the hello's end, a duplicate extension, a
        malformed server_name or ALPN list...).
    """
    try:
        return _parse(data)
    except _Truncated:
        return Verdict.NEED_MORE
    except _Malformed:
        return Verdict.NO_MATCH


def _parse(data: bytes) -> ClientHello:
    """
    Reassemble the handshake message from the records at the start of
    C{data}, checking each record header as far as it has arrived, then
    parse the message.
    """
    n = len(data)
    pos = 0
    records: list[int] = []
    carried = 0  # the sum of the declared record lengths so far
    messageEnd = -1  # the handshake message's length, header included
    while pos < n:
        header = data[pos : pos + 5]
        if header[0] != _HANDSHAKE_RECORD:
            raise _Malformed()
        if len(header) > 1 and header[1] != 3:
            raise _Malformed()
        if len(header) > 2 and header[2] > 4:
            raise _Malformed()
        if len(header) < 5:
            break
        length = (header[3] << 8) | header[4]
        if length == 0 or length > MAX_RECORD_LENGTH:
            raise _Malformed()
        records.append(length)
        carried += length
        pos += 5 + length
        if messageEnd < 0:
            messageEnd = _messageLength(_fragments(data, records))
        # RFC 8446 section 5.1: a ClientHello must end on a record boundary
        # (a key change may follow it), so a record running past its end is
        # a length that lies; and it is known to lie as soon as both headers
        # are in.
        if messageEnd >= 0 and carried >= messageEnd:
            if carried > messageEnd:
                raise _Malformed()
            break
        if pos > n:
            # This record is still arriving.
            break
    if messageEnd < 0:
        raise _Truncated()
    message = _fragments(data, records)
    return _parseBody(message, tuple(records), messageEnd - 4)


def _fragments(data: bytes, records: list[int]) -> bytes:
    """
    The handshake bytes that have arrived in the records of C{records}
    lengths at the start of C{data}: one slice in the usual case of a
    single record.
    """
    if len(records) == 1:
        return data[5 : 5 + records[0]]
    parts = []
    pos = 0
    for length in records:
        parts.append(data[pos + 5 : pos + 5 + length])
        pos += 5 + length
    return b"".join(parts)


def parseHandshakeMessage(
    message: bytes, carrier: Carrier = "quic", records: tuple[int, ...] = ()
) -> ClientHello | Literal[Verdict.NEED_MORE, Verdict.NO_MATCH]:
    """
    Parse a bare ClientHello handshake message, with no TLS record layer
    around it: its 4-byte header (type 1, 3-byte length) and body, as QUIC
    carries it at offset 0 of the CRYPTO stream and as a DTLS hello's
    fragments reassemble into (the DTLS caller writes the 4-byte header in
    front of the reassembled body).

    @param message: the message's bytes so far, contiguous from its start;
        bytes after its end are ignored.
    @param carrier: C{"quic"}, or C{"dtls"} for a DTLS body (whose version
        is DTLS's and which has a cookie after the session id).
    @param records: for DTLS, the lengths of the records that carried it.
    @return: as L{parseClientHello}: the hello, L{NEED_MORE} while
        C{message} is a well-formed prefix, L{NO_MATCH} once it cannot be.
    """
    maximum = MAX_DTLS_CLIENT_HELLO_LENGTH if carrier == "dtls" else None
    try:
        length = _messageLength(message, maximum)
        if length < 0:
            raise _Truncated()
        return _parseBody(message, records, length - 4, carrier)
    except _Truncated:
        return Verdict.NEED_MORE
    except _Malformed:
        return Verdict.NO_MATCH


def _messageLength(start: bytes, maximum: int | None = None) -> int:
    """
    The length of the handshake message, its header included, that
    C{start} begins, or -1 if its header has not all arrived.

    @raise _Malformed: if it is not a ClientHello, or declares more than
        L{MAX_CLIENT_HELLO_LENGTH} (checked on each length byte as it comes).
    """
    if not start:
        return -1
    if start[0] != _CLIENT_HELLO:
        raise _Malformed()
    lengthBytes = start[1:4]
    smallest = int.from_bytes(lengthBytes, "big") << (8 * (3 - len(lengthBytes)))
    if smallest > (MAX_CLIENT_HELLO_LENGTH if maximum is None else maximum):
        raise _Malformed()
    if len(lengthBytes) < 3:
        return -1
    return 4 + smallest


def _parseBody(
    message: bytes,
    records: tuple[int, ...],
    bodyLength: int,
    carrier: Carrier = "tcp",
) -> ClientHello:
    """
    Parse the ClientHello body in C{message[4:]}, which may not all have
    arrived yet (then L{_Truncated} is raised once the parse reaches its end,
    or L{_Malformed} at the first field that cannot be right whatever
    follows).  A DTLS body (C{carrier} C{"dtls"}) has a DTLS version and a
    cookie after the session id; the rest is the same.
    """
    dtls = carrier == "dtls"
    end = 4 + bodyLength
    pos = _need(message, 4, 2, end)
    legacyVersion = (message[4] << 8) | message[5]
    if message[4] != (0xFE if dtls else 3):
        raise _Malformed()
    randomAt = pos
    pos = _need(message, pos, 33, end)
    random = message[randomAt : randomAt + 32]
    sessionIdLength = message[pos - 1]
    if sessionIdLength > 32:
        raise _Malformed()
    sessionAt = pos
    cookie: bytes | None = None
    if dtls:
        pos = _need(message, pos, sessionIdLength + 1, end)
        cookieAt = pos
        pos = _need(message, pos, message[pos - 1] + 2, end)
        cookie = message[cookieAt : pos - 2]
    else:
        pos = _need(message, pos, sessionIdLength + 2, end)
    sessionId = message[sessionAt : sessionAt + sessionIdLength]
    ciphersLength = (message[pos - 2] << 8) | message[pos - 1]
    if ciphersLength == 0 or ciphersLength % 2:
        raise _Malformed()
    ciphersAt = pos
    pos = _need(message, pos, ciphersLength + 1, end)
    cipherSuites = _uint16s(message[ciphersAt : ciphersAt + ciphersLength])
    compressionLength = message[pos - 1]
    if compressionLength == 0:
        raise _Malformed()
    compressionAt = pos
    pos = _need(message, pos, compressionLength, end)
    compressionMethods = message[compressionAt:pos]

    extensions: list[tuple[int, bytes]] = []
    serverName: str | None = None
    alpn: tuple[str, ...] = ()
    supportedVersions: tuple[int, ...] = ()
    supportedGroups: tuple[int, ...] = ()
    signatureAlgorithms: tuple[int, ...] = ()
    if pos < end:
        # Extensions are optional before TLS 1.3, but if present their
        # length must fill the rest of the body exactly.
        pos = _need(message, pos, 2, end)
        extensionsEnd = pos + ((message[pos - 2] << 8) | message[pos - 1])
        if extensionsEnd != end:
            raise _Malformed()
        seen: set[int] = set()
        arrived = len(message)
        # The loop that runs once per extension checks its bounds itself,
        # as _need would (past the end is malformed, past what has arrived
        # is truncated), without a call for each.
        while pos < end:
            if pos + 4 > end:
                raise _Malformed()
            if pos + 4 > arrived:
                raise _Truncated()
            extensionType, extensionLength = unpack_from("!HH", message, pos)
            pos += 4
            if extensionType in seen:
                raise _Malformed()
            seen.add(extensionType)
            dataAt = pos
            dataEnd = pos + extensionLength
            if dataEnd > end:
                raise _Malformed()
            # Decode what has arrived of it, so as to reject early.
            value = message[dataAt:dataEnd]
            if extensionType == EXT_SERVER_NAME:
                serverName = _serverName(value, extensionLength)
            elif extensionType == EXT_ALPN:
                alpn = _alpn(value, extensionLength)
            elif extensionType == EXT_SUPPORTED_VERSIONS:
                supportedVersions = _supportedVersions(value, extensionLength)
            elif extensionType == EXT_SUPPORTED_GROUPS:
                supportedGroups = _uint16List(value, extensionLength)
            elif extensionType == EXT_SIGNATURE_ALGORITHMS:
                signatureAlgorithms = _uint16List(value, extensionLength)
            if dataEnd > arrived:
                raise _Truncated()
            pos = dataEnd
            extensions.append((extensionType, value))

    return ClientHello(
        recordLengths=records,
        handshakeLength=bodyLength,
        legacyVersion=legacyVersion,
        random=random,
        sessionId=sessionId,
        cipherSuites=cipherSuites,
        compressionMethods=compressionMethods,
        extensions=tuple(extensions),
        serverName=serverName,
        alpn=alpn,
        supportedVersions=supportedVersions,
        supportedGroups=supportedGroups,
        signatureAlgorithms=signatureAlgorithms,
        cookie=cookie,
        carrier=carrier,
    )


# Extension decoders.  Each gets the extension's data as far as it has
# arrived and its declared length, and raises like _need does.


def _serverName(data: bytes, end: int) -> str | None:
    """
    RFC 6066 section 3: a non-empty ServerNameList of (name_type, name)
    entries, at most one C{host_name}, each name non-empty.  Unknown name
    types are skipped, as their encoding is assumed to be the same.
    """
    pos = _need(data, 0, 2, end)
    if (data[0] << 8) | data[1] != end - 2 or end == 2:
        raise _Malformed()
    name: str | None = None
    while pos < end:
        pos = _need(data, pos, 3, end)
        nameType = data[pos - 3]
        length = (data[pos - 2] << 8) | data[pos - 1]
        if length == 0:
            raise _Malformed()
        at = pos
        pos = _need(data, pos, length, end)
        if nameType == _HOST_NAME:
            if name is not None:
                raise _Malformed()
            raw = data[at:pos]
            # Printable ASCII without spaces: anything else is not a DNS
            # name, and would be a way to smuggle odd bytes into logs.
            if not (raw.isascii() and raw.decode("ascii").isprintable()) or (
                b" " in raw
            ):
                raise _Malformed()
            name = raw.decode("ascii")
    return name


def _alpn(data: bytes, end: int) -> tuple[str, ...]:
    """
    RFC 7301 section 3.1: a non-empty ProtocolNameList of non-empty names.
    """
    pos = _need(data, 0, 2, end)
    if (data[0] << 8) | data[1] != end - 2 or end == 2:
        raise _Malformed()
    names = []
    while pos < end:
        pos = _need(data, pos, 1, end)
        at = pos
        length = data[pos - 1]
        if length == 0:
            raise _Malformed()
        pos = _need(data, pos, length, end)
        names.append(data[at:pos].decode("latin-1"))
    return tuple(names)


def _supportedVersions(data: bytes, end: int) -> tuple[int, ...]:
    """
    RFC 8446 section 4.2.1: C{ProtocolVersion versions<2..254>}.
    """
    _need(data, 0, 1, end)
    length = data[0]
    if length != end - 1 or length < 2 or length % 2:
        raise _Malformed()
    _need(data, 1, length, end)
    return _uint16s(data[1:end])


def _uint16List(data: bytes, end: int) -> tuple[int, ...]:
    """
    A non-empty list of 16-bit values behind a 16-bit length: the shape of
    supported_groups and signature_algorithms.
    """
    _need(data, 0, 2, end)
    length = (data[0] << 8) | data[1]
    if length != end - 2 or length < 2 or length % 2:
        raise _Malformed()
    _need(data, 2, length, end)
    return _uint16s(data[2:end])
