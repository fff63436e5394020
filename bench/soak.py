"""Memory under sustained ingest: `herolog serve` RSS while wrk posts for several minutes.

    python -m bench.soak [--seconds S]

wrk (one thread, 16 connections) posts 100-frame Logplex bodies for S seconds (default 300);
the RSS of serve and of its store writer is sampled every 5 s. What matters is the shape: after
the first minute nothing should keep growing. Needs wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import result
from bench.corpus import bodies
from bench.ingest import committed, free_port, lua, wait_up, wrk


def rss_mb(pid: int) -> tuple[float, float]:
    """RSS of ``pid`` (serve) and of its children (the store writer), in MB."""
    sizes = []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for proc in [pid, *map(int, children)]:
        status = Path(f"/proc/{proc}/status").read_text()
        m = re.search(r"VmRSS:\s+(\d+)", status)
        sizes.append(int(m.group(1)) / 1024 if m else 0.0)
    return sizes[0], sum(sizes[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = work / "hundred.body"
        body.write_bytes(bodies(100, 100)[0])
        port = free_port()
        log = (work / "serve.log").open("w")
        serve = subprocess.Popen(
            [sys.executable, "-m", "herolog", "serve", "--port", str(port)],
            env={**os.environ, "HEROLOG_HOME": str(work / "home")},
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        samples: list[tuple[float, tuple[float, float]]] = []
        try:
            wait_up(f"{url}/healthz")
            done = threading.Event()

            def sample() -> None:
                start = time.monotonic()
                while not done.wait(5):
                    if serve.poll() is not None:
                        return
                    samples.append((time.monotonic() - start, rss_mb(serve.pid)))

            sampler = threading.Thread(target=sample)
            sampler.start()
            before, _ = committed(url)
            try:
                wrk(f"{url}/apps/soak/logs", lua(body, work), 16, args.seconds)
            finally:
                done.set()
                sampler.join()
            if serve.poll() is not None:
                log.close()
                sys.exit(f"serve exited ({serve.returncode}):\n{(work / 'serve.log').read_text()}")
            lines = committed(url)[0] - before
        finally:
            serve.terminate()
            serve.wait(30)
            log.close()
    first_minute = max(sum(mb) for t, mb in samples if t <= 60)
    last = sum(samples[-1][1])
    print(
        f"sustained ingest for {args.seconds} s: {lines:,} lines committed"
        f" ({lines / args.seconds:,.0f} lines/s)"
    )
    print("RSS of serve / store writer (MB), every 5 s:")
    print("  " + " ".join(f"{a:.0f}/{b:.0f}" for _, (a, b) in samples))
    print(f"  together: first minute's peak {first_minute:.0f} MB, at the end {last:.0f} MB")
    result(
        f"RSS after {args.seconds} s of sustained ingest (serve + writer)",
        last,
        "MB",
        target="no growth after the first minute (within 10%)",
        met=last <= first_minute * 1.1,
    )


if __name__ == "__main__":
    main()
