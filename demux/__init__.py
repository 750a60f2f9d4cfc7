"""
demux: many protocols on one TCP port.

Each connection's first bytes are offered to an ordered list of routes; the
first route whose matcher says yes gets the connection, relayed to a backend
or handed to an in-process protocol.  See the documentation for the
configuration file, writing a matcher plugin, and embedding demux.
"""

from ._clienthello import ClientHello, isGrease, parseClientHello
from ._config import Config, configFromDict, loadConfig, routeFromArgument
from ._errors import (
    ConfigError,
    DemuxError,
    DuplicateMatcherError,
    MatcherConfigError,
    UnknownMatcherError,
)
from ._forward import HTTPForwardTarget
from ._health import HealthCheck, HealthService, IHealthCheck, checkForMatch
from ._httphead import RequestHead, parseRequestHead
from ._interfaces import (
    MATCH,
    NEED_MORE,
    NO_MATCH,
    ConnectionInfo,
    IMatcher,
    IMatcherFactory,
    ITarget,
    Verdict,
    transportsOf,
)
from ._observer import IConnectionObserver, NullObserver
from ._peek import DatagramPeek, Peek
from ._plugins import ENTRY_POINT_GROUP, findMatcherFactory, matcherFactories
from ._protocol import DemuxFactory, DemuxProtocol
from ._routes import (
    AllOf,
    Decision,
    Route,
    RouteTable,
    SourceFilter,
    decide,
)
from ._targets import Backend, BackendTarget, LocalTarget
from ._terminate import RoutesTarget, ServerTLSOptions, TLSTarget

__all__ = [
    "AllOf",
    "Backend",
    "BackendTarget",
    "ClientHello",
    "ConnectionInfo",
    "IConnectionObserver",
    "NullObserver",
    "RequestHead",
    "SourceFilter",
    "isGrease",
    "parseClientHello",
    "parseRequestHead",
    "Config",
    "ConfigError",
    "Decision",
    "DemuxError",
    "DemuxFactory",
    "DemuxProtocol",
    "DuplicateMatcherError",
    "ENTRY_POINT_GROUP",
    "IMatcher",
    "IMatcherFactory",
    "ITarget",
    "LocalTarget",
    "MATCH",
    "MatcherConfigError",
    "NEED_MORE",
    "NO_MATCH",
    "Peek",
    "DatagramPeek",
    "transportsOf",
    "Route",
    "RouteTable",
    "UnknownMatcherError",
    "Verdict",
    "configFromDict",
    "decide",
    "findMatcherFactory",
    "loadConfig",
    "matcherFactories",
    "routeFromArgument",
    "HealthCheck",
    "HealthService",
    "IHealthCheck",
    "checkForMatch",
    "HTTPForwardTarget",
    "RoutesTarget",
    "ServerTLSOptions",
    "TLSTarget",
]
