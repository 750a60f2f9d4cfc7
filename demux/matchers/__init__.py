"""
The built-in matchers.  Each is a plugin registered in the C{demux.matchers}
entry-point group exactly as a third party's would be (C{twistd demux
--list-matchers} lists them); the names here are for building route tables
from Python and for matchers that build on ours.
"""

from ._adb import ADBMatcher, adbFactory
from ._any import AnyMatcher, anyFactory
from ._dtls import DTLSMatcher, dtlsFactory
from ._http import HTTP2Matcher, HTTPMatcher, http2Factory, httpFactory
from ._mqtt import MQTTMatcher, mqttFactory
from ._openvpn import OpenVPNMatcher, openvpnFactory
from ._postgres import PostgresMatcher, postgresFactory
from ._prefix import PrefixMatcher, prefixFactory
from ._proxy_protocol import ProxyProtocolMatcher, proxyProtocolFactory
from ._quic import QUICMatcher, quicFactory
from ._rdp import RDPMatcher, rdpFactory
from ._redis import RedisMatcher, redisFactory
from ._regex import RegexMatcher, regexFactory
from ._socks import SOCKSMatcher, socksFactory
from ._ssh import SSHMatcher, sshFactory
from ._syncthing import (
    PresetMatcher,
    bepFactory,
    relayProtocolFactory,
    relaySessionFactory,
)
from ._syslog import SyslogMatcher, syslogFactory
from ._tinc import TincMatcher, tincFactory
from ._tls import TLSMatcher, tlsFactory
from ._xmpp import XMPPMatcher, xmppFactory

__all__ = [
    "ADBMatcher",
    "AnyMatcher",
    "DTLSMatcher",
    "HTTP2Matcher",
    "HTTPMatcher",
    "MQTTMatcher",
    "OpenVPNMatcher",
    "PostgresMatcher",
    "PrefixMatcher",
    "PresetMatcher",
    "ProxyProtocolMatcher",
    "QUICMatcher",
    "RDPMatcher",
    "RedisMatcher",
    "RegexMatcher",
    "SOCKSMatcher",
    "SSHMatcher",
    "SyslogMatcher",
    "TLSMatcher",
    "TincMatcher",
    "XMPPMatcher",
    "adbFactory",
    "anyFactory",
    "bepFactory",
    "dtlsFactory",
    "http2Factory",
    "httpFactory",
    "mqttFactory",
    "openvpnFactory",
    "postgresFactory",
    "prefixFactory",
    "proxyProtocolFactory",
    "quicFactory",
    "rdpFactory",
    "redisFactory",
    "regexFactory",
    "relayProtocolFactory",
    "relaySessionFactory",
    "socksFactory",
    "sshFactory",
    "syslogFactory",
    "tincFactory",
    "tlsFactory",
    "xmppFactory",
]
