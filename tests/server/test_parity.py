"""One parser, one store, one rendering: every path shows the same lines.

Random lines of random apps (unicode, control characters, messages of several lines, long
ones, structured data, odd sources and dynos) are stored, and random filters asked of
``herolog logs`` locally, of ``herolog logs --server``, and of a log session read as plain
text (a client that does not ask for events): local and ``--server`` print the same bytes
(``--json`` and colour too), the plain-text session what local mode prints without colour.
``PARITY_EXAMPLES`` runs more examples than the default suite's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fuzz import strategies
from herolog.cli import cli
from herolog.parser import FramingError, LogLine, Received, frame, parse_logplex
from tests import web
from tests.helpers import RFC3339_PARTS, rfc3339, store_lines
from tests.server.conftest import Running, running_server

KEY = "parity-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
APPS = ["demo", "other", "x-1"]
SOURCES = ["app", "heroku", "app-x", "a.b", "APP", "[app]", "app:", "s" * 48, "é"]
DYNOS = [
    "web.1",
    "web.12",
    "webby.1",
    "router",
    "api",
    "web-7d9f8c6b5-x2kqz",
    "web-api-7d9f8c6b5-x2kqz",
    "worker.3",
    "run.1234",
    "web.",
    "w]b",
    "d" * 128,
]
ODD_TEXT = [
    "\r",
    "\n",
    "\r\n",
    "\n\n",
    "\x00",
    "\x1b[31m",
    "\x1b]0;title\x07",
    "\x85",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\t",
    "   ",
    "\xa0",
    "foo[bar]:   x",
    "at=info a  b",
    '{"a": [1, 2]}',
    'k=v k2="v 2"',
    "data: x",
    "id: 3",
    "event: mark",
    ":",
    "é日本",
    "\U0001f600",
]
SD = ["-", '[a@1 k="v"]', '[a@1 k="v\\"]\\\\"][b@2 x="y"]', '[origin ip="10.0.0.1"]']


@st.composite
def messages(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(
                st.sampled_from(ODD_TEXT),
                st.text(max_size=30),
                st.text(st.characters(codec="utf-8"), max_size=10),
            ),
            max_size=6,
        )
    )
    text = "".join(parts)
    if draw(st.integers(0, 15)) == 0:
        text += "x" * draw(st.sampled_from([5000, 70_000]))
    return text


@st.composite
def syslog_message(draw: st.DrawFn) -> bytes:
    """One RFC 5424 message of Logplex's form or another sender's, built from odd parts."""
    stamp = draw(st.one_of(st.just("-"), st.builds(rfc3339, *RFC3339_PARTS)))
    source = draw(st.sampled_from(SOURCES))
    dyno = draw(st.sampled_from(DYNOS))
    pri = draw(st.integers(0, 191))
    if draw(st.booleans()):
        head = f"<{pri}>1 {stamp} host {source} {dyno} -"
    else:
        msgid = draw(st.sampled_from(["-", "ID47"]))
        head = f"<{pri}>1 {stamp} h.example {source} {dyno} {msgid} {draw(st.sampled_from(SD))}"
    return f"{head} {draw(messages())}\n".encode()


@st.composite
def stored_batches(draw: st.DrawFn) -> list[tuple[str, list[LogLine]]]:
    """Batches of apps' lines, parsed by the intake's parser from frames: built messages,
    the fuzzer's mutated ones, and Logplex batches."""
    batches = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 3))
        if kind <= 1:
            framed = [draw(syslog_message()) for _ in range(draw(st.integers(1, 6)))]
        elif kind == 2:
            framed = draw(strategies.well_framed())
        else:
            framed = draw(strategies.logplex_batch())
        try:
            lines = parse_logplex(frame(framed), Received.at())
        except FramingError:
            continue
        if lines:
            batches.append((draw(st.sampled_from(APPS)), lines))
    return batches


@st.composite
def pattern(draw: st.DrawFn, lines: list[LogLine]) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0 or not lines:
        return draw(st.sampled_from(["x", "é", "^a", "k=v", r"\d+", "[a-z]{3}", "(a|b)", "$"]))
    message = draw(st.sampled_from(lines)).message
    start = draw(st.integers(0, len(message)))
    piece = message[start : start + draw(st.integers(1, 8))]
    # Plain text (no regular-expression syntax, which SQLite finds itself) or escaped.
    return piece if kind == 2 and not re.search(r"[.^$*+?{}\[\]\\|()]", piece) else re.escape(piece)


@st.composite
def filters(draw: st.DrawFn, lines: list[LogLine]) -> list[str]:
    """``herolog logs`` arguments: every filter, each given or not."""
    args: list[str] = []
    if draw(st.booleans()):
        args.append(f"--app={draw(st.sampled_from(APPS))}")
    if draw(st.booleans()):
        args.append(f"--num={draw(st.sampled_from([0, 1, 2, 5, 30, 1500]))}")
    # Names a log-sessions body can carry: the API takes at most 64 KiB of JSON (test_api
    # has its 413), and the fuzzer's lines can have a dyno that long.
    sources = sorted({x.source for x in lines if len(x.source) < 1000} | {"app"})
    dynos = sorted({x.dyno for x in lines if len(x.dyno) < 1000} | {"web"})
    prefixes = sorted({re.split(r"[.-]", d)[0] for d in dynos} - {""})
    for flag, names in (
        ("--source", sources),
        ("--dyno", dynos + prefixes),
        ("--ps", prefixes or dynos),
    ):
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):  # repeated: any of them
            args.append(f"{flag}={draw(st.sampled_from(names))}")
    for flag in ("--grep", "--exclude"):
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
            args.append(f"{flag}={draw(pattern(lines))}")
    times = sorted({x.time for x in lines})
    since = until = None
    if times and draw(st.integers(0, 2)) == 0:
        since = draw(st.sampled_from(times))
        args.append(f"--since={since}")
    if times and draw(st.integers(0, 2)) == 0:
        until = draw(st.sampled_from(times))
        if since is not None and until <= since:
            until = None
        else:
            args.append(f"--until={until}")
    return args


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    path = tmp_path_factory.mktemp("parity") / "logs.db"
    for app in APPS:  # an app the store has never had is an error, -a of each works
        store_lines(path, app, *parse_logplex(b"21 <190>1 - host a b - x"))
    with running_server(path, api_key=KEY) as running:
        yield running


def logs(*args: str, env: dict[str, str]) -> bytes:
    """What ``herolog logs ARGS`` writes, byte for byte (click's ``Result.stdout`` turns
    ``\\r\\n`` into ``\\n``)."""
    result = CliRunner().invoke(cli, ["logs", *args], env=env)
    assert result.exit_code == 0, (args, result.stderr, result.exception)
    return result.stdout_bytes


def plain_session(running: Running, args: list[str]) -> bytes:
    """The lines of a log session that ``args`` ask for, read as curl reads one: text."""
    options = dict(arg[2:].split("=", 1) for arg in args)

    def given(key: str) -> list[str]:
        return [arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{key}=")]

    body: dict[str, Any] = {}
    if "num" in options:
        body["lines"] = int(options["num"])
    for key in ("since", "until"):
        if key in options:
            body[key] = options[key]
    sources = given("source")
    if sources:
        body["source"] = sources if len(sources) > 1 else sources[0]
    body["dynos"] = [names for names in (given("dyno"), given("ps")) if names]
    for key in ("grep", "exclude"):
        body[key] = given(key)
    app = options.get("app")
    path = f"/apps/{app}/log-sessions" if app else "/log-sessions"
    made = web.post(running.url + path, json=body, headers=AUTH)
    assert made.status_code == 201, made.text
    got = web.get(made.json()["logplex_url"], timeout=30)
    assert got.status_code == 200
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    return got.content


def check(running: Running, batches: list[tuple[str, list[LogLine]]], args: list[str]) -> None:
    store = running.server.config.store_path
    for app, lines in batches:
        store_lines(store, app, *lines)
    local_env = {"HEROLOG_HOME": str(store.parent)}
    remote_env = {"HEROLOG_HOME": str(store.parent / "none"), "HEROLOG_API_KEY": KEY}
    for extra in (["--json"], ["--color=always"], []):
        local = logs(*args, *extra, env=local_env)
        remote = logs(*args, *extra, "--server", running.url, env=remote_env)
        assert remote == local, (args, extra)
    assert plain_session(running, args) == local, args


PARITY = settings(max_examples=int(os.environ.get("PARITY_EXAMPLES", "25")))


def test_every_path_shows_the_same_lines(parity: Running) -> None:
    @PARITY
    @given(st.data())
    @example(None)
    def same(data: st.DataObject | None) -> None:
        if data is None:  # a message with carriage returns, read every way
            line = b"<190>1 2024-03-05T09:14:07Z host app web.1 - 50%\r100%\r\nok\r"
            check(parity, [("demo", parse_logplex(frame([line])))], ["--app=demo", "--num=1"])
            return
        batches = data.draw(stored_batches(), label="stored")
        lines = [x for _, batch in batches for x in batch]
        check(parity, batches, data.draw(filters(lines), label="args"))

    same()
