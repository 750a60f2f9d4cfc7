"""
The C{adb} matcher: the Android Debug Bridge's first message, C{CNXN}, or
C{STLS} for ADB over TLS.

An ADB message starts with a 24-byte header of six little-endian 32-bit
words: the command, two arguments, the payload's length and checksum, and a
magic word that is the command with every bit flipped.  A host connecting to
a device (C{adb connect HOST:PORT}) sends C{CNXN} first, its arguments the
protocol version (C{0x01000000} or later) and the largest payload it takes;
with wireless debugging the device answers C{STLS} and the host sends
C{STLS} back before TLS starts.  The header alone decides, so the matcher
never needs more than its 24 bytes.
"""

from __future__ import annotations

from attrs import frozen
from zope.interface import implementer, provider

from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import noOptions

HEADER = 24
"""
The bytes of an ADB message header.
"""

COMMANDS = (b"CNXN", b"STLS")
"""
The commands that can open a connection, as they appear on the wire.
"""

_VERSION_MAJOR = 0x01


def _word(data: bytes, index: int) -> int:
    return int.from_bytes(data[index * 4 : index * 4 + 4], "little")


@frozen
class ADBHeader:
    """
    A parsed ADB message header.

    @ivar command: C{"CNXN"} or C{"STLS"}.
    @ivar version: the protocol version (the first argument).
    @ivar maxData: the largest payload the sender takes (C{CNXN}'s second
        argument; 0 for C{STLS}).
    """

    command: str
    version: int
    maxData: int


def parseADBHeader(data: bytes) -> ADBHeader | Verdict:
    """
    The message header at the start of C{data}.

    @return: an L{ADBHeader} once its 24 bytes are in; L{NEED_MORE} before;
        L{NO_MATCH} as soon as the command is not one of L{COMMANDS}, the
        magic word is not the command's complement, or the version's major
        byte is not 1.
    """
    head = data[:4]
    if not any(command.startswith(head) for command in COMMANDS):
        return NO_MATCH
    if len(data) >= 8 and data[7] != _VERSION_MAJOR:
        return NO_MATCH
    magic = (_word(head, 0) ^ 0xFFFFFFFF).to_bytes(4, "little")
    if len(head) == 4 and not magic.startswith(data[20:24]):
        return NO_MATCH
    if len(data) < HEADER:
        return NEED_MORE
    return ADBHeader(head.decode("ascii"), _word(data, 1), _word(data, 2))


@implementer(IMatcher)
@frozen
class ADBMatcher:
    """
    Matches an ADB host's first message: C{CNXN}, or C{STLS}.
    """

    def match(self, peek: Peek) -> Verdict:
        header = peek.parse(parseADBHeader)
        if not isinstance(header, ADBHeader):
            return header
        return MATCH

    def describe(self, peek: Peek) -> str:
        header = peek.parse(parseADBHeader)
        if not isinstance(header, ADBHeader):
            return "adb"
        text = f"adb command={header.command} version=0x{header.version:08x}"
        if header.command == "CNXN":
            text += f" maxdata={header.maxData}"
        return text


@provider(IMatcherFactory)
class adbFactory:
    """
    C{match.adb = {}}: an Android Debug Bridge host, in the clear or about to
    start TLS.
    """

    name = "adb"
    summary = "Matches the Android Debug Bridge's CNXN (or STLS) message header."

    @staticmethod
    def build(options: object) -> IMatcher:
        noOptions(options)
        return ADBMatcher()
