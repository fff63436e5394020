"""Tail ceiling: the rate `herolog logs --tail --server URL` follows, against the local tail.

    python -m bench.tail_ceiling [--rounds R] [--seconds S] [--rates N,N,...]

Starts `herolog serve` on a store and two readers of its app, `herolog logs --tail` (reading
the store itself) and `herolog logs --tail --server URL` (through serve's log session), then
has another process append lines to the store (bench.corpus's, in a transaction every 20 ms)
at each rate of a ladder for S seconds. serve's broadcaster reads them from the store as it
does `herolog run`'s and `herolog import`'s, so the drain intake takes no CPU from the
stream. A reader follows a rate when it printed every line, was told of no loss (L11), and
had printed the last within 1 s of its commit; its ceiling is the highest rate of the ladder
it followed, and every one below. Also the CPU each process used per line (/proc), at the
rates the --server tail followed. R rounds of the ladder, medians; both readers follow the
same lines at once, as in bench.soak.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import measured_with, result
from bench.corpus import syslog_messages
from bench.ingest import free_port, wait_up
from bench.soak import Reader, cpu_seconds, syslog_line, wait_for
from herolog.parser import LogLine, frame, parse_logplex
from herolog.store import Batch, SQLiteStore

APP = "bench"
RATES = [20_000, 40_000, 60_000, 80_000, 100_000, 120_000, 140_000, 160_000]
TICK_S = 0.02
CAUGHT_UP_S = 1.0
TARGET = 50_000
HISTORY = 200_000
"""Lines the store keeps: the local tail, which polls it every 50 ms, reads them before they
are trimmed, and the store stays small."""


@dataclass
class Step:
    rate: int
    sent: int
    fed: float
    """The rate the feeder reached: short of ``rate`` when the machine is full."""
    behind: dict[str, float]
    """How long after the last commit each reader had printed every line (inf: never)."""
    lost: dict[str, int]
    """L11 lines each reader was sent."""
    cpu: dict[str, float]
    """CPU seconds each process used, per line sent, in µs."""

    @property
    def short(self) -> bool:
        return self.fed < 0.95 * self.rate

    def followed(self, reader: str) -> bool:
        return self.lost[reader] == 0 and self.behind[reader] <= CAUGHT_UP_S


def feed(store_path: Path, rate: float, seconds: float) -> None:
    """Append ``rate`` lines a second for ``seconds``; print how many, and when the last
    was committed (time.monotonic, the same clock in every process)."""
    lines = corpus_lines()
    store = SQLiteStore.open(store_path, create=False)
    per_tick = max(1, round(rate * TICK_S))
    total = int(rate * seconds)
    start = time.monotonic()
    sent = 0
    while sent < total:
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        count = min(per_tick, total - sent)
        store.append([Batch(APP, [lines[(sent + i) % len(lines)] for i in range(count)])])
        sent += count
    print(sent, time.monotonic(), start, flush=True)


def corpus_lines() -> list[LogLine]:
    messages = syslog_messages(20_000)
    return [
        line
        for i in range(0, len(messages), 100)
        for line in parse_logplex(frame(messages[i : i + 100]))
    ]


def append_message(store_path: Path, message: str) -> None:
    store = SQLiteStore.open(store_path, create=False)
    try:
        store.append([Batch(APP, parse_logplex(frame([syslog_line(message)])))])
    finally:
        store.close()


def ladder(
    store_path: Path, rates: list[int], seconds: float, readers: list[Reader], pids: dict[str, int]
) -> list[Step]:
    """Each rate in turn, until neither reader follows one or the feeder falls short."""
    steps: list[Step] = []
    for rate in rates:
        base = {r.name: r.accounted for r in readers}
        lost = {r.name: r.l11_lines for r in readers}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        fed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.tail_ceiling",
                "--feed",
                str(store_path),
                str(rate),
                str(seconds),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        sent_text, last_text, start_text = fed.stdout.split()
        sent, last, start = int(sent_text), float(last_text), float(start_text)
        behind = {r.name: float("inf") for r in readers}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(b == float("inf") for b in behind.values()):
            for r in readers:
                if behind[r.name] == float("inf") and r.accounted - base[r.name] >= sent:
                    behind[r.name] = max(0.0, time.monotonic() - last)
            time.sleep(0.01)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        step = Step(
            rate,
            sent,
            sent / (last - start),
            behind,
            {r.name: r.l11_lines - lost[r.name] for r in readers},
            {name: (after[name] - before[name]) / sent * 1e6 for name in pids},
        )
        steps.append(step)
        shown = "  ".join(
            f"{r.name}: {'followed' if step.followed(r.name) else 'FELL BEHIND'}"
            f" ({behind[r.name]:.2f} s, {step.lost[r.name]} L11)"
            for r in readers
        )
        print(f"  {rate:>7,} lines/s ({step.fed:>7,.0f} fed)  {shown}", flush=True)
        if step.short or not any(step.followed(r.name) for r in readers):
            break
        time.sleep(1)
    return steps


def ceiling(steps: list[Step], reader: str) -> tuple[int, bool]:
    """The highest rate ``reader`` followed, and whether it was the most the feeder could
    reach (the reader may follow more)."""
    followed = 0
    for step in steps:
        if step.short:
            return followed, True
        if not step.followed(reader):
            return followed, False
        followed = step.rate
    return followed, True


def main() -> None:
    if sys.argv[1:2] == ["--feed"]:
        feed(Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]
    measured_with()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HEROLOG_HOME": str(Path(tmp) / "home")}
        store_path = Path(tmp) / "home" / "logs.db"
        store = SQLiteStore.open(store_path)
        store.set_history(HISTORY)
        store.close()
        append_message(store_path, "start")  # the app exists before the --server tail asks
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        herolog = [sys.executable, "-m", "herolog"]
        serve = subprocess.Popen(
            [*herolog, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
        )
        tail = [*herolog, "logs", "-a", APP, "-n", "0", "--tail"]
        readers: list[Reader] = []
        rounds: list[list[Step]] = []
        try:
            wait_up(f"{url}/healthz")
            readers = [
                Reader("local", tail, env),
                Reader("--server", [*tail, "--server", url], env),
            ]

            def warm() -> bool:
                append_message(store_path, "soak-warm-up")
                return all(r.warm for r in readers)

            wait_for("both readers showing the warm-up line", warm, 60)
            append_message(store_path, "soak-start")
            wait_for(
                "both readers showing the start line", lambda: all(r.started for r in readers), 60
            )
            pids = {"serve": serve.pid, **{r.name: r.proc.pid for r in readers}}
            for n in range(args.rounds):
                print(f"round {n + 1}:", flush=True)
                rounds.append(ladder(store_path, rates, args.seconds, readers, pids))
        finally:
            for reader in readers:
                reader.stop()
            serve.terminate()
            serve.wait(30)
    report(rounds)


def report(rounds: list[list[Step]]) -> None:
    remote = statistics.median(ceiling(steps, "--server")[0] for steps in rounds)
    local = statistics.median(ceiling(steps, "local")[0] for steps in rounds)
    followed = [
        step for steps in rounds for step in steps if step.followed("--server") and not step.short
    ]
    if not followed:
        raise SystemExit("bench.tail_ceiling: the --server tail followed no rate of the ladder")

    def per_line(name: str) -> float:
        return statistics.median(step.cpu[name] for step in followed)

    top = ""
    if any(ceiling(steps, "local") == (local, True) for steps in rounds):
        top = " (the most the feeder reached on this machine: it may follow more)"
    print(
        f"ceiling, median of {len(rounds)} rounds: --server tail {remote:,.0f} lines/s,"
        f" local tail {local:,.0f}{top}"
    )
    print(
        f"CPU a line at the rates the --server tail followed (medians): serve"
        f" {per_line('serve'):.2f} µs + the --server client {per_line('--server'):.2f} µs;"
        f" the local tail {per_line('local'):.2f} µs"
    )
    result(
        "`logs --tail --server` ceiling",
        remote,
        "lines/s",
        peer=f"local `logs --tail` {local:,.0f} lines/s{top}",
        ratio=remote / local if local else None,
        target=f">= {TARGET:,} lines/s, no L11",
        met=remote >= TARGET,
    )
    remote_cpu = per_line("serve") + per_line("--server")
    result(
        "`logs --tail --server` CPU a line, serve + client",
        remote_cpu,
        "µs",
        peer=f"local `logs --tail` {per_line('local'):.2f} µs",
        ratio=remote_cpu / per_line("local"),
        target="(diagnostic)",
        met=None,
    )


if __name__ == "__main__":
    main()
