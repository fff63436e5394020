"""``herolog run --server``: a local dyno whose lines go to a real ``herolog serve``'s intake."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import pytest

from herolog.parser import LogLine, Received
from herolog.remote import SEND_BATCH_BYTES, IntakeSender, RemoteError
from herolog.server import ServeConfig, Server, run_in_thread
from herolog.server.config import Credentials
from tests import web
from tests.helpers import QuietHandler, constants_env, herolog_env, serving
from tests.server.conftest import Running, ServerFactory
from tests.server.sinks import Relay

PASSWORD = "s3cret-pa55"
SCRIPT = "import sys; print('hello [out]'); print('oops', file=sys.stderr); sys.exit(3)"


QUICK = {"herolog.remote.SEND_RETRY_S": 0.01}
"""herolog retrying a batch 0.01 s and 0.02 s after a try that failed, not 0.25 s and 0.5 s:
for tests of what a failure costs, not of those waits."""


def run(
    client_home: Path, *args: str, constants: dict[str, float] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``herolog run`` in a child process whose own store is ``client_home``'s (with
    ``constants`` set in it: :func:`tests.helpers.constants_env`)."""
    home = {"HEROLOG_HOME": str(client_home), **env}
    return subprocess.run(
        [sys.executable, "-m", "herolog", "run", *args],
        capture_output=True,
        text=True,
        env=constants_env(constants, **home) if constants else herolog_env(**home),
        timeout=60,
    )


def seen(server: Running, app: str = "demo") -> list[tuple[str, str, str, int | None]]:
    return [(x.source, x.dyno, x.message, x.pri) for x in server.lines(app)]


@pytest.fixture
def guarded(make_server: ServerFactory) -> Running:
    return make_server(auth=Credentials("drain", PASSWORD))


def with_credentials(server: Running, password: str = PASSWORD) -> str:
    return server.url.replace("http://", f"http://drain:{password}@")


@pytest.mark.subprocess
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_every_line_goes_to_the_server(guarded: Running, tmp_path: Path, how: str) -> None:
    url = with_credentials(guarded)
    command = ["--", sys.executable, "-c", SCRIPT]
    if how == "flag":
        proc = run(tmp_path, "--server", url, "-a", "demo", "-d", "worker.1", *command)
    else:
        proc = run(tmp_path, "-a", "demo", "-d", "worker.1", *command, HEROLOG_URL=url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "hello [out]\n", "oops\n")
    lines = seen(guarded)
    started = f"Starting process with command `{shlex.join([sys.executable, '-c', SCRIPT])}`"
    assert lines[0] == ("heroku", "worker.1", started, 45)
    assert lines[1] == ("heroku", "worker.1", "State changed from starting to up", 45)
    assert sorted(lines[2:4]) == [
        ("app", "worker.1", "hello [out]", 190),
        ("app", "worker.1", "oops", 187),
    ]
    assert lines[4:] == [
        ("heroku", "worker.1", "Process exited with status 3", 45),
        ("heroku", "worker.1", "State changed from up to crashed", 45),
    ]
    assert not (tmp_path / "logs.db").exists()  # nothing went to the local store


@pytest.mark.subprocess
@pytest.mark.parametrize("password", [None, "wrong-pa55"])
def test_refused_credentials_stop_the_run_before_the_command(
    guarded: Running, tmp_path: Path, password: str | None
) -> None:
    url = guarded.url if password is None else with_credentials(guarded, password)
    marker = tmp_path / "ran"
    proc = run(tmp_path, "--server", url, "-a", "demo", "--", "touch", str(marker))
    assert proc.returncode == 1
    (error,) = proc.stderr.splitlines()
    assert error.startswith("Error: http://"), error
    if password is None:
        assert "refused the lines (401 Unauthorized): give the credentials of its --auth" in error
    else:  # not told to give what it gave
        assert error.endswith(
            "refused the lines (401 Unauthorized): the credentials in the URL are not those of"
            " its --auth"
        ), error
    assert "wrong-pa55" not in proc.stderr
    assert not marker.exists()
    assert seen(guarded) == []


@pytest.mark.subprocess
def test_a_server_that_cannot_be_reached_stops_the_run_before_the_command(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    marker = tmp_path / "ran"
    url = f"http://drain:{PASSWORD}@127.0.0.1:{port}"
    proc = run(tmp_path, "--server", url, "--", "touch", str(marker), constants=QUICK)
    assert proc.returncode == 1
    assert (
        proc.stderr
        == f"Error: cannot reach http://drain:***@127.0.0.1:{port}: connection refused\n"
    )
    assert not marker.exists()


@pytest.mark.subprocess
def test_a_bad_app_name_is_a_usage_error_in_both_modes(guarded: Running, tmp_path: Path) -> None:
    for server in ([], ["--server", with_credentials(guarded)]):
        proc = run(tmp_path, *server, "-a", "no/such", "--", "true")
        assert proc.returncode == 2
        assert proc.stderr.splitlines()[-1] == (
            "Error: Invalid value for '-a' / '--app': 'no/such' is not an app name:"
            " app names are letters, digits, '.', '_' and '-' (100 at most), starting with a"
            " letter or digit, without '..'"
        )


@pytest.mark.subprocess
def test_a_server_gone_mid_run_costs_the_later_lines_not_the_command(
    herolog_home: Path, tmp_path: Path
) -> None:
    log = io.StringIO()
    config = ServeConfig(
        store_path=herolog_home / "logs.db", port=0, auth=Credentials("u", PASSWORD)
    )
    server = Server(config, log=log)
    stop = run_in_thread(server)
    running = Running(server, log)
    go_on = tmp_path / "go-on"
    script = (
        "import os, sys, time\n"
        "print('before', flush=True)\n"
        f"while not os.path.exists({str(go_on)!r}): time.sleep(0.02)\n"
        "print('after', flush=True)\n"
        "sys.exit(5)\n"
    )
    url = running.url.replace("http://", f"http://u:{PASSWORD}@")
    herolog = [sys.executable, "-m", "herolog", "run", "--server", url, "-q", "--"]
    child = subprocess.Popen(
        [*herolog, sys.executable, "-c", script],
        stderr=subprocess.PIPE,
        text=True,
        env=constants_env(QUICK, HEROLOG_HOME=str(tmp_path / "client")),
    )
    try:
        deadline = time.monotonic() + 20
        while ("app", "run.1", "before", 190) not in seen(running, "default"):
            assert time.monotonic() < deadline, "the first line never reached the server"
            time.sleep(0.05)
        stop()
        go_on.touch()
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 5
    assert err == (
        "herolog run: could not store 3 of 6 lines: cannot reach"
        f" http://u:***@127.0.0.1:{server.http_port}: connection refused\n"
    )
    assert [x[2] for x in seen(running, "default")][-1] == "before"


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_server_failing_mid_run_does_not_hold_the_command_up(tmp_path: Path) -> None:
    """A server that takes the run's first post, then answers each batch 503 after a while
    (each tried three times): what the command writes while the lines waiting fill up is
    dropped and counted, not waited for batch after batch (40,000 lines took minutes)."""

    class FailsSlowly(QuietHandler):
        posts = 0

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            FailsSlowly.posts += 1
            if FailsSlowly.posts > 1:
                time.sleep(0.4)
            self.answer_empty(204 if FailsSlowly.posts == 1 else 503)

    took = tmp_path / "took"
    script = (
        "import sys, time\n"
        "started = time.monotonic()\n"
        "for i in range(40_000): print(f'line {i}')\n"
        f"open({str(took)!r}, 'w').write(str(time.monotonic() - started))\n"
    )
    with serving(FailsSlowly) as failing:
        url = failing.url
        proc = run(
            tmp_path, "--server", url, "-q", "--", sys.executable, "-c", script, constants=QUICK
        )
    assert proc.returncode == 0
    assert float(took.read_text()) < 15
    assert proc.stderr == (
        "herolog run: could not store 40,004 of 40,004 lines:"
        f" {url} refused the lines (503 Service Unavailable): no reason\n"
    )


@pytest.fixture
def stops_answering() -> Iterator[str]:
    """The URL of a server that takes the run's first post (its check), then answers no
    more (for a minute)."""
    released = threading.Event()

    class Hangs(QuietHandler):
        posts = 0

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            Hangs.posts += 1
            if Hangs.posts > 1:
                released.wait(60)
            self.answer_empty(204)

    with serving(Hangs) as hanging:
        try:
            yield hanging.url
        finally:
            released.set()


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_ctrl_c_waits_5_s_at_most_for_a_server_that_has_stopped_answering(
    tmp_path: Path, stops_answering: str
) -> None:
    """A server that takes the run's first post, then answers no more: after a Ctrl-C the
    command ended at once, and herolog sat silent for 30 s, trying the lines' batch and the
    exit's three times each (5 s a try, as Logplex). Stopped, a dyno's lines left have 5 s,
    as serve's drains have as it stops; then herolog says what was lost and dies of the
    SIGINT."""
    url = stops_answering
    command = (  # dies of a Ctrl-C, as a shell's command does
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
        "print('up', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "herolog",
            "run",
            "--server",
            url,
            "--",
            sys.executable,
            "-c",
            command,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(HEROLOG_HOME=str(tmp_path)),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "up\n"
        os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C
        stopped = time.monotonic()
        _, err = proc.communicate(timeout=40)
        took = time.monotonic() - stopped
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGINT
    assert took < 12
    assert err == (
        f"herolog run: could not store 5 of 5 lines: {url} had not taken them 5 s after the"
        " command was stopped\n"
    )


HURRIED = {"herolog.remote.STOPPED_SEND_S": 1.0, "herolog.remote.SEND_TIMEOUT_S": 1.0}


def leaving_one_running(lines: int, folder: Path, *, stays: bool) -> str:
    """A command (Python) that prints ``lines`` lines and exits, leaving a process running
    that touches ``folder``/told at the SIGTERM herolog sends what a command left as it
    has its status (then exits, unless it ``stays``), and has written ``folder``/pids: the
    command's and its."""
    told, ready, pids = (str(folder / name) for name in ("told", "ready", "pids"))
    left_running = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "def told(*_):\n"
        f"    pathlib.Path({told!r}).touch()\n"
        f"    {'' if stays else 'sys.exit()'}\n"
        "signal.signal(signal.SIGTERM, told)\n"
        f"pathlib.Path({ready!r}).touch()\n"
        "time.sleep(300)\n"
    )
    return (
        "import os, pathlib, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"left = subprocess.Popen([sys.executable, '-c', {left_running!r}],\n"
        "    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"while not pathlib.Path({ready!r}).exists(): time.sleep(0.01)\n"
        f"print('x\\n' * {lines}, end='', flush=True)\n"
        f"open({pids!r} + '.new', 'w').write(f'{{os.getpid()}} {{left.pid}}')\n"
        f"os.replace({pids!r} + '.new', {pids!r})\n"
    )


def until_told(folder: Path) -> int:
    """Until herolog has the status of a :func:`leaving_one_running` command (its SIGTERM to
    what it left, which it sends once it has it, has come): the pid of what it left."""
    deadline = time.monotonic() + 30
    while not (folder / "pids").exists():
        assert time.monotonic() < deadline, "the command never ran"
        time.sleep(0.02)
    while not (folder / "told").exists():
        assert time.monotonic() < deadline, "what the command left running was not told"
        time.sleep(0.02)
    return int((folder / "pids").read_text().split()[1])


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("sig", "lines"),
    [(signal.SIGTERM, 1), (signal.SIGTERM, 15_000), (signal.SIGINT, 1)],
    ids=["sigterm-while-sending", "sigterm-while-reading", "ctrl-c-while-sending"],
)
def test_a_signal_once_the_command_has_exited_hurries_the_lines_left(
    tmp_path: Path, stops_answering: str, sig: signal.Signals, lines: int
) -> None:
    """A server that takes the run's first post, then answers no more, and a command that
    has exited of its own accord: herolog goes on sending its lines (up to half a minute).
    A SIGTERM or a Ctrl-C then was lost on the command's process group, gone, while the
    lines were still being read (15,000 of them, for a queue of 10,000), and ended herolog
    without a word of the lines lost while the last were sent; it hurries them as a stopped
    command's, and herolog says what was lost, exiting with the command's status (dying of
    a Ctrl-C's SIGINT). Hurried here for 1 s, a request's own limit 1 s too (STOPPED_SEND_S
    and SEND_TIMEOUT_S; the test above has the 5 s of each)."""
    url = stops_answering
    herolog = [sys.executable, "-m", "herolog", "run", "-q", "--server", url, "--"]
    command = leaving_one_running(lines, tmp_path, stays=False)
    proc = subprocess.Popen(
        [*herolog, sys.executable, "-c", command],
        stderr=subprocess.PIPE,
        text=True,
        env=constants_env(HURRIED, HEROLOG_HOME=str(tmp_path)),
        start_new_session=True,
    )
    try:
        until_told(tmp_path)
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == (-signal.SIGINT if sig == signal.SIGINT else 0)
    assert err == (
        f"herolog run: could not store {lines + 4:,} of {lines + 4:,} lines: {url} had not"
        " taken them 1 s after herolog was stopped\n"
    )


@pytest.mark.subprocess
def test_a_second_signal_once_the_command_has_exited_ends_what_it_left_running_too(
    tmp_path: Path, stops_answering: str
) -> None:
    """A command that has exited of its own accord, leaving a process running that does
    not end on the SIGTERM its dyno's end brings, and lines still being read for a server
    that has stopped answering: a second signal ended herolog at once, before the SIGKILL
    that comes once the output is read, and that process ran on, unwatched."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "herolog", "run", "-q", "--server", stops_answering),
            *("--", sys.executable, "-c", leaving_one_running(15_000, tmp_path, stays=True)),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(HEROLOG_HOME=str(tmp_path)),
        start_new_session=True,
    )
    left = None
    try:
        left = until_told(tmp_path)
        # Two signals that are not one pending twice: whichever is handled second ends it.
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (-signal.SIGTERM, -signal.SIGINT), (proc.returncode, err)
        deadline = time.monotonic() + 10
        while process_state(left) not in ("Z", "gone"):
            assert time.monotonic() < deadline, "what the command left running runs on"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.communicate()
        with contextlib.suppress(OSError):  # still that process, not a pid taken again since
            if (
                left is not None
                and str(tmp_path).encode() in Path(f"/proc/{left}/cmdline").read_bytes()
            ):
                os.kill(left, signal.SIGKILL)


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


class AnswerDropper(Relay):
    """A TCP proxy in front of a herolog serve: it passes each request on whole, records the
    size of its body, and for the first ``drop`` requests closes the client's connection
    instead of passing the server's answer back (the server has stored the batch; its
    sender never hears so)."""

    def __init__(self, upstream: int, drop: int) -> None:
        self.drop = drop
        self.bodies: list[int] = []
        super().__init__(upstream)

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream)) as server:
            reader, answers = client.makefile("rb"), server.makefile("rb")
            while request := self._message(reader):
                head, body = request
                self.bodies.append(len(body))
                server.sendall(head + body)
                answer = self._message(answers)
                assert answer is not None
                if self.drop > 0:
                    self.drop -= 1
                    return
                client.sendall(answer[0] + answer[1])

    @staticmethod
    def _message(stream: io.BufferedReader) -> tuple[bytes, bytes] | None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = stream.readline()
            if not line:
                return None
            head += line
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return head, stream.read(length)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dropper(served: Running) -> Iterator[AnswerDropper]:
    proxy = AnswerDropper(int(served.url.rsplit(":", 1)[1]), drop=1)
    yield proxy
    proxy.close()


def made(count: int, size: int = 100) -> list[LogLine]:
    now = Received.at()
    return [
        LogLine(
            now.timestamp, now.time, "app", "web.1", f"{i:06d} " + "x" * size, 190, "host", None
        )
        for i in range(count)
    ]


def test_a_batch_stored_but_not_acknowledged_is_stored_once(
    served: Running, dropper: AnswerDropper
) -> None:
    sender = IntakeSender(f"http://127.0.0.1:{dropper.port}", "demo", sleep=lambda s: None)
    try:
        sender.send(made(3))
    finally:
        sender.close()
    assert dropper.bodies[0] == dropper.bodies[1] > 0  # the same batch, sent twice
    assert [x.message[:6] for x in served.lines("demo")] == ["000000", "000001", "000002"]
    stats = web.get(f"{served.url}/stats").json()
    assert stats["duplicate_batches"] == 1


def test_lines_go_in_batches_of_about_100_kb(served: Running, dropper: AnswerDropper) -> None:
    dropper.drop = 0
    sender = IntakeSender(f"http://127.0.0.1:{dropper.port}", "demo")
    try:
        sender.send(made(1400))  # ~230 KB, within the store's history of 1500 lines
    finally:
        sender.close()
    assert len(dropper.bodies) == 3
    one_message = 300
    assert max(dropper.bodies) < SEND_BATCH_BYTES + one_message
    assert [int(x.message[:6]) for x in served.lines("demo")] == list(range(1400))


def test_refusals_that_retrying_cannot_mend_are_not_retried(served: Running) -> None:
    waits: list[float] = []
    sender = IntakeSender(served.url, "not*an*app", sleep=waits.append)
    try:
        with pytest.raises(RemoteError, match=r"refused the lines \(400 Bad Request\): app names"):
            sender.send(made(1))
    finally:
        sender.close()
    assert waits == []
    assert web.get(f"{served.url}/stats").json()["responses"] == {"400": 1}


@pytest.mark.parametrize("status", [200, 201, 202])
def test_any_2xx_answer_is_a_batch_delivered(status: int) -> None:
    """As Logplex takes a drain's answer: any 2xx is delivered, the batch neither retried
    nor counted as lost (a proxy in front may answer 200 or 202 for serve's 204)."""
    posts: list[int] = []

    class Answering(QuietHandler):
        def do_POST(self) -> None:
            posts.append(int(self.headers["Logplex-Msg-Count"]))
            self.rfile.read(int(self.headers["Content-Length"]))
            self.answer_empty(status)

    waits: list[float] = []
    with serving(Answering) as other:
        sender = IntakeSender(other.url, "demo", sleep=waits.append)
        try:
            sender.send(made(3))
        finally:
            sender.close()
    assert (posts, waits) == ([3], [])


@pytest.mark.parametrize(
    ("statuses", "stored"), [([408, 503, 204], True), ([429, 502, 500, 204], False)]
)
def test_refusals_that_may_pass_later_are_tried_three_times(
    statuses: list[int], stored: bool
) -> None:
    """408, 429 and 5xx are tried again, three tries in all as Logplex makes them, 0.25 s
    and then 0.5 s after the try before, the batch keeping its Logplex-Frame-Id."""
    frame_ids: list[str] = []

    class Answering(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            frame_ids.append(self.headers["Logplex-Frame-Id"])
            self.answer_empty(statuses.pop(0))

    waits: list[float] = []
    with serving(Answering) as other:
        sender = IntakeSender(other.url, "demo", sleep=waits.append)
        try:
            if stored:
                sender.send(made(1))
            else:
                with pytest.raises(RemoteError, match=r"refused the lines \(500 Internal Server"):
                    sender.send(made(1))
        finally:
            sender.close()
    assert len(frame_ids) == 3
    assert len(set(frame_ids)) == 1
    assert waits == [0.25, 0.5]


@pytest.mark.parametrize(
    ("max_body", "before", "size"),
    [(120_000, 700, 150_000), (60_000, 700, 150_000), (60_000, 200, 70_000)],
    ids=["batches fit", "batches too big", "among others in a batch"],
)
def test_a_line_refused_as_too_large_costs_only_itself(
    make_server: ServerFactory, max_body: int, before: int, size: int
) -> None:
    """A line over the server's --max-body is lost alone (its own 413), the lines around it
    stored, in order: one over the ~100 KB a batch holds goes in a batch of its own; a
    server whose --max-body is under the batches run sends has them sent again line by
    line; and a smaller one goes in a batch with others (200 lines of 20 KB and it, about
    90 KB), whose 413 has that batch sent line by line."""
    server = make_server(max_body=max_body)
    lines = made(before)
    large = made(1, size=size)[0]
    after = made(10)
    sender = IntakeSender(server.url, "demo")
    try:
        # The answer's reason phrase, which Python 3.13 renamed (RFC 9110's).
        with pytest.raises(RemoteError, match=f"413 {HTTPStatus(413).phrase}") as refused:
            sender.send([*lines, large, *after])
    finally:
        sender.close()
    stored = [x.message for x in server.lines("demo")]
    assert stored == [x.message for x in [*lines, *after]]
    assert refused.value.unsent == 1


@pytest.mark.subprocess
def test_a_quiet_run_counts_only_the_line_refused_as_too_large_as_lost(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """The lines sent with it in a batch were stored: `could not store 1 of 7 lines`, not
    the whole batch's count."""
    server = make_server(max_body=5_000)
    script = "print('a'); print('x' * 8_000); print('b')"
    command = ("--", sys.executable, "-c", script)
    proc = run(tmp_path, "--server", server.url, "-q", "-a", "demo", *command, constants=QUICK)
    assert (proc.returncode, proc.stdout) == (0, "")  # -q: stored, not shown
    assert proc.stderr.startswith("herolog run: could not store 1 of 7 lines: "), proc.stderr
    assert f"413 {HTTPStatus(413).phrase}" in proc.stderr
    assert [x[2] for x in seen(server) if x[0] == "app"] == ["a", "b"]


def test_a_refused_batch_says_how_many_lines_were_not_stored(make_server: ServerFactory) -> None:
    server = make_server(max_body=120_000)
    lines = made(700)
    sender = IntakeSender(server.url, "not*an*app")
    try:
        with pytest.raises(RemoteError, match=r"400 Bad Request") as refused:
            sender.send(lines)
    finally:
        sender.close()
    assert refused.value.unsent == 700


@pytest.mark.parametrize(
    ("answers", "sizes", "unsent"),
    [([413, 400], [150_000, *[100] * 10], 11), ([413, 204, 400], [100, 100, 100], 2)],
    ids=["after a line too large", "sent line by line"],
)
def test_a_refused_batch_counts_every_line_not_stored(
    answers: list[int], sizes: list[int], unsent: int
) -> None:
    """A line lost to its own 413 is not stored either: once a later batch is refused, it
    is counted with the lines of that batch. A batch sent line by line after its 413 counts
    the lines from the one refused on, not those stored before it."""

    class Answering(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.answer_empty(answers.pop(0))

    lines = [made(1, size=size)[0] for size in sizes]
    with serving(Answering) as other:
        sender = IntakeSender(other.url, "demo", sleep=lambda s: None)
        try:
            with pytest.raises(RemoteError, match=r"400 Bad Request") as refused:
                sender.send(lines)
        finally:
            sender.close()
    assert answers == []
    assert refused.value.unsent == unsent


def run_against(
    answer: tuple[int, str, bytes], client_home: Path, headers: dict[str, str] | None = None
) -> tuple[str, Path, str]:
    """``herolog run --server`` a web server that answers every POST with ``answer``
    (status, content type, body) and ``headers``, as another server than herolog serve
    would: its URL, the file the command makes if it runs, and herolog's stderr (after exit
    status 1)."""
    status, content_type, body = answer

    class Answering(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    marker = client_home.parent / "ran"
    with serving(Answering) as other:
        url = other.url
        proc = run(client_home, "--server", url, "--", "touch", str(marker), constants=QUICK)
    assert proc.returncode == 1
    return url, marker, proc.stderr


def test_a_server_that_is_not_herolog_serve_stops_the_run_before_the_command(
    tmp_path: Path,
) -> None:
    """Any web server may answer 200 to a POST; the lines would be lost without a word."""
    url, marker, err = run_against((200, "", b""), tmp_path / "client")
    assert err == (
        f"Error: {url} took the lines but did not answer as herolog serve does (204):"
        " is it a herolog serve?\n"
    )
    assert not marker.exists()


NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def test_a_proxy_s_error_page_is_not_quoted_as_the_reason(tmp_path: Path) -> None:
    """nginx in front of a serve that is down: its page's first line, <html>, said nothing."""
    url, marker, err = run_against((502, "text/html", NGINX_502), tmp_path / "client")
    assert err == (
        f"Error: {url} refused the lines (502 Bad Gateway): it answered with a web page,"
        " not as herolog serve does\n"
    )
    assert not marker.exists()


def test_an_answer_whose_body_is_not_in_its_content_encoding_is_one_line(tmp_path: Path) -> None:
    """A proxy that says gzip of a body that is not: httpx's DecodingError, which is no
    TransportError, was a traceback."""
    url, marker, err = run_against(
        (502, "text/plain", b"Bad Gateway"), tmp_path / "client", {"Content-Encoding": "gzip"}
    )
    assert err == (
        f"Error: {url} answered with a body that is not in its Content-Encoding: Error -3"
        " while decompressing data: incorrect header check\n"
    )
    assert not marker.exists()
