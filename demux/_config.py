"""
Configuration loading: TOML text, or command-line routes, into one
L{RouteTable} and the list of endpoints to listen on, and nothing else.

Every error names its place (file, route, key) and reads as one sentence.
"""

from __future__ import annotations

import ipaddress
import resource
import tomllib
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any

from attrs import field, frozen
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.python.reflect import namedAny

from . import _udpconfig
from ._client import SendProxy
from ._errors import ConfigError
from ._forward import DEFAULT_IDLE_TIMEOUT as DEFAULT_HTTP_IDLE_TIMEOUT
from ._forward import DEFAULT_RESPONSE_TIMEOUT, HTTPForwardTarget
from ._health import CHECK_KEYS, healthCheckFromRoute
from ._interfaces import IMatcher, IMatcherFactory, ITarget
from ._plugins import findMatcherFactory, matcherFactories
from ._presets import withPreset
from ._routes import (
    DEFAULT_INSPECT_DELAY,
    DEFAULT_MAX_PEEK,
    IPNetwork,
    Route,
    RouteTable,
    SourceFilter,
    matcherFor,
)
from ._splice import POOL_KEEP
from ._targets import (
    BALANCE_MODES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RETRY_AFTER,
    Backend,
    BackendTarget,
    LocalTarget,
)
from ._terminate import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    RoutesTarget,
    TLSTarget,
    tlsOptionsFrom,
)
from ._transparent import TransparentSource, backendAddress
from ._twisted import parseServer
from ._udp import DatagramTable, DatagramTarget, parseDatagramListen

_TOP_KEYS = {
    "listen",
    "inspect_delay",
    "max_peek",
    "on_timeout",
    "connect_timeout",
    "idle_timeout",
    "max_connections",
    "max_connections_per_source",
    "max_undecided",
    "shutdown_grace",
    "metrics",
    "log_connections",
    "log_decisions",
    "routes",
    *_udpconfig.TOP_KEYS,
}
_ROUTE_KEYS = {
    "name",
    "match",
    "backend",
    "local",
    "connect_timeout",
    "idle_timeout",
    "send_proxy",
    "balance",
    "retry_after",
    "allow",
    "deny",
    "splice",
    *CHECK_KEYS,
    "transparent",
    "tls",
    "routes",
    "preset",
    "http",
    "transport",
}
_BACKEND_ONLY = (
    "send_proxy",
    "balance",
    "retry_after",
    "idle_timeout",
    "connect_timeout",
    "splice",
    *CHECK_KEYS,
    "transparent",
)

DEFAULT_SHUTDOWN_GRACE = 10.0


def defaultMaxConnections() -> int:
    """
    As many connections as the open-file limit allows, two descriptors each
    (the client's and the backend's), less a margin for listening sockets,
    logs, the idle pipes the splice relay keeps and the like: the cap HAProxy
    derives the same way.  (A spliced connection holds pipes only while bytes
    are in flight, and waits for one rather than fail when none can be had.)
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, (soft - 64 - 2 * POOL_KEEP) // 2)


@frozen
class Config:
    """
    A loaded configuration.

    @ivar listen: Twisted server endpoint strings to serve the table on.
    @ivar table: the routes.
    @ivar shutdownGrace: seconds that open connections get to finish when
        demux is told to stop, before they are closed.
    @ivar metrics: a Twisted server endpoint string to serve Prometheus
        metrics and the status view on, or L{None} for none.
    @ivar matchTables: each route's C{match} table as it was written, by
        route name, so that the status view shows routes the way their
        author wrote them.
    @ivar datagrams: the routes and limits for UDP listeners (C{udp:} in
        C{listen}), or L{None} when no route applies to UDP.
    """

    listen: tuple[str, ...]
    table: RouteTable
    shutdownGrace: float = DEFAULT_SHUTDOWN_GRACE
    metrics: str | None = None
    matchTables: Mapping[str, object] = field(factory=dict)
    datagrams: DatagramTable | None = None


def _number(value: object, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number, not {value!r}", where)
    if value <= minimum:
        raise ConfigError(f"must be more than {minimum:g}, not {value!r}", where)
    return float(value)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be a whole number of at least 1, not {value!r}", where)
    return value


def _flag(data: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    """
    C{data[key]} as a boolean, C{default} when absent; TOML's own true or
    false only, not a value Python would merely take for one.
    """
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, not {value!r}", where)
    return value


def _routeName(data: object, index: int, where: str) -> str:
    """
    The name of the route table C{data}, the C{index}th of its list: outer
    and inner routes are named alike, C{route<index>} when not named.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("must be a table", where)
    name = data.get("name", f"route{index}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty string, not {name!r}", where)
    return name


def _checkRouteKeys(
    data: Mapping[str, Any], known: Set[str], where: str, kind: str = ""
) -> None:
    """
    Refuse a route table with a key outside C{known} or without C{match}.
    """
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown key {key!r}{kind} (known keys: "
                f"{', '.join(sorted(known))})",
                where,
            )
    if "match" not in data:
        raise ConfigError("has no match table", where)


def _timeouts(
    data: Mapping[str, Any],
    where: str,
    connectTimeout: float,
    idleTimeout: float | None,
) -> tuple[float, float | None]:
    """
    A route's connect and idle timeouts: its own where it sets them, else
    those it inherits (the top level's, or the outer route's).
    """
    if "connect_timeout" in data:
        connectTimeout = _number(data["connect_timeout"], f"{where}: connect_timeout")
    if "idle_timeout" in data:
        idleTimeout = _number(data["idle_timeout"], f"{where}: idle_timeout")
    return connectTimeout, idleTimeout


def _matcher(
    match: object, where: str, factories: Mapping[str, IMatcherFactory]
) -> IMatcher:
    if not isinstance(match, Mapping) or not match:
        raise ConfigError(
            "must be a table naming at least one matcher, such as "
            "match.tls.sni = [\"example.com\"] or match.any = {}",
            where,
        )
    matchers = []
    for name, options in match.items():
        place = f"{where}.{name}"
        try:
            factory = findMatcherFactory(name, factories)
            matchers.append(factory.build(options))
        except ConfigError as e:
            raise e.at(place) from None
    return matcherFor(matchers)


def _target(
    route: Mapping[str, Any],
    where: str,
    reactor: Any,
    connectTimeout: float,
    idleTimeout: float | None,
) -> ITarget:
    if ("backend" in route) == ("local" in route):
        raise ConfigError("needs exactly one of backend or local", where)
    if "http" in route and not str(route.get("backend", "")).startswith("http"):
        raise ConfigError('http needs a backend = "http://HOST:PORT"', where)
    if "backend" in route:
        if isinstance(route["backend"], str) and route["backend"].startswith(
            ("http://", "https://")
        ):
            return _httpTarget(route, where, reactor, connectTimeout, idleTimeout)
        where = f"{where}: backend"
        descriptions = route["backend"]
        if isinstance(descriptions, str):
            descriptions = [descriptions]
        if not isinstance(descriptions, list) or not descriptions:
            raise ConfigError(
                "must be a Twisted client endpoint string such as "
                f"\"tcp:127.0.0.1:8443\", or a list of them, not {descriptions!r}",
                where,
            )
        backends = []
        for description in descriptions:
            if not isinstance(description, str) or not description:
                raise ConfigError(
                    f"{description!r} is not a client endpoint string", where
                )
            try:
                endpoint = clientFromString(reactor, description)
            except Exception as e:
                raise ConfigError(
                    f"bad client endpoint string {description!r}: {e}", where
                ) from None
            backends.append(Backend(endpoint, description))
        sendProxy = None
        if "send_proxy" in route:
            value = route["send_proxy"]
            versions: dict[object, SendProxy] = {
                "v1": 1, "v2": 2, 1: 1, 2: 2, "pass": "pass"
            }
            if isinstance(value, bool) or value not in versions:
                raise ConfigError(
                    f'must be "v1", "v2" or "pass", not {value!r}',
                    f"{where}: send_proxy",
                )
            sendProxy = versions[value]
        balance = route.get("balance", "first")
        if balance not in BALANCE_MODES:
            raise ConfigError(
                f"must be one of {', '.join(BALANCE_MODES)}, not {balance!r}",
                f"{where}: balance",
            )
        retryAfter = DEFAULT_RETRY_AFTER
        if "retry_after" in route:
            retryAfter = _number(route["retry_after"], f"{where}: retry_after")
        splice = _flag(route, "splice", True, f"{where}: splice")
        # A check has no incoming header to pass on: behind "pass" it sends
        # a v2 LOCAL header, which every PROXY-protocol server takes.
        check = healthCheckFromRoute(
            route, where, 2 if sendProxy == "pass" else sendProxy
        )
        transparent = _transparent(route, backends, where)
        return BackendTarget(
            backends[0].endpoint,
            backends[0].description,
            connectTimeout,
            idleTimeout,
            sendProxy=sendProxy,
            alternatives=tuple(backends[1:]),
            balance=balance,
            retryAfter=retryAfter,
            splice=splice,
            check=check,
            transparent=transparent,
        )
    for key in _BACKEND_ONLY:
        if key in route:
            raise ConfigError(f"{key} needs a backend, not a local target", where)
    name = route["local"]
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"must name a protocol factory as \"package.module.name\", not {name!r}",
            f"{where}: local",
        )
    try:
        found = namedAny(name.replace(":", "."))
    except Exception as e:
        raise ConfigError(f"cannot import {name!r}: {e}", f"{where}: local") from None
    factory = found if IProtocolFactory.providedBy(found) else None
    if factory is None and callable(found):
        factory = found()
    if not IProtocolFactory.providedBy(factory):
        raise ConfigError(
            f"{name!r} is neither a protocol factory nor makes one",
            f"{where}: local",
        )
    return LocalTarget(factory, f"local {name}")


def _transparent(
    route: Mapping[str, Any], backends: Sequence[Backend], where: str
) -> TransparentSource | None:
    where = f"{where.removesuffix(': backend')}: transparent"
    if not _flag(route, "transparent", False, where):
        return None
    for backend in backends:
        try:
            backendAddress(backend.endpoint)
        except ValueError as e:
            raise ConfigError(f"{e} ({backend.description!r})", where) from None
    return TransparentSource()
def _httpTarget(
    route: Mapping[str, Any],
    where: str,
    reactor: Any,
    connectTimeout: float,
    idleTimeout: float | None,
) -> ITarget:
    """
    The HTTP forwarder a C{backend = "http://HOST:PORT"} asks for.
    """
    place = f"{where}: backend"
    url = route["backend"]
    for key in _BACKEND_ONLY:
        if key in route and key not in ("connect_timeout", "idle_timeout"):
            raise ConfigError(f"{key} does not apply to an HTTP backend", where)
    if url.startswith("https://"):
        raise ConfigError(
            "https:// backends are not supported; forward to http://HOST:PORT",
            place,
        )
    authority = url[len("http://") :].rstrip("/")
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit() or not host or "/" in authority:
        raise ConfigError(f"must be \"http://HOST:PORT\", not {url!r}", place)
    # An IPv6 literal's colons are escaped in an endpoint string.
    escaped = host.strip("[]").replace(":", "\\:")
    description = f"tcp:{escaped}:{port}"
    try:
        endpoint = clientFromString(reactor, description)
    except Exception as e:
        raise ConfigError(f"bad backend {url!r}: {e}", place) from None
    options = route.get("http", {})
    if not isinstance(options, Mapping):
        raise ConfigError("must be a table such as http.timeout = 30", f"{where}: http")
    for key in options:
        if key not in ("timeout", "forwarded"):
            raise ConfigError(
                f"unknown key {key!r} (known keys: forwarded, timeout)",
                f"{where}: http",
            )
    timeout = DEFAULT_RESPONSE_TIMEOUT
    if "timeout" in options:
        timeout = _number(options["timeout"], f"{where}: http.timeout")
    forwarded = _flag(options, "forwarded", False, f"{where}: http.forwarded")
    return HTTPForwardTarget(
        endpoint,
        url,
        connectTimeout,
        timeout,
        forwarded,
        DEFAULT_HTTP_IDLE_TIMEOUT if idleTimeout is None else idleTimeout,
    )


_INNER_KEYS = _ROUTE_KEYS - {"tls", "routes", "preset"}


def _routeTarget(
    route: Mapping[str, Any],
    where: str,
    reactor: Any,
    connectTimeout: float,
    idleTimeout: float | None,
    factories: Mapping[str, IMatcherFactory],
    limits: Mapping[str, Any],
    name: str,
) -> ITarget:
    """
    A route's target, with the TLS step and the inner routes it may have:
    C{tls} ends TLS before the target, C{routes} decides the decrypted
    stream again among inner routes (each with its own target).
    """
    if "routes" not in route:
        target = _target(route, where, reactor, connectTimeout, idleTimeout)
    else:
        if "tls" not in route:
            raise ConfigError(
                "routes (inner routes) need tls: they match the decrypted stream",
                where,
            )
        for key in ("backend", "local", "http", *_BACKEND_ONLY):
            if key in route and key not in ("connect_timeout", "idle_timeout"):
                raise ConfigError(
                    f"has inner routes, so {key} belongs in each of them", where
                )
        inner = route["routes"]
        if not isinstance(inner, list) or not inner:
            raise ConfigError(
                "must be a list of routes, such as [[routes.routes]] tables",
                f"{where}: routes",
            )
        routes = []
        for index, data in enumerate(inner, 1):
            innerName = _routeName(data, index, f"{where}: routes {index}")
            place = f"{where}: route {innerName!r}"
            _checkRouteKeys(data, _INNER_KEYS, place, " in an inner route")
            innerTimeout, innerIdle = _timeouts(
                data, place, connectTimeout, idleTimeout
            )
            matcher = _matcher(data["match"], f"{place}: match", factories)
            innerTarget = _target(data, place, reactor, innerTimeout, innerIdle)
            routes.append(
                Route(f"{name}/{innerName}", matcher, innerTarget, _sources(data, place))
            )
        try:
            table = RouteTable(routes, **limits)
        except ConfigError as e:
            raise e.at(where) from None
        target = RoutesTarget(table)
    if "tls" in route:
        options = tlsOptionsFrom(route["tls"], where, name)
        handshakeTimeout = DEFAULT_HANDSHAKE_TIMEOUT
        if "handshake_timeout" in route["tls"]:
            handshakeTimeout = _number(
                route["tls"]["handshake_timeout"], f"{where}: tls.handshake_timeout"
            )
        target = TLSTarget(options, target, handshakeTimeout=handshakeTimeout)
    return target


def _networks(value: object, where: str) -> tuple[IPNetwork, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"must be a list of networks such as [\"10.0.0.0/8\"], not {value!r}",
            where,
        )
    networks = []
    for text in value:
        try:
            networks.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError as e:
            raise ConfigError(f"{text!r} is not a network: {e}", where) from None
    return tuple(networks)


def _sources(route: Mapping[str, Any], where: str) -> SourceFilter | None:
    if "allow" not in route and "deny" not in route:
        return None
    allow = _networks(route["allow"], f"{where}: allow") if "allow" in route else ()
    deny = _networks(route["deny"], f"{where}: deny") if "deny" in route else ()
    return SourceFilter(allow, deny)


PROXY_PREFIX = "haproxy:"


def listenSpec(description: str) -> tuple[str, bool]:
    """
    Split a listen string into the endpoint string to listen on and whether
    its connections start with a PROXY protocol header: C{haproxy:tcp:443}
    is written as Twisted users write it, and demux reads the header itself
    (so that a header split across reads is never refused).
    """
    if description.startswith(PROXY_PREFIX):
        return description[len(PROXY_PREFIX) :], True
    return description, False


def _checkServer(endpoint: str, description: str, where: str, reactor: Any) -> None:
    """
    Check a server endpoint string, C{description} as written and
    C{endpoint} the part of it that Twisted parses.
    """
    try:
        if endpoint.startswith("systemd:"):
            # Outside systemd the descriptors it names do not exist yet;
            # check the syntax only.
            parseServer(endpoint)
        else:
            serverFromString(reactor, endpoint)
    except Exception as e:
        raise ConfigError(
            f"bad server endpoint string {description!r}: {e}", where
        ) from None


def _listen(value: object, where: str, reactor: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            "must be a list of Twisted server endpoint strings such as "
            "[\"tcp:443\"]",
            where,
        )
    for description in value:
        if not isinstance(description, str):
            raise ConfigError(f"{description!r} is not a string", where)
        try:
            if parseDatagramListen(description) is not None:
                continue
        except ValueError as e:
            raise ConfigError(f"bad UDP listen string {description!r}: {e}", where) from None
        endpoint, _ = listenSpec(description)
        _checkServer(endpoint, description, where, reactor)
    return tuple(value)


def configFromDict(
    data: Mapping[str, Any],
    reactor: Any,
    source: str = "configuration",
    factories: Mapping[str, IMatcherFactory] | None = None,
    listen: Sequence[str] | None = None,
) -> Config:
    """
    Build a L{Config} from the table that TOML (or the command line) gave.

    @param source: the file name, for error messages.
    @param factories: the matcher factories, by default every installed one.
    @param listen: endpoint strings that replace the table's C{listen}.
    @raise ConfigError: naming C{source} and the place in it.
    """
    if factories is None:
        factories = matcherFactories()
    try:
        for key in data:
            if key not in _TOP_KEYS:
                raise ConfigError(
                    f"unknown key {key!r} (known keys: {', '.join(sorted(_TOP_KEYS))})"
                )
        if listen:
            listening = _listen(list(listen), "--listen", reactor)
        elif "listen" in data:
            listening = _listen(data["listen"], "listen", reactor)
        else:
            raise ConfigError("says nowhere to listen; add listen = [\"tcp:443\"]")
        inspectDelay = DEFAULT_INSPECT_DELAY
        if "inspect_delay" in data:
            inspectDelay = _number(data["inspect_delay"], "inspect_delay")
        maxPeek = DEFAULT_MAX_PEEK
        if "max_peek" in data:
            value = data["max_peek"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"must be a whole number of bytes, not {value!r}", "max_peek"
                )
            maxPeek = value
        connectTimeout = DEFAULT_CONNECT_TIMEOUT
        if "connect_timeout" in data:
            connectTimeout = _number(data["connect_timeout"], "connect_timeout")
        idleTimeout = None
        if "idle_timeout" in data:
            idleTimeout = _number(data["idle_timeout"], "idle_timeout")
        shutdownGrace = DEFAULT_SHUTDOWN_GRACE
        if "shutdown_grace" in data:
            shutdownGrace = _number(data["shutdown_grace"], "shutdown_grace", -1)
        maxConnections = defaultMaxConnections()
        if "max_connections" in data:
            maxConnections = _count(data["max_connections"], "max_connections")
        perSource = None
        if "max_connections_per_source" in data:
            perSource = _count(
                data["max_connections_per_source"], "max_connections_per_source"
            )
        logConnections = _flag(data, "log_connections", True, "log_connections")
        logDecisions = _flag(data, "log_decisions", False, "log_decisions")
        maxUndecided = None
        if "max_undecided" in data:
            maxUndecided = _count(data["max_undecided"], "max_undecided")
        metrics = data.get("metrics")
        if metrics is not None:
            if not isinstance(metrics, str) or not metrics:
                raise ConfigError(
                    "must be a Twisted server endpoint string such as "
                    f"\"tcp:9100:interface=127.0.0.1\", not {metrics!r}",
                    "metrics",
                )
            _checkServer(metrics, metrics, "metrics", reactor)
        onTimeout = data.get("on_timeout")
        if onTimeout is not None and not isinstance(onTimeout, str):
            raise ConfigError(f"must be a route name, not {onTimeout!r}", "on_timeout")
        routesData = data.get("routes")
        if not isinstance(routesData, list) or not routesData:
            raise ConfigError(
                "has no routes; add at least one [[routes]] table", "routes"
            )
        routes = []
        datagramRoutes: list[Route] = []
        datagramTargets: dict[str, DatagramTarget] = {}
        matchTables: dict[str, object] = {}
        names: set[str] = set()
        for index, routeData in enumerate(routesData, 1):
            name = _routeName(routeData, index, f"route {index}")
            where = f"route {name!r}"
            if name in names:
                raise ConfigError("two routes have this name", where)
            names.add(name)
            routeData = withPreset(routeData, where)
            _checkRouteKeys(routeData, _ROUTE_KEYS, where)
            transport = _udpconfig.routeTransport(routeData, where)
            routeTimeout, routeIdle = _timeouts(
                routeData, where, connectTimeout, idleTimeout
            )
            matcher = _matcher(routeData["match"], f"{where}: match", factories)
            matchTables[name] = routeData["match"]
            if transport != "tcp" and _udpconfig.appliesToDatagrams(
                routeData["match"], transport, where, factories
            ):
                datagramTarget = _udpconfig.datagramTarget(routeData, transport, where)
                datagramTargets[name] = datagramTarget
                datagramRoutes.append(
                    Route(
                        name,
                        matcher,
                        _udpconfig.DatagramOnly(datagramTarget),
                        _sources(routeData, where),
                    )
                )
            if transport == "udp":
                continue
            target = _routeTarget(
                _udpconfig.streamPart(routeData),
                where,
                reactor,
                routeTimeout,
                routeIdle,
                factories,
                dict(
                    inspectDelay=inspectDelay,
                    maxPeek=maxPeek,
                    logConnections=logConnections,
                    logDecisions=logDecisions,
                ),
                name,
            )
            routes.append(Route(name, matcher, target, _sources(routeData, where)))
        if onTimeout is not None and onTimeout not in names:
            raise ConfigError(f"names no route: {onTimeout!r}", "on_timeout")
        table = RouteTable(
            routes,
            inspectDelay=inspectDelay,
            maxPeek=maxPeek,
            onTimeout=onTimeout if any(r.name == onTimeout for r in routes) else None,
            maxConnections=maxConnections,
            maxConnectionsPerSource=perSource,
            maxUndecided=maxUndecided,
            logConnections=logConnections,
            logDecisions=logDecisions,
        )
        datagrams = None
        udpListening = [d for d in listening if parseDatagramListen(d) is not None]
        if datagramRoutes:
            datagrams = _udpconfig.datagramTable(
                data, datagramRoutes, datagramTargets, table, onTimeout
            )
        if udpListening and datagrams is None:
            raise ConfigError(
                f"has UDP listeners ({udpListening[0]}) but no route applies to UDP",
                "listen",
            )
        if len(udpListening) < len(listening) and not routes:
            raise ConfigError(
                "has TCP listeners but every route is UDP-only", "listen"
            )
    except ConfigError as e:
        raise e.at(source) from None
    return Config(listening, table, shutdownGrace, metrics, matchTables, datagrams)


def loadConfig(
    path: str | Path,
    reactor: Any,
    factories: Mapping[str, IMatcherFactory] | None = None,
    listen: Sequence[str] | None = None,
) -> Config:
    """
    Load a TOML configuration file.

    @raise ConfigError: if the file cannot be read, is not TOML, or says
        something demux cannot do; the message names the file and the place.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read it: {e.strerror}", str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", str(path)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"is not valid TOML: {e}", str(path)) from None
    return configFromDict(data, reactor, str(path), factories, listen)


def _cliValue(text: str, nested: bool) -> object:
    """
    A command-line matcher value.  A matcher's own value (C{prefix=12345678})
    is a string unless written as a TOML array, table, boolean or quoted
    string; an option inside a matcher (C{regex.length=64}) is any TOML
    value, and otherwise the text itself.
    """
    if not nested and not (
        text[:1] in ("[", "{", '"', "'") or text in ("true", "false")
    ):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def routeFromArgument(argument: str) -> dict[str, Any]:
    """
    The route table that one C{--route} argument means.

    The argument is C{"NAME MATCHER [MATCHER ...] BACKEND"}: a route name, one
    or more matchers written C{key} or C{key=value} with a dotted key
    (C{ssh}, C{prefix=9e79bc40}, C{tls.sni=example.com}), and a client
    endpoint string.
    """
    words = argument.split()
    if len(words) < 3:
        raise ConfigError(
            "must be \"NAME MATCHER [MATCHER ...] BACKEND\", for example "
            "\"web http tcp:127.0.0.1:8080\"",
            f"--route {argument!r}",
        )
    name, *matchWords, backend = words
    match: dict[str, Any] = {}
    for word in matchWords:
        key, sep, raw = word.partition("=")
        *parents, leaf = key.split(".")
        value: object = _cliValue(raw, bool(parents)) if sep else {}
        table = match
        for parent in parents:
            table = table.setdefault(parent, {})
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{key!r} conflicts with an earlier matcher",
                    f"--route {argument!r}",
                )
        table[leaf] = value
    return {"name": name, "match": match, "backend": backend}
