"""
The main of a worker process of C{twistd demux --workers N}, run as
C{python -m demux._workermain} by L{demux._workers.WorkerPool}: loads the same
configuration as the first process, adopts the listening sockets it
inherited, and serves them until it is told to stop or its parent is gone.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys

from twisted.logger import Logger, globalLogBeginner
from twisted.python.reflect import namedAny

from ._textlog import streamObserver

_FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}


def _dieWithParent() -> None:
    """
    Ask Linux to send this process SIGTERM when the first process is gone,
    so that no worker outlives demux (elsewhere, workers are not offered).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        raise SystemExit(0)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m demux._workermain")
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--fds", required=True)
    parser.add_argument("--reactor-module", default="demux._reactor")
    parser.add_argument("options", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    # The same reactor as the first process, installed before anything
    # imports the global one.
    namedAny(args.reactor_module).install()
    from twisted.internet import reactor as _reactor

    from .tap import DemuxService, Options
    options = [o for o in args.options if o != "--"]
    # No time stamps: the first process stamps each line as it relays it.
    globalLogBeginner.beginLoggingTo(
        [streamObserver(sys.stdout, timeFormat="")], redirectStandardIO=False
    )
    demuxOptions = Options()
    demuxOptions.parseOptions(options)
    from ._protocol import DemuxFactory

    config = demuxOptions["demux"]
    factory = DemuxFactory(config.table, _reactor)
    service = DemuxService(factory, config, demuxOptions.reloader, _reactor)
    service.startService()
    _reactor.addSystemEventTrigger(
        "before", "shutdown", service.stopService
    )
    for spec in args.fds.split(","):
        fd, family, proxied = spec.split(":")
        _reactor.adoptStreamPort(  # type: ignore[attr-defined]
            int(fd),
            _FAMILIES[family],
            factory.proxied() if proxied == "1" else factory,
        )
    _dieWithParent()
    Logger(namespace="demux").info(
        "worker {number} serving (pid {pid}, reactor {reactor})",
        number=args.number,
        pid=os.getpid(),
        reactor=type(_reactor).__qualname__,
    )
    _reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
