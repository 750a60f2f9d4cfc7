"""
The UDP half of configuration loading: which transport a route applies to,
its UDP target, and the flow limits, each error naming its place as
L{demux._config} does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from ._errors import ConfigError
from ._interfaces import ConnectionInfo, IMatcherFactory, ITarget
from ._routes import Route, RouteTable
from ._udp import (
    DEFAULT_MAX_FLOW_DATAGRAMS,
    DEFAULT_MAX_FLOWS,
    DEFAULT_UDP_IDLE_TIMEOUT,
    DatagramTable,
    DatagramTarget,
    datagramsAllowed,
    isUDPBackend,
    parseUDPBackend,
)

TOP_KEYS = {"udp_idle_timeout", "max_flows", "max_flows_per_source", "max_flow_datagrams"}
TRANSPORTS = ("tcp", "udp", "both")
# Keys of a backend route that mean something for TCP connections only.
_STREAM_ONLY = (
    "balance",
    "retry_after",
    "splice",
    "transparent",
    "check",
    "connect_timeout",
    "idle_timeout",
)


def _backends(route: Mapping[str, Any]) -> list[object]:
    value = route.get("backend", [])
    return [value] if isinstance(value, str) else list(value) if isinstance(value, list) else [value]


def routeTransport(route: Mapping[str, Any], where: str) -> str:
    """
    The transport a route applies to: its C{transport} key, or else C{"udp"}
    if every backend is C{udp:HOST:PORT}, C{"both"} if some are, C{"tcp"}
    otherwise.
    """
    backends = _backends(route)
    udp = [b for b in backends if isUDPBackend(b)]
    transport = route.get("transport")
    if transport is None:
        if not udp:
            return "tcp"
        return "udp" if len(udp) == len(backends) else "both"
    if transport not in TRANSPORTS:
        raise ConfigError(
            f'must be "tcp", "udp" or "both", not {transport!r}', f"{where}: transport"
        )
    if transport == "tcp" and udp:
        raise ConfigError(
            f"a TCP route cannot have the UDP backend {udp[0]!r}", f"{where}: backend"
        )
    if transport != "tcp" and "local" in route:
        raise ConfigError(
            "a UDP route needs a udp:HOST:PORT backend, not a local target", where
        )
    if transport != "tcp" and not udp:
        raise ConfigError(
            f"a {transport} route needs a udp:HOST:PORT backend for its UDP flows",
            f"{where}: backend",
        )
    if transport == "udp" and len(udp) != len(backends):
        raise ConfigError(
            "a UDP route's backends must all be udp:HOST:PORT", f"{where}: backend"
        )
    if transport == "both" and len(udp) == len(backends):
        raise ConfigError(
            "a route for both transports needs a TCP backend as well as a UDP one",
            f"{where}: backend",
        )
    return transport


def streamPart(route: Mapping[str, Any]) -> Mapping[str, Any]:
    """
    A route of transport C{"both"} as the TCP side sees it: its UDP backends
    and C{transport} left out.
    """
    stream = {k: v for k, v in route.items() if k != "transport"}
    if "backend" in stream:
        backends = _backends(route)
        kept = [b for b in backends if not isUDPBackend(b)]
        if len(kept) < len(backends):
            # Left as it was written otherwise: a single string may be more
            # than an endpoint (an http:// forwarder's URL).
            stream["backend"] = kept[0] if len(kept) == 1 else kept
    return stream


def appliesToDatagrams(
    match: Mapping[str, Any],
    transport: str,
    where: str,
    factories: Mapping[str, IMatcherFactory],
) -> bool:
    """
    Whether a route's matchers can judge datagrams.  A UDP-only route whose
    matchers cannot is an error; one for both transports serves TCP only.
    """
    for name in match:
        factory = factories.get(name)
        if not datagramsAllowed(factory):
            if transport == "udp":
                raise ConfigError(
                    "cannot judge datagrams (see --list-matchers); use a "
                    "matcher for UDP or transport = \"tcp\"",
                    f"{where}: match.{name}",
                )
            return False
    return True


def datagramTarget(route: Mapping[str, Any], transport: str, where: str) -> DatagramTarget:
    """
    The UDP target of a route that applies to UDP.
    """
    if transport == "udp":
        for key in _STREAM_ONLY:
            if key in route:
                raise ConfigError(f"{key} applies to TCP backends only", where)
    backends = []
    for description in _backends(route):
        if isUDPBackend(description):
            assert isinstance(description, str)
            try:
                backends.append(parseUDPBackend(description))
            except ValueError as e:
                raise ConfigError(str(e), f"{where}: backend") from None
    sendProxy = False
    if "send_proxy" in route:
        value = route["send_proxy"]
        if value not in ("v2", 2) or isinstance(value, bool):
            if transport == "udp" or value not in ("v1", 1, "pass"):
                raise ConfigError(
                    f'must be "v2" for UDP flows, not {value!r}', f"{where}: send_proxy"
                )
        else:
            sendProxy = True
    return DatagramTarget(tuple(backends), sendProxy)


@implementer(ITarget)
class DatagramOnly:
    """
    The stream target of a route that serves UDP only: the route is never
    in a stream table, so it is never handed a connection.
    """

    def __init__(self, target: DatagramTarget) -> None:
        self.description = target.description

    def handOff(
        self, transport: ITransport, peeked: bytes, connection: ConnectionInfo
    ) -> Protocol:
        raise RuntimeError("a UDP-only route was handed a TCP connection")


def _seconds(data: Mapping[str, Any], key: str, default: float) -> float:
    if key not in data:
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"must be a positive number of seconds, not {value!r}", key)
    return float(value)


def _count(data: Mapping[str, Any], key: str, default: int | None) -> int | None:
    if key not in data:
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be a whole number of at least 1, not {value!r}", key)
    return value


def datagramTable(
    data: Mapping[str, Any],
    routes: list[Route],
    targets: Mapping[str, DatagramTarget],
    stream: RouteTable,
    onTimeout: str | None,
) -> DatagramTable:
    """
    The UDP table: C{routes} with the stream table's inspection limits, and
    the flow limits from the top of the configuration.
    """
    maxFlows = _count(data, "max_flows", DEFAULT_MAX_FLOWS)
    assert maxFlows is not None
    maxDatagrams = _count(data, "max_flow_datagrams", DEFAULT_MAX_FLOW_DATAGRAMS)
    assert maxDatagrams is not None
    table = RouteTable(
        routes,
        inspectDelay=stream.inspectDelay,
        maxPeek=stream.maxPeek,
        onTimeout=onTimeout if any(r.name == onTimeout for r in routes) else None,
        logConnections=stream.logConnections,
        logDecisions=stream.logDecisions,
    )
    return DatagramTable(
        table,
        dict(targets),
        idleTimeout=_seconds(data, "udp_idle_timeout", DEFAULT_UDP_IDLE_TIMEOUT),
        maxFlows=maxFlows,
        maxFlowsPerSource=_count(data, "max_flows_per_source", None),
        maxFlowDatagrams=maxDatagrams,
    )
