"""Start-up of `herolog logs`: whole-process wall time on a full store.

    python -m bench.logs_startup [--runs N] [--apps A]

Fills a temporary store (A apps at the default 1500-line history, Heroku-shaped lines),
writes the same lines to a text file, then times, alternating run by run:

    herolog logs -n 1500 | cat            (plain; target: median <= 150 ms)
    herolog logs -n 1500 --json | cat
    herolog logs -n 1500 --color always | cat
    python -c pass | cat                  (the same interpreter doing nothing)
    tail -n 1500 FILE | cat               (the floor: no Python at all)

Figures are medians; ratios are against the interpreter's own start-up measured in the
same run, the fairest peer on a machine whose speed drifts.

It also installs the official heroku CLI with npm (into ~/.cache/herolog-tests, shared with
the interop tests; or give --heroku PATH), starts `herolog serve` on the same store and
times `heroku logs -a app0 -n 1500` and `herolog logs --server URL -a app0 -n 1500` against it
(fewer runs: the heroku CLI takes seconds).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import herolog as herolog_package
from bench import measured_with, result, tools
from bench.corpus import bodies
from herolog.filters import LineFilter
from herolog.parser import parse_logplex
from herolog.render import format_text
from herolog.store import Batch, SQLiteStore


def fill(home: Path, apps: int) -> Path:
    store = SQLiteStore.open(home / "logs.db")
    for n in range(apps):
        for body in bodies(1500, 100, seed=n):
            store.append([Batch(f"app{n}", parse_logplex(body))])
    text = home / "logs.txt"
    lines, _ = store.last(LineFilter(), 1500 * apps)
    text.write_text("".join(format_text(line) + "\n" for line in lines))
    store.close()
    return text


def timed(command: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command,
        shell=True,
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def heroku_cli(given: str | None) -> str:
    """The heroku CLI to compare with: the one given, else npm's (installed if needed)."""
    return given or str(tools.heroku_cli())


def compare_with_heroku(herolog: str, heroku: str, env: dict[str, str], runs: int) -> None:
    """`heroku logs` and `herolog logs --server` against one herolog serve, alternating."""
    from bench.ingest import free_port, wait_up

    port = free_port()
    serve = subprocess.Popen(
        [herolog, "serve", "--port", str(port), "--api-key", "bench"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    cli_env = {
        **env,
        "HOME": str(Path(env["HEROLOG_HOME"]) / "heroku-home"),
        "HEROKU_HOST": url,
        "HEROKU_API_KEY": "bench",
        "HEROLOG_API_KEY": "bench",
        "DISABLE_TELEMETRY": "true",
    }
    named = tools.version("official heroku CLI", [heroku, "--version"], cli_env)
    print(f"heroku: {named} ({heroku})")
    commands = {
        "heroku logs -a app0 -n 1500 | cat": f"{heroku} logs -a app0 -n 1500 | cat",
        "herolog logs --server URL -a app0 -n 1500 | cat": (
            f"{herolog} logs --server {url} -a app0 -n 1500 | cat"
        ),
        "herolog logs -a app0 -n 1500 | cat": f"{herolog} logs -a app0 -n 1500 | cat",
    }
    try:
        wait_up(f"{url}/healthz")
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():
            timed(command, cli_env)
        for _ in range(runs):
            for name, command in commands.items():
                times[name].append(timed(command, cli_env))
    finally:
        serve.terminate()
        serve.wait(30)
    theirs = statistics.median(times["heroku logs -a app0 -n 1500 | cat"])
    print(f"against herolog serve, {runs} alternating runs; medians")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<48} {median * 1000:7.1f} ms   {theirs / median:5.1f}x faster than heroku")
    ours = statistics.median(times["herolog logs -a app0 -n 1500 | cat"])
    result(
        "herolog logs -a app0 -n 1500 vs heroku logs (same server)",
        ours * 1000,
        "ms",
        peer=named,
        ratio=ours / theirs,
        target="<= 0.05x the heroku CLI's time (20x faster)",
        met=theirs / ours >= 20,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--heroku", help="the official heroku CLI to compare with")
    parser.add_argument("--heroku-runs", type=int, default=5)
    args = parser.parse_args()
    measured_with()
    # As installed: pip compiles a package's modules as it installs it. Under
    # PYTHONDONTWRITEBYTECODE (many container images, this machine's shells) an editable
    # install's herolog would be compiled anew by every run timed here, about 35 ms of each.
    compileall.compile_dir(Path(herolog_package.__file__).parent, quiet=1)
    herolog = shutil.which("herolog", path=str(Path(sys.executable).parent)) or "herolog"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        text = fill(home, args.apps)
        env = {**os.environ, "HEROLOG_HOME": str(home)}
        env.pop("FORCE_COLOR", None)
        commands = {
            f"herolog logs -n 1500{flags} | cat": f"{herolog} logs -n 1500{flags} | cat"
            for flags in ("", " --json", " --color always")
        } | {
            "python -c pass | cat (interpreter start-up)": f"{sys.executable} -c pass | cat",
            "tail -n 1500 FILE | cat (floor)": f"tail -n 1500 {text} | cat",
        }
        out = subprocess.run(
            commands["herolog logs -n 1500 | cat"],
            shell=True,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert len(out.stdout.splitlines()) >= 1500, "the store is not full"
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():  # warm the page cache
            timed(command, env)
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(timed(command, env))
        python = statistics.median(times["python -c pass | cat (interpreter start-up)"])
        print(f"store: {args.apps} apps x 1500 lines; {args.runs} alternating runs; medians")
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"{name:<48} {median * 1000:7.1f} ms   {median / python:5.2f}x python -c pass")
        plain = statistics.median(times["herolog logs -n 1500 | cat"]) * 1000
        result(
            "herolog logs -n 1500 | cat, full store",
            plain,
            "ms",
            peer="python -c pass",
            ratio=plain / (python * 1000),
            target="<= 150 ms",
            met=plain <= 150,
        )
        try:
            heroku = heroku_cli(args.heroku)
        except tools.Unavailable as error:
            print(f"heroku CLI: not measured: {error}")
        else:
            compare_with_heroku(herolog, heroku, env, args.heroku_runs)


if __name__ == "__main__":
    main()
