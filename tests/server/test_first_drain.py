"""The README's first drain, run as a newcomer runs it: serve, a tail, and curl posting a
line as Logplex would, with the output the README says the tail shows."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers import Child, herolog_env
from tests.server.conftest import ServeProcess

README = (Path(__file__).parent.parent.parent / "README.md").read_text()


def first_drain() -> list[str]:
    block = README.split("<!-- first-drain -->\n```sh\n")[1].split("```\n<!-- /first-drain -->")[0]
    return block.splitlines()


def test_the_readme_s_first_drain_shows_its_line_on_the_tail(
    serve_process: Callable[..., ServeProcess],
) -> None:
    curl = shutil.which("curl")
    assert curl, "this test runs the README's curl: install it (apt-get install curl)"
    serve_line, tail_line, *post, shown = first_drain()
    *assignments, program, command = shlex.split(serve_line, comments=True)
    assert (program, command) == ("herolog", "serve"), serve_line
    env = herolog_env(**dict(a.split("=", 1) for a in assignments))
    server = serve_process("--port", "0", env=env)
    port = server.url.rsplit(":", 1)[1]

    program, *args = shlex.split(tail_line, comments=True)
    assert program == "herolog", tail_line
    tail = Child(*args)
    try:
        script = re.sub(r"127\.0\.0\.1:8514\b", f"127.0.0.1:{port}", "\n".join(post))
        assert port == "8514" or script != "\n".join(post), "the curl does not post to serve"
        # A proxy in CI's environment would take curl's post to 127.0.0.1 too.
        env = {**os.environ, "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=30, env=env
        )
        # curl prints an answer's body: serve's 204 has none, a refusal would.
        assert (done.returncode, done.stdout) == (0, ""), done.stderr
        assert shown.startswith("# ")
        assert tail.read_lines(1, timeout=15) == [shown.removeprefix("# ")]
    finally:
        tail.stop(signal.SIGINT)
