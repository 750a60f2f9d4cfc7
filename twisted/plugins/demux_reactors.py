"""
The C{demux-epoll} reactor for C{twistd --reactor}: Twisted's epoll reactor
without a log context around every event (see C{demux._reactor}).  It is
what C{twistd demux} runs on unless C{--reactor} names another.  Named by
module string, so listing reactors imports nothing of demux.
"""

from twisted.application.reactors import Reactor

demuxEPoll = Reactor(
    "demux-epoll",
    "demux._reactor",
    "epoll without a log context around every event (demux's default, Linux)",
)
