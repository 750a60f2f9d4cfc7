"""
A third-party matcher, written only against demux's public API: it matches
connections that start with a greeting, C{HELLO } by default.
"""

from zope.interface import implementer, provider

from demux import (
    MATCH,
    NEED_MORE,
    NO_MATCH,
    IMatcher,
    IMatcherFactory,
    MatcherConfigError,
)


@implementer(IMatcher)
class HelloMatcher:
    def __init__(self, greeting):
        self.greeting = greeting

    def match(self, peek):
        data = peek.data[: len(self.greeting)]
        if not self.greeting.startswith(data):
            return NO_MATCH
        if len(data) < len(self.greeting):
            return NEED_MORE
        return MATCH

    def describe(self, peek):
        return "hello"


@provider(IMatcherFactory)
class helloFactory:
    name = "hello"
    summary = "A greeting such as HELLO (a third-party test plugin)."

    @staticmethod
    def build(options):
        if options is True or options == {}:
            return HelloMatcher(b"HELLO ")
        if isinstance(options, dict) and isinstance(options.get("greeting"), str):
            return HelloMatcher(options["greeting"].encode())
        raise MatcherConfigError("takes {} or {greeting = \"...\"}")
