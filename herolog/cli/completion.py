from __future__ import annotations

import click

from herolog.completion import SHELLS


@click.command(short_help="Print the completion script for SHELL: bash, zsh or fish.")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (see the README to install it).

    \b
    herolog completion bash > ~/.local/share/bash-completion/completions/herolog
    herolog completion zsh > ~/.zfunc/_herolog
    herolog completion fish > ~/.config/fish/completions/herolog.fish
    """
    from herolog.cli import cli
    from herolog.completion import generate

    click.echo(generate(cli, shell), nl=False)
