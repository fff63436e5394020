from __future__ import annotations

import compileall
import gc
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# On a shared, busy machine a property test's time says nothing of the code: Hypothesis's
# default 200 ms deadline failed a parser property once at 271 ms. Speed is bench/'s to check.
settings.register_profile("herolog", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("herolog")


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts a background job (`pytest &`, nohup, some CI
    # runners) with SIGINT ignored, and children inherit that: the herolog processes the
    # tests stop with Ctrl-C's signal would not stop. A handler of Python's own is reset at
    # exec, so they start as from a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Under PYTHONDONTWRITEBYTECODE (set in many container images) no herolog process leaves
    # its bytecode behind, so each of the hundreds the tests start (serve, its store writer,
    # every command) compiled herolog's modules anew: half of a serve's start. Compiled once
    # here, they read it; a module changed since is compiled again, as Python does.
    # The default run leaves out the slow tests (restarts, silences waited out, floods,
    # resources run out, more runs of the heroku CLI): `pytest -m slow` runs them, and
    # `-m "slow or not slow"` all. A test named on the command line (path::name) runs.
    if not config.option.markexpr and not any("::" in arg for arg in config.args):
        config.option.markexpr = "not slow"
    if sys.flags.dont_write_bytecode:
        import herolog

        compileall.compile_dir(Path(herolog.__file__).parent, quiet=1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No socket the tests opened in this process is still open once they are done: one left
    open was only reported as Python exited, after the summary line, where nobody looks
    (bench.ingest's /stats client did, in every run)."""
    gc.collect()
    left = [s for s in gc.get_objects() if isinstance(s, socket.socket) and s.fileno() != -1]
    if left and exitstatus == pytest.ExitCode.OK:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(
                f"{len(left)} socket(s) left open by the tests (a failure):", red=True
            )
            for sock in left:
                reporter.write_line(f"  {sock!r}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def herolog_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own HEROLOG_HOME; none may touch the real user directory."""
    home = tmp_path / "herolog-home"
    monkeypatch.setenv("HEROLOG_HOME", str(home))
    # Colour and terminal settings of the developer's shell must not leak into tests.
    for name in (
        "NO_COLOR",
        "FORCE_COLOR",
        "HEROKU_LOGS_COLOR",
        "HEROKU_COLOR",
        "HEROLOG_URL",
        "HEROLOG_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield home
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """The herolog commands a test started (Child) do not outlive it."""
    from tests.helpers import CHILDREN

    yield
    while CHILDREN:
        child = CHILDREN.pop()
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.communicate()  # closes its pipes too


@pytest.fixture(autouse=True)
def no_connection_left_open() -> Iterator[None]:
    """Every SQLite connection opened in the test's thread while it runs (by the test, or by
    herolog's code that it runs there: a command through CliRunner, a store) is closed by
    its end. One left to the garbage collector skips SQLiteStore.close's own work, and
    Python 3.13 and later warn of it, in whichever test the collector happens to run. Not
    those of other threads: a server shared by a module's tests opens its own as they
    need them, and keeps them until it stops."""
    connect = sqlite3.connect
    opened: list[tuple[sqlite3.Connection, list[traceback.FrameSummary]]] = []
    thread = threading.get_ident()

    def tracked(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = connect(*args, **kwargs)
        if threading.get_ident() == thread:
            opened.append((db, traceback.extract_stack(limit=16)[:-1]))
        return db

    sqlite3.connect = tracked  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = connect
    left = []
    for db, stack in opened:
        try:
            db.total_changes  # noqa: B018 (raises once closed)
        except sqlite3.ProgrammingError:
            continue  # closed
        db.close()
        left.append("".join(traceback.format_list(stack[-6:])))
    if left:
        pytest.fail(
            f"{len(left)} SQLite connection(s) left open, opened at:\n" + "\n".join(left),
            pytrace=False,
        )
