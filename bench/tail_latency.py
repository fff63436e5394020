"""Tail latency: from a drain POST's 2xx to the line on a `herolog logs --tail` reader's stdout.

    python -m bench.tail_latency [--lines N] [--rate R]

Starts `herolog serve` and two readers, `herolog logs --tail` on the local store and
`herolog logs --tail --server URL` through the Platform API, then posts N one-line bodies
at R per second, each message carrying its sequence number, and records when each reader
printed it. Reports p50/p99/max per reader, and whether every line arrived once, in order.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from bench import measured_with, result
from bench.ingest import free_port, wait_up
from herolog.parser import frame


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100)
    args = parser.parse_args()
    measured_with(f"uvicorn {uvicorn.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "HEROLOG_HOME": str(Path(tmp) / "home"), "HEROLOG_API_KEY": "k"}
        herolog = [sys.executable, "-m", "herolog"]
        serve = subprocess.Popen(
            [*herolog, "serve", "--port", str(port), "--api-key", "k"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        readers: dict[str, subprocess.Popen[bytes]] = {}
        seen: dict[str, dict[int, float]] = {}
        order: dict[str, list[int]] = {}
        try:
            wait_up(f"{url}/healthz")
            with httpx.Client() as client:  # the app exists before the remote tail asks
                client.post(
                    f"{url}/apps/bench/logs",
                    content=frame([b"<190>1 2026-01-01T00:00:00+00:00 host app web.1 - start\n"]),
                    headers={"Content-Type": "application/logplex-1"},
                )
            commands = {
                "local": [*herolog, "logs", "-a", "bench", "-n", "0", "--tail"],
                "remote": [*herolog, "logs", "-a", "bench", "-n", "0", "--tail", "--server", url],
            }
            warmed: set[str] = set()
            for name, command in commands.items():
                proc = subprocess.Popen(
                    command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                )
                readers[name] = proc
                seen[name] = {}
                order[name] = []
                threading.Thread(
                    target=_read, args=(proc, seen[name], order[name], warmed, name), daemon=True
                ).start()
            with httpx.Client(headers={"Content-Type": "application/logplex-1"}) as client:
                # Both readers are following once a warm-up line has reached them.
                deadline = time.monotonic() + 30
                while len(warmed) < len(commands):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the readers did not start")
                    warm = b"<190>1 2026-01-01T00:00:00+00:00 host app web.1 - warm-up\n"
                    client.post(f"{url}/apps/bench/logs", content=frame([warm]))
                    time.sleep(0.2)
                time.sleep(0.5)
                posted: dict[int, float] = {}
                start = time.monotonic()
                for i in range(args.lines):
                    due = start + i / args.rate
                    time.sleep(max(0.0, due - time.monotonic()))
                    message = f"<190>1 2026-01-01T00:00:01+00:00 host app web.1 - seq={i}\n"
                    body = frame([message.encode()])
                    response = client.post(f"{url}/apps/bench/logs", content=body)
                    posted[i] = time.monotonic()
                    if response.status_code != 204:
                        raise RuntimeError(f"intake answered {response.status_code}")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(len(s) < args.lines for s in seen.values()):
                time.sleep(0.05)
        finally:
            for proc in readers.values():
                proc.terminate()
                proc.wait(10)
            serve.terminate()
            serve.wait(30)
    print(f"tail latency, {args.lines} lines at {args.rate:.0f}/s, from the POST's 204 to stdout")
    for name in readers:
        latencies = [(seen[name][i] - posted[i]) * 1000 for i in posted if i in seen[name]]
        complete = order[name] == list(range(args.lines))
        p50, p99 = statistics.median(latencies), percentile(latencies, 99)
        limit = 100 if name == "local" else 50
        result(
            f"tail latency p99, {name}",
            p99,
            "ms",
            target=f"<= {limit} ms, every line once",
            met=p99 <= limit and complete,
        )
        print(
            f"  {name:6}: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {max(latencies):6.1f} ms"
            f"  ({len(latencies)}/{args.lines} lines,"
            f" {'all once, in order' if complete else 'MISSING, REPEATED OR OUT OF ORDER'})"
        )


def _read(
    proc: subprocess.Popen[bytes],
    seen: dict[int, float],
    order: list[int],
    warmed: set[str],
    name: str,
) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        now = time.monotonic()
        text = raw.decode()
        if "seq=" in text:
            number = int(text.rsplit("seq=", 1)[1])
            seen.setdefault(number, now)
            order.append(number)
        elif "warm-up" in text:
            warmed.add(name)


if __name__ == "__main__":
    main()
