"""
Tests of the C{mqtt} matcher (L{demux.matchers._mqtt}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers import (
    _mqtt,
)
from demux.matchers._mqtt import mqttFactory, parseConnect
from demux.testing import assertConsistent

from ._corpus import FILES
from ._matchers_a import (
    MQTT,
    MatcherTestCase,
)


def mqttConnect(name: bytes, level: int, flags: int, clientId: bytes) -> bytes:
    variable = struct.pack(">H", len(name)) + name + bytes([level, flags]) + b"\x00\x3c"
    if level & 0x7F == 5:
        variable += b"\x00"
    payload = struct.pack(">H", len(clientId)) + clientId
    remaining = len(variable) + len(payload)
    encoded = bytearray()
    while True:
        remaining, byte = divmod(remaining, 128)
        encoded.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    return b"\x10" + bytes(encoded) + variable + payload


class MQTTTests(MatcherTestCase):
    """
    The C{mqtt} matcher.
    """

    def test_corpus(self) -> None:
        """
        mosquitto_pub's CONNECT packets for 3.1, 3.1.1 and 5.0 match, each
        when its version is allowed.
        """
        self.assertCorpus(mqttFactory, {}, MQTT)
        self.assertCorpus(mqttFactory, {"versions": "3.1"}, {"mqtt31-mosquitto.bin"})
        self.assertCorpus(
            mqttFactory,
            {"versions": ["3.1.1", "5.0"]},
            {"mqtt311-mosquitto.bin", "mqtt5-mosquitto.bin"},
        )

    def test_describe(self) -> None:
        """
        The protocol version.
        """
        self.assertDescribed(mqttFactory, {})

    def test_decidesOnFlags(self) -> None:
        """
        The connect flags byte decides; wrong bytes before it are refused
        as they arrive.
        """
        data = FILES["mqtt311-mosquitto.bin"]
        matcher = mqttFactory.build({})
        self.assertIs(matcher.match(Peek(data[:9])), NEED_MORE)
        self.assertIs(matcher.match(Peek(data[:10])), MATCH)
        for bad in [b"\x11", b"\x20", b"\x10\x80\x80\x80\x80", b"\x10\x1a\x00\x05",
                    b"\x10\x1a\x00\x04MQTX", b"\x10\x1a\x00\x04MQTT\x03",
                    b"\x10\x05\x00\x04MQTT\x04"]:
            self.assertIs(matcher.match(Peek(bad)), NO_MATCH, bad)

    def test_flags(self) -> None:
        """
        Reserved bit, will QoS 3, will QoS or retain without a will, and a
        3.1.1 password without a user name are refused.
        """
        for flags, level, verdict in [
            (0x02, 4, MATCH),
            (0x03, 4, NO_MATCH),
            (0x1C, 4, NO_MATCH),
            (0x08, 4, NO_MATCH),
            (0x20, 4, NO_MATCH),
            (0x2C, 4, MATCH),
            (0x40, 4, NO_MATCH),
            (0x40, 5, MATCH),
            (0xC0, 4, MATCH),
        ]:
            data = mqttConnect(b"MQTT", level, flags, b"c")
            self.assertIs(assertConsistent(mqttFactory.build({}), data), verdict, flags)

    def test_bridge(self) -> None:
        """
        A bridge's level, with the top bit set, is the same version.
        """
        data = mqttConnect(b"MQTT", 0x84, 0x02, b"bridge")
        matcher = mqttFactory.build({"versions": "3.1.1"})
        self.assertIs(assertConsistent(matcher, data), MATCH)
        self.assertEqual(matcher.describe(Peek(data)), "mqtt=3.1.1 bridge=true")

    @settings(max_examples=200)
    @given(
        st.sampled_from([(b"MQIsdp", 3, "3.1"), (b"MQTT", 4, "3.1.1"), (b"MQTT", 5, "5.0")]),
        st.binary(max_size=300),
        st.booleans(),
    )
    def test_connect(
        self, protocol: tuple[bytes, int, str], clientId: bytes, bridge: bool
    ) -> None:
        """
        Any CONNECT, whatever its remaining length's size, is recognised
        with its version.
        """
        name, level, version = protocol
        data = mqttConnect(name, level | (0x80 if bridge else 0), 0x02, clientId)
        found = parseConnect(data)
        assert isinstance(found, _mqtt.Connect)
        self.assertEqual((found.version, found.bridge), (version, bridge))
        self.assertEqual(found.remaining, len(data) - (3 if len(data) > 130 else 2))

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"versions": ["5"]}, "'5' is not one of"),
            ({"versions": [5]}, "versions must be"),
            ({"client_id": "x"}, "unknown option 'client_id'"),
        ]:
            self.assertBuildFails(mqttFactory, options, words)
