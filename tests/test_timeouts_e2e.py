"""
End to end, the sslh-style configuration: a real C{twistd demux} with a real
sshd behind the C{ssh} route that C{on_timeout} names, a route that waits
for a fourth byte, and a last catch-all in front of a tagged server.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._process import DemuxProcess, freePort, require, runDemux, waitForPort
from ._servers import TagServer

INSPECT_DELAY = 1.5


@pytest.fixture(scope="module")
def sslh() -> Iterator[DemuxProcess]:
    sshd = require("sshd")
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        hostKey = directory / "host_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)],
            check=True,
        )
        port = freePort()
        Path("/run/sshd").mkdir(exist_ok=True)
        config = directory / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostKey}\n"
            f"UsePAM no\nPasswordAuthentication no\nPidFile {directory}/sshd.pid\n"
        )
        server = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        four = TagServer("four")
        rest = TagServer("rest")
        try:
            waitForPort(port)
            with runDemux(
                f"""
listen = ["tcp:{{port}}:interface=127.0.0.1"]
inspect_delay = {INSPECT_DELAY}
on_timeout = "ssh"

[[routes]]
name = "ssh"
match.ssh = {{}}
backend = "tcp:127.0.0.1:{port}"

[[routes]]
name = "four"
match.regex = "^foob"
backend = "tcp:127.0.0.1:{four.port}"

[[routes]]
name = "rest"
match.any = {{}}
backend = "tcp:127.0.0.1:{rest.port}"
"""
            ) as demux:
                yield demux
        finally:
            four.close()
            rest.close()
            server.terminate()
            server.wait(10)


def firstLine(demux: DemuxProcess, send: bytes) -> tuple[bytes, float, str]:
    """
    Connect, send C{send} (if anything) and keep the connection open; return
    the first line the backend answers, how long it took, and demux's log
    line for the connection.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", demux.port), timeout=10) as s:
        clientPort = s.getsockname()[1]
        if send:
            s.sendall(send)
        s.settimeout(10)
        answer = b""
        while not answer.endswith(b"\n"):
            data = s.recv(1024)
            if not data:
                break
            answer += data
        elapsed = time.monotonic() - started
    answer = answer.split(b"\n", 1)[0] + b"\n"
    marker = f"127.0.0.1:{clientPort} route="
    log = demux.waitForLog(marker)
    # The line with the decision: the connection's one line, once it ends.
    line = [x for x in log.splitlines() if marker in x][0]
    return answer, elapsed, line


def test_silentClientReachesSshd(sslh: DemuxProcess) -> None:
    """
    A client that says nothing, as an SSH client waiting for the server's
    banner does, gets sshd's banner once C{inspect_delay} has passed, though
    the last route matches anything.
    """
    answer, elapsed, line = firstLine(sslh, b"")
    assert answer.startswith(b"SSH-2.0-"), answer
    assert elapsed >= INSPECT_DELAY - 0.1, elapsed
    assert "route=ssh (no decision within 1.5s; undecided (ssh waits), on_timeout)" in line


def test_threeBytesWhileARouteWaitsForFour(sslh: DemuxProcess) -> None:
    """
    C{foo}: the ssh route says no, the regex route waits for a fourth byte,
    the catch-all would match; at the deadline it goes to on_timeout, sshd.
    """
    answer, elapsed, line = firstLine(sslh, b"foo")
    assert answer.startswith(b"SSH-2.0-"), answer
    assert elapsed >= INSPECT_DELAY - 0.1, elapsed
    assert "route=ssh (no decision within 1.5s; undecided (four waits), on_timeout)" in line


def test_junkReachesCatchAll(sslh: DemuxProcess) -> None:
    """
    Bytes every route refuses go to the catch-all at once.
    """
    answer, elapsed, line = firstLine(sslh, b"\x00junk\n")
    assert answer == b"TAG:rest\n"
    assert "route=rest (any)" in line
    assert "no decision" not in line


def test_fourthByteReachesItsRoute(sslh: DemuxProcess) -> None:
    """
    ... and the route that waited gets the connection when its byte comes.
    """
    answer, elapsed, line = firstLine(sslh, b"foobar\n")
    assert answer == b"TAG:four\n"
    assert "route=four (" in line
    assert "no decision" not in line
