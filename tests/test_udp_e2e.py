"""
UDP through a real C{twistd demux}: DNS with C{dig}, WireGuard, STUN and
OpenVPN first datagrams to their backends, TCP and UDP on one port number,
and hostile traffic (junk from many ports, a flood of Initials, a silent
undecided flow) against the flow table's bounds.
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._process import DemuxProcess, freePort, runDemux
from ._servers import TagServer
from .test_udp_quic import LONG_ALPN, waitForListening

pytestmark = pytest.mark.e2e


class UDPServer:
    """
    A UDP server on 127.0.0.1, port 0, in a thread: answers each datagram
    with C{answer(datagram)} (nothing for L{None}) and records the
    addresses it heard from.
    """

    def __init__(self, name: str, answer=None) -> None:  # type: ignore[no-untyped-def]
        self.name = name
        self.answer = answer or (lambda d: name.encode() + b":" + d)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.peers: set[tuple[str, int]] = set()
        self.received: list[bytes] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 300
        while not self.stopping and time.monotonic() < deadline:
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.add(peer)
            self.received.append(data)
            reply = self.answer(data)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def dnsAnswer(query: bytes) -> bytes:
    """
    An answer to any one-question query: 192.0.2.53, for 60 s.
    """
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12 : end + 5]
    header = query[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("192.0.2.53")
    return header + question + answer


@pytest.fixture
def servers() -> Iterator[dict[str, UDPServer]]:
    made = {
        "dns": UDPServer("dns", dnsAnswer),
        "wireguard": UDPServer("wireguard"),
        "stun": UDPServer("stun"),
        "openvpn": UDPServer("openvpn"),
    }
    try:
        yield made
    finally:
        for server in made.values():
            server.close()


def run(config: str) -> Iterator[DemuxProcess]:
    with runDemux(config, waitFor=None) as demux:
        waitForListening(demux)
        yield demux


def exchange(port: int, datagram: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(datagram, ("127.0.0.1", port))
        return s.recv(65535)


# First datagrams by their specifications.
WIREGUARD_INITIATION = b"\x01\x00\x00\x00" + b"\x11" * 4 + b"\x22" * 140
"""
Handshake initiation (type 1, three reserved zero bytes): 148 bytes.
"""
STUN_BINDING = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + b"\x33" * 12
"""
RFC 8489 Binding request: no attributes, the magic cookie, a transaction ID.
"""
OPENVPN_HARD_RESET = bytes([7 << 3]) + b"\x44" * 8 + b"\x00" + b"\x00\x00\x00\x00"
"""
P_CONTROL_HARD_RESET_CLIENT_V2, key id 0: opcode, session ID, an empty ACK
array and packet ID 0, as OpenVPN without tls-auth sends it.
"""

ROUTES = """
[[routes]]
name = "dns"
match.dns = {{}}
backend = "udp:127.0.0.1:{dns}"
[[routes]]
name = "wireguard"
match.wireguard = {{}}
backend = "udp:127.0.0.1:{wireguard}"
[[routes]]
name = "stun"
match.stun = {{}}
backend = "udp:127.0.0.1:{stun}"
[[routes]]
name = "openvpn"
match.openvpn = {{}}
backend = "udp:127.0.0.1:{openvpn}"
"""


def routesFor(servers: dict[str, UDPServer]) -> str:
    return ROUTES.format(**{name: s.port for name, s in servers.items()})


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) is not installed")
def test_dig(servers: dict[str, UDPServer]) -> None:
    """
    C{dig} asks through demux's DNS route and gets the test server's answer;
    when the flow ends, one line says how it was routed and what it carried.
    """
    config = (
        'listen = ["udp:{port}:interface=127.0.0.1"]\nudp_idle_timeout = 1\n'
        + routesFor(servers)
    )
    for demux in run(config):
        result = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(demux.port), "www.example.test", "A",
             "+short", "+tries=2", "+time=3"],
            capture_output=True,
            timeout=30,
        )
        assert result.stdout.strip() == b"192.0.2.53", result
        demux.waitForLog("ended (idle for 1 s)")
        [line] = [x for x in demux.log().splitlines() if " route=dns " in x]
        assert " route=dns (dns=www.example.test type=A) " in line, line
        assert "-> udp:127.0.0.1:" in line and "1 datagrams peeked" in line, line
        assert "; ended (idle for 1 s) after " in line, line


def test_protocolsByFirstDatagram(servers: dict[str, UDPServer]) -> None:
    """
    WireGuard, STUN and OpenVPN first datagrams each reach their own
    backend, and each reply comes back to its client; with
    C{log_decisions}, each flow's decision is logged at once.
    """
    config = (
        'listen = ["udp:{port}:interface=127.0.0.1"]\nlog_decisions = true\n'
        + routesFor(servers)
    )
    for demux in run(config):
        for name, datagram in [
            ("wireguard", WIREGUARD_INITIATION),
            ("stun", STUN_BINDING),
            ("openvpn", OPENVPN_HARD_RESET),
        ]:
            assert exchange(demux.port, datagram) == name.encode() + b":" + datagram
            assert servers[name].received == [datagram]
        log = demux.log()
        for name in ("wireguard", "stun", "openvpn"):
            assert f"route={name} (" in log


def test_tcpAndUDPOnOnePort(servers: dict[str, UDPServer]) -> None:
    """
    A TCP listener and a UDP listener on the same port number, each with
    its own routes, side by side.
    """
    tag = TagServer("tcp-backend")
    try:
        config = (
            'listen = ["tcp:{port}:interface=127.0.0.1", "udp:{port}:interface=127.0.0.1"]\n'
            + routesFor(servers)
            + f'[[routes]]\nname = "tcp"\nmatch.any = {{}}\nbackend = "tcp:127.0.0.1:{tag.port}"\n'
        )
        for demux in run(config):
            assert exchange(demux.port, WIREGUARD_INITIATION).startswith(b"wireguard:")
            with socket.create_connection(("127.0.0.1", demux.port), timeout=5) as s:
                s.sendall(b"hello\n")
                assert b"tcp-backend" in s.recv(4096)
    finally:
        tag.close()


def test_wildcardRepliesFromAddressSentTo(servers: dict[str, UDPServer]) -> None:
    """
    On a listener bound to every address, the reply comes from the address
    the client sent to (127.0.0.2 here, where the kernel would pick
    127.0.0.1): a connected client socket, as QUIC and WireGuard clients
    use, accepts nothing else.
    """
    config = 'listen = ["udp:{port}"]\n' + routesFor(servers)
    for demux in run(config):
        for host in ("127.0.0.2", "127.0.0.1"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.connect((host, demux.port))
                s.send(WIREGUARD_INITIATION)
                reply, source = s.recvfrom(65535)
                assert source == (host, demux.port)
                assert reply == b"wireguard:" + WIREGUARD_INITIATION


def test_wildcard6RepliesFromAddressSentTo(servers: dict[str, UDPServer]) -> None:
    """
    The same on an IPv6 wildcard listener, for IPv6 clients and for IPv4
    clients it takes as v4-mapped.
    """
    config = 'listen = ["udp6:{port}"]\n' + routesFor(servers)
    for demux in run(config):
        for family, host in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.2")):
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.connect((host, demux.port))
                s.send(WIREGUARD_INITIATION)
                reply, source = s.recvfrom(65535)
                assert source[:2] == (host, demux.port)
                assert reply == b"wireguard:" + WIREGUARD_INITIATION


# Binds the UDP socket systemd would, as descriptor 3, says so in the
# environment as systemd does, and becomes twistd.
SYSTEMD_SHIM = """
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="udp", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_systemdDatagramSocket(servers: dict[str, UDPServer]) -> None:
    """
    C{udp:systemd:index=0} adopts the datagram socket systemd passed.
    """
    port = freePort()
    config = 'listen = ["udp:systemd:index=0"]\n' + routesFor(servers)
    prefix = [sys.executable, "-c", SYSTEMD_SHIM, str(port)]
    with runDemux(config, port=port, waitFor=None, prefix=prefix) as demux:
        waitForListening(demux)
        assert f"(UDP 127.0.0.1:{port})" in demux.log()
        assert exchange(port, STUN_BINDING) == b"stun:" + STUN_BINDING


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def waitForCount(metrics: int, flows: int, timeout: float = 15) -> None:
    """
    Wait until demux has routed or dropped C{flows} new flows in all.
    """
    deadline = time.monotonic() + timeout
    while (
        metric(metrics, "demux_udp_flows_routed_total")
        + metric(metrics, "demux_udp_flows_dropped_total")
        < flows
    ):
        assert time.monotonic() < deadline, f"demux did not see {flows} flows"
        time.sleep(0.05)


def hostileConfig(backend: int, metrics: int, **top: object) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in top.items())
    return f"""
listen = ["udp:{{port}}:interface=127.0.0.1"]
metrics = "tcp:{metrics}:interface=127.0.0.1"
{extra}
[[routes]]
name = "quic"
match.quic = {{}}
backend = "udp:127.0.0.1:{backend}"
"""


def clientInitial(alpn: list[str] | None = None) -> list[bytes]:
    """
    A real client's first flight of QUIC Initial datagrams (aioquic's).
    """
    from aioquic.quic.connection import QuicConnection

    from ._quic import clientConfiguration

    configuration = clientConfiguration("one.example", *([alpn] if alpn else []))
    connection = QuicConnection(configuration=configuration)
    connection.connect(("127.0.0.1", 443), now=time.time())
    return [d for d, _ in connection.datagrams_to_send(now=time.time())]


def test_junkFromManyPorts() -> None:
    """
    100,000 junk datagrams from 500 source ports make no flow, and demux's
    memory stays flat while it drops them.
    """
    sink = UDPServer("sink", lambda d: None)
    metrics = freePort()
    sockets = []
    try:
        for demux in run(hostileConfig(sink.port, metrics)):
            for _ in range(500):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                sockets.append(s)
            target = ("127.0.0.1", demux.port)
            junk = b"\x00junk that no route takes" + b"\x00" * 40

            def burst(rounds: int, junk: bytes = junk, target: tuple[str, int] = target) -> None:
                for n in range(rounds):
                    for s in sockets[:100] if n % 2 else sockets[100:200]:
                        s.sendto(junk, target)
                    for s in sockets[200:]:
                        s.sendto(junk, target)
                    # Paced, so that what is measured is demux, not the
                    # kernel's receive buffer overflowing.
                    time.sleep(0.01)

            burst(25)  # 10,000: warm up the allocator and the logger.
            time.sleep(1)
            before = rss(demux.process.pid)
            burst(225)  # 90,000 more.
            # Wait until demux has read all it will (the kernel may have
            # dropped some when its buffer was full); most must have come.
            seen, deadline = -1.0, time.monotonic() + 60
            while (now := metric(metrics, "demux_udp_flows_dropped_total")) != seen:
                assert time.monotonic() < deadline, "demux never caught up"
                seen = now
                time.sleep(1)
            assert seen >= 60_000, seen
            after = rss(demux.process.pid)
            assert after - before < 8 * 1024 * 1024, (before, after)
            assert metric(metrics, "demux_udp_flows_routed_total") == 0
            assert sink.received == []
    finally:
        for s in sockets:
            s.close()
        sink.close()


def test_initialFloodCappedAtMaxFlows() -> None:
    """
    Real QUIC Initials (each a new connection) from 300 addresses make at
    most max_flows flows: the backend hears from 50 flow sockets, the rest
    are counted as dropped at the limit.
    """
    sink = UDPServer("sink", lambda d: None)
    metrics = freePort()
    sockets = []
    try:
        config = hostileConfig(sink.port, metrics, max_flows=50)
        for demux in run(config):
            initials = [clientInitial()[0] for _ in range(300)]
            for n, initial in enumerate(initials):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                sockets.append(s)
                s.sendto(initial, ("127.0.0.1", demux.port))
                if n % 25 == 24:
                    # In lock step with demux, 25 datagrams (30 KB) at a
                    # time: a burst that outran a demux slowed by other work
                    # on the machine overflowed the socket's receive buffer,
                    # and the kernel's drops never reached the count.
                    waitForCount(metrics, n + 1)
            deadline = time.monotonic() + 30
            while metric(metrics, "demux_udp_flows_dropped_total") < 250:
                assert time.monotonic() < deadline, "demux did not see the flood"
                time.sleep(0.2)
            assert metric(metrics, "demux_udp_flows_routed_total") == 50
            assert metric(metrics, "demux_udp_flows_active") == 50
            time.sleep(0.5)
            assert len(sink.peers) == 50
    finally:
        for s in sockets:
            s.close()
        sink.close()


def firstOfTwoInitials() -> bytes:
    """
    The first Initial datagram of a ClientHello too big for one.
    """
    datagrams = clientInitial(LONG_ALPN)
    assert len(datagrams) >= 2
    return datagrams[0]


def test_silentUndecidedFlowDropped() -> None:
    """
    A flow that sends half a ClientHello and then nothing is dropped at
    inspect_delay, and nothing reaches the backend.
    """
    sink = UDPServer("sink", lambda d: None)
    metrics = freePort()
    try:
        config = f"""
listen = ["udp:{{port}}:interface=127.0.0.1"]
metrics = "tcp:{metrics}:interface=127.0.0.1"
inspect_delay = 1
[[routes]]
name = "one"
match.tls.sni = ["one.example"]
backend = "udp:127.0.0.1:{sink.port}"
"""
        for demux in run(config):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(firstOfTwoInitials(), ("127.0.0.1", demux.port))
                time.sleep(0.3)
                assert metric(metrics, "demux_udp_flows_undecided") == 1
                log = demux.waitForLog("dropped: inspect_delay passed", timeout=10)
                assert "1 datagrams" in log
            assert metric(metrics, "demux_udp_flows_undecided") == 0
            assert sink.received == []
    finally:
        sink.close()


def test_checkCountsUDPRoutes(tmp_path: Path) -> None:
    """
    C{--check} names UDP routes with the TCP ones, and the listeners.
    """
    config = tmp_path / "demux.toml"
    config.write_text(
        'listen = ["tcp:4443", "udp:4443"]\n' + ROUTES.format(dns=1, wireguard=2, stun=3, openvpn=4)
        + '[[routes]]\nname = "tcp"\nmatch.any = {}\nbackend = "tcp:127.0.0.1:1"\n'
    )
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "demux", "--config", str(config), "--check"],
        capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result
    assert (
        b"configuration OK: 5 routes (dns, wireguard, stun, openvpn, tcp); "
        b"listening on tcp:4443, udp:4443"
    ) in result.stdout


def test_reloadChangesUDPRoutes(servers: dict[str, UDPServer]) -> None:
    """
    After SIGHUP, new flows take the new UDP routes; a flow decided before
    keeps its backend.
    """
    config = 'listen = ["udp:{port}:interface=127.0.0.1"]\n' + routesFor(servers)
    for demux in run(config):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as old:
            old.settimeout(5)
            old.sendto(WIREGUARD_INITIATION, ("127.0.0.1", demux.port))
            assert old.recv(65535).startswith(b"wireguard:")
            path = demux.logPath.parent / "demux.toml"
            # WireGuard's handshakes now go to the STUN server.
            path.write_text(
                path.read_text().replace(
                    f"udp:127.0.0.1:{servers['wireguard'].port}",
                    f"udp:127.0.0.1:{servers['stun'].port}",
                )
            )
            demux.process.send_signal(signal.SIGHUP)
            demux.waitForLog("reloaded:")
            assert exchange(demux.port, WIREGUARD_INITIATION).startswith(b"stun:")
            old.sendto(b"\x04later", ("127.0.0.1", demux.port))
            assert old.recv(65535) == b"wireguard:\x04later"


@pytest.mark.skipif(shutil.which("openvpn") is None, reason="openvpn is not installed")
def test_realOpenVPNClient(servers: dict[str, UDPServer], tmp_path: Path) -> None:
    """
    A real OpenVPN client's first datagram (its hard reset) takes the
    openvpn route to its backend, whole and unchanged.
    """

    def run_(*argv: str) -> None:
        subprocess.run(argv, cwd=tmp_path, check=True, capture_output=True, timeout=60)

    run_("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=ca")
    run_("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client")
    run_("openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "client.crt", "-days", "1")
    # The flow's decision is logged while the client is still there.
    config = (
        'listen = ["udp:{port}:interface=127.0.0.1"]\nlog_decisions = true\n'
        + routesFor(servers)
    )
    for demux in run(config):
        client = subprocess.Popen(
            ["openvpn", "--client", "--dev", "null", "--proto", "udp", "--remote",
             "127.0.0.1", str(demux.port), "--nobind", "--ca", "ca.crt", "--cert",
             "client.crt", "--key", "client.key", "--connect-retry-max", "1", "--verb", "0"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while not servers["openvpn"].received:
                assert time.monotonic() < deadline, demux.log()
                time.sleep(0.05)
        finally:
            client.kill()
            client.wait(10)
        first = servers["openvpn"].received[0]
        assert first[0] >> 3 == 7  # P_CONTROL_HARD_RESET_CLIENT_V2
        assert "route=openvpn (openvpn=v2 wrap=none)" in demux.log()
        assert all(not s.received for name, s in servers.items() if name != "openvpn")


def test_listMatchersMarksUDP(tmp_path: Path) -> None:
    """
    C{--list-matchers} says which matchers judge datagrams, and whether
    streams too.
    """
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "demux", "--list-matchers"],
        capture_output=True, timeout=60, cwd=tmp_path,
    )
    lines = {line.split()[0]: line for line in result.stdout.decode().splitlines() if line}
    assert lines["quic"].endswith(" (UDP only)")
    assert lines["tls"].endswith(" (UDP too)")
    assert "UDP" not in lines["ssh"]
