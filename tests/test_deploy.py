"""
demux among real infrastructure: a real HAProxy in front (sending the PROXY
protocol) and behind (reading it), several backends per route, source
filters, TLS to a backend checked against a test CA, the Prometheus endpoint
and status view scraped with curl, the JSON-lines log, and a listening
socket passed the way systemd passes it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from ._process import (
    DemuxProcess,
    environmentWithPath,
    freePort,
    require,
    runDemux,
    twistdCommand,
    waitForPort,
)
from ._servers import TagServer, recvAll


@contextmanager
def running(cmd: list[str], port: int, logPath: Path) -> Iterator[subprocess.Popen[bytes]]:
    """
    Run C{cmd} until the block ends, once something listens on C{port}.
    """
    with logPath.open("wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=environmentWithPath(),
        )
    try:
        try:
            waitForPort(port)
        except TimeoutError:
            raise AssertionError(
                f"{cmd[0]} did not start:\n{logPath.read_text(errors='replace')}"
            ) from None
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def makeCA(directory: Path) -> tuple[Path, Path, Path]:
    """
    A test CA (alone in C{directory/roots}, for C{trustRoots=}) and a
    certificate for C{localhost} that it signed; returns the roots directory,
    the server certificate and its key.
    """
    roots = directory / "roots"
    roots.mkdir()
    caKey, ca = directory / "ca.key", roots / "ca.pem"
    key, cert = directory / "localhost.key", directory / "localhost.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(
        ["openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=demux test CA",
         "-keyout", str(caKey), "-out", str(ca),
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign"],
        check=True, capture_output=True,
    )
    subprocess.run(
        ["openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=localhost",
         "-CA", str(ca), "-CAkey", str(caKey), "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost",
         "-addext", "basicConstraints=CA:FALSE"],
        check=True, capture_output=True,
    )
    return roots, cert, key


HAPROXY = """
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend front-v2
    bind 127.0.0.1:{frontV2}
    default_backend demux-v2

backend demux-v2
    server demux 127.0.0.1:{proxied} send-proxy-v2

frontend front-v1
    bind 127.0.0.1:{frontV1}
    default_backend demux-v1

backend demux-v1
    server demux 127.0.0.1:{proxied} send-proxy

frontend echo-address
    mode http
    timeout http-request 5s
    bind 127.0.0.1:{echo} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"
"""

DEMUX = """
listen = ["tcp:{{port}}:interface=127.0.0.1",
          "haproxy:tcp:{proxied}:interface=127.0.0.1"]
metrics = "tcp:{metrics}:interface=127.0.0.1"
inspect_delay = 2
connect_timeout = 3

[[routes]]
name = "tag"
match.prefix = {{text = "HELLO"}}
backend = "tcp:127.0.0.1:{tag}"

[[routes]]
name = "echo-v1"
match.http.host = "v1.test"
backend = "tcp:127.0.0.1:{echo}"
send_proxy = "v1"

[[routes]]
name = "echo-v2"
match.http.host = "v2.test"
backend = "tcp:127.0.0.1:{echo}"
send_proxy = "v2"

[[routes]]
name = "rr"
match.prefix = {{text = "RR"}}
backend = ["tcp:127.0.0.1:{a}", "tcp:127.0.0.1:{b}"]
balance = "roundrobin"

[[routes]]
name = "first"
match.prefix = {{text = "FIRST"}}
backend = ["tcp:127.0.0.1:{dead}", "tcp:127.0.0.1:{b}"]
balance = "first"
retry_after = 30

[[routes]]
name = "admin"
match.prefix = {{text = "SRC"}}
backend = "tcp:127.0.0.1:{a}"
allow = ["127.0.0.0/8"]
deny = ["127.0.0.1/32"]

[[routes]]
name = "public"
match.prefix = {{text = "SRC"}}
backend = "tcp:127.0.0.1:{b}"

[[routes]]
name = "tls-good"
match.prefix = {{text = "good:"}}
backend = "tls:localhost:{tls}:trustRoots={roots}"

[[routes]]
name = "tls-bad"
match.prefix = {{text = "bad:"}}
backend = 'tls:host=wrong.example:port={tls}:endpoint=tcp\\:127.0.0.1\\:{tls}:trustRoots={roots}'
"""


@pytest.fixture(scope="module")
def deploy() -> Iterator[dict[str, object]]:
    """
    HAProxy in front of a C{haproxy:} listener and behind C{send_proxy}
    routes, two tagged servers, a dead port, an C{openssl s_server} with a
    certificate from a test CA, and one demux with metrics among them.
    """
    haproxy = require("haproxy")
    require("openssl")
    require("curl")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        ports = {
            name: freePort()
            for name in ("frontV1", "frontV2", "proxied", "echo", "metrics", "dead")
        }
        servers = {name: TagServer(name) for name in ("tag", "a", "b")}
        for server in servers.values():
            stack.callback(server.close)
        roots, cert, key = makeCA(directory)
        tls = freePort()
        stack.enter_context(
            running(
                ["openssl", "s_server", "-quiet", "-rev", "-accept", f"127.0.0.1:{tls}",
                 "-cert", str(cert), "-key", str(key)],
                tls,
                directory / "s_server.log",
            )
        )
        haproxyConfig = directory / "haproxy.cfg"
        haproxyConfig.write_text(HAPROXY.format(**ports))
        stack.enter_context(
            running([haproxy, "-db", "-f", str(haproxyConfig)], ports["echo"],
                    directory / "haproxy.log")
        )
        config = DEMUX.format(
            **ports,
            **{name: s.port for name, s in servers.items()},
            tls=tls,
            roots=roots,
        )
        demux = stack.enter_context(runDemux(config))
        waitForPort(ports["proxied"])
        waitForPort(ports["metrics"])
        yield {"demux": demux, "ports": ports, "servers": servers}


def exchange(
    port: int, data: bytes, source: str = "127.0.0.1", nodelay: bool = False
) -> tuple[bytes, int]:
    """
    Connect from C{source}, send C{data}, stop sending, and read everything;
    returns what was read and the client's own port.
    """
    with socket.socket() as s:
        s.bind((source, 0))
        if nodelay:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recvAll(s, 10), s.getsockname()[1]


def demuxOf(deploy: dict[str, object]) -> DemuxProcess:
    return deploy["demux"]  # type: ignore[return-value]


def portsOf(deploy: dict[str, object]) -> dict[str, int]:
    return deploy["ports"]  # type: ignore[return-value]


# PROXY protocol, received from a real HAProxy.


@pytest.mark.parametrize("front", ["frontV2", "frontV1"])
def test_proxyHeaderFromHAProxy(deploy: dict[str, object], front: str) -> None:
    """
    Through HAProxy's C{send-proxy-v2} and C{send-proxy}, demux routes on
    the bytes after the header and logs the real client's address, which
    only the client (and HAProxy) know: its own ephemeral port.
    """
    demux = demuxOf(deploy)
    answer, clientPort = exchange(portsOf(deploy)[front], b"HELLO through haproxy\n")
    assert answer == b"TAG:tag\nHELLO through haproxy\n"
    demux.waitForLog(f"127.0.0.1:{clientPort} route=tag (prefix=")


def test_noProxyHeaderRefused(deploy: dict[str, object]) -> None:
    """
    A connection to a C{haproxy:} listener that does not start with a
    header is refused, not guessed at.
    """
    demux = demuxOf(deploy)
    answer, clientPort = exchange(portsOf(deploy)["proxied"], b"HELLO no header\n")
    assert answer == b""
    demux.waitForLog(f"127.0.0.1:{clientPort} refused: no valid PROXY protocol header")


def v2Header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    addresses = (
        socket.inet_aton(source[0]) + socket.inet_aton(destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    return (
        b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11])
        + struct.pack("!H", len(addresses)) + addresses
    )


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 443\r\n",
        v2Header(("192.0.2.7", 40002), ("198.51.100.1", 443)),
    ],
    ids=["v1", "v2"],
)
def test_proxyHeaderByteByByte(deploy: dict[str, object], header: bytes) -> None:
    """
    A header that arrives one byte per read is still read whole, and the
    connection is routed on what follows it.
    """
    demux = demuxOf(deploy)
    port = 40001 if header.startswith(b"PROXY") else 40002
    with socket.create_connection(("127.0.0.1", portsOf(deploy)["proxied"]), 10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(header)):
            s.send(header[i : i + 1])
            time.sleep(0.005)
        s.sendall(b"HELLO slowly\n")
        s.shutdown(socket.SHUT_WR)
        assert recvAll(s, 10) == b"TAG:tag\nHELLO slowly\n"
    demux.waitForLog(f"192.0.2.7:{port} route=tag (prefix=")


# PROXY protocol, sent to a real HAProxy.


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_sendProxyToHAProxy(deploy: dict[str, object], version: str) -> None:
    """
    HAProxy with C{accept-proxy} answers with the address it saw: through
    demux, that is curl's own address and port, not demux's.
    """
    demux = demuxOf(deploy)
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-H", f"Host: {version}.test",
         "-w", "\n%{local_ip}:%{local_port}",
         f"http://127.0.0.1:{demux.port}/"],
        capture_output=True, check=True, timeout=20,
    )
    body, client = result.stdout.decode().rsplit("\n", 1)
    assert body == client
    assert client.startswith("127.0.0.1:")
    demux.waitForLog(f"{client} route=echo-{version}")


# Several backends per route.


def tagOf(answer: bytes) -> str:
    return answer.split(b"\n", 1)[0].decode()


def test_roundRobin(deploy: dict[str, object]) -> None:
    """
    Each new connection starts at the next backend.
    """
    demux = demuxOf(deploy)
    tags = [tagOf(exchange(demux.port, b"RR\n")[0]) for _ in range(4)]
    assert tags in (["TAG:a", "TAG:b"] * 2, ["TAG:b", "TAG:a"] * 2)


def test_firstAvailableSkipsDeadBackend(deploy: dict[str, object]) -> None:
    """
    The first backend refuses: the connection goes to the second, and for
    C{retry_after} seconds the first is not even tried.
    """
    demux = demuxOf(deploy)
    dead = portsOf(deploy)["dead"]
    failure = f"route=first backend tcp:127.0.0.1:{dead} failed"
    for _ in range(3):
        answer, clientPort = exchange(demux.port, b"FIRST\n")
        assert tagOf(answer) == "TAG:b"
        demux.waitForClosed(f"127.0.0.1:{clientPort}", "first")
    assert demux.log().count(failure) == 1


def test_sourceFilters(deploy: dict[str, object]) -> None:
    """
    The same bytes take different routes by the client's address:
    127.0.0.2 is allowed on "admin"; 127.0.0.1 is denied there, and falls
    through to "public".
    """
    demux = demuxOf(deploy)
    answer, port2 = exchange(demux.port, b"SRC\n", source="127.0.0.2")
    assert tagOf(answer) == "TAG:a"
    answer, port1 = exchange(demux.port, b"SRC\n", source="127.0.0.1")
    assert tagOf(answer) == "TAG:b"
    demux.waitForLog(f"127.0.0.2:{port2} route=admin")
    demux.waitForLog(f"127.0.0.1:{port1} route=public")


# TLS to the backend.


def test_tlsBackendVerified(deploy: dict[str, object]) -> None:
    """
    A plaintext client, a backend over TLS whose certificate for localhost
    is checked against the test CA: the answers come back.
    """
    demux = demuxOf(deploy)
    answer, clientPort = exchange(demux.port, b"good: hello demux\nCLOSE\n")
    assert b"xumed olleh :doog" in answer
    demux.waitForLog(f"127.0.0.1:{clientPort} route=tls-good")


def test_tlsBackendWrongName(deploy: dict[str, object]) -> None:
    """
    A backend whose certificate does not name the host asked for fails
    verification: the client's connection is closed with nothing relayed.
    """
    demux = demuxOf(deploy)
    answer, clientPort = exchange(demux.port, b"bad: hello demux\nCLOSE\n")
    assert answer == b""
    demux.waitForClosed(f"127.0.0.1:{clientPort}", "tls-bad")


def test_tlsBackendWrongNameLogged(deploy: dict[str, object]) -> None:
    """
    The log says why a backend's TLS failed: the name did not match.
    """
    demux = demuxOf(deploy)
    _, clientPort = exchange(demux.port, b"bad: hello demux\nCLOSE\n")
    demux.waitForClosed(f"127.0.0.1:{clientPort}", "tls-bad")
    log = demux.log()
    lines = [x for x in log.splitlines() if f"127.0.0.1:{clientPort} " in x]
    assert any(
        "VerificationError" in x and "wrong.example" in x and "(prefix=" not in x
        for x in lines
    ), lines


# Metrics and the status view.


def curl(url: str) -> str:
    return subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "10", url],
        capture_output=True, check=True, timeout=20,
    ).stdout.decode()


def sample(metrics: str, name: str, **labels: str) -> float:
    """
    One sample's value from Prometheus' text format; 0 if it is not there.
    """
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{want}}}" if want else "")) + r" (\S+)$"
    for line in metrics.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return 0.0


def test_metricsMove(deploy: dict[str, object]) -> None:
    """
    Scraped with curl before and after some traffic: routed per route, bytes
    each way, refusals by reason, accepted, the decide histogram and the
    backend connect histogram all count it.
    """
    demux = demuxOf(deploy)
    url = f"http://127.0.0.1:{portsOf(deploy)['metrics']}/metrics"
    before = curl(url)
    sent = b"HELLO metrics\n"
    for _ in range(3):
        answer, clientPort = exchange(demux.port, sent)
        demux.waitForClosed(f"127.0.0.1:{clientPort}", "tag")
    assert exchange(demux.port, b"NOPE\n")[0] == b""
    demux.waitForLog("refused: no route matched")
    _, clientPort = exchange(portsOf(deploy)["proxied"], b"HELLO no header\n")
    demux.waitForLog(f"127.0.0.1:{clientPort} refused")
    after = curl(url)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("demux_connections_routed_total", route="tag") == 3
    assert moved("demux_bytes_up_total", route="tag") == 3 * len(sent)
    assert moved("demux_bytes_down_total", route="tag") == 3 * len(answer)
    assert moved("demux_connections_refused_total", reason="no match") == 1
    assert moved("demux_connections_refused_total", reason="proxy header") == 1
    assert moved("demux_connections_accepted_total") == 5
    assert moved("demux_decide_seconds_count") == 3
    assert moved("demux_backend_connect_seconds_count", route="tag") == 3
    assert sample(after, "demux_connections_active", route="tag") == 0
    assert "# TYPE demux_decide_seconds histogram" in after


def test_statusView(deploy: dict[str, object]) -> None:
    """
    /status.json and /status show every route with its match table, its
    counts, and the open connections with their route and age.
    """
    demux = demuxOf(deploy)
    base = f"http://127.0.0.1:{portsOf(deploy)['metrics']}"
    with socket.create_connection(("127.0.0.1", demux.port), 10) as s:
        s.sendall(b"HELLO status\n")
        s.settimeout(10)
        assert s.recv(100).startswith(b"TAG:tag\n")
        clientPort = s.getsockname()[1]
        status = json.loads(curl(f"{base}/status.json"))
        page = curl(f"{base}/status")
    names = [r["name"] for r in status["routes"]]
    assert names == ["tag", "echo-v1", "echo-v2", "rr", "first", "admin", "public",
                     "tls-good", "tls-bad"]
    tag = status["routes"][0]
    assert tag["match"] == {"prefix": {"text": "HELLO"}}
    assert tag["counts"]["routed"] >= 1
    assert tag["counts"]["active"] == 1
    admin = status["routes"][5]
    assert (admin["allow"], admin["deny"]) == (["127.0.0.0/8"], ["127.0.0.1/32"])
    open_ = [c for c in status["activeConnections"]
             if c["peer"] == f"127.0.0.1:{clientPort}"]
    assert len(open_) == 1
    assert open_[0]["route"] == "tag"
    assert 0 <= open_[0]["ageSeconds"] < 30
    assert f"127.0.0.1:{clientPort}" in page
    assert "<td>tls-bad</td>" in page


# The JSON-lines log.


def test_jsonLog() -> None:
    """
    C{twistd --logger demux.jsonlog.observer} writes one JSON object per line
    to standard output, with demux's fields as fields.
    """
    backend = TagServer("json")
    port = freePort()
    try:
        with tempfile.TemporaryDirectory() as d:
            directory = Path(d)
            (directory / "demux.toml").write_text(
                f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
                "[[routes]]\nname = \"json\"\nmatch.prefix = {text = \"HELLO\"}\n"
                f'backend = "tcp:127.0.0.1:{backend.port}"\n'
            )
            logPath = directory / "out.jsonl"
            cmd = twistdCommand(
                "-n", "--pidfile=", "--logger", "demux.jsonlog.observer",
                "demux", "--config", str(directory / "demux.toml"),
            )
            with running(cmd, port, logPath) as process:
                answer, clientPort = exchange(port, b"HELLO json\n")
                assert answer == b"TAG:json\nHELLO json\n"
                deadline = time.monotonic() + 10
                while "bytesDown" not in logPath.read_text():
                    assert time.monotonic() < deadline, logPath.read_text()
                    time.sleep(0.05)
                process.send_signal(signal.SIGTERM)
                process.wait(10)
            lines = logPath.read_text().splitlines()
    finally:
        backend.close()
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"time", "level", "namespace", "text"} <= record.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["time"])
    peer = f"127.0.0.1:{clientPort}"
    # One record for the connection, when it ended, with its decision.
    mine = [r for r in records if r.get("peer") == peer]
    assert len(mine) == 1, "\n".join(lines)
    [closed] = mine
    assert closed["namespace"] == "demux"
    assert closed["level"] == "info"
    assert closed["route"] == "json"
    assert closed["peeked"] == len(b"HELLO json\n")
    assert closed["target"] == f"tcp:127.0.0.1:{backend.port}"
    assert isinstance(closed["decideMs"], float)
    assert closed["text"].startswith(f"{peer} route=json (prefix=")
    assert "; closed: " in closed["text"]
    assert closed["bytesUp"] == len(b"HELLO json\n")
    assert closed["bytesDown"] == len(b"TAG:json\nHELLO json\n")
    assert closed["duration"] >= 0
    assert closed["backendError"] is None


# systemd socket activation.


# What systemd does between fork and exec: the socket goes on descriptor 3,
# and the environment names the process itself, which exec keeps.
ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="demux")
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_systemdSocketActivation() -> None:
    """
    A listening socket passed as systemd passes it (descriptor 3,
    LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID naming the process itself):
    C{systemd:domain=INET:index=0} serves on it.
    """
    backend = TagServer("systemd")
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        with tempfile.TemporaryDirectory() as d:
            directory = Path(d)
            (directory / "demux.toml").write_text(
                'listen = ["systemd:domain=INET:index=0"]\n'
                "[[routes]]\nname = \"activated\"\nmatch.prefix = {text = \"HELLO\"}\n"
                f'backend = "tcp:127.0.0.1:{backend.port}"\n'
            )
            logPath = directory / "twistd.log"
            twistd = twistdCommand(
                "-n", "--pidfile=", "--logfile", str(logPath),
                "demux", "--config", str(directory / "demux.toml"),
            )
            process = subprocess.Popen(
                [sys.executable, "-c", ACTIVATE, str(listener.fileno()), *twistd],
                pass_fds=[listener.fileno()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 15
                while "starting on" not in (
                    logPath.read_text() if logPath.exists() else ""
                ):
                    assert process.poll() is None, "twistd exited"
                    assert time.monotonic() < deadline, "demux did not start"
                    time.sleep(0.05)
                # Only the child serves the socket from here on.
                listener.close()
                answer, clientPort = exchange(port, b"HELLO systemd\n")
                assert answer == b"TAG:systemd\nHELLO systemd\n"
                deadline = time.monotonic() + 10
                while f"127.0.0.1:{clientPort} route=activated (" not in (
                    log := logPath.read_text()
                ):
                    assert time.monotonic() < deadline, log
                    time.sleep(0.05)
            finally:
                process.terminate()
                process.wait(15)
    finally:
        listener.close()
        backend.close()


def test_contribUnits() -> None:
    """
    The example units are well-formed, by systemd's own checker when it is
    there: the socket unit passes one stream socket, the service runs
    twistd demux on it.
    """
    contrib = Path(__file__).parent.parent / "contrib"
    socketUnit = (contrib / "demux.socket").read_text()
    serviceUnit = (contrib / "demux.service").read_text()
    assert "ListenStream=" in socketUnit
    assert "systemd:domain=INET:index=0" in serviceUnit
    assert "NoNewPrivileges=yes" in serviceUnit
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not Path("/run/systemd/system").exists():
        return
    result = subprocess.run(
        [analyze, "verify", str(contrib / "demux.socket")],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
