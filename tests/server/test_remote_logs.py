"""``herolog logs --server``: the same lines as local mode, and a tail that outlives the server."""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import pytest

from herolog.server import ServeConfig, Server, run_in_thread
from tests.helpers import Child, herolog_env, invoke, line, store_lines
from tests.server.conftest import Running, ServerFactory

KEY = "remote-key"


run = invoke


fill = store_lines


@pytest.fixture
def remote(make_server: ServerFactory) -> Running:
    running = make_server(api_key=KEY)
    path = running.server.config.store_path
    fill(
        path,
        "demo",
        line("at=info method=GET path=/ status=200", source="heroku", dyno="router", second=1),
        line("hello [not markup]", second=2),
        line("Traceback:\n  boom", dyno="web.2", second=3),
        line("tick", dyno="worker.1", second=4),
        line("ERROR: failed", dyno="webby.1", second=5),
    )
    fill(path, "other", line("from other", second=6))
    return running


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
    code, local, err = run("logs", *args)
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


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (
            ["-a", "demo"],
            {"HEROLOG_API_KEY": "wrong"},
            1,
            "refused the API key (401): check HEROLOG_API_KEY",
        ),
        (["-a", "demo"], {}, 1, "refused the API key (401)"),
        (["-a", "nope"], {"HEROLOG_API_KEY": KEY}, 1, "has no app named 'nope'"),
        (["-a", "demo", "-n", "1501"], {"HEROLOG_API_KEY": KEY}, 2, "1,500 lines the store keeps"),
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


def test_connection_refused_names_the_url() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    code, _out, err = run("logs", "--server", f"http://127.0.0.1:{port}")
    assert code == 1
    assert err.strip() == f"Error: cannot reach http://127.0.0.1:{port}: connection refused"


def test_not_a_herolog_server(make_server: ServerFactory) -> None:
    running = make_server()
    code, _, err = run("logs", "--server", running.url + "/elsewhere", "-a", "demo")
    assert code == 1
    assert "could not create a log session (404)" in err


@pytest.mark.subprocess
def test_tail_survives_a_server_restart_without_gaps_or_duplicates(herolog_home: Path) -> None:
    path = herolog_home / "logs.db"
    fill(path, "demo", line("before", second=0))

    def start(port: int = 0) -> tuple[Server, object]:
        server = Server(ServeConfig(store_path=path, port=port, api_key=KEY), log=io.StringIO())
        return server, run_in_thread(server)

    server, stop = start()
    port = server.http_port
    assert port is not None
    child = Child(
        "logs",
        "--server",
        f"http://127.0.0.1:{port}",
        "-a",
        "demo",
        "-n",
        "1",
        "--tail",
        env=herolog_env(HEROLOG_API_KEY=KEY),
    )
    try:
        assert child.read_lines(1) == ["2024-03-05T09:00:00.000000+00:00 app[web.1]: before"]
        fill(path, "demo", line("live", second=1))
        assert child.read_lines(1) == ["2024-03-05T09:00:01.000000+00:00 app[web.1]: live"]
        stop()  # type: ignore[operator]
        fill(path, "demo", *[line(f"while down {i}", second=2) for i in range(3)])
        time.sleep(0.5)
        server, stop = start(port)
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
        stop()  # type: ignore[operator]
    assert code == 130
    assert err.count("reconnecting...") == 1, err
    assert "Traceback" not in err


@pytest.mark.subprocess
def test_remote_json_tail_pipes_into_jq_like_readers(remote: Running) -> None:
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
        subscribers = remote.server.app.broadcaster.subscribers
        deadline = time.monotonic() + 15
        while not any(getattr(s, "live", False) for s in list(subscribers)):
            assert time.monotonic() < deadline, "the tail did not start"
            time.sleep(0.02)
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
        ("ftp://example.com", {}, "'ftp://example.com' is not a server URL"),
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


def test_app_names_are_sent_encoded(remote: Running) -> None:
    code, _, err = run("logs", "--server", remote.url, "-a", "x?y", env={"HEROLOG_API_KEY": KEY})
    assert code == 1
    assert "has no app named 'x?y'" in err
