"""
The corpus of real first flights, and the checks every matcher's tests make
against it.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from demux import MATCH, NO_MATCH, IMatcher, MatcherConfigError
from demux.testing import assertConsistent

CORPUS = Path(__file__).parent / "corpus"
FILES = {path.name: path.read_bytes() for path in sorted(CORPUS.glob("*.bin"))}


class MatcherTestCase(SynchronousTestCase):
    """
    Helpers to check a matcher against the corpus and its configuration.
    """

    files: dict[str, bytes] = FILES

    def assertCorpus(self, factory: object, options: object, matches: set[str]) -> None:
        """
        Built from C{options}, the matcher gives the same verdict however
        each corpus file is cut: L{MATCH} for the files in C{matches},
        L{NO_MATCH} for every other one.
        """
        self.assertTrue(matches <= self.files.keys(), matches - self.files.keys())
        matcher = factory.build(options)  # type: ignore[attr-defined]
        verifyObject(IMatcher, matcher)
        for name, data in self.files.items():
            expected = MATCH if name in matches else NO_MATCH
            self.assertIs(assertConsistent(matcher, data), expected, name)

    def assertBuildFails(self, factory: object, options: object, words: str) -> None:
        """
        Building from C{options} fails with one sentence containing C{words}.
        """
        with self.assertRaises(MatcherConfigError) as caught:
            factory.build(options)  # type: ignore[attr-defined]
        message = str(caught.exception)
        self.assertIn(words, message)
        self.assertNotIn("\n", message)
