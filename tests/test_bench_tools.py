"""What the tests and benchmarks fetch for themselves says what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.tools import Unavailable, heroku_cli


def fake_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> Path:
    """A PATH holding only a ``node`` that says it is ``version`` (an old Node.js cannot be
    installed here to be met for real), and an empty folder for the heroku CLI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    node = bin_dir / "node"
    node.write_text(f"#!/bin/sh\necho {version}\n")
    node.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("HEROLOG_TEST_NPM_DIR", str(tmp_path / "npm"))
    return node


def test_an_old_node_is_named_before_npm_installs_a_cli_it_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = fake_node(tmp_path, monkeypatch, "v18.19.0")
    with pytest.raises(Unavailable) as raised:
        heroku_cli()
    assert str(raised.value).startswith(
        f"the official heroku CLI needs Node.js 20+, and {node} is v18.19.0: install a newer"
    )
    assert not (tmp_path / "npm").exists()


def test_an_installed_cli_needs_no_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_node(tmp_path, monkeypatch, "v20.20.2")
    executable = tmp_path / "npm" / "node_modules" / ".bin" / "heroku"
    executable.parent.mkdir(parents=True)
    executable.touch()
    assert heroku_cli() == executable


def test_no_npm_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_node(tmp_path, monkeypatch, "v22.1.0")
    with pytest.raises(Unavailable, match="installed with npm, and there is none"):
        heroku_cli()
