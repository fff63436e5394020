from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from herolog import logs, timestamps
from herolog.cli import cli
from herolog.filters import LineFilter
from herolog.logs import LogsRequest, follow, read_after, show_logs
from herolog.parser import LogLine
from herolog.render import TextRenderer
from herolog.store import Batch, SQLiteStore, StoredLine, open_store
from tests.helpers import (
    Child,
    fill,
    first_line_into_a_socket,
    herolog_env,
    herolog_process,
    invoke,
    line,
    shell_job,
)

run = invoke


def output(*args: str) -> list[str]:
    code, out, err = run("logs", *args)
    assert code == 0, err
    return out.splitlines()


@pytest.fixture
def store(herolog_home: Path) -> Iterator[SQLiteStore]:
    with open_store() as store:
        yield store


@pytest.fixture
def demo(store: SQLiteStore) -> SQLiteStore:
    """One app with app, router and dyno-manager lines; another app interleaved."""
    for i in range(60):
        store.append(
            [
                Batch("demo", [line(f"app {i}", dyno=f"web.{i % 2 + 1}", second=i)]),
                Batch(
                    "demo",
                    [
                        line(
                            f"status={200 + i} router {i}", source="heroku", dyno="router", second=i
                        )
                    ],
                ),
                Batch("other", [line(f"other {i}", dyno="worker.1", second=i)]),
            ]
        )
    return store


def test_empty_store_prints_nothing_and_exits_0(herolog_home: Path) -> None:
    assert run("logs") == (0, "", "")
    assert not (herolog_home / "logs.db").exists(), "reading must not create a store"


def test_text_format_is_exactly_heroku_lines(store: SQLiteStore) -> None:
    fill(store, "demo", ["hello [not markup] [bold]x[/bold]"], dyno="web.1", second=7)
    assert output() == [
        "2024-03-05T09:00:07.000000+00:00 app[web.1]: hello [not markup] [bold]x[/bold]"
    ]


def test_default_is_the_last_100_lines_of_all_apps_in_arrival_order(demo: SQLiteStore) -> None:
    lines = output()
    assert len(lines) == 100
    assert lines[-1].endswith("app[worker.1]: other 59")
    assert lines[-3].endswith("app[web.2]: app 59")
    assert lines[0].endswith("app[worker.1]: other 26")
    assert lines[1].endswith("app[web.2]: app 27")


def test_app_and_num(demo: SQLiteStore) -> None:
    lines = output("-a", "other", "-n", "3")
    assert [x.split(": ", 1)[1] for x in lines] == ["other 57", "other 58", "other 59"]


def test_an_app_the_store_has_never_had_is_an_error_as_heroku_logs_makes_it(
    demo: SQLiteStore, herolog_home: Path
) -> None:
    code, out, err = run("logs", "--app", "missing")
    assert (code, out) == (1, "")
    store = herolog_home / "logs.db"
    assert err == (
        f"Error: the store {store} has no app named 'missing'"
        " (its apps: demo, other; --tail waits for its first line)\n"
    )
    # An app that is there, with nothing matching, is no error.
    assert run("logs", "-a", "other", "-s", "nosuchsource") == (0, "", "")


@pytest.mark.parametrize("apps", [10, 11])
def test_an_unknown_app_names_ten_of_the_store_s_apps_and_says_if_there_are_more(
    store: SQLiteStore, apps: int
) -> None:
    names = [f"app{i:02}" for i in range(apps)]
    for name in names:
        fill(store, name, ["a line"])
    code, _, err = run("logs", "-a", "missing")
    assert code == 1
    more = ", ..." if apps > 10 else ""
    assert f"(its apps: {', '.join(names[:10])}{more}; --tail waits" in err


def test_an_unknown_app_from_herolog_app_says_where_it_came_from(demo: SQLiteStore) -> None:
    """No -a was typed: without a word on $HEROLOG_APP (exported for herolog run, say),
    the error names an app the user never asked for."""
    env = herolog_env(HEROLOG_APP="missing")
    done = subprocess.run(
        [sys.executable, "-m", "herolog", "logs"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith(
        "has no app named 'missing' (its apps: demo, other; --tail waits for its first line;"
        " -a came from $HEROLOG_APP)"
    )
    code, _, err = run("logs", "-a", "missing")  # typed: nothing to add
    assert code == 1
    assert "HEROLOG_APP" not in err


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        # tail -f, journalctl, docker logs and kubectl logs: click offered --color for it
        (["--follow"], "No such option '--follow'. Did you mean '--tail'?"),
        (["-a", "demo", "-f"], "No such option '-f'. Did you mean '--tail'?"),
        (["--lines", "5"], "No such option '--lines'. Did you mean '--num'?"),  # not --since
        (["--folow"], "No such option '--folow'. Did you mean '--tail'?"),
        (["--sinse", "1h"], "No such option '--sinse'. Did you mean '--since'?"),
        # journalctl -o json: click offered nothing
        (["-o", "json"], "No such option '-o'. Did you mean '--json'?"),
        (["--output=json"], "No such option '--output'. Did you mean '--json'?"),
        (["-ojson"], "No such option '-o'. Did you mean '--json'?"),
        # ...but a near miss of it is not: jq's --color-output is --color
        (["--color-output"], "No such option '--color-output'. Did you mean '--color'?"),
        # docker logs --tail N: the number was told as an argument from nowhere
        (
            ["--tail", "100"],
            "Got unexpected extra argument (100): -t/--tail takes no number; -n 100 --tail"
            " shows the last 100 lines, then new ones",
        ),
        (
            ["-a", "demo", "-t", "5"],
            "Got unexpected extra argument (5): -t/--tail takes no number; -n 5 --tail shows"
            " the last 5 lines, then new ones",
        ),
        (
            ["-t", "1"],
            "Got unexpected extra argument (1): -t/--tail takes no number; -n 1 --tail shows"
            " the last line, then new ones",
        ),
        (
            ["-t", "2"],
            "Got unexpected extra argument (2): -t/--tail takes no number; -n 2 --tail shows"
            " the last 2 lines, then new ones",
        ),
        # docker logs NAME and kubectl logs NAME: the app, where herolog takes none
        (
            ["demo"],
            "Got unexpected extra argument (demo): the app is given with -a, as heroku logs"
            " takes it: -a demo",
        ),
        (
            ["-t", "web-api"],
            "Got unexpected extra argument (web-api): the app is given with -a, as heroku logs"
            " takes it: -a web-api",
        ),
        # ...and a time, where docker logs --since and journalctl --since take one
        (
            ["1h"],
            "Got unexpected extra argument (1h): a time is given with --since or --until:"
            " --since 1h",
        ),
        (
            ["2024-03-05"],
            "Got unexpected extra argument (2024-03-05): a time is given with --since or"
            " --until: --since 2024-03-05",
        ),
        (
            ["-a", "demo", "10m"],
            "Got unexpected extra argument (10m): a time is given with --since or --until:"
            " --since 10m",
        ),
        (["-a", "demo", "web.1"], "Got unexpected extra argument (web.1)"),  # not the app
        (["my app"], "Got unexpected extra argument (my app)"),  # no app's name
        (["100"], "Got unexpected extra argument (100)"),  # no --tail: no word of it
        (["-t", "x", "y"], "Got unexpected extra arguments (x y)"),
    ],
)
def test_the_names_other_log_tools_give_options_are_told_apart(
    demo: SQLiteStore, typed: list[str], error: str
) -> None:
    code, out, err = run("logs", *typed)
    assert (code, out) == (2, "")
    assert err.endswith(f"Error: {error}\n"), err


def test_an_app_is_found_by_its_id_as_well(demo: SQLiteStore) -> None:
    """The id the Platform API hands out (and heroku -a takes), in either case."""
    from herolog.drains import app_id

    by_name = output("-a", "other", "-n", "3")
    assert output("-a", app_id("other"), "-n", "3") == by_name
    assert output("-a", app_id("other").upper(), "-n", "3") == by_name
    # An id of no app has a typo in it: refused, by a tail too, which would wait for ever
    # (a new app gets an id of its own name, never this one).
    for tail in ([], ["-t"]):
        code, _, err = run("logs", "-a", "6f1c3c59-0000-4c4f-9a7e-2b8f4c1d9e10", *tail)
        assert code == 1
        assert "no app named '6f1c3c59-0000-4c4f-9a7e-2b8f4c1d9e10', nor one with that id" in err
        assert "--tail waits" not in err


@pytest.mark.subprocess
def test_a_tail_of_an_id_before_the_store_is_made_is_refused(herolog_home: Path) -> None:
    """With no store yet there is no app, so no id either: the tail would wait for ever."""
    an_id = "6f1c3c59-0000-4c4f-9a7e-2b8f4c1d9e10"
    done = herolog_process("logs", "-t", "-a", an_id, timeout=15)
    assert done.returncode == 1
    assert f"no app named {an_id!r}, nor one with that id (it has no apps yet)" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.subprocess
@pytest.mark.parametrize("made", [True, False], ids=["store", "no store yet"])
def test_a_tail_of_an_app_no_app_can_be_named_is_refused(herolog_home: Path, made: bool) -> None:
    """No intake takes an app of that name (a space, a slash: a typo, or a drain URL pasted
    whole), so a tail waiting for its first line would wait for ever."""
    if made:
        with open_store() as store:
            fill(store, "demo", ["x"])
    for app in ("my app", "demo/logs", "a" * 101):
        done = herolog_process("logs", "-t", "-a", app, timeout=15)
        assert done.returncode == 1, app
        assert f"has no app named {app!r}, and no app can have that name (app names are" in (
            done.stderr
        )
        assert done.stderr.count("\n") == 1


def test_an_app_asked_of_a_store_not_made_yet_is_an_error(
    herolog_home: Path,
) -> None:
    code, out, err = run("logs", "-a", "demo")
    assert (code, out) == (1, "")
    assert "has no app named 'demo' (it has no apps yet; --tail waits" in err
    assert run("logs") == (0, "", "")  # no app asked for: an empty store shows nothing


def test_num_zero_prints_nothing(demo: SQLiteStore) -> None:
    assert output("-n", "0") == []


def test_filters_apply_before_the_limit(demo: SQLiteStore) -> None:
    lines = output("-a", "demo", "-n", "50", "-s", "app")
    assert len(lines) == 50
    assert all(" app[web." in x for x in lines)
    assert lines[0].endswith("app 10")


def test_dyno_and_process_type_prefix_matching(store: SQLiteStore) -> None:
    for dyno in ["web.1", "web.12", "webby.1", "worker.1"]:
        fill(store, "demo", [dyno], dyno=dyno)
    for flag in ("-d", "--dyno", "--dyno-name", "-p", "--process-type", "--ps"):
        assert [x.split(": ")[1] for x in output(flag, "web")] == ["web.1", "web.12"], flag
    assert [x.split(": ")[1] for x in output("-d", "web.1")] == ["web.1"]
    assert [x.split(": ")[1] for x in output("-d", "web", "-p", "worker")] == []


def test_a_repeated_dyno_process_type_or_source_is_any_of_them(store: SQLiteStore) -> None:
    """As journalctl's -u twice, not the last one alone (click's default for an option
    given twice) nor an error (the heroku CLI's): -d and -p each still narrow the other."""
    for dyno in ["web.1", "web.2", "worker.1", "clock.1"]:
        fill(store, "demo", [dyno], dyno=dyno)
    fill(store, "demo", ["router"], source="heroku", dyno="router")

    def dynos(*args: str) -> list[str]:
        return [x.split(": ")[1] for x in output(*args)]

    assert dynos("-d", "web.1", "-d", "worker.1") == ["web.1", "worker.1"]
    assert dynos("-p", "worker", "--ps", "clock") == ["worker.1", "clock.1"]
    assert dynos("-d", "web.2", "-d", "worker.1", "-p", "web") == ["web.2"]
    assert dynos("-s", "heroku", "-s", "app", "-d", "router", "-d", "clock") == [
        "clock.1",
        "router",
    ]
    assert dynos("-d", "", "-d", "web.2") == ["web.2"]  # the empty one filters nothing


def test_an_app_given_twice_is_a_usage_error(demo: SQLiteStore) -> None:
    """Where -s, -d and -p given twice are any of them, two -a would read as both apps;
    click would show the last alone."""
    for args in (["-a", "demo", "-a", "other"], ["--app=demo", "-n", "1", "-a", "demo"]):
        code, out, err = run("logs", *args)
        assert (code, out) == (2, ""), args
        assert err.endswith(
            "Error: -a/--app given more than once: logs shows one app, or every app without -a\n"
        )
    env = herolog_env(HEROLOG_APP="other")  # and one -a typed: that one, as before
    done = subprocess.run(
        [sys.executable, "-m", "herolog", "logs", "-a", "demo", "-n", "1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout, done.stderr) == run("logs", "-a", "demo", "-n", "1")
    assert run("logs", "-a", "other", "-n", "1")[1] != done.stdout


def test_more_names_or_patterns_than_the_store_s_query_takes_are_a_usage_error(
    demo: SQLiteStore,
) -> None:
    """SQLite refuses a query past a depth of 1,000 terms, about 330 dyno names: 'cannot
    use the store' would blame the store for it."""
    hundred = [arg for n in range(100) for arg in ("-d", f"web.{n}")]
    code, out, err = run("logs", "-a", "demo", *hundred, "-p", "worker")
    assert (code, out) == (2, "")
    assert err.endswith("Error: -d and -p: at most 100 names or patterns (in all)\n")
    for flag in ("-s", "-g", "-x"):
        code, out, err = run("logs", *[arg for n in range(101) for arg in (flag, f"v{n}")])
        assert (code, out) == (2, ""), flag
        assert f"Error: {flag}: at most 100" in err
    assert run("logs", "-a", "demo", "-n", "1", *hundred)[0] == 0


def test_source_is_exact(demo: SQLiteStore) -> None:
    assert len(output("-s", "heroku", "-n", "1500")) == 60
    assert output("-s", "hero") == []


def test_an_empty_source_or_dyno_filters_nothing(demo: SQLiteStore) -> None:
    """As the heroku CLI drops an empty -s or -d (and herolog serve an empty source or
    dyno in a log session): a script's unset variable ('-s "$SOURCE"') shows every line."""
    everything = output("-n", "1500")
    assert len(everything) > 60
    assert output("-s", "", "-n", "1500") == everything
    assert output("-d", "", "-n", "1500") == everything


def test_since_and_until(store: SQLiteStore) -> None:
    for second in range(10):
        fill(store, "demo", [str(second)], second=second)
    lines = output("--since", "2024-03-05T09:00:03Z", "--until", "2024-03-05T09:00:05+00:00")
    assert [x.split(": ")[1] for x in lines] == ["3", "4"]
    assert output("--since", "1h") == []  # all of these are from 2024
    assert len(output("--until", "now")) == 10
    # A date-time without an offset is local time: TZ is UTC here, UTC+1 in Paris in March.
    assert len(output("--since", "2024-03-05T09:00:08")) == 2
    paris = subprocess.run(
        [sys.executable, "-m", "herolog", "logs", "--since", "2024-03-05T10:00:08"],
        capture_output=True,
        text=True,
        check=True,
        env=herolog_env(TZ="Europe/Paris"),
    )
    assert [x.split(": ")[1] for x in paris.stdout.splitlines()] == ["8", "9"]


def test_since_and_until_take_the_timestamps_lines_are_stored_with(store: SQLiteStore) -> None:
    """A timestamp copied from the output selects its line: a leap second and a lower-case
    t or z, which RFC 3339 allows and the intake takes, were refused (exit 2)."""
    stamps = [
        "2016-12-31T23:59:59.5Z",
        "2016-12-31T23:59:60Z",
        "2016-12-31t23:59:60.25z",
        "2017-01-01T00:00:00+00:00",
    ]
    text = "".join(f"{stamp} app[web.1]: {i}\n" for i, stamp in enumerate(stamps))
    imported = herolog_process("import", "-", "-a", "demo", input=text)
    assert imported.returncode == 0, imported.stderr

    def messages(*args: str) -> list[str]:
        result = herolog_process("logs", *args)
        assert result.returncode == 0, result.stderr
        return [x.split(": ")[1] for x in result.stdout.splitlines()]

    assert messages("--since", stamps[1]) == ["1", "2", "3"]
    assert messages("--since", stamps[2]) == ["1", "2", "3"]
    assert messages("--since", "2016-12-31t23:59:59.5z") == ["0", "1", "2", "3"]
    assert messages("--until", stamps[2]) == ["0"]
    assert messages("--until", "2016-12-31t23:59:60") == ["0"]  # local time: UTC here


def test_a_time_that_is_none_names_every_form_time_takes() -> None:
    """It named durations and one date-time: not now, weeks and seconds, or a date alone."""
    code, out, err = run("logs", "--since", "yesterday")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        "Error: Invalid value for '--since': 'yesterday' is not a time: use now, a duration"
        " before now (90s, 10m, 2h, 1d, 1w, 1h30m), or an ISO 8601 date or date-time"
        " (2024-03-05, 2024-03-05T09:14, 2024-03-05T09:14:07Z), local time without an offset"
    )


def test_json_times_read_as_the_readme_says(herolog_home: Path) -> None:
    """--json's times have microseconds, which jq's fromdateiso8601 refuses: the README's way
    round that gives the Unix time, and Python reads them as they are."""
    jq = shutil.which("jq")
    assert jq, "this test runs the README's jq: install it (apt-get install jq)"
    text = "2024-03-05T10:14:07.654321+01:00 app[web.1]: hi\n"
    assert herolog_process("import", "-", "-a", "demo", input=text).returncode == 0
    (record,) = map(json.loads, herolog_process("logs", "--json").stdout.splitlines())
    moment = datetime.fromisoformat(record["time"])
    assert moment == datetime(2024, 3, 5, 9, 14, 7, 654321, tzinfo=UTC)
    assert datetime.fromisoformat(record["received_at"]).tzinfo == UTC
    done = subprocess.run(
        [jq, '.time[:19] + "Z" | fromdateiso8601'],
        input=json.dumps(record),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == f"{int(moment.timestamp())}\n"


def test_a_deeply_nested_json_message_does_not_stop_jq(herolog_home: Path) -> None:
    """A message of JSON nested 300 levels had its fields in the record, past the 255 levels
    jq 1.6 reads: jq stopped at it, and printed none of the lines after it."""
    jq = shutil.which("jq")
    assert jq, "this test runs jq on --json: install it (apt-get install jq)"
    deep = '{"a": ' + "[" * 299 + "]" * 299 + "}"
    text = f"2024-03-05T10:14:07Z app[web.1]: {deep}\n2024-03-05T10:14:08Z app[web.1]: after\n"
    assert herolog_process("import", "-", "-a", "demo", input=text).returncode == 0
    out = herolog_process("logs", "--json").stdout
    first, _ = map(json.loads, out.splitlines())
    assert (first["message"], "fields" in first) == (deep, False)
    done = subprocess.run([jq, "-r", ".message | .[:6]"], input=out, capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"a": \nafter\n', "")


def test_since_a_local_time_the_clocks_skip(herolog_home: Path) -> None:
    """In New York 02:00 became 03:00 on 8 March 2026: --since 02:30 was read as 06:30 UTC,
    before the change, and showed the line of 01:59:59; it is 02:30 EST, 03:30 EDT."""
    text = "".join(
        f"{stamp} app[web.1]: {stamp}\n"
        for stamp in ("2026-03-08T06:59:59Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z")
    )
    assert herolog_process("import", "-", "-a", "demo", input=text).returncode == 0
    result = herolog_process("logs", "--since", "2026-03-08T02:30", env={"TZ": "America/New_York"})
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "2026-03-08T07:30:00Z app[web.1]: 2026-03-08T07:30:00Z\n"


@pytest.mark.parametrize(
    ("zone", "args", "shown"),
    [
        ("UTC", ["--since", "0001-01-01"], ["0", "1"]),
        ("UTC", ["--since", "0001-01-01T00:00:00"], ["0", "1"]),
        ("Asia/Tokyo", ["--until", "9999-12-31T20:00"], ["0", "1"]),
        ("America/New_York", ["--since", "0001-01-02", "--until", "9999-12-31"], ["0", "1"]),
        ("Asia/Tokyo", ["--since", "0001-01-01"], "'0001-01-01' is outside the times herolog"),
        ("Asia/Tokyo", ["--since", "0001-01-01T08:59"], "'0001-01-01T08:59' is outside the"),
    ],
)
def test_local_times_at_the_ends_of_the_calendar(
    store: SQLiteStore, zone: str, args: list[str], shown: list[str] | str
) -> None:
    """A local time within a day of year 1 or 9999 was refused with Python's own words
    ('year 0 is out of range'), even where it is an instant herolog can hold (midnight of
    0001-01-01 in UTC): those are taken, and one that is not said to be out of range."""
    fill(store, "demo", ["0", "1"])
    result = herolog_process("logs", *args, env={"TZ": zone})
    if isinstance(shown, list):
        assert (result.returncode, result.stderr) == (0, "")
        assert [x.split(": ")[1] for x in result.stdout.splitlines()] == shown
    else:
        assert result.returncode == 2
        assert result.stderr.splitlines()[-1].startswith("Error: Invalid value for '--since': ")
        assert shown in result.stderr


def test_relative_since_counts_back_from_now(store: SQLiteStore) -> None:
    from herolog import timestamps

    recent = timestamps.to_heroku(timestamps.now())
    old = "2020-01-01T00:00:00+00:00"
    store.append(
        [
            Batch(
                "demo",
                [
                    LogLine(
                        old, "2020-01-01T00:00:00.000000Z", "app", "web.1", "old", 190, "host", None
                    ),
                    LogLine(
                        recent,
                        timestamps.normalize(recent) or "",
                        "app",
                        "web.1",
                        "recent",
                        190,
                        "host",
                        None,
                    ),
                ],
            )
        ]
    )
    assert [x.split(": ")[1] for x in output("--since", "10m")] == ["recent"]
    assert [x.split(": ")[1] for x in output("--until", "1d")] == ["old"]


def test_grep_and_exclude(demo: SQLiteStore) -> None:
    lines = output(
        "-n", "1500", "-g", r"app 1\d$", "-g", "other 5[0-3]", "-x", "1[5-9]", "-x", "52"
    )
    assert [x.split(": ")[1] for x in lines] == [
        "app 10",
        "app 11",
        "app 12",
        "app 13",
        "app 14",
        "other 50",
        "other 51",
        "other 53",
    ]


@pytest.mark.subprocess
def test_a_pattern_python_warns_of_is_taken_without_the_warning(demo: SQLiteStore) -> None:
    """[[o] is a class of [ and o, for which re warns that a later Python may read a nested
    set: the warning came out on stderr with herolog's source lines, twice, before the lines."""
    done = subprocess.run(
        [sys.executable, "-m", "herolog", "logs", "-g", "^[[o]ther 59"],
        capture_output=True,
        text=True,
        env=herolog_env(),
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert [x.split(": ")[1] for x in done.stdout.splitlines()] == ["other 59"]


@pytest.mark.subprocess
def test_a_pattern_of_a_byte_that_is_not_utf8_matches_no_message(store: SQLiteStore) -> None:
    """A byte that is not UTF-8 on the command line reaches herolog as a lone surrogate,
    which no stored message holds: SQLite could not be given it to search for (a
    traceback, exit 1)."""
    fill(store, "demo", ["caf\xe9", "plain"])
    found = herolog_process("logs", "-g", "\udce9")  # the byte E9 alone
    assert (found.returncode, found.stdout, found.stderr) == (0, "", "")
    kept = herolog_process("logs", "-g", "a", "-x", "\udce9")
    assert kept.returncode == 0, kept.stderr
    assert [x.split(": ")[1] for x in kept.stdout.splitlines()] == ["caf\xe9", "plain"]


def test_json_output_schema(store: SQLiteStore) -> None:
    store.append(
        [
            Batch(
                "demo",
                [
                    line(
                        'at=error code=H12 desc="Request timeout" status=503 service=30000ms',
                        source="heroku",
                        dyno="router",
                    ),
                    line('{"level": "warn", "n": 2}'),
                    line("plain words"),
                ],
                {"env": "prod"},
            )
        ]
    )
    _, out, _ = run("logs", "--json")
    records = [json.loads(x) for x in out.splitlines()]
    first = records[0]
    assert set(first) == {
        "id",
        "app",
        "timestamp",
        "time",
        "source",
        "dyno",
        "message",
        "pri",
        "hostname",
        "msgid",
        "structured_data",
        "received_at",
        "attributes",
        "fields",
    }
    assert first["app"] == "demo"
    assert first["attributes"] == {"env": "prod"}
    assert first["fields"]["status"] == "503"
    assert first["fields"]["desc"] == "Request timeout"
    assert records[1]["fields"] == {"level": "warn", "n": 2}
    assert "fields" not in records[2]
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)


@pytest.mark.subprocess
def test_json_records_are_one_line_for_any_line_splitter(store: SQLiteStore) -> None:
    """JSON leaves U+0085, U+2028 and U+2029 raw, and Python's str.splitlines (as many a
    script reads NDJSON) ends a line at each, cutting the record in two."""
    messages = ["nel\x85next", "ls\u2028ps\u2029end", "caf\u00e9 \u65e5"]
    fill(store, "demo", messages)
    done = subprocess.run(
        [sys.executable, "-m", "herolog", "logs", "--json"],
        env=herolog_env(),
        capture_output=True,
        check=True,
    )
    out = done.stdout.decode()
    assert [json.loads(x)["message"] for x in out.splitlines()] == messages
    assert "caf\u00e9 \u65e5" in out  # other characters stay as they are, in UTF-8


@pytest.mark.subprocess
def test_json_escapes_the_control_characters_json_leaves_raw(store: SQLiteStore) -> None:
    """JSON escapes only the controls below U+0020: the C1 ones (U+009B is a CSI, U+009D an
    OSC, which terminals take as ESC [ and ESC ]) came out raw, so --json on a terminal
    let whoever sent a line clear it, set its title or write its clipboard."""
    message = "clear \x9b2J title \x9d0;pwned\x9c del\x7f nel\x85 caf\u00e9"
    fill(store, "demo", [message])
    code, data = on_a_terminal("logs", "--json")
    assert code == 0
    text = data.decode()
    for raw in ("\x9b", "\x9d", "\x9c", "\x85"):
        assert raw not in text, raw
    assert json.loads(text)["message"] == message
    assert "\\u009b2J title \\u009d0;pwned\\u009c" in text
    # Into a pipe too: the same JSON, for a reader that shows it on a terminal (less, tail).
    proc = herolog_process("logs", "--json")
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", text.replace("\r\n", "\n"))


@pytest.mark.parametrize(
    ("args", "env", "colored"),
    [
        ((), {}, False),
        (("--color", "always"), {}, True),
        (("--force-colors",), {}, True),
        ((), {"FORCE_COLOR": "1"}, True),
        ((), {"FORCE_COLOR": "0"}, False),
        (("--color", "never"), {"FORCE_COLOR": "1"}, False),
        ((), {"FORCE_COLOR": "1", "NO_COLOR": "1"}, True),  # as in the heroku CLI
        ((), {"FORCE_COLOR": "1", "HEROKU_LOGS_COLOR": "0"}, False),
        ((), {"FORCE_COLOR": "1", "HEROKU_COLOR": "0"}, False),
        (("--color", "always"), {"NO_COLOR": "1"}, True),
        (("--no-color",), {"FORCE_COLOR": "1"}, False),
    ],
)
def test_colour_switches(
    demo: SQLiteStore, args: tuple[str, ...], env: dict[str, str], colored: bool
) -> None:
    code, out, _ = run("logs", "-n", "5", *args, env=env)
    assert code == 0
    assert ("\x1b[" in out) is colored
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert plain == "".join(f"{x}\n" for x in output("-n", "5"))


def test_forced_colour_works_even_where_the_terminal_claims_to_be_dumb(demo: SQLiteStore) -> None:
    code, out, _ = run("logs", "-n", "1", env={"FORCE_COLOR": "1", "TERM": "dumb"})
    assert code == 0
    assert "\x1b[" in out


def test_colour_keeps_every_character_of_the_line(store: SQLiteStore) -> None:
    # \r in the middle: CliRunner's output turns a final \r\n into \n
    fill(store, "demo", ["a\tb\x07c\x08d\x0ce\rf"], source="heroku", dyno="router")
    _, colored, _ = run("logs", "--color", "always")
    _, plain, _ = run("logs")
    assert plain.endswith(": a\tb\x07c\x08d\x0ce\rf\n")
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == plain


def test_default_num_follows_a_small_history(store: SQLiteStore) -> None:
    store.set_history(50)
    fill(store, "demo", [str(i) for i in range(80)])
    assert len(output()) == 50
    assert run("logs", "-n", "51")[0] == 2


@pytest.mark.parametrize("other", [("--force-colors",), ("--color", "always")])
def test_no_color_with_a_flag_for_colour_is_a_usage_error(
    demo: SQLiteStore, other: tuple[str, ...]
) -> None:
    code, out, err = run("logs", "--no-color", *other)
    assert (code, out) == (2, "")
    assert f"--no-color and {' '.join(other)} contradict each other" in err


@pytest.mark.parametrize(
    "args", [("--force-colors", "--color", "never"), ("--color", "never", "--force-colors")]
)
def test_force_colors_with_color_never_is_a_usage_error(
    demo: SQLiteStore, args: tuple[str, ...]
) -> None:
    """As --no-color is with --force-colors: the flag for colour won, and --color never,
    asked for as plainly, was dropped without a word."""
    code, out, err = run("logs", *args)
    assert (code, out) == (2, "")
    assert "--force-colors and --color never contradict each other" in err


def test_colour_never_reads_log_text_as_markup(store: SQLiteStore) -> None:
    fill(store, "demo", ["[red]not red[/red] [link=x]y[/link] :smile:"])
    _, out, _ = run("logs", "--color", "always")
    assert "[red]not red[/red] [link=x]y[/link] :smile:" in re.sub(r"\x1b\[[0-9;]*m", "", out)


def test_num_above_history_is_a_usage_error(demo: SQLiteStore) -> None:
    code, _, err = run("logs", "-n", "1501")
    assert code == 2
    assert "1,501 is more than the 1,500 lines the store keeps per app" in err
    assert "herolog store history 1501" in err
    demo.set_history(5000)
    assert run("logs", "-n", "5000")[0] == 0
    # The most a store keeps may still be asked for: raise the history to it.
    code, _, err = run("logs", "-n", "10000000")
    assert code == 2
    assert "(raise that with: herolog store history 10000000)" in err


@pytest.mark.parametrize(("history", "kept"), [(1, "1 line"), (2, "2 lines")])
def test_num_above_a_short_history_says_it_in_the_singular_for_one_line(
    demo: SQLiteStore, history: int, kept: str
) -> None:
    demo.set_history(history)
    code, _, err = run("logs", "-n", "3")
    assert code == 2
    assert f"3 is more than the {kept} the store keeps per app (" in err


def test_num_above_what_any_store_keeps_suggests_a_history_it_can_keep(
    demo: SQLiteStore,
) -> None:
    """The way out the error names must work: no store keeps more than MAX_HISTORY."""
    code, _, err = run("logs", "-n", "999999999999")
    assert code == 2
    suggested = re.search(r"herolog store history (\d+)", err)
    assert suggested, err
    assert run("store", "history", suggested[1])[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-n", "-1"), "-1 is not in the range x>=0"),
        (("-n", "many"), "'many' is not a valid integer"),
        (("--since", "yesterday-ish"), "'yesterday-ish' is not a time"),
        (("--until", "10 parsecs"), "is not a time"),
        (("-g", "(unclosed"), "'(unclosed' is not a valid regular expression"),
        (("-x", "*"), "is not a valid regular expression"),
        # Valid, and refused for how long it may take: said so, not called invalid.
        (("-g", r"(\d+\.?)+"), r"'(\d+\.?)+' is refused: it repeats a repetition"),
        # A pattern is shown as typed: repr's doubled backslashes are not in it.
        (("-g", r"\d+("), r"'\d+(' is not a valid regular expression"),
        (("-x", "(a|aa)*"), "'(a|aa)*' is refused: it repeats a choice"),
        (
            ("-g", "(?:" + "".join(chr(0x4E00 + i) + "?" for i in range(2_000)) + "x)+"),
            "x)+' is refused: it is too long or too complex to check",
        ),
        (("--color", "sometimes"), "'sometimes' is not one of"),
        (("--since", "1000000d"), "outside the times herolog can handle"),
        (("--since", "99999999999999999999d"), "outside the times herolog can handle"),
        (("--since", "9" * 5000 + "s"), "outside the times herolog can handle"),
        (("--until", "9999-12-31T23:59:59-01:00"), "outside the times herolog can handle"),
    ],
)
def test_bad_flag_values_are_one_line_usage_errors(args: tuple[str, ...], message: str) -> None:
    code, out, err = run("logs", *args)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("Error: Invalid value for")


def test_a_home_that_is_a_file_is_a_clear_error(herolog_home: Path) -> None:
    herolog_home.write_text("not a directory")
    for args in (["store", "history", "10"], ["import", "-"]):
        result = CliRunner().invoke(cli, args, input=b"x\n")
        assert result.exit_code == 1, args
        assert f"cannot create the store's directory {herolog_home}" in result.stderr
        assert not isinstance(result.exception, OSError)


def test_a_broken_store_file_is_a_clear_error(herolog_home: Path) -> None:
    herolog_home.mkdir()
    (herolog_home / "logs.db").write_bytes(b"garbage" * 1000)
    code, _, err = run("logs")
    assert code == 1
    assert f"{herolog_home / 'logs.db'} is not a usable herolog store" in err
    assert "move it aside" in err


# Child processes: what a terminal and a pipeline see ----------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "args", [["-n", "3000"], ["-t", "-n", "1"]], ids=["history", "a tail of a quiet store"]
)
def test_pipe_to_head_exits_0_without_a_traceback(demo: SQLiteStore, args: list[str]) -> None:
    """`herolog logs | head -1`; and `herolog logs -t | head -1` with nothing new arriving,
    which ends (as GNU tail -f does) instead of waiting for a next line to fail to write."""
    demo.set_history(100_000)
    fill(demo, "big", [f"line {i} " + "x" * 200 for i in range(3000)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "herolog", "logs", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=herolog_env(),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert first
    assert proc.returncode == 0
    assert err == b""


@pytest.mark.subprocess
def test_a_quiet_tail_into_a_socket_ends_when_its_reader_goes(demo: SQLiteStore) -> None:
    """Node's child processes write to a socket, not a pipe: the tail ends when the reader
    closes it too, as GNU tail -f does, not at the next line (which may be hours away)."""
    first, code, err = first_line_into_a_socket(["logs", "-t", "-n", "1"], herolog_env())
    assert b"other 59" in first
    assert (code, err) == (0, b"")


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [[], ["--json"], ["--color", "always"]])
def test_an_output_left_non_blocking_gets_every_line(demo: SQLiteStore, args: list[str]) -> None:
    """A pipe or a terminal that another program sharing it set O_NONBLOCK on (an ssh in the
    background does so to its terminal): Python's buffered writes drop what the pipe cannot
    take at once, without an error, and herolog exited 0 with a part of the lines."""
    import fcntl
    import struct
    import termios

    demo.set_history(5000)
    fill(demo, "big", [f"line {i} " + "x" * 200 for i in range(3000)])
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    capacity = fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ)

    def full() -> bool:
        held = fcntl.ioctl(read_end, termios.FIONREAD, bytes(4))
        return bool(struct.unpack("i", held)[0] >= capacity)

    with closing(os.fdopen(read_end, "rb")) as reader:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herolog", "logs", "-a", "big", "-n", "3000", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=herolog_env(),
        )
        os.close(write_end)
        try:
            # The pipe fills up before anything is read from it.
            deadline = time.monotonic() + 10
            while not full() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            out = reader.read()
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert (proc.returncode, err) == (0, b"")
    lines = out.decode().splitlines()
    assert len(lines) == 3000
    assert "line 2999 " in lines[-1]


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [["--color", "never"], [], ["--json"]])
def test_a_terminal_made_non_blocking_during_a_tail_gets_every_line(
    store: SQLiteStore, args: list[str]
) -> None:
    """Another program started in the same terminal while a tail runs (an ssh, node) sets
    O_NONBLOCK on it, for every program sharing it: the check at herolog's start had passed,
    and once the terminal was full (slow, or held with Ctrl-S) Python's buffered writes
    failed, a BlockingIOError traceback that ended the tail after 78 of these lines, or
    dropped what did not fit without an error, the tail going on without those lines."""
    import fcntl
    import struct
    import termios

    store.set_history(5000)
    fill(store, "big", ["first"])
    leader, follower = pty.openpty()
    child = Child("logs", "-t", "-a", "big", "-n", "1", *args, stdout=follower)

    def waiting() -> int:
        held = fcntl.ioctl(leader, termios.FIONREAD, bytes(4))
        return int(struct.unpack("i", held)[0])

    data = b""
    try:
        while b"first" not in data and select.select([leader], [], [], 15)[0]:
            data += os.read(leader, 65536)
        assert b"first" in data, data  # the tail has begun
        flags = fcntl.fcntl(follower, fcntl.F_GETFL)
        fcntl.fcntl(follower, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        fill(store, "big", [f"line {i} " + "x" * 200 for i in range(3000)])
        # Nothing is read until the terminal has filled up and the tail has stopped writing.
        held, still, deadline = -1, 0, time.monotonic() + 30
        while still < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
            now = waiting()
            still = still + 1 if now == held and now > 0 else 0
            held = now
        while b"line 2999 " not in data and select.select([leader], [], [], 15)[0]:
            data += os.read(leader, 65536)
    finally:
        code, err = child.stop(signal.SIGINT)
        os.close(leader)
        os.close(follower)
    assert (code, err) == (-signal.SIGINT, "")
    shown = data.decode().split("\r\n")
    lines = [text for text in shown if "line " in text]
    assert len(lines) == 3000, (len(lines), lines[-1:])
    assert all(f"line {i} " in text for i, text in enumerate(lines))


@pytest.mark.subprocess
def test_ctrl_c_on_a_tail_stops_the_shell_script_running_it(demo: SQLiteStore) -> None:
    """`for app in a b; do herolog logs -t -a $app; done`: a Ctrl-C stops the loop, as it
    does around GNU tail -f. herolog dies of the SIGINT; exiting 130 would tell the shell it
    handled it, and the shell would go on to the next tail."""
    herolog = f"{sys.executable} -m herolog logs -t -n 1 -a $app"
    shell = shell_job(f"for app in demo other; do {herolog}; echo next $?; done")
    try:
        assert shell.stdout is not None
        assert shell.stdout.readline().startswith("2024-03-05T09:00:59")  # the tail is on
        os.killpg(shell.pid, signal.SIGINT)
        out, err = shell.communicate(timeout=30)
    finally:
        shell.kill()
    assert (shell.returncode, out, err) == (-signal.SIGINT, "", "")


@pytest.mark.subprocess
def test_ctrl_c_during_a_slow_grep_ends_it_by_the_signal(
    herolog_home: Path, store: SQLiteStore
) -> None:
    """SQLite calls into Python for each line a regular expression is searched in, and
    Python's sqlite3 drops what such a call raises: the KeyboardInterrupt of a Ctrl-C
    during the search would have become SQLite's 'user-defined function raised exception'."""
    store.set_history(5000)
    fill(store, "demo", ["a" * 1000] * 5000)  # a.*Z backtracks through each: seconds in all
    child = Child("logs", "-a", "demo", "--grep", "a.*Z")
    child.wait_for_open(str(herolog_home / "logs.db"))
    code, err = child.stop(signal.SIGINT)
    assert (code, err) == (-signal.SIGINT, "")


@pytest.mark.slow
@pytest.mark.subprocess
def test_ctrl_c_between_two_lines_of_a_grep_ends_it_by_the_signal(
    herolog_home: Path, store: SQLiteStore
) -> None:
    """A regular expression quick to search, over many lines: a Ctrl-C mostly comes while
    SQLite goes from one line to the next, and Python raises it as the next search begins,
    before the search's own handler; sqlite3 dropped it, and herolog said 'cannot use the
    store ...: user-defined function raised exception', exit status 1."""
    store.set_history(1_000_000)
    fill(store, "demo", [f"line {n}" for n in range(1_000_000)])
    child = Child("logs", "-a", "demo", "-n", "1000000", "--grep", "no.match", "-g", "no.such")
    # Into the search (a Ctrl-C before it is plain). Over 600,000 lines it took 0.4 s on a
    # quiet machine, and the 0.3 s that the open was given, with 0.1 s more, saw it end first.
    child.wait_for_open(str(herolog_home / "logs.db"), settle=0.1)
    code, err = child.stop(signal.SIGINT)
    assert (code, err) == (-signal.SIGINT, "")


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_tail_started_with_signals_blocked_still_stops_on_them(
    demo: SQLiteStore, sig: signal.Signals
) -> None:
    """A signal mask is inherited across exec: a tail started by a CI runner or a
    supervisor with SIGINT and SIGTERM blocked in its thread (not ignored: nohup ignores)
    kept them pending and ran on after Ctrl-C or a stop, until SIGKILL."""
    blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    proc = subprocess.Popen(
        [sys.executable, "-m", "herolog", "logs", "-t", "-n", "1", "-a", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=herolog_env(),
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, blocked),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"2024-03-05T09:00:59")  # the tail is on
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.communicate()
    assert (proc.returncode, err) == (-sig, b"")


@pytest.mark.subprocess
def test_tail_shows_history_then_new_lines_as_they_land(demo: SQLiteStore) -> None:
    child = Child("logs", "-a", "other", "-n", "2", "--tail")
    try:
        assert [x.split(": ")[1] for x in child.read_lines(2)] == ["other 58", "other 59"]
        fill(demo, "demo", ["not this app"])
        fill(demo, "other", ["new 1", "new 2"])
        assert [x.split(": ")[1] for x in child.read_lines(2)] == ["new 1", "new 2"]
        child.assert_quiet_for(0.3)
    finally:
        code, err = child.stop(signal.SIGINT)
    assert code == -signal.SIGINT  # 130 in a shell
    assert err == ""


@pytest.mark.subprocess
@pytest.mark.parametrize("app", [None, "demo"])
def test_a_tail_that_falls_behind_the_history_is_told_how_many_lines_it_lost(
    herolog_home: Path, store: SQLiteStore, app: str | None
) -> None:
    store.set_history(20)
    fill(store, "demo", ["before"])
    fill(store, "quiet", ["an old line of another app"])
    child = Child("logs", "-n", "0", "--tail", *(["-a", app] if app else []))
    try:
        child.wait_for_open(str(store.path))
        with child.paused():  # a reader that cannot keep up
            fill(store, "demo", [f"n{i}" for i in range(100)])  # 80 trimmed before it reads
        shown = child.read_lines(21)
        child.assert_quiet_for(0.3)
    finally:
        child.stop(signal.SIGINT)
    assert re.fullmatch(
        r"\S+ heroku\[logplex\]: Error L11 \(Tail buffer overflow\) -> This tail session"
        r" dropped 80 messages since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\.",
        shown[0],
    )
    assert [x.split(": ", 1)[1] for x in shown[1:]] == [f"n{i}" for i in range(80, 100)]


@pytest.mark.subprocess
@pytest.mark.parametrize("by_id", [False, True])
def test_a_tail_of_a_quiet_app_is_told_of_its_own_lines_trimmed_not_a_busy_app_s(
    herolog_home: Path, store: SQLiteStore, by_id: bool
) -> None:
    """The quiet app's trimmed lines have a busy app's, trimmed too, among them: L11 counts
    the quiet app's alone; so it does for a tail of the app named by its id."""
    from herolog.drains import app_id

    store.set_history(10)
    fill(store, "quiet", ["before"])
    child = Child("logs", "-a", app_id("quiet") if by_id else "quiet", "-n", "0", "--tail")
    try:
        child.wait_for_open(str(store.path))
        with child.paused():  # a reader that cannot keep up
            for n in range(6):  # 30 lines of the quiet app, 20 trimmed before it reads
                fill(store, "quiet", [f"q{i}" for i in range(5 * n, 5 * n + 5)])
                fill(store, "busy", [f"b{i}" for i in range(50)])
        shown = child.read_lines(11)
        child.assert_quiet_for(0.3)
    finally:
        child.stop(signal.SIGINT)
    assert "This tail session dropped 20 messages since" in shown[0]
    assert [x.split(": ", 1)[1] for x in shown[1:]] == [f"q{i}" for i in range(20, 30)]


@pytest.mark.subprocess
def test_a_tail_begun_on_an_older_store_counts_at_most_what_was_trimmed_past_it(
    herolog_home: Path,
) -> None:
    """The README: a tail of one app of several, begun on a store an older herolog wrote
    (no count of each app's trims), tells at most the lines trimmed past it, every app's,
    even once a writer has upgraded the store, until it is started again: the store's
    counts begin at the upgrade, and the tail has no mark of its place in them. Here the
    quiet app lost 40 of the lines stored after the tail began, and the busy app 40 (found
    by a stress run of tails against imports and `store history` on an upgraded store: such
    a tail told 70): the tail shows the quiet app's last 10 and tells of 40 to 80 lost."""
    from tests.test_store import as_older_herolog_left_it

    with open_store() as store:
        fill(store, "quiet", ["before"])
        fill(store, "busy", ["before"])
        path = store.path
    as_older_herolog_left_it(path, 8)
    child = Child("logs", "-a", "quiet", "-n", "0", "--tail")
    try:
        child.wait_for_open(str(path))
        with child.paused(), open_store() as store:  # the writer upgrades the store
            for n in range(5):  # 50 lines of the quiet app, 40 trimmed before it reads
                fill(store, "quiet", [f"q{i}" for i in range(10 * n, 10 * n + 10)])
                fill(store, "busy", [f"b{i}" for i in range(10)])
            store.set_history(10)
        shown = child.read_lines(11)
        child.assert_quiet_for(0.3)
    finally:
        child.stop(signal.SIGINT)
    assert [x.split(": ", 1)[1] for x in shown[1:]] == [f"q{i}" for i in range(40, 50)]
    told = re.search(r"This tail session dropped (\d+) messages since", shown[0])
    assert told, shown[0]
    assert 40 <= int(told.group(1)) <= 80, shown[0]


@pytest.mark.subprocess
@pytest.mark.parametrize("app", [None, "demo"])
def test_a_tail_is_told_of_the_lines_of_an_app_forgotten_before_it_showed_them(
    herolog_home: Path, store: SQLiteStore, app: str | None
) -> None:
    """herolog store forget while the tail is behind; lines for the app come again after."""
    fill(store, "demo", ["before"])
    child = Child("logs", "-n", "0", "--tail", *(["-a", app] if app else []))
    try:
        child.wait_for_open(str(store.path))
        with child.paused():
            fill(store, "demo", [f"n{i}" for i in range(10)])
            assert store.forget_app("demo") == 11
            fill(store, "demo", [f"a{i}" for i in range(3)])
        shown = child.read_lines(4)
        child.assert_quiet_for(0.3)
    finally:
        child.stop(signal.SIGINT)
    assert "This tail session dropped 10 messages since" in shown[0]
    assert [x.split(": ", 1)[1] for x in shown[1:]] == ["a0", "a1", "a2"]


@pytest.mark.subprocess
@pytest.mark.parametrize("app", [None, "demo"])
def test_a_tail_begun_after_a_forget_is_told_nothing_of_the_lines_forgotten(
    herolog_home: Path, store: SQLiteStore, app: str | None
) -> None:
    """The forgotten lines were the store's newest: a tail that began after the forget
    starts past their ids, and does not count them as lines it lost once new ones come."""
    fill(store, "other", ["o"])
    fill(store, "demo", [f"n{i}" for i in range(10)])
    assert store.forget_app("demo") == 10
    child = Child("logs", "-n", "0", "--tail", *(["-a", app] if app else []))
    try:
        child.wait_for_open(str(store.path))
        fill(store, "demo", [f"a{i}" for i in range(3)])
        shown = child.read_lines(3)
        child.assert_quiet_for(0.3)
    finally:
        child.stop(signal.SIGINT)
    assert [x.split(": ", 1)[1] for x in shown] == ["a0", "a1", "a2"]


def test_a_tail_of_an_app_forgotten_and_made_anew_counts_its_trimmed_lines_exactly(
    store: SQLiteStore,
) -> None:
    """The tail's mark, taken before the forget, still counts from where the new app's do,
    and another app's lines trimmed alongside are not counted."""
    store.set_history(10)
    fill(store, "quiet", [f"k{i}" for i in range(5)])
    _, last_id = store.last(LineFilter(), 0)
    mark = store.lines_through("quiet", last_id)
    wanted = LineFilter(app="quiet")
    looked = "2026-01-02T03:04:05Z"
    store.forget_app("quiet")
    for n in range(6):  # 30 lines of the quiet app made anew, 20 trimmed before it reads
        fill(store, "quiet", [f"q{i}" for i in range(5 * n, 5 * n + 5)])
        fill(store, "busy", [f"b{i}" for i in range(50)])
    lines, last_id, mark = read_after(store, last_id, wanted, 1000, looked, mark)
    assert "This tail session dropped 20 messages since" in lines[0].message
    assert [x.message for x in lines[1:]] == [f"q{i}" for i in range(20, 30)]
    fill(store, "quiet", [f"r{i}" for i in range(15)])
    lines, _, _ = read_after(store, last_id, wanted, 1000, looked, mark)
    assert "This tail session dropped 5 messages since" in lines[0].message


@pytest.mark.parametrize("unshown", [0, 4])
def test_a_tail_that_reads_while_its_app_is_forgotten_counts_none_of_its_lines_twice(
    store: SQLiteStore, unshown: int
) -> None:
    """The tail reads (another app's lines came) between the forget and the app's next line:
    it is told of the forgotten lines it had not shown, and its mark stays the app's, so the
    app made anew counts only its own trimmed lines. With a mark of 0 there, every line the
    app had had counted as lost again (the 5 shown, each forget and remake once more)."""
    store.set_history(10)
    fill(store, "quiet", [f"k{i}" for i in range(5)])  # shown
    _, last_id = store.last(LineFilter(), 0)
    mark = store.lines_through("quiet", last_id)
    wanted = LineFilter(app="quiet")
    looked = "2026-01-02T03:04:05Z"
    for cycle in range(3):
        fill(store, "quiet", [f"u{i}" for i in range(unshown)])
        store.forget_app("quiet")
        fill(store, "busy", ["b"])
        lines, last_id, mark = read_after(store, last_id, wanted, 1000, looked, mark)
        told = [f"This tail session dropped {unshown} messages"] if unshown else []
        assert [x.message.split("-> ")[1].split(" since")[0] for x in lines] == told
        assert mark == store.lines_through("quiet", last_id)
        for n in range(6):  # 30 lines of the quiet app made anew, 20 trimmed before it reads
            fill(store, "quiet", [f"q{i}" for i in range(5 * n, 5 * n + 5)])
            fill(store, "busy", [f"b{i}" for i in range(50)])
        lines, last_id, mark = read_after(store, last_id, wanted, 1000, looked, mark)
        assert "This tail session dropped 20 messages since" in lines[0].message, cycle
        assert [x.message for x in lines[1:]] == [f"q{i}" for i in range(20, 30)]


@pytest.mark.parametrize("app", [None, "demo"])
def test_a_single_line_lost_is_told_too(store: SQLiteStore, app: str | None) -> None:
    store.set_history(10)
    fill(store, "demo", [f"n{i}" for i in range(11)])
    lines, _, _ = read_after(store, 0, LineFilter(app=app), 1000, "2026-01-02T03:04:05Z")
    assert "This tail session dropped 1 messages since" in lines[0].message
    assert [x.message for x in lines[1:]] == [f"n{i}" for i in range(1, 11)]


def test_a_tail_of_one_app_that_kept_up_then_fell_behind_counts_only_what_it_lost(
    store: SQLiteStore,
) -> None:
    """The lines it read while it kept up (every id of the span its app's) are not counted
    among those trimmed once it falls behind, other apps' lines trimmed alongside."""
    store.set_history(10)
    fill(store, "quiet", ["before"])
    _, last_id = store.last(LineFilter(), 0)
    mark = store.lines_through("quiet", last_id)
    wanted = LineFilter(app="quiet")
    looked = "2026-01-02T03:04:05Z"
    fill(store, "quiet", [f"k{i}" for i in range(5)])
    lines, last_id, mark = read_after(store, last_id, wanted, 1000, looked, mark)
    assert [x.message for x in lines] == [f"k{i}" for i in range(5)]
    for n in range(6):  # 30 lines of the quiet app, 20 trimmed before it reads
        fill(store, "quiet", [f"q{i}" for i in range(5 * n, 5 * n + 5)])
        fill(store, "busy", [f"b{i}" for i in range(50)])
    lines, _, _ = read_after(store, last_id, wanted, 1000, looked, mark)
    assert "This tail session dropped 20 messages since" in lines[0].message
    assert [x.message for x in lines[1:]] == [f"q{i}" for i in range(20, 30)]


@pytest.mark.parametrize("app", [None, "demo"])
def test_a_tail_counts_as_lost_only_lines_trimmed_before_it_read(
    store: SQLiteStore, app: str | None
) -> None:
    """serve or herolog run committing (and trimming) between a tail's read of its lines and
    its count of the span's missing ids: the lines it has just read are not lost too."""
    store.set_history(10)
    fill(store, "demo", [f"old {i}" for i in range(10)])
    _, start = store.last(LineFilter(), 0)
    fill(store, "demo", [f"new {i}" for i in range(30)])  # 20 trimmed before the tail reads
    writer = open_store()

    class Busy(SQLiteStore):
        def after(
            self, line_id: int, wanted: LineFilter, limit: int = 1000, upto: int | None = None
        ) -> tuple[list[StoredLine], int]:
            found = super().after(line_id, wanted, limit, upto)
            fill(writer, "demo", [f"later {i}" for i in range(10)])  # trims new 20-29
            return found

    tail = Busy.open(store.path, create=False)
    try:
        lines, _, _ = read_after(tail, start, LineFilter(app=app), 1000, "2026-01-02T03:04:05Z")
    finally:
        tail.close()
        writer.close()
    assert "dropped 20 messages" in lines[0].message
    assert [x.message for x in lines[1:]] == [f"new {i}" for i in range(20, 30)]


class Parts:
    """A renderer that keeps the messages of each write, and runs ``then`` after the first."""

    def __init__(self, then: Callable[[], None] = lambda: None) -> None:
        self.parts: list[list[str]] = []
        self.then = then

    def write(self, lines: Sequence[StoredLine]) -> None:
        self.parts.append([x.message for x in lines])
        if len(self.parts) == 1:
            self.then()


def test_a_long_history_is_written_a_part_at_a_time_up_to_where_the_store_was(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-n 2000000 held every line before writing the first (2 GB); lines stored while it
    writes are not its to show (-n 10 | wc -l is 10)."""
    monkeypatch.setattr(logs, "_FOLLOW_BATCH", 4)
    monkeypatch.setattr(logs, "HELD_LINES", 9)
    for i in range(30):
        fill(store, "demo", [f"d{i}"])
        fill(store, "other", [f"o{i}"])
    writer = open_store()
    parts = Parts(then=lambda: fill(writer, "demo", ["stored while it writes"]))
    try:
        show_logs(store.path, LogsRequest(LineFilter(app="demo"), num=10), parts)
    finally:
        writer.close()
    assert parts.parts == [
        ["d20", "d21", "d22", "d23"],
        ["d24", "d25", "d26", "d27"],
        ["d28", "d29"],
    ]
    # A history that may be held is read in one query (a --grep is checked once) and held.
    held = Parts()
    show_logs(store.path, LogsRequest(LineFilter(app="demo"), num=9), held)
    assert held.parts == [[f"d{i}" for i in range(22, 30)] + ["stored while it writes"]]


@pytest.mark.parametrize("app", [None, "demo"])
def test_history_trimmed_while_it_is_written_is_told_with_l11(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, app: str | None
) -> None:
    monkeypatch.setattr(logs, "_FOLLOW_BATCH", 4)
    monkeypatch.setattr(logs, "HELD_LINES", 11)
    store.set_history(12)
    fill(store, "demo", [f"d{i}" for i in range(12)])
    writer = open_store()
    parts = Parts(then=lambda: fill(writer, "demo", [f"more {i}" for i in range(6)]))
    try:  # the six trim d0-d5, of which d4 and d5 are not written yet
        show_logs(store.path, LogsRequest(LineFilter(app=app), num=12), parts)
    finally:
        writer.close()
    assert parts.parts[0] == ["d0", "d1", "d2", "d3"]
    assert "This tail session dropped 2 messages since" in parts.parts[1][0]
    assert parts.parts[1][1:] + parts.parts[2] == [f"d{i}" for i in range(6, 12)]
    assert len(parts.parts) == 3


def test_a_long_history_of_every_app_is_not_told_of_lines_trimmed_before_it_began(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy app's lines trimmed long ago lie among a quiet app's that the history shows:
    each part was told of those it spanned with L11, as though the history had lost them."""
    monkeypatch.setattr(logs, "_FOLLOW_BATCH", 4)
    monkeypatch.setattr(logs, "HELD_LINES", 5)
    store.set_history(8)
    for i in range(8):
        fill(store, "quiet", [f"q{i}"])
        fill(store, "busy", [f"b{i}"] * 3)  # 16 of the 24 trimmed, among q0-q5
    parts = Parts()
    show_logs(store.path, LogsRequest(LineFilter(grep=(re.compile("q"),)), num=8), parts)
    assert parts.parts == [["q0", "q1", "q2", "q3"], ["q4", "q5", "q6", "q7"]]


def test_a_long_history_ends_when_its_newest_lines_are_forgotten_while_it_is_written(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It reads up to the newest id the store had when it began: store forget of the app
    that held the newest lines took that id away, and herolog logs read on for ever."""
    monkeypatch.setattr(logs, "_FOLLOW_BATCH", 4)
    monkeypatch.setattr(logs, "HELD_LINES", 5)
    fill(store, "demo", [f"d{i}" for i in range(10)])
    fill(store, "other", [f"o{i}" for i in range(5)])
    reads = 0

    def counted(*args: Any, **kwargs: Any) -> tuple[list[StoredLine], int, int | None]:
        nonlocal reads
        reads += 1
        assert reads <= 10, "the history is read on and on"
        return read_after(*args, **kwargs)

    monkeypatch.setattr(logs, "read_after", counted)
    writer = open_store()

    def forget() -> None:
        assert writer.forget_app("other") == 5

    parts = Parts(then=forget)
    try:
        show_logs(store.path, LogsRequest(LineFilter(), num=15), parts)
    finally:
        writer.close()
    assert parts.parts[:2] == [["d0", "d1", "d2", "d3"], ["d4", "d5", "d6", "d7"]]
    # The forgotten lines, which it was to show, are told as trimmed ones are.
    assert "This tail session dropped 5 messages since" in parts.parts[2][0]
    assert parts.parts[2][1:] == ["d8", "d9"]
    assert len(parts.parts) == 3


@pytest.mark.parametrize("app", [None, "demo"])
def test_the_l11_line_is_a_json_record_as_the_readme_describes_it(
    store: SQLiteStore, app: str | None
) -> None:
    """It is no stored line: id 0 (a script resuming after the last id it saw must skip
    it), and the app of the tail, none for a tail of every app."""
    from herolog.render import format_json

    store.set_history(10)
    fill(store, "demo", [f"n{i}" for i in range(30)])
    lines, _, _ = read_after(store, 0, LineFilter(app=app), 1000, "2026-01-02T03:04:05Z")
    record = json.loads(format_json(lines[0]))
    assert record["message"].startswith("Error L11 (Tail buffer overflow)")
    assert (record["id"], record["app"]) == (0, app or "")
    assert (record["source"], record["dyno"], record["attributes"]) == ("heroku", "logplex", {})
    assert record["pri"] == 172  # local5.warning, Logplex's own lines' (L10 too)
    assert json.loads(format_json(lines[1]))["id"] == 21


def test_tail_with_num_zero_shows_only_new_lines_and_picks_up_new_dynos(demo: SQLiteStore) -> None:
    child = Child("logs", "-n", "0", "-t", "-p", "clock")
    try:
        child.wait_for_open(str(demo.path))
        child.assert_quiet_for(0.3)
        fill(demo, "brand-new-app", ["tick"], dyno="clock.1", source="app")
        assert child.read_lines(1) == ["2024-03-05T09:00:00.000000+00:00 app[clock.1]: tick"]
    finally:
        child.stop(signal.SIGINT)


@pytest.mark.subprocess
def test_tail_filters_and_json(demo: SQLiteStore) -> None:
    child = Child("logs", "-n", "0", "-t", "--json", "-g", "keep")
    try:
        child.wait_for_open(str(demo.path))
        fill(demo, "demo", ["drop me", "keep me"])
        (got,) = child.read_lines(1)
        assert json.loads(got)["message"] == "keep me"
    finally:
        child.stop(signal.SIGINT)


@pytest.mark.subprocess
def test_tail_waits_for_a_store_that_does_not_exist_yet(herolog_home: Path) -> None:
    """And for an app it has not had yet: a tail is not told the app is unknown."""
    child = Child("logs", "--tail", "-a", "demo")
    try:
        time.sleep(0.5)
        with open_store() as store:
            fill(store, "demo", ["first ever"])
        assert [x.split(": ")[1] for x in child.read_lines(1)] == ["first ever"]
    finally:
        code, err = child.stop(signal.SIGINT)
    assert code == -signal.SIGINT  # 130 in a shell
    assert "Waiting for logs" not in err  # stdout is a pipe, not a terminal


@pytest.mark.subprocess
def test_tail_keeps_going_when_the_store_is_replaced(demo: SQLiteStore, herolog_home: Path) -> None:
    path = herolog_home / "logs.db"
    # A store from elsewhere, its lines received before the tail started. (Lines received
    # while the tail runs are new to it unless it looked at its own store after them: the
    # test would depend on when the tail last polled.)
    with closing(SQLiteStore.open(herolog_home / "elsewhere.db")) as elsewhere:
        fill(elsewhere, "demo", ["old content"])
    child = Child("logs", "-n", "1", "--tail")
    try:
        assert len(child.read_lines(1)) == 1
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        child.wait_for_close(str(path))  # it has seen the store go
        with closing(open_store()) as new:
            fill(new, "demo", ["after replacement"])
        assert [x.split(": ")[1] for x in child.read_lines(1)] == ["after replacement"]
        # and a store moved into place from elsewhere shows only what arrives from now on.
        # The store file goes last: SQLite pairs the file at the path with whatever -wal and
        # -shm are beside it when it opens it, and the tail reopens as soon as the file
        # changes. Moved first, the tail could read the new file through the old store's
        # -wal and -shm (and never see a line written to the new store's).
        for suffix in ("-wal", "-shm", ""):
            if Path(f"{elsewhere.path}{suffix}").exists():
                Path(f"{elsewhere.path}{suffix}").replace(f"{path}{suffix}")
            else:
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        child.wait_for_open(str(path))  # the moved store (the old one's file is "(deleted)")
        with closing(open_store()) as new:
            fill(new, "demo", ["newest"])
        assert [x.split(": ")[1] for x in child.read_lines(1)] == ["newest"]
    finally:
        child.stop(signal.SIGINT)


@pytest.mark.subprocess
def test_a_tail_says_when_its_store_goes_and_when_it_follows_a_new_one(
    demo: SQLiteStore, herolog_home: Path
) -> None:
    """A store deleted or moved aside (serve stops then, by itself) left the tail silent, as
    if the apps had gone quiet, for as long as no new store came: GNU tail -F says so."""
    path = herolog_home / "logs.db"
    demo.close()
    child = Child("logs", "-n", "0", "--tail")
    try:
        child.wait_for_open(str(path))
        path.rename(herolog_home / "old.db")
        child.wait_for_close(str(herolog_home / "old.db"))
        child.assert_quiet_for(0.3)  # polls for a store while there is none: said once
        with closing(open_store()) as new:
            fill(new, "demo", ["in the new store"])
        assert [x.split(": ")[1] for x in child.read_lines(1)] == ["in the new store"]
    finally:
        code, err = child.stop(signal.SIGINT)
    assert code == -signal.SIGINT
    assert err.splitlines() == [
        f"herolog: the store {path} was moved or deleted; waiting for a new one...",
        f"herolog: following the new store {path}",
    ]


@pytest.mark.subprocess
def test_a_store_moved_aside_under_a_tail_keeps_its_newest_lines(
    demo: SQLiteStore, herolog_home: Path
) -> None:
    """`mv logs.db old.db` with a tail open: a command that wrote and ended while the tail
    had the store open left its lines in the -wal (the last connection writes them into the
    file as it closes, and that was the tail's). SQLite does not do so for a file that has
    moved: the tail closing it left them in a -wal beside the path, and the file moved aside
    without them (the store's tables too, for one that had never been closed)."""
    path = herolog_home / "logs.db"
    demo.close()
    child = Child("logs", "-n", "0", "--tail")
    try:
        child.wait_for_open(str(path))
        done = herolog_process("run", "-a", "demo", "--", "echo", "the newest line")
        assert done.returncode == 0, done.stderr
        assert child.read_lines(5)[2].endswith(": the newest line")
        assert Path(f"{path}-wal").stat().st_size > 0  # not in the store's file yet
        path.rename(herolog_home / "old.db")
        child.wait_for_close(str(herolog_home / "old.db"))  # it has seen the store go
    finally:
        child.stop(signal.SIGINT)
    with closing(SQLiteStore.open(herolog_home / "old.db", create=False)) as moved:
        lines, _ = moved.last(LineFilter(app="demo"), 3)
    assert [x.message for x in lines] == [
        "the newest line",
        "Process exited with status 0",
        "State changed from up to complete",
    ]


@pytest.mark.subprocess
def test_a_store_put_in_place_of_another_under_a_tail_is_read_whole(
    demo: SQLiteStore, herolog_home: Path
) -> None:
    """`mv backup.db logs.db` (a backup put back, the file alone) with a tail open: the old
    store's -wal stayed beside the path, still holding the pages that commands wrote while
    the tail had the store open, and whoever opened the new file next read it through them:
    'row 1 missing from index', the new store corrupt."""
    path = herolog_home / "logs.db"
    demo.close()
    with closing(SQLiteStore.open(herolog_home / "backup" / "logs.db")) as backup:
        fill(backup, "restored", ["from the backup"])
    child = Child("logs", "-n", "0", "--tail")
    try:
        child.wait_for_open(str(path))
        script = "for i in $(seq 300); do echo line $i; done"
        for app in ("demo", "other"):
            done = herolog_process("run", "-a", app, "--", "sh", "-c", script)
            assert done.returncode == 0, done.stderr
        assert Path(f"{path}-wal").stat().st_size > 100_000
        (herolog_home / "backup" / "logs.db").replace(path)

        def holds_the_old_one() -> bool:
            for fd in Path(f"/proc/{child.proc.pid}/fd").iterdir():
                with contextlib.suppress(OSError):  # closed meanwhile
                    if str(fd.readlink()) == f"{path} (deleted)":
                        return True
            return False

        deadline = time.monotonic() + 15
        while holds_the_old_one():
            assert time.monotonic() < deadline, "the tail kept the old store open"
            time.sleep(0.02)
        child.wait_for_open(str(path))  # the new one
    finally:
        child.stop(signal.SIGINT)
    with closing(SQLiteStore.open(path, create=False)) as restored:
        assert restored._db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert [app.name for app in restored.apps()] == ["restored"]
        lines, _ = restored.last(LineFilter(), 10)
    assert [x.message for x in lines] == ["from the backup"]


@pytest.mark.subprocess
def test_tail_until_ends_when_the_time_passes(store: SQLiteStore) -> None:
    from datetime import timedelta

    from herolog import timestamps

    until = timestamps.to_instant(timestamps.now() + timedelta(seconds=1.5))
    child = Child("logs", "--tail", "--until", until)
    code, err = child.stop(timeout=15)
    assert (code, err) == (0, "")


@pytest.mark.subprocess
def test_on_a_terminal_waiting_message_and_colour(herolog_home: Path) -> None:
    leader, follower = pty.openpty()
    child = Child("logs", "--tail", stdout=follower)
    os.close(follower)
    try:
        # Its first words, on stderr: once they are there, it waits for the store. (Looked
        # for without reading them: they are read with the rest when it stops.)
        assert child.proc.stderr is not None
        assert select.select([child.proc.stderr], [], [], 15)[0], "no waiting message"
        with open_store() as store:
            fill(store, "demo", ["coloured"], source="heroku", dyno="router")
        data = b""
        deadline = time.monotonic() + 10
        while b"coloured" not in data and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    data += os.read(leader, 4096)
                except OSError:  # EIO: the child closed the terminal (it exited)
                    break
    finally:
        code, err = child.stop(signal.SIGINT)
        os.close(leader)
    assert b"coloured" in data, (code, err, data)
    assert "Waiting for logs..." in err
    assert b"\x1b[" in data
    assert code == -signal.SIGINT  # 130 in a shell


def on_a_terminal(*args: str) -> tuple[int, bytes]:
    """``herolog ARGS`` with a terminal as its stdout: its exit status and what it wrote."""
    leader, follower = pty.openpty()
    child = Child(*args, stdout=follower)
    os.close(follower)
    data = b""
    try:
        while select.select([leader], [], [], 15)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not chunk:
                break
            data += chunk
    finally:
        code, _ = child.stop()
        os.close(leader)
    return code, data


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [(), ("--color", "never")], ids=["colour", "plain"])
def test_a_message_cannot_send_a_terminal_control_sequences(
    store: SQLiteStore, args: tuple[str, ...]
) -> None:
    """Anyone who can send a line (a drain, a syslog sender, a dyno) could otherwise set
    the terminal's title, clear it, or overwrite the line's header with a \r; the
    message's colours are kept (apps colour their logs, and heroku logs shows them), and
    reset at the line's end."""
    evil = "title \x1b]0;pwned\x07 clear \x1b[2J hidden\rapp[api]: \x1b[31mred\x9b6n"
    fill(store, "demo", [evil, "windows line\r", "tab\tkept del\x7f"], dyno="web.1")
    code, data = on_a_terminal("logs", *args)
    assert code == 0
    text = data.decode()
    for raw in ("\x1b]", "\x07", "\x1b[2J", "hidden\r", "\x9b"):
        assert raw not in text, raw
    shown = r"title \x1b]0;pwned\x07 clear \x1b[2J hidden\x0dapp[api]: "
    assert shown in text
    assert "\x1b[31mred\\x9b6n\x1b[0m\r\n" in text  # the terminal's \r\n for \n
    assert "windows line\r\r\n" in text  # a line's closing \r does no harm
    assert "tab\tkept del\\x7f\r\n" in text  # DEL is a control character too
    # Into a pipe the line stays exactly as it was sent.
    code, out, _ = run("logs")
    assert (code, out.count(f"app[web.1]: {evil}\n")) == (0, 1)


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [(), ("--color", "never"), ("--json",)])
def test_a_message_cannot_reorder_what_the_terminal_shows(
    store: SQLiteStore, args: tuple[str, ...]
) -> None:
    """Unicode's bidirectional overrides and isolates went to the terminal raw, and one that
    does bidi (GNOME Terminal, Konsole) showed what followed one in another order than it was
    sent; the marks right-to-left text uses (U+200E, U+200F) are text, and stay."""
    overrides = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    message = f"user=admin{overrides} \u05e9\u05dc\u05d5\u05dd\u200f ok\u200e"
    fill(store, "demo", [message], dyno="web.1")
    code, data = on_a_terminal("logs", *args)
    assert code == 0
    text = data.decode()
    for raw in overrides:
        assert raw not in text, hex(ord(raw))
    escaped = "\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069"
    assert f"user=admin{escaped} \u05e9\u05dc\u05d5\u05dd\u200f ok\u200e" in text
    if args == ("--json",):
        assert json.loads(text)["message"] == message
    # Into a pipe text is as it was sent; JSON escapes them there too, as it does C1 controls.
    code, out, _ = run("logs", *args)
    assert code == 0
    assert (message in out) is (args != ("--json",))


@pytest.mark.subprocess
def test_a_carriage_return_inside_a_coloured_line_cannot_overwrite_its_header(
    store: SQLiteStore,
) -> None:
    """Colour cuts a router line into runs at its spaces, and an access line before its
    HTTP version: a \r that ended a run was kept as if it ended the line, and what came
    after it overwrote the header."""
    fill(store, "demo", ["at=info path=/ \rheroku[api]: fake"], source="heroku", dyno="router")
    fill(store, "demo", ['1.2.3.4 "GET /a\rHTTP/1.1" 200'], dyno="web.1")
    fill(store, "demo", ["at=info windows\r"], source="heroku", dyno="router")
    code, data = on_a_terminal("logs")
    assert code == 0
    text = data.decode()
    assert text.count("\\x0d") == 2, text
    closing = "windows\x1b[0m\r\r\n"  # a line's closing \r does no harm
    assert closing in text
    assert "\r" not in text.replace(closing, "").replace("\r\n", "")  # the terminal's \n


@pytest.mark.subprocess
@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_an_output_encoding_that_cannot_carry_a_line_escapes_it(
    store: SQLiteStore, encoding: str
) -> None:
    """A locale that is not UTF-8 (LANG=en_US.ISO-8859-1, PYTHONIOENCODING=ascii): text
    gets escapes for what it cannot carry, JSON its own escapes (still valid JSON), and
    neither a traceback."""
    message = "caf\u00e9 \u65e5\u672c \U0001f44d"
    fill(store, "demo", [message])
    for args in ([], ["--color", "always"], ["--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "herolog", "logs", *args],
            capture_output=True,
            env=herolog_env(PYTHONIOENCODING=encoding),
        )
        assert (proc.returncode, proc.stderr) == (0, b""), args
        out = proc.stdout.decode(encoding)
        if args == ["--json"]:
            assert json.loads(out)["message"] == message
        else:
            assert "\\u65e5\\u672c \\U0001f44d" in out, args
            assert ("caf\u00e9" if encoding == "latin-1" else "caf\\xe9") in out, args


def read_only_home(home: Path, command: str) -> list[str]:
    """The command line running a shell ``command`` where ``home`` is a read-only file
    system: a bind mount in a mount namespace of its own (unshare), which nothing outside
    it sees."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail(
            "needs unshare, from util-linux (apt-get install util-linux), to mount a read-only file system"
        )
    quoted = shlex.quote(str(home))
    mount = f"mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted}"
    namespace = [unshare, "--user", "--map-root-user", "--mount", "sh", "-c"]
    probe = subprocess.run([*namespace, mount], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(
            "needs unprivileged user and mount namespaces (unshare --user --map-root-user"
            f" --mount) for a read-only file system: {probe.stderr.decode().strip()}"
        )
    return [*namespace, f"{mount} && cd {quoted} && {command}"]


def in_read_only_home(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        read_only_home(home, command),
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=60,
    )


@pytest.mark.subprocess
@pytest.mark.parametrize("writer", [False, True], ids=["closed", "a writer outside has it open"])
def test_a_store_on_a_read_only_file_system_can_be_read(
    demo: SQLiteStore, herolog_home: Path, writer: bool
) -> None:
    """A backup, a snapshot, a read-only bind mount (of a store that a server outside may
    be writing): SQLite cannot create the -shm file a WAL store's readers share there,
    which made every read an error."""
    if writer:
        fill(demo, "other", ["newest"])  # in the -wal, not yet in the store's file
        assert (herolog_home / "logs.db-wal").stat().st_size > 0
    else:
        demo.close()
    herolog = f"{sys.executable} -m herolog"
    proc = in_read_only_home(
        herolog_home,
        f"{herolog} logs -a demo -n 3 && {herolog} logs --json -n 1"
        f" && (touch written 2>/dev/null || echo read-only >&2)",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "read-only\n"
    lines = proc.stdout.splitlines()
    assert [x.split(": ", 1)[1] for x in lines[:3]] == [
        "status=258 router 58",
        "app 59",
        "status=259 router 59",
    ]
    assert json.loads(lines[3])["message"] == ("newest" if writer else "other 59")
    assert (herolog_home / "logs.db-shm").exists() is writer


@pytest.mark.subprocess
def test_a_tail_on_a_read_only_file_system_follows_a_writer_that_comes_later(
    demo: SQLiteStore, herolog_home: Path
) -> None:
    """With no writer at its start, the store is read as a file that does not change; a
    server outside the mount that opens it later is followed from then on."""
    demo.close()
    assert not (herolog_home / "logs.db-wal").exists()
    tail = subprocess.Popen(
        read_only_home(herolog_home, f"exec {sys.executable} -m herolog logs -t -a other -n 1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(),
    )
    writer = None
    try:
        assert tail.stdout is not None
        assert tail.stdout.readline().endswith(": other 59\n")  # it has the store open
        writer = SQLiteStore.open(herolog_home / "logs.db")  # kept open, as serve keeps it
        fill(writer, "other", ["from the writer"])
        ready, _, _ = select.select([tail.stdout], [], [], 15)
        followed = tail.stdout.readline() if ready else "(nothing within 15 s)"
    finally:
        tail.kill()
        _, err = tail.communicate()
        if writer is not None:
            writer.close()
    assert followed.endswith(": from the writer\n"), (followed, err)
    assert "Traceback" not in err


@pytest.mark.subprocess
def test_plain_logs_does_not_import_rich_httpx_or_server_code(demo: SQLiteStore) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "herolog", "logs", "-n", "1500"],
        capture_output=True,
        text=True,
        env=herolog_env(),
        check=True,
    )
    imported = {row.split("|")[-1].strip() for row in proc.stderr.splitlines() if "|" in row}
    assert {"click", "herolog.store"} <= imported  # the measurement works
    for heavy in ("rich", "httpx", "uvicorn", "starlette", "platformdirs", "herolog.server"):
        found = [name for name in imported if name == heavy or name.startswith(heavy + ".")]
        assert not found, f"{heavy} imported by plain `herolog logs`"
    others = ("drain", "serve", "run", "importer", "store", "completion")
    for module in [f"herolog.cli.{name}" for name in others] + ["herolog.completion"]:
        assert module not in imported, f"{module} imported by plain `herolog logs`"
    assert len(proc.stdout.splitlines()) == 180


class _Done(Exception):
    pass


def test_a_store_moved_into_place_shows_only_what_it_received_after_the_tail_last_looked(
    store: SQLiteStore, herolog_home: Path
) -> None:
    """Not what it received since the tail started: the old store was there, and read,
    until it was replaced."""
    elsewhere = herolog_home / "elsewhere.db"
    _, start = store.last(LineFilter(), 0)
    out = io.StringIO()
    polls = 0

    def next_poll(seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 1:  # after the tail started, while it still reads its own store
            with closing(open_store(elsewhere)) as other:
                fill(other, "demo", ["received elsewhere"])
            time.sleep(0.01)  # the tail's next look is at a later instant
        elif polls == 3:
            elsewhere.replace(store.path)
        elif polls == 5:
            with closing(open_store()) as new:
                fill(new, "demo", ["received after the move"])
        elif polls > 6:
            raise _Done

    with pytest.raises(_Done):
        follow(
            store.path,
            store,
            start,
            LineFilter(),
            TextRenderer(out),
            timestamps.to_instant(timestamps.now()),
            sleep=next_poll,
        )
    assert [x.split(": ", 1)[1] for x in out.getvalue().splitlines()] == ["received after the move"]


def test_a_tail_that_ends_at_until_shows_the_lines_stored_since_it_last_looked(
    store: SQLiteStore,
) -> None:
    until = timestamps.to_instant(timestamps.now() + timedelta(seconds=1))
    _, start = store.last(LineFilter(), 0)
    out = io.StringIO()
    polls = 0

    def next_poll(seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 2:  # the tail has read once: lines come, and --until passes
            fill(store, "demo", ["just before the end"])
            while timestamps.to_instant(timestamps.now()) < until:
                time.sleep(0.05)

    follow(
        store.path,
        store,
        start,
        LineFilter(until=until),
        TextRenderer(out),
        timestamps.to_instant(timestamps.now()),
        sleep=next_poll,
    )
    assert [x.split(": ", 1)[1] for x in out.getvalue().splitlines()] == ["just before the end"]


@pytest.mark.parametrize(
    "wanted",
    [
        LineFilter(dynos=(("web",),)),
        LineFilter(sources=("app",), dynos=(("web",),)),
        LineFilter(grep=(re.compile("deploy"),)),
    ],
    ids=["dyno", "source-and-dyno", "grep"],
)
def test_a_filtered_tail_that_keeps_up_is_not_told_of_lost_lines(
    store: SQLiteStore, wanted: LineFilter
) -> None:
    """Lines the filter skips, trimmed by the ring buffer once the tail has looked past
    them, were not lost to it: no L11 (each poll here sees fewer new lines than the history)."""
    store.set_history(10)
    fill(store, "demo", ["before"], dyno="worker.1")
    _, start = store.last(wanted, 0)
    chunks = [[f"busy {c}.{i}" for i in range(5)] for c in range(8)]  # 40 lines: 30 trimmed
    out = io.StringIO()

    def next_poll(seconds: float) -> None:
        if chunks:
            fill(store, "demo", chunks.pop(0), dyno="worker.1")
        elif not out.getvalue():
            fill(store, "demo", ["deploy done"], dyno="web.1")
        else:
            raise _Done

    with pytest.raises(_Done):
        follow(
            store.path,
            None,
            start,
            wanted,
            TextRenderer(out),
            timestamps.to_instant(timestamps.now()),
            sleep=next_poll,
        )
    assert [x.split(": ", 1)[1] for x in out.getvalue().splitlines()] == ["deploy done"]


def test_each_l11_of_a_slow_reader_counts_from_the_lines_it_read_last(store: SQLiteStore) -> None:
    """A terminal slower than the lines arrive: the tail reads a batch, is held up writing
    it while more are trimmed, reads on and tells of those with another L11. Each said the
    drops were 'since' the time the tail had looked before the first batch, minutes ago
    after a long burst: the same drops told twice, to the eye."""
    store.set_history(10)
    _, start = store.last(LineFilter(), 0)
    fill(store, "demo", [f"a{i}" for i in range(30)])  # 20 trimmed before the tail reads
    bursts = [[f"b{i}" for i in range(30)], [f"c{i}" for i in range(30)]]
    shown: list[StoredLine] = []

    class SlowTerminal:
        def write(self, lines: Sequence[StoredLine]) -> None:
            shown.extend(lines)
            if lines and bursts:  # while the terminal takes them, 20 more go
                if len(bursts) == 2:
                    # The L11s name whole seconds: the next read is in a later one than
                    # this batch's, which the last L11 counts from.
                    time.sleep(1.01 - time.time() % 1)
                fill(store, "demo", bursts.pop(0))

    def next_poll(seconds: float) -> None:
        raise _Done

    looked = "2026-01-02T03:04:05.000000Z"
    with pytest.raises(_Done):
        follow(store.path, store, start, LineFilter(), SlowTerminal(), looked, sleep=next_poll)
    overflows = [x.message for x in shown if x.id == 0]
    assert [m.split(" dropped ")[1].split(" since ")[0] for m in overflows] == ["20 messages"] * 3
    since = [m.split(" since ")[1] for m in overflows]
    assert since[0] == "2026-01-02T03:04:05+00:00."
    assert since[0] < since[1] < since[2]
    assert [x.message for x in shown if x.id][-10:] == [f"c{i}" for i in range(20, 30)]


def tampered(path: Path, *updates: str) -> None:
    """Change the store's rows as another program would (the sqlite3 shell, a script's
    sqlite3 module): each of ``updates`` an SQL statement, none of them herolog's."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        for update in updates:
            db.execute(update)
        db.commit()
    finally:
        db.close()


def test_rows_another_program_wrote_are_shown_as_the_intake_would_have_stored_them(
    store: SQLiteStore,
) -> None:
    """Text that is not UTF-8 stopped every read of the store ('Could not decode to UTF-8
    column'), a BLOB showed as Python's b'...' (and --json and a --grep regex ended in a
    traceback), a pri that is no number made --json print `"pri":abc`. Shown as the intake
    would have stored them: bytes that are not UTF-8 as U+FFFD, a pri it could not read as
    none."""
    fill(store, "demo", ["first", "second", "third", "fourth", "fifth"])
    tampered(
        store.path,
        "UPDATE lines SET message = X'68656cff6c6f' WHERE id = 1",  # a BLOB, not UTF-8
        "UPDATE lines SET message = CAST(X'68656cfe6c6f' AS TEXT), dyno = CAST(X'ff' AS TEXT)"
        " WHERE id = 2",
        "UPDATE lines SET source = CAST('worker' AS BLOB), pri = 'abc' WHERE id = 3",
        "UPDATE lines SET pri = 1e400, hostname = X'ff' WHERE id = 4",
    )
    at = line("").timestamp
    assert output("-a", "demo") == [
        f"{at} app[web.1]: hel\ufffdlo",
        f"{at} app[\ufffd]: hel\ufffdlo",
        f"{at} worker[web.1]: third",
        f"{at} app[web.1]: fourth",
        f"{at} app[web.1]: fifth",
    ]
    records = [json.loads(x) for x in output("-a", "demo", "--json")]
    assert [(x["message"], x["source"], x["pri"], x["hostname"]) for x in records] == [
        ("hel\ufffdlo", "app", 190, "host"),
        ("hel\ufffdlo", "app", 190, "host"),
        ("third", "worker", None, "host"),
        ("fourth", "app", None, "\ufffd"),
        ("fifth", "app", 190, "host"),
    ]
    for grep in (["-g", "h.l"], ["-g", "hel"], ["-x", "t|f"]):  # regexes and plain text
        assert [x.split(": ")[1] for x in output(*grep)] == ["hel\ufffdlo", "hel\ufffdlo"]
    assert output("-n", "2", "-g", "t.i|l.l") == [
        f"{at} app[\ufffd]: hel\ufffdlo",
        f"{at} worker[web.1]: third",
    ]
