"""
L{demux.testing.reservePort}: the ports the tests hand to programs that
must be told theirs can't be given to anything else meanwhile.
"""

from __future__ import annotations

import socket
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from demux.testing import _ephemeralRange, releasePort, reservePort


class ReservePortTests(SynchronousTestCase):
    def test_outsideTheEphemeralRange(self) -> None:
        """
        The port is one the kernel never picks for a socket bound to port 0
        or for an outgoing connection.
        """
        low, high = _ephemeralRange()
        port = reservePort()
        self.assertFalse(low <= port <= high, (port, low, high))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.assertNotEqual(s.getsockname()[1], port)

    def test_neverTwice(self) -> None:
        """
        One process is never handed the same port twice.
        """
        ports = [reservePort() for _ in range(50)]
        self.assertEqual(len(set(ports)), 50)

    def test_otherProcessesKeptOff(self) -> None:
        """
        Another process asking for ports while this one holds some is given
        none of them, and ports that are in use are passed over.
        """
        mine = {reservePort() for _ in range(20)}
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            busy = listener.getsockname()[1]
            script = (
                "import sys\n"
                "from demux.testing import reservePort\n"
                f"taken = {sorted(mine)!r}\n"
                "try:\n"
                f"    reservePort(candidates=[*taken, {busy}])\n"
                "except RuntimeError:\n"
                "    print('none left')\n"
                "else:\n"
                "    print('given one')\n"
                "ports = [reservePort() for _ in range(100)]\n"
                "print(len(set(ports) & set(taken)))\n"
            )
            out = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True,
                timeout=60, check=True,
            ).stdout.split()
        self.assertEqual(out, ["none", "left", "0"])

    def test_release(self) -> None:
        """
        A released port can be reserved again, by this process or another.
        """
        port = reservePort()
        self.assertRaises(RuntimeError, reservePort, candidates=[port])
        releasePort(port)
        self.assertEqual(reservePort(candidates=[port]), port)
