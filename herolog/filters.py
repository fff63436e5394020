"""Which lines a reader wants: the filters of ``herolog logs`` and of log sessions."""

from __future__ import annotations

import re
from dataclasses import dataclass


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
    received_since: str | None = None

    @property
    def has_patterns(self) -> bool:
        return bool(self.grep or self.exclude)

    def matches_patterns(self, message: str) -> bool:
        if self.grep and not any(p.search(message) for p in self.grep):
            return False
        return not any(p.search(message) for p in self.exclude)


def dyno_matches(wanted: str, dyno: str) -> bool:
    return dyno == wanted or dyno.startswith(wanted + ".")
