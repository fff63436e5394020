"""Searching a long history: `herolog logs --grep` against GNU grep over the same lines.

    python -m bench.search [--lines N] [--runs R]

Fills a temporary store with N Heroku-shaped lines of one app (its history N), one line in
100,000 carrying a request id to search for, and writes the same lines, as `herolog logs`
prints them, to a text file. Then times, alternating run by run (whole processes, medians):

    herolog logs -a app0 -n 100 --grep TEXT       plain text: found by SQLite, in C
    herolog logs -a app0 -n 100 --grep REGEX      a regular expression: Python's re, a line
                                                  at a time
    herolog logs -a app0 -n N | grep TEXT | tail -n 100
                                                  the way without --grep
    grep TEXT FILE | tail -n 100                  the peer: the same lines in a flat file
    grep -E REGEX FILE | tail -n 100

and the time and peak RSS of `herolog logs -a app0 -n N > /dev/null`, the whole history.
Each search finds fewer than 100 lines, so each reads the whole history, as a search for
something rare does. Heroku's own `heroku logs` keeps 1,500 lines and cannot search them.
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
from pathlib import Path

import herolog as herolog_package
from bench import measured_with, result
from bench.corpus import bodies
from bench.logs_startup import timed
from herolog.filters import LineFilter
from herolog.parser import parse_logplex
from herolog.render import format_text
from herolog.store import Batch, SQLiteStore

TEXT = "request_id=needle-"
REGEX = "request_id=needle-[0-9]+"
RARE = 100_000


def fill(home: Path, lines: int) -> Path:
    """The store and the text file, with one line in RARE carrying TEXT."""
    store = SQLiteStore.open(home / "logs.db")
    store.set_history(lines)
    written = 0
    text = home / "logs.txt"
    with text.open("w") as out:
        while written < lines:
            for body in bodies(min(100_000, lines - written), 100, seed=written):
                parsed = parse_logplex(body)
                parsed = [
                    line._replace(message=f"{line.message} {TEXT}{written + i}")
                    if (written + i) % RARE == RARE - 1
                    else line
                    for i, line in enumerate(parsed)
                ]
                store.append([Batch("app0", parsed)])
                written += len(parsed)
        after = 0
        while True:
            stored, after = store.after(after, LineFilter(), 10_000)
            if not stored:
                break
            out.write("".join(format_text(line) + "\n" for line in stored))
    store.close()
    return text


def peak_rss(command: list[str], env: dict[str, str], work: Path) -> tuple[float, int]:
    """Seconds the command took, and its peak RSS in KiB, as GNU time measures them: the
    rusage of a child of this process would count this process's memory too (a child is
    a copy of it until it execs)."""
    gnu_time = shutil.which("time")
    if gnu_time is None:
        raise SystemExit("bench.search needs GNU time (apt-get install time)")
    report = work / "time.txt"
    subprocess.run(
        [gnu_time, "-f", "%e %M", "-o", str(report), *command],
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    seconds, kib = report.read_text().split()
    return float(seconds), int(kib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    measured_with()
    compileall.compile_dir(Path(herolog_package.__file__).parent, quiet=1)  # as logs_startup
    herolog = shutil.which("herolog", path=str(Path(sys.executable).parent)) or "herolog"
    grep = shutil.which("grep") or "grep"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        text = fill(home, args.lines)
        env = {**os.environ, "HEROLOG_HOME": str(home), "LC_ALL": "C.UTF-8"}
        search = f"{herolog} logs -a app0 -n 100 --grep"
        commands = {
            "herolog --grep TEXT": f"{search} '{TEXT}'",
            "herolog --grep REGEX": f"{search} '{REGEX}'",
            "herolog logs | grep TEXT": (
                f"{herolog} logs -a app0 -n {args.lines} | {grep} '{TEXT}' | tail -n 100"
            ),
            "grep TEXT FILE": f"{grep} '{TEXT}' {text} | tail -n 100",
            "grep -E REGEX FILE": f"{grep} -E '{REGEX}' {text} | tail -n 100",
        }
        found = {
            name: subprocess.run(
                command, shell=True, env=env, capture_output=True, text=True, check=True
            ).stdout
            for name, command in commands.items()
        }
        assert len(set(found.values())) == 1, "herolog and grep found different lines"
        assert found["grep TEXT FILE"].count("\n") == args.lines // RARE
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(timed(command, env))
        size = text.stat().st_size, (home / "logs.db").stat().st_size
        whole = [herolog, "logs", "-a", "app0", "-n", str(args.lines)]
        peaks = [peak_rss(whole, env, home) for _ in range(3)]
    median = {name: statistics.median(samples) for name, samples in times.items()}
    print(
        f"{args.lines:,} lines of one app, {args.lines // RARE} of them matching ({size[0]:,}"
        f" bytes of text, a {size[1]:,}-byte store); {args.runs} alternating runs, medians"
    )
    for name, seconds in median.items():
        print(f"  {name:<24} {seconds:7.3f} s")
    peak = statistics.median(rss for _, rss in peaks)
    took = statistics.median(seconds for seconds, _ in peaks)
    print(
        f"  herolog logs -n {args.lines:,} > /dev/null: {took:.2f} s,"
        f" peak RSS {peak / 1024:,.0f} MB (median of 3)"
    )
    result(
        f"herolog logs -n {args.lines:,} > /dev/null, peak RSS",
        peak / 1024,
        "MB",
        target="(diagnostic: the history is written a part at a time)",
        met=None,
    )
    for kind, peer in (("TEXT", "grep TEXT FILE"), ("REGEX", "grep -E REGEX FILE")):
        ours = median[f"herolog --grep {kind}"]
        result(
            f"herolog logs --grep, {'plain text' if kind == 'TEXT' else 'a regex'},"
            f" {args.lines:,} stored lines",
            ours,
            "s",
            peer=f"GNU {peer.replace(' FILE', '')} over the same lines in a text file",
            ratio=ours / median[peer],
            target="(diagnostic)",
            met=None,
        )


if __name__ == "__main__":
    main()
