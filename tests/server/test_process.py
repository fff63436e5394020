"""`herolog serve` as a real process: signals, kill -9, and the command line."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from herolog.filters import LineFilter
from herolog.parser import LogLine, format_syslog, frame
from herolog.store import SQLiteStore
from tests import web
from tests.helpers import (
    bound_by_file_modes,
    constants_env,
    herolog_env,
    herolog_process,
    invoke,
    run_out_forwarding_lease,
    store_drain,
)
from tests.server.conftest import ServeProcess, own_certificate


def batch(tag: str, n: int = 10) -> bytes:
    return frame(
        format_syslog(
            LogLine(
                "2024-03-05T09:14:07.418233+00:00",
                "",
                "app",
                "web.1",
                f"{tag} {i}",
                190,
                "host",
                None,
            )
        )
        for i in range(n)
    )


def stored(home: Path) -> list[str]:
    store = SQLiteStore.open(home / "logs.db", create=False)
    try:
        return [x.message for x in store.last(LineFilter(), 100_000)[0]]
    finally:
        store.close()


def assert_stored_whole(home: Path, acknowledged: list[str]) -> None:
    """Every batch answered 204 (there were some) is in the store, all ten of its lines."""
    per_batch = Counter(m.rsplit(" ", 1)[0] for m in stored(home))
    assert acknowledged
    assert all(per_batch[tag] == 10 for tag in acknowledged)


class Load:
    """Threads posting 10-line batches, tagged by thread and count, until told to stop or
    the server goes away; remembers which batches were acknowledged with a 204."""

    def __init__(self, url: str, workers: int, prefix: str = "") -> None:
        self.url = url
        self.prefix = prefix
        """Starts every tag: loads on one store must not repeat each other's Frame-Ids."""
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(w,)) for w in range(workers)]
        for thread in self._threads:
            thread.start()

    def _send(self, worker: int) -> None:
        with web.Client(timeout=10) as client:
            for i in range(100_000):
                if self._stop.is_set():
                    return
                tag = f"{self.prefix}w{worker}-{i}"
                try:
                    if post(client, self.url, tag) == 204:
                        self.acknowledged.append(tag)
                except httpx.HTTPError:
                    return

    def wait_for(self, batches: int) -> None:
        """Wait until ``batches`` have been acknowledged: the load is under way."""
        deadline = time.monotonic() + 30
        while len(self.acknowledged) < batches:
            assert time.monotonic() < deadline, f"{len(self.acknowledged)} batches acknowledged"
            time.sleep(0.01)

    def stop(self) -> list[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.acknowledged


def post(client: httpx.Client, url: str, tag: str) -> int:
    response = client.post(
        f"{url}/apps/demo/logs",
        content=batch(tag),
        headers={"Content-Type": "application/logplex-1", "Logplex-Frame-Id": tag},
    )
    return response.status_code


@pytest.mark.subprocess
def test_kill_9_right_after_a_2xx_loses_nothing(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0", "--history", "100000")
    with web.Client() as client:
        for i in range(100):
            assert post(client, server.url, f"b{i}") == 204
    server.proc.kill()
    assert server.finish()[0] == -signal.SIGKILL
    assert len(stored(herolog_home)) == 1000


@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_9_under_load_keeps_every_acknowledged_batch_whole(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0", "--history", "100000")
    load = Load(server.url, workers=8)
    load.wait_for(200)
    server.proc.kill()
    acknowledged = load.stop()
    server.finish()
    per_batch = Counter(message.rsplit(" ", 1)[0] for message in stored(herolog_home))
    assert acknowledged, "no request was acknowledged before the kill"
    assert all(per_batch[tag] == 10 for tag in acknowledged), (
        "an acknowledged batch is missing lines"
    )
    assert set(per_batch.values()) == {10}, "a batch was stored in part"
    # and a restarted server ignores a retry of a batch stored before the kill
    again = serve_process("--port", "0")
    with web.Client() as client:
        assert post(client, again.url, acknowledged[0]) == 204
    again.proc.send_signal(signal.SIGTERM)
    assert again.finish()[0] == 0
    assert Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home))[acknowledged[0]] == 10


@pytest.mark.subprocess
# SIGHUP: the terminal serve was started from closed (an ssh session ending).
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_graceful_shutdown_finishes_requests_and_exits_0(
    herolog_home: Path, sig: signal.Signals, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0", "--history", "100000", terminal=True)
    load = Load(server.url, workers=4)
    load.wait_for(100)
    server.proc.send_signal(sig)
    code, err = server.finish()
    acknowledged = load.stop()
    assert code == 0, err
    assert "Traceback" not in err
    # Stopping can take a while (requests under way, drains): said once, as it begins.
    stopping = [line for line in err.splitlines() if "stopping" in line]
    assert stopping == [
        "herolog serve: stopping: answering the requests under way (up to 30 s) and handing"
        " the drains what they hold (up to 5 s) (Ctrl-C again to stop at once)"
    ]
    assert_stored_whole(herolog_home, acknowledged)


@pytest.mark.subprocess
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_a_systemd_notify_unit_hears_ready_then_stopping(
    herolog_home: Path, tmp_path: Path, abstract: bool, serve_process: Callable[..., ServeProcess]
) -> None:
    """Type=notify: systemd starts what depends on serve once it says READY=1."""
    name = f"@herolog-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name[1:] if abstract else name)
        manager.settimeout(30)
        env = herolog_env(NOTIFY_SOCKET=name)
        server = serve_process("--port", "0", "--drain-flush-timeout", "2.5", env=env)
        ready = manager.recv(4096).decode()
        assert ready == f"READY=1\nSTATUS=HTTP drain intake on {server.url}/apps/APP/logs"
        assert web.get(f"{server.url}/healthz").status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        assert manager.recv(4096) == b"STOPPING=1"
        code, err = server.finish()
    assert (code, "Traceback" in err) == (0, False), err
    # Under systemd there is no terminal to press Ctrl-C in.
    assert err.splitlines()[-1] == (
        "herolog serve: stopping: answering the requests under way (up to 30 s) and handing"
        " the drains what they hold (up to 2.5 s)"
    )


@pytest.mark.subprocess
def test_a_notify_socket_nobody_listens_on_does_not_stop_serve(
    herolog_home: Path, tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    env = herolog_env(NOTIFY_SOCKET=str(tmp_path / "gone"))
    server = serve_process("--port", "0", env=env)
    assert web.get(f"{server.url}/healthz").status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert (code, "Traceback" in err) == (0, False), err


SERVICE_UNIT = Path(__file__).parents[2] / "examples" / "herolog.service"


def test_the_example_systemd_unit_is_one_systemd_takes(tmp_path: Path) -> None:
    program = shutil.which("systemd-analyze")
    assert program, "the unit check needs systemd-analyze: apt-get install systemd"
    unit = tmp_path / "herolog.service"
    herolog = Path(sys.executable).with_name("herolog")
    unit.write_text(
        re.sub(r"^ExecStart=\S+", f"ExecStart={herolog}", SERVICE_UNIT.read_text(), flags=re.M)
    )
    checked = subprocess.run(
        [program, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


@pytest.mark.subprocess
def test_the_example_systemd_unit_starts_serve(
    herolog_home: Path, tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """Its command line and environment, with the credentials directory (%d) holding a
    certificate and the ports free ones: serve starts, on TLS, and tells systemd so."""
    unit = SERVICE_UNIT.read_text()
    command = re.search(r"^ExecStart=\S+ serve (.*)$", unit, flags=re.M)
    assert command, unit
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    certfile, keyfile, _ = own_certificate(tmp_path)
    for name, pem in re.findall(r"^LoadCredential=([^:]+):\S+/(\S+)$", unit, flags=re.M):
        shutil.copy({"fullchain.pem": certfile, "privkey.pem": keyfile}[pem], credentials / name)
    # Split as systemd splits it, before %d is put in its words (TMPDIR's path may hold a space).
    args = re.sub(r"--syslog-port \d+", "--syslog-port 0", command[1]).split()
    args = [arg.replace("%d", str(credentials)) for arg in args]
    environment = dict(re.findall(r"^#\s+(HEROLOG_\w+)=(\S+)$", unit, flags=re.M))
    assert "HEROLOG_AUTH" in environment  # a public address takes nothing less
    name = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(name)
        manager.settimeout(30)
        env = herolog_env(**environment, NOTIFY_SOCKET=name)
        server = serve_process(*args, "--port", "0", env=env)
        assert manager.recv(4096).startswith(b"READY=1\nSTATUS=HTTPS drain intake on https://")
        server.proc.send_signal(signal.SIGTERM)
        assert manager.recv(4096) == b"STOPPING=1"
        code, err = server.finish()
    assert (code, "Traceback" in err) == (0, False), err
    # Under systemd there is no terminal to press Ctrl-C in.
    assert err.splitlines()[-1] == (
        "herolog serve: stopping: answering the requests under way (up to 30 s) and handing"
        " the drains what they hold (up to 5 s)"
    )
    assert "syslog+tls drain intake" in err


@pytest.mark.subprocess
@pytest.mark.parametrize("problem", ["a port in use", "a bad --auth"])
def test_the_example_systemd_unit_does_not_restart_what_cannot_start(
    herolog_home: Path, tmp_path: Path, problem: str
) -> None:
    """Restart=on-failure would start it again at once, five times, and leave the unit
    'start-limit-hit' where systemctl status should show serve's own error."""
    unit = SERVICE_UNIT.read_text()
    command = re.search(r"^ExecStart=\S+ serve (.*)$", unit, flags=re.M)
    assert command, unit
    prevented = re.search(r"^RestartPreventExitStatus=(.*)$", unit, flags=re.M)
    assert prevented, "the unit restarts serve for a setting it cannot start with"
    args = re.sub(r"--certfile \S+ --keyfile \S+ ?", "", command[1])
    args = re.sub(r"--syslog-port \d+", "--syslog-port 0", args)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1] if problem == "a port in use" else 0
        auth = "drain" if problem == "a bad --auth" else "drain:s3cret"
        proc = herolog_process(
            "serve", *args.split(), "--port", str(port), env={"HEROLOG_AUTH": auth}
        )
    assert proc.returncode != 0, proc.stderr
    assert str(proc.returncode) in prevented[1].split(), proc.stderr


@pytest.mark.subprocess
def test_serve_started_in_a_folder_holding_a_herolog_package_runs_its_own_writer(
    herolog_home: Path, tmp_path: Path
) -> None:
    """From a clone of another version, or a folder others can write to: the store writer
    is the installed herolog's, as serve is, not the one in the current directory."""
    planted = tmp_path / "herolog"
    planted.mkdir()
    (planted / "__init__.py").write_text("")
    ran = tmp_path / "ran"
    (planted / "store_writer.py").write_text(
        f"open({str(ran)!r}, 'w').close()\nraise SystemExit(1)\n"
    )
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("herolog")), "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=herolog_env(),
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        err = proc.stderr.readline()
        assert err.startswith("herolog serve: HTTP drain intake on http://127.0.0.1:"), err
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, "Traceback" in rest) == (0, False), err + rest
    assert not ran.exists()


@pytest.mark.subprocess
def test_serve_started_in_a_deleted_folder_starts_its_writer_and_stores(
    herolog_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell left in a folder removed meanwhile (a release directory replaced by a
    deploy): serve asks whether its herolog is the current directory's to start its writer
    with -P or without, and a current directory that is not there must not stop it."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    server = ServeProcess("--port", "0", env=herolog_env())
    monkeypatch.undo()  # back in a folder that is there, for the rest of the test
    try:
        answer = web.post(
            f"{server.url}/apps/demo/logs",
            content=batch("from nowhere"),
            headers={"Content-Type": "application/logplex-1", "Logplex-Msg-Count": "10"},
            timeout=30,
        )
        assert answer.status_code == 204, answer.text
    finally:
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.finish()
    assert (code, "Traceback" in err) == (0, False), err
    assert Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home)) == {"from nowhere": 10}


@pytest.mark.subprocess
def test_a_store_moved_away_under_serve_stops_it_with_what_it_took(
    herolog_home: Path, tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """`mv logs.db elsewhere` while drains post: serve stops (exit 1, saying why) instead
    of answering 204 for lines stored in a file nothing at the store's path reads, and
    every batch it acknowledged is in the file moved. (Looked for every 0.1 s rather than
    every second, which nothing here depends on.)"""
    watch = {"herolog.server.STORE_WATCH_S": 0.1}
    env = constants_env(watch)
    server = serve_process("--port", "0", "--history", "100000", env=env)
    load = Load(server.url, workers=2)
    load.wait_for(50)
    moved = herolog_home / "moved.db"
    (herolog_home / "logs.db").rename(moved)
    code, err = server.finish()
    acknowledged = load.stop()
    assert code == 1, err
    assert (
        f"Error: the store {herolog_home / 'logs.db'} was moved or deleted while serve ran" in err
    )
    assert "Traceback" not in err
    assert not (herolog_home / "logs.db").exists()  # none made since: see using_store
    moved.rename(herolog_home / "logs.db")
    assert_stored_whole(herolog_home, acknowledged)


@pytest.mark.slow
@pytest.mark.subprocess
def test_after_kill_9_the_next_serve_says_the_dead_one_forwards_no_more(
    herolog_home: Path, tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """The killed serve could not hand its drains back: its lease runs out (10 s, here at
    once). The next one must not send the operator looking for a process that is gone, and
    says when it forwards. That one's own lease is 2 s, not 10: it tries to take the lease a
    quarter of that apart, 0.5 s rather than 2.5."""
    from tests.server.sinks import HTTPSink, wait_until

    sink = HTTPSink()
    try:
        store_drain(herolog_home / "logs.db", "demo", sink.url())
        first = serve_process("--port", "0")
        with web.Client() as client:
            assert post(client, first.url, "before") == 204
        wait_until(lambda: len(sink.delivered_lines()) == 10, what="the first delivery")
        first.proc.kill()
        assert first.finish()[0] == -signal.SIGKILL
        lease = {"herolog.server.forwarder.LEASE_S": 2.0}
        second = serve_process("--port", "0", env=constants_env(lease))
        banner = "".join(second.banner)
        assert f"another herolog serve (pid {first.proc.pid}) forwards" not in banner
        assert (
            f"the herolog serve that forwarded this store's drains (pid {first.proc.pid})"
            " ended without handing them over: this one forwards them once its lease on them"
            " runs out, within 2 s"
        ) in banner
        run_out_forwarding_lease(herolog_home / "logs.db")
        with web.Client() as client:
            assert post(client, second.url, "after") == 204
        wait_until(
            lambda: any(x.message.startswith("after ") for x in sink.delivered_lines()),
            timeout=30,
            what="the takeover",
        )
        second.proc.send_signal(signal.SIGTERM)
        code, err = second.finish()
    finally:
        sink.close()
    assert code == 0, err
    assert "herolog serve: this serve forwards this store's drains now\n" in err


@pytest.mark.subprocess
def test_a_store_it_may_not_write_is_refused_at_start(herolog_home: Path) -> None:
    """Another user's file it may read, or one made read-only (chmod 444), opens, read-only:
    serve must not say it is ready and then answer 503 to every batch."""
    from tests.cli.test_bad_input import unwritable
    from tests.helpers import line, store_lines

    path = herolog_home / "logs.db"
    store_lines(path, "demo", line("kept"))
    with unwritable(path, stat.S_IRUSR):
        proc = herolog_process("serve", "--port", "0")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: cannot write to the store {path}: its file is read-only to this user"
    ]
    assert stored(herolog_home) == ["kept"]


@pytest.mark.subprocess
def test_a_store_of_a_newer_herolog_is_refused_saying_what_to_do(herolog_home: Path) -> None:
    """An older herolog run on a store a newer one upgraded (a rollback, an old venv first
    on PATH): nothing in it is changed, and the error says what would read it."""
    import sqlite3

    from herolog import __version__
    from herolog.store import SCHEMA_VERSION
    from tests.helpers import line, store_lines

    path = herolog_home / "logs.db"
    store_lines(path, "demo", line("kept"))
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.commit()
    proc = herolog_process("serve", "--port", "0")
    assert (proc.returncode, proc.stderr) == (
        1,
        f"Error: {path} was written by a newer herolog (store schema {SCHEMA_VERSION + 1};"
        f" herolog {__version__} reads schema {SCHEMA_VERSION} and older): upgrade herolog"
        " to use it\n",
    )


@pytest.mark.subprocess
def test_a_hangup_of_the_whole_job_stops_serve_gracefully(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """A closed terminal sends SIGHUP to every process of the job, the store writer too: it
    must outlive the signal to commit what serve still hands it."""
    server = serve_process("--port", "0", "--history", "100000", terminal=True)
    load = Load(server.url, workers=2)
    load.wait_for(50)
    os.kill(writer_pid(server), signal.SIGHUP)
    server.proc.send_signal(signal.SIGHUP)
    code, err = server.finish()
    acknowledged = load.stop()
    assert code == 0, err
    assert "store writer exited" not in err
    assert "Traceback" not in err
    assert_stored_whole(herolog_home, acknowledged)


@pytest.mark.subprocess
def test_the_terminal_closing_stops_serve_gracefully(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0", terminal=True)
    with web.Client() as client:
        assert post(client, server.url, "typed") == 204
    server.hang_up()  # the kernel sends SIGHUP to the terminal's session
    assert server.proc.wait(timeout=30) == 0
    assert "Traceback" not in server.finish()[1]
    assert_stored_whole(herolog_home, ["typed"])


@pytest.mark.subprocess
def test_the_terminal_serve_writes_to_closing_stops_it_gracefully(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """serve run in a terminal writes to it: once the terminal has closed (a window, an ssh
    session), each write there fails with EIO. The first, 'stopping: ...', failed serve's
    shutdown with a traceback nobody could see, before it kept its tail sessions for the
    next serve (a heroku logs --tail then found none: 'Log stream timed out'), and serve
    exited 1."""
    import fcntl
    import select
    import termios

    terminal, slave = os.openpty()

    def prepare() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as from a terminal, not under nohup
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "herolog", "serve", "--port", "0"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=herolog_env(),
        preexec_fn=prepare,
        start_new_session=True,
    )
    os.close(slave)
    try:
        said = b""
        deadline = time.monotonic() + 30
        while b"add a drain with" not in said:
            assert time.monotonic() < deadline, said
            if select.select([terminal], [], [], 1)[0]:
                said += os.read(terminal, 4096)
        port = re.findall(rb"127\.0\.0\.1:(\d+)/", said)[0].decode()
        url = f"http://127.0.0.1:{port}"
        with web.Client() as client:
            assert post(client, url, "typed") == 204
            made = client.post(f"{url}/apps/demo/log-sessions", json={"tail": True, "lines": 1})
            assert made.status_code == 201, made.text
            session = made.json()["logplex_url"].split("/sessions/", 1)[1]
        os.close(terminal)  # the window closes
        terminal = -1
        assert proc.wait(timeout=30) == 0
    finally:
        if terminal >= 0:
            os.close(terminal)
        proc.kill()
        proc.wait()
    assert_stored_whole(herolog_home, ["typed"])
    # The tail session was kept for the next serve, as at any stop.
    again = serve_process("--port", "0")
    with web.stream("GET", f"{again.url}/sessions/{session}", timeout=10) as tail:
        assert tail.status_code == 200
    again.proc.send_signal(signal.SIGTERM)
    assert again.finish()[0] == 0


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_hangup_without_a_terminal_leaves_serve_serving(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """Under systemd, or started with setsid, no terminal can hang up: a SIGHUP is an
    operator's, who expects what rsyslog and nginx do, a reload, not a service stopped for
    good (exit 0: Restart=on-failure does not start it again)."""
    server = serve_process("--port", "0")
    for _ in range(2):
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
    assert server.proc.poll() is None, "serve stopped on a SIGHUP without a terminal"
    with web.Client() as client:
        assert client.get(f"{server.url}/healthz").status_code == 200
        assert post(client, server.url, "after") == 204
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert code == 0, err
    said = [line for line in err.splitlines() if "SIGHUP" in line]
    hangup = (
        "herolog serve: SIGHUP, with no terminal to have hung up: nothing to reload, serve goes"
        " on (its options and certificate are read at start: restart it for new ones)"
    )
    assert said == [hangup, hangup]
    assert_stored_whole(herolog_home, ["after"])


@pytest.mark.slow
@pytest.mark.subprocess
def test_serve_under_nohup_outlives_a_hangup(herolog_home: Path) -> None:
    proc = subprocess.Popen(
        ["nohup", sys.executable, "-m", "herolog", "serve", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(),
    )
    try:
        assert proc.stderr is not None
        port = port_from_banner(proc.stderr)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert proc.poll() is None, "nohup's SIGHUP disposition was overridden"
        assert web.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.slow
@pytest.mark.subprocess
def test_serve_started_in_the_background_of_a_script_outlives_a_ctrl_c(herolog_home: Path) -> None:
    """A shell without job control (a script, here run from a terminal) starts `herolog
    serve &` with SIGINT ignored, so that the Ctrl-C that stops the script leaves it serving,
    as it leaves a C program that does not ask for the signal: serve keeps it ignored, stops
    on SIGTERM, and does not offer a Ctrl-C to stop at once that it would ignore."""
    import fcntl
    import termios

    terminal, slave = os.openpty()
    proc = subprocess.Popen(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -m herolog serve --port 0 & echo $!; wait"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(),
        preexec_fn=lambda: fcntl.ioctl(slave, termios.TIOCSCTTY, 0),
        start_new_session=True,
    )
    os.close(slave)
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        serve = int(proc.stdout.readline())
        port = port_from_banner(proc.stderr)
        os.kill(serve, signal.SIGINT)
        time.sleep(1)
        assert proc.poll() is None, "serve stopped on a SIGINT it was started with ignored"
        with web.Client() as client:
            assert post(client, f"http://127.0.0.1:{port}", "after") == 204
        os.kill(serve, signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        os.close(terminal)
    assert [line for line in err.splitlines() if "stopping" in line] == [
        "herolog serve: stopping: answering the requests under way (up to 30 s) and handing"
        " the drains what they hold (up to 5 s)"
    ]
    assert_stored_whole(herolog_home, ["after"])


def port_from_banner(stderr: IO[str]) -> str:
    """The HTTP port that serve's banner, read from its stderr up to its end, names."""
    banner = ""
    for line in iter(stderr.readline, ""):
        banner += line
        if "add a drain with" in line:
            break
    return str(re.findall(r"127\.0\.0\.1:(\d+)/", banner)[0])


def start_post(url: str, body: bytes) -> socket.socket:
    """A drain POST with only the first half of its body sent."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)))
    conn.sendall(
        b"POST /apps/demo/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/logplex-1\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body[: len(body) // 2])
    )
    return conn


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            pass  # queued on the listener as it closed: the next attempt is refused
        time.sleep(0.05)
    return False


def serve_in_a_session(*args: str, **options: Any) -> subprocess.Popen[str]:
    """``herolog serve --port 0 ARGS`` in a session (and process group) of its own, its
    standard error read as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "herolog", "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(),
        start_new_session=True,
        **options,
    )


def stops_cleanly_on(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Send ``sig`` to serve, which must stop the clean way: saying so, status 0."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "herolog serve: stopping: " in err
    assert "Traceback" not in err


@pytest.mark.subprocess
def test_serve_started_with_sigchld_ignored_reads_its_writer_s_exit_status() -> None:
    """A parent that ignores SIGCHLD (so as not to reap its children) passes that on through
    exec, and the kernel then reaps serve's store writer as it exits: its status read as 0,
    and a writer killed by the OOM killer was said to have exited with status 0."""
    proc = serve_in_a_session(preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
    try:
        assert proc.stderr is not None
        port_from_banner(proc.stderr)
        (writer,) = map(int, Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split())
        os.kill(writer, signal.SIGKILL)
        said = next(line for line in iter(proc.stderr.readline, "") if "restarting" in line)
        assert said == "herolog serve: the store writer exited with status -9; restarting it\n"
        stops_cleanly_on(proc, signal.SIGTERM)
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.subprocess
def test_serve_started_with_sigterm_blocked_still_stops_on_it(herolog_home: Path) -> None:
    """A signal mask is inherited across exec: a serve started by a CI runner or a
    supervisor with SIGTERM blocked in its thread kept every SIGTERM pending and served on,
    until SIGKILL ended it with its drains' positions unsaved."""
    blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    proc = serve_in_a_session(preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, blocked))
    try:
        assert proc.stderr is not None
        port_from_banner(proc.stderr)
        stops_cleanly_on(proc, signal.SIGTERM)
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_before_the_cli_s_imports_are_done_stops_serve_cleanly(
    herolog_home: Path, sig: signal.Signals
) -> None:
    """Serve held its stops from its own command on, not while the CLI was imported before
    it (0.1 s): a script's trap stopping the serve it had just started (`herolog serve &
    pid=$!`, a step failing at once) killed it by the SIGTERM, 143 in `wait`'s status, where
    the README says a stop while serve starts ends it the clean way. The signal is sent with
    the child's mask blocking it, so that it is pending as herolog's code begins, as one that
    comes during the imports is."""
    blocked = {sig}
    proc = serve_in_a_session(preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, blocked))
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, err
    assert "herolog serve: stopping: " in err
    assert "Traceback" not in err


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_store_writer_starts_stops_serve_cleanly(
    herolog_home: Path, sig: signal.Signals
) -> None:
    """A Ctrl-C reaches the whole job, and systemd's stop every process of the unit: the
    store writer too, which ignores them, but only once its imports are done (0.1 s). One
    sent then killed it with a KeyboardInterrupt traceback, and serve exited 1 with 'cannot
    use the store ...: the store writer exited with 1', of a store that was fine."""
    proc = serve_in_a_session()
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 15
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert children.read_text().split(), "no store writer started"
        time.sleep(0.02)  # into the writer's start
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "store writer" not in err


def _blocked_signals(pid: int) -> set[int]:
    blocked = re.search(r"^SigBlk:\s*([0-9a-f]+)$", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert blocked, f"no SigBlk in /proc/{pid}/status"
    mask = int(blocked[1], 16)
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_serve_imports_and_binds_stops_it_cleanly(
    herolog_home: Path, sig: signal.Signals
) -> None:
    """Before serve's handlers were in (its imports, a few hundred ms), a SIGTERM killed it
    (status 143) and a Ctrl-C ended it with 130: systemd's stop right after a start, or a
    Ctrl-C typed as it starts, was a failed stop. serve holds them until it can stop."""
    proc = serve_in_a_session()
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 15
        while sig not in _blocked_signals(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.0005)
        # Not the moment serve blocks them to start its store writer: before that.
        assert not children.read_text().split(), f"serve never held {sig.name} while starting"
        assert sig in _blocked_signals(proc.pid), f"serve never held {sig.name} while starting"
        stops_cleanly_on(proc, sig)
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.subprocess
def test_a_request_under_way_at_sigterm_is_finished_and_stored(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0")
    body = batch("late")
    with start_post(server.url, body) as conn:
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        assert refuses_connections(server.url), "still accepting after SIGTERM"
        conn.sendall(body[len(body) // 2 :])
        conn.settimeout(10)
        assert conn.recv(1024).startswith(b"HTTP/1.1 204 ")
    code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home))["late"] == 10


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_second_sigint_cuts_requests_off_but_still_commits_and_exits_0(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0", "--syslog-port", "0")
    syslog_port = re.search(r"syslog drain intake on 127\.0\.0\.1:(\d+)", "".join(server.banner))
    assert syslog_port, server.banner
    with (
        start_post(server.url, batch("cut")) as conn,
        socket.create_connection(("127.0.0.1", int(syslog_port.group(1)))) as syslog,
    ):
        syslog.sendall(b"<13>1 2024-03-05T09:14:07Z h u - - - kept\n<13>1 2024-03")
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        server.proc.send_signal(signal.SIGINT)
        code, err = server.finish(timeout=20)
        conn.settimeout(10)
        assert conn.recv(1024) == b"", "the cut-off request was answered"
    assert code == 0, err
    assert "Traceback" not in err
    assert "ERROR" not in err
    messages = stored(herolog_home)
    assert "kept" in messages
    assert not any(m.startswith("cut") for m in messages)
    # the drains' forwarding was handed back: the next server takes it without waiting
    again = serve_process("--port", "0")
    assert "another herolog serve" not in "".join(again.banner)
    again.proc.send_signal(signal.SIGTERM)
    assert again.finish()[0] == 0


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_second_sigint_after_the_shutdown_is_done_still_exits_0(
    serve_process: Callable[..., ServeProcess],
) -> None:
    """Two Ctrl-Cs in quick succession, the second landing once an idle serve's shutdown is
    done: it must not turn a clean stop into a death by SIGINT (19 times in 20 with 20 ms
    between them, when serve put back Python's own SIGINT handler as it finished)."""
    for gap in (0.0, 0.01, 0.02, 0.03, 0.05):
        server = serve_process("--port", "0")
        server.proc.send_signal(signal.SIGINT)
        time.sleep(gap)
        server.proc.send_signal(signal.SIGINT)
        code, err = server.finish()
        assert code == 0, f"{gap} s apart: {err}"
        assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_second_sigint_stops_waiting_for_a_dead_drain_and_keeps_its_lines(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """The drains get 5 s to deliver at shutdown; a second Ctrl-C cuts that short. What a
    drain did not deliver is reported and kept for the next server all the same."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    store_drain(herolog_home / "logs.db", "demo", f"http://127.0.0.1:{port}/dead")
    server = serve_process("--port", "0")
    with web.Client() as client:
        assert post(client, server.url, "dead") == 204
    server.proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGINT)
    code, err = server.finish()
    took = time.monotonic() - started
    assert code == 0, err
    assert "Traceback" not in err
    assert took < 3, f"stopping took {took:.1f} s: the drain's 5 s were not cut short"
    assert "10 lines not delivered yet" in err
    assert [m for m in stored(herolog_home) if m.startswith("Error L10 ")] == []
    code, out, _ = invoke("drain", "list", "--json")
    assert code == 0, out
    (drain,) = json.loads(out)
    state = drain["delivery"]
    assert (state["delivered"], state["dropped"], state["waiting"]) == (0, 0, 10)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_third_sigint_exits_at_once_from_a_shutdown_that_hangs(
    serve_process: Callable[..., ServeProcess],
) -> None:
    server = serve_process("--port", "0")
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    (writer,) = (int(pid) for pid in children.split())
    os.kill(writer, signal.SIGSTOP)  # its last commit never comes
    try:
        for _ in range(3):
            server.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        exited = server.proc.wait(timeout=10)
    finally:
        os.kill(writer, signal.SIGKILL)  # it holds serve's stderr open
        os.kill(writer, signal.SIGCONT)
    code, err = server.finish()
    # By the SIGINT itself, as every other command ends on a Ctrl-C: a shell script
    # running serve stops too (an exit with status 130 would have it go on; $? is 130).
    assert exited == code == -signal.SIGINT, err
    assert "stopped before its shutdown was done" in err
    assert "Traceback" not in err


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "env"),
    [(["--host", "0.0.0.0"], {}), ([], {"HEROLOG_HOST": "0.0.0.0"}), (["--host", "::"], {})],
)
def test_public_address_without_auth_is_refused(args: list[str], env: dict[str, str]) -> None:
    proc = herolog_process("serve", "--port", "0", *args, env=env)
    assert proc.returncode == 2
    assert "without --auth" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "env"),
    [(["--insecure-no-auth"], {}), ([], {"HEROLOG_AUTH": "drain:s3cret"})],
    ids=["insecure-no-auth", "auth-from-env"],
)
def test_public_address_with_auth_or_explicit_opt_out_starts(
    args: list[str], env: dict[str, str], serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--host", "0.0.0.0", "--port", "0", *args, env=herolog_env(**env))
    banner = "".join(server.banner)
    assert "YOUR-HOST" in banner
    assert "s3cret" not in banner
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish()[0] == 0


@pytest.mark.subprocess
@pytest.mark.parametrize("option", ["--port", "--syslog-port"])
def test_a_busy_port_is_a_clear_error(option: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"--port": "0", "--syslog-port": "0", option: str(port)}
        proc = herolog_process("serve", *(x for kv in ports.items() for x in kv))
    # One line, as a journal shows it: no usage and --help hint, which has nothing for it.
    assert (proc.returncode, proc.stderr) == (
        2,
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n",
    )


@pytest.mark.subprocess
def test_a_busy_ipv6_port_is_named_as_a_url_writes_it() -> None:
    """[::1]:8514, not ::1:8514, which reads as the address ::1:8514 with no port."""
    with socket.socket(socket.AF_INET6) as busy:
        busy.bind(("::1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = herolog_process("serve", "--host", "::1", "--port", str(port))
    assert (proc.returncode, proc.stderr) == (
        2,
        f"Error: cannot listen on [::1]:{port}: Address already in use\n",
    )


@pytest.mark.subprocess
def test_a_privileged_port_without_the_right_to_it_says_what_gives_it() -> None:
    """As an unprivileged user, as a systemd unit with User= runs serve (when the tests run
    as root: root without its capabilities, which a Python under /root can still start, where
    nobody could not)."""
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start <= 1:
        pytest.fail(
            f"needs a privileged port, and net.ipv4.ip_unprivileged_port_start is {start} here"
            " (Docker's default): sysctl -w net.ipv4.ip_unprivileged_port_start=1024, or"
            " docker run --sysctl net.ipv4.ip_unprivileged_port_start=1024"
        )
    port = 443 if start > 443 else start - 1
    home = Path(tempfile.mkdtemp(prefix="herolog-nobody-"))
    home.chmod(0o777)
    serve = [sys.executable, "-m", "herolog", "serve", "--port", str(port)]
    try:
        proc = subprocess.run(
            bound_by_file_modes(serve),
            capture_output=True,
            text=True,
            env=herolog_env(HEROLOG_HOME=str(home)),
            cwd=home,
            timeout=30,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Permission denied" in proc.stderr
    assert "CAP_NET_BIND_SERVICE" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auth", "nopassword"], "USER:PASSWORD"),
        (["--certfile", __file__], "go together"),
        (["--port", "70000"], "70000"),
        (["--port", "8600", "--syslog-port", "8600"], "--syslog-port and --port are both 8600"),
    ],
)
def test_bad_serve_options(args: list[str], message: str) -> None:
    proc = herolog_process("serve", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.subprocess
def test_an_ipv6_host_in_brackets_is_listened_on(herolog_home: Path) -> None:
    """[::1], as URLs write it (and as serve prints it): the address, loopback."""
    proc = serve_in_a_session("--host", "[::1]")
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        m = re.fullmatch(
            r"herolog serve: HTTP drain intake on http://\[::1\]:(\d+)/apps/APP/logs\n", first
        )
        assert m, first + proc.stderr.read()
        assert web.get(f"http://[::1]:{m[1]}/healthz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, "Traceback" in rest) == (0, False), rest


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("host", "env", "message"),
    [
        ("127.0.0.1:9000", {}, "--host takes no port: give --host 127.0.0.1 --port 9000"),
        ("[::1]:9000", {}, "--host takes no port: give --host ::1 --port 9000"),
        (
            "",
            {"HEROLOG_HOST": "0.0.0.0:8514"},
            "--host (from $HEROLOG_HOST) takes no port: give --host 0.0.0.0 --port 8514",
        ),
        (
            "https://logs.example.com",
            {},
            "--host takes an address or a host name, not a URL: 'https://logs.example.com'",
        ),
        (
            "[logs.example.com]",
            {},
            "--host takes only an IPv6 address in brackets, not 'logs.example.com'",
        ),
    ],
)
def test_a_host_with_a_port_or_a_scheme_is_a_usage_error(
    herolog_home: Path, host: str, env: dict[str, str], message: str
) -> None:
    """As gunicorn's --bind or a URL writes them: not a name to look up, nor a public
    address to refuse without --auth."""
    given = ["--host", host] if host else []
    proc = herolog_process("serve", "--port", "0", *given, env=env)
    assert (proc.returncode, proc.stderr.splitlines()[-1]) == (2, f"Error: {message}")


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("another certificate's key", "the key is not the certificate's key"),
        ("the files swapped", "must be a PEM certificate and its PEM private key"),
        ("a key with a passphrase", "is encrypted"),
        ("the chain in the wrong order", "the server's certificate first"),
    ],
)
def test_unusable_tls_files_are_one_line_errors(tmp_path: Path, problem: str, message: str) -> None:
    ca = trustme.CA()
    cert, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    if problem == "the chain in the wrong order":
        chained = ca.create_child_ca().issue_cert("127.0.0.1")
        certfile.write_bytes(b"".join(pem.bytes() for pem in reversed(chained.cert_chain_pems)))
        chained.private_key_pem.write_to_path(str(keyfile))
    elif problem == "another certificate's key":
        other.private_key_pem.write_to_path(str(keyfile))
    elif problem == "the files swapped":
        certfile, keyfile = keyfile, certfile
        cert.private_key_pem.write_to_path(str(certfile))
    elif problem == "a key with a passphrase":
        key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
        keyfile.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"s3cret"),
            )
        )
    tls = ["--certfile", str(certfile), "--keyfile", str(keyfile)]
    proc = herolog_process(
        "serve",
        "--port",
        "0",
        *tls,
        start_new_session=True,  # no terminal for OpenSSL to ask a passphrase on
    )
    assert proc.returncode == 2, proc.stderr
    (error,) = proc.stderr.splitlines()
    assert error.startswith(("Error: cannot use --certfile", "Error: the key in")), error
    assert message in error


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("problem", "option", "why"),
    [
        ("missing", "--certfile", "No such file or directory"),
        ("a directory", "--keyfile", "Is a directory"),
        ("unreadable", "--keyfile", "Permission denied"),
        ("in a folder serve may not enter", "--certfile", "Permission denied"),
    ],
)
def test_tls_files_serve_cannot_read_are_one_line_errors(
    problem: str, option: str, why: str
) -> None:
    """As a systemd unit with User= runs serve (nobody, when the tests run as root): certbot
    keeps its files in live/ and archive/, folders only root may enter, where click's check
    said the file 'does not exist', after its usage lines."""
    folder = Path(tempfile.mkdtemp(prefix="herolog-tls-"))
    folder.chmod(0o777)
    certfile, keyfile, _ = own_certificate(folder)
    files = {"--certfile": certfile, "--keyfile": keyfile}
    if problem == "missing":
        files[option].unlink()
    elif problem == "a directory":
        files[option].unlink()
        files[option].mkdir()
    elif problem == "unreadable":
        files[option].chmod(0)
    else:
        locked = folder / "live"
        locked.mkdir()
        files[option] = files[option].rename(locked / files[option].name)
        locked.chmod(0)
    serve = [sys.executable, "-m", "herolog", "serve", "--port", "0"]
    tls = ["--certfile", str(files["--certfile"]), "--keyfile", str(files["--keyfile"])]
    try:
        proc = subprocess.run(
            bound_by_file_modes([*serve, *tls]),
            capture_output=True,
            text=True,
            env=herolog_env(HEROLOG_HOME=str(folder)),
            cwd=folder,
            timeout=30,
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            (folder / "live").chmod(0o700)  # for rmtree
        shutil.rmtree(folder, ignore_errors=True)
    assert (proc.returncode, proc.stderr) == (
        2,
        f"Error: cannot read {option} {files[option]}: {why}\n",
    )


@pytest.mark.subprocess
def test_a_certificate_and_its_key_in_one_pipe_may_be_given_to_both(herolog_home: Path) -> None:
    """One PEM of both, as HAProxy takes them, which serve takes for --certfile and
    --keyfile alike from a file: from a pipe (a secrets manager's output on /dev/stdin), the
    key's reading came second and found it empty, 'they must be a PEM certificate and its PEM
    private key', exit 2, which they were. It is read once for both."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    read_end, write_end = os.pipe()
    os.write(write_end, issued.cert_chain_pems[0].bytes() + issued.private_key_pem.bytes())
    os.close(write_end)
    both = f"/dev/fd/{read_end}"
    try:
        server = ServeProcess(
            "--port", "0", "--certfile", both, "--keyfile", both, pass_fds=(read_end,)
        )
    finally:
        os.close(read_end)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        assert web.get(server.url + "/healthz", verify=context).status_code == 200
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err


def fifo_writer(fifo: Path, proc: subprocess.Popen[str]) -> int:
    """The write end of ``fifo``, opened once serve (``proc``) has it open to read."""
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            time.sleep(0.01)
    raise AssertionError("serve never opened the FIFO")


@contextlib.contextmanager
def serve_waiting_on_a_key_fifo(
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[str], Callable[[], None]]]:
    """serve started in a session of its own with ``--keyfile`` a FIFO, and waiting on it:
    the process, and what writes the key into the FIFO and closes it. Killed and reaped at
    the block's end, the FIFO closed."""
    certfile, keyfile, _ = own_certificate(tmp_path)
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    proc = serve_in_a_session("--certfile", str(certfile), "--keyfile", str(fifo))
    writers: list[int] = []

    def send_key() -> None:
        writer = writers.pop()
        os.write(writer, keyfile.read_bytes())
        os.close(writer)

    try:
        writers.append(fifo_writer(fifo, proc))
        yield proc, send_key
    finally:
        proc.kill()
        proc.communicate()
        for writer in writers:
            os.close(writer)


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_serve_waits_on_a_tls_file_s_pipe_stops_it_cleanly(
    herolog_home: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """A FIFO whose writer has not written yet (a secrets manager still starting, a bash
    <(...) waiting on a prompt) was read with serve's stops held, as it starts: a Ctrl-C or
    systemd's stop did nothing, for ever, and only SIGKILL ended it. Now either ends serve
    as a stop while it starts does, saying so, status 0."""
    with serve_waiting_on_a_key_fifo(tmp_path) as (proc, _):
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    assert (proc.returncode, err) == (
        0,
        f"herolog serve: stopping: {sig.name} before it started\n",
    )


@pytest.mark.subprocess
@pytest.mark.parametrize("then", ["the key", "SIGTERM"])
def test_a_hangup_without_a_terminal_while_serve_waits_on_a_tls_file_s_pipe_is_no_stop(
    herolog_home: Path, tmp_path: Path, then: str
) -> None:
    """Without a terminal (systemd, setsid) a SIGHUP asks for a reload, and serve goes on,
    saying it has nothing to reload, even as it starts: one while it waited on a FIFO
    stopped it ('stopping: SIGHUP before it started', and Restart=on-failure does not start
    it again). It goes on waiting, then serves once the key comes, or stops cleanly on a
    SIGTERM, which the SIGHUP left for later must not turn into a death by SIGHUP."""
    with serve_waiting_on_a_key_fifo(tmp_path) as (proc, send_key):
        assert proc.stderr is not None
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)  # for serve to have it before what follows
        if then == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            send_key()
            said: list[str] = []
            while not any("Platform API on" in line for line in said):
                line = proc.stderr.readline()
                if not line:
                    break
                said.append(line)
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    if then == "SIGTERM":
        assert (proc.returncode, err) == (0, "herolog serve: stopping: SIGTERM before it started\n")
    else:
        err = "".join(said) + err
        assert proc.returncode == 0, err
        assert "before it started" not in err
        hangup = "herolog serve: SIGHUP, with no terminal to have hung up: nothing to reload"
        assert hangup in err, err
        assert "herolog serve: stopping: answering the requests under way" in err


@pytest.mark.subprocess
@pytest.mark.parametrize("option", ["--certfile", "--keyfile"])
@pytest.mark.parametrize("given", ["/dev/zero", "a 2 MiB log"])
def test_a_tls_file_too_large_for_one_is_a_one_line_error(
    herolog_home: Path, tmp_path: Path, option: str, given: str
) -> None:
    """Read whole as serve started: /dev/zero, a file that never ends, took memory until
    MemoryError, a traceback and exit 1 (here, under a 1 GiB limit; without one, the
    machine's memory), where OpenSSL had refused it. Read up to 1 MiB, which no chain or key
    needs; a large file given by mistake (a log) says so too."""
    import resource

    certfile, keyfile, _ = own_certificate(tmp_path)
    files = {"--certfile": str(certfile), "--keyfile": str(keyfile)}
    if given == "/dev/zero":
        files[option] = "/dev/zero"
    else:
        large = tmp_path / "serve.log"
        large.write_bytes(b"herolog serve: listening\n" * (2 * 1024 * 1024 // 25 + 1))
        files[option] = str(large)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    tls = ["--certfile", files["--certfile"], "--keyfile", files["--keyfile"]]
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "serve", "--port", "0", *tls],
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=60,
        preexec_fn=limited,
    )
    assert (proc.returncode, proc.stderr) == (
        2,
        f"Error: cannot use {option} {files[option]}: it holds over 1 MiB, where a PEM"
        " certificate with its chain, or a key, is a few KB\n",
    )


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "when",
    [
        "expired",
        "not yet valid",
        "expiring",
        "valid",
        "valid since 1955",
        "short-lived",
        "short-lived ending",
    ],
)
def test_a_certificate_out_of_its_validity_is_said_at_start(
    herolog_home: Path, tmp_path: Path, when: str, serve_process: Callable[..., ServeProcess]
) -> None:
    """Heroku refuses it, and Logplex's failures show nowhere on this side: serve says so as
    it starts, naming the date (of the server's certificate, the first of the chain)."""
    import datetime

    day, second = datetime.timedelta(days=1), datetime.timedelta(seconds=1)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    not_before, not_after = {
        "expired": (now - 90 * day, now - 3 * day),
        "not yet valid": (now + 2 * day, now + 90 * day),
        "expiring": (now - 80 * day, now + 3 * day + 3600 * second),
        "valid": (now - day, now + 8 * day),
        # UTCTime's years 50 to 99 are 1950 to 1999 (RFC 5280), not 2050 to 2099: it was
        # said to be 'not valid until 2055-01-01'.
        "valid since 1955": (datetime.datetime(1955, 1, 1, tzinfo=datetime.UTC), now + 90 * day),
        # Let's Encrypt's six-day certificates: said within a third of their lifetime.
        "short-lived": (now - day, now + 5 * day),
        "short-lived ending": (now - 4 * day, now + day + 3600 * second),
    }[when]
    issued = (
        trustme.CA()
        .create_child_ca()
        .issue_cert("127.0.0.1", not_before=not_before, not_after=not_after)
    )
    certfile, keyfile = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    server = serve_process("--port", "0", "--certfile", str(certfile), "--keyfile", str(keyfile))
    said = [line for line in server.banner if line.startswith("herolog serve: the certificate")]
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert (code, "Traceback" in err) == (0, False), err
    shown = f"{not_before if when == 'not yet valid' else not_after:%Y-%m-%d %H:%M} UTC"
    assert (
        said
        == {
            "expired": [
                f"herolog serve: the certificate in {certfile} expired on {shown}: Heroku and"
                " every client that checks it refuse it (renew it, then restart serve)\n"
            ],
            "not yet valid": [
                f"herolog serve: the certificate in {certfile} is not valid until {shown} (is this"
                " machine's clock right?): Heroku and every client that checks it refuse it"
                " until then\n"
            ],
            "expiring": [
                f"herolog serve: the certificate in {certfile} expires on {shown}, in 3 days:"
                " renew it, then restart serve, which reads it only as it starts\n"
            ],
            "valid": [],
            "valid since 1955": [],
            "short-lived": [],
            "short-lived ending": [
                f"herolog serve: the certificate in {certfile} expires on {shown}, in 1 day:"
                " renew it, then restart serve, which reads it only as it starts\n"
            ],
        }[when]
    )


@pytest.mark.subprocess
def test_a_certificate_expiring_while_serve_runs_is_said_then(
    herolog_home: Path, tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """serve reads its certificate only as it starts: one renewed without a restart went on
    being served past its expiry, and every drain that checks it (Heroku's) stopped, with
    nothing said on this side. serve says so when it comes within a week of it (here, at
    start), and again when it expires."""
    import datetime

    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    # Long enough for serve to start on a loaded machine before it expires.
    not_after = now + datetime.timedelta(seconds=8)
    issued = trustme.CA().issue_cert(
        "127.0.0.1", not_before=now - datetime.timedelta(days=30), not_after=not_after
    )
    certfile, keyfile = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    server = serve_process("--port", "0", "--certfile", str(certfile), "--keyfile", str(keyfile))
    shown = f"{not_after:%Y-%m-%d %H:%M} UTC"
    said = [line for line in server.banner if line.startswith("herolog serve: the certificate")]
    assert said == [
        f"herolog serve: the certificate in {certfile} expires on {shown}, in less than a"
        " minute: renew it, then restart serve, which reads it only as it starts\n"
    ]
    assert server.said("the certificate in") == (
        f"herolog serve: the certificate in {certfile} expired on {shown}: Heroku and every"
        " client that checks it refuse it (renew it, then restart serve)\n"
    )
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    # The banner's line; the expiry's was read by said(), and none came after it.
    assert (code, "Traceback" in err, err.count("the certificate in")) == (0, False, 1), err


@pytest.mark.subprocess
@pytest.mark.parametrize("when", ["valid", "expired"])
def test_the_certificate_and_key_may_come_through_pipes(herolog_home: Path, when: str) -> None:
    """As bash's --certfile <(...) --keyfile <(...) gives them (a key kept off the disk), or
    a FIFO a secrets manager writes: serve reads each once, for HTTPS, syslog+tls and the
    check of the dates alike. Read again, the pipe was empty ('they must be a PEM certificate
    and its PEM private key', exit 2, with --syslog-port; the expiry unsaid without), and a
    FIFO was waited on for ever, with SIGTERM held until serve is ready."""
    import datetime

    day = datetime.timedelta(days=1)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    not_after = now + 90 * day if when == "valid" else now - 3 * day
    ca = trustme.CA()
    issued = ca.create_child_ca().issue_cert(
        "127.0.0.1", not_before=now - 100 * day, not_after=not_after
    )
    pipes = []
    for data in (
        b"".join(pem.bytes() for pem in issued.cert_chain_pems),
        issued.private_key_pem.bytes(),
    ):
        read_end, write_end = os.pipe()
        os.write(write_end, data)  # a few KB: the pipe holds them
        os.close(write_end)
        pipes.append(read_end)
    certfile, keyfile = (f"/dev/fd/{fd}" for fd in pipes)
    tls = ["--certfile", certfile, "--keyfile", keyfile]
    try:
        server = ServeProcess("--port", "0", "--syslog-port", "0", *tls, pass_fds=tuple(pipes))
    finally:
        for fd in pipes:
            os.close(fd)
    try:
        said = [line for line in server.banner if line.startswith("herolog serve: the certificate")]
        syslog_port = int(
            re.findall(r"syslog\+tls drain intake on 127.0.0.1:(\d+)", "".join(server.banner))[0]
        )
        if when == "expired":
            assert said == [
                f"herolog serve: the certificate in {certfile} expired on {not_after:%Y-%m-%d %H:%M}"
                " UTC: Heroku and every client that checks it refuse it (renew it, then restart"
                " serve)\n"
            ]
        else:
            assert said == []
            context = ssl.create_default_context()
            ca.configure_trust(context)
            assert web.get(server.url + "/healthz", verify=context).status_code == 200
            with (
                socket.create_connection(("127.0.0.1", syslog_port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_socket,
            ):
                assert tls_socket.version() is not None
    finally:
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.finish()
    assert (code, "Traceback" in err) == (0, False), err


@pytest.mark.subprocess
def test_an_ssl_cert_file_serve_cannot_read_is_said_as_it_starts(
    herolog_home: Path, tmp_path: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """OpenSSL passes over an $SSL_CERT_FILE it cannot read, unsaid: a typo in a unit's
    Environment= had every drain to a CA of one's own fail its certificate check, with no
    word of why, where herolog's commands refuse it in one line. serve says so as it starts
    (and starts: drains the system's CAs check still deliver)."""
    missing, not_pem = tmp_path / "nope.pem", tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    for path, why in ((missing, "No such file or directory"), (not_pem, "no certificate")):
        server = serve_process("--port", "0", env=herolog_env(SSL_CERT_FILE=str(path)))
        said = [line for line in server.banner if "SSL_CERT_FILE" in line]
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.finish()
        assert (code, "Traceback" in err) == (0, False), err
        assert len(said) == 1, server.banner
        assert said[0].startswith(f"herolog serve: cannot use $SSL_CERT_FILE ({path}): "), said
        assert why in said[0], said
        assert said[0].endswith(": https:// and syslog+tls:// drains are checked without it\n"), (
            said
        )
    assert not any("SSL_CERT_FILE" in line for line in serve_process("--port", "0").banner)


@pytest.mark.subprocess
def test_a_tls_client_on_the_plain_http_port_is_named_on_stderr(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """An https:// drain URL (or a load balancer speaking TLS to it) for a serve without
    --certfile: Heroku's drain fails, and uvicorn's 'Invalid HTTP request received.' says
    nothing of why."""
    import ssl

    server = serve_process("--port", "0")
    port = int(server.url.rsplit(":", 1)[1])
    for _ in range(2):  # the second is counted, said a minute later
        hello = ssl.create_default_context().wrap_bio(
            ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
        )
        with pytest.raises(ssl.SSLWantReadError):
            hello.do_handshake()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(outgoing.read())
            # Plain HTTP, which tells the client's TLS library what it reached.
            assert sock.recv(100).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert web.get(f"{server.url}/healthz").status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert (code, "Traceback" in err) == (0, False), err
    (said,) = [line for line in err.splitlines() if "handshake" in line or "Invalid" in line]
    assert re.fullmatch(
        r"herolog serve: closed a connection that began a TLS handshake \(from 127\.0\.0\.1"
        r" port \d+\): this port serves plain HTTP \(drain URLs to it start http://; for"
        r" https://, give serve --certfile and --keyfile\)",
        said,
    ), err


def writer_pid(server: ServeProcess) -> int:
    pid = server.proc.pid
    (writer,) = map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    return writer


def wait_until_refused(port: int) -> None:
    """Until connecting to ``port`` is refused: the listener is closed."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            pass  # taken into the backlog as the listener closed: the next try tells
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        time.sleep(0.01)


@pytest.mark.subprocess
def test_syslog_lines_sent_before_sigterm_are_stored(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    """What syslog clients sent before serve was told to stop, and serve had not read yet
    (it reads no more than 20,000 lines ahead of a writer, frozen here), is read and stored
    before the connections close."""
    server = serve_process("--port", "0", "--syslog-port", "0", "--history", "100000")
    port = int(re.search(r"drain intake on 127\.0\.0\.1:(\d+)", "".join(server.banner)).group(1))  # type: ignore[union-attr]
    writer = writer_pid(server)
    conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
    senders = [
        threading.Thread(target=conn.sendall, args=(batch(f"conn {i} line", 25_000),))
        for i, conn in enumerate(conns)
    ]
    os.kill(writer, signal.SIGSTOP)
    try:
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(30)
            assert not thread.is_alive(), "the kernel's buffers did not take the lines"
        server.proc.send_signal(signal.SIGTERM)
        wait_until_refused(port)  # serve is stopping: it reads what is left, and waits
        os.kill(writer, signal.SIGCONT)
        code, err = server.finish()
    finally:
        with contextlib.suppress(ProcessLookupError):  # it has gone, with serve
            os.kill(writer, signal.SIGCONT)
        for conn in conns:
            conn.close()
    assert code == 0, err
    assert "Traceback" not in err
    lines = stored(herolog_home)
    assert len(lines) == 75_000
    assert sorted(lines) == sorted(f"conn {i} line {n}" for i in range(3) for n in range(25_000))


@pytest.mark.subprocess
@pytest.mark.parametrize("signals", [["SIGTERM"], ["SIGINT", "SIGINT"]], ids=["once", "twice"])
def test_a_syslog_client_that_never_pauses_does_not_hold_shutdown(
    herolog_home: Path,
    tmp_path: Path,
    serve_process: Callable[..., ServeProcess],
    signals: list[str],
) -> None:
    """Stopping reads a connection until it is quiet, but not for ever (5 s at most: 0.5 s
    here, where a single stop would wait it out); a second Ctrl-C stops reading at once."""
    env = None
    if len(signals) == 1:
        cap = {"herolog.server.syslog.STOP_READING_S": 0.5}
        env = constants_env(cap)
    server = serve_process("--port", "0", "--syslog-port", "0", env=env)
    port = int(re.search(r"drain intake on 127\.0\.0\.1:(\d+)", "".join(server.banner)).group(1))  # type: ignore[union-attr]
    endless = socket.create_connection(("127.0.0.1", port), timeout=30)
    stop_sending = threading.Event()

    def keep_sending() -> None:
        with contextlib.suppress(OSError):
            while not stop_sending.is_set():
                endless.sendall(batch("endless", 1))
                time.sleep(0.001)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        wait_for_lines = time.monotonic() + 30
        while not stored(herolog_home):
            assert time.monotonic() < wait_for_lines, "nothing was stored"
            time.sleep(0.01)
        server.proc.send_signal(getattr(signal, signals[0]))
        wait_until_refused(port)
        started = time.monotonic()
        for name in signals[1:]:
            server.proc.send_signal(getattr(signal, name))
        code, err = server.finish()
        took = time.monotonic() - started
    finally:
        stop_sending.set()
        endless.close()
        sender.join(10)
    assert code == 0, err
    assert "Traceback" not in err
    if len(signals) == 1:
        assert took < 30, f"stopping took {took:.1f} s"
    else:  # not the 5 s of reading: what is left of stopping only
        assert took < 4, f"stopping took {took:.1f} s after the second Ctrl-C"


@pytest.mark.subprocess
def test_shutdown_with_open_syslog_connections_is_clean(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0", "--syslog-port", "0")
    port = int(re.search(r"drain intake on 127\.0\.0\.1:(\d+)", "".join(server.banner)).group(1))  # type: ignore[union-attr]
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"<13>1 2024-03-05T09:14:07Z h u - - - kept\n")
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert "CancelledError" not in err
    assert stored(herolog_home) == ["kept"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_reader_holding_the_store_for_seconds_does_not_stall_the_intake(
    herolog_home: Path,
) -> None:
    """Once the WAL is large, the writer restarts it, which waits for every reader to be
    done with it: a reader holding one snapshot for seconds (a backup, `herolog logs -n` of a
    large history) held every drain POST up for as long, up to the busy timeout (30 s), and
    again each second after. The writer waits a moment for readers, then tries again later."""
    server = ServeProcess("--port", "0", "--history", "100")
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('BEGIN')\n"
            "db.execute('SELECT count(*) FROM lines').fetchone()\n"
            "print('reading', flush=True)\n"
            "sys.stdin.read()\n",
            str(herolog_home / "logs.db"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline() == "reading\n"
        with web.Client(timeout=30) as client:
            post = functools.partial(
                client.post,
                f"{server.url}/apps/demo/logs",
                headers={"Content-Type": "application/logplex-1"},
            )
            for _ in range(16):  # 70 MB: past the WAL's size for a restart
                assert post(content=batch("x" * 9000, 500)).status_code == 204
            # Held on past the big posts for longer than the writer's second between looks
            # at the WAL's size: it tries a restart meanwhile.
            worst = 0.0
            held_until = time.monotonic() + 1.5
            while time.monotonic() < held_until:
                started = time.monotonic()
                assert post(content=batch("small", 1)).status_code == 204
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.02)
            reader.communicate(timeout=30)  # its stdin closed: it lets go
            assert reader.returncode == 0
            wal = herolog_home / "logs.db-wal"
            deadline = time.monotonic() + 5
            while wal.stat().st_size > 64 << 20 and time.monotonic() < deadline:
                assert post(content=batch("after", 1)).status_code == 204
                time.sleep(0.1)
            assert wal.stat().st_size <= 64 << 20  # restarted once the reader let go
    finally:
        reader.kill()
        reader.communicate()
        server.proc.send_signal(signal.SIGINT)
        code, err = server.finish()
    assert code == 0, err
    assert "has not answered" not in err
    assert worst < 1.5


@pytest.mark.subprocess
def test_a_serve_whose_stderr_has_lost_its_reader_goes_on_forwarding_and_hands_over(
    herolog_home: Path,
) -> None:
    """`herolog serve 2>&1 | head`, a `| tee` killed, an ssh session's pipe: a line serve
    had to say then failed with EPIPE where it was said. A drain's 'is failing' ended its
    delivery (its lines waited for the next serve, `drain list` saying 'ok'), and the
    'stopping: ...' line ended the shutdown before the drains were handed over (the next
    serve waited out the lease: 'ended without handing them over')."""
    from tests.server.sinks import HTTPSink, wait_until

    sink = HTTPSink(statuses=[500])  # the drain fails once, and serve has that to say
    try:
        store_drain(herolog_home / "logs.db", "demo", sink.url())
        server = ServeProcess("--port", "0")
        try:
            assert server.proc.stderr is not None
            server.proc.stderr.close()  # its reader has gone
            with web.Client() as client:
                assert post(client, server.url, "said") == 204
            wait_until(
                lambda: any(x.message.startswith("said ") for x in sink.delivered_lines()),
                timeout=30,
                what="the delivery after the drain failed",
            )
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(timeout=30) == 0
        finally:
            server.proc.kill()
            server.proc.wait()
        again = ServeProcess("--port", "0")
        again.proc.send_signal(signal.SIGTERM)
        code, err = again.finish()
    finally:
        sink.close()
    assert code == 0, err
    assert "without handing them over" not in err
    assert_stored_whole(herolog_home, ["said"])
