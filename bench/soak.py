"""Soak: `herolog serve` at a steady rate near its maximum, with drains, tails and readers.

    python -m bench.soak [--minutes M | --seconds S] [--load F] [--flap S] [--drain-buffer N]

Starts `herolog serve` (history at the store's maximum, so that nothing is trimmed and every
line can be counted afterwards) with two drains on each app it ingests into: a healthy HTTP
sink, and one that flaps (up, 500s, up, port closed, each for --flap seconds; bench.soak_sink).
Before anything else, one-line batches to soak-fill fill the writer's memory of Frame-Ids
to its bound (125,000 ids, about 20 MB), which would otherwise grow through the first
minutes and pass for a leak in the RSS check. Three tail readers follow every app from the
start: `herolog logs --tail`, the same with --json, and `herolog logs --tail --server URL`;
`herolog logs -n 1500` runs in a loop.

First wrk (one thread, 16 connections, 100-frame bodies) posts unpaced for --calibrate
seconds: the maximum with all of that running. Then it posts for M minutes (default 10) at
--load (default 0.8) times that, on a schedule (one clock for every connection, in wrk's
LuaJIT), in 10 s runs, each to the next app (soak-1, soak-2, ...: as many as hold the run's
lines). Meanwhile one line a second goes to soak-probe; the time from its 204 to each
reader's stdout is the tail latency. Every 5 s: RSS and open files of serve and of its store
writer, the WAL's size, how long serve takes to answer /stats, how far each reader is behind,
what the drains have delivered, the CPU each process used, and the readers' stderr.

Then the flapping sink stays up until both drains have caught up, the readers are given
time to catch up, and serve is stopped with SIGTERM. Checked, and printed: RSS, open files
and the WAL do not grow (the last third's median against the first third's, under load);
every line acknowledged with a 2xx is in the store, by app, in whole batches; for each drain,
delivered plus dropped is exactly what its app ingested, the sink got exactly the delivered
lines, and the drops were all reported with L10; every reader saw every line once, or was
told by L11 how many it missed; no reader printed "database is locked" or a traceback.
Exits 1 if a check fails. Needs wrk (built with LuaJIT, as Debian's is), and disk for the
run's lines (about 250 bytes each, in $TMPDIR).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import measured_with, result, tools
from bench.corpus import bodies
from bench.ingest import committed, free_port, lua, wait_up
from bench.tail_latency import percentile
from herolog.parser import frame
from herolog.store import MAX_HISTORY, NOTICE_HOST
from herolog.store_writer import FRAME_ID_MAX, FRAME_ID_SLACK

CONNECTIONS = 16
FRAMES = 100
BYTES_PER_LINE = 250
"""What a corpus line takes in the store (measured: about 234 bytes, indexes included)."""
PROBE_APP = "soak-probe"
WARM_APP = "soak-fill"
_PROBE = re.compile(rb"soak-probe (\d+)")
_L11 = re.compile(rb"Error L11 \(Tail buffer overflow\) -> This tail session dropped (\d+) ")
_TROUBLE = ("database is locked", "Traceback")


def process_rss(pid: int) -> float:
    """Resident memory of ``pid`` in MB."""
    m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of ``pid`` so far; NaN once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def writer_pid(serve: int) -> int:
    """The store writer process that ``serve`` started."""
    for child in Path(f"/proc/{serve}/task/{serve}/children").read_text().split():
        if b"herolog.store_writer" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise RuntimeError("serve has no store writer process")


def syslog_line(message: str) -> bytes:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    return f"<190>1 {stamp} host app probe.1 - {message}\n".encode()


class Reader:
    """A `herolog logs --tail` process, its stdout counted from the start marker on."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.warm = False
        self.started = False
        self.lines = 0
        self.l11_lines = 0
        self.l11_dropped = 0
        self.probes: dict[int, float] = {}
        self.repeated: list[int] = []
        self.stderr: list[tuple[float, str]] = []
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def accounted(self) -> int:
        """Lines seen, plus those an L11 line said were dropped (not counting the L11 lines)."""
        return self.lines - self.l11_lines + self.l11_dropped

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        pending = b""
        while chunk := os.read(fd, 1 << 20):
            now = time.monotonic()
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            lines, pending = data[:cut], data[cut:]
            if not self.started:
                if b"soak-warm-up" in lines:
                    self.warm = True
                at = lines.find(b"soak-start")
                if at < 0:
                    continue
                lines = lines[lines.index(b"\n", at) + 1 :]
                self.started = True
            for m in _PROBE.finditer(lines):
                number = int(m.group(1))
                if number in self.probes:
                    self.repeated.append(number)
                self.probes.setdefault(number, now)
            for m in _L11.finditer(lines):
                self.l11_lines += 1
                self.l11_dropped += int(m.group(1))
            self.lines += lines.count(b"\n")

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join(10)


@dataclass
class WrkRun:
    app: str
    seconds: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def acknowledged(self) -> int:
        return (self.requests - self.non_2xx) * FRAMES


_PACE = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clock, soak_timespec *now);
]]
local clock = ffi.new("soak_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
local interval, due = INTERVAL, nil
function delay()
  local now = now_ms()
  if due == nil or due < now - 1000 then due = now end
  due = due + interval
  return math.max(0, due - now)
end
"""
"""One schedule for every connection (wrk -t1 has one Lua state), on LuaJIT's clock:
request N goes at start + N x INTERVAL ms. A server more than a second behind is not
hammered to catch up: the schedule starts again from now."""


def run_wrk(url: str, base: Path, app: str, seconds: int, rate: float | None) -> WrkRun:
    """One wrk run posting ``base``'s body to ``app`` at ``rate`` requests a second (None:
    as fast as it is answered); its requests and how they were answered."""
    script = base.with_name(f"run-{app}.lua")
    extra = "" if rate is None else _PACE.replace("INTERVAL", f"{1000 / rate:.6f}")
    extra += (
        "function done(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        "  io.write(string.format('SOAK %d %d %d\\n', summary.requests, e.status,"
        " e.connect + e.read + e.write + e.timeout))\n"
        "end\n"
    )
    script.write_text(base.read_text() + extra)
    program, env = tools.wrk()
    began = time.monotonic()
    out = subprocess.run(
        [
            program,
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            "60s",
            "-s",
            str(script),
            f"{url}/apps/{app}/logs",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    m = re.search(r"^SOAK (\d+) (\d+) (\d+)$", out, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    requests, non_2xx, errors = map(int, m.groups())
    return WrkRun(app, time.monotonic() - began, requests, non_2xx, errors)


@dataclass
class Sample:
    at: float
    """Seconds into the steady run (negative: calibration)."""
    rate: float
    """Lines per second committed since the sample before."""
    answer_ms: float
    """How long serve took to answer GET /stats (on a kept-alive connection)."""
    serve_rss: float
    writer_rss: float
    serve_fds: int
    writer_fds: int
    wal_mb: float
    behind: dict[str, int]
    """Lines stored that each reader has not shown (nor been told by L11 it missed)."""
    latency_ms: dict[str, float]
    """Each reader's longest tail latency for the probe lines since the sample before."""
    delivered: dict[str, int]
    dropped: dict[str, int]
    cpu: dict[str, float]
    """CPU seconds so far, per process."""
    stderr_lines: int


@dataclass
class Probes:
    """One line a second to soak-probe; when each was acknowledged."""

    url: str
    interval: float
    acked: dict[int, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"Content-Type": "application/logplex-1"}
        with httpx.Client(headers=headers, timeout=60) as client:
            number = 0
            while not self.stop.wait(self.interval):
                body = frame([syslog_line(f"soak-probe {number}")])
                try:
                    response = client.post(f"{self.url}/apps/{PROBE_APP}/logs", content=body)
                except httpx.HTTPError as error:
                    self.failed.append(f"probe {number}: {error!r}")
                else:
                    if response.status_code == 204:
                        self.acked[number] = time.monotonic()
                    else:
                        self.failed.append(f"probe {number}: {response.status_code}")
                number += 1


@dataclass
class LogsLoop:
    """`herolog logs -n 1500` over and over: what each run printed and said."""

    env: dict[str, str]
    runs: int = 0
    short: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        command = [sys.executable, "-m", "herolog", "logs", "-n", "1500"]
        while not self.stop.wait(1):
            began = time.monotonic()
            done = subprocess.run(command, env=self.env, capture_output=True, timeout=120)
            self.seconds.append(time.monotonic() - began)
            self.runs += 1
            printed = done.stdout.count(b"\n")
            if printed != 1500:
                self.short.append(printed)
            if done.returncode != 0 or done.stderr:
                self.failures.append(
                    f"exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[-300:]}"
                )


def sink_counts(control: str) -> dict[str, Any]:
    return dict(httpx.get(control, timeout=10).json())


def drain_list(env: dict[str, str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "herolog", "drain", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return list(json.loads(out))


def add_drain(env: dict[str, str], url: str, app: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "herolog", "drain", "add", url, "-a", app, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)["token"])


@dataclass
class StoreCount:
    lines: dict[str, int]
    """The app's own lines (herolog's L10 notices left out)."""
    notices: dict[str, int]
    info_lines: dict[str, int]
    """What the store's own per-app counters (herolog store info) say, notices included."""
    after_start: int
    probes: list[int]


def count_store(env: dict[str, str], db: Path, start_id: int) -> StoreCount:
    info = json.loads(
        subprocess.run(
            [sys.executable, "-m", "herolog", "store", "info", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        con.execute("PRAGMA busy_timeout = 30000")
        lines: dict[str, int] = {}
        notices: dict[str, int] = {}
        for name, count, notice in con.execute(
            "SELECT apps.name, count(*), sum(lines.hostname IS ?) FROM lines"
            " JOIN apps ON apps.id = lines.app_id GROUP BY apps.name",
            (NOTICE_HOST,),
        ):
            lines[name] = count - notice
            notices[name] = notice
        (after,) = con.execute("SELECT count(*) FROM lines WHERE id > ?", (start_id,)).fetchone()
        probes = [
            int(m.group(1))
            for (message,) in con.execute(
                "SELECT message FROM lines JOIN apps ON apps.id = lines.app_id"
                " WHERE apps.name = ? AND message LIKE 'soak-probe %'",
                (PROBE_APP,),
            )
            if (m := _PROBE.fullmatch(message.encode()))
        ]
    return StoreCount(
        lines,
        notices,
        {app["name"]: app["lines"] for app in info["apps"]},
        after,
        probes,
    )


def start_id(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        row = con.execute(
            "SELECT lines.id FROM lines JOIN apps ON apps.id = lines.app_id"
            " WHERE apps.name = ? AND message = 'soak-start'",
            (PROBE_APP,),
        ).fetchone()
    if row is None:
        raise RuntimeError("the start marker is not in the store")
    return int(row[0])


def wait_for(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, ok: bool, text: str) -> bool:
        print(f"  [{'ok' if ok else 'FAILED'}] {text}")
        if not ok:
            self.failed.append(text)
        return ok


def thirds(steady: list[Sample], value: Callable[[Sample], float]) -> tuple[float, float]:
    """Medians of the first and the last third of the steady run's samples."""
    third = max(1, len(steady) // 3)
    return (
        statistics.median(value(s) for s in steady[:third]),
        statistics.median(value(s) for s in steady[-third:]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seconds", type=float, help="the steady run's length (over --minutes)")
    parser.add_argument("--load", type=float, default=0.8, help="the rate, times the maximum")
    parser.add_argument("--calibrate", type=int, default=20, help="seconds of unpaced posting")
    parser.add_argument("--flap", type=float, default=10, help="the flapping sink's phase (s)")
    parser.add_argument("--drain-buffer", type=int, default=10_000)
    parser.add_argument("--sample-every", type=float, default=5)
    parser.add_argument("--run-seconds", type=int, default=10, help="length of each wrk run")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    tools.require_wrk("bench.soak")
    measured_with(tools.wrk_version())
    with tempfile.TemporaryDirectory(prefix="herolog-soak-") as tmp:
        failed = Soak(Path(tmp), seconds, args).run()
    if failed:
        sys.exit(f"bench.soak: {len(failed)} check(s) failed: " + "; ".join(failed))


@dataclass
class Outcome:
    """What the soak found once the load stopped."""

    counted: StoreCount
    """The store once the drains had caught up, before the readers were stopped."""
    final: StoreCount
    """The store after serve stopped."""
    deliveries: dict[str, dict[str, Any]]
    """Each drain's delivery as `herolog drain list --json` shows it, by token."""
    sunk: dict[str, Any]
    """What the sinks counted."""


class Soak:
    """One soak run: the processes it starts, and what it measures."""

    def __init__(self, work: Path, seconds: float, args: argparse.Namespace) -> None:
        self.work = work
        self.seconds = seconds
        self.args = args
        self.db = work / "home" / "logs.db"
        self.env = {**os.environ, "HEROLOG_HOME": str(work / "home")}
        self.herolog = [sys.executable, "-m", "herolog"]
        self.port, self.control_port, *self.sink_ports = (free_port() for _ in range(4))
        self.url = f"http://127.0.0.1:{self.port}"
        self.control = f"http://127.0.0.1:{self.control_port}/"
        self.drain_urls = {
            "healthy": f"http://127.0.0.1:{self.sink_ports[0]}/healthy",
            "flapping": f"http://127.0.0.1:{self.sink_ports[1]}/flapping",
        }
        self.tokens: dict[str, tuple[str, str]] = {}
        """Each drain's kind and app, by token."""
        self.apps = ["soak-1"]
        self.serve_log = work / "serve.log"
        self.readers: list[Reader] = []
        self.probes = Probes(self.url, 1.0)
        self.logs_loop = LogsLoop(self.env)
        self.samples: list[Sample] = []
        self.runs: list[WrkRun] = []
        self.first_id = 0
        self.steady_at = math.inf
        self.maximum = self.rate = self.steady_s = 0.0
        self.settle_failure = ""
        self.serve_status: int | None = None
        self._sampling = threading.Event()
        self._threads: list[threading.Thread] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._writer = 0

    def run(self) -> list[str]:
        """Run the soak and check what it found; the checks that failed."""
        try:
            self.start()
            self.follow()
            self.calibrate()
            self.steady()
            outcome = self.settle()
        finally:
            self.cleanup()
        checks = Checks()
        report(self, outcome, checks)
        return checks.failed

    def start(self) -> None:
        """The sinks, the drains of soak-1, serve, its memory of Frame-Ids filled, and the
        three tail readers."""
        self._add_drains("soak-1")
        ports = [str(p) for p in (self.control_port, *self.sink_ports)]
        self._procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.soak_sink", *ports, str(self.args.flap)],
                stderr=subprocess.DEVNULL,
            )
        )
        with self.serve_log.open("w") as log:
            serve = subprocess.Popen(
                [
                    *self.herolog,
                    "serve",
                    "--port",
                    str(self.port),
                    "--history",
                    str(MAX_HISTORY),
                    "--drain-buffer",
                    str(self.args.drain_buffer),
                ],
                env=self.env,
                stderr=log,
            )
        self._procs.insert(0, serve)
        wait_up(f"{self.url}/healthz")
        wait_up(self.control)
        self._writer = writer_pid(serve.pid)
        self.fill_frame_ids()
        tail = [*self.herolog, "logs", "-n", "0", "--tail"]
        self.readers = [
            Reader("local", tail, self.env),
            Reader("local --json", [*tail, "--json"], self.env),
            Reader("--server", [*tail, "--server", self.url], self.env),
        ]

    def fill_frame_ids(self) -> None:
        """Post one-line batches, each with a Frame-Id of its own, to WARM_APP until the
        writer holds as many ids as it keeps: its memory of them is bounded, but until it is
        full it grows, which the RSS check (the last third against the first) would take for
        a leak. Before the readers start, so they have none of these lines to show."""
        body = self.work / "one.body"
        body.write_bytes(frame([syslog_line("soak-fill")]))
        script = lua(body, self.work)
        wanted = FRAME_ID_MAX + FRAME_ID_SLACK + 1_000  # and pruned once
        while committed(self.url)[0] < wanted:
            run_wrk(self.url, script, WARM_APP, 5, None)

    @property
    def serve(self) -> subprocess.Popen[bytes]:
        return self._procs[0]

    def _add_drains(self, app: str) -> None:
        for kind, url in self.drain_urls.items():
            self.tokens[add_drain(self.env, url, app)] = (kind, app)

    def follow(self) -> None:
        """Wait until every reader follows, mark where they started, start sampling."""
        with httpx.Client(headers={"Content-Type": "application/logplex-1"}) as client:

            def post(message: str) -> None:
                body = frame([syslog_line(message)])
                client.post(f"{self.url}/apps/{PROBE_APP}/logs", content=body).raise_for_status()

            post("soak-warm-up")  # the remote reader needs the app to exist

            def warm() -> bool:
                post("soak-warm-up")
                return all(r.warm for r in self.readers)

            wait_for("every reader showing the warm-up line", warm, 60)
            post("soak-start")
            wait_for("every reader showing the start line", self._all_started, 60)
        self.first_id = start_id(self.db)
        self.steady_at = time.monotonic() + self.args.calibrate  # until it really starts
        for target in (self._sample, self.probes.run):
            self._threads.append(threading.Thread(target=target, daemon=True))
            self._threads[-1].start()

    def _all_started(self) -> bool:
        return all(r.started for r in self.readers)

    def calibrate(self) -> None:
        """The maximum rate, with everything else running; then how many apps the run needs."""
        before, _ = committed(self.url)
        began = time.monotonic()
        self.runs.append(run_wrk(self.url, self.base(), "soak-1", self.args.calibrate, None))
        self.maximum = (committed(self.url)[0] - before) / (time.monotonic() - began)
        expected = self.runs[0].acknowledged + self.args.load * self.maximum * self.seconds
        # History is at most MAX_HISTORY lines per app: spread the run so nothing is trimmed.
        count = math.ceil(expected * 1.3 / MAX_HISTORY)
        self.apps = [f"soak-{i}" for i in range(1, count + 1)]
        free = shutil.disk_usage(self.work).free
        if free < expected * BYTES_PER_LINE * 1.3 + (1 << 30):
            raise SystemExit(
                f"bench.soak: {expected:,.0f} lines need about"
                f" {expected * BYTES_PER_LINE * 1.3 / 1e9:.1f} GB in {self.work.parent}, which"
                f" has {free / 1e9:.1f} GB free (set TMPDIR elsewhere, or run shorter)"
            )
        for app in self.apps[1:]:
            self._add_drains(app)

    def base(self) -> Path:
        body = self.work / "hundred.body"
        if not body.exists():
            body.write_bytes(bodies(FRAMES, FRAMES)[0])
        return lua(body, self.work)

    def steady(self) -> None:
        """Post at the target rate, one wrk run after another, each to the next app."""
        target = self.args.load * self.maximum
        print(
            f"maximum {self.maximum:,.0f} lines/s; posting {target:,.0f} lines/s for"
            f" {self.seconds:.0f} s to {', '.join(self.apps)}",
            file=sys.stderr,
            flush=True,
        )
        self._threads.append(threading.Thread(target=self.logs_loop.run, daemon=True))
        self._threads[-1].start()
        base = self.base()
        self.steady_at = time.monotonic()
        steady_before, _ = committed(self.url)
        index = 0
        while (left := self.seconds - (time.monotonic() - self.steady_at)) >= 1:
            app = self.apps[index % len(self.apps)]
            seconds = round(min(self.args.run_seconds, left))
            self.runs.append(run_wrk(self.url, base, app, seconds, target / FRAMES))
            index += 1
        self.steady_s = time.monotonic() - self.steady_at
        self.rate = (committed(self.url)[0] - steady_before) / self.steady_s
        self.probes.stop.set()
        self.logs_loop.stop.set()

    def settle(self) -> Outcome:
        """Keep the flapping sink up until both drains have caught up, give the readers time
        to catch up too, then stop serve with SIGTERM."""
        httpx.post(f"{self.control}steady", timeout=10)
        counted = count_store(self.env, self.db, self.first_id)

        def drains_caught_up() -> bool:
            sunk = sink_counts(self.control)
            dropped = {d["token"]: d["delivery"]["dropped"] for d in drain_list(self.env)}
            return all(
                sunk[kind]["drains"].get(token, {}).get("lines", 0) + dropped.get(token, 0)
                >= counted.lines.get(app, 0)
                for token, (kind, app) in self.tokens.items()
            )

        try:
            wait_for("the drains catching up", drains_caught_up, 300)
        except RuntimeError as error:
            self.settle_failure = str(error)
        counted = count_store(self.env, self.db, self.first_id)
        with contextlib.suppress(RuntimeError):
            wait_for(
                "the readers catching up",
                lambda: all(r.accounted >= counted.after_start for r in self.readers),
                max(300, self.seconds),
            )
        time.sleep(1)  # a line shown twice has the time to show up
        for reader in self.readers:
            reader.stop()
        self._sampling.set()
        for thread in self._threads:
            thread.join(130)
        self.serve.send_signal(signal.SIGTERM)
        self.serve_status = self.serve.wait(60)
        return Outcome(
            counted,
            count_store(self.env, self.db, self.first_id),
            {d["token"]: d["delivery"] for d in drain_list(self.env)},
            sink_counts(self.control),
        )

    def cleanup(self) -> None:
        for reader in self.readers:
            reader.stop()
        self.probes.stop.set()
        self.logs_loop.stop.set()
        self._sampling.set()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)

    def _sample(self) -> None:
        db, readers = self.db, self.readers
        with (
            httpx.Client(base_url=self.url, timeout=60) as client,
            contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con,
        ):
            last_at, last_stored = (
                time.monotonic(),
                int(client.get("/stats").json()["lines_stored"]),
            )
            con.execute("PRAGMA busy_timeout = 30000")
            print(HEADER, file=sys.stderr, flush=True)
            while not self._sampling.wait(self.args.sample_every):
                if self.serve.poll() is not None:
                    return
                now = time.monotonic()
                stored = int(client.get("/stats").json()["lines_stored"])
                answer_ms = (time.monotonic() - now) * 1000
                (newest,) = con.execute("SELECT max(id) FROM lines").fetchone()
                delivered = {"healthy": 0, "flapping": 0}
                dropped = {"healthy": 0, "flapping": 0}
                for token, sent, lost in con.execute(
                    "SELECT token, delivered, dropped FROM drains"
                ):
                    if token in self.tokens:
                        delivered[self.tokens[token][0]] += sent
                        dropped[self.tokens[token][0]] += lost
                acked = self.probes.acked
                window = [n for n, at in list(acked.items()) if at > last_at]
                latency = {}
                for reader in readers:
                    got = [reader.probes[n] - acked[n] for n in window if n in reader.probes]
                    latency[reader.name] = max(got, default=math.nan) * 1000
                cpu = {"serve": cpu_seconds(self.serve.pid), "writer": cpu_seconds(self._writer)}
                cpu |= {r.name: cpu_seconds(r.proc.pid) for r in readers}
                cpu["sinks"] = cpu_seconds(self._procs[1].pid)
                own, children = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu["bench.soak"] = own.user + own.system
                cpu["wrk, logs -n 1500"] = children.ru_utime + children.ru_stime
                wal = Path(f"{db}-wal")
                self.samples.append(
                    Sample(
                        now - self.steady_at,
                        (stored - last_stored) / (now - last_at),
                        answer_ms,
                        process_rss(self.serve.pid),
                        process_rss(self._writer),
                        open_files(self.serve.pid),
                        open_files(self._writer),
                        wal.stat().st_size / 1e6 if wal.exists() else 0.0,
                        {r.name: newest - self.first_id - r.accounted for r in readers},
                        latency,
                        delivered,
                        dropped,
                        cpu,
                        sum(len(r.stderr) for r in readers),
                    )
                )
                last_at, last_stored = now, stored
                print(describe(self.samples[-1]), file=sys.stderr, flush=True)


HEADER = (
    "      t  lines/s  /stats ms  RSS: serve writer  files: serve writer  WAL MB  lines behind:"
    " local     json   server  latency ms: local  json server  delivered: healthy flapping"
    "  stderr"
)


def describe(s: Sample) -> str:
    behind = " ".join(f"{v:>8,}" for v in s.behind.values())
    latency = " ".join(f"{v:5.0f}" for v in s.latency_ms.values())
    return (
        f"{s.at:7.0f} {s.rate:8,.0f} {s.answer_ms:10.0f} {s.serve_rss:11.0f} {s.writer_rss:6.0f}"
        f" {s.serve_fds:13} {s.writer_fds:6} {s.wal_mb:7.0f} {behind:>38}"
        f" {latency:>30} {s.delivered['healthy']:>18,} {s.delivered['flapping']:>8,}"
        f" {s.stderr_lines:7}"
    )


def report(soak: Soak, outcome: Outcome, checks: Checks) -> None:
    """Print what the soak measured, check it, and emit the headline figures."""
    # Under load only: not calibration, nor the wait for the drains and readers afterwards.
    steady = [s for s in soak.samples if 0 <= s.at <= soak.steady_s]
    describe_run(soak, steady)
    print("checks:")
    flat = check_growth(steady, checks)
    stored = check_store(soak, outcome.final, checks)
    drains, delivered, dropped = check_drains(soak, outcome, checks)
    readers, latencies = check_readers(soak, outcome, checks)
    seconds = soak.steady_s
    minutes = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    result(
        f"soak ({minutes}, 2 drains, 3 tails): steady ingest",
        soak.rate,
        "lines/s",
        peer="unpaced maximum measured first",
        ratio=soak.rate / soak.maximum,
        target=">= 0.7x the maximum; every acknowledged line stored",
        met=soak.rate / soak.maximum >= 0.7 and stored,
    )
    result(
        f"soak ({minutes}): peak RSS, serve + writer",
        max((s.serve_rss + s.writer_rss for s in soak.samples), default=0.0),
        "MB",
        target="RSS, open files and WAL do not grow (last third vs first)",
        met=flat,
    )
    for kind in ("healthy", "flapping"):
        result(
            f"soak ({minutes}): {kind} drain, lines delivered ({dropped[kind]:,} dropped)",
            delivered[kind],
            "lines",
            target="delivered + dropped = ingested, drops reported with L10",
            met=drains[kind],
        )
    for name, values in latencies.items():
        result(
            f"soak ({minutes}): tail latency p99, {name}",
            percentile(values, 99) if values else math.nan,
            "ms",
            target="every line once, or L11-reported; no 'database is locked'",
            met=readers[name],
        )
    if checks.failed:
        print(f"FAILED: {len(checks.failed)} check(s)")


def describe_run(soak: Soak, steady: list[Sample]) -> None:
    runs, samples = soak.runs, soak.samples
    run_rates = [r.acknowledged / r.seconds for r in runs[1:]]
    print(
        f"soak: {soak.steady_s / 60:.1f} minutes at {soak.rate:,.0f} lines/s committed"
        f" ({soak.rate / soak.maximum:.2f}x the unpaced maximum of {soak.maximum:,.0f} lines/s"
        f" measured first, with everything below running), {sum(r.acknowledged for r in runs):,}"
        f" lines acknowledged in {len(runs)} wrk runs (16 connections, 100-frame bodies) into"
        f" {', '.join(soak.apps)}"
    )
    if run_rates:
        print(
            f"  per wrk run: {min(run_rates):,.0f} to {max(run_rates):,.0f} lines/s acknowledged"
            f" (median {statistics.median(run_rates):,.0f});"
            f" {sum(r.non_2xx for r in runs)} non-2xx answers,"
            f" {sum(r.socket_errors for r in runs)} socket errors"
        )
    loop = soak.logs_loop
    print(
        "  two drains on each app: a healthy HTTP sink, and one flapping (up, 500s, up, gone);"
        " three tail readers (local, local --json, --server); `herolog logs -n 1500` in a loop"
        f" ({loop.runs} runs, median {statistics.median(loop.seconds or [0]):.2f} s)"
    )
    print(
        f"every {samples[1].at - samples[0].at if len(samples) > 1 else 0:.0f} s (t < 0:"
        " calibration; latency: the worst for the probe lines since the row before):"
    )
    print("  " + HEADER)
    step = max(1, len(samples) // 24)
    for s in samples[::step]:
        print("  " + describe(s))
    if samples and samples[-1] is not samples[::step][-1]:
        print("  " + describe(samples[-1]))
    if len(steady) >= 2:
        start, end = steady[0], steady[-1]
        span = end.at - start.at
        print(f"CPU over the steady run (seconds of CPU a second; {os.cpu_count()} CPUs):")
        used = (f"{name} {(end.cpu[name] - start.cpu[name]) / span:.2f}" for name in end.cpu)
        print("  " + ", ".join(used))
        for kind in ("healthy", "flapping"):
            print(
                f"  {kind} drain dropped {start.dropped[kind]:,} lines by the steady run's first"
                f" sample (calibration, unpaced), {end.dropped[kind] - start.dropped[kind]:,}"
                " during it"
            )


def check_growth(steady: list[Sample], checks: Checks) -> bool:
    """RSS, open files and the WAL: the last third of the steady run against the first."""
    ok = checks.check(len(steady) >= 3, f"{len(steady)} samples in the steady run")
    if not ok:
        return False
    limits: list[tuple[str, Callable[[Sample], float], float, float]] = [
        ("serve RSS (MB)", lambda s: s.serve_rss, 1.1, 2),
        ("writer RSS (MB)", lambda s: s.writer_rss, 1.1, 2),
        ("serve open files", lambda s: s.serve_fds, 1.2, 4),
        ("writer open files", lambda s: s.writer_fds, 1.2, 4),
        ("WAL (MB)", lambda s: s.wal_mb, 1.5, 64),
    ]
    for label, value, factor, slack in limits:
        first, last = thirds(steady, value)
        ok &= checks.check(
            last <= first * factor + slack,
            f"{label}: median {first:,.1f} in the first third, {last:,.1f} in the last"
            f" (allowed: x{factor} + {slack})",
        )
    return ok


def check_store(soak: Soak, final: StoreCount, checks: Checks) -> bool:
    """Every acknowledged line is in the store, in whole batches, and nothing was trimmed."""
    acked: dict[str, int] = {}
    runs: dict[str, int] = {}
    for r in soak.runs:
        acked[r.app] = acked.get(r.app, 0) + r.acknowledged
        runs[r.app] = runs.get(r.app, 0) + 1
    ok = True
    for app in soak.apps:
        stored = final.lines.get(app, 0)
        in_flight = runs.get(app, 0) * CONNECTIONS * FRAMES
        ok &= checks.check(
            acked.get(app, 0) <= stored <= acked.get(app, 0) + in_flight and stored % FRAMES == 0,
            f"{app}: {acked.get(app, 0):,} lines acknowledged, {stored:,} in the store (whole"
            f" batches; at most {in_flight:,} more, from requests cut off when a wrk run ended)",
        )
        total = stored + final.notices.get(app, 0)
        ok &= checks.check(
            final.info_lines.get(app) == total and total <= MAX_HISTORY,
            f"{app}: herolog store info says {final.info_lines.get(app, 0):,} lines, the table"
            f" holds {total:,} (with {final.notices.get(app, 0):,} L10 notices), none trimmed",
        )
    probes = soak.probes
    missing = sorted(set(probes.acked) - set(final.probes))
    repeated = len(final.probes) - len(set(final.probes))
    ok &= checks.check(
        not missing and not repeated and not probes.failed,
        f"{PROBE_APP}: {len(probes.acked)} one-line posts acknowledged, {len(missing)} missing"
        f" from the store, {repeated} stored twice, {len(probes.failed)} not acknowledged"
        + (f" ({probes.failed[:3]})" if probes.failed else ""),
    )
    return ok


def check_drains(
    soak: Soak, outcome: Outcome, checks: Checks
) -> tuple[dict[str, bool], dict[str, int], dict[str, int]]:
    """Each drain: delivered + dropped + waiting (for the next serve) = ingested, the sink got
    the delivered lines, and L10 lines told it of every drop. Whether each kind passed, and
    its lines delivered, dropped."""
    final, sunk = outcome.final, outcome.sunk
    ok = {"healthy": True, "flapping": True}
    if soak.settle_failure:
        checks.check(False, soak.settle_failure)
        ok = {"healthy": False, "flapping": False}
    notices_sent: dict[str, int] = {}
    delivered_total = {"healthy": 0, "flapping": 0}
    dropped_total = {"healthy": 0, "flapping": 0}
    for token, (kind, app) in sorted(soak.tokens.items(), key=lambda t: (t[1][1], t[1][0])):
        delivery = outcome.deliveries.get(token, {})
        delivered, dropped = int(delivery.get("delivered", -1)), int(delivery.get("dropped", -1))
        waiting = int(delivery.get("waiting") or 0)  # left for the next serve: none if settled
        got = sunk[kind]["drains"].get(token, {})
        lines, reported = int(got.get("lines", 0)), int(got.get("l10_reported", 0))
        notices_sent[app] = notices_sent.get(app, 0) + int(got.get("l10_lines", 0))
        ingested = final.lines.get(app, 0)
        delivered_total[kind] += delivered
        dropped_total[kind] += dropped
        ok[kind] &= checks.check(
            delivered + dropped + waiting == ingested
            and lines == delivered
            and reported == dropped,
            f"{app} {kind} drain: {delivered:,} delivered + {dropped:,} dropped"
            f" + {waiting:,} waiting = {delivered + dropped + waiting:,}, ingested {ingested:,};"
            f" the sink got {lines:,};"
            f" the L10 lines it got reported {reported:,} dropped",
        )
        batches, waits = int(got.get("batches", 0)), int(got.get("waits", 0))
        reused = (
            f", {1000 * got['waited_s'] / waits:.1f} ms from the answer before to the next on"
            " the same one"
            if waits
            else ""
        )
        print(
            f"       {batches:,} batches of {lines / max(batches, 1):,.0f} lines on average,"
            f" {got.get('fresh', 0):,} of them on a new connection{reused};"
            f" {1000 * got.get('body_s', 0) / max(batches, 1):.1f} ms from a batch's headers to"
            f" the end of its body; {got.get('retried', 0)} sent again after their 204"
        )
    for app in soak.apps:
        ok["flapping"] &= checks.check(
            final.notices.get(app, 0) == notices_sent.get(app, 0),
            f"{app}: {final.notices.get(app, 0)} L10 notices in the history,"
            f" {notices_sent.get(app, 0)} L10 lines delivered to its drains",
        )
    print(
        f"  (the flapping sink answered {sunk['flapping']['refused']:,} batches 500 and cut"
        f" {sunk['flapping']['resets']} connections)"
    )
    return ok, delivered_total, dropped_total


def check_readers(
    soak: Soak, outcome: Outcome, checks: Checks
) -> tuple[dict[str, bool], dict[str, list[float]]]:
    """Every reader saw every line once or was told by L11 what it missed; nobody printed
    "database is locked" or a traceback. Whether each reader passed, and its latencies (ms)."""
    counted, final, probes, loop = outcome.counted, outcome.final, soak.probes, soak.logs_loop
    serve_log = soak.serve_log.read_text(errors="replace")
    same = checks.check(
        counted.after_start == final.after_start,
        f"{final.after_start:,} lines stored after the readers started"
        f" ({counted.after_start:,} when they were stopped)",
    )
    complete: dict[str, bool] = {}
    latencies: dict[str, list[float]] = {}
    for reader in soak.readers:
        missed = sorted(set(probes.acked) - set(reader.probes))
        whole = reader.accounted == counted.after_start and not reader.repeated
        if reader.l11_dropped == 0:
            whole &= not missed
        complete[reader.name] = checks.check(
            same and whole,
            f"reader {reader.name}: {reader.lines:,} lines, {reader.l11_lines} L11 lines"
            f" reporting {reader.l11_dropped:,} dropped: {reader.accounted:,} accounted for"
            f" of {counted.after_start:,}; {len(missed)} probe lines missed,"
            f" {len(reader.repeated)} shown twice",
        )
        latencies[reader.name] = [
            (at - probes.acked[n]) * 1000 for n, at in reader.probes.items() if n in probes.acked
        ]
    said = [(r.name, line) for r in soak.readers for _, line in r.stderr]
    said += [("logs -n 1500", failure) for failure in loop.failures]
    said += [("serve", line) for line in serve_log.splitlines()]
    trouble = [f"{who}: {line}" for who, line in said if any(t in line for t in _TROUBLE)]
    clean = checks.check(
        not trouble,
        "no 'database is locked' or traceback from the readers, `logs -n 1500` or serve"
        + (f": {trouble[:5]}" if trouble else ""),
    )
    other = [f"{r.name}: {line}" for r in soak.readers for _, line in r.stderr]
    if other:
        print(f"  readers' stderr ({len(other)} lines): {other[:5]}")
    checks.check(
        not loop.failures and not loop.short,
        f"`herolog logs -n 1500`: {loop.runs} runs, {len(loop.failures)} failed"
        f" ({loop.failures[:2]}), {len(loop.short)} printed fewer than 1500 lines",
    )
    checks.check(
        soak.serve_status == 0,
        f"serve exited {soak.serve_status} on SIGTERM"
        + ("" if soak.serve_status == 0 else f": {serve_log.strip()[-500:]}"),
    )
    print("tail latency, from a probe line's 204 to the reader's stdout (ms):")
    for name, values in latencies.items():
        if values:
            third = max(1, len(values) // 3)
            print(
                f"  {name:13}: p50 {statistics.median(values):8.1f}  p99"
                f" {percentile(values, 99):8.1f}  max {max(values):8.1f}"
                f"  (median in the first third {statistics.median(values[:third]):.1f},"
                f" the last {statistics.median(values[-third:]):.1f}; {len(values)} lines)"
            )
    return {name: ok and clean for name, ok in complete.items()}, latencies


if __name__ == "__main__":
    main()
