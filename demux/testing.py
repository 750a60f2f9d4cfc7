"""
Helpers for testing matchers, ours and third parties', the same way.

A matcher must reach the same verdict for the same bytes however they arrive:
whole, one byte at a time, or cut anywhere.  L{verdictOf} feeds a matcher
chunks the way a connection would, and L{assertConsistent} checks every way of
cutting a byte string at once.  L{clientHello} makes the first flight of a
real TLS client, to test a TLS matcher against.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Sequence

from ._interfaces import NEED_MORE, IMatcher, Verdict
from ._peek import Peek


def verdictOf(matcher: IMatcher, chunks: Iterable[bytes]) -> Verdict:
    """
    The first verdict other than C{NEED_MORE} that C{matcher} gives while
    C{chunks} arrive one after another, or C{NEED_MORE} if it never decides;
    as the demux protocol would see it.
    """
    peek = Peek()
    verdict = matcher.match(peek)
    if verdict is not NEED_MORE:
        return verdict
    for chunk in chunks:
        peek = peek.extended(chunk)
        verdict = matcher.match(peek)
        if verdict is not NEED_MORE:
            return verdict
    return verdict


def splits(data: bytes) -> Iterable[tuple[str, list[bytes]]]:
    """
    Every way L{assertConsistent} cuts C{data}: whole, byte by byte, and in
    two at every offset.
    """
    yield "whole", [data]
    yield "byte by byte", [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield f"cut at {cut}", [data[:cut], data[cut:]]


def assertConsistent(matcher: IMatcher, data: bytes) -> Verdict:
    """
    Check that C{matcher} gives one verdict for C{data} however it is cut,
    and that once it decides on a prefix, every longer prefix gets the same
    answer.

    @return: that verdict.
    @raise AssertionError: naming the cut that disagreed.
    """
    expected = matcher.match(Peek(data))
    for how, chunks in splits(data):
        got = verdictOf(matcher, chunks)
        if got is not expected:
            raise AssertionError(
                f"{matcher!r}: {expected.value} for the whole input but "
                f"{got.value} when fed {how}"
            )
    decided = None
    for n in range(len(data) + 1):
        verdict = matcher.match(Peek(data[:n]))
        if decided is not None and verdict is not decided:
            raise AssertionError(
                f"{matcher!r}: said {decided.value} at a shorter prefix but "
                f"{verdict.value} after {n} bytes"
            )
        if verdict is not NEED_MORE:
            decided = verdict
    return expected


def clientHello(
    serverName: str | None,
    alpn: Sequence[str] = (),
    maximum: ssl.TLSVersion | None = None,
) -> bytes:
    """
    The first flight of a real TLS client, this Python's C{ssl} module (its
    OpenSSL), made in memory with no network: a ClientHello naming
    C{serverName} (none if L{None}), offering C{alpn}, and at most
    C{maximum}'s protocol version if given.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if maximum is not None:
        context.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=serverName)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
