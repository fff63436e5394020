"""Tail readers that misbehave: stop reading, vanish mid-stream, come back with odd ids."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from herolog.filters import LineFilter
from herolog.parser import format_syslog, frame
from herolog.server.sessions import LogSession, Reader, Sessions, Subscriber
from herolog.store import Batch, SQLiteStore
from tests import web
from tests.helpers import line
from tests.server.conftest import Running, ServerFactory
from tests.server.sinks import reset
from tests.server.test_api import Tail, session, store_lines, wait_for
from tests.server.test_forwarding import post

L11 = re.compile(
    r"\S+ heroku\[logplex\]: Error L11 \(Tail buffer overflow\) -> "
    r"This tail session dropped (\d+) messages since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\."
)


Event = tuple[str | None, list[str]]
"""An SSE event as read: its id and its data lines."""


class SlowReader:
    """A tail reader on a raw socket with a small buffer: it reads only when told to, and
    can vanish without a word (a reset)."""

    def __init__(self, url: str) -> None:
        target = httpx.URL(url)
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.socket.settimeout(30)
        self.socket.connect((target.host, target.port))
        request = f"GET {target.raw_path.decode()} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        self.socket.sendall(request.encode())
        self.raw = b""

    def shrink_server_buffer(self) -> None:
        """Give the server's end of this connection (this process runs the server) a small
        send buffer too, so that the stall reaches it after kilobytes, not megabytes."""
        me = self.socket.getsockname()
        for fd in Path("/proc/self/fd").iterdir():
            try:
                with socket.fromfd(int(fd.name), socket.AF_INET, socket.SOCK_STREAM) as other:
                    if other.getpeername() == me:
                        other.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                        return
            except (OSError, ValueError):
                continue
        raise AssertionError("the server's end of the connection was not found")

    def read(self, enough: Callable[[list[Event]], bool], timeout: float = 60) -> list[Event]:
        """Read on until ``enough`` says so of the whole events read."""
        deadline = time.monotonic() + timeout
        while not enough(events := self.events()):
            # Keep-alive comments arrive while the stream is idle: no recv times out.
            assert time.monotonic() < deadline, "what was wanted never came"
            chunk = self.socket.recv(1 << 20)
            assert chunk, "the server ended the stream"
            self.raw += chunk
        return events

    def events(self) -> list[Event]:
        head, _, body = self.raw.partition(b"\r\n\r\n")
        if head:
            assert head.startswith(b"HTTP/1.1 200 "), head
        text = _dechunk(body).decode()
        out: list[Event] = []
        for block in text[: text.rfind("\n\n") + 1].split("\n\n"):
            fields = [x.partition(": ") for x in block.split("\n")]
            data = [value for name, _, value in fields if name == "data"]
            ids = [value for name, _, value in fields if name == "id"]
            if data or ids:
                out.append((ids[-1] if ids else None, data))
        return out

    def vanish(self) -> None:
        reset(self.socket)

    def close(self) -> None:
        self.socket.close()


def _dechunk(body: bytes) -> bytes:
    """The content of an HTTP/1.1 chunked body, so far as it has come."""
    out, pos = [], 0
    while (end := body.find(b"\r\n", pos)) != -1:
        size = int(body[pos:end], 16)
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


def lines_of(events: list[Event]) -> list[str]:
    return [x for _, data in events for x in data]


def subscribers(running: Running) -> list[Subscriber]:
    found = running.server.app.broadcaster.subscribers
    return [s for s in list(found) if isinstance(s, Subscriber)]


def test_a_reader_that_stops_reading_holds_up_nobody_and_is_told_what_it_lost(
    make_server: ServerFactory,
) -> None:
    running = make_server(history=100_000)
    running.server.app.sessions.tail_buffer = 100
    store_lines(running, "demo", line("start"))
    slow = SlowReader(session(running, lines=0, tail=True))
    wait_for(lambda: len(subscribers(running)) == 1)
    (slow_subscriber,) = subscribers(running)
    fast = Tail(session(running, lines=0, tail=True))
    try:
        wait_for(
            lambda: len(subscribers(running)) == 2 and all(s.live for s in subscribers(running))
        )
        slow.shrink_server_buffer()
        count, padding, most = 1500, "x" * 1000, 0
        for start in range(0, count, 100):  # 1.5 MB: past what the sockets and server buffer
            body = frame(format_syslog(line(f"n{i} {padding}")) for i in range(start, start + 100))
            assert running.post("demo", body).status_code == 204
            most = max(most, *(len(s.buffer) for s in subscribers(running)))
            # The fast reader keeps up (its buffer holds 100 lines too): the next 100 once it
            # has these, however quickly they are posted.
            fast.wait_for(start + 100)
        assert most <= 100  # what waits for the slow reader is bounded by its buffer
        assert web.get(f"{running.url}/healthz").status_code == 200
        got = fast.wait_for(count, timeout=60)
        assert [x.split(": ", 1)[1].split()[0] for x in got] == [f"n{i}" for i in range(count)]
        # The last lines may be among those the slow reader lost: once it has caught up
        # (its buffer empty), a line posted then must reach it.
        slow.read(lambda events: not slow_subscriber.buffer and any(lines_of(events)))
        store_lines(running, "demo", line("end"))
        lines = lines_of(
            slow.read(lambda events: any(x.endswith(" end") for x in lines_of(events)))
        )
        assert lines[-1].endswith(" end")
        lines = lines[:-1]
    finally:
        slow.close()
        fast.close()
    told = [int(m.group(1)) for x in lines if (m := L11.fullmatch(x))]
    numbers = [int(x.split(": ", 1)[1].split()[0][1:]) for x in lines if not L11.fullmatch(x)]
    assert told, "the slow reader was not told it lost lines"
    assert numbers == sorted(set(numbers))
    assert len(numbers) + sum(told) == count


def test_a_reader_that_vanishes_mid_history_can_resume_where_it_was(
    make_server: ServerFactory,
) -> None:
    running = make_server()
    padding = "y" * 500
    store_lines(running, "demo", *[line(f"h{i} {padding}") for i in range(1500)])
    url = session(running, lines=1500, tail=True)
    sessions = running.server.app.sessions
    first = SlowReader(url)
    try:
        wait_for(lambda: sessions._readers)
        first.shrink_server_buffer()
        seen = first.read(lambda events: len(events) >= 2)  # of 750 KB of history
        first.vanish()
    finally:
        first.close()
    wait_for(lambda: not sessions._readers and not subscribers(running))
    assert 0 < len(lines_of(seen)) < 1500
    post(running, "demo", [line(f"after {padding}")])
    last_id = [event_id for event_id, _ in seen if event_id][-1]
    again = Tail(url, **{"Last-Event-ID": last_id})
    try:
        rest = again.wait_for(1501 - len(lines_of(seen)))
    finally:
        again.close()
    names = [x.split(": ", 1)[1].split()[0] for x in lines_of(seen) + rest]
    assert names == [f"h{i}" for i in range(1500)] + ["after"]


def test_a_last_event_id_from_the_future_does_not_silence_the_tail(
    make_server: ServerFactory,
) -> None:
    """An id past the newest line (the store was replaced, or the client is confused): the
    tail goes on from now instead of waiting for ids that may never come."""
    running = make_server()
    store_lines(running, "demo", line("old"))
    newest = running.lines("demo")[-1].id
    url = session(running, lines=1, tail=True)
    tail = Tail(url, **{"Last-Event-ID": str(newest + 1_000_000)})
    try:
        wait_for(lambda: any(s.live for s in subscribers(running)))
        post(running, "demo", [line("new")])
        assert [x.split(": ", 1)[1] for x in tail.wait_for(1)] == ["new"]
    finally:
        tail.close()


def test_a_stale_last_event_id_resumes_from_the_oldest_line_kept_after_an_l11_line(
    make_server: ServerFactory,
) -> None:
    """After an L11 line telling how many were trimmed before it got to them."""
    running = make_server(history=20)
    store_lines(running, "demo", line("first"))
    url = session(running, lines=1, tail=True)
    first = Tail(url)
    first.wait_for(1)
    wait_for(lambda: any(s.live for s in subscribers(running)))  # after its history
    earlier = subscribers(running)  # the first tail's: the server may not see it go at once
    first.close()
    # Another tail keeps the server handing lines out, so the store trims what it has.
    other = Tail(session(running, lines=0, tail=True))
    try:
        # Its tail starts where the store is when it goes live (lines=0): posted before
        # then, lines are not its own, and it would wait for 100 in vain.
        wait_for(lambda: any(s.live for s in subscribers(running) if s not in earlier))
        broadcaster = running.server.app.broadcaster
        for i in range(0, 100, 10):
            post(running, "demo", [line(f"m{j}") for j in range(i, i + 10)])
            if i == 40:
                # A line is trimmed as others are added only once the server's trim hold
                # (renewed every HOLD_EVERY_S) says it was handed out: let it cover m0-m49.
                newest = running.lines("demo")[-1].id
                wait_for(lambda n=newest: (broadcaster._holding or 0) >= n)
        other.wait_for(100)
    finally:
        other.close()
    kept = [x.message for x in running.lines("demo")]
    assert "first" not in kept
    assert "m0" not in kept
    again = Tail(url, **{"Last-Event-ID": first.ids[-1]})
    try:
        # First, how many lines it missed (as a local tail says it): those trimmed.
        told, *rest = again.wait_for(1 + len(kept))
        assert (m := L11.fullmatch(told)), told
        assert int(m.group(1)) == 100 - len(kept)
        assert [x.split(": ", 1)[1] for x in rest] == kept
        post(running, "demo", [line("later")])
        assert again.wait_for(len(kept) + 2)[-1].endswith("later")
    finally:
        again.close()


def test_a_garbage_last_event_id_is_ignored(make_server: ServerFactory) -> None:
    """Not an id: the stream goes on after the last line the session sent, as if none was
    given: no replay, no error."""
    running = make_server()
    store_lines(running, "demo", *[line(f"old{i}") for i in range(3)])
    url = session(running, lines=3, tail=True)
    first = Tail(url)
    first.wait_for(3)
    first.close()
    raw = httpx.URL(url)
    garbage = ["abc", "-5", "1.5", "0x10", " ", "9" * 30, "\uff11\uff12", "12 13", "\xff"]
    for n, value in enumerate(garbage):
        store_lines(running, "demo", line(f"while away {n}"))
        with socket.create_connection((raw.host, raw.port), timeout=10) as sock:
            request = f"GET {raw.raw_path.decode()} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: {value}\r\n\r\n"
            sock.sendall(request.encode())
            seen = b""
            while f"while away {n}\n".encode() not in seen:
                chunk = sock.recv(65536)
                assert chunk, (value, seen)
                seen += chunk
        assert seen.startswith(b"HTTP/1.1 200 "), value
        assert b"old" not in seen, value
        assert f"while away {n - 1}\n".encode() not in seen, value


def test_a_reader_gone_while_its_tail_is_set_up_leaves_no_subscriber(herolog_home: Path) -> None:
    """The broadcaster is slow to start (its thread busy): the reader leaves meanwhile. Its
    subscriber must go with it, or it would take up to 16 MB of lines for nobody, for ever."""
    path = herolog_home / "logs.db"
    store = SQLiteStore.open(path)
    store.append([Batch("demo", [line("hi")])])
    store.close()

    async def scenario() -> list[Subscriber]:
        sessions = Sessions(path)
        session = LogSession(LineFilter(app="demo"), lines=1, tail=True)
        sessions.add(session)
        busy = threading.Event()
        sessions.broadcaster._executor.submit(busy.wait, 10)
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)

        reader = Reader()
        task = asyncio.create_task(sessions.stream(session, write, reader, None))
        for _ in range(500):
            if sessions.broadcaster.subscribers:
                break
            await asyncio.sleep(0.01)
        assert sessions.broadcaster.subscribers, "the tail never subscribed"
        reader.stop()  # the client went away
        await task
        left = [s for s in sessions.broadcaster.subscribers if isinstance(s, Subscriber)]
        busy.set()
        await sessions.close()
        assert any(b"hi" in chunk for chunk in written)  # the history did go out
        return left

    assert asyncio.run(scenario()) == []


def test_events_stay_small_when_lines_are_large(herolog_home: Path) -> None:
    """A reader that stops reading holds one event in the server's socket buffer beyond
    its lines waiting: events are capped in bytes too, not just at 200 lines."""
    path = herolog_home / "logs.db"
    store = SQLiteStore.open(path)
    big = [line(f"big{i} " + "z" * (256 << 10)) for i in range(12)]
    store.append([Batch("demo", big)])
    store.close()

    async def scenario() -> list[bytes]:
        sessions = Sessions(path)
        session = LogSession(LineFilter(app="demo"), lines=12, tail=False)
        sessions.add(session)
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)

        await sessions.stream(session, write, Reader(), None)
        await sessions.close()
        return written

    written = asyncio.run(scenario())
    assert max(len(chunk) for chunk in written) < (1 << 20) + (300 << 10)
    names = re.findall(rb"^data: \S+ app\[web\.1\]: (big\d+) ", b"".join(written), re.MULTILINE)
    assert names == [f"big{i}".encode() for i in range(12)]
