"""
Small real servers on loopback for integration tests: each says who it is,
so a test can tell which backend a connection reached.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from twisted.internet.protocol import Factory, Protocol

from ._process import waitForPort


class ThreadedServer:
    """
    A TCP server on loopback that handles each connection in a thread of
    its own with C{handle}.
    """

    def __init__(self, backlog: int = 128) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError()

    def close(self) -> None:
        self.sock.close()


class TagServer(ThreadedServer):
    """
    A TCP server that greets each connection with C{TAG:name\\n}, then
    echoes everything it reads until the client stops sending, then closes.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                conn.sendall(b"TAG:" + self.name.encode() + b"\n")
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass


class ChecksumServer(ThreadedServer):
    """
    A TCP server that reads until the client stops sending, then answers
    with the SHA-256 of what it read followed by C{replySize} bytes of a
    known pattern: a half-closed request with a large answer.
    """

    def __init__(self, replySize: int) -> None:
        self.replySize = replySize
        super().__init__(backlog=16)

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60)
            digest = hashlib.sha256()
            try:
                while data := conn.recv(1 << 18):
                    digest.update(data)
                conn.sendall(digest.digest())
                for chunk in pattern(self.replySize):
                    conn.sendall(chunk)
            except OSError:
                pass



def pattern(size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """
    C{size} bytes of a pattern that a lost, duplicated or reordered chunk
    changes the checksum of.
    """
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    counter = 0
    while sent < size:
        n = min(chunk, size - sent)
        piece = counter.to_bytes(8, "big") + block[8:n] if n > 8 else block[:n]
        yield piece[:n]
        sent += n
        counter += 1


def patternDigest(size: int) -> bytes:
    digest = hashlib.sha256()
    for chunk in pattern(size):
        digest.update(chunk)
    return digest.digest()


def recvAll(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """
    Everything C{sock} reads until the other side closes.
    """
    sock.settimeout(timeout)
    chunks = []
    while data := sock.recv(1 << 18):
        chunks.append(data)
    return b"".join(chunks)


def makeCertificate(
    directory: Path, name: str, stem: str | None = None, altName: bool = False
) -> tuple[Path, Path]:
    """
    A self-signed certificate and key for C{name}, made with openssl, in
    C{directory/stem.crt} and C{.key} (C{stem} is C{name} unless given);
    with C{altName}, C{name} is in its subject alternative names too.
    """
    stem = name if stem is None else stem
    cert = directory / f"{stem}.crt"
    key = directory / f"{stem}.key"
    extra = ["-addext", f"subjectAltName=DNS:{name}"] if altName else []
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", *extra, "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextmanager
def opensslServer(
    directory: Path, name: str, alpn: str | None = None
) -> Iterator[int]:
    """
    A real C{openssl s_server} on loopback whose certificate names C{name};
    yields its port.
    """
    cert, key = makeCertificate(directory, name)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cmd = [
        "openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{port}",
        "-cert", str(cert), "-key", str(key), "-rev",
    ]
    if alpn:
        cmd += ["-alpn", alpn]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        waitForPort(port, timeout=10)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class _WhoAmI(Protocol):
    """
    Answers its first read with the addresses its transport reports, then
    closes: what an in-process protocol believes about its client.
    """

    def dataReceived(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        peer, host = transport.getPeer(), transport.getHost()
        transport.write(
            f"peer={peer.host}:{peer.port} host={host.host}:{host.port}\n".encode()  # type: ignore[attr-defined]
        )
        transport.loseConnection()


def whoAmI() -> Factory[_WhoAmI]:
    """
    An in-process target (C{local = "tests._servers.whoAmI"}) that tells the
    client which addresses C{getPeer()} and C{getHost()} gave it.
    """
    factory: Factory[_WhoAmI] = Factory.forProtocol(_WhoAmI)
    factory.noisy = False
    return factory
