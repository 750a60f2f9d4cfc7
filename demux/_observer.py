"""
What happens to connections, told to whoever counts it (the metrics, the
status page), so that counting lives in one place and the protocol and the
relay only report.
"""

from __future__ import annotations

from zope.interface import Interface, implementer


class IConnectionObserver(Interface):
    """
    Told of each step of each connection.  Calls come from the reactor
    thread, on the hot path: an observer must be quick and must not raise.
    """

    def accepted() -> None:
        """
        A connection was accepted and is waiting for a decision.
        """

    def refused(reason: str) -> None:
        """
        A connection was closed without a route.  C{reason} is one of
        C{"limit"}, C{"no match"}, C{"timeout"} (undecided when the wait
        ended), C{"proxy header"} (a missing or bad PROXY header) and
        C{"client closed"} (gone before a decision).
        """

    def routed(route: str, decideSeconds: float) -> None:
        """
        A connection took C{route} after C{decideSeconds} of inspection.
        """

    def backendConnected(route: str, backend: str, connectSeconds: float) -> None:
        """
        A backend of C{route} accepted the connection.
        """

    def backendFailed(route: str, backend: str) -> None:
        """
        A backend of C{route} refused or did not answer in time.
        """

    def closed(route: str, bytesUp: int, bytesDown: int, seconds: float) -> None:
        """
        A routed connection ended, having moved C{bytesUp} bytes from the
        client and C{bytesDown} to it (both L{0} where the target does not
        count them).
        """


@implementer(IConnectionObserver)
class NullObserver:
    """
    Counts nothing: the observer when no metrics are configured.
    """

    def accepted(self) -> None:
        pass

    def refused(self, reason: str) -> None:
        pass

    def routed(self, route: str, decideSeconds: float) -> None:
        pass

    def backendConnected(self, route: str, backend: str, connectSeconds: float) -> None:
        pass

    def backendFailed(self, route: str, backend: str) -> None:
        pass

    def closed(self, route: str, bytesUp: int, bytesDown: int, seconds: float) -> None:
        pass
