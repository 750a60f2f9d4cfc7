"""
The canary: every private name of Twisted that demux uses (all of them
listed in L{demux._twisted.INTERNALS}) exists in the installed Twisted, and
no other module of demux names one.

If this fails after a Twisted upgrade, the message says which names are
gone: the code in L{demux._twisted} that uses them must be written anew
(or the upper bound on Twisted in setup.cfg kept).
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints, tcp
from twisted.internet.base import ReactorBase
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.scripts import twistd
from twisted.trial.unittest import SynchronousTestCase

from demux import _twisted
from demux._twisted import INTERNALS
from twisted import __version__ as twistedVersion

DEMUX = Path(_twisted.__file__).parent


def _samples() -> dict[str, list[Any]]:
    """
    For each owner named in L{INTERNALS}, the objects to look its names up
    on: the class or module, and an instance where the names are instance
    attributes.
    """
    reactor = MemoryReactorClock()
    a, b = socket.socketpair()
    connection = tcp.Connection(a, Protocol(), reactor)  # type: ignore[arg-type]
    service = StreamServerEndpointService(
        endpoints.TCP4ServerEndpoint(reactor, 0), Factory()
    )
    service.privilegedStartService()
    samples: dict[str, list[Any]] = {
        "twisted.internet.tcp.Connection": [connection],
        "twisted.internet.endpoints.TCP4ClientEndpoint": [
            TCP4ClientEndpoint(reactor, "127.0.0.1", 1, bindAddress=("127.0.0.1", 0))
        ],
        "twisted.internet.endpoints": [endpoints],
        "twisted.internet.endpoints._SystemdParser": [_twisted.systemdParserType()],
        "twisted.application.internet.StreamServerEndpointService": [service],
        "twisted.internet.base.ReactorBase": [ReactorBase],
        "twisted.scripts.twistd": [twistd],
        "twisted.application.app.AppLogger": [
            twistd._SomeApplicationRunner.loggerFactory
        ],
    }
    server, peer = _connectedPair()
    transport = _twisted.connectedTransport(
        peer, server.getsockname(), Factory.forProtocol(Protocol), reactor
    )
    samples["twisted.internet.tcp.Server"] = [transport]
    a.close()
    b.close()
    server.close()
    peer.close()
    return samples


def _connectedPair() -> tuple[socket.socket, socket.socket]:
    """
    Two ends of a real TCP connection over IPv4 loopback: the accepted one,
    and the one that connected.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    peer.setblocking(False)
    return server, peer


class InternalsTests(SynchronousTestCase):
    """
    The names demux reaches under Twisted's API for are all there.
    """

    def test_allPresent(self) -> None:
        """
        Every name in L{INTERNALS} is found on its owner; the failure lists
        every one that is missing, with the Twisted version.
        """
        samples = _samples()
        self.assertEqual(sorted(samples), sorted(INTERNALS))
        missing = [
            f"{owner}.{name}"
            for owner, names in INTERNALS.items()
            for name in names
            if not all(hasattr(sample, name) for sample in samples[owner])
        ]
        self.assertEqual(
            missing,
            [],
            f"Twisted {twistedVersion} lacks what demux._twisted uses: "
            + ", ".join(missing),
        )

    def test_helpersWork(self) -> None:
        """
        The transport helpers read and reset a real transport's buffers as
        demux expects: what was written and not sent is seen and taken.
        """
        reactor = MemoryReactorClock()
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        connection = tcp.Connection(a, Protocol(), reactor)  # type: ignore[arg-type]
        connection.connected = True
        self.assertTrue(_twisted.plainSocket(connection))
        self.assertTrue(_twisted.idleSocket(connection))
        self.assertTrue(_twisted.openBothWays(connection))
        connection.write(b"abc")
        self.assertFalse(_twisted.idleSocket(connection))
        self.assertEqual(_twisted.pending(connection), b"abc")
        self.assertEqual(_twisted.pendingLength(connection), 3)
        self.assertEqual(_twisted.takePending(connection), b"abc")
        self.assertEqual(_twisted.pendingLength(connection), 0)
        _twisted.writeThrough(connection, b"now")
        self.assertEqual(b.recv(10), b"now")

    def test_connectedTransport(self) -> None:
        """
        L{_twisted.connectedTransport} makes a working transport for a
        socket that was connected by hand, with its protocol connected, the
        dialled address as its peer, and writes reaching the other end; with
        nothing left to send, L{_twisted.closeDone} closes it at once (a bare
        C{close()}), and the other end still sees an orderly end.
        """
        reactor = MemoryReactorClock()
        accepted, dialled = _connectedPair()
        self.addCleanup(accepted.close)
        made: list[Protocol] = []

        class Remembering(Protocol):
            def connectionMade(self) -> None:
                made.append(self)

        peer = accepted.getsockname()
        transport = _twisted.connectedTransport(
            dialled, peer, Factory.forProtocol(Remembering), reactor
        )
        self.assertEqual(len(made), 1)
        self.assertIs(made[0].transport, transport)
        self.assertEqual(
            (transport.getPeer().host, transport.getPeer().port), peer
        )
        self.assertIn(transport, reactor.getReaders())
        _twisted.writeThrough(transport, b"hello")
        self.assertEqual(accepted.recv(10), b"hello")
        self.assertIn("Remembering", repr(transport))
        _twisted.closeDone(transport)
        self.assertEqual(accepted.recv(10), b"")
        self.assertEqual(dialled.fileno(), -1)

    def test_connectedTransportRefused(self) -> None:
        """
        When the factory builds no protocol, the socket is closed and there
        is no transport.
        """
        accepted, dialled = _connectedPair()
        self.addCleanup(accepted.close)

        class Refusing(Factory):
            def buildProtocol(self, addr: object) -> None:
                return None

        self.assertIsNone(
            _twisted.connectedTransport(
                dialled, accepted.getsockname(), Refusing(), MemoryReactorClock()
            )
        )
        self.assertEqual(dialled.fileno(), -1)
        self.assertEqual(accepted.recv(10), b"")

    def test_endpointAddress(self) -> None:
        """
        A C{tcp:} client endpoint's address is read in full; other endpoints
        have none.
        """
        reactor = MemoryReactorClock()
        address = _twisted.tcp4Address(
            TCP4ClientEndpoint(reactor, "192.0.2.1", 22, bindAddress=("0.0.0.0", 0))
        )
        assert address is not None
        self.assertEqual(
            (address.reactor, address.host, address.port, address.bindAddress),
            (reactor, "192.0.2.1", 22, ("0.0.0.0", 0)),
        )
        self.assertTrue(address.numeric)
        self.assertIsNone(
            _twisted.tcp4Address(endpoints.UNIXClientEndpoint(reactor, "/x"))
        )


def _privateTwistedNames(path: Path) -> list[str]:
    """
    The private names of Twisted's that C{path} imports, or reads as an
    attribute of a name bound to something imported from Twisted.
    """
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "twisted"
        ):
            found += [
                f"{node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_") or "._" in (node.module or "")
            ]
    return found


# Attribute names private to Twisted's objects, which no module but
# demux._twisted may read or write (they are not names demux itself uses).
_TWISTED_PRIVATE = {
    name for names in INTERNALS.values() for name in names if name.startswith("_")
} | {"_exitSignal", "_sddaemon"}


class ContainedTests(SynchronousTestCase):
    """
    No module but L{demux._twisted} uses Twisted's private names.
    """

    def test_onlyOneModule(self) -> None:
        offenders = []
        for path in sorted(DEMUX.rglob("*.py")):
            if path.name == "_twisted.py":
                continue
            where = path.relative_to(DEMUX.parent)
            offenders += [f"{where}: {n}" for n in _privateTwistedNames(path)]
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in _TWISTED_PRIVATE
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self")
                ):
                    offenders.append(f"{where}:{node.lineno}: .{node.attr}")
                if isinstance(node, ast.Constant) and node.value in _TWISTED_PRIVATE:
                    offenders.append(f"{where}:{node.lineno}: {node.value!r}")
        self.assertEqual(offenders, [])
