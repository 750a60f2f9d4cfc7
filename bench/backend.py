"""
The backend every proxy relays to: one single-threaded C{epoll} loop that
answers with a tiny HTTP reply, sinks or sources bulk data, and holds idle
connections, on as many loopback ports as it is told.

Run as C{python -m bench.backend PORT:PREAMBLE [PORT:PREAMBLE ...]}; it
prints C{ready} once it listens and runs until it is terminated.

The protocol on each connection: the client sends its C{PREAMBLE} bytes
(the ClientHello or the magic that picks the route) and, in the same write, a
10-byte command, two letters and a big-endian 64-bit length. The backend
answers every command with L{REPLY} (the tiny reply whose first byte the
latency client times), then:

  - C{RP}: closes. The backend closes first so that TIME_WAIT sockets pile
    up on the server side, not in the client's ephemeral ports, where they
    would make every C{connect()} slower as a run goes on;
  - C{HD}: holds the connection open and idle until the client closes it;
  - C{UP}: reads that many bytes and answers C{DONE} and the count;
  - C{DN}: sends that many bytes.

Big buffers (1 MiB reads and writes) keep Python's per-call cost small
against the kernel's copying, so the loop is not what limits a transfer; the
benchmark runs every workload against a direct connection to show it.
"""

from __future__ import annotations

import errno
import resource
import select
import socket
import struct
import sys

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
COMMAND = struct.Struct("!2sQ")
CHUNK = 1 << 20

_ZEROS = memoryview(bytes(CHUNK))


class _Connection:
    """
    Where one connection is in the protocol above.
    """

    __slots__ = ("sock", "preamble", "command", "mode", "remaining", "count")

    def __init__(self, sock: socket.socket, preamble: int) -> None:
        self.sock = sock
        self.preamble = preamble
        self.command = b""
        self.mode = "preamble"
        self.remaining = 0
        self.count = 0


def serve(specs: list[tuple[int, int]]) -> None:
    """
    Listen on each C{(port, preambleLength)} and serve until killed.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    poller = select.epoll()
    listeners: dict[int, tuple[socket.socket, int]] = {}
    for port, preamble in specs:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(4096)
        listener.setblocking(False)
        listeners[listener.fileno()] = (listener, preamble)
        poller.register(listener.fileno(), select.EPOLLIN)
    connections: dict[int, _Connection] = {}
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    print("ready", flush=True)

    def close(fd: int) -> None:
        conn = connections.pop(fd)
        poller.unregister(fd)
        conn.sock.close()

    while True:
        for fd, events in poller.poll():
            if fd in listeners:
                listener, preamble = listeners[fd]
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE):
                            break
                        raise
                    sock.setblocking(False)
                    connections[sock.fileno()] = _Connection(sock, preamble)
                    poller.register(sock.fileno(), select.EPOLLIN)
                continue
            conn = connections.get(fd)
            if conn is None:
                continue
            if conn.mode == "down" and events & select.EPOLLOUT:
                try:
                    sent = conn.sock.send(_ZEROS[: min(CHUNK, conn.remaining)])
                except BlockingIOError:
                    continue
                except OSError:
                    close(fd)
                    continue
                conn.remaining -= sent
                if conn.remaining == 0:
                    conn.mode = "idle"
                    poller.modify(fd, select.EPOLLIN)
                continue
            if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                n = conn.sock.recv_into(buffer)
            except BlockingIOError:
                continue
            except OSError:
                close(fd)
                continue
            if n == 0:
                close(fd)
                continue
            data = view[:n]
            if conn.mode == "up":
                conn.count += n
                if conn.count >= conn.remaining:
                    conn.sock.sendall(b"DONE" + struct.pack("!Q", conn.count))
                    conn.mode = "idle"
                continue
            if conn.mode == "preamble":
                used = min(n, conn.preamble)
                conn.preamble -= used
                data = data[used:]
                if conn.preamble:
                    continue
                conn.mode = "command"
            if conn.mode == "command" and len(data):
                conn.command += bytes(data)
                if len(conn.command) < COMMAND.size:
                    continue
                verb, length = COMMAND.unpack_from(conn.command)
                rest = len(conn.command) - COMMAND.size
                conn.sock.send(REPLY)
                if verb == b"RP":
                    close(fd)
                elif verb == b"HD":
                    conn.mode = "idle"
                elif verb == b"UP":
                    conn.mode = "up"
                    conn.remaining = length
                    conn.count = rest
                    if conn.count >= length:
                        conn.sock.sendall(b"DONE" + struct.pack("!Q", conn.count))
                        conn.mode = "idle"
                elif verb == b"DN":
                    conn.mode = "down"
                    conn.remaining = length
                    poller.modify(fd, select.EPOLLIN | select.EPOLLOUT)
                else:
                    close(fd)


def main(argv: list[str]) -> None:
    """
    Parse C{PORT:PREAMBLE} arguments and serve.
    """
    specs = []
    for arg in argv:
        port, preamble = arg.split(":")
        specs.append((int(port), int(preamble)))
    serve(specs)


if __name__ == "__main__":
    main(sys.argv[1:])
