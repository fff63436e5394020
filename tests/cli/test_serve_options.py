"""Every option of `herolog serve`, given on the command line or in its environment
variable, reaches the server's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from herolog.cli import cli
from herolog.cli.serve import serve
from herolog.server import ServeConfig, Server
from herolog.server.config import Credentials, DrainTiming

# option, value given, ServeConfig attribute, value expected there. "{cert}" and "{key}"
# stand for files the test writes; the other of the pair is given as an option.
CASES: list[tuple[str, str, str, Any]] = [
    ("--host", "::1", "host", "::1"),
    ("--port", "9000", "port", 9000),
    ("--syslog-port", "6514", "syslog_port", 6514),
    ("--syslog-app", "billing", "syslog_app", "billing"),
    ("--syslog-max-connections", "500", "syslog_max_connections", 500),
    ("--auth", "drain:s3cret", "auth", Credentials("drain", "s3cret")),
    ("--api-key", "k3y", "api_key", "k3y"),
    ("--public-url", "https://logs.example.com", "public_url", "https://logs.example.com"),
    ("--certfile", "{cert}", "certfile", "{cert}"),
    ("--keyfile", "{key}", "keyfile", "{key}"),
    ("--history", "5000", "history", 5000),
    ("--max-body", "2048", "max_body", 2048),
    ("--body-timeout", "7.5", "body_timeout", 7.5),
    ("--header-timeout", "3", "header_timeout", 3.0),
    ("--drain-buffer", "99", "drain_buffer", 99),
    ("--drain-flush-timeout", "0.5", "drain_timing", DrainTiming(flush_s=0.5)),
    ("--insecure-no-auth", "1", "insecure_no_auth", True),
]


def envvar(option: str) -> str:
    return "HEROLOG_" + option.removeprefix("--").replace("-", "_").upper()


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> list[ServeConfig]:
    """The configurations `serve` built, instead of serving them."""
    built: list[ServeConfig] = []
    monkeypatch.setattr(Server, "bind", lambda server: built.append(server.config))
    monkeypatch.setattr(Server, "run", lambda server: None)
    return built


def test_every_option_has_its_environment_variable() -> None:
    options = [p for p in serve.params if isinstance(p, click.Option)]
    assert {p.opts[0] for p in options} == {case[0] for case in CASES}
    for option in options:
        assert option.envvar == envvar(option.opts[0])


@pytest.mark.parametrize("source", ["option", "environment"])
@pytest.mark.parametrize(
    ("option", "value", "attribute", "expected"), CASES, ids=[case[0] for case in CASES]
)
def test_option_reaches_the_configuration(
    configs: list[ServeConfig],
    tmp_path: Path,
    source: str,
    option: str,
    value: str,
    attribute: str,
    expected: Any,
) -> None:
    files = {"{cert}": tmp_path / "cert.pem", "{key}": tmp_path / "key.pem"}
    for path in files.values():
        path.write_text("PEM\n")
    value = str(files.get(value, value))
    expected = files.get(expected, expected) if isinstance(expected, str) else expected
    args = ["--keyfile", str(files["{key}"])] if option == "--certfile" else []
    if option == "--keyfile":
        args = ["--certfile", str(files["{cert}"])]
    if source == "option":
        args += [option] if option == "--insecure-no-auth" else [option, value]
        env = {}
    else:
        env = {envvar(option): value}
    result = CliRunner().invoke(cli, ["serve", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (config,) = configs
    assert getattr(config, attribute) == expected


def test_the_options_defaults_are_the_configurations(configs: list[ServeConfig]) -> None:
    """The defaults are written twice, in the options (for --help, without importing the
    server) and in ServeConfig (for code that builds one): they must not drift apart."""
    result = CliRunner().invoke(cli, ["serve"], env={}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (config,) = configs
    assert config == ServeConfig(config.store_path)
