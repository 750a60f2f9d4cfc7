"""
Tests for the benchmark's report (C{bench._report}) and its C{--baseline}
option: a baseline revision of demux is a column of its own, and every proxy
gets a ratio against it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bench._report import table
from bench.run import baselineName


class BaselineTableTests(SynchronousTestCase):
    """
    L{table} with a baseline column.
    """

    summary = {
        "rate-magic-c50": {"demux": 6000.0, "demux@abc123": 3000.0, "haproxy": 12000.0},
        "ttfb-magic-p50": {"demux": 150.0, "demux@abc123": 300.0, "haproxy": 100.0},
    }
    proxies = ["demux", "demux@abc123", "haproxy"]

    def ratios(self, text: str, reference: str) -> dict[str, list[str]]:
        """
        The ratio rows against C{reference}, by metric label.
        """
        rows = {}
        for line in text.split("\n\n")[1].splitlines()[2:]:
            cells = line.split()
            if reference in cells:
                at = cells.index(reference)
                rows[" ".join(cells[:at])] = cells[at + 1 :]
        return rows

    def test_ratiosAgainstBaseline(self) -> None:
        """
        Each proxy is compared with the baseline, higher being better
        whatever the unit: twice the connections and half the latency both
        read 2.00x.
        """
        text = table(self.summary, self.proxies, ["demux@abc123"])
        rows = self.ratios(text, "demux@abc123")
        self.assertEqual(rows["conn/s magic, c=50"], ["2.00x", "1.00x", "4.00x"])
        self.assertEqual(rows["time to first byte, magic, p50"], ["2.00x", "1.00x", "3.00x"])
        # HAProxy stays a reference too.
        self.assertEqual(
            self.ratios(text, "haproxy")["conn/s magic, c=50"], ["0.50x", "0.25x", "1.00x"]
        )

    def test_noBaseline(self) -> None:
        """
        Without a baseline there are no ratio rows against one.
        """
        text = table(self.summary, self.proxies)
        self.assertEqual(self.ratios(text, "demux@abc123"), {})

    def test_name(self) -> None:
        """
        A baseline's column names the revision as it was given.
        """
        self.assertEqual(baselineName("389831d"), "demux@389831d")
