"""
The Syncthing stack of C{examples/syncthing.toml} inside network namespaces:
C{strelaysrv}, C{stdiscosrv} and demux in the server namespace, one real
Syncthing in each device's namespace.

This is what the discovery tests need that the loopback harness cannot
give: devices with addresses of their own, so that what the discovery server
publishes for a device can be compared with where the device really is.

In its own namespace every program can have its usual port: demux listens on
443 of L{netns.SERVER_ADDRESS}, the relay and the discovery server on their
default ports (22067 and 8443) of the server namespace's loopback, which are
exactly the example's backends, and each Syncthing listens on 22000 and has
its REST API on loopback.
"""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .._process import DemuxProcess, runDemux
from . import harness
from .harness import (
    DISCOVERY_DEFAULT_PORT,
    DISCOVERY_HOST,
    RELAY_DEFAULT_PORT,
    RELAY_HOST,
    ManagedProcess,
    SyncthingHome,
    SyncthingInstance,
    managedProcess,
    waitUntil,
)
from .identity import Identity, generateIdentity
from .netns import Device, Namespace, Topology

DEMUX_PORT = 443
"""
demux's port, the one the how-to uses; free in a namespace of our own.
"""

SYNC_PORT = 22000
"""
The port of each device's C{tcp://0.0.0.0:22000} listen address, which it
announces as is: the discovery server is to fill in the address.
"""


def waitForListeningIn(
    namespace: Namespace, port: int, process: ManagedProcess, timeout: float = 15.0
) -> None:
    """
    Block until C{process}, running in C{namespace}, has a socket listening
    on C{port}; read from the kernel's table rather than by connecting, as
    L{harness.waitForListening} does.
    """

    def check() -> bool:
        process.checkAlive()
        return port in namespace.listeningPorts(process.process.pid)

    waitUntil(check, timeout, f"{process.name} listening on {port}", process.tail, 0.05)


@contextmanager
def runServerIn(
    namespace: Namespace, name: str, argv: Sequence[str], directory: Path, port: int
) -> Iterator[ManagedProcess]:
    """
    Run C{argv} in C{namespace} and wait for it to listen on C{port}.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with managedProcess(name, namespace.command(argv), directory) as process:
        waitForListeningIn(namespace, port, process)
        yield process


@attrs.frozen
class Servers:
    """
    The relay and the discovery server, and the certificate demux presents
    when it ends TLS for the discovery route.
    """

    relayIdentity: Identity
    relay: ManagedProcess
    discoveryIdentity: Identity
    discovery: ManagedProcess
    discoveryHTTP: bool


@contextmanager
def runServers(
    topology: Topology, directory: Path, discoveryHTTP: bool
) -> Iterator[Servers]:
    """
    Run C{strelaysrv} and C{stdiscosrv} on the server namespace's loopback,
    on their default ports.

    @param discoveryHTTP: run the discovery server with C{-http}, behind a
        front that ends TLS and tells it the client's address and
        certificate in headers; otherwise it speaks HTTPS itself and sees
        what demux relays as coming from the TCP peer, C{127.0.0.1}.
    """
    relayIdentity = generateIdentity(directory / "relay" / "keys", "strelaysrv")
    relayArgv = [
        harness.requireBinary("strelaysrv"),
        "-keys", str(relayIdentity.directory),
        "-listen", f"127.0.0.1:{RELAY_DEFAULT_PORT}",
        "-ext-address", f":{DEMUX_PORT}",
        "-pools=",
        "-status-srv=",
        "-protocol", "tcp4",
        "-debug",
    ]  # fmt: skip
    # The certificate the devices pin with ?id=: the discovery server's own
    # in TLS mode, demux's (the same files) when demux ends TLS.
    discoveryIdentity = generateIdentity(
        directory / "discovery" / "keys", DISCOVERY_HOST
    )
    discoveryArgv = [
        harness.requireBinary("stdiscosrv"),
        "-cert", str(discoveryIdentity.certPath),
        "-key", str(discoveryIdentity.keyPath),
        "-db-dir", str(directory / "discovery" / "db"),
        "-listen", f"127.0.0.1:{DISCOVERY_DEFAULT_PORT}",
        "-replication-listen=",
        "-debug",
    ]  # fmt: skip
    if discoveryHTTP:
        discoveryArgv.append("-http")
    server = topology.server
    with (
        runServerIn(
            server, "strelaysrv", relayArgv, directory / "relay", RELAY_DEFAULT_PORT
        ) as relay,
        runServerIn(
            server,
            "stdiscosrv",
            discoveryArgv,
            directory / "discovery",
            DISCOVERY_DEFAULT_PORT,
        ) as discovery,
    ):
        yield Servers(relayIdentity, relay, discoveryIdentity, discovery, discoveryHTTP)


def _serverListen(text: str, address: str) -> str:
    old = '"tcp:{port}:interface=127.0.0.1"'
    if text.count(old) != 1:
        raise AssertionError(f"the example's rewritten listen {old} is not there once")
    return text.replace(old, json.dumps(f"tcp:{{port}}:interface={address}"))


def passThroughConfig(topology: Topology) -> str:
    """
    The shipped example as it is, listening on the server address: its
    discovery route relays TLS to C{stdiscosrv} untouched.
    """
    text = harness.exampleConfig(RELAY_DEFAULT_PORT, DISCOVERY_DEFAULT_PORT)
    return _serverListen(text, topology.serverAddress)


def terminatingConfig(topology: Topology, identity: Identity) -> str:
    """
    The shipped example with its discovery route changed to end TLS in
    demux (presenting C{identity}, requesting but not verifying a client
    certificate) and forward plain HTTP to C{stdiscosrv -http}, with the
    client's address and certificate in headers; the relay routes are the
    example's, untouched.
    """
    text = passThroughConfig(topology)
    old = f'backend = "tcp:127.0.0.1:{DISCOVERY_DEFAULT_PORT}"'
    if text.count(old) != 1:
        raise AssertionError(f"the example's discovery backend {old} is not there once")
    new = "\n".join(
        [
            f"tls.certificate = {json.dumps(str(identity.certPath))}",
            f"tls.key = {json.dumps(str(identity.keyPath))}",
            'tls.client_certificate = "request"',
            f'backend = "http://127.0.0.1:{DISCOVERY_DEFAULT_PORT}"',
        ]
    )
    text = text.replace(old, new)
    routes = {route["name"]: route for route in tomllib.loads(text)["routes"]}
    original = tomllib.loads(passThroughConfig(topology))["routes"]
    for route in original:
        if route["name"] != "discovery":
            assert routes[route["name"]] == route, routes
    assert routes["discovery"]["match"] == original[-1]["match"], routes
    assert routes["discovery"]["tls"]["client_certificate"] == "request", routes
    return text


@contextmanager
def runDemuxIn(
    topology: Topology, config: str, timeout: float = 20.0
) -> Iterator[DemuxProcess]:
    """
    Run demux with C{config} in the server namespace, on L{DEMUX_PORT}, and
    wait for it to listen.
    """
    with runDemux(
        config,
        port=DEMUX_PORT,
        waitFor=None,
        prefix=topology.server.command([]),
    ) as demux:
        deadline = time.monotonic() + timeout
        while DEMUX_PORT not in topology.server.listeningPorts(demux.process.pid):
            if demux.process.poll() is not None or time.monotonic() > deadline:
                output = b""
                if demux.process.poll() is not None and demux.process.stdout:
                    output = demux.process.stdout.read()
                log = demux.logPath.read_text() if demux.logPath.exists() else ""
                raise AssertionError(
                    f"demux did not listen on {DEMUX_PORT}:\n"
                    f"{output.decode(errors='replace')}\n{log}"
                )
            time.sleep(0.05)
        yield demux


@attrs.frozen
class Lookup:
    """
    A discovery lookup's answer: the HTTP status and the addresses listed.
    """

    status: int
    addresses: tuple[str, ...]
    body: str

    def tcpAddresses(self) -> list[str]:
        return [a for a in self.addresses if a.startswith("tcp")]


def lookup(topology: Topology, device: Device, deviceID: str) -> Lookup:
    """
    Look C{deviceID} up at the discovery server through demux, with C{curl}
    in C{device}'s namespace: HTTPS to C{discovery.example.com:443},
    resolved to the server address.  The certificate is not checked (it is
    self-signed and pinned only by Syncthing itself).
    """
    query = urllib.parse.urlencode({"device": deviceID})
    argv = device.namespace.command(
        [
            "curl", "--silent", "--show-error", "--insecure", "--max-time", "5",
            "--resolve", f"{DISCOVERY_HOST}:{DEMUX_PORT}:{topology.serverAddress}",
            "--write-out", "\n%{http_code}",
            f"https://{DISCOVERY_HOST}/v2/?{query}",
        ]
    )  # fmt: skip
    result = subprocess.run(argv, capture_output=True, timeout=15)
    output = result.stdout.decode(errors="replace")
    body, _, code = output.rpartition("\n")
    if result.returncode != 0 or not code.isdigit():
        raise AssertionError(
            f"curl failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
        )
    addresses: tuple[str, ...] = ()
    if code == "200":
        addresses = tuple(json.loads(body).get("addresses") or ())
    return Lookup(int(code), addresses, body)


# Syncthing in a device's namespace.


def writeHostsFile(path: Path, topology: Topology) -> Path:
    """
    A hosts file sending the example's two host names to the server
    address.
    """
    path.write_text(
        "127.0.0.1 localhost\n::1 localhost\n"
        f"{topology.serverAddress} {RELAY_HOST} {DISCOVERY_HOST}\n"
    )
    return path


def makeHome(path: Path, name: str, servers: Servers) -> SyncthingHome:
    """
    A Syncthing home listening on C{tcp://0.0.0.0:22000}, its dynamic
    address, and on the relay through demux, with global discovery only at
    the discovery server through demux.
    """
    relayURL = f"relay://{RELAY_HOST}:{DEMUX_PORT}/?id={servers.relayIdentity.deviceID}"
    discoveryURL = f"https://{DISCOVERY_HOST}:{DEMUX_PORT}/?id={servers.discoveryIdentity.deviceID}"
    home = harness.makeSyncthingHome(path, name, relayURL, discoveryURL)
    configPath = path / "config.xml"
    tree = ElementTree.parse(configPath)
    options = tree.getroot().find("options")
    assert options is not None, "config.xml has no <options>"
    dynamic = ElementTree.Element("listenAddress")
    dynamic.text = f"tcp://0.0.0.0:{SYNC_PORT}"
    options.insert(0, dynamic)
    tree.write(configPath)
    return home


class NamespacedSyncthing(SyncthingInstance):
    """
    A Syncthing running in a device's namespace, whose REST API (on that
    namespace's loopback) is called from inside it.
    """

    def __init__(
        self, home: SyncthingHome, process: ManagedProcess, device: Device
    ) -> None:
        super().__init__(home, process)
        self.device = device

    def rest(
        self, method: str, path: str, body: Any = None, timeout: float = 10
    ) -> Any:
        call = super().rest
        return self.device.namespace.call(
            lambda: call(method, path, body, timeout), timeout + 5
        )


@contextmanager
def runSyncthingIn(
    device: Device, home: SyncthingHome, hostsFile: Path, name: str
) -> Iterator[NamespacedSyncthing]:
    """
    Run C{syncthing serve} on C{home} in C{device}'s namespace, seeing
    C{hostsFile} as its C{/etc/hosts}, and stop it when the block ends.
    """
    argv = device.namespace.command(
        [
            *harness.hostsNamespace(hostsFile),
            harness.requireBinary("syncthing"), "serve",
            "--home", str(home.path),
            "--no-browser", "--no-restart", "--no-upgrade",
            "--logflags=3",
        ]
    )  # fmt: skip
    env = harness._syncthingEnvironment(home.path)
    env["STTRACE"] = "discover,connections"
    with managedProcess(name, argv, home.path, env) as process:
        instance = NamespacedSyncthing(home, process, device)
        instance.waitForAPI()
        yield instance
