"""The store writer's ceiling: parse and store syslog chunks in-process, with no sockets.

    python -m bench.writer [--lines N] [--rounds R]

Feeds N frames of Heroku's syslog-drain form, in 64 KiB chunks as a syslog connection
delivers them, through the writer process's own job handler (parse, then one transaction
per 8 chunks) into a fresh store with room for every line. This is the most the writer
process can store on one core, whatever the network does. Each round runs once with the
writer's garbage-collector settings and once with Python's defaults, alternating; figures
are medians, and the ratio is tuned / default.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

from bench import result
from bench.corpus import syslog_messages
from bench.syslog_peers import TOKEN
from herolog.parser import FrameDecoder, frame
from herolog.server import writer_process
from herolog.store import SQLiteStore

CHUNK = 1 << 16
GROUP = 8


def run(chunks: list[bytes], lines: int, tuned: bool) -> float:
    """Lines stored per second."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore.open(Path(tmp) / "logs.db")
        store.set_history(lines + 1)
        store.manual_checkpoints()
        before = gc.get_threshold()
        if tuned:
            writer_process.tune_gc()
        try:
            decoders: dict[int, FrameDecoder] = {}
            start = time.perf_counter()
            for first in range(0, len(chunks), GROUP):
                jobs = [
                    (n, "stream", 1, "bench", chunk)
                    for n, chunk in enumerate(chunks[first : first + GROUP], first)
                ]
                writer_process._handle(store, jobs, decoders)
            elapsed = time.perf_counter() - start
        finally:
            gc.unfreeze()
            gc.set_threshold(*before)
        stored = store.apps()[0].lines
        store.close()
    assert stored == lines, f"stored {stored} of {lines}"
    return lines / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = frame(
        m.replace(b" host ", f" {TOKEN} ".encode(), 1).replace(b" - ", b" - - ", 1)
        for m in syslog_messages(args.lines)
    )
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    tuned: list[float] = []
    default: list[float] = []
    for _ in range(args.rounds):
        tuned.append(run(chunks, args.lines, tuned=True))
        default.append(run(chunks, args.lines, tuned=False))
    ratio = statistics.median(t / d for t, d in zip(tuned, default, strict=True))
    print(
        f"writer, parse + store of {args.lines:,} syslog frames in 64 KiB chunks, one core,"
        f" median of {args.rounds} alternating rounds"
    )
    print(f"  writer's GC settings : {statistics.median(tuned):10,.0f} lines/s")
    print(f"  Python's defaults    : {statistics.median(default):10,.0f} lines/s")
    print(f"  ratio                : {ratio:.2f}x")
    result(
        "store writer ceiling, syslog chunks parsed and stored in-process",
        statistics.median(tuned),
        "lines/s",
        peer="the same with Python's default GC settings",
        ratio=ratio,
        target="(diagnostic: what one core can store)",
        met=None,
    )


if __name__ == "__main__":
    main()
