"""
Dialling a TCP backend by its IPv4 address with one non-blocking
C{connect()}, then handing the connected socket to the reactor.

Twisted's C{connectTCP} starts the connect on the reactor's next turn and
learns it finished on the turn after, so every routed connection waits two
reactor turns (and four changes of its epoll registration) before its first
byte can go to the backend.  On loopback, and often on a LAN, the handshake
is over before C{connect()} returns: asking the socket once more tells, and
then the backend's transport is made at once, for that very socket
(L{demux._twisted.connectedTransport}: what the reactor's public
L{IReactorSocket.adoptStreamConnection} does, less its C{dup()}).  Otherwise
the socket waits for the reactor to report it writable, as C{connectTCP}
would, under the same connect timeout.  Either way the backend protocol is
the one C{connectTCP} would have built, so nothing after the connect differs.

Every way demux dials a backend is an L{IDialer}, chosen once per backend
when the configuration loads (L{dialerFor}), whose attempts all look the
same to the relay: an L{IAttempt} with C{start} and C{abandon}, that ends in
the factory's protocol connecting or in one call of C{failed}.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocolFactory,
    IStreamClientEndpoint,
    IWriteDescriptor,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ._twisted import TCP4Address, connectedTransport, tcp4Address

_WAIT = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)


def canDial(reactor: object) -> bool:
    """
    Whether L{SocketDial} can be used with C{reactor}: a real reactor that
    watches file descriptors and adopts sockets (not a test's fake one).
    """
    return isinstance(reactor, PosixReactorBase)


class IAttempt(Interface):
    """
    One attempt to connect to a backend.
    """

    def start() -> None:
        """
        Begin connecting.
        """

    def abandon() -> None:
        """
        Give the attempt up, quietly (no C{failed} call): whoever asked no
        longer wants the connection.  Does nothing once it has ended.
        """


class IDialer(Interface):
    """
    How to reach one backend, chosen once, when the configuration loads.
    """

    def attempt(
        factory: ClientFactory,
        failed: Callable[[Failure], object],
        timeout: float,
        clock: Any,
    ) -> IAttempt:
        """
        An unstarted attempt: once started, it connects C{factory}'s protocol
        or calls C{failed} once with why not (after C{timeout} seconds at
        the most, by C{clock} where the dialer does not use its own).
        """


@implementer(IWriteDescriptor, IAttempt)
class SocketDial:
    """
    One connection attempt to C{address}; it gives C{factory}'s protocol a
    connected transport, or calls C{failed} with why not.

    With C{sock}, it connects that socket (already made and bound, of
    either family: a transparent one) instead of a new IPv4 socket.

    It looks like the connector C{connectTCP} returns as far as the relay
    cares: a C{state} that is C{"connecting"} until the attempt ends, and
    C{stopConnecting()} to abandon it.
    """

    state = "connecting"

    def __init__(
        self,
        reactor: Any,
        address: tuple[str, int],
        factory: IProtocolFactory,
        failed: Any,
        timeout: float,
        bindAddress: tuple[str | bytes, int] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._reactor = reactor
        self._address = address
        self._factory = factory
        self._failed = failed
        self._timeout = timeout
        self._bindAddress = bindAddress
        # A socket already made and bound (a transparent one, of either
        # family), to connect instead of a new IPv4 socket.
        self._prepared = sock
        self._socket: socket.socket | None = None
        self._family = socket.AF_INET
        self._timer: IDelayedCall | None = None
        self._watching = False

    def start(self) -> None:
        """
        Connect, and finish at once if the handshake is already over.
        """
        sock = self._prepared
        self._prepared = None
        self._family = socket.AF_INET if sock is None else sock.family
        if sock is None:
            try:
                # Non-blocking from the start: no system call to make it so.
                sock = socket.socket(
                    socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                )
            except OSError as e:
                self._end(Failure(error.ConnectError(string=str(e))))
                return
        else:
            sock.setblocking(False)
        self._socket = sock
        if self._bindAddress is not None:
            try:
                sock.bind(self._bindAddress)
            except OSError as e:
                self._end(Failure(error.ConnectBindError(e.errno, e.strerror)))
                return
        result = sock.connect_ex(self._address)
        if result in _WAIT:
            # Ask again: on loopback the handshake finished inside the first
            # call, and this says so (0) or why it failed.
            result = sock.connect_ex(self._address)
        if result in _WAIT:
            self._reactor.addWriter(self)
            self._watching = True
            self._timer = self._reactor.callLater(self._timeout, self._timedOut)
            return
        self._finish(result)

    def _finish(self, result: int) -> None:
        if result in (0, errno.EISCONN):
            self._connected()
        else:
            self._end(Failure(error.getConnectError((result, os.strerror(result)))))

    def _connected(self) -> None:
        sock = self._socket
        assert sock is not None
        self._stopWatching()
        self.state = "connected"
        self._socket = None
        if self._family == socket.AF_INET:
            # The reactor's transport is made for this very socket, and the
            # protocol's connectionMade runs before this returns.
            connectedTransport(sock, self._address, self._factory, self._reactor)
            return
        try:
            # A transparent socket of another family: the reactor's public
            # way, with a descriptor of its own.
            self._reactor.adoptStreamConnection(
                sock.fileno(), sock.family, self._factory
            )
        except OSError as e:
            # The connection died between connect() and adoption.
            self.state = "disconnected"
            self._failed(Failure(error.ConnectError(string=str(e))))
        finally:
            sock.close()

    def _end(self, reason: Failure) -> None:
        self._close()
        self._failed(reason)

    def _close(self) -> None:
        self._stopWatching()
        self.state = "disconnected"
        for sock in (self._socket, self._prepared):
            if sock is not None:
                sock.close()
        self._socket = self._prepared = None

    def _stopWatching(self) -> None:
        if self._watching:
            self._watching = False
            self._reactor.removeWriter(self)
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        self._end(Failure(error.TimeoutError()))

    def stopConnecting(self) -> None:
        """
        Abandon the attempt, quietly: whoever asked no longer wants it.
        """
        if self.state == "connecting":
            self._close()

    abandon = stopConnecting

    # IWriteDescriptor, while the handshake is under way.

    def fileno(self) -> int:
        return -1 if self._socket is None else self._socket.fileno()

    def logPrefix(self) -> str:
        return "demux-dial"

    def doWrite(self) -> None:
        assert self._socket is not None
        self._finish(self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw the socket fail (an error or hang-up with no
        # writability): the socket knows why.
        self._watching = False
        if self.state != "connecting" or self._socket is None:
            return
        result = self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if result:
            self._finish(result)
        else:
            self._end(reason)


@implementer(IDialer)
@frozen
class SocketDialer:
    """
    Dials an IPv4 address with L{SocketDial}: one C{connect()}, no
    Deferreds, no wrapping protocol.
    """

    reactor: Any
    address: tuple[str, int]
    bindAddress: tuple[str | bytes, int] | None

    def attempt(
        self,
        factory: ClientFactory,
        failed: Callable[[Failure], object],
        timeout: float,
        clock: Any,
    ) -> IAttempt:
        return SocketDial(
            self.reactor, self.address, factory, failed, timeout, self.bindAddress
        )


@implementer(IAttempt)
class _ConnectTCPAttempt:
    """
    One C{connectTCP}, whose failure reaches the factory's
    C{clientConnectionFailed}.
    """

    def __init__(self, address: TCP4Address, factory: ClientFactory, timeout: float):
        self._address = address
        self._factory = factory
        self._timeout = timeout
        self._connector: Any = None

    def start(self) -> None:
        a = self._address
        self._connector = a.reactor.connectTCP(
            a.host, a.port, self._factory, timeout=self._timeout,
            bindAddress=a.bindAddress,
        )

    def abandon(self) -> None:
        if self._connector is not None and self._connector.state == "connecting":
            self._connector.stopConnecting()


@implementer(IDialer)
@frozen
class ConnectTCPDialer:
    """
    Dials a C{tcp:} endpoint by host name (or with a reactor L{SocketDial}
    cannot use) with C{connectTCP}, still without the endpoint's Deferreds.
    The factory must be a C{ClientFactory} that hands C{clientConnectionFailed}
    on to C{failed} (it is called with C{UserError} when abandoned, which it
    must ignore).
    """

    address: TCP4Address

    def attempt(
        self,
        factory: ClientFactory,
        failed: Callable[[Failure], object],
        timeout: float,
        clock: Any,
    ) -> IAttempt:
        return _ConnectTCPAttempt(self.address, factory, timeout)


@implementer(IAttempt)
class _EndpointAttempt:
    """
    One C{endpoint.connect()}, under a timeout.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        factory: ClientFactory,
        failed: Callable[[Failure], object],
        timeout: float,
        clock: Any,
    ) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._failed = failed
        self._timeout = timeout
        self._clock = clock
        self._connecting: Deferred[Any] | None = None
        self._abandoned = False

    def start(self) -> None:
        d = self._endpoint.connect(self._factory)
        d.addTimeout(self._timeout, self._clock)
        self._connecting = d
        d.addCallbacks(self._done, self._fail)

    def _done(self, result: object) -> None:
        self._connecting = None

    def _fail(self, reason: Failure) -> None:
        self._connecting = None
        if not self._abandoned:
            self._failed(reason)

    def abandon(self) -> None:
        self._abandoned = True
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            d.cancel()


@implementer(IDialer)
@frozen
class EndpointDialer:
    """
    Dials any other client endpoint through its own C{connect()}.
    """

    endpoint: IStreamClientEndpoint

    def attempt(
        self,
        factory: ClientFactory,
        failed: Callable[[Failure], object],
        timeout: float,
        clock: Any,
    ) -> IAttempt:
        return _EndpointAttempt(self.endpoint, factory, failed, timeout, clock)


def dialerFor(endpoint: IStreamClientEndpoint) -> IDialer:
    """
    The cheapest way to dial C{endpoint} that keeps its meaning: a
    L{SocketDialer} for a C{tcp:} endpoint at an IPv4 address, a
    L{ConnectTCPDialer} for other C{tcp:} endpoints, an L{EndpointDialer}
    for the rest.
    """
    address = tcp4Address(endpoint)
    if address is not None:
        bind = address.bindAddress
        if (
            address.numeric
            and canDial(address.reactor)
            and (bind is None or isinstance(bind, tuple))
        ):
            return SocketDialer(address.reactor, (address.host, address.port), bind)
        return ConnectTCPDialer(address)
    return EndpointDialer(endpoint)
