"""Events said on serve's log counted, at most once a minute: a client retrying in a loop
(over the syslog connection limit, sending TLS to the plain port, reconnecting to a log
session the store cannot read) must not flood it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TextIO

REPORTED_EVERY_S = 60.0


class Throttled:
    """Events said on serve's log at most once every REPORTED_EVERY_S: the first at once,
    those that come within the interval together once it is over, counted and told by the
    last of them."""

    def __init__(self, log: TextIO, say: Callable[[int, str, str], str]) -> None:
        self.log = log
        self.say = say
        """The line for (how many, the last one's subject (a peer, a session), the last
        one's reason)."""
        self._unreported = 0
        self._last = ("", "")
        self._report_at = 0.0
        self._scheduled = False

    def add(self, subject: str, why: str) -> None:
        self._unreported += 1
        self._last = (subject, why)
        now = time.monotonic()
        if now >= self._report_at:
            self._report()
        elif not self._scheduled:  # the ones held back are reported when it is time
            self._scheduled = True
            asyncio.get_running_loop().call_later(self._report_at - now, self._report)

    def flush(self) -> None:
        """Say now what is held back (serve is stopping)."""
        self._report()

    def _report(self) -> None:
        self._scheduled = False
        count, self._unreported = self._unreported, 0
        if not count:
            return
        self._report_at = time.monotonic() + REPORTED_EVERY_S
        print(self.say(count, *self._last), file=self.log, flush=True)
