"""Deterministic Heroku-shaped log traffic for benchmarks: a third router lines, ~150 bytes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from herolog.parser import frame

_PATHS = ["/", "/orders", "/orders/17", "/api/v1/items", "/login", "/health", "/cart/checkout"]
_METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
_STATUSES = [200, 200, 200, 200, 201, 204, 301, 304, 404, 500, 503]
_APP_MESSAGES = [
    "Completed 200 OK in {ms}ms (Views: {v}ms | ActiveRecord: {ar}ms)",
    'Started GET "/orders/{n}" for 198.51.100.{ip} at 2024-03-05 09:14:07 +0000',
    "worker {n} processed job id={n}{ip} queue=default in {ms}ms",
    "[INFO] cache miss for key user:{n}:profile, fetching from primary db",
    "SELECT orders.* FROM orders WHERE orders.user_id = {n} LIMIT {v}",
]


def syslog_messages(count: int, seed: int = 42) -> list[bytes]:
    """``count`` syslog messages in Logplex's HTTPS form, each ending in a newline."""
    rng = random.Random(seed)
    start = datetime(2024, 3, 5, 9, 14, 7, tzinfo=UTC)
    out = []
    for i in range(count):
        moment = start + timedelta(microseconds=i * 937 + rng.randrange(900))
        ts = moment.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        if i % 3 == 0:
            message = (
                f'at=info method={rng.choice(_METHODS)} path="{rng.choice(_PATHS)}" '
                f'host=shop.example.com fwd="198.51.100.{rng.randrange(256)}" '
                f"dyno=web.{rng.randrange(1, 5)} connect={rng.randrange(3)}ms "
                f"service={rng.randrange(400)}ms status={rng.choice(_STATUSES)} "
                f"bytes={rng.randrange(9999)}"
            )
            out.append(f"<158>1 {ts} host heroku router - {message}\n".encode())
        else:
            message = rng.choice(_APP_MESSAGES).format(
                ms=rng.randrange(900),
                v=rng.randrange(90),
                ar=rng.randrange(90),
                n=rng.randrange(10000),
                ip=rng.randrange(256),
            )
            dyno = f"web.{rng.randrange(1, 5)}" if i % 5 else f"worker.{rng.randrange(1, 3)}"
            out.append(f"<190>1 {ts} host app {dyno} - {message}\n".encode())
    return out


def bodies(frames: int, per_body: int, seed: int = 42) -> list[bytes]:
    """Logplex POST bodies of ``per_body`` frames each."""
    messages = syslog_messages(frames, seed)
    return [frame(messages[i : i + per_body]) for i in range(0, len(messages), per_body)]
