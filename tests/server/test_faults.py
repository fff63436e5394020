"""Faults under `herolog serve`: kill -9 at random moments, a full disk, a read-only store.

The crash campaign runs HEROLOG_CRASH_ROUNDS rounds (5 by default); a long one:
``HEROLOG_CRASH_ROUNDS=200 .venv/bin/pytest tests/server/test_faults.py -k crash -s``.

Full disks are real: a small tmpfs mounted in a private mount namespace of the server
(``unshare``, util-linux), which nothing outside it sees and which goes away with it, or a
file-size limit (RLIMIT_FSIZE) set on the running server, whose store writer is a thread.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from herolog.filters import LineFilter
from herolog.store import SQLiteStore
from tests.helpers import herolog_env
from tests.server.test_process import ServeProcess, batch, stored

pytestmark = pytest.mark.subprocess

LOGPLEX = {"Content-Type": "application/logplex-1"}
CRASH_ROUNDS = int(os.environ.get("HEROLOG_CRASH_ROUNDS", "5"))
KILLS = ("serve", "serve-stopped")
"""What each round does: kill serve with SIGKILL, or stop it (SIGSTOP), perhaps in the
middle of a commit, start the next serve while it still holds the store, and kill it a
moment later."""


def check_log(err: str) -> None:
    assert "Traceback" not in err, err


@pytest.fixture
def serve(herolog_home: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``herolog serve`` processes; at the end none of them is left running."""
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        started.append(ServeProcess(*args))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.finish()


class Ledger:
    """What the store holds, read incrementally: lines per batch tag, every message once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.per_batch: Counter[str] = Counter()
        self.messages: set[str] = set()
        self.duplicates: list[str] = []
        self._after = 0

    def read(self) -> Counter[str]:
        store = SQLiteStore.open(self.path, create=False)
        try:
            while True:
                lines, self._after = store.after(self._after, LineFilter(), 5000)
                if not lines:
                    return self.per_batch
                for line in lines:
                    if line.message in self.messages:
                        self.duplicates.append(line.message)
                    self.messages.add(line.message)
                    self.per_batch[line.message.rsplit(" ", 1)[0]] += 1
        finally:
            store.close()


class Clients:
    """Threads posting batches of 1-40 lines, each with its own Frame-Id and lines, to
    whatever ``url`` is now; a batch that gets no 204 (refused, cut off, 503) is posted
    again, the same, until it does."""

    def __init__(self, workers: int, seed: int) -> None:
        self.url: str | None = None
        self.sent: dict[str, int] = {}
        self.acknowledged: list[str] = []
        self.retried: set[str] = set()
        self.problems: list[str] = []
        self._seed = seed
        self._done = threading.Event()
        self._abort = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(w,)) for w in range(workers)]
        for thread in self._threads:
            thread.start()

    def _send(self, worker: int) -> None:
        rng = random.Random(self._seed * 1000 + worker)
        with httpx.Client(timeout=30) as client:
            for i in range(10**9):
                if self._done.is_set():
                    return
                tag, size = f"w{worker}-{i}", rng.randint(1, 40)
                self.sent[tag] = size
                self._deliver(client, tag, batch(tag, size))

    def _deliver(self, client: httpx.Client, tag: str, body: bytes) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self._abort.is_set():
            url = self.url
            status = None
            if url is not None:
                try:
                    response = client.post(
                        f"{url}/apps/demo/logs",
                        content=body,
                        headers={**LOGPLEX, "Logplex-Frame-Id": tag},
                    )
                    status = response.status_code
                except httpx.HTTPError:
                    pass
            if status == 204:
                self.acknowledged.append(tag)
                return
            if status not in (None, 503):
                self.problems.append(f"{tag}: {status}")
                return
            self.retried.add(tag)
            time.sleep(0.02)
        self.problems.append(f"{tag}: no 204 within 120 s")

    def finish(self, abort: bool = False) -> None:
        """Send no new batches; wait until every one sent is acknowledged (or give up)."""
        self._done.set()
        if abort:
            self._abort.set()
        for thread in self._threads:
            thread.join()


def test_crash_rounds_keep_every_acknowledged_batch_whole_and_retries_once(
    herolog_home: Path, serve: Callable[..., ServeProcess]
) -> None:
    seed = int(os.environ.get("HEROLOG_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    store = herolog_home / "logs.db"
    args = ("--port", "0", "--history", "10000000")
    server = serve(*args)
    clients = Clients(workers=4, seed=seed)
    clients.url = server.url
    ledger = Ledger(store)
    committed_unacknowledged = 0
    kills: Counter[str] = Counter()
    try:
        for round_ in range(CRASH_ROUNDS):
            time.sleep(rng.uniform(0.1, 0.8))
            how = KILLS[round_ % len(KILLS)] if round_ < len(KILLS) else rng.choice(KILLS)
            kills[how] += 1
            killed = server
            if how == "serve-stopped":
                os.kill(killed.proc.pid, signal.SIGSTOP)
                threading.Timer(rng.uniform(0.2, 1.0), killed.proc.kill).start()
                # It may wait for the store while the stopped one holds it.
                server = serve(*args)
                clients.url = server.url
            else:
                killed.proc.kill()
                clients.url = None
            code, err = killed.finish()
            assert code == -signal.SIGKILL, err
            check_log(err)
            acknowledged = set(clients.acknowledged)
            per_batch = ledger.read()
            when = f"seed {seed}, round {round_} ({how})"
            lost = sorted(t for t in acknowledged if per_batch[t] != clients.sent[t])
            assert not lost, f"{when}: acknowledged batches not whole: {lost}"
            partial = sorted(t for t, n in per_batch.items() if n != clients.sent[t])
            assert not partial, f"{when}: batches stored in part: {partial}"
            assert not ledger.duplicates, f"{when}: stored twice: {ledger.duplicates[:10]}"
            if how == "serve":
                # Serve is gone: a batch stored but not acknowledged is one whose 204 the
                # kill cut off; its retry must not store it again.
                committed_unacknowledged += len(set(per_batch) - acknowledged)
                server = serve(*args)
                clients.url = server.url
        clients.finish()
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.finish()
        assert code == 0, err
        check_log(err)
    finally:
        clients.finish(abort=True)
    assert not clients.problems, clients.problems
    per_batch = ledger.read()
    assert not ledger.duplicates, ledger.duplicates[:10]
    wrong = {t: (per_batch[t], n) for t, n in clients.sent.items() if per_batch[t] != n}
    assert not wrong, f"batches not stored exactly once and whole: {wrong}"
    assert set(per_batch) == set(clients.sent)
    assert set(clients.acknowledged) == set(clients.sent)
    print(
        f"\ncrash campaign (seed {seed}): {CRASH_ROUNDS} rounds survived ({dict(kills)}),"
        f" {len(clients.sent):,} batches, {sum(clients.sent.values()):,} lines,"
        f" {len(clients.retried):,} batches retried, {committed_unacknowledged:,} of them"
        " committed before the kill without a 204 (their retries were stored once)"
    )


# A full disk, a read-only store ---------------------------------------------------------

NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
"""A mount namespace of the command's own: its mounts vanish with it, whatever happens."""
CONTAINED = r"""
import os, shutil, subprocess, sys
how, home, out, *argv = sys.argv[1:]
if how == "ro":
    subprocess.run(["mount", "--bind", home, home], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", home], check=True)
else:
    kind, size = how.split(":")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "herolog-test", home], check=True)
    if kind == "stored+full":
        made = [sys.executable, "-m", "herolog", "store", "history", "1500"]
        subprocess.run(made, check=True, capture_output=True)
    if kind.endswith("full"):
        with open(os.path.join(home, "filler"), "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(bytes(4096))
            except OSError:
                pass
code = subprocess.call([sys.executable, "-m", "herolog", *argv])
if out != "-":
    for name in os.listdir(home):
        if name.startswith("logs.db"):
            shutil.copy(os.path.join(home, name), out)
sys.exit(code)
"""


def contained(how: str, home: Path, out: Path | None, *argv: str) -> list[str]:
    """The command line running ``herolog ARGV`` with HEROLOG_HOME on a tmpfs of its own
    (``tmpfs:SIZE``; ``full:SIZE`` already full; ``stored+full:SIZE`` full after a store was
    made there) or a read-only bind mount (``ro``); the store files are copied to ``out``
    when it ends."""
    probe = subprocess.run([*NAMESPACE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(
            "these tests need util-linux's unshare and user namespaces (apt-get install"
            f" util-linux; sysctl kernel.unprivileged_userns_clone=1): {probe.stderr.strip()}"
        )
    home.mkdir(exist_ok=True)
    return [*NAMESPACE, sys.executable, "-c", CONTAINED, how, str(home), str(out or "-"), *argv]


class ContainedServe:
    """``herolog serve`` on a tmpfs of its own; the test reaches the tmpfs through /proc."""

    def __init__(self, how: str, home: Path, out: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            contained(how, home, out, "serve", *args),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=herolog_env(),
        )
        assert self.proc.stderr is not None
        self.home = Path(f"/proc/{self.proc.pid}/root{home}")
        banner = ""
        while "only this machine can reach it" not in banner:  # the banner's last line
            line = self.proc.stderr.readline()
            assert line, f"serve did not start: {banner}{self.finish()[1]}"
            banner += line
        self.banner = banner
        self.url = "http://127.0.0.1:" + re.findall(r"http://127\.0\.0\.1:(\d+)/", banner)[0]
        found = re.findall(r"syslog drain intake on 127\.0\.0\.1:(\d+)", banner)
        self.syslog_port = int(found[0]) if found else None

    @property
    def serve_pid(self) -> int:
        return int(Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text())

    def stop(self) -> tuple[int, str]:
        os.kill(self.serve_pid, signal.SIGTERM)
        return self.finish()

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err

    def kill(self) -> None:
        with contextlib.suppress(OSError):  # serve first: its writer ends when it does
            os.kill(self.serve_pid, signal.SIGKILL)
        self.proc.kill()


@pytest.fixture
def contained_serve() -> Iterator[Callable[..., ContainedServe]]:
    started: list[ContainedServe] = []

    def start(how: str, home: Path, out: Path, *args: str) -> ContainedServe:
        started.append(ContainedServe(how, home, out, *args))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill()
        server.finish()


def fill(path: Path) -> None:
    """Take every free byte of the file system ``path`` is on."""
    with path.open("wb", buffering=0) as filler:
        for size in (1 << 20, 4096):
            try:
                while True:
                    filler.write(bytes(size))
            except OSError:
                pass
    assert os.statvfs(path.parent).f_bavail == 0


def stats(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/stats", timeout=30)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_a_full_disk_answers_503_and_recovers_without_a_restart(
    herolog_home: Path, tmp_path: Path, contained_serve: Callable[..., ContainedServe]
) -> None:
    out = tmp_path / "after"
    out.mkdir()
    server = contained_serve(
        "tmpfs:8m", herolog_home, out, "--port", "0", "--syslog-port", "0", "--history", "100000"
    )
    assert server.syslog_port is not None
    serve_pid = server.serve_pid
    syslog_line = "<13>1 2024-03-05T09:14:07Z h u - - - syslog {}\n"
    with httpx.Client(timeout=30) as client:

        def post(tag: str) -> httpx.Response:
            headers = {**LOGPLEX, "Logplex-Frame-Id": tag}
            return client.post(
                f"{server.url}/apps/demo/logs", content=batch(tag, 50), headers=headers
            )

        acknowledged = [f"before-{i}" for i in range(5)]
        assert [post(tag).status_code for tag in acknowledged] == [204] * 5
        syslog = socket.create_connection(("127.0.0.1", server.syslog_port), timeout=30)
        with syslog:
            syslog.sendall(syslog_line.format("before").encode())
            wait_for(lambda: stats(server.url)["syslog_lines"] == 1, "syslog line stored")

            fill(server.home / "filler")
            refused: list[str] = []
            for i in range(1000):  # the WAL may still have room from before
                response = post(f"full-{i}")
                assert response.status_code in (204, 503), response.text
                if response.status_code == 204:
                    acknowledged.append(f"full-{i}")
                    continue
                assert "database or disk is full" in response.text
                assert response.headers["retry-after"].isdigit()
                refused.append(f"full-{i}")
                if len(refused) == 20:
                    break
            assert len(refused) == 20, f"the full disk refused {len(refused)} batches of 1000"
            # A load balancer is told too, until a write goes through again.
            health = client.get(f"{server.url}/healthz")
            assert health.status_code == 503
            assert "database or disk is full" in health.text
            # A syslog sender has no answer to wait for: its connection is closed instead.
            syslog.sendall(syslog_line.format("while full").encode())
            assert syslog.recv(100) == b""

        (server.home / "filler").unlink()
        assert client.get(f"{server.url}/healthz").status_code == 200  # no batch needed
        for tag in refused:  # as Logplex retries: the same batch, the same Frame-Id
            deadline = time.monotonic() + 30
            while (status := post(tag).status_code) != 204 and time.monotonic() < deadline:
                assert status == 503
                time.sleep(0.2)
            assert status == 204, f"{tag} still refused after the space came back"
            acknowledged.append(tag)
        with socket.create_connection(("127.0.0.1", server.syslog_port), timeout=30) as again:
            again.sendall(syslog_line.format("after").encode())
        wait_for(lambda: stats(server.url)["syslog_lines"] == 2, "syslog line stored")
    assert server.serve_pid == serve_pid, "serve was restarted"
    code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err, err
    notes = err.splitlines()
    assert sum("could not store: database or disk is full" in n for n in notes) == 1, notes
    assert sum("storing works again" in n for n in notes) == 1, notes
    assert len(notes) <= 4, f"a flood of messages: {notes}"  # checkpoints may say so too

    store = SQLiteStore.open(out / "logs.db", create=False)
    try:
        syslog_messages = [x.message for x in store.last(LineFilter(app="default"), 100)[0]]
        per_batch = Counter(
            x.message.rsplit(" ", 1)[0] for x in store.last(LineFilter(app="demo"), 100_000)[0]
        )
    finally:
        store.close()
    assert syslog_messages == ["syslog before", "syslog after"]
    assert per_batch == dict.fromkeys(acknowledged, 50), "a batch was lost, split or stored twice"


def test_a_failed_big_batch_names_the_disk_error_and_stopping_while_full_is_clean(
    herolog_home: Path, serve: Callable[..., ServeProcess]
) -> None:
    server = serve("--port", "0", "--history", "100000")
    with httpx.Client(timeout=60) as client:

        def post(tag: str, lines: int) -> httpx.Response:
            headers = {**LOGPLEX, "Logplex-Frame-Id": tag}
            return client.post(
                f"{server.url}/apps/demo/logs", content=batch(tag, lines), headers=headers
            )

        assert post("kept", 10).status_code == 204
        # Every write of serve past a file's first byte now fails (EFBIG): a disk that
        # takes nothing more. SQLite writes a big batch out before it commits, fails then,
        # and rolls back by itself.
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        big = post("big", 30_000)
        small = post("small", 5)
    for response in (big, small):
        assert response.status_code == 503
        assert re.search("disk I/O error|database or disk is full", response.text), response.text
        assert "rollback" not in response.text
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert sum("could not store" in line for line in err.splitlines()) == 1, err
    assert Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home)) == {"kept": 10}


WRITER = """
import asyncio, sys
from pathlib import Path
from herolog.server import writer as w
from tests.server.test_process import batch
w.PRUNE_EVERY_S = 0
w.FRAME_ID_WINDOW_S = 0

async def main():
    writer = w.Writer(Path(sys.argv[1]))
    await writer.start()
    print("ready", flush=True)
    for job_id, tag in enumerate(map(str.strip, sys.stdin), 1):
        try:
            stored = await writer.write_body("demo", batch(tag, 3), None, tag)
            print("ok", stored.lines, flush=True)
        except Exception as error:
            print("error", error, flush=True)
    await writer.stop()

asyncio.run(main())
"""


class WriterProcess:
    """The real store writer in a process of its own, storing a batch for each tag it
    reads, and printing how that went."""

    def __init__(self, store: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store)],
            cwd=Path(__file__).parents[2],  # where ``tests`` is
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        assert ready == "ready\n", f"the writer did not start: {self.finish()[1]}"

    def store(self, tag: str) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(tag + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"the writer went away: {self.finish()[1]}"
        return answer.strip()

    def finish(self) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=60)
        finally:
            self.proc.kill()
        return self.proc.returncode, err


@pytest.fixture
def writer_process() -> Iterator[Callable[..., WriterProcess]]:
    started: list[WriterProcess] = []

    def start(store: Path) -> WriterProcess:
        started.append(WriterProcess(store))
        return started[-1]

    yield start
    for writer in started:
        if writer.proc.poll() is None:
            writer.finish()


def frame_ids(path: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT frame_id FROM frames")}


def test_pruning_frame_ids_on_a_full_disk_does_not_crash_the_writer(
    herolog_home: Path, writer_process: Callable[..., WriterProcess]
) -> None:
    from herolog.parser import LogLine
    from herolog.store import Batch

    path = herolog_home / "logs.db"
    SQLiteStore.open(path).close()
    # Another process stores a batch the writer's next prune will want to forget.
    other = SQLiteStore.open(path)
    other.append(
        [Batch("demo", [LogLine("-", "-", "app", "web.1", "x", None, None, None)], None, "old")]
    )
    other.close()
    writer = writer_process(path)
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    assert writer.store("refused").startswith("error")
    assert writer.store("refused-again").startswith("error")  # after a prune that failed
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    assert writer.store("stored") == "ok 3"
    code, err = writer.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert [line.split(" (store")[0] for line in err.splitlines()] == [
        "herolog serve: could not store: disk I/O error",
        "herolog serve: storing works again",
    ]
    assert "old" not in frame_ids(path)  # the prune after the space came back did it


@pytest.mark.parametrize(
    ("how", "command"),
    [
        ("ro", ["serve", "--port", "0"]),
        ("ro", ["logs"]),
        ("ro", ["import", "-"]),
        ("full:1m", ["serve", "--port", "0"]),
        ("full:1m", ["import", "-"]),
        ("stored+full:1m", ["serve", "--port", "0"]),
    ],
)
def test_a_store_on_a_read_only_or_full_file_system_is_a_clear_error(
    herolog_home: Path, how: str, command: list[str]
) -> None:
    reason = "its file system is read-only" if how == "ro" else "(disk|its file system) is full"
    from tests.helpers import line, store_lines

    if how == "ro":
        store_lines(herolog_home / "logs.db", "demo", line("kept"))
    proc = subprocess.run(
        contained(how, herolog_home, None, *command),
        capture_output=True,
        text=True,
        input="2024-03-05T09:14:07+00:00 app[web.1]: hello\n",
        env=herolog_env(),
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: cannot open the store {herolog_home / 'logs.db'}: "
        + proc.stderr.split(": ", 2)[2].strip()
    ]
    assert re.search(reason, proc.stderr), proc.stderr
