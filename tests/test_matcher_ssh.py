"""
Tests of the C{ssh} matcher (L{demux.matchers._ssh}): real clients'
first flights whole and cut anywhere, the bytes it needs, and what it parses.
"""

from __future__ import annotations

from demux._interfaces import MATCH, NEED_MORE, NO_MATCH
from demux._peek import Peek
from demux.matchers._ssh import parseIdentification, sshFactory
from demux.testing import assertConsistent

from ._matchers_basic import FILES, CorpusMixin


class SSHTests(CorpusMixin):
    """
    The C{ssh} matcher.
    """

    def test_corpus(self) -> None:
        """
        OpenSSH's banner is SSH; nothing else in the corpus is.
        """
        ssh = {"ssh-banner.bin"}
        self.assertCorpus({}, sshFactory, ssh)
        self.assertCorpus({"software": "OpenSSH"}, sshFactory, ssh)
        self.assertCorpus({"software": ["PuTTY", "OpenSSH_9."]}, sshFactory, ssh)
        self.assertCorpus({"software": "OpenSSH_8"}, sshFactory, set())
        self.assertCorpus({"software": "OpenSSH_9.2p1X"}, sshFactory, set())

    def test_decidesEarly(self) -> None:
        """
        Without C{software} four bytes decide; with it, the software version
        decides a mismatch as soon as it shows, a match at the line end.
        """
        data = FILES["ssh-banner.bin"]
        plain = sshFactory.build({})
        self.assertIs(plain.match(Peek(b"SSH")), NEED_MORE)
        self.assertIs(plain.match(Peek(b"SSH-")), MATCH)
        self.assertIs(plain.match(Peek(b"SSX")), NO_MATCH)
        picky = sshFactory.build({"software": "OpenSSH"})
        self.assertIs(picky.match(Peek(data[:-1])), NEED_MORE)
        self.assertIs(picky.match(Peek(b"SSH-2.0-Ope")), NEED_MORE)
        self.assertIs(picky.match(Peek(b"SSH-2.0-Opx")), NO_MATCH)
        self.assertIs(picky.match(Peek(b"SSH-3")), NO_MATCH)
        self.assertIs(picky.match(Peek(b"SSH-2.0-OpenSSH ")), NEED_MORE)
        self.assertIs(picky.match(Peek(b"SSH-2.0-Open ")), NO_MATCH)

    def test_identification(self) -> None:
        """
        The protocol, software and comments are parsed from the first line;
        1.99 is accepted, a bare LF ends the line, and a line longer than
        255 bytes or a malformed one is not SSH.
        """
        found = parseIdentification(FILES["ssh-banner.bin"])
        self.assertEqual(
            (found.protocol, found.software, found.comments),  # type: ignore[union-attr]
            ("2.0", "OpenSSH_9.2p1", "Debian-2+deb12u10"),
        )
        picky = sshFactory.build({"software": "x"})
        for data, expected in [
            (b"SSH-1.99-x\n", MATCH),
            (b"SSH-2.0-x y z\r\n", MATCH),
            (b"SSH-1.5-x\r\n", NO_MATCH),
            (b"SSH-2.0-\r\n", NO_MATCH),
            (b"SSH-2.0-x\x01\r\n", NO_MATCH),
            (b"SSH-2.0-x " + b"c" * 250 + b"\r\n", NO_MATCH),
            (b"SSH-2.0-x " + b"c" * 243 + b"\r\n", MATCH),
        ]:
            self.assertIs(assertConsistent(picky, data), expected, data)

    def test_describe(self) -> None:
        """
        The log names the client's software once its line is in.
        """
        data = FILES["ssh-banner.bin"]
        matcher = sshFactory.build({})
        self.assertEqual(matcher.describe(Peek(data)), "ssh software=OpenSSH_9.2p1")
        self.assertEqual(matcher.describe(Peek(data[:4])), "ssh")

    def test_configErrors(self) -> None:
        """
        Each mistake gets a sentence naming it.
        """
        cases = [
            ({"software": []}, "software must be"),
            ({"software": "Open SSH"}, "cannot begin a software version"),
            ({"software": "SSH-2.0-x"}, "cannot begin a software version"),
            ({"version": "2.0"}, "unknown option 'version'"),
        ]
        for options, words in cases:
            self.assertBuildFails(sshFactory, options, words)
