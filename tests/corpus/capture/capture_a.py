"""
Capture the first flights of real OpenVPN, SOCKS (curl), PostgreSQL (psql),
MQTT (mosquitto_pub), Redis (redis-cli), syslog (logger) and PROXY protocol
(HAProxy) clients into C{tests/corpus/}.

Run it by hand (not in CI) from anywhere, after installing the clients
(Debian: C{apt-get install openvpn curl postgresql-client mosquitto-clients
redis-tools bsdutils haproxy openssl}):

    python tests/corpus/capture/capture_a.py [NAME ...]

Every capture listens on an ephemeral port of 127.0.0.1, starts the client
pointed at it, keeps what arrives on the first connection until the client
has been quiet for a second (answering nothing, so each file is exactly what
the client sends before it hears from a server), then stops the client.
Nothing leaves loopback.  With names, only those captures are made.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from demux.testing import reservePort

CORPUS = Path(__file__).resolve().parent.parent
QUIET = 1.0
"""
How long a client may be silent before its first flight counts as over.
"""


def listen() -> socket.socket:
    """
    A listening socket on an ephemeral loopback port.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(15)
    return server


def receive(server: socket.socket) -> bytes:
    """
    What the first client of C{server} sends before a second of silence.
    """
    conn, _ = server.accept()
    conn.settimeout(QUIET)
    data = b""
    with conn:
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    return data


def capture(
    name: str,
    command: list[str],
    cwd: str | None = None,
    stdin: bytes | None = None,
) -> None:
    """
    Run C{command}, with C{{port}} in its arguments replaced by the port of
    a fresh listener, and save what its first connection sends as
    C{NAME.bin}.
    """
    server = listen()
    port = server.getsockname()[1]
    argv = [arg.replace("{port}", str(port)) for arg in command]
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if stdin is not None:
        assert process.stdin is not None
        process.stdin.write(stdin)
        process.stdin.close()
    try:
        data = receive(server)
    finally:
        server.close()
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    (CORPUS / f"{name}.bin").write_bytes(data)
    print(f"{name}.bin: {len(data)} bytes: {' '.join(argv)}")


def openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def openvpnFiles(directory: str) -> None:
    """
    A throwaway CA, a client certificate and the three kinds of control
    channel keys, so that the client starts; no server ever sees them.
    """
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=capture CA", cwd=directory,
    )
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client",
        cwd=directory,
    )
    openssl(
        "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.crt", "-days", "1", cwd=directory,
    )
    for argv in [
        ["--genkey", "secret", "ta.key"],
        ["--genkey", "tls-crypt-v2-server", "v2server.key"],
        ["--tls-crypt-v2", "v2server.key", "--genkey", "tls-crypt-v2-client",
         "v2client.key"],
    ]:
        subprocess.run(["openvpn", *argv], cwd=directory, check=True,
                       capture_output=True)


def openvpnClient(extra: list[str]) -> list[str]:
    return [
        "openvpn", "--client", "--dev", "null", "--proto", "tcp-client",
        "--remote", "127.0.0.1", "{port}", "--nobind",
        "--ca", "ca.crt", "--cert", "client.crt", "--key", "client.key",
        "--connect-retry-max", "1", "--verb", "0", *extra,
    ]


def captureOpenVPN() -> None:
    with tempfile.TemporaryDirectory() as directory:
        openvpnFiles(directory)
        capture("openvpn-tcp", openvpnClient([]), cwd=directory)
        capture(
            "openvpn-tcp-tls-auth",
            openvpnClient(["--tls-auth", "ta.key", "1"]),
            cwd=directory,
        )
        capture(
            "openvpn-tcp-tls-crypt",
            openvpnClient(["--tls-crypt", "ta.key"]),
            cwd=directory,
        )
        capture(
            "openvpn-tcp-tls-crypt-v2",
            openvpnClient(["--tls-crypt-v2", "v2client.key"]),
            cwd=directory,
        )


def captureSOCKS() -> None:
    # 127.0.0.1 for the local-resolving forms, so no name lookup happens;
    # the remote-resolving forms send the name to the proxy unresolved.
    for name, flag, url in [
        ("socks4-curl", "--socks4", "http://127.0.0.1:8080/"),
        ("socks4a-curl", "--socks4a", "http://discovery.example.com/"),
        ("socks5-curl", "--socks5", "http://127.0.0.1:8080/"),
    ]:
        capture(
            name,
            ["curl", "-s", "--max-time", "3", flag, "127.0.0.1:{port}", url],
        )
    capture(
        "socks5-curl-auth",
        [
            "curl", "-s", "--max-time", "3", "--proxy",
            "socks5h://alice:secret@127.0.0.1:{port}",
            "http://discovery.example.com/",
        ],
    )


def fakeCredentialCache(path: Path) -> None:
    """
    A Kerberos credential cache (MIT's file format, version 4) holding a
    made-up ticket-granting ticket for alice@DEMUX.TEST, valid for a day.

    libpq asks for GSSAPI encryption only when the client has Kerberos
    credentials; nothing checks this ticket before the server would, and no
    server is ever reached, so a made-up one makes a real psql send its
    GSSENCRequest without a KDC.
    """

    def counted(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    def principal(*components: bytes) -> bytes:
        return (
            struct.pack(">II", 1, len(components))
            + counted(b"DEMUX.TEST")
            + b"".join(counted(c) for c in components)
        )

    now = int(time.time())
    client = principal(b"alice")
    credential = (
        client
        + principal(b"krbtgt", b"DEMUX.TEST")
        + struct.pack(">H", 18)
        + counted(bytes(32))
        + struct.pack(">IIII", now, now, now + 86400, now + 86400)
        + b"\x00"
        + struct.pack(">III", 0x40E00000, 0, 0)
        + counted(b"fake ticket")
        + counted(b"")
    )
    path.write_bytes(struct.pack(">HH", 0x0504, 0) + client + credential)


def capturePostgres() -> None:
    with tempfile.TemporaryDirectory() as directory:
        cache = Path(directory) / "ccache"
        fakeCredentialCache(cache)
        config = Path(directory) / "krb5.conf"
        config.write_text(
            "[libdefaults]\n default_realm = DEMUX.TEST\n"
            " dns_lookup_kdc = false\n dns_lookup_realm = false\n"
        )
        env = [
            "PGPASSWORD=x", "PGCONNECT_TIMEOUT=3", f"KRB5_CONFIG={config}",
            f"KRB5CCNAME=FILE:{cache}",
        ]
        for name, options in [
            ("postgres-sslrequest-psql", "sslmode=require gssencmode=disable"),
            ("postgres-startup-psql", "sslmode=disable gssencmode=disable"),
            ("postgres-gssencrequest-psql", "sslmode=disable gssencmode=prefer"),
        ]:
            capture(
                name,
                [
                    "env", *env, "psql", "-w",
                    "host=127.0.0.1 port={port} user=alice dbname=inventory "
                    f"application_name=capture {options}",
                    "-c", "select 1",
                ],
            )


def captureMQTT() -> None:
    for name, version in [
        ("mqtt311-mosquitto", "mqttv311"),
        ("mqtt5-mosquitto", "mqttv5"),
        ("mqtt31-mosquitto", "mqttv31"),
    ]:
        capture(
            name,
            [
                "mosquitto_pub", "-h", "127.0.0.1", "-p", "{port}",
                "-V", version, "-i", "capture-client", "-t", "demux/test",
                "-m", "hello",
            ],
        )


def captureRedis() -> None:
    for name, extra in [
        ("redis-ping-cli", ["PING"]),
        ("redis-hello3-cli", ["-3", "PING"]),
        ("redis-auth-cli", ["-a", "secret", "--no-auth-warning", "PING"]),
    ]:
        capture(
            name,
            ["redis-cli", "-h", "127.0.0.1", "-p", "{port}", *extra],
        )


def captureSyslog() -> None:
    for name, extra in [
        ("syslog-rfc5424-logger", ["--rfc5424"]),
        ("syslog-rfc3164-logger", ["--rfc3164"]),
        ("syslog-octet-count-logger", ["--rfc5424", "--octet-count"]),
    ]:
        capture(
            name,
            [
                "logger", "--tcp", "-n", "127.0.0.1", "-P", "{port}",
                "-t", "demux", "-p", "user.notice", *extra, "hello from demux",
            ],
        )


HAPROXY = """\
global
    log stderr local0 emerg
defaults
    mode tcp
    timeout connect 3s
    timeout client 3s
    timeout server 3s
frontend front
    bind 127.0.0.1:{front}
    default_backend back
backend back
    server capture 127.0.0.1:{port} {send}
"""


def captureProxyProtocol() -> None:
    for name, send in [
        ("proxy-v1-haproxy", "send-proxy"),
        ("proxy-v2-haproxy", "send-proxy-v2"),
    ]:
        with tempfile.TemporaryDirectory() as directory:
            server = listen()
            port = server.getsockname()[1]
            front = reservePort()
            config = Path(directory) / "haproxy.cfg"
            config.write_text(HAPROXY.format(front=front, port=port, send=send))
            haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                client = connectWithRetry(front)
                with client:
                    client.sendall(b"hello\n")
                    data = receive(server)
            finally:
                server.close()
                haproxy.terminate()
                haproxy.wait(5)
            (CORPUS / f"{name}.bin").write_bytes(data)
            print(f"{name}.bin: {len(data)} bytes: haproxy {send}")


def connectWithRetry(port: int) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


CAPTURES = {
    "openvpn": captureOpenVPN,
    "socks": captureSOCKS,
    "postgres": capturePostgres,
    "mqtt": captureMQTT,
    "redis": captureRedis,
    "syslog": captureSyslog,
    "proxy_protocol": captureProxyProtocol,
}


def main(names: list[str]) -> None:
    for name in names or list(CAPTURES):
        program = {"proxy_protocol": "haproxy", "socks": "curl",
                   "postgres": "psql", "mqtt": "mosquitto_pub",
                   "redis": "redis-cli", "syslog": "logger"}.get(name, name)
        if shutil.which(program) is None and not os.path.exists(program):
            sys.exit(f"{program} is not installed")
        CAPTURES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
