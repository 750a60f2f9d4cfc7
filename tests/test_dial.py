"""
Tests for L{demux._dial}: dialling a backend with one C{connect()} on a real
reactor (a private epoll reactor, iterated by hand) and real loopback
sockets.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet import error
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from demux._dial import SocketDial, canDial

from ._fakes import RecordingFactory, iterateUntil


def openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def listener(backlog: int = 16, host: str = "127.0.0.1") -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind((host, 0))
    s.listen(backlog)
    try:
        yield s
    finally:
        s.close()


@contextmanager
def fullListener() -> Iterator[tuple[str, int]]:
    """
    The address of a listener whose accept queue is full, so that the next
    handshake to it is dropped (its connect neither succeeds nor fails).
    """
    with listener(backlog=0) as server:
        address = server.getsockname()
        fillers = []
        try:
            for _ in range(4):
                s = socket.socket()
                fillers.append(s)
                s.setblocking(False)
                s.connect_ex(address)
            yield address
        finally:
            for s in fillers:
                s.close()


class SocketDialTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor.disconnectAll)
        self.failures: list[Failure] = []
        self.factory = RecordingFactory()

    def dial(
        self, address: tuple[str, int], timeout: float = 5, bind: tuple[str, int] | None = None
    ) -> SocketDial:
        dial = SocketDial(
            self.reactor, address, self.factory, self.failures.append, timeout, bind
        )
        dial.start()
        return dial

    def test_realReactorsOnly(self) -> None:
        """
        Only a reactor that watches descriptors and adopts sockets will do;
        a test's fake clock falls back to C{connectTCP}.
        """
        self.assertTrue(canDial(self.reactor))
        self.assertFalse(canDial(Clock()))

    def test_loopbackConnectsAtOnce(self) -> None:
        """
        On loopback the handshake is over before C{start()} returns: the
        protocol is connected without a reactor turn, and its transport
        carries bytes both ways.
        """
        with listener() as server:
            dial = self.dial(server.getsockname())
            self.assertEqual(dial.state, "connected")
            [protocol] = self.factory.protocols
            self.assertTrue(protocol.made)
            accepted, peer = server.accept()
            with accepted:
                self.assertEqual(protocol.transport.getHost().port, peer[1])
                protocol.transport.write(b"to the backend")
                accepted.setblocking(False)
                got = b""

                def arrived() -> bool:
                    nonlocal got
                    try:
                        got += accepted.recv(100)
                    except BlockingIOError:
                        pass
                    return got == b"to the backend"

                iterateUntil(self.reactor, arrived)
                accepted.sendall(b"to demux")
                iterateUntil(self.reactor, lambda: b"".join(protocol.received) == b"to demux")
        self.assertEqual(self.failures, [])

    def test_noDescriptorLeft(self) -> None:
        """
        The dialled socket's own descriptor is closed once the transport has
        adopted it: a connection costs one descriptor, and none once it is
        closed.
        """
        before = openDescriptors()
        with listener() as server:
            self.dial(server.getsockname())
            [protocol] = self.factory.protocols
            self.assertEqual(openDescriptors(), before + 2)  # listener + one
            protocol.transport.abortConnection()
            iterateUntil(self.reactor, lambda: openDescriptors() == before + 1)

    def test_refused(self) -> None:
        """
        Nothing listening: the failure is Twisted's own connection-refused
        error, and no descriptor is left open.
        """
        with listener() as server:
            address = server.getsockname()
        before = openDescriptors()
        dial = self.dial(address)
        iterateUntil(self.reactor, lambda: bool(self.failures))
        [failure] = self.failures
        self.assertTrue(failure.check(error.ConnectionRefusedError))
        self.assertEqual(dial.state, "disconnected")
        self.assertEqual(self.factory.protocols, [])
        self.assertEqual(openDescriptors(), before)

    def test_timeout(self) -> None:
        """
        A backend whose accept queue is full drops the handshake: after the
        connect timeout the attempt fails with a timeout, quietly closed.
        """
        with fullListener() as address:
            before = openDescriptors()
            started = time.monotonic()
            dial = self.dial(address, timeout=0.3)
            self.assertEqual(dial.state, "connecting")
            iterateUntil(self.reactor, lambda: bool(self.failures))
            self.assertGreaterEqual(time.monotonic() - started, 0.29)
            [failure] = self.failures
            self.assertTrue(failure.check(error.TimeoutError))
            self.assertEqual(openDescriptors(), before)
            self.assertEqual(self.reactor.getWriters(), [])

    def test_stopConnecting(self) -> None:
        """
        Abandoned while waiting: no callback either way, the socket closed,
        the timer gone.
        """
        with fullListener() as address:
            before = openDescriptors()
            dial = self.dial(address, timeout=0.2)
            dial.stopConnecting()
            self.assertEqual(dial.state, "disconnected")
            self.assertEqual(openDescriptors(), before)
            self.assertEqual(self.reactor.getWriters(), [])
            self.assertEqual(self.reactor.getDelayedCalls(), [])
            deadline = time.monotonic() + 0.4
            while time.monotonic() < deadline:
                self.reactor.iterate(0.05)
            self.assertEqual(self.failures, [])
            self.assertEqual(self.factory.protocols, [])

    def test_bindAddress(self) -> None:
        """
        The endpoint's C{bindAddress} is the source the backend sees; one
        that cannot be bound fails the attempt with a bind error.
        """
        with listener() as server:
            self.dial(server.getsockname(), bind=("127.0.0.2", 0))
            accepted, peer = server.accept()
            accepted.close()
            self.assertEqual(peer[0], "127.0.0.2")
            taken = server.getsockname()
            before = openDescriptors()
            self.dial(taken, bind=taken)
            [failure] = self.failures
            self.assertTrue(failure.check(error.ConnectBindError))
            self.assertEqual(openDescriptors(), before)
