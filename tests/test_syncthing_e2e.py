"""
End-to-end: demux, configured with the shipped C{examples/syncthing.toml},
in front of the real Syncthing relay and discovery servers, and two real
Syncthing instances syncing a folder through it (issue 3).

Everything goes through the one demux port; the servers listen only on
their own loopback ports.  Each test gets fresh servers, so what their logs
show is that test's traffic only.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest

from demux.testing import clientHello

from ._process import DemuxProcess, freePort, runDemux
from .syncthing import harness
from .syncthing.discovery import DiscoveryClient
from .syncthing.harness import (
    DISCOVERY_HOST,
    EXAMPLE,
    RELAY_HOST,
    Server,
    SyncthingInstance,
    demuxDecisions,
    demuxTraffic,
    waitUntil,
)
from .syncthing.identity import Identity, deviceIDFromDigest, generateIdentity
from .syncthing.relayclient import (
    ALPN,
    MAGIC,
    RelayProtocolConnection,
    Response,
    ResponseCode,
    SessionInvitation,
    joinSession,
)

pytestmark = pytest.mark.e2e

SESSION_BYTES = 16 * 2**20
"""
How much each side of a relay session sends the other.
"""

SYNC_TIMEOUT = 90.0
"""
The bound on two fresh Syncthing instances finding each other through
discovery, connecting through the relay and syncing a file.
"""


@attrs.frozen
class Stack:
    """
    The relay and discovery servers behind one demux running the example.
    """

    directory: Path
    relay: Server
    discovery: Server
    demux: DemuxProcess

    @property
    def port(self) -> int:
        return self.demux.port

    def describe(self) -> str:
        """
        The ends of every log, to explain a failure.
        """
        return "\n".join(
            [
                self.relay.process.tail(),
                self.discovery.process.tail(),
                "--- last lines of demux ---",
                "\n".join(self.demux.log().splitlines()[-40:]),
            ]
        )

    def decisionsFor(self, clientPort: int, timeout: float = 5.0) -> list[str]:
        """
        What demux logged for the connection from C{clientPort}, waiting for
        the line to be written.
        """
        return waitUntil(
            lambda: demuxDecisions(self.demux.log(), clientPort) or None,
            timeout,
            f"a demux decision for 127.0.0.1:{clientPort}",
            self.describe,
            interval=0.05,
        )

    def relayAccepted(self) -> int:
        """
        How many connections the relay has accepted so far.
        """
        return self.relay.process.log().count("Listener accepted connection")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """
    Fresh relay and discovery servers and a demux running the example in
    front of them.  The demux port is chosen first because the relay must
    be told it: its invitations send clients back to C{-ext-address}, and
    that must be demux, or session mode would bypass it.
    """
    demuxPort = freePort()
    with (
        harness.runRelay(tmp_path / "relay", extPort=demuxPort) as relay,
        harness.runDiscovery(tmp_path / "discovery") as discovery,
        runDemux(
            harness.exampleConfig(relay.port, discovery.port), port=demuxPort
        ) as demux,
    ):
        yield Stack(tmp_path, relay, discovery, demux)


def inspectDelay() -> float:
    """
    The example's C{inspect_delay}, the bound on an undecided connection.
    """
    return float(tomllib.loads(EXAMPLE.read_text())["inspect_delay"])


def test_deviceIDsAgreeWithTheServers(stack: Stack) -> None:
    """
    The device IDs the test helpers derive from certificates are the ones
    the real servers print for the same certificates; every other test
    relies on them.
    """
    relayID = stack.relay.process.waitForLog(r"ID: (\S+)").group(1)
    discoveryID = stack.discovery.process.waitForLog(
        r"Server device ID is (\S+)"
    ).group(1)
    assert relayID == stack.relay.identity.deviceID
    assert discoveryID == stack.discovery.identity.deviceID
    assert deviceIDFromDigest(stack.relay.identity.deviceIDBytes) == relayID


def test_discovery(stack: Stack) -> None:
    """
    Through demux (routed by SNI): a device announces its addresses with its
    client certificate, and a lookup of its device ID returns them, as the
    real C{stdiscosrv} answers.
    """
    device = generateIdentity(stack.directory / "device")
    client = DiscoveryClient(
        "127.0.0.1", stack.port, DISCOVERY_HOST, stack.discovery.identity.deviceID
    )
    addresses = [
        f"relay://{RELAY_HOST}:{stack.port}/?id={stack.relay.identity.deviceID}",
        "tcp://device.example.com:22000",
    ]

    unknown = client.lookup(device.deviceID)
    assert unknown.status == 404, unknown

    announced = client.announce(device, addresses)
    assert announced.status == 204, announced
    assert "reannounce-after" in announced.headers

    found = client.lookup(device.deviceID)
    assert found.status == 200, found
    assert sorted(found.json()["addresses"]) == sorted(addresses)

    for answer in (unknown, announced, found):
        assert answer.serverID == stack.discovery.identity.deviceID
        assert stack.decisionsFor(answer.clientPort) == ["route=discovery"]
    log = stack.discovery.process.log()
    assert f"GET /v2/?device={device.deviceID}" in log
    assert "POST /v2/" in log


def test_discoveryRefusesAnnouncementWithoutCertificate(stack: Stack) -> None:
    """
    An announcement without a client certificate gets the server's 403:
    demux passes TLS through untouched, so whether a certificate was
    presented is the discovery server's business and it sees the truth.
    """
    client = DiscoveryClient(
        "127.0.0.1", stack.port, DISCOVERY_HOST, stack.discovery.identity.deviceID
    )
    answer = client.announce(None, ["tcp://device.example.com:22000"])
    assert answer.status == 403, answer
    assert stack.decisionsFor(answer.clientPort) == ["route=discovery"]


def openRelay(
    stack: Stack, identity: Identity, serverName: str | None
) -> RelayProtocolConnection:
    connection = RelayProtocolConnection.open(
        "127.0.0.1",
        stack.port,
        identity,
        serverName=serverName,
        relayID=stack.relay.identity.deviceID,
    )
    assert connection.negotiatedProtocol == ALPN
    return connection


def inviteThroughDemux(
    stack: Stack, serverName: str | None, closing: ExitStack
) -> tuple[
    tuple[Identity, SessionInvitation, str], tuple[Identity, SessionInvitation, str]
]:
    """
    Client A joins the relay through demux; client B, also through demux,
    asks for a session with A.  Both get their invitations.

    @return: for A and for B, the identity, the invitation and the address
        the protocol-mode connection reached.
    """
    a = generateIdentity(stack.directory / "a")
    b = generateIdentity(stack.directory / "b")

    joined = closing.enter_context(_closing(openRelay(stack, a, serverName)))
    response = joined.join()
    assert response == Response(ResponseCode.SUCCESS, response.message), response
    joined.ping()

    requester = closing.enter_context(_closing(openRelay(stack, b, serverName)))
    invitationB = requester.requestSession(a.deviceIDBytes)
    assert isinstance(invitationB, SessionInvitation), invitationB
    invitationA = joined.waitForInvitation()

    assert invitationB.fromDevice == a.deviceIDBytes
    assert invitationA.fromDevice == b.deviceIDBytes
    assert invitationA.serverSocket != invitationB.serverSocket

    for connection in (joined, requester):
        port = connection.tls.getsockname()[1]
        assert stack.decisionsFor(port) == ["route=relay-protocol"]
    log = stack.relay.process.log()
    assert f"JoinRelayRequest from {a.deviceID}" in log
    assert f"ConnectRequest from {b.deviceID}" in log
    return (a, invitationA, joined.peerHost), (b, invitationB, requester.peerHost)


class _closing:
    def __init__(self, connection: RelayProtocolConnection) -> None:
        self.connection = connection

    def __enter__(self) -> RelayProtocolConnection:
        return self.connection

    def __exit__(self, *exc: object) -> None:
        self.connection.close()


@pytest.mark.parametrize(
    "serverName", [None, RELAY_HOST], ids=["no-sni", "sni-relay-host"]
)
def test_relayProtocolMode(stack: Stack, serverName: str | None) -> None:
    """
    Through demux (routed by ALPN C{bep-relay}, with no SNI as older
    Syncthing releases send, and with the relay's host name as SNI as newer
    ones do): a client with a certificate joins the real C{strelaysrv}
    (Response code 0) and a second client's ConnectRequest for the first
    device gets a SessionInvitation, as does the first client.

    The invitations send both back to the demux port: the relay runs with
    C{-ext-address :DEMUX_PORT} and leaves the address empty, meaning "where
    you reached me".
    """
    with ExitStack() as closing:
        (_, invitationA, hostA), (_, invitationB, hostB) = inviteThroughDemux(
            stack, serverName, closing
        )
        for invitation, host in ((invitationA, hostA), (invitationB, hostB)):
            assert invitation.sessionAddress(host) == ("127.0.0.1", stack.port)


def test_relaySessionMode(stack: Stack) -> None:
    """
    Through demux (routed by the magic 9e79bc40): both clients join the
    session from their invitations and exchange 16 MiB each way through the
    relay, and the bytes arrive intact.
    """
    with ExitStack() as closing:
        (a, invitationA, hostA), (b, invitationB, hostB) = inviteThroughDemux(
            stack, None, closing
        )
        # One after the other, as two real devices would: strelaysrv hands a
        # joining connection to its session without waiting (an unbuffered
        # channel and a non-blocking send), so two joins in the same instant
        # can find the session busy with the first and be told "already
        # connected".  The relay answers each join at once, so A's join does
        # not wait for B's.
        sessionA = closing.enter_context(joinSession(invitationA, hostA))
        sessionB = closing.enter_context(joinSession(invitationB, hostB))

        for session in (sessionA, sessionB):
            assert session.getpeername() == ("127.0.0.1", stack.port)
            first = stack.decisionsFor(session.getsockname()[1])
            assert first == ["route=relay-session"], first

        started = time.monotonic()
        (sentAB, gotAB), (sentBA, gotBA) = exchange(sessionA, sessionB, SESSION_BYTES)
        elapsed = time.monotonic() - started
        assert gotAB == sentAB, "A to B: the bytes B received differ from what A sent"
        assert gotBA == sentBA, "B to A: the bytes A received differ from what B sent"
        print(f"relayed {SESSION_BYTES} bytes each way in {elapsed:.2f} s")

        ports = [session.getsockname()[1] for session in (sessionA, sessionB)]
        sessionA.close()
        sessionB.close()

    # demux itself carried every byte, both ways, for both clients.
    def traffic(port: int) -> tuple[int, int] | None:
        return demuxTraffic(stack.demux.log(), port)

    for port in ports:
        up, down = waitUntil(
            partial(traffic, port),
            10,
            f"demux logging the end of the session from port {port}",
            stack.describe,
        )
        assert up >= SESSION_BYTES and down >= SESSION_BYTES, (up, down)
    assert "Session <" in stack.relay.process.log()


def exchange(
    left: socket.socket, right: socket.socket, size: int, timeout: float = 60.0
) -> tuple[tuple[str, str], tuple[str, str]]:
    """
    Send C{size} random bytes each way between C{left} and C{right} at once;
    the SHA-256 of what was sent and of what arrived, left to right and
    right to left.
    """
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def guarded(name: str, work: Callable[[], str]) -> Callable[[], None]:
        def run() -> None:
            try:
                results[name] = work()
            except BaseException as e:
                errors.append(e)

        return run

    def send(sock: socket.socket, data: bytes) -> str:
        sock.settimeout(timeout)
        view = memoryview(data)
        for offset in range(0, len(data), 256 * 1024):
            sock.sendall(view[offset : offset + 256 * 1024])
        return hashlib.sha256(data).hexdigest()

    def receive(sock: socket.socket) -> str:
        sock.settimeout(timeout)
        digest = hashlib.sha256()
        remaining = size
        while remaining:
            chunk = sock.recv(min(remaining, 256 * 1024))
            if not chunk:
                raise ConnectionError(f"session closed with {remaining} bytes missing")
            digest.update(chunk)
            remaining -= len(chunk)
        return digest.hexdigest()

    toRight = os.urandom(size)
    toLeft = os.urandom(size)
    threads = [
        threading.Thread(target=guarded("sentLR", lambda: send(left, toRight))),
        threading.Thread(target=guarded("gotLR", lambda: receive(right))),
        threading.Thread(target=guarded("sentRL", lambda: send(right, toLeft))),
        threading.Thread(target=guarded("gotRL", lambda: receive(left))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    if errors:
        raise errors[0]
    if len(results) != 4:
        raise AssertionError(f"the exchange did not finish within {timeout} s")
    return (results["sentLR"], results["gotLR"]), (results["sentRL"], results["gotRL"])


def readUntilClosed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """
    Everything received on C{sock} until the peer closes it, and how long
    after the call that took.
    """
    started = time.monotonic()
    sock.settimeout(timeout)
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def test_othersReachNeitherServer(stack: Stack) -> None:
    """
    A TLS connection with some other SNI and no C{bep-relay} ALPN, and junk
    bytes, are refused at once: closed without a byte from either server,
    and the relay never sees them.  A connection that says nothing, or only
    the start of the relay magic, is closed when C{inspect_delay} runs out.
    """
    delay = inspectDelay()
    acceptedBefore = stack.relayAccepted()
    hello = clientHello("other.example.com", ["h2", "http/1.1"])
    assert b"other.example.com" in hello and b"bep-relay" not in hello
    junk = b"\x00\x01\x02 this is no protocol demux knows\r\n" * 4
    cases = {
        "other-sni": (hello, 2.0),
        "junk": (junk, 2.0),
        "silent": (b"", delay + 2.0),
        "partial-magic": (MAGIC.to_bytes(4, "big")[:2], delay + 2.0),
    }

    def attempt(first: bytes, bound: float) -> tuple[int, bytes, float]:
        with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
            port = sock.getsockname()[1]
            if first:
                sock.sendall(first)
            received, elapsed = readUntilClosed(sock, bound + 5)
            return port, received, elapsed

    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(attempt, *case) for name, case in cases.items()}
        outcomes = {name: future.result() for name, future in futures.items()}

    for name, (port, received, elapsed) in outcomes.items():
        bound = cases[name][1]
        assert received == b"", f"{name}: a server answered {received[:40]!r}"
        assert elapsed <= bound, f"{name}: closed only after {elapsed:.2f} s"
        assert stack.decisionsFor(port) == ["refused"], name
    for name in ("silent", "partial-magic"):
        elapsed = outcomes[name][2]
        assert elapsed >= delay - 0.5, f"{name}: closed after {elapsed:.2f} s"
    time.sleep(0.5)
    assert stack.relayAccepted() == acceptedBefore, stack.relay.process.tail()


# The real thing: two Syncthing instances.


FOLDER = "demux-e2e"


def test_syncthingSyncsThroughDemux(stack: Stack) -> None:
    """
    Two real Syncthing instances, each listening only on the relay through
    demux and using only the discovery server through demux, find each
    other, connect through the relay, and sync a file byte for byte.
    """
    harness.requireBinary("syncthing")
    hostsFile = harness.writeHostsFile(stack.directory / "hosts")
    harness.requireHostsNamespace(hostsFile)
    relayURL = f"relay://{RELAY_HOST}:{stack.port}/?id={stack.relay.identity.deviceID}"
    discoveryURL = (
        f"https://{DISCOVERY_HOST}:{stack.port}/?id={stack.discovery.identity.deviceID}"
    )
    demuxLogStart = len(stack.demux.log())

    homes = {}
    for name in ("alice", "bob"):
        home = harness.makeSyncthingHome(
            stack.directory / name, name, relayURL, discoveryURL
        )
        assert home.identity.deviceID == home.printedDeviceID
        homes[name] = home

    with ExitStack() as running:
        alice, bob = (
            running.enter_context(harness.runSyncthing(homes[name], hostsFile, name))
            for name in ("alice", "bob")
        )

        def describe() -> str:
            return "\n".join(
                [stack.describe(), alice.process.tail(), bob.process.tail()]
            )

        # Both join the relay through demux and announce themselves, relay
        # address included, to the discovery server through demux.
        client = DiscoveryClient(
            "127.0.0.1", stack.port, DISCOVERY_HOST, stack.discovery.identity.deviceID
        )
        expected = f"relay://{RELAY_HOST}:{stack.port}/"

        def announced(instance: SyncthingInstance) -> list[str] | None:
            answer = client.lookup(instance.deviceID)
            if answer.status != 200:
                return None
            addresses = answer.json()["addresses"]
            return addresses if any(a.startswith(expected) for a in addresses) else None

        def joinedRelay(instance: SyncthingInstance) -> bool:
            return (
                f"JoinRelayRequest from {instance.deviceID}"
                in stack.relay.process.log()
            )

        for instance in (alice, bob):
            waitUntil(
                partial(joinedRelay, instance),
                30,
                f"{instance.process.name} joining the relay",
                describe,
            )
            addresses = waitUntil(
                partial(announced, instance),
                60,
                f"{instance.process.name} announcing its relay address",
                describe,
                interval=1,
            )
            assert all(a.startswith("relay://") for a in addresses), addresses

        # Now that each can be found, tell each about the other.
        folders = {
            name: stack.directory / f"{name}-folder" for name in ("alice", "bob")
        }
        for instance, peer in ((alice, bob), (bob, alice)):
            folders[instance.process.name].mkdir()
            instance.shareFolder(peer, FOLDER, folders[instance.process.name])

        def connected(
            instance: SyncthingInstance, peer: SyncthingInstance
        ) -> dict[str, Any] | None:
            connection = instance.rest("GET", "/rest/system/connections")[
                "connections"
            ].get(peer.deviceID)
            return connection if connection and connection["connected"] else None

        for instance, peer in ((alice, bob), (bob, alice)):
            connection = waitUntil(
                partial(connected, instance, peer),
                SYNC_TIMEOUT,
                f"{instance.process.name} connecting to {peer.process.name}",
                describe,
                interval=0.5,
            )
            # A relay session, joined at the demux port: not a direct
            # connection, and not one that went around demux.
            assert connection["type"].startswith("relay-"), connection
            assert connection["address"] == f"127.0.0.1:{stack.port}", connection

        # A file written on one side appears on the other, byte for byte.
        for source, target in ((alice, bob), (bob, alice)):
            name = f"from-{source.process.name}.bin"
            content = os.urandom(1024 * 1024 + 17)
            (folders[source.process.name] / name).write_bytes(content)
            source.rest("POST", f"/rest/db/scan?folder={FOLDER}")
            copy = folders[target.process.name] / name

            def arrived(copy: Path = copy, content: bytes = content) -> bool:
                return copy.exists() and copy.read_bytes() == content

            waitUntil(
                arrived,
                SYNC_TIMEOUT,
                f"{name} appearing on {target.process.name}",
                describe,
                interval=0.5,
            )

    # Every connection the two instances made went through demux and was
    # routed: joins and invitation requests by ALPN, announcements and
    # lookups by SNI, sessions by the magic.
    log = stack.demux.log()[demuxLogStart:]
    routes = {
        name: log.count(f" route={name} (")
        for name in ("relay-session", "relay-protocol", "discovery")
    }
    assert routes["relay-protocol"] >= 2, routes
    assert routes["discovery"] >= 2, routes
    assert routes["relay-session"] >= 2, routes
    assert " refused" not in log and "closed before a route" not in log, log
    relayLog = stack.relay.process.log()
    for instance in (alice, bob):
        assert f"JoinRelayRequest from {instance.deviceID}" in relayLog
    discoveryLog = stack.discovery.process.log()
    assert any(
        f"GET /?device={instance.deviceID}" in discoveryLog for instance in (alice, bob)
    ), discoveryLog
    reasons = sorted(set(re.findall(r" route=relay-protocol \(([^)]*)\)", log)))
    print(f"demux routed {routes} for the two Syncthing instances")
    print(f"what Syncthing's relay-protocol connections showed demux: {reasons}")
