"""The ``herolog`` command's entry point, for the console script and ``python -m herolog``."""

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn


def main() -> None:
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


if __name__ == "__main__":
    main()
