"""Ingest throughput of `herolog serve`: HTTPS drains and syslog, with a bare ASGI app as peer.

    python -m bench.ingest [--seconds S] [--rounds R] [--warm-up S] [--syslog-lines N]

HTTPS: wrk (one thread, keep-alive) posts the same Logplex bodies, with Logplex's headers
and a fresh Logplex-Frame-Id each time, at concurrency 16 and 64 to `herolog serve` and to
bench.bare_app (uvicorn with the same settings, reading the body and answering 204: the
ceiling of the Python HTTP stack on this machine), taking turns round by round, after a
second of each (--warm-up) that is not counted; figures are medians of the rounds, and
herolog's over the bare app's is also given for each round (the two ran in the same phase
of the machine's drift). 100-frame bodies give lines/s, counted from what `/stats` says
was committed; 1-frame bodies requests/s, as wrk counts them. Any answer but a 2xx stops
the benchmark, and every answered request's lines must be in the store: how many are not
is printed, and fails the targets.

With 1-frame bodies a third server takes its turn too: bench.pipeline_serve, herolog serve
whose writer process answers every job without parsing or storing it, to show what those
cost the 1-frame figure (a diagnostic, with no target).

Syslog: one TCP connection sends N octet-counted frames in Heroku's syslog-drain form; the
time is from the first byte sent to the last line committed.

Needs wrk (apt-get install wrk). Peak RSS of the server is read from /proc.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import uvicorn

from bench import measured_with, result, tools
from bench.corpus import bodies, syslog_messages
from herolog.parser import Received, frame, parse_logplex


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1, trust_env=False)  # a local serve: no proxy
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def wrk(url: str, script: Path, connections: int, seconds: int) -> tuple[float, int]:
    """Requests/s and the count of requests answered (2xx: any other answer is an error)."""
    program, env = tools.wrk()
    out = subprocess.run(
        [program, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    answered = re.search(r"(\d+) requests in ", out)
    assert m, out
    assert answered, out
    return float(m.group(1)), int(answered.group(1))


_LOGPLEX_HEADERS = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/logplex-1"
wrk.headers["Logplex-Msg-Count"] = "{frames}"
wrk.headers["Logplex-Drain-Token"] = "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"
wrk.headers["User-Agent"] = "Logplex/v72"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
local random = io.open("/dev/urandom", "rb")
local seed = random:read(4)
random:close()
math.randomseed(((seed:byte(1) * 256 + seed:byte(2)) * 256 + seed:byte(3)) * 256 + seed:byte(4))
local top = 0x7FFFFFFF
function request()
  wrk.headers["Logplex-Frame-Id"] = string.format(
    "%08X%08X%08X%08X",
    math.random(0, top), math.random(0, top), math.random(0, top), math.random(0, top)
  )
  return wrk.format()
end
"""
"""What Logplex sends with each POST (reference/logplex.md), a fresh Frame-Id included: the
intake looks each one up and remembers it in the batch's transaction. Each id is 32 random
hex digits, as Logplex's look (``09C557EAFCFB6CF2740EE62F62971098``): ids that share a
prefix and count up would sit next to each other in any index of them, which real ones do
not. The generator is seeded anew in every wrk run (and thread), so no run's batches pass
for another's retries."""


def lua(body: Path, directory: Path) -> Path:
    """A wrk script posting ``body`` as Logplex does."""
    script = directory / f"{body.stem}.lua"
    frames = len(parse_logplex(body.read_bytes(), Received.at()))
    script.write_text(_LOGPLEX_HEADERS.format(body=body, frames=frames))
    return script


def memory(pid: int) -> str:
    """RSS and peak RSS of serve and of its writer process."""
    out = []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for name, proc in [("serve", pid), *(("writer", int(child)) for child in children)]:
        status = Path(f"/proc/{proc}/status").read_text()
        fields = dict(re.findall(r"(VmRSS|VmHWM):\s+(\d+)", status))
        out.append(
            f"{name} {int(fields['VmRSS']) // 1024} MB (peak {int(fields['VmHWM']) // 1024} MB)"
        )
    return ", ".join(out)


_stats_client: httpx.Client | None = None


def committed(url: str) -> tuple[int, int]:
    """(lines stored from drain POSTs, syslog lines stored) so far, from ``/stats``.

    One kept-alive client for every poll: a new client per call (``httpx.get``) loads the
    CA bundle each time, about 8 ms of CPU, which polling every 10 ms turned into most of
    a core taken from the server being measured."""
    global _stats_client
    if _stats_client is None:
        _stats_client = httpx.Client(timeout=30, trust_env=False)
    stats = _stats_client.get(f"{url}/stats").json()
    return int(stats["lines_stored"]), int(stats["syslog_lines"])


def close_stats_client() -> None:
    """Close :func:`committed`'s client (the next call makes a new one): a socket left to the
    garbage collector is a ResourceWarning, after a test run's summary."""
    global _stats_client
    if _stats_client is not None:
        _stats_client.close()
        _stats_client = None


atexit.register(close_stats_client)


class Run(NamedTuple):
    requests_per_s: float
    answered: int
    """Requests wrk saw answered."""
    committed: int
    """Lines the store took in the run (from /stats)."""
    lines_per_s: float
    """Of those."""
    missing: int
    """Lines of answered requests that the store does not hold."""


def ingest_run(url: str, script: Path, frames: int, connections: int, seconds: int) -> Run:
    """wrk posting ``script``'s body of ``frames`` frames to herolog serve at ``url``.

    Requests still in flight when wrk stops may be committed without being counted as
    answered, so the store may hold more than was answered, never less."""
    before, _ = committed(url)
    start = time.monotonic()
    rps, answered = wrk(f"{url}/apps/bench/logs", script, connections, seconds)
    elapsed = time.monotonic() - start
    stored = committed(url)[0] - before
    return Run(rps, answered, stored, stored / elapsed, max(0, answered * frames - stored))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--syslog-lines", type=int, default=1_000_000)
    parser.add_argument(
        "--warm-up", type=int, default=1, help="seconds of wrk on each server first, not counted"
    )
    args = parser.parse_args()
    tools.require_wrk("bench.ingest")
    measured_with(tools.wrk_version(), f"uvicorn {uvicorn.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one, hundred = work / "one.body", work / "hundred.body"
        one.write_bytes(bodies(1, 1)[0])
        hundred.write_bytes(bodies(100, 100)[0])
        scripts = {"1-frame": (lua(one, work), 1), "100-frame": (lua(hundred, work), 100)}
        port, syslog_port, bare_port = free_port(), free_port(), free_port()
        pipeline_port = free_port()
        env = {**os.environ, "HEROLOG_HOME": str(work / "home")}
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "herolog",
                "serve",
                "--port",
                str(port),
                "--syslog-port",
                str(syslog_port),
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_app", str(bare_port)], stderr=subprocess.DEVNULL
        )
        pipeline = subprocess.Popen(
            [sys.executable, "-m", "bench.pipeline_serve", "serve", "--port", str(pipeline_port)],
            env={**env, "HEROLOG_HOME": str(work / "pipeline")},
            stderr=subprocess.DEVNULL,
        )
        herolog_url, bare_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
        pipeline_url = f"http://127.0.0.1:{pipeline_port}"
        try:
            wait_up(f"{herolog_url}/healthz")
            wait_up(bare_url)
            wait_up(f"{pipeline_url}/healthz")
            peers = (("bare", bare_url), ("pipeline", pipeline_url))
            if args.warm_up > 0:
                # Each server's first seconds (imports finishing, caches, the store's first
                # pages) are not what the rounds compare.
                for url in (herolog_url, bare_url, pipeline_url):
                    for script, _ in scripts.values():
                        wrk(f"{url}/apps/bench/logs", script, 16, args.warm_up)
            results: dict[str, list[float]] = {}
            missing = 0
            for _ in range(args.rounds):
                for connections in (16, 64):
                    for kind, (script, frames) in scripts.items():
                        run = ingest_run(herolog_url, script, frames, connections, args.seconds)
                        # lines/s from what was committed, not from what wrk believes
                        results.setdefault(f"herolog {kind} c{connections}", []).append(
                            run.requests_per_s
                        )
                        results.setdefault(f"herolog {kind} c{connections} lines", []).append(
                            run.lines_per_s
                        )
                        missing += run.missing
                        for peer, url in peers:
                            if peer == "pipeline" and kind != "1-frame":
                                continue  # a diagnostic of the 1-frame figure only
                            results.setdefault(f"{peer} {kind} c{connections}", []).append(
                                wrk(f"{url}/apps/bench/logs", script, connections, args.seconds)[0]
                            )
            http_memory = memory(serve.pid)
            # Syslog over one connection.
            messages = syslog_messages(args.syslog_lines)
            hostname = "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"
            data = frame(
                m.replace(b" host ", f" {hostname} ".encode(), 1).replace(b" - ", b" - - ", 1)
                for m in messages
            )
            _, syslog_before = committed(herolog_url)
            start = time.monotonic()
            with socket.create_connection(("127.0.0.1", syslog_port)) as sock:
                sender = threading.Thread(target=sock.sendall, args=(data,))
                sender.start()
                while committed(herolog_url)[1] - syslog_before < args.syslog_lines:
                    time.sleep(0.05)
                    if time.monotonic() - start > 600:
                        raise RuntimeError("syslog lines were not all stored within 10 minutes")
                syslog_s = time.monotonic() - start
                sender.join()
            syslog_memory = memory(serve.pid)
        finally:
            for proc in (serve, bare, pipeline):
                proc.terminate()
                proc.wait(30)
    median = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"HTTPS drains, wrk -t1, {args.seconds}s runs after {args.warm_up}s of warm-up,"
        f" median of {args.rounds} alternating rounds"
    )

    def each_round(kind: str, connections: int) -> str:
        """herolog's figure over the bare app's in each round, where both ran in one phase
        of the machine's drift."""
        ours, bare = (
            results[f"herolog {kind} c{connections}"],
            results[f"bare {kind} c{connections}"],
        )
        return " ".join(f"{a / b:.2f}" for a, b in zip(ours, bare, strict=True))

    for connections in (16, 64):
        ours = median[f"herolog 1-frame c{connections}"]
        bare_rps = median[f"bare 1-frame c{connections}"]
        reach = median[f"pipeline 1-frame c{connections}"]
        print(
            f"  c{connections} 1-frame  : herolog {ours:8,.0f} req/s"
            f"   bare uvicorn {bare_rps:8,.0f} req/s   ratio {ours / bare_rps:.2f}"
            f" (each round: {each_round('1-frame', connections)})"
        )
        print(
            f"               with a writer storing nothing {reach:8,.0f} req/s"
            f"   ratio {reach / bare_rps:.2f}"
        )
        lines = median[f"herolog 100-frame c{connections} lines"]
        requests = median[f"herolog 100-frame c{connections}"]
        bare_rps = median[f"bare 100-frame c{connections}"]
        print(
            f"  c{connections} 100-frame: herolog {lines:8,.0f} lines/s committed"
            f" ({requests:,.0f} req/s)   bare uvicorn {bare_rps:8,.0f} req/s"
            f"   ratio {requests / bare_rps:.2f}"
            f" (each round: {each_round('100-frame', connections)})"
        )
    print(
        "  every line of an answered request is in the store"
        if missing == 0
        else f"  {missing:,} lines of answered requests are NOT in the store"
    )
    print(f"  RSS after the HTTP runs: {http_memory}")
    print(
        f"syslog, one TCP connection, {args.syslog_lines:,} octet-counted frames: "
        f"{args.syslog_lines / syslog_s:,.0f} lines/s to the last line committed ({syslog_s:.1f} s)"
    )
    print(f"  RSS after syslog: {syslog_memory}")
    for connections in (16, 64):
        lines = median[f"herolog 100-frame c{connections} lines"]
        result(
            f"HTTPS drains, 100-frame bodies, c{connections}",
            lines,
            "lines/s",
            # The bare app takes the same bodies, and would store 100 lines a request.
            peer="bare uvicorn app (100 lines a request it answers)",
            ratio=median[f"herolog 100-frame c{connections}"]
            / median[f"bare 100-frame c{connections}"],
            target=">= 100,000 lines/s, every answered line stored",
            met=lines >= 100_000 and missing == 0,
        )
        ours = median[f"herolog 1-frame c{connections}"]
        ratio = ours / median[f"bare 1-frame c{connections}"]
        result(
            f"HTTPS drains, 1-frame bodies, c{connections}",
            ours,
            "req/s",
            peer="bare uvicorn app",
            ratio=ratio,
            target=">= 0.5x the bare app, every answered line stored",
            met=ratio >= 0.5 and missing == 0,
        )
        reach = median[f"pipeline 1-frame c{connections}"]
        result(
            f"HTTPS drains, 1-frame bodies, c{connections}, writer storing nothing",
            reach,
            "req/s",
            peer="bare uvicorn app",
            ratio=reach / median[f"bare 1-frame c{connections}"],
            target="(diagnostic: parsing and storing free)",
            met=None,
        )


if __name__ == "__main__":
    main()
