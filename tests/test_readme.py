from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from herolog.cli import cli
from herolog.completion import Cmd, command_tree
from herolog.store import SCHEMA_VERSION, open_store
from tests.helpers import herolog_env

README = (Path(__file__).parent.parent / "README.md").read_text()


def commands(cmd: Cmd) -> list[Cmd]:
    return [cmd] + [c for sub in cmd.subcommands for c in commands(sub)]


ALL = commands(command_tree(cli))


@pytest.mark.parametrize("cmd", ALL, ids=[c.key for c in ALL])
def test_every_command_and_option_is_documented(cmd: Cmd) -> None:
    if len(cmd.path) > 1:
        assert cmd.key in README, f"`{cmd.key}` is not in the README"
    for option in cmd.options:
        for name in option.names:
            if name in ("-V", "--version"):
                continue
            # A word of its own: -t is in --tail, -a in --app and any short option in prose.
            word = rf"(?<![\w-]){re.escape(name)}(?![\w-])"
            assert re.search(word, README), f"{cmd.key} {name} is not in the README"


def test_readme_commands_ci_runs_are_present() -> None:
    assert "<!-- test-command -->" in README
    assert "<!-- quick-start -->" in README
    assert "<!-- slow-command -->" in README


def click_command(cmd: Cmd) -> click.Command:
    command: click.Command = cli
    for name in cmd.path[1:]:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), name)
        assert found is not None, cmd.key
        command = found
    return command


# serve's help says it of all its options at once: each reads HEROLOG_ and its name.
READ_FROM_THE_ENVIRONMENT = [c for c in ALL if c.path[1:2] != ["serve"]]


@pytest.mark.parametrize(
    "cmd", READ_FROM_THE_ENVIRONMENT, ids=[c.key for c in READ_FROM_THE_ENVIRONMENT]
)
def test_an_option_the_environment_can_give_names_its_variable_in_its_help(cmd: Cmd) -> None:
    """Else its help tells a default the variable changes: `drain list` without -a lists
    $HEROLOG_APP's drains, not every app's, and `logs` reads $HEROLOG_URL's server."""
    for param in click_command(cmd).params:
        if isinstance(param, click.Option) and isinstance(param.envvar, str):
            assert f"${param.envvar}" in (param.help or ""), f"{cmd.key} {param.opts[0]}"


GROUPS = [c for c in ALL if c.subcommands]


@pytest.mark.parametrize("group", GROUPS, ids=[c.key for c in GROUPS])
def test_a_group_s_help_lists_each_command_s_summary_whole(group: Cmd) -> None:
    """``herolog --help`` is a newcomer's first screen: click cuts a summary that does not fit
    80 columns off with '...', mid-sentence."""
    # Outside a test click wraps help at 78 of 80 columns (2 kept free), CliRunner at what
    # it is given: at 80, it passed a summary that `herolog --help` cut off.
    result = CliRunner().invoke(cli, [*group.path[1:], "--help"], terminal_width=78)
    assert result.exit_code == 0, result.output
    commands = result.output.split("\nCommands:\n")[1]
    assert "..." not in commands, commands


CI_RUN = Path(__file__).parent.parent / ".ci" / "run"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("test-command", "no test command in README.md"),
        ("quick-start", "no quick start in README.md"),
        ("slow-command", "no slow test command in README.md"),
    ],
)
def test_ci_says_which_readme_command_is_missing_before_it_does_anything(
    tmp_path: Path, missing: str, message: str
) -> None:
    """A README whose block .ci/run reads was renamed or lost: CI stops saying so, before it
    installs tools or deletes .venv, not with status 1 and nothing printed."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(CI_RUN, tmp_path / ".ci" / "run")
    kept = [b for b in ("test-command", "quick-start", "slow-command") if b != missing]
    readme = "".join(f"<!-- {b} -->\n```sh\ntrue\n```\n<!-- /{b} -->\n" for b in kept)
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / ".venv").mkdir()
    proc = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", f"{message}\n")
    assert (tmp_path / ".venv").is_dir()


def test_the_uvicorn_releases_the_readme_names_are_those_pyproject_asks_for() -> None:
    """The floor moved to 0.41 (a SIGTERM during start-up) and the README still said 0.30."""
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    wanted = [d for d in pyproject["project"]["dependencies"] if d.startswith("uvicorn")]
    asked = re.fullmatch(r"uvicorn>=(\d+\.\d+),<0\.(\d+)", wanted[0])
    assert asked is not None, wanted
    floor, cap = asked.groups()
    said = re.search(r"a uvicorn release its test suite has passed on \((\S+) to (\S+)\)", README)
    assert said is not None
    assert said.groups() == (floor, f"0.{int(cap) - 1}")


BENCHMARKS = (Path(__file__).parent.parent / "BENCHMARKS.md").read_text()

# A figure in a benchmark's output in BENCHMARKS.md, and the README's words for it, rounded
# to hundreds or thousands as the Performance table writes them.
HEADLINE_FIGURES = [
    (r"herolog parse_logplex :\s+([\d,]+) frames/s", "{} frames/s"),
    (r"--json \(JsonRenderer\) :\s+([\d,]+) lines/s", "{} lines/s"),
    (r"1,000,000 octet-counted frames: ([\d,]+) lines/s", "**{} lines/s**"),
    (r"herolog   :\s+([\d,]+) lines/s", "**{} lines/s**"),
    (r"\(([\d,]+) lines/s\), [\d,]+ dropped by the drain buffer", "{} lines/s delivered"),
    (r"soak: 10.0 minutes at ([\d,]+) lines/s", "{} lines/s ("),
]


@pytest.mark.parametrize(
    ("output", "said"),
    HEADLINE_FIGURES,
    ids=["parser", "render", "ingest-syslog", "syslog-peers", "forward", "soak"],
)
def test_the_performance_table_quotes_the_run_benchmarks_md_holds(output: str, said: str) -> None:
    """The table says its figures are BENCHMARKS.md's run: the --json rendering row kept the
    run before's after every other row had moved on."""
    performance = README.split("\n## Performance\n")[1].split("\n## ")[0]
    found = re.search(output, BENCHMARKS)
    assert found is not None, output
    figure = int(found.group(1).replace(",", ""))
    either = [said.format(f"{round(figure, digits):,}") for digits in (-2, -3)]
    assert any(words in performance for words in either), either


def test_the_reliability_table_s_soak_is_the_one_benchmarks_md_holds() -> None:
    """Its row said it was the last run, and kept the run before's figures when the
    Performance table moved on to the next."""
    stored = re.search(r"\[ok\] ([\d,]+) lines stored after the readers started", BENCHMARKS)
    assert stored is not None
    soak = [row for row in README.splitlines() if row.startswith("| soak |")]
    assert len(soak) == 1
    assert f"every reader accounted for all {stored.group(1)} lines" in soak[0]


def test_the_soak_s_drains_paragraph_quotes_the_run_benchmarks_md_holds() -> None:
    """The paragraph after the Reliability table kept the soak of 10:32 (a fifth dropped,
    14-15 ms between batches, 86,400 lines/s forwarded) after both tables moved to 15:10."""
    paragraph = README.split("\nIn the soak the healthy drains, too, dropped ")[1].split("\n\n")[0]
    paragraph = " ".join(paragraph.split())
    healthy = re.findall(
        r"healthy drain: .*\n\s+.*?, ([\d.]+) ms from the answer before", BENCHMARKS
    )
    gaps = sorted(round(float(ms)) for ms in healthy)
    assert len(gaps) > 1
    assert f"some {gaps[0]}\N{EN DASH}{gaps[-1]} ms after the answer" in paragraph
    json_cpu = re.search(r"local --json ([\d.]+)", BENCHMARKS)
    assert json_cpu is not None
    assert f"took {json_cpu.group(1)} of a core" in paragraph
    forwarded = re.search(r"\(([\d,]+) lines/s\), [\d,]+ dropped by the drain buffer", BENCHMARKS)
    assert forwarded is not None
    figure = round(int(forwarded.group(1).replace(",", "")), -2)
    assert f"forwarding delivered {figure:,} lines/s" in paragraph


SERVE = click_command(next(c for c in ALL if c.path[1:] == ["serve"]))
SERVE_OPTIONS = [p for p in SERVE.params if isinstance(p, click.Option)]


def serve_row(option: click.Option) -> str:
    """The row of serve's table that has the option (--keyfile shares --certfile's)."""
    table = README.split("\n| option | environment | meaning |\n")[1].split("\n\n")[0]
    rows = [r for r in table.splitlines() if re.match(rf"\| [^|]*`{option.opts[0]}[ `]", r)]
    assert len(rows) == 1, option.opts[0]
    return rows[0]


@pytest.mark.parametrize("option", SERVE_OPTIONS, ids=[p.opts[0] for p in SERVE_OPTIONS])
def test_serve_s_table_names_each_option_s_variable(option: click.Option) -> None:
    assert f"`{option.envvar}`" in serve_row(option)


# The README's words for each default serve's table gives, and what they stand for.
SERVE_DEFAULTS = {
    "--host": ("(default `127.0.0.1`", "127.0.0.1"),
    "--port": ("(default 8514)", 8514),
    "--syslog-app": ("(default `default`)", "default"),
    "--syslog-max-connections": ("(default 10,000,", 10_000),
    "--drain-buffer": ("(default 1024,", 1024),
    "--drain-flush-timeout": ("(default 5;", 5.0),
    "--max-body": ("(default 5 MiB)", 5 << 20),
    "--body-timeout": ("(default 30)", 30.0),
    "--header-timeout": ("(default 10)", 10.0),
}


@pytest.mark.parametrize("option", SERVE_OPTIONS, ids=[p.opts[0] for p in SERVE_OPTIONS])
def test_serve_s_table_gives_each_option_s_default(option: click.Option) -> None:
    said, default = SERVE_DEFAULTS.get(option.opts[0], (None, None))
    row = serve_row(option)
    if said is None:
        assert "(default " not in row, "a default SERVE_DEFAULTS does not know"
    else:
        assert said in row
        assert option.default == default


def quoted_in_readme(message: str) -> bool:
    """Whether README quotes ``message`` whole, as `message`, wherever its lines break."""
    return f"`{message}`" in " ".join(README.split())


def said(result: Result, store: Path | None = None) -> str:
    """The last line a command said on stderr (after click's usage lines, an import's count),
    without click's 'Error: ', its store's path as README writes it (PATH)."""
    line = result.stderr.splitlines()[-1].removeprefix("Error: ")
    return line if store is None else line.replace(str(store), "PATH")


def test_the_store_commands_note_on_herolog_url_is_quoted_whole(herolog_home: Path) -> None:
    """README quoted its first half as the whole of it."""
    result = CliRunner().invoke(cli, ["store", "info"], env={"HEROLOG_URL": "http://127.0.0.1:1"})
    assert result.exit_code == 0, result.output
    assert quoted_in_readme(said(result, herolog_home / "logs.db"))


def test_a_bad_auth_from_the_environment_is_quoted_whole() -> None:
    result = CliRunner().invoke(cli, ["serve", "--port", "0"], env={"HEROLOG_AUTH": "drain"})
    assert result.exit_code == 2, result.output
    assert quoted_in_readme(said(result))


def test_a_store_of_a_newer_schema_is_refused_as_readme_says(herolog_home: Path) -> None:
    """The example names this herolog's version and schema, and the next schema."""
    open_store(herolog_home / "logs.db").close()
    with contextlib.closing(sqlite3.connect(herolog_home / "logs.db")) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    result = CliRunner().invoke(cli, ["logs"])
    assert result.exit_code == 1, result.output
    assert quoted_in_readme(said(result, herolog_home / "logs.db"))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.log", b""),
        ("cut.log", b"2024-03-05T09:14:07+00:00 app[web.1]: ok\n2024-03-05T09:14:0"),
    ],
    ids=["empty", "cut off"],
)
def test_what_import_says_of_an_input_is_quoted_as_it_says_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: bytes
) -> None:
    monkeypatch.chdir(tmp_path)  # the file's name as it is given, as in README's example
    Path(name).write_bytes(content)
    result = CliRunner().invoke(cli, ["import", name, "-a", "demo"])
    assert result.exit_code == 0, result.output
    assert quoted_in_readme(said(result)), said(result)


def slow_tests(path: Path) -> set[str]:
    """The names of the tests in ``path`` that are marked slow (their decorators read as text)."""
    found = re.findall(
        r"((?:^@.*\n(?:^ .*\n)*)*)^(?:async )?def (test_\w+)", path.read_text(), re.M
    )
    return {name for decorators, name in found if "pytest.mark.slow" in decorators}


def test_the_reliability_table_s_commands_run_the_tests_they_name() -> None:
    """The crash rounds became slow tests, which the default run leaves out, and the table's
    `-k crash_rounds` without -m collected nothing: 'no tests collected (21 deselected)'."""
    table = README.split("\n## Reliability\n")[1].split("\n\n| what |")[1].split("\n\n")[0]
    commands = re.findall(r"`(?:\w+=\S+ )*\.venv/bin/pytest ([^`]*)`", table)
    assert len(commands) >= 5, commands
    for command in commands:
        words = shlex.split(command)
        files = [Path(__file__).parent.parent / w for w in words if w.startswith("tests/")]
        assert files, command
        slow = {name for path in files for name in slow_tests(path)}
        if "-k" in words:
            named = words[words.index("-k") + 1]
            assert named.isidentifier(), f"{command}: -k of one word, which this test reads"
            slow = {name for name in slow if named in name}
        marks = words[words.index("-m") + 1] if "-m" in words else "not slow"
        if slow and "-k" in words:
            assert marks in ("slow", "slow or not slow"), f"{command} leaves out {sorted(slow)}"


@pytest.mark.subprocess
def test_the_script_that_starts_serve_and_waits_for_its_start_up_lines_runs(
    herolog_home: Path, tmp_path: Path
) -> None:
    """A script starting serve with --port 0 had the README's word only that the port is
    'shown in the start-up lines', not which line, nor that serve is ready once they are
    out: it retried its first request, or read the port from a first line that can be
    another. The README's script runs as written, under `set -euo pipefail`."""
    start = README.index("This script, which\n`tests/test_readme.py` runs")
    script = README[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    assert shutil.which("curl"), "install curl (apt-get install curl): the README's script uses it"
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=tmp_path,
        env=herolog_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", ""), done
    log = (tmp_path / "serve.log").read_text()
    assert "herolog serve: stopping: " in log
