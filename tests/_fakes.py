"""
Small recording fakes for the logic tests: scripted matchers and a client
endpoint whose connection attempts the test completes by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Factory, Protocol

from demux.testing import FakeAttempt
from demux.testing import FakeEndpoint as FakeEndpoint
from demux.testing import HalfCloseTransport as HalfCloseTransport
from demux.testing import ScriptedMatcher as ScriptedMatcher
from demux.testing import startsWith as startsWith

# The fakes third parties would want too live in demux.testing; the
# names are kept here for the tests that import them from here.
Attempt = FakeAttempt


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
