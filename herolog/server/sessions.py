"""Log sessions: what ``heroku logs`` (and ``herolog logs --server``) stream over SSE.

A session is created through the Platform API and read once through its secret URL: the
history first (the same query as local ``herolog logs``), then, for a tail session, new
lines as the store receives them. One :class:`Broadcaster` reads new lines from the store
for every tail session at once and hands each session the lines it wants, into a bounded
buffer: a reader that cannot keep up loses lines, told by Heroku's L11 line, instead of
holding up the server or its memory.

A serve that stops keeps its tail sessions in the store, and the next serve on it takes
them: a client coming back to the same URL (the heroku CLI's EventSource does) goes on
after the last line it got.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import re
import secrets
import sqlite3
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from herolog import timestamps
from herolog.filters import LineFilter, compile_pattern
from herolog.logs import find_history, overflow_line, read_after
from herolog.render import OPENING_RETRY_MS, encode_record, format_text
from herolog.server.broadcast import POLL_INTERVAL_S, Broadcaster, Skipped
from herolog.server.http import same_secret
from herolog.store import SQLiteStore, StoredLine, StoreError, using_store

SESSION_TTL_S = 300.0
"""A session nobody is reading expires after this long, as Logplex's do."""
MAX_SESSIONS = 10_000
TAIL_BUFFER = 10_000
"""Lines a tail session holds for a reader that is behind; past it, lines are dropped (L11)."""
TAIL_BUFFER_BYTES = 16 << 20
"""...and at most about this many bytes of them."""
KEEPALIVE_S = 5.0
"""A quiet stream sends a comment this often: a proxy in front cuts a response that sends
nothing for its idle timeout (nginx's proxy_read_timeout, 60 s; 10 s on some load
balancers), and the heroku CLI dies at such a cut."""
RETRY_MS = OPENING_RETRY_MS
"""Sent as the SSE ``retry`` field: a tail client that loses the stream comes back this soon."""
FAILED_RETRY_MS = 5_000
"""Sent as a tail's stream ends because the store could not be read (serve out of open
files, say): its client comes back this much later, and resumes after its last line."""
RESTART_MARGIN_MS = 5_000
"""As a stream ends because serve is stopping, it asks the client to come back after the
drains' flush (``--drain-flush-timeout``, all of it where a drain cannot deliver) and this
much more: time for a restarted serve to listen again, since the heroku CLI gives up at the
first reconnect that finds no server."""


def end_for_restart(flush_s: float) -> bytes:
    """The end of a stream that serve's stop ends: ``retry`` 10,000 ms for the default flush."""
    return f"retry: {round(flush_s * 1000) + RESTART_MARGIN_MS}\n\n".encode()


_KEY_ROUNDS = 100_000
"""PBKDF2 rounds of the API key's fingerprint kept with the sessions handed over."""
PASSED_EVERY_S = 1.0
"""At most this often a tail that only had lines it does not want says how far it has got
(an event with an id and no lines): a reader that reconnects resumes after them, and the
store's trimming them since is not told as lines it lost (L11)."""
_EVENT_LINES = 200
"""Lines one SSE event holds at most..."""
_EVENT_BYTES = 1 << 20
"""...and about this many bytes of messages: a reader that does not read holds up to one
event in the server's socket buffer, on top of its tail buffer."""
_READ_BATCH = 2000
# How a stream says it is over: a history sent whole, or a tail whose ``until`` passed.
# The heroku CLI ignores events other than ``message`` and ``error``. A history's end also
# sets the reconnect delay to 0: the CLI's EventSource arms its reconnect timer as the
# stream ends, after the CLI has closed it, and node does not exit until the timer fires
# (RETRY_MS, or 3 s without one), so ``heroku logs`` would wait that long for nothing.
END_OF_HISTORY = b"retry: 0\nevent: end\ndata: history\n\n"
END_OF_TAIL = b"event: end\ndata: until\n\n"
_NEWLINES = re.compile(r"\r\n|\r|\n")

Write = Callable[[bytes], Awaitable[None]]
T = TypeVar("T")


class SessionError(ValueError):
    """A log-session request the API answers with 422."""


class TooManySessions(Exception):
    """The server has as many sessions open as it keeps: the API answers 429."""


@dataclass
class LogSession:
    """One ``POST /apps/APP/log-sessions``: what to show, and how far it has been read."""

    wanted: LineFilter
    lines: int
    tail: bool
    as_json: bool = False
    msgid: bool = False
    """Whether its records may carry a MSGID: only a client that asks reads a 13th field."""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    digest: str = field(default="", repr=False)
    """The secret's SHA-256: what a request's is compared with, and what the store keeps
    of a session handed over to the next serve (which never knows the secret itself)."""
    created_at: str = field(default_factory=lambda: timestamps.to_instant(timestamps.now()))
    last_sent: int | None = None
    """The id of the last line sent (or the store's position after the history)."""
    idle_since: float = field(default_factory=time.monotonic)
    used: bool = False
    reader: Reader | None = None
    left_at: str | None = None
    """When its last reader went: a reader resuming it may have missed lines since."""

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = _digest(self.secret)


class Subscriber:
    """A tail session's buffer of new lines, fed by the broadcaster."""

    def __init__(
        self, wanted: LineFilter, capacity: int, wake: asyncio.Event, max_bytes: int
    ) -> None:
        self.wanted = wanted
        self.app = wanted.app
        """The broadcaster hands this subscriber only this app's lines."""
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.wake = wake
        self.buffer: deque[StoredLine] = deque()
        self.size = 0
        self.live = False
        self.stale = False
        """Set when lines were dropped before the session went live: read the store again."""
        self.dropped = 0
        self.dropped_since: str | None = None
        self.floor = 0
        """Lines up to this id were sent already (by the catch-up): not wanted again."""
        self.passed_by = 0.0
        """When lines that are not wanted next wake the reader, to say how far it has got."""
        self.counted = 0
        """Lines taken in past ``floor``, those dropped since too."""
        self.gaps: deque[tuple[int, int, str]] = deque()
        """Lines skipped (see :meth:`skip`) newer than lines still in the buffer: the id
        they follow, how many, and since when."""

    def push(self, lines: Sequence[StoredLine], chosen: Sequence[StoredLine] | None = None) -> None:
        """Take new lines, of which ``chosen`` are those ``wanted`` passes (chosen here if
        not given: the broadcaster chooses them off the event loop)."""
        if chosen is None:
            chosen = [line for line in lines if self.wanted.matches(line)]
        buffer = self.buffer
        floor = self.floor
        added = False
        for line in chosen:
            if line.id <= floor:
                continue
            self.counted += 1
            buffer.append(line)
            self.size += _cost(line)
            added = True
            while len(buffer) > self.capacity or self.size > self.max_bytes:
                self.size -= _cost(buffer.popleft())
                if self.live:
                    if not self.dropped:
                        self.dropped_since = timestamps.to_instant(timestamps.now())
                    self.dropped += 1
                else:
                    self.stale = True
        # A skip whose older lines are all dropped now lies before every line left.
        while self.gaps and (not buffer or buffer[0].id > self.gaps[0][0]):
            _, count, since = self.gaps.popleft()
            self._drop(count, since)
        if added:
            self.wake.set()
        elif lines and self.live and time.monotonic() >= self.passed_by:
            self.passed_by = time.monotonic() + PASSED_EVERY_S
            self.wake.set()

    def skip(self, skipped: Skipped) -> None:
        """The broadcaster skipped lines: those of this tail's past ``floor`` are dropped
        (L11), every line of its app (or of every app) counted, as for lines the ring
        buffer trimmed: with filters, at most that many were lost."""
        if not self.live:
            self.stale = True  # the catch-up reads them from the store
            return
        dropped = skipped.count(self.app, self.floor)
        if not dropped:
            return
        self.counted += dropped
        now = timestamps.to_instant(timestamps.now())
        buffer = self.buffer
        if buffer and buffer[0].id <= skipped.after:
            # Newer than lines still waiting: told after them, where they were lost, so
            # that each event's id (where its client resumes) and mark are its own lines'.
            if self.gaps and buffer[-1].id <= self.gaps[-1][0]:
                after, count, since = self.gaps.pop()
                self.gaps.append((after, count + dropped, since))
            else:
                self.gaps.append((skipped.after, dropped, now))
        else:
            self._drop(dropped, now)
        self.wake.set()

    def _drop(self, count: int, since: str) -> None:
        """Count ``count`` lines older than any in the buffer as dropped (the L11 line
        that opens what is sent next)."""
        if not self.dropped or (self.dropped_since is not None and since < self.dropped_since):
            self.dropped_since = since
        self.dropped += count

    def take(self) -> list[StoredLine]:
        lines = list(self.buffer)
        self.buffer.clear()
        self.size = 0
        return lines


def _cost(line: StoredLine) -> int:
    return len(line.message) + 200  # the other fields, roughly


def _parted(
    app: str | None,
    lines: list[StoredLine],
    gaps: Sequence[tuple[int, int, str]],
    mark: int | None,
) -> list[tuple[list[StoredLine], int | None]]:
    """``lines`` cut where lines were skipped among them (Subscriber.gaps), each part after
    the first opening with the L11 line of its gap, and the mark of each part's last line,
    ``mark`` being the last line's."""
    ids = [line.id for line in lines]
    cut: list[tuple[tuple[int, int, str] | None, list[StoredLine]]] = []
    start, opening = 0, None
    for gap in gaps:
        end = bisect.bisect_right(ids, gap[0], lo=start)
        cut.append((opening, lines[start:end]))
        start, opening = end, gap
    cut.append((opening, lines[start:]))
    parts: list[tuple[list[StoredLine], int | None]] = []
    for before, part in reversed(cut):
        told = [] if before is None else [overflow_line(app, before[1], before[2])]
        parts.append((told + part, mark))
        if mark is not None:
            mark -= len(part) + (0 if before is None else before[1])
    parts.reverse()
    return parts


class Stopped(Exception):
    """The reader has stopped: end its stream now."""


class Reader:
    """The request reading a session. It stops when its client goes, when a newer request
    takes the session over, or when the server stops; whatever it is waiting for then
    (a client that does not read, a slow query) is abandoned."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.stopped = asyncio.Event()
        self.cursor = 0
        """The id of the last line this reader sent, or where its history ended."""
        self.told = 0
        """The last event id sent: where the client resumes if it reconnects."""
        self.told_at = 0.0
        """When the last event went (time.monotonic)."""
        self.marked: tuple[int, int] | None = None
        """An id and its mark (SQLiteStore.lines_through), for a session of one app: from a
        "mark" event herolog's client was sent, and sends back as it resumes."""
        self.wants_marks = False
        """The client asked for "mark" events (herolog's does; other clients get none)."""
        self.plain = False
        """The client asked for no events: the API turns them into text (plain_lines)."""

    def mark_of(self, position: int) -> int | None:
        return self.marked[1] if self.marked and self.marked[0] == position else None

    def told_of(self, event_id: int) -> None:
        """An event with ``event_id`` has been sent."""
        self.told, self.told_at = max(self.told, event_id), time.monotonic()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    async def until_stopped(
        self, awaitable: Awaitable[T], keepalive: Write | None = None, every: float = 0.0
    ) -> T:
        """The result of ``awaitable``, unless the reader stops first (Stopped). With
        ``keepalive``, calls it every ``every`` seconds while waiting."""
        task = asyncio.ensure_future(awaitable)
        if self.stopped.is_set():
            task.cancel()
            raise Stopped
        stop = asyncio.ensure_future(self.stopped.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {task, stop},
                    timeout=every if keepalive is not None else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if task in done:
                    return task.result()
                if stop in done:
                    task.cancel()
                    raise Stopped
                assert keepalive is not None
                await self.until_stopped(keepalive(b": keep-alive\n\n"))
        finally:
            stop.cancel()


def encode_event(
    lines: Sequence[StoredLine],
    event_id: int,
    *,
    as_json: bool,
    msgid: bool,
    plain: bool = False,
) -> bytes:
    """An SSE ``message`` event holding ``lines``: Heroku's text lines (each of a message's
    own lines its own ``data:`` field), or herolog's JSON records, one per ``data:``.
    ``plain``: for a client that gets the fields' text, not events (plain_lines): a
    carriage return, which ends an event stream's line, is kept as ``herolog logs`` keeps
    it, and the fields are split at newlines only."""
    out = [f"id: {event_id}\n"]
    for line in lines:
        if as_json:
            out.append(f"data: {encode_record(line, msgid=msgid)}\n")
        else:
            text = format_text(line)
            parts = text.split("\n") if plain else _NEWLINES.split(text)
            out.extend(f"data: {part}\n" for part in parts)
    out.append("\n")
    return "".join(out).encode("utf-8", "surrogateescape")


class Sessions:
    """The live log sessions of one server, and the broadcaster feeding their tails."""

    def __init__(
        self,
        store_path: Path,
        *,
        tail_buffer: int = TAIL_BUFFER,
        poll_interval: float = POLL_INTERVAL_S,
        broadcaster: Broadcaster | None = None,
        api_key: str | None = None,
    ) -> None:
        self.store_path = store_path
        self.api_key = api_key
        """Sessions are handed over only to a serve with the same API key (or none)."""
        self.ttl = SESSION_TTL_S
        self.tail_buffer = tail_buffer
        self.keepalive = KEEPALIVE_S
        self.broadcaster = broadcaster or Broadcaster(store_path, poll_interval)
        self._own_broadcaster = broadcaster is None
        self.closing = asyncio.Event()
        self._sessions: dict[str, LogSession] = {}
        self._readers: set[Reader] = set()

    def add(self, session: LogSession) -> None:
        self.expire()
        if len(self._sessions) >= MAX_SESSIONS:
            raise TooManySessions(f"too many open log sessions ({MAX_SESSIONS:,})")
        self._sessions[session.id] = session

    def get(self, session_id: str, secret: str) -> LogSession | None:
        self.expire()
        session = self._sessions.get(session_id)
        if session is None or not same_secret(_digest(secret), session.digest):
            return None
        return session

    def discard(self, session: LogSession) -> None:
        self._sessions.pop(session.id, None)

    def expire(self) -> None:
        deadline = time.monotonic() - self.ttl
        for session in list(self._sessions.values()):
            if session.reader is None and session.idle_since < deadline:
                del self._sessions[session.id]

    async def start(self) -> None:
        """Take the tail sessions the serve before this one kept in the store (close)."""
        try:
            records = await asyncio.to_thread(
                using_store, self.store_path, lambda store: store.take_log_sessions()
            )
        except (StoreError, sqlite3.Error, OSError) as error:
            print(
                f"herolog serve: cannot take over the tail sessions of the serve before: {error}",
                file=sys.stderr,
                flush=True,
            )
            return
        if not records:
            return
        taken = await asyncio.to_thread(_rebuilt, records, self.api_key)
        now, idle = time.time(), time.monotonic()
        for session, expires in taken:
            left = min(expires - now, self.ttl)
            if left > 0 and len(self._sessions) < MAX_SESSIONS:
                session.idle_since = idle - (self.ttl - left)
                self._sessions[session.id] = session

    async def stream(
        self, session: LogSession, write: Write, reader: Reader, last_event_id: int | None
    ) -> None:
        """Send the session to one reader: the history (or, for a tail session that is being
        resumed, what came after the last line sent), then new lines if it is a tail."""
        if self.closing.is_set():
            return
        if session.reader is not None:
            session.reader.stop()
        session.reader = reader
        session.used = True
        self._readers.add(reader)

        async def send(data: bytes) -> None:
            await reader.until_stopped(write(data))

        try:
            await send(f"retry: {RETRY_MS}\n\n".encode())
            if session.tail and last_event_id is not None:
                # An id past the newest line (from a store since replaced, say) would have
                # the tail wait for lines that may never come: go on from now instead.
                newest = await reader.until_stopped(asyncio.to_thread(_newest, self.store_path))
                reader.cursor = reader.told = min(last_event_id, newest)
            elif session.tail and session.last_sent is not None:
                reader.cursor = session.last_sent
            else:
                held, first, newest, oldest, mark = await reader.until_stopped(
                    asyncio.to_thread(_history, self.store_path, session), send, self.keepalive
                )
                if held is not None:
                    await self._send(session, reader, send, held)
                # A long one a part at a time, as `herolog logs` writes it: -n 2000000 held
                # 2 GB here.
                position = newest if first is None or held is not None else first - 1
                sent = bool(held)
                while position < newest:
                    lines, position, _ = await reader.until_stopped(
                        asyncio.to_thread(
                            _read_after, self.store_path, position, session.wanted,
                            session.created_at, None, newest, oldest,
                        ),
                        send,
                        self.keepalive,
                    )  # fmt: skip
                    await self._send(session, reader, send, lines)
                    sent = sent or bool(lines)
                # Tell the client where the history ended (id: 0 for an empty store), so
                # that it has an id to resume after.
                if reader.cursor != newest or not sent:
                    await self._tell(session, reader, send, newest, always=True)
                await self._mark(session, reader, send, newest, mark)
            if session.tail:
                await self._tail(session, send, reader)
            else:
                # A stream that ends without it was cut off (the server stopping): the
                # client can tell a whole history from part of one.
                await send(END_OF_HISTORY)
        except Stopped:
            pass
        finally:
            self._readers.discard(reader)
            if session.reader is reader:
                session.reader = None
                session.idle_since = time.monotonic()
                session.left_at = timestamps.to_instant(timestamps.now())
            if not session.tail:
                self.discard(session)  # single-purpose: its history has been read

    async def _tail(self, session: LogSession, send: Write, reader: Reader) -> None:
        wanted = session.wanted
        # A tail of one app that gets every line of it: its lines, and how many it lost,
        # are every line of the app's, from which the mark of each id it gets to follows.
        whole_app = wanted.app is not None and wanted == LineFilter(app=wanted.app)
        subscriber = Subscriber(wanted, self.tail_buffer, reader.wake, TAIL_BUFFER_BYTES)
        try:
            # Inside the try: a reader that stops while this waits is subscribed already.
            if await reader.until_stopped(self.broadcaster.subscribe(subscriber)) is None:
                return  # the server is stopping
            # Catch up from the store. The subscriber already buffers what the broadcaster
            # hands out meanwhile; if it had to drop some of that, read the store again.
            while True:
                subscriber.stale = False
                cursor = reader.cursor
                since = session.left_at or session.created_at
                mark = reader.mark_of(cursor)
                lines, last, mark = await reader.until_stopped(
                    asyncio.to_thread(_read_after, self.store_path, cursor, wanted, since, mark),
                    send,
                    self.keepalive,
                )
                # Of one app with nothing else asked, the last line read is the app's last
                # line up to ``last``: its mark is ``last``'s.
                await self._send(session, reader, send, lines, mark if whole_app else None)
                caught_up = last == cursor and not subscriber.stale
                if caught_up:
                    # Lines the catch-up looked at and did not want: the client resumes
                    # after them.
                    await self._tell(session, reader, send, reader.cursor)
                    if reader.told == reader.cursor:  # where the client resumes from now
                        mark = reader.mark_of(reader.cursor)
                        await self._mark(session, reader, send, reader.cursor, mark)
                    # Dropped (or skipped) while those were sent: read the store again.
                    if not subscriber.stale:
                        break
                    continue
                self._sent(session, reader, last)
                if mark is not None:
                    reader.marked = (last, mark)
            subscriber.live = True
            subscriber.floor = reader.cursor
            buffer = subscriber.buffer
            while buffer and buffer[0].id <= reader.cursor:
                subscriber.size -= _cost(buffer.popleft())
            # From here the mark of where the broadcaster has got to (past the floor) is
            # the floor's and every line handed over since: what a whole app's tail gets.
            base = reader.mark_of(reader.cursor) if whole_app and not subscriber.stale else None
            subscriber.counted = len(buffer)
            while not reader.stopped.is_set():
                timeout = self.keepalive
                if wanted.until is not None:
                    left = timestamps.seconds_until(wanted.until)
                    if left <= 0:
                        # Said, not only done: a client whose clock is behind the server's
                        # would take a stream that just ends for a drop, and reconnect.
                        await send(END_OF_TAIL)
                        return
                    timeout = min(timeout, left)
                try:
                    async with asyncio.timeout(timeout):
                        await reader.wake.wait()
                except TimeoutError:
                    if not buffer:
                        await send(b": keep-alive\n\n")
                reader.wake.clear()
                lines = subscriber.take()
                gaps, subscriber.gaps = subscriber.gaps, deque()
                # Every line up to it that this tail wants is in ``lines`` (or told dropped).
                passed = self.broadcaster.position
                mark = None
                if base is not None and passed >= subscriber.floor:
                    mark = base + subscriber.counted
                parts = _parted(wanted.app, lines, gaps, mark)
                if subscriber.dropped:
                    assert subscriber.dropped_since is not None
                    parts[0][0].insert(
                        0, overflow_line(wanted.app, subscriber.dropped, subscriber.dropped_since)
                    )
                    subscriber.dropped = 0
                for part, part_mark in parts:
                    await self._send(session, reader, send, part, part_mark)
                if await self._tell(session, reader, send, passed, every=PASSED_EVERY_S):
                    await self._mark(session, reader, send, passed, mark)
        finally:
            self.broadcaster.unsubscribe(subscriber)

    async def _send(
        self,
        session: LogSession,
        reader: Reader,
        send: Write,
        lines: Sequence[StoredLine],
        mark: int | None = None,
    ) -> None:
        """Send lines as SSE events of up to ``_EVENT_LINES`` lines (and about _EVENT_BYTES),
        each with the id of its own last line, so that a client reconnecting with
        Last-Event-ID resumes after it. ``mark`` is the last line's, where each line but an
        L11 is the app's next: each event's mark follows."""
        start = 0
        while start < len(lines):
            end, size = start + 1, len(lines[start].message)
            while end < len(lines) and end - start < _EVENT_LINES and size < _EVENT_BYTES:
                size += len(lines[end].message)
                end += 1
            part = lines[start:end]
            event_id = max((line.id for line in part), default=0) or reader.cursor
            await send(
                encode_event(
                    part,
                    event_id,
                    as_json=session.as_json,
                    msgid=session.msgid,
                    plain=reader.plain,
                )
            )
            reader.told_of(event_id)
            self._sent(session, reader, event_id)
            if mark is not None and part[-1].id:
                await self._mark(session, reader, send, event_id, mark - (len(lines) - end))
            start = end

    async def _tell(
        self,
        session: LogSession,
        reader: Reader,
        send: Write,
        line_id: int,
        *,
        always: bool = False,
        every: float = 0.0,
    ) -> bool:
        """Give the client ``line_id`` to resume after (an event without lines), unless
        it has a later one, or had an event less than ``every`` seconds ago: every line up
        to it that the session wants has been sent. Whether it was given."""
        told = always or (line_id > reader.told and time.monotonic() - reader.told_at >= every)
        if told:
            await send(f"id: {line_id}\n\n".encode())
            reader.told_of(line_id)
        self._sent(session, reader, line_id)
        return told

    @staticmethod
    async def _mark(
        session: LogSession, reader: Reader, send: Write, line_id: int, mark: int | None
    ) -> None:
        """Give herolog's client ``line_id``'s mark, to send back with it as it resumes: with
        it, what the ring buffer trimmed meanwhile is counted as the app's lines alone."""
        if mark is not None and session.tail and session.wanted.app is not None:
            reader.marked = (line_id, mark)
            if reader.wants_marks:
                await send(f"event: mark\ndata: {line_id} {mark}\n\n".encode())

    @staticmethod
    def _sent(session: LogSession, reader: Reader, line_id: int) -> None:
        reader.cursor = max(reader.cursor, line_id)
        if session.reader is reader:  # a reader that was taken over says nothing
            session.last_sent = reader.cursor

    async def close(self) -> None:
        """End every stream (a server that is stopping must not wait on tails)."""
        if self.closing.is_set():
            return
        self.closing.set()
        for reader in list(self._readers):
            reader.stop()
        for _ in range(100):  # give the streams a moment to end their responses
            if not self._readers:
                break
            await asyncio.sleep(0.01)
        await self._hand_over()
        if self._own_broadcaster:
            await self.broadcaster.close()

    async def _hand_over(self) -> None:
        """Keep the tail sessions in the store for the next serve on it: each expires there
        as it would have here, ``ttl`` after its last reader went."""
        self.expire()
        tails = [session for session in self._sessions.values() if session.tail]
        if not tails:
            return
        now, idle = time.time(), time.monotonic()
        left_at = timestamps.to_instant(timestamps.now())
        expiring = [
            (session, now + self.ttl - (0.0 if session.reader else idle - session.idle_since))
            for session in tails
        ]
        salt = secrets.token_bytes(16)
        fingerprint = await asyncio.to_thread(_key_fingerprint, self.api_key, salt)
        records = _records(expiring, left_at, salt, fingerprint)
        try:
            await asyncio.to_thread(
                using_store, self.store_path, lambda store: store.keep_log_sessions(records)
            )
        except (StoreError, sqlite3.Error, OSError) as error:
            them = (
                "the tail session for the next serve (its reader will find it gone)"
                if len(tails) == 1
                else f"the {len(tails):,} tail sessions for the next serve (their readers will"
                " find them gone)"
            )
            print(
                f"herolog serve: cannot keep {them}: {error}",
                file=sys.stderr,
                flush=True,
            )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _key_fingerprint(api_key: str | None, salt: bytes) -> str:
    # Slow to compute: the store keeps it, and an API key may be a weak password.
    key = (api_key or "").encode("utf-8")
    return hashlib.pbkdf2_hmac("sha256", key, salt, _KEY_ROUNDS).hex()


def _records(
    expiring: Sequence[tuple[LogSession, float]], left_at: str, salt: bytes, fingerprint: str
) -> list[tuple[str, str]]:
    """What rebuilds each session (and when it expires, a Unix time), as JSON."""
    records = []
    for session, expires in expiring:
        wanted = session.wanted
        record: dict[str, Any] = {
            "id": session.id,
            "digest": session.digest,
            "salt": salt.hex(),
            "key": fingerprint,
            "expires": expires,
            "app": wanted.app,
            "since": wanted.since,
            "until": wanted.until,
            "grep": [pattern.pattern for pattern in wanted.grep],
            "exclude": [pattern.pattern for pattern in wanted.exclude],
            "lines": session.lines,
            "json": session.as_json,
            "msgid": session.msgid,
            "created_at": session.created_at,
            "last_sent": session.last_sent,
            "left_at": left_at if session.reader else session.left_at,
        }
        if len(wanted.sources) <= 1 and all(len(names) == 1 for names in wanted.dynos):
            # Version 1, which a serve from before repeated filters reads too (downgraded to).
            record["version"] = 1
            record["source"] = wanted.sources[0] if wanted.sources else None
            record["dynos"] = [names[0] for names in wanted.dynos]
        else:
            record["version"] = 2
            record["sources"] = list(wanted.sources)
            record["dynos"] = [list(names) for names in wanted.dynos]
        records.append((session.id, json.dumps(record)))
    return records


def _rebuilt(records: Sequence[str], api_key: str | None) -> list[tuple[LogSession, float]]:
    """The sessions of :func:`_records` made with the same API key, with when each expires.
    Any other record is dropped."""
    fingerprints: dict[str, str] = {}
    rebuilt = []
    for text in records:
        try:
            record = json.loads(text)
            salt = record["salt"]
            if salt not in fingerprints:
                fingerprints[salt] = _key_fingerprint(api_key, bytes.fromhex(salt))
            version = record["version"]
            if version not in (1, 2) or not same_secret(record["key"], fingerprints[salt]):
                continue
            if not isinstance(record["digest"], str):
                continue
            if version == 1:  # no filter given twice (or a serve from before them wrote it)
                sources = [record["source"]] if record["source"] is not None else []
                dynos = [[name] for name in record["dynos"]]
            else:
                sources, dynos = record["sources"], record["dynos"]
            if not all(isinstance(names, list) for names in dynos):
                continue
            wanted = LineFilter(
                app=record["app"],
                sources=tuple(sources),
                dynos=tuple(tuple(names) for names in dynos),
                since=record["since"],
                until=record["until"],
                grep=tuple(compile_pattern(pattern) for pattern in record["grep"]),
                exclude=tuple(compile_pattern(pattern) for pattern in record["exclude"]),
            )
            session = LogSession(
                wanted,
                record["lines"],
                True,
                as_json=record["json"],
                msgid=record.get("msgid") is True,
                id=record["id"],
                secret="",
                digest=record["digest"],
                created_at=record["created_at"],
                last_sent=record["last_sent"],
                used=True,
                left_at=record["left_at"],
            )
            rebuilt.append((session, float(record["expires"])))
        except (ValueError, KeyError, TypeError, AttributeError, re.error, RecursionError):
            continue  # not one this herolog wrote
    return rebuilt


_History = tuple[list[StoredLine] | None, int | None, int, dict[int, int] | None, int | None]


def _history(store_path: Path, session: LogSession) -> _History:
    """The session's history as :func:`herolog.logs.find_history` finds it, and the mark of
    its newest id for a tail of one app."""

    def read(store: SQLiteStore) -> _History:
        held, first, newest, oldest = find_history(store, session.wanted, session.lines)
        app = session.wanted.app
        mark = store.lines_through(app, newest) if app is not None and session.tail else None
        return held, first, newest, oldest, mark

    return using_store(store_path, read)


def _newest(store_path: Path) -> int:
    return using_store(store_path, lambda store: store.newest_id())


def _read_after(
    store_path: Path,
    cursor: int,
    wanted: LineFilter,
    missed_since: str,
    mark: int | None,
    upto: int | None = None,
    oldest: dict[int, int] | None = None,
) -> tuple[list[StoredLine], int, int | None]:
    return using_store(
        store_path,
        lambda store: read_after(
            store, cursor, wanted, _READ_BATCH, missed_since, mark, upto, oldest
        ),
    )
