"""The two halves of syslog intake, in-process with no sockets: parsing, and storing.

    python -m bench.writer [--lines N] [--rounds R]

N frames of Heroku's syslog-drain form, in 64 KiB chunks as a syslog connection delivers
them. Serve parses each chunk as it reads it (FrameDecoder); the writer process stores the
lines it is sent, through its own job handler (one transaction per 8 chunks), into a fresh
store. Storing is measured twice: with room for every line, and with Logplex's history of
1,500 lines, where every commit also trims the ring buffer (the steady state of any store
that has filled up). Each figure is the most one core can do of that half, whatever the
network does; one connection goes no faster than the slower half. Rounds alternate;
figures are medians.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench import measured_with, result
from bench.corpus import syslog_messages
from bench.syslog_peers import TOKEN
from herolog import store_writer
from herolog.parser import FrameDecoder, LogLine, Received, frame
from herolog.server.writer import plain_rows
from herolog.store import SQLiteStore

CHUNK = 1 << 16
GROUP = 8
TRIMMING_HISTORY = 1500


def store_all(parsed: list[list[LogLine]], lines: int, history: int) -> float:
    """Lines stored per second, sent to the writer as serve sends them."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore.open(Path(tmp) / "logs.db")
        store.set_history(history)
        store.manual_checkpoints()
        jobs = [(n, "lines", "bench", plain_rows(chunk)) for n, chunk in enumerate(parsed)]
        start = time.perf_counter()
        for first in range(0, len(jobs), GROUP):
            store_writer._handle(store, jobs[first : first + GROUP])
        elapsed = time.perf_counter() - start
        stored = store.apps()[0].lines
        store.close()
    assert stored == min(lines, history), f"stored {stored} of {lines}"
    return lines / elapsed


def parse_all(chunks: list[bytes], lines: int) -> tuple[float, list[list[LogLine]]]:
    """Lines parsed per second, and the lines of each chunk."""
    decoder = FrameDecoder(newline_framing=True)
    out = []
    start = time.perf_counter()
    for chunk in chunks:
        out.append(decoder.feed(chunk, Received.at()))
    elapsed = time.perf_counter() - start
    parsed = sum(map(len, out))
    assert parsed == lines, f"parsed {parsed} of {lines}"
    return lines / elapsed, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    measured_with(f"SQLite {sqlite3.sqlite_version}")
    data = frame(
        m.replace(b" host ", f" {TOKEN} ".encode(), 1).replace(b" - ", b" - - ", 1)
        for m in syslog_messages(args.lines)
    )
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    stored: list[float] = []
    trimmed: list[float] = []
    parsed: list[float] = []
    for _ in range(args.rounds):
        rate, lines = parse_all(chunks, args.lines)
        parsed.append(rate)
        stored.append(store_all(lines, args.lines, args.lines + 1))
        trimmed.append(store_all(lines, args.lines, TRIMMING_HISTORY))
    print(
        f"syslog intake, {args.lines:,} frames in 64 KiB chunks, each half on one core,"
        f" median of {args.rounds} alternating rounds"
    )
    print(f"  parse (serve)                   : {statistics.median(parsed):10,.0f} lines/s")
    print(f"  store (writer)                  : {statistics.median(stored):10,.0f} lines/s")
    print(f"  store, trimming to 1500 (writer): {statistics.median(trimmed):10,.0f} lines/s")
    for name, rates, history in (
        ("store writer ceiling, syslog lines stored in-process", stored, "room for every line"),
        ("store writer ceiling, syslog lines stored in-process, history 1500", trimmed, "1500"),
    ):
        result(
            name,
            statistics.median(rates),
            "lines/s",
            peer="parsing the same chunks (serve's half)",
            ratio=statistics.median(r / p for r, p in zip(rates, parsed, strict=True)),
            target=f"(diagnostic: what one core can store; history: {history})",
            met=None,
        )


if __name__ == "__main__":
    main()
