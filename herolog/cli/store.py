from __future__ import annotations

import json

import click


@click.command()
@click.option(
    "--json", "json_output", is_flag=True, help="Names, line counts and creation times as JSON."
)
def apps(json_output: bool) -> None:
    """List the apps in the store, one name per line."""
    from herolog import config
    from herolog.store import open_existing

    store = open_existing(config.store_path())
    found = store.apps() if store is not None else []
    if json_output:
        click.echo(json.dumps([app._asdict() for app in found], indent=2))
    else:
        for app in found:
            click.echo(app.name)


@click.group()
def store() -> None:
    """Look at the store, or change how much history it keeps."""


@store.command()
@click.option("--json", "json_output", is_flag=True, help="As a JSON object.")
def info(json_output: bool) -> None:
    """Where the store is, how much it keeps per app, and what it holds."""
    from herolog import config
    from herolog.store import DEFAULT_HISTORY, open_existing

    path = config.store_path()
    opened = open_existing(path)
    found = opened.apps() if opened is not None else []
    details = {
        "path": str(path),
        "exists": opened is not None,
        "history": opened.history if opened is not None else DEFAULT_HISTORY,
        "bytes": opened.disk_size() if opened is not None else 0,
        "apps": [{"name": a.name, "lines": a.lines, "created_at": a.created_at} for a in found],
    }
    if json_output:
        click.echo(json.dumps(details, indent=2))
        return
    click.echo(f"Store:   {path}{'' if opened else ' (not created yet)'}")
    click.echo(f"History: {details['history']:,} lines per app")
    click.echo(f"Size:    {details['bytes']:,} bytes")
    if found:
        width = max(len(a.name) for a in found)
        click.echo("Apps:")
        for a in found:
            click.echo(f"  {a.name:<{width}}  {a.lines:>9,} line{'s' * (a.lines != 1)}")


@store.command(short_help="Show or set how many lines the store keeps per app.")
@click.argument("lines", type=click.IntRange(min=1, max=10_000_000), required=False)
def history(lines: int | None) -> None:
    """Show or set how many lines the store keeps per app (Heroku keeps 1500).

    Lowering it drops the oldest lines of each app at once; the file keeps its size, the
    space kept for the lines to come (the README says how to give it back).

    \b
    herolog store history            print the current setting
    herolog store history 100000     keep 100,000 lines per app
    """
    from herolog import config
    from herolog.store import DEFAULT_HISTORY, open_existing, open_store

    if lines is None:
        existing = open_existing(config.store_path())
        click.echo(existing.history if existing is not None else DEFAULT_HISTORY)
        return
    open_store().set_history(lines)
    click.echo(f"The store keeps {lines:,} lines per app.", err=True)
