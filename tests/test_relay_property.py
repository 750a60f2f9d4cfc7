"""
Nothing is lost: properties of the relay through a real C{twistd demux}
(issue 4).

Random payload sizes each way, random read and write chunking on both sides,
a slow reader that pauses, and half-close from either side first: every byte
arrives, in order, and each side sees the end of the stream only after the
last byte.  Payloads go up to 8 MiB; C{DEMUX_BIG=1} raises that to 64 MiB.

And memory: relaying 256 MiB to a client that reads at 32 MiB/s keeps
demux's RSS bounded, because flow control pauses the backend.  The issue's
longer version (1 GiB at 1 MiB/s, 17 minutes) is a command of its own::

    python -m soak --mode slow-reader --bytes 1GiB --rate 1MiB
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from soak.run import patternServer, rssBytes, slowReader

from ._process import DemuxProcess, runDemux
from ._servers import ThreadedServer

MAGIC = bytes.fromhex("9e79bc40")
MiB = 1 << 20
BIG = os.environ.get("DEMUX_BIG") == "1"
MAX_PAYLOAD = (64 if BIG else 8) * MiB
TIMEOUT = 120 if BIG else 30


def payload(seed: int, size: int) -> bytes:
    """
    C{size} bytes that depend on C{seed}, the same on both sides.
    """
    return random.Random(seed).randbytes(size)


@dataclass(frozen=True)
class Side:
    """
    How one side of a connection behaves.

    @ivar size: bytes it sends.
    @ivar seed: makes those bytes.
    @ivar writes: sizes of its sends, used in turn.
    @ivar reads: sizes of its reads, used in turn.
    @ivar pauses: (fraction of what it receives, seconds): it stops reading
        for that long once it has received that fraction.
    """

    size: int
    seed: int
    writes: tuple[int, ...]
    reads: tuple[int, ...]
    pauses: tuple[tuple[float, float], ...] = ()

    def asDict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "seed": self.seed,
            "writes": list(self.writes),
            "reads": list(self.reads),
            "pauses": [list(p) for p in self.pauses],
        }

    @classmethod
    def fromDict(cls, d: dict[str, Any]) -> Side:
        return cls(
            d["size"], d["seed"], tuple(d["writes"]), tuple(d["reads"]),
            tuple((a, b) for a, b in d["pauses"]),
        )


@dataclass
class Received:
    """
    What one side read: how many bytes, their checksum, and whether the
    stream ended cleanly.
    """

    count: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    ended: bool = False
    error: str | None = None


def _chunks(sizes: tuple[int, ...], total: int) -> Iterator[int]:
    """
    The sizes in turn, each at least C{total / 2000} so that a large
    payload is not moved a byte at a time.
    """
    floor = max(1, total // 2000)
    i = 0
    while True:
        yield max(floor, sizes[i % len(sizes)])
        i += 1


def receive(sock: socket.socket, side: Side, expected: int, into: Received) -> None:
    """
    Read until the end of the stream with C{side}'s read sizes and pauses.
    """
    pauses = sorted(side.pauses)
    sizes = _chunks(side.reads, expected)
    try:
        while True:
            data = sock.recv(next(sizes))
            if not data:
                into.ended = True
                return
            into.count += len(data)
            into.digest.update(data)
            while pauses and into.count >= pauses[0][0] * expected:
                time.sleep(pauses.pop(0)[1])
    except OSError as e:
        into.error = repr(e)


def send(
    sock: socket.socket,
    side: Side,
    second: bool,
    otherEnded: threading.Event,
) -> str | None:
    """
    Send C{side}'s payload with its write sizes, then half-close.  The side
    that closes second sends half, waits for the other side's end of
    stream, then sends the rest: bytes still flow after the other direction
    is closed.
    """
    data = payload(side.seed, side.size)
    sizes = _chunks(side.writes, side.size)
    half = len(data) // 2 if second else len(data)
    try:
        offset = 0
        for stop, wait in ((half, second), (len(data), False)):
            while offset < stop:
                n = min(next(sizes), stop - offset)
                sock.sendall(data[offset : offset + n])
                offset += n
            if wait and not otherEnded.wait(TIMEOUT):
                return "the other side never closed"
        sock.shutdown(socket.SHUT_WR)
    except OSError as e:
        return repr(e)
    return None


class ScriptedBackend(ThreadedServer):
    """
    A backend that reads a one-line script (C{PROP {json}}), then plays
    the backend's part of it: sends and reads as told, in both directions
    at once, and records what it read.
    """

    def __init__(self) -> None:
        self.results: dict[int, tuple[Received, str | None]] = {}
        self.done = threading.Condition()
        super().__init__(backlog=16)

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            head = b""
            while b"\n" not in head:
                more = conn.recv(4096)
                if not more:
                    return
                head += more
            line, rest = head.split(b"\n", 1)
            script = json.loads(line[len(b"PROP ") :])
            mine = Side.fromDict(script["backend"])
            theirs = Side.fromDict(script["client"])
            received = Received()
            received.count = len(rest)
            received.digest.update(rest)
            ended = threading.Event()

            def read() -> None:
                receive(conn, mine, theirs.size, received)
                ended.set()

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            error = send(conn, mine, script["first"] == "client", ended)
            reader.join(TIMEOUT)
        with self.done:
            self.results[script["id"]] = (received, error)
            self.done.notify_all()

    def result(self, ident: int, timeout: float) -> tuple[Received, str | None]:
        with self.done:
            self.done.wait_for(lambda: ident in self.results, timeout)
            return self.results.pop(ident)


@pytest.fixture(scope="module")
def relay() -> Iterator[tuple[DemuxProcess, ScriptedBackend]]:
    backend = ScriptedBackend()
    config = f"""
listen = ["tcp:{{port}}:interface=127.0.0.1"]
inspect_delay = 5
[[routes]]
name = "property"
match.prefix = {{text = "PROP "}}
backend = "tcp:127.0.0.1:{backend.port}"
"""
    try:
        with runDemux(config) as demux:
            yield demux, backend
    finally:
        backend.close()


sizes = st.sampled_from(["zero", "small", "medium", "large"]).flatmap(
    lambda kind: {
        "zero": st.just(0),
        "small": st.integers(1, 4096),
        "medium": st.integers(4097, MiB),
        # Hypothesis leans towards the low end of a range: draw the MiB
        # count and an offset apart so large sizes spread up to the maximum.
        "large": st.tuples(
            st.integers(2, MAX_PAYLOAD // MiB), st.integers(0, 65535)
        ).map(lambda t: t[0] * MiB - t[1]),
    }[kind]
)
chunkSizes = st.lists(
    st.one_of(st.integers(1, 64), st.integers(65, 256 * 1024)), min_size=1, max_size=6
).map(tuple)
pauseLists = (
    st.lists(st.tuples(st.floats(0, 1), st.floats(0.01, 0.5)), max_size=3)
    .filter(lambda ps: sum(p[1] for p in ps) <= 1.0)
    .map(tuple)
)
sides = st.builds(
    Side,
    size=sizes,
    seed=st.integers(0, 2**32),
    writes=chunkSizes,
    reads=chunkSizes,
    pauses=pauseLists,
)


_ids = iter(range(1, 1 << 30))


def _bucket(size: int) -> str:
    if size == 0:
        return "0 B"
    if size <= 4096:
        return "up to 4 KiB"
    if size <= MiB:
        return "up to 1 MiB"
    return "over 1 MiB"


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    slowSide=st.sampled_from(["client", "backend", "neither"]),
    first=st.sampled_from(["client", "backend"]),
    client=sides,
    server=sides,
)
@example(
    slowSide="client",
    first="client",
    client=Side(MAX_PAYLOAD, 1, (65536,), (1000, 70000), ((0.5, 0.5),)),
    server=Side(MAX_PAYLOAD, 2, (7, 200000), (65536,), ((0.1, 0.5),)),
)
@example(
    slowSide="backend",
    first="backend",
    client=Side(0, 3, (1,), (1,), ()),
    server=Side(MAX_PAYLOAD - 1, 4, (262144,), (4096,), ((0.0, 0.3), (0.9, 0.3))),
)
def test_everyByteArrivesInOrder(
    relay: tuple[DemuxProcess, ScriptedBackend],
    slowSide: str,
    first: str,
    client: Side,
    server: Side,
) -> None:
    """
    Through demux, each side gets exactly the other's bytes, in order, and
    the end of the stream only after them, whichever side half-closes first
    and however the bytes are cut and paced; one side (or neither) reads
    slowly, pausing for up to a second in all.
    """
    demux, backend = relay
    if slowSide != "client":
        client = replace(client, pauses=())
    if slowSide != "backend":
        server = replace(server, pauses=())
    ident = next(_ids)
    head = b"PROP " + json.dumps(
        {"id": ident, "first": first, "client": client.asDict(),
         "backend": server.asDict()}
    ).encode() + b"\n"
    received = Received()
    ended = threading.Event()
    with socket.create_connection(("127.0.0.1", demux.port), timeout=TIMEOUT) as s:
        s.sendall(head)

        def read() -> None:
            receive(s, client, server.size, received)
            ended.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        error = send(s, client, first == "backend", ended)
        reader.join(TIMEOUT)
        assert not reader.is_alive(), "the client never saw the end of the stream"
    got, backendError = backend.result(ident, TIMEOUT)
    assert error is None, error
    assert backendError is None, backendError
    assert received.error is None and got.error is None, (received.error, got.error)
    assert received.ended and got.ended
    assert received.count == server.size
    assert received.digest.digest() == hashlib.sha256(
        payload(server.seed, server.size)
    ).digest()
    assert got.count == client.size
    assert got.digest.digest() == hashlib.sha256(
        payload(client.seed, client.size)
    ).digest()
    event(f"client sends {_bucket(client.size)}, backend sends {_bucket(server.size)}")
    demux.waitForLog(
        f"{len(head) + client.size} bytes up, {server.size} bytes down", timeout=10
    )


def test_halfClosedRequestToGreetingBackend() -> None:
    """
    A client that sends its request and half-closes at once, to a backend
    that greets on connecting and answers after the request: the whole
    answer arrives, every time (300 times in a row).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    conn.sendall(b"HELLO\n")
                    while data := conn.recv(65536):
                        conn.sendall(data)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    config = f"""
listen = ["tcp:{{port}}:interface=127.0.0.1"]
[[routes]]
name = "greeter"
match.prefix = "{MAGIC.hex()}"
backend = "tcp:127.0.0.1:{listener.getsockname()[1]}"
"""
    short = []
    try:
        with runDemux(config) as demux:
            for i in range(300):
                request = MAGIC + os.urandom(1024)
                with socket.create_connection(("127.0.0.1", demux.port), timeout=10) as s:
                    s.sendall(request)
                    s.shutdown(socket.SHUT_WR)
                    answer = b""
                    while data := s.recv(65536):
                        answer += data
                if answer != b"HELLO\n" + request:
                    short.append((i, len(answer)))
    finally:
        listener.close()
    assert short == [], f"{len(short)} of 300 answers cut short: {short[:10]}"


def test_slowReaderMemoryBounded() -> None:
    """
    256 MiB from a backend to a client reading 32 MiB a second: every byte
    arrives intact and demux's RSS grows by less than 64 MiB, because the
    client's slowness pauses the backend rather than filling demux.
    """
    size = 256 * MiB
    rate = 32 * MiB
    backend = patternServer(size)
    config = f"""
listen = ["tcp:{{port}}:interface=127.0.0.1"]
[[routes]]
name = "bulk"
match.prefix = "{MAGIC.hex()}"
backend = "tcp:127.0.0.1:{backend.getsockname()[1]}"
"""
    try:
        with runDemux(config) as demux:
            pid = demux.process.pid
            before = rssBytes(pid)
            result = slowReader(
                "127.0.0.1", demux.port, size, rate, pid, sampleInterval=0.5
            )
    finally:
        backend.close()
    growth = result["rssMax"] - before
    print(
        f"\nslow reader: {result['bytes'] / MiB:.0f} MiB at "
        f"{result['bytes'] / result['seconds'] / MiB:.1f} MiB/s, intact "
        f"{result['intact']}; demux RSS {before / MiB:.1f} MiB before, max "
        f"{result['rssMax'] / MiB:.1f} MiB (+{growth / MiB:.1f} MiB)"
    )
    assert result["intact"]
    assert growth < 64 * MiB
