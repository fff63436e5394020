from __future__ import annotations

import json
import os
from pathlib import Path

import click

from herolog.cli.options import Integer, NameType, came_from_the_environment, server_option


def local_only(command: str, path: Path) -> None:
    """Say that ``command`` works on the local store when $HEROLOG_URL is set: apps, logs,
    drain and run follow it to a server, and what this one shows or does must not pass for
    the server's. First, before anything is done or asked."""
    if os.environ.get("HEROLOG_URL"):
        click.echo(
            f"herolog {command} works on the local store ({path}), not on the server of"
            " $HEROLOG_URL (apps, logs, drain and run --server use a server)",
            err=True,
        )


@click.command(short_help="List the apps in the store (or on a server), one a line.")
@click.option(
    "--json", "json_output", is_flag=True, help="Names, line counts and creation times as JSON."
)
@server_option(
    "List this herolog serve's apps (or $HEROLOG_URL's; API key from $HEROLOG_API_KEY), not"
    " the store's."
)
def apps(json_output: bool, server: str | None) -> None:
    """List the apps in the store (or on a server), one name per line."""
    from herolog import config
    from herolog.store import AppInfo, SQLiteStore, read_existing

    found: list[AppInfo]
    if server:
        from herolog.drains import scrub
        from herolog.remote import RemoteError, list_apps

        try:
            found = list_apps(server, os.environ.get("HEROLOG_API_KEY") or None)
        except RemoteError as error:
            message = scrub(str(error), server)  # its password
            raise click.ClickException(message + came_from_the_environment("server")) from None
    else:
        found = read_existing(config.store_path(), SQLiteStore.apps, [])
    if json_output:
        click.echo(json.dumps([app._asdict() for app in found], indent=2))
    else:
        for app in found:
            click.echo(app.name)


@click.group()
def store() -> None:
    """Look at the store, set how much it keeps, or forget an app."""


@store.command()
@click.option("--json", "json_output", is_flag=True, help="As a JSON object.")
def info(json_output: bool) -> None:
    """Where the store is, how much it keeps per app, and what it holds."""
    from herolog import config
    from herolog.render import counted
    from herolog.store import DEFAULT_HISTORY, open_existing

    path = config.store_path()
    local_only("store info", path)
    opened = open_existing(path)
    found, history, size = [], DEFAULT_HISTORY, 0
    if opened is not None:
        with opened:
            found, history = opened.apps(), opened.history
        # Measured once closed: this command's own -wal and -shm are gone then, unless
        # another process (serve) holds the store open and they are part of its size.
        size = opened.disk_size()
    details = {
        "path": str(path),
        "exists": opened is not None,
        "history": history,
        "bytes": size,
        "apps": [{"name": a.name, "lines": a.lines, "created_at": a.created_at} for a in found],
    }
    if json_output:
        click.echo(json.dumps(details, indent=2))
        return
    click.echo(f"Store:   {path}{'' if opened else ' (not created yet)'}")
    click.echo(f"History: {counted(history, 'line')} per app")
    click.echo(f"Size:    {details['bytes']:,} bytes")
    if found:
        width = max(len(a.name) for a in found)
        click.echo("Apps:")
        for a in found:
            click.echo(f"  {a.name:<{width}}  {a.lines:>9,} line{'s' * (a.lines != 1)}")


@store.command(short_help="Show or set how many lines the store keeps per app.")
@click.argument("lines", type=Integer(min=1, max=10_000_000), required=False)
def history(lines: int | None) -> None:
    """Show or set how many lines the store keeps per app (Heroku keeps 1500).

    Lowering it drops the oldest lines of each app at once; the file keeps its size, the
    space kept for the lines to come (the README says how to give it back).

    \b
    herolog store history            print the current setting
    herolog store history 100000     keep 100,000 lines per app
    """
    from herolog import config
    from herolog.render import counted
    from herolog.store import DEFAULT_HISTORY, open_store, read_existing

    path = config.store_path()
    local_only("store history", path)
    if lines is None:
        click.echo(read_existing(path, lambda store: store.history, DEFAULT_HISTORY))
        return
    from herolog.cli import lock_waits_said

    with open_store(path, lock_wait=lock_waits_said(path, "leaves the history as it was")) as store:
        store.set_history(lines)
    click.echo(f"The store keeps {counted(lines, 'line')} per app.", err=True)


@store.command(short_help="Delete an app and all of its lines from the store.")
@click.argument("app", type=NameType("an app name"))
@click.option("--confirm", metavar="APP", help="The app's name again, for scripts: no question.")
def forget(app: str, confirm: str | None) -> None:
    """Delete an app and all of its lines from the store, as heroku apps:destroy does.

    An app with drains is kept until they are removed (herolog drain remove). Lines sent to
    the app after this make it anew.

    \b
    herolog store forget staging                    asks for the name again
    herolog store forget staging --confirm staging  for scripts
    """
    import sys

    from herolog import config
    from herolog.cli import lock_waits_said
    from herolog.drains import find_app
    from herolog.render import counted
    from herolog.store import HasDrains, open_store, read_existing

    path = config.store_path()
    local_only("store forget", path)
    info = read_existing(path, lambda store: find_app(store, app), None)
    if info is None:
        raise click.ClickException(f"the store {path} has no app named {app!r}")
    name = info.name
    if confirm is None:
        if not sys.stdin.isatty():
            raise click.ClickException(
                f"forgetting {name} deletes its {counted(info.lines, 'line')}: run again with"
                f" --confirm {name}"
            )
        lines = counted(info.lines, "line")
        click.echo(f"This deletes {name} and its {lines} from {path}.", err=True)
        confirm = click.prompt(f"To go on, type {name}", err=True, default="", show_default=False)
    if confirm != name:
        raise click.ClickException(f"{confirm!r} is not {name!r}: nothing deleted")
    try:
        with open_store(path, lock_wait=lock_waits_said(path, f"leaves {name} as it was")) as store:
            deleted = store.forget_app(name)
    except HasDrains as error:
        them = (
            "a drain forwards it (remove it"
            if error.drains == 1
            else f"{error.drains} drains forward it (remove them"
        )
        raise click.ClickException(
            f"{name} is kept: {them} first: herolog drain list -a {name})"
        ) from None
    if deleted is None:  # another process forgot it meanwhile
        raise click.ClickException(f"the store {path} has no app named {name!r}")
    click.echo(f"Forgot {name} and its {counted(deleted, 'line')}.", err=True)
