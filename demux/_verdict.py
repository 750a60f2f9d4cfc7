"""
What a matcher says of the bytes seen so far, and what a parser says of them
while it cannot yet give its result.

The verdicts are the decision half's one vocabulary: the parsers, L{demux.Peek}
and the contracts in L{demux._interfaces} all speak it.  They live here, below
all of them and importing nothing of demux, so that each can use them without
importing the others.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    """
    What a matcher says of the bytes seen so far.

    @cvar MATCH: these bytes are the matcher's protocol (and fit its options).
    @cvar NO_MATCH: no continuation of these bytes can match.
    @cvar NEED_MORE: more bytes could change the answer either way.
    """

    MATCH = "match"
    NO_MATCH = "no match"
    NEED_MORE = "need more"


MATCH = Verdict.MATCH
NO_MATCH = Verdict.NO_MATCH
NEED_MORE = Verdict.NEED_MORE
