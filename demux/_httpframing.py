"""
A strict, incremental HTTP/1.1 framing parser for the forwarder: it finds
where each message's head and body begin and end in a byte stream, and
nothing more.

It is sans-I/O (bytes in, events out) so that any split of the same bytes
gives the same events, which a property test pins.  It is stricter than
L{demux._httphead}'s head parser, which may accept a bare LF because it only
routes: here the bytes are forwarded to a server that may read them another
way, so every ambiguity that lets two parties see two different message
boundaries is an error (RFC 9112 section 11.2, "request smuggling"):

  - a line ending in a bare LF, or a bare CR anywhere;
  - C{Transfer-Encoding} together with C{Content-Length}, a transfer coding
    other than a lone C{chunked}, or C{Transfer-Encoding} on HTTP/1.0;
  - two C{Content-Length}s that differ, or one that is not digits;
  - whitespace before a header's colon, obsolete line folding, control
    characters in a field;
  - a request without exactly one C{Host} (HTTP/1.1);
  - a line longer than L{MAX_LINE}, more than L{MAX_HEADERS} fields, a chunk
    size that is not hexadecimal.

Bodies are not buffered: a body event is a slice of what was fed, handed on
as soon as it arrives.  Chunked bodies are passed on as they were written
(chunk sizes, extensions and trailers included), after being checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from attrs import frozen

MAX_LINE = 8 * 1024
"""The longest line (request or status line, header field, chunk size)."""

MAX_HEADERS = 100
"""The most header (or trailer) fields in one message."""

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_REQUEST_LINE = re.compile(rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) HTTP/(1\.[01])")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3})(?: [\t \x21-\x7e\x80-\xff]*)?")
_FIELD = re.compile(rb"([" + _TCHAR + rb"]+):[\t ]*([\t \x21-\x7e\x80-\xff]*?)[\t ]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[\t ]*;[\t \x21-\x7e\x80-\xff]*)?")
_DIGITS = re.compile(rb"[0-9]{1,18}")


class FramingError(Exception):
    """
    The bytes are not a message this parser will forward; the message says
    why, for the log.
    """


@frozen
class Head:
    """
    A message's start line and header fields, as sent.

    @ivar version: C{b"1.0"} or C{b"1.1"}.
    @ivar method: a request's method (C{b""} for a response).
    @ivar target: a request's target (C{b""} for a response).
    @ivar status: a response's status code (C{0} for a request).
    @ivar startLine: the first line, without its CRLF.
    @ivar fields: C{(name, value)} pairs in order, the name as written and
        the value without surrounding whitespace.
    """

    version: bytes
    method: bytes
    target: bytes
    status: int
    startLine: bytes
    fields: tuple[tuple[bytes, bytes], ...]

    def values(self, name: bytes) -> list[bytes]:
        """
        Every value of the field C{name} (case-insensitive), in order.
        """
        name = name.lower()
        return [v for n, v in self.fields if n.lower() == name]

    def tokens(self, name: bytes) -> list[bytes]:
        """
        The comma-separated, lowercased elements of every C{name} field.
        """
        return [
            t.strip().lower()
            for v in self.values(name)
            for t in v.split(b",")
            if t.strip()
        ]


@frozen
class HeadEvent:
    head: Head


@frozen
class BodyEvent:
    """
    Body bytes to pass on as they are (for a chunked body, its framing too).
    """

    data: bytes


@frozen
class EndEvent:
    """
    The message is complete.  C{closeDelimited}: its body ended with the
    connection (a response without a length).
    """

    closeDelimited: bool = False


Event = HeadEvent | BodyEvent | EndEvent

_HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE = (
    range(7)
)


class MessageReader:
    """
    Reads a stream of HTTP/1.1 requests (or responses) into events.

    Feed bytes with L{feed}; take events with L{next}, which returns L{None}
    when more bytes are needed, so that a caller can stop between messages
    (pipelined requests stay unparsed in the reader until asked for).

    For responses, say before each one which request method it answers
    with L{expect}: the answer to C{HEAD} has no body.
    """

    def __init__(self, requests: bool) -> None:
        self.requests = requests
        self._buffer = bytearray()
        self._offset = 0
        self._state = _HEAD
        self._remaining = 0
        self._lines: list[bytes] = []
        self._fieldCount = 0
        self._methods: list[bytes] = []
        self._eof = False
        self.failed: FramingError | None = None

    def feed(self, data: bytes) -> None:
        """
        Add bytes read from the connection.
        """
        if self._offset and self._offset == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        self._buffer += data

    def feedEOF(self) -> None:
        """
        The connection has ended: a close-delimited body ends here.
        """
        self._eof = True

    def expect(self, method: bytes) -> None:
        """
        The next response answers a request with C{method}.
        """
        self._methods.append(method)

    @property
    def idle(self) -> bool:
        """
        Whether the reader is between messages with nothing buffered.
        """
        return (
            self._state == _HEAD
            and not self._lines
            and self._offset == len(self._buffer)
        )

    @property
    def buffered(self) -> int:
        """
        How many bytes were fed and not yet turned into events.
        """
        return len(self._buffer) - self._offset

    def events(self) -> Iterator[Event]:
        """
        Every event the bytes fed so far make.
        """
        while True:
            event = self.next()
            if event is None:
                return
            yield event

    def next(self) -> Event | None:
        """
        The next event, or L{None} if more bytes are needed.

        @raise FramingError: the bytes cannot be forwarded safely; the
            reader is then unusable.
        """
        if self.failed is not None:
            raise self.failed
        try:
            return self._next()
        except FramingError as e:
            self.failed = e
            raise

    def _take(self, n: int) -> bytes:
        start = self._offset
        self._offset = start + n
        return bytes(self._buffer[start : start + n])

    def _line(self) -> bytes | None:
        """
        The next CRLF-terminated line without its CRLF, or L{None}.
        """
        buffer = self._buffer
        end = buffer.find(b"\n", self._offset)
        if end == -1:
            if len(buffer) - self._offset > MAX_LINE:
                raise FramingError(f"a line longer than {MAX_LINE} bytes")
            return None
        if end - self._offset > MAX_LINE:
            raise FramingError(f"a line longer than {MAX_LINE} bytes")
        if end == self._offset or buffer[end - 1] != 0x0D:
            raise FramingError("a line ending in a bare LF")
        line = bytes(buffer[self._offset : end - 1])
        self._offset = end + 1
        if b"\r" in line:
            raise FramingError("a bare CR inside a line")
        return line

    def _next(self) -> Event | None:
        state = self._state
        if state == _HEAD:
            return self._head()
        if state == _LENGTH or state == _CHUNK_DATA:
            available = len(self._buffer) - self._offset
            if not available:
                return None
            n = min(available, self._remaining)
            self._remaining -= n
            if not self._remaining:
                if state == _LENGTH:
                    self._state = _HEAD
                    self._pendingEnd = True
                else:
                    self._state = _CHUNK_CRLF
            return BodyEvent(self._take(n))
        if state == _UNTIL_CLOSE:
            available = len(self._buffer) - self._offset
            if available:
                return BodyEvent(self._take(available))
            if self._eof:
                self._state = _HEAD
                return EndEvent(closeDelimited=True)
            return None
        if state == _CHUNK_SIZE_LINE:
            start = self._offset
            line = self._line()
            if line is None:
                return None
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise FramingError("a chunk size that is not hexadecimal")
            size = int(match.group(1), 16)
            if size:
                self._remaining = size
                self._state = _CHUNK_DATA
            else:
                self._state = _TRAILER
                self._fieldCount = 0
            return BodyEvent(bytes(self._buffer[start : self._offset]))
        if state == _CHUNK_CRLF:
            if len(self._buffer) - self._offset < 2:
                if self._buffer[self._offset : self._offset + 1] not in (b"", b"\r"):
                    raise FramingError("chunk data longer than its size")
                return None
            if self._buffer[self._offset : self._offset + 2] != b"\r\n":
                raise FramingError("chunk data longer than its size")
            self._state = _CHUNK_SIZE_LINE
            return BodyEvent(self._take(2))
        # _TRAILER
        start = self._offset
        line = self._line()
        if line is None:
            return None
        if line:
            self._field(line)
            return BodyEvent(bytes(self._buffer[start : self._offset]))
        self._state = _HEAD
        self._pendingEnd = True
        return BodyEvent(bytes(self._buffer[start : self._offset]))

    _pendingEnd = False

    def _field(self, line: bytes) -> tuple[bytes, bytes]:
        if line[:1] in (b" ", b"\t"):
            raise FramingError("obsolete line folding")
        match = _FIELD.fullmatch(line)
        if match is None:
            raise FramingError("a malformed header field")
        self._fieldCount += 1
        if self._fieldCount > MAX_HEADERS:
            raise FramingError(f"more than {MAX_HEADERS} header fields")
        return match.group(1), match.group(2)

    def _head(self) -> Event | None:
        if self._pendingEnd:
            # The body's last bytes went out as an event of their own; the
            # end follows, before anything of the next message.
            self._pendingEnd = False
            return EndEvent()
        while True:
            line = self._line()
            if line is None:
                return None
            if not self._lines:
                if not line and self.requests:
                    # RFC 9112 2.2: an empty line before a request is
                    # ignored.
                    continue
                self._fieldCount = 0
                self._lines.append(line)
                continue
            if line:
                self._field(line)
                self._lines.append(line)
                continue
            break
        start, *fieldLines = self._lines
        self._lines = []
        fields = []
        for fieldLine in fieldLines:
            match = _FIELD.fullmatch(fieldLine)
            assert match is not None
            fields.append((match.group(1), match.group(2)))
        if self.requests:
            head = self._requestHead(start, tuple(fields))
        else:
            head = self._responseHead(start, tuple(fields))
        return HeadEvent(head)

    def _requestHead(self, start: bytes, fields: tuple[tuple[bytes, bytes], ...]) -> Head:
        match = _REQUEST_LINE.fullmatch(start)
        if match is None:
            raise FramingError("a malformed request line")
        head = Head(match.group(3), match.group(1), match.group(2), 0, start, fields)
        hosts = head.values(b"host")
        if len(hosts) > 1 or (head.version == b"1.1" and not hosts):
            raise FramingError("a request without exactly one Host field")
        self._framing(head, bodyless=False)
        return head

    def _responseHead(
        self, start: bytes, fields: tuple[tuple[bytes, bytes], ...]
    ) -> Head:
        match = _STATUS_LINE.fullmatch(start)
        if match is None:
            raise FramingError("a malformed status line")
        status = int(match.group(2))
        head = Head(match.group(1), b"", b"", status, start, fields)
        if 100 <= status < 200:
            # An interim response: the final one still follows.
            self._state = _HEAD
            self._pendingEnd = True
            return head
        method = self._methods.pop(0) if self._methods else b"GET"
        bodyless = method == b"HEAD" or status in (204, 304)
        self._framing(head, bodyless)
        return head

    def _framing(self, head: Head, bodyless: bool) -> None:
        """
        Set the state for the body that follows C{head}.
        """
        encodings = head.values(b"transfer-encoding")
        lengths = head.values(b"content-length")
        if bodyless:
            self._state = _HEAD
            self._pendingEnd = True
            return
        if encodings:
            if lengths:
                raise FramingError("both Transfer-Encoding and Content-Length")
            if head.version == b"1.0" and self.requests:
                raise FramingError("Transfer-Encoding on an HTTP/1.0 request")
            if head.tokens(b"transfer-encoding") != [b"chunked"]:
                raise FramingError("a transfer coding other than chunked")
            self._state = _CHUNK_SIZE_LINE
            return
        if lengths:
            values = {v.strip() for value in lengths for v in value.split(b",")}
            if len(values) != 1:
                raise FramingError("two different Content-Length values")
            (value,) = values
            if _DIGITS.fullmatch(value) is None:
                raise FramingError("a Content-Length that is not a number")
            self._remaining = int(value)
            if self._remaining:
                self._state = _LENGTH
            else:
                self._state = _HEAD
                self._pendingEnd = True
            return
        if self.requests:
            self._state = _HEAD
            self._pendingEnd = True
        else:
            self._state = _UNTIL_CLOSE
