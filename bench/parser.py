"""Parser throughput: herolog's Logplex parser against a straightforward split-based parse.

    python -m bench.parser [--frames N] [--rounds R]

Both parse the same bodies (100 frames each, a third router lines) on one core, taking
turns round by round; the figures are the medians, and the ratio is herolog / baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import datetime

from bench import measured_with, result
from bench.corpus import bodies
from herolog.parser import LogLine, Received, parse_logplex


def split_parse(body: bytes) -> list[LogLine]:
    """The obvious parser: split frames on newlines and headers on spaces.

    It builds the same record herolog's parser returns, with the timestamp parsed by
    ``datetime.fromisoformat``, but it is only right for well-behaved bodies: no counts
    without newlines, no embedded newlines, no checks of counts or fields.
    """
    out = []
    for raw in body.split(b"\n"):
        if not raw:
            continue
        _count, rest = raw.split(b" ", 1)
        pri, timestamp, hostname, source, dyno, _msgid, message = rest.split(b" ", 6)
        ts = timestamp.decode()
        out.append(
            LogLine(
                timestamp=ts,
                time=datetime.fromisoformat(ts),  # type: ignore[arg-type]
                source=source.decode(),
                dyno=dyno.decode(),
                message=message.decode(),
                pri=int(pri[1 : pri.index(b">")]),
                hostname=hostname.decode(),
                structured_data=None,
            )
        )
    return out


def measure(parse: Callable[[bytes], object], data: list[bytes]) -> float:
    start = time.perf_counter()
    for body in data:
        parse(body)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    measured_with()
    data = bodies(args.frames, 100)
    size = sum(map(len, data))
    received = Received.at()
    frame_count = sum(len(parse_logplex(body, received)) for body in data)
    assert frame_count == args.frames, frame_count
    herolog_rates, baseline_rates = [], []
    for _ in range(args.rounds):
        herolog_rates.append(frame_count / measure(lambda b: parse_logplex(b, received), data))
        baseline_rates.append(frame_count / measure(split_parse, data))
    ours, theirs = statistics.median(herolog_rates), statistics.median(baseline_rates)
    print(
        f"corpus: {frame_count} frames in {len(data)} bodies, {size / frame_count:.0f} bytes/frame"
    )
    print(f"herolog parse_logplex : {ours:>10,.0f} frames/s (median of {args.rounds})")
    print(f"split-based baseline  : {theirs:>10,.0f} frames/s (median of {args.rounds})")
    print(f"ratio herolog/baseline: {ours / theirs:.2f}x")
    result(
        "parser, 100-frame Logplex bodies",
        ours,
        "frames/s",
        peer="split-based parser",
        ratio=ours / theirs,
        target=">= 400,000 frames/s",
        met=ours >= 400_000,
    )


if __name__ == "__main__":
    main()
