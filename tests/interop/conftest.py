"""The official heroku CLI, installed from npm once and kept between runs; Debian's rsyslog
and syslog-ng, unpacked from their packages once and kept."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.tools import Unavailable, unpack
from bench.tools import heroku_cli as install_heroku_cli


@pytest.fixture(scope="session")
def heroku_cli() -> Path:
    """The path of the official ``heroku`` executable, installing it with npm if needed."""
    try:
        return install_heroku_cli()
    except Unavailable as error:
        pytest.fail(f"the interop tests run the official heroku CLI, and {error}", pytrace=False)


def debian_package(name: str, packages: list[str], program: str, what: str) -> Path:
    """Where Debian's ``packages`` are unpacked (bench/tools.py), ``program`` among them;
    the test fails, saying ``what`` it runs and why, if they cannot be had."""
    try:
        try:
            return unpack(name, packages, [program])
        except Unavailable:
            if os.geteuid() != 0 or shutil.which("apt-get") is None:
                raise
            # A new machine may not have Debian's package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            return unpack(name, packages, [program])
    except Unavailable as error:
        pytest.fail(f"the {name} interop tests run {what}, and {error}", pytrace=False)


def wait_listening(
    proc: subprocess.Popen[bytes],
    port: int,
    failed: Callable[[], str],
    ready: Callable[[], bool] = lambda: True,
) -> None:
    """Until a daemon ``proc`` started accepts connections on 127.0.0.1:``port`` and is
    ``ready``; if it ends or 30 s pass first, it is killed and the test fails with what
    ``failed`` says (what the daemon said, and what to install)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if ready():
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(failed())
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


from tests.server.conftest import make_server, serve_process  # noqa: E402, F401  (real servers)
