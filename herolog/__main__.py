"""The ``herolog`` command's entry point, for the console script and ``python -m herolog``."""

import os
import sys
from pathlib import Path


def main() -> None:
    # Started with a standard stream closed (`herolog logs >&-`): Python leaves it None,
    # which every write would trip over. Reading nothing and writing nowhere is what a
    # shell's own commands do then.
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, Path(os.devnull).open(mode))  # noqa: SIM115 (for good)
    # The imports happen in here so that a Ctrl-C while they load exits quietly too.
    try:
        from herolog.cli import cli

        cli(prog_name="herolog")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
