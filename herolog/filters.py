"""Which lines a reader wants: the filters of ``herolog logs`` and of log sessions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol


class FilteredLine(Protocol):
    @property
    def app(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def dyno(self) -> str: ...
    @property
    def time(self) -> str: ...
    @property
    def received_at(self) -> str: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True, slots=True)
class LineFilter:
    """Filters are ANDed; each is applied before any line limit.

    ``dynos`` holds names from ``--dyno`` and ``--process-type``: each matches a dyno
    exactly or as a prefix followed by ``.`` (``web`` matches ``web.1``, not ``webby.1``).
    ``since`` is inclusive and ``until`` exclusive; both are instant strings. A line passes
    the patterns when it matches any ``grep`` pattern (if there are any) and no ``exclude``
    pattern; patterns are searched in the message.
    """

    app: str | None = None
    source: str | None = None
    dynos: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    grep: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @property
    def has_patterns(self) -> bool:
        return bool(self.grep or self.exclude)

    def matches(self, line: FilteredLine) -> bool:
        """Whether ``line`` passes every filter: what the store's queries select, for lines
        already in hand (a server handing new lines to its tail sessions)."""
        if self.app is not None and line.app != self.app:
            return False
        if self.source is not None and line.source != self.source:
            return False
        if not all(dyno_matches(dyno, line.dyno) for dyno in self.dynos):
            return False
        if self.since is not None and line.time < self.since:
            return False
        if self.until is not None and line.time >= self.until:
            return False
        return self.matches_patterns(line.message)

    def matches_patterns(self, message: str) -> bool:
        if self.grep and not any(p.search(message) for p in self.grep):
            return False
        return not any(p.search(message) for p in self.exclude)


def dyno_matches(wanted: str, dyno: str) -> bool:
    return dyno == wanted or dyno.startswith(wanted + ".")
