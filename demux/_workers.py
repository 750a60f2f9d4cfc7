"""
Past one core: C{--workers N} runs N processes that accept on the same
listening sockets, each a full demux with its own reactor.

The first process (the one C{twistd} started) listens, as it would alone,
then starts N-1 workers that inherit the listening sockets and adopt them; the
kernel hands each new connection to whichever process accepts first.  The
first process passes SIGHUP (reload) and its own stop (SIGTERM: drain, then
exit) on to the workers, relays their log lines into its own log, and a worker
whose parent is gone is stopped by the kernel (C{PR_SET_PDEATHSIG}), so no
worker outlives demux.  Workers are offered on Linux.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="demux")

FIRST_FD = 3


class _WorkerProcess(ProcessProtocol):
    """
    One worker, seen from the first process: its log lines are relayed, and
    its end is awaited on stop.
    """

    def __init__(self, number: int) -> None:
        self.number = number
        self.ended: Deferred[None] = Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                text = line.decode("utf-8", "replace")
                # Pre-formatted, as demux's connection lines are (see
                # demux._log): every worker's connections are logged here.
                log.info(
                    "{text}",
                    text=f"[worker {self.number}] {text}",
                    number=self.number,
                    line=text,
                )

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        log.info(
            "worker {number} ended: {why}",
            number=self.number,
            why=reason.getErrorMessage(),
        )
        self.ended.callback(None)


class WorkerPool(Service):
    """
    Starts and stops the extra worker processes.

    @ivar count: how many workers besides this process.
    @ivar arguments: the C{twistd demux} options the workers load their
        configuration from (the same the first process was given).
    @ivar ports: the listening services whose ports to share, with whether
        each expects a PROXY header.
    """

    def __init__(
        self,
        count: int,
        arguments: Sequence[str],
        ports: Sequence[tuple[Any, bool]],
        reactor: Any,
        grace: float,
    ) -> None:
        self.count = count
        self.arguments = list(arguments)
        self.ports = ports
        self.reactor = reactor
        self.grace = grace
        self.workers: list[tuple[Any, _WorkerProcess]] = []

    def startService(self) -> None:
        super().startService()
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        specs = []
        for index, (listener, proxied) in enumerate(self.ports):
            port = listener.port
            fd = FIRST_FD + index
            childFDs[fd] = port.fileno()
            family = "unix" if port.addressFamily == socket.AF_UNIX else (
                "inet6" if port.addressFamily == socket.AF_INET6 else "inet"
            )
            specs.append(f"{fd}:{family}:{int(proxied)}")
        for number in range(1, self.count + 1):
            protocol = _WorkerProcess(number)
            argv = [
                sys.executable,
                "-m",
                "demux._workermain",
                "--number",
                str(number),
                "--fds",
                ",".join(specs),
                "--reactor-module",
                type(self.reactor).__module__,
                "--",
                *self.arguments,
            ]
            process = self.reactor.spawnProcess(
                protocol, sys.executable, argv, env=dict(os.environ), childFDs=childFDs
            )
            self.workers.append((process, protocol))
        log.info("started {count} workers", count=self.count)

    def signal(self, signum: int) -> None:
        """
        Pass a signal on to every worker still running.
        """
        for process, protocol in self.workers:
            if not protocol.ended.called:
                try:
                    process.signalProcess(signum)
                except Exception:
                    pass

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.signal(signal.SIGTERM)
        waiting = [p.ended for _, p in self.workers if not p.ended.called]

        def killStragglers() -> None:
            self.signal(signal.SIGKILL)

        timer = self.reactor.callLater(self.grace + 5, killStragglers)
        d: Deferred[Any] = DeferredList(waiting)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(done)
