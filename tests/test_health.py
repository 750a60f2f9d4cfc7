"""
Active health checks: the answers each check accepts, the check each route's
matchers imply, rise and fall with a hand-turned clock, how balancing and
refusal follow the checks, reloads, and the configuration keys; then real
programs (sshd, strelaysrv, openssl s_server, Python's HTTP server) behind a
real demux, each stopped and started again while demux watches.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import define, field
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from demux import BackendTarget, DemuxFactory, Route, RouteTable
from demux._config import configFromDict
from demux._errors import ConfigError
from demux._health import (
    AnyCertificateTLS,
    BackendMonitor,
    HealthCheck,
    HealthService,
    HTTPRequest,
    IHealthCheck,
    IHealthObserver,
    ProbeCheck,
    checkForMatch,
    healthCheckFromRoute,
    httpStatus,
    relayPing,
    relayPong,
    sshBanner,
)
from demux._metrics import PrometheusObserver
from demux._status import StatusPage
from demux._targets import Backend
from demux.testing import clientHello

from ._fakes import FakeEndpoint, startsWith
from ._process import freePort, require, runDemux, waitForPort
from ._servers import makeCertificate

PONG = bytes.fromhex("9e79bc40") + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x00"


class JudgeTests(SynchronousTestCase):
    """
    The pure parts: what counts as a good answer.
    """

    def test_ssh(self) -> None:
        self.assertIsNone(sshBanner(b""))
        self.assertIsNone(sshBanner(b"SS"))
        self.assertIsNone(sshBanner(b"SSH-2.0-Open"))
        self.assertEqual(sshBanner(b"SSH-2.0-OpenSSH_9.2\r\n"), (True, "SSH-2.0-OpenSSH_9.2"))
        ok, why = sshBanner(b"HTTP/1.1 400 Bad Request\r\n")  # type: ignore[misc]
        self.assertFalse(ok)
        self.assertIn("unexpected answer", why)

    def test_http(self) -> None:
        self.assertIsNone(httpStatus(b"HTTP/1.1 200"))
        self.assertEqual(httpStatus(b"HTTP/1.1 200 OK\r\n"), (True, "HTTP/1.1 200 OK"))
        self.assertEqual(httpStatus(b"HTTP/1.0 404 Not Found\n"), (True, "HTTP/1.0 404 Not Found"))
        self.assertEqual(
            httpStatus(b"HTTP/1.1 503 Service Unavailable\r\n"),
            (False, "HTTP/1.1 503 Service Unavailable"),
        )
        self.assertFalse(httpStatus(b"SSH-2.0-x\r\n")[0])  # type: ignore[index]
        self.assertFalse(httpStatus(b"SSH-")[0])  # type: ignore[index]
        self.assertFalse(httpStatus(b"HTTP/1.1 2x0 OK\r\n")[0])  # type: ignore[index]

    def test_relay(self) -> None:
        self.assertEqual(relayPing(), bytes.fromhex("9e79bc40") + bytes(8))
        self.assertIsNone(relayPong(PONG[:11]))
        self.assertEqual(relayPong(PONG), (True, "relay answered Pong"))
        response = bytes.fromhex("9e79bc40") + b"\x00\x00\x00\x03" + b"\x00\x00\x00\x10"
        self.assertEqual(
            relayPong(response), (False, "relay answered message type 3, not Pong")
        )
        self.assertFalse(relayPong(bytes(12))[0])  # type: ignore[index]

    @given(st.binary(max_size=300))
    def test_totalOnAnyBytes(self, data: bytes) -> None:
        """
        Every judge answers any bytes with "more" or a verdict, never an
        exception; and once it has a verdict, more bytes do not turn it.
        """
        for judge in (sshBanner, httpStatus, relayPong):
            verdict = judge(data)
            self.assertTrue(verdict is None or isinstance(verdict[0], bool))
            if verdict is not None:
                later = judge(data + b"\r\nmore")
                assert later is not None
                self.assertEqual(later[0], verdict[0])

    @given(st.binary(max_size=100))
    def test_goodAnswerThenAnything(self, tail: bytes) -> None:
        self.assertTrue(relayPong(PONG + tail)[0])  # type: ignore[index]
        self.assertTrue(httpStatus(b"HTTP/1.1 204 No Content\r\n" + tail)[0])  # type: ignore[index]
        self.assertTrue(sshBanner(b"SSH-2.0-x\r\n" + tail)[0])  # type: ignore[index]


class DerivedCheckTests(SynchronousTestCase):
    """
    The check a route's match table implies.
    """

    def test_tls(self) -> None:
        check = checkForMatch(
            {"tls": {"sni": ["a.example.com", "b.example.com"], "alpn": ["h2", "http/1.1"]}}
        )
        assert isinstance(check, ProbeCheck)
        self.assertEqual(check.tls, AnyCertificateTLS("a.example.com", "h2"))
        self.assertIsNone(check.judge)
        self.assertEqual(check.description, "TLS handshake (sni=a.example.com, alpn=h2)")

    def test_tlsWildcard(self) -> None:
        """
        A wildcard names no host to ask for: no SNI.
        """
        check = checkForMatch({"tls": {"sni": ["*.example.com", "a.example.com"]}})
        assert isinstance(check, ProbeCheck)
        self.assertEqual(check.tls, AnyCertificateTLS(None, None))

    def test_relay(self) -> None:
        for match in (
            {"relay-protocol": {}},
            {"tls": {"alpn": ["bep-relay"]}},
            {"tls": {"alpn": "bep-relay", "sni": ["relay.example.com"]}},
        ):
            check = checkForMatch(match)
            assert isinstance(check, ProbeCheck)
            self.assertEqual(check.description, "relay protocol Ping")
            assert check.tls is not None
            self.assertEqual(check.tls.alpn, "bep-relay")  # type: ignore[attr-defined]
            self.assertEqual(check.request, relayPing())
            self.assertIs(check.judge, relayPong)

    def test_bep(self) -> None:
        check = checkForMatch({"bep": {}})
        assert isinstance(check, ProbeCheck)
        self.assertEqual(check.tls, AnyCertificateTLS(None, "bep/1.0"))

    def test_ssh(self) -> None:
        check = checkForMatch({"ssh": {}})
        assert isinstance(check, ProbeCheck)
        self.assertIsNone(check.tls)
        self.assertIs(check.judge, sshBanner)

    def test_http(self) -> None:
        check = checkForMatch({"http": {"host": ["www.example.com"]}}, "/healthz")
        assert isinstance(check, ProbeCheck)
        self.assertEqual(check.request, HTTPRequest("/healthz", "www.example.com"))
        self.assertIs(check.judge, httpStatus)
        backend = Backend(FakeEndpoint(), "tcp:10.0.0.1:8080")
        self.assertEqual(
            HTTPRequest("/", None)(backend),
            b"GET / HTTP/1.1\r\nHost: 10.0.0.1\r\nUser-Agent: demux-health-check\r\n"
            b"Connection: close\r\n\r\n",
        )

    def test_other(self) -> None:
        for match in ({"any": {}}, {"prefix": "9e79bc40"}, {"postgres": {}}):
            check = checkForMatch(match)
            assert isinstance(check, ProbeCheck)
            self.assertEqual(check.description, "TCP connect")
            self.assertIsNone(check.tls)
            self.assertIsNone(check.judge)

    def test_interface(self) -> None:
        verifyObject(IHealthCheck, checkForMatch({"ssh": {}}))
        verifyObject(IHealthObserver, PrometheusObserver())


class ProbeTests(SynchronousTestCase):
    """
    One check's connection, over a L{StringTransport}.
    """

    def setUp(self) -> None:
        self.endpoint = FakeEndpoint()
        self.probe: Any = None
        self.backend = Backend(self.endpoint, "tcp:127.0.0.1:22")
        self.results: list[object] = []

    def start(self, check: IHealthCheck) -> StringTransport:
        d = check.check(self.backend)
        d.addBoth(self.results.append)
        [attempt] = self.endpoint.attempts
        self.probe = attempt.succeed()
        assert attempt.transport is not None
        return attempt.transport

    def test_tcp(self) -> None:
        transport = self.start(checkForMatch({"any": {}}))
        self.assertEqual(self.results, [True])
        self.assertTrue(transport.disconnecting)

    def test_banner(self) -> None:
        check = checkForMatch({"ssh": {}})
        transport = self.start(check)
        self.assertEqual(transport.value(), b"")
        self.probe.dataReceived(b"SSH-2.0-")
        self.assertEqual(self.results, [])
        self.probe.dataReceived(b"x\r\n")
        self.assertEqual(self.results, [True])
        self.assertTrue(transport.disconnecting)

    def test_wrongBanner(self) -> None:
        self.start(checkForMatch({"ssh": {}}))
        self.probe.dataReceived(b"220 smtp.example.com ESMTP\r\n")
        [failure] = self.results
        assert isinstance(failure, Failure)
        self.assertIn("unexpected answer '220 smtp", failure.getErrorMessage())

    def test_closedBeforeAnswer(self) -> None:
        self.start(checkForMatch({"ssh": {}}))
        self.probe.connectionLost(Failure(ConnectionRefusedError()))
        [failure] = self.results
        assert isinstance(failure, Failure)
        self.assertIn("refused", failure.getErrorMessage())

    def test_http(self) -> None:
        check = checkForMatch({"http": {}}, "/ready")
        transport = self.start(check)
        self.assertTrue(transport.value().startswith(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
        self.probe.dataReceived(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        [failure] = self.results
        assert isinstance(failure, Failure)
        self.assertEqual(failure.getErrorMessage(), "HTTP/1.1 503 Service Unavailable")

    def test_sendProxy(self) -> None:
        """
        A backend that expects a PROXY header gets a LOCAL one first.
        """
        check = checkForMatch({"http": {}}, sendProxy=1)
        transport = self.start(check)
        self.assertTrue(transport.value().startswith(b"PROXY UNKNOWN\r\nGET / "))

    def test_cancel(self) -> None:
        """
        Cancelling a check (its timeout) closes its connection.
        """
        d = checkForMatch({"ssh": {}}).check(self.backend)
        d.addErrback(lambda f: None)
        [attempt] = self.endpoint.attempts
        attempt.succeed()
        assert attempt.transport is not None
        d.cancel()
        self.assertTrue(attempt.transport.disconnecting)

    def test_cancelWhileConnecting(self) -> None:
        d = checkForMatch({"ssh": {}}).check(self.backend)
        d.addErrback(lambda f: None)
        d.cancel()
        self.assertEqual(self.endpoint.cancelled, 1)


@implementer(IHealthCheck)
@define
class ScriptedCheck:
    """
    A health check whose every answer the test gives by hand.
    """

    description: str = "scripted"
    pending: list[Deferred[bool]] = field(factory=list)
    asked: list[str] = field(factory=list)

    def check(self, backend: Backend) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.asked.append(backend.description)
        self.pending.append(d)
        return d

    def answer(self, healthy: bool | Exception) -> None:
        d = self.pending.pop(0)
        if isinstance(healthy, Exception):
            d.errback(healthy)
        else:
            d.callback(healthy)


@implementer(IHealthObserver)
@define
class RecordingHealthObserver:
    seen: list[tuple[str, str, bool | None]] = field(factory=list)

    def backendHealth(self, route: str, backend: str, up: bool | None) -> None:
        self.seen.append((route, backend, up))


class LogCapture:
    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, text: str) -> list[str]:
        return [
            line for e in self.events if text in (line := formatEvent(e) or "")
        ]


def _target(check: ScriptedCheck, *descriptions: str, **kw: Any) -> BackendTarget:
    settings = HealthCheck(check, interval=1.0, timeout=0.5, rise=2, fall=3)
    first, *rest = descriptions
    return BackendTarget(
        FakeEndpoint(),
        first,
        alternatives=tuple(Backend(FakeEndpoint(), d) for d in rest),
        check=settings,
        **kw,
    )


class MonitorTests(SynchronousTestCase):
    """
    Rise, fall, timeouts and their log lines, with a hand-turned clock.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.check = ScriptedCheck()
        self.target = _target(self.check, "tcp:127.0.0.1:1")
        self.observer = RecordingHealthObserver()
        [backend] = self.target.backends
        self.monitor = BackendMonitor(
            "web", backend, self.target, self.target.check, self.clock, self.observer
        )
        self.log = LogCapture(self)

    def fail(self, n: int, why: str = "refused") -> None:
        for _ in range(n):
            self.check.answer(RuntimeError(why))
            self.clock.advance(1.0)

    def test_startsUpAndChecksAtOnce(self) -> None:
        self.monitor.start()
        self.assertEqual(len(self.check.pending), 1)
        self.assertTrue(self.monitor.up)
        self.assertEqual(self.observer.seen, [("web", "tcp:127.0.0.1:1", True)])

    def test_fall(self) -> None:
        self.monitor.start()
        self.fail(2)
        self.assertTrue(self.monitor.up)
        self.assertEqual(self.log.lines("is down"), [])
        self.fail(1, "connection refused")
        self.assertFalse(self.monitor.up)
        self.assertEqual(self.target.checkedState(self.target.backends[0]), (False, "connection refused"))
        self.assertEqual(self.target.pick(0.0), [])
        self.assertEqual(
            self.log.lines("is down"),
            ["backend tcp:127.0.0.1:1 of route web is down: connection refused"],
        )
        self.assertEqual(self.observer.seen[-1], ("web", "tcp:127.0.0.1:1", False))
        # Staying down is not news.
        self.fail(3)
        self.assertEqual(len(self.log.lines("is down")), 1)

    def test_goodCheckResetsFall(self) -> None:
        self.monitor.start()
        self.fail(2)
        self.check.answer(True)
        self.clock.advance(1.0)
        self.fail(2)
        self.assertTrue(self.monitor.up)

    def test_rise(self) -> None:
        self.monitor.start()
        self.fail(3)
        self.check.answer(True)
        self.clock.advance(1.0)
        self.assertFalse(self.monitor.up)
        self.check.answer(True)
        self.assertTrue(self.monitor.up)
        self.assertEqual(self.log.lines("is up"), ["backend tcp:127.0.0.1:1 of route web is up"])
        self.assertEqual(self.target.pick(0.0), list(self.target.backends))

    def test_timeout(self) -> None:
        """
        A check that never answers fails after its timeout, and the next
        starts an interval later: checks never overlap.
        """
        self.monitor.start()
        for _ in range(3):
            self.assertEqual(len(self.check.pending), 1)
            self.clock.advance(0.5)
            self.assertEqual(self.check.pending[0].called, True)
            self.check.pending.pop(0)
            self.clock.advance(1.0)
        self.assertFalse(self.monitor.up)
        self.assertEqual(self.monitor.why, "no answer within 0.5s")

    def test_falseIsFailure(self) -> None:
        self.monitor.start()
        for _ in range(3):
            self.check.answer(False)
            self.clock.advance(1.0)
        self.assertFalse(self.monitor.up)
        self.assertEqual(self.monitor.why, "check failed")

    def test_stop(self) -> None:
        self.monitor.start()
        d = self.check.pending[0]
        self.monitor.stop()
        self.assertTrue(d.called)
        self.clock.advance(10)
        self.assertEqual(len(self.check.asked), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BalancingTests(SynchronousTestCase):
    """
    How the checks' word changes which backends connections go to.
    """

    def setUp(self) -> None:
        self.check = ScriptedCheck()

    def test_skippedByEveryMode(self) -> None:
        for balance in ("first", "roundrobin"):
            target = _target(self.check, "tcp:a:1", "tcp:b:1", "tcp:c:1", balance=balance)
            a, b, c = target.backends
            target.setChecked(b, False, "refused")
            for _ in range(4):
                self.assertNotIn(b, target.pick(0.0))

    def test_passiveStillOrders(self) -> None:
        """
        Among backends up by check, one that failed lately goes last; when
        the check finds a down one up again, its passive failure is
        forgiven.
        """
        target = _target(self.check, "tcp:a:1", "tcp:b:1")
        a, b = target.backends
        target.markDown(a, 0.0)
        self.assertEqual(target.pick(1.0), [b, a])
        target.setChecked(a, False, "refused")
        self.assertEqual(target.pick(1.0), [b])
        target.setChecked(a, True, "check passed")
        self.assertEqual(target.pick(1.0), [a, b])

    def test_allDownRefused(self) -> None:
        """
        With every backend down by check, a connection that takes the route
        is closed at once, with the reason logged, and nothing is dialled.
        """
        log = LogCapture(self)
        target = _target(self.check, "tcp:a:1", "tcp:b:1")
        a, b = target.backends
        target.setChecked(a, False, "connection refused")
        target.setChecked(b, False, "no answer within 0.5s")
        table = RouteTable([Route("ssh", startsWith(b"SSH-"), target)])
        clock = MemoryReactorClock()
        protocol = DemuxFactory(table, clock).buildProtocol(None)
        assert protocol is not None
        client = StringTransport()
        protocol.makeConnection(client)
        protocol.dataReceived(b"SSH-2.0-x\r\n")
        self.assertTrue(client.disconnecting)
        self.assertEqual(a.endpoint.attempts, [])  # type: ignore[attr-defined]
        self.assertEqual(b.endpoint.attempts, [])  # type: ignore[attr-defined]
        [line] = log.lines("refused:")
        self.assertIn(
            "route=ssh refused: every backend is down by health check "
            "(tcp:a:1: connection refused; tcp:b:1: no answer within 0.5s)",
            line,
        )

    def test_allDownIsOneRefusal(self) -> None:
        """
        With every backend down by check, the connection is one refusal,
        counted as refused ("backends down") and not as routed, with no
        routed line before the refusal.
        """
        log = LogCapture(self)
        target = _target(self.check, "tcp:a:1")
        [a] = target.backends
        target.setChecked(a, False, "connection refused")
        table = RouteTable([Route("ssh", startsWith(b"SSH-"), target)])
        observer = PrometheusObserver()
        protocol = DemuxFactory(table, MemoryReactorClock(), observer).buildProtocol(
            None
        )
        assert protocol is not None
        client = StringTransport()
        protocol.makeConnection(client)
        protocol.dataReceived(b"SSH-2.0-x\r\n")
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertTrue(client.disconnecting)
        self.assertEqual(observer.refusedCounts(), {"backends down": 1})
        self.assertEqual(observer.routeCounts(), {})
        self.assertEqual(log.lines(" -> "), [])
        self.assertEqual(len(log.lines("route=ssh refused: every backend is down")), 1)

    def test_withoutChecksAllAreTried(self) -> None:
        """
        Passive checks alone never refuse: every backend is tried, the
        failed ones last.
        """
        target = BackendTarget(FakeEndpoint(), "tcp:a:1")
        [a] = target.backends
        target.markDown(a, 0.0)
        self.assertEqual(target.pick(1.0), [a])


class ServiceTests(SynchronousTestCase):
    """
    The service that runs the checks, and reloads.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.check = ScriptedCheck()
        self.observer = RecordingHealthObserver()

    def table(self, **routes: BackendTarget) -> RouteTable:
        return RouteTable([Route(name, startsWith(b"x"), t) for name, t in routes.items()])

    def test_onlyCheckedRoutes(self) -> None:
        table = self.table(
            web=_target(self.check, "tcp:a:1", "tcp:b:1"),
            plain=BackendTarget(FakeEndpoint(), "tcp:c:1"),
        )
        service = HealthService(table, self.clock, self.observer)
        self.assertEqual(self.check.asked, [])
        service.startService()
        self.assertEqual(sorted(self.check.asked), ["tcp:a:1", "tcp:b:1"])
        service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reloadKeepsState(self) -> None:
        """
        A reload keeps the state of a backend still in the same route, hands
        it to the route's new target, stops checking backends that are gone
        and starts checking new ones.
        """
        old = _target(self.check, "tcp:a:1", "tcp:b:1")
        service = HealthService(self.table(web=old), self.clock, self.observer)
        service.startService()
        for _ in range(3):
            for _ in range(2):
                self.check.answer(RuntimeError("refused"))
            self.clock.advance(1.0)
        self.assertEqual(old.pick(0.0), [])
        self.check.asked.clear()
        new = _target(self.check, "tcp:a:1", "tcp:c:1")
        service.setTable(self.table(web=new))
        a, c = new.backends
        self.assertEqual(new.checkedState(a), (False, "refused"))
        self.assertEqual(new.pick(0.0), [c])
        self.assertEqual(self.check.asked, ["tcp:c:1"])
        self.assertIn(("web", "tcp:b:1", None), self.observer.seen)
        self.assertEqual(set(service.monitors), {("web", "tcp:a:1"), ("web", "tcp:c:1")})

    def test_renamedRouteStartsAfresh(self) -> None:
        service = HealthService(
            self.table(web=_target(self.check, "tcp:a:1")), self.clock, self.observer
        )
        service.startService()
        service.setTable(self.table(www=_target(self.check, "tcp:a:1")))
        self.assertEqual(set(service.monitors), {("www", "tcp:a:1")})
        self.assertIn(("web", "tcp:a:1", None), self.observer.seen)


class ReloadTests(SynchronousTestCase):
    """
    C{DemuxService.reload} (SIGHUP) hands the checks' state to the reloaded
    routes before they take connections.
    """

    def config(self, *names: str) -> Any:
        data = {
            "listen": ["tcp:4443"],
            "routes": [
                {
                    "name": name,
                    "match": {"ssh": {}},
                    "backend": "tcp:127.0.0.1:1",
                    "check": True,
                    "fall": 1,
                }
                for name in names
            ],
        }
        return configFromDict(data, self.reactor)

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def test_reloadKeepsDown(self) -> None:
        from demux.tap import DemuxService

        first = self.config("ssh")
        factory = DemuxFactory(first.table, self.reactor)
        service = DemuxService(factory, first, lambda: self.config("ssh", "other"), self.reactor)
        service.health.startService()
        self.addCleanup(service.health.stopService)
        # The check dials the backend; it never answers, so it times out.
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(2.0)
        [route] = factory.table.routes
        self.assertEqual(route.target.pick(0.0), [])
        service.reload()
        ssh, other = factory.table.routes
        self.assertIsNot(ssh, route)
        self.assertEqual(ssh.target.pick(0.0), [])
        [backend] = other.target.backends
        self.assertEqual(other.target.checkedState(backend), (True, "not checked yet"))
        self.flushLoggedErrors()


class MetricsTests(SynchronousTestCase):
    def test_gaugeAndStatus(self) -> None:
        observer = PrometheusObserver()
        check = ScriptedCheck()
        target = _target(check, "tcp:a:1", "tcp:b:1")
        table = RouteTable([Route("web", startsWith(b"x"), target)])
        clock = MemoryReactorClock()
        service = HealthService(table, clock, observer)
        service.startService()
        for _ in range(3):
            check.answer(True)
            check.answer(RuntimeError("refused"))
            clock.advance(1.0)
        registry = observer.registry
        self.assertEqual(
            registry.get_sample_value("demux_backend_up", {"route": "web", "backend": "tcp:a:1"}), 1
        )
        self.assertEqual(
            registry.get_sample_value("demux_backend_up", {"route": "web", "backend": "tcp:b:1"}), 0
        )
        page = StatusPage(DemuxFactory(table, clock), observer, clock)
        [route] = page.snapshot()["routes"]
        self.assertEqual(
            route["backendHealth"],
            {
                "tcp:a:1": {"up": True, "reason": "check passed"},
                "tcp:b:1": {"up": False, "reason": "refused"},
            },
        )
        service.setTable(RouteTable([Route("web", startsWith(b"x"), BackendTarget(FakeEndpoint(), "tcp:a:1"))]))
        self.assertIsNone(
            registry.get_sample_value("demux_backend_up", {"route": "web", "backend": "tcp:a:1"})
        )


class ConfigTests(SynchronousTestCase):
    def load(self, **route: object) -> BackendTarget:
        data = {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "routes": [{"name": "r", "backend": "tcp:127.0.0.1:1", **route}],
        }
        config = configFromDict(data, MemoryReactorClock(), "demux.toml")
        target = config.table.routes[0].target
        assert isinstance(target, BackendTarget)
        return target

    def error(self, **route: object) -> str:
        with self.assertRaises(ConfigError) as e:
            self.load(**route)
        return str(e.exception)

    def test_off(self) -> None:
        self.assertIsNone(self.load(match={"ssh": {}}).check)
        self.assertIsNone(self.load(match={"ssh": {}}, check=False).check)

    def test_defaults(self) -> None:
        check = self.load(match={"ssh": {}}, check=True).check
        self.assertEqual(check, HealthCheck(checkForMatch({"ssh": {}}), 5.0, 2.0, 2, 3))

    def test_keys(self) -> None:
        check = self.load(
            match={"http": {}},
            check=True,
            check_interval=0.25,
            check_timeout=1,
            rise=1,
            fall=4,
            check_path="/healthz",
        ).check
        self.assertEqual(
            check, HealthCheck(checkForMatch({"http": {}}, "/healthz"), 0.25, 1.0, 1, 4)
        )

    def test_sameCheckAfterReload(self) -> None:
        """
        Loading the same route twice gives equal checks, so that a reload
        leaves their rhythm alone.
        """
        for match in ({"tls": {"sni": ["a.example"]}}, {"http": {}}, {"ssh": {}}):
            self.assertEqual(
                self.load(match=match, check=True).check,
                self.load(match=match, check=True).check,
            )

    def test_errors(self) -> None:
        self.assertEqual(
            self.error(match={"ssh": {}}, check="yes"),
            "demux.toml: route 'r': backend: check: must be true or false, not 'yes'",
        )
        self.assertEqual(
            self.error(match={"ssh": {}}, check_interval=1),
            "demux.toml: route 'r': backend: check_interval needs check = true",
        )
        self.assertIn(
            "route 'r': backend: check_interval: must be a number of seconds more than 0",
            self.error(match={"ssh": {}}, check=True, check_interval=0),
        )
        self.assertIn(
            "route 'r': backend: fall: must be a whole number of at least 1, not 0.5",
            self.error(match={"ssh": {}}, check=True, fall=0.5),
        )
        self.assertIn(
            "check_path needs an HTTP route (match.http)",
            self.error(match={"ssh": {}}, check=True, check_path="/"),
        )
        self.assertIn(
            "check_path: must be a path such as \"/healthz\"",
            self.error(match={"http": {}}, check=True, check_path="healthz"),
        )

    def test_localHasNoChecks(self) -> None:
        data = {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "routes": [{"name": "r", "match": {"any": {}}, "local": "demux._demo.factory", "check": True}],
        }
        with self.assertRaises(ConfigError) as e:
            configFromDict(data, MemoryReactorClock(), "demux.toml")
        self.assertIn("check needs a backend", str(e.exception))

    def test_direct(self) -> None:
        self.assertIsNone(healthCheckFromRoute({"match": {"ssh": {}}}, "route 'x'"))


# Real programs.  Checks run every 0.2 s and a backend goes down after two
# failures and up after two good checks, so each change shows within about
# a second; every wait below is bounded.

INTERVALS = "check_interval = 0.2\ncheck_timeout = 2\nrise = 2\nfall = 2\n"
WAIT = 15.0


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read()  # type: ignore[no-any-return]


def _health(metricsPort: int, route: str, backend: str) -> dict[str, Any] | None:
    status = json.loads(_get(metricsPort, "/status.json"))
    for r in status["routes"]:
        if r["name"] == route:
            return r["backendHealth"].get(backend)  # type: ignore[no-any-return]
    return None


def _waitFor(what: str, done: Callable[[], bool], describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {WAIT:g}s\n{describe()}")
        time.sleep(0.1)


def _refused(port: int, first: bytes) -> bool:
    """
    Whether demux closes a connection that sends C{first} without a byte
    of answer.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(first)
        try:
            return s.recv(1024) == b""
        except ConnectionResetError:
            return True


def _backendDownAndUp(
    match: str,
    backendPort: int,
    start: Callable[[], subprocess.Popen[bytes]],
    first: bytes,
) -> None:
    """
    Run demux in front of the program C{start} runs on C{backendPort}, with
    an active check on the route: see the backend checked up, stop the
    program and see it go down (log, status, metric) and connections to the
    route refused with the reason logged, start it again and see it come
    back up.
    """
    metricsPort = freePort()
    backend = f"tcp:127.0.0.1:{backendPort}"
    config = (
        'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'metrics = "tcp:{metricsPort}:interface=127.0.0.1"\n'
        f'[[routes]]\nname = "r"\n{match}\nbackend = "{backend}"\n'
        f"check = true\n{INTERVALS}"
    )
    server = start()
    try:
        with runDemux(config) as demux:
            waitForPort(metricsPort)

            def state() -> dict[str, Any] | None:
                return _health(metricsPort, "r", backend)

            def describe() -> str:
                return f"health: {state()}\nlog:\n{demux.log()}"

            _waitFor(
                "a first good check",
                lambda: state() == {"up": True, "reason": "check passed"},
                describe,
            )
            gauge = f'demux_backend_up{{backend="{backend}",route="r"}}'
            metrics = _get(metricsPort, "/metrics").decode()
            assert f"{gauge} 1.0" in metrics, metrics

            server.send_signal(signal.SIGTERM)
            server.wait(10)
            _waitFor("the backend going down", lambda: not state()["up"], describe)  # type: ignore[index]
            demux.waitForLog(f"backend {backend} of route r is down: ")
            assert f"{gauge} 0.0" in _get(metricsPort, "/metrics").decode()
            assert "(down: " in _get(metricsPort, "/status").decode()
            assert _refused(demux.port, first)
            demux.waitForLog(
                f"route=r refused: every backend is down by health check ({backend}: "
            )

            server = start()
            _waitFor("the backend coming back", lambda: state()["up"], describe)  # type: ignore[index]
            demux.waitForLog(f"backend {backend} of route r is up")
            assert f"{gauge} 1.0" in _get(metricsPort, "/metrics").decode()
            assert demux.log().count("of route r is down") == 1, demux.log()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)


def _quiet(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, **kw,
    )  # fmt: skip


def _started(process: subprocess.Popen[bytes], port: int) -> subprocess.Popen[bytes]:
    try:
        waitForPort(port, timeout=10)
    except TimeoutError:
        process.kill()
        process.wait()
        raise
    return process


def test_sshd(tmp_path: Path) -> None:
    """
    A real sshd, checked by its banner.
    """
    sshd = require("sshd")
    require("ssh-keygen")
    hostKey = tmp_path / "host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True
    )
    port = freePort()
    Path("/run/sshd").mkdir(exist_ok=True)
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostKey}\nUsePAM no\n"
        f"PasswordAuthentication no\nPidFile {tmp_path}/sshd.pid\n"
    )
    _backendDownAndUp(
        "match.ssh = {}",
        port,
        lambda: _started(_quiet([sshd, "-D", "-e", "-f", str(config)]), port),
        b"SSH-2.0-test\r\n",
    )


def test_tls(tmp_path: Path) -> None:
    """
    A real openssl s_server, checked by a TLS handshake with the route's
    SNI and ALPN (it refuses a handshake without its ALPN).
    """
    require("openssl")
    cert, key = makeCertificate(tmp_path, "tls.example.com")
    port = freePort()
    argv = [
        "openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{port}",
        "-cert", str(cert), "-key", str(key), "-alpn", "x-health", "-rev",
    ]  # fmt: skip
    _backendDownAndUp(
        'match.tls = { sni = ["tls.example.com"], alpn = ["x-health"] }',
        port,
        lambda: _started(_quiet(argv), port),
        clientHello("tls.example.com", ["x-health"]),
    )


def test_relay(tmp_path: Path) -> None:
    """
    A real Syncthing relay (strelaysrv), checked by a relay protocol Ping
    inside the bep-relay TLS session.
    """
    relay = require("strelaysrv")
    port = freePort()
    argv = [
        relay, "-keys", str(tmp_path), "-listen", f"127.0.0.1:{port}",
        "-pools=", "-status-srv=", "-protocol", "tcp4",
    ]  # fmt: skip
    _backendDownAndUp(
        "match.relay-protocol = {}",
        port,
        lambda: _started(_quiet(argv), port),
        clientHello(None, ["bep-relay"]),
    )


def test_http(tmp_path: Path) -> None:
    """
    A real HTTP server (Python's), checked with GET check_path.
    """
    (tmp_path / "healthz").write_text("ok\n")
    port = freePort()
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    _backendDownAndUp(
        'match.http = {}\ncheck_path = "/healthz"',
        port,
        lambda: _started(_quiet(argv, cwd=tmp_path), port),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
