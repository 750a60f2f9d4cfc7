"""
The built-in matchers.  Each is a plugin registered in the C{demux.matchers}
entry-point group exactly as a third party's would be (C{twistd demux
--list-matchers} lists them); the names here are for building route tables
from Python and for matchers that build on ours.
"""

from ._adb import ADBMatcher, adbFactory
from ._any import AnyMatcher, anyFactory
from ._dns import DNSMatcher, dnsFactory
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
from ._stun import STUNMatcher, stunFactory
from ._syncthing import (
    PresetMatcher,
    bepFactory,
    relayProtocolFactory,
    relaySessionFactory,
)
from ._syslog import SyslogMatcher, syslogFactory
from ._tinc import TincMatcher, tincFactory
from ._tls import TLSMatcher, tlsFactory
from ._wireguard import WireGuardMatcher, wireguardFactory
from ._xmpp import XMPPMatcher, xmppFactory

__all__ = [
    "ADBMatcher",
    "AnyMatcher",
    "DNSMatcher",
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
    "STUNMatcher",
    "SyslogMatcher",
    "TLSMatcher",
    "TincMatcher",
    "WireGuardMatcher",
    "XMPPMatcher",
    "adbFactory",
    "anyFactory",
    "bepFactory",
    "dnsFactory",
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
    "stunFactory",
    "syslogFactory",
    "tincFactory",
    "tlsFactory",
    "wireguardFactory",
    "xmppFactory",
]
