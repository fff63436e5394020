"""The ``herolog`` command's entry point, for the console script and ``python -m herolog``."""

import os
import signal
import sys

from herolog.interrupt import STOP_SIGNALS, die_of_sigint


def main() -> None:
    # A signal mask is inherited across exec, unlike a handler: a parent that blocked
    # signals in the thread that started herolog (a CI runner, a supervisor reading them
    # from a signalfd) would keep a Ctrl-C or a SIGTERM from it for ever, and the SIGCHLD
    # that run's wait wakes on. Nothing blocked, as systemd and tini start processes; a
    # signal ignored (nohup's SIGHUP) stays ignored. But serve's stops, held from here
    # until its handlers let them through: a SIGTERM while the CLI's imports ran (0.1 s: a
    # script's trap stopping the serve it had just started) killed it, status 143.
    if hasattr(signal, "pthread_sigmask"):  # not on Windows
        serving = sys.argv[1:2] == ["serve"]  # the root group has no options to come first
        signal.pthread_sigmask(signal.SIG_SETMASK, STOP_SIGNALS if serving else ())
    # Started with a standard stream closed (`herolog logs >&-`): Python leaves it None,
    # which every write would trip over. A closed stdin reads nothing and a closed stderr
    # takes the errors nowhere, but output written to a closed stdout fails with EBADF,
    # as cat's and ls's does (`write error: Bad file descriptor`), not an empty success:
    # a read-only /dev/null, as `1<file` leaves it. Each takes its own descriptor, so that
    # no file opened later (the store) lands on it.
    for name, flags, mode in (
        ("stdin", os.O_RDONLY, "r"),
        ("stdout", os.O_RDONLY, "w"),
        ("stderr", os.O_WRONLY, "w"),
    ):
        if getattr(sys, name) is None:
            setattr(sys, name, os.fdopen(os.open(os.devnull, flags), mode))
    # The imports happen in here so that a Ctrl-C while they load ends quietly too.
    try:
        from herolog.cli import Interrupted, cli
    except KeyboardInterrupt:
        die_of_sigint()
    try:
        cli(prog_name="herolog")
    except (KeyboardInterrupt, Interrupted):
        die_of_sigint()


if __name__ == "__main__":
    main()
