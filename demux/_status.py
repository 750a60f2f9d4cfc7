"""
The status view of the metrics port: C{/status} (HTML for a person),
C{/status.json} (the same as data), beside C{/metrics}; what they show is
gathered when asked, from the route table in use, the observer's counts and
the factory's snapshot of its open connections.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.util import Redirect

from ._addresses import peerText
from ._metrics import PrometheusObserver
from ._protocol import DemuxFactory
from ._routes import Route
from ._targets import BackendTarget


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
                "peer": peerText(c.peer),
                "route": c.route,
                "decided": c.decided,
                "ageSeconds": round(now - c.started, 3),
            }
            for c in self.factory.snapshot()
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
