"""herolog drain add/list/remove: on the local registry, and on a server with --server."""

from __future__ import annotations

import base64
import itertools
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from herolog.drains import new_app_warning, scrub
from herolog.filters import LineFilter
from herolog.store import Delivery, open_store
from tests.helpers import fill, invoke
from tests.server.conftest import ServerFactory, running_server

KEY = "drain-key"
SECRET_URL = (
    "https://user:hunter2@intake.example.com/v1/input?dd-api-key=0123456789abcdef&ddsource=heroku"
)
MASKED_URL = "https://user:***@intake.example.com/v1/input?dd-api-key=***&ddsource=heroku"


run = invoke


@pytest.fixture(params=["local", "server"])
def where(request: pytest.FixtureRequest, make_server: ServerFactory) -> dict[str, str]:
    """The environment that points the commands at the local store or at a server."""
    if request.param == "local":
        return {}
    running = make_server(api_key=KEY)
    return {"HEROLOG_URL": running.url, "HEROLOG_API_KEY": KEY}


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module's tests whose commands are all refused."""
    with running_server(tmp_path_factory.mktemp("drains") / "logs.db", api_key=KEY) as running:
        yield running.url


@pytest.fixture(params=["local", "server"])
def where_refused(request: pytest.FixtureRequest) -> dict[str, str]:
    """As ``where``, for a test whose commands are all refused: they register nothing, so
    on a server they share one (a server of their own cost each half a second)."""
    if request.param == "local":
        return {}
    return {"HEROLOG_URL": request.getfixturevalue("shared_server"), "HEROLOG_API_KEY": KEY}


@pytest.fixture(scope="module")
def url_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module's tests that compare drain URLs: each adds its drains to
    an app of its own there (a server of their own cost each half a second)."""
    with running_server(tmp_path_factory.mktemp("urls") / "logs.db", api_key=KEY) as running:
        yield running.url


APPS = itertools.count()


@pytest.fixture(params=["local", "server"])
def where_with_app(request: pytest.FixtureRequest) -> tuple[dict[str, str], str]:
    """As ``where``, with the app the test is to add its drains to: on a server, one of its
    own on the server the module's URL tests share."""
    if request.param == "local":
        return {}, "demo"
    env = {"HEROLOG_URL": request.getfixturevalue("url_server"), "HEROLOG_API_KEY": KEY}
    return env, f"urls-{next(APPS)}"


def test_add_list_remove(where: dict[str, str]) -> None:
    code, out, err = run("drain", "add", SECRET_URL, "-a", "demo", env=where)
    # Heroku would refuse an app it does not have (a typo); herolog takes it, and says so.
    assert (code, err) == (0, f"Warning: {new_app_warning('demo')}\n")
    assert out == f"Successfully added drain {MASKED_URL}\n"
    code, out, err = run(
        "drain", "add", "syslog+tls://logs.example.com:6514", "-a", "demo", "--json", env=where
    )
    assert (code, err) == (0, "")  # demo is an app now
    added = json.loads(out)
    assert added["token"].startswith("d.")
    assert added["app"]["name"] == "demo"
    assert set(added) >= {"id", "token", "url", "app", "created_at"}
    code, out, _ = run("drain", "list", "-a", "demo", env=where)
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == ["=== Drains", ""]
    assert lines[2].startswith(f"{MASKED_URL} (d.")
    assert "hunter2" not in out
    assert "0123456789abcdef" not in out
    # Locally no herolog serve runs on the store: "ok" would pass for delivering.
    status = "ok" if where else "not forwarded: no herolog serve runs on this store"
    assert lines[3] == f"  delivered 0, dropped 0, {status}"
    assert lines[4] == f"syslog+tls://logs.example.com:6514 ({added['token']})"
    code, out, _ = run("drain", "list", "-a", "demo", "--json", env=where)
    listed = json.loads(out)
    assert [d["url"] for d in listed] == [MASKED_URL, "syslog+tls://logs.example.com:6514"]
    # What "not forwarded" says in the text: a serve forwards them (one answered), or none.
    assert [d["delivery"]["forwarded"] for d in listed] == [bool(where)] * 2
    assert added["delivery"]["forwarded"] is bool(where)
    code, out, _ = run("drain", "list", "-a", "demo", "--json", "--show-secrets", env=where)
    assert json.loads(out)[0]["url"] == SECRET_URL
    code, out, _ = run("drain", "remove", added["token"], "-a", "demo", env=where)
    assert (code, out) == (0, "Successfully removed drain syslog+tls://logs.example.com:6514\n")
    code, out, _ = run("drain", "remove", SECRET_URL, "-a", "demo", env=where)
    assert (code, out) == (0, f"Successfully removed drain {MASKED_URL}\n")
    code, out, _ = run("drain", env=where)
    assert (code, out) == (0, "No drains.\n")


def assert_listed_masked(where: dict[str, str], masked: str) -> None:
    """demo's drain is listed as ``masked`` in drain list and its --json, no S3CRET shown."""
    for args in (["list"], ["list", "--json"]):
        code, out, _ = run("drain", *args, "-a", "demo", env=where)
        assert code == 0
        assert masked in out
        assert "S3CRET" not in out


def test_a_password_holding_at_signs_is_masked_whole(where: dict[str, str]) -> None:
    """urlsplit and httpx take the netloc's last "@" as the end of the password."""
    url = "https://user:p@ss@S3CRET@logs.example.com/x"
    code, out, err = run("drain", "add", url, "-a", "demo", env=where)
    assert (code, err) == (0, f"Warning: {new_app_warning('demo')}\n")  # no secret in it
    assert out == "Successfully added drain https://user:***@logs.example.com/x\n"
    assert_listed_masked(where, "https://user:***@logs.example.com/x")


def test_a_token_sent_as_the_user_with_an_empty_password_is_masked(
    where: dict[str, str],
) -> None:
    """curl -u TOKEN: (an API key as the user, no password) is written TOKEN:@ in a URL: the
    user is then the secret, as a lone TOKEN@ is."""
    url = "https://S3CRET-T0KEN:@logs.example.com/x"
    code, out, _ = run("drain", "add", url, "-a", "demo", env=where)
    assert code == 0
    assert out == "Successfully added drain https://***:@logs.example.com/x\n"
    assert_listed_masked(where, "https://***:@logs.example.com/x")
    basic = base64.b64encode(b"S3CRET-T0KEN:").decode()
    answer = f"401: S3CRET-T0KEN (Basic {basic}) refused"
    assert scrub(answer, url) == "401: *** (Basic ***) refused"


def test_a_secret_parameter_is_masked_whatever_the_case_of_its_name(
    where: dict[str, str],
) -> None:
    url = (
        "https://intake.example.com/v1/input?DD-API-KEY=S3CRET&Auth_Token=S3CRET2&ddsource=x"
        "&u=me&p=S3CRET3&Pass=S3CRET4"  # InfluxDB 1.x's user and password, and another's
        "&sig=S3CRET5&PWD=S3CRET6"  # an Azure SAS token's signature, a password
    )
    code, out, _ = run("drain", "add", url, "-a", "demo", env=where)
    assert code == 0
    masked = (
        "https://intake.example.com/v1/input?DD-API-KEY=***&Auth_Token=***&ddsource=x"
        "&u=me&p=***&Pass=***&sig=***&PWD=***"
    )
    assert out == f"Successfully added drain {masked}\n"
    code, out, _ = run("drain", "list", "-a", "demo", "--json", env=where)
    assert [d["url"] for d in json.loads(out)] == [masked]


def test_an_empty_secret_parameter_is_shown_empty(where: dict[str, str]) -> None:
    """A key left out (``?dd-api-key=$KEY`` with KEY unset) is nothing to mask: shown as
    ``***``, it would pass for one that is there."""
    url = "https://intake.example.com/v1/input?dd-api-key=&ddsource=heroku"
    code, out, _ = run("drain", "add", url, "-a", "demo", env=where)
    assert (code, out) == (0, f"Successfully added drain {url}\n")
    assert_listed_masked(where, url)


def test_a_token_in_the_path_is_masked_as_a_password_is(where: dict[str, str]) -> None:
    """Sumo Logic's and Loggly's drain URLs carry their token in the path."""
    token = "ZaVnC4dhaV2a8sjKuH8lN1cmWZS_XbMqA9aQ8bQ-Kp4ZXrx3GxiPvN6HTyGWa0q3_lSWR2wXqY=="
    sumo = f"https://endpoint4.collection.us2.sumologic.com/receiver/v1/http/{token}"
    loggly = "https://logs-01.loggly.com/bulk/8b5c6a3e-1f2d-4c5b-9a8e-7d6c5b4a3f2e/tag/heroku/"
    words = "https://intake.example.com/v1/a-rather-long-descriptive-path-name-with-words"
    for url in (sumo, loggly, words):
        code, out, _ = run("drain", "add", url, "-a", "demo", env=where)
        assert code == 0
        assert "8b5c6a3e" not in out
        assert token not in out
    code, out, _ = run("drain", "list", "-a", "demo", env=where)
    listed = [line.split(" (d.")[0] for line in out.splitlines() if " (d." in line]
    assert listed == [
        "https://endpoint4.collection.us2.sumologic.com/receiver/v1/http/***",
        "https://logs-01.loggly.com/bulk/***/tag/heroku/",
        words,  # a path of words is no token
    ]
    code, out, _ = run("drain", "list", "-a", "demo", "--json", "--show-secrets", env=where)
    assert [d["url"] for d in json.loads(out)] == [sumo, loggly, words]


def test_a_path_token_is_32_characters_or_more(where: dict[str, str]) -> None:
    """README: a path segment of 32 or more letters, digits, -, _ or = with both letters and
    digits among them is masked; one of 31 is not."""
    token = "S3CRET" + "a1" * 13  # 32
    short = "shortb" + "2b" * 12 + "2"  # 31
    assert (len(token), len(short)) == (32, 31)
    url = f"https://logs.example.com/in/{token}/{short}"
    code, out, _ = run("drain", "add", url, "-a", "demo", env=where)
    masked = f"https://logs.example.com/in/***/{short}"
    assert (code, out) == (0, f"Successfully added drain {masked}\n")
    code, out, _ = run("drain", "list", "-a", "demo", "--json", env=where)
    assert [d["url"] for d in json.loads(out)] == [masked]


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pa/S3CRET@logs.example.com",
        "https://user:pa#S3CRET@logs.example.com",
        "https://user:pa?S3CRET@logs.example.com",
        "https:user:S3CRET@logs.example.com",
        "https:user:p@ss/S3CRET@logs.example.com",
        "ftp://user:p@ss/S3CRET@logs.example.com",
        "https://user:p@s#S3CRET@logs.example.com",
        "https://user:p@ss/S3CRET@logs.example.com:99999",
        " https://user:S3CRET@logs.example.com",
        "//user:S3CRET@logs.example.com",
        "user:S3CRET@logs.example.com",
    ],
)
def test_a_url_too_broken_to_split_is_refused_without_its_password(
    where_refused: dict[str, str], url: str
) -> None:
    code, _, err = run("drain", "add", url, "-a", "demo", env=where_refused)
    assert code == 2
    assert "S3CRET" not in err
    assert "***@logs.example.com" in err


def test_plain_drain_lists_every_app(where: dict[str, str]) -> None:
    run("drain", "add", "https://a.example/x", "-a", "one", env=where)
    run("drain", "add", "https://b.example/x", "-a", "two", env=where)
    code, out, _ = run("drain", env=where)
    assert code == 0
    headers = [x for x in out.splitlines() if x.startswith("===")]
    assert headers == ["=== one Drains", "=== two Drains"]
    assert "\n\n=== two Drains\n\nhttps://b.example/x (d." in out  # as heroku drains


def test_plain_drain_works_on_the_server_of_herolog_url(tmp_path: Path) -> None:
    # On a store of its own: one shared with the local store would hide which one was read.
    with running_server(tmp_path / "elsewhere" / "logs.db", api_key=KEY) as running:
        env = {"HEROLOG_URL": running.url, "HEROLOG_API_KEY": KEY}
        assert run("drain", "add", "https://a.example/x", "-a", "one", env=env)[0] == 0
        code, out, _ = run("drain", env=env)
        assert (code, out.splitlines()[0]) == (0, "=== one Drains")


def test_plain_drain_takes_the_options_of_drain_list(where: dict[str, str]) -> None:
    run("drain", "add", "https://a.example/x", "-a", "one", env=where)
    run("drain", "add", "https://b.example/x", "-a", "two", env=where)
    code, out, _ = run("drain", "-a", "two", env=where)  # as heroku drains -a two
    assert (code, out.splitlines()[0]) == (0, "=== Drains")
    assert "https://b.example/x (d." in out
    assert "a.example" not in out
    code, out, _ = run("drain", "--json", env=where)
    assert [d["app"]["name"] for d in json.loads(out)] == ["one", "two"]
    code, _, err = run("drain", "-a", "two", "remove", "https://b.example/x", env=where)
    assert code == 2
    assert "-a/--app goes after the subcommand: herolog drain remove ... -a/--app" in err


def test_local_drain_list_says_whether_a_server_forwards(make_server: ServerFactory) -> None:
    run("drain", "add", "https://a.example/x", "-a", "demo")
    assert run("drain")[1].endswith(", not forwarded: no herolog serve runs on this store\n")
    make_server()  # on the store herolog drain reads
    deadline = time.monotonic() + 10
    while not run("drain")[1].endswith(", ok\n"):  # once it has taken the forwarding lease
        assert time.monotonic() < deadline, run("drain")[1]
        time.sleep(0.05)


def test_the_last_error_reads_the_same_locally_and_through_a_server(
    where: dict[str, str],
) -> None:
    """Its time as the Platform API writes times (whole seconds, Z), in either mode."""
    code, added, _ = run("drain", "add", "https://a.example/x", "-a", "demo", "--json", env=where)
    assert code == 0

    def listed(error: str, at: str | None) -> str:
        """``drain -a demo``'s output once the drain's last error is ``error`` at ``at``."""
        store = open_store()  # the server's store too
        try:
            failed = Delivery(12345, 0, True, error, at)
            assert store.save_deliveries({json.loads(added)["id"]: failed})
        finally:
            store.close()
        code, out, _ = run("drain", "-a", "demo", env=where)
        assert code == 0
        return out

    out = listed("503 Service Unavailable", "2026-12-04T10:00:01.123456Z")
    assert out.endswith(", last error 2026-12-04T10:00:01Z: 503 Service Unavailable\n"), out
    assert "  delivered 12,345, dropped 0, " in out, out
    # Failing now: retrying, where a server forwards it; locally, where none runs, not forwarded.
    state = "retrying" if "HEROLOG_URL" in where else "not forwarded: no herolog serve runs"
    assert f", {state}" in out, out
    # A store an older herolog wrote may hold an error without its time.
    out = listed("503 Service Unavailable", None)
    assert out.endswith(", last error ?: 503 Service Unavailable\n"), out
    # A drain's answer is any text: its escape sequences must not drive the terminal.
    out = listed("502 \x1b]0;owned\x07\x1b[2J", "2026-12-04T10:00:01Z")
    assert out.endswith(", last error 2026-12-04T10:00:01Z: 502 \\x1b]0;owned\\x07\\x1b[2J\n"), out


def test_waiting_counts_the_lines_trimmed_past_the_position_less_the_drops_ahead() -> None:
    """delivered + dropped + waiting is every line the app stored since the drain was added:
    those the ring buffer trimmed before a server read them are waiting too (the next one
    counts them as dropped), and drops past the position are not counted twice."""
    code, out, _ = run("drain", "add", "https://a.example/x", "-a", "demo", "--json")
    assert code == 0
    store = open_store()
    try:
        store.set_history(5)
        fill(store, "demo", [f"line {i}" for i in range(10)])
        assert len(store.last(LineFilter(), 100)[0]) == 5
        code, listed, _ = run("drain", "list", "-a", "demo", "--json")
        assert json.loads(listed)[0]["delivery"]["waiting"] == 10
        # A server delivered the first line (id 1) and dropped one past it.
        state = Delivery(1, 1, False, None, None, through=1, dropped_ahead=1)
        assert store.save_deliveries({json.loads(out)["id"]: state})
    finally:
        store.close()
    code, out, _ = run("drain", "list", "-a", "demo", "--json")
    assert code == 0
    assert json.loads(out)[0]["delivery"]["waiting"] == 8


def test_an_app_is_named_by_its_id_too(where: dict[str, str]) -> None:
    """As the API (and the heroku CLI) and herolog logs -a take it: not a new app named
    after the id."""
    code, out, _ = run("drain", "add", "https://a.example/x", "-a", "demo", "--json", env=where)
    assert code == 0
    app_id = json.loads(out)["app"]["id"]
    code, out, _ = run("drain", "add", "https://b.example/y", "-a", app_id, "--json", env=where)
    assert (code, json.loads(out)["app"]["name"]) == (0, "demo")
    code, out, _ = run("drain", "list", "-a", app_id, "--json", env=where)
    assert [d["url"] for d in json.loads(out)] == ["https://a.example/x", "https://b.example/y"]
    code, _, err = run("drain", "add", "https://b.example/y", "-a", app_id, env=where)
    assert code == 1
    assert err == "Error: demo already has the drain https://b.example/y\n"
    assert "HEROLOG_URL" not in err  # an answer about the drain, not about the server
    assert run("drain", "remove", "https://b.example/y", "-a", app_id, env=where)[0] == 0
    code, out, _ = run("drain", "--json", env=where)
    assert [(d["app"]["name"], d["url"]) for d in json.loads(out)] == [
        ("demo", "https://a.example/x")
    ]


def test_an_id_of_no_app_is_not_made_an_app(where: dict[str, str]) -> None:
    """An app's id with a typo in it names no app: refused, locally as by the API, not a
    drain registered for a new app named after the id, which would never get a line."""
    typo = "0f0e0d0c-0b0a-4909-8807-060504030201"
    code, _, err = run("drain", "add", "https://a.example/x", "-a", typo, env=where)
    assert code == 1
    assert f"no app named '{typo}'" in err
    assert json.loads(run("drain", "list", "--json", env=where)[1]) == []


def test_an_app_with_no_drains_yet_lists_none(where_refused: dict[str, str]) -> None:
    """An app comes into being with its first line or drain: a provisioning script that
    lists an app's drains before adding one gets none, from a server as locally, not an
    error from one and an empty list from the other."""
    assert run("drain", "list", "-a", "new", env=where_refused) == (0, "new has no drains.\n", "")
    assert run("drain", "list", "-a", "new", "--json", env=where_refused) == (0, "[]\n", "")


def test_the_app_comes_from_herolog_app(where: dict[str, str]) -> None:
    code, _, _ = run("drain", "add", "https://a.example/x", env={**where, "HEROLOG_APP": "fromenv"})
    assert code == 0
    code, out, _ = run("drain", "list", "--json", env=where)
    assert [d["app"]["name"] for d in json.loads(out)] == ["fromenv"]


def test_a_url_twice_is_an_error_not_a_duplicate(where: dict[str, str]) -> None:
    """The error names the app and the drain, through a server too, whose API answers in
    Heroku's words, "Url has already been taken": a script that adds several drains could
    not tell from its log which one was there."""
    assert run("drain", "add", SECRET_URL, "-a", "demo", env=where)[0] == 0
    code, out, err = run("drain", "add", SECRET_URL, "-a", "demo", env=where)
    assert (code, out, err) == (1, "", f"Error: demo already has the drain {MASKED_URL}\n")
    other_way = SECRET_URL.replace("intake.example.com", "INTAKE.example.com:443")
    code, out, err = run("drain", "add", other_way, "-a", "demo", env=where)
    assert (code, out) == (1, "")
    assert err == (
        f"Error: demo already has the drain {MASKED_URL}"
        f" ({MASKED_URL.replace('intake.example.com', 'INTAKE.example.com:443')} is the same"
        " URL written another way)\n"
    )
    assert len(json.loads(run("drain", "list", "--json", env=where)[1])) == 1


def test_a_url_taken_on_a_server_that_then_lists_no_such_drain_is_still_exit_1() -> None:
    """A server answers "Url has already been taken" (422), and the drain is gone by the time
    it is looked up to be named (removed meanwhile): the server's words are the error, with
    the exit status of a URL the app has already, 1, not 2 (for a URL that is wrong)."""
    from tests.helpers import QuietHandler, serving

    class Taken(QuietHandler):
        def _answer(self, status: int, body: bytes) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            taken = {"id": "invalid_params", "message": "Url has already been taken"}
            self._answer(422, json.dumps(taken).encode())

        def do_GET(self) -> None:
            self._answer(200, b"[]")

    with serving(Taken) as server:
        code, out, err = run("drain", "add", SECRET_URL, "-a", "demo", "--server", server.url)
    assert (code, out, err) == (1, "", "Error: Url has already been taken\n")


def test_a_provisioning_script_adds_and_removes_a_drain_with_each_run(
    where: dict[str, str],
) -> None:
    """--if-missing and --if-exists: run twice, a script's add and remove succeed both
    times (exit 0), and the token a script reads from --json is the drain's each time, with
    whether that run added it."""
    code, out, _ = run(
        "drain", "add", SECRET_URL, "-a", "demo", "--if-missing", "--json", env=where
    )
    assert (code, json.loads(out)["added"]) == (0, True)
    token = json.loads(out)["token"]
    for _ in range(2):
        code, out, err = run(
            "drain", "add", SECRET_URL, "-a", "demo", "--if-missing", "--json", env=where
        )
        assert (code, err) == (0, "")
        again = json.loads(out)
        assert (again["token"], again["url"], again["added"]) == (token, MASKED_URL, False)
    code, out, err = run("drain", "add", SECRET_URL, "-a", "demo", "--if-missing", env=where)
    assert (code, out, err) == (0, f"demo already has the drain {MASKED_URL}\n", "")
    # Written another way, it is the same drain, shown as it was first written.
    other_way = SECRET_URL.replace("intake.example.com", "INTAKE.example.com:443")
    code, out, _ = run("drain", "add", other_way, "-a", "demo", "--if-missing", env=where)
    assert (code, out) == (0, f"demo already has the drain {MASKED_URL}\n")
    assert len(json.loads(run("drain", "list", "--json", env=where)[1])) == 1
    # Anything but the drain being there already is still an error.
    code, _, err = run("drain", "add", "ftp://x", "-a", "demo", "--if-missing", env=where)
    assert code == 2
    code, out, _ = run("drain", "remove", SECRET_URL, "-a", "demo", "--if-exists", env=where)
    assert (code, out) == (0, f"Successfully removed drain {MASKED_URL}\n")
    for _ in range(2):
        code, out, err = run("drain", "remove", SECRET_URL, "-a", "demo", "--if-exists", env=where)
        assert (code, out, err) == (0, f"demo has no drain {MASKED_URL}\n", "")
    code, out, _ = run("drain", "remove", token, "-a", "nosuchapp", "--if-exists", env=where)
    assert (code, out) == (0, f"nosuchapp has no drain {token}\n")
    assert json.loads(run("drain", "list", "--json", env=where)[1]) == []


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ("https://Example.com:443/x", "https://example.com/x"),
        ("HTTPS://logs.example.com", "https://logs.example.com/"),
        ("https://logs.example.com./x", "https://logs.example.com/x"),
        ("https://logs.example.com/%7Euser/x", "https://logs.example.com/~user/x"),
        ("https://logs.example.com/a%2fb", "https://logs.example.com/a%2Fb"),
        ("https://b\u00fccher.example/x", "https://xn--bcher-kva.example/x"),
        ("http://[0:0::1]:80/x", "http://[::1]/x"),
        ("syslog+tls://logs.example.com:6514", "syslog+tls://LOGS.example.com"),
        ("syslog://logs.example.com:514", "syslog+tcp://logs.example.com:514/"),
    ],
    ids=[
        "host-case-port",
        "scheme-empty-path",
        "dot",
        "percent",
        "escape-case",
        "idna",
        "ipv6",
        "tls",
        "tcp",
    ],
)
def test_a_url_written_another_way_is_the_same_drain(
    where_with_app: tuple[dict[str, str], str], first: str, again: str
) -> None:
    where, app = where_with_app
    assert run("drain", "add", first, "-a", app, env=where)[0] == 0
    code, out, err = run("drain", "add", again, "-a", app, env=where)
    assert (code, out) == (1, "")
    assert len(err.strip().splitlines()) == 1
    assert "already" in err
    listed = json.loads(run("drain", "list", "--json", env=where)[1])
    assert [d["url"] for d in listed if d["app"]["name"] == app] == [first]  # as typed
    # Removing it by the other form finds it.
    code, out, _ = run("drain", "remove", again, "-a", app, env=where)
    assert (code, out) == (0, f"Successfully removed drain {first}\n")


@pytest.mark.parametrize(
    ("first", "other"),
    [
        ("https://logs.example.com/X", "https://logs.example.com/x"),
        ("https://user:a@logs.example.com/x", "https://User:a@logs.example.com/x"),
        ("https://logs.example.com/x?a=1", "https://logs.example.com/x?A=1"),
        ("https://logs.example.com:8443/x", "https://logs.example.com/x"),
        ("http://logs.example.com/x", "https://logs.example.com/x"),
        ("https://logs.example.com/a%2Fb", "https://logs.example.com/a/b"),
        ("syslog+tls://logs.example.com", "syslog+tls://logs.example.com#insecure"),
    ],
    ids=["path-case", "user", "query", "port", "scheme", "reserved-escape", "fragment"],
)
def test_urls_that_differ_where_it_matters_are_two_drains(
    where_with_app: tuple[dict[str, str], str], first: str, other: str
) -> None:
    where, app = where_with_app
    assert run("drain", "add", first, "-a", app, env=where)[0] == 0
    assert run("drain", "add", other, "-a", app, env=where)[0] == 0
    listed = json.loads(run("drain", "list", "--json", "--show-secrets", env=where)[1])
    assert [d["url"] for d in listed if d["app"]["name"] == app] == [first, other]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://logs.example.com/x", "unsupported drain URL scheme 'ftp'"),
        ("https:///path-only", "has no host"),
        ("syslog://logs.example.com:514/path", "takes no path"),
        ("syslog://logs.example.com:514?x=1", "takes no path or query"),
        ("syslog+tcp://logs.example.com", "needs a port"),
        ("not a url", "not a URL"),
        ("https://logs.example.com:0/x", "port must be 1 to 65535"),
        ("syslog+tls://logs.example.com:0", "port must be 1 to 65535"),
        ("https://logs.example.com:65536/x", "port must be 1 to 65535"),
        ("syslog://logs.example.com:5l4", "port must be 1 to 65535"),
        ("https://u:pa?ss@logs.example.com/x", "has an @ after its host"),
        ("https://10.0.0.256/x", "host is not a valid host name"),
        ("https://10.0.0.0x100/x", "host is not a valid host name"),  # as inet_aton reads it
        ("syslog+tls://192.168.1.10.5:6514", "host is not a valid host name"),
        # "logs" in full-width letters, as an IME may type them
        ("https://\uff4c\uff4f\uff47\uff53.example.com/x", "host is not a valid host name"),
        ("https://logs.example.com/x?k=" + "v" * 9000, "is over 8,192 characters"),
        # Papertrail's HOST:PORT, once taken for a URL of the scheme logs7.papertrailapp.com
        ("logs7.papertrailapp.com:12345", "not a URL: logs7.papertrailapp.com:12345 (no scheme"),
        ("localhost:5514", "not a URL: localhost:5514 (no scheme"),
    ],
    ids=[
        "ftp",
        "no-host",
        "syslog-path",
        "syslog-query",
        "syslog-port",
        "not-url",
        "port-0",
        "tls-port-0",
        "port-65536",
        "port-typo",
        "question-mark-in-password",
        "ipv4-typo",
        "ipv4-hex-typo",
        "ipv4-too-long",
        "idna-fullwidth",
        "huge",
        "host-and-port",
        "localhost-and-port",
    ],
)
def test_bad_urls_exit_2_and_register_nothing(
    where_refused: dict[str, str], url: str, message: str
) -> None:
    code, out, err = run("drain", "add", url, "-a", "demo", env=where_refused)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert message in err
    assert json.loads(run("drain", "list", "--json", env=where_refused)[1]) == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "https://drain:s3cret-pa55@logs.example.com/x?token=t0ken&k=" + "v" * 9000,
            "is over 8,192 characters: https://***@logs.example.com/x?token=***&k=v",
        ),
        (
            "https://drain:s3cret-pa55@logs.example.com/x y?token=t0ken",
            "not a URL (it holds a space or a control character):"
            " 'https://***@logs.example.com/x y?token=***'",
        ),
        (
            "https://logs.example.com/x?token=t0ken ",
            "not a URL (it holds a space or a control character):"
            " 'https://logs.example.com/x?token=***'",
        ),
    ],
    ids=["huge", "space", "trailing space"],
)
def test_a_bad_url_is_quoted_without_its_secrets(
    where_refused: dict[str, str], url: str, message: str
) -> None:
    """A URL refused is quoted masked, as every URL in an error is: one read from standard
    input too, which is not among the arguments that every error is masked of."""
    import subprocess
    import sys

    from tests.helpers import herolog_env

    for args, stdin in [((url,), None), (("-",), url + "\n")]:
        proc = subprocess.run(
            [sys.executable, "-m", "herolog", "drain", "add", *args, "-a", "demo"],
            input=stdin,
            capture_output=True,
            text=True,
            env=herolog_env(**where_refused),
            timeout=60,
        )
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
        assert message in proc.stderr
        assert "s3cret" not in proc.stderr
        assert "t0ken" not in proc.stderr


def test_a_url_of_the_longest_length_is_taken(where: dict[str, str]) -> None:
    start = "https://logs.example.com/x?k="
    url = start + "v" * (8192 - len(start))  # "over 8,192 characters" is refused, not this
    code, _, err = run("drain", "add", url, "-a", "demo", env=where)
    assert (code, err) == (0, f"Warning: {new_app_warning('demo')}\n")
    listed = json.loads(run("drain", "list", "--json", env=where)[1])
    assert [d["url"] for d in listed] == [url]


def test_a_long_url_of_characters_that_are_escaped_is_found_and_removed(
    where_with_app: tuple[dict[str, str], str],
) -> None:
    """Through a server the drain is named in the request's path, escaped: a URL within the
    8,192-character limit grew to 96 KB there, over httpx's limit, and finding or removing it
    failed with `not a server URL: http://127.0.0.1:PORT (URL too long)`."""
    env, app = where_with_app
    url = "https://logs.example.com/" + "\N{GRINNING FACE}" * 8000
    assert run("drain", "add", url, "-a", app, env=env)[0] == 0
    code, out, err = run("drain", "add", url, "-a", app, "--if-missing", "--json", env=env)
    assert (code, json.loads(out)["url"]) == (0, url), err
    written_otherwise = url.replace("logs.example.com", "LOGS.example.com:443")
    code, out, err = run("drain", "remove", written_otherwise, "-a", app, env=env)
    assert (code, out) == (0, f"Successfully removed drain {url}\n"), err
    code, _, err = run("drain", "remove", url, "-a", app, env=env)
    assert (code, err) == (1, f"Error: {app} has no drain {url}\n")


def test_a_long_url_removes_the_drain_written_so_of_two_an_older_herolog_kept(
    where: dict[str, str], herolog_home: Path
) -> None:
    """A store an older herolog filled may hold two drains whose URLs differ in the host's
    case only: removing one by its URL removes that one, through a server too, where a URL
    too long for a request's path is looked for in the app's list (which took the first
    drain of the two that was the same drain, the other one); written a third way, neither."""
    url = "https://logs.example.com/" + "\N{GRINNING FACE}" * 8000
    kept = url.replace("logs.example.com", "LOGS.example.com")
    assert run("drain", "add", kept, "-a", "demo", env=where)[0] == 0
    with closing(sqlite3.connect(herolog_home / "logs.db")) as db, db:
        db.execute(
            "INSERT INTO drains (id, token, app_id, url, created_at, updated_at)"
            " SELECT 'an-older-one', 'd.older', app_id, ?, created_at, updated_at FROM drains",
            (url,),
        )
    third = url.replace("logs.example.com", "Logs.example.com")
    code, _, err = run("drain", "remove", third, "-a", "demo", env=where)
    assert (code, err) == (1, f"Error: demo has no drain {third}\n")
    code, out, err = run("drain", "remove", url, "-a", "demo", env=where)
    assert (code, out) == (0, f"Successfully removed drain {url}\n"), err
    listed = json.loads(run("drain", "list", "--json", env=where)[1])
    assert [d["url"] for d in listed] == [kept]


def test_a_drain_is_found_by_its_id_in_upper_case_too(where: dict[str, str]) -> None:
    """README: the drain's id works in either case, as an app's does."""
    url = "https://logs.example.com/x"
    code, out, _ = run("drain", "add", url, "-a", "demo", "--json", env=where)
    assert code == 0
    drain_id = json.loads(out)["id"]
    code, out, _ = run("drain", "remove", drain_id.upper(), "-a", "demo", env=where)
    assert (code, out) == (0, f"Successfully removed drain {url}\n")


def test_removing_what_is_not_there(where: dict[str, str]) -> None:
    run("drain", "add", "https://a.example/x", "-a", "demo", env=where)
    code, _, err = run("drain", "remove", "d.nope", "-a", "demo", env=where)
    assert code == 1
    assert err == "Error: demo has no drain d.nope\n"


def test_if_exists_leaves_other_errors_errors() -> None:
    """--if-exists takes a drain that is not there for done, not a server out of reach."""
    args = ("drain", "remove", "https://a.example/x", "-a", "demo", "--if-exists")
    code, out, err = run(*args, "--server", "http://127.0.0.1:9")
    assert (code, out) == (1, "")
    assert err == "Error: cannot reach http://127.0.0.1:9: connection refused\n"


def test_removing_from_no_store_makes_none(herolog_home: Path, tmp_path: Path) -> None:
    """A teardown script's drain remove --if-exists on a machine with no store yet made an
    empty store (and its directory) to say the drain was not there; where the directory
    could not be made, it failed (exit 1) where there was plainly no drain."""
    for extra, status, shown in (((), 1, "err"), (("--if-exists",), 0, "out")):
        code, out, err = run("drain", "remove", "https://a.example/x", "-a", "demo", *extra)
        assert (code, {"out": out, "err": err}[shown]) == (
            status,
            f"{'Error: ' if status else ''}demo has no drain https://a.example/x\n",
        )
    assert not herolog_home.exists()
    import subprocess
    import sys

    from tests.helpers import bound_by_file_modes, herolog_env

    closed = tmp_path / "read-only"
    closed.mkdir(mode=0o555)
    command = [sys.executable, "-m", "herolog", "drain", "remove", "d.x", "--if-exists"]
    proc = subprocess.run(
        bound_by_file_modes(command),
        capture_output=True,
        text=True,
        env=herolog_env(HEROLOG_HOME=str(closed / "home")),
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "default has no drain d.x\n", "")
    # A file where the store's directory should be is not taken for no store: it is said.
    (tmp_path / "a-file").write_text("")
    env = {"HEROLOG_HOME": str(tmp_path / "a-file" / "h")}
    code, out, err = run("drain", "remove", "d.x", "--if-exists", env=env)
    assert (code, out) == (1, "")
    assert err.startswith("Error: cannot create the store's directory ")
    assert err.count("\n") == 1


def test_removing_a_drain_of_another_app_names_that_app(where: dict[str, str]) -> None:
    code, out, _ = run("drain", "add", SECRET_URL, "-a", "demo", "--json", env=where)
    token, drain_id = json.loads(out)["token"], json.loads(out)["id"]
    code, _, err = run("drain", "remove", token, env=where)  # -a defaults to "default"
    assert code == 1
    assert err == (
        f"Error: default has no drain {token} (demo has it: herolog drain remove ... -a demo)\n"
    )
    code, _, err = run("drain", "remove", drain_id, "-a", "other", env=where)
    assert code == 1
    assert err == (
        f"Error: other has no drain {drain_id} (demo has it: herolog drain remove ... -a demo)\n"
    )
    code, _, err = run("drain", "remove", SECRET_URL, "-a", "other", env=where)
    assert code == 1
    assert err.startswith(f"Error: other has no drain {MASKED_URL} (demo has it:")
    assert "hunter2" not in err
    assert run("drain", "remove", token, "-a", "demo", env=where)[0] == 0


def test_waiting_a_server_did_not_count_stays_null_in_json() -> None:
    """A serve on a store an older herolog wrote counts no `waiting`, null in its drain
    objects (as the README says of the store): drain list --json through it says null too,
    not that no line waits."""
    from tests.helpers import QuietHandler, serving

    drain_id = "0b7c6a0e-8a4b-4c61-9a3c-0c7e4f0d7a11"
    drain: dict[str, Any] = {
        "id": drain_id,
        "token": f"d.{drain_id}",
        "url": "https://logs.example.com/x",
        "addon": None,
        "app": {"id": "5f0c6e0a-1b2c-4d3e-8f40-5a6b7c8d9e0f", "name": "demo"},
        "created_at": "2024-03-05T09:14:07Z",
        "updated_at": "2024-03-05T09:14:07Z",
        "delivery": {
            "delivered": 3,
            "dropped": 0,
            "retrying": False,
            "last_error": None,
            "last_error_at": None,
            "waiting": None,
        },
    }

    class Older(QuietHandler):
        def do_GET(self) -> None:
            body = json.dumps([drain]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Older) as server:
        code, out, err = run("drain", "list", "--json", "-a", "demo", "--server", server.url)
    assert (code, err) == (0, "")
    # forwarded: a server answered, which forwards (or leaves it to the one that does)
    assert [d["delivery"] for d in json.loads(out)] == [{**drain["delivery"], "forwarded": True}]


def test_the_local_registry_is_the_store(where: dict[str, str]) -> None:
    run("drain", "add", "https://a.example/x", "-a", "demo", env=where)
    store = open_store()
    try:
        assert [d.url for d in store.drains("demo")] == ["https://a.example/x"]
    finally:
        store.close()


def test_server_errors_are_one_line(make_server: ServerFactory) -> None:
    running = make_server(api_key=KEY)
    code, _, err = run("drain", "list", "--server", running.url, env={"HEROLOG_API_KEY": "wrong"})
    assert code == 1
    assert err.strip() == f"Error: {running.url} refused the API key (401): check HEROLOG_API_KEY"
    code, _, err = run("drain", "list", "--server", running.url)
    assert code == 1
    assert err.strip() == (
        f"Error: {running.url} needs an API key (401): set HEROLOG_API_KEY to its --api-key"
    )
    code, _, err = run("drain", "list", "--server", "http://127.0.0.1:9")
    assert code == 1
    assert err.strip() == "Error: cannot reach http://127.0.0.1:9: connection refused"


def test_a_remove_the_server_has_no_path_for_is_not_taken_for_a_missing_drain(
    make_server: ServerFactory,
) -> None:
    """A --server URL with a wrong path (the drain URL serve prints, say) answers every call
    with a 404: not one that says the drain is not there, which would read as removed."""
    running = make_server(api_key=KEY)
    env = {"HEROLOG_API_KEY": KEY}
    assert (
        run("drain", "add", "https://a.example/x", "-a", "demo", "--server", running.url, env=env)[
            0
        ]
        == 0
    )
    wrong = running.url + "/apps/demo/logs"
    code, _, err = run(
        "drain", "remove", "https://a.example/x", "-a", "demo", "--server", wrong, env=env
    )
    assert code == 1
    assert "has no drain" not in err
    assert "could not remove the drain (404): No such API endpoint" in err
    code, out, _ = run("drain", "list", "--json", "--server", running.url, env=env)
    assert [d["url"] for d in json.loads(out)] == ["https://a.example/x"]


@pytest.mark.parametrize("app", ["../etc", "a b", "", "\udcff"])
def test_bad_app_names_exit_2(where_refused: dict[str, str], app: str) -> None:
    for args in (["add", "https://a.example/x"], ["remove", "d.x"], ["list"]):
        code, _, err = run("drain", *args, "-a", app, env=where_refused)
        assert code == 2, args
        assert "not an app name" in err
        assert "Traceback" not in err


def test_errors_do_not_show_secrets(where_refused: dict[str, str]) -> None:
    code, _, err = run(
        "drain", "add", "syslog://u:s3cret@h.example:514/path?token=T0KEN", env=where_refused
    )
    assert code == 2
    assert "s3cret" not in err
    assert "T0KEN" not in err
    code, _, err = run(
        "drain", "remove", "http://[oops?api_key=SECRET", "-a", "demo", env=where_refused
    )
    assert code == 1
    assert "SECRET" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ("drain", "add", "https://b.example.com", SECRET_URL, "-a", "demo"),  # two URLs
        ("drain", "remove", SECRET_URL, SECRET_URL, "-a", "demo"),
        ("drain", SECRET_URL, "-a", "demo"),  # add left out
        (SECRET_URL,),
        ("drain", "add", "https://b.example.com", "-a", SECRET_URL),  # the two swapped
        ("drain", "add", "https://b.example.com", f"--app={SECRET_URL}"),
        ("drain", "add", "https://b.example.com", f"-a{SECRET_URL}"),
    ],
)
def test_usage_errors_mask_the_urls_they_quote(args: tuple[str, ...]) -> None:
    """click's usage errors quote an argument as it was given: an extra one, a subcommand
    it does not know, an option's bad value. A script's mistake put the drain URL's
    password and API key in its log."""
    code, out, err = run(*args)
    assert code == 2, err
    assert "hunter2" not in err + out
    assert "0123456789abcdef" not in err + out
    assert "https://***@intake.example.com/v1/input?dd-api-key=***&ddsource=heroku" in err


@pytest.mark.parametrize(
    ("args", "env", "status"),
    [
        (("logs", f"-tn{SECRET_URL}"), {}, 2),  # the value glued to a group of flags
        (("logs", f"-ta{SECRET_URL}"), {}, 1),
        (("drain", "list"), {"HEROLOG_APP": SECRET_URL}, 2),  # from the environment
        (("logs",), {"HEROLOG_APP": SECRET_URL}, 1),
        (("logs", "-a", SECRET_URL), {}, 1),  # no usage error: 'has no app named ...'
    ],
)
def test_errors_mask_urls_given_in_a_group_of_flags_or_the_environment(
    args: tuple[str, ...], env: dict[str, str], status: int
) -> None:
    """An option's value glued to a group of short flags, or taken from $HEROLOG_APP, and
    an error that is no usage error but quotes -a's value, still put the URL's password in
    the script's log."""
    code, out, err = run(*args, env=env)
    assert code == status, err
    assert "hunter2" not in err + out
    assert "0123456789abcdef" not in err + out
    assert "https://***@intake.example.com/v1/input?dd-api-key=***&ddsource=heroku" in err


def test_plain_drain_lists_the_drains_of_herolog_url(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`herolog drain` is `herolog drain list`, $HEROLOG_URL and $HEROLOG_APP included: it
    lists the server's drains, not the local store's (here another store than the
    server's)."""
    path = tmp_path_factory.mktemp("elsewhere") / "logs.db"
    with running_server(path, api_key=KEY) as running:
        remote = {"HEROLOG_URL": running.url, "HEROLOG_API_KEY": KEY}
        for app in ("one", "two"):
            code, _, err = run("drain", "add", f"https://{app}.example/x", "-a", app, env=remote)
            assert code == 0, err
        assert run("drain", "list")[1] == "No drains.\n"  # the local store
        code, out, err = run("drain", env=remote)
        assert (code, err) == (0, "")
        assert out == run("drain", "list", env=remote)[1]
        assert [x for x in out.splitlines() if x.startswith("===")] == [
            "=== one Drains",
            "=== two Drains",
        ]
        code, out, _ = run("drain", env={**remote, "HEROLOG_APP": "two"})
        assert out.startswith("=== Drains\n\nhttps://two.example/x (d.")
        assert "one.example" not in out


def test_a_subcommands_server_wins_over_a_bad_herolog_url() -> None:
    """`drain list --server ''` (the local store) with a $HEROLOG_URL that is no URL: the
    flag wins, as for `logs`, though `drain` alone, which reads $HEROLOG_URL, refuses it."""
    bad = {"HEROLOG_URL": "logs.example.com:8514"}
    code, out, err = run(
        "drain", "add", "https://a.example/x", "-a", "one", "--server", "", env=bad
    )
    assert (code, out) == (0, "Successfully added drain https://a.example/x\n"), err
    code, out, err = run("drain", "list", "--server", "", env=bad)
    assert (code, out.splitlines()[0]) == (0, "=== one Drains"), err
    code, out, err = run(
        "drain", "remove", "https://a.example/x", "-a", "one", "--server", "", env=bad
    )
    assert (code, out) == (0, "Successfully removed drain https://a.example/x\n"), err
    code, _, err = run("drain", env=bad)
    assert code == 2
    assert "Invalid value for '--server' (from $HEROLOG_URL): 'logs.example.com:8514'" in err
    code, _, err = run("drain", "--server", "ftp://logs.example.com")
    assert code == 2
    assert "Invalid value for '--server': 'ftp://logs.example.com' is not a server URL" in err


def test_a_url_read_from_standard_input_stays_off_the_command_line(
    where: dict[str, str],
) -> None:
    """`ps` shows every user the command lines of every process, and the shell keeps them
    in its history: with `-`, the URL and its secrets come from standard input instead."""
    import subprocess
    import sys

    from tests.helpers import herolog_env

    def add(stdin: str | bytes, **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "herolog", "drain", "add", "-", "-a", "demo"],
            input=stdin if isinstance(stdin, bytes) else stdin.encode(),
            capture_output=True,
            env=herolog_env(**where, **env),
            timeout=60,
        )
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        )

    added = add(SECRET_URL + "\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"Successfully added drain {MASKED_URL}\n"
    code, out, err = run("drain", "list", "--json", "--show-secrets", env=where)
    assert code == 0, err
    assert [d["url"] for d in json.loads(out)] == [SECRET_URL]
    for stdin in ("", "\n"):
        refused = add(stdin)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines()[-1] == (
            "Error: no drain URL on standard input (drain add - reads one line)"
        )
    # A script's two URLs: neither is added, rather than the second going unsaid.
    refused = add(f"{SECRET_URL}x\nsyslog+tls://logs.example.com:6514\n")
    assert (refused.returncode, refused.stderr) == (
        2,
        "Error: standard input holds more than one line, and drain add - reads one URL: add"
        " each drain with a command of its own\n",
    )
    assert add(f"{SECRET_URL}y\r\n\n").returncode == 0  # blank lines after it are no URL
    code, out, err = run("drain", "list", "--json", "--show-secrets", env=where)
    assert [d["url"] for d in json.loads(out)] == [SECRET_URL, f"{SECRET_URL}y"]
    # Not UTF-8: in a UTF-8 locale, refused as such; in the C locale (its bytes escaped), as
    # no URL.
    refused = add(b"https://logs.example.com/\xff\n", PYTHONIOENCODING="utf-8:strict")
    assert refused.returncode == 2
    assert refused.stderr == "Error: the drain URL on standard input is not UTF-8 text\n"
    refused = add(b"https://logs.example.com/\xff\n", LC_ALL="C")
    assert refused.returncode == 2
    assert refused.stderr.startswith("Error: not a URL (it holds a space or a control character): ")
    assert refused.stderr.count("\n") == 1


def test_a_drain_is_removed_by_a_url_read_from_standard_input(where: dict[str, str]) -> None:
    """A script that kept the URL off the command line as it added the drain can remove it
    the same way: `drain remove -` took the `-` for the drain's URL ("demo has no drain
    -"), so the URL and its secrets had to go where ps shows them."""
    import subprocess
    import sys

    from tests.helpers import herolog_env

    def with_stdin(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "herolog", "drain", *args, "-", "-a", "demo"],
            input=stdin,
            capture_output=True,
            text=True,
            env=herolog_env(**where),
            timeout=60,
        )

    assert with_stdin(SECRET_URL + "\n", "add").returncode == 0
    removed = with_stdin(SECRET_URL + "\n", "remove")
    assert (removed.returncode, removed.stdout) == (0, f"Successfully removed drain {MASKED_URL}\n")
    code, out, err = run("drain", "list", "--json", env=where)
    assert (code, json.loads(out)) == (0, []), err
    again = with_stdin(SECRET_URL + "\n", "remove")
    assert (again.returncode, again.stderr) == (1, f"Error: demo has no drain {MASKED_URL}\n")
    again = with_stdin(SECRET_URL + "\n", "remove", "--if-exists")
    assert (again.returncode, again.stdout) == (0, f"demo has no drain {MASKED_URL}\n")
    # By token too, and one line only, as drain add - reads it.
    added = with_stdin(SECRET_URL + "\n", "add", "--json")
    token = json.loads(added.stdout)["token"]
    refused = with_stdin(f"{token}\n{SECRET_URL}\n", "remove")
    assert (refused.returncode, refused.stderr) == (
        2,
        "Error: standard input holds more than one line, and drain remove - reads one URL or"
        " token: remove each drain with a command of its own\n",
    )
    refused = with_stdin("\n", "remove")
    assert (refused.returncode, refused.stderr) == (
        2,
        "Error: no drain URL or token on standard input (drain remove - reads one line)\n",
    )
    assert with_stdin(token + "\n", "remove").returncode == 0
    code, out, err = run("drain", "list", "--json", env=where)
    assert (code, json.loads(out)) == (0, []), err
