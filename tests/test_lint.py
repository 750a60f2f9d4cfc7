"""
L{demux._lint.lint}: the warnings about configuration that can never take
effect, from configuration tables as a user writes them; and that
C{--check} prints them and start-up logs them, from a real C{twistd}.
"""

from __future__ import annotations

import ipaddress
import subprocess
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from demux import NO_MATCH, LocalTarget, Route, RouteTable, SourceFilter, configFromDict
from demux._lint import lint

from ._fakes import RecordingFactory, ScriptedMatcher
from ._process import runDemux, twistdCommand
from .test_startup import temporaryDirectory


def route(name: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "backend": "tcp:127.0.0.1:1"}
    data.update(extra)
    return data


def warnings(*routes: dict[str, Any], **top: Any) -> list[str]:
    data: dict[str, Any] = {"listen": ["tcp:0"], "routes": list(routes)}
    data.update(top)
    config = configFromDict(data, MemoryReactorClock())
    return lint(config.table, config.matchTables)


SSH = {"ssh": {}}
ANY: dict[str, Any] = {"any": {}}


class CatchAllTests(SynchronousTestCase):
    def test_routeAfterAny(self) -> None:
        self.assertEqual(
            warnings(
                route("ssh", match=SSH),
                route("rest", match=ANY),
                route("web", match={"http": {}}),
                route("late", match={"tls": {}}),
            ),
            [
                "route 'web' can never be taken: route 'rest' before it "
                "matches every connection",
                "route 'late' can never be taken: route 'rest' before it "
                "matches every connection",
            ],
        )

    def test_matcherThatMatchesEverything(self) -> None:
        """
        Any matcher that matches before a byte has arrived is a catch-all,
        not only C{any}.
        """
        [warning] = warnings(
            route("all", match={"regex": ".*"}), route("ssh", match=SSH)
        )
        self.assertEqual(
            warning,
            "route 'ssh' can never be taken: route 'all' before it matches "
            "every connection",
        )

    def test_catchAllWithSources(self) -> None:
        """
        A catch-all for some clients only leaves the later routes to the
        others.
        """
        self.assertEqual(
            warnings(
                route("inside", match=ANY, allow=["10.0.0.0/8"]),
                route("ssh", match=SSH),
            ),
            [],
        )

    def test_onTimeoutRouteAfterCatchAll(self) -> None:
        """
        The on_timeout route after the catch-all is taken through
        on_timeout, so it is no mistake.
        """
        self.assertEqual(
            warnings(
                route("web", match={"http": {}}),
                route("rest", match=ANY),
                route("ssh", match=SSH),
                on_timeout="ssh",
            ),
            [],
        )

    def test_lastCatchAll(self) -> None:
        """
        The sslh-style configuration is clean.
        """
        self.assertEqual(
            warnings(
                route("ssh", match=SSH),
                route("four", match={"regex": "^foob"}),
                route("rest", match=ANY),
                on_timeout="ssh",
            ),
            [],
        )


class ShadowTests(SynchronousTestCase):
    def test_sameMatchers(self) -> None:
        [warning] = warnings(
            route("one", match={"tls": {"sni": ["a.example"]}}),
            route("two", match={"tls": {"sni": ["a.example"]}}, backend="tcp:h:2"),
        )
        self.assertEqual(
            warning,
            "route 'two' can never be taken: route 'one' before it has the "
            "same matchers and options and admits every client it does",
        )

    def test_differentOptions(self) -> None:
        self.assertEqual(
            warnings(
                route("one", match={"tls": {"sni": ["a.example"]}}),
                route("two", match={"tls": {"sni": ["b.example"]}}),
            ),
            [],
        )

    def test_sameSources(self) -> None:
        self.assertEqual(
            len(
                warnings(
                    route("one", match=SSH, allow=["10.0.0.0/8"]),
                    route("two", match=SSH, allow=["10.0.0.0/8"]),
                )
            ),
            1,
        )

    def test_earlierAdmitsEveryone(self) -> None:
        self.assertEqual(
            len(warnings(route("one", match=SSH), route("two", match=SSH, deny=["10.0.0.0/8"]))),
            1,
        )

    def test_differentSources(self) -> None:
        """
        A later route with the same matchers for clients the earlier one
        does not admit is how routes are split by source.
        """
        self.assertEqual(
            warnings(
                route("inside", match=SSH, allow=["10.0.0.0/8"]),
                route("outside", match=SSH),
            ),
            [],
        )

    def test_matcherValuesFromPython(self) -> None:
        """
        A table built in Python, with no match tables, is compared by its
        matcher values.
        """
        f = RecordingFactory()
        table = RouteTable(
            [
                Route("one", ScriptedMatcher(3), LocalTarget(f, "one")),
                Route("two", ScriptedMatcher(3), LocalTarget(f, "two")),
                Route("three", ScriptedMatcher(4), LocalTarget(f, "three")),
            ]
        )
        [warning] = lint(table)
        self.assertIn("route 'two' can never be taken: route 'one'", warning)


class OnTimeoutTests(SynchronousTestCase):
    def test_catchAllFirst(self) -> None:
        """
        With a catch-all first, every connection is decided as it opens.
        """
        [first, second] = warnings(
            route("rest", match=ANY),
            route("ssh", match=SSH),
            on_timeout="ssh",
        )
        self.assertEqual(
            first,
            "on_timeout 'ssh' can never be taken: no route before 'rest', "
            "which matches every connection, ever waits for bytes, so every "
            "connection is decided as soon as it opens",
        )
        self.assertIn("route 'ssh' can never be taken: route 'rest'", second)

    def test_onTimeoutIsTheCatchAll(self) -> None:
        [warning] = warnings(route("rest", match=ANY), on_timeout="rest")
        self.assertIn("on_timeout 'rest' can never be taken", warning)

    def test_noRouteWaits(self) -> None:
        """
        Routes that decide on no bytes at all never wait, whatever
        C{inspect_delay} says.
        """
        f = RecordingFactory()
        table = RouteTable(
            [Route("no", ScriptedMatcher(0, NO_MATCH), LocalTarget(f, "no"))],
            onTimeout="no",
        )
        self.assertEqual(
            lint(table),
            [
                "on_timeout 'no' can never be taken: no route ever waits for "
                "bytes, so every connection is decided as soon as it opens"
            ],
        )

    def test_waitingRouteWithSources(self) -> None:
        """
        A route that waits for some clients only still makes on_timeout
        reachable for them.
        """
        f = RecordingFactory()
        table = RouteTable(
            [
                Route(
                    "inside",
                    ScriptedMatcher(4),
                    LocalTarget(f, "inside"),
                    SourceFilter(allow=(ipaddress.ip_network("10.0.0.0/8"),)),
                ),
                Route("rest", ScriptedMatcher(0), LocalTarget(f, "rest")),
            ],
            onTimeout="inside",
        )
        self.assertEqual(lint(table), [])


CONFIG = """\
listen = ["tcp:{port}:interface=127.0.0.1"]
on_timeout = "ssh"

[[routes]]
name = "rest"
match.any = {}
backend = "tcp:127.0.0.1:1"

[[routes]]
name = "ssh"
match.ssh = {}
backend = "tcp:127.0.0.1:1"
"""


class TwistdTests(SynchronousTestCase):
    """
    C{--check} prints the warnings without failing; start-up logs them.
    """

    def test_check(self) -> None:
        path = temporaryDirectory(self) / "demux.toml"
        path.write_text(CONFIG.replace("{port}", "0"))
        result = subprocess.run(
            twistdCommand("-n", "--pidfile=", "demux", "--config", str(path), "--check"),
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertTrue(lines[0].startswith("configuration OK: 2 routes"), lines)
        self.assertEqual(
            lines[1:],
            [
                "demux: warning: on_timeout 'ssh' can never be taken: no route "
                "before 'rest', which matches every connection, ever waits for "
                "bytes, so every connection is decided as soon as it opens",
                "demux: warning: route 'ssh' can never be taken: route 'rest' "
                "before it matches every connection",
            ],
        )

    def test_startUp(self) -> None:
        with runDemux(CONFIG) as demux:
            log = demux.waitForLog("configuration warning: route 'ssh'")
        self.assertEqual(log.count("configuration warning: "), 2, log)


class ReloadTests(SynchronousTestCase):
    """
    A reload logs the new configuration's warnings, as start-up does.
    """

    def test_reload(self) -> None:
        from twisted.logger import LogEvent, globalLogPublisher

        from demux import DemuxFactory
        from demux.tap import DemuxService

        reactor = MemoryReactorClock()

        def load(*routes: dict[str, Any]) -> Any:
            return configFromDict({"listen": ["tcp:0"], "routes": list(routes)}, reactor)

        first = load(route("ssh", match=SSH))
        second = load(route("rest", match=ANY), route("ssh", match=SSH))
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        factory = DemuxFactory(first.table, reactor)
        DemuxService(factory, first, lambda: second, reactor).reload()
        warned = [e["warning"] for e in events if "warning" in e]
        self.assertEqual(
            warned,
            ["route 'ssh' can never be taken: route 'rest' before it matches every connection"],
        )
