"""
The C{wireguard} matcher on a handshake initiation from a real WireGuard:
Debian's userspace C{wireguard-go}, in a network namespace of the test's own
(this kernel has no WireGuard module), sending to a UDP socket on that
namespace's loopback.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demux import MATCH, NO_MATCH
from demux.matchers import wireguardFactory
from demux.testing import datagramVerdictOf

RECEIVER = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(30)
print(s.getsockname()[1], flush=True)
data, _ = s.recvfrom(65536)
sys.stdout.write(data.hex() + "\\n")
"""


def _run(*argv: str, input: bytes | None = None) -> bytes:
    return subprocess.run(argv, input=input, capture_output=True, check=True).stdout


@pytest.fixture
def namespace() -> Iterator[str]:
    for tool in ("ip", "wg", "wireguard-go"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (tests/run installs it)")
    if os.geteuid() != 0:
        pytest.fail("needs root for a network namespace")
    name = f"dmx-wg-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        # Deleting the namespace takes its interfaces and addresses with it;
        # wireguard-go exits when its tun device goes.
        subprocess.run(["ip", "netns", "del", name], check=False)


def _captureInitiation(namespace: str, directory: Path) -> tuple[bytes, bytes]:
    """
    The first datagram C{wireguard-go} sends to its peer, and the peer's
    public key.
    """
    ours = _run("wg", "genkey").strip()
    peer = _run("wg", "pubkey", input=_run("wg", "genkey")).strip()
    key = directory / "private"
    key.write_bytes(ours + b"\n")
    key.chmod(0o600)
    inside = ["ip", "netns", "exec", namespace]
    receiver = subprocess.Popen(
        [*inside, sys.executable, "-c", RECEIVER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    go = None
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        # Its control socket (/var/run/wireguard/NAME.sock) is not private
        # to the namespace: a name of this process's own.
        interface = f"wgdmx{os.getpid() % 100000}"
        go = subprocess.Popen(
            [*inside, "wireguard-go", "-f", interface],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"},
        )
        deadline = time.monotonic() + 20
        while subprocess.run(
            [*inside, "wg", "show", interface], capture_output=True
        ).returncode:
            if go.poll() is not None:
                raise AssertionError(
                    "wireguard-go exited: "
                    + (go.stderr.read().decode(errors="replace") if go.stderr else "")
                )
            assert time.monotonic() < deadline, "wireguard-go made no interface"
            time.sleep(0.1)
        _run(*inside, "wg", "set", interface, "private-key", str(key),
             "peer", peer.decode(), "endpoint", f"127.0.0.1:{port}",
             "allowed-ips", "10.234.0.2/32")
        _run("ip", "-n", namespace, "address", "add", "10.234.0.1/24", "dev", interface)
        _run("ip", "-n", namespace, "link", "set", interface, "up")
        # Traffic for the peer makes WireGuard start a handshake.
        _run(*inside, sys.executable, "-c",
             "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
             ".sendto(b'hello', ('10.234.0.2', 9))")
        out, err = receiver.communicate(timeout=30)
        assert receiver.returncode == 0, err
        return bytes.fromhex(out.strip()), base64.b64decode(peer)
    finally:
        for process in (receiver, go):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if go is not None:
            Path(f"/var/run/wireguard/{interface}.sock").unlink(missing_ok=True)


def test_realInitiation(namespace: str, tmp_path: Path) -> None:
    """
    wireguard-go's first datagram is a 148-byte handshake initiation that the
    matcher takes, also when it must be addressed to the peer's public key
    (its C{mac1}), and refuses for another key.
    """
    datagram, peerKey = _captureInitiation(namespace, tmp_path)
    assert len(datagram) == 148 and datagram[0] == 1, datagram.hex()
    anyInitiation = wireguardFactory.build({})
    assert datagramVerdictOf(anyInitiation, [datagram]) is MATCH
    toPeer = wireguardFactory.build({"public_key": base64.b64encode(peerKey).decode()})
    assert datagramVerdictOf(toPeer, [datagram]) is MATCH
    other = base64.b64encode(bytes(range(32))).decode()
    toOther = wireguardFactory.build({"public_key": other})
    assert datagramVerdictOf(toOther, [datagram]) is NO_MATCH
