"""
Tests of the built-in matchers as a set: each is registered as a plugin
under its name, and each decides within the bytes it documents.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux._errors import MatcherConfigError
from demux._interfaces import NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory
from demux._peek import Peek
from demux._plugins import matcherFactories
from demux.matchers import (
    _openvpn,
    _postgres,
    _proxy_protocol,
    _redis,
    _socks,
    _syslog,
)
from demux.matchers._adb import adbFactory
from demux.matchers._http import http2Factory, httpFactory
from demux.matchers._mqtt import mqttFactory
from demux.matchers._openvpn import openvpnFactory
from demux.matchers._postgres import postgresFactory
from demux.matchers._prefix import prefixFactory
from demux.matchers._proxy_protocol import (
    proxyProtocolFactory,
)
from demux.matchers._rdp import (
    rdpFactory,
)
from demux.matchers._redis import redisFactory
from demux.matchers._regex import regexFactory
from demux.matchers._socks import socksFactory
from demux.matchers._ssh import sshFactory
from demux.matchers._syncthing import (
    bepFactory,
    relayProtocolFactory,
    relaySessionFactory,
)
from demux.matchers._syslog import syslogFactory
from demux.matchers._tinc import tincFactory
from demux.matchers._xmpp import (
    xmppFactory,
)
from demux.testing import verdictOf

from ._corpus import FILES
from ._matchers_a import EXPECTED, OURS

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


class ServiceRegistrationTests(SynchronousTestCase):
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


ALL = [
    xmppFactory,
    rdpFactory,
    tincFactory,
    adbFactory,
    bepFactory,
    relayProtocolFactory,
    relaySessionFactory,
]


class ApplicationRegistrationTests(SynchronousTestCase):
    """
    The matchers are plugins like any other.
    """

    def test_entryPoints(self) -> None:
        """
        Each factory provides L{IMatcherFactory} and is found by its name.
        """
        factories = matcherFactories()
        for factory in ALL:
            self.assertTrue(verifyObject(IMatcherFactory, factory))
            self.assertIs(factories[factory.name], factory)

    def test_noOptionsWritten(self) -> None:
        """
        C{{}} and C{true} both build every one of them.
        """
        for factory in ALL:
            for options in ({}, True):
                verifyObject(IMatcher, factory.build(options))

    def test_unknownOption(self) -> None:
        """
        An option a matcher does not know is refused by name.
        """
        for factory in ALL:
            with self.assertRaises(MatcherConfigError):
                factory.build({"colour": "blue"})


class BasicRegistrationTests(SynchronousTestCase):
    """
    The matchers are plugins like any other.
    """

    def test_entryPoints(self) -> None:
        """
        Each factory is found by its name and provides L{IMatcherFactory}.
        """
        factories = matcherFactories()
        for name, factory in [
            ("prefix", prefixFactory),
            ("http", httpFactory),
            ("http2", http2Factory),
            ("ssh", sshFactory),
            ("regex", regexFactory),
        ]:
            self.assertTrue(verifyObject(IMatcherFactory, factory))
            self.assertIs(factories[name], factory)
            self.assertEqual(factories[name].name, name)
