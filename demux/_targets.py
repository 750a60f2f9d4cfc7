"""
Targets: what a decided connection is handed to.

L{BackendTarget} relays to one of a route's backends (L{Backend}, each with
the way to dial it chosen when the configuration loads), in the order its
balancing and its backends' health give; the relay itself is
L{demux._relay.RelaySession}.  L{LocalTarget} hands the connection to an
in-process protocol factory instead.  The settings of a route's active
health check (L{HealthCheck}) are here too, as part of its target; the
checking is L{demux._health}'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from . import _log
from ._addresses import peerText
from ._client import SendProxy, clientTransport
from ._dial import IDialer, dialerFor
from ._interfaces import ITarget
from ._relay import DEFAULT_CONNECT_TIMEOUT, DEFAULT_LINGER, RelaySession

if TYPE_CHECKING:
    from ._interfaces import ConnectionInfo
    from ._transparent import TransparentSource


DEFAULT_CHECK_INTERVAL = 5.0
DEFAULT_CHECK_TIMEOUT = 2.0
DEFAULT_RISE = 2
DEFAULT_FALL = 3


class IHealthCheck(Interface):
    """
    One way to ask a backend whether it is alive.
    """

    description = Attribute("What the check does, in a few words, for logs.")

    def check(backend: Backend) -> Deferred[bool]:
        """
        Dial C{backend}'s endpoint and ask.

        @return: fires with C{True} when the backend answered as it should;
            with C{False} or a failure (whose message says why) otherwise.
            Cancelling it abandons the check and closes its connection.
        """


@frozen
class HealthCheck:
    """
    A route's active health check and its timing.

    @ivar probe: how to ask one backend.
    @ivar interval: seconds from the end of one check of a backend to the
        start of the next.
    @ivar timeout: seconds a check may take before it counts as failed.
    @ivar rise: consecutive good checks that bring a down backend up.
    @ivar fall: consecutive failed checks that take an up backend down.
    """

    probe: IHealthCheck
    interval: float = DEFAULT_CHECK_INTERVAL
    timeout: float = DEFAULT_CHECK_TIMEOUT
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL


class IRefusingTarget(Interface):
    """
    A target that may refuse a connection before taking it.
    """

    def refusal() -> str | None:
        """
        Why a connection handed over now would be refused at once (so that
        it is refused instead, and counted so), or L{None}.
        """


class IInnerTargets(Interface):
    """
    A target that hands connections on to other targets (after ending
    TLS, or by deciding again among inner routes).
    """

    def innerTargets() -> Iterable[ITarget]:
        """
        The targets this one may hand a connection to.
        """


@frozen
class Backend:
    """
    One backend address of a route.

    @ivar endpoint: how to reach it; parsed once, when the configuration is
        loaded, not per connection.
    @ivar description: the endpoint string, for logs.
    """

    endpoint: IStreamClientEndpoint
    description: str
    dialer: IDialer = field(init=False, eq=False, repr=False)
    """
    How to dial it, chosen here, once (L{demux._dial.dialerFor}).
    """

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "dialer", dialerFor(self.endpoint))


@define
class _Health:
    """
    What a target has learnt about its backends while running: which
    refused lately (a passive health check), and whose turn is next.
    """

    downUntil: dict[str, float] = field(factory=dict)
    nextIndex: int = 0
    checked: dict[str, tuple[bool, str]] = field(factory=dict)
    """
    By active health check (L{demux._health}), each checked backend's
    state: whether it is up, and what its last check saw.
    """


BALANCE_MODES = ("first", "roundrobin")
DEFAULT_RETRY_AFTER = 10.0


@implementer(ITarget, IRefusingTarget)
@frozen
class BackendTarget:
    """
    Relay decided connections to a backend.

    @ivar endpoint: how to reach the backend; parsed once, when the
        configuration is loaded, not per connection.
    @ivar description: the endpoint string, for logs.
    @ivar connectTimeout: seconds to wait for the backend to accept before
        trying the next backend or closing the client's connection.
    @ivar idleTimeout: seconds without a byte either way after which both
        connections are closed, or L{None} to keep idle connections.
    @ivar linger: seconds that one side may take to flush what it was sent
        after the other side has gone, before it is cut off.
    @ivar sendProxy: 1 or 2 to send a PROXY protocol header of that version
        to the backend, so it sees the client's address (version 2 with
        TLVs: ALPN, authority, the route's name); C{"pass"} to forward the
        header the connection came with on a C{haproxy:} listener, as
        received; L{None} not to.
    @ivar alternatives: more backends for the same route.
    @ivar balance: C{"first"}: the first backend that is up, in order;
        C{"roundrobin"}: each connection starts at the next backend.
    @ivar retryAfter: seconds a backend that refused or timed out is
        passed over (unless every backend is).
    @ivar splice: whether to relay with C{splice(2)} where both ends are
        plain TCP sockets on Linux (the same semantics, less CPU).
    @ivar check: the route's active health check, run by
        L{demux._health.HealthService}; L{None} for passive checks only.
        Backends down by it are never picked, and with all of them down
        connections are refused; among the rest, those that failed lately
        go last, as without it.
    @ivar transparent: makes backend connections whose source is the
        client's address, or L{None} to dial from this host's.
    """

    endpoint: IStreamClientEndpoint
    description: str
    connectTimeout: float = DEFAULT_CONNECT_TIMEOUT
    idleTimeout: float | None = None
    linger: float = DEFAULT_LINGER
    sendProxy: SendProxy | None = None
    alternatives: tuple[Backend, ...] = ()
    balance: str = "first"
    retryAfter: float = DEFAULT_RETRY_AFTER
    splice: bool = True
    check: HealthCheck | None = None
    transparent: TransparentSource | None = None
    _health: _Health = field(factory=_Health, eq=False, repr=False, alias="_health")
    backends: tuple[Backend, ...] = field(init=False, eq=False, repr=False)
    """
    Every backend of the route, in configuration order: made once, not for
    every connection that picks one.
    """

    def __attrs_post_init__(self) -> None:
        object.__setattr__(
            self,
            "backends",
            (Backend(self.endpoint, self.description), *self.alternatives),
        )

    def pick(self, now: float) -> list[Backend]:
        """
        The order in which to try the backends for a new connection: by the
        balancing mode, backends that failed lately last.
        """
        backends = list(self.backends)
        if self.balance == "roundrobin" and len(backends) > 1:
            start = self._health.nextIndex % len(backends)
            self._health.nextIndex = start + 1
            backends = backends[start:] + backends[:start]
        checked = self._health.checked
        if checked:
            backends = [
                b for b in backends if checked.get(b.description, (True, ""))[0]
            ]
        down = self._health.downUntil
        up = [b for b in backends if down.get(b.description, 0.0) <= now]
        return up + [b for b in backends if b not in up]

    def setChecked(self, backend: Backend, up: bool, why: str) -> None:
        """
        Record what the active health check says of C{backend}; one found
        up again is also forgiven its passive failures, since it answers.
        """
        previous = self._health.checked.get(backend.description)
        self._health.checked[backend.description] = (up, why)
        if up and previous is not None and not previous[0]:
            self._health.downUntil.pop(backend.description, None)

    def checkedState(self, backend: Backend) -> tuple[bool, str] | None:
        """
        The active health check's word on C{backend}: up or not and why, or
        L{None} if it is not checked.
        """
        return self._health.checked.get(backend.description)

    def refusal(self) -> str | None:
        """
        Every backend is down by active health check: a connection is
        refused rather than dialled to backends known to be dead.
        """
        checked = self._health.checked
        if not checked or any(
            checked.get(b.description, (True, ""))[0] for b in self.backends
        ):
            return None
        return f"every backend is down by health check ({self.downReasons()})"

    def downReasons(self) -> str:
        """
        Why each backend down by active check is, for a log line.
        """
        return "; ".join(
            f"{description}: {why}"
            for description, (up, why) in self._health.checked.items()
            if not up
        )

    def markDown(self, backend: Backend, now: float) -> None:
        self._health.downUntil[backend.description] = now + self.retryAfter

    def markUp(self, backend: Backend) -> None:
        self._health.downUntil.pop(backend.description, None)

    def handOff(
        self, transport: ITransport, peeked: bytes, connection: ConnectionInfo
    ) -> Protocol:
        session = RelaySession(self, transport, peeked, connection)
        session.dial()
        return session.client


@implementer(IHalfCloseableProtocol)
class _LocalEnd(Protocol):
    """
    Passes a connection's events on to an in-process protocol, carrying
    half-close only to a protocol that understands it.
    """

    transport: Any

    def __init__(
        self, protocol: Protocol, transport: ITransport, connection: ConnectionInfo
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.connection = connection
        self.started = connection.clock.seconds()
        self.bytesIn = 0

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        self.protocol.dataReceived(data)

    def readConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        if halfCloseable is not None:
            halfCloseable.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.protocol.connectionLost(reason)
        c = self.connection
        duration = c.clock.seconds() - self.started
        c.observer.closed(c.route, self.bytesIn, 0, duration)
        if c.logConnections:
            _log.localClosed(
                peerText(c.peer), c.route, self.bytesIn, duration, c.decided
            )


@implementer(ITarget)
@frozen
class LocalTarget:
    """
    Serve decided connections with an in-process protocol factory, so one
    port can carry, say, a Twisted program's own web site and a relay to
    another server.

    The factory's protocol is connected to the client's transport and gets
    the peeked bytes as its first C{dataReceived}.
    """

    factory: IProtocolFactory
    description: str = field(default="")

    def __attrs_post_init__(self) -> None:
        if not self.description:
            object.__setattr__(self, "description", f"local {self.factory!r}")

    def handOff(
        self, transport: ITransport, peeked: bytes, connection: ConnectionInfo
    ) -> Protocol:
        protocol = self.factory.buildProtocol(connection.peer)
        if protocol is None:
            # The factory declined the connection: it is closed, and counted
            # closed at once, as it was counted routed.
            transport.loseConnection()
            connection.observer.closed(connection.route, len(peeked), 0, 0.0)
            if connection.decided is not None:
                # The connection's only line, as no protocol will end it;
                # with log_decisions, its decision line is all it gets.
                _log.localDeclined(
                    peerText(connection.peer), connection.route, connection.decided
                )
            return Protocol()
        # Behind a PROXY header, the protocol's getPeer() is the client.
        protocol.makeConnection(clientTransport(transport, connection))
        if peeked:
            protocol.dataReceived(peeked)
        end = _LocalEnd(protocol, transport, connection)  # type: ignore[arg-type]
        end.bytesIn = len(peeked)
        return end


def localFactories(target: ITarget) -> Iterator[IProtocolFactory]:
    """
    The in-process protocol factories behind C{target}, inner targets
    included, which start and stop with the listener like any C{local}
    route's.
    """
    if isinstance(target, LocalTarget):
        yield target.factory
        return
    inner = IInnerTargets(target, None)
    if inner is not None:
        for each in inner.innerTargets():
            yield from localFactories(each)
