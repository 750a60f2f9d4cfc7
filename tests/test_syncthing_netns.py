"""
End-to-end, in network namespaces: does the discovery server behind demux
learn where a device really is?

Two real Syncthing devices, A and B, each in a network namespace of its own
with its own address (C{10.231.1.2}, C{10.231.2.2}), listen on their
dynamic address C{tcp://0.0.0.0:22000} and on the relay, and use the
discovery server, all through one demux on port 443 of a server namespace
that routes between them.  The discovery server fills in a dynamic address
with the address the announcement came from:

  - with the shipped example, demux relays the TLS untouched, the discovery
    server sees C{127.0.0.1} and drops the address, so B can reach A only
    through the relay;
  - with demux ending TLS for the discovery route and forwarding HTTP to
    C{stdiscosrv -http} with the client's address and certificate in
    headers, the lookup of A says C{tcp://10.231.1.2:22000}, and B connects
    to A directly.

The second needs TLS termination in demux (the C{tls.*} keys and C{http://}
backends of the discovery route); without it demux refuses the
configuration and those tests fail saying so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest

from ._process import DemuxProcess
from .syncthing import harness, netns, netstack
from .syncthing.harness import waitUntil
from .syncthing.netstack import Lookup, NamespacedSyncthing, Servers

pytestmark = pytest.mark.e2e

DEVICES = ("a", "b")

ANNOUNCE_TIMEOUT = 60.0
"""
The bound on a fresh device joining the relay and announcing itself with
its relay address.
"""

CONNECT_TIMEOUT = 60.0
"""
The bound on B connecting to A once each knows the other, and on a file
syncing.
"""

FOLDER = "demux-netns"


@attrs.frozen
class NetStack:
    """
    The namespaces, the servers, demux and the running devices.
    """

    directory: Path
    topology: netns.Topology
    servers: Servers
    demux: DemuxProcess
    devices: dict[str, NamespacedSyncthing]

    def describe(self) -> str:
        """
        The ends of every log, to explain a failure.
        """
        return "\n".join(
            [
                self.servers.relay.tail(20),
                self.servers.discovery.tail(40),
                "--- last lines of demux ---",
                "\n".join(self.demux.log().splitlines()[-40:]),
                *(device.process.tail(40) for device in self.devices.values()),
            ]
        )

    def lookup(self, name: str, fromDevice: str = "b") -> Lookup:
        """
        Look device C{name} up, with C{curl} from C{fromDevice}'s namespace.
        """
        return netstack.lookup(
            self.topology,
            self.topology.devices[fromDevice],
            self.devices[name].deviceID,
        )

    def waitForAnnouncement(self, name: str) -> Lookup:
        """
        Wait until the discovery server lists device C{name}'s relay
        address, which it announces once it has joined the relay; its
        dynamic address is in the same announcement, so what the lookup
        says then is what the discovery server made of it.
        """
        relay = f"relay://{harness.RELAY_HOST}:{netstack.DEMUX_PORT}/"

        def announced() -> Lookup | None:
            self.devices[name].process.checkAlive()
            answer = self.lookup(name)
            if any(a.startswith(relay) for a in answer.addresses):
                return answer
            return None

        return waitUntil(
            announced,
            ANNOUNCE_TIMEOUT,
            f"device {name} announcing its relay address",
            self.describe,
            interval=0.5,
        )


@contextmanager
def _buildStack(
    directory: Path, names: tuple[str, ...], terminating: bool
) -> Iterator[NetStack]:
    harness.requireBinary("syncthing")
    harness.requireBinary("curl")
    started = time.monotonic()
    with ExitStack() as running:
        topology = running.enter_context(netns.topology(DEVICES))
        servers = running.enter_context(
            netstack.runServers(topology, directory, discoveryHTTP=terminating)
        )
        if terminating:
            config = netstack.terminatingConfig(topology, servers.discoveryIdentity)
        else:
            config = netstack.passThroughConfig(topology)
        demux = running.enter_context(netstack.runDemuxIn(topology, config))
        hostsFile = netstack.writeHostsFile(directory / "hosts", topology)
        devices = {}
        for name in names:
            home = netstack.makeHome(directory / name, name, servers)
            devices[name] = running.enter_context(
                netstack.runSyncthingIn(topology.devices[name], home, hostsFile, name)
            )
        print(f"stack up in {time.monotonic() - started:.1f} s")
        yield NetStack(directory, topology, servers, demux, devices)


def _connection(
    instance: NamespacedSyncthing, peer: NamespacedSyncthing
) -> dict[str, Any] | None:
    connection = instance.rest("GET", "/rest/system/connections")["connections"].get(
        peer.deviceID
    )
    return connection if connection and connection["connected"] else None


def _introduce(stack: NetStack) -> dict[str, Any]:
    """
    Tell A and B about each other (by device ID only: their addresses come
    from the discovery server), share a folder between them, and wait for
    B to be connected to A; return B's connection to A as its REST API
    describes it.
    """
    a, b = stack.devices["a"], stack.devices["b"]
    for instance, peer in ((a, b), (b, a)):
        folder = stack.directory / f"{instance.process.name}-folder"
        folder.mkdir()
        instance.shareFolder(peer, FOLDER, folder)
    return waitUntil(
        partial(_connection, b, a),
        CONNECT_TIMEOUT,
        "B connecting to A",
        stack.describe,
        interval=0.5,
    )


@pytest.fixture(scope="module")
def terminated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetStack]:
    """
    Both devices, behind a demux that ends TLS for discovery.
    """
    with _buildStack(tmp_path_factory.mktemp("terminated"), DEVICES, True) as stack:
        yield stack


def test_passThroughDropsTheDynamicAddress(tmp_path: Path) -> None:
    """
    With the shipped example (discovery relayed as TLS to C{stdiscosrv}),
    the discovery server sees A's announcement coming from C{127.0.0.1}:
    once A has announced itself, the lookup lists its relay address but no
    C{tcp://} address at all, and B can reach A only through the relay.
    This is what the terminated discovery route fixes, and shows that the
    tests below can fail.
    """
    with _buildStack(tmp_path, DEVICES, terminating=False) as stack:
        answer = stack.waitForAnnouncement("a")
        print(f"pass-through: lookup of A from B: {answer.status} {answer.body}")
        assert answer.tcpAddresses() == [], f"{answer}\n{stack.describe()}"
        address = stack.topology.devices["a"].address
        log = stack.demux.log()
        assert f"{address}:" in log and " route=discovery (" in log, log

        stack.waitForAnnouncement("b")
        connection = _introduce(stack)
        print(f"pass-through: B's connection to A: {connection['type']}")
        assert connection["type"].startswith("relay-"), connection


def test_terminatedDiscoveryPublishesTheDeviceAddress(terminated: NetStack) -> None:
    """
    With demux ending TLS for discovery and telling C{stdiscosrv -http} the
    client's address, the lookup of A (HTTPS through demux, from B's
    namespace) lists A's own address with its sync port.
    """
    answer = terminated.waitForAnnouncement("a")
    print(f"terminated: lookup of A from B: {answer.status} {answer.body}")
    address = terminated.topology.devices["a"].address
    assert f"tcp://{address}:{netstack.SYNC_PORT}" in answer.addresses, (
        f"{answer}\n{terminated.describe()}"
    )
    assert all(a.startswith(f"tcp://{address}:") for a in answer.tcpAddresses()), answer


def test_devicesConnectDirectlyAndSync(terminated: NetStack) -> None:
    """
    Knowing each other only by device ID, B finds A through the discovery
    server behind demux and connects to it directly (C{tcp-client} or
    C{tcp-server}, not through the relay), and a file written on A appears
    on B byte for byte.
    """
    a, b = terminated.devices["a"], terminated.devices["b"]
    for name in ("a", "b"):
        terminated.waitForAnnouncement(name)
    connection = _introduce(terminated)
    print(f"B's connection to A: {connection['type']} {connection['address']}")
    assert connection["type"] in ("tcp-client", "tcp-server"), (
        f"{connection}\n{terminated.describe()}"
    )
    deviceA = terminated.topology.devices["a"].address
    assert connection["address"].startswith(f"{deviceA}:"), connection

    content = os.urandom(1024 * 1024 + 17)
    (terminated.directory / "a-folder" / "from-a.bin").write_bytes(content)
    a.rest("POST", f"/rest/db/scan?folder={FOLDER}")
    copy = terminated.directory / "b-folder" / "from-a.bin"
    waitUntil(
        lambda: copy.exists() and copy.read_bytes() == content,
        CONNECT_TIMEOUT,
        "from-a.bin appearing on B",
        terminated.describe,
        interval=0.5,
    )
    # Still direct once the data has flowed.
    final = _connection(b, a)
    assert final is not None and final["type"].startswith("tcp-"), final


def test_leftoversOfADeadRunAreRemoved() -> None:
    """
    Namespaces named after a test process that no longer exists (a run
    that crashed), and what still runs in them, are removed before new ones
    are made; those of a live process are left alone.
    """
    netns.requireNamespaces()
    probe = subprocess.Popen(["true"])
    probe.wait()
    deadPid = probe.pid
    dead = netns.Namespace(f"{netns.PREFIX}{deadPid}-left")
    alive = netns.Namespace(f"{netns.PREFIX}{os.getpid()}-keep")
    try:
        for namespace in (dead, alive):
            subprocess.run(["ip", "netns", "add", namespace.name], check=True)
        sleeper = subprocess.Popen(dead.command(["sleep", "60"]))
        waitUntil(lambda: sleeper.pid in dead.pids(), 10, "sleep running")
        removed = netns.removeLeftovers()
        assert dead.name in removed and alive.name not in removed, removed
        assert not dead.path.exists() and alive.path.exists()
        assert sleeper.wait(10) == -signal.SIGKILL
    finally:
        for namespace in (dead, alive):
            if namespace.path.exists():
                namespace.delete()
