"""
Integration: a real C{twistd demux} process on loopback, real clients
(C{openssl s_client}, C{curl}, C{ssh}, raw sockets) and real servers.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from ._process import (
    DemuxProcess,
    freePort,
    require,
    runDemux,
    twistdCommand,
    waitForPort,
)
from ._servers import (
    ChecksumServer,
    TagServer,
    opensslServer,
    pattern,
    patternDigest,
    recvAll,
)

MAGIC = bytes.fromhex("9e79bc40")


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, object]]:
    """
    demux in front of: two openssl s_servers (SNI and ALPN routes), a tagged
    echo server for the magic prefix, an HTTP server and a checksum server.
    """
    require("openssl")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        discovery = stack.enter_context(
            opensslServer(directory, "discovery.example.com")
        )
        relay = stack.enter_context(
            opensslServer(directory, "relay.example.com", alpn="bep-relay")
        )
        session = TagServer("relay-session")
        stack.callback(session.close)
        web = TagServer("web")
        stack.callback(web.close)
        bulk = ChecksumServer(64 << 20)
        stack.callback(bulk.close)
        config = f"""
listen = ["tcp:{{port}}:interface=127.0.0.1"]
inspect_delay = 2
[[routes]]
name = "relay-session"
match.prefix = "9e79bc40"
backend = "tcp:127.0.0.1:{session.port}"
[[routes]]
name = "bulk"
match.prefix = {{text = "BULK"}}
backend = "tcp:127.0.0.1:{bulk.port}"
[[routes]]
name = "bulk-copy"
match.prefix = {{text = "COPY"}}
backend = "tcp:127.0.0.1:{bulk.port}"
splice = false
[[routes]]
name = "relay-protocol"
match.tls.alpn = ["bep-relay"]
backend = "tcp:127.0.0.1:{relay}"
[[routes]]
name = "discovery"
match.tls.sni = ["discovery.example.com"]
backend = "tcp:127.0.0.1:{discovery}"
[[routes]]
name = "web"
match.http = {{}}
backend = "tcp:127.0.0.1:{web.port}"
"""
        demux = stack.enter_context(runDemux(config))
        yield {"demux": demux, "dir": directory}


def sClient(port: int, *args: str, data: bytes = b"hello demux\nCLOSE\n") -> str:
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof", *args],
        input=data,
        capture_output=True,
        timeout=20,
    )
    return result.stdout.decode(errors="replace")


def lastDecision(demux: DemuxProcess, peerPort: int | None = None) -> str:
    lines = [x for x in demux.log().splitlines() if "route=" in x or "refused" in x]
    return lines[-1] if lines else ""


def test_sniRoute(stack: dict[str, object]) -> None:
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    out = sClient(demux.port, "-servername", "discovery.example.com")
    assert "CN = discovery.example.com" in out
    assert "xumed olleh" in out
    demux.waitForLog("route=discovery (sni=discovery.example.com")


def test_alpnWithoutSniRoute(stack: dict[str, object]) -> None:
    """
    What a Syncthing relay client sends: no SNI at all, ALPN bep-relay.
    """
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    out = sClient(demux.port, "-noservername", "-alpn", "bep-relay")
    assert "CN = relay.example.com" in out
    assert "ALPN protocol: bep-relay" in out
    assert "xumed olleh" in out
    demux.waitForLog("route=relay-protocol")


def test_unknownSniRefused(stack: dict[str, object]) -> None:
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    started = time.monotonic()
    out = sClient(demux.port, "-servername", "other.example.org")
    assert "CN = " not in out
    assert time.monotonic() - started < 5
    demux.waitForLog("refused: no route matched")


def test_curlHttpRoute(stack: dict[str, object]) -> None:
    require("curl")
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    result = subprocess.run(
        ["curl", "-s", "--max-time", "5", "--http0.9", f"http://127.0.0.1:{demux.port}/x"],
        capture_output=True,
        timeout=20,
    )
    # The tag server greets and echoes the request back.
    assert result.stdout.startswith(b"TAG:web\nGET /x HTTP/1.1\r\n"), result.stdout
    demux.waitForLog("route=web")


def test_sessionMagic(stack: dict[str, object]) -> None:
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    with socket.create_connection(("127.0.0.1", demux.port), timeout=10) as s:
        s.sendall(MAGIC + b"\x00\x00\x00\x03" + b"payload")
        s.shutdown(socket.SHUT_WR)
        got = recvAll(s)
    assert got == b"TAG:relay-session\n" + MAGIC + b"\x00\x00\x00\x03payload"
    demux.waitForLog("route=relay-session (prefix=9e79bc40")


def test_magicOneByteAtATime(stack: dict[str, object]) -> None:
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    with socket.create_connection(("127.0.0.1", demux.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in MAGIC:
            s.sendall(bytes([b]))
            time.sleep(0.05)
        s.sendall(b"rest")
        s.shutdown(socket.SHUT_WR)
        got = recvAll(s)
    assert got == b"TAG:relay-session\n" + MAGIC + b"rest"


def test_junkClosedQuickly(stack: dict[str, object]) -> None:
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    with socket.create_connection(("127.0.0.1", demux.port), timeout=10) as s:
        s.sendall(b"\x00\x01\x02junk")
        assert recvAll(s, timeout=5) == b""


def test_silentClientClosedAtInspectDelay(stack: dict[str, object]) -> None:
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", demux.port), timeout=10) as s:
        assert recvAll(s, timeout=10) == b""
    elapsed = time.monotonic() - started
    assert 1.8 < elapsed < 4, elapsed
    demux.waitForLog("no decision within 2s")


@pytest.mark.parametrize("spliced", [True, False], ids=["splice", "copy"])
def test_bulkBothWaysHalfClosed(stack: dict[str, object], spliced: bool) -> None:
    """
    64 MiB up, a half-close, and 64 MiB down, checksummed: every byte
    arrives, in order, and the answer to a half-closed request is whole;
    through the zero-copy relay and through the ordinary one.
    """
    demux: DemuxProcess = stack["demux"]  # type: ignore[assignment]
    size = 64 << 20
    magic = b"BULK" if spliced else b"COPY"
    with socket.create_connection(("127.0.0.1", demux.port), timeout=30) as s:
        clientPort = s.getsockname()[1]
        s.sendall(magic)
        sent = hashlib.sha256(magic)
        for chunk in pattern(size):
            s.sendall(chunk)
            sent.update(chunk)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(60)
        digest = b""
        while len(digest) < 32:
            data = s.recv(32 - len(digest))
            assert data, "closed before the checksum"
            digest += data
        assert digest == sent.digest()
        received = hashlib.sha256()
        total = 0
        while data := s.recv(1 << 18):
            received.update(data)
            total += len(data)
    assert total == size
    assert received.digest() == patternDigest(size)
    route = "bulk" if spliced else "bulk-copy"
    line = demux.waitForClosed(f"127.0.0.1:{clientPort}", route)
    assert f"closed: {size + 4} bytes up, {size + 32} bytes down" in line, line
    assert line.endswith("(spliced)") == spliced, line


def test_ssh(stack: dict[str, object]) -> None:
    """
    A real OpenSSH client reaches a real sshd through demux, authenticates
    and runs a command.
    """
    sshd = require("sshd")
    ssh = require("ssh")
    directory: Path = stack["dir"]  # type: ignore[assignment]
    hostKey = directory / "host_key"
    userKey = directory / "user_key"
    for key in (hostKey, userKey):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
        )
    authorized = directory / "authorized_keys"
    authorized.write_text(userKey.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    port = freePort()
    Path("/run/sshd").mkdir(exist_ok=True)
    config = directory / "sshd_config"
    user = os.environ.get("USER") or "root"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostKey}\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes no\nPermitRootLogin yes\n"
        f"PasswordAuthentication no\nUsePAM no\nPidFile {directory}/sshd.pid\n"
    )
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        waitForPort(port)
        with runDemux(
            None,
            args=[
                "--listen", f"tcp:{(dport := freePort())}:interface=127.0.0.1",
                "--route", f"ssh ssh tcp:127.0.0.1:{port}",
            ],
            port=dport,
        ) as demux:
            result = subprocess.run(
                [
                    ssh, "-i", str(userKey), "-p", str(dport), "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    f"{user}@127.0.0.1", "echo routed-by-demux",
                ],
                capture_output=True,
                timeout=30,
            )
            assert result.stdout == b"routed-by-demux\n", result.stderr
            demux.waitForLog("route=ssh (ssh")
    finally:
        server.terminate()
        server.wait(10)


@contextmanager
def _noop() -> Iterator[None]:
    yield


def test_configErrorIsOneLine(tmp_path: Path) -> None:
    """
    A bad configuration stops start-up with one line naming its place and a
    non-zero status, never a traceback.
    """
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'listen = ["tcp:0"]\n[[routes]]\nname = "r"\nmatch.prefix = "9e7"\n'
        'backend = "tcp:127.0.0.1:1"\n'
    )
    result = subprocess.run(
        twistdCommand("-n", "demux", "--config", str(bad)),
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "Traceback" not in err + result.stdout.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"demux: error: {bad}: route 'r': match.prefix:")


def test_check(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "syncthing.toml"
    result = subprocess.run(
        twistdCommand("-n", "demux", "--config", str(example), "--check"),
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert b"configuration OK: 3 routes (relay-session, relay-protocol, discovery)" in result.stdout


def test_listMatchers(tmp_path: Path) -> None:
    result = subprocess.run(
        twistdCommand("demux", "--list-matchers"), capture_output=True, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 0
    names = {line.split()[0] for line in result.stdout.decode().splitlines() if line}
    assert {"any", "tls", "prefix", "http", "ssh", "regex"} <= names
