from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from herolog.filters import LineFilter
from herolog.store import open_store
from tests.helpers import (
    Child,
    constants_env,
    ended,
    herolog_env,
    line,
    line_within,
    shell_job,
    store_lines,
    write_lock_held,
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herolog", "run", *args],
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=60,
    )


def stored(app: str = "default") -> list[tuple[str, str, str, int | None]]:
    with open_store() as store:
        return [
            (x.source, x.dyno, x.message, x.pri) for x in store.last(LineFilter(app=app), 1000)[0]
        ]


@pytest.mark.subprocess
def test_output_and_lifecycle_lines_and_exit_status(herolog_home: Path) -> None:
    script = "import sys; print('hello [out]'); print('oops', file=sys.stderr); sys.exit(3)"
    proc = run("-a", "demo", "-d", "worker.1", "--", sys.executable, "-c", script)
    assert proc.returncode == 3
    assert proc.stdout == "hello [out]\n"
    assert proc.stderr == "oops\n"
    lines = stored("demo")
    command = shlex.join([sys.executable, "-c", script])
    assert lines[0] == ("heroku", "worker.1", f"Starting process with command `{command}`", 45)
    assert lines[1] == ("heroku", "worker.1", "State changed from starting to up", 45)
    assert sorted(lines[2:4]) == [
        ("app", "worker.1", "hello [out]", 190),
        ("app", "worker.1", "oops", 187),
    ]
    assert lines[4:] == [  # a worker that exits unasked has crashed, as on Heroku
        ("heroku", "worker.1", "Process exited with status 3", 45),
        ("heroku", "worker.1", "State changed from up to crashed", 45),
    ]


@pytest.mark.subprocess
def test_defaults_and_quiet(herolog_home: Path) -> None:
    proc = run("-q", "--", sys.executable, "-c", "print('quietly')")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert ("app", "run.1", "quietly", 190) in stored()
    assert [x[2] for x in stored()[-2:]] == [  # a one-off dyno's end on Heroku
        "Process exited with status 0",
        "State changed from up to complete",
    ]


@pytest.mark.subprocess
@pytest.mark.parametrize("dyno", ["scheduler.1", "release.2"])
def test_scheduler_and_release_dynos_complete_as_one_off_dynos(
    herolog_home: Path, dyno: str
) -> None:
    """Heroku's one-off dynos are run, scheduler and release ones: ended unasked, they
    complete rather than crash."""
    proc = run("-q", "-d", dyno, "--", sys.executable, "-c", "pass")
    assert proc.returncode == 0, proc.stderr
    assert [x[1:3] for x in stored()[-2:]] == [
        (dyno, "Process exited with status 0"),
        (dyno, "State changed from up to complete"),
    ]


@pytest.mark.subprocess
def test_options_after_the_command_belong_to_it(herolog_home: Path) -> None:
    proc = run("--", sys.executable, "-c", "import sys; print(sys.argv[1:])", "-a", "--dyno")
    assert proc.stdout == "['-a', '--dyno']\n"
    proc = run(sys.executable, "-c", "import sys; print(sys.argv[1:])", "-a", "--dyno")
    assert proc.stdout == "['-a', '--dyno']\n", proc.stderr  # no --: the command starts it


@pytest.mark.subprocess
def test_a_missing_command_is_127(herolog_home: Path) -> None:
    proc = run("--", "no-such-command-here")
    assert proc.returncode == 127
    assert "no-such-command-here" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [x[2] for x in stored()[-2:]] == [
        "Process exited with status 127",
        "State changed from starting to complete",
    ]


@pytest.mark.subprocess
def test_an_argument_of_bytes_that_are_not_utf8_costs_no_line(herolog_home: Path) -> None:
    """A file name in another encoding: U+FFFD in the dyno manager's line, as bytes of the
    output are stored, not a line the store cannot take, which took the others with it."""
    proc = run("--", sys.executable, "-c", "print('hi')", "caf\udce9.log")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hi\n", "")
    command = shlex.join([sys.executable, "-c", "print('hi')", "caf\ufffd.log"])
    assert stored()[0][2] == f"Starting process with command `{command}`"
    assert ("app", "run.1", "hi", 190) in stored()
    proc = run("--", "no-such-\udcff")
    assert proc.returncode == 127
    shown = shlex.quote("no-such-\ufffd")
    assert proc.stderr == f"herolog run: {shown}: No such file or directory\n"
    assert stored()[-1][2] == "State changed from starting to complete"


@pytest.mark.subprocess
def test_an_empty_command_name_is_not_found(herolog_home: Path) -> None:
    proc = run("--", "")
    assert proc.returncode == 127  # as in a shell: exec would say 126 (a directory on PATH)
    assert proc.stderr == "herolog run: '': No such file or directory\n"


@pytest.mark.subprocess
def test_a_script_without_a_shebang_runs_with_sh_as_env_and_timeout_run_it(
    herolog_home: Path, tmp_path: Path
) -> None:
    script = tmp_path / "job"
    script.write_text('echo "ran $0 with $1"\nexit 3\n')
    script.chmod(0o755)
    proc = run("--", str(script), "one")
    assert proc.returncode == 3
    assert proc.stdout == f"ran {script} with one\n"
    assert [x[2] for x in stored()][-3:-1] == [
        f"ran {script} with one",
        "Process exited with status 3",
    ]
    by_name = subprocess.run(  # found on PATH, as execvp finds it, from another directory
        [sys.executable, "-m", "herolog", "run", "--", "job", "two"],
        capture_output=True,
        text=True,
        env=herolog_env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}"),
        cwd="/",
        timeout=60,
    )
    assert (by_name.returncode, by_name.stdout) == (3, f"ran {script} with two\n")


@pytest.mark.subprocess
def test_a_pipe_on_stdin_is_passed_on_to_the_command(herolog_home: Path) -> None:
    """Only a terminal is kept from it (stdin /dev/null, as on a dyno): `producer | herolog
    run -- consumer` gives the consumer its input."""
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "run", "--", "cat"],
        input="piped in\n",
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (0, "piped in\n")
    assert ("app", "run.1", "piped in", 190) in stored()


@pytest.mark.subprocess
def test_signals_are_passed_on_once(herolog_home: Path) -> None:
    script = (
        "import signal, sys, time\n"
        "seen = []\n"
        "signal.signal(signal.SIGTERM, lambda *a: seen.append(1))\n"
        "print('ready', flush=True)\n"
        "time.sleep(1.5)\n"
        "print(f'got TERM x{len(seen)}', flush=True)\n"
        "sys.exit(0 if seen else 9)\n"
    )
    child = Child("run", "-d", "web.1", "--", sys.executable, "-c", script)
    assert child.read_lines(1) == ["ready"]
    child.proc.send_signal(signal.SIGTERM)
    assert child.read_lines(1) == ["got TERM x1"]
    code, _ = child.stop()
    assert code == 0
    assert ("app", "web.1", "got TERM x1", 190) in stored()
    # A web dyno stopped goes down, in Heroku's order, and has not crashed.
    assert [x[2] for x in stored() if x[0] == "heroku"][2:] == [
        "State changed from up to down",
        "Stopping all processes with SIGTERM",
        "Process exited with status 0",
    ]


@pytest.mark.subprocess
def test_a_command_killed_by_a_signal_exits_128_plus_n(herolog_home: Path) -> None:
    # Short sleeps: a SIGINT that comes after 'up' but just before Python's sleep begins (the
    # command preempted there on a busy machine) is handled only once that sleep is over, as
    # it would be after a terminal's Ctrl-C: a sleep of 30 s outlasted the test's wait.
    script = "import time\nprint('up', flush=True)\nfor _ in range(300): time.sleep(0.1)"
    child = Child("run", "--", sys.executable, "-c", script)
    assert child.read_lines(1) == ["up"]
    child.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends: Python dies of KeyboardInterrupt
    code, _ = child.stop()
    assert code == -signal.SIGINT  # herolog too, as a shell does: 130 in $?
    assert stored()[-2][2] == f"Process exited with status {128 + signal.SIGINT}"
    child = Child("run", "--", "sleep", "30")
    children = Path(f"/proc/{child.proc.pid}/task/{child.proc.pid}/children")
    deadline = time.monotonic() + 15
    while not children.read_text().split():  # the command has started
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.01)
    child.proc.send_signal(signal.SIGTERM)
    code, _ = child.stop()
    assert code == 128 + signal.SIGTERM
    assert [x[:3] for x in stored()[-4:]] == [  # what Heroku writes for a dyno stopped
        ("heroku", "run.1", "State changed from starting to up"),  # no `up to down`: a one-off
        ("heroku", "run.1", "Stopping all processes with SIGTERM"),
        ("heroku", "run.1", f"Process exited with status {128 + signal.SIGTERM}"),
        ("heroku", "run.1", "State changed from up to complete"),
    ]


@pytest.mark.subprocess
def test_lines_reach_a_tail_while_the_command_runs(herolog_home: Path) -> None:
    script = "import time\nfor i in range(3):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.3)\ntime.sleep(5)"
    runner = Child("run", "-q", "-d", "clock.1", "--", sys.executable, "-c", script)
    time.sleep(0.5)
    tail = Child("logs", "-n", "10", "--tail", "-s", "app")
    try:
        got = [x.split(": ", 1)[1] for x in tail.read_lines(3, timeout=10)]
        assert got == ["tick 0", "tick 1", "tick 2"]
    finally:
        tail.stop(signal.SIGINT)
        runner.stop(signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.subprocess
def test_closed_output_does_not_stop_the_command_or_the_storing(herolog_home: Path) -> None:
    script = "for i in range(100000): print(f'line {i}')"
    proc = subprocess.run(
        f"{shlex.quote(sys.executable)} -m herolog run -- {shlex.quote(sys.executable)} -c {shlex.quote(script)} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=60,
    )
    assert proc.stdout == "line 0\n"
    assert "Traceback" not in proc.stderr
    lines = stored()
    assert lines[-2][2] == "Process exited with status 0"
    assert lines[-3][2] == "line 99999"


@pytest.mark.subprocess
@pytest.mark.parametrize("output", ["pipe", "/dev/full"], ids=["| head -1", "> /dev/full"])
def test_an_output_that_fails_leaves_the_commands_status(
    herolog_home: Path, tmp_path: Path, output: str
) -> None:
    """Without PYTHONUNBUFFERED (set for the command, not for herolog) herolog's output is
    buffered: what a failed write left in the buffer failed again in the interpreter's last
    flush, which printed 'Exception ignored ... BrokenPipeError' and exited 120, not 3. The
    command writes its second line once the reader has gone, in a write small enough to be
    buffered."""
    script = "import sys; print('line 0'); sys.stdin.readline(); print('line 1'); sys.exit(3)"
    env = herolog_env()
    env.pop("PYTHONUNBUFFERED", None)
    with (tmp_path / "stderr").open("w+") as err, Path("/dev/full").open("w") as full:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herolog", "run", "--", sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if output == "pipe" else full,
            stderr=err,
            env=env,
        )
        assert proc.stdin is not None
        try:
            if proc.stdout is not None:  # `| head -1`
                # A failure, not a hang, if the line is held back (a command's output
                # buffered, say).
                ready, _, _ = select.select([proc.stdout], [], [], 30)
                assert ready, "herolog run wrote nothing in 30 s"
                assert proc.stdout.readline() == b"line 0\n"
                proc.stdout.close()
            proc.stdin.write(b"\n")
            proc.stdin.close()
            assert proc.wait(timeout=60) == 3
        finally:
            if proc.poll() is None:  # the command, reading stdin, ends at its close
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()
        err.seek(0)
        assert err.read() == ""
    assert [line[2] for line in stored()[-4:-2]] == ["line 0", "line 1"]


@pytest.mark.subprocess
def test_the_run_ends_with_its_command_not_with_background_children(herolog_home: Path) -> None:
    proc = run("--", "sh", "-c", "sleep 30 & echo started")  # would take 30 s if it waited
    assert proc.returncode == 0
    assert proc.stdout == "started\n"
    assert stored()[-2][2] == "Process exited with status 0"


def wait_for_no_group(group: int, timeout: float = 10) -> bool:
    """Whether every process of ``group`` is gone within ``timeout``: exited, if not yet
    reaped by whoever inherited it (an init that reaps orphans every second or two kept the
    group there for as long)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running_in_group(group):
            return True
        time.sleep(0.02)
    return False


def running_in_group(group: int) -> bool:
    """Whether a process of ``group`` that has not exited (a zombie has) is in /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            data = stat.read_bytes()
        except OSError:  # gone meanwhile
            continue
        # After the command name, which may hold anything: state ppid pgrp ...
        state, _, pgrp = data[data.rfind(b")") + 1 :].split()[:3]
        if int(pgrp) == group and state != b"Z":
            return True
    return False


@pytest.mark.subprocess
def test_the_processes_a_command_leaves_behind_end_with_the_dyno(
    herolog_home: Path, tmp_path: Path
) -> None:
    """As on Heroku, where a dyno's processes end with it: those the command started and
    left are sent SIGTERM as it exits (their last words are stored), and SIGKILL once the
    run's 1 s grace is over."""
    armed = tmp_path / "armed"  # the command ends only once the first one's trap is set
    script = (
        f"(trap 'echo bye; exit 0' TERM; : > {armed}; while :; do sleep 0.05; done) &"
        f" while [ ! -e {armed} ]; do sleep 0.01; done;"
        " trap '' TERM; sleep 300 & echo $$"  # the second one ignores SIGTERM
    )
    proc = run("--", "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    group = int(proc.stdout.split()[0])
    assert wait_for_no_group(group), "the command's processes outlived the run"
    assert "bye" in [x[2] for x in stored()]


@pytest.mark.subprocess
def test_the_processes_a_command_leaves_behind_have_the_grace_to_end_on_sigterm(
    herolog_home: Path, tmp_path: Path
) -> None:
    """Those whose output goes elsewhere (a server logging to a file) too: the SIGKILL comes
    once the grace is over, not as soon as the dyno's output has ended."""
    armed, done = tmp_path / "armed", tmp_path / "done"
    script = (
        """(trap 'sleep 0.2; : > "$2"; exit 0' TERM; : > "$1";"""
        " while :; do sleep 0.05; done) > /dev/null 2>&1 &"
        """ while [ ! -e "$1" ]; do sleep 0.01; done"""
    )
    proc = run("--", "sh", "-c", script, "sh", str(armed), str(done))
    assert proc.returncode == 0, proc.stderr
    assert done.exists(), "SIGKILL came before the grace was over"


@pytest.mark.subprocess
def test_the_processes_a_command_put_in_groups_of_their_own_end_with_the_dyno(
    herolog_home: Path,
) -> None:
    """A command with job control of its own (a shell's `set -m`) starts processes in groups
    of their own, in the dyno's session still: they end with the dyno too (they were left
    running). Only a session of their own leaves them alone."""
    script = (
        "import subprocess\n"
        "quiet = {'stdout': subprocess.DEVNULL, 'stderr': subprocess.DEVNULL}\n"
        "job = subprocess.Popen(['sleep', '300'], process_group=0, **quiet)\n"
        "daemon = subprocess.Popen(['sleep', '300'], start_new_session=True, **quiet)\n"
        "print(job.pid, daemon.pid)\n"
    )
    proc = run("--", sys.executable, "-c", script)
    job, daemon = map(int, proc.stdout.split())
    try:
        assert proc.returncode == 0, proc.stderr
        assert wait_for_no_group(job), "a process of the dyno's session outlived the run"
        os.killpg(daemon, 0)  # still there: not the dyno's
    finally:
        for group in (job, daemon):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


@pytest.mark.subprocess
def test_a_store_moved_while_the_command_ran_keeps_what_others_stored_meanwhile(
    herolog_home: Path, tmp_path: Path
) -> None:
    """run left its store to the interpreter's exit, and SQLite does not write the -wal into
    a file that has moved: a line another command stored while run had the store open was
    missing from the moved file, and stayed in logs.db-wal beside the path, for a store put
    there next to read. run's close writes it into the moved file and empties the -wal."""
    store_lines(herolog_home / "logs.db", "demo", line("stored before"))
    go = tmp_path / "go"
    script = f"echo ready; while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.05; done; echo after"
    child = Child("run", "--", "sh", "-c", script)
    assert child.read_lines(1) == ["ready"]
    store_lines(herolog_home / "logs.db", "demo", line("stored meanwhile"))
    (herolog_home / "logs.db").rename(herolog_home / "old.db")
    go.touch()
    code, err = child.stop(timeout=30)
    assert (code, "was moved or deleted while the command ran" in err) == (0, True)
    uri = f"file:{herolog_home / 'old.db'}?mode=ro&immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        messages = [m for (m,) in db.execute("SELECT message FROM lines")]
    assert {"stored before", "stored meanwhile"} <= set(messages)
    wal = herolog_home / "logs.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.subprocess
def test_signals_reach_the_whole_process_group(herolog_home: Path) -> None:
    child = Child("run", "--", "sh", "-c", "echo ready; sleep 30; echo after")
    assert child.read_lines(1) == ["ready"]
    child.proc.send_signal(signal.SIGTERM)
    code, _ = child.stop(timeout=15)  # the sleep is killed too, not waited for
    assert code == 128 + signal.SIGTERM
    assert "after" not in [x[2] for x in stored()]


def test_a_signal_before_the_command_has_started_reaches_it(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while herolog is starting the command (here: just before) is passed on once
    the command runs, not the end of herolog with the command left running on its own."""
    import os

    from herolog.run import run_dyno

    real_popen = subprocess.Popen

    def popen_after_a_signal(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this (the main) thread
        return real_popen(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", popen_after_a_signal)
    missed: list[int] = []  # herolog's handler not in place: the signal would end pytest
    previous = signal.signal(signal.SIGTERM, lambda sig, _frame: missed.append(sig))
    try:
        status = run_dyno(["sleep", "5"], "run.1", lambda lines: None, echo=False).status
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert missed == []
    assert status == 128 + signal.SIGTERM


def test_a_signal_caught_just_before_the_wait_still_reaches_the_command(
    herolog_home: Path,
) -> None:
    """Python runs a signal's handler between two steps of its own, never inside a blocking
    call: one caught just before herolog's wait for the command must not wait for the command
    to end. Caught by another thread here (a thread of the test's, which lets SIGTERM
    through), the main thread is left exactly as it was by one that came too late for its
    last look: blocked, the handler not run. Before the fix the command slept its 30 s and
    exited 0 (one run in thirty, under load, in CI)."""
    from herolog.parser import LogLine
    from herolog.run import run_dyno

    up = threading.Event()

    def sink(lines: list[LogLine]) -> None:
        if any(line.message == "ready" for line in lines):
            up.set()

    def signal_from_another_thread() -> None:
        if up.wait(timeout=30):
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    missed: list[int] = []  # herolog's handler not in place: the signal would end pytest
    previous = signal.signal(signal.SIGTERM, lambda sig, _frame: missed.append(sig))
    sender = threading.Thread(target=signal_from_another_thread)
    sender.start()
    try:
        command = ["sh", "-c", "echo ready; sleep 30; echo after"]
        status = run_dyno(command, "run.1", sink, echo=False).status
    finally:
        signal.signal(signal.SIGTERM, previous)
        up.set()
        sender.join()
    assert missed == []
    assert status == 128 + signal.SIGTERM
    # What herolog set up for its wait is gone with it.
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


@pytest.mark.subprocess
def test_run_dyno_waits_for_its_command_under_a_mask_blocking_sigchld(herolog_home: Path) -> None:
    """The wait wakes on SIGCHLD: a program calling run_dyno with SIGCHLD blocked in its
    main thread (as it may have for reasons of its own) still gets the command's end."""
    script = (
        "import signal, sys\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})\n"
        "from herolog.run import run_dyno\n"
        "exited = run_dyno(['sh', '-c', 'sleep 0.5; exit 3'], 'run.1', lambda lines: None, echo=False)\n"
        "print(exited.status, signal.SIGCHLD in signal.pthread_sigmask(signal.SIG_BLOCK, ()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "True"]  # its own mask given back as it was


@pytest.mark.subprocess
def test_output_without_a_newline_is_shown_as_it_comes(herolog_home: Path, tmp_path: Path) -> None:
    """A prompt or a progress bar reaches the terminal before its line ends (here: the
    command ends its line only once the test has seen the start of it); the store gets the
    line once it is whole."""
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "sys.stdout.write('working...'); sys.stdout.flush()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "print('done')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "herolog", "run", "--", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        env=herolog_env(),
    )
    assert proc.stdout is not None
    with proc.stdout:
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "nothing shown before the line ended"
            assert os.read(proc.stdout.fileno(), 100) == b"working..."
            go.touch()
            assert proc.wait(30) == 0
        finally:
            proc.kill()
    assert [x[2] for x in stored() if x[0] == "app"] == ["working...done"]


@pytest.mark.subprocess
def test_a_long_line_is_stored_in_pieces_as_heroku_splits_it(herolog_home: Path) -> None:
    """Heroku splits a dyno's line at 10,000 bytes; herolog too, never inside a character."""
    text = "é" * 12_345 + "x" * 7  # 24,697 bytes
    result = run("-q", "--", sys.executable, "-c", f"print({text!r})")
    assert result.returncode == 0, result.stderr
    pieces = [x[2] for x in stored() if x[0] == "app"]
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 10_000 for p in pieces)
    assert len(pieces) == 3
    # U+0100's second byte is 0x80, the lowest a continuation byte has: at byte 10,000 too.
    text = "x" + "\u0100" * 6_000
    result = run("-q", "-a", "low", "--", sys.executable, "-c", f"print({text!r})")
    assert result.returncode == 0, result.stderr
    pieces = [x[2] for x in stored("low") if x[0] == "app"]
    assert "".join(pieces) == text
    assert [len(p.encode()) for p in pieces] == [9_999, 2_002]
    # Bytes that are not UTF-8 hold no character to keep whole: cut at 10,000 still.
    script = "import sys; sys.stdout.buffer.write(b'\\x80' * 20_000 + b'\\n')"
    result = run("-q", "-a", "binary", "--", sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    assert [x[2] for x in stored("binary") if x[0] == "app"] == ["\ufffd" * 10_000] * 2


@pytest.mark.subprocess
def test_a_blank_line_is_a_line_and_one_of_the_limit_is_one_piece(herolog_home: Path) -> None:
    """Every line the command ends is stored, an empty one too; one of exactly 10,000 bytes
    whole, with no empty piece after it."""
    script = "print('a'); print(); print('y' * 10_000); print('b')"
    proc = run("-q", "--", sys.executable, "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert [x[2] for x in stored() if x[0] == "app"] == ["a", "", "y" * 10_000, "b"]


@pytest.mark.subprocess
def test_a_crlf_line_end_is_not_stored_as_part_of_the_line(herolog_home: Path) -> None:
    """As Heroku's log router splits a dyno's output (and herolog's forwarder, text_lines):
    the ``\r`` of ``\r\n`` belongs to the line end, as does one a last line ends in; a ``\r``
    inside a line (a progress bar's) is the line's own."""
    script = (
        "import sys, time\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'done\\r\\n10%\\r50%\\r\\r\\n'); out.flush()\n"
        # a line of 10,000 bytes, whose \r herolog has seen (and cut the line after) before
        # the \n, and another \r in a read of its own: one piece, not a second, empty one
        "out.write(b'y' * 10_000 + b'\\r'); out.flush(); time.sleep(0.3)\n"
        "out.write(b'\\r'); out.flush(); time.sleep(0.3)\n"
        "out.write(b'\\nlast\\r')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "run", "--", sys.executable, "-c", script],
        capture_output=True,
        env=herolog_env(),
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout == b"done\r\n10%\r50%\r\r\n" + b"y" * 10_000 + b"\r\r\nlast\r"  # shown as is
    assert [x[2] for x in stored() if x[0] == "app"] == ["done", "10%\r50%", "y" * 10_000, "last"]


def run_peak_mb(script: str) -> float:
    """The peak memory, in MB, of ``herolog run -q`` of a Python ``script``, which must
    exit 0."""
    measure = (
        "import resource, subprocess, sys\n"
        f"subprocess.run([sys.executable, '-m', 'herolog', 'run', '-q', '--', sys.executable, '-c', {script!r}], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure],
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout) / 1024


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_burst_faster_than_the_store_waits_instead_of_filling_memory(herolog_home: Path) -> None:
    """The command is held back (as by any pipe) while lines wait for the store, instead
    of herolog keeping them all: the peak memory of the run stays small."""
    script = (
        "import sys\nw = sys.stdout.write\nfor i in range(300_000): w(f'line {i} of the burst\\n')"
    )
    peak_mb = run_peak_mb(script)
    # 27 MB here; 68 MB with the lines waiting for the store unbounded (MAX_WAITING raised).
    assert peak_mb < 45, f"herolog run peaked at {peak_mb:.0f} MB"
    *_, last, exit_line, _ = stored()
    assert (last[2], exit_line[2]) == ("line 299999 of the burst", "Process exited with status 0")


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_burst_of_long_lines_waits_before_filling_memory(herolog_home: Path) -> None:
    """10,000 lines waiting for the store are 25 MB of herolog's memory when they are
    short, but 100 MB when they are of Heroku's 10,000 bytes (a JSON log with a payload, a
    line of hundreds of MB without a newline, stored in pieces of that): lines wait up to
    10 MB of them too."""
    script = (
        "import sys\nline = 'x' * 9_999 + '\\n'\n"
        "for i in range(20_000): sys.stdout.write(line)\nprint('last')"
    )
    peak_mb = run_peak_mb(script)
    # About 50 MB here; 144 MB with only the count of lines waiting bounded.
    assert peak_mb < 75, f"herolog run peaked at {peak_mb:.0f} MB"
    *_, last, exit_line, _ = stored()
    assert (last[2], exit_line[2]) == ("last", "Process exited with status 0")


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_for_state(pid: int, wanted: set[str]) -> None:
    deadline = time.monotonic() + 15
    while process_state(pid) not in wanted:
        assert time.monotonic() < deadline, f"{pid} is {process_state(pid)}, not {wanted}"
        time.sleep(0.01)


@pytest.mark.subprocess
def test_ctrl_z_stops_the_command_with_herolog_and_fg_resumes_both(herolog_home: Path) -> None:
    """The command runs in its own process group: a terminal's SIGTSTP reaches herolog
    only, which stops the command and then itself, and passes the shell's SIGCONT on."""
    child = Child("run", "--", sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)")
    try:
        children = Path(f"/proc/{child.proc.pid}/task/{child.proc.pid}/children")
        deadline = time.monotonic() + 15
        while not children.read_text().split():
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.01)
        (command,) = map(int, children.read_text().split())
        child.proc.send_signal(signal.SIGTSTP)
        wait_for_state(command, {"T"})
        wait_for_state(child.proc.pid, {"T"})
        child.proc.send_signal(signal.SIGCONT)
        wait_for_state(command, {"S", "R"})
        wait_for_state(child.proc.pid, {"S", "R"})
    finally:
        code, _ = child.stop(signal.SIGTERM)
    assert code == 128 + signal.SIGTERM


@pytest.mark.subprocess
def test_output_written_before_the_command_exits_is_stored_however_slow_the_store(
    herolog_home: Path, tmp_path: Path
) -> None:
    """The store is busy (another writer holds it) while the command writes more than herolog
    keeps waiting and exits: the lines still waiting when it exits are stored, not cut off
    once the run's grace for output still on its way is over."""
    grace = 0.2  # not run's 1 s: what is tested is that the lines outlast it, however long
    open_store().close()
    done = tmp_path / "done"
    script = (
        "import sys\n"
        "for i in range(15_000): sys.stdout.write(f'line {i}\\n')\n"
        f"sys.stdout.flush(); open({str(done)!r}, 'w').close()\n"
    )
    other, runner = run_while_the_store_is_held(herolog_home, script, grace=grace)
    try:
        deadline = time.monotonic() + 30
        while not done.exists():
            assert time.monotonic() < deadline, "the command did not get to its end"
            time.sleep(0.02)
        time.sleep(grace + 0.5)
        other.execute("COMMIT")
        assert runner.wait(60) == 0
    finally:
        runner.kill()
        other.close()
    *_, last, exit_line, _ = stored()
    assert (last[2], exit_line[2]) == ("line 14999", "Process exited with status 0")


def run_while_the_store_is_held(
    home: Path, script: str, *, grace: float | None = None
) -> tuple[sqlite3.Connection, subprocess.Popen[bytes]]:
    """Another connection holding the store's write lock (``BEGIN IMMEDIATE``: COMMIT it to
    let go), and ``herolog run -q -- python -c SCRIPT`` started meanwhile; with ``grace``,
    its EXIT_GRACE_S (set as a test's monkeypatch would, in the process's own herolog)."""
    other = sqlite3.connect(home / "logs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    runner = subprocess.Popen(
        [sys.executable, "-m", "herolog", "run", "-q", "--", sys.executable, "-c", script],
        env=herolog_env() if grace is None else constants_env({"herolog.run.EXIT_GRACE_S": grace}),
    )
    return other, runner


@pytest.mark.subprocess
def test_a_sigterm_reaches_the_command_at_once_while_the_store_is_busy(
    herolog_home: Path, tmp_path: Path
) -> None:
    """Another writer holds the store, and the command has written more than herolog keeps
    waiting (it is held up writing more): the SIGTERM is passed on now, not once the store
    answers again, and the dyno manager's line for it is stored all the same."""
    from herolog.run import MAX_WAITING

    subprocess.run(
        [sys.executable, "-m", "herolog", "store", "history", "100000"],
        env=herolog_env(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    written, got = tmp_path / "written", tmp_path / "got"
    script = (
        "import os, signal, sys\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(got)!r}, 'w').close(), os._exit(0)))\n"
        "for i in range(1, 1_000_000):\n"
        "    sys.stdout.write(f'line {i}\\n')\n"
        f"    if i % 100 == 0: open({str(written)!r}, 'w').write(str(i))\n"
    )

    def lines_written() -> int:
        return int(written.read_text() or 0) if written.exists() else 0

    other, runner = run_while_the_store_is_held(herolog_home, script)
    try:
        # Past what herolog keeps waiting, and held up: its lines wait for the store (the
        # command writes 100 lines in microseconds while it is not).
        deadline, seen = time.monotonic() + 30, -1
        while seen != lines_written() or seen <= MAX_WAITING:
            assert time.monotonic() < deadline, "the command's output was not held up"
            seen = lines_written()
            time.sleep(0.2)
        runner.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10  # the store stays busy all that time
        while not got.exists():
            assert time.monotonic() < deadline, "the SIGTERM waited for the store"
            time.sleep(0.02)
    finally:
        other.execute("COMMIT")
        other.close()
        status = runner.wait(60)
    assert status == 0
    with open_store() as store:
        platform = store.last(LineFilter(app="default", sources=("heroku",)), 3)[0]
    assert [x.message for x in platform] == [
        "Stopping all processes with SIGTERM",
        "Process exited with status 0",
        "State changed from up to complete",
    ]


@pytest.mark.subprocess
def test_a_last_line_without_a_newline_is_stored_while_a_background_child_holds_the_pipe(
    herolog_home: Path,
) -> None:
    proc = run("--", "sh", "-c", "sleep 5 & printf 'no newline'")
    assert (proc.returncode, proc.stdout) == (0, "no newline")
    assert [x[2] for x in stored()][-3:-1] == ["no newline", "Process exited with status 0"]


@pytest.mark.subprocess
def test_a_signal_ignored_as_nohup_ignores_it_stays_ignored(
    herolog_home: Path, tmp_path: Path
) -> None:
    """Under nohup a hangup is not passed on to the command (it would end it), and the
    command too starts with SIGHUP ignored, as it does under nohup without herolog."""
    go = tmp_path / "go"
    script = (
        "import os, signal, time\n"
        "print('hup', signal.getsignal(signal.SIGHUP) == signal.SIG_IGN, flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "print('still here')\n"
    )
    herolog = [sys.executable, "-m", "herolog", "run", "--", sys.executable, "-c", script]
    proc = subprocess.Popen(
        ["nohup", *herolog],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=herolog_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"hup True\n"
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        go.touch()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (0, b"still here\n", b"")
    assert stored()[-2][2] == "Process exited with status 0"


@pytest.mark.subprocess
def test_a_command_opening_the_terminal_finds_none_as_on_a_dyno(herolog_home: Path) -> None:
    """herolog runs at a terminal (its controlling one), and the command asks on /dev/tty (a
    password prompt: sudo, ssh, getpass). A dyno has no terminal: the command is told so at
    once, rather than stopped by the terminal for reading from a background process group,
    where no Ctrl-C could reach it for 30 s."""
    import fcntl
    import termios

    main, terminal = os.openpty()
    command = "echo ready; read answer < /dev/tty; echo read $?"
    proc = subprocess.Popen(
        [sys.executable, "-m", "herolog", "run", "-q", "--", "sh", "-c", command],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        env=herolog_env(),
    )
    os.close(terminal)
    try:
        status = proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the command was stopped reading the terminal") from None
    finally:
        proc.kill()
        os.close(main)
    assert status == 0
    out = [x[2] for x in stored() if x[0] == "app" and x[3] == 190]
    (error,) = [x[2] for x in stored() if x[0] == "app" and x[3] == 187]
    assert out == ["ready", "read 2"]  # 2: sh's status for a redirection that failed
    assert error.endswith("/dev/tty: No such device or address")


@pytest.mark.subprocess
def test_dyno_in_the_command_environment_is_the_one_given(herolog_home: Path) -> None:
    """Not one already in herolog's environment (a herolog run inside another, a shell with
    DYNO exported): the command would say it is another dyno than its lines are stored as."""
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "run", "-d", "worker.2", "--", "sh", "-c", "echo $DYNO"],
        capture_output=True,
        text=True,
        env=herolog_env(DYNO="web.1"),
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (0, "worker.2\n")


@pytest.mark.subprocess
def test_a_command_that_ignores_sigterm_is_killed_after_the_exit_timeout(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the dyno manager does 30 s after its SIGTERM: otherwise neither kill nor any number
    of Ctrl-Cs would end the run, the command being in a process group of its own."""
    import herolog.run
    from herolog.parser import LogLine
    from herolog.run import run_dyno

    monkeypatch.setattr(herolog.run, "EXIT_TIMEOUT_S", 0.5)
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    seen: list[str] = []

    def sink(lines: list[LogLine]) -> None:
        seen.extend(x.message for x in lines)
        if any(x.message == "ready" for x in lines):
            os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, by run_dyno

    started = time.monotonic()
    status = run_dyno([sys.executable, "-c", script], "web.1", sink, echo=False).status
    assert status == 128 + signal.SIGKILL
    assert time.monotonic() - started < 20
    assert seen[-5:] == [
        "State changed from up to down",
        "Stopping all processes with SIGTERM",
        "Error R12 (Exit timeout) -> At least one process failed to exit within 0.5 seconds"
        " of SIGTERM",
        "Stopping remaining processes with SIGKILL",
        "Process exited with status 137",
    ]


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("command", "after"),
    [
        # ready: what it does with a Ctrl-C is in place (a trap set after it came would not
        # be, whatever the machine's speed)
        ('sh -c "echo ready; exec sleep $t"', ""),  # dies of SIGINT: the script stops there
        # handles it, and exits 130 itself: the shell goes on, as it would without herolog
        ("sh -c \"trap 'exit 130' INT; echo ready; sleep $t & wait\"", "next 130\nstart\nnext 0\n"),
    ],
)
def test_ctrl_c_stops_a_shell_loop_running_herolog_as_it_stops_one_running_the_command(
    herolog_home: Path, command: str, after: str
) -> None:
    """A shell that gets a Ctrl-C while it waits goes on with its script unless its command
    died of SIGINT too: herolog, which passes the Ctrl-C on, ends itself with it once the
    command has, as a shell does."""
    herolog = f"{shlex.quote(sys.executable)} -m herolog run -q -- {command}"
    loop = f"for t in 30 0; do echo start; {herolog}; echo next $?; done"
    shell = shell_job(loop)
    try:
        assert shell.stdout is not None
        assert shell.stdout.readline() == "start\n"
        deadline = time.monotonic() + 15
        while not [x for x in stored() if x[2] == "ready"]:
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.02)
        os.killpg(shell.pid, signal.SIGINT)
        out, _ = shell.communicate(timeout=30)
    finally:
        shell.kill()
    assert (shell.returncode, out) == (0 if after else -signal.SIGINT, after)
    exits = [x[2] for x in stored() if x[2].startswith("Process exited")]
    assert exits == [f"Process exited with status {128 + signal.SIGINT}"] + [
        "Process exited with status 0"
    ] * bool(after)


@pytest.mark.subprocess
def test_signals_blocked_by_the_parent_are_unblocked_for_herolog_and_its_command(
    herolog_home: Path,
) -> None:
    """A signal mask, unlike a handler, is inherited across exec: a parent that blocked
    SIGCHLD or SIGTERM in the thread that started herolog (a CI runner's, a supervisor
    reading them from a signalfd) passed that on. herolog's wait for the command wakes on
    SIGCHLD: it waited for ever after the command exited; and a dyno's command starts with
    nothing blocked."""
    blocked = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    command = ["sh", "-c", "sleep 0.5; exec grep SigBlk /proc/self/status"]
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "run", "--", *command],
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=15,
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, blocked),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["SigBlk:", "0" * 16]


@pytest.mark.subprocess
def test_a_sigchld_ignored_by_the_parent_neither_loses_the_status_nor_reaches_the_command(
    herolog_home: Path,
) -> None:
    """An ignored SIGCHLD, like an ignored SIGHUP, is kept across exec (from a daemon that
    ignores it so as not to have to reap its children): the kernel then reaps the command as
    it exits, and one that exited before herolog waited for it was taken to have exited 0. A
    dyno's command starts with SIGCHLD not ignored."""

    def ignoring_sigchld(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "herolog", "run", "--", *command],
            capture_output=True,
            text=True,
            env=herolog_env(),
            timeout=15,
            preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN),
        )

    proc = ignoring_sigchld("false")
    assert (proc.returncode, proc.stderr) == (1, "")
    assert stored()[-2][2] == "Process exited with status 1"
    proc = ignoring_sigchld("grep", "^SigIgn:", "/proc/self/status")
    ignored = int(proc.stdout.split()[1], 16)
    assert not ignored & 1 << (signal.SIGCHLD - 1)


@pytest.mark.subprocess
def test_a_command_that_prints_nothing_ends_when_herolog_is_killed(herolog_home: Path) -> None:
    """Killed with SIGKILL (or by the OOM killer), herolog passes nothing on: the kernel
    sends the command SIGTERM, which it would otherwise outlive, reparented, for good."""
    script = "import os, time; print(os.getpid(), flush=True); time.sleep(300)"
    child = Child("run", "--", sys.executable, "-c", script)
    (pid,) = map(int, child.read_lines(1))
    try:
        child.proc.kill()
        child.stop(timeout=15)
        assert wait_for_no_group(pid), "the command outlived herolog"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.subprocess
def test_a_python_without_ctypes_runs_commands_without_the_kernel_s_signal(
    herolog_home: Path, tmp_path: Path
) -> None:
    """ctypes is optional in a Python build: without it, herolog run works as before."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoCtypes:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ctypes':\n"
        "            raise ImportError('No module named ctypes')\n"
        "sys.meta_path.insert(0, _NoCtypes())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "run", "--", "echo", "hello"],
        capture_output=True,
        text=True,
        env=herolog_env(PYTHONPATH=str(tmp_path)),
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hello\n", "")
    assert ("app", "run.1", "hello", 190) in stored()


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("command", "signals", "status"),
    [
        # A Ctrl-C stops the command, then herolog waits; a second gives up
        ("echo ready; exec sleep 30", 2, 130),
        # The command exits of its own accord: herolog waits for the lock to go...
        ("echo ready", 0, 0),
        # ... or a first Ctrl-C gives up
        ("echo ready", 1, 0),
    ],
    ids=["ctrl-c-twice", "exited-then-released", "exited-then-ctrl-c"],
)
def test_a_store_locked_by_another_process_is_waited_for_out_loud_and_a_ctrl_c_gives_up(
    herolog_home: Path, command: str, signals: int, status: int
) -> None:
    """Another process holds the store's write lock (the sqlite3 shell's BEGIN IMMEDIATE, a
    long import): once the command has ended, herolog's flusher waited for it where no
    Ctrl-C reaches, 30 s a batch left, without a word; a second Ctrl-C ended herolog without
    saying what it lost. It now says what it waits for, once; a Ctrl-C then gives up, saying
    how many lines were not stored, and dies of it; the lock let go, every line is stored
    once. (The busy timeout made an hour: the old wait would outlast the test's.)"""
    open_store().close()
    path = herolog_home / "logs.db"
    waiting = (
        f"herolog run: another process holds the store's write lock ({path}): waiting up to"
        " 3600 s for it to store the command's last lines; Ctrl-C gives up on them\n"
    ).encode()
    with write_lock_held(path) as other:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herolog", "run", "--", "sh", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=constants_env({"herolog.store.BUSY_TIMEOUT_S": 3600.0}),
            start_new_session=True,  # a terminal's foreground job, which its Ctrl-C reaches
        )
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            assert line_within(proc.stdout) == b"ready\n"
            if signals == 2:
                os.killpg(proc.pid, signal.SIGINT)
            assert line_within(proc.stderr) == waiting
            time.sleep(0.5)  # five steps of the wait for the lock: said once, not at each
            if signals:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                other.execute("COMMIT")
            _, err = proc.communicate(timeout=30)
        finally:
            ended(proc)
    lines = [
        "Starting process with command `sh -c '...'`",
        "State changed from starting to up",
        "ready",
        f"Process exited with status {status}",
        "State changed from up to complete",
    ]
    if signals:
        assert proc.returncode == -signal.SIGINT
        assert err.decode() == (
            f"herolog run: could not store {len(lines)} of {len(lines)} lines: gave up waiting"
            f" for the write lock of the store {path}, which another process holds\n"
        )
        assert stored() == []
    else:
        assert (proc.returncode, err) == (0, b"")
        lines[0] = lines[0].replace("...", command)
        assert [x[2] for x in stored()] == lines


@pytest.mark.slow
@pytest.mark.subprocess
def test_lines_that_waited_for_the_lock_while_the_command_ran_have_the_whole_wait_after_it(
    herolog_home: Path, tmp_path: Path
) -> None:
    """The first batch has waited for another process's write lock since the command began;
    the command ends, and the lock goes within the busy timeout of that end but past the
    timeout of the batch's own wait: herolog waited each batch's timeout, and lost that
    batch (the dyno's start and its first line) a moment before the lock went. Once the
    command has ended, the wait lasts the timeout from then, for every line."""
    timeout = 8.0  # the store's busy timeout: 2 to 3 s of margin below, either way
    go = tmp_path / "go"
    open_store().close()
    command = f"echo ready; while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.05; done"
    with write_lock_held(herolog_home / "logs.db") as other:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herolog", "run", "--", "sh", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=constants_env({"herolog.store.BUSY_TIMEOUT_S": timeout}),
        )
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            assert line_within(proc.stdout) == b"ready\n"
            time.sleep(5)  # the first batch has waited as long
            go.touch()
            assert line_within(proc.stderr).startswith(b"herolog run: another process holds")
            time.sleep(5)  # past the first batch's timeout, well within the end's
            other.execute("COMMIT")
            _, err = proc.communicate(timeout=30)
        finally:
            ended(proc)
    assert (proc.returncode, err) == (0, b"")
    assert [x[2] for x in stored()] == [
        f"Starting process with command `sh -c {shlex.quote(command)}`",
        "State changed from starting to up",
        "ready",
        "Process exited with status 0",
        "State changed from up to complete",
    ]
