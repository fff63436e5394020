from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import click

from herolog.cli.options import (
    EnvOption,
    Integer,
    Number,
    came_from_the_environment,
    from_the_environment,
)

if TYPE_CHECKING:
    from herolog.server.config import ConfigError

# Each takes HEROLOG_ and its name from the environment too.
option = functools.partial(click.option, cls=EnvOption)


@click.command(short_help="Receive Heroku drains; serve the Platform API for logs.")
@option(
    "--host",
    envvar="HEROLOG_HOST",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Address to listen on. Anything but loopback needs --auth.",
)
@option(
    "--port",
    envvar="HEROLOG_PORT",
    type=Integer(0, 65535),
    default=8514,
    metavar="N",
    show_default=True,
    help="HTTP port for HTTPS drains; 0 picks a free one.",
)
@option(
    "--syslog-port",
    envvar="HEROLOG_SYSLOG_PORT",
    type=Integer(0, 65535),
    metavar="N",
    help="Also accept syslog drains over TCP (TLS with --certfile) on this port.",
)
@option(
    "--syslog-app",
    envvar="HEROLOG_SYSLOG_APP",
    default="default",
    show_default=True,
    metavar="APP",
    help="The app syslog lines are stored under.",
)
@option(
    "--syslog-max-connections",
    envvar="HEROLOG_SYSLOG_MAX_CONNECTIONS",
    type=Integer(min=1),
    default=10_000,
    show_default=True,
    metavar="N",
    help="Syslog connections open at once; more are closed as they arrive.",
)
@option(
    "--auth",
    envvar="HEROLOG_AUTH",
    metavar="USER:PASSWORD",
    help="Basic auth the drain intake requires (put it in the drain URL).",
)
@option(
    "--api-key",
    envvar="HEROLOG_API_KEY",
    metavar="KEY",
    help="Token the Platform API and /stats require (HEROKU_API_KEY for the heroku CLI).",
)
@option(
    "--public-url",
    envvar="HEROLOG_PUBLIC_URL",
    metavar="URL",
    help="Base URL clients reach this server at, for log-session URLs (default: from Host).",
)
@option(
    "--certfile",
    envvar="HEROLOG_CERTFILE",
    # Read as serve starts, which says why it cannot in one line: click's check says a file
    # in a folder serve may not enter (certbot's live/, 0700) "does not exist".
    type=click.Path(readable=False, path_type=Path),
    metavar="FILE",
    help="TLS certificate (PEM): serve HTTPS and syslog+tls.",
)
@option(
    "--keyfile",
    envvar="HEROLOG_KEYFILE",
    type=click.Path(readable=False, path_type=Path),
    metavar="FILE",
    help="TLS private key (PEM) for --certfile.",
)
@option(
    "--history",
    envvar="HEROLOG_HISTORY",
    type=Integer(1, 10_000_000),
    metavar="N",
    help="Lines kept per app (sets the store's history).",
)
@option(
    "--max-body",
    envvar="HEROLOG_MAX_BODY",
    type=Integer(min=1024),
    default=5 << 20,
    show_default=True,
    metavar="BYTES",
    help="Largest drain POST body in bytes, after gzip.",
)
@option(
    "--body-timeout",
    envvar="HEROLOG_BODY_TIMEOUT",
    type=Number(min=0, min_open=True, max=86400),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Answer 408 to a request whose body is still arriving this long after its headers.",
)
@option(
    "--header-timeout",
    envvar="HEROLOG_HEADER_TIMEOUT",
    type=Number(min=0, min_open=True, max=86400),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Answer 408 and close a connection whose request headers take longer than this.",
)
@option(
    "--drain-buffer",
    envvar="HEROLOG_DRAIN_BUFFER",
    type=Integer(min=1),
    default=1024,
    show_default=True,
    metavar="LINES",
    help="Lines each drain holds while it cannot deliver (then the oldest are dropped: L10).",
)
@option(
    "--drain-flush-timeout",
    envvar="HEROLOG_DRAIN_FLUSH_TIMEOUT",
    type=Number(min=0, max=86400),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="As serve stops, how long drains get to deliver what they hold (the rest waits).",
)
@option(
    "--insecure-no-auth",
    is_flag=True,
    envvar="HEROLOG_INSECURE_NO_AUTH",
    help="Allow a public --host without --auth (a proxy in front checks it).",
)
def serve(
    host: str,
    port: int,
    syslog_port: int | None,
    syslog_app: str,
    syslog_max_connections: int,
    auth: str | None,
    api_key: str | None,
    public_url: str | None,
    certfile: Path | None,
    keyfile: Path | None,
    history: int | None,
    max_body: int,
    body_timeout: float,
    header_timeout: float,
    drain_buffer: int,
    drain_flush_timeout: float,
    insecure_no_auth: bool,
) -> None:
    """Receive Heroku log drains (HTTPS and syslog) and serve the Platform API for logs.

    Every option can also be set from the environment: HEROLOG_PORT, HEROLOG_AUTH, ...
    Give the secrets (--auth, --api-key) that way: ps shows command lines to every user.

    \b
    herolog serve                                   # http://127.0.0.1:8514
    HEROLOG_AUTH=drain:s3cret herolog serve --host 0.0.0.0 --certfile c.pem --keyfile k.pem
    heroku drains:add 'https://drain:s3cret@logs.example.com:8514/apps/myapp/logs' -a myapp
    HEROKU_HOST=http://127.0.0.1:8514 heroku logs -a myapp --tail
    """
    import signal
    import sys
    from typing import TextIO, cast

    from herolog.interrupt import STOP_SIGNALS, OrNowhere, StopCame, stops_held

    # Once nobody reads serve's stderr (`herolog serve 2>&1 | head`, a tee that was killed),
    # a line said there, a drain's "is failing" or "stopping: ...", failed with EPIPE and
    # ended the drain's delivery or the shutdown where it was said.
    sys.stderr = cast(TextIO, OrNowhere(sys.stderr))

    # Until serve's handlers are in (imports take a few hundred ms), a stop is held, not
    # fatal: systemd's stop or a Ctrl-C right after the start ends serve cleanly, status 0.
    with stops_held():
        from herolog import config
        from herolog.server import ServeConfig, Server
        from herolog.server.config import ConfigError, Credentials, DrainTiming, listen_host

        try:
            settings = ServeConfig(
                store_path=config.store_path(),
                host=listen_host(host),
                port=port,
                syslog_port=syslog_port,
                syslog_app=syslog_app,
                syslog_max_connections=syslog_max_connections,
                auth=Credentials.parse(auth) if auth else None,
                api_key=api_key or None,
                public_url=public_url or None,
                certfile=certfile,
                keyfile=keyfile,
                history=history,
                max_body=max_body,
                body_timeout=body_timeout,
                header_timeout=header_timeout,
                drain_buffer=drain_buffer,
                drain_timing=DrainTiming(flush_s=drain_flush_timeout),
                insecure_no_auth=insecure_no_auth,
            )
            server = Server(settings)
        except ConfigError as error:
            raise click.UsageError(where_from(error)) from None
        try:
            server.bind()
        except ConfigError as error:  # a port in use, TLS files that do not fit: no usage text
            raise CannotStart(where_from(error)) from None
        except StopCame as stop:  # reading --certfile or --keyfile from a pipe no one wrote
            # One still held (a SIGHUP kept for serve to say it has nothing to reload) would
            # kill serve as it leaves, by its default action: serve stops anyway.
            for held in STOP_SIGNALS:
                signal.signal(held, signal.SIG_IGN)
            print(f"herolog serve: stopping: {stop} before it started", file=sys.stderr)
            return
        server.run()


class CannotStart(click.ClickException):
    """What serve was given cannot be used here: one line, and the status of a usage error."""

    exit_code = 2


def where_from(error: ConfigError) -> str:
    """``error``'s message, saying which of the options it is about came from the environment
    (a profile, a unit file), not typed: after the option where it names it, else at its end."""
    import re

    ctx = click.get_current_context()
    message, unnamed = str(error), []
    for param in ctx.command.params:
        said = from_the_environment(ctx, param)
        if not said or param.name is None:
            continue
        if isinstance(param, click.Option) and param.is_flag and not ctx.params.get(param.name):
            continue  # HEROLOG_INSECURE_NO_AUTH=no gave nothing the message could be about
        option = param.opts[0]
        if named := re.search(rf"{re.escape(option)}(?![\w-])", message):
            message = message[: named.end()] + said + message[named.end() :]
        elif option in error.about:
            unnamed.append(param.name)
    return message + came_from_the_environment(*unnamed)
