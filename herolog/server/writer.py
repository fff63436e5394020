"""The intake's one writer: a separate process that stores what serve receives.

Each drain POST body goes, as it arrived, to the writer process over a socket pair; the
writer process parses it (the one shared parser), stores it and answers with what it
stored. Syslog streams are parsed by serve as they are read (with the same parser), and
their lines go to the writer as plain tuples: the writer's core is what limits one fast
syslog connection, and parsing is half of what it would do with the bytes. Whatever
arrived while it was committing is committed together next (group commit), and every
request waits for the commit that covers it.

A process rather than a thread: SQLite gives up the GIL while it works, and a thread
waiting to get it back behind a busy event loop stalls on every statement (bench/ingest.py
measured several times fewer requests/s that way). Two processes share nothing but the
socket.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

from herolog.interrupt import stops_held
from herolog.parser import LogLine
from herolog.store import StoreError
from herolog.store_writer import HEADER, pack, say

HANDOFF_JOBS = 8
"""Jobs sent to the writer in one message at most. Clients answered by one commit send
their next requests together, and serve reads them in one turn of its event loop; sent as
one message, the writer would wait while serve reads them all, and serve would then wait
for their commit: the two processes would take turns. Sent eight at a time, the writer
commits the first while serve reads the rest: 1.36x and 1.43x the requests/s of one
message a turn, 1-frame bodies at 16 and 64 connections (bench/findings.md)."""


class WriterStopped(RuntimeError):
    """The writer is not running (shutting down or failed); retry later."""


class BadBody(ValueError):
    """A drain body that cannot be framed: nothing of it was stored."""


class BodyTooLarge(BadBody):
    """A drain body that would store too much: more lines than a body may hold, or lines
    that, each carrying the drain URL's query parameters, would store more than the body
    limit of them. Nothing of it was stored."""


class Stored(NamedTuple):
    lines: int
    """Lines stored: 0 for a batch whose Frame-Id was seen before."""
    parsed: int
    """Lines in the input (for a stream chunk: completed by it)."""
    broken: str | None = None
    """For streams: why the stream cannot go on (what came before it is stored)."""


# The protocol: length-prefixed pickles of lists. To the writer: jobs
#   (job_id, "body", app, attributes, frame_id, body, max_attributes)
#   (job_id, "lines", app, rows)        rows: parsed lines, see plain_rows
#   (job_id, "notice", app, body)       herolog's own notice (StoredLine.own), a Logplex body
#   (job_id, "probe")                   a write that stores no line (SQLiteStore.probe)
#   (0, "stop")
# From the writer: ("ready", history) or ("failed", message) once, then lists of results
#   (job_id, "ok", (lines, parsed)), (job_id, "framing", message),
#   (job_id, "too large", message), (job_id, "error", message)
# Only builtins cross the socket: the writer process runs as __main__. The framing and
# say() live in herolog.store_writer, which the writer process imports without the server.


def plain_rows(lines: Sequence[LogLine]) -> list[tuple[Any, ...]]:
    """Lines as a "lines" job carries them: plain tuples pickle several times faster than
    LogLine NamedTuples (which pickle as a call to their class, one per line)."""
    return list(map(tuple, lines))


STALL_S = 5.0
"""A writer that has left a job unanswered this long is stalled (a hung disk, another
program holding the store's lock): /healthz answers 503 and serve says so. Logplex gives up
on a request after 5 s."""
_WATCH_EVERY_S = 1.0


def _loaded_from_cwd() -> bool:
    """Whether this herolog is the current directory's (a checkout run as python -m herolog).
    Elsewhere the writer is started with -P: -m puts the current directory first on sys.path,
    and a folder named herolog there (a clone of another version) would be the writer."""
    try:
        return Path(__file__).resolve().parents[2] == Path.cwd().resolve()
    except OSError:  # the current directory was deleted
        return False


class Writer:
    """The serve side: starts the writer process and hands it work (asyncio)."""

    process_module = "herolog.store_writer"
    """What the writer process runs (``python -m``), speaking the protocol above."""

    def __init__(
        self, path: Path, history: int | None = None, max_attributes: int | None = None
    ) -> None:
        self.path = path
        self.max_attributes = max_attributes
        """Most bytes of attributes a body's lines may carry together (None: no limit)."""
        self.history: int | None = history
        """The store's history: the one asked for until the writer has started, then the
        one it reported."""
        self._set_history = history
        """What the writer sets the history to as it starts: only the first one does. One
        restarted later keeps what the store says, which `herolog store history` may have
        changed while serve ran."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: _Channel | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._outbox: list[tuple[Any, ...]] = []
        self._next_id = 1
        self._restarting: asyncio.Task[None] | None = None
        self._accepting = False
        self._stopping = False
        self.failure: str | None = None
        """Why the store refused the last job it refused, until a later one succeeds."""
        self._probing: asyncio.Future[Stored] | None = None
        self._oldest: int | None = None
        """The oldest job waiting for the writer when the watch last looked, and since when
        (watched once a second, so that the intake's requests pay nothing for it)."""
        self._oldest_since = 0.0
        self._stall_reported = False
        self._watch: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Start the writer process; raises StoreError if it cannot use the store."""
        ours, theirs = socket.socketpair()
        args = [
            sys.executable,
            *([] if _loaded_from_cwd() else ["-P"]),
            "-m",
            self.process_module,
            str(theirs.fileno()),
            str(self.path),
        ]
        if self._set_history is not None:
            args.append(str(self._set_history))
        # Started with them blocked, until it ignores them: a Ctrl-C reaching the whole job,
        # or systemd's stop reaching every process of the unit, would otherwise kill it
        # while Python starts and its imports run.
        with stops_held():
            self._proc = subprocess.Popen(args, pass_fds=[theirs.fileno()])
        theirs.close()
        loop = asyncio.get_running_loop()
        channel = self._channel = _Channel(loop, self._receive, self._writer_gone)
        await loop.create_unix_connection(lambda: channel, sock=ours)
        hello = await channel.hello
        if hello is None or hello[0] != "ready":
            await asyncio.to_thread(self._proc.wait)
            message = hello[1] if hello else f"the store writer exited with {self._proc.returncode}"
            raise StoreError(message)
        self.history = int(hello[1])
        self._set_history = None
        self._accepting = True
        if self._watch is None:
            self._watch = loop.call_later(_WATCH_EVERY_S, self._watch_for_stalls)

    @property
    def running(self) -> bool:
        """Whether the writer process is there to take work."""
        return self._accepting

    @property
    def stalled_for(self) -> float:
        """Seconds the oldest job waiting has waited (to within a second), once past
        STALL_S; 0 otherwise."""
        if self._oldest is None or self._oldest not in self._pending:
            return 0.0
        waited = asyncio.get_running_loop().time() - self._oldest_since
        return waited if waited >= STALL_S else 0.0

    def _watch_for_stalls(self) -> None:
        loop = asyncio.get_running_loop()
        oldest = next(iter(self._pending), None)  # jobs are added in order
        if oldest is None or oldest != self._oldest:
            if self._stall_reported:
                waited = loop.time() - self._oldest_since
                say(f"herolog serve: the store writer answers again, after {waited:.0f} s")
                self._stall_reported = False
            self._oldest, self._oldest_since = oldest, loop.time()
        else:
            self.report_stall()
        self._watch = (
            None if self._stopping else loop.call_later(_WATCH_EVERY_S, self._watch_for_stalls)
        )

    def report_stall(self) -> None:
        """Say on serve's log, once a stall, that the writer has stalled (past STALL_S). The
        watch looks every second; /healthz calls it too, so that no 503 it answers for a
        stall comes before the log says so."""
        if self._stall_reported or not (waited := self.stalled_for):
            return
        waiting = len(self._pending)
        requests = "request" if waiting == 1 else "requests"
        say(
            f"herolog serve: the store writer has not answered for {waited:.0f} s"
            f" ({waiting:,} {requests} waiting; /healthz answers 503 meanwhile)"
        )
        self._stall_reported = True

    # Plain functions returning the future, not coroutines: a coroutine per request would
    # be one more frame to create and to resume on the intake's hot path.
    def write_body(
        self, app: str, body: bytes, attributes: dict[str, str] | None, frame_id: str | None
    ) -> asyncio.Future[Stored]:
        """Parse and store a Logplex body; BadBody if its framing is broken,
        BodyTooLarge if it holds more lines than a body may, or its lines would carry more
        than ``max_attributes`` bytes of ``attributes``."""
        return self._submit("body", app, attributes, frame_id, body, self.max_attributes)

    def write_notice(self, app: str, body: bytes, own: bool) -> asyncio.Future[Stored]:
        """Store herolog's notice (a Logplex body of one line); ``own``: marked as herolog's
        own (StoredLine.own), which the app's drains are not sent."""
        if not own:
            return self.write_body(app, body, None, None)
        return self._submit("notice", app, body)

    def write_lines(self, app: str, lines: Sequence[LogLine]) -> asyncio.Future[Stored]:
        """Store lines parsed already (from a syslog stream)."""
        return self._submit("lines", app, plain_rows(lines))

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
        if self._watch is not None:
            self._watch.cancel()
            self._watch_for_stalls()  # a last look: a stall reported is told to be over
        if self._restarting is not None:
            await self._restarting
        if self._proc is None:
            return
        if self._channel is not None and self._proc.poll() is None:
            self._outbox.append((0, "stop"))
            self._flush()
        await asyncio.to_thread(self._proc.wait)
        if self._channel is not None:
            await self._channel.closed
            self._channel.close()
        self._proc = None

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
            # What is submitted in this turn of the event loop goes in one message...
            loop.call_soon(self._flush)
        elif len(outbox) >= HANDOFF_JOBS:
            # ...but no more than this many: see HANDOFF_JOBS.
            self._flush()
        return future

    def _flush(self) -> None:
        if self._outbox and self._channel is not None:
            outbox, self._outbox = self._outbox, []
            # A writer that has just died: its jobs fail with the others it had.
            self._channel.send(outbox)

    def _receive(self, results: list[tuple[Any, str, Any]]) -> None:
        for job_id, status, value in results:
            future = self._pending.pop(job_id, None)
            if future is None or future.done():
                continue
            if status == "ok":
                self.failure = None
                future.set_result(Stored(*value))
            elif status == "framing":
                future.set_exception(BadBody(value))
            elif status == "too large":
                future.set_exception(BodyTooLarge(value))
            else:
                self.failure = value
                future.set_exception(StoreError(value))

    def _writer_gone(self) -> None:
        unexpected = self._accepting
        self._accepting = False
        stopped = WriterStopped("the store writer stopped")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(stopped)
        self._pending.clear()
        if unexpected and not self._stopping:
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        """The writer process died (killed, out of memory): start another one.

        Requests meanwhile get 503, which Logplex retries; nothing they sent was half-stored.
        """
        assert self._proc is not None
        status = await asyncio.to_thread(self._proc.wait)
        say(f"herolog serve: the store writer exited with status {status}; restarting it")
        loop = asyncio.get_running_loop()
        began = loop.time()
        said = ""
        delay = 0.1
        tries = 0
        while not self._stopping:
            if self._channel is not None:
                self._channel.close()
            tries += 1
            try:
                await self.start()
            except (StoreError, OSError) as error:
                # Tried for as long as it takes: a reason is said when it is new, not at
                # every try, or the journal fills with it.
                if str(error) != said:
                    said = str(error)
                    say(
                        f"herolog serve: the store writer could not start ({error}); trying"
                        " again every few seconds, and saying so when it starts"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if said:
                waited = loop.time() - began
                say(
                    f"herolog serve: the store writer is running again, after {tries} tries"
                    f" in {waited:.0f} s"
                )
            return


class _Channel(asyncio.Protocol):
    """Serve's end of the socket to the writer process: length-prefixed pickles each way.

    A protocol rather than a stream reader: it is on the path of every drain POST, and
    callbacks cost less than a coroutine waiting for each message.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_results: Callable[[Any], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.hello: asyncio.Future[Any] = loop.create_future()
        """The writer's first message (None if it went away first)."""
        self.closed: asyncio.Future[None] = loop.create_future()
        self._on_results = on_results
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, value: Any) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(pack(value))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            message = pickle.loads(buffer[start + HEADER.size : end])
            start = end
            if not self.hello.done():
                self.hello.set_result(message)
            else:
                self._on_results(message)
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            self.hello.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)
            self._on_lost()
