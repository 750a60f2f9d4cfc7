"""
The metrics observer, the status view and the JSON-lines log, in memory: a
factory with a fake backend, a clock, and web requests rendered without a
network.
"""

from __future__ import annotations

import ipaddress
import json
from io import StringIO

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from demux import BackendTarget, ConfigError, DemuxFactory, Route, RouteTable
from demux._config import configFromDict
from demux._metrics import PrometheusObserver
from demux._observer import IConnectionObserver
from demux._routes import SourceFilter
from demux._status import StatusPage, metricsSite
from demux.jsonlog import eventAsJSON, jsonLinesObserver

from ._fakes import FakeEndpoint, startsWith


def sampleOf(observer: PrometheusObserver, name: str, **labels: str) -> float:
    value = observer.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class ObserverTests(SynchronousTestCase):
    """
    Each step counts where the documentation says it does.
    """

    def setUp(self) -> None:
        self.observer = PrometheusObserver()

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IConnectionObserver, self.observer))

    def test_ownRegistry(self) -> None:
        """
        Two observers count separately.
        """
        other = PrometheusObserver()
        self.observer.accepted()
        self.assertEqual(sampleOf(self.observer, "demux_connections_accepted_total"), 1)
        self.assertEqual(sampleOf(other, "demux_connections_accepted_total"), 0)

    def test_lifecycle(self) -> None:
        o = self.observer
        o.accepted()
        self.assertEqual(sampleOf(o, "demux_connections_undecided"), 1)
        o.routed("web", 0.002)
        self.assertEqual(sampleOf(o, "demux_connections_undecided"), 0)
        self.assertEqual(sampleOf(o, "demux_connections_active", route="web"), 1)
        o.backendFailed("web", "tcp:a:1")
        o.backendConnected("web", "tcp:b:1", 0.01)
        o.closed("web", 10, 200, 1.5)
        self.assertEqual(sampleOf(o, "demux_connections_active", route="web"), 0)
        self.assertEqual(sampleOf(o, "demux_connections_routed_total", route="web"), 1)
        self.assertEqual(sampleOf(o, "demux_bytes_up_total", route="web"), 10)
        self.assertEqual(sampleOf(o, "demux_bytes_down_total", route="web"), 200)
        self.assertEqual(sampleOf(o, "demux_decide_seconds_count"), 1)
        self.assertEqual(
            sampleOf(o, "demux_backend_connect_seconds_count", route="web"), 1
        )
        self.assertEqual(
            sampleOf(
                o, "demux_backend_failures_total", route="web", backend="tcp:a:1"
            ),
            1,
        )
        self.assertEqual(
            o.routeCounts(),
            {"web": {"routed": 1, "active": 0, "bytesUp": 10, "bytesDown": 200,
                     "backendFailures": 1}},
        )

    def test_refusals(self) -> None:
        """
        A refusal for a limit comes before any accept; the others end a
        wait, so only they leave the undecided gauge.
        """
        o = self.observer
        o.refused("limit")
        o.accepted()
        o.refused("no match")
        self.assertEqual(sampleOf(o, "demux_connections_undecided"), 0)
        self.assertEqual(o.refusedCounts(), {"limit": 1, "no match": 1})


def render(site: object, path: bytes) -> DummyRequest:
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    resource = getChildForRequest(site.resource, request)  # type: ignore[attr-defined]
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return request


class StatusTests(SynchronousTestCase):
    """
    The status view shows the factory's table and open connections with the
    observer's counts.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(1000)
        self.endpoint = FakeEndpoint()
        self.observer = PrometheusObserver()
        table = RouteTable(
            [
                Route("x", startsWith(b"X"), BackendTarget(self.endpoint, "tcp:x:1")),
                Route(
                    "y",
                    startsWith(b"Y"),
                    BackendTarget(self.endpoint, "tcp:y:1"),
                    SourceFilter(deny=(ipaddress.ip_network("10.9.0.0/16"),)),
                ),
            ]
        )
        self.factory = DemuxFactory(table, self.clock, self.observer)
        self.site = metricsSite(
            self.observer, self.factory, self.clock, lambda: {"x": {"prefix": "58"}}
        )

    def open(self, data: bytes, port: int) -> object:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", port))
        assert protocol is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", port))
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        return protocol

    def test_snapshot(self) -> None:
        self.open(b"X1", 40001)
        self.endpoint.attempts[0].succeed()
        self.clock.advance(2)
        self.open(b"", 40002)
        snapshot = StatusPage(
            self.factory, self.observer, self.clock, lambda: {"x": {"prefix": "58"}}
        ).snapshot()
        x, y = snapshot["routes"]
        self.assertEqual(x["match"], {"prefix": "58"})
        self.assertEqual(x["backends"], ["tcp:x:1"])
        self.assertEqual(x["counts"]["routed"], 1)
        self.assertEqual(x["counts"]["active"], 1)
        # Without a match table, a route is shown by its matcher's repr.
        self.assertIn("ScriptedMatcher", y["match"])
        self.assertEqual(y["deny"], ["10.9.0.0/16"])
        self.assertEqual(
            snapshot["activeConnections"],
            [
                {"peer": "10.0.0.1:40001", "route": "x", "decided": True,
                 "ageSeconds": 2.0},
                {"peer": "10.0.0.1:40002", "route": None, "decided": False,
                 "ageSeconds": 0.0},
            ],
        )
        self.assertEqual(snapshot["undecided"], 1)

    def test_pages(self) -> None:
        self.open(b"X1", 40001)
        self.open(b"Z", 40003)
        metrics = b"".join(render(self.site, b"/metrics").written).decode()
        self.assertIn('demux_connections_routed_total{route="x"} 1.0', metrics)
        self.assertIn('demux_connections_refused_total{reason="no match"} 1.0', metrics)
        status = json.loads(b"".join(render(self.site, b"/status.json").written))
        self.assertEqual([r["name"] for r in status["routes"]], ["x", "y"])
        page = b"".join(render(self.site, b"/status").written).decode()
        self.assertIn("<td>10.0.0.1:40001</td><td>x</td>", page)
        self.assertIn("no match: 1", page)

    def test_escaped(self) -> None:
        """
        The HTML page escapes what a configuration or a client could put in
        it.
        """
        self.site = metricsSite(
            self.observer, self.factory, self.clock, lambda: {"x": "<script>"}
        )
        page = b"".join(render(self.site, b"/status").written).decode()
        self.assertNotIn("<script>", page)
        self.assertIn("&lt;script&gt;", page)


class ConfigTests(SynchronousTestCase):
    def config(self, **top: object) -> dict[str, object]:
        return {
            "listen": "tcp:0",
            "routes": [{"name": "a", "match": {"any": {}}, "backend": "tcp:h:1"}],
            **top,
        }

    def test_metricsKey(self) -> None:
        config = configFromDict(
            self.config(metrics="tcp:9100:interface=127.0.0.1"), MemoryReactorClock()
        )
        self.assertEqual(config.metrics, "tcp:9100:interface=127.0.0.1")
        self.assertEqual(config.matchTables, {"a": {"any": {}}})
        self.assertIsNone(configFromDict(self.config(), MemoryReactorClock()).metrics)

    def test_badMetrics(self) -> None:
        for value, text in [(9100, "must be a Twisted server endpoint string"),
                            ("nonsense:1", "bad server endpoint string")]:
            with self.assertRaises(ConfigError) as e:
                configFromDict(self.config(metrics=value), MemoryReactorClock(), "f.toml")
            self.assertIn(text, str(e.exception))
            self.assertIn("f.toml: metrics", str(e.exception))


class JSONLogTests(SynchronousTestCase):
    """
    One line per event, the common fields always, demux's fields for
    demux's events only.
    """

    def setUp(self) -> None:
        self.stream = StringIO()
        self.observer = jsonLinesObserver(self.stream)

    def logger(self, namespace: str) -> Logger:
        return Logger(namespace=namespace, observer=self.observer)

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def test_demuxEvent(self) -> None:
        self.logger("demux").info(
            "{peer} route={route} closed: {bytesUp} bytes up",
            peer="192.0.2.1:5",
            route="web",
            bytesUp=10,
            backendError=None,
            address=IPv4Address("TCP", "192.0.2.1", 5),
        )
        [line] = self.lines()
        self.assertEqual(line["level"], "info")
        self.assertEqual(line["namespace"], "demux")
        self.assertEqual(line["text"], "192.0.2.1:5 route=web closed: 10 bytes up")
        self.assertEqual(
            (line["peer"], line["route"], line["bytesUp"], line["backendError"]),
            ("192.0.2.1:5", "web", 10, None),
        )
        # What JSON cannot hold is written as text.
        self.assertIn("192.0.2.1", str(line["address"]))

    def test_otherEvent(self) -> None:
        """
        Other namespaces keep their fields to themselves: they may hold
        anything.
        """
        self.logger("elsewhere").warn("hello {who}", who="you", secret="x")
        [line] = self.lines()
        self.assertEqual(set(line), {"time", "level", "namespace", "text"})
        self.assertEqual(line["text"], "hello you")

    def test_failure(self) -> None:
        try:
            raise ZeroDivisionError("nothing")
        except ZeroDivisionError:
            self.logger("demux").failure("oops", Failure())
        [line] = self.lines()
        self.assertEqual(line["level"], "critical")
        self.assertIn("ZeroDivisionError", str(line["failure"]))

    def test_oneLine(self) -> None:
        self.assertNotIn(
            "\n",
            eventAsJSON(
                {"log_format": "a\nb", "log_level": LogLevel.info,
                 "log_namespace": "demux", "log_time": 0.0, "x": float("nan")}
            ),
        )
