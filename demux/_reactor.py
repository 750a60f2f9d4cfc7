"""
demux's reactor: Twisted's epoll reactor, less the log context around every
event.

Twisted's epoll reactor runs each readiness event inside
C{twisted.python.log.callWithLogger}: it asks the descriptor for its
C{logPrefix()}, copies the legacy log context, pushes it, calls C{doRead} or
C{doWrite}, and pops it, about a microsecond and a half for every event of
every connection, so that a legacy C{log.msg} made from inside a handler is
tagged with the transport's prefix.  demux logs with C{twisted.logger}, which
does not read that context, so here each event calls its handler directly.

What is kept exactly as Twisted does it: an exception raised by C{doRead} or
C{doWrite} (a protocol's C{dataReceived}, say) is logged with its traceback
under the descriptor's log prefix, and the connection is closed with that
exception as the reason; an exception from the close itself is logged the same
way and the events after it in the same poll are still dispatched.  What
differs: a legacy C{twisted.python.log.msg} called from inside a handler is
tagged C{-} instead of the transport's prefix.

Everything this module takes from Twisted that is not public (the epoll
reactor's poller and descriptor tables, the poll-like mixin's event masks,
C{_disconnectSelectable}) is named in L{TWISTED_INTERNALS}, which the canary
test checks against the installed Twisted.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import epollreactor, main, posixbase
from twisted.python import log

TWISTED_INTERNALS: tuple[tuple[object, str], ...] = (
    (epollreactor.EPollReactor, "doPoll"),
    (epollreactor.EPollReactor, "_POLL_DISCONNECTED"),
    (epollreactor.EPollReactor, "_POLL_IN"),
    (epollreactor.EPollReactor, "_POLL_OUT"),
    (posixbase._PollLikeMixin, "_doReadOrWrite"),
    (posixbase.PosixReactorBase, "_disconnectSelectable"),
    (posixbase, "_NO_FILEDESC"),
)
"""
The private names of Twisted this module relies on, as (owner, attribute):
the reactor's own C{_poller}, C{_selectables} and C{_reads} are made in its
constructor and are checked on an instance by the canary test.
"""

TWISTED_INSTANCE_INTERNALS = ("_poller", "_selectables", "_reads")
"""Private attributes of an epoll reactor instance used by L{doPoll}."""

_CONNECTION_DONE = main.CONNECTION_DONE
_CONNECTION_LOST = main.CONNECTION_LOST
_NO_FILEDESC = posixbase._NO_FILEDESC


def _logPrefix(selectable: Any) -> str:
    """
    The descriptor's log prefix, as C{callWithLogger} computes it.
    """
    try:
        return str(selectable.logPrefix())
    except KeyboardInterrupt:
        raise
    except BaseException:
        log.err(system="(buggy logPrefix method)")
        return "(buggy logPrefix method)"


class DemuxEPollReactor(epollreactor.EPollReactor):
    """
    An epoll reactor that dispatches each event straight to its descriptor.

    It is Twisted's L{epollreactor.EPollReactor} in everything but
    L{doPoll}: the same poller, the same registration of readers and writers,
    the same handling of hang-ups and half-closes.
    """

    def doPoll(self, timeout: float | None) -> None:
        """
        Wait for events for up to C{timeout} seconds (forever if L{None})
        and dispatch each one, in the order the kernel gave them.
        """
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except InterruptedError:
            # A signal arrived; the reactor's loop will run its handler.
            return
        selectables = self._selectables
        reads = self._reads
        disconnected = self._POLL_DISCONNECTED
        pollIn = self._POLL_IN
        pollOut = self._POLL_OUT
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                why: Any = None
                inRead = False
                if event & disconnected and not event & pollIn:
                    # Hung up with nothing left to read: a clean end if we
                    # were reading (perhaps a half-close), an error if not.
                    if fd in reads:
                        inRead = True
                        why = _CONNECTION_DONE
                    else:
                        why = _CONNECTION_LOST
                else:
                    try:
                        if selectable.fileno() == -1:
                            why = _NO_FILEDESC
                        else:
                            if event & pollIn:
                                why = selectable.doRead()
                                inRead = True
                            if not why and event & pollOut:
                                why = selectable.doWrite()
                                inRead = False
                    except BaseException:
                        why = sys.exc_info()[1]
                        log.err(system=_logPrefix(selectable))
                if why:
                    self._disconnectSelectable(selectable, why, inRead)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(system=_logPrefix(selectable))

    doIteration = doPoll


def install() -> None:
    """
    Install L{DemuxEPollReactor} as the global reactor, as
    C{twisted.internet.epollreactor.install} installs Twisted's.
    """
    from twisted.internet.main import installReactor

    installReactor(DemuxEPollReactor())


def installIfNoneYet() -> bool:
    """
    Install L{DemuxEPollReactor} unless a reactor is installed already (one
    asked for with C{twistd --reactor}, or one an embedding program chose).

    @return: whether this call installed it.
    """
    if "twisted.internet.reactor" in sys.modules:
        return False
    if not sys.platform.startswith("linux"):
        return False
    install()
    return True


__all__ = ["DemuxEPollReactor", "install", "installIfNoneYet"]
