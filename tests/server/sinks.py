"""Drain endpoints for the forwarding tests: a real HTTP server and a real TCP/TLS listener."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from herolog.parser import FrameDecoder, LogLine, parse_logplex
from tests.helpers import SERVE_POLL_S, LocalHTTPServer

HANG = -1
"""As one of HTTPSink's statuses: read the request and never answer it."""
RESET = -2
"""As one of HTTPSink's statuses: read the request, then reset the connection (RST)."""


def reset(conn: socket.socket) -> None:
    """Close ``conn`` with a TCP reset instead of an orderly end, as a crashing peer does."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)
    """When it was answered."""

    @property
    def lines(self) -> list[LogLine]:
        return parse_logplex(self.body)


@dataclass
class HTTPSink:
    """Answers each POST with the next status of ``statuses`` (then ``then``) and keeps it.

    A status may be HANG or RESET; with ``context`` it serves HTTPS; :meth:`down` and
    :meth:`up` take it off its port and back, as a drain that is gone for a while.
    """

    statuses: list[int] = field(default_factory=list)
    then: int = 204
    reply: bytes = b"sink says no\n"
    """The body of answers that are not 204."""
    reply_headers: dict[str, str] = field(default_factory=dict)
    """Headers of answers that are not 204 (a Retry-After, say)."""
    arrived: int = 0
    connections: int = 0
    """Connections accepted, all told."""
    requests: list[Request] = field(default_factory=list)
    hang: threading.Event | None = None
    """Requests wait until this is set: a drain that accepts and never answers."""
    context: ssl.SSLContext | None = None
    delay: float = 0.0
    """Seconds each answer waits: a drain that takes its time."""
    cut_short: bool = False
    """Answers that are not 204 end halfway through their body, the connection closed: a
    drain that dies as it answers."""

    def __post_init__(self) -> None:
        sink = self
        self.lock = threading.Lock()
        self.closed = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with sink.lock:
                    sink.connections += 1

            def handle(self) -> None:
                # serve hangs up on a drain request it gives up (stopping, timed out): not
                # a traceback on stderr, where tests look for serve's own.
                with contextlib.suppress(ConnectionError):
                    super().handle()

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink.lock:
                    sink.arrived += 1
                if sink.hang is not None:
                    sink.hang.wait(60)
                if sink.delay:
                    time.sleep(sink.delay)
                with sink.lock:
                    status = sink.statuses.pop(0) if sink.statuses else sink.then
                    sink.requests.append(Request(self.path, dict(self.headers), body, status))
                if status in (HANG, RESET):
                    self.close_connection = True
                    if status == HANG:
                        sink.closed.wait(60)
                    reset(self.connection)
                    return
                reply = b"" if status == 204 else sink.reply
                self.send_response(status)
                length = len(reply) * 2 if sink.cut_short else len(reply)
                self.send_header("Content-Length", str(length))
                self.close_connection = self.close_connection or sink.cut_short
                if status != 204:
                    for name, value in sink.reply_headers.items():
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.handler = Handler
        self.port = 0
        self.up()

    def up(self) -> None:
        """Listen (again, on the same port once it had one)."""
        self.server = LocalHTTPServer(self.handler, self.port, self.context).start()
        self.port = self.server.port

    def down(self) -> None:
        """Stop listening and drop every open connection: the drain refuses connections."""
        self.server.shutdown()
        for conn in self.server.open_connections():
            # A handler thread still holds a kept-alive connection open (its reader keeps
            # the socket from closing): shutting it down ends the connection for both.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            reset(conn)
        self.server.server_close()

    def url(self, path: str = "/logs", userinfo: str = "", query: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        scheme = "https" if self.context is not None else "http"
        return f"{scheme}://{at}127.0.0.1:{self.port}{path}{'?' + query if query else ''}"

    def delivered(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def delivered_lines(self) -> list[LogLine]:
        return [line for r in self.delivered() for line in r.lines]

    def close(self) -> None:
        self.closed.set()
        if self.hang is not None:
            self.hang.set()
        self.server.stop()


class SyslogSink:
    """A TCP (or, with ``context``, TLS) listener keeping every byte it receives.

    ``resets``: the first this many connections are reset once they have brought some
    bytes, which are lost (a receiver that crashes). ``hang``: connections read nothing
    until it is set (a receiver that accepts and stalls). ``greeting``: sent on each new
    connection (a receiver that talks back). ``reads``: a connection is closed after this
    many reads.
    """

    def __init__(
        self,
        context: ssl.SSLContext | None = None,
        *,
        resets: int = 0,
        hang: threading.Event | None = None,
        port: int = 0,
        greeting: bytes = b"",
        reads: int | None = None,
    ) -> None:
        self.streams: list[bytearray] = []
        self.connections = 0
        self.resets = resets
        self.hang = hang
        self.lock = threading.Lock()
        sink = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                if context is not None:
                    try:
                        conn = context.wrap_socket(conn, server_side=True)
                    except (ssl.SSLError, OSError):
                        return
                with sink.lock:
                    sink.connections += 1
                    doomed = sink.connections <= sink.resets
                    stream = bytearray()
                    if not doomed:
                        sink.streams.append(stream)
                try:
                    if sink.hang is not None:
                        sink.hang.wait(60)
                    with conn:
                        if greeting:
                            conn.sendall(greeting)
                        left = reads
                        while (left is None or left > 0) and (chunk := conn.recv(65536)):
                            if doomed:
                                reset(conn)
                                return
                            with sink.lock:
                                stream += chunk
                            left = None if left is None else left - 1
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def server_bind(self) -> None:
                if hang is not None:  # a small window: the sender feels the stall soon
                    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                super().server_bind()

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, args=(SERVE_POLL_S,), daemon=True
        ).start()

    @property
    def data(self) -> bytes:
        with self.lock:
            return b"".join(self.streams)

    def lines(self) -> list[LogLine]:
        """Every whole frame received, connection by connection (a connection the sender
        gave up on may end inside one)."""
        with self.lock:
            streams = [bytes(stream) for stream in self.streams]
        return [line for stream in streams for line in FrameDecoder().feed(stream)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def connections_to(port: int) -> int:
    """Established TCP connections from this machine to ``port`` on 127.0.0.1 (Linux)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    wanted = [f"0100007F:{port:04X}", "01"]  # the remote address, ESTABLISHED
    return sum(1 for row in rows if row.split()[2:4] == wanted)


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or condition}")


class Relay:
    """A TCP listener on a free port in front of a server's ``upstream`` port: each
    connection to it is handed to :meth:`_serve` in a thread of its own, which decides what
    passes. Close it with ``listener.close()``."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError
