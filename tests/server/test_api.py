"""The Platform API of herolog serve: apps, log sessions over SSE, log drains, auth."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import httpx_sse
import pytest

from herolog import drains, logs
from herolog import store as store_module
from herolog.filters import compile_pattern
from herolog.render import decode_record
from herolog.server import ServeConfig, Server, run_in_thread
from herolog.server import api as api_module
from herolog.server import forwarder as forwarder_module
from herolog.server import sessions as sessions_module
from herolog.server.app import HerologApp
from herolog.server.writer import Writer
from herolog.store import AppInfo, Batch, SQLiteStore
from tests import web
from tests.helpers import invoke, line
from tests.helpers import store_lines as append_lines
from tests.server.conftest import Running, ServerFactory, running_server
from tests.server.sinks import HTTPSink, wait_until

KEY = "k3y-for-tests"
AUTH = {"Authorization": f"Bearer {KEY}"}
EVENTS = {"Accept": "text/event-stream"}
"""What the heroku CLI's EventSource and herolog's own client ask a log session for."""


def store_lines(running: Running, app: str, *lines: Any) -> None:
    append_lines(running.server.config.store_path, app, *lines)


def store_demo(running: Running) -> Running:
    store_demo_lines(running.server.config.store_path)
    return running


def store_demo_lines(store_path: Path) -> None:
    append_lines(
        store_path,
        "demo",
        line("GET /", source="heroku", dyno="router", second=1),
        line("hello from web.1", second=2),
        line("hello from web.2", dyno="web.2", second=3),
        line("worker tick", dyno="worker.1", second=4),
        line("webby is not web", dyno="webby.1", second=5),
        line("ERROR: boom", second=6),
    )


def api_store_apps(running: Running) -> list[AppInfo]:
    store = SQLiteStore.open(running.server.config.store_path, create=False)
    try:
        return store.apps()
    finally:
        store.close()


@pytest.fixture
def api(make_server: ServerFactory) -> Running:
    """A server with an API key and app demo's six lines, for a test that changes it."""
    return store_demo(make_server(api_key=KEY))


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The same as ``api``, one for the module's tests that change nothing on it (no lines,
    drains, apps or settings; each session they open is their own): a server of their own
    cost each of them half a second to start and stop."""
    with running_server(tmp_path_factory.mktemp("api") / "logs.db", api_key=KEY) as running:
        yield store_demo(running)


@pytest.fixture(scope="module")
def shared_keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server without an API key and a line of app demo's, one for the module's tests that
    change nothing on it, as ``shared_api``."""
    with running_server(tmp_path_factory.mktemp("keyless") / "logs.db") as running:
        store_lines(running, "demo", line("hi"))
        yield running


def session(running: Running, app: str | None = "demo", **body: Any) -> str:
    path = f"/apps/{app}/log-sessions" if app else "/log-sessions"
    response = web.post(running.url + path, json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return str(response.json()["logplex_url"])


def read_text(url: str, **headers: str) -> list[str]:
    """What the heroku CLI prints for a session: the data lines of its message events (it
    ignores others, such as the ``event: end`` closing a history)."""
    with web.Client() as client, httpx_sse.connect_sse(client, "GET", url, headers=headers) as es:
        assert es.response.status_code == 200
        events = [event for event in es.iter_sse() if event.event == "message"]
        return [part for event in events for part in event.data.split("\n") if part]


def test_app_object_and_unknown_app(shared_api: Running) -> None:
    response = web.get(f"{shared_api.url}/apps/demo", headers=AUTH)
    assert response.status_code == 200
    app = response.json()
    assert app["name"] == "demo"
    assert app["generation"]["name"] == "cedar"
    assert len(app["id"]) == 36
    assert app["created_at"].endswith("Z")
    assert web.get(f"{shared_api.url}/apps/demo", headers=AUTH).json()["id"] == app["id"]
    missing = web.get(f"{shared_api.url}/apps/nope", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"id": "not_found", "message": "Couldn't find that app."}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Bearer {KEY[:-1]}X"},
        {"Authorization": "Basic " + base64.b64encode(b":wrong").decode()},
    ],
)
def test_api_key_required(shared_api: Running, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/apps/demo"),
        ("POST", "/apps/demo/log-sessions"),
        ("GET", "/apps/demo/log-drains"),
        ("POST", "/apps/demo/log-drains"),
        ("DELETE", "/apps/demo/log-drains/x"),
    ]:
        response = web.request(method, shared_api.url + path, headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert response.json()["id"] == "unauthorized"
        # RFC 9110 11.6.1: a 401 says which scheme would do
        assert response.headers["www-authenticate"] == 'Bearer realm="herolog"'


def test_basic_auth_with_the_key_as_password(shared_api: Running) -> None:
    """For curl users: curl -u :KEY."""
    response = web.get(f"{shared_api.url}/apps/demo", auth=("", KEY))
    assert response.status_code == 200


def test_the_key_s_scheme_is_case_insensitive(shared_api: Running) -> None:
    """As RFC 9110 has it: a client (or a proxy) writing 'bearer' is let in."""
    for scheme in ("bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {KEY}"}
        assert web.get(f"{shared_api.url}/apps/demo", headers=headers).status_code == 200


def test_intake_credentials_do_not_open_the_api(make_server: ServerFactory) -> None:
    running = make_server(api_key=KEY, auth=_creds())
    response = web.get(f"{running.url}/apps/demo", auth=("drain", "s3cret"))
    assert response.status_code == 401


def test_api_off_on_a_public_address_without_a_key(make_server: ServerFactory) -> None:
    running = make_server(host="0.0.0.0", auth=_creds())
    response = web.get(f"{running.url}/apps/demo")
    assert response.status_code == 403
    assert "--api-key" in response.json()["message"]


def test_api_open_on_loopback_without_a_key(shared_keyless: Running) -> None:
    assert web.get(f"{shared_keyless.url}/apps/demo").status_code == 200


def _creds() -> Any:
    from herolog.server.config import Credentials

    return Credentials("drain", "s3cret")


def test_account_names_the_server(shared_api: Running) -> None:
    """heroku auth:whoami prints the account's email: herolog has no accounts, so it names
    the server, at the host the caller reached it at; without the key, a 401."""
    response = web.get(f"{shared_api.url}/account", headers=AUTH)
    assert response.status_code == 200
    account = response.json()
    assert account == {"id": account["id"], "email": "herolog@127.0.0.1"}
    assert len(account["id"]) == 36
    assert web.get(f"{shared_api.url}/account", headers=AUTH).json() == account
    for host, email in [
        ("localhost:8514", "herolog@localhost"),
        ("[::1]:8514", "herolog@[::1]"),
        ("::1", "herolog@[::1]"),  # an IPv6 address without brackets: no port to take off
        ("Logs.Example.com", "herolog@logs.example.com"),
    ]:
        named = web.get(f"{shared_api.url}/account", headers={**AUTH, "Host": host})
        assert named.json() == {"id": account["id"], "email": email}
    broken = web.get(f"{shared_api.url}/account", headers={**AUTH, "Host": "[::1"})
    assert broken.status_code == 200  # no host to name: whatever it says, but not a 500
    refused = web.get(f"{shared_api.url}/account")
    assert refused.status_code == 401
    assert refused.json()["id"] == "unauthorized"
    head = web.head(f"{shared_api.url}/account", headers=AUTH)
    assert head.status_code == 200
    assert head.headers["content-length"] == response.headers["content-length"]
    changed = web.patch(f"{shared_api.url}/account", headers=AUTH, json={})
    assert changed.status_code == 405
    assert changed.headers["allow"] == "GET, HEAD"


def test_account_names_the_public_url(make_server: ServerFactory) -> None:
    running = make_server(api_key=KEY, public_url="https://logs.example.com:8514/")
    response = web.get(f"{running.url}/account", headers=AUTH)
    assert response.json()["email"] == "herolog@logs.example.com"


def test_history_with_filters_before_the_limit(shared_api: Running) -> None:
    assert read_text(session(shared_api, lines=2, source="app")) == [
        "2024-03-05T09:00:05.000000+00:00 app[webby.1]: webby is not web",
        "2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom",
    ]
    # dyno "web" is web.N, not webby.N: the heroku CLI sends -p TYPE as dyno.
    assert [t.split(": ", 1)[1] for t in read_text(session(shared_api, lines=10, dyno="web"))] == [
        "hello from web.1",
        "hello from web.2",
        "ERROR: boom",
    ]
    assert read_text(session(shared_api, lines=10, dyno="router")) == [
        "2024-03-05T09:00:01.000000+00:00 heroku[router]: GET /"
    ]
    herolog_only = session(
        shared_api, lines=10, grep=["hello"], exclude=["web\\.2"], since="2024-03-05T09:00:02Z"
    )
    assert read_text(herolog_only) == [
        "2024-03-05T09:00:02.000000+00:00 app[web.1]: hello from web.1"
    ]


def test_a_list_of_sources_or_of_dynos_is_any_of_them(shared_api: Running) -> None:
    """herolog logs --server -s A -s B, or -d X -d Y: a list in ``source``, or a list among
    ``dynos`` (each of whose items must match, as -d and -p both must)."""

    def dynos_of(**body: Any) -> list[str]:
        shown = read_text(session(shared_api, lines=10, **body))
        return [text.split(" ", 1)[1].split(":", 1)[0] for text in shown]

    assert dynos_of(source=["heroku", "app"]) == [
        "heroku[router]",
        "app[web.1]",
        "app[web.2]",
        "app[worker.1]",
        "app[webby.1]",
        "app[web.1]",
    ]
    assert dynos_of(source=["heroku", "heroku"]) == ["heroku[router]"]
    assert dynos_of(dynos=[["worker", "router"]]) == ["heroku[router]", "app[worker.1]"]
    # -d web.2 -d worker.1 -p web: web.2 only; the heroku CLI's dyno is one more item.
    assert dynos_of(dynos=[["web.2", "worker.1"], "web"]) == ["app[web.2]"]
    assert dynos_of(dynos=[["web.2", "worker.1"]], dyno="worker") == ["app[worker.1]"]


def test_a_name_given_again_in_a_session_s_filters_counts_once(shared_api: Running) -> None:
    """Toward MAX_TERMS too: a client that does not drop its repeats (a script) is not
    refused for more names than the query holds terms."""
    from herolog.filters import MAX_TERMS

    many = MAX_TERMS + 1
    for body in (
        {"source": ["heroku"] * many},
        {"dynos": ["router"] * many},
        {"dynos": [["router"] * many]},
    ):
        shown = read_text(session(shared_api, lines=10, **body))
        assert [text.split(" ", 1)[1].split(":", 1)[0] for text in shown] == ["heroku[router]"]


@pytest.mark.parametrize("key", ["dyno", "process_type", "type"])
def test_a_session_s_process_type_may_come_under_any_of_its_names(
    shared_api: Running, key: str
) -> None:
    """dyno (the heroku CLI's -d and -p), process_type (herolog logs --server -p) and type,
    which serve takes as a third name for it, each keep the session to that dyno's lines."""
    assert read_text(session(shared_api, lines=10, **{key: "worker"})) == [
        "2024-03-05T09:00:04.000000+00:00 app[worker.1]: worker tick"
    ]


def test_a_history_is_read_from_the_store_and_sent_a_part_at_a_time(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-n 2000000 held every line in serve's memory before the first was sent (2 GB): the
    history is read as a tail reads, _READ_BATCH lines at a time, each part its own event,
    up to where the store was when the stream began."""
    monkeypatch.setattr(sessions_module, "_READ_BATCH", 2)
    monkeypatch.setattr(logs, "HELD_LINES", 4)
    read_after = sessions_module._read_after

    def and_store_one(*args: Any) -> Any:
        read = read_after(*args)
        append_lines(api.server.config.store_path, "demo", line("stored while it is sent"))
        return read

    monkeypatch.setattr(sessions_module, "_read_after", and_store_one)
    url = session(api, lines=5)
    with web.Client() as client, httpx_sse.connect_sse(client, "GET", url) as es:
        events = [(e.id, e.data) for e in es.iter_sse() if e.event == "message" and e.data]
    assert [data.count("\n") + 1 for _, data in events] == [2, 2, 1]
    assert [int(event_id) for event_id, _ in events] == [3, 5, 6]
    texts = [part.split(": ", 1)[1] for _, data in events for part in data.split("\n")]
    assert texts == [
        "hello from web.1",
        "hello from web.2",
        "worker tick",
        "webby is not web",
        "ERROR: boom",
    ]


def test_a_long_history_of_every_app_is_not_told_of_lines_trimmed_before_it_began(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy app's lines trimmed long ago lie among a quiet app's that the history sends:
    each part was told of those it spanned with L11, as though the client had lost them."""
    monkeypatch.setattr(sessions_module, "_READ_BATCH", 4)
    monkeypatch.setattr(logs, "HELD_LINES", 5)
    path = api.server.config.store_path
    store = SQLiteStore.open(path)
    try:
        store.set_history(8)
    finally:
        store.close()
    for i in range(8):
        append_lines(path, "quiet", line(f"q{i}"))
        append_lines(path, "busy", *[line(f"b{i}")] * 3)  # 16 of the 24 trimmed
    sent = read_text(session(api, app=None, lines=8, grep=["q"]))
    assert [text.split(": ", 1)[1] for text in sent] == [f"q{i}" for i in range(8)]


def test_default_lines_and_all_apps(api: Running) -> None:
    store_lines(api, "other", line("from another app", second=9))
    assert len(read_text(session(api))) == 6
    everything = read_text(session(api, app=None, lines=2))
    assert everything == [
        "2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom",
        "2024-03-05T09:00:09.000000+00:00 app[web.1]: from another app",
    ]


def test_embedded_newlines_become_data_lines(api: Running) -> None:
    # A lone \r ends an SSE line too: sent as it is, what follows it would be lost.
    store_lines(api, "demo", line("Traceback:\n  File x\r\n  boom\r50%"))
    assert read_text(session(api, lines=1)) == [
        "2024-03-05T09:00:00.000000+00:00 app[web.1]: Traceback:",
        "  File x",
        "  boom",
        "50%",
    ]


def test_json_records_carry_every_field(shared_api: Running) -> None:
    url = session(shared_api, lines=1, format="json")
    with web.Client() as client, httpx_sse.connect_sse(client, "GET", url) as es:
        events = [event for event in es.iter_sse() if event.event == "message"]
    records = [decode_record(d) for e in events for d in e.data.split("\n") if d]
    assert len(records) == 1
    assert records[0] == shared_api.lines("demo")[-1]


def record_data(url: str) -> list[str]:
    """The records of a session's history, as data lines."""
    with web.Client() as client, httpx_sse.connect_sse(client, "GET", url) as es:
        events = [event for event in es.iter_sse() if event.event == "message"]
    return [d for e in events for d in e.data.split("\n") if d]


def test_an_older_herolog_gets_records_without_the_msgid_it_cannot_read(api: Running) -> None:
    """herolog logs --server before MSGIDs took records of exactly 12 fields, and stopped at
    a 13th ('sent a line herolog cannot read'): only a client asking for the MSGID
    (record_fields, which an older serve ignores) gets it."""
    store_lines(api, "demo", line("paid", second=7)._replace(msgid="INVOICE"))
    # The body an older herolog posted (session_body before c648cd4), and how it read records.
    old = record_data(session(api, lines=2, tail=False, format="json"))
    fields = [json.loads(x) for x in old]
    assert [len(x) for x in fields] == [12, 12], old
    assert [x[6] for x in fields] == ["ERROR: boom", "paid"]
    new = record_data(session(api, lines=2, tail=False, format="json", record_fields=["msgid"]))
    assert [(decode_record(x).message, decode_record(x).msgid) for x in new] == [
        ("ERROR: boom", None),
        ("paid", "INVOICE"),
    ]
    assert len(json.loads(new[1])) == 13
    response = web.post(
        api.url + "/apps/demo/log-sessions",
        json={"format": "json", "record_fields": "msgid"},
        headers=AUTH,
    )
    assert response.status_code == 422
    assert response.json()["message"] == "record_fields must be a list of field names"


def test_json_records_hold_no_character_a_line_splitter_breaks_on(api: Running) -> None:
    """U+2028, U+2029 and U+0085 are left raw by JSON, and str.splitlines (which httpx's
    iter_lines, and httpx-sse before 0.4.1, split an SSE stream with) ends a line at each:
    a record holding one raw would reach such a client in two halves, neither of them
    JSON. They go as JSON escapes, which read back as the same message."""
    message = "a\u2028b\u2029c\u0085d"
    store_lines(api, "demo", line(message))
    url = session(api, lines=1, format="json")
    with web.Client() as client:
        response = client.get(url, headers=EVENTS)
    assert response.status_code == 200
    assert response.text.splitlines() == response.text.split("\n")[:-1]
    data = [x[6:] for x in response.text.split("\n") if x.startswith("data: ")]
    assert data[-1] == "history"  # the event: end closing the history
    assert [decode_record(x).message for x in data[:-1]] == [message]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"lines": 1501, "format": "json"}, "1,500 lines"),
        ({"lines": -1}, "lines must be"),
        ({"lines": "5"}, "lines must be"),
        ({"lines": 1.5}, "lines must be"),
        ({"lines": True}, "lines must be"),  # JSON's true is no number, though Python's is
        ({"tail": "yes"}, "tail must be"),
        ({"source": 5}, "source must be"),
        ({"grep": ["("]}, "bad regular expression"),
        ({"grep": ["a{1,99999999999}"]}, "bad regular expression"),
        ({"exclude": ["(" * 2000 + ")" * 2000]}, "bad regular expression"),
        ({"grep": ["ok", "(a+)+$"]}, "grep: bad regular expression: it repeats a repetition"),
        (
            # 2,000 optional characters in a repeat: 5 s of the check, now refused once it
            # has spent its budget (tests/test_filters.py)
            {"grep": ["(?:" + "".join(chr(0x4E00 + i) + "?" for i in range(2_000)) + "x)+"]},
            "grep: bad regular expression: it is too long or too complex to check",
        ),
        ({"since": "yesterday-ish"}, "since"),
        ({"format": "xml"}, "format"),
        ({"source": {"app": 1}}, "source must be a string or a list of source names"),
        ({"source": ["app", 5]}, "source must be a string or a list of source names"),
        ({"source": ["app", ""]}, "source must be a string or a list of source names"),
        ({"source": [f"s{n}" for n in range(101)]}, "at most 100 names or patterns in source"),
        (
            {"dynos": [[f"web.{n}" for n in range(100)]], "dyno": "web"},
            "at most 100 names or patterns in dyno, process_type, type and dynos (in all)",
        ),
        ({"grep": [f"w{n}" for n in range(101)]}, "at most 100 names or patterns in grep"),
        ({"dynos": "web.1"}, "dynos must be a list of dyno names, or of lists of them"),
        ({"dynos": ["web.1", ""]}, "dynos must be a list of dyno names"),
        ({"dynos": [[]]}, "dynos must be a list of dyno names"),
        ({"dynos": [["web.1", ""]]}, "dynos must be a list of dyno names"),
        ({"dynos": [["web.1", ["worker"]]]}, "dynos must be a list of dyno names"),
        ({"dynos": [5]}, "dynos must be a list of dyno names"),
        ({"grep": "ERROR"}, "grep must be a list of regular expressions"),
        ({"exclude": [5]}, "exclude must be a list of regular expressions"),
    ],
)
def test_bad_session_requests(shared_api: Running, body: dict[str, Any], message: str) -> None:
    response = web.post(f"{shared_api.url}/apps/demo/log-sessions", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["id"] == "invalid_params"
    assert message in response.json()["message"]


@pytest.mark.parametrize(
    "body", [b"{}", b'{"url": 5}', b'{"url": null}', b'{"uri": "https://x.example/"}']
)
def test_a_drain_without_a_url_is_422_saying_what_to_send(shared_api: Running, body: bytes) -> None:
    response = web.post(
        f"{shared_api.url}/apps/demo/log-drains",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json() == {
        "id": "invalid_params",
        "message": 'url is required: {"url": "https://..."}',
    }
    assert web.get(f"{shared_api.url}/apps/demo/log-drains", headers=AUTH).json() == []


@pytest.mark.parametrize(
    "body", [b"[]", b'["https://x.example/"]', b'"https://x.example/"', b"5", b"null"]
)
def test_json_that_is_not_an_object_is_400(shared_api: Running, body: bytes) -> None:
    for path in ("/apps/demo/log-drains", "/apps/demo/log-sessions"):
        response = web.post(
            shared_api.url + path,
            content=body,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, path
        assert response.json() == {
            "id": "bad_request",
            "message": "The request body must be a JSON object.",
        }
    assert web.get(f"{shared_api.url}/apps/demo/log-drains", headers=AUTH).json() == []


def test_a_json_body_over_64_kib_is_413(shared_api: Running) -> None:
    """A body past the API's limit, however it comes (declared, or chunked), is refused
    before it is read to its end: the API's bodies are a few bytes."""
    body = json.dumps({"url": "https://logs.example/" + "x" * (64 << 10)}).encode()
    for path in ("/apps/demo/log-drains", "/apps/demo/log-sessions"):
        for content in (body, iter([body[:1000], body[1000:]])):
            response = web.post(
                shared_api.url + path,
                content=content,
                headers={**AUTH, "Content-Type": "application/json"},
            )
            assert response.status_code == 413, path
            assert response.json() == {
                "id": "request_too_large",
                "message": "The request body is too large.",
            }
    assert web.get(f"{shared_api.url}/apps/demo/log-drains", headers=AUTH).json() == []


@pytest.mark.parametrize("body", [b"", b" \r\n"])
def test_a_session_asked_for_with_no_body_is_the_default_one(
    shared_api: Running, body: bytes
) -> None:
    """No body, as a client of the Platform API's documents may send: the last 100 lines
    (here the six of demo), not a tail, as {} asks."""
    response = web.post(
        f"{shared_api.url}/apps/demo/log-sessions",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    lines = read_text(response.json()["logplex_url"], **EVENTS)
    assert [x.split(": ", 1)[1] for x in lines] == [
        "GET /",
        "hello from web.1",
        "hello from web.2",
        "worker tick",
        "webby is not web",
        "ERROR: boom",
    ]


def test_a_session_asked_for_without_a_host_header_has_the_server_s_address(
    shared_api: Running,
) -> None:
    """An HTTP/1.0 client sends no Host: the session's URL is built from the address the
    request reached, which the client can then read it at."""
    port = shared_api.server.http_port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /apps/demo/log-sessions HTTP/1.0\r\n"
            + f"Authorization: Bearer {KEY}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{"lines": 2}'
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 "), answer
    url = json.loads(body)["logplex_url"]
    assert url.startswith(f"http://127.0.0.1:{port}/sessions/"), url
    assert [x.split(": ", 1)[1] for x in read_text(url, **EVENTS)] == [
        "webby is not web",
        "ERROR: boom",
    ]


def test_lines_written_with_an_exponent_are_a_whole_number(shared_api: Running) -> None:
    """JSON.stringify writes 10**21 and up as 1e+21, as the heroku CLI sends -n
    1000000000000000000000: more than the history, which it gets whole, as -n 5000 does."""
    response = web.post(
        f"{shared_api.url}/apps/demo/log-sessions",
        content=b'{"lines": 1e+21}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert len(read_text(response.json()["logplex_url"], **EVENTS)) == 6


@pytest.mark.parametrize(("history", "kept"), [(1, "1 line"), (2, "2 lines")])
def test_more_lines_than_a_history_of_one_is_said_in_the_singular(
    make_server: ServerFactory, history: int, kept: str
) -> None:
    running = make_server(api_key=KEY, history=history)
    body = {"lines": 3, "format": "json"}  # herolog logs --server's: text gets the history
    response = web.post(f"{running.url}/log-sessions", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["message"] == (
        f"lines: 3 is more than the {kept} the store keeps per app (raise that on the server:"
        " herolog serve --history 3)"
    )


def test_more_lines_than_serve_can_keep_asks_for_the_most_it_can(shared_api: Running) -> None:
    """herolog logs --server -n over the most serve's --history takes: the 422 says to raise
    the history to that most, not to a number serve would refuse."""
    body = {"lines": 10**12, "format": "json"}
    response = web.post(f"{shared_api.url}/log-sessions", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["message"].endswith(
        f"(raise that on the server: herolog serve --history {store_module.MAX_HISTORY})"
    )


def test_a_sessions_patterns_are_compiled_off_the_event_loop(
    shared_api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log session's --grep and --exclude were compiled in serve's event loop: those of a
    body of 64 KB took 0.2 to 0.4 s, in which no request was answered."""
    compiled: list[str] = []

    def noted(pattern: str) -> re.Pattern[str]:
        compiled.append(threading.current_thread().name)
        return compile_pattern(pattern)

    monkeypatch.setattr(api_module, "compile_pattern", noted)
    url = session(shared_api, grep=["GET"], exclude=["health"])
    assert "/sessions/" in url
    assert len(compiled) == 2
    assert "herolog-serve" not in compiled, compiled  # run_in_thread's, where the loop runs


def test_too_many_open_sessions_is_a_limit_not_a_bad_request(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session limit is the server's (sessions nobody reads expire after 5 minutes), not
    the request's fault: 429, Heroku's rate_limit, which a client may retry (a tail that
    reconnects does), not 422, which herolog logs --server takes for a usage error (exit 2)
    and stops a tail's reconnecting for."""
    monkeypatch.setattr(sessions_module, "MAX_SESSIONS", 2)
    session(api)
    session(api)
    response = web.post(f"{api.url}/apps/demo/log-sessions", json={}, headers=AUTH)
    assert response.status_code == 429
    assert response.json() == {"id": "rate_limit", "message": "too many open log sessions (2)"}
    code, out, err = invoke("logs", "--server", api.url, "-a", "demo", env={"HEROLOG_API_KEY": KEY})
    assert (code, out) == (1, "")
    assert "could not create a log session (429): too many open log sessions (2)" in err


def test_a_history_read_leaves_room_for_another_session(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session without --tail ends once its history has been read: scripts that run
    heroku logs (or herolog logs --server) one after another are not refused for sessions
    they are done with, as if they were still open."""
    monkeypatch.setattr(sessions_module, "MAX_SESSIONS", 2)
    for _ in range(5):
        assert read_text(session(api, lines=1)) == [
            "2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom"
        ]


def test_the_heroku_cli_asking_for_more_than_the_history_gets_all_of_it(
    shared_api: Running,
) -> None:
    """As from Logplex, which gives at most 1,500 lines without an error: scripts written
    for Heroku run `heroku logs -n 5000`. herolog's own client (format json) is told."""
    lines = read_text(session(shared_api, lines=1501))
    assert len(lines) == 6
    assert lines[-1].endswith("app[web.1]: ERROR: boom")


def test_bad_json_body(shared_api: Running) -> None:
    sent = {**AUTH, "Content-Type": "application/json"}
    response = web.post(f"{shared_api.url}/apps/demo/log-sessions", content=b"{", headers=sent)
    assert response.status_code == 400
    assert response.json()["id"] == "bad_request"


def test_session_for_unknown_app(shared_api: Running) -> None:
    response = web.post(f"{shared_api.url}/apps/nope/log-sessions", json={}, headers=AUTH)
    assert response.status_code == 404


def test_session_url_honours_host_and_public_url(
    shared_api: Running, make_server: ServerFactory
) -> None:
    response = web.post(
        f"{shared_api.url}/apps/demo/log-sessions",
        json={},
        headers={**AUTH, "Host": "logs.example:8514"},
    )
    assert response.json()["logplex_url"].startswith("http://logs.example:8514/sessions/")
    public = make_server(public_url="https://logs.example.com/")
    store_lines(public, "demo", line("hi"))
    url = web.post(f"{public.url}/apps/demo/log-sessions", json={}).json()["logplex_url"]
    assert url.startswith("https://logs.example.com/sessions/")


def test_session_url_needs_its_secret_and_is_single_use(shared_api: Running) -> None:
    url = session(shared_api, lines=1)
    wrong = url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb")
    assert web.get(wrong).status_code == 404
    assert web.get(url.split("?")[0]).status_code == 404
    assert len(read_text(url)) == 1
    gone = web.get(url)
    assert gone.status_code == 404
    assert gone.json()["id"] == "not_found"


def test_unused_sessions_expire(api: Running) -> None:
    api.server.app.sessions.ttl = 0.2
    url = session(api, lines=1)
    time.sleep(0.3)
    assert web.get(url).status_code == 404


def wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Tail:
    """An SSE reader in a thread, as the heroku CLI's EventSource reads a tail session."""

    def __init__(self, url: str, **headers: str) -> None:
        self.lines: list[str] = []
        self.ids: list[str] = []
        self.ended = threading.Event()
        self.error: httpx.HTTPError | None = None
        """Why the stream ended, if it was cut off rather than ended by the server."""
        self.connected = threading.Event()
        self._socket: socket.socket | None = None
        self._client = web.Client(timeout=30)
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx_sse.connect_sse(self._client, "GET", url, headers=headers) as es:
                stream = es.response.extensions["network_stream"]
                self._socket = stream.get_extra_info("socket")
                self.connected.set()
                for event in es.iter_sse():
                    if event.id:
                        self.ids.append(event.id)
                    self.lines += [part for part in event.data.split("\n") if part]
        except httpx.HTTPError as error:
            self.error = error
        finally:
            self.ended.set()

    def wait_for(self, count: int, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.lines) >= count, self.lines
        return self.lines

    def close(self) -> None:
        """Drop the connection, as a client that goes away does."""
        if self.connected.wait(10) and self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._client.close()


def test_tail_streams_new_lines_then_resumes_by_last_event_id(api: Running) -> None:
    url = session(api, lines=1, tail=True, dyno="web")
    tail = Tail(url)
    try:
        assert tail.wait_for(1) == ["2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom"]
        store_lines(api, "demo", line("new one", second=10), line("not mine", dyno="worker.2"))
        frame = b"<190>1 2024-03-05T09:00:11+00:00 host app web.3 - over https\n"
        posted = api.post("demo", b"%d %s" % (len(frame), frame))
        assert posted.status_code == 204
        assert tail.wait_for(3)[1:] == [
            "2024-03-05T09:00:10.000000+00:00 app[web.1]: new one",
            "2024-03-05T09:00:11+00:00 app[web.3]: over https",
        ]
        last_id = tail.ids[-1]
    finally:
        tail.close()
    assert tail.ended.is_set()
    store_lines(api, "demo", line("while away", second=12))
    # The EventSource comes back to the same URL with the last id it saw: no replay, no gap.
    again = Tail(url, **{"Last-Event-ID": last_id})
    try:
        assert again.wait_for(1) == ["2024-03-05T09:00:12.000000+00:00 app[web.1]: while away"]
        time.sleep(0.3)
        assert len(again.lines) == 1
    finally:
        again.close()


def test_a_drain_added_under_a_running_tail_gets_the_lines_before_it_was_taken_up(
    make_server: ServerFactory, sink: HTTPSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve takes a new drain up at its next look for drains: the lines its app got in
    between are read back from the store for it. A tail running already had them handed out
    before that (its broadcaster was reading): the drain was told its live lines started
    where that tail's did, and never got them."""
    # A look every two seconds, not serve's half: the lines are handed out before it.
    monkeypatch.setattr(forwarder_module, "RELOAD_INTERVAL_S", 2.0)
    running = store_demo(make_server(api_key=KEY))
    tail = Tail(session(running, lines=0, tail=True))
    try:
        # Live once it shows one: its broadcaster hands out what is stored.
        def shows_one() -> bool:
            store_lines(running, "demo", line("live", second=10))
            return bool(tail.lines)

        wait_until(shows_one, what="the tail to be live")
        shown = len(tail.lines)
        store = SQLiteStore.open(running.server.config.store_path)
        try:
            store.add_drain("demo", sink.url())
        finally:
            store.close()
        store_lines(running, "demo", line("meanwhile", second=11))
        tail.wait_for(shown + 1)
        wait_until(lambda: sink.delivered_lines(), what="the drain's delivery")
    finally:
        tail.close()
    assert [x.message for x in sink.delivered_lines()] == ["meanwhile"]


def test_tail_reconnect_without_last_event_id_does_not_replay(api: Running) -> None:
    url = session(api, lines=2, tail=True)
    first = Tail(url)
    first.wait_for(2)
    first.close()
    store_lines(api, "demo", line("after", second=20))
    second = Tail(url)
    try:
        assert second.wait_for(1) == ["2024-03-05T09:00:20.000000+00:00 app[web.1]: after"]
    finally:
        second.close()


def test_a_second_reader_takes_the_session_over(api: Running) -> None:
    url = session(api, lines=0, tail=True)
    first = Tail(url)
    assert first.connected.wait(10)
    sessions = api.server.app.sessions
    # Until the first reader has been told where its (empty) history ended: a second one
    # that takes over before then reads the history anew, up to the newest line then, which
    # on a busy machine could be the line stored below.
    wait_for(
        lambda: (
            len(sessions._readers) == 1
            and all(x.last_sent is not None for x in sessions._sessions.values())
        )
    )
    second = Tail(url)
    try:
        assert first.ended.wait(10), "the first reader's stream should end"
        assert first.error is None  # ended as a response ends, not cut off
        store_lines(api, "demo", line("for the second", second=30))
        assert second.wait_for(1) == ["2024-03-05T09:00:30.000000+00:00 app[web.1]: for the second"]
    finally:
        first.close()
        second.close()


def test_keepalive_comments(make_server: ServerFactory) -> None:
    running = make_server()
    running.server.app.sessions.keepalive = 0.1
    store_lines(running, "demo", line("hi"))
    url = web.post(f"{running.url}/apps/demo/log-sessions", json={"tail": True}).json()[
        "logplex_url"
    ]
    with web.stream("GET", url, headers=EVENTS, timeout=10) as response:
        seen = b""
        for chunk in response.iter_bytes():
            seen += chunk
            if seen.count(b": keep-alive") >= 2:
                break
    assert seen.startswith(b"retry: 1000\n\n")


def test_stopping_the_server_ends_tail_streams(
    make_server: ServerFactory, herolog_home: Any
) -> None:

    server = Server(
        ServeConfig(store_path=herolog_home / "logs.db", port=0), log=__import__("io").StringIO()
    )
    stop = run_in_thread(server)
    running = Running(server, __import__("io").StringIO())
    store_lines(running, "demo", line("hi"))
    url = web.post(f"{running.url}/apps/demo/log-sessions", json={"tail": True}).json()[
        "logplex_url"
    ]
    tail = Tail(url)
    tail.wait_for(1)
    started = time.monotonic()
    stop()  # uvicorn would wait 30 s for an open response
    assert tail.ended.wait(5)
    assert tail.error is None  # ended as a response ends, not cut off
    assert time.monotonic() - started < 10
    tail.close()


def test_drains_crud(api: Running) -> None:
    base = f"{api.url}/apps/demo/log-drains"
    assert web.get(base, headers=AUTH).json() == []
    url = "https://user:pw@logs.example.com/drain?dd-api-key=abc"
    added = web.post(base, json={"url": url}, headers=AUTH)
    assert added.status_code == 201
    drain = added.json()
    assert drain["url"] == url
    assert drain["token"].startswith("d.")
    assert len(drain["token"]) == 38
    assert drain["addon"] is None
    assert drain["app"]["name"] == "demo"
    assert drain["app"]["id"] == web.get(f"{api.url}/apps/demo", headers=AUTH).json()["id"]
    assert set(drain) == {
        "id",
        "token",
        "url",
        "addon",
        "app",
        "created_at",
        "updated_at",
        "delivery",
    }
    assert drain["delivery"] == {
        "delivered": 0,
        "dropped": 0,
        "retrying": False,
        "last_error": None,
        "last_error_at": None,
        "waiting": 0,
        "forwarded": True,
    }
    again = web.post(base, json={"url": url}, headers=AUTH)
    assert again.status_code == 422
    assert again.json()["message"] == "Url has already been taken"
    second = web.post(base, json={"url": "syslog+tls://logs.example.com:6514"}, headers=AUTH).json()
    assert [d["url"] for d in web.get(base, headers=AUTH).json()] == [url, second["url"]]
    removed = web.delete(f"{base}/{quote(url, safe='')}", headers=AUTH)
    assert removed.status_code == 200
    assert removed.json() == drain
    by_token = web.delete(f"{base}/{second['token']}", headers=AUTH)
    assert by_token.json()["id"] == second["id"]
    assert web.get(base, headers=AUTH).json() == []
    missing = web.delete(f"{base}/{second['token']}", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["id"] == "not_found"


def test_a_drain_s_id_is_found_in_upper_case_as_an_app_s_is(api: Running) -> None:
    """A UUID is one in either case: an app's id was found in upper case, a drain's was not
    (404 "Couldn't find that drain.") for GET or DELETE .../log-drains/ID."""
    base = f"{api.url}/apps/demo/log-drains"
    drain = web.post(base, json={"url": "https://logs.example.com/x"}, headers=AUTH).json()
    upper = drain["id"].upper()
    assert web.get(f"{base}/{upper}", headers=AUTH).json() == drain
    assert web.delete(f"{base}/{upper}", headers=AUTH).json() == drain
    assert web.get(base, headers=AUTH).json() == []


def test_a_drain_url_as_a_proxy_passes_it_decoded_finds_the_drain(api: Running) -> None:
    """nginx's proxy_pass with a path after the port (`proxy_pass http://127.0.0.1:8514/;`,
    as a proxy serving herolog under /herolog/ has it) passes a request's path decoded, its
    runs of slashes merged: DELETE .../log-drains/https%3A%2F%2F... arrives as
    .../log-drains/https:/..., and the drain was not found (`heroku drains:remove URL`,
    `herolog drain remove --server URL`: 404). Two drains that the merging makes alike are
    neither found so."""
    base = f"{api.url}/apps/demo/log-drains"
    urls = [
        "https://u:p@sink.example/x?y=1",
        "syslog+tls://logs.example.com:6514",
        "https://sink.example/a//b",
        "https://sink.example/a/b",
    ]
    added = [web.post(base, json={"url": url}, headers=AUTH).json() for url in urls]
    # As nginx passes them: decoded, slashes merged, "?" escaped again.
    for drain, passed in zip(
        added[:2],
        ["https:/u:p@sink.example/x%3Fy=1", "syslog+tls:/logs.example.com:6514"],
        strict=True,
    ):
        assert web.get(f"{base}/{passed}", headers=AUTH).json() == drain
        assert web.delete(f"{base}/{passed}", headers=AUTH).json() == drain
    for method in ("GET", "DELETE"):
        alike = web.request(method, f"{base}/https:/sink.example/a/b", headers=AUTH)
        assert alike.status_code == 404
    assert web.get(base, headers=AUTH).json() == added[2:]
    # One left of the two: a URL so merged finds it, one written whole finds only itself.
    assert web.delete(f"{base}/{added[3]['token']}", headers=AUTH).status_code == 200
    written = web.get(f"{base}/{quote(urls[3], safe='')}", headers=AUTH)
    assert written.status_code == 404
    assert web.get(f"{base}/https:/sink.example/a/b", headers=AUTH).json() == added[2]


def test_an_app_id_works_where_its_name_does(api: Running) -> None:
    """As on Heroku (/apps/{app_id_or_name}): the ids herolog hands out (GET /apps/APP, a
    drain's app.id) are taken back, in any case."""
    store_lines(api, "other", line("not demo's", second=9))
    app = web.get(f"{api.url}/apps/demo", headers=AUTH).json()
    app_id = app["id"]
    for ref in (app_id, app_id.upper()):
        assert web.get(f"{api.url}/apps/{ref}", headers=AUTH).json() == app
    assert read_text(session(api, app_id, lines=1)) == [
        "2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom"
    ]
    base = f"{api.url}/apps/{app_id}/log-drains"
    added = web.post(base, json={"url": "https://logs.example.com/x"}, headers=AUTH)
    assert added.status_code == 201
    drain = added.json()
    assert drain["app"] == {"id": app_id, "name": "demo"}
    assert web.get(base, headers=AUTH).json() == [drain]
    assert web.get(f"{api.url}/apps/demo/log-drains", headers=AUTH).json() == [drain]
    assert web.get(f"{base}/{drain['token']}", headers=AUTH).json() == drain
    assert web.delete(f"{base}/{drain['token']}", headers=AUTH).json() == drain
    assert web.get(f"{api.url}/log-drains", headers=AUTH).json() == []
    assert sorted(a.name for a in api_store_apps(api)) == ["demo", "other"]


def test_an_unknown_app_id_is_not_found(shared_api: Running) -> None:
    api = shared_api
    unknown = "6f1c3c59-0000-4c4f-9a7e-2b8f4c1d9e10"
    for method, path in [
        ("GET", f"/apps/{unknown}"),
        ("POST", f"/apps/{unknown}/log-sessions"),
        ("GET", f"/apps/{unknown}/log-drains"),
        ("DELETE", f"/apps/{unknown}/log-drains/d.x"),
    ]:
        response = web.request(method, api.url + path, headers=AUTH, json={})
        assert response.status_code == 404, (method, path)
        assert response.json() == {"id": "not_found", "message": "Couldn't find that app."}
    # A drain for an id no app has is refused, not given to a new app of that name: the id
    # has a typo in it, as likely as not.
    drain = {"url": "https://logs.example.com/x"}
    response = web.post(f"{api.url}/apps/{unknown}/log-drains", headers=AUTH, json=drain)
    assert response.status_code == 404
    assert unknown not in [app.name for app in api_store_apps(api)]


def test_an_app_named_like_an_id_keeps_its_name(api: Running) -> None:
    """herolog's names may look like UUIDs (Heroku's may not): a name is looked up first."""
    demo_id = web.get(f"{api.url}/apps/demo", headers=AUTH).json()["id"]
    store_lines(api, demo_id, line("stored under a name that is demo's id"))
    app = web.get(f"{api.url}/apps/{demo_id}", headers=AUTH).json()
    assert app["name"] == demo_id
    assert app["id"] != demo_id


def test_a_drain_brings_its_app_into_being(api: Running) -> None:
    response = web.post(
        f"{api.url}/apps/fresh/log-drains", json={"url": "https://x.example/logs"}, headers=AUTH
    )
    assert response.status_code == 201
    assert web.get(f"{api.url}/apps/fresh", headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "ftp://logs.example.com/x",
        "logs.example.com:514",
        "https:///no-host",
        "syslog://logs.example.com:514/path",
        "syslog://logs.example.com",
        "https://logs.example.com:99999/",
        "",
    ],
)
def test_bad_drain_urls_are_422(shared_api: Running, url: str) -> None:
    response = web.post(f"{shared_api.url}/apps/demo/log-drains", json={"url": url}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["id"] == "invalid_params"
    assert web.get(f"{shared_api.url}/apps/demo/log-drains", headers=AUTH).json() == []


@pytest.mark.parametrize(
    ("method", "path", "allow", "message"),
    [
        ("PUT", "/apps/demo", "GET, HEAD", "Use GET or HEAD."),
        ("GET", "/apps/demo/log-sessions", "POST", "Use POST."),
        ("GET", "/log-sessions", "POST", "Use POST."),
        ("DELETE", "/apps/demo/log-drains", "GET, HEAD, POST", "Use GET, HEAD or POST."),
        ("PUT", "/log-drains", "GET, HEAD", "Use GET or HEAD."),
        ("POST", "/apps/demo/log-drains/d.x", "DELETE, GET, HEAD", "Use DELETE, GET or HEAD."),
        ("POST", "/sessions/00000000-0000-0000-0000-000000000000", "GET, HEAD", "Use GET or HEAD."),
    ],
)
def test_a_405_says_which_methods_the_path_takes(
    shared_api: Running, method: str, path: str, allow: str, message: str
) -> None:
    """RFC 9110: a 405 carries Allow, listing what the path does accept, HEAD wherever GET."""
    response = web.request(method, shared_api.url + path, headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"id": "method_not_allowed", "message": message}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/apps/demo", 200),
        ("/apps/nope", 404),
        ("/apps/demo/log-drains", 200),
        ("/apps/nope/log-drains", 404),
        ("/log-drains", 200),
        ("/apps/demo/log-drains/d.00000000-0000-0000-0000-000000000000", 404),
        ("/apps/demo/dynos", 404),  # a path of the API's it does not serve
    ],
)
def test_head_is_answered_as_get_is_without_a_body(
    shared_api: Running, path: str, status: int
) -> None:
    """RFC 9110 section 9.3.2: HEAD gets GET's status and headers, and no body; without the
    key, the same 401."""
    for headers, expected in [(AUTH, status), ({}, 401)]:
        get = web.get(shared_api.url + path, headers=headers)
        head = web.head(shared_api.url + path, headers=headers)
        assert get.status_code == expected
        assert head.status_code == get.status_code
        assert _headers(head) == _headers(get)
        assert head.content == b""


def test_head_on_a_drain_finds_it_and_leaves_it(api: Running) -> None:
    base = f"{api.url}/apps/demo/log-drains"
    drain = web.post(base, json={"url": "https://logs.example.com/x"}, headers=AUTH).json()
    for key in (drain["token"], drain["id"], quote(drain["url"], safe="")):
        head = web.head(f"{base}/{key}", headers=AUTH)
        assert head.status_code == 200
        assert _headers(head) == _headers(web.get(f"{base}/{key}", headers=AUTH))
    assert web.get(base, headers=AUTH).json() == [drain]


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k != "date"}


def test_head_sends_no_body_on_the_wire(shared_api: Running) -> None:
    """Not even bytes a client would skip: after the headers comes the next answer."""
    url = httpx.URL(shared_api.url)
    assert url.port is not None
    with socket.create_connection((url.host, url.port)) as sock:
        sock.sendall(
            f"HEAD /apps/demo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            "\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, rest = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: " in head
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert rest.endswith(b"\r\n\r\nok\n")


def test_the_app_itself_sends_no_body_for_head(herolog_home: Path) -> None:
    """Called as ASGI, with no server to drop a body (uvicorn does, and so does httpx's
    ASGITransport): the app sends GET's status and headers and an empty body, on the API's
    paths and on its own."""
    config = ServeConfig(store_path=herolog_home / "logs.db", port=0, api_key=KEY)
    store_demo_lines(config.store_path)
    app = HerologApp(config, Writer(config.store_path, config.history))

    async def call(method: str, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        await app(scope, receive, send)
        return sent

    async def compare() -> list[tuple[int, bytes]]:
        seen = []
        for path in ("/apps/demo", "/apps/nope", "/apps/demo/log-drains", "/nothing"):
            for headers in (AUTH, {}):
                get = await call("GET", path, headers)
                head = await call("HEAD", path, headers)
                assert head[0] == get[0], path  # status and headers
                assert get[1]["body"], path
                seen.append((head[0]["status"], b"".join(m.get("body", b"") for m in head[1:])))
        await app.broadcaster.close()
        return seen

    seen = asyncio.run(compare())
    assert [status for status, _ in seen] == [200, 401, 404, 401, 200, 401, 404, 404]
    assert {body for _, body in seen} == {b""}


def test_a_client_that_asks_for_no_events_gets_the_lines_as_text(shared_api: Running) -> None:
    """curl, or an API library reading the logplex_url as the Platform API's documents say
    (an HTTP GET, then reading the socket), asks for no events: it gets the lines as
    Logplex sent them, what herolog logs prints, not SSE's fields."""
    url = session(shared_api, lines=6)
    response = web.get(url)  # Accept: */*
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["vary"] == "accept"
    home = str(shared_api.server.config.store_path.parent)
    code, local, _ = invoke("logs", "-a", "demo", "-n", "6", env={"HEROLOG_HOME": home})
    assert code == 0
    assert len(local.splitlines()) == 6
    assert response.text == local


def test_a_tail_read_as_text_follows_new_lines(api: Running) -> None:
    url = session(api, lines=1, tail=True)
    with web.stream("GET", url, headers={"Accept": "text/plain"}, timeout=10) as response:
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        lines = response.iter_lines()
        assert next(lines).endswith(" app[web.1]: ERROR: boom")
        store_lines(api, "demo", line("a message of\ntwo lines", second=7))
        assert next(lines).endswith(" app[web.1]: a message of")
        assert next(lines) == "two lines"


@pytest.mark.slow
def test_a_tail_with_an_until_to_come_follows_new_lines_then_ends_there(api: Running) -> None:
    """--until a moment ahead: the tail waits no longer than to it, takes the lines stored
    meanwhile, and then ends, saying so (event: end, data: until). The line is stored once
    the history's line has come: a tail starts from the store's newest line when its stream
    is first read, which may be after its headers. Slow: it waits out the 10 s."""
    from datetime import UTC, datetime, timedelta

    until = (datetime.now(UTC) + timedelta(seconds=10)).isoformat()
    url = session(api, lines=1, tail=True, until=until)
    seen: list[str] = []
    with web.stream("GET", url, headers=EVENTS, timeout=30) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for each in lines:
            seen.append(each)
            if each.startswith("data: "):
                break
        store_lines(api, "demo", line("before the end", second=7))
        seen.extend(lines)  # to the stream's end
    data = [x[6:] for x in seen if x.startswith("data: ")]
    assert [x.split(": ", 1)[1] for x in data[:-1]] == ["ERROR: boom", "before the end"]
    assert data[-1] == "until"
    assert "event: end" in seen


def test_head_on_a_log_session_neither_reads_nor_uses_it(shared_api: Running) -> None:
    url = session(shared_api, lines=1)
    head = web.head(url, headers=EVENTS)
    assert head.status_code == 200
    assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert head.content == b""
    assert head.headers["x-accel-buffering"] == "no"  # README: nginx passes a tail through
    shouted = web.head(url, headers={"Accept": "Text/Event-Stream"})  # RFC 9110: any case
    assert shouted.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert web.head(url.replace("sig=", "sig=x")).status_code == 404  # the secret counts
    assert read_text(url) == ["2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom"]
    assert web.head(url).status_code == 404  # a GET used it up
    for path in ("/apps/demo/log-sessions", "/log-sessions"):  # HEAD creates none
        refused = web.head(shared_api.url + path, headers=AUTH)
        assert refused.status_code == 405
        assert refused.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "path",
    [
        "/apps/",
        "/apps/demo/dynos",
        "/apps/demo/logs/extra",
        "/apps/demo/log-sessions/x",
        "/log-drains/x",
        "/log-sessions/x",
        "/sessions/not-a-session",
        "/apps/demo/caf%C3%A9/%FF%FE",
        "/account/",
        "/account/features",  # heroku labs
        "/users/~",
        "/users/someone@example.com/apps",
        "/teams",  # heroku teams
        "/oauth/authorizations",  # heroku login -i
    ],
)
def test_unknown_api_paths_are_heroku_json_404s(shared_api: Running, path: str) -> None:
    """The heroku CLI prints the message of a JSON error; a text/plain 404 it cannot."""
    response = web.get(shared_api.url + path, headers=AUTH)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["id"] == "not_found"
    assert error["message"].startswith("No such API endpoint: GET /")
    # Without the key: nothing to learn.
    assert web.get(shared_api.url + path).status_code == 401


def test_heroku_login_on_a_keyless_server_is_told_it_needs_none(
    make_server: ServerFactory,
) -> None:
    response = web.post(make_server().url + "/oauth/authorizations", json={})
    assert response.status_code == 404
    assert response.json() == {
        "id": "not_found",
        "message": "No such API endpoint: POST /oauth/authorizations: herolog serve has no"
        " logins, and without --api-key needs none.",
    }


def test_other_unknown_paths_keep_the_intakes_plain_404(api: Running) -> None:
    """Outside the API's paths, and for a drain's batch anywhere, the answer is the intake's:
    plain text saying where drains post, counted in /stats."""
    outside = web.get(f"{api.url}/nothing", headers=AUTH)
    drain = web.post(  # a drain URL missing its final s
        f"{api.url}/apps/demo/log", content=b"", headers={"Content-Type": "application/logplex-1"}
    )
    for response in (outside, drain):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/plain")
        assert "drains post to /apps/APP/logs" in response.text
    assert web.get(f"{api.url}/stats", headers=AUTH).json()["responses"]["404"] == 2


@pytest.mark.parametrize("path", ["/regions", "/addons", "/spaces/foo", "/pipelines", "/x"])
def test_any_path_asked_as_the_heroku_cli_asks_is_a_json_404(
    shared_api: Running, path: str
) -> None:
    """heroku addons, regions, spaces, pipelines ask paths outside the API's own: asked with
    Heroku's Accept, as the CLI asks, they get the API's JSON 404, which says what herolog
    serves, not the intake's plain text about where drains post."""
    heroku = {"Accept": "application/vnd.heroku+json; version=3"}
    response = web.get(shared_api.url + path, headers={**AUTH, **heroku})
    assert response.status_code == 404
    assert response.json()["id"] == "not_found"
    assert response.json()["message"].startswith(f"No such API endpoint: GET {path} (herolog")
    assert web.get(shared_api.url + path, headers=heroku).status_code == 401
    assert "drains post to" in web.get(shared_api.url + path, headers=AUTH).text
    among = {"Accept": "application/json, application/vnd.heroku+json; version=3"}
    assert web.get(shared_api.url + path, headers={**AUTH, **among}).json()["id"] == "not_found"


def test_a_client_that_vanishes_mid_tail_frees_its_session(api: Running) -> None:
    url = httpx.URL(session(api, lines=0, tail=True))
    with socket.create_connection((url.host, url.port)) as sock:
        target = url.raw_path.decode()
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert b"200 OK" in sock.recv(4096)
    sessions = api.server.app.sessions
    deadline = time.monotonic() + 10
    while sessions._readers and time.monotonic() < deadline:
        store_lines(api, "demo", line("poke"))
        time.sleep(0.1)
    assert not sessions._readers


def test_resuming_from_an_older_id_sends_each_events_own_id(api: Running) -> None:
    """A client that lost buffered events resumes from an older id: the events it then gets
    carry their own ids, so a second drop resumes at the right place again."""
    store_lines(api, "demo", *[line(f"n{i}", second=10) for i in range(450)])
    url = session(api, lines=450, tail=True)
    first = Tail(url)
    first.wait_for(450)
    first.close()
    ids = [x.id for x in api.lines("demo")]
    resume_from = ids[-450]  # as if only the first line had arrived
    again = Tail(url, **{"Last-Event-ID": str(resume_from)})
    try:
        again.wait_for(449)
        time.sleep(0.2)
        assert [int(i) for i in again.ids] == [ids[-450 + 200], ids[-450 + 400], ids[-1]]
        assert len(again.lines) == 449
    finally:
        again.close()


def test_stopping_with_a_reader_that_does_not_read(
    make_server: ServerFactory, herolog_home: Any
) -> None:

    server = Server(ServeConfig(store_path=herolog_home / "logs.db", port=0), log=io.StringIO())
    stop = run_in_thread(server, timeout=15)
    running = Running(server, io.StringIO())
    store_lines(running, "demo", line("hi"))
    url = httpx.URL(
        web.post(f"{running.url}/apps/demo/log-sessions", json={"tail": True}).json()["logplex_url"]
    )
    with socket.create_connection((url.host, url.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET {url.raw_path.decode()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        big = "x" * 2000
        for _ in range(20):  # far more than the socket buffers hold; the client reads none
            store_lines(running, "demo", *[line(big) for _ in range(500)])
        sessions = server.app.sessions
        wait_for(lambda: sessions._readers)
        started = time.monotonic()
        stop()  # raises if the server is still up after 15 s (uvicorn alone waits 30)
        assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Content-Type": "application/json"},
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
        {"Content-Type": "text/plain"},
        {"Host": "evil.example:8514", "Content-Type": "application/json"},
    ],
)
def test_browsers_cannot_drive_a_keyless_api(
    shared_keyless: Running, headers: dict[str, str]
) -> None:
    running = shared_keyless
    response = web.post(
        f"{running.url}/apps/demo/log-drains",
        content=b'{"url": "https://evil.example/steal"}',
        headers=headers,
    )
    assert response.status_code in (403, 415)
    assert web.get(f"{running.url}/apps/demo/log-drains").json() == []


@pytest.mark.parametrize(
    "proxy_header",
    [
        {"X-Forwarded-For": "203.0.113.7"},
        {"X-Real-IP": "203.0.113.7"},
        {"Forwarded": "for=203.0.113.7;proto=https"},
        {"X-Forwarded-Proto": "https"},
        {"Via": "1.1 caddy"},
    ],
)
def test_a_keyless_api_takes_nothing_through_a_proxy(
    shared_keyless: Running, proxy_header: dict[str, str]
) -> None:
    """A reverse proxy on this machine (nginx's `proxy_pass http://127.0.0.1:8514`, which
    sends `Host: 127.0.0.1:8514` unless told otherwise) would open the keyless API, drains'
    credentials and all, to whoever can reach the proxy. One that passes its own name on
    (`proxy_set_header Host $host`, as most configurations do) got "use a loopback address
    (127.0.0.1)", wrong advice behind a proxy: it is told to give serve a key too."""
    running = shared_keyless
    host = {"Host": f"127.0.0.1:{running.server.http_port}"}
    for name in (host, {"Host": "logs.example.com"}):
        added = web.post(
            f"{running.url}/apps/demo/log-drains",
            json={"url": "https://evil.example/steal"},
            headers={**name, **proxy_header},
        )
        assert added.status_code == 403
        assert added.json()["message"] == (
            "Without --api-key, the Platform API answers this machine only, not requests"
            " through a proxy: give herolog serve an --api-key."
        )
        listed = web.get(f"{running.url}/apps/demo/log-drains", headers={**name, **proxy_header})
        assert listed.status_code == 403
    assert web.get(f"{running.url}/apps/demo/log-drains", headers=host).json() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 30000 + b"]" * 30000, 400),
        (b'{"url": "https://x\\ud800.example/"}', 400),
        (b'{"source": "\\udc80"}', 400),
    ],
)
def test_odd_json_is_a_clean_error(shared_api: Running, body: bytes, status: int) -> None:
    for path in ("/apps/demo/log-drains", "/apps/demo/log-sessions"):
        response = web.post(
            shared_api.url + path,
            content=body,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert response.status_code == status
        assert response.json()["id"] == "bad_request"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_compressed_json_body_is_refused_as_such(shared_api: Running, encoding: str) -> None:
    """Not 'not valid JSON text' for JSON that is: RFC 9110's 415, with the codings taken."""
    import gzip

    body = gzip.compress(b'{"url": "https://logs.example/compressed"}')
    for path in ("/apps/demo/log-drains", "/apps/demo/log-sessions"):
        response = web.post(
            shared_api.url + path,
            content=body,
            headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": encoding},
        )
        assert response.status_code == 415, response.text
        assert response.headers["accept-encoding"] == "identity"
        assert response.json() == {
            "id": "unsupported_media_type",
            "message": f"Send the body uncompressed (no Content-Encoding: {encoding}).",
        }
    drains = web.get(shared_api.url + "/apps/demo/log-drains", headers=AUTH).json()
    assert "https://logs.example/compressed" not in [x["url"] for x in drains]
    response = web.post(  # identity is no coding at all
        shared_api.url + "/apps/demo/log-sessions",
        content=b'{"lines": 1}',
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "identity"},
    )
    assert response.status_code == 201, response.text
    response = web.post(  # Heroku's own JSON type, as an API client may label its body
        shared_api.url + "/apps/demo/log-sessions",
        content=b'{"lines": 1}',
        headers={**AUTH, "Content-Type": "application/vnd.heroku+json; version=3"},
    )
    assert response.status_code == 201, response.text


def test_odd_session_requests(shared_api: Running) -> None:
    url = session(shared_api, lines=1)
    # Not an id SQLite can hold: ignored, the history comes, no error. Nor one past the
    # digits Python turns into an int (4,300).
    for digits in (30, 5000):
        assert read_text(url, **{"Last-Event-ID": "9" * digits}) == [
            "2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom"
        ]
        url = session(shared_api, lines=1)
    # An empty source or dyno (heroku logs -s "") is none given: no filter.
    url = session(shared_api, lines=1, source="", dyno="")
    assert read_text(url) == ["2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom"]
    url = session(shared_api, lines=1, tail=True)
    base, _, _ = url.partition("?")
    assert web.get(base + "?sig=%C3%A9").status_code == 404


def test_a_store_locked_past_its_busy_timeout_is_a_503_not_a_traceback(
    api: Running, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another program holding the store's write lock for longer than herolog waits: the
    call is answered with Heroku's JSON error and may be retried; serve says so in a line."""
    import sqlite3

    from herolog import store

    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.2)  # herolog waits 30 s by default
    base = f"{api.url}/apps/demo/log-drains"
    holder = sqlite3.connect(api.server.config.store_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        refused = web.post(base, json={"url": "https://logs.example.com/x"}, headers=AUTH)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert refused.status_code == 503
    assert refused.json() == {
        "id": "unavailable",
        "message": "cannot use the store: database is locked",
    }
    assert capsys.readouterr().err == (
        "herolog serve: the Platform API cannot use the store: database is locked\n"
    )
    added = web.post(base, json={"url": "https://logs.example.com/x"}, headers=AUTH)
    assert added.status_code == 201
    assert [d["url"] for d in web.get(base, headers=AUTH).json()] == ["https://logs.example.com/x"]


def test_a_store_moved_away_under_the_api_is_a_503_that_names_it(herolog_home: Path) -> None:
    """The store's file moved or deleted under serve (serve stops a second later, which this
    in-process app does not): a call meanwhile is answered with Heroku's JSON error, a 503
    that may be retried and says where the store was, not a 500."""
    config = ServeConfig(store_path=herolog_home / "logs.db", port=0, api_key=KEY)
    store_demo_lines(config.store_path)
    app = HerologApp(config, Writer(config.store_path, config.history))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            config.store_path.rename(herolog_home / "moved.db")
            answer = await client.get("/apps/demo/log-drains", headers=AUTH)
        await app.broadcaster.close()
        return answer

    answer = asyncio.run(call())
    assert answer.status_code == 503
    assert answer.json() == {
        "id": "unavailable",
        "message": f"the store {config.store_path} is gone (moved or deleted)",
    }


def test_get_apps_lists_every_app_as_get_apps_app_shows_it(herolog_home: Path) -> None:
    """GET /apps (heroku apps --all, herolog apps --server): the objects GET /apps/APP
    answers, in name order, with Heroku's Accept-Ranges; called as ASGI, in-process."""
    config = ServeConfig(store_path=herolog_home / "logs.db", port=0, api_key=KEY)
    for name, count in (("zeta", 1), ("alpha", 3), ("demo", 2)):
        append_lines(config.store_path, name, *(line(f"{name} {i}") for i in range(count)))
    app = HerologApp(config, Writer(config.store_path, config.history))

    async def call() -> tuple[httpx.Response, list[Any], httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            listed = await client.get("/apps", headers=AUTH)
            each = [(await client.get(f"/apps/{n}", headers=AUTH)).json() for n in ("alpha",)]
            refused = await client.get("/apps")
        await app.broadcaster.close()
        return listed, each, refused

    listed, (alpha,), refused = asyncio.run(call())
    assert listed.status_code == 200
    assert listed.headers["accept-ranges"] == "id, name"
    assert "next-range" not in listed.headers
    found = listed.json()
    assert [a["name"] for a in found] == ["alpha", "demo", "zeta"]
    assert [a["lines"] for a in found] == [3, 2, 1]
    assert found[0] == alpha
    assert set(alpha) == {"id", "name", "generation", "created_at", "updated_at", "owner", "lines"}
    # The account GET /account names (heroku apps lists the apps whose owner it is).
    assert alpha["owner"] == {"id": drains.app_id("account:herolog"), "email": "herolog@127.0.0.1"}
    assert refused.status_code == 401
    assert refused.json()["id"] == "unauthorized"


def _page(running: Running, wanted: str | None) -> httpx.Response:
    headers = dict(AUTH) if wanted is None else {**AUTH, "Range": wanted}
    return web.get(running.url + "/apps", headers=headers)


def test_get_apps_pages_by_range_as_heroku_does(api: Running) -> None:
    """Range: name ..; max=N answers 206 with a Content-Range and a Next-Range while apps
    remain, which the next request sends back as its Range (the heroku CLI follows it); the
    last page is a 200 without one."""
    names = ["demo", "e1", "e2", "e3", "e4"]
    for name in names[1:]:
        store_lines(api, name, line("x"))
    first = _page(api, "name ..; max=2;")
    assert first.status_code == 206
    assert [a["name"] for a in first.json()] == ["demo", "e1"]
    assert first.headers["content-range"] == "name demo..e1; max=2"
    assert first.headers["next-range"] == "name ]e1..; max=2"
    second = _page(api, first.headers["next-range"])
    assert second.status_code == 206
    assert [a["name"] for a in second.json()] == ["e2", "e3"]
    last = _page(api, second.headers["next-range"])
    assert last.status_code == 200
    assert [a["name"] for a in last.json()] == ["e4"]
    assert "next-range" not in last.headers
    assert last.headers["content-range"] == "name e4..e4; max=2"
    # By id, as the heroku CLI's own paginator asks ("id ..; max=200;"), and downwards.
    ids, wanted = [], "id ..; max=3"
    while True:
        page = _page(api, wanted)
        ids += [a["id"] for a in page.json()]
        if page.status_code == 200:
            break
        wanted = page.headers["next-range"]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    down = _page(api, "name ..; max=3, order=desc")
    assert [a["name"] for a in down.json()] == ["e4", "e3", "e2"]
    rest = _page(api, down.headers["next-range"])
    assert [a["name"] for a in rest.json()] == ["e1", "demo"]
    assert rest.status_code == 200
    # Downwards, the last name is the lowest: kept, or left out with "[", in the Next-Range too.
    down = _page(api, "name e3..e1; order=desc")
    assert [a["name"] for a in down.json()] == ["e3", "e2", "e1"]
    down = _page(api, "name ]e4..e1[; max=1, order=desc")
    assert [a["name"] for a in down.json()] == ["e3"]
    assert down.headers["next-range"] == "name ]e3..e1[; max=1, order=desc"
    rest = _page(api, down.headers["next-range"])
    assert (rest.status_code, [a["name"] for a in rest.json()]) == (200, ["e2"])
    assert [a["name"] for a in _page(api, "name e1..e3[").json()] == ["e1", "e2"]
    assert [a["name"] for a in _page(api, "name ]e3..").json()] == ["e4"]
    assert _page(api, "name ]e4..").json() == []
    whole = _page(api, None)  # no Range: all of them (up to 200), in name order
    assert whole.status_code == 200
    assert [a["name"] for a in whole.json()] == names


def test_a_page_of_apps_or_an_app_by_id_reads_those_not_every_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heroku CLI lists apps 200 a page by name, other clients by id, and an app is
    asked for by name or by id: a page is a range of the names' or the ids' index, and an
    app one entry of it, whose work (SQLite's VM steps, every statement of the request) is
    the same with 20 apps in the store or 400; and the pages hold what they held, each app
    once, in order."""
    steps = [0]
    real_connect = store_module._connect

    def counting(path: Path, options: str) -> sqlite3.Connection:
        db = real_connect(path, options)

        def step() -> int:
            steps[0] += 1
            return 0  # carry on

        # The patch is the process's: the module's shared server reloads its drains now
        # and then, and those steps are not this request's.
        if path.parent == tmp_path:
            db.set_progress_handler(step, 1)
        return db

    def served(apps: int, asked: list[tuple[str, str]]) -> list[tuple[int, list[str], int]]:
        config = ServeConfig(store_path=tmp_path / f"{apps}.db", port=0, api_key=KEY)
        store = SQLiteStore.open(config.store_path)
        store.append([Batch(f"app-{i:03d}", [line("x")]) for i in range(apps)])
        store.close()
        app = HerologApp(config, Writer(config.store_path, config.history))

        async def call() -> list[tuple[int, list[str], int]]:
            transport = httpx.ASGITransport(app=app)
            found = []
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                for path, wanted in asked:
                    steps[0] = 0
                    page = await c.get(path, headers={**AUTH, "Range": wanted})
                    body = page.json()
                    names = [a["name"] for a in body] if path == "/apps" else [body["name"]]
                    found.append((page.status_code, names, steps[0]))
            await app.broadcaster.close()
            return found

        monkeypatch.setattr(store_module, "_connect", counting)
        try:
            return asyncio.run(call())
        finally:
            monkeypatch.setattr(store_module, "_connect", real_connect)

    def by_id(apps: int) -> list[tuple[str, str]]:
        return sorted((drains.app_id(f"app-{i:03d}"), f"app-{i:03d}") for i in range(apps))

    low, high = by_id(20)[4][0], by_id(20)[10][0]
    asked = [
        ("/apps", "name ]app-004..; max=3"),
        ("/apps", "name app-010..; max=2, order=desc"),
        ("/apps", f"id ]{low}..; max=3"),
        ("/apps", f"id {high.upper()}..; max=2, order=desc"),
        (f"/apps/{drains.app_id('app-007')}", ""),
        ("/apps/app-007", ""),
        ("/apps", "name ]app-017.."),
    ]
    small, large = served(20, asked), served(400, asked)
    for apps, pages in ((20, small), (400, large)):
        ids = by_id(apps)
        above = [name for key, name in ids if key > low][:3]
        below = [name for key, name in reversed(ids) if key <= high][:2]
        assert [page[:2] for page in pages[:6]] == [
            (206, ["app-005", "app-006", "app-007"]),
            (206, ["app-010", "app-009"]),
            (206, above),
            (206, below),
            (200, ["app-007"]),
            (200, ["app-007"]),
        ]
    assert small[6][:2] == (200, ["app-018", "app-019"])
    assert [page[2] for page in large[:6]] == [page[2] for page in small[:6]]
    assert large[6][0] == 206  # 382 apps past app-017, the first 200 of them
    assert len(large[6][1]) == 200


@pytest.mark.parametrize(
    "wanted",
    [
        "bytes=0-100",
        "created_at ..",
        "name",
        "name ..; max=0",
        "name ..; max=x",
        "name ..; max=-1",
        "name ..; to=3",
        "name ..; order=up",
        "name demo ..zeta",  # a space in the bounds: no name or id has one
    ],
)
def test_a_range_get_apps_cannot_follow_is_a_416(shared_api: Running, wanted: str) -> None:
    response = _page(shared_api, wanted)
    assert response.status_code == 416
    error = response.json()
    assert error["id"] == "requested_range_not_satisfiable"
    assert "name ..; max=" in error["message"]


def test_get_apps_takes_get_and_head_only(shared_api: Running) -> None:
    response = web.post(shared_api.url + "/apps", json={"name": "new"}, headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    head = web.head(shared_api.url + "/apps", headers=AUTH)
    assert head.status_code == 200
    assert head.content == b""
    assert _headers(head) == _headers(_page(shared_api, None))


def test_a_max_over_heroku_s_1000_is_1000(shared_api: Running) -> None:
    for given in ("1001", "0001000", "9" * 5000):
        page = _page(shared_api, f"name ..; max={given}")
        assert page.status_code == 200
        assert page.headers["content-range"] == "name demo..demo; max=1000"
    assert _page(shared_api, "name ..; max=007").headers["content-range"].endswith("; max=7")


def test_the_caller_s_apps_are_every_app(api: Running) -> None:
    """heroku apps (without --all) asks GET /users/~/apps, the apps of the account GET
    /account names, which owns them all: the same answer as GET /apps, pages too."""
    store_lines(api, "alpha", line("x"))
    for wanted in (None, "name ..; max=1"):
        headers = dict(AUTH) if wanted is None else {**AUTH, "Range": wanted}
        mine = web.get(api.url + "/users/~/apps", headers=headers)
        every = web.get(api.url + "/apps", headers=headers)
        assert mine.status_code == every.status_code == (200 if wanted is None else 206)
        assert mine.json() == every.json()
        assert [a["name"] for a in mine.json()] == ["alpha", "demo"][: 2 if wanted is None else 1]
        assert _headers(mine) == _headers(every)
    assert web.get(api.url + "/users/~/apps").status_code == 401


@pytest.mark.parametrize("stopping", [False, True])
def test_a_tail_whose_read_fails_is_asked_back_later_and_after_a_restart_if_serve_is_stopping(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch, stopping: bool
) -> None:
    """A tail's stream that a failed read of the store ends is ended properly, asking its
    client back in FAILED_RETRY_MS; when serve is stopping meanwhile, after the restart's
    delay, as any tail serve's stop ends: the failure's 5 s had the heroku CLI find no
    server yet and give up. Called as ASGI, in-process: a read that fails as serve stops
    cannot be timed in a real one."""
    config = ServeConfig(store_path=herolog_home / "logs.db", port=0, api_key=KEY)
    append_lines(config.store_path, "demo", line("hi"))
    app = HerologApp(config, Writer(config.store_path, config.history))

    async def failing(*args: object) -> None:
        if stopping:
            app.sessions.closing.set()
        raise store_module.StoreError("cannot read the store: out of open files")

    async def call() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            made = await client.post(
                "/apps/demo/log-sessions", json={"tail": True, "lines": 10}, headers=AUTH
            )
            monkeypatch.setattr(app.sessions, "stream", failing)
            text = (await client.get(made.json()["logplex_url"], headers=EVENTS)).text
        await app.broadcaster.close()
        return text

    restart = sessions_module.end_for_restart(config.drain_timing.flush_s).decode()
    failed = f"retry: {sessions_module.FAILED_RETRY_MS}\n\n"
    assert asyncio.run(call()) == (restart if stopping else failed)
