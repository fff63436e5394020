"""Option types and options shared by several commands."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from herolog import timestamps

F = TypeVar("F", bound=Callable[..., Any])


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
        try:
            return re.compile(str(value))
        except re.error as error:
            self.fail(f"{value!r} is not a valid regular expression: {error}", param, ctx)


def app_option(help: str, default: str | None = None) -> Callable[[F], F]:
    """``-a/--app``, from ``$HEROLOG_APP`` when not given, as in every command that has it."""
    return click.option(
        "-a",
        "--app",
        envvar="HEROLOG_APP",
        default=default,
        show_default=default is not None,
        metavar="APP",
        help=help,
    )
