"""Drain forwarding: every line ``herolog serve`` stores goes on to its app's drains.

Delivery works the way Logplex's does, and reports more: each drain
has a worker with a bounded buffer that the store's new lines are handed to without ever
waiting, so a dead, slow or failing drain holds up nothing but itself. When the buffer is
full the oldest lines go, are counted, and the drain is told with Heroku's L10 line, which
the app's own history gets too. HTTP(S) drains get octet-counted Logplex POSTs; syslog
drains one persistent TCP or TLS connection. What each drain has done is saved in the store,
where ``herolog drain list`` reads it.

Each drain also has a position in the store, saved with that state every second (once it has
passed a line of its app since, or its state changed otherwise) and as serve stops: every line
of its app up to it delivered or counted as dropped. A worker's position is just before the
oldest line it still holds, or has still to read back; with nothing held, the broadcaster's.
A worker that starts (serve starts, takes over, or gets a new drain) is told where its live
lines begin, and first catches up: it reads its app's lines between its position and there
from the store, a bounded piece at a time and holding nothing in the store between reads,
and delivers them before the live lines, which wait in its buffer under the usual limit.
Lines the ring buffer trimmed before it read them count as dropped (L10). So the lines
stored while no server forwarded are delivered; so is what a drain had not delivered when
serve stopped (its position stays before it: the lines are in the store, and Logplex's drop
at shutdown would lose them for nothing); and after a crash the next server resumes from the
last saved position: what was delivered in the second before may be delivered again, as may
a batch cut off in flight by a stop. Drops counted past the position (a buffer that
overflowed behind a batch in flight) are saved apart, so that a server resuming from it
counts those lines once; drops no L10 line has told the drain of yet are saved too, so that
the next server's first batch tells of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import functools
import os
import random
import re
import socket
import sqlite3
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TextIO
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

from herolog import __version__, drains, timestamps
from herolog.drains import is_overflow_notice
from herolog.parser import LOGPLEX_PRI, format_syslog, frame, own_line
from herolog.remote import RemoteError, trusting_context, usable_proxy
from herolog.render import counted
from herolog.server import tcp
from herolog.server.broadcast import Broadcaster, Skipped
from herolog.server.config import DrainTiming, url_host
from herolog.store import (
    NOTICE_HOST,
    Delivery,
    Drain,
    SQLiteStore,
    StoredLine,
    StoreError,
    owner_pid,
    process_exists,
    unstored,
    using_store,
)

HANDOFF_LINES = 2000
"""While a drain delivers, lines handed to it at once may briefly sit past its buffer: the
limit is applied to what is left when it takes its next batch, so a burst handed over in one
go costs nothing if the drain keeps up. This many more is the ceiling in between. While it
retries, the buffer is the buffer."""
BUFFER_BYTES = 32 << 20
"""A drain never holds more than about this many bytes of lines, whatever its buffer's
length (``serve --drain-buffer``)."""
ERROR_BODY_BYTES = 4096
BATCH_BYTES = 100_000
RELOAD_INTERVAL_S = 0.5
SAVE_INTERVAL_S = 1.0
DEFAULT_TIMING = DrainTiming()
LEASE_S = 10.0
MAX_MESSAGE = 10_000
"""A drain gets a longer message in pieces of at most this many bytes, as Heroku splits a
dyno's long lines (Logplex's own input refuses frames over 10 KB, and herolog's syslog
intake cuts one over 65 KiB to its first 65 KiB)."""
ACK_POLL_S = 0.02
"""A syslog drain looks this often, at the longest, whether the receiver has acknowledged a
batch it wrote (first after 1 ms, then twice as long each time)."""
CATCH_UP_LINES = 2000
CATCH_UP_BYTES = 1 << 20
"""A read of catch-up lines holds at most about this many lines and bytes of messages."""
FAILING_SAID_EVERY_S = 60.0
"""A drain's failing is said on serve's log at most once in this many seconds: a drain that
fails now and then (a receiver answering 429 or 503 to a batch in ten, delivered on the
retry) told every stretch and every recovery, two lines a batch, thousands an hour."""
CATCH_UP_READS = 1
"""Catch-up reads of the store running at once, of all the drains together: each builds its
lines in Python on a thread, and several at once held the GIL from the event loop and from
each other. 20 drains catching up on 100,000 lines each: serve's /healthz p99 5.5-6.2 ms
against 11-13 ms for reads on every free thread, and 1.2-1.8 times the batches delivered."""

Notice = Callable[[str, str], None]
"""Store a ``heroku[logplex]`` line with this message in this app's history."""


class DeliveryError(Exception):
    """A batch that was not delivered; ``retry`` says whether trying again can help."""

    def __init__(self, message: str, *, retry: bool, after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.after = after
        """Seconds the drain asked to be left alone for (its Retry-After), if it did."""


def logplex_line(app: str, message: str) -> StoredLine:
    return unstored(app, own_line("heroku", "logplex", message, LOGPLEX_PRI))


def overflow_message(dropped: int, since: str) -> str:
    """Logplex's L10 message; ``since`` is a :func:`timestamps.to_heroku` timestamp, given
    in whole seconds as Logplex gives it (and herolog's L11 line)."""
    shown = timestamps.logplex_seconds(since)
    return f"Error L10 (output buffer overflow): {dropped} messages dropped since {shown}."


def _cost(line: StoredLine) -> int:
    return len(line.message) + 100  # the header, roughly


def stop_report(dropped: int, left: int) -> str:
    """What serve's log says of a drain that stopped with lines it had not delivered."""
    parts = []
    if left:
        them = "them" if left != 1 else "it"
        parts.append(
            f"{counted(left, 'line')} not delivered yet: the next herolog serve on this store"
            f" sends {them}"
        )
    if dropped:
        overflowed = "dropped as its buffer overflowed (told with L10)"
        parts.append(f"{counted(dropped, 'line')} {overflowed}")
    return "; ".join(parts)


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count:,} times"


def backoff_limit(attempts: int, timing: DrainTiming) -> float:
    """The longest wait before retry number ``attempts``: doubling from the base, capped,
    however long the drain has been failing (the wait itself is jittered below this)."""
    return min(timing.backoff_cap_s, timing.backoff_base_s * 2.0 ** min(attempts - 1, 16))


def retry_after(value: str | None) -> float | None:
    """The seconds a Retry-After header asks for (a number of seconds, or an HTTP date);
    None for none, or one that is neither."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)  # however many digits: float takes them, where int may not
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def pieces(message: str) -> list[str]:
    """``message`` cut into pieces of at most MAX_MESSAGE bytes of UTF-8, never inside a
    character."""
    raw = message.encode()
    if len(raw) <= MAX_MESSAGE:
        return [message]
    cut_up = []
    while len(raw) > MAX_MESSAGE:
        cut = MAX_MESSAGE
        while 0x80 <= raw[cut] < 0xC0:  # a continuation byte: the character starts before
            cut -= 1
        # Nor after a \r: a frame ending in one goes without its closing newline, which a
        # receiver splitting bodies at newlines (Vector's heroku_logs) would miscount.
        while raw[cut - 1] == 0x0D and cut > MAX_MESSAGE // 2:
            cut -= 1
        cut_up.append(raw[:cut].decode())
        raw = raw[cut:]
    cut_up.append(raw.decode())
    return cut_up


def text_lines(message: str) -> list[str]:
    """``message`` split at its line ends (``\n`` or ``\r\n``), as Heroku's log router splits
    a dyno's output: without the line ends, and without a last empty line or the ``\r`` the
    message ends in. No line ends in ``\r`` (``a\r\r\n`` is ``a``): its frame would go
    without the closing newline that receivers splitting bodies at newlines count."""
    found = _LINE_END.split(message)
    if len(found) > 1 and not found[-1]:
        found.pop()
    found[-1] = found[-1].rstrip("\r")
    return found


_LINE_END = re.compile(r"\r*\n")


def _real(lines: Sequence[StoredLine]) -> int:
    """Lines of the app's, not herolog's own notices (id 0)."""
    return sum(1 for line in lines if line.id)


class _Handed:
    """Every line up to ``position`` has been handed over to the drains (those of other apps
    and of none too): every drain's position may pass the lines of no drain's."""

    position = 0


@dataclass
class _Tally:
    """Drops not told of yet, and when the first of them was."""

    count: int = 0
    since: str | None = None

    def add(self, count: int, since: str | None) -> None:
        if count > 0:
            if since is not None and (self.since is None or since < self.since):
                self.since = since
            self.count += count

    def take(self, keep: int = 0) -> tuple[int, str]:
        """The drops to tell of now, all but ``keep`` (and from when); they are told."""
        told = self.count - keep
        if told <= 0:
            return 0, ""
        self.count = keep
        since = self.since or timestamps.to_heroku(timestamps.now())
        if not keep:
            self.since = None
        return told, since


@dataclass
class _Pending:
    lines: list[StoredLine]
    frame_id: str
    attempts: int = 0
    data: bytes = b""
    """The batch as written (a syslog drain's, which may write it again)."""
    told: _Tally = field(default_factory=_Tally)
    """The drops the L10 line that opens the batch tells of (none: it has none)."""
    mark: tuple[int, int | None] | None = None
    """The id just before its first line read back from the store, and that id's mark."""


class DrainWorker:
    """Delivers one drain's lines in order, one batch at a time."""

    def __init__(
        self, drain: Drain, capacity: int, notice: Notice, timing: DrainTiming = DEFAULT_TIMING
    ) -> None:
        self.drain = drain
        self.capacity = capacity
        self.notice = notice
        self.timing = timing
        self.shown_url = drains.mask_url(drain.url)
        self.buffer: deque[StoredLine] = deque()
        """Live lines: those the broadcaster hands over as they are stored."""
        self.size = 0
        self.pending: _Pending | None = None
        self.backlog: deque[StoredLine] = deque()
        """Lines read back from the store while catching up, delivered before the buffer."""
        self.store_path: Path | None = None
        """Where catch-up reads from (the forwarder's store)."""
        self.reads = asyncio.Semaphore(CATCH_UP_READS)
        """Taken for each catch-up read: the forwarder gives its drains one to share."""
        self.delivered = drain.delivery.delivered
        # Drops past the saved position are of lines this worker meets again.
        self.dropped = drain.delivery.dropped - drain.delivery.dropped_ahead
        self.through = drain.delivery.through
        """Every line of the app up to this id has been delivered or dropped (monotonic)."""
        self.mark = drain.delivery.through_lines
        """The store's count of the app's lines up to ``through`` (SQLiteStore.lines_through),
        from which catching up counts exactly what was trimmed past it; None if not known."""
        self.live_after: int | None = None
        """Lines above this id are handed over live; None until the forwarder says."""
        self.read_through = self.through
        """Catch-up has read (or counted as trimmed) every line of the app up to this id."""
        self.read_mark = self.mark
        """``read_through``'s mark."""
        self._marks: deque[int | None] = deque()
        """The mark of the id before each line of the backlog."""
        self.seen = self.through
        """Every line of the app up to this id has been handed over."""
        self.handed = _Handed()
        """How far the forwarder has handed lines out, to every drain (its workers share it)."""
        self._skip_through = self.through
        """Lines up to this id are not the drain's: stored before it was added, or before
        the position it resumes from."""
        self._ahead = 0
        self._ahead_through = 0
        self.retrying = False
        saved = drain.delivery.last_error  # an older herolog's may hold escape sequences
        self.last_error = None if saved is None else drains.printable(saved)
        self.last_error_at = drain.delivery.last_error_at
        self.untold = _Tally(drain.delivery.untold, drain.delivery.untold_since)
        """Drops no L10 line has told the drain of: the next batch opens with one."""
        self.unnoticed = _Tally()
        """Drops no L10 line in the app's history has told of (this server's alone)."""
        self.wake = asyncio.Event()
        self.stopping = False
        self.hurried = False
        self._task: asyncio.Task[None] | None = None
        self.say: Callable[[str], None] = lambda message: None
        """Where the drain's failing and recovering are told (serve's log)."""
        self._failing = False
        self._failing_said = False
        """Whether serve's log told of this stretch of failures: then it tells of its end."""
        self._quiet_until = 0.0
        """Until then, a new stretch of failures is counted, not said (FAILING_SAID_EVERY_S)."""
        self._unsaid = 0
        """Stretches of failures begun since the last said, not said (the last may go on)."""
        self._unsaid_report: asyncio.TimerHandle | None = None
        self._announced = False
        self.passed_own = False
        """Lines of its app (herolog's own L10 lines too) were handed over or read back since
        its state was last saved: its position may have passed some."""

    @property
    def delivery(self) -> Delivery:
        through = self._reached()  # only reads: tests call it from another thread
        mark = self._mark(through)
        ahead = self._ahead if self._ahead_through > through else 0
        # Drops past the position are not told (the next server delivers those lines);
        # an L10 line on its way is, in case it never arrives.
        untold = _Tally()
        untold.add(self.untold.count - ahead, self.untold.since)
        for batch in [*self.held, self.pending]:
            if batch is not None:
                untold.add(batch.told.count, batch.told.since)
        return Delivery(
            self.delivered,
            self.dropped,
            self.retrying,
            self.last_error,
            self.last_error_at,
            through,
            ahead,
            untold.count,
            untold.since if untold.count else None,
            mark,
        )

    @property
    def undelivered(self) -> int:
        pending = _real(self.pending.lines) if self.pending else 0
        held = sum(_real(batch.lines) for batch in self.held)
        return len(self.buffer) + len(self.backlog) + pending + held

    @property
    def held(self) -> list[_Pending]:
        """Batches :meth:`deliver` took but the drain has not confirmed yet, oldest first: the
        position stays before them, and they count as delivered once confirmed."""
        return []

    def _forget_held(self) -> None:
        """Serve stops: what :attr:`held` holds is left to the next server."""

    @property
    def catching_up(self) -> bool:
        return self.live_after is not None and self.read_through < self.live_after

    def _position(self) -> int:
        """The newest id such that every line of the app up to it has been delivered or
        dropped: just before the oldest line still held or still to be read."""
        through = self._reached()
        if through != self.through:
            self.through, self.mark = through, self._mark(through)
        return self.through

    def _mark(self, position: int) -> int | None:
        """``position``'s mark, where the worker knows it: at its position as it was, before
        a line read back from the store, or where catching up has read to. Live lines'
        positions are looked up in the store as the state is saved (see learn_mark)."""
        if position == self.through:
            return self.mark
        for batch in [*self.held, self.pending]:
            if batch is not None and batch.mark and batch.mark[0] == position:
                return batch.mark[1]
        if self.backlog and self._marks and self.backlog[0].id - 1 == position:
            return self._marks[0]
        if position == self.read_through:
            return self.read_mark
        return None

    def learn_mark(self, position: int, mark: int | None) -> None:
        """The store's mark of ``position``, a position this worker has reached."""
        if mark is not None and position >= self.through and position == self._reached():
            self.through, self.mark = position, mark

    def _reached(self) -> int:
        """:meth:`_position`, without keeping it."""
        if self.live_after is None:
            return self.through
        oldest: int | None = None
        for batch in [*self.held, self.pending]:
            if batch is not None and oldest is None:
                oldest = next((line.id for line in batch.lines if line.id), None)
        if oldest is None and self.backlog:
            oldest = self.backlog[0].id
        if oldest is None and self.catching_up:
            oldest = self.read_through + 1
        if oldest is None and self.buffer:
            oldest = self.buffer[0].id
        seen = max(self.seen, self.handed.position)
        return max(self.through, seen if oldest is None else oldest - 1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"herolog-drain-{self.drain.token}")

    def follow(self, live_after: int) -> None:
        """Lines above ``live_after`` are handed over live from now on: the app's lines
        between the drain's position and there are read back from the store first."""
        self.live_after = live_after
        self.seen = max(self.seen, live_after)
        self.wake.set()

    def push(self, lines: Sequence[StoredLine]) -> None:
        if lines and lines[0].id <= self._skip_through:
            lines = [line for line in lines if line.id > self._skip_through]
        self.buffer.extend(lines)
        self.size += sum(_cost(line) for line in lines)
        self._limit(self.capacity if self.retrying else self.capacity + HANDOFF_LINES)
        self.wake.set()

    def skip(self, skipped: Skipped) -> None:
        """The broadcaster skipped lines: this drain's are dropped (L10), as its buffer
        drops lines, the skipped span being newer than anything it holds."""
        if self.live_after is None:
            return  # not following yet: it catches up from the store, skipped lines too
        above = max(self._skip_through, self.live_after)
        dropped = skipped.count(self.drain.app, above, notices=False)
        if dropped:
            self._overflow(dropped, skipped.through)
            self.wake.set()

    def _limit(self, lines: int) -> None:
        """Drop the oldest waiting lines past ``lines`` (or past the byte limit), counted."""
        buffer = self.buffer
        dropped = 0
        last = 0
        while buffer and (len(buffer) > lines or self.size > BUFFER_BYTES):
            line = buffer.popleft()
            self.size -= _cost(line)
            last = line.id
            dropped += 1
        self._overflow(dropped, last)

    def _overflow(self, dropped: int, last: int) -> None:
        """Count ``dropped`` lines, the newest of them ``last``, as dropped, for the next
        L10 line to tell of."""
        if dropped:
            now = timestamps.to_heroku(timestamps.now())
            self.untold.add(dropped, now)
            self.unnoticed.add(dropped, now)
            self.dropped += dropped
            # Dropped behind a batch still in flight (or lines still to catch up): after a
            # crash, the next forwarder meets these lines again, and must not count them twice.
            if last > self._position():
                if self._ahead_through <= self.through:
                    self._ahead = 0
                self._ahead += dropped
                self._ahead_through = max(self._ahead_through, last)

    async def stop(self, flush_timeout: float, *, tell: bool) -> tuple[int, int]:
        """Deliver what is left for up to ``flush_timeout`` seconds, then stop. What is
        still undelivered stays in the store for the next server: the drain's position stays
        before it (and lines the buffer dropped after it count as undelivered, not dropped:
        that server delivers them too), and the drops no L10 line has told the drain of are
        kept for that server's first batch to tell. Returns the lines the buffer dropped
        that no L10 line in the app's history has told of (with ``tell``, one does now), and
        the lines left undelivered."""
        self.stopping = True
        self.wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=0 if self.hurried else flush_timeout)
            if not self._task.done():
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if tell:
            self._say_unsaid()
        elif self._unsaid_report is not None:  # a drain removed: nothing more of it
            self._unsaid_report.cancel()
        await self.close()
        left = 0
        for batch in [*self.held, self.pending]:  # cut off: the L10 line opening it never arrived
            if batch is not None:
                self.untold.add(batch.told.count, batch.told.since)
        if self.live_after is not None:
            left = self.undelivered
            if self.catching_up and tell:
                left += await self._count_unread() or 0
            position = self._position()  # before what it is computed from goes
            if self._ahead_through > position:
                # Dropped behind a line still held: the next server reads them back from
                # the store with it and delivers them, so they are not dropped after all.
                self.dropped -= self._ahead
                self.untold.count = max(0, self.untold.count - self._ahead)
                self.unnoticed.count = max(0, self.unnoticed.count - self._ahead)
                left += self._ahead
                self._ahead = 0
            self.live_after = None
            self.pending = None
            self._forget_held()
            self.backlog.clear()
            self._marks.clear()
            self.buffer.clear()
            self.size = 0
        self.retrying = False
        unnoticed, since = self.unnoticed.take()
        if unnoticed and tell:
            self.notice(self.drain.app, overflow_message(unnoticed, since))
        return unnoticed, left

    def hurry(self) -> None:
        """Serve is stopping in a hurry (a second Ctrl-C): stop delivering now, or as soon
        as :meth:`stop` is called."""
        self.hurried = True
        if self.stopping and self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Release connections."""

    async def deliver(self, lines: Sequence[StoredLine], frame_id: str) -> None:
        """Send one batch; DeliveryError when it was not delivered."""
        raise NotImplementedError

    def encode(self, line: StoredLine) -> bytes:
        raise NotImplementedError

    one_line_frames = False
    """Whether each line of a message goes in a frame of its own, as Heroku's log router
    sends a dyno's output."""

    def messages(self, lines: Sequence[StoredLine]) -> list[bytes]:
        """The frames' messages for ``lines``: one a line, or more for a long one (or, with
        one_line_frames, for one of several lines)."""
        encode = self.encode
        found = []
        for line in lines:
            message = line.message
            if self.one_line_frames and ("\n" in message or message.endswith("\r")):
                texts = text_lines(message)
            elif len(message) <= MAX_MESSAGE // 4:  # no character is over 4 bytes
                found.append(encode(line))
                continue
            else:
                texts = [message]
            for text in texts:
                found.extend(encode(line._replace(message=piece)) for piece in pieces(text))
        return found

    def _next_batch(self) -> _Pending:
        # Drops past the position (live lines dropped while catching up) are not told yet:
        # a stop gives them back to the next server, which delivers them. They are told
        # once the position passes them, which makes them final.
        ahead = self._ahead if self._ahead_through > self._position() else 0
        # Held from the start: the drain's position must not pass the batch before it is
        # delivered, nor the buffer's limit below drop what the batch has taken.
        self.pending = batch = _Pending([], str(uuid.uuid4()))
        lines = batch.lines
        told, since = self.untold.take(keep=ahead)
        if told:
            batch.told = _Tally(told, since)
            lines.append(logplex_line(self.drain.app, overflow_message(told, since)))
        # The history's L10 line tells of this server's drops: one told before it stopped
        # is not told again.
        noticed, since = self.unnoticed.take(keep=min(ahead, self.unnoticed.count))
        if noticed:
            self.notice(self.drain.app, overflow_message(noticed, since))
        size = 0
        backlog = self.backlog
        if backlog:
            batch.mark = (backlog[0].id - 1, self._marks[0])
        while backlog and (size < BATCH_BYTES or not lines):
            line = backlog.popleft()
            self._marks.popleft()
            size += _cost(line)
            lines.append(line)
        buffer = self.buffer if not self.catching_up else deque()
        while buffer and (size < BATCH_BYTES or not lines):
            line = buffer.popleft()
            cost = _cost(line)
            self.size -= cost
            size += cost
            lines.append(line)
        self._limit(self.capacity)  # what waits behind this batch; L10 opens the next one
        return batch

    async def _run(self) -> None:
        while True:
            if self.pending is None:
                if self.live_after is None:  # the lines to catch up are not known yet
                    if self.stopping:
                        return
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                if not self.backlog and self.catching_up:
                    unread = await self._read_backlog(count=not self._announced)
                    if unread is not None:
                        self._announced = True
                        if unread:
                            unread_lines = counted(unread, "line")
                            self.say(f"drain {self._named}: catching up on {unread_lines}")
                    continue
                if not self.backlog and not self.buffer and not self.untold.count:
                    if self.stopping:
                        return
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                self.pending = self._next_batch()
            batch = self.pending
            try:
                await self.deliver(batch.lines, batch.frame_id)
            except DeliveryError as error:
                self._failed(str(error))
                if error.retry:
                    self.retrying = True
                    batch.attempts += 1
                    await self._backoff(batch.attempts, error.after)
                    continue
                self._refused(batch)
            except Exception as error:
                # Something no retry will mend (a URL the HTTP stack rejects, say): the
                # batch is dropped and the error shown, and the drain carries on.
                self._failed(f"{type(error).__name__}: {error}")
                self._refused(batch)
            else:
                if not any(held is batch for held in self.held):
                    self.delivered += _real(batch.lines)
                if self._failing:
                    self._failing = False
                    if self._failing_said:
                        self._failing_said = False
                        self.say(f"drain {self._named} delivers again")
            self.retrying = False
            self.pending = None

    def _refused(self, batch: _Pending) -> None:
        """The drain refused ``batch`` for good: its lines are dropped (the error tells of
        them), and the next batch tells again what the L10 line opening it told. An L10
        line alone is not sent again: a drain refusing everything would loop."""
        self.dropped += _real(batch.lines)
        if _real(batch.lines):
            self.untold.add(batch.told.count, batch.told.since)

    async def _read_backlog(self, *, count: bool = False) -> int | None:
        """Read the next of the app's lines to catch up from the store (lines the ring buffer
        has trimmed meanwhile count as dropped); nothing is held in the store between reads.
        With ``count``, also how many lines there are to catch up on in all (as
        :meth:`_count_unread` counts them), in the same opening of the store: a serve
        starting hundreds of drains opens it half as often before the first delivers."""
        assert self.live_after is not None
        assert self.store_path is not None
        app, after, upto, mark = self.drain.app, self.read_through, self.live_after, self.read_mark

        def read(
            store: SQLiteStore,
        ) -> tuple[list[StoredLine], int, tuple[int, int | None], int | None]:
            with store.snapshot():  # a trim between the two would count lines read as gone
                unread = drains.unaccounted(store, app, after, upto, mark) if count else None
                lines, through = store.app_lines(app, after, upto, CATCH_UP_LINES, CATCH_UP_BYTES)
                gap_through = lines[0].id - 1 if lines else through
                return lines, through, store.trimmed_past(app, after, gap_through, mark), unread

        try:
            async with self.reads:
                lines, through, (trimmed, mark), unread = await asyncio.to_thread(
                    using_store, self.store_path, read
                )
        except (sqlite3.Error, StoreError, OSError) as error:
            self._failed(f"cannot read the store to catch up: {error}")
            await asyncio.sleep(self.timing.backoff_cap_s)
            return None
        self.passed_own = self.passed_own or bool(lines)
        # Each line's mark: every line of the app's in the span was read (L10 lines too).
        for line in lines:
            if not is_overflow_notice(line):
                self.backlog.append(line)
                self._marks.append(mark)
            mark = None if mark is None else mark + 1
        self.read_through, self.read_mark = through, mark
        # Trimmed lines lie before the first line read, so behind the position it gives.
        self._overflow(trimmed, lines[0].id - 1 if lines else through)
        return unread

    async def _count_unread(self) -> int | None:
        """The app's lines that catch-up has yet to read (as at a stop), trimmed ones too;
        None if the store cannot say."""
        assert self.live_after is not None
        assert self.store_path is not None
        app, after, upto, mark = self.drain.app, self.read_through, self.live_after, self.read_mark

        def count(store: SQLiteStore) -> int:
            with store.snapshot():
                return drains.unaccounted(store, app, after, upto, mark)

        try:
            return await asyncio.to_thread(using_store, self.store_path, count)
        except (sqlite3.Error, StoreError, OSError):
            return None

    async def _backoff(self, attempts: int, asked: float | None = None) -> None:
        delay = backoff_limit(attempts, self.timing) * random.uniform(0.5, 1.0)
        if asked is not None:
            delay = max(delay, min(asked, self.timing.retry_after_cap_s))
        if self.stopping:  # flushing before exit: waiting longer would only be cut off
            delay = min(delay, 0.5)
        await asyncio.sleep(delay)

    def _failed(self, message: str) -> None:
        self.last_error = drains.scrub(message, self.drain.url)
        self.last_error_at = timestamps.to_instant(timestamps.now())
        if self._failing:  # once a stretch of failures, not once an attempt
            return
        self._failing = True
        now = time.monotonic()
        if now >= self._quiet_until:
            self._say_failing(f"is failing: {self.last_error}")
            return
        # Failing again soon after it was said: counted, and said once the interval is over.
        self._unsaid += 1
        if self._unsaid_report is None:
            loop = asyncio.get_running_loop()
            self._unsaid_report = loop.call_later(self._quiet_until - now, self._say_unsaid)

    def _say_failing(self, what: str) -> None:
        self._failing_said = True
        self._quiet_until = time.monotonic() + FAILING_SAID_EVERY_S
        self.say(f"drain {self._named} {what}")

    def _say_unsaid(self) -> None:
        """Say the stretches of failures held back (the interval is over, or serve stops)."""
        if self._unsaid_report is not None:
            self._unsaid_report.cancel()
            self._unsaid_report = None
        count, self._unsaid = self._unsaid, 0
        if not count:
            return
        if not self._failing:
            self._say_failing(
                f"failed again and delivered again {_times(count)} in the last minute"
                f" (last error: {self.last_error})"
            )
            self._failing_said = False  # those stretches are over: no end of them to tell
        elif count == 1:
            self._say_failing(f"is failing again: {self.last_error}")
        else:
            self._say_failing(
                f"is failing again: {self.last_error} (after failing and delivering again"
                f" {_times(count - 1)} in the last minute)"
            )

    @property
    def _named(self) -> str:
        return f"{self.drain.token} of app {self.drain.app} ({self.shown_url})"


class Surroundings(NamedTuple):
    """What an HTTP drain's client takes from its surroundings: the proxies the environment
    names and the certificates trusted. Read once for all the drains a reload makes: each
    read goes through the environment and stats the CA files, and making 2,000 drains took
    1.2 s of serve's start, 0.33 s with one read."""

    proxies: dict[str, str]
    trusted: ssl.SSLContext

    @classmethod
    def now(cls) -> Surroundings:
        import urllib.request

        return cls(urllib.request.getproxies_environment(), trusting_context())


class HTTPDrain(DrainWorker):
    """POSTs Logplex bodies, as Logplex does to HTTPS drains."""

    def __init__(
        self,
        drain: Drain,
        capacity: int,
        notice: Notice,
        timing: DrainTiming,
        surroundings: Surroundings,
    ) -> None:
        super().__init__(drain, capacity, notice, timing)
        import httpx

        parts = urlsplit(drain.url)
        netloc = url_host(parts.hostname or "", parts.port)  # without the credentials
        self.target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        # What errors name: the port connected to, given in the URL or not, as syslog's do.
        default = 443 if parts.scheme == "https" else 80
        self.peer = url_host(parts.hostname or "", parts.port or default)
        auth = None
        if parts.username is not None or parts.password is not None:
            # The bytes the user-info's escapes stand for, as curl sends them: a password in
            # another charset than UTF-8 (%E4 for a Latin-1 ä) must not become U+FFFD.
            auth = (unquote_to_bytes(parts.username or ""), unquote_to_bytes(parts.password or ""))
        try:  # chosen as curl and herolog's own commands choose it, loopback never proxied
            proxy = usable_proxy(drain.url, surroundings.proxies)
        except RemoteError as error:
            raise ValueError(str(error)) from None
        self.client = httpx.AsyncClient(
            proxy=None if proxy is None else proxy.url,
            trust_env=False,
            auth=auth,
            timeout=httpx.Timeout(timing.timeout_s, connect=min(5.0, timing.timeout_s)),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={
                "Content-Type": "application/logplex-1",
                "Logplex-Drain-Token": drain.token,
                "User-Agent": f"herolog/{__version__}",
            },
            follow_redirects=False,
            # The system's CAs (or $SSL_CERT_FILE's), as syslog+tls drains trust, not the
            # certifi bundle httpx trusts by default.
            verify=surroundings.trusted,
        )

    # Receivers of Logplex's HTTPS form, Vector's heroku_logs among them, split a body at
    # newlines and refuse (400) one whose count of lines is not Logplex-Msg-Count.
    one_line_frames = True

    def encode(self, line: StoredLine) -> bytes:
        return format_syslog(line)

    async def deliver(self, lines: Sequence[StoredLine], frame_id: str) -> None:
        import httpx

        messages = self.messages(lines)
        body = frame(messages)
        headers = {"Logplex-Msg-Count": str(len(messages)), "Logplex-Frame-Id": frame_id}
        try:
            request = self.client.build_request("POST", self.target, content=body, headers=headers)
            response = await self.client.send(request, stream=True)
        except httpx.ConnectTimeout:  # a host that is down or gone silent: said as such
            raise DeliveryError(f"cannot connect to {self.peer}: timed out", retry=True) from None
        except httpx.TimeoutException:  # sending, or waiting for the answer
            waited = f"{self.timing.timeout_s:g} s"
            raise DeliveryError(f"{self.peer} timed out ({waited})", retry=True) from None
        except httpx.ConnectError as error:  # its own words do not name the host
            reason = (
                _out_of_files(error)
                or _refusal(error)
                or _rejected_certificate(error)
                or _cut_handshake(error)
                or str(error)
                or type(error).__name__
            )
            raise DeliveryError(f"cannot connect to {self.peer}: {reason}", retry=True) from None
        except httpx.HTTPError as error:
            reason = str(error) or type(error).__name__  # a reset is a bare ReadError
            if isinstance(error, httpx.NetworkError | httpx.RemoteProtocolError):
                reason = f"connection to {self.peer} lost: {reason}"
            raise DeliveryError(reason, retry=True) from None
        status = response.status_code
        start = b""
        # The status is the drain's answer: an answer's body cut short or never finished
        # changes nothing (a 2xx retried would reach the drain twice, a 400 be sent again).
        with contextlib.suppress(httpx.HTTPError):
            try:
                if 200 <= status < 300:
                    # httpx keeps a connection for the next batch only once the answer has
                    # been read to its end; a drain that answers at length gets a new one.
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > ERROR_BODY_BYTES:
                            break
                else:
                    # Only the start of an error answer: a drain's reply must not cost memory.
                    async for chunk in response.aiter_bytes():
                        start += chunk
                        if len(start) >= ERROR_BODY_BYTES:
                            break
            finally:
                await response.aclose()
        if 200 <= status < 300:
            return
        reason = f"{status} {response.reason_phrase}".strip()
        text = start[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
        detail = text.splitlines()[0][:200] if text else ""
        message = f"{reason}: {detail}" if detail else reason
        retry = status == 429 or status >= 500
        after = retry_after(response.headers.get("retry-after")) if retry else None
        raise DeliveryError(message, retry=retry, after=after)

    async def close(self) -> None:
        await self.client.aclose()


class SyslogDrain(DrainWorker):
    """Octet-counted syslog over one persistent TCP or TLS connection."""

    def __init__(self, drain: Drain, capacity: int, notice: Notice, timing: DrainTiming) -> None:
        super().__init__(drain, capacity, notice, timing)
        parts = urlsplit(drain.url)
        self.tls = parts.scheme.lower() == "syslog+tls"
        self.host = parts.hostname or ""
        self.port = parts.port or drains.SYSLOG_TLS_PORT
        self.insecure = parts.fragment == "insecure"
        self.hostname = drain.token
        self.looped: str | None = None
        """Why its batches are dropped: it loops back (see loops_back)."""
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._listening: asyncio.Task[None] | None = None
        self._told_certificate = False
        self._unconfirmed: list[_Pending] = []
        """The batches written on this connection that :meth:`deliver` returned from before
        its receiver had acknowledged them (see held)."""
        self._resend: list[_Pending] = []
        """Batches of a connection given up that its receiver had not acknowledged: written
        first on the next one."""

    def encode(self, line: StoredLine) -> bytes:
        return format_syslog(line, self.hostname)

    async def _connect(self) -> asyncio.StreamWriter:
        if self._streams is not None:
            reader, writer = self._streams
            if not reader.at_eof() and not writer.is_closing():
                return writer
            await self.close()
        try:
            # Off the loop: once the system's CAs change, the next context loads them anew
            # (40 ms, in which serve would answer nothing).
            context = await asyncio.to_thread(trusting_context, self.insecure) if self.tls else None
            async with asyncio.timeout(self.timing.timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=context,
                    server_hostname=self.host if self.tls else None,
                )
        except ssl.SSLCertVerificationError as error:
            if not self._told_certificate:  # once per failing stretch, as Heroku does
                self._told_certificate = True
                self.notice(
                    self.drain.app,
                    f"Error L14 (certificate validation error): drain {self.drain.token}"
                    f" {url_host(self.host, self.port)}: {error.verify_message or error.reason}",
                )
            raise DeliveryError(_rejection(error), retry=True) from None
        except (OSError, TimeoutError, ssl.SSLError) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else str(error)
            cut = _cut_handshake(error) if self.tls else None
            reason = _out_of_files(error) or cut or reason
            message = f"cannot connect to {url_host(self.host, self.port)}: {reason}"
            raise DeliveryError(message, retry=True) from None
        self._told_certificate = False
        self._streams = (reader, writer)
        # A receiver may talk back (a greeting, an error a frame): left unread, what it said
        # keeps at_eof() false once it has closed, and the next batch would go into the
        # closed connection, lost.
        self._listening = asyncio.create_task(_ignore(reader))
        return writer

    @property
    def held(self) -> list[_Pending]:
        return [*self._resend, *self._unconfirmed]

    def _forget_held(self) -> None:
        self._resend, self._unconfirmed = [], []

    def _confirm(self) -> None:
        """The batches on this connection that were held are acknowledged: delivered."""
        self.delivered += sum(_real(batch.lines) for batch in self._unconfirmed)
        self._unconfirmed = []

    def loops_back(self) -> None:
        """Lines of this drain came back to this serve's syslog listener, which refuses them
        (the drain points at the serve that forwards it): its batches are dropped with why,
        where they were counted as delivered (its TCP took them) while none was stored."""
        self.looped = (
            "its lines come back to this herolog serve's syslog port, which refuses them:"
            " a drain must not point back at the server that forwards it"
        )

    async def deliver(self, lines: Sequence[StoredLine], frame_id: str) -> None:
        if self.looped is not None:
            raise DeliveryError(self.looped, retry=False)
        writer = await self._connect()
        batch = self.pending  # the worker delivers the batch it holds, and only that
        assert batch is not None
        batch.data = frame(self.messages(lines))
        resend, self._resend = self._resend, []
        self._unconfirmed += resend
        try:
            for each in [*resend, batch]:
                writer.write(each.data)
            async with asyncio.timeout(self.timing.timeout_s * 3):
                await writer.drain()
                # Written is not delivered: a receiver whose host died or whose network went
                # silent (no reset) leaves the bytes in the kernel's send queue, where they
                # were lost without a word while every later batch "succeeded" behind them.
                # So every batch before this one must have been acknowledged by the
                # receiver's TCP, and this one too unless more lines wait: then it is held
                # (see held) and the next batch's wait tells of it (a receiver delays its
                # acknowledgement up to 40 ms, and waiting for it before each batch cost a
                # drain at 55,000 lines/s a twentieth of its lines). Those not acknowledged
                # are sent again on a new connection.
                await _acknowledged(writer.transport, allowed=len(batch.data))
                self._confirm()
                if not await _acknowledged(writer.transport, unless=self._more_waiting):
                    self._unconfirmed = [batch]
        except (OSError, TimeoutError) as error:
            await self.close()  # the retry sends this batch again
            reason = "timed out" if isinstance(error, TimeoutError) else str(error)
            raise DeliveryError(f"connection lost: {reason}", retry=True) from None

    def _more_waiting(self) -> bool:
        return bool(self.buffer or self.backlog or self.catching_up)

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
            self._listening = None
        if self._streams is not None:
            writer = self._streams[1]
            if self._unconfirmed:  # a moment more for the held batches' acknowledgement
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(min(1.0, self.timing.timeout_s)):
                        await _acknowledged(writer.transport)
                        self._confirm()
            # Not acknowledged: written first on the next connection, or, as serve stops,
            # left to the next server.
            self._resend, self._unconfirmed = [*self._unconfirmed, *self._resend], []
            self._streams = None
            writer.close()
            try:
                async with asyncio.timeout(min(1.0, self.timing.timeout_s)):
                    await writer.wait_closed()
            except TimeoutError:
                # A peer that reads nothing would keep the connection, and the bytes it
                # has not taken, for ever.
                writer.transport.abort()
            except (OSError, ssl.SSLError):
                pass


def _moved_alone(state: Delivery, saved: Delivery) -> bool:
    """Whether a drain's ``state`` is the ``saved`` one but for its position."""
    return state._replace(through=saved.through, through_lines=saved.through_lines) == saved


def _refusal(error: BaseException) -> str | None:
    """Why each address of a drain refused its connection (``[Errno 111] Connection
    refused``), as a syslog drain's error says it, where httpx says only "All connection
    attempts failed" for a drain that is down, one whose network is unreachable and one
    behind a firewall that rejects alike; None if the error is not that."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and str(cause) == "All connection attempts failed":
            found = cause.__cause__ or cause.__context__
            each = found.exceptions if isinstance(found, BaseExceptionGroup) else (found,)
            reasons = [
                f"[Errno {x.errno}] {os.strerror(x.errno)}"
                for x in each
                if isinstance(x, OSError) and not isinstance(x, ssl.SSLError) and x.errno
            ]
            return "; ".join(dict.fromkeys(reasons)) or None
    return None


def _rejected_certificate(error: BaseException) -> str | None:
    """A receiver's certificate that failed verification, in the words a syslog+tls drain
    says it in, where httpx's were OpenSSL's own ('[SSL: CERTIFICATE_VERIFY_FAILED]
    certificate verify failed: ... (_ssl.c:1006)'); None if it is not that."""
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _rejection(cause)
    return None


def _rejection(error: ssl.SSLCertVerificationError) -> str:
    """What an https:// and a syslog+tls:// drain alike say of a certificate that failed."""
    return f"TLS certificate rejected: {error.verify_message or error.reason}"


def _cut_handshake(error: BaseException) -> str | None:
    """What to say of a TLS handshake that the receiver ended by closing or resetting the
    connection, as a port that takes no TLS does (a plain syslog one), where httpx says only
    "ConnectError" and asyncio raises a bare ConnectionResetError(); None if it is not that.
    A connection refused, or reset, before it opened is a ConnectionRefusedError."""
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLEOFError | ConnectionResetError | ConnectionAbortedError):
            return "the connection was closed during the TLS handshake (does the port take TLS?)"
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what caused it (or was being handled as it came), and so on back."""
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _out_of_files(error: BaseException) -> str | None:
    """What to say of a connection serve could not open for want of a file descriptor (the
    OSError behind ``error``, where httpx says only "All connection attempts failed"), or
    None: it is serve's limit that is reached, not the drain that is down, and one looking
    at the drain would find nothing wrong with it."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno in (errno.EMFILE, errno.ENFILE):
            return _OUT_OF_FILES[cause.errno]
        if isinstance(cause, socket.gaierror):
            # The resolver could not open its files (/etc/hosts, its socket to the name
            # server) either, which it tells as a name not known: is that it?
            try:
                os.close(os.open(os.devnull, os.O_RDONLY))
            except OSError as probe:
                return _OUT_OF_FILES.get(probe.errno or 0)
            return None
    return None


_OUT_OF_FILES = {
    errno.EMFILE: "serve is out of open files (raise its limit, ulimit -n)",
    errno.ENFILE: "the system is out of open files (raise fs.file-max)",
}


def _unacknowledged(transport: asyncio.WriteTransport) -> int:
    """Bytes written to a connection that its receiver has not acknowledged: those asyncio
    still holds and those in the kernel's send queue (where the system cannot say how many
    the kernel holds, only asyncio's). ConnectionError if the connection is gone: a reset
    empties the send queue of what it lost."""
    if transport.is_closing():
        raise ConnectionError("the connection was closed")
    held = int(transport.get_write_buffer_size())
    sock = transport.get_extra_info("socket")
    told = None if sock is None else tcp.sending(sock)
    if told is None:
        return held
    if not told.open:
        raise ConnectionError("the connection was reset")
    return held + told.unacknowledged


async def _acknowledged(
    transport: asyncio.WriteTransport, allowed: int = 0, unless: Callable[[], bool] = lambda: False
) -> bool:
    """Until the receiver has acknowledged every byte written to ``transport`` but the last
    ``allowed`` (over TLS, the kernel holds records, a little larger than what was written:
    a wait for every byte before a batch of ``allowed`` bytes waits for a little more), or
    ``unless`` says to wait no more; whether it has."""
    pause = 0.001
    while _unacknowledged(transport) > allowed:
        if unless():
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, ACK_POLL_S)
    return True


async def _ignore(reader: asyncio.StreamReader) -> None:
    """Read what a syslog receiver sends, to no purpose but seeing when it closes."""
    with contextlib.suppress(OSError):  # a reset, a TLS error (ssl.SSLError is one)
        while await reader.read(65536):
            pass


class UnusableDrain(DrainWorker):
    """A drain whose URL no worker can use (written into the store past the checks): each
    batch is dropped with the reason, as with any error no retry will mend."""

    def __init__(
        self, drain: Drain, capacity: int, notice: Notice, timing: DrainTiming, reason: str
    ) -> None:
        super().__init__(drain, capacity, notice, timing)
        self.reason = f"the drain URL cannot be used: {reason}"

    async def deliver(self, lines: Sequence[StoredLine], frame_id: str) -> None:
        raise DeliveryError(self.reason, retry=False)


def _made(
    new: Sequence[Drain], capacity: int, notice: Notice, timing: DrainTiming
) -> list[DrainWorker]:
    """The workers of ``new`` drains (worker_for), and what HTTP drains will load loaded:
    made off the event loop. (A syslog+tls drain takes its certificates as it connects, in
    a thread of its own.)"""
    workers = []
    surroundings = Surroundings.now()
    for drain in new:
        worker = worker_for(drain, capacity, notice, timing, surroundings)
        if isinstance(worker, HTTPDrain):
            _load_http_client()
        workers.append(worker)
    return workers


@functools.cache
def _load_http_client() -> None:
    """Load, once, what an HTTP drain's client loads only at its first request or close
    (httpcore's backend for asyncio, 0.02 s), with a client of a loop of this thread's own."""
    import httpx

    asyncio.run(httpx.AsyncClient(trust_env=False, verify=trusting_context()).aclose())


def worker_for(
    drain: Drain,
    capacity: int,
    notice: Notice,
    timing: DrainTiming,
    surroundings: Surroundings,
) -> DrainWorker:
    try:
        if urlsplit(drain.url).scheme.lower() in drains.HTTP_SCHEMES:
            return HTTPDrain(drain, capacity, notice, timing, surroundings)
        return SyslogDrain(drain, capacity, notice, timing)
    except ValueError as error:  # a bad port, say: one drain must not stop the server
        return UnusableDrain(drain, capacity, notice, timing, str(error))


class Forwarder:
    """Every drain of every app, kept in step with the registry in the store."""

    def __init__(
        self,
        store_path: Path,
        broadcaster: Broadcaster,
        store_notice: Callable[[str, bytes, bool], Awaitable[object]],
        *,
        capacity: int,
        timing: DrainTiming,
    ) -> None:
        self.store_path = store_path
        self.broadcaster = broadcaster
        self.store_notice = store_notice
        self._reads = asyncio.Semaphore(CATCH_UP_READS)
        self.capacity = capacity
        self.timing = timing
        self.log: TextIO | None = None
        """Where serve's log goes (the server sets it)."""
        self.workers: dict[str, DrainWorker] = {}
        self._by_app: dict[str, list[DrainWorker]] = {}
        self.tokens: frozenset[str] = frozenset()
        """The tokens of every drain of the store, whether or not this server forwards. A
        batch carrying one came from this store's own forwarding (by this server or another
        on the same store): stored, it would be forwarded again, for ever (the same app, or
        two apps draining into each other), and its lines are in the store already."""
        self._changed: int | None = None
        self._saved: dict[str, Delivery] = {}
        self._handed = _Handed()
        self._task: asyncio.Task[None] | None = None
        self._reloading: asyncio.Future[None] | None = None
        self._notices: set[asyncio.Task[object]] = set()
        self._subscribed = False
        self._hurried = False
        self.owner = f"{os.getpid()}.{id(self):x}"
        self.active: bool | None = None
        """Whether this server holds the forwarding lease (and so forwards)."""
        self._claimed_at = 0.0

    async def start(self) -> None:
        with contextlib.suppress(sqlite3.Error, StoreError, OSError):
            await self._claim()
        await self._reload()
        self._task = asyncio.create_task(self._keep_up(), name="herolog-forwarder")

    async def _claim(self) -> None:
        """Forward only while holding the store's forwarding lease: two servers on one
        store would otherwise deliver every line twice."""
        self._claimed_at = time.monotonic()
        holder = await self._lease(LEASE_S)
        active = holder is None
        if active != self.active:
            if active and self.active is False:
                self._say("this serve forwards this store's drains now")
            self.active = active
            self._changed = None  # reload the drains: start them, or stop them
            if not active:
                self._say(self._held_by(holder))

    @staticmethod
    def _held_by(holder: str | None) -> str:
        pid = owner_pid(holder) if holder else None
        if pid is not None and not process_exists(pid):
            # Killed (kill -9, the OOM killer): its lease has to run out first.
            return (
                f"the herolog serve that forwarded this store's drains (pid {pid}) ended"
                " without handing them over: this one forwards them once its lease on them"
                f" runs out, within {LEASE_S:.0f} s"
            )
        return (
            f"another herolog serve (pid {pid or '?'}) forwards this store's drains; this one takes"
            " over if that one stops"
        )

    def push(self, lines: Sequence[StoredLine]) -> None:
        by_app = self._by_app
        grouped: dict[str, list[StoredLine]] = {}
        for line in lines:
            if line.app in by_app:
                app_lines = grouped.setdefault(line.app, [])
                if not is_overflow_notice(line):
                    app_lines.append(line)
        for app, app_lines in grouped.items():
            for worker in by_app[app]:
                worker.passed_own = True
                if app_lines:
                    worker.push(app_lines)
        # What the broadcaster has handed out includes the lines of no drain's (herolog's
        # own L10, other apps'): every drain's position may pass them. Told once, to all:
        # telling each of 2,000 drains took 3 ms a batch stored, in the event loop.
        self._handed.position = max(self._handed.position, self.broadcaster.position)

    def skip(self, skipped: Skipped) -> None:
        for app, workers in self._by_app.items():
            if skipped.by_app.get(app):
                for worker in workers:
                    worker.passed_own = True
                    worker.skip(skipped)
        self._handed.position = max(self._handed.position, self.broadcaster.position)

    async def stop(self) -> None:
        """Forward what was stored, give the drains the timing's ``flush_s`` seconds to
        deliver it, then save where each stopped and say on the log what it left for the
        next server (and what its buffer dropped, which an L10 line in the app's history
        tells of too). Call it while the writer runs."""
        flush_timeout = self.timing.flush_s
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._reloading is not None:
            await asyncio.gather(self._reloading, return_exceptions=True)
        if self._subscribed:
            await self.broadcaster.catch_up()
            self.broadcaster.unsubscribe(self)
        workers = list(self.workers.values())
        if self.active and not await self._hold_through(flush_timeout):
            self._hurried = True  # another server forwards now: it delivers what is left
        if self._hurried:
            for worker in workers:
                worker.hurry()
        results = await asyncio.gather(
            *(w.stop(flush_timeout, tell=True) for w in workers), return_exceptions=True
        )
        for worker, result in zip(workers, results, strict=True):
            if isinstance(result, BaseException):
                result = (0, worker.undelivered)
            if self.log is not None and (report := stop_report(*result)):
                error = f" (last error: {worker.last_error})" if worker.last_error else ""
                print(
                    f"herolog serve: drain {worker.drain.token} of {worker.drain.app}"
                    f" ({worker.shown_url}): {report}{error}",
                    file=self.log,
                    flush=True,
                )
        await self._save(every=True)
        if self.active:
            with contextlib.suppress(sqlite3.Error, StoreError, OSError):
                await asyncio.to_thread(using_store, self.store_path, self._release_lease)
        # Last: the notices (the L10 lines just told of, say) are with the writer, which
        # commits them before it stops; a writer that does not answer must not keep the
        # drains' state unsaved or the forwarding lease held.
        await asyncio.gather(*self._notices, return_exceptions=True)

    async def _hold_through(self, flush_timeout: float) -> bool:
        """Renew the forwarding lease to outlast the flush (no renewals run meanwhile), so
        that no other server takes over and delivers the same lines while this one flushes;
        False if another holds it already. A store that cannot be written says nothing: the
        flush goes ahead on the lease as it stands."""
        try:
            holder = await self._lease(flush_timeout + LEASE_S)
        except (sqlite3.Error, StoreError, OSError):
            return True
        return holder is None

    async def _lease(self, seconds: float) -> str | None:
        """Take or renew the forwarding lease for ``seconds``: None, or the owner who holds
        it (see SQLiteStore.lease)."""
        return await asyncio.to_thread(
            using_store,
            self.store_path,
            lambda store: store.lease(drains.FORWARDING_LEASE, self.owner, seconds),
        )

    def loops_back(self, token: str) -> None:
        """This serve's syslog listener got a line of the drain ``token``: if this serve
        forwards it, the drain points back at it (see SyslogDrain.loops_back)."""
        for worker in self.workers.values():
            if worker.drain.token == token and isinstance(worker, SyslogDrain):
                worker.loops_back()

    def hurry(self) -> None:
        """A second Ctrl-C: the drains' flush stops now (or is skipped); what they have not
        delivered is left to the next server and reported, as ever."""
        self._hurried = True
        for worker in self.workers.values():
            worker.hurry()

    async def _keep_up(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            ticks += 1
            try:
                if time.monotonic() - self._claimed_at >= LEASE_S / 4:
                    await self._claim()
                # Shielded from a stop: a reload cut off between making a new drain's worker
                # and telling it where its live lines start left it unable to deliver any.
                self._reloading = asyncio.ensure_future(self._reload())
                await asyncio.shield(self._reloading)
                if ticks * RELOAD_INTERVAL_S >= SAVE_INTERVAL_S:
                    ticks = 0
                    await self._save()
            except (sqlite3.Error, StoreError, OSError):
                pass  # a store that is briefly unreadable: the drains keep going as they were
            except Exception as error:
                self._say(f"drain registry: {type(error).__name__}: {error}")

    def _release_lease(self, store: SQLiteStore) -> None:
        store.release_lease(drains.FORWARDING_LEASE, self.owner)

    def _say(self, message: str) -> None:
        if self.log is not None:
            print(f"herolog serve: {message}", file=self.log, flush=True)

    async def _reload(self) -> None:
        def read(store: SQLiteStore) -> tuple[int, list[Drain]] | None:
            changed = store.drains_changed()
            return None if changed == self._changed else (changed, store.drains())

        found = await asyncio.to_thread(using_store, self.store_path, read)
        if found is None:
            return
        changed, registered = found
        self.tokens = frozenset(drain.token for drain in registered)
        if not self.active:
            registered = []
        current = {drain.id: drain for drain in registered}
        for drain_id in list(self.workers):
            if drain_id not in current:
                # A drain removed, or forwarding handed over: its state is not saved
                # again, so no L10 line tells of what it had left either.
                await self.workers.pop(drain_id).stop(0, tell=False)
        new = [drain for drain in registered if drain.id not in self.workers]
        started = []
        # Off the event loop, which answers the intake meanwhile: each HTTP drain makes its
        # client and looks up its proxy and certificates (200 drains, 45 ms), and the first
        # drain of a kind loads what it needs (httpx and httpcore 0.15 s, the trusted
        # certificates 0.04 s).
        made = (
            await asyncio.to_thread(_made, new, self.capacity, self._notice, self.timing)
            if new
            else []
        )
        # Only now: a reload whose workers could not be made (serve out of open files) is
        # done again at the next look, not passed over as read until the drains change.
        self._changed = changed
        for worker in made:
            self._saved[worker.drain.id] = worker.drain.delivery  # as the store has it
            worker.handed = self._handed
            worker.say = self._say
            worker.store_path = self.store_path
            worker.reads = self._reads
            self.workers[worker.drain.id] = worker
            worker.start()
            started.append(worker)
        by_app: dict[str, list[DrainWorker]] = {}
        for worker in self.workers.values():
            by_app.setdefault(worker.drain.app, []).append(worker)
        self._by_app = by_app
        # Where each new drain's live lines start: it catches up to there from the store.
        live_after: int | None = self.broadcaster.position
        if self.workers and not self._subscribed:
            self._subscribed = True
            live_after = await self.broadcaster.subscribe(self)
        elif not self.workers and self._subscribed:
            self._subscribed = False
            self.broadcaster.unsubscribe(self)
        if live_after is not None:
            for worker in started:
                worker.follow(live_after)

    async def _save(self, *, every: bool = False) -> None:
        """Save the state of each drain that changed, but of those whose position alone moved,
        past lines of other apps only (``every``: those too, as serve stops)."""
        # Every drain's position passes every app's lines, but one that has met none of its
        # own since it was saved is as good where it was: its app has no line in between.
        # With thousands of drains, saving each every second cost as many writes (and a
        # look-up of each one's mark) whatever they got.
        changed: dict[str, Delivery] = {}
        for drain_id, each in self.workers.items():
            state, before = each.delivery, self._saved.get(drain_id)
            if before is None or (
                state != before and (every or each.passed_own or not _moved_alone(state, before))
            ):
                changed[drain_id] = state
                each.passed_own = False
        if not changed:
            return
        # Positions among the live lines, whose marks the store has: looked up before the
        # write (a mark, once known, holds), and not for a drain still catching up (a count
        # of every line it has yet to read).
        unmarked = {
            k: (self.workers[k].drain.app, v.through)
            for k, v in changed.items()
            if v.through_lines is None and not self.workers[k].catching_up
        }

        def save(store: SQLiteStore) -> bool:
            for drain_id, (app, through) in unmarked.items():
                mark = store.lines_through(app, through)
                changed[drain_id] = changed[drain_id]._replace(through_lines=mark)
            return store.save_deliveries(changed, lease=(drains.FORWARDING_LEASE, self.owner))

        saved = await asyncio.to_thread(using_store, self.store_path, save)
        for drain_id in unmarked:
            if (worker := self.workers.get(drain_id)) is not None:
                state = changed[drain_id]
                worker.learn_mark(state.through, state.through_lines)
        if saved:
            self._saved.update(changed)
        else:  # another server forwards now: claim again at the next tick, and stand down
            self._claimed_at = 0.0

    def _notice(self, app: str, message: str) -> None:
        """Store a ``heroku[logplex]`` line in the app's history, through the shared parser."""
        line = own_line("heroku", "logplex", message, LOGPLEX_PRI)
        body = frame([format_syslog(line, NOTICE_HOST)])
        # An L10 line tells the one drain that dropped lines, which gets its own at the head
        # of its next batch; an L14 line is the app's to forward, as Heroku's are.
        own = message.startswith("Error L10 ")
        task = asyncio.ensure_future(self.store_notice(app, body, own))
        self._notices.add(task)
        task.add_done_callback(self._stored)

    def _stored(self, task: asyncio.Future[object]) -> None:
        self._notices.discard(task)
        if not task.cancelled():
            # A notice the store refused (a full disk, which the writer reports): taken
            # here, or asyncio would log it as an exception never retrieved.
            task.exception()
