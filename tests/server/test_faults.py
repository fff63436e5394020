"""Faults under `herolog serve`: kill -9 at random moments, a full disk, a read-only store.

The crash campaign runs HEROLOG_CRASH_ROUNDS rounds (5 by default); a long one:
``HEROLOG_CRASH_ROUNDS=200 .venv/bin/pytest -m slow tests/server/test_faults.py -k crash -s``.

Full disks are real: a small tmpfs mounted in a private mount namespace of the server
(``unshare``, util-linux), which nothing outside it sees and which goes away with it, or a
file-size limit (RLIMIT_FSIZE) set on the running store writer.
"""

from __future__ import annotations

import contextlib
import os
import pickle
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
from herolog.store_writer import HEADER, pack
from tests import web
from tests.helpers import constants_env, herolog_env
from tests.server.conftest import ServeProcess
from tests.server.test_process import batch, stored

pytestmark = pytest.mark.subprocess

LOGPLEX = {"Content-Type": "application/logplex-1"}
CRASH_ROUNDS = int(os.environ.get("HEROLOG_CRASH_ROUNDS", "5"))
KILLS = ("serve", "writer", "writer-then-serve", "serve-and-writer", "serve-writer-stuck")
"""What each round kills with SIGKILL: serve alone (its store writer is orphaned and ends
by itself), the writer alone (serve starts another), both, one after the other or at
once, or serve while its writer is stopped (SIGSTOP), perhaps in the middle of a commit:
the next serve starts while that orphan still holds the store, and it resumes later."""


def writers(store: Path) -> list[int]:
    """The live store-writer processes of ``store``, orphans included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"herolog.store_writer" in argv and str(store).encode() in argv:
            found.append(int(entry.name))
    return found


def the_writer(store: Path, timeout: float = 30.0) -> int:
    """The one store writer of ``store``, once there is one (serve restarts a dead one)."""
    deadline = time.monotonic() + timeout
    while len(found := writers(store)) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(found) == 1, f"store writers of {store}: {found}"
    return found[0]


def wait_until_gone(store: Path, timeout: float = 30.0) -> None:
    """Wait for every writer of ``store`` to exit; fail (after killing them) if one will not."""
    deadline = time.monotonic() + timeout
    while (left := writers(store)) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"store writers {left} outlived their serve by {timeout} s"


def check_log(err: str) -> None:
    """No traceback, and what a restart of the writer says reads right."""
    assert "Traceback" not in err, err
    for line in err.splitlines():
        if "restarting it" in line or "trying again" in line:
            assert re.fullmatch(
                r"herolog serve: the store writer (exited with status -?\d+; restarting it"
                r"|could not start \(.+\); trying again every few seconds, and saying so when"
                r" it starts)",
                line,
            ), line


@pytest.fixture
def serve(herolog_home: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``herolog serve`` processes; at the end none of them, nor a store writer
    they orphaned, is left running."""
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
        started.append(ServeProcess(*args, env=env))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
    for pid in writers(herolog_home / "logs.db"):
        os.kill(pid, signal.SIGKILL)
    for server in started:
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
        with web.Client(timeout=30) as client:
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


@pytest.mark.slow
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
            writer = the_writer(store)
            if how in ("writer", "writer-then-serve", "serve-and-writer"):
                os.kill(writer, signal.SIGKILL)
            if how == "serve-writer-stuck":
                os.kill(writer, signal.SIGSTOP)
                threading.Timer(rng.uniform(0.2, 1.0), os.kill, (writer, signal.SIGCONT)).start()
            if how == "writer-then-serve":
                time.sleep(rng.uniform(0, 0.2))  # serve may be starting another writer
            if how != "writer":
                server.proc.kill()
                clients.url = None
                killed = server
                if how == "serve-writer-stuck":
                    server = serve(*args)
                    clients.url = server.url

                    def orphan_gone(pid: int = writer) -> bool:
                        return pid not in writers(store)

                    wait_for(orphan_gone, "exit of the orphaned writer", 60)
                else:
                    wait_until_gone(store)
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
            if how not in ("writer", "serve-writer-stuck"):
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

IN_A_SECOND = "IN_A_SECOND"
"""In the ARGV of :func:`contained`: the time a second after the command starts, for a tail's
--until (one set before, by the test, has to leave room for the set-up's commands too)."""
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
    if kind.endswith("lines+full"):
        made = [sys.executable, "-m", "herolog", "run", "-a", "demo", "--", "echo", "kept"]
        subprocess.run(made, check=True, capture_output=True)
    if kind.endswith("full"):
        with open(os.path.join(home, "filler"), "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(bytes(4096))
            except OSError:
                pass
    if kind.startswith("refused+"):
        refused = [sys.executable, "-m", "herolog", "store", "history", "10"]
        assert subprocess.run(refused, capture_output=True).returncode == 1
if "IN_A_SECOND" in argv:
    from datetime import timedelta
    from herolog import timestamps
    soon = timestamps.to_instant(timestamps.now() + timedelta(seconds=1))
    argv = [soon if arg == "IN_A_SECOND" else arg for arg in argv]
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
    made there, ``lines+full:SIZE`` after a few lines were stored in it,
    ``refused+lines+full:SIZE`` and then a write refused by the full disk) or a read-only bind
    mount (``ro``); the store files are copied to ``out`` when it ends. :data:`IN_A_SECOND`
    in ARGV is the time a second after ARGV's command starts."""
    probe = subprocess.run([*NAMESPACE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(
            "these tests need util-linux's unshare and user namespaces (apt-get install"
            f" util-linux; sysctl kernel.unprivileged_userns_clone=1): {probe.stderr.strip()}"
        )
    home.mkdir(exist_ok=True)
    return [*NAMESPACE, sys.executable, "-c", CONTAINED, how, str(home), str(out or "-"), *argv]


def run_contained(
    how: str, home: Path, *argv: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``herolog ARGV`` run to its end as :func:`contained` sets it up, its output captured."""
    return subprocess.run(
        contained(how, home, None, *argv),
        capture_output=True,
        text=True,
        input=input,
        env=herolog_env(),
        timeout=60,
    )


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
        port = re.findall(r"HTTP drain intake on http://127\.0\.0\.1:(\d+)/", banner)[0]
        self.url = f"http://127.0.0.1:{port}"  # not a drain's, in a line before the banner
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
    response = web.get(f"{url}/stats", timeout=30)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_stalled_writer_fails_healthz_and_is_reported(
    herolog_home: Path, tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """A writer that stops answering (a hung disk, another program holding the store's lock,
    here SIGSTOP) leaves requests waiting: a load balancer must hear of it from /healthz, and
    the operator from serve's log, instead of an "ok" while nothing is stored. A stall after
    1 s rather than STALL_S's 5, looked for every 0.2 s rather than every second: nothing
    here depends on either."""
    faster = {"herolog.server.writer.STALL_S": 1.0, "herolog.server.writer._WATCH_EVERY_S": 0.2}
    env = constants_env(faster)
    server = serve("--port", "0", env=env)
    writer = the_writer(herolog_home / "logs.db")
    with web.Client(timeout=60) as client:
        assert client.get(f"{server.url}/healthz").status_code == 200
        os.kill(writer, signal.SIGSTOP)
        try:
            waiting = threading.Thread(
                target=httpx.post,
                args=(f"{server.url}/apps/demo/logs",),
                kwargs={"content": batch("stalled"), "headers": LOGPLEX, "timeout": 60},
            )
            waiting.start()
            wait_for(
                lambda: client.get(f"{server.url}/healthz").status_code == 503,
                "503 from /healthz",
                timeout=15,
            )
            health = client.get(f"{server.url}/healthz")
            assert "the store writer has not answered for" in health.text
            assert health.headers["retry-after"].isdigit()
        finally:
            os.kill(writer, signal.SIGCONT)
        waiting.join(30)
        assert client.get(f"{server.url}/healthz").status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert code == 0, err
    check_log(err)
    assert re.search(r"the store writer has not answered for \d+ s \(1 request waiting;", err)
    assert re.search(r"the store writer answers again, after \d+ s", err)
    assert Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home))["stalled"] == 10


def test_a_writer_that_cannot_restart_says_so_once_and_when_it_can(
    herolog_home: Path, serve: Callable[..., ServeProcess]
) -> None:
    """serve retries a writer that cannot start every few seconds for as long as it takes:
    the same reason said at each try would fill the journal with it."""
    store = herolog_home / "logs.db"
    server = serve("--port", "0")
    writer = the_writer(store)
    os.kill(writer, signal.SIGSTOP)
    with store.open("r+b") as file:  # in place: a file moved away stops serve instead
        header = file.read(100)
        file.seek(0)
        file.write(b"not a store at all, " * 5)
    os.kill(writer, signal.SIGKILL)
    # Two tries over (each a writer process that fails on the header), so that the reason
    # had two chances to be said; the next try, 0.2 s later, finds the header back.
    tries: set[int] = set()
    deadline = time.monotonic() + 30
    while True:
        running = set(writers(store)) - {writer}
        tries |= running
        if len(tries - running) >= 2:
            break
        assert time.monotonic() < deadline, f"serve tried no second writer: {tries}"
        time.sleep(0.005)
    with store.open("r+b") as file:
        file.write(header)
    with web.Client(timeout=30) as client:
        wait_for(lambda: client.get(f"{server.url}/healthz").status_code == 200, "a writer")
    server.proc.send_signal(signal.SIGTERM)
    code, err = server.finish()
    assert code == 0, err
    check_log(err)
    assert re.search(r"the store writer exited with status -9; restarting it\n", err)
    assert err.count("could not start") == 1, err
    assert re.search(
        r"the store writer could not start \(.*not a database.*\); trying again every few"
        r" seconds, and saying so when it starts\n",
        err,
    ), err
    again = re.search(r"the store writer is running again, after (\d+) tries in \d+ s\n", err)
    assert again, err
    assert int(again[1]) >= 3, err


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
    with web.Client(timeout=30) as client:

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
    with web.Client(timeout=60) as client:

        def post(tag: str, lines: int) -> httpx.Response:
            headers = {**LOGPLEX, "Logplex-Frame-Id": tag}
            return client.post(
                f"{server.url}/apps/demo/logs", content=batch(tag, lines), headers=headers
            )

        assert post("kept", 10).status_code == 204
        # Every write of the store writer past its first byte now fails (EFBIG): a disk
        # that takes nothing more. SQLite writes a big batch out before it commits, fails
        # then, and rolls back by itself.
        writer = the_writer(herolog_home / "logs.db")
        resource.prlimit(writer, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
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


class WriterProcess:
    """The real store writer, driven over its socket the way serve drives it."""

    def __init__(self, store: Path, setup: str = "") -> None:
        ours, theirs = socket.socketpair()
        code = f"import sys, herolog.store_writer as w\n{setup}\nsys.exit(w.main(sys.argv[1:]))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno()), str(store)],
            pass_fds=[theirs.fileno()],
            stderr=subprocess.PIPE,
            text=True,
            env=herolog_env(),  # its output buffered as serve's writer's is
        )
        theirs.close()
        self.sock = ours
        self.sock.settimeout(60)

    def receive(self) -> Any:
        data = b""
        while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionError:
                chunk = b""
            assert chunk, f"the writer went away: {self.finish()[1]}"
            data += chunk
        return pickle.loads(data[HEADER.size :])

    def store(self, job_id: int, tag: str) -> tuple[Any, ...]:
        self.sock.sendall(pack([(job_id, "body", "demo", None, tag, batch(tag, 3), None)]))
        (result,) = self.receive()
        assert result[0] == job_id
        return tuple(result[1:])

    def finish(self) -> tuple[int, str]:
        self.sock.close()
        try:
            _, err = self.proc.communicate(timeout=60)
        finally:
            self.proc.kill()
        return self.proc.returncode, err


@pytest.fixture
def writer_process() -> Iterator[Callable[..., WriterProcess]]:
    started: list[WriterProcess] = []

    def start(store: Path, setup: str = "") -> WriterProcess:
        started.append(WriterProcess(store, setup))
        return started[-1]

    yield start
    for writer in started:
        if writer.proc.poll() is None:
            writer.finish()


def frame_ids(path: Path) -> set[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        return {row[0] for row in db.execute("SELECT frame_id FROM frame_ids")}


def test_pruning_frame_ids_on_a_full_disk_does_not_crash_the_writer(
    herolog_home: Path, writer_process: Callable[..., WriterProcess]
) -> None:
    from herolog.parser import LogLine
    from herolog.store import Batch

    path = herolog_home / "logs.db"
    writer = writer_process(path, "w.PRUNE_EVERY_S = 0; w.FRAME_ID_WINDOW_S = 0")
    assert writer.receive()[0] == "ready"
    # Another process stores a batch the writer's next prune will want to forget.
    other = SQLiteStore.open(path)
    other.append(
        [Batch("demo", [LogLine("-", "-", "app", "web.1", "x", None, None, None)], None, "old")]
    )
    other.close()
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    assert writer.store(1, "refused")[0] == "error"
    assert writer.store(2, "refused again")[0] == "error"  # after a prune that failed
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    assert writer.store(3, "stored") == ("ok", (3, 3))
    code, err = writer.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert [line.split(" (store")[0] for line in err.splitlines()] == [
        "herolog serve: could not store: disk I/O error",
        "herolog serve: storing works again",
    ]
    assert "old" not in frame_ids(path)  # the prune after the space came back did it


def test_checkpoints_failing_on_a_full_disk_are_said_once_not_each_time(
    herolog_home: Path, writer_process: Callable[..., WriterProcess]
) -> None:
    """On a full disk, with the WAL past the size at which the writer restarts it, each
    restart failed and said so, a line a second while batches came (each check here), and
    the checkpointer's checkpoints, which pass with nothing to copy, said every failure that
    followed one that passed. They are one fault, said once (at most once a minute)."""
    path = herolog_home / "logs.db"
    writer = writer_process(
        path,
        "w.WAL_RESTART_BYTES = 0; w.CHECKPOINT_EVERY_S = 0.01;"
        " w.CHECKPOINT_TROUBLE_SAID_EVERY_S = 3600",
    )
    assert writer.receive()[0] == "ready"
    for n in range(3):
        assert writer.store(n, f"before {n}")[0] == "ok"
    size = path.stat().st_size
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    for n in range(3, 30):
        writer.store(n, f"full {n}" * 50)
        time.sleep(0.02)  # past CHECKPOINT_EVERY_S: the next batch tries a WAL restart
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    assert writer.store(99, "after")[0] == "ok"
    code, err = writer.finish()
    assert code == 0, err
    said = [
        x
        for x in err.splitlines()
        if x.startswith(("herolog serve: checkpoint", "herolog serve: WAL"))
    ]
    assert len(said) in (1, 2), err
    assert re.fullmatch(r"herolog serve: (checkpoint|WAL restart) failed, retrying: .+", said[0])
    assert said[1:] in ([], [f"herolog serve: checkpoints work again (store {path})"])


def test_a_flood_of_frame_ids_is_pruned_before_the_next_prune_is_due(
    herolog_home: Path, writer_process: Callable[..., WriterProcess]
) -> None:
    """The writer holds the ids in memory: past its cap by the slack, it prunes at once."""
    path = herolog_home / "logs.db"
    writer = writer_process(
        path,
        "w.PRUNE_EVERY_S = 3600; w.FRAME_ID_MAX = 10; w.FRAME_ID_SLACK = 5; w.EARLY_PRUNE_S = 0.2",
    )
    assert writer.receive()[0] == "ready"
    for n in range(15):
        assert writer.store(n, f"id-{n}")[0] == "ok"
    assert len(frame_ids(path)) == 15  # within the slack: nothing pruned
    time.sleep(0.3)  # at most one early prune every EARLY_PRUNE_S
    assert writer.store(15, "id-15")[0] == "ok"  # holding 16 > 10 + 5: pruned to 10 after it
    # The prune comes after the answer, before the writer takes its next jobs.
    assert writer.store(16, "id-3") == ("ok", (3, 3))  # a forgotten id is stored again
    assert frame_ids(path) == {f"id-{n}" for n in range(6, 16)} | {"id-3"}
    assert writer.store(17, "id-15") == ("ok", (0, 3))  # a kept one is not
    code, err = writer.finish()
    assert code == 0, err


def test_the_writer_prunes_frame_ids_before_it_loads_them(
    herolog_home: Path, writer_process: Callable[..., WriterProcess]
) -> None:
    """A store upgraded from schema 9 may hold millions of ids: the writer holds at most its
    cap of them in memory from its first batch on."""
    from herolog.parser import LogLine
    from herolog.store import Batch

    path = herolog_home / "logs.db"
    other = SQLiteStore.open(path)
    row = LogLine("-", "-", "app", "web.1", "x", None, None, None)
    other.append([Batch("demo", [row], None, f"id-{n}") for n in range(30)])
    other.close()
    writer = writer_process(path, "w.FRAME_ID_MAX = 10")
    assert writer.receive()[0] == "ready"
    assert frame_ids(path) == {f"id-{n}" for n in range(20, 30)}
    code, err = writer.finish()
    assert code == 0, err


def test_a_batch_refused_on_a_full_disk_is_stored_when_logplex_retries_it(
    herolog_home: Path, writer_process: Callable[..., WriterProcess]
) -> None:
    """The writer keeps the Frame-Ids in memory: the id of a batch whose commit failed must
    not stay there, or its retry would be answered as a duplicate and never stored."""
    path = herolog_home / "logs.db"
    writer = writer_process(path)
    assert writer.receive()[0] == "ready"
    assert writer.store(1, "before") == ("ok", (3, 3))  # the writer has the ids in memory
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    assert writer.store(2, "retried")[0] == "error"
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    assert writer.store(3, "retried") == ("ok", (3, 3))
    assert writer.store(4, "retried") == ("ok", (0, 3))
    assert writer.store(5, "before") == ("ok", (0, 3))
    code, err = writer.finish()
    assert code == 0, err
    assert frame_ids(path) == {"before", "retried"}
    assert Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home)) == {
        "before": 3,
        "retried": 3,
    }


def test_a_writer_whose_stderr_is_closed_goes_on_storing(
    herolog_home: Path, writer_process: Callable[..., WriterProcess]
) -> None:
    """Serve's stderr may be a pipe whose reader has gone (``herolog serve 2>&1 | head``):
    what the writer has to say then (a full disk) must not end it."""
    writer = writer_process(herolog_home / "logs.db")
    assert writer.receive()[0] == "ready"
    assert writer.proc.stderr is not None
    writer.proc.stderr.close()  # its next line to stderr meets EPIPE
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    assert writer.store(1, "refused")[0] == "error"  # and the writer says so, to nobody
    resource.prlimit(writer.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    assert writer.store(2, "stored") == ("ok", (3, 3))  # and again, to nobody
    writer.sock.close()
    assert writer.proc.wait(timeout=60) == 0


def test_a_writer_whose_serve_died_before_it_was_ready_exits_quietly(
    herolog_home: Path, writer_process: Callable[..., WriterProcess]
) -> None:
    writer = writer_process(herolog_home / "logs.db")
    assert writer.finish() == (0, "")


@pytest.mark.parametrize(
    ("how", "command"),
    [
        ("ro", ["serve", "--port", "0"]),
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
    proc = run_contained(
        how, herolog_home, *command, input="2024-03-05T09:14:07+00:00 app[web.1]: hello\n"
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: cannot open the store {herolog_home / 'logs.db'}: "
        + proc.stderr.split(": ", 2)[2].strip()
    ]
    assert re.search(reason, proc.stderr), proc.stderr


def test_a_store_on_a_read_only_file_system_is_read_by_logs(herolog_home: Path) -> None:
    """Only writing needs a writable file system (see tests/cli/test_logs.py)."""
    from tests.helpers import line, store_lines

    store_lines(herolog_home / "logs.db", "demo", line("kept"))
    proc = run_contained("ro", herolog_home, "logs")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.endswith(" app[web.1]: kept\n")


def test_a_store_on_a_full_file_system_is_read_by_logs_and_a_tail(herolog_home: Path) -> None:
    """A full disk is when one reads the logs most. A store that nothing has open has no
    -shm beside it, which SQLite's readers of a WAL store make and share: SQLite could not
    create one there, and `herolog logs` failed, 'cannot open the store ...: disk I/O error
    (its file system is full)'."""
    command = ["logs", "-n", "1", "-s", "app", "--tail", "--until", IN_A_SECOND]
    proc = run_contained("lines+full:1m", herolog_home, *command)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.endswith(" app[run.1]: kept\n")


def test_a_store_on_a_full_file_system_is_read_after_a_write_was_refused(
    herolog_home: Path,
) -> None:
    """A writer refused by the full disk (`store history`, `import`, `run`) left a 3-byte
    -shm and an empty -wal: every reader after it took them for a writer's and failed,
    'cannot open the store ...: disk I/O error (its file system is full)'."""
    command = ["logs", "-n", "1", "-s", "app", "--tail", "--until", IN_A_SECOND]
    proc = run_contained("refused+lines+full:1m", herolog_home, *command)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.endswith(" app[run.1]: kept\n")


def test_a_request_racing_the_writers_death_is_refused_and_later_ones_are_stored(
    herolog_home: Path,
) -> None:
    import asyncio

    import uvloop

    from herolog.server.writer import Writer, WriterStopped

    problems: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: problems.append(str(context.get("exception") or context))
        )
        writer = Writer(herolog_home / "logs.db")
        await writer.start()
        try:
            await race(writer)
        finally:
            if writer._proc is not None:
                writer._proc.kill()
            await asyncio.wait_for(writer.stop(), 30)

    async def race(writer: Writer) -> None:
        assert writer._proc is not None
        assert writer._channel is not None
        writer._proc.kill()
        writer._proc.wait()
        # uvloop closes the socket once a write to the dead writer fails; a request that
        # arrives before the writer's end is noticed is then flushed to a closed socket.
        writer._channel.close()
        with pytest.raises(WriterStopped):
            await asyncio.wait_for(writer.write_body("demo", batch("lost", 3), None, "a"), 30)
        deadline = time.monotonic() + 30
        while True:  # as Logplex retries a 503
            try:
                result = await asyncio.wait_for(
                    writer.write_body("demo", batch("after", 3), None, "b"), 30
                )
                break
            except WriterStopped:
                assert time.monotonic() < deadline, "the writer was not restarted"
                await asyncio.sleep(0.05)
        assert result.lines == 3

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert not problems
    assert Counter(m.rsplit(" ", 1)[0] for m in stored(herolog_home)) == {"after": 3}
