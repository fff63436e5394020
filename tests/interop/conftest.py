"""The official heroku CLI, installed from npm once and kept between runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.tools import Unavailable
from bench.tools import heroku_cli as install_heroku_cli


@pytest.fixture(scope="session")
def heroku_cli() -> Path:
    """The path of the official ``heroku`` executable, installing it with npm if needed."""
    try:
        return install_heroku_cli()
    except Unavailable as error:
        pytest.fail(f"the interop tests run the official heroku CLI, and {error}", pytrace=False)


from tests.server.conftest import make_server, serve_process  # noqa: E402, F401  (real servers)
