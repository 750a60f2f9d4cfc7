"""
The UDP workload: datagrams per second and MB/s through a QUIC-ish route,
for demux against no proxy (C{direct}) and against nginx's C{stream} UDP
proxy, the C reference, reported as ratios.

Each of several flows starts with a 1,200-byte datagram that looks like a
QUIC Initial (long header, version 1) and goes on with 1,200-byte
short-header datagrams, as an HTTP/3 download's packets are sized; a UDP
echo backend sends each back.  The client keeps a window of datagrams in
flight per flow and sends one more for each that returns, refilling the
window when a datagram is lost, for a fixed time.  demux's route is a
C{prefix} on the long-header bits, so the flow is decided on its first
datagram and the rest is relaying, which is what is measured.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench._proxies import ROOT, environment, which
from tests._process import freePort, twistdCommand

SIZE = 1200
FLOWS = 8
WINDOW = 16
INITIAL = b"\xc3\x00\x00\x00\x01\x08" + b"d" * 8 + b"\x08" + b"s" * 8
SHORT = b"\x41" + b"s" * 8

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
recvfrom, sendto = s.recvfrom, s.sendto
while True:
    data, peer = recvfrom(65535)
    sendto(data, peer)
"""


def log(message: str) -> None:
    print(message, flush=True)


def startEcho() -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def startDemux(port: int, backend: int, directory: Path, demuxRoot: Path) -> subprocess.Popen[bytes]:
    config = directory / "demux-udp.toml"
    config.write_text(
        f"""
listen = ["udp:{port}:interface=127.0.0.1"]
[[routes]]
name = "quic"
match.prefix = {{hex = "c0", mask = "c0"}}
backend = "udp:127.0.0.1:{backend}"
"""
    )
    cmd = twistdCommand(
        "-n", "--logfile", str(directory / "demux-udp.log"), "--pidfile", "",
        "demux", "--config", str(config),
    )
    process = subprocess.Popen(cmd, cwd=demuxRoot, env=environment())
    waitForLog(directory / "demux-udp.log", "listening on udp:")
    return process


def startNginx(port: int, backend: int, directory: Path) -> subprocess.Popen[bytes] | None:
    nginx = which("nginx")
    module = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
    if nginx is None or not module.exists():
        return None
    config = directory / "nginx-udp.conf"
    config.write_text(
        f"""
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "nginx-error.log"};
events {{ worker_connections 4096; }}
stream {{
    server {{
        listen 127.0.0.1:{port} udp;
        proxy_pass 127.0.0.1:{backend};
        proxy_timeout 60s;
    }}
}}
"""
    )
    process = subprocess.Popen(
        [nginx, "-c", str(config), "-p", str(directory)],
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return process if process.poll() is None else None


def waitForLog(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} never appeared in {path}")


def load(port: int, seconds: float) -> tuple[float, float]:
    """
    Echo datagrams through C{port} for C{seconds}: (datagrams/s, MB/s), both
    counted on the replies, one way.
    """
    target = ("127.0.0.1", port)
    socks = []
    for _ in range(FLOWS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(INITIAL + bytes(SIZE - len(INITIAL)), target)
        socks.append(s)
    short = SHORT + bytes(SIZE - len(SHORT))
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    bySocket = {s.fileno(): s for s in socks}
    # Wait for each flow's first reply (demux decides on it), then load.
    outstanding = dict.fromkeys(bySocket, 1)
    lastReply = dict.fromkeys(bySocket, time.monotonic())
    replies = 0
    start = time.monotonic()
    end = start + seconds
    counting = False
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if not counting and now - start > 0.5:
            counting, replies, start, end = True, 0, now, now + seconds
        for fd, s in bySocket.items():
            if now - lastReply[fd] > 0.05:
                outstanding[fd] = 0  # lost: refill the window
                lastReply[fd] = now
            while outstanding[fd] < WINDOW:
                try:
                    s.sendto(short, target)
                except BlockingIOError:
                    break
                outstanding[fd] += 1
        for fd, _ in poller.poll(0.01):
            s = bySocket[fd]
            while True:
                try:
                    s.recv(65535)
                except BlockingIOError:
                    break
                replies += 1
                outstanding[fd] = max(0, outstanding[fd] - 1)
                lastReply[fd] = time.monotonic()
    elapsed = time.monotonic() - start
    for s in socks:
        s.close()
    poller.close()
    rate = replies / elapsed
    return rate, rate * SIZE / 1e6


def run(quick: bool, work: Path, demuxRoot: Path = ROOT) -> dict[str, tuple[float, float]]:
    """
    The UDP workload for direct, demux and nginx: C{{proxy: (dgram/s, MB/s)}}.
    """
    seconds = 2.0 if quick else 5.0
    work.mkdir(parents=True, exist_ok=True)
    echo, backend = startEcho()
    results: dict[str, tuple[float, float]] = {}
    children: list[subprocess.Popen[bytes]] = [echo]
    try:
        results["direct"] = load(backend, seconds)
        port = freePort()
        demux = startDemux(port, backend, work, demuxRoot)
        children.append(demux)
        results["demux"] = load(port, seconds)
        nginxPort = freePort()
        nginx = startNginx(nginxPort, backend, work)
        if nginx is not None:
            children.append(nginx)
            results["nginx"] = load(nginxPort, seconds)
        else:
            log("skipping nginx: nginx with ngx_stream_module is not installed "
                "(apt-get install nginx libnginx-mod-stream)")
    finally:
        for child in children:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return results


def report(results: dict[str, tuple[float, float]]) -> str:
    lines = [f"UDP echo, {FLOWS} flows x {WINDOW} in flight, {SIZE}-byte datagrams"]
    lines.append(f"{'':10} {'dgram/s':>10} {'MB/s':>8} {'vs direct':>10} {'vs nginx':>9}")
    direct = results.get("direct", (0.0, 0.0))[0]
    nginx = results.get("nginx", (0.0, 0.0))[0]
    for name, (rate, mbps) in results.items():
        vsDirect = f"{rate / direct:.2f}" if direct else "-"
        vsNginx = f"{rate / nginx:.2f}" if nginx else "-"
        lines.append(f"{name:10} {rate:10.0f} {mbps:8.1f} {vsDirect:>10} {vsNginx:>9}")
    return "\n".join(lines)


def main(quick: bool, work: Path, demuxRoot: Path = ROOT) -> int:
    log(f"UDP workload (pid {os.getpid()}) ...")
    log(report(run(quick, work, demuxRoot)))
    return 0
