"""The HTTPS drain intake, against the real uvicorn server on a free port."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from herolog.parser import LogLine, format_syslog, frame
from herolog.server.config import Credentials
from herolog.store import PROBE_BYTES
from tests import web
from tests.helpers import decode_attributes, fixture_view
from tests.server.conftest import Running, ServerFactory, running_server

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "logplex-cases.json").read_text()
)


def body(*messages: str, n: int = 1) -> bytes:
    lines = [
        LogLine(
            "2024-03-05T09:14:07.418233+00:00", "", "app", "web.1", f"{m} {i}", 190, "host", None
        )
        for m in messages
        for i in range(n)
    ]
    return frame(format_syslog(line) for line in lines)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server for the module's parametrized tests, each posting to an app of its own and
    checking what the store holds as a whole against what it held before: a server of their
    own cost each case half a second to start and stop."""
    with running_server(tmp_path_factory.mktemp("intake") / "logs.db") as running:
        yield running


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_every_fixture_case_over_http(shared: Running, case: dict[str, Any]) -> None:
    app = f"case-{CASES.index(case)}"
    before = len(shared.lines())
    response = shared.post(app, base64.b64decode(case["body_b64"]))
    if case.get("error"):
        assert response.status_code == 400
        assert response.text.startswith("bad logplex framing: frame ")
        assert " at byte " in response.text
        assert len(shared.lines()) == before
        return
    assert response.status_code == 204
    assert response.content == b""
    got = fixture_view(shared.lines(app))
    assert got == case["lines"]
    assert len(shared.lines()) == before + len(got)


def test_query_parameters_become_attributes(served: Running) -> None:
    assert (
        served.post(
            "demo", body("a"), params={"ddsource": "heroku", "env": "prod", "team": "core"}
        ).status_code
        == 204
    )
    assert served.post("demo", body("b")).status_code == 204
    first, second = served.lines("demo")
    assert decode_attributes(first) == {"ddsource": "heroku", "env": "prod", "team": "core"}
    assert decode_attributes(second) == {}


def test_healthz_404_405(served: Running) -> None:
    # A healthy server answers without writing (a failing one writes a probe: test_faults).
    wal = Path(f"{served.server.config.store_path}-wal")
    before = wal.stat().st_size
    assert web.get(f"{served.url}/healthz").status_code == 200
    assert wal.stat().st_size - before < PROBE_BYTES
    missing = web.post(f"{served.url}/nope")
    assert missing.status_code == 404
    assert "/apps/APP/logs" in missing.text
    wrong = web.get(f"{served.url}/apps/demo/logs")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    for path in ("/healthz", "/stats"):
        posted = web.post(f"{served.url}{path}")
        assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
        assert posted.text == "use GET or HEAD\n"


def test_head_where_get_works(make_server: ServerFactory) -> None:
    """Load balancers check /healthz with HEAD: it, and /stats, answer HEAD as GET, with no
    body; the intake takes POST only, so HEAD there is the 405 GET gets."""
    running = make_server(api_key="k")
    key = {"Authorization": "Bearer k"}
    for path, headers in [("/healthz", {}), ("/stats", key), ("/stats", {})]:
        get = web.get(running.url + path, headers=headers)
        head = web.head(running.url + path, headers=headers)
        assert head.status_code == get.status_code, path
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.headers.get("www-authenticate") == get.headers.get("www-authenticate")
        assert head.content == b""
    assert web.head(f"{running.url}/stats", headers=key).status_code == 200
    assert web.head(f"{running.url}/stats").status_code == 401
    for path in ("/healthz", "/stats"):
        wrong = web.put(running.url + path, headers=key)
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET, HEAD"
    for method in ("GET", "HEAD"):
        intake = web.request(method, f"{running.url}/apps/demo/logs")
        assert intake.status_code == 405
        assert intake.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/logplex-1", 204),
        ("application/logplex-1; charset=utf-8", 204),
        ("Application/Logplex-1", 204),
        ("text/plain", 415),
        (None, 415),
    ],
)
def test_content_type(shared: Running, content_type: str | None, status: int) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    before = len(shared.lines())
    response = web.post(f"{shared.url}/apps/demo/logs", content=body("x"), headers=headers)
    assert response.status_code == status
    if status == 415:
        assert "application/logplex-1" in response.text
        assert len(shared.lines()) == before


def test_basic_auth(make_server: ServerFactory) -> None:
    running = make_server(auth=Credentials("drain", "s3cret pass"))
    refused = running.post("demo", body("x"))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Basic realm="herolog"'
    assert running.post("demo", body("x"), auth=("drain", "wrong")).status_code == 401
    assert running.post("demo", body("x"), auth=("other", "s3cret pass")).status_code == 401
    assert (
        running.post("demo", body("x"), headers={"Authorization": "Basic !!!"}).status_code == 401
    )
    assert (
        running.post("demo", body("x"), headers={"Authorization": "Bearer s3cret pass"}).status_code
        == 401
    )
    assert running.lines() == []
    # what a drain URL like https://drain:s3cret%20pass@host/... sends
    url = f"http://drain:s3cret%20pass@127.0.0.1:{running.server.http_port}/apps/demo/logs"
    ok = web.post(url, content=body("x"), headers={"Content-Type": "application/logplex-1"})
    assert ok.status_code == 204
    assert len(running.lines()) == 1
    assert "s3cret" not in running.log.getvalue()
    assert "drain:PASSWORD@" in running.log.getvalue()


def test_the_drain_url_in_the_banner_works_with_any_credentials(
    make_server: ServerFactory,
) -> None:
    """The URL serve prints for heroku drains:add, with the password put in its place, as
    the banner says to write it: credentials holding @, :, / or a space included."""
    password = "p@ss:w/rd %"
    running = make_server(auth=Credentials("dr@in x", password))
    (command,) = [line for line in running.server.banner() if "drains:add" in line]
    url = command.split("'")[1]
    assert "percent-encoded" in command
    assert "dr%40in%20x:PASSWORD@" in url
    url = url.replace("PASSWORD", quote(password, safe=""), 1).replace("APP", "demo")
    sent = web.post(url, content=body("x"), headers={"Content-Type": "application/logplex-1"})
    assert sent.status_code == 204
    assert len(running.lines()) == 1
    assert password not in running.log.getvalue()


def test_body_over_the_limit_is_413_and_stores_nothing(make_server: ServerFactory) -> None:
    running = make_server(max_body=4096)
    big = body("x" * 100, n=100)
    assert len(big) > 4096
    declared = running.post("demo", big)
    assert declared.status_code == 413
    assert "4,096-byte limit" in declared.text
    chunked = running.post("demo", iter([big[:3000], big[3000:]]))
    assert chunked.status_code == 413
    assert running.lines() == []
    assert running.post("demo", body("small")).status_code == 204  # still serving


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_before_it_is_all_sent(
    make_server: ServerFactory, framing: str
) -> None:
    running = make_server(max_body=4096)
    with socket.create_connection(("127.0.0.1", running.server.http_port or 0)) as conn:
        conn.settimeout(10)
        head = "POST /apps/demo/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/logplex-1\r\n"
        if framing == "content-length":  # 100 MB announced, not a byte of it sent
            conn.sendall(f"{head}Content-Length: 100000000\r\n\r\n".encode())
        else:  # 5 KiB sent of a body that never ends
            conn.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            conn.sendall(b"1400\r\n" + b"x" * 0x1400 + b"\r\n")
        assert conn.recv(1024).startswith(b"HTTP/1.1 413 ")
    assert running.lines() == []


def test_a_bomb_behind_a_member_that_fills_the_limit_is_not_inflated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Concatenated members: once the first has used up the room, the next is not
    decompressed at all (zlib reads a max_length of 0 as no limit)."""
    import zlib

    from herolog.server.http import HTTPError, gunzip

    inflated: list[int] = []
    decompressobj = zlib.decompressobj

    class Counting:
        def __init__(self, wbits: int) -> None:
            self.real = decompressobj(wbits=wbits)

        def decompress(self, data: bytes, max_length: int) -> bytes:
            out = self.real.decompress(data, max_length)
            inflated.append(len(out))
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    limit = 1000
    data = gzip.compress(b"a" * (limit + 1)) + gzip.compress(b"\0" * (20 << 20))
    with pytest.raises(HTTPError) as refused:
        gunzip(Counting(31), data, limit + 1, limit)
    assert refused.value.status == 413
    assert sum(inflated) <= limit + 1


def test_gzip_bodies_and_bombs(make_server: ServerFactory) -> None:
    running = make_server(max_body=64 * 1024)
    plain = body("compressed", n=20)
    assert (
        running.post("demo", gzip.compress(plain), headers={"Content-Encoding": "gzip"}).status_code
        == 204
    )
    assert len(running.lines()) == 20
    bomb = gzip.compress(b"9" * (50 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    response = running.post("demo", bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert (
        running.post("demo", b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"}).status_code
        == 400
    )
    assert (
        running.post(
            "demo", gzip.compress(plain)[:-10], headers={"Content-Encoding": "gzip"}
        ).status_code
        == 400
    )
    other = running.post("demo", plain, headers={"Content-Encoding": "br"})
    assert other.status_code == 415
    assert len(running.lines()) == 20


def test_a_gzip_body_is_held_to_the_limit_as_sent_too(make_server: ServerFactory) -> None:
    """README: a gzip body is over --max-body when what is sent is, as well as when what it
    decodes to is: one that came out larger than its lines (stored blocks, text that does
    not compress) is refused even though its lines fit."""
    running = make_server(max_body=4096)
    plain = body("x" * 308, n=11)
    packed = gzip.compress(plain, compresslevel=0)
    assert len(plain) <= 4096 < len(packed)
    response = running.post("demo", packed, headers={"Content-Encoding": "gzip"})
    assert (response.status_code, response.text) == (413, "the body is over the 4,096-byte limit\n")
    assert running.lines() == []
    assert running.post("demo", plain).status_code == 204


def test_content_encoding_is_case_insensitive(served: Running) -> None:
    """RFC 9110 8.4.1: content codings are case-insensitive; a sender's "GZIP" is gzip."""
    plain = body("shouted", n=3)
    response = served.post("demo", gzip.compress(plain), headers={"Content-Encoding": "GZIP"})
    assert response.status_code == 204
    response = served.post("demo", plain, headers={"Content-Encoding": "Identity"})
    assert response.status_code == 204
    assert [line.message for line in served.lines()] == [f"shouted {i}" for i in range(3)] * 2


def test_retried_frame_id_is_stored_once(served: Running) -> None:
    headers = {"Logplex-Frame-Id": "09C557EAFCFB6CF2740EE62F62971098", "Logplex-Msg-Count": "3"}
    for _ in range(3):
        assert served.post("demo", body("retry", n=3), headers=headers).status_code == 204
    assert len(served.lines()) == 3
    other_app = served.post("other", body("retry", n=3), headers=headers)
    assert other_app.status_code == 204
    assert len(served.lines("other")) == 3
    # An empty batch (herolog run --server's check) is no duplicate; a retry's count is right.
    assert served.post("demo", b"", headers={"Logplex-Msg-Count": "0"}).status_code == 204
    stats = served.server.stats
    assert (stats.duplicate_batches, stats.batches_stored, stats.msg_count_mismatches) == (2, 3, 0)


def test_a_long_frame_id_is_remembered_by_its_digest(served: Running) -> None:
    """The writer holds every remembered id in memory: a sender's ids of kilobytes each
    must not cost it kilobytes each."""
    long_id = "F" * 60_000
    for _ in range(2):
        headers = {"Logplex-Frame-Id": long_id}
        assert served.post("demo", body("long id"), headers=headers).status_code == 204
    near = {"Logplex-Frame-Id": long_id[:-1] + "E"}  # another id: stored
    assert served.post("demo", body("near"), headers=near).status_code == 204
    assert [line.message for line in served.lines()] == ["long id 0", "near 0"]
    with closing(sqlite3.connect(served.server.config.store_path)) as db:
        remembered = [row[0] for row in db.execute("SELECT frame_id FROM frame_ids ORDER BY id")]
    assert [len(frame_id) for frame_id in remembered] == [71, 71]
    assert all(frame_id.startswith("sha256:") for frame_id in remembered)


def test_a_frame_id_of_64_bytes_is_remembered_as_it_is_and_one_of_65_by_its_digest(
    served: Running,
) -> None:
    """README: an id over 64 bytes is remembered by its SHA-256; one of 64 is not."""
    for size in (64, 65):
        headers = {"Logplex-Frame-Id": "A" * size}
        for _ in range(2):
            assert served.post("demo", body(f"id {size}"), headers=headers).status_code == 204
    assert [line.message for line in served.lines()] == ["id 64 0", "id 65 0"]
    with closing(sqlite3.connect(served.server.config.store_path)) as db:
        remembered = [row[0] for row in db.execute("SELECT frame_id FROM frame_ids ORDER BY id")]
    assert remembered[0] == "A" * 64
    assert remembered[1].startswith("sha256:")
    assert len(remembered[1]) == 71


def test_missing_logplex_headers_are_fine_and_wrong_counts_are_counted(served: Running) -> None:
    assert served.post("demo", body("a", n=2)).status_code == 204
    assert (
        served.post("demo", body("b", n=2), headers={"Logplex-Msg-Count": "3"}).status_code == 204
    )
    assert (
        served.post("demo", body("c", n=2), headers={"Logplex-Msg-Count": "two"}).status_code == 204
    )
    # More digits than int() takes (4,300): a count like any other wrong one, not a 500.
    many = {"Logplex-Msg-Count": "9" * 5000}
    assert served.post("demo", body("d", n=2), headers=many).status_code == 204
    assert len(served.lines()) == 8
    stats = web.get(f"{served.url}/stats").json()
    assert stats["msg_count_mismatches"] == 3
    assert stats["lines_stored"] == 8


@pytest.mark.parametrize("app", ["..", "a..b", "-x", "caf%C3%A9", "a%2Fb", "x" * 101])
def test_bad_app_names(shared: Running, app: str) -> None:
    before = len(shared.lines())
    response = shared.post(app, body("x"))
    assert response.status_code in (400, 404)
    assert len(shared.lines()) == before


def test_concurrent_requests_are_all_stored(served: Running) -> None:
    with web.Client() as client, ThreadPoolExecutor(16) as pool:

        def send(i: int) -> int:
            response = client.post(
                f"{served.url}/apps/app{i % 4}/logs",
                content=body(f"req {i}", n=10),
                headers={"Content-Type": "application/logplex-1"},
            )
            return response.status_code

        statuses = list(pool.map(send, range(200)))
    assert statuses == [204] * 200
    assert len(served.lines()) == 2000
    assert sorted({x.app for x in served.lines()}) == ["app0", "app1", "app2", "app3"]


def test_stats_need_the_api_key_when_there_is_one(make_server: ServerFactory) -> None:
    running = make_server(api_key="k3y")
    assert web.get(f"{running.url}/stats").status_code == 401
    assert (
        web.get(f"{running.url}/stats", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    ok = web.get(f"{running.url}/stats", headers={"Authorization": "Bearer k3y"})
    assert ok.status_code == 200
    assert ok.text.endswith("}\n")
    assert not ok.text.endswith("\n\n")  # one newline ends it, as every answer
    assert web.get(f"{running.url}/stats", auth=("", "k3y")).status_code == 200
    assert running.post("demo", body("x")).status_code == 204  # the intake does not need it


def test_stats_take_the_intake_credentials_when_there_is_no_api_key(
    make_server: ServerFactory,
) -> None:
    """README: without --api-key, GET /stats takes the --auth credentials."""
    running = make_server(auth=Credentials("drain", "s3cret"))
    refused = web.get(f"{running.url}/stats")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Basic realm="herolog"'
    assert web.get(f"{running.url}/stats", auth=("drain", "wrong")).status_code == 401
    assert web.get(f"{running.url}/stats", auth=("drain", "s3cret")).status_code == 200


def test_history_option_sets_the_store(make_server: ServerFactory) -> None:
    running = make_server(history=5)
    assert running.post("demo", body("x", n=12)).status_code == 204
    assert [x.message for x in running.lines()] == [f"x {i}" for i in range(7, 12)]
    assert "keeping 5 lines per app" in running.log.getvalue()


@pytest.mark.parametrize(("history", "kept"), [(1, "1 line"), (2, "2 lines")])
def test_the_start_up_line_of_a_history_of_one_says_1_line(
    make_server: ServerFactory, history: int, kept: str
) -> None:
    running = make_server(history=history)
    assert f"herolog serve: store {running.server.config.store_path}, keeping {kept} per app\n" in (
        running.log.getvalue()
    )


def test_a_dead_store_writer_is_restarted(served: Running) -> None:
    import os
    import signal
    import time

    assert served.post("demo", body("before")).status_code == 204
    process = served.server.writer._proc
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = served.post("demo", body("after")).status_code
        statuses.append(status)
        if status == 204:
            break
        time.sleep(0.05)
    assert statuses[-1] == 204, statuses
    assert set(statuses) <= {204, 503}  # Logplex retries a 503
    assert served.server.writer._proc is not process
    assert [x.message for x in served.lines()][-1] == "after 0"


def test_gzip_bodies_of_several_members(served: Running) -> None:
    two = gzip.compress(body("first")) + gzip.compress(body("second"))  # cat a.gz b.gz
    assert served.post("demo", two, headers={"Content-Encoding": "gzip"}).status_code == 204
    assert [x.message for x in served.lines()] == ["first 0", "second 0"]
    trailing = served.post(
        "demo", gzip.compress(body("x")) + b"garbage", headers={"Content-Encoding": "gzip"}
    )
    assert trailing.status_code == 400
    assert len(served.lines()) == 2


def test_gzip_bodies_of_too_many_members_are_refused(served: Running) -> None:
    """Each member costs the event loop a new decoder, and zlib copies what follows it:
    5 MB of empty members (20 bytes each) held serve's event loop (the intake, the API,
    every tail) for seconds. Concatenated files come in a few members; a batch of one line
    a member is at the limit."""
    gzipped = {"Content-Encoding": "gzip"}
    many = b"".join(gzip.compress(body(f"line {i}")) for i in range(1000))
    assert served.post("demo", many, headers=gzipped).status_code == 204
    assert len(served.lines()) == 1000
    empty = gzip.compress(b"", mtime=0)
    for members in (empty * 1001, many + empty, empty * ((5 << 20) // len(empty))):
        refused = served.post("demo", members, headers=gzipped)
        assert refused.status_code == 400
        assert "more than 1,000 members" in refused.text
    assert len(served.lines()) == 1000


def test_app_names_are_not_decoded_twice(served: Running) -> None:
    response = web.post(
        f"{served.url}/apps/%2541bc/logs",
        content=body("x"),
        headers={"Content-Type": "application/logplex-1"},
    )
    assert response.status_code == 400  # the app is "%41bc", not "Abc"
    assert served.lines() == []


def test_writer_with_descriptors_past_1023(make_server: ServerFactory) -> None:
    import os
    import resource
    import signal
    import socket
    import time

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= 2048, "this test needs `ulimit -n 2048`"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    crowd = [socket.socket() for _ in range(1100)]
    try:
        running = make_server()
        assert running.post("demo", body("high fd")).status_code == 204
        process = running.server.writer._proc
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        health = []
        while time.monotonic() < deadline:
            # Looked for before the health is asked: asked first, a 200 from before serve
            # noticed the old writer's end passed for the new one's, started but not ready
            # yet (the POST after it got 503).
            restarted = running.server.writer._proc is not process
            health.append(web.get(f"{running.url}/healthz").status_code)
            if health[-1] == 200 and restarted:
                break
            time.sleep(0.02)
        assert health[-1] == 200
        assert set(health) <= {200, 503}
        assert running.post("demo", body("after restart")).status_code == 204
        assert [x.message for x in running.lines()] == ["high fd 0", "after restart 0"]
    finally:
        for sock in crowd:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_checkpoints_go_on_after_a_failure(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed checkpoint is said once, and so is the first that works after it: serve's
    log said the failure and never its end."""
    import threading

    from herolog import store_writer
    from herolog.store import SQLiteStore

    SQLiteStore.open(herolog_home / "logs.db").close()
    calls = []
    stopped = threading.Event()

    def checkpoint(self: SQLiteStore) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database or disk is full")
        if len(calls) == 5:
            stopped.set()

    monkeypatch.setattr(SQLiteStore, "checkpoint", checkpoint)
    monkeypatch.setattr(store_writer, "CHECKPOINT_EVERY_S", 0.01)
    thread = threading.Thread(
        target=store_writer._checkpoints, args=(herolog_home / "logs.db", stopped)
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert len(calls) >= 5
    err = capsys.readouterr().err
    assert err.count("checkpoint failed, retrying: database or disk is full") == 1
    # and its end, once: one who freed the disk learns that the WAL stops growing
    assert err.count("checkpoints work again") == 1
    assert err.index("checkpoint failed") < err.index("checkpoints work again")
