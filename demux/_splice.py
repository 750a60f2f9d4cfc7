"""
The zero-copy relay: once a connection's route is decided and both ends are
plain TCP sockets on Linux, bytes move from socket to socket through a pipe
with C{splice(2)}, so they never enter Python.

It keeps the ordinary relay's promises: the peeked bytes (and any PROXY
header) go first, each direction closes on its own (half-close), a side that
cannot take more stops the other side being read (flow control: the pipe is
the only buffer), bytes are counted for the log, and the idle timeout still
sees activity.  When both directions are done, or on an error, the sockets go
back to their Twisted transports to be closed, so the connection ends through
the same code as any other.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from typing import Any

from . import _twisted

_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if hasattr(os, "splice") else 0
PIPE_SIZE = 256 * 1024
# Moves per readiness event before giving other connections their turn.
_MOVES_PER_EVENT = 8


def available() -> bool:
    """
    Whether this platform can splice.
    """
    return hasattr(os, "splice")


def upgradable(transport: Any) -> bool:
    """
    Whether a relayed connection's transport can be handed to the splice
    relay now: a plain socket, open both ways, with no more unsent than a
    pipe holds.
    """
    return _twisted.openBothWays(transport) and (
        _twisted.pendingLength(transport) <= PIPE_SIZE // 2
    )


# Seconds to wait for a pipe when the process is out of descriptors.
PIPE_RETRY = 0.05
# Idle pipes kept for reuse (two descriptors each).
POOL_KEEP = 64


class PipePool:
    """
    Pipes kept for reuse: making two pipes per connection costs more
    connection set-up than the relay saves on a short connection.
    """

    def __init__(self, keep: int = POOL_KEEP) -> None:
        self.keep = keep
        self._idle: list[tuple[int, int]] = []

    def take(self) -> tuple[int, int]:
        """
        An idle pipe, or a new one.
        """
        if self._idle:
            return self._idle.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
        return r, w

    def give(self, pipe: tuple[int, int], empty: bool) -> None:
        """
        Keep C{pipe} for reuse if it is C{empty} and there is room, or close it.
        """
        if empty and len(self._idle) < self.keep:
            self._idle.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])


POOL = PipePool()


class _Flow:
    """
    One direction of a spliced relay: from C{source}'s socket, through a
    pipe, to C{sink}'s socket.
    """

    def __init__(self, source: _Watcher, sink: _Watcher, upward: bool) -> None:
        self.source = source
        self.sink = sink
        # Which way the bytes go, for the relay's C{moved} callback: from the
        # client to the backend, or back.
        self.upward = upward
        # A pipe is held only while bytes are in flight, so an idle relayed
        # connection costs its two sockets and nothing more.
        self.pipe: tuple[int, int] | None = None
        self.inPipe = 0
        self.eof = False
        self.done = False

    def preload(self, data: bytes) -> None:
        """
        Put bytes already read (the peek, or what the ordinary relay had
        not sent yet) in front of everything else.
        """
        if data and self.pipe is None:
            self.pipe = POOL.take()
        while data:
            n = os.write(self.pipe[1], data)  # type: ignore[index]
            self.inPipe += n
            data = data[n:]

    def pump(self) -> None:
        """
        Move what can be moved now; wait for readiness otherwise.
        """
        for _ in range(_MOVES_PER_EVENT):
            if self.inPipe:
                try:
                    n = os.splice(
                        self.pipe[0],  # type: ignore[index]
                        self.sink.fd,
                        self.inPipe,
                        flags=_FLAGS,
                    )
                except BlockingIOError:
                    # The sink is full: stop reading the source until it
                    # drains.
                    self.source.wantRead(False)
                    self.sink.wantWrite(True)
                    return
                self.inPipe -= n
                continue
            self.sink.wantWrite(False)
            if self.eof:
                try:
                    self.sink.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self.done = True
                self.source.wantRead(False)
                self.release()
                self.source.relay.flowDone()
                return
            if self.pipe is None:
                try:
                    self.pipe = POOL.take()
                except OSError:
                    # Out of descriptors for a pipe: wait, without reading,
                    # rather than fail a connection that was routed.
                    self.source.wantRead(False)
                    self.source.relay.retryLater(self)
                    return
            try:
                n = os.splice(self.source.fd, self.pipe[1], PIPE_SIZE, flags=_FLAGS)
            except BlockingIOError:
                self.source.wantRead(True)
                self.release()
                return
            if n == 0:
                self.eof = True
                continue
            self.inPipe += n
            self.source.relay.moved(self.upward, n)
        # Still busy: come back on the next readiness event, of the sink if
        # bytes wait in the pipe, else of the source.
        self.source.wantRead(not self.inPipe)
        self.sink.wantWrite(bool(self.inPipe))

    def release(self) -> None:
        """
        Give the pipe back; an empty one goes back to the pool.
        """
        if self.pipe is not None:
            POOL.give(self.pipe, empty=self.inPipe == 0)
            self.pipe = None


class _Watcher:
    """
    Drives one socket for the splice relay through its own Twisted
    transport: while spliced, the transport's C{doRead} and C{doWrite} are
    the relay's, so the reactor keeps one selectable per descriptor (the
    transport) and closing the connection stays Twisted's business.
    """

    def __init__(self, relay: SpliceRelay, transport: Any) -> None:
        self.relay = relay
        self.transport = transport
        self.sock: socket.socket = transport.socket
        self.fd = self.sock.fileno()
        self.outgoing: _Flow | None = None
        self.incoming: _Flow | None = None
        self.reading = False
        self.writing = False
        _twisted.takeEvents(transport, self.doRead, self.doWrite)

    def wantRead(self, on: bool) -> None:
        if on != self.reading:
            self.reading = on
            if on:
                self.transport.startReading()
            else:
                self.transport.stopReading()

    def wantWrite(self, on: bool) -> None:
        if on != self.writing:
            self.writing = on
            if on:
                self.transport.startWriting()
            else:
                self.transport.stopWriting()

    def release(self) -> None:
        """
        Stop driving the socket and give the transport its own methods back.
        """
        self.wantRead(False)
        self.wantWrite(False)
        _twisted.giveEventsBack(self.transport, self.doRead, self.doWrite)

    def doRead(self) -> None:
        self.relay.run(self.outgoing)

    def doWrite(self) -> None:
        self.relay.run(self.incoming)


class NoRoom(Exception):
    """
    What must be sent first does not fit in a pipe: keep the ordinary relay.
    """



def _pipeFor(data: bytes) -> tuple[int, int] | None:
    """
    A pipe that can hold C{data} at once, or L{None} if there is nothing to
    hold.

    @raise NoRoom: if the pipe would be too small (pipes shrink to one page
        once a user holds too many).
    """
    if not data:
        return None
    try:
        pipe = POOL.take()
    except OSError:
        # Out of descriptors: stay on the ordinary relay.
        raise NoRoom() from None
    try:
        capacity = fcntl.fcntl(pipe[1], fcntl.F_GETPIPE_SZ)
    except OSError:
        capacity = 4096
    if len(data) > capacity:
        POOL.give(pipe, empty=True)
        raise NoRoom()
    return pipe


class SpliceRelay:
    """
    Drives a decided connection's two sockets with C{splice(2)} until both
    directions are done.
    """

    def __init__(
        self,
        client: Any,
        backend: Any,
        reactor: Any,
        moved: Callable[[bool, int], object],
        up: bytes = b"",
        down: bytes = b"",
        clientDone: bool = False,
        backendDone: bool = False,
    ) -> None:
        """
        @param client: the client's transport (a plain socket's).
        @param backend: the backend's transport, likewise.
        @param reactor: for timers.
        @param moved: called with C{(upward, count)} whenever C{count} bytes
            were read from one side, C{upward} when from the client: how
            the relay's owner counts bytes and sees activity.
        @param up: bytes for the backend that must go before anything else
            (the peek, or what the ordinary relay had not sent yet).
        @param down: likewise for the client.
        @param clientDone: whether the client has already stopped sending.
        @param backendDone: whether the backend has.
        @raise NoRoom: if C{up} or C{down} does not fit in a pipe; nothing
            was changed.
        """
        self.reactor = reactor
        self.moved = moved
        upPipe = _pipeFor(up)
        try:
            downPipe = _pipeFor(down)
        except NoRoom:
            if upPipe is not None:
                POOL.give(upPipe, empty=True)
            raise
        # The relay drives the sockets until it gives them back.
        clientWatcher = _Watcher(self, client)
        backendWatcher = _Watcher(self, backend)
        self.watchers = (clientWatcher, backendWatcher)
        self.up = _Flow(clientWatcher, backendWatcher, True)
        self.down = _Flow(backendWatcher, clientWatcher, False)
        clientWatcher.outgoing = backendWatcher.incoming = self.up
        backendWatcher.outgoing = clientWatcher.incoming = self.down
        self.finished = False
        self._retry: Any = None
        self.up.pipe, self.down.pipe = upPipe, downPipe
        self.up.preload(up)
        self.down.preload(down)
        if clientDone:
            self.up.eof = True
        if backendDone:
            self.down.eof = True

    def retryLater(self, flow: _Flow) -> None:
        """
        Try C{flow} again shortly, once a pipe may be free.
        """
        if self._retry is None or not self._retry.active():
            self._retry = self.reactor.callLater(PIPE_RETRY, self._retryFlows)

    def _retryFlows(self) -> None:
        self._retry = None
        self.run(self.up)
        self.run(self.down)

    def start(self) -> None:
        """
        Move what can be moved now, both ways.
        """
        self.run(self.up)
        self.run(self.down)

    def run(self, flow: _Flow | None) -> None:
        """
        Pump C{flow}, on its socket's readiness; a socket error ends both.
        """
        if self.finished or flow is None or flow.done:
            return
        try:
            flow.pump()
        except OSError:
            self.fail()

    @property
    def complete(self) -> bool:
        """
        Whether both directions were relayed to their end.
        """
        return self.up.done and self.down.done

    def flowDone(self) -> None:
        """
        One direction reached its end; once both have, close.
        """
        if self.up.done and self.down.done:
            # Both directions were read to their end and written out: the
            # sockets are closed at once (as a transport's own orderly close
            # would, with nothing left to send).
            self.detach()
            # On the next turn of the reactor, not inside the transport
            # callback (doRead or doWrite) that finished the last flow.
            self.reactor.callLater(0, self._close)

    def _close(self) -> None:
        for w in self.watchers:
            _twisted.endAsDone(w.transport)

    def fail(self) -> None:
        """
        A socket failed (reset, broken pipe): both sides are cut off.
        """
        if self.finished:
            return
        self.detach()
        for w in self.watchers:
            w.transport.abortConnection()

    def detach(self) -> None:
        """
        Give the sockets back to their transports.
        """
        if self.finished:
            return
        self.finished = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        for w in self.watchers:
            w.release()
        self.up.release()
        self.down.release()
