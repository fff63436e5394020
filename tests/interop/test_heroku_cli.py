"""The official heroku CLI (npm ``heroku``), unmodified, against ``herolog serve``.

Each command's output must equal ``herolog logs`` for the same request, line for line (the
CLI colours nothing when its stdout is not a terminal, and neither does herolog).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from herolog import drains as drains_module
from herolog.cli import cli
from herolog.server import api as api_module
from herolog.server import sessions
from herolog.server.config import DrainTiming
from herolog.store import Batch, SQLiteStore, StoreError
from tests import web
from tests.helpers import constants_env, herolog_env, line
from tests.server.conftest import (
    Running,
    ServeProcess,
    ServerFactory,
    own_certificate,
    running_server,
)
from tests.server.test_remote_logs import closed_port

KEY = "interop-key"
README = Path(__file__).parents[2] / "README.md"
EXAMPLE = Path(__file__).parents[2] / "examples" / "heroku-logs.txt"


def import_example(running: Running) -> Running:
    """The example's lines as app demo, in ``running``'s store."""
    result = CliRunner().invoke(cli, ["import", str(EXAMPLE), "-a", "demo"], env=home(running))
    assert result.exit_code == 0, result.output
    return running


def home(running: Running) -> dict[str, str]:
    """The environment of a local herolog command using ``running``'s store."""
    return {"HEROLOG_HOME": str(running.server.config.store_path.parent)}


@pytest.fixture
def server(make_server: ServerFactory) -> Running:
    """A server with the example imported, for a test that changes it."""
    return import_example(make_server(api_key=KEY))


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The same, one for the module's tests that only read from it (they add no lines or
    drains): a server of their own cost each of them more than half a second."""
    with running_server(tmp_path_factory.mktemp("interop") / "logs.db", api_key=KEY) as running:
        yield import_example(running)


def cli_env(server: Running | ServeProcess, tmp_path: Path, key: str = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEROKU_", "FORCE_COLOR"))}
    env.update(
        HOME=str(tmp_path / "heroku-home"),  # the CLI keeps its config and caches here
        HEROKU_HOST=server.url,
        HEROKU_API_KEY=key,
        # Commands that GET /account (auth:whoami, ps) also send the key to Heroku's
        # particleboard.heroku.com/account, unless this points elsewhere (README).
        HEROKU_PARTICLEBOARD_URL=server.url,
        DISABLE_TELEMETRY="true",
        # Each fresh HOME has the CLI start a detached 'heroku update --autoupdate', which
        # asks Heroku's servers for a newer CLI and can outlive the test by far.
        HEROKU_DISABLE_AUTOUPDATE="1",
        # And its first command in a HOME starts a detached node process that asks
        # registry.npmjs.org for the newest version (a network call and 0.2 s of CPU a test).
        HEROKU_SKIP_NEW_VERSION_CHECK="true",
        NO_COLOR="1",
    )
    # The CLI asks even 127.0.0.1 through a proxy in $HTTP_PROXY (set on many a CI runner),
    # where $NO_PROXY does not name it (README).
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name), "127.0.0.1", "localhost"]))
    return env


def heroku(heroku_cli: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(heroku_cli), *args], env=env, capture_output=True, text=True, timeout=120
    )


def herolog_logs(server: Running, *args: str) -> list[str]:
    result = CliRunner().invoke(cli, ["logs", *args], env=home(server))
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    "args",
    [
        ["-n", "5"],
        ["-n", "3", "-s", "app", "-d", "web.1"],
        # Each a run of the heroku CLI, which takes two seconds to start.
        pytest.param(["-n", "40"], marks=pytest.mark.slow),
        pytest.param(["-n", "10", "-s", "heroku"], marks=pytest.mark.slow),
        pytest.param(["-n", "10", "-d", "router"], marks=pytest.mark.slow),
        pytest.param(["-n", "10", "-p", "web"], marks=pytest.mark.slow),
    ],
)
def test_heroku_logs_prints_what_herolog_logs_prints(
    heroku_cli: Path, shared_server: Running, tmp_path: Path, args: list[str]
) -> None:
    result = heroku(heroku_cli, cli_env(shared_server, tmp_path), "logs", "-a", "demo", *args)
    assert result.returncode == 0, result.stderr
    expected = herolog_logs(shared_server, "-a", "demo", *args)
    assert expected, "the example should have matching lines"
    assert result.stdout.splitlines() == expected


def test_heroku_logs_trims_each_message_and_drops_blank_lines(
    heroku_cli: Path, server: Running, tmp_path: Path
) -> None:
    """What the CLI prints differently from herolog logs, as the README says: it trims the
    spaces at both ends of a message (its first line's, which it colours, a later line's
    that looks like a header too; and the end of each batch), closes up the white space of
    a router line, which it splits into key=value pairs, and drops blank lines. With
    HEROKU_LOGS_COLOR=0 it colours nothing, and only the blank lines go."""
    messages = [
        ("app", "web.1", "   indented"),
        ("app", "web.1", "trailing   "),
        ("app", "web.1", "first\n\n  second line  \nfoo[bar]:   like a header  \nlast"),
        ("heroku", "router", 'at=info method=GET  path="/a  b"\tstatus=200'),
        ("app", "web.1", "the batch's last"),
    ]
    frames = [
        f"<190>1 2026-11-21T10:00:0{i}+00:00 host {source} {dyno} - {m}\n"
        for i, (source, dyno, m) in enumerate(messages)
    ]
    body = b"".join(b"%d %s" % (len(f.encode()), f.encode()) for f in frames)
    assert server.post("spaces", body).status_code == 204
    env = cli_env(server, tmp_path)
    result = heroku(heroku_cli, env, "logs", "-a", "spaces")
    assert result.returncode == 0, result.stderr
    expected = [
        "2026-11-21T10:00:00+00:00 app[web.1]:    indented",
        "2026-11-21T10:00:01+00:00 app[web.1]: trailing   ",
        "2026-11-21T10:00:02+00:00 app[web.1]: first",
        "",
        "  second line  ",
        "foo[bar]:   like a header  ",
        "last",
        '2026-11-21T10:00:03+00:00 heroku[router]: at=info method=GET  path="/a  b"\tstatus=200',
        "2026-11-21T10:00:04+00:00 app[web.1]: the batch's last",
    ]
    assert herolog_logs(server, "-a", "spaces") == expected
    assert result.stdout.splitlines() == [
        "2026-11-21T10:00:00+00:00 app[web.1]: indented",
        "2026-11-21T10:00:01+00:00 app[web.1]: trailing",
        "2026-11-21T10:00:02+00:00 app[web.1]: first",
        "  second line  ",
        "foo[bar]: like a header",
        "last",
        '2026-11-21T10:00:03+00:00 heroku[router]: at=info method=GET path="/a b" status=200',
        "2026-11-21T10:00:04+00:00 app[web.1]: the batch's last",
    ]
    uncoloured = heroku(heroku_cli, {**env, "HEROKU_LOGS_COLOR": "0"}, "logs", "-a", "spaces")
    assert uncoloured.returncode == 0, uncoloured.stderr
    assert uncoloured.stdout.splitlines() == [line for line in expected if line]


def test_heroku_logs_ends_a_line_at_each_carriage_return(
    heroku_cli: Path, server: Running, tmp_path: Path
) -> None:
    """An event stream cannot carry a CR (it ends a field there, as LF does): serve sends
    the text on either side of one as lines of their own, which the CLI prints so, where
    herolog logs writes the message as it was sent. JavaScript's trim() takes other Unicode
    white space off a message's ends too, a no-break space's."""
    messages = ["progress 50%\r100%", "crlf\r\nnext", "ends in cr\r", "\u00a0nbsp\u00a0"]
    frames = [
        f"<190>1 2026-11-21T10:00:0{i}+00:00 host app web.1 - {m}\n" for i, m in enumerate(messages)
    ]
    body = b"".join(b"%d %s" % (len(f.encode()), f.encode()) for f in frames)
    assert server.post("cr", body).status_code == 204
    # Bytes: in text mode, a CR the CLI printed would read as a line end too.
    result = subprocess.run(
        [str(heroku_cli), "logs", "-a", "cr"],
        env=cli_env(server, tmp_path),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = CliRunner().invoke(cli, ["logs", "-a", "cr"], env=home(server))
    assert printed.exit_code == 0, printed.output
    assert printed.stdout_bytes.decode() == (  # .stdout would make each CRLF an LF
        "2026-11-21T10:00:00+00:00 app[web.1]: progress 50%\r100%\n"
        "2026-11-21T10:00:01+00:00 app[web.1]: crlf\r\nnext\n"
        "2026-11-21T10:00:02+00:00 app[web.1]: ends in cr\r\n"
        "2026-11-21T10:00:03+00:00 app[web.1]: \u00a0nbsp\u00a0\n"
    )
    assert result.stdout.decode().split("\n") == [
        "2026-11-21T10:00:00+00:00 app[web.1]: progress 50%",
        "100%",
        "2026-11-21T10:00:01+00:00 app[web.1]: crlf",
        "next",
        "2026-11-21T10:00:02+00:00 app[web.1]: ends in cr",
        "2026-11-21T10:00:03+00:00 app[web.1]: nbsp",
        "",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("num", ["5000", "1000000000000000000000"])
def test_heroku_logs_n_over_the_history_prints_the_whole_history(
    heroku_cli: Path, shared_server: Running, tmp_path: Path, num: str
) -> None:
    """As on Heroku, where -n 5000 gives the 1,500 lines Logplex keeps. The CLI sends
    10**21 and up as JSON with an exponent (1e+21): a whole number too."""
    result = heroku(heroku_cli, cli_env(shared_server, tmp_path), "logs", "-a", "demo", "-n", num)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == herolog_logs(shared_server, "-a", "demo", "-n", "1500")


def test_heroku_logs_exits_once_the_history_is_printed(
    heroku_cli: Path, shared_server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's EventSource arms its reconnect timer (the stream's ``retry``, 3 s when none
    is sent) as a history ends, and node stays up until it fires, whatever the CLI printed:
    a one-off stream sets it to 0 as it ends. The tail's reconnect delay is raised here to
    10 s, so a CLI that waited for it cannot pass for one held up by a busy machine."""
    monkeypatch.setattr(sessions, "RETRY_MS", 10_000)
    expected = herolog_logs(shared_server, "-a", "demo", "-n", "5")
    with subprocess.Popen(
        [str(heroku_cli), "logs", "-a", "demo", "-n", "5"],
        env=cli_env(shared_server, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines = [proc.stdout.readline().rstrip("\n") for _ in expected]
        printed = time.monotonic()
        assert lines == expected
        assert proc.stdout.read() == ""  # its end: the CLI has exited
        assert proc.wait(60) == 0, proc.stderr.read()
        assert time.monotonic() - printed < 5


@pytest.mark.slow
def test_heroku_logs_takes_the_apps_id(
    heroku_cli: Path, shared_server: Running, tmp_path: Path
) -> None:
    """As on Heroku, -a takes the id the API hands out (GET /apps/demo, a drain's app.id);
    drains:add takes it too (test_heroku_drains)."""
    app_id = drains_module.app_id("demo")
    result = heroku(heroku_cli, cli_env(shared_server, tmp_path), "logs", "-a", app_id, "-n", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == herolog_logs(shared_server, "-a", "demo", "-n", "5")


class HerokuTail:
    """``heroku logs ARGS`` running, each line it prints put on ``lines`` as it comes; what it
    said on stderr is ``stderr`` once :meth:`stop` has ended it."""

    def __init__(self, heroku_cli: Path, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(heroku_cli), "logs", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout, stderr = self.proc.stdout, self.proc.stderr
        assert stdout is not None
        assert stderr is not None
        self._stdout, self._stderr = stdout, stderr
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr = ""
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        for text in self._stdout:
            self.lines.put(text.rstrip("\n"))

    def message(self, timeout: float = 30) -> str:
        """The message of the next line it prints."""
        return self.lines.get(timeout=timeout).split(": ", 1)[-1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._reader.join(10)  # it has read to the end of the output
        self.stderr = self._stderr.read()
        self._stdout.close()
        self._stderr.close()


def test_heroku_logs_tail(heroku_cli: Path, server: Running, tmp_path: Path) -> None:
    tail = HerokuTail(
        heroku_cli, cli_env(server, tmp_path), "-a", "demo", "-n", "1", "--tail", "-d", "web"
    )
    lines = tail.lines
    try:
        first = lines.get(timeout=60)
        assert [first] == herolog_logs(server, "-a", "demo", "-n", "1", "-d", "web")
        frames = [
            b"<190>1 2026-11-21T10:00:00.000001+00:00 host app web.1 - posted after the tail began\n",
            b"<190>1 2026-11-21T10:00:00.000002+00:00 host app worker.1 - not for -d web\n",
            b"<158>1 2026-11-21T10:00:00.000003+00:00 host heroku web.2 - State changed from starting to up\n",
        ]
        body = b"".join(b"%d %s" % (len(f), f) for f in frames)
        assert server.post("demo", body).status_code == 204
        got = [lines.get(timeout=30), lines.get(timeout=30)]
        assert got == herolog_logs(server, "-a", "demo", "-n", "2", "-d", "web")
        assert got[0].endswith("app[web.1]: posted after the tail began")
        time.sleep(0.5)
        assert lines.empty()
    finally:
        tail.stop()


@pytest.mark.slow
def test_heroku_logs_tail_comes_back_when_serve_could_not_read_the_store(
    heroku_cli: Path, server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tail session serve cannot read the store for (out of open files, say) ends its
    stream properly, asking the CLI to come back: cut off, the CLI would die with
    "terminated: other side closed" (it reconnects only after a proper end)."""
    history = sessions._history
    failures: list[None] = []

    def failing(*args: Any) -> Any:
        if not failures:
            failures.append(None)
            raise StoreError("cannot open the store: unable to open database file")
        return history(*args)

    monkeypatch.setattr(sessions, "_history", failing)
    monkeypatch.setattr(api_module, "FAILED_RETRY_MS", 200)
    tail = HerokuTail(heroku_cli, cli_env(server, tmp_path), "-a", "demo", "-n", "1", "--tail")
    try:
        first = tail.lines.get(timeout=60)
        assert failures
        assert [first] == herolog_logs(server, "-a", "demo", "-n", "1")
        assert server.post("demo", frames("after coming back", second=40)).status_code == 204
        assert tail.message() == "after coming back"
        assert tail.proc.poll() is None
    finally:
        tail.stop()
    assert "eventsource failed" not in tail.stderr, tail.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_heroku_logs_tail_piped_into_herolog_import_keeps_a_live_copy(
    heroku_cli: Path, server: Running, tmp_path: Path
) -> None:
    """The README's `heroku logs --tail | herolog import -`: the lines the official CLI
    prints are in the copy while the tail runs, as `herolog logs` prints the original's, and
    the import ends with the tail."""
    heroku = subprocess.Popen(
        [str(heroku_cli), "logs", "-a", "demo", "-n", "5", "--tail"],
        env=cli_env(server, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert heroku.stdout is not None
    copying = subprocess.Popen(
        [sys.executable, "-m", "herolog", "import", "-", "-a", "copy"],
        stdin=heroku.stdout,
        stderr=subprocess.PIPE,
        env=herolog_env(**home(server)),
    )
    heroku.stdout.close()

    def copied(count: int) -> list[str]:
        deadline = time.monotonic() + 60
        while True:
            result = CliRunner().invoke(cli, ["logs", "-a", "copy", "-n", "100"], env=home(server))
            if result.exit_code == 0 and len(lines := result.stdout.splitlines()) >= count:
                return lines
            assert time.monotonic() < deadline, (result.output, heroku.poll(), copying.poll())
            time.sleep(0.05)

    try:
        assert copied(5) == herolog_logs(server, "-a", "demo", "-n", "5")
        assert (
            server.post("demo", frames("posted while", "the tail ran", second=30)).status_code
            == 204
        )
        assert copied(7) == herolog_logs(server, "-a", "demo", "-n", "7")
        assert copying.poll() is None  # still copying
        heroku.terminate()
        _, err = copying.communicate(timeout=30)
    finally:
        heroku.kill()
        heroku.wait()
        copying.kill()
        copying.communicate()
    assert (copying.returncode, err.decode()) == (
        0,
        "Imported 7 lines into copy (heroku format).\n",
    )


def frames(*messages: str, second: int = 0) -> bytes:
    """A Logplex body of app[web.1] lines, one a microsecond after the other."""
    framed = [
        b"<190>1 2026-11-21T10:00:%02d.%06d+00:00 host app web.1 - %s\n"
        % (second, i + 1, message.encode())
        for i, message in enumerate(messages)
    ]
    return b"".join(b"%d %s" % (len(f), f) for f in framed)


def post_to(url: str, body: bytes) -> None:
    response = web.post(
        f"{url}/apps/demo/logs", content=body, headers={"Content-Type": "application/logplex-1"}
    )
    assert response.status_code == 204, response.text


@pytest.mark.slow
@pytest.mark.subprocess
def test_heroku_logs_tail_goes_on_through_a_serve_restart(
    heroku_cli: Path, tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """serve stopped (SIGTERM) and started again on its port and store, as systemd restarts
    it: the CLI's EventSource comes back to the same session URL with the id of the last line
    it got, and the new serve goes on from there, every line printed once (README). No drain
    flush to wait for (the test below has one): the CLI is asked back after the margin alone,
    here 3 s (RESTART_MARGIN_MS; 5 by default), ample for a serve to start."""
    env = constants_env({"herolog.server.sessions.RESTART_MARGIN_MS": 3000})
    first = serve_process("--port", "0", "--api-key", KEY, "--drain-flush-timeout", "0", env=env)
    post_to(first.url, frames("before"))
    tail = HerokuTail(heroku_cli, cli_env(first, tmp_path), "-a", "demo", "-n", "1", "--tail")

    try:
        assert tail.message(60) == "before"
        post_to(first.url, frames("live", second=1))
        assert tail.message() == "live"
        # Stored, and maybe not yet sent when serve stops.
        post_to(first.url, frames(*[f"as it stops {i}" for i in range(3)], second=2))
        first.proc.send_signal(signal.SIGTERM)
        assert first.finish()[0] == 0
        down = tmp_path / "down.txt"
        down.write_text(
            "".join(
                f"2026-11-21T10:00:03.00000{i}+00:00 app[web.1]: while down {i}\n" for i in range(3)
            )
        )
        result = CliRunner().invoke(cli, ["import", str(down), "-a", "demo"])
        assert result.exit_code == 0, result.output
        second = serve_process("--port", first.url.rsplit(":", 1)[1], "--api-key", KEY, env=env)
        post_to(second.url, frames("after", second=4))
        got = [tail.message() for _ in range(7)]
        assert got == [
            *[f"as it stops {i}" for i in range(3)],
            *[f"while down {i}" for i in range(3)],
            "after",
        ]
        post_to(second.url, frames("later", second=5))
        assert tail.message() == "later"
        time.sleep(0.5)
        assert tail.lines.empty()
        assert tail.proc.poll() is None
    finally:
        tail.stop()
    assert "Error" not in tail.stderr, tail.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_heroku_logs_tail_goes_on_through_a_restart_that_gives_a_dead_drain_its_time(
    heroku_cli: Path, tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """A serve that stops gives its drains 5 s to deliver what they hold, all 5 where one
    cannot (README), after it ended the streams; the next serve, as systemd restarts it,
    listens only after that. The CLI, told when to come back, must find it there: it gives
    up at its first reconnect that finds no server. Here a 1 s flush and a 3 s margin
    (RESTART_MARGIN_MS), not 5 and 5."""
    env = constants_env({"herolog.server.sessions.RESTART_MARGIN_MS": 3000})
    first = serve_process("--port", "0", "--api-key", KEY, "--drain-flush-timeout", "1", env=env)
    post_to(first.url, frames("before"))
    response = web.post(
        f"{first.url}/apps/demo/log-drains",
        json={"url": f"http://127.0.0.1:{closed_port()}/drain"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 201, response.text
    tail = HerokuTail(heroku_cli, cli_env(first, tmp_path), "-a", "demo", "-n", "1", "--tail")

    try:
        assert tail.message(60) == "before"
        post_to(first.url, frames("held by the drain", second=1))
        assert tail.message() == "held by the drain"
        first.proc.send_signal(signal.SIGTERM)
        code, said = first.finish()
        assert code == 0, said
        assert "1 line not delivered yet" in said  # it waited for the drain
        second = serve_process("--port", first.url.rsplit(":", 1)[1], "--api-key", KEY, env=env)
        post_to(second.url, frames("after", second=2))
        assert tail.message() == "after"
        assert tail.proc.poll() is None
    finally:
        tail.stop()
    assert "Error" not in tail.stderr, tail.stderr


@pytest.mark.slow
def test_heroku_logs_tail_ends_with_an_error_when_serve_stops(
    heroku_cli: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve stopped, and not started again: the CLI's reconnect finds no server, and it
    exits 1 with its own message (README)."""
    # The stream ends asking the CLI to come back after the drains' flush and 5 s more, room
    # for a restart (the tests above): this test's CLI comes back to a server that is not
    # restarted, as well sooner.
    monkeypatch.setattr(sessions, "RESTART_MARGIN_MS", 200)
    timing = DrainTiming(flush_s=0)
    with running_server(tmp_path / "logs.db", api_key=KEY, drain_timing=timing) as running:
        import_example(running)
        proc = subprocess.Popen(
            [str(heroku_cli), "logs", "-a", "demo", "-n", "1", "--tail"],
            env=cli_env(running, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert (
            proc.stdout.readline().rstrip("\n") == herolog_logs(running, "-a", "demo", "-n", "1")[0]
        )
    try:
        assert proc.wait(30) == 1
        said = " ".join(proc.communicate()[1].replace("\u203a", " ").split())
        assert "Logs eventsource failed with:" in said
        assert "ECONNREFUSED" in said
    finally:
        proc.kill()
        proc.wait(30)


def test_heroku_drains(heroku_cli: Path, server: Running, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path)
    url = "https://user:pass@logs.example.com/drain?dd-api-key=abc"
    # Added by the app's id, as on Heroku -a takes it (GET /apps/demo, a drain's app.id).
    app_id = drains_module.app_id("demo")
    added = heroku(heroku_cli, env, "drains:add", url, "-a", app_id)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"Successfully added drain {url}"
    # The same URL again, by the app's name: the same app, which has it.
    refused = heroku(heroku_cli, env, "drains:add", url, "-a", "demo")
    assert refused.returncode != 0
    assert "Url has already been taken" in refused.stderr
    listed = heroku(heroku_cli, env, "drains", "-a", "demo", "--json")
    assert listed.returncode == 0, listed.stderr
    drains = json.loads(listed.stdout)
    assert [d["url"] for d in drains] == [url]
    assert [d["app"] for d in drains] == [{"id": app_id, "name": "demo"}]
    token = drains[0]["token"]
    assert token.startswith("d.")
    text = heroku(heroku_cli, env, "drains", "-a", "demo")
    assert text.stdout.splitlines() == ["=== Drains", "", f"{url} ({token})"]
    removed = heroku(heroku_cli, env, "drains:remove", token, "-a", "demo")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f"Successfully removed drain {url}"
    # What herolog's registry now holds, through the API the CLI used: the drain is gone,
    # and its URL can be added again.
    drains_api = f"{server.url}/apps/demo/log-drains"
    auth = {"Authorization": f"Bearer {KEY}"}
    assert web.get(drains_api, headers=auth).json() == []
    assert web.post(drains_api, json={"url": url}, headers=auth).status_code == 201
    # An app the store has not had (a typo, as likely as not) is taken, with the warning
    # the CLI prints from the answer's Warning-Message header.
    typo = heroku(heroku_cli, env, "drains:add", url, "-a", "demmo")
    assert typo.returncode == 0, typo.stderr
    assert "Warning: demmo has no lines yet" in typo.stderr
    assert "has no lines yet" not in added.stderr  # demo has lines


def test_wrong_key_is_a_clean_error(
    heroku_cli: Path, shared_server: Running, tmp_path: Path
) -> None:
    result = heroku(heroku_cli, cli_env(shared_server, tmp_path, key="wrong"), "logs", "-a", "demo")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Error" in result.stderr
    assert "token provided to HEROKU_API_KEY is invalid" in result.stderr
    assert "    at " not in result.stderr  # no JavaScript stack trace


def test_unknown_app_is_a_clean_error(
    heroku_cli: Path, shared_server: Running, tmp_path: Path
) -> None:
    result = heroku(heroku_cli, cli_env(shared_server, tmp_path), "logs", "-a", "nope")
    assert result.returncode != 0
    assert "Couldn't find that app." in result.stderr
    assert "    at " not in result.stderr


@pytest.mark.slow
def test_heroku_auth_whoami_names_the_server(
    heroku_cli: Path, shared_server: Running, tmp_path: Path
) -> None:
    """GET /account: the CLI prints the account's email, here the server's name."""
    result = heroku(heroku_cli, cli_env(shared_server, tmp_path), "auth:whoami")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "herolog@127.0.0.1\n"
    wrong = heroku(heroku_cli, cli_env(shared_server, tmp_path, key="wrong"), "auth:whoami")
    assert wrong.returncode != 0
    assert wrong.stdout == ""
    assert "Invalid credentials provided" in wrong.stderr


@pytest.mark.slow
def test_heroku_apps_lists_every_app_page_by_page(
    heroku_cli: Path, server: Running, tmp_path: Path
) -> None:
    """heroku apps --all: GET /apps, whose answers the CLI follows from page to page by their
    Next-Range (200 apps a page), and prints under the account's name, as owner of them all;
    heroku apps (GET /users/~/apps, the account's apps) the same; --json the app objects."""
    added = [f"app-{i:03d}" for i in range(204)]
    store = SQLiteStore.open(server.server.config.store_path)
    try:
        store.append([Batch(name, [line("hello")]) for name in added])
    finally:
        store.close()
    names = sorted(["demo", *added])
    env = cli_env(server, tmp_path)
    result = heroku(heroku_cli, env, "apps", "--all")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["=== herolog@127.0.0.1 Apps", "", *names]
    assert heroku(heroku_cli, env, "apps").stdout == result.stdout  # the account's: all
    listed = heroku(heroku_cli, env, "apps", "-A", "--json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert [app["name"] for app in found] == names
    assert found[-1]["lines"] == 37  # demo, the example's


@pytest.mark.slow
def test_heroku_run_and_ps_say_herolog_has_no_dynos(
    heroku_cli: Path, shared_server: Running, tmp_path: Path
) -> None:
    """heroku run and heroku ps get past GET /account (run asks it first, alone; ps together
    with its other calls) and stop at the dynos call herolog does not serve, with the JSON
    error the CLI prints: they do not pretend to run or list dynos."""
    env = cli_env(shared_server, tmp_path)
    for args, call in [
        (["run", "-a", "demo", "true"], "POST /apps/demo/dynos"),
        (["ps", "-a", "demo"], "GET /apps/demo/dynos"),
    ]:
        result = heroku(heroku_cli, env, *args)
        assert result.returncode != 0
        assert result.stdout == ""
        assert f"No such API endpoint: {call}" in result.stderr
        assert "    at " not in result.stderr


@pytest.mark.slow
def test_an_endpoint_herolog_does_not_serve_is_a_clean_error(
    heroku_cli: Path, shared_server: Running, tmp_path: Path
) -> None:
    """heroku config calls GET /apps/demo/config-vars: the CLI shows Heroku's JSON error as
    it shows api.heroku.com's, not a raw HTTP 404 with a plain-text body."""
    result = heroku(heroku_cli, cli_env(shared_server, tmp_path), "config", "-a", "demo")
    assert result.returncode != 0
    assert "No such API endpoint: GET /apps/demo/config-vars" in result.stderr
    assert "Error ID: not_found" in result.stderr
    assert "    at " not in result.stderr
    # Outside the API's own paths too (heroku addons: GET /addons).
    result = heroku(heroku_cli, cli_env(shared_server, tmp_path), "addons")
    assert result.returncode != 0
    assert "No such API endpoint: GET /addons" in result.stderr
    assert "drains post to" not in result.stderr


def at_terminal(
    heroku_cli: Path, env: dict[str, str], args: list[str], typed: list[tuple[str, str]]
) -> str:
    """What the CLI writes to a terminal (a pty) until it exits, each answer of ``typed`` typed
    once its prompt has been written (heroku login -i reads only a terminal)."""
    terminal, slave = os.openpty()
    proc = subprocess.Popen(
        [str(heroku_cli), *args], env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    out = b""
    answers = iter(typed)
    prompt, answer = next(answers, ("", ""))
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if prompt and prompt.encode() in out:
                os.write(terminal, answer.encode() + b"\r")
                out = out.replace(prompt.encode(), b"<answered>", 1)
                prompt, answer = next(answers, ("", ""))
            ready, _, _ = select.select([terminal], [], [], 1)
            if not ready:
                continue
            try:
                data = os.read(terminal, 4096)
            except OSError:  # the CLI has exited: the terminal is closed
                break
            if not data:
                break
            out += data
    finally:
        os.close(terminal)
        proc.kill()
        proc.wait(30)
    return out.decode(errors="replace")


@pytest.mark.slow
def test_heroku_login_says_to_use_the_api_key(
    heroku_cli: Path, shared_server: Running, tmp_path: Path
) -> None:
    """heroku login -i posts the email and password to /oauth/authorizations, which herolog
    does not serve: the CLI prints a JSON error saying how to give it the key, not the
    intake's plain 404 (about where drains post)."""
    env = {k: v for k, v in cli_env(shared_server, tmp_path).items() if k != "HEROKU_API_KEY"}
    typed = [("? Email", "me@example.com"), ("? Password", KEY)]
    printed = at_terminal(heroku_cli, env, ["login", "-i"], typed)
    assert printed.count("<answered>") == 2  # it asked for both
    said = " ".join(printed.replace("\u203a", " ").split())  # as one line, unwrapped
    assert "drains post to" not in said
    assert "No such API endpoint: POST /oauth/authorizations" in said
    host = shared_server.url.removeprefix("http://")
    assert f"HEROKU_API_KEY, or as the password of machine {host} in ~/.netrc." in said
    # As it says: the key in ~/.netrc, the CLI reads logs without HEROKU_API_KEY.
    netrc = Path(env["HOME"]) / ".netrc"
    netrc.parent.mkdir(exist_ok=True)
    netrc.write_text(f"machine {host}\n  login me@example.com\n  password {KEY}\n")
    netrc.chmod(0o600)
    result = heroku(heroku_cli, env, "logs", "-a", "demo", "-n", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == herolog_logs(shared_server, "-a", "demo", "-n", "5")


@contextmanager
def tunnel(target: tuple[str, int]) -> Iterator[int]:
    """A port on 127.0.0.1 whose connections are passed on to ``target``, as ssh -L's are."""
    listener = socket.create_server(("127.0.0.1", 0))

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def connect(client: socket.socket) -> None:
        with client, socket.create_connection(target) as server:
            back = threading.Thread(target=pipe, args=(server, client), daemon=True)
            back.start()
            pipe(client, server)
            back.join(60)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                threading.Thread(target=connect, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.slow
def test_the_banner_of_a_serve_without_a_key_gives_the_heroku_cli_command(
    heroku_cli: Path, make_server: ServerFactory, tmp_path: Path
) -> None:
    """A bare ``herolog serve``, a newcomer's first: its API needs no key on this machine,
    and the command its banner gives, as given (no HEROKU_API_KEY), prints the app's lines."""
    running = import_example(make_server())
    (line,) = [text for text in running.server.banner() if text.startswith("Platform API")]
    command = line.rpartition(": ")[2]
    assert command == f"HEROKU_HOST={running.url} heroku logs -a APP", line
    env = cli_env(running, tmp_path)
    del env["HEROKU_API_KEY"]
    env["HEROKU_HOST"] = command.split()[0].partition("=")[2]
    result = heroku(heroku_cli, env, "logs", "-a", "demo", "-n", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == herolog_logs(running, "-a", "demo", "-n", "5")


@pytest.mark.slow
@pytest.mark.parametrize("api_key", [KEY, None], ids=["api-key", "no-api-key"])
def test_the_banner_sends_the_heroku_cli_where_serve_listens(
    heroku_cli: Path, make_server: ServerFactory, tmp_path: Path, api_key: str | None
) -> None:
    """serve on one address that is not 127.0.0.1 (::1 here; a private interface's alike):
    the CLI takes no HEROKU_HOST naming it, and 127.0.0.1 is not served, so the banner sends
    the CLI through a tunnel to that address, not to 127.0.0.1 on this machine. Without a
    key too, whose API is open to the tunnel's connections, which come from this machine."""
    # 127.0.0.1 at serve's port number is held here, bound and not listening: a listener of
    # another program that the kernel had given the same number (it gives ::1's apart) once
    # answered there, and serve listening on it too would fail to start.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        running = import_example(make_server(host="::1", port=port, api_key=api_key))
        assert running.server.http_port == port
        (line,) = [text for text in running.server.banner() if text.startswith("Platform API")]
        assert f"127.0.0.1:{port}" not in line
        assert f"ssh -N -L 8514:[::1]:{port} HOST, then HEROKU_HOST=http://127.0.0.1:8514" in line
        # What the banner used to say: 127.0.0.1 on this machine, where nothing listens (the
        # CLI sent there fails with ECONNREFUSED, after retries that took it 7 s).
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
    env = cli_env(running, tmp_path)
    # Where the banner sends it, through a tunnel (what ssh -L does, here in a thread), works.
    with tunnel(("::1", port)) as tunnelled:
        through = f"http://127.0.0.1:{tunnelled}"
        env = {**env, "HEROKU_HOST": through, "HEROKU_PARTICLEBOARD_URL": through}
        result = heroku(heroku_cli, env, "logs", "-a", "demo", "-n", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == herolog_logs(running, "-a", "demo", "-n", "5")


def readme_self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """cert.pem and key.pem in ``folder``, made by README's openssl command."""
    command = re.search(r"^openssl req -x509 .*?-out cert\.pem$", README.read_text(), re.M | re.S)
    assert command, "README has no openssl command for a self-signed certificate"
    subprocess.run(
        ["bash", "-e", "-c", command[0]], cwd=folder, capture_output=True, check=True, timeout=60
    )
    return folder / "cert.pem", folder / "key.pem"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "refusal"),
    [
        ("from a CA of one's own", "unable to verify the first certificate"),
        ("self-signed, as README makes one", "self-signed certificate"),
    ],
)
def test_heroku_logs_over_https_with_a_certificate_of_ones_own(
    heroku_cli: Path, make_server: ServerFactory, tmp_path: Path, kind: str, refusal: str
) -> None:
    """serve --certfile with a certificate no system store trusts (trustme's CA, or
    README's self-signed one): the CLI, a Node program, trusts it once NODE_EXTRA_CA_CERTS
    names the CA (the certificate itself, self-signed), as README says, and before refuses it
    in the words README quotes: it quoted the CA's case alone, which a self-signed
    certificate does not give."""
    if kind.startswith("self-signed"):
        certfile, keyfile = readme_self_signed_certificate(tmp_path)
        cafile = certfile
    else:
        certfile, keyfile, cafile = own_certificate(tmp_path)
    running = import_example(make_server(api_key=KEY, certfile=certfile, keyfile=keyfile))
    assert running.url.startswith("https://127.0.0.1:")
    env = {k: v for k, v in cli_env(running, tmp_path).items() if k != "NODE_EXTRA_CA_CERTS"}
    refused = heroku(heroku_cli, env, "logs", "-a", "demo", "-n", "5")
    assert refused.returncode != 0
    assert f"Error: {refusal}\n" in refused.stderr, refused.stderr
    assert f"`{refusal}`" in " ".join(README.read_text().split())
    trusted = heroku(heroku_cli, {**env, "NODE_EXTRA_CA_CERTS": str(cafile)}, "logs", "-a", "demo")
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.splitlines() == herolog_logs(running, "-a", "demo")
