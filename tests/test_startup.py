"""
Start-up mistakes outside the configuration: a C{systemd:} listen string
without the socket systemd should have passed, twistd's C{--pidfile} and
C{--uid}.  The checks in memory, then each message from a real C{twistd}.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from demux._startup import (
    PassedSockets,
    passedSockets,
    pidfileError,
    systemdErrors,
    userError,
)
from demux._twisted import parseServer, systemdDaemon, systemdParserType

from ._process import twistdCommand
from ._servers import TagServer

INDEX0 = "systemd:domain=INET:index=0"


def temporaryDirectory(case: SynchronousTestCase) -> Path:
    """
    A new directory, removed after C{case}'s test (not trial's C{mktemp},
    which writes under the directory the tests are run from).
    """
    directory = Path(tempfile.mkdtemp(prefix="demux-test-"))
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


def passed(env: dict[str, str], count: int = 0, pid: int = 42) -> PassedSockets:
    names = tuple(env.get("LISTEN_FDNAMES", "").split(":")[:count]) if count else ()
    return PassedSockets(tuple(range(3, 3 + count)), names, env, pid)


class TwistedInternalsTests(SynchronousTestCase):
    """
    The private names of Twisted that L{demux._startup} reads (through
    L{demux._twisted}) are there.  If
    this fails, Twisted changed them: the checks must be written anew.
    """

    def test_names(self) -> None:
        daemon = systemdDaemon()
        self.assertIsInstance(daemon.inheritedDescriptors(), list)
        self.assertIsInstance(daemon.inheritedNamedDescriptors(), dict)
        parser, args, kwargs = parseServer(INDEX0)
        self.assertIsInstance(parser, systemdParserType())
        self.assertEqual((args, kwargs), ([], {"domain": "INET", "index": "0"}))

    def test_passedSockets(self) -> None:
        """
        Outside systemd (as tests run), nothing was passed.
        """
        sockets = passedSockets()
        self.assertEqual(sockets.descriptors, ())
        self.assertEqual(sockets.pid, os.getpid())


class SystemdErrorTests(SynchronousTestCase):
    def test_nothingPassed(self) -> None:
        [error] = systemdErrors([INDEX0], "listen", passed({}), checking=False)
        self.assertEqual(
            error,
            "listen 'systemd:domain=INET:index=0': asks for passed socket index "
            "0, but none was passed (LISTEN_FDS is not set); start demux from "
            "its socket unit (contrib/demux.socket) or listen on an address of "
            "its own",
        )

    def test_nothingPassedWhileChecking(self) -> None:
        """
        C{--check} outside systemd checks the syntax only.
        """
        self.assertEqual(systemdErrors([INDEX0], "listen", passed({}), checking=True), [])

    def test_noNames(self) -> None:
        env = {"LISTEN_PID": "42", "LISTEN_FDS": "1"}
        for checking in (False, True):
            [error] = systemdErrors([INDEX0], "listen", passed(env), checking)
            self.assertIn(
                "asks for passed socket index 0, but none was passed "
                "(LISTEN_FDS=1 but LISTEN_FDNAMES is not set, and Twisted uses "
                "passed sockets only with their names)",
                error,
            )

    def test_otherProcess(self) -> None:
        env = {"LISTEN_PID": "7", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "demux"}
        [error] = systemdErrors([INDEX0], "listen", passed(env), False)
        self.assertIn("(LISTEN_FDS=1 is for process 7, not this one (42))", error)
        del env["LISTEN_PID"]
        [error] = systemdErrors([INDEX0], "listen", passed(env), False)
        self.assertIn("(LISTEN_FDS=1 but LISTEN_PID is not set)", error)

    def test_indexBeyond(self) -> None:
        env = {"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "demux"}
        sockets = passed(env, 1)
        self.assertEqual(systemdErrors([INDEX0], "listen", sockets, False), [])
        [error] = systemdErrors(
            ["systemd:domain=INET6:index=1", "tcp:443"], "--listen", sockets, False
        )
        self.assertEqual(
            error,
            "--listen 'systemd:domain=INET6:index=1': asks for passed socket "
            "index 1, but only 1 was passed (LISTEN_FDS=1); start demux from its "
            "socket unit (contrib/demux.socket) or listen on an address of its "
            "own",
        )

    def test_name(self) -> None:
        env = {"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "demux"}
        sockets = passed(env, 1)
        good = "systemd:domain=INET:name=demux"
        self.assertEqual(systemdErrors([good], "listen", sockets, False), [])
        [error] = systemdErrors(["systemd:INET:name=web"], "listen", sockets, False)
        self.assertIn(
            "asks for the passed socket named 'web', but the 1 passed are named "
            "'demux' (LISTEN_FDNAMES)",
            error,
        )

    def test_proxyPrefix(self) -> None:
        [error] = systemdErrors(["haproxy:" + INDEX0], "listen", passed({}), False)
        self.assertIn("'haproxy:systemd:domain=INET:index=0': asks for", error)


class PidfileAndUserTests(SynchronousTestCase):
    def test_pidfile(self) -> None:
        self.assertIsNone(pidfileError(None))
        self.assertIsNone(pidfileError(""))
        directory = temporaryDirectory(self)
        good = directory / "x.pid"
        self.assertIsNone(pidfileError(str(good)))
        # The check leaves nothing behind for twistd to trip on.
        self.assertFalse(good.exists())
        self.assertEqual(
            pidfileError(str(directory / "no" / "x.pid")),
            f"cannot write the pid file {directory.absolute()}/no/x.pid: No such "
            "file or directory",
        )

    def test_user(self) -> None:
        self.assertIsNone(userError(None, None))
        self.assertIsNone(userError(0, None))
        self.assertIsNone(userError(4242424, 0))
        self.assertEqual(
            userError(4242424, None),
            "no such user: 4242424 (give --gid too, or a user that exists)",
        )


ANY_CONFIG = """\
listen = ["systemd:domain=INET:index=0"]

[[routes]]
name = "any"
match.any = {}
backend = "tcp:127.0.0.1:%d"
"""


class TwistdTests(SynchronousTestCase):
    """
    Each message as C{twistd} prints it: one line, status 1, no traceback.
    """

    def twistd(
        self, twistdArgs: list[str], demuxArgs: list[str], shell: str = ""
    ) -> tuple[int, str]:
        """
        Run twistd; with C{shell}, through C{sh -c}, whose text runs before
        it C{exec}s twistd (so that C{$$} is twistd's process id).
        """
        command = twistdCommand(*twistdArgs, "demux", *demuxArgs)
        if shell:
            command = ["sh", "-c", f'{shell} exec "$@"', "sh", *command]
        result = subprocess.run(command, capture_output=True, timeout=60)
        return result.returncode, (result.stdout + result.stderr).decode()

    def config(self, port: int = 1) -> str:
        path = temporaryDirectory(self) / "demux.toml"
        path.write_text(ANY_CONFIG % port)
        return str(path)

    def assertOneLine(self, status: int, output: str, line: str) -> None:
        self.assertEqual(status, 1, output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(output.strip().splitlines()[-1], f"demux: error: {line}", output)

    def test_systemdWithoutSocket(self) -> None:
        path = self.config()
        status, output = self.twistd(["-n", "--pidfile="], ["--config", path])
        self.assertOneLine(
            status,
            output,
            f"{path}: listen 'systemd:domain=INET:index=0': asks for passed socket "
            "index 0, but none was passed (LISTEN_FDS is not set); start demux "
            "from its socket unit (contrib/demux.socket) or listen on an address "
            "of its own",
        )
        # --check outside systemd checks only the syntax.
        status, output = self.twistd(["-n", "--pidfile="], ["--config", path, "--check"])
        self.assertEqual(status, 0, output)

    def test_systemdWithoutNames(self) -> None:
        path = self.config()
        for extra in ([], ["--check"]):
            status, output = self.twistd(
                ["-n", "--pidfile="],
                ["--config", path, *extra],
                shell="LISTEN_PID=$$ LISTEN_FDS=1",
            )
            self.assertOneLine(
                status,
                output,
                f"{path}: listen 'systemd:domain=INET:index=0': asks for passed "
                "socket index 0, but none was passed (LISTEN_FDS=1 but "
                "LISTEN_FDNAMES is not set, and Twisted uses passed sockets only "
                "with their names); start demux from its socket unit "
                "(contrib/demux.socket) or listen on an address of its own",
            )

    def test_systemdSocketPassed(self) -> None:
        """
        With the socket passed as systemd passes it, demux serves on it: the
        check does not stand in the way of a good start.
        """
        backend = TagServer("passed")
        self.addCleanup(backend.close)
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        fd = listener.fileno()
        # bash, not sh: dash cannot name a descriptor above 9.
        command = [
            "bash",
            "-c",
            f'exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=demux exec "$@"',
            "bash",
            *twistdCommand("-n", "--pidfile=", "demux", "--config", self.config(backend.port)),
        ]
        process = subprocess.Popen(
            command, pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            with socket.create_connection(listener.getsockname(), timeout=20) as client:
                client.settimeout(20)
                self.assertEqual(client.recv(100), b"TAG:passed\n")
        finally:
            process.terminate()
            out = process.communicate(timeout=30)[0].decode()
        self.assertNotIn("Traceback", out)

    def test_pidfile(self) -> None:
        missing = temporaryDirectory(self) / "dir" / "x.pid"
        status, output = self.twistd(
            ["-n", "--pidfile", str(missing)],
            ["--listen", "tcp:0", "--route", "a any tcp:127.0.0.1:1"],
        )
        self.assertOneLine(
            status,
            output,
            f"cannot write the pid file {missing}: No such file or directory",
        )

    def test_numericUser(self) -> None:
        status, output = self.twistd(
            ["-n", "--pidfile=", "-u", "4242424"],
            ["--listen", "tcp:0", "--route", "a any tcp:127.0.0.1:1"],
        )
        self.assertOneLine(
            status,
            output,
            "no such user: 4242424 (give --gid too, or a user that exists)",
        )
