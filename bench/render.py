"""Rendering cost: `herolog logs --json` (NDJSON) against the plain text output.

    python -m bench.render [--lines N] [--rounds R]

Both render the same lines, read back from a store filled with Heroku-shaped traffic (a
third router lines; app0's lines carry a drain's attributes, and one line in ten has
structured data), into memory in batches of 1000 as `herolog logs --tail` writes them, on
one core, taking turns round by round; the figures are the medians, and the ratio is
JSON's rate / text's.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from bench import measured_with, result
from bench.corpus import bodies
from herolog.filters import LineFilter
from herolog.parser import parse_logplex
from herolog.render import JsonRenderer, Renderer, TextRenderer
from herolog.store import Batch, SQLiteStore, StoredLine

APPS = 4
ATTRIBUTES = {"ddsource": "heroku", "env": "prod"}
STRUCTURED_DATA = '[origin ip="198.51.100.7"][meta@32473 sequenceId="{n}"]'


def corpus(count: int) -> list[StoredLine]:
    """``count`` lines as the store gives them back."""
    with tempfile.TemporaryDirectory() as home:
        store = SQLiteStore.open(Path(home) / "logs.db")
        try:
            per_app = count // APPS
            store.set_history(per_app)
            for n in range(APPS):
                received = [
                    x._replace(structured_data=STRUCTURED_DATA.format(n=i)) if i % 10 == 0 else x
                    for body in bodies(per_app, 100, seed=n)
                    for i, x in enumerate(parse_logplex(body))
                ]
                attributes = ATTRIBUTES if n == 0 else None
                store.append([Batch(f"app{n}", received, attributes)])
            lines, _ = store.last(LineFilter(), per_app * APPS)
        finally:
            store.close()
    return lines


def measure(renderer: Renderer, batches: list[list[StoredLine]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        renderer.write(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    measured_with()
    lines = corpus(args.lines)
    batches = [lines[i : i + 1000] for i in range(0, len(lines), 1000)]
    json_rates, text_rates = [], []
    for _ in range(args.rounds):
        json_rates.append(len(lines) / measure(JsonRenderer(io.StringIO()), batches))
        text_rates.append(len(lines) / measure(TextRenderer(io.StringIO()), batches))
    ours, theirs = statistics.median(json_rates), statistics.median(text_rates)
    print(f"corpus: {len(lines)} lines of {APPS} apps, in batches of 1000")
    print(f"--json (JsonRenderer) : {ours:>10,.0f} lines/s (median of {args.rounds})")
    print(f"plain (TextRenderer)  : {theirs:>10,.0f} lines/s (median of {args.rounds})")
    print(f"ratio json/text       : {ours / theirs:.3f}x ({theirs / ours:.1f}x the time per line)")
    result(
        "--json rendering, batches of 1000 lines",
        ours,
        "lines/s",
        peer="plain text rendering",
        ratio=ours / theirs,
        target="(diagnostic)",
        met=None,
    )


if __name__ == "__main__":
    main()
