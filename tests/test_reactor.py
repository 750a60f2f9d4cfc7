"""
Tests for L{demux._reactor}: Twisted's own reactor tests (TCP, UDP, time,
processes, system events) run against L{DemuxEPollReactor}; exceptions in a
handler are logged and close the connection exactly as under Twisted's epoll
reactor; the Twisted internals it uses still exist; and it is what
C{twistd demux} runs on unless C{--reactor} says otherwise.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import shutil
import socket
import tempfile
import textwrap
from typing import Any

from twisted.application.reactors import IReactorInstaller, getReactorTypes
from twisted.internet import epollreactor, posixbase
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.test import test_core, test_process, test_tcp, test_time, test_udp
from twisted.internet.test.reactormixins import ReactorBuilder
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux import _reactor
from demux._reactor import DemuxEPollReactor

from ._process import runDemux

_DEMUX_REACTOR = f"{DemuxEPollReactor.__module__}.{DemuxEPollReactor.__qualname__}"

# Left out of the slice, each for a reason that is not demux's:
_LEFT_OUT = {
    # Under Twisted's reactor a handler runs inside a legacy log context
    # naming its transport; not wrapping every event in it is the point of
    # demux's reactor (see ReactorDifferenceTests below).
    "test_logPrefix",
    # Fail the same way under Twisted's own epoll reactor on this machine,
    # where the tests run as root in a container (the child cannot start
    # under the changed uid).
    "test_changeUID",
    "test_changeGID",
}


def _mktemp(self: SynchronousTestCase) -> str:
    """
    A fresh path in the system's temporary directory, removed after the
    test: trial's own C{mktemp} makes one under the working directory, which
    under pytest is the project tree.
    """
    directory = tempfile.mkdtemp(prefix="demux-reactor-test-")
    self.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, "temp")


def _forDemux(builder: type[ReactorBuilder]) -> dict[str, type]:
    """
    Twisted's test cases of C{builder}, made for L{DemuxEPollReactor} only.
    """
    left = {name: None for name in _LEFT_OUT if hasattr(builder, name)}
    namespace: dict[str, Any] = {
        "_reactors": [_DEMUX_REACTOR],
        "skippedReactors": {},
        "__module__": __name__,
        "mktemp": _mktemp,
        **left,
    }
    return type(builder.__name__, (builder,), namespace).makeTestCaseClasses()


for _module, _builders in [
    (
        test_tcp,
        [
            "TCP4ClientTestsBuilder",
            "TCP6ClientTestsBuilder",
            "TCPPortTestsBuilder",
            "TCPFDPortTestsBuilder",
            "TCPConnectionTestsBuilder",
            "TCP4ConnectorTestsBuilder",
            "TCP6ConnectorTestsBuilder",
            "TCPTransportTestsBuilder",
            "AdoptStreamConnectionTestsBuilder",
            "TestBindAddressBuilder",
            "AbortConnectionTests",
        ],
    ),
    (test_udp, ["UDPServerTestsBuilder", "UDPFDServerTestsBuilder"]),
    (test_time, ["TimeTestsBuilder"]),
    (test_process, ["ProcessTestsBuilder", "PTYProcessTestsBuilder"]),
    (test_core, ["SystemEventTestsBuilder"]),
]:
    for _name in _builders:
        globals().update(_forDemux(getattr(_module, _name)))


class _Raising(Protocol):
    """
    Raises from C{dataReceived}, and records how its connection ended.
    """

    def __init__(self, ended: list[Failure]) -> None:
        self.ended = ended

    def dataReceived(self, data: bytes) -> None:
        raise ZeroDivisionError("a bug in a protocol")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended.append(reason)
        self.factory.reactor.stop()  # type: ignore[attr-defined]


def _raiseInDataReceived(reactor: Any) -> tuple[list[dict[str, Any]], list[Failure]]:
    """
    Run C{reactor} while a client sends a byte to a protocol that raises on
    it, and return the legacy log's error events and how the server's
    connection ended.
    """
    ended: list[Failure] = []
    factory = Factory.forProtocol(lambda: _Raising(ended))
    factory.reactor = reactor  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("isError"):
            errors.append(event)

    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    client.sendall(b"x")
    log.addObserver(observe)
    try:
        reactor.callLater(10, reactor.stop)
        reactor.run()
    finally:
        log.removeObserver(observe)
        client.close()
        port.stopListening()
    return errors, ended


class ReactorBehaviourTests(SynchronousTestCase):
    """
    What demux's reactor must do as Twisted's does, side by side with it.
    """

    def test_exceptionInDataReceived(self) -> None:
        """
        An exception raised by a protocol's C{dataReceived} is logged once,
        with its traceback and under the transport's log prefix, and closes
        that connection with the exception as the reason, as under Twisted's
        epoll reactor.
        """
        stock = _raiseInDataReceived(epollreactor.EPollReactor())
        ours = _raiseInDataReceived(DemuxEPollReactor())
        for errors, ended in (stock, ours):
            self.assertEqual(len(errors), 1)
            [event] = errors
            self.assertTrue(event["failure"].check(ZeroDivisionError))
            self.assertIn("a bug in a protocol", event["failure"].getTraceback())
            self.assertTrue(event["system"].startswith("_Raising,"), event["system"])
            self.assertEqual(len(ended), 1)
            self.assertTrue(ended[0].check(ZeroDivisionError))
        # The same event, field for field, but for the objects themselves.
        (stockEvent,), (ourEvent,) = stock[0], ours[0]
        keys = {"system", "isError", "why"}
        self.assertEqual(
            {k: stockEvent.get(k) for k in keys}, {k: ourEvent.get(k) for k in keys}
        )
        # One traceback from each reactor, and nothing else.
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_exceptionInConnectionLost(self) -> None:
        """
        An exception raised while a connection is being closed is logged
        under the transport's prefix, and does not stop the events after it
        in the same poll from being dispatched.
        """
        reactor = DemuxEPollReactor()
        seen: list[str] = []

        class Broken:
            def __init__(self, name: str, sock: socket.socket) -> None:
                self.name = name
                self.sock = sock

            def fileno(self) -> int:
                return self.sock.fileno()

            def logPrefix(self) -> str:
                return f"Broken-{self.name}"

            def doRead(self) -> object:
                seen.append(self.name)
                return _reactor._CONNECTION_DONE

            def readConnectionLost(self, reason: Failure) -> None:
                raise RuntimeError("close failed")

            def connectionLost(self, reason: Failure) -> None:
                raise RuntimeError("close failed")

        pairs = [socket.socketpair() for _ in range(2)]
        broken = [Broken(str(i), a) for i, (a, b) in enumerate(pairs)]
        for descriptor, (_, other) in zip(broken, pairs, strict=True):
            other.send(b"x")
            reactor.addReader(descriptor)  # type: ignore[arg-type]
        errors: list[dict[str, Any]] = []
        log.addObserver(errors.append)
        try:
            reactor.doPoll(1)
        finally:
            log.removeObserver(errors.append)
            for a, b in pairs:
                a.close()
                b.close()
        self.assertEqual(sorted(seen), ["0", "1"])
        systems = sorted(e["system"] for e in errors if e.get("isError"))
        self.assertEqual(systems, ["Broken-0", "Broken-1"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class ReactorDifferenceTests(SynchronousTestCase):
    """
    The one thing demux's reactor does differently, on purpose.
    """

    def test_noLogContextInHandlers(self) -> None:
        """
        A handler runs without the legacy log context Twisted's reactor
        wraps it in (the cost this reactor saves), while the transport's
        C{logPrefix()}, which error reports use, is unchanged.
        """
        reactor = DemuxEPollReactor()
        systems: list[str] = []
        prefixes: list[str] = []

        class Recording(Protocol):
            def dataReceived(self, data: bytes) -> None:
                systems.append(context.get(log.ILogContext)["system"])
                prefixes.append(self.transport.logPrefix())  # type: ignore[union-attr]
                reactor.stop()

        port = reactor.listenTCP(0, Factory.forProtocol(Recording), interface="127.0.0.1")
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        try:
            client.sendall(b"x")
            reactor.callLater(10, reactor.stop)
            reactor.run()
        finally:
            client.close()
            port.stopListening()
        self.assertEqual(systems, ["-"])
        self.assertEqual(len(prefixes), 1)
        self.assertTrue(prefixes[0].startswith("Recording,"), prefixes[0])


def _fingerprint(function: Any) -> str:
    """
    A digest of C{function}'s code, less its docstring and comments, so that
    a change of Twisted's logic shows and a change of its wording does not.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    dumped = "\n".join(ast.dump(statement) for statement in body)
    return hashlib.sha256(dumped.encode()).hexdigest()[:16]


# The fingerprints of the Twisted code demux's doPoll re-implements, in the
# Twisted versions it was checked against (26.10).
_REVIEWED = {
    "EPollReactor.doPoll": {"2db219165f13f192"},
    "_PollLikeMixin._doReadOrWrite": {"073c1fa99820e806"},
}


class TwistedInternalsCanaryTests(SynchronousTestCase):
    """
    Fails, saying what changed, when the installed Twisted no longer has
    what L{demux._reactor} takes from it.
    """

    def test_namesExist(self) -> None:
        """
        Every private name listed in L{_reactor.TWISTED_INTERNALS} and
        L{_reactor.TWISTED_INSTANCE_INTERNALS} exists.
        """
        missing = [
            f"{getattr(owner, '__name__', owner)}.{name}"
            for owner, name in _reactor.TWISTED_INTERNALS
            if not hasattr(owner, name)
        ]
        instance = epollreactor.EPollReactor()
        try:
            missing += [
                f"EPollReactor()._{name.lstrip('_')}"
                for name in _reactor.TWISTED_INSTANCE_INTERNALS
                if not hasattr(instance, name)
            ]
        finally:
            instance._poller.close()
        self.assertEqual(
            missing, [], "demux._reactor uses Twisted internals this Twisted lacks"
        )

    def test_dispatchUnchanged(self) -> None:
        """
        The Twisted code that L{DemuxEPollReactor.doPoll} re-implements
        (the epoll reactor's C{doPoll} and the poll-like mixin's
        C{_doReadOrWrite}) is the code it was written against; if Twisted
        changed it, review C{demux._reactor.doPoll} against the new code and
        add the new fingerprint here.
        """
        found = {
            "EPollReactor.doPoll": _fingerprint(epollreactor.EPollReactor.doPoll),
            "_PollLikeMixin._doReadOrWrite": _fingerprint(
                posixbase._PollLikeMixin._doReadOrWrite
            ),
        }
        changed = {
            name: digest for name, digest in found.items() if digest not in _REVIEWED[name]
        }
        self.assertEqual(
            changed, {}, "Twisted's event dispatch changed; review demux._reactor"
        )


class PluginTests(SynchronousTestCase):
    """
    The C{demux-epoll} reactor is offered to C{twistd --reactor}, and is
    C{twistd demux}'s default.
    """

    def test_offered(self) -> None:
        """
        C{twistd --help-reactors} lists C{demux-epoll}, which installs
        L{DemuxEPollReactor}.
        """
        installers = {r.shortName: r for r in getReactorTypes()}
        self.assertIn("demux-epoll", installers)
        installer = installers["demux-epoll"]
        verifyObject(IReactorInstaller, installer)
        self.assertEqual(installer.moduleName, "demux._reactor")
        self.assertTrue(callable(_reactor.install))

    def test_installIfNoneYet(self) -> None:
        """
        With a reactor installed already (as here, or after C{--reactor}),
        L{_reactor.installIfNoneYet} leaves it alone.
        """
        from twisted.internet import reactor

        self.assertFalse(_reactor.installIfNoneYet())
        from twisted.internet import reactor as after

        self.assertIs(after, reactor)

    def test_twistdDefault(self) -> None:
        """
        C{twistd demux} runs on demux's reactor, and C{twistd --reactor
        epoll demux} on Twisted's.
        """
        config = """
listen = ["tcp:{port}:interface=127.0.0.1"]
[[routes]]
name = "any"
match.any = {}
backend = "tcp:127.0.0.1:9"
"""
        for options, expected in [
            ((), "demux._reactor.DemuxEPollReactor"),
            (("--reactor", "epoll"), "twisted.internet.epollreactor.EPollReactor"),
        ]:
            with runDemux(config, twistdOptions=options) as demux:
                line = demux.waitForLog("reactor class:")
            self.assertIn(f"reactor class: {expected}.", line)

    def test_workersFollow(self) -> None:
        """
        C{--workers} processes run on the reactor the first process runs on.
        """
        config = """
listen = ["tcp:{port}:interface=127.0.0.1"]
[[routes]]
name = "any"
match.any = {}
backend = "tcp:127.0.0.1:9"
"""
        for options, expected in [
            ((), "DemuxEPollReactor"),
            (("--reactor", "epoll"), "EPollReactor"),
        ]:
            with runDemux(config, args=["--workers", "2"], twistdOptions=options) as demux:
                log = demux.waitForLog("worker 1 serving")
            self.assertIn(f"reactor {expected})", log)
