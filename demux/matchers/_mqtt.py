"""
The C{mqtt} matcher: an MQTT client's CONNECT packet.

An MQTT client's first packet must be CONNECT: the byte C{0x10} (packet type
1, no flags), the remaining length as a variable-length integer (1 to 4
bytes, 7 bits each, least significant first), the protocol name as a
2-byte-length-prefixed string and the protocol level, then the connect
flags.  The name and level go together:

  - C{"MQIsdp"}, level 3: MQTT 3.1;
  - C{"MQTT"}, level 4: MQTT 3.1.1;
  - C{"MQTT"}, level 5: MQTT 5.0.

A bridge (Mosquitto's C{try_private}) sets the level's top bit (C{0x83},
C{0x84}, C{0x85}); that is still a client of the same version, and matches.

The matcher decides on the connect flags byte, at most 15 bytes in: their
reserved bit must be clear, the will QoS must not be 3, and without a will
neither will QoS nor will retain may be set; MQTT 3.1.1 also forbids a
password without a user name.  The remaining length must leave room for the
keep-alive and client identifier that follow.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import choiceList, optionTable

CONNECT = 0x10
BRIDGE = 0x80
"""
The bit a bridge sets in the protocol level.
"""

VERSIONS = ("3.1", "3.1.1", "5.0")

_PROTOCOLS = (
    (b"\x00\x04MQTT", {4: "3.1.1", 5: "5.0"}),
    (b"\x00\x06MQIsdp", {3: "3.1"}),
)
_MAX_LENGTH_BYTES = 4


@frozen
class Connect:
    """
    The start of an MQTT CONNECT packet.

    @ivar version: C{"3.1"}, C{"3.1.1"} or C{"5.0"}.
    @ivar bridge: whether the level had the bridge bit set.
    @ivar remaining: the packet's remaining length.
    """

    version: str
    bridge: bool
    remaining: int


def _remainingLength(data: bytes) -> tuple[int, int] | Verdict:
    """
    The remaining length that starts at C{data[1]} and the offset after it.
    """
    value = 0
    for i in range(_MAX_LENGTH_BYTES):
        if 1 + i >= len(data):
            return NEED_MORE
        byte = data[1 + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, 2 + i
    return NO_MATCH


def _flagsFit(flags: int, level: int) -> bool:
    """
    Whether C{flags}, a CONNECT's connect flags, are well formed for
    protocol C{level}.
    """
    will, willQoS, willRetain = flags & 0x04, (flags >> 3) & 0x03, flags & 0x20
    if flags & 0x01 or willQoS == 3:
        return False
    if not will and (willQoS or willRetain):
        return False
    password, user = flags & 0x40, flags & 0x80
    return not (level == 4 and password and not user)


def parseConnect(data: bytes) -> Connect | Verdict:
    """
    The CONNECT packet at the start of C{data}, up to its connect flags.

    @return: a L{Connect} once the connect flags are in and everything up to
        them fits; L{NEED_MORE} before; L{NO_MATCH} as soon as a byte does
        not fit.
    """
    if not data:
        return NEED_MORE
    if data[0] != CONNECT:
        return NO_MATCH
    found = _remainingLength(data)
    if not isinstance(found, tuple):
        return found
    remaining, start = found
    rest = data[start:]
    for name, levels in _PROTOCOLS:
        if not name.startswith(rest[: len(name)]):
            continue
        if len(rest) <= len(name):
            return NEED_MORE
        level = rest[len(name)]
        version = levels.get(level & ~BRIDGE)
        # Name, level, flags, keep-alive, client identifier length, and for
        # MQTT 5 the properties length.
        least = len(name) + 1 + 1 + 2 + 2 + (1 if version == "5.0" else 0)
        if version is None or remaining < least:
            return NO_MATCH
        if len(rest) <= len(name) + 1:
            return NEED_MORE
        if not _flagsFit(rest[len(name) + 1], level & ~BRIDGE):
            return NO_MATCH
        return Connect(version, bool(level & BRIDGE), remaining)
    return NO_MATCH


@implementer(IMatcher)
@frozen
class MQTTMatcher:
    """
    Matches an MQTT client connecting with one of C{versions}.

    @ivar versions: some of L{VERSIONS}.
    """

    versions: tuple[str, ...] = VERSIONS

    def match(self, peek: Peek) -> Verdict:
        found = peek.parse(parseConnect)
        if not isinstance(found, Connect):
            return found
        return MATCH if found.version in self.versions else NO_MATCH

    def describe(self, peek: Peek) -> str:
        found = peek.parse(parseConnect)
        if not isinstance(found, Connect):
            return "mqtt"
        return f"mqtt={found.version}" + (" bridge=true" if found.bridge else "")


@provider(IMatcherFactory)
class mqttFactory:
    """
    C{match.mqtt = {}} for any MQTT client, or
    C{{versions = ["3.1.1", "5.0"]}} for some protocol versions only.
    """

    name = "mqtt"
    summary = "Matches MQTT clients (3.1, 3.1.1, 5.0) by their CONNECT packet."

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(options, ("versions",))
        if "versions" not in table:
            return MQTTMatcher()
        return MQTTMatcher(choiceList(table["versions"], "versions", VERSIONS))
