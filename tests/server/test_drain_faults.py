"""Drains that fail the ways network peers do: hang, reset, answer 5xx, vanish for a while.

Whatever a drain does, the books balance: what herolog reports for it (the store, which
``herolog drain list`` and the API read) has every ingested line either delivered or
dropped, and every dropped line is told: by an L10 line in the app's history, or, for lines
still waiting when the server stops, in its shutdown report.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from herolog.parser import LogLine
from herolog.server import ServeConfig, Server, run_in_thread
from herolog.server.config import DrainTiming
from herolog.server.forwarder import DrainWorker, backoff_limit
from herolog.store import Delivery, SQLiteStore, StoredLine
from tests.helpers import invoke, line
from tests.server.conftest import Running, ServerFactory
from tests.server.sinks import (
    HANG,
    RESET,
    HTTPSink,
    SyslogSink,
    connections_to,
    wait_until,
)
from tests.server.test_forwarding import add_drain, numbered, post

QUICK = DrainTiming(timeout_s=0.5, backoff_base_s=0.02, backoff_cap_s=0.1, flush_s=1.0)
"""Every wait of the real drain timing, shortened: a minute of outage takes a second."""
L10 = re.compile(r"Error L10 \(output buffer overflow\): (\d+) messages dropped since \S+\.")


@pytest.fixture
def make_server(make_server: ServerFactory) -> ServerFactory:
    return lambda **options: make_server(**{"drain_timing": QUICK, **options})


def worker(running: Running, token: str) -> DrainWorker:
    return next(w for w in running.server.app.forwarder.workers.values() if w.drain.token == token)


def saved(running: Running, token: str) -> Delivery:
    """What ``herolog drain list`` shows: the state the server saved in the store."""
    store = SQLiteStore.open(running.server.config.store_path)
    try:
        return next(d.delivery for d in store.drains() if d.token == token)
    finally:
        store.close()


def settled(running: Running, token: str, timeout: float = 30.0) -> Delivery:
    """Wait until the drain has been handed every line stored so far, has nothing left to
    send, and its final state is saved."""
    drain = worker(running, token)
    newest = max((x.id for x in running.lines()), default=0)
    broadcaster = running.server.app.broadcaster

    def done() -> bool:
        handed = broadcaster.position >= newest
        idle = not drain.buffer and drain.pending is None and not drain.overflowed
        return handed and idle and saved(running, token) == drain.delivery

    wait_until(done, timeout, what="the drain to deliver everything and save its state")
    return saved(running, token)


def l10_counts(lines: Sequence[LogLine | StoredLine]) -> list[int]:
    return [int(m.group(1)) for x in lines if (m := L10.fullmatch(x.message))]


def history_l10(running: Running, app: str) -> list[int]:
    return l10_counts([x for x in running.lines(app) if x.hostname == "herolog"])


def app_messages(lines: Sequence[LogLine]) -> list[str]:
    return [x.message for x in lines if (x.source, x.dyno) != ("heroku", "logplex")]


def assert_in_order_once(got: list[str], sent: Sequence[LogLine]) -> None:
    """``got`` is some of ``sent``'s messages, each once, in the order they were sent."""
    index = {x.message: i for i, x in enumerate(sent)}
    positions = [index[m] for m in got]
    assert positions == sorted(set(positions)), "lines out of order or repeated"


def assert_books_balance(
    running: Running, app: str, token: str, sent: Sequence[LogLine], refused: int = 0
) -> Delivery:
    """Every line delivered or dropped, every drop in an L10 line but the ``refused`` ones
    (batches a drain refused for good, shown as its last error); the API agrees."""
    state = settled(running, token)
    assert state.delivered + state.dropped == len(sent), state
    assert state.retrying is False
    told = state.dropped - refused
    wait_until(lambda: sum(history_l10(running, app)) == told, what="the L10 lines")
    api = httpx.get(f"{running.url}/apps/{app}/log-drains").json()
    shown = next(d["delivery"] for d in api if d["token"] == token)
    assert (shown["delivered"], shown["dropped"]) == (state.delivered, state.dropped)
    return state


def send(running: Running, app: str, bodies: int, size: int, start: int = 0) -> list[LogLine]:
    sent = numbered(bodies * size, start=start)
    for first in range(0, len(sent), size):
        post(running, app, sent[first : first + size])
    return sent


def test_an_http_drain_that_hangs_resets_and_answers_5xx(make_server: ServerFactory) -> None:
    """One batch meets every failure in turn (a request that is never answered is timed
    out), and is retried with the same Logplex-Frame-Id until it is taken."""
    failures = [HANG, RESET, 500, HANG, 503, 429, RESET, 502, 500]
    sink = HTTPSink(statuses=list(failures))
    healthy = HTTPSink()
    try:
        running = make_server(drain_buffer=30)
        token = add_drain(running, "demo", sink.url())
        good = add_drain(running, "demo", healthy.url())
        sent = send(running, "demo", 1, 5)
        wait_until(lambda: sink.arrived >= 2, what="the failures to start")  # so: retrying
        sent += send(running, "demo", 1, 100, start=5)
        state = assert_books_balance(running, "demo", token, sent)
        assert state.dropped > 0
        got = sink.delivered_lines()
        assert len(app_messages(got)) == state.delivered
        assert_in_order_once(app_messages(got), sent)
        assert sum(l10_counts(got)) == state.dropped
        failed = sink.requests[: len(failures)]
        assert [r.status for r in failed] == failures
        assert sink.requests[len(failures)].status == 204
        assert len({r.headers["Logplex-Frame-Id"] for r in sink.requests[: len(failures) + 1]}) == 1
        # The healthy drain of the same app lost nothing to its neighbour's troubles.
        healthy_state = settled(running, good)
        assert (healthy_state.delivered, healthy_state.dropped) == (len(sent), 0)
        assert app_messages(healthy.delivered_lines()) == [x.message for x in sent]
    finally:
        sink.close()
        healthy.close()


def test_overflow_in_several_stretches_gives_one_l10_per_stretch(
    make_server: ServerFactory,
) -> None:
    sink = HTTPSink(then=503)
    try:
        running = make_server(drain_buffer=10)
        token = add_drain(running, "demo", sink.url())
        sent: list[LogLine] = []
        for _ in range(2):
            sink.then = 503
            # Counted from here: the last stretch may have failed more than twice.
            failures = sum(r.status == 503 for r in sink.requests) + 2
            sent += send(running, "demo", 1, 5, start=len(sent))
            wait_until(
                lambda n=failures: (  # type: ignore[misc]
                    worker(running, token).retrying
                    and sum(r.status == 503 for r in sink.requests) >= n
                ),
                what="failing attempts",
            )
            sent += send(running, "demo", 5, 10, start=len(sent))
            sink.then = 204
            drain = worker(running, token)
            wait_until(lambda d=drain: not d.buffer and d.pending is None)  # type: ignore[misc]
        state = assert_books_balance(running, "demo", token, sent)
        assert len(history_l10(running, "demo")) == 2
        assert l10_counts(sink.delivered_lines()) == history_l10(running, "demo")
        assert state.dropped == 2 * (5 * 10 - 10)  # each stretch: all but the buffer's 10
    finally:
        sink.close()


def test_a_drain_gone_for_a_long_while_comes_back_within_the_backoff_cap(
    make_server: ServerFactory,
) -> None:
    """The port refuses connections for many backoff rounds (minutes, at real timing),
    lines pile up past the buffer, then the drain is back: delivery resumes within about
    one capped wait, and the books balance."""
    sink = HTTPSink()
    try:
        running = make_server(drain_buffer=50, drain_timing=replace(QUICK, backoff_cap_s=0.05))
        token = add_drain(running, "demo", sink.url())
        sent = send(running, "demo", 1, 10)
        wait_until(lambda: len(sink.delivered_lines()) == 10, what="delivery before the outage")
        sink.down()
        drain = worker(running, token)
        sent += send(running, "demo", 1, 10, start=10)
        wait_until(lambda: drain.pending is not None and drain.pending.attempts >= 30)
        most = 0
        for _ in range(10):  # while it is down, memory is the buffer and one batch
            sent += send(running, "demo", 1, 40, start=len(sent))
            most = max(most, len(drain.buffer))
        assert most <= 50
        assert drain.delivery.retrying is True
        assert drain.last_error is not None
        assert "onnect" in drain.last_error  # All connection attempts failed / refused
        sink.up()
        back = time.monotonic()
        wait_until(lambda: len(sink.delivered_lines()) > 10, what="delivery after the outage")
        assert time.monotonic() - back < 10  # the cap is 0.05 s: it did not back off for long
        state = assert_books_balance(running, "demo", token, sent)
        assert state.dropped > 0
        assert_in_order_once(app_messages(sink.delivered_lines()), sent)
        assert len(app_messages(sink.delivered_lines())) == state.delivered
    finally:
        sink.close()


def test_backoff_stays_capped_however_long_a_drain_fails() -> None:
    real = DrainTiming()
    assert backoff_limit(1, real) == pytest.approx(0.05)
    waits = [backoff_limit(n, real) for n in range(1, 100_000, 7)]
    assert waits == sorted(waits)
    assert max(waits) == real.backoff_cap_s == 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_syslog_drain_that_is_down_then_comes_back(make_server: ServerFactory) -> None:
    port = free_port()
    running = make_server(drain_buffer=25)
    token = add_drain(running, "demo", f"syslog://127.0.0.1:{port}")
    sent = send(running, "demo", 8, 10)
    drain = worker(running, token)
    wait_until(lambda: drain.pending is not None and drain.pending.attempts >= 10)
    assert "cannot connect to 127.0.0.1" in (drain.last_error or "")
    listener = SyslogSink(port=port)
    try:
        state = assert_books_balance(running, "demo", token, sent)
        assert state.dropped > 0
        got = listener.lines()
        assert len(app_messages(got)) == state.delivered
        assert_in_order_once(app_messages(got), sent)
        assert sum(l10_counts(got)) == state.dropped
    finally:
        listener.close()


def test_a_syslog_receiver_that_resets_connections(make_server: ServerFactory) -> None:
    """Syslog has no acknowledgements: what a receiver loses when it crashes was handed to
    TCP and counts as delivered (as with Logplex). The books still balance, nothing arrives
    twice or out of order, and delivery carries on on a new connection."""
    listener = SyslogSink(resets=3)
    try:
        running = make_server(drain_buffer=1000)
        token = add_drain(running, "demo", f"syslog://127.0.0.1:{listener.port}")
        sent: list[LogLine] = []
        for _ in range(10):
            sent += send(running, "demo", 1, 10, start=len(sent))
            time.sleep(0.05)
        wait_until(lambda: listener.connections > 3, what="a connection that is kept")
        sent += send(running, "demo", 1, 10, start=len(sent))
        state = assert_books_balance(running, "demo", token, sent)
        assert state.dropped == 0
        wait_until(lambda: app_messages(listener.lines())[-10:] == [x.message for x in sent[-10:]])
        got = app_messages(listener.lines())
        assert_in_order_once(got, sent)
        assert len(got) <= state.delivered
    finally:
        listener.close()


def test_a_syslog_receiver_that_stalls_costs_one_connection_at_a_time(
    make_server: ServerFactory,
) -> None:
    """A receiver that accepts and never reads: each write times out, and the connection
    given up on is closed, not kept waiting for its unsent bytes for ever."""
    stall = threading.Event()
    listener = SyslogSink(hang=stall)
    try:
        running = make_server(
            drain_buffer=100, history=100_000, drain_timing=replace(QUICK, timeout_s=0.2)
        )
        token = add_drain(running, "demo", f"syslog://127.0.0.1:{listener.port}")
        sent: list[LogLine] = []
        deadline = time.monotonic() + 60
        while listener.connections < 3:  # keep writing: each new connection stalls too
            assert time.monotonic() < deadline, "the drain did not give up on a stalled write"
            body = [line(f"line {len(sent) + i} {'x' * 2000}") for i in range(500)]
            post(running, "demo", body)
            sent += body
        drain = worker(running, token)
        assert drain.last_error == "connection lost: timed out"
        assert connections_to(listener.port) <= 2
        stall.set()
        state = assert_books_balance(running, "demo", token, sent)
        assert state.dropped > 0
        wait_until(lambda: connections_to(listener.port) <= 1, what="one connection left")
    finally:
        stall.set()
        listener.close()


def test_lines_still_waiting_at_shutdown_are_reported_with_the_overflow(
    herolog_home: Path,
) -> None:
    """A drain that is down when serve stops: its L10 never had a next batch to open, so
    the shutdown report counts those lines too: every dropped line is told somewhere. The
    report names the drain with its secrets masked."""
    dead = HTTPSink(then=503, reply=b"no, SEKRET-PW\n")
    try:
        config = ServeConfig(store_path=herolog_home / "logs.db", port=0)
        log = io.StringIO()
        server = Server(replace(config, drain_timing=QUICK, drain_buffer=10), log=log)
        stop = run_in_thread(server)
        running = Running(server, log)
        token = add_drain(running, "demo", dead.url("/in", "u:SEKRET-PW", "token=T0KEN"))
        sent = send(running, "demo", 1, 5)
        wait_until(lambda: dead.arrived >= 2, what="failing attempts")
        sent += send(running, "demo", 10, 10, start=5)
        stop()
        state = saved(running, token)
        assert (state.delivered, state.dropped) == (0, len(sent))
        report = [x for x in log.getvalue().splitlines() if "not delivered" in x]
        assert len(report) == 1
        assert f"(http://u:***@127.0.0.1:{dead.port}/in?token=***)" in report[0]
        assert report[0].endswith("(last error: 503 Service Unavailable: no, ***)")
        assert "SEKRET" not in log.getvalue()
        assert "T0KEN" not in log.getvalue()
        m = re.search(r": ([\d,]+) lines not delivered", report[0])
        assert m, report
        assert int(m.group(1).replace(",", "")) + sum(history_l10(running, "demo")) == len(sent)
        code, out, _ = invoke("drain", "list", "-a", "demo")
        assert code == 0
        assert f"delivered 0, dropped {len(sent)}" in out
    finally:
        dead.close()


def test_a_drain_url_no_worker_can_use_spoils_nothing_else(
    make_server: ServerFactory, herolog_home: Path
) -> None:
    """A URL written into the store past the checks (by hand, or by another version): the
    server still starts, the other drains work, and this one says what is wrong."""
    sink = HTTPSink()
    try:
        store = SQLiteStore.open(herolog_home / "logs.db")
        try:
            bad = store.add_drain("demo", "syslog://logs.example:99999").token
            good = store.add_drain("demo", sink.url()).token
        finally:
            store.close()
        running = make_server()
        sent = send(running, "demo", 2, 5)
        wait_until(lambda: len(sink.delivered_lines()) == 10, what="the good drain")
        state = assert_books_balance(running, "demo", bad, sent, refused=10)
        assert state.delivered == 0
        assert state.last_error == "the drain URL cannot be used: Port out of range 0-65535"
        assert settled(running, good).delivered == 10
    finally:
        sink.close()
