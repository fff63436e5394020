"""The ``herolog`` command's entry point, for the console script and ``python -m herolog``."""

import os
import sys
from pathlib import Path

from herolog.interrupt import die_of_sigint


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


if __name__ == "__main__":
    main()
