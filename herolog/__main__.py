"""The ``herolog`` command's entry point, for the console script and ``python -m herolog``."""

import os
import signal
import sys
from pathlib import Path

from herolog.interrupt import die_of_sigint


def main() -> None:
    # A signal mask is inherited across exec, unlike a handler: a parent that blocked
    # signals in the thread that started herolog (a CI runner, a supervisor reading them
    # from a signalfd) would keep a Ctrl-C or a SIGTERM from it for ever, and the SIGCHLD
    # that run's wait wakes on. Nothing blocked, as systemd and tini start processes; a
    # signal ignored (nohup's SIGHUP) stays ignored.
    if hasattr(signal, "pthread_sigmask"):  # not on Windows
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
    # Started with a standard stream closed (`herolog logs >&-`): Python leaves it None,
    # which every write would trip over. Reading nothing and writing nowhere is what a
    # shell's own commands do then.
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, Path(os.devnull).open(mode))  # noqa: SIM115 (for good)
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
