"""Tail sessions against a real store on disk: a slow reader, and the catch-up after resuming."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from herolog.filters import LineFilter
from herolog.server.broadcast import Broadcaster
from herolog.server.sessions import TAIL_BUFFER, LogSession, Reader, Sessions
from herolog.store import Batch, SQLiteStore, StoredLine
from tests.helpers import line, store_lines


def _events(chunks: list[bytes]) -> tuple[list[str], list[int]]:
    text = b"".join(chunks).decode()
    data = [m for m in re.findall(r"^data: (.*)$", text, re.M) if m]
    ids = [int(m) for m in re.findall(r"^id: (\d+)$", text, re.M)]
    return data, ids


class LiveTail:
    """A tail session of ``wanted`` streamed to a client that takes every event at once
    (``written``), started and live (subscribed to the broadcaster) once :meth:`start` returns;
    or, ``stalled``, one that stops reading then (its writes wait, as on a full socket) until
    :meth:`release`."""

    def __init__(
        self,
        path: Path,
        wanted: LineFilter,
        *,
        tail_buffer: int = TAIL_BUFFER,
        marks: bool = False,
        stalled: bool = False,
    ) -> None:
        self.sessions = Sessions(path, tail_buffer=tail_buffer, poll_interval=0.01)
        self.session = LogSession(wanted, lines=0, tail=True)
        self.sessions.add(self.session)
        self.written: list[bytes] = []
        self.reader = Reader()
        self.reader.wants_marks = marks
        self._stalled = stalled
        self._reading = asyncio.Event()
        self._reading.set()

    async def start(self) -> None:
        async def write(data: bytes) -> None:
            await self._reading.wait()
            self.written.append(data)

        stream = self.sessions.stream(self.session, write, self.reader, None)
        self._task = asyncio.create_task(stream)
        subscribers = self.sessions.broadcaster.subscribers
        while not any(getattr(s, "live", False) for s in subscribers):
            await asyncio.sleep(0.01)
        if self._stalled:
            self._reading.clear()

    def release(self) -> None:
        self._reading.set()

    async def append(self, store: SQLiteStore, name: str, count: int) -> None:
        """``count`` lines ``NAME0``, ``NAME1``... appended to ``store``'s demo app, and
        handed out by the broadcaster (to the tail, or skipped past it)."""
        batch = [line(f"{name}{i}") for i in range(count)]
        await asyncio.to_thread(store.append, [Batch("demo", batch)])
        newest = store.newest_id()
        while self.sessions.broadcaster.position < newest:
            await asyncio.sleep(0.01)

    async def stop(self) -> list[bytes]:
        self.reader.stop()
        await self._task
        await self.sessions.close()
        return self.written


async def until_written(written: list[bytes], text: bytes, tries: int = 300) -> None:
    """Until ``text`` is in what a stream wrote, or ``tries`` waits of 20 ms have passed."""
    for _ in range(tries):
        if any(text in chunk for chunk in written):
            return
        await asyncio.sleep(0.02)


def demo_of_one_line(herolog_home: Path) -> tuple[Path, SQLiteStore]:
    """A store whose app demo has one line, ``before``, and room for 100,000 (no trimming
    but where a test asks for it)."""
    path = herolog_home / "logs.db"
    store = SQLiteStore.open(path)
    store.set_history(100_000)
    store.append([Batch("demo", [line("before")])])
    return path, store


def test_a_slow_reader_loses_lines_and_is_told_exactly_how_many(herolog_home: Path) -> None:
    path, store = demo_of_one_line(herolog_home)

    async def scenario() -> list[bytes]:
        tail = LiveTail(path, LineFilter(app="demo"), tail_buffer=50, stalled=True)
        await tail.start()
        for start in range(0, 1000, 20):  # many commits: the buffer fills while nobody reads
            batch = [line(f"n{i}") for i in range(start, start + 20)]
            await asyncio.to_thread(store.append, [Batch("demo", batch)])
            await asyncio.sleep(0.01)
        newest = store.last(LineFilter(), 1)[1]
        while tail.sessions.broadcaster.position < newest:  # it hands out all 1000; 50 fit
            await asyncio.sleep(0.01)
        tail.release()
        await asyncio.to_thread(store.append, [Batch("demo", [line("after")])])
        await until_written(tail.written, b"after", 200)
        return await tail.stop()

    data, _ = _events(asyncio.run(scenario()))
    store.close()
    overflow = [d for d in data if "L11" in d]
    assert len(overflow) == 1
    m = re.search(
        r"heroku\[logplex\]: Error L11 \(Tail buffer overflow\) -> This tail session dropped (\d+) messages since \S+\.$",
        overflow[0],
    )
    assert m, overflow[0]
    delivered = [d.split(": ", 1)[1] for d in data if "L11" not in d]
    # A line the writer was already holding when the gate closed is delivered too.
    assert int(m.group(1)) + len([d for d in delivered if d.startswith("n")]) == 1000
    assert delivered[-1] == "after"
    numbers = [int(d[1:]) for d in delivered if d.startswith("n")]
    assert numbers == sorted(numbers)
    assert numbers[-1] == 999  # the newest are kept, the oldest dropped


def test_a_broadcaster_far_behind_skips_to_the_newest_and_tells_each_tail_what_it_lost(
    herolog_home: Path,
) -> None:
    """A broadcaster more than ``max_behind`` lines behind (serve short of CPU) skips to the
    newest line: a tail is told with L11 how many of its lines were skipped (those of its
    app alone, exactly), and goes on with the lines that follow."""
    path, store = demo_of_one_line(herolog_home)

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        demo = LiveTail(path, LineFilter(app="demo"))
        every = LiveTail(path, LineFilter())
        await demo.start()
        await every.start()
        for tail in (demo, every):
            tail.sessions.broadcaster.max_behind = 100
        batches = [Batch("other", [line(f"o{i}") for i in range(200)])]
        batches.append(Batch("demo", [line(f"n{i}") for i in range(300)]))
        await asyncio.to_thread(store.append, batches)
        newest = store.last(LineFilter(), 1)[1]
        for tail in (demo, every):
            while tail.sessions.broadcaster.position < newest:
                await asyncio.sleep(0.01)
        await asyncio.to_thread(store.append, [Batch("demo", [line("after")])])
        for _ in range(500):
            if all(any(b"after" in chunk for chunk in t.written) for t in (demo, every)):
                break
            await asyncio.sleep(0.02)
        return await demo.stop(), await every.stop()

    for chunks, lost in zip(asyncio.run(scenario()), (300, 500), strict=True):
        data, _ = _events(chunks)
        overflow = [d for d in data if "L11" in d]
        assert len(overflow) == 1, data
        assert f"This tail session dropped {lost} messages since" in overflow[0]
        assert [d.split(": ", 1)[1] for d in data if "L11" not in d] == ["after"]
    store.close()


def test_each_mark_a_tail_is_sent_past_a_skip_is_its_own_id_s(herolog_home: Path) -> None:
    """herolog's client is sent the mark of each id it may resume after (how many lines of
    the app the store had up to it), to count what the ring buffer trims meanwhile: past a
    skip of the broadcaster's, the id of the event that tells of it (L11) is where the tail
    was, and it gets no mark of where the broadcaster got to, which would undercount."""
    path, store = demo_of_one_line(herolog_home)

    async def scenario() -> list[bytes]:
        tail = LiveTail(path, LineFilter(app="demo"), marks=True)
        await tail.start()
        tail.sessions.broadcaster.max_behind = 100
        await tail.append(store, "n", 300)  # skipped
        await asyncio.to_thread(store.append, [Batch("demo", [line("after")])])
        await until_written(tail.written, b"after")
        return await tail.stop()

    text = b"".join(asyncio.run(scenario())).decode()
    marks = [
        (int(a), int(b)) for a, b in re.findall(r"^event: mark\ndata: (\d+) (\d+)$", text, re.M)
    ]
    counted = [(at, store.lines_through("demo", at)) for at, _ in marks]
    store.close()
    assert marks
    assert counted == marks


def test_a_broadcaster_just_max_behind_reads_every_line(herolog_home: Path) -> None:
    """A broadcaster skips only when it is more than ``max_behind`` lines behind: just that
    many behind, a tail gets every line, and no L11 line."""
    path, store = demo_of_one_line(herolog_home)

    async def scenario() -> list[bytes]:
        tail = LiveTail(path, LineFilter(app="demo"))
        await tail.start()
        tail.sessions.broadcaster.max_behind = 100
        await tail.append(store, "n", 100)  # one commit: 100 behind at once
        await until_written(tail.written, b"n99", 300)
        return await tail.stop()

    data, _ = _events(asyncio.run(scenario()))
    store.close()
    assert [d.split(": ", 1)[1] for d in data] == [f"n{i}" for i in range(100)]


def test_a_skip_over_an_app_forgotten_unread_and_made_anew_tells_of_both(
    herolog_home: Path,
) -> None:
    """Serve falls behind (short of CPU) while ``store forget`` deletes lines of an app it
    has not read back yet, and the app, made anew, gets more lines than serve may fall
    behind by: the broadcaster skips to the newest, and the app's tail is told with one L11
    line of every line it lost, the forgotten ones and the new ones skipped, not of one
    kind alone."""
    path, store = demo_of_one_line(herolog_home)

    async def scenario() -> list[bytes]:
        tail = LiveTail(path, LineFilter(app="demo"))
        await tail.start()
        broadcaster = tail.sessions.broadcaster
        broadcaster.max_behind = 100
        # While it reads nothing, as a serve stopped short of CPU.
        async with broadcaster._reading:
            store.append([Batch("demo", [line(f"unread{i}") for i in range(10)])])
            assert store.forget_app("demo") == 11
            store.append([Batch("demo", [line(f"anew{i}") for i in range(200)])])
        broadcaster.nudge()
        newest = store.newest_id()
        deadline = asyncio.get_running_loop().time() + 30
        while broadcaster.position < newest:
            assert asyncio.get_running_loop().time() < deadline, "the broadcaster did not catch up"
            await asyncio.sleep(0.01)
        await tail.append(store, "after", 1)
        await until_written(tail.written, b"after0", 300)
        return await tail.stop()

    data, _ = _events(asyncio.run(scenario()))
    store.close()
    overflow = [d for d in data if "L11" in d]
    assert len(overflow) == 1, data
    assert "This tail session dropped 210 messages since" in overflow[0]
    assert [d.split(": ", 1)[1] for d in data if "L11" not in d] == ["after0"]


async def _held_then_skipped(
    path: Path,
    store: SQLiteStore,
    held: int,
    skipped: list[tuple[str, int]],
    *,
    marks: bool = False,
) -> str:
    """What a slow reader's tail of demo writes when, with 10 lines ``a`` taken and ``held``
    lines ``b`` in its buffer, the broadcaster (at most 100 behind) skips each batch of
    ``skipped`` (a name and a count of lines), and 5 lines ``d`` come after."""
    tail = LiveTail(path, LineFilter(app="demo"), marks=marks, stalled=True)
    await tail.start()
    await tail.append(store, "a", 10)  # taken: the write of its event waits
    await asyncio.sleep(0.05)
    await tail.append(store, "b", held)  # waiting in the tail's buffer
    tail.sessions.broadcaster.max_behind = 100
    for name, count in skipped:
        await tail.append(store, name, count)  # skipped
    tail.sessions.broadcaster.max_behind = 100_000
    await tail.append(store, "d", 5)
    tail.release()
    await until_written(tail.written, b"d4", 300)
    return b"".join(await tail.stop()).decode()


@pytest.mark.parametrize("held", [250, 1])
def test_a_skip_past_lines_a_tail_still_holds_is_told_after_them(
    herolog_home: Path, held: int
) -> None:
    """Lines the broadcaster skips are newer than those a slow reader's tail still holds:
    the L11 line telling of them comes after those, so that an event's id (where a client
    resumes with Last-Event-ID) is never past lines told as lost, and the mark of each
    event (herolog's client counts what was trimmed from it) is its own last line's, not
    that plus the lines skipped after it (which the tail once sent with the L11 line first).
    One line held is the newest handed over before the skip: the skip comes after it too."""
    path, store = demo_of_one_line(herolog_home)
    text = asyncio.run(_held_then_skipped(path, store, held, [("c", 500)], marks=True))
    data, _ = _events([text.encode()])
    shown = [d.split(": ", 1)[1] for d in data if ": " in d]
    at = next(i for i, d in enumerate(shown) if "L11" in d)
    assert "This tail session dropped 500 messages since" in shown[at]
    assert shown[at - 1 : at + 2 : 2] == [f"b{held - 1}", "d0"]
    marks = [(int(i), int(m)) for i, m in re.findall(r"^data: (\d+) (\d+)$", text, re.M)]
    assert len(marks) > 3
    for line_id, mark in marks:
        assert store.lines_through("demo", line_id) == mark, (line_id, mark)
    store.close()


def test_two_skips_past_lines_a_tail_still_holds_are_told_in_one_l11_line(
    herolog_home: Path,
) -> None:
    """The broadcaster skips twice while a slow reader's tail still holds lines: the reader
    is told of both skips in one L11 line after those lines, with the count of both, as
    Logplex tells of lines lost together, not in an L11 line for each skip."""
    path, store = demo_of_one_line(herolog_home)
    text = asyncio.run(_held_then_skipped(path, store, 5, [("c", 300), ("e", 200)]))
    data, _ = _events([text.encode()])
    shown = [d.split(": ", 1)[1] for d in data if ": " in d]
    told = [i for i, d in enumerate(shown) if "L11" in d]
    assert len(told) == 1, shown
    assert "This tail session dropped 500 messages since" in shown[told[0]]
    assert shown[told[0] - 1 : told[0] + 2 : 2] == ["b4", "d0"]
    store.close()


def test_lines_lost_in_two_seconds_are_told_since_the_first(herolog_home: Path) -> None:
    """A reader that does not read loses lines its buffer drops, then lines the broadcaster
    skips, then the buffer drops the lines held before that skip: the L11 line that tells of
    them all gives when the first was lost, not when the last were."""
    path, store = demo_of_one_line(herolog_home)

    async def scenario() -> tuple[list[bytes], datetime]:
        tail = LiveTail(path, LineFilter(app="demo"), tail_buffer=50, stalled=True)
        await tail.start()
        broadcaster = tail.sessions.broadcaster
        await tail.append(store, "a", 1)  # taken: the write of its event waits
        await asyncio.sleep(0.05)
        await tail.append(store, "b", 100)  # 50 dropped
        await asyncio.sleep(1 - time.time() % 1)  # L11 names whole seconds: the rest later
        later = datetime.fromtimestamp(int(time.time()), UTC)
        broadcaster.max_behind = 100
        await tail.append(store, "c", 500)  # skipped, after the 50 held
        broadcaster.max_behind = 100_000
        await tail.append(
            store, "d", 50
        )  # the 50 held dropped: the skip is before every line held now
        tail.release()
        await until_written(tail.written, b"d49", 300)
        return await tail.stop(), later

    chunks, later = asyncio.run(scenario())
    store.close()
    data, _ = _events(chunks)
    shown = [d.split(": ", 1)[1] for d in data]
    overflow = [d for d in shown if "L11" in d]
    assert len(overflow) == 1, overflow
    m = re.search(r"This tail session dropped 600 messages since (\S+)\.$", overflow[0])
    assert m, overflow[0]
    assert datetime.fromisoformat(m.group(1)) < later
    assert [d for d in shown if "L11" not in d] == ["a0"] + [f"d{i}" for i in range(50)]


@pytest.mark.parametrize("lost", ["skipped", "dropped"])
def test_lines_skipped_as_a_tail_goes_live_are_read_from_the_store(
    herolog_home: Path, lost: str
) -> None:
    """A tail not live yet is told of lines the broadcaster skips (or drops) by reading the
    store again; a skip while it was sending where its catch-up ended (its mark, its id)
    came after the last look and was passed over: 500 lines neither shown nor told (L11).
    So are the lines its buffer drops then, past its length: told as lost (L11) to no one,
    they are the store's to send, and a tail that went live with the 50 it held lost 450."""
    path, store = demo_of_one_line(herolog_home)

    async def scenario() -> list[bytes]:
        sessions = Sessions(
            path, poll_interval=0.01, tail_buffer=50 if lost == "dropped" else 10_000
        )
        session = LogSession(LineFilter(app="demo"), lines=0, tail=True)
        sessions.add(session)
        written: list[bytes] = []
        gate, held = asyncio.Event(), asyncio.Event()
        marks = 0

        async def write(data: bytes) -> None:
            nonlocal marks
            if data.startswith(b"event: mark"):
                marks += 1
                if marks == 2:  # the tail's, as its catch-up ends, before it goes live
                    held.set()
                    await gate.wait()
            written.append(data)

        reader = Reader()
        reader.wants_marks = True
        broadcaster = sessions.broadcaster
        if lost == "skipped":
            broadcaster.max_behind = 100
        task = asyncio.create_task(sessions.stream(session, write, reader, None))
        await held.wait()
        batch = [line(f"c{i}") for i in range(500)]
        await asyncio.to_thread(store.append, [Batch("demo", batch)])
        newest = store.newest_id()
        while broadcaster.position < newest:  # skipped, or handed over: 450 dropped
            await asyncio.sleep(0.01)
        gate.set()
        await asyncio.to_thread(store.append, [Batch("demo", [line("after")])])
        await until_written(written, b"after", 300)
        reader.stop()
        await task
        await sessions.close()
        return written

    data, _ = _events(asyncio.run(scenario()))
    store.close()
    shown = [d.split(": ", 1)[1] for d in data if ": " in d]  # not the marks
    assert shown == [f"c{i}" for i in range(500)] + ["after"]


def test_resume_catches_up_from_the_store_without_duplicates(herolog_home: Path) -> None:
    path = herolog_home / "logs.db"
    store = SQLiteStore.open(path)
    store.set_history(100_000)
    store.append([Batch("demo", [line(f"old{i}") for i in range(10)])])
    resume_after = store.last(LineFilter(), 5)[0][0].id - 1  # old4's id: resume after it
    more = [line(f"new{i}") for i in range(5000)]

    async def scenario() -> list[bytes]:
        sessions = Sessions(path, poll_interval=0.01)  # the default buffer: no drops here
        session = LogSession(LineFilter(app="demo"), lines=0, tail=True)
        sessions.add(session)
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)
            await asyncio.sleep(0)

        reader = Reader()
        writer = asyncio.create_task(
            asyncio.to_thread(
                lambda: [
                    store.append([Batch("demo", more[i : i + 50])]) for i in range(0, 5000, 50)
                ]
            )
        )
        task = asyncio.create_task(sessions.stream(session, write, reader, resume_after))
        await writer
        await until_written(written, b"new4999", 500)
        reader.stop()
        await task
        await sessions.close()
        return written

    data, ids = _events(asyncio.run(scenario()))
    store.close()
    messages = [d.split(": ", 1)[1] for d in data]
    assert messages == [f"old{i}" for i in range(5, 10)] + [f"new{i}" for i in range(5000)]
    assert ids == sorted(ids)


@pytest.mark.slow
def test_a_tail_says_how_far_it_has_got_at_most_once_a_second(herolog_home: Path) -> None:
    """A tail of one app on a server where another app logs as well: the events without lines
    that give the client where to resume past lines it did not want come at most once a
    second, not after every batch of its own."""
    path, store = demo_of_one_line(herolog_home)

    async def scenario() -> tuple[list[bytes], float]:
        tail = LiveTail(path, LineFilter(app="demo"))
        await tail.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(40):  # each of its own lines with another app's after it
            await asyncio.to_thread(store.append, [Batch("demo", [line(f"own {i}")])])
            await asyncio.to_thread(store.append, [Batch("other", [line(f"other {i}")])])
            await asyncio.sleep(0.05)
        for _ in range(200):
            if any(b"own 39" in chunk for chunk in tail.written):
                break
            await asyncio.sleep(0.02)
        took = loop.time() - started
        return await tail.stop(), took

    written, took = asyncio.run(scenario())
    store.close()
    data, _ = _events(written)
    assert [d.split(": ", 1)[1] for d in data] == [f"own {i}" for i in range(40)]
    bare_ids = [chunk for chunk in written if re.fullmatch(rb"id: \d+\n\n", chunk)]
    assert len(bare_ids) <= took + 2, (len(bare_ids), took)


def test_the_broadcaster_chooses_the_lines_of_each_tail_off_the_event_loop(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each tail's filter looked at every line the broadcaster read in serve's event loop: a
    read of 2,000 lines with 20 tails, 0.1 s in which no request was answered."""
    path = herolog_home / "logs.db"
    SQLiteStore.open(path).close()
    looked_at: list[tuple[str, str]] = []
    matches = LineFilter.matches

    def noted(self: LineFilter, line: StoredLine) -> bool:
        looked_at.append((threading.current_thread().name, line.message))
        return matches(self, line)

    monkeypatch.setattr(LineFilter, "matches", noted)

    async def scenario() -> list[bytes]:
        tail = LiveTail(path, LineFilter(app="demo", grep=(re.compile("GET"),)))
        await tail.start()
        lines = [line("GET /a"), line("POST /b"), line("GET /c")]
        await asyncio.to_thread(store_lines, path, "demo", *lines)
        for _ in range(500):
            if len(_events(tail.written)[0]) == 2:
                break
            await asyncio.sleep(0.01)
        return await tail.stop()

    data, _ = _events(asyncio.run(scenario()))
    assert [d.split(": ", 1)[1] for d in data] == ["GET /a", "GET /c"]
    assert sorted(message for _, message in looked_at) == ["GET /a", "GET /c", "POST /b"]
    assert not [x for x in looked_at if x[0] == threading.main_thread().name], looked_at


def test_a_closed_broadcaster_leaves_no_thread_and_closes_again_quietly(herolog_home: Path) -> None:
    """Closing ends the broadcaster's two threads (the lines' reader and the trim hold's
    writer), and a second close, as a stopping server's sessions and its app both make,
    does nothing."""
    path = herolog_home / "logs.db"
    store_lines(path, "demo", line("x"))
    got: list[str] = []

    class Sink:
        def push(self, lines: Sequence[StoredLine]) -> None:
            got.extend(x.message for x in lines)

    def threads() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t.name.startswith(("herolog-broadcast", "herolog-trim-hold"))
        ]

    async def scenario() -> list[threading.Thread]:
        broadcaster = Broadcaster(path, poll_interval=0.01)
        await broadcaster.subscribe(Sink())
        started = threads()
        await broadcaster.close()
        await broadcaster.close()
        assert await broadcaster.subscribe(Sink()) is None
        return started

    before = set(threads())
    started = [t for t in asyncio.run(scenario()) if t not in before]
    assert len(started) == 2
    for thread in started:
        thread.join(timeout=10)
        assert not thread.is_alive(), thread.name


def test_a_closed_broadcaster_no_longer_keeps_lines_past_the_history(herolog_home: Path) -> None:
    """While it runs, the broadcaster keeps the lines it has not handed out from the ring
    buffer's trimming (its trim hold); a serve that stops lets them go at once, not half a
    minute later: a `herolog import` after it keeps the history and no more."""
    path = herolog_home / "logs.db"
    store = SQLiteStore.open(path)
    store.set_history(10)
    store.append([Batch("demo", [line("before")])])

    class Sink:
        def push(self, lines: Sequence[StoredLine]) -> None:
            pass

    async def scenario() -> None:
        broadcaster = Broadcaster(path, poll_interval=0.01)
        await broadcaster.subscribe(Sink())  # its hold is in place once this returns
        await broadcaster.close()

    asyncio.run(scenario())
    store.append([Batch("demo", [line(f"n{i}") for i in range(30)])])
    kept = [x.message for x in store.last(LineFilter(), 100)[0]]
    store.close()
    assert kept == [f"n{i}" for i in range(20, 30)]


def test_the_broadcaster_carries_on_after_the_store_was_briefly_unreadable(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broadcaster's read failing (here: the store moved away for a moment) is retried:
    its subscribers get the lines committed once it can read again, none lost or twice."""
    path = herolog_home / "logs.db"
    store = SQLiteStore.open(path)
    store.append([Batch("demo", [line("before")])])
    store.close()
    got: list[str] = []

    class Sink:
        def push(self, lines: Sequence[StoredLine]) -> None:
            got.extend(x.message for x in lines)

    def append(message: str) -> None:
        writer = SQLiteStore.open(path)
        try:
            writer.append([Batch("demo", [line(message)])])
        finally:
            writer.close()

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"got {got}")

    async def scenario() -> None:
        broadcaster = Broadcaster(path, poll_interval=0.01)
        close_store = broadcaster._close_store
        failed: list[None] = []  # the broadcaster closes its store after a read that failed

        def closing() -> None:
            failed.append(None)
            close_store()

        monkeypatch.setattr(broadcaster, "_close_store", closing)
        sink = Sink()
        await broadcaster.subscribe(sink)
        await asyncio.to_thread(append, "live")
        await until(lambda: got == ["live"])
        files = [
            Path(f"{path}{end}") for end in ("", "-wal", "-shm") if Path(f"{path}{end}").exists()
        ]
        for file in files:
            file.rename(f"{file}.away")
        failed.clear()
        broadcaster.nudge()
        await until(lambda: len(failed) >= 3)  # several reads fail meanwhile
        for file in files:
            Path(f"{file}.away").rename(file)
        await asyncio.to_thread(append, "after")
        broadcaster.nudge()
        await until(lambda: got == ["live", "after"])
        broadcaster.unsubscribe(sink)
        await broadcaster.close()

    asyncio.run(scenario())


def test_a_tail_read_for_longer_than_the_ttl_can_be_resumed_once_its_reader_goes(
    herolog_home: Path,
) -> None:
    """A session expires when nobody has read it for its ttl (5 minutes), counted from when
    its last reader went: a `heroku logs --tail` that ran for an hour and lost its
    connection comes back to its session, not to a 404."""
    path = herolog_home / "logs.db"
    store = SQLiteStore.open(path)
    store.append([Batch("demo", [line("before")])])
    store.close()

    async def scenario() -> tuple[LogSession | None, LogSession]:
        sessions = Sessions(path, poll_interval=0.01)
        # Made (and read since) twice the ttl ago.
        made = time.monotonic() - 2 * sessions.ttl
        session = LogSession(LineFilter(app="demo"), lines=0, tail=True, idle_since=made)
        sessions.add(session)
        reader = Reader()

        async def write(data: bytes) -> None:
            pass

        task = asyncio.create_task(sessions.stream(session, write, reader, None))
        subscribers = sessions.broadcaster.subscribers
        for _ in range(500):  # until it is live
            if any(getattr(s, "live", False) for s in subscribers):
                break
            await asyncio.sleep(0.01)
        reader.stop()
        await task
        assert session.reader is None
        again = sessions.get(session.id, session.secret)
        await sessions.close()
        return again, session

    again, session = asyncio.run(scenario())
    assert again is session


def test_lines_trimmed_while_nobody_read_a_tail_are_told_since_its_reader_went(
    herolog_home: Path,
) -> None:
    """A tail made long ago whose reader went (the network dropped, serve restarted), and
    whose lines the ring buffer trimmed before it came back: the L11 line says they were
    lost since the reader went, not since the session was made."""
    path = herolog_home / "logs.db"
    store = SQLiteStore.open(path)
    store.set_history(10)
    store.append([Batch("demo", [line("before")])])

    async def scenario() -> tuple[list[bytes], datetime]:
        first = Sessions(path, poll_interval=0.01)
        made = "2024-03-05T09:00:00.000000Z"
        session = LogSession(LineFilter(app="demo"), lines=1, tail=True, created_at=made)
        first.add(session)
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)

        reader = Reader()
        task = asyncio.create_task(first.stream(session, write, reader, None))
        await until_written(written, b"before")
        _, ids = _events(written)
        went = datetime.fromtimestamp(int(time.time()), UTC)
        reader.stop()
        await task
        await first.close()  # hands the session over to the next
        await asyncio.to_thread(store.append, [Batch("demo", [line(f"n{i}") for i in range(30)])])
        second = Sessions(path, poll_interval=0.01)
        await second.start()
        again = second.get(session.id, session.secret)
        assert again is not None
        written.clear()
        reader = Reader()
        task = asyncio.create_task(second.stream(again, write, reader, ids[-1]))
        await until_written(written, b"n29")
        reader.stop()
        await task
        await second.close()
        return written, went

    chunks, went = asyncio.run(scenario())
    store.close()
    data, _ = _events(chunks)
    overflow = [d for d in data if "L11" in d]
    assert len(overflow) == 1, data
    m = re.search(r"dropped 20 messages since (\S+)\.$", overflow[0])
    assert m, overflow[0]
    assert datetime.fromisoformat(m.group(1)) >= went
    assert [d.split(": ", 1)[1] for d in data if "L11" not in d] == [f"n{i}" for i in range(20, 30)]
