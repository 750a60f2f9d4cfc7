"""
C{twistd demux}: options and service.  Thin glue: the configuration is
loaded and checked while the options are parsed, before anything listens, so
a mistake stops start-up with one line naming its place.
"""

from __future__ import annotations

import resource
import signal
import sys
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from ._config import Config, configFromDict, listenSpec, loadConfig, routeFromArgument
from ._errors import DemuxError
from ._health import HealthService, IHealthObserver
from ._lint import lint
from ._plugins import matcherFactories
from ._protocol import DemuxFactory
from ._twisted import SynchronousEndpointService, forgetExitSignal
from ._udp import parseDatagramListen

log = Logger(namespace="demux")


def _fail(message: str, status: int = 1) -> None:
    """
    Stop with one line on standard error and a non-zero status, instead of
    twistd's usage text or a traceback.
    """
    sys.stderr.write(f"demux: error: {message}\n")
    raise SystemExit(status)


class Options(usage.Options):
    """
    The options of C{twistd demux}.
    """

    synopsis = (
        "[--config FILE | --listen ENDPOINT --route ROUTE ...] "
        "[--check | --explain CAPTURE]"
    )
    longdesc = (
        "Serve many protocols on one port: each connection's first bytes are "
        "matched against the routes in order and the first match gets the "
        "connection. Without --config or --route, a demo configuration on "
        "127.0.0.1:8080 is served."
    )
    optParameters = [
        ["config", "c", None, "A TOML configuration file."],
        ["inspect-delay", None, None, "Seconds to wait for a decision (with --route)."],
        ["max-peek", None, None, "The most bytes read before deciding (with --route)."],
        ["on-timeout", None, None, "The route for undecided connections (with --route)."],
        [
            "workers",
            "w",
            "1",
            "Processes accepting on the same ports, to use more than one core "
            "(Linux).",
        ],
        [
            "explain",
            None,
            None,
            "Say what each route makes of the first bytes in CAPTURE (raw, hex "
            "dump, pcap or pcapng; - for standard input) and exit: 0 routed, "
            "1 refused, 2 bad input, 3 inconsistent matcher.",
        ],
        ["stream", None, None, "With --explain: the pcap's stream number N."],
        ["flow", None, None, "With --explain: the pcap's stream with end ADDR:PORT."],
        [
            "capture-format",
            None,
            "auto",
            "With --explain: auto, raw, hex or pcap (pcap or pcapng).",
        ],
        ["explain-format", None, "text", "With --explain: text or json."],
    ]
    optFlags = [
        ["check", None, "Check the configuration, print a summary and exit."],
        ["list-matchers", None, "List every installed matcher and exit."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.arguments: list[str] = []
        self["listen"] = []
        self["routes"] = []

    def opt_listen(self, description: str) -> None:
        """
        A Twisted server endpoint string to listen on, such as tcp:443 or
        systemd:domain=INET:index=0 (repeatable; replaces the config's listen).
        """
        self["listen"].append(description)

    def opt_route(self, argument: str) -> None:
        """
        A route, "NAME MATCHER [MATCHER ...] BACKEND", for example
        "discovery tls.sni=discovery.example.com tcp:127.0.0.1:8443"
        (repeatable, tried in order; instead of --config).
        """
        self["routes"].append(argument)

    def parseOptions(self, options: Any = None) -> None:
        """
        Keep the arguments, so that workers can load the same configuration.
        """
        if options is None:
            options = sys.argv[1:]
        self.arguments = _withoutWorkers(list(options))
        super().parseOptions(options)

    def postOptions(self) -> None:
        if getattr(self, "parent", None) is not None and sys.platform.startswith(
            "linux"
        ):
            # Under twistd: its --reactor, if given, is installed by now, and
            # nothing has imported the reactor yet, so this is the place to
            # make demux's own (epoll, so Linux only) the default.
            from ._reactor import installIfNoneYet

            installIfNoneYet()
        from twisted.internet import reactor

        if self["explain"] is not None:
            self._explain(reactor)
        try:
            self["workers"] = int(self["workers"])
            if self["workers"] < 1:
                raise ValueError()
        except ValueError:
            _fail(
                f"--workers must be a whole number of at least 1, not {self['workers']!r}"
            )
        if self["workers"] > 1 and not sys.platform.startswith("linux"):
            _fail("--workers is offered on Linux only")

        _raiseFileLimit()
        self.reloader: Callable[[], Config] | None = None
        if self["config"] and not self["routes"]:
            path, listen = self["config"], list(self["listen"])

            def reloader() -> Config:
                return loadConfig(path, reactor, matcherFactories(), listen)

            self.reloader = reloader
        try:
            factories = matcherFactories()
        except DemuxError as e:
            _fail(str(e))
        if self["list-matchers"]:
            from ._interfaces import DATAGRAM, STREAM, transportsOf

            for name, factory in factories.items():
                transports = transportsOf(factory)
                udp = ""
                if DATAGRAM in transports:
                    udp = " (UDP too)" if STREAM in transports else " (UDP only)"
                print(f"{name:16} {factory.summary}{udp}")
            raise SystemExit(0)
        try:
            self["demux"] = self._load(reactor, factories)
        except DemuxError as e:
            _fail(str(e))
        twistd = getattr(self, "parent", None)
        if twistd is not None:
            self._checkStart(twistd)
        if self["check"]:
            config: Config = self["demux"]
            # Every route, TCP and UDP, in the order written.
            names = ", ".join(config.matchTables)
            print(
                f"configuration OK: {len(config.matchTables)} routes ({names}); "
                f"listening on {', '.join(config.listen)}"
            )
            for warning in lint(config.table, config.matchTables):
                print(f"demux: warning: {warning}")
            from ._transparent import report

            missing = report(config.table)
            for line in missing:
                print(line)
            raise SystemExit(1 if missing else 0)

    def _checkStart(self, twistd: Any) -> None:
        """
        Check what the configuration cannot say: that systemd passed the
        sockets the C{systemd:} listen strings ask for, and, unless only
        checking, that twistd's C{--pidfile} can be written and its C{--uid}
        exists, so that twistd does not stop later with a traceback.

        @param twistd: twistd's own options (this subcommand's parent).
        """
        from ._startup import passedSockets, pidfileError, systemdErrors, userError

        config: Config = self["demux"]
        if self["listen"]:
            where = "--listen"
        elif self["config"]:
            where = f"{self['config']}: listen"
        else:
            where = "listen"
        for error in systemdErrors(
            config.listen, where, passedSockets(), self["check"]
        ):
            _fail(error)
        if self["check"]:
            return
        problem = userError(twistd.get("uid"), twistd.get("gid"))
        if problem is None and not twistd.get("chroot"):
            problem = pidfileError(twistd.get("pidfile"))
        if problem is not None:
            _fail(problem)

    def _explain(self, reactor: Any) -> None:
        """
        C{--explain}: load the configuration as for serving, report on the
        capture and exit, starting nothing; a bad configuration is bad input
        (status 2), like a bad capture.
        """
        from ._explain import EXIT_BAD_INPUT, explainCommand

        self.failStatus = EXIT_BAD_INPUT
        try:
            config = self._load(reactor, matcherFactories())
        except DemuxError as e:
            _fail(str(e), EXIT_BAD_INPUT)
        raise SystemExit(
            explainCommand(
                config,
                self["explain"],
                self["stream"],
                self["flow"],
                self["capture-format"],
                self["explain-format"],
                sys.stdout,
                sys.stderr,
            )
        )

    failStatus = 1
    """The exit status of a mistake found while loading the configuration."""

    def _load(self, reactor: Any, factories: Any) -> Config:
        if self["routes"]:
            if self["config"]:
                _fail("give either --config or --route, not both", self.failStatus)
            data: dict[str, Any] = {
                "routes": [routeFromArgument(r) for r in self["routes"]],
            }
            for option, key, kind in [
                ("inspect-delay", "inspect_delay", float),
                ("max-peek", "max_peek", int),
                ("on-timeout", "on_timeout", str),
            ]:
                if self[option] is not None:
                    try:
                        data[key] = kind(self[option])
                    except ValueError:
                        _fail(
                            f"--{option} {self[option]!r} is not a {kind.__name__}",
                            self.failStatus,
                        )
            if not self["listen"]:
                _fail("--route needs at least one --listen", self.failStatus)
            return configFromDict(
                data, reactor, "command line", factories, self["listen"]
            )
        if self["config"]:
            return loadConfig(self["config"], reactor, factories, self["listen"])
        default = files("demux").joinpath("default.toml")
        with default.open("rb") as f:
            import tomllib

            data = tomllib.load(f)
        return configFromDict(
            data, reactor, "built-in demo configuration", factories, self["listen"]
        )


def _raiseFileLimit() -> None:
    """
    Raise the soft limit on open files to the hard limit, as HAProxy does,
    since every relayed connection holds two.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class DemuxService(Service):
    """
    What a running demux does besides listening: on SIGHUP it reloads its
    configuration for new connections, and when it is stopped it lets open
    connections finish for the configured grace period before closing them.

    @ivar reload: makes a new L{Config}, or raises L{DemuxError}; L{None}
        when there is no file to reload from.
    """

    def __init__(
        self,
        factory: DemuxFactory,
        config: Config,
        reload: Callable[[], Config] | None,
        reactor: Any,
    ) -> None:
        self.factory = factory
        self.config = config
        self.reloader = reload
        self.reactor = reactor
        self.workers: Any = None
        self.flows: Any = None
        self._previousHandler: Any = None
        # Active health checks run in every process that routes, as each
        # picks backends by its own view of them.
        self.health = HealthService(
            config.table, reactor, IHealthObserver(factory.observer, None)
        )

    def startService(self) -> None:
        super().startService()
        self.health.startService()
        self._previousHandler = signal.signal(signal.SIGHUP, self._onSignal)
        self.reactor.addSystemEventTrigger("after", "shutdown", self._exitCleanly)

    def _exitCleanly(self) -> None:
        """
        A stop asked for with SIGTERM is demux's ordinary way to stop, and
        ends with status 0 once open connections are drained, as HAProxy's
        and sslh's do; twistd would otherwise end by raising the signal again.
        """
        forgetExitSignal(self.reactor, signal.SIGTERM)

    def _onSignal(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """
        Load the configuration again; keep the old one if the new one is bad.
        """
        if self.reloader is None:
            log.warn("SIGHUP: nothing to reload (demux was not started with --config)")
            return
        try:
            config = self.reloader()
        except DemuxError as e:
            log.error(
                "reload failed, keeping the running configuration: {error}",
                error=str(e),
            )
            return
        if config.listen != self.config.listen:
            log.warn(
                "reload: listen changed to {new}; restart demux to listen there "
                "(still listening on {old})",
                new=", ".join(config.listen),
                old=", ".join(self.config.listen),
            )
        if config.metrics != self.config.metrics:
            log.warn(
                "reload: metrics changed to {new}; restart demux to serve them "
                "there (the counts carry on where they were: {old})",
                new=config.metrics,
                old=self.config.metrics,
            )
        self.config = config
        # Checked state is handed to the new targets before they route.
        self.health.setTable(config.table)
        self.factory.setTable(config.table)
        _logWarnings(config)
        if self.flows is not None and config.datagrams is not None:
            self.flows.setTable(config.datagrams)
        if self.workers is not None:
            self.workers.signal(signal.SIGHUP)
        log.info(
            "reloaded: {count} routes ({names})",
            count=len(config.table.routes),
            names=", ".join(r.name for r in config.table.routes),
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.health.stopService()
        if self._previousHandler is not None:
            signal.signal(signal.SIGHUP, self._previousHandler)
        return self.factory.drain(self.config.shutdownGrace)


class _ProcessService(MultiService):
    """
    Every service of one demux process; under twistd, also what gives twistd
    its log observer (L{demux._textlog}), since twistd asks its application
    for one only after the plugin's service has joined it.

    @ivar twistdOptions: twistd's own options, under twistd; L{None} when
        another program made the service.
    """

    def __init__(self, twistdOptions: Any) -> None:
        super().__init__()
        self.twistdOptions = twistdOptions

    def setServiceParent(self, parent: Any) -> None:
        if self.twistdOptions is not None:
            from ._textlog import offerTo

            offerTo(parent, self.twistdOptions)
        super().setServiceParent(parent)


def makeService(options: Options) -> IService:
    """
    One listening service per endpoint, all serving the same route table,
    and one more for the metrics port if the configuration has one.
    """
    from twisted.internet import reactor

    config: Config = options["demux"]
    _logWarnings(config)
    service = _ProcessService(getattr(options, "parent", None))
    observer = None
    if config.metrics is not None:
        from ._metrics import PrometheusObserver

        observer = PrometheusObserver()
    factory = DemuxFactory(config.table, reactor, observer)
    demuxService = DemuxService(factory, config, options.reloader, reactor)
    demuxService.setServiceParent(service)
    if observer is not None and config.metrics is not None:
        from ._status import metricsSite

        # The counts and the port stay as they are across reloads; the
        # status view shows the routes of the configuration now in use.
        site = metricsSite(
            observer, factory, reactor, lambda: demuxService.config.matchTables
        )
        _ListeningService(
            config.metrics, serverFromString(reactor, config.metrics), site
        ).setServiceParent(service)
    if config.datagrams is not None:
        from ._udp import FlowTable, IFlowObserver

        demuxService.flows = FlowTable(
            config.datagrams, reactor, IFlowObserver(observer, None)
        )
    listening = []
    for description in config.listen:
        udp = parseDatagramListen(description)
        if udp is not None:
            # UDP is served by this process only, not by --workers.
            from ._udp import DatagramPortService

            DatagramPortService(udp, demuxService.flows, reactor).setServiceParent(
                service
            )
            continue
        endpoint, proxied = listenSpec(description)
        listener = _ListeningService(
            description,
            serverFromString(reactor, endpoint),
            factory.proxied() if proxied else factory,
        )
        listener.setServiceParent(service)
        listening.append((listener, proxied))
    if options["workers"] > 1:
        from ._workers import WorkerPool

        pool = WorkerPool(
            options["workers"] - 1,
            options.arguments,
            listening,
            reactor,
            config.shutdownGrace,
        )
        pool.setServiceParent(service)
        demuxService.workers = pool
    return service


def _logWarnings(config: Config) -> None:
    """
    Log what in C{config} can never take effect, as C{--check} prints it.
    """
    for warning in lint(config.table, config.matchTables):
        log.warn("configuration warning: {warning}", warning=warning)


def _withoutWorkers(arguments: list[str]) -> list[str]:
    """
    C{arguments} less any C{--workers}/C{-w} option.
    """
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in ("--workers", "-w"):
            skip = True
        elif not argument.startswith(("--workers=", "-w")):
            kept.append(argument)
    return kept


class _ListeningService(SynchronousEndpointService):
    """
    Listens on one endpoint; a port that cannot be had (in use, not
    permitted) stops start-up with one line instead of a traceback.
    """

    def __init__(self, description: str, endpoint: Any, factory: Any) -> None:
        super().__init__(endpoint, factory)
        self.description = description
        self.port: Any = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            _fail(f"cannot listen on {self.description}: {e}")

        def keep(port: Any) -> Any:
            self.port = port
            return port

        self.whenListening().addCallback(keep)
