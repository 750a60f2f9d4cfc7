"""
The C{postgres} matcher: a PostgreSQL client's first message.

A PostgreSQL client opens with one of four messages, each a 4-byte length
(itself included) and a 4-byte code, big endian:

  - C{SSLRequest}: length 8, code 80877103, asking for TLS;
  - C{GSSENCRequest}: length 8, code 80877104, asking for GSSAPI encryption;
  - C{StartupMessage}: the protocol version (major 3 in the high half, 0 or
    a small minor in the low), then C{name NUL value NUL} pairs, ended by a
    NUL; C{user} is required;
  - C{CancelRequest}: code 80877102, a process id and a secret key (4 bytes
    before protocol 3.2, up to 256 since).

Those eight bytes are distinctive enough to decide on, so that is all the
matcher reads, unless a C{database} or C{user} option asks about the
StartupMessage's parameters: then it reads the whole message, which a
server refuses beyond L{MAX_STARTUP} bytes, and so does this matcher.  Only
a cleartext StartupMessage shows them: after an SSLRequest or a
GSSENCRequest, the StartupMessage comes encrypted.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen
from zope.interface import implementer, provider

from .._errors import MatcherConfigError
from .._interfaces import MATCH, NEED_MORE, NO_MATCH, IMatcher, IMatcherFactory, Verdict
from .._peek import Peek
from ._options import choiceList, optionTable, stringList

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
PROTOCOL_MAJOR = 3
MAX_PROTOCOL_MINOR = 0xFF
"""
The highest minor protocol version accepted: 3.0 is what every client sends
today and 3.2 is PostgreSQL 18's; a server answers newer minors with a
NegotiateProtocolVersion message, so they are still PostgreSQL clients.
"""

MAX_STARTUP = 10000
"""
The longest StartupMessage accepted, as the PostgreSQL server's own limit
(C{MAX_STARTUP_PACKET_LENGTH}).
"""

MAX_CANCEL_KEY = 256
"""
The longest cancel key (protocol 3.2); before it, keys were 4 bytes.
"""

REQUESTS = ("ssl", "gssenc", "startup", "cancel")
"""
The option names of the four first messages.
"""

_DESCRIBED = {
    "ssl": "ssl-request",
    "gssenc": "gssenc-request",
    "startup": "startup",
    "cancel": "cancel-request",
}


@frozen
class FirstMessage:
    """
    What a PostgreSQL client's first 8 bytes say.

    @ivar request: one of L{REQUESTS}.
    @ivar length: the message's length, its 4 length bytes included.
    """

    request: str
    length: int


@frozen
class Startup:
    """
    A whole StartupMessage.

    @ivar version: the protocol version, such as C{"3.0"}.
    @ivar parameters: its C{name, value} pairs, in order, decoded as UTF-8
        (with replacement characters for invalid bytes).
    """

    version: str
    parameters: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """
        The value of the first parameter called C{name}, if any.
        """
        for key, value in self.parameters:
            if key == name:
                return value
        return None


def parseFirstMessage(data: bytes) -> FirstMessage | Verdict:
    """
    The kind of the PostgreSQL message starting C{data}, from its length and
    code.

    @return: a L{FirstMessage} once 8 bytes are in and fit one of the four
        kinds; L{NEED_MORE} before; L{NO_MATCH} as soon as the length shows
        it cannot be one (it never can be above L{MAX_STARTUP}, so the first
        byte must be 0) or once the 8 bytes fit none.
    """
    if data[:1] not in (b"", b"\x00"):
        return NO_MATCH
    if len(data) < 4:
        return NEED_MORE
    length = int.from_bytes(data[:4], "big")
    if not 8 <= length <= MAX_STARTUP:
        return NO_MATCH
    if len(data) < 8:
        return NEED_MORE
    code = int.from_bytes(data[4:8], "big")
    if code == SSL_REQUEST_CODE and length == 8:
        return FirstMessage("ssl", length)
    if code == GSSENC_REQUEST_CODE and length == 8:
        return FirstMessage("gssenc", length)
    if code == CANCEL_REQUEST_CODE and 16 <= length <= 12 + MAX_CANCEL_KEY:
        return FirstMessage("cancel", length)
    major, minor = divmod(code, 1 << 16)
    # The shortest startup message is "user\0u\0\0" after the 8 bytes.
    if major == PROTOCOL_MAJOR and minor <= MAX_PROTOCOL_MINOR and length >= 16:
        return FirstMessage("startup", length)
    return NO_MATCH


def parseStartup(data: bytes) -> Startup | Verdict:
    """
    The whole StartupMessage at the start of C{data}.

    @return: a L{Startup} once all of it is in and well formed (parameter
        pairs each ended by NULs, a final NUL exactly at its end, a C{user});
        L{NEED_MORE} before it is all in; L{NO_MATCH} if it is not a
        StartupMessage or is malformed.
    """
    first = parseFirstMessage(data)
    if not isinstance(first, FirstMessage):
        return first
    if first.request != "startup":
        return NO_MATCH
    if len(data) < first.length:
        return NEED_MORE
    body = data[8 : first.length]
    if not body.endswith(b"\x00"):
        return NO_MATCH
    fields = body[:-1].split(b"\x00")
    if len(fields) % 2 != 1 or fields[-1] != b"":
        return NO_MATCH
    names = fields[:-1:2]
    if not all(names):
        return NO_MATCH
    parameters = tuple(
        (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        for name, value in zip(names, fields[1:-1:2], strict=True)
    )
    major, minor = divmod(int.from_bytes(data[4:8], "big"), 1 << 16)
    startup = Startup(f"{major}.{minor}", parameters)
    if startup.get("user") is None:
        return NO_MATCH
    return startup


@implementer(IMatcher)
@frozen
class PostgresMatcher:
    """
    Matches a PostgreSQL client whose first message is one of C{requests},
    and whose StartupMessage names one of C{databases} and C{users}, if
    given.

    Without C{databases} and C{users} it decides on 8 bytes; with them, on
    the whole StartupMessage (at most L{MAX_STARTUP} bytes).

    @ivar requests: some of L{REQUESTS}.
    @ivar databases: accepted database names, or C{()} for any.  A client
        that names no database gets its user name as the database, and so
        it is matched here.
    @ivar users: accepted user names, or C{()} for any.
    """

    requests: tuple[str, ...] = REQUESTS
    databases: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    def match(self, peek: Peek) -> Verdict:
        first = peek.parse(parseFirstMessage)
        if not isinstance(first, FirstMessage):
            return first
        if first.request not in self.requests:
            return NO_MATCH
        if not (self.databases or self.users):
            return MATCH
        startup = peek.parse(parseStartup)
        if not isinstance(startup, Startup):
            return startup
        user = startup.get("user")
        database = startup.get("database") or user
        if self.users and user not in self.users:
            return NO_MATCH
        if self.databases and database not in self.databases:
            return NO_MATCH
        return MATCH

    def describe(self, peek: Peek) -> str:
        first = peek.parse(parseFirstMessage)
        if not isinstance(first, FirstMessage):
            return "postgres"
        text = f"postgres={_DESCRIBED[first.request]}"
        startup = peek.parse(parseStartup)
        if isinstance(startup, Startup):
            text += f" version={startup.version} user={startup.get('user')}"
            database = startup.get("database")
            if database is not None:
                text += f" database={database}"
        return text


@provider(IMatcherFactory)
class postgresFactory:
    """
    C{match.postgres = {}} for any PostgreSQL client;
    C{{requests = ["ssl", "gssenc", "startup", "cancel"]}} for some first
    messages only; C{{database = "app", user = ["alice", "bob"]}} for
    cleartext StartupMessages naming those.
    """

    name = "postgres"
    summary = (
        "Matches PostgreSQL clients (SSLRequest, GSSENCRequest, StartupMessage, "
        "CancelRequest; cleartext database and user)."
    )

    @staticmethod
    def build(options: object) -> IMatcher:
        table: Mapping[str, object] = optionTable(
            options, ("requests", "database", "user")
        )
        databases = (
            stringList(table["database"], "database") if "database" in table else ()
        )
        users = stringList(table["user"], "user") if "user" in table else ()
        if "requests" in table:
            requests = choiceList(table["requests"], "requests", REQUESTS)
        elif databases or users:
            requests = ("startup",)
        else:
            requests = REQUESTS
        if (databases or users) and requests != ("startup",):
            raise MatcherConfigError(
                "database and user can only be read from a cleartext "
                'StartupMessage; leave out requests or write requests = ["startup"]'
            )
        return PostgresMatcher(requests, databases, users)
