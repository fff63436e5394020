"""Secrets stay secret, session URLs are unguessable and expire, HTTPS drains verify
certificates. (Missing and malformed credentials: test_api, test_intake, test_abuse.)"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import trustme

from herolog.drains import scrub
from herolog.parser import format_syslog, frame
from herolog.server.config import DrainTiming
from tests import web
from tests.helpers import QuietHandler, herolog_env, invoke, line, serving
from tests.server.conftest import (
    ServeProcess,
    ServerFactory,
    own_certificate,
    running_server,
)
from tests.server.sinks import HTTPSink, wait_until
from tests.server.test_api import Tail, session, store_lines
from tests.server.test_forwarding import add_drain, numbered, post

INTAKE_PASSWORD = "s3cret-intake-pw"
API_KEY = "s3cret-api-key"
DRAIN_PASSWORD = "s3cret-drain-pw"
DRAIN_KEY = "s3cret-drain-key"
SECRETS = [
    INTAKE_PASSWORD,
    API_KEY,
    DRAIN_PASSWORD,
    DRAIN_KEY,
    # ...and the form they travel in: a Basic header
    base64.b64encode(f"drain:{INTAKE_PASSWORD}".encode()).decode(),
    base64.b64encode(f"user:{DRAIN_PASSWORD}".encode()).decode(),
    base64.b64encode(f":{API_KEY}".encode()).decode(),
]


def body(*messages: str) -> bytes:
    return frame(format_syslog(line(m)) for m in messages)


def test_secrets_appear_in_no_output_of_serve_or_the_commands(
    herolog_home: Path, tmp_path: Path
) -> None:
    """serve with --auth and --api-key forwards to drains whose URLs carry a password and a
    key, and those drains fail every way that produces a message: an answer that quotes
    the secrets, a refused connection, an overflow. Then every human-facing output (serve's
    stderr, the commands' output and errors, the app's history, the intake's and the API's
    error answers) is searched for each secret."""
    dead = HTTPSink()
    dead.down()  # a port that refuses connections
    echo = base64.b64encode(f"user:{DRAIN_PASSWORD}".encode()).decode()
    quoting = HTTPSink(  # fails long enough to overflow, then refuses a batch, then takes
        statuses=[503] * 5 + [400],
        reply=f"bad api_key={DRAIN_KEY} for Authorization: Basic {echo}\n".encode(),
    )
    saved_umask = os.umask(0)  # the store must be private whatever the umask
    stdout = (tmp_path / "serve-stdout").open("wb")
    try:
        server = ServeProcess(
            "--port", "0", "--drain-buffer", "5", "--drain-flush-timeout", "0.2",
            env=herolog_env(HEROLOG_AUTH=f"drain:{INTAKE_PASSWORD}", HEROLOG_API_KEY=API_KEY),
            stdout=stdout,
        )  # fmt: skip
    finally:
        os.umask(saved_umask)
        stdout.close()
    outputs: list[str] = []
    try:
        remote = {"HEROLOG_URL": server.url, "HEROLOG_API_KEY": API_KEY}
        drain_urls = [
            quoting.url("/in", f"user:{DRAIN_PASSWORD}", f"api_key={DRAIN_KEY}"),
            f"http://user:{DRAIN_PASSWORD}@127.0.0.1:{dead.port}/x?token={DRAIN_KEY}",
        ]
        for url in drain_urls:
            code, out, err = invoke("drain", "add", url, "-a", "demo", env=remote)
            assert code == 0, err
            outputs += [out, err]
        intake = f"{server.url}/apps/demo/logs"
        logplex = {"Content-Type": "application/logplex-1"}

        def send(*messages: str) -> None:
            answer = web.post(
                intake, content=body(*messages), headers=logplex, auth=("drain", INTAKE_PASSWORD)
            )
            assert answer.status_code == 204

        def forwarding() -> bool:
            send("are the drains there yet?")
            time.sleep(0.1)
            return quoting.arrived > 0

        wait_until(forwarding, what="the server to take up the drains")
        for i in range(5):
            send(*[f"line {i}.{j}" for j in range(5)])
        for auth in [None, ("drain", "wrong"), ("drain", INTAKE_PASSWORD + "x")]:
            refused = web.post(intake, content=body("no"), headers=logplex, auth=auth)
            assert refused.status_code == 401
            outputs.append(refused.text)
        for key in [None, "wrong", API_KEY + "x"]:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            for path in ("/apps/demo/log-drains", "/stats", "/apps/demo"):
                refused = web.get(server.url + path, headers=headers)
                assert refused.status_code == 401, path
                outputs.append(refused.text)
        stats = web.get(f"{server.url}/stats", headers={"Authorization": f"Bearer {API_KEY}"})
        assert stats.status_code == 200
        outputs.append(stats.text)

        def failing_drains_told() -> bool:
            _, out, _ = invoke("drain", "list", "--json", env=remote)
            drains = {d["url"]: d["delivery"] for d in json.loads(out)}
            return bool(drains) and all(d["last_error"] for d in drains.values())

        wait_until(failing_drains_told, timeout=30, what="both drains to fail")
        for args in (["drain", "list"], ["drain", "list", "--json"], ["drain"]):
            for env in (remote, {}):  # through the API, and the local store
                code, out, err = invoke(*args, env=env)
                assert code == 0, err
                outputs += [out, err]
        assert any("bad api_key=*** for Authorization: Basic ***" in x for x in outputs)
        wait_until(lambda: "Error L10" in invoke("logs", "-a", "demo")[1], what="an L10")
        for env in (remote, {}):
            code, out, err = invoke("logs", "-a", "demo", "-n", "1500", env=env)
            assert code == 0, err
            outputs += [out, err]
        for args in (
            ["drain", "add", f"ftp://user:{DRAIN_PASSWORD}@h.example/?api_key={DRAIN_KEY}"],
            ["drain", "remove", f"http://user:{DRAIN_PASSWORD}@nowhere.example/"],
            ["drain", "add", drain_urls[0]],  # already there
        ):
            code, out, err = invoke(*args, "-a", "demo", env=remote)
            assert code != 0
            outputs += [out, err]
        code, out, err = invoke("logs", "-a", "demo", env={**remote, "HEROLOG_API_KEY": "wrong"})
        assert code == 1
        outputs += [out, err]
        for name in ("logs.db", "logs.db-wal", "logs.db-shm"):
            assert (herolog_home / name).stat().st_mode & 0o777 == 0o600, name
        code, out, err = invoke("drain", "remove", drain_urls[1], "-a", "demo", env=remote)
        assert code == 0, err
        outputs += [out, err]
        # A dead drain the server has not dropped yet has 0.2 s to deliver as it stops, and
        # its shutdown report is checked with the rest.
        server.proc.send_signal(signal.SIGTERM)
        code, stderr = server.finish()
        assert code == 0, stderr
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.finish()
        dead.close()
        quoting.close()
    assert "drain:PASSWORD@" in stderr
    everything = "\n".join([stderr, (tmp_path / "serve-stdout").read_text(), *outputs])
    for secret in SECRETS:
        assert secret not in everything, secret


def test_drain_errors_never_quote_the_drains_credentials() -> None:
    """A drain's error answer is shown in drain list: whatever of the URL's secrets it
    quotes is blanked, in the forms they were sent in too."""
    url = "https://us%40er:p%40ss@logs.example/in?api_key=K3Y&ddsource=heroku"
    basic = base64.b64encode(b"us@er:p@ss").decode()
    answer = f"401: key K3Y, password p@ss (p%40ss), header Basic {basic} refused"
    assert scrub(answer, url) == "401: key ***, password *** (***), header Basic *** refused"
    token = base64.b64encode(b"T0KEN-123:").decode()  # a lone token: the user, no password
    assert scrub(f"who is T0KEN-123 ({token})", "https://T0KEN-123@logs.example/in") == (
        "who is *** (***)"
    )


def _sig(url: str) -> str:
    return parse_qs(urlsplit(url).query)["sig"][0]


def test_session_urls_carry_a_long_random_secret(make_server: ServerFactory) -> None:
    running = make_server()
    store_lines(running, "demo", line("hi"))
    urls = [session(running, lines=1) for _ in range(10)]
    secrets = [_sig(url) for url in urls]
    assert len(set(secrets)) == len(secrets)
    for secret in secrets:  # 43 characters of base64url: 256 random bits
        assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", secret), secret
    # One session's secret opens no other session.
    assert web.get(urls[0].replace(secrets[0], secrets[1])).status_code == 404
    assert web.get(urls[0].replace(secrets[0], secrets[0][:-1])).status_code == 404
    assert web.get(urls[0]).status_code == 200


def test_a_tail_session_expires_once_nobody_reads_it(make_server: ServerFactory) -> None:
    running = make_server()
    sessions = running.server.app.sessions
    sessions.ttl = 0.2
    store_lines(running, "demo", line("hi"))
    url = session(running, lines=1, tail=True)
    tail = Tail(url)
    try:
        tail.wait_for(1)
        time.sleep(0.4)  # read for longer than the TTL: a session being read stays
        session(running, lines=1)  # creating another expires what is due
        post(running, "demo", numbered(1))
        assert tail.wait_for(2)[-1].endswith("line 0")
        # and is still there to resume, as a reader whose connection dropped does
        with web.stream("GET", url, timeout=10) as resumed:
            assert resumed.status_code == 200
    finally:
        tail.close()
    wait_until(lambda: not sessions._readers, what="the reader to go")
    time.sleep(0.3)
    gone = web.get(url)
    assert gone.status_code == 404
    assert gone.json()["id"] == "not_found"


@pytest.fixture
def https_sink(tmp_path: Path) -> Iterator[tuple[HTTPSink, Path]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    sink = HTTPSink(context=context)
    yield sink, ca_file
    sink.close()


def test_https_drains_verify_certificates(
    make_server: ServerFactory,
    https_sink: tuple[HTTPSink, Path],
    monkeypatch: pytest.MonkeyPatch,
    quick_forwarder: None,
) -> None:
    sink, ca_file = https_sink
    running = make_server(drain_timing=DrainTiming(backoff_cap_s=0.1, flush_s=0.1))
    untrusted = add_drain(running, "demo", sink.url("/untrusted"))
    post(running, "demo", numbered(2))
    workers = running.server.app.forwarder.workers.values()
    first = next(w for w in workers if w.drain.token == untrusted)
    wait_until(lambda: first.last_error, what="the certificate to be refused")
    # In a syslog+tls drain's words, not OpenSSL's ('[SSL: CERTIFICATE_VERIFY_FAILED] ...').
    assert first.last_error == (
        f"cannot connect to {sink.url()[8:].split('/')[0]}: TLS certificate rejected:"
        " unable to get local issuer certificate"
    )
    assert sink.requests == []
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # now the CA is trusted
    add_drain(running, "demo", sink.url("/trusted"))
    post(running, "demo", numbered(2, start=2))
    wait_until(lambda: sink.delivered(), what="delivery over verified HTTPS")
    assert {r.path for r in sink.requests} == {"/trusted"}


def test_api_answers_are_never_stored_by_a_cache(make_server: ServerFactory) -> None:
    """Drain objects carry their URLs' credentials and a log session its secret URL: no
    cache between the client and the server (a proxy's, a browser's disk) may keep them.
    Errors too, as every answer of the API is made the same way."""
    running = make_server(api_key=API_KEY)
    store_lines(running, "demo", line("hi"))
    auth = {"Authorization": f"Bearer {API_KEY}"}
    drains = f"{running.url}/apps/demo/log-drains"
    url = f"https://user:{DRAIN_PASSWORD}@logs.example/in?api_key={DRAIN_KEY}"
    answers = [
        web.post(drains, json={"url": url}, headers=auth),
        web.get(drains, headers=auth),
        web.get(f"{running.url}/log-drains", headers=auth),
        web.get(f"{drains}/{quote(url, safe='')}", headers=auth),
        web.head(drains, headers=auth),
        web.post(f"{running.url}/apps/demo/log-sessions", json={}, headers=auth),
        web.get(f"{running.url}/apps/demo", headers=auth),
        web.get(f"{running.url}/account", headers=auth),
        web.get(drains),  # 401
        web.get(f"{running.url}/apps/nope/log-drains", headers=auth),  # 404
        web.get(f"{running.url}/sessions/{'0' * 8}-0000-0000-0000-{'0' * 12}?sig=x"),  # 404
    ]
    assert DRAIN_PASSWORD in answers[1].text
    for answer in answers:
        where = f"{answer.request.method} {answer.request.url.path}: {answer.status_code}"
        assert answer.headers.get("cache-control") == "no-store", where
        assert answer.headers.get("x-content-type-options") == "nosniff", where


@pytest.mark.parametrize(
    "headers",
    [
        # DNS rebinding: a page whose name now resolves to 127.0.0.1 posts to itself
        {"Host": "rebound.example:8514", "Origin": "http://rebound.example:8514"},
        {"Origin": "null"},  # a sandboxed frame, a page from a file
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_web_pages_cannot_write_to_the_intake(
    make_server: ServerFactory, headers: dict[str, str]
) -> None:
    """Without --auth, the loopback intake takes whatever this machine sends it, and a web
    page open in a browser here is on this machine too: the preflight keeps a page from
    sending application/logplex-1 elsewhere, but not to a name of its own rebound to
    127.0.0.1. Browsers say where a request comes from; drains never do."""
    running = make_server()
    refused = running.post("demo", body("from a web page"), headers=headers)
    assert refused.status_code == 403
    assert "browser" in refused.text
    assert running.lines() == []
    assert running.post("demo", body("from a drain")).status_code == 204


def _handshake(port: int, cafile: Path, ciphers: str | None = None) -> str:
    """The cipher a TLS 1.2 client offering only ``ciphers`` (else its defaults) agrees on
    with the server on ``port``."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers is not None:
        context.set_ciphers(ciphers)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None
        return cipher[0]


def test_https_and_syslog_tls_take_only_strong_ciphers(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """Both ports serve the one TLS context herolog makes (TLS 1.2 at least, SERVER_CIPHERS:
    forward secrecy and AEAD ciphers), not uvicorn's own for HTTPS, which before
    uvicorn 0.48 took the cipher string "TLSv1": CBC ciphers with SHA-1 only for TLS 1.2,
    unencrypted (NULL) and anonymous ones among them."""
    certfile, keyfile, cafile = own_certificate(tmp_path)
    running = make_server(certfile=certfile, keyfile=keyfile, syslog_port=0)
    ports = [running.server.http_port, running.server.syslog_port]
    legacy = "ECDHE+SHA1"  # what "TLSv1" leaves a TLS 1.2 client with forward secrecy
    for port in ports:
        assert port is not None
        assert "GCM" in _handshake(port, cafile) or "CHACHA20" in _handshake(port, cafile)
        # CBC with SHA-2 (in CPython's own list), and plain RSA key exchange, without forward
        # secrecy (in OpenSSL's, which Debian's and Ubuntu's Python serve by default).
        for refused in (legacy, "ECDHE+SHA256:ECDHE+SHA384", "kRSA", "eNULL:aNULL:@SECLEVEL=0"):
            with pytest.raises(ssl.SSLError):
                _handshake(port, cafile, refused)
    trusting = ssl.create_default_context(cafile=str(cafile))
    assert running.post("demo", body("over TLS"), verify=trusting).status_code == 204


def test_a_drains_answer_cannot_drive_the_terminal(
    make_server: ServerFactory, quick_forwarder: None
) -> None:
    """A drain's error answer is quoted in serve's log and in drain list, which people read
    in a terminal: its control characters (an escape sequence that writes the clipboard,
    clears the screen or sets the title; a \\r that overwrites the line) are shown escaped,
    not sent to the terminal as they are."""
    sink = HTTPSink(
        statuses=[400],
        reply=b"\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2Jbad \xe2\x80\xae batch \xc2\x9b2J\n",
    )
    try:
        running = make_server(drain_timing=DrainTiming(backoff_cap_s=0.1))
        token = add_drain(running, "demo", sink.url("/in"))
        post(running, "demo", numbered(1))
        worker = next(
            w for w in running.server.app.forwarder.workers.values() if w.drain.token == token
        )
        wait_until(lambda: worker.last_error, what="the drain to refuse the batch")
        wait_until(lambda: "is failing" in running.log.getvalue(), what="serve to say so")
        wait_until(lambda: "last error" in invoke("drain", "list")[1], what="the error saved")
        code, listed, err = invoke("drain", "list")
        assert code == 0, err
    finally:
        sink.close()
    shown = r"400 Bad Request: \x1b]52;c;cm0gLXJmIH4=\x07\x1b[2Jbad \u202e batch \x9b2J"
    for output in (listed, running.log.getvalue()):
        assert shown in output
        assert not any(ch in output for ch in "\x1b\x07\x9b\u202e")


def test_an_error_a_drain_answered_before_the_upgrade_is_reported_escaped(
    herolog_home: Path,
) -> None:
    """An error saved by an older herolog, which quoted a drain's answer as it came, is
    shown escaped in serve's report of what a drain left undelivered at a stop too."""
    import threading

    from herolog.store import Delivery, SQLiteStore

    sink = HTTPSink(hang=threading.Event())  # takes the batch and never answers
    try:
        store = SQLiteStore.open(herolog_home / "logs.db")
        try:
            added = store.add_drain("demo", sink.url("/in"))
            saved = Delivery(last_error="400 Bad Request: \x1b]0;owned\x07", last_error_at="x")
            store.save_deliveries({added.id: saved._replace(through=added.delivery.through)})
        finally:
            store.close()
        timing = DrainTiming(flush_s=0.1)
        with running_server(herolog_home / "logs.db", drain_timing=timing) as running:
            post(running, "demo", numbered(2))
            wait_until(lambda: sink.arrived, what="the batch the drain holds")
    finally:
        assert sink.hang is not None
        sink.hang.set()
        sink.close()
    report = [x for x in running.log.getvalue().splitlines() if "not delivered" in x]
    assert len(report) == 1
    assert report[0].endswith(r"(last error: 400 Bad Request: \x1b]0;owned\x07)")


def test_a_servers_warning_cannot_drive_the_terminal(herolog_home: Path) -> None:
    """`drain add --server` prints the Warning-Message the server answers with (as the
    heroku CLI does); a server that is not to be trusted, or a proxy in between, could
    write control characters (C1's CSI, a bidirectional override) into it."""
    import json

    from herolog.drains import drain_object
    from herolog.store import SQLiteStore

    store = SQLiteStore.open(herolog_home / "elsewhere.db")
    try:
        answer = json.dumps(drain_object(store.add_drain("demo", "https://x.example/in")))
    finally:
        store.close()

    class Warns(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = answer.encode()
            self.wfile.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Warning-Message: new \xc2\x9b2J app \xe2\x80\xae here\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    with serving(Warns) as server:
        code, _, err = invoke(
            "drain",
            "add",
            "https://x.example/in",
            "-a",
            "demo",
            "--server",
            server.url,
            env={"HEROLOG_API_KEY": "k"},
        )
    assert code == 0, err
    assert err == "Warning: new \\x9b2J app \\u202e here\n"


def test_a_store_every_user_can_read_is_said_not_changed(
    herolog_home: Path, make_server: ServerFactory
) -> None:
    """herolog makes its stores 0600; one made otherwise (a copy put in place: sqlite3's
    .backup writes 0644 under a umask of 022) keeps its mode, and with drain passwords in it
    that is said where a secret goes in (drain add) and as serve starts."""
    store = herolog_home / "logs.db"
    code, _, err = invoke("drain", "add", "https://u:pw@logs.example/", "-a", "demo")
    assert (code, "every user" in err) == (0, False)  # herolog's own: 0600
    assert "every user" not in "\n".join(make_server().server.banner())
    saved_umask = os.umask(0o022)
    try:
        copy = herolog_home / "copy.db"
        with closing(sqlite3.connect(store)) as source, closing(sqlite3.connect(copy)) as to:
            source.backup(to)
    finally:
        os.umask(saved_umask)
    copy.replace(store)
    said = (
        f"the store {store} can be read by every user of this machine (mode 0644), and drain"
        " URLs in it carry passwords: chmod 600 it (640 for a group that reads the logs)"
    )
    code, _, err = invoke("drain", "add", "https://u:pw@logs.example/2", "-a", "demo")
    assert (code, err) == (0, f"Warning: {said}\n")
    assert said in make_server().server.banner()
    assert store.stat().st_mode & 0o777 == 0o644  # a mode given on purpose stands
    store.chmod(0o640)  # a group that reads the logs: as the README has it, not said
    code, _, err = invoke("drain", "add", "https://u:pw@logs.example/3", "-a", "demo")
    assert (code, err) == (0, "")
    assert not any("every user" in line for line in make_server().server.banner())
