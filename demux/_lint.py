"""
Warnings about a route table: the parts of a valid configuration that can
never take effect.

They are not errors (the configuration does what it says, and a reload that
adds a route in front of a catch-all should not stop demux), but each is
almost always a mistake, so C{--check} prints them and start-up logs them.
The analysis is a pure function of the table, and of the C{match} tables as
written where the configuration file gave them.

What can be known without running a connection rests on the matcher
contract (L{demux.IMatcher}): a verdict is a function of the bytes, and
L{NEED_MORE} is allowed only while more bytes could change it.  So a
matcher's verdict on no bytes at all says what it will do to every
connection: L{MATCH} there means it takes every connection that reaches it
(a catch-all), L{NO_MATCH} there means it refuses every one and never waits,
and only a matcher that says L{NEED_MORE} there can ever keep a connection
waiting, which is the only way to C{on_timeout}.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._interfaces import MATCH, NEED_MORE, IMatcher, Verdict
from ._peek import Peek
from ._routes import Route, RouteTable, SourceFilter


def _onNothing(matcher: IMatcher) -> Verdict | None:
    """
    What C{matcher} says of a connection that has sent nothing, or L{None}
    if it fails (then nothing is assumed of it).
    """
    try:
        return matcher.match(Peek())
    except Exception:
        return None


def _admitsEveryone(sources: SourceFilter | None) -> bool:
    return sources is None or (not sources.allow and not sources.deny)


def _admitsAllOf(earlier: SourceFilter | None, later: SourceFilter | None) -> bool:
    """
    Whether every client C{later} admits is admitted by C{earlier}: only the
    cases that need no network arithmetic, so that a warning is never wrong.
    """
    return _admitsEveryone(earlier) or earlier == later


def _sameMatch(
    earlier: Route, later: Route, matchTables: Mapping[str, object]
) -> bool:
    """
    Whether two routes' matchers judge every connection alike: the same
    C{match} table as written, or equal matcher values (matchers are frozen
    C{attrs} classes, so equal values are the same matcher and options).
    """
    if earlier.name in matchTables and later.name in matchTables:
        if matchTables[earlier.name] == matchTables[later.name]:
            return True
    try:
        return type(earlier.matcher) is type(later.matcher) and bool(
            earlier.matcher == later.matcher
        )
    except Exception:
        return False


def lint(
    table: RouteTable, matchTables: Mapping[str, object] | None = None
) -> list[str]:
    """
    One line for each thing in C{table} that can never take effect, in the
    order of the routes:

      - a route after a catch-all, a route without C{allow} or C{deny}
        whose matchers match a connection that has sent nothing
        (C{match.any}, or any matcher that matches everything), since every
        connection that reaches the catch-all is taken by it;
      - a route after one with the same matchers and options that admits
        every client it does, since the earlier one takes every connection
        the later one would;
      - an C{on_timeout} that no connection can reach: a connection goes
        there only while a route is waiting for bytes, and if no route
        before the first catch-all ever waits, every connection is decided
        the moment it opens.

    The C{on_timeout} route is not warned about as a route after a
    catch-all or a shadowed one while C{on_timeout} can be reached: it is
    taken through C{on_timeout}.

    @param matchTables: each route's C{match} table as written, by route
        name (L{demux.Config.matchTables}), to compare matchers that have no
        value equality of their own.
    """
    tables: Mapping[str, object] = matchTables or {}
    warnings: list[str] = []
    catchAll: Route | None = None
    anyWaits = False
    for route in table.routes:
        if catchAll is not None:
            break
        verdict = _onNothing(route.matcher)
        if verdict is NEED_MORE or verdict is None:
            anyWaits = True
        if verdict is MATCH and _admitsEveryone(route.sources):
            catchAll = route
    timeoutReachable = table.onTimeout is not None and anyWaits
    if table.onTimeout is not None and not timeoutReachable:
        if catchAll is not None:
            why = (
                f"no route before {catchAll.name!r}, which matches every "
                "connection, ever waits for bytes"
            )
        else:
            why = "no route ever waits for bytes"
        warnings.append(
            f"on_timeout {table.onTimeout!r} can never be taken: {why}, so "
            "every connection is decided as soon as it opens"
        )
    seenCatchAll = False
    for index, route in enumerate(table.routes):
        if timeoutReachable and route.name == table.onTimeout:
            continue
        if seenCatchAll and catchAll is not None:
            warnings.append(
                f"route {route.name!r} can never be taken: route "
                f"{catchAll.name!r} before it matches every connection"
            )
            continue
        if route is catchAll:
            seenCatchAll = True
        for earlier in table.routes[:index]:
            if _sameMatch(earlier, route, tables) and _admitsAllOf(
                earlier.sources, route.sources
            ):
                warnings.append(
                    f"route {route.name!r} can never be taken: route "
                    f"{earlier.name!r} before it has the same matchers and "
                    "options and admits every client it does"
                )
                break
    return warnings
