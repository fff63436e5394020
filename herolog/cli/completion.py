from __future__ import annotations

import click

from herolog.cli.options import app_option
from herolog.completion import SHELLS, VALUE_KINDS


@click.command(short_help="Print the completion script for SHELL: bash, zsh or fish.")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (see the README to install it).

    \b
    dir="${XDG_DATA_HOME:-$HOME/.local/share}/bash-completion/completions"
    mkdir -p "$dir" && herolog completion bash > "$dir/herolog"
    mkdir -p ~/.zfunc && herolog completion zsh > ~/.zfunc/_herolog
    # in fish:
    mkdir -p $__fish_config_dir/completions
    herolog completion fish > $__fish_config_dir/completions/herolog.fish
    """
    from herolog.cli import cli
    from herolog.completion import generate

    click.echo(generate(cli, shell), nl=False)


@click.command(hidden=True)
@click.argument("kind", type=click.Choice(VALUE_KINDS))
# Not checked: a TAB after an -a of bytes that are not UTF-8 offers nothing, and says nothing.
@app_option("The app whose lines are read (default: every app's, or $HEROLOG_APP).", checked=False)
def values(kind: str, app: str | None) -> None:
    """Print the dyno names, sources or process types of the app's newest lines in the
    local store, one a line: what the completion scripts offer for logs -d, -s and -p.
    Nothing, and no error, when there is nothing to read: a TAB must not print one."""
    import sqlite3

    from herolog import config
    from herolog.drains import find_app
    from herolog.store import StoreError, open_existing

    try:
        store = open_existing(config.store_path())
        if store is None:
            return
        try:
            info = None if app is None else find_app(store, app)
            if app is not None and info is None:
                return
            pairs = store.recent_names(None if info is None else info.name)
        finally:
            store.close()
    except (StoreError, sqlite3.Error, OSError, UnicodeEncodeError):
        return
    if kind == "sources":
        found = {source for source, _ in pairs}
    else:
        # A process type is a dyno's name before its number: web of web.1, run of run.1234.
        types = {dyno.rpartition(".")[0] for _, dyno in pairs if "." in dyno}
        found = types if kind == "types" else types | {dyno for _, dyno in pairs}
    for value in sorted(found - {""}):
        click.echo(value)
