"""
Running a real C{twistd demux} for integration and end-to-end tests.

The tests start demux as a user would, as a separate C{twistd} process with a
config file, and talk to it over loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from demux.testing import reservePort


def freePort(host: str = "127.0.0.1") -> int:
    """
    A TCP port that no other socket can be given, for a program that must be
    told its port on its command line (L{demux.testing.reservePort}).

    A server the test runs in this process binds port 0 itself instead.
    """
    return reservePort(host)


def waitForPort(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """
    Block until something accepts connections on C{host}:C{port}.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


def twistdCommand(*args: str, python: str | None = None) -> list[str]:
    """
    The command line that runs C{twistd} for this interpreter (or for
    C{python}).
    """
    return [
        python or sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        *args,
    ]


class DemuxProcess:
    """
    A running C{twistd -n demux}, its log file and its port.
    """

    def __init__(self, process: subprocess.Popen[bytes], logPath: Path, port: int):
        self.process = process
        self.logPath = logPath
        self.port = port

    def log(self) -> str:
        return self.logPath.read_text(errors="replace")

    def waitForLog(self, text: str, timeout: float = 10.0) -> str:
        """
        Block until C{text} appears in the log; return the log.
        """
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared in the log:\n{log}")
            time.sleep(0.05)

    def waitForClosed(
        self, peer: str | None, route: str, timeout: float = 10.0
    ) -> str:
        """
        Block until the line that ends a connection of C{peer} (any, if
        L{None}) on C{route} is in the log; return that line.  By default it
        carries the connection's decision too (C{PEER route=NAME (reason) ->
        target, ...; closed: ...}); with C{log_decisions = true} it is
        C{PEER route=NAME closed: ...}.
        """
        start = f" route={route} " if peer is None else f"{peer} route={route} "
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            for line in log.splitlines():
                at = line.find(start)
                if at >= 0 and line.find("closed: ", at) >= 0:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no line ends a connection {start!r}in the log:\n{log}"
                )
            time.sleep(0.05)


@contextmanager
def runDemux(
    config: str | None = None,
    args: Sequence[str] = (),
    port: int | None = None,
    waitFor: int | None = -1,
    python: str | None = None,
    twistdOptions: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> Iterator[DemuxProcess]:
    """
    Run C{twistd -n demux} with C{config} (TOML text, in which C{{port}} is
    replaced by a free port) and extra C{args}; stop it afterwards with
    SIGTERM and check it exits.

    @param waitFor: the port to wait for before yielding; -1 means the
        C{port} chosen for the config, L{None} means don't wait.
    @param twistdOptions: twistd's own options, such as C{--uid}.
    @param prefix: a command that C{exec}s twistd (C{prlimit ... --}), so
        that the process id is still twistd's.
    """
    if port is None:
        port = freePort()
    with tempfile.TemporaryDirectory(prefix="demux-test-") as d:
        directory = Path(d)
        # Readable after twistd gives up root, for --uid.
        directory.chmod(0o755)
        logPath = directory / "twistd.log"
        cmd = [
            *prefix,
            *twistdCommand(
                "-n", "--logfile", str(logPath), "--pidfile", "", *twistdOptions,
                "demux",
                python=python,
            ),
        ]
        if config is not None:
            configPath = directory / "demux.toml"
            configPath.write_text(config.replace("{port}", str(port)))
            configPath.chmod(0o644)
            cmd += ["--config", str(configPath)]
        cmd += list(args)
        process = subprocess.Popen(
            cmd, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        proc = DemuxProcess(process, logPath, port)
        try:
            if waitFor is not None:
                target = port if waitFor == -1 else waitFor
                try:
                    waitForPort(target)
                except TimeoutError:
                    process.kill()
                    out = process.communicate()[0].decode(errors="replace")
                    log = logPath.read_text() if logPath.exists() else ""
                    raise AssertionError(
                        f"demux did not start:\n{out}\n{log}"
                    ) from None
            yield proc
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()


def environmentWithPath() -> dict[str, str]:
    """
    The environment for child processes, with /usr/sbin on PATH (sshd,
    haproxy).
    """
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    return env


def require(program: str) -> str:
    """
    The path of C{program} (looked for in C{/usr/sbin} and C{/sbin} too);
    without it the test is skipped (tests/run installs it), or fails under
    CI.
    """
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{program} is not installed (run bash tests/run to install it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
