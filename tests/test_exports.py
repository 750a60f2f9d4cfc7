"""
The public names are pinned: changing them is a decision, not an accident.
"""

from twisted.trial.unittest import SynchronousTestCase

import demux
import demux.matchers


class ExportsTests(SynchronousTestCase):
    def test_demux(self) -> None:
        self.assertEqual(
            sorted(demux.__all__),
            sorted(
                [
                    "AllOf", "Backend", "BackendTarget", "ClientHello",
                    "ConnectionInfo", "IConnectionObserver", "NullObserver",
                    "RequestHead", "SourceFilter", "isGrease", "parseClientHello",
                    "parseRequestHead", "Config", "ConfigError", "Decision",
                    "DemuxError", "DemuxFactory", "DemuxProtocol",
                    "DuplicateMatcherError", "ENTRY_POINT_GROUP", "IMatcher",
                    "IMatcherFactory", "ITarget", "LocalTarget", "MATCH",
                    "MatcherConfigError", "NEED_MORE", "NO_MATCH", "Peek", "Route",
                    "RouteTable", "UnknownMatcherError", "Verdict", "configFromDict",
                    "decide", "findMatcherFactory", "loadConfig", "matcherFactories",
                    "routeFromArgument",
                    "HealthCheck", "HealthService", "IHealthCheck", "checkForMatch",
                    "HTTPForwardTarget", "RoutesTarget", "ServerTLSOptions",
                    "TLSTarget",
                    "DatagramPeek", "transportsOf",
                ]
            ),
        )
        for name in demux.__all__:
            self.assertTrue(hasattr(demux, name), name)

    def test_matchers(self) -> None:
        """
        Every built-in matcher's factory is public, under the name its
        module gives it.
        """
        for name in demux.matchers.__all__:
            self.assertTrue(hasattr(demux.matchers, name), name)
        factories = {
            getattr(demux.matchers, n).name
            for n in demux.matchers.__all__
            if n.endswith("Factory")
        }
        self.assertEqual(factories, set(demux.matcherFactories()))

    def test_testing(self) -> None:
        """
        demux.testing's public names, the fakes third parties test their
        matchers and targets with included; the fakes provide what they
        stand in for.
        """
        from twisted.internet.interfaces import IStreamClientEndpoint
        from zope.interface.verify import verifyObject

        import demux.testing

        self.assertEqual(
            sorted(demux.testing.__all__),
            [
                "FakeAttempt", "FakeEndpoint", "HalfCloseTransport",
                "ScriptedMatcher", "assertConsistent", "clientHello",
                "datagramVerdictOf", "releasePort", "reservePort", "splits", "startsWith", "verdictOf",
            ],
        )
        for name in demux.testing.__all__:
            self.assertTrue(hasattr(demux.testing, name), name)
        self.assertTrue(verifyObject(demux.IMatcher, demux.testing.ScriptedMatcher(1)))
        self.assertTrue(
            verifyObject(IStreamClientEndpoint, demux.testing.FakeEndpoint())
        )
