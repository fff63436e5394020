from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from herolog import store as store_module
from herolog.drains import counted
from herolog.filters import LineFilter
from herolog.parser import LogLine, Received
from herolog.store import (
    DEFAULT_HISTORY,
    NOTICE_HOST,
    SCHEMA_VERSION,
    Batch,
    Delivery,
    DrainExists,
    SQLiteStore,
    StoredLine,
    StoreError,
    app_id,
    open_store,
)
from tests.helpers import (
    RECEIVED,
    decode_attributes,
    fill,
    herolog_process,
    interrupted_in_lock_wait,
    line,
)
from tests.server.conftest import ServeProcess


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        yield store


def messages(found: tuple[list[StoredLine], int]) -> list[str]:
    return [x.message for x in found[0]]


def rows(path: Path, sql: str) -> list[Any]:
    """What ``sql`` reads from the file at ``path``, as another program reads it: with a
    connection of its own, closed after."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def test_open_store_uses_herolog_home(herolog_home: Path) -> None:
    with open_store() as store:
        assert store.path == herolog_home / "logs.db"
        assert store.path.exists()
        assert rows(store.path, "PRAGMA journal_mode")[0][0] == "wal"


def test_lines_come_back_in_arrival_order_with_growing_ids(store: SQLiteStore) -> None:
    store.append([Batch("demo", [line("a", second=5), line("b", second=5)])], RECEIVED)
    fill(store, "demo", ["c"], second=1)  # older timestamp, later arrival
    found, newest = store.last(LineFilter(app="demo"), 10)
    assert [x.message for x in found] == ["a", "b", "c"]
    assert [x.id for x in found] == sorted(x.id for x in found)
    assert newest == found[-1].id
    assert found[0].app == "demo"
    assert found[0].received_at == RECEIVED.time


def test_all_apps_merge_in_arrival_order(store: SQLiteStore) -> None:
    fill(store, "one", ["1a"])
    fill(store, "two", ["2a"])
    fill(store, "one", ["1b"])
    assert messages(store.last(LineFilter(), 10)) == ["1a", "2a", "1b"]
    assert messages(store.last(LineFilter(app="one"), 10)) == ["1a", "1b"]
    assert messages(store.last(LineFilter(app="missing"), 10)) == []


def test_last_n_applies_filters_before_the_limit(store: SQLiteStore) -> None:
    for i in range(50):
        store.append(
            [Batch("demo", [line(f"app {i}"), line(f"router {i}", source="heroku", dyno="router")])]
        )
    found = messages(store.last(LineFilter(sources=("app",)), 20))
    assert found == [f"app {i}" for i in range(30, 50)]
    assert messages(store.last(LineFilter(grep=(re.compile("router 4"),)), 3)) == [
        "router 47",
        "router 48",
        "router 49",
    ]


def test_dyno_filter_is_exact_or_dotted_prefix(store: SQLiteStore) -> None:
    for dyno in ["web.1", "web.12", "webby.1", "web", "web-1", "worker.1", "web.1.2"]:
        fill(store, "demo", [dyno], dyno=dyno)
    assert messages(store.last(LineFilter(dynos=(("web",),)), 100)) == [
        "web.1",
        "web.12",
        "web",
        "web.1.2",
    ]
    assert messages(store.last(LineFilter(dynos=(("web.1",),)), 100)) == ["web.1", "web.1.2"]
    assert messages(store.last(LineFilter(dynos=(("web",), ("web.12",))), 100)) == ["web.12"]


def test_a_process_type_matches_its_fir_dynos(store: SQLiteStore) -> None:
    """Fir-generation dynos are named as Kubernetes names pods: TYPE-HASH-XXXXX."""
    dynos = [
        "web-7d9f8c6b5-x2kqz",
        "web-api-7d9f8c6b5-x2kqz",
        "web-5f6d7c8b9-abcde",
        "web-1",
        "web-7d9f8c6b5-x2kqz0",
        "worker-7d9f8c6b5-x2kqz",
    ]
    for dyno in dynos:
        fill(store, "demo", [dyno], dyno=dyno)
    assert messages(store.last(LineFilter(dynos=(("web",),)), 100)) == [
        "web-7d9f8c6b5-x2kqz",
        "web-5f6d7c8b9-abcde",
    ]
    assert messages(store.last(LineFilter(dynos=(("web-api",),)), 100)) == [
        "web-api-7d9f8c6b5-x2kqz"
    ]
    assert messages(store.last(LineFilter(dynos=(("web-7d9f8c6b5-x2kqz",),)), 100)) == [
        "web-7d9f8c6b5-x2kqz"
    ]


def test_names_in_one_group_are_any_of_them_and_every_group_must_match(
    store: SQLiteStore,
) -> None:
    """-d web.1 -d worker (one group), -p web (another), -s app -s heroku (any source)."""
    for dyno in ["web.1", "web.2", "worker.1", "router"]:
        fill(store, "demo", [dyno], dyno=dyno)
    fill(store, "demo", ["heroku web.1"], source="heroku", dyno="web.1")
    fill(store, "demo", ["other web.1"], source="other", dyno="web.1")

    def shown(wanted: LineFilter) -> list[str]:
        return messages(store.last(wanted, 100))

    assert shown(LineFilter(dynos=(("web.1", "worker"),))) == [
        "web.1",
        "worker.1",
        "heroku web.1",
        "other web.1",
    ]
    assert shown(LineFilter(dynos=(("web.1", "worker"), ("web",)))) == [
        "web.1",
        "heroku web.1",
        "other web.1",
    ]
    assert shown(LineFilter(sources=("heroku", "other"))) == ["heroku web.1", "other web.1"]
    assert shown(LineFilter(sources=("app", "heroku"), dynos=(("web.1", "router"),))) == [
        "web.1",
        "router",
        "heroku web.1",
    ]


def test_a_filter_of_as_many_terms_as_it_may_hold_is_a_query_sqlite_takes(
    store: SQLiteStore,
) -> None:
    """MAX_TERMS of each at once: SQLite refuses an expression more than 1,000 deep."""
    from herolog.filters import MAX_TERMS

    fill(store, "demo", ["v7 here"], dyno="d7", source="s7")

    def names(prefix: str) -> tuple[str, ...]:
        return tuple(f"{prefix}{n}" for n in range(MAX_TERMS))

    wanted = LineFilter(
        app="demo",
        sources=names("s"),
        dynos=(names("d"),),  # one group: the longest chain of ORs
        grep=tuple(re.compile(text) for text in names("v")),
        exclude=tuple(re.compile(text) for text in names("x")),
        since="2024-03-05T00:00:00.000000Z",
        until="2024-03-06T00:00:00.000000Z",
    )
    assert wanted.over_limit() is None
    assert messages(store.last(wanted, 10)) == ["v7 here"]
    assert [x.message for x in store.after(0, wanted, 10)[0]] == ["v7 here"]
    assert store.first_of_last(wanted, 10)[0] is not None
    assert LineFilter(dynos=(names("d"), ("x",))).over_limit() == "dynos"


def test_time_filters_since_inclusive_until_exclusive(store: SQLiteStore) -> None:
    for second in range(10):
        fill(store, "demo", [str(second)], second=second)
    wanted = LineFilter(since="2024-03-05T09:00:03.000000Z", until="2024-03-05T09:00:06.000000Z")
    assert messages(store.last(wanted, 100)) == ["3", "4", "5"]


def test_grep_any_and_exclude_all(store: SQLiteStore) -> None:
    fill(store, "demo", ["GET /a", "POST /a", "GET /health", "DELETE /b"])
    wanted = LineFilter(
        grep=(re.compile("GET"), re.compile("POST")), exclude=(re.compile("health"),)
    )
    assert messages(store.last(wanted, 100)) == ["GET /a", "POST /a"]


def test_ring_buffer_keeps_the_newest_lines_per_app(store: SQLiteStore) -> None:
    assert store.history == DEFAULT_HISTORY == 1500
    for start in range(0, 1600, 400):
        fill(store, "big", [str(i) for i in range(start, start + 400)])
    fill(store, "small", ["only"])
    kept = messages(store.last(LineFilter(app="big"), 1500))
    assert kept == [str(i) for i in range(100, 1600)]
    assert messages(store.last(LineFilter(app="small"), 10)) == ["only"]
    assert {a.name: a.lines for a in store.apps()} == {"big": 1500, "small": 1}
    count = rows(store.path, "SELECT count(*) FROM lines")[0][0]
    assert count == 1501


def test_history_can_be_raised_and_lowered(store: SQLiteStore) -> None:
    store.set_history(100_000)
    fill(store, "demo", [str(i) for i in range(3000)])
    assert len(store.last(LineFilter(), 100_000)[0]) == 3000
    store.set_history(10)
    assert messages(store.last(LineFilter(), 100)) == [str(i) for i in range(2990, 3000)]
    with SQLiteStore.open(store.path) as reopened:
        assert reopened.history == 10
    with pytest.raises(ValueError, match="between 1 and"):
        store.set_history(0)


def test_a_large_trim_lets_another_writer_in_between_its_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store history and store forget of a large app delete its lines in transactions of
    TRIM_STEP lines: one transaction for an app of 10,000,000 lines held the write lock for
    30 s, serve's intake waiting all along, then answering 503. Another writer (serve's)
    stores between the steps, and the counts readers go by stay exact."""
    monkeypatch.setattr(store_module, "TRIM_STEP", 100)
    monkeypatch.setattr(store_module, "TRIM_PAUSE_S", 0.0)
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        store.set_history(100_000)
        fill(store, "big", [str(i) for i in range(1050)])
        fill(store, "huge", [str(i) for i in range(1050)])
        with SQLiteStore.open(store.path) as other:
            other._db.execute("PRAGMA busy_timeout = 0")  # the lock free, or "database is locked"
            begun: list[str] = []
            stored: list[int | str] = []

            def between_steps(sql: str) -> None:
                if sql == "BEGIN IMMEDIATE":
                    if begun:  # a transaction of the command's has ended: the lock is free
                        try:
                            stored.extend(other.append([Batch("small", [line("between")])]))
                        except sqlite3.OperationalError as error:
                            stored.append(str(error))
                    begun.append(sql)

            store._db.set_trace_callback(between_steps)
            try:
                assert store.forget_app("huge") == 1050
                assert len(stored) >= 9, stored
                assert set(stored) == {1}, stored
                stored.clear()
                store.set_history(10)
                assert len(stored) >= 9, stored
                assert set(stored) == {1}, stored
            finally:
                store._db.set_trace_callback(None)
            assert messages(store.last(LineFilter(app="big"), 100)) == [
                str(i) for i in range(1040, 1050)
            ]
            assert {a.name: a.lines for a in store.apps()} == {"big": 10, "small": 10}
            # Every line of huge gone, counted as ever stored: a tail's L11 goes by these.
            assert store.lines_through("huge", store.newest_id()) == 1050
            assert store.lines_through("big", store.newest_id()) == 1050
            assert store.trimmed_between(0, 2100) == 2100 - 10


def test_a_batch_larger_than_the_history_keeps_its_newest_lines(store: SQLiteStore) -> None:
    store.set_history(5)
    fill(store, "demo", [str(i) for i in range(12)])
    assert messages(store.last(LineFilter(), 100)) == ["7", "8", "9", "10", "11"]


def test_ids_never_go_back_even_after_trimming(store: SQLiteStore) -> None:
    store.set_history(1)
    fill(store, "demo", ["a"])
    first = store.newest_id()
    fill(store, "demo", ["b"])
    fill(store, "other", ["c"])
    store.set_history(1)
    assert store.newest_id() > first
    ids = [x.id for x in store.last(LineFilter(), 10)[0]]
    assert min(ids) > first


def test_trimming_takes_only_the_apps_own_oldest_lines(store: SQLiteStore) -> None:
    # The apps' ids interleave, so one app's oldest lines are not a range of ids.
    store.set_history(3)
    for i in range(6):
        store.append([Batch("a", [line(f"a{i}")]), Batch("b", [line(f"b{i}"), line(f"b{i}'")])])
    assert messages(store.last(LineFilter(app="a"), 10)) == ["a3", "a4", "a5"]
    assert messages(store.last(LineFilter(app="b"), 10)) == ["b4'", "b5", "b5'"]
    assert {a.name: a.lines for a in store.apps()} == {"a": 3, "b": 3}


def test_a_trim_takes_the_oldest_lines_up_to_the_hold_even_past_what_the_app_has(
    store: SQLiteStore,
) -> None:
    store.append([Batch("a", [line(f"a{i}") for i in range(5)]), Batch("b", [line("b")])])
    ids = [x.id for x in store.last(LineFilter(app="a"), 10)[0]]
    for excess, hold, kept in [
        (3, None, ids[3:]),
        (9, None, []),  # more than the app has (a count that is off): all of it
        (3, ids[1], ids[2:]),
        (9, ids[1], ids[2:]),
    ]:
        with store._write() as db:
            gone, through = store._trim(1, excess, hold)
            left = [row[0] for row in db.execute("SELECT id FROM lines WHERE app_id = 1")]
            db.execute("ROLLBACK")
            db.execute("BEGIN")
        assert (gone, left) == (len(ids) - len(kept), kept)
        assert through == (ids[len(ids) - len(kept) - 1] if gone else 0)
    assert messages(store.last(LineFilter(app="b"), 10)) == ["b"]


def test_structured_data_and_its_absence_are_kept_line_by_line(store: SQLiteStore) -> None:
    # Runs of lines without structured data are inserted by another statement than runs
    # with some: every mix, across the 256-line statements, must come back as it went in.
    store.set_history(10_000)
    sd = '[meta sequenceId="1"]'
    mixes: list[list[str | None]] = [
        [None] * 300,
        [sd] * 300,
        [None if i % 7 else sd for i in range(600)],
        [None] * 255 + [sd] + [None] * 256,
        ["" if i == 3 else None for i in range(5)],
    ]
    for n, mix in enumerate(mixes):
        lines = [line(f"{n}.{i}")._replace(structured_data=value) for i, value in enumerate(mix)]
        store.append([Batch(f"mix{n}", lines)])
        back = store.last(LineFilter(app=f"mix{n}"), 10_000)[0]
        assert [(x.message, x.structured_data) for x in back] == [
            (x.message, x.structured_data) for x in lines
        ]


def test_append_is_all_or_nothing(store: SQLiteStore) -> None:
    fill(store, "demo", ["kept"])
    bad = LogLine("t", "t", "app", "web.1", object(), 190, "host", None)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.Error):
        store.append([Batch("demo", [line("lost 1")]), Batch("other", [line("lost 2"), bad])])
    assert messages(store.last(LineFilter(), 10)) == ["kept"]
    assert [a.name for a in store.apps()] == ["demo"]


def test_attributes_are_stored_per_batch(store: SQLiteStore) -> None:
    store.append(
        [
            Batch("demo", [line("a")], {"ddsource": "heroku", "env": "prod"}),
            Batch("demo", [line("b")]),
            # As serve's writer hands them over: the JSON text it measured, kept as it is.
            Batch("demo", [line("c")], '{"team":"café"}'),
            Batch("demo", [line("d")], '{"team":"café"}'),
        ]
    )
    first, second, third, fourth = store.last(LineFilter(), 10)[0]
    assert decode_attributes(first) == {"ddsource": "heroku", "env": "prod"}
    assert first.attributes == '{"ddsource": "heroku", "env": "prod"}'
    assert decode_attributes(second) == {}
    assert third.attributes == fourth.attributes == '{"team":"café"}'


def test_one_append_of_many_batches_keeps_each_ones_app_and_attributes(
    store: SQLiteStore,
) -> None:
    # Runs of batches that share app and attributes are inserted together: the runs must
    # not bleed into each other, and arrival order holds across them.
    prod = {"env": "prod"}
    batches = [
        Batch("one", [line("1"), line("2")], prod),
        Batch("one", [line("3")], prod),
        Batch("two", [line("4")], prod),
        Batch("one", [line("5")], {"env": "dev"}),
        Batch("one", [line("6")]),
        Batch("one", [line(str(n)) for n in range(7, 607)]),  # several statements
        Batch("two", [line("607")], prod),
    ]
    assert store.append(batches) == [2, 1, 1, 1, 1, 600, 1]
    found, _ = store.last(LineFilter(), 1000)
    assert [x.message for x in found] == [str(n) for n in range(1, 608)]
    assert [x.id for x in found] == sorted(x.id for x in found)
    shown = [(x.app, decode_attributes(x)) for x in found]
    assert shown[:5] == [
        ("one", prod),
        ("one", prod),
        ("one", prod),
        ("two", prod),
        ("one", {"env": "dev"}),
    ]
    assert all(s == ("one", {}) for s in shown[5:606])
    assert shown[606] == ("two", prod)


def test_after_continues_past_lines_that_do_not_match(store: SQLiteStore) -> None:
    fill(store, "demo", ["a", "b"])
    start = store.newest_id()
    fill(store, "demo", ["skip 1", "skip 2", "c", "d", "skip 3"])
    wanted = LineFilter(exclude=(re.compile("skip"),))
    found, last_id = store.after(start, wanted, limit=2)  # the limit counts lines found
    assert ([x.message for x in found], last_id) == (["c", "d"], start + 4)
    assert store.after(last_id, wanted, limit=2) == ([], start + 5)  # skipped to the newest
    assert store.after(start + 5, LineFilter(), limit=2) == ([], start + 5)
    assert [x.message for x in store.after(start, LineFilter(sources=("heroku",)))[0]] == []


def test_reading_a_missing_store_does_not_create_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SQLiteStore.open(tmp_path / "nope" / "logs.db", create=False)
    assert not (tmp_path / "nope").exists()


def test_a_file_that_is_not_a_store_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    path.write_bytes(b"this is not sqlite" * 100)
    for create in (True, False):
        with pytest.raises(StoreError, match=r"is not a usable herolog store .* move it aside"):
            SQLiteStore.open(path, create=create)
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as db, db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="no herolog schema"):
        SQLiteStore.open(other)


def test_a_store_from_a_newer_herolog_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    SQLiteStore.open(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    for create in (True, False):
        with pytest.raises(StoreError, match="newer herolog"):
            SQLiteStore.open(path, create=create)
    # Not left open in the process, which goes on (serve's API, a writer's restart).
    held = [fd for fd in Path("/proc/self/fd").iterdir() if fd.resolve() == path.resolve()]
    assert held == []


def test_writer_and_readers_in_separate_processes_never_see_locked(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    SQLiteStore.open(path).close()
    writer = textwrap.dedent(
        f"""
        from pathlib import Path
        from herolog.store import Batch, SQLiteStore
        from tests.helpers import line
        store = SQLiteStore.open(Path({str(path)!r}))
        for i in range(300):
            store.append([Batch("demo", [line(f"{{i}}.{{j}}") for j in range(20)])])
        """
    )
    reader = textwrap.dedent(
        f"""
        from pathlib import Path
        from herolog.filters import LineFilter
        from herolog.store import SQLiteStore
        store = SQLiteStore.open(Path({str(path)!r}), create=False)
        last = 0
        previous = 0
        for _ in range(400):
            found, newest = store.last(LineFilter(app="demo"), 100)
            ids = [x.id for x in found]
            assert ids == sorted(set(ids)), "history out of order or repeated"
            assert not ids or newest >= ids[-1]
            more, last = store.after(last, LineFilter())
            new_ids = [x.id for x in more]
            assert new_ids == sorted(set(new_ids)) and (not new_ids or new_ids[0] > previous), "tail repeated a line"
            previous = new_ids[-1] if new_ids else previous
        print("ok")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer], stderr=subprocess.PIPE, text=True)]
    procs += [
        subprocess.Popen(
            [sys.executable, "-c", reader],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    procs.append(
        subprocess.Popen([sys.executable, "-c", writer], stderr=subprocess.PIPE, text=True)
    )
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "locked" not in err
        assert out in (None, "ok\n")
    with SQLiteStore.open(path) as store:
        assert store.apps()[0].lines == 1500
        assert store.newest_id() == 2 * 300 * 20


@pytest.mark.slow
def test_processes_creating_the_store_at_once_never_see_locked(tmp_path: Path) -> None:
    """serve and `herolog run` (or two runs) started together on a new HEROLOG_HOME: the
    switch of the new file to WAL mode, which SQLite does not wait for, failed as 'database
    is locked' in one of them as another read or switched it."""
    rounds = 40
    child = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from herolog.store import Batch, SQLiteStore
        from tests.helpers import line
        print("ready", flush=True)
        start = float(sys.stdin.readline())
        for attempt in range({rounds}):
            go = start + attempt * 0.05
            time.sleep(max(0, go - time.time() - 0.005))
            while time.time() < go:
                pass
            store = SQLiteStore.open(Path({str(tmp_path)!r}) / f"{{attempt}}.db")
            store.append([Batch(f"app{{sys.argv[1]}}", [line("x")])])
            store.close()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(k)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(6)
    ]
    # Every one has imported what it needs before the first round: all six start it together.
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=120)[1]
    start = time.time() + 0.2
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for attempt in range(rounds):
        with closing(SQLiteStore.open(tmp_path / f"{attempt}.db", create=False)) as store:
            assert [app.lines for app in store.apps()] == [1] * 6


def test_a_store_whose_wal_another_process_closes_meanwhile_is_opened(tmp_path: Path) -> None:
    """The last connection to close (`herolog logs` ending, a run exiting) deletes the -wal
    file: a process opening the store as it did saw the file there, then asked whether it
    could write to it, and was told 'logs.db-wal is read-only to this user'."""
    path = tmp_path / "logs.db"
    SQLiteStore.open(path).close()
    churn = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from herolog.store import SQLiteStore
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            SQLiteStore.open(Path({str(path)!r})).close()
        """
    )
    other = subprocess.Popen([sys.executable, "-c", churn], stderr=subprocess.PIPE, text=True)
    try:
        opened = 0
        while other.poll() is None:
            SQLiteStore.open(path).close()
            opened += 1
    finally:
        _, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    assert opened > 100  # the two did overlap


def test_a_wal_made_anew_while_access_looks_at_it_is_not_called_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The churn above at its narrowest, which two processes hit too rarely to test: the
    -wal goes (the last connection closing) just before access() looks, so it fails, and
    another process's opening makes a new one before the second look. access() is the real
    one, on a file really gone; only the moment is chosen."""
    path = tmp_path / "logs.db"
    SQLiteStore.open(path).close()
    wal, anew = Path(f"{path}-wal"), tmp_path / "anew"
    wal.write_bytes(b"")
    anew.write_bytes(b"")  # made while the old one is there: another inode for certain
    real_access = os.access
    looked: list[bool] = []

    def access(target: str | os.PathLike[str], mode: int, **kwargs: bool) -> bool:
        if Path(target) != wal:
            return real_access(target, mode, **kwargs)
        wal.unlink()
        try:
            found = real_access(target, mode, **kwargs)
            looked.append(found)
            return found
        finally:
            anew.rename(wal)

    monkeypatch.setattr(os, "access", access)
    SQLiteStore.open(path).close()
    assert looked == [False]


def test_a_repeated_frame_id_is_stored_once_per_app(store: SQLiteStore) -> None:
    first = store.append([Batch("demo", [line("a"), line("b")], frame_id="F1")])
    assert first == [2]
    assert store.append([Batch("demo", [line("a"), line("b")], frame_id="F1")]) == [0]
    # the same id for another app, and a retry inside one transaction
    assert store.append(
        [
            Batch("other", [line("c")], frame_id="F1"),
            Batch("demo", [line("d")], frame_id="F2"),
            Batch("demo", [line("d")], frame_id="F2"),
        ]
    ) == [1, 1, 0]
    assert messages(store.last(LineFilter(), 10)) == ["a", "b", "c", "d"]
    with SQLiteStore.open(store.path) as reopened:
        assert reopened.append([Batch("demo", [line("a")], frame_id="F1")]) == [0]


def test_empty_batches_store_nothing(store: SQLiteStore) -> None:
    assert store.append([Batch("demo", []), Batch("demo", [line("x")])]) == [0, 1]
    # With a Frame-Id (an empty POST carries one), for an app the store has not had too: the
    # id is not taken, as nothing was stored under it.
    stored = store.append([Batch("new", [], frame_id="F1"), Batch("demo", [], frame_id="F1")])
    assert stored == [0, 0]
    assert store.append([Batch("demo", [line("y")], frame_id="F1")]) == [1]
    assert [app.name for app in store.apps()] == ["demo"]


def test_old_frame_ids_are_forgotten(store: SQLiteStore) -> None:
    for i in range(5):
        store.append(
            [Batch("demo", [line(str(i))], frame_id=f"F{i}")],
            Received.at(datetime(2020, 1, 1, 0, 0, i, tzinfo=UTC)),
        )
    store.append([Batch("demo", [line("new")], frame_id="NEW")])
    store.forget_frame_ids(older_than_s=3600, keep_at_most=100)
    assert store.append([Batch("demo", [line("0")], frame_id="F0")]) == [
        1
    ]  # forgotten: stored again
    assert store.append([Batch("demo", [line("new")], frame_id="NEW")]) == [0]  # still remembered
    store.forget_frame_ids(older_than_s=10**9, keep_at_most=1)
    count = rows(store.path, "SELECT count(*) FROM frame_ids")[0][0]
    assert count == 1


def test_the_writer_remembers_frame_ids_at_least_as_long_as_logplex_needs() -> None:
    from herolog import store_writer

    # the issue: at least ten minutes or 100,000 ids
    assert store_writer.FRAME_ID_WINDOW_S >= 600
    assert store_writer.FRAME_ID_MAX >= 100_000


def test_beyond_the_newest_so_many_frame_ids_even_young_ones_are_forgotten(
    store: SQLiteStore,
) -> None:
    """The writer's memory of ids is bounded under a flood, however young they are."""
    for i in range(5):
        store.append([Batch("demo", [line(str(i))], frame_id=f"F{i}")])
    store.forget_frame_ids(3600, keep_at_most=2)
    again = [Batch("demo", [line(str(i))], frame_id=f"F{i}") for i in range(5)]
    assert store.append(again) == [1, 1, 1, 0, 0]
    remembered = rows(store.path, "SELECT frame_id FROM frame_ids ORDER BY id")
    assert [row[0] for row in remembered] == ["F3", "F4", "F0", "F1", "F2"]


@pytest.mark.parametrize(
    ("minutes_ago", "stored_again"),
    [
        # A range of rows goes: one stored after a young one is kept, whatever its time.
        ({"old": 90, "young": 5, "late": 90}, [1, 0, 0]),
        # A row stored last with an earlier time (a clock stepped back, another process's
        # late commit) does not take the rows of the hour before it with it.
        ({"a": 30, "b": 20, "c": 50}, [0, 0, 0]),
    ],
)
def test_frame_ids_are_forgotten_in_arrival_order(
    store: SQLiteStore, minutes_ago: dict[str, int], stored_again: list[int]
) -> None:
    now = datetime.now(UTC)
    for name, minutes in minutes_ago.items():
        store.append(
            [Batch("demo", [line(name)], frame_id=name)],
            Received.at(now - timedelta(minutes=minutes)),
        )
    store.forget_frame_ids(older_than_s=3600, keep_at_most=100)
    again = [Batch("demo", [line(name)], frame_id=name) for name in minutes_ago]
    assert store.append(again) == stored_again


def test_frame_ids_stored_through_one_store_are_seen_by_another_on_the_same_file(
    tmp_path: Path,
) -> None:
    """Two SQLiteStores stand for two processes (two servers, or serve and the CLI): each
    keeps the ids in memory, and follows what the other adds and deletes."""
    path = tmp_path / "logs.db"
    with SQLiteStore.open(path) as one, SQLiteStore.open(path) as two:
        assert one.append([Batch("demo", [line("a")], frame_id="A")]) == [1]
        assert two.append([Batch("demo", [line("a")], frame_id="A")]) == [0]  # loads them
        assert one.append([Batch("demo", [line("b")], frame_id="B")]) == [1]
        assert two.append([Batch("demo", [line("b")], frame_id="B")]) == [0]  # takes in the new
        assert two.append([Batch("other", [line("c")], frame_id="C")]) == [1]
        assert one.append([Batch("other", [line("c")], frame_id="C")]) == [0]
        # Forgetting the app deletes its ids; the name again gets the same app id.
        ((demo_id,),) = rows(path, "SELECT id FROM apps WHERE name = 'demo'")
        one.forget_app("other")
        one.forget_app("demo")
        assert one.append([Batch("demo", [line("new")], frame_id="N")]) == [1]
        ((again_id,),) = rows(path, "SELECT id FROM apps WHERE name = 'demo'")
        assert again_id == demo_id
        assert two.append([Batch("demo", [line("a")], frame_id="A")]) == [1]
        assert two.append([Batch("demo", [line("new")], frame_id="N")]) == [0]
        assert messages(two.last(LineFilter(app="demo"), 10)) == ["new", "a"]
        # Ids pruned through one are forgotten by the other.
        one.forget_frame_ids(older_than_s=0, keep_at_most=0)
        assert two.append([Batch("demo", [line("new")], frame_id="N")]) == [1]
        assert one.append([Batch("demo", [line("new")], frame_id="N")]) == [0]


def test_every_frame_id_of_a_large_group_is_seen_by_the_next_process(tmp_path: Path) -> None:
    """A group commit of more batches than one INSERT of ids takes (serve under load): a
    retry of any of them, once serve has restarted, is not stored again."""
    path = tmp_path / "logs.db"
    one = SQLiteStore.open(path)
    batches = [Batch("demo", [line(f"m{i}")], frame_id=f"F{i}") for i in range(600)]
    assert one.append(batches) == [1] * 600
    one.close()
    two = SQLiteStore.open(path)
    assert two.append(batches) == [0] * 600
    assert two.apps()[0].lines == 600
    two.close()


def test_a_store_opened_after_every_frame_id_was_pruned_adds_ids_the_others_see(
    tmp_path: Path,
) -> None:
    """Rows pruned to the last leave the table empty: the next store's rows must still come
    after those the first one has taken in, or it would never read them."""
    path = tmp_path / "logs.db"
    with SQLiteStore.open(path) as first:
        for tag in ("A", "B", "C"):
            first.append([Batch("demo", [line(tag)], frame_id=tag)])
        first.forget_frame_ids(older_than_s=0, keep_at_most=0)
        with SQLiteStore.open(path) as later:
            assert later.append([Batch("demo", [line("D")], frame_id="D")]) == [1]
            assert first.append([Batch("demo", [line("D")], frame_id="D")]) == [0]
            assert later.append([Batch("demo", [line("E")], frame_id="E")]) == [1]
            assert first.append([Batch("demo", [line("E")], frame_id="E")]) == [0]


def test_a_batch_that_failed_to_be_stored_leaves_its_frame_id_unremembered(
    store: SQLiteStore,
) -> None:
    """Its ids are inserted before its lines: the INSERT of the lines fails (as on a full
    disk), the transaction rolls back, and Logplex's retry must then be stored."""
    assert store.append([Batch("demo", [line("loaded")], frame_id="L")]) == [1]
    with closing(sqlite3.connect(store.path)) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON lines WHEN NEW.message = 'boom'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        db.commit()
        boom = [
            Batch("demo", [line("boom")], frame_id="B"),
            Batch("demo", [line("x")], frame_id="X"),
        ]
        with pytest.raises(sqlite3.IntegrityError, match="disk is full"):
            store.append(boom)
        db.execute("DROP TRIGGER full")
        db.commit()
        assert db.execute("SELECT frame_id FROM frame_ids").fetchall() == [("L",)]
        assert store.append(boom) == [1, 1]
        assert store.append(boom) == [0, 0]


@pytest.mark.slow
def test_a_store_opened_while_it_is_being_created_is_never_taken_for_another_programs(
    tmp_path: Path,
) -> None:
    """`herolog logs --tail` polls for a store that serve is about to create: opening it
    just as the schema is committed must give an empty store or a ready one, not an error
    (the check read the schema version and the tables apart, and failed 7% of these)."""
    errors: list[str] = []
    for attempt in range(100):
        path = tmp_path / f"{attempt}.db"
        created = threading.Event()

        def poll(path: Path = path, created: threading.Event = created) -> None:
            while not created.is_set():
                try:
                    SQLiteStore.open(path, create=False).close()
                except FileNotFoundError:
                    pass
                except (StoreError, sqlite3.Error) as error:
                    errors.append(str(error))
                    return

        reader = threading.Thread(target=poll)
        reader.start()
        with SQLiteStore.open(path) as store:
            fill(store, "demo", ["first"])
        time.sleep(0.002)
        created.set()
        reader.join()
    assert errors == []


def test_a_version_1_store_is_read_as_is_and_upgraded_by_writers(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    from herolog.store import _SCHEMA

    db.executescript(_SCHEMA)
    db.execute("INSERT INTO apps (name, lines, created_at) VALUES ('old', 1, 'x')")
    db.execute(
        "INSERT INTO lines (timestamp, time, source, dyno, message, pri, hostname, structured_data, app_id, attributes, received_at)"
        " VALUES ('t', '2024-03-05T09:14:07.000000Z', 'app', 'web.1', 'from v1', 190, 'host', NULL, 1, NULL, 'r')"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with SQLiteStore.open(path, create=False) as reader:
        assert messages(reader.last(LineFilter(), 10)) == ["from v1"]
        assert rows(path, "PRAGMA user_version")[0][0] == 1  # readers change nothing
        with SQLiteStore.open(path) as writer:
            assert writer.append([Batch("old", [line("new")], frame_id="F")]) == [1]
            assert rows(path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
            assert messages(writer.last(LineFilter(), 10)) == ["from v1", "new"]
            assert reader.drains("old") == []  # an old reader sees the new table as empty
            writer.add_drain("old", "https://x.example/logs")
            assert [d.url for d in reader.drains("old")] == ["https://x.example/logs"]


def test_drain_registry(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        before = store.drains_changed()
        first = store.add_drain("demo", "https://logs.example.com/a")
        assert store.app("demo") is not None  # a drain brings its app into being
        assert first.token.startswith("d.")
        assert first.app == "demo"
        second = store.add_drain("demo", "syslog+tls://logs.example.com:6514")
        other = store.add_drain("other", "https://logs.example.com/a")  # same URL, other app: fine
        assert store.drains_changed() == before + 3
        with pytest.raises(DrainExists):
            store.add_drain("demo", "https://logs.example.com/a")
        assert store.drains_changed() == before + 3
        assert store.drains("demo") == [first, second]
        assert store.drains() == [first, second, other]
        assert store.remove_drain("demo", "nothing") is None
        assert store.remove_drain("demo", second.token) == second
        assert store.remove_drain("demo", "https://logs.example.com/a") == first
        assert store.drains("demo") == []
        assert store.drains() == [other]
        assert store.drains_changed() == before + 5
        # Another process sees the change.
        with SQLiteStore.open(tmp_path / "logs.db", create=False) as reader:
            assert reader.drains() == [other]
            assert reader.drains_changed() == store.drains_changed()


def test_a_store_holding_one_drain_twice_keeps_working(tmp_path: Path) -> None:
    """An older herolog registered https://Example.com:443/x and https://example.com/x
    as two drains: both stay, each removable as written or by its token."""
    path = tmp_path / "logs.db"
    with SQLiteStore.open(path) as store:
        first = store.add_drain("demo", "https://Example.com:443/x")
        with pytest.raises(DrainExists) as refused:
            store.add_drain("demo", "https://example.com/x")
        assert refused.value.url == "https://Example.com:443/x"
        with closing(sqlite3.connect(path)) as db, db:  # as the older herolog did
            db.execute(
                "INSERT INTO drains (id, token, app_id, url, created_at, updated_at, through_id)"
                " SELECT 'id-2', 'd.2', app_id, 'https://example.com/x', created_at, updated_at, 0"
                " FROM drains"
            )
        assert [d.url for d in store.drains("demo")] == [first.url, "https://example.com/x"]
        # A third way of writing it is either of them: not taken for one of them.
        assert store.find_drain("demo", "https://EXAMPLE.com/x") is None
        assert store.remove_drain("demo", "https://EXAMPLE.com/x") is None
        with pytest.raises(DrainExists):
            store.add_drain("demo", "https://EXAMPLE.com/x")
        assert store.remove_drain("demo", "https://example.com/x") is not None
        assert store.find_drain("demo", "https://EXAMPLE.com/x") == first  # the one left
        assert store.remove_drain("demo", first.token) == first
        assert store.drains("demo") == []


def test_a_trim_hold_keeps_unread_lines_past_the_history(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        store.set_history(3)
        fill(store, "demo", ["a", "b"])
        read_up_to = store.newest_id()
        store.hold_trim("s1", read_up_to, seconds=60)  # a server has handed out a and b
        fill(store, "demo", ["c", "d", "e", "f"])
        # Only what was handed out may go: c..f stay although the history is 3.
        assert messages(store.last(LineFilter(), 10)) == ["c", "d", "e", "f"]
        store.hold_trim("s1", store.newest_id(), seconds=60)
        fill(store, "demo", ["g"])
        assert messages(store.last(LineFilter(), 10)) == ["e", "f", "g"]
        store.hold_trim("s1", 0, seconds=-1)  # a hold that has lapsed holds nothing
        fill(store, "demo", ["h"])
        assert messages(store.last(LineFilter(), 10)) == ["f", "g", "h"]
        store.hold_trim("s2", 0, seconds=60)
        store.release_trim_hold("s2")
        fill(store, "demo", ["i"])
        assert messages(store.last(LineFilter(), 10)) == ["g", "h", "i"]
        g = store.last(LineFilter(), 10)[0][0].id
        store.hold_trim("s1", store.newest_id(), seconds=60)
        store.hold_trim("s2", g - 1, seconds=60)  # a second server has not handed out g yet
        fill(store, "demo", ["j"])
        assert messages(store.last(LineFilter(), 10)) == ["g", "h", "i", "j"]  # the lowest counts


def test_a_mark_below_lines_a_trim_hold_keeps_or_at_the_newest_trimmed_is_exact(
    tmp_path: Path,
) -> None:
    """An app past its history whose every line a server has yet to read back loses none of
    them, and no trim is recorded for it: a reader's mark (lines_through) below them is
    exact; so is one at the newest line a trim took."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    store.set_history(3)
    fill(store, "other", ["o1", "o2", "o3"])
    handed_out = store.newest_id()
    store.hold_trim("s1", handed_out, seconds=60)
    fill(store, "demo", ["a", "b", "c", "d"])
    assert messages(store.last(LineFilter(app="demo"), 10)) == ["a", "b", "c", "d"]
    assert store.lines_through("demo", handed_out - 1) == 0
    assert store.lines_through("demo", store.newest_id()) == 4
    store.release_trim_hold("s1")
    fill(store, "demo", ["e"])  # a and b go now, the newest of them at the mark: still exact
    b = handed_out + 2
    assert messages(store.last(LineFilter(app="demo"), 10)) == ["c", "d", "e"]
    assert store.lines_through("demo", b) == 2
    store.close()


def test_a_reader_behind_an_app_forgotten_counts_every_line_it_had_not_read_as_lost(
    tmp_path: Path,
) -> None:
    """None of them trimmed before: the forgotten app's newest line is what bounds them,
    before the app is made anew and after."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    mark = store.lines_through("demo", 0)
    fill(store, "demo", ["a", "b", "c"])
    assert store.forget_app("demo") == 3
    assert store.trimmed_past("demo", 0, store.newest_id(), mark) == (3, 3)
    fill(store, "demo", ["d"])
    assert store.trimmed_past("demo", 0, store.newest_id(), mark) == (3, 4)
    store.close()


def test_a_forget_notes_the_lines_a_server_had_not_read_until_every_server_has(
    tmp_path: Path,
) -> None:
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        fill(store, "demo", ["a", "b"])  # ids 1 and 2
        store.hold_trim("s1", store.newest_id(), seconds=60)  # handed out
        fill(store, "demo", ["c"])
        fill(store, "other", ["o"])
        fill(store, "demo", ["d", "e"])  # ids 3, 5 and 6 not read yet
        assert store.forget_app("demo") == 5
        assert store.unread_forgotten(0, 10) == {"demo": array("q", [3, 5, 6])}
        assert store.unread_forgotten(3, 5) == {"demo": array("q", [5])}
        store.hold_trim("s2", 4, seconds=60)
        fill(store, "demo", ["f"])
        assert store.forget_app("demo") == 1  # id 7, above both holds
        assert store.unread_forgotten(0, 10) == {"demo": array("q", [3, 5, 6, 7])}
        store.hold_trim("s1", 6, seconds=60)  # past the first forget's, but s2 is not
        assert store.unread_forgotten(2, 10) == {"demo": array("q", [3, 5, 6, 7])}
        store.hold_trim("s2", 6, seconds=60)  # both past it: its note goes
        assert store.unread_forgotten(0, 10) == {"demo": array("q", [7])}
        store.release_trim_hold("s1")
        store.release_trim_hold("s2")
        fill(store, "demo", ["g"])
        assert store.forget_app("demo") == 1  # no server reading: nothing is noted
        assert store.unread_forgotten(0, 10) == {}


def test_the_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Drain URLs in it carry passwords and API keys."""
    home = tmp_path / "home"
    store = SQLiteStore.open(home / "logs.db")
    store.add_drain("demo", "https://user:secret@logs.example.com/x")
    for name in ("logs.db", "logs.db-wal", "logs.db-shm"):
        assert (home / name).stat().st_mode & 0o777 == 0o600, name
    assert home.stat().st_mode & 0o777 == 0o700
    store.close()


def test_an_empty_file_made_by_someone_else_becomes_the_owner_s_alone(tmp_path: Path) -> None:
    """``touch logs.db`` under a umask of 022 gives 0644: herolog makes it its store, and
    drain passwords must not be readable by others in it."""
    path = tmp_path / "logs.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    store = SQLiteStore.open(path)
    store.add_drain("demo", "https://user:secret@logs.example.com/x")
    for name in ("logs.db", "logs.db-wal", "logs.db-shm"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    store.close()


_ADDED_BY = {
    4: ["drains.through_id", "drains.dropped_ahead", "apps.trimmed_through"],
    5: ["drains.untold", "drains.untold_since"],
    6: ["index lines_notices"],
    7: [],
    8: ["lines.msgid"],
    9: ["apps.trimmed", "drains.through_lines"],
    10: ["table frame_ids"],
    11: ["index apps_by_api_id", "apps.api_id"],
    12: ["own notices"],
}
"""The columns (and indexes, and tables) each schema version added."""


def as_older_herolog_left_it(path: Path, version: int) -> None:
    """Take the store at ``path`` back to schema ``version`` (3 or later)."""
    db = sqlite3.connect(path)
    for later in range(SCHEMA_VERSION, version, -1):
        for column in _ADDED_BY[later]:
            if column == "own notices":  # told by their HOSTNAME and message before
                from herolog.store import _NOTICES

                db.execute("DROP INDEX lines_notices")
                db.execute("ALTER TABLE lines DROP COLUMN own")
                db.executescript(_NOTICES)
                continue
            if column.startswith("index "):
                db.execute(f"DROP INDEX {column.removeprefix('index ')}")
                continue
            if column == "table frame_ids":  # the ids were kept in frames before
                from herolog.store import _FRAMES

                db.executescript(_FRAMES)
                db.execute("INSERT INTO frames SELECT app_id, frame_id, received_at FROM frame_ids")
                db.execute("DROP TABLE frame_ids")
                continue
            table, name = column.split(".")
            db.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


def _schema_10_store(path: Path) -> None:
    """A store as herolog at schema 10 made it (its real CREATE statements), with one line."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript((Path(__file__).parent / "fixtures" / "schema-10.sql").read_text())
        with db:
            db.execute(
                "INSERT INTO apps (name, lines, created_at) VALUES ('demo', 1, ?)", (RECEIVED.time,)
            )
            db.execute(
                "INSERT INTO lines (timestamp, time, source, dyno, message, app_id, received_at)"
                " VALUES (?, ?, 'app', 'web.1', 'kept', 1, ?)",
                ("2026-12-06T10:00:00+00:00", "2026-12-06T10:00:00.000000Z", RECEIVED.time),
            )


def test_no_writer_upgrades_the_store_of_an_older_serve_still_running(
    herolog_home: Path,
) -> None:
    """``pip install -U herolog`` under a running serve, then ``herolog drain add``: the old
    serve went on with the connections it had, but each one it opened after the upgrade
    refused the newer schema, silently. It forwarded to a drain removed, never to one added,
    saved no drain position (the next serve delivered every line since a second time), and
    its stop ended in a traceback. Writers now leave such a store alone, in one line."""
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    _schema_10_store(path)
    # The older serve: a live process holding the forwarding lease, as it renews it.
    serve = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    now = datetime.now(UTC)
    start, until = (
        (now + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for s in (-10, 10)
    )
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('lease:forwarding', ?)",
            (f"{serve.pid}.7f3a {start} {until}",),
        )
    try:
        for command in (
            ["drain", "add", "https://logs.example.com/x", "-a", "demo"],
            ["run", "-a", "demo", "--", sys.executable, "-c", "print('ran')"],
            ["store", "history", "10"],
        ):
            done = herolog_process(*command)
            assert (done.returncode, done.stdout) == (1, ""), command
            assert done.stderr == (
                f"Error: {path} is in use by an older herolog serve (pid {serve.pid}; store"
                " schema 10), which cannot go on once this herolog upgrades it to schema"
                f" {SCHEMA_VERSION}: restart that serve with this herolog first\n"
            )
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == 10
            assert db.execute("SELECT count(*) FROM drains").fetchone()[0] == 0
        read = herolog_process("logs", "-a", "demo")  # readers read it as it is
        assert (read.returncode, read.stdout) == (0, "2026-12-06T10:00:00+00:00 app[web.1]: kept\n")
    finally:
        serve.communicate(b"")
    # Gone with its lease still in force: killed, or running where this process cannot see
    # it (another container, where its pid may even be the command's own, 1). Refused
    # until the lease runs out: one renewed meanwhile is a serve that runs elsewhere.
    done = herolog_process("drain", "add", "https://logs.example.com/x", "-a", "demo")
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr == (
        f"Error: {path} is leased until {until[:19].replace('T', ' ')} UTC to an older herolog"
        f" serve (pid {serve.pid}, not one this process can see; store schema 10), which cannot"
        f" go on once this herolog upgrades it to schema {SCHEMA_VERSION}: if it was killed, try"
        " again once its lease runs out; if it runs in another container or on another"
        " machine, restart it with this herolog first\n"
    )
    with closing(sqlite3.connect(path)) as db, db:  # the lease runs out
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'lease:forwarding'",
            (f"{serve.pid}.7f3a {start} {start}",),
        )
    done = herolog_process("drain", "add", "https://logs.example.com/x", "-a", "demo")
    assert done.returncode == 0, done.stderr
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store = SQLiteStore.open(path, create=False)
    assert messages(store.last(LineFilter(), 10)) == ["kept"]
    store.close()


LEASE_LEFT_S = 5.0
"""What is left of an older serve's lease as a test starts: long enough for a serve to start
on a loaded machine before it runs out."""


def _lease_of_a_serve_gone(path: Path, seconds: float, pid: int | None = None) -> tuple[int, str]:
    """The forwarding lease of an older serve that is gone (its pid, reaped, is no process
    here, as one in another container is not), in force for ``seconds`` more: its pid and
    its end, as the lease has it. Given ``pid``, that serve's lease renewed."""
    if pid is None:
        gone = subprocess.Popen(["true"])
        gone.wait()
        pid = gone.pid
    now = datetime.now(UTC)
    start, until = (
        (now + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for s in (-10, seconds)
    )
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('lease:forwarding', ?)",
            (f"{pid}.7f3a {start} {until}",),
        )
    return pid, until


@pytest.mark.subprocess
@pytest.mark.parametrize("renewed", [False, True], ids=["killed", "elsewhere"])
def test_serve_waits_for_the_lease_of_an_older_serve_it_cannot_see(
    herolog_home: Path, renewed: bool
) -> None:
    """A serve restarted after its older self was killed (the OOM killer), with a newer
    herolog installed, met that serve's lease still in force and upgraded the store at once,
    as its pid was no process: so did one whose older serve ran in another container, which
    then went on with a store it could not read. It waits for the lease to run out, and
    upgrades the store then (refused, systemd's restarts meanwhile would hit its start
    limit); a lease renewed meanwhile is a serve that runs, and the store is left to it."""
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    _schema_10_store(path)
    pid, until = _lease_of_a_serve_gone(path, LEASE_LEFT_S)
    renewing = threading.Event()

    def renew() -> None:
        while not renewing.wait(0.3):
            _lease_of_a_serve_gone(path, LEASE_LEFT_S, pid)

    renewer = threading.Thread(target=renew)
    if renewed:
        renewer.start()
    try:
        done = herolog_process("serve", "--port", "0", timeout=60) if renewed else None
        if not renewed:
            server = ServeProcess("--port", "0")
            server.proc.send_signal(signal.SIGTERM)
            code, err = server.finish()
            assert code == 0, err
    finally:
        renewing.set()
        if renewed:
            renewer.join()
    if done is not None:
        code, err = done.returncode, done.stderr
    waiting = (
        f"herolog serve: an older herolog serve (pid {pid}) that this process cannot see holds"
        " the store's lease until "
    )
    assert err.startswith(waiting), err
    if not renewed:
        assert err.startswith(f"{waiting}{until[11:19]} UTC: waiting "), err
    with closing(sqlite3.connect(path)) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
    if renewed:
        assert code == 1, err
        assert err.splitlines()[-1].startswith(f"Error: {path} is leased until "), err
        assert "not one this process can see; store schema 10)" in err
        assert version == 10
    else:
        assert "HTTP drain intake on" in err
        assert version == SCHEMA_VERSION


@pytest.mark.subprocess
def test_a_lease_whose_end_is_no_instant_is_in_force_for_no_one(herolog_home: Path) -> None:
    """A forwarding lease whose end is not an instant (a value edited by hand) was in force
    for ever, compared as text: a serve of a newer herolog met it on an older store and
    ended in a traceback (datetime.fromisoformat of its end, to say how long it would wait),
    every other writer was refused 'until garbage UTC', and on a store of this schema every
    serve stood by for it. It is a lease run out."""
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    _schema_10_store(path)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('lease:forwarding', ?)",
            ("99999.7f3a garbage",),
        )
    server = ServeProcess("--port", "0")
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert "leased" not in err, err
    with closing(sqlite3.connect(path)) as db, db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('lease:forwarding', ?)",
            ("99999.7f3a 2026-12-07T12:00:00.000000Z garbage",),
        )
    store = SQLiteStore.open(path)
    assert not store.leased(store_module.FORWARDING_LEASE)
    assert store.lease(store_module.FORWARDING_LEASE, "1.abcd", 10) is None
    store.close()


@pytest.mark.parametrize("then", [SCHEMA_VERSION, SCHEMA_VERSION + 1], ids=["this", "newer"])
def test_a_writer_upgrading_takes_the_store_as_the_writer_before_it_left_it(
    tmp_path: Path, then: int
) -> None:
    """Two writers of a newer herolog opening an older store together (serve restarted
    after pip install -U, and a drain add): the one that waited for the other's write lock
    read the schema again there, and took this herolog's own serve, whose lease the other
    took meanwhile, for an older one ('in use by an older herolog serve (...; store schema
    12), which cannot go on once this herolog upgrades it to schema 12'); and over a newer
    herolog's upgrade it set the store's schema back to its own. The schema the lock's
    holder left is taken as it is: this herolog's, used; a newer one's, refused."""
    path = tmp_path / "logs.db"
    _schema_10_store(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the other writer, as this one reads the schema
    serving = subprocess.Popen(["sleep", "60"])  # the other's serve, a process that runs
    waited: list[float] = []

    def other_writer_done(seconds: float) -> None:
        if waited:
            return
        waited.append(seconds)
        if then == SCHEMA_VERSION:
            holder.execute("ROLLBACK")
            other = SQLiteStore.open(path)  # upgrades it
            assert other.lease(store_module.FORWARDING_LEASE, f"{serving.pid}.7f3a", 10) is None
            other.close()
        else:
            holder.execute(f"PRAGMA user_version = {then}")
            holder.execute("COMMIT")

    try:
        if then == SCHEMA_VERSION:
            store = SQLiteStore.open(path, lock_wait=other_writer_done)
            assert store.history == DEFAULT_HISTORY
            store.close()
        else:
            with pytest.raises(StoreError, match=f"newer herolog \\(store schema {then};"):
                SQLiteStore.open(path, lock_wait=other_writer_done)
    finally:
        holder.close()
        serving.kill()
        serving.wait()
    assert waited
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == then


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "then"),
    [
        (["store", "history", "10"], "leaves the history as it was"),
        (["drain", "add", "-a", "demo", "syslog://127.0.0.1:9"], "adds nothing"),
        (["import", "-", "-a", "demo"], "stops the import"),
        (["run", "-a", "demo", "--", sys.executable, "-c", "print('ran')"], "runs nothing"),
    ],
    ids=["history", "drain-add", "import", "run"],
)
def test_an_upgrade_waiting_for_another_process_s_write_lock_says_so(
    herolog_home: Path, args: list[str], then: str
) -> None:
    """The first writer of a new herolog upgrades an older store, which waits for the write
    lock as any change does. The commands that say so of a wait for their change sat
    silent through this one, up to 30 s, looking stuck; a Ctrl-C ends it, the store left
    at its schema (and run's command not run)."""
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    _schema_10_store(path)
    assert interrupted_in_lock_wait(path, args, then) == (-signal.SIGINT, b"")
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10
        assert db.execute("SELECT count(*) FROM lines").fetchone()[0] == 1


def test_a_version_3_store_s_drains_start_at_its_newest_line_when_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    fill(store, "demo", ["a", "b", "c"])
    store.add_drain("demo", "https://x.example/logs")
    store.close()
    as_older_herolog_left_it(path, 3)
    with SQLiteStore.open(path, create=False) as reader:
        (drain,) = reader.drains()
        assert drain.delivery.through == 0  # a reader reads the old schema as it is
        assert not reader.keeps_positions()
        assert counted(reader, [drain]) == [drain]  # so no count of lines waiting for it
        assert rows(path, "PRAGMA user_version")[0][0] == 3
        with SQLiteStore.open(path) as writer:
            fill(writer, "demo", ["d"])
            assert rows(path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
            (drain,) = writer.drains()
            assert drain.delivery.through == 3  # the newest line when it was upgraded, not "d"
            assert counted(writer, [drain])[0].waiting == 1  # "d"


def test_a_version_4_store_s_drains_have_nothing_untold_when_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    fill(store, "demo", ["a"])
    added = store.add_drain("demo", "https://x.example/logs")
    store.save_deliveries({added.id: Delivery(1, 2, False, None, None, through=1)})
    store.close()
    as_older_herolog_left_it(path, 4)
    with SQLiteStore.open(path, create=False) as reader:
        (drain,) = reader.drains()
        assert drain.delivery == Delivery(1, 2, False, None, None, through=1)
        with SQLiteStore.open(path) as writer:
            fill(writer, "demo", ["b"])
            assert rows(path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
            assert writer.drains() == [drain]
            told = Delivery(1, 5, False, None, None, 1, 0, 3, "2026-12-03T17:00:00+00:00")
            writer.save_deliveries({drain.id: told})
            assert reader.drains()[0].delivery == told


def test_a_version_4_store_made_before_apps_kept_their_trims_is_read_and_upgraded(
    tmp_path: Path,
) -> None:
    """Schema 4 came first (a6cfecd) without apps.trimmed_through, which 1082665 added to it
    without a new version: such a store could be read but never written again (every
    append failed with "no such column: trimmed_through")."""
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    store.set_history(3)
    fill(store, "demo", ["a", "b", "c", "d", "e"])
    fill(store, "quiet", ["q"])
    drain = store.add_drain("demo", "https://x.example/logs")
    fill(store, "demo", ["f"])
    state = Delivery(4, 1, False, "boom", "2026-12-03T00:00:00Z", through=6)
    store.save_deliveries({drain.id: state})
    store.close()
    as_older_herolog_left_it(path, 4)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE apps DROP COLUMN trimmed_through")
    db.commit()
    db.close()
    with SQLiteStore.open(path, create=False) as reader:
        assert messages(reader.last(LineFilter(), 10)) == ["d", "e", "q", "f"]
        assert counted(reader, reader.drains())[0].waiting == 1  # "f"
        with SQLiteStore.open(path) as writer:
            fill(writer, "demo", ["g"])
            assert rows(path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
            assert messages(writer.last(LineFilter(), 10)) == ["e", "q", "f", "g"]
            (upgraded,) = counted(writer, writer.drains())
            assert upgraded.delivery == state
            assert upgraded.waiting == 2  # "f", "g"
            # Its lines trimmed so far are counted as before the upgrade: up to "d" (id 4).
            assert writer.trimmed_between(0, 8, "demo") == 4


def test_a_version_6_store_s_nil_hostnames_read_as_none_and_are_upgraded(tmp_path: Path) -> None:
    """Before schema 7 a syslog sender's nil HOSTNAME ("-") was stored as the host name
    "-": read from such a store, and once a writer upgrades it, it is None, as the parser
    now gives it."""
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    fill(store, "demo", ["heroku's"])
    store.append(
        [Batch("demo", [line("nil")._replace(hostname=None), line("dash")._replace(hostname="-")])]
    )
    store.close()
    as_older_herolog_left_it(path, 6)

    def stored() -> list[str | None]:
        return [hostname for (hostname,) in rows(path, "SELECT hostname FROM lines ORDER BY id")]

    assert stored() == ["host", None, "-"]
    with SQLiteStore.open(path, create=False) as reader:
        assert [x.hostname for x in reader.last(LineFilter(), 10)[0]] == ["host", None, None]
        assert stored() == ["host", None, "-"]  # readers change nothing
        with SQLiteStore.open(path) as writer:
            assert rows(path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
            assert stored() == ["host", None, None]
            assert [x.hostname for x in writer.last(LineFilter(), 10)[0]] == ["host", None, None]


def test_a_version_9_store_s_frame_ids_are_still_remembered_when_upgraded(tmp_path: Path) -> None:
    """Schema 10 keeps the ids in arrival order, in frame_ids, and in memory: the ids of
    frames are copied over in the order they came, and retries of them are still refused."""
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    now = datetime.now(UTC)
    for tag, app, minutes in (("Z-old", "demo", 90), ("A-young", "demo", 5), ("A-young", "b", 1)):
        store.append(
            [Batch(app, [line(tag)], frame_id=tag)], Received.at(now - timedelta(minutes=minutes))
        )
    store.close()
    as_older_herolog_left_it(path, 9)
    with closing(sqlite3.connect(path)) as db:
        assert sorted(db.execute("SELECT frame_id FROM frames")) == [
            ("A-young",),
            ("A-young",),
            ("Z-old",),
        ]
        with SQLiteStore.open(path) as writer:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            assert "frames" not in tables
            retries = [Batch("demo", [line("r")], frame_id=t) for t in ("Z-old", "A-young", "new")]
            assert writer.append([*retries, Batch("b", [line("r")], frame_id="A-young")]) == [
                0,
                0,
                1,
                0,
            ]
            # In the order they came (Z-old first), so that the oldest are pruned first.
            writer.forget_frame_ids(older_than_s=3600, keep_at_most=100)
            assert writer.append(retries) == [1, 0, 0]


def test_a_version_10_store_s_apps_are_found_by_id_through_an_index_once_upgraded(
    tmp_path: Path,
) -> None:
    """Schema 11 keeps each app's Platform API id in an index: a reader of a schema 10 store
    finds an app by id by hashing the names, as before; a writer upgrades it, filling in the
    ids of the apps it has, and gives new apps theirs (and those an older herolog still
    running added meanwhile, at its next start)."""
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    fill(store, "demo", ["a"])
    fill(store, "other", ["b"])
    store.close()
    as_older_herolog_left_it(path, 10)
    plan = "EXPLAIN QUERY PLAN SELECT name FROM apps WHERE api_id = ?"

    def found(store: SQLiteStore, name: str) -> str | None:
        info = store.app_by_id(app_id(name).upper())
        return None if info is None else info.name

    with closing(SQLiteStore.open(path, create=False)) as reader:
        assert (found(reader, "demo"), found(reader, "nothing")) == ("demo", None)
        assert [key for key, _ in reader.apps_by("id", "", "", limit=5)] == sorted(
            [app_id("demo"), app_id("other")]
        )
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10
        writer = SQLiteStore.open(path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert dict(db.execute("SELECT name, api_id FROM apps")) == {
            "demo": app_id("demo"),
            "other": app_id("other"),
        }
        assert "USING INDEX apps_by_api_id (api_id=?)" in db.execute(plan, ("x",)).fetchone()[3]
        fill(writer, "new", ["c"])
        assert (found(writer, "demo"), found(writer, "new")) == ("demo", "new")
        assert [info.name for _, info in writer.apps_by("id", app_id("new"), "", limit=1)] == [
            "new"
        ]
        writer.close()
        # An app an older herolog added after the upgrade (a serve started before it).
        db.execute("INSERT INTO apps (name, created_at) VALUES ('older', '2026-01-01')")
        db.commit()
        with closing(SQLiteStore.open(path, create=False)) as reader:
            assert found(reader, "older") is None
        with closing(SQLiteStore.open(path)) as writer:
            assert found(writer, "older") == "older"


def test_a_version_7_store_is_read_without_msgids_and_upgraded_to_keep_them(
    tmp_path: Path,
) -> None:
    """Schema 8 keeps a line's RFC 5424 MSGID: a store from before has none to give, is
    read as it is, and once a writer upgrades it keeps the MSGIDs of the lines that come."""
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    fill(store, "demo", ["old"])
    store.close()
    as_older_herolog_left_it(path, 7)
    with SQLiteStore.open(path, create=False) as reader:
        assert [(x.message, x.msgid) for x in reader.last(LineFilter(), 10)[0]] == [("old", None)]
        with SQLiteStore.open(path) as writer:
            tagged = line("tagged")._replace(hostname="myhost", msgid="INVOICE")
            writer.append([Batch("demo", [tagged, line("plain")])])
            assert rows(path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
            expected = [("old", None), ("tagged", "INVOICE"), ("plain", None)]
            assert [(x.message, x.msgid) for x in writer.last(LineFilter(), 10)[0]] == expected
            assert [(x.message, x.msgid) for x in reader.last(LineFilter(), 10)[0]] == expected


def test_msgids_and_structured_data_are_stored_in_any_mix(store: SQLiteStore) -> None:
    """Runs of lines without either are inserted with NULLs written into the statement."""
    plain = line("plain")
    mixed = [
        plain,
        plain._replace(message="sd", structured_data='[a@1 k="v"]'),
        plain._replace(message="msgid", msgid="ID"),
        plain._replace(message="both", structured_data='[a@1 k="v"]', msgid="ID2"),
    ]
    store.append([Batch("demo", mixed), Batch("demo", [plain], {"a": "1"})])
    got = [(x.message, x.structured_data, x.msgid) for x in store.last(LineFilter(), 10)[0]]
    assert got == [
        ("plain", None, None),
        ("sd", '[a@1 k="v"]', None),
        ("msgid", None, "ID"),
        ("both", '[a@1 k="v"]', "ID2"),
        ("plain", None, None),
    ]


def test_a_version_5_store_counts_lines_waiting_the_same_before_and_after_its_upgrade(
    tmp_path: Path,
) -> None:
    """Schema 6 adds an index of herolog's own notices, which the count of a drain's lines
    waiting reads: a reader of a version 5 store (no index) counts the same."""
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    store.add_drain("demo", "https://x.example/logs")
    fill(store, "demo", ["a", "b"])
    notice = line("Error L10 (output buffer overflow): 3 messages dropped since x.")
    store.append([Batch("demo", [notice._replace(hostname=NOTICE_HOST)], own=True)])
    fill(store, "demo", ["c"])
    store.close()

    def indexes() -> set[str]:
        return {
            name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'index'")
        }

    assert "lines_notices" in indexes()
    as_older_herolog_left_it(path, 5)
    assert "lines_notices" not in indexes()
    with SQLiteStore.open(path, create=False) as reader:
        assert counted(reader, reader.drains())[0].waiting == 3  # a, b, c: not the L10 line
        with SQLiteStore.open(path) as writer:
            fill(writer, "demo", ["d"])
            assert "lines_notices" in indexes()
            assert counted(writer, writer.drains())[0].waiting == 4


def test_herolog_s_own_l10_lines_in_a_version_11_store_stay_its_own_and_new_ones_are_marked(
    tmp_path: Path,
) -> None:
    """Until schema 12 herolog told its own L10 lines by their HOSTNAME (herolog) and message,
    which another herolog's L10 lines have too (imported from its `logs --json`): those were
    never sent to the app's drains. A store of then, read as it is or upgraded, still has
    its own lines as its own (not sent, not waiting); a line with both that comes after is
    the app's, waiting for the drain like any other."""
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    store.add_drain("demo", "https://x.example/logs")
    fill(store, "demo", ["a"])
    notice = line("Error L10 (output buffer overflow): 3 messages dropped since x.")
    notice = notice._replace(hostname=NOTICE_HOST)
    store.append([Batch("demo", [notice], own=True)])
    store.close()

    def owns(store: SQLiteStore) -> list[bool]:
        return [bool(x.own) for x in store.last(LineFilter(app="demo"), 10)[0]]

    as_older_herolog_left_it(path, 11)
    with SQLiteStore.open(path, create=False) as reader:
        assert (owns(reader), counted(reader, reader.drains())[0].waiting) == ([False, True], 1)
        with SQLiteStore.open(path) as writer:
            writer.append([Batch("demo", [notice])])
            assert owns(writer) == [False, True, False]
            assert counted(writer, writer.drains())[0].waiting == 2
            assert rows(path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION


def test_a_new_drain_starts_at_the_newest_line_and_saves_its_position(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        assert store.add_drain("empty", "https://x.example/a").delivery.through == 0
        fill(store, "demo", ["a", "b"])
        fill(store, "other", ["c"])
        drain = store.add_drain("demo", "https://x.example/b")
        assert drain.delivery.through == store.newest_id() == 3
        state = Delivery(5, 2, False, None, None, through=7, dropped_ahead=1)
        store.save_deliveries({drain.id: state})
        assert store.find_drain("demo", drain.token) == drain._replace(delivery=state)


def test_a_lease_its_holder_stops_renewing_runs_out_and_another_takes_it(tmp_path: Path) -> None:
    """What the next serve meets after a serve holding the forwarding lease was killed."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    assert store.lease("forwarding", "killed", 0.3) is None
    assert store.lease("forwarding", "next", 10) == "killed"
    assert store.leased("forwarding")
    time.sleep(0.35)
    assert not store.leased("forwarding")
    assert store.lease("forwarding", "next", 10) is None
    assert store.lease("forwarding", "killed", 10) == "next"
    assert store.lease("forwarding", "next", 10) is None  # renewed while in force
    store.release_lease("forwarding", "killed")  # the killed one's, run out: not "next"'s
    assert store.lease("forwarding", "third", 10) == "next"
    store.close()


def turn_clock(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Step the wall clock the store reads (as NTP or an admin would) by ``by``."""
    from herolog import timestamps

    real = timestamps.now
    monkeypatch.setattr(timestamps, "now", lambda: real() + by)


def test_a_lease_taken_before_the_clock_was_turned_back_runs_out_in_its_own_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serve killed holding the forwarding lease, then the clock set back an hour (a fast
    clock corrected): the next serve forwards once the lease's 10 s are up, not an hour on."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    assert store.lease("forwarding", "killed", 10) is None
    turn_clock(monkeypatch, -timedelta(hours=1))
    assert not store.leased("forwarding")
    assert store.lease("forwarding", "next", 10) is None
    # Its own lease, taken on the clock as it is now, holds as ever.
    assert store.leased("forwarding")
    assert store.lease("forwarding", "killed", 10) == "next"
    store.close()


def test_a_lease_a_little_behind_the_clock_of_the_one_who_took_it_still_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes read the clock a moment apart: a lease just taken by one is no less held
    for the other whose reading came first."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    assert store.lease("forwarding", "first", 10) is None
    turn_clock(monkeypatch, -timedelta(seconds=5))
    assert store.leased("forwarding")
    assert store.lease("forwarding", "second", 10) == "first"
    store.close()


def test_frame_ids_outlive_the_wall_clock_set_forward(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer prunes every 30 s: one just after the clock was set forward two hours (a
    slow clock corrected) must not forget the ids of the hour before, whose batches Logplex
    may still retry. They go once an hour has passed by the monotonic clock."""
    store.forget_frame_ids(older_than_s=3600, keep_at_most=100)  # the writer's last prune
    store.append([Batch("demo", [line("a")], frame_id="A")])
    turn_clock(monkeypatch, timedelta(hours=2))
    store.forget_frame_ids(older_than_s=3600, keep_at_most=100)
    assert store.append([Batch("demo", [line("a")], frame_id="A")]) == [0]
    monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: monotonic() + 3601)
    turn_clock(monkeypatch, timedelta(seconds=3601))
    store.forget_frame_ids(older_than_s=3600, keep_at_most=100)
    assert store.append([Batch("demo", [line("a")], frame_id="A")]) == [1]


def test_leases_and_trim_holds_an_older_herolog_took_hold_until_they_end(tmp_path: Path) -> None:
    """Its values name no start: ``OWNER UNTIL``, ``LINE UNTIL``."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    store.set_history(1)
    fill(store, "demo", ["a"])
    with closing(sqlite3.connect(store.path)) as db, db:
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("lease:forwarding", "older 2999-01-01T00:00:00.000000Z"),
                ("trim_hold:older", "0 2999-01-01T00:00:00.000000Z"),
            ],
        )
    assert store.leased("forwarding")
    assert store.lease("forwarding", "next", 10) == "older"
    fill(store, "demo", ["b"])
    assert messages(store.last(LineFilter(), 10)) == ["a", "b"]
    store.close()


@pytest.mark.parametrize(
    "hold", ["0 garbage", "x 2999-01-01T00:00:00.000000Z", "0"], ids=["end", "line", "empty"]
)
def test_a_trim_hold_that_is_no_hold_holds_nothing(tmp_path: Path, hold: str) -> None:
    """A trim hold edited by hand: one whose end is not an instant held the trim for ever
    (compared as text, 'garbage' is later than any instant), and one whose line is not a
    number made every append a traceback."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    store.set_history(1)
    fill(store, "demo", ["a"])
    with closing(sqlite3.connect(store.path)) as db, db:
        db.execute("INSERT INTO meta (key, value) VALUES ('trim_hold:edited', ?)", (hold,))
    fill(store, "demo", ["b"])
    assert messages(store.last(LineFilter(), 10)) == ["b"]
    store.close()


def test_a_trim_hold_taken_before_the_clock_was_turned_back_holds_no_longer_than_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serve killed holding lines back from the trim, then the clock set back an hour: the
    history goes back to its size within the hold's time, not an hour on."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    store.set_history(3)
    fill(store, "demo", ["a", "b"])
    store.hold_trim("killed", store.newest_id(), seconds=30)
    fill(store, "demo", ["c", "d", "e"])
    assert messages(store.last(LineFilter(), 10)) == ["c", "d", "e"]
    turn_clock(monkeypatch, -timedelta(hours=1))
    fill(store, "demo", ["f"])
    assert messages(store.last(LineFilter(), 10)) == ["d", "e", "f"]
    # One taken on the clock as it is now holds as ever: a serve that has handed out d.
    store.hold_trim("live", store.newest_id() - 2, seconds=30)
    fill(store, "demo", ["g", "h"])
    assert messages(store.last(LineFilter(), 10)) == ["e", "f", "g", "h"]
    store.close()


def test_a_batch_received_long_before_a_live_hold_was_taken_keeps_to_it(
    tmp_path: Path,
) -> None:
    """A batch stored a minute after it was received (a writer that stalled) comes before
    the start of a hold taken meanwhile, on a clock that was not set back: the hold keeps
    the lines the server has not handed out all the same."""
    store = SQLiteStore.open(tmp_path / "logs.db")
    store.set_history(3)
    fill(store, "demo", ["a", "b", "c"])
    store.hold_trim("live", store.newest_id() - 2, seconds=30)  # a server has handed out a
    late = Received.at(datetime.now(UTC) - timedelta(minutes=1))
    store.append([Batch("demo", [line("d"), line("e")])], late)
    assert messages(store.last(LineFilter(), 10)) == ["b", "c", "d", "e"]
    store.close()


def test_only_the_forwarding_lease_holder_saves_drain_positions(tmp_path: Path) -> None:
    """A server whose lease ran out and went to another (it was stalled, say) must not put
    its older position back over the newer one the other saves."""
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        drain = store.add_drain("demo", "https://x.example/a")
        assert store.lease("forwarding", "first", -1) is None  # taken, and already run out
        assert store.lease("forwarding", "second", 10) is None
        newer = Delivery(9, 0, False, None, None, through=9)
        assert store.save_deliveries({drain.id: newer}, lease=("forwarding", "second"))
        older = Delivery(4, 0, False, None, None, through=4)
        assert not store.save_deliveries({drain.id: older}, lease=("forwarding", "first"))
        (found,) = store.drains()
        assert found.delivery == newer
        store.release_lease("forwarding", "second")
        assert not store.save_deliveries({drain.id: older}, lease=("forwarding", "second"))


def test_app_lines_reads_a_span_of_one_app_in_bounded_pieces(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        for i in range(10):
            fill(store, "demo", [f"d{i}"])
            fill(store, "other", [f"o{i}"])
        # demo's lines are the odd ids 1..19
        lines, through = store.app_lines("demo", 2, 15, 3, 1 << 20)
        assert [x.message for x in lines] == ["d1", "d2", "d3"]
        assert through == lines[-1].id == 7
        lines, through = store.app_lines("demo", through, 15, 100, 1 << 20)
        assert [x.message for x in lines] == ["d4", "d5", "d6", "d7"]
        assert through == 15  # the whole span read
        lines, _ = store.app_lines("demo", 0, 19, 100, 5)  # about 5 bytes of messages
        assert [x.message for x in lines] == ["d0", "d1", "d2"]
        assert store.app_lines("demo", 19, 19, 100, 100) == ([], 19)
        assert store.count_app_lines("demo", 2, 15) == 7
        fill(store, "demo", ["Error L10 (output buffer overflow): 1 messages dropped since x."])
        store.append(
            [Batch("demo", [line("Error L10 (x)")._replace(hostname="herolog")], own=True)]
        )
        # Another herolog's L10 line, which its drain brought: the app's like any other.
        store.append([Batch("demo", [line("Error L10 (y)")._replace(hostname="herolog")])])
        newest = store.newest_id()
        assert store.count_app_lines("demo", 0, newest) == 13
        assert store.count_app_lines("demo", 0, newest, notices=False) == 12
        with store.snapshot():  # in the caller's snapshot, as drains.counted reads it
            assert store.count_app_lines("demo", 0, newest, notices=False) == 12


def test_trimmed_between_counts_no_ids_past_what_the_app_has_had_trimmed(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        store.set_history(2)
        fill(store, "quiet", ["q1"])  # id 1
        for i in range(10):
            fill(store, "busy", [f"b{i}"])  # ids 2..11, all but the last two trimmed
        fill(store, "quiet", ["q2"])  # id 12
        assert store.trimmed_between(1, 11) == 8
        assert store.trimmed_between(1, 11, "busy") == 8
        assert store.trimmed_between(1, 11, "quiet") == 0  # quiet has lost nothing
        fill(store, "quiet", ["q3"])  # q1 goes: its id is all quiet has lost
        assert store.trimmed_between(0, 12, "quiet") == 1
        assert store.trimmed_between(1, 12, "quiet") == 0


def test_trimmed_since_counts_only_what_was_kept_when_the_oldest_ids_were_taken(
    tmp_path: Path,
) -> None:
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        store.set_history(2)
        for i in range(4):  # a0 b0 a1 b1 ... (ids 1-8): a0, b0, a1 and b1 trimmed
            store.append([Batch("a", [line(f"a{i}")]), Batch("b", [line(f"b{i}")])])
        oldest = store.oldest_ids()
        assert store.trimmed_between(0, 8) == 4
        assert store.trimmed_since(oldest, 0, 8) == 0
        store.append([Batch("a", [line("a4")]), Batch("b", [line("b4")])])  # a2 and b2 go
        assert store.trimmed_since(oldest, 0, 10) == 2
        assert store.trimmed_since(oldest, 5, 10) == 1  # b2 alone past a2's id
        assert store.forget_app("b") == 2  # b3 and b4, ids 8 and 10
        assert store.trimmed_since(oldest, 0, 10) == 4
        assert store.trimmed_since(oldest, 7, 10) == 2


def test_trimmed_since_a_span_with_ids_missing_from_before_reads_no_app_s_lines(
    tmp_path: Path,
) -> None:
    """A history of every app calls trimmed_since for each batch with ids missing, which,
    in a store whose apps lose lines at different rates or after store forget, is every
    batch: it reads the apps' rows (those trimmed past the span's start), not each app's
    oldest line (7 ms a batch with 2,000 apps), unless an app was forgotten since the
    history began. An app's lost lines lie at or below the newest it has had trimmed: ids
    another app lost above it are not counted for it."""
    with SQLiteStore.open(tmp_path / "logs.db") as store:
        store.set_history(10)
        for name in ("a", "c", "a", "c", "b", "b", "a", "c"):  # ids 1-8
            store.append([Batch(name, [line(name)])])
        assert store.forget_app("b") == 2  # ids 5 and 6
        oldest = store.oldest_ids()
        statements: list[str] = []

        def since(after: int) -> int:
            store._db.set_trace_callback(statements.append)
            try:
                return store.trimmed_since(oldest, after, 8)
            finally:
                store._db.set_trace_callback(None)

        assert since(0) == 0
        store.set_history(1)  # a loses ids 1 and 3, c 2 and 4
        assert (since(0), since(4)) == (4, 0)
        plans = [
            row[3]
            for sql in statements
            if sql.startswith("SELECT")
            for row in store._db.execute(f"EXPLAIN QUERY PLAN {sql}")
        ]
        assert "SCAN apps" in plans
        assert not [plan for plan in plans if "lines_by_app" in plan]
        assert store.forget_app("c") == 1  # since the history began: each app looked up
        statements.clear()
        assert since(0) == 7  # a's 1 and 3, c's 2, 4 and 8; b's 5 and 6 among them (at most)
        assert any("SELECT min(id) FROM lines WHERE app_id" in sql for sql in statements)


def test_trimmed_since_a_span_with_no_line_missing_costs_the_same_however_many_apps(
    tmp_path: Path,
) -> None:
    """A filtered history of every app calls trimmed_since for each batch it reads: over
    lines none of which are gone, its work (SQLite's VM steps) is that of the span alone,
    not of each app in the store (10 apps or 1,000, the same)."""

    def steps(apps: int) -> int:
        store = SQLiteStore.open(tmp_path / f"{apps}.db")
        store.append([Batch(f"app{i}", [line("x")]) for i in range(apps)])
        after = store.newest_id()
        store.append([Batch("app0", [line(f"y{i}") for i in range(20)])])
        oldest = store.oldest_ids()
        counted = [0]

        def step() -> int:
            counted[0] += 1
            return 0  # carry on

        store._db.set_progress_handler(step, 1)
        assert store.trimmed_since(oldest, after, store.newest_id()) == 0
        store._db.set_progress_handler(None, 1)
        store.close()
        return counted[0]

    assert steps(1000) == steps(10)


def test_trimmed_past_a_mark_counts_the_app_s_own_trims_by_writes_and_by_store_history(
    tmp_path: Path,
) -> None:
    """Another app's lines trimmed among the app's count for nothing once the reader has
    its mark; without one (a position from before schema 9) it is the ids missing, as
    before, and an upgraded store's marks work from then on."""
    path = tmp_path / "logs.db"
    store = SQLiteStore.open(path)
    fill(store, "quiet", ["q0"])
    mark = store.lines_through("quiet", store.newest_id())
    after = store.newest_id()
    for i in range(6):  # q1..q6 with busy lines between them
        fill(store, "quiet", [f"q{i + 1}"])
        fill(store, "busy", [f"b{i}.{k}" for k in range(10)])
    store.set_history(2)  # q1..q4 go, and most of busy's lines
    newest = store.newest_id()
    assert store.trimmed_past("quiet", after, newest, mark) == (4, (mark or 0) + 6)
    assert store.trimmed_past("quiet", after, newest, None)[0] > 4  # the ids missing
    fill(store, "quiet", ["q7"])  # q5 goes, in a write this time
    assert store.trimmed_past("quiet", after, store.newest_id(), mark)[0] == 5
    store.close()
    as_older_herolog_left_it(path, 8)
    older = SQLiteStore.open(path, create=False)  # a reader does not upgrade it
    assert older.lines_through("quiet", older.newest_id()) is None
    assert older.trimmed_past("quiet", after, older.newest_id(), mark)[0] > 5
    older.close()
    writer = SQLiteStore.open(path)
    fill(writer, "busy", ["upgrades it"])
    mark = writer.lines_through("quiet", writer.newest_id())
    after = writer.newest_id()
    for i in range(3):
        fill(writer, "quiet", [f"r{i}"])
        fill(writer, "busy", [f"c{i}.{k}" for k in range(10)])
    assert writer.trimmed_past("quiet", after, writer.newest_id(), mark)[0] == 1
    writer.close()


def test_a_reader_that_may_not_write_the_store_leaves_no_files_beside_it(tmp_path: Path) -> None:
    """A group member let read the logs (the store 0640) reading it as SQLite opens a file
    it cannot write left a -wal and -shm of their own beside it, which the owner could not
    write: every write of the owner's failed ("attempt to write a readonly database") until
    someone removed them. The reader still follows the owner's writes."""
    from tests.cli.test_bad_input import unwritable

    path = tmp_path / "logs.db"
    writer = SQLiteStore.open(path)
    fill(writer, "demo", ["a"])
    writer.close()
    beside = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert not any(p.exists() for p in beside)
    with unwritable(path, 0o440):
        reader = SQLiteStore.open(path, create=False)
        found = reader.last(LineFilter(), 10)
        assert messages(found) == ["a"]
        assert reader.apps()[0].name == "demo"
        assert [p for p in beside if p.exists()] == []
    seen = reader.version()
    writer = SQLiteStore.open(path)
    fill(writer, "demo", ["b"])
    assert reader.version() != seen
    assert messages(reader.after(found[1], LineFilter())) == ["b"]
    writer.close()
    reader.close()


def test_a_writer_that_may_not_write_the_store_is_refused_before_it_opens_it(
    tmp_path: Path,
) -> None:
    """SQLite opens such a file read-only without a word, and refused only the first write,
    "attempt to write a readonly database", after making a -wal and -shm of this user's."""
    from tests.cli.test_bad_input import unwritable

    path = tmp_path / "logs.db"
    writer = SQLiteStore.open(path)
    fill(writer, "demo", ["a"])
    writer.close()
    with unwritable(path, 0o440):
        with pytest.raises(StoreError) as refused:
            SQLiteStore.open(path)
        assert [p for p in tmp_path.iterdir() if p != path] == []
    assert str(refused.value) == (
        f"cannot write to the store {path}: its file is read-only to this user"
    )


def test_a_writer_is_told_which_of_the_store_s_files_it_may_not_write(tmp_path: Path) -> None:
    """A -wal and -shm that another user's reader left beside the store (an older herolog's,
    or the sqlite3 shell's) make every write fail, "attempt to write a readonly database",
    of a store file that is writable: the one in the way is named."""
    from tests.cli.test_bad_input import unwritable

    path = tmp_path / "logs.db"
    writer = SQLiteStore.open(path)
    fill(writer, "demo", ["a"])
    writer.close()
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    wal.write_bytes(b"")
    shm.write_bytes(bytes(32768))
    with unwritable(shm, 0o440), pytest.raises(StoreError) as refused:
        fill(SQLiteStore.open(path), "demo", ["b"])
    assert str(refused.value) == (
        f"cannot write to the store {path}: {shm} is read-only to this user"
    )
    with SQLiteStore.open(path) as writer:
        fill(writer, "demo", ["b"])
        assert messages(writer.last(LineFilter(), 10)) == ["a", "b"]


def big_and_small(store: SQLiteStore) -> Callable[[Callable[[], object]], str]:
    """Fill ``store`` with 30 lines of an app "big" and 10 of "small" (big has most of them);
    how SQLite reads the lines for a read of it: the plan of its query, in one line."""
    fill(store, "big", [f"b{i}" for i in range(30)])
    fill(store, "small", [f"s{i}" for i in range(10)])
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)

    def plan(read: Callable[[], object]) -> str:
        statements.clear()
        read()
        query = next(s for s in statements if "FROM lines" in s and "ORDER BY lines.id" in s)
        return " / ".join(row[-1] for row in store._db.execute(f"EXPLAIN QUERY PLAN {query}"))

    return plan


def test_an_app_with_most_of_the_store_s_lines_is_read_by_scan_another_through_its_index(
    store: SQLiteStore,
) -> None:
    """SQLite, with no statistics to go by, read both through lines_by_app: for an app whose
    lines are most of the rows, looking each one up in the table costs more than reading past
    the other apps' (--grep over an app of 2,000,000 lines: 0.73 s, against 0.31 by scan)."""
    plan = big_and_small(store)
    big, small = LineFilter(app="big", grep=(re.compile("b1"),)), LineFilter(app="small")
    assert messages(store.last(big, 3)) == ["b17", "b18", "b19"]
    assert messages(store.after(0, small, 3)) == ["s0", "s1", "s2"]
    # The table in id order: the whole of it, or from the first id after.
    assert "SCAN lines" in plan(lambda: store.last(big, 3))
    assert "SEARCH lines USING INTEGER PRIMARY KEY" in plan(lambda: store.after(0, big, 3))
    for read in (lambda: store.last(big, 3), lambda: store.first_of_last(big, 3)):
        assert "lines_by_app" not in plan(read)
    assert "lines_by_app" not in plan(lambda: store.after(0, big, 3))
    assert "SCAN lines" in plan(lambda: store.first_of_last(big, 3))
    for read in (lambda: store.last(small, 3), lambda: store.after(0, small, 3)):
        assert "USING INDEX lines_by_app" in plan(read)
    # Only ids, of the app alone: the index holds them all, and no row is read at all.
    assert "COVERING INDEX lines_by_app" in plan(lambda: store.first_of_last(small, 3))


def test_a_filtered_read_of_one_app_of_many_weighs_it_without_summing_every_app(
    tmp_path: Path,
) -> None:
    """Whether a filtered read of an app goes by scan (SCAN_SHARE) is told by the first
    hundred apps' lines where they are enough, the store holding at least those: its work
    (SQLite's VM steps) is the same with 200 apps in the store as with 2,000 (summing every
    app's took 0.85 ms a read with 20,000 apps); an app with most of the lines, behind many
    small ones, is still read by scan."""

    def steps(apps: int) -> int:
        store = SQLiteStore.open(tmp_path / f"{apps}.db")
        store.append([Batch(f"app{i:04d}", [line("x"), line("y")]) for i in range(apps)])
        plan = big_and_small(store)
        counted = [0]

        def step() -> int:
            counted[0] += 1
            return 0  # carry on

        wanted = LineFilter(app="app0005", grep=(re.compile("y"),))
        store._db.set_progress_handler(step, 1)
        assert messages(store.last(wanted, 5)) == ["y"]
        store._db.set_progress_handler(None, 1)
        assert "USING INDEX lines_by_app" in plan(lambda: store.last(wanted, 5))
        store.close()
        return counted[0]

    assert steps(2000) == steps(200)
    with SQLiteStore.open(tmp_path / "big.db") as store:
        store.append([Batch(f"app{i:04d}", [line("x")]) for i in range(150)])
        store.append([Batch("big", [line(f"b{i}") for i in range(200)])])
        plan = big_and_small(store)  # and 30 more of big's, 10 of small's
        assert "SCAN lines" in plan(lambda: store.last(LineFilter(app="big", sources=("app",)), 3))


def test_an_app_made_anew_takes_over_what_its_forgotten_namesake_counted(
    store: SQLiteStore,
) -> None:
    """Its row holds the counts from then on, and the store keeps no note of them apart."""
    fill(store, "quiet", ["a", "b"])
    store.forget_app("quiet")
    fill(store, "quiet", ["c"])
    store.forget_app("quiet")
    fill(store, "quiet", ["d"])
    _, newest = store.last(LineFilter(), 0)
    assert store.lines_through("quiet", newest) == 4  # a, b and c forgotten, then d
    notes = store._db.execute("SELECT key FROM meta WHERE key LIKE 'forgotten:%'").fetchall()
    assert notes == []
    store.forget_app("quiet")
    assert [key for (key,) in store._db.execute("SELECT key FROM meta")].count(
        "forgotten:quiet"
    ) == 1


def test_an_app_with_most_of_the_store_s_lines_is_read_alone_through_its_index(
    store: SQLiteStore,
) -> None:
    """Each row lines_by_app leads to is one a read of the app alone wants, where a scan
    reads past every newer line of the other apps: `herolog logs -a big` or a drain of it
    catching up, once big had gone quiet under 1,000,000 lines of another, read all of them
    (0.12 s against 0.6 ms)."""
    plan = big_and_small(store)
    big = LineFilter(app="big")
    assert messages(store.last(big, 3)) == ["b27", "b28", "b29"]
    assert messages(store.after(27, big, 3)) == ["b27", "b28", "b29"]
    assert messages(store.app_lines("big", 27, 40, 3, 1 << 20)) == ["b27", "b28", "b29"]
    for read in (
        lambda: store.last(big, 3),
        lambda: store.after(27, big, 3),
        lambda: store.app_lines("big", 27, 40, 3, 1 << 20),
    ):
        assert "USING INDEX lines_by_app" in plan(read)
    assert "COVERING INDEX lines_by_app" in plan(lambda: store.first_of_last(big, 3))
