"""Drain forwarding throughput of `herolog serve`, against local HTTP and syslog sinks.

    python -m bench.forward [--seconds S] [--rounds R] [--rate LINES_PER_S]

Each round, with the server's other work the same, three runs post 100-frame Logplex bodies
for S seconds at a paced RATE (default 55,000 lines/s, a tenth above the 50,000 target, so
that a run that meets it is not within the pacing's error of it; wrk with a wait after each
answer, shortened by the answers' own time as the run before measured it):
  - ingest only: no drain (the peer: what ingest alone costs),
  - one HTTP drain (bench.sink answering 204, counting Logplex-Msg-Count),
  - one syslog drain (the same sink's TCP listener, counting octet-counted frames).
A drained run counts the lines the sink received once it stops growing, the time from the
first post to the last line delivered, and the lines lost (committed minus delivered), next
to those herolog counts as dropped (`drain list`; each one told with L10): the two agree.
Figures are medians of the rounds; the target (at least 50,000 lines/s to one HTTP drain, none
lost, while ingesting at that rate) is read from the HTTP drain's paced runs. Then one
unpaced run (wrk -c16) shows how far ingest and HTTP forwarding go together: ingest then
outruns forwarding, and the drain buffer drops the excess (reported with L10), as Logplex
does. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

from bench import measured_with, result, tools
from bench.corpus import bodies
from bench.ingest import committed, free_port, lua, memory, wait_up, wrk


def sink_counts(url: str) -> dict[str, int]:
    return dict(httpx.get(f"{url}/count", trust_env=False).json())


CONNECTIONS = 16


def paced_delay(
    connections: int, rate: float, delay_ms: float | None = None, achieved: float | None = None
) -> float:
    """The wait (ms) after each answer that makes ``connections`` connections post ``rate``
    requests/s between them. Each connection's interval is that wait plus the answer's own
    time, which a run waiting ``delay_ms`` and reaching ``achieved`` requests/s measured;
    without such a run, the wait is the whole interval (and the rate falls short)."""
    interval_ms = connections * 1000 / rate
    if delay_ms is None or not achieved:
        return interval_ms
    answer_ms = max(0.0, connections * 1000 / achieved - delay_ms)
    return max(0.0, interval_ms - answer_ms)


def pace(url: str, script: Path, delay_ms: float, seconds: float, connections: int = 16) -> float:
    """POST 100-frame bodies from ``connections`` connections, each waiting ``delay_ms``
    after each answer (wrk's delay()); the requests/s answered."""
    paced = script.with_suffix(".paced.lua")
    paced.write_text(script.read_text() + f"function delay()\n  return {delay_ms:.3f}\nend\n")
    _, answered = wrk(url, paced, connections, int(seconds))
    return answered / int(seconds)


def settle(sink: str, kind: str, timeout: float = 60) -> tuple[int, float]:
    """Wait until the sink's count stops growing; the count and when it last grew."""
    last, grew = sink_counts(sink)[kind], time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.25)
        count = sink_counts(sink)[kind]
        if count != last:
            last, grew = count, time.monotonic()
        elif time.monotonic() - grew > 2:
            break
    return last, grew


def dropped(herolog: list[str], env: dict[str, str], app: str) -> int:
    """The lines ``app``'s drain has dropped, by herolog's own count (``drain list``)."""
    out = subprocess.run(
        [*herolog, "drain", "list", "--json", "-a", app],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(json.loads(out)[0]["delivery"]["dropped"])


def committed_when_quiet(url: str, quiet_s: float = 0.3, timeout: float = 10) -> int:
    """Lines stored from drain POSTs, once no more are coming in: requests wrk had in flight
    as it stopped are committed after it exits, and a count read before they were would
    put them in the next run's, another app's: lines its drain never had, counted as lost."""
    last, since = committed(url)[0], time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        count = committed(url)[0]
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=55_000)
    parser.add_argument("--drain-buffer", type=int, default=1024)
    args = parser.parse_args()
    body = bodies(100, 100)[0]
    tools.require_wrk("bench.forward")
    measured_with(tools.wrk_version(), f"uvicorn {uvicorn.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = lua(_write(work / "hundred.body", body), work)
        port, sink_port, sink_syslog = free_port(), free_port(), free_port()
        env = {**os.environ, "HEROLOG_HOME": str(work / "home")}
        herolog = [sys.executable, "-m", "herolog"]
        subprocess.run(
            [*herolog, "drain", "add", f"http://127.0.0.1:{sink_port}/in", "-a", "http"],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*herolog, "drain", "add", f"syslog://127.0.0.1:{sink_syslog}", "-a", "syslog"],
            env=env,
            check=True,
            capture_output=True,
        )
        serve = subprocess.Popen(
            [*herolog, "serve", "--port", str(port), "--drain-buffer", str(args.drain_buffer)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        sink = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", str(sink_port), str(sink_syslog)],
            stderr=subprocess.DEVNULL,
        )
        url, sink_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sink_port}"
        results: dict[str, list[float]] = {}
        try:
            wait_up(f"{url}/healthz")
            wait_up(f"{sink_url}/count")
            time.sleep(1)  # the drains are picked up
            requests_s = args.rate / 100
            delay = paced_delay(CONNECTIONS, requests_s)
            for _ in range(2):  # the answers' time, measured on the app no drain reads
                reached = pace(f"{url}/apps/plain/logs", script, delay, 3, CONNECTIONS)
                delay = paced_delay(CONNECTIONS, requests_s, delay, reached)
            delays = dict.fromkeys(("plain", "http", "syslog"), delay)
            for _ in range(args.rounds):
                for app in delays:
                    before = committed_when_quiet(url)
                    sent_before = sink_counts(sink_url)
                    dropped_before = 0 if app == "plain" else dropped(herolog, env, app)
                    start = time.monotonic()
                    reached = pace(
                        f"{url}/apps/{app}/logs", script, delays[app], args.seconds, CONNECTIONS
                    )
                    ingest_s = time.monotonic() - start
                    delays[app] = paced_delay(CONNECTIONS, requests_s, delays[app], reached)
                    after, _ = committed(url)
                    stored = after - before
                    results.setdefault(f"{app} ingest", []).append(stored / ingest_s)
                    if app == "plain":
                        continue
                    count, last = settle(sink_url, app)
                    told_l10 = sink_counts(sink_url)[f"{app} L10"] - sent_before[f"{app} L10"]
                    delivered = count - sent_before[app] - told_l10
                    # Requests still in flight when the pacing stopped are committed by now:
                    # counted in neither or in both, never in one only.
                    stored = committed(url)[0] - before
                    results.setdefault(f"{app} forwarded", []).append(delivered / (last - start))
                    results.setdefault(f"{app} lost", []).append(stored - delivered)
                    told = dropped(herolog, env, app) - dropped_before
                    results.setdefault(f"{app} told", []).append(told)
                    results.setdefault(f"{app} lag", []).append(max(0.0, last - start - ingest_s))
            rss = memory(serve.pid)
            before = committed_when_quiet(url)
            sent_before = sink_counts(sink_url)
            start = time.monotonic()
            wrk(f"{url}/apps/http/logs", script, CONNECTIONS, int(args.seconds))
            count, last = settle(sink_url, "http")
            stored = committed(url)[0] - before  # after settling, as for the paced runs
            told_l10 = sink_counts(sink_url)["http L10"] - sent_before["http L10"]
            unpaced = (stored, count - sent_before["http"] - told_l10, last - start)
        finally:
            for proc in (serve, sink):
                proc.terminate()
                proc.wait(30)
    med = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"paced ingest at {args.rate:,.0f} lines/s for {args.seconds:.0f} s ({CONNECTIONS}"
        f" connections, each waiting {delays['plain']:.1f} ms after an answer when no drain"
        f" reads), drain buffer {args.drain_buffer:,} lines, median of {args.rounds} rounds"
    )
    print(f"  no drain   : {med['plain ingest']:9,.0f} lines/s committed")
    for app in ("http", "syslog"):
        print(
            f"  {app:6} drain: {med[f'{app} ingest']:9,.0f} lines/s committed,"
            f" {med[f'{app} forwarded']:9,.0f} lines/s delivered"
            f" ({med[f'{app} forwarded'] / med['plain ingest']:.2f}x ingest alone),"
            f" {med[f'{app} lost']:,.0f} lost"
            f" ({', '.join(f'{lost:,.0f}' for lost in results[f'{app} lost'])} by round;"
            f" dropped by herolog's count:"
            f" {', '.join(f'{told:,.0f}' for told in results[f'{app} told'])}),"
            f" last line {med[f'{app} lag']:.2f} s after the last post"
        )
    print(f"  RSS: {rss}")
    forwarded, lost = med["http forwarded"], max(results["http lost"])
    result(
        f"forwarding to one HTTP drain while ingesting {args.rate:,.0f} lines/s"
        f" (buffer {args.drain_buffer:,})",
        forwarded,
        "lines/s",
        target=">= 50,000 lines/s delivered, no loss",
        met=forwarded >= 50_000 and lost == 0,
    )
    stored, delivered, seconds = unpaced
    result(
        f"forwarding to one HTTP drain under unpaced ingest (buffer {args.drain_buffer:,})",
        delivered / seconds,
        "lines/s",
        target="(diagnostic: ingest outruns forwarding, and the buffer drops the excess)",
        met=None,
    )
    print(
        f"unpaced (wrk -c{CONNECTIONS}, {args.seconds:.0f} s) into the HTTP-drained app:"
        f" {stored:,} lines committed, {delivered:,} delivered ({delivered / seconds:,.0f}"
        f" lines/s), {stored - delivered:,} dropped by the drain buffer"
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


if __name__ == "__main__":
    main()
