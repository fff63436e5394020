"""Drains that fail the ways network peers do: hang, reset, answer 5xx, vanish for a while.

Whatever a drain does, the books balance: what herolog reports for it (the store, which
``herolog drain list`` and the API read) has every ingested line delivered, dropped, or
waiting for the next server (what a drain still held when serve stopped), and every dropped
line is told by an L10 line in the app's history.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import io
import json
import logging
import re
import resource
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from herolog.parser import LogLine
from herolog.server import ServeConfig, Server, forwarder, run_in_thread
from herolog.server.config import DrainTiming
from herolog.server.forwarder import (
    HANDOFF_LINES,
    DrainWorker,
    _Pending,
    backoff_limit,
    retry_after,
    stop_report,
)
from herolog.store import Delivery, Drain, SQLiteStore, StoredLine
from herolog.timestamps import logplex_seconds
from tests import web
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
from tests.server.test_faults import the_writer
from tests.server.test_forwarding import add_drain, numbered, post

QUICK = DrainTiming(timeout_s=0.5, backoff_base_s=0.02, backoff_cap_s=0.1, flush_s=0.5)
"""Every wait of the real drain timing, shortened: a minute of outage takes a second."""
L10 = re.compile(r"Error L10 \(output buffer overflow\): (\d+) messages dropped since \S+\.")


pytestmark = pytest.mark.usefixtures("quick_forwarder")


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
        # A drain still catching up looks idle while it reads its next lines from the store.
        idle = not drain.buffer and drain.pending is None and not drain.untold.count
        idle = idle and drain.live_after is not None and not drain.catching_up
        # The position saved may be behind, past lines that are not the drain's (another
        # drain's L10 lines in the app's history): a drain is saved again once it has
        # delivered or dropped lines, not each time its position moves.
        state, kept = drain.delivery, saved(running, token)
        return (
            handed
            and idle
            and kept == state._replace(through=kept.through, through_lines=kept.through_lines)
        )

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
    """Every line delivered or dropped, none waiting, every drop in an L10 line but the
    ``refused`` ones (batches a drain refused for good, shown as its last error); the API
    agrees."""
    state = settled(running, token)
    assert state.delivered + state.dropped == len(sent), state
    assert state.retrying is False
    told = state.dropped - refused
    wait_until(lambda: sum(history_l10(running, app)) == told, what="the L10 lines")
    api = web.get(f"{running.url}/apps/{app}/log-drains").json()
    shown = next(d["delivery"] for d in api if d["token"] == token)
    assert (shown["delivered"], shown["dropped"]) == (state.delivered, state.dropped)
    assert shown["waiting"] == 0
    return state


def send(running: Running, app: str, bodies: int, size: int, start: int = 0) -> list[LogLine]:
    sent = numbered(bodies * size, start=start)
    for first in range(0, len(sent), size):
        post(running, app, sent[first : first + size])
    return sent


@pytest.mark.slow
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


def test_an_http_drain_that_does_not_answer_is_told_of_with_its_host_and_the_wait(
    make_server: ServerFactory,
) -> None:
    """Not as a bare "timed out", which named neither the receiver nor how long it had."""
    sink = HTTPSink(then=HANG)
    try:
        running = make_server(drain_timing=replace(QUICK, timeout_s=0.3, flush_s=0.1))
        token = add_drain(running, "demo", sink.url())
        send(running, "demo", 1, 1)
        drain = worker(running, token)
        wait_until(lambda: drain.last_error, what="the drain to time out")
        assert drain.last_error == f"127.0.0.1:{sink.port} timed out (0.3 s)"
    finally:
        sink.close()


def test_an_http_drain_that_drops_connections_is_told_of_as_such(
    make_server: ServerFactory,
) -> None:
    """Not as httpx's bare exception name ("is failing: ReadError"), which says neither what
    happened nor to which host."""
    sink = HTTPSink(then=RESET)
    try:
        # still failing when the server stops, whose flush nothing here is about
        running = make_server(drain_timing=replace(QUICK, flush_s=0.1))
        token = add_drain(running, "demo", sink.url())
        send(running, "demo", 1, 3)
        wait_until(lambda: sink.arrived >= 2, what="the drain to reset connections")
        lost = f"connection to 127.0.0.1:{sink.port} lost: "
        assert str(worker(running, token).last_error).startswith(lost)
        assert f"is failing: {lost}" in running.log.getvalue()
    finally:
        sink.close()


def test_an_answer_cut_short_is_what_its_status_says(make_server: ServerFactory) -> None:
    """A drain that dies as it answers has answered with its status line: a 200 is delivered
    (sent again, the batch would reach the drain twice), a 400 refused (not sent again)."""
    sink = HTTPSink(statuses=[400], then=200, cut_short=True)
    try:
        running = make_server()
        token = add_drain(running, "demo", sink.url())
        sent = send(running, "demo", 1, 2)
        wait_until(lambda: sink.requests, what="the refused batch")
        sent += send(running, "demo", 1, 3, start=2)
        state = assert_books_balance(running, "demo", token, sent, refused=2)
        assert (state.delivered, state.dropped) == (3, 2)
        assert [r.status for r in sink.requests] == [400, 200]
        assert app_messages(sink.delivered_lines()) == [x.message for x in sent[2:]]
        assert state.last_error == "400 Bad Request: sink says no"
    finally:
        sink.close()


def test_overflow_in_several_stretches_gives_one_l10_per_stretch(
    make_server: ServerFactory,
) -> None:
    sink = HTTPSink(then=503)
    try:
        running = make_server(drain_buffer=10)
        token = add_drain(running, "demo", sink.url())
        broadcaster = running.server.app.broadcaster
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
            # Stored is not yet handed to the drain: lines it gets once delivering again are
            # not dropped.
            newest = running.lines("demo")[-1].id
            wait_until(
                lambda n=newest: broadcaster.position >= n,  # type: ignore[misc]
                what="the drain to be handed every line while it fails",
            )
            sink.then = 204
            # Seen by the sink, not read off the worker, whose buffer is empty and pending
            # None for a moment while it takes its next batch.
            last = sent[-1].message
            wait_until(
                lambda m=last: m in app_messages(sink.delivered_lines()),  # type: ignore[misc]
                what="the lines the buffer kept",
            )
        state = assert_books_balance(running, "demo", token, sent)
        assert len(history_l10(running, "demo")) == 2
        assert l10_counts(sink.delivered_lines()) == history_l10(running, "demo")
        assert state.dropped == 2 * (5 * 10 - 10)  # each stretch: all but the buffer's 10
    finally:
        sink.close()


@pytest.mark.slow
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
        assert drain.last_error.startswith(f"cannot connect to 127.0.0.1:{sink.port}: ")
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


@pytest.mark.slow
def test_a_drain_asking_to_retry_after_a_while_is_given_that_while(
    make_server: ServerFactory,
) -> None:
    """A 429 or 503 with Retry-After (seconds, or an HTTP date) is tried again no sooner,
    and no later than the timing's cap: a drain that asks for an hour would cost every line
    past the buffer."""
    asked = {
        "seconds": ("1", 0.9, 2.4),
        "an hour": ("3600", 2.4, 4.5),
        "a date": ("", 0.9, 2.4),  # set as the lines are sent
    }
    sinks = {
        what: HTTPSink(
            statuses=[429 if what != "a date" else 503], reply_headers={"Retry-After": value}
        )
        for what, (value, _, _) in asked.items()
    }
    try:
        running = make_server(drain_timing=replace(QUICK, retry_after_cap_s=2.5))
        for sink in sinks.values():
            add_drain(running, "demo", sink.url())
        in_2_s = email.utils.formatdate(time.time() + 2, usegmt=True)
        sinks["a date"].reply_headers["Retry-After"] = in_2_s
        send(running, "demo", 1, 3)
        for what, sink in sinks.items():
            wait_until(lambda s=sink: s.delivered(), what=f"delivery to the drain asking {what}")  # type: ignore[misc]
        for what, (_, least, most) in asked.items():
            refused, taken = sinks[what].requests
            assert least <= taken.at - refused.at <= most, what
    finally:
        for sink in sinks.values():
            sink.close()


def test_a_retry_after_that_is_neither_seconds_nor_a_date_asks_for_nothing() -> None:
    assert retry_after("120") == 120.0
    assert retry_after("9" * 5000) == float("inf")  # capped where it is waited for
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past
    for value in (None, "", "soon", "-1", "1.5", "Wed, 21 Oct 2015 07:28:00", "Mon, 32 Foo"):
        assert retry_after(value) is None, value


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


def test_a_syslog_drain_to_an_ipv6_address_names_it_in_brackets(
    make_server: ServerFactory,
) -> None:
    """As its URL writes it, and as an HTTP drain's errors do: ``::1:514`` reads as an
    address and no port."""
    port = free_port()
    # still failing when the server stops, whose flush nothing here is about
    running = make_server(drain_timing=replace(QUICK, flush_s=0.1))
    token = add_drain(running, "demo", f"syslog://[::1]:{port}")
    send(running, "demo", 1, 1)
    drain = worker(running, token)
    wait_until(lambda: drain.last_error, what="the drain to fail")
    assert str(drain.last_error).startswith(f"cannot connect to [::1]:{port}: ")


def test_an_http_drain_s_errors_name_the_port_its_url_leaves_out(
    make_server: ServerFactory,
) -> None:
    """``https://HOST/...`` connects to port 443 and ``http://HOST/...`` to 80: the error says
    which, as a syslog drain's does (``cannot connect to example.org`` left it to guess)."""
    with socket.socket() as probe:
        refused = probe.connect_ex(("127.0.0.1", 80)) != 0
    assert refused, "this test needs nothing listening on 127.0.0.1:80"
    running = make_server(drain_timing=replace(QUICK, flush_s=0.1))
    token = add_drain(running, "demo", "http://127.0.0.1/logs")
    send(running, "demo", 1, 1)
    drain = worker(running, token)
    wait_until(lambda: drain.last_error, what="the drain to fail")
    assert str(drain.last_error).startswith("cannot connect to 127.0.0.1:80: "), drain.last_error


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


def test_a_syslog_receiver_that_talks_back_and_closes_after_each_frame(
    make_server: ServerFactory,
) -> None:
    """A receiver that greets each connection (or answers a frame) and closes it once it has
    read: what it said must not keep herolog from seeing the close, or the next batch goes
    into the closed connection, lost, and counts as delivered."""
    listener = SyslogSink(greeting=b"hello\n", reads=1)
    try:
        running = make_server()
        token = add_drain(running, "demo", f"syslog://127.0.0.1:{listener.port}")
        sent = numbered(5)

        def closed_after(count: int) -> bool:
            got = len(app_messages(listener.lines()))
            return got == count and connections_to(listener.port) == 0

        for count, one in enumerate(sent, 1):
            post(running, "demo", [one])
            wait_until(
                functools.partial(closed_after, count),
                what=f"line {count} on a connection the receiver then closed",
            )
        state = assert_books_balance(running, "demo", token, sent)
        assert state.delivered == len(sent)
        assert app_messages(listener.lines()) == [x.message for x in sent]
        assert listener.connections == len(sent)
    finally:
        listener.close()


@pytest.mark.slow
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


def test_what_a_dead_drain_holds_at_shutdown_waits_for_the_next_server(
    herolog_home: Path,
) -> None:
    """A drain that is down when serve stops, its buffer overflowed behind the batch it
    retries: the store still holds every line from that batch on, so none counts as dropped
    (nor is told with L10); the report says how many wait, the next serve delivers them all
    once the drain is back, in order and once each, and the books balance throughout. The
    report names the drain with its secrets masked."""
    dead = HTTPSink(then=503, reply=b"no, SEKRET-PW\n")
    try:
        running, stop = small_buffers(herolog_home)
        log = running.log
        token = add_drain(running, "demo", dead.url("/in", "u:SEKRET-PW", "token=T0KEN"))
        sent = send(running, "demo", 1, 5)
        wait_until(lambda: dead.arrived >= 2, what="failing attempts")
        sent += send(running, "demo", 10, 10, start=5)
        wait_until(lambda: worker(running, token).dropped > 0, what="the buffer to overflow")
        stop()
        state = saved(running, token)
        assert (state.delivered, state.dropped, state.dropped_ahead) == (0, 0, 0)
        report = [x for x in log.getvalue().splitlines() if "not delivered" in x]
        assert len(report) == 1
        assert f"(http://u:***@127.0.0.1:{dead.port}/in?token=***)" in report[0]
        assert f": {len(sent)} lines not delivered yet: the next herolog serve" in report[0]
        assert "dropped" not in report[0]
        assert report[0].endswith("(last error: 503 Service Unavailable: no, ***)")
        assert "SEKRET" not in log.getvalue()
        assert "T0KEN" not in log.getvalue()
        assert history_l10(running, "demo") == []
        code, out, _ = invoke("drain", "list", "-a", "demo")
        assert code == 0
        assert f"delivered 0, dropped 0, waiting {len(sent)}, not forwarded: no herolog" in out
        code, out, _ = invoke("drain", "list", "-a", "demo", "--json")
        assert json.loads(out)[0]["delivery"]["forwarded"] is False

        again = resumed(herolog_home, dead, token, sent)
        code, out, _ = invoke("drain", "list", "-a", "demo", "--json")
        assert code == 0
        (shown,) = json.loads(out)
        assert (shown["delivery"]["delivered"], shown["delivery"]["waiting"]) == (len(sent), 0)
        assert history_l10(again, "demo") == []
    finally:
        dead.close()


def test_an_l10_line_the_stop_kept_from_a_drain_opens_the_next_serve_s_first_batch(
    herolog_home: Path,
) -> None:
    """The drain takes the batch it was retrying, then refuses the next one, which opens
    with the L10 line telling of what its buffer dropped meanwhile, until serve stops. The
    next serve's first batch opens with that L10 line: the drain hears of every drop once,
    and the app's history (told when the batch was taken) once too."""
    drain = HTTPSink(then=503)
    try:
        running, stop = small_buffers(herolog_home)
        token = add_drain(running, "demo", drain.url())
        sent = send(running, "demo", 1, 5)
        wait_until(lambda: drain.arrived >= 2, what="failing attempts")
        sent += send(running, "demo", 10, 10, start=5)  # the buffer keeps the last 10
        wait_until(lambda: worker(running, token).dropped == 90, what="the overflow")
        with drain.lock:
            drain.statuses = [204]  # the batch retried goes through; the next never does
        wait_until(
            lambda: any(l10_counts(r.lines) for r in list(drain.requests)), what="the L10 batch"
        )
        stop()
        assert history_l10(running, "demo") == [90]
        state = saved(running, token)
        assert (state.delivered, state.dropped, state.untold) == (5, 90, 90)

        drain.then = 204
        again, stop_again = small_buffers(herolog_home)
        try:
            wait_until(lambda: len(drain.delivered_lines()) >= 5 + 1 + 10, what="the rest")
            state = settled(again, token)
        finally:
            stop_again()
        got = drain.delivered_lines()
        assert l10_counts(got) == [90]
        assert app_messages(got) == [x.message for x in sent[:5] + sent[-10:]]
        assert (state.delivered, state.dropped, state.untold) == (15, 90, 0)
        assert history_l10(again, "demo") == [90]
    finally:
        drain.close()


def test_the_l10_line_of_a_refused_batch_goes_again_without_waiting_for_a_line(
    herolog_home: Path,
) -> None:
    """The drain refuses (400) the batch that opens with the L10 line, and the app says
    nothing more: the L10 line goes again alone, not with the app's next line, whenever
    that comes."""
    drain = HTTPSink(then=503)
    try:
        running, stop = small_buffers(herolog_home)
        try:
            token = add_drain(running, "demo", drain.url())
            sent = send(running, "demo", 1, 5)
            wait_until(lambda: drain.arrived >= 2, what="failing attempts")
            send(running, "demo", 10, 10, start=5)  # the buffer keeps the last 10
            wait_until(lambda: worker(running, token).dropped == 90, what="the overflow")
            with drain.lock:
                drain.statuses = [204, 400]  # the batch retried, then the L10 and the 10
                drain.then = 204
            wait_until(lambda: l10_counts(drain.delivered_lines()), what="the L10 line again")
        finally:
            stop()
        assert [r.status for r in drain.requests][-3:] == [204, 400, 204]
        got = drain.delivered_lines()
        assert l10_counts(got) == [90]
        assert app_messages(got) == [x.message for x in sent]
    finally:
        drain.close()


def test_drain_list_json_says_whether_a_serve_forwards_the_store_s_drains(
    herolog_home: Path,
) -> None:
    """``forwarded``, as the text's "not forwarded: no herolog serve runs on this store":
    true while a serve holds the store's forwarding, false once it has stopped."""

    def forwarded() -> bool:
        code, out, _ = invoke("drain", "list", "-a", "demo", "--json")
        assert code == 0
        return bool(json.loads(out)[0]["delivery"]["forwarded"])

    assert invoke("drain", "add", "https://logs.example.com/x", "-a", "demo")[0] == 0
    assert forwarded() is False
    _, stop = small_buffers(herolog_home)
    try:
        wait_until(forwarded, what="the serve's forwarding, in drain list --json")
    finally:
        stop()
    assert forwarded() is False


def resumed(home: Path, drain: HTTPSink, token: str, sent: Sequence[LogLine]) -> Running:
    """The drain back up and a new server on the store: it delivers every line of ``sent``,
    in order and once each, all of it waiting in the store since the last server stopped.
    The server, stopped again."""
    drain.then = 204
    again, stop = small_buffers(home)
    try:
        wait_until(lambda: len(drain.delivered_lines()) >= len(sent), what="the waiting lines")
        state = settled(again, token)
    finally:
        stop()
    assert [x.message for x in drain.delivered_lines()] == [x.message for x in sent]
    assert (state.delivered, state.dropped) == (len(sent), 0)
    return again


def small_buffers(home: Path) -> tuple[Running, Callable[[], None]]:
    """A server whose drains hold 10 lines and give up quickly, and what stops it."""
    config = ServeConfig(store_path=home / "logs.db", port=0)
    log = io.StringIO()
    server = Server(replace(config, drain_timing=QUICK, drain_buffer=10), log=log)
    stop = run_in_thread(server)
    return Running(server, log), stop


def stop_soon(stop: Callable[[], None]) -> None:
    """Stop the server, no slower than its drains' flush allows."""
    started = time.monotonic()
    stop()
    took = time.monotonic() - started
    assert took < QUICK.flush_s + 5, f"stopping took {took:.1f} s"


@pytest.mark.slow
def test_no_other_server_takes_over_forwarding_while_a_stopping_one_flushes(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forwarding lease is renewed as the stop begins, for longer than the flush: no
    renewal runs during it, and a lease that ran out meanwhile would let a second server
    deliver the lines this one is still trying to (twice). Once stopped, it is released."""
    monkeypatch.setattr(forwarder, "LEASE_S", 0.25)

    def another_server_claims() -> str | None:
        store = SQLiteStore.open(herolog_home / "logs.db")
        try:
            return store.lease("forwarding", "another server", 10)
        finally:
            store.close()

    dead = HTTPSink(then=503)
    config = ServeConfig(store_path=herolog_home / "logs.db", port=0)
    server = Server(replace(config, drain_timing=replace(QUICK, flush_s=2.0)), log=io.StringIO())
    stopper = threading.Thread(target=run_in_thread(server))
    try:
        running = Running(server, io.StringIO())
        add_drain(running, "demo", dead.url())
        send(running, "demo", 1, 5)
        wait_until(lambda: dead.arrived >= 2, what="failing attempts")
        renewals = server.app.forwarder._task
        assert renewals is not None
        stopper.start()
        wait_until(renewals.done, what="the stop to end the lease's renewals")
        time.sleep(0.75)  # three leases' worth into the flush
        assert stopper.is_alive(), "the flush ended early"
        assert another_server_claims() == server.app.forwarder.owner
    finally:
        if stopper.ident is None:  # failed before the stop began
            stopper.start()
        stopper.join()
        dead.close()
    assert another_server_claims() is None


def test_a_stopping_server_that_lost_the_lease_leaves_the_flush_to_the_holder(
    herolog_home: Path,
) -> None:
    """Another server holds the forwarding lease when this one stops (it was stalled past
    its lease, say): this one does not flush (that would deliver what the holder delivers),
    saves nothing over the holder's positions, and leaves the lease alone."""
    path = herolog_home / "logs.db"
    dead = HTTPSink(then=503)
    config = ServeConfig(store_path=path, port=0)
    server = Server(replace(config, drain_timing=replace(QUICK, flush_s=3.0)), log=io.StringIO())
    stop = run_in_thread(server)
    try:
        running = Running(server, io.StringIO())
        token = add_drain(running, "demo", dead.url())
        send(running, "demo", 1, 5)
        wait_until(lambda: dead.arrived >= 2, what="failing attempts")
        before = saved(running, token)
        store = SQLiteStore.open(path)
        try:
            store.release_lease("forwarding", server.app.forwarder.owner)
            assert store.lease("forwarding", "another server", 60) is None
        finally:
            store.close()
    finally:
        stop()
        dead.close()
    # It found the lease taken as it stopped, and stopped its drains as a second Ctrl-C
    # does; or a renewal just before found it, and it stood down: either way, no flush.
    forwarder = server.app.forwarder
    hurried = [w.hurried for w in forwarder.workers.values()]
    assert all(hurried) if hurried else forwarder.active is False, "the drains flushed"
    store = SQLiteStore.open(path)
    try:
        assert store.lease("forwarding", "another server", 60) is None  # still its own
        assert next(d.delivery for d in store.drains() if d.token == token) == before
    finally:
        store.close()


def test_what_drains_could_not_deliver_at_shutdown_is_reported_and_waits(
    herolog_home: Path,
) -> None:
    """At shutdown, each drain left with lines it could not deliver says how many on serve's
    log, and they wait in the store: ``herolog drain list`` counts them, no L10 line claims
    them dropped, and delivered + dropped + waiting is every line of the app. A drain that
    delivered everything says nothing, and the shutdown is no slower for it."""
    dead = HTTPSink(then=503)
    healthy = HTTPSink()
    try:
        running, stop = small_buffers(herolog_home)
        log = running.log
        overflowing = add_drain(running, "demo", dead.url())
        fine = add_drain(running, "demo", healthy.url())
        # A syslog drain nobody listens on, given fewer lines than its buffer holds.
        refused = add_drain(running, "quiet", f"syslog://127.0.0.1:{free_port()}")
        sent = send(running, "demo", 1, 5)
        wait_until(lambda: dead.arrived >= 2, what="failing attempts")
        sent += send(running, "demo", 10, 10, start=5)
        quiet = send(running, "quiet", 1, 5)
        drain = worker(running, refused)
        wait_until(lambda: drain.pending is not None and drain.pending.attempts >= 2)
        wait_until(lambda: len(healthy.delivered_lines()) == len(sent), what="the healthy drain")
        stop_soon(stop)

        code, out, _ = invoke("drain", "list", "--json")
        assert code == 0, out
        books = {}
        for shown in json.loads(out):
            state = shown["delivery"]
            books[shown["token"]] = (state["delivered"], state["dropped"], state["waiting"])
        assert books == {
            overflowing: (0, 0, len(sent)),
            fine: (len(sent), 0, 0),
            refused: (0, 0, len(quiet)),
        }
        assert history_l10(running, "demo") == history_l10(running, "quiet") == []
        report = [x for x in log.getvalue().splitlines() if "not delivered" in x]
        assert len(report) == 2, report
        counts = {}
        for token in (overflowing, refused):
            (shown,) = [x for x in report if token in x]
            m = re.search(r": ([\d,]+) lines? not delivered yet", shown)
            assert m, shown
            counts[token] = int(m.group(1).replace(",", ""))
        assert counts == {overflowing: len(sent), refused: len(quiet)}
        assert l10_counts(healthy.delivered_lines()) == []
    finally:
        dead.close()
        healthy.close()


def stored_line(i: int) -> StoredLine:
    return StoredLine(i, "demo", "t", "t", "app", "web.1", f"m{i}", 14, "h", None, None, "t")


def quiet_worker(drain: Drain, told: list[str]) -> DrainWorker:
    """A worker of ``drain`` with a buffer of 10, no task of its own and no store: its
    batches are taken by hand, its history's L10 lines go to ``told``."""
    held = DrainWorker(drain, 10, lambda app, message: told.append(message))
    held.follow(drain.delivery.through)
    return held


def l10(message: str) -> int:
    m = L10.fullmatch(message)
    assert m is not None, message
    return int(m.group(1))


def test_drops_no_batch_holds_back_are_told_at_shutdown_and_to_the_drain_by_the_next_serve() -> (
    None
):
    """A burst larger than the buffer and its hand-off allowance, handed to a drain that has
    not taken a batch yet: the oldest lines are dropped behind the position (no server
    meets them again). Stopping then tells the app's history of them with L10, reports them
    apart from the lines left waiting, and keeps them untold for the drain, whose first
    batch from the next server opens with that L10 line (the history is not told twice)."""
    drain = Drain("id", "d.token", "demo", "http://127.0.0.1:9/", "now", "now")
    told: list[str] = []

    async def stopped() -> tuple[tuple[int, int], Delivery]:
        held = quiet_worker(drain, told)
        held.push([stored_line(i) for i in range(1, 10 + HANDOFF_LINES + 90 + 1)])
        return await held.stop(0, tell=True), held.delivery

    (dropped, left), state = asyncio.run(stopped())
    assert (dropped, left) == (90, 10 + HANDOFF_LINES)
    assert [l10(m) for m in told] == [90]
    assert (state.dropped, state.through, state.dropped_ahead, state.untold) == (90, 90, 0, 90)
    assert state.untold_since is not None
    assert stop_report(dropped, left) == (
        f"{10 + HANDOFF_LINES:,} lines not delivered yet: the next herolog serve on this store"
        " sends them; 90 lines dropped as its buffer overflowed (told with L10)"
    )
    again = quiet_worker(drain._replace(delivery=state), told)
    again.push([stored_line(i) for i in range(91, 96)])
    batch = again._next_batch()
    assert l10(batch.lines[0].message) == 90
    assert batch.lines[0].message.endswith(f"since {logplex_seconds(state.untold_since)}.")
    assert [x.id for x in batch.lines[1:]] == [91, 92, 93, 94, 95]
    assert [l10(m) for m in told] == [90]
    assert again.delivery.untold == 90  # until that batch is delivered


def test_an_l10_line_in_a_batch_cut_off_by_the_stop_is_kept_for_the_drain() -> None:
    """The stop cuts off a batch that opens with an L10 line: the drain may never have had
    it, so the drops it tells of are kept untold, and the next server's first batch tells
    of them again (at least once, as the lines are)."""
    drain = Drain("id", "d.token", "demo", "http://127.0.0.1:9/", "now", "now")
    told: list[str] = []

    async def stopped() -> tuple[_Pending, Delivery]:
        held = quiet_worker(drain, told)
        held.push([stored_line(i) for i in range(1, 10 + HANDOFF_LINES + 30 + 1)])  # 30 go
        cut_off = held._next_batch()  # opens with the L10 line, and never arrives
        await held.stop(0, tell=True)
        return cut_off, held.delivery

    cut_off, state = asyncio.run(stopped())
    assert l10(cut_off.lines[0].message) == 30
    assert [l10(m) for m in told] == [30]  # the history was told as the batch was taken
    assert state.untold == 30
    again = quiet_worker(drain._replace(delivery=state), told)
    assert l10(again._next_batch().lines[0].message) == 30
    assert [l10(m) for m in told] == [30]


def test_drops_behind_a_batch_in_flight_are_not_saved_as_untold() -> None:
    """The buffer limited as a batch is taken drops lines past it: after a crash the next
    server reads those lines back and delivers them, so the state saved meanwhile must not
    have it tell the drain of them with L10 as well."""
    drain = Drain("id", "d.token", "demo", "http://127.0.0.1:9/", "now", "now")
    held = quiet_worker(drain, [])
    held.push([stored_line(i) for i in range(1, 10 + HANDOFF_LINES + 1)])
    batch = held._next_batch()
    state = held.delivery
    assert held.dropped > 0
    assert (state.dropped_ahead, state.through) == (held.dropped, batch.lines[0].id - 1)
    assert (state.untold, state.untold_since) == (0, None)


def test_the_l10_line_of_a_batch_the_drain_refused_opens_the_next_batch() -> None:
    """A batch refused for good (a 4xx) is dropped with the L10 line that opened it: the
    next batch tells those drops again. An L10 line alone is not sent again."""
    drain = Drain("id", "d.token", "demo", "http://127.0.0.1:9/", "now", "now")
    held = quiet_worker(drain, [])
    held.push([stored_line(i) for i in range(1, 10 + HANDOFF_LINES + 30 + 1)])  # 30 go
    refused = held._next_batch()
    assert l10(refused.lines[0].message) == 30
    held._refused(refused)
    held.pending = None
    held.push([stored_line(5_000)])
    after = held._next_batch()
    # Every drop but the refused batch's own lines (its error tells of those): the 30, and
    # what the buffer dropped behind that batch.
    assert l10(after.lines[0].message) == held.dropped - len(refused.lines[1:]) > 30
    assert [x.id for x in after.lines[-1:]] == [5_000]
    held.pending = None
    alone = _Pending([refused.lines[0]], "f", told=refused.told)
    held._refused(alone)
    assert held.untold.count == 0


def test_a_full_disk_at_shutdown_neither_holds_up_the_shutdown_nor_costs_a_drain_lines(
    herolog_home: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The disk is full when serve stops, with a drain down: serve stops as quickly and as
    cleanly as ever, reports what the drain holds, and leaves it in the store, where the
    next server (the disk freed) delivers every line of it once the drain is back."""
    dead = HTTPSink(then=503)
    try:
        running, stop = small_buffers(herolog_home)
        log = running.log
        token = add_drain(running, "demo", dead.url())
        sent = send(running, "demo", 3, 10)
        wait_until(lambda: dead.arrived >= 2, what="failing attempts")
        # Every write of the store writer past its first byte now fails (EFBIG): a disk
        # that takes nothing more.
        resource.prlimit(
            the_writer(herolog_home / "logs.db"), resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY)
        )
        stop_soon(stop)
        state = saved(running, token)
        assert (state.delivered, state.dropped) == (0, 0)
        report = [x for x in log.getvalue().splitlines() if "not delivered" in x]
        assert len(report) == 1
        assert f": {len(sent)} lines not delivered yet" in report[0]
        # (The writer's own stderr is under its file-size limit too: not checked here.)
        assert "Traceback" not in capfd.readouterr().err + log.getvalue()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

        resumed(herolog_home, dead, token, sent)
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


def test_the_stop_report_counts_one_line_as_one() -> None:
    assert stop_report(0, 1) == (
        "1 line not delivered yet: the next herolog serve on this store sends it"
    )
    assert stop_report(1, 2) == (
        "2 lines not delivered yet: the next herolog serve on this store sends them;"
        " 1 line dropped as its buffer overflowed (told with L10)"
    )


def test_an_https_drain_whose_host_does_not_answer_its_connection_says_so(
    make_server: ServerFactory,
) -> None:
    """A drain host that is down or gone silent drops the connection's SYN, as a listener
    whose queue of connections is full does: that was told as a bare "timed out", the words
    of a drain that took the batch and did not answer, where a syslog drain says it cannot
    connect."""
    full = socket.create_server(("127.0.0.1", 0), backlog=0)
    queued = []
    try:
        port = full.getsockname()[1]
        # The listener is never accepted from: once its queue is full, its SYNs go unanswered.
        for _ in range(8):
            attempt = socket.socket()
            attempt.setblocking(False)
            queued.append(attempt)
            attempt.connect_ex(("127.0.0.1", port))
        running = make_server(drain_timing=replace(QUICK, timeout_s=0.5))
        token = add_drain(running, "demo", f"http://127.0.0.1:{port}/logs")
        post(running, "demo", [line("to a host that does not answer")])
        drain = worker(running, token)
        wait_until(lambda: drain.last_error is not None, what="the drain's first failure")
        assert drain.last_error == f"cannot connect to 127.0.0.1:{port}: timed out"
        assert drain.delivered == 0
    finally:
        for attempt in queued:
            attempt.close()
        full.close()


def drain_said(log: io.StringIO, token: str) -> list[str]:
    """What serve's log said of the drain ``token``, without its name."""
    return [x.split(") ", 1)[1] for x in log.getvalue().splitlines() if token in x]


def test_a_drain_that_fails_now_and_then_is_told_of_once_a_minute_not_once_a_batch(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that refuses a batch now and then (a 503 or 429 in ten, each delivered on
    its retry) had serve's log tell of every stretch of failures and every recovery: two
    lines a batch, which at a few batches a second is thousands an hour in the journal. The
    first stretch is told, and its end; those that come within the minute after are counted,
    and told together when it is over, or, here, as serve stops."""
    monkeypatch.setattr(forwarder, "FAILING_SAID_EVERY_S", 3600.0)
    flaky = HTTPSink(statuses=[503, 204] * 10)
    try:
        config = ServeConfig(store_path=herolog_home / "logs.db", port=0, drain_timing=QUICK)
        log = io.StringIO()
        server = Server(config, log=log)
        stop = run_in_thread(server)
        running = Running(server, log)
        token = add_drain(running, "demo", flaky.url())
        for n in range(10):
            post(running, "demo", numbered(1, start=n))
            wait_until(lambda n=n: len(flaky.delivered()) == n + 1, what=f"batch {n}")  # type: ignore[misc]
        assert [r.status for r in flaky.requests] == [503, 204] * 10
        assert drain_said(running.log, token) == [
            "is failing: 503 Service Unavailable: sink says no",
            "delivers again",
        ]
        stop_soon(stop)
        assert drain_said(running.log, token)[2:] == [
            "failed again and delivered again 9 times in the last minute"
            " (last error: 503 Service Unavailable: sink says no)"
        ]
    finally:
        flaky.close()


def test_a_drain_failing_again_within_the_minute_is_told_of_when_it_is_over(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stretch of failures that began within the minute after the last told, and still
    goes on when it is over, is told then, and so is its end."""
    monkeypatch.setattr(forwarder, "FAILING_SAID_EVERY_S", 0.5)
    flaky = HTTPSink(statuses=[503, 204, 429, 204], then=500)
    try:
        running = make_server()
        token = add_drain(running, "demo", flaky.url())
        for n in range(3):
            post(running, "demo", numbered(1, start=n))
            wait_until(lambda n=n: len(flaky.delivered()) >= min(n + 1, 2), what=f"batch {n}")  # type: ignore[misc]
        wait_until(lambda: len(drain_said(running.log, token)) == 3, what="the stretch told")
        flaky.then = 204
        wait_until(lambda: len(drain_said(running.log, token)) == 4, what="its end told")
        assert drain_said(running.log, token) == [
            "is failing: 503 Service Unavailable: sink says no",
            "delivers again",
            "is failing again: 500 Internal Server Error: sink says no (after failing and"
            " delivering again once in the last minute)",
            "delivers again",
        ]
    finally:
        flaky.close()


def test_an_http_drain_that_is_refused_says_so(make_server: ServerFactory) -> None:
    """httpx says "All connection attempts failed" of a drain whose port is closed, whose
    network is unreachable, or behind a firewall that rejects, alike: serve's log and
    ``drain list`` said only that, where a syslog drain's error says why, as nginx's and
    rsyslog's do."""
    port = free_port()
    running = make_server(drain_timing=replace(QUICK, flush_s=0.1))
    token = add_drain(running, "demo", f"http://127.0.0.1:{port}/logs")
    send(running, "demo", 1, 1)
    drain = worker(running, token)
    wait_until(lambda: drain.last_error, what="the drain to fail")
    refused = f"cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused"
    assert drain.last_error == refused
    wait_until(lambda: drain_said(running.log, token), what="serve to say so")
    assert drain_said(running.log, token) == [f"is failing: {refused}"]


@pytest.mark.slow
def test_a_stretch_counted_after_a_summary_gets_no_end_of_its_own(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A summary of stretches that are over leaves nothing to end: one more stretch, failed
    and delivered within the interval after it, was followed by 'delivers again' for a
    failure never told, before its own summary."""
    monkeypatch.setattr(forwarder, "FAILING_SAID_EVERY_S", 1.5)
    flaky = HTTPSink(statuses=[503, 204, 503, 204, 503, 204])
    try:
        running = make_server()
        token = add_drain(running, "demo", flaky.url())
        for n in range(2):
            post(running, "demo", numbered(1, start=n))
            wait_until(lambda n=n: len(flaky.delivered()) == n + 1, what=f"batch {n}")  # type: ignore[misc]
        wait_until(lambda: len(drain_said(running.log, token)) == 3, what="the summary")
        post(running, "demo", numbered(1, start=2))
        wait_until(lambda: len(flaky.delivered()) == 3, what="batch 2")
        wait_until(lambda: len(drain_said(running.log, token)) >= 4, what="its summary")
        summary = (
            "failed again and delivered again once in the last minute"
            " (last error: 503 Service Unavailable: sink says no)"
        )
        assert drain_said(running.log, token) == [
            "is failing: 503 Service Unavailable: sink says no",
            "delivers again",
            summary,
            summary,
        ]
    finally:
        flaky.close()
