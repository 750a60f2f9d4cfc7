"""
What the matcher tests split from one module share: the captures, their
expected verdicts and the test case base.
"""

from __future__ import annotations

from ._corpus import CORPUS, MatcherTestCase

# The first flights these matchers were written against; every matcher meets
# every corpus file, later captures included, in test_crosscheck.
ORIGINAL = {
    "chromium-sni-alpn-pq.bin",
    "curl-sni-alpn.bin",
    "openssl-nosni-alpn-bep-relay.bin",
    "openssl-sni-alpn-h2.bin",
    "openssl-split-records.bin",
    "openssl-tls12-sni.bin",
    "plain-http11.bin",
    "python-ssl-sni-alpn.bin",
    "ssh-banner.bin",
}


FILES = {name: (CORPUS / name).read_bytes() for name in sorted(ORIGINAL)}


TLS = {name for name in FILES if name not in ("plain-http11.bin", "ssh-banner.bin")}


class CorpusMixin(MatcherTestCase):
    """
    The corpus checks, over the first flights these matchers were written
    against.
    """

    files = FILES

    def assertCorpus(  # type: ignore[override]
        self, options: object, factory: object, matches: set[str]
    ) -> None:
        MatcherTestCase.assertCorpus(self, factory, options, matches)
