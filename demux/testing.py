"""
Helpers for testing matchers, ours and third parties', the same way.

A matcher must reach the same verdict for the same bytes however they arrive:
whole, one byte at a time, or cut anywhere.  L{verdictOf} feeds a matcher
chunks the way a connection would (L{datagramVerdictOf} datagrams, the way a
flow would), and L{assertConsistent} checks every way of cutting a byte
string at once.  L{clientHello} makes the first flight of a
real TLS client, to test a TLS matcher against.  L{reservePort} gives an
integration test a port to hand to a program that must be told its port on
its command line.

Fakes for testing what surrounds a matcher the way demux's own tests do, in
memory: L{ScriptedMatcher} (and L{startsWith}) decides as told;
L{FakeEndpoint} records the connection attempts of a target, for the test to
complete or fail (L{FakeAttempt}); L{HalfCloseTransport} is a
C{StringTransport} that records a half-close.
"""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from ._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, Verdict
from ._peek import DatagramPeek, Peek


def verdictOf(matcher: IMatcher, chunks: Iterable[bytes]) -> Verdict:
    """
    The first verdict other than C{NEED_MORE} that C{matcher} gives while
    C{chunks} arrive one after another, or C{NEED_MORE} if it never decides;
    as the demux protocol would see it.
    """
    peek = Peek()
    verdict = matcher.match(peek)
    if verdict is not NEED_MORE:
        return verdict
    for chunk in chunks:
        peek = peek.extended(chunk)
        verdict = matcher.match(peek)
        if verdict is not NEED_MORE:
            return verdict
    return verdict


def datagramVerdictOf(matcher: IMatcher, datagrams: Iterable[bytes]) -> Verdict:
    """
    The first verdict other than C{NEED_MORE} that C{matcher} gives while a
    flow's C{datagrams} arrive one after another, or C{NEED_MORE} if it
    never decides; as a datagram listener would see it.
    """
    peek = DatagramPeek()
    verdict = matcher.match(peek)
    for datagram in datagrams:
        if verdict is not NEED_MORE:
            break
        peek = peek.extended(datagram)
        verdict = matcher.match(peek)
    return verdict


def splits(data: bytes) -> Iterable[tuple[str, list[bytes]]]:
    """
    Every way L{assertConsistent} cuts C{data}: whole, byte by byte, and in
    two at every offset.
    """
    yield "whole", [data]
    yield "byte by byte", [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield f"cut at {cut}", [data[:cut], data[cut:]]


def assertConsistent(matcher: IMatcher, data: bytes) -> Verdict:
    """
    Check that C{matcher} gives one verdict for C{data} however it is cut,
    and that once it decides on a prefix, every longer prefix gets the same
    answer.

    @return: that verdict.
    @raise AssertionError: naming the cut that disagreed.
    """
    expected = matcher.match(Peek(data))
    for how, chunks in splits(data):
        got = verdictOf(matcher, chunks)
        if got is not expected:
            raise AssertionError(
                f"{matcher!r}: {expected.value} for the whole input but "
                f"{got.value} when fed {how}"
            )
    decided = None
    for n in range(len(data) + 1):
        verdict = matcher.match(Peek(data[:n]))
        if decided is not None and verdict is not decided:
            raise AssertionError(
                f"{matcher!r}: said {decided.value} at a shorter prefix but "
                f"{verdict.value} after {n} bytes"
            )
        if verdict is not NEED_MORE:
            decided = verdict
    return expected


def clientHello(
    serverName: str | None,
    alpn: Sequence[str] = (),
    maximum: ssl.TLSVersion | None = None,
) -> bytes:
    """
    The first flight of a real TLS client, this Python's C{ssl} module (its
    OpenSSL), made in memory with no network: a ClientHello naming
    C{serverName} (none if L{None}), offering C{alpn}, and at most
    C{maximum}'s protocol version if given.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if maximum is not None:
        context.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=serverName)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


# Ports handed out by reservePort, and the open lock files that keep other
# processes from being handed them too, for as long as this process lives.
_reserved: dict[int, int] = {}


def _ephemeralRange() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        # Linux's default, and near enough to other systems' (IANA's is
        # 49152-65535, inside this once the top is excluded below).
        return 32768, 60999


def _candidates() -> list[int]:
    low, high = _ephemeralRange()
    if 65535 - high >= 2000:
        ports = list(range(high + 1, 65536))
    else:
        ports = list(range(max(1024, low - 8000), low))
    # Start where this process's id points, so that concurrent test runs
    # seldom try the same ports first.
    start = os.getpid() % len(ports)
    return ports[start:] + ports[:start]


def reservePort(host: str = "127.0.0.1", candidates: Iterable[int] | None = None) -> int:
    """
    A TCP port for a server that must be told its port before it starts
    (HAProxy, C{openssl s_server}, Syncthing's servers, C{twistd demux}).

    Picking a port by binding port 0 and closing the socket is a race: the
    kernel may give the same port to the next socket that binds port 0, or
    to an outgoing connection, before the server binds it.  This port can't
    be given to either: it lies outside the kernel's ephemeral range
    (C{net.ipv4.ip_local_port_range}), from which both are served.  Other
    processes that use this function are kept off it by a lock file held
    until this process exits, and this process never hands it out twice.

    @param candidates: the ports to choose from instead (for a privileged
        port, say); by default those above (or else below) the ephemeral
        range.
    @raise RuntimeError: if every candidate is taken.
    """
    lockDirectory = Path(tempfile.gettempdir()) / "demux-test-ports"
    lockDirectory.mkdir(mode=0o1777, exist_ok=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in _candidates() if candidates is None else candidates:
        if port in _reserved:
            continue
        fd = os.open(lockDirectory / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        with socket.socket(family) as s:
            # As the servers it is meant for do, so that a connection of an
            # earlier test left in TIME_WAIT does not make the port look taken.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                # Held by something that is not a test (a daemon, say).
                os.close(fd)
                continue
        _reserved[port] = fd
        return port
    raise RuntimeError(f"no port left to reserve on {host}")


def releasePort(port: int) -> None:
    """
    Let other processes be handed C{port} again, once the program it was
    reserved for has stopped: for a port that is not one of many, such as
    a fixed one passed to L{reservePort} as its only candidate.
    """
    fd = _reserved.pop(port, None)
    if fd is not None:
        os.close(fd)


@implementer(IMatcher)
@frozen
class ScriptedMatcher:
    """
    A matcher that says C{NEED_MORE} until it has seen C{needs} bytes, then
    C{verdict} (or the verdict C{judge} gives the bytes): to test routing,
    targets and timing without a real protocol's matcher.
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
class FakeAttempt:
    """
    One connection attempt to a L{FakeEndpoint}, which the test completes
    (L{succeed}) or fails (L{fail}) by hand.
    """

    factory: IProtocolFactory
    deferred: Deferred[IProtocol]
    transport: StringTransport | None = None
    protocol: IProtocol | None = None

    def succeed(self) -> IProtocol:
        """
        Complete the attempt with a L{StringTransport}-backed connection.
        """
        # No address: a fake connection has none.
        protocol = self.factory.buildProtocol(None)  # type: ignore[arg-type]
        assert protocol is not None
        self.transport = HalfCloseTransport()
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        self.deferred.callback(protocol)
        return protocol

    def fail(self, reason: Exception) -> None:
        """
        Fail the attempt with C{reason}.
        """
        self.deferred.errback(Failure(reason))


@implementer(IStreamClientEndpoint)
@define
class FakeEndpoint:
    """
    A client endpoint that records connection attempts for the test to
    complete or fail, to test a target (a backend's dialling, failover,
    timeouts) without a network: give it to a L{demux.BackendTarget}.
    """

    attempts: list[FakeAttempt] = field(factory=list)
    cancelled: int = 0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def cancel(d: Deferred[IProtocol]) -> None:
            self.cancelled += 1

        d: Deferred[IProtocol] = Deferred(cancel)
        self.attempts.append(FakeAttempt(protocolFactory, d))
        return d


class HalfCloseTransport(StringTransport):
    """
    A L{StringTransport} that also records C{loseWriteConnection}, as TCP
    transports offer it.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


__all__ = [
    "FakeAttempt",
    "FakeEndpoint",
    "HalfCloseTransport",
    "ScriptedMatcher",
    "assertConsistent",
    "clientHello",
    "datagramVerdictOf",
    "releasePort",
    "reservePort",
    "splits",
    "startsWith",
    "verdictOf",
]
