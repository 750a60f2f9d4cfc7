"""
Starting the proxies under test with equivalent configurations, and the
HTTP keep-alive backend.

Every proxy gets the same three routes to the same backends:

  - C{magic}: the first four bytes are C{9e79bc40} (Syncthing's relay session
    magic);
  - C{sni}: a TLS ClientHello naming C{bench.example.com};
  - C{http}: an HTTP/1.x request;
  - C{https}: any other TLS ClientHello, whose TLS the proxy ends itself
    (with L{CERTIFICATE}) before forwarding the requests inside as HTTP to
    the C{http} backend with the client's address in C{X-Forwarded-For}: the
    discovery route of the Syncthing set-up, measured against the plain
    relay of the C{http} route. sslh cannot end TLS and has no such route.

HAProxy's configuration follows the pattern of the Syncthing write-up that
seeded demux (C{req_ssl_hello_type}, C{req.payload(0,4) -m bin},
C{req_ssl_sni}), plus C{req.proto_http} for HTTP. HAProxy runs one thread,
like demux and sslh, so each proxy gets one core's worth of event loop.
Every proxy logs its connections to a file, as each does by default in
service (the write-up kept Debian's C{log global}): demux its two lines,
HAProxy one C{option tcplog} line written to its standard output.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._clients import SNI
from tests._process import twistdCommand, waitForPort

ROOT = Path(__file__).resolve().parent.parent
SBIN = "/usr/sbin:/sbin"
CERTIFICATE = "term.bench.test"
"""The name in the certificate of the C{https} route."""


def makeCertificate(directory: Path) -> tuple[Path, Path, Path]:
    """
    A self-signed certificate and key for the C{https} route, and both in
    one file for HAProxy: the certificate, its key, and the two together.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "term.crt", directory / "term.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", f"/CN={CERTIFICATE}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    both = directory / "term.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert, key, both


def environment() -> dict[str, str]:
    """
    The environment for children: with the system binary directories on
    C{PATH}, where Debian puts haproxy and sslh.
    """
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":" + SBIN
    return env


def which(name: str) -> str | None:
    """
    Where C{name} is installed, looking in the system binary directories too.
    """
    return shutil.which(name, path=environment()["PATH"])


@dataclass(frozen=True)
class Backends:
    """
    The loopback ports of the backends for each route.
    """

    magic: int
    sni: int
    http: int


@dataclass
class Running:
    """
    A started proxy (or the direct baseline, which has no process).
    """

    name: str
    process: subprocess.Popen[bytes] | None
    ports: Backends
    directory: Path
    logs: list[Path] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self) -> None:
        """
        Stop the proxy we started, by its PID, and wait for it.
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None


def _demuxConfig(
    port: int, backends: Backends, inspectDelay: float, certificate: Path | None
) -> str:
    """
    demux's configuration; without C{certificate}, no C{https} route (for
    a baseline revision older than ending TLS).
    """
    https = "" if certificate is None else f"""
[[routes]]
name = "https"
match.tls = {{}}
tls.certificate = "{certificate.with_suffix(".crt")}"
tls.key = "{certificate.with_suffix(".key")}"
backend = "http://127.0.0.1:{backends.http}"
"""
    return f"""\
listen = ["tcp:{port}:interface=127.0.0.1:backlog=1024"]
inspect_delay = {inspectDelay}

[[routes]]
name = "magic"
match.prefix = "9e79bc40"
backend = "tcp:127.0.0.1:{backends.magic}"

[[routes]]
name = "sni"
match.tls.sni = ["{SNI}"]
backend = "tcp:127.0.0.1:{backends.sni}"

[[routes]]
name = "http"
match.http = {{}}
backend = "tcp:127.0.0.1:{backends.http}"
{https}"""


def _haproxyConfig(
    port: int, backends: Backends, inspectDelay: float, splice: bool, certificate: Path
) -> str:
    # Splicing needs pipes, two descriptors each, within the same 20,000.
    spliceLine = "    option splice-auto\n" if splice else ""
    pipes = "    maxpipes 200\n" if splice else ""
    return f"""\
global
    nbthread 1
    maxconn 9400
    log stdout format raw local0 info
{pipes}
defaults
    mode tcp
    log global
    option tcplog
    maxconn 9400
    timeout connect 5s
    timeout client 300s
    timeout server 300s
{spliceLine}
frontend mux
    bind 127.0.0.1:{port}
    acl client_hello req_ssl_hello_type 1
    acl magic req.payload(0,4) -m bin 9e79bc40
    acl sni req_ssl_sni -i {SNI}
    acl http req.proto_http
    tcp-request inspect-delay {int(inspectDelay * 1000)}ms
    tcp-request content accept if client_hello || magic || http
    use_backend magic if magic
    use_backend sni if sni
    use_backend http if http
    use_backend https if client_hello

# HAProxy's way to end TLS for one route of a TCP-mode port: loop the
# connection back into an HTTP-mode frontend that holds the certificate.
backend https
    server loop abns@demux-bench-https-{port} send-proxy-v2

frontend https
    mode http
    option httplog
    bind abns@demux-bench-https-{port} accept-proxy ssl crt {certificate.with_suffix(".pem")} alpn http/1.1
    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Client-Port %[src_port]
    http-request set-header X-Forwarded-Proto https
    timeout http-keep-alive 300s
    default_backend http-plain

backend http-plain
    mode http
    server s 127.0.0.1:{backends.http}

backend magic
    server s 127.0.0.1:{backends.magic}

backend sni
    server s 127.0.0.1:{backends.sni}

backend http
    server s 127.0.0.1:{backends.http}
"""


def _sslhConfig(port: int, backends: Backends, inspectDelay: float) -> str:
    return f"""\
foreground: true;
inetd: false;
numeric: true;
transparent: false;
timeout: {max(1, int(inspectDelay))};
listen: ( {{ host: "127.0.0.1"; port: "{port}"; }} );
protocols: (
  {{ name: "regex"; host: "127.0.0.1"; port: "{backends.magic}";
     regex_patterns: [ "^\\x9e\\x79\\xbc\\x40" ]; }},
  {{ name: "tls"; host: "127.0.0.1"; port: "{backends.sni}";
     sni_hostnames: [ "{SNI}" ]; }},
  {{ name: "http"; host: "127.0.0.1"; port: "{backends.http}"; }}
);
"""


HTTP_BACKEND = """\
global
    maxconn 5000

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend http
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "ok"
"""

PROXIES = (
    "direct",
    "demux",
    "demux-w2",
    "haproxy",
    "haproxy-splice",
    "sslh-fork",
    "sslh-select",
)


def available(name: str) -> bool:
    """
    Whether proxy C{name} can run on this machine.
    """
    if name in ("direct", "demux", "demux-w2") or name.startswith("demux@"):
        return True
    if name.startswith("haproxy"):
        return which("haproxy") is not None
    binary = {"sslh-fork": "sslh", "sslh-select": "sslh-select"}[name]
    return which(binary) is not None


def startHttpBackend(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """
    HAProxy as a keep-alive HTTP server answering every request itself.
    """
    config = directory / "http-backend.cfg"
    config.write_text(HTTP_BACKEND.format(port=port))
    haproxy = which("haproxy")
    assert haproxy is not None
    process = subprocess.Popen(
        [haproxy, "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(directory / "http-backend.log").open("wb"),
    )
    waitForPort(port)
    return process


def snapshot(directory: Path, revision: str = "HEAD") -> Path:
    """
    Export the committed tree at C{revision} into C{directory}, so that the
    demux being measured is one known commit and does not change under a run
    when someone edits the working tree.
    """
    directory.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    # Its own package metadata beside it, found before an installed demux's
    # (twistd runs from the tree), so that its matchers are the entry points
    # of its own setup.cfg, not of whatever demux is installed.
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info"],
        cwd=directory, check=True, capture_output=True,
    )
    return directory


def startProxy(
    name: str,
    port: int,
    backends: Backends,
    inspectDelay: float,
    directory: Path,
    demuxRoot: Path = ROOT,
    certificate: Path | None = None,
) -> Running:
    """
    Start proxy C{name} on C{port} relaying to C{backends}, and wait until it
    listens. C{"direct"} starts nothing: its "ports" are the backends'.
    demux runs from C{demuxRoot}, a project tree.  C{certificate} is the
    C{https} route's (L{makeCertificate}'s C{.crt}; its C{.key} and C{.pem}
    beside it).
    """
    if certificate is None:
        certificate = makeCertificate(directory / "tls")[0]
    if name == "direct":
        return Running(name, None, backends, directory)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"{name}.log"
    if name.startswith("demux"):
        config = directory / "demux.toml"
        # A baseline revision (demux@REV) may predate ending TLS: its
        # column has no https route, and the https workload skips it.
        baseline = name.startswith("demux@")
        config.write_text(
            _demuxConfig(port, backends, inspectDelay, None if baseline else certificate)
        )
        # demux-w2: the same, in two processes sharing the port (--workers).
        workers = ["--workers", "2"] if name == "demux-w2" else []
        cmd = twistdCommand(
            "-n",
            "--logfile", str(directory / "twistd.log"),
            "--pidfile", "",
            "demux", "--config", str(config), *workers,
        )
        cwd = demuxRoot
    elif name.startswith("haproxy"):
        config = directory / f"{name}.cfg"
        config.write_text(
            _haproxyConfig(
                port, backends, inspectDelay, name == "haproxy-splice", certificate
            )
        )
        cmd = [str(which("haproxy")), "-db", "-f", str(config)]
        cwd = directory
    else:
        config = directory / f"{name}.cfg"
        config.write_text(_sslhConfig(port, backends, inspectDelay))
        binary = "sslh" if name == "sslh-fork" else "sslh-select"
        cmd = [str(which(binary)), "-f", f"-F{config}"]
        cwd = directory
    process = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=environment(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    running = Running(name, process, Backends(port, port, port), directory, [log])
    try:
        waitForPort(port, timeout=20)
    except TimeoutError:
        running.stop()
        raise RuntimeError(
            f"{name} did not start; its output:\n{log.read_text(errors='replace')}"
        ) from None
    # Let the process settle (twistd finishes start-up after it listens).
    time.sleep(0.3)
    if not running.alive():
        raise RuntimeError(f"{name} exited:\n{log.read_text(errors='replace')}")
    return running


__all__ = [
    "Backends",
    "PROXIES",
    "Running",
    "available",
    "makeCertificate",
    "startHttpBackend",
    "startProxy",
]
