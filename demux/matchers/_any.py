"""
The C{any} matcher: a catch-all for the last route.
"""

from __future__ import annotations

from attrs import frozen
from zope.interface import implementer, provider

from .._interfaces import BOTH_TRANSPORTS, MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import noOptions


@implementer(IMatcher)
@frozen
class AnyMatcher:
    """
    Matches every connection, even one that has sent nothing yet.
    """

    def match(self, peek: Peek) -> Verdict:
        return MATCH

    def describe(self, peek: Peek) -> str:
        return "any"


@provider(IMatcherFactory)
class anyFactory:
    """
    C{match.any = {}}: every connection.
    """

    name = "any"
    transports = BOTH_TRANSPORTS
    summary = "Matches every connection (a catch-all for the last route)."

    @staticmethod
    def build(options: object) -> IMatcher:
        noOptions(options)
        return AnyMatcher()
