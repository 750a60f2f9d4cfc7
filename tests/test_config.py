"""
Loading configuration: what a user writes becomes one route table, and every
mistake is one sentence naming its place.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from demux import (
    BackendTarget,
    ConfigError,
    LocalTarget,
    UnknownMatcherError,
    configFromDict,
    loadConfig,
    routeFromArgument,
)
from demux.matchers import anyFactory

EXAMPLES = Path(__file__).parent.parent / "examples"


def minimal(**extra: object) -> dict[str, object]:
    data: dict[str, object] = {
        "listen": ["tcp:4443"],
        "routes": [{"name": "all", "match": {"any": {}}, "backend": "tcp:127.0.0.1:1"}],
    }
    data.update(extra)
    return data


class ConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def load(self, data: dict[str, object]) -> object:
        return configFromDict(data, self.reactor, "test.toml")

    def error(self, data: dict[str, object]) -> str:
        e = self.assertRaises(ConfigError, self.load, data)
        text = str(e)
        self.assertTrue(text.startswith("test.toml: "), text)
        self.assertNotIn("\n", text)
        return text

    def test_syncthingExample(self) -> None:
        """
        The shipped example loads: three routes in order, shared backend.
        """
        config = loadConfig(EXAMPLES / "syncthing.toml", self.reactor)
        self.assertEqual(config.listen, ("tcp:443",))
        self.assertEqual(
            [r.name for r in config.table.routes],
            ["relay-session", "relay-protocol", "discovery"],
        )
        self.assertEqual(config.table.inspectDelay, 5)
        target = config.table.routes[0].target
        assert isinstance(target, BackendTarget)
        self.assertEqual(target.description, "tcp:127.0.0.1:22067")

    def test_defaults(self) -> None:
        config = self.load(minimal())
        self.assertEqual(config.table.inspectDelay, 5.0)  # type: ignore[attr-defined]
        self.assertEqual(config.table.maxPeek, 16384)  # type: ignore[attr-defined]
        self.assertIsNone(config.table.onTimeout)  # type: ignore[attr-defined]

    def test_unknownTopKey(self) -> None:
        self.assertIn("unknown key 'lisen'", self.error(minimal(lisen=1)))

    def test_unknownRouteKey(self) -> None:
        data = minimal()
        data["routes"][0]["bakend"] = "x"  # type: ignore[index]
        text = self.error(data)
        self.assertIn("route 'all'", text)
        self.assertIn("unknown key 'bakend'", text)

    def test_unknownMatcher(self) -> None:
        data = minimal()
        data["routes"][0]["match"] = {"nosuch": {}}  # type: ignore[index]
        e = self.assertRaises(UnknownMatcherError, self.load, data)
        self.assertIn("route 'all': match.nosuch: unknown matcher 'nosuch'", str(e))

    def test_badMatcherOptions(self) -> None:
        data = minimal()
        data["routes"][0]["match"] = {"any": {"x": 1}}  # type: ignore[index]
        self.assertIn("match.any: takes no options", self.error(data))

    def test_badBackend(self) -> None:
        data = minimal()
        data["routes"][0]["backend"] = "tcpp:nowhere"  # type: ignore[index]
        text = self.error(data)
        self.assertIn("route 'all': backend: bad client endpoint string", text)

    def test_badListen(self) -> None:
        self.assertIn("bad server endpoint string", self.error(minimal(listen=["tcp:x"])))

    def test_noListen(self) -> None:
        data = minimal()
        del data["listen"]
        self.assertIn("nowhere to listen", self.error(data))

    def test_duplicateRouteName(self) -> None:
        data = minimal()
        data["routes"] = data["routes"] * 2  # type: ignore[operator]
        self.assertIn("route 'all': two routes have this name", self.error(data))

    def test_onTimeoutNamesNoRoute(self) -> None:
        self.assertIn(
            "on_timeout: names no route: 'nope'", self.error(minimal(on_timeout="nope"))
        )

    def test_badNumbers(self) -> None:
        self.assertIn("inspect_delay", self.error(minimal(inspect_delay=0)))
        self.assertIn("inspect_delay", self.error(minimal(inspect_delay="5")))
        self.assertIn("max_peek", self.error(minimal(max_peek=0)))
        self.assertIn("connect_timeout", self.error(minimal(connect_timeout=-1)))

    def test_noRoutes(self) -> None:
        self.assertIn("no routes", self.error(minimal(routes=[])))

    def test_backendXorLocal(self) -> None:
        data = minimal()
        data["routes"][0]["local"] = "demux._demo.web"  # type: ignore[index]
        self.assertIn("exactly one of backend or local", self.error(data))

    def test_local(self) -> None:
        data = minimal()
        del data["routes"][0]["backend"]  # type: ignore[attr-defined]
        data["routes"][0]["local"] = "demux._demo.web"  # type: ignore[index]
        config = self.load(data)
        self.assertIsInstance(config.table.routes[0].target, LocalTarget)  # type: ignore[attr-defined]

    def test_badLocal(self) -> None:
        data = minimal()
        del data["routes"][0]["backend"]  # type: ignore[attr-defined]
        data["routes"][0]["local"] = "demux.nosuchthing"  # type: ignore[index]
        self.assertIn("local: cannot import", self.error(data))

    def test_connectTimeout(self) -> None:
        data = minimal(connect_timeout=3)
        config = self.load(data)
        self.assertEqual(config.table.routes[0].target.connectTimeout, 3)  # type: ignore[attr-defined]
        data["routes"][0]["connect_timeout"] = 1.5  # type: ignore[index]
        config = self.load(data)
        self.assertEqual(config.table.routes[0].target.connectTimeout, 1.5)  # type: ignore[attr-defined]

    def test_fileErrors(self) -> None:
        e = self.assertRaises(ConfigError, loadConfig, "/nonexistent/x.toml", self.reactor)
        self.assertIn("cannot read it", str(e))
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        bad = Path(directory) / "bad.toml"
        bad.write_text("listen = [\n")
        e = self.assertRaises(ConfigError, loadConfig, bad, self.reactor)
        self.assertIn("is not valid TOML", str(e))

    def test_factoriesInjected(self) -> None:
        """
        The loader uses only the factories it is given.
        """
        data = minimal()
        configFromDict(data, self.reactor, factories={"any": anyFactory})
        self.assertRaises(
            UnknownMatcherError, configFromDict, data, self.reactor, factories={}
        )


class RouteArgumentTests(SynchronousTestCase):
    def test_simple(self) -> None:
        self.assertEqual(
            routeFromArgument("web http tcp:127.0.0.1:8080"),
            {"name": "web", "match": {"http": {}}, "backend": "tcp:127.0.0.1:8080"},
        )

    def test_dottedAndValues(self) -> None:
        self.assertEqual(
            routeFromArgument(
                'disc tls.sni=discovery.example.com tls.alpn=["h2","x"] tcp:h:1'
            ),
            {
                "name": "disc",
                "match": {"tls": {"sni": "discovery.example.com", "alpn": ["h2", "x"]}},
                "backend": "tcp:h:1",
            },
        )
        self.assertEqual(
            routeFromArgument("s prefix=9e79bc40 tcp:h:1")["match"], {"prefix": "9e79bc40"}
        )

    def test_tooShort(self) -> None:
        e = self.assertRaises(ConfigError, routeFromArgument, "web tcp:1")
        self.assertIn("NAME MATCHER", str(e))

    def test_sameAsToml(self) -> None:
        """
        A --route builds the same table TOML would.
        """
        toml = tomllib.loads(
            '[[routes]]\nname = "s"\nmatch.prefix = "9e79bc40"\nbackend = "tcp:h:1"\n'
        )
        self.assertEqual(routeFromArgument("s prefix=9e79bc40 tcp:h:1"), toml["routes"][0])
