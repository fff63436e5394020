"""Fuzzed bodies through the real intake: uvicorn on a free port, the writer process, SQLite.

``python -m fuzz --target intake`` runs the same property for longer.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings

from fuzz import properties, strategies
from herolog.store import SQLiteStore
from tests import web
from tests.server.conftest import ServerFactory

MESSAGE = b"<190>1 2024-03-05T09:14:07.418233+00:00 host app web.1 - "


@pytest.fixture
def intake(make_server: ServerFactory) -> Iterator[tuple[httpx.Client, SQLiteStore]]:
    running = make_server()
    store = SQLiteStore.open(running.server.config.store_path, create=False)
    try:
        with web.Client(base_url=running.url, timeout=60) as client:
            yield client, store
    finally:
        store.close()


def test_fuzzed_bodies_are_stored_whole_or_refused_with_400_never_5xx(
    intake: tuple[httpx.Client, SQLiteStore],
) -> None:
    client, store = intake
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategies.intake_posts())
    @example((b"999999999999 " + MESSAGE, False, 1))
    @example((b"1000000000000 " + MESSAGE, True, 1))
    @example((b"%d %s" % (65600, MESSAGE + b"x" * (65600 - len(MESSAGE))), True, 3))
    @example((b"5 \x00\xff\x00\xfe\n", False, 2))
    @example((b"12 " + MESSAGE[:5] + b"\r\n", False, 1))
    def post(case: tuple[bytes, bool, int]) -> None:
        body, gzipped, pieces = case
        statuses[properties.check_intake(client, store, body, gzipped=gzipped, pieces=pieces)] += 1

    post()
    # Both answers were exercised, and nothing the fuzzer sent got a 5xx or broke the server.
    assert statuses[204] > 0
    assert statuses[400] > 0
    answered = client.get("/stats").json()["responses"]
    assert not [code for code in answered if int(code) >= 500], answered
    good = gzip.compress(b"%d %sstill serving\n" % (len(MESSAGE) + 14, MESSAGE))
    response = client.post(
        f"/apps/{properties.INTAKE_APP}/logs",
        content=good,
        headers={"Content-Type": "application/logplex-1", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 204


def test_fuzzed_syslog_streams_store_what_the_decoder_decodes(make_server: ServerFactory) -> None:
    running = make_server(syslog_port=0, syslog_app="fuzz-syslog")
    assert running.syslog_port is not None
    port = running.syslog_port
    store = SQLiteStore.open(running.server.config.store_path, create=False)
    stored: list[int] = []

    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategies.syslog_streams())
    @example([b"<190>1 - h app web.1 - a\n12 <190>1 - h ", b"a b - x\n<190>1 - h a b - y"])
    @example([b"99999", b"9999999 <190>1"])  # a frame past the limit: refused, not buffered
    @example([b"5 <190>1 - h a b - ", b"\n"])
    @example([b"<190>1 - h a b - ok\n<190>1 - h a b - " + b"x" * 70_000 + b"\n"])  # > 65 KiB
    def send(chunks: list[bytes]) -> None:
        stored.append(properties.check_syslog_intake(port, store, "fuzz-syslog", chunks))

    try:
        send()
        assert sum(stored) > 0
        # Garbage on one connection never stops the listener: a clean stream still gets in.
        clean = [b"<190>1 - h a b - ok\n"]
        assert properties.check_syslog_intake(port, store, "fuzz-syslog", clean) == 1
    finally:
        store.close()
