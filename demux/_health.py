"""
Active health checks: each backend of a route with C{check = true} is asked,
every C{check_interval}, whether it is alive, in the words of the protocol
the route already matches (a TLS handshake, an SSH banner, an HTTP status
line, a Syncthing relay C{Ping}), and is skipped by the route's balancing
while it is down.

The check itself (L{IHealthCheck}) is built once per route when the
configuration is loaded; L{HealthService} runs it for every backend with
the reactor, counts C{rise} and C{fall}, and tells the route's target, the
log and the metrics when a backend's state changes.  Each check is bounded
by its timeout, and checks of one backend never overlap.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ._errors import ConfigError, DemuxError
from ._proxyheader import makeHeader
from ._targets import (
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_CHECK_TIMEOUT,
    DEFAULT_FALL,
    DEFAULT_RISE,
    Backend,
    BackendTarget,
    HealthCheck,
    IHealthCheck,
)

if TYPE_CHECKING:
    from OpenSSL import SSL

    from ._routes import RouteTable

log = Logger(namespace="demux")

# The most a check reads before it must have its answer: a status line or a
# banner is far shorter.
MAX_ANSWER = 4096

RELAY_MAGIC = 0x9E79BC40
RELAY_PING = 0
RELAY_PONG = 1
_RELAY_HEADER = struct.Struct(">Iii")


class HealthCheckFailed(DemuxError):
    """
    A backend answered a health check wrongly, or not at all; the message
    says how, for the log and the status page.
    """


class IHealthObserver(Interface):
    """
    Told of every checked backend's state, to export it (metrics).
    """

    def backendHealth(route: str, backend: str, up: bool | None) -> None:
        """
        C{backend} of C{route} is now up (C{True}) or down (C{False}), or is
        no longer checked (L{None}).
        """


# The pure parts: what a good answer looks like.  Each takes everything read
# so far and says None (read more), or (healthy, what was seen).


def sshBanner(data: bytes) -> tuple[bool, str] | None:
    """
    Judge an SSH server's first bytes: its identification starts with
    C{SSH-} (RFC 4253 allows lines before it only from the server, but no
    server in use sends them, and a wrong service never starts with it).
    """
    if len(data) < 4:
        return None if b"SSH-".startswith(data) else (False, _unexpected(data))
    if not data.startswith(b"SSH-"):
        return False, _unexpected(data)
    line = data.split(b"\n", 1)[0]
    if b"\n" not in data and len(data) < 255:
        return None
    return True, line.rstrip(b"\r").decode("ascii", "replace")


def httpStatus(data: bytes) -> tuple[bool, str] | None:
    """
    Judge an HTTP server's answer by its status line: any status means the
    server is alive, except a 5xx, which is the server saying it is not.
    """
    if b"\n" not in data:
        if len(data) >= MAX_ANSWER or not (data[:5] == b"HTTP/"[: len(data[:5])]):
            return False, _unexpected(data)
        return None
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        return False, _unexpected(data)
    text = line.decode("ascii", "replace")
    return parts[1][:1] != b"5", text


def relayPong(data: bytes) -> tuple[bool, str] | None:
    """
    Judge a Syncthing relay's answer to C{Ping}: a relay protocol message
    (magic, type, length, all big-endian 32-bit) of type C{Pong}.
    """
    if len(data) < _RELAY_HEADER.size:
        return None
    magic, kind, length = _RELAY_HEADER.unpack_from(data)
    if magic != RELAY_MAGIC:
        return False, f"not a relay protocol message: {_unexpected(data)}"
    if kind != RELAY_PONG:
        return False, f"relay answered message type {kind}, not Pong"
    return True, "relay answered Pong"


def relayPing() -> bytes:
    """
    The relay protocol's C{Ping}: a header with an empty payload.
    """
    return _RELAY_HEADER.pack(RELAY_MAGIC, RELAY_PING, 0)


def _unexpected(data: bytes) -> str:
    shown = data[:40].decode("ascii", "backslashreplace")
    return f"unexpected answer {shown!r}"


def _why(reason: Failure) -> str:
    if reason.check(ConnectionDone):
        return "connection closed"
    message = reason.getErrorMessage()
    if reason.check(DemuxError):
        return message
    # OpenSSL's errors are a list of tuples; the last part is the readable one.
    value = reason.value
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list) and args[0] and isinstance(args[0][0], tuple):
        message = "; ".join(str(e[-1]) for e in args[0])
        return f"TLS: {message}"
    return message or reason.type.__name__


@implementer(IOpenSSLClientConnectionCreator)
class AnyCertificateTLS:
    """
    A TLS client for liveness, not trust: it accepts any certificate, sends
    C{serverName} as SNI and offers C{alpn}, and presents a throwaway
    self-signed certificate for servers that want one (a Syncthing relay
    closes connections without one).
    """

    def __init__(self, serverName: str | None, alpn: str | None) -> None:
        from OpenSSL import SSL

        self.serverName = serverName
        self.alpn = alpn
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_verify(SSL.VERIFY_NONE)
        if alpn is not None:
            context.set_alpn_protos([alpn.encode("ascii")])
        certificate, key = _throwawayCertificate()
        context.use_certificate(certificate)
        context.use_privatekey(key)
        self._context = context

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnyCertificateTLS):
            return NotImplemented
        return (self.serverName, self.alpn) == (other.serverName, other.alpn)

    def __hash__(self) -> int:
        return hash((self.serverName, self.alpn))

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        from OpenSSL import SSL

        connection = SSL.Connection(self._context, None)
        if self.serverName is not None:
            connection.set_tlsext_host_name(self.serverName.encode("idna"))
        connection.set_connect_state()
        return connection


def _throwawayCertificate() -> tuple[Any, Any]:
    """
    A fresh P-256 key and a self-signed certificate for it, valid a year.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demux health check")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate, key


@implementer(IHandshakeListener)
class _Probe(Protocol):
    """
    One check's connection: send the preamble (a PROXY header), start TLS if
    asked, send the request, and judge what comes back.
    """

    transport: Any

    def __init__(
        self,
        preamble: bytes,
        tls: IOpenSSLClientConnectionCreator | None,
        request: bytes,
        judge: Callable[[bytes], tuple[bool, str] | None] | None,
        success: str,
    ) -> None:
        self.preamble = preamble
        self.tls = tls
        self.request = request
        self.judge = judge
        self.success = success
        self.received = b""
        self.result: Deferred[bool] = Deferred(self._cancel)

    def _cancel(self, result: Deferred[bool]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def _finish(self, healthy: bool, why: str) -> None:
        if self.result.called:
            return
        self.transport.loseConnection()
        if healthy:
            self.result.callback(True)
        else:
            self.result.errback(HealthCheckFailed(why))

    def connectionMade(self) -> None:
        if self.preamble:
            self.transport.write(self.preamble)
        if self.tls is not None:
            self.transport.startTLS(self.tls)
            return
        self._ready()

    def handshakeCompleted(self) -> None:
        self._ready()

    def _ready(self) -> None:
        if self.request:
            self.transport.write(self.request)
        if self.judge is None:
            self._finish(True, self.success)

    def dataReceived(self, data: bytes) -> None:
        if self.judge is None or self.result.called:
            return
        self.received += data
        verdict = self.judge(self.received)
        if verdict is None and len(self.received) >= MAX_ANSWER:
            verdict = (False, "answer too long")
        if verdict is not None:
            self._finish(*verdict)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.result.called:
            return
        why = _why(reason)
        if reason.check(ConnectionDone):
            why = "closed before answering"
        self.result.errback(HealthCheckFailed(why))


class _ProbeFactory(Factory):
    noisy = False

    def __init__(self, probe: _Probe) -> None:
        self.probe = probe

    def buildProtocol(self, addr: IAddress | None) -> _Probe:
        return self.probe


@implementer(IHealthCheck)
@frozen
class ProbeCheck:
    """
    A health check that dials the backend and, over plain TCP or TLS, sends
    C{request} and judges the answer with C{judge}; with neither, a
    connection (and handshake) that opens is enough.

    @ivar description: what it checks, for logs.
    @ivar tls: the TLS client to start the connection with, or L{None}.
    @ivar request: bytes to send once connected, or a function of the
        backend that makes them (an HTTP request names its host).
    @ivar judge: says from the bytes read so far whether the answer is good.
    @ivar sendProxy: 1 or 2 to start with a PROXY header (a C{LOCAL} one,
        as HAProxy's checks send), for backends that expect one.
    """

    description: str
    tls: IOpenSSLClientConnectionCreator | None = None
    request: bytes | Callable[[Backend], bytes] = b""
    judge: Callable[[bytes], tuple[bool, str] | None] | None = None
    sendProxy: int | None = None

    def check(self, backend: Backend) -> Deferred[bool]:
        request = self.request
        if callable(request):
            request = request(backend)
        preamble = b""
        if self.sendProxy is not None:
            preamble = makeHeader(self.sendProxy, _NoAddress(), _NoAddress())
        probe = _Probe(preamble, self.tls, request, self.judge, self.description)
        connecting = backend.endpoint.connect(_ProbeFactory(probe))

        def connected(protocol: object) -> Deferred[bool]:
            return probe.result

        return connecting.addCallback(connected)


@implementer(IAddress)
class _NoAddress:
    """
    No address: a check's PROXY header says C{LOCAL}/C{UNKNOWN}.
    """


def _hostOf(backend: Backend) -> str:
    """
    The host to name in an HTTP check's C{Host} header when the route names
    none: the backend's, as written in its endpoint string.
    """
    parts = backend.description.split(":")
    if len(parts) >= 3 and parts[0] in ("tcp", "tcp6", "tls"):
        host = parts[1].strip("[]")
        for part in parts[2:]:
            if part.startswith("host="):
                host = part[len("host=") :]
        return host
    return "localhost"


def _firstName(names: object) -> str | None:
    """
    The first configured name, or L{None} if there is none or it is a
    wildcard (which names no one host to ask for).
    """
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        return None
    if "*" in names[0]:
        return None
    return names[0]


@frozen
class HTTPRequest:
    """
    The C{GET} request of an HTTP check, naming C{host} or, if L{None}, the
    backend's own host (a value, so that a reloaded route with the same
    check compares equal and keeps its rhythm).
    """

    path: str = "/"
    host: str | None = None

    def __call__(self, backend: Backend) -> bytes:
        name = self.host if self.host is not None else _hostOf(backend)
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {name}\r\n"
            "User-Agent: demux-health-check\r\nConnection: close\r\n\r\n"
        ).encode("ascii", "replace")


def checkForMatch(
    match: Mapping[str, object],
    path: str | None = None,
    sendProxy: int | None = None,
) -> IHealthCheck:
    """
    The health check a route's C{match} table implies: the route's own
    protocol, asked the way a client of that route would ask.

    @param path: the HTTP check's path (C{check_path}), for HTTP routes.
    """
    from .matchers._syncthing import BEP_ALPN, RELAY_ALPN

    tls = match.get("tls")
    tlsOptions: Mapping[str, object] = tls if isinstance(tls, Mapping) else {}
    sni = _firstName(tlsOptions.get("sni"))
    alpns = tlsOptions.get("alpn")
    alpn = _firstName(alpns) if alpns is not None else None
    if "relay-protocol" in match or alpn == RELAY_ALPN:
        return ProbeCheck(
            "relay protocol Ping",
            AnyCertificateTLS(sni, RELAY_ALPN),
            relayPing(),
            relayPong,
            sendProxy,
        )
    if "bep" in match:
        alpn = BEP_ALPN
    if "tls" in match or "bep" in match:
        words = [f"sni={sni}" if sni else "no sni", f"alpn={alpn}" if alpn else "no alpn"]
        return ProbeCheck(
            f"TLS handshake ({', '.join(words)})",
            AnyCertificateTLS(sni, alpn),
            sendProxy=sendProxy,
        )
    if "ssh" in match:
        return ProbeCheck("SSH banner", judge=sshBanner, sendProxy=sendProxy)
    if "http" in match:
        http = match["http"]
        host = _firstName(http.get("host")) if isinstance(http, Mapping) else None
        return ProbeCheck(
            f"HTTP GET {path or '/'}",
            request=HTTPRequest(path or "/", host),
            judge=httpStatus,
            sendProxy=sendProxy,
        )
    return ProbeCheck("TCP connect", sendProxy=sendProxy)


CHECK_KEYS = ("check", "check_interval", "check_timeout", "rise", "fall", "check_path")
"""
The route keys of active health checks.
"""


def _positive(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"must be a number of seconds more than 0, not {value!r}", where)
    return float(value)


def _whole(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be a whole number of at least 1, not {value!r}", where)
    return value


def healthCheckFromRoute(
    route: Mapping[str, Any], where: str, sendProxy: int | None = None
) -> HealthCheck | None:
    """
    The L{HealthCheck} a route's table asks for with C{check = true}, or
    L{None}.

    @param where: the route's place, for errors ("route 'web': backend").
    @raise ConfigError: naming the key, for a bad value or a check key
        without C{check = true}.
    """
    enabled = route.get("check", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"must be true or false, not {enabled!r}", f"{where}: check")
    if not enabled:
        for key in CHECK_KEYS[1:]:
            if key in route:
                raise ConfigError(f"{key} needs check = true", where)
        return None
    match = route.get("match")
    match = match if isinstance(match, Mapping) else {}
    interval = DEFAULT_CHECK_INTERVAL
    if "check_interval" in route:
        interval = _positive(route["check_interval"], f"{where}: check_interval")
    timeout = DEFAULT_CHECK_TIMEOUT
    if "check_timeout" in route:
        timeout = _positive(route["check_timeout"], f"{where}: check_timeout")
    rise = _whole(route["rise"], f"{where}: rise") if "rise" in route else DEFAULT_RISE
    fall = _whole(route["fall"], f"{where}: fall") if "fall" in route else DEFAULT_FALL
    path = None
    if "check_path" in route:
        path = route["check_path"]
        if not isinstance(path, str) or not path.startswith("/") or any(
            c.isspace() for c in path
        ):
            raise ConfigError(
                f"must be a path such as \"/healthz\", not {path!r}",
                f"{where}: check_path",
            )
        if "http" not in match:
            raise ConfigError(
                "check_path needs an HTTP route (match.http)", f"{where}: check_path"
            )
    return HealthCheck(checkForMatch(match, path, sendProxy), interval, timeout, rise, fall)


@define
class BackendMonitor:
    """
    Checks one backend of one route, again and again, and keeps its state.

    A backend starts up (as it would without checks), goes down after
    C{fall} failed checks in a row and comes back after C{rise} good ones.

    @ivar up: the backend's state by its checks.
    @ivar why: what the last check that changed or confirmed it saw.
    @ivar count: consecutive checks that disagreed with C{up}.
    """

    route: str
    backend: Backend
    target: BackendTarget
    settings: HealthCheck
    clock: IReactorTime
    observer: IHealthObserver | None = None
    up: bool = True
    why: str = "not checked yet"
    count: int = 0
    _timer: IDelayedCall | None = field(default=None, alias="_timer")
    _running: Deferred[bool] | None = field(default=None, alias="_running")
    _stopped: bool = field(default=True, alias="_stopped")

    def start(self) -> None:
        """
        Check now, and every interval after each check ends.
        """
        self._stopped = False
        self._publish()
        self._check()

    def stop(self) -> None:
        """
        Stop checking; a check under way is abandoned.
        """
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        running, self._running = self._running, None
        if running is not None:
            running.cancel()

    def adopt(self, target: BackendTarget, settings: HealthCheck) -> None:
        """
        Carry on for a reloaded route: the same backend, its new target (to
        which the state is handed) and perhaps new timing.
        """
        self.target = target
        changed = settings != self.settings
        self.settings = settings
        self._publish()
        if changed and not self._stopped and self._running is None:
            # New timing: start over with it.
            self.stop()
            self._stopped = False
            self._check()

    def _publish(self) -> None:
        self.target.setChecked(self.backend, self.up, self.why)
        if self.observer is not None:
            self.observer.backendHealth(self.route, self.backend.description, self.up)

    def _check(self) -> None:
        self._timer = None
        if self._stopped:
            return
        try:
            d = self.settings.probe.check(self.backend)
        except Exception as e:
            d = Deferred()
            d.errback(HealthCheckFailed(f"the check could not start: {e}"))
        self._running = d
        d.addTimeout(self.settings.timeout, self.clock)
        d.addCallbacks(self._answered, self._failed)
        d.addBoth(self._next, d)

    def _answered(self, healthy: bool) -> None:
        if healthy is True:
            self._record(True, "check passed")
        else:
            self._record(False, "check failed")

    def _failed(self, reason: Failure) -> None:
        if reason.check(CancelledError, DeferredTimeoutError):
            if self._stopped:
                return
            why = f"no answer within {self.settings.timeout:g}s"
        else:
            why = _why(reason)
        self._record(False, why)

    def _next(self, ignored: object, d: Deferred[bool]) -> None:
        if self._running is d:
            self._running = None
        if not self._stopped and self._timer is None:
            self._timer = self.clock.callLater(self.settings.interval, self._check)

    def _record(self, healthy: bool, why: str) -> None:
        if self._stopped:
            return
        if healthy == self.up:
            self.count = 0
            self.why = why
            self.target.setChecked(self.backend, self.up, why)
            return
        self.count += 1
        needed = self.settings.rise if healthy else self.settings.fall
        if self.count < needed:
            return
        self.up = healthy
        self.count = 0
        self.why = why
        self._publish()
        if healthy:
            log.info(
                "backend {backend} of route {route} is up",
                backend=self.backend.description,
                route=self.route,
            )
        else:
            log.warn(
                "backend {backend} of route {route} is down: {why}",
                backend=self.backend.description,
                route=self.route,
                why=why,
            )


class HealthService(Service):
    """
    Runs the active health checks of every route that has them, while
    demux runs; a reload hands it the new route table with L{setTable}.

    Backends are known by their route's name and their description (the
    endpoint string): across a reload, one that is in both tables keeps its
    state and its rhythm, and only new ones start and gone ones stop.
    """

    def __init__(
        self,
        table: RouteTable,
        clock: IReactorTime,
        observer: IHealthObserver | None = None,
    ) -> None:
        self.clock = clock
        self.observer = observer
        self.monitors: dict[tuple[str, str], BackendMonitor] = {}
        self.setTable(table)

    def _wanted(
        self, table: RouteTable
    ) -> dict[tuple[str, str], tuple[Backend, BackendTarget, HealthCheck]]:
        wanted = {}
        for route in table.routes:
            target = route.target
            if isinstance(target, BackendTarget) and target.check is not None:
                for backend in target.backends:
                    wanted[(route.name, backend.description)] = (
                        backend,
                        target,
                        target.check,
                    )
        return wanted

    def setTable(self, table: RouteTable) -> None:
        """
        Check the backends of C{table} from now on.
        """
        wanted = self._wanted(table)
        for key in list(self.monitors):
            if key not in wanted:
                self.monitors.pop(key).stop()
                if self.observer is not None:
                    self.observer.backendHealth(key[0], key[1], None)
        for key, (backend, target, settings) in wanted.items():
            kept = self.monitors.get(key)
            if kept is not None:
                kept.adopt(target, settings)
                continue
            monitor = BackendMonitor(
                key[0], backend, target, settings, self.clock, self.observer
            )
            self.monitors[key] = monitor
            if self.running:
                monitor.start()

    def startService(self) -> None:
        super().startService()
        for monitor in self.monitors.values():
            monitor.start()

    def stopService(self) -> None:
        super().stopService()
        for monitor in self.monitors.values():
            monitor.stop()
