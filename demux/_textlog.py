"""
twistd's text log, written at the cost of a line of text.

Every relayed connection ends in a log line, and through twistd's own text
observer a line costs more than anything else demux does for a short
connection: Twisted formats each event's time from scratch (a time zone
lookup and a C{strftime}, for a stamp that changes once a second) and parses
the event's format string, for a line demux has already written out whole.
L{ClassicText} writes the very same bytes for demux's pre-formatted lines
(C{"{text}"}, see L{demux._log}) from a stamp made once a second, and hands
every other event to Twisted's formatter.

L{textLogObserver} is the observer twistd would make from its own options
(C{--logfile}, C{-n}, rotation on C{SIGUSR1}), made by twistd's own code,
with L{ClassicText} as its formatter; twistd is given it as the
application's log observer, which twistd uses unless C{--logger} names
another.  With C{--syslog}, or anything else that is not a text file
observer, twistd's choice stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    formatTime,
    textFileLogObserver,
    timeFormatRFC3339,
)
from twisted.python import log as legacyLog
from twisted.python.components import Componentized

from . import _twisted

# An event time this close below the next second may be rounded up to it by
# Twisted's formatting (datetime rounds to microseconds): such an event is
# formatted Twisted's way, so that no stamp differs.
_ROUNDS_UP = 1 - 5e-7


class ClassicText:
    """
    Formats events as C{textFileLogObserver} does with C{timeFormat}
    (C{"2026-12-01T12:00:00+0000 [demux#info] text"} by default), byte for
    byte: demux's own lines quickly, every other event with C{fallback}.

    @ivar fallback: Twisted's formatter with the same C{timeFormat}, for
        the events that are not a plain pre-formatted line.
    @ivar timeFormat: a C{strftime} format with a resolution of a second
        or coarser, as every stamp of one second is made once.
    """

    def __init__(
        self,
        fallback: Callable[[LogEvent], str | None],
        timeFormat: str = timeFormatRFC3339,
    ) -> None:
        self.fallback = fallback
        self.timeFormat = timeFormat
        self._second: int | None = None
        self._stamp = ""

    def __call__(self, event: LogEvent) -> str | None:
        text = event.get("text")
        when = event.get("log_time")
        level = event.get("log_level")
        if (
            type(text) is not str
            or not text
            or when is None
            or level is None
            or event.get("log_format") != "{text}"
            or event.get("log_system") is not None
            or "log_failure" in event
            or "log_flattened" in event
        ):
            return self.fallback(event)
        second = int(when)
        if when < 0 or when - second >= _ROUNDS_UP:
            return self.fallback(event)
        if second != self._second:
            self._stamp = formatTime(second, self.timeFormat)
            self._second = second
        if "\n" in text:
            text = text.replace("\n", "\n\t")
        namespace = event.get("log_namespace", "-")
        return f"{self._stamp} [{namespace}#{level.name}] {text}\n"


def textLogObserver(twistdOptions: Any) -> ILogObserver | None:
    """
    The log observer twistd would make from C{twistdOptions} (its own
    command line's), formatting with L{ClassicText}; L{None} when twistd
    would use another kind (C{--logger}, C{--syslog}), which is left to it.
    """
    if twistdOptions.get("logger"):
        return None
    observer = _twisted.twistdLogObserver(twistdOptions)
    if not isinstance(observer, FileLogObserver):
        return None
    observer.formatEvent = ClassicText(observer.formatEvent)
    return observer


def offerTo(application: object, twistdOptions: Any) -> None:
    """
    Give C{application}, twistd's, L{textLogObserver} as its log observer,
    unless it has one already or twistd would log another way.
    """
    if not isinstance(application, Componentized):
        return
    for interface in (ILogObserver, legacyLog.ILogObserver):
        if application.getComponent(interface, None) is not None:
            return
    observer = textLogObserver(twistdOptions)
    if observer is not None:
        application.setComponent(ILogObserver, observer)


def streamObserver(stream: Any, timeFormat: str) -> FileLogObserver:
    """
    C{textFileLogObserver(stream, timeFormat)}, formatting with
    L{ClassicText}.
    """
    observer = textFileLogObserver(stream, timeFormat)
    observer.formatEvent = ClassicText(observer.formatEvent, timeFormat)
    return observer
