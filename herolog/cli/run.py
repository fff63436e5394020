from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING

import click

from herolog.cli import Interrupted, lock_waits_said
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
        sink = _LocalSink(app)
        exited = run_dyno(
            command, dyno, sink, echo=not quiet, on_ended=sink.ended, give_up=sink.give_up
        )
        # Not on the way out of an exception (herolog ended at once by a second Ctrl-C):
        # the flusher thread may be storing a batch with the store then.
        sink.close()
    if signal.SIGINT in (exited.died_of, exited.stopped_by):
        # A Ctrl-C: herolog dies of it as the command did (and as a shell would), so that
        # a shell running herolog stops its script too; so it does of one that came while
        # the lines of a command that had exited were being sent.
        raise Interrupted
    click.get_current_context().exit(exited.status)


class _LocalSink:
    """The lines' way into the local store, from run's flusher thread, which no Ctrl-C
    reaches: while another process holds the store's write lock (an import, a store forget,
    the sqlite3 shell's BEGIN IMMEDIATE) each batch waits up to BUSY_TIMEOUT_S, the command
    running on. Once it has exited, herolog is what the user waits for: it says so, waits up
    to BUSY_TIMEOUT_S from then (not that again for each batch left, nor less for one that
    was waiting already), and gives up at a Ctrl-C (give_up)."""

    def __init__(self, app: str) -> None:
        from herolog import config
        from herolog.store import open_store

        self._app = app
        path = config.store_path()
        self._store = open_store(path, lock_wait=lock_waits_said(path, "runs nothing"))
        self._store.lock_wait = self._waiting
        self._ended: float | None = None
        self._given_up = False
        self._said = False

    def __call__(self, lines: list[LogLine]) -> None:
        import sqlite3

        from herolog.cli import store_failed
        from herolog.store import Batch, StoreError

        store = self._store
        if store.replaced():  # lines committed to the old file go where nothing reads them
            raise StoreError(f"the store {store.path} was moved or deleted while the command ran")
        while True:
            try:
                store.append([Batch(self._app, lines)])
                return
            except sqlite3.DatabaseError as error:  # say which file, and what to do about it
                busy = getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                # A wait that began before the command ended has the time after it too:
                # _waiting ends the next one then, or at a Ctrl-C.
                if not busy or not self._waits_on():
                    raise StoreError(store_failed(error)) from None

    def ended(self) -> None:
        self._ended = time.monotonic()

    def close(self) -> None:
        self._store.close()

    def give_up(self) -> None:
        self._given_up = True

    def _waits_on(self) -> bool:
        """Whether a wait for the lock goes on past its own BUSY_TIMEOUT_S: once the command
        has ended, until BUSY_TIMEOUT_S after that, unless given up."""
        from herolog.store import BUSY_TIMEOUT_S

        return (
            self._ended is not None
            and not self._given_up
            and time.monotonic() - self._ended < BUSY_TIMEOUT_S
        )

    def _waiting(self, seconds: float) -> None:
        """The store's lock_wait: between the steps of a wait for the write lock."""
        from herolog.interrupt import write_nowhere
        from herolog.store import BUSY_TIMEOUT_S, LOCK_WAIT_SAID_AFTER_S, StoreError

        path = self._store.path
        if self._given_up:
            raise StoreError(
                f"gave up waiting for the write lock of the store {path}, which another"
                " process holds"
            )
        if self._ended is None:  # the command runs on meanwhile, its lines waiting
            return
        if time.monotonic() - self._ended >= BUSY_TIMEOUT_S:
            raise StoreError(f"cannot use the store {path}: database is locked")
        if seconds >= LOCK_WAIT_SAID_AFTER_S and not self._said:
            self._said = True
            try:
                sys.stderr.write(
                    f"herolog run: another process holds the store's write lock ({path}):"
                    f" waiting up to {BUSY_TIMEOUT_S:g} s for it to store the command's last"
                    " lines; Ctrl-C gives up on them\n"
                )
                sys.stderr.flush()
            except OSError:  # a stderr gone (2>&1 | head) costs no lines: what it says goes
                write_nowhere(sys.stderr)
