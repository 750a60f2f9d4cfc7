"""
The relay: one L{RelaySession} per connection routed to a backend, owning
that connection's lifetime over two symmetric L{_RelayEnd}s, the client's
and the backend's.

The session dials (through the backend's L{demux._dial.IDialer}, trying the
next backend when one fails), wires the two transports together the way
C{twisted.protocols.portforward} does (the client is paused while the
backend is dialled, then each transport is the other's producer), sends the
peeked bytes (and any PROXY header) first, carries half-close both ways,
moves a bulk connection to the splice relay (L{demux._splice}), runs the
idle and linger timers, and counts and logs the connection when both ends
are gone.  An end only moves bytes and tells its session what happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectionDone, TimeoutError, UserError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _log, _splice, _twisted
from ._addresses import peerText
from ._client import SendProxy, proxyHeaderFor
from ._dial import IAttempt, IDialer

if TYPE_CHECKING:
    from ._interfaces import ConnectionInfo
    from ._transparent import TransparentSource


DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_LINGER = 30.0
# A read this large means bulk data: time to move to the splice relay.
UPGRADE_AT = 32 * 1024


class RelayBackend(TypingProtocol):
    """
    What the relay needs of one backend (L{demux._targets.Backend}).
    """

    @property
    def endpoint(self) -> IStreamClientEndpoint: ...

    @property
    def description(self) -> str: ...

    @property
    def dialer(self) -> IDialer: ...


class RelayTarget(TypingProtocol):
    """
    What the relay needs of its target (L{demux._targets.BackendTarget}):
    its settings, and its backends' order and health.
    """

    @property
    def connectTimeout(self) -> float: ...

    @property
    def idleTimeout(self) -> float | None: ...

    @property
    def linger(self) -> float: ...

    @property
    def sendProxy(self) -> SendProxy | None: ...

    @property
    def splice(self) -> bool: ...

    @property
    def transparent(self) -> TransparentSource | None: ...

    def pick(self, now: float) -> Sequence[RelayBackend]: ...

    def markDown(self, backend: Any, now: float) -> None: ...

    def markUp(self, backend: Any) -> None: ...

    def downReasons(self) -> str: ...


@implementer(IHalfCloseableProtocol)
class _RelayEnd(Protocol):
    """
    One end of a relay, the client's or the backend's: what this end's
    transport reads is written to the other end's transport.

    Each direction closes on its own: when this end's peer stops sending
    (read side closed) the other end's write side is shut down once its
    buffer is flushed, and a transport is closed only when both of its
    directions are done, so a client that half-closes still gets the whole
    answer.
    """

    # A TCP-like transport: ITCPTransport, IPushProducer and IConsumer.
    transport: Any

    def __init__(self, session: RelaySession, transport: Any = None) -> None:
        # Every attribute is set here, in one order, so that instances share
        # one compact attribute table (a held connection costs less memory).
        self.session = session
        self.transport = transport
        self.other: _RelayEnd | None = None
        self.readClosed = False
        self.writeClosed = False
        self.lost = False
        self.bytesIn = 0

    def connectionMade(self) -> None:
        # Only a backend's end is connected here: the client's transport was
        # connected before its end existed.
        self.session.backendConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        other = self.other
        session = self.session
        if other is None:
            # Not wired yet (the client's end, while the backend is dialled):
            # the session keeps it, in order, behind the peek.
            session.hold(data)
            return
        session.idle = False
        _twisted.writeThrough(other.transport, data)
        if len(data) >= UPGRADE_AT and session.mayUpgrade:
            session.upgrade()

    def readConnectionLost(self) -> None:
        if self.readClosed:
            return
        self.readClosed = True
        other = self.other
        if other is not None and not other.lost:
            # Nothing more will come from this side: stop it being paused
            # and resumed as a producer (resuming would read EOF again).
            other.transport.unregisterProducer()
            if other.readClosed and _twisted.plainSocket(other.transport):
                # Both peers have ended their sending: the other end is done
                # once its socket has sent what it holds, and closing it
                # sends the FIN that shutting it down would have.
                other.writeClosed = True
                _twisted.closeDone(other.transport)
            else:
                _twisted.loseWriteThrough(other.transport)
        self._closeIfDone()

    def writeConnectionLost(self) -> None:
        self.writeClosed = True
        self._closeIfDone()

    def _closeIfDone(self) -> None:
        if self.readClosed and self.writeClosed and not self.lost:
            _twisted.closeDone(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self.session.endLost(self, reason)


class _BackendFactory(ClientFactory):
    """
    Builds a session's backend end, for every dialer; C{connectTCP}'s
    failures come back here and go on to the session.
    """

    noisy = False

    def __init__(self, session: RelaySession) -> None:
        self.session = session

    def buildProtocol(self, addr: IAddress | None) -> _RelayEnd:
        return _RelayEnd(self.session)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        # UserError: the attempt was abandoned (stopConnecting).
        if not reason.check(UserError):
            self.session.dialFailed(reason)


class RelaySession:
    """
    One connection relayed to a backend, from the decision to the close.

    @ivar client: the client's end (what the demux protocol hands bytes to).
    @ivar backend: the backend's end, once connected.
    @ivar idle: whether nothing has moved since the idle timer last looked.
    @ivar fastPath: the splice relay, once the connection moved to it.
    """

    __slots__ = (
        "client", "backend", "target", "observer", "reactor", "peer", "routeName",
        "logConnections", "decided", "peeked", "proxyHeader", "started", "dialStarted",
        "current", "candidates", "attempt", "backendError", "idle", "mayUpgrade",
        "fastPath", "spliced", "_linger", "_idleTimer", "_ended",
    )

    def __init__(
        self,
        target: RelayTarget,
        transport: ITransport,
        peeked: bytes,
        connection: ConnectionInfo,
    ) -> None:
        self.client = _RelayEnd(self, transport)
        self.client.bytesIn = len(peeked)
        self.backend: _RelayEnd | None = None
        self.target = target
        self.observer = connection.observer
        self.reactor = connection.clock
        self.peer = connection.peer
        self.routeName = connection.route
        self.logConnections = connection.logConnections
        self.decided = connection.decided
        self.peeked = peeked
        # Made now, while the connection's peek is at hand, so that the
        # session does not keep it.
        self.proxyHeader = (
            b""
            if target.sendProxy is None
            else proxyHeaderFor(target.sendProxy, connection)
        )
        self.started = self.reactor.seconds()
        self.dialStarted = 0.0
        self.current: RelayBackend | None = None
        self.candidates: tuple[RelayBackend, ...] = ()
        self.attempt: IAttempt | None = None
        self.backendError: str | None = None
        self.idle = False
        self.mayUpgrade = False
        self.fastPath: _splice.SpliceRelay | None = None
        self.spliced = False
        self._linger: IDelayedCall | None = None
        self._idleTimer: IDelayedCall | None = None
        self._ended = False

    # Dialling and failing over.

    def dial(self) -> None:
        """
        Connect to the first backend that answers, in the order the target's
        balancing gives, and relay to it.
        """
        self.candidates = tuple(self.target.pick(self.reactor.seconds()))
        if not self.candidates:
            self._refuseAllDown()
            return
        self._dialNext()
        if self.attempt is not None:
            # Still connecting: read nothing more from the client until there
            # is somewhere to send it.
            self.client.transport.pauseProducing()

    def _refuseAllDown(self) -> None:
        """
        Every backend is down by its active health check: close the client's
        connection, saying why, rather than dial backends known to be dead.
        """
        why = self.target.downReasons()
        self.backendError = f"every backend is down by health check ({why})"
        _log.allBackendsDown(peerText(self.peer), self.routeName, self.backendError)
        self.client.transport.loseConnection()

    def _dialNext(self) -> None:
        backend, self.candidates = self.candidates[0], self.candidates[1:]
        self.current = backend
        self.dialStarted = self.reactor.seconds()
        factory = _BackendFactory(self)
        timeout = self.target.connectTimeout
        transparent = self.target.transparent
        attempt: IAttempt | None
        if transparent is not None:
            # From the client's address (see demux._transparent), or not at
            # all: it has logged why not.
            attempt = transparent.dial(
                backend.endpoint, self.peer, self.routeName, factory,
                self.dialFailed, timeout, self.reactor,
            )
            if attempt is None:
                self.client.transport.loseConnection()
                return
        else:
            attempt = backend.dialer.attempt(
                factory, self.dialFailed, timeout, self.reactor
            )
        self.attempt = attempt
        attempt.start()

    def dialFailed(self, reason: Failure) -> None:
        """
        The attempt on the current backend failed: try the next, or close.
        """
        self.attempt = None
        if self._ended or self.client.lost:
            return
        if reason.check(TimeoutError, CancelledError, DeferredTimeoutError):
            why = f"no connection within {self.target.connectTimeout:g}s"
        else:
            why = reason.getErrorMessage()
        self.backendError = why
        backend = self.current
        assert backend is not None
        self.target.markDown(backend, self.reactor.seconds())
        self.observer.backendFailed(self.routeName, backend.description)
        _log.backendFailed(peerText(self.peer), self.routeName, backend.description, why)
        if self.candidates:
            self._dialNext()
            return
        self.client.transport.loseConnection()

    def hold(self, data: bytes) -> None:
        """
        Keep what the client sent while the backend is dialled (a transport
        may deliver what it had read after being paused), to go behind the
        peek.
        """
        self.peeked += data

    # Wiring.

    def backendConnected(self, backend: _RelayEnd) -> None:
        """
        Wire the two transports together, peeked bytes first.
        """
        if self._ended:
            backend.transport.loseConnection()
            return
        # Connected: the attempt is no longer something to abandon.
        self.attempt = None
        self.candidates = ()
        current = self.current
        assert current is not None
        self.target.markUp(current)
        self.observer.backendConnected(
            self.routeName,
            current.description,
            self.reactor.seconds() - self.dialStarted,
        )
        # What a held connection keeps is what it costs: nothing it no
        # longer needs (the one 0.0 is shared, a time of its own is not).
        self.dialStarted = 0.0
        client = self.client
        if client.lost:
            backend.transport.loseConnection()
            return
        self.backend = backend
        client.other = backend
        backend.other = client
        first = self.peeked
        if self.proxyHeader:
            # The header and the peeked bytes go out in one write, header
            # first, as a backend that expects the header may read it alone.
            first = self.proxyHeader + first
            self.proxyHeader = b""
        self.peeked = b""
        if self.target.idleTimeout is not None:
            self._idleTimer = self.reactor.callLater(
                self.target.idleTimeout, self._checkIdle
            )
        self.mayUpgrade = self.target.splice and _splice.available()
        if first:
            # Sent now rather than on the reactor's next turn: this write is
            # on the path of every connection's first answer.
            _twisted.writeThrough(backend.transport, first)
        # Each transport is the other's producer: a slow reader on one side
        # pauses reading on the other, so memory stays bounded.
        backend.transport.registerProducer(client.transport, True)
        client.transport.registerProducer(backend.transport, True)
        if client.readClosed:
            # The client finished sending before the backend answered.
            backend.transport.unregisterProducer()
            _twisted.loseWriteThrough(backend.transport)
        else:
            client.transport.resumeProducing()

    def upgrade(self) -> None:
        """
        Move a connection that carries bulk data to the splice relay.

        Connections start on the ordinary relay, which costs least for a
        short exchange; one that reads a large chunk is moved, with whatever
        the ordinary relay had not sent yet going first through the pipes.
        """
        client, backend = self.client, self.backend
        if (
            backend is None
            or self.fastPath is not None
            or not _splice.upgradable(client.transport)
            or not _splice.upgradable(backend.transport)
        ):
            return
        try:
            relay = _splice.SpliceRelay(
                client.transport,
                backend.transport,
                self.reactor,
                self._spliceMoved,
                up=_twisted.pending(backend.transport),
                down=_twisted.pending(client.transport),
                clientDone=client.readClosed,
                backendDone=backend.readClosed,
            )
        except _splice.NoRoom:
            return
        self.mayUpgrade = False
        _twisted.takePending(backend.transport)
        _twisted.takePending(client.transport)
        client.transport.unregisterProducer()
        backend.transport.unregisterProducer()
        self.fastPath = relay
        self.spliced = True
        relay.start()

    def _spliceMoved(self, upward: bool, count: int) -> None:
        """
        The splice relay read C{count} bytes, from the client if C{upward}.
        """
        self.idle = False
        end = self.client if upward else self.backend
        if end is not None:
            end.bytesIn += count

    # Timers.

    def _checkIdle(self) -> None:
        """
        Close both ends if nothing moved for the idle timeout.  Activity only
        clears a flag, so the hot path reads no clock: an idle connection is
        closed between one and two timeouts after its last byte.
        """
        self._idleTimer = None
        assert self.target.idleTimeout is not None
        if not self.idle:
            self.idle = True
            self._idleTimer = self.reactor.callLater(
                self.target.idleTimeout, self._checkIdle
            )
            return
        _log.idleClosed(peerText(self.peer), self.routeName, self.target.idleTimeout)
        self.abort()

    def _lingerThenAbort(self) -> None:
        """
        One end is gone and the other is closing after flushing what it was
        sent; if its peer never reads that, cut it off.
        """
        if self._linger is None and not self._ended:
            self._linger = self.reactor.callLater(self.target.linger, self.abort)

    def abort(self) -> None:
        """
        Close both ends at once, discarding what is buffered.
        """
        if self.fastPath is not None:
            self.fastPath.detach()
        for end in (self.client, self.backend):
            if end is not None and not end.lost:
                end.transport.abortConnection()

    # The end.

    def endLost(self, end: _RelayEnd, reason: Failure) -> None:
        """
        C{end}'s connection is gone: close the other once it has flushed
        what this one sent, and once both are gone, finish.
        """
        if end is not self.client:
            complete = self.fastPath is not None and self.fastPath.complete
            if (
                reason is not None
                # (The type first: Failure.check walks the class's bases.)
                and reason.type is not ConnectionDone
                and not reason.check(ConnectionDone)
                and not complete
            ):
                # A reset, or a TLS backend that failed verification: say
                # why, since the client only sees its connection close.
                # (Once a spliced relay has carried both directions to their
                # end, how the socket then closes is not news.)
                self.backendError = reason.getErrorMessage()
                _log.backendLost(
                    peerText(self.peer),
                    self.routeName,
                    self.current.description,  # type: ignore[union-attr]
                    self.backendError,
                )
        other = end.other
        if other is not None and not other.lost:
            # Whatever this side sent is flushed to the other before it is
            # closed; a peer that never reads it is cut off after a while.
            # (With nothing left to flush and its sending side already shut,
            # Twisted closes it at once, and there is nothing to wait for.)
            if other.readClosed:
                # Its peer has finished sending too: closing it sends the
                # FIN, once it has sent what it holds.
                _twisted.closeDone(other.transport)
            else:
                other.transport.loseConnection()
            if not other.lost:
                self._lingerThenAbort()
        self._finishIfDone()

    def _finishIfDone(self) -> None:
        """
        Once both ends are gone, stop the timers and log the connection's
        summary.
        """
        if self._ended:
            return
        client, backend = self.client, self.backend
        if not client.lost or (backend is not None and not backend.lost):
            return
        self._ended = True
        if self.attempt is not None:
            attempt, self.attempt = self.attempt, None
            attempt.abandon()
        if self.fastPath is not None:
            self.fastPath.detach()
            # The relay holds this session's callback: let both go.
            self.fastPath = None
        for timer in (self._linger, self._idleTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._linger = self._idleTimer = None
        backendBytes = backend.bytesIn if backend is not None else 0
        if backend is not None:
            # Both ends are gone: unlink them from each other and from the
            # session, so that reference counting frees the connection's
            # objects (both transports included) at once, instead of leaving
            # cycles for the garbage collector, whose passes would pause a
            # busy server.
            backend.other = None
            client.other = None
            self.backend = None
        # The ends still name their session (they may be asked late, and it
        # answers as finished), but it no longer names them.
        del self.client
        duration = self.reactor.seconds() - self.started
        self.observer.closed(self.routeName, client.bytesIn, backendBytes, duration)
        if not self.logConnections:
            return
        _log.closed(
            peerText(self.peer),
            self.routeName,
            client.bytesIn,
            backendBytes,
            duration,
            self.backendError,
            self.spliced,
            self.decided,
        )
