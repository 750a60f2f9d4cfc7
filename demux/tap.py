"""
C{twistd demux}: options and service.  Thin glue: the configuration is
loaded and checked while the options are parsed, before anything listens, so
a mistake stops start-up with one line naming its place.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from ._config import Config, configFromDict, loadConfig, routeFromArgument
from ._errors import DemuxError
from ._plugins import matcherFactories
from ._protocol import DemuxFactory


def _fail(message: str) -> None:
    """
    Stop with one line on standard error and a non-zero status, instead of
    twistd's usage text or a traceback.
    """
    sys.stderr.write(f"demux: error: {message}\n")
    raise SystemExit(1)


class Options(usage.Options):
    """
    The options of C{twistd demux}.
    """

    synopsis = "[--config FILE | --listen ENDPOINT --route ROUTE ...] [--check]"
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
    ]
    optFlags = [
        ["check", None, "Check the configuration, print a summary and exit."],
        ["list-matchers", None, "List every installed matcher and exit."],
    ]

    def __init__(self) -> None:
        super().__init__()
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

    def postOptions(self) -> None:
        from twisted.internet import reactor

        try:
            factories = matcherFactories()
        except DemuxError as e:
            _fail(str(e))
        if self["list-matchers"]:
            for name, factory in factories.items():
                print(f"{name:16} {factory.summary}")
            raise SystemExit(0)
        try:
            self["demux"] = self._load(reactor, factories)
        except DemuxError as e:
            _fail(str(e))
        if self["check"]:
            config: Config = self["demux"]
            names = ", ".join(route.name for route in config.table.routes)
            print(
                f"configuration OK: {len(config.table.routes)} routes ({names}); "
                f"listening on {', '.join(config.listen)}"
            )
            raise SystemExit(0)

    def _load(self, reactor: Any, factories: Any) -> Config:
        if self["routes"]:
            if self["config"]:
                _fail("give either --config or --route, not both")
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
                        _fail(f"--{option} {self[option]!r} is not a {kind.__name__}")
            if not self["listen"]:
                _fail("--route needs at least one --listen")
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


def makeService(options: Options) -> IService:
    """
    One listening service per endpoint, all serving the same route table.
    """
    from twisted.internet import reactor

    config: Config = options["demux"]
    service = MultiService()
    factory = DemuxFactory(config.table, reactor)  # type: ignore[arg-type]
    for description in config.listen:
        strports.service(description, factory).setServiceParent(service)
    return service
