"""
Small recording fakes for the logic tests: scripted matchers and a client
endpoint whose connection attempts the test completes by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from demux import MATCH, NEED_MORE, NO_MATCH, IMatcher, Peek, Verdict


@implementer(IMatcher)
@frozen
class ScriptedMatcher:
    """
    Says C{NEED_MORE} until it has seen C{needs} bytes, then C{verdict} (or
    the verdict C{judge} gives the bytes).
    """

    needs: int
    verdict: Verdict = MATCH
    judge: Callable[[bytes], Verdict] | None = None
    label: str = "scripted"

    def match(self, peek: Peek) -> Verdict:
        if len(peek) < self.needs:
            return NEED_MORE
        if self.judge is not None:
            return self.judge(peek.data)
        return self.verdict

    def describe(self, peek: Peek) -> str:
        return self.label


def startsWith(prefix: bytes) -> ScriptedMatcher:
    """
    A matcher for bytes that start with C{prefix}.
    """

    def judge(data: bytes) -> Verdict:
        return MATCH if data.startswith(prefix) else NO_MATCH

    return ScriptedMatcher(len(prefix), judge=judge, label=f"prefix={prefix!r}")


@define
class Attempt:
    """
    One connection attempt to a L{FakeEndpoint}.
    """

    factory: IProtocolFactory
    deferred: Deferred[Protocol]
    transport: StringTransport | None = None
    protocol: Protocol | None = None

    def succeed(self) -> Protocol:
        """
        Complete the attempt with a L{StringTransport}-backed connection.
        """
        protocol = self.factory.buildProtocol(None)
        assert protocol is not None
        self.transport = HalfCloseTransport()
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        self.deferred.callback(protocol)
        return protocol

    def fail(self, reason: Exception) -> None:
        self.deferred.errback(Failure(reason))


@implementer(IStreamClientEndpoint)
@define
class FakeEndpoint:
    """
    A client endpoint that records connection attempts for the test to
    complete or fail.
    """

    attempts: list[Attempt] = field(factory=list)
    cancelled: int = 0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Protocol]:
        def cancel(d: Deferred[Protocol]) -> None:
            self.cancelled += 1

        d: Deferred[Protocol] = Deferred(cancel)
        self.attempts.append(Attempt(protocolFactory, d))
        return d


class HalfCloseTransport(StringTransport):
    """
    A L{StringTransport} that also records C{loseWriteConnection}, as TCP
    transports offer it.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


def iterateUntil(reactor: Any, done: Callable[[], bool], seconds: float = 5) -> None:
    """
    Turn C{reactor} (a real one, not running) by hand until C{done()} says
    so, failing after C{seconds}.
    """
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {seconds}s")
        reactor.iterate(0.01)


class Recorder(Protocol):
    """
    A protocol that records what it gets: an in-process target, or the
    backend end of a dial.
    """

    def __init__(self) -> None:
        self.made = False
        self.received: list[bytes] = []
        self.lost = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


class RecordingFactory(Factory):
    def __init__(self) -> None:
        self.protocols: list[Recorder] = []

    def buildProtocol(self, addr: object) -> Recorder:
        p = Recorder()
        self.protocols.append(p)
        return p
