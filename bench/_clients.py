"""
The load generators: what each workload does on the client side.

Bulk transfers and latency samples run in the benchmark's own process with
blocking sockets and big buffers; connection rates come from C{connload.c}
and HTTP requests from C{wrk}, both in C, so that the generator is not what is
measured. (C{wrk} itself cannot send a ClientHello: it checks that its
request parses as HTTP.)
"""

from __future__ import annotations

import re
import selectors
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.backend import CHUNK, COMMAND, REPLY

MAGIC = bytes.fromhex("9e79bc40")
SNI = "bench.example.com"


def _readReply(sock: socket.socket) -> None:
    """
    Read the backend's tiny reply, which proves the route reached it.
    """
    got = b""
    while len(got) < len(REPLY):
        chunk = sock.recv(len(REPLY) - len(got))
        if not chunk:
            raise ConnectionError(f"connection closed after {got!r}")
        got += chunk
    if got != REPLY:
        raise ConnectionError(f"unexpected reply {got!r}")


@dataclass(frozen=True)
class Transfer:
    """
    One bulk transfer: bytes moved, wall seconds, and the proxy's CPU seconds.
    """

    nbytes: int
    seconds: float
    cpuSeconds: float


def bulk(
    port: int,
    preamble: bytes,
    direction: str,
    nbytes: int,
    cpu: Callable[[], object],
    cpuSince: Callable[[object], float],
) -> Transfer:
    """
    Send C{preamble}, then move C{nbytes} one way: C{"up"} from client to
    backend, C{"down"} from backend to client.

    C{cpu} samples the proxy's CPU time; the later sample is taken before the
    connection closes, while a forking proxy's child is still alive.
    """
    verb = b"UP" if direction == "up" else b"DN"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(preamble + COMMAND.pack(verb, nbytes))
        _readReply(sock)
        before = cpu()
        start = time.perf_counter()
        if direction == "up":
            chunk = memoryview(bytes(CHUNK))
            left = nbytes
            while left:
                n = min(left, CHUNK)
                sock.sendall(chunk[:n])
                left -= n
            ack = b""
            while len(ack) < 12:
                more = sock.recv(12 - len(ack))
                if not more:
                    raise ConnectionError("no acknowledgement")
                ack += more
            if struct.unpack("!Q", ack[4:])[0] != nbytes:
                raise ConnectionError(f"backend counted {ack!r}")
        else:
            buf = bytearray(CHUNK)
            left = nbytes
            while left:
                n = sock.recv_into(buf)
                if not n:
                    raise ConnectionError(f"closed with {left} bytes to go")
                left -= n
        seconds = time.perf_counter() - start
        spent = cpuSince(before)
    return Transfer(nbytes, seconds, spent)


def timeToFirstByte(port: int, preamble: bytes, count: int, budget: float) -> list[float]:
    """
    Seconds from C{connect()} to the first byte of the reply, one connection
    at a time, C{count} times or until C{budget} seconds have passed.
    """
    request = preamble + COMMAND.pack(b"RP", 0)
    samples = []
    deadline = time.monotonic() + budget
    while len(samples) < count and time.monotonic() < deadline:
        start = time.perf_counter()
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(request)
            if not sock.recv(1):
                raise ConnectionError("closed before replying")
            samples.append(time.perf_counter() - start)
            _drain(sock)
        finally:
            sock.close()
    return samples


def _drain(sock: socket.socket) -> None:
    """
    Read the rest of the reply until the server closes, so that the client
    never holds a TIME_WAIT port.
    """
    while sock.recv(len(REPLY)):
        pass


def holdConnections(
    port: int,
    preamble: bytes,
    count: int,
    budget: float,
    batch: int = 100,
    afterBatch: Callable[[int], None] | None = None,
) -> list[socket.socket]:
    """
    Open C{count} connections to C{port} and leave them open and idle.

    With a C{preamble}, each one sends it (and the backend's command to hold
    the connection) and waits for the backend's reply,
    so every connection is relayed end to end before this returns. Without,
    the connections only connect: the proxy holds them undecided. Opens in
    batches, calling C{afterBatch} with the number held after each, so the
    caller can wait for the proxy to catch up and not overrun its backlog.
    """
    request = preamble + COMMAND.pack(b"HD", 0) if preamble else b""
    held: list[socket.socket] = []
    deadline = time.monotonic() + budget
    selector = selectors.DefaultSelector()
    try:
        while len(held) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"opened only {len(held)} of {count}")
            pending: dict[socket.socket, bytes] = {}
            for _ in range(min(batch, count - len(held))):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                pending[sock] = b""
                selector.register(sock, selectors.EVENT_WRITE)
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"opened only {len(held)} of {count}")
                for key, events in selector.select(timeout=1):
                    sock = key.fileobj  # type: ignore[assignment]
                    assert isinstance(sock, socket.socket)
                    if events & selectors.EVENT_WRITE:
                        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if error:
                            raise ConnectionError(f"connect failed: errno {error}")
                        if not preamble:
                            selector.unregister(sock)
                            del pending[sock]
                            held.append(sock)
                            continue
                        sock.send(request)
                        selector.modify(sock, selectors.EVENT_READ)
                        continue
                    chunk = sock.recv(len(REPLY))
                    if not chunk:
                        raise ConnectionError("closed while holding")
                    pending[sock] += chunk
                    if len(pending[sock]) >= len(REPLY):
                        selector.unregister(sock)
                        del pending[sock]
                        held.append(sock)
            if afterBatch is not None:
                afterBatch(len(held))
    except BaseException:
        for sock in held:
            sock.close()
        raise
    finally:
        selector.close()
    return held


@dataclass(frozen=True)
class WrkResult:
    """
    What one C{wrk} run reported.
    """

    requestsPerSecond: float
    requests: int
    errors: int
    output: str


def buildConnload(directory: Path) -> Path:
    """
    Compile C{connload.c} into C{directory} (once) and return the binary.
    """
    source = Path(__file__).with_name("connload.c")
    binary = directory / "connload"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["cc", "-O2", "-Wall", "-pthread", "-o", str(binary), str(source)],
            check=True,
        )
    return binary


@dataclass(frozen=True)
class RateResult:
    """
    What one C{connload} run reported.
    """

    completed: int
    errors: int
    seconds: float

    @property
    def perSecond(self) -> float:
        return self.completed / self.seconds


def connload(
    binary: Path,
    port: int,
    payload: Path,
    concurrency: int,
    seconds: float,
    threads: int = 1,
) -> RateResult:
    """
    Open connections carrying C{payload} (a preamble and the backend's C{RP}
    command) to C{port} as fast as the proxy takes them, C{concurrency} at a
    time in C{threads} threads, for C{seconds}.
    """
    out = subprocess.run(
        [str(binary), str(port), str(payload), str(len(REPLY)), str(concurrency),
         str(seconds), str(threads)],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    found = re.search(r"completed (\d+) errors (\d+) seconds ([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"could not read connload's output: {out!r}")
    return RateResult(int(found.group(1)), int(found.group(2)), float(found.group(3)))


def wrk(url: str, connections: int, threads: int, seconds: int) -> WrkResult:
    """
    Run C{wrk} against C{url} and read its summary.
    """
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    cmd.append(url)
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = 0
    socketErrors = re.search(
        r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socketErrors:
        errors += sum(int(v) for v in socketErrors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    if rate is None or total is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return WrkResult(float(rate.group(1)), int(total.group(1)), errors, out)
