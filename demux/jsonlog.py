"""
A JSON-lines log for shipping demux's log to a log system: one JSON object
per event, one event per line, on standard output.

Use it with twistd's C{--logger} option, which names a callable that makes
the log observer::

    twistd -n --logger demux.jsonlog.observer demux --config demux.toml

Every line has these fields:

    - C{time}: when, as ISO 8601 in UTC with microseconds
      (C{2024-05-01T12:00:00.123456Z});
    - C{level}: C{debug}, C{info}, C{warn}, C{error} or C{critical};
    - C{namespace}: who logged it (C{demux} for demux's own lines);
    - C{text}: the line as the human log would show it;
    - C{failure}: a traceback, only for events that carry one.

demux's own events (namespace C{demux}) add their fields as they are, so
that a log system can filter and sum them without parsing C{text}; see
L{DEMUX_FIELDS}.  A field whose value JSON cannot hold is written as its
text.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    formatEvent,
)
from twisted.python.failure import Failure

from ._log import DEMUX_FIELDS

__all__ = ["DEMUX_FIELDS", "eventAsJSON", "jsonLinesObserver", "observer"]

# Keys that Twisted's legacy log adds to every event, beside the C{log_}
# ones: not the event's own fields.
_SKIP = {"message", "format", "isError", "system", "time", "failure"}


def _isoTime(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def eventAsJSON(event: Mapping[str, Any]) -> str:
    """
    One log event as one line of JSON, without the line end.
    """
    level = event.get("log_level")
    namespace = event.get("log_namespace")
    record: dict[str, object] = {
        "time": _isoTime(event.get("log_time")),
        "level": getattr(level, "name", None),
        "namespace": namespace,
        "text": formatEvent(dict(event)),
    }
    if isinstance(namespace, str) and (
        namespace == "demux" or namespace.startswith("demux.")
    ):
        for key, value in event.items():
            if key not in _SKIP and not key.startswith("log_") and key not in record:
                record[key] = _jsonable(value)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["failure"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False, default=str)


def jsonLinesObserver(stream: IO[str]) -> ILogObserver:
    """
    An observer writing each event to C{stream} as a line of JSON (see the
    module's documentation for the fields).
    """
    return FileLogObserver(stream, lambda event: eventAsJSON(event) + "\n")


def observer() -> ILogObserver:
    """
    The observer for C{twistd --logger demux.jsonlog.observer}: JSON lines on
    standard output, where systemd's journal, a container runtime or a pipe
    to a log shipper picks them up.
    """
    return jsonLinesObserver(sys.stdout)
