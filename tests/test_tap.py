"""
The service glue of C{twistd demux}: reloading and the limits' defaults.
"""

from __future__ import annotations

import resource

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from demux import ConfigError, DemuxFactory, configFromDict
from demux.tap import DemuxService


def config(reactor: object, name: str, **extra: object) -> object:
    data: dict[str, object] = {
        "listen": ["tcp:4443"],
        "routes": [{"name": name, "match": {"any": {}}, "backend": "tcp:127.0.0.1:1"}],
    }
    data.update(extra)
    return configFromDict(data, reactor)


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.first = config(self.reactor, "first")
        self.factory = DemuxFactory(self.first.table, self.reactor)  # type: ignore[attr-defined]

    def test_reload(self) -> None:
        second = config(self.reactor, "second")
        service = DemuxService(self.factory, self.first, lambda: second, self.reactor)  # type: ignore[arg-type]
        service.reload()
        self.assertIs(self.factory.table, second.table)  # type: ignore[attr-defined]

    def test_badReloadKeepsOld(self) -> None:
        def bad() -> object:
            raise ConfigError("broken", "demux.toml")

        service = DemuxService(self.factory, self.first, bad, self.reactor)  # type: ignore[arg-type]
        service.reload()
        self.assertIs(self.factory.table, self.first.table)  # type: ignore[attr-defined]
        self.flushLoggedErrors()

    def test_noConfigFile(self) -> None:
        service = DemuxService(self.factory, self.first, None, self.reactor)  # type: ignore[arg-type]
        service.reload()
        self.assertIs(self.factory.table, self.first.table)  # type: ignore[attr-defined]


class LimitKeysTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        reactor = MemoryReactorClock()
        c = config(reactor, "x")
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.assertEqual(c.table.maxConnections, max(1, (soft - 64 - 128) // 2))  # type: ignore[attr-defined]
        self.assertIsNone(c.table.maxConnectionsPerSource)  # type: ignore[attr-defined]
        self.assertEqual(c.shutdownGrace, 10)  # type: ignore[attr-defined]

    def test_keys(self) -> None:
        reactor = MemoryReactorClock()
        c = config(
            reactor, "x", max_connections=5, max_connections_per_source=2,
            max_undecided=3, shutdown_grace=0, idle_timeout=60,
        )
        self.assertEqual(c.table.maxConnections, 5)  # type: ignore[attr-defined]
        self.assertEqual(c.table.maxConnectionsPerSource, 2)  # type: ignore[attr-defined]
        self.assertEqual(c.table.maxUndecided, 3)  # type: ignore[attr-defined]
        self.assertEqual(c.shutdownGrace, 0)  # type: ignore[attr-defined]
        self.assertEqual(c.table.routes[0].target.idleTimeout, 60)  # type: ignore[attr-defined]

    def test_badKeys(self) -> None:
        reactor = MemoryReactorClock()
        for key, value in [
            ("max_connections", 0), ("max_undecided", "3"),
            ("max_connections_per_source", True), ("idle_timeout", 0),
        ]:
            e = self.assertRaises(ConfigError, config, reactor, "x", **{key: value})
            self.assertIn(key, str(e))


class LogConnectionsTests(SynchronousTestCase):
    def test_key(self) -> None:
        reactor = MemoryReactorClock()
        self.assertTrue(config(reactor, "x").table.logConnections)  # type: ignore[attr-defined]
        quiet = config(reactor, "x", log_connections=False)
        self.assertFalse(quiet.table.logConnections)  # type: ignore[attr-defined]
        e = self.assertRaises(ConfigError, config, reactor, "x", log_connections="no")
        self.assertIn("log_connections", str(e))

    def test_decisionsKey(self) -> None:
        reactor = MemoryReactorClock()
        self.assertFalse(config(reactor, "x").table.logDecisions)  # type: ignore[attr-defined]
        asap = config(reactor, "x", log_decisions=True)
        self.assertTrue(asap.table.logDecisions)  # type: ignore[attr-defined]
        oneLine = config(reactor, "x", log_decisions=False)
        self.assertFalse(oneLine.table.logDecisions)  # type: ignore[attr-defined]
        e = self.assertRaises(ConfigError, config, reactor, "x", log_decisions="no")
        self.assertIn("log_decisions", str(e))
