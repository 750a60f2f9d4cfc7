"""
Who the client is, end to end: a real C{twistd demux} between a real
HAProxy in front (C{send-proxy-v2} with a unique-id TLV) and real HAProxy
frontends behind it (C{accept-proxy}, printing C{fc_pp_authority} and
C{fc_pp_unique_id}), with tagged servers that parse what they were sent
with demux's own codec, and an in-process target that says what its
C{getPeer()} is.

HAProxy 2.6, Debian's, has no C{fc_pp_tlv()} (it came in 2.9): the ALPN and
route-name TLVs are checked with demux's codec only; the authority and the
unique-id with both.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from demux._proxyheader import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_DEMUX_ROUTE,
    headerLength,
    makeHeader,
    parseHeader,
)
from demux.testing import clientHello

from ._process import freePort, require, runDemux, waitForPort
from ._servers import TagServer
from .test_deploy import curl as getURL
from .test_deploy import demuxOf, exchange, portsOf, running

ROOT = Path(__file__).resolve().parents[1]

HAPROXY = """
global
    log stdout format raw local0

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

# In front of demux: the client's address, and a unique id as a TLV.
frontend front
    bind 127.0.0.1:{front}
    unique-id-format "uid-%[src_port]"
    default_backend to-demux

backend to-demux
    server demux 127.0.0.1:{proxied} send-proxy-v2 proxy-v2-options unique-id

# Behind demux: what a PROXY v2 reader nobody here wrote makes of it.
frontend echo-tlv
    mode http
    timeout http-request 5s
    bind 127.0.0.1:{echo} accept-proxy
    http-request return status 200 content-type text/plain lf-string "authority=%[fc_pp_authority] unique-id=%[fc_pp_unique_id] client=%[src]:%[src_port]"

frontend tls-tlv
    bind 127.0.0.1:{tlsEcho} accept-proxy
    log global
    log-format "tls-tlv authority=%[fc_pp_authority] client=%ci:%cp"
    default_backend tag

backend tag
    server tag 127.0.0.1:{tag}
"""

DEMUX = """
listen = ["tcp:{{port}}:interface=127.0.0.1",
          "haproxy:tcp:{proxied}:interface=127.0.0.1"]
metrics = "tcp:{metrics}:interface=127.0.0.1"
inspect_delay = 2
connect_timeout = 3

[[routes]]
name = "tls-haproxy"
match.tls.sni = "haproxy.test"
backend = "tcp:127.0.0.1:{tlsEcho}"
send_proxy = "v2"

[[routes]]
name = "tls-parsed"
match.tls = {{}}
backend = "tcp:127.0.0.1:{parsed}"
send_proxy = "v2"

[[routes]]
name = "http-v2"
match.http.host = "v2.test"
backend = "tcp:127.0.0.1:{echo}"
send_proxy = "v2"

[[routes]]
name = "http-pass"
match.http.host = "pass.test"
backend = "tcp:127.0.0.1:{echo}"
send_proxy = "pass"

[[routes]]
name = "raw-pass"
match.prefix = {{text = "RAW"}}
backend = "tcp:127.0.0.1:{raw}"
send_proxy = "pass"

[[routes]]
name = "whoami-doc"
match.prefix = {{text = "WHO"}}
local = "tests._servers.whoAmI"
allow = ["192.0.2.0/24"]

[[routes]]
name = "whoami"
match.prefix = {{text = "WHO"}}
local = "tests._servers.whoAmI"
"""


@pytest.fixture(scope="module")
def chain() -> Iterator[dict[str, object]]:
    """
    HAProxy in front of demux's C{haproxy:} listener and behind its routes,
    three tagged servers, and one demux with metrics among them.
    """
    haproxy = require("haproxy")
    require("curl")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        ports = {
            name: freePort() for name in ("front", "proxied", "echo", "tlsEcho", "metrics")
        }
        servers = {name: TagServer(name) for name in ("tag", "parsed", "raw")}
        for server in servers.values():
            stack.callback(server.close)
        config = directory / "haproxy.cfg"
        config.write_text(HAPROXY.format(**ports, tag=servers["tag"].port))
        haproxyLog = directory / "haproxy.log"
        stack.enter_context(
            running([haproxy, "-db", "-f", str(config)], ports["echo"], haproxyLog)
        )
        pythonPath = os.pathsep.join(
            p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p
        )
        demux = stack.enter_context(
            runDemux(
                DEMUX.format(**ports, **{n: s.port for n, s in servers.items()}),
                # So that twistd imports tests._servers for the local target.
                prefix=["env", f"PYTHONPATH={pythonPath}"],
            )
        )
        waitForPort(ports["proxied"])
        waitForPort(ports["metrics"])
        yield {"demux": demux, "ports": ports, "haproxyLog": haproxyLog}


def curl(port: int, host: str) -> tuple[str, str]:
    """
    GET / from C{port} with C{Host: host}; returns the body and curl's own
    address.
    """
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-H", f"Host: {host}",
         "-w", "\n%{local_ip}:%{local_port}", f"http://127.0.0.1:{port}/"],
        capture_output=True, check=True, timeout=20,
    )
    body, client = result.stdout.decode().rsplit("\n", 1)
    return body, client


def afterTag(answer: bytes, tag: str) -> bytes:
    prefix = f"TAG:{tag}\n".encode()
    assert answer.startswith(prefix), answer[:80]
    return answer[len(prefix) :]


# PROXY v2 with TLVs, read by demux's codec and by HAProxy.


def test_tlvsParsedWithDemuxCodec(chain: dict[str, object]) -> None:
    """
    A backend that reads the header with demux's codec sees the client's
    address, the first ALPN offered, the SNI as authority and the route.
    """
    hello = clientHello("parsed.test", ["h2", "http/1.1"])
    answer, clientPort = exchange(demuxOf(chain).port, hello)
    sent = afterTag(answer, "parsed")
    length = headerLength(sent)
    assert length is not None
    header = parseHeader(sent[:length])
    assert (header.source.host, header.source.port) == ("127.0.0.1", clientPort)  # type: ignore[union-attr]
    assert header.tlv(PP2_TYPE_ALPN) == b"h2"
    assert header.tlv(PP2_TYPE_AUTHORITY) == b"parsed.test"
    assert header.tlv(PP2_TYPE_DEMUX_ROUTE) == b"tls-parsed"
    assert sent[length:] == hello


def test_authorityFromSNIReadByHAProxy(chain: dict[str, object]) -> None:
    """
    HAProxy's C{fc_pp_authority} is the SNI, and its client is the real
    one, through demux.
    """
    hello = clientHello("haproxy.test", ["http/1.1"])
    answer, clientPort = exchange(demuxOf(chain).port, hello)
    assert afterTag(answer, "tag") == hello
    logPath: Path = chain["haproxyLog"]  # type: ignore[assignment]
    expected = f"tls-tlv authority=haproxy.test client=127.0.0.1:{clientPort}"
    # HAProxy logs a TCP connection once it is over: soon, not at once.
    for _ in range(100):
        if expected in logPath.read_text(errors="replace"):
            break
        time.sleep(0.05)
    assert expected in logPath.read_text(errors="replace")


def test_authorityFromHostReadByHAProxy(chain: dict[str, object]) -> None:
    """
    On a plain listener the HTTP host is the authority; there is no
    unique id, since nobody sent one.
    """
    body, client = curl(demuxOf(chain).port, "v2.test:8080")
    assert body == f"authority=v2.test unique-id= client={client}"


def test_receivedTLVsKept(chain: dict[str, object]) -> None:
    """
    Behind HAProxy's C{send-proxy-v2}, demux's own v2 header names the
    client HAProxy named and carries HAProxy's unique-id TLV on, beside
    demux's authority.
    """
    body, client = curl(portsOf(chain)["front"], "v2.test")
    port = client.rsplit(":", 1)[1]
    assert body == f"authority=v2.test unique-id=uid-{port} client={client}"


# send_proxy = "pass".


def test_passThroughHAProxy(chain: dict[str, object]) -> None:
    """
    The header HAProxy sent reaches the HAProxy behind demux as it was,
    unique-id TLV and all, and no authority is added to it.
    """
    body, client = curl(portsOf(chain)["front"], "pass.test")
    port = client.rsplit(":", 1)[1]
    assert body == f"authority= unique-id=uid-{port} client={client}"


def test_passExactBytes(chain: dict[str, object]) -> None:
    """
    The backend gets the header byte for byte as the front sent it, with
    its TLVs, and on a plain listener no header at all.
    """
    from twisted.internet.address import IPv4Address

    header = makeHeader(
        2, IPv4Address("TCP", "192.0.2.7", 40003), IPv4Address("TCP", "198.51.100.1", 443),
        [(0x05, b"id-xyz"), (0xEA, bytes(range(10))), (PP2_TYPE_AUTHORITY, b"front.test")],
    )
    answer, _ = exchange(portsOf(chain)["proxied"], header + b"RAW one\n")
    assert afterTag(answer, "raw") == header + b"RAW one\n"
    v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40004 443\r\n"
    answer, _ = exchange(portsOf(chain)["proxied"], v1 + b"RAW two\n")
    assert afterTag(answer, "raw") == v1 + b"RAW two\n"
    answer, clientPort = exchange(demuxOf(chain).port, b"RAW three\n")
    assert afterTag(answer, "raw") == b"RAW three\n"
    demuxOf(chain).waitForLog(f"127.0.0.1:{clientPort} route=raw-pass")


# In-process targets: getPeer(), sources and log lines.


def test_inProcessGetPeer(chain: dict[str, object]) -> None:
    """
    Behind HAProxy, the in-process protocol's C{getPeer()} is the client
    and its C{getHost()} the address the client reached (HAProxy's
    front); the log says so too.
    """
    demux = demuxOf(chain)
    front = portsOf(chain)["front"]
    answer, clientPort = exchange(front, b"WHO are you\n")
    assert answer == f"peer=127.0.0.1:{clientPort} host=127.0.0.1:{front}\n".encode()
    # One line, with the decision and the end, names the client.
    line = demux.waitForClosed(f"127.0.0.1:{clientPort}", "whoami")
    assert f"127.0.0.1:{clientPort} route=whoami (" in line, line


def test_inProcessSourcesAndLog(chain: dict[str, object]) -> None:
    """
    The C{allow} list and the log lines use the header's source: a
    192.0.2.7 client takes the route only it may take.
    """
    demux = demuxOf(chain)
    header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40005 443\r\n"
    answer, _ = exchange(portsOf(chain)["proxied"], header + b"WHO\n")
    assert answer == b"peer=192.0.2.7:40005 host=198.51.100.1:443\n"
    line = demux.waitForClosed("192.0.2.7:40005", "whoami-doc")
    assert re.search(r"192\.0\.2\.7:40005 route=whoami-doc \(prefix", line), line
    answer, clientPort = exchange(demux.port, b"WHO\n")
    assert answer == f"peer=127.0.0.1:{clientPort} host=127.0.0.1:{demux.port}\n".encode()
    demux.waitForLog(f"127.0.0.1:{clientPort} route=whoami (")


def test_noHeaderStillRefused(chain: dict[str, object]) -> None:
    """
    An in-process route does not make the C{haproxy:} listener take a
    connection without a header.
    """
    with socket.create_connection(("127.0.0.1", portsOf(chain)["proxied"]), 10) as s:
        s.sendall(b"WHO\n")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        assert s.recv(100) == b""


def test_statusViewShowsTheClient(chain: dict[str, object]) -> None:
    """
    The status view lists an open connection behind a C{haproxy:} listener
    under the client the header named.
    """
    header = b"PROXY TCP4 192.0.2.8 198.51.100.1 40006 443\r\n"
    with socket.create_connection(("127.0.0.1", portsOf(chain)["proxied"]), 10) as s:
        s.sendall(header + b"RAW hold\n")
        s.settimeout(10)
        assert s.recv(100).startswith(b"TAG:raw\n")
        status = json.loads(
            getURL(f"http://127.0.0.1:{portsOf(chain)['metrics']}/status.json")
        )
    peers = {c["peer"]: c["route"] for c in status["activeConnections"]}
    assert peers.get("192.0.2.8:40006") == "raw-pass", peers
