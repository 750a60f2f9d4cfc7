"""
What the metrics port serves: Prometheus metrics counted by an
L{IConnectionObserver}, and a small status view (HTML and JSON) of the route
table, the counts per route and the open connections.

The counting lives in one observer with its own registry, so that two demux
factories in one process (tests, an embedding program) never share counts,
and so that a reload, which replaces the route table but not the factory,
keeps them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.util import Redirect
from zope.interface import implementer

from ._addresses import peerText as _peerText
from ._health import IHealthObserver
from ._observer import IConnectionObserver
from ._protocol import DemuxFactory, DemuxProtocol
from ._routes import Route
from ._targets import BackendTarget

# Deciding takes well under a millisecond for a client that speaks first, and
# up to inspect_delay (5 s by default) for one that does not.
DECIDE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10)
CONNECT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@implementer(IConnectionObserver, IHealthObserver)
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


class MetricsResource(Resource):
    """
    C{/metrics}: the observer's registry in Prometheus' text format.
    Generating it takes microseconds, so it is done on the reactor thread
    rather than in a thread pool.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


def _routeOf(protocol: DemuxProtocol) -> str | None:
    """
    The name of the route a connection took, if it took one.
    """
    name = getattr(protocol, "route", None)
    if isinstance(name, str):
        return name
    downstream = protocol.downstream
    name = getattr(downstream, "routeName", None)
    if name is None:
        name = getattr(getattr(downstream, "connection", None), "route", None)
    return name if isinstance(name, str) else None


def _startedAt(protocol: DemuxProtocol) -> float:
    for name in ("started", "_started"):
        started = getattr(protocol, name, None)
        if isinstance(started, int | float):
            return float(started)
    return 0.0


def _backendHealth(route: Route) -> dict[str, dict[str, object]]:
    """
    What the active health check says of each backend of C{route}, by
    description: C{up} and the C{reason} (empty for a route without checks).
    """
    target = route.target
    if not isinstance(target, BackendTarget) or target.check is None:
        return {}
    health: dict[str, dict[str, object]] = {}
    for backend in target.backends:
        state = target.checkedState(backend)
        if state is not None:
            health[backend.description] = {"up": state[0], "reason": state[1]}
    return health


def _backends(route: Route) -> list[str]:
    target = route.target
    if isinstance(target, BackendTarget):
        return [b.description for b in target.backends]
    return [str(getattr(target, "description", repr(target)))]


class StatusPage:
    """
    What the status view shows, gathered at the moment it is asked for: the
    route table now in use (after any reload), its counts, and the open
    connections.

    @ivar matchTables: gives the C{match} table each route was configured
        with, by route name, to show as written; a route without one (built
        in Python) is shown by its matcher's C{repr}.
    """

    def __init__(
        self,
        factory: DemuxFactory,
        observer: PrometheusObserver,
        clock: IReactorTime,
        matchTables: Callable[[], Mapping[str, object]] = dict,
    ) -> None:
        self.factory = factory
        self.observer = observer
        self.clock = clock
        self.matchTables = matchTables

    def snapshot(self) -> dict[str, Any]:
        """
        The status as plain data, what C{/status.json} serves.
        """
        tables = self.matchTables()
        counts = self.observer.routeCounts()
        empty = {"routed": 0, "active": 0, "bytesUp": 0, "bytesDown": 0,
                 "backendFailures": 0}
        routes = []
        table = self.factory.table
        for route in table.routes:
            sources = route.sources
            match = tables.get(route.name)
            routes.append(
                {
                    "name": route.name,
                    "match": match if match is not None else repr(route.matcher),
                    "backends": _backends(route),
                    "backendHealth": _backendHealth(route),
                    "allow": [str(n) for n in sources.allow] if sources else [],
                    "deny": [str(n) for n in sources.deny] if sources else [],
                    "counts": {
                        k: int(v) for k, v in counts.get(route.name, empty).items()
                    },
                }
            )
        now = self.clock.seconds()
        connections = [
            {
                "peer": _peerText(p.peer),
                "route": _routeOf(p),
                "decided": p.decided,
                "ageSeconds": round(now - started, 3),
            }
            for started, p in sorted(
                ((_startedAt(p), p) for p in list(self.factory.active)),
                key=lambda pair: pair[0],
            )
        ]
        return {
            "routes": routes,
            "onTimeout": table.onTimeout,
            "refused": {k: int(v) for k, v in self.observer.refusedCounts().items()},
            "activeConnections": connections,
            "undecided": self.factory.undecided,
        }


class StatusJSONResource(Resource):
    """
    C{/status.json}: L{StatusPage.snapshot} as JSON.
    """

    isLeaf = True

    def __init__(self, page: StatusPage) -> None:
        super().__init__()
        self.page = page

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self.page.snapshot(), indent=1).encode("utf-8")


class StatusHTMLResource(Resource):
    """
    C{/status}: the same as a small HTML page, for a person with a browser.
    """

    isLeaf = True

    def __init__(self, page: StatusPage) -> None:
        super().__init__()
        self.page = page

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return renderStatus(self.page.snapshot()).encode("utf-8")


def _cell(value: object) -> str:
    if not isinstance(value, str):
        value = json.dumps(value)
    return f"<td>{html.escape(value)}</td>"


def _withHealth(backend: str, health: Mapping[str, Any] | None) -> str:
    if health is None:
        return backend
    if health["up"]:
        return f"{backend} (up)"
    return f"{backend} (down: {health['reason']})"


def renderStatus(status: Mapping[str, Any]) -> str:
    """
    The status page's HTML for a L{StatusPage.snapshot}.
    """
    rows = []
    for route in status["routes"]:
        c = route["counts"]
        rows.append(
            "<tr>"
            + _cell(route["name"])
            + _cell(route["match"])
            + _cell(
                ", ".join(
                    _withHealth(b, route.get("backendHealth", {}).get(b))
                    for b in route["backends"]
                )
            )
            + _cell(" ".join([*route["allow"], *("!" + d for d in route["deny"])]))
            + "".join(
                _cell(str(c[k]))
                for k in ("routed", "active", "bytesUp", "bytesDown", "backendFailures")
            )
            + "</tr>"
        )
    conns = [
        "<tr>"
        + _cell(c["peer"])
        + _cell(c["route"] or ("closing" if c["decided"] else "undecided"))
        + _cell(f"{c['ageSeconds']:.1f}s")
        + "</tr>"
        for c in status["activeConnections"]
    ]
    refused = ", ".join(
        f"{html.escape(k)}: {v}" for k, v in sorted(status["refused"].items())
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        "<title>demux status</title></head><body>\n"
        "<h1>demux</h1>\n<h2>Routes</h2>\n<table border='1'>\n"
        "<tr><th>name</th><th>match</th><th>backends</th><th>sources</th>"
        "<th>routed</th><th>active</th><th>bytes up</th><th>bytes down</th>"
        "<th>backend failures</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>\n"
        + f"<p>Refused: {refused or 'none'}.</p>\n"
        + f"<h2>Open connections ({len(conns)})</h2>\n<table border='1'>\n"
        "<tr><th>peer</th><th>route</th><th>age</th></tr>\n"
        + "\n".join(conns)
        + "\n</table>\n</body></html>\n"
    )


class _QuietSite(Site):
    """
    A site that keeps no access log: a scrape every few seconds would
    otherwise outnumber the connections in demux's log.
    """

    noisy = False

    def log(self, request: HTTPRequest) -> None:
        pass


def metricsSite(
    observer: PrometheusObserver,
    factory: DemuxFactory,
    clock: IReactorTime,
    matchTables: Callable[[], Mapping[str, object]] = dict,
) -> Site:
    """
    The web site of the metrics port: C{/metrics}, C{/status},
    C{/status.json}; C{/} redirects to C{/status}.
    """
    page = StatusPage(factory, observer, clock, matchTables)
    root = Resource()
    root.putChild(b"", Redirect(b"/status"))
    root.putChild(b"metrics", MetricsResource(observer.registry))
    root.putChild(b"status", StatusHTMLResource(page))
    root.putChild(b"status.json", StatusJSONResource(page))
    return _QuietSite(root)
