"""The ring-buffer store: the newest lines of each app, in arrival order, in SQLite.

Commands use the :class:`Store` interface; :class:`SQLiteStore` is the one backend. A store
is one SQLite file in WAL mode, so one writer and any number of readers (other processes
included) work at once: readers never wait for the writer, and writers queue on a busy
timeout with ``BEGIN IMMEDIATE`` (up to BUSY_TIMEOUT_S, then "database is locked").
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sqlite3
import stat
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import countOf, itemgetter
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

from herolog import __version__
from herolog.filters import LineFilter
from herolog.interrupt import ctrl_c_ends_waits, ctrl_c_held, ctrl_c_recorded
from herolog.parser import MAX_PRI, LogLine, Received

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_HISTORY = 1500
"""Lines kept per app unless the store says otherwise: Logplex's own history."""
MAX_HISTORY = 10_000_000
SCHEMA_VERSION = 12
BUSY_TIMEOUT_S = 30.0
WAIT_STEP_S = 0.1
"""How long SQLite waits for the write lock at a time where a Ctrl-C must end the wait
(see SQLiteStore._begin_immediate): Python hears signals between its steps."""
LOCK_WAIT_SAID_AFTER_S = 1.0
"""How long a command waits for another process's write lock before it says so: a commit
of serve's or of another import takes milliseconds, a wait past this is a long holder's."""
TRIM_STEP = 100_000
"""The most lines one transaction of ``store history`` or ``store forget`` deletes: the
write lock is given up between steps (about 0.3 s each), where one transaction for an app
of 10,000,000 lines held it for 30 s and serve's intake answered 503 meanwhile."""
TRIM_PAUSE_S = 0.1
"""How long those commands leave the write lock free between steps: SQLite's wait for it
(serve's writer's) looks again every 100 ms, and would rarely find it free otherwise."""
FORWARDING_LEASE = "forwarding"
"""The store's lease held by the serve that forwards its drains (SQLiteStore.lease): every
herolog serve since schema 3 takes it as it starts and renews it while it runs."""
PROBE_BYTES = 1 << 20
_CLOCK_STEP_MIN_S = 1.0
"""How far the wall clock must get ahead of the monotonic one between two reads to be taken
for a step (NTP slews smaller errors)."""
_FIR_REST = "[0-9a-z]*-" + "[0-9a-z]" * 5
"""filters.FIR_DYNO_REST as a GLOB, with the two NOT GLOBs of _where."""

_APP_NAMESPACE = uuid.UUID("6f1c3c59-3a4e-4c4f-9a7e-2b8f4c1d9e10")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE apps (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    lines INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    time TEXT NOT NULL,
    source TEXT NOT NULL,
    dyno TEXT NOT NULL,
    message TEXT NOT NULL,
    pri INTEGER,
    hostname TEXT,
    structured_data TEXT,
    app_id INTEGER NOT NULL REFERENCES apps (id),
    attributes TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX lines_by_app ON lines (app_id, id);
"""
# Logplex-Frame-Ids of stored batches, so that a retried batch is not stored twice.
_FRAMES = """
CREATE TABLE frames (
    app_id INTEGER NOT NULL,
    frame_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (app_id, frame_id)
) WITHOUT ROWID;
CREATE INDEX frames_by_time ON frames (received_at);
"""
# Since schema 10 the ids are appended in arrival order: the random ids of a group landed
# on as many leaf pages of ``frames``, each written at COMMIT. A store looks them up in
# memory (see _FrameIds); ``meta.frame_ids_pruned`` is the row up to which they have been
# pruned, and ``meta.frame_ids_forgotten`` counts other deletions of them (forget_app), so
# that another process's memory follows both.
_FRAME_IDS = """
CREATE TABLE frame_ids (
    id INTEGER PRIMARY KEY,
    app_id INTEGER NOT NULL,
    frame_id TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX frame_ids_by_time ON frame_ids (received_at);
"""
_FRAMES_APPENDED = (
    _FRAME_IDS
    + """
INSERT INTO frame_ids (app_id, frame_id, received_at)
    SELECT app_id, frame_id, received_at FROM frames ORDER BY received_at;
DROP TABLE frames;
"""
)
# The drain registry: where each app's lines are forwarded. ``meta.drains_changed`` counts
# changes, so that a running server notices another process adding or removing a drain.
_DRAINS = """
CREATE TABLE drains (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    app_id INTEGER NOT NULL REFERENCES apps (id),
    url TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    retrying INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at TEXT,
    UNIQUE (app_id, url)
);
"""
# Each drain's position in the store: every line of its app up to ``through_id`` has been
# delivered or counted as dropped. ``dropped_ahead`` of the drops counted are of lines past
# it (a buffer's overflow behind a batch still in flight), which a forwarder resuming from
# the position meets again. An upgraded store's drains start at its newest line, as a new
# drain does. No line of an app above its ``trimmed_through`` has been trimmed: what a drain
# catching up has lost to the ring buffer lies below it.
_APP_TRIMS = """
ALTER TABLE apps ADD COLUMN trimmed_through INTEGER NOT NULL DEFAULT 0;
UPDATE apps SET trimmed_through = coalesce(
    (SELECT min(id) FROM lines WHERE lines.app_id = apps.id), 1) - 1;
"""
_DRAIN_POSITIONS = (
    """
ALTER TABLE drains ADD COLUMN through_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE drains ADD COLUMN dropped_ahead INTEGER NOT NULL DEFAULT 0;
UPDATE drains SET through_id = (SELECT coalesce(max(id), 0) FROM lines);
"""
    + _APP_TRIMS
)
# Drops no L10 line has told a drain of yet, with when the first of them was: the next server
# to forward it opens its first batch with that L10 (serve stopped before a batch could).
_DRAIN_UNTOLD = """
ALTER TABLE drains ADD COLUMN untold INTEGER NOT NULL DEFAULT 0;
ALTER TABLE drains ADD COLUMN untold_since TEXT;
"""
# How many of each app's lines have been trimmed, ever (since the store counted them): with
# trimming taking an app's oldest lines first, the count of the app's lines up to an id is
# this plus its lines kept up to there (see SQLiteStore.lines_through). A drain's
# ``through_lines`` is that count at its position (NULL where it is not known).
_TRIM_COUNTS = """
ALTER TABLE apps ADD COLUMN trimmed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE drains ADD COLUMN through_lines INTEGER;
"""
_UPDATE_APP = (
    "UPDATE apps SET lines = ?, trimmed_through = max(trimmed_through, ?), trimmed = trimmed + ?"
    " WHERE id = ?"
)
"""An app's line count after a write, how far its lines have been trimmed (0: no further
than before), and how many were trimmed."""
_SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
NOTICE_HOST = "herolog"
"""The HOSTNAME of the lines herolog writes itself, so they can be told from Heroku's."""
# herolog's own notices (L10 lines), a handful among millions: counting an app's lines that
# a drain has yet to deliver less these reads this index and the covering lines_by_app,
# instead of every line of the span (3.7 times as long for 2 million lines).
_NOTICES = f"""
CREATE INDEX lines_notices ON lines (app_id, id) WHERE hostname = '{NOTICE_HOST}';
"""
# Since schema 12 herolog's own notices are marked as such (own = 1) rather than told by
# their HOSTNAME and message: an L10 line of another herolog's, forwarded to this one by a
# drain, has both too, and is the app's like any other line, for its drains to hear of. In
# an older store, every such line was taken for this herolog's own, and still is.
_OLD_OWN = f"hostname = '{NOTICE_HOST}' AND substr(message, 1, 10) = 'Error L10 '"
_OWN_NOTICES = f"""
ALTER TABLE lines ADD COLUMN own INTEGER;
UPDATE lines SET own = 1 WHERE {_OLD_OWN};
DROP INDEX lines_notices;
CREATE INDEX lines_notices ON lines (app_id, id) WHERE own = 1;
"""
# RFC 5424's nil HOSTNAME, which herolog stored as the host name "-" before schema 7.
_NIL_HOSTNAMES = "UPDATE lines SET hostname = NULL WHERE hostname = '-'"
# RFC 5424's MSGID, which herolog dropped before schema 8 (adding a column rewrites no row).
_MSGIDS = "ALTER TABLE lines ADD COLUMN msgid TEXT"
# Each app's id in the Platform API (app_id of its name), so that an app is found by its id,
# and apps are paged by id, through an index: hashing every name took 0.1 s a lookup with
# 20,000 apps. Connections have app_id as herolog_app_id (see _connect).
_APP_IDS = """
ALTER TABLE apps ADD COLUMN api_id TEXT;
UPDATE apps SET api_id = herolog_app_id(name);
CREATE INDEX apps_by_api_id ON apps (api_id);
"""
# What brings a store from each older schema version to the next.
_MIGRATIONS = {
    1: _FRAMES,
    2: _DRAINS,
    3: _DRAIN_POSITIONS,
    4: _DRAIN_UNTOLD,
    5: _NOTICES,
    6: _NIL_HOSTNAMES,
    7: _MSGIDS,
    8: _TRIM_COUNTS,
    9: _FRAMES_APPENDED,
    10: _APP_IDS,
    11: _OWN_NOTICES,
}
# Column order: LogLine's fields, then (app_id, attributes, received_at), which a batch's
# lines share (see _insert_statement).
_INSERT = (
    "INSERT INTO lines (timestamp, time, source, dyno, message, pri, hostname, structured_data,"
    " msgid, app_id, attributes, received_at) VALUES "
)
_SETTINGS = (
    "SELECT (SELECT value FROM meta WHERE key = 'history'),"
    " (SELECT value FROM meta WHERE key = 'frame_ids_forgotten'),"
    " (SELECT value FROM meta WHERE key = 'frame_ids_pruned')"
)
"""What each write of lines reads first, in one statement (see _known_frame_ids): a third
of the time of ``key IN (...)``, which builds a table of the keys each time."""
_TEXT_COLUMNS = ("timestamp", "time", "source", "dyno", "message", "received_at")
_MESSAGE = "CAST(message AS TEXT)"
"""The message as the filters of :func:`_where` read it (see _SELECT)."""
_ROWS_PER_INSERT = 256
"""Lines per INSERT statement. One statement for many rows binds them all in C and then
runs without the GIL, where executemany takes the GIL back after every row: with another
busy Python thread in the process (the server's event loop) that is the difference between
thousands and hundreds of thousands of lines a second."""
# Each column as herolog writes it, whatever another program put there (the sqlite3 shell):
# a BLOB as the text of its bytes, a pri that is no syslog PRI (text, a fraction, out of
# range) as unknown. Text that is not UTF-8 is read by _reads_any_text. Counted in
# instructions (callgrind, 20,000 rows fetched), this costs 5.6% of a plain fetch; ifnull()
# of each NOT NULL column and a CASE for pri would have cost 8.9%.
_SELECT = (
    "SELECT lines.id, {name}, {timestamp}, {time}, {source}, {dyno}, {message},"
    f" iif(typeof(pri) = 'integer' AND pri BETWEEN 0 AND {MAX_PRI}, pri, NULL),"
    " {{hostname}}, {structured_data},"
    " {attributes}, {received_at}, {{msgid}}, {{own}}"
    " FROM {{{{lines}}}} JOIN apps ON apps.id = lines.app_id"
).format(
    name="CAST(apps.name AS TEXT)",
    **{c: f"CAST({c} AS TEXT)" for c in _TEXT_COLUMNS},
    **{c: f"CAST({c} AS TEXT)" for c in ("structured_data", "attributes")},
)
_SELECTS = {  # by schema version, which a reader does not upgrade
    12: _SELECT.format(hostname="CAST(hostname AS TEXT)", msgid="CAST(msgid AS TEXT)", own="own"),
    8: _SELECT.format(hostname="CAST(hostname AS TEXT)", msgid="CAST(msgid AS TEXT)", own=_OLD_OWN),
    7: _SELECT.format(hostname="CAST(hostname AS TEXT)", msgid="NULL", own=_OLD_OWN),
    0: _SELECT.format(hostname="nullif(CAST(hostname AS TEXT), '-')", msgid="NULL", own=_OLD_OWN),
}


SCAN_SHARE = 0.5
"""A filtered read of an app that holds this share of the store's lines or more is made by a
scan of the table, not through lines_by_app: the app's lines are most of its rows, and
looking each one up from the index costs more than reading past the other apps' (``--grep``
over an app of 2,000,000 lines alone in its store: 0.73 s through the index, 0.31 s by scan;
with as many lines of another app, 0.33 and 0.26 s). See SQLiteStore._lines."""


class StoreError(Exception):
    """The store file is unusable: not a database, from a newer herolog, not writable."""


class LeaseUnseen(StoreError):
    """An older herolog serve's lease of the store's drains is in force, and its process
    is not one this process can see: killed (its lease runs out by ``until``), or running
    where this one cannot see it (another container, where its pid may even be this
    one's, 1)."""

    def __init__(self, message: str, pid: int | None, until: str) -> None:
        super().__init__(message)
        self.pid = pid
        self.until = until


class HasDrains(Exception):
    """An app that drains forward, which forgetting it would leave with nothing to send."""

    def __init__(self, app: str, drains: int) -> None:
        super().__init__(app, drains)
        self.app = app
        self.drains = drains


class StoredLine(NamedTuple):
    """A line as the store holds it (a tuple: reading thousands of them must be cheap)."""

    id: int
    app: str
    timestamp: str
    time: str
    source: str
    dyno: str
    message: str
    pri: int | None
    hostname: str | None
    structured_data: str | None
    attributes: str | None
    """A JSON object as text, or None: decoded only by the outputs that show it."""
    received_at: str
    msgid: str | None = None
    """Where a record of ``herolog logs --server`` from an older server has none."""
    own: int | None = None
    """1 for herolog's own notices: the L10 lines it writes into the app's history for the
    one drain that dropped lines, which the app's drains are not sent."""


def unstored(app: str, line: LogLine) -> StoredLine:
    """``line`` in the form the store gives lines, for one that is shown, not stored."""
    return StoredLine(0, app, *line[:-1], None, line.time, line.msgid)


class Batch(NamedTuple):
    """Lines for one app, with the attributes every one of them carries."""

    app: str
    lines: Sequence[LogLine]
    attributes: Mapping[str, str] | str | None = None
    """Or, as text, the JSON object the store keeps: serve's writer has it already."""
    frame_id: str | None = None
    """Logplex-Frame-Id: a batch whose id the store has seen for this app is not stored."""
    own: bool = False
    """Whether these are herolog's own notices (StoredLine.own)."""


class OldestIds(dict[int, int]):
    """Each app's oldest kept line, by the app's own id (see SQLiteStore.oldest_ids), and how
    many apps the store had forgotten then."""

    forgotten = 0


class AppInfo(NamedTuple):
    name: str
    lines: int
    created_at: str


class Delivery(NamedTuple):
    """What a server has done for a drain: lines delivered and dropped (all time), whether
    it is retrying now, the last error with when it happened, and where in the store it is:
    every line of the drain's app up to ``through`` delivered or dropped, ``dropped_ahead``
    of the drops being of lines past it; and ``untold`` drops that no L10 line has told the
    drain of yet, the first of them at ``untold_since``."""

    delivered: int = 0
    dropped: int = 0
    retrying: bool = False
    last_error: str | None = None
    last_error_at: str | None = None
    through: int = 0
    dropped_ahead: int = 0
    untold: int = 0
    untold_since: str | None = None
    through_lines: int | None = None
    """:meth:`SQLiteStore.lines_through` the position: None where it is not known."""


class Drain(NamedTuple):
    """A registered drain: where an app's lines are forwarded."""

    id: str
    token: str
    app: str
    url: str
    created_at: str
    updated_at: str
    delivery: Delivery = Delivery()
    waiting: int | None = None
    """Lines of the app past the drain's position, neither delivered nor dropped yet (as of
    the position the server last saved); None where not counted."""


class DrainExists(StoreError):
    """The app already has a drain with this URL, or with one that is the same written
    another way: ``url``, as it was written."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class Store(Protocol):
    """What reading and appending lines need of a store (logs, import): the drain
    registry, leases and trim holds that serve uses are SQLiteStore's alone."""

    def append(self, batches: Iterable[Batch], received: Received | None = None) -> list[int]:
        """Store every batch in one transaction (all or nothing).

        Returns the lines stored of each batch: 0 for a batch whose Frame-Id was seen.
        """
        ...

    def last(self, wanted: LineFilter, count: int) -> tuple[list[StoredLine], int]:
        """The last ``count`` matching lines, oldest first, and the newest id in the store."""
        ...

    def first_of_last(self, wanted: LineFilter, count: int) -> tuple[int | None, int]:
        """The id of the oldest of the last ``count`` matching lines (None if none match)
        and the newest id in the store, in one snapshot: :meth:`after` reads those lines
        from there, a part at a time, where :meth:`last` holds them all at once."""
        ...

    def after(
        self, line_id: int, wanted: LineFilter, limit: int = 1000, upto: int | None = None
    ) -> tuple[list[StoredLine], int]:
        """Matching lines with ids above ``line_id`` (and at most ``upto``, an id the store
        has had), and the id to continue after."""
        ...

    def last_id_received_before(self, instant: str) -> int:
        """The newest id among lines received before ``instant`` (0 if none)."""
        ...

    def version(self) -> int:
        """A number that changes whenever another process may have added lines."""
        ...

    def trimmed_between(self, after: int, upto: int, app: str | None = None) -> int:
        """Lines with ids in (``after``, ``upto``] that the ring buffer has trimmed (of
        ``app``'s span, when given: exact for a store of one app, at most that otherwise)."""
        ...

    def trimmed_past(
        self, app: str, after: int, upto: int, mark: int | None
    ) -> tuple[int, int | None]:
        """``app``'s lines with ids in (``after``, ``upto``] that the ring buffer has trimmed,
        and the mark of ``upto``, given ``mark``, that of ``after`` (see
        :meth:`SQLiteStore.trimmed_past`)."""
        ...

    def oldest_ids(self) -> dict[int, int]:
        """The id of each app's oldest kept line, by the app's own id: where
        :meth:`trimmed_since` counts from."""
        ...

    def trimmed_since(self, oldest: Mapping[int, int], after: int, upto: int) -> int:
        """Lines with ids in (``after``, ``upto``] that were kept when :meth:`oldest_ids`
        gave ``oldest`` and have been trimmed since (see :meth:`SQLiteStore.trimmed_since`)."""
        ...

    def lines_through(self, app: str, upto: int) -> int | None:
        """A reader's mark of ``upto``, for counting what is trimmed past it (see
        :meth:`SQLiteStore.lines_through`)."""
        ...

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """Reads inside see one state of the store."""
        ...

    def replaced(self) -> bool:
        """Whether the store at this location is no longer the one that was opened."""
        ...

    def close(self) -> None: ...


class _FrameIds:
    """The Frame-Ids of a store's ``frame_ids`` table, in memory: by app id, each id with its
    row, each app's in the order of their rows (arrival order)."""

    def __init__(self, forgotten: str | None, pruned: int) -> None:
        self.by_app: dict[int, dict[str, int]] = {}
        self.size = 0
        self.through = pruned
        """Every row up to this one is here or pruned; a row added after it has a higher id."""
        self.forgotten = forgotten
        """``meta.frame_ids_forgotten`` as these were read."""
        self.pruned = pruned
        """``meta.frame_ids_pruned`` as these were pruned to."""

    def take(self, rows: Iterable[tuple[int, int, str]]) -> None:
        """Rows in id order, all after ``through``."""
        by_app = self.by_app
        for row_id, app_id, frame_id in rows:
            ids = by_app.get(app_id)
            if ids is None:
                ids = by_app[app_id] = {}
            if frame_id not in ids:
                self.size += 1
            ids[frame_id] = row_id
            self.through = row_id

    def prune(self, upto: int) -> None:
        """Drop the rows up to ``upto``: each app's first ones, so only those are visited."""
        for app_id, ids in list(self.by_app.items()):
            gone = []
            for frame_id, row_id in ids.items():
                if row_id > upto:
                    break
                gone.append(frame_id)
            self.size -= len(gone)
            if len(gone) == len(ids):
                del self.by_app[app_id]
            else:
                for frame_id in gone:
                    del ids[frame_id]
        self.pruned = max(self.pruned, upto)
        self.through = max(self.through, upto)


_UNDECODABLE = "Could not decode to UTF-8"
"""How Python's sqlite3 begins the error for a column whose text is not UTF-8."""
_UNCONVERTED = "user-defined function raised exception"
"""SQLite's error for a function of :func:`_searching`'s whose argument Python could not
convert (text that is not UTF-8): what the functions raise themselves is raised instead."""
_REPLACING = functools.partial(str, encoding="utf-8", errors="replace")


def _reads_any_text(
    method: Callable[Concatenate[SQLiteStore, P], T],
) -> Callable[Concatenate[SQLiteStore, P], T]:
    """A read of lines that reads text that is not UTF-8 (put there by another program: the
    intake stores U+FFFD for such bytes) as the intake would have, with U+FFFD, where Python's
    sqlite3 refuses the whole read: one such line stopped every reader of the store, serve's
    tails and drains too. Read again so, once one is met: a text_factory of Python's own
    would take 70% longer over every read."""

    @functools.wraps(method)
    def read(store: SQLiteStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(store, *args, **kwargs)
        except sqlite3.OperationalError as error:
            if store._lenient or not str(error).startswith((_UNDECODABLE, _UNCONVERTED)):
                raise
        try:  # set inside: a Ctrl-C between the two would leave the store lenient
            store._lenient = True
            store._db.text_factory = _REPLACING
            return method(store, *args, **kwargs)
        finally:
            store._lenient = False
            store._db.text_factory = str

    return read


class SQLiteStore:
    """A store in one SQLite file."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._history: int | None = None
        self._frame_ids: _FrameIds | None = None
        """Loaded by the first batch with a Frame-Id, and kept up to date by each one after."""
        self._clock_read: tuple[float, float] | None = None
        """The monotonic and wall clocks at the last :meth:`forget_frame_ids`."""
        self._clock_steps: list[tuple[float, float]] = []
        """When (monotonic) the wall clock was seen set forward since, and by how much."""
        self._identity = file_identity(path)
        self._ready = False
        self._immutable = False
        """Read as a file nothing writes (read-only file system, no writer then)."""
        self._lenient = False
        """Reading text that is not UTF-8 (see _reads_any_text)."""
        self.lock_wait: Callable[[float], object] | None = None
        """Called between the steps of a wait for another process's write lock with the
        seconds waited (see :meth:`_begin_immediate`), to say that the command waits; what it
        raises ends the wait before BUSY_TIMEOUT_S, nothing written, where no Ctrl-C would
        (herolog run's flusher thread)."""

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        create: bool = True,
        lock_wait: Callable[[float], object] | None = None,
    ) -> SQLiteStore:
        """Open the store at ``path``, creating it unless ``create`` is false, with
        :attr:`lock_wait` set before it writes (creating the schema, or upgrading an older
        store's, waits for the write lock as any change does).

        Raises FileNotFoundError when the file is missing and ``create`` is false, and
        StoreError when the file is not a usable herolog store.
        """
        if create:
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except FileExistsError:  # mkdir's "File exists" reads as if all were well
                raise StoreError(
                    f"cannot create the store's directory {path.parent}: {_in_the_way(path.parent)}"
                ) from None
            except OSError as error:
                raise StoreError(
                    f"cannot create the store's directory {path.parent}: {error.strerror or error}"
                ) from error
            try:
                # Drain URLs carry passwords and API keys: the file is its owner's alone
                # (SQLite gives its -wal and -shm files the same permissions).
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as error:
                raise StoreError(
                    f"cannot create the store {path}: {error.strerror or error}"
                ) from error
            if not _readable(path):
                raise StoreError(_unreadable(path))
            if not _read_only_file_system(path):
                # SQLite would open it read-only, make a -wal and -shm of this user's beside
                # it, and refuse only the first write: run would have run its command. A
                # -wal or -shm of another user's (a reader's) fails every write just as well.
                if not _writable(path):
                    raise StoreError(
                        f"cannot write to the store {path}: its file is read-only to this user"
                    )
                for beside in (Path(f"{path}-wal"), Path(f"{path}-shm")):
                    if _unwritable_file(beside):
                        raise StoreError(
                            f"cannot write to the store {path}: {beside} is read-only to this user"
                        )
        else:
            try:
                path.stat()
            except FileNotFoundError:
                raise
            except OSError as error:  # a directory on the way that cannot be searched
                raise StoreError(
                    f"cannot open the store {path}: {error.strerror or error}"
                ) from None
            if not _readable(path):
                raise StoreError(_unreadable(path))
            if not _writable(path):
                # SQLite would open it read-only and still make a -wal and -shm beside it,
                # this user's, which the owner's writers then cannot write.
                return cls._open_read_only(path)
            if _full(path) and not _shm_in_use(path):
                # Nothing has it open (no -shm, or the stub of one that a writer refused by
                # the full disk left), and SQLite could not make the -shm it reads a WAL
                # store with: trying left an empty -wal that every later reader would need
                # one for too.
                return cls._open_read_only(path)
        try:
            db = _connect(path, f"mode={'rwc' if create else 'rw'}")
        except sqlite3.OperationalError as error:
            if not create and not path.exists():
                raise FileNotFoundError(path) from error
            raise StoreError(f"cannot open the store {path}: {_why(path, error)}") from error
        store = cls(path, db)
        store.lock_wait = lock_wait
        try:
            store._prepare(create)
        except StoreError:
            db.close()  # not left open in a process that goes on (serve, a test)
            raise
        except sqlite3.DatabaseError as error:
            db.close()
            if isinstance(error, sqlite3.OperationalError):
                if "locked" in str(error):
                    raise
                if not create and (_read_only_file_system(path) or _read_only_directory(path)):
                    return cls._open_read_only(path)
            raise _unopened(path, error) from error
        return store

    @classmethod
    def _open_read_only(cls, path: Path) -> SQLiteStore:
        """The store on a read-only file system (a backup, a snapshot), for reading.

        SQLite's readers of a WAL store share a -shm file that it cannot create there.
        Without a -wal beside the store no writer has it open, and none can start on this
        file system: the file is read as it is. With one, SQLite reads the -shm read-only,
        where it can.
        """
        wal = _wal_to_read(path)
        try:
            db = _connect(path, f"mode=ro{'' if wal else '&immutable=1'}")
            store = cls(path, db)
            store._immutable = not wal
        except sqlite3.OperationalError as error:
            raise _unopened(path, error) from error
        try:
            store._prepare(create=False)
        except sqlite3.DatabaseError as error:
            db.close()
            raise _unopened(path, error) from error
        return store

    def _prepare(self, create: bool) -> None:
        db = self._db
        db.execute("PRAGMA synchronous = NORMAL")
        # Both in one snapshot: read apart, a writer creating the store could commit its
        # schema between them, and the store would look like another program's database.
        with self._read():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise self._newer(version)
        # Readers read any known schema (the lines table has not changed); writers upgrade.
        if version == SCHEMA_VERSION or (version and not create):
            self._ready = True
            if create and version == SCHEMA_VERSION:
                self._fill_app_ids()
            return
        if version == 0 and tables:
            # Another program's database: refused before anything in it (its journal mode
            # included) is changed.
            raise sqlite3.DatabaseError("it has tables but no herolog schema")
        if not create:
            return  # created by a writer that has not committed its schema yet: empty
        # Drain URLs carry passwords: an empty file made by someone else (or by a umask
        # more open than herolog's) is its owner's alone before anything goes in it.
        with contextlib.suppress(OSError):  # not ours to change: checked below
            self.path.chmod(0o600)
        # Another user's file that others may read. (A file system that ignores modes
        # shows the user's own files as 0777: those are left alone.)
        info = self.path.stat()
        if info.st_mode & 0o077 and info.st_uid != os.geteuid():
            raise StoreError(
                f"{self.path} can be read by others and cannot be made private (it is not"
                " yours): drain passwords go in it; remove it, or chmod 600 it as its owner"
            )
        if _journal_mode_wal(db) != "wal":
            raise StoreError(f"{self.path}: SQLite could not switch to WAL mode")
        with self._write():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise sqlite3.DatabaseError("it has tables but no herolog schema")
                _execute_script(
                    db,
                    _SCHEMA
                    + _FRAME_IDS
                    + _DRAINS
                    + _DRAIN_POSITIONS
                    + _DRAIN_UNTOLD
                    + _NOTICES
                    + _MSGIDS
                    + ";"
                    + _TRIM_COUNTS
                    + _APP_IDS
                    + _OWN_NOTICES,
                )
            elif version > SCHEMA_VERSION:
                raise self._newer(version)  # a newer herolog upgraded it while this one waited
            elif version < SCHEMA_VERSION:  # not another writer of this herolog's meanwhile
                self._refuse_under_older_serve(version)
                if version == 4 and not self._knows_trims():
                    # The first schema 4 (a6cfecd) had no apps.trimmed_through, which was
                    # added to it later without a version of its own.
                    _execute_script(db, _APP_TRIMS)
                for step in range(version, SCHEMA_VERSION):
                    _execute_script(db, _MIGRATIONS[step])
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._ready = True

    def _newer(self, version: int) -> StoreError:
        return StoreError(
            f"{self.path} was written by a newer herolog (store schema {version};"
            f" herolog {__version__} reads schema {SCHEMA_VERSION} and older): upgrade"
            " herolog to use it"
        )

    def _refuse_under_older_serve(self, version: int) -> None:
        """Leave the store at its schema while the older herolog serve that wrote it runs.

        That serve goes on with the connections it has, but every one it opens after an
        upgrade refuses the newer schema, and it says nothing of it: it would stop following
        the drains added and removed, and stop saving their positions (the next serve would
        deliver every line since to them again), and its stop would end in a traceback.
        """
        held = self._lease_in_force(FORWARDING_LEASE)
        if held is None:
            return
        owner, _, until = held
        pid = owner_pid(owner)
        cannot_go_on = (
            f"store schema {version}), which cannot go on once this herolog upgrades it to"
            f" schema {SCHEMA_VERSION}"
        )
        if pid is not None and pid != os.getpid() and process_exists(pid):
            raise StoreError(
                f"{self.path} is in use by an older herolog serve (pid {pid}; {cannot_go_on}:"
                " restart that serve with this herolog first"
            )
        # Killed, its lease not run out yet; or where this process cannot see it, which a
        # lease renewed since shows (see LeaseUnseen).
        raise LeaseUnseen(
            f"{self.path} is leased until {until[:19].replace('T', ' ')} UTC to an older"
            " herolog serve (pid"
            f" {pid if pid is not None else '?'}, not one this process can see; {cannot_go_on}:"
            " if it was killed, try again once its lease runs out; if it runs in another"
            " container or on another machine, restart it with this herolog first",
            pid,
            until,
        )

    def _fill_app_ids(self) -> None:
        """Give their ids to apps an older herolog added, still running when this store was
        upgraded (a serve started before)."""
        # A store this cannot read or write (corrupt, locked) fails where it is used, as it
        # did before: herolog run still runs its command.
        with contextlib.suppress(sqlite3.DatabaseError):
            if self._db.execute("SELECT 1 FROM apps WHERE api_id IS NULL").fetchone():
                with self._write() as db:
                    db.execute("UPDATE apps SET api_id = herolog_app_id(name) WHERE api_id IS NULL")

    def _schema_ready(self) -> bool:
        """False only for a reader that opened a store before its writer committed the schema."""
        if not self._ready:
            self._ready = self._db.execute("PRAGMA user_version").fetchone()[0] > 0
        return self._ready

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._begin_immediate()
        try:
            yield self._db
        except BaseException:
            # SQLite has rolled back already after some errors (a full disk): a second
            # ROLLBACK would fail and hide the error that matters.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, waiting up to BUSY_TIMEOUT_S for another writer to be done.

        SQLite's wait sleeps in C, where Python runs no signal handler: a Ctrl-C while
        another process held the write lock waited for the lock or the timeout, 30 s, and the
        command then failed. Where a Ctrl-C raises KeyboardInterrupt, the wait is Python's, in
        steps of WAIT_STEP_S, and ends with one, nothing written (a Ctrl-C held back for a
        commit's count too: there is no commit yet); so it is where :attr:`lock_wait` is set,
        which hears of each step."""
        if self.lock_wait is None and not ctrl_c_ends_waits():
            self._db.execute("BEGIN IMMEDIATE")
            return
        start = time.monotonic()
        deadline = start + BUSY_TIMEOUT_S
        self._db.execute(f"PRAGMA busy_timeout = {int(WAIT_STEP_S * 1000)}")
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    busy = error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                    if not busy or time.monotonic() >= deadline:
                        raise
                if self.lock_wait is not None:
                    self.lock_wait(time.monotonic() - start)
                if ctrl_c_held():
                    raise KeyboardInterrupt
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several SELECTs."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        finally:
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads by this store's methods inside see one state of the store."""
        with self._read():
            yield

    @contextmanager
    def _consistent(self) -> Iterator[None]:
        """One state of the store for the reads inside: the caller's snapshot, if it is in
        one, else one of their own."""
        if self._db.in_transaction:
            yield
        else:
            with self._read():
                yield

    @property
    def history(self) -> int:
        if self._history is None:
            row = self._meta("history")
            self._history = int(row) if row is not None else DEFAULT_HISTORY
        return self._history

    def _meta(self, key: str) -> str | None:
        if not self._schema_ready():
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_history(self, lines: int) -> None:
        if not 1 <= lines <= MAX_HISTORY:
            raise ValueError(f"history must be between 1 and {MAX_HISTORY:,} lines")
        for app_id, count in self._db.execute("SELECT id, lines FROM apps").fetchall():
            if count - lines > TRIM_STEP:
                self._trim_in_steps(app_id, lines)
        with self._write() as db:
            db.execute(_SET_META, ("history", str(lines)))
            # Lines a running serve has not read back yet are held, as from any trim: gone
            # under its reader, which reads on past them, no drain counted them at all.
            hold = self._trim_hold(Received.at().time)
            for app_id, count in db.execute("SELECT id, lines FROM apps").fetchall():
                if count > lines:
                    trimmed, trimmed_through = self._trim(app_id, count - lines, hold)
                    db.execute(_UPDATE_APP, (count - trimmed, trimmed_through, trimmed, app_id))
        self._history = lines

    def append(self, batches: Iterable[Batch], received: Received | None = None) -> list[int]:
        rx = received or Received.at()
        batches = list(batches)
        stored = [0] * len(batches)
        with self._write() as db:
            # Another process may have changed any of them.
            history_set, forgotten, pruned = db.execute(_SETTINGS).fetchone()
            history = self._history = int(history_set or DEFAULT_HISTORY)
            # Per app for this transaction: [id, lines before, lines after].
            apps: dict[str, list[int]] = {}
            for batch in batches:
                if batch.lines and batch.app not in apps:
                    app_id, count = self._app(batch.app, rx.time)
                    apps[batch.app] = [app_id, count, count]
            keep, remembered = self._new_frames(
                batches, apps, rx.time, (forgotten, int(pruned or 0))
            )
            # Consecutive batches of one app with the same attributes are inserted together,
            # in arrival order: a group of small batches costs little more than one large one.
            runs: list[tuple[tuple[int, str | None, bool], list[LogLine]]] = []
            for i, batch in enumerate(batches):
                if not batch.lines or not keep[i]:
                    continue
                app = apps[batch.app]
                attributes = batch.attributes
                if not isinstance(attributes, str):
                    attributes = (
                        json.dumps(dict(attributes), ensure_ascii=False) if attributes else None
                    )
                if runs and runs[-1][0] == (app[0], attributes, batch.own):
                    runs[-1][1].extend(batch.lines)
                else:
                    runs.append(((app[0], attributes, batch.own), list(batch.lines)))
                app[2] += len(batch.lines)
                stored[i] = len(batch.lines)
            for (app_id, attributes, own), lines in runs:
                _insert_lines(db, (app_id, attributes, rx.time), lines)
                if own:  # a notice or two: marked after, the common INSERT left as it is
                    newest = db.execute("SELECT last_insert_rowid()").fetchone()[0]
                    marked = "UPDATE lines SET own = 1 WHERE id > ? AND id <= ?"
                    db.execute(marked, (newest - len(lines), newest))
            hold = self._trim_hold(rx.time)
            for app_id, before, after in apps.values():
                trimmed = trimmed_through = 0
                if after > history:
                    trimmed, trimmed_through = self._trim(app_id, after - history, hold)
                    after -= trimmed
                if after != before or trimmed_through:
                    db.execute(_UPDATE_APP, (after, trimmed_through, trimmed, app_id))
        # Only once committed: a transaction rolled back must leave none of its ids behind.
        if remembered and self._frame_ids is not None:
            self._frame_ids.take(remembered)
        return stored

    def _new_frames(
        self,
        batches: list[Batch],
        apps: dict[str, list[int]],
        now: str,
        forgetting: tuple[str | None, int],
    ) -> tuple[list[bool], list[tuple[int, int, str]]]:
        """Which batches to store: not those whose Frame-Id this app has already stored
        (now or in this same group); and the rows that remember the ids of the rest."""
        keep = [True] * len(batches)
        wanted: dict[int, dict[str, list[int]]] = {}
        for i, batch in enumerate(batches):
            if batch.frame_id is not None and batch.lines:
                by_id = wanted.setdefault(apps[batch.app][0], {})
                by_id.setdefault(batch.frame_id, []).append(i)
        if not wanted:
            return keep, []
        known = self._known_frame_ids(*forgetting)
        remembered = []
        row_id = known.through
        for app_id, by_id in wanted.items():
            seen = known.by_app.get(app_id, {})
            for frame_id, indices in by_id.items():
                for retry in indices[1:]:
                    keep[retry] = False
                if frame_id in seen:
                    keep[indices[0]] = False
                else:
                    row_id += 1
                    remembered.append((row_id, app_id, frame_id))
        for start in range(0, len(remembered), _ROWS_PER_INSERT):
            part = remembered[start : start + _ROWS_PER_INSERT]
            self._db.execute(_frame_ids_statement(len(part)), (now, *chain.from_iterable(part)))
        return keep, remembered

    def _known_frame_ids(self, forgotten: str | None, pruned: int) -> _FrameIds:
        """The store's Frame-Ids, brought up to date with what other processes did since this
        one last looked (inside the write transaction, so nobody else changes them now), as
        ``meta.frame_ids_forgotten`` and ``meta.frame_ids_pruned`` say."""
        known = self._frame_ids
        if known is None or known.forgotten != forgotten:
            known = self._frame_ids = _FrameIds(forgotten, pruned)
        elif pruned > known.pruned:
            known.prune(pruned)
        known.take(
            self._db.execute(
                "SELECT id, app_id, frame_id FROM frame_ids WHERE id > ? ORDER BY id",
                (known.through,),
            )
        )
        return known

    def probe(self) -> None:
        """Write a mebibyte and free it again: whether the store can take batches (a health
        check). A smaller write can fit in space that a full disk had already given the
        store, and pass while every batch still fails."""
        with self._write() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('probe', zeroblob(?))"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (PROBE_BYTES,),
            )
        with self._write() as db:
            db.execute("DELETE FROM meta WHERE key = 'probe'")

    def check_writable(self) -> None:
        """StoreError unless this store can be written. A file the user may read but not
        write (another user's, or chmod 444) opens read-only without a word from SQLite,
        which refuses only the first write."""
        try:
            with self._write() as db:
                db.execute("DELETE FROM meta WHERE 0")
        except sqlite3.OperationalError as error:
            if "locked" in str(error):
                raise
            why = _why(self.path, error)
            raise StoreError(f"cannot write to the store {self.path}: {why}") from None

    def manual_checkpoints(self) -> None:
        """Leave WAL checkpoints to :meth:`checkpoint` instead of every 1000 pages of commits:
        for a busy writer, which then checkpoints from another thread."""
        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        # A WAL that grew during a burst (or while checkpoints failed) shrinks back to this.
        self._db.execute(f"PRAGMA journal_size_limit = {64 << 20}")

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database without blocking readers or writers."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def restart_wal(self, wait_s: float) -> bool:
        """Checkpoint everything and have the next commit start the WAL from its beginning;
        whether it could.

        Passive checkpoints alone never get there under a steady stream of commits: each
        leaves the newest frames behind, so the WAL only ever grows. The writer calls this
        between commits once the WAL is large. It waits for other writers and for readers to
        be done with the WAL, up to ``wait_s`` (not the busy timeout: a reader can hold one
        snapshot for as long as it likes, a backup's or a long scan's, and the writer's
        commits wait meanwhile)."""
        self._db.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        try:
            row = self._db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return not row[0]

    def wal_size(self) -> int:
        return _file_size(Path(f"{self.path}-wal"))

    def disk_size(self) -> int:
        """The bytes of its file, its -wal and its -shm (not of files beside it whose names
        start with its own, as the logs.db.broken of a store moved aside)."""
        return sum(_file_size(Path(f"{self.path}{end}")) for end in ("", "-wal", "-shm"))

    @property
    def frame_ids_held(self) -> int:
        """Frame-Ids this store holds in memory (pruned ones go at its next write)."""
        return 0 if self._frame_ids is None else self._frame_ids.size

    def forget_frame_ids(self, older_than_s: float, keep_at_most: int) -> None:
        """Forget the Frame-Ids of batches stored more than ``older_than_s`` ago, and all but
        the newest ``keep_at_most``.

        The ids go in arrival order, a range of rows: an id is kept while one that came
        before it is, so that its transaction's others are kept with the one that decides,
        and one stored late with an early time (another process's) lives a little longer.
        Remembering a few more is harmless, forgetting one could store its retry twice: the
        ids from before the wall clock was set forward are kept as much longer.
        """
        from datetime import timedelta

        from herolog import timestamps

        now = timestamps.now()
        stepped = self._stepped_forward(now.timestamp(), older_than_s)
        cutoff = timestamps.to_instant(now - timedelta(seconds=older_than_s + stepped))
        with self._write() as db:
            oldest, newest = db.execute(
                "SELECT (SELECT min(id) FROM frame_ids), (SELECT max(id) FROM frame_ids)"
            ).fetchone()
            if newest is None:
                return

            def first_since(instant: str) -> int:
                """The first row, in arrival order, with a time at or after ``instant``."""
                (first,) = db.execute(
                    "SELECT min(id) FROM frame_ids WHERE received_at >= ?", (instant,)
                ).fetchone()
                return int(newest) + 1 if first is None else int(first)

            def newest_but(count: int) -> int:
                if count <= 0:
                    return int(newest) + 1
                if newest - oldest < count:
                    return 0  # no more rows than that
                row = db.execute(
                    "SELECT id FROM frame_ids ORDER BY id DESC LIMIT 1 OFFSET ?", (count - 1,)
                ).fetchone()
                return 0 if row is None else int(row[0])

            kept = max(first_since(cutoff), newest_but(keep_at_most))
            if kept <= oldest:
                return
            db.execute("DELETE FROM frame_ids WHERE id < ?", (kept,))
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('frame_ids_pruned', ?)"
                " ON CONFLICT (key) DO UPDATE"
                " SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (kept - 1,),
            )

    def _stepped_forward(self, wall: float, within: float) -> float:
        """The seconds the wall clock was set forward (a slow clock corrected) within the last
        ``within`` seconds, as calls see it from one to the next: the ids received before
        that look that much older than they are."""
        monotonic = time.monotonic()
        if self._clock_read is not None:
            then, then_wall = self._clock_read
            step = (wall - then_wall) - (monotonic - then)
            if step > _CLOCK_STEP_MIN_S:
                self._clock_steps.append((monotonic, step))
        self._clock_read = (monotonic, wall)
        self._clock_steps = [(at, s) for at, s in self._clock_steps if at > monotonic - within]
        return sum(step for _, step in self._clock_steps)

    def _app(self, name: str, now: str) -> tuple[int, int]:
        row = self._db.execute("SELECT id, lines FROM apps WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0]), int(row[1])
        # An app made anew after ``store forget`` counts the old one's lines as trimmed, so
        # that a tail of it that had not shown them all is told of them (L11), and the marks
        # it took (``lines_through``) still count from the same start.
        forgotten = self._forgotten(name)
        trimmed, trimmed_through = forgotten or (0, 0)
        if forgotten is not None:  # the new row holds them now (forget_app writes them back)
            self._db.execute("DELETE FROM meta WHERE key = ?", (f"forgotten:{name}",))
        cursor = self._db.execute(
            "INSERT INTO apps (name, api_id, created_at, trimmed, trimmed_through)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, app_id(name), now, trimmed, trimmed_through),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, 0

    def _forgotten(self, name: str) -> tuple[int, int] | None:
        """For an app forgotten and not made anew: how many lines it had stored, ever (its
        ``trimmed`` then), and the newest id among them (its ``trimmed_through``)."""
        forgotten = self._meta(f"forgotten:{name}")
        if forgotten is None:
            return None
        trimmed, trimmed_through = (int(n) for n in forgotten.split())
        return trimmed, trimmed_through

    def _trim(self, app_id: int, excess: int, hold: int | None = None) -> tuple[int, int]:
        """Drop the app's oldest ``excess`` lines, but none above ``hold``; how many went,
        and the id up to which they went (0 if none did). The caller records both in the
        app's row (``lines``, ``trimmed_through``), in the one UPDATE it makes anyway."""
        if excess < 1:
            return 0, 0
        # A range of the index, deleted as it is walked: faster than deleting a list of
        # ids (``id IN (SELECT ... LIMIT n)``), which SQLite builds first.
        row = self._db.execute(
            "SELECT id FROM lines WHERE app_id = ? ORDER BY id LIMIT 1 OFFSET ?",
            (app_id, excess - 1),
        ).fetchone()
        if row is not None:
            cutoff = row[0]
        else:  # fewer lines than ``excess`` (a count that is off): all of them go
            query = "SELECT max(id) FROM lines WHERE app_id = ?"
            (cutoff,) = self._db.execute(query, (app_id,)).fetchone()
            if cutoff is None:
                return 0, 0
        if hold is not None:
            cutoff = min(cutoff, hold)
        trimmed = self._db.execute(
            "DELETE FROM lines WHERE app_id = ? AND id <= ?", (app_id, cutoff)
        ).rowcount
        return int(trimmed), cutoff if trimmed else 0

    def _trim_in_steps(self, app_id: int, keep: int) -> int:
        """Trim the app's oldest lines, as a write past its history would, until at most
        TRIM_STEP more than ``keep`` are left (for the caller's own transaction), in
        transactions of TRIM_STEP lines with the write lock free between them, so that serve
        stores what comes meanwhile. How many went; they stay trimmed if the caller stops."""
        total = 0
        while True:
            with self._write() as db:
                row = db.execute("SELECT lines FROM apps WHERE id = ?", (app_id,)).fetchone()
                if row is None or row[0] - keep <= TRIM_STEP:
                    return total
                hold = self._trim_hold(Received.at().time)
                trimmed, trimmed_through = self._trim(app_id, TRIM_STEP, hold)
                if not trimmed:  # the rest is held for a serve (see hold_trim)
                    return total
                db.execute(_UPDATE_APP, (row[0] - trimmed, trimmed_through, trimmed, app_id))
            total += trimmed
            time.sleep(TRIM_PAUSE_S)

    def hold_trim(self, owner: str, line_id: int, seconds: float) -> None:
        """Keep lines above ``line_id`` for the next ``seconds``, past the history if need be.

        A server hands new lines to its drains and tails by reading them back from the
        store; under a burst, the ring buffer must not drop lines it has not read yet.
        Lines go later, once the hold moves on or lapses (a server that died holds nothing).
        Each ``owner`` (a server) has its own hold; the lowest counts.
        """
        start, until = _term(seconds)
        with self._write() as db:
            # The start last: an older herolog reads "UNTIL START" as a time after UNTIL.
            db.execute(_SET_META, (f"trim_hold:{owner}", f"{line_id} {until} {start}"))
            self._prune_unread_forgotten(self._trim_hold(Received.at().time))

    def release_trim_hold(self, owner: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (f"trim_hold:{owner}",))

    def _trim_hold(self, now: str) -> int | None:
        holds = []
        # Every key that starts "trim_hold:" (";" is the character after ":").
        rows = self._db.execute(
            "SELECT value FROM meta WHERE key >= 'trim_hold:' AND key < 'trim_hold;'"
        )
        current = None
        for (value,) in rows:
            line_id, _, term = str(value).partition(" ")
            until, _, start = term.partition(" ")  # no start: an older herolog's
            if until <= now or not _INSTANT.fullmatch(until) or not line_id.isdigit():
                continue  # run out, or a value edited by hand: a hold for ever, a traceback
            if start > now:  # lines received before the hold was taken, or a clock set back
                if current is None:
                    from herolog import timestamps

                    current = timestamps.to_instant(timestamps.now())
                if start > current:
                    continue
            holds.append(int(line_id))
        return min(holds) if holds else None

    def keep_log_sessions(self, records: Sequence[tuple[str, str]]) -> None:
        """Keep tail sessions (id, what rebuilds it) for the next server on this store."""
        with self._write() as db:
            db.executemany(
                _SET_META, [(f"log_session:{session_id}", record) for session_id, record in records]
            )

    def take_log_sessions(self) -> list[str]:
        """The tail sessions kept by :meth:`keep_log_sessions`, which no other server
        then gets."""
        # Every key that starts "log_session:" (";" is the character after ":").
        where = "WHERE key >= 'log_session:' AND key < 'log_session;'"
        with self._write() as db:
            records = [str(value) for (value,) in db.execute(f"SELECT value FROM meta {where}")]
            db.execute(f"DELETE FROM meta {where}")
        return records

    def lease(self, name: str, owner: str, seconds: float) -> str | None:
        """Take or renew the lease ``name`` for ``owner`` for ``seconds``: None when
        ``owner`` holds it now, else the owner who does. For work only one server may do
        (forwarding to drains: two would deliver every line twice)."""
        from herolog import timestamps

        now = timestamps.to_instant(timestamps.now())
        start, until = _term(seconds)
        with self._write() as db:
            held = self._lease(name)
            if held is not None and held[0] != owner and _in_force(held, now):
                return held[0]
            # The start before the end: an older herolog reads "OWNER START" as the owner.
            db.execute(_SET_META, (f"lease:{name}", f"{owner} {start} {until}"))
        return None

    def release_lease(self, name: str, owner: str) -> None:
        with self._write() as db:
            if self._holds(name, owner):
                db.execute("DELETE FROM meta WHERE key = ?", (f"lease:{name}",))

    def leased(self, name: str) -> bool:
        """Whether someone holds the lease ``name`` now (it has not run out)."""
        return self._lease_in_force(name) is not None

    def _lease_in_force(self, name: str) -> tuple[str, str, str] | None:
        """Who holds the lease ``name``, from and until when, if it has not run out."""
        from herolog import timestamps

        held = self._lease(name)
        return held if held and _in_force(held, timestamps.to_instant(timestamps.now())) else None

    def _lease(self, name: str) -> tuple[str, str, str] | None:
        """Who holds the lease ``name``, from and until when (it may have run out), or None.
        The start is "" for a lease an older herolog took, which kept only its end."""
        value = self._meta(f"lease:{name}")
        if value is None:
            return None
        rest, _, until = value.rpartition(" ")
        holder, _, start = rest.rpartition(" ")
        if not _INSTANT.fullmatch(start):
            holder, start = rest, ""
        return holder, start, until

    def _holds(self, name: str, owner: str) -> bool:
        """Whether ``owner`` was the last to take the lease ``name`` (run out or not)."""
        held = self._lease(name)
        return held is not None and held[0] == owner

    @_reads_any_text
    def last(self, wanted: LineFilter, count: int) -> tuple[list[StoredLine], int]:
        where, params = _where(wanted, lenient=self._lenient)
        found: list[StoredLine] = []
        if not self._schema_ready():
            return found, 0
        with self._read() as db:
            newest = _newest_id(db)
            if count > 0:
                sql = f"{self._select(wanted)}{where} ORDER BY lines.id DESC LIMIT {int(count)}"
                with _searching(db, wanted, lenient=self._lenient):
                    found = [StoredLine(*row) for row in db.execute(sql, params)]
        found.reverse()
        return found, newest

    @_reads_any_text
    def first_of_last(self, wanted: LineFilter, count: int) -> tuple[int | None, int]:
        where, params = _where(wanted, lenient=self._lenient)
        if not self._schema_ready():
            return None, 0
        with self._consistent(), _searching(self._db, wanted, lenient=self._lenient):
            db = self._db
            newest = _newest_id(db)
            if count <= 0:
                return None, newest
            lines = self._lines(wanted)
            last = f"SELECT lines.id FROM {lines}{where} ORDER BY lines.id DESC LIMIT {int(count)}"
            first = db.execute(f"SELECT min(id) FROM ({last})", params).fetchone()[0]
        return first, newest

    @_reads_any_text
    def after(
        self, line_id: int, wanted: LineFilter, limit: int = 1000, upto: int | None = None
    ) -> tuple[list[StoredLine], int]:
        if not self._schema_ready():
            return [], line_id
        where, params = _where(wanted, after=line_id, upto=upto, lenient=self._lenient)
        with self._consistent(), _searching(self._db, wanted, lenient=self._lenient):
            db = self._db
            rows = db.execute(
                f"{self._select(wanted)}{where} ORDER BY lines.id LIMIT {int(limit)}", params
            ).fetchall()
            lines = [StoredLine(*row) for row in rows]
            if len(lines) < int(limit):
                # Every line up to the newest was looked at, matching or not: a filtered
                # reader goes on from there, and the lines it skipped are not "trimmed
                # before it got to them" (L11) once the ring buffer drops them.
                # Up to ``upto`` even past the newest: the newest lines may have been
                # forgotten (store forget), and their ids are never used again.
                last_id = max(line_id, _newest_id(db) if upto is None else upto)
            else:
                last_id = lines[-1].id
        return lines, last_id

    def newest_id(self) -> int:
        return _newest_id(self._db) if self._schema_ready() else 0

    def trimmed_between(self, after: int, upto: int, app: str | None = None) -> int:
        if upto <= after or not self._schema_ready():
            return 0
        if app is not None:
            # Trimming takes an app's oldest lines first: if its oldest kept line comes
            # straight after ``after``, none of its lines past it are gone; nor past the
            # newest id it has had trimmed, where the store knows it.
            trimmed_through = "trimmed_through" if self._knows_trims() else "NULL"
            row = self._db.execute(
                "SELECT (SELECT min(id) FROM lines WHERE app_id = apps.id),"
                f" {trimmed_through} FROM apps WHERE name = ?",
                (app,),
            ).fetchone()
            if row is None or row[0] is None or row[0] <= after + 1:
                return 0
            upto = min(upto, row[0] - 1, upto if row[1] is None else row[1])
            if upto <= after:
                return 0
        # Ids are never reused and never skipped (AUTOINCREMENT, one writer), so the ids
        # missing from a span are the lines trimmed from it.
        present = self._db.execute(
            "SELECT count(*) FROM lines WHERE id > ? AND id <= ?", (after, upto)
        ).fetchone()[0]
        return int(upto - after - present)

    def oldest_ids(self) -> OldestIds:
        found = OldestIds()
        if not self._schema_ready():
            return found
        with self._consistent():
            rows = self._db.execute(
                "SELECT id, (SELECT min(id) FROM lines WHERE app_id = apps.id) FROM apps"
            ).fetchall()
            found.update((app_id, oldest) for app_id, oldest in rows if oldest is not None)
            found.forgotten = int(self._meta("apps_forgotten") or 0)
        return found

    def trimmed_since(self, oldest: Mapping[int, int], after: int, upto: int) -> int:
        """Lines with ids in (``after``, ``upto``] that were kept when :meth:`oldest_ids`
        gave ``oldest`` and have been trimmed (or forgotten) since: a history of every app
        that began then is told of those, and not of the lines other apps had had trimmed
        among the ones it shows. Trimming takes an app's oldest lines first, so each app's
        lost lines lie between its oldest line then and its oldest now, and none above the
        newest it has had trimmed: the ids missing there (exact for a store of one app, at
        most that otherwise)."""
        if upto <= after or not oldest:
            return 0
        # Those lines are ids missing from the span: with none missing (a filtered history,
        # whose every batch comes here, of lines no trim has reached), nothing is looked up
        # per app, which costs as much as the batch itself for a few thousand apps.
        present = self._db.execute(
            "SELECT count(*) FROM lines WHERE id > ? AND id <= ?", (after, upto)
        ).fetchone()[0]
        if present == upto - after:
            return 0
        spans = []
        forgotten = int(self._meta("apps_forgotten") or 0)
        if getattr(oldest, "forgotten", None) == forgotten and self._schema_version() >= 11:
            # No app forgotten since (counted from schema 11 on): only those trimmed past
            # ``after`` can have lost lines of the span, a scan of the apps' rows. Looking
            # up each app's oldest line for each batch took 7 ms with 2,000 apps and 91 ms
            # with 20,000, 3 to 30 times the batch, wherever a span had ids missing (other
            # apps' trimmed lines, those of an app forgotten before).
            rows = self._db.execute(
                "SELECT id, trimmed_through FROM apps WHERE trimmed_through > ?", (after,)
            )
            for app_id, through in rows:
                first = oldest.get(app_id)
                if first is not None and first <= through:
                    spans.append((max(first, after + 1), min(upto, through)))
        else:
            now = self.oldest_ids()
            for app_id, first in oldest.items():
                kept = now.get(app_id)
                low, high = max(first, after + 1), upto if kept is None else min(upto, kept - 1)
                if low <= high:
                    spans.append((low, high))
        gone, reached = 0, after
        for low, high in sorted(spans):
            low = max(low, reached + 1)
            if low > high:
                continue
            present = self._db.execute(
                "SELECT count(*) FROM lines WHERE id >= ? AND id <= ?", (low, high)
            ).fetchone()[0]
            gone += high - low + 1 - int(present)
            reached = high
        return gone

    def lines_through(self, app: str, upto: int) -> int | None:
        """How many lines ``app`` has stored with ids up to ``upto``, ever (counted from when
        the store began to count its trims: the difference of two is exact), a reader's
        mark of its position; None where the store cannot tell: an older schema's, or some
        of the app's lines past ``upto`` have been trimmed."""
        if not self._schema_ready() or self._schema_version() < 9:
            return None
        with self._consistent():
            row = self._db.execute(
                "SELECT id, trimmed, lines, trimmed_through FROM apps WHERE name = ?", (app,)
            ).fetchone()
            if row is None:  # none stored, or all forgotten: every one up to its newest
                total, newest = self._forgotten(app) or (0, 0)
                return None if newest > upto else total
            app_id, trimmed, lines, trimmed_through = row
            if trimmed_through > upto:
                return None
            # Trimming takes the oldest lines first, so every line trimmed lies below
            # ``upto``: counted from the newest, which is where readers mostly are.
            later = self._db.execute(
                "SELECT count(*) FROM lines WHERE app_id = ? AND id > ?", (app_id, upto)
            ).fetchone()[0]
        return int(trimmed + lines - later)

    def trimmed_past(
        self, app: str, after: int, upto: int, mark: int | None
    ) -> tuple[int, int | None]:
        """``app``'s lines with ids in (``after``, ``upto``] that the ring buffer has trimmed,
        and :meth:`lines_through` ``upto`` (None where not known), given ``mark``, that of
        ``after`` (None if not known). Exact with a mark, unless some of the app's lines
        past ``upto`` are gone too; else :meth:`trimmed_between`'s count, at most that."""
        if upto <= after or not self._schema_ready():
            return 0, mark
        counts = self._schema_version() >= 9
        with self._consistent():
            row = self._db.execute(
                "SELECT id, (SELECT min(id) FROM lines WHERE app_id = apps.id),"
                f" {'trimmed_through' if self._knows_trims() else 'NULL'},"
                f" {'trimmed' if counts else 'NULL'} FROM apps WHERE name = ?",
                (app,),
            ).fetchone()
            if row is None:
                forgotten = self._forgotten(app)
                if forgotten is None:  # no such app: it has stored nothing
                    return 0, 0 if counts else None
                # Forgotten (store forget) and not made anew yet: every line it had is gone,
                # none past the newest. A mark of 0 here, as for an app never had, counted
                # the lines the tail had shown as lost again once the app was made anew.
                total, newest = forgotten
                if newest <= after:
                    return 0, total
                if mark is not None and newest <= upto and total >= mark:
                    return total - mark, total
                return self.trimmed_between(after, min(upto, newest)), (
                    total if newest <= upto else None
                )
            app_id, oldest, through, trimmed = row
            if (oldest is not None and oldest <= after + 1) or (
                through is not None and through <= after
            ):
                gone: int | None = 0  # trimming takes the oldest first: none past ``after``
            elif mark is not None and trimmed is not None and through <= upto:
                # None of the app's lines up to ``after`` is kept (they are below those
                # trimmed), nor is any past ``upto`` trimmed: what was trimmed past
                # ``after`` is every trimmed line but those up to it, which were ``mark``.
                gone = trimmed - mark if trimmed >= mark else None
            else:
                gone = None
            if gone is None:
                return self.trimmed_between(after, upto, app), self.lines_through(app, upto)
            if mark is None:
                return gone, self.lines_through(app, upto)
            kept = self._db.execute(
                "SELECT count(*) FROM lines WHERE app_id = ? AND id > ? AND id <= ?",
                (app_id, after, upto),
            ).fetchone()[0]
        return gone, mark + gone + int(kept)

    @_reads_any_text
    def app_lines(
        self, app: str, after: int, upto: int, max_lines: int, max_bytes: int
    ) -> tuple[list[StoredLine], int]:
        """``app``'s lines with ids in (``after``, ``upto``], oldest first, up to
        ``max_lines`` lines or about ``max_bytes`` of messages; and the id to go on after
        (``upto`` once every line of the span has been read)."""
        if upto <= after or not self._schema_ready():
            return [], max(after, upto)
        found: list[StoredLine] = []
        size = 0
        with self._consistent():
            select = self._select(LineFilter(app=app))
            cursor = self._db.execute(
                f"{select} WHERE lines.app_id = (SELECT id FROM apps WHERE name = ?)"
                " AND lines.id > ? AND lines.id <= ? ORDER BY lines.id",
                (app, after, upto),
            )
            while len(found) < max_lines and size < max_bytes:
                row = cursor.fetchone()
                if row is None:
                    cursor.close()
                    return found, upto
                line = StoredLine(*row)
                found.append(line)
                size += len(line.message)
            cursor.close()
        return found, found[-1].id

    def count_app_lines(self, app: str, after: int, upto: int, *, notices: bool = True) -> int:
        """How many of ``app``'s lines with ids in (``after``, ``upto``] the store holds;
        without ``notices``, not counting herolog's own (StoredLine.own)."""
        if upto <= after or not self._schema_ready():
            return 0
        span = (
            "SELECT count(*) FROM lines WHERE app_id = (SELECT id FROM apps WHERE name = ?)"
            " AND id > ? AND id <= ?"
        )
        with self._consistent():
            count = int(self._db.execute(span, (app, after, upto)).fetchone()[0])
            if not notices:
                count -= int(
                    self._db.execute(f"{span} AND {self._own()}", (app, after, upto)).fetchone()[0]
                )
        return count

    def ids_between(
        self, after: int, upto: int
    ) -> tuple[dict[str, array[int]], dict[str, array[int]]]:
        """The ids of the lines with ids in (``after``, ``upto``], by app and in order, and
        those of them that are herolog's own L10 lines (which drains are not sent), by app
        and in order too: what a reader that skips those lines counts of them, at any point
        of the span, without reading them (8 bytes an id: a skip of millions takes
        megabytes, not a hundred)."""
        by_app: dict[str, array[int]] = {}
        notices: dict[str, array[int]] = {}
        if upto <= after or not self._schema_ready():
            return by_app, notices
        with self._consistent():
            names = dict(self._db.execute("SELECT id, name FROM apps").fetchall())
            rows = self._db.execute(
                f"SELECT app_id, id, {self._own()} FROM lines WHERE id > ? AND id <= ? ORDER BY id",
                (after, upto),
            )
            for app_id, line_id, notice in rows:
                ids = by_app.get(names[app_id])
                if ids is None:
                    ids = by_app[names[app_id]] = array("q")
                ids.append(line_id)
                if notice:
                    notices.setdefault(names[app_id], array("q")).append(line_id)
        return by_app, notices

    def apps(self) -> list[AppInfo]:
        if not self._schema_ready():
            return []
        rows = self._db.execute("SELECT name, lines, created_at FROM apps ORDER BY name").fetchall()
        return [AppInfo(*row) for row in rows]

    def apps_by(
        self,
        key: str,
        first: str,
        last: str,
        *,
        first_open: bool = False,
        last_open: bool = False,
        desc: bool = False,
        limit: int,
    ) -> list[tuple[str, AppInfo]]:
        """Up to ``limit`` apps in the order of ``key`` ("name", or "id": :func:`app_id`;
        ``desc``: the other way) from ``first`` to ``last`` ("": from the first app, to the
        last; open: that one left out), each with its key, as a Platform API Range asks: a
        range of the key's index, however many apps there are."""
        if not self._schema_ready():
            return []
        column = "name" if key == "name" else self._api_id()
        clauses, params = [], []
        for bound, open_, above in ((first, first_open, not desc), (last, last_open, desc)):
            if bound:
                clauses.append(f"{column} {'>' if above else '<'}{'' if open_ else '='} ?")
                params.append(bound)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {column}, name, lines, created_at FROM apps{where}"
            f" ORDER BY {column}{' DESC' if desc else ''} LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [(str(row[0]), AppInfo(*row[1:])) for row in rows]

    def app_by_id(self, api_id: str) -> AppInfo | None:
        """The app whose Platform API id (:func:`app_id` of its name) is ``api_id``."""
        if not self._schema_ready():
            return None
        row = self._db.execute(
            f"SELECT name, lines, created_at FROM apps WHERE {self._api_id()} = ?",
            (api_id.lower(),),
        ).fetchone()
        return AppInfo(*row) if row else None

    def _own(self) -> str:
        """The condition of herolog's own L10 lines: marked from schema 12 on, which a reader
        does not upgrade to. Literals, as lines_notices has them: SQLite uses a partial index
        only for a query whose WHERE names its condition, not parameters."""
        return "own = 1" if self._schema_version() >= 12 else _OLD_OWN

    def _api_id(self) -> str:
        """The apps' ids: indexed from schema 11 on, which a reader does not upgrade to."""
        return "api_id" if self._schema_version() >= 11 else "herolog_app_id(name)"

    @_reads_any_text
    def recent_names(self, app: str | None, lines: int = 2000) -> list[tuple[str, str]]:
        """The (source, dyno) pairs of the newest ``lines`` lines of ``app`` (of every app:
        None), for shell completion: a read of the index's last entries, however large the
        store."""
        if not self._schema_ready():
            return []
        if app is None:
            newest = "SELECT source, dyno FROM lines ORDER BY id DESC LIMIT ?"
            params: tuple[object, ...] = (lines,)
        else:
            newest = (
                "SELECT source, dyno FROM lines WHERE app_id = (SELECT id FROM apps WHERE"
                " name = ?) ORDER BY id DESC LIMIT ?"
            )
            params = (app, lines)
        rows = self._db.execute(f"SELECT DISTINCT source, dyno FROM ({newest})", params)
        return [(str(source), str(dyno)) for source, dyno in rows.fetchall()]

    def app(self, name: str) -> AppInfo | None:
        if not self._schema_ready():
            return None
        row = self._db.execute(
            "SELECT name, lines, created_at FROM apps WHERE name = ?", (name,)
        ).fetchone()
        return AppInfo(*row) if row else None

    def add_drain(self, app: str, url: str) -> Drain:
        """Register a drain for ``app`` (which comes into being if it is new).

        Raises DrainExists if the app already has one with this URL, or one that is the
        same drain written another way (see :func:`herolog.drains.drain_key`).
        """
        from herolog import timestamps
        from herolog.drains import drain_key

        now = timestamps.to_instant(timestamps.now())
        with self._write() as db:
            # A new drain gets the lines stored from now on, whenever a server forwards them.
            drain = Drain(
                str(uuid.uuid4()),
                f"d.{uuid.uuid4()}",
                app,
                url,
                now,
                now,
                Delivery(through=_newest_id(db)),
            )
            app_id, _ = self._app(app, now)
            through_lines = self.lines_through(app, drain.delivery.through)
            drain = drain._replace(delivery=drain.delivery._replace(through_lines=through_lines))
            key = drain_key(url)
            for (known,) in db.execute("SELECT url FROM drains WHERE app_id = ?", (app_id,)):
                if known == url or (key is not None and drain_key(known) == key):
                    raise DrainExists(f"{app} already has a drain for {known}", known)
            try:
                db.execute(
                    "INSERT INTO drains (id, token, app_id, url, created_at, updated_at,"
                    " through_id, through_lines) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        drain.id,
                        drain.token,
                        app_id,
                        url,
                        now,
                        now,
                        drain.delivery.through,
                        through_lines,
                    ),
                )
            except sqlite3.IntegrityError:
                raise DrainExists(f"{app} already has a drain for {url}", url) from None
            self._count_up("drains_changed")
        return drain

    def drains(self, app: str | None = None) -> list[Drain]:
        """The drains of ``app`` (or of every app), oldest first."""
        if not self._schema_ready() or (version := self._schema_version()) < 3:
            return []
        position = "through_id, dropped_ahead" if version >= 4 else "0, 0"
        untold = "untold, untold_since" if version >= 5 else "0, NULL"
        through_lines = "through_lines" if version >= 9 else "NULL"
        sql = (
            "SELECT drains.id, token, apps.name, url, drains.created_at, updated_at,"
            f" delivered, dropped, retrying, last_error, last_error_at, {position}, {untold},"
            f" {through_lines}"
            " FROM drains JOIN apps ON apps.id = drains.app_id"
        )
        params: tuple[str, ...] = ()
        if app is not None:
            sql += " WHERE apps.name = ?"
            params = (app,)
        rows = self._db.execute(sql + " ORDER BY drains.created_at, drains.rowid", params)
        return [Drain(*_drain_fields(row)) for row in rows.fetchall()]

    def keeps_positions(self) -> bool:
        """Whether the store has drain positions (an older herolog's store has none until a
        writer upgrades it, which starts each drain at the newest line then)."""
        return self._schema_ready() and self._schema_version() >= 4

    def save_deliveries(
        self, deliveries: Mapping[str, Delivery], *, lease: tuple[str, str] | None = None
    ) -> bool:
        """Record what a server has done for each drain (by id); removed drains are skipped.
        With ``lease`` (a name and an owner), only while that owner holds that lease: a
        server that lost it to another must not put its older positions back. Whether it
        was recorded."""
        if not deliveries:
            return True
        with self._write() as db:
            if lease is not None and not self._holds(*lease):
                return False
            db.executemany(
                "UPDATE drains SET delivered = ?, dropped = ?, retrying = ?, last_error = ?,"
                " last_error_at = ?, through_id = ?, dropped_ahead = ?, untold = ?,"
                " untold_since = ?, through_lines = ? WHERE id = ?",
                [(*delivery, drain_id) for drain_id, delivery in deliveries.items()],
            )
        return True

    def forget_app(self, name: str) -> int | None:
        """Delete the app ``name``, its lines and the Frame-Ids it was sent; how many lines
        went, or None if the store has no such app. An app that drains forward is kept:
        HasDrains (its drains are removed first, by choice). A large app's oldest lines go
        first, trimmed in steps (:meth:`_trim_in_steps`)."""
        stepped = 0
        if self._schema_ready():
            with self._consistent():
                row = self._db.execute(
                    "SELECT id, lines, (SELECT count(*) FROM drains WHERE app_id = apps.id)"
                    " FROM apps WHERE name = ?",
                    (name,),
                ).fetchone()
            if row is not None and row[1] > TRIM_STEP:
                if row[2]:
                    raise HasDrains(name, int(row[2]))
                stepped = self._trim_in_steps(row[0], 0)
        with self._write() as db:
            row = db.execute(
                "SELECT id, trimmed, trimmed_through FROM apps WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            app_id, trimmed, trimmed_through = row
            (drains,) = db.execute(
                "SELECT count(*) FROM drains WHERE app_id = ?", (app_id,)
            ).fetchone()
            if drains:
                raise HasDrains(name, int(drains))
            (newest,) = db.execute(
                "SELECT max(id) FROM lines WHERE app_id = ?", (app_id,)
            ).fetchone()
            hold = self._trim_hold(Received.at().time)
            self._prune_unread_forgotten(hold)
            if hold is not None and newest is not None and newest > hold:
                # Lines a running serve has not read back yet: its tails are told of them
                # (L11) from this note, as they are of lines trimmed (see unread_forgotten).
                unread = db.execute(
                    "SELECT id FROM lines WHERE app_id = ? AND id > ? ORDER BY id", (app_id, hold)
                )
                db.execute(
                    _SET_META,
                    (f"{_UNREAD_FORGOTTEN}{newest:020d}", f"{name} {_id_ranges(unread)}"),
                )
            deleted = db.execute("DELETE FROM lines WHERE app_id = ?", (app_id,)).rowcount
            db.execute(
                _SET_META,
                (f"forgotten:{name}", f"{trimmed + deleted} {max(trimmed_through, newest or 0)}"),
            )
            if db.execute("DELETE FROM frame_ids WHERE app_id = ?", (app_id,)).rowcount:
                self._count_up("frame_ids_forgotten")
            db.execute("DELETE FROM apps WHERE id = ?", (app_id,))
            self._count_up("apps_forgotten")  # for readers of oldest_ids
        return stepped + int(deleted)

    def unread_forgotten(self, after: int, upto: int) -> dict[str, array[int]]:
        """The ids in (``after``, ``upto``] of lines that ``store forget`` deleted before the
        serve holding them from the ring buffer had read them back (:meth:`hold_trim`), by
        app and in order: the broadcaster, reading on past them, tells its tails of them."""
        found: dict[str, array[int]] = {}
        if upto <= after or not self._schema_ready():
            return found
        rows = self._db.execute(
            "SELECT value FROM meta WHERE key > ? AND key < ? ORDER BY key",
            (f"{_UNREAD_FORGOTTEN}{after:020d}", _UNREAD_FORGOTTEN_END),
        )
        for (value,) in rows:
            name, *ranges = str(value).split(" ")
            ids = found.setdefault(name, array("q"))
            for span in ranges:
                low, _, high = span.partition("-")
                ids.extend(range(max(int(low), after + 1), min(int(high or low), upto) + 1))
        for name, ids in found.items():
            found[name] = array("q", sorted(ids))
        return {name: ids for name, ids in found.items() if ids}

    def _prune_unread_forgotten(self, hold: int | None) -> None:
        """Drop the notes of :meth:`unread_forgotten` that every serve has read past (all of
        them with no serve holding lines)."""
        upto = f"{_UNREAD_FORGOTTEN}{hold + 1:020d}" if hold is not None else None
        self._db.execute(
            "DELETE FROM meta WHERE key >= ? AND key < ?",
            (_UNREAD_FORGOTTEN, upto or _UNREAD_FORGOTTEN_END),
        )

    def find_drain(self, app: str, key: str) -> Drain | None:
        """The app's drain whose URL, token or id is ``key``, or None (see
        :func:`herolog.drains.find_drain`)."""
        from herolog.drains import find_drain

        return find_drain(self.drains(app), key)

    def remove_drain(self, app: str, key: str) -> Drain | None:
        """Remove the app's drain whose URL, token or id is ``key``; None if there is none."""
        with self._write():
            drain = self.find_drain(app, key)
            if drain is not None:
                self._db.execute("DELETE FROM drains WHERE id = ?", (drain.id,))
                self._count_up("drains_changed")
        return drain

    def drains_changed(self) -> int:
        """A number that changes whenever any process adds or removes a drain."""
        return int(self._meta("drains_changed") or 0)

    def _count_up(self, key: str) -> None:
        """Add one to the counter ``meta.key``, by which other processes notice a change."""
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, '1')"
            " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (key,),
        )

    def _schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _select(self, wanted: LineFilter) -> str:
        """The SELECT of lines for this store's schema (a reader does not upgrade it), to read
        the rows ``wanted`` passes."""
        version = self._schema_version()
        chosen = max(known for known in _SELECTS if known <= version)
        return _SELECTS[chosen].format(lines=self._lines(wanted))

    def _lines(self, wanted: LineFilter) -> str:
        """The FROM of a query that reads the rows ``wanted`` passes: by scan for a filter of
        an app that holds most of the store's lines (SCAN_SHARE), where SQLite, which has no
        statistics to tell, would go through lines_by_app. Not for the app alone: each row
        the index leads to is one wanted, where a scan reads past every line of the other
        apps newer than the app's (all of them, for an app gone quiet)."""
        app = wanted.app
        if app is None or wanted == LineFilter(app=app):
            return "lines"
        # The store holds at least the lines of its first hundred apps, which mostly tell
        # already: summing every app's took 0.85 ms for each read with 20,000 apps, a sixth
        # of a filtered history of 1,500 lines.
        row = self._db.execute(
            "SELECT lines, (SELECT sum(lines) FROM (SELECT lines FROM apps LIMIT 100))"
            " FROM apps WHERE name = ?",
            (app,),
        ).fetchone()
        if row is None or row[0] < row[1] * SCAN_SHARE:
            return "lines"
        total = self._db.execute("SELECT sum(lines) FROM apps").fetchone()[0]
        if not total or row[0] < total * SCAN_SHARE:
            return "lines"
        return "lines NOT INDEXED"

    def _knows_trims(self) -> bool:
        """Whether apps remember how far they have been trimmed (apps.trimmed_through):
        from schema 5 on, and in most stores of schema 4 (see _prepare)."""
        version = self._schema_version()
        if version != 4:
            return version > 4
        columns = self._db.execute("SELECT name FROM pragma_table_info('apps')").fetchall()
        return ("trimmed_through",) in columns

    def last_id_received_before(self, instant: str) -> int:
        if not self._schema_ready():
            return 0
        row = self._db.execute("SELECT max(id) FROM lines WHERE received_at < ?", (instant,))
        return int(row.fetchone()[0] or 0)

    def version(self) -> int:
        # Changes whenever another connection commits: a cheap way to poll for new lines.
        if self._immutable and _wal_to_read(self.path):
            # Read as unchanging (a read-only file system with no writer then), and a
            # writer outside the mount has opened it since: read it as it changes.
            db = _connect(self.path, "mode=ro")
            self._db.close()
            self._db, self._immutable = db, False
            self._prepare(create=False)
            return -1  # a version no connection has: whatever is new gets read
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def replaced(self) -> bool:
        """Whether the file at the store's path is no longer the file this store has open."""
        return file_identity(self.path) != self._identity

    def close(self) -> None:
        if not self._immutable and self.replaced():
            # The last connection to close writes the -wal into the store's file, but SQLite
            # skips that for a file that has moved (`mv logs.db old.db` under a tail): the
            # lines of the commands that ended while this one had it open would stay behind.
            # Emptied too, if nothing else has the file open (no waiting: as PASSIVE if it
            # does): the -wal stays beside the path, and a store put there would read it.
            with contextlib.suppress(sqlite3.Error):  # a reader's read-only connection
                self._db.execute("PRAGMA busy_timeout = 0")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


def _insert_lines(
    db: sqlite3.Connection, shared: tuple[int, str | None, str], lines: list[LogLine]
) -> None:
    """Insert lines that share their app id, attributes and receive time."""
    for start in range(0, len(lines), _ROWS_PER_INSERT):
        part = lines[start : start + _ROWS_PER_INSERT]
        # Binding None goes through sqlite3's adapter lookup, slower than any other value:
        # a run of lines without structured data or MSGID (Heroku's own) writes NULLs into
        # the SQL.
        count = len(part)
        if countOf(map(_sd_of, part), None) == count == countOf(map(_msgid_of, part), None):
            rows = chain.from_iterable(map(_without_last_two, part))
            db.execute(_insert_statement(len(part), False), (*shared, *rows))
        else:
            db.execute(_insert_statement(len(part), True), (*shared, *chain.from_iterable(part)))


# LogLine ends with structured_data and msgid.
_sd_of = itemgetter(len(LogLine._fields) - 2)
_msgid_of = itemgetter(len(LogLine._fields) - 1)
_without_last_two = itemgetter(slice(0, len(LogLine._fields) - 2))


@functools.cache
def _insert_statement(rows: int, every_field: bool) -> str:
    # The shared values are bound once, as ?1-?3, and every row refers to them: binding
    # fewer values makes inserting about a fifth faster. Without structured data or MSGID,
    # each row has NULLs in their place (see _insert_lines).
    fields = len(LogLine._fields) - (0 if every_field else 2)
    nil = "" if every_field else ", NULL, NULL"
    values = (
        "(" + ", ".join(f"?{4 + row * fields + k}" for k in range(fields)) + nil + ", ?1, ?2, ?3)"
        for row in range(rows)
    )
    return _INSERT + ", ".join(values)


@functools.cache
def _frame_ids_statement(rows: int) -> str:
    values = (f"(?{2 + row * 3}, ?{3 + row * 3}, ?{4 + row * 3}, ?1)" for row in range(rows))
    return "INSERT INTO frame_ids (id, app_id, frame_id, received_at) VALUES " + ", ".join(values)


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and this must stay inside the transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _journal_mode_wal(db: sqlite3.Connection) -> str:
    """Switch to WAL mode; the mode it is in then. SQLite does not wait (no busy timeout)
    for the lock that switching a new file takes: another process creating the store at the
    same moment (serve and run started together) holds it for a moment."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _newest_id(db: sqlite3.Connection) -> int:
    # The newest id given out, not the newest kept: the newest lines may have been forgotten
    # (store forget), and a reader or drain starting below their ids would count them as lost.
    return int(db.execute(_NEWEST_ID).fetchone()[0] or 0)


_UNREAD_FORGOTTEN = "unread_forgotten:"
"""The meta keys of :meth:`SQLiteStore.unread_forgotten`'s notes, each followed by the
newest id it holds (20 digits, so that keys sort as ids do)."""
_UNREAD_FORGOTTEN_END = _UNREAD_FORGOTTEN[:-1] + ";"
"""The first key after every one of those (";" sorts right after ":")."""


def _id_ranges(rows: Iterable[tuple[int]]) -> str:
    """Ids in order as runs, ``LOW-HIGH`` or ``ID``, space-separated: an app's lines mostly
    come in runs of consecutive ids, a batch's."""
    runs: list[list[int]] = []
    for (line_id,) in rows:
        if runs and runs[-1][1] == line_id - 1:
            runs[-1][1] = line_id
        else:
            runs.append([line_id, line_id])
    return " ".join(f"{low}-{high}" if high > low else str(low) for low, high in runs)


_NEWEST_ID = (
    "SELECT max(coalesce((SELECT max(id) FROM lines), 0),"
    " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'lines'), 0))"
)


def _where(
    wanted: LineFilter, after: int | None = None, upto: int | None = None, *, lenient: bool = False
) -> tuple[str, list[Any]]:
    """The WHERE of a read of the lines ``wanted`` passes; ``lenient``: one that gives the
    functions of :func:`_searching` each message as its bytes, which they decode (text that
    is not UTF-8, which Python's sqlite3 cannot give them as text)."""
    clauses: list[str] = []
    params: list[Any] = []
    if after is not None:
        clauses.append("lines.id > ?")
        params.append(after)
    if upto is not None:
        clauses.append("lines.id <= ?")
        params.append(upto)
    if wanted.app is not None:
        clauses.append("lines.app_id = (SELECT id FROM apps WHERE name = ?)")
        params.append(wanted.app)
    if wanted.sources:
        clauses.append(f"source IN ({', '.join('?' * len(wanted.sources))})")
        params += wanted.sources
    for names in wanted.dynos:
        for dyno in names:
            rest = len(dyno) + 2
            params += [dyno, dyno + ".", dyno + "/", dyno + "-", dyno + ".", rest, _FIR_REST]
            params += [rest, rest]
        clauses.append(f"({' OR '.join([_DYNO_MATCHES] * len(names))})" if names else "0")
    if wanted.since is not None:
        clauses.append("time >= ?")
        params.append(wanted.since)
    if wanted.until is not None:
        clauses.append("time < ?")
        params.append(wanted.until)
    for patterns, function, negated in (
        (wanted.grep, _GREP, ""),
        (wanted.exclude, _EXCLUDE, "NOT "),
    ):
        if patterns:
            plain, regexes = _split(patterns)
            found = [f"instr({_MESSAGE}, ?) > 0"] * len(plain)
            if regexes:
                argument = f"CAST({_MESSAGE} AS BLOB)" if lenient else _MESSAGE
                found.append(f"{function}({argument})")
            clauses.append(f"{negated}({' OR '.join(found)})")
            params += plain
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


_DYNO_MATCHES = (
    "dyno = ? OR (dyno >= ? AND dyno < ?)"
    " OR (dyno >= ? AND dyno < ? AND substr(dyno, ?) GLOB ?"
    " AND NOT substr(dyno, ?) GLOB '*[^0-9a-z-]*' AND NOT substr(dyno, ?) GLOB '*-*-*')"
)
"""Whether a line's dyno matches one name of :func:`_where`'s dyno groups, given the name's
nine parameters: the name itself, anything starting "name." (the range ["name.", "name/") is
that prefix), or "name-" (the range ["name-", "name.")) and then filters.FIR_DYNO_REST, as
GLOBs."""

_GREP, _EXCLUDE = "herolog_grep", "herolog_exclude"
"""The SQL functions :func:`_where` calls for the ``--grep`` and ``--exclude`` patterns that
are regular expressions (see :func:`_searching`)."""
_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\|()")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _split(
    patterns: Sequence[re.Pattern[str]],
) -> tuple[list[str], list[Callable[[str], re.Match[str] | None]]]:
    """The text of the patterns that are plain (see :func:`_is_plain`), for instr(), and the
    search of the others, for the SQL function :func:`_searching` gives the query: one
    split, which both must agree on."""
    plain: list[str] = []
    regexes: list[Callable[[str], re.Match[str] | None]] = []
    for pattern in patterns:
        if _is_plain(pattern):
            plain.append(pattern.pattern)
        else:
            regexes.append(pattern.search)
    return plain, regexes


def _is_plain(pattern: re.Pattern[str]) -> bool:
    """Whether ``pattern`` matches its own text and nothing else: SQLite's instr() then finds
    it, in C, where a regular expression costs a call into Python for every line (a
    --grep over two million lines: 0.4 s against 0.9). Not text with a lone surrogate (a
    byte that is not UTF-8 on the command line), which SQLite cannot be given: it matches
    no stored message, as the regular expression finds."""
    return (
        pattern.flags == re.UNICODE
        and _REGEX_SYNTAX.isdisjoint(pattern.pattern)
        and _SURROGATE.search(pattern.pattern) is None
    )


@contextmanager
def _searching(
    db: sqlite3.Connection, wanted: LineFilter, *, lenient: bool = False
) -> Iterator[None]:
    """Give ``db`` the SQL functions that :func:`_where` calls for ``wanted``'s regular
    expressions, for the statements run inside.

    SQLite reports only that such a function failed, and Python's sqlite3 drops what it
    raised, a Ctrl-C's KeyboardInterrupt among them: that is raised again here. One that
    came between two calls is raised as the next begins, outside what it can catch: the
    handler records it then (a Ctrl-C of a --grep over a large store said 'user-defined
    function raised exception', exit status 1)."""
    raised: list[BaseException] = []
    for patterns, name in ((wanted.grep, _GREP), (wanted.exclude, _EXCLUDE)):
        _, searches = _split(patterns)
        if searches:
            found = _search_all(searches, raised, lenient)
            db.create_function(name, 1, found, deterministic=True)
    with ctrl_c_recorded(raised):
        try:
            yield
        except sqlite3.OperationalError:
            if raised:
                raise raised[0] from None
            raise


def _search_all(
    searches: Sequence[Callable[[str], re.Match[str] | None]],
    raised: list[BaseException],
    lenient: bool = False,
) -> Callable[[Any], bool]:
    def found(message: Any) -> bool:
        try:
            if lenient:  # the message's bytes (see _where)
                message = _REPLACING(message)
            for search in searches:  # noqa: SIM110 (any() of a generator: slower, every line)
                if search(message) is not None:
                    return True
            return False
        except BaseException as error:
            raised.append(error)
            raise

    return found


def _drain_fields(row: Sequence[Any]) -> tuple[str, str, str, str, str, str, Delivery]:
    identity, delivery = row[:6], row[6:]
    return (*identity, Delivery(delivery[0], delivery[1], bool(delivery[2]), *delivery[3:]))


def unusable_store(path: Path, error: object) -> str:
    """What to say of a file that is not a usable store, and how to start afresh."""
    return (
        f"{path} is not a usable herolog store ({error}); "
        f"move it aside (mv '{path}' '{path}.broken') and herolog starts a new one"
    )


def _why(path: Path, error: sqlite3.Error) -> str:
    """SQLite's message, and the likely cause when SQLite's own says little."""
    if files := _out_of_files():
        return f"{error} ({files})"
    with contextlib.suppress(OSError):
        fs = os.statvfs(path.parent)
        if fs.f_flag & os.ST_RDONLY:
            return f"{error} (its file system is read-only)"
        if _read_only_directory(path):
            return f"{error} (its directory {path.parent} cannot be written)"
        if fs.f_bavail == 0 and "full" not in str(error):
            return f"{error} (its file system is full)"
        if not _writable(path):
            return f"{error} (its file cannot be written by this user)"
    return str(error)


def _unopened(path: Path, error: sqlite3.DatabaseError) -> StoreError:
    """The error for a store that SQLite could not open or read the schema of."""
    if isinstance(error, sqlite3.OperationalError):
        # A full disk or a read-only file system: the file is fine, moving it is not.
        return StoreError(f"cannot open the store {path}: {_why(path, error)}")
    return StoreError(unusable_store(path, error))


def _connect(path: Path, options: str) -> sqlite3.Connection:
    db = sqlite3.connect(
        f"{path.absolute().as_uri()}?{options}",
        uri=True,
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=2 * _ROWS_PER_INSERT + 64,  # the INSERTs for every row count
    )
    db.create_function("herolog_app_id", 1, app_id, deterministic=True)
    return db


def app_id(name: str) -> str:
    """A stable id for an app, shaped like Heroku's (a UUID)."""
    return str(uuid.uuid5(_APP_NAMESPACE, name))


def _out_of_files() -> str | None:
    """Why this process can open no more files, if it cannot (SQLite says only that it
    cannot open the database, as it would of a path that is not there)."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as error:
        if error.errno == errno.EMFILE:
            return "this process has reached its open-file limit, ulimit -n"
        if error.errno == errno.ENFILE:
            return "the system has reached its open-file limit, fs.file-max"
    return None


def _in_the_way(directory: Path) -> str:
    """What stands where ``directory`` or one of its parents should be: a file, a symbolic
    link to nothing (a disk that is not mounted), or a loop of links."""
    there = next((p for p in (directory, *directory.parents) if os.path.lexists(p)), directory)
    it = "it" if there == directory else str(there)
    try:
        there.stat()
    except FileNotFoundError:
        return f"{it} is a symbolic link to {there.readlink()}, which is not there"
    except OSError as error:  # a loop of links
        return ("" if there == directory else f"{there}: ") + (error.strerror or str(error))
    return f"{it} is there, and not a directory"


def _read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _full(path: Path) -> bool:
    """Whether the store's file system has no room left for this user."""
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def open_to_everyone(path: Path) -> str | None:
    """What to say of a store of this user's that every user of the machine may read, or
    None. herolog makes its stores 0600, but a file made otherwise keeps its mode: one an
    older herolog made, a copy put in its place (sqlite3's .backup writes 0644 under a umask
    of 022), and the drain URLs in it carry passwords. Said, not changed: a mode given on
    purpose (0640, a group that reads the logs) stands."""
    try:
        info = path.stat()
    except OSError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    # A file system that ignores modes shows the user's own files as 0777: nothing to mend.
    if not mode & stat.S_IROTH or mode == 0o777 or info.st_uid != os.geteuid():
        return None
    return (
        f"the store {path} can be read by every user of this machine (mode {mode:04o}), and"
        f" drain URLs in it carry passwords: chmod 600 it (640 for a group that reads the logs)"
    )


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def _readable(path: Path) -> bool:
    return os.access(path, os.R_OK, effective_ids=os.access in os.supports_effective_ids)


def _unreadable(path: Path) -> str:
    # SQLite says only "unable to open database file"; the store is not read-only either.
    return f"cannot open the store {path}: its file cannot be read by this user"


def _unwritable_file(path: Path) -> bool:
    """Whether the file at ``path`` is there and this user may not write to it. The last
    connection to close deletes a store's -wal and -shm, and another's opening makes them
    anew: one that is not the same file before and after access() was not refused."""
    try:
        before = path.stat()
        if _writable(path):
            return False
        after = path.stat()
    except OSError:  # not there (any more)
        return False
    same = (before.st_dev, before.st_ino, before.st_ctime_ns)
    return same == (after.st_dev, after.st_ino, after.st_ctime_ns)


def _read_only_directory(path: Path) -> bool:
    """Whether the store's directory is one the user may not create files in (a backup's):
    SQLite cannot make the -wal and -shm files there that it reads a WAL store with."""
    return not os.access(path.parent, os.W_OK | os.X_OK)


def file_identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` (device and inode): another once it is replaced."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
APP_NAME_RULE = (
    "app names are letters, digits, '.', '_' and '-' (100 at most),"
    " starting with a letter or digit, without '..'"
)


def valid_app_name(name: str) -> bool:
    """The names apps may have: what a drain URL's path can carry, as Heroku's names."""
    return bool(_APP_NAME.fullmatch(name)) and ".." not in name


def _term(seconds: float) -> tuple[str, str]:
    """From and until when a lease or trim hold taken now for ``seconds`` is in force: it ends
    ``seconds`` from now, and starts as long before, so that another process whose clock
    reads a moment behind finds it in force, and a clock set back by more (a fast clock
    corrected) does not leave a killed serve's lease or hold in force that much longer."""
    from datetime import timedelta

    from herolog import timestamps

    now = timestamps.now()
    return (
        timestamps.to_instant(now - timedelta(seconds=abs(seconds))),
        timestamps.to_instant(now + timedelta(seconds=seconds)),
    )


def owner_pid(owner: str) -> int | None:
    """The process of a lease's or trim hold's ``owner`` (``PID.RANDOM``), if it names one."""
    pid = owner.split(".")[0]
    return int(pid) if pid.isdigit() else None


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (as far as this one can tell: one it
    may not signal exists all the same)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _in_force(held: tuple[str, str, str], now: str) -> bool:
    """Whether a lease (holder, start, until) is in force at ``now``. An end that is no
    instant (a value edited by hand) is none: compared as text, 'garbage' is later than any
    instant, a lease for ever, which no serve would take over and no upgrade wait out."""
    _, start, until = held
    return start <= now < until and _INSTANT.fullmatch(until) is not None


def _file_size(path: Path) -> int:
    """0 for a file that is not there (a -wal or -shm that SQLite has removed)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _shm_in_use(path: Path) -> bool:
    """Whether the store's -shm is one its connections share. SQLite makes it 3 bytes
    first and then its first 32 KiB page: a connection refused by a full disk in between
    leaves the 3 bytes, with an empty -wal, and a reader that took them for a writer's
    failed ('disk I/O error') until the disk had room."""
    return _file_size(Path(f"{path}-shm")) >= 32768


def _wal_to_read(path: Path) -> bool:
    """Whether a reader must read the store's WAL, not only its file: one with frames in it
    (a copy of a store whose -shm was left behind, say), or one a writer has open. Not the
    empty -wal and stub -shm that a writer refused by a full disk leaves."""
    return _file_size(Path(f"{path}-wal")) > 0 or _shm_in_use(path)


def open_existing(path: Path) -> SQLiteStore | None:
    """The store at ``path`` for reading, or None if there is none yet; never creates one."""
    try:
        return SQLiteStore.open(path, create=False)
    except FileNotFoundError:
        return None


def read_existing(path: Path, read: Callable[[SQLiteStore], T], otherwise: T) -> T:
    """What ``read`` gives of the store at ``path``, closed after; ``otherwise`` when there
    is none yet (never creates one)."""
    store = open_existing(path)
    if store is None:
        return otherwise
    with store:
        return read(store)


def using_store(
    path: Path,
    work: Callable[[SQLiteStore], T],
    *,
    create: bool = False,
    lock_wait: Callable[[float], object] | None = None,
) -> T:
    """Open the store at ``path``, do ``work`` with it, close it: one-off calls from a
    server's worker threads (a connection is cheap next to keeping one per thread).

    Without ``create``, a store that is not there is a StoreError. A server's store is
    there from its start; one gone since was moved or deleted, and a new file at its path
    would take over the WAL that the writer still commits to (SQLite finds it by name),
    and with it lines the writer has answered for.
    """
    try:
        store = SQLiteStore.open(path, create=create, lock_wait=lock_wait)
    except FileNotFoundError:
        raise StoreError(f"the store {path} is gone (moved or deleted)") from None
    with store:
        return work(store)


def open_store(
    path: Path | None = None,
    *,
    create: bool = True,
    lock_wait: Callable[[float], object] | None = None,
) -> SQLiteStore:
    """The store at ``path`` (default: the one in ``HEROLOG_HOME``); see SQLiteStore.open."""
    from herolog import config

    return SQLiteStore.open(path or config.store_path(), create=create, lock_wait=lock_wait)
