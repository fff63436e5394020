from __future__ import annotations

import os
import shlex
import sqlite3
import sys
from typing import TYPE_CHECKING, BinaryIO, cast

import click

from herolog.cli import Interrupted
from herolog.cli.options import app_option, checked_app

if TYPE_CHECKING:
    from herolog.store import SQLiteStore


@click.command("import")
@click.argument("file", type=click.File("rb"), metavar="FILE|-")
@app_option("The app the lines belong to (or $HEROLOG_APP).", default="default")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "heroku", "logplex", "syslog", "json"]),
    default="auto",
    show_default=True,
    help="What FILE holds: `heroku logs` output, a Logplex body, syslog lines, or"
    " `herolog logs --json` output.",
)
def import_command(file: BinaryIO, app: str, fmt: str) -> None:
    """Load saved logs into the store.

    Reads what `heroku logs` printed, a raw Logplex (application/logplex-1) body,
    newline-separated syslog (RFC 5424 or RFC 3164), or what `herolog logs --json` printed,
    gzip-compressed or not; the format is detected unless --format says it. From a pipe,
    lines are stored as they come.

    \b
    heroku logs -a demo -n 1500 > demo.log && herolog import demo.log -a demo
    herolog import - -a demo < drain-body.bin
    heroku logs -a demo --tail | herolog import - -a demo
    """
    from herolog.cli import lock_waits_said
    from herolog.store import open_store

    app = checked_app(app)
    name = getattr(file, "name", "-")
    # A stdin closed at the start is /dev/null opened in its place, named by its descriptor.
    if name in ("-", "<stdin>") or not isinstance(name, str):
        name = "standard input"
    from herolog import config

    path = config.store_path()
    with open_store(path, lock_wait=lock_waits_said(path, "stops the import")) as store:
        _import(store, file, name, app, fmt)


def _import(store: SQLiteStore, file: BinaryIO, name: str, app: str, fmt: str) -> None:
    """Import ``file`` (called ``name`` in what is said) into ``app`` of ``store``."""
    from herolog.cli import store_failed
    from herolog.importer import (
        Format,
        ImportFailed,
        ImportInterrupted,
        NotRead,
        import_stream,
        imported_before,
    )
    from herolog.render import counted

    # What the app holds: an import past the history takes the place of its oldest lines.
    had = min(next((x.lines for x in store.apps() if x.name == app), 0), store.history)
    size = _size(file)
    chosen = None if fmt == "auto" else cast(Format, fmt)
    try:
        if sys.stderr.isatty() and size is not None and size > 4 << 20:
            from herolog.cli.progress import bytes_progress

            with bytes_progress(size, f"Importing {name}") as advance:
                result = import_stream(file, store, app, chosen, advance)
        else:
            result = import_stream(file, store, app, chosen)
    except NotRead as error:
        if name == "standard input":
            convert = f"... | {error.convert} |"
        else:
            convert = f"{error.convert} {shlex.quote(name)} |"
        raise click.ClickException(
            f"{name}: {error.what}, which herolog import does not read:"
            f" {convert} herolog import - -a {app}"
        ) from None
    except ImportInterrupted as error:
        # Quiet as any Ctrl-C, but for what it stored: the rest can be imported on its own.
        click.echo(f"{name}: {error}", err=True)
        raise Interrupted from None
    except ImportFailed as error:
        _say_cut_off(error.result.cut_off)  # a gzip input cut off in a header, say
        if not isinstance(error.error, sqlite3.DatabaseError):
            raise click.ClickException(f"{name}: {error}") from None
        # The store failed (a full disk): said as any command says it, and what it took.
        message = store_failed(error.error)
        if error.result.lines:
            message += f"; {imported_before(error.result)}"
        raise click.ClickException(message) from None
    if not result.lines:
        # Said plainly: "Imported 0 lines into demo", and then `logs -a demo` saying there
        # is no such app, reads as if the lines had gone somewhere.
        click.echo(f"Nothing imported: {name} holds no log lines.", err=True)
        _say_cut_off(result.cut_off)
        return
    imported = counted(result.lines, "line")
    click.echo(f"Imported {imported} into {app} ({result.format} format).", err=True)
    if result.unknown:
        # Said at once: a file that is not a log (or not in the format detected) would
        # otherwise show up later as a page of unknown[unknown] lines.
        where = ""
        if result.unknown == result.lines:
            some = "All of them are" if result.lines > 1 else "It is"
        else:
            some = f"{result.unknown:,} of them {'is' if result.unknown == 1 else 'are'}"
            at = f"{'frame' if result.format == 'logplex' else 'line'} {result.first_unknown}"
            where = f" ({at} of the input)"
            if result.unknown > 1:
                where = f" (the first at {at} of the input)"
        click.echo(
            f"{some} stored as unknown[unknown], kept whole{where}: {_UNDESCRIBED[result.format]}.",
            err=True,
        )
    if result.not_utf8:
        # Said, as no output of Heroku's or herolog's has such bytes: a file in another
        # encoding, whose characters can still be had whole.
        if result.not_utf8 == 1:
            which = f"Line {result.first_not_utf8} of the input holds"
        else:
            which = f"{result.not_utf8:,} lines of the input hold"
        where = f" (the first is line {result.first_not_utf8})" if result.not_utf8 > 1 else ""
        convert = "iconv -f latin1 -t utf-8"
        if name == "standard input":
            command = f"... | {convert} |"
        elif result.compressed:
            command = f"zcat {shlex.quote(name)} | {convert} |"
        else:
            command = f"{convert} {shlex.quote(name)} |"
        click.echo(
            f"{which} bytes that are not UTF-8, stored as U+FFFD{where}; an input in Latin-1"
            f" imports as it was with: {command} herolog import - -a {app}",
            err=True,
        )
    _say_cut_off(result.cut_off)
    if os.environ.get("HEROLOG_URL"):  # logs, drain and run would use the server
        click.echo(
            f"They are in the local store ({store.path}): herolog import does not send lines"
            " to $HEROLOG_URL; herolog logs reads them with HEROLOG_URL unset.",
            err=True,
        )
    if had + result.lines > store.history:
        if result.lines > store.history:
            not_kept = result.lines - store.history
            gone = (
                "the first of these is not kept"
                if not_kept == 1
                else f"the first {not_kept:,} of these are not kept"
            )
            if had:
                gone += f", nor the line {app} had" if had == 1 else f", nor the {had:,} {app} had"
        else:
            made_room = had + result.lines - store.history
            oldest = "the oldest line" if made_room == 1 else f"the oldest {made_room:,}"
            these = "these" if result.lines > 1 else "it"
            gone = f"{oldest} {app} had made room for {these}"
        click.echo(
            f"The store keeps the newest {counted(store.history, 'line')} per app: {gone};"
            " keep more with: herolog store history N",
            err=True,
        )


def _say_cut_off(piece: str | None) -> None:
    if piece is not None:
        shown = piece if len(piece) <= 80 else f"{piece[:80]}..."
        click.echo(
            f"The input ends in the middle of a line, as a capture cut off does: {shown!r} is"
            " left out.",
            err=True,
        )


def _size(file: BinaryIO) -> int | None:
    try:
        st = os.fstat(file.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if st.st_size > 0 else None


_UNDESCRIBED = {
    "heroku": "no `TIMESTAMP SOURCE[DYNO]:` header, as heroku logs output has",
    "syslog": "not syslog (RFC 5424 or 3164)",
    "logplex": "frames that are not syslog messages (RFC 5424 or 3164)",
    "json": "not herolog logs --json output",
}
"""Why lines of each format end up as unknown[unknown]."""
