"""Run every benchmark, then write BENCHMARKS.md and bench/results.json.

    python -m bench [--quick]

Each benchmark runs in its own process, one after another (they would disturb each other),
and its output is kept whole in BENCHMARKS.md under a table of the headline figures, each
with its target and whether it was met. --quick shortens every run (for trying the harness
out; its figures are not the ones to quote). The benchmarks fetch what they need themselves:
wrk (unless on PATH), rsyslog and syslog-ng from Debian packages unpacked by bench/tools.py,
the heroku CLI from npm; a row says so if a peer cannot be had.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import machine

ROOT = Path(__file__).resolve().parent.parent

BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    # name, arguments, --quick arguments
    ("parser", [], ["--rounds", "3"]),
    ("render", [], ["--rounds", "3", "--lines", "20000"]),
    ("writer", [], ["--rounds", "3", "--lines", "100000"]),
    ("logs_startup", [], ["--runs", "5", "--heroku-runs", "2"]),
    ("search", [], ["--lines", "200000", "--runs", "3"]),
    ("ingest", [], ["--rounds", "1", "--seconds", "3", "--syslog-lines", "200000"]),
    ("syslog_peers", [], ["--rounds", "1", "--lines", "200000"]),
    ("forward", ["--drain-buffer", "10000"], ["--drain-buffer", "10000", "--rounds", "1"]),
    ("forward", [], ["--rounds", "1"]),
    ("tail_latency", [], ["--lines", "200"]),
    ("tail_ceiling", [], ["--rounds", "1", "--seconds", "2"]),
    ("soak", [], ["--seconds", "70"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    runs = []
    for name, full, quick in BENCHMARKS:
        command = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"+ {' '.join(command[1:])}", file=sys.stderr, flush=True)
        began = time.monotonic()
        stdout, failed = run(command)
        output = [x for x in stdout.splitlines() if not x.startswith("RESULT ")]
        results = [json.loads(x[7:]) for x in stdout.splitlines() if x.startswith("RESULT ")]
        if failed:
            output.append(f"({failed})")
        runs.append(
            {
                "command": "python -m " + " ".join(command[2:]),
                "seconds": round(time.monotonic() - began, 1),
                "output": output,
                "results": results,
            }
        )
        # After each benchmark, so that a later one failing or the run being stopped keeps
        # what the earlier ones measured.
        write(started, runs, quick=args.quick)
    print("wrote BENCHMARKS.md and bench/results.json", file=sys.stderr)


def run(command: list[str], timeout_s: float = 3600) -> tuple[str, str | None]:
    """A benchmark's output, and why it failed (None if it did not).

    In a process group of its own: one stopped for taking too long takes the servers
    and load generators it started with it, where they would disturb the next."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        return stdout, f"stopped after {timeout_s:g} s"
    if proc.returncode != 0:
        return stdout, f"exited {proc.returncode}: {stderr.strip()[-500:]}"
    return stdout, None


def write(started: str, runs: list[dict[str, object]], *, quick: bool) -> None:
    (ROOT / "bench" / "results.json").write_text(
        json.dumps({"date": started, "machine": machine(), "runs": runs}, indent=2) + "\n"
    )
    (ROOT / "BENCHMARKS.md").write_text(report(started, runs, quick=quick))


def report(started: str, runs: list[dict[str, object]], *, quick: bool) -> str:
    lines = [
        "# herolog benchmarks",
        "",
        f"Written by `python -m bench{' --quick' if quick else ''}` on {started}.",
        f"Machine: {machine()}. Its speed drifts by up to 2x between minutes, so every",
        "figure is a median, and peers are measured in the same run, alternating with herolog.",
        "",
        "| benchmark | herolog | peer | herolog / peer (same unit) | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        for r in run["results"]:  # type: ignore[attr-defined]
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
            met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
            cells = [
                r["name"],
                f"{r['value']:,.1f} {r['unit']}",
                r["peer"] or "",
                ratio,
                r["target"],
                met,
            ]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    lines += ["", "## Each run", ""]
    for run in runs:
        lines += [f"### `{run['command']}` ({run['seconds']} s)", "", "```"]
        lines += run["output"]  # type: ignore[arg-type]
        lines += ["```", ""]
    # The findings are kept by hand in bench/findings.md; every run carries them along.
    lines.append((ROOT / "bench" / "findings.md").read_text())
    return "\n".join(lines)


if __name__ == "__main__":
    main()
