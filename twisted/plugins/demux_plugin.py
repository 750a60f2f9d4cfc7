"""
The C{twistd demux} subcommand.  It names its options module by string, so
that C{twistd --help} imports nothing of demux and installs no reactor.
"""

from twisted.application.service import ServiceMaker

demux = ServiceMaker(
    "demux",
    "demux.tap",
    "Many protocols on one port: route each connection by its first bytes.",
    "demux",
)
