"""The store writer process that ``herolog serve`` starts: see :mod:`herolog.server.writer`.

python -m herolog.store_writer FD STORE [HISTORY]

Outside the server package, so that starting it (at every start of serve, and again after
a crash) imports the parser and the store, not uvicorn and the app.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import select
import signal
import socket
import sqlite3
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from herolog.faults import Fault
from herolog.interrupt import STOP_SIGNALS, write_nowhere
from herolog.parser import FramingError, Received, TooManyLines, parse_logplex
from herolog.store import Batch, SQLiteStore, StoreError

MAX_GROUP_JOBS = 2000
"""Jobs per transaction at most, so one huge group cannot hold the write lock for long."""
FRAME_ID_WINDOW_S = 3600
"""How long a Logplex-Frame-Id is remembered, so that a retried batch is not stored again
(Logplex retries within seconds)."""
FRAME_ID_MAX = 100_000
"""Ids beyond the newest this many are forgotten however young: the writer keeps them in
memory (SQLiteStore._frame_ids, about 160 bytes an id), which a flood of small batches
must not grow without bound. The issue asks for ten minutes or 100,000 ids; at 100 batches
a second (one Logplex drain posting one small batch at a time) this is 17 minutes, and at
the 20,000 a second of bench.ingest still 5 s, longer than Logplex's retries take."""
FRAME_ID_SLACK = FRAME_ID_MAX // 4
"""Ids held past FRAME_ID_MAX that have them pruned before PRUNE_EVERY_S is up (at most
every EARLY_PRUNE_S): at 20,000 batches a second, 30 s of ids would be six times
FRAME_ID_MAX."""
PRUNE_EVERY_S = 30.0
EARLY_PRUNE_S = 1.0
"""A prune that fails (a full disk) is not retried for every group."""
CHECKPOINT_EVERY_S = 1.0
WAL_RESTART_BYTES = 64 << 20
"""Past this, the writer restarts the WAL between commits (see SQLiteStore.restart_wal)."""
WAL_RESTART_WAIT_S = 0.2
"""How long a restart of the WAL waits for readers, holding up commits meanwhile."""
CHECKPOINT_TROUBLE_SAID_EVERY_S = 60.0
"""Checkpoints failing are said at most once in this many seconds: on a full disk they fail
and pass by turns (one with nothing to copy passes), and the WAL restarts, tried every
CHECKPOINT_EVERY_S while batches come, each said its failure, a line a second."""
RECV_BYTES = 1 << 20
MAX_BODY_LINES = 100_000
"""Lines a drain body may hold: Logplex posts about 100 KB at most (some 700 lines), and
herolog's own senders as much; a 5 MiB body of three-byte frames, 5 KB gzipped, held the
writer, and every other request's commit, for 15 s."""

HEADER = struct.Struct("!I")
"""Each message's length, before its pickle (both ways)."""


def pack(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def say(message: str) -> None:
    """One line to serve's stderr, which the writer process shares: if its reader has gone
    (``herolog serve 2>&1 | head``), storing goes on all the same."""
    try:
        print(message, file=sys.stderr, flush=True)
    except ValueError:
        pass
    except OSError:
        # What the failed write left in stderr's buffer would fail again as Python exits,
        # making the writer's status 120 (unless PYTHONUNBUFFERED is set).
        write_nowhere(sys.stderr)


class _Connection:
    """Blocking, length-prefixed messages over the socket to serve."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        # Received into, and copied out of: a fresh 1 MiB recv() buffer each time is an
        # mmap, a page fault, an mremap and a munmap for every group of jobs.
        self._incoming = memoryview(bytearray(RECV_BYTES))
        # poll, not select: serve may have handed over a descriptor numbered past 1023
        # (it has one per syslog connection), which select() cannot watch.
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def send(self, value: Any) -> None:
        self.sock.sendall(pack(value))

    def _message(self) -> Any:
        if len(self.buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self.buffer)
        if len(self.buffer) < HEADER.size + size:
            return None
        payload = bytes(self.buffer[HEADER.size : HEADER.size + size])
        del self.buffer[: HEADER.size + size]
        return pickle.loads(payload)

    def jobs(self) -> list[tuple[Any, ...]] | None:
        """The jobs that have arrived: waits for at least one, then takes whatever else is
        already there. None when serve has gone."""
        jobs: list[tuple[Any, ...]] = []
        while True:
            while (message := self._message()) is not None:
                jobs += message
            if jobs and (len(jobs) >= MAX_GROUP_JOBS or not self._poll.poll(0)):
                return jobs
            size = self.sock.recv_into(self._incoming)
            if not size:
                return jobs or None
            self.buffer += self._incoming[:size]


class _CheckpointTrouble:
    """The checkpointer's checkpoints and the writer's WAL restarts failing (a full disk: the
    WAL grows meanwhile), said once, and their working again, once it was said: at most once
    every CHECKPOINT_TROUBLE_SAID_EVERY_S, as they fail and pass by turns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fault = Fault(CHECKPOINT_TROUBLE_SAID_EVERY_S)

    def failed(self, what: str, error: sqlite3.Error) -> None:
        if self._fault.began():
            say(f"herolog serve: {what} failed, retrying: {error}")

    def worked(self) -> None:
        if self._fault.ended():  # as a full disk that was freed: the WAL stops growing
            say(f"herolog serve: checkpoints work again (store {self.path})")


def _checkpoints(
    path: Path, stopped: threading.Event, trouble: _CheckpointTrouble | None = None
) -> None:
    """Checkpoint every second until stopped. A failure (a full disk, say) is reported and
    retried: with automatic checkpoints off, giving up would let the WAL grow for good."""
    trouble = trouble or _CheckpointTrouble(path)
    store = SQLiteStore.open(path)
    try:
        while not stopped.wait(CHECKPOINT_EVERY_S):
            try:
                store.checkpoint()
            except sqlite3.Error as error:
                trouble.failed("checkpoint", error)
            else:
                trouble.worked()
    finally:
        store.close()


def _handle(store: SQLiteStore, jobs: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], bool]:
    """Parse and store one group of jobs; (results, whether to stop)."""
    received = Received.at()
    results: list[tuple[Any, ...]] = []
    batches: list[Batch] = []
    waiting: list[tuple[int, int, int]] = []  # job, batch index, lines parsed
    stop = False
    for job in jobs:
        job_id, kind = job[0], job[1]
        if kind == "stop":
            stop = True
        elif kind == "body":
            _, _, app, attributes, frame_id, body, max_attributes = job
            try:
                lines = parse_logplex(body, received, MAX_BODY_LINES)
            except FramingError as error:
                results.append((job_id, "framing", str(error)))
                continue
            except TooManyLines as error:
                results.append((job_id, "too large", _too_many_lines(error.limit)))
                continue
            # Every line stores the attributes whole: a body of tiny frames behind a long
            # query string would otherwise write thousands of times its size to the disk.
            if attributes and max_attributes is not None:
                attributes = json.dumps(attributes, ensure_ascii=False)
                each = len(attributes.encode())
                if each * len(lines) > max_attributes:
                    refusal = _attributes_too_large(len(lines), each, max_attributes)
                    results.append((job_id, "too large", refusal))
                    continue
            waiting.append((job_id, len(batches), len(lines)))
            batches.append(Batch(app, lines, attributes, frame_id))
        elif kind == "lines":
            _, _, app, rows = job
            waiting.append((job_id, len(batches), len(rows)))
            batches.append(Batch(app, rows))
        elif kind == "notice":
            _, _, app, body = job
            try:
                rows = parse_logplex(body, received, MAX_BODY_LINES)
            except (FramingError, TooManyLines) as error:  # framed by herolog: not met
                results.append((job_id, "framing", str(error)))
                continue
            waiting.append((job_id, len(batches), len(rows)))
            batches.append(Batch(app, rows, own=True))
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


def _too_many_lines(limit: int) -> str:
    return f"the body holds over {limit:,} lines, the most a body may: send smaller batches"


def _attributes_too_large(lines: int, each: int, limit: int) -> str:
    on = "the body's one line" if lines == 1 else f"each of the body's {lines:,} lines"
    return (
        f"the drain URL's query parameters ({each:,} bytes) on {on} come to over the"
        f" {limit:,}-byte limit: shorten the query string"
    )


def main(argv: list[str]) -> int:
    """``python -m herolog.store_writer FD STORE [HISTORY]``, started by serve."""
    connection = _Connection(socket.socket(fileno=int(argv[0])))
    try:
        store = SQLiteStore.open(Path(argv[1]))
        if len(argv) > 2 and int(argv[2]) != store.history:
            store.set_history(int(argv[2]))
        # Checkpoints (which fsync) happen on their own connection and thread, so commits
        # do not stop for them every 1000 pages as they would by default.
        store.manual_checkpoints()
    except (StoreError, OSError, ValueError, sqlite3.Error) as error:
        with contextlib.suppress(OSError):  # serve may have died meanwhile
            connection.send(("failed", str(error)))
        return 1
    # Before the first batch loads the ids into memory: a store upgraded from schema 9 may
    # hold ten minutes of them at any rate, millions.
    _prune_frame_ids(store)
    stopped = threading.Event()
    trouble = _CheckpointTrouble(Path(argv[1]))
    checkpointer = threading.Thread(
        target=_checkpoints, args=(Path(argv[1]), stopped, trouble), daemon=True
    )
    checkpointer.start()
    pruned_at = time.monotonic()
    next_prune = pruned_at + PRUNE_EVERY_S
    next_wal_check = time.monotonic() + CHECKPOINT_EVERY_S
    failing = False
    try:
        connection.send(("ready", store.history))
        while (jobs := connection.jobs()) is not None:
            results, stop = _handle(store, jobs)
            if results:
                connection.send(results)
            failing = _report(store.path, results, failing)
            if stop:
                break
            if store.frame_ids_held > FRAME_ID_MAX + FRAME_ID_SLACK:
                next_prune = min(next_prune, pruned_at + EARLY_PRUNE_S)
            if time.monotonic() >= next_prune:
                pruned_at = time.monotonic()
                next_prune = pruned_at + PRUNE_EVERY_S
                _prune_frame_ids(store)
            if time.monotonic() >= next_wal_check:
                next_wal_check = time.monotonic() + CHECKPOINT_EVERY_S
                if store.wal_size() > WAL_RESTART_BYTES:
                    try:
                        if store.restart_wal(WAL_RESTART_WAIT_S):  # a reader holds on: next time
                            trouble.worked()
                    except sqlite3.Error as error:
                        trouble.failed("WAL restart", error)
    except (BrokenPipeError, ConnectionResetError):
        pass  # serve went away
    finally:
        stopped.set()
        checkpointer.join()
        try:
            store.checkpoint()
        except sqlite3.Error as error:  # what is committed is safe in the WAL all the same
            say(f"herolog serve: final checkpoint failed: {error}")
        store.close()
    return 0


def _prune_frame_ids(store: SQLiteStore) -> None:
    """Forget the Frame-Ids the writer no longer keeps (FRAME_ID_WINDOW_S, FRAME_ID_MAX)."""
    with contextlib.suppress(sqlite3.Error):  # a full disk: the next prune
        store.forget_frame_ids(FRAME_ID_WINDOW_S, FRAME_ID_MAX)


def _report(path: Path, results: list[tuple[Any, ...]], failing: bool) -> bool:
    """Say once when storing starts failing (a full disk), and once when it works again;
    whether it is failing now."""
    error = next((value for _, status, value in results if status == "error"), None)
    if error is not None and not failing:
        say(
            f"herolog serve: {error} (store {path}); drain POSTs get 503 so that they are"
            " retried, and syslog connections are closed, until it works again"
        )
    elif error is None and failing and any(status == "ok" for _, status, _ in results):
        say(f"herolog serve: storing works again (store {path})")
        return False
    return failing or error is not None


if __name__ == "__main__":
    # The parent handles SIGINT/SIGTERM/SIGHUP and tells the writer to stop when its
    # requests are done; a Ctrl-C (or a closed terminal) reaching the whole process group
    # must not cut that short. Any that came while they were blocked is dropped here.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    sys.exit(main(sys.argv[1:]))
