"""Drain POSTs that serve's HTTP protocol answers itself (server/protocol.py, _DrainPost):
the same answers, bytes and all, and the same store and counts as the ASGI app gives when it
handles them, whichever way a client sends them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from herolog.server import ServeConfig, Server, run_in_thread
from herolog.server.app import HerologApp
from herolog.server.config import Credentials
from tests.server.conftest import Running
from tests.server.test_abuse import GOOD_AUTH, PASSWORD, USER, read_until_closed
from tests.server.test_intake import body


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Running, Running]]:
    """Two servers with intake credentials, on stores of their own: one answering drain POSTs
    in its protocol, one leaving every request to the app."""
    stops: list[Callable[[], None]] = []
    both = []
    for name, direct in (("direct", True), ("app", False)):
        config = replace(
            ServeConfig(store_path=tmp_path / name / "logs.db", port=0),
            auth=Credentials(USER, PASSWORD),
        )
        log = io.StringIO()
        server = Server(config, log=log)
        if not direct:
            server.http_protocol.intake = None
        stops.append(run_in_thread(server))
        both.append(Running(server, log))
    yield both[0], both[1]
    for stop in stops:
        stop()


def request(
    payload: bytes,
    *,
    path: bytes = b"/apps/demo/logs",
    headers: dict[bytes, bytes] | None = None,
    close: bool = False,
) -> bytes:
    sent = {
        b"Host": b"127.0.0.1",
        b"Content-Type": b"application/logplex-1",
        b"Content-Length": b"%d" % len(payload),
        b"Authorization": GOOD_AUTH,
        **({b"Connection": b"close"} if close else {}),
        **(headers or {}),
    }
    lines = [b"POST " + path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in sent.items() if value]
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def answers(sock: socket.socket, count: int) -> list[bytes]:
    """The next ``count`` answers on a kept-alive connection, each whole."""
    data = b""
    out: list[bytes] = []
    while len(out) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            m = re.search(rb"\r\ncontent-length: (\d+)", head)
            size = int(m.group(1)) if m else 0
            if len(rest) >= size:
                out.append(head + sep + rest[:size])
                data = rest[size:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(out)} of {count} answers: {data!r}"
        data += chunk
    return out


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"\r\ndate: [^\r]*", b"", answer)


def stored(running: Running) -> list[tuple[str, str, str | None]]:
    return [(line.app, line.message, line.attributes) for line in running.lines()]


def counts(running: Running) -> dict[str, Any]:
    return running.server.stats.as_dict()


def both_ways(
    pair: tuple[Running, Running], send: Callable[[socket.socket], list[bytes]]
) -> list[bytes]:
    """What ``send`` reads back from each server, which must be the same bytes but for the
    date; then the same lines stored and the same counts."""
    got = []
    for running in pair:
        with socket.create_connection(("127.0.0.1", running.server.http_port or 0), 30) as sock:
            got.append([without_date(answer) for answer in send(sock)])
    assert got[0] == got[1]
    assert stored(pair[0]) == stored(pair[1])
    assert counts(pair[0]) == counts(pair[1])
    return got[0]


def status(answer: bytes) -> int:
    return int(answer[9:12])


def test_answers_and_stores_as_the_app_does_on_one_kept_alive_connection(
    pair: tuple[Running, Running],
) -> None:
    cases = [
        request(body("first"), headers={b"Logplex-Frame-Id": b"A1", b"Logplex-Msg-Count": b"1"}),
        request(body("first"), headers={b"Logplex-Frame-Id": b"A1"}),  # a retry: stored once
        request(body("counted wrong"), headers={b"Logplex-Msg-Count": b"3"}),
        request(body("tagged"), path=b"/apps/demo/logs/?env=prod&team=core&empty="),
        request(b"12 not a frame"),  # 400: bad framing, after the checks
        request(body("no auth"), headers={b"Authorization": b""}),  # 401, from the app
        request(body("typed"), headers={b"Content-Type": b"text/plain"}),  # 415
        request(body("bad app"), path=b"/apps/-nope/logs"),  # 400 for the name
        request(body("Name%20d"), path=b"/apps/demo%2Dtwo/logs"),  # decoded, by the app
        request(body("other app"), path=b"/apps/other/logs"),
    ]

    def send(sock: socket.socket) -> list[bytes]:
        out = []
        for case in cases:
            sock.sendall(case)
            out += answers(sock, 1)
        return out

    got = both_ways(pair, send)
    assert [status(answer) for answer in got] == [204, 204, 204, 204, 400, 401, 415, 400, 204, 204]
    assert got[0] == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert b"bad logplex framing" in got[4]
    direct = counts(pair[0])
    assert direct["duplicate_batches"] == 1
    assert direct["msg_count_mismatches"] == 1
    assert direct["responses"] == {"204": 6, "400": 2, "401": 1, "415": 1}
    tagged = ("demo", "tagged 0", '{"env": "prod", "team": "core", "empty": ""}')
    assert tagged in stored(pair[0])
    assert ("demo-two", "Name%20d 0", None) in stored(pair[0])


def test_pipelined_closing_and_piecemeal_posts_as_the_app_does(
    pair: tuple[Running, Running],
) -> None:
    def pipelined(sock: socket.socket) -> list[bytes]:
        sock.sendall(b"".join(request(body(f"piped {n}")) for n in range(3)))
        return answers(sock, 3)

    def piecemeal(sock: socket.socket) -> list[bytes]:
        whole = request(body("in pieces", n=20))
        for start in range(0, len(whole), 97):
            sock.sendall(whole[start : start + 97])
            time.sleep(0.002)
        return answers(sock, 1)

    def closing(sock: socket.socket) -> list[bytes]:
        sock.sendall(request(body("last one"), close=True))
        (answer,) = answers(sock, 1)
        # and the server closes the connection: a request sent after it is not read
        with contextlib.suppress(OSError):
            sock.sendall(request(body("after the close")))
        return [answer + read_until_closed(sock)]

    for send in (pipelined, piecemeal, closing):
        got = both_ways(pair, send)
        assert all(status(answer) == 204 for answer in got)
    assert got[0] == b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
    assert [message for _, message, _ in stored(pair[0])] == [
        "piped 0 0",
        "piped 1 0",
        "piped 2 0",
        *(f"in pieces {i}" for i in range(20)),
        "last one 0",
    ]


def test_a_client_gone_before_its_body_is_whole_stores_nothing(
    pair: tuple[Running, Running],
) -> None:
    whole = request(body("cut off"))
    for running in pair:
        with socket.create_connection(("127.0.0.1", running.server.http_port or 0), 30) as sock:
            sock.sendall(whole[:-10])
        deadline = time.monotonic() + 30
        while running.server.stats.responses[499] == 0:
            assert time.monotonic() < deadline, "the server never saw the client go"
            time.sleep(0.01)
    assert stored(pair[0]) == stored(pair[1]) == []
    assert counts(pair[0]) == counts(pair[1])


def test_a_drain_post_is_answered_without_the_app(
    pair: tuple[Running, Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_handler(*args: Any) -> None:
        raise AssertionError("the app's intake handler was called")

    monkeypatch.setattr(HerologApp, "_intake", no_handler)
    direct, app = pair
    assert direct.post("demo", body("direct"), auth=(USER, PASSWORD)).status_code == 204
    assert stored(direct) == [("demo", "direct 0", None)]
    assert app.post("demo", body("app"), auth=(USER, PASSWORD)).status_code == 500


def test_an_unexpected_failure_of_the_writer_is_a_500_that_closes_the_connection(
    pair: tuple[Running, Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(RuntimeError("a bug"))
        return future

    for running in pair:
        monkeypatch.setattr(running.server.writer, "write_body", broken)

    def send(sock: socket.socket) -> list[bytes]:
        sock.sendall(request(body("unlucky")))
        return [read_until_closed(sock)]

    (answer,) = both_ways(pair, send)
    assert status(answer) == 500
    assert answer.endswith(b"\r\n\r\nInternal Server Error")  # uvicorn's own answer
    assert b"connection: close" in answer
    assert counts(pair[0])["responses"] == {"500": 1}


def test_a_client_gone_while_its_batch_commits_leaves_it_stored_and_counted(
    pair: tuple[Running, Running], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Gone alone, or with another request queued behind its batch (uvicorn reads nothing
    more from the connection then, so it learns of the close only when it writes, and the
    queued request is still served): the batches are stored and counted, and nothing goes
    wrong in serve."""
    direct = pair[0]
    writer = direct.server.writer
    store = writer.write_body

    def slow(*args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        stored = store(*args)
        loop.call_later(
            0.5, lambda: stored.add_done_callback(lambda f: answer.set_result(f.result()))
        )
        return answer

    monkeypatch.setattr(writer, "write_body", slow)
    for behind in (b"", request(body("queued"))):
        with socket.create_connection(("127.0.0.1", direct.server.http_port or 0), 30) as sock:
            sock.sendall(request(body("left")) + behind)
            time.sleep(0.1)
    deadline = time.monotonic() + 30
    while direct.server.stats.responses[204] < 3:
        assert time.monotonic() < deadline, "the batches were never answered"
        time.sleep(0.01)
    time.sleep(0.2)
    assert [message for _, message, _ in stored(direct)] == ["left 0", "left 0", "queued 0"]
    assert counts(direct)["responses"] == {"204": 3}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_while_the_transport_is_full_a_drain_post_waits_for_the_client_to_read(
    pair: tuple[Running, Running],
) -> None:
    """A client that does not read its answers fills the transport's buffer, and the
    transport tells the protocol (pause_writing): the next drain POST goes to the app, whose
    send waits until the client has read (resume_writing), rather than adding to the pile."""
    server = pair[0].server
    with socket.create_connection(("127.0.0.1", server.http_port or 0), 30) as sock:
        sock.sendall(request(body("first")))
        answers(sock, 1)
        (protocol,) = server._uvicorn.server_state.connections

        def in_loop(call: Callable[[], None]) -> None:
            done = threading.Event()

            def run() -> None:
                call()
                done.set()

            protocol.loop.call_soon_threadsafe(run)
            assert done.wait(10)

        in_loop(protocol.pause_writing)
        sock.sendall(request(body("while full")))
        sock.settimeout(1)
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        assert [message for _, message, _ in stored(pair[0])] == ["first 0", "while full 0"]
        in_loop(protocol.resume_writing)
        sock.settimeout(30)
        assert status(answers(sock, 1)[0]) == 204
