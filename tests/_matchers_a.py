"""
What the matcher tests split from one module share: the captures, their
expected verdicts and the test case base.
"""

from __future__ import annotations

import json

from demux._interfaces import MATCH
from demux._peek import Peek

from . import _corpus
from ._corpus import CORPUS, FILES

EXPECTED = json.loads((CORPUS / "expected.json").read_text())


OPENVPN = {
    "openvpn-tcp.bin",
    "openvpn-tcp-tls-auth.bin",
    "openvpn-tcp-tls-crypt.bin",
    "openvpn-tcp-tls-crypt-v2.bin",
}


SOCKS4 = {"socks4-curl.bin", "socks4a-curl.bin"}


SOCKS5 = {"socks5-curl.bin", "socks5-curl-auth.bin"}


POSTGRES_SSL = {"postgres-sslrequest-psql.bin"}


POSTGRES_GSSENC = {"postgres-gssencrequest-psql.bin"}


POSTGRES_STARTUP = {"postgres-startup-psql.bin"}


POSTGRES = POSTGRES_SSL | POSTGRES_GSSENC | POSTGRES_STARTUP


MQTT = {"mqtt31-mosquitto.bin", "mqtt311-mosquitto.bin", "mqtt5-mosquitto.bin"}


REDIS = {"redis-ping-cli.bin", "redis-hello3-cli.bin", "redis-auth-cli.bin"}


SYSLOG_COUNTED = {"syslog-octet-count-logger.bin"}


SYSLOG = SYSLOG_COUNTED | {"syslog-rfc5424-logger.bin", "syslog-rfc3164-logger.bin"}


PROXY = {"proxy-v1-haproxy.bin", "proxy-v2-haproxy.bin"}


OURS = OPENVPN | SOCKS4 | SOCKS5 | POSTGRES | MQTT | REDIS | SYSLOG | PROXY


class MatcherTestCase(_corpus.MatcherTestCase):
    """
    The corpus checks, and the descriptions C{expected.json} records.
    """

    def assertDescribed(self, factory: object, options: object) -> None:
        """
        For each of our captures it matches, the matcher describes it as
        C{expected.json} says.
        """
        matcher = factory.build(options)  # type: ignore[attr-defined]
        for name in sorted(OURS):
            peek = Peek(FILES[name])
            if matcher.match(peek) is MATCH:
                self.assertEqual(matcher.describe(peek), EXPECTED[name]["describe"])
