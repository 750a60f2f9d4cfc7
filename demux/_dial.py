"""
Dialling a TCP backend by its IPv4 address with one non-blocking
C{connect()}, then handing the connected socket to the reactor.

Twisted's C{connectTCP} starts the connect on the reactor's next turn and
learns it finished on the turn after, so every routed connection waits two
reactor turns (and four changes of its epoll registration) before its first
byte can go to the backend.  On loopback, and often on a LAN, the handshake
is over before C{connect()} returns: asking the socket once more tells, and
then the backend's transport is made at once with the reactor's public
L{IReactorSocket.adoptStreamConnection}.  Otherwise the socket waits for the
reactor to report it writable, as C{connectTCP} would, under the same
connect timeout.  Either way the backend protocol is the one C{connectTCP}
would have built, so nothing after the connect differs.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IWriteDescriptor
from twisted.internet.posixbase import PosixReactorBase
from twisted.python.failure import Failure
from zope.interface import implementer

_WAIT = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)


def canDial(reactor: object) -> bool:
    """
    Whether L{SocketDial} can be used with C{reactor}: a real reactor that
    watches file descriptors and adopts sockets (not a test's fake one).
    """
    return isinstance(reactor, PosixReactorBase)


@implementer(IWriteDescriptor)
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
        self._timer: IDelayedCall | None = None
        self._watching = False

    def start(self) -> None:
        """
        Connect, and finish at once if the handshake is already over.
        """
        sock = self._prepared
        self._prepared = None
        if sock is None:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as e:
                self._end(Failure(error.ConnectError(string=str(e))))
                return
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
        try:
            # The reactor's transport gets its own descriptor for the socket,
            # and the protocol's connectionMade runs before this returns.
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
