"""The store writer's ceiling: parse and store syslog chunks in-process, with no sockets.

    python -m bench.writer [--lines N] [--rounds R]

Feeds N frames of Heroku's syslog-drain form, in 64 KiB chunks as a syslog connection
delivers them, through the writer process's own job handler (parse, then one transaction
per 8 chunks) into a fresh store: the most the writer process can store on one core,
whatever the network does. Twice: with room for every line, and with Logplex's history of
1,500 lines, where every commit also trims the ring buffer (the steady state of any store
that has filled up). Its peer, in alternating rounds, is parsing the same chunks alone, so
the ratio is the share of the writer's time that is parsing. Figures are medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench import result
from bench.corpus import syslog_messages
from bench.syslog_peers import TOKEN
from herolog.parser import FrameDecoder, Received, frame
from herolog.server import writer_process
from herolog.store import SQLiteStore

CHUNK = 1 << 16
GROUP = 8
TRIMMING_HISTORY = 1500


def store_all(chunks: list[bytes], lines: int, history: int) -> float:
    """Lines parsed and stored per second."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore.open(Path(tmp) / "logs.db")
        store.set_history(history)
        store.manual_checkpoints()
        decoders: dict[int, FrameDecoder] = {}
        start = time.perf_counter()
        for first in range(0, len(chunks), GROUP):
            jobs = [
                (n, "stream", 1, "bench", chunk)
                for n, chunk in enumerate(chunks[first : first + GROUP], first)
            ]
            writer_process._handle(store, jobs, decoders)
        elapsed = time.perf_counter() - start
        stored = store.apps()[0].lines
        store.close()
    assert stored == min(lines, history), f"stored {stored} of {lines}"
    return lines / elapsed


def parse_all(chunks: list[bytes], lines: int) -> float:
    """Lines parsed per second, storing nothing."""
    decoder = FrameDecoder(newline_framing=True)
    received = Received.at()
    parsed = 0
    start = time.perf_counter()
    for chunk in chunks:
        parsed += len(decoder.feed(chunk, received))
    elapsed = time.perf_counter() - start
    assert parsed == lines, f"parsed {parsed} of {lines}"
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
    stored: list[float] = []
    trimmed: list[float] = []
    parsed: list[float] = []
    for _ in range(args.rounds):
        stored.append(store_all(chunks, args.lines, args.lines + 1))
        trimmed.append(store_all(chunks, args.lines, TRIMMING_HISTORY))
        parsed.append(parse_all(chunks, args.lines))
    ratio = statistics.median(s / p for s, p in zip(stored, parsed, strict=True))
    print(
        f"writer, {args.lines:,} syslog frames in 64 KiB chunks, one core,"
        f" median of {args.rounds} alternating rounds"
    )
    print(f"  parse and store           : {statistics.median(stored):10,.0f} lines/s")
    print(f"  the same, trimming to 1500: {statistics.median(trimmed):10,.0f} lines/s")
    print(f"  parse only                : {statistics.median(parsed):10,.0f} lines/s")
    print(f"  ratio                     : {ratio:.2f}x (the share of the writer's time parsing)")
    result(
        "store writer ceiling, syslog chunks parsed and stored in-process",
        statistics.median(stored),
        "lines/s",
        peer="parsing the same chunks alone",
        ratio=ratio,
        target="(diagnostic: what one core can store)",
        met=None,
    )
    result(
        "store writer ceiling, syslog chunks parsed and stored in-process, history 1500",
        statistics.median(trimmed),
        "lines/s",
        peer="parsing the same chunks alone",
        ratio=statistics.median(t / p for t, p in zip(trimmed, parsed, strict=True)),
        target="(diagnostic: what one core can store with a full ring buffer)",
        met=None,
    )


if __name__ == "__main__":
    main()
