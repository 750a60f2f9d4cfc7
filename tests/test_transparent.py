"""
Tests for transparent mode (C{transparent = true}): the backend socket's
options and bind, the preflight on canned outputs, and, as root in network
namespaces of their own, a real C{twistd demux} whose backends see the
client's address.

The namespaces are C{dmx-tp-<pid>-front} (demux and the backends on its
host), C{dmx-tp-<pid>-client}, joined to it by a veth pair on 10.232.1.0/24
and fd32:1::/64, and C{dmx-tp-<pid>-back} (a backend on another host, whose
route to the clients is demux's host), on 10.232.2.0/24 and fd32:2::/64;
the policy routing uses table 23201 and mark 0x2321 (the
documented defaults).  Everything the tests add lives in those namespaces,
so deleting them removes it all.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from demux import ConnectionInfo
from demux._config import configFromDict
from demux._errors import ConfigError
from demux._plugins import matcherFactories
from demux._targets import BackendTarget
from demux._transparent import (
    DEFAULT_MARK,
    DEFAULT_TABLE,
    IP_TRANSPARENT,
    IPV6_TRANSPARENT,
    TransparentRoute,
    TransparentSource,
    backendAddress,
    capabilityMissing,
    clientAddress,
    hasLocalRoute,
    iptablesMarks,
    markRules,
    nftMarks,
    preflight,
    report,
    transparentSocket,
)

from ._process import freePort, twistdCommand

V4, V6 = socket.AF_INET, socket.AF_INET6


class FakeSocket:
    """
    A socket that records what is done to it, and fails binds to the ports
    in C{busy} with C{EADDRINUSE} and transparent options with C{optError}.
    """

    def __init__(
        self,
        family: int,
        busy: Sequence[int] = (),
        optError: int | None = None,
        connectError: int = errno.EINPROGRESS,
    ) -> None:
        self.family = family
        self.connectError = connectError
        self.busy = busy
        self.optError = optError
        self.options: list[tuple[int, int, int]] = []
        self.bound: list[tuple[str, int]] = []
        self.connects: list[tuple[str, int]] = []
        self.closed = False
        self.blocking = True

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def setsockopt(self, level: int, option: int, value: int) -> None:
        if self.optError is not None:
            raise OSError(self.optError, os.strerror(self.optError))
        self.options.append((level, option, value))

    def bind(self, address: tuple[str, int]) -> None:
        self.bound.append(address)
        if address[1] in self.busy:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))

    def connect_ex(self, address: tuple[str, int]) -> int:
        self.connects.append(address)
        # The 4-tuple clash only happens from the client's own port.
        if self.bound[-1][1] != 0:
            return self.connectError
        return errno.EINPROGRESS

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self.closed = True


class SocketMaker:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.made: list[FakeSocket] = []

    def __call__(self, family: int) -> Any:
        sock = FakeSocket(family, **self.kwargs)
        self.made.append(sock)
        return sock


class AddressTests(SynchronousTestCase):
    """
    Which backends and clients a transparent route can work with.
    """

    def test_backends(self) -> None:
        reactor = MemoryReactorClock()
        self.assertEqual(
            backendAddress(TCP4ClientEndpoint(reactor, "127.0.0.1", 22)),
            (V4, "127.0.0.1", 22),
        )
        self.assertEqual(
            backendAddress(TCP4ClientEndpoint(reactor, "fd32:0:0::1", 22)),
            (V6, "fd32::1", 22),
        )
        for endpoint, why in [
            (TCP4ClientEndpoint(reactor, "example.com", 22), "host names"),
            (UNIXClientEndpoint(reactor, "/run/x"), "tcp:"),
            (
                TCP4ClientEndpoint(reactor, "127.0.0.1", 22, bindAddress=("::", 0)),
                "bindAddress",
            ),
        ]:
            with self.assertRaises(ValueError) as e:
                backendAddress(endpoint)
            self.assertIn(why, str(e.exception))

    def test_clients(self) -> None:
        self.assertEqual(
            clientAddress(IPv4Address("TCP", "192.0.2.7", 4000)),
            (V4, "192.0.2.7", 4000),
        )
        self.assertEqual(
            clientAddress(IPv6Address("TCP", "2001:db8::7", 4000)),
            (V6, "2001:db8::7", 4000),
        )
        # An IPv4 client of a dual-stack listener is an IPv4 client.
        self.assertEqual(
            clientAddress(IPv6Address("TCP", "::ffff:192.0.2.7", 4000)),
            (V4, "192.0.2.7", 4000),
        )
        self.assertIsNone(clientAddress(UNIXAddress(b"/run/x")))


class SocketTests(SynchronousTestCase):
    """
    The backend socket: the transparent option, then the client's address.
    """

    def test_ipv4(self) -> None:
        maker = SocketMaker()
        sock: Any = transparentSocket((V4, "192.0.2.7", 4000), maker)
        self.assertEqual(sock.options, [(socket.SOL_IP, IP_TRANSPARENT, 1)])
        self.assertEqual(sock.bound, [("192.0.2.7", 4000)])
        self.assertFalse(sock.blocking)
        self.assertEqual(IP_TRANSPARENT, 19)

    def test_ipv6(self) -> None:
        sock: Any = transparentSocket((V6, "2001:db8::7", 4000), SocketMaker())
        self.assertEqual(sock.options, [(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)])
        self.assertEqual(IPV6_TRANSPARENT, 75)
        self.assertEqual(sock.bound, [("2001:db8::7", 4000)])

    def test_portTaken(self) -> None:
        """
        When the client's port is taken here, the kernel picks one.
        """
        sock: Any = transparentSocket((V4, "192.0.2.7", 4000), SocketMaker(busy=[4000]))
        self.assertEqual(sock.bound, [("192.0.2.7", 4000), ("192.0.2.7", 0)])

    def test_noCapability(self) -> None:
        maker = SocketMaker(optError=errno.EPERM)
        with self.assertRaises(OSError) as e:
            transparentSocket((V4, "192.0.2.7", 4000), maker)
        self.assertEqual(e.exception.errno, errno.EPERM)
        self.assertTrue(maker.made[0].closed)
        self.assertEqual(maker.made[0].bound, [])


class DialTests(SynchronousTestCase):
    """
    L{TransparentSource.dial}: an attempt from the client's address, or a
    refusal logged once a minute per kind.
    """

    def dial(
        self, source: TransparentSource, reactor: MemoryReactorClock, backend: str,
        peer: Any, failures: list[Any] | None = None,
    ) -> Any:
        failures = [] if failures is None else failures
        endpoint = TCP4ClientEndpoint(reactor, backend, 22)
        return source.dial(endpoint, peer, "ssh", None, failures.append, 5.0, reactor)

    def test_dials(self) -> None:
        maker = SocketMaker()
        source = TransparentSource(maker)
        reactor = MemoryReactorClock()
        dial = self.dial(source, reactor, "10.0.0.1", IPv4Address("TCP", "192.0.2.7", 4000))
        dial.start()
        sock = maker.made[0]
        self.assertEqual(sock.bound, [("192.0.2.7", 4000)])
        self.assertEqual(sock.connects[0], ("10.0.0.1", 22))
        self.assertEqual(dial.state, "connecting")
        dial.stopConnecting()
        self.assertTrue(sock.closed)

    def test_clientPortStillClosing(self) -> None:
        """
        A connect from the client's port that clashes with a connection
        still closing is tried once more from another port, and the
        backend is not reported as failed.
        """
        maker = SocketMaker(connectError=errno.EADDRNOTAVAIL)
        source = TransparentSource(maker)
        reactor = MemoryReactorClock()
        failures: list[Any] = []
        dial = self.dial(
            source, reactor, "10.0.0.1", IPv4Address("TCP", "192.0.2.7", 4000), failures
        )
        assert dial is not None
        dial.start()
        self.assertEqual(
            [s.bound for s in maker.made],
            [[("192.0.2.7", 4000)], [("192.0.2.7", 0)]],
        )
        self.assertTrue(maker.made[0].closed)
        self.assertEqual(maker.made[1].connects, [("10.0.0.1", 22)] * 2)
        self.assertEqual(failures, [])
        self.assertEqual(dial.state, "connecting")
        dial.stopConnecting()
        self.assertTrue(maker.made[1].closed)

    def test_otherConnectErrors(self) -> None:
        maker = SocketMaker(connectError=errno.ECONNREFUSED)
        source = TransparentSource(maker)
        reactor = MemoryReactorClock()
        failures: list[Any] = []
        dial = self.dial(
            source, reactor, "10.0.0.1", IPv4Address("TCP", "192.0.2.7", 4000), failures
        )
        assert dial is not None
        dial.start()
        self.assertEqual(len(maker.made), 1)
        self.assertEqual(len(failures), 1)
        self.assertEqual(dial.state, "disconnected")

    def test_timeoutHint(self) -> None:
        """
        A backend that never answers a transparent connect most likely
        answered the client instead: the log says where to look, once.
        """
        source = TransparentSource(SocketMaker())
        reactor = MemoryReactorClock()
        failures: list[Any] = []
        endpoint = TCP4ClientEndpoint(reactor, "10.0.0.1", 22)
        with capturedLogs() as events:
            for _ in range(2):
                dial = source.dial(
                    endpoint, IPv4Address("TCP", "192.0.2.7", 4000), "ssh", None,
                    failures.append, 5.0, reactor,
                )
                assert dial is not None
                dial.start()
                reactor.advance(5)
        self.assertEqual(len(failures), 2)
        texts = [e["text"] for e in events if "text" in e]
        self.assertEqual(len(texts), 1, texts)
        self.assertIn("are its replies marked and routed back to demux?", texts[0])
        self.assertNotIn("refused", texts[0])

    def test_refusedOnceAMinute(self) -> None:
        source = TransparentSource(SocketMaker(optError=errno.EPERM))
        reactor = MemoryReactorClock()
        peer = IPv4Address("TCP", "192.0.2.7", 4000)
        with capturedLogs() as events:
            for _ in range(3):
                self.assertIsNone(self.dial(source, reactor, "10.0.0.1", peer))
            reactor.advance(61)
            self.assertIsNone(self.dial(source, reactor, "10.0.0.1", peer))
        texts = [e["text"] for e in events if "text" in e]
        self.assertEqual(len(texts), 2, texts)
        self.assertIn("route=ssh transparent: cannot set IP_TRANSPARENT", texts[0])
        self.assertIn("CAP_NET_ADMIN", texts[0])
        self.assertIn("connection refused", texts[0])
        self.assertIn("(2 more since the last line)", texts[1])

    def test_familyMismatch(self) -> None:
        maker = SocketMaker()
        source = TransparentSource(maker)
        reactor = MemoryReactorClock()
        with capturedLogs() as events:
            result = self.dial(
                source, reactor, "fd32::1", IPv6Address("TCP", "::ffff:192.0.2.7", 1)
            )
        self.assertIsNone(result)
        self.assertEqual(maker.made, [])
        texts = [e["text"] for e in events if "text" in e]
        self.assertIn("an IPv4 client cannot be the source", texts[0])


class RelayTests(SynchronousTestCase):
    """
    A transparent L{BackendTarget} dials through its source, and closes the
    client's connection when the source refuses.
    """

    def handOff(self, maker: SocketMaker) -> StringTransport:
        reactor = MemoryReactorClock()
        target = BackendTarget(
            TCP4ClientEndpoint(reactor, "10.0.0.1", 22), "tcp:10.0.0.1:22",
            transparent=TransparentSource(maker),
        )
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4000))
        info = ConnectionInfo(reactor, transport.getPeer(), transport.getHost(), "ssh")
        with capturedLogs():
            target.handOff(transport, b"SSH-2.0-x\r\n", info)
        return transport

    def test_dials(self) -> None:
        maker = SocketMaker()
        transport = self.handOff(maker)
        [sock] = maker.made
        self.assertEqual(sock.bound, [("192.0.2.7", 4000)])
        self.assertEqual(sock.connects[0], ("10.0.0.1", 22))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.producerState, "paused")

    def test_refuses(self) -> None:
        transport = self.handOff(SocketMaker(optError=errno.EPERM))
        self.assertTrue(transport.disconnecting)


class ConfigTests(SynchronousTestCase):
    def load(self, **route: Any) -> Any:
        data = {
            "listen": ["tcp:0"],
            "routes": [{"name": "ssh", "match": {"ssh": {}}, **route}],
        }
        return configFromDict(data, MemoryReactorClock(), "demux.toml", matcherFactories())

    def test_transparent(self) -> None:
        config = self.load(backend="tcp:127.0.0.1:22", transparent=True)
        self.assertIsInstance(config.table.routes[0].target.transparent, TransparentSource)
        config = self.load(backend="tcp:127.0.0.1:22")
        self.assertIsNone(config.table.routes[0].target.transparent)

    def test_errors(self) -> None:
        for route, text in [
            ({"backend": "tcp:127.0.0.1:22", "transparent": "yes"}, "true or false"),
            ({"backend": "tcp:example.com:22", "transparent": True}, "host names"),
            ({"backend": "unix:/run/x", "transparent": True}, "tcp:"),
            ({"local": "demux._demo.echo", "transparent": True}, "needs a backend"),
        ]:
            with self.assertRaises(ConfigError) as e:
                self.load(**route)
            self.assertIn("route", str(e.exception))
            self.assertIn(text, str(e.exception))


# The preflight, on canned outputs.

STATUS_ROOT = "Name:\tpython3\nCapEff:\t000001ffffffffff\n"
STATUS_NONE = "Name:\tpython3\nCapEff:\t0000000000000000\n"
RULES = [
    {"priority": 0, "src": "all", "table": "local"},
    {"priority": 32765, "src": "all", "fwmark": "0x2321", "table": "23201"},
    {"priority": 32766, "src": "all", "table": "main"},
]
LOCAL_ROUTE = [{"type": "local", "dst": "default", "dev": "lo", "scope": "host"}]
ADDRESSES = [
    {"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}, {"local": "::1"}]},
    {"ifname": "eth0", "addr_info": [{"local": "10.232.1.1"}]},
]


def nftRuleset(hook: str, kind: str, sport: int, saddr: str, mark: int) -> Any:
    return {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "demux"}},
            {"chain": {"family": "inet", "table": "demux", "name": "c",
                       "type": kind, "hook": hook, "prio": -150}},
            {"rule": {"family": "inet", "table": "demux", "chain": "c", "expr": [
                {"match": {"op": "==", "left": {"payload": {
                    "protocol": "ip", "field": "saddr"}}, "right": saddr}},
                {"match": {"op": "==", "left": {"payload": {
                    "protocol": "tcp", "field": "sport"}}, "right": sport}},
                {"mangle": {"key": {"meta": {"key": "mark"}}, "value": mark}},
            ]}},
        ]
    }


class Machine:
    """
    Canned outputs of the commands and files the preflight reads.
    """

    def __init__(self) -> None:
        self.status = STATUS_ROOT
        self.localnet: str | None = "1\n"
        self.rules: Any = RULES
        self.routes: Any = {"23201": LOCAL_ROUTE}
        self.nft: Any = nftRuleset("output", "route", 22, "127.0.0.1", 0x2321)
        self.iptables = ""

    def run(self, command: Sequence[str]) -> str | None:
        command = list(command)
        if command[:3] == ["ip", "-j", "addr"]:
            return json.dumps(ADDRESSES)
        if command[0] == "ip" and command[2:4] == ["-j", "rule"]:
            return json.dumps(self.rules)
        if command[0] == "ip" and command[2:5] == ["-j", "route", "show"]:
            return json.dumps(self.routes.get(command[-1], []))
        if command[0] == "nft":
            return None if self.nft is None else json.dumps(self.nft)
        if command[0].endswith("tables-save"):
            return self.iptables
        raise AssertionError(f"unexpected command {command}")

    def read(self, path: str) -> str | None:
        if path == "/proc/self/status":
            return self.status
        if path.endswith("route_localnet"):
            return self.localnet
        raise AssertionError(f"unexpected file {path}")

    def missing(self, *backends: tuple[int, str, int]) -> list[str]:
        route = TransparentRoute("ssh", backends or ((V4, "127.0.0.1", 22),))
        return [m.what for m in preflight([route], self.run, self.read)]


class PreflightTests(SynchronousTestCase):
    def test_complete(self) -> None:
        self.assertEqual(Machine().missing(), [])

    def test_capability(self) -> None:
        self.assertIsNone(capabilityMissing(STATUS_ROOT))
        self.assertIsNone(capabilityMissing("CapEff:\t0000000000002000\n"))  # NET_RAW
        self.assertIsNotNone(capabilityMissing(STATUS_NONE))
        machine = Machine()
        machine.status = STATUS_NONE
        [what] = machine.missing()
        self.assertIn("CAP_NET_ADMIN", what)

    def test_rule(self) -> None:
        machine = Machine()
        machine.rules = RULES[::2]
        items = preflight(
            [TransparentRoute("ssh", ((V4, "127.0.0.1", 22),))], machine.run, machine.read
        )
        [item] = items
        self.assertIn("ip rule", item.what)
        self.assertEqual(item.fix, (f"ip rule add fwmark {DEFAULT_MARK:#x} lookup {DEFAULT_TABLE}",))
        self.assertEqual(item.routes, ("ssh",))

    def test_ruleFound(self) -> None:
        self.assertEqual(markRules(RULES), [(0x2321, 0xFFFFFFFF, 23201)])
        masked = [{"fwmark": "0x1", "fwmask": "0xff", "table": "100"}]
        self.assertEqual(markRules(masked), [(1, 0xFF, 100)])

    def test_otherMarkAndTable(self) -> None:
        """
        Whatever mark and table the ip rule names are the ones checked.
        """
        machine = Machine()
        machine.rules = [{"fwmark": "0x7", "table": "100"}]
        machine.routes = {"100": LOCAL_ROUTE}
        self.assertEqual(len(machine.missing()), 1)  # the mark is 0x2321
        machine.nft = nftRuleset("output", "route", 22, "127.0.0.1", 7)
        self.assertEqual(machine.missing(), [])

    def test_route(self) -> None:
        self.assertTrue(hasLocalRoute(LOCAL_ROUTE))
        self.assertFalse(hasLocalRoute([{"type": "unicast", "dst": "default", "dev": "lo"}]))
        machine = Machine()
        machine.routes = {}
        [what] = machine.missing()
        self.assertIn("local route", what)
        self.assertIn("table 23201", what)

    def test_routeLocalnet(self) -> None:
        machine = Machine()
        machine.localnet = "0\n"
        [what] = machine.missing()
        self.assertIn("route_localnet", what)
        # Not needed for a backend on another of this host's addresses.
        machine.nft = nftRuleset("output", "route", 22, "10.232.1.1", 0x2321)
        self.assertEqual(machine.missing((V4, "10.232.1.1", 22)), [])

    def test_mark(self) -> None:
        machine = Machine()
        for nft in [
            None,
            nftRuleset("output", "filter", 22, "127.0.0.1", 0x2321),  # no reroute
            nftRuleset("output", "route", 2222, "127.0.0.1", 0x2321),  # other port
            nftRuleset("output", "route", 22, "10.0.0.0/8", 0x2321),  # other source
            nftRuleset("output", "route", 22, "127.0.0.1", 0x2320),  # other mark
            nftRuleset("prerouting", "filter", 22, "127.0.0.1", 0x2321),  # remote hook
        ]:
            machine.nft = nft
            [what] = machine.missing()
            self.assertIn("marks the replies of backend 127.0.0.1:22", what)
        machine.nft = nftRuleset("output", "route", 22, "127.0.0.0/8", 0x2321)
        self.assertEqual(machine.missing(), [])

    def test_remoteMark(self) -> None:
        machine = Machine()
        machine.nft = nftRuleset("prerouting", "filter", 22, "192.0.2.5", 0x2321)
        self.assertEqual(machine.missing((V4, "192.0.2.5", 22)), [])
        machine.nft = nftRuleset("output", "route", 22, "192.0.2.5", 0x2321)
        [what] = machine.missing((V4, "192.0.2.5", 22))
        self.assertIn("on another host", what)

    def test_socketMatch(self) -> None:
        """
        The kernel's TPROXY recipe, one rule for every transparent socket's
        packets, counts for a backend on another host.
        """
        machine = Machine()
        machine.nft = {"nftables": [
            {"chain": {"family": "inet", "table": "t", "name": "c", "type": "filter",
                       "hook": "prerouting"}},
            {"rule": {"family": "inet", "table": "t", "chain": "c", "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                           "right": "tcp"}},
                {"match": {"op": "==", "left": {"socket": {"key": "transparent"}},
                           "right": 1}},
                {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 0x2321}},
            ]}},
        ]}
        self.assertEqual(machine.missing((V4, "192.0.2.5", 22)), [])

    def test_iptables(self) -> None:
        backend = (V4, "127.0.0.1", 22)
        save = (
            "*mangle\n:OUTPUT ACCEPT [0:0]\n"
            "-A OUTPUT -s 127.0.0.1/32 -p tcp -m tcp --sport 22 "
            "-j MARK --set-xmark 0x2321/0xffffffff\nCOMMIT\n"
        )
        self.assertTrue(iptablesMarks(save, "OUTPUT", 0x2321, 0xFFFFFFFF, backend))
        self.assertFalse(iptablesMarks(save, "PREROUTING", 0x2321, 0xFFFFFFFF, backend))
        self.assertFalse(iptablesMarks(save, "OUTPUT", 0x2321, 0xFFFFFFFF, (V4, "127.0.0.1", 23)))
        machine = Machine()
        machine.nft = None
        machine.iptables = save
        self.assertEqual(machine.missing(), [])

    def test_ipv6(self) -> None:
        machine = Machine()
        machine.nft = {"nftables": [
            {"chain": {"family": "ip6", "table": "t", "name": "c", "type": "route",
                       "hook": "output"}},
            {"rule": {"family": "ip6", "table": "t", "chain": "c", "expr": [
                {"match": {"op": "==", "left": {"payload": {
                    "protocol": "ip6", "field": "saddr"}}, "right": "::1"}},
                {"mangle": {"key": {"meta": {"key": "mark"}},
                            "value": {"|": [{"meta": {"key": "mark"}}, 0x2321]}}},
            ]}},
        ]}
        # No route_localnet for IPv6.
        machine.localnet = "0\n"
        self.assertEqual(machine.missing((V6, "::1", 22)), [])
        self.assertFalse(nftMarks(machine.nft, "output", 0x2321, 0xFFFFFFFF, (V4, "127.0.0.1", 22)))

    def test_report(self) -> None:
        config = ConfigTests.load(
            ConfigTests(), backend="tcp:127.0.0.1:22", transparent=True
        )
        machine = Machine()
        self.assertEqual(report(config.table, machine.run, machine.read), [])
        machine.localnet = "0"
        lines = report(config.table, machine.run, machine.read)
        self.assertEqual(
            lines,
            [
                "transparent (ssh): missing net.ipv4.conf.all.route_localnet = 1, "
                "for replies from a loopback backend to reach the client's address",
                "    sysctl -w net.ipv4.conf.all.route_localnet=1",
            ],
        )


# As root, in network namespaces.

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
PROGRAMS = ("ip", "nft", "setpriv")


def _missingProgram() -> str | None:
    for program in PROGRAMS:
        if shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return program
    return None


def inNamespace(name: str, function: Callable[[], T]) -> T:
    """
    Call C{function} in a thread that has entered network namespace
    C{name}: the sockets it makes belong to that namespace.
    """
    results: list[Any] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            results.append((True, function()))
        except BaseException as e:
            results.append((False, e))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    ok, value = results[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def sh(*command: str, check: bool = True) -> str:
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=30, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed: {result.stderr}")
    return result.stdout


class Network:
    """
    Three namespaces: C{front} (demux, its local backends and the policy
    routing), C{client} and C{back} (another host), each on a veth pair to
    C{front}.
    """

    FRONT4, CLIENT4 = "10.232.1.1", "10.232.1.2"
    FRONT6, CLIENT6 = "fd32:1::1", "fd32:1::2"
    GATEWAY4, BACK4 = "10.232.2.1", "10.232.2.2"
    GATEWAY6, BACK6 = "fd32:2::1", "fd32:2::2"
    MARK, TABLE = 0x2321, 23201

    def __init__(self) -> None:
        pid = os.getpid()
        self.front = f"dmx-tp-{pid}-front"
        self.client = f"dmx-tp-{pid}-client"
        self.back = f"dmx-tp-{pid}-back"

    def inFront(self, *command: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.front, *command, check=check)

    def create(self) -> None:
        pid = os.getpid()
        for ns in (self.front, self.client, self.back):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # Interface names have at most 15 characters.
        f, c, g, b = (f"dtp{pid}{end}" for end in "fcgb")
        sh("ip", "link", "add", f, "netns", self.front, "type", "veth",
           "peer", "name", c, "netns", self.client)
        sh("ip", "link", "add", g, "netns", self.front, "type", "veth",
           "peer", "name", b, "netns", self.back)
        for ns, dev, v4, v6 in [
            (self.front, f, self.FRONT4, self.FRONT6),
            (self.client, c, self.CLIENT4, self.CLIENT6),
            (self.front, g, self.GATEWAY4, self.GATEWAY6),
            (self.back, b, self.BACK4, self.BACK6),
        ]:
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        # The other host answers everyone through demux's host.
        sh("ip", "-n", self.back, "route", "add", "default", "via", self.GATEWAY4)
        sh("ip", "-n", self.back, "-6", "route", "add", "default", "via",
           self.GATEWAY6)

    def addRules(self) -> None:
        for v in ("-4", "-6"):
            sh("ip", "-n", self.front, v, "rule", "add", "fwmark", hex(self.MARK),
               "lookup", str(self.TABLE))

    def addRoutes(self) -> None:
        for v in ("-4", "-6"):
            sh("ip", "-n", self.front, v, "route", "add", "local", "default", "dev",
               "lo", "table", str(self.TABLE))

    def setLocalnet(self, value: int) -> None:
        self.inFront("sysctl", "-q", "-w", f"net.ipv4.conf.all.route_localnet={value}")

    def addMarks(self, backends: Sequence[tuple[str, int]]) -> None:
        """
        Mark the backends' replies: made here on output, those from the
        other host on input, as docs/transparent.rst says.
        """
        rules: dict[bool, str] = {True: "", False: ""}
        for host, port in backends:
            rules[host in (self.BACK4, self.BACK6)] += (
                f"  {'ip6' if ':' in host else 'ip'} saddr {host} tcp sport {port} "
                f"meta mark set {self.MARK:#x}\n"
            )
        script = (
            "table inet dmxtp {\n chain out {\n"
            "  type route hook output priority mangle;\n"
            f"{rules[False]} }}\n"
            " chain in {\n"
            "  type filter hook prerouting priority mangle;\n"
            f"{rules[True]} }}\n}}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.front, "nft", "-f", "-"],
            input=script, text=True, check=True, timeout=30,
        )

    def removeMarks(self) -> None:
        self.inFront("nft", "delete", "table", "inet", "dmxtp")

    def delete(self) -> None:
        # The veths, rules, routes, nft table and sysctls all go with them.
        for ns in (self.front, self.client, self.back):
            sh("ip", "netns", "delete", ns, check=False)


class PeerServer:
    """
    A backend that writes back the address of each connection's peer as
    C{host port\\n}, then closes; its socket is made in C{namespace}.
    """

    def __init__(self, namespace: str, host: str) -> None:
        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.bind((host, 0))
            sock.listen(16)
            return sock

        self.sock = inNamespace(namespace, listen)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(f"{peer[0]} {peer[1]}\n".encode())
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def network() -> Iterator[Network]:
    missing = _missingProgram()
    if missing is not None:
        pytest.skip(f"needs {missing} (tests/run installs it)")
    net = Network()
    try:
        net.create()
        net.addRules()
        net.addRoutes()
        net.setLocalnet(1)
        yield net
    finally:
        net.delete()


@contextmanager
def backends(net: Network) -> Iterator[dict[str, PeerServer]]:
    servers = {
        "lo4": PeerServer(net.front, "127.0.0.1"),
        "veth4": PeerServer(net.front, net.FRONT4),
        "lo6": PeerServer(net.front, "::1"),
        "veth6": PeerServer(net.front, net.FRONT6),
        "far4": PeerServer(net.back, net.BACK4),
        "far6": PeerServer(net.back, net.BACK6),
    }
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


def configFor(servers: dict[str, PeerServer]) -> str:
    """
    Routes by the first line (C{lo} or C{veth}) and the client's family,
    each to its own transparent backend, on a dual-stack listener.
    """
    text = 'listen = ["tcp6:{port}"]\n'
    for name, server in servers.items():
        host = server.host.replace(":", "\\\\:")
        allow = "fd32::/16" if name.endswith("6") else "10.232.0.0/16"
        text += (
            f'[[routes]]\nname = "{name}"\n'
            f'match.prefix = {{text = "{name[:-1]}\\n"}}\n'
            f'allow = ["{allow}"]\n'
            f'backend = "tcp:host={host}:port={server.port}"\n'
            "transparent = true\n"
        )
    return text


def ask(net: Network, host: str, port: int, line: bytes, bindPort: int = 0) -> tuple[str, int, str]:
    """
    From the client namespace, connect to demux, send C{line} and read what
    the backend says; return the client's own address and the answer.
    """

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.settimeout(10)
        if bindPort:
            sock.bind(("", bindPort))
        return sock

    sock = inNamespace(net.client, connect)
    with sock:
        sock.connect((host, port))
        me = sock.getsockname()
        sock.sendall(line)
        answer = b""
        while chunk := sock.recv(1024):
            answer += chunk
    return me[0], me[1], answer.decode()


def waitForDemux(net: Network, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        def attempt() -> None:
            with socket.create_connection((net.FRONT4, port), timeout=1):
                pass

        try:
            inNamespace(net.client, attempt)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def demuxIn(net: Network, config: str, prefix: Sequence[str] = ()) -> Iterator[Any]:
    from ._process import runDemux

    port = freePort()
    with runDemux(
        config, port=port, waitFor=None,
        prefix=["ip", "netns", "exec", net.front, *prefix],
    ) as demux:
        try:
            waitForDemux(net, port)
        except OSError:
            raise AssertionError(f"demux did not start:\n{demux.log()}") from None
        yield demux


def test_backendsSeeTheClient(network: Network) -> None:
    """
    Loopback and veth backends on demux's host and backends on another
    host, over IPv4 and IPv6, see the client's address and port as the
    source of demux's connection.
    """
    net = network
    with backends(net) as servers:
        net.addMarks([(s.host, s.port) for s in servers.values()])
        with demuxIn(net, configFor(servers)) as demux:
            for name, front in [
                ("lo4", net.FRONT4), ("veth4", net.FRONT4),
                ("lo6", net.FRONT6), ("veth6", net.FRONT6),
                ("far4", net.FRONT4), ("far6", net.FRONT6),
            ]:
                host, port, answer = ask(net, front, demux.port, name[:-1].encode() + b"\n")
                assert answer == f"{host} {port}\n", (name, answer, demux.log())
                assert host in (net.CLIENT4, net.CLIENT6)


def test_clientPortTaken(network: Network) -> None:
    """
    When the client's port is in use in demux's namespace, the backend
    still sees the client's address, from another port.
    """
    net = network
    with backends(net) as servers:
        net.addMarks([(s.host, s.port) for s in servers.values()])
        taken = freePort()

        def occupy() -> socket.socket:
            sock = socket.socket()
            sock.bind(("0.0.0.0", taken))
            sock.listen(1)
            return sock

        blocker = inNamespace(net.front, occupy)
        try:
            with demuxIn(net, configFor(servers)) as demux:
                host, port, answer = ask(net, net.FRONT4, demux.port, b"lo\n", taken)
        finally:
            blocker.close()
        assert port == taken
        answerHost, answerPort = answer.split()
        assert answerHost == net.CLIENT4
        assert int(answerPort) != taken


def test_noCapabilityRefuses(network: Network) -> None:
    """
    Without CAP_NET_ADMIN and CAP_NET_RAW demux refuses the route's
    connections (never dials from its own address) and says why once.
    """
    net = network
    with backends(net) as servers:
        net.addMarks([(s.host, s.port) for s in servers.values()])
        with demuxIn(net, configFor(servers), DROP_CAPABILITIES) as demux:
            for _ in range(3):
                _, _, answer = ask(net, net.FRONT4, demux.port, b"veth\n")
                assert answer == ""
            log = demux.waitForLog("cannot set IP_TRANSPARENT")
        assert log.count("cannot set IP_TRANSPARENT") == 1, log
        assert "route=veth4 transparent:" in log


DROP_CAPABILITIES = (
    "setpriv", "--inh-caps=-net_admin,-net_raw",
    "--bounding-set=-net_admin,-net_raw", "--",
)


def check(net: Network, config: str, prefix: Sequence[str] = ()) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="demux-test-") as d:
        path = Path(d) / "demux.toml"
        path.write_text(config.replace("{port}", str(freePort())))
        result = subprocess.run(
            ["ip", "netns", "exec", net.front, *prefix,
             *twistdCommand("demux", "--config", str(path), "--check")],
            capture_output=True, text=True, timeout=60, check=False,
        )
    return result.returncode, result.stdout + result.stderr


def test_checkNamesWhatIsMissing(network: Network) -> None:
    """
    C{--check} passes with everything in place, and names each piece (and
    the command that adds it) when it is removed.
    """
    net = network
    with backends(net) as servers:
        net.addMarks([(s.host, s.port) for s in servers.values()])
        config = configFor(servers)
        code, out = check(net, config)
        assert code == 0 and "transparent" not in out, out

        sh("ip", "-n", net.front, "-4", "rule", "del", "fwmark", hex(net.MARK))
        code, out = check(net, config)
        assert code == 1, out
        assert "missing an IPv4 ip rule" in out, out
        assert f"ip rule add fwmark {net.MARK:#x} lookup {net.TABLE}" in out, out
        assert "IPv6 ip rule" not in out, out
        sh("ip", "-n", net.front, "-4", "rule", "add", "fwmark", hex(net.MARK),
           "lookup", str(net.TABLE))

        sh("ip", "-n", net.front, "-6", "route", "del", "local", "default", "table",
           str(net.TABLE))
        code, out = check(net, config)
        assert code == 1 and "missing an IPv6 local route" in out, out
        assert f"ip -6 route add local default dev lo table {net.TABLE}" in out, out
        sh("ip", "-n", net.front, "-6", "route", "add", "local", "default", "dev", "lo",
           "table", str(net.TABLE))

        net.setLocalnet(0)
        code, out = check(net, config)
        assert code == 1 and "route_localnet" in out, out
        assert "sysctl -w net.ipv4.conf.all.route_localnet=1" in out, out
        assert "transparent (lo4): missing net.ipv4" in out, out
        net.setLocalnet(1)

        net.removeMarks()
        code, out = check(net, config)
        assert code == 1, out
        for server in servers.values():
            host = f"[{server.host}]" if ":" in server.host else server.host
            assert f"marks the replies of backend {host}:{server.port}" in out, out
        net.addMarks([(s.host, s.port) for s in servers.values()])

        code, out = check(net, config, DROP_CAPABILITIES)
        assert code == 1 and "missing the capability CAP_NET_ADMIN" in out, out

        code, out = check(net, config)
        assert code == 0, out
