from __future__ import annotations

import fcntl
import io
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import trustme

from herolog.filters import LineFilter
from herolog.server import ServeConfig, Server, forwarder, run_in_thread
from herolog.store import SQLiteStore, StoredLine
from tests import web
from tests.helpers import herolog_env
from tests.server.sinks import HTTPSink


class Running:
    """A herolog serve running in this process, on free ports."""

    def __init__(self, server: Server, log: io.StringIO) -> None:
        self.server = server
        self.log = log
        scheme = "https" if server.config.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{server.http_port}"
        self.syslog_port = server.syslog_port

    def post(
        self,
        app: str,
        body: bytes | Iterator[bytes],
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        sent = {"Content-Type": "application/logplex-1", **(headers or {})}
        return web.post(f"{self.url}/apps/{app}/logs", content=body, headers=sent, **kwargs)

    def lines(self, app: str | None = None) -> list[StoredLine]:
        store = SQLiteStore.open(self.server.config.store_path, create=False)
        try:
            return store.last(LineFilter(app=app), 100_000)[0]
        finally:
            store.close()


ServerFactory = Callable[..., Running]


@pytest.fixture
def make_server(herolog_home: Path) -> Iterator[ServerFactory]:
    stops: list[Callable[[], None]] = []

    def make(**options: Any) -> Running:
        config = replace(ServeConfig(store_path=herolog_home / "logs.db", port=0), **options)
        log = io.StringIO()
        server = Server(config, log=log)
        stops.append(run_in_thread(server))
        return Running(server, log)

    yield make
    for stop in stops:
        stop()


@contextmanager
def running_server(store_path: Path, **options: Any) -> Iterator[Running]:
    """A server on a free port, in a thread, for as long as the block: for fixtures of
    module scope, whose tests share one (each of their own costs half a second)."""
    config = replace(ServeConfig(store_path=store_path, port=0), **options)
    log = io.StringIO()
    server = Server(config, log=log)
    stop = run_in_thread(server)
    try:
        yield Running(server, log)
    finally:
        stop()


def own_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A certificate for 127.0.0.1 from a CA no system trusts (trustme's), as someone's own
    for serve --certfile: its certfile, its keyfile, and the CA's PEM file, in
    ``directory``."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    issued.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    return certfile, keyfile, cafile


@pytest.fixture
def quick_forwarder(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process servers look for new drains (every 0.5 s in serve) and save the drains'
    state (every second) ten times as often: for tests that wait for those and are about
    neither how often they come nor a serve process, each of whose waits cost that much."""
    monkeypatch.setattr(forwarder, "RELOAD_INTERVAL_S", forwarder.RELOAD_INTERVAL_S / 10)
    monkeypatch.setattr(forwarder, "SAVE_INTERVAL_S", forwarder.SAVE_INTERVAL_S / 10)


@pytest.fixture
def served(make_server: ServerFactory) -> Running:
    return make_server(syslog_port=0)


@pytest.fixture
def sink() -> Iterator[HTTPSink]:
    """A real HTTP drain endpoint, answering 204 unless told otherwise."""
    made = HTTPSink()
    yield made
    made.close()


class ServeProcess:
    """A ``herolog serve`` in a child process, started and waited for until it listens."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdout: IO[bytes] | int = subprocess.DEVNULL,
        open_files: int | None = None,
        terminal: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        """``open_files``: the process's soft and hard limit on open files (ulimit -n).
        ``terminal``: run it in a session of its own whose controlling terminal is a pty
        (closed with :meth:`finish`), as from a shell; without, in a session of its own
        with none, as under systemd."""
        self._terminal: int | None = None
        slave: int | None = None
        if terminal:
            self._terminal, slave = os.openpty()

        def prepare() -> None:
            # As from a terminal, whatever the tests were started from: under nohup (a CI
            # job run with it, say), serve would inherit SIGHUP ignored and, as it should
            # there, outlive the hangups that tests send it.
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            if slave is not None:
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "herolog", "serve", *args],
                stderr=subprocess.PIPE,
                stdout=stdout,
                text=True,
                env=env or herolog_env(),
                preexec_fn=prepare,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        finally:
            if slave is not None:
                os.close(slave)
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
        # The intake's own line: a drain's "catching up" line, with the drain's URL, can
        # come before the banner.
        m = re.search(r"HTTPS? drain intake on (https?)://\S+:(\d+)/apps/", "".join(self.banner))
        assert m, self.banner
        self.url = f"{m.group(1)}://127.0.0.1:{m.group(2)}"

    def hang_up(self) -> None:
        """Close its terminal, as a terminal window or an ssh session closes."""
        assert self._terminal is not None, "started without terminal=True"
        os.close(self._terminal)
        self._terminal = None

    def said(self, wanted: str, timeout: float = 30) -> str:
        """The next line of serve's log with ``wanted`` in it (those before it are read, and
        ``finish`` no longer returns them), or an AssertionError after ``timeout`` seconds:
        read in a thread, so that a line that never comes fails the test rather than hang
        it."""
        assert self.proc.stderr is not None
        stderr = self.proc.stderr
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in iter(stderr.readline, ""):
                lines.put(line)
                if wanted in line:
                    return
            lines.put("")

        threading.Thread(target=read, daemon=True).start()
        read_so_far: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"serve did not say {wanted!r}: {read_so_far}") from None
            assert line, f"serve ended before it said {wanted!r}: {read_so_far}"
            read_so_far.append(line)
            if wanted in line:
                return line

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for the process to end (killing it if it will not); its status and stderr."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self._terminal is not None:
            os.close(self._terminal)
            self._terminal = None
        return self.proc.returncode, "".join(self.banner) + err


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, terminal: bool = False
    ) -> ServeProcess:
        started.append(ServeProcess(*args, env=env, terminal=terminal))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.finish()
