"""Shared test helpers: building log lines and filling stores."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

from hypothesis import strategies as st

from herolog.parser import LogLine, Received
from herolog.store import Batch, SQLiteStore, StoredLine

RFC3339_PARTS = (
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9998, 1, 1)),
    st.sampled_from("Tt"),
    st.integers(0, 9),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-0800", "+1400"]),
    st.booleans(),
)
"""What :func:`rfc3339` takes, drawn: every form of RFC 3339 timestamp the intake takes."""


def rfc3339(moment: datetime, separator: str, digits: int, offset: str, leap: bool) -> str:
    """``moment`` in one of RFC 3339's forms: ``separator`` T or t, ``digits`` of fraction
    (0 to 9, past the microsecond made up), ``offset``, and a leap second if ``leap`` and
    the moment's second is 59."""
    second = "60" if leap and moment.second == 59 else f"{moment.second:02d}"
    nanos = f"{moment.microsecond:06d}{moment.microsecond % 1000:03d}"
    fraction = f".{nanos[:digits]}" if digits else ""
    return f"{moment:%Y-%m-%d}{separator}{moment:%H:%M}:{second}{fraction}{offset}"


SERVE_POLL_S = 0.01
"""How often the tests' socketserver servers look for shutdown(): it waits up to one
interval, and serve_forever's default (0.5 s) made stopping a test server cost that much."""

RECEIVED = Received("2026-01-02T03:04:05.000006+00:00", "2026-01-02T03:04:05.000006Z")


def line(
    message: str,
    *,
    source: str = "app",
    dyno: str = "web.1",
    second: int = 0,
    pri: int = 190,
) -> LogLine:
    minute, sec = divmod(second, 60)
    hour, minute = divmod(minute, 60)
    timestamp = f"2024-03-05T{9 + hour:02d}:{minute:02d}:{sec:02d}.000000+00:00"
    return LogLine(timestamp, timestamp[:26] + "Z", source, dyno, message, pri, "host", None)


def fixture_view(lines: Iterable[LogLine | StoredLine]) -> list[dict[str, object]]:
    """Lines as logplex-cases.json writes its expectations."""
    return [
        {
            "timestamp": x.timestamp,
            "source": x.source,
            "dyno": x.dyno,
            "message": x.message,
            "pri": x.pri,
        }
        for x in lines
    ]


def decode_attributes(line: StoredLine) -> dict[str, str]:
    """The attributes the store keeps with ``line``, decoded."""
    return json.loads(line.attributes) if line.attributes else {}


def store_lines(path: Path, app: str, *lines: LogLine) -> None:
    """Append ready-made lines to the store at ``path`` (as another process would)."""
    store = SQLiteStore.open(path)
    try:
        store.append([Batch(app, list(lines))])
    finally:
        store.close()


def store_drain(path: Path, app: str, url: str) -> None:
    """Register a drain of ``app`` in the store at ``path`` (as ``herolog drain add`` would)."""
    store = SQLiteStore.open(path)
    try:
        store.add_drain(app, url)
    finally:
        store.close()


def run_out_forwarding_lease(path: Path) -> None:
    """Bring the store's forwarding lease to the state its 10 s leave it in when the serve
    holding it was killed: run out, still naming that serve. A dead serve's lease running out
    in real time is tested in test_store; waiting it out cost each test that needs it 10 s."""
    store = SQLiteStore.open(path)
    try:
        held = store._lease("forwarding")
        assert held is not None, "no serve holds the forwarding lease"
        assert store.leased("forwarding")
        assert store.lease("forwarding", held[0], -1) is None
        assert not store.leased("forwarding")
    finally:
        store.close()


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a herolog command in-process: its exit status, stdout and stderr."""
    from click.testing import CliRunner

    from herolog.cli import cli

    result = CliRunner().invoke(cli, list(args), env=env)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.stdout, result.stderr


def fill(store: SQLiteStore, app: str, messages: list[str], **kwargs: object) -> None:
    """Append lines as a receiver would: received now."""
    store.append([Batch(app, [line(m, **kwargs) for m in messages])])  # type: ignore[arg-type]


import contextlib  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from typing import IO, Any  # noqa: E402

import pytest  # noqa: E402

PROXY_VARIABLES = tuple(
    case(name)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for case in (str.lower, str.upper)
)
"""The environment's proxy settings, both spellings: a test of one clears the machine's."""


def herolog_env(**extra: str) -> dict[str, str]:
    """The environment for a child herolog: the test's HEROLOG_HOME, no colour settings, and
    Python's output buffered as a user's is (a PYTHONUNBUFFERED in the test's environment
    hid a status lost to the last flush of herolog run's stdout)."""
    unset = ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "TERM", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    # The shells in completion tests call `herolog`: the one installed beside this Python.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def herolog_process(
    *args: str, env: dict[str, str] | None = None, **options: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m herolog ARGS`` run to its end, in the test's environment (``env`` added to
    it): its status and output as text, captured unless ``options`` send them elsewhere;
    nothing on its standard input unless ``options`` give some."""
    if "stdout" not in options and "stderr" not in options:
        options["capture_output"] = True
    if "input" not in options:
        options.setdefault("stdin", subprocess.DEVNULL)
    options.setdefault("timeout", 30)
    return subprocess.run(
        [sys.executable, "-m", "herolog", *args],
        text=True,
        env=herolog_env(**(env or {})),
        **options,
    )


CHILDREN: list[Child] = []
"""Every Child a test started: those still running when it ends are killed (a test that
failed before it stopped its ``logs --tail`` left it running for the rest of the run)."""


class Child:
    """A running ``herolog`` command whose output lines are read with timeouts."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdout: int | IO[bytes] = subprocess.PIPE,
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herolog", *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env or herolog_env(),
        )
        CHILDREN.append(self)
        self.lines: queue.Queue[str | None] = queue.Queue()
        if self.proc.stdout is not None:
            threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode().rstrip("\n"))
        self.lines.put(None)

    def wait_for_open(self, path: str, timeout: float = 15.0, settle: float = 0.3) -> None:
        """Wait until the child has ``path`` open (Linux /proc), plus ``settle`` seconds to
        use it."""
        import time

        deadline = time.monotonic() + timeout
        fds = Path(f"/proc/{self.proc.pid}/fd")
        while time.monotonic() < deadline:
            try:
                if any(str(fd.readlink()) == path for fd in fds.iterdir()):
                    time.sleep(settle)
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"herolog did not open {path} within {timeout}s")

    def wait_for_close(self, path: str, timeout: float = 15.0) -> None:
        """Wait until the child has neither ``path`` open nor the file that was there before
        it was deleted or replaced (Linux /proc)."""
        import time

        gone = {path, f"{path} (deleted)"}
        deadline = time.monotonic() + timeout
        fds = Path(f"/proc/{self.proc.pid}/fd")
        while time.monotonic() < deadline:
            try:
                targets = set()
                for fd in fds.iterdir():
                    with contextlib.suppress(FileNotFoundError):  # closed meanwhile
                        targets.add(str(fd.readlink()))
            except OSError:
                pass
            else:
                if not targets & gone:
                    return
            time.sleep(0.02)
        raise AssertionError(f"herolog still had {path} open after {timeout}s")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The command stopped (SIGSTOP) while inside: a reader that cannot keep up."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def read_lines(self, count: int, timeout: float = 10.0) -> list[str]:
        got = []
        for _ in range(count):
            item = self.lines.get(timeout=timeout)
            if item is None:
                break
            got.append(item)
        return got

    def assert_quiet_for(self, seconds: float) -> None:
        try:
            item = self.lines.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected output: {item!r}")

    def stop(self, sig: int | None = None, timeout: float = 10.0) -> tuple[int, str]:
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Its pipes closed now: left to the garbage collector, they fail a later test
            # with an unraisable-exception warning.
            self.proc.kill()
            self.proc.communicate()
            raise
        return self.proc.returncode, err.decode()


def shell_job(script: str) -> subprocess.Popen[str]:
    """``bash -c SCRIPT`` as a terminal's foreground job: a process group of its own, which
    a Ctrl-C (``os.killpg(job.pid, signal.SIGINT)``) reaches as a whole."""
    return subprocess.Popen(
        ["bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(),
        start_new_session=True,
    )


def first_line_into_a_socket(args: list[str], env: dict[str, str]) -> tuple[bytes, int, bytes]:
    """Run ``herolog ARGS`` (a tail) with its output a socket, as node gives the processes it
    starts; read its first line and close the socket: that line, then the exit status and
    stderr of herolog, which is to end at that close."""
    import socket

    reader, writer = socket.socketpair()
    with contextlib.closing(reader), contextlib.closing(writer):
        proc = subprocess.Popen(
            [sys.executable, "-m", "herolog", *args],
            stdout=writer.fileno(),
            stderr=subprocess.PIPE,
            env=env,
        )
        writer.close()
        try:
            with reader.makefile("rb") as lines:
                first = lines.readline()
            reader.close()
            _, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
    return first, proc.returncode, err


_SET_CONSTANTS = """\
import importlib, json, os, sys
if sys.orig_argv[1:3] == ["-m", "herolog"]:
    for name, value in json.loads(os.environ["HEROLOG_TEST_CONSTANTS"]).items():
        module, attribute = name.rsplit(".", 1)
        setattr(importlib.import_module(module), attribute, value)
"""


_constants_dir: Path | None = None


def constants_env(constants: dict[str, float], **extra: str) -> dict[str, str]:
    """The environment (:func:`herolog_env`'s, with ``extra``) of a ``python -m herolog``
    whose module ``constants`` (``{"herolog.server.writer.STALL_S": 1.0}``) are set as a
    monkeypatch sets them in this process, by a ``sitecustomize`` on its path: for a test of
    a process (signals, exit status, stderr, an outage) that would otherwise sit through a
    wait at its default. No other Python it starts (the store writer) is touched."""
    import atexit
    import json
    import shutil
    import tempfile

    global _constants_dir
    if _constants_dir is None:
        _constants_dir = Path(tempfile.mkdtemp(prefix="herolog-constants-"))
        atexit.register(shutil.rmtree, _constants_dir, ignore_errors=True)
        (_constants_dir / "sitecustomize.py").write_text(_SET_CONSTANTS)
    for name in constants:  # a misspelt one would be set and change nothing
        module, attribute = name.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), attribute), f"no {name}"
    paths = [str(_constants_dir), extra.pop("PYTHONPATH", os.environ.get("PYTHONPATH", ""))]
    return herolog_env(
        **extra,
        PYTHONPATH=os.pathsep.join(filter(None, paths)),
        HEROLOG_TEST_CONSTANTS=json.dumps(constants),
    )


def bound_by_file_modes(command: list[str]) -> list[str]:
    """``command`` run so that file modes stop it, as they stop a user: as it is, or, when
    the tests run as root, as root without the capabilities (CAP_DAC_OVERRIDE and the rest)
    that let it pass them. Still uid 0, it reaches the test's files and this Python (under a
    ``/root`` of 0700, say) as their owner; a file of mode 000 is closed to it."""
    if os.geteuid() != 0:
        return command
    import shutil

    import pytest

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("as root this test needs setpriv (util-linux) to drop root's capabilities")
    return [
        setpriv,
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--",
        *command,
    ]


def in_namespace(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by Python in a network namespace of its own; fails the test, saying
    what to install, if one cannot be had."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.fail(
            "needs unshare (util-linux) and ip (iproute2: apt-get install iproute2), for a"
            " network namespace of its own"
        )
    namespace = [unshare, "--user", "--map-root-user", "--net"]
    probe = subprocess.run([*namespace, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(
            "needs user and network namespaces (unshare --user --map-root-user --net:"
            f" {probe.stderr.strip()}); allow them (sysctl kernel.unprivileged_userns_clone=1,"
            " or kernel.apparmor_restrict_unprivileged_userns=0)"
        )
    done = subprocess.run(
        [*namespace, sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


@contextlib.contextmanager
def write_lock_held(store_path: Path) -> Iterator[Any]:
    """Another connection holding the store's write lock for the block, as the sqlite3
    shell's ``BEGIN IMMEDIATE`` or a long import holds it: ``execute("COMMIT")`` on it lets
    go sooner. Closed at the block's end (a sqlite3.Connection)."""
    import sqlite3

    other = sqlite3.connect(store_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
    finally:
        other.close()


def interrupted_in_lock_wait(path: Path, args: list[str], then: str) -> tuple[int, bytes]:
    """``python -m herolog ARGS`` run while another connection holds the store's write
    lock (the busy timeout an hour: the old silent wait would outlast the test): it must say
    once that it waits and what a Ctrl-C does (``then``); a SIGINT is sent then. Its exit
    status and what it wrote after that line, stdout and stderr together."""
    with write_lock_held(path):
        proc = subprocess.Popen(
            [sys.executable, "-m", "herolog", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=constants_env({"herolog.store.BUSY_TIMEOUT_S": 3600.0}),
        )
        try:
            assert proc.stderr is not None
            assert (
                line_within(proc.stderr)
                == (
                    f"Another process holds the store's write lock ({path}): waiting up to 3600 s"
                    f" for it; Ctrl-C {then}.\n"
                ).encode()
            )
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            ended(proc)
    return proc.returncode, out + err


def ended(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` if it still runs and reap it, its pipes closed: a test's cleanup."""
    proc.kill()
    proc.communicate()


def until_waiting_for_the_write_lock(pid: int) -> None:
    """Until process ``pid`` sleeps (Linux /proc): SQLite's wait for a lock sleeps, where an
    import reading its input, parsing or storing does not."""
    import time

    deadline = time.monotonic() + 30
    while "nanosleep" not in Path(f"/proc/{pid}/wchan").read_text():
        assert time.monotonic() < deadline, "it did not wait for the store's write lock"
        time.sleep(0.02)


def line_within(stream: IO[bytes], timeout: float = 30.0) -> bytes:
    """The next line of a child's pipe ``stream`` (empty at its end), read a byte at a time
    past Python's buffer, so that what is left stays for ``communicate``; AssertionError if
    it has not come whole within ``timeout`` (a readline would wait for ever)."""
    import select
    import time

    fd = stream.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no whole line within {timeout} s, only {line!r}"
        if select.select([fd], [], [], remaining)[0]:
            byte = os.read(fd, 1)
            if not byte:
                break
            line += byte
    return line


HANDLER_JOIN_S = 10.0
"""How long closing a LocalHTTPServer waits for each of its handlers to finish."""


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log each request on stderr, where the tests read
    herolog's own messages."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer_empty(self, status: int) -> None:
        """Answer ``status`` with no body."""
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class LocalHTTPServer(ThreadingHTTPServer):
    """A test's HTTP server on 127.0.0.1 (HTTPS with ``context``) that leaves nothing open.

    Closing it shuts the connections its handlers still hold (a client's kept-alive one, a
    stream left open) and waits for the handlers to end. socketserver's own close waits for
    none of them, so their sockets outlived the test and were reported unclosed when the
    interpreter exited.
    """

    # socketserver's backlog is 5: hundreds of drains connecting at once had SYNs dropped,
    # and retried after 1 s and 3 s.
    request_queue_size = 1024
    daemon_threads = True

    def __init__(
        self,
        handler: Callable[..., BaseHTTPRequestHandler],
        port: int = 0,
        context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", port), handler)
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.port: int = self.server_address[1]
        scheme = "https" if context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._handling: dict[Any, threading.Thread] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._lock:
            self._handling[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._handling.pop(request, None)
        super().shutdown_request(request)

    def open_connections(self) -> list[socket.socket]:
        """The connections a handler still holds."""
        with self._lock:
            return list(self._handling)

    def start(self) -> LocalHTTPServer:
        threading.Thread(target=self.serve_forever, args=(SERVE_POLL_S,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving, end the connections still open and wait for their handlers."""
        self.shutdown()
        self.server_close()
        with self._lock:
            handling = dict(self._handling)
        for conn in handling:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in handling.values():
            thread.join(HANDLER_JOIN_S)
            assert not thread.is_alive(), (
                f"a handler of the test server {self.url} was still busy"
                f" {HANDLER_JOIN_S:g} s after its connection was shut"
            )


@contextlib.contextmanager
def serving(
    handler: Callable[..., BaseHTTPRequestHandler], port: int = 0
) -> Iterator[LocalHTTPServer]:
    """``handler`` served on 127.0.0.1 (a free port unless ``port``) while in the block."""
    server = LocalHTTPServer(handler, port).start()
    try:
        yield server
    finally:
        server.stop()
