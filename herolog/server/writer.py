"""The intake's one writer: a thread of serve that stores what serve receives.

Each drain POST body goes, as it arrived, to the writer thread, which parses it (the one
shared parser), stores it and answers with what it stored. Syslog streams are parsed as
they are read, and their lines go to the writer parsed. Whatever arrived while it was
committing is committed together next (group commit), and every request waits for the
commit that covers it.

A thread, not a process: SQLite gives up the GIL while it works, so commits overlap the
event loop, and nothing is pickled or sent over a socket. A writer process cost more CPU a
request (87 µs against 74 for 1-frame bodies) and reached 0.7-0.8x the requests/s
(bench/findings.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from herolog.parser import FramingError, LogLine, Received, parse_logplex
from herolog.store import Batch, SQLiteStore, StoreError

HANDOFF_JOBS = 8
"""Jobs handed to the writer at once at most. Clients answered by one commit send their
next requests together, and serve reads them in one turn of its event loop; handed over
together, the writer would wait while serve reads them all, and serve would then wait for
their commit: the two would take turns. Handed over eight at a time, the writer commits
the first while serve reads the rest (bench/findings.md)."""
MAX_GROUP_JOBS = 2000
"""Jobs per transaction at most, so one huge group cannot hold the write lock for long."""
FRAME_ID_WINDOW_S = 3600
"""How long a Logplex-Frame-Id is remembered, so that a retried batch is not stored again
(Logplex retries within seconds)."""
FRAME_ID_MAX = 200_000
FRAME_ID_KEEP_S = 600
"""Ids older than this beyond the newest FRAME_ID_MAX are forgotten before the hour is up:
under a flood of batches the table holds ten minutes of them, not an hour, and every id is
still remembered for ten minutes."""
PRUNE_EVERY_S = 30.0
CHECKPOINT_EVERY_S = 1.0
WAL_RESTART_BYTES = 64 << 20
"""Past this, the writer restarts the WAL between commits (see SQLiteStore.restart_wal)."""


class WriterStopped(RuntimeError):
    """The writer is not running (shutting down or failed); retry later."""


class BadBody(ValueError):
    """A drain body that cannot be framed: nothing of it was stored."""


class Stored(NamedTuple):
    lines: int
    """Lines stored: 0 for a batch whose Frame-Id was seen before."""
    parsed: int
    """Lines in the input (for a stream chunk: completed by it)."""
    broken: str | None = None
    """For streams: why the stream cannot go on (what came before it is stored)."""


# Jobs, handed to the writer thread in lists:
#   (job_id, "body", app, attributes, frame_id, body)
#   (job_id, "lines", app, lines)        lines parsed already
#   (job_id, "probe")                    a write that stores no line (SQLiteStore.probe)
#   (0, "stop")
# Results, handed back in lists:
#   (job_id, "ok", (lines, parsed)), (job_id, "framing", message),
#   (job_id, "error", message)
Job = tuple[Any, ...]
Result = tuple[Any, str, Any]


def handle(store: SQLiteStore, jobs: list[Job]) -> tuple[list[Result], bool]:
    """Parse and store one group of jobs; (results, whether to stop)."""
    received = Received.at()
    results: list[Result] = []
    batches: list[Batch] = []
    waiting: list[tuple[int, int, int]] = []  # job, batch index, lines parsed
    stop = False
    for job in jobs:
        job_id, kind = job[0], job[1]
        if kind == "stop":
            stop = True
        elif kind == "body":
            _, _, app, attributes, frame_id, body = job
            try:
                lines = parse_logplex(body, received)
            except FramingError as error:
                results.append((job_id, "framing", str(error)))
                continue
            waiting.append((job_id, len(batches), len(lines)))
            batches.append(Batch(app, lines, attributes, frame_id))
        elif kind == "lines":
            _, _, app, rows = job
            waiting.append((job_id, len(batches), len(rows)))
            batches.append(Batch(app, rows))
        elif kind == "probe":
            try:
                store.probe()
            except Exception as error:
                results.append((job_id, "error", f"could not store: {error}"))
            else:
                results.append((job_id, "ok", (0, 0)))
    if batches:
        try:
            stored = store.append(batches, received)
        except Exception as error:  # each waiting request learns nothing was stored
            results += [(job_id, "error", f"could not store: {error}") for job_id, *_ in waiting]
        else:
            results += [
                (job_id, "ok", (stored[index], parsed)) for job_id, index, parsed in waiting
            ]
    return results, stop


class Writer:
    """Serve's store writer: a thread that stores the jobs the event loop hands it."""

    handle: Callable[[SQLiteStore, list[Job]], tuple[list[Result], bool]] = staticmethod(handle)
    """How a group of jobs is done (bench.pipeline_serve answers them without storing)."""

    def __init__(self, path: Path, history: int | None = None) -> None:
        self.path = path
        self.history: int | None = history
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[list[Job]] = queue.SimpleQueue()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._outbox: list[Job] = []
        self._next_id = 1
        self._accepting = False
        self._stopping = False
        self.failure: str | None = None
        """Why the store refused the last job it refused, until a later one succeeds."""
        self._probing: asyncio.Future[Stored] | None = None

    async def start(self) -> None:
        """Start the writer thread; raises StoreError if it cannot use the store."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[int] = loop.create_future()
        self._jobs = queue.SimpleQueue()  # nothing left from an earlier start
        self._thread = threading.Thread(
            target=self._run, args=(loop, opened), name="herolog store writer", daemon=True
        )
        self._thread.start()
        try:
            self.history = await opened
        except StoreError:
            await asyncio.to_thread(self._thread.join)
            raise
        self._accepting = True

    @property
    def running(self) -> bool:
        """Whether the writer is there to take work."""
        return self._accepting

    # Plain functions returning the future, not coroutines: a coroutine per request would
    # be one more frame to create and to resume on the intake's hot path.
    def write_body(
        self, app: str, body: bytes, attributes: dict[str, str] | None, frame_id: str | None
    ) -> asyncio.Future[Stored]:
        """Parse and store a Logplex body; BadBody if its framing is broken."""
        return self._submit("body", app, attributes, frame_id, body)

    def write_lines(self, app: str, lines: Sequence[LogLine]) -> asyncio.Future[Stored]:
        """Store lines parsed already (from a syslog stream)."""
        return self._submit("lines", app, lines)

    def probe(self) -> asyncio.Future[Stored]:
        """Write to the store without storing a line: whether it can take batches now (one
        probe at a time, however many ask)."""
        if self._probing is None or self._probing.done():
            self._probing = self._submit("probe")
        return self._probing

    async def stop(self) -> None:
        """Let the writer commit what it has, then end it."""
        self._stopping = True
        self._accepting = False
        if self._thread is None:
            return
        self._outbox.append((0, "stop"))
        self._flush()
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def _submit(self, kind: str, *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._accepting:
            future.set_exception(WriterStopped("the store writer is not running"))
            return future
        job_id = self._next_id
        self._next_id += 1
        self._pending[job_id] = future
        outbox = self._outbox
        outbox.append((job_id, kind, *args))
        if len(outbox) == 1:
            # What is submitted in this turn of the event loop goes over together...
            loop.call_soon(self._flush)
        elif len(outbox) >= HANDOFF_JOBS:
            # ...but no more than this many: see HANDOFF_JOBS.
            self._flush()
        return future

    def _flush(self) -> None:
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            self._jobs.put(outbox)

    def _receive(self, results: list[Result]) -> None:
        for job_id, status, value in results:
            future = self._pending.pop(job_id, None)
            if future is None or future.done():
                continue
            if status == "ok":
                self.failure = None
                future.set_result(Stored(*value))
            elif status == "framing":
                future.set_exception(BadBody(value))
            else:
                self.failure = value
                future.set_exception(StoreError(value))

    def _ended(self) -> None:
        """The writer thread has ended: what it had not answered fails."""
        self._accepting = False
        stopped = WriterStopped("the store writer stopped")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(stopped)
        self._pending.clear()

    # The writer thread.

    def _run(self, loop: asyncio.AbstractEventLoop, opened: asyncio.Future[int]) -> None:
        try:
            store = SQLiteStore.open(self.path)
            try:
                if self.history is not None and self.history != store.history:
                    store.set_history(self.history)
                # Checkpoints (which fsync) happen on their own connection and thread, so
                # commits do not stop for them every 1000 pages as they would by default.
                store.manual_checkpoints()
            except BaseException:
                store.close()
                raise
        except (StoreError, OSError, ValueError, sqlite3.Error) as error:
            _tell(loop, _settle, opened, StoreError(str(error)))
            return
        _tell(loop, _settle, opened, store.history)
        stopped = threading.Event()
        checkpointer = threading.Thread(
            target=_checkpoints, args=(self.path, stopped), name="herolog checkpoints", daemon=True
        )
        checkpointer.start()
        try:
            self._store_jobs(store, loop)
        finally:
            _tell(loop, self._ended)
            stopped.set()
            checkpointer.join()
            try:
                store.checkpoint()
            except sqlite3.Error as error:  # what is committed is safe in the WAL all the same
                _say(f"herolog serve: final checkpoint failed: {error}")
            store.close()

    def _store_jobs(self, store: SQLiteStore, loop: asyncio.AbstractEventLoop) -> None:
        next_prune = time.monotonic() + PRUNE_EVERY_S
        next_wal_check = time.monotonic() + CHECKPOINT_EVERY_S
        failing = False
        while True:
            jobs = self._jobs.get()
            with contextlib.suppress(queue.Empty):
                while len(jobs) < MAX_GROUP_JOBS:
                    jobs += self._jobs.get_nowait()
            try:
                results, stop = self.handle(store, jobs)
            except Exception as error:  # a bug: these requests fail, and the writer goes on
                _say(f"herolog serve: storing failed: {error!r}")
                results = [(job[0], "error", f"could not store: {error!r}") for job in jobs]
                stop = any(kind == "stop" for _, kind, *_ in jobs)
            # Said before the answers go: what a client learns from one is in the log already.
            failing = _report(store.path, results, failing)
            if results:
                _tell(loop, self._receive, results)
            if stop:
                return
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_S
                with contextlib.suppress(sqlite3.Error):  # a full disk: next time
                    store.forget_frame_ids(FRAME_ID_WINDOW_S, FRAME_ID_MAX, FRAME_ID_KEEP_S)
            if time.monotonic() >= next_wal_check:
                next_wal_check = time.monotonic() + CHECKPOINT_EVERY_S
                if store.wal_size() > WAL_RESTART_BYTES:
                    try:
                        store.restart_wal()
                    except sqlite3.Error as error:  # a reader held on too long: next time
                        _say(f"herolog serve: WAL restart failed: {error}")


def _say(message: str) -> None:
    """One line to serve's stderr, from a writer thread: a closed stderr (``serve 2>&1 |
    head``) must not stop the storing."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


def _tell(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Have the event loop run ``callback``: from the writer thread, the only way to touch
    its futures."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: serve is gone
        loop.call_soon_threadsafe(callback, *args)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _checkpoints(path: Path, stopped: threading.Event) -> None:
    """Checkpoint every second until stopped. A failure (a full disk, say) is reported and
    retried: with automatic checkpoints off, giving up would let the WAL grow for good."""
    store = SQLiteStore.open(path)
    failing = False
    try:
        while not stopped.wait(CHECKPOINT_EVERY_S):
            try:
                store.checkpoint()
            except sqlite3.Error as error:
                if not failing:
                    _say(f"herolog serve: checkpoint failed, retrying: {error}")
                failing = True
            else:
                failing = False
    finally:
        store.close()


def _report(path: Path, results: list[Result], failing: bool) -> bool:
    """Say once when storing starts failing (a full disk), and once when it works again;
    whether it is failing now."""
    error = next((value for _, status, value in results if status == "error"), None)
    if error is not None and not failing:
        _say(
            f"herolog serve: {error} (store {path}); drain POSTs get 503 so that they are"
            " retried, and syslog connections are closed, until it works again"
        )
    elif error is None and failing and any(status == "ok" for _, status, _ in results):
        _say(f"herolog serve: storing works again (store {path})")
        return False
    return failing or error is not None
