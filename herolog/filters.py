"""Which lines a reader wants: the filters of ``herolog logs`` and of log sessions."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

# The regular expression parser's own tree (no stubs: private to re, stable since 3.11).
_c: Any = importlib.import_module("re._constants")
_parse: Any = importlib.import_module("re._parser").parse


def compile_pattern(text: str) -> re.Pattern[str]:
    """``text`` as a regular expression for ``--grep``/``--exclude``; re.error if it is not
    one, or if it repeats a repetition (``(a+)+``, ``(\\w+\\s?)*``).

    Python's regular expressions backtrack: on a line that almost matches, such a pattern
    takes time exponential in the line's length, and nothing can interrupt it (not Ctrl-C,
    not a server's other requests, which wait behind it)."""
    pattern = re.compile(text)
    if _nested_repeat(_parse(pattern.pattern, pattern.flags), inside_repeat=False):
        raise re.error(
            "it repeats a repetition, like (a+)+, which can take exponential time on some"
            " lines: repeat a character class instead, like [\\w.]+"
        )
    return pattern


def _nested_repeat(items: Any, *, inside_repeat: bool) -> bool:
    for op, arg in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            _, most, sub = arg
            if inside_repeat and most == _c.MAXREPEAT:
                return True
            parts = [sub]
            repeated = inside_repeat or most > 1
        elif op is _c.SUBPATTERN:
            parts, repeated = [arg[3]], inside_repeat
        elif op is _c.BRANCH:
            parts, repeated = arg[1], inside_repeat
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            parts, repeated = [arg[1]], inside_repeat
        elif op is _c.GROUPREF_EXISTS:
            parts, repeated = [x for x in arg[1:] if x is not None], inside_repeat
        else:  # a possessive repeat or an atomic group does not backtrack into itself
            continue
        if any(_nested_repeat(part, inside_repeat=repeated) for part in parts):
            return True
    return False


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
