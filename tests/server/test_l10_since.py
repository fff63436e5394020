"""The time an L10 line gives the drops it tells of."""

from __future__ import annotations

import asyncio

from herolog.server.forwarder import HANDOFF_LINES
from herolog.store import Delivery, Drain
from tests.server.test_drain_faults import quiet_worker, stored_line


def test_an_l10_line_a_stop_kept_from_the_drain_keeps_the_time_of_its_first_drop() -> None:
    """A stop cuts off a batch that opened with an L10 line, after more lines were dropped
    behind it (which the next server reads back): that server's first batch tells of the
    first drops again, since the time the cut-off line gave, not that of the later drops."""
    drain = Drain("id", "d.token", "demo", "http://127.0.0.1:9/", "now", "now")

    async def stopped() -> tuple[str, Delivery]:
        held = quiet_worker(drain, [])
        pushed = 10 + HANDOFF_LINES + 30
        held.push([stored_line(i) for i in range(1, pushed + 1)])  # 30 go
        cut_off = held._next_batch()  # opens with the L10 line, and never arrives
        dropped = held.dropped
        held.push([stored_line(i) for i in range(pushed + 1, pushed + 1 + pushed)])
        assert held.dropped > dropped  # more went, later
        await held.stop(0, tell=True)
        return cut_off.lines[0].message, held.delivery

    first, state = asyncio.run(stopped())
    prefix = "Error L10 (output buffer overflow): 30 messages dropped since "
    assert first.startswith(prefix), first
    since = first.removeprefix(prefix).removesuffix(".")
    again = quiet_worker(drain._replace(delivery=state), [])
    told = again._next_batch().lines[0].message
    assert told == f"{prefix}{since}."
