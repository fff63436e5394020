"""Option types and options shared by several commands."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from herolog import timestamps

F = TypeVar("F", bound=Callable[..., Any])


class Integer(click.IntRange):
    """click's IntRange, named as what it takes: its own name, "integer range", made a value
    that is no number "not a valid integer range" and the metavar INTEGER RANGE."""

    name = "integer"


class Number(click.FloatRange):
    """click's FloatRange, which lets nan through (no comparison with it is true): refused
    here, so that it is said as any other bad value, naming its option and variable."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number:  # nan
            self.fail(f"{value!r} is not a valid {self.name}.", param, ctx)
        return number


class TimeType(click.ParamType[str, Any]):
    """``10m``, ``2h``, ``1d``, ``now`` or an ISO 8601 time, as an instant string."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return timestamps.parse_user_time(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class RegexType(click.ParamType[re.Pattern[str], Any]):
    name = "REGEX"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> re.Pattern[str]:
        if isinstance(value, re.Pattern):
            return value
        from herolog.filters import SlowPattern, compile_pattern

        text = str(value)
        # As typed: repr would double every backslash, which in a pattern reads as a change.
        shown = f"'{text}'" if text.isprintable() else repr(text)
        try:
            return compile_pattern(text)
        except SlowPattern as error:
            self.fail(f"{shown} is refused: {error}", param, ctx)
        except (re.error, OverflowError, RecursionError) as error:  # a{1,99999999999}, ((((...
            self.fail(f"{shown} is not a valid regular expression: {error}", param, ctx)


class ServerURLType(click.ParamType[str, Any]):
    """The base URL of a herolog serve: http:// or https://, and a host."""

    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not text:  # HEROLOG_URL= or --server "": the local store
            return text
        from urllib.parse import urlsplit

        import httpx

        from herolog.drains import mask_loosely, spaced, valid_host

        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            why = "it holds bytes that are not UTF-8"
            self.fail(f"{mask_loosely(text)!r} is not a server URL: {why}", param, ctx)
        if spaced(text):
            # A profile's or an env file's HEROLOG_URL='http://127.0.0.1:8514 ': said to have
            # a port out of range, and after a path ('.../ ') every request was a 404.
            why = "it holds a space or a control character, as no URL does"
            self.fail(f"{mask_loosely(text)!r} is not a server URL: {why}", param, ctx)
        authority = re.split("[/?#]", text.partition("://")[2], maxsplit=1)[0]
        host_and_port = authority.rpartition("@")[2]
        if host_and_port.startswith("[") and "]" not in host_and_port:
            # httpx would take the address's last colon for the port's ("Invalid port: ':1'")
            shown = mask_loosely(text)
            why = "its IPv6 address has no closing bracket, as in http://[::1]:8514"
            self.fail(f"{shown!r} is not a server URL: {why}", param, ctx)
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as error:
            self.fail(f"{mask_loosely(text)!r} is not a server URL ({error})", param, ctx)
        host = url.raw_host.decode("ascii")  # as it is sent: a bad one fails only in connecting
        if url.scheme not in ("http", "https") or not valid_host(host):
            shown = mask_loosely(text)
            self.fail(f"{shown!r} is not a server URL: http(s)://HOST[:PORT][/PATH]", param, ctx)
        try:
            # As proxy_for reads it, where a ValueError was a traceback: httpx takes -1 and
            # 99999 for ports, and +80 or " 80" for none.
            port = urlsplit(text).port
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            shown = mask_loosely(text)
            self.fail(f"{shown!r} is not a server URL: its port must be 1 to 65535", param, ctx)
        if b"?" in url.raw_path or url.fragment or str(url).endswith("#"):
            # herolog adds its paths (/apps/APP/log-sessions) to the URL: after a ? or a #
            # they would be a query or a fragment, and every request went to the same path.
            shown = mask_loosely(text)
            why = "http(s)://HOST[:PORT][/PATH], with no ?query or #fragment"
            self.fail(f"{shown!r} is not a server URL: {why}", param, ctx)
        return text


class NameType(click.ParamType[str, Any]):
    """A name the store is asked for (an app, a source, a dyno): text, not bytes that are not
    UTF-8, which no line's name holds and which SQLite cannot be given."""

    name = "text"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(f"{text!r} is not {self.what}: it holds bytes that are not UTF-8", param, ctx)
        return text


class EnvOption(click.Option):
    """An option that can come from the environment: a bad value from there names the
    variable, which was set in a profile or a unit file, not typed as the option."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return super().get_error_hint(ctx) + from_the_environment(ctx, self)


def from_the_environment(ctx: click.Context | None, param: click.Parameter) -> str:
    """`` (from $VARIABLE)`` when ``param``'s value came from its environment variable."""
    if ctx is None or param.name is None or not isinstance(param.envvar, str):
        return ""
    if ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
        return ""
    return f" (from ${param.envvar})"


def came_from_the_environment(*names: str) -> str:
    """`` (-a came from $HEROLOG_APP; --server came from $HEROLOG_URL)``: which of the
    current command's parameters ``names`` their variables gave, for an error about them
    that does not name them (an unknown app, a server that cannot be reached)."""
    ctx: click.Context | None = click.get_current_context()
    said = []
    for name in names:
        given = _given(ctx, name)
        if given is None or given.get_parameter_source(name) is not ParameterSource.ENVIRONMENT:
            continue
        param = next(p for p in given.command.params if p.name == name)
        said.append(f"{param.opts[0]} came from ${param.envvar}")
    return f" ({'; '.join(said)})" if said else ""


def _given(ctx: click.Context | None, name: str) -> click.Context | None:
    """``ctx``, or the nearest of its parents, that was given parameter ``name`` (None if
    none was): `herolog drain` alone runs `drain list` in a context of its own, with the
    values the group was given."""
    while ctx is not None and ctx.get_parameter_source(name) is None:
        ctx = ctx.parent
    return ctx


def app_option(help: str, default: str | None = None, checked: bool = True) -> Callable[[F], F]:
    """``-a/--app``, from ``$HEROLOG_APP`` when not given, as in every command that has it.
    Not ``checked``, a value that is not UTF-8 is left for the command."""
    return click.option(
        "-a",
        "--app",
        cls=EnvOption,
        envvar="HEROLOG_APP",
        type=NameType("an app name") if checked else None,
        default=default,
        show_default=default is not None,
        metavar="APP",
        help=help,
    )


def server_option(help: str, checked: bool = True) -> Callable[[F], F]:
    """``--server``, from ``$HEROLOG_URL`` when not given: the server to work on, not the
    local store. Not ``checked``, the value is left for the command to check (with
    ``ServerURLType()(value, param, ctx)``) when it uses it."""
    return click.option(
        "--server",
        cls=EnvOption,
        envvar="HEROLOG_URL",
        type=ServerURLType() if checked else None,
        metavar="URL",
        help=help,
    )


def checked_app(app: str) -> str:
    """``app`` if it is a name the store and the server take, else a usage error (exit 2)."""
    from herolog.store import APP_NAME_RULE, valid_app_name

    if not valid_app_name(app):
        current = click.get_current_context(silent=True)
        ctx = _given(current, "app") or current
        given = next((p for p in ctx.command.params if p.name == "app"), None) if ctx else None
        # As click names it for a value its type refuses: '-a' / '--app'.
        hint = given.get_error_hint(ctx) if ctx and given else "'-a' / '--app'"
        raise click.BadParameter(f"{app!r} is not an app name: {APP_NAME_RULE}", param_hint=hint)
    return app


def checked_dyno(ctx: click.Context, param: click.Parameter, dyno: str) -> str:
    """``dyno`` if it can be a syslog PROCID and read back from ``app[DYNO]:`` text (1 to
    128 printable ASCII characters, no brackets), else a usage error (exit 2)."""
    if not (
        0 < len(dyno) <= 128
        and all("!" <= ch <= "~" for ch in dyno)
        and "[" not in dyno
        and "]" not in dyno
    ):
        raise click.BadParameter(
            f"{dyno!r} is not a dyno name: 1 to 128 printable ASCII characters, no spaces or"
            " brackets (web.1, worker.2, run.1234)"
        )
    return dyno
