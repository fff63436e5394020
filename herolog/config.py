"""Where herolog keeps its files: ``HEROLOG_HOME``, else the platform's user data directory."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "HEROLOG_HOME"
STORE_NAME = "logs.db"


def home() -> Path:
    """The directory holding the store and any configuration."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs  # only when needed: it costs start-up time

    return platformdirs.user_data_path("herolog", appauthor=False)


def store_path() -> Path:
    return home() / STORE_NAME
