"""
The route table, and the one function that decides a connection's route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from attrs import field, frozen
from zope.interface import implementer

from ._errors import ConfigError
from ._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, ITarget, Verdict
from ._peek import Peek

DEFAULT_INSPECT_DELAY = 5.0
DEFAULT_MAX_PEEK = 16 * 1024


@implementer(IMatcher)
@frozen
class AllOf:
    """
    Several matchers that must all match: what a route with more than one key
    under C{match} means.
    """

    matchers: tuple[IMatcher, ...]

    def match(self, peek: Peek) -> Verdict:
        verdict = MATCH
        for matcher in self.matchers:
            v = matcher.match(peek)
            if v is NO_MATCH:
                return NO_MATCH
            if v is NEED_MORE:
                verdict = NEED_MORE
        return verdict

    def describe(self, peek: Peek) -> str:
        return " ".join(m.describe(peek) for m in self.matchers)


@frozen
class Route:
    """
    One line of the route table.

    @ivar name: unique within its table, used in logs and metrics.
    @ivar matcher: decides whether a connection is this route's.
    @ivar target: where a connection that took this route goes.
    @ivar sources: which client addresses may take this route; L{None}:
        any.
    """

    name: str
    matcher: IMatcher
    target: ITarget
    sources: SourceFilter | None = None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@frozen
class SourceFilter:
    """
    Allow and deny lists of networks for a route, as HAProxy's C{src} ACLs
    are used: a denied address never takes the route; if there is an allow
    list, only addresses on it do.  A client with no IP address (a UNIX
    socket) passes a deny list but no allow list.
    """

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()

    def admits(self, address: IPAddress | None) -> bool:
        if address is None:
            return not self.allow
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        for network in self.deny:
            if address in network:
                return False
        if not self.allow:
            return True
        return any(address in network for network in self.allow)


def _routeTuple(routes: Iterable[Route]) -> tuple[Route, ...]:
    return tuple(routes)


def _checkRoutes(
    instance: RouteTable, attribute: object, routes: tuple[Route, ...]
) -> None:
    seen: set[str] = set()
    for route in routes:
        if route.name in seen:
            raise ConfigError(f"two routes are named {route.name!r}")
        seen.add(route.name)


def _waitsForBytes(routes: tuple[Route, ...]) -> bool:
    """
    Whether no connection can be decided before its first byte, whatever
    its address: a route that every client reaches needs bytes, and no route
    before it matches (or fails) on none.  Matchers are pure functions of
    the bytes, so this holds for every connection the table decides, and
    the protocol need not ask the routes about a connection that has said
    nothing yet.
    """
    nothing = Peek()
    for route in routes:
        try:
            verdict = route.matcher.match(nothing)
        except Exception:
            return False
        if verdict is MATCH:
            return False
        if verdict is NEED_MORE and route.sources is None:
            return True
    return False


@frozen
class RouteTable:
    """
    Everything that decides where a connection goes, as one immutable value.

    @ivar routes: tried in order; the first that matches wins.
    @ivar inspectDelay: seconds a connection may take to be decided.
    @ivar maxPeek: the most bytes read before deciding.
    @ivar onTimeout: the name of the route taken by a connection still
        undecided when the delay or the byte cap runs out, before any later
        route that matches; L{None}: the routes still waiting count as no
        (see L{decide}).
    @ivar maxConnections: the most connections open at once, decided or
        not; more are accepted and closed at once.  L{None}: no cap.
    @ivar maxConnectionsPerSource: the most open at once from one source
        address.  L{None}: no cap.
    @ivar maxUndecided: the most connections waiting for a decision at once,
        so that clients that send slowly or nothing cannot crowd out the
        rest.  L{None}: no cap beyond C{maxConnections}.
    @ivar logConnections: whether to log each routed connection (its
        decision and its end); refusals and errors are always logged.
    @ivar logDecisions: whether a routed connection's decision has a line
        of its own, when it is made (worth it for long connections, whose
        closing line may come hours later); if not (the default), it goes
        into the connection's closing line: one line per connection, not
        two.
    """

    routes: tuple[Route, ...] = field(converter=_routeTuple, validator=_checkRoutes)
    inspectDelay: float = DEFAULT_INSPECT_DELAY
    maxPeek: int = DEFAULT_MAX_PEEK
    onTimeout: str | None = None
    maxConnections: int | None = None
    maxConnectionsPerSource: int | None = None
    maxUndecided: int | None = None
    logConnections: bool = True
    logDecisions: bool = False
    filtersSources: bool = field(init=False, default=False)
    _waits: bool | None = field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Whether any route looks at the client's address: only then is it
        # parsed, once per connection.
        object.__setattr__(
            self, "filtersSources", any(r.sources is not None for r in self.routes)
        )
        if self.inspectDelay <= 0:
            raise ConfigError("inspect_delay must be a positive number of seconds")
        if self.maxPeek < 1:
            raise ConfigError("max_peek must be at least 1 byte")
        for name in ("maxConnections", "maxConnectionsPerSource", "maxUndecided"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.onTimeout is not None and self.route(self.onTimeout) is None:
            raise ConfigError(f"on_timeout names no route: {self.onTimeout!r}")

    def waitsForBytes(self) -> bool:
        """
        Whether L{decide} says wait (L{None}) for every connection that has
        sent nothing yet, whatever its address; asked of the routes once,
        by the first connection that wants to know.
        """
        waits = self._waits
        if waits is None:
            waits = _waitsForBytes(self.routes)
            object.__setattr__(self, "_waits", waits)
        return waits

    def route(self, name: str) -> Route | None:
        """
        The route called C{name}, if any.
        """
        for route in self.routes:
            if route.name == name:
                return route
        return None


@frozen
class Decision:
    """
    Where a connection goes, and why, for the log.

    @ivar route: the route taken, or L{None} if the connection is refused.
    @ivar reason: what the winning matcher saw, or why nothing matched.
    @ivar kind: for a refusal, its kind for metrics: C{"no match"} (every
        route said no) or C{"timeout"} (undecided when the wait ended).
    """

    route: Route | None
    reason: str
    kind: str = ""


def decide(
    table: RouteTable,
    peek: Peek,
    final: bool,
    source: IPAddress | None = None,
    failures: list[tuple[str, Exception]] | None = None,
    clientDone: bool = False,
) -> Decision | None:
    """
    Decide a connection's route from its first bytes, or say it is too soon.

    A route wins only when it matches and every route before it has said no:
    while an earlier route still needs bytes, the answer is L{None} (wait).

    C{final} says the wait is over: the delay ran out, the byte cap was
    reached, or (C{clientDone}) the client stopped sending.  A connection
    that some route is still waiting for, before any route that matches, is
    I{undecided}.  When the wait ended on demux's side (the delay or the
    cap), an undecided connection goes to the table's C{onTimeout} route if
    it has one, before any later route that matches: it is a client that
    waits for the server to speak first, or one that stopped short of what a
    route needs.  Without C{onTimeout}, or when the client stopped sending
    (no more bytes can come, so a route still waiting has in effect said
    no), the routes still waiting count as no, and the first route after
    them that matches wins.

    A connection every route has refused goes to the first route that
    matches (a catch-all) or is refused, final or not.  A route whose
    C{sources} do not admit C{source}, the client's address, counts as no.
    """
    undecided = False
    timeoutRoute = None
    if final and not clientDone and table.onTimeout is not None:
        timeoutRoute = table.route(table.onTimeout)
    for route in table.routes:
        if route.sources is not None and not route.sources.admits(source):
            continue
        try:
            verdict = route.matcher.match(peek)
        except Exception as e:
            if failures is not None:
                failures.append((route.name, e))
            continue
        if verdict is MATCH:
            try:
                reason = route.matcher.describe(peek)
            except Exception as e:
                if failures is not None:
                    failures.append((route.name, e))
                reason = "matched"
            return Decision(route, reason)
        if verdict is NEED_MORE:
            if not final:
                return None
            if timeoutRoute is not None:
                return Decision(
                    timeoutRoute, f"undecided ({route.name} waits), on_timeout"
                )
            undecided = True
    if undecided and clientDone:
        return Decision(None, "undecided when the client stopped sending", "no match")
    if undecided:
        return Decision(None, "undecided when the wait ended", "timeout")
    return Decision(None, "no route matched", "no match")


def matcherFor(matchers: Sequence[IMatcher]) -> IMatcher:
    """
    One matcher for a route's list of matchers: itself if there is one.
    """
    if len(matchers) == 1:
        return matchers[0]
    return AllOf(tuple(matchers))
