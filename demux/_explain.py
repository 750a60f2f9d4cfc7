"""
C{--explain}: what the route table makes of a connection's first bytes, route
by route, without starting anything.

L{explain} is a pure function from a route table and a capture to an
L{Explanation}; L{formatText} and L{formatJSON} render one.  The decision is
always the real L{demux._routes.decide}, so the report says what a running
demux would do, whatever its rules are today.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from attrs import field, frozen

from ._capture import Capture
from ._clienthello import TLS_VERSIONS, ClientHello, parseClientHello
from ._httphead import RequestHead, RequestLine, parseRequestHead, parseRequestLine
from ._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, Verdict
from ._peek import Peek
from ._routes import AllOf, Decision, IPAddress, Route, RouteTable, decide
from .matchers._options import helloNames, logSafe
from .matchers._prefix import PrefixMatcher
from .matchers._tls import TLSMatcher

EXIT_ROUTED = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_INCONSISTENT = 3
"""
The exit status when the byte-at-a-time replay decides otherwise than the
whole capture: a matcher that breaks its contract, a bug to report, told
apart from a refusal (1) and from bad input (2).
"""


@frozen
class RouteReport:
    """
    What one route made of the whole capture.

    @ivar name: the route's name.
    @ivar target: its target's description (a backend's endpoint string).
    @ivar match: its C{match} table as written, or C{""} if not known.
    @ivar verdict: its matcher's verdict on every byte of the capture.
    @ivar reason: the matcher's own C{describe()} when it matched.
    @ivar saw: what the matcher looked at: each shared parse it asked the
        peek for, summarised, or the first bytes if it asked for none.
    @ivar needs: for L{NEED_MORE}, the fewest bytes in all it needs before
        it could decide, if that can be said; L{None} if it cannot.
    @ivar sources: the route's C{sources} filter as text, or L{None}.
    @ivar admitted: whether C{sources} admits the capture's client;
        L{None} when the route has no filter.
    @ivar failure: the error its matcher raised, which L{decide} counts as
        no match.
    """

    name: str
    target: str
    match: str
    verdict: Verdict | None
    reason: str | None
    saw: tuple[str, ...]
    needs: int | None
    sources: str | None
    admitted: bool | None
    failure: str | None = None


@frozen
class Replay:
    """
    The capture fed to L{decide} one byte at a time, as a slow client's
    connection would be.

    @ivar decision: where it went.
    @ivar after: how many bytes had arrived when it was decided.
    @ivar final: whether it was decided only when the wait ended (the
        capture ran out undecided, or the byte cap was reached).
    """

    decision: Decision
    after: int
    final: bool


@frozen
class Explanation:
    """
    The whole report.

    @ivar capture: the bytes and what is known of their source.
    @ivar sourceNote: how the client's address was taken into account.
    @ivar routes: one report per route, in the table's order.
    @ivar now: L{decide} on the whole capture, not final: L{None} while a
        route still waits for bytes.
    @ivar atDeadline: L{decide} on the whole capture, final: what happens
        at C{inspect_delay} if the client sends nothing more.
    @ivar replay: the byte-at-a-time replay.
    @ivar inspectDelay: the table's C{inspect_delay}.
    @ivar maxPeek: the table's C{max_peek}.
    """

    capture: Capture
    sourceNote: str
    routes: tuple[RouteReport, ...]
    now: Decision | None
    atDeadline: Decision
    replay: Replay
    inspectDelay: float
    maxPeek: int

    @property
    def outcome(self) -> Decision:
        """
        Where the connection goes: decided on these bytes, or else at the
        deadline.
        """
        return self.now if self.now is not None else self.atDeadline

    @property
    def consistent(self) -> bool:
        """
        Whether the byte-at-a-time replay went where the whole capture did.
        """
        return _routeName(self.replay.decision) == _routeName(self.outcome)

    @property
    def exitCode(self) -> int:
        """
        0 when a route takes the connection, 1 when it is refused, 3 when
        the replay disagrees.
        """
        if not self.consistent:
            return EXIT_INCONSISTENT
        return EXIT_ROUTED if self.outcome.route is not None else EXIT_REFUSED


@frozen
class ExplainOptions:
    """
    What L{explain} needs besides the table and the capture.

    @ivar matchTables: each route's C{match} table as written, by name, to
        show the route as its author wrote it.
    """

    matchTables: Mapping[str, object] = field(factory=dict)


def _routeName(decision: Decision | None) -> str | None:
    if decision is None or decision.route is None:
        return None
    return decision.route.name


class _WatchedPeek(Peek):
    """
    A view of a shared L{Peek} that records which parses a matcher asks for:
    the parses themselves stay in (and come from) the shared view's cache,
    so nothing is parsed twice for the report.
    """

    __slots__ = ("asked",)

    def __init__(self, shared: Peek) -> None:
        super().__init__(shared.data)
        self._parses = shared._parses
        self.asked: list[Callable[[bytes], object]] = []

    def parse(self, parser: Any) -> Any:
        if parser not in self.asked:
            self.asked.append(parser)
        return super().parse(parser)


def explain(
    table: RouteTable, capture: Capture, options: ExplainOptions = ExplainOptions()
) -> Explanation:
    """
    Explain what C{table} does with C{capture}.
    """
    data = capture.data
    source = capture.source
    peek = Peek(data)
    reports = tuple(
        _routeReport(route, peek, source, options) for route in table.routes
    )
    now = decide(table, peek, len(peek) >= table.maxPeek, source)
    atDeadline = decide(table, peek, True, source)
    assert atDeadline is not None
    return Explanation(
        capture,
        _sourceNote(table, capture),
        reports,
        now,
        atDeadline,
        replay(table, data, source),
        table.inspectDelay,
        table.maxPeek,
    )


def replay(table: RouteTable, data: bytes, source: IPAddress | None = None) -> Replay:
    """
    Feed C{data} to L{decide} a byte at a time, as L{DemuxProtocol} would
    with a client that sends one byte per segment: a decision is asked for
    before the first byte, after each one (final once C{max_peek} bytes are
    in) and, if none came, when the capture has run out (final, as at the
    deadline).
    """
    peek = Peek()
    decision = decide(table, peek, False, source)
    if decision is not None:
        return Replay(decision, 0, False)
    for i in range(len(data)):
        peek = peek.extended(data[i : i + 1])
        final = len(peek) >= table.maxPeek
        decision = decide(table, peek, final, source)
        if decision is not None:
            return Replay(decision, len(peek), final)
    decision = decide(table, peek, True, source)
    assert decision is not None
    return Replay(decision, len(peek), True)


def _sourceNote(table: RouteTable, capture: Capture) -> str:
    if capture.client is not None:
        return f"client {capture.client} (from the capture)"
    if table.filtersSources:
        return (
            "no client address in a raw capture: routes with sources are "
            "judged as for a client without an IP address (it passes a deny "
            "list, never an allow list)"
        )
    return "no client address in a raw capture (no route filters on it)"


def _routeReport(
    route: Route,
    peek: Peek,
    source: IPAddress | None,
    options: ExplainOptions,
) -> RouteReport:
    watched = _WatchedPeek(peek)
    verdict: Verdict | None
    failure = reason = None
    try:
        verdict = route.matcher.match(watched)
    except Exception as e:
        verdict, failure = None, f"{type(e).__name__}: {e}"
    if verdict is MATCH:
        try:
            reason = route.matcher.describe(watched)
        except Exception as e:
            failure = f"describe() failed: {type(e).__name__}: {e}"
    sources = admitted = None
    if route.sources is not None:
        parts = []
        if route.sources.allow:
            parts.append("allow " + ", ".join(str(n) for n in route.sources.allow))
        if route.sources.deny:
            parts.append("deny " + ", ".join(str(n) for n in route.sources.deny))
        sources = "; ".join(parts) or "any"
        admitted = route.sources.admits(source)
    return RouteReport(
        name=route.name,
        target=str(getattr(route.target, "description", route.target)),
        match=_matchText(options.matchTables.get(route.name)),
        verdict=verdict,
        reason=reason,
        saw=tuple(_view(parser, peek) for parser in watched.asked)
        or (_firstBytes(peek.data),),
        needs=_needs(route.matcher, peek) if verdict is NEED_MORE else None,
        sources=sources,
        admitted=admitted,
        failure=failure,
    )


def _matchText(table: object, prefix: str = "") -> str:
    """
    A route's C{match} table as the dotted keys a user writes in TOML.
    """
    if not isinstance(table, Mapping):
        return "" if table is None else f"{prefix}={json.dumps(table)}"
    parts = []
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            parts.append(_matchText(value, name))
        else:
            parts.append(f"{name}={json.dumps(value, default=str)}")
    return " ".join(parts)


def _firstBytes(data: bytes) -> str:
    if not data:
        return "no bytes"
    shown = data[:16].hex(" ")
    return f"the bytes {shown}{' ...' if len(data) > 16 else ''}"


def _view(parser: Callable[[bytes], object], peek: Peek) -> str:
    """
    One line for a shared parse of C{peek}, taken from its cache.
    """
    result = peek.parse(parser)
    if parser is parseClientHello:
        if isinstance(result, ClientHello):
            return _helloText(result)
        return "TLS ClientHello: " + _unfinished(result)
    if parser in (parseRequestHead, parseRequestLine):
        what = "HTTP request head" if parser is parseRequestHead else "HTTP request line"
        if isinstance(result, RequestHead | RequestLine):
            text = f"{what}: {logSafe(result.method)} {logSafe(result.target)}"
            if isinstance(result, RequestHead):
                host = result.host
                text += f" host={logSafe(host) if host else '-'}"
            return text
        return f"{what}: {_unfinished(result)}"
    name = getattr(parser, "__qualname__", repr(parser))
    if isinstance(result, Verdict):
        return f"{name}: {_unfinished(result)}"
    text = repr(result)
    return f"{name}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _unfinished(result: object) -> str:
    if result is NEED_MORE:
        return "incomplete, more bytes needed"
    if result is NO_MATCH:
        return "not one"
    return repr(result)


def _helloText(hello: ClientHello) -> str:
    version = hello.highestVersion
    versionName = "-" if version is None else TLS_VERSIONS.get(version, f"0x{version:04x}")
    return (
        "TLS ClientHello: "
        f"{helloNames(hello)} "
        f"version={versionName} ech={'yes' if hello.hasECH else 'no'} "
        f"ja4={hello.ja4()}"
    )


def _needs(matcher: IMatcher, peek: Peek) -> int | None:
    """
    The fewest bytes in all that C{matcher} needs before it can decide, for
    the matchers whose need can be read off the bytes so far; L{None} for
    the rest.
    """
    if isinstance(matcher, PrefixMatcher):
        return matcher.offset + len(matcher.value)
    if isinstance(matcher, TLSMatcher):
        return _helloNeeds(peek.data)
    if isinstance(matcher, AllOf):
        needs = [
            _needs(m, peek) for m in matcher.matchers if m.match(peek) is NEED_MORE
        ]
        if needs and all(n is not None for n in needs):
            return max(n for n in needs if n is not None)
    return None


def _helloNeeds(data: bytes) -> int | None:
    """
    The fewest bytes that can hold the ClientHello C{data} begins, from the
    lengths its first record and handshake headers declare.
    """
    if len(data) < 5:
        return 5
    record = 5 + int.from_bytes(data[3:5], "big")
    if len(data) < 9:
        return max(record, 9)
    message = 4 + int.from_bytes(data[6:9], "big")
    if message <= record - 5:
        return record
    # The hello spans more records: each further one adds a 5-byte header.
    return 5 + message + 5


def _decisionText(decision: Decision) -> str:
    if decision.route is None:
        return f"refused ({decision.reason})"
    target = getattr(decision.route.target, "description", decision.route.target)
    return f"route {decision.route.name} -> {target} ({decision.reason})"


_VERDICT_NAMES = {MATCH: "MATCH", NO_MATCH: "NO_MATCH", NEED_MORE: "NEED_MORE"}


def _verdictText(report: RouteReport, total: int) -> str:
    if report.verdict is None:
        return f"ERROR (counted as NO_MATCH): {report.failure}"
    text = _VERDICT_NAMES[report.verdict]
    if report.verdict is NEED_MORE:
        if report.needs is not None and report.needs > total:
            text += f" (needs at least {report.needs} bytes, has {total})"
        else:
            text += " (cannot say how many more bytes)"
    return text


def formatText(explanation: Explanation) -> str:
    """
    The report for a person, one route after another.
    """
    e = explanation
    c = e.capture
    lines = []
    where = ""
    if c.client is not None:
        where = f", {c.transport} {c.client} -> {c.server}"
    lines.append(f"capture: {len(c.data)} bytes ({c.kind}{where})")
    lines.extend(f"  note: {note}" for note in c.notes)
    lines.append(f"source: {e.sourceNote}")
    lines.append("")
    for n, r in enumerate(e.routes, 1):
        lines.append(f"{n}. {r.name} -> {r.target}")
        if r.match:
            lines.append(f"   match:   {r.match}")
        if r.sources is not None:
            verdictOnSource = "admits" if r.admitted else "does not admit"
            lines.append(
                f"   sources: {r.sources}: {verdictOnSource} the client"
                + ("" if r.admitted else ", so the route is skipped")
            )
        lines.append(f"   verdict: {_verdictText(r, len(c.data))}")
        if r.reason is not None:
            lines.append(f"   reason:  {r.reason}")
        for seen in r.saw:
            lines.append(f"   saw:     {seen}")
    lines.append("")
    deadline = f"at inspect_delay ({e.inspectDelay:g}s), if the client sends nothing more"
    if e.now is not None:
        lines.append(f"decision: {_decisionText(e.now)}")
        lines.append(f"{deadline}: not reached, decided on these bytes")
    else:
        lines.append(
            f"decision: none yet with these {len(c.data)} bytes "
            "(a route before any match still needs more)"
        )
        lines.append(f"{deadline}: {_decisionText(e.atDeadline)}")
    when = "when the bytes ran out, at" if e.replay.final else "after"
    lines.append(
        f"replay one byte at a time: {_decisionText(e.replay.decision)}, "
        f"{when} {e.replay.after} of {len(c.data)} bytes"
    )
    if not e.consistent:
        lines.append(
            "INCONSISTENT: the byte-at-a-time replay went elsewhere than the "
            "whole capture; a matcher breaks its contract (please report it)"
        )
    return "\n".join(lines) + "\n"


def _decisionJSON(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "route": _routeName(decision),
        "target": (
            getattr(decision.route.target, "description", None)
            if decision.route is not None
            else None
        ),
        "reason": decision.reason,
        "kind": decision.kind or None,
    }


def formatJSON(explanation: Explanation) -> str:
    """
    The report for a program: one JSON object.
    """
    e = explanation
    c = e.capture
    return json.dumps(
        {
            "capture": {
                "bytes": len(c.data),
                "kind": c.kind,
                "transport": c.transport,
                "client": str(c.client) if c.client else None,
                "server": str(c.server) if c.server else None,
                "notes": list(c.notes),
            },
            "source": e.sourceNote,
            "routes": [
                {
                    "name": r.name,
                    "target": r.target,
                    "match": r.match,
                    "verdict": _VERDICT_NAMES[r.verdict] if r.verdict else None,
                    "reason": r.reason,
                    "saw": list(r.saw),
                    "needs": r.needs,
                    "sources": r.sources,
                    "admitted": r.admitted,
                    "failure": r.failure,
                }
                for r in e.routes
            ],
            "decision": _decisionJSON(e.now),
            "at_deadline": _decisionJSON(e.atDeadline),
            "outcome": _decisionJSON(e.outcome),
            "replay": {
                **(_decisionJSON(e.replay.decision) or {}),
                "after": e.replay.after,
                "final": e.replay.final,
            },
            "consistent": e.consistent,
            "exit": e.exitCode,
        },
        indent=1,
    ) + "\n"


def explainCommand(
    config: Any,
    path: str,
    stream: str | None,
    flow: str | None,
    captureFormat: str,
    outputFormat: str,
    out: Any,
    err: Any,
) -> int:
    """
    What C{twistd demux --explain PATH} does once the configuration is
    loaded: read the capture, print the report on C{out} and return the exit
    status; a bad capture or option is one line on C{err} and status 2.
    """
    from ._capture import AmbiguousCaptureError, CaptureError, readCapture

    def fail(message: str) -> int:
        err.write(f"demux: error: {message}\n")
        return EXIT_BAD_INPUT

    if outputFormat not in ("text", "json"):
        return fail(f"--explain-format must be text or json, not {outputFormat!r}")
    number = None
    if stream is not None:
        try:
            number = int(stream)
            if number < 0:
                raise ValueError()
        except ValueError:
            return fail(f"--stream must be a stream number from 0, not {stream!r}")
    try:
        capture = readCapture(path, number, flow, captureFormat)
    except AmbiguousCaptureError as e:
        fail(str(e))
        for found in e.streams:
            err.write(f"  {found}\n")
        return EXIT_BAD_INPUT
    except CaptureError as e:
        return fail(str(e))
    explanation = explain(config.table, capture, ExplainOptions(config.matchTables))
    out.write((formatJSON if outputFormat == "json" else formatText)(explanation))
    return explanation.exitCode
