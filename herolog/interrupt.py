"""How herolog ends: on a Ctrl-C by the signal, as a shell expects of a command, and
quietly when its output has gone."""

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, NoReturn, TypeVar

T = TypeVar("T")

STOP_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""What serve stops on, and its store writer ignores."""


def write_nowhere(stream: IO[Any]) -> None:
    """Point ``stream`` at /dev/null once a write to it has failed (its reader gone, a full
    disk): what its buffer still holds would fail again in the interpreter's last flush,
    which says 'Exception ignored' and exits 120 in place of herolog's own status."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)


class OrNowhere:
    """A text stream that a failed write (its reader gone, a full disk) points at /dev/null
    (:func:`write_nowhere`) rather than raising: serve's stderr, where a line that nobody
    can read must not end what serve was doing as it said it."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            write_nowhere(self._stream)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            write_nowhere(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def die_of_sigint() -> NoReturn:
    """End as a Ctrl-C ends GNU tail or the heroku CLI: by the signal, quietly. A shell
    running herolog in a script stops the script then; an exit with status 130 would tell
    it that herolog handled the Ctrl-C, and it would go on. ``$?`` is 130 all the same."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(130)  # only if SIGINT is blocked: nothing else is left to do


class Wakeup:
    """Sleeps until a signal Python handles comes, or a watched fd is readable.

    Python runs a signal's handler between its own steps, never inside a blocking call: one
    that comes just before a blocking wait (waitpid, a quiet stream's read) would wait for
    the wait's end. The handler's C part writes to the signal wakeup fd at once, which this
    sleeps on, so the handler runs as soon as the sleep returns."""

    def __init__(self, read_fd: int) -> None:
        self._read_fd = read_fd
        self._waiting = select.poll()
        self._waiting.register(read_fd, select.POLLIN)

    def watch(self, fd: int) -> None:
        self._waiting.register(fd, select.POLLIN)

    def sleep(self) -> set[int]:
        """The watched fds that are readable (none when a signal woke it)."""
        ready = {fd for fd, _ in self._waiting.poll()}
        if self._read_fd in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._read_fd, 4096)
        return ready - {self._read_fd}


@contextlib.contextmanager
def woken_by_signals() -> Iterator[Wakeup]:
    """A :class:`Wakeup` while inside, in the main thread (where Python runs handlers)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    try:
        yield Wakeup(read_fd)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)


@contextlib.contextmanager
def stops_held() -> Iterator[None]:
    """:data:`STOP_SIGNALS` held (blocked in this thread) while inside, for whoever installs
    their handlers to let through (``release_stops``); any still held come as it leaves.

    A stop that comes while a server is still starting (Python importing it, binding its
    ports) then ends it cleanly, as it would a moment later, instead of killing it; and a
    process started inside starts with them blocked (serve's store writer, until it ignores
    them)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class StopCame(Exception):
    """A stop that :func:`stops_held` held came while :func:`unless_stopped` waited."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def unless_stopped(work: Callable[[], T]) -> T:
    """``work()``, a wait that may last for ever (the open and the read of a FIFO that no
    one writes yet, a terminal), ended by a stop that :func:`stops_held` holds: StopCame.
    Held, a Ctrl-C or systemd's SIGTERM did nothing, and only SIGKILL ended it. In a thread
    of its own (which starts with them held too) while this one waits for them."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ()) if _can_wait() else set()
    # Not one that is ignored (nohup's SIGHUP), which the kernel keeps pending while held,
    # nor a SIGHUP with no terminal to have hung up (systemd's reload): serve goes on, as
    # it does once it runs, which then says so. Either stays pending for serve's handlers.
    held = {s for s in STOP_SIGNALS & blocked if signal.getsignal(s) != signal.SIG_IGN}
    hangup = getattr(signal, "SIGHUP", None)
    if hangup in held and not has_terminal():
        held.discard(hangup)
    if not held:
        return work()
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as error:  # for this thread to raise
            failed.append(error)

    worker = threading.Thread(target=run, name="herolog-read", daemon=True)
    worker.start()
    while worker.is_alive():
        came = signal.sigtimedwait(held, 0.05)
        if came is not None:
            raise StopCame(came.si_signo)
    if failed:
        raise failed[0]
    return done[0]


def has_terminal() -> bool:
    """Whether this process has a controlling terminal, one that can hang up."""
    try:
        os.close(os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _can_wait() -> bool:
    return hasattr(signal, "sigtimedwait") and threading.current_thread() is threading.main_thread()


def release_stops(signals: Iterable[int]) -> None:
    """Let held ``signals`` through, to the handlers just installed for them."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def interruptibly(work: Callable[[], T]) -> T:
    """``work()``, in a thread of its own while the main thread sleeps on the signal wakeup
    fd (see :class:`Wakeup`): a Ctrl-C ends it at once whenever it comes, where it would
    wait for a quiet tail's next bytes."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    done: list[T] = []
    failed: list[BaseException] = []
    ended_r, ended_w = os.pipe()

    def run() -> None:
        try:
            done.append(work())
        except BaseException as error:  # for the main thread to raise
            failed.append(error)
        finally:
            with contextlib.suppress(OSError):  # the main thread has gone on a Ctrl-C
                os.write(ended_w, b".")
            os.close(ended_w)

    try:
        with woken_by_signals() as wakeup:
            wakeup.watch(ended_r)
            threading.Thread(target=run, name="herolog-work", daemon=True).start()
            while ended_r not in wakeup.sleep():
                pass
    finally:
        os.close(ended_r)
    if failed:
        raise failed[0]
    return done[0]


def _python_raises_ctrl_c() -> bool:
    """Whether a Ctrl-C raises KeyboardInterrupt here: the main thread, Python's own handler."""
    return (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )


class _HeldBack:
    caught: list[int] | None = None
    """The Ctrl-Cs the ctrl_c_held_back block being run holds back; None outside one."""


_HELD_BACK = _HeldBack()


@contextlib.contextmanager
def ctrl_c_held_back() -> Iterator[None]:
    """A Ctrl-C during the block raises KeyboardInterrupt at its end (between a commit and
    its count it would leave the count short of what the store holds), or in the store's
    wait for its write lock, where nothing is written yet (see :func:`ctrl_c_held`)."""
    if not _python_raises_ctrl_c():
        yield
        return
    caught: list[int] = []
    _HELD_BACK.caught = caught
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _HELD_BACK.caught = None
    if caught:
        raise KeyboardInterrupt


def ctrl_c_ends_waits() -> bool:
    """Whether a Ctrl-C raises KeyboardInterrupt here: in the main thread, by Python's own
    handler, or held back (then :func:`ctrl_c_held` says it came)."""
    held = _HELD_BACK.caught is not None and threading.current_thread() is threading.main_thread()
    return held or _python_raises_ctrl_c()


def ctrl_c_held() -> bool:
    """Whether a Ctrl-C came that ctrl_c_held_back holds back."""
    return bool(_HELD_BACK.caught)


@contextlib.contextmanager
def ctrl_c_recorded(raised: list[BaseException]) -> Iterator[None]:
    """A Ctrl-C during the block also has its KeyboardInterrupt put in ``raised``, for code
    that calls Python from C which drops what the call raises (an SQL function: a Ctrl-C
    that comes between two of its calls is raised as the next begins, before any handler
    of its own can see it). Only where Python's own handler would raise it."""
    if not _python_raises_ctrl_c():
        yield
        return

    def interrupted(signum: int, frame: Any) -> NoReturn:
        error = KeyboardInterrupt()
        raised.append(error)
        raise error

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
