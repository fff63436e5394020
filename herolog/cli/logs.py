from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

import click

from herolog.cli.options import (
    Integer,
    NameType,
    RegexType,
    TimeType,
    app_option,
    came_from_the_environment,
    server_option,
)

if TYPE_CHECKING:
    from herolog.logs import LogsRequest
    from herolog.render import Renderer


_OTHER_NAMES = {"-f": "--tail", "--follow": "--tail", "--lines": "--num"}
"""What tail -f, journalctl, docker logs and kubectl logs call options of herolog logs."""
_OTHER_FORMATS = {"-o": "--json", "--output": "--json"}
"""journalctl's -o json, told only when typed so: as a near miss, --output would take
--color-output (jq's) from --color."""


class LogsCommand(click.Command):
    """herolog logs, telling its options from what other log tools call them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            rest = super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            # click's own guess takes --follow for --color and --lines for --since.
            import difflib

            name = error.option_name
            names = [o for p in self.params for o in p.opts if o.startswith("--")]
            close = difflib.get_close_matches(name, [*names, *_OTHER_NAMES], n=1)
            meant = (
                _OTHER_NAMES.get(name)
                or _OTHER_FORMATS.get(name)
                or (_OTHER_NAMES.get(close[0], close[0]) if close else None)
            )
            if meant is None:
                raise
            raise click.NoSuchOption(
                name, f"No such option {name!r}. Did you mean {meant!r}?", ctx=ctx
            ) from None
        if ctx.args:
            extra = " ".join(ctx.args)
            message = f"Got unexpected extra argument{'s' * (len(ctx.args) > 1)} ({extra})"
            ctx.fail(message + _extra_argument_hint(ctx, extra))
        # click keeps the last -a of several; -s, -d and -p given twice are any of them, and
        # so two apps would read as both. The order of the options given says how many.
        order = self.make_parser(ctx).parse_args(args=given)[2]
        if sum(param.name == "app" for param in order) > 1:
            ctx.fail("-a/--app given more than once: logs shows one app, or every app without -a")
        return rest


def _extra_argument_hint(ctx: click.Context, extra: str) -> str:
    """What a word herolog logs takes no place for was likely meant as, from how other log
    tools take their arguments (``: ...``), or nothing."""
    if ctx.params.get("tail") and extra.isascii() and extra.isdecimal():
        # docker logs --tail N and kubectl logs --tail N: the number of lines (as typed:
        # int() refuses over 4,300 digits)
        last = "line" if extra.lstrip("0") == "1" else f"{extra} lines"
        return (
            f": -t/--tail takes no number; -n {extra} --tail shows the last {last}, then new ones"
        )
    if len(ctx.args) != 1 or extra.isdecimal():
        return ""
    from herolog.store import valid_app_name
    from herolog.timestamps import parse_user_time

    try:
        parse_user_time(extra)
    except ValueError:
        pass
    else:  # 1h could be an app's name, but a time is the likelier meaning
        return f": a time is given with --since or --until: --since {extra}"
    typed = ctx.get_parameter_source("app") == click.core.ParameterSource.COMMANDLINE
    if not typed and valid_app_name(extra):
        # docker logs NAME and kubectl logs NAME: the app, typed where they take it
        return f": the app is given with -a, as heroku logs takes it: -a {extra}"
    return ""


@click.command(cls=LogsCommand, context_settings={"allow_extra_args": True})
@app_option("Only this app (default: all apps, merged; or $HEROLOG_APP).")
@click.option(
    "-n",
    "--num",
    type=Integer(min=0),
    metavar="N",
    help="How many lines of history to show (default 100).",
)
@click.option("-t", "--tail", is_flag=True, help="Keep showing new lines as they arrive.")
@click.option(
    "-s",
    "--source",
    type=NameType("a source"),
    metavar="SOURCE",
    multiple=True,
    help="Only this source: app, heroku, ... (repeat: any of them).",
)
@click.option(
    "-d",
    "--dyno",
    "--dyno-name",
    "dyno",
    type=NameType("a dyno name"),
    metavar="DYNO",
    multiple=True,
    help="Only this dyno: web.1, or web for every web dyno (repeat: any of them).",
)
@click.option(
    "-p",
    "--process-type",
    "--ps",
    "process_type",
    type=NameType("a process type"),
    metavar="TYPE",
    multiple=True,
    help="Only this process type: web, worker, ... (repeat: any of them).",
)
@click.option(
    "--since", type=TimeType(), help="Only lines from this time on: 10m, 2h, 1d or ISO 8601."
)
@click.option(
    "--until", type=TimeType(), help="Only lines before this time; ends --tail when it passes."
)
@click.option(
    "-g",
    "--grep",
    type=RegexType(),
    multiple=True,
    help="Only messages matching REGEX (repeat: any of them).",
)
@click.option(
    "-x",
    "--exclude",
    type=RegexType(),
    multiple=True,
    help="Leave out messages matching REGEX (repeatable).",
)
@click.option("--json", "json_output", is_flag=True, help="One JSON object per line (NDJSON).")
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colour the output.",
)
@click.option(
    "--force-colors", is_flag=True, help="Same as --color always (the heroku CLI's flag)."
)
@click.option("--no-color", is_flag=True, help="Same as --color never (the heroku CLI's flag).")
@server_option(
    "Read from this herolog serve (or $HEROLOG_URL's; API key from $HEROLOG_API_KEY), not the"
    " local store."
)
def logs(
    app: str | None,
    num: int | None,
    tail: bool,
    source: tuple[str, ...],
    dyno: tuple[str, ...],
    process_type: tuple[str, ...],
    since: str | None,
    until: str | None,
    grep: tuple[re.Pattern[str], ...],
    exclude: tuple[re.Pattern[str], ...],
    json_output: bool,
    color: str,
    force_colors: bool,
    no_color: bool,
    server: str | None,
) -> None:
    """Show the last lines of logs, and follow new ones with --tail.

    Filters apply before -n, so -n 100 -s app shows the last 100 lines from app.

    \b
    herolog logs -a demo --tail
    herolog logs -n 1500 -s heroku -d router | grep status=5
    herolog logs --since 1h --json | jq 'select((.fields.status|tonumber? // 0) >= 500)'
    herolog logs --server https://logs.example.com:8514 -a demo --tail
    """
    from herolog import config, render
    from herolog.filters import MAX_TERMS, LineFilter
    from herolog.logs import HistoryExceeded, LogsRequest, UnknownApp, show_logs

    if no_color:
        if force_colors or color == "always":
            given = "--force-colors" if force_colors else "--color always"
            raise click.UsageError(f"--no-color and {given} contradict each other")
        color = "never"
    elif force_colors and color == "never":
        raise click.UsageError("--force-colors and --color never contradict each other")
    if since is not None and until is not None and since >= until:
        # journalctl's check too: an empty answer would look like a quiet app.
        raise click.UsageError(
            f"--since ({since}) is not before --until ({until}): no line can match"
        )
    wanted = LineFilter(
        app=app,
        # An empty name filters nothing, as in heroku logs.
        sources=_names(source),
        dynos=tuple(names for names in (_names(dyno), _names(process_type)) if names),
        since=since,
        until=until,
        grep=grep,
        exclude=exclude,
    )
    over = wanted.over_limit()
    if over is not None:
        given = {"sources": "-s", "dynos": "-d and -p", "grep": "-g", "exclude": "-x"}[over]
        raise click.UsageError(f"{given}: at most {MAX_TERMS} names or patterns (in all)")
    stdout_isatty = sys.stdout.isatty()
    renderer = render.renderer_for(
        sys.stdout,
        json_output=json_output,
        color=render.color_wanted(color, force_colors, stdout_isatty, os.environ),
        terminal=stdout_isatty,
    )

    def waiting() -> None:
        if stdout_isatty:
            click.echo("Waiting for logs...", err=True)

    request = LogsRequest(wanted, num, tail)
    if server:
        _show_remote(server, request, renderer)
        return
    try:
        show_logs(
            config.store_path(),
            request,
            renderer,
            on_waiting=waiting,
            reader_gone=render.reader_gone(sys.stdout),
            say=lambda message: click.echo(f"herolog: {message}", err=True),
        )
    except HistoryExceeded as error:
        raise click.BadParameter(str(error), param_hint="'-n' / '--num'") from None
    except UnknownApp as error:
        message, origin = str(error), came_from_the_environment("app")
        if origin and message.endswith(")"):  # one parenthesis, not two back to back
            message, origin = f"{message[:-1]}; {origin[2:]}", ""
        raise click.ClickException(message + origin) from None


def _names(given: tuple[str, ...]) -> tuple[str, ...]:
    """An option's names, each once, without the empty ones."""
    return tuple(dict.fromkeys(name for name in given if name))


def _show_remote(server: str, request: LogsRequest, renderer: Renderer) -> None:
    from herolog import render
    from herolog.drains import scrub
    from herolog.interrupt import interruptibly
    from herolog.remote import RemoteError, RemoteLogs

    def reconnecting(reason: str) -> None:
        click.echo(f"herolog: {scrub(reason, server)}; reconnecting...", err=True)

    try:
        with render.exit_when_reader_gone(sys.stdout) as begun:
            remote = RemoteLogs(
                server,
                os.environ.get("HEROLOG_API_KEY") or None,
                request,
                renderer,
                on_reconnecting=reconnecting,
                on_begun=begun,
            )
            interruptibly(remote.run)
    except RemoteError as error:
        message = scrub(str(error), server)  # the URL may carry a password
        if error.usage:
            raise click.UsageError(_named_as_options(message)) from None
        about = ("app", "server") if error.no_app else ("server",)
        raise click.ClickException(message + came_from_the_environment(*about)) from None


_OPTIONS = {"lines": "-n", "dynos": "-d", "source": "-s", "since": "--since", "until": "--until"}


def _named_as_options(message: str) -> str:
    """A server's refusal of a log session, naming the option a field came from: the API's
    "lines: 1,501 is more than ..." is -n's."""
    field, colon, rest = message.partition(": ")
    return f"{_OPTIONS[field]} {rest}" if colon and field in _OPTIONS else message
