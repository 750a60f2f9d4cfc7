"""
Tests for the C{openvpn}, C{socks}, C{postgres}, C{mqtt}, C{redis},
C{syslog} and C{proxy_protocol} matchers.

Each is fed the first flights of real clients (C{tests/corpus/}, made by
C{tests/corpus/capture/capture_a.py}) whole, byte by byte and cut at every
offset; must refuse every other capture; must decide within the number of
bytes it documents, on any input; and must parse what generated messages
say.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcherFactory
from demux._peek import Peek
from demux._plugins import matcherFactories
from demux.matchers import (
    _mqtt,
    _openvpn,
    _postgres,
    _proxy_protocol,
    _redis,
    _socks,
    _syslog,
)
from demux.matchers._mqtt import mqttFactory, parseConnect
from demux.matchers._openvpn import openvpnFactory, parseHardReset
from demux.matchers._postgres import Startup, parseStartup, postgresFactory
from demux.matchers._proxy_protocol import (
    V2_SIGNATURE,
    parseProxyHeader,
    proxyProtocolFactory,
)
from demux.matchers._redis import parseCommand, redisFactory
from demux.matchers._socks import parseGreeting, socksFactory
from demux.matchers._syslog import parsePriority, syslogFactory
from demux.testing import assertConsistent, verdictOf

from . import _corpus
from ._corpus import CORPUS, FILES

EXPECTED = json.loads((CORPUS / "expected.json").read_text())

OPENVPN = {
    "openvpn-tcp.bin",
    "openvpn-tcp-tls-auth.bin",
    "openvpn-tcp-tls-crypt.bin",
    "openvpn-tcp-tls-crypt-v2.bin",
}
SOCKS4 = {"socks4-curl.bin", "socks4a-curl.bin"}
SOCKS5 = {"socks5-curl.bin", "socks5-curl-auth.bin"}
POSTGRES_SSL = {"postgres-sslrequest-psql.bin"}
POSTGRES_GSSENC = {"postgres-gssencrequest-psql.bin"}
POSTGRES_STARTUP = {"postgres-startup-psql.bin"}
POSTGRES = POSTGRES_SSL | POSTGRES_GSSENC | POSTGRES_STARTUP
MQTT = {"mqtt31-mosquitto.bin", "mqtt311-mosquitto.bin", "mqtt5-mosquitto.bin"}
REDIS = {"redis-ping-cli.bin", "redis-hello3-cli.bin", "redis-auth-cli.bin"}
SYSLOG_COUNTED = {"syslog-octet-count-logger.bin"}
SYSLOG = SYSLOG_COUNTED | {"syslog-rfc5424-logger.bin", "syslog-rfc3164-logger.bin"}
PROXY = {"proxy-v1-haproxy.bin", "proxy-v2-haproxy.bin"}
OURS = OPENVPN | SOCKS4 | SOCKS5 | POSTGRES | MQTT | REDIS | SYSLOG | PROXY

FACTORIES: dict[str, Any] = {
    "openvpn": openvpnFactory,
    "socks": socksFactory,
    "postgres": postgresFactory,
    "mqtt": mqttFactory,
    "redis": redisFactory,
    "syslog": syslogFactory,
    "proxy_protocol": proxyProtocolFactory,
}

BOUNDS = {
    "openvpn": 2 + _openvpn.MAX_LENGTH_V3,
    "socks": 8 + 2 * (_socks.MAX_NAME + 1),
    "postgres": 8,
    "mqtt": 15,
    "redis": _redis.MAX_PREFIX,
    "syslog": _syslog.MAX_COUNT_DIGITS + 6,
    "proxy_protocol": _proxy_protocol.V1_MAX,
}
"""
The most bytes each matcher, built without options, may read before it
decides.
"""


class MatcherTestCase(_corpus.MatcherTestCase):
    """
    The corpus checks, and the descriptions C{expected.json} records.
    """

    def assertDescribed(self, factory: object, options: object) -> None:
        """
        For each of our captures it matches, the matcher describes it as
        C{expected.json} says.
        """
        matcher = factory.build(options)  # type: ignore[attr-defined]
        for name in sorted(OURS):
            peek = Peek(FILES[name])
            if matcher.match(peek) is MATCH:
                self.assertEqual(matcher.describe(peek), EXPECTED[name]["describe"])


class RegistrationTests(SynchronousTestCase):
    """
    The matchers are plugins like any other.
    """

    def test_entryPoints(self) -> None:
        """
        Each factory is found by its name and provides L{IMatcherFactory}.
        """
        factories = matcherFactories()
        for name, factory in FACTORIES.items():
            self.assertTrue(verifyObject(IMatcherFactory, factory))
            self.assertIs(factories[name], factory)
            self.assertEqual(factory.name, name)

    def test_noOptions(self) -> None:
        """
        C{{}} and C{true} both mean the matcher with no options.
        """
        for factory in FACTORIES.values():
            self.assertEqual(factory.build({}), factory.build(True))

    def test_corpusFiles(self) -> None:
        """
        Every capture of ours is there and C{expected.json} has its length.
        """
        for name in OURS:
            self.assertEqual(len(FILES[name]), EXPECTED[name]["bytes"], name)


def _mutations() -> st.SearchStrategy[bytes]:
    """
    Inputs near the real ones: a capture of ours, cut, with some bytes
    changed, maybe followed by random bytes; or just random bytes.
    """

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(FILES[draw(st.sampled_from(sorted(OURS)))])
        data = data[: draw(st.integers(0, len(data)))]
        for _ in range(draw(st.integers(0, 3))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data) + draw(st.binary(max_size=40))

    return st.one_of(mutated(), st.binary(max_size=64))


class BoundsTests(SynchronousTestCase):
    """
    Every matcher decides within the bytes it documents, never raises, and
    answers the same however its input is cut.
    """

    @settings(max_examples=200, deadline=None)
    @given(_mutations(), st.data())
    def test_bounded(self, data: bytes, draw: st.DataObject) -> None:
        """
        Padded to its bound, any input is decided; cut in two anywhere it
        gets the same verdict as whole; a decided prefix stays decided.
        """
        for name, factory in FACTORIES.items():
            matcher = factory.build({})
            bound = BOUNDS[name]
            padded = data + draw.draw(
                st.binary(min_size=max(0, bound - len(data)), max_size=bound),
                label=name,
            )
            self.assertIsNot(matcher.match(Peek(padded[:bound])), NEED_MORE, name)
            whole = matcher.match(Peek(data))
            cut = draw.draw(st.integers(0, len(data)), label=f"{name} cut")
            self.assertIs(
                verdictOf(matcher, [data[:cut], data[cut:]]), whole, name
            )
            if whole is not NEED_MORE:
                self.assertIs(matcher.match(Peek(padded)), whole, name)

    def test_filteredPostgresBound(self) -> None:
        """
        With a database filter, the postgres matcher reads at most a whole
        StartupMessage of the longest size a server accepts.
        """
        matcher = postgresFactory.build({"database": "x"})
        header = struct.pack(">II", _postgres.MAX_STARTUP, 196608)
        longest = header + b"\x01" * (_postgres.MAX_STARTUP - 8)
        self.assertIs(matcher.match(Peek(longest[:-1])), NEED_MORE)
        self.assertIs(matcher.match(Peek(longest)), NO_MATCH)
        tooLong = struct.pack(">II", _postgres.MAX_STARTUP + 1, 196608)
        self.assertIs(matcher.match(Peek(tooLong)), NO_MATCH)


class OpenVPNTests(MatcherTestCase):
    """
    The C{openvpn} matcher.
    """

    def test_corpus(self) -> None:
        """
        The real client's hard resets, unwrapped, with tls-auth, tls-crypt
        and tls-crypt-v2, match; nothing else does.
        """
        self.assertCorpus(openvpnFactory, {}, OPENVPN)
        self.assertCorpus(openvpnFactory, {"versions": [2, 3]}, OPENVPN)
        self.assertCorpus(
            openvpnFactory, {"versions": 3}, {"openvpn-tcp-tls-crypt-v2.bin"}
        )
        self.assertCorpus(openvpnFactory, {"versions": [1]}, set())

    def test_describe(self) -> None:
        """
        The version and the control channel's wrapping.
        """
        self.assertDescribed(openvpnFactory, {})

    def test_earlyNoMatch(self) -> None:
        """
        A wrong length or opcode is refused within three bytes.
        """
        matcher = openvpnFactory.build({})
        self.assertIs(matcher.match(Peek(b"\x00")), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"\x00\x0d")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x16\x03")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x00\x0e\x39")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x00\x0e\x20")), NO_MATCH)
        self.assertIs(matcher.match(Peek(b"\x00\x0e\x38")), NEED_MORE)
        self.assertIs(matcher.match(Peek(b"\x00\x0e\x50")), NO_MATCH)
        v2only = openvpnFactory.build({"versions": 2})
        self.assertIs(v2only.match(Peek(b"\x00\x0e\x08")), NO_MATCH)

    def test_shapes(self) -> None:
        """
        Each wrapping's packet shape is checked: an unwrapped reset must
        acknowledge nothing and be message 0; a tls-auth one must have a
        fresh replay id after its HMAC.
        """
        session = bytes(range(1, 9))
        plain = b"\x38" + session + b"\x00" + b"\x00" * 4
        self.assertEqual(
            parseHardReset(struct.pack(">H", len(plain)) + plain),
            _openvpn.HardReset(2, "none", 14),
        )
        v1 = b"\x08" + plain[1:]
        self.assertEqual(
            parseHardReset(struct.pack(">H", len(v1)) + v1),
            _openvpn.HardReset(1, "none", 14),
        )
        acking = b"\x38" + session + b"\x01" + b"\x00" * 12
        self.assertIs(parseHardReset(struct.pack(">H", len(acking)) + acking), NO_MATCH)
        for size in _openvpn.HMAC_SIZES:
            auth = b"\x38" + session + b"\xaa" * size + b"\x00\x00\x00\x01"
            auth += b"\x6b\x00\x00\x00" + b"\x00" * 5
            found = parseHardReset(struct.pack(">H", len(auth)) + auth)
            self.assertEqual(found, _openvpn.HardReset(2, "tls-auth", len(auth)))
            stale = auth.replace(b"\x00\x00\x00\x01\x6b", b"\x00\x01\x00\x01\x6b")
            self.assertIs(parseHardReset(struct.pack(">H", len(stale)) + stale), NO_MATCH)
        v3 = FILES["openvpn-tcp-tls-crypt-v2.bin"]
        badKeyLength = v3[:-2] + b"\xff\xff"
        self.assertIs(parseHardReset(badKeyLength), NO_MATCH)

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"versions": []}, "non-empty list"),
            ({"versions": [4]}, "4 is not one of 1, 2, 3"),
            ({"versions": "2"}, "must be a number"),
            ({"versions": [True]}, "must be a number"),
            ({"version": 2}, "unknown option 'version'"),
            ("tcp", "expected a table"),
        ]:
            self.assertBuildFails(openvpnFactory, options, words)


socks4Names = st.binary(max_size=_socks.MAX_NAME).filter(
    lambda b: all(0x20 <= c <= 0x7E for c in b)
)


class SOCKSTests(MatcherTestCase):
    """
    The C{socks} matcher.
    """

    def test_corpus(self) -> None:
        """
        curl's SOCKS4, SOCKS4a and SOCKS5 first messages match, each only
        when its version is allowed.
        """
        self.assertCorpus(socksFactory, {}, SOCKS4 | SOCKS5)
        self.assertCorpus(socksFactory, {"versions": [4, 5]}, SOCKS4 | SOCKS5)
        self.assertCorpus(socksFactory, {"versions": 4}, SOCKS4)
        self.assertCorpus(socksFactory, {"versions": [5]}, SOCKS5)

    def test_describe(self) -> None:
        """
        The version, and the command or the methods offered.
        """
        self.assertDescribed(socksFactory, {})

    def test_early(self) -> None:
        """
        A first byte other than 4 or 5 is refused at once, a SOCKS4
        command other than CONNECT or BIND on the second byte, an empty or
        unassigned method list as soon as it shows.
        """
        matcher = socksFactory.build({})
        for data in [b"\x16", b"G", b"\x04\x03", b"\x05\x00", b"\x05\x02\xff", b"\x05\x01\x0a"]:
            self.assertIs(matcher.match(Peek(data)), NO_MATCH, data)
        for data in [b"", b"\x04\x01", b"\x05\x02\x00", b"\x04\x01\x00\x50\x01\x02\x03\x04ab"]:
            self.assertIs(matcher.match(Peek(data)), NEED_MORE, data)
        self.assertIs(matcher.match(Peek(b"\x05\x01\x80")), MATCH)
        self.assertIs(matcher.match(Peek(b"\x04\x01\x00\x50\x01\x02\x03\x04a\nb\x00")), NO_MATCH)
        empty4a = b"\x04\x01\x00\x50\x00\x00\x00\x07\x00\x00"
        self.assertIs(matcher.match(Peek(empty4a)), NO_MATCH)

    @settings(max_examples=200)
    @given(
        st.sampled_from([1, 2]),
        st.integers(0, 0xFFFF),
        st.binary(min_size=4, max_size=4),
        socks4Names,
        st.one_of(st.none(), socks4Names.filter(bool)),
    )
    def test_socks4(
        self, command: int, port: int, address: bytes, user: bytes, host: bytes | None
    ) -> None:
        """
        Any SOCKS4 or SOCKS4a request is recognised, with its command, and
        needs all of its bytes.
        """
        if host is not None:
            address = b"\x00\x00\x00\x2a"
        elif address[:3] == b"\x00\x00\x00" and address[3]:
            address = b"\x7f\x00\x00\x01"
        data = struct.pack(">BBH", 4, command, port) + address + user + b"\x00"
        if host is not None:
            data += host + b"\x00"
        expected = _socks.Greeting(
            "4" if host is None else "4a", "connect" if command == 1 else "bind"
        )
        self.assertEqual(parseGreeting(data), expected)
        self.assertIs(parseGreeting(data[:-1]), NEED_MORE)

    @settings(max_examples=200)
    @given(st.lists(st.sampled_from([*range(10), *range(0x80, 0xFF)]), min_size=1, max_size=255))
    def test_socks5(self, methods: list[int]) -> None:
        """
        Any SOCKS5 greeting with assigned or private methods is recognised
        once all its methods are in.
        """
        data = bytes([5, len(methods), *methods])
        matcher = socksFactory.build({})
        self.assertIs(matcher.match(Peek(data)), MATCH)
        self.assertIs(matcher.match(Peek(data[:-1])), NEED_MORE)

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"versions": [4, 6]}, "6 is not one of 4, 5"),
            ({"versions": ["5"]}, "must be a number"),
            ({"versions": []}, "non-empty list"),
            ({"auth": True}, "unknown option 'auth'"),
        ]:
            self.assertBuildFails(socksFactory, options, words)


def startupMessage(parameters: list[tuple[bytes, bytes]], version: int = 196608) -> bytes:
    body = b"".join(k + b"\x00" + v + b"\x00" for k, v in parameters) + b"\x00"
    return struct.pack(">II", 8 + len(body), version) + body


class PostgresTests(MatcherTestCase):
    """
    The C{postgres} matcher.
    """

    def test_corpus(self) -> None:
        """
        psql's SSLRequest, GSSENCRequest and StartupMessage match, each
        when its kind is allowed; database and user filters see only the
        cleartext StartupMessage.
        """
        self.assertCorpus(postgresFactory, {}, POSTGRES)
        self.assertCorpus(postgresFactory, {"requests": "ssl"}, POSTGRES_SSL)
        self.assertCorpus(postgresFactory, {"requests": ["gssenc"]}, POSTGRES_GSSENC)
        self.assertCorpus(
            postgresFactory, {"requests": ["startup", "cancel"]}, POSTGRES_STARTUP
        )
        self.assertCorpus(postgresFactory, {"database": "inventory"}, POSTGRES_STARTUP)
        self.assertCorpus(
            postgresFactory, {"database": ["a", "inventory"], "user": "alice"},
            POSTGRES_STARTUP,
        )
        self.assertCorpus(postgresFactory, {"user": "bob"}, set())
        self.assertCorpus(postgresFactory, {"database": "Inventory"}, set())

    def test_describe(self) -> None:
        """
        The kind of request, and a StartupMessage's user and database.
        """
        self.assertDescribed(postgresFactory, {})

    def test_decidesOnEightBytes(self) -> None:
        """
        Without filters, eight bytes decide; with them, the whole message.
        """
        data = FILES["postgres-startup-psql.bin"]
        plain = postgresFactory.build({})
        self.assertIs(plain.match(Peek(data[:7])), NEED_MORE)
        self.assertIs(plain.match(Peek(data[:8])), MATCH)
        filtered = postgresFactory.build({"user": "alice"})
        self.assertIs(filtered.match(Peek(data[:-1])), NEED_MORE)
        self.assertIs(filtered.match(Peek(data)), MATCH)
        self.assertIs(plain.match(Peek(b"\x01")), NO_MATCH)
        self.assertIs(plain.match(Peek(b"\x00\x00\x00\x07")), NO_MATCH)
        self.assertIs(plain.match(Peek(b"\x00\x00\x27\x11")), NO_MATCH)

    def test_cancelAndDefaultDatabase(self) -> None:
        """
        A CancelRequest matches (4-byte keys and protocol 3.2's longer ones);
        a StartupMessage without a database is for the user's namesake.
        """
        cancel = struct.pack(">III", 16, _postgres.CANCEL_REQUEST_CODE, 42) + b"k" * 4
        self.assertIs(assertConsistent(postgresFactory.build({}), cancel), MATCH)
        self.assertEqual(
            postgresFactory.build({}).describe(Peek(cancel)), "postgres=cancel-request"
        )
        long32 = struct.pack(">III", 44, _postgres.CANCEL_REQUEST_CODE, 42) + b"k" * 32
        self.assertIs(postgresFactory.build({}).match(Peek(long32)), MATCH)
        noDatabase = startupMessage([(b"user", b"inventory")])
        matcher = postgresFactory.build({"database": "inventory"})
        self.assertIs(assertConsistent(matcher, noDatabase), MATCH)

    def test_malformedStartup(self) -> None:
        """
        A StartupMessage without a user, with an empty name, or whose
        terminator is not at its end, is no StartupMessage.
        """
        for data in [
            startupMessage([(b"database", b"x")]),
            startupMessage([(b"user", b"a"), (b"", b"x")]),
            startupMessage([(b"user", b"a")])[:-1] + b"x",
            struct.pack(">II", 17, 196608) + b"user\x00a\x00\x00\x00\x00",
            startupMessage([(b"user", b"a")], version=0x00020000),
        ]:
            self.assertIs(parseStartup(data), NO_MATCH, data)

    @settings(max_examples=200)
    @given(
        st.dictionaries(
            st.text(st.characters(min_codepoint=1, max_codepoint=0x7F), min_size=1, max_size=20),
            st.text(st.characters(min_codepoint=1, blacklist_categories=("Cs",)), max_size=30),
            max_size=6,
        ),
        st.text(st.characters(min_codepoint=1, blacklist_categories=("Cs",)), min_size=1, max_size=20),
        st.integers(0, 2),
    )
    def test_startupParameters(self, extra: dict[str, str], user: str, minor: int) -> None:
        """
        Any well-formed StartupMessage parses to its parameters, in order.
        """
        extra.pop("user", None)
        parameters = [("user", user), *extra.items()]
        data = startupMessage(
            [(k.encode(), v.encode()) for k, v in parameters], 196608 + minor
        )
        found = parseStartup(data)
        self.assertEqual(found, Startup(f"3.{minor}", tuple(parameters)))
        self.assertIs(parseStartup(data[:-1]), NEED_MORE)

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"requests": ["tls"]}, "'tls' is not one of"),
            ({"requests": []}, "non-empty"),
            ({"database": 5}, "database must be"),
            ({"user": ""}, "user must be"),
            ({"user": "a", "requests": ["ssl", "startup"]}, "cleartext StartupMessage"),
            ({"ssl": True}, "unknown option 'ssl'"),
        ]:
            self.assertBuildFails(postgresFactory, options, words)


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


class RedisTests(MatcherTestCase):
    """
    The C{redis} matcher.
    """

    def test_corpus(self) -> None:
        """
        redis-cli's PING, HELLO and AUTH match, and only listed commands
        when there is a list, in any case.
        """
        self.assertCorpus(redisFactory, {}, REDIS)
        self.assertCorpus(
            redisFactory, {"commands": ["hello", "AUTH"]},
            {"redis-hello3-cli.bin", "redis-auth-cli.bin"},
        )
        self.assertCorpus(
            redisFactory, {"commands": "PING", "inline": True}, {"redis-ping-cli.bin"}
        )

    def test_describe(self) -> None:
        """
        The command's name.
        """
        self.assertDescribed(redisFactory, {})

    def test_early(self) -> None:
        """
        Malformed counts and lengths are refused as they arrive; the name's
        line end decides.
        """
        matcher = redisFactory.build({})
        for bad in [b"+", b"*0", b"*-1", b"*01", b"*1\r\r", b"*1\r\n:", b"*1\r\n$0",
                    b"*1\r\n$65\r\n", b"*1\r\n$4\r\n1ING", b"*1\r\n$4\r\nPI G",
                    b"*1\r\n$4\r\nPINGX", b"*12345678901", b"*3000000000\r\n"]:
            self.assertIs(matcher.match(Peek(bad)), NO_MATCH, bad)
        data = FILES["redis-ping-cli.bin"]
        self.assertIs(matcher.match(Peek(data[:-1])), NEED_MORE)
        self.assertIs(matcher.match(Peek(data)), MATCH)
        self.assertEqual(
            parseCommand(b"*2\r\n$6\r\nft.add\r\n"), _redis.Command("FT.ADD", False)
        )

    def test_inline(self) -> None:
        """
        With C{inline}, a listed command's word followed by a space or line
        end matches, in any case; HTTP's GET only if GET is listed.
        """
        matcher = redisFactory.build({"commands": ["PING", "AUTH"], "inline": True})
        for data, verdict in [
            (b"PING\r\n", MATCH),
            (b"ping\n", MATCH),
            (b"auth secret\r\n", MATCH),
            (b"PINGS\r\n", NO_MATCH),
            (b"GET / HTTP/1.1\r\n", NO_MATCH),
            (b"PIN", NEED_MORE),
        ]:
            self.assertIs(verdictOf(matcher, [data]), verdict, data)
            assertConsistent(matcher, data)
        self.assertEqual(matcher.describe(Peek(b"auth x\r\n")), "redis=AUTH form=inline")
        resp = redisFactory.build({})
        self.assertIs(resp.match(Peek(b"PING\r\n")), NO_MATCH)

    @settings(max_examples=200)
    @given(
        st.from_regex(rb"\A[A-Za-z_][A-Za-z0-9_.|:-]{0,63}\Z"),
        st.lists(st.binary(max_size=20), max_size=5),
    )
    def test_resp(self, name: bytes, arguments: list[bytes]) -> None:
        """
        Any RESP command with a command-like name is recognised with it.
        """
        items = [name, *arguments]
        data = b"*%d\r\n" % len(items) + b"".join(
            b"$%d\r\n%s\r\n" % (len(item), item) for item in items
        )
        self.assertEqual(parseCommand(data), _redis.Command(name.decode().upper(), False))

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"inline": True}, "needs a list of commands"),
            ({"commands": ["PI NG"]}, "not a Redis command name"),
            ({"commands": []}, "non-empty"),
            ({"commands": "PING", "inline": "yes"}, "inline must be true or false"),
            ({"resp": True}, "unknown option 'resp'"),
        ]:
            self.assertBuildFails(redisFactory, options, words)


class SyslogTests(MatcherTestCase):
    """
    The C{syslog} matcher.
    """

    def test_corpus(self) -> None:
        """
        logger's RFC 5424 and RFC 3164 messages, with and without octet
        counting, match; the framing option picks one.
        """
        self.assertCorpus(syslogFactory, {}, SYSLOG)
        self.assertCorpus(syslogFactory, {"framing": "octet-counting"}, SYSLOG_COUNTED)
        self.assertCorpus(
            syslogFactory, {"framing": ["non-transparent"]}, SYSLOG - SYSLOG_COUNTED
        )

    def test_describe(self) -> None:
        """
        The priority, split, and the framing.
        """
        self.assertDescribed(syslogFactory, {})

    def test_priorities(self) -> None:
        """
        Priorities are 0 to 191 without leading zeros; counts have no
        leading zero either and announce at least a bare priority.
        """
        matcher = syslogFactory.build({})
        for data, verdict in [
            (b"<0>", MATCH),
            (b"<191>", MATCH),
            (b"<192>", NO_MATCH),
            (b"<1000", NO_MATCH),
            (b"<01>", NO_MATCH),
            (b"<>", NO_MATCH),
            (b"<a", NO_MATCH),
            (b"<?xml", NO_MATCH),
            (b"<1", NEED_MORE),
            (b"3 <0>", MATCH),
            (b"2 <0>", NO_MATCH),
            (b"07 <1>", NO_MATCH),
            (b"123456789 ", NO_MATCH),
            (b"12345678 <1>", MATCH),
            (b"12 x", NO_MATCH),
            (b"GET ", NO_MATCH),
        ]:
            self.assertIs(verdictOf(matcher, [data]), verdict, data)

    @settings(max_examples=200)
    @given(st.integers(0, 191), st.one_of(st.none(), st.integers(3, 10**8 - 1)))
    def test_generated(self, priority: int, count: int | None) -> None:
        """
        Any priority, counted or not, parses to itself.
        """
        data = b"<%d>1 - - - - - hi\n" % priority
        framing = _syslog.NON_TRANSPARENT
        if count is not None:
            data = b"%d " % count + data
            framing = _syslog.OCTET_COUNTING
        self.assertEqual(
            parsePriority(data), _syslog.Priority(priority, framing, count)
        )

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"framing": "octet-count"}, "'octet-count' is not one of"),
            ({"framing": 1}, "framing must be"),
            ({"facility": "user"}, "unknown option 'facility'"),
        ]:
            self.assertBuildFails(syslogFactory, options, words)


class ProxyProtocolTests(MatcherTestCase):
    """
    The C{proxy_protocol} matcher.
    """

    def test_corpus(self) -> None:
        """
        HAProxy's v1 and v2 headers match, each when its version is allowed.
        """
        self.assertCorpus(proxyProtocolFactory, {}, PROXY)
        self.assertCorpus(proxyProtocolFactory, {"versions": 1}, {"proxy-v1-haproxy.bin"})
        self.assertCorpus(
            proxyProtocolFactory, {"versions": [2]}, {"proxy-v2-haproxy.bin"}
        )

    def test_describe(self) -> None:
        """
        The version, the kind of header and the source address.
        """
        self.assertDescribed(proxyProtocolFactory, {})

    def test_v1(self) -> None:
        """
        Version 1 lines are checked field by field; UNKNOWN takes anything.
        """
        matcher = proxyProtocolFactory.build({})
        for line, verdict in [
            (b"PROXY UNKNOWN\r\n", MATCH),
            (b"PROXY UNKNOWN 1.2.3.4 whatever\r\n", MATCH),
            (b"PROXY TCP6 ::1 2001:db8::2 1 65535\r\n", MATCH),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", NO_MATCH),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", NO_MATCH),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", NO_MATCH),
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", NO_MATCH),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", NO_MATCH),
            (b"PROXY UNKNOWN\n", NO_MATCH),
            (b"PROXY UNKNOWN\r\r", NO_MATCH),
            (b"PROXY " + b"x" * 101 + b"\r\n", NO_MATCH),
            (b"PROXY UNKNOWN " + b"x" * 86 + b"\r\n", MATCH),
            (b"PROXX", NO_MATCH),
        ]:
            self.assertIs(assertConsistent(matcher, line), verdict, line)
        self.assertEqual(
            matcher.describe(Peek(b"PROXY TCP6 ::1 2001:db8::2 1 65535\r\n")),
            "proxy_protocol=1 kind=TCP6 source=[::1]:1",
        )

    def test_v2(self) -> None:
        """
        Version 2 decides on its 16 bytes; a PROXY command needs room for
        its family's addresses, a LOCAL one does not.
        """
        matcher = proxyProtocolFactory.build({})
        for header, verdict in [
            (b"\x20\x00\x00\x00", MATCH),
            (b"\x21\x11\x00\x0c", MATCH),
            (b"\x21\x11\x00\x0b", NO_MATCH),
            (b"\x21\x21\x00\x24", MATCH),
            (b"\x21\x21\x00\x23", NO_MATCH),
            (b"\x21\x31\x00\xd8", MATCH),
            (b"\x22\x11\x00\x0c", NO_MATCH),
            (b"\x11\x11\x00\x0c", NO_MATCH),
            (b"\x21\x41\x00\x0c", NO_MATCH),
            (b"\x21\x13\x00\x0c", NO_MATCH),
        ]:
            data = V2_SIGNATURE + header
            self.assertIs(assertConsistent(matcher, data), verdict, header)
        self.assertIs(matcher.match(Peek(V2_SIGNATURE[:5] + b"x")), NO_MATCH)

    @settings(max_examples=200)
    @given(
        st.one_of(
            st.ip_addresses(v=4).map(lambda a: (a, 0x11)),
            st.ip_addresses(v=6).map(lambda a: (a, 0x21)),
        ),
        st.integers(0, 0xFFFF),
        st.binary(max_size=20),
    )
    def test_generated(
        self,
        addressAndFamily: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int],
        port: int,
        tlvs: bytes,
    ) -> None:
        """
        Any v1 or v2 header for TCP parses to its source.
        """
        address, family = addressAndFamily
        packed = address.packed * 2 + struct.pack(">HH", port, 443)
        v2 = V2_SIGNATURE + struct.pack(">BBH", 0x21, family, len(packed) + len(tlvs))
        v2 += packed + tlvs
        shown = f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"
        found = parseProxyHeader(v2)
        assert isinstance(found, _proxy_protocol.ProxyHeader)
        self.assertEqual(found.source, shown)
        proto = b"TCP4" if address.version == 4 else b"TCP6"
        v1 = b"PROXY %s %s %s %d 443\r\n" % (
            proto, str(address).encode(), str(address).encode(), port
        )
        self.assertEqual(
            parseProxyHeader(v1), _proxy_protocol.ProxyHeader(1, proto.decode(), shown)
        )

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        for options, words in [
            ({"versions": [3]}, "3 is not one of 1, 2"),
            ({"versions": "v1"}, "must be a number"),
            ({"strip": True}, "unknown option 'strip'"),
        ]:
            self.assertBuildFails(proxyProtocolFactory, options, words)
