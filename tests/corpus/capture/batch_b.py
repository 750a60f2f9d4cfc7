"""
Capture the first flights of real xmpp, rdp, tinc and adb clients for the
corpus (issue 7, batch B).

Run from the repository root, as root on a Debian machine, with the clients
installed::

    apt-get install -y adb tinc freerdp2-x11 xvfb
    pip install slixmpp
    python tests/corpus/capture/batch_b.py [xmpp] [rdp] [tinc] [adb]

Clients used for the committed files: slixmpp 1.17.0 (CPython 3.11),
FreeRDP 2 (Debian freerdp2-x11), tinc 1.0.36 (Debian), adb 1.0.41 (Debian
29.0.6).

Each capture listens on a free port on 127.0.0.1, starts the client against
it, records whatever arrives on the first connection within a second of its
first byte without answering, and writes it to C{tests/corpus/NAME.bin}.
Every client here sends its first flight unprompted, so nothing is answered.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from demux.testing import reservePort

CORPUS = Path(__file__).resolve().parent.parent
QUIET = 1.0
STOP: list[subprocess.Popen[bytes]] = []
"""
Helper processes (the X server) to stop after a capture.
"""


def capture(start: Callable[[int], subprocess.Popen[bytes]], name: str) -> bytes:
    """
    Listen, run C{start(port)}, and record its first connection's bytes
    until a second has passed since the first of them (or the client
    closes); save them as C{name}.
    """
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(30)
        port = server.getsockname()[1]
        client = start(port)
        try:
            conn, _ = server.accept()
            with conn:
                data = b""
                conn.settimeout(10)
                deadline = None
                while deadline is None or time.monotonic() < deadline:
                    if deadline is not None:
                        conn.settimeout(max(deadline - time.monotonic(), 0.01))
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        break
                    if not chunk:
                        break
                    if deadline is None:
                        deadline = time.monotonic() + QUIET
                    data += chunk
        finally:
            # Let a client that gives up when the server hangs up exit by
            # itself (xvfb-run then stops its X server too).
            try:
                client.wait(10)
            except subprocess.TimeoutExpired:
                client.terminate()
                try:
                    client.wait(10)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.wait()
    (CORPUS / name).write_bytes(data)
    print(f"{name}: {len(data)} bytes: {data[:80]!r}")
    return data


def xmpp(port: int) -> subprocess.Popen[bytes]:
    """
    slixmpp's ClientXMPP, connecting in the clear (STARTTLS comes after the
    stream header, so the header is what a demux sees).
    """
    script = textwrap.dedent(
        f"""
        import asyncio, slixmpp
        client = slixmpp.ClientXMPP("alice@example.com/demux", "secret")
        client.enable_direct_tls = False
        client.connect("127.0.0.1", {port})
        asyncio.get_event_loop().run_until_complete(asyncio.sleep(5))
        """
    )
    return subprocess.Popen([sys.executable, "-c", script])


def rdp(port: int) -> subprocess.Popen[bytes]:
    """
    FreeRDP's xfreerdp on a virtual X server of its own, with a user name so
    that it sends the C{mstshash} cookie.
    """
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-nolisten", "tcp"], pass_fds=(write,)
    )
    os.close(write)
    with os.fdopen(read) as displayFile:
        display = displayFile.readline().strip()
    STOP.append(xvfb)
    return subprocess.Popen(
        ["xfreerdp", f"/v:127.0.0.1:{port}", "/u:alice", "/cert:ignore"],
        env={**os.environ, "DISPLAY": f":{display}"},
    )


def tinc(port: int) -> subprocess.Popen[bytes]:
    """
    tincd in the foreground with a throwaway net whose only ConnectTo is the
    capture server.
    """
    directory = Path(tempfile.mkdtemp(prefix="demux-tinc-"))
    hosts = directory / "hosts"
    hosts.mkdir()
    (directory / "tinc.conf").write_text(
        "Name = alice\nConnectTo = capture\nDeviceType = dummy\n"
        "AddressFamily = ipv4\nBindToAddress = 127.0.0.1 0\n"
    )
    (hosts / "capture").write_text(f"Address = 127.0.0.1 {port}\n")
    subprocess.run(
        ["tincd", "-c", str(directory), "-K4096"],
        input=b"\n\n", check=True, capture_output=True,
    )
    os.environ["DEMUX_TINC_DIR"] = str(directory)
    return subprocess.Popen(
        ["tincd", "-c", str(directory), "-D", "--pidfile", str(directory / "pid"),
         "--logfile=" + str(directory / "log")]
    )


def adb(port: int) -> subprocess.Popen[bytes]:
    """
    The adb client asking its server (started on a port of its own) to
    connect to the capture server, as C{adb connect} does.
    """
    serverPort = str(_freePort())
    env = {**os.environ, "ANDROID_ADB_SERVER_PORT": serverPort}
    subprocess.run(["adb", "start-server"], env=env, check=True)
    os.environ["DEMUX_ADB_SERVER_PORT"] = serverPort
    return subprocess.Popen(["adb", "connect", f"127.0.0.1:{port}"], env=env)


def _freePort() -> int:
    return reservePort()


CAPTURES = {
    "xmpp": (xmpp, "slixmpp-stream.bin"),
    "rdp": (rdp, "xfreerdp-cr.bin"),
    "tinc": (tinc, "tincd-id.bin"),
    "adb": (adb, "adb-cnxn.bin"),
}


def main(names: list[str]) -> None:
    for name in names or list(CAPTURES):
        start, fileName = CAPTURES[name]
        try:
            capture(start, fileName)
        finally:
            while STOP:
                helper = STOP.pop()
                helper.terminate()
                helper.wait(10)
            if name == "adb" and "DEMUX_ADB_SERVER_PORT" in os.environ:
                subprocess.run(
                    ["adb", "kill-server"],
                    env={
                        **os.environ,
                        "ANDROID_ADB_SERVER_PORT": os.environ["DEMUX_ADB_SERVER_PORT"],
                    },
                )
            if name == "tinc" and "DEMUX_TINC_DIR" in os.environ:
                shutil.rmtree(os.environ.pop("DEMUX_TINC_DIR"), ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
