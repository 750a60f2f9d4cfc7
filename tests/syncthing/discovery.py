"""
A client for Syncthing's global discovery protocol v3
(C{syncthing-globaldisco(7)}).

Discovery is HTTPS: a device announces its addresses with a C{POST} to
C{/v2/}, proving its device ID with its client certificate, and anyone looks
a device up with C{GET /v2/?device=ID}.  The server's certificate is pinned
by device ID rather than checked against a CA.

The client connects to an address of the caller's choosing but sends the
server name it is given as SNI, the way a browser reaching
C{discovery.example.com} through a front would: the SNI is what the
C{discovery} route of the example matches.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.parse
from typing import Any

import attrs

from .identity import Identity, verifyPeer


@attrs.frozen
class DiscoveryAnswer:
    """
    One HTTP answer of the discovery server.

    @ivar status: the HTTP status code.
    @ivar headers: the response headers, names lower-cased.
    @ivar body: the response body.
    @ivar serverID: the device ID of the certificate the server presented.
    @ivar clientPort: the local port of the connection, which names it in
        demux's log.
    """

    status: int
    headers: dict[str, str]
    body: bytes
    serverID: str
    clientPort: int

    def json(self) -> Any:
        """
        The body, decoded as JSON.
        """
        return json.loads(self.body)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """
    HTTPS to a given IP address with a chosen SNI and Host, and a client
    certificate.
    """

    def __init__(
        self,
        host: str,
        port: int,
        serverName: str,
        identity: Identity | None,
        timeout: float,
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._serverName = serverName
        self._identity = identity
        self.tlsSocket: Any = None

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        if self._identity is not None:
            context = self._identity.clientContext()
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            self.sock = context.wrap_socket(raw, server_hostname=self._serverName)
        except BaseException:
            raw.close()
            raise
        self.tlsSocket = self.sock


class DiscoveryClient:
    """
    Announce and look up devices at one discovery server.

    @param host: the IP address to connect to (the demux port's).
    @param port: the TCP port to connect to.
    @param serverName: the SNI and C{Host} to send.
    @param serverID: the discovery server's device ID, to pin its
        certificate; L{None} accepts any.
    """

    def __init__(
        self,
        host: str,
        port: int,
        serverName: str,
        serverID: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.serverName = serverName
        self.serverID = serverID
        self.timeout = timeout

    def _request(
        self,
        method: str,
        path: str,
        identity: Identity | None,
        body: bytes | None = None,
    ) -> DiscoveryAnswer:
        connection = _PinnedHTTPSConnection(
            self.host, self.port, self.serverName, identity, self.timeout
        )
        try:
            headers = {"Host": f"{self.serverName}:{self.port}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=body, headers=headers)
            serverID = verifyPeer(connection.tlsSocket, self.serverID)
            clientPort = int(connection.tlsSocket.getsockname()[1])
            response = connection.getresponse()
            return DiscoveryAnswer(
                status=response.status,
                headers={k.lower(): v for k, v in response.getheaders()},
                body=response.read(),
                serverID=serverID,
                clientPort=clientPort,
            )
        finally:
            connection.close()

    def announce(
        self, identity: Identity | None, addresses: list[str]
    ) -> DiscoveryAnswer:
        """
        Announce that C{identity}'s device is reachable at C{addresses}
        (204 on success); with no identity, no client certificate is
        presented (403).
        """
        body = json.dumps({"addresses": addresses}).encode()
        return self._request("POST", "/v2/", identity, body)

    def lookup(
        self, deviceID: str, identity: Identity | None = None
    ) -> DiscoveryAnswer:
        """
        Look C{deviceID} up (200 with its addresses, 404 if unknown).
        """
        query = urllib.parse.urlencode({"device": deviceID})
        return self._request("GET", f"/v2/?{query}", identity)
