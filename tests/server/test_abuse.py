"""Hostile and broken clients of `herolog serve`: lying or trickling HTTP bodies, huge query
strings, strange app names, bad credentials, broken syslog streams, and thousands of idle
connections. Each gets a clear 4xx (or its connection closed) with nothing stored, while a
well-behaved drain beside it is served throughout."""

from __future__ import annotations

import base64
import contextlib
import gzip
import logging
import os
import re
import resource
import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import trustme

from herolog.server import _QuietRepeats
from herolog.server.app import MAX_QUERY
from herolog.server.config import Credentials
from herolog.server.protocol import MAX_HEADER_BYTES
from herolog.server.sessions import FAILED_RETRY_MS
from herolog.store import Delivery, SQLiteStore
from tests import web
from tests.helpers import constants_env, herolog_env, herolog_process, store_drain
from tests.server.conftest import Running, ServeProcess, ServerFactory, own_certificate
from tests.server.sinks import HTTPSink, SyslogSink
from tests.server.test_intake import body
from tests.server.test_process import stored
from tests.server.test_syslog import (
    closed_by_server,
    connect,
    messages,
    syslog_frames,
    wait_for,
)

BODY_TIMEOUT = 1.0
USER, PASSWORD, API_KEY = "drain", "s3cret-pass", "k3y-s3cret"
GOOD_AUTH = b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())
BEARER = b"Bearer " + API_KEY.encode()


class Bystander:
    """A well-behaved drain posting one-line batches in a thread while a test abuses the
    server, remembering when each answer came."""

    def __init__(self, running: Running, auth: tuple[str, str] | None = None) -> None:
        self.running = running
        self.auth = auth
        self.answers: list[tuple[float, int]] = []
        self.failure: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._post, daemon=True)

    def _post(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                answer = self.running.post("bystander", body(f"bystander {i}"), auth=self.auth)
            except httpx.HTTPError as error:
                self.failure = error
                return
            self.answers.append((time.monotonic(), answer.status_code))
            i += 1
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def served_between(self, start: float, end: float) -> bool:
        return any(start < at < end and status == 204 for at, status in self.answers)

    def check(self) -> None:
        """Every batch was acknowledged and stored, once, in order."""
        assert self.failure is None, f"the well-behaved drain failed: {self.failure!r}"
        assert self.answers, "the well-behaved drain got no answer at all"
        assert {status for _, status in self.answers} == {204}, self.answers
        want = [f"bystander {i} 0" for i in range(len(self.answers))]
        assert [x.message for x in self.running.lines("bystander")] == want


@contextmanager
def bystander(running: Running, auth: tuple[str, str] | None = None) -> Iterator[Bystander]:
    watcher = Bystander(running, auth)
    watcher._thread.start()
    try:
        wait_for(lambda: len(watcher.answers) > 0, timeout=30)
        yield watcher
    finally:
        watcher.stop()
    watcher.check()


def exchange(port: int, request: bytes, timeout: float = 30.0) -> bytes:
    """Send raw bytes; everything the server sends back until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:  # closed with bytes of ours unread: what came is enough
        pass
    return out


def status(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert m, response[:200]
    return int(m.group(1))


def post_request(
    path: bytes,
    payload: bytes,
    *,
    length: int | None = None,
    authorization: bytes | None = GOOD_AUTH,
    content_type: bytes = b"application/logplex-1",
    close: bool = True,
) -> bytes:
    lines = [
        b"POST " + path + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: " + (b"close" if close else b"keep-alive"),
        b"Content-Type: " + content_type,
        b"Content-Length: %d" % (len(payload) if length is None else length),
    ]
    if authorization is not None:
        lines.append(b"Authorization: " + authorization)
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def all_answered(running: Running) -> bool:
    """Every intake request that reached herolog has had its answer (or its client left)."""
    stats = running.server.stats
    return sum(stats.responses.values()) >= stats.requests


def drains(running: Running) -> list[str]:
    store = SQLiteStore.open(running.server.config.store_path, create=False)
    try:
        return [d.url for d in store.drains()]
    finally:
        store.close()


@pytest.fixture
def guarded(make_server: ServerFactory) -> Running:
    """A server with intake credentials, an API key and a short body timeout."""
    return make_server(auth=Credentials(USER, PASSWORD), api_key=API_KEY, body_timeout=BODY_TIMEOUT)


# Lying Content-Length and slow bodies ------------------------------------------------


@pytest.mark.slow
def test_a_body_shorter_than_its_content_length_times_out_with_408(guarded: Running) -> None:
    payload = body("never complete", n=3)
    with bystander(guarded, (USER, PASSWORD)) as others:
        start = time.monotonic()
        answer = exchange(
            guarded.server.http_port or 0,
            post_request(b"/apps/demo/logs", payload, length=len(payload) + 100),
        )
        end = time.monotonic()
        assert status(answer) == 408
        assert b"connection: close" in answer.lower()
        assert b"the body did not arrive within 1 s" in answer
        assert end - start < 30, "the server held the request far past its body timeout"
        assert others.served_between(start, end)
    assert guarded.lines("demo") == []
    assert guarded.server.stats.responses[408] == 1


SHORT_BODY = post_request(
    b"/apps/demo/logs", body("never complete"), length=len(body("never complete")) + 1
).replace(b"Authorization: " + GOOD_AUTH + b"\r\n", b"")


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("variable", "request_bytes", "message"),
    [
        ("HEROLOG_BODY_TIMEOUT", SHORT_BODY, b"the body"),
        ("HEROLOG_HEADER_TIMEOUT", b"POST /apps/demo/logs HTTP/1.1\r\n", b"the request headers"),
    ],
    ids=["body", "headers"],
)
def test_timeouts_are_options_of_serve(
    herolog_home: Path, variable: str, request_bytes: bytes, message: bytes
) -> None:
    server = ServeProcess("--port", "0", env={**herolog_env(), variable: "0.5"})
    try:
        answer = exchange(int(server.url.rsplit(":", 1)[1]), request_bytes)
        assert status(answer) == 408
        assert message + b" did not arrive within 0.5 s" in answer
    finally:
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.finish()
    assert code == 0, err


def test_a_body_still_trickling_after_an_early_answer_is_cut_off(guarded: Running) -> None:
    """A request refused before its body is read (here, 401) is answered at once; a client
    that goes on sending the body a byte at a time cannot keep the connection."""
    payload = body("trickled after 401", n=20)
    request = post_request(b"/apps/demo/logs", payload, authorization=b"Basic bm8=", close=False)
    head = request[: len(request) - len(payload)]
    with socket.create_connection(("127.0.0.1", guarded.server.http_port or 0), timeout=30) as sock:
        sock.sendall(head + payload[:10])
        start = time.monotonic()
        with contextlib.suppress(OSError):  # the server hangs up part way
            for i in range(10, len(payload)):
                sock.sendall(payload[i : i + 1])
                time.sleep(0.05)
                if time.monotonic() - start > 20:
                    break
        assert answers_on(sock) == [401]
        assert time.monotonic() - start < 10
    assert guarded.lines("demo") == []


@pytest.mark.parametrize("close", [True, False], ids=["connection-close", "keep-alive"])
def test_a_body_longer_than_its_content_length(guarded: Running, close: bool) -> None:
    """uvicorn takes the first Content-Length bytes as the body. On a kept-alive connection
    it reads the rest as the next request and answers 400 (before the first is answered);
    with Connection: close it drops the rest. Only the declared body can be stored, and only
    if it is whole frames: a cut through a frame stores nothing."""
    port = guarded.server.http_port or 0
    frames = [body(f"frame {i}") for i in range(3)]
    payload = b"".join(frames)
    declared = ["frame 0 0", "frame 1 0"]
    with bystander(guarded, (USER, PASSWORD)):
        mid_frame = exchange(port, post_request(b"/apps/cut/logs", payload, length=10, close=close))
        assert status(mid_frame) == 400
        on_boundary = exchange(
            port,
            post_request(
                b"/apps/whole/logs", payload, length=len(frames[0] + frames[1]), close=close
            ),
        )
        assert status(on_boundary) in (204, 400)
        wait_for(lambda: all_answered(guarded))
    assert guarded.lines("cut") == []
    whole = [x.message for x in guarded.lines("whole")]
    assert whole == declared if status(on_boundary) == 204 else whole in ([], declared)


def test_a_content_length_with_thousands_of_leading_zeros_is_its_number(
    guarded: Running,
) -> None:
    """httptools takes it; int() refuses a number of over 4,300 digits, zeros or not."""
    payload = body("zeros", n=2)
    request = post_request(b"/apps/demo/logs", payload).replace(
        b"Content-Length: ", b"Content-Length: " + b"0" * 5000
    )
    assert status(exchange(guarded.server.http_port or 0, request)) == 204
    assert len(guarded.lines("demo")) == 2


@pytest.mark.parametrize(
    "declared",
    [b"+5", b"-5", b"0x5", b"5,5", b"5 5", b"five", b"\xd9\xa5", b"", b"5\r\nContent-Length: 5"],
)
def test_a_content_length_that_is_not_a_number_is_400(guarded: Running, declared: bytes) -> None:
    """serve's HTTP parser (httptools) refuses it before the intake reads the header: 400,
    nothing stored, and a well-formed batch after it is taken. The intake's own check for
    digits stays for the app run under another ASGI server."""
    port = guarded.server.http_port or 0
    request = post_request(b"/apps/demo/logs", body("odd", n=1)).replace(
        b"Content-Length: %d" % len(body("odd", n=1)), b"Content-Length: " + declared
    )
    assert status(exchange(port, request)) == 400
    assert status(exchange(port, post_request(b"/apps/demo/logs", body("after", n=1)))) == 204
    assert [x.message.split()[0] for x in guarded.lines("demo")] == ["after"]


def test_the_app_under_another_asgi_server_checks_content_length_itself(
    herolog_home: Path,
) -> None:
    """The intake's own check, for the app run under an ASGI server whose HTTP parser lets
    such a header through (here httpx's ASGI transport, which passes it as given)."""
    import asyncio

    from herolog.server.app import HerologApp
    from herolog.server.config import ServeConfig
    from herolog.server.writer import Writer

    config = ServeConfig(store_path=herolog_home / "logs.db", port=0)
    app = HerologApp(config, Writer(config.store_path, config.history))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answer = await client.post(
                "/apps/demo/logs",
                content=body("odd", n=1),
                headers={"Content-Type": "application/logplex-1", "Content-Length": "five"},
            )
        await app.broadcaster.close()
        return answer

    answer = asyncio.run(call())
    assert (answer.status_code, answer.text) == (400, "Content-Length is not a number\n")


@pytest.mark.slow
def test_trickling_bodies_are_cut_off_while_others_are_served(guarded: Running) -> None:
    port = guarded.server.http_port or 0
    payload = body("trickled", n=20)

    def trickle(path: bytes, data: bytes, kind: bytes, auth: bytes) -> tuple[int, float]:
        request = post_request(path, data, content_type=kind, authorization=auth)
        head, rest = request[: request.index(b"\r\n\r\n") + 4], request[len(request) - len(data) :]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head)
            sock.settimeout(0.2)
            give_up = time.monotonic() + 60
            for i in range(len(rest)):
                if time.monotonic() > give_up:
                    break
                try:
                    sock.sendall(rest[i : i + 1])
                    if sock.recv(65536, socket.MSG_PEEK):
                        break  # answered before the body was all sent
                except TimeoutError:
                    continue
                except OSError:
                    break
            sock.settimeout(30)
            return status(read_until_closed(sock)), time.monotonic()

    with bystander(guarded, (USER, PASSWORD)) as others, ThreadPoolExecutor(21) as pool:
        start = time.monotonic()
        intake = [
            pool.submit(trickle, b"/apps/demo/logs", payload, b"application/logplex-1", GOOD_AUTH)
            for _ in range(20)
        ]
        api_body = b'{"url": "https://logs.example.com/drain"}'
        api = pool.submit(trickle, b"/apps/demo/log-drains", api_body, b"application/json", BEARER)
        answers = [f.result(timeout=60) for f in [*intake, api]]
        assert [code for code, _ in answers] == [408] * 21
        assert others.served_between(start, min(at for _, at in answers))
    assert guarded.lines("demo") == []
    assert drains(guarded) == []


def test_a_body_sent_in_pieces_within_the_timeout_is_stored(make_server: ServerFactory) -> None:
    running = make_server(body_timeout=20.0)
    payload = body("in pieces", n=5)
    pieces = iter([payload[:10], payload[10:100], payload[100:]])

    def slowly() -> Iterator[bytes]:
        for piece in pieces:
            yield piece
            time.sleep(0.1)

    assert running.post("demo", slowly()).status_code == 204
    assert len(running.lines("demo")) == 5


# Slow and huge headers --------------------------------------------------------------

HEADER_TIMEOUT = 1.0


@pytest.fixture
def strict(make_server: ServerFactory) -> Running:
    """A server with a short header timeout."""
    return make_server(header_timeout=HEADER_TIMEOUT)


def answers_on(sock: socket.socket) -> list[int]:
    """The status of every answer on a connection, read until the server closes it."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", read_until_closed(sock))]


def test_a_connection_that_sends_nothing_is_closed_with_408(strict: Running) -> None:
    with bystander(strict) as others:
        # Before connecting: the server's clock starts when it accepts, which can be before
        # this thread runs again once connected.
        start = time.monotonic()
        with socket.create_connection(
            ("127.0.0.1", strict.server.http_port or 0), timeout=30
        ) as silent:
            answer = read_until_closed(silent)
        end = time.monotonic()
        assert status(answer) == 408
        assert b"the request headers did not arrive within 1 s" in answer
        assert b"connection: close" in answer.lower()
        assert HEADER_TIMEOUT <= end - start < 10
        assert others.served_between(start, end)
    assert strict.server.stats.responses[408] == 1


def test_trickled_headers_do_not_move_the_deadline(strict: Running) -> None:
    request = post_request(b"/apps/demo/logs", body("trickled"), authorization=None)
    with socket.create_connection(("127.0.0.1", strict.server.http_port or 0), timeout=30) as sock:
        start = time.monotonic()
        sent = 0
        with contextlib.suppress(OSError):  # the server hangs up part way
            while sent < len(request) and time.monotonic() - start < 20:
                sock.sendall(request[sent : sent + 1])
                sent += 1
                time.sleep(0.05)
        assert answers_on(sock) == [408]
        assert time.monotonic() - start < 10
    assert sent < len(request) - len(body("trickled"))  # cut off within the headers
    assert strict.lines("demo") == []


@pytest.mark.slow
def test_a_later_request_on_a_kept_alive_connection_has_its_own_deadline(strict: Running) -> None:
    first = post_request(b"/apps/demo/logs", body("first"), authorization=None, close=False)
    second = post_request(b"/apps/demo/logs", body("second"), authorization=None)
    with socket.create_connection(("127.0.0.1", strict.server.http_port or 0), timeout=30) as sock:
        sock.sendall(first)
        wait_for(lambda: [x.message for x in strict.lines("demo")] == ["first 0"])
        time.sleep(HEADER_TIMEOUT * 1.5)  # idle between requests: the keep-alive timeout's
        start = time.monotonic()
        sock.sendall(second[:20])
        assert answers_on(sock) == [204, 408]
        # Not measured from the first request or the connection: the timeout's own length
        # (less the millisecond asyncio may fire a timer early; 0.99998 s was seen).
        assert HEADER_TIMEOUT - 0.01 <= time.monotonic() - start < 10
    assert [x.message for x in strict.lines("demo")] == ["first 0"]


def huge_header(size: int) -> bytes:
    return post_request(b"/apps/demo/logs", body("big"), authorization=None).replace(
        b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nX-Padding: " + b"p" * size + b"\r\n"
    )


@pytest.mark.parametrize(
    ("pieces", "whole"),
    [(1, True), (1, False), (64, False)],
    ids=["whole-request", "unfinished-headers", "headers-in-pieces"],
)
def test_headers_over_the_limit_get_431(strict: Running, pieces: int, whole: bool) -> None:
    request = huge_header(MAX_HEADER_BYTES + 1000)
    end = len(request) if whole else request.index(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", strict.server.http_port or 0), timeout=30) as sock:
        step = -(-end // pieces)
        with contextlib.suppress(OSError):
            for start in range(0, end, step):
                sock.sendall(request[start : start + step])
                time.sleep(0.005)
        answer = read_until_closed(sock)
    assert status(answer) == 431
    assert b"over the 65,536-byte limit" in answer  # README's 64 KiB
    assert strict.lines("demo") == []
    assert strict.server.stats.responses[431] == 1
    assert strict.server.stats.requests == 0


def test_a_body_that_goes_on_with_a_tls_handshake_byte_is_no_tls_client(
    make_server: ServerFactory,
) -> None:
    """Only a connection's first bytes can be a TLS handshake: the rest of a body, in a read
    of its own, may begin with 0x16 (a control character in a message) and is stored."""
    running = make_server()
    message = "before\x16after"
    payload = body(message)
    split = payload.index(b"\x16")
    with socket.create_connection(("127.0.0.1", running.server.http_port or 0), timeout=30) as sock:
        sock.sendall(
            b"POST /apps/demo/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/logplex-1\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload[:split])
        )
        time.sleep(0.2)  # in a read of its own, as it would come over a slow network
        sock.sendall(payload[split:])
        answer = read_until_closed(sock)
    assert status(answer) == 204
    assert [line.message for line in running.lines("demo")] == [f"{message} 0"]


def send_padded_chunks(port: int, payload: bytes, padding: int) -> bytes:
    """Post ``payload`` chunked, in 1 KiB chunks sent one at a time, each with a chunk
    extension of ``padding`` bytes (RFC 9112 7.1.1), framing that is no part of the body;
    what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # refused, and closed, before the end
            sock.sendall(
                b"POST /apps/demo/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Content-Type: application/logplex-1\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for start in range(0, len(payload), 1024):
                piece = payload[start : start + 1024]
                sock.sendall(b"%x;pad=%s\r\n%s\r\n" % (len(piece), b"p" * padding, piece))
                time.sleep(0.002)
            sock.sendall(b"0\r\n\r\n")
        return read_until_closed(sock)


def test_what_follows_the_headers_may_be_twice_the_body_limit_and_no_more(
    make_server: ServerFactory,
) -> None:
    """README: the connection is closed with a 413 once what follows the headers (the body
    with its chunk framing) is over twice --max-body, with room for trailers (64 KiB); up to
    that, a body within the limit is stored whatever its framing."""
    running = make_server(max_body=64 << 10)
    port = running.server.http_port or 0
    payload = body("x" * 1000, n=60)
    assert len(payload) <= 64 << 10
    limit = 2 * (64 << 10) + (64 << 10)
    # 60 chunks of 2.6 KiB: over --max-body and the 64 KiB, within the limit
    assert status(send_padded_chunks(port, payload, 1600)) == 204
    assert len(running.lines("demo")) == 60
    # 60 chunks of 9 KiB: over the limit, even leaving out what the server's first read of
    # the connection takes (up to 256 KiB), which is not counted
    answer = send_padded_chunks(port, payload, 8000)
    assert status(answer) == 413
    assert answer.endswith(f"the request is over the {limit:,}-byte limit\n".encode())
    assert len(running.lines("demo")) == 60


@pytest.mark.parametrize("first", [True, False], ids=["first-header", "after-host"])
def test_one_endless_header_value_is_cut_off_before_it_ends(strict: Running, first: bool) -> None:
    """httptools keeps a header's value in memory until it ends: the count must not wait."""
    host = b"" if first else b"Host: 127.0.0.1\r\n"
    start = b"POST /apps/demo/logs HTTP/1.1\r\n" + host + b"X-Endless: "
    sent = 0
    with socket.create_connection(("127.0.0.1", strict.server.http_port or 0), timeout=30) as sock:
        sock.sendall(start)
        with contextlib.suppress(OSError):
            while sent < 100 * MAX_HEADER_BYTES:
                sock.sendall(b"e" * 4096)
                sent += 4096
        answer = read_until_closed(sock)
    assert status(answer) == 431
    assert sent < 100 * MAX_HEADER_BYTES


def test_headers_under_the_limit_are_served(strict: Running) -> None:
    answer = exchange(strict.server.http_port or 0, huge_header(MAX_HEADER_BYTES - 1000))
    assert status(answer) == 204
    assert [x.message for x in strict.lines("demo")] == ["big 0"]


# Query strings, app names, credentials ------------------------------------------------


def test_huge_query_strings_are_refused(guarded: Running) -> None:
    port = guarded.server.http_port or 0
    payload = body("query")
    at_the_limit = b"a=" + b"x" * (MAX_QUERY - 2)
    many = b"&".join(b"k%d=v" % i for i in range(3000))
    long_value = b"ddsource=" + b"y" * 20_000
    with bystander(guarded, (USER, PASSWORD)):
        for query in (many, long_value):
            answer = exchange(port, post_request(b"/apps/demo/logs?" + query, payload))
            assert status(answer) == 414
            assert f"over the {MAX_QUERY:,}-byte limit".encode() in answer
        # past what serve reads as a request line at all: just past it (which httptools
        # cannot parse as a URL either), and far past it; a URL of exactly the limit is
        # under it, but not with the headers (431)
        path = b"/apps/demo/logs?a="
        sizes = {MAX_HEADER_BYTES - len(path): 431, MAX_HEADER_BYTES + 1000: 414, 1 << 20: 414}
        for size, expected in sizes.items():
            huge = exchange(port, post_request(path + b"z" * size, payload))
            assert status(huge) == expected, size
            assert f"over the {MAX_HEADER_BYTES:,}-byte limit".encode() in huge
        assert guarded.lines("demo") == []
        answer = exchange(port, post_request(b"/apps/demo/logs?" + at_the_limit, payload))
        assert status(answer) == 204
    (kept,) = guarded.lines("demo")
    assert kept.attributes is not None
    assert len(kept.attributes) > MAX_QUERY - 10


@pytest.mark.parametrize("zipped", [False, True], ids=["plain", "gzip"])
def test_a_query_string_on_thousands_of_tiny_frames_is_refused(
    make_server: ServerFactory, zipped: bool
) -> None:
    """Every line stores the drain URL's query parameters whole: 30,000 three-byte frames
    behind an 8 KB query string, a 90 KB body, wrote 256 MB to the store (a 900 KB one 2.5
    GB, and the store's file kept the space). The lines' attributes together may be no
    more than --max-body, through the protocol's drain POST path and the app's alike."""
    running = make_server(max_body=100_000)
    query = {"a": "x" * 998}  # {"a": "xxx..."}: 1,007 bytes on each line
    tiny = b"1 x" * 100  # 100 lines: 100,700 bytes of attributes
    headers = {"Content-Encoding": "gzip"} if zipped else {}

    def post(payload: bytes) -> httpx.Response:
        sent = gzip.compress(payload) if zipped else payload
        return running.post("demo", sent, headers=headers, params=query)

    refused = post(tiny)
    assert refused.status_code == 413, refused.text
    assert "(1,007 bytes) on each of the body's 100 lines" in refused.text
    assert "over the 100,000-byte limit" in refused.text
    assert running.lines("demo") == []
    assert running.server.stats.responses[413] == 1
    assert post(tiny[:-3]).status_code == 204  # 99 lines: 99,693 bytes
    assert len(running.lines("demo")) == 99
    # Without a query string, the same body is only its lines.
    assert (
        running.post("demo", gzip.compress(tiny) if zipped else tiny, headers=headers).status_code
        == 204
    )


@pytest.mark.parametrize(
    ("frames", "said"), [(1, "on the body's one line"), (2, "on each of the body's 2 lines")]
)
def test_a_query_string_too_long_for_one_line_is_said_in_the_singular(
    make_server: ServerFactory, frames: int, said: str
) -> None:
    running = make_server(max_body=1024)
    refused = running.post("demo", b"1 x" * frames, params={"a": "x" * 1100})
    assert refused.status_code == 413, refused.text
    assert f"the drain URL's query parameters (1,109 bytes) {said} come to over the" in (
        refused.text
    )


def test_query_parameters_may_come_to_max_body_exactly_counted_in_bytes(
    make_server: ServerFactory,
) -> None:
    """The limit is on more than --max-body of attributes, counted as the bytes the store
    writes: 100 lines of 1,000 bytes each under a 100,000-byte limit are stored; a query
    string of two-byte characters, 1,001 bytes on each line although 505 characters, is
    refused."""
    running = make_server(max_body=100_000)
    body = b"1 x" * 100
    exact = running.post("demo", body, params={"a": "x" * 991})  # {"a": "x..."}: 1,000 bytes
    assert exact.status_code == 204, exact.text
    assert len(running.lines("demo")) == 100
    wide = running.post("demo", body, params={"a": "\u00e9" * 496})
    assert wide.status_code == 413, wide.text
    assert "(1,001 bytes) on each of the body's 100 lines" in wide.text
    assert len(running.lines("demo")) == 100


@pytest.mark.parametrize("zipped", [False, True], ids=["plain", "gzip"])
def test_a_body_of_more_lines_than_a_body_may_hold_is_refused(
    make_server: ServerFactory, zipped: bool
) -> None:
    """A 5 MiB body of three-byte frames, 5 KB gzipped, held the writer (and every other
    request's commit) for 15 s: a body may hold 100,000 lines, more than Logplex or herolog's
    own senders put in one, and one over that is refused before its lines are stored."""
    from herolog.store_writer import MAX_BODY_LINES

    running = make_server()
    headers = {"Content-Encoding": "gzip"} if zipped else {}

    def post(lines: int) -> httpx.Response:
        body = b"1 x" * lines
        return running.post("demo", gzip.compress(body) if zipped else body, headers=headers)

    refused = post(MAX_BODY_LINES + 1)
    assert refused.status_code == 413, refused.text
    assert (
        refused.text
        == "the body holds over 100,000 lines, the most a body may: send smaller batches\n"
    )
    assert running.lines("demo") == []
    assert post(MAX_BODY_LINES).status_code == 204
    assert [x.message for x in running.lines("demo")[-2:]] == ["x", "x"]
    assert running.server.stats.responses[413] == 1


BAD_APP_NAMES = [
    b"%2e%2e",
    b"%2E%2E",
    b"%2e",
    b"..%2F..%2Fetc",
    b"a%2F..%2Fb",
    b"%2F",
    b"caf\xc3\xa9",  # raw UTF-8 in the request line
    b"caf%C3%A9",
    b"%E2%80%AE",  # right-to-left override
    b"a%00b",
    b"%ff",
    b"a%20b",
]


def test_app_names_with_dots_slashes_and_unicode(guarded: Running) -> None:
    port = guarded.server.http_port or 0
    drain = b'{"url": "https://logs.example.com/x"}'
    with bystander(guarded, (USER, PASSWORD)):
        for app in BAD_APP_NAMES:
            intake = exchange(port, post_request(b"/apps/" + app + b"/logs", body("x")))
            assert 400 <= status(intake) < 500, (app, intake)
            api = post_request(
                b"/apps/" + app + b"/log-drains",
                drain,
                authorization=BEARER,
                content_type=b"application/json",
            )
            assert 400 <= status(exchange(port, api)) < 500, app
    assert {x.app for x in guarded.lines()} == {"bystander"}
    assert drains(guarded) == []


BAD_AUTHORIZATION = [
    b"",
    b"Basic",
    b"Basic ",
    b"Basic !!!not-base64",
    b"Basic " + base64.b64encode(b"no-colon-here"),
    b"Basic " + base64.b64encode(USER.encode() + b":\xff\xfe"),  # not UTF-8
    b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}\u00e9".encode()),
    b"Basic \xc3\xa9\xff\xfe",  # raw non-ASCII bytes
    b"Digest username=" + USER.encode(),
    b"Bearer " + PASSWORD.encode(),
    b"Bearer ",
    b"Bearer \xff",
    b"Basic " + b"QUFB" * 15_000,  # 60 KiB: under the header limit
    b"Basic " + b"QUFB" * (1 << 18),  # 1 MiB: over it (431)
]


def test_bad_authorization_headers(guarded: Running) -> None:
    port = guarded.server.http_port or 0
    with bystander(guarded, (USER, PASSWORD)):
        for authorization in BAD_AUTHORIZATION:
            shown = authorization[:40]
            intake = exchange(
                port, post_request(b"/apps/demo/logs", body("x"), authorization=authorization)
            )
            api_request = (
                b"GET /apps/bystander HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Authorization: " + authorization + b"\r\n\r\n"
            )
            api = exchange(port, api_request)
            if len(authorization) > MAX_HEADER_BYTES:
                assert status(intake) == status(api) == 431, shown
                continue
            assert status(intake) == 401, shown
            assert b'www-authenticate: Basic realm="herolog"' in intake, shown
            assert status(api) == 401, shown
            assert b'"id": "unauthorized"' in api, shown
    assert guarded.lines("demo") == []
    assert PASSWORD not in guarded.log.getvalue()
    assert API_KEY not in guarded.log.getvalue()


def test_the_scheme_of_basic_auth_is_case_insensitive(guarded: Running) -> None:
    lower = b"basic " + GOOD_AUTH.split(b" ", 1)[1]
    answer = exchange(
        guarded.server.http_port or 0,
        post_request(b"/apps/demo/logs", body("x"), authorization=lower),
    )
    assert status(answer) == 204
    assert len(guarded.lines("demo")) == 1


# Syslog -------------------------------------------------------------------------------


def wait_until_done(running: Running, connections: int) -> None:
    """The server has had ``connections`` syslog connections and is done with each: what
    it read is stored or refused."""
    syslog = running.server.syslog
    assert syslog is not None
    stats = running.server.stats
    wait_for(lambda: stats.syslog_connections >= connections and not syslog._connections)


def test_a_partial_frame_then_disconnect_stores_what_came_before(served: Running) -> None:
    partials = {
        "mid-message": syslog_frames("half a message")[:-5],
        "mid-count": syslog_frames("count only")[:2],
        "count-and-space": syslog_frames("count and space")[:3],
        "short-of-its-count": b"999 <13>1 2024-03-05T09:14:07Z host app web.1 - too short",
    }
    for i, (name, partial) in enumerate(partials.items()):
        with connect(served) as sock:
            sock.sendall(syslog_frames(f"{name} 1", f"{name} 2") + partial)
        wait_until_done(served, i + 1)
    want = [f"{name} {n}" for name in partials for n in (1, 2)]
    assert messages(served) == want


def test_a_newline_framed_last_line_without_its_newline_is_kept(served: Running) -> None:
    """Unlike a short octet-counted frame, it may be whole (rsyslog keeps it too)."""
    with connect(served) as sock:
        sock.sendall(b"<13>1 2024-03-05T09:14:07Z host app web.1 - no newline at the end")
    wait_until_done(served, 1)
    assert messages(served) == ["no newline at the end"]


def test_garbage_of_every_kind_closes_only_its_connection(served: Running) -> None:
    garbage = {
        "NULs": b"\x00" * 100,
        "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # on the plain port
        "negative-count": b"-5 <13>1 x",
        "zero-count": b"0 <13>1 x",
        "twenty-digit-count": b"99999999999999999999 <13>1 x",
        "invalid-utf8": b"\xff\xfe\xfd\n",
    }
    with connect(served) as healthy:
        for name, junk in garbage.items():
            with connect(served) as bad:
                bad.sendall(syslog_frames(f"before {name}") + junk)
                assert read_until_closed(bad) == b"", name
            healthy.sendall(syslog_frames(f"still here after {name}"))
        want = [f"{p} {name}" for name in garbage for p in ("before", "still here after")]
        wait_for(lambda: sorted(messages(served)) == sorted(want))


def test_a_billion_byte_count_closes_the_connection_without_buffering(served: Running) -> None:
    sent = 0
    with connect(served) as sock:
        sock.sendall(syslog_frames("before the giant"))
        sock.sendall(b"1000000000 <13>1 2024-03-05T09:14:07Z host app web.1 - ")
        chunk = b"x" * (1 << 16)
        try:
            while sent < 256 << 20:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
    # Only what the sockets' buffers hold gets out before the server hangs up.
    assert sent < 32 << 20, f"the server read {sent:,} bytes of a frame it cannot take"
    wait_for(lambda: messages(served) == ["before the giant"])


def syslog_port(server: ServeProcess) -> int:
    m = re.search(r"syslog(?:\+tls)? drain intake on 127\.0\.0\.1:(\d+)", "".join(server.banner))
    assert m, server.banner
    return int(m.group(1))


def wait_until_accepted(client: httpx.Client, url: str, connections: int) -> None:
    deadline = time.monotonic() + 60
    while client.get(f"{url}/stats").json()["syslog_connections"] < connections:
        assert time.monotonic() < deadline, f"serve did not accept {connections} connections"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.subprocess
def test_ten_thousand_idle_syslog_connections(herolog_home: Path) -> None:
    """serve lifts its soft limit on open files to the hard limit: started with 1024, it
    holds 10,000 idle connections (its default limit), stores a working one's lines, and
    stays idle itself; the next connection is refused."""
    wanted = 9_999  # and the working one
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 2 * (wanted + 1), (
        f"this test needs a hard limit on open files of at least {2 * (wanted + 1)} (ulimit"
        f" -Hn is {hard}): raise it in /etc/security/limits.conf or the container's settings"
    )
    with ExitStack() as stack:
        # The child starts with the usual 1024 and must raise it itself.
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        try:
            server = ServeProcess("--port", "0", "--syslog-port", "0", env=herolog_env())
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        stack.callback(server.finish)
        stack.callback(server.proc.kill)
        limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
        m = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits)
        assert m, limits
        assert int(m.group(1)) == int(m.group(2)) == hard, limits
        port = syslog_port(server)
        client = stack.enter_context(web.Client(timeout=30))
        idle: list[socket.socket] = []
        while len(idle) < wanted:
            # In steps the listen backlog takes whole, however slowly serve is scheduled.
            for _ in range(min(96, wanted - len(idle))):
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                stack.callback(sock.close)
                idle.append(sock)
            wait_until_accepted(client, server.url, len(idle))
        before = cpu_seconds(server.proc.pid)
        time.sleep(2)
        busy = cpu_seconds(server.proc.pid) - before
        assert busy < 0.3, f"serve used {busy:.2f} s of CPU in 2 s holding idle connections"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as working:
            working.sendall(syslog_frames("through ten thousand idle ones"))
            wait_for(lambda: stored(herolog_home) == ["through ten thousand idle ones"], 30)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as extra:
                assert closed_by_server(extra)
        assert client.get(f"{server.url}/stats").json()["syslog_connections_refused"] == 1
        assert post_ok(server.url)
        for sock in idle[:100]:  # an idle connection can still speak
            sock.sendall(syslog_frames("late"))
        wait_for(lambda: len(stored(herolog_home)) == 102, timeout=30)


def still_open(socks: list[socket.socket]) -> list[socket.socket]:
    """Those of ``socks`` the server has not closed (it closes the others at once): one
    wait for them all, not one each."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN)
    ready = {fd for fd, _ in poller.poll(500)}
    return [s for s in socks if s.fileno() not in ready or not closed_by_server(s)]


@pytest.mark.subprocess
def test_syslog_connections_leave_the_http_intake_files(herolog_home: Path) -> None:
    """Under a low limit on open files, syslog connections take at most half of them: a
    flood of them leaves the HTTP intake able to accept and store."""
    server = ServeProcess("--port", "0", "--syslog-port", "0", open_files=128)
    try:
        banner = "".join(server.banner)
        assert "at most 64 syslog connections at once, half the open-file limit" in banner
        port = syslog_port(server)
        with ExitStack() as stack:
            flood = []
            for _ in range(200):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), 30))
                flood.append(sock)
            with web.Client(timeout=30) as client:
                wait_until_accepted(client, server.url, 64)
                deadline = time.monotonic() + 30
                refused = 0
                while refused < 200 - 64:
                    assert time.monotonic() < deadline, f"{refused} refused"
                    refused = client.get(f"{server.url}/stats").json()["syslog_connections_refused"]
                    time.sleep(0.01)
            open_ones = still_open(flood)
            assert len(open_ones) == 64
            assert post_ok(server.url)  # with 200 syslog clients at the door
            open_ones[0].sendall(syslog_frames("one of the 64"))
            wait_for(lambda: sorted(stored(herolog_home)) == ["one of the 64", "over http 0"])
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert "refused a syslog connection" in err or "syslog connections (the last" in err


def _post_hi(client: httpx.Client, server: ServeProcess) -> None:
    logplex = {"Content-Type": "application/logplex-1"}
    posted = client.post(f"{server.url}/apps/demo/logs", content=body("hi"), headers=logplex)
    assert posted.status_code == 204


def _use_up_open_files(server: ServeProcess, stack: ExitStack) -> Path:
    """Connections that take every file ``server``'s limit of 64 allows (held in ``stack``);
    where its open files are listed."""
    fds = Path(f"/proc/{server.proc.pid}/fd")
    for _ in range(100):  # more than fit: serve closes the rest as they come
        stack.enter_context(socket.create_connection(("127.0.0.1", _port(server)), 30))
    wait_for(lambda: len(list(fds.iterdir())) >= 64)
    return fds


@pytest.mark.subprocess
def test_out_of_open_files_the_api_says_so_and_recovers(herolog_home: Path) -> None:
    """With every file its limit allows held by connections, serve cannot open the store
    for the API: the 503 says that the limit is what is wrong (SQLite's own words, "unable
    to open database file", read as a store that is not there or not allowed), and once
    connections close it answers again."""
    server = ServeProcess("--port", "0", open_files=64)
    api = {"Accept": "application/vnd.heroku+json; version=3"}
    try:
        with web.Client(timeout=30) as client, ExitStack() as stack:
            _post_hi(client, server)  # the app, and a kept-alive connection to ask on
            fds = _use_up_open_files(server, stack)
            answer = client.get(f"{server.url}/apps/demo", headers=api)
            assert answer.status_code == 503, answer.text
            message = answer.json()["message"]
            assert "open-file limit" in message, message
            assert "ulimit -n" in message, message
            stack.close()
            wait_for(lambda: len(list(fds.iterdir())) < 40)
            answer = client.get(f"{server.url}/apps/demo", headers=api)
            assert answer.status_code == 200, answer.text
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.subprocess
def test_out_of_open_files_a_tail_is_asked_back_and_a_history_cut_off(
    herolog_home: Path,
) -> None:
    """A log session that cannot read the store (serve out of open files) ends a tail's
    stream properly, asking its client to come back (the heroku CLI reconnects only after
    such an end, and dies on a stream cut off), and cuts a history's off, since a proper
    end would pass for the whole of it. Serve says so in one line, not again at each
    reconnect, and without uvicorn's error for a response left unfinished."""
    server = ServeProcess("--port", "0", open_files=64)
    api = {"Accept": "application/vnd.heroku+json; version=3"}
    try:
        with web.Client(timeout=30) as client, ExitStack() as stack:
            _post_hi(client, server)

            def session(tail: bool) -> str:
                made = client.post(
                    f"{server.url}/apps/demo/log-sessions",
                    json={"tail": tail, "lines": 10},
                    headers=api,
                )
                assert made.status_code == 201, made.text
                return str(made.json()["logplex_url"])

            tail, history = session(True), session(False)
            fds = _use_up_open_files(server, stack)
            for _ in range(3):  # a tail coming back while serve is still out of files
                ended = client.get(tail, headers={"Accept": "text/event-stream"})
                assert ended.status_code == 200
                assert "data:" not in ended.text, ended.text
                assert ended.text.endswith(f"retry: {FAILED_RETRY_MS}\n\n"), ended.text
            # Last: uvicorn closes the connection of a response cut off.
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(history)
            stack.close()
            wait_for(lambda: len(list(fds.iterdir())) < 40)
            with client.stream("GET", tail) as back:
                got = ""
                for text in back.iter_text():
                    got += text
                    if "hi" in got:
                        break
            assert "hi" in got
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert "ASGI callable returned without completing response" not in err, err
    said = [line for line in err.splitlines() if "log session" in line]
    assert len(said) == 2, err  # the first at once; the others together, as serve stops
    assert "open-file limit" in said[0], said
    assert "StoreError" not in said[0], said
    assert said[1].startswith("herolog serve: 3 more reads of log sessions failed"), said


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_out_of_open_files_serve_says_so_in_one_line(
    herolog_home: Path, tmp_path: Path, loop: str
) -> None:
    """Out of open files, serve's new connections were closed as they came (uvloop's libuv
    accepts and closes them) with not a word in its log, or, on asyncio's own loop (where
    uvloop is not installed), left waiting with a traceback for every accept it tried
    ("socket.accept() out of system resource": 12,276 in 5 s, which filled the pipe of
    serve's stderr). serve says it once, with the limit to raise, and once when it has
    files again. Its look at them, and asyncio's accept tried again, come every 0.1 s here
    rather than every second: the waits below hold more of them than before."""
    faster = {"herolog.server.OPEN_FILES_WATCH_S": 0.1, "asyncio.constants.ACCEPT_RETRY_DELAY": 0.1}
    env = constants_env(faster)
    if loop == "asyncio":
        without_uvloop(env, tmp_path)
    server = ServeProcess("--port", "0", env=env, open_files=64)
    try:
        fds = Path(f"/proc/{server.proc.pid}/fd")
        with ExitStack() as stack:
            for _ in range(100):  # more than fit
                stack.enter_context(socket.create_connection(("127.0.0.1", _port(server)), 30))
            wait_for(lambda: len(list(fds.iterdir())) >= 64)
            time.sleep(0.5)  # asyncio tries its accept again every 0.1 s
        wait_for(lambda: len(list(fds.iterdir())) < 40)
        assert post_ok(server.url)
        time.sleep(0.5)  # a look at the open files once they are there again
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert "out of system resource" not in err, err
    said = [x for x in err.splitlines() if "open files" in x and "raise its hard limit" not in x]
    assert len(said) == 2, err
    assert said[0].startswith("herolog serve: out of open files (all 64 "), said
    assert "ulimit -n" in said[0], said
    assert said[1].startswith("herolog serve: open files to spare again"), said


def without_uvloop(env: dict[str, str], directory: Path) -> None:
    """Have the serve started with ``env`` find a uvloop that cannot be imported, as where it
    is not installed: uvicorn takes asyncio's own loop."""
    missing = directory / "no-uvloop" / "uvloop"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text('raise ImportError("not installed")\n')
    env["PYTHONPATH"] = os.pathsep.join([str(missing.parent), env.get("PYTHONPATH", "")])


def _port(server: ServeProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _post_over_tls(server: ServeProcess, text: str, cafile: Path) -> httpx.Response:
    """POST one line to an HTTPS serve whose certificate ``cafile`` signed."""
    return web.post(
        f"{server.url}/apps/demo/logs",
        content=body(text),
        headers={"Content-Type": "application/logplex-1"},
        verify=ssl.create_default_context(cafile=str(cafile)),
        timeout=30,
    )


@pytest.mark.subprocess
def test_tls_syslog_connections_count_from_before_their_handshake(tmp_path: Path) -> None:
    """On the syslog+tls port, a connection counts from when it is accepted: clients that
    connect and never start TLS (each holding a descriptor until the handshake times out)
    are refused past the limit too, and the HTTPS intake can still accept."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    tls = ["--certfile", str(certfile), "--keyfile", str(keyfile), "--header-timeout", "60"]
    server = ServeProcess("--port", "0", "--syslog-port", "0", *tls, open_files=128)
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    try:
        assert "at most 64 syslog connections at once" in "".join(server.banner)
        port = syslog_port(server)
        with ExitStack() as stack:
            silent = [
                stack.enter_context(socket.create_connection(("127.0.0.1", port), 30))
                for _ in range(200)
            ]
            with web.Client(timeout=30, verify=trusted) as client:
                deadline = time.monotonic() + 30
                refused = 0
                while refused < 200 - 64:
                    assert time.monotonic() < deadline, f"{refused} refused"
                    stats = client.get(f"{server.url}/stats").json()
                    refused = stats["syslog_connections_refused"]
                    time.sleep(0.01)
                assert len(still_open(silent)) == 64
                answer = client.post(
                    f"{server.url}/apps/http/logs",
                    content=body("over https"),
                    headers={"Content-Type": "application/logplex-1"},
                )
                assert answer.status_code == 204
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err


def listen_backlog_fill(port: int, attempts: int) -> int:
    """How many of ``attempts`` connections complete while nobody accepts them."""
    pending = []
    for _ in range(attempts):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        pending.append(sock)
    try:
        # The kernel completes the handshakes the backlog has room for at once; the rest
        # wait for SYN retransmissions (the first after a second) that will not be
        # answered either. So: those done within the second, looked at until all are.
        deadline = time.monotonic() + 1
        done: set[socket.socket] = set()
        failed: set[socket.socket] = set()
        while True:
            waiting = [s for s in pending if s not in done and s not in failed]
            _, writable, _ = select.select([], waiting, [], 0)
            for sock in writable:  # SO_ERROR is read once: reading clears it
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                (done if error == 0 else failed).add(sock)
            if len(done) == attempts or time.monotonic() >= deadline:
                return len(done)
            time.sleep(0.01)
    finally:
        for sock in pending:
            sock.close()


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "listener",
    ["http", "syslog"],
)
def test_a_burst_of_new_connections_fits_the_listen_backlog(
    herolog_home: Path, listener: str
) -> None:
    """A burst of drains connecting while serve is busy (here: stopped) is queued by the
    kernel, not dropped to wait for SYN retransmissions (one second, then two...)."""
    server = ServeProcess("--port", "0", "--syslog-port", "0", env=herolog_env())
    try:
        port = syslog_port(server) if listener == "syslog" else int(server.url.rsplit(":", 1)[1])
        server.proc.send_signal(signal.SIGSTOP)
        try:
            assert listen_backlog_fill(port, 500) == 500
        finally:
            server.proc.send_signal(signal.SIGCONT)
    finally:
        server.proc.kill()
        server.finish()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post_ok(url: str) -> bool:
    response = web.post(
        f"{url}/apps/http/logs",
        content=body("over http"),
        headers={"Content-Type": "application/logplex-1"},
        timeout=30,
    )
    return response.status_code == 204


# uvicorn's own warnings --------------------------------------------------------------


def warning(message: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, None, None)


def test_repeated_warnings_are_held_back_and_counted() -> None:
    now = [0.0]
    repeats = _QuietRepeats(every=60, clock=lambda: now[0])
    first = warning("Invalid HTTP request received.")
    assert repeats.filter(first)
    assert first.getMessage() == "Invalid HTTP request received."
    for second in (1, 2, 59):
        now[0] = second
        assert not repeats.filter(warning("Invalid HTTP request received."))
    assert repeats.filter(warning("Unsupported upgrade request."))  # another kind
    now[0] = 60
    later = warning("Invalid HTTP request received.")
    assert repeats.filter(later)
    assert later.getMessage() == "Invalid HTTP request received. (and 3 more since the last one)"
    now[0] = 200
    alone = warning("Invalid HTTP request received.")
    assert repeats.filter(alone)
    assert alone.getMessage() == "Invalid HTTP request received."
    error = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "boom", None, None)
    for _ in range(2):  # errors are never held back
        assert repeats.filter(error)
    assert not repeats.filter(warning("No supported WebSocket library detected. Please use"))


@pytest.mark.subprocess
def test_a_scanner_does_not_flood_the_log(herolog_home: Path) -> None:
    server = ServeProcess("--port", "0")
    try:
        port = int(server.url.rsplit(":", 1)[1])
        for _ in range(50):
            assert status(exchange(port, b"GARBAGE\r\n\r\n")) == 400
        upgrade = (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: upgrade, close\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        for _ in range(5):
            assert status(exchange(port, upgrade)) == 200
        assert post_ok(server.url)  # and the intake is unaffected
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert err.count("Invalid HTTP request received.") == 1, err
    assert err.count("Unsupported upgrade request.") == 1, err
    assert "pip install" not in err, err


@pytest.mark.subprocess
def test_out_of_open_files_a_tls_syslog_client_waits_and_is_then_accepted(
    herolog_home: Path, tmp_path: Path
) -> None:
    """serve accepts syslog+tls connections itself (see SyslogServer._start): with no file
    left to accept one into, it says so once and tries again, rather than stop accepting
    them for good; the client waiting meanwhile is accepted once files are free, and its
    lines are stored."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    tls = ["--certfile", str(certfile), "--keyfile", str(keyfile)]
    # Accepts tried again every 0.1 s rather than every second: more in the wait below.
    env = constants_env({"herolog.server.syslog.ACCEPT_RETRY_S": 0.1})
    server = ServeProcess("--port", "0", "--syslog-port", "0", *tls, env=env, open_files=64)
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    try:
        fds = Path(f"/proc/{server.proc.pid}/fd")
        with ExitStack() as stack:
            for _ in range(100):  # more than fit, over HTTP: syslog may take only half
                stack.enter_context(socket.create_connection(("127.0.0.1", _port(server)), 30))
            wait_for(lambda: len(list(fds.iterdir())) >= 64)
            # Queued in the listen backlog; serve cannot accept it while the files are taken.
            waiting = socket.create_connection(("127.0.0.1", syslog_port(server)), 30)
            time.sleep(0.5)  # serve tries its accept again every 0.1 s meanwhile
        with trusted.wrap_socket(waiting, server_hostname="127.0.0.1") as client:
            client.sendall(syslog_frames("after the files came back"))
            wait_for(lambda: stored(herolog_home) == ["after the files came back"], 30)
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert "stopped accepting syslog connections" not in err, err
    said = [x for x in err.splitlines() if "cannot accept syslog connections" in x]
    assert len(said) == 1, err
    assert "Too many open files" in said[0], said


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("kind", ["https", "syslog", "syslog+tls"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_out_of_open_files_a_drain_blames_serve_and_delivers_once_it_has_them(
    herolog_home: Path, tmp_path: Path, kind: str, host: str
) -> None:
    """A drain that has to connect while serve has no file to spare cannot: its error said
    that the drain could not be reached (httpx's "All connection attempts failed"), or, for
    a drain named by its host name, that the name was not known (the resolver cannot open
    its files either), which sent one looking at the drain or the DNS, where nothing is
    wrong. It says that serve is out of open files, retries, and delivers the line, none
    dropped, once connections have closed. A syslog+tls drain, which looks up the
    certificates it trusts as it connects, took none from the file it could not open, kept
    that, and rejected its receiver's certificate from then on."""
    env = herolog_env()
    with ExitStack() as stack:
        sink: HTTPSink | SyslogSink
        if kind == "https":
            sink = HTTPSink()
            url = sink.url().replace("127.0.0.1", host)
        elif kind == "syslog":
            sink = SyslogSink()
            url = f"syslog://{host}:{sink.port}"
        else:
            ca, cafile = trustme.CA(), tmp_path / "ca.pem"
            ca.cert_pem.write_to_path(str(cafile))
            env["SSL_CERT_FILE"] = str(cafile)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            sink = SyslogSink(context)
            url = f"syslog+tls://{host}:{sink.port}"
        stack.callback(sink.close)
        # No lines yet: no connection to the drain yet.
        store_drain(herolog_home / "logs.db", "demo", url)
        server = ServeProcess("--port", "0", env=env, open_files=64)
        stack.callback(server.finish)
        stack.callback(server.proc.kill)
        client = stack.enter_context(web.Client(timeout=30))
        assert client.get(f"{server.url}/healthz").status_code == 200  # kept alive
        fds = Path(f"/proc/{server.proc.pid}/fd")
        with ExitStack() as flood:
            for _ in range(100):  # more than fit: serve closes the rest as they come
                flood.enter_context(socket.create_connection(("127.0.0.1", _port(server)), 30))
            wait_for(lambda: len(list(fds.iterdir())) >= 64)
            posted = client.post(
                f"{server.url}/apps/demo/logs",
                content=body("at the limit"),
                headers={"Content-Type": "application/logplex-1"},
            )
            assert posted.status_code == 204
            failing = server.said("is failing")
        assert failing.rstrip().endswith(
            f"is failing: cannot connect to {host}:{sink.port}: serve is out of open"
            " files (raise its limit, ulimit -n)"
        ), failing
        if isinstance(sink, HTTPSink):
            wait_for(lambda: [x.message for x in sink.delivered_lines()] == ["at the limit 0"])
        else:
            wait_for(lambda: [x.message for x in sink.lines()] == ["at the limit 0"])
        server.said("delivers again")

        def delivery() -> Delivery:
            store = SQLiteStore.open(herolog_home / "logs.db", create=False)
            try:
                return store.drains("demo")[0].delivery
            finally:
                store.close()

        wait_for(lambda: delivery().delivered == 1)
        assert delivery().dropped == 0
        assert "serve is out of open files" in str(delivery().last_error)
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_out_of_open_files_serve_does_not_spin_and_stops_cleanly(
    herolog_home: Path, tmp_path: Path, loop: str
) -> None:
    """With no file left to accept a connection into, and connections waiting on both its
    listeners (HTTP, and syslog+tls, which serve accepts itself), serve does not try its
    accepts again in a loop: uvloop accepts and closes them, asyncio's loop and serve's
    syslog+tls listener try again a second later. A loop trying at once would take the whole
    of a core; serve takes a few hundredths of a second in 1 s (less than half: a busy
    machine gives a spinning serve less CPU, never an idle one more). Stopped then, as one
    restarts a serve out of files, it exits 0 with no traceback: on asyncio's loop, the
    accepts it had yet to try again each printed one once their listeners had closed
    (thousands: cpython#151615 schedules one for every accept of the backlog that failed),
    in a stop that lasts longer than the second they wait, here for a drain that cannot
    deliver its line."""
    certfile, keyfile, cafile = own_certificate(tmp_path)
    tls = ["--certfile", str(certfile), "--keyfile", str(keyfile), "--drain-flush-timeout", "1.5"]
    gone = HTTPSink()
    gone.close()  # nothing listens on its port: the drain retries until serve stops
    store_drain(herolog_home / "logs.db", "demo", gone.url())
    env = herolog_env()
    if loop == "asyncio":
        without_uvloop(env, tmp_path)
    server = ServeProcess("--port", "0", "--syslog-port", "0", *tls, env=env, open_files=64)
    try:
        assert _post_over_tls(server, "for a drain that is gone", cafile).status_code == 204
        fds = Path(f"/proc/{server.proc.pid}/fd")
        with ExitStack() as stack:
            for _ in range(100):  # more than fit
                stack.enter_context(socket.create_connection(("127.0.0.1", _port(server)), 30))
            wait_for(lambda: len(list(fds.iterdir())) >= 64)
            for _ in range(5):  # each listener with some in its queue
                stack.enter_context(socket.create_connection(("127.0.0.1", _port(server)), 30))
                port = syslog_port(server)
                stack.enter_context(socket.create_connection(("127.0.0.1", port), 30))
            before = cpu_seconds(server.proc.pid)
            time.sleep(1)
            busy = cpu_seconds(server.proc.pid) - before
            assert busy < 0.5, f"serve used {busy:.2f} s of CPU in 1 s out of open files"
            server.proc.terminate()
            code, err = server.finish()
    finally:
        server.proc.kill()
        server.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert "1 line not delivered yet" in err.rstrip().splitlines()[-1], err


@pytest.mark.subprocess
@pytest.mark.parametrize("limit", [8, 16, 31])
def test_too_few_open_files_to_start_is_one_line(herolog_home: Path, limit: int) -> None:
    """Under a limit on open files too low to work with, serve failed half-way: with 8 a
    traceback (uvloop's loop could not be made) and an abort, with 16 'cannot use the store
    PATH: Too many open files'. It says, in one line and with the status of a setting it
    cannot start with, what the limit is and what it needs."""
    proc = herolog_process(
        "serve",
        "--port",
        "0",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: serve may have only {limit} files open (ulimit -Hn), and needs at least 32,"
        " about 15 of them its own: raise the limit (ulimit -n, or LimitNOFILE= in a systemd"
        " unit)"
    ]
    assert not (herolog_home / "logs.db").exists()


@pytest.mark.subprocess
def test_the_fewest_open_files_serve_starts_with_are_enough(
    herolog_home: Path, tmp_path: Path
) -> None:
    """At the limit serve needs, it starts with everything on (syslog+tls, a drain) and
    stores and forwards what it is sent."""
    certfile, keyfile, cafile = own_certificate(tmp_path)
    sink = HTTPSink()
    try:
        store_drain(herolog_home / "logs.db", "demo", sink.url())
        tls = ["--certfile", str(certfile), "--keyfile", str(keyfile)]
        server = ServeProcess("--port", "0", "--syslog-port", "0", *tls, open_files=32)
        try:
            assert _post_over_tls(server, "at the fewest files", cafile).status_code == 204
            wait_for(
                lambda: [x.message for x in sink.delivered_lines()] == ["at the fewest files 0"]
            )
        finally:
            server.proc.terminate()
            code, err = server.finish()
    finally:
        sink.close()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert stored(herolog_home) == ["at the fewest files 0"]


@pytest.mark.subprocess
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_out_of_open_files_a_client_is_not_told_only_to_change_the_scheme_or_port(
    herolog_home: Path, tmp_path: Path, scheme: str
) -> None:
    """A serve out of open files closes a new connection as it comes, as a server of HTTPS
    closes a plain-HTTP one, and as a port that takes no TLS closes on the ClientHello:
    herolog's commands with --server told the user to try https:// alone, which a plain-HTTP
    serve refuses too, or (https://) asked whether that was its HTTPS port, which it is.
    They name the serve's open files as well."""
    certfile, keyfile, cafile = own_certificate(tmp_path)
    tls = ("--certfile", str(certfile), "--keyfile", str(keyfile)) if scheme == "https" else ()
    server = ServeProcess("--port", "0", *tls, open_files=64)
    hint = {
        "http": "(a server of HTTPS closes a plain-HTTP connection so: try https://; so does a"
        " herolog serve out of open files, which its log says)",
        "https": "(it closed the connection during the TLS handshake: is this its HTTPS port?"
        " a herolog serve out of open files does so too, which its log says)",
    }[scheme]
    try:
        assert scheme == "https" or post_ok(server.url)  # it serves, before its files run out
        fds = Path(f"/proc/{server.proc.pid}/fd")
        with ExitStack() as stack:
            for _ in range(100):  # more than fit
                stack.enter_context(socket.create_connection(("127.0.0.1", _port(server)), 30))
            wait_for(lambda: len(list(fds.iterdir())) >= 64)
            for command in (["logs", "-a", "http"], ["apps"]):
                proc = herolog_process(
                    *command, "--server", server.url, env={"SSL_CERT_FILE": str(cafile)}
                )
                assert proc.returncode == 1, proc.stderr
                (message,) = proc.stderr.splitlines()
                assert message.startswith(f"Error: cannot reach {server.url}: "), message
                assert message.endswith(hint), message
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
