"""Tail sessions outliving serve: kept in the store as it stops, taken by the next serve."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from herolog.server.config import DrainTiming
from tests import web
from tests.helpers import constants_env, line
from tests.server.conftest import Running, ServeProcess, running_server
from tests.server.test_api import (
    AUTH,
    EVENTS,
    KEY,
    Tail,
    session,
    store_demo,
    store_lines,
    wait_for,
)


def on(running: Running, url: str) -> str:
    """``url``, a session URL of a serve before, at ``running`` (another port)."""
    path = url.split("/sessions/", 1)[1]
    return f"{running.url}/sessions/{path}"


def test_the_next_serve_on_the_store_goes_on_with_a_tail_session(herolog_home: Path) -> None:
    path = herolog_home / "logs.db"
    with running_server(path, api_key=KEY) as first:
        store_demo(first)
        url = session(first, lines=1, tail=True, dyno="web")
        tail = Tail(url)
        try:
            assert tail.wait_for(1) == ["2024-03-05T09:00:06.000000+00:00 app[web.1]: ERROR: boom"]
            store_lines(first, "demo", line("seen", second=10))
            assert tail.wait_for(2)[1].endswith(": seen")
            last_id = tail.ids[-1]
        finally:
            tail.close()
        store_lines(first, "demo", line("unseen", second=11))
    store_lines(first, "demo", line("while down", second=12), line("no", dyno="worker.1"))
    store_lines(first, "other", line("another app's", second=12))
    with running_server(path, api_key=KEY) as second:
        again = Tail(on(second, url), **{"Last-Event-ID": last_id})
        try:
            assert again.wait_for(2) == [
                "2024-03-05T09:00:11.000000+00:00 app[web.1]: unseen",
                "2024-03-05T09:00:12.000000+00:00 app[web.1]: while down",
            ]
            store_lines(second, "demo", line("after", second=13), line("no", dyno="worker.1"))
            assert again.wait_for(3)[2] == "2024-03-05T09:00:13.000000+00:00 app[web.1]: after"
            time.sleep(0.3)
            assert len(again.lines) == 3
        finally:
            again.close()


@pytest.mark.parametrize(
    ("timing", "retry"), [(DrainTiming(), b"10000"), (DrainTiming(flush_s=2.5), b"7500")]
)
def test_a_stream_ended_by_a_stop_has_its_client_come_back_later(
    herolog_home: Path, timing: DrainTiming, retry: bytes
) -> None:
    """The heroku CLI gives up at the first reconnect that finds no server: it is to wait
    for the drains' flush (--drain-flush-timeout) and for a restarted serve to listen again."""
    received: list[bytes] = []
    with running_server(herolog_home / "logs.db", api_key=KEY, drain_timing=timing) as first:
        store_demo(first)
        url = session(first, lines=1, tail=True)

        def read() -> None:
            with web.stream("GET", url, headers=EVENTS, timeout=30) as response:
                received.extend(response.iter_raw())

        reader = threading.Thread(target=read)
        reader.start()
        # The history sent, before the stop: a stop mid-history ends the stream too.
        wait_for(lambda: b"ERROR: boom" in b"".join(received))
    reader.join(30)
    body = b"".join(received)
    assert body.endswith(b"retry: " + retry + b"\n\n")


def read_once(url: str) -> list[str]:
    tail = Tail(url)
    try:
        return tail.wait_for(1)
    finally:
        tail.close()


def status_at_the_next_serve(
    herolog_home: Path, url: str, *, wait: float = 0.0, **options: Any
) -> int:
    time.sleep(wait)
    with running_server(herolog_home / "logs.db", **options) as second:
        return web.get(on(second, url), headers={"Last-Event-ID": "1"}).status_code


def test_a_session_handed_over_needs_its_own_secret(herolog_home: Path) -> None:
    with running_server(herolog_home / "logs.db", api_key=KEY) as first:
        store_demo(first)
        store_lines(first, "other", line("another app's"))
        url = session(first, lines=1, tail=True)
        others = session(first, "other", lines=1, tail=True)
        read_once(url)
        read_once(others)
    secret = url.rsplit("=", 1)[1]
    altered = url[:-1] + ("A" if not url.endswith("A") else "B")
    another_app = url.replace(secret, others.rsplit("=", 1)[1])
    assert status_at_the_next_serve(herolog_home, altered, api_key=KEY) == 404
    assert status_at_the_next_serve(herolog_home, another_app, api_key=KEY) == 404
    # The next serve took both (and kept them for the next again): each is its app's only.
    with running_server(herolog_home / "logs.db", api_key=KEY) as third:
        store_lines(third, "other", line("for other only", second=30))
        store_lines(third, "demo", line("for demo only", second=31))
        assert read_once(on(third, others)) == [
            "2024-03-05T09:00:30.000000+00:00 app[web.1]: for other only"
        ]
        assert read_once(on(third, url)) == [
            "2024-03-05T09:00:31.000000+00:00 app[web.1]: for demo only"
        ]


@pytest.mark.slow
def test_a_session_nobody_read_for_its_ttl_is_not_handed_over(herolog_home: Path) -> None:
    with running_server(herolog_home / "logs.db", api_key=KEY) as first:
        store_demo(first)
        url = session(first, lines=1, tail=True)
        read_once(url)
        first.server.app.sessions.ttl = 0.5
    # Past its TTL by the time the next serve is asked, however quickly the stop went (a
    # session handed over keeps what it had left, 0.5 s at most).
    assert status_at_the_next_serve(herolog_home, url, wait=1.0, api_key=KEY) == 404


@pytest.mark.slow
def test_a_session_handed_over_expires_when_it_would_have(herolog_home: Path) -> None:
    """A tail session kept for the next serve expires there its TTL after its last reader
    went, as it would have at the serve before: not a whole TTL after the handover, nor
    after the next serve took it."""
    ttl = 4.0
    with running_server(herolog_home / "logs.db", api_key=KEY) as first:
        store_demo(first)
        first.server.app.sessions.ttl = ttl
        url = session(first, lines=1, tail=True)
        read_once(url)
        left = time.monotonic()
        time.sleep(ttl - 2)  # idle for half its TTL as it is handed over
    with running_server(herolog_home / "logs.db", api_key=KEY) as second:
        time.sleep(max(0.0, left + ttl + 0.2 - time.monotonic()))
        gone = web.get(on(second, url), headers={"Last-Event-ID": "1"})
        assert gone.status_code == 404


def test_a_serve_with_another_api_key_takes_no_session(herolog_home: Path) -> None:
    """A restart with a new key (the old one leaked) ends every session, as before."""
    with running_server(herolog_home / "logs.db", api_key=KEY) as first:
        store_demo(first)
        url = session(first, lines=1, tail=True)
        read_once(url)
    assert status_at_the_next_serve(herolog_home, url, api_key="a-new-key") == 404
    # Nor a serve without one; and the sessions are not left for a later serve.
    assert status_at_the_next_serve(herolog_home, url) == 404
    assert status_at_the_next_serve(herolog_home, url, api_key=KEY) == 404


def test_a_one_off_session_is_not_handed_over(herolog_home: Path) -> None:
    with running_server(herolog_home / "logs.db", api_key=KEY) as first:
        store_demo(first)
        url = session(first, lines=1)
    assert status_at_the_next_serve(herolog_home, url, api_key=KEY) == 404


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("tails", "said"),
    [
        (1, "cannot keep the tail session for the next serve (its reader will find it gone)"),
        (2, "cannot keep the 2 tail sessions for the next serve (their readers will find them"),
    ],
)
def test_tail_sessions_serve_cannot_keep_are_counted_in_the_singular_for_one(
    herolog_home: Path, serve_process: Callable[..., ServeProcess], tails: int, said: str
) -> None:
    """The store moved away under serve (which then stops) cannot keep its tail sessions:
    said as '1 tail session', where it said 'tail session(s)'. (The store looked for every
    0.1 s rather than every second.)"""
    env = constants_env({"herolog.server.STORE_WATCH_S": 0.1}, HEROLOG_API_KEY=KEY)
    server = serve_process("--port", "0", env=env)
    for _ in range(tails):
        answer = web.post(f"{server.url}/log-sessions", json={"tail": True}, headers=AUTH)
        assert answer.status_code == 201, answer.text
    (herolog_home / "logs.db").rename(herolog_home / "moved.db")
    code, err = server.finish()
    assert code == 1, err
    assert f"herolog serve: {said}" in err
    assert "(s)" not in err


def test_what_a_session_was_asked_for_is_what_the_next_serve_gives() -> None:
    """Every setting of a tail session comes back from what the store keeps of it: its
    filters, its format, and the optional record fields its client reads (MSGID)."""
    import re

    from herolog.filters import LineFilter
    from herolog.server.sessions import LogSession, _key_fingerprint, _rebuilt, _records

    wanted = LineFilter(
        app="demo",
        sources=("app", "heroku"),
        dynos=(("web", "worker.2"), ("web.1",)),
        since="2024-03-05T09:00:00.000000Z",
        until="2024-03-06T09:00:00.000000Z",
        grep=(re.compile("error|warn"),),
        exclude=(re.compile("health"),),
    )
    before = LogSession(wanted, 25, True, as_json=True, msgid=True, last_sent=41)
    salt = b"0123456789abcdef"
    records = _records(
        [(before, 1e12)], "2024-03-05T10:00:00.000000Z", salt, _key_fingerprint(KEY, salt)
    )
    [(after, expires)] = _rebuilt([text for _, text in records], KEY)
    assert expires == 1e12
    assert after.wanted == wanted
    assert (after.id, after.digest, after.lines, after.tail) == (
        before.id,
        before.digest,
        25,
        True,
    )
    assert (after.as_json, after.msgid, after.last_sent) == (True, True, 41)


def test_a_session_with_no_filter_given_twice_is_kept_as_a_serve_before_them_kept_it() -> None:
    """As a record of version 1 (one source, dyno names that must all match), which a serve
    from before repeated filters reads too, so that going back to one keeps the sessions;
    one holding a list is of version 2, which such a serve drops (its client asks anew)."""
    import json

    from herolog.filters import LineFilter
    from herolog.server.sessions import LogSession, _key_fingerprint, _rebuilt, _records

    salt = b"0123456789abcdef"
    fingerprint = _key_fingerprint(KEY, salt)

    def kept(wanted: LineFilter) -> dict[str, Any]:
        [(_, text)] = _records(
            [(LogSession(wanted, 25, True), 1e12)], "2024-03-05T10:00:00.000000Z", salt, fingerprint
        )
        [(after, _)] = _rebuilt([text], KEY)
        assert after.wanted == wanted
        record: dict[str, Any] = json.loads(text)
        return record

    single = kept(LineFilter(app="demo", sources=("app",), dynos=(("web",), ("web.1",))))
    assert (single["version"], single["source"], single["dynos"]) == (1, "app", ["web", "web.1"])
    assert "sources" not in single
    none = kept(LineFilter(app="demo"))
    assert (none["version"], none["source"], none["dynos"]) == (1, None, [])
    listed = kept(LineFilter(app="demo", dynos=(("web", "worker"),)))
    assert (listed["version"], listed["sources"], listed["dynos"]) == (2, [], [["web", "worker"]])
    assert "source" not in listed
    listed["dynos"] = ["web"]  # not a list of names: not a record this herolog wrote
    assert _rebuilt([json.dumps(listed)], KEY) == []
