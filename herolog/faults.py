"""Faults that come and go (a full disk, no open file left), told on serve's log without
filling it: a fault that fails and passes by turns is said once a while, not each time."""

from __future__ import annotations

import threading
import time


class Fault:
    """One kind of fault: its start said at most once every ``every`` seconds, and its end
    only where its start was said. Safe to use from several threads."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.on = False
        """The fault is there now (since :meth:`began`, until :meth:`ended`)."""
        self._said = False
        self._quiet_until = 0.0
        self._lock = threading.Lock()

    def began(self) -> bool:
        """The fault is there: whether to say so (not if it was already, nor within
        ``every`` seconds of the last time it was said)."""
        with self._lock:
            if self.on:
                return False
            self.on = True
            now = time.monotonic()
            if now < self._quiet_until:
                return False
            self._said, self._quiet_until = True, now + self.every
            return True

    def ended(self) -> bool:
        """The fault has gone: whether to say so (only if its start was said)."""
        with self._lock:
            if not self.on:
                return False
            self.on = False
            said, self._said = self._said, False
            return said
