"""``herolog logs --server``: the same lines as local mode, and a tail that outlives the server."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import trustme

from herolog import timestamps
from herolog.filters import LineFilter
from herolog.parser import FIELDS_DEPTH
from herolog.server import ServeConfig, Server, run_in_thread
from herolog.server import sessions as server_sessions
from herolog.store import SQLiteStore, StoredLine, StoreError
from tests import web
from tests.helpers import (
    PROXY_VARIABLES,
    Child,
    QuietHandler,
    constants_env,
    first_line_into_a_socket,
    herolog_env,
    invoke,
    line,
    serving,
    store_lines,
)
from tests.server.conftest import (
    Running,
    ServeProcess,
    ServerFactory,
    own_certificate,
    running_server,
)
from tests.server.sinks import Relay, wait_until

KEY = "remote-key"


run = invoke


fill = store_lines


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server for this module's tests that only read from it (a server of its own cost
    each of them half a second to start and stop): none adds lines, drains or apps. Its
    store is ``logs.db`` in its own HEROLOG_HOME (``home(remote)``), for local mode."""
    path = tmp_path_factory.mktemp("remote") / "logs.db"
    fill(
        path,
        "demo",
        line("at=info method=GET path=/ status=200", source="heroku", dyno="router", second=1),
        line("hello [not markup]", second=2),
        line("Traceback:\n  boom", dyno="web.2", second=3),
        line("tick", dyno="worker.1", second=4)._replace(msgid="TICK"),  # in --json
        line("ERROR: failed", dyno="webby.1", second=5),
    )
    fill(path, "other", line("from other", second=6))
    with running_server(path, api_key=KEY) as running:
        yield running


def home(running: Running) -> dict[str, str]:
    """The environment of a local-mode command reading ``running``'s store."""
    return {"HEROLOG_HOME": str(running.server.config.store_path.parent)}


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-a", "demo"],
        ["-a", "demo", "-n", "2"],
        ["-a", "demo", "-n", "0"],
        ["-a", "demo", "-s", "heroku"],
        ["-a", "demo", "-d", "web"],
        ["-a", "demo", "-p", "web", "-d", "web.2"],
        ["-a", "demo", "-g", "ERROR|tick", "-x", "tick"],
        ["-a", "demo", "--since", "2024-03-05T09:00:03Z", "--until", "2024-03-05T09:00:05Z"],
        ["-a", "demo", "--json"],
        ["--json", "-n", "3"],
        ["-a", "demo", "--color", "always"],
    ],
)
def test_same_output_as_local_mode(remote: Running, args: list[str]) -> None:
    code, local, err = run("logs", *args, env=home(remote))
    assert code == 0, err
    code, over_http, err = run("logs", *args, "--server", remote.url, env={"HEROLOG_API_KEY": KEY})
    assert code == 0, err
    assert over_http == local
    assert local or args[-1] == "0"


def test_server_from_the_environment(remote: Running) -> None:
    code, out, err = run(
        "logs", "-a", "other", env={"HEROLOG_URL": remote.url, "HEROLOG_API_KEY": KEY}
    )
    assert code == 0, err
    assert out == "2024-03-05T09:00:06.000000+00:00 app[web.1]: from other\n"


def test_the_api_key_wins_over_intake_credentials_in_the_url(remote: Running) -> None:
    # One $HEROLOG_URL for herolog run (which needs the --auth credentials in it) and for
    # logs and drain (which need the API key): the URL's user-info must not replace the key.
    url = remote.url.replace("http://", "http://drain:s3cret@")
    env = {"HEROLOG_URL": url, "HEROLOG_API_KEY": KEY}
    code, out, err = run("logs", "-a", "other", env=env)
    assert (code, err) == (0, "")
    assert out == "2024-03-05T09:00:06.000000+00:00 app[web.1]: from other\n"
    code, out, err = run("drain", "list", "-a", "other", env=env)
    assert (code, out, err) == (0, "other has no drains.\n", "")


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (
            ["-a", "demo"],
            {"HEROLOG_API_KEY": "wrong"},
            1,
            "refused the API key (401): check HEROLOG_API_KEY",
        ),
        (["-a", "demo"], {}, 1, "needs an API key (401): set HEROLOG_API_KEY to its --api-key"),
        (["-a", "nope"], {"HEROLOG_API_KEY": KEY}, 1, "has no app named 'nope'"),
        (
            ["-a", "demo", "-n", "1501"],
            {"HEROLOG_API_KEY": KEY},
            2,
            "Error: -n 1,501 is more than the 1,500 lines the store keeps per app (raise that"
            " on the server: herolog serve --history 1501)",
        ),
    ],
)
def test_errors_are_one_line(
    remote: Running, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    got, out, err = run("logs", "--server", remote.url, *args, env=env)
    assert got == code
    assert out == ""
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["logs"], ["drain", "list"]])
def test_no_api_key_with_intake_credentials_in_the_url_says_to_set_one(
    remote: Running, command: list[str]
) -> None:
    """One $HEROLOG_URL for run (the --auth credentials in it) and logs: without
    $HEROLOG_API_KEY, httpx sent those as Basic auth, and the 401 read "refused the API key:
    check HEROLOG_API_KEY", of a key nobody had set."""
    url = remote.url.replace("http://", "http://drain:s3cret@")
    code, out, err = run(*command, env={"HEROLOG_URL": url})
    assert (code, out) == (1, "")
    assert err == (
        "Error: http://drain:***@" + remote.url.removeprefix("http://") + " needs an API key"
        " (401): set HEROLOG_API_KEY to its --api-key (--server came from $HEROLOG_URL)\n"
    )


def test_an_unknown_app_from_herolog_app_says_where_it_came_from(remote: Running) -> None:
    env = herolog_env(HEROLOG_APP="nope", HEROLOG_API_KEY=KEY)
    done = subprocess.run(
        [sys.executable, "-m", "herolog", "logs", "--server", remote.url],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: {remote.url} has no app named 'nope' (-a came from $HEROLOG_APP)\n"
    )


def test_connection_refused_names_the_url() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    code, _out, err = run("logs", "--server", f"http://127.0.0.1:{port}")
    assert code == 1
    assert err.strip() == f"Error: cannot reach http://127.0.0.1:{port}: connection refused"


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nobody listens there


@pytest.mark.parametrize(
    "args", [["logs"], ["apps"], ["drain"], ["drain", "list"], ["run", "true"]], ids=" ".join
)
def test_a_server_from_herolog_url_that_cannot_be_reached_says_where_it_came_from(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable set in a profile long ago, as -a from $HEROLOG_APP is said: else a
    `herolog logs` that goes to the network, unasked, reads as herolog's mistake."""
    # run tries its first batch three times, 0.25 s and 0.5 s apart: not what is tested here.
    monkeypatch.setattr("herolog.remote.SEND_RETRY_S", 0.01)
    url = f"http://127.0.0.1:{closed_port()}"
    code, _, err = run(*args, env={"HEROLOG_URL": url})
    said = f"Error: cannot reach {url}: connection refused"
    assert (code, err) == (1, f"{said} (--server came from $HEROLOG_URL)\n")
    code, _, err = (
        run(*args[:-1], "--server", url, args[-1])
        if args[0] == "run"
        else run(*args, "--server", url)
    )
    assert (code, err) == (1, f"{said}\n")


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_server_on_this_machine_is_not_asked_for_through_a_proxy(
    remote: Running, variable: str
) -> None:
    """A proxy cannot reach this machine's loopback (its own is another): a corporate
    $HTTP_PROXY must not make a serve on 127.0.0.1 unreachable."""
    env = {"HEROLOG_API_KEY": KEY, variable: f"http://127.0.0.1:{closed_port()}"}
    code, out, err = run("logs", "--server", remote.url, "-a", "other", env=env)
    assert (code, err) == (0, "")
    assert out == "2024-03-05T09:00:06.000000+00:00 app[web.1]: from other\n"
    url = remote.url.replace("127.0.0.1", "localhost")
    code, out, err = run("drain", "list", "--server", url, "-a", "other", env=env)
    assert (code, out, err) == (0, "other has no drains.\n", "")


@pytest.mark.parametrize(
    ("variable", "proxy", "why"),
    [
        ("ALL_PROXY", "socks5://127.0.0.1:1080", "herolog cannot use SOCKS proxies"),
        ("all_proxy", "socks://127.0.0.1:1080/", "herolog cannot use SOCKS proxies"),
        ("HTTPS_PROXY", "ftp://proxy.example.com", "not an http:// or https:// URL"),
    ],
)
@pytest.mark.parametrize(
    ("command", "after"), [(["logs"], []), (["drain", "list"], []), (["run"], ["--", "true"])]
)
def test_a_proxy_herolog_cannot_use_is_one_line(
    command: list[str],
    after: list[str],
    variable: str,
    proxy: str,
    why: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GNOME's manual proxy setting exports all_proxy=socks://...: a traceback before."""
    for name in PROXY_VARIABLES:  # this machine's $HTTPS_PROXY would come first
        monkeypatch.delenv(name, raising=False)
    server = "https://logs.example.com:8514"
    code, out, err = run(*command, "--server", server, *after, env={variable: proxy})
    assert (code, out) == (1, "")
    assert err == f"Error: cannot use the proxy {proxy} from ${variable}: {why}\n"


@pytest.mark.parametrize(
    ("given", "scheme"), [("http://", "http"), ("https://", "https"), ("", "http")]
)
def test_an_unreachable_proxy_is_named_not_the_server(given: str, scheme: str) -> None:
    """A proxy reached over TLS (``https://``, as curl takes one) is used as one over plain
    HTTP is, not refused as a proxy herolog cannot use; one without a scheme (HOST:PORT, as
    curl takes it too) is one over plain HTTP."""
    port = closed_port()
    env = {"HTTP_PROXY": f"{given}user:pr0xy-pw@127.0.0.1:{port}", "HEROLOG_API_KEY": KEY}
    for args in (["logs"], ["drain", "list"]):
        code, out, err = run(*args, "--server", "http://logs.example.com:8514", env=env)
        assert (code, out) == (1, "")
        assert err == (
            "Error: cannot reach http://logs.example.com:8514 through the proxy"
            f" {scheme}://user:***@127.0.0.1:{port} ($HTTP_PROXY): connection refused\n"
        )


@pytest.mark.parametrize("no_proxy", [".example.invalid", "other, example.invalid:8514", "*"])
def test_no_proxy_is_honoured(no_proxy: str) -> None:
    env = {"HTTP_PROXY": f"http://127.0.0.1:{closed_port()}", "NO_PROXY": no_proxy}
    code, _out, err = run("logs", "--server", "http://logs.example.invalid:8514", env=env)
    assert code == 1
    assert err.startswith("Error: cannot reach http://logs.example.invalid:8514: ")
    assert "proxy" not in err


@pytest.mark.parametrize(
    ("server", "no_proxy"),
    [
        ("http://logs.example.invalid", "example.invalid:80"),
        ("https://logs.example.invalid", "example.invalid:443"),
    ],
)
def test_no_proxy_with_a_port_names_a_url_without_one_by_its_scheme_s_port(
    server: str, no_proxy: str
) -> None:
    variable = "HTTPS_PROXY" if server.startswith("https:") else "HTTP_PROXY"
    env = {variable: f"http://127.0.0.1:{closed_port()}", "NO_PROXY": no_proxy}
    code, _out, err = run("logs", "--server", server, env=env)
    assert code == 1
    assert err.startswith(f"Error: cannot reach {server}: ")
    assert "proxy" not in err


@pytest.mark.parametrize(
    "no_proxy", ["ample.invalid", "example.invalid:9999", "logs.example.invalid.other"]
)
def test_no_proxy_does_not_name_other_hosts(no_proxy: str) -> None:
    """As curl reads it: an entry is a host and the domains under it, not the end of a name,
    and with a port it names that port only."""
    port = closed_port()
    env = {"HTTP_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": no_proxy}
    code, _out, err = run("logs", "--server", "http://logs.example.invalid:8514", env=env)
    assert code == 1
    assert err == (
        "Error: cannot reach http://logs.example.invalid:8514 through the proxy"
        f" http://127.0.0.1:{port} ($HTTP_PROXY): connection refused\n"
    )


@pytest.mark.parametrize(
    "command", [["logs"], ["logs", "-t"], ["drain", "list"], ["run", "--", "true"]], ids=" ".join
)
@pytest.mark.parametrize(
    ("key", "password"), [("api-k3y-in-full", "pa55word-in-full"), ("k3y", "pwd")], ids=str
)
def test_a_server_that_quotes_the_credentials_back_does_not_get_them_printed(
    command: list[str], key: str, password: str
) -> None:
    """Its answer's first line is the reason shown: an echo service, or a proxy's debug
    page, quotes the request's Authorization header, the API key or the intake's
    password (as Basic); a key or a password of three characters too."""
    import base64

    class Echo(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = f"you sent Authorization: {self.headers['Authorization']}\n".encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

    with serving(Echo) as echo:
        url = f"http://drain:{password}@127.0.0.1:{echo.port}"
        head, after = (command, []) if command[0] != "run" else (["run"], command[1:])
        code, _out, err = run(*head, "--server", url, *after, env={"HEROLOG_API_KEY": key})
    assert code == 1
    assert "you sent Authorization" in err  # the reason is still shown
    basic = base64.b64encode(f"drain:{password}".encode()).decode()
    for secret in (key, password, basic):
        assert secret not in err


def test_a_server_that_takes_the_connection_but_never_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hung server (or one stopped with Ctrl-Z) is reached: "cannot reach" it, after 45 s,
    sent the user checking the URL and the firewall."""
    import socket

    from herolog import remote

    monkeypatch.setattr(remote, "READ_TIMEOUT_S", 0.3)
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()  # the kernel takes connections; nobody reads them
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        code, out, err = run("logs", "--server", url, "-a", "demo")
    assert (code, out) == (1, "")
    assert err == f"Error: {url} took the connection but did not answer (timed out)\n"


def test_not_a_herolog_server(make_server: ServerFactory) -> None:
    running = make_server()
    code, _, err = run("logs", "--server", running.url + "/elsewhere", "-a", "demo")
    assert code == 1
    assert "could not create a log session (404)" in err


def _send_json(handler: http.server.BaseHTTPRequestHandler, status: int, answer: object) -> None:
    """Answer ``handler``'s request with ``answer`` as JSON, as the API does."""
    sent = json.dumps(answer).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(sent)))
    handler.end_headers()
    handler.wfile.write(sent)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["-s", "app", "-s", "heroku"], "source must be a string"),
        (["-t", "-d", "web.1", "-p", "web", "-p", "worker"], "dynos must be a list of dyno names"),
    ],
    ids=["source", "process-type"],
)
def test_repeated_filters_against_a_serve_from_before_them(args: list[str], said: str) -> None:
    """Such a serve refuses the lists that carry them with a 422 of its own words, which
    alone read as a mistake of the command line (exit 2, its usage): the serve is said to
    be older, and what to do."""

    class Older(QuietHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            # As its _session_from checked them: dynos first, then source.
            if not all(isinstance(dyno, str) and dyno for dyno in body.get("dynos", [])):
                message = "dynos must be a list of dyno names"
            else:
                assert not isinstance(body.get("source"), str)
                message = "source must be a string"
            _send_json(self, 422, {"id": "invalid_params", "message": message})

    with serving(Older) as older:
        code, out, err = run("logs", "--server", older.url, "-a", "demo", *args)
    assert (code, out) == (1, "")
    assert err == (
        f"Error: {older.url} takes -s, -d and -p once each ({said}): it is a herolog serve"
        " older than this herolog, from before they could be repeated; upgrade it, or give"
        " each of them once\n"
    )


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[str]:
    """``python -m http.server``: a server that answers, but not as herolog's does."""
    import functools

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(functools.partial(Quiet, directory=str(tmp_path))) as server:
        yield server.url


@pytest.mark.parametrize("args", [["logs"], ["logs", "-t", "-a", "demo"], ["drain", "list"]])
def test_a_server_that_answers_with_a_web_page_is_one_line(
    static_server: str, args: list[str]
) -> None:
    """Its error page is HTML over many lines: the error is one, with the status's reason."""
    code, out, err = run(*args, "--server", static_server)
    assert (code, out) == (1, "")
    doing = "list the drains" if args[0] == "drain" else "create a log session"
    status = "404 File not found" if args[0] == "drain" else "501 Unsupported method ('POST')"
    assert err == (
        f"Error: {static_server} could not {doing} ({status}): it answered with a web page,"
        " not as herolog serve does\n"
    )


@pytest.fixture
def gzip_liar() -> Iterator[str]:
    """A server (a proxy's glitch, say) whose every answer says gzip of a body that is not."""

    class Lying(QuietHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"id": "not gzip"}'
            self.send_response(201 if self.command == "POST" else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = answer

    with serving(Lying) as server:
        yield server.url


@pytest.mark.parametrize(
    "args",
    [
        ["apps"],
        ["logs", "-a", "demo"],
        ["logs", "-t", "-a", "demo"],
        ["drain", "list", "-a", "demo"],
        ["drain", "add", "https://sink.example/x", "-a", "demo"],
        ["drain", "remove", "https://sink.example/x", "-a", "demo"],
    ],
)
def test_an_answer_whose_body_is_not_in_its_content_encoding_is_one_line(
    gzip_liar: str, args: list[str]
) -> None:
    """httpx's DecodingError is no TransportError: every --server command but run's gave a
    traceback for it."""
    code, out, err = run(*args, "--server", gzip_liar)
    assert (code, out) == (1, "")
    assert err == (
        f"Error: {gzip_liar} answered with a body that is not in its Content-Encoding:"
        " Error -3 while decompressing data: incorrect header check\n"
    )


def test_a_drain_url_given_as_the_server_is_not_taken_for_an_unknown_app(
    make_server: ServerFactory,
) -> None:
    """The URL serve prints for drains, pasted as --server: its path is the wrong one."""
    running = make_server()
    store_lines(running.server.config.store_path, "demo", line("x"))
    code, _, err = run("logs", "--server", running.url + "/apps/demo/logs", "-a", "demo")
    assert code == 1
    assert "no app named" not in err
    assert "could not create a log session (404): No such API endpoint" in err


def wait_until_live(server: Server) -> None:
    """Until a tail session of ``server`` has sent its history and follows new lines."""
    subscribers = server.app.broadcaster.subscribers
    wait_until(
        lambda: any(getattr(s, "live", False) for s in list(subscribers)), what="the tail to start"
    )


def asked_for_missing(monkeypatch: pytest.MonkeyPatch, name: str) -> list[None]:
    """A list to which a server in this process adds an item each time it is asked for app
    ``name`` and has none (as a tail waiting for it asks, again and again)."""
    from herolog import drains

    find_app = drains.find_app
    missed: list[None] = []

    def spy(store: SQLiteStore, ref: str) -> Any:
        info = find_app(store, ref)
        if info is None and ref == name:
            missed.append(None)
        return info

    monkeypatch.setattr(drains, "find_app", spy)
    return missed


def newest_id(path: Path) -> int:
    store = SQLiteStore.open(path, create=False)
    try:
        return store.last(LineFilter(), 1)[1]
    finally:
        store.close()


def told_past(server: Server, line_id: int) -> bool:
    """Whether a tail session of ``server`` has sent its client an id to resume after that
    is ``line_id`` or later."""
    return any(reader.told >= line_id for reader in list(server.app.sessions._readers))


def serve(
    path: Path, port: int = 0, api_key: str = KEY, **options: Any
) -> tuple[Server, Callable[[], None]]:
    """A real server on the store at ``path`` (on ``port``: to start one again where it was),
    and what stops it."""
    config = ServeConfig(store_path=path, port=port, api_key=api_key, **options)
    server = Server(config, log=io.StringIO())
    return server, run_in_thread(server)


QUICK = {
    "herolog.remote.BACKOFF_START_S": 0.02,
    "herolog.remote.BACKOFF_CAP_S": 0.2,
    "herolog.remote.WAIT_FOR_APP_S": 0.05,
}
"""herolog with its remote tail waiting less between tries (backing off from 0.02 s to
0.2 s, not 0.25 s to 5 s; asking for an app it waits for every 0.05 s, not every second).
What a tail does through an outage is the same; waiting out the real intervals cost each
test that uses it a second or more."""


def quick_child(*args: str, **env: str) -> Child:
    """``herolog ARGS`` running with :data:`QUICK`'s waits, ``env`` added to its environment."""
    return Child(*args, env=constants_env(QUICK, **env))


def remote_logs(server: Server, *args: str) -> tuple[Child, int]:
    """``herolog logs --server`` of ``server`` with ``args``, running (its waits between
    tries cut: :data:`QUICK`), and the server's port (for a server started again where it
    was)."""
    port = server.http_port
    assert port is not None
    url = f"http://127.0.0.1:{port}"
    child = quick_child("logs", "--server", url, *args, HEROLOG_API_KEY=KEY)
    return child, port


@pytest.mark.subprocess
def test_tail_survives_a_server_restart_without_gaps_or_duplicates(herolog_home: Path) -> None:
    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))

    server, stop = serve(path)
    child, port = remote_logs(server, "-a", "demo", "-n", "1", "--tail")
    try:
        assert child.read_lines(1) == ["2024-03-05T09:00:00.000000+00:00 app[web.1]: before"]
        fill(path, "demo", line("live", second=1))
        assert child.read_lines(1) == ["2024-03-05T09:00:01.000000+00:00 app[web.1]: live"]
        stop()
        fill(path, "demo", *[line(f"while down {i}", second=2) for i in range(3)])
        time.sleep(0.5)
        server, stop = serve(path, port)
        fill(path, "demo", line("after restart", second=3))
        assert [x.split(": ", 1)[1] for x in child.read_lines(4)] == [
            "while down 0",
            "while down 1",
            "while down 2",
            "after restart",
        ]
        child.assert_quiet_for(1.0)
    finally:
        code, err = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT  # 130 in a shell
    assert err.count("reconnecting...") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("proxied", [False, True], ids=["down", "behind a proxy"])
def test_a_tail_backs_off_while_the_server_cannot_be_reached(
    herolog_home: Path, proxied: bool
) -> None:
    """Each try it makes of a server that is down waits twice as long as the one before, up
    to BACKOFF_CAP_S, rather than asking four times a second for as long as it is down; the
    same when a proxy in front of it answers each try 502."""
    from herolog.logs import LogsRequest
    from herolog.remote import RemoteLogs
    from herolog.render import TextRenderer

    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))
    server, stop = serve(path)
    port = server.http_port
    assert port is not None
    shown = threading.Event()
    stopped = threading.Thread(target=lambda: (shown.wait(10), stop()))
    stopped.start()

    class Shown(TextRenderer):
        def write(self, lines: Sequence[StoredLine]) -> None:
            if lines:
                shown.set()

    with contextlib.ExitStack() as proxy:
        # Down: each try after the first wait is refused, or answered 502.
        sleep = _Outage(stopped.join, 7, (proxy, port) if proxied else None)
        request = LogsRequest(LineFilter(app="demo"), 1, tail=True)
        remote = RemoteLogs(
            f"http://127.0.0.1:{port}", KEY, request, Shown(io.StringIO()), sleep=sleep
        )
        try:
            with pytest.raises(_Given):
                remote.run()
        finally:
            shown.set()
            stopped.join()
    assert sleep.waits == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


class _Given(Exception):
    pass


class _Outage:
    """RemoteLogs' sleep for a serve that goes down at the first wait: ``down`` stops it, a
    proxy answering 502 takes its port where ``proxy`` (an exit stack and the port) is
    given, and the ``tries``-th wait ends the run with _Given. ``waits``: each wait asked."""

    def __init__(
        self,
        down: Callable[[], object],
        tries: int,
        proxy: tuple[contextlib.ExitStack, int] | None,
    ) -> None:
        self.down, self.tries, self.proxy = down, tries, proxy
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        if not self.waits:
            self.down()
            if self.proxy is not None:
                stack, port = self.proxy
                stack.enter_context(serving(_BadGateway, port))
        self.waits.append(seconds)
        if len(self.waits) == self.tries:
            raise _Given


class _BadGateway(QuietHandler):
    """A proxy in front of a serve that is down: 502 to every request."""

    def do_GET(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer_empty(502)

    do_POST = do_GET


def test_a_tail_waiting_for_its_app_says_a_proxy_s_502_and_backs_off(herolog_home: Path) -> None:
    """A tail waits for an app the server has not had yet, asking every WAIT_FOR_APP_S; the
    serve behind a proxy goes down, and the proxy answers 502: that is an outage, said once
    ("reconnecting"), with the tries backing off, not more of the app not being there yet."""
    from herolog.logs import LogsRequest
    from herolog.remote import RemoteLogs
    from herolog.render import TextRenderer

    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))
    server, stop = serve(path)
    port = server.http_port
    assert port is not None
    said: list[str] = []

    with contextlib.ExitStack() as proxy:
        # serve is down: the proxy answers in its place from the first wait on.
        sleep = _Outage(stop, 5, (proxy, port))
        request = LogsRequest(LineFilter(app="fresh"), 1, tail=True)
        remote = RemoteLogs(
            f"http://127.0.0.1:{port}",
            KEY,
            request,
            TextRenderer(io.StringIO()),
            on_reconnecting=said.append,
            sleep=sleep,
        )
        try:
            with pytest.raises(_Given):
                remote.run()
        finally:
            if not sleep.waits:  # never down
                stop()
    assert sleep.waits == [1.0, 0.25, 0.5, 1.0, 2.0]
    assert len(said) == 1
    assert "(502" in said[0], said


@pytest.mark.slow
@pytest.mark.subprocess
def test_tail_keeps_trying_through_a_proxy_s_502_while_the_server_restarts(
    herolog_home: Path,
) -> None:
    """A proxy in front of serve answers 502 while serve is down: a tail resuming then is
    refused (not cut off), and goes on trying, backing off, until serve answers again; it
    says reconnecting once for the whole outage and loses no line."""
    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))
    server, stop = serve(path)
    child, port = remote_logs(server, "-a", "demo", "-n", "1", "--tail")
    refused = threading.Event()

    class BadGateway(QuietHandler):
        answered = 0

        def do_GET(self) -> None:
            self.answer_empty(502)
            BadGateway.answered += 1
            if BadGateway.answered >= 3:
                refused.set()

    try:
        assert child.read_lines(1) == ["2024-03-05T09:00:00.000000+00:00 app[web.1]: before"]
        stop()
        fill(path, "demo", line("while down", second=1))
        with serving(BadGateway, port):
            assert refused.wait(30), f"the tail gave up after {BadGateway.answered} 502s"
        server, stop = serve(path, port)
        fill(path, "demo", line("after restart", second=2))
        assert [x.split(": ", 1)[1] for x in child.read_lines(2)] == [
            "while down",
            "after restart",
        ]
        child.assert_quiet_for(1.0)
    finally:
        code, err = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT
    assert err.count("reconnecting...") == 1, err
    assert "Traceback" not in err


def first_line_then_close(server: str, *args: str) -> tuple[bytes, int, bytes]:
    """`herolog logs --server SERVER ARGS | head -1`: the first line, then the status and
    stderr of herolog (which must end by itself, no line arriving meanwhile)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "herolog", "logs", "--server", server, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=herolog_env(HEROLOG_API_KEY=KEY),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return first, proc.returncode, err


@pytest.fixture(scope="module")
def five_thousand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server whose app ``demo`` has 5,000 lines, more than a pipe holds: for the tests
    that only read them (each filling a server of its own cost it half a second)."""
    path = tmp_path_factory.mktemp("five-thousand") / "logs.db"
    with running_server(path, api_key=KEY, history=10_000) as running:
        fill(path, "demo", *(line(f"n{i} " + "x" * 100) for i in range(5000)))
        yield running


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [["-n", "5000"], ["-n", "5000", "--json"], ["-t", "-n", "5000"]])
def test_remote_logs_into_head_end_quietly(five_thousand: Running, args: list[str]) -> None:
    """More lines than a pipe holds, into `head -1`: exit 0, nothing on stderr, each time
    (the reader's going is noticed while lines are being written and read too)."""
    running = five_thousand
    for _ in range(4):
        first, code, err = first_line_then_close(running.url, "-a", "demo", *args)
        assert b"n0 " in first
        assert (code, err) == (0, b"")


@pytest.mark.subprocess
def test_a_quiet_remote_tail_ends_when_its_reader_goes(remote: Running) -> None:
    """`herolog logs --server URL -t | head -1` ends as the local tail does: when head
    exits, not at the next line (which may be hours away), with status 0 and no traceback."""
    first, code, err = first_line_then_close(remote.url, "-a", "demo", "-t")
    assert b"at=info" in first
    assert (code, err) == (0, b"")


@pytest.mark.subprocess
def test_a_quiet_remote_tail_into_a_socket_ends_when_its_reader_goes(remote: Running) -> None:
    """Node's child processes write to a socket, not a pipe: the tail ends when the reader
    closes it too, not at the next line."""
    first, code, err = first_line_into_a_socket(
        ["logs", "--server", remote.url, "-a", "demo", "-t"], herolog_env(HEROLOG_API_KEY=KEY)
    )
    assert b"at=info" in first
    assert (code, err) == (0, b"")


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "env", "status", "said"),
    [
        (["-a", "demo"], {}, 1, "needs an API key (401)"),
        (["-a", "nope"], {"HEROLOG_API_KEY": KEY}, 1, "has no app named 'nope'"),
        (["-a", "demo", "-n", "1501"], {"HEROLOG_API_KEY": KEY}, 2, "is more than the 1,500"),
        (["-a", "nope", "-t"], {"HEROLOG_API_KEY": KEY}, 0, ""),  # waits, until the reader goes
    ],
    ids=["no key", "unknown app", "usage", "tail of an app to come"],
)
def test_a_remote_error_whose_reader_has_gone_keeps_its_status(
    remote: Running, args: list[str], env: dict[str, str], status: int, said: str
) -> None:
    """`herolog logs --server URL -a typo | true`: 0 and nothing said, as though the reader
    had had every line, where locally it is the error and 1; the reader's going ended herolog
    before the server was asked. An error found first keeps its status, as locally."""
    for server in (remote.url, f"http://127.0.0.1:{closed_port()}"):
        if server != remote.url and status != 1:
            continue
        read, write = os.pipe()
        os.close(read)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "herolog", "logs", "--server", server, *args],
                stdin=subprocess.DEVNULL,
                stdout=write,
                stderr=subprocess.PIPE,
                env=herolog_env(**env),
                text=True,
                timeout=30,
            )
        finally:
            os.close(write)
        told = said if server == remote.url else "connection refused"
        assert proc.returncode == status, proc.stderr
        assert (told in proc.stderr) if told else proc.stderr == ""
        assert "Traceback" not in proc.stderr


@pytest.mark.subprocess
def test_remote_json_tail_pipes_into_jq_like_readers(make_server: ServerFactory) -> None:
    remote = make_server(api_key=KEY)  # its own: lines are added to its store
    fill(remote.server.config.store_path, "demo", line("before the tail", second=1))
    child = Child(
        "logs",
        "--server",
        remote.url,
        "-a",
        "demo",
        "-n",
        "0",
        "-t",
        "--json",
        "-s",
        "app",
        env=herolog_env(HEROLOG_API_KEY=KEY),
    )
    try:
        wait_until_live(remote.server)
        fill(
            remote.server.config.store_path,
            "demo",
            line("json me", second=9),
            line("skip", source="heroku"),
        )
        record = json.loads(child.read_lines(1)[0])
        assert record["message"] == "json me"
        assert record["app"] == "demo"
        child.assert_quiet_for(0.5)
    finally:
        child.stop(signal.SIGINT)


@pytest.mark.parametrize(
    ("server", "env", "message"),
    [
        ("http://[::1", {}, "not a server URL"),
        (
            "ftp://example.com",
            {},
            "'ftp://example.com' is not a server URL: http(s)://HOST[:PORT][/PATH]",
        ),
    ],
)
def test_bad_server_settings(server: str, env: dict[str, str], message: str) -> None:
    code, _, err = run("logs", "--server", server, env=env)
    assert code == 2  # a usage error, like any bad value
    assert message in err
    assert "Traceback" not in err


def test_a_key_that_is_not_ascii(remote: Running) -> None:
    code, _, err = run("logs", "--server", remote.url, env={"HEROLOG_API_KEY": "clé"})
    assert code == 1
    assert "HEROLOG_API_KEY must be printable ASCII" in err


@pytest.mark.parametrize("command", [["logs"], ["apps"], ["drain", "list"]], ids=" ".join)
def test_a_key_with_spaces_around_it_is_sent_without_them(
    remote: Running, command: list[str]
) -> None:
    """A key written to a profile or an env file with a space after it: the request never
    left ('cannot reach URL: Illegal header value b'Bearer KEY '', exit 1), and the error
    showed the key."""
    code, _, err = run(*command, "--server", remote.url, env={"HEROLOG_API_KEY": f" {KEY} "})
    assert code == 0, err
    code, _, err = run(*command, "--server", remote.url, env={"HEROLOG_API_KEY": "   "})
    assert code == 1
    assert "needs an API key (401): set HEROLOG_API_KEY" in err


def test_app_names_are_sent_encoded(remote: Running) -> None:
    code, _, err = run("logs", "--server", remote.url, "-a", "x?y", env={"HEROLOG_API_KEY": KEY})
    assert code == 1
    assert "has no app named 'x?y'" in err


class _FakeServer(QuietHandler):
    """Not herolog: a session whose stream is ``records``; what each GET carried is kept."""

    records: ClassVar[list[str]] = []
    gets: ClassVar[list[dict[str, str]]] = []
    stream_headers: ClassVar[dict[str, str]] = {}
    end: ClassVar[str] = ""
    """Sent after the records: herolog's ``event: end``, say."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        port = self.server.server_address[1]  # type: ignore[index]
        body = json.dumps({"logplex_url": f"http://127.0.0.1:{port}/stream"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        type(self).gets.append(dict(self.headers))
        events = "".join(f"id: {i + 1}\ndata: {r}\n\n" for i, r in enumerate(self.records))
        body = (events + self.end).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        for name, value in self.stream_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_server() -> Iterator[tuple[str, type[_FakeServer]]]:
    handler = type("Handler", (_FakeServer,), {"records": [], "gets": [], "stream_headers": {}})
    with serving(handler) as server:
        yield server.url, handler


GOOD = [1, "demo", "2024-03-05T09:14:07+00:00", "2024-03-05T09:14:07.000000Z", "app", "web.1"]
GOOD_TAIL = ["hi", 190, "host", None, None, "2024-03-05T09:14:07.000000Z"]


class _OlderServe(_FakeServer):
    """Not herolog: a serve from before repeated filters, which refused a log session whose
    dynos are not all names or whose source is not a string (its 422), and took any other."""

    posts: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).posts.append(body)
        port = self.server.server_address[1]  # type: ignore[index]
        status, answer = 201, {"logplex_url": f"http://127.0.0.1:{port}/stream"}
        # As its _session_from checked them: dynos first, then source.
        if not all(isinstance(dyno, str) and dyno for dyno in body.get("dynos", [])):
            status, answer = 422, {"message": "dynos must be a list of dyno names"}
        elif not isinstance(body.get("source", ""), str):
            status, answer = 422, {"message": "source must be a string"}
        _send_json(self, status, answer)


def test_names_given_once_go_as_a_serve_from_before_repeated_filters_takes_them() -> None:
    """Each of -s, -d and -p with one name (given once, or the same again) goes as a
    string, as before they could be repeated: only different names need a newer serve."""
    handler: type[_OlderServe] = type(
        "Handler",
        (_OlderServe,),
        {"records": [json.dumps(GOOD + GOOD_TAIL)], "gets": [], "stream_headers": {}, "posts": []},
    )
    with serving(handler) as older:
        got = run(
            "logs", "--server", older.url, "-a", "demo",
            "-s", "app", "-s", "app", "-d", "web.1", "-p", "web", "-p", "web",
        )  # fmt: skip
    assert got == (0, "2024-03-05T09:14:07+00:00 app[web.1]: hi\n", "")
    assert [(post["source"], post["dynos"]) for post in handler.posts] == [
        ("app", ["web.1", "web"])
    ]


def test_the_api_key_is_not_sent_to_the_session_url(
    fake_server: tuple[str, type[_FakeServer]],
) -> None:
    """The session URL carries its own secret and may be another host (--public-url)."""
    url, handler = fake_server
    handler.records = [json.dumps(GOOD + GOOD_TAIL)]
    code, out, err = run("logs", "--server", url, "-a", "demo", env={"HEROLOG_API_KEY": KEY})
    assert (code, err) == (0, "")
    assert out == "2024-03-05T09:14:07+00:00 app[web.1]: hi\n"
    (get,) = handler.gets
    assert "Authorization" not in get
    assert KEY not in json.dumps(get)


@pytest.mark.parametrize(
    ("says", "end", "code", "error"),
    [
        (False, "", 0, ""),  # not herolog's stream: its end is the end, as for the heroku CLI
        (True, "event: end\ndata: history\n\n", 0, ""),
        (True, "", 1, "stopped sending the history before its end (the stream ended): the"
         " lines printed are not all of it"),
    ],
)  # fmt: skip
def test_a_history_that_stops_short_of_its_end_is_an_error(
    fake_server: tuple[str, type[_FakeServer]], says: bool, end: str, code: int, error: str
) -> None:
    """A herolog server says where a history ends: a stream that stops before (the server
    stopped and ended it) exits 1 and says so, not 0 as if what came were all of it."""
    url, handler = fake_server
    handler.records = [json.dumps(GOOD + GOOD_TAIL)]
    handler.stream_headers = {"X-Herolog-Stream": "ends-with-event"} if says else {}
    handler.end = end
    got = run("logs", "--server", url, "-a", "demo", env={"HEROLOG_API_KEY": KEY})
    assert got == (
        code,
        "2024-03-05T09:14:07+00:00 app[web.1]: hi\n",
        error and f"Error: {url} {error}\n",
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_server_that_stops_half_way_through_a_history_is_an_error(herolog_home: Path) -> None:
    """`herolog logs --server` reading more history than the sockets hold when the server
    stops: what came is printed, then a one-line error and exit 1."""
    path = herolog_home / "logs.db"
    count = 100_000
    server, stop = serve(path, history=count)
    fill(path, "demo", *(line(f"n{i} " + "x" * 200) for i in range(count)))
    url = f"http://127.0.0.1:{server.http_port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "herolog", "logs", "--server", url, "-a", "demo", "-n", str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=herolog_env(HEROLOG_API_KEY=KEY),
    )
    try:
        assert proc.stdout is not None
        assert b" n0 " in proc.stdout.readline()  # the history is under way; the pipe is full
        stop()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert 0 < out.count(b"\n") < count - 1
    assert err.decode().startswith(f"Error: {url} stopped sending the history before its end (")
    assert err.decode().endswith("): the lines printed are not all of it\n")
    assert err.count(b"\n") == 1


@pytest.mark.parametrize(
    "record",
    [
        [*GOOD[:5], 7, *GOOD_TAIL],  # a dyno that is not a string
        [*GOOD, {"a": 1}, *GOOD_TAIL[1:]],  # a message that is not a string
        [*GOOD, *GOOD_TAIL[:4], "{bad", *GOOD_TAIL[5:]],  # attributes that are not JSON
        [*GOOD, *GOOD_TAIL[:4], "[1]", *GOOD_TAIL[5:]],  # attributes that are not an object
        [*GOOD, "hi", True, *GOOD_TAIL[2:]],  # a pri that is a boolean
        list(range(12)),
        [*GOOD, "\ud800", *GOOD_TAIL[1:]],  # a lone surrogate: no UTF-8 for it
        [],  # 100,000 nested lists: deeper than json can read
    ],
)
@pytest.mark.parametrize("output", [[], ["--json"], ["--color", "always"]])
def test_records_that_are_not_herolog_s_are_one_line(
    fake_server: tuple[str, type[_FakeServer]], record: list[object], output: list[str]
) -> None:
    url, handler = fake_server
    handler.records = [json.dumps(record) if record else "[" * 100_000 + "]" * 100_000]
    code, out, err = run("logs", "--server", url, "-a", "demo", *output)
    assert code == 1
    assert out == ""
    assert err == f"Error: {url} sent a line herolog cannot read\n"


def test_attributes_another_program_stored_are_shown_as_none(make_server: ServerFactory) -> None:
    """Attributes that are not a JSON object (written with the sqlite3 shell, say) ended
    --json in a traceback, or printed an array, and a server sent them on as they were, so
    that every --server client read of the history failed ('sent a line herolog cannot
    read'). Shown as none, locally and through the server."""
    running = make_server(api_key=KEY)
    path = running.server.config.store_path
    fill(path, "demo", *(line(f"line {i}", second=i) for i in range(4)))
    with closing(sqlite3.connect(path)) as db:
        for line_id, attributes in ((1, "{bad"), (2, "[1, 2]"), (3, ""), (4, '{"k": "v"}')):
            db.execute("UPDATE lines SET attributes = ? WHERE id = ?", (attributes, line_id))
        db.commit()
    for where in (home(running), {"HEROLOG_API_KEY": KEY, "HEROLOG_URL": running.url}):
        code, out, err = run("logs", "-a", "demo", "--json", env=where)
        assert (code, err) == (0, ""), where
        assert [json.loads(x)["attributes"] for x in out.splitlines()] == [{}, {}, {}, {"k": "v"}]
        code, out, err = run("logs", "-a", "demo", env=where)
        assert (code, err, len(out.splitlines())) == (0, "", 4), where


def test_attributes_nested_past_the_fields_depth_are_shown_as_none(
    make_server: ServerFactory,
) -> None:
    """An object another program stored as attributes, nested 300 levels, went into --json's
    record as it was, past the 255 levels jq 1.6 reads: jq stopped at it, and printed none of
    the lines after it. Shown as none, as a message nested so deep has no fields."""
    import shutil

    jq = shutil.which("jq")
    assert jq, "this test runs jq on --json: install it (apt-get install jq)"
    running = make_server(api_key=KEY)
    path = running.server.config.store_path
    fill(path, "demo", *(line(f"line {i}", second=i) for i in range(3)))
    deep = '{"a": ' + "[" * 299 + "]" * 299 + "}"
    kept = '{"a": ' + "[" * (FIELDS_DEPTH - 1) + "]" * (FIELDS_DEPTH - 1) + "}"
    with closing(sqlite3.connect(path)) as db:
        for line_id, attributes in ((1, deep), (2, kept)):
            db.execute("UPDATE lines SET attributes = ? WHERE id = ?", (attributes, line_id))
        db.commit()
    for where in (home(running), {"HEROLOG_API_KEY": KEY, "HEROLOG_URL": running.url}):
        code, out, err = run("logs", "-a", "demo", "--json", env=where)
        assert (code, err) == (0, ""), where
        shown = [json.loads(x)["attributes"] for x in out.splitlines()]
        assert shown == [{}, json.loads(kept), {}], where
        done = subprocess.run([jq, "-r", ".message"], input=out, capture_output=True, text=True)
        assert (done.returncode, done.stdout, done.stderr) == (0, "line 0\nline 1\nline 2\n", "")


def test_an_event_id_that_is_not_herolog_s_is_not_sent_back() -> None:
    """Last-Event-ID goes back in a header: an id that is not one of herolog's numbers
    (``é`` cannot be sent at all) is not kept."""
    from herolog.filters import LineFilter
    from herolog.logs import LogsRequest
    from herolog.remote import RemoteLogs

    request = LogsRequest(LineFilter())
    logs = RemoteLogs("http://127.0.0.1:1", None, request, renderer=None)  # type: ignore[arg-type]
    from httpx_sse import ServerSentEvent

    events = [ServerSentEvent(id=i, event="", data="") for i in ("7", "é", "", "8x")]
    assert list(logs._events(iter(events))) == []
    assert logs.last_id == "7"


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_tail_back_after_its_lines_were_trimmed_is_told_how_many_with_l11(
    herolog_home: Path,
) -> None:
    """The server was down while more lines than the history arrived: the tail resumes from
    the oldest line kept, and first says how many it missed with Heroku's L11 line, as a
    local tail does."""
    path = herolog_home / "logs.db"

    server, stop = serve(path, history=5)
    fill(path, "demo", line("before", second=0))
    child, port = remote_logs(server, "-a", "demo", "-t")
    try:
        assert child.read_lines(1)[0].endswith(" app[web.1]: before")
        stop()
        fill(path, "demo", *[line(f"while down {i}", second=1 + i) for i in range(12)])
        server, stop = serve(path, port, history=5)
        got = child.read_lines(6)
        assert re.fullmatch(
            r"\S+ heroku\[logplex\]: Error L11 \(Tail buffer overflow\) -> This tail session"
            r" dropped 7 messages since \S+\.",
            got[0],
        ), got[0]
        assert [x.split(": ", 1)[1] for x in got[1:]] == [f"while down {i}" for i in range(7, 12)]
        child.assert_quiet_for(1.0)
    finally:
        code, _ = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT  # 130 in a shell


CATCHER = """
import os, signal, sys, threading

def catch() -> None:
    os.read(0, 1)  # the test says when
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

threading.Thread(target=catch, daemon=True).start()
from herolog.__main__ import main
main()
"""
"""``python -c CATCHER ARGS``: herolog ARGS, with a thread that catches a SIGINT of its own
as soon as a byte comes on its standard input."""


def asleep(pid: int) -> bool:
    """Whether the main thread of process ``pid`` stays asleep in a blocking call for a few
    looks 0.1 s apart (Linux)."""
    for _ in range(3):
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] != "S":
            return False
        time.sleep(0.1)
    return True


@pytest.mark.subprocess
def test_a_ctrl_c_caught_just_before_a_quiet_tail_s_read_ends_it_at_once(
    herolog_home: Path,
) -> None:
    """Python runs a signal's handler between two steps of its own, never inside a blocking
    call: a Ctrl-C caught as the tail went back to reading the stream (a line had just come)
    must not wait for the stream's next bytes. Caught by another thread here, the main thread
    is left exactly as it is by one that came too late for its last look: asleep in the read,
    the handler not run. Before the fix the tail went on until the server's keep-alive,
    15 s later."""
    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))
    server, stop = serve(path)
    url = f"http://127.0.0.1:{server.http_port}"
    proc = subprocess.Popen(
        [sys.executable, "-c", CATCHER, "logs", "--server", url, "-a", "demo", "-n", "1", "-t"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=herolog_env(HEROLOG_API_KEY=KEY),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().endswith(b" app[web.1]: before\n")
        wait_until_live(server)
        wait_until(lambda: asleep(proc.pid), what="herolog to wait for the stream")
        proc.stdin.write(b"x")
        proc.stdin.flush()
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        stop()
    assert proc.returncode == -signal.SIGINT, err
    assert err == b""


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_quiet_app_s_tail_back_after_a_restart_is_told_only_of_its_own_lines_trimmed(
    herolog_home: Path,
) -> None:
    """A busy app's lines were trimmed among the quiet app's while the server was down: the
    L11 line counts the quiet app's alone (the server's "mark" of the last id the tail got,
    which it sends back, tells them apart)."""
    path = herolog_home / "logs.db"

    server, stop = serve(path, history=10)
    fill(path, "quiet", line("before", second=0))
    child, port = remote_logs(server, "-a", "quiet", "-t")
    try:
        assert child.read_lines(1)[0].endswith(" app[web.1]: before")
        wait_until_live(server)
        fill(path, "quiet", *[line(f"live {i}", second=1) for i in range(3)])
        fill(path, "busy", *[line(f"busy {i}", second=1) for i in range(20)])
        assert [x.split(": ", 1)[1] for x in child.read_lines(3)] == ["live 0", "live 1", "live 2"]
        stop()
        for n in range(6):  # 30 lines of the quiet app, 20 trimmed before the tail is back
            fill(path, "quiet", *[line(f"q{i}", second=2) for i in range(5 * n, 5 * n + 5)])
            fill(path, "busy", *[line(f"busy {i}", second=2) for i in range(50)])
        server, stop = serve(path, port, history=10)
        got = child.read_lines(11)
        assert "This tail session dropped 20 messages since" in got[0], got[0]
        assert [x.split(": ", 1)[1] for x in got[1:]] == [f"q{i}" for i in range(20, 30)]
        child.assert_quiet_for(1.0)
    finally:
        code, _ = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT  # 130 in a shell


class DropAfter(Relay):
    """A TCP relay in front of a serve that drops the connection (as a network drop does)
    right after passing on the chunk of the server's stream that holds ``words``, before
    whatever the server sent after it, and then holds the connections that come next until
    :meth:`release`."""

    def __init__(self, upstream: int, words: bytes) -> None:
        self.words = words
        self.dropped = threading.Event()
        self.released = threading.Event()
        super().__init__(upstream)

    def _serve(self, client: socket.socket) -> None:
        cutting = not self.dropped.is_set()
        if not cutting:
            self.released.wait()
        with (
            client,
            socket.create_connection(("127.0.0.1", self.upstream)) as server,
            contextlib.suppress(OSError),  # the tail stopped at the end of the test
        ):
            threading.Thread(target=self._pass, args=(client, server), daemon=True).start()
            seen, passed = b"", 0
            while chunk := server.recv(1 << 16):
                seen += chunk
                at = seen.find(self.words) if cutting else -1
                event_end = seen.find(b"\n\n", at) if at >= 0 else -1
                chunk_end = seen.find(b"\r\n", event_end) if event_end >= 0 else -1
                end = chunk_end + 2 if chunk_end >= 0 else len(seen)
                client.sendall(seen[passed:end])
                passed = end
                if chunk_end >= 0:
                    self.dropped.set()
                    for end_of in (client, server):  # close() alone leaves _pass's recv
                        end_of.shutdown(socket.SHUT_RDWR)
                    return

    @staticmethod
    def _pass(client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(1 << 16):
                server.sendall(chunk)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.listener.close()


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_tail_dropped_before_its_last_line_s_mark_counts_only_the_lines_trimmed_since(
    herolog_home: Path,
) -> None:
    """The connection dropped after a line's event and before the server's "mark" of it:
    the mark the tail holds is the line before's. Sent back with the last line's id, it would
    have the server count that line, which the tail printed, as lost too (6, not 5)."""
    path = herolog_home / "logs.db"

    server, stop = serve(path, history=5)
    fill(path, "demo", line("before", second=0))
    port = server.http_port
    assert port is not None
    relay = DropAfter(port, b"the last line before the drop")
    child = quick_child(
        "logs", "--server", f"http://127.0.0.1:{relay.port}", "-a", "demo", "-t",
        HEROLOG_API_KEY=KEY,
    )  # fmt: skip
    try:
        assert child.read_lines(1)[0].endswith(" app[web.1]: before")
        wait_until_live(server)
        fill(path, "demo", line("the last line before the drop", second=1))
        assert child.read_lines(1)[0].endswith(" app[web.1]: the last line before the drop")
        assert relay.dropped.wait(10)
        stop()  # a serve that runs keeps the lines it has not handed out yet from trimming
        fill(path, "demo", *[line(f"while away {i}", second=2) for i in range(10)])
        server, stop = serve(path, port, history=5)
        relay.release()
        got = child.read_lines(6)
        assert "This tail session dropped 5 messages since" in got[0], got[0]
        assert [x.split(": ", 1)[1] for x in got[1:]] == [f"while away {i}" for i in range(5, 10)]
        child.assert_quiet_for(1.0)
    finally:
        code, _ = child.stop(signal.SIGINT)
        relay.close()
        stop()
    assert code == -signal.SIGINT  # 130 in a shell


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_filtered_tail_back_after_a_restart_is_not_told_of_lines_it_did_not_want(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines a -g tail does not want, trimmed before a restart, were not lost to it: it
    resumes past them, with no L11 line, as a local tail does."""
    # How often a tail is told how far it has got is test_sessions' to check; waiting out
    # its second three times here cost 4.5 s.
    monkeypatch.setattr(server_sessions, "PASSED_EVERY_S", 0.05)
    path = herolog_home / "logs.db"

    server, stop = serve(path, history=50)
    fill(path, "demo", line("ERROR before", second=0))
    child, port = remote_logs(server, "-a", "demo", "-t", "-g", "ERROR")
    try:
        assert child.read_lines(1)[0].endswith(" app[web.1]: ERROR before")
        wait_until_live(server)
        for _ in range(3):  # handed out to the tail, then trimmed by the next ones
            fill(path, "demo", *[line(f"fine {i}", second=1) for i in range(100)])
            wait_until(
                lambda: told_past(server, newest_id(path)), what="the tail to be told past them"
            )
        stop()
        server, stop = serve(path, port, history=50)
        fill(path, "demo", line("ERROR after", second=2))
        assert child.read_lines(1) == ["2024-03-05T09:00:02.000000+00:00 app[web.1]: ERROR after"]
        child.assert_quiet_for(1.0)
    finally:
        code, err = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT  # 130 in a shell
    assert err.count("reconnecting...") == 1, err


@pytest.mark.subprocess
def test_a_tail_ends_where_the_server_says_its_until_passed(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's clock ahead of the client's: the server ends the tail at --until by its
    own clock and says so, and the client stops there too, instead of taking the end for a
    dropped connection and reconnecting until its own clock gets there."""
    ahead = timestamps.seconds_until
    monkeypatch.setattr(timestamps, "seconds_until", lambda instant: ahead(instant) - 30)
    running = make_server(api_key=KEY)
    fill(running.server.config.store_path, "demo", line("x"))
    until = (datetime.now(UTC) + timedelta(seconds=8)).isoformat()
    child = Child(
        "logs", "--server", running.url, "-a", "demo", "-t", "--until", until,
        env=herolog_env(HEROLOG_API_KEY=KEY),
    )  # fmt: skip
    assert child.read_lines(1)[0].endswith(" app[web.1]: x")
    code, err = child.stop(timeout=15)
    assert (code, err) == (0, "")


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_tail_of_an_empty_store_outlives_a_server_restart(herolog_home: Path) -> None:
    """A tail started before the server had any line still gets an id to resume after (0):
    when the server restarts (its sessions gone) it resumes from there, with -n 0 too,
    instead of retrying the dead session forever in silence."""
    path = herolog_home / "logs.db"

    server, stop = serve(path)
    child, port = remote_logs(server, "-t", "-n", "0")
    try:
        wait_until_live(server)
        stop()
        fill(path, "demo", line("while down", second=1))
        server, stop = serve(path, port)
        fill(path, "demo", line("after restart", second=2))
        assert [x.split(": ", 1)[1] for x in child.read_lines(2)] == [
            "while down",
            "after restart",
        ]
        child.assert_quiet_for(1.0)
    finally:
        code, err = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT  # 130 in a shell
    assert err.count("reconnecting...") == 1, err


@pytest.mark.subprocess
def test_a_tail_back_at_a_serve_still_stopping_says_reconnecting_once(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopping serve answers a tail that comes back to it before its listener has closed
    (it hands its sessions over first, a store write) with an empty stream that says "come
    back later": that is the same outage, not one that ended and another that began. Under
    load the hand-over outlasted the tail's first 0.25 s wait, and the tail said
    "reconnecting..." twice for one restart; here a store lock held by another process
    (a backup, say) holds the hand-over up."""
    path = herolog_home / "logs.db"

    server, stop = serve(path)
    fill(path, "demo", line("before", second=0))
    child, port = remote_logs(server, "-a", "demo", "-t")
    try:
        assert child.read_lines(1)[0].endswith(" app[web.1]: before")
        wait_until_live(server)
        sessions = server.app.sessions
        stream = sessions.stream
        came_back: list[None] = []

        def spy(*args: Any) -> Any:
            if sessions.closing.is_set():
                came_back.append(None)
            return stream(*args)

        monkeypatch.setattr(sessions, "stream", spy)
        lock = subprocess.Popen(
            [sys.executable, "-c", HOLD_THE_STORE, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert lock.stdout is not None
            assert lock.stdout.readline() == b"locked\n"
            stopping = threading.Thread(target=stop)
            stopping.start()
            wait_until(
                lambda: len(came_back) >= 2, what="the tail to come back to the stopping serve"
            )
        finally:
            lock.communicate(b"", timeout=10)
        stopping.join()
        server, stop = serve(path, port)
        fill(path, "demo", line("after", second=1))
        assert child.read_lines(1) == ["2024-03-05T09:00:01.000000+00:00 app[web.1]: after"]
    finally:
        code, err = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT  # 130 in a shell
    assert err.count("reconnecting...") == 1, err


@pytest.mark.subprocess
def test_a_tail_serve_cannot_read_the_store_for_says_reconnecting_once(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serve that cannot read its store for a tail (out of open files, say) ends the
    stream asking the client to come back: each of those is the same outage, said once and
    backed off from, and the tail's lines come once the store can be read again."""
    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))
    history = server_sessions._history
    failures: list[None] = []

    def failing(*args: Any) -> Any:
        if len(failures) < 3:
            failures.append(None)
            raise StoreError(f"cannot open the store {path}: unable to open database file")
        return history(*args)

    monkeypatch.setattr(server_sessions, "_history", failing)
    server, stop = serve(path)
    child, _ = remote_logs(server, "-a", "demo", "-t")
    try:
        assert child.read_lines(1)[0].endswith(" app[web.1]: before")
        assert len(failures) == 3
        wait_until_live(server)
        fill(path, "demo", line("after", second=1))
        assert child.read_lines(1) == ["2024-03-05T09:00:01.000000+00:00 app[web.1]: after"]
    finally:
        code, err = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT
    assert err.count("reconnecting...") == 1, err


HOLD_THE_STORE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
db.rollback()
"""
"""Holds the store's write lock from another process until its standard input ends."""


class _RestartedServer(QuietHandler):
    """Not herolog: its first session ends before sending any event id (the server stopped
    at once) and is then gone (404); the next session holds one line."""

    posts: ClassVar[list[dict[str, object]]] = []
    gets: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        type(self).posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        port = self.server.server_address[1]  # type: ignore[index]
        stream = f"http://127.0.0.1:{port}/stream{len(self.posts)}"
        body = json.dumps({"logplex_url": stream}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        type(self).gets.append(self.path)
        if self.path == "/stream1" and self.gets.count(self.path) > 1:
            self.send_error(404)
            return
        if self.path == "/stream1":
            body = b"retry: 1000\n\n"
        else:
            body = f"id: 1\ndata: {json.dumps(GOOD + GOOD_TAIL)}\n\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path != "/stream1":
            self.rfile.read(1)  # the tail stays on this one, until it hangs up


@pytest.mark.subprocess
def test_a_tail_that_got_no_id_starts_over_when_its_session_is_gone() -> None:
    handler: type[_RestartedServer] = type(
        "Handler", (_RestartedServer,), {"posts": [], "gets": []}
    )
    with serving(handler) as server:
        child = quick_child("logs", "--server", server.url, "-a", "demo", "-t", "-n", "7")
        try:
            assert child.read_lines(1) == ["2024-03-05T09:14:07+00:00 app[web.1]: hi"]
        finally:
            child.stop(signal.SIGINT)
    # Nothing was shown from the first session: the second one asks for the same history.
    assert [post["lines"] for post in handler.posts] == [7, 7]


class _DowngradedServe(_RestartedServer):
    """Not herolog: its first session ends at once and is then gone (404), as when a serve
    from before repeated filters replaced it, which refuses the next session's list in
    source (its 422); after that it refuses the API key (401)."""

    def do_POST(self) -> None:
        type(self).posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        port = self.server.server_address[1]  # type: ignore[index]
        status, answer = 201, {"logplex_url": f"http://127.0.0.1:{port}/stream1"}
        if len(self.posts) == 2:
            status, answer = 422, {"message": "source must be a string"}
        elif len(self.posts) > 2:
            status, answer = 401, {"message": "Invalid credentials provided."}
        _send_json(self, status, answer)


def test_a_tail_that_a_serve_from_before_repeated_filters_refuses_anew_ends() -> None:
    """Its session re-created, as at the start: it is said, and no retry can help."""
    handler: type[_DowngradedServe] = type(
        "Handler", (_DowngradedServe,), {"posts": [], "gets": []}
    )
    with serving(handler) as server:
        code, out, err = run(
            "logs", "--server", server.url, "-a", "demo", "-t", "-s", "app", "-s", "heroku"
        )
    assert (code, out) == (1, "")
    assert err.endswith(
        f"Error: {server.url} takes -s, -d and -p once each (source must be a string): it is"
        " a herolog serve older than this herolog, from before they could be repeated;"
        " upgrade it, or give each of them once\n"
    )
    assert len(handler.posts) == 2


class _IdleCutServer(_RestartedServer):
    """Not herolog: behind a proxy that cuts a quiet stream (an idle timeout), each stream
    of the one session ends: the first after a line, the second with nothing but a
    keep-alive, and the third holds a second line. Each opens with ``retry: 1000`` as
    serve's do; ``cut`` ends the first two as nginx does at its proxy_read_timeout, its
    chunked answer closed without its last chunk, where without it they end whole."""

    cut: ClassVar[bool] = False

    def do_GET(self) -> None:
        type(self).gets.append(self.path)
        n = len(self.gets)
        record = [*GOOD[:5], "web.1", *GOOD_TAIL]
        record[0], record[6] = n, f"line {n}"
        event = f"id: {n}\ndata: {json.dumps(record)}\n\n".encode()
        body = b"retry: 1000\n\n" + (b": keep-alive\n\n" if n == 2 else event)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if n >= 3:  # the third stays open: the tail stays on it
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.rfile.read(1)  # until the tail hangs up
        elif self.cut:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.mark.subprocess
@pytest.mark.parametrize("cut", [False, True], ids=["ended", "cut"])
def test_a_stream_a_proxy_cuts_with_no_event_is_a_reconnection_said_each_time(cut: bool) -> None:
    """Only a stopping serve's "come back later" (a stream of nothing but SSE's retry) is
    taken for the same outage: a stream cut with no event at all, as a proxy's idle timeout
    cuts a quiet app's, is said as a drop each time, and retried at once, not after a wait
    that grows to 5 s. The ``retry: 1000`` every serve stream opens with made the quiet
    one pass for "come back later", and a stream nginx cut (an error reading it) was taken
    for the outage going on, once a tail had reconnected: both backed off, silently."""
    handler: type[_IdleCutServer] = type(
        "Handler", (_IdleCutServer,), {"posts": [], "gets": [], "cut": cut}
    )
    with serving(handler) as server:
        child = quick_child("logs", "--server", server.url, "-a", "demo", "-t")
        try:
            lines = child.read_lines(2)
        finally:
            _, err = child.stop(signal.SIGINT)
    assert [x.rsplit(" ", 1)[-1] for x in lines] == ["1", "3"]
    assert err.count("reconnecting...") == 2, err


@pytest.mark.subprocess
def test_a_tail_of_an_app_the_server_has_not_had_yet_waits_for_it(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in local mode: -a APP --tail for an app with no line yet (a new deployment's)
    waits for its first line instead of failing; without --tail it is an error."""
    running = make_server(api_key=KEY)
    fill(running.server.config.store_path, "other", line("not this app"))
    missed = asked_for_missing(monkeypatch, "fresh")
    child = quick_child("logs", "--server", running.url, "-a", "fresh", "-t", HEROLOG_API_KEY=KEY)
    try:
        wait_until(
            lambda: len(missed) >= 2, what="the tail, told there is no such app, to ask again"
        )
        assert child.proc.poll() is None, child.stop()[1]
        fill(running.server.config.store_path, "fresh", line("first", second=1))
        assert child.read_lines(1, timeout=15) == [
            "2024-03-05T09:00:01.000000+00:00 app[web.1]: first"
        ]
        fill(running.server.config.store_path, "fresh", line("second", second=2))
        assert child.read_lines(1) == ["2024-03-05T09:00:02.000000+00:00 app[web.1]: second"]
    finally:
        code, err = child.stop(signal.SIGINT)
    assert (code, err) == (-signal.SIGINT, "")


@pytest.mark.subprocess
@pytest.mark.parametrize("num", [["-n", "0"], ["-n", "1"], []])
def test_a_tail_that_waited_for_its_app_shows_every_line_of_it(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, num: list[str]
) -> None:
    """Every line of an app the tail waited for came after the tail started, so each is
    shown, as in local mode, whatever -n asks of the history: none is left behind in the
    second before the tail asks the server again."""
    running = make_server(api_key=KEY)
    path = running.server.config.store_path
    fill(path, "other", line("not this app"))
    missed = asked_for_missing(monkeypatch, "fresh")
    child = quick_child(
        "logs", "--server", running.url, "-a", "fresh", "-t", *num, HEROLOG_API_KEY=KEY
    )
    try:
        wait_until(
            lambda: len(missed) >= 2, what="the tail, told there is no such app, to ask again"
        )
        assert child.proc.poll() is None, child.stop()[1]
        fill(path, "fresh", *[line(f"first {i}", second=1) for i in range(3)])
        assert [x.split(": ", 1)[1] for x in child.read_lines(3, timeout=15)] == [
            "first 0",
            "first 1",
            "first 2",
        ]
        fill(path, "fresh", line("second", second=2))
        assert child.read_lines(1) == ["2024-03-05T09:00:02.000000+00:00 app[web.1]: second"]
        child.assert_quiet_for(0.5)
    finally:
        code, err = child.stop(signal.SIGINT)
    assert (code, err) == (-signal.SIGINT, "")


def tail_left_waiting(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Child, int]:
    """A `herolog logs -a fresh -t` through a server that has answered it has no such app
    yet, and that server stopped since; the tail and the port to start the next on."""
    fill(path, "other", line("not this app"))
    missed = asked_for_missing(monkeypatch, "fresh")
    server, stop = serve(path)
    child, port = remote_logs(server, "-a", "fresh", "-t")
    try:
        # Asked, and answered: a stop answers a request under way. Not a guess at how long
        # the tail takes to start, which on a busy machine was more than the 1.5 s given.
        wait_until(lambda: missed, what="the tail to ask for its app")
    finally:
        stop()
    return child, port


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_tail_waiting_for_its_app_outlives_a_server_restart(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server has answered (it has no such app yet): a restart while the tail waits is
    a drop like any other, not the end of the tail."""
    path = herolog_home / "logs.db"
    child, port = tail_left_waiting(path, monkeypatch)
    time.sleep(1.0)  # the tail tries (QUICK) 0.02 s, 0.04 s, ... 0.2 s apart meanwhile
    assert child.proc.poll() is None, child.stop()[1]
    _, stop = serve(path, port)
    try:
        fill(path, "fresh", line("first", second=1))
        assert child.read_lines(1, timeout=15) == [
            "2024-03-05T09:00:01.000000+00:00 app[web.1]: first"
        ]
    finally:
        code, err = child.stop(signal.SIGINT)
        stop()
    assert code == -signal.SIGINT  # 130 in a shell
    assert err.count("reconnecting...") == 1, err


@pytest.mark.subprocess
def test_a_tail_waiting_for_its_app_stops_when_the_server_comes_back_with_another_key(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart while the tail waits for its app is a drop like any other, but a serve
    back with another --api-key refuses the tail's key, which asking again cannot change:
    the tail stops with the refused key's error and exit status 1, as at its start."""
    path = herolog_home / "logs.db"
    child, port = tail_left_waiting(path, monkeypatch)
    _, stop = serve(path, port, api_key="another-key")
    try:
        code, err = child.stop(timeout=15)
    finally:
        stop()
    assert code == 1, err
    assert err.splitlines()[-1] == (
        f"Error: http://127.0.0.1:{port} refused the API key (401): check HEROLOG_API_KEY"
    )


@pytest.mark.subprocess
@pytest.mark.parametrize("tail", [[], ["-t"]])
def test_an_id_of_no_app_is_refused_even_by_a_tail(remote: Running, tail: list[str]) -> None:
    """As in local mode: an app's id comes with the app, so a tail would wait for ever."""
    no_app = "01234567-89ab-cdef-0123-456789abcdef"
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "logs", "--server", remote.url, "-a", no_app, *tail],
        capture_output=True,
        text=True,
        env=herolog_env(HEROLOG_API_KEY=KEY),
        timeout=30,
    )
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"Error: {remote.url} has no app named {no_app!r}, nor one with that id\n"
    )


@pytest.mark.subprocess
@pytest.mark.parametrize("tail", [[], ["-t"]])
def test_a_name_no_app_can_have_is_refused_even_by_a_tail(remote: Running, tail: list[str]) -> None:
    """A drain URL pasted whole, or a typo with a space: no intake takes such a name, so a
    tail would wait for ever."""
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "logs", "--server", remote.url, "-a", "my app", *tail],
        capture_output=True,
        text=True,
        env=herolog_env(HEROLOG_API_KEY=KEY),
        timeout=30,
    )
    assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
    assert proc.stderr.startswith(
        f"Error: {remote.url} has no app named 'my app', and no app can have that name ("
    )


def test_a_session_url_that_cannot_be_reached_is_named(make_server: ServerFactory) -> None:
    """The API answered, so "cannot reach" the API's URL would send the user looking at the
    wrong thing: the session is served at the server's --public-url, which is named."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    running = make_server(api_key=KEY, public_url=f"http://127.0.0.1:{port}")
    fill(running.server.config.store_path, "demo", line("x"))
    for tail in ([], ["-t"]):
        code, out, err = run(
            "logs", "--server", running.url, "-a", "demo", *tail, env={"HEROLOG_API_KEY": KEY}
        )
        assert (code, out) == (1, "")
        assert err.strip() == (
            f"Error: cannot reach http://127.0.0.1:{port}, where {running.url} serves its log"
            " sessions: connection refused (serve makes their URLs from its --public-url, or"
            " without one from the Host it is asked at: behind a proxy, give it --public-url"
            f" {running.url})"
        )


@pytest.fixture
def proxy_at_a_path() -> Iterator[SimpleNamespace]:
    """A reverse proxy (``url``) serving ``upstream`` (set it) under /herolog/, as nginx's
    ``location /herolog/ { proxy_pass http://127.0.0.1:8514/; proxy_set_header Host $host; }``
    does, and a 404 page elsewhere. It passes whole answers on, enough for a history."""

    where = SimpleNamespace(url="", upstream="")

    class Proxy(QuietHandler):
        def do_GET(self) -> None:
            self._pass_on(b"")

        def do_POST(self) -> None:
            self._pass_on(self.rfile.read(int(self.headers["Content-Length"])))

        def _pass_on(self, body: bytes) -> None:
            if not self.path.startswith("/herolog/"):
                page = b"<html><body><h1>404 Not Found</h1></body></html>"
                self.send_response(404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
            answer = web.request(
                self.command,
                where.upstream + self.path.removeprefix("/herolog"),
                headers=headers,
                content=body,
                timeout=10,
            )
            self.send_response(answer.status_code)
            for name in ("Content-Type", "X-Herolog-Stream"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

    with serving(Proxy) as proxy:
        where.url = proxy.url
        yield where


def test_a_server_behind_a_proxy_at_a_path_says_to_give_it_public_url(
    make_server: ServerFactory, proxy_at_a_path: SimpleNamespace
) -> None:
    """serve hands out session URLs at the Host it was asked at, which has no /herolog/ in
    it: the proxy's 404 page for it said nothing of why, nor where it had been asked."""
    running = make_server(api_key=KEY)
    fill(running.server.config.store_path, "demo", line("x"))
    proxy_at_a_path.upstream = running.url
    proxy = proxy_at_a_path.url
    code, out, err = run(
        "logs", "--server", f"{proxy}/herolog/", "-a", "demo", env={"HEROLOG_API_KEY": KEY}
    )
    assert (code, out) == (1, "")
    at = re.escape(proxy)
    assert re.fullmatch(
        rf"Error: {at}/herolog could not read the log session at {at}/sessions/[^?\s]+"
        r" \(404 Not Found\): it answered with a web page, not as herolog serve does \(behind"
        rf" a proxy at /herolog, give serve --public-url {at}/herolog\)\n",
        err,
    ), err
    assert "sig=" not in err  # the session's secret


def test_public_url_with_a_path_serves_a_proxy_at_that_path(
    make_server: ServerFactory, proxy_at_a_path: SimpleNamespace
) -> None:
    proxy = proxy_at_a_path.url
    running = make_server(api_key=KEY, public_url=f"{proxy}/herolog")
    fill(running.server.config.store_path, "demo", line("x"))
    proxy_at_a_path.upstream = running.url
    code, out, err = run(
        "logs", "--server", f"{proxy}/herolog", "-a", "demo", env={"HEROLOG_API_KEY": KEY}
    )
    assert (code, err) == (0, "")
    assert out == "2024-03-05T09:00:00.000000+00:00 app[web.1]: x\n"


def test_the_wrong_scheme_for_the_server_says_which_to_use(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    certfile, keyfile, _ = own_certificate(tmp_path)
    plain = make_server(api_key=KEY, syslog_port=0)
    tls = make_server(
        api_key=KEY, certfile=certfile, keyfile=keyfile, store_path=tmp_path / "tls.db"
    )
    for url, hint in (
        (plain.url.replace("http:", "https:"), "(it answers plain HTTP: use http://)"),
        (  # its syslog port, which closes a connection that sends no syslog
            f"https://127.0.0.1:{plain.syslog_port}",
            "(it closed the connection during the TLS handshake: is this its HTTPS port? a"
            " herolog serve out of open files does so too, which its log says)",
        ),
        (
            tls.url.replace("https:", "http:"),
            "closes a plain-HTTP connection so: try https://; so does a herolog serve out of"
            " open files, which its log says)",
        ),
    ):
        for command in (["logs"], ["drain", "list"]):
            code, _, err = run(*command, env={"HEROLOG_URL": url, "HEROLOG_API_KEY": KEY})
            assert code == 1
            (message,) = err.splitlines()
            assert message.startswith(f"Error: cannot reach {url}: ")
            assert message.endswith(f"{hint} (--server came from $HEROLOG_URL)"), message


def test_a_certificate_of_ones_own_is_trusted_with_ssl_cert_file(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    certfile, keyfile, cafile = own_certificate(tmp_path)
    running = make_server(api_key=KEY, certfile=certfile, keyfile=keyfile)
    env = {"HEROLOG_URL": running.url, "HEROLOG_API_KEY": KEY}
    code, _, err = run("logs", env=env)
    assert code == 1
    assert "set SSL_CERT_FILE to its PEM file" in err
    code, _, err = run("logs", env={**env, "SSL_CERT_FILE": str(cafile)})
    assert (code, err) == (0, "")


def test_ssl_cert_dir_is_trusted_beside_ssl_cert_file_as_serve_s_drains_trust_it(
    make_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With both set, herolog logs --server trusted $SSL_CERT_FILE's CAs alone (as httpx
    reads them) where serve's drains, as OpenSSL, Python and Go read them, trust both: a
    server whose CA is in $SSL_CERT_DIR was refused by one and trusted by the other."""
    import shutil
    import socket

    from herolog.remote import trusting_context

    openssl = shutil.which("openssl")
    assert openssl, "this test hashes a CA directory with `openssl rehash`: install openssl"
    certfile, keyfile, cafile = own_certificate(tmp_path)
    directory = tmp_path / "cas"
    directory.mkdir()
    shutil.copy(cafile, directory / "own.pem")
    subprocess.run([openssl, "rehash", str(directory)], check=True, timeout=30)
    other = tmp_path / "other"
    other.mkdir()
    _, _, other_ca = own_certificate(other)
    running = make_server(api_key=KEY, certfile=certfile, keyfile=keyfile)
    env = {"SSL_CERT_FILE": str(other_ca), "SSL_CERT_DIR": str(directory)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    port = int(running.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        trusting_context().wrap_socket(sock, server_hostname="127.0.0.1").close()
    code, _, err = run("logs", env={**env, "HEROLOG_URL": running.url, "HEROLOG_API_KEY": KEY})
    assert (code, err) == (0, "")


@pytest.mark.parametrize(
    ("command", "after"), [(["logs"], []), (["drain", "list"], []), (["run"], ["--", "true"])]
)
def test_an_ssl_cert_file_that_cannot_be_read_is_one_line(
    command: list[str], after: list[str], tmp_path: Path
) -> None:
    """A typo in $SSL_CERT_FILE was a traceback, for http:// servers too."""
    missing, not_pem = tmp_path / "nope.pem", tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    for path, why in ((missing, "No such file or directory"), (not_pem, "no certificate")):
        code, out, err = run(
            *command, "--server", "http://127.0.0.1:8514", *after, env={"SSL_CERT_FILE": str(path)}
        )
        assert (code, out) == (1, "")
        assert err.startswith(f"Error: cannot use $SSL_CERT_FILE ({path}): "), err
        assert why in err
        assert len(err.splitlines()) == 1


def test_a_certificate_for_other_names_says_so_not_to_trust_it(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """Trusted already, the certificate is for 127.0.0.1, not localhost: setting
    $SSL_CERT_FILE, as the hint said, could not help."""
    certfile, keyfile, cafile = own_certificate(tmp_path)
    running = make_server(api_key=KEY, certfile=certfile, keyfile=keyfile)
    url = running.url.replace("127.0.0.1", "localhost")
    env = {"HEROLOG_API_KEY": KEY, "SSL_CERT_FILE": str(cafile)}
    for command in (["logs"], ["drain", "list"]):
        code, _, err = run(*command, "--server", url, env=env)
        assert code == 1
        (message,) = err.splitlines()
        assert message.startswith(f"Error: cannot reach {url}: ")
        assert "SSL_CERT_FILE" not in message
        assert message.endswith(
            "(the certificate is not for localhost: use a name it is for in the URL)"
        ), message


@pytest.mark.parametrize("when", ["expired", "not yet valid"])
def test_a_certificate_out_of_its_dates_says_so_not_to_trust_it(
    make_server: ServerFactory, tmp_path: Path, when: str
) -> None:
    """Its CA trusted already ($SSL_CERT_FILE): the hint to set $SSL_CERT_FILE, which the
    error gave after OpenSSL's 'certificate has expired', could not help."""
    day, now = timedelta(days=1), datetime.now(UTC)
    not_before, not_after = (
        (now - 90 * day, now - 3 * day) if when == "expired" else (now + 3 * day, now + 90 * day)
    )
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", not_before=not_before, not_after=not_after)
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    issued.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    running = make_server(api_key=KEY, certfile=certfile, keyfile=keyfile)
    env = {"HEROLOG_API_KEY": KEY, "SSL_CERT_FILE": str(cafile)}
    hint = {
        "expired": "(a certificate the server sent is past its expiry date: renew it and"
        " restart the server, or check this machine's clock)",
        "not yet valid": "(a certificate the server sent is not valid yet: check this machine's"
        " clock)",
    }[when]
    for command, after in ((["logs"], []), (["drain", "list"], []), (["run"], ["--", "true"])):
        code, _, err = run(*command, "--server", running.url, *after, env=env)
        assert code == 1
        (message,) = err.splitlines()
        assert message.startswith(f"Error: cannot reach {running.url}: "), message
        assert f"certificate is {when}" in message or f"certificate has {when}" in message
        assert "SSL_CERT_FILE" not in message
        assert message.endswith(hint), message


def test_https_servers_are_checked_against_the_systems_cas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As the README says and serve's https:// drains do: not against certifi's bundle,
    which httpx trusts by default, so that a serve whose certificate comes from a CA the
    system trusts (a company's own, installed with update-ca-certificates) is reached as
    curl reaches it. $SSL_CERT_FILE, when set, in place of the system's file of CAs."""
    import ssl

    from herolog.remote import api_client, http_client

    def cas(context: ssl.SSLContext) -> list[str]:
        return sorted(repr((c["subject"], c["serialNumber"])) for c in context.get_ca_certs())

    def trusted(client: Any) -> list[str]:
        transport = getattr(client, "_transport", client)
        return cas(transport._pool._ssl_context)

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    system = cas(ssl.create_default_context())
    with api_client("https://logs.example.com", None) as client:
        assert trusted(client) == system
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    with http_client("https://logs.example.com") as client:  # through the proxy too
        (proxied,) = client._mounts.values()
        assert trusted(proxied) == system
    monkeypatch.delenv("HTTPS_PROXY")
    _, _, cafile = own_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cafile))
    with api_client("https://logs.example.com", None) as client:
        assert trusted(client) == cas(ssl.create_default_context(cafile=str(cafile)))


class GoesSilent(Relay):
    """A TCP relay in front of a serve: the connections open when :meth:`silence` is called
    pass nothing more of what the server sends, and stay open (a network gone silent: a cable
    pulled, a NAT that forgot the connection, no reset and no FIN); later ones pass it all."""

    def __init__(self, upstream: int) -> None:
        self.generation = 0
        super().__init__(upstream)

    def silence(self) -> None:
        self.generation += 1

    def _serve(self, client: socket.socket) -> None:
        born = self.generation
        with (
            client,
            socket.create_connection(("127.0.0.1", self.upstream)) as server,
            contextlib.suppress(OSError),  # the tail gave the connection up, or stopped
        ):
            threading.Thread(target=DropAfter._pass, args=(client, server), daemon=True).start()
            while chunk := server.recv(1 << 16):
                if born == self.generation:
                    client.sendall(chunk)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_tail_whose_server_goes_silent_says_so_and_resumes(herolog_home: Path) -> None:
    """A stream on which nothing comes any more, not even serve's keep-alive, counts as
    dropped once READ_TIMEOUT_S has passed: the tail said only "timed out; reconnecting...",
    which tells nothing of what timed out. It says how long the server has said nothing,
    and resumes on a new connection after its last line."""
    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))
    server, stop = serve(path)
    server.app.sessions.keepalive = 0.2  # well within the tail's timeout, here 1 s
    assert server.http_port is not None
    relay = GoesSilent(server.http_port)
    env = constants_env({**QUICK, "herolog.remote.READ_TIMEOUT_S": 1.0}, HEROLOG_API_KEY=KEY)
    url = f"http://127.0.0.1:{relay.port}"
    child = Child("logs", "--server", url, "-a", "demo", "-n", "1", "--tail", env=env)
    try:
        assert child.read_lines(1) == ["2024-03-05T09:00:00.000000+00:00 app[web.1]: before"]
        wait_until_live(server)
        relay.silence()
        fill(path, "demo", line("while silent", second=1))
        assert child.read_lines(1) == ["2024-03-05T09:00:01.000000+00:00 app[web.1]: while silent"]
        fill(path, "demo", line("after", second=2))
        assert child.read_lines(1) == ["2024-03-05T09:00:02.000000+00:00 app[web.1]: after"]
        child.assert_quiet_for(0.5)
    finally:
        code, err = child.stop(signal.SIGINT)
        stop()
        relay.listener.close()
    assert code == -signal.SIGINT
    assert err.count("herolog: the server has said nothing for 1 s; reconnecting...\n") == 1, err
    assert "timed out" not in err, err
    assert "Traceback" not in err, err


@pytest.mark.subprocess
@pytest.mark.parametrize("app", [None, "demo"])
def test_a_tail_is_told_of_the_lines_of_an_app_forgotten_before_serve_read_them(
    herolog_home: Path, serve_process: Callable[..., ServeProcess], app: str | None
) -> None:
    """store forget deletes lines serve has not read back yet (serve stopped here, short of
    CPU under load): its tails, of every app and of that one, are told of them with L11, as
    local tails are, and not of the other app's lines, which they get."""
    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))
    server = serve_process("--port", "0")
    child = quick_child(
        "logs", "--server", server.url, "-n", "0", "--tail", *(["-a", app] if app else [])
    )
    try:
        # Shown once the tail is live: lines now go to it through serve's broadcaster.
        wait_until(
            lambda: fill(path, "demo", line("live", second=1)) or not child.lines.empty(),
            what="the tail to be live",
        )
        fill(path, "demo", line("ready", second=1))
        while not child.read_lines(1)[0].endswith(": ready"):  # every "live" line shown
            pass
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            fill(path, "demo", *[line(f"unread {i}", second=2) for i in range(10)])
            fill(path, "other", line("other", second=3))
            assert invoke("store", "forget", "demo", "--confirm", "demo")[0] == 0
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        fill(path, "demo", line("anew", second=4))
        got = child.read_lines(2 if app else 3)
        child.assert_quiet_for(0.5)
    finally:
        child.stop(signal.SIGINT)
        server.proc.send_signal(signal.SIGTERM)
        server.finish()
    assert re.fullmatch(
        r"\S+ heroku\[logplex\]: Error L11 \(Tail buffer overflow\) -> This tail session"
        r" dropped 10 messages since \S+\.",
        got[0],
    ), got
    assert [x.split(": ", 1)[1] for x in got[1:]] == ([] if app else ["other"]) + ["anew"]


def test_a_pri_another_program_stored_as_a_fraction_is_shown_as_none(
    make_server: ServerFactory,
) -> None:
    """A pri that is a REAL within 0 to 191 (12.5, with the sqlite3 shell) passed the
    SELECT's range check: --json printed "pri":12.5, which no syslog PRI is, and a server
    sent it on, so that every --server client read of the history failed ('sent a line
    herolog cannot read'). Shown as none, as any pri that is no syslog priority."""
    running = make_server(api_key=KEY)
    path = running.server.config.store_path
    fill(path, "demo", *(line(f"line {i}", second=i) for i in range(3)))
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE lines SET pri = 12.5 WHERE id = 1")
        db.execute("UPDATE lines SET pri = 13.0 WHERE id = 2")  # stored as the integer 13
        db.commit()
    for where in (home(running), {"HEROLOG_API_KEY": KEY, "HEROLOG_URL": running.url}):
        code, out, err = run("logs", "-a", "demo", "--json", env=where)
        assert (code, err) == (0, ""), where
        assert [json.loads(x)["pri"] for x in out.splitlines()] == [None, 13, 190], where
        code, out, err = run("logs", "-a", "demo", env=where)
        assert (code, err, len(out.splitlines())) == (0, "", 3), where
