"""
Tests for L{demux._textlog}: twistd's text log lines, byte for byte, at the
cost of a line of text.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from io import StringIO
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.application.service import Application
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogLevel,
    textFileLogObserver,
    timeFormatRFC3339,
)
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from demux._textlog import ClassicText, offerTo, streamObserver, textLogObserver


def twistedFormatter(timeFormat: str = timeFormatRFC3339) -> Any:
    """
    The formatter of twistd's own text log observer.
    """
    return textFileLogObserver(StringIO(), timeFormat).formatEvent


LEVELS = st.sampled_from(list(LogLevel.iterconstants()))
TIMES = st.one_of(
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.integers(min_value=0, max_value=4_000_000_000).map(float),
    # Just below a second, where rounding to microseconds moves it up.
    st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999996),
)


def events() -> st.SearchStrategy[dict[str, Any]]:
    """
    Events as demux writes them (C{"{text}"}), and others.
    """
    demuxLine = st.fixed_dictionaries(
        {
            "log_format": st.just("{text}"),
            "text": st.text(),
            "log_time": TIMES,
            "log_level": LEVELS,
            "log_namespace": st.sampled_from(["demux", "other.module"]),
        },
        optional={
            "log_system": st.sampled_from(["-", "sys", None]),
            "peer": st.text(max_size=5),
        },
    )
    others = st.fixed_dictionaries(
        {
            "log_format": st.sampled_from(
                ["{text}", "{peer} said {text}", "plain", "{missing}", None]
            ),
            "log_time": st.one_of(st.none(), TIMES),
            "log_level": st.one_of(st.none(), LEVELS),
        },
        optional={
            "text": st.one_of(st.text(), st.integers(), st.none()),
            "peer": st.text(max_size=5),
            "log_namespace": st.text(max_size=8),
        },
    )
    return st.one_of(demuxLine, others)


class ClassicTextTests(SynchronousTestCase):
    """
    L{ClassicText} writes what Twisted's text observer writes.
    """

    @given(events())
    @settings(max_examples=2000, deadline=None)
    @example(
        {
            "log_format": "{text}",
            "text": "a\nb",
            "log_time": 1.0,
            "log_level": LogLevel.info,
            "log_namespace": "demux",
        }
    )
    @example(
        {
            "log_format": "{text}",
            "text": "",
            "log_time": 1.0,
            "log_level": LogLevel.info,
            "log_namespace": "demux",
        }
    )
    def test_sameAsTwisted(self, event: dict[str, Any]) -> None:
        """
        Every event, demux's own lines and any other, is formatted exactly
        as twistd's text log would format it.
        """
        expected = twistedFormatter()(dict(event))
        self.assertEqual(ClassicText(twistedFormatter())(dict(event)), expected)

    @given(events(), st.sampled_from(["", "%H:%M:%S", "%Y-%m-%d"]))
    @settings(max_examples=300, deadline=None)
    def test_otherTimeFormats(self, event: dict[str, Any], timeFormat: str) -> None:
        """
        With another time format (the workers' none), the lines are still
        Twisted's.
        """
        expected = twistedFormatter(timeFormat)(dict(event))
        formatter = ClassicText(twistedFormatter(timeFormat), timeFormat)
        self.assertEqual(formatter(dict(event)), expected)

    def test_streamObserver(self) -> None:
        """
        L{streamObserver} writes to its stream what C{textFileLogObserver}
        would.
        """
        event = {
            "log_format": "{text}",
            "text": "1.2.3.4:5 route=ssh closed",
            "log_time": 1e9,
            "log_level": LogLevel.info,
            "log_namespace": "demux",
        }
        ours, theirs = StringIO(), StringIO()
        streamObserver(ours, "")(dict(event))
        textFileLogObserver(theirs, "")(dict(event))
        self.assertEqual(ours.getvalue(), theirs.getvalue())
        self.assertTrue(ours.getvalue())

    def test_sameSecondSameStamp(self) -> None:
        """
        Events within one second share one stamp, and the next second gets
        its own: a formatter reused across seconds stays right.
        """
        formatter = ClassicText(twistedFormatter())
        now = float(int(time.time()))
        for when in (now + 0.1, now + 0.5, now + 1.2, now + 0.3, now + 7.0):
            event = {
                "log_format": "{text}",
                "text": "x",
                "log_time": when,
                "log_level": LogLevel.info,
                "log_namespace": "demux",
            }
            self.assertEqual(formatter(dict(event)), twistedFormatter()(dict(event)))

    def test_failureGoesToTwisted(self) -> None:
        """
        An event with a failure is Twisted's to format, traceback and all.
        """
        try:
            raise ZeroDivisionError("it broke")
        except ZeroDivisionError:
            failure = Failure()
        event = {
            "log_format": "{text}",
            "text": "it broke",
            "log_time": 1e9,
            "log_level": LogLevel.error,
            "log_namespace": "demux",
            "log_failure": failure,
        }
        text = ClassicText(twistedFormatter())(dict(event))
        assert text is not None
        self.assertIn("ZeroDivisionError", text)
        self.assertEqual(text, twistedFormatter()(dict(event)))


def tempPath(case: SynchronousTestCase) -> Path:
    """
    A path for a log file in a directory of its own, removed after C{case}.
    """
    directory = tempfile.mkdtemp(prefix="demux-textlog-")
    case.addCleanup(shutil.rmtree, directory, True)
    return Path(directory) / "twistd.log"


def twistdOptions(*arguments: str) -> ServerOptions:
    """
    twistd's options as its command line C{arguments} (without a plugin)
    make them.
    """
    options = ServerOptions()
    options.parseOptions(["--pidfile", "", *arguments])
    return options


class ObserverTests(SynchronousTestCase):
    """
    L{textLogObserver} is twistd's own observer for its options, with the
    faster formatter, where twistd would log text to a file.
    """

    def test_logfile(self) -> None:
        """
        With C{--logfile}, demux's lines go to that file in twistd's format.
        """
        path = tempPath(self)
        observer = textLogObserver(twistdOptions("--logfile", str(path)))
        assert isinstance(observer, FileLogObserver)
        self.assertIsInstance(observer.formatEvent, ClassicText)
        observer(
            {
                "log_format": "{text}",
                "text": "1.2.3.4:5 route=ssh closed",
                "log_time": 1e9,
                "log_level": LogLevel.info,
                "log_namespace": "demux",
            }
        )
        expected = twistedFormatter()(
            {
                "log_format": "{text}",
                "text": "1.2.3.4:5 route=ssh closed",
                "log_time": 1e9,
                "log_level": LogLevel.info,
                "log_namespace": "demux",
            }
        )
        self.assertEqual(path.read_text(), expected)

    def test_loggerOption(self) -> None:
        """
        A C{--logger} of the user's own is left to twistd.
        """
        options = twistdOptions("--logger", "demux.jsonlog.observer")
        self.assertIsNone(textLogObserver(options))

    def test_syslog(self) -> None:
        """
        With C{--syslog}, twistd's syslog observer is left as it is.
        """
        self.assertIsNone(textLogObserver(twistdOptions("--syslog")))

    def test_offered(self) -> None:
        """
        twistd's application is given the observer, unless it has one.
        """
        path = str(tempPath(self))
        application = Application("demux")
        offerTo(application, twistdOptions("--logfile", path))
        observer = application.getComponent(ILogObserver, None)
        self.assertIsInstance(observer, FileLogObserver)
        self.assertIsInstance(observer.formatEvent, ClassicText)

        mine = FileLogObserver(StringIO(), lambda event: "x\n")
        other = Componentized()
        other.setComponent(ILogObserver, mine)
        offerTo(other, twistdOptions("--logfile", path))
        self.assertIs(other.getComponent(ILogObserver), mine)


class UnderTwistdTests(SynchronousTestCase):
    """
    C{twistd demux} gives twistd the faster text log; a service made for
    another program does not touch its application.
    """

    def test_twistdApplication(self) -> None:
        """
        The service C{makeService} returns for C{twistd --logfile F demux}
        gives twistd's application a text observer on C{F} as it joins it.
        """
        from demux.tap import makeService

        path = tempPath(self)
        options = twistdOptions(
            "--logfile", str(path), "demux",
            "--listen", "tcp:0:interface=127.0.0.1",
            "--route", "x ssh tcp:127.0.0.1:1",
        )
        application = Application("demux")
        makeService(options.subOptions).setServiceParent(application)
        observer = application.getComponent(ILogObserver, None)
        assert isinstance(observer, FileLogObserver)
        self.assertIsInstance(observer.formatEvent, ClassicText)
        self.assertTrue(path.exists())

    def test_embedded(self) -> None:
        """
        Without twistd's options (another program parsed demux's own), the
        application is left alone.
        """
        from demux.tap import Options, makeService

        options = Options()
        options.parseOptions(
            ["--listen", "tcp:0:interface=127.0.0.1", "--route", "x ssh tcp:127.0.0.1:1"]
        )
        application = Application("demux")
        makeService(options).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))
