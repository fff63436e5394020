"""``herolog run``: a local dyno. A command's output becomes ``app[DYNO]`` lines.

Around the output go the lines Heroku's dyno manager writes as ``heroku[DYNO]``: the start,
the state change to up, and the exit status.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import select
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from herolog.interrupt import woken_by_signals, write_nowhere
from herolog.parser import LogLine, own_line

FLUSH_INTERVAL_S = 0.05
EXIT_GRACE_S = 1.0
"""After the command exits, how long the processes it left running (sent SIGTERM, then SIGKILL
once this is over) are read from; like a dyno, the run ends with its command. What the
command itself wrote is read to its end, however long that takes."""
EXIT_TIMEOUT_S = 30.0
"""After passing on SIGTERM or SIGINT, how long the command has to exit before it is killed
with SIGKILL, as the dyno manager does 30 s after its SIGTERM (with Heroku's R12 line)."""
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)
MAX_LINE = 10_000
"""A longer line is stored in pieces of at most this many bytes, as Heroku splits them."""
MAX_WAITING = 10_000
"""Lines waiting for the store, at most: past that, reading the command's output waits,
and so does the command (as with any pipe), instead of herolog's memory growing; unless
the store failed the last batch, when a line that finds no room is dropped instead."""
MAX_WAITING_BYTES = 10_000_000
"""The same for the characters of the lines waiting: 10,000 of MAX_LINE would be 100 MB."""
READ_SIZE = 1 << 16
APP_PRI = 190  # local7.info: what Heroku gives app output
APP_ERR_PRI = 187  # local7.err for what the command writes to stderr
PLATFORM_PRI = 45  # syslog.notice, the dyno manager's
ONE_OFF_TYPES = frozenset({"run", "scheduler", "release"})
"""Dyno types whose end is `complete` (Heroku's one-off dynos); any other dyno that exits
without being stopped has `crashed`, and one stopped goes `down`."""
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTSTP,
)

Sink = Callable[[list[LogLine]], object]
"""Where lines go (the store's append, for one app): called from one thread only. An error
it raises costs the whole batch, unless the error's ``unsent`` says how many of its lines."""


class _Lines(queue.Queue["LogLine | None"]):
    """Full once MAX_WAITING lines wait, or MAX_WAITING_BYTES of their messages."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._chars = 0

    def _qsize(self) -> int:
        return max(len(self.queue), self._chars * MAX_WAITING // MAX_WAITING_BYTES)

    def _put(self, item: LogLine | None) -> None:
        super()._put(item)
        self._chars += 0 if item is None else len(item.message)

    def _get(self) -> LogLine | None:
        item = super()._get()
        self._chars -= 0 if item is None else len(item.message)
        return item

    def put_now(self, item: LogLine | None) -> None:
        """Put ``item`` without waiting for room, past the queue's size."""
        with self.mutex:
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()


class _Flusher:
    """Collects lines from the readers and hands them to the sink every 50 ms (or 1,000
    lines)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._queue: _Lines = _Lines(MAX_WAITING)
        self._thread = threading.Thread(target=self._run, name="herolog-run-flush", daemon=True)
        self.error: BaseException | None = None
        """The last error the sink raised."""
        self.failing = False
        """Whether the sink stored nothing of the last batch."""
        self.lines = 0
        self.lost = 0
        """Lines of the batches the sink raised an error for, and lines dropped."""
        self._dropped = 0
        self._dropping = threading.Lock()

    def start(self) -> None:
        with _signals_for_this_thread():
            self._thread.start()

    def put(self, line: LogLine) -> None:
        """Wait for room while the store is slow; not while it fails, which may take a
        server's timeouts for every batch: the line is dropped (and counted) instead."""
        while True:
            try:
                self._queue.put(line, block=not self.failing, timeout=FLUSH_INTERVAL_S)
                return
            except queue.Full:
                if self.failing:
                    with self._dropping:
                        self._dropped += 1
                    return

    def put_now(self, line: LogLine) -> None:
        """Past MAX_WAITING: a signal's line must not hold up the signal while the store
        is busy (a SIGTERM not passed on, a SIGKILL not sent, until the store answers)."""
        self._queue.put_now(line)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.lines += self._dropped
        self.lost += self._dropped

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            deadline = time.monotonic() + FLUSH_INTERVAL_S
            # While failing, one try for all that waits: not one (and its timeouts) a 1,000
            limit = MAX_WAITING + 1 if self.failing else 1000
            while len(batch) < limit and (remaining := deadline - time.monotonic()) > 0:
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self.lines += len(batch)
            try:
                self._sink(batch)
            except Exception as error:  # keep running the command; report at the end
                self.error = error
                unsent = getattr(error, "unsent", None)
                self.lost += len(batch) if unsent is None else unsent
                self.failing = unsent is None or unsent >= len(batch)
            else:
                self.failing = False
            if stop:
                return


class Exited(NamedTuple):
    status: int
    """The command's exit status, 128 + N for death by signal N, as a shell gives it."""
    died_of: int | None = None
    """The signal the command died of: a shell that gets a Ctrl-C stops its script only if
    its command died of SIGINT too, not if it handled it and exited 130."""
    stopped_by: int | None = None
    """A SIGTERM or SIGINT herolog got once the command had exited of its own accord (or,
    where the sink can give up, once it had exited at all), while what it wrote was being
    stored: a Ctrl-C then ends herolog by its SIGINT all the same."""


def run_dyno(
    command: Sequence[str],
    dyno: str,
    sink: Sink,
    *,
    echo: bool = True,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    on_stopped: Callable[[str], object] = lambda _stopped: None,
    on_ended: Callable[[], object] = lambda: None,
    give_up: Callable[[], object] | None = None,
) -> Exited:
    """Run ``command``, storing its output as ``app[DYNO]``; returns how it exited.

    Signals sent to herolog are passed on to the command, which runs in a session of its
    own, without a terminal as on a dyno (so a Ctrl-C in the terminal reaches it exactly once,
    and a read of /dev/tty fails instead of stopping it). A signal's death is
    status 128 + N, as in a shell; a command that cannot be started is 127 (not found) or
    126 (not executable). ``on_stopped`` is called once a command that herolog passed a
    SIGTERM or SIGINT on to has exited, with ``"the command"``, or with ``"herolog"`` when
    one comes once the command has exited of its own accord (while what it wrote is still
    being stored): the sink is to hurry then. Another after that ends herolog at once.
    With ``give_up``, the first SIGTERM or SIGINT once the command has exited (the second
    Ctrl-C, after the one the command was stopped by) calls it instead, for the sink to stop
    waiting and lose what waits, counted; another after that ends herolog at once.
    ``on_ended`` is called as the command exits: herolog is what is waited for from then on.
    """
    out = stdout or sys.stdout.buffer
    err = stderr or sys.stderr.buffer
    one_off = dyno.partition(".")[0] in ONE_OFF_TYPES

    def platform(message: str) -> LogLine:
        """A line of the dyno manager's."""
        return own_line("heroku", dyno, message, PLATFORM_PRI)

    def state(before: str, after: str) -> LogLine:
        return platform(f"State changed from {before} to {after}")

    flusher = _Flusher(sink)
    flusher.put(platform(f"Starting process with command `{shlex.join(map(_text, command))}`"))
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # Python commands would otherwise hold lines back
    env["DYNO"] = dyno
    # In place before the command starts: a signal in between would end herolog, and
    # leave the command running on its own. One that comes before it exists waits for it.
    started: list[subprocess.Popen[bytes]] = []
    early: list[int] = []
    stopping: list[threading.Timer] = []
    exited = threading.Event()
    late: list[int] = []
    """A SIGTERM or SIGINT that came once the command had exited of its own accord."""

    def put_end(status: int, state_was: str) -> None:
        """The command's end, and the dyno's last state: a one-off dyno completes; another
        that was not stopped has crashed (one stopped went down as it was)."""
        flusher.put(platform(f"Process exited with status {status}"))
        if one_off or not stopping:
            flusher.put(state(state_was, "complete" if one_off else "crashed"))

    def kill(sig: int) -> None:
        if exited.is_set():
            return
        name = signal.Signals(sig).name
        for message in (
            f"Error R12 (Exit timeout) -> At least one process failed to exit within"
            f" {EXIT_TIMEOUT_S:g} seconds of {name}",
            "Stopping remaining processes with SIGKILL",
        ):
            flusher.put_now(platform(message))
        _forward(started[0], signal.SIGKILL)

    def finishing(sig: int) -> None:
        """A signal once the command has exited, while what it wrote is read and stored,
        which a failing server can make last half a minute: a first SIGTERM or Ctrl-C has
        the sink hurry, as a stopped command's lines do, and one after that (or after the
        command was stopped) ends herolog at once; where the sink can give up (the local
        store, waiting for another process's lock), the first has it do so instead, even
        after a stop, and says what is lost where hurrying could not."""
        if sig not in STOPPING_SIGNALS:
            return
        if give_up is not None and not late:
            late.append(sig)
            give_up()
            return
        if stopping or late:
            if started:  # what the command left running goes too: its SIGKILL would not come
                _end_session(started[0], signal.SIGKILL)
            _end_at_once(sig)
        late.append(sig)
        on_stopped("herolog")

    def forward(sig: int, _frame: object) -> None:
        if exited.is_set():
            finishing(sig)
        if not started:
            if not exited.is_set():
                early.append(sig)
            return
        stop = sig in STOPPING_SIGNALS and not stopping and not exited.is_set()
        if stop:
            # Taken before the line is put: a second signal coming meanwhile (its handler
            # runs inside this one) is not a first, and puts no line under the lock held.
            stopping.append(threading.Timer(EXIT_TIMEOUT_S, kill, (sig,)))
            stopping[0].daemon = True
            if not one_off:  # as Heroku logs a dyno scaled down: down, then the SIGTERM
                flusher.put_now(state("up", "down"))
            if sig == signal.SIGTERM:
                flusher.put_now(platform("Stopping all processes with SIGTERM"))
        # A SIGTSTP would be discarded: the command's process group has no parent in its
        # session, which the kernel takes as nobody left to resume it.
        _forward(started[0], signal.SIGSTOP if sig == signal.SIGTSTP else sig)
        if stop:
            with _signals_for_this_thread():
                stopping[0].start()
        if sig == signal.SIGTSTP:  # Ctrl-Z: the command stops, then herolog, as one job
            os.kill(os.getpid(), signal.SIGSTOP)
            # Resumed (the shell's fg or bg): so is the command. Not from a SIGCONT handler,
            # which would run only once the wait for the command is over: its signal comes
            # while this one's handler is still running.
            _forward(started[0], signal.SIGCONT)

    # One ignored from the start (nohup's SIGHUP, a script's SIGINT for `cmd &`) stays
    # ignored, by herolog and by the command, which inherits that.
    previous = {
        sig: signal.signal(sig, forward)
        for sig in FORWARDED_SIGNALS
        if signal.getsignal(sig) != signal.SIG_IGN
    }
    # Not SIGCHLD: ignored (kept so across exec from a parent that ignores it), it has the
    # kernel reap the command as it exits, before its status is read (Python then says 0),
    # and the command would start with it ignored, unlike on a dyno.
    if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        try:
            proc = _start(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL if sys.stdin is None or sys.stdin.isatty() else None,
                env=env,
                start_new_session=True,
                preexec_fn=_ended_with(os.getpid()),
            )
        except OSError as error:
            exited.set()
            on_ended()
            while early:
                forward(early.pop(0), None)
            flusher.start()
            status = 127 if isinstance(error, FileNotFoundError) else 126
            message = f"{shlex.quote(_text(command[0]))}: {error.strerror or error}"
            err.write(f"herolog run: {message}\n".encode())
            err.flush()
            flusher.put(own_line("app", dyno, message, APP_ERR_PRI))
            put_end(status, "starting")
            flusher.close()
            return Exited(status, stopped_by=next(iter(late), None))
        flusher.start()
        flusher.put(state("starting", "up"))
        started.append(proc)
        while early:
            forward(early.pop(0), None)
        ended = _Ended()
        readers = [
            threading.Thread(
                target=_pump,
                args=(proc.stdout, out if echo else None, dyno, APP_PRI, flusher, ended),
                daemon=True,
            ),
            threading.Thread(
                target=_pump,
                args=(proc.stderr, err if echo else None, dyno, APP_ERR_PRI, flusher, ended),
                daemon=True,
            ),
        ]
        with _signals_for_this_thread():
            for reader in readers:
                reader.start()
        returncode = _wait(proc)
        exited.set()
        on_ended()
        for timer in stopping:
            timer.cancel()
        if stopping:
            on_stopped("the command")
        # The dyno ends with its command: what it left running is told to stop, and what
        # it writes meanwhile is read for the grace.
        _end_session(proc, signal.SIGTERM)
        ended.now()
        for reader in readers:
            reader.join()
        ended.close()
        _await_session(proc.pid, ended.deadline)  # those whose output goes elsewhere too
        _end_session(proc, signal.SIGKILL)
        status = 128 - returncode if returncode < 0 else returncode
        put_end(status, "up")
        # Under herolog's handlers still: a Ctrl-C while the last lines are sent hurries
        # them and has what is lost said, rather than ending herolog without a word.
        flusher.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if flusher.error is not None:
        lost = f"{flusher.lost:,} of {flusher.lines:,} lines"
        err.write(f"herolog run: could not store {lost}: {flusher.error}\n".encode())
    return Exited(status, -returncode if returncode < 0 else None, next(iter(late), None))


def _end_at_once(sig: int) -> None:
    """End herolog by ``sig`` now, from its handler: a Ctrl-C as every Ctrl-C ends it."""
    if sig == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


def _text(arg: str) -> str:
    """A word of the command as its lines say it: bytes of it that are not UTF-8 (a file
    name in another encoding, which Python holds as surrogates the store cannot take) as
    U+FFFD, as _store has the output's."""
    return arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _ended_with(herolog: int) -> Callable[[], None] | None:
    """On Linux, what the command's process runs before its exec to have the kernel send it
    SIGTERM when ``herolog`` ends, even by SIGKILL or the OOM killer, which leave nobody to
    pass a signal on: a command that prints nothing would run on unwatched (one that prints
    dies of the closed pipe). Run while herolog has no thread but the one starting it, as
    Python's docs ask of a preexec_fn: another thread's locks are not copied taken into it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # a Python built without ctypes, say
        return None
    set_death_signal = 1  # PR_SET_PDEATHSIG
    caught = signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)

    def end_with_herolog() -> None:
        if caught:  # herolog's handler, copied: a SIGTERM before the exec would be lost in it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(set_death_signal, signal.SIGTERM)
        if os.getppid() != herolog:  # it ended before this took hold
            os._exit(128 + signal.SIGTERM)

    return end_with_herolog


def _start(command: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` as glibc's execvp does, and so ``env``, ``nohup``, ``timeout`` and
    the shells: an executable file that is neither a binary nor a ``#!`` script runs with
    /bin/sh, and an empty command name is not found (127, where exec would say 126)."""
    if not command[0]:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    try:
        return subprocess.Popen(list(command), **options)
    except OSError as error:
        if error.errno != errno.ENOEXEC:
            raise
    path = command[0] if "/" in command[0] else shutil.which(command[0]) or command[0]
    return subprocess.Popen(["/bin/sh", path, *command[1:]], **options)


def _wait(proc: subprocess.Popen[bytes]) -> int:
    """``proc.wait()``, woken by every signal herolog handles (see
    :class:`herolog.interrupt.Wakeup`: a SIGTERM that came just before a plain wait would
    reach the command only once it had exited of its own accord, seen one run in thirty
    under load), and by SIGCHLD for the command's exit."""
    previous_chld = signal.signal(signal.SIGCHLD, _woken)
    # Blocked by a caller (herolog's own command unblocks all as it starts), it would
    # leave the sleep for ever.
    previous_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    try:
        with woken_by_signals() as wakeup:
            # Looked at after the handler is in place: an exit before it is seen here, one
            # after it wakes the sleep.
            while (returncode := proc.poll()) is None:
                wakeup.sleep()
            return returncode
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        if previous_chld is not None:  # None: one set outside Python, which stays unknown
            signal.signal(signal.SIGCHLD, previous_chld)


def _woken(_sig: int, _frame: object) -> None:
    """SIGCHLD's handler: its only work is the C handler's write to the wakeup fd."""


@contextlib.contextmanager
def _signals_for_this_thread() -> Iterator[None]:
    """Threads started inside take none of the signals herolog passes on, nor SIGCHLD. The
    kernel gives a signal to any thread that does not block it, and Python runs handlers in
    the main thread only, which waits for the command (see _wait): there they are handled at
    once (a Ctrl-Z and fg given to another thread once went unheard), and the readers' and
    the store's system calls are not interrupted."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARDED_SIGNALS, signal.SIGCHLD})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _forward(proc: subprocess.Popen[bytes], sig: int) -> None:
    # To the whole process group the command leads (its session's first), as a terminal
    # would send it.
    with contextlib.suppress(ProcessLookupError, PermissionError):  # it has just exited
        os.killpg(proc.pid, sig)


def _end_session(proc: subprocess.Popen[bytes], sig: int) -> None:
    """``sig`` to every process group of the command's session, the dyno's: those a command
    with job control of its own (a shell's ``set -m``) started are the dyno's too."""
    for group in _session_groups(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def _await_session(session: int, deadline: float) -> None:
    """Until no process is left in ``session``, or ``deadline``."""
    while time.monotonic() < deadline and any(map(_group_alive, _session_groups(session))):
        time.sleep(0.02)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, though not herolog's to signal
        pass
    return True


def _session_groups(session: int) -> set[int]:
    """The process groups in ``session``, as /proc lists them, of its processes that have
    not exited (a zombie waits only for its parent); without /proc (not Linux), its
    leader's."""
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return {session}
    groups = set()
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:  # gone meanwhile
            continue
        # After the command name, which may hold anything: state ppid pgrp session ...
        fields = stat[stat.rfind(b")") + 1 :].split()
        if len(fields) > 3 and fields[0] != b"Z" and int(fields[3]) == session:
            groups.add(int(fields[2]))
    return groups


class _Ended:
    """Tells the readers that the command has exited, waking them from their wait."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()
        self.deadline = 0.0
        """Until when to read what the command's background processes write."""

    def now(self) -> None:
        self.deadline = time.monotonic() + EXIT_GRACE_S
        os.write(self._write, b"x")  # never read: every reader's poll sees it

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._write)


def _pump(
    pipe: IO[bytes] | None,
    echo: IO[bytes] | None,
    dyno: str,
    pri: int,
    flusher: _Flusher,
    ended: _Ended,
) -> None:
    """One of the command's pipes: to the terminal as it comes (a prompt or a progress bar
    without its newline too), and to the store line by line. Once the command has exited,
    what it wrote is read to the end, then what is still coming until the grace is over."""
    assert pipe is not None
    fd = pipe.fileno()
    waiting = select.poll()
    waiting.register(fd, select.POLLIN)
    waiting.register(ended.fd, select.POLLIN)
    rest = b""
    cut = False
    """Whether pieces of the line in ``rest`` have been stored already."""
    read = 0
    written: int | None = None
    """How much the command had written by the time it exited, once that is known."""
    while True:
        if written is None:
            if any(ready == ended.fd for ready, _ in waiting.poll()):
                written = read + _unread(fd)
                waiting.unregister(ended.fd)
                continue
        elif read >= written:
            remaining = ended.deadline - time.monotonic()
            if remaining <= 0 or not waiting.poll(remaining * 1000):
                break
        data = os.read(fd, READ_SIZE)
        if not data:
            break
        read += len(data)
        if echo is not None:
            try:
                echo.write(data)
                echo.flush()
            except OSError:  # herolog's own output was closed (`| head`): keep storing
                write_nowhere(echo)
                echo = None
        *lines, rest = (rest + data).split(b"\n")
        for raw in lines:
            # \r\n ends a line as \n does, as Heroku's log router splits a dyno's output
            line = raw.rstrip(b"\r")
            if line or not cut:  # not all stored already, up to its \r
                pieces, last = _pieces(line)
                _store([*pieces, last], dyno, pri, flusher)
            cut = False
        pieces, rest = _pieces(rest)  # no newline in sight: stored in pieces as it comes
        _store(pieces, dyno, pri, flusher)
        cut = cut or bool(pieces)
    if rest := rest.rstrip(b"\r"):
        _store([rest], dyno, pri, flusher)
    pipe.close()


def _unread(fd: int) -> int:
    """How many bytes wait in the pipe ``fd``."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), sys.byteorder)


def _store(pieces: list[bytes], dyno: str, pri: int, flusher: _Flusher) -> None:
    for piece in pieces:
        flusher.put(own_line("app", dyno, piece.decode("utf-8", "replace"), pri))


def _pieces(raw: bytes) -> tuple[list[bytes], bytes]:
    """``raw`` cut into pieces of MAX_LINE bytes (never inside a UTF-8 character): the
    whole pieces, and what is left after them, MAX_LINE bytes at most."""
    pieces = []
    while len(raw) > MAX_LINE:
        cut = MAX_LINE
        while cut > MAX_LINE - 4 and 0x80 <= raw[cut] < 0xC0:  # a continuation byte
            cut -= 1
        if cut == MAX_LINE - 4:  # not UTF-8 here: cut anywhere
            cut = MAX_LINE
        pieces.append(raw[:cut])
        raw = raw[cut:]
    return pieces, raw
