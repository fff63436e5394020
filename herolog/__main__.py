"""The ``herolog`` command's entry point, for the console script and ``python -m herolog``."""

import sys


def main() -> None:
    # The imports happen in here so that a Ctrl-C while they load exits quietly too.
    try:
        from herolog.cli import cli

        cli(prog_name="herolog")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
