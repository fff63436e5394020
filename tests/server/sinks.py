"""Drain endpoints for the forwarding tests: a real HTTP server and a real TCP/TLS listener."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from herolog.parser import LogLine, parse_logplex


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def lines(self) -> list[LogLine]:
        return parse_logplex(self.body)


@dataclass
class HTTPSink:
    """Answers each POST with the next status of ``statuses`` (then ``then``) and keeps it."""

    statuses: list[int] = field(default_factory=list)
    then: int = 204
    reply: bytes = b"sink says no\n"
    """The body of answers that are not 204."""
    arrived: int = 0
    requests: list[Request] = field(default_factory=list)
    hang: threading.Event | None = None
    """Requests wait until this is set: a drain that accepts and never answers."""

    def __post_init__(self) -> None:
        sink = self
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink.lock:
                    sink.arrived += 1
                if sink.hang is not None:
                    sink.hang.wait(60)
                with sink.lock:
                    status = sink.statuses.pop(0) if sink.statuses else sink.then
                    sink.requests.append(Request(self.path, dict(self.headers), body, status))
                reply = b"" if status == 204 else sink.reply
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/logs", userinfo: str = "", query: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}{path}{'?' + query if query else ''}"

    def delivered(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def delivered_lines(self) -> list[LogLine]:
        return [line for r in self.delivered() for line in r.lines]

    def close(self) -> None:
        if self.hang is not None:
            self.hang.set()
        self.server.shutdown()
        self.server.server_close()


class SyslogSink:
    """A TCP (or, with ``context``, TLS) listener keeping every byte it receives."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.data = bytearray()
        self.connections = 0
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
                with conn:
                    with sink.lock:
                        sink.connections += 1
                    while chunk := conn.recv(65536):
                        with sink.lock:
                            sink.data += chunk

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def lines(self) -> list[LogLine]:
        with self.lock:
            return parse_logplex(bytes(self.data))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or condition}")
