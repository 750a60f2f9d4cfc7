"""
Run the demux benchmark: every workload, interleaved across every proxy,
repeated, bounded in time. See C{README.rst} for what it measures and why.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (python bench/run.py): make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _procstat as procstat
from bench._clients import (
    MAGIC,
    SNI,
    buildConnload,
    bulk,
    connload,
    holdConnections,
    timeToFirstByte,
    wrk,
)
from bench._proxies import (
    PROXIES,
    ROOT,
    Backends,
    Running,
    available,
    environment,
    makeCertificate,
    snapshot,
    startHttpBackend,
    startProxy,
    which,
)
from bench._report import medians, plot, rstTable, table, writeJson
from bench.backend import COMMAND
from demux.testing import clientHello
from tests._process import freePort

RESULTS = Path(__file__).resolve().parent / "results"
DOCS_PLOT = ROOT / "docs" / "_static" / "performance.png"
APT = "apt-get install -y haproxy wrk sslh gcc"
PACKAGES = {"haproxy": "haproxy", "wrk": "wrk", "sslh": "sslh", "cc": "gcc"}


def installMissing() -> list[str]:
    """
    Install what the benchmark drives and is missing, from Debian's packages
    (and matplotlib, for the plot, from PyPI), when running as root where
    C{apt-get} exists, so that one command runs the benchmark on a fresh
    machine; otherwise leave it to the operator.

    @return: the tools still missing afterwards.
    """
    missing = [tool for tool in PACKAGES if which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = [PACKAGES[tool] for tool in missing]
        log(f"installing {', '.join(packages)} from Debian's packages ...")
        quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=quiet, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages],
            env=quiet, check=False, stdout=subprocess.DEVNULL,
        )
        missing = [tool for tool in PACKAGES if which(tool) is None]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.geteuid() == 0:
            log("installing matplotlib, for the plot ...")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "-r",
                 str(Path(__file__).resolve().parent / "requirements.txt")],
                check=False,
            )
    return missing


@dataclass(frozen=True)
class Settings:
    """
    How much of each workload one repetition runs.
    """

    reps: int
    bulkBytes: int
    rateSeconds: float
    httpSeconds: int
    ttfbCount: int
    memoryReps: int
    memoryConnections: int
    budget: float


FULL = Settings(
    reps=3,
    bulkBytes=1 << 30,
    rateSeconds=2.0,
    httpSeconds=2,
    ttfbCount=1000,
    memoryReps=2,
    memoryConnections=9000,
    budget=540.0,
)
QUICK = Settings(
    reps=1,
    bulkBytes=256 << 20,
    rateSeconds=1.0,
    httpSeconds=1,
    ttfbCount=300,
    memoryReps=1,
    memoryConnections=2000,
    budget=120.0,
)

# sslh-select gives up past a few hundred connections (select()), and
# sslh-fork holds a process per connection: hold fewer with them.
MEMORY_CAP = {"sslh-select": 400, "sslh-fork": 1000}


def log(message: str) -> None:
    print(message, flush=True)


def machineBusy(seconds: float = 1.0) -> float:
    """
    The fraction of all cores that was busy over the next C{seconds}.
    """

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def machineCpuSeconds() -> float:
    """
    Busy CPU seconds of the whole machine since boot.
    """
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / procstat.TICKS


def machineInfo() -> dict[str, object]:
    """
    What the numbers were measured on.
    """
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=10, env=environment()
            )
        except OSError:
            return "missing"
        return (out.stdout or out.stderr).strip().splitlines()[0]

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, cwd=ROOT, timeout=10,
        ).stdout.strip()
    except OSError:
        commit = ""
    import twisted

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memoryGiB": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "haproxy": version(["haproxy", "-v"]),
        "sslh": version(["sslh", "-V"]),
        "wrk": version(["wrk", "-v"]),
        "demuxCommit": commit,
        "openFilesLimit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


class Bench:
    """
    One benchmark run: the backends, the proxies, the samples so far.
    """

    def __init__(
        self,
        settings: Settings,
        proxies: list[str],
        work: Path,
        demuxRoot: Path,
        baselines: dict[str, Path] | None = None,
    ) -> None:
        self.settings = settings
        self.demuxRoot = demuxRoot
        self.baselines = baselines or {}
        self.proxies = proxies
        self.work = work
        self.records: list[dict] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.running: dict[str, Running] = {}
        self.hello = clientHello(SNI)
        self.connload = buildConnload(work / "build")
        self.payloads = {
            "magic": work / "magic.bin",
            "sni": work / "sni.bin",
        }
        rp = COMMAND.pack(b"RP", 0)
        self.payloads["magic"].write_bytes(MAGIC + rp)
        self.payloads["sni"].write_bytes(self.hello + rp)
        self.preambles = {"magic": MAGIC, "sni": self.hello}
        self.deadline = time.monotonic() + settings.budget
        self.skipped: list[str] = []
        self.certificate = makeCertificate(work / "tls")[0]

    # -- processes ---------------------------------------------------------

    def startBackends(self) -> None:
        """
        The bulk/tiny-reply backend (one process, two ports) and HAProxy as
        the HTTP keep-alive backend.
        """
        magic, sni, http = freePort(), freePort(), freePort()
        backend = subprocess.Popen(
            [sys.executable, "-m", "bench.backend", f"{magic}:{len(MAGIC)}",
             f"{sni}:{len(self.hello)}"],
            cwd=ROOT, stdout=subprocess.PIPE,
        )
        self.children.append(backend)
        assert backend.stdout is not None
        if backend.stdout.readline().strip() != b"ready":
            raise RuntimeError("the backend did not start")
        self.backendPid = backend.pid
        self.children.append(startHttpBackend(http, self.work))
        self.backends = Backends(magic, sni, http)

    def rootFor(self, name: str) -> Path:
        """
        The project tree proxy C{name} runs from: a baseline column
        (C{demux@REV}) its own snapshot, every other demux the measured one.
        """
        return self.baselines.get(name, self.demuxRoot)

    def startProxies(self) -> None:
        for name in self.proxies:
            self.running[name] = startProxy(
                name, freePort(), self.backends, 5, self.work / name, self.rootFor(name),
                self.certificate,
            )
            log(f"  started {name} (pid {self.running[name].pid})")

    def stopAll(self) -> None:
        for running in self.running.values():
            running.stop()
        for child in self.children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()

    # -- bookkeeping -------------------------------------------------------

    def record(self, metric: str, proxy: str, rep: int, value: float, **extra: object) -> None:
        self.records.append(
            {"metric": metric, "proxy": proxy, "rep": rep, "value": value, **extra}
        )

    def timeLeft(self) -> bool:
        return time.monotonic() < self.deadline

    def cpuFunctions(self, proxy: Running) -> tuple[Callable[[], object], Callable[[object], float]]:
        pid = proxy.pid
        if pid is None:
            return (lambda: None), (lambda before: 0.0)

        def since(before: object) -> float:
            assert isinstance(before, procstat.CpuSample)
            return procstat.cpuSample(pid).since(before)

        return (lambda: procstat.cpuSample(pid)), since

    # -- workloads ---------------------------------------------------------

    def bulk(self, rep: int, proxy: Running) -> None:
        cpu, since = self.cpuFunctions(proxy)
        for direction in ("up", "down"):
            result = bulk(
                proxy.ports.sni, self.hello, direction, self.settings.bulkBytes, cpu, since
            )
            mbps = result.nbytes / result.seconds / 1e6
            self.record(f"bulk-{direction}", proxy.name, rep, mbps, seconds=result.seconds)
            if proxy.pid is not None:
                self.record(
                    f"cpu-{direction}", proxy.name, rep,
                    result.cpuSeconds / (result.nbytes / 1e9),
                )
            log(f"    {proxy.name:15} bulk {direction:4} {mbps:8.0f} MB/s"
                f"  proxy cpu {result.cpuSeconds:.2f}s")

    def rates(self, rep: int, proxy: Running) -> None:
        for route in ("sni", "magic"):
            for concurrency in (1, 50):
                port = getattr(proxy.ports, route)
                cpu, since = self.cpuFunctions(proxy)
                before = cpu()
                result = connload(
                    self.connload, port, self.payloads[route], concurrency,
                    self.settings.rateSeconds, threads=1 if concurrency == 1 else 2,
                )
                busy = since(before) / result.seconds
                self.record(
                    f"rate-{route}-c{concurrency}", proxy.name, rep, result.perSecond,
                    errors=result.errors, proxyCpuShare=busy,
                )
                log(f"    {proxy.name:15} {route:5} c={concurrency:<3}"
                    f" {result.perSecond:8.0f} conn/s  errors {result.errors}"
                    f"  proxy busy {busy:.0%}")

    def http(self, rep: int, proxy: Running) -> None:
        cpu, since = self.cpuFunctions(proxy)
        before = cpu()
        result = wrk(
            f"http://127.0.0.1:{proxy.ports.http}/", 50, 2, self.settings.httpSeconds
        )
        used = since(before)
        busy = used / self.settings.httpSeconds
        self.record(
            "http-c50", proxy.name, rep, result.requestsPerSecond,
            errors=result.errors, proxyCpuShare=busy,
        )
        if proxy.pid is not None and result.requests:
            self.record("http-cpu", proxy.name, rep, used / result.requests * 1e6)
        log(f"    {proxy.name:15} http  {result.requestsPerSecond:8.0f} req/s"
            f"  errors {result.errors}  proxy busy {busy:.0%}")

    def https(self, rep: int, proxy: Running) -> None:
        """
        HTTP keep-alive requests inside TLS that the proxy ends, forwarded
        as HTTP with the client's address: what ending TLS costs a request
        beside relaying it (L{http}).
        """
        if proxy.pid is None or proxy.name.startswith(("sslh", "demux@")):
            return
        cpu, since = self.cpuFunctions(proxy)
        before = cpu()
        result = wrk(
            f"https://127.0.0.1:{proxy.ports.http}/", 50, 2, self.settings.httpSeconds
        )
        used = since(before)
        self.record(
            "https-c50", proxy.name, rep, result.requestsPerSecond,
            errors=result.errors, proxyCpuShare=used / self.settings.httpSeconds,
        )
        if result.requests:
            self.record("https-cpu", proxy.name, rep, used / result.requests * 1e6)
        log(f"    {proxy.name:15} https {result.requestsPerSecond:8.0f} req/s"
            f"  errors {result.errors}  {used / max(1, result.requests) * 1e6:.0f} us CPU/request")

    def ttfb(self, rep: int, proxy: Running) -> None:
        for route in ("magic", "sni"):
            samples = timeToFirstByte(
                getattr(proxy.ports, route), self.preambles[route],
                self.settings.ttfbCount, budget=10,
            )
            samples.sort()
            p50 = samples[len(samples) // 2] * 1e6
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6
            self.record(f"ttfb-{route}-p50", proxy.name, rep, p50, samples=len(samples))
            self.record(f"ttfb-{route}-p99", proxy.name, rep, p99, samples=len(samples))
            log(f"    {proxy.name:15} ttfb {route:5} p50 {p50:6.0f} us  p99 {p99:6.0f} us")

    def memory(self, rep: int, name: str) -> None:
        """
        Memory per idle relayed connection and per undecided connection, each
        on a fresh proxy (memory freed by one test would otherwise be reused
        by the next and hide its cost) whose inspect delay outlasts the test.
        """
        for label, preamble in (("undecided", b""), ("relayed", MAGIC)):
            proxy = startProxy(
                name, freePort(), self.backends, 120,
                self.work / f"mem-{name}-{label}-{rep}", self.rootFor(name),
            )
            try:
                self._memory(rep, name, proxy, label, preamble)
            finally:
                proxy.stop()

    def _memory(
        self, rep: int, name: str, proxy: Running, label: str, preamble: bytes
    ) -> None:
        pid = proxy.pid
        assert pid is not None
        count = min(self.settings.memoryConnections, MEMORY_CAP.get(name, 10**9))
        timeToFirstByte(proxy.ports.magic, MAGIC, 50, budget=10)
        time.sleep(0.3)
        if preamble:
            # How many descriptors does a relayed connection cost this proxy?
            # It bounds how many fit under the open-files limit.
            baseFds = procstat.openDescriptors(pid)
            probe = holdConnections(proxy.ports.magic, MAGIC, 20, budget=30)
            time.sleep(0.3)
            fdsPer = (procstat.openDescriptors(pid) - baseFds) / len(probe)
            single = procstat.memory(pid).processes == 1
            for sock in probe:
                sock.close()
            self.record("fds-relayed", name, rep, fdsPer)
            if single and fdsPer > 0:
                # A tenth to spare: pooled descriptors make the probe's
                # count an estimate.
                limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                fit = int(0.9 * (limit - baseFds) / math.ceil(fdsPer))
                if fit < count:
                    log(f"    {name}: {fdsPer:.0f} descriptors per relayed connection;"
                        f" only {fit} fit under the open-files limit")
                    count = fit
        time.sleep(0.5)
        baseFds = procstat.openDescriptors(pid)
        base = procstat.memory(pid)
        perConnection = 2 if preamble else 1

        def caughtUp(held: int) -> None:
            # Wait (briefly) until the proxy has accepted what we opened, so
            # the listen backlog never overflows.
            limit = time.monotonic() + 2
            while (
                procstat.openDescriptors(pid) < baseFds + held * perConnection
                and time.monotonic() < limit
            ):
                time.sleep(0.005)

        try:
            held = holdConnections(
                proxy.ports.magic, preamble, count, budget=90,
                batch=100, afterBatch=caughtUp,
            )
        except (OSError, TimeoutError) as e:
            # Record the failure and go on with the other proxies.
            self.skipped.append(f"{name} memory {label}: {e}")
            log(f"    {name:15} memory {label}: failed: {e}")
            return
        try:
            time.sleep(0.5)
            after = procstat.memory(pid)
            fds = procstat.openDescriptors(pid) - baseFds
        finally:
            for sock in held:
                sock.close()
        per = (after.pss - base.pss) / count
        self.record(
            f"mem-{label}", name, rep, per, connections=count,
            rssPerConnection=(after.rss - base.rss) / count,
            processes=after.processes, descriptors=fds,
        )
        log(f"    {name:15} memory {label:9} {per:8.0f} B/conn"
            f" over {count} conns ({fds} fds, {after.processes} processes)")

    # -- the run -----------------------------------------------------------

    def run(self) -> None:
        workloads = [
            ("bulk", self.bulk),
            ("rates", self.rates),
            ("http", self.http),
            ("https", self.https),
            ("ttfb", self.ttfb),
        ]
        for rep in range(self.settings.reps):
            if not self.timeLeft():
                self.skipped.append(f"reps from {rep + 1} (time budget)")
                break
            log(f"repetition {rep + 1}/{self.settings.reps}")
            # Rotate the order each repetition so no proxy always runs first.
            order = self.proxies[rep % len(self.proxies):] + self.proxies[: rep % len(self.proxies)]
            for label, workload in workloads:
                if label in ("http", "https") and which("wrk") is None:
                    continue
                for name in order:
                    proxy = self.running[name]
                    if not proxy.alive():
                        raise RuntimeError(f"{name} died; see {proxy.logs}")
                    workload(rep, proxy)
        for rep in range(self.settings.memoryReps):
            if not self.timeLeft():
                self.skipped.append(f"memory rep {rep + 1} (time budget)")
                break
            log(f"memory, repetition {rep + 1}/{self.settings.memoryReps}")
            for name in self.proxies:
                if name != "direct":
                    self.memory(rep, name)


def baselineName(revision: str) -> str:
    """
    The column of demux at C{revision}: C{demux@} and the revision as given
    (a short hash, a tag, a branch), so the table says what it compared.
    """
    return f"demux@{revision}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark demux against HAProxy and sslh."
    )
    parser.add_argument("--quick", action="store_true", help="one short repetition (1-2 minutes)")
    parser.add_argument(
        "--proxies", default=",".join(PROXIES),
        help="comma-separated subset of: " + ", ".join(PROXIES),
    )
    parser.add_argument("--reps", type=int, help="repetitions (default 3, 1 with --quick)")
    parser.add_argument(
        "--docs", action="store_true",
        help="also write the plot to docs/_static/performance.png",
    )
    parser.add_argument(
        "--revision", default="HEAD",
        help="the demux commit to measure (default HEAD), exported to a"
        " temporary tree so edits during the run do not change it",
    )
    parser.add_argument(
        "--baseline", action="append", default=[], metavar="REV",
        help="also measure demux at commit REV, side by side in the same run,"
        " as a column demux@REV with ratios against it (repeatable)",
    )
    parser.add_argument(
        "--worktree", action="store_true",
        help="measure the working tree as it is instead of a commit",
    )
    parser.add_argument(
        "--wait-idle", type=float, default=0, metavar="SECONDS",
        help="wait up to SECONDS for the machine to be idle before starting",
    )
    parser.add_argument(
        "--udp", action="store_true",
        help="run the UDP workload only (direct, demux, nginx's stream proxy)",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.udp:
        from bench import _udp

        udpWork = Path(tempfile.mkdtemp(prefix="demux-bench-udp-"))
        udpRoot = ROOT if args.worktree else snapshot(udpWork / "demux-tree", args.revision)
        try:
            return _udp.main(args.quick, udpWork, udpRoot)
        finally:
            shutil.rmtree(udpWork, ignore_errors=True)
    if args.reps:
        settings = Settings(**{**settings.__dict__, "reps": args.reps})

    missing = [tool for tool in installMissing() if tool != "sslh"]
    if missing:
        log(f"missing: {', '.join(missing)}; install with:\n  sudo {APT}\n"
            "(or run bench/setup.sh as root)")
        if "haproxy" in missing or "cc" in missing:
            return 2
    wanted = [p.strip() for p in args.proxies.split(",") if p.strip()]
    unknown = set(wanted) - set(PROXIES)
    if unknown:
        parser.error(f"unknown proxies: {', '.join(sorted(unknown))}")
    proxies = [p for p in PROXIES if p in wanted and available(p)]
    baselineNames = [baselineName(rev) for rev in args.baseline]
    for rev in args.baseline:
        known = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        if known.returncode != 0:
            parser.error(f"--baseline {rev}: no such commit in this repository")
    if len(set(baselineNames)) != len(baselineNames):
        parser.error("each --baseline must be a different revision")
    # The baselines go right after demux, so the two read side by side.
    at = proxies.index("demux") + 1 if "demux" in proxies else len(proxies)
    proxies[at:at] = baselineNames
    for p in wanted:
        if p not in proxies:
            log(f"skipping {p}: not installed")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if args.wait_idle:
        limit = time.monotonic() + args.wait_idle
        while machineBusy() > 0.15 and time.monotonic() < limit:
            log("waiting for the machine to be idle ...")
            time.sleep(4)
    busyBefore = machineBusy()
    if busyBefore > 0.15:
        log(f"warning: the machine is {busyBefore:.0%} busy before starting;"
            " numbers will be noisy")

    started = time.monotonic()
    machineBefore = machineCpuSeconds()
    selfBefore = procstat.cpuSample(os.getpid())
    work = Path(tempfile.mkdtemp(prefix="demux-bench-"))
    if args.worktree:
        demuxRoot, measured = ROOT, "working tree"
    else:
        demuxRoot = snapshot(work / "demux-tree", args.revision)
        measured = subprocess.run(
            ["git", "rev-parse", "--short", args.revision],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    baselines = {
        name: snapshot(work / f"baseline-{index}", rev)
        for index, (name, rev) in enumerate(zip(baselineNames, args.baseline, strict=True))
    }
    log(f"measuring demux at {measured}"
        + "".join(f", and {name}" for name in baselines))
    bench = Bench(settings, proxies, work, demuxRoot, baselines)
    try:
        bench.startBackends()
        bench.startProxies()
        bench.run()
    finally:
        bench.stopAll()
    wall = time.monotonic() - started
    ours = procstat.cpuSample(os.getpid()).since(selfBefore)
    foreign = max(0.0, machineCpuSeconds() - machineBefore - ours)
    foreignShare = foreign / (wall * (os.cpu_count() or 1))

    summary = medians(bench.records)
    text = table(summary, proxies, baselineNames)
    log("\nmedians" + (f" of {settings.reps} repetitions" if settings.reps > 1 else ""))
    log(text)
    log(f"\nwall time {wall:.0f}s; CPU used by other processes on the machine"
        f" meanwhile: {foreignShare:.0%} of all cores")
    if foreignShare > 0.1:
        log("warning: other work ran on the machine during the benchmark;"
            " rerun on a quiet machine for publishable numbers")
    if bench.skipped:
        log("skipped: " + "; ".join(bench.skipped))

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    document = {
        "when": stamp,
        "machine": machineInfo(),
        "settings": settings.__dict__,
        "proxies": proxies,
        "demuxMeasured": measured,
        "wallSeconds": wall,
        "busyBefore": busyBefore,
        "foreignCpuShare": foreignShare,
        "skipped": bench.skipped,
        "summary": summary,
        "records": bench.records,
        "table": text,
        "baselines": dict(zip(baselineNames, args.baseline, strict=True)),
        "rst": rstTable(summary, proxies),
    }
    jsonPath = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    writeJson(jsonPath, document)
    log(f"results: {jsonPath.relative_to(ROOT)}")
    plotPath = RESULTS / f"{stamp}.png"
    if plot(summary, proxies, plotPath):
        log(f"plot: {plotPath.relative_to(ROOT)}")
        if args.docs:
            DOCS_PLOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plotPath, DOCS_PLOT)
            log(f"plot: {DOCS_PLOT.relative_to(ROOT)}")
    else:
        log("no plot: pip install -r bench/requirements.txt")
    shutil.rmtree(work, ignore_errors=True)
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
