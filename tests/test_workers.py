"""
C{--workers N}: several processes accept on the same ports, each a whole
demux; reloads and stops reach all of them, and none outlives demux.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from ._process import runDemux
from ._servers import TagServer, recvAll

pytestmark = pytest.mark.skipif(
    not os.uname().sysname == "Linux", reason="workers are offered on Linux"
)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_workersShareThePort(tmp_path: Path) -> None:
    one, two = TagServer("one"), TagServer("two")
    config = tmp_path / "demux.toml"

    def write(backend: TagServer) -> None:
        config.write_text(
            'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            "shutdown_grace = 2\n"
            f'[[routes]]\nname = "r"\nmatch.any = {{}}\nbackend = "tcp:127.0.0.1:{backend.port}"\n'
        )

    try:
        write(one)
        template = config.read_text()
        with runDemux(template, args=["--workers", "2"]) as demux:
            config = Path(demux.logPath.parent) / "demux.toml"
            deadline = time.monotonic() + 10
            while not children(demux.process.pid):
                assert time.monotonic() < deadline, "no worker started"
                time.sleep(0.05)
            [worker] = children(demux.process.pid)
            demux.waitForLog("worker 1 serving")
            for _ in range(100):
                with socket.create_connection(("127.0.0.1", demux.port), timeout=5) as s:
                    s.sendall(b"x")
                    s.shutdown(socket.SHUT_WR)
                    assert recvAll(s) == b"TAG:one\nx"
            # Worker lines reach the log through the first process; the
            # readiness probe of runDemux is one more connection.
            # Each connection's one line has its decision and its end.
            def routedLines() -> list[str]:
                return [
                    x
                    for x in demux.log().splitlines()
                    if " route=r (any) -> " in x and "; closed: 1 bytes up" in x
                ]

            deadline = time.monotonic() + 10
            while len(routedLines()) < 100:
                assert time.monotonic() < deadline, demux.log()
                time.sleep(0.05)
            routed = routedLines()
            byWorker = [x for x in routed if "[worker 1]" in x]
            assert len(routed) == 100
            # The kernel spreads connections over both processes.
            assert 0 < len(byWorker) < 100, len(byWorker)

            # A reload reaches the worker too.
            config.write_text(config.read_text().replace(str(one.port), str(two.port)))
            demux.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while demux.log().count("reloaded: 1 routes") < 2:
                assert time.monotonic() < deadline, demux.log()
                time.sleep(0.05)
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", demux.port), timeout=5) as s:
                    s.shutdown(socket.SHUT_WR)
                    assert recvAll(s) == b"TAG:two\n"

            demux.process.send_signal(signal.SIGTERM)
            assert demux.process.wait(15) == 0
            deadline = time.monotonic() + 5
            while alive(worker):
                assert time.monotonic() < deadline, "the worker outlived demux"
                time.sleep(0.05)
    finally:
        one.close()
        two.close()
