from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from herolog.cli.options import (
    ServerURLType,
    app_option,
    came_from_the_environment,
    checked_app,
    server_option,
)

if TYPE_CHECKING:
    from herolog.drains import Registry
    from herolog.store import Drain

DEFAULT_APP = "default"


class BadInput(click.ClickException):
    """A one-line error for input that is wrong (exit 2), without the usage text."""

    exit_code = 2


F = TypeVar("F", bound=Callable[..., object])
T = TypeVar("T")


_SERVER_HELP = (
    "Work on this herolog serve (or $HEROLOG_URL's; API key from $HEROLOG_API_KEY), not the"
    " local store."
)


def app_name(app: str | None) -> str:
    return checked_app(DEFAULT_APP if app is None else app)


def registry(server: str | None, then: str = "stops the command") -> Registry:
    """The drains of ``server``, or of the local store; ``then`` is what a Ctrl-C does while
    the command waits for another process's write lock on the store."""
    from herolog import config
    from herolog.cli import lock_waits_said
    from herolog.drains import LocalRegistry, RemoteRegistry

    if server:
        return RemoteRegistry(server, os.environ.get("HEROLOG_API_KEY") or None)
    path = config.store_path()
    return LocalRegistry(path, lock_wait=lock_waits_said(path, then))


def attempt(work: Callable[[], T], server: str | None) -> T:
    from herolog.drains import DrainError, scrub

    try:
        return work()
    except DrainError as error:
        message = scrub(str(error), server) if server else str(error)  # its password
        if error.usage:
            raise BadInput(message) from None
        if not error.missing and error.status != 422:  # not an answer about the app or drain
            message += came_from_the_environment("server")
        raise click.ClickException(message) from None


def list_options(checked: bool = True) -> Callable[[F], F]:
    """The options of ``drain list``, which ``drain`` alone takes too (as ``heroku drains -a``)."""

    def decorate(function: F) -> F:
        function = server_option(_SERVER_HELP, checked)(function)
        function = click.option(
            "--show-secrets", is_flag=True, help="Do not mask passwords and keys in --json."
        )(function)
        function = click.option(
            "--json", "json_output", is_flag=True, help="Print the drains as a JSON list."
        )(function)
        return app_option("Only this app (default: every app, or $HEROLOG_APP).")(function)

    return decorate


@click.group(
    invoke_without_command=True, short_help="Add, list and remove the drains serve forwards to."
)
# Its --server is checked only without a subcommand: with one, the subcommand's own is the
# one used, and a $HEROLOG_URL it overrides is not the group's to refuse.
@list_options(checked=False)
@click.pass_context
def drain(
    ctx: click.Context,
    app: str | None = None,
    json_output: bool = False,
    show_secrets: bool = False,
    server: str | None = None,
) -> None:
    """Register drains: where herolog serve forwards each app's lines.

    Without a subcommand, lists them (as drain list, with its options).

    \b
    herolog drain add 'https://logs.example.com/heroku?api_key=KEY' -a demo
    herolog drain add syslog+tls://logs.example.com:6514 -a demo --json | jq -r .token
    herolog drain add "$URL" -a demo --if-missing       # from a provisioning script
    herolog drain -a demo
    herolog drain remove d.0b7c6a0e-... -a demo
    """
    from click.core import ParameterSource

    if ctx.invoked_subcommand is None:
        if server:
            param = next(p for p in ctx.command.params if p.name == "server")
            server = ServerURLType()(server, param, ctx)
        ctx.invoke(
            list_drains, app=app, json_output=json_output, show_secrets=show_secrets, server=server
        )
        return

    for param in ctx.command.params:
        if param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
            option = "/".join(param.opts)
            raise click.UsageError(
                f"{option} goes after the subcommand: herolog drain"
                f" {ctx.invoked_subcommand} ... {option}"
            )


def from_standard_input(command: str, what: str) -> str:
    """The drain URL (or token) of ``drain COMMAND -``: one line of standard input, where
    neither ps nor the shell's history sees the secrets a URL carries."""
    try:
        given = (sys.stdin.readline() if sys.stdin else "").rstrip("\r\n")
        # Not from a terminal, where the user would have to type Ctrl-D: a script's
        # second URL, added or removed by nobody, must not go unsaid.
        more = "" if not sys.stdin or sys.stdin.isatty() else sys.stdin.read()
    except UnicodeDecodeError:
        raise BadInput("the drain URL on standard input is not UTF-8 text") from None
    if not given:
        raise BadInput(f"no drain {what} on standard input (drain {command} - reads one line)")
    if more.strip():
        raise BadInput(
            f"standard input holds more than one line, and drain {command} - reads one {what}:"
            f" {command} each drain with a command of its own"
        )
    return given


@drain.command("add", short_help="Forward an app's lines to URL (https, http or syslog).")
@click.argument("url")
@app_option(f"The app whose lines go to URL (default: $HEROLOG_APP, else {DEFAULT_APP}).")
@click.option("--json", "json_output", is_flag=True, help="Print the drain as JSON.")
@click.option("--show-secrets", is_flag=True, help="Do not mask passwords and keys in --json.")
@click.option(
    "--if-missing",
    is_flag=True,
    help="If the app has the drain already, say so (--json: print it) and exit 0.",
)
@server_option(_SERVER_HELP)
def add(
    url: str,
    app: str | None,
    json_output: bool,
    show_secrets: bool,
    if_missing: bool,
    server: str | None,
) -> None:
    """Forward an app's lines to URL (https, http, syslog, syslog+tcp, syslog+tls).

    URL - reads it from standard input, where ps and the shell's history do not see it."""
    from herolog.drains import DrainError, drain_object, mask_url

    name = app_name(app)
    if url == "-":
        url = from_standard_input("add", "URL")
    drains = registry(server, "adds nothing")

    def add_it() -> tuple[Drain, str | None, bool]:
        try:
            return (*drains.add(name, url), True)
        except DrainError as error:
            if not (if_missing and error.exists):
                raise
        return drains.find(name, url), None, False

    added, warning, new = attempt(add_it, server)
    if warning is not None:
        click.echo(f"Warning: {warning}", err=True)
    if not server:  # a password, as likely as not, now in the store's file
        from herolog import config
        from herolog.store import open_to_everyone

        if (readable := open_to_everyone(config.store_path())) is not None:
            click.echo(f"Warning: {readable}", err=True)
    if json_output:
        forwarded = attempt(drains.forwarded, server)
        # Whether this run added it: a provisioning script's "changed", as Ansible's.
        shown = {
            **drain_object(added, show_secrets=show_secrets, forwarded=forwarded),
            "added": new,
        }
        click.echo(json.dumps(shown, indent=2))
    elif new:
        click.echo(f"Successfully added drain {mask_url(added.url)}")
    else:
        click.echo(f"{added.app} already has the drain {mask_url(added.url)}")


@drain.command("list")
@list_options()
def list_drains(
    app: str | None = None,
    json_output: bool = False,
    show_secrets: bool = False,
    server: str | None = None,
) -> None:
    """List drains, with what herolog serve has delivered to each."""
    from herolog.drains import drain_object

    only = None if app is None else app_name(app)
    drains = registry(server)
    found = attempt(lambda: drains.list(only), server)
    if not found:
        click.echo("[]" if json_output else f"{app} has no drains." if app else "No drains.")
        return
    forwarded = attempt(drains.forwarded, server)
    if json_output:
        objects = [drain_object(d, show_secrets=show_secrets, forwarded=forwarded) for d in found]
        click.echo(json.dumps(objects, indent=2))
        return
    apps = sorted({d.app for d in found})
    for name in apps:
        if name != apps[0]:
            click.echo()
        click.echo("=== Drains" if app else f"=== {name} Drains")
        click.echo()
        for each in (d for d in found if d.app == name):
            click.echo(describe(each, forwarded))


def describe(drain: Drain, forwarded: bool = True) -> str:
    """``URL (TOKEN)`` as heroku drains prints it, and a line on its delivery; ``forwarded``
    is whether a herolog serve forwards the store's drains now."""
    from herolog.drains import api_time, mask_url, printable

    state = drain.delivery
    parts = [f"delivered {state.delivered:,}", f"dropped {state.dropped:,}"]
    if drain.waiting:
        parts.append(f"waiting {drain.waiting:,}")
    if not forwarded:  # "ok" would pass for delivering, and the last error may be its own
        parts.append("not forwarded: no herolog serve runs on this store")
    else:
        parts.append("retrying" if state.retrying else "ok")  # now; the last error may be old
    if state.last_error:
        when = api_time(state.last_error_at) if state.last_error_at else "?"
        # A store an older herolog wrote, or a server's answer, may hold any text.
        parts.append(f"last error {when}: {printable(state.last_error)}")
    shown = ", ".join(part for part in parts if part)
    return f"{mask_url(drain.url)} ({drain.token})\n  {shown}"


@drain.command("remove")
@click.argument("url_or_token", metavar="URL|TOKEN")
@app_option(f"The app the drain belongs to (default: $HEROLOG_APP, else {DEFAULT_APP}).")
@click.option("--if-exists", is_flag=True, help="If the app has no such drain, say so and exit 0.")
@server_option(_SERVER_HELP)
def remove(url_or_token: str, app: str | None, if_exists: bool, server: str | None) -> None:
    """Stop forwarding to a drain, given its URL or token.

    URL|TOKEN - reads it from standard input, where ps and the shell's history do not see
    it."""
    from herolog.drains import DrainError, mask_url

    name = app_name(app)
    if url_or_token == "-":
        url_or_token = from_standard_input("remove", "URL or token")
    drains = registry(server, "removes nothing")

    def remove_it() -> Drain | str:
        try:
            return drains.remove(name, url_or_token)
        except DrainError as error:
            if not (if_exists and error.missing):
                raise
            return str(error)

    removed = attempt(remove_it, server)
    if isinstance(removed, str):
        click.echo(removed)
    else:
        click.echo(f"Successfully removed drain {mask_url(removed.url)}")
