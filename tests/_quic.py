"""
Real QUIC for the UDP tests: aioquic HTTP/3 servers (each in a thread with
its own event loop, bound to port 0) and an HTTP/3 client that can move to
a new local port mid-connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.asyncio.client import connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import _servers


def makeCertificate(directory: Path, name: str) -> tuple[Path, Path]:
    """
    A self-signed certificate for C{name} with C{name} in its subject
    alternative names (Chromium's QUIC wants it there), and its key.
    """
    return _servers.makeCertificate(directory, name, f"{name}.quic", altName=True)


def spkiHash(cert: Path) -> str:
    """
    The base64 SHA-256 of a certificate's public key, as Chromium's
    C{--ignore-certificate-errors-spki-list} takes it.
    """
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class _H3Server(QuicConnectionProtocol):
    """
    Answers every HTTP/3 request with the server's page.
    """

    page: bytes = b""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self._http = H3Connection(self._quic)
        if self._http is None:
            return
        for h3 in self._http.handle_event(event):
            if isinstance(h3, HeadersReceived) and h3.stream_ended:
                path = dict(h3.headers).get(b":path", b"/")
                body = self.page + b"<p>" + path + b"</p></body></html>\n"
                self._http.send_headers(
                    h3.stream_id,
                    [
                        (b":status", b"200"),
                        (b"content-type", b"text/html"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
                self._http.send_data(h3.stream_id, body, end_stream=True)
        self.transmit()


class H3Server:
    """
    An aioquic HTTP/3 server on 127.0.0.1, port 0, with a certificate for
    C{name}, serving a page that names it.
    """

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.page = f"<html><body><h1>served by {name}</h1>".encode()
        cert, key = makeCertificate(directory, name)
        self.spki = spkiHash(cert)
        configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        configuration.load_cert_chain(str(cert), str(key))
        protocol = type("H3", (_H3Server,), {"page": self.page})
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def start() -> None:
            server = await serve(
                "127.0.0.1", 0, configuration=configuration, create_protocol=protocol
            )
            self.server = server
            self.port = server._transport.get_extra_info("sockname")[1]  # type: ignore[attr-defined]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(15):
            raise RuntimeError(f"the aioquic server {name} did not start")

    def close(self) -> None:
        def stop() -> None:
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)


class H3Client(QuicConnectionProtocol):
    """
    An HTTP/3 client connection that fetches pages and can move to a new
    local port.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._waiting: dict[int, tuple[asyncio.Future[bytes], list[bytes]]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3 in self._http.handle_event(event):
            if isinstance(h3, DataReceived | HeadersReceived) and h3.stream_id in self._waiting:
                future, chunks = self._waiting[h3.stream_id]
                if isinstance(h3, DataReceived):
                    chunks.append(h3.data)
                if h3.stream_ended and not future.done():
                    future.set_result(b"".join(chunks))

    async def get(self, authority: str, path: str = "/", timeout: float = 10.0) -> bytes:
        stream = self._quic.get_next_available_stream_id()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[stream] = (future, [])
        self._http.send_headers(
            stream,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        self.transmit()
        return await asyncio.wait_for(future, timeout)

    async def rebind(self) -> int:
        """
        Send from a new local port from now on (a NAT rebinding, or a
        client moving network), keeping the connection IDs; return the port.
        """
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0, 0, 0))
        old = self._transport
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, sock=sock)
        old.close()
        return int(sock.getsockname()[1])


def clientConfiguration(name: str, alpn: Sequence[str] = H3_ALPN) -> QuicConfiguration:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=list(alpn), server_name=name
    )
    configuration.verify_mode = ssl.CERT_NONE
    return configuration


def fetch(
    port: int,
    name: str,
    paths: Sequence[str] = ("/",),
    alpn: Sequence[str] = H3_ALPN,
    between: Callable[[H3Client, int], Any] | None = None,
    timeout: float = 20.0,
) -> list[bytes]:
    """
    Fetch C{paths} over one HTTP/3 connection to 127.0.0.1:C{port} asking
    for C{name}; C{between(client, index)} (a coroutine function) runs
    before each request after the first.
    """

    async def run() -> list[bytes]:
        pages = []
        async with connect(
            "127.0.0.1",
            port,
            configuration=clientConfiguration(name, alpn),
            create_protocol=H3Client,
        ) as client:
            assert isinstance(client, H3Client)
            for index, path in enumerate(paths):
                if index and between is not None:
                    await between(client, index)
                pages.append(await client.get(name, path))
        return pages

    return asyncio.run(asyncio.wait_for(run(), timeout))
