"""
Transparent mode: the backend connection's source address is the client's,
as HAProxy's C{source 0.0.0.0 usesrc client} and sslh's C{--transparent}
make it, for backends that read neither a PROXY header nor HTTP headers.

Two halves live here.  L{TransparentSource} makes the backend socket: it
sets C{IP_TRANSPARENT} (or C{IPV6_TRANSPARENT}) and binds the client's
address, and its port where that is free, before the one C{connect()} of
L{demux._dial.SocketDial}.  What it cannot do (no capability, a client and
a backend of different families) refuses the connection with one log line
per route a minute, not a line per connection: a backend that trusts or
bans source addresses must never see demux's own address in the client's
place.

The preflight (L{preflight}, for C{twistd demux --check}) says what else
the kernel needs, since a transparent connect without it does not fail but
hangs: the backend's replies are addressed to the client and leave for it
unless a firewall mark and a policy route deliver them to demux's socket.
Each check is a small function of what it reads (C{/proc}, C{ip -j rule},
C{ip -j route show table N}, C{nft -j list ruleset}, C{iptables-save}), so
that canned outputs test them.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import re
import socket
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.internet.error import ConnectError, TimeoutError
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._dial import IAttempt, SocketDial
from ._twisted import tcp4Address

log = Logger(namespace="demux")

IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75

# The firewall mark and routing table that the documentation and the fixes
# --check prints use; any others do, as long as the rule, the route and the
# mark agree (the preflight finds them from the ip rules).
DEFAULT_MARK = 0x2321
DEFAULT_TABLE = 23201

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

WARN_EVERY = 60.0

Address = tuple[int, str, int]
"""
An address family, an IP address as text and a port.
"""


def backendAddress(endpoint: object) -> Address:
    """
    The address a transparent route dials, from its backend endpoint.

    @raise ValueError: with a sentence, for an endpoint that is not a
        C{tcp:} endpoint to an IP address with no C{bindAddress} (a host
        name could resolve to either family, and demux binds the source
        address itself).
    """
    tcp = tcp4Address(endpoint)
    if tcp is None or not isinstance(tcp.host, str):
        raise ValueError("needs tcp: backends")
    try:
        address = ipaddress.ip_address(tcp.host)
    except ValueError:
        raise ValueError("needs backends at IP addresses, not host names") from None
    if tcp.bindAddress is not None:
        raise ValueError(
            "binds the client's address itself, so a backend cannot have bindAddress"
        )
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return family, str(address), int(tcp.port)


def clientAddress(peer: IAddress) -> Address | None:
    """
    The client's address to bind, from L{demux.ConnectionInfo.peer}
    (an IPv4 client of an IPv6 socket, C{::ffff:192.0.2.7}, as IPv4); or
    L{None} for a client with no IP address (a UNIX socket).
    """
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return family, str(address), port


def setTransparent(sock: socket.socket) -> None:
    """
    Let C{sock} bind an address that is not this host's.

    @raise OSError: C{EPERM} without C{CAP_NET_ADMIN} or C{CAP_NET_RAW}.
    """
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)


def transparentSocket(
    client: Address, makeSocket: Callable[[int], socket.socket] | None = None
) -> socket.socket:
    """
    A non-blocking TCP socket with the transparent option, bound to the
    client's address and port, or to the address and a port of the kernel's
    choosing if that port is taken here (as C{usesrc client} does).

    @param makeSocket: makes the socket of a family (for tests).
    @raise OSError: if the option cannot be set or the address not bound.
    """
    family, host, port = client
    sock = (makeSocket or _tcpSocket)(family)
    try:
        sock.setblocking(False)
        setTransparent(sock)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE or port == 0:
                raise
            sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _tcpSocket(family: int) -> socket.socket:
    return socket.socket(family, socket.SOCK_STREAM)


@define(eq=False)
class _Warned:
    last: float
    since: int = 0


@define(eq=False)
class TransparentSource:
    """
    What a transparent route keeps: how to make its backend sockets, and
    when it last logged each kind of trouble, so that a missing capability
    costs one line a minute rather than one per connection.
    """

    makeSocket: Callable[[int], socket.socket] | None = None
    warnEvery: float = WARN_EVERY
    _warned: dict[str, _Warned] = field(factory=dict, alias="_warned")

    def dial(
        self,
        endpoint: Any,
        peer: IAddress,
        route: str,
        factory: Any,
        failed: Callable[[Failure], None],
        timeout: float,
        clock: IReactorTime,
    ) -> _Attempt | None:
        """
        An unstarted attempt to reach C{endpoint} from the client's address,
        or L{None} (and a log line, at most one a minute for the route and
        the reason) when the connection has to be refused.
        """
        backend = backendAddress(endpoint)
        client = clientAddress(peer)
        if client is None:
            self.warn(
                clock, route, "no-ip",
                f"a client with no IP address ({peer}) cannot be the source",
            )
            return None
        if client[0] != backend[0]:
            self.warn(
                clock, route, "family",
                f"an IPv{_version(client[0])} client cannot be the source of a "
                f"connection to an IPv{_version(backend[0])} backend "
                f"({tcp4Address(endpoint).host})",  # type: ignore[union-attr]
            )
            return None
        try:
            sock = transparentSocket(client, self.makeSocket)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                why = (
                    "cannot set IP_TRANSPARENT: demux needs CAP_NET_ADMIN "
                    "(or CAP_NET_RAW)"
                )
            else:
                why = f"cannot bind the client's address {client[1]}: {e.strerror}"
            self.warn(clock, route, f"socket-{e.errno}", why)
            return None

        def dialFailed(reason: Failure) -> None:
            if reason.check(TimeoutError):
                # The SYN went out from the client's address; the answer
                # went to the client instead of to demux.
                self.warn(
                    clock, route, "timeout",
                    "backend did not answer: are its replies marked and "
                    "routed back to demux? (twistd demux --check says)",
                    refusing=False,
                )
            failed(reason)

        return _Attempt(
            tcp4Address(endpoint).reactor,  # type: ignore[union-attr]
            (backend[1], backend[2]),
            factory,
            dialFailed,
            timeout,
            client,
            sock,
            self.makeSocket,
        )

    def warn(
        self,
        clock: IReactorTime,
        route: str,
        kind: str,
        why: str,
        refusing: bool = True,
    ) -> None:
        """
        Log C{why} for C{route}, unless the same kind was logged less than
        C{warnEvery} seconds ago; the next line counts those left out.
        """
        now = clock.seconds()
        warned = self._warned.get(kind)
        if warned is not None and now - warned.last < self.warnEvery:
            warned.since += 1
            return
        more = ""
        if warned is not None and warned.since:
            more = f" ({warned.since} more since the last line)"
        self._warned[kind] = _Warned(now)
        action = "; connection refused" if refusing else ""
        log.warn(
            "{text}",
            text=f"route={route} transparent: {why}{action}{more}",
            route=route,
            transparent=kind,
        )


@implementer(IAttempt)
class _Attempt:
    """
    One transparent connection attempt: an L{demux._dial.IAttempt}.

    If the connect fails because a connection from the client's address and
    port to the backend is still closing here (C{TIME_WAIT}, when a client
    reuses its port soon), it is tried once more from a port of the
    kernel's choosing: that is one client's bad luck, not the backend's
    failure, and must not mark the backend down for everyone.
    """

    def __init__(
        self,
        reactor: Any,
        address: tuple[str, int],
        factory: Any,
        failed: Callable[[Failure], None],
        timeout: float,
        client: Address,
        sock: socket.socket,
        makeSocket: Callable[[int], socket.socket] | None,
    ) -> None:
        self._args = (reactor, address, factory, self._failed, timeout)
        self._onFailed = failed
        self._client = client
        self._makeSocket = makeSocket
        self._retry = client[2] != 0
        self._dial = SocketDial(*self._args, sock=sock)

    @property
    def state(self) -> str:
        return self._dial.state

    def start(self) -> None:
        self._dial.start()

    def stopConnecting(self) -> None:
        self._dial.stopConnecting()

    def abandon(self) -> None:
        """
        Give the attempt up, quietly (L{demux._dial.IAttempt}).
        """
        self._dial.abandon()

    def _failed(self, reason: Failure) -> None:
        if (
            self._retry
            and reason.check(ConnectError)
            and getattr(reason.value, "osError", None)
            in (errno.EADDRNOTAVAIL, errno.EADDRINUSE)
        ):
            self._retry = False
            family, host, _ = self._client
            try:
                sock = transparentSocket((family, host, 0), self._makeSocket)
            except OSError:
                self._onFailed(reason)
                return
            self._dial = SocketDial(*self._args, sock=sock)
            self._dial.start()
            return
        self._onFailed(reason)


def _version(family: int) -> int:
    return 6 if family == socket.AF_INET6 else 4


# The preflight.


@frozen
class Missing:
    """
    One thing a transparent route needs that is not there.

    @ivar what: what is missing, as a phrase.
    @ivar fix: the commands that add it, one a line.
    @ivar routes: the routes that need it.
    """

    what: str
    fix: tuple[str, ...]
    routes: tuple[str, ...] = ()


@frozen
class TransparentRoute:
    """
    A transparent route as the preflight sees it: its name and its
    backends' addresses.
    """

    name: str
    backends: tuple[Address, ...]


def capabilityMissing(status: str) -> Missing | None:
    """
    From the text of C{/proc/self/status}: is the capability to set
    C{IP_TRANSPARENT} missing?
    """
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)\s*$", status, re.M)
    effective = int(match.group(1), 16) if match else 0
    if effective & (1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW):
        return None
    return Missing(
        "the capability CAP_NET_ADMIN (or CAP_NET_RAW), to set IP_TRANSPARENT",
        (
            "run demux as root, or under systemd with "
            "AmbientCapabilities=CAP_NET_ADMIN and "
            "CapabilityBoundingSet=CAP_NET_ADMIN (see contrib/demux.service)",
        ),
    )


def markRules(rules: object) -> list[tuple[int, int, int | str]]:
    """
    From C{ip -j rule}: the rules that look up a table for marked packets,
    as (mark, mask, table), in priority order.
    """
    found: list[tuple[int, int, int | str]] = []
    if not isinstance(rules, list):
        return found
    for rule in rules:
        if not isinstance(rule, dict) or "fwmark" not in rule:
            continue
        if rule.get("action", "unicast") not in ("unicast", None):
            continue
        try:
            mark = int(str(rule["fwmark"]), 0)
            mask = int(str(rule.get("fwmask", "0xffffffff")), 0)
        except ValueError:
            continue
        table = rule.get("table", "main")
        found.append((mark, mask, int(table) if str(table).isdigit() else table))
    return found


def hasLocalRoute(routes: object) -> bool:
    """
    From C{ip -j route show table N}: does the table deliver every address
    locally (C{local default dev lo})?
    """
    if not isinstance(routes, list):
        return False
    return any(
        isinstance(r, dict)
        and r.get("type") == "local"
        and r.get("dst") in ("default", "0.0.0.0/0", "::/0")
        and r.get("dev") == "lo"
        for r in routes
    )


def routeLocalnetOn(value: str | None) -> bool:
    """
    From C{/proc/sys/net/ipv4/conf/all/route_localnet}: may packets from
    127.0.0.0/8 be routed to another address (the loopback backend's
    replies to the client's address)?
    """
    return value is not None and value.strip() == "1"


def _expressionCovers(expr: object, family: int, host: str, port: int) -> bool:
    """
    Whether one nftables match expression lets the backend's replies (from
    C{host}, port C{port}) through; expressions it does not understand do.
    """
    if not isinstance(expr, dict) or "match" not in expr:
        return True
    m = expr["match"]
    left, right, op = m.get("left"), m.get("right"), m.get("op", "==")
    payload = left.get("payload") if isinstance(left, dict) else None
    if not isinstance(payload, dict):
        return True
    name, protocol = payload.get("field"), payload.get("protocol")
    if name == "sport" and protocol in ("tcp", "th"):
        values = _values(right)
        if values is None or op not in ("==", "in"):
            return True
        return any(
            v == port or (isinstance(v, tuple) and v[0] <= port <= v[1])
            for v in values
        )
    if name == "saddr" and protocol in ("ip", "ip6"):
        if (protocol == "ip6") != (family == socket.AF_INET6):
            return False
        values = _values(right)
        if values is None or op not in ("==", "in"):
            return True
        for v in values:
            if isinstance(v, str):
                try:
                    if ipaddress.ip_address(host) in ipaddress.ip_network(v, False):
                        return True
                except ValueError:
                    continue
        return False
    return True


def _values(right: object) -> list[Any] | None:
    """
    The values of an nftables match's right side: a value, a prefix, a
    range or an anonymous set of them; L{None} for what it cannot read (a
    named set).
    """
    items = right["set"] if isinstance(right, dict) and "set" in right else [right]
    values: list[Any] = []
    for item in items:
        if isinstance(item, (int, str)):
            values.append(item)
        elif isinstance(item, dict) and "prefix" in item:
            values.append(f"{item['prefix']['addr']}/{item['prefix']['len']}")
        elif isinstance(item, dict) and "range" in item:
            values.append(tuple(item["range"]))
        else:
            return None
    return values


def _setsMark(expr: object, mark: int, mask: int) -> bool:
    if not isinstance(expr, dict) or "mangle" not in expr:
        return False
    mangle = expr["mangle"]
    key = mangle.get("key")
    if not (isinstance(key, dict) and key.get("meta", {}).get("key") == "mark"):
        return False
    value = mangle.get("value")
    if isinstance(value, dict) and "|" in value:
        value = next((v for v in value["|"] if isinstance(v, int)), None)
    return isinstance(value, int) and value & mask == mark & mask


def nftMarks(
    ruleset: object, hook: str, mark: int, mask: int, backend: Address
) -> bool:
    """
    From C{nft -j list ruleset}: does a rule in a chain on C{hook}
    (C{"output"} for a backend on this host, C{"prerouting"} for one on
    another) set the mark on the backend's replies?  An output chain must
    be of type C{route}, or the new mark does not reroute the packet.
    """
    if not isinstance(ruleset, dict):
        return False
    family, host, port = backend
    chains = set()
    items = [i for i in ruleset.get("nftables", []) if isinstance(i, dict)]
    for item in items:
        chain = item.get("chain")
        if not isinstance(chain, dict) or chain.get("hook") != hook:
            continue
        if chain.get("family") not in ("inet", "ip" if family == socket.AF_INET else "ip6"):
            continue
        if hook == "output" and chain.get("type") != "route":
            continue
        chains.add((chain.get("family"), chain.get("table"), chain.get("name")))
    for item in items:
        rule = item.get("rule")
        if not isinstance(rule, dict):
            continue
        if (rule.get("family"), rule.get("table"), rule.get("chain")) not in chains:
            continue
        exprs = rule.get("expr", [])
        if any(_setsMark(e, mark, mask) for e in exprs) and all(
            _expressionCovers(e, family, host, port) for e in exprs
        ):
            return True
    return False


def iptablesMarks(
    save: str | None, chain: str, mark: int, mask: int, backend: Address
) -> bool:
    """
    From C{iptables-save -t mangle} (or C{ip6tables-save}): does a rule of
    C{chain} (C{OUTPUT} or C{PREROUTING}) set the mark on the backend's
    replies?
    """
    family, host, port = backend
    for line in (save or "").splitlines():
        words = line.split()
        if words[:2] != ["-A", chain] or "MARK" not in words:
            continue
        options = dict(zip(words[2::], words[3::], strict=False))
        value = options.get("--set-mark") or options.get("--set-xmark")
        if value is None:
            continue
        try:
            setValue = int(value.split("/")[0], 0)
        except ValueError:
            continue
        if setValue & mask != mark & mask:
            continue
        sport = options.get("--sport")
        if sport is not None and sport != str(port):
            continue
        source = options.get("-s")
        if source is not None:
            try:
                if ipaddress.ip_address(host) not in ipaddress.ip_network(source, False):
                    continue
            except ValueError:
                continue
        return True
    return False


def localAddresses(addresses: object) -> set[str]:
    """
    From C{ip -j addr}: this host's addresses.
    """
    found: set[str] = set()
    if not isinstance(addresses, list):
        return found
    for link in addresses:
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            if isinstance(info, dict) and isinstance(info.get("local"), str):
                found.add(info["local"])
    return found


Run = Callable[[Sequence[str]], "str | None"]
ReadFile = Callable[[str], "str | None"]


def runCommand(command: Sequence[str]) -> str | None:
    """
    The output of C{command}, or L{None} if it cannot be run or fails.
    """
    try:
        result = subprocess.run(
            list(command), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def readFile(path: str) -> str | None:
    """
    The text of C{path}, or L{None} if it cannot be read.
    """
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _json(text: str | None) -> object:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def preflight(
    routes: Iterable[TransparentRoute],
    run: Run = runCommand,
    read: ReadFile = readFile,
) -> list[Missing]:
    """
    What the transparent C{routes} need and do not have, each with the
    commands that add it; empty when all is in place.

    @param run: runs a command and gives its output (L{None} if it fails).
    @param read: reads a file's text (L{None} if it cannot).
    """
    found: dict[tuple[str, tuple[str, ...]], list[str]] = {}

    def missing(item: Missing | None, route: str) -> None:
        if item is not None:
            names = found.setdefault((item.what, item.fix), [])
            if route not in names:
                names.append(route)

    routes = list(routes)
    if not routes:
        return []
    status = read("/proc/self/status") or ""
    local = localAddresses(_json(run(["ip", "-j", "addr", "show"])))
    cache: dict[tuple[str, ...], str | None] = {}

    def cached(*command: str) -> str | None:
        if command not in cache:
            cache[command] = run(command)
        return cache[command]

    for route in routes:
        missing(capabilityMissing(status), route.name)
        for backend in route.backends:
            for item in _backendMissing(backend, local, cached, read):
                missing(item, route.name)
    return [Missing(what, fix, tuple(names)) for (what, fix), names in found.items()]


def _backendMissing(
    backend: Address,
    local: set[str],
    run: Callable[..., str | None],
    read: ReadFile,
) -> list[Missing]:
    family, host, port = backend
    six = family == socket.AF_INET6
    ip = "ip -6" if six else "ip"
    v = "-6" if six else "-4"
    address = ipaddress.ip_address(host)
    here = address.is_loopback or host in local
    items: list[Missing] = []

    rules = markRules(_json(run("ip", v, "-j", "rule")))
    mark, mask = DEFAULT_MARK, 0xFFFFFFFF
    table: int | str = DEFAULT_TABLE
    chosen = None
    for rule in rules:
        if hasLocalRoute(_json(run("ip", v, "-j", "route", "show", "table", str(rule[2])))):
            chosen = rule
            break
    if chosen is None and rules:
        chosen = rules[0]
    if chosen is None:
        items.append(
            Missing(
                f"an IPv{6 if six else 4} ip rule that looks up a table of its "
                "own for marked packets",
                (f"{ip} rule add fwmark {mark:#x} lookup {table}",),
            )
        )
    else:
        mark, mask, table = chosen
    if not hasLocalRoute(_json(run("ip", v, "-j", "route", "show", "table", str(table)))):
        items.append(
            Missing(
                f"an IPv{6 if six else 4} local route for every address in "
                f"table {table}",
                (f"{ip} route add local default dev lo table {table}",),
            )
        )
    if (
        isinstance(address, ipaddress.IPv4Address)
        and address.is_loopback
        and not routeLocalnetOn(read("/proc/sys/net/ipv4/conf/all/route_localnet"))
    ):
        items.append(
            Missing(
                "net.ipv4.conf.all.route_localnet = 1, for replies from a "
                "loopback backend to reach the client's address",
                ("sysctl -w net.ipv4.conf.all.route_localnet=1",),
            )
        )
    hook, chain = ("output", "OUTPUT") if here else ("prerouting", "PREROUTING")
    save = "ip6tables-save" if six else "iptables-save"
    if not nftMarks(
        _json(run("nft", "-j", "list", "ruleset")), hook, mark, mask, backend
    ) and not iptablesMarks(run(save, "-t", "mangle"), chain, mark, mask, backend):
        saddr = "ip6 saddr" if six else "ip saddr"
        kind = "route" if here else "filter"
        where = "this host" if here else "another host"
        items.append(
            Missing(
                f"a firewall rule that marks the replies of backend "
                f"{_hostPort(host, port)} (on {where}) with {mark:#x}",
                (
                    "nft add table inet demux",
                    f"nft add chain inet demux {hook} '{{ type {kind} hook {hook} "
                    "priority mangle; }'",
                    f"nft add rule inet demux {hook} {saddr} {host} tcp sport "
                    f"{port} meta mark set {mark:#x}",
                    f"(or: {'ip6tables' if six else 'iptables'} -t mangle -A "
                    f"{chain} -s {host} -p tcp --sport {port} -j MARK "
                    f"--set-mark {mark:#x})",
                ),
            )
        )
    return items


def _hostPort(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def transparentRoutes(table: Any) -> list[TransparentRoute]:
    """
    The transparent routes of a route table, for L{preflight}.
    """
    found = []
    for route in table.routes:
        target = route.target
        if getattr(target, "transparent", None) is None:
            continue
        found.append(
            TransparentRoute(
                route.name,
                tuple(backendAddress(b.endpoint) for b in target.backends),
            )
        )
    return found


def report(table: Any, run: Run = runCommand, read: ReadFile = readFile) -> list[str]:
    """
    The lines C{--check} prints about the table's transparent routes: one
    per missing piece, naming the routes that need it, and the commands
    that add it below; empty when nothing is missing (or nothing is
    transparent).
    """
    lines = []
    for item in preflight(transparentRoutes(table), run, read):
        lines.append(f"transparent ({', '.join(item.routes)}): missing {item.what}")
        lines.extend(f"    {command}" for command in item.fix)
    return lines
