"""
Every line demux logs about a connection, and the fields each carries: one
vocabulary, written here and nowhere else, with L{DEMUX_FIELDS} (what the
JSON log, L{demux.jsonlog}, documents) beside it.

The lines of an ordinary connection are written pre-formatted (C{"{text}"}
with the text built by an f-string): Twisted's format-string parsing costs
more than the rest of logging a line, and these lines are on the path of
every connection.  The fields go with the event all the same, for the JSON
log.

A routed connection is logged once by default, when it ends: which route,
why, where to, then its bytes and duration, in one line in the shape of
HAProxy's C{tcplog}.  With C{log_decisions = true} the decision has a line of
its own as well, when it is made (HAProxy's C{logasap}), for connections that
last long; refusals, backend failures and idle closes are logged at once
either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from time import time

from attrs import frozen
from twisted.logger import Logger, LogLevel

log = Logger(namespace="demux")


def _line(level: LogLevel, text: str, **fields: object) -> None:
    """
    Log C{text}, a line demux has written out whole, with C{fields} for the
    JSON log: the very event C{log.emit(level, "{text}", text=text,
    **fields)} makes, given to the same observer, less the check that
    C{level} is one of L{LogLevel}'s (it is), which sorts L{LogLevel}'s
    constants on every call of every line.
    """
    fields.update(
        log_logger=log,
        log_level=level,
        log_namespace=log.namespace,
        log_source=log.source,
        log_format="{text}",
        text=text,
        log_time=time(),
    )
    log.observer(fields)

#: The fields demux's own events carry, besides the common ones: what each
#: means, for the documentation and for whoever writes the log system's
#: parser.  An event has only those that apply to it.
DEMUX_FIELDS: Mapping[str, str] = {
    "peer": "the client's address, host:port ([host]:port for IPv6); behind "
    "a haproxy: listener, the address its PROXY header gave",
    "route": "the route's name; null for a connection refused before one "
    "was chosen",
    "reason": "why this route (what the matcher saw), or why none",
    "peeked": "bytes read before deciding",
    "decideMs": "milliseconds from accepting the connection to deciding",
    "target": "where the route sends connections (a client endpoint string)",
    "bytesUp": "bytes from the client, when a relayed connection ends",
    "bytesDown": "bytes to the client, when a relayed connection ends",
    "duration": "seconds the relayed connection lasted",
    "backend": "the backend that failed",
    "why": "why the backend failed",
    "backendError": "the last backend failure of a connection that ends, or "
    "null",
    "idle": "the idle timeout that closed a connection, in seconds",
    "limit": "the limit a refused connection was over",
    "total": "how many connections were refused for that limit so far",
    "requests": "HTTP requests forwarded on a connection whose TLS demux "
    "ended, when it ends",
    "status": "the HTTP status demux answered with itself",
    "detail": "why demux answered with that status",
}


@frozen
class Decided:
    """
    How a connection was routed, kept for its closing line when the
    decision is not logged on its own (unless C{log_decisions = true}).
    """

    reason: str
    target: str
    peeked: int
    decideMs: float

    def text(self, peer: str, route: str) -> str:
        """
        The decision as its own line says it.
        """
        return (
            f"{peer} route={route} ({self.reason}) -> {self.target}, "
            f"{self.peeked} bytes peeked, decided in {self.decideMs:.2f} ms"
        )

    def fields(self) -> dict[str, object]:
        """
        The decision's fields of an event, for the JSON log.
        """
        return dict(
            reason=self.reason,
            target=self.target,
            peeked=self.peeked,
            decideMs=self.decideMs,
        )


def opening(
    peer: str, route: str, decided: Decided | None
) -> tuple[str, dict[str, object]]:
    """
    How a closing line starts, and the decision's fields it carries: the
    decision itself when it was not logged on its own.  (Public for the
    lines that end a connection written elsewhere: the HTTP forwarder's,
    the TLS step's.)
    """
    if decided is None:
        return f"{peer} route={route}", {}
    return decided.text(peer, route) + ";", decided.fields()


def routed(peer: str, route: str, decided: Decided) -> None:
    """
    A connection took C{route}.
    """
    _line(
        LogLevel.info,
        text=decided.text(peer, route),
        peer=peer,
        route=route,
        **decided.fields(),
    )


def refused(peer: str, reason: str, peeked: int, decideMs: float) -> None:
    """
    A connection was closed without a route.
    """
    log.info(
        "{peer} refused: {reason} ({peeked} bytes peeked, {decideMs:.2f} ms)",
        peer=peer,
        reason=reason,
        peeked=peeked,
        decideMs=decideMs,
        route=None,
    )


def routeRefused(
    peer: str, route: str, why: str, reason: str, peeked: int, decideMs: float
) -> None:
    """
    A connection won C{route}, whose target refused it (every backend down).
    """
    log.warn(
        "{peer} route={route} refused: {why} ({peeked} bytes peeked, "
        "{decideMs:.2f} ms)",
        peer=peer,
        route=route,
        why=why,
        reason=reason,
        peeked=peeked,
        decideMs=decideMs,
    )


def overLimit(peer: str, limit: str, total: int) -> None:
    """
    A connection was refused for a limit (at most one line a second).
    """
    log.warn(
        "{peer} refused: over {limit} ({total} refused for it so far)",
        peer=peer,
        limit=limit,
        total=total,
        route=None,
    )


def closedUndecided(peer: str, peeked: int, decideMs: float) -> None:
    """
    The client went before a route was decided.
    """
    log.info(
        "{peer} closed before a route was decided ({peeked} bytes "
        "peeked, {decideMs:.2f} ms)",
        peer=peer,
        peeked=peeked,
        decideMs=decideMs,
        route=None,
    )


def matcherFailed(peer: str, route: str, peeked: int, error: Exception) -> None:
    """
    A route's matcher raised; it counted as no match.
    """
    log.debug(
        "{peer} route={route}: its matcher failed on {peeked} bytes "
        "({error!r}); counted as no match",
        peer=peer,
        route=route,
        peeked=peeked,
        error=error,
    )


def allBackendsDown(peer: str, route: str, why: str) -> None:
    """
    A relay was asked for a route whose backends are all down by check.
    """
    log.warn("{peer} route={route} refused: {why}", peer=peer, route=route, why=why)


def backendFailed(peer: str, route: str, backend: str, why: str) -> None:
    """
    Dialling C{backend} failed.
    """
    log.warn(
        "{peer} route={route} backend {backend} failed: {why}",
        peer=peer,
        route=route,
        backend=backend,
        why=why,
    )


def backendLost(peer: str, route: str, backend: str, why: str) -> None:
    """
    The backend's connection ended with an error.
    """
    log.warn(
        "{peer} route={route} backend {backend} connection lost: {why}",
        peer=peer,
        route=route,
        backend=backend,
        why=why,
    )


def idleClosed(peer: str, route: str, idle: float) -> None:
    """
    A relayed connection was closed for being idle.
    """
    log.info(
        "{peer} route={route} idle for {idle:g}s, closing",
        peer=peer,
        route=route,
        idle=idle,
    )


def closed(
    peer: str,
    route: str,
    bytesUp: int,
    bytesDown: int,
    duration: float,
    backendError: str | None,
    spliced: bool,
    decided: Decided | None,
) -> None:
    """
    A relayed connection ended; with C{decided}, its decision too.
    """
    how = " (spliced)" if spliced else ""
    summary = (
        f"{bytesUp} bytes up, {bytesDown} bytes down, {duration:.3f}s{how}"
    )
    first, extra = opening(peer, route, decided)
    _line(
        LogLevel.info,
        text=f"{first} closed: {summary}",
        peer=peer,
        route=route,
        **extra,
        bytesUp=bytesUp,
        bytesDown=bytesDown,
        duration=duration,
        backendError=backendError,
        spliced=spliced,
    )


def localClosed(
    peer: str, route: str, bytesUp: int, duration: float, decided: Decided | None
) -> None:
    """
    A connection served in-process ended (only the bytes that reached the
    protocol are counted: what it wrote is its own business).
    """
    summary = f"{bytesUp} bytes up, {duration:.3f}s (in-process)"
    first, extra = opening(peer, route, decided)
    _line(
        LogLevel.info,
        text=f"{first} closed: {summary}",
        peer=peer,
        route=route,
        bytesUp=bytesUp,
        duration=duration,
        **extra,
    )


def localDeclined(peer: str, route: str, decided: Decided) -> None:
    """
    The in-process protocol factory of C{route} declined a connection
    (its C{buildProtocol} returned L{None}), which was closed at once.
    """
    first, extra = opening(peer, route, decided)
    _line(
        LogLevel.info,
        text=f"{first} closed: declined by the in-process protocol factory",
        peer=peer,
        route=route,
        **extra,
    )


def forwardClosed(
    peer: str,
    route: str,
    requests: int,
    bytesUp: int,
    bytesDown: int,
    duration: float,
    decided: Decided | None,
) -> None:
    """
    A connection whose requests demux forwarded as HTTP ended.
    """
    first, extra = opening(peer, route, decided)
    _line(
        LogLevel.info,
        text=f"{first} closed: {requests} requests, {bytesUp} bytes up, "
        f"{bytesDown} bytes down, {duration:.3f}s",
        peer=peer,
        route=route,
        **extra,
        requests=requests,
        bytesUp=bytesUp,
        bytesDown=bytesDown,
        duration=duration,
    )


def forwardRefused(peer: str, route: str, status: int, detail: str) -> None:
    """
    The HTTP forwarder answered a request with an error of its own.
    """
    _line(
        LogLevel.info,
        text=f"{peer} route={route} HTTP {status}: {detail}",
        peer=peer,
        route=route,
        status=status,
        detail=detail,
    )


def forwardCutOff(peer: str, route: str) -> None:
    """
    The backend of an HTTP-forwarded connection closed mid-response.
    """
    _line(
        LogLevel.info,
        text=f"{peer} route={route} backend closed in the middle of a response",
        peer=peer,
        route=route,
    )


def decryptedClosed(
    peer: str, route: str, duration: float, decided: Decided
) -> None:
    """
    A connection whose TLS demux ended for inner routes ended (the inner
    route it took logs its own line).
    """
    first, extra = opening(peer, route, decided)
    _line(
        LogLevel.info,
        text=f"{first} closed: {duration:.3f}s (decrypted for the inner routes)",
        peer=peer,
        route=route,
        duration=duration,
        **extra,
    )


def handshakeEnded(
    peer: str, route: str, why: str, duration: float, decided: Decided | None
) -> None:
    """
    A connection whose TLS demux was to end closed without a handshake.
    """
    first, extra = opening(peer, route, decided)
    _line(
        LogLevel.info,
        text=f"{first} {why} ({duration:.3f}s)",
        peer=peer,
        route=route,
        why=why,
        duration=duration,
        **extra,
    )


def flowMoved(old: str, route: str, new: str) -> None:
    """
    A UDP flow was followed to a new client address by its QUIC connection
    ID.
    """
    _line(
        LogLevel.info,
        text=f"udp {old} route={route} moved to {new} (QUIC connection ID)",
        route=route,
    )


def flowDropped(client: str, reason: str, datagrams: int, decideMs: float) -> None:
    """
    A UDP flow was decided to no route, and dropped.
    """
    _line(
        LogLevel.info,
        text=f"udp {client} dropped: {reason} ({datagrams} datagrams, "
        f"{decideMs:.2f} ms)",
        route=None,
    )


def flowDecision(
    reason: str, target: str, datagrams: int, decideMs: float
) -> str:
    """
    How a UDP flow was routed, as its lines say it.
    """
    return (
        f" ({reason}) -> {target}, {datagrams} datagrams peeked, "
        f"decided in {decideMs:.2f} ms"
    )


def flowRouted(client: str, route: str, decision: str, target: str) -> None:
    """
    A UDP flow took C{route} (with C{log_decisions = true}).
    """
    _line(
        LogLevel.info,
        text=f"udp {client} route={route}{decision}",
        route=route,
        target=target,
    )


def flowEnded(
    client: str,
    route: str | None,
    why: str,
    seconds: float,
    up: tuple[int, int],
    down: tuple[int, int],
    decision: str | None,
    target: str | None,
) -> None:
    """
    A UDP flow ended (C{up} and C{down}: datagrams and bytes); with
    C{decision}, its decision too.
    """
    extra = {} if target is None else {"target": target}
    said = "" if decision is None else decision + ";"
    _line(
        LogLevel.info,
        text=f"udp {client} route={route}{said} ended ({why}) after "
        f"{seconds:.1f} s: {up[0]} datagrams ({up[1]} bytes) up, {down[0]} "
        f"({down[1]} bytes) down",
        route=route,
        **extra,
    )
