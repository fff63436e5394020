"""nginx in front of herolog serve, as its users put it there: TLS at nginx (trustme's
certificates), serve on loopback behind it, with the bare `proxy_pass` a first configuration
has, or with what README says to add. The stand-ins elsewhere imitate a proxy; this is
nginx's own handling of what passes: its body limit, its URI normalization, its idle
timeout on a quiet stream, the headers it adds.

nginx is Debian's own package, fetched with `apt-get download` and unpacked into a cache
folder (bench/tools.py), run in the foreground with a prefix, pid file, temp paths and logs
of its own under the test's folder, and stopped by its own pid."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from bench.tools import library_env
from herolog.server import sessions
from herolog.server.config import Credentials
from tests import web
from tests.helpers import herolog_env
from tests.interop.conftest import debian_package, free_port, wait_listening
from tests.interop.test_heroku_cli import cli_env
from tests.server.conftest import Running, ServerFactory, own_certificate
from tests.server.sinks import wait_until

KEY = "nginx-key"
README = Path(__file__).parents[2] / "README.md"


@pytest.fixture(scope="session")
def nginx_root() -> Path:
    return debian_package("nginx", ["nginx"], "usr/sbin/nginx", "Debian's nginx")


class Proxy(NamedTuple):
    """A running nginx: its HTTPS URL, the CA its certificate is from, and its logs."""

    proc: subprocess.Popen[bytes]
    url: str
    cafile: Path
    work: Path

    def requests(self) -> list[str]:
        """The access log's lines: a request is logged once it has ended."""
        log = self.work / "access.log"
        return log.read_text().splitlines() if log.exists() else []

    def said(self) -> str:
        return (self.work / "error.log").read_text(errors="replace")


@contextlib.contextmanager
def proxying(root: Path, work: Path, port: int, locations: str, http: str = "") -> Iterator[Proxy]:
    """nginx on ``port`` of 127.0.0.1 with TLS, its server block holding ``locations``, its
    http block ``http`` too; stopped at the end."""
    work.mkdir(parents=True, exist_ok=True)
    certfile, keyfile, cafile = own_certificate(work)
    # As root, nginx's workers would run as nobody, who cannot enter the test's folder.
    user = "user root;\n" if os.geteuid() == 0 else ""

    def at(name: str | Path) -> str:  # a path in quotes: TMPDIR's may hold a space
        return f'"{work / name}"'

    temp = " ".join(f"{kind}_temp_path {at(kind)};" for kind in ("client_body", "proxy", "fastcgi"))
    conf = work / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {at('nginx.pid')};\n"
        f"lock_file {at('nginx.lock')};\nerror_log {at('error.log')} info;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"  access_log {at('access.log')};\n"
        f"  {temp} uwsgi_temp_path {at('uwsgi')}; scgi_temp_path {at('scgi')};\n"
        f"  {http}\n"
        "  server {\n"
        f"    listen 127.0.0.1:{port} ssl;\n"
        f"    ssl_certificate {at(certfile)}; ssl_certificate_key {at(keyfile)};\n"
        f"{locations}\n"
        "  }\n"
        "}\n"
    )
    nginx = root / "usr/sbin/nginx"
    with (work / "nginx.err").open("wb") as err:  # the child has its own copy
        proc = subprocess.Popen(
            [str(nginx), "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")],
            env=library_env(root),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    proxy = Proxy(proc, f"https://127.0.0.1:{port}", cafile, work)

    def failed() -> str:
        said = (work / "nginx.err").read_text(errors="replace")
        if (work / "error.log").exists():
            said += proxy.said()
        return (
            "nginx did not start (one of its libraries missing? apt-get install nginx brings"
            f" them):\n{said}"
        )

    wait_listening(proc, port, failed)
    try:
        yield proxy
    finally:
        proc.terminate()
        proc.wait(10)


def post_line(running: Running, message: str, app: str = "demo") -> None:
    """A line as Logplex posts it, straight to serve."""
    syslog = f"<190>1 2026-12-06T10:00:00+00:00 host app web.1 - {message}".encode()
    response = running.post(app, b"%d %s" % (len(syslog), syslog))
    assert response.status_code == 204, response.text


def heroku_env(proxy: Proxy, running: Running, tmp_path: Path) -> dict[str, str]:
    """The heroku CLI's environment for the API through ``proxy``."""
    env = cli_env(running, tmp_path, KEY)
    env.update(
        HEROKU_HOST=proxy.url,
        HEROKU_PARTICLEBOARD_URL=proxy.url,
        NODE_EXTRA_CA_CERTS=str(proxy.cafile),
    )
    return env


class Tail:
    """A ``--tail`` running in a child process, its output lines read as they come."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        import queue
        import threading

        self.proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []

        def read_out() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                self.lines.put(raw.rstrip("\n"))
            self.lines.put(None)

        def read_err() -> None:
            assert self.proc.stderr is not None
            self.err.extend(self.proc.stderr)

        self.readers = [
            threading.Thread(target=read_out, daemon=True),
            threading.Thread(target=read_err, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def next_line(self, timeout: float = 15) -> str | None:
        """Its next line of output; None if it ended first."""
        return self.lines.get(timeout=timeout)

    def stop(self) -> str:
        """Stop it; what it said on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return "".join(self.err)


def line_of(message: str) -> str:
    return f"2026-12-06T10:00:00+00:00 app[web.1]: {message}"


@pytest.mark.slow
def test_a_quiet_tail_outlives_a_load_balancers_idle_timeout(
    make_server: ServerFactory, nginx_root: Path, heroku_cli: Path, tmp_path: Path
) -> None:
    """A proxy or load balancer in front cuts a response that has sent nothing for a while
    (nginx's proxy_read_timeout, 60 s by default; 10 s on some load balancers): serve's
    keep-alive every 15 s let a 10 s one cut every quiet tail, and the heroku CLI then dies
    (`Logs eventsource failed with: undefined TypeError: terminated: other side closed`).
    Here at a tenth of the scale: a 1 s timeout, keep-alives every 0.5 s."""
    assert sessions.KEEPALIVE_S <= 5  # within the 10 s such a load balancer allows
    port = free_port()
    running = make_server(api_key=KEY, public_url=f"https://127.0.0.1:{port}")
    running.server.app.sessions.keepalive = 0.5
    post_line(running, "first")
    location = f"location / {{ proxy_pass {running.url}; proxy_read_timeout 1s; }}"
    with proxying(nginx_root, tmp_path / "nginx", port, location) as proxy:
        heroku = Tail(
            [str(heroku_cli), "logs", "-a", "demo", "--tail", "-n", "1"],
            heroku_env(proxy, running, tmp_path),
        )
        herolog = Tail(
            [sys.executable, "-m", "herolog", "logs", "--server", proxy.url, "-a", "demo", "-t"],
            herolog_env(HEROLOG_API_KEY=KEY, SSL_CERT_FILE=str(proxy.cafile)),
        )
        try:
            for tail in (heroku, herolog):
                assert tail.next_line() == line_of("first"), tail.stop()
            time.sleep(2.5)  # quiet for longer than the proxy_read_timeout
            post_line(running, "after a quiet while")
            for tail in (heroku, herolog):
                assert tail.next_line() == line_of("after a quiet while"), tail.stop()
        finally:
            said = [heroku.stop(), herolog.stop()]
        assert "reconnecting" not in said[1], said
        assert "timed out" not in proxy.said(), proxy.said()


@pytest.mark.slow
def test_a_tail_a_proxy_keeps_cutting_says_each_cut_and_comes_back_at_once(
    make_server: ServerFactory, nginx_root: Path, tmp_path: Path
) -> None:
    """Under a proxy_read_timeout shorter than the keep-alive, nginx cuts a quiet tail's
    stream every second (here every half second; its chunked answer closed without its last
    chunk). After its first
    reconnection, `herolog logs --server --tail` took each such cut for the outage going on:
    said nothing, and backed off to 5 s between tries, so that a line could wait 5 s to be
    shown, and a serve that died later was not said at all."""
    port = free_port()
    running = make_server(api_key=KEY, public_url=f"https://127.0.0.1:{port}")
    post_line(running, "first")
    location = f"location / {{ proxy_pass {running.url}; proxy_read_timeout 500ms; }}"
    with proxying(nginx_root, tmp_path / "nginx", port, location) as proxy:
        tail = Tail(
            [sys.executable, "-m", "herolog", "logs", "--server", proxy.url, "-a", "demo", "-t"],
            herolog_env(HEROLOG_API_KEY=KEY, SSL_CERT_FILE=str(proxy.cafile)),
        )
        try:
            assert tail.next_line() == line_of("first"), tail.stop()

            def cuts() -> int:
                return sum(" /sessions/" in request for request in proxy.requests())

            wait_until(lambda: cuts() >= 4, what="nginx to cut the quiet stream four times")
            wait_until(
                lambda: "".join(tail.err).count("reconnecting...") >= 3,
                what=f"each cut to be said: {tail.err}",
            )
            post_line(running, "after the cuts")
            assert tail.next_line() == line_of("after the cuts"), tail.stop()
        finally:
            err = tail.stop()
        assert all(said.endswith("reconnecting...\n") for said in err.splitlines(True)), err


def herolog(*args: str, proxy: Proxy) -> subprocess.CompletedProcess[str]:
    """``herolog ARGS`` run to its end, trusting ``proxy``'s certificate, with the API key."""
    return subprocess.run(
        [sys.executable, "-m", "herolog", *args],
        env=herolog_env(HEROLOG_API_KEY=KEY, SSL_CERT_FILE=str(proxy.cafile)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def heroku(heroku_cli: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(heroku_cli), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_drains_and_logs_through_a_proxy_pass_with_a_path(
    make_server: ServerFactory, nginx_root: Path, heroku_cli: Path, tmp_path: Path
) -> None:
    """A proxy_pass with a path after the port, as serving herolog under /herolog/ needs
    (and as many a configuration has it at / too), has nginx pass each path decoded, its
    slashes merged: a drain removed by its URL was not found (404 for `heroku drains:remove
    URL`; `herolog drain remove --server` said the app had no such drain, and that it had
    it). Logs, with --public-url at the path, come through the proxy."""
    port = free_port()
    proxied = f"https://127.0.0.1:{port}/herolog"
    running = make_server(api_key=KEY, public_url=proxied)
    post_line(running, "hello")
    upstream = f"{running.url}/"
    locations = (
        f"location /herolog/ {{ proxy_pass {upstream}; }}\n"
        f"location / {{ proxy_pass {upstream}; }}"  # the heroku CLI takes no path
    )
    with proxying(nginx_root, tmp_path / "nginx", port, locations) as proxy:
        url = "https://drain:p%40ss@sink.example/logs?dest=a&b=1"
        added = herolog("drain", "add", "--server", proxied, "-a", "demo", url, proxy=proxy)
        assert added.returncode == 0, added.stderr
        listed = herolog("drain", "list", "--server", proxied, "-a", "demo", proxy=proxy)
        assert "sink.example" in listed.stdout, listed
        removed = herolog("drain", "remove", "--server", proxied, "-a", "demo", url, proxy=proxy)
        assert (removed.returncode, removed.stderr) == (0, ""), removed.stderr

        env = heroku_env(proxy, running, tmp_path)
        syslog = "syslog+tls://logs.example.com:6514"
        result = heroku(heroku_cli, env, "drains:add", syslog, "-a", "demo")
        assert result.returncode == 0, result.stderr
        result = heroku(heroku_cli, env, "drains", "-a", "demo", "--json")
        assert [drain["url"] for drain in json.loads(result.stdout)] == [syslog], result
        result = heroku(heroku_cli, env, "drains:remove", syslog, "-a", "demo")
        assert result.returncode == 0, result.stderr
        assert f"Successfully removed drain {syslog}" in result.stdout, result

        shown = herolog("logs", "--server", proxied, "-a", "demo", proxy=proxy)
        assert (shown.returncode, shown.stdout) == (0, line_of("hello") + "\n"), shown.stderr
        result = heroku(heroku_cli, env, "logs", "-a", "demo")
        assert (result.returncode, result.stdout) == (0, line_of("hello") + "\n"), result.stderr
        sessions = [r for r in proxy.requests() if " /herolog/sessions/" in r]
        assert len(sessions) == 2, proxy.requests()  # both read it through nginx


def test_drain_urls_stay_out_of_the_proxys_access_log(
    make_server: ServerFactory, nginx_root: Path, tmp_path: Path
) -> None:
    """herolog drain --server looked a drain up, and removed it, by its URL in the request's
    path (`DELETE /apps/demo/log-drains/https%3A%2F%2Fdrain%3Ap%2540ss%40...`), which a proxy
    in front writes to its access log: the drain's password and API key, kept out of serve's
    own log and masked in every output, were in nginx's. They go by the drain's id."""
    port = free_port()
    proxied = f"https://127.0.0.1:{port}"
    running = make_server(api_key=KEY, public_url=proxied)
    with proxying(
        nginx_root, tmp_path / "nginx", port, f"location / {{ proxy_pass {running.url}; }}"
    ) as proxy:
        url = "https://drain:p%40ss@sink.example/logs?api_key=K3Y-0f-the-drain&b=1"
        for args in (
            (url,),
            (url, "--if-missing"),  # looked up: it is there
            (url.replace("sink.example", "SINK.example:443"), "--if-missing", "--json"),
        ):
            added = herolog("drain", "add", "--server", proxied, "-a", "demo", *args, proxy=proxy)
            assert added.returncode == 0, added.stderr
        again = herolog("drain", "add", "--server", proxied, "-a", "demo", url, proxy=proxy)
        assert again.returncode == 1  # the error names it: looked up too
        for key in (url, url.replace("sink.example", "sink.example."), url):
            removed = herolog(
                "drain",
                "remove",
                "--server",
                proxied,
                "-a",
                "demo",
                key,
                "--if-exists",
                proxy=proxy,
            )
            assert removed.returncode == 0, removed.stderr
        listed = herolog("drain", "list", "--server", proxied, "--json", proxy=proxy)
        assert json.loads(listed.stdout) == []
        requests = proxy.requests()
        assert sum(" /apps/demo/log-drains" in r for r in requests) >= 8, requests
        for secret in ("p%40ss", "p%2540ss", "p@ss", "K3Y-0f-the-drain"):
            assert not [r for r in requests if secret in r], secret


def test_the_keyless_api_answers_nothing_nginx_passes_with_forwarding_headers(
    make_server: ServerFactory, nginx_root: Path, tmp_path: Path
) -> None:
    """Without --api-key, serve tells a proxy's requests by the headers a proxy adds. nginx
    adds X-Forwarded-For only when told to, as most configurations do, with their own name
    as the Host (`proxy_set_header Host $host`): 403, saying to give serve a key (it said
    "use a loopback address (127.0.0.1)" for such a Host). A bare proxy_pass adds none, and
    its requests pass for this machine's, as README says."""
    port = free_port()
    running = make_server()
    post_line(running, "hello")
    headers = (
        "proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
    )
    locations = (
        f"location /told/ {{ proxy_pass {running.url}/; {headers} }}\n"
        f"location /bare/ {{ proxy_pass {running.url}/; }}"
    )
    with proxying(nginx_root, tmp_path / "nginx", port, locations) as proxy:
        verify = ssl.create_default_context(cafile=proxy.cafile)
        for host in ("127.0.0.1", "logs.example.com"):
            told = web.get(f"{proxy.url}/told/apps", headers={"Host": host}, verify=verify)
            assert told.status_code == 403, told.text
            assert told.json()["message"] == (
                "Without --api-key, the Platform API answers this machine only, not requests"
                " through a proxy: give herolog serve an --api-key."
            )
        bare = web.get(f"{proxy.url}/bare/apps", verify=verify)
        assert [app["name"] for app in bare.json()] == ["demo"]
        shown = herolog("logs", "--server", f"{proxy.url}/told", "-a", "demo", proxy=proxy)
        assert shown.returncode == 1
        assert "give herolog serve an --api-key" in shown.stderr, shown.stderr


def test_a_proxy_without_public_url_is_said_to_need_it(
    make_server: ServerFactory, nginx_root: Path, tmp_path: Path
) -> None:
    """serve makes its log-session URLs from the Host it is asked at, without --public-url:
    behind nginx, its upstream's name (`proxy_pass http://herolog;` of an `upstream herolog`
    block sends `Host: herolog`) or 127.0.0.1:PORT (a bare proxy_pass, which a client on
    another machine cannot reach). The error named the URL and said it came from serve's
    --public-url, which the user had not given."""
    port = free_port()
    running = make_server(api_key=KEY)
    post_line(running, "hello")
    upstream = f"upstream herolog {{ server {running.url.removeprefix('http://')}; }}"
    location = "location / { proxy_pass http://herolog; }"
    with proxying(nginx_root, tmp_path / "nginx", port, location, upstream) as proxy:
        shown = herolog("logs", "--server", proxy.url, "-a", "demo", proxy=proxy)
    assert shown.returncode == 1
    assert shown.stderr.startswith(
        f"Error: cannot reach http://herolog, where {proxy.url} serves its log sessions: "
    ), shown.stderr
    assert shown.stderr.endswith(
        f" (serve makes their URLs from its --public-url, or without one from the Host it is"
        f" asked at: behind a proxy, give it --public-url {proxy.url})\n"
    ), shown.stderr


def readme_server(upstream: str) -> str:
    """README's nginx server block, with serve at ``upstream``: all but where it listens and
    its certificate, which :func:`proxying` gives."""
    found = re.search(r"```nginx\nserver \{\n(.*?)\}\n```", README.read_text(), re.DOTALL)
    assert found, "README has no nginx server block"
    kept = [
        line
        for line in found.group(1).splitlines()
        if not re.match(r"\s*(listen|server_name|ssl_certificate)\b", line)
    ]
    assert "http://127.0.0.1:8514;" in "\n".join(kept), kept
    return "\n".join(kept).replace("http://127.0.0.1:8514", upstream)


def frames(messages: list[str]) -> bytes:
    """A body of Logplex frames, one a message."""
    syslogs = [f"<190>1 2026-12-06T10:00:00+00:00 host app web.1 - {m}".encode() for m in messages]
    return b"".join(b"%d %s" % (len(syslog), syslog) for syslog in syslogs)


def test_heroku_drains_post_through_readmes_nginx(
    make_server: ServerFactory, nginx_root: Path, tmp_path: Path
) -> None:
    """Logplex's posts through README's server block, credentials in the drain URL passed on
    to serve's --auth: plain and gzip bodies, a retry with the same Logplex-Frame-Id stored
    once, wrong credentials serve's 401, and a body of 2 MiB, which nginx's own limit of
    1 MiB refuses with its 413 page (a location keeping nginx's default shows it). Then
    `herolog logs --server` reads them through it, its session at --public-url."""
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    running = make_server(auth=Credentials("drain", "s3cret"), api_key=KEY, public_url=url)
    locations = readme_server(running.url) + (
        f"\nlocation /nginx-default/ {{ proxy_pass {running.url}/; client_max_body_size 1m; }}"
    )
    with proxying(nginx_root, tmp_path / "nginx", port, locations) as proxy:
        client = web.Client(
            verify=ssl.create_default_context(cafile=proxy.cafile), auth=("drain", "s3cret")
        )
        with client:

            def post(body: bytes, frame_id: str, path: str = "/", **headers: str) -> httpx.Response:
                sent = {
                    "Content-Type": "application/logplex-1",
                    "Logplex-Msg-Count": str(body.count(b"<190>")),
                    "Logplex-Frame-Id": frame_id,
                    "User-Agent": "Logplex/v123",
                    **headers,
                }
                return client.post(f"{url}{path}apps/demo/logs", content=body, headers=sent)

            assert post(frames(["plain"]), "A1").status_code == 204
            gzipped = gzip.compress(frames(["gzipped"]))
            assert post(gzipped, "A2", **{"Content-Encoding": "gzip"}).status_code == 204
            assert post(frames(["retried"]), "A3").status_code == 204
            assert post(frames(["retried"]), "A3").status_code == 204
            refused = client.post(
                f"{url}/apps/demo/logs",
                content=frames(["wrong password"]),
                headers={"Content-Type": "application/logplex-1"},
                auth=("drain", "wrong"),
            )
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith('Basic realm="herolog"')
            big = frames([f"{i:04} " + "x" * 2100 for i in range(1000)])
            assert 2 << 20 < len(big) < running.server.config.max_body
            too_big = post(big, "A4", "/nginx-default/")
            assert too_big.status_code == 413
            assert "<title>413 Request Entity Too Large</title>" in too_big.text
            assert post(big, "A4").status_code == 204
        stored = [line.message for line in running.lines("demo")]
        assert stored[:3] == ["plain", "gzipped", "retried"]
        assert len(stored) == 1003  # under the history of 1,500

        shown = herolog("logs", "--server", url, "-a", "demo", "-n", "2", proxy=proxy)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[-1].endswith("0999 " + "x" * 2100)
        assert any(" /sessions/" in request for request in proxy.requests())


def test_a_proxy_that_checks_the_drains_credentials_itself(
    make_server: ServerFactory, nginx_root: Path, tmp_path: Path
) -> None:
    """nginx's auth_basic in front of a serve without --auth, as README's
    --insecure-no-auth has it: over the intake's location only, posts need the drain's
    credentials and the API its key. Over everything (`location /`, as a first
    configuration has it), nginx answers the API's calls with its own 401 page, and herolog
    said `refused the API key (401): check HEROLOG_API_KEY`, of a key that was right."""
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    running = make_server(api_key=KEY, public_url=url)
    (tmp_path / "htpasswd").write_text("drain:{PLAIN}s3cret\n")
    checked = f'auth_basic herolog; auth_basic_user_file "{tmp_path / "htpasswd"}";'
    locations = (
        f"location ~ ^/apps/[^/]+/logs$ {{ proxy_pass {running.url}; {checked} }}\n"
        f"location /all/ {{ proxy_pass {running.url}/; {checked} }}\n"
        f"location / {{ proxy_pass {running.url}; }}"
    )
    with proxying(nginx_root, tmp_path / "nginx", port, locations) as proxy:
        verify = ssl.create_default_context(cafile=proxy.cafile)
        for auth, status in ((("drain", "s3cret"), 204), (("drain", "wrong"), 401), (None, 401)):
            posted = web.post(
                f"{url}/apps/demo/logs",
                content=frames([f"auth {auth}"]),
                headers={"Content-Type": "application/logplex-1"},
                auth=auth,
                verify=verify,
            )
            assert posted.status_code == status, posted.text
        shown = herolog("logs", "--server", url, "-a", "demo", proxy=proxy)
        assert (shown.returncode, shown.stdout) == (0, line_of("auth ('drain', 's3cret')") + "\n")
        shown = herolog("logs", "--server", f"{url}/all", "-a", "demo", proxy=proxy)
    assert (shown.returncode, shown.stdout) == (1, "")
    assert shown.stderr == (
        f"Error: {url}/all asked for credentials of its own (401 Unauthorized), with a web page,"
        " not as herolog serve does: a proxy in front that checks the drains' credentials"
        " (nginx's auth_basic) must leave the API to serve's --api-key\n"
    )
