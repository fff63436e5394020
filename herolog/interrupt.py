"""How herolog ends on a Ctrl-C: by the signal, as a shell expects of a command."""

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")


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


def interruptibly(work: Callable[[], T]) -> T:
    """``work()``, in a thread of its own while the main thread sleeps on the signal wakeup
    fd: a Ctrl-C ends it at once whenever it comes. Python runs a signal's handler between
    its own steps, never inside a blocking call: one that comes as ``work`` goes back to a
    blocking read (a quiet tail's) would wait for the read's next bytes; the wakeup fd is
    written to by the handler's C part, and wakes the main thread in any case."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    done: list[T] = []
    failed: list[BaseException] = []
    wakeup_r, wakeup_w = os.pipe()
    ended_r, ended_w = os.pipe()
    for fd in (wakeup_r, wakeup_w):
        os.set_blocking(fd, False)

    def run() -> None:
        try:
            done.append(work())
        except BaseException as error:  # for the main thread to raise
            failed.append(error)
        finally:
            with contextlib.suppress(OSError):  # the main thread has gone on a Ctrl-C
                os.write(ended_w, b".")
            os.close(ended_w)

    previous_fd = signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    try:
        threading.Thread(target=run, name="herolog-work", daemon=True).start()
        waiting = select.poll()
        waiting.register(wakeup_r, select.POLLIN)
        waiting.register(ended_r, select.POLLIN)
        while not any(fd == ended_r for fd, _ in waiting.poll()):
            with contextlib.suppress(BlockingIOError):
                os.read(wakeup_r, 4096)
    finally:
        signal.set_wakeup_fd(previous_fd)
        for fd in (wakeup_r, wakeup_w, ended_r):
            os.close(fd)
    if failed:
        raise failed[0]
    return done[0]
