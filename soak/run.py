"""
Soak and abuse tools for a running demux: C{python -m soak}, from the
project root (it is not part of the installed package).

Three modes, each bounded in time and count, each meant for loopback:

C{--mode mixed} (the default) runs mixed traffic for C{--duration} seconds:
TLS by SNI, TLS by ALPN without SNI, a magic prefix, HTTP, junk, TLS with an
unknown name, clients that send their first bytes slowly, and silent and
slowloris clients.  Every backend greets a connection with C{TAG:name}, then
echoes; a routed connection is checked to land on the route it should and to
get every byte it sent back, in order.  It prints a report: connections by
kind, errors, misroutes, bytes checked, and (given C{--pid}) demux's RSS and
open descriptors over time.  The exit status is 0 only with no errors and no
misroutes.  Either it starts everything itself::

    python -m soak --self-contained --duration 600

or it runs against a demux you started with the configuration it prints::

    python -m soak --print-config --backend-base 19100 \\
        --listen tcp:8443:interface=127.0.0.1 > soak.toml
    twistd -n demux --config soak.toml &
    python -m soak --target 127.0.0.1:8443 --backend-base 19100 \\
        --pid $! --duration 600

C{--route-option KEY=VALUE} adds a setting to every route of the
configuration it writes, to soak a variant (C{--route-option splice=false}
soaks the ordinary relay instead of the splice fast path).

C{--mode slowloris} holds C{--slow} connections that send one byte every
C{--byte-interval} seconds (a TLS record or an HTTP request line that never
completes) and C{--silent} connections that send nothing, from one thread,
and reports when demux closed each (it prints C{HELD n} once all are
connected, then a JSON summary).

C{--mode slow-reader} (self-contained) relays C{--bytes} from a backend to a
client that reads at C{--rate} bytes a second and samples demux's RSS: flow
control must keep it bounded.  The issue's long version::

    python -m soak --mode slow-reader --bytes 1GiB --rate 1MiB
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demux.testing import clientHello, reservePort

MAGIC = bytes.fromhex("9e79bc40")
"""
The Syncthing relay session magic: the soak's magic-prefix route.
"""

ROUTES = ("magic", "tls-a", "tls-b", "relay", "http")
"""
The soak configuration's routes, in order; each has a backend of the same
name.
"""


# Reading a process's cost from /proc.


def rssBytes(pid: int) -> int:
    """
    The resident set size of process C{pid}, from C{/proc/PID/status}.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def openFds(pid: int) -> int:
    """
    How many file descriptors process C{pid} holds.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def openFdKinds(pid: int) -> dict[str, int]:
    """
    Process C{pid}'s descriptors by kind: C{socket}, C{pipe} (demux keeps a
    pool of pipes for splicing, so their count follows past load, bounded,
    rather than the connections open now) and C{other}.
    """
    kinds = {"socket": 0, "pipe": 0, "other": 0}
    directory = f"/proc/{pid}/fd"
    for name in os.listdir(directory):
        try:
            target = os.readlink(f"{directory}/{name}")
        except OSError:
            continue
        kind = target.split(":", 1)[0]
        kinds[kind if kind in ("socket", "pipe") else "other"] += 1
    return kinds


def cpuSeconds(pid: int) -> float:
    """
    The user and system CPU time process C{pid} has used.
    """
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raiseFileLimit(wanted: int) -> int:
    """
    Raise this process's soft limit on open files to C{wanted} (at most the
    hard limit), since thousands of client sockets need thousands of
    descriptors; return the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def parseSize(text: str) -> int:
    """
    C{"1GiB"}, C{"32MiB"}, C{"512k"} or a plain number of bytes.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[m.group(2).lower()]
    return int(float(m.group(1)) * (1024**unit))


def _routeOption(text: str) -> str:
    """
    C{"splice=false"} as the TOML line C{"splice = false"}.
    """
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.]+", key.strip()):
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {text!r}")
    return f"{key.strip()} = {value.strip()}"


def hostPort(text: str) -> tuple[str, int]:
    """
    C{"127.0.0.1:8443"} or C{"[::1]:8443"} as a host and a port.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


# What clients send.


def pattern(size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """
    C{size} bytes in which every 1 MiB block starts with its own number, so
    a lost, repeated or reordered block changes the checksum.
    """
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    counter = 0
    while sent < size:
        n = min(chunk, size - sent)
        piece = counter.to_bytes(8, "big") + block[8:chunk]
        yield piece[:n]
        sent += n
        counter += 1


def soakConfig(
    listen: str,
    ports: dict[str, int],
    inspectDelay: float = 2.0,
    routeOptions: Sequence[str] = (),
) -> str:
    """
    The demux configuration the mixed soak expects: one route per backend
    in L{ROUTES}, in that order.

    @param routeOptions: TOML lines (C{"splice = false"}) added to every
        route, to soak a variant.
    """
    backend = {name: f"tcp:127.0.0.1:{port}" for name, port in ports.items()}
    extra = "".join(f"{line}\n" for line in routeOptions)
    text = f"""\
# Written by python -m soak.
listen = ["{listen}"]
inspect_delay = {inspectDelay:g}

[[routes]]
name = "magic"
match.prefix = "{MAGIC.hex()}"
backend = "{backend['magic']}"

[[routes]]
name = "tls-a"
match.tls.sni = ["a.soak.test"]
backend = "{backend['tls-a']}"

[[routes]]
name = "tls-b"
match.tls.sni = ["b.soak.test", "*.b.soak.test"]
backend = "{backend['tls-b']}"

[[routes]]
name = "relay"
match.tls = {{ alpn = ["bep-relay"], no_sni = true }}
backend = "{backend['relay']}"

[[routes]]
name = "http"
match.http = {{}}
backend = "{backend['http']}"
"""
    return re.sub(r'(backend = "[^"]*"\n)', lambda m: m.group(1) + extra, text)


# Backends.


class TagEcho(asyncio.Protocol):
    """
    Greets with C{TAG:name}, then echoes until the client stops sending,
    with flow control both ways so a slow client cannot make it buffer
    without bound.
    """

    transport: asyncio.Transport

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"TAG:" + self.tag + b"\n")

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        # Returning False closes the transport once what is buffered is
        # written.
        return False


async def startBackends(base: int | None = None) -> dict[str, asyncio.Server]:
    """
    One tagged echo server per route, on C{base}, C{base + 1}... or on free
    ports.
    """
    loop = asyncio.get_running_loop()
    servers: dict[str, asyncio.Server] = {}
    for index, name in enumerate(ROUTES):
        tag = name.encode()
        servers[name] = await loop.create_server(
            lambda tag=tag: TagEcho(tag),  # type: ignore[misc]
            "127.0.0.1",
            0 if base is None else base + index,
            backlog=1024,
            reuse_address=True,
        )
    return servers


def serverPort(server: asyncio.Server) -> int:
    """
    The port an asyncio server listens on.
    """
    return int(server.sockets[0].getsockname()[1])


# Running demux.


def twistdCommand(*args: str) -> list[str]:
    """
    The command that runs this interpreter's C{twistd}.
    """
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *args]


def freePort() -> int:
    """
    A loopback TCP port for demux that no other socket can be given before
    demux binds it (L{demux.testing.reservePort}).
    """
    return reservePort()


def waitForPort(port: int, timeout: float = 15.0) -> None:
    """
    Block until something accepts connections on loopback C{port}.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


@dataclass
class RunningDemux:
    """
    A C{twistd -n demux} this module started.
    """

    process: subprocess.Popen[bytes]
    port: int
    logPath: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.logPath.read_text(errors="replace")


@contextmanager
def runDemux(config: str, port: int) -> Iterator[RunningDemux]:
    """
    Run C{twistd -n demux} with the TOML C{config} until the block ends,
    then stop it with SIGTERM (and SIGKILL if it does not stop).
    """
    with tempfile.TemporaryDirectory(prefix="demux-soak-") as d:
        directory = Path(d)
        configPath = directory / "demux.toml"
        configPath.write_text(config)
        logPath = directory / "twistd.log"
        process = subprocess.Popen(
            twistdCommand(
                "-n", "--logfile", str(logPath), "--pidfile", "",
                "demux", "--config", str(configPath),
            ),
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            waitForPort(port)
            yield RunningDemux(process, port, logPath)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# The mixed soak.


@dataclass
class KindStats:
    """
    What happened to the connections of one kind.

    @ivar late: clients that the soak itself, short of CPU, was too slow to
        send their first bytes within the inspect delay; demux was right to
        close them, so they are neither errors nor successes.
    """

    count: int = 0
    ok: int = 0
    errors: int = 0
    misroutes: int = 0
    late: int = 0
    bytesChecked: int = 0


@dataclass
class SoakReport:
    """
    The result of a mixed soak.
    """

    target: str
    duration: float = 0.0
    concurrency: int = 0
    kinds: dict[str, KindStats] = field(default_factory=dict)
    errorSamples: list[str] = field(default_factory=list)
    errorPeers: list[str] = field(default_factory=list)
    errorLogs: dict[str, list[str]] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)
    pid: int | None = None
    logProblems: int | None = None

    @property
    def connections(self) -> int:
        return sum(k.count for k in self.kinds.values())

    @property
    def errors(self) -> int:
        return sum(k.errors for k in self.kinds.values())

    @property
    def misroutes(self) -> int:
        return sum(k.misroutes for k in self.kinds.values())

    @property
    def bytesChecked(self) -> int:
        return sum(k.bytesChecked for k in self.kinds.values())

    @property
    def late(self) -> int:
        return sum(k.late for k in self.kinds.values())

    def record(
        self,
        kind: str,
        outcome: str,
        checked: int,
        detail: str = "",
        peer: str | None = None,
    ) -> None:
        stats = self.kinds.setdefault(kind, KindStats())
        stats.count += 1
        stats.bytesChecked += checked
        if outcome == "ok":
            stats.ok += 1
        elif outcome == "misroute":
            stats.misroutes += 1
        elif outcome == "late":
            stats.late += 1
        else:
            stats.errors += 1
        if outcome != "ok" and len(self.errorSamples) < 20:
            where = f" ({peer})" if peer else ""
            self.errorSamples.append(f"{kind}{where}: {outcome}: {detail}")
            if peer:
                self.errorPeers.append(peer)

    def attachLog(self, log: str) -> None:
        """
        Keep demux's log lines about each sampled failure's connection.
        """
        for peer in self.errorPeers:
            mark = f" {peer} "
            self.errorLogs[peer] = [
                line for line in log.splitlines() if mark in line
            ][:10]

    def asDict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "duration": self.duration,
            "concurrency": self.concurrency,
            "connections": self.connections,
            "errors": self.errors,
            "misroutes": self.misroutes,
            "bytesChecked": self.bytesChecked,
            "kinds": {k: vars(v) for k, v in sorted(self.kinds.items())},
            "late": self.late,
            "errorSamples": self.errorSamples,
            "errorLogs": self.errorLogs,
            "pid": self.pid,
            "samples": self.samples,
            "logProblems": self.logProblems,
        }

    def text(self) -> str:
        lines = [
            f"demux soak: {self.duration:.1f}s against {self.target}, "
            f"{self.concurrency} clients at once",
            f"connections: {self.connections} "
            f"({self.connections / max(self.duration, 1e-9):.1f}/s)",
            f"  {'kind':<14}{'count':>9}{'ok':>9}{'errors':>8}{'misroutes':>10}"
            f"{'late':>6}{'bytes checked':>15}",
        ]
        for name, k in sorted(self.kinds.items()):
            lines.append(
                f"  {name:<14}{k.count:>9}{k.ok:>9}{k.errors:>8}{k.misroutes:>10}"
                f"{k.late:>6}{k.bytesChecked:>15}"
            )
        lines.append(
            f"errors: {self.errors}, misroutes: {self.misroutes}, "
            f"bytes checked: {self.bytesChecked} "
            f"({self.bytesChecked / 2**20:.1f} MiB); late (the soak's own "
            f"clients too slow to send their first bytes in time): {self.late}"
        )
        for sample in self.errorSamples:
            lines.append(f"  {sample}")
            for peer, logLines in self.errorLogs.items():
                if f"({peer})" in sample:
                    lines.extend(f"      {line}" for line in logLines)
        if self.samples:
            rss = [s["rss"] for s in self.samples]
            fds = [s["fds"] for s in self.samples]
            sockets = [s["sockets"] for s in self.samples]
            lines.append(
                f"demux pid {self.pid}: RSS start {rss[0] / 2**20:.1f} MiB, "
                f"min {min(rss) / 2**20:.1f}, max {max(rss) / 2**20:.1f}, "
                f"end {rss[-1] / 2**20:.1f}; fds start {fds[0]:.0f}, "
                f"max {max(fds):.0f}, end {fds[-1]:.0f} (sockets start "
                f"{sockets[0]:.0f}, end {sockets[-1]:.0f})"
            )
            lines.append("  RSS and descriptors over time:")
            for s in self.samples:
                lines.append(
                    f"    t={s['t']:7.1f}s  RSS {s['rss'] / 2**20:7.1f} MiB  "
                    f"fds {s['fds']:6.0f} (sockets {s['sockets']:5.0f}, pipes "
                    f"{s['pipes']:5.0f})  cpu {s['cpu']:8.1f}s"
                )
        if self.logProblems is not None:
            lines.append(f"tracebacks or unhandled errors in demux's log: {self.logProblems}")
        return "\n".join(lines)


class _Outcome(Exception):
    """
    How a connection ended when it was not as expected.
    """

    def __init__(self, outcome: str, detail: str, peer: str | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.peer = peer


@dataclass(frozen=True)
class _Kind:
    """
    One kind of client: what it sends first, where it must land (L{None}:
    it must be refused), and how.

    @ivar pieces: how many pieces the first bytes are sent in.
    @ivar pause: seconds between those pieces.
    @ivar undecided: a client whose first bytes never decide a route: it
        must be closed at the inspect delay, neither early nor late.
    """

    name: str
    first: bytes
    route: str | None
    weight: int
    pieces: int = 1
    pause: float = 0.0
    undecided: bool = False


def _kinds() -> list[_Kind]:
    helloA = clientHello("a.soak.test", ["h2", "http/1.1"])
    helloB = clientHello("x.b.soak.test")
    relay = clientHello(None, ["bep-relay"])
    unknown = clientHello("unknown.soak.test")
    http = b"GET /soak HTTP/1.1\r\nHost: soak.test\r\nUser-Agent: soak\r\n\r\n"
    # A TLS record that announces 512 bytes and never delivers them.
    slowloris = bytes.fromhex("160301020001000200fc0303") + bytes(range(20))
    return [
        _Kind("tls-sni", helloA, "tls-a", 20),
        _Kind("tls-sni-wild", helloB, "tls-b", 10),
        _Kind("alpn-no-sni", relay, "relay", 15),
        _Kind("magic", MAGIC, "magic", 20),
        _Kind("http", http, "http", 15),
        _Kind("junk", b"\x00\xffjunk\x01", None, 5),
        _Kind("unknown-sni", unknown, None, 5),
        _Kind("slow-magic", MAGIC, "magic", 4, pieces=4, pause=0.1),
        _Kind("slow-tls", helloA, "tls-a", 3, pieces=5, pause=0.1),
        _Kind("silent", b"", None, 1, undecided=True),
        _Kind("slowloris", slowloris, None, 1, pieces=len(slowloris), pause=0.5,
              undecided=True),
    ]


def _payloadSize(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.7:
        return rng.randrange(0, 4096)
    if roll < 0.95:
        return rng.randrange(4096, 65536)
    return rng.randrange(65536, 1 << 20)


async def _routed(
    host: str,
    port: int,
    kind: _Kind,
    payload: bytes,
    timeout: float,
    inspectDelay: float,
) -> int:
    """
    Send C{kind}'s first bytes and C{payload}, half-close, and check that the
    answer is C{kind.route}'s tag and then exactly what was sent.
    """
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    local = writer.get_extra_info("sockname")
    peer = f"{local[0]}:{local[1]}"
    firstSent: list[float] = []
    try:
        async def send() -> None:
            first = kind.first
            step = -(-len(first) // kind.pieces) if first else 1
            for i in range(0, len(first), step):
                writer.write(first[i : i + step])
                await writer.drain()
                if kind.pause and i + step < len(first):
                    await asyncio.sleep(kind.pause)
            firstSent.append(time.monotonic() - started)
            for i in range(0, len(payload), 65536):
                writer.write(payload[i : i + 65536])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        try:
            async with asyncio.timeout(timeout):
                line = await reader.readline()
                if not line:
                    took = firstSent[0] if firstSent else time.monotonic() - started
                    if took >= inspectDelay:
                        raise _Outcome(
                            "late",
                            f"the soak took {took:.2f}s to send the first bytes",
                            peer,
                        )
                    raise _Outcome(
                        "error",
                        f"closed before any answer (first bytes sent in "
                        f"{took:.3f}s)",
                        peer,
                    )
                if not line.startswith(b"TAG:") or not line.endswith(b"\n"):
                    raise _Outcome("error", f"not a tag: {line[:40]!r}", peer)
                tag = line[4:-1].decode(errors="replace")
                if tag != kind.route:
                    raise _Outcome("misroute", f"landed on {tag!r}", peer)
                expected = memoryview(kind.first + payload)
                offset = 0
                while data := await reader.read(1 << 18):
                    if expected[offset : offset + len(data)] != data:
                        raise _Outcome(
                            "error",
                            f"echo differs at byte {offset} "
                            f"(of {len(expected)}; got {len(data)} more)",
                            peer,
                        )
                    offset += len(data)
                if offset != len(expected):
                    raise _Outcome(
                        "error",
                        f"closed after {offset} of {len(expected)} bytes",
                        peer,
                    )
                await sender
                return offset
        finally:
            sender.cancel()
    finally:
        writer.close()


async def _refused(
    host: str, port: int, kind: _Kind, inspectDelay: float, timeout: float
) -> int:
    """
    Send C{kind}'s first bytes (slowly if it says so) and check that demux
    closes the connection without a byte, and for an undecided client at
    the inspect delay.
    """
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    local = writer.get_extra_info("sockname")
    peer = f"{local[0]}:{local[1]}"
    try:
        async def send() -> None:
            for i, b in enumerate(kind.first):
                if kind.pieces == 1:
                    writer.write(kind.first)
                    break
                writer.write(bytes([b]))
                if i + 1 < len(kind.first):
                    await asyncio.sleep(kind.pause)

        sender = asyncio.ensure_future(send())
        try:
            async with asyncio.timeout(timeout):
                try:
                    data = await reader.read(1024)
                except ConnectionResetError:
                    data = b""
        finally:
            sender.cancel()
        elapsed = time.monotonic() - started
        if data:
            raise _Outcome("misroute", f"was answered: {data[:40]!r}", peer)
        if kind.undecided and not (
            inspectDelay - 0.05 <= elapsed <= inspectDelay + 3.0
        ):
            raise _Outcome(
                "error",
                f"closed after {elapsed:.2f}s, not at the inspect delay "
                f"({inspectDelay:g}s)",
                peer,
            )
        return 0
    finally:
        writer.close()


async def _client(
    host: str,
    port: int,
    kinds: list[_Kind],
    rng: random.Random,
    deadline: float,
    inspectDelay: float,
    report: SoakReport,
) -> None:
    weights = [k.weight for k in kinds]
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        try:
            if kind.route is None:
                checked = await _refused(
                    host, port, kind, inspectDelay, inspectDelay + 10
                )
            else:
                payload = rng.randbytes(_payloadSize(rng))
                checked = await _routed(host, port, kind, payload, 30, inspectDelay)
            report.record(kind.name, "ok", checked)
        except _Outcome as e:
            report.record(kind.name, e.outcome, 0, e.detail, e.peer)
        except TimeoutError:
            report.record(kind.name, "error", 0, "timed out")
        except OSError as e:
            report.record(kind.name, "error", 0, f"{type(e).__name__}: {e}")


def _sample(pid: int, started: float, report: SoakReport) -> bool:
    """
    Add one reading of demux's RSS, fds and CPU time; False if it is gone.
    """
    try:
        kinds = openFdKinds(pid)
        report.samples.append(
            {
                "t": time.monotonic() - started,
                "rss": rssBytes(pid),
                "fds": sum(kinds.values()),
                "sockets": kinds["socket"],
                "pipes": kinds["pipe"],
                "cpu": cpuSeconds(pid),
            }
        )
    except (OSError, ValueError):
        return False
    return True


async def _sampler(pid: int, started: float, interval: float, report: SoakReport) -> None:
    while _sample(pid, started, report):
        await asyncio.sleep(interval)


async def mixedSoak(
    host: str,
    port: int,
    duration: float,
    concurrency: int,
    inspectDelay: float,
    pid: int | None = None,
    sampleInterval: float = 10.0,
    seed: int | None = None,
) -> SoakReport:
    """
    Run C{concurrency} clients of mixed kinds against demux at C{host}:C{port}
    for C{duration} seconds (each finishes its last connection), checking
    each one; the backends must already be running.
    """
    report = SoakReport(f"{host}:{port}", concurrency=concurrency, pid=pid)
    kinds = _kinds()
    master = random.Random(seed)
    started = time.monotonic()
    sampler = None
    if pid is not None:
        sampler = asyncio.ensure_future(
            _sampler(pid, started, sampleInterval, report)
        )
    try:
        await asyncio.gather(
            *[
                _client(
                    host, port, kinds, random.Random(master.random()),
                    started + duration, inspectDelay, report,
                )
                for _ in range(concurrency)
            ]
        )
    finally:
        report.duration = time.monotonic() - started
        if sampler is not None and pid is not None:
            sampler.cancel()
            # One last sample, once demux has seen the last connections close.
            await asyncio.sleep(0.5)
            _sample(pid, started, report)
    return report


def _logProblems(log: str) -> int:
    return sum(
        1 for line in log.splitlines() if "Traceback" in line or "Unhandled" in line
    )


async def _selfContainedMixed(args: argparse.Namespace) -> SoakReport:
    servers = await startBackends()
    try:
        port = freePort()
        config = soakConfig(
            f"tcp:{port}:interface=127.0.0.1:backlog=1024",
            {name: serverPort(s) for name, s in servers.items()},
            args.inspect_delay,
            args.route_option,
        )
        with runDemux(config, port) as demux:
            report = await mixedSoak(
                "127.0.0.1", port, args.duration, args.concurrency,
                args.inspect_delay, demux.pid, args.sample_interval, args.seed,
            )
            log = demux.log()
            report.logProblems = _logProblems(log)
            report.attachLog(log)
        return report
    finally:
        for server in servers.values():
            server.close()


async def _targetMixed(args: argparse.Namespace) -> SoakReport:
    servers = await startBackends(args.backend_base)
    try:
        host, port = args.target
        return await mixedSoak(
            host, port, args.duration, args.concurrency, args.inspect_delay,
            args.pid, args.sample_interval, args.seed,
        )
    finally:
        for server in servers.values():
            server.close()


# Slowloris.


@dataclass
class _Held:
    sock: socket.socket
    kind: str
    script: bytes
    opened: float
    connected: float | None = None
    closed: float | None = None
    sent: int = 0
    received: int = 0
    reset: bool = False


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def slowloris(
    host: str,
    port: int,
    slow: int,
    silent: int,
    openRate: float = 4000.0,
    byteInterval: float = 1.0,
    timeout: float = 60.0,
    announce: Any = None,
) -> dict[str, Any]:
    """
    Hold C{slow} connections that send a byte every C{byteInterval} seconds
    and C{silent} that send nothing, opened at C{openRate} a second, until
    demux closes them all or C{timeout} passes; return how long each lived,
    measured from its connection's completion (C{Lifetime}: demux accepted
    it no later) and from the C{connect} call (C{LifetimeFromOpen}: demux
    accepted it no earlier), so that the two bracket demux's own timer.

    @param announce: called with the count once every connection is
        connected (a test samples demux's memory then).
    """
    raiseFileLimit(slow + silent + 256)
    tls = bytes.fromhex("160301020001000200fc0303") + bytes(range(32)) * 16
    http = b"GET /" + b"a" * 1024
    selector = selectors.DefaultSelector()
    conns: list[_Held] = []
    sends: list[tuple[float, int]] = []
    kinds = ["slow"] * slow + ["silent"] * silent
    random.Random(1).shuffle(kinds)
    rng = random.Random(2)
    started = time.monotonic()
    deadline = started + timeout
    failures = 0
    openCount = 0
    connectedCount = 0
    closedCount = 0
    announced = False
    maxHeld = 0
    allConnectedAt = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        due = min(len(kinds), int((now - started) * openRate) + 1)
        while openCount < due:
            kind = kinds[openCount]
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = s.connect_ex((host, port))
            index = len(conns)
            script = b"" if kind == "silent" else (tls if index % 2 else http)
            held = _Held(s, kind, script, time.monotonic())
            conns.append(held)
            openCount += 1
            if err not in (0, 115):  # EINPROGRESS
                failures += 1
                held.closed = held.opened
                closedCount += 1
                s.close()
                continue
            selector.register(s, selectors.EVENT_WRITE, index)
        if closedCount == len(kinds):
            break
        timeoutNext = 0.05
        if sends:
            timeoutNext = max(0.0, min(timeoutNext, sends[0][0] - time.monotonic()))
        for key, _ in selector.select(timeoutNext):
            held = conns[key.data]
            now = time.monotonic()
            if held.connected is None:
                error = held.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    failures += 1
                    held.closed = now
                    closedCount += 1
                    selector.unregister(held.sock)
                    held.sock.close()
                    continue
                held.connected = now
                connectedCount += 1
                selector.modify(held.sock, selectors.EVENT_READ, key.data)
                if held.script:
                    first = now + rng.random() * byteInterval
                    heapq.heappush(sends, (first, key.data))
                continue
            try:
                data = held.sock.recv(4096)
            except ConnectionResetError:
                data = b""
                held.reset = True
            except BlockingIOError:
                continue
            if data:
                held.received += len(data)
                continue
            held.closed = now
            closedCount += 1
            selector.unregister(held.sock)
            held.sock.close()
        now = time.monotonic()
        while sends and sends[0][0] <= now:
            _, index = heapq.heappop(sends)
            held = conns[index]
            if held.closed is not None or held.sent >= len(held.script):
                continue
            try:
                held.sock.send(held.script[held.sent : held.sent + 1])
                held.sent += 1
                heapq.heappush(sends, (now + byteInterval, index))
            except (BlockingIOError, InterruptedError):
                heapq.heappush(sends, (now + 0.01, index))
            except OSError:
                # The read side will see the close.
                pass
        heldNow = connectedCount - (closedCount - failures)
        maxHeld = max(maxHeld, heldNow)
        if not announced and connectedCount + failures == len(kinds):
            announced = True
            allConnectedAt = time.monotonic() - started
            if announce is not None:
                announce(heldNow)
    for held in conns:
        if held.closed is None:
            selector.unregister(held.sock)
            held.sock.close()
    selector.close()
    result: dict[str, Any] = {
        "slow": slow,
        "silent": silent,
        "connectFailures": failures,
        "maxHeld": maxHeld,
        "allConnectedAfter": allConnectedAt,
        "elapsed": time.monotonic() - started,
    }
    for kind in ("slow", "silent"):
        mine = [c for c in conns if c.kind == kind and c.connected is not None]
        lifetimes = [
            c.closed - c.connected
            for c in mine
            if c.closed is not None and c.connected is not None
        ]
        fromOpen = [c.closed - c.opened for c in mine if c.closed is not None]
        result[kind + "Closed"] = len(lifetimes)
        result[kind + "LifetimeFromOpen"] = _summary(fromOpen)
        result[kind + "NotClosed"] = sum(1 for c in mine if c.closed is None)
        result[kind + "Lifetime"] = _summary(lifetimes)
        result[kind + "BytesSent"] = sum(c.sent for c in mine)
        result[kind + "BytesReceived"] = sum(c.received for c in mine)
    return result


# A slow reader.


def patternServer(size: int) -> socket.socket:
    """
    A listening socket whose connections, once they have sent anything, are
    sent C{size} bytes of L{pattern} and closed (one thread per connection).
    """
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(1024)
                for chunk in pattern(size):
                    conn.sendall(chunk)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener


def slowReader(
    host: str,
    port: int,
    size: int,
    rate: float,
    pid: int | None,
    first: bytes = MAGIC,
    sampleInterval: float = 1.0,
    progress: Any = None,
) -> dict[str, Any]:
    """
    Read C{size} bytes through demux at C{rate} bytes a second (after
    sending C{first} to pick the route) and check them; sample demux's RSS
    meanwhile.
    """
    expected = hashlib.sha256()
    for chunk in pattern(size):
        expected.update(chunk)
    digest = hashlib.sha256()
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    nextSample = started
    received = 0
    with socket.create_connection((host, port), timeout=60) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.sendall(first)
        step = max(1, min(1 << 16, int(rate / 50)))
        while True:
            data = s.recv(step)
            if not data:
                break
            digest.update(data)
            received += len(data)
            now = time.monotonic()
            if pid is not None and now >= nextSample:
                samples.append((now - started, rssBytes(pid)))
                nextSample = now + sampleInterval
                if progress is not None:
                    progress(received, samples[-1][1])
            ahead = started + received / rate - now
            if ahead > 0:
                time.sleep(ahead)
    rss = [r for _, r in samples]
    return {
        "bytes": received,
        "expected": size,
        "intact": received == size and digest.digest() == expected.digest(),
        "seconds": time.monotonic() - started,
        "rssFirst": rss[0] if rss else None,
        "rssMax": max(rss) if rss else None,
        "rssGrowth": (max(rss) - rss[0]) if rss else None,
        "samples": samples,
    }


def _selfContainedSlowReader(args: argparse.Namespace) -> dict[str, Any]:
    backend = patternServer(args.bytes)
    try:
        port = freePort()
        config = f"""\
listen = ["tcp:{port}:interface=127.0.0.1"]
inspect_delay = 2
[[routes]]
name = "bulk"
match.prefix = "{MAGIC.hex()}"
backend = "tcp:127.0.0.1:{backend.getsockname()[1]}"
"""
        with runDemux(config, port) as demux:
            baseline = rssBytes(demux.pid)

            def progress(received: int, rss: int) -> None:
                if not args.json:
                    print(
                        f"  {received / 2**20:9.1f} MiB read, demux RSS "
                        f"{rss / 2**20:.1f} MiB",
                        flush=True,
                    )

            result = slowReader(
                "127.0.0.1", port, args.bytes, args.rate, demux.pid,
                sampleInterval=args.sample_interval, progress=progress,
            )
            result["rssBeforeConnection"] = baseline
            result["logProblems"] = _logProblems(demux.log())
        return result
    finally:
        backend.close()


# The command line.


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m soak",
        description=(
            "Mixed traffic, slowloris clients or a slow reader against a demux "
            "on loopback, with a report of errors, misroutes and demux's memory."
        ),
    )
    parser.add_argument("--mode", choices=["mixed", "slowloris", "slow-reader"],
                        default="mixed")
    parser.add_argument("--target", type=hostPort,
                        help="HOST:PORT of a running demux")
    parser.add_argument("--self-contained", action="store_true",
                        help="start the backends and a twistd demux too")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of mixed traffic (default 60)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="clients at once in mixed mode (default 32)")
    parser.add_argument("--pid", type=int,
                        help="demux's process id, to sample its RSS and fds")
    parser.add_argument("--sample-interval", type=float, default=10.0,
                        help="seconds between RSS samples (default 10)")
    parser.add_argument("--inspect-delay", type=float, default=2.0,
                        help="the target's inspect_delay (default 2)")
    parser.add_argument("--backend-base", type=int,
                        help="listen for the backends on this port and the "
                        f"next {len(ROUTES) - 1} (with --target or --print-config)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the demux configuration for --backend-base "
                        "and --listen, and exit")
    parser.add_argument("--listen", default="tcp:8443:interface=127.0.0.1",
                        help="the listen endpoint --print-config writes")
    parser.add_argument("--seed", type=int, help="for a repeatable mix")
    parser.add_argument("--route-option", action="append", default=[],
                        type=_routeOption, metavar="KEY=VALUE",
                        help="a TOML key = value added to every route of the "
                        "configuration (--self-contained, --print-config), "
                        "such as splice=false; repeatable")
    parser.add_argument("--slow", type=int, default=2000,
                        help="slowloris clients sending a byte at a time")
    parser.add_argument("--silent", type=int, default=2000,
                        help="slowloris clients sending nothing")
    parser.add_argument("--byte-interval", type=float, default=1.0,
                        help="seconds between a slow client's bytes")
    parser.add_argument("--open-rate", type=float, default=4000.0,
                        help="slowloris connections opened per second")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="give up on slowloris clients after this long")
    parser.add_argument("--bytes", type=parseSize, default=parseSize("1GiB"),
                        help="slow-reader: bytes to relay (default 1GiB)")
    parser.add_argument("--rate", type=parseSize, default=parseSize("1MiB"),
                        help="slow-reader: bytes read per second (default 1MiB)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.print_config:
        if args.backend_base is None:
            parser.error("--print-config needs --backend-base")
    elif args.mode == "slow-reader":
        args.self_contained = True
    elif args.self_contained == (args.target is not None):
        parser.error("give either --target HOST:PORT or --self-contained")
    elif args.mode == "mixed" and args.target and args.backend_base is None:
        parser.error("--target needs --backend-base, the ports the demux "
                     "configuration routes to (see --print-config)")
    elif args.mode == "slowloris" and args.self_contained:
        parser.error("slowloris mode needs --target")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line; 0 if every connection was as expected.
    """
    args = _arguments(argv)
    if args.print_config:
        print(
            soakConfig(
                args.listen,
                {n: args.backend_base + i for i, n in enumerate(ROUTES)},
                args.inspect_delay,
                args.route_option,
            ),
            end="",
        )
        return 0
    if args.mode == "slowloris":
        host, port = args.target

        def announce(count: int) -> None:
            print(f"HELD {count}", flush=True)

        result = slowloris(
            host, port, args.slow, args.silent, args.open_rate,
            args.byte_interval, args.timeout, announce,
        )
        print(json.dumps(result) if args.json else json.dumps(result, indent=2))
        notClosed = result["slowNotClosed"] + result["silentNotClosed"]
        return 0 if notClosed == 0 and result["connectFailures"] == 0 else 1
    if args.mode == "slow-reader":
        if not args.json:
            print(
                f"slow reader: {args.bytes} bytes at {args.rate} bytes/s "
                f"(about {args.bytes / args.rate:.0f}s)",
                flush=True,
            )
        outcome = _selfContainedSlowReader(args)
        if args.json:
            print(json.dumps(outcome))
        else:
            print(
                f"read {outcome['bytes']} bytes in {outcome['seconds']:.1f}s, "
                f"intact: {outcome['intact']}; demux RSS before "
                f"{outcome['rssBeforeConnection'] / 2**20:.1f} MiB, first sample "
                f"{(outcome['rssFirst'] or 0) / 2**20:.1f} MiB, max "
                f"{(outcome['rssMax'] or 0) / 2**20:.1f} MiB, growth "
                f"{(outcome['rssGrowth'] or 0) / 2**20:.1f} MiB; "
                f"log problems: {outcome['logProblems']}"
            )
        return 0 if outcome["intact"] and not outcome["logProblems"] else 1
    raiseFileLimit(args.concurrency * 4 + 256)
    runner = _selfContainedMixed if args.self_contained else _targetMixed
    report = asyncio.run(runner(args))
    print(json.dumps(report.asDict()) if args.json else report.text(), flush=True)
    bad = report.errors or report.misroutes or report.logProblems
    return 1 if bad else 0
