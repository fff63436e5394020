"""The ``herolog`` command: thin click commands over the library modules."""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sqlite3
import string
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from herolog import __version__
from herolog.interrupt import write_nowhere
from herolog.store import StoreError, unusable_store

_COMMANDS = {
    "logs": ("logs", "logs"),
    "serve": ("serve", "serve"),
    "drain": ("drain", "drain"),
    "run": ("run", "run"),
    "import": ("importer", "import_command"),
    "apps": ("store", "apps"),
    "store": ("store", "store"),
    "completion": ("completion", "completion"),
    "_values": ("completion", "values"),
}
"""Each command's module under herolog.cli and its name there."""

_HEROKU_NAMES = {"drains": "drain", "drains:add": "drain add", "drains:remove": "drain remove"}
"""The heroku CLI's names of commands herolog has under another."""


class HerologGroup(click.Group):
    """The root group: the exits a pipeline and a terminal expect, and no tracebacks.

    Commands are imported when asked for: ``herolog logs`` starts without the modules of
    the seven others (and what they import), which is a tenth of its start-up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name in _COMMANDS or name.startswith("-"):
            return super().resolve_command(ctx, args)
        import difflib

        shown = [command for command in _COMMANDS if not command.startswith("_")]
        meant = _HEROKU_NAMES.get(name) or next(
            iter(difflib.get_close_matches(name, shown, n=1)), None
        )
        if meant is not None:
            ctx.fail(f"No such command {name!r}. Did you mean 'herolog {meant}'?")
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, name = _COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(f"herolog.cli.{module}"), name)
        return command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        given = tuple(args)
        # The root's --help and --version print while its context is made.
        with _exits(given):
            ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[_ARGS] = given  # every subcommand's context shares its meta
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        with _exits(ctx.meta.get(_ARGS, ())):
            result = super().invoke(ctx)
            # Written out here, so that a failing write is reported below rather than by
            # the interpreter's last flush (a traceback-like warning and status 120).
            sys.stdout.flush()
            return result


class Interrupted(Exception):
    """A Ctrl-C, passed out of click (which would print "Aborted!" and exit 1) to the entry
    point, which ends herolog by the SIGINT itself."""


_ARGS = "herolog.args"
"""Where the root's context keeps the command line's arguments."""


@contextlib.contextmanager
def _exits(args: Sequence[str] = ()) -> Iterator[None]:
    try:
        with _errors():
            yield
    except click.ClickException as error:
        # Any error may quote a value as given (-a URL: "has no app named ..."). Final to
        # type checkers only: the subclass (BadParameter, NoSuchOption...) builds the line
        # shown from it.
        error.message = _without_secrets(error.message, args)  # type: ignore[misc]
        # Shown here rather than by click, whose own showing of it to a stderr that has no
        # reader left (`herolog logs -a x 2>&1 | true`) is a traceback-like warning and
        # status 120 from the interpreter's last flush, in place of the error's status.
        try:
            error.show()
        except BrokenPipeError:
            write_nowhere(sys.stderr)
        raise click.exceptions.Exit(error.exit_code) from None


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError as error:
        # `herolog`, `herolog store`: help asked for, as `heroku` alone asks, not a mistake.
        with _exits():  # into a full disk or a closed pipe, as any output
            click.echo(error.ctx.get_help(), color=error.ctx.color)
        raise click.exceptions.Exit(0) from None
    except KeyboardInterrupt:
        raise Interrupted from None
    except BrokenPipeError:
        # `herolog logs | head`: the reader is done, which is not an error.
        write_nowhere(sys.stdout)
        raise click.exceptions.Exit(0) from None
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    except sqlite3.DatabaseError as error:
        raise click.ClickException(store_failed(error)) from None
    except OSError as error:
        # Files herolog opens are reported where it opens them, with their names; these
        # errors without a name come from writing the output (`> /dev/full`, a full disk,
        # a terminal that has gone, `1<file`: an output open only for reading).
        if error.filename is not None or error.errno not in _OUTPUT_ERRORS:
            raise
        write_nowhere(sys.stdout)
        raise click.ClickException(f"cannot write the output: {error.strerror}") from None


def _without_secrets(message: str, args: Sequence[str]) -> str:
    """``message`` with the credentials of each URL among ``args`` masked. click's usage
    errors quote arguments as they were given (an extra one, a subcommand it does not know,
    an option's bad value), and a drain URL's password would go from there into the logs of
    the script, CI job or cloud-init run that gave it."""
    from herolog.drains import mask_loosely

    # An option's value may come from the environment too ($HEROLOG_APP, $HEROLOG_URL).
    given = [*args, *(v for k, v in os.environ.items() if k.startswith("HEROLOG_"))]
    values = set(given)
    for arg in args:
        if arg.startswith("--"):
            values.add(arg.partition("=")[2])  # --app=VALUE
        elif arg.startswith("-"):
            values.add(arg[2:])  # -aVALUE
            if "://" in arg:  # in a group of flags, -taVALUE: the value follows any letter
                flags = len(arg) - len(arg[1:].lstrip(string.ascii_letters))
                values.update(arg[i:] for i in range(3, flags + 1))
    for value in sorted(values, key=len, reverse=True):
        if "://" not in value:  # not a URL: a --grep pattern holding "@", say
            continue
        masked = mask_loosely(value)
        if masked != value:
            for form in {value, repr(value)[1:-1]}:  # click quotes some with repr
                message = message.replace(form, masked)
    return message


_OUTPUT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EBADF}


def lock_waits_said(path: object, then: str) -> Callable[[float], None]:
    """A store's lock_wait that says once a wait, when a wait for another process's write
    lock (an import, a store forget, the sqlite3 shell's BEGIN IMMEDIATE) has lasted
    LOCK_WAIT_SAID_AFTER_S, that the command waits up to BUSY_TIMEOUT_S and what a Ctrl-C
    does (``then``): it would otherwise sit silent meanwhile, looking stuck. Once a wait: an
    import of a live tail may meet several."""
    from herolog.store import BUSY_TIMEOUT_S, LOCK_WAIT_SAID_AFTER_S

    message = (
        f"Another process holds the store's write lock ({path}): waiting up to"
        f" {BUSY_TIMEOUT_S:g} s for it; Ctrl-C {then}."
    )
    last = [0.0]

    def waiting(seconds: float) -> None:
        before = last[0] if seconds >= last[0] else 0.0  # less: a wait of its own
        if before < LOCK_WAIT_SAID_AFTER_S <= seconds:
            click.echo(message, err=True)
        last[0] = seconds

    return waiting


def store_failed(error: sqlite3.DatabaseError) -> str:
    """One line for a store that fails after opening: a page deep in it can be corrupt."""
    from herolog import config

    path = config.store_path()
    if isinstance(error, sqlite3.OperationalError):  # read-only, full, locked: not broken
        return f"cannot use the store {path}: {error}"
    return unusable_store(path, error)


@click.group(cls=HerologGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="herolog")
def cli() -> None:
    """heroku logs for logs you host yourself.

    \b
    herolog logs --tail              follow every app's logs
    herolog logs -a demo -n 500      the last 500 lines of one app
    herolog import saved.log -a demo bring saved `heroku logs` output in

    Files live in $HEROLOG_HOME (default: the platform's user data directory).
    """
