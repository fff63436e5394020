from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from herolog.cli import Interrupted
from herolog.cli.options import (
    app_option,
    came_from_the_environment,
    checked_app,
    checked_dyno,
    server_option,
)

if TYPE_CHECKING:
    from herolog.parser import LogLine


@click.command(
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command as a local dyno, storing its output.",
)
@app_option("The app the lines belong to (or $HEROLOG_APP).", default="default")
@click.option(
    "-d",
    "--dyno",
    default="run.1",
    show_default=True,
    metavar="DYNO",
    callback=checked_dyno,
    help="The dyno name: web.1, worker.2, ...",
)
@click.option("-q", "--quiet", is_flag=True, help="Store the output without also printing it.")
@server_option(
    "Send the lines to this herolog serve's drain intake (or $HEROLOG_URL's; credentials of"
    " its --auth in the URL), not to the local store."
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(app: str, dyno: str, quiet: bool, server: str | None, command: tuple[str, ...]) -> None:
    """Run a command as a local dyno, storing its output as app[DYNO] lines.

    Exits with the command's status; signals are passed on to it.

    \b
    herolog run -d web.1 -- python -m http.server      # then, elsewhere: herolog logs -t
    herolog run -a demo -d worker.1 -- ./worker.sh
    herolog run --server https://drain:s3cret@logs.example.com:8514 -a demo -- ./worker.sh
    """
    from herolog.run import run_dyno

    app = checked_app(app)
    if server:
        from herolog.remote import IntakeSender, RemoteError

        try:
            sender = IntakeSender(server, app)
        except RemoteError as error:  # a proxy it cannot use
            raise click.ClickException(str(error) + came_from_the_environment("server")) from None
        try:
            sender.check()  # a server that will not take the lines: before the command starts
            exited = run_dyno(command, dyno, sender.send, echo=not quiet, on_stopped=sender.hurry)
        except RemoteError as error:
            raise click.ClickException(str(error) + came_from_the_environment("server")) from None
        finally:
            sender.close()
    else:
        exited = run_dyno(command, dyno, _local_sink(app), echo=not quiet)
    if signal.SIGINT in (exited.died_of, exited.stopped_by):
        # A Ctrl-C: herolog dies of it as the command did (and as a shell would), so that
        # a shell running herolog stops its script too; so it does of one that came while
        # the lines of a command that had exited were being sent.
        raise Interrupted
    click.get_current_context().exit(exited.status)


def _local_sink(app: str) -> Callable[[list[LogLine]], None]:
    import sqlite3

    from herolog.cli import store_failed
    from herolog.store import Batch, StoreError, open_store

    store = open_store()

    def append(lines: list[LogLine]) -> None:
        if store.replaced():  # lines committed to the old file go where nothing reads them
            raise StoreError(f"the store {store.path} was moved or deleted while the command ran")
        try:
            store.append([Batch(app, lines)])
        except sqlite3.DatabaseError as error:  # say which file, and what to do about it
            raise StoreError(store_failed(error)) from None

    return append
