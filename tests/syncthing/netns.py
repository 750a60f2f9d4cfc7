"""
Network namespaces for end-to-end tests that need real, distinct,
non-loopback client addresses.

Behind demux, the discovery server must learn a device's own address; on
loopback every device is C{127.0.0.1}, so nothing could tell a right answer
from a wrong one.  L{topology} builds, as root, a small private network:

    - a I{server} namespace, where demux and the servers run; demux listens
      on L{SERVER_ADDRESS}, an address of the namespace's loopback
      interface, and the namespace routes between the devices' subnets;
    - one namespace per device, each joined to the server namespace by a
      veth pair, with its own address (C{10.231.N.2}) and a default route
      through the server namespace (C{10.231.N.1}).

Every namespace is named C{dmx-st-PID-...} after the test process, and every
address is in L{SUBNET}.  Both ends of every veth pair live in namespaces
made here, never in the machine's own, so deleting the namespaces deletes
every link, address and route with them; the machine's own network is never
touched.  A run that crashed leaves namespaces whose PID is dead, and the
next run deletes them.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

from . import harness

T = TypeVar("T")

PREFIX = "dmx-st-"
"""
The prefix of every namespace these tests make, followed by the PID of the
test process.
"""

SUBNET = "10.231.0.0/16"
"""
The only addresses these tests use.
"""

SERVER_ADDRESS = "10.231.0.1"
"""
The server namespace's address, on its loopback interface, reached by every
device through its veth pair.
"""

_NETNS_DIRECTORY = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    """
    Run C{ip ARGS}, failing with what it printed.
    """
    result = subprocess.run(["ip", *args], capture_output=True, timeout=20)
    if result.returncode != 0:
        raise AssertionError(
            f"ip {' '.join(args)} failed: {result.stderr.decode(errors='replace')}"
        )


@attrs.frozen
class Namespace:
    """
    A named network namespace (C{ip netns}).
    """

    name: str

    @property
    def path(self) -> Path:
        return _NETNS_DIRECTORY / self.name

    def command(self, argv: Sequence[str]) -> list[str]:
        """
        The command line that runs C{argv} in this namespace.  C{ip netns
        exec} execs the program, so the process a caller starts is the
        program itself and its signals reach it.
        """
        return ["ip", "netns", "exec", self.name, *argv]

    def call(self, function: Callable[[], T], timeout: float = 30.0) -> T:
        """
        Call C{function} on a thread of its own that has entered this
        namespace, and return what it returns (or raise what it raises).

        A network namespace belongs to a thread, not to a process, so the
        sockets C{function} opens are this namespace's while the rest of
        the test process stays where it is.
        """
        outcome: list[tuple[bool, object]] = []

        def run() -> None:
            try:
                descriptor = os.open(self.path, os.O_RDONLY)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(descriptor, _CLONE_NEWNET) != 0:
                        number = ctypes.get_errno()
                        raise OSError(
                            number, f"setns {self.name}: {os.strerror(number)}"
                        )
                finally:
                    os.close(descriptor)
                outcome.append((True, function()))
            except BaseException as e:
                outcome.append((False, e))

        thread = threading.Thread(target=run, name=f"netns {self.name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if not outcome:
            raise AssertionError(
                f"a call in namespace {self.name} took over {timeout:g} s"
            )
        ok, value = outcome[0]
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        return value  # type: ignore[return-value]

    def pids(self) -> list[int]:
        """
        The processes running in this namespace.
        """
        result = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, timeout=20
        )
        return [int(p) for p in result.stdout.split()]

    def listeningPorts(self, pid: int) -> set[int]:
        """
        The TCP ports something listens on in the namespace of process
        C{pid} (one of this namespace's), read from the kernel's socket
        table as that process sees it.
        """
        return harness.listeningPorts(f"/proc/{pid}/net")

    def delete(self) -> None:
        """
        Stop whatever still runs in the namespace (only ever processes these
        tests started, since the name carries the test's PID) and delete
        it, with every link, address and route in it.
        """
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.path.exists():
            _ip("netns", "delete", self.name)


@attrs.frozen
class Device:
    """
    A device's namespace, its address, and the server namespace's address
    on its side of the veth pair.
    """

    namespace: Namespace
    address: str
    gateway: str


@attrs.frozen
class Topology:
    """
    The server namespace and the devices' namespaces, wired together.
    """

    server: Namespace
    devices: dict[str, Device]
    serverAddress: str = SERVER_ADDRESS


def _pidAlive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def removeLeftovers() -> list[str]:
    """
    Delete the namespaces (and stop the processes in them) that an earlier
    run of these tests left behind when it crashed: those named with this
    prefix and the PID of a process that no longer exists.  Namespaces of
    a live process are another run's, and are left alone.

    @return: the names deleted.
    """
    removed: list[str] = []
    if not _NETNS_DIRECTORY.is_dir():
        return removed
    for entry in sorted(_NETNS_DIRECTORY.iterdir()):
        match = re.fullmatch(re.escape(PREFIX) + r"(\d+)-.+", entry.name)
        if match is None or _pidAlive(int(match.group(1))):
            continue
        Namespace(entry.name).delete()
        removed.append(entry.name)
    return removed


def requireNamespaces() -> None:
    """
    Check that this process may make network namespaces (root, and C{ip}
    installed); fail under C{CI} and skip otherwise if it may not.
    """
    message = None
    if shutil.which("ip") is None:
        message = "ip (iproute2) is not installed; apt-get install iproute2"
    elif os.geteuid() != 0:
        message = "making network namespaces needs root"
    if message is None:
        return
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def topology(deviceNames: Sequence[str], pid: int | None = None) -> Iterator[Topology]:
    """
    Make the server namespace and one namespace per name in C{deviceNames}
    (the Nth gets C{10.231.N.2/24}), and delete them all when the block
    ends, however it ends.
    """
    requireNamespaces()
    removeLeftovers()
    if pid is None:
        pid = os.getpid()
    base = f"{PREFIX}{pid}-"
    with ExitStack() as cleanup:

        def make(suffix: str) -> Namespace:
            namespace = Namespace(base + suffix)
            _ip("netns", "add", namespace.name)
            cleanup.callback(namespace.delete)
            _ip("-n", namespace.name, "link", "set", "lo", "up")
            return namespace

        server = make("srv")
        _ip("-n", server.name, "address", "add", f"{SERVER_ADDRESS}/32", "dev", "lo")
        subprocess.run(
            server.command(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
            check=True,
            capture_output=True,
            timeout=20,
        )
        devices = {}
        for number, name in enumerate(deviceNames, start=1):
            namespace = make(name)
            gateway = f"10.231.{number}.1"
            address = f"10.231.{number}.2"
            serverSide = f"v-{name}"[:15]
            _ip(
                "-n", server.name, "link", "add", serverSide, "type", "veth",
                "peer", "name", "eth0", "netns", namespace.name,
            )  # fmt: skip
            _ip("-n", server.name, "address", "add", f"{gateway}/24", "dev", serverSide)
            _ip("-n", server.name, "link", "set", serverSide, "up")
            _ip("-n", namespace.name, "address", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace.name, "link", "set", "eth0", "up")
            _ip("-n", namespace.name, "route", "add", "default", "via", gateway)
            devices[name] = Device(namespace, address, gateway)
        yield Topology(server, devices)
