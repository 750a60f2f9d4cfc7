"""
Capturing the first datagrams a real client program sends, for tests of
datagram matchers on real bytes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence


def captureDatagrams(
    command: Callable[[int], Sequence[str]],
    count: int = 4,
    firstTimeout: float = 10.0,
    quietTimeout: float = 0.5,
    cwd: str | None = None,
) -> list[bytes]:
    """
    Run C{command(port)}, a client told to send to a UDP socket this binds
    on 127.0.0.1 port 0, and return the datagrams it sends: at most
    C{count}, waiting at most C{firstTimeout} seconds for the first and
    C{quietTimeout} for each later one; the client is then killed.  Nothing
    is ever answered, so the client only sends its first flight (and maybe
    retransmissions of it).  C{cwd} is the client's working directory.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        process = subprocess.Popen(
            list(command(port)),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
        )
        datagrams: list[bytes] = []
        try:
            server.settimeout(firstTimeout)
            while len(datagrams) < count:
                try:
                    datagrams.append(server.recv(65535))
                except TimeoutError:
                    break
                server.settimeout(quietTimeout)
        finally:
            process.kill()
            process.wait(10)
    return datagrams


def have(program: str) -> bool:
    return shutil.which(program) is not None
