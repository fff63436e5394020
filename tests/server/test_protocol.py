"""serve's HTTP protocol (uvicorn's, with time and size limits on how a request arrives),
under a plain ASGI app on a real uvicorn server: pipelined requests, which uvicorn stops
reading behind an unfinished answer, must not be cut off for the wait."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from herolog.server.protocol import RequestLimits, protocol_class
from tests.server.test_abuse import answers_on


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Streams six events from /stream (as a log session does); echoes the body elsewhere."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(6):
            await send({"type": "http.response.body", "body": b"event %d\n" % i, "more_body": True})
            await asyncio.sleep(0.25)
        await send({"type": "http.response.body", "body": b""})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def port() -> Iterator[int]:
    """A uvicorn server with 0.5 s time limits, on a free port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    limits = RequestLimits(header_timeout=0.5, body_timeout=0.5, max_body=1 << 20)
    config = uvicorn.Config(app, http=protocol_class(limits), lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield int(sock.getsockname()[1])
    server.should_exit = True
    thread.join(10)


def test_a_request_waiting_behind_a_stream_is_not_cut_off(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n0123456789"
        )
        time.sleep(0.2)
        sock.sendall(b"abcdefghij\r\n")  # the rest of the body, well within its time
        time.sleep(0.2)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answers_on(sock) == [200, 200, 200]


def test_a_pipelined_request_is_not_charged_for_the_body_before_it(port: int) -> None:
    big = b"x" * 50_000  # with the next request's first line: one read, one TCP segment
    first = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big) + big
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for part in (
            first + b"POST /echo HTTP/1.1\r\nHost: x\r\n",
            b"X-Pad: " + b"p" * 20_000 + b"\r\n",  # 70 KB since the connection opened
            b"Content-Length: 2\r\nConnection: close\r\n\r\nok",
        ):
            sock.sendall(part)
            time.sleep(0.1)
        assert answers_on(sock) == [200, 200]


def test_trailers_cannot_grow_without_end(port: int) -> None:
    """A chunked body's trailers go into the request's headers: they are counted too."""
    sent = 0
    line = b"X-Trailer: " + b"t" * 60_000 + b"\r\n"
    # Cut off: what was sent is the limit plus what the two sockets' buffers took in. The
    # loop goes past that bound, so that a server that never cut it off fails the test.
    bound = (64 << 10) + kernel_buffers() + len(line)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"2\r\nhi\r\n0\r\n")
        try:
            while sent < bound + (8 << 20):
                sock.sendall(line)
                sent += len(line)
        except OSError:
            pass
        assert answers_on(sock) == [413]
    assert sent < bound


def kernel_buffers() -> int:
    """The most a loopback TCP connection's send and receive buffers can hold."""
    most = 0
    for name in ("tcp_wmem", "tcp_rmem"):
        most += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
    return most
