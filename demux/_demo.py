"""
In-process targets for the built-in demo configuration, so that
C{twistd -n demux} with no configuration shows routing at work on a machine
with nothing else running.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class _DemoPage(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (
            b"Hello from demux's demo web site.\n"
            b"demux recognised this connection as HTTP and routed it here;\n"
            b"its log says which route each connection took.\n"
        )

    render_HEAD = render_GET


def web() -> Site:
    """
    A small web site, for the demo's C{http} route.
    """
    site = Site(_DemoPage())
    site.noisy = False
    site.displayTracebacks = False
    return site


class _Echo(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(  # type: ignore[union-attr]
            b"demux demo: no other route matched, so this is the catch-all "
            b"echo route; type a line.\r\n"
        )

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def echo() -> Factory[_Echo]:
    """
    An echo service that greets first, for the demo's catch-all route (and
    for clients that wait for the server to speak).
    """
    factory: Factory[_Echo] = Factory.forProtocol(_Echo)
    factory.noisy = False
    return factory
