"""
Starting the real Syncthing programs on loopback, and the demux in front of
them configured from the shipped C{examples/syncthing.toml}.

Every process is started with its own keys in a temporary directory, logs to
a file the tests can read (and show when something fails), and is stopped by
the context manager that started it.  Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

from .._process import freePort
from .identity import Identity, generateIdentity, identityFromFiles

T = TypeVar("T")

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLE = REPOSITORY / "examples" / "syncthing.toml"
"""
The configuration the user is given; the tests run this file, changing only
where it listens and the backends' ports.
"""

RELAY_HOST = "relay.example.com"
DISCOVERY_HOST = "discovery.example.com"

RELAY_DEFAULT_PORT = 22067
DISCOVERY_DEFAULT_PORT = 8443
"""
The programs' default ports, which the example's backends use; the tests map
them to the free ports the servers really listen on.
"""

PACKAGES = {
    "strelaysrv": "syncthing-relaysrv",
    "stdiscosrv": "syncthing-discosrv",
    "syncthing": "syncthing",
}


def requireBinary(name: str) -> str:
    """
    The path of the program C{name}.

    A missing program fails the test when C{CI} is set (CI installs the
    packages, so a missing one is a broken setup that must not pass as a
    skip) and skips it, saying what to install, otherwise.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    message = (
        f"{name} is not installed; the Syncthing end-to-end tests need it "
        f"(apt-get install {PACKAGES.get(name, name)})"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def listeningPorts(procNet: str = "/proc/net") -> set[int]:
    """
    The TCP ports something listens on, from the kernel's socket tables in
    C{procNet} (C{/proc/PID/net} for those of process PID's namespace).
    """
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"{procNet}/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def waitForListening(port: int, process: ManagedProcess, timeout: float = 15.0) -> None:
    """
    Block until something listens on C{port}.

    The kernel's socket table is read rather than connecting, because
    C{strelaysrv} logs (and later abandons) every connection, and a probe
    would show up in the logs the tests count.
    """
    deadline = time.monotonic() + timeout
    while port not in listeningPorts():
        process.checkAlive()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{process.name} never listened on {port}:\n{process.tail()}"
            )
        time.sleep(0.05)


def waitUntil(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    describe: Callable[[], str] = lambda: "",
    interval: float = 0.2,
) -> T:
    """
    Call C{check} until it returns something other than L{None} or
    C{False}, and return that; fail after C{timeout} seconds saying C{what}
    never happened, with C{describe()} to explain.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} did not happen within {timeout:g} s\n{describe()}"
            )
        time.sleep(interval)


class ManagedProcess:
    """
    A program the tests started, logging to a file, and stopped by them.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        logPath: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.logPath = logPath
        self._logFile = logPath.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._logFile,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )

    def log(self) -> str:
        """
        Everything the program has written so far.
        """
        return self.logPath.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        """
        The end of the log, to explain a failure.
        """
        text = "\n".join(self.log().splitlines()[-lines:])
        return f"--- last lines of {self.name} ({self.logPath.name}) ---\n{text}"

    def checkAlive(self) -> None:
        """
        @raise AssertionError: if the program has exited.
        """
        code = self.process.poll()
        if code is not None:
            raise AssertionError(f"{self.name} exited with {code}:\n{self.tail()}")

    def waitForLog(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """
        Block until the regular expression C{pattern} matches the log.
        """

        def check() -> re.Match[str] | None:
            self.checkAlive()
            return re.search(pattern, self.log())

        return waitUntil(check, timeout, f"{self.name} logging {pattern!r}", self.tail)

    def stop(self) -> None:
        """
        Ask the program to exit (SIGTERM), kill it if it will not, and reap
        it.
        """
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
        finally:
            self._logFile.close()


@contextmanager
def managedProcess(
    name: str,
    argv: Sequence[str],
    directory: Path,
    env: dict[str, str] | None = None,
) -> Iterator[ManagedProcess]:
    """
    Run C{argv} in C{directory}, logging to C{directory/NAME.log}, and stop
    it when the block ends however it ends.
    """
    process = ManagedProcess(name, argv, directory / f"{name}.log", directory, env)
    try:
        yield process
    finally:
        process.stop()


@attrs.frozen
class Server:
    """
    A running C{strelaysrv} or C{stdiscosrv}: its identity, the loopback
    port it listens on, and its process.
    """

    identity: Identity
    port: int
    process: ManagedProcess


@contextmanager
def runRelay(directory: Path, extPort: int) -> Iterator[Server]:
    """
    Run C{strelaysrv} on a loopback port with a fresh identity, telling its
    clients to come back for sessions on C{extPort} (the demux port) of the
    address they reached it on.

    C{-pools=""} keeps it out of the public relay pool, C{-status-srv=""}
    stops it opening a status port on every interface, and C{-debug} makes
    it log every connection it accepts, which is how the tests see what
    reached it.
    """
    binary = requireBinary("strelaysrv")
    directory.mkdir(parents=True, exist_ok=True)
    identity = generateIdentity(directory / "keys")
    port = freePort()
    argv = [
        binary,
        "-keys", str(identity.directory),
        "-listen", f"127.0.0.1:{port}",
        "-ext-address", f":{extPort}",
        "-pools=",
        "-status-srv=",
        "-protocol", "tcp4",
        "-debug",
    ]  # fmt: skip
    with managedProcess("strelaysrv", argv, directory) as process:
        waitForListening(port, process)
        yield Server(identity, port, process)


@contextmanager
def runDiscovery(directory: Path) -> Iterator[Server]:
    """
    Run C{stdiscosrv} on a loopback port with a fresh identity, its database
    in C{directory}, replication off, and every request logged.
    """
    binary = requireBinary("stdiscosrv")
    directory.mkdir(parents=True, exist_ok=True)
    identity = generateIdentity(directory / "keys")
    port = freePort()
    argv = [
        binary,
        "-cert", str(identity.certPath),
        "-key", str(identity.keyPath),
        "-db-dir", str(directory / "db"),
        "-listen", f"127.0.0.1:{port}",
        "-replication-listen=",
        "-debug",
    ]  # fmt: skip
    with managedProcess("stdiscosrv", argv, directory) as process:
        waitForListening(port, process)
        yield Server(identity, port, process)


def _retarget(endpoint: str, ports: dict[int, int]) -> str:
    """
    C{endpoint} (a client endpoint string) with its port replaced according
    to C{ports}.
    """
    found = [
        m
        for m in re.finditer(r"(?:(?<=:)|(?<=:port=))(\d+)(?=:|$)", endpoint)
        if int(m.group(1)) in ports
    ]
    if len(found) != 1:
        raise AssertionError(
            f"cannot tell which server the example's backend {endpoint!r} is; "
            f"expected exactly one of the ports {sorted(ports)}"
        )
    m = found[0]
    return endpoint[: m.start()] + str(ports[int(m.group(1))]) + endpoint[m.end() :]


def exampleConfig(relayPort: int, discoveryPort: int) -> str:
    """
    The text of C{examples/syncthing.toml} with only its listen endpoints
    and its backends' ports changed: it listens on C{{port}} of 127.0.0.1
    (for L{tests._process.runDemux}) and its relay and discovery backends
    (ports 22067 and 8443 in the example) point at the test's servers.

    The result is parsed again and compared with the original, so that the
    routes under test are provably the example's.
    """
    text = EXAMPLE.read_text()
    original = tomllib.loads(text)
    ports = {RELAY_DEFAULT_PORT: relayPort, DISCOVERY_DEFAULT_PORT: discoveryPort}

    listen = '["tcp:{port}:interface=127.0.0.1"]'
    text, count = re.subn(
        r"^listen\s*=\s*\[[^\]]*\]", f"listen = {listen}", text, flags=re.M
    )
    if count != 1:
        raise AssertionError(f"{EXAMPLE} has no single top-level listen array")

    backends = {route["backend"] for route in original["routes"] if "backend" in route}
    for backend in backends:
        quoted = json.dumps(backend)
        if quoted not in text:
            raise AssertionError(
                f"backend {quoted} is not written plainly in {EXAMPLE}"
            )
        text = text.replace(quoted, json.dumps(_retarget(backend, ports)))

    changed = tomllib.loads(text)
    expected = dict(original, listen=["tcp:{port}:interface=127.0.0.1"])
    expected["routes"] = [
        dict(route, backend=_retarget(route["backend"], ports))
        if "backend" in route
        else route
        for route in original["routes"]
    ]
    if changed != expected:
        raise AssertionError(f"rewriting {EXAMPLE} changed more than intended")
    return text


def demuxDecisions(log: str, clientPort: int) -> list[str]:
    """
    What demux decided for the connection from 127.0.0.1:C{clientPort}:
    C{"route=NAME"}, C{"refused"} or C{"closed"} (gone before a decision),
    one per decision line of the log.
    """
    decisions = []
    for line in _linesFor(log, clientPort):
        match = re.search(r" route=(\S+) \(", line)
        if match:
            decisions.append(f"route={match.group(1)}")
        elif " refused" in line:
            decisions.append("refused")
        elif "closed before a route" in line:
            decisions.append("closed")
    return decisions


def demuxTraffic(log: str, clientPort: int) -> tuple[int, int] | None:
    """
    The bytes demux relayed up (client to backend) and down for the
    connection from 127.0.0.1:C{clientPort}, once it has closed.
    """
    for line in _linesFor(log, clientPort):
        match = re.search(r"(\d+) bytes up, (\d+) bytes down", line)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def _linesFor(log: str, clientPort: int) -> list[str]:
    return [line for line in log.splitlines() if f" 127.0.0.1:{clientPort} " in line]


# Syncthing itself.


def hostsNamespace(hostsFile: Path) -> list[str]:
    """
    The command prefix that runs a program in a private mount namespace
    whose C{/etc/hosts} is C{hostsFile}.

    The Syncthing processes must reach the relay and discovery server by
    host name (the discovery server refuses loopback addresses in an
    announcement, and a host name is what makes Syncthing send an SNI), but
    the machine's own C{/etc/hosts} is not ours to edit.  A non-root user
    gets the namespace through a user namespace.  C{unshare} without
    C{--fork} execs the program, so the process the tests hold is the
    program itself.
    """
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return [*unshare, "sh", "-c", script, str(hostsFile)]


def writeHostsFile(path: Path) -> Path:
    """
    A hosts file that sends the example's two host names to 127.0.0.1.
    """
    path.write_text(
        f"127.0.0.1 localhost\n::1 localhost\n127.0.0.1 {RELAY_HOST} {DISCOVERY_HOST}\n"
    )
    return path


def requireHostsNamespace(hostsFile: Path) -> None:
    """
    Check that L{hostsNamespace} works here; fail under CI and skip
    otherwise if it does not.
    """
    message = None
    if shutil.which("unshare") is None:
        message = "unshare (util-linux) is not installed"
    else:
        try:
            result = subprocess.run(
                [*hostsNamespace(hostsFile), "cat", "/etc/hosts"],
                capture_output=True,
                timeout=10,
            )
        except subprocess.TimeoutExpired:
            message = "unshare timed out"
        else:
            if result.returncode != 0 or RELAY_HOST.encode() not in result.stdout:
                message = (
                    "cannot give Syncthing a private /etc/hosts with "
                    f"unshare --mount: {result.stderr.decode(errors='replace')}"
                )
    if message is None:
        return
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


_OPTIONS = {
    # Reach the world only through the test's relay and discovery server.
    "globalAnnounceEnabled": "true",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "true",
    "natEnabled": "false",
    "announceLANAddresses": "false",
    "stunKeepaliveStartS": "0",
    # No browser, no usage or crash reports, no upgrades.
    "startBrowser": "false",
    "urAccepted": "-1",
    "urSeen": "3",
    "crashReportingEnabled": "false",
    "autoUpgradeIntervalH": "0",
    "upgradeToPreReleases": "false",
    # A test has no minute to spare between connection attempts.
    "reconnectionIntervalS": "1",
    "relayReconnectIntervalM": "1",
    "setLowPriority": "false",
}


@attrs.frozen
class SyncthingHome:
    """
    A Syncthing home directory made by C{syncthing generate} and configured
    for the test.

    @ivar printedDeviceID: the device ID C{syncthing generate} printed.
    """

    path: Path
    identity: Identity
    printedDeviceID: str
    guiPort: int
    apiKey: str


def makeSyncthingHome(
    path: Path, name: str, relayURL: str, discoveryURL: str
) -> SyncthingHome:
    """
    Generate a Syncthing home and set, in its own C{config.xml}, everything
    the test needs before Syncthing first starts: listening only on
    C{relayURL}, global discovery only at C{discoveryURL}, the GUI/REST API
    on a loopback port with a known key, and everything that would reach
    beyond loopback off (local discovery, NAT traversal, UPnP, usage and
    crash reports, upgrades, the browser).
    """
    binary = requireBinary("syncthing")
    result = subprocess.run(
        [binary, "generate", "--home", str(path), "--no-default-folder",
         "--skip-port-probing"],
        capture_output=True,
        timeout=60,
        env=_syncthingEnvironment(path),
    )  # fmt: skip
    output = (result.stdout + result.stderr).decode(errors="replace")
    if result.returncode != 0:
        raise AssertionError(f"syncthing generate failed:\n{output}")
    printed = re.search(r"Device ID: (\S+)", output)
    if printed is None:
        raise AssertionError(f"syncthing generate printed no device ID:\n{output}")

    guiPort = freePort()
    apiKey = f"demux-e2e-{name}-{os.urandom(8).hex()}"
    configPath = path / "config.xml"
    tree = ElementTree.parse(configPath)
    root = tree.getroot()
    for device in root.findall("device"):
        device.set("name", name)
    gui = root.find("gui")
    assert gui is not None, "config.xml has no <gui>"
    gui.set("enabled", "true")
    gui.set("tls", "false")
    _setText(gui, "address", f"127.0.0.1:{guiPort}")
    _setText(gui, "apikey", apiKey)
    options = root.find("options")
    assert options is not None, "config.xml has no <options>"
    for tag in ("listenAddress", "globalAnnounceServer"):
        for element in options.findall(tag):
            options.remove(element)
    ElementTree.SubElement(options, "listenAddress").text = relayURL
    ElementTree.SubElement(options, "globalAnnounceServer").text = discoveryURL
    for tag, value in _OPTIONS.items():
        _setText(options, tag, value)
    tree.write(configPath)
    return SyncthingHome(
        path, identityFromFiles(path), printed.group(1), guiPort, apiKey
    )


def _setText(parent: ElementTree.Element, tag: str, text: str) -> None:
    element = parent.find(tag)
    if element is None:
        element = ElementTree.SubElement(parent, tag)
    element.text = text


def _syncthingEnvironment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        STNODEFAULTFOLDER="1",
        STNOUPGRADE="1",
        STNORESTART="1",
    )
    return env


class SyncthingInstance:
    """
    A running Syncthing, driven through its REST API.
    """

    def __init__(self, home: SyncthingHome, process: ManagedProcess) -> None:
        self.home = home
        self.process = process
        self.deviceID = home.identity.deviceID

    def rest(
        self, method: str, path: str, body: Any = None, timeout: float = 10
    ) -> Any:
        """
        Call the REST API; the decoded JSON answer, or L{None} if empty.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.home.guiPort}{path}",
            data=data,
            method=method,
            headers={"X-API-Key": self.home.apiKey, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload.strip() else None

    def shareFolder(
        self, peer: SyncthingInstance, folderID: str, path: Path
    ) -> None:
        """
        Through the REST API: know C{peer} by its device ID only (its
        addresses come from global discovery), and share the folder
        C{folderID} at C{path} with it.
        """
        self.rest(
            "POST",
            "/rest/config/devices",
            {
                "deviceID": peer.deviceID,
                "name": peer.process.name,
                "addresses": ["dynamic"],
            },
        )
        self.rest(
            "POST",
            "/rest/config/folders",
            {
                "id": folderID,
                "label": folderID,
                "path": str(path),
                "type": "sendreceive",
                "devices": [{"deviceID": self.deviceID}, {"deviceID": peer.deviceID}],
                "fsWatcherEnabled": False,
                "rescanIntervalS": 3600,
            },
        )

    def waitForAPI(self, timeout: float = 30.0) -> None:
        """
        Block until the REST API answers.
        """

        def check() -> bool:
            self.process.checkAlive()
            try:
                return bool(self.rest("GET", "/rest/system/ping", timeout=2))
            except (OSError, urllib.error.URLError):
                return False

        waitUntil(check, timeout, f"{self.process.name}'s REST API", self.process.tail)


@contextmanager
def runSyncthing(
    home: SyncthingHome, hostsFile: Path, name: str
) -> Iterator[SyncthingInstance]:
    """
    Run C{syncthing serve} on C{home}, seeing C{hostsFile} as its
    C{/etc/hosts}, without a browser, a restart monitor or upgrades, and
    stop it when the block ends.
    """
    binary = requireBinary("syncthing")
    argv = [
        *hostsNamespace(hostsFile),
        binary, "serve",
        "--home", str(home.path),
        "--no-browser", "--no-restart", "--no-upgrade",
        "--logflags=3",
    ]  # fmt: skip
    env = _syncthingEnvironment(home.path)
    env["STTRACE"] = "relay,discover,connections"
    with managedProcess(name, argv, home.path, env) as process:
        instance = SyncthingInstance(home, process)
        instance.waitForAPI()
        yield instance
