from __future__ import annotations

import re
import shlex
import shutil
import sqlite3
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from herolog.cli import cli
from herolog.completion import SHELLS, generate
from herolog.store import open_store
from tests.helpers import fill, herolog_env

COMPLETIONS = Path(__file__).parent.parent / "completions"
FILES = {"bash": "herolog.bash", "zsh": "herolog.zsh", "fish": "herolog.fish"}


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_scripts_are_current(shell: str) -> None:
    committed = (COMPLETIONS / FILES[shell]).read_text()
    assert generate(cli, shell) == committed, (
        f"completions/{FILES[shell]} is stale: run `herolog completion {shell} > completions/{FILES[shell]}`"
    )


def shell_path(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed for the completion tests: install it (apt-get install {name})"
    return path


def bash_complete(line: str, **env: str) -> list[str]:
    words = line.split(" ")
    script = (
        f"source {COMPLETIONS / 'herolog.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_herolog; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    proc = subprocess.run(
        [shell_path("bash"), "-c", script],
        capture_output=True,
        text=True,
        env=herolog_env(**env),
        check=True,
    )
    return [x for x in proc.stdout.splitlines() if x]


def fish_complete(line: str) -> list[str]:
    script = f"source {COMPLETIONS / 'herolog.fish'}; complete -C'{line}'"
    proc = subprocess.run(
        [shell_path("fish"), "-c", script],
        capture_output=True,
        text=True,
        env=herolog_env(),
        check=True,
    )
    return [x.split("\t")[0] for x in proc.stdout.splitlines()]


def test_bash_completes_commands_options_values_and_apps(herolog_home: Path) -> None:
    with open_store() as store:
        fill(store, "demo", ["x"])
        fill(store, "dashboard", ["x"])
    assert bash_complete("herolog ") == [
        "-V",
        "--version",
        "-h",
        "--help",
        "apps",
        "completion",
        "drain",
        "import",
        "logs",
        "run",
        "serve",
        "store",
    ]
    assert bash_complete("herolog drain ") == [
        *("-a", "--app", "--json", "--show-secrets", "--server", "-h", "--help"),
        *("add", "list", "remove"),
    ]
    assert bash_complete("herolog drain -a d") == ["dashboard", "demo"]
    assert bash_complete("herolog drain list -a d") == ["dashboard", "demo"]
    assert bash_complete("herolog serve --syslog-") == [
        "--syslog-port",
        "--syslog-app",
        "--syslog-max-connections",
    ]
    assert bash_complete("herolog serve --certfile ") != []  # files
    assert bash_complete("herolog st") == ["store"]
    assert bash_complete("herolog store ") == ["-h", "--help", "forget", "history", "info"]
    assert bash_complete("herolog logs --ta") == ["--tail"]
    assert bash_complete("herolog logs --color ") == ["auto", "always", "never"]
    assert bash_complete("herolog logs -a d") == ["dashboard", "demo"]
    assert bash_complete("herolog logs -a de") == ["demo"]
    assert bash_complete("herolog logs -n ") == []
    assert bash_complete("herolog completion ") == ["-h", "--help", "bash", "zsh", "fish"]


def test_bash_completes_app_names_as_text_and_never_runs_them(
    herolog_home: Path, tmp_path: Path
) -> None:
    """An app name is data: one that reads as a command substitution (a store written by
    an older serve, whose --syslog-app took any name) must not run when completed."""
    marker = tmp_path / "ran"
    for name in (f"$(touch {marker})", f"`touch {marker}`", "demo"):
        with open_store() as store:
            fill(store, name, ["x"])
    assert sorted(bash_complete("herolog logs -a ")) == sorted(
        ["demo", f"$(touch {marker})", f"`touch {marker}`"]
    )
    assert bash_complete("herolog logs -a $") == [f"$(touch {marker})"]
    assert not marker.exists()


def test_app_names_complete_from_the_store_with_herolog_url_set(herolog_home: Path) -> None:
    """herolog apps follows $HEROLOG_URL to a server: a TAB must not wait on a network (here
    a server that is not there), and the names are the store's, as the README says."""
    with open_store() as store:
        fill(store, "demo", ["x"])
    assert bash_complete("herolog logs -a d", HEROLOG_URL="http://127.0.0.1:9") == ["demo"]


def test_fish_completes_commands_options_values_and_apps(herolog_home: Path) -> None:
    with open_store() as store:
        fill(store, "demo", ["x"])
    assert fish_complete("herolog ") == [
        "apps",
        "completion",
        "drain",
        "import",
        "logs",
        "run",
        "serve",
        "store",
    ]
    assert fish_complete("herolog store ") == ["forget", "history", "info"]
    assert "--tail" in fish_complete("herolog logs --ta")
    assert fish_complete("herolog logs --color ") == ["always", "auto", "never"]
    assert fish_complete("herolog logs -a ") == ["demo"]


def test_after_run_dashdash_the_words_are_the_commands_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``herolog run -- <TAB>`` offers commands, then what that command takes, never
    herolog's own options (without bash-completion loaded, bash falls back to files)."""
    (tmp_path / "job.sh").write_text("echo hi\n")
    monkeypatch.chdir(tmp_path)  # a file named from here: TMPDIR's path may hold a space
    for complete in (bash_complete, fish_complete):
        assert complete("herolog run -d web.1 -- ech")[:1] == ["echo"], complete
        assert complete("herolog run -- ech") == complete("herolog run -a demo -q -- ech")
        assert "--dyno" not in complete("herolog run -- ls --"), complete
        assert complete("herolog run -- sh jo") == ["job.sh"], complete
        assert "--dyno" in complete("herolog run --dy"), complete
    assert "--almost-all" in fish_complete("herolog run -- ls --almost-al")


def test_bash_completes_file_names_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file name with a space is one word, and one with a glob's brackets is not another
    file's that the brackets match."""
    names = ["old logs.txt", "[x].log", "x.log"]
    for name in names:
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    for line in ("herolog import ", "herolog serve --certfile ", "herolog run -- sh "):
        assert sorted(bash_complete(line)) == sorted(names), line


def test_dynos_sources_and_process_types_come_from_the_app_s_recent_lines(
    herolog_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store() as store:
        fill(store, "demo", ["x"], dyno="web.1")
        fill(store, "demo", ["x"], dyno="web.2")
        fill(store, "demo", ["x"], source="heroku", dyno="router")
        fill(store, "demo", ["x"], dyno="worker.1")
        fill(store, "other", ["x"], source="postgres", dyno="heroku-postgres")
        every = ["heroku-postgres", "router", "web", "web.1", "web.2", "worker", "worker.1"]
        for complete in (bash_complete, fish_complete):
            assert complete("herolog logs -a demo -d w") == every[2:]
            assert complete("herolog logs -a demo --dyno web.") == ["web.1", "web.2"]
            assert complete("herolog logs -a demo -s ") == ["app", "heroku"]
            assert complete("herolog logs -a other -s ") == ["postgres"]
            assert complete("herolog logs -a demo -p ") == ["web", "worker"]
            assert complete("herolog logs -d ") == every  # every app's, as logs shows them all
            assert complete("herolog logs -s ") == ["app", "heroku", "postgres"]
            assert complete("herolog logs -a nosuchapp -d ") == []
        assert bash_complete("herolog logs --app = other -d ") == ["heroku-postgres"]
        assert bash_complete("herolog logs -aother -d ") == ["heroku-postgres"]
        assert fish_complete("herolog logs --app=other -d ") == ["heroku-postgres"]
        hits = tmp_path / "zsh-hits"
        assert {"web.1", "web.2"} <= set(zsh_complete("herolog logs -a demo -d web.", hits))
        assert "heroku" in zsh_complete("herolog logs -a demo -s h", hits)
        assert "heroku-postgres" in zsh_complete("herolog logs --app=other -d h", hits)
        # Given again (any of them), as --grep may be: zsh offers an option once unless told.
        assert "web.2" in zsh_complete("herolog logs -a demo -d web.1 -d web.", hits)
        assert "--source" in zsh_complete("herolog logs -s app --sou", hits)
        # $HEROLOG_APP, as logs takes it
        monkeypatch.setenv("HEROLOG_APP", "other")
        assert bash_complete("herolog logs -d ") == ["heroku-postgres"]


def test_dyno_completion_fails_quietly(herolog_home: Path) -> None:
    """No store, or a file that is no store: nothing offered, nothing said."""
    assert bash_complete("herolog logs -d ") == []
    herolog_home.mkdir(parents=True, exist_ok=True)
    (herolog_home / "logs.db").write_text("not a database\n" * 100)
    assert bash_complete("herolog logs -d ") == []
    assert fish_complete("herolog logs -s ") == []
    done = subprocess.run(
        ["herolog", "_values", "dynos"], env=herolog_env(), capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_dyno_completion_reads_past_a_name_that_is_not_utf_8(herolog_home: Path) -> None:
    """A line another program wrote with a dyno of bytes that are not UTF-8 made Python's
    sqlite3 refuse the whole read, and a TAB offered no dyno at all; it reads as the intake
    would have stored it, U+FFFD for the bytes, and the others are offered."""
    with open_store() as store:
        fill(store, "demo", ["a", "b"])
    with closing(sqlite3.connect(herolog_home / "logs.db")) as db, db:
        db.execute("UPDATE lines SET dyno = CAST(x'776562ff2e32' AS TEXT) WHERE message = 'b'")
    assert bash_complete("herolog logs -d ") == ["web", "web.1", "web\ufffd", "web\ufffd.2"]


def zsh_complete(line: str, hits: Path) -> list[str]:
    """What zsh's completion offers for ``line``: an interactive zsh on a pseudo-terminal
    (zpty) is typed the line and a TAB, with compadd recording what it is given. compinit
    keeps its dump beside ``hits``, as a user's does in their home: it looks through every
    directory of functions only the first time (0.3 s)."""
    script = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=''; autoload -U compinit; compinit -u -d ${(q)4}; source ${(q)1}"
zpty -w z "compadd () { builtin compadd -O __hits \"\$@\"; print -rl -- \$__hits >>${(q)3}; builtin compadd \"\$@\" }"
zpty -w z "print -r -- RE''ADY"
zpty -r z out '*READY*'
zpty -w -n z "$2"$'\t'
# What is typed while the completion runs could cut it short, on a slow machine: wait for
# what it offers (20 s at most) before the next line.
for i in {1..400}; do [[ -s $3 ]] && break; sleep 0.05; done
zpty -w z $'\x15print -r -- DO\'\'NE'
zpty -r z out '*DONE*'
zpty -d z
"""
    hits.unlink(missing_ok=True)
    subprocess.run(
        [
            shell_path("zsh"),
            "-f",
            "-c",
            script,
            "zsh",
            str(COMPLETIONS / "herolog.zsh"),
            line,
            str(hits),
            str(hits.parent / "zcompdump"),
        ],
        env=herolog_env(),
        timeout=30,
        check=True,
        capture_output=True,
    )
    return hits.read_text().splitlines() if hits.exists() else []


def test_option_values_after_an_equals_sign_complete_too(
    herolog_home: Path, tmp_path: Path
) -> None:
    """``--app=de<TAB>``, as click takes it: bash makes the ``=`` a word of its own, and
    zsh's _arguments completes it only for options declared ``--app=``."""
    with open_store() as store:
        fill(store, "demo", ["x"])
    assert bash_complete("herolog logs --app = de") == ["demo"]
    assert bash_complete("herolog logs --app =") == ["demo"]
    assert bash_complete("herolog logs --color = a") == ["auto", "always"]
    assert bash_complete("herolog drain list --app = d") == ["demo"]
    assert fish_complete("herolog logs --app=de") == ["--app=demo"]
    hits = tmp_path / "zsh-hits"
    assert "demo" in zsh_complete("herolog logs --app=de", hits)
    assert "demo" in zsh_complete("herolog logs -a de", hits)
    assert {"auto", "always"} <= set(zsh_complete("herolog logs --color=a", hits))


def test_zsh_script_loads_and_registers() -> None:
    script = (
        "autoload -U compinit && compinit -u -D\n"
        f"source {COMPLETIONS / 'herolog.zsh'}\n"
        "print -r -- $_comps[herolog]\n"
        "whence -w _herolog_logs __herolog_app_names\n"
    )
    proc = subprocess.run(
        [shell_path("zsh"), "-f", "-c", script], capture_output=True, text=True, check=True
    )
    assert proc.stdout.splitlines() == [
        "_herolog",
        "_herolog_logs: function",
        "__herolog_app_names: function",
    ]
    assert proc.stderr == ""


BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")
"""bash-completion's loader, which looks for the bash script where the README puts it."""


def readme_install_commands() -> str:
    section = (COMPLETIONS.parent / "README.md").read_text().split("\n## Shell completions\n")[1]
    return section.split("```sh\n")[1].split("```")[0]


@pytest.fixture
def unspaced_tmp_path(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, or under a TMPDIR with a space in its path a directory in /tmp:
    bash-completion 2.11 (Debian 12's) splits the path of a user's directory of completions
    at its spaces, and finds nothing in a home that has one."""
    if not any(ch.isspace() for ch in str(tmp_path)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir="/tmp") as unspaced:
        yield Path(unspaced)


XDG = pytest.mark.parametrize(
    "xdg", [False, True], ids=["default", "XDG_DATA_HOME and XDG_CONFIG_HOME"]
)


class Home:
    """A user's fresh home under ``tmp_path`` (and XDG directories beside it, if ``xdg``),
    with the shells to run install commands in it and to check that each shell loads what
    they installed."""

    def __init__(self, tmp_path: Path, xdg: bool) -> None:
        assert BASH_COMPLETION.exists(), (
            "bash-completion is needed for this test: install it (apt-get install bash-completion)"
        )
        self.tmp_path = tmp_path
        home = tmp_path / "home"
        home.mkdir(parents=True)
        unset = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "BASH_COMPLETION_USER_DIR")
        self.env = {k: v for k, v in herolog_env(HOME=str(home)).items() if k not in unset}
        if xdg:
            self.env |= {
                "XDG_DATA_HOME": str(tmp_path / "data"),
                "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            }

    def shell(self, *argv: str) -> str:
        done = subprocess.run(
            [shell_path(argv[0]), *argv[1:]],
            cwd=COMPLETIONS.parent,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def assert_each_shell_loads_herolog_s_completion(self) -> None:
        loaded = self.shell(
            "bash",
            "-c",
            f"source {BASH_COMPLETION}; __load_completion herolog; complete -p herolog",
        )
        assert loaded == "complete -F _herolog herolog\n"
        # ~/.zshrc's fpath+=(~/.zfunc), as the README says, and compinit after it.
        dump = shlex.quote(str(self.tmp_path / "zcompdump"))
        zsh = f"fpath+=(~/.zfunc); autoload -U compinit; compinit -u -d {dump}"
        assert self.shell("zsh", "-f", "-c", f"{zsh}; print -r -- $_comps[herolog]") == "_herolog\n"
        assert "logs\t" in self.shell("fish", "-c", "complete -C'herolog lo'")


@XDG
def test_the_readme_s_install_puts_each_script_where_its_shell_loads_it(
    unspaced_tmp_path: Path, xdg: bool
) -> None:
    """With $XDG_DATA_HOME or $XDG_CONFIG_HOME set, bash-completion and fish do not look in
    ~/.local/share and ~/.config, where the README put the scripts: no TAB completed."""
    home = Home(unspaced_tmp_path, xdg)
    home.shell("bash", "-e", "-c", readme_install_commands())
    home.assert_each_shell_loads_herolog_s_completion()


def help_install_commands() -> dict[str, str]:
    """The install commands ``herolog completion --help`` shows, by the shell they are typed
    in: bash's and zsh's lines in bash, fish's after its ``# in fish:``."""
    shown = CliRunner().invoke(cli, ["completion", "--help"], terminal_width=78).output
    block = shown.split("\n\n")[2]
    posix, fish = block.split("# in fish:\n")
    return {"bash": textwrap.dedent(posix), "fish": textwrap.dedent(fish)}


def script_install_commands(shell: str) -> str:
    """The commands in the install lines at the head of the committed script for ``shell``."""
    header = (COMPLETIONS / FILES[shell]).read_text().split("\n\n")[0]
    lines = [line.removeprefix("# ") for line in header.splitlines()]
    lines = [re.sub(r"^Install(, in fish)?: ", "", line) for line in lines]
    commands = [line for line in lines if re.match(r"dir=|mkdir |herolog completion \w+ >", line)]
    return "".join(f"{line}\n" for line in commands)


@XDG
def test_the_install_lines_of_the_help_and_the_scripts_run_in_a_new_home(
    unspaced_tmp_path: Path, xdg: bool
) -> None:
    """They wrote into folders a new home does not have yet (~/.zfunc, bash-completion's and
    fish's completions), and failed there: 'No such file or directory'."""
    home = Home(unspaced_tmp_path / "help", xdg)
    for name, commands in help_install_commands().items():
        home.shell(name, "-c", commands if name == "fish" else f"set -e\n{commands}")
    home.assert_each_shell_loads_herolog_s_completion()
    home = Home(unspaced_tmp_path / "scripts", xdg)
    for shell in ("bash", "zsh", "fish"):
        assert "herolog completion" in script_install_commands(shell), shell
        home.shell(shell, "-c", script_install_commands(shell))
    home.assert_each_shell_loads_herolog_s_completion()
