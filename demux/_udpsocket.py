"""
A wildcard UDP listening socket that answers from the address each client
sent to: the one place demux reads and writes a UDP socket itself.

Twisted's UDP port reads with C{recvfrom} and writes with C{sendto}, so a
reply from a socket bound to every address leaves from whichever address
the kernel picks for the client's route; on a host with several addresses
that may not be the one the client sent to, and QUIC and WireGuard clients
drop such replies.  This port asks the kernel for each datagram's
destination address (C{IP_PKTINFO}, C{IPV6_RECVPKTINFO}) with C{recvmsg},
and sends each reply with that address as its source (C{sendmsg} with the
same control message).  It is an L{IReadDescriptor} on the reactor, as
Twisted's own ports are, and gives its protocol the same
C{datagramReceived(datagram, (host, port))} plus the local address.

Linux only (the control messages' layout is Linux's); elsewhere, and for
sockets bound to one address, demux uses Twisted's port.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger(namespace="demux")

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
# struct in_pktinfo { int ifindex; struct in_addr spec_dst, addr; }
_IN_PKTINFO = struct.Struct("=i4s4s")
# struct in6_pktinfo { struct in6_addr addr; unsigned int ifindex; }
_IN6_PKTINFO = struct.Struct("=16sI")
_CONTROL = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))
# Datagrams read per wake-up, as Twisted's port bounds its reads, so one
# busy listener cannot starve the rest of the reactor.
_READS_PER_WAKEUP = 256

SUPPORTED = sys.platform.startswith("linux")


def isWildcard(interface: str) -> bool:
    """
    Whether a listener bound to C{interface} receives for every address.
    """
    return interface in ("", "0.0.0.0", "::")


@implementer(IReadDescriptor)
class PacketInfoPort:
    """
    A UDP socket bound to every address, whose protocol learns the
    destination of each datagram and replies from it.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        protocol: Any,
        family: int = socket.AF_INET,
        maxPacketSize: int = 65535,
    ) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.family = family
        self.maxPacketSize = maxPacketSize
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
                sock.bind(("::", port))
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                sock.bind(("0.0.0.0", port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.socket = sock
        self.reading = False

    # The parts of a listening port demux uses.

    def startListening(self) -> None:
        self.protocol.makeConnection(self)
        self.reactor.addReader(self)
        self.reading = True

    def stopListening(self) -> None:
        if self.reading:
            self.reactor.removeReader(self)
            self.reading = False
            self.socket.close()
            self.protocol.doStop()
        return None

    def getHost(self) -> IPv4Address | IPv6Address:
        host, port = self.socket.getsockname()[:2]
        if self.family == socket.AF_INET6:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    def write(self, datagram: bytes, addr: tuple[str, int], local: str | None = None) -> None:
        """
        Send C{datagram} to C{addr} from the local address C{local} (the one
        the client sent to), or from the kernel's choice if L{None}.
        """
        control = []
        if local is not None:
            control = [self._sourceMessage(local)]
        target: tuple[Any, ...] = addr
        if self.family == socket.AF_INET6 and ":" not in addr[0]:
            target = ("::ffff:" + addr[0], addr[1])
        try:
            self.socket.sendmsg([datagram], control, 0, target)
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOBUFS, errno.EPERM):
                raise

    def _sourceMessage(self, local: str) -> tuple[int, int, bytes]:
        if self.family == socket.AF_INET6:
            if ":" not in local:
                local = "::ffff:" + local
            packed = socket.inet_pton(socket.AF_INET6, local)
            return (socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(packed, 0))
        packed = socket.inet_aton(local)
        return (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, packed, b"\0" * 4))

    # IReadDescriptor

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "demux-udp"

    def doRead(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, control, _flags, addr = self.socket.recvmsg(
                    self.maxPacketSize, _CONTROL
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.ECONNREFUSED, errno.EMSGSIZE, errno.ENOBUFS):
                    continue
                raise
            local = _destination(control)
            host, port = addr[0], addr[1]
            if host.startswith("::ffff:") and "." in host:
                host = host[7:]
            try:
                self.protocol.datagramFrom(data, (host, port), local)
            except Exception:
                log.failure("handling a datagram", Failure())

    def connectionLost(self, reason: Failure) -> None:
        self.stopListening()


def _destination(control: list[tuple[int, int, bytes]]) -> str | None:
    for level, kind, data in control:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            return socket.inet_ntoa(_IN_PKTINFO.unpack_from(data)[2])
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
            address = socket.inet_ntop(socket.AF_INET6, _IN6_PKTINFO.unpack_from(data)[0])
            if address.startswith("::ffff:") and "." in address:
                address = address[7:]
            return address
    return None


def systemdDescriptors() -> list[int]:
    """
    The sockets systemd passed, by index.

    Twisted's endpoints module reads (and clears) systemd's environment
    when it is imported, for its own C{systemd:} endpoints, so the
    descriptors are asked of the reader it made (L{demux._twisted}).
    """
    from ._twisted import systemdDaemon

    return list(systemdDaemon().inheritedDescriptors())
