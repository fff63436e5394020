from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from herolog.cli import cli
from herolog.store import open_store
from tests.helpers import (
    QuietHandler,
    fill,
    herolog_env,
    herolog_process,
    interrupted_in_lock_wait,
    serving,
    store_drain,
)
from tests.server.conftest import ServerFactory, running_server


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_apps_lists_names_and_json(herolog_home: Path) -> None:
    assert invoke("apps") == (0, "", "")
    with open_store() as store:
        fill(store, "zeta", ["z"])
        fill(store, "alpha", ["a", "b"])
        assert invoke("apps")[1] == "alpha\nzeta\n"
        found = json.loads(invoke("apps", "--json")[1])
        assert [(a["name"], a["lines"]) for a in found] == [("alpha", 2), ("zeta", 1)]


def test_store_info(herolog_home: Path) -> None:
    code, out, _ = invoke("store", "info")
    assert code == 0
    assert f"Store:   {herolog_home / 'logs.db'} (not created yet)" in out
    assert "History: 1,500 lines per app" in out
    with open_store() as store:
        fill(store, "demo", ["x", "y"])
    code, out, _ = invoke("store", "info")
    assert "demo          2 lines" in out
    details = json.loads(invoke("store", "info", "--json")[1])
    assert details["exists"] is True
    assert details["bytes"] > 0
    assert details["apps"][0]["lines"] == 2


def test_store_info_says_1_line_of_an_app_with_one(herolog_home: Path) -> None:
    with open_store() as store:
        fill(store, "one", ["x"])
        fill(store, "two", ["x", "y"])
        code, out, _ = invoke("store", "info")
        assert code == 0
        assert out.endswith("Apps:\n  one          1 line\n  two          2 lines\n"), out


@pytest.mark.parametrize(("history", "said"), [(1, "1 line"), (2, "2 lines")])
def test_a_history_of_one_line_is_said_in_the_singular(
    herolog_home: Path, history: int, said: str
) -> None:
    code, _, err = invoke("store", "history", str(history))
    assert (code, err) == (0, f"The store keeps {said} per app.\n")
    code, out, _ = invoke("store", "info")
    assert f"History: {said} per app\n" in out


def test_store_info_counts_the_store_s_own_files_only(herolog_home: Path) -> None:
    """A store moved aside (as the error for a broken one says: logs.db.broken) or a copy
    beside it is not part of the store's size."""
    with open_store() as store:  # open, as serve keeps it: its -wal and -shm stay to be counted
        fill(store, "demo", ["x", "y"])
        own = ("logs.db", "logs.db-wal", "logs.db-shm")
        (herolog_home / "logs.db.broken").write_bytes(b"\0" * 1_000_000)
        (herolog_home / "logs.db.bak").write_bytes(b"\0" * 1_000_000)
        details = json.loads(invoke("store", "info", "--json")[1])
        assert details["bytes"] == sum(
            (herolog_home / name).stat().st_size for name in own if (herolog_home / name).exists()
        )


def test_store_info_of_a_store_nothing_has_open_is_its_file_alone(herolog_home: Path) -> None:
    """Its own connection's -wal and -shm (32 KiB), which its close deletes, are not counted."""
    with open_store() as store:
        fill(store, "demo", ["x", "y"])
    details = json.loads(invoke("store", "info", "--json")[1])
    assert sorted(p.name for p in herolog_home.glob("logs.db*")) == ["logs.db"]
    assert details["bytes"] == (herolog_home / "logs.db").stat().st_size


def test_store_history_show_and_set(herolog_home: Path) -> None:
    assert invoke("store", "history")[1] == "1500\n"
    assert not (herolog_home / "logs.db").exists()
    with open_store() as store:
        fill(store, "demo", [str(i) for i in range(20)])
    code, _, err = invoke("store", "history", "5")
    assert code == 0
    assert "keeps 5 lines per app" in err
    assert invoke("store", "history")[1] == "5\n"
    with open_store() as store:
        assert store.apps()[0].lines == 5
    for bad in ("0", "-3", "lots", "10000001"):
        code, _, err = invoke("store", "history", bad)
        assert code == 2, bad
        assert "Error: " in err
        assert "Traceback" not in err


def test_lowering_the_history_by_one_line_drops_the_oldest(herolog_home: Path) -> None:
    with open_store() as store:
        fill(store, "demo", ["1", "2", "3"])
    code, _, err = invoke("store", "history", "2")
    assert (code, err) == (0, "The store keeps 2 lines per app.\n")
    code, out, _ = invoke("store", "info")
    assert out.endswith("Apps:\n  demo          2 lines\n"), out
    shown = invoke("logs", "-a", "demo")[1]
    assert [x.rsplit(" ", 1)[-1] for x in shown.splitlines()] == ["2", "3"], shown


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "then"),
    [
        (["store", "history", "5000"], "leaves the history as it was"),
        (["store", "forget", "demo", "--confirm", "demo"], "leaves demo as it was"),
        (["drain", "add", "-a", "demo", "syslog://127.0.0.1:9"], "adds nothing"),
        (["drain", "remove", "-a", "demo", "syslog://127.0.0.1:7"], "removes nothing"),
    ],
    ids=["history", "forget", "drain-add", "drain-remove"],
)
def test_a_command_waiting_for_another_process_s_write_lock_says_so_and_a_ctrl_c_ends_it(
    herolog_home: Path, args: list[str], then: str
) -> None:
    """Another process holding the store's write lock (an import, the sqlite3 shell's BEGIN
    IMMEDIATE) had these commands sit silent up to 30 s, looking stuck: each says once what
    it waits for and what a Ctrl-C does. SQLite waits for the lock in C, where Python runs no
    signal handler: a Ctrl-C waited out the busy timeout, and the command then failed,
    'database is locked', exit status 1, where it ends by the SIGINT at once, having written
    nothing. (The busy timeout made an hour: the old wait would outlast the test's.)"""
    with open_store() as store:
        fill(store, "demo", ["x"])
    store_drain(herolog_home / "logs.db", "demo", "syslog://127.0.0.1:7")
    path = herolog_home / "logs.db"
    assert interrupted_in_lock_wait(path, args, then) == (-signal.SIGINT, b"")
    with open_store() as store:
        assert (store.history, [(x.name, x.lines) for x in store.apps()]) == (1500, [("demo", 1)])
        assert [x.url for x in store.drains("demo")] == ["syslog://127.0.0.1:7"]


def test_python_dash_m_and_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "--version"],
        capture_output=True,
        text=True,
        env=herolog_env(),
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("herolog, version ")
    help_text = subprocess.run(
        [sys.executable, "-m", "herolog", "-h"], capture_output=True, text=True, env=herolog_env()
    ).stdout
    assert help_text.startswith("Usage: herolog [OPTIONS] COMMAND")


def test_home_defaults_to_the_platform_data_dir(monkeypatch: object, tmp_path: Path) -> None:
    import pytest

    from herolog import config

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.delenv("HEROLOG_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert config.store_path() == tmp_path / "xdg" / "herolog" / "logs.db"


def test_run_on_a_store_it_may_not_write_does_not_run_the_command(herolog_home: Path) -> None:
    """The command ran, and every line of it was lost ("could not store 4 of 4 lines"),
    with the command's exit status 0: a run on a full disk is refused before it starts."""
    from tests.cli.test_bad_input import unwritable

    path = herolog_home / "logs.db"
    store = open_store(path)
    fill(store, "demo", ["a"])
    store.close()
    marker = herolog_home.parent / "ran"
    with unwritable(path, 0o440):
        proc = herolog_process("run", "--", "touch", str(marker))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: cannot write to the store {path}: its file is read-only to this user"
    ]
    assert not marker.exists()


def test_a_herolog_home_that_is_a_file_is_named_as_such_by_writers(tmp_path: Path) -> None:
    """mkdir's "File exists" read as if the store's directory were there and fine."""
    home = tmp_path / "home"
    home.write_text("")
    proc = herolog_process("store", "history", "5", env={"HEROLOG_HOME": str(home)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: cannot create the store's directory {home}: it is there, and not a directory"
    ]


@pytest.mark.parametrize("below", ["", "herolog"], ids=["the home", "its parent"])
def test_a_herolog_home_behind_a_dangling_symlink_is_named_as_such_by_writers(
    tmp_path: Path, below: str
) -> None:
    """A link to a disk that is not mounted: it is there, but what it points to is not, and
    the directory was not there with a file in its place."""
    link, target = tmp_path / "data", tmp_path / "unmounted" / "data"
    link.symlink_to(target)
    home = link / below if below else link
    proc = herolog_process("store", "history", "5", env={"HEROLOG_HOME": str(home)})
    assert proc.returncode == 1, proc.stderr
    it = "it" if home == link else str(link)
    assert proc.stderr.splitlines() == [
        f"Error: cannot create the store's directory {home}: {it} is a symbolic link to"
        f" {target}, which is not there"
    ]


def test_lowering_the_history_keeps_the_file_s_size_until_a_vacuum(herolog_home: Path) -> None:
    """As the README says: the space is kept for the lines to come, and VACUUM (serve
    stopped) gives it back, leaving a store herolog reads and writes as before."""

    def herolog(*args: str) -> str:
        proc = herolog_process(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    store = open_store()
    store.set_history(5000)
    fill(store, "demo", [f"{i} {'x' * 500}" for i in range(3000)])
    store.close()
    before = json.loads(herolog("store", "info", "--json"))["bytes"]
    herolog("store", "history", "10")
    details = json.loads(herolog("store", "info", "--json"))
    assert details["bytes"] >= before
    assert details["apps"][0]["lines"] == 10
    vacuum = sqlite3.connect(details["path"])
    vacuum.execute("VACUUM")
    vacuum.close()
    assert json.loads(herolog("store", "info", "--json"))["bytes"] < before // 10
    store = open_store()
    fill(store, "demo", ["after"])
    store.close()
    shown = herolog("logs", "-a", "demo", "-n", "2").splitlines()
    assert shown[0].split(": ", 1)[1].startswith("2999 ")
    assert shown[1].endswith("app[web.1]: after")


def test_run_says_its_lines_were_not_stored_once_the_store_is_moved(herolog_home: Path) -> None:
    """`mv logs.db logs.db.broken` (as herolog says to for a broken store) or `rm` while a
    run goes on: its lines went on into the file moved or deleted, where nothing reads them,
    and the run said nothing. serve stops in this case; a run goes on, and says at its end
    that the lines after the move were not stored."""
    import time

    go = herolog_home.parent / "go"
    script = f"echo before; while [ ! -e '{go}' ]; do sleep 0.02; done; echo after"
    proc = subprocess.Popen(
        [sys.executable, "-m", "herolog", "run", "-q", "-a", "demo", "--", "sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(),
    )
    path = herolog_home / "logs.db"
    deadline = time.monotonic() + 20
    while invoke("logs", "-a", "demo")[1].count("app[run.1]: before") != 1:
        assert time.monotonic() < deadline, "the run's first line was not stored"
        time.sleep(0.05)
    path.rename(herolog_home / "logs.db.broken")
    go.touch()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    (said,) = err.splitlines()
    assert said.startswith("herolog run: could not store "), said
    assert said.endswith(f": the store {path} was moved or deleted while the command ran"), said
    assert not path.exists()


def test_store_forget_deletes_one_app_and_the_frame_ids_it_was_sent(herolog_home: Path) -> None:
    from herolog.drains import app_id
    from herolog.filters import LineFilter
    from herolog.store import Batch
    from tests.helpers import line

    with open_store() as store:
        store.append([Batch("staging", [line("a"), line("b")], frame_id="f-1")])
        fill(store, "prod", ["kept 1", "kept 2"])
        assert invoke("store", "forget", "staging", "--confirm", "staging") == (
            0,
            "",
            "Forgot staging and its 2 lines.\n",
        )
        assert invoke("apps")[1] == "prod\n"
        lines, _ = store.last(LineFilter(), 10)
        assert [(x.app, x.message) for x in lines] == [("prod", "kept 1"), ("prod", "kept 2")]
        # A retry of a batch sent before is stored again: the app is new.
        store.append([Batch("staging", [line("a again")], frame_id="f-1")])
        assert [(a.name, a.lines) for a in store.apps()] == [("prod", 2), ("staging", 1)]
        code, _, err = invoke("store", "forget", app_id("prod"), "--confirm", "prod")
        assert (code, err) == (0, "Forgot prod and its 2 lines.\n")  # by its id, as -a takes it


def test_store_forget_refuses_what_it_should_not_delete(herolog_home: Path) -> None:
    with open_store() as store:
        fill(store, "demo", ["x"])
        code, _, err = invoke("store", "forget", "nosuch", "--confirm", "nosuch")
        assert (code, err) == (
            1,
            f"Error: the store {herolog_home / 'logs.db'} has no app named 'nosuch'\n",
        )
        code, _, err = invoke("store", "forget", "demo", "--confirm", "dem")
        assert (code, err) == (1, "Error: 'dem' is not 'demo': nothing deleted\n")
        code, _, err = invoke("store", "forget", "demo")  # no terminal to ask on
        assert (code, err) == (
            1,
            "Error: forgetting demo deletes its 1 line: run again with --confirm demo\n",
        )
        store.add_drain("demo", "https://logs.example.com/in")
        code, _, err = invoke("store", "forget", "demo", "--confirm", "demo")
        assert (code, err) == (
            1,
            "Error: demo is kept: a drain forwards it (remove it first: herolog drain list -a demo)\n",
        )
        assert [(a.name, a.lines) for a in store.apps()] == [("demo", 1)]


def test_store_forget_of_a_large_app_a_drain_forwards_deletes_none_of_it(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app of more than TRIM_STEP lines is deleted in steps, each its own transaction:
    the drain that keeps it is looked for before the first, not only in the last, which
    would have refused after the steps had deleted all but TRIM_STEP of its lines."""
    from herolog import store as store_module
    from herolog.filters import LineFilter

    monkeypatch.setattr(store_module, "TRIM_STEP", 10)
    with open_store() as store:
        fill(store, "demo", [str(n) for n in range(25)])
        store.add_drain("demo", "https://logs.example.com/in")
        code, _, err = invoke("store", "forget", "demo", "--confirm", "demo")
        assert (code, err) == (
            1,
            "Error: demo is kept: a drain forwards it (remove it first: herolog drain list -a demo)\n",
        )
        assert [(a.name, a.lines) for a in store.apps()] == [("demo", 25)]
        lines, _ = store.last(LineFilter(app="demo"), 100)
        assert [x.message for x in lines] == [str(n) for n in range(25)]


@pytest.mark.subprocess
@pytest.mark.parametrize(("typed", "gone"), [("demo", True), ("", False)])
def test_store_forget_asks_for_the_name_on_a_terminal(
    herolog_home: Path, typed: str, gone: bool
) -> None:
    with open_store() as store:
        fill(store, "demo", ["x", "y"])
    terminal, its_end = os.openpty()
    try:
        os.write(terminal, typed.encode() + b"\n")
        done = herolog_process("store", "forget", "demo", stdin=its_end)
    finally:
        os.close(its_end)
        os.close(terminal)
    assert done.stderr.startswith(
        f"This deletes demo and its 2 lines from {herolog_home / 'logs.db'}.\nTo go on, type demo:"
    )
    if gone:
        assert done.returncode == 0
        assert done.stderr.endswith("Forgot demo and its 2 lines.\n")
        with open_store() as store:
            assert store.apps() == []
    else:
        assert done.returncode == 1
        assert done.stderr.endswith("Error: '' is not 'demo': nothing deleted\n")
        with open_store() as store:
            assert [a.name for a in store.apps()] == ["demo"]


def test_store_forget_while_serve_takes_the_app_s_lines(make_server: ServerFactory) -> None:
    """serve's writer finds an app by its name in each batch's transaction: an app forgotten
    under it is made anew by the next batch, and a retry of one it took before is stored."""
    from tests.server.test_process import batch

    server = make_server()
    sent = {"Logplex-Frame-Id": "f-1"}
    assert server.post("staging", batch("before", 3), headers=sent).status_code == 204
    assert invoke("store", "forget", "staging", "--confirm", "staging")[0] == 0
    assert server.lines("staging") == []
    assert server.post("staging", batch("before", 3), headers=sent).status_code == 204
    assert server.post("staging", batch("after", 2)).status_code == 204
    assert [x.message for x in server.lines("staging")] == [
        "before 0",
        "before 1",
        "before 2",
        "after 0",
        "after 1",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["store", "info"],
        ["store", "history"],
        ["store", "history", "2000"],
        ["store", "forget", "demo", "--confirm", "demo"],
    ],
    ids=" ".join,
)
def test_the_store_commands_say_they_work_locally_with_herolog_url_set(
    herolog_home: Path, args: list[str]
) -> None:
    """apps, logs, drain and run follow $HEROLOG_URL to a server; store has only the local
    store: run where $HEROLOG_URL is exported, it must not pass for the server's."""
    with open_store() as store:
        fill(store, "demo", ["x"])
    env = herolog_env(HEROLOG_URL="http://127.0.0.1:9")
    done = herolog_process(*args, env=env)
    assert done.returncode == 0, done.stderr
    said = (
        f"herolog {' '.join(args[:2])} works on the local store ({herolog_home / 'logs.db'}),"
        " not on the server of $HEROLOG_URL (apps, logs, drain and run --server use a server)\n"
    )
    assert done.stderr.startswith(said)  # before anything is done, or asked
    env["HEROLOG_URL"] = ""  # set empty: the local store is meant
    done = herolog_process(*args, env=env)
    assert "HEROLOG_URL" not in done.stderr


KEY = "apps-key"


def test_apps_server_lists_the_server_s_apps_page_by_page(herolog_home: Path) -> None:
    """herolog apps --server (and $HEROLOG_URL) lists the apps of the server, another store
    than the local one here, in the same forms as locally; a server's GET /apps pages 1,000
    apps at most, and the pages are followed."""
    from herolog.store import Batch, SQLiteStore
    from tests.helpers import line

    with open_store() as store:
        fill(store, "local-only", ["x"])
    path = herolog_home.parent / "elsewhere" / "logs.db"
    names = [f"app-{i:04d}" for i in range(1001)]
    store = SQLiteStore.open(path)
    try:
        store.append([Batch(name, [line("x")]) for name in names])
        store.append([Batch("app-0007", [line("y"), line("z")])])
    finally:
        store.close()
    with running_server(path, api_key=KEY) as running:
        key = {"HEROLOG_API_KEY": KEY}
        done = herolog_process("apps", "--server", running.url, env=key)
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.splitlines() == names
        done = herolog_process("apps", "--json", env={**key, "HEROLOG_URL": running.url})
        assert (done.returncode, done.stderr) == (0, "")
        found = json.loads(done.stdout)
        assert len(found) == 1001
        assert found[7]["name"] == "app-0007"
        assert found[7]["lines"] == 3
        assert set(found[7]) == {"name", "lines", "created_at"}
        assert found[7]["created_at"].endswith("Z")
        # --server '' is the local store, $HEROLOG_URL or not.
        local = herolog_process("apps", "--server", "", env={**key, "HEROLOG_URL": running.url})
        assert local.stdout == "local-only\n"


def test_apps_server_errors_are_one_line(herolog_home: Path) -> None:
    with running_server(herolog_home / "logs.db", api_key=KEY) as running:
        url = running.url
        for env, said in [
            ({}, f"{url} needs an API key (401): set HEROLOG_API_KEY to its --api-key"),
            (
                {"HEROLOG_API_KEY": "wrong"},
                f"{url} refused the API key (401): check HEROLOG_API_KEY",
            ),
        ]:
            done = herolog_process("apps", "--server", url, env=env)
            assert (done.returncode, done.stdout) == (1, "")
            assert done.stderr == f"Error: {said}\n"
    done = herolog_process("apps", "--server", "http://127.0.0.1:9")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "Error: cannot reach http://127.0.0.1:9: connection refused\n"
    done = herolog_process("apps", "--server", "ftp://x")
    assert done.returncode == 2
    assert "'ftp://x' is not a server URL" in done.stderr


def test_apps_server_says_when_the_server_is_an_older_herolog_serve(herolog_home: Path) -> None:
    """A herolog serve from before GET /apps answers it with its JSON 404 for a path of the
    API's it does not serve: it is told as that, not as a failure of this one."""
    older = (
        b'{"id": "not_found", "message": "No such API endpoint: GET /apps (herolog serves the'
        b' calls of heroku logs, heroku drains and heroku auth:whoami)."}\n'
    )

    class Older(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(older)))
            self.end_headers()
            self.wfile.write(older)

    with serving(Older) as server:
        url = server.url
        done = herolog_process("apps", "--server", url, env={"HEROLOG_API_KEY": KEY})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: {url} cannot list its apps (GET /apps is a 404 there): it is a herolog serve"
        " older than this herolog, without that call; upgrade it (logs and drain --server work"
        " with it as it is)\n"
    )


@pytest.mark.parametrize("next_range", [None, "name ..; max=1000"], ids=["none", "same"])
def test_apps_server_ends_at_a_page_that_names_no_new_next(
    herolog_home: Path, next_range: str | None
) -> None:
    """A server (a proxy's cache, another program) answering 206 with no Next-Range has
    sent its last page; one naming the page it was asked for again would be asked for ever:
    that is said, in one line."""
    page = b'[{"name": "demo", "lines": 3, "created_at": "2026-12-07T10:00:00.000000Z"}]'
    asked: list[str] = []

    class Pages(QuietHandler):
        def do_GET(self) -> None:
            asked.append(self.headers["Range"])
            self.send_response(206)
            self.send_header("Content-Type", "application/json")
            if next_range is not None:
                self.send_header("Next-Range", next_range)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    with serving(Pages) as server:
        url = server.url
        done = herolog_process("apps", "--server", url, env={"HEROLOG_API_KEY": KEY}, timeout=60)
    assert asked == ["name ..; max=1000"]
    if next_range is None:
        assert (done.returncode, done.stdout, done.stderr) == (0, "demo\n", "")
    else:
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == (
            f"Error: {url} sent the same page of apps again ('name ..; max=1000')\n"
        )


def test_apps_server_with_a_wrong_path_is_not_taken_for_an_older_serve(
    herolog_home: Path,
) -> None:
    """A --server URL with a path that is not the server's (the drain URL serve prints)."""
    with running_server(herolog_home / "logs.db", api_key=KEY) as running:
        wrong = running.url + "/apps/demo/logs"
        done = herolog_process("apps", "--server", wrong, env={"HEROLOG_API_KEY": KEY})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(
        f"Error: {wrong} could not list the apps (404): No such API endpoint: GET"
        " /apps/demo/logs/apps"
    )
    assert "older" not in done.stderr
