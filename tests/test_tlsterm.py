"""
Ending TLS on a route: the configuration (files checked when loaded), the
TLS options, then a real C{twistd demux} ending TLS for C{curl},
C{openssl s_client} and Python clients in front of a recording HTTP backend,
and the real C{stdiscosrv -http} behind the C{syncthing-discovery} preset.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from demux import ConfigError, ConnectionInfo, configFromDict
from demux._forward import HTTPForwardTarget
from demux._terminate import RoutesTarget, TLSTarget
from demux.testing import clientHello

from ._process import DemuxProcess, freePort, require, runDemux, twistdCommand
from ._servers import ThreadedServer
from .syncthing.discovery import DiscoveryClient
from .syncthing.identity import Identity, generateIdentity

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def keys() -> Iterator[dict[str, Identity]]:
    """
    The server's certificate and key, a client's, and another key that
    matches neither.
    """
    with tempfile.TemporaryDirectory(prefix="tlsterm-") as d:
        directory = Path(d)
        yield {
            "server": generateIdentity(directory / "server", "demux.example.com"),
            "client": generateIdentity(directory / "client"),
            "other": generateIdentity(directory / "other"),
        }


def routeData(server: Identity, **extra: Any) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": "web",
        "match": {"tls": {}},
        "tls": {"certificate": str(server.certPath), "key": str(server.keyPath)},
        "backend": "http://127.0.0.1:8080",
    }
    route.update(extra)
    return route


def load(*routes: dict[str, Any]) -> Any:
    return configFromDict(
        {"listen": ["tcp:4443"], "routes": list(routes)},
        MemoryReactorClock(),
        "demux.toml",
    )


# The configuration.


def test_tlsRoute(keys: dict[str, Identity]) -> None:
    """
    A route with a tls table ends TLS before its target, the HTTP forwarder
    here; the client certificate is not asked for by default.
    """
    target = load(routeData(keys["server"])).table.routes[0].target
    assert isinstance(target, TLSTarget)
    assert isinstance(target.inner, HTTPForwardTarget)
    assert target.options.clientCertificate == "none"
    assert target.options.context.get_verify_mode() == SSL.VERIFY_NONE


@pytest.mark.parametrize(
    "mode, verify",
    [
        ("request", SSL.VERIFY_PEER),
        ("require", SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT),
    ],
)
def test_clientCertificateModes(keys: dict[str, Identity], mode: str, verify: int) -> None:
    route = routeData(keys["server"])
    route["tls"]["client_certificate"] = mode
    target = load(route).table.routes[0].target
    assert target.options.context.get_verify_mode() == verify


@pytest.mark.parametrize(
    "change, message",
    [
        ({"certificate": "/nonexistent/cert.pem"},
         "route 'web': tls.certificate: cannot read '/nonexistent/cert.pem': "
         "No such file or directory"),
        ({"key": "/nonexistent/key.pem"},
         "route 'web': tls.key: cannot read '/nonexistent/key.pem'"),
        ({"client_certificate": "verify"},
         "route 'web': tls.client_certificate: must be one of"),
        ({"ciphers": "x"}, "route 'web': tls: unknown key 'ciphers'"),
    ],
)
def test_badTLS(keys: dict[str, Identity], change: dict[str, str], message: str) -> None:
    route = routeData(keys["server"])
    route["tls"].update(change)
    with pytest.raises(ConfigError) as caught:
        load(route)
    assert str(caught.value).startswith(f"demux.toml: {message}")


def test_mismatchedKey(keys: dict[str, Identity]) -> None:
    """
    A key that is not the certificate's is an error naming both files.
    """
    route = routeData(keys["server"])
    route["tls"]["key"] = str(keys["other"].keyPath)
    with pytest.raises(ConfigError) as caught:
        load(route)
    text = str(caught.value)
    assert text.startswith("demux.toml: route 'web': tls.key: the key in")
    assert str(keys["other"].keyPath) in text and str(keys["server"].certPath) in text


def test_notPEM(keys: dict[str, Identity], tmp_path: Path) -> None:
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate\n")
    route = routeData(keys["server"])
    route["tls"]["certificate"] = str(bad)
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        load(route)


def test_innerRoutes(keys: dict[str, Identity]) -> None:
    """
    Inner routes decide the decrypted stream; their names carry the outer
    route's.
    """
    route = routeData(keys["server"])
    del route["backend"]
    route["routes"] = [
        {"name": "a", "match": {"http": {"host": "a.example"}}, "backend": "http://127.0.0.1:1"},
        {"name": "rest", "match": {"any": {}}, "backend": "tcp:127.0.0.1:2"},
    ]
    target = load(route).table.routes[0].target
    assert isinstance(target.inner, RoutesTarget)
    assert [r.name for r in target.inner.table.routes] == ["web/a", "web/rest"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"routes": [{"match": {"any": {}}, "backend": "tcp:h:1"}], "tls": None},
         "routes (inner routes) need tls"),
        ({"routes": [{"match": {"any": {}}, "backend": "tcp:h:1", "tls": {}}]},
         "route 'route1': unknown key 'tls' in an inner route"),
        ({"routes": [{"match": {"any": {}}, "backend": "tcp:h:1"}],
          "backend": "tcp:h:2"}, "so backend belongs in each of them"),
        ({"backend": "https://127.0.0.1:1"}, "https:// backends are not supported"),
        ({"backend": "http://127.0.0.1"}, 'must be "http://HOST:PORT"'),
        ({"http": {"timeout": 0}}, "http.timeout: must be more than 0"),
        ({"backend": "tcp:h:1", "http": {}}, "http needs a backend"),
        ({"preset": "nginx"}, "preset: unknown preset 'nginx'"),
    ],
)
def test_badRoutes(keys: dict[str, Identity], change: dict[str, Any], message: str) -> None:
    route = routeData(keys["server"])
    for key, value in change.items():
        if value is None:
            del route[key]
        else:
            route[key] = value
    if "routes" in change:
        route.pop("backend", None) if "backend" not in change else None
    with pytest.raises(ConfigError) as caught:
        load(route)
    assert message in str(caught.value)
    assert str(caught.value).startswith("demux.toml: route 'web'")


def test_preset(keys: dict[str, Identity]) -> None:
    """
    The Syncthing discovery preset asks for client certificates and
    forwards to stdiscosrv's default port; what the route says wins.
    """
    route = routeData(keys["server"], preset="syncthing-discovery")
    del route["backend"]
    target = load(route).table.routes[0].target
    assert target.options.clientCertificate == "request"
    assert target.inner.description == "http://127.0.0.1:8443"
    route["backend"] = "http://127.0.0.1:9000"
    route["tls"]["client_certificate"] = "require"
    target = load(route).table.routes[0].target
    assert target.options.clientCertificate == "require"
    assert target.inner.description == "http://127.0.0.1:9000"


def test_exampleLoads(keys: dict[str, Identity], tmp_path: Path) -> None:
    """
    The shipped example loads once its certificate paths name real files.
    """
    text = (REPOSITORY / "examples" / "syncthing-terminated.toml").read_text()
    text = text.replace("/var/lib/stdiscosrv/cert.pem", str(keys["server"].certPath))
    text = text.replace("/var/lib/stdiscosrv/key.pem", str(keys["server"].keyPath))
    path = tmp_path / "demux.toml"
    path.write_text(text)
    from demux import loadConfig

    config = loadConfig(path, MemoryReactorClock())
    route = config.table.route("discovery")
    assert isinstance(route.target, TLSTarget)
    assert route.target.options.clientCertificate == "request"


# The TLS step in memory.


class Handshake:
    """
    A pyOpenSSL client and a L{TLSTarget} joined by hand: the client's
    bytes go to the protocol the target returned, the target's back from
    its L{StringTransport}.
    """

    def __init__(self, target: TLSTarget, identity: Identity | None, alpn: list[bytes]) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if identity is not None:
            context.use_certificate_chain_file(str(identity.certPath))
            context.use_privatekey_file(str(identity.keyPath))
        self.client = SSL.Connection(context, None)
        self.client.set_connect_state()
        self.client.set_tlsext_host_name(b"demux.example.com")
        if alpn:
            self.client.set_alpn_protos(alpn)
        self.clock = MemoryReactorClock()
        self.transport = StringTransport()
        self.clientError: Exception | None = None
        try:
            self.client.do_handshake()
        except SSL.WantReadError:
            pass
        hello = self.client.bio_read(65536)
        self.server = target.handOff(
            self.transport,
            hello,
            ConnectionInfo(self.clock, IPv4Address("TCP", "192.0.2.7", 5), None, "web"),
        )
        self.pump()

    def pump(self) -> None:
        for _ in range(20):
            self.clock.advance(0)
            out = self.transport.value()
            self.transport.clear()
            if out:
                self.client.bio_write(out)
            try:
                self.client.do_handshake()
                self.client.recv(65536)
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                self.clientError = e
            try:
                data = self.client.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                self.server.dataReceived(data)
            elif not out:
                return


def terminating(keys: dict[str, Identity], mode: str) -> tuple[TLSTarget, Any]:
    from demux import LocalTarget

    from ._fakes import RecordingFactory

    factory = RecordingFactory()
    route = routeData(keys["server"])
    route["tls"]["client_certificate"] = mode
    options = load(route).table.routes[0].target.options
    return TLSTarget(options, LocalTarget(factory)), factory


def test_handshakeInMemory(keys: dict[str, Identity]) -> None:
    """
    The target sees the decrypted stream only once the handshake is done,
    with ALPN http/1.1 chosen and the client's certificate known.
    """
    target, factory = terminating(keys, "request")
    handshake = Handshake(target, keys["client"], [b"h2", b"http/1.1"])
    assert handshake.clientError is None
    assert handshake.client.get_alpn_proto_negotiated() == b"http/1.1"
    [protocol] = factory.protocols
    assert protocol.made
    assert protocol.transport.getPeerCertificate() is not None
    handshake.client.send(b"hello")
    handshake.pump()
    assert b"".join(protocol.received) == b"hello"


def test_requireInMemory(keys: dict[str, Identity]) -> None:
    """
    C{require} fails a client without a certificate: the inner target never
    gets the connection, which closes.
    """
    target, factory = terminating(keys, "require")
    handshake = Handshake(target, None, [])
    assert factory.protocols == []
    assert handshake.transport.disconnecting


def test_noALPNInCommon(keys: dict[str, Identity]) -> None:
    """
    A client offering only h2 goes on without ALPN.
    """
    target, factory = terminating(keys, "none")
    handshake = Handshake(target, None, [b"h2"])
    assert handshake.clientError is None
    assert handshake.client.get_alpn_proto_negotiated() == b""
    assert len(factory.protocols) == 1


def test_handshakeTimeout(keys: dict[str, Identity]) -> None:
    """
    A client that stalls in the handshake is cut off once the handshake
    timeout is over; the inner target never sees it.
    """
    from demux import LocalTarget

    from ._fakes import RecordingFactory

    factory = RecordingFactory()
    route = routeData(keys["server"])
    route["tls"]["handshake_timeout"] = 3
    outer = load(route).table.routes[0].target
    assert outer.handshakeTimeout == 3
    target = TLSTarget(outer.options, LocalTarget(factory), handshakeTimeout=3)
    clock = MemoryReactorClock()
    transport = StringTransport()
    target.handOff(
        transport,
        clientHello("demux.example.com"),
        ConnectionInfo(clock, IPv4Address("TCP", "192.0.2.7", 5), None, "web"),
    )
    clock.advance(2.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert factory.protocols == []


def discoveryConfig(certificate: Path, key: Path) -> str:
    """
    One TLS-terminating route to an HTTP backend that is not dialled, for
    the tests that load a configuration without running it.
    """
    return f"""
listen = ["tcp:4443"]
[[routes]]
name = "discovery"
match.tls = {{}}
tls.certificate = "{certificate}"
tls.key = "{key}"
backend = "http://127.0.0.1:8443"
"""


def test_reloadKeepsRunningConfig(keys: dict[str, Identity], tmp_path: Path) -> None:
    """
    A reload to a configuration whose key file is gone keeps the running
    one.
    """
    from demux import DemuxFactory, loadConfig
    from demux.tap import DemuxService

    server = keys["server"]
    key = tmp_path / "key.pem"
    key.write_bytes(server.keyPath.read_bytes())
    path = tmp_path / "demux.toml"
    path.write_text(discoveryConfig(server.certPath, key))
    reactor = MemoryReactorClock()
    first = loadConfig(path, reactor)
    factory = DemuxFactory(first.table, reactor)
    service = DemuxService(factory, first, lambda: loadConfig(path, reactor), reactor)
    key.unlink()
    service.reload()
    assert factory.table is first.table


# Real sockets.


class Recording(http.server.BaseHTTPRequestHandler):
    """
    Answers every request with what it got: its method, path and headers
    as JSON; C{POST} bodies are read and counted, not kept; C{GET /big/N}
    streams N bytes.
    """

    protocol_version = "HTTP/1.1"
    # Each answer in one write, sent at once.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: RecordingServer

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.record(self, 0)
        if self.path.startswith("/big/"):
            size = int(self.path[5:])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = b"x" * 65536
            left = size
            while left:
                n = min(left, len(block))
                self.wfile.write(block[:n])
                left -= n
            return
        self._answer(json.dumps(self.server.requests[-1]).encode())

    def do_POST(self) -> None:
        left = int(self.headers.get("Content-Length", "0"))
        total = 0
        while left:
            data = self.rfile.read(min(left, 65536))
            if not data:
                break
            total += len(data)
            left -= len(data)
        self.server.record(self, total)
        self._answer(json.dumps(self.server.requests[-1]).encode())


class RecordingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tag: str = "backend") -> None:
        super().__init__(("127.0.0.1", 0), Recording)
        self.tag = tag
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def record(self, handler: Recording, bodyBytes: int) -> None:
        with self.lock:
            self.requests.append(
                {
                    "tag": self.tag,
                    "method": handler.command,
                    "path": handler.path,
                    "headers": [[k, v] for k, v in handler.headers.items()],
                    "body": bodyBytes,
                }
            )


def headerValues(request: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in request["headers"] if k.lower() == name.lower()]


def demuxConfig(keys: dict[str, Identity], backendPort: int, mode: str = "request") -> str:
    server = keys["server"]
    return f"""
listen = ["tcp:{{port}}:interface=127.0.0.1", "haproxy:tcp:{{proxyPort}}:interface=127.0.0.1"]
inspect_delay = 2

[[routes]]
name = "web"
match.tls.sni = ["demux.example.com"]
tls.certificate = "{server.certPath}"
tls.key = "{server.keyPath}"
tls.client_certificate = "{mode}"
backend = "http://127.0.0.1:{backendPort}"
http.timeout = 3

[[routes]]
name = "strict"
match.tls.sni = ["strict.example.com"]
tls.certificate = "{server.certPath}"
tls.key = "{server.keyPath}"
tls.client_certificate = "require"
backend = "http://127.0.0.1:{backendPort}"

[[routes]]
name = "dead"
match.tls.sni = ["dead.example.com"]
tls.certificate = "{server.certPath}"
tls.key = "{server.keyPath}"
backend = "http://127.0.0.1:{{deadPort}}"

[[routes]]
name = "silent"
match.tls.sni = ["silent.example.com"]
tls.certificate = "{server.certPath}"
tls.key = "{server.keyPath}"
backend = "http://127.0.0.1:{{silentPort}}"
http.timeout = 1
"""


class Silent(ThreadedServer):
    """
    Takes connections and requests, and never answers.
    """

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass


@contextmanager
def demuxFor(config: str) -> Iterator[tuple[DemuxProcess, int]]:
    proxyPort = freePort()
    silent = Silent()
    config = (
        config.replace("{proxyPort}", str(proxyPort))
        .replace("{deadPort}", str(freePort()))
        .replace("{silentPort}", str(silent.port))
    )
    try:
        with runDemux(config) as demux:
            yield demux, proxyPort
    finally:
        silent.close()


@pytest.fixture(scope="module")
def stack(keys: dict[str, Identity]) -> Iterator[dict[str, Any]]:
    require("curl")
    require("openssl")
    backend = RecordingServer()
    try:
        with demuxFor(demuxConfig(keys, backend.port)) as (demux, proxyPort):
            yield {"demux": demux, "backend": backend, "proxyPort": proxyPort, **keys}
            # Every connection the tests made has ended: demux stops at once.
            demux.process.send_signal(signal.SIGTERM)
            demux.process.wait(30)
            assert "waiting up to" not in demux.log(), demux.log()[-3000:]
    finally:
        backend.shutdown()
        backend.server_close()


def curl(port: int, *args: str, name: str = "demux.example.com") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "curl", "-sS", "--max-time", "60", "-k",
            "--resolve", f"{name}:{port}:127.0.0.1",
            *args,
        ],  # fmt: skip
        capture_output=True,
        timeout=90,
    )


def test_headersReplaced(stack: dict[str, Any]) -> None:
    """
    Without a client certificate: the client's own identity headers are
    replaced by the forwarder's, and there is no X-SSL-Cert.
    """
    port = stack["demux"].port
    result = curl(
        port,
        "-H", "X-Forwarded-For: 6.6.6.6",
        "-H", "X-Client-Port: 1",
        "-H", "X-SSL-Cert: forged",
        "-H", "Forwarded: for=6.6.6.6",
        "-H", "X-Tls-Client-Cert-Der-Base64: AAAA",
        f"https://demux.example.com:{port}/who",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    assert headerValues(request, "X-Forwarded-For") == ["127.0.0.1"]
    [clientPort] = headerValues(request, "X-Client-Port")
    assert 1024 <= int(clientPort) < 65536
    assert headerValues(request, "X-Forwarded-Proto") == ["https"]
    for name in ("X-SSL-Cert", "Forwarded", "X-Tls-Client-Cert-Der-Base64"):
        assert headerValues(request, name) == [], name


def test_clientCertificate(stack: dict[str, Any]) -> None:
    """
    With a client certificate (self-signed: requested, not verified), the
    backend gets it URL-escaped in X-SSL-Cert, and the client's forgery is
    gone.
    """
    port = stack["demux"].port
    client = stack["client"]
    result = curl(
        port,
        "--cert", str(client.certPath), "--key", str(client.keyPath),
        "-H", "X-SSL-Cert: forged",
        f"https://demux.example.com:{port}/who",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    [escaped] = headerValues(request, "X-SSL-Cert")
    assert "%" in escaped and "+" not in escaped
    assert unquote(escaped).strip() == client.certPath.read_text().strip()


def tlsSocket(
    port: int,
    name: str,
    identity: Identity | None = None,
    raw: socket.socket | None = None,
    suppressRaggedEOFs: bool = True,
) -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if identity is not None:
        context.load_cert_chain(identity.certPath, identity.keyPath)
    if raw is None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    return context.wrap_socket(
        raw, server_hostname=name, suppress_ragged_eofs=suppressRaggedEOFs
    )


def handshakeFailures(log: str, route: str) -> list[str]:
    """
    The lines of C{log} that say a connection on C{route} failed its TLS
    handshake: each with the route's decision before it, in one line.
    """
    return [
        line
        for line in log.splitlines()
        if f" route={route} (" in line and "; TLS handshake failed: " in line
    ]


def test_requireRefusesWithoutCertificate(stack: dict[str, Any]) -> None:
    """
    On a route that requires a client certificate, a client without one
    fails the handshake, is closed, and the log says so in one line; one
    with a certificate gets through.
    """
    require("openssl")
    port = stack["demux"].port
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
         "-servername", "strict.example.com", "-ign_eof"],
        input=b"GET / HTTP/1.1\r\nHost: strict\r\n\r\n",
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    assert b"HTTP/1.1 200" not in result.stdout
    # One line: the decision, then why the connection ended.
    demux = stack["demux"]
    deadline = time.monotonic() + 10
    while not handshakeFailures(demux.log(), "strict"):
        assert time.monotonic() < deadline, demux.log()[-2000:]
        time.sleep(0.05)
    assert len(handshakeFailures(demux.log(), "strict")) == 1
    client = stack["client"]
    result = curl(
        port, "--cert", str(client.certPath), "--key", str(client.keyPath),
        f"https://strict.example.com:{port}/", name="strict.example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_garbageHandshake(stack: dict[str, Any]) -> None:
    """
    A ClientHello followed by garbage (where a certificate would be) is
    closed cleanly and logged.
    """
    demux = stack["demux"]
    before = len(handshakeFailures(demux.log(), "web"))
    with socket.create_connection(("127.0.0.1", demux.port), timeout=10) as sock:
        sock.sendall(clientHello("demux.example.com"))
        sock.sendall(b"\x16\x03\x03\x00\x05garbage-certificate" * 4)
        sock.settimeout(10)
        while sock.recv(65536):
            pass
    deadline = time.monotonic() + 10
    while len(handshakeFailures(demux.log(), "web")) == before:
        assert time.monotonic() < deadline, demux.log()[-2000:]
        time.sleep(0.05)


SMUGGLING = [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 9000 + b"\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 101 + b"\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
]


def readAll(sock: socket.socket) -> bytes:
    chunks = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize("attempt", range(len(SMUGGLING)))
def test_smuggling(stack: dict[str, Any], attempt: int) -> None:
    """
    Each smuggling attempt gets 400 and a close; the backend sees no
    request at all from it.
    """
    backend: RecordingServer = stack["backend"]
    before = len(backend.requests)
    with tlsSocket(stack["demux"].port, "demux.example.com") as sock:
        sock.sendall(SMUGGLING[attempt])
        answer = readAll(sock)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]
    assert answer.count(b"HTTP/1.1") == 1
    time.sleep(0.2)
    assert len(backend.requests) == before


def test_keepAlive(stack: dict[str, Any]) -> None:
    """
    1,000 requests on one connection each carry the headers, naming the
    same client port.
    """
    port = stack["demux"].port
    client = stack["client"]
    with tlsSocket(port, "demux.example.com", client) as sock:
        localPort = sock.getsockname()[1]
        connection = http.client.HTTPConnection("demux.example.com", port, timeout=30)
        connection.sock = sock
        for i in range(1000):
            connection.request(
                "GET", f"/{i}", headers={"X-Forwarded-For": "6.6.6.6"}
            )
            response = connection.getresponse()
            assert response.status == 200
            request = json.loads(response.read())
            assert request["path"] == f"/{i}"
            assert headerValues(request, "X-Forwarded-For") == ["127.0.0.1"]
            assert headerValues(request, "X-Client-Port") == [str(localPort)]
            assert len(headerValues(request, "X-SSL-Cert")) == 1
    line = stack["demux"].waitForClosed(f"127.0.0.1:{localPort}", "web")
    assert "closed: 1000 requests" in line, line


def test_pipelined(stack: dict[str, Any]) -> None:
    """
    Pipelined requests are answered in order.
    """
    with tlsSocket(stack["demux"].port, "demux.example.com") as sock:
        sock.sendall(
            b"".join(
                f"GET /p{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode() for i in range(5)
            )
            + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        answer = readAll(sock)
    paths = [p for p in (b"/p0", b"/p1", b"/p2", b"/p3", b"/p4", b"/last")]
    positions = [answer.find(b'"path": "' + p + b'"') for p in paths]
    assert -1 not in positions and positions == sorted(positions)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


MiB = 1024 * 1024


def test_bigUploadAndDownload(stack: dict[str, Any], tmp_path: Path) -> None:
    """
    100 MiB up and 100 MiB down stream through with flat memory: demux's
    resident size grows by far less than either.
    """
    demux = stack["demux"]
    port = demux.port
    pid = demux.process.pid
    # Warm up: the first request's code paths and buffers.
    assert curl(port, "-o", "/dev/null", f"https://demux.example.com:{port}/big/1000000").returncode == 0
    before = rss(pid)
    upload = tmp_path / "upload"
    with upload.open("wb") as f:
        block = os.urandom(MiB)
        for _ in range(100):
            f.write(block)
    result = curl(
        port, "--data-binary", f"@{upload}", "-H", "Content-Type: application/octet-stream",
        f"https://demux.example.com:{port}/upload",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["body"] == 100 * MiB
    afterUpload = rss(pid)
    result = curl(
        port, "-o", "/dev/null", "-w", "%{size_download}",
        f"https://demux.example.com:{port}/big/{100 * MiB}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 100 * MiB
    afterDownload = rss(pid)
    assert afterUpload - before < 30 * MiB, (before, afterUpload)
    assert afterDownload - before < 30 * MiB, (before, afterDownload)


def test_deadBackend(stack: dict[str, Any]) -> None:
    """
    A backend nothing listens on gives 502, not a silent close.
    """
    port = stack["demux"].port
    result = curl(
        port, "-o", "/dev/null", "-w", "%{http_code}",
        f"https://dead.example.com:{port}/", name="dead.example.com",
    )  # fmt: skip
    assert result.stdout == b"502", result.stderr


def test_silentBackend(stack: dict[str, Any]) -> None:
    """
    A backend that takes the request and never answers gives 504 once
    http.timeout is over.
    """
    port = stack["demux"].port
    started = time.monotonic()
    result = curl(
        port, "-o", "/dev/null", "-w", "%{http_code}",
        f"https://silent.example.com:{port}/", name="silent.example.com",
    )  # fmt: skip
    assert result.stdout == b"504", result.stderr
    assert 0.9 < time.monotonic() - started < 20


def proxyV2(source: str, sourcePort: int, destination: str, destinationPort: int) -> bytes:
    addresses = (
        socket.inet_aton(source)
        + socket.inet_aton(destination)
        + sourcePort.to_bytes(2, "big")
        + destinationPort.to_bytes(2, "big")
    )
    return (
        b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11" + len(addresses).to_bytes(2, "big") + addresses
    )


def test_proxiedClient(stack: dict[str, Any]) -> None:
    """
    On a haproxy: listener, the client the headers name is the one the
    PROXY header named.
    """
    raw = socket.create_connection(("127.0.0.1", stack["proxyPort"]), timeout=30)
    raw.sendall(proxyV2("192.0.2.7", 40123, "127.0.0.1", 443))
    with tlsSocket(0, "demux.example.com", raw=raw) as sock:
        sock.sendall(b"GET /proxied HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        answer = readAll(sock)
    request = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert headerValues(request, "X-Forwarded-For") == ["192.0.2.7"]
    assert headerValues(request, "X-Client-Port") == ["40123"]


def frontConfig(server: Identity) -> str:
    """
    A listener and a route C{front} that ends TLS with C{server}'s
    certificate, for the inner routes a test adds after it.
    """
    return f"""
listen = ["tcp:{{port}}:interface=127.0.0.1"]

[[routes]]
name = "front"
match.tls = {{}}
tls.certificate = "{server.certPath}"
tls.key = "{server.keyPath}"
"""


def test_innerRoutesByHost(keys: dict[str, Identity]) -> None:
    """
    Inside TLS, inner routes choose by HTTP host: one to the forwarder, one
    relayed as plain TCP.
    """
    first = RecordingServer("first")
    second = RecordingServer("second")
    server = keys["server"]
    config = frontConfig(server) + f"""
[[routes.routes]]
name = "first"
match.http.host = ["first.example"]
backend = "http://127.0.0.1:{first.port}"

[[routes.routes]]
name = "second"
match.http.host = ["second.example"]
backend = "tcp:127.0.0.1:{second.port}"
"""
    try:
        with runDemux(config) as demux:
            for name in ("first", "second"):
                result = curl(
                    demux.port, f"https://{name}.example:{demux.port}/", name=f"{name}.example"
                )
                assert result.returncode == 0, result.stderr
                assert json.loads(result.stdout)["tag"] == name
            # Each inner route logs its own decision and end; the outer
            # route's line has its decision.
            for name in ("first", "second"):
                line = demux.waitForClosed(None, f"front/{name}")
                assert f" route=front/{name} (http " in line, line
            line = demux.waitForClosed(None, "front")
            assert " route=front (" in line, line
            assert "-> tls -> routes (front/first, front/second)" in line, line
            assert "closed: " in line and "(decrypted for the inner routes)" in line
        assert headerValues(first.requests[0], "X-Forwarded-For") == ["127.0.0.1"]
        # The TCP relay forwards the bytes as they are.
        assert headerValues(second.requests[0], "X-Forwarded-For") == []
    finally:
        for s in (first, second):
            s.shutdown()
            s.server_close()


class Greeter(ThreadedServer):
    """
    Says hello to each connection and closes it.
    """

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"hello from the backend\n")


def test_relayEndsTLSCleanly(keys: dict[str, Identity]) -> None:
    """
    An inner relay whose backend finishes sending ends the client's TLS
    with a close_notify, not a bare TCP close the client would read as a
    truncation.
    """
    greeter = Greeter()
    server = keys["server"]
    config = frontConfig(server) + f"""
[[routes.routes]]
name = "greeter"
match.any = {{}}
backend = "tcp:127.0.0.1:{greeter.port}"
"""
    try:
        with runDemux(config) as demux:
            with tlsSocket(
                demux.port, "demux.example.com", suppressRaggedEOFs=False
            ) as sock:
                received = b""
                while True:
                    data = sock.recv(65536)  # SSLEOFError if truncated
                    if not data:
                        break
                    received += data
            assert received == b"hello from the backend\n"
            demux.waitForClosed(None, "front/greeter")
    finally:
        greeter.close()


def test_checkAndReload(keys: dict[str, Identity], tmp_path: Path) -> None:
    """
    C{--check} finds a missing key file, naming the route and the file; a
    reload to such a configuration keeps the running one.
    """
    from demux.tap import Options

    server = keys["server"]
    path = tmp_path / "demux.toml"
    path.write_text(discoveryConfig(server.certPath, tmp_path / "missing.pem"))
    result = subprocess.run(
        [*twistdCommand(), "demux", "--check", "--config", str(path)],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode != 0
    assert f"route 'discovery': tls.key: cannot read '{tmp_path / 'missing.pem'}'" in output
    assert Options  # imported: the option parser exists


# The real discovery server behind the preset.


@contextmanager
def discoveryServer(directory: Path) -> Iterator[int]:
    binary = require("stdiscosrv")
    port = freePort()
    log = (directory / "stdiscosrv.log").open("wb")
    process = subprocess.Popen(
        [binary, "-http", "-listen", f"127.0.0.1:{port}",
         "-db-dir", str(directory / "db"), "-replication-listen=", "-debug"],
        cwd=directory, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        from ._process import waitForPort

        waitForPort(port)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_stdiscosrv(keys: dict[str, Identity], tmp_path: Path) -> None:
    """
    The preset in front of C{stdiscosrv -http}: an announcement of
    C{tcp://0.0.0.0:22000} from a client a PROXY header names as 192.0.2.7
    is published as C{tcp://192.0.2.7:22000}; one relayed from loopback
    would have lost it.
    """
    server = keys["server"]
    device = generateIdentity(tmp_path / "device")
    with ExitStack() as stack:
        discoPort = stack.enter_context(discoveryServer(tmp_path))
        proxyPort = freePort()
        config = f"""
listen = ["tcp:{{port}}:interface=127.0.0.1", "haproxy:tcp:{proxyPort}:interface=127.0.0.1"]

[[routes]]
name = "discovery"
match.tls.sni = ["discovery.example.com"]
preset = "syncthing-discovery"
tls.certificate = "{server.certPath}"
tls.key = "{server.keyPath}"
backend = "http://127.0.0.1:{discoPort}"
"""
        demux = stack.enter_context(runDemux(config))
        context = device.clientContext()
        raw = socket.create_connection(("127.0.0.1", proxyPort), timeout=30)
        raw.sendall(proxyV2("192.0.2.7", 51000, "127.0.0.1", 443))
        with context.wrap_socket(raw, server_hostname="discovery.example.com") as sock:
            connection = http.client.HTTPConnection("discovery.example.com", timeout=30)
            connection.sock = sock
            body = json.dumps({"addresses": ["tcp://0.0.0.0:22000"]}).encode()
            connection.request(
                "POST", "/v2/", body=body,
                headers={"Content-Type": "application/json",
                         "X-Forwarded-For": "203.0.113.9"},
            )  # fmt: skip
            response = connection.getresponse()
            response.read()
            assert response.status == 204, (response.status, demux.log()[-2000:])
        client = DiscoveryClient("127.0.0.1", demux.port, "discovery.example.com")
        answer = client.lookup(device.deviceID)
        assert answer.status == 200, answer.body
        assert answer.json()["addresses"] == ["tcp://192.0.2.7:22000"]
        # Without a certificate the discovery server refuses to announce.
        refused = client.announce(None, ["tcp://0.0.0.0:22000"])
        assert refused.status == 403
