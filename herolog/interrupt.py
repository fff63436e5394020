"""How herolog ends on a Ctrl-C: by the signal, as a shell expects of a command."""

import contextlib
import os
import signal
import sys
from typing import NoReturn


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
