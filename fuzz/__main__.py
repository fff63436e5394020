"""A long fuzz campaign over the parser and the intake, with Hypothesis.

    python -m fuzz [--seconds S | --examples N] [--target NAME ...] [--replay FILE]

Each target's property (see fuzz/properties.py) is run on fresh random inputs in batches,
for S seconds in all (split evenly between the targets) or N inputs per target. Prints how
many inputs each target tried. On a failure it prints the failing input (shrunk), saves it
to a file that ``--replay`` runs again, and exits 1.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Verbosity, given, seed, settings
from hypothesis import strategies as st

from fuzz import properties, strategies
from herolog.store import SQLiteStore

Check = Callable[[Any], object]
SYSLOG_APP = "fuzz-syslog"


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[], contextlib.AbstractContextManager[Check]]
    """Sets up what the property needs (a server, say) and gives the check of one input."""


def _plain(check: Check) -> Callable[[], contextlib.AbstractContextManager[Check]]:
    return lambda: contextlib.nullcontext(check)


@dataclass(frozen=True)
class _Serving:
    client: httpx.Client
    store: SQLiteStore
    syslog_port: int


@contextlib.contextmanager
def _serve() -> Iterator[_Serving]:
    """A real ``herolog serve`` (uvicorn, writer process, SQLite) on free ports."""
    from herolog.server import ServeConfig, Server, run_in_thread

    with tempfile.TemporaryDirectory(prefix="herolog-fuzz-") as home:
        previous = os.environ.get("HEROLOG_HOME")
        os.environ["HEROLOG_HOME"] = home
        config = ServeConfig(
            store_path=Path(home) / "logs.db", port=0, syslog_port=0, syslog_app=SYSLOG_APP
        )
        server = Server(config, log=io.StringIO())
        stop = run_in_thread(server)
        store = SQLiteStore.open(config.store_path, create=False)
        try:
            assert server.syslog_port is not None
            url = f"http://127.0.0.1:{server.http_port}"
            with httpx.Client(base_url=url, timeout=60) as client:
                yield _Serving(client, store, server.syslog_port)
        finally:
            store.close()
            stop()
            if previous is None:
                os.environ.pop("HEROLOG_HOME", None)
            else:
                os.environ["HEROLOG_HOME"] = previous


@contextlib.contextmanager
def _intake() -> Iterator[Check]:
    with _serve() as serving:

        def check(case: tuple[bytes, bool, int]) -> int:
            body, gzipped, pieces = case
            return properties.check_intake(
                serving.client, serving.store, body, gzipped=gzipped, pieces=pieces
            )

        yield check


@contextlib.contextmanager
def _syslog_intake() -> Iterator[Check]:
    with _serve() as serving:

        def check(chunks: list[bytes]) -> int:
            return properties.check_syslog_intake(
                serving.syslog_port, serving.store, SYSLOG_APP, chunks
            )

        yield check


TARGETS = [
    Target(
        "logplex",
        "parse_logplex on mutated corpus bodies: lines, or a FramingError naming frame and offset",
        strategies.logplex_bodies(),
        _plain(properties.check_parse_logplex),
    ),
    Target(
        "well-framed",
        "true octet counts around any message content: every frame parses, both decoders agree",
        strategies.well_framed(),
        _plain(properties.check_well_framed),
    ),
    Target(
        "decoder",
        "FrameDecoder (both framings) fed in random chunks decodes as if fed whole",
        strategies.decoder_streams(),
        _plain(lambda stream: properties.check_decoder(*stream)),
    ),
    Target(
        "import-syslog",
        "herolog import of syslog lines: the same however read, and resumable at its offsets",
        strategies.import_syslog_inputs(),
        _plain(properties.check_import_syslog),
    ),
    Target(
        "syslog",
        "parse_syslog on any bytes: one line, never an exception",
        strategies.syslog_messages(),
        _plain(properties.check_parse_syslog),
    ),
    Target(
        "heroku-line",
        "parse_heroku_line: None, or exactly the parts the line was made of",
        strategies.heroku_lines(),
        _plain(properties.check_heroku_line),
    ),
    Target(
        "intake",
        "POSTs to a real serve: 204 with every line stored, or 400 storing nothing; never 5xx",
        strategies.intake_posts(),
        _intake,
    ),
    Target(
        "syslog-intake",
        "streams to a real serve's syslog port: it stores what FrameDecoder decodes, no more",
        strategies.syslog_streams(),
        _syslog_intake,
    ),
]
BATCH_SECONDS = 10.0
"""How long one Hypothesis run should last: the time limit is checked between runs."""


@dataclass
class Failure:
    error: BaseException
    case: Any
    run_seed: int


def run_target(
    target: Target, examples: int | None, seconds: float | None
) -> tuple[int, Failure | None]:
    """Run ``target`` for ``examples`` inputs or ``seconds``: (inputs tried, failure or None)."""
    tried = 0
    last: list[Any] = []

    def probe(case: Any) -> None:
        nonlocal tried
        tried += 1
        last[:] = [case]
        check(case)

    began = time.monotonic()
    batch = 100
    with target.check() as check:
        while True:
            if examples is not None:
                batch = min(batch, examples - tried)
            if batch <= 0:
                return tried, None
            run_seed = random.getrandbits(64)
            test = settings(
                max_examples=batch,
                deadline=None,
                database=None,
                verbosity=Verbosity.quiet,
                report_multiple_bugs=False,
                suppress_health_check=list(HealthCheck),
            )(given(target.strategy)(probe))
            batch_began, tried_before = time.monotonic(), tried
            try:
                seed(run_seed)(test)()
            except Exception as error:
                # Hypothesis runs the shrunk failing input last.
                return tried, Failure(error, last[0] if last else None, run_seed)
            now = time.monotonic()
            if tried == tried_before:  # nothing left to generate (cannot happen, but never spin)
                return tried, None
            if seconds is not None:
                left = seconds - (now - began)
                if left <= 0:
                    return tried, None
                per_input = (now - batch_began) / max(1, tried - tried_before)
                batch = max(20, int(min(BATCH_SECONDS, left) / per_input))
            else:
                batch = max(batch, 5000)


def report_failure(target: Target, failure: Failure, tried: int) -> None:
    error = failure.error
    if hasattr(error, "__notes__"):
        error.__notes__ = []  # Hypothesis's own report repeats the (possibly huge) input
    shown = repr(failure.case)
    saved = Path(tempfile.gettempdir()) / f"herolog-fuzz-{target.name}-{failure.run_seed}.repr"
    saved.write_text(shown + "\n")
    out = sys.stdout
    print(f"\nFAILED {target.name} after {tried:,} inputs: {target.what}", file=out)
    print("".join(traceback.format_exception(error)).rstrip(), file=out)
    if len(shown) > 10_000:
        shown = shown[:2000] + f"... ({len(shown):,} characters)"
    print(f"failing input: {shown}", file=out)
    print(f"saved to {saved}; run it again with:", file=out)
    print(f"  python -m fuzz --target {target.name} --replay {saved}", file=out, flush=True)


def replay(target: Target, path: Path) -> int:
    case = ast.literal_eval(path.read_text())
    with target.check() as check:
        check(case)
    print(f"{target.name}: the input in {path} passes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="run for this long in all (default 60)")
    budget.add_argument("--examples", type=int, help="inputs per target")
    names = [target.name for target in TARGETS]
    parser.add_argument(
        "--target", action="append", choices=names, help="only this target (repeatable)"
    )
    parser.add_argument("--replay", type=Path, help="check one saved failing input again")
    args = parser.parse_args(argv)
    chosen = [t for t in TARGETS if args.target is None or t.name in args.target]
    if args.replay is not None:
        if len(chosen) != 1:
            parser.error("--replay needs exactly one --target")
        return replay(chosen[0], args.replay)
    if args.examples is not None and args.examples < 1:
        parser.error("--examples must be at least 1")
    seconds = None if args.examples is not None else (args.seconds or 60.0) / len(chosen)
    total = 0
    began = time.monotonic()
    for target in chosen:
        started = time.monotonic()
        tried, failure = run_target(target, args.examples, seconds)
        total += tried
        if failure is not None:
            report_failure(target, failure, tried)
            return 1
        took = time.monotonic() - started
        print(
            f"{target.name:12} {tried:>10,} inputs in {took:6.1f} s  ok: {target.what}", flush=True
        )
    took = time.monotonic() - began
    print(f"{'total':12} {total:>10,} inputs in {took:6.1f} s, no failures", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
