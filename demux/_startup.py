"""
Checks of what C{twistd demux} is started with, beyond the configuration:
the sockets systemd passed for C{systemd:} listen strings, and twistd's own
C{--pidfile} and C{--uid}, so that a mistake in them stops start-up with one
line instead of a traceback from deep inside Twisted.

The checks themselves are pure functions of what they are given.  What they
are given comes partly from Twisted's private names, read through
L{demux._twisted} (where every such use is, with a test that fails if one
disappears).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping, Sequence

from attrs import frozen

from ._config import listenSpec
from ._twisted import parseServer, systemdDaemon

SOCKET_UNIT = "contrib/demux.socket"


@frozen
class PassedSockets:
    """
    What a process was given by systemd's socket activation.

    @ivar descriptors: the passed descriptors Twisted will use, in order.
    @ivar names: their names, in the same order.
    @ivar environment: C{LISTEN_PID}, C{LISTEN_FDS} and C{LISTEN_FDNAMES} as
        the process was started with them (Twisted removes the first two
        when it reads them), with only those that were set.
    @ivar pid: this process's id.
    """

    descriptors: tuple[int, ...]
    names: tuple[str, ...]
    environment: Mapping[str, str]
    pid: int


def passedSockets() -> PassedSockets:
    """
    The sockets systemd passed this process, as Twisted sees them, and the
    environment that says what systemd meant to pass.
    """
    daemon = systemdDaemon()
    return PassedSockets(
        tuple(daemon.inheritedDescriptors()),
        tuple(daemon.inheritedNamedDescriptors()),
        _startingEnvironment(("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")),
        os.getpid(),
    )


def _startingEnvironment(keys: Sequence[str]) -> dict[str, str]:
    """
    C{keys} from the environment this process was started with: on Linux
    from C{/proc/self/environ}, which still holds what Twisted has removed
    from C{os.environ}, and elsewhere from C{os.environ}.
    """
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {k: os.environ[k] for k in keys if k in os.environ}
    found: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        name = key.decode(errors="replace")
        if sep and name in keys:
            found[name] = value.decode(errors="replace")
    return found


def _systemdArguments(endpoint: str) -> tuple[int | None, str | None] | None:
    """
    The C{index} or C{name} a C{systemd:} endpoint string asks for, or
    L{None} if it is not one (or Twisted cannot parse it: the configuration
    check reports that).
    """
    if not endpoint.startswith("systemd:"):
        return None
    try:
        _, args, kwargs = parseServer(endpoint)
    except Exception:
        return None
    values = dict(zip(("domain", "index", "name"), args, strict=False))
    values.update(kwargs)
    index = values.get("index")
    try:
        return (None if index is None else int(index)), values.get("name")
    except ValueError:
        return None


def _why(passed: PassedSockets) -> str:
    """
    Why Twisted sees no passed socket, from the environment systemd sets.
    """
    env = passed.environment
    if "LISTEN_FDS" not in env:
        return "LISTEN_FDS is not set"
    fds = env["LISTEN_FDS"]
    if "LISTEN_PID" not in env:
        return f"LISTEN_FDS={fds} but LISTEN_PID is not set"
    if env["LISTEN_PID"] != str(passed.pid):
        return (
            f"LISTEN_FDS={fds} is for process {env['LISTEN_PID']}, not this one "
            f"({passed.pid})"
        )
    if "LISTEN_FDNAMES" not in env:
        return (
            f"LISTEN_FDS={fds} but LISTEN_FDNAMES is not set, and Twisted uses "
            "passed sockets only with their names"
        )
    return (
        f"LISTEN_FDS={fds} but LISTEN_FDNAMES={env['LISTEN_FDNAMES']!r} names a "
        "different number of sockets"
    )


def systemdErrors(
    listen: Sequence[str], where: str, passed: PassedSockets, checking: bool
) -> list[str]:
    """
    One sentence for each C{systemd:} string in C{listen} that asks for a
    socket that was not passed.

    @param where: the place the strings come from (C{"listen"} or
        C{"--listen"}).
    @param checking: for C{--check}, which is usually run outside systemd:
        then a process that was passed nothing at all is not an error, since
        only the syntax can be checked.
    """
    if checking and "LISTEN_FDS" not in passed.environment:
        return []
    errors = []
    count = len(passed.descriptors)
    for description in listen:
        asked = _systemdArguments(listenSpec(description)[0])
        if asked is None:
            continue
        index, name = asked
        if index is not None:
            if index < count:
                continue
            wanted = f"asks for passed socket index {index}"
            if count:
                got = (
                    f"only {count} {'was' if count == 1 else 'were'} passed "
                    f"(LISTEN_FDS={passed.environment.get('LISTEN_FDS', count)})"
                )
            else:
                got = f"none was passed ({_why(passed)})"
        else:
            if name in passed.names:
                continue
            wanted = f"asks for the passed socket named {name!r}"
            if count:
                got = (
                    f"the {count} passed are named "
                    f"{', '.join(map(repr, passed.names))} (LISTEN_FDNAMES)"
                )
            else:
                got = f"none was passed ({_why(passed)})"
        errors.append(
            f"{where} {description!r}: {wanted}, but {got}; start demux from "
            f"its socket unit ({SOCKET_UNIT}) or listen on an address of its own"
        )
    return errors


def pidfileError(pidfile: str | None) -> str | None:
    """
    Why twistd will not be able to write C{pidfile}, or L{None} if it will.

    The file is opened for appending, as the check that is certain, and
    removed again if this made it, since twistd refuses an empty pid file.
    """
    if not pidfile:
        return None
    path = os.path.abspath(pidfile)
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        return f"cannot write the pid file {path}: {e.strerror}"
    if not existed:
        try:
            os.unlink(path)
        except OSError:
            pass
    return None


def userError(uid: int | None, gid: int | None) -> str | None:
    """
    Why twistd cannot switch to C{uid}, as given by number with C{--uid}: it
    looks up the user's group when no C{--gid} is given.  (A user I{name}
    that does not exist stops twistd while it parses its options, before it
    loads demux, so that cannot be reported here.)
    """
    if uid is None or gid is not None:
        return None
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return f"no such user: {uid} (give --gid too, or a user that exists)"
    return None

