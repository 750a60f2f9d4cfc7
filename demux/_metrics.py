"""
Prometheus metrics, counted by an L{IConnectionObserver}; the metrics
port's web site, with its status view, is L{demux._status}.

The counting lives in one observer with its own registry, so that two demux
factories in one process (tests, an embedding program) never share counts,
and so that a reload, which replaces the route table but not the factory,
keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from zope.interface import implementer

from ._health import IHealthObserver
from ._observer import IConnectionObserver
from ._udp import IFlowObserver

# Deciding takes well under a millisecond for a client that speaks first, and
# up to inspect_delay (5 s by default) for one that does not.
DECIDE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10)
CONNECT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@implementer(IConnectionObserver, IHealthObserver, IFlowObserver)
class PrometheusObserver:
    """
    Counts every connection's steps as Prometheus metrics, in a registry of
    its own (L{registry}).

    Metric names all start with C{demux_}; byte counts and the active gauge
    are per route, refusals per reason, backend failures per route and
    backend.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.acceptedTotal = Counter(
            "demux_connections_accepted",
            "Connections accepted and waiting for a decision.",
            registry=r,
        )
        self.routedTotal = Counter(
            "demux_connections_routed",
            "Connections that took a route.",
            ["route"],
            registry=r,
        )
        self.refusedTotal = Counter(
            "demux_connections_refused",
            "Connections closed without a route, by reason "
            "(limit, no match, timeout, proxy header, client closed).",
            ["reason"],
            registry=r,
        )
        self.active = Gauge(
            "demux_connections_active",
            "Routed connections open now.",
            ["route"],
            registry=r,
        )
        self.undecided = Gauge(
            "demux_connections_undecided",
            "Accepted connections still waiting for a decision.",
            registry=r,
        )
        self.bytesUp = Counter(
            "demux_bytes_up",
            "Bytes from clients, counted when their connection closes.",
            ["route"],
            registry=r,
        )
        self.bytesDown = Counter(
            "demux_bytes_down",
            "Bytes to clients, counted when their connection closes.",
            ["route"],
            registry=r,
        )
        self.decideSeconds = Histogram(
            "demux_decide_seconds",
            "Time from accepting a connection to taking its route.",
            registry=r,
            buckets=DECIDE_BUCKETS,
        )
        self.connectSeconds = Histogram(
            "demux_backend_connect_seconds",
            "Time for a backend to accept a connection.",
            ["route"],
            registry=r,
            buckets=CONNECT_BUCKETS,
        )
        self.backendFailures = Counter(
            "demux_backend_failures",
            "Backends that refused a connection or did not answer in time.",
            ["route", "backend"],
            registry=r,
        )
        self.backendUp = Gauge(
            "demux_backend_up",
            "1 if the backend is up by its route's active health check, else 0 "
            "(only backends of routes with check = true).",
            ["route", "backend"],
            registry=r,
        )

        self._flowMetrics()

    def _flowMetrics(self) -> None:
        r = self.registry
        self.flowsRouted = Counter(
            "demux_udp_flows_routed", "UDP flows that took a route.", ["route"], registry=r
        )
        self.flowsDropped = Counter(
            "demux_udp_flows_dropped",
            "UDP datagrams or undecided flows dropped without a route, by reason "
            "(limit, no match, timeout).",
            ["reason"],
            registry=r,
        )
        self.flowsActive = Gauge(
            "demux_udp_flows_active", "Routed UDP flows now.", ["route"], registry=r
        )
        self.flowsUndecided = Gauge(
            "demux_udp_flows_undecided", "UDP flows waiting for a decision.", registry=r
        )
        self.flowsMigrated = Counter(
            "demux_udp_flows_migrated",
            "Client address changes followed by QUIC connection ID.",
            ["route"],
            registry=r,
        )
        self.flowDatagrams = Counter(
            "demux_udp_datagrams",
            "Datagrams of ended UDP flows, by route and direction (up, down).",
            ["route", "direction"],
            registry=r,
        )
        self.flowBytes = Counter(
            "demux_udp_bytes",
            "Bytes of ended UDP flows, by route and direction (up, down).",
            ["route", "direction"],
            registry=r,
        )

    def flowStarted(self) -> None:
        self.flowsUndecided.inc()

    def flowDropped(self, reason: str, started: bool) -> None:
        self.flowsDropped.labels(reason).inc()
        if started:
            self.flowsUndecided.dec()

    def flowRouted(self, route: str, decideSeconds: float) -> None:
        self.flowsUndecided.dec()
        self.flowsRouted.labels(route).inc()
        self.flowsActive.labels(route).inc()

    def flowMigrated(self, route: str) -> None:
        self.flowsMigrated.labels(route).inc()

    def flowClosed(
        self, route: str, datagramsUp: int, datagramsDown: int, bytesUp: int, bytesDown: int
    ) -> None:
        self.flowsActive.labels(route).dec()
        self.flowDatagrams.labels(route, "up").inc(datagramsUp)
        self.flowDatagrams.labels(route, "down").inc(datagramsDown)
        self.flowBytes.labels(route, "up").inc(bytesUp)
        self.flowBytes.labels(route, "down").inc(bytesDown)

    def backendHealth(self, route: str, backend: str, up: bool | None) -> None:
        if up is None:
            try:
                self.backendUp.remove(route, backend)
            except KeyError:
                pass
            return
        self.backendUp.labels(route, backend).set(1 if up else 0)

    def accepted(self) -> None:
        self.acceptedTotal.inc()
        self.undecided.inc()

    def refused(self, reason: str) -> None:
        self.refusedTotal.labels(reason).inc()
        # A connection over a limit is refused before it is accepted; every
        # other refusal ends a wait that accepted() began.
        if reason != "limit":
            self.undecided.dec()

    def routed(self, route: str, decideSeconds: float) -> None:
        self.undecided.dec()
        self.routedTotal.labels(route).inc()
        self.active.labels(route).inc()
        self.decideSeconds.observe(decideSeconds)

    def backendConnected(self, route: str, backend: str, connectSeconds: float) -> None:
        self.connectSeconds.labels(route).observe(connectSeconds)

    def backendFailed(self, route: str, backend: str) -> None:
        self.backendFailures.labels(route, backend).inc()

    def closed(self, route: str, bytesUp: int, bytesDown: int, seconds: float) -> None:
        self.active.labels(route).dec()
        self.bytesUp.labels(route).inc(bytesUp)
        self.bytesDown.labels(route).inc(bytesDown)

    def routeCounts(self) -> dict[str, dict[str, float]]:
        """
        The counts per route, by route name: C{routed}, C{active},
        C{bytesUp}, C{bytesDown}, C{backendFailures}.
        """
        names = {
            "demux_connections_routed_total": "routed",
            "demux_connections_active": "active",
            "demux_bytes_up_total": "bytesUp",
            "demux_bytes_down_total": "bytesDown",
            "demux_backend_failures_total": "backendFailures",
        }
        counts: dict[str, dict[str, float]] = {}
        for sample in _samples(self.registry):
            key = names.get(sample.name)
            route = sample.labels.get("route")
            if key is None or route is None:
                continue
            perRoute = counts.setdefault(route, dict.fromkeys(names.values(), 0.0))
            perRoute[key] += sample.value
        return counts

    def refusedCounts(self) -> dict[str, float]:
        """
        How many connections were refused, by reason.
        """
        return {
            s.labels["reason"]: s.value
            for s in _samples(self.registry)
            if s.name == "demux_connections_refused_total"
        }


def _samples(registry: CollectorRegistry) -> Iterable[Any]:
    for family in registry.collect():
        yield from family.samples
