"""The official heroku CLI, installed from npm once and kept between runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HEROKU_CLI = "heroku@11.10.0"
"""The version the reference was written against; the cache is keyed on it."""


def cache_dir() -> Path:
    configured = os.environ.get("HEROLOG_TEST_NPM_DIR")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "herolog-tests" / HEROKU_CLI.replace("@", "-")


@pytest.fixture(scope="session")
def heroku_cli() -> Path:
    """The path of the official ``heroku`` executable, installing it with npm if needed."""
    where = cache_dir()
    executable = where / "node_modules" / ".bin" / "heroku"
    if executable.exists():
        return executable
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail(
            "the interop tests run the official heroku CLI, which needs Node.js 20+ and npm:"
            " install them (e.g. apt-get install nodejs npm) and run the tests again",
            pytrace=False,
        )
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", HEROKU_CLI],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0 or not executable.exists():
        pytest.fail(
            f"npm install {HEROKU_CLI} failed (exit {result.returncode}); the interop tests need"
            f" the npm registry once, then use the copy in {where}:\n{result.stderr[-2000:]}",
            pytrace=False,
        )
    return executable


from tests.server.conftest import make_server  # noqa: E402, F401  (a real server on port 0)
