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
The official `heroku logs` comparison needs `herolog serve` and lives with the other
server benchmarks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    subprocess.run(command, shell=True, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--apps", type=int, default=4)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
