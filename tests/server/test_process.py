"""`herolog serve` as a real process: signals, kill -9, and the command line."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from herolog.filters import LineFilter
from herolog.parser import LogLine, format_syslog, frame
from herolog.store import SQLiteStore
from tests.helpers import herolog_env


class ServeProcess:
    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdout: IO[bytes] | int = subprocess.DEVNULL,
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herolog", "serve", *args],
            stderr=subprocess.PIPE,
            stdout=stdout,
            text=True,
            env=env or herolog_env(),
        )
        assert self.proc.stderr is not None
        self.banner: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                code, err = self.finish()
                raise AssertionError(f"serve exited with {code}: {err}")
            self.banner.append(line)
            if "add a drain with" in line:
                break
        m = re.search(r"http://[^:/ ]+:(\d+)/", "".join(self.banner))
        assert m, self.banner
        self.url = f"http://127.0.0.1:{m.group(1)}"

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for the process to end (killing it if it will not); its status and stderr."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, "".join(self.banner) + err


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
        started.append(ServeProcess(*args, env=env))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.finish()


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


class Load:
    """Threads posting 10-line batches, tagged by thread and count, until told to stop or
    the server goes away; remembers which batches were acknowledged with a 204."""

    def __init__(self, url: str, workers: int) -> None:
        self.url = url
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(w,)) for w in range(workers)]
        for thread in self._threads:
            thread.start()

    def _send(self, worker: int) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(100_000):
                if self._stop.is_set():
                    return
                tag = f"w{worker}-{i}"
                try:
                    if post(client, self.url, tag) == 204:
                        self.acknowledged.append(tag)
                except httpx.HTTPError:
                    return

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
    with httpx.Client() as client:
        for i in range(100):
            assert post(client, server.url, f"b{i}") == 204
    server.proc.kill()
    assert server.finish()[0] == -signal.SIGKILL
    assert len(stored(herolog_home)) == 1000


@pytest.mark.subprocess
def test_kill_9_under_load_keeps_every_acknowledged_batch_whole(
    herolog_home: Path, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0", "--history", "100000")
    load = Load(server.url, workers=8)
    time.sleep(1.5)
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
    with httpx.Client() as client:
        assert post(client, again.url, acknowledged[0]) == 204
    again.proc.send_signal(signal.SIGTERM)
    assert again.finish()[0] == 0
    assert Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home))[acknowledged[0]] == 10


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_finishes_requests_and_exits_0(
    herolog_home: Path, sig: signal.Signals, serve_process: Callable[..., ServeProcess]
) -> None:
    server = serve_process("--port", "0", "--history", "100000")
    load = Load(server.url, workers=4)
    time.sleep(1.0)
    server.proc.send_signal(sig)
    code, err = server.finish()
    acknowledged = load.stop()
    assert code == 0, err
    assert "Traceback" not in err
    per_batch = Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home))
    assert acknowledged
    assert all(per_batch[tag] == 10 for tag in acknowledged)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "env"),
    [(["--host", "0.0.0.0"], {}), ([], {"HEROLOG_HOST": "0.0.0.0"}), (["--host", "::"], {})],
)
def test_public_address_without_auth_is_refused(args: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=herolog_env(**env),
        timeout=30,
    )
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
        proc = subprocess.run(
            [sys.executable, "-m", "herolog", "serve", *(x for kv in ports.items() for x in kv)],
            capture_output=True,
            text=True,
            env=herolog_env(),
            timeout=30,
        )
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auth", "nopassword"], "USER:PASSWORD"),
        (["--certfile", __file__], "go together"),
        (["--port", "70000"], "70000"),
    ],
)
def test_bad_serve_options(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "serve", *args],
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=30,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


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
