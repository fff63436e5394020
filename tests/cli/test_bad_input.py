"""Every command given bad flags, bad server URLs, and store files that are unreadable,
read-only or corrupt: exit 2 for usage errors and 1 for the rest, one line that says what
is wrong (naming the store and how to move it aside), never a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from herolog.cli import cli
from herolog.drains import new_app_warning
from herolog.filters import LineFilter
from herolog.store import open_store
from tests.helpers import (
    QuietHandler,
    bound_by_file_modes,
    fill,
    herolog_env,
    herolog_process,
    serving,
)


def leaf_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group, by the words that call it: new commands are covered too."""
    found = [prefix] if prefix else []
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            found += leaf_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def invoke(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit status and stderr of a command run in-process; fails on any traceback."""
    result = CliRunner().invoke(cli, list(args), input=stdin, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"herolog {' '.join(args)} raised {result.exception!r}")
    return result.exit_code, result.stderr


def one_error_line(err: str) -> str:
    """The one ``Error:`` line of stderr (click puts its usage text before a usage error)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    assert err.rstrip("\n").endswith(errors[0]), err
    return errors[0]


# Bad flags ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", leaf_commands(), ids=" ".join)
def test_an_unknown_flag_is_a_usage_error(command: tuple[str, ...]) -> None:
    code, err = invoke(*command, "--no-such-flag")
    assert code == 2
    assert one_error_line(err) == "Error: No such option '--no-such-flag'."


def test_every_command_is_covered() -> None:
    names = {" ".join(c) for c in leaf_commands()}
    assert names >= {"logs", "serve", "drain add", "run", "import", "apps", "store history"}


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        (["drains", "-a", "demo"], "herolog drain"),  # the heroku CLI's names
        (["drains:add", "https://a.example/x"], "herolog drain add"),
        (["drains:remove", "d.x"], "herolog drain remove"),
        (["log", "-a", "demo"], "herolog logs"),
        (["improt", "x.log"], "herolog import"),
    ],
)
def test_a_mistyped_command_names_the_one_meant(typed: list[str], meant: str) -> None:
    code, err = invoke(*typed)
    assert code == 2
    assert one_error_line(err) == f"Error: No such command {typed[0]!r}. Did you mean '{meant}'?"
    assert invoke("frobnicate")[0] == 2


@pytest.mark.parametrize("typed", ["values", "_value"])
def test_a_mistyped_command_is_not_told_of_the_hidden_one(typed: str) -> None:
    """_values is the completion scripts', hidden from --help: not one to point a user to."""
    code, err = invoke(typed, "dynos")
    assert (code, one_error_line(err)) == (2, f"Error: No such command {typed!r}.")


@pytest.mark.parametrize("words", [[], ["store"]], ids=["herolog", "herolog store"])
def test_a_group_alone_prints_its_help_as_help_does(words: list[str]) -> None:
    """As `heroku`, `docker` and `kubectl` alone do: on stdout (`herolog | less`), exit 0,
    where click printed it as an error, on stderr with exit 2."""
    proc = herolog_process(*words, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    helped = herolog_process(*words, "--help", timeout=60)
    assert proc.stdout == helped.stdout
    assert proc.stdout.startswith(f"Usage: herolog {' '.join([*words, ''])}[OPTIONS] COMMAND")
    with Path("/dev/full").open("w") as full:
        proc = herolog_process(*words, stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 1
    assert one_error_line(proc.stderr) == "Error: cannot write the output: No space left on device"


def test_run_takes_no_unknown_flags_of_its_own_but_passes_its_commands_on() -> None:
    """``herolog run --quite -- cmd`` (a typo) used to try to run ``--quite``."""
    code, err = invoke("run", "--quite", "--", sys.executable, "-c", "pass")
    assert code == 2
    assert "No such option '--quite'" in one_error_line(err)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "herolog",
            "run",
            "-q",
            sys.executable,
            "-c",
            "import sys",
            "--not-herologs",
        ],
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


UNTAKEN = ["--host", "192.0.2.1", "--insecure-no-auth"]
"""An address of TEST-NET-1, which no machine has: serve fails there if it gets so far."""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "-1"], "'--port'"),
        (["serve", "--syslog-port", "65536"], "'--syslog-port'"),
        (["serve", "--max-body", "10"], "'--max-body'"),
        (
            ["serve", "--history", "10000001"],
            "'--history': 10000001 is not in the range 1<=x<=10000000",
        ),
        (["serve", "--drain-buffer", "0"], "'--drain-buffer'"),
        (["serve", "--body-timeout", "0"], "'--body-timeout'"),
        (["serve", "--body-timeout", "soon"], "'--body-timeout'"),
        (["serve", "--body-timeout", "inf"], "'--body-timeout'"),
        (["serve", "--body-timeout", "nan"], "'--body-timeout': 'nan' is not a valid number."),
        (["serve", "--header-timeout", "-NaN"], "'--header-timeout'"),
        (["serve", "--header-timeout", "1e999"], "'--header-timeout'"),
        (["serve", "--syslog-app", "$(touch pwned)"], "--syslog-app '$(touch pwned)' is not"),
        (["serve", "--header-timeout", "0"], "'--header-timeout'"),
        (["serve", "--drain-flush-timeout", "-1"], "'--drain-flush-timeout'"),
        (["serve", "--drain-flush-timeout", "inf"], "'--drain-flush-timeout'"),
        (["serve", "--drain-flush-timeout", "nan"], "'--drain-flush-timeout': 'nan' is not a"),
        (["serve", "--history", "0"], "'--history'"),
        (
            ["serve", "--certfile", "/no/such/cert.pem", "--keyfile", "/no/such/key.pem"],
            "Error: cannot read --certfile /no/such/cert.pem: No such file or directory",
        ),
        (
            ["serve", "--public-url", "ftp://logs.example.com"],
            "Error: --public-url 'ftp://logs.example.com' must start with http:// or https://",
        ),
        (
            ["serve", "--public-url", "https://logs.example.com:port"],
            "Error: --public-url 'https://logs.example.com:port' is not a URL: Port could not be",
        ),
        (
            ["serve", "--public-url", "https:///herolog"],
            "Error: --public-url 'https:///herolog' has no host name",
        ),
        (  # named without its password, as every URL in an error is
            ["serve", "--public-url", "ftp://me:s3cret@logs.example.com"],
            "Error: --public-url 'ftp://***@logs.example.com' must start with http://",
        ),
        (["serve", "--host", "logs..example.com", "--auth", "u:p"], "is not a host name"),
        # A misspelt name is not a public address to refuse without --auth.
        (["serve", "--host", "logs..example.com"], "'logs..example.com' is not a host name"),
        (["serve", "--host", "locahost.invalid"], "cannot listen on locahost.invalid:8514: "),
        (["serve", "--host", "\udcff", "--auth", "u:p"], "'\\udcff' is not a host name"),
        (["serve", "--host", "localhost\n", "--auth", "u:p"], "'localhost\\n' is not a host"),
        # Bytes that are not UTF-8, on an address serve cannot take should they be taken.
        (["serve", *UNTAKEN, "--auth", "u:p\udcff"], "--auth must be UTF-8 text"),
        (["serve", *UNTAKEN, "--auth", "\udcff:p"], "--auth must be UTF-8 text"),
        (["serve", *UNTAKEN, "--api-key", "k\udcff"], "--api-key must be printable ASCII"),
        (["serve", *UNTAKEN, "--api-key", "kü"], "--api-key must be printable ASCII"),
        # No Authorization header carries them: every request with the key would get 401.
        (["serve", *UNTAKEN, "--api-key", "s3cret "], "--api-key must not begin or end with a"),
        (["serve", *UNTAKEN, "--api-key", " s3cret"], "--api-key must not begin or end with a"),
        # The API also takes Basic auth with the key as the password: drain URLs carry --auth's.
        (
            ["serve", *UNTAKEN, "--auth", "drain:s3cret", "--api-key", "s3cret"],
            "--api-key must not be the password of --auth",
        ),
        (["serve", *UNTAKEN, "--public-url", "http://\udcff.example"], "--public-url must be"),
        (["serve", "--host", "a" * 64, "--auth", "u:p"], "is not a host name"),
        (["logs", "-g", "a{1,99999999999}"], "is not a valid regular expression"),
        (["logs", "-x", "(" * 2000 + ")" * 2000], "is not a valid regular expression"),
        (["logs", "-g", r"(\w+\s?)+$"], "it repeats a repetition, like (a+)+"),
        (["logs", "--since", "1h", "--until", "2h"], ") is not before --until ("),
        (
            ["logs", "--since", "2024-03-05T09:00Z", "--until", "2024-03-05T09:00Z", "-t"],
            "--since (2024-03-05T09:00:00.000000Z) is not before --until (2024-03-05T09:00:00.000000Z): no line can match",
        ),
        (["store", "history", "0"], "0 is not in the range"),
        (["store", "history", "many"], "'many' is not a valid integer"),
        (["store", "history", "10000001"], "10000001 is not in the range"),
        (["store", "nope"], "No such command 'nope'"),
        (["import", "--format", "xml", "-"], "'xml' is not one of"),
        (["import", "/no/such/file.log"], "No such file or directory"),
        (["import"], "Missing argument 'FILE|-'"),
        (["completion", "tcsh"], "'tcsh' is not one of"),
        (["run"], "Missing argument 'COMMAND...'"),
        (["run", "-d", "", "true"], "'' is not a dyno name"),
        (["run", "-d", "web 1", "true"], "'web 1' is not a dyno name"),
        (["run", "-d", "wéb.1", "true"], "'wéb.1' is not a dyno name"),
        (["run", "-d", "we\nb", "true"], "is not a dyno name"),
        (["run", "-d", "web[1]", "true"], "'web[1]' is not a dyno name"),
        (["drain", "add"], "Missing argument 'URL'"),
        (["drain", "remove"], "Missing argument 'URL|TOKEN'"),
        (["drain", "add", "gopher://logs.example.com"], "gopher"),
        (["apps", "extra"], "unexpected extra argument"),
        (["nope"], "No such command 'nope'"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_values_are_usage_errors(args: list[str], message: str) -> None:
    code, err = invoke(*args)
    assert code == 2, err
    assert message in one_error_line(err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["logs", "-a", "de\udcffmo"],
            "Invalid value for '-a' / '--app': 'de\\udcffmo' is not an app",
        ),
        (["logs", "-t", "-a", "de\udcffmo"], "'de\\udcffmo' is not an app name: it holds bytes"),
        (
            ["logs", "-s", "\udcff"],
            "Invalid value for '-s' / '--source': '\\udcff' is not a source",
        ),
        (["logs", "-d", "web\udcff"], "'web\\udcff' is not a dyno name: it holds bytes"),
        (["logs", "-p", "web\udcff"], "'web\\udcff' is not a process type: it holds bytes"),
        (["store", "forget", "de\udcffmo"], "'de\\udcffmo' is not an app name: it holds bytes"),
        (["drain", "list", "-a", "\udcff"], "'\\udcff' is not an app name: it holds bytes"),
    ],
    ids=lambda value: " ".join(value[:-1]) if isinstance(value, list) else None,
)
def test_a_name_with_bytes_that_are_not_utf8_is_a_usage_error(
    herolog_home: Path, args: list[str], message: str
) -> None:
    """Bytes a terminal in another encoding typed: no line's name has them, and SQLite cannot
    be asked for them (the query raised UnicodeEncodeError)."""
    with open_store() as store:
        fill(store, "demo", ["x"])
    code, err = invoke(*args)
    assert code == 2, err
    assert message in one_error_line(err)


def test_an_app_with_bytes_that_are_not_utf8_from_the_environment_names_it(
    herolog_home: Path,
) -> None:
    with open_store() as store:
        fill(store, "demo", ["x"])
    code, err = invoke("logs", env={"HEROLOG_APP": "de\udcffmo"})
    assert code == 2, err
    assert "'-a' / '--app' (from $HEROLOG_APP): 'de\\udcffmo' is not an app name" in err


@pytest.mark.parametrize(
    ("command", "option", "metavar", "kind"),
    [
        (["logs"], ["-n"], "-n, --num N", "integer"),
        (["serve"], ["--host", "127.0.0.1", "--port"], "--host HOST", "integer"),
        (["serve"], ["--port"], "--port N", "integer"),
        (["serve"], ["--syslog-port"], "--syslog-port N", "integer"),
        (["serve"], ["--history"], "--history N", "integer"),
        (["serve"], ["--max-body"], "--max-body BYTES", "integer"),
        (["serve"], ["--syslog-max-connections"], "--syslog-max-connections N", "integer"),
        (["serve"], ["--drain-buffer"], "--drain-buffer LINES", "integer"),
        (["serve"], ["--body-timeout"], "--body-timeout SECONDS", "number"),
        (["store", "history"], [], "[LINES]", "integer"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_number_option_says_what_it_takes(
    command: list[str], option: list[str], metavar: str, kind: str
) -> None:
    """As the README's tables write them, not click's INTEGER RANGE, and a value that is no
    number is not 'a valid integer range': nobody gave a range."""
    helped = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert helped.exit_code == 0, helped.output
    assert metavar in helped.output
    assert "RANGE" not in helped.output
    code, err = invoke(*command, *option, "1k")
    assert code == 2, err
    assert one_error_line(err).endswith(f": '1k' is not a valid {kind}."), err


@pytest.mark.parametrize(
    ("args", "variable", "value", "hint"),
    [
        (["logs"], "HEROLOG_URL", "ftp://logs.example.com", "'--server'"),
        (["drain", "list"], "HEROLOG_URL", "logs.example.com:8514", "'--server'"),
        (["run", "true"], "HEROLOG_URL", "not a url", "'--server'"),
        (["serve"], "HEROLOG_PORT", "80a", "'--port'"),
        (["serve"], "HEROLOG_BODY_TIMEOUT", "soon", "'--body-timeout'"),
        (["serve"], "HEROLOG_HEADER_TIMEOUT", "nan", "'--header-timeout'"),
        (["run", "true"], "HEROLOG_APP", "my app", "'-a' / '--app'"),
        (["import", "-"], "HEROLOG_APP", "my app", "'-a' / '--app'"),
        (["drain", "add", "https://logs.example.com/x"], "HEROLOG_APP", "my/app", "'-a' / '--app'"),
        (["drain", "list"], "HEROLOG_APP", "my/app", "'-a' / '--app'"),
        # drain alone runs drain list's callback, given the group's -a
        (["drain"], "HEROLOG_APP", "my/app", "'-a' / '--app'"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_bad_value_from_the_environment_names_the_variable(
    args: list[str], variable: str, value: str, hint: str
) -> None:
    """A variable set in a profile or a unit file long ago, not the option never typed."""
    code, err = invoke(*args, env={variable: value})
    assert code == 2, err
    assert one_error_line(err).startswith(f"Error: Invalid value for {hint} (from ${variable}):")
    words = 2 if args[0] == "drain" else 1  # the command's own, before its arguments
    flag = [hint.split(" / ")[0].strip("'"), value]  # '-a' / '--app': -a
    code, err = invoke(*args[:words], *flag, *args[words:])
    assert code == 2, err
    assert one_error_line(err).startswith(f"Error: Invalid value for {hint}:"), err


@pytest.mark.parametrize(
    ("env", "typed", "error"),
    [
        (
            {"HEROLOG_AUTH": "drain"},
            ["--auth", "drain"],
            "Error: --auth{} takes USER:PASSWORD, both non-empty",
        ),
        (
            {"HEROLOG_AUTH": "drain:secret\r"},
            ["--auth", "drain:secret\r"],
            "Error: --auth{} holds a control character (an env file's \\r?): no drain URL carries",
        ),
        (
            {"HEROLOG_API_KEY": "k\x01y"},
            ["--api-key", "k\x01y"],
            "Error: --api-key{} must be printable ASCII, as API keys are",
        ),
        (
            {"HEROLOG_PUBLIC_URL": "ftp://logs.example.com"},
            ["--public-url", "ftp://logs.example.com"],
            "Error: --public-url{} 'ftp://logs.example.com' must start with http:// or https://",
        ),
        (
            {"HEROLOG_SYSLOG_PORT": "8514"},
            ["--syslog-port", "8514"],
            "Error: --syslog-port{} and --port are both 8514:",
        ),
        (
            {"HEROLOG_SYSLOG_APP": "my/app"},
            ["--syslog-app", "my/app"],
            "Error: --syslog-app{} 'my/app' is not an app name:",
        ),
        (
            {"HEROLOG_AUTH": "drain:same", "HEROLOG_API_KEY": "same"},
            ["--auth", "drain:same", "--api-key", "same"],
            "Error: --api-key{1} must not be the password of --auth{0}:",
        ),
        (
            {"HEROLOG_HOST": "0.0.0.0"},
            ["--host", "0.0.0.0"],
            "Error: refusing to listen on 0.0.0.0 without --auth:",
        ),
        (
            {"HEROLOG_HOST": "a..b", "HEROLOG_INSECURE_NO_AUTH": "1"},
            ["--host", "a..b", "--insecure-no-auth"],
            "Error: cannot listen on a..b:8514: 'a..b' is not a host name",
        ),
        (  # an env file's trailing space: 'cannot listen on 127.0.0.1 :8514: Name or service...'
            {"HEROLOG_HOST": "127.0.0.1 "},
            ["--host", "127.0.0.1 "],
            "Error: cannot listen on 127.0.0.1 :8514: '127.0.0.1 ' is not a host name",
        ),
        (
            {"HEROLOG_CERTFILE": "/no/such/cert.pem", "HEROLOG_KEYFILE": "/no/such/key.pem"},
            ["--certfile", "/no/such/cert.pem", "--keyfile", "/no/such/key.pem"],
            "Error: cannot read --certfile{} /no/such/cert.pem: No such file or directory",
        ),
    ],
    ids=[
        "auth",
        "auth-crlf",
        "api-key",
        "public-url",
        "syslog-port",
        "syslog-app",
        "same",
        "host",
        "bad-host",
        "spaced-host",
        "certfile",
    ],
)
def test_a_serve_setting_from_the_environment_that_cannot_start_names_the_variable(
    env: dict[str, str], typed: list[str], error: str
) -> None:
    """Not only click's checks of a value: those of the whole configuration too."""
    names = list(env)
    code, err = invoke("serve", env=env)
    assert code == 2, err
    line = one_error_line(err)
    if "{" in error:
        sources = [f" (from ${name})" for name in names]
        assert line.startswith(error.format(*sources))
    else:  # the option is not named: said after the error
        option = typed[0]
        assert line.startswith(error)
        assert line.endswith(f" ({option} came from ${names[0]})")
    code, err = invoke("serve", *typed)
    assert code == 2, err
    line = one_error_line(err)
    assert "$" not in line
    assert line.startswith(error.replace("{0}", "").replace("{1}", "").replace("{}", ""))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://logs.example.com ", "holds a space or a control character, as no URL does"),
        ("https://logs.example.com\n", "holds a space or a control character, as no URL does"),
        ("https://logs.example.com/my logs", "holds a space or a control character"),
        ("https://logs.example.com/?via=proxy", "must be http(s)://HOST[:PORT][/PATH], with no"),
        ("https://logs.example.com/#top", "must be http(s)://HOST[:PORT][/PATH], with no ?query"),
        ("https://logs.example.com?", "must be http(s)://HOST[:PORT][/PATH], with no ?query"),
    ],
)
def test_a_public_url_that_paths_cannot_follow_is_refused(url: str, why: str) -> None:
    """serve started, and the log sessions it handed out were the URL and a path
    ('https://logs.example.com/?via=proxy/sessions/ID?sig=...'), which no client could read:
    'could not read the log session (404)' from every heroku logs and herolog logs --server."""
    code, err = invoke("serve", *UNTAKEN, env={"HEROLOG_PUBLIC_URL": url})
    assert code == 2, err
    assert one_error_line(err).startswith(
        f"Error: --public-url (from $HEROLOG_PUBLIC_URL) {url!r} {why}"
    )
    code, err = invoke("serve", *UNTAKEN, "--public-url", url)
    assert code == 2, err
    assert one_error_line(err).startswith(f"Error: --public-url {url!r} {why}")


def test_an_api_key_with_a_space_around_it_from_the_environment_is_refused() -> None:
    """An env file's HEROLOG_API_KEY='s3cret ' started serve, and every API request, whose
    Authorization header comes without the space, got 401: the heroku CLI's, herolog's."""
    code, err = invoke("serve", *UNTAKEN, env={"HEROLOG_API_KEY": "s3cret "})
    assert code == 2, err
    assert one_error_line(err) == (
        "Error: --api-key (from $HEROLOG_API_KEY) must not begin or end with a space: clients"
        " send it in a header, which does not carry the spaces around its value"
    )


@pytest.mark.parametrize("value", ["no", "0", "false", "off"])
def test_a_false_insecure_no_auth_in_the_environment_is_not_named_as_given(value: str) -> None:
    """The refusal advises --insecure-no-auth; a variable saying no did not give it."""
    env = {"HEROLOG_INSECURE_NO_AUTH": value}
    code, err = invoke("serve", "--host", "0.0.0.0", env=env)
    assert code == 2, err
    line = one_error_line(err)
    assert line.startswith("Error: refusing to listen on 0.0.0.0 without --auth:")
    assert "or --insecure-no-auth if a proxy in front checks them." in line
    assert "$HEROLOG_INSECURE_NO_AUTH" not in line


def test_a_serve_port_in_use_from_the_environment_names_the_variable() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = invoke("serve", env={"HEROLOG_PORT": str(port)})
        assert code == 2, err
        line = one_error_line(err)
        assert line.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
        assert line.endswith(" (--port came from $HEROLOG_PORT)")
        assert err == f"{line}\n"  # what serve was given, not how to call it: no usage text
        code, err = invoke("serve", "--syslog-port", str(port), env={"HEROLOG_PORT": "0"})
        assert code == 2, err
        assert one_error_line(err).endswith(f":{port}: Address already in use")


def test_a_directory_given_as_the_file_to_import(tmp_path: Path) -> None:
    code, err = invoke("import", str(tmp_path))
    assert code == 2
    assert "is a directory" in one_error_line(err).lower()


# Bad server URLs ----------------------------------------------------------------------

REMOTE_COMMANDS = [
    ("logs",),
    ("logs", "--tail"),
    ("drain", "list"),
    ("drain", "add", "https://logs.example.com/x"),
    ("drain", "remove", "d.0b7c6a0e-8a4b-4c61-9a3c-0c7e4f0d7a11"),
]


BAD_URLS = [
    "not a url",
    "logs.example.com:8514",
    "ftp://logs.example.com",
    "http://",
    "https://:8514",
    "http://[::1",
    "http://256.0.0.1",
    "http://logs.example.com:99999",
    "http://logs.example.com:0",
    "http://logs.example.com:-1",
    "http://logs.example.com:port",
    "http://logs..example.com:8514",
    "http://" + "a" * 64 + ".example.com",
    "http://xn--zz.example.com",
    "http://u:p\udcff@logs.example.com",  # bytes that are not UTF-8
    "http://logs.example.com/\udcff",
    # herolog adds its paths to the URL: they would land in the query or the fragment.
    "http://logs.example.com:8514/?app=demo",
    "https://logs.example.com#insecure",
    "http://logs.example.com/herolog/?",
    "http://logs.example.com/herolog ",
]


@pytest.mark.parametrize(
    "url",
    ["https://user:p#S3CRET@h.example.com", "//user:S3CRET@h.example.com", "user:S3CRET@h"],
)
def test_a_bad_server_url_is_refused_without_its_password(url: str) -> None:
    code, err = invoke("logs", "--server", url)
    assert code == 2, err
    assert "is not a server URL" in one_error_line(err)
    assert "S3CRET" not in err


@pytest.mark.parametrize("command", REMOTE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_server_url_is_a_usage_error(command: tuple[str, ...], url: str) -> None:
    for how in ("flag", "environment"):
        args = [*command, "--server", url] if how == "flag" else list(command)
        env = {"HEROLOG_URL": url} if how == "environment" else None
        code, err = invoke(*args, env=env)
        assert code == 2, (how, err)
        assert "is not a server URL" in one_error_line(err), how


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_server_url_for_run_is_a_usage_error_before_the_command(
    url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    for how in ("flag", "environment"):
        server = ["--server", url] if how == "flag" else []
        env = {"HEROLOG_URL": url} if how == "environment" else None
        code, err = invoke("run", *server, "--", "touch", str(marker), env=env)
        assert code == 2, (how, err)
        assert "is not a server URL" in one_error_line(err), how
    assert not marker.exists()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # httpx took the address's last colon for the port's: (Invalid port: ':1')
        ("http://[::1", "its IPv6 address has no closing bracket, as in http://[::1]:8514"),
        ("https://[fe80::1/herolog", "its IPv6 address has no closing bracket"),
        ("http://u:S3CRET@[::1:8514", "its IPv6 address has no closing bracket"),
        # One over the range was said to be no server URL, without why; 0 was tried.
        ("http://127.0.0.1:99999", "its port must be 1 to 65535"),
        ("http://[::1]:65536/herolog", "its port must be 1 to 65535"),
        ("http://u:S3CRET@127.0.0.1:0", "its port must be 1 to 65535"),
        # Taken by httpx, and a traceback where the proxy settings read the port.
        ("http://127.0.0.1:-1", "its port must be 1 to 65535"),
        ("http://127.0.0.1:+8514", "its port must be 1 to 65535"),
        # A space (an env file's trailing one) was a port out of range, and after a path
        # taken, every request a 404 ('No such API endpoint: GET / /apps').
        ("http://127.0.0.1: 8514", "it holds a space or a control character, as no URL does"),
        ("http://127.0.0.1:8514 ", "it holds a space or a control character, as no URL does"),
        ("http://logs.example.com/ ", "it holds a space or a control character"),
        (" http://logs.example.com", "it holds a space or a control character"),
        ("http://u:S3CRET x@logs.example.com/", "it holds a space or a control character"),
        ("http://logs.example.com\t", "it holds a space or a control character"),
    ],
)
def test_a_bad_server_url_says_what_is_wrong(url: str, why: str) -> None:
    for how in ("flag", "environment"):
        args = ["logs", "--server", url] if how == "flag" else ["logs"]
        env = {"HEROLOG_URL": url} if how == "environment" else None
        code, err = invoke(*args, env=env)
        assert code == 2, (how, err)
        error = one_error_line(err)
        assert "is not a server URL: " + why in error, how
        assert "S3CRET" not in err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", REMOTE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("password", ["pa55word-xyz", "pw"])
def test_a_server_that_cannot_be_reached_is_one_line_without_its_password(
    command: tuple[str, ...], password: str
) -> None:
    url = f"http://admin:{password}@127.0.0.1:{closed_port()}"
    code, err = invoke(*command, "--server", url)
    assert code == 1
    line = one_error_line(err)
    assert line.startswith("Error: cannot reach http://admin:***@127.0.0.1:"), line
    assert f":{password}@" not in err


class _Redirecting(QuietHandler):
    """A proxy that sends plain HTTP to its https:// URL, as nginx's `return 301` does."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(301)
        self.send_header("Location", f"https://{self.headers['Host']}{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _answer


@pytest.mark.parametrize("command", REMOTE_COMMANDS, ids=" ".join)
def test_a_server_that_redirects_is_one_line_naming_its_answer(command: tuple[str, ...]) -> None:
    """A redirect is not followed (it would take the API key elsewhere): the 301 is what
    went wrong, not an answer that is no herolog serve's."""
    with serving(_Redirecting) as server:
        url = f"http://127.0.0.1:{server.port}"
        code, err = invoke(*command, "--server", url)
    assert code == 1
    line = one_error_line(err)
    assert line.startswith(f"Error: {url} could not "), line
    assert line.endswith(" (301): Moved Permanently"), line


class _NotHerolog(QuietHandler):
    """A server that answers JSON, but not drain objects."""

    def _answer(self) -> None:
        body = json.dumps([{"id": 1}] if self.command == "GET" else {"id": 1}).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def not_herolog() -> Iterator[str]:
    with serving(_NotHerolog) as server:
        yield f"http://u:pw@127.0.0.1:{server.port}"


@pytest.mark.parametrize("command", [c for c in REMOTE_COMMANDS if c[0] == "drain"], ids=" ".join)
def test_a_server_that_answers_something_else_than_drains(
    command: tuple[str, ...], not_herolog: str
) -> None:
    code, err = invoke(*command, "-a", "demo", "--server", not_herolog)
    assert code == 1
    line = one_error_line(err)
    assert "did not answer with a drain" in line, line
    assert "is it a herolog serve?" in line
    assert ":pw@" not in line


class _OtherServer(QuietHandler):
    """A server that is not herolog: nginx's welcome page, a JSON API of another kind, a
    site with no such path (404), or one whose log-session URL answers plain text."""

    kind = "web page"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        status, kind, body = 200, "text/html", b"<html><body>Welcome to nginx!</body></html>"
        if self.kind == "json":  # 201 to a POST, as an API creating something answers
            status, kind, body = (
                201 if self.command == "POST" else 200,
                "application/json",
                b'{"id": 1}',
            )
        elif self.kind == "404":
            status, body = 404, b"<html><body>404 Not Found</body></html>"
        elif self.kind == "plain stream":
            if self.command == "POST":
                url = f"http://{self.headers['Host']}/stream"
                status, kind = 201, "application/json"
                body = json.dumps({"logplex_url": url}).encode()
            else:
                kind, body = "text/plain", b"data: hello\n\n"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer


@pytest.mark.parametrize(
    ("kind", "command", "said"),
    [
        ("web page", ("apps",), "did not answer with a list of apps: is it a herolog serve?"),
        ("json", ("apps",), "did not answer with a list of apps: is it a herolog serve?"),
        (
            "web page",
            ("logs", "-a", "demo"),
            "could not create a log session (200 OK): it answered with a web page,"
            " not as herolog serve does",
        ),
        ("json", ("logs", "-a", "demo"), "is not a herolog server (no log session)"),
        (
            "plain stream",
            ("logs", "-a", "demo"),
            "did not answer with a log stream: Expected response header Content-Type to contain"
            " 'text/event-stream', got 'text/plain'",
        ),
        (
            "web page",
            ("drain", "list", "-a", "demo"),
            "did not answer with JSON: is it a herolog serve?",
        ),
        (
            "json",
            ("drain", "list", "-a", "demo"),
            "did not answer with a list of drains: is it a herolog serve?",
        ),
    ],
)
def test_a_server_that_is_not_herolog_is_one_line_naming_it(
    kind: str, command: tuple[str, ...], said: str
) -> None:
    """--server pointed at some other web server (a typo in the port, a site behind the same
    name): exit 1 and one line that names the server, never a traceback."""
    handler = type("Other", (_OtherServer,), {"kind": kind})
    with serving(handler) as server:
        url = f"http://127.0.0.1:{server.port}"
        code, err = invoke(*command, "--server", url)
    assert code == 1, err
    assert one_error_line(err) == f"Error: {url} {said}"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("404", "has no drain intake (404): is it a herolog serve?"),
        (
            "web page",
            "took the lines but did not answer as herolog serve does (204): is it a herolog serve?",
        ),
    ],
)
def test_run_to_a_server_that_is_not_herolog_does_not_run_the_command(
    tmp_path: Path, kind: str, said: str
) -> None:
    """The empty batch run --server posts first is refused, or taken as no herolog takes
    it: one line, exit 1, and the command never runs (its lines would have gone nowhere)."""
    ran = tmp_path / "ran"
    handler = type("Other", (_OtherServer,), {"kind": kind})
    with serving(handler) as server:
        url = f"http://127.0.0.1:{server.port}"
        proc = herolog_process(
            "run", "-a", "demo", "--server", url, "--", "sh", "-c", f"touch {ran}; echo hi"
        )
    assert proc.returncode == 1, proc.stderr
    assert one_error_line(proc.stderr) == f"Error: {url} {said}"
    assert proc.stdout == ""
    assert not ran.exists()


# Output and input that fail -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["logs"], ["logs", "--json"], ["apps"], ["store", "info"], ["--help"], ["-V"], ["logs", "-h"]],
)
def test_output_that_cannot_be_written_is_one_line(herolog_home: Path, args: list[str]) -> None:
    """`> /dev/full`: every write fails with ENOSPC, as on a disk that has filled up."""
    store = open_store()
    fill(store, "demo", ["one", "two"])
    store.close()
    with Path("/dev/full").open("w") as full:
        proc = herolog_process(*args, stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "Error: cannot write the output: No space left on device\n"


@pytest.mark.parametrize("args", [["logs"], ["logs", "--json"], ["logs", "-t"], ["apps"]])
def test_an_output_open_only_for_reading_is_one_line(herolog_home: Path, args: list[str]) -> None:
    """`herolog logs 1<file` or `>&0` (a mistyped redirection): every write fails with
    EBADF, which came out as a traceback; cat says 'write error: Bad file descriptor'."""
    store = open_store()
    fill(store, "demo", ["one", "two"])
    store.close()
    with Path(os.devnull).open("rb") as read_only:
        proc = herolog_process(*args, stdout=read_only, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "Error: cannot write the output: Bad file descriptor\n"


def with_stdout_closed(*args: str) -> subprocess.CompletedProcess[str]:
    """``herolog ARGS >&-``, as a shell starts it."""
    command = [sys.executable, "-m", "herolog", *args]
    return subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *command],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=herolog_env(),
        timeout=60,
    )


@pytest.mark.parametrize("args", [["logs"], ["logs", "--json"], ["logs", "-t"], ["apps"]])
def test_a_closed_output_is_one_line(herolog_home: Path, args: list[str]) -> None:
    """`herolog logs >&-`: it printed nothing and exited 0, which reads as an empty store
    (a tail went on writing nowhere); cat, ls and a shell's echo say 'write error: Bad file
    descriptor' and fail, as herolog does for `1<file`."""
    store = open_store()
    fill(store, "demo", ["one", "two"])
    store.close()
    proc = with_stdout_closed(*args)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "Error: cannot write the output: Bad file descriptor\n"


@pytest.mark.parametrize(
    ("args", "status"),
    [(["logs", "-a", "nosuch"], 1), (["logs", "-n", "99999"], 2), (["nosuchcommand"], 2)],
    ids=["unknown app", "usage", "unknown command"],
)
def test_an_error_whose_reader_has_gone_keeps_its_status(
    herolog_home: Path, args: list[str], status: int
) -> None:
    """`herolog logs -a x 2>&1 | true`: the error could not be shown, and click's showing of
    it failed on, to the interpreter's last flush: status 120 for any error."""
    store = open_store()
    fill(store, "demo", ["one"])
    store.close()
    read, write = os.pipe()
    os.close(read)
    try:
        proc = herolog_process(*args, stdout=write, stderr=write, timeout=60)
    finally:
        os.close(write)
    assert proc.returncode == status


def test_a_closed_output_fails_only_a_write(herolog_home: Path) -> None:
    """As `cat /dev/null >&-` succeeds: nothing to write is no error, and a run stores its
    command's output and ends with its status, as with `| head`."""
    store = open_store()
    fill(store, "demo", ["one", "two"])
    store.close()
    proc = with_stdout_closed("logs", "-n", "0")
    assert (proc.returncode, proc.stderr) == (0, "")
    proc = with_stdout_closed("run", "-a", "demo", "--", "sh", "-c", "echo three; exit 3")
    assert (proc.returncode, proc.stderr) == (3, "")
    assert "app[run.1]: three\n" in herolog_process("logs", "-a", "demo").stdout


@pytest.mark.parametrize(
    ("closed", "args", "status", "out", "stored"),
    [
        ((0,), ["import", "-", "-a", "demo"], 0, "", []),
        ((2,), ["logs", "-a", "demo", "-n", "1"], 0, ": two\n", []),
        ((2,), ["import", "IMPORTED", "-a", "demo"], 0, "", ["three"]),
        ((0, 1, 2), ["logs", "-a", "demo"], 1, "", []),
    ],
    ids=["import - <&-", "logs 2>&-", "import 2>&-", "logs <&- >&- 2>&-"],
)
def test_a_closed_input_or_error_stream_reads_nothing_and_writes_nowhere(
    herolog_home: Path,
    closed: tuple[int, ...],
    args: list[str],
    status: int,
    out: str,
    stored: list[str],
) -> None:
    """Started with a standard stream closed, as a shell's `<&-` or a daemon's launcher
    leaves it: Python has None for it, which was a traceback (AttributeError,
    "Was not able to determine binary stream for sys.stdin"). A closed input reads as
    empty and a closed stderr takes the errors nowhere; a closed stdout still fails the
    command that has lines to write (test_a_closed_output_is_one_line)."""
    store = open_store()
    fill(store, "demo", ["one", "two"])
    store.close()
    imported = herolog_home / "imported.log"
    imported.write_text("2024-03-05T09:00:00+00:00 app[web.1]: three\n")
    args = [str(imported) if arg == "IMPORTED" else arg for arg in args]

    def close() -> None:
        for fd in closed:
            os.close(fd)

    proc = herolog_process(*args, preexec_fn=close, timeout=60)
    assert proc.returncode == status, proc.stderr
    assert proc.stdout.endswith(out)
    assert bool(proc.stdout) == bool(out)
    assert "Traceback" not in proc.stderr
    store = open_store()
    try:
        messages = [x.message for x in store.last(LineFilter(app="demo"), 10)[0]]
    finally:
        store.close()
    assert messages == ["one", "two", *stored]


def test_a_closed_input_is_named_standard_input(herolog_home: Path) -> None:
    """`herolog import - <&-` said "Nothing imported: 0 holds no log lines.", naming the
    descriptor of the /dev/null that stands in for the closed input."""
    proc = herolog_process("import", "-", "-a", "demo", preexec_fn=lambda: os.close(0))
    assert (proc.returncode, proc.stderr) == (
        0,
        "Nothing imported: standard input holds no log lines.\n",
    )


def test_an_input_that_cannot_be_read_is_one_line(herolog_home: Path) -> None:
    """Reading /proc/self/mem from its start fails with EIO: a read error mid-file."""
    code, err = invoke("import", "/proc/self/mem", "-a", "demo")
    assert code == 1
    assert one_error_line(err) == (
        "Error: /proc/self/mem: cannot read it: Input/output error;"
        " the 0 lines before it were imported, nothing after it"
    )


# Store files that cannot be used ------------------------------------------------------

STORE_COMMANDS: dict[str, list[str]] = {
    "logs": ["logs"],
    "logs --tail": ["logs", "--tail", "--until", "now"],
    "logs --json -a": ["logs", "--json", "-a", "demo", "-n", "5"],
    "apps": ["apps"],
    "store info": ["store", "info", "--json"],
    "store history": ["store", "history"],
    "store history N": ["store", "history", "10"],
    "drain": ["drain"],
    "drain add": ["drain", "add", "https://logs.example.com/new"],
    "drain remove": ["drain", "remove", "https://logs.example.com/old"],
    "import": ["import", "-"],
    "serve": ["serve", "--port", "0"],  # only where it cannot start: in-process, it would run
}
WRITERS = {"store history N", "drain add", "drain remove", "import"}


def broken_with(kind: str, path: Path) -> None:
    """Make the store at ``path`` broken in the way ``kind`` says."""
    rng = random.Random(kind)
    if kind == "random bytes":
        path.write_bytes(rng.randbytes(64 << 10))
        return
    if kind == "another program's SQLite":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
        db.commit()
        db.close()
        return
    store = open_store(path)
    store.set_history(100_000)
    fill(store, "demo", ["x" * 200] * 3000)
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    if kind == "truncated":
        del data[len(data) // 2 :]
    elif kind == "corrupt pages":  # the header and schema survive: it opens, then fails
        for start in range(page, len(data), page):
            data[start : start + page] = rng.randbytes(page)
    path.write_bytes(bytes(data))


def move_aside_line(path: Path) -> str:
    return (
        f"Error: {path} is not a usable herolog store ("
        f"...); move it aside (mv '{path}' '{path}.broken') and herolog starts a new one"
    )


def assert_move_aside(line: str, path: Path) -> None:
    start, end = move_aside_line(path).split("...")
    assert line.startswith(start), line
    assert line.endswith(end), line


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=str)
@pytest.mark.parametrize(
    "kind", ["random bytes", "truncated", "another program's SQLite", "corrupt pages"]
)
def test_a_corrupt_store_is_one_line_naming_it_and_how_to_move_it_aside(
    herolog_home: Path, command: str, kind: str
) -> None:
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    broken_with(kind, path)
    code, err = invoke(*STORE_COMMANDS[command], stdin=b"<13>1 - h a p - - x\n")
    assert code == 1, err
    assert_move_aside(one_error_line(err), path)


@pytest.mark.parametrize("command", sorted(WRITERS | {"serve"}))
@pytest.mark.parametrize(
    "kind",
    [
        "random bytes",
        "truncated",
        "corrupt pages",
        "another program's SQLite",
    ],
)
def test_a_store_herolog_refuses_is_left_as_it_was(
    herolog_home: Path, command: str, kind: str
) -> None:
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    broken_with(kind, path)
    before = path.read_bytes()
    code, _ = invoke(*STORE_COMMANDS[command], stdin=b"<13>1 - h a p - - x\n")
    assert code == 1
    assert path.read_bytes() == before, "herolog changed a file it refuses to use"


def test_run_says_when_its_store_is_corrupt_and_keeps_its_commands_status(
    herolog_home: Path,
) -> None:
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    broken_with("corrupt pages", path)
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "run", "--", sys.executable, "-c", "exit(3)"],
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=60,
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    # The four lines of the dyno manager: starting, up, exited, complete.
    prefix = "herolog run: could not store 4 of 4 lines: "
    assert line.startswith(prefix), line
    assert_move_aside("Error: " + line.removeprefix(prefix), path)


def test_a_broken_store_file_at_startup_of_a_real_serve(herolog_home: Path) -> None:
    """The store writer would meet it first, in another process: serve checks it itself."""
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    broken_with("corrupt pages", path)
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=60,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert_move_aside(line, path)


def test_a_zero_byte_store_is_a_new_empty_store(herolog_home: Path) -> None:
    """An empty file is what herolog itself creates first (with the owner-only mode), and
    SQLite reads it as an empty database: it becomes the store."""
    herolog_home.mkdir()
    (herolog_home / "logs.db").write_bytes(b"")
    for command in ("logs", "apps", "store info", "store history", "drain"):
        assert invoke(*STORE_COMMANDS[command]) == (0, ""), command
    code, err = invoke("import", "-", "-a", "demo", stdin=b"<13>1 - h app web.1 - hello\n")
    assert code == 0, err
    result = CliRunner().invoke(cli, ["logs", "-a", "demo"])
    assert result.stdout.endswith("app[web.1]: hello\n")


@pytest.fixture(params=["mode 000", "a directory"])
def unreadable_store(herolog_home: Path, request: pytest.FixtureRequest) -> Path:
    """A store path herolog cannot open: a file of mode 000, or a directory where the file
    should be."""
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    if request.param == "a directory":
        path.mkdir()
    else:
        path.write_bytes(b"")
        path.chmod(0)
    return path


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=str)
def test_an_unreadable_store_is_one_line_naming_it(unreadable_store: Path, command: str) -> None:
    """Writers said of a file of mode 000 that it was read-only, and readers that it could
    not be written. Run where the mode binds: as root, without root's capabilities."""
    proc = subprocess.run(
        bound_by_file_modes([sys.executable, "-m", "herolog", *STORE_COMMANDS[command]]),
        input="<13>1 - h a p - - x\n",
        capture_output=True,
        text=True,
        env=herolog_env(),
        timeout=30,
    )
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert line.startswith(f"Error: cannot open the store {unreadable_store}: "), line
    if unreadable_store.is_file():
        assert line.endswith(": its file cannot be read by this user"), line


def a_store_with_a_drain(herolog_home: Path) -> Path:
    """A store holding a line of app demo, and a drain of app default."""
    herolog_home.mkdir()
    path = herolog_home / "logs.db"
    store = open_store(path)
    fill(store, "demo", ["kept"])
    store.close()
    added = invoke("drain", "add", "https://logs.example.com/old")
    assert added == (0, f"Warning: {new_app_warning('default')}\n")
    return path


@contextlib.contextmanager
def unwritable(target: Path, mode: int) -> Iterator[None]:
    """``target`` (a file or a directory) made one the user may not write to: ``mode``, or
    for root, whom modes do not stop, immutable (chattr +i)."""
    if os.geteuid() != 0:
        before = stat.S_IMODE(target.stat().st_mode)
        target.chmod(mode)
        try:
            yield
        finally:
            target.chmod(before)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.fail("as root this test needs chattr (e2fsprogs) to make a file read-only")
    made = subprocess.run([chattr, "+i", str(target)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"chattr +i failed (needs CAP_LINUX_IMMUTABLE and ext4/xfs): {made.stderr}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(target)], check=True)


@pytest.fixture
def read_only_store(herolog_home: Path) -> Iterator[Path]:
    """A store the user may read but not write."""
    path = a_store_with_a_drain(herolog_home)
    with unwritable(path, stat.S_IRUSR):
        yield path


def refused_to_write(store: Path, command: str) -> str | None:
    """What ``command`` says of a ``store`` it may not write to: nothing from a reader,
    which reads it (exit 0); from a writer (exit 1), one error line naming the store."""
    code, err = invoke(*STORE_COMMANDS[command], stdin=b"<13>1 - h a p - - x\n")
    if command not in WRITERS:
        assert (code, err) == (0, "")
        return None
    assert code == 1, err
    line = one_error_line(err)
    assert str(store) in line
    return line


@pytest.mark.parametrize("command", [c for c in STORE_COMMANDS if c != "serve"], ids=str)
def test_a_read_only_store_is_read_and_not_written(read_only_store: Path, command: str) -> None:
    if (line := refused_to_write(read_only_store, command)) is not None:
        assert "readonly" in line or "read-only" in line, line


@pytest.fixture
def store_in_a_read_only_directory(herolog_home: Path) -> Iterator[Path]:
    """A store in a directory the user may not write to (a backup's, say), where SQLite
    cannot make the -wal and -shm files it reads a WAL store with."""
    path = a_store_with_a_drain(herolog_home)
    assert not Path(f"{path}-wal").exists()
    with unwritable(herolog_home, stat.S_IRUSR | stat.S_IXUSR):
        yield path


@pytest.mark.parametrize("command", [c for c in STORE_COMMANDS if c != "serve"], ids=str)
def test_a_store_in_a_read_only_directory_is_read_and_not_written(
    store_in_a_read_only_directory: Path, command: str
) -> None:
    """Read as on a read-only file system; writers say why they cannot write, where SQLite
    says only "unable to open database file" (and readers said it too)."""
    if (line := refused_to_write(store_in_a_read_only_directory, command)) is not None:
        directory = store_in_a_read_only_directory.parent
        assert f"its directory {directory} cannot be written" in line, line


def test_a_store_in_a_read_only_directory_shows_its_lines(
    store_in_a_read_only_directory: Path,
) -> None:
    result = CliRunner().invoke(cli, ["logs", "-a", "demo"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("app[web.1]: kept\n")


@pytest.mark.parametrize("command", [c for c in STORE_COMMANDS if c != "serve"], ids=str)
@pytest.mark.parametrize("home", ["a file", "a symlink loop"])
def test_a_herolog_home_that_cannot_hold_a_store_is_one_line(
    tmp_path: Path, command: str, home: str
) -> None:
    """Not "no store yet" (nothing shown, exit 0): the reader would wait for ever."""
    where = tmp_path / "home"
    if home == "a file":
        where.write_text("")
        why = "Not a directory"
    else:
        where.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(where)
        why = "Too many levels of symbolic links"
    code, err = invoke(*STORE_COMMANDS[command], env={"HEROLOG_HOME": str(where)})
    assert code == 1, err
    line = one_error_line(err)
    assert str(where / "logs.db") in line or str(where) in line, line
    assert why in line or "not a directory" in line, line
