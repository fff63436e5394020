from __future__ import annotations

import click

from herolog.cli.options import app_option


@click.command(context_settings={"allow_interspersed_args": False})
@app_option("The app the lines belong to (or $HEROLOG_APP).", default="default")
@click.option(
    "-d",
    "--dyno",
    default="run.1",
    show_default=True,
    metavar="DYNO",
    help="The dyno name: web.1, worker.2, ...",
)
@click.option("-q", "--quiet", is_flag=True, help="Store the output without also printing it.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(app: str, dyno: str, quiet: bool, command: tuple[str, ...]) -> None:
    """Run a command as a local dyno, storing its output as app[DYNO] lines.

    Exits with the command's status; signals are passed on to it.

    \b
    herolog run -d web.1 -- python -m http.server      # then, elsewhere: herolog logs -t
    herolog run -a demo -d worker.1 -- ./worker.sh
    """
    import sqlite3

    from herolog.cli import store_failed
    from herolog.parser import LogLine
    from herolog.run import run_dyno
    from herolog.store import Batch, StoreError, open_store

    store = open_store()

    def append(lines: list[LogLine]) -> None:
        try:
            store.append([Batch(app, lines)])
        except sqlite3.DatabaseError as error:  # say which file, and what to do about it
            raise StoreError(store_failed(error)) from None

    status = run_dyno(command, dyno, append, echo=not quiet)
    click.get_current_context().exit(status)
