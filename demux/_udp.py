"""
UDP: listeners, flows, and the flow table that feeds datagrams to the same
route table and the same L{decide} as the stream protocol.

A I{flow} is what comes from one client address to one listener.  Its first
datagrams are judged over a L{DatagramPeek} until a route wins (a matcher
may need several datagrams), bounded by C{inspect_delay}, C{max_peek} bytes
and C{max_flow_datagrams} datagrams; datagrams that arrive while it is
undecided are kept, in order, and sent once it is decided.  A decided flow
gets its own connected UDP socket to its backend, so that the backend's
replies name their flow by the port they arrive on; they go back to the
client from the listener's socket.

QUIC flows survive a change of the client's address: the connection IDs the
server chooses (the Source Connection IDs of its long-header replies) are
learned per flow, and a short-header packet from a new address whose
Destination Connection ID is one of them joins its flow.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import Interface, implementer

from . import _log, _udpsocket
from ._errors import DemuxError
from ._interfaces import DATAGRAM, transportsOf
from ._peek import DatagramPeek, Peek
from ._proxyheader import makeHeader
from ._routes import Decision, RouteTable, decide

log = Logger(namespace="demux")

DEFAULT_UDP_IDLE_TIMEOUT = 60.0
"""
Seconds a decided flow lives with no datagram either way: sslh's default.
"""
DEFAULT_MAX_FLOWS = 10_000
DEFAULT_MAX_FLOW_DATAGRAMS = 8
"""
The most datagrams an undecided flow may send (and demux keep) before it is
decided by what it has sent: a QUIC ClientHello spans one to three Initials.
"""
MAX_CIDS_PER_FLOW = 8
"""
The most server-chosen QUIC connection IDs learned for one flow, so that a
backend (or whoever spoofs one) cannot grow the ID table without bound.
"""
MAX_ADDRESSES_PER_FLOW = 4
"""
The most client addresses one flow answers to at once (its first and the
ones it migrated to); the oldest is forgotten first.
"""

MAX_DATAGRAM = 65535
"""
The largest datagram read: anything UDP can carry, so that no datagram is
cut short on its way through.
"""

Address = tuple[str, int]


def datagramsAllowed(factory: object) -> bool:
    """
    Whether matchers made by C{factory} can judge datagrams (its
    C{transports}, absent meaning streams only).
    """
    return DATAGRAM in transportsOf(factory)


# --- Addresses ---------------------------------------------------------------


@frozen
class DatagramListen:
    """
    A C{listen} entry for UDP, parsed.

    @ivar description: as written.
    @ivar port: the port to bind (0 for any).
    @ivar interface: the address to bind.
    @ivar systemdIndex: the index of a datagram socket passed by systemd to
        adopt instead of binding one, or L{None}.
    @ivar family: C{socket.AF_INET} or C{socket.AF_INET6}.
    """

    description: str
    port: int = 0
    interface: str = ""
    systemdIndex: int | None = None
    family: int = socket.AF_INET


def parseDatagramListen(description: str) -> DatagramListen | None:
    """
    Parse a UDP C{listen} entry: C{udp:PORT}, C{udp6:PORT} (IPv6, and IPv4
    too where the system maps it), either with C{:interface=ADDRESS}, or
    C{udp:systemd:index=N} (with C{:domain=INET6} for an IPv6 socket) for a
    datagram socket systemd passes.

    @return: L{None} for an entry that is not UDP (a Twisted endpoint string).
    @raise ValueError: saying what is wrong with a UDP entry.
    """
    kind, sep, rest = description.partition(":")
    if kind not in ("udp", "udp6") or not sep:
        return None
    family = socket.AF_INET6 if kind == "udp6" else socket.AF_INET
    parts = rest.replace("\\:", "\0").split(":")
    parts = [p.replace("\0", ":") for p in parts]
    options: dict[str, str] = {}
    head = parts[0]
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq or key in options:
            raise ValueError(f"{part!r} is not an option such as interface=ADDRESS")
        options[key] = value
    if head == "systemd":
        unknown = set(options) - {"index", "domain"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} for udp:systemd")
        domain = options.get("domain", "INET6" if kind == "udp6" else "INET")
        if domain not in ("INET", "INET6"):
            raise ValueError(f"domain must be INET or INET6, not {domain!r}")
        index = options.get("index", "")
        if not index.isdigit():
            raise ValueError(f"udp:systemd needs index=N, not {index!r}")
        return DatagramListen(
            description,
            systemdIndex=int(index),
            family=socket.AF_INET6 if domain == "INET6" else socket.AF_INET,
        )
    if not head.isdigit() or int(head) > 0xFFFF:
        raise ValueError(f"{head!r} is not a port number")
    unknown = set(options) - {"interface"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} (known: interface)")
    interface = options.get("interface", "::" if kind == "udp6" else "")
    if interface:
        try:
            address = ipaddress.ip_address(interface)
        except ValueError:
            raise ValueError(f"interface {interface!r} is not an IP address") from None
        if (address.version == 6) != (kind == "udp6"):
            raise ValueError(
                f"interface {interface!r} is IPv{address.version}; "
                f"write {'udp6' if address.version == 6 else 'udp'}: for it"
            )
    return DatagramListen(description, int(head), interface, None, family)


@frozen
class UDPBackend:
    """
    A UDP backend: C{udp:HOST:PORT}, C{HOST} an IP address (written
    C{[::1]} or C{::1} for IPv6).
    """

    description: str
    host: str
    port: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


def isUDPBackend(description: object) -> bool:
    """
    Whether a backend string names a UDP backend.
    """
    return isinstance(description, str) and description.startswith("udp:")


def parseUDPBackend(description: str) -> UDPBackend:
    """
    Parse C{udp:HOST:PORT}.

    @raise ValueError: saying what is wrong.
    """
    rest = description.removeprefix("udp:").replace("\\:", ":")
    host, sep, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port.isdigit() or not 0 < int(port) <= 0xFFFF:
        raise ValueError(f"{description!r} is not udp:HOST:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{description!r}: a UDP backend's host must be an IP address, "
            f"not {host!r}"
        ) from None
    return UDPBackend(description, host, int(port))


# --- Configuration -------------------------------------------------------------


@frozen
class DatagramTarget:
    """
    Where a UDP route's flows go: its first backend (the others are listed
    for the status view; UDP has no connect to fail over on).

    @ivar sendProxy: whether each flow's first datagram to the backend is
        preceded by a PROXY v2 header (transport DGRAM).
    """

    backends: tuple[UDPBackend, ...]
    sendProxy: bool = False

    @property
    def description(self) -> str:
        return ", ".join(b.description for b in self.backends)


@frozen
class DatagramTable:
    """
    Everything that routes datagrams, as one immutable value.

    @ivar table: the routes that apply to UDP, in order, with the limits
        (C{inspectDelay}, C{maxPeek}, C{onTimeout}) L{decide} reads.
    @ivar targets: each route's L{DatagramTarget}, by route name.
    @ivar idleTimeout: seconds a decided flow lives without a datagram.
    @ivar maxFlows: the most flows (decided or not) at once.
    @ivar maxFlowsPerSource: the most flows at once from one client IP
        address, or L{None}.
    @ivar maxFlowDatagrams: the most datagrams an undecided flow may send.
    """

    table: RouteTable
    targets: Mapping[str, DatagramTarget] = field(factory=dict)
    idleTimeout: float = DEFAULT_UDP_IDLE_TIMEOUT
    maxFlows: int = DEFAULT_MAX_FLOWS
    maxFlowsPerSource: int | None = None
    maxFlowDatagrams: int = DEFAULT_MAX_FLOW_DATAGRAMS


# --- QUIC headers ----------------------------------------------------------------


def longHeaderSCID(datagram: bytes) -> bytes | None:
    """
    The Source Connection ID of a QUIC long-header packet (other than
    Version Negotiation), or L{None} for anything else.
    """
    if len(datagram) < 7 or not datagram[0] & 0x80 or datagram[1:5] == b"\0\0\0\0":
        return None
    dcidLength = datagram[5]
    at = 6 + dcidLength
    if dcidLength > 20 or len(datagram) <= at:
        return None
    scidLength = datagram[at]
    if scidLength > 20 or len(datagram) < at + 1 + scidLength:
        return None
    return datagram[at + 1 : at + 1 + scidLength]


def isShortHeader(datagram: bytes) -> bool:
    """
    Whether C{datagram} could be a QUIC short-header (1-RTT) packet: the
    header form bit clear and the fixed bit set.
    """
    return len(datagram) > 1 and datagram[0] & 0xC0 == 0x40


# --- Observers -------------------------------------------------------------------


class IFlowObserver(Interface):
    """
    Told of each step of each UDP flow (the metrics).  Called from the
    reactor thread, on the hot path: quick, and never raising.
    """

    def flowStarted() -> None:
        """
        A flow was created and waits for a decision.
        """

    def flowDropped(reason: str, started: bool) -> None:
        """
        A datagram that made no flow (C{started} false), or an undecided
        flow, was dropped without a route: C{"limit"} (the flow table or a
        source was full), C{"no match"} or C{"timeout"} (undecided when
        C{inspect_delay} or a cap ran out).
        """

    def flowRouted(route: str, decideSeconds: float) -> None:
        """
        A flow took C{route}.
        """

    def flowMigrated(route: str) -> None:
        """
        A flow of C{route} was joined from a new client address by its QUIC
        connection ID.
        """

    def flowClosed(
        route: str, datagramsUp: int, datagramsDown: int, bytesUp: int, bytesDown: int
    ) -> None:
        """
        A decided flow expired.
        """


@implementer(IFlowObserver)
class NullFlowObserver:
    """
    Counts nothing.
    """

    def flowStarted(self) -> None:
        pass

    def flowDropped(self, reason: str, started: bool) -> None:
        pass

    def flowRouted(self, route: str, decideSeconds: float) -> None:
        pass

    def flowMigrated(self, route: str) -> None:
        pass

    def flowClosed(
        self, route: str, datagramsUp: int, datagramsDown: int, bytesUp: int, bytesDown: int
    ) -> None:
        pass


# --- Flows -------------------------------------------------------------------------


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _twistedAddress(address: Address) -> IPv4Address | IPv6Address:
    if ":" in address[0]:
        return IPv6Address("UDP", address[0], address[1])
    return IPv4Address("UDP", address[0], address[1])


def _text(address: Address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _BackendProtocol(DatagramProtocol):
    """
    A flow's connected socket to its backend: what arrives is a reply.
    """

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.flow.fromBackend(datagram)

    def connectionRefused(self) -> None:
        # An ICMP port unreachable from the backend: UDP has no connection
        # to fail, and the backend may be back for the next datagram.
        self.flow.refusedCount += 1


class Flow:
    """
    One client's datagrams to one listener, before and after its decision.

    @ivar client: the client address replies go to (the latest the flow
        was seen from).
    @ivar local: the address the client sent to, for replies to come
        from, on a wildcard listener that learns it; else L{None}.
    @ivar addresses: every (local, client) address pair the flow answers to.
    @ivar route: the route's name once decided.
    @ivar decision: why and where to, for the line that ends the flow, if
        the decision had no line of its own (unless C{log_decisions = true}).
    @ivar pending: datagrams kept while undecided, in order.
    """

    def __init__(
        self,
        table: FlowTable,
        listener: DatagramListener,
        client: Address,
        local: str | None = None,
    ):
        self.flowTable = table
        self.listener = listener
        self.client = client
        self.local = local
        self.addresses: list[tuple[str | None, Address]] = [(local, client)]
        self.source = client[0]
        self.started = table.clock.seconds()
        self.lastSeen = self.started
        self.peek: Peek = DatagramPeek()
        self.pending: list[bytes] = []
        self.pendingBytes = 0
        self.route: str | None = None
        self.target: DatagramTarget | None = None
        self.decision: str | None = None
        self.port: Any = None
        self.timer: IDelayedCall | None = None
        self.cids: list[bytes] = []
        self.headerSent = False
        self.datagramsUp = self.datagramsDown = 0
        self.bytesUp = self.bytesDown = 0
        self.refusedCount = 0
        self.closed = False

    @property
    def decided(self) -> bool:
        return self.route is not None

    # Before the decision.

    def offer(self, datagram: bytes) -> None:
        """
        Take one more datagram of an undecided flow and decide if it can be.
        """
        dt = self.flowTable.datagrams
        self.peek = self.peek.extended(datagram)
        self.pending.append(datagram)
        self.pendingBytes += len(datagram)
        final = (
            len(self.pending) >= dt.maxFlowDatagrams
            or self.pendingBytes >= dt.table.maxPeek
        )
        self.judge(final, "cap reached" if final else "")

    def judge(self, final: bool, why: str = "") -> None:
        dt = self.flowTable.datagrams
        source = _ip(self.source) if dt.table.filtersSources else None
        failures: list[tuple[str, Exception]] = []
        decision = decide(dt.table, self.peek, final, source, failures)
        for name, error in failures:
            log.debug(
                "udp {peer} route={route}: its matcher failed on {count} "
                "datagrams ({error!r}); counted as no match",
                peer=_text(self.client),
                route=name,
                count=len(self.pending),
                error=error,
            )
        if decision is not None:
            self.flowTable.decided(self, decision, why)

    def timedOut(self) -> None:
        self.timer = None
        if self.closed:
            return
        if not self.decided:
            self.judge(True, "inspect_delay passed")
            return
        now = self.flowTable.clock.seconds()
        idle = self.flowTable.datagrams.idleTimeout
        left = self.lastSeen + idle - now
        if left > 0:
            self.timer = self.flowTable.clock.callLater(left, self.timedOut)
            return
        self.flowTable.expire(self, f"idle for {idle:g} s")

    # After the decision.

    def start(self, route: str, target: DatagramTarget, reactor: IReactorUDP) -> None:
        """
        Open the flow's socket to its backend and send what was kept.
        """
        self.route = route
        self.target = target
        backend = target.backends[0]
        protocol = _BackendProtocol(self)
        interface = "::" if backend.family == socket.AF_INET6 else ""
        self.port = reactor.listenUDP(
            0, protocol, interface=interface, maxPacketSize=MAX_DATAGRAM
        )
        self.port.connect(backend.host, backend.port)
        pending, self.pending = self.pending, []
        self.pendingBytes = 0
        self.peek = Peek()
        for datagram in pending:
            self.toBackend(datagram)

    def toBackend(self, datagram: bytes) -> None:
        assert self.target is not None
        self.datagramsUp += 1
        self.bytesUp += len(datagram)
        self.lastSeen = self.flowTable.clock.seconds()
        if self.target.sendProxy and not self.headerSent:
            self.headerSent = True
            header = makeHeader(
                2,
                _twistedAddress(self.client),
                self.listener.hostAddress(self.local),
                datagram=True,
            )
            datagram = header + datagram
        try:
            self.port.write(datagram)
        except OSError:
            # A full socket buffer or an unreachable backend: UDP drops.
            pass

    def fromBackend(self, datagram: bytes) -> None:
        if self.closed:
            return
        self.datagramsDown += 1
        self.bytesDown += len(datagram)
        self.lastSeen = self.flowTable.clock.seconds()
        if datagram[:1] and datagram[0] & 0x80:
            scid = longHeaderSCID(datagram)
            if scid:
                self.flowTable.learnCID(self, scid)
        self.listener.send(datagram, self.client, self.local)

    def close(self) -> None:
        self.closed = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.port is not None:
            self.port.stopListening()
            self.port = None


class DatagramListener(DatagramProtocol):
    """
    The protocol of one UDP listening socket: hands each datagram to the
    flow table, and sends replies from the socket the client sent to.
    """

    def __init__(self, flows: FlowTable, description: str = "udp") -> None:
        self.flows = flows
        self.description = description

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.flows.received(self, datagram, (addr[0], addr[1]))

    def datagramFrom(self, datagram: bytes, client: Address, local: str | None) -> None:
        """
        A datagram from a wildcard listener that knows which of the host's
        addresses it was sent to (L{demux._udpsocket.PacketInfoPort}).
        """
        self.flows.received(self, datagram, client, local)

    def send(self, datagram: bytes, client: Address, local: str | None = None) -> None:
        transport: Any = self.transport
        try:
            if local is not None:
                transport.write(datagram, client, local)
            else:
                transport.write(datagram, client)
        except OSError:
            pass

    def hostAddress(self, local: str | None = None) -> IPv4Address | IPv6Address | None:
        """
        The address the client sent to, for a PROXY header: C{local} with
        the listener's port, or the listener's own address.
        """
        try:
            host = self.transport.getHost()  # type: ignore[union-attr]
        except Exception:
            return None
        if not isinstance(host, IPv4Address | IPv6Address):
            return None
        if local is not None:
            return _twistedAddress((local, host.port))
        return host


class FlowTable:
    """
    Every flow of every UDP listener, the caps on them, and the QUIC
    connection IDs that name them.

    @ivar datagrams: the routes and limits in use (L{setTable} replaces
        them for flows not yet created).
    """

    def __init__(
        self,
        datagrams: DatagramTable,
        reactor: Any,
        observer: IFlowObserver | None = None,
    ) -> None:
        self.datagrams = datagrams
        self.reactor: IReactorUDP = reactor
        self.clock: IReactorTime = reactor
        self.observer: IFlowObserver = (
            observer if observer is not None else NullFlowObserver()
        )
        self.flows: dict[tuple[DatagramListener, str | None, Address], Flow] = {}
        self.perSource: dict[str, int] = {}
        self.cids: dict[bytes, Flow] = {}
        self.cidLengths: dict[int, int] = {}
        self.count = 0
        self.undecided = 0

    def setTable(self, datagrams: DatagramTable) -> None:
        self.datagrams = datagrams

    def listener(self, description: str = "udp") -> DatagramListener:
        """
        A protocol for one more listening socket.
        """
        return DatagramListener(self, description)

    def received(
        self,
        listener: DatagramListener,
        datagram: bytes,
        client: Address,
        local: str | None = None,
    ) -> None:
        flow = self.flows.get((listener, local, client))
        if flow is not None:
            self._deliver(flow, datagram, client, local)
            return
        if isShortHeader(datagram) and self.cids:
            flow = self._byCID(listener, datagram)
            if flow is not None:
                self._migrate(flow, client, local)
                self._deliver(flow, datagram, client, local)
                return
        self._new(listener, datagram, client, local)

    def _deliver(
        self, flow: Flow, datagram: bytes, client: Address, local: str | None
    ) -> None:
        if flow.decided:
            flow.client = client
            flow.local = local
            flow.toBackend(datagram)
        else:
            flow.offer(datagram)

    def _byCID(self, listener: DatagramListener, datagram: bytes) -> Flow | None:
        for length in self.cidLengths:
            flow = self.cids.get(datagram[1 : 1 + length])
            if flow is not None and flow.listener is listener and len(datagram) > length:
                return flow
        return None

    def _migrate(self, flow: Flow, client: Address, local: str | None) -> None:
        if len(flow.addresses) >= MAX_ADDRESSES_PER_FLOW:
            oldLocal, old = flow.addresses.pop(0)
            self.flows.pop((flow.listener, oldLocal, old), None)
        flow.addresses.append((local, client))
        self.flows[(flow.listener, local, client)] = flow
        assert flow.route is not None
        self.observer.flowMigrated(flow.route)
        if self.datagrams.table.logConnections:
            _log.flowMoved(_text(flow.addresses[0][1]), flow.route, _text(client))

    def _new(
        self,
        listener: DatagramListener,
        datagram: bytes,
        client: Address,
        local: str | None,
    ) -> None:
        dt = self.datagrams
        if self.count >= dt.maxFlows:
            self.observer.flowDropped("limit", False)
            return
        source = client[0]
        perSource = self.perSource.get(source, 0)
        if dt.maxFlowsPerSource is not None and perSource >= dt.maxFlowsPerSource:
            self.observer.flowDropped("limit", False)
            return
        flow = Flow(self, listener, client, local)
        # Judged before it is entered in the table: a datagram that no route
        # can take costs no flow, so junk leaves nothing behind.
        flow.peek = flow.peek.extended(datagram)
        flow.pending.append(datagram)
        flow.pendingBytes = len(datagram)
        final = dt.maxFlowDatagrams <= 1 or len(datagram) >= dt.table.maxPeek
        decision = decide(dt.table, flow.peek, final, _ip(source) if dt.table.filtersSources else None)
        if decision is not None and decision.route is None:
            self.observer.flowDropped(decision.kind, False)
            return
        self.flows[(listener, local, client)] = flow
        self.perSource[source] = perSource + 1
        self.count += 1
        self.undecided += 1
        self.observer.flowStarted()
        if decision is not None:
            self.decided(flow, decision, "cap reached" if final else "")
        else:
            flow.timer = self.clock.callLater(dt.table.inspectDelay, flow.timedOut)

    def decided(self, flow: Flow, decision: Decision, why: str) -> None:
        """
        Send C{flow} on its way, or drop it.
        """
        self.undecided -= 1
        if flow.timer is not None and flow.timer.active():
            flow.timer.cancel()
        flow.timer = None
        elapsed = self.clock.seconds() - flow.started
        reason = f"{why}; {decision.reason}" if why else decision.reason
        route = decision.route
        target = self.datagrams.targets.get(route.name) if route is not None else None
        if route is None or target is None:
            kind = decision.kind or "no match"
            self.observer.flowDropped(kind, True)
            _log.flowDropped(
                _text(flow.client), reason, len(flow.pending), elapsed * 1000
            )
            self._remove(flow)
            return
        self.observer.flowRouted(route.name, elapsed)
        held = len(flow.pending)
        try:
            flow.start(route.name, target, self.reactor)
        except Exception as e:
            log.error(
                "udp {peer} route={route}: cannot open a socket to the backend: {error}",
                peer=_text(flow.client),
                route=route.name,
                error=str(e),
            )
            self._remove(flow)
            self.observer.flowClosed(route.name, 0, 0, 0, 0)
            return
        table = self.datagrams.table
        if table.logConnections:
            said = _log.flowDecision(
                reason, target.description, held, elapsed * 1000
            )
            if table.logDecisions:
                _log.flowRouted(
                    _text(flow.client), route.name, said, target.description
                )
            else:
                # Said when the flow ends, in its one line.
                flow.decision = said
        flow.timer = self.clock.callLater(self.datagrams.idleTimeout, flow.timedOut)

    def learnCID(self, flow: Flow, cid: bytes) -> None:
        """
        Remember that C{cid}, chosen by C{flow}'s backend, names C{flow}.
        """
        if cid in flow.cids:
            return
        owner = self.cids.get(cid)
        if owner is not None:
            # Taken by another flow: neither may be sure of it.
            return
        if len(flow.cids) >= MAX_CIDS_PER_FLOW:
            self._forgetCID(flow.cids.pop(0))
        flow.cids.append(cid)
        self.cids[cid] = flow
        self.cidLengths[len(cid)] = self.cidLengths.get(len(cid), 0) + 1

    def _forgetCID(self, cid: bytes) -> None:
        self.cids.pop(cid, None)
        left = self.cidLengths.get(len(cid), 0) - 1
        if left > 0:
            self.cidLengths[len(cid)] = left
        else:
            self.cidLengths.pop(len(cid), None)

    def expire(self, flow: Flow, why: str) -> None:
        """
        End a decided flow.
        """
        route = flow.route
        self._remove(flow)
        assert route is not None
        self.observer.flowClosed(
            route, flow.datagramsUp, flow.datagramsDown, flow.bytesUp, flow.bytesDown
        )
        if self.datagrams.table.logConnections:
            seconds = self.clock.seconds() - flow.started
            target = None
            if flow.decision is not None:
                assert flow.target is not None
                target = flow.target.description
            _log.flowEnded(
                _text(flow.client),
                route,
                why,
                seconds,
                (flow.datagramsUp, flow.bytesUp),
                (flow.datagramsDown, flow.bytesDown),
                flow.decision,
                target,
            )

    def _remove(self, flow: Flow) -> None:
        if flow.closed:
            return
        flow.close()
        for local, address in flow.addresses:
            if self.flows.get((flow.listener, local, address)) is flow:
                del self.flows[(flow.listener, local, address)]
        for cid in flow.cids:
            if self.cids.get(cid) is flow:
                self._forgetCID(cid)
        flow.cids = []
        left = self.perSource.get(flow.source, 0) - 1
        if left > 0:
            self.perSource[flow.source] = left
        else:
            self.perSource.pop(flow.source, None)
        self.count -= 1

    def closeAll(self) -> None:
        """
        End every flow (demux is stopping).
        """
        for flow in list({id(f): f for f in self.flows.values()}.values()):
            if flow.decided:
                self.expire(flow, "demux stopping")
            else:
                self.undecided -= 1
                self._remove(flow)


class DatagramPortService(Service):
    """
    Listens on one UDP address (or adopts the datagram socket systemd
    passed) for a L{FlowTable}; a port that cannot be had stops start-up
    with one line, as a TCP listener's does.
    """

    def __init__(self, listen: DatagramListen, flows: FlowTable, reactor: Any) -> None:
        self.listen = listen
        self.flows = flows
        self.reactor = reactor
        self.port: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            self._listen()
        except Exception as e:
            # As tap's listeners do: one line, not a traceback.
            sys.stderr.write(f"demux: error: cannot listen on {self.listen.description}: {e}\n")
            raise SystemExit(1) from None

    def _listen(self) -> None:
        protocol = self.flows.listener(self.listen.description)
        if self.listen.systemdIndex is not None:
            fds = _udpsocket.systemdDescriptors()
            if self.listen.systemdIndex >= len(fds):
                raise DemuxError(f"systemd passed {len(fds)} sockets")
            # systemd passes sockets blocking unless told NonBlocking=;
            # Twisted reads until there is nothing left, so it must not be.
            os.set_blocking(fds[self.listen.systemdIndex], False)
            self.port = self.reactor.adoptDatagramPort(
                fds[self.listen.systemdIndex], self.listen.family, protocol
            )
        elif _udpsocket.SUPPORTED and _udpsocket.isWildcard(self.listen.interface):
            # Replies must leave from the address each client sent to.
            port = _udpsocket.PacketInfoPort(
                self.reactor, self.listen.port, protocol, self.listen.family, MAX_DATAGRAM
            )
            port.startListening()
            self.port = port
        else:
            self.port = self.reactor.listenUDP(
                self.listen.port,
                protocol,
                interface=self.listen.interface,
                maxPacketSize=MAX_DATAGRAM,
            )
        host = self.port.getHost()
        log.info(
            "listening on {description} (UDP {host}:{port})",
            description=self.listen.description,
            host=host.host,
            port=host.port,
        )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        self.flows.closeAll()
        if port is not None:
            return port.stopListening()
        return None
