"""Handing newly stored lines to whoever wants them: tail sessions and drain forwarding."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

from herolog.filters import LineFilter
from herolog.store import SQLiteStore, StoredLine, StoreError

POLL_INTERVAL_S = 0.05
_READ_BATCH = 2000
HOLD_EVERY_S = 0.25
"""How often the store is told which lines have been handed out (so it may trim them)."""
HOLD_FOR_S = 30.0
MAX_BEHIND = 100_000
"""A broadcaster further behind the store's newest line than this (serve short of CPU
under a sustained intake) skips to the newest: its subscribers are told how many of their
lines it skipped, as drops (L10, L11), and stay live, as Logplex's buffers do."""


class Skipped:
    """Lines the broadcaster skipped, ids in (``after``, ``through``]: each subscriber
    counts those it would have been handed."""

    def __init__(
        self,
        after: int,
        through: int,
        by_app: Mapping[str, Sequence[int]],
        notices: Mapping[str, Sequence[int]],
    ) -> None:
        self.after = after
        self.through = through
        self.by_app = by_app
        """Each app's skipped ids, in order."""
        self.notices = notices
        """Of those, each app's own L10 lines of herolog's, in order."""

    def count(self, app: str | None, above: int = 0, *, notices: bool = True) -> int:
        """The skipped lines of ``app`` (of every app: None) with ids above ``above``;
        without ``notices``, herolog's own L10 lines not counted. By bisection: every drain
        of an app counts, hundreds of them in the event loop."""
        total = 0
        for name in self.by_app if app is None else [app]:
            total += _above(self.by_app.get(name, ()), above)
            if not notices:
                total -= _above(self.notices.get(name, ()), above)
        return total


def _with_forgotten(
    skipped: Skipped | None, after: int, through: int, forgotten: Mapping[str, Sequence[int]]
) -> Skipped | None:
    """``skipped`` (None: nothing skipped) with the ids of lines forgotten in (``after``,
    ``through``] before they were read added, as lines skipped."""
    if not forgotten:
        return skipped
    by_app: dict[str, Sequence[int]] = dict(forgotten)
    notices: Mapping[str, Sequence[int]] = {}
    if skipped is not None:
        notices = skipped.notices
        for app, ids in skipped.by_app.items():
            by_app[app] = sorted([*ids, *by_app[app]]) if app in by_app else ids
    return Skipped(after, through, by_app, notices)


def _above(ids: Sequence[int], above: int) -> int:
    """How many of ``ids``, in order, are over ``above``."""
    return len(ids) - bisect.bisect_right(ids, above)


class LineSink(Protocol):
    def push(self, lines: Sequence[StoredLine]) -> None:
        """Take new lines, in store order, without waiting: a sink must never hold up others."""
        ...


@runtime_checkable
class FilteredSink(Protocol):
    """A sink of the lines ``wanted`` passes (of its ``app``'s, with one), which the
    broadcaster chooses for it off the event loop."""

    wanted: LineFilter

    def push(self, lines: Sequence[StoredLine], chosen: Sequence[StoredLine] | None = None) -> None:
        """Take ``lines``, of which ``chosen`` are those ``wanted`` passes (None: not
        chosen yet)."""
        ...


class Broadcaster:
    """Reads lines as they are committed and hands them to every subscriber.

    Polls the store (a cheap ``data_version`` check) while anyone is subscribed, so lines
    from every writer show up: the server's own, ``herolog run``, ``herolog import``.
    :meth:`nudge` skips the wait when the server knows it has just committed something.
    """

    def __init__(
        self,
        store_path: Path,
        poll_interval: float = POLL_INTERVAL_S,
        max_behind: int = MAX_BEHIND,
    ) -> None:
        self.store_path = store_path
        self.poll_interval = poll_interval
        self.max_behind = max_behind
        self.position = 0
        """Every line up to this id has been handed out."""
        self._first = 0
        """Where handing out started: subscribers waiting for the start get what follows."""
        self.subscribers: set[LineSink] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="herolog-broadcast")
        self._store: SQLiteStore | None = None
        # The hold is a write, which waits its turn behind the store writer's commits (20 to
        # 50 ms under load): on a thread and connection of its own, reads do not wait for it.
        self._hold_executor = ThreadPoolExecutor(1, thread_name_prefix="herolog-trim-hold")
        self._hold_store: SQLiteStore | None = None
        self._hold_write: asyncio.Future[None] | None = None
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._nudged = asyncio.Event()
        self._reading = asyncio.Lock()  # one read-and-deliver at a time: no line twice
        self._closed = False
        self._held_at = 0.0
        self._holding: int | None = None
        self.owner = f"{os.getpid()}.{id(self):x}"
        """Who this broadcaster is to the store (its trim hold)."""
        self._hold_renewed = 0.0

    async def subscribe(self, subscriber: LineSink) -> int | None:
        """Start handing ``subscriber`` new lines: those with ids above the one returned
        (None once the broadcaster is closed)."""
        if self._closed:
            return None
        if self._task is None or self._task.done():
            self._started.clear()
            self._task = asyncio.create_task(self._run(), name="herolog-broadcaster")
        self.subscribers.add(subscriber)
        if self._started.is_set():
            return self.position
        await self._started.wait()
        return self._first

    def unsubscribe(self, subscriber: LineSink) -> None:
        self.subscribers.discard(subscriber)

    def nudge(self) -> None:
        self._nudged.set()

    async def catch_up(self) -> None:
        """Hand out everything committed so far, now (a server that is stopping), unless
        that is over ``max_behind`` lines: those wait in the store for the next server, whose
        drains catch up on them, rather than holding up the stop while they are read."""
        if self._task is None or self._task.done() or not self._started.is_set():
            return
        while True:
            self._version = None
            if not await self._read_and_deliver(skip=False):
                return

    async def close(self) -> None:
        """Stop handing out lines, release the trim hold, close the store and the threads
        (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        if self._hold_write is not None:
            await asyncio.gather(self._hold_write, return_exceptions=True)
        with contextlib.suppress(sqlite3.Error, StoreError, OSError):
            await loop.run_in_executor(self._hold_executor, self._release)
        await loop.run_in_executor(self._hold_executor, self._close_hold_store)
        self._hold_executor.shutdown(wait=False)
        await loop.run_in_executor(self._executor, self._close_store)
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = False
        while self.subscribers:
            try:
                if not started:
                    self.position = await loop.run_in_executor(self._executor, self._newest)
                    self._first = self.position
                    # In place before any line is read: lines are trimmed in the
                    # transaction that adds them.
                    self._held_at = time.monotonic()
                    await loop.run_in_executor(self._hold_executor, self._hold, self.position)
                    started = True
                    self._started.set()
                self._renew_hold(loop)
                self._nudged.clear()
                found = await self._read_and_deliver()
            except (sqlite3.Error, StoreError, OSError):
                # The store is briefly unreadable (replaced, locked for long): try again soon;
                # the subscribers carry on from where they were.
                await loop.run_in_executor(self._executor, self._close_store)
                await asyncio.sleep(self.poll_interval * 10)
                continue
            if not found:
                try:
                    async with asyncio.timeout(self.poll_interval):
                        await self._nudged.wait()
                except TimeoutError:
                    pass

    async def _read_and_deliver(self, *, skip: bool = True) -> bool:
        """Read what is new and hand it out (skipping to the newest line if over
        ``max_behind`` behind; without ``skip``, reading nothing then); whether there was
        anything."""
        async with self._reading:
            loop = asyncio.get_running_loop()
            filters = {s.wanted for s in self.subscribers if isinstance(s, FilteredSink)}
            lines, position, by_app, chosen, skipped = await loop.run_in_executor(
                self._executor, self._read_new, filters, skip
            )
            self.position = position
            if skipped is not None:
                for subscriber in list(self.subscribers):
                    tell = getattr(subscriber, "skip", None)
                    if tell is not None:  # a sink without it takes what is handed out
                        tell(skipped)
            if lines:
                self._hand_out(lines, by_app, chosen)
            return bool(lines) or skipped is not None

    def _hand_out(
        self,
        lines: list[StoredLine],
        by_app: dict[str, list[StoredLine]],
        chosen: dict[LineFilter, list[StoredLine]],
    ) -> None:
        for subscriber in list(self.subscribers):
            app = getattr(subscriber, "app", None)
            part = lines if app is None else by_app.get(app)
            if not part:
                continue
            if isinstance(subscriber, FilteredSink):
                # None for one subscribed during the read: it chooses them itself.
                subscriber.push(part, chosen.get(subscriber.wanted))
            else:
                subscriber.push(part)

    def _renew_hold(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move the hold up to the position every HOLD_EVERY_S, without waiting for it: a
        hold behind the position only keeps more lines for a while."""
        if self._hold_write is not None:
            if not self._hold_write.done():
                return
            if self._hold_write.exception() is not None:
                self._held_at = 0.0  # the store was briefly unwritable: again at once
            self._hold_write = None
        if time.monotonic() - self._held_at > HOLD_EVERY_S:
            self._held_at = time.monotonic()
            self._hold_write = loop.run_in_executor(self._hold_executor, self._hold, self.position)

    def _open(self) -> SQLiteStore:
        if self._store is None or self._store.replaced():
            self._close_store()
            self._store = SQLiteStore.open(self.store_path, create=False)  # see using_store
            self._version = None
        return self._store

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _open_for_holds(self) -> SQLiteStore:
        if self._hold_store is None or self._hold_store.replaced():
            self._close_hold_store()
            self._hold_store = SQLiteStore.open(self.store_path, create=False)
        return self._hold_store

    def _close_hold_store(self) -> None:
        if self._hold_store is not None:
            self._hold_store.close()
            self._hold_store = None

    def _hold(self, position: int) -> None:
        """Tell the store not to trim lines above ``position``, which have not been handed
        out yet; a write, so only when the position moved or the hold would lapse."""
        if self._holding != position or self._hold_renewed < time.monotonic():
            try:
                self._open_for_holds().hold_trim(self.owner, position, HOLD_FOR_S)
            except (sqlite3.Error, StoreError, OSError):
                self._close_hold_store()
                raise
            self._holding = position
            self._hold_renewed = time.monotonic() + HOLD_FOR_S / 3

    def _release(self) -> None:
        if self._holding is not None:
            self._open_for_holds().release_trim_hold(self.owner)
            self._holding = None

    def _newest(self) -> int:
        return self._open().newest_id()

    def _read_new(
        self, filters: Set[LineFilter], skip: bool = True
    ) -> tuple[
        list[StoredLine],
        int,
        dict[str, list[StoredLine]],
        dict[LineFilter, list[StoredLine]],
        Skipped | None,
    ]:
        """The lines that are new and where they end, those lines by app, the lines each
        of ``filters`` passes, and the lines skipped to get to them (see MAX_BEHIND)."""
        store = self._open()
        version = store.version()
        if version == self._version:
            return [], self.position, {}, {}, None
        start, skipped = self.position, None
        # One snapshot: a forget committed between the reads would have its lines read
        # and told as forgotten unread too.
        with store.snapshot():
            newest = store.newest_id()
            if newest - start > self.max_behind:
                if not skip:
                    return [], self.position, {}, {}, None
                # Counted, not read: ids alone cost a tenth of what reading the lines does.
                by_app_ids, notices = store.ids_between(start, newest)
                skipped = Skipped(start, newest, by_app_ids, notices)
                start = newest
            lines, position = store.after(start, LineFilter(), _READ_BATCH)
            read = len(lines) + (0 if skipped is None else skipped.count(None))
            if position - self.position > read:
                # Ids missing: lines trimmed or forgotten (store forget) before they were
                # read. Trims wait for the hold; a forget does not, and notes the lines.
                skipped = _with_forgotten(
                    skipped,
                    self.position,
                    position,
                    store.unread_forgotten(self.position, position),
                )
        if position == start:  # caught up: poll again only when something commits
            self._version = version
        # Sorted out here, not in the event loop: a subscriber with an ``app`` gets only
        # that app's lines, and each tail's filter takes 1 to 5 ms a read of 2,000 lines
        # (20 tails, 0.1 s in which the intake went unanswered).
        by_app: dict[str, list[StoredLine]] = {}
        for line in lines:
            by_app.setdefault(line.app, []).append(line)
        chosen = {
            wanted: [
                line
                for line in (lines if wanted.app is None else by_app.get(wanted.app, ()))
                if wanted.matches(line)
            ]
            for wanted in filters
        }
        return lines, position, by_app, chosen, skipped
